"""The monitoring API (/api/overview, /api/traces, /api/traces/{id}) and the feedback API
(/api/feedback) against a real server that the official openai client sent traffic through; the
trace list's keyset pages and bounded scans on the store itself (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipyard.store import feedback as fb
from shipyard.store import traces as tq
from shipyard.store.db import Store
from shipyard.store.tables import trace_scores
from shipyard.tracing.spans import Trace
from tests.conftest import ShipyardServer
from tests.helpers import every_page
from tests.web_helpers import CONFIG, Traffic, add_scores, send_traffic, wait_for_traces


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ShipyardServer, Traffic]]:
    server = ShipyardServer(tmp_path_factory.mktemp("monitoring") / "home", CONFIG).start()
    try:
        traffic = send_traffic(server, 30)
        wait_for_traces(server, traffic.sent)
        add_scores(server, traffic.trace_ids[:10])
        yield server, traffic
    finally:
        server.stop()


@pytest.fixture
def api(served: tuple[ShipyardServer, Traffic]) -> Iterator[httpx.Client]:
    with served[0].api() as client:
        yield client


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


# -- overview ---------------------------------------------------------------------------------------
def test_overview_counts_every_request(api: httpx.Client, served: tuple[ShipyardServer, Traffic]) -> None:
    traffic = served[1]
    ov = api.get("/overview", params={"range": "1h"}).json()
    t = ov["totals"]
    assert t["requests"] == traffic.sent
    assert t["errors"] == traffic.errors > 0
    assert t["error_rate"] == pytest.approx(traffic.errors / traffic.sent)
    assert t["requests_per_s"] == pytest.approx(traffic.sent / 3600)
    assert t["latency_p50_ms"] <= t["latency_p95_ms"] <= t["latency_p99_ms"]
    assert t["input_tokens"] > 0 and t["output_tokens"] > 0 and t["cost_usd"] > 0
    assert t["ttft_p50_ms"] is not None
    assert sum(p["requests"] for p in ov["series"]) == traffic.sent
    assert ov["window"]["step"] == 60
    assert {r["route"]: r["requests"] for r in ov["per_route"]} == traffic.by_route
    assert sum(r["requests"] for r in ov["per_model"]) == traffic.sent
    scores = {s["name"]: s for s in ov["scores"]}
    assert scores["relevance"]["n"] == 10 and 0 < scores["relevance"]["avg"] <= 1


def test_overview_filters_and_windows(api: httpx.Client, served: tuple[ShipyardServer, Traffic]) -> None:
    traffic = served[1]
    flaky = api.get("/overview", params={"route": "flaky", "range": "24h"}).json()
    assert flaky["totals"]["requests"] == traffic.by_route["flaky"]
    assert flaky["totals"]["errors"] == traffic.errors
    assert [r["route"] for r in flaky["per_route"]] == ["flaky"]
    assert flaky["window"]["step"] == 3600  # hour rollups beyond six hours
    by_model = api.get("/overview", params={"model": "fake-chat"}).json()
    assert by_model["totals"]["errors"] == 0
    none = api.get("/overview", params={"source": "otlp"}).json()
    assert none["totals"]["requests"] == 0 and none["series"] == [] and none["totals"]["error_rate"] is None
    past = api.get("/overview", params={"since": "2020-01-01T00:00:00Z", "until": "2020-01-02T00:00:00Z"})
    assert past.status_code == 200 and past.json()["totals"]["requests"] == 0
    now = time.time()
    custom = api.get("/overview", params={"since": str(now - 600), "until": str(now + 60)}).json()
    assert custom["totals"]["requests"] == traffic.sent and custom["window"]["range"] == "custom"


@pytest.mark.parametrize(
    ("params", "param", "words"),
    [
        ({"range": "fortnight"}, "range", "15m, 1h"),
        ({"since": "yesterday-ish"}, "since", "ISO 8601"),
        ({"since": "1h", "until": "2h"}, "since", "must be before"),
    ],
)
def test_overview_bad_window_is_a_400_naming_the_field(
    api: httpx.Client, params: dict[str, str], param: str, words: str
) -> None:
    r = api.get("/overview", params=params)
    assert r.status_code == 400
    err = error_of(r)
    assert err["param"] == param and words in err["message"]


# -- trace list -------------------------------------------------------------------------------------
def walk(api: httpx.Client, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every trace, page after page, following `next`."""
    return every_page(api, "/traces", params)


