"""Monitoring pages: drift (``/drift``: the latest report per route, every route's p-values and PSI
over time, the scheduled checks; ``/drift/{id}``: one report's tests and topic clusters) and alerts
(``/alerts``: the configured rules with their live state, the firing/resolved episodes and their
deliveries).

Drift reports are read through ``shipyard.monitoring.drift`` (``DriftReport.metrics()`` is what
alert rules see, so the page shows the same numbers); alert states come from the running
``MonitoringService`` (pending lives only in its memory), episodes from ``store.alerts``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shipyard.errors import InvalidRequest
from shipyard.monitoring import drift as drift_svc
from shipyard.monitoring.drift import DriftReport
from shipyard.store import alerts as alerts_q
from shipyard.store import drift as drift_q
from shipyard.store.db import Store
from shipyard.store.tables import drift_reports
from shipyard.web.common import blocking, fmt_time, platform_of, render, store_of
from shipyard.web.params import int_param

REPORTS_PAGE = 25
HISTORY_PER_ROUTE = 100
MAX_CHART_ROUTES = 12
EVENTS_PAGE = 50
TEST_LABELS = {"mmd": "MMD (embeddings)", "ks": "Kolmogorov–Smirnov", "psi": "PSI"}
FEATURE_LABELS = {
    "prompt": "prompt embeddings",
    "response": "response embeddings",
    "prompt_chars": "prompt length",
    "response_chars": "response length",
    "input_tokens": "input tokens",
    "output_tokens": "output tokens",
    "latency_ms": "latency",
}

DRIFT_CONFIG_EXAMPLE = """monitoring:
  drift:
    - route: support
      reference: 7d offset 1d   # the week before yesterday
      current: 1d
      every: 1h"""

ALERTS_CONFIG_EXAMPLE = """monitoring:
  alerts:
    - name: support-errors
      metric: error_rate
      route: support
      window: 5m
      op: ">"
      threshold: 0.05
      for: 2m
      notify: [log, {webhook: "https://hooks.example.com/shipyard"}]
    - name: support-drift
      metric: drift.drifted
      route: support
      op: ">="
      threshold: 1"""


def _monitoring(request: Request) -> Any:
    return getattr(platform_of(request), "monitoring", None)


# -- drift ------------------------------------------------------------------------------------------
def _drift_routes(store: Store) -> list[dict[str, Any]]:
    c = drift_reports.c
    q = (
        sa.select(c.route, sa.func.count().label("n"), sa.func.max(c.created_at).label("last"))
        .group_by(c.route)
        .order_by(c.route)
    )
    with store.engine.connect() as conn:
        return [{"route": str(r.route), "n": int(r.n), "last": float(r.last)} for r in conn.execute(q)]


def side_text(src: Mapping[str, Any]) -> str:
    """How a sample was chosen, in words: the spec (a time range as its ISO times) and the counts."""
    spec = str(src.get("spec", "?"))
    if src.get("kind") == "dataset":
        return f"{spec} ({src.get('n_sampled', '?')} of {src.get('n_examples', '?')} examples)"
    when = ""
    if src.get("since_iso") and src.get("until_iso"):
        when = f"{src['since_iso']} … {src['until_iso']}"
    text = when if src.get("kind") == "range" and when else (f"{spec} = {when}" if when else spec)
    if src.get("n_in_window") is not None:
        text += f" ({src.get('n_sampled', '?')} sampled of {src['n_in_window']:,} traces)"
    return text


def report_row(r: DriftReport) -> dict[str, Any]:
    m = r.metrics()
    return {
        "id": r.id,
        "route": r.route,
        "created_at": r.created_at,
        "drifted": r.drifted,
        "n_reference": r.n_reference,
        "n_current": r.n_current,
        "reference": side_text(r.reference),
        "current": side_text(r.current),
        "p_value": m.get("p_value"),
        "psi_max": m.get("psi_max"),
        "topic_shift": m.get("topic_shift"),
        "reasons": r.results.get("reasons", []),
        "n_tests": r.results.get("n_tests"),
    }


def history_charts(
    histories: Mapping[str, Sequence[DriftReport]], highlight: DriftReport | None = None
) -> dict[str, dict[str, Any]]:
    """p-value, PSI and topic shift of every route's reports over time (chart specs, oldest first)."""
    p_series: list[dict[str, Any]] = []
    psi_series: list[dict[str, Any]] = []
    shift_series: list[dict[str, Any]] = []
    alpha = psi_threshold = None
    xs_all: list[float] = []
    for route, reports in histories.items():
        ordered = sorted(reports, key=lambda r: r.created_at)
        xs = [r.created_at for r in ordered]
        xs_all.extend(xs)
        metrics = [r.metrics() for r in ordered]
        p_series.append({"name": route, "x": xs, "y": [m.get("p_value") for m in metrics], "format": ".3~g"})
        psi_series.append({"name": route, "x": xs, "y": [m.get("psi_max") for m in metrics], "format": ".3f"})
        shift_series.append(
            {"name": route, "x": xs, "y": [m.get("topic_shift") for m in metrics], "format": ".3f"}
        )
        if ordered:
            alpha = ordered[-1].results.get("alpha", alpha)
            psi_threshold = ordered[-1].results.get("psi_threshold", psi_threshold)
    span = [min(xs_all), max(xs_all)] if xs_all else []
    if len(span) == 2 and span[0] == span[1]:
        span = [span[0] - 60, span[1] + 60]
    if span and alpha:
        p_series.append(
            {"name": f"alpha {alpha:g}", "x": span, "y": [alpha, alpha], "dash": "dot", "color": "#c62828"}
        )
    if span and psi_threshold:
        psi_series.append(
            {
                "name": f"threshold {psi_threshold:g}",
                "x": span,
                "y": [psi_threshold, psi_threshold],
                "dash": "dot",
                "color": "#c62828",
            }
        )
    if highlight is not None:
        m = highlight.metrics()
        mark = {"name": f"report #{highlight.id}", "x": [highlight.created_at], "color": "#1b1f24"}
        p_series.append({**mark, "y": [m.get("p_value")], "format": ".3~g"})
        if m.get("psi_max") is not None:
            psi_series.append({**mark, "y": [m.get("psi_max")], "format": ".3f"})
    empty = "No drift reports yet"
    return {
        "p_value": {
            "kind": "timeseries",
            "series": p_series,
            "y": {"title": "smallest corrected p-value", "type": "log", "format": ".1~g"},
            "legend": True,
            "empty": empty,
        },
        "psi": {
            "kind": "timeseries",
            "series": psi_series,
            "y": {"title": "largest PSI", "format": ".2f"},
            "legend": True,
            "empty": empty,
        },
        "topic_shift": {
            "kind": "timeseries",
            "series": shift_series,
            "y": {"title": "topic shift (total variation)", "format": ".2f", "range": [0, 1]},
            "legend": True,
            "empty": empty,
        },
    }


