"""The trade-off: which points no other point beats on quality, p95 latency and cost at once, and
the best point under a latency or cost limit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _cost(p: Mapping[str, Any]) -> float:
    # An unknown cost (a model with no pricing) compares as free: it must not make a point look worse.
    return float(p["cost_per_request_usd"] or 0.0)


def dominates(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """``a`` is at least as good as ``b`` on all three and better on one."""
    ge = a["quality"] >= b["quality"] and a["p95_ms"] <= b["p95_ms"] and _cost(a) <= _cost(b)
    gt = a["quality"] > b["quality"] or a["p95_ms"] < b["p95_ms"] or _cost(a) < _cost(b)
    return ge and gt


def front(points: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indexes of the Pareto-optimal points (points with no latency figure are left out)."""
    usable = [i for i, p in enumerate(points) if p["p95_ms"] is not None]
    return [i for i in usable if not any(dominates(points[j], points[i]) for j in usable if j != i)]


def best(
    points: Sequence[Mapping[str, Any]], max_p95_ms: float | None, max_cost: float | None
) -> tuple[int | None, str]:
    """The highest-quality point within the limits (ties: lower p95, then lower cost), and why."""
    allowed = []
    for i, p in enumerate(points):
        if p["p95_ms"] is None:
            continue
        if max_p95_ms is not None and p["p95_ms"] > max_p95_ms:
            continue
        if max_cost is not None and (
            p["cost_per_request_usd"] is None or p["cost_per_request_usd"] > max_cost
        ):
            continue
        allowed.append(i)
    limits = []
    if max_p95_ms is not None:
        limits.append(f"p95 ≤ {max_p95_ms:g} ms")
    if max_cost is not None:
        limits.append(f"cost ≤ ${max_cost:g} per request")
    within = " and ".join(limits) or "no limit"
    if not allowed:
        return None, f"no point meets {within}"
    pick = max(allowed, key=lambda i: (points[i]["quality"], -points[i]["p95_ms"], -_cost(points[i])))
    return pick, f"highest quality with {within}"
