"""Overview (``/``), the trace list (``/traces``) and one trace (``/traces/{id}``)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shipyard.store import traffic as data
from shipyard.times import RANGES, TimeWindow
from shipyard.tracing import semconv as sc
from shipyard.web.common import blocking, platform_of, render, store_of

FEEDBACK_FILTERS = (
    ("positive", "Positive"),
    ("negative", "Negative"),
    ("any", "Any feedback"),
    ("none", "None"),
)


def _curl(request: Request) -> str:
    base = str(request.base_url).rstrip("/")
    body = orjson.dumps({"model": "default", "messages": [{"role": "user", "content": "Hello"}]}).decode()
    return f"curl {base}/v1/chat/completions -H 'content-type: application/json' \\\n  -d '{body}'"


def _grid(window: TimeWindow) -> list[int]:
    step = window.step
    first = int(window.since // step) * step
    return list(range(first, int(window.until) + 1, step))


def _column(series: list[dict[str, Any]], grid: list[int], key: str, zero: bool = False) -> list[Any]:
    """Values of ``key`` on every step of ``grid``: steps with no traffic are 0 for counts and gaps
    (None) for latencies, so lines break instead of pretending."""
    by_time = {p["time"]: p for p in series}
    out = []
    for t in grid:
        p = by_time.get(t)
        v = p.get(key) if p else None
        out.append(0 if v is None and zero else v)
    return out


def overview_charts(ov: dict[str, Any], window: TimeWindow) -> dict[str, dict[str, Any]]:
    """Chart specs (see web/README.md) for the overview's time series."""
    grid = _grid(window)
    s = ov["series"]
    step = window.step
    per = f"per {data_step_label(step)}"
    rng = [window.since, window.until]

    def ts(series: list[dict[str, Any]], y: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"kind": "timeseries", "range": rng, "barWidth": step, "series": series, "y": y, **extra}

    requests = _column(s, grid, "requests", zero=True)
    errors = _column(s, grid, "errors", zero=True)
    ok = [r - e for r, e in zip(requests, errors, strict=True)]
    rate = [None if r == 0 else e / r for r, e in zip(requests, errors, strict=True)]
    charts = {
        "requests": ts(
            [
                {"name": "ok", "x": grid, "y": ok, "type": "bar", "color": "#1f4fd1"},
                {"name": "errors", "x": grid, "y": errors, "type": "bar", "color": "#c62828"},
                {
                    "name": "error rate",
                    "x": grid,
                    "y": rate,
                    "type": "line",
                    "axis": "y2",
                    "color": "#e8710a",
                    "format": ".1%",
                },
            ],
            {"title": f"requests {per}", "format": ",~r"},
            y2={"title": "error rate", "format": ".0%"},
            stack=True,
            legend=True,
        ),
        "latency": ts(
            [
                {"name": name, "x": grid, "y": _column(s, grid, f"latency_{key}_ms"), "dash": dash}
                for name, key, dash in (
                    ("p50", "p50", "solid"),
                    ("p95", "p95", "dash"),
                    ("p99", "p99", "dot"),
                )
            ],
            {"title": "latency", "suffix": " ms", "format": ",.0f"},
            legend=True,
        ),
        "ttft": ts(
            [
                {"name": "p50", "x": grid, "y": _column(s, grid, "ttft_p50_ms"), "color": "#0e8a9a"},
                {
                    "name": "p95",
                    "x": grid,
                    "y": _column(s, grid, "ttft_p95_ms"),
                    "color": "#7b3fe4",
                    "dash": "dash",
                },
            ],
            {"title": "time to first token", "suffix": " ms", "format": ",.0f"},
            legend=True,
        ),
        "tokens": ts(
            [
                {"name": "input", "x": grid, "y": _column(s, grid, "input_tokens", zero=True), "type": "bar"},
                {
                    "name": "output",
                    "x": grid,
                    "y": _column(s, grid, "output_tokens", zero=True),
                    "type": "bar",
                    "color": "#e8710a",
                },
            ],
            {"title": f"tokens {per}", "format": ",~s"},
            stack=True,
            legend=True,
        ),
        "cost": ts(
            [
                {
                    "name": "cost",
                    "x": grid,
                    "y": _column(s, grid, "cost_usd", zero=True),
                    "type": "area",
                    "color": "#1a7f37",
                }
            ],
            {"title": f"USD {per}", "prefix": "$", "format": ",.4~f"},
        ),
    }
    if ov["scores"]:
        charts["scores"] = ts(
            [
                {
                    "name": sc["name"],
                    "x": [p["time"] for p in sc["points"]],
                    "y": [p["avg"] for p in sc["points"]],
                }
                for sc in ov["scores"]
            ],
            {"title": "average score", "format": ".2f", "range": [0, 1.05]},
            legend=True,
        )
    return charts


def data_step_label(step: int) -> str:
    if step % 86400 == 0:
        return "day" if step == 86400 else f"{step // 86400} days"
    if step % 3600 == 0:
        return "hour" if step == 3600 else f"{step // 3600} h"
    return "minute" if step == 60 else f"{step // 60} min"


