"""A bench run from start to finish: the levels to run (one, or a sweep that stops at saturation),
the result document, where its knee is, and recording it as an experiment run."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from shipyard.bench.errors import BenchError
from shipyard.bench.load import Bounds, Load, OnRecord, Target, run_level
from shipyard.bench.metrics import flat_metrics
from shipyard.bench.workload import Workload
from shipyard.registry.runs import RunService

RESULT_KIND = "shipyard.bench"
RESULT_SCHEMA = 1


@dataclass(frozen=True)
class SweepRule:
    """When a sweep stops: the next level's throughput grew less than ``min_gain`` (a fraction) over
    the best so far, or its error rate rose above ``max_error_rate``, or (with an SLO) its goodput
    fraction fell below ``min_goodput``."""

    min_gain: float
    max_error_rate: float
    min_goodput: float


@dataclass
class Plan:
    target: Target
    workload: Workload
    mode: str  # concurrency | rate | replay | sweep
    loads: list[Load]
    bounds: Bounds
    slo: dict[str, float]
    seed: int = 0
    sweep: SweepRule | None = None
    params: dict[str, Any] = field(default_factory=dict)


def throughput(summary: Mapping[str, Any]) -> float:
    """What a sweep maximises: successful requests per second."""
    return float(summary["requests_per_s"])


def _broken(summary: Mapping[str, Any], rule: SweepRule, slo: Mapping[str, float]) -> str | None:
    if summary["error_rate"] > rule.max_error_rate:
        return f"error rate {summary['error_rate']:.1%} above {rule.max_error_rate:.1%}"
    if slo and summary["goodput"]["fraction"] < rule.min_goodput:
        return f"goodput {summary['goodput']['fraction']:.1%} below {rule.min_goodput:.1%} of requests"
    return None


def find_knee(levels: list[dict[str, Any]], rule: SweepRule, slo: Mapping[str, float]) -> dict[str, Any]:
    """Where the sweep stopped and why: the knee is the lowest load that reached the best
    throughput of the healthy levels before throughput stopped growing or the errors/SLO broke."""
    best: int | None = None
    for i, level in enumerate(levels):
        summary = level["summary"]
        why = _broken(summary, rule, slo)
        if why is not None:
            return {"index": best, "saturated": True, "reason": f"{_name(level['load'])}: {why}"}
        if best is not None and throughput(summary) < throughput(levels[best]["summary"]) * (
            1 + rule.min_gain
        ):
            gain = throughput(summary) / max(throughput(levels[best]["summary"]), 1e-9) - 1
            over = _name(levels[best]["load"])
            return {
                "index": best,
                "saturated": True,
                "reason": f"{_name(level['load'])}: throughput {gain:+.1%} over {over} "
                f"(less than +{rule.min_gain:.0%})",
            }
        if best is None or throughput(summary) > throughput(levels[best]["summary"]):
            best = i
    return {
        "index": None,
        "saturated": False,
        "reason": "not reached: throughput still grew at the highest level; sweep higher (--levels)",
    }


def _name(load: Mapping[str, Any]) -> str:
    if load["kind"] == "concurrency":
        return f"concurrency {load['value']:g}"
    if load["kind"] == "rate":
        return f"rate {load['value']:g}/s"
    return "replay"


def load_name(load: Mapping[str, Any]) -> str:
    """How a level's load reads in tables and charts."""
    return _name(load)


async def run(
    plan: Plan,
    on_record: OnRecord | None = None,
    on_level: Callable[[Load], None] | None = None,
) -> dict[str, Any]:
    """Run the plan's levels (a sweep stops at saturation) and build the result document."""
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    levels: list[dict[str, Any]] = []
    knee: dict[str, Any] | None = None
    for load in plan.loads:
        if on_level is not None:
            on_level(load)
        levels.append(
            await run_level(plan.target, plan.workload, load, plan.bounds, plan.slo, plan.seed, on_record)
        )
        if plan.sweep is not None:
            knee = find_knee(levels, plan.sweep, plan.slo)
            if knee["saturated"]:
                break
    at_knee = knee is not None and knee["index"] is not None
    headline = int(knee["index"]) if knee is not None and at_knee else len(levels) - 1
    return {
        "kind": RESULT_KIND,
        "schema": RESULT_SCHEMA,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - t0, 3),
        "target": {
            "url": plan.target.base,
            "model": plan.target.model,
            "stream": plan.target.stream,
            "timeout_s": plan.target.timeout_s,
        },
        "mode": plan.mode,
        "workload": plan.workload.description,
        "bounds": {"requests": plan.bounds.requests, "duration_s": plan.bounds.duration_s},
        "slo_ms": plan.slo,
        "seed": plan.seed,
        "sweep": None if plan.sweep is None else {**plan.sweep.__dict__, "knee": knee},
        "levels": levels,
        "headline": headline,
        "summary": levels[headline]["summary"] if levels else None,
        "run_id": None,
    }


def result_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The headline level's metrics (a sweep: its knee), flat: what the experiment run records."""
    out = flat_metrics(result["summary"])
    if result.get("sweep") and result["sweep"]["knee"] and result["sweep"]["knee"]["index"] is not None:
        out["knee_load"] = float(result["levels"][result["headline"]]["load"]["value"])
    return out


def record_run(runs: RunService, model: str, mode: str, params: Mapping[str, Any], actor: str) -> str:
    """Create the experiment run of a bench about to start (params, tags); `finish_run` ends it."""
    row = runs.create(
        name=f"bench {model}",
        experiment=f"bench:{model}",
        params=dict(params),
        tags={"kind": "bench", "route": model, "mode": mode},
        created_by=actor,
    )
    return str(row["run_id"])


def finish_run(runs: RunService, run_id: str, result: Mapping[str, Any], paths: Mapping[str, Path]) -> None:
    for name, path in paths.items():
        runs.log_artifact(run_id, path, name)
    runs.log_metrics(run_id, [{"key": k, "value": v} for k, v in result_metrics(result).items()])
    # The levels of a sweep as series: the run page charts them against the step.
    points = []
    for step, level in enumerate(result["levels"]):
        for key, value in flat_metrics(level["summary"]).items():
            if key in ("requests_per_s", "output_tokens_per_s", "e2e_ms_p50", "e2e_ms_p99", "ttft_ms_p50"):
                points.append({"key": f"level.{key}", "value": value, "step": step})
    if len(result["levels"]) > 1:
        runs.log_metrics(run_id, points)
    runs.finish(run_id, "finished")


def load_result(ref: str, runs: Callable[[], RunService] | None) -> dict[str, Any]:
    """A result document from a result.json path (or a directory holding one) or a run id."""
    path = Path(ref)
    if path.is_dir():
        path = path / "result.json"
    if path.is_file():
        raw = path.read_bytes()
        where = str(path)
    elif runs is not None:
        raw = runs().read_artifact(ref, "result.json")
        where = f"run {ref}"
    else:
        raise BenchError(f"no result.json at `{ref}`", param="ref")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BenchError(f"{where}: result.json is not JSON ({exc})", param="ref") from None
    if not isinstance(data, dict) or data.get("kind") != RESULT_KIND or not data.get("summary"):
        raise BenchError(
            f"{where} is not a `shipyard bench run` result (no `kind: {RESULT_KIND}` with a summary)",
            param="ref",
        )
    return data
