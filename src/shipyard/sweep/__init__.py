"""`shipyard sweep`: try every combination of routes and sampling parameters against an eval suite
(quality, cost) and a short bench (p95 latency), and report the Pareto front and the best point
under a latency or cost limit.

``spec`` (the grid and its checks), ``service`` (the eval run, the benches, the result),
``pareto`` (the front, the best point), ``report`` (the HTML page and its chart).
"""

from __future__ import annotations

from shipyard.sweep.pareto import best, dominates, front
from shipyard.sweep.report import render_html, write_report
from shipyard.sweep.service import Limits, run, run_metrics
from shipyard.sweep.spec import (
    MAX_POINTS,
    PARAMS,
    Point,
    SweepError,
    SweepSpec,
    build_spec,
    grid,
    load_spec,
    merged,
    parse_param_option,
)

__all__ = [
    "MAX_POINTS",
    "PARAMS",
    "Limits",
    "Point",
    "SweepError",
    "SweepSpec",
    "best",
    "build_spec",
    "dominates",
    "front",
    "grid",
    "load_spec",
    "merged",
    "parse_param_option",
    "render_html",
    "run",
    "run_metrics",
    "write_report",
]
