"""Rate limits and budgets: through the real server (`shipyard up`, httpx and the openai client)
with both backends, plus the key subject and the two-worker case in-process.

The mock model is priced at $0.05 per 1,000 tokens and answers 8 words (8 tokens), so a request
with the 5-word prompt below costs (5 + 8) × $0.00005 = $0.00065, and its admission estimate is
(26 UTF-8 bytes, which no tokenizer exceeds, + 4 for the message + max_tokens 8) × $0.00005 = $0.0019.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from shipyard.config.loader import read_document
from shipyard.config.schema import LimitsConfig
from shipyard.errors import RateLimited
from shipyard.gateway.auth import Principal
from shipyard.gateway.limits import (
    Demand,
    RedisLimiter,
    Subject,
    Windows,
    estimate,
    redis_prefix,
)
from shipyard.server.platform import Platform
from shipyard.settings import Settings
from shipyard.store.db import Store
from shipyard.store.usage import usage_of
from tests.helpers import count_traces

REDIS_URL = "redis://127.0.0.1:6379/0"
PRICE = 0.05 / 1000  # USD per token, input and output
PROMPT = "Count the ships in harbour"  # 5 words, 26 characters
MSG: list[Any] = [{"role": "user", "content": PROMPT}]
ACTUAL = (5 + 8) * PRICE
ESTIMATE = (len(PROMPT.encode()) + 4 + 8) * PRICE


def config(limits: str, latency_ms: int = 0, route: str = "limited") -> str:
    return f"""
providers:
  - {{name: fake, type: mock, latency_ms: {latency_ms}, output_tokens: 8}}
models:
  - {{name: priced, provider: fake, pricing: {{input_per_mtok: 50, output_per_mtok: 50}}}}
routes:
  - name: {route}
    public: true
    targets: [{{model: priced}}]
    limits: {limits}
  - name: open
    public: true
    targets: [{{model: priced}}]
"""


def cost(body: dict[str, Any]) -> float:
    usage = body["usage"]
    return float(usage["prompt_tokens"] + usage["completion_tokens"]) * PRICE


async def fire(url: str, n: int, model: str = "limited", key: str | None = None) -> list[httpx.Response]:
    """``n`` requests at once, each on its own connection."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60, headers=headers) as client:
        body = {"model": model, "messages": MSG, "max_tokens": 8}
        return list(await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(n))))


def check_budget_burst(responses: list[httpx.Response], budget: float, who: str = "route `limited`") -> None:
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(refused) == len(responses), {r.status_code for r in responses}
    spent = sum(cost(r.json()) for r in ok)
    # Five estimates ($0.0019 each) fit in the budget at once, so at least five are admitted.
    assert len(ok) >= int(budget / ESTIMATE) and refused
    assert spent <= budget + ACTUAL + 1e-12, (len(ok), spent)
    for r in refused:
        err = r.json()["error"]
        assert err["type"] == "rate_limit_error" and err["code"] == "budget_exceeded"
        assert who in err["message"] and "$0.01 budget" in err["message"]
        assert int(r.headers["retry-after"]) >= 1


def traced_spend(store_url: str, route: str) -> float:
    """What the server itself charged: the sum of its successful traces' cost."""
    import sqlalchemy as sa

    from shipyard.store.tables import traces

    store = Store(store_url)
    try:
        q = sa.select(sa.func.sum(traces.c.cost_usd)).where(traces.c.route == route, traces.c.status == "ok")
        with store.engine.connect() as conn:
            return float(conn.execute(q).scalar() or 0.0)
    finally:
        store.close()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_concurrent_requests_cannot_overspend_a_daily_budget(shipyard_server: Any) -> None:
    server = shipyard_server(config("{usd_per_day: 0.01}", latency_ms=400))
    responses = asyncio.run(fire(server.url, 100))
    check_budget_burst(responses, 0.01)
    ok = sum(r.status_code == 200 for r in responses)
    # Refusals are traced like any other error; the server's own cost agrees with the clients'.
    url = server.store_url()
    wait_for(lambda: count_traces(url, route="limited") == 100)
    assert count_traces(url, route="limited", status="error") == 100 - ok
    spent = traced_spend(url, "limited")
    assert spent == pytest.approx(sum(cost(r.json()) for r in responses if r.status_code == 200))
    assert spent <= 0.01 + ACTUAL


