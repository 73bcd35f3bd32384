"""Drift queries: the samples a drift check compares (traces of a route in a time window) and the
``drift_reports`` it writes. The statistics live in ``shipyard.monitoring.drift``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from shipyard.store.db import Store, insert_row
from shipyard.store.tables import drift_reports, traces

SAMPLE_COLUMNS = (
    traces.c.trace_id,
    traces.c.start_time,
    traces.c.operation,
    traces.c.input,
    traces.c.output,
    traces.c.attributes,
    traces.c.latency_ms,
    traces.c.input_tokens,
    traces.c.output_tokens,
)
SUMMARY_COLUMNS = [c for c in drift_reports.c if c.name != "results"]


# -- samples ----------------------------------------------------------------------------------------
def _in_window(route: str, since: float, until: float) -> list[Any]:
    return [traces.c.route == route, traces.c.start_time >= since, traces.c.start_time < until]


def count_window(store: Store, route: str, since: float, until: float) -> int:
    """Traces of ``route`` in [since, until), any status (one scan of the (route, start_time) index)."""
    q = sa.select(sa.func.count()).select_from(traces).where(*_in_window(route, since, until))
    with store.engine.connect() as conn:
        return int(conn.execute(q).scalar() or 0)


def window_rows(store: Store, route: str, since: float, until: float) -> list[dict[str, Any]]:
    """Every successful trace of ``route`` in [since, until), oldest first: for small windows."""
    q = (
        sa.select(*SAMPLE_COLUMNS)
        .where(*_in_window(route, since, until), traces.c.status == "ok")
        .order_by(traces.c.start_time, traces.c.trace_id)
    )
    with store.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(q)]


def _bucket(dialect: str, since: Any, width: Any) -> Any:
    x = (traces.c.start_time - since) / width
    # Truncation is the floor here (x >= 0); Postgres's integer cast would round instead.
    return sa.func.floor(x) if dialect == "postgresql" else sa.cast(x, sa.Integer)


def bucket_counts(
    store: Store, route: str, since: float, until: float, width: float
) -> tuple[np.ndarray, np.ndarray]:
    """The window cut into buckets of ``width`` seconds: (bucket numbers, trace counts), both sorted.

    The database counts (one index range scan), so a big window costs a few thousand result rows
    instead of one Python object per trace, and the server's other threads keep the GIL meanwhile.
    """
    with store.engine.connect() as conn:
        b = _bucket(conn.dialect.name, since, width).label("b")
        q = sa.select(b, sa.func.count()).where(*_in_window(route, since, until)).group_by(b).order_by(b)
        rows = conn.execute(q).all()
    ids = np.asarray([int(r[0]) for r in rows], dtype=np.int64)
    counts = np.asarray([int(r[1]) for r in rows], dtype=np.int64)
    return ids, counts


def bucket_start_times(
    store: Store, route: str, since: float, until: float, width: float, buckets: Iterable[int]
) -> dict[int, np.ndarray]:
    """Start times in each of these buckets of :func:`bucket_counts`, sorted (from the index alone).

    One statement, compiled once and run per bucket on one connection: a sample of a big window
    reads a few hundred buckets."""
    with store.engine.connect() as conn:
        bucket = _bucket(conn.dialect.name, sa.bindparam("since"), sa.bindparam("width"))
        q = (
            sa.select(traces.c.start_time)
            .where(
                traces.c.route == sa.bindparam("route"),
                traces.c.start_time >= sa.bindparam("lo"),
                traces.c.start_time < sa.bindparam("hi"),
                # The expression bucket_counts grouped by: float rounding at a bucket's edge cannot
                # put a trace in two buckets or in none.
                bucket == sa.bindparam("b"),
            )
            .order_by(traces.c.start_time)
        )
        out: dict[int, np.ndarray] = {}
        for b in buckets:
            lo = since + b * width
            params = {
                "route": route,
                "lo": max(since, lo - width),
                "hi": min(until, lo + 2 * width),
                "since": since,
                "width": width,
                "b": b,
            }
            out[b] = np.fromiter(conn.execute(q, params).scalars(), dtype=np.float64)
        return out


def traces_at(store: Store, route: str, start_times: Sequence[float] | np.ndarray) -> list[dict[str, Any]]:
    """The successful traces of ``route`` that started at exactly these times."""
    if not len(start_times):
        return []
    q = sa.select(*SAMPLE_COLUMNS).where(
        traces.c.route == route,
        traces.c.status == "ok",
        traces.c.start_time.in_([float(t) for t in start_times]),
    )
    with store.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(q)]


def routes_in_window(store: Store, since: float, until: float, limit: int = 20) -> list[str]:
    """Routes with traces in [since, until): for "no traces of route X" messages."""
    q = (
        sa.select(traces.c.route)
        .where(traces.c.start_time >= since, traces.c.start_time < until, traces.c.route.is_not(None))
        .group_by(traces.c.route)
        .order_by(traces.c.route)
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return [str(r) for r in conn.execute(q).scalars()]


# -- reports ----------------------------------------------------------------------------------------
def insert_report(
    store: Store,
    *,
    route: str,
    created_at: float,
    reference: dict[str, Any],
    current: dict[str, Any],
    n_reference: int,
    n_current: int,
    drifted: bool,
    results: dict[str, Any],
) -> int:
    with store.engine.begin() as conn:
        return insert_row(
            conn,
            drift_reports,
            route=route,
            created_at=created_at,
            reference=reference,
            current=current,
            n_reference=n_reference,
            n_current=n_current,
            drifted=drifted,
            results=results,
        )


def get_report(store: Store, report_id: int) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(drift_reports).where(drift_reports.c.id == report_id)).first()
    return None if row is None else row._asdict()


def latest_report(store: Store, route: str) -> dict[str, Any] | None:
    """The newest report of ``route`` (uses the (route, created_at) index)."""
    q = (
        sa.select(drift_reports)
        .where(drift_reports.c.route == route)
        .order_by(drift_reports.c.created_at.desc(), drift_reports.c.id.desc())
        .limit(1)
    )
    with store.engine.connect() as conn:
        row = conn.execute(q).first()
    return None if row is None else row._asdict()


def list_reports(
    store: Store,
    route: str | None = None,
    *,
    since: float | None = None,
    limit: int = 50,
    offset: int = 0,
    before: tuple[float, int] | None = None,
    with_results: bool = False,
) -> list[dict[str, Any]]:
    """Reports newest first; ``results`` (every test's detail and the topics) only when asked.
    ``before`` (a report's ``created_at`` and ``id``) pages further back without an offset."""
    columns = list(drift_reports.c) if with_results else SUMMARY_COLUMNS
    c = drift_reports.c
    q = sa.select(*columns)
    if route:
        q = q.where(c.route == route)
    if since is not None:
        q = q.where(c.created_at >= since)
    if before is not None:
        created, id_ = before
        q = q.where(c.created_at <= created, sa.or_(c.created_at < created, c.id < id_))
    q = q.order_by(drift_reports.c.created_at.desc(), drift_reports.c.id.desc()).limit(limit).offset(offset)
    with store.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(q)]


def count_reports(store: Store, route: str | None = None) -> int:
    q = sa.select(sa.func.count()).select_from(drift_reports)
    if route:
        q = q.where(drift_reports.c.route == route)
    with store.engine.connect() as conn:
        return int(conn.execute(q).scalar() or 0)
