"""Two bench results side by side: each headline metric, the change, and whether it got better."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shipyard.bench.metrics import flat_metrics

# Which way is better; metrics not named here (request counts, duration) are context, not a verdict.
HIGHER_IS_BETTER = ("ok", "requests_per_s", "output_tokens_per_s", "goodput_fraction", "goodput_per_s")
LOWER_IS_BETTER_PREFIXES = ("ttft_ms_", "itl_ms_", "e2e_ms_")
LOWER_IS_BETTER = ("errors", "error_rate")


def direction(metric: str) -> int:
    """+1 when a higher value is better, -1 when lower is, 0 when neither."""
    if metric in HIGHER_IS_BETTER:
        return 1
    if metric in LOWER_IS_BETTER or metric.startswith(LOWER_IS_BETTER_PREFIXES):
        return -1
    return 0


def compare(a: Mapping[str, Any], b: Mapping[str, Any], tolerance: float) -> dict[str, Any]:
    """B against A. A change smaller than ``tolerance`` (a fraction of A's value) is ``same``."""
    ma, mb = flat_metrics(a["summary"]), flat_metrics(b["summary"])
    rows = []
    for metric in [*ma, *(k for k in mb if k not in ma)]:
        va, vb = ma.get(metric), mb.get(metric)
        change = None if va is None or vb is None else vb - va
        rel = None if change is None or not va else change / abs(va)
        sign = direction(metric)
        if change is None or sign == 0:
            verdict = "—"
        elif (rel is not None and abs(rel) < tolerance) or change == 0:
            verdict = "same"
        else:
            verdict = "better" if change * sign > 0 else "worse"
        rows.append(
            {
                "metric": metric,
                "a": va,
                "b": vb,
                "change": None if change is None else round(change, 6),
                "change_pct": None if rel is None else round(rel * 100, 3),
                "verdict": verdict,
            }
        )
    return {
        "a": _describe(a),
        "b": _describe(b),
        "tolerance": tolerance,
        "metrics": rows,
        "better": sum(r["verdict"] == "better" for r in rows),
        "worse": sum(r["verdict"] == "worse" for r in rows),
    }


def _describe(result: Mapping[str, Any]) -> dict[str, Any]:
    level = result["levels"][result["headline"]]["load"] if result.get("levels") else None
    return {
        "run_id": result.get("run_id"),
        "model": result["target"]["model"],
        "url": result["target"]["url"],
        "mode": result["mode"],
        "load": level,
        "started_at": result.get("started_at"),
    }
