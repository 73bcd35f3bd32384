"""Per-minute and per-hour rollups of the traces table, kept up to date as traces are written.

The dashboard's overview and the alert rules read these instead of the traces: a week of traffic
is ~10k minute rows or ~170 hour rows however many requests it held, so they answer in
milliseconds at millions of traces. Latency and time-to-first-token keep a log-spaced histogram
(``HIST_BOUNDS_MS``), which gives percentiles within half a bucket (±19%) after interpolation.

Every write is an atomic add (``INSERT … ON CONFLICT DO UPDATE SET c = c + excluded.c``), so any
number of writers (the trace writer, OTLP ingest, other workers on Postgres) can add at once; a
trace that is replaced (OTLP spans arriving in several batches) subtracts its old contribution.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from shipyard.store.db import Store
from shipyard.store.tables import HIST_BOUNDS_MS, HIST_BUCKETS, ROLLUP_PERIODS, trace_rollups

KEY_COLUMNS = ("period", "bucket", "source", "route", "model")
SUM_COLUMNS = (
    "requests",
    "errors",
    "latency_sum",
    "ttft_count",
    "ttft_sum",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    *(f"lat_{i}" for i in range(HIST_BUCKETS)),
    *(f"ttft_{i}" for i in range(HIST_BUCKETS)),
)
_N_SCALARS = 8
_LAT0 = _N_SCALARS
_TTFT0 = _N_SCALARS + HIST_BUCKETS
_SQL: dict[str, str] = {}


def hist_index(ms: float) -> int:
    """Bucket of a latency: 0 holds [0, 1) ms, bucket i holds [2**((i-1)/2), 2**(i/2)) ms."""
    if ms < 1.0:
        return 0
    return min(int(2 * math.log2(ms)) + 1, HIST_BUCKETS - 1)


def percentile(counts: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram, interpolated geometrically inside its bucket."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    for i, c in enumerate(counts):
        if c <= 0:
            continue
        if seen + c >= rank:
            frac = (rank - seen) / c
            if i == 0:
                return frac * HIST_BOUNDS_MS[0]
            lo = HIST_BOUNDS_MS[i - 1]
            hi = HIST_BOUNDS_MS[i] if i < len(HIST_BOUNDS_MS) else lo * math.sqrt(2)
            return float(lo * (hi / lo) ** frac)
        seen += c
    return float(HIST_BOUNDS_MS[-1])


@dataclass(frozen=True, slots=True)
class TraceFacts:
    """What a trace contributes to the rollups."""

    start_time: float
    source: str
    route: str | None
    model: str | None
    status: str
    latency_ms: float | None
    ttft_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None


def deltas(facts: Iterable[TraceFacts], sign: int = 1) -> dict[tuple[Any, ...], list[float]]:
    """Sum what ``facts`` add to each rollup row (``sign=-1`` to take them away)."""
    out: dict[tuple[Any, ...], list[float]] = {}
    width = len(SUM_COLUMNS)
    for f in facts:
        for period in ROLLUP_PERIODS:
            key = (period, int(f.start_time // period) * period, f.source, f.route or "", f.model or "")
            row = out.get(key)
            if row is None:
                row = out[key] = [0] * width
            row[0] += sign
            if f.status != "ok":
                row[1] += sign
            if f.latency_ms is not None:
                row[2] += sign * f.latency_ms
                row[_LAT0 + hist_index(f.latency_ms)] += sign
            if f.ttft_ms is not None:
                row[3] += sign
                row[4] += sign * f.ttft_ms
                row[_TTFT0 + hist_index(f.ttft_ms)] += sign
            row[5] += sign * (f.input_tokens or 0)
            row[6] += sign * (f.output_tokens or 0)
            row[7] += sign * (f.cost_usd or 0.0)
    return out


def _upsert_sql(conn: sa.Connection) -> str:
    dialect = conn.dialect.name
    sql = _SQL.get(dialect)
    if sql is None:
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        cols = (*KEY_COLUMNS, *SUM_COLUMNS)
        sets = ", ".join(f"{c} = trace_rollups.{c} + excluded.{c}" for c in SUM_COLUMNS)
        sql = (
            f"INSERT INTO trace_rollups ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))}) "
            f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET {sets}"
        )
        _SQL[dialect] = sql
    return sql


def add(conn: sa.Connection, rows: dict[tuple[Any, ...], list[float]]) -> None:
    """Add ``rows`` (from :func:`deltas`) inside the caller's transaction."""
    if rows:
        params = [(*key, *values) for key, values in sorted(rows.items())]
        conn.exec_driver_sql(_upsert_sql(conn), params)


