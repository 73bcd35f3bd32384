"""Monitoring over HTTP: the overview figures (from the rollups), the trace list and one trace,
and user feedback on traces. The dashboard pages show the same data (``shipyard.store.traffic``).

Handlers are plain ``def``: FastAPI runs them in its thread pool, off the event loop that serves
``/v1``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from shipyard.api import deps
from shipyard.store import feedback as fb
from shipyard.store import traffic as data
from shipyard.store.db import Store
from shipyard.times import TIME_HELP, TimeWindow

router = APIRouter(tags=["monitoring"])

# Larger numbers do not fit the store's integers (SQLite INTEGER, PostgreSQL BIGINT).
_BIGINT = 2**63 - 1

_RANGE_HELP = "A preset window ending now: 15m, 1h, 6h, 24h, 7d, 30d (or any duration like 90m)."


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trace_id: Any = Field(description="The trace's id (the `x-shipyard-trace-id` response header).")
    score: Any = Field(
        description='"up" / "down", true / false (thumbs), or a number from 0 to 1.',
        json_schema_extra={
            "anyOf": [{"type": "string", "enum": ["up", "down"]}, {"type": "boolean"}, {"type": "number"}]
        },
    )
    name: Any = Field("user", description="What is rated (`user`, `helpfulness`, …); at most 64 characters.")
    comment: Any = Field(None, description="Free text, at most 10,000 characters.")
    user_id: Any = Field(None, description="Who gave the feedback.")


class FeedbackOut(BaseModel):
    id: int
    trace_id: str
    name: str
    kind: str = Field(description="thumbs | numeric")
    score: float = Field(description="thumbs: 1 up, 0 down; numeric: 0..1. Positive when >= 0.5.")
    comment: str | None
    user_id: str | None
    created_at: float


@router.get(
    "/overview",
    summary="Traffic figures for a time window",
    description="Totals (requests, requests/s, error rate, latency p50/p95/p99, TTFT, tokens, cost), "
    "one point per step, per-route and per-model tables and online-eval score series. Read from "
    "the per-minute/per-hour rollups, never the traces table. Without `range`, `since` or `until`: "
    "the last hour.",
)
def overview(
    range: str | None = Query(None, description=_RANGE_HELP),
    since: str | None = Query(None, description=TIME_HELP),
    until: str | None = Query(None, description=TIME_HELP + " Default: now."),
    route: str | None = Query(None),
    model: str | None = Query(None),
    source: str | None = Query(None, description="gateway | otlp"),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    window = TimeWindow.parse(range, since, until)
    return data.overview(store, window, route=route or None, model=model or None, source=source or None)


@router.get(
    "/traces",
    summary="A page of traces, newest first",
    description="Keyset pagination: pass a page's `older` value as `cursor` (with `dir=older`, the "
    "default) for the next page, its `newer` value with `dir=newer` for the previous one. Filters "
    "that are not indexes (model, status, source, q, tag, feedback) look at up to 100,000 traces "
    "per page; when that window ends first, `scanned_to` says where and `older` continues there.",
)
def list_traces(
    request: Request,
    route: str | None = Query(None),
    model: str | None = Query(None),
    status: str | None = Query(None, description="ok | error"),
    source: str | None = Query(None, description="gateway | otlp"),
    q: str | None = Query(None, description="Text in the input or the output (case-insensitive)."),
    tag: str | None = Query(None, description="Traces whose tags contain this one."),
    feedback: str | None = Query(None, description="positive | negative | any | none"),
    range: str | None = Query(None, description=_RANGE_HELP),
    since: str | None = Query(None, description=TIME_HELP),
    until: str | None = Query(None, description=TIME_HELP),
    cursor: str | None = Query(None, description="`older` or `newer` of a previous page."),
    dir: str = Query("older", description="older | newer"),
    limit: str = Query("50", description="1 to 500."),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    query = data.TraceQuery.parse({k: v for k, v in request.query_params.items() if v != ""})
    return data.trace_list(store, query)


@router.get(
    "/traces/{trace_id}",
    summary="One trace with its spans, scores and feedback",
    description="A unique prefix of the id works too. `spans` are in tree order with their `depth`; "
    "`guard` lists every `guard.*` attribute of the trace and its spans.",
)
def get_trace(trace_id: str, store: Store = Depends(deps.store)) -> dict[str, Any]:
    detail = data.trace_detail(store, trace_id)
    detail.pop("waterfall", None)
    return detail


@router.post(
    "/feedback",
    response_model=FeedbackOut,
    status_code=201,
    summary="Rate a trace",
    description='Thumbs (`"up"`/`"down"`, `true`/`false`) or a score from 0 to 1, with an optional '
    "comment. 404 when the trace does not exist (a trace still in the writer's queue is waited for).",
)
def add_feedback(body: FeedbackIn, request: Request, store: Store = Depends(deps.store)) -> FeedbackOut:
    writer = deps.platform(request).writer
    row = fb.add_feedback(
        store,
        body.trace_id,
        body.score,
        name=body.name if body.name is not None else "user",
        comment=body.comment,
        user_id=body.user_id,
        wait_for_trace=lambda: writer.flush(2.0),
    )
    return FeedbackOut.model_validate(row)


@router.get("/feedback", response_model=list[FeedbackOut], summary="Feedback, newest first")
def list_feedback(
    trace_id: str | None = Query(None, description="Only this trace's feedback."),
    name: str | None = Query(None),
    limit: int = Query(50, ge=1, le=1000),
    before_id: int | None = Query(
        None, ge=1, le=_BIGINT, description="Page further back: the last `id` you got."
    ),
    store: Store = Depends(deps.store),
) -> list[FeedbackOut]:
    rows = fb.list_feedback(store, trace_id, limit=limit, before_id=before_id, name=name)
    return [FeedbackOut.model_validate(r) for r in rows]
