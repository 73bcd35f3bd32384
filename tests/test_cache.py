"""The response cache (route `cache:`) end to end: `shipyard up`, a real upstream server that counts
its calls, the official openai client; in this process and in the real Redis shared by two servers."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import openai
import pytest

from shipyard.providers.mock import MockOptions
from shipyard.providers.mock_upstream import MockUpstream
from tests.conftest import ThreadServer
from tests.helpers import named_key, wait_trace

REDIS_URL = "redis://127.0.0.1:6379/0"


def config(upstream: str, cache: str = "{}") -> str:
    return f"""
providers:
  - {{name: up, type: openai, base_url: '{upstream}/v1'}}
models:
  - {{name: up-m, provider: up, model: up-model, pricing: {{input_per_mtok: 1000, output_per_mtok: 2000}}}}
routes:
  - name: cached
    targets: [{{model: up-m}}]
    cache: {cache}
  - name: plain
    targets: [{{model: up-m}}]
"""


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def upstream() -> Any:
    mock = MockUpstream(MockOptions(latency_ms=30, keep_received=1000))
    with ThreadServer(mock) as server:
        server.mock = mock
        yield server


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_repeat_is_a_hit_traced_with_its_source_and_saving(shipyard_server: Any, upstream: Any) -> None:
    server = shipyard_server(config(upstream.url))
    client = server.openai()
    first = client.chat.completions.with_raw_response.create(model="cached", messages=ask("tides?"))
    again = client.chat.completions.with_raw_response.create(model="cached", messages=ask("tides?"))
    assert first.headers["x-shipyard-cache"] == "miss" and again.headers["x-shipyard-cache"] == "hit"
    assert upstream.mock.requests == 1
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    source = wait_trace(server.store_url(), first.headers["x-shipyard-trace-id"])
    hit = wait_trace(server.store_url(), again.headers["x-shipyard-trace-id"])
    root = hit["spans"][0]["attributes"]
    assert root["shipyard.cache.hit"] is True and root["shipyard.cache.source_trace"] == source["trace_id"]
    assert root["shipyard.cache.saved_usd"] == pytest.approx(source["cost_usd"])
    assert root["shipyard.cache.saved_tokens"] == source["input_tokens"] + source["output_tokens"]
    assert hit["attempts"] == 0 and not hit["cost_usd"] and hit["target"] == "up-m"
    metrics = httpx.get(server.url + "/metrics").text
    assert 'shipyard_cache_lookups_total{result="hit",route="cached"} 1.0' in metrics
    assert 'shipyard_cache_lookups_total{result="miss",route="cached"} 1.0' in metrics
    assert 'shipyard_cache_saved_tokens_total{route="cached"}' in metrics
    # A route without `cache:` never says anything about a cache.
    plain = client.chat.completions.with_raw_response.create(model="plain", messages=ask("tides?"))
    assert "x-shipyard-cache" not in plain.headers and upstream.mock.requests == 2


def test_a_streamed_repeat_is_a_valid_stream(shipyard_server: Any, upstream: Any) -> None:
    server = shipyard_server(config(upstream.url))
    client = server.openai()

    def streamed() -> tuple[str, str]:
        with client.chat.completions.with_streaming_response.create(
            model="cached", messages=ask("a streamed question"), stream=True
        ) as response:
            text = "".join(
                chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices
            )
            return response.headers["x-shipyard-cache"], text

    first = streamed()
    again = streamed()
    assert first[0] == "miss" and again[0] == "hit" and again[1] == first[1] and first[1]
    assert upstream.mock.requests == 1
    # The whole answer and the stream are kept apart: a whole request is its own miss.
    whole = client.chat.completions.with_raw_response.create(
        model="cached", messages=ask("a streamed question")
    )
    assert whole.headers["x-shipyard-cache"] == "miss" and upstream.mock.requests == 2


def test_everything_that_changes_the_answer_is_in_the_key(shipyard_server: Any, upstream: Any) -> None:
    server = shipyard_server(config(upstream.url, "{sampled: false}"))
    client = server.openai()
    tool = {"type": "function", "function": {"name": "tide", "parameters": {"type": "object"}}}
    base: dict[str, Any] = {"model": "cached", "messages": ask("when is high tide?"), "temperature": 0}
    variants: list[dict[str, Any]] = [
        base,
        {**base, "temperature": 0, "max_tokens": 5},
        {**base, "top_p": 0.5},
        {**base, "messages": [{"role": "system", "content": "Answer in French."}, *base["messages"]]},
        {**base, "tools": [tool]},
        {**base, "response_format": {"type": "json_object"}},
        {**base, "messages": ask("when is low tide?")},
    ]
    for i, body in enumerate(variants):
        r = client.chat.completions.with_raw_response.create(**body)
        assert r.headers["x-shipyard-cache"] == "miss", body
        assert upstream.mock.requests == i + 1
    for body in variants:  # each one is now a hit of its own
        assert client.chat.completions.with_raw_response.create(**body).headers["x-shipyard-cache"] == "hit"
    assert upstream.mock.requests == len(variants)
    # A sampled request reaches the model every time.
    for _ in range(2):
        r = client.chat.completions.with_raw_response.create(**{**base, "temperature": 0.7})
        assert r.headers["x-shipyard-cache"] == "miss"
    assert upstream.mock.requests == len(variants) + 2


def test_clients_can_opt_out_and_refresh(shipyard_server: Any, upstream: Any) -> None:
    server = shipyard_server(config(upstream.url))
    body = {"model": "cached", "messages": ask("opt out?")}
    with server.http() as http:

        def post(payload: dict[str, Any], **headers: str) -> httpx.Response:
            r = http.post("/v1/chat/completions", json=payload, headers=headers)
            assert r.status_code == 200, r.text
            return r

        assert post({**body, "cache": False}).headers["x-shipyard-cache"] == "miss"
        assert "cache" not in upstream.mock.provider.received[-1]  # Shipyard's field stays here
        assert post(body, **{"cache-control": "no-store"}).headers["x-shipyard-cache"] == "miss"
        assert post(body).headers["x-shipyard-cache"] == "miss"  # nothing was stored before
        assert upstream.mock.requests == 3
        assert post(body).headers["x-shipyard-cache"] == "hit"
        assert post(body, **{"cache-control": "no-cache"}).headers["x-shipyard-cache"] == "miss"
        assert upstream.mock.requests == 4
        bad = http.post("/v1/chat/completions", json={**body, "cache": "yes"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "cache"
        assert "must be true or false" in bad.json()["error"]["message"]


def test_an_answer_never_crosses_key_scopes(shipyard_server: Any, upstream: Any) -> None:
    server = shipyard_server(config(upstream.url, "{scope: key}"))
    alice, bob = named_key(server, "alice", "client"), named_key(server, "bob", "client")
    for key, expected in ((alice.secret, "miss"), (alice.secret, "hit"), (bob.secret, "miss")):
        r = server.openai(api_key=key).chat.completions.with_raw_response.create(
            model="cached", messages=ask("my account balance?")
        )
        assert r.headers["x-shipyard-cache"] == expected
    assert upstream.mock.requests == 2


def test_a_new_route_version_invalidates(shipyard_server: Any, upstream: Any) -> None:
    server = shipyard_server(config(upstream.url), env={"SHIPYARD_RELOAD_INTERVAL": "0.2"})
    client = server.openai()
    for expected in ("miss", "hit"):
        r = client.chat.completions.with_raw_response.create(model="cached", messages=ask("versions?"))
        assert r.headers["x-shipyard-cache"] == expected
    with server.api() as api:
        spec = {"targets": [{"model": "up-m"}], "cache": {"ttl": 600}, "description": "new"}
        assert api.post("/routes", json={"name": "cached", "spec": spec}).status_code in (200, 201)

    def served_by_new_version() -> bool:
        r = client.chat.completions.with_raw_response.create(model="cached", messages=ask("versions?"))
        return r.headers["x-shipyard-cache"] == "miss"

    wait_for(served_by_new_version)
    assert upstream.mock.requests == 2


async def _burst(server: Any, n: int) -> list[str]:
    client = server.async_openai()
    try:
        calls = [
            client.chat.completions.with_raw_response.create(
                model="cached", messages=ask("the same, at once")
            )
            for _ in range(n)
        ]
        return [r.headers["x-shipyard-cache"] for r in await asyncio.gather(*calls)]
    finally:
        await client.close()


def test_identical_requests_in_flight_make_one_upstream_call(shipyard_server: Any) -> None:
    mock = MockUpstream(MockOptions(latency_ms=400))
    with ThreadServer(mock) as slow:
        server = shipyard_server(config(slow.url))
        results = asyncio.run(_burst(server, 50))
    assert mock.requests == 1
    assert results.count("miss") == 1 and results.count("hit") == 49


def test_two_servers_share_entries_in_redis(shipyard_server: Any, upstream: Any) -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    env = {"SHIPYARD_REDIS_URL": REDIS_URL}
    cfg = config(upstream.url, "{scope: global, ttl: 60}")
    one = shipyard_server(cfg, env=env, name="one")
    two = shipyard_server(cfg, env=env, name="two")
    question = ask(f"shared between workers {uuid.uuid4()}")
    first = one.openai().chat.completions.with_raw_response.create(model="cached", messages=question)
    again = two.openai().chat.completions.with_raw_response.create(model="cached", messages=question)
    assert first.headers["x-shipyard-cache"] == "miss" and again.headers["x-shipyard-cache"] == "hit"
    assert upstream.mock.requests == 1
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content


def test_a_cache_config_is_checked(shipyard_server: Any, upstream: Any) -> None:
    with pytest.raises(RuntimeError, match=r"routes\[0\]\.cache\.ttl"):
        shipyard_server(config(upstream.url, "{ttl: -1}"))
    with pytest.raises(RuntimeError, match=r"routes\[0\]\.cache\.scope"):
        shipyard_server(config(upstream.url, "{scope: everyone}"), name="other")


def test_the_openai_client_sees_plain_answers_on_hits(shipyard_server: Any, upstream: Any) -> None:
    server = shipyard_server(config(upstream.url))
    client = server.openai()
    replies = [client.chat.completions.create(model="cached", messages=ask("plain?")) for _ in range(2)]
    assert isinstance(replies[1], openai.types.chat.ChatCompletion)
    assert replies[1].choices[0].message.content == replies[0].choices[0].message.content
    assert replies[1].usage is not None and replies[1].usage.total_tokens == replies[0].usage.total_tokens