def test_a_keys_budget_holds_under_100_concurrent_requests(shipyard_server: Any) -> None:
    """The acceptance case with a real key: an application's client key with a $0.01 daily budget,
    on a route that is not public, 100 requests at once."""
    private = config("{requests_per_min: 100000}", latency_ms=400, route="private")
    private = private.replace("    public: true\n", "", 1)
    assert "name: private\n    targets" in private
    server = shipyard_server(private)
    with server.api() as api:
        made = api.post("/keys", json={"name": "app", "role": "client", "limits": {"usd_per_day": 0.01}})
        assert made.status_code == 201, made.text
        key = made.json()
        assert key["limits"] == {"usd_per_day": 0.01}
    responses = asyncio.run(fire(server.url, 100, model="private", key=key["key"]))
    check_budget_burst(responses, 0.01, who="key `app`")
    refused = sum(r.status_code == 429 for r in responses)
    # The refusals are counted by subject and limit on /metrics.
    metrics = httpx.get(server.url + "/metrics").text
    assert f'shipyard_limit_rejections_total{{limit="usd_per_day",subject="key"}} {refused}.0' in metrics
    # Another key is not charged for this one's spending.
    other = server.openai().chat.completions.create(model="private", messages=MSG, max_tokens=8)
    assert other.choices


@pytest.fixture
def redis_client() -> Iterator[Any]:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, decode_responses=True)
    try:
        client.ping()
    except redis.RedisError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    yield client
    client.close()


def flush_prefix(client: Any, prefix: str) -> int:
    keys = list(client.scan_iter(prefix + "*"))
    if keys:
        client.delete(*keys)
    return len(keys)


def test_redis_backend_keeps_the_budget_under_a_burst(shipyard_server: Any, redis_client: Any) -> None:
    server = shipyard_server(
        config("{usd_per_day: 0.01}", latency_ms=400), env={"SHIPYARD_REDIS_URL": REDIS_URL}
    )
    # The server's key prefix comes from its store's URL: workers sharing a store share counters.
    prefix = redis_prefix(server.database_url or f"sqlite:///{server.home.resolve() / 'shipyard.db'}")
    try:
        responses = asyncio.run(fire(server.url, 100))
        check_budget_burst(responses, 0.01)
        (day_key,) = list(redis_client.scan_iter(prefix + "usage:route:limited:day:*"))
        ok = [r for r in responses if r.status_code == 200]
        wait_for(lambda: int(redis_client.hget(day_key, "requests") or 0) == len(ok))
        counters = redis_client.hgetall(day_key)
        assert float(counters["usd"]) == pytest.approx(sum(cost(r.json()) for r in ok))
        assert float(counters["reserved"]) == 0 and int(counters["in_flight"]) == 0
        assert 0 < redis_client.ttl(day_key) <= 86400 + 3600
    finally:
        assert flush_prefix(redis_client, prefix) > 0


def test_a_busy_redis_pool_makes_requests_wait_not_fail(shipyard_server: Any, redis_client: Any) -> None:
    """300 requests at once on 2 Redis connections: every request waits its turn for a connection
    and is answered by its limits (200 or 429), none is refused because the pool was busy (503)."""
    server = shipyard_server(
        config("{requests_per_min: 100000, usd_per_day: 0.01}", latency_ms=50),
        env={"SHIPYARD_REDIS_URL": REDIS_URL, "SHIPYARD_REDIS_MAX_CONNECTIONS": "2"},
    )
    prefix = redis_prefix(f"sqlite:///{server.home.resolve() / 'shipyard.db'}")
    try:
        responses = asyncio.run(fire(server.url, 300))
        assert {r.status_code for r in responses} <= {200, 429}, {
            r.text for r in responses if r.status_code >= 500
        }
        check_budget_burst(responses, 0.01)
    finally:
        flush_prefix(redis_client, prefix)


