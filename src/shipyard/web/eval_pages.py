"""Eval pages: eval runs with each suite's pass rate over time (``/evals``), one eval run with
its targets, scorers, failures, the comparison with its baseline and the gate's verdict
(``/evals/{run_id}``), and the HTML report the runner wrote (``/evals/{run_id}/report.html``).

An eval run is an experiment run tagged ``kind: eval``; its summary and comparison are artifacts
the runner wrote, read back through ``RunService``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shipyard.errors import NotFound
from shipyard.gateway.http_headers import REPORT_HEADERS
from shipyard.registry.runs import RunService
from shipyard.store import runs as rq
from shipyard.store.db import Store
from shipyard.store.runs import MetricSummary
from shipyard.store.tables import runs
from shipyard.web.common import blocking, render
from shipyard.web.params import int_param
from shipyard.web.registry_common import last_value, link_href, run_duration, services

MAX_FAILURES = 50
# Served inside a sandboxed iframe: the eval report is self-contained (inline styles and SVG only).
REPORTS = {"report.html": "text/html; charset=utf-8", "compare.html": "text/html; charset=utf-8"}


def _total(metrics: Mapping[str, MetricSummary], name: str) -> float | None:
    """A count over every target of an eval run: `name` itself, or the sum of `<target>/name`
    (the runner prefixes per-target metrics with the target's label when there are several)."""
    if name in metrics:
        return metrics[name]["last"]
    parts = [s["last"] for k, s in metrics.items() if k.endswith("/" + name)]
    return sum(parts) if parts else None


def load_evals(store: Store, svc: RunService, params: Mapping[str, str]) -> dict[str, Any]:
    suite = (params.get("suite") or "").strip() or None
    limit = int_param(params, "limit", 50, 1, 500)
    offset = int_param(params, "offset", 0, 0)
    tags = {"kind": "eval", **({"suite": suite} if suite else {})}
    rows = svc.list_runs(tags=tags, limit=limit, offset=offset)
    total = svc.count_runs(tags=tags)
    with store.engine.connect() as conn:
        metrics = rq.metric_summaries(conn, [r["run_id"] for r in rows])
        suites = sorted(
            {
                str(s)
                for s in conn.execute(
                    sa.select(runs.c.tags["suite"].as_string())
                    .where(runs.c.tags["kind"].as_string() == "eval")
                    .distinct()
                ).scalars()
                if s
            }
        )
    items: list[dict[str, Any]] = []
    for r in rows:
        m = metrics.get(r["run_id"], {})
        t = r.get("tags") or {}
        items.append(
            {
                **r,
                "suite": t.get("suite", ""),
                "gate": t.get("gate"),
                "gate_reason": t.get("gate_reason"),
                "baseline": t.get("baseline_run"),
                "promotion": t.get("promotion"),
                "promotion_result": t.get("promotion_result"),
                "pass_rate": last_value(m.get("pass_rate")),
                "flaky": _total(m, "flaky_cases"),
                "errors": _total(m, "errors"),
                "duration": run_duration(r),
            }
        )
    # Pass rate of each suite's runs over time, oldest first: the trend the table can't show.
    trend: dict[str, tuple[list[float], list[float]]] = {}
    for it in reversed(items):
        if it["pass_rate"] is not None and it["status"] == "finished":
            xs, ys = trend.setdefault(it["suite"], ([], []))
            xs.append(it["start_time"])
            ys.append(it["pass_rate"])
    chart = None
    if any(len(xs) >= 1 for xs, _ in trend.values()):
        chart = {
            "kind": "timeseries",
            "series": [
                {"name": s, "x": xs, "y": ys, "type": "line", "format": ".1%"}
                for s, (xs, ys) in sorted(trend.items())
            ],
            "y": {"title": "pass rate", "format": ".0%", "range": [0, 1.05]},
            "legend": True,
        }
    return {
        "rows": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "suites": suites,
        "suite": suite,
        "chart": chart,
    }


def _artifact_json(svc: RunService, run_id: str, path: str) -> Any:
    try:
        return orjson.loads(svc.read_artifact(run_id, path))
    except NotFound:
        return None


def load_eval(svc: RunService, ref: str) -> dict[str, Any]:
    from shipyard.evals.stats import Comparison, Summary

    detail = svc.get(ref)
    run_id = detail["run_id"]
    tags = detail.get("tags") or {}
    if tags.get("kind") != "eval":
        raise NotFound(
            f"run `{run_id}` is not an eval run (it has no `kind: eval` tag); see it at /runs/{run_id}",
            param="run_id",
        )
    paths = {a["path"] for a in detail["artifacts"]}
    raw_summary = _artifact_json(svc, run_id, "summary.json") if "summary.json" in paths else None
    summary = Summary.from_dict(raw_summary) if raw_summary else None
    raw_cmp = _artifact_json(svc, run_id, "comparison.json") if "comparison.json" in paths else None
    comparisons = {label: Comparison.from_dict(c) for label, c in (raw_cmp or {}).items()}
    targets = list(summary.targets.values()) if summary else []
    scorer_names = sorted({n for t in targets for n in t.scorers})
    charts: dict[str, Any] = {}
    if targets:
        charts["pass_rate"] = {
            "kind": "plotly",
            "data": [
                {
                    "type": "bar",
                    "x": [t.target for t in targets],
                    "y": [t.pass_rate for t in targets],
                    "error_y": {
                        "type": "data",
                        "symmetric": False,
                        "array": [max(0.0, t.ci_high - t.pass_rate) for t in targets],
                        "arrayminus": [max(0.0, t.pass_rate - t.ci_low) for t in targets],
                        "color": "#5f6b7a",
                    },
                    "marker": {"color": "#1f4fd1"},
                    "hovertemplate": "%{x}: %{y:.1%}<extra>95% Wilson interval shown</extra>",
                    "name": "pass rate",
                }
            ],
            "layout": {
                "showlegend": False,
                "yaxis": {"tickformat": ".0%", "range": [0, 1.05]},
                "xaxis": {"type": "category"},
            },
        }
        if scorer_names:
            charts["scorers"] = {
                "kind": "bar",
                "categories": scorer_names,
                "series": [
                    {
                        "name": t.target,
                        "y": [t.scorers[n].pass_rate if n in t.scorers else None for n in scorer_names],
                    }
                    for t in targets
                ],
                "y": {"format": ".0%", "range": [0, 1.05]},
            }
    return {
        "run": detail,
        "tags": tags,
        "summary": summary,
        "targets": targets,
        "failures": [(t.target, f) for t in targets for f in t.failures][:MAX_FAILURES],
        "n_failures": sum(len(t.failures) for t in targets),
        "scorer_names": scorer_names,
        "comparisons": comparisons,
        "gate": {"passed": tags.get("gate") == "passed", "reason": tags.get("gate_reason")}
        if "gate" in tags
        else None,
        "has_report": "report.html" in paths,
        "reports": [
            p
            for p in ("report.html", "report.md", "junit.xml", "results.jsonl", "summary.json")
            if p in paths
        ],
        "links": [{**lk, "href": link_href(lk)} for lk in detail["links"]],
        "charts": charts,
        "duration": run_duration(detail),
    }


async def evals_page(request: Request) -> Response:
    store, _, svc = services(request)
    context = await blocking(load_evals, store, svc, request.query_params)
    return render(request, "registry/evals.html", context)


async def eval_page(request: Request) -> Response:
    _, _, svc = services(request)
    context = await blocking(load_eval, svc, request.path_params["run_id"])
    return render(request, "registry/eval.html", context)


async def eval_report(request: Request) -> Response:
    """The HTML report the eval runner wrote, as it is, locked down to styles and inline SVG."""
    _, _, svc = services(request)
    name = request.path_params["report"]
    if name not in REPORTS:
        raise NotFound(f"no report `{name}`; one of {', '.join(REPORTS)}", param="report")
    body = await blocking(svc.read_artifact, request.path_params["run_id"], name)
    return Response(body, media_type=REPORTS[name], headers={**REPORT_HEADERS, "cache-control": "no-cache"})


routes = [
    Route("/evals", evals_page, methods=["GET", "HEAD"]),
    Route("/evals/{run_id}", eval_page, methods=["GET", "HEAD"]),
    Route("/evals/{run_id}/{report}", eval_report, methods=["GET", "HEAD"]),
]