def load_drift(store: Store, monitoring: Any, params: Mapping[str, str]) -> dict[str, Any]:
    route = (params.get("route") or "").strip() or None
    offset = int_param(params, "offset", 0, 0)
    routes = _drift_routes(store)
    known = [r["route"] for r in routes]
    if route is not None and route not in known:
        hint = f"routes with reports: {', '.join(known)}" if known else "there are no drift reports yet"
        raise InvalidRequest(f"no drift reports for route `{route}`; {hint}", param="route")
    latest = []
    histories: dict[str, list[DriftReport]] = {}
    for r in routes:
        if route is not None and r["route"] != route:
            continue
        reports = drift_svc.list_reports(store, r["route"], limit=HISTORY_PER_ROUTE)
        if reports:
            latest.append({**report_row(reports[0]), "n_reports": r["n"]})
        if len(histories) < MAX_CHART_ROUTES:
            histories[r["route"]] = reports
    page = drift_svc.list_reports(store, route, limit=REPORTS_PAGE, offset=offset)
    total = drift_q.count_reports(store, route)
    scheduled = [d.to_dict() for d in monitoring.drift] if monitoring is not None else []
    return {
        "route": route,
        "routes": known,
        "latest": latest,
        "reports": [report_row(r) for r in page],
        "total": total,
        "offset": offset,
        "limit": REPORTS_PAGE,
        "charts": history_charts(histories) if histories else {},
        "scheduled": scheduled,
        "config_example": DRIFT_CONFIG_EXAMPLE,
        "charted_routes": len(histories),
    }