def test_trace_pages_walk_everything_newest_first(
    api: httpx.Client, served: tuple[ShipyardServer, Traffic]
) -> None:
    traffic = served[1]
    everything = walk(api, {"limit": 7})
    ids = [r["trace_id"] for r in everything]
    assert len(ids) == len(set(ids)) == traffic.sent
    keys = [(r["start_time"], r["trace_id"]) for r in everything]
    assert keys == sorted(keys, reverse=True)
    assert set(traffic.trace_ids) <= set(ids)
    first = api.get("/traces", params={"limit": 7}).json()
    second = api.get("/traces", params={"limit": 7, "cursor": first["next"]}).json()
    assert [r["trace_id"] for r in first["data"] + second["data"]] == ids[:14]
    assert api.get("/traces", params={"limit": 7, "cursor": first["next"]}).json() == second  # stable
    row = first["data"][0]
    assert "input" not in row and row["preview"].endswith(")") and "(#" in row["preview"]


def test_trace_list_filters(api: httpx.Client, served: tuple[ShipyardServer, Traffic]) -> None:
    traffic = served[1]
    errors = walk(api, {"status": "error"})
    assert len(errors) == traffic.errors and all(r["route"] == "flaky" for r in errors)
    flaky = walk(api, {"route": "flaky", "limit": 3})
    assert len(flaky) == traffic.by_route["flaky"]
    eu = walk(api, {"tag": "eu"})
    assert eu and all("eu" in r["tags"] for r in eu)
    untagged = [r for r in walk(api, {}) if not r["tags"]]
    assert len(eu) + len(untagged) < traffic.sent
    found = walk(api, {"q": "NEAREST HARBOUR"})  # case-blind; the mock never answers "nearest"
    assert len(found) == len([i for i in range(traffic.sent) if i % 5 == 0])
    assert all("nearest harbour" in r["preview"].lower() for r in found)
    assert walk(api, {"q": "100%_literal"}) == []  # LIKE wildcards are escaped
    assert len(walk(api, {"model": "fake-chat"})) == traffic.by_route["default"]
    assert len(walk(api, {"source": "gateway"})) == traffic.sent
    assert walk(api, {"range": "15m", "route": "default"}) == walk(api, {"route": "default"})
    assert walk(api, {"since": "2020-01-01T00:00:00Z", "until": "2020-01-02T00:00:00Z"}) == []


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"status": "broken"}, "status"),
        ({"feedback": "great"}, "feedback"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"cursor": "eyJ0cmFjZXMiOjF9"}, "cursor"),  # base64url JSON, but not a position in this list
        ({"limit": "501"}, "limit"),
        ({"range": "forever"}, "range"),
    ],
)
def test_trace_list_bad_parameters(api: httpx.Client, params: dict[str, str], param: str) -> None:
    r = api.get("/traces", params=params)
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == param


def test_one_trace_with_spans_scores_and_feedback(
    api: httpx.Client, served: tuple[ShipyardServer, Traffic]
) -> None:
    tid = served[1].trace_ids[0]
    d = api.get(f"/traces/{tid}").json()
    assert d["trace"]["trace_id"] == tid and d["trace"]["input"][1]["role"] == "user"
    names = [(s["name"], s["depth"]) for s in d["spans"]]
    assert names[0] == ("chat default", 0) and names[1][1] == 1 and len(names) == 2
    assert [s["name"] for s in d["scores"]] == ["relevance"]
    assert d["guard"] == [] and d["feedback"] == []
    assert api.get(f"/traces/{tid[:20]}").json()["trace"]["trace_id"] == tid  # unique prefix
    missing = api.get("/traces/0123456789abcdef0123456789abcdef")
    assert missing.status_code == 404 and "does not exist" in error_of(missing)["message"]


