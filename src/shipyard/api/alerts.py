"""``/api/alerts``, ``/api/scores`` and ``/api/monitoring``: alert rules with their live state and
their episodes, evaluation on demand, online-eval scores over time (for charts) and per trace, and
the status of the background monitoring (online evals, scheduled drift checks). Store reads are
plain ``def`` handlers (FastAPI runs them in its thread pool)."""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from shipyard.api import deps
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
@router.get("/alerts", summary="Alert rules with their current state, and the latest episodes")
def list_alerts(
    limit: int = Query(20, ge=0, le=1000, description="How many recent episodes to include."),
    service: MonitoringService = Depends(monitoring),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    return {"rules": service.rules(), "events": alerts_q.list_events(store, limit) if limit else []}


@router.get("/alerts/events", summary="Alert episodes (firing, resolved), newest first")
def alert_events(
    limit: int = Query(50, ge=1, le=1000),
    rule: str | None = Query(None, description="Only this rule's episodes."),
    state: Literal["firing", "resolved"] | None = Query(None),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    return {"events": alerts_q.list_events(store, limit, rule=rule, state=state)}


@router.post("/alerts/evaluate", summary="Evaluate every alert rule now (notifications go out as usual)")
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


@router.get("/scores/names", summary="Score names with data (per route): count, average, latest")
def score_names(
    route: str | None = Query(None),
    since: str | None = Query(None, description="Only scores since then. " + TIME_HELP),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    return {"names": scores_q.names(store, parse_time(since, "since", time.time()), route)}


@router.get("/scores/trace/{trace_id}", summary="Every score attached to one trace")
def trace_scores(trace_id: str, store: Store = Depends(deps.store)) -> dict[str, Any]:
    return {"trace_id": trace_id, "scores": scores_q.scores_for_trace(store, trace_id)}


# -- status -----------------------------------------------------------------------------------------
@router.get("/monitoring", summary="Online evals, scheduled drift checks and alert rules at a glance")
def monitoring_status(service: MonitoringService = Depends(monitoring)) -> dict[str, Any]:
    return service.status()
