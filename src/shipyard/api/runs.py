"""``/api/runs``: experiment runs over HTTP — create, log params/metrics/tags/links, upload and
download artifacts, end, read and compare. Handlers only translate HTTP to
:class:`~shipyard.registry.runs.RunService` calls; they are plain ``def`` (FastAPI runs them in its
thread pool) because every one of them waits on the store. Run ids may be unique prefixes."""

from __future__ import annotations

import mimetypes
import tempfile
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from shipyard.api import deps, pages
from shipyard.api.openapi import errors
from shipyard.api.pages import Page
from shipyard.errors import InvalidRequest
from shipyard.gateway.http_headers import download_headers, served_type
from shipyard.registry.runs import Comparison, RunDetail, RunService, artifact_relpath
from shipyard.store.runs import ArtifactRow, LinkRow, RunRow

router = APIRouter(prefix="/runs", tags=["runs"])

# Uploads up to this size stay in memory; bigger ones spill to a temporary file as they arrive.
_SPOOL_BYTES = 8 * 1024 * 1024


def service(request: Request) -> RunService:
    return RunService(deps.store(request), deps.settings(request).artifacts_path)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- request bodies ---------------------------------------------------------------------------------
class LinkIn(_In):
    kind: Literal["dataset", "prompt", "model", "route", "provider", "run"]
    name: str = Field(description="Registry or dataset name; for kind `run`, the run id.")
    version: int | None = Field(None, description="The version used; omitted (or 0) for a run.")


class RunCreate(_In):
    name: str | None = Field(None, max_length=256)
    experiment: str = Field("default", description="Groups related runs.")
    params: dict[str, Any] = Field(default_factory=dict, description="Inputs; each can be set once.")
    tags: dict[str, str | int | float | bool] = Field(default_factory=dict)
    links: list[LinkIn] = Field(default_factory=list, description="Lineage: what the run used.")
    parent_run_id: str | None = Field(None, description="Makes this a child (nested) run.")
    notes: str | None = None


class RunPatch(_In):
    name: str | None = Field(None, max_length=256)
    notes: str | None = None
    status: Literal["finished", "failed", "killed"] | None = Field(
        None, description="Ends the run; ending it again with another status is a 409."
    )


class ParamsIn(_In):
    params: dict[str, Any]


class MetricIn(_In):
    key: str
    value: float = Field(strict=True, description="A finite number.")
    step: int | None = Field(None, description="Omitted: 0 (a scalar). 0, 1, 2… for a series.")
    timestamp: float | None = Field(None, description="Unix seconds; omitted: now.")


class TagsIn(_In):
    tags: dict[str, str | int | float | bool]


class LinksIn(_In):
    links: list[LinkIn]


# -- responses --------------------------------------------------------------------------------------
class RunOut(BaseModel):
    run_id: str
    name: str | None
    experiment: str
    status: Literal["running", "finished", "failed", "killed"]
    start_time: float
    end_time: float | None
    params: dict[str, Any]
    tags: dict[str, str]
    parent_run_id: str | None
    created_by: str | None
    notes: str | None


class MetricSummaryOut(BaseModel):
    last: float = Field(description="Value at the highest step (the last logged on a tie).")
    step: int
    timestamp: float
    min: float
    max: float
    count: int = Field(description="Points logged; more than one for a series.")


class LinkOut(BaseModel):
    kind: str
    name: str
    version: int


class ArtifactOut(BaseModel):
    path: str
    size: int
    sha256: str
    created_at: float


class RunDetailOut(RunOut):
    metrics: dict[str, MetricSummaryOut]
    links: list[LinkOut]
    artifacts: list[ArtifactOut]


class MetricPointOut(BaseModel):
    step: int
    value: float
    timestamp: float


class MetricSeriesOut(BaseModel):
    run_id: str
    key: str
    points: list[MetricPointOut]


class LoggedOut(BaseModel):
    logged: int


class ParamsOut(BaseModel):
    params: dict[str, Any]


class TagsOut(BaseModel):
    tags: dict[str, str]


class LinksOut(BaseModel):
    links: list[LinkOut]


class ParamComparisonOut(BaseModel):
    key: str
    values: list[Any] = Field(description="One per run, in the order asked; null where unset.")
    differs: bool


class MetricComparisonOut(BaseModel):
    key: str
    values: list[MetricSummaryOut | None]
    deltas: list[float | None] = Field(description="Latest value minus the baseline's (first run's).")
    pct_changes: list[float | None] = Field(description="Delta as a percentage of |baseline|.")


class ComparisonOut(BaseModel):
    baseline: str
    runs: list[RunOut]
    params: list[ParamComparisonOut]
    metrics: list[MetricComparisonOut]


# -- handlers ---------------------------------------------------------------------------------------
def _parse_tags(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"tag filter `{pair}` must look like key=value", param="tag")
        out[key] = value
    return out


@router.get(
    "",
    response_model=Page[RunOut],
    summary="List runs, newest first",
    responses=errors(404, notes={404: "`parent` names no run."}),
)
def list_runs(
    experiment: str | None = None,
    status: Literal["running", "finished", "failed", "killed"] | None = None,
    tag: list[str] = Query([], description="key=value; repeat to require several."),
    name: str | None = Query(None, description="Runs whose name contains this (case-insensitive)."),
    parent: str | None = Query(None, description="Only children of this run."),
    limit: int = pages.limit_query(50, 1000),
    cursor: str | None = pages.cursor_query(),
    svc: RunService = Depends(service),
) -> dict[str, Any]:
    position = pages.decode(cursor, "runs", (float, str))
    rows = svc.list_runs(
        experiment=experiment,
        status=status,
        tags=_parse_tags(tag),
        name_contains=name,
        parent_run_id=svc.resolve_id(parent) if parent else None,
        limit=limit + 1,
        before=(position[0], position[1]) if position else None,
    )
    return pages.page(rows, limit, "runs", lambda r: (r["start_time"], r["run_id"]))


