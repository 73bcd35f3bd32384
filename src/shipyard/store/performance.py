"""Where time and money go: per route, model, API key and prompt version, what each part of a
request's latency adds up to, what the requests cost, and what the response cache saved.

**Latency components.** Each gateway trace's root span is cut into six parts that do not overlap
and add up to its duration (``breakdown``):

- ``queue``: from the request's start to its first provider attempt (limits, plan, cache lookup,
  waiting for a slot), less the input guards' time;
- ``guards``: the input and output guard spans, counted outside the attempts only (a streamed
  answer's output guard runs beside the generation, which already counts that time);
- ``retries``: from the first attempt's start to the last attempt's start (failed attempts and
  the backoff between them); all of the attempts when none succeeded;
- ``ttft``: the answering attempt's start to the first token the client was sent (streams);
- ``generation``: the first token to the end of the answering attempt (streams); for a whole
  answer, the answering attempt's whole duration, since no token arrives before the last one;
- ``overhead``: what remains of the root span: the gateway's own work after the answer (and, for
  a request no provider was asked for, such as a cache hit or a refusal, all of its time).

These sums go into ``perf_rollups`` (minute and hour rows, as ``store/rollups.py`` does for the
traffic figures) in the same transaction as the trace, so every query here reads rollup rows, never
spans: a day of traffic costs the same to read at a thousand traces as at millions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from shipyard.errors import InvalidRequest
from shipyard.store.db import Store
from shipyard.store.rollups import choose_period
from shipyard.store.tables import ROLLUP_PERIODS, api_keys, perf_rollups
from shipyard.tracing import semconv as sc
from shipyard.tracing.spans import Span, Trace

COMPONENTS = ("queue", "guards", "retries", "ttft", "generation", "overhead")
KEY_COLUMNS = ("period", "bucket", "route", "model", "key_id", "prompt", "prompt_version")
SUM_COLUMNS = (
    "requests",
    "errors",
    "streams",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    *(f"{c}_ms" for c in COMPONENTS),
    "cache_lookups",
    "cache_hits",
    "cache_saved_usd",
    "cache_saved_tokens",
)
_COMPONENT0 = SUM_COLUMNS.index("queue_ms")
# What a breakdown can be grouped by, and the rollup columns that make up a group.
GROUPS: dict[str, tuple[str, ...]] = {
    "route": ("route",),
    "model": ("model",),
    "key": ("key_id",),
    "prompt": ("prompt", "prompt_version"),
}
MAX_GROUPS = 500
_SQL: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class Breakdown:
    """One request's latency, in milliseconds, cut into :data:`COMPONENTS`."""

    queue_ms: float
    guards_ms: float
    retries_ms: float
    ttft_ms: float
    generation_ms: float
    overhead_ms: float

    @property
    def total_ms(self) -> float:
        return (
            self.queue_ms
            + self.guards_ms
            + self.retries_ms
            + self.ttft_ms
            + self.generation_ms
            + self.overhead_ms
        )

    def values(self) -> tuple[float, ...]:
        return (
            self.queue_ms,
            self.guards_ms,
            self.retries_ms,
            self.ttft_ms,
            self.generation_ms,
            self.overhead_ms,
        )


def _covered(intervals: Sequence[tuple[float, float]], lo: float, hi: float) -> float:
    """How long the union of ``intervals`` covers of ``[lo, hi]``, in seconds."""
    if hi <= lo:
        return 0.0
    clipped = sorted((max(a, lo), min(b, hi)) for a, b in intervals if b > lo and a < hi)
    total = 0.0
    end = lo
    for a, b in clipped:
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def root_of(trace: Trace) -> Span | None:
    spans = trace.spans
    if spans and spans[0].parent_id is None:  # the trace stage opens the root span first
        return spans[0]
    return next((s for s in spans if s.parent_id is None), None)


def breakdown(trace: Trace) -> Breakdown | None:
    """The latency components of a gateway trace (None without a root span)."""
    # One pass over the spans: this runs for every trace the writer stores.
    root = root_of(trace)
    if root is None:
        return None
    r0 = root.start
    r1 = max(root.end or trace.end or r0, r0)
    rid = root.span_id
    attempts: list[Span] = []
    guards: list[tuple[float, float]] = []
    for s in trace.spans:
        attrs = s.attributes
        if sc.ATTEMPT in attrs and s.parent_id == rid:
            attempts.append(s)
        elif sc.GUARD_STAGE in attrs:
            guards.append((s.start, s.end or s.start))
    if not attempts:
        guarded = _covered(guards, r0, r1) if guards else 0.0
        return _ms(0.0, guarded, 0.0, 0.0, 0.0, (r1 - r0) - guarded)
    if len(attempts) > 1:
        attempts.sort(key=lambda s: s.start)
    a0 = min(max(attempts[0].start, r0), r1)
    last = attempts[-1]
    start = max(min(last.start, r1), a0)
    end = max(min(last.end or r1, r1), start)
    if last.status == "ok":
        retries = start - a0
        first = start
        if trace.stream and trace.ttft_ms is not None:
            # The trace's time to first token runs from the request's start.
            first = min(max(trace.start + trace.ttft_ms / 1000, start), end)
        ttft, generation = first - start, end - first
    else:
        retries, ttft, generation = end - a0, 0.0, 0.0
    before = _covered(guards, r0, a0) if guards else 0.0
    after = _covered(guards, end, r1) if guards else 0.0
    return _ms((a0 - r0) - before, before + after, retries, ttft, generation, (r1 - end) - after)


