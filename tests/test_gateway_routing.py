"""Routing end to end: fallbacks on 500s and hangs, retries, splits, sticky sessions, streaming
pass-through and unknown-field pass-through — through `shipyard up`, real upstream servers and
the official openai client."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
import openai
import pytest

from shipyard.providers.mock import MockOptions
from shipyard.providers.mock_upstream import MockUpstream
from tests.conftest import ThreadServer
from tests.helpers import attempt_spans, wait_trace

MSG = [{"role": "user", "content": "Where do ships go at night?"}]


def upstream_config(routes: str, **upstreams: str) -> str:
    providers = "\n".join(
        f"  - {{name: {name}, type: openai, base_url: '{url}/v1'}}" for name, url in upstreams.items()
    )
    models = "\n".join(f"  - {{name: {name}-m, provider: {name}, model: {name}-model}}" for name in upstreams)
    return f"""
providers:
{providers}
  - {{name: fake, type: mock}}
models:
{models}
  - {{name: fake-m, provider: fake, pricing: {{input_per_mtok: 1, output_per_mtok: 2}}}}
routes:
{routes}
"""


def test_fallback_when_first_target_returns_500(shipyard_server: Any) -> None:
    with (
        ThreadServer(MockUpstream(MockOptions(error_rate=1.0, error_status=500))) as bad,
        ThreadServer(MockUpstream(MockOptions(output="from the fallback"))) as good,
    ):
        routes = """
  - name: support
    targets: [{model: bad-m}]
    fallbacks: [{model: good-m}]
"""
        server = shipyard_server(upstream_config(routes, bad=bad.url, good=good.url))
        client = server.openai()
        raw = client.chat.completions.with_raw_response.create(model="support", messages=MSG)
        reply = raw.parse()
        assert reply.choices[0].message.content == "from the fallback"
        assert raw.headers["x-shipyard-target"] == "good-m"
        trace = wait_trace(server.store_url(), raw.headers["x-shipyard-trace-id"])
        assert trace["attempts"] == 2 and trace["status"] == "ok" and trace["target"] == "good-m"
        first, second = attempt_spans(trace)
        assert first["status"] == "error" and first["attributes"]["shipyard.target"] == "bad-m"
        assert first["attributes"]["error.type"] == "http_500"
        assert second["status"] == "ok" and second["attributes"]["shipyard.target"] == "good-m"
        assert second["attributes"]["gen_ai.usage.output_tokens"] == 3

        # Streams fall back too, as long as nothing was sent yet.
        stream = client.chat.completions.create(model="support", messages=MSG, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "from the fallback"


def test_fallback_when_first_target_hangs(shipyard_server: Any) -> None:
    with (
        ThreadServer(MockUpstream(MockOptions(latency_ms=30_000))) as hung,
        ThreadServer(MockUpstream(MockOptions(output="quick answer"))) as good,
    ):
        routes = """
  - name: support
    targets: [{model: hung-m, timeout: 0.5}]
    fallbacks: [{model: good-m}]
"""
        server = shipyard_server(upstream_config(routes, hung=hung.url, good=good.url))
        client = server.openai()
        started = time.monotonic()
        raw = client.chat.completions.with_raw_response.create(model="support", messages=MSG)
        assert raw.parse().choices[0].message.content == "quick answer"
        assert time.monotonic() - started < 5
        trace = wait_trace(server.store_url(), raw.headers["x-shipyard-trace-id"])
        first, second = attempt_spans(trace)
        assert first["attributes"]["error.type"] == "timeout"
        assert 0.4 < first["end_time"] - first["start_time"] < 2.0
        assert second["status"] == "ok"

        stream = client.chat.completions.create(model="support", messages=MSG, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "quick answer"


def test_retries_same_target_with_backoff_then_succeeds(shipyard_server: Any) -> None:
    # seed 3 gives fail, fail, succeed for error_rate 0.5 (checked below through the attempt spans)
    with ThreadServer(MockUpstream(MockOptions(error_rate=0.5, seed=3, output="eventually"))) as flaky:
        routes = """
  - name: flaky
    retry_backoff: 0.01
    targets: [{model: flaky-m, retries: 5}]
"""
        server = shipyard_server(upstream_config(routes, flaky=flaky.url))
        raw = server.openai().chat.completions.with_raw_response.create(model="flaky", messages=MSG)
        assert raw.parse().choices[0].message.content == "eventually"
        trace = wait_trace(server.store_url(), raw.headers["x-shipyard-trace-id"])
        spans = attempt_spans(trace)
        assert len(spans) == trace["attempts"] >= 2
        assert all(s["status"] == "error" for s in spans[:-1]) and spans[-1]["status"] == "ok"
        assert {s["attributes"]["shipyard.target"] for s in spans} == {"flaky-m"}


def test_all_targets_failing_gives_upstream_status_and_no_fallback_on_client_errors(
    shipyard_server: Any,
) -> None:
    good_upstream = MockUpstream(MockOptions(output="never used"))
    with (
        ThreadServer(MockUpstream(MockOptions(error_rate=1.0, error_status=429))) as limited,
        ThreadServer(MockUpstream(MockOptions(error_rate=1.0, error_status=400))) as picky,
        ThreadServer(good_upstream) as good,
    ):
        routes = """
  - name: limited
    retry_backoff: 0
    targets: [{model: limited-m, retries: 1}]
  - name: picky
    targets: [{model: picky-m}]
    fallbacks: [{model: good-m}]
