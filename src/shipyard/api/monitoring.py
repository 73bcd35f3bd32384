"""Monitoring over HTTP: the overview figures (from the rollups), the trace list and one trace,
and user feedback on traces. The dashboard pages show the same data (``shipyard.store.traffic``).

Handlers are plain ``def``: FastAPI runs them in its thread pool, off the event loop that serves
``/v1``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from shipyard.api import deps, pages
from shipyard.api.openapi import errors
from shipyard.api.pages import Page
from shipyard.store import feedback as fb
from shipyard.store import performance as perf
from shipyard.store import traces as tq
from shipyard.store import traffic as data
from shipyard.store.db import Store
from shipyard.times import TIME_HELP, TimeWindow

router = APIRouter(tags=["monitoring"])

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


class LatencyParts(BaseModel):
    total_ms: float | None = Field(description="Average latency (the root span's duration).")
    queue_ms: float | None = Field(
        description="Average time from the request's start to its first provider attempt (limits, "
        "plan, cache lookup), less the input guards."
    )
    guards_ms: float | None = Field(description="Average time in the input and output guards.")
    retries_ms: float | None = Field(
        description="Average time in failed attempts and the backoff between them."
    )
    ttft_ms: float | None = Field(
        description="Average time from the answering attempt's start to the first token (streams)."
    )
    generation_ms: float | None = Field(
        description="Average time from the first token to the end of the answer; for a whole "
        "answer, the answering attempt's duration."
    )
    overhead_ms: float | None = Field(description="Average of what remains: the gateway's own time.")


class CacheFigures(BaseModel):
    lookups: int = Field(description="Requests the route's response cache was asked about.")
    hits: int
    hit_ratio: float | None = Field(description="hits / lookups; null without lookups.")
    saved_usd: float = Field(description="What the answers served from the cache cost when they were made.")
    saved_tokens: int = Field(description="Their input plus output tokens.")


class PerformanceRow(BaseModel):
    group: str = Field(
        description="The route, model, API key id or `prompt@vN` (per `by`); empty for requests "
        "that had none (no model answered, an in-process caller, a route without a prompt)."
    )
    key_id: str | None = Field(None, description="`by=key`: the key's id.")
    key_name: str | None = Field(None, description="`by=key`: the key's name, if the key still exists.")
    prompt: str | None = Field(None, description="`by=prompt`: the prompt's name.")
    prompt_version: int | None = Field(None, description="`by=prompt`: its version.")
    requests: int
    errors: int
    streams: int
    cost_usd: float
    cost_per_request_usd: float | None
    input_tokens: int
    output_tokens: int
    latency: LatencyParts
    cache: CacheFigures


_POSITION = {"route": (str,), "model": (str,), "key": (str,), "prompt": (str, int)}


@router.get(
    "/performance",
    response_model=Page[PerformanceRow],
    responses=errors(
        400, notes={400: "`by` is not route, model, key or prompt; a time or the cursor is malformed."}
    ),
    summary="Where time and money go, per route, model, API key or prompt version",
    description="Per group: requests, cost and tokens; the average latency cut into queue, guards, "
    "retries, upstream time to first token, generation and gateway overhead (they add up to the "
    "average latency); and the response cache's lookups, hits and savings. Read from the "
    "per-minute/per-hour performance rollups (gateway traces only), never the spans. Groups come "
    "in name order. Without `range`, `since` or `until`: the last hour.",
)
def performance(
    by: str = Query("route", description="route | model | key | prompt"),
    range: str | None = Query(None, description=_RANGE_HELP),
    since: str | None = Query(None, description=TIME_HELP),
    until: str | None = Query(None, description=TIME_HELP + " Default: now."),
    route: str | None = Query(None, description="Only this route."),
    model: str | None = Query(None, description="Only requests this model answered."),
    limit: int = pages.limit_query(100, perf.MAX_GROUPS),
    cursor: str | None = pages.cursor_query(),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    perf.check_group(by)
    window = TimeWindow.parse(range, since, until)
    kind = f"performance-{by}"
    after = pages.decode(cursor, kind, _POSITION[by])
    rows = perf.groups(
        store,
        window.since,
        window.until,
        by,
        route=route or None,
        model=model or None,
        limit=limit + 1,
        after=after,
    )
    shown = rows[:limit]
    more = len(rows) > limit
    return {
        "data": [{k: v for k, v in r.items() if k != "position"} for r in shown],
        "next": pages.encode(kind, tuple(shown[-1]["position"])) if more else None,
    }


@router.get(
    "/traces",
    response_model=Page[dict[str, Any]],
    summary="A page of traces, newest first",
    description="Summary columns of each trace, `preview` (the first words of its input) and "
    "`feedback` (counts). Pages are keyed by start time and id. Filters that are not indexes "
    f"(model, status, source, q, tag, feedback) look at up to {tq.SCAN_LIMIT:,} traces per page: "
    "when that window ends first, the page holds fewer than `limit` traces (even none) and `next` "
    "continues where it stopped.",
)
def list_traces(
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
    limit: int = pages.limit_query(50, data.MAX_PAGE),
    cursor: str | None = pages.cursor_query(),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    filters = {
        "route": route,
        "model": model,
        "status": status,
        "source": source,
        "q": q,
        "tag": tag,
        "feedback": feedback,
        "range": range,
        "since": since,
        "until": until,
    }
    query = data.TraceQuery.parse({k: v for k, v in filters.items() if v})
    query.limit = limit
    position = pages.decode(cursor, "traces", (float, str))
    if position is not None:
        query.cursor = tq.Cursor(*position)
    rows, page = data.trace_page(store, query)
    older = page.older
    return {
        "data": rows,
        "next": pages.encode("traces", (older.start_time, older.trace_id)) if older else None,
    }


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
    responses=errors(404, notes={404: "No trace with that id (after waiting for the trace writer)."}),
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


@router.get("/feedback", response_model=Page[FeedbackOut], summary="Feedback, newest first")
def list_feedback(
    trace_id: str | None = Query(None, description="Only this trace's feedback."),
    name: str | None = Query(None),
    limit: int = pages.limit_query(50, 1000),
    cursor: str | None = pages.cursor_query(),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    position = pages.decode(cursor, "feedback", (int,))
    rows = fb.list_feedback(
        store, trace_id, limit=limit + 1, before_id=position[0] if position else None, name=name
    )
    return pages.page([FeedbackOut.model_validate(r) for r in rows], limit, "feedback", lambda f: (f.id,))