# -- feedback ---------------------------------------------------------------------------------------
def test_feedback_round_trip_and_filters(api: httpx.Client, served: tuple[ShipyardServer, Traffic]) -> None:
    ids = served[1].trace_ids
    up = api.post(
        "/feedback", json={"trace_id": ids[1], "score": "up", "comment": " spot on ", "user_id": "ann"}
    )
    assert up.status_code == 201, up.text
    row = up.json()
    assert row["kind"] == "thumbs" and row["score"] == 1.0 and row["comment"] == "spot on"
    assert row["name"] == "user" and row["user_id"] == "ann" and row["id"] > 0
    down = api.post("/feedback", json={"trace_id": ids[2], "score": False}).json()
    assert (down["kind"], down["score"]) == ("thumbs", 0.0)
    num = api.post("/feedback", json={"trace_id": ids[3], "score": 0.8, "name": "helpfulness"}).json()
    assert (num["kind"], num["score"], num["name"]) == ("numeric", 0.8, "helpfulness")
    low = api.post("/feedback", json={"trace_id": ids[3], "score": 0.2, "name": "accuracy"}).json()
    assert low["score"] == 0.2

    listed = api.get("/feedback", params={"trace_id": ids[3]}).json()
    assert [f["id"] for f in listed["data"]] == [low["id"], num["id"]] and listed["next"] is None
    newest = api.get("/feedback", params={"limit": 1}).json()
    assert [f["id"] for f in newest["data"]] == [low["id"]]
    older = api.get("/feedback", params={"cursor": newest["next"], "limit": 2}).json()
    assert [f["id"] for f in older["data"]] == [num["id"], down["id"]]
    one_by_one = every_page(api, "/feedback", {"trace_id": ids[3], "limit": 1})
    assert [f["id"] for f in one_by_one] == [low["id"], num["id"]]

    positive = {r["trace_id"] for r in walk(api, {"feedback": "positive"})}
    negative = {r["trace_id"] for r in walk(api, {"feedback": "negative"})}
    assert {ids[1], ids[3]} <= positive and ids[2] not in positive
    assert {ids[2], ids[3]} <= negative and ids[1] not in negative  # ids[3] was rated both ways
    anyf = {r["trace_id"] for r in walk(api, {"feedback": "any"})}
    nonef = {r["trace_id"] for r in walk(api, {"feedback": "none"})}
    assert {ids[1], ids[2], ids[3]} <= anyf and not anyf & nonef
    row1 = next(r for r in walk(api, {"feedback": "positive"}) if r["trace_id"] == ids[1])
    assert row1["feedback"] == {"n": 1, "positive": 1, "negative": 0, "avg": 1.0, "comments": 1}
    detail = api.get(f"/traces/{ids[3]}").json()
    assert sorted(f["name"] for f in detail["feedback"]) == ["accuracy", "helpfulness"]


def test_datasets_from_traces_by_feedback(api: httpx.Client, served: tuple[ShipyardServer, Traffic]) -> None:
    server, traffic = served
    good, bad = traffic.trace_ids[10], traffic.trace_ids[11]
    for tid, score in ((good, "up"), (good, 0.9), (bad, "down")):
        assert api.post("/feedback", json={"trace_id": tid, "score": score}).status_code == 201
    positive = {r["trace_id"] for r in walk(api, {"feedback": "positive"})}
    made = api.post("/datasets/liked/from-traces", json={"feedback": "positive"})
    assert made.status_code == 201, made.text
    version = made.json()["version"]
    assert version["n_examples"] == len(positive) and version["source"]["filters"]["feedback"] == "positive"
    examples = every_page(api, "/datasets/liked/versions/latest/examples")
    assert {e["trace_id"] for e in examples} == positive and good in positive
    bad_filter = api.post("/datasets/x/from-traces", json={"feedback": "meh"})
    assert bad_filter.status_code == 400 and error_of(bad_filter)["param"] == "feedback"

    run = subprocess.run(
        [sys.executable, "-m", "shipyard", "datasets", "from-traces", "disliked", "--feedback", "negative",
         "--json", "--home", str(server.home)],
        capture_output=True, text=True, timeout=120, cwd=server.home.parent,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    negative = {r["trace_id"] for r in walk(api, {"feedback": "negative"})}
    assert json.loads(run.stdout)["version"]["n_examples"] == len(negative) and bad in negative
    wrong = subprocess.run(
        [sys.executable, "-m", "shipyard", "datasets", "from-traces", "x", "--feedback", "great",
         "--home", str(server.home)],
        capture_output=True, text=True, timeout=120, cwd=server.home.parent,
    )  # fmt: skip
    assert wrong.returncode != 0 and "--feedback" in wrong.stderr


def test_feedback_right_after_the_answer(served: tuple[ShipyardServer, Traffic], api: httpx.Client) -> None:
    """A client can rate an answer the moment it arrives, before the batch writer stored it."""
    raw = (
        served[0]
        .openai()
        .chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": "rate me at once"}]
        )
    )
    r = api.post("/feedback", json={"trace_id": raw.headers["x-shipyard-trace-id"], "score": "down"})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("body", "status", "param", "words"),
    [
        ({"trace_id": "TRACE", "score": 7}, 400, "score", "from 0 to 1"),
        ({"trace_id": "TRACE", "score": "meh"}, 400, "score", '"up" or "down"'),
        ({"trace_id": "TRACE", "score": None}, 400, "score", "got nothing"),
        ({"trace_id": "TRACE", "score": [1]}, 400, "score", "got list"),
        ({"trace_id": "TRACE"}, 400, "score", "required"),
        ({"trace_id": "", "score": "up"}, 400, "trace_id", "must not be empty"),
        ({"trace_id": 12, "score": "up"}, 400, "trace_id", "must be a string"),
        ({"trace_id": "TRACE", "score": "up", "name": "x" * 65}, 400, "name", "at most 64"),
        ({"trace_id": "TRACE", "score": "up", "stars": 5}, 400, "stars", "Extra inputs"),
        ({"trace_id": "0123456789abcdef0123456789abcdef", "score": "up"}, 404, "trace_id", "does not exist"),
    ],
)
def test_feedback_errors_name_the_field(
    api: httpx.Client,
    served: tuple[ShipyardServer, Traffic],
    body: dict[str, Any],
    status: int,
    param: str,
    words: str,
) -> None:
    if body.get("trace_id") == "TRACE":
        body = {**body, "trace_id": served[1].trace_ids[0]}
    r = api.post("/feedback", json=body)
    assert r.status_code == status, r.text
    err = error_of(r)
    assert err["param"] == param and words in err["message"], err


