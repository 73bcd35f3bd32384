"""Every call becomes a stored trace (tokens, latency, TTFT, cost, GenAI attributes); the writer
is off the request path and a clean shutdown loses nothing."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipyard.store import traces as q
from shipyard.store.db import Store
from shipyard.tracing.spans import Trace
from shipyard.tracing.writer import TraceWriter
from tests.helpers import attempt_spans, count_traces, wait_trace

CONFIG = """
providers:
  - {name: fake, type: mock, latency_ms: 20, tokens_per_s: 200}
models:
  - {name: fake-chat, provider: fake, pricing: {input_per_mtok: 3, output_per_mtok: 15}}
  - {name: fake-embed, provider: fake, kind: embedding}
routes:
  - {name: default, targets: [{model: fake-chat}]}
"""
MSG = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a harbour town please"}]


def test_chat_stream_completion_and_embedding_traces(shipyard_server: Any) -> None:
    server = shipyard_server(CONFIG)
    client = server.openai()

    raw = client.chat.completions.with_raw_response.create(
        model="default",
        messages=MSG,
        max_tokens=8,
        temperature=0.3,
        user="u-1",
        extra_headers={"X-Shipyard-Tags": "beta, eu"},
    )
    reply = raw.parse()
    t = wait_trace(server.store_url(), raw.headers["x-shipyard-trace-id"])
    assert t["tags"] == ["beta", "eu"]
    assert (t["input_tokens"], t["output_tokens"]) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )
    assert t["output"] == reply.choices[0].message.content
    assert t["input"] == MSG and t["user_id"] == "u-1" and t["operation"] == "chat"
    assert t["latency_ms"] >= 20 and t["ttft_ms"] is not None
    assert abs(t["cost_usd"] - (t["input_tokens"] * 3 + t["output_tokens"] * 15) / 1e6) < 1e-12
    root = next(s for s in t["spans"] if s["parent_id"] is None)
    attrs = root["attributes"]
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "default"
    assert attrs["gen_ai.request.temperature"] == 0.3 and attrs["gen_ai.request.max_tokens"] == 8
    assert {s["name"] for s in t["spans"]} == {"chat default", "chat fake-chat"}
    assert attrs["shipyard.candidates"] == ["fake-chat"] and attrs["shipyard.route"] == "default"
    (attempt,) = attempt_spans(t)
    assert attempt["parent_id"] == root["span_id"]
    a = attempt["attributes"]
    assert a["gen_ai.provider.name"] == "fake" and a["gen_ai.request.model"] == "fake-chat"
    assert a["gen_ai.usage.input_tokens"] == t["input_tokens"] and a["gen_ai.usage.output_tokens"] == 8
    assert a["gen_ai.response.finish_reasons"] == ["length"] and a["gen_ai.response.model"] == "fake-chat"

    # Streaming with include_usage: the client gets usage, the trace has TTFT < latency.
    with client.chat.completions.with_streaming_response.create(
        model="default", messages=MSG, stream=True, stream_options={"include_usage": True}, max_tokens=12
    ) as resp:
        trace_id = resp.headers["x-shipyard-trace-id"]
        chunks = list(resp.parse())
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 12
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    t = wait_trace(server.store_url(), trace_id)
    assert t["stream"] and t["output"] == text and t["output_tokens"] == 12
    assert t["ttft_ms"] < t["latency_ms"] - 30  # 11 more tokens at 200 tokens/s came after the first

    # Without include_usage the client gets no usage chunk, but the trace still has the counts.
    with client.chat.completions.with_streaming_response.create(
        model="default", messages=MSG, stream=True, max_tokens=5
    ) as resp:
        trace_id = resp.headers["x-shipyard-trace-id"]
        chunks = list(resp.parse())
    assert all(c.usage is None for c in chunks)
    assert wait_trace(server.store_url(), trace_id)["output_tokens"] == 5

    raw_c = client.completions.with_raw_response.create(
        model="default", prompt="Once upon a time", max_tokens=4
    )
    t = wait_trace(server.store_url(), raw_c.headers["x-shipyard-trace-id"])
    assert (
        t["operation"] == "text_completion" and t["input"] == "Once upon a time" and t["output_tokens"] == 4
    )

    raw_e = client.embeddings.with_raw_response.create(model="fake-embed", input=["a b c", "d e"])
    emb = raw_e.parse()
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 16
    t = wait_trace(server.store_url(), raw_e.headers["x-shipyard-trace-id"])
    assert t["operation"] == "embeddings" and t["input_tokens"] == 5


def test_failed_requests_are_traced_too(shipyard_server: Any) -> None:
    config = CONFIG.replace("latency_ms: 20, tokens_per_s: 200", "error_rate: 1.0, error_status: 503")
    server = shipyard_server(config)
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "default", "messages": MSG},
        headers=server.headers,
    )
    assert r.status_code == 502
    t = wait_trace(server.store_url(), r.headers.get("x-shipyard-trace-id") or _latest(server.store_url()))
    assert t["status"] == "error" and t["status_code"] == 502 and "injected a failure" in t["error"]


def _latest(url: str) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        store = Store(url)
        rows = q.list_traces(store, limit=1)
        store.close()
        if rows:
            return str(rows[0]["trace_id"])
        time.sleep(0.05)
    raise AssertionError("no trace written")


def test_capture_truncated_and_none(shipyard_server: Any) -> None:
    long_msg = [{"role": "user", "content": "harbour " * 100}]
    server = shipyard_server(
        CONFIG,
        env={"SHIPYARD_CAPTURE_MESSAGES": "truncated", "SHIPYARD_CAPTURE_MAX_CHARS": "20"},
        name="trunc",
    )
    raw = server.openai().chat.completions.with_raw_response.create(model="default", messages=long_msg)
    t = wait_trace(server.store_url(), raw.headers["x-shipyard-trace-id"])
    assert (
        t["input"][0]["content"].startswith("harbour harbour harb")
        and "more chars" in t["input"][0]["content"]
    )
    assert len(t["input"][0]["content"]) < 60

    server = shipyard_server(CONFIG, env={"SHIPYARD_CAPTURE_MESSAGES": "none"}, name="none")
    raw = server.openai().chat.completions.with_raw_response.create(model="default", messages=long_msg)
    t = wait_trace(server.store_url(), raw.headers["x-shipyard-trace-id"])
    assert t["input"] is None and t["output"] is None and t["output_tokens"] == 16


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_shutdown_with_requests_in_flight_loses_no_trace(shipyard_server: Any, sig: int) -> None:
    config = CONFIG.replace("latency_ms: 20, tokens_per_s: 200", "latency_ms: 1500")
    server = shipyard_server(config)

    async def fire() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30, headers=server.headers) as http:

            async def one(i: int) -> int:
                r = await http.post(
                    "/v1/chat/completions", json={"model": "default", "messages": MSG, "user": f"user-{i}"}
                )
                return r.status_code

            tasks = [asyncio.create_task(one(i)) for i in range(60)]
            async with httpx.AsyncClient(base_url=server.url, timeout=5) as probe:
                # Signal only once all 60 are inside the gateway, waiting on the provider.
                while (await probe.get("/readyz")).json()["in_flight"] < 60:  # noqa: ASYNC110 (a remote server)
                    await asyncio.sleep(0.02)
            server.proc.send_signal(sig)
            return await asyncio.gather(*tasks)

    statuses = asyncio.run(fire())
    assert server.proc is not None
    # The process exits on its own once in-flight requests are answered and traces are flushed.
    # uvicorn re-raises the signal after its graceful shutdown: "killed by SIGTERM" and 130 (the
    # shell's code for Ctrl-C) are clean exits too.
    assert server.proc.wait(timeout=30) in (0, -sig, 128 + sig)
    server.stop()
    assert statuses.count(200) == 60
    assert count_traces(server.store_url()) == 60
    assert "trace writer flushed" in server.log()


def test_writer_drops_rather_than_blocks_and_close_drains(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    store.migrate()
    writer = TraceWriter(store, queue_size=3, batch_size=2)
    traces = [Trace(operation="chat", route="r") for _ in range(5)]
    for t in traces:
        t.end = t.start
    accepted = [writer.submit(t) for t in traces]
    assert accepted == [True, True, True, False, False] and writer.dropped == 2
    writer.start()
    writer.close()
    assert writer.written == 3 and q.count_traces(store) == 3
