"""Store writes for OTLP ingest: new spans are added to their traces and each touched trace row is
recomputed from all of its spans, with the rollups moved from the old row's figures to the new.

One transaction per request. Concurrent requests for the same trace are serialized: SQLite's
BEGIN IMMEDIATE takes the write lock up front; on Postgres a transaction-scoped advisory lock per
trace id makes the second request see the first one's spans before it recomputes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from shipyard.store import rollups
from shipyard.store.db import Store
from shipyard.store.tables import spans, traces
from shipyard.store.traces import SPAN_COLUMNS, TRACE_COLUMNS, dumps_json, insert_sql, row_facts
from shipyard.tracing.spans import Span

log = logging.getLogger("shipyard.tracing")

_CHUNK = 500  # ids per IN (...) list: far below SQLite's and Postgres' parameter limits
_SOURCE = TRACE_COLUMNS.index("source")


@dataclass
class IngestResult:
    traces: int = 0  # trace rows written (new or recomputed)
    spans: int = 0  # new spans stored (duplicates of stored ones are skipped)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)


def ingest(
    store: Store,
    by_trace: Mapping[str, Sequence[Span]],
    summarize: Callable[[str, list[Span]], tuple[Any, ...]],
) -> IngestResult:
    """Store ``by_trace`` (new spans per trace id) and replace each touched trace's row with
    ``summarize(trace_id, all its spans)``: a row in ``TRACE_COLUMNS`` order (``trace_row``)."""
    result = IngestResult()
    if not by_trace:
        return result
    ids = sorted(by_trace)
    with store.write() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", [(_lock_key(tid),) for tid in ids])
        old_rows = _trace_rows(conn, ids)
        stored = _stored_spans(conn, [tid for tid in ids if tid in old_rows])
        new_span_rows: list[tuple[Any, ...]] = []
        new_trace_rows: list[tuple[Any, ...]] = []
        replaced: list[str] = []
        for tid in ids:
            old = old_rows.get(tid)
            if old is not None and old[_SOURCE] != "otlp":
                result.rejected += len(by_trace[tid])
                _reason(result, f"trace {tid} was recorded by this gateway (source `{old[_SOURCE]}`)")
                continue
            known = {s.span_id: s for s in stored.get(tid, ())}
            fresh: dict[str, Span] = {}
            for s in by_trace[tid]:
                if s.span_id not in known and s.span_id not in fresh:
                    fresh[s.span_id] = s
            if not fresh:
                continue  # a re-sent batch: nothing changes
            try:
                row = summarize(tid, [*known.values(), *fresh.values()])
            except Exception as exc:  # one odd trace must not cost the whole request
                log.exception("cannot summarize OTLP trace %s", tid)
                result.rejected += len(fresh)
                _reason(result, f"trace {tid} could not be summarized: {type(exc).__name__}: {exc}")
                continue
            new_span_rows.extend(_span_row(s) for s in fresh.values())
            new_trace_rows.append(row)
            if old is not None:
                replaced.append(tid)
        if not new_trace_rows:
            return result
        for part in _chunks(replaced):
            conn.execute(traces.delete().where(traces.c.trace_id.in_(part)))
        conn.exec_driver_sql(insert_sql(conn, traces, TRACE_COLUMNS), new_trace_rows)
        conn.exec_driver_sql(
            insert_sql(conn, spans, SPAN_COLUMNS) + " ON CONFLICT (trace_id, span_id) DO NOTHING",
            new_span_rows,
        )
        # The replaced rows' figures leave the rollups and the recomputed rows' enter, in one upsert.
        change = rollups.deltas((row_facts(old_rows[tid]) for tid in replaced), sign=-1)
        for key, values in rollups.deltas(row_facts(r) for r in new_trace_rows).items():
            prev = change.get(key)
            change[key] = values if prev is None else [a + b for a, b in zip(prev, values, strict=True)]
        rollups.add(conn, change)
        result.traces = len(new_trace_rows)
        result.spans = len(new_span_rows)
    return result


def _reason(result: IngestResult, reason: str) -> None:
    if len(result.reasons) < 5:
        result.reasons.append(reason)


def _lock_key(trace_id: str) -> int:
    """A signed 64-bit advisory-lock key from the trace id's random low half."""
    return int.from_bytes(bytes.fromhex(trace_id[-16:]), "big", signed=True)


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _trace_rows(conn: sa.Connection, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    cols = [traces.c[name] for name in TRACE_COLUMNS]
    for part in _chunks(ids):
        for r in conn.execute(sa.select(*cols).where(traces.c.trace_id.in_(part))):
            out[r[0]] = tuple(r)
    return out


def _stored_spans(conn: sa.Connection, ids: Sequence[str]) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {}
    for part in _chunks(ids):
        for r in conn.execute(sa.select(spans).where(spans.c.trace_id.in_(part))):
            out.setdefault(r.trace_id, []).append(
                Span(
                    name=r.name,
                    trace_id=r.trace_id,
                    parent_id=r.parent_id,
                    span_id=r.span_id,
                    start=r.start_time,
                    end=r.end_time,
                    status=r.status,
                    attributes=dict(r.attributes or {}),
                )
            )
    return out


def _span_row(s: Span) -> tuple[Any, ...]:
    return (
        s.trace_id,
        s.span_id,
        s.parent_id,
        s.name,
        s.start,
        s.end,
        s.status,
        dumps_json(s.attributes or None),
    )