def test_requests_per_minute_answer_429_with_retry_after(shipyard_server: Any) -> None:
    server = shipyard_server(config("{requests_per_min: 3}"))
    client = server.openai()
    for _ in range(3):
        client.chat.completions.create(model="limited", messages=MSG)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="limited", messages=MSG)
    response = err.value.response
    assert response.status_code == 429
    # One request's worth refills in 60 s / 3 = 20 s.
    assert 15 <= int(response.headers["retry-after"]) <= 20
    body = response.json()["error"]
    assert body["code"] == "rate_limit_exceeded"
    assert "route `limited` allows 3 requests per minute" in body["message"]
    # Other routes are not limited by this one.
    assert client.chat.completions.create(model="open", messages=MSG).choices


def test_tokens_per_minute_are_estimated_then_corrected(shipyard_server: Any) -> None:
    server = shipyard_server(config("{tokens_per_min: 100}"))
    client = httpx.Client(base_url=server.url, timeout=30)
    # Each reserves its estimate (26 + 4 + 20 = 50 tokens) but uses 13: without the correction
    # at settlement the third would already be refused.
    for _ in range(4):
        r = client.post("/v1/chat/completions", json={"model": "limited", "messages": MSG, "max_tokens": 20})
        assert r.status_code == 200, r.text
    # 4 × 13 tokens used: about 48 left, less than this request's 26 + 4 + 90 = 120 (capped at 100).
    r = client.post("/v1/chat/completions", json={"model": "limited", "messages": MSG, "max_tokens": 90})
    assert r.status_code == 429
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded"
    assert "route `limited` allows 100 tokens per minute" in err["message"]
    assert "`max_tokens`" in err["message"]
    assert 20 <= int(r.headers["retry-after"]) <= 40


def test_spend_survives_a_restart_and_streams_are_settled(shipyard_server: Any) -> None:
    # $0.004 a day: requests are admitted while spent + $0.0019 fits, so four run ($0.0026 spent).
    cfg = config("{usd_per_day: 0.004}")
    server = shipyard_server(cfg)
    client = server.openai()
    answered = 0
    for i in range(6):
        try:
            if i % 2:
                stream = client.chat.completions.create(
                    model="limited", messages=MSG, max_tokens=8, stream=True
                )
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            else:
                client.chat.completions.create(model="limited", messages=MSG, max_tokens=8)
            answered += 1
        except openai.RateLimitError as exc:
            assert "has spent $0.0026 of its $0.004 budget" in exc.message
            assert "resets at" in exc.message
            break
    assert answered == 4
    url = server.store_url()
    server.stop()  # a clean shutdown saves what the last flush had not
    (row,) = [r for k, r in usage_of(Store(url), "route:limited", "day")]
    assert row.requests == 4 and row.tokens == 4 * 13
    assert row.usd == pytest.approx(4 * ACTUAL)

    again = shipyard_server(cfg)  # the same home: the same store
    with pytest.raises(openai.RateLimitError):
        again.openai().chat.completions.create(model="limited", messages=MSG, max_tokens=8)


# -- in-process ------------------------------------------------------------------------------------
KEY_CONFIG = """
providers:
  - {name: fake, type: mock, output_tokens: 8}
models:
  - {name: priced, provider: fake, pricing: {input_per_mtok: 50, output_per_mtok: 50}}
routes:
  - name: free
    targets: [{model: priced}]
  - name: capped
    targets: [{model: priced}]
    limits: {requests_per_min: 2}
"""


