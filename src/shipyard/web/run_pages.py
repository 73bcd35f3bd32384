"""Experiment run pages: the runs table with filters (``/runs``), one run with its params,
metrics, metric curves, lineage and child runs (``/runs/{run_id}``), and several runs side by side
(``/runs/compare?ids=…``: the params that differ, latest values, curves overlaid).

Read through ``RunService``, the service ``shipyard runs`` and ``/api/runs`` use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shipyard.errors import InvalidRequest, NotFound
from shipyard.registry.runs import STATUSES, RunService
from shipyard.store import runs as rq
from shipyard.store.db import Store
from shipyard.store.tables import runs
from shipyard.web.common import blocking, render
from shipyard.web.params import int_param
from shipyard.web.registry_common import last_value, link_href, pretty, run_duration, services, short_id

PAGE_SIZES = (20, 50, 100)
MAX_SERIES_CHARTS = 12
MAX_COMPARE = 8


def _experiments(store: Store) -> list[tuple[str, int]]:
    q = sa.select(runs.c.experiment, sa.func.count()).group_by(runs.c.experiment).order_by(runs.c.experiment)
    with store.engine.connect() as conn:
        return [(str(e), int(n)) for e, n in conn.execute(q)]


def load_runs(store: Store, svc: RunService, params: Mapping[str, str]) -> dict[str, Any]:
    experiment = (params.get("experiment") or "").strip() or None
    status = (params.get("status") or "").strip() or None
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"`status` must be one of {', '.join(STATUSES)}; got `{status}`", param="status")
    search = (params.get("q") or "").strip() or None
    limit = int_param(params, "limit", 50, 1, 500)
    offset = int_param(params, "offset", 0, 0)
    rows = svc.list_runs(
        experiment=experiment, status=status, name_contains=search, limit=limit, offset=offset
    )
    total = svc.count_runs(experiment=experiment, status=status, name_contains=search)
    with store.engine.connect() as conn:
        metrics = rq.metric_summaries(conn, [r["run_id"] for r in rows])
    items: list[dict[str, Any]] = []
    for r in rows:
        m = metrics.get(r["run_id"], {})
        items.append(
            {
                **r,
                "duration": run_duration(r),
                "metrics": [(k, s["last"]) for k, s in sorted(m.items())][:4],
                "n_metrics": len(m),
                "is_eval": (r.get("tags") or {}).get("kind") == "eval",
            }
        )
    experiments = _experiments(store)
    return {
        "rows": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "experiments": experiments,
        "statuses": STATUSES,
        "filters": {"experiment": experiment, "status": status, "q": search},
        "any_runs": total > 0 or any(n for _, n in experiments),
    }


def _series_chart(key: str, points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "kind": "plotly",
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers" if len(points) < 60 else "lines",
                "name": key,
                "x": [p["step"] for p in points],
                "y": [p["value"] for p in points],
                "line": {"width": 2},
                "marker": {"size": 5},
                "hovertemplate": "step %{x}: %{y:.6~g}<extra></extra>",
            }
        ],
        "layout": {
            "showlegend": False,
            "xaxis": {"title": {"text": "step", "font": {"size": 11}}},
            "yaxis": {"rangemode": "normal"},
        },
    }


def load_run(svc: RunService, ref: str) -> dict[str, Any]:
    detail = svc.get(ref)
    run_id = detail["run_id"]
    series = [k for k, s in sorted(detail["metrics"].items()) if s["count"] > 1]
    charts = {}
    for i, key in enumerate(series[:MAX_SERIES_CHARTS]):
        charts[key] = {"id": f"metric-{i}", "spec": _series_chart(key, svc.metric_history(run_id, key))}
    children = svc.list_runs(parent_run_id=run_id, limit=50)
    tags = detail.get("tags") or {}
    return {
        "run": detail,
        "duration": run_duration(detail),
        "run_params": sorted(detail["params"].items()),
        "params_text": {k: pretty(v) for k, v in detail["params"].items()},
        "metrics": sorted(detail["metrics"].items()),
        "charts": charts,
        "more_series": max(0, len(series) - MAX_SERIES_CHARTS),
        "links": [{**lk, "href": link_href(lk)} for lk in detail["links"]],
        "children": children,
        "is_eval": tags.get("kind") == "eval",
        "tags": sorted(tags.items()),
    }


def parse_ids(request: Request) -> list[str]:
    """``?ids=a,b,c`` or ``?ids=a&ids=b`` (what a form of checkboxes sends)."""
    ids: list[str] = []
    for raw in request.query_params.getlist("ids"):
        ids.extend(p.strip() for p in raw.split(",") if p.strip())
    if len(ids) < 2:
        raise InvalidRequest(
            "compare needs at least two runs: /runs/compare?ids=RUN1,RUN2 (ids or unique prefixes); "
            "tick them on the runs page and press Compare",
            param="ids",
        )
    if len(ids) > MAX_COMPARE:
        raise InvalidRequest(f"compare at most {MAX_COMPARE} runs at a time; got {len(ids)}", param="ids")
    return ids


def load_compare(svc: RunService, ids: Sequence[str], show_all: bool) -> dict[str, Any]:
    cmp = svc.compare(list(ids))
    run_rows = cmp["runs"]
    labels = [r["name"] or short_id(r["run_id"]) for r in run_rows]
    # Two runs can share a name: the id tells them apart in legends.
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({short_id(r['run_id'])[:6]})" for lab, r in zip(labels, run_rows, strict=True)]
    params = [p for p in cmp["params"] if show_all or p["differs"]]
    scalar_keys = [m["key"] for m in cmp["metrics"]]
    charts: list[dict[str, Any]] = []
    if scalar_keys:
        charts.append(
            {
                "id": "compare-latest",
                "title": "Latest value of each metric",
                "spec": {
                    "kind": "bar",
                    "categories": scalar_keys[:30],
                    "series": [
                        {
                            "name": labels[i],
                            "y": [last_value(m["values"][i]) for m in cmp["metrics"][:30]],
                        }
                        for i in range(len(run_rows))
                    ],
                    "y": {"format": ".4~g"},
                },
            }
        )
    # Metrics logged as series by at least two of the runs: their curves side by side.
    series_keys = [
        m["key"]
        for m in cmp["metrics"]
        if sum(1 for v in m["values"] if v is not None and v["count"] > 1) >= 2
    ]
    for n, key in enumerate(series_keys[:4]):
        data = []
        for i, r in enumerate(run_rows):
            try:
                points = svc.metric_history(r["run_id"], key)
            except NotFound:
                continue
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers" if len(points) < 60 else "lines",
                    "name": labels[i],
                    "x": [p["step"] for p in points],
                    "y": [p["value"] for p in points],
                    "hovertemplate": "%{fullData.name}, step %{x}: %{y:.6~g}<extra></extra>",
                }
            )
        charts.append(
            {
                "id": f"compare-series-{n}",
                "title": key,
                "spec": {
                    "kind": "plotly",
                    "data": data,
                    "layout": {
                        "xaxis": {"title": {"text": "step", "font": {"size": 11}}},
                        "yaxis": {"rangemode": "normal"},
                    },
                },
            }
        )
    return {
        "cmp": cmp,
        "labels": labels,
        "param_rows": params,
        "hidden_params": len(cmp["params"]) - len(params),
        "show_all": show_all,
        "charts": charts,
        "pretty": pretty,
        "ids": [r["run_id"] for r in run_rows],
    }


async def runs_page(request: Request) -> Response:
    store, _, svc = services(request)
    context = await blocking(load_runs, store, svc, request.query_params)
    context["page_sizes"] = PAGE_SIZES
    return render(request, "registry/runs.html", context)


async def run_page(request: Request) -> Response:
    _, _, svc = services(request)
    context = await blocking(load_run, svc, request.path_params["run_id"])
    return render(request, "registry/run.html", context)


async def compare_page(request: Request) -> Response:
    _, _, svc = services(request)
    ids = parse_ids(request)
    show_all = request.query_params.get("all") in ("1", "true", "yes")
    context = await blocking(load_compare, svc, ids, show_all)
    return render(request, "registry/compare.html", context, active="/runs")


routes = [
    Route("/runs", runs_page, methods=["GET", "HEAD"]),
    Route("/runs/compare", compare_page, methods=["GET", "HEAD"]),
    Route("/runs/{run_id}", run_page, methods=["GET", "HEAD"]),
]