def rebuild(store: Store) -> int:
    """Recompute every rollup from the traces table (after a bulk import that bypassed them)."""
    from shipyard.store.tables import traces

    cols = [
        traces.c.start_time,
        traces.c.source,
        traces.c.route,
        traces.c.model,
        traces.c.status,
        traces.c.latency_ms,
        traces.c.ttft_ms,
        traces.c.input_tokens,
        traces.c.output_tokens,
        traces.c.cost_usd,
    ]
    n = 0
    with store.write() as conn:
        conn.execute(trace_rollups.delete())
        result = conn.execution_options(stream_results=True, yield_per=20_000).execute(sa.select(*cols))
        for part in result.partitions():
            facts = [TraceFacts(*r) for r in part]
            n += len(facts)
            add(conn, deltas(facts))
    return n


# -- queries ----------------------------------------------------------------------------------------


@dataclass
class Aggregate:
    """Totals over some rollup rows; ``latency``/``ttft`` are histogram counts."""

    requests: int = 0
    errors: int = 0
    latency_sum: float = 0.0
    ttft_count: int = 0
    ttft_sum: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency: list[int] | None = None
    ttft: list[int] | None = None

    @classmethod
    def from_row(cls, values: Sequence[Any]) -> Aggregate:
        v = [x or 0 for x in values]
        return cls(
            int(v[0]),
            int(v[1]),
            float(v[2]),
            int(v[3]),
            float(v[4]),
            int(v[5]),
            int(v[6]),
            float(v[7]),
            [int(x) for x in v[_LAT0:_TTFT0]],
            [int(x) for x in v[_TTFT0 : _TTFT0 + HIST_BUCKETS]],
        )

    def summary(self, seconds: float | None = None) -> dict[str, Any]:
        lat = self.latency or []
        ttft = self.ttft or []
        out: dict[str, Any] = {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else None,
            "latency_avg_ms": self.latency_sum / self.requests if self.requests else None,
            "latency_p50_ms": percentile(lat, 0.50),
            "latency_p95_ms": percentile(lat, 0.95),
            "latency_p99_ms": percentile(lat, 0.99),
            "ttft_avg_ms": self.ttft_sum / self.ttft_count if self.ttft_count else None,
            "ttft_p50_ms": percentile(ttft, 0.50),
            "ttft_p95_ms": percentile(ttft, 0.95),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        }
        if seconds:
            out["requests_per_s"] = self.requests / seconds
        return out


def choose_period(since: float, until: float) -> int:
    """Minute rollups for ranges up to six hours, hour rollups beyond."""
    return 60 if until - since <= 6 * 3600 else 3600


def _filters(
    since: float, until: float, period: int, route: str | None, model: str | None, source: str | None
) -> list[Any]:
    c = trace_rollups.c
    cond = [c.period == period, c.bucket >= int(since // period) * period, c.bucket < until]
    if route is not None:
        cond.append(c.route == route)
    if model is not None:
        cond.append(c.model == model)
    if source is not None:
        cond.append(c.source == source)
    return cond


def _sums() -> list[Any]:
    return [sa.func.sum(trace_rollups.c[name]) for name in SUM_COLUMNS]


def total(
    store: Store,
    since: float,
    until: float,
    *,
    route: str | None = None,
    model: str | None = None,
    source: str | None = None,
    period: int | None = None,
) -> Aggregate:
    period = period or choose_period(since, until)
    q = sa.select(*_sums()).where(*_filters(since, until, period, route, model, source))
    with store.engine.connect() as conn:
        row = conn.execute(q).one()
    return Aggregate.from_row(row)


def series(
    store: Store,
    since: float,
    until: float,
    step: int,
    *,
    route: str | None = None,
    model: str | None = None,
    source: str | None = None,
) -> list[tuple[int, Aggregate]]:
    """(bucket start, totals) per ``step`` seconds, oldest first; empty steps are left out."""
    period = 60 if step < 3600 or choose_period(since, until) == 60 else 3600
    step = max(period, step // period * period)
    slot = (trace_rollups.c.bucket // step * step).label("slot")
    q = (
        sa.select(slot, *_sums())
        .where(*_filters(since, until, period, route, model, source))
        .group_by(slot)
        .order_by(slot)
    )
    with store.engine.connect() as conn:
        return [(int(r[0]), Aggregate.from_row(r[1:])) for r in conn.execute(q)]


def breakdown(
    store: Store,
    since: float,
    until: float,
    by: str,
    *,
    route: str | None = None,
    model: str | None = None,
    source: str | None = None,
    limit: int = 50,
) -> list[tuple[str, Aggregate]]:
    """Totals per route or per model (``by``), busiest first."""
    if by not in ("route", "model", "source"):
        raise ValueError(f"cannot break down by `{by}`; use route, model or source")
    period = choose_period(since, until)
    col = trace_rollups.c[by]
    q = (
        sa.select(col, *_sums())
        .where(*_filters(since, until, period, route, model, source))
        .group_by(col)
        .order_by(sa.func.sum(trace_rollups.c.requests).desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return [(str(r[0]), Aggregate.from_row(r[1:])) for r in conn.execute(q)]