async def test_key_limits_are_a_subject_of_their_own(tmp_path: Path) -> None:
    settings = Settings(overrides={"home": str(tmp_path / "home")}, environ={})
    platform = Platform.build(settings, read_document(KEY_CONFIG))
    await platform.open()
    try:
        gw = platform.gateway
        bot = Principal("k1", "ci-bot", "client", "sk-shp-ab", limits=LimitsConfig(requests_per_min=3))
        free = Principal("k2", "free", "client", "sk-shp-cd")
        body = {"model": "free", "messages": MSG}
        for _ in range(3):
            answer = await gw.complete("chat", dict(body), principal=bot)
        assert answer.trace.attributes["shipyard.key.id"] == "k1"
        assert answer.trace.attributes["shipyard.key.name"] == "ci-bot"
        with pytest.raises(RateLimited, match="key `ci-bot` allows 3 requests per minute") as err:
            await gw.complete("chat", dict(body), principal=bot)
        assert err.value.code == "rate_limit_exceeded" and 15 <= err.value.retry_after <= 20
        # Another key (or none) is not held back by this key's limits.
        await gw.complete("chat", dict(body), principal=free)
        await gw.complete("chat", dict(body))

        # A request must pass every subject, and one that fails the route reserves nothing under
        # the key: the key has 5 a minute, the route 2.
        roomy = Principal("k3", "roomy", "client", "sk-shp-ef", limits=LimitsConfig(requests_per_min=5))
        capped = {"model": "capped", "messages": MSG}
        await gw.complete("chat", dict(capped), principal=roomy)
        await gw.complete("chat", dict(capped), principal=roomy)
        for _ in range(3):
            with pytest.raises(RateLimited, match="route `capped`"):
                await gw.complete("chat", dict(capped), principal=roomy)
        for _ in range(3):
            await gw.complete("chat", dict(body), principal=roomy)
        with pytest.raises(RateLimited, match="key `roomy`"):
            await gw.complete("chat", dict(body), principal=roomy)
        assert platform.gateway.limiter is not None
        assert platform.gateway.limiter.rejections[("route", "requests_per_min")] == 3
    finally:
        await platform.close()


async def test_two_redis_workers_share_one_budget(redis_client: Any) -> None:
    prefix = f"shipyard:test-{uuid.uuid4().hex[:8]}:"
    workers = [RedisLimiter(REDIS_URL, prefix), RedisLimiter(REDIS_URL, prefix)]
    for w in workers:
        await w.start()
    subject = Subject("key:kw", "key `w`", "key", LimitsConfig(usd_per_month=0.01))
    demand = Demand(tokens=20, usd=0.001, prompt_tokens=12, prompt_usd=0.0006)

    async def one(i: int) -> bool:
        limiter = workers[i % 2]
        try:
            ticket = await limiter.admit((subject,), demand)
        except RateLimited as exc:
            assert exc.code == "budget_exceeded" and "`usd_per_month`" in exc.message
            return False
        await asyncio.sleep(0.05)
        limiter.settle(ticket, 0.0009, 18)
        return True

    try:
        results = await asyncio.gather(*(one(i) for i in range(60)))
        for w in workers:
            await w.close()
        admitted = sum(results)
        # Ten fit while all are in flight; some later ones fit as the actual costs come in.
        assert 10 <= admitted <= 12
        (key,) = list(redis_client.scan_iter(prefix + "usage:key:kw:month:*"))
        counters = redis_client.hgetall(key)
        assert int(counters["requests"]) == admitted
        assert float(counters["usd"]) == pytest.approx(admitted * 0.0009) and float(counters["usd"]) <= 0.0101
    finally:
        flush_prefix(redis_client, prefix)


