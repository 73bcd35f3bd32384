"""Trace queries: batch insert (from the writer thread), list with filters, show one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from shipyard.store import performance, rollups
from shipyard.store.datasets import has_tag
from shipyard.store.db import Store
from shipyard.store.feedback import trace_condition as feedback_condition
from shipyard.store.tables import spans, traces
from shipyard.tracing import semconv as sc
from shipyard.tracing.spans import Span, Trace


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n] + f"…[{len(text) - n} more chars]"


def capture_value(value: Any, capture: str, max_chars: int) -> Any:
    """Apply the capture policy to a trace's input/output (messages, prompt, text)."""
    if capture == "none" or value is None:
        return None
    if capture == "full":
        return value
    if isinstance(value, str):
        return _cut(value, max_chars)
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("content"), str):
                item = {**item, "content": _cut(item["content"], max_chars)}
            elif isinstance(item, str):
                item = _cut(item, max_chars)
            out.append(item)
        return out
    return value


TRACE_COLUMNS = tuple(c.name for c in traces.c)
SPAN_COLUMNS = tuple(c.name for c in spans.c)
assert SPAN_COLUMNS == (
    "trace_id",
    "span_id",
    "parent_id",
    "name",
    "start_time",
    "end_time",
    "status",
    "attributes",
)
_JSON_COLUMNS = {"input", "attributes", "tags"}
_SQL_CACHE: dict[tuple[str, str], str] = {}


def dumps_json(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def insert_sql(conn: sa.Connection, table: sa.Table, columns: Sequence[str]) -> str:
    """A plain INSERT in the driver's own parameter style.

    The writer inserts thousands of rows a second; going through the DBAPI's executemany with
    values already serialized skips SQLAlchemy's per-row compile and bind processing, which is
    most of the cost of a Core insert.
    """
    key = (conn.dialect.name, table.name)
    sql = _SQL_CACHE.get(key)
    if sql is None:
        quote = conn.dialect.identifier_preparer.quote
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        pg = conn.dialect.name == "postgresql"
        marks = ", ".join(mark + ("::jsonb" if pg and c in _JSON_COLUMNS else "") for c in columns)
        sql = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) VALUES ({marks})"
        _SQL_CACHE[key] = sql
    return sql


TRACE_COLUMNS_EXPECTED = (
    "trace_id", "start_time", "end_time", "source", "operation", "route", "target", "provider", "model",
    "status", "status_code", "error", "latency_ms", "ttft_ms", "input_tokens", "output_tokens", "cost_usd",
    "stream", "attempts", "user_id", "input", "output", "attributes", "route_version", "model_version",
    "prompt", "prompt_version", "tags",
)  # fmt: skip
# trace_row builds tuples in this order (the writer's hot loop); a schema change must update both.
assert TRACE_COLUMNS == TRACE_COLUMNS_EXPECTED, "update trace_row() for the new traces columns"


def trace_row(t: Trace, capture: str = "full", max_chars: int = 2000) -> tuple[Any, ...]:
    """One trace as a tuple in TRACE_COLUMNS order, JSON columns already serialized."""
    end = t.end or t.start
    return (
        t.trace_id, t.start, end, t.source, t.operation, t.route, t.target, t.provider, t.model,
        t.status, t.status_code, t.error, round((end - t.start) * 1000, 3),
        None if t.ttft_ms is None else round(t.ttft_ms, 3), t.input_tokens, t.output_tokens, t.cost_usd,
        t.stream, t.attempts, t.user_id, dumps_json(capture_value(t.input, capture, max_chars)),
        capture_value(t.output, capture, max_chars), dumps_json(t.attributes or None), t.route_version,
        t.model_version, t.prompt, t.prompt_version, dumps_json(t.tags or None),
    )  # fmt: skip


def _implied(t: Mapping[str, Any]) -> dict[str, Any]:
    """Root-span attributes of a gateway trace that repeat its trace row: stored once, in the row."""
    out: dict[str, Any] = {
        sc.OPERATION_NAME: t["operation"],
        sc.REQUEST_MODEL: t["route"],
        sc.ROUTE: t["route"],
        sc.STREAM: bool(t["stream"]),
    }
    if t["ttft_ms"] is not None:
        out[sc.TTFT_MS] = t["ttft_ms"]
    return out


def _stored_attributes(t: Trace, sp: Span, capture: str, max_chars: int) -> dict[str, Any] | None:
    if sc.PROMPT_RENDERED in sp.attributes:
        # Message content, so it follows the same capture policy as the trace's input.
        attrs = dict(sp.attributes)
        rendered = capture_value(attrs.pop(sc.PROMPT_RENDERED), capture, max_chars)
        if rendered is not None:
            attrs[sc.PROMPT_RENDERED] = rendered
        return attrs or None
    if sp.parent_id is not None or t.source != "gateway" or not sp.attributes:
        return sp.attributes or None
    implied = _implied(
        {
            "operation": t.operation,
            "route": t.route,
            "stream": t.stream,
            "ttft_ms": None if t.ttft_ms is None else round(t.ttft_ms, 3),
        }
    )
    kept = {k: v for k, v in sp.attributes.items() if k not in implied or implied[k] != v}
    return kept or None


