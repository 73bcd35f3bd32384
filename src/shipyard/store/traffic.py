"""The monitoring queries behind the dashboard pages and ``/api/overview``, ``/api/traces``:
one function per view, returning plain JSON-ready dicts so the HTML pages and the JSON API show
the same numbers.

The overview reads only the rollups (``store/rollups.py``) and ``trace_scores``; it never scans
the traces table, so it answers in milliseconds at millions of traces.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from shipyard.content import content_text
from shipyard.errors import InvalidRequest, NotFound
from shipyard.store import feedback as fb
from shipyard.store import rollups
from shipyard.store import traces as tq
from shipyard.store.db import Store
from shipyard.store.tables import trace_rollups, trace_scores
from shipyard.times import TimeWindow

STATUSES = ("ok", "error")
SOURCES = ("gateway", "otlp")
PAGE_SIZES = (25, 50, 100, 200)
MAX_PAGE = 500
PREVIEW_CHARS = 140
GUARD_PREFIX = "guard."


# -- overview ---------------------------------------------------------------------------------------
def _summary(agg: rollups.Aggregate, seconds: float | None = None) -> dict[str, Any]:
    out = agg.summary(seconds)
    out["tokens"] = out["input_tokens"] + out["output_tokens"]
    return out


def _plus(a: rollups.Aggregate, b: rollups.Aggregate) -> rollups.Aggregate:
    def hist(x: list[int] | None, y: list[int] | None) -> list[int]:
        x, y = x or [], y or []
        n = max(len(x), len(y))
        return [(x[i] if i < len(x) else 0) + (y[i] if i < len(y) else 0) for i in range(n)]

    return rollups.Aggregate(
        a.requests + b.requests,
        a.errors + b.errors,
        a.latency_sum + b.latency_sum,
        a.ttft_count + b.ttft_count,
        a.ttft_sum + b.ttft_sum,
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.cost_usd + b.cost_usd,
        hist(a.latency, b.latency),
        hist(a.ttft, b.ttft),
    )


# Queries that read different rows run side by side: sqlite3 and psycopg release the GIL while
# the database works, so on two cores the overview costs about its slowest query, not their sum.
_POOL = ThreadPoolExecutor(max_workers=3, thread_name_prefix="shipyard-overview")


def overview(
    store: Store,
    window: TimeWindow,
    *,
    route: str | None = None,
    model: str | None = None,
    source: str | None = None,
    breakdown_limit: int = 50,
) -> dict[str, Any]:
    """Totals, per-step series, per-route and per-model tables, online-eval score series."""
    filters: dict[str, Any] = {"route": route, "model": model, "source": source}
    since, until, step = window.since, window.until, window.step
    by_route = _POOL.submit(rollups.breakdown, store, since, until, "route", limit=breakdown_limit, **filters)
    by_model = _POOL.submit(rollups.breakdown, store, since, until, "model", limit=breakdown_limit, **filters)
    scores = _POOL.submit(score_series, store, since, until, step, route=route)
    # The window's step is a whole number of the rollup period `total` would pick (minutes up to six
    # hours, hours beyond), over the same buckets: the steps add up to the total exactly.
    total = rollups.Aggregate(latency=[], ttft=[])
    series = []
    for slot, agg in rollups.series(store, since, until, step, **filters):
        total = _plus(total, agg)
        s = _summary(agg)
        s["time"] = slot
        s["requests_per_s"] = agg.requests / step
        series.append(s)
    per_route = [{"route": name, **_summary(agg, window.seconds)} for name, agg in by_route.result()]
    per_model = [{"model": name, **_summary(agg, window.seconds)} for name, agg in by_model.result()]
    return {
        "window": {
            "since": since,
            "until": until,
            "seconds": window.seconds,
            "step": step,
            "range": window.key,
        },
        "filters": {k: v for k, v in filters.items() if v is not None},
        "totals": _summary(total, window.seconds),
        "series": series,
        "per_route": per_route,
        "per_model": per_model,
        "scores": scores.result(),
    }


def filter_options(store: Store, window: TimeWindow) -> dict[str, list[str]]:
    """Routes, models and sources that had traffic in (roughly) the window, for the filter menus."""
    period = rollups.choose_period(window.since, window.until)
    c = trace_rollups.c
    cond = [c.period == period, c.bucket >= int(window.since // period) * period, c.bucket < window.until]
    out: dict[str, list[str]] = {}
    with store.engine.connect() as conn:
        for col in ("route", "model", "source"):
            q = sa.select(c[col]).where(*cond).distinct().order_by(c[col]).limit(200)
            out[col] = [v for (v,) in conn.execute(q) if v]
    return out


def score_names(store: Store) -> list[str]:
    """Distinct scorer names, one index probe per name (a loose index scan on ix_trace_scores_name_time)."""
    names: list[str] = []
    with store.engine.connect() as conn:
        last: str | None = None
        while len(names) < 50:
            q = sa.select(sa.func.min(trace_scores.c.name))
            if last is not None:
                q = q.where(trace_scores.c.name > last)
            last = conn.execute(q).scalar()
            if last is None:
                break
            names.append(last)
    return names


def score_series(
    store: Store, since: float, until: float, step: int, *, route: str | None = None
) -> list[dict[str, Any]]:
    """Per scorer: average score and pass rate per step (``trace_scores``, by the trace's time)."""
    out = []
    c = trace_scores.c
    passed = sa.case((c.passed.is_(True), 1.0), (c.passed.is_(False), 0.0), else_=None)
    names = score_names(store)
    with store.engine.connect() as conn:
        # Postgres rounds a cast to integer; SQLite truncates (and may lack floor()).
        whole = sa.func.floor if conn.dialect.name == "postgresql" else (lambda x: sa.cast(x, sa.Integer))
        slot = (whole(c.trace_time / step) * step).label("slot")
        for name in names:
            cond = [c.name == name, c.trace_time >= since, c.trace_time < until]
            if route is not None:
                cond.append(c.route == route)
            q = (
                sa.select(slot, sa.func.avg(c.score), sa.func.avg(passed), sa.func.count())
                .where(*cond)
                .group_by(slot)
                .order_by(slot)
            )
            points: list[dict[str, Any]] = [
                {
                    "time": int(r[0]),
                    "avg": None if r[1] is None else float(r[1]),
                    "pass_rate": None if r[2] is None else float(r[2]),
                    "n": int(r[3]),
                }
                for r in conn.execute(q)
            ]
            if points:
                n = sum(p["n"] for p in points)
                weighted = [p["avg"] * p["n"] for p in points if p["avg"] is not None]
                scored = sum(p["n"] for p in points if p["avg"] is not None)
                out.append(
                    {
                        "name": name,
                        "n": n,
                        "avg": sum(weighted) / scored if scored else None,
                        "points": points,
                    }
                )
    return out


# -- trace list -------------------------------------------------------------------------------------
def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """The first words of a trace's input: its last user message, else the prompt text."""
    text = ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and value:
        if all(isinstance(m, dict) for m in value):
            users = [m for m in value if m.get("role") == "user"] or value
            text = content_text(users[-1].get("content", " "))
        else:
            text = " ".join(str(v) for v in value[:3])
    elif isinstance(value, dict):
        text = content_text(value.get("content", " ") or value.get("prompt") or value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass
class TraceQuery:
    """The trace list's parameters, checked: the page and ``/api/traces`` parse the same way."""

    filter: tq.TraceFilter
    window: TimeWindow | None
    limit: int = 50
    cursor: tq.Cursor | None = None
    direction: str = "older"

    @classmethod
    def parse(cls, params: dict[str, str]) -> TraceQuery:
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"`status` must be `ok` or `error`; got `{status}`", param="status")
        source = params.get("source") or None
        feedback = fb.check_filter(params.get("feedback") or None)
        window = None
        if params.get("range") or params.get("since") or params.get("until"):
            window = TimeWindow.parse(params.get("range"), params.get("since"), params.get("until"))
        raw_limit = params.get("limit") or "50"
        try:
            limit = int(raw_limit)
        except ValueError:
            raise InvalidRequest(
                f"`limit` must be a whole number; got `{raw_limit}`", param="limit"
            ) from None
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequest(f"`limit` must be from 1 to {MAX_PAGE}; got {limit}", param="limit")
        cursor = None
        if params.get("cursor"):
            try:
                cursor = tq.Cursor.decode(params["cursor"])
            except ValueError as exc:
                raise InvalidRequest(str(exc), param="cursor") from None
        direction = params.get("dir") or params.get("direction") or "older"
        if direction not in ("older", "newer"):
            raise InvalidRequest(f"`dir` must be `older` or `newer`; got `{direction}`", param="dir")
        search = (params.get("q") or params.get("search") or "").strip() or None
        if search is not None and len(search) > 200:
            raise InvalidRequest("`q` is longer than 200 characters", param="q")
        f = tq.TraceFilter(
            route=params.get("route") or None,
            model=params.get("model") or None,
            status=status,
            since=window.since if window else None,
            until=window.until if window else None,
            search=search,
            source=source,
            tag=(params.get("tag") or "").strip() or None,
            feedback=feedback,
        )
        return cls(f, window, limit, cursor, direction)

    def params(self) -> dict[str, str]:
        """The filter as query parameters (no cursor), for links."""
        f = self.filter
        out = {
            "route": f.route,
            "model": f.model,
            "status": f.status,
            "source": f.source,
            "q": f.search,
            "tag": f.tag,
            "feedback": f.feedback,
            "limit": str(self.limit) if self.limit != 50 else None,
        }
        if self.window is not None:
            out.update(self.window.params())
        return {k: v for k, v in out.items() if v}


def trace_row(r: dict[str, Any], feedback: dict[str, Any] | None) -> dict[str, Any]:
    row = {k: v for k, v in r.items() if k != "input"}
    row["preview"] = preview(r.get("input"))
    row["feedback"] = feedback
    return row


def trace_page(store: Store, query: TraceQuery) -> tuple[list[dict[str, Any]], tq.TracePage]:
    """One page of the trace list: its rows (with a preview and their feedback) and where it sits
    (the cursors of the pages beside it, and where a cut-short scan stopped)."""
    page = tq.page_traces(
        store, query.filter, limit=query.limit, cursor=query.cursor, direction=query.direction
    )
    summaries = fb.summaries(store, [r["trace_id"] for r in page.rows])
    return [trace_row(r, summaries.get(r["trace_id"])) for r in page.rows], page


def trace_list(store: Store, query: TraceQuery) -> dict[str, Any]:
    started = time.perf_counter()
    rows, page = trace_page(store, query)
    return {
        "traces": rows,
        "newer": page.newer.encode() if page.newer else None,
        "older": page.older.encode() if page.older else None,
        "scanned_to": page.scanned_to,
        "scan_limit": page.scan_limit if page.scanned_to is not None else None,
        "limit": query.limit,
        "query_ms": round((time.perf_counter() - started) * 1000, 1),
    }


def has_traces(store: Store) -> bool:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(tq.traces.c.trace_id).limit(1)).first() is not None


