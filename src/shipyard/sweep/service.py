"""A sweep from start to finish: one eval run with every point of the grid as a target (quality and
cost per request, from the suite's scorers and the models' pricing), then a short bench of each
point against the running gateway (p95 end-to-end latency), the Pareto front and the best point."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipyard import bench
from shipyard.evals.runner import EvalRunner, RunOptions
from shipyard.evals.suite import Suite, iter_cases, load_suite, suite_from_dict
from shipyard.sweep.pareto import best, front
from shipyard.sweep.spec import Point, SweepError, SweepSpec

RESULT_KIND = "shipyard.sweep"


@dataclass(frozen=True)
class Limits:
    max_p95_ms: float | None = None
    max_cost_usd: float | None = None


def suite_for(spec: SweepSpec, base_dir: Path, points: Sequence[Point]) -> tuple[Suite, Suite]:
    """The suite as written, and the same suite with one target per point."""
    path = Path(spec.suite)
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise SweepError(f"suite: no suite file at `{path}`", param="suite")
    suite = load_suite(path)
    data = suite.spec.model_dump(exclude_none=True)
    data["targets"] = [{"route": p.route, "params": p.params, "label": p.label} for p in points]
    return suite, suite_from_dict(data, suite.source, suite.base_dir)


def bench_workload(suite: Suite, store: Any, point: Point) -> bench.Workload:
    """The suite's cases as the bench's requests, with the point's parameters on each."""
    inputs = [case.input for case in iter_cases(suite, store)]
    base = bench.from_examples(suite.name, 0, inputs, None)
    items = [bench.Item({**item.body, **point.params}) for item in base.items]
    return bench.Workload(items, {**base.description, "kind": "suite", "suite": suite.name})


async def run(
    runner: EvalRunner,
    spec: SweepSpec,
    base_dir: Path,
    points: Sequence[Point],
    url: str,
    key: str | None,
    limits: Limits,
    actor: str,
    on_point: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    started = datetime.now(UTC)
    suite, expanded = suite_for(spec, base_dir, points)
    if on_point is not None:
        on_point(f"eval suite `{suite.name}` on {len(points)} point(s)")
    outcome = await runner.arun(
        expanded, RunOptions(progress=False, fail_on="none", actor=actor, tags={"kind": "sweep-eval"})
    )
    rows: list[dict[str, Any]] = []
    for point in points:
        if on_point is not None:
            on_point(f"bench {point.label}")
        ts = outcome.summary.targets[point.label]
        workload = bench_workload(suite, runner.store, point)
        plan = bench.Plan(
            target=bench.Target(bench.Target.api_root(url), point.route, key, True, spec.bench.timeout_s),
            workload=workload,
            mode="concurrency",
            loads=[bench.Load("concurrency", spec.bench.concurrency, spec.bench.concurrency)],
            bounds=bench.Bounds(spec.bench.requests, bench.MAX_DURATION_S),
            slo={},
        )
        result = await bench.run(plan)
        summary = result["summary"]
        rows.append(
            {
                "label": point.label,
                "route": point.route,
                "params": point.params,
                "quality": round(ts.pass_rate, 6),
                "cases": ts.decided,
                "cost_per_request_usd": None if ts.cost_usd is None or not ts.runs else ts.cost_usd / ts.runs,
                "p95_ms": summary["e2e_ms"]["p95"],
                "ttft_p50_ms": summary["ttft_ms"]["p50"],
                "requests_per_s": summary["requests_per_s"],
                "bench_errors": summary["errors"],
                "errors_by_type": summary["errors_by_type"],
            }
        )
    on_front = front(rows)
    for i, row in enumerate(rows):
        row["pareto"] = i in on_front
    pick, why = best(rows, limits.max_p95_ms, limits.max_cost_usd)
    return {
        "kind": RESULT_KIND,
        "started_at": started.isoformat(timespec="seconds"),
        "suite": suite.name,
        "url": url,
        "eval_run_id": outcome.run_id,
        "bench": spec.bench.model_dump(),
        "grid": {"targets": spec.targets, "params": spec.params},
        "limits": {"max_p95_ms": limits.max_p95_ms, "max_cost_usd": limits.max_cost_usd},
        "points": rows,
        "front": on_front,
        "best": pick,
        "best_reason": why,
        "run_id": None,
    }


def run_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The best point's figures (what the experiment run records)."""
    if result["best"] is None:
        return {"points": float(len(result["points"])), "pareto_points": float(len(result["front"]))}
    p = result["points"][result["best"]]
    out = {
        "points": float(len(result["points"])),
        "pareto_points": float(len(result["front"])),
        "best_quality": float(p["quality"]),
        "best_p95_ms": float(p["p95_ms"]),
    }
    if p["cost_per_request_usd"] is not None:
        out["best_cost_per_request_usd"] = float(p["cost_per_request_usd"])
    return out
