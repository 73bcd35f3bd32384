"""Performance (``/performance``): where time and money go. The average latency per route and per
model cut into its components (a stacked bar each), cost per API key, route, prompt version and
model, and the response cache's hits and savings per route.

Everything comes from ``shipyard.store.performance`` (the performance rollups), the same functions
behind ``GET /api/performance`` and ``shipyard traces stats``; the page never reads spans.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shipyard.store import performance as perf
from shipyard.store import traffic
from shipyard.times import RANGES, TimeWindow
from shipyard.web.common import blocking, render, store_of

# Most bars per chart: the busiest groups.
MAX_BARS = 15
# Most rows per table: the busiest routes and models, the keys and prompt versions that cost the
# most (`GET /api/performance` and `shipyard traces stats` page through all of them).
MAX_ROWS = 100
COMPONENT_LABELS = {
    "queue": "queue",
    "guards": "guards",
    "retries": "retries / fallback",
    "ttft": "upstream TTFT",
    "generation": "generation",
    "overhead": "gateway overhead",
}
COMPONENT_COLORS = {
    "queue": "#8a94a6",
    "guards": "#7b3fe4",
    "retries": "#c62828",
    "ttft": "#0e8a9a",
    "generation": "#1f4fd1",
    "overhead": "#e8710a",
}


def _plotly_text(text: str) -> str:
    """A name as Plotly text: Plotly reads a few HTML tags and entities in labels, so a name (user
    content) is entity-escaped to show as written instead of as markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def latency_chart(rows: list[dict[str, Any]], what: str) -> dict[str, Any]:
    """A horizontal stacked bar per group: its average latency, component by component."""
    busiest = sorted(rows, key=lambda r: -r["requests"])[:MAX_BARS]
    return {
        "kind": "bar",
        "orientation": "h",
        "stack": True,
        "categories": [_plotly_text(r["group"] or f"(no {what})") for r in busiest],
        "series": [
            {
                "name": COMPONENT_LABELS[c],
                "y": [r["latency"][f"{c}_ms"] for r in busiest],
                "color": COMPONENT_COLORS[c],
            }
            for c in perf.COMPONENTS
        ],
        "y": {"title": "average ms per request", "suffix": " ms", "format": ",.1f"},
        "empty": "No gateway traces in this time range",
    }


async def performance_page(request: Request) -> Response:
    p = request.query_params
    window = TimeWindow.parse(p.get("range"), p.get("since"), p.get("until"))
    route, model = p.get("route") or None, p.get("model") or None
    store = store_of(request)

    def load() -> tuple[dict[str, Any], dict[str, list[str]]]:
        data = perf.report(store, window.since, window.until, route=route, model=model, limit=MAX_ROWS)
        return data, traffic.filter_options(store, window)

    data, options = await blocking(load)
    by_cost = {
        by: sorted(data[by], key=lambda r: (-r["cost_usd"], -r["requests"]))
        for by in ("key", "route", "prompt", "model")
    }
    context = {
        "window": window,
        "ranges": RANGES,
        "t": data["total"],
        "options": options,
        "filters": {"route": route, "model": model},
        "max_rows": MAX_ROWS,
        "components": [(c, COMPONENT_LABELS[c]) for c in perf.COMPONENTS],
        "per_route": data["route"],
        "per_model": data["model"],
        "costs": by_cost,
        "cached_routes": [r for r in data["route"] if r["cache"]["lookups"]],
        "charts": {
            "route": latency_chart(data["route"], "route"),
            "model": latency_chart(data["model"], "model"),
        },
    }
    return render(request, "performance.html", context)


routes = [Route("/performance", performance_page, methods=["GET", "HEAD"])]