"""
        server = shipyard_server(upstream_config(routes, limited=limited.url, picky=picky.url, good=good.url))
        client = server.openai()
        with pytest.raises(openai.RateLimitError) as exc:
            client.chat.completions.create(model="limited", messages=MSG)
        assert "all 2 attempt(s) failed" in str(exc.value)
        # A 400 means the request itself is wrong: another target would fail the same way.
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model="picky", messages=MSG)
        assert "picky-m" in str(bad.value)
        assert good_upstream.requests == 0


def test_weighted_split_90_10_over_2000_requests(shipyard_server: Any) -> None:
    config = """
providers: [{name: fake, type: mock}]
models:
  - {name: stable, provider: fake}
  - {name: canary, provider: fake}
routes:
  - name: split
    targets:
      - {model: stable, weight: 90}
      - {model: canary, weight: 10}
"""
    server = shipyard_server(config)
    body = {"model": "split", "messages": MSG, "max_tokens": 2}

    async def fire() -> Counter[str]:
        counts: Counter[str] = Counter()
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(
            base_url=server.url, limits=limits, timeout=30, headers=server.headers
        ) as http:
            sem = asyncio.Semaphore(16)

            async def one() -> None:
                async with sem:
                    r = await http.post("/v1/chat/completions", json=body)
                    assert r.status_code == 200
                    counts[r.headers["x-shipyard-target"]] += 1

            await asyncio.gather(*(one() for _ in range(2000)))
        return counts

    counts = asyncio.run(fire())
    assert sum(counts.values()) == 2000
    share = counts["canary"] / 2000
    assert 0.07 <= share <= 0.13, counts


def test_sticky_assignment_by_user_and_session_header(shipyard_server: Any) -> None:
    config = """
providers: [{name: fake, type: mock}]
models:
  - {name: a, provider: fake}
  - {name: b, provider: fake}
routes:
  - name: ab
    targets: [{model: a, weight: 50}, {model: b, weight: 50}]
"""
    server = shipyard_server(config)
    with server.http() as http:

        def target(**extra: Any) -> str:
            headers = extra.pop("headers", None)
            r = http.post(
                "/v1/chat/completions", json={"model": "ab", "messages": MSG, **extra}, headers=headers
            )
            return str(r.headers["x-shipyard-target"])

        for user in ("alice", "bob", "carol"):
            assert len({target(user=user) for _ in range(15)}) == 1
        assert len({target(headers={"x-shipyard-session": "s-42"}) for _ in range(15)}) == 1
        # Different users spread over both targets.
        assert {target(user=f"user-{i}") for i in range(40)} == {"a", "b"}


def test_unknown_fields_reach_the_upstream(shipyard_server: Any) -> None:
    upstream = MockUpstream(MockOptions(output="ok"))
    with ThreadServer(upstream) as up:
        routes = """
  - name: relay
    targets: [{model: up-m, params: {temperature: 0.2}}]
"""
        server = shipyard_server(upstream_config(routes, up=up.url))
        server.openai().chat.completions.create(
            model="relay",
            messages=MSG,
            temperature=1.5,
            max_tokens=7,
            extra_body={"repetition_penalty": 1.1, "guided_choice": ["yes", "no"]},
        )
        sent = upstream.provider.received[-1]
        assert sent["repetition_penalty"] == 1.1 and sent["guided_choice"] == ["yes", "no"]
        assert sent["model"] == "up-model"  # the provider-side model name, not the route
        assert sent["temperature"] == 0.2  # target params win over the client's
        assert sent["max_tokens"] == 7


class SlowStream:
    """An upstream that sends one chunk, waits, then finishes: shows whether the gateway buffers."""

    def __init__(self, pause: float) -> None:
        self.pause = pause

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )

        def event(content: str | None, finish: str | None = None) -> bytes:
            import orjson

            delta = {"content": content} if content is not None else {}
            return (
                b"data: "
                + orjson.dumps(
                    {
                        "id": "x",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": "slow",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    }
                )
                + b"\n\n"
            )

        await send({"type": "http.response.body", "body": event("first"), "more_body": True})
        await asyncio.sleep(self.pause)
        await send({"type": "http.response.body", "body": event(" second"), "more_body": True})
        await send(
            {
                "type": "http.response.body",
                "body": event(None, "stop") + b"data: [DONE]\n\n",
                "more_body": False,
            }
        )


def test_streaming_forwards_first_chunk_without_buffering(shipyard_server: Any) -> None:
    with ThreadServer(SlowStream(pause=1.5)) as slow:
        routes = """
  - name: slow
    targets: [{model: slow-m}]
"""
        server = shipyard_server(upstream_config(routes, slow=slow.url))
        client = server.openai()
        started = time.monotonic()
        stream = client.chat.completions.create(model="slow", messages=MSG, stream=True)
        arrivals = []
        pieces = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic() - started)
                pieces.append(chunk.choices[0].delta.content)
        assert pieces == ["first", " second"]
        assert arrivals[0] < 1.0, arrivals  # the first token did not wait for the pause
        assert arrivals[1] >= 1.4, arrivals
