"""Trace queries: batch insert (from the writer thread), list with filters, show one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from shipyard.store.db import Store
from shipyard.store.tables import spans, traces
from shipyard.tracing.spans import Trace


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


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def _insert_sql(conn: sa.Connection, table: sa.Table, columns: Sequence[str]) -> str:
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
        t.stream, t.attempts, t.user_id, _dumps(capture_value(t.input, capture, max_chars)),
        capture_value(t.output, capture, max_chars), _dumps(t.attributes or None), t.route_version,
        t.model_version, t.prompt, t.prompt_version, _dumps(t.tags or None),
    )  # fmt: skip


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
            _dumps(sp.attributes or None),
        )
        for t in batch
        for sp in t.spans
    ]
    with store.engine.begin() as conn:
        if trace_rows:
            conn.exec_driver_sql(_insert_sql(conn, traces, TRACE_COLUMNS), trace_rows)
        if span_rows:
            conn.exec_driver_sql(_insert_sql(conn, spans, SPAN_COLUMNS), span_rows)


@dataclass
class TraceFilter:
    route: str | None = None
    model: str | None = None
    status: str | None = None
    since: float | None = None
    until: float | None = None
    search: str | None = None


def _where(f: TraceFilter) -> list[Any]:
    cond: list[Any] = []
    if f.route:
        cond.append(traces.c.route == f.route)
    if f.model:
        cond.append(traces.c.model == f.model)
    if f.status:
        cond.append(traces.c.status == f.status)
    if f.since is not None:
        cond.append(traces.c.start_time >= f.since)
    if f.until is not None:
        cond.append(traces.c.start_time < f.until)
    if f.search:
        like = f"%{f.search}%"
        cond.append(sa.or_(sa.cast(traces.c.input, sa.Text).like(like), traces.c.output.like(like)))
    return cond


SUMMARY_COLUMNS = [c for c in traces.c if c.name not in ("input", "output", "attributes")]


def list_traces(
    store: Store, f: TraceFilter | None = None, limit: int = 50, offset: int = 0
) -> list[dict[str, Any]]:
    q = sa.select(*SUMMARY_COLUMNS).where(*_where(f or TraceFilter()))
    q = q.order_by(traces.c.start_time.desc()).limit(limit).offset(offset)
    with store.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(q)]


def count_traces(store: Store, f: TraceFilter | None = None) -> int:
    q = sa.select(sa.func.count()).select_from(traces).where(*_where(f or TraceFilter()))
    with store.engine.connect() as conn:
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
        return out