@router.post(
    "",
    response_model=RunOut,
    status_code=201,
    summary="Start a run",
    responses=errors(404, notes={404: "`parent_run_id` or a link names nothing that exists."}),
)
def create_run(body: RunCreate, request: Request, svc: RunService = Depends(service)) -> RunRow:
    return svc.create(
        name=body.name,
        experiment=body.experiment,
        params=body.params,
        tags=body.tags,
        links=[link.model_dump() for link in body.links],
        parent_run_id=body.parent_run_id,
        created_by=deps.actor(request),
        notes=body.notes,
    )


# Declared before `/{run_id}` so that `compare` is not taken for a run id.
@router.get(
    "/compare",
    response_model=ComparisonOut,
    summary="Compare runs against the first",
    responses=errors(404, notes={404: "An id names no run."}),
)
def compare_runs(
    ids: str = Query(
        ..., description="Comma-separated run ids (or unique prefixes); the first is the baseline."
    ),
    svc: RunService = Depends(service),
) -> Comparison:
    return svc.compare([i.strip() for i in ids.split(",") if i.strip()])


@router.get("/{run_id}", response_model=RunDetailOut, summary="A run with params, metrics, links, artifacts")
def get_run(run_id: str, svc: RunService = Depends(service)) -> RunDetail:
    return svc.get(run_id)


@router.patch(
    "/{run_id}",
    response_model=RunOut,
    summary="Rename, annotate or end a run",
    responses=errors(409, notes={409: "The run has already ended with another status."}),
)
def update_run(run_id: str, body: RunPatch, svc: RunService = Depends(service)) -> RunRow:
    return svc.update(run_id, name=body.name, notes=body.notes, status=body.status)


@router.post(
    "/{run_id}/params",
    response_model=ParamsOut,
    summary="Log params (each can be set once)",
    responses=errors(409, notes={409: "A param already has another value."}),
)
def log_params(run_id: str, body: ParamsIn, svc: RunService = Depends(service)) -> dict[str, Any]:
    return {"params": svc.log_params(run_id, body.params)}


@router.post("/{run_id}/metrics", response_model=LoggedOut, summary="Log a batch of metric points")
def log_metrics(run_id: str, body: list[MetricIn], svc: RunService = Depends(service)) -> dict[str, int]:
    return {"logged": svc.log_metrics(run_id, [m.model_dump() for m in body])}


@router.get("/{run_id}/metrics/{key:path}", response_model=MetricSeriesOut, summary="Every point of a metric")
def metric_history(run_id: str, key: str, svc: RunService = Depends(service)) -> dict[str, Any]:
    full_id = svc.resolve_id(run_id)
    return {"run_id": full_id, "key": key, "points": svc.metric_history(full_id, key)}


@router.post("/{run_id}/tags", response_model=TagsOut, summary="Set tags")
def set_tags(run_id: str, body: TagsIn, svc: RunService = Depends(service)) -> dict[str, Any]:
    return {"tags": svc.set_tags(run_id, body.tags)}


@router.post("/{run_id}/links", response_model=LinksOut, summary="Add lineage links")
def add_links(run_id: str, body: LinksIn, svc: RunService = Depends(service)) -> dict[str, list[LinkRow]]:
    return {"links": svc.add_links(run_id, [link.model_dump() for link in body.links])}


@router.put(
    "/{run_id}/artifacts/{path:path}",
    response_model=ArtifactOut,
    status_code=201,
    summary="Upload an artifact (the raw request body)",
    responses=errors(
        409, notes={409: "The path clashes with an artifact (a file where a directory is, or the reverse)."}
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The file's bytes, streamed to disk (up to `artifact_max_bytes`).",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_artifact(
    run_id: str, path: str, request: Request, svc: RunService = Depends(service)
) -> ArtifactRow:
    # async because the body is streamed; the store and file work go to the thread pool.
    rel = artifact_relpath(path)
    full_id = await run_in_threadpool(svc.resolve_id, run_id)  # refuse before receiving the body
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        async for chunk in request.stream():
            spool.write(chunk)  # memory, or one chunk to the page cache once it has spilled
        spool.seek(0)
        return await run_in_threadpool(svc.write_artifact, full_id, rel, spool)


@router.get(
    "/{run_id}/artifacts/{path:path}",
    response_class=FileResponse,
    summary="Download an artifact",
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_artifact(run_id: str, path: str, svc: RunService = Depends(service)) -> FileResponse:
    file, art = svc.artifact_file(run_id, path)
    # A user's file is always a download, never a page on the dashboard's origin (it could be
    # HTML or SVG with a script, uploaded by a developer for an admin to open).
    media_type = served_type(mimetypes.guess_type(file.name)[0] or "application/octet-stream")
    headers = {**download_headers(file.name), "x-shipyard-sha256": art["sha256"]}
    return FileResponse(file, media_type=media_type, headers=headers)