def test_row(t: Mapping[str, Any]) -> dict[str, Any]:
    detail = t.get("detail") or {}
    if t.get("drifted"):
        verdict = "drift"
    elif t.get("test") == "psi" and not detail.get("votes", True):
        verdict = "info"
    else:
        verdict = "ok"
    return {
        "name": t["name"],
        "test": TEST_LABELS.get(t["test"], t["test"]),
        "feature": FEATURE_LABELS.get(t["feature"], t["feature"]),
        "statistic": t["statistic"],
        "p_value": t.get("p_value"),
        "p_adjusted": t.get("p_adjusted"),
        "threshold": t.get("threshold"),
        "verdict": verdict,
        "noise": detail.get("noise"),
    }


def topics_view(topics: Mapping[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    if not topics:
        return [], None
    clusters = sorted(topics.get("clusters") or [], key=lambda c: -abs(float(c["change"])))
    labels = [f"#{c['cluster']} " + ", ".join(c.get("keywords", [])[:3]) for c in clusters]
    chart = {
        "kind": "bar",
        "orientation": "h",
        "categories": labels,
        "series": [
            {"name": "reference", "y": [c["share_reference"] for c in clusters], "color": "#8a94a3"},
            {"name": "current", "y": [c["share_current"] for c in clusters], "color": "#1f4fd1"},
        ],
        "y": {"format": ".0%", "title": "share of the sample"},
    }
    return clusters, chart


def load_drift_report(store: Store, raw_id: str) -> dict[str, Any]:
    try:
        report_id = int(raw_id)
    except ValueError:
        raise InvalidRequest(
            f"`{raw_id}` is not a drift report id: ids are whole numbers (see /drift)", param="id"
        ) from None
    report = drift_svc.get_report(store, report_id)
    res = report.results
    clusters, topic_chart = topics_view(res.get("topics"))
    history = drift_svc.list_reports(store, report.route, limit=HISTORY_PER_ROUTE)
    charts = history_charts({report.route: history}, highlight=report)
    if topic_chart is not None:
        charts["topics"] = topic_chart
    trace_links = {}
    for side, src in (("reference", report.reference), ("current", report.current)):
        if src.get("kind") != "dataset" and src.get("since") is not None and src.get("until") is not None:
            query = {"route": report.route, "since": f"{src['since']:.0f}", "until": f"{src['until']:.0f}"}
            trace_links[side] = "/traces?" + urlencode(query)
    return {
        "report": report,
        "row": report_row(report),
        "tests": [test_row(t) for t in res.get("tests", [])],
        "skipped": [s for s in res.get("skipped", []) if not s["name"].startswith("psi_")],
        "topics": res.get("topics"),
        "clusters": clusters,
        "charts": charts,
        "trace_links": trace_links,
        "settings": {
            k: res.get(k)
            for k in (
                "alpha",
                "correction",
                "n_tests",
                "corrected_alpha",
                "psi_threshold",
                "permutations",
                "min_samples",
                "max_samples",
                "seed",
                "embedding",
            )
            if res.get(k) is not None
        },
        "timing": res.get("timing") or {},
        "dataset_ref": _dataset_ref(report.reference),
    }


def _dataset_ref(src: Mapping[str, Any]) -> dict[str, Any] | None:
    if src.get("kind") != "dataset" or not src.get("dataset"):
        return None
    return {"name": src["dataset"], "version": src.get("version")}


# -- alerts -----------------------------------------------------------------------------------------
def rule_view(rule: Mapping[str, Any], last: Mapping[str, Any] | None) -> dict[str, Any]:
    state = rule.get("state", "inactive")
    shown = {"inactive": "ok"}.get(state, state)
    return {**rule, "shown_state": shown, "last_episode": last}


def timeline_chart(events: Sequence[Mapping[str, Any]], now: float) -> dict[str, Any] | None:
    """Each episode as a bar from when it started firing to when it resolved (or now)."""
    if not events:
        return None
    ordered = sorted(events, key=lambda e: e["started_at"])
    colors = {"critical": "#c62828", "warning": "#e8710a", "info": "#1f4fd1"}
    data = []
    for sev in ("critical", "warning", "info"):
        eps = [e for e in ordered if e["severity"] == sev]
        if not eps:
            continue
        ends = [e["resolved_at"] or now for e in eps]
        data.append(
            {
                "type": "bar",
                "orientation": "h",
                "name": sev,
                "y": [e["rule"] for e in eps],
                "base": [e["started_at"] * 1000 for e in eps],
                "x": [max((end - e["started_at"]) * 1000, 1000.0) for e, end in zip(eps, ends, strict=True)],
                "marker": {
                    "color": [colors[sev] if e["resolved_at"] is None else colors[sev] + "88" for e in eps]
                },
                "customdata": [
                    [
                        e["state"],
                        "no data" if e["value"] is None else f"{e['value']:.4g}",
                        fmt_time(e["started_at"]),
                        fmt_time(e["resolved_at"]) if e["resolved_at"] else "still firing",
                    ]
                    for e in eps
                ],
                "hovertemplate": "<b>%{y}</b>: %{customdata[0]}, value %{customdata[1]}<br>"
                "from %{customdata[2]}<br>to %{customdata[3]}<extra></extra>",
            }
        )
    return {
        "kind": "plotly",
        "data": data,
        "layout": {
            "barmode": "overlay",
            "xaxis": {"type": "date", "title": {"text": "time (UTC)", "font": {"size": 11}}},
            "yaxis": {"type": "category", "autorange": "reversed", "automargin": True},
            "margin": {"l": 10},
        },
    }


def load_alerts(store: Store, monitoring: Any, params: Mapping[str, str]) -> dict[str, Any]:
    rule = (params.get("rule") or "").strip() or None
    state = (params.get("state") or "").strip() or None
    if state is not None and state not in ("firing", "resolved"):
        raise InvalidRequest(f"`state` must be `firing` or `resolved`; got `{state}`", param="state")
    limit = int_param(params, "limit", EVENTS_PAGE, 1, 1000)
    rules = monitoring.rules() if monitoring is not None else []
    latest = alerts_q.latest_by_fingerprint(store, [r["fingerprint"] for r in rules])
    views = [rule_view(r, latest.get(r["fingerprint"])) for r in rules]
    order = {"firing": 0, "pending": 1, "ok": 2}
    views.sort(key=lambda v: (order.get(v["shown_state"], 3), v["name"]))
    events = alerts_q.list_events(store, limit, rule=rule, state=state)
    now = time.time()
    counts = {s: sum(1 for v in views if v["shown_state"] == s) for s in ("firing", "pending", "ok")}
    rule_names = sorted({r["name"] for r in rules} | {e["rule"] for e in events})
    return {
        "rules": views,
        "events": events,
        "counts": counts,
        "errors": sum(1 for v in views if v.get("error")),
        "filters": {"rule": rule, "state": state},
        "rule_names": rule_names,
        "chart": timeline_chart(events, now),
        "now": now,
        "monitoring_running": bool(monitoring is not None and getattr(monitoring, "started", False)),
        "config_example": ALERTS_CONFIG_EXAMPLE,
        "any_events": bool(events) or (rule is not None or state is not None),
    }


# -- handlers ---------------------------------------------------------------------------------------
async def drift_page(request: Request) -> Response:
    context = await blocking(load_drift, store_of(request), _monitoring(request), request.query_params)
    return render(request, "monitor/drift.html", context)


async def drift_report_page(request: Request) -> Response:
    context = await blocking(load_drift_report, store_of(request), request.path_params["report_id"])
    return render(request, "monitor/drift_report.html", context)


async def alerts_page(request: Request) -> Response:
    context = await blocking(load_alerts, store_of(request), _monitoring(request), request.query_params)
    return render(request, "monitor/alerts.html", context)


routes = [
    Route("/drift", drift_page, methods=["GET", "HEAD"]),
    Route("/drift/{report_id}", drift_report_page, methods=["GET", "HEAD"]),
    Route("/alerts", alerts_page, methods=["GET", "HEAD"]),
]
