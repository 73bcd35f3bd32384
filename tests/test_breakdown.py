"""Where time and money go (`store/performance.py`): the latency components of a trace, the
performance rollups they feed, and the three faces over them (`GET /api/performance`,
`shipyard traces stats`, the dashboard's Performance page), end to end through `shipyard up`, real
mock upstreams with known latencies, a guarded route, a fallback, a cached route and two API keys."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from shipyard.errors import InvalidRequest
from shipyard.gateway.stages import cache as cache_stage
from shipyard.providers.mock import MockOptions
from shipyard.providers.mock_upstream import MockUpstream
from shipyard.store import performance as perf
from shipyard.store.db import Store
from shipyard.store.tables import spans, traces
from shipyard.store.traces import insert_traces
from shipyard.tracing import semconv as sc
from shipyard.tracing.spans import Span, Trace
from tests import web_helpers
from tests.conftest import ShipyardServer, ThreadServer
from tests.helpers import NamedKey, api_as, every_page, named_key
from tests.web_helpers import Dashboard

browser = web_helpers.browser

# -- the components of one trace ---------------------------------------------------------------------


def _trace(stream: bool = False, ttft_ms: float | None = None) -> tuple[Trace, Span]:
    t = Trace("chat", start=100.0, end=101.0, route="r", stream=stream, ttft_ms=ttft_ms)
    root = Span("chat r", t.trace_id, start=100.0, end=101.0)
    t.spans.append(root)
    return t, root


def _span(t: Trace, root: Span, start: float, end: float, status: str = "ok", **attrs: Any) -> Span:
    s = Span("s", t.trace_id, root.span_id, start=start, end=end, status=status, attributes=attrs)
    t.spans.append(s)
    return s


def _full(t: Trace, root: Span, last_status: str = "ok") -> None:
    """Input guard 10-50 ms, a failed attempt 100-300 ms, the last one 350-900 ms, output guard
    920-950 ms (times after the request's start)."""
    _span(t, root, 100.01, 100.05, **{sc.GUARD_STAGE: "input"})
    _span(t, root, 100.1, 100.3, "error", **{sc.ATTEMPT: 1})
    _span(t, root, 100.35, 100.9, last_status, **{sc.ATTEMPT: 2})
    _span(t, root, 100.92, 100.95, **{sc.GUARD_STAGE: "output"})


def _ms(b: perf.Breakdown | None) -> list[float]:
    assert b is not None
    return [round(v, 6) for v in b.values()]


def test_a_stream_is_cut_at_its_first_token() -> None:
    t, root = _trace(stream=True, ttft_ms=500)
    _full(t, root)
    # queue 100-10..50, guards 40+30, retries 100→350, ttft 350→500, generation 500→900, rest 70
    assert _ms(perf.breakdown(t)) == [60, 70, 250, 150, 400, 70]
    assert perf.breakdown(t).total_ms == pytest.approx(1000)  # type: ignore[union-attr]


def test_a_whole_answer_counts_its_attempt_as_generation() -> None:
    t, root = _trace()
    _full(t, root)
    assert _ms(perf.breakdown(t)) == [60, 70, 250, 0, 550, 70]


def test_when_every_attempt_failed_they_are_all_retries() -> None:
    t, root = _trace()
    _full(t, root, last_status="error")
    assert _ms(perf.breakdown(t)) == [60, 70, 800, 0, 0, 70]


def test_a_request_no_provider_was_asked_for_is_guards_and_overhead() -> None:
    t, root = _trace()
    _span(t, root, 100.01, 100.05, **{sc.GUARD_STAGE: "input"})
    assert _ms(perf.breakdown(t)) == [0, 40, 0, 0, 0, 960]


def test_a_guard_beside_a_stream_is_not_counted_twice() -> None:
    t, root = _trace(stream=True, ttft_ms=200)
    _span(t, root, 100.1, 100.8, **{sc.ATTEMPT: 1})
    _span(t, root, 100.15, 100.85, **{sc.GUARD_STAGE: "output"})  # runs around the stream
    b = perf.breakdown(t)
    assert _ms(b) == [100, 50, 0, 100, 600, 150]
    assert b is not None and b.total_ms == pytest.approx(1000)


def test_the_cache_marks_are_the_cache_stages_own() -> None:
    assert sc.CACHE_HIT == cache_stage.HIT_ATTR
    assert sc.CACHE_SOURCE_TRACE == cache_stage.SOURCE_ATTR
    assert sc.CACHE_SAVED_USD == cache_stage.SAVED_USD_ATTR
    assert sc.CACHE_SAVED_TOKENS == cache_stage.SAVED_TOKENS_ATTR


def _check_rollups(store: Store) -> None:
    store.migrate()

    def made(i: int) -> Trace:
        t, root = _trace()
        t.start, t.end, root.start, root.end = 1000.0 + i, 1001.0 + i, 1000.0 + i, 1001.0 + i
        t.model, t.cost_usd, t.input_tokens, t.output_tokens = "m", 0.5, 10, 20
        t.prompt, t.prompt_version = ("p", 1 + i % 2) if i < 3 else (None, None)
        t.attributes[sc.KEY_ID] = "k1" if i < 3 else "k2"
        root.attributes[sc.CACHE_HIT] = i == 3
        if i == 3:
            t.cost_usd = None
            root.attributes[sc.CACHE_SAVED_USD] = 0.5
            root.attributes[sc.CACHE_SAVED_TOKENS] = 30
        return t

    batch = [made(i) for i in range(4)]
    otlp = Trace("chat", start=1000.0, end=1001.0, route="r", source="otlp")
    otlp.spans.append(Span("x", otlp.trace_id, start=1000.0, end=1001.0))
    insert_traces(store, [*batch, otlp])
    insert_traces(store, [made(0)])  # added onto the rows already there
    by_key = {r["key_id"]: r for r in perf.groups(store, 900, 1100, "key")}
    assert by_key["k1"]["requests"] == 4 and by_key["k1"]["cost_usd"] == pytest.approx(2.0)
    assert by_key["k2"]["cache"] == {
        "lookups": 1,
        "hits": 1,
        "hit_ratio": 1.0,
        "saved_usd": 0.5,
        "saved_tokens": 30,
    }
    total = perf.total(store, 900, 1100)
    assert total["requests"] == 5  # the OTLP trace is not the gateway's: no components to show
    assert total["latency"]["total_ms"] == pytest.approx(1000)
    assert total["cache"]["hit_ratio"] == pytest.approx(0.2)
    # Groups page in name order; a prompt group is (name, version).
    prompts = [r["group"] for r in perf.groups(store, 900, 1100, "prompt")]
    assert prompts == ["", "p@v1", "p@v2"]
    after = perf.groups(store, 900, 1100, "prompt", limit=1, after=("p", 1))
    assert [(r["prompt"], r["prompt_version"], r["requests"]) for r in after] == [("p", 2, 1)]
    # The dashboard's tables: the groups with the most cost (or requests), not the first by name.
    assert [r["key_id"] for r in perf.groups(store, 900, 1100, "key", top="cost_usd")] == ["k1", "k2"]
    assert [r["group"] for r in perf.groups(store, 900, 1100, "prompt", limit=1, top="requests")] == ["p@v1"]
    assert perf.groups(store, 2000, 3000, "route") == []
    with pytest.raises(InvalidRequest, match="`by` must be one of route, model, key, prompt"):
        perf.groups(store, 900, 1100, "colour")


def test_rollups_are_written_with_the_traces(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        _check_rollups(store)
    finally:
        store.close()


@pytest.mark.postgres
def test_rollups_on_postgres(pg_url: str) -> None:
    store = Store(pg_url)
    try:
        _check_rollups(store)
    finally:
        store.close()


# -- end to end --------------------------------------------------------------------------------------

FIRST_CHUNK_MS = 120  # the good upstream's wait before its answer (or first chunk)
TOKENS_PER_S = 50
OUTPUT_TOKENS = 8
FAILING_MS = 80  # the failing upstream's wait before its 503
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">bob's & co"
# What the upstream names its model is user content too: the tables and the chart labels show it.
MODEL = "good<b>model</b>&co"


def config(good: str, bad: str) -> str:
    return f"""
providers:
  - {{name: good, type: openai, base_url: '{good}/v1'}}
  - {{name: bad, type: openai, base_url: '{bad}/v1'}}
models:
  - name: good-m
    provider: good
    model: '{MODEL}'
    pricing: {{input_per_mtok: 1000, output_per_mtok: 2000}}
  - {{name: bad-m, provider: bad, model: bad-model, pricing: {{input_per_mtok: 500, output_per_mtok: 500}}}}
prompts:
  - name: greet
    messages: [{{role: user, content: "Say hello to {{{{ customer }}}}"}}]
routes:
  - name: cached
    targets: [{{model: good-m}}]
    cache: {{}}
  - name: fallback
    targets: [{{model: bad-m}}]
    fallbacks: [{{model: good-m}}]
  - name: guarded
    targets: [{{model: good-m}}]
    guards:
      input: [{{type: pii}}]
      output: [{{type: pii}}]
  - name: streamed
    targets: [{{model: good-m}}]
  - {{name: greeter, prompt: greet, targets: [{{model: good-m}}]}}
"""


class Env:
    def __init__(self, server: ShipyardServer, alice: NamedKey, hostile: NamedKey, viewer: NamedKey) -> None:
        self.server, self.alice, self.hostile, self.viewer = server, alice, hostile, viewer

    def rows(self) -> list[dict[str, Any]]:
        """Every stored trace with its root span's attributes and its key id."""
        store = Store(self.server.store_url())
        try:
            with store.engine.connect() as conn:
                trs = [dict(r._mapping) for r in conn.execute(sa.select(traces))]
                roots = {
                    r.trace_id: r.attributes
                    for r in conn.execute(sa.select(spans).where(spans.c.parent_id.is_(None)))
                }
        finally:
            store.engine.dispose()
        for t in trs:
            attrs = (
                t["attributes"] if isinstance(t["attributes"], dict) else json.loads(t["attributes"] or "{}")
            )
            root = roots.get(t["trace_id"])
            t["key_id"] = attrs.get(sc.KEY_ID)
            t["root"] = root if isinstance(root, dict) else json.loads(root or "{}")
        return trs


def _stream(client: Any, route: str, text: str) -> None:
    with client.chat.completions.with_streaming_response.create(
        model=route, messages=[{"role": "user", "content": text}], stream=True
    ) as response:
        assert "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)


def _whole(client: Any, route: str, text: str, **extra: Any) -> None:
    r = client.chat.completions.create(model=route, messages=[{"role": "user", "content": text}], **extra)
    assert r.choices[0].message.content


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    good = MockUpstream(
        MockOptions(latency_ms=FIRST_CHUNK_MS, tokens_per_s=TOKENS_PER_S, output_tokens=OUTPUT_TOKENS)
    )
    bad = MockUpstream(MockOptions(latency_ms=FAILING_MS, error_rate=1.0, error_status=503))
    tmp = tmp_path_factory.mktemp("breakdown")
    with ThreadServer(good) as g, ThreadServer(bad) as b:
        server = ShipyardServer(tmp / "home", config(g.url, b.url)).start()
        try:
            alice = named_key(server, "alice", role="client")
            hostile = named_key(server, HOSTILE, role="client")
            viewer = named_key(server, "watcher", role="viewer")
            a, h = server.openai(api_key=alice.secret), server.openai(api_key=hostile.secret)
            _whole(a, "cached", "when is high tide?")
            _whole(a, "cached", "when is high tide?")  # a hit
            _stream(a, "cached", "and low tide?")
            _stream(a, "cached", "and low tide?")  # a streamed hit
            _whole(a, "fallback", "one")
            _whole(h, "fallback", "two")
            _whole(h, "guarded", "a plain question")
            _stream(h, "guarded", "a streamed plain question")
            for i in range(3):
                _stream(a, "streamed", f"stream {i}")
            _whole(a, "greeter", "", extra_body={"variables": {"customer": "Mara"}})
            env = Env(server, alice, hostile, viewer)
            deadline = time.monotonic() + 15
            while len(env.rows()) < 12:
                assert time.monotonic() < deadline, "traces were not written"
                time.sleep(0.1)
            yield env
        finally:
            server.stop()


def _perf(env: Env, key: NamedKey | None = None, **params: Any) -> list[dict[str, Any]]:
    client = api_as(env.server, key or env.viewer)
    with client:
        return every_page(client, "/performance", {"range": "1h", **params})


def test_the_components_add_up_to_the_measured_latency(env: Env) -> None:
    rows = env.rows()
    by_route = {r["group"]: r for r in _perf(env, by="route")}
    assert set(by_route) == {"cached", "fallback", "guarded", "streamed", "greeter"}
    for route, row in by_route.items():
        measured = [t["latency_ms"] for t in rows if t["route"] == route]
        lat = row["latency"]
        assert row["requests"] == len(measured)
        # The root span is the trace: its average duration is the rows' average latency.
        assert lat["total_ms"] == pytest.approx(sum(measured) / len(measured), abs=1.0), route
        parts = sum(lat[f"{c}_ms"] for c in perf.COMPONENTS)
        assert parts == pytest.approx(lat["total_ms"], rel=0.01), route
    # Streams: the upstream waits FIRST_CHUNK_MS, then sends OUTPUT_TOKENS at TOKENS_PER_S.
    streamed = by_route["streamed"]["latency"]
    assert FIRST_CHUNK_MS * 0.9 <= streamed["ttft_ms"] <= FIRST_CHUNK_MS + 250
    pace_ms = (OUTPUT_TOKENS - 1) / TOKENS_PER_S * 1000
    assert pace_ms * 0.7 <= streamed["generation_ms"] <= pace_ms + 400
    assert streamed["retries_ms"] == 0 and streamed["guards_ms"] == 0
    # The fallback route's first attempt always fails after FAILING_MS.
    fallback = by_route["fallback"]["latency"]
    assert FAILING_MS * 0.9 <= fallback["retries_ms"] <= FAILING_MS + 250
    assert fallback["generation_ms"] >= FIRST_CHUNK_MS * 0.9 and fallback["ttft_ms"] == 0
    assert by_route["guarded"]["latency"]["guards_ms"] > 0
    assert all(by_route[r]["latency"]["guards_ms"] == 0 for r in ("cached", "fallback", "streamed"))
    # Per model: the answering model carries the fallback's time too.
    models = {r["group"]: r for r in _perf(env, by="model")}
    assert models[MODEL]["requests"] == len(rows)


def test_costs_per_key_route_and_prompt_match_the_trace_rows(env: Env) -> None:
    rows = env.rows()
    want: dict[str, dict[Any, float]] = {"key": defaultdict(float), "route": defaultdict(float)}
    for t in rows:
        want["key"][t["key_id"]] += t["cost_usd"] or 0.0
        want["route"][t["route"]] += t["cost_usd"] or 0.0
    assert want["key"][env.alice.key_id] > 0 and want["key"][env.hostile.key_id] > 0
    keys = {r["key_id"]: r for r in _perf(env, by="key")}
    assert set(keys) == {env.alice.key_id, env.hostile.key_id}
    for key_id, cost in want["key"].items():
        assert keys[key_id]["cost_usd"] == pytest.approx(cost)
    assert keys[env.hostile.key_id]["key_name"] == HOSTILE
    routes = {r["group"]: r for r in _perf(env, by="route")}
    for route, cost in want["route"].items():
        assert routes[route]["cost_usd"] == pytest.approx(cost)
    prompts = {r["group"]: r for r in _perf(env, by="prompt")}
    greeted = [t for t in rows if t["prompt"] == "greet"]
    assert prompts["greet@v1"]["prompt"] == "greet" and prompts["greet@v1"]["prompt_version"] == 1
    assert prompts["greet@v1"]["cost_usd"] == pytest.approx(sum(t["cost_usd"] for t in greeted))
    assert prompts[""]["requests"] == len(rows) - len(greeted)


def test_cache_hits_and_savings_per_route(env: Env) -> None:
    rows = [t for t in env.rows() if t["route"] == "cached"]
    misses = [t for t in rows if t["root"].get(sc.CACHE_HIT) is False]
    hits = [t for t in rows if t["root"].get(sc.CACHE_HIT) is True]
    assert len(misses) == 2 and len(hits) == 2
    cached = next(r for r in _perf(env, by="route") if r["group"] == "cached")
    assert cached["cache"]["lookups"] == 4 and cached["cache"]["hits"] == 2
    assert cached["cache"]["hit_ratio"] == pytest.approx(0.5)
    # Each hit repeats one miss: it saved what that answer cost and its tokens.
    assert cached["cache"]["saved_usd"] == pytest.approx(sum(t["cost_usd"] for t in misses))
    tokens = sum(t["input_tokens"] + t["output_tokens"] for t in misses)
    assert cached["cache"]["saved_tokens"] == tokens
    metrics = httpx.get(env.server.url + "/metrics").text
    saved = re.search(r'shipyard_cache_saved_usd_total\{route="cached"\} (\S+)', metrics)
    assert saved and float(saved.group(1)) == pytest.approx(cached["cache"]["saved_usd"])
    # A hit asked no provider: its time is the gateway's own.
    assert all(r["cache"]["lookups"] == 0 for r in _perf(env, by="route") if r["group"] != "cached")


def test_the_api_pages_checks_its_input_and_needs_a_viewer(env: Env) -> None:
    with api_as(env.server, env.viewer) as api:
        first = api.get("/performance", params={"range": "1h", "limit": 2}).json()
        assert len(first["data"]) == 2 and first["next"]
        assert [r["group"] for r in _perf(env, by="route")] == sorted(
            ["cached", "fallback", "greeter", "guarded", "streamed"]
        )
        only = api.get("/performance", params={"range": "1h", "by": "model", "route": "fallback"}).json()
        assert [(r["group"], r["requests"]) for r in only["data"]] == [(MODEL, 2)]
        for params, field in (
            ({"by": "colour"}, "by"),
            ({"since": "last tuesday"}, "since"),
            ({"since": "1h", "until": "2h"}, "since"),
            ({"cursor": "nonsense"}, "cursor"),
            ({"by": "key", "cursor": first["next"]}, "cursor"),  # a cursor of another grouping
        ):
            r = api.get("/performance", params=params)
            assert r.status_code == 400, (params, r.text)
            assert r.json()["error"]["param"] == field and f"`{field}`" in r.json()["error"]["message"]
        empty = api.get("/performance", params={"since": "2001-01-01T00:00:00", "until": "2001-01-02"})
        assert empty.status_code == 200 and empty.json() == {"data": [], "next": None}
    with api_as(env.server, env.alice) as api:
        assert api.get("/performance").status_code == 403
    schema = httpx.get(env.server.url + "/api/openapi.json", headers=env.server.headers).json()
    responses = schema["paths"]["/performance"]["get"]["responses"]
    assert {"200", "400", "401", "403"} <= set(responses)


def _cli(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipyard", "traces", "stats", "--home", str(env.server.home), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "220", "NO_COLOR": "1"},
    )


def test_traces_stats_on_the_command_line(env: Env) -> None:
    out = _cli(env, "--since", "1h", "--by", "key", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    api = {r["key_id"]: r for r in _perf(env, by="key")}
    assert {r["key_id"]: r["cost_usd"] for r in got["data"]} == pytest.approx(
        {k: r["cost_usd"] for k, r in api.items()}
    )
    assert got["total"]["requests"] == len(env.rows()) and got["by"] == "key"
    table = _cli(env, "--since", "1h", "--route", "streamed")
    assert table.returncode == 0, table.stderr
    assert "streamed" in table.stdout and "fallback" not in table.stdout
    assert re.search(r"^\s*all\s+3\s", table.stdout, re.M), table.stdout
    for header in ("queue", "guards", "retries", "ttft", "generation", "overhead"):
        assert header in table.stdout
    keys = _cli(env, "--by", "key")
    assert keys.returncode == 0 and "bob's & co" in keys.stdout  # printed as text, not markup
    for args, option in ((["--by", "colour"], "--by"), (["--since", "last tuesday"], "--since")):
        bad = _cli(env, *args)
        assert bad.returncode == 2 and option in bad.stderr, bad.stderr
    nothing = _cli(env, "--since", "2001-01-01", "--until", "2001-01-02")
    assert nothing.returncode == 0 and "no gateway traces" in nothing.stdout


def test_the_performance_page_in_chromium(env: Env, browser: Any, tmp_path: Path) -> None:
    dashboard = Dashboard(env.server, browser, tmp_path)
    with dashboard.page() as page:
        page.goto("/performance?range=1h")
        page.expect_text(
            "Where the time goes, per route", "Where the time goes, per model", "Cost per API key",
            "Cost per prompt version", "Response cache", "greet@v1", "upstream TTFT",
        )  # fmt: skip
        assert page.expect_charts(2) == 2
        page.screenshot("performance")
        # The hostile key name is shown as text; no element came from it.
        page.expect_text(HOSTILE)
        assert page.raw.query_selector("img[src=x]") is None and page.raw.title() != "pwned"
        nav = page.raw.query_selector("nav a[aria-current=page]")
        assert nav is not None and nav.inner_text() == "Performance"
        # Every stacked bar has the six components, per route.
        legend = page.raw.inner_text("#chart-latency-route")
        for name in (
            "queue",
            "guards",
            "retries / fallback",
            "upstream TTFT",
            "generation",
            "gateway overhead",
        ):
            assert name in legend
        # The model's name is a chart label as written, not markup (Plotly reads tags in labels).
        assert MODEL in page.raw.inner_text("#chart-latency-model")
        assert not page.raw.query_selector_all(
            "#chart-latency-model svg b, #chart-latency-model svg [style*=bold]"
        )
        page.expect_text(MODEL)
        cache = page.raw.inner_text("#cache")
        assert "cached" in cache and "50.0%" in cache
        page.goto("/performance?range=1h&route=streamed")
        page.expect_text("route streamed")
        assert "fallback" not in page.raw.inner_text("#latency-route tbody")
        page.goto("/performance?since=2001-01-01&until=2001-01-02")
        page.expect_text("No gateway requests in this time range")
        page.goto("/performance?range=forever", status=400)
        # A hit's trace page says so and links the trace whose answer it repeated.
        hit = next(t for t in env.rows() if t["root"].get(sc.CACHE_HIT) is True)
        page.goto(f"/traces/{hit['trace_id']}")
        note = page.raw.inner_text("#cache-use")
        assert "Answered from the response cache" in note and "tokens" in note
        source = hit["root"][sc.CACHE_SOURCE_TRACE]
        page.raw.click(f"#cache-use a[href='/traces/{source}']")
        page.wait_ready()
        assert source in page.raw.inner_text(".page-head")
        assert "a miss" in page.raw.inner_text("#cache-use")