def _ms(
    queue: float, guards: float, retries: float, ttft: float, generation: float, rest: float
) -> Breakdown:
    """Seconds to milliseconds; a part that clock steps made negative is 0."""
    return Breakdown(
        max(queue, 0.0) * 1000,
        max(guards, 0.0) * 1000,
        max(retries, 0.0) * 1000,
        max(ttft, 0.0) * 1000,
        max(generation, 0.0) * 1000,
        max(rest, 0.0) * 1000,
    )


def _number(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def contribution(t: Trace) -> tuple[tuple[Any, ...], list[float]] | None:
    """A gateway trace's group (route, model, key id, prompt, prompt version) and what it adds to
    each of :data:`SUM_COLUMNS`; None for a trace that is not the gateway's."""
    if t.source != "gateway":
        return None
    parts = breakdown(t)
    if parts is None:
        return None
    root = root_of(t)
    assert root is not None
    key_id = t.attributes.get(sc.KEY_ID)
    dims = (
        t.route or "",
        t.model or "",
        str(key_id) if key_id else "",
        t.prompt or "",
        t.prompt_version or 0,
    )
    hit = root.attributes.get(sc.CACHE_HIT)
    saved_usd = saved_tokens = 0.0
    if hit is True:
        saved_usd = _number(root.attributes.get(sc.CACHE_SAVED_USD))
        saved_tokens = float(int(_number(root.attributes.get(sc.CACHE_SAVED_TOKENS))))
    values = [
        1.0,
        float(t.status != "ok"),
        float(bool(t.stream)),
        t.cost_usd or 0.0,
        float(t.input_tokens or 0),
        float(t.output_tokens or 0),
        parts.total_ms,
        *parts.values(),
        float(hit is not None),
        float(hit is True),
        saved_usd,
        saved_tokens,
    ]
    return dims, values


def deltas(batch: Iterable[Trace]) -> dict[tuple[Any, ...], list[float]]:
    """What the gateway traces in ``batch`` add to each ``perf_rollups`` row."""
    out: dict[tuple[Any, ...], list[float]] = {}
    for t in batch:
        c = contribution(t)
        if c is None:
            continue
        dims, values = c
        for period in ROLLUP_PERIODS:
            key = (period, int(t.start // period) * period, *dims)
            row = out.get(key)
            if row is None:
                out[key] = list(values)
            else:
                for i, v in enumerate(values):
                    row[i] += v
    return out


def _upsert_sql(conn: sa.Connection) -> str:
    dialect = conn.dialect.name
    sql = _SQL.get(dialect)
    if sql is None:
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        cols = (*KEY_COLUMNS, *SUM_COLUMNS)
        sets = ", ".join(f"{c} = perf_rollups.{c} + excluded.{c}" for c in SUM_COLUMNS)
        sql = (
            f"INSERT INTO perf_rollups ({', '.join(cols)}) VALUES ({', '.join([mark] * len(cols))}) "
            f"ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO UPDATE SET {sets}"
        )
        _SQL[dialect] = sql
    return sql


def add(conn: sa.Connection, batch: Sequence[Trace]) -> None:
    """Add ``batch``'s gateway traces to the rollups, inside the caller's transaction."""
    rows = deltas(batch)
    if rows:
        params = [(*key, *values) for key, values in sorted(rows.items())]
        conn.exec_driver_sql(_upsert_sql(conn), params)


# -- queries ----------------------------------------------------------------------------------------


def check_group(by: str, param: str = "by") -> tuple[str, ...]:
    columns = GROUPS.get(by)
    if columns is None:
        raise InvalidRequest(f"`{param}` must be one of {', '.join(GROUPS)}; got `{by}`", param=param)
    return columns


def _filters(since: float, until: float, route: str | None, model: str | None) -> list[Any]:
    c = perf_rollups.c
    period = choose_period(since, until)
    cond = [c.period == period, c.bucket >= int(since // period) * period, c.bucket < until]
    if route is not None:
        cond.append(c.route == route)
    if model is not None:
        cond.append(c.model == model)
    return cond


def _figures(values: Sequence[Any]) -> dict[str, Any]:
    """The sums of one group as the figures every surface shows (averages per request)."""
    v = dict(zip(SUM_COLUMNS, (x or 0 for x in values), strict=True))
    n = int(v["requests"])
    lookups, hits = int(v["cache_lookups"]), int(v["cache_hits"])

    def avg(name: str) -> float | None:
        return float(v[name]) / n if n else None

    return {
        "requests": n,
        "errors": int(v["errors"]),
        "streams": int(v["streams"]),
        "cost_usd": float(v["cost_usd"]),
        "cost_per_request_usd": avg("cost_usd"),
        "input_tokens": int(v["input_tokens"]),
        "output_tokens": int(v["output_tokens"]),
        "latency": {"total_ms": avg("latency_ms"), **{f"{c}_ms": avg(f"{c}_ms") for c in COMPONENTS}},
        "cache": {
            "lookups": lookups,
            "hits": hits,
            "hit_ratio": hits / lookups if lookups else None,
            "saved_usd": float(v["cache_saved_usd"]),
            "saved_tokens": int(v["cache_saved_tokens"]),
        },
    }


def _key_names(store: Store, ids: Iterable[str]) -> dict[str, str]:
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    q = sa.select(api_keys.c.id, api_keys.c.name).where(api_keys.c.id.in_(wanted))
    with store.engine.connect() as conn:
        return {str(r.id): str(r.name) for r in conn.execute(q)}


def groups(
    store: Store,
    since: float,
    until: float,
    by: str = "route",
    *,
    route: str | None = None,
    model: str | None = None,
    limit: int = 100,
    after: Sequence[Any] | None = None,
    top: str | None = None,
) -> list[dict[str, Any]]:
    """The figures per group (``by``: route, model, key or prompt), in the group's order, up to
    ``limit``, starting after the group ``after`` (its column values, as ``position`` gives them);
    with ``top`` (``cost_usd`` or ``requests``), the ``limit`` groups with the most of it."""
    columns = check_group(by)
    cols = [perf_rollups.c[name] for name in columns]
    q = sa.select(*cols, *(sa.func.sum(perf_rollups.c[s]) for s in SUM_COLUMNS)).where(
        *_filters(since, until, route, model)
    )
    if after is not None:
        q = q.where(sa.tuple_(*cols) > sa.tuple_(*after)) if len(cols) > 1 else q.where(cols[0] > after[0])
    q = q.group_by(*cols)
    if top is not None:
        if top not in ("cost_usd", "requests"):
            raise ValueError(f"cannot rank groups by `{top}`; use cost_usd or requests")
        q = q.order_by(sa.func.sum(perf_rollups.c[top]).desc(), *cols)
    else:
        q = q.order_by(*cols)
    q = q.limit(limit)
    with store.engine.connect() as conn:
        raw = [(tuple(r[: len(cols)]), r[len(cols) :]) for r in conn.execute(q)]
    names = _key_names(store, (str(g[0]) for g, _ in raw)) if by == "key" else {}
    out = []
    for group, sums in raw:
        row: dict[str, Any] = {"group": _label(by, group)}
        if by == "key":
            row["key_id"] = str(group[0]) or None
            row["key_name"] = names.get(str(group[0]))
        elif by == "prompt":
            row["prompt"] = str(group[0]) or None
            row["prompt_version"] = int(group[1]) or None
        out.append({**row, "position": list(group), **_figures(sums)})
    return out


def _label(by: str, group: tuple[Any, ...]) -> str:
    if by == "prompt":
        return f"{group[0]}@v{group[1]}" if group[0] else ""
    return str(group[0])


def total(
    store: Store, since: float, until: float, *, route: str | None = None, model: str | None = None
) -> dict[str, Any]:
    """The figures over every group."""
    q = sa.select(*(sa.func.sum(perf_rollups.c[s]) for s in SUM_COLUMNS)).where(
        *_filters(since, until, route, model)
    )
    with store.engine.connect() as conn:
        return _figures(conn.execute(q).one())


def report(
    store: Store,
    since: float,
    until: float,
    *,
    route: str | None = None,
    model: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """What the dashboard's Performance page shows: the totals, the busiest routes and models,
    and the API keys and prompt versions that cost the most (``limit`` of each)."""
    ranks = {"route": "requests", "model": "requests", "key": "cost_usd", "prompt": "cost_usd"}
    return {
        "total": total(store, since, until, route=route, model=model),
        **{
            by: groups(store, since, until, by, route=route, model=model, limit=limit, top=top)
            for by, top in ranks.items()
        },
    }
