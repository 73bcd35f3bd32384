"""Trace scores: what online evals (and later, people) say about a trace, and the aggregates that
charts and alert rules read back."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from shipyard.store.db import Store
from shipyard.store.tables import trace_scores

AGGREGATIONS = ("avg", "min", "max", "p50", "p95", "count", "pass_rate")
# Percentiles are computed from the values themselves; a window this large is already far past what
# a percentile needs, and it bounds the memory one alert evaluation can take.
MAX_PERCENTILE_VALUES = 200_000


@dataclass(frozen=True, slots=True)
class ScoreRow:
    trace_id: str
    name: str
    score: float | None
    passed: bool | None
    detail: dict[str, Any] | None
    source: str
    route: str | None
    trace_time: float


def insert_scores(store: Store, rows: Sequence[ScoreRow]) -> None:
    if not rows:
        return
    now = time.time()
    with store.engine.begin() as conn:
        conn.execute(
            trace_scores.insert(),
            [
                {
                    "trace_id": r.trace_id,
                    "name": r.name,
                    "score": r.score,
                    "passed": r.passed,
                    "detail": r.detail,
                    "source": r.source,
                    "route": r.route,
                    "trace_time": r.trace_time,
                    "created_at": now,
                }
                for r in rows
            ],
        )


def scores_for_trace(
    store: Store, trace_id: str, *, after_id: int | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """In the order they were recorded; ``after_id`` pages on."""
    q = sa.select(trace_scores).where(trace_scores.c.trace_id == trace_id)
    if after_id is not None:
        q = q.where(trace_scores.c.id > after_id)
    q = q.order_by(trace_scores.c.id).limit(limit)
    with store.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(q)]


def count_scores(store: Store, *, name: str | None = None, route: str | None = None) -> int:
    q = sa.select(sa.func.count()).select_from(trace_scores).where(*_where(name, route, None, None))
    with store.engine.connect() as conn:
        return int(conn.execute(q).scalar() or 0)


def _where(name: str | None, route: str | None, since: float | None, until: float | None) -> list[Any]:
    c = trace_scores.c
    cond: list[Any] = []
    if name is not None:
        cond.append(c.name == name)
    if route is not None:
        cond.append(c.route == route)
    if since is not None:
        cond.append(c.trace_time >= since)
    if until is not None:
        cond.append(c.trace_time < until)
    return cond


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), on unsorted ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def aggregate(
    store: Store, name: str, since: float, until: float, aggregation: str = "avg", route: str | None = None
) -> float | None:
    """One number over the scores named ``name`` of traces that started in [since, until);
    None when there are none (``count`` answers 0)."""
    c = trace_scores.c
    cond = [*_where(name, route, since, until)]
    with store.engine.connect() as conn:
        if aggregation in ("p50", "p95"):
            rows = conn.execute(
                sa.select(c.score)
                .where(*cond, c.score.is_not(None))
                .order_by(c.trace_time.desc())
                .limit(MAX_PERCENTILE_VALUES)
            )
            return quantile([float(r[0]) for r in rows], 0.5 if aggregation == "p50" else 0.95)
        if aggregation == "count":
            return float(
                conn.execute(sa.select(sa.func.count()).select_from(trace_scores).where(*cond)).scalar() or 0
            )
        if aggregation == "pass_rate":
            passed = sa.func.sum(sa.case((c.passed.is_(True), 1), else_=0))
            row = conn.execute(sa.select(passed, sa.func.count(c.passed)).where(*cond)).one()
            return float(row[0]) / row[1] if row[1] else None
        func: Any = {"avg": sa.func.avg, "min": sa.func.min, "max": sa.func.max}.get(aggregation)
        if func is None:
            raise ValueError(f"unknown aggregation `{aggregation}`; use one of {', '.join(AGGREGATIONS)}")
        value = conn.execute(sa.select(func(c.score)).where(*cond)).scalar()
    return None if value is None else float(value)


def _slot(store: Store, step: int) -> Any:
    # SQLite's CAST truncates (a floor for the positive times stored here); Postgres' rounds.
    t = trace_scores.c.trace_time
    whole = sa.cast(t, sa.BigInteger) if store.is_sqlite else sa.cast(sa.func.floor(t), sa.BigInteger)
    return (whole / step * step).label("slot")


def series(
    store: Store, name: str, since: float, until: float, step: int, route: str | None = None
) -> list[dict[str, Any]]:
    """Per ``step`` seconds (oldest first; empty steps left out): average, min, max, count and the
    share that passed, of the scores named ``name``."""
    c = trace_scores.c
    slot = _slot(store, step)
    passed = sa.func.sum(sa.case((c.passed.is_(True), 1), else_=0))
    q = (
        sa.select(
            slot,
            sa.func.avg(c.score),
            sa.func.min(c.score),
            sa.func.max(c.score),
            sa.func.count(),
            passed,
            sa.func.count(c.passed),
        )
        .where(*_where(name, route, since, until))
        .group_by(slot)
        .order_by(slot)
    )
    with store.engine.connect() as conn:
        return [
            {
                "t": int(r[0]),
                "avg": None if r[1] is None else float(r[1]),
                "min": None if r[2] is None else float(r[2]),
                "max": None if r[3] is None else float(r[3]),
                "count": int(r[4]),
                "pass_rate": float(r[5]) / r[6] if r[6] else None,
            }
            for r in conn.execute(q)
        ]


def names(
    store: Store,
    since: float | None = None,
    route: str | None = None,
    *,
    after: tuple[str, str] | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Every (score name, route) with scores since ``since``: count, average, latest trace time.
    Ordered by name, then route (no route first); ``after`` (a name and a route, ``""`` for none)
    pages on."""
    c = trace_scores.c
    # One order on both databases: SQLite sorts NULL first and PostgreSQL last.
    route_key = sa.func.coalesce(c.route, "")
    cond = _where(None, route, since, None)
    if after is not None:
        name, after_route = after
        cond += [c.name >= name, sa.or_(c.name > name, route_key > after_route)]
    q = (
        sa.select(c.name, c.route, sa.func.count(), sa.func.avg(c.score), sa.func.max(c.trace_time))
        .where(*cond)
        .group_by(c.name, c.route)
        .order_by(c.name, route_key)
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return [
            {
                "name": r[0],
                "route": r[1],
                "count": int(r[2]),
                "avg": None if r[3] is None else float(r[3]),
                "latest": float(r[4]),
            }
            for r in conn.execute(q)
        ]