def _restore_attributes(trace: Mapping[str, Any], span: dict[str, Any]) -> None:
    if span["parent_id"] is None and trace["source"] == "gateway":
        span["attributes"] = {**_implied(trace), **(span["attributes"] or {})}


def insert_traces(store: Store, batch: Sequence[Trace], capture: str = "full", max_chars: int = 2000) -> None:
    trace_rows = [trace_row(t, capture, max_chars) for t in batch]
    span_rows = [
        (
            sp.trace_id,
            sp.span_id,
            sp.parent_id,
            sp.name,
            sp.start,
            sp.end or sp.start,
            sp.status,
            dumps_json(_stored_attributes(t, sp, capture, max_chars)),
        )
        for t in batch
        for sp in t.spans
    ]
    with store.engine.begin() as conn:
        if trace_rows:
            conn.exec_driver_sql(insert_sql(conn, traces, TRACE_COLUMNS), trace_rows)
            rollups.add(conn, rollups.deltas(row_facts(r) for r in trace_rows))
            performance.add(conn, batch)
        if span_rows:
            conn.exec_driver_sql(insert_sql(conn, spans, SPAN_COLUMNS), span_rows)


def row_facts(row: Sequence[Any]) -> rollups.TraceFacts:
    """What a trace_row() tuple contributes to the rollups."""
    return rollups.TraceFacts(
        row[1], row[3], row[5], row[8], row[9], row[12], row[13], row[14], row[15], row[16]
    )


@dataclass
class TraceFilter:
    route: str | None = None
    model: str | None = None
    status: str | None = None
    since: float | None = None
    until: float | None = None
    search: str | None = None
    source: str | None = None
    tag: str | None = None
    feedback: str | None = None  # positive | negative | any | none (see store/feedback.py)

    def indexed_only(self) -> bool:
        """True when an index walks the matches in time order (route, time range) and nothing
        else has to be checked row by row."""
        return not (self.model or self.status or self.source or self.search or self.tag or self.feedback)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(f: TraceFilter, dialect: str = "sqlite") -> list[Any]:
    cond: list[Any] = []
    if f.route:
        cond.append(traces.c.route == f.route)
    if f.model:
        cond.append(traces.c.model == f.model)
    if f.status:
        cond.append(traces.c.status == f.status)
    if f.source:
        cond.append(traces.c.source == f.source)
    if f.since is not None:
        cond.append(traces.c.start_time >= f.since)
    if f.until is not None:
        cond.append(traces.c.start_time < f.until)
    if f.search:
        like = f"%{_like_escape(f.search)}%"
        # SQLite's LIKE ignores ASCII case already; Postgres needs ILIKE for the same behaviour.
        if dialect == "postgresql":
            match = [
                sa.cast(traces.c.input, sa.Text).ilike(like, escape="\\"),
                traces.c.output.ilike(like, escape="\\"),
            ]
        else:
            match = [
                sa.cast(traces.c.input, sa.Text).like(like, escape="\\"),
                traces.c.output.like(like, escape="\\"),
            ]
        cond.append(sa.or_(*match))
    if f.tag:
        cond.append(has_tag(dialect, f.tag))
    if f.feedback:
        cond.append(feedback_condition(f.feedback))
    return cond


SUMMARY_COLUMNS = [c for c in traces.c if c.name not in ("input", "output", "attributes")]


def list_traces(
    store: Store, f: TraceFilter | None = None, limit: int = 50, offset: int = 0
) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        q = sa.select(*SUMMARY_COLUMNS).where(*_where(f or TraceFilter(), conn.dialect.name))
        q = q.order_by(traces.c.start_time.desc()).limit(limit).offset(offset)
        return [r._asdict() for r in conn.execute(q)]


# -- keyset pages -----------------------------------------------------------------------------------
# Pages are keyed by (start_time, trace_id), newest first, so a page costs the same however deep
# it is and no COUNT over the table is needed. A filter that is not an index (model, status,
# source, text, tag, feedback) is checked row by row, so each page scans at most SCAN_LIMIT traces
# (walked newest first along ix_traces_start_time or ix_traces_route_start); when that window
# ends before the page is full, the page says where it stopped and its `older` cursor continues
# from there.
SCAN_LIMIT = 50_000


@dataclass(frozen=True)
class Cursor:
    """A position in the newest-first order; ``trace_id == ""`` means "before this time"."""

    start_time: float
    trace_id: str

    def encode(self) -> str:
        return f"{self.start_time!r}_{self.trace_id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        when, sep, tid = text.partition("_")
        try:
            start = float(when)
        except ValueError:
            start = float("nan")
        if not sep or start != start or len(tid) > 32 or not all(c in "0123456789abcdefABCDEF" for c in tid):
            raise ValueError(f"`{text}` is not a trace-list cursor; use the `older`/`newer` value of a page")
        return cls(start, tid)