# -- one trace --------------------------------------------------------------------------------------
def scores_for(store: Store, trace_id: str) -> list[dict[str, Any]]:
    q = sa.select(trace_scores).where(trace_scores.c.trace_id == trace_id).order_by(trace_scores.c.id)
    with store.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(q)]


def _span_tree(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spans in depth-first order (children by start time), each with its ``depth``."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in spans:
        parent = s["parent_id"] if s["parent_id"] in ids else None
        children.setdefault(parent, []).append(s)
    for kids in children.values():
        kids.sort(key=lambda s: (s["start_time"], s["end_time"]))
    out: list[dict[str, Any]] = []
    seen: set[str] = set()

    def walk(parent: str | None, depth: int) -> None:
        for s in children.get(parent, []):
            if s["span_id"] in seen:
                continue
            seen.add(s["span_id"])
            out.append({**s, "depth": depth, "duration_ms": (s["end_time"] - s["start_time"]) * 1000})
            walk(s["span_id"], depth + 1)

    walk(None, 0)
    return out


def guard_findings(trace: dict[str, Any], spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every ``guard.*`` attribute on the trace or its spans, with where it was found."""
    found = []
    for key, value in sorted((trace.get("attributes") or {}).items()):
        if key.startswith(GUARD_PREFIX):
            found.append({"where": "trace", "key": key, "value": value})
    for s in spans:
        for key, value in sorted((s.get("attributes") or {}).items()):
            if key.startswith(GUARD_PREFIX):
                found.append({"where": s["name"], "key": key, "value": value})
    return found


def trace_detail(store: Store, trace_id: str) -> dict[str, Any]:
    t = tq.get_trace(store, trace_id)
    if t is None:
        raise NotFound(
            f"trace `{trace_id}` does not exist (it may not be written yet, or was never stored); "
            "the trace list at /traces shows recent ones",
            param="trace_id",
        )
    spans = _span_tree(t.pop("spans"))
    start = min([t["start_time"], *(s["start_time"] for s in spans)])
    end = max([t["end_time"], *(s["end_time"] for s in spans)])
    return {
        "trace": t,
        "spans": spans,
        "waterfall": {
            "kind": "waterfall",
            "start": start,
            "total_ms": (end - start) * 1000,
            "spans": [
                {
                    "name": s["name"],
                    "start": s["start_time"],
                    "end": s["end_time"],
                    "status": s["status"],
                    "depth": s["depth"],
                }
                for s in spans
            ],
        },
        "guard": guard_findings(t, spans),
        "scores": scores_for(store, t["trace_id"]),
        "feedback": fb.list_feedback(store, t["trace_id"], limit=200),
    }