def test_estimates_take_the_priciest_target_and_the_output_cap() -> None:
    from shipyard.config.schema import ModelConfig, Pricing
    from shipyard.gateway.runtime import Target
    from shipyard.providers.mock import MockProvider

    def target(price: float, **params: Any) -> Target:
        model = ModelConfig(name=f"m{price}", provider="fake", pricing=Pricing(output_per_mtok=price))
        return Target(f"m{price}", model, MockProvider("fake"), "fake", params, 30.0, 0)

    cheap, dear = target(1.0), target(10.0, max_tokens=50)
    body = {"messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 200, "n": 2}
    d = estimate("chat", body, [cheap, dear])
    # The prompt: 40 bytes of text (at most 40 tokens) + 4 for the message; the target's own
    # max_tokens wins over the client's; two choices.
    assert d.prompt_tokens == 44
    assert d.tokens == 44 + 200 * 2
    assert d.usd == pytest.approx(max(400 * 1.0, 100 * 10.0) / 1e6)
    assert d.prompt_usd == 0.0  # input is free on both
    # No cap anywhere: the default output allowance.
    assert estimate("chat", {"messages": MSG}, [cheap]).tokens == 26 + 4 + 1024
    # Embeddings produce no output tokens; an image part counts as a fixed allowance.
    assert estimate("embeddings", {"input": ["abcd" * 10, "ab"]}, [cheap]).tokens == 42
    image = {"type": "image_url", "image_url": {"url": "data:" + "A" * 99}}
    parts = [{"type": "text", "text": "abcd"}, image]
    d = estimate("chat", {"messages": [{"role": "user", "content": parts}], "max_tokens": 1}, [cheap])
    assert d.tokens == 4 + 1000 + 4 + 1


def test_estimates_bound_prompts_that_tokenize_badly() -> None:
    """No tokenizer makes more tokens than UTF-8 bytes: the estimate holds for text of single
    characters, CJK and emoji (characters/4 undercounted them up to 16 times), and counts what
    else a model reads: tool schemas, token-id arrays."""
    from shipyard.config.schema import ModelConfig
    from shipyard.gateway.runtime import Target
    from shipyard.providers.mock import MockProvider
    from shipyard.providers.wordllama import WordLlamaProvider

    model = ModelConfig(name="m", provider="fake")
    target = Target("m", model, MockProvider("fake"), "fake", {}, 30.0, 0)

    def prompt(content: str, **body: Any) -> int:
        messages = [{"role": "user", "content": content}]
        return estimate("chat", {"messages": messages, **body}, [target]).prompt_tokens

    assert prompt("a b c d") == 7 + 4
    assert prompt("漢字") == 6 + 4 and prompt("🚢" * 10) == 40 + 4
    assert prompt("\ud800") == 3 + 4  # a lone surrogate (JSON allows it) is measured, not an error
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    assert prompt("hi", tools=tools) == 2 + 4 + len(orjson.dumps(tools))
    assert estimate("completion", {"prompt": [1, 2, 3], "max_tokens": 1}, [target]).tokens == 3 + 1
    assert estimate("embeddings", {"input": [[1, 2], [3]]}, [target]).tokens == 3
    # A provider with its own tokenizer at hand counts exactly instead.
    words = WordLlamaProvider("w")
    words._model = None  # not loaded: it falls back to the characters/4 guess, still its own count
    exact = Target("w", model, words, "w", {}, 30.0, 0)
    assert estimate("embeddings", {"input": "abcdefgh"}, [exact]).tokens == 2


def test_windows_are_utc_days_and_calendar_months() -> None:
    w = Windows.at(1_709_251_199.5)  # 2024-02-29 23:59:59.5 UTC, a leap day
    assert w.day == 1_709_164_800 and w.day_end == 1_709_251_200
    assert w.month == 1_706_745_600 and w.month_end == 1_709_251_200
    dec = Windows.at(1_735_689_599)  # 2024-12-31 23:59:59 UTC
    assert dec.month_end == 1_735_689_600  # 2025-01-01


STREAM_CONFIG = """
providers:
  - {name: fake, type: mock, output_tokens: 8, tokens_per_s: 200}
models:
  - {name: priced, provider: fake, pricing: {input_per_mtok: 50, output_per_mtok: 50}}
routes:
  - name: budgeted
    targets: [{model: priced}]
    limits: {usd_per_day: 1}
"""


async def test_a_stream_the_server_never_sends_still_ends_its_request(tmp_path: Path) -> None:
    """The client can leave between the first chunk and the first byte sent: the stream is then
    dropped without being iterated. The request must still end: in-flight count, trace, and the
    budget's reservation replaced by what was used."""
    import gc

    settings = Settings(overrides={"home": str(tmp_path / "home")}, environ={})
    platform = Platform.build(settings, read_document(STREAM_CONFIG))
    await platform.open()
    try:
        gw = platform.gateway
        finished: list[Any] = []
        gw.observers.append(finished.append)
        stream, trace = await gw.open_stream("chat", {"model": "budgeted", "messages": MSG, "stream": True})
        assert gw.in_flight == 1
        del stream
        gc.collect()
        for _ in range(100):  # the event loop closes the dropped generator
            if not gw.in_flight:
                break
            await asyncio.sleep(0.01)
        assert gw.in_flight == 0
        assert finished == [trace] and trace.status == "error" and trace.status_code == 499
        limiter = gw.limiter
        assert limiter is not None
        # Nothing stays reserved, and nothing is in flight under the route's budget.
        counters = list(limiter._counters.values())
        assert counters and all(c.reserved == 0 and c.in_flight == 0 for c in counters)
    finally:
        await platform.close()