async def overview_page(request: Request) -> Response:
    p = request.query_params
    window = TimeWindow.parse(p.get("range"), p.get("since"), p.get("until"))
    route, model, source = p.get("route") or None, p.get("model") or None, p.get("source") or None
    store = store_of(request)

    def load() -> tuple[dict[str, Any], dict[str, list[str]], bool]:
        ov = data.overview(store, window, route=route, model=model, source=source)
        options = data.filter_options(store, window)
        any_traces = ov["totals"]["requests"] > 0 or data.has_traces(store)
        return ov, options, any_traces

    ov, options, any_traces = await blocking(load)
    context = {
        "window": window,
        "ranges": RANGES,
        "ov": ov,
        "t": ov["totals"],
        "options": options,
        "filters": {"route": route, "model": model, "source": source},
        "charts": overview_charts(ov, window) if ov["totals"]["requests"] else {},
        "step_label": data_step_label(window.step),
        "peak_rate": max((p["requests_per_s"] for p in ov["series"]), default=0.0),
        "any_traces": any_traces,
        "curl": _curl(request),
        "workers": model_workers(platform_of(request).runtime),
    }
    return render(request, "overview.html", context)


def model_workers(runtime: Any) -> list[dict[str, Any]]:
    """The model worker processes of local providers, one row each, for the overview."""
    return [
        {"provider": name, **w.to_dict()}
        for name, statuses in runtime.worker_statuses().items()
        for w in statuses
    ]


async def traces_page(request: Request) -> Response:
    query = data.TraceQuery.parse(dict(request.query_params))
    store = store_of(request)

    def load() -> tuple[dict[str, Any], dict[str, list[str]], bool]:
        listing = data.trace_list(store, query)
        options = data.filter_options(store, TimeWindow.parse("30d"))
        any_traces = bool(listing["traces"]) or data.has_traces(store)
        return listing, options, any_traces

    listing, options, any_traces = await blocking(load)
    context = {
        "query": query,
        "qp": query.params(),
        "listing": listing,
        "options": options,
        "ranges": RANGES,
        "statuses": data.STATUSES,
        "sources": data.SOURCES,
        "feedback_filters": FEEDBACK_FILTERS,
        "page_sizes": data.PAGE_SIZES,
        "any_traces": any_traces,
        "filtered": bool(query.params()),
        "curl": _curl(request),
    }
    return render(request, "traces.html", context)


async def trace_page(request: Request) -> Response:
    trace_id = request.path_params["trace_id"]
    detail = await blocking(data.trace_detail, store_of(request), trace_id)
    t = detail["trace"]
    context = {
        "d": detail,
        "t": t,
        "messages": _messages(t.get("input")),
        "attributes": sorted((t.get("attributes") or {}).items()),
        "rendered": rendered_prompt(detail["spans"]),
        "cache": cache_use(detail["spans"]),
    }
    return render(request, "trace.html", context)


def cache_use(spans: list[dict[str, Any]]) -> dict[str, Any] | None:
    """What the response cache did for the request (its root span's marks); None on a route
    without a cache."""
    root = next((s for s in spans if s.get("parent_id") is None), None)
    attrs = (root or {}).get("attributes") or {}
    hit = attrs.get(sc.CACHE_HIT)
    if not isinstance(hit, bool):
        return None
    source = attrs.get(sc.CACHE_SOURCE_TRACE)
    return {
        "hit": hit,
        "source": source if isinstance(source, str) and source else None,
        "saved_usd": attrs.get(sc.CACHE_SAVED_USD),
        "saved_tokens": attrs.get(sc.CACHE_SAVED_TOKENS),
    }


def rendered_prompt(spans: list[dict[str, Any]]) -> str | None:
    """The text the model was given by the attempt that answered (the last one that recorded it)."""
    for span in reversed(spans):
        text = (span.get("attributes") or {}).get(sc.PROMPT_RENDERED)
        if isinstance(text, str):
            return text
    return None


def _messages(value: Any) -> list[dict[str, Any]]:
    """The trace's input as display items: ``{"role", "text"}`` or ``{"role", "json"}``."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "prompt", "text": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value):
        out = []
        for m in value:
            content = m.get("content")
            extra = {k: v for k, v in m.items() if k not in ("role", "content")}
            item: dict[str, Any] = {"role": str(m.get("role"))}
            if isinstance(content, str):
                item["text"] = content
            elif isinstance(content, list) and all(
                isinstance(p, dict) and p.get("type") == "text" for p in content
            ):
                item["text"] = "\n".join(str(p.get("text", "")) for p in content)
            elif content is not None:
                item["json"] = _pretty(content)
            if extra:
                item["extra"] = _pretty(extra)
            out.append(item)
        return out
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [{"role": f"input {i + 1}", "text": v} for i, v in enumerate(value)]
    return [{"role": "input", "json": _pretty(value)}]


def _pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode()


routes = [
    Route("/", overview_page, methods=["GET", "HEAD"]),
    Route("/traces", traces_page, methods=["GET", "HEAD"]),
    Route("/traces/{trace_id}", trace_page, methods=["GET", "HEAD"]),
]
