"""Rollups agree with the traces they summarize: counts, sums, step grouping and percentiles."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from shipyard.store import rollups
from shipyard.store.db import Store
from shipyard.store.traces import insert_traces
from shipyard.tracing.spans import Trace

T0 = 1_800_000_000  # a round hour (divisible by 3600)


def _traces(n: int, seed: int = 0) -> list[Trace]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        start = T0 + i * 7.3  # ~2h of traffic, crossing minute and hour boundaries
        latency = rng.lognormvariate(5, 0.8)  # ms, median ~150
        t = Trace(
            "chat",
            start=start,
            end=start + latency / 1000,
            route=rng.choice(["a", "b"]),
            model=rng.choice(["m1", "m2"]),
            status="error" if rng.random() < 0.1 else "ok",
            ttft_ms=latency / 3 if i % 2 else None,
            input_tokens=rng.randint(5, 50),
            output_tokens=rng.randint(1, 80),
            cost_usd=0.001,
        )
        out.append(t)
    return out


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'r.db'}")
    s.migrate()
    return s


def test_totals_series_and_breakdown_match_the_traces(store: Store) -> None:
    traces = _traces(1000)
    insert_traces(store, traces[:400])
    insert_traces(store, traces[400:])  # two batches add into the same rows
    since, until = T0, T0 + 3 * 3600
    for period in (60, 3600):
        agg = rollups.total(store, since, until, period=period)
        assert agg.requests == 1000
        assert agg.errors == sum(t.status != "ok" for t in traces)
        assert agg.input_tokens == sum(t.input_tokens or 0 for t in traces)
        assert agg.ttft_count == sum(t.ttft_ms is not None for t in traces)
        assert agg.cost_usd == pytest.approx(1.0)

    # Five-minute steps over minute rollups: aligned slots that add up to the total.
    points = rollups.series(store, since, T0 + 3600, 300)
    assert all(slot % 300 == 0 for slot, _ in points)
    assert len(points) == 12
    in_hour = sum(1 for t in traces if t.start < T0 + 3600)
    assert sum(a.requests for _, a in points) == in_hour

    by_route = dict(rollups.breakdown(store, since, until, "route"))
    assert {k: v.requests for k, v in by_route.items()} == {
        r: sum(t.route == r for t in traces) for r in ("a", "b")
    }
    with pytest.raises(ValueError, match="cannot break down"):
        rollups.breakdown(store, since, until, "user")


def test_histogram_percentiles_are_within_half_a_bucket(store: Store) -> None:
    traces = _traces(2000, seed=3)
    insert_traces(store, traces)
    summary = rollups.total(store, T0, T0 + 5 * 3600, period=3600).summary(5 * 3600)
    latencies = np.array([(t.end - t.start) * 1000 for t in traces])
    for q, key in ((0.5, "latency_p50_ms"), (0.95, "latency_p95_ms"), (0.99, "latency_p99_ms")):
        exact = float(np.quantile(latencies, q))
        assert abs(summary[key] / exact - 1) < 0.2, (key, summary[key], exact)
    assert summary["requests_per_s"] == pytest.approx(2000 / (5 * 3600))


def test_rebuild_reproduces_incremental_rollups(store: Store) -> None:
    insert_traces(store, _traces(300, seed=5))
    before = rollups.total(store, T0, T0 + 3600 * 3, period=60)
    assert rollups.rebuild(store) == 300
    after = rollups.total(store, T0, T0 + 3600 * 3, period=60)
    assert after == before