@dataclass
class TracePage:
    rows: list[dict[str, Any]]
    newer: Cursor | None  # pass with direction="newer" for the page before this one
    older: Cursor | None  # pass with direction="older" for the page after this one
    scanned_to: float | None = None  # set when the scan window ended the page early: its oldest time
    scan_limit: int = SCAN_LIMIT


PAGE_COLUMNS = [*SUMMARY_COLUMNS, traces.c.input]


def _keyset(cursor: Cursor, direction: str) -> Any:
    t, tid = traces.c.start_time, traces.c.trace_id
    if direction == "older":
        # The first conjunct alone is what the index range uses; the second settles ties.
        return sa.and_(t <= cursor.start_time, sa.or_(t < cursor.start_time, tid < cursor.trace_id))
    return sa.and_(t >= cursor.start_time, sa.or_(t > cursor.start_time, tid > cursor.trace_id))


def page_traces(
    store: Store,
    f: TraceFilter | None = None,
    *,
    limit: int = 50,
    cursor: Cursor | None = None,
    direction: str = "older",
    scan_limit: int = SCAN_LIMIT,
) -> TracePage:
    """One page of traces matching ``f``, newest first (summary columns plus ``input``).

    ``direction="older"`` (default) starts after ``cursor`` (or at the newest trace);
    ``"newer"`` returns the page just before ``cursor``.
    """
    if direction not in ("older", "newer"):
        raise ValueError("direction must be `older` or `newer`")
    f = f or TraceFilter()
    newest_first = direction == "older"
    t, tid = traces.c.start_time, traces.c.trace_id
    with store.engine.connect() as conn:
        dialect = conn.dialect.name
        base: list[Any] = []
        if f.route:
            base.append(traces.c.route == f.route)
        if f.since is not None:
            base.append(t >= f.since)
        if f.until is not None:
            base.append(t < f.until)
        if cursor is not None:
            base.append(t <= cursor.start_time if newest_first else t >= cursor.start_time)
        bound = None
        if not f.indexed_only():
            # Where does a window of `scan_limit` traces end? An index-only walk, a few ms per 100k.
            edge = sa.select(t).where(*base).order_by(t.desc() if newest_first else t.asc())
            bound = conn.execute(edge.limit(1).offset(scan_limit - 1)).scalar()
        cond = _where(f, dialect)
        if cursor is not None:
            cond.append(_keyset(cursor, direction))
        if bound is not None:
            cond.append(t >= bound if newest_first else t <= bound)
        order = [t.desc(), tid.desc()] if newest_first else [t.asc(), tid.asc()]
        q = sa.select(*PAGE_COLUMNS).where(*cond).order_by(*order).limit(limit + 1)
        rows = [r._asdict() for r in conn.execute(q)]
    more = len(rows) > limit
    rows = rows[:limit]
    scanned_to = None
    if not more and bound is not None:
        scanned_to = bound  # the window ended the scan, not the data
    if not newest_first:
        rows.reverse()
    first = Cursor(rows[0]["start_time"], rows[0]["trace_id"]) if rows else None
    last = Cursor(rows[-1]["start_time"], rows[-1]["trace_id"]) if rows else None
    if newest_first:
        newer = first if cursor is not None else None
        older = last if more else (Cursor(scanned_to, "") if scanned_to is not None else None)
    else:
        # After a cut-short scan, continue strictly after everything it covered.
        newer = Cursor(scanned_to, "f" * 32) if scanned_to is not None else (first if more else None)
        older = last
    return TracePage(rows, newer, older, scanned_to, scan_limit)


def count_traces(store: Store, f: TraceFilter | None = None) -> int:
    with store.engine.connect() as conn:
        q = (
            sa.select(sa.func.count())
            .select_from(traces)
            .where(*_where(f or TraceFilter(), conn.dialect.name))
        )
        return int(conn.execute(q).scalar() or 0)


def get_trace(store: Store, trace_id: str) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(traces).where(traces.c.trace_id == trace_id)).first()
        if row is None and len(trace_id) < 32:
            # Allow a unique prefix, like git does for commits.
            rows = conn.execute(
                sa.select(traces).where(traces.c.trace_id.like(trace_id + "%")).limit(2)
            ).all()
            row = rows[0] if len(rows) == 1 else None
        if row is None:
            return None
        out = row._asdict()
        span_rows = conn.execute(
            sa.select(spans).where(spans.c.trace_id == out["trace_id"]).order_by(spans.c.start_time)
        )
        out["spans"] = [s._asdict() for s in span_rows]
        for span in out["spans"]:
            _restore_attributes(out, span)
        return out
