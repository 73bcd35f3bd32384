"""``/api/alerts``, ``/api/scores`` and ``/api/monitoring``: alert rules with their live state, and
their episodes, evaluation on demand, online-eval scores over time (for charts) and per trace, and
the status of the background monitoring (online evals, scheduled drift checks). Store reads are
plain ``def`` handlers (FastAPI runs them in its thread pool)."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from shipyard.api import deps, pages
from shipyard.api.openapi import errors
from shipyard.api.pages import Page
from shipyard.durations import parse_duration
from shipyard.errors import InvalidRequest
from shipyard.monitoring.service import MonitoringService
from shipyard.store import alerts as alerts_q
from shipyard.store import scores as scores_q
from shipyard.store.db import Store
from shipyard.times import TIME_HELP, parse_time

router = APIRouter(tags=["monitoring"])

MAX_POINTS = 5000


def monitoring(request: Request) -> MonitoringService:
    service: MonitoringService | None = getattr(deps.platform(request), "monitoring", None)
    if service is None:
        raise InvalidRequest("this server runs no monitoring service")
    return service


def parse_step(value: str | None, since: float, until: float) -> int:
    if value is None or not value.strip():
        # About 120 points, in whole minutes once the range is longer than two hours.
        raw = (until - since) / 120
        return max(1, int(raw if raw < 60 else raw // 60 * 60))
    try:
        step = parse_duration(float(value) if value.replace(".", "", 1).isdigit() else value)
    except ValueError as exc:
        raise InvalidRequest(f"`step`: {exc}", param="step") from None
    if step < 1:
        raise InvalidRequest("`step` must be at least 1s", param="step")
    if (until - since) / step > MAX_POINTS:
        raise InvalidRequest(
            f"`step` {value} gives more than {MAX_POINTS} points over this range; use a larger step",
            param="step",
        )
    return int(step)


# -- alerts -----------------------------------------------------------------------------------------
@router.get(
    "/alerts",
    response_model=Page[dict[str, Any]],
    summary="Alert rules with their current state, by name",
    description="Each rule with `state`, `value`, `since`, `last_evaluated` and `error`. Its "
    "episodes are at `GET /api/alerts/events`.",
    responses=errors(400, notes={400: "This server runs no monitoring service."}),
)
def list_alerts(
    limit: int = pages.limit_query(100, 1000),
    cursor: str | None = pages.cursor_query(),
    service: MonitoringService = Depends(monitoring),
) -> dict[str, Any]:
    position = pages.decode(cursor, "alerts", (str, str))
    return pages.page_after(
        service.rules(), lambda r: (r["name"], r["fingerprint"]), position, limit, "alerts"
    )


@router.get("/alerts/events", response_model=Page[dict[str, Any]], summary="Alert episodes, newest first")
def alert_events(
    rule: str | None = Query(None, description="Only this rule's episodes."),
    state: Literal["firing", "resolved"] | None = Query(None),
    limit: int = pages.limit_query(50, 1000),
    cursor: str | None = pages.cursor_query(),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    position = pages.decode(cursor, "alert-events", (float, int))
    before = (position[0], position[1]) if position else None
    events = alerts_q.list_events(store, limit + 1, rule=rule, state=state, before=before)
    return pages.page(events, limit, "alert-events", lambda e: (e["started_at"], e["id"]))


@router.post(
    "/alerts/evaluate",
    summary="Evaluate every alert rule now (notifications go out as usual)",
    responses=errors(400, notes={400: "No monitoring service, or it is starting or stopping."}),
)
async def evaluate_alerts(service: MonitoringService = Depends(monitoring)) -> dict[str, Any]:
    if not service.started:
        raise InvalidRequest("monitoring is not running (the server is starting or stopping)")
    return {"rules": await service.evaluate()}


# -- scores -----------------------------------------------------------------------------------------
@router.get("/scores", summary="A score over time: average, min, max, count and pass rate per step")
def score_series(
    name: str = Query(description="Scorer name (`GET /api/scores/names` lists them)."),
    route: str | None = Query(None),
    since: str | None = Query(None, description="Default: 24h before `until`. " + TIME_HELP),
    until: str | None = Query(None, description="Default: now. " + TIME_HELP),
    step: str | None = Query(None, description="Seconds or a duration (`5m`); default: ~120 points."),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    now = time.time()
    end = parse_time(until, "until", now) or now
    start = parse_time(since, "since", now)
    start = end - 86400 if start is None else start
    if start >= end:
        raise InvalidRequest("`since` must be before `until`", param="since")
    width = parse_step(step, start, end)
    points = scores_q.series(store, name, start, end, width, route)
    return {"name": name, "route": route, "since": start, "until": end, "step": width, "points": points}


@router.get(
    "/scores/names",
    response_model=Page[dict[str, Any]],
    summary="Score names with data (per route): count, average, latest",
)
def score_names(
    route: str | None = Query(None),
    since: str | None = Query(None, description="Only scores since then. " + TIME_HELP),
    limit: int = pages.limit_query(100, 1000),
    cursor: str | None = pages.cursor_query(),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    position = pages.decode(cursor, "score-names", (str, str))
    after = (position[0], position[1]) if position else None
    start = parse_time(since, "since", time.time())
    rows = scores_q.names(store, start, route, after=after, limit=limit + 1)
    return pages.page(rows, limit, "score-names", lambda r: (r["name"], r["route"] or ""))


@router.get(
    "/scores/trace/{trace_id}",
    response_model=Page[dict[str, Any]],
    summary="The scores attached to one trace, in the order they were recorded",
)
def trace_scores(
    trace_id: str,
    limit: int = pages.limit_query(100, 1000),
    cursor: str | None = pages.cursor_query(),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    position = pages.decode(cursor, "trace-scores", (int,))
    after_id = position[0] if position else None
    rows = scores_q.scores_for_trace(store, trace_id, after_id=after_id, limit=limit + 1)
    return pages.page(rows, limit, "trace-scores", lambda r: (r["id"],))


# -- status -----------------------------------------------------------------------------------------
@router.get(
    "/monitoring",
    summary="Online evals, scheduled drift checks and alert rules at a glance",
    responses=errors(400, notes={400: "This server runs no monitoring service."}),
)
def monitoring_status(service: MonitoringService = Depends(monitoring)) -> dict[str, Any]:
    return service.status()