def test_api_and_pages_share_the_server(served: tuple[ShipyardServer, Traffic]) -> None:
    server = served[0]
    assert httpx.get(server.url + "/healthz").status_code == 200
    with server.http() as http:
        assert http.get("/api/openapi.json").json()["paths"]["/feedback"]["post"]
        page = http.get("/traces", headers={"accept": "text/html"})
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        missing = http.get("/no-such-page", headers={"accept": "text/html"})
        assert missing.status_code == 404 and "no page at /no-such-page" in missing.text
        # Mounted at / after every other route, the dashboard leaves their 405s alone.
        for method, path in (("GET", "/v1/chat/completions"), ("POST", "/healthz"), ("DELETE", "/traces")):
            wrong = http.request(method, path)
            assert wrong.status_code == 405 and f"{method} is not allowed" in error_of(wrong)["message"]
        api_client = http.post("/v1/nothing-here", json={})
        assert api_client.status_code == 404 and "/v1/chat/completions" in error_of(api_client)["message"]
        bad = http.get("/traces", params={"status": "nope"}, headers={"accept": "text/html"})
        assert bad.status_code == 400 and "`status` must be `ok` or `error`" in bad.text
    assert httpx.get(server.url + "/metrics").status_code == 200


# -- keyset pages on the store ----------------------------------------------------------------------
def _fill(store: Store, n: int, t0: float = 1_700_000_000.0) -> list[Trace]:
    out = []
    for i in range(n):
        t = Trace(
            "chat",
            trace_id=f"{i // 2:012x}{i:020x}",  # pairs share a start time: ties settle by id
            start=t0 + (i // 2),
            end=t0 + (i // 2) + 0.05,
            route="a" if i % 2 else "b",
            model="m-rare" if i % 10 == 0 else "m",
            status="error" if i % 7 == 0 else "ok",
            input=[{"role": "user", "content": f"question {i} {'needle' if i % 9 == 0 else ''}"}],
            output=f"answer {i}",
            tags=["odd"] if i % 2 else ["even"],
        )
        out.append(t)
    tq.insert_traces(store, out)
    return out


def _all_pages(store: Store, f: tq.TraceFilter, limit: int, scan_limit: int) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = tq.page_traces(store, f, limit=limit, cursor=cursor, scan_limit=scan_limit)
        pages += 1
        ids += [r["trace_id"] for r in page.rows]
        if page.older is None:
            return ids, pages
        cursor = page.older
        assert pages < 500


def _expected(traces: list[Trace], keep: Any) -> list[str]:
    chosen = [t for t in traces if keep(t)]
    return [t.trace_id for t in sorted(chosen, key=lambda t: (t.start, t.trace_id), reverse=True)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 's.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = Store(url)
    s.migrate()
    try:
        yield s
    finally:
        s.close()


def test_bounded_scans_still_reach_every_match(store: Store) -> None:
    traces = _fill(store, 120)
    fb.add_feedback(store, traces[5].trace_id, "down")
    fb.add_feedback(store, traces[77].trace_id, 0.9)
    cases = [
        (tq.TraceFilter(), lambda t: True),
        (tq.TraceFilter(route="a"), lambda t: t.route == "a"),
        (tq.TraceFilter(model="m-rare"), lambda t: t.model == "m-rare"),
        (tq.TraceFilter(status="error", route="b"), lambda t: t.status == "error" and t.route == "b"),
        (tq.TraceFilter(search="NEEDLE"), lambda t: "needle" in t.input[0]["content"]),
        (tq.TraceFilter(tag="odd"), lambda t: "odd" in t.tags),
        (tq.TraceFilter(feedback="negative"), lambda t: t.trace_id == traces[5].trace_id),
        (tq.TraceFilter(feedback="any"), lambda t: t.trace_id in (traces[5].trace_id, traces[77].trace_id)),
        (
            tq.TraceFilter(since=traces[20].start, until=traces[90].start, model="m"),
            lambda t: traces[20].start <= t.start < traces[90].start and t.model == "m",
        ),
    ]
    for f, keep in cases:
        for limit, scan_limit in ((5, 1000), (4, 17), (50, 10)):
            ids, _ = _all_pages(store, f, limit, scan_limit)
            assert ids == _expected(traces, keep), (f, limit, scan_limit)
    # A rare match far back takes several bounded pages; the empty ones say where they stopped.
    page = tq.page_traces(
        store, tq.TraceFilter(model="m-rare", until=traces[30].start), limit=5, scan_limit=8
    )
    assert page.scanned_to is not None and page.older is not None and page.older.trace_id == ""


def test_newer_pages_mirror_older_ones(store: Store) -> None:
    _fill(store, 60)
    for f, scan_limit in (
        (tq.TraceFilter(), 1000),
        (tq.TraceFilter(model="m"), 1000),
        (tq.TraceFilter(route="a"), 5),
    ):
        pages = []
        cursor = None
        for _ in range(4):
            page = tq.page_traces(store, f, limit=6, cursor=cursor, scan_limit=scan_limit)
            pages.append([r["trace_id"] for r in page.rows])
            cursor = page.older
        after = tq.page_traces(store, f, limit=6, cursor=cursor, scan_limit=scan_limit)
        back = tq.page_traces(store, f, limit=6, cursor=after.newer, direction="newer", scan_limit=scan_limit)
        assert [r["trace_id"] for r in back.rows] == pages[-1]


def test_cursor_round_trip() -> None:
    c = tq.Cursor(1717430000.123456, "01a2242e2fc100bb42711ef28e2909cf")
    assert tq.Cursor.decode(c.encode()) == c
    assert tq.Cursor.decode(tq.Cursor(1.5, "").encode()) == tq.Cursor(1.5, "")
    for bad in ("", "abc", "1.5", "x_ab", "1.5_zz", "nan_ab"):
        with pytest.raises(ValueError):
            tq.Cursor.decode(bad)


def test_dashboard_queries_on_each_dialect(store: Store) -> None:
    """The overview, score series, feedback filters and text search on SQLite and PostgreSQL."""
    from shipyard.store import traffic as data
    from shipyard.times import TimeWindow

    now = time.time()
    traces = _fill(store, 40, t0=now - 1800)
    with store.engine.begin() as conn:
        for i, t in enumerate(traces[:20]):
            conn.execute(
                trace_scores.insert().values(
                    trace_id=t.trace_id, name="judge", score=i / 20, passed=i >= 10, source="online",
                    route=t.route, trace_time=t.start, created_at=now,
                )
            )  # fmt: skip
    fb.add_feedback(store, traces[3].trace_id, "up", comment="good")
    ov = data.overview(store, TimeWindow.parse("1h", now=now))
    assert ov["totals"]["requests"] == 40 and ov["totals"]["errors"] == sum(
        t.status == "error" for t in traces
    )
    assert sum(p["requests"] for p in ov["series"]) == 40
    assert {r["route"] for r in ov["per_route"]} == {"a", "b"}
    (judge,) = ov["scores"]
    assert judge["n"] == 20 and judge["avg"] == pytest.approx(sum(i / 20 for i in range(20)) / 20)
    assert all(p["time"] % 60 == 0 for p in judge["points"])
    listing = data.trace_list(store, data.TraceQuery.parse({"feedback": "positive"}))
    assert [r["trace_id"] for r in listing["traces"]] == [traces[3].trace_id]
    assert listing["traces"][0]["feedback"]["comments"] == 1
    found = data.trace_list(store, data.TraceQuery.parse({"q": "Question 27", "tag": "odd"}))
    assert [r["trace_id"] for r in found["traces"]] == [traces[27].trace_id]
    assert data.trace_detail(store, traces[3].trace_id)["feedback"][0]["comment"] == "good"
