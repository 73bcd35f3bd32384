"""``/api/datasets``: versioned datasets over HTTP. Each handler validates its request with a
pydantic model (unknown fields rejected) and calls ``shipyard.registry.datasets``.

The service does blocking database work, so handlers are plain ``def`` (FastAPI runs them in its
thread pool) except import, which must await the raw body first and then hands the work to the
thread pool itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.concurrency import run_in_threadpool

from shipyard.api import deps, pages
from shipyard.api.openapi import errors
from shipyard.api.pages import BIGINT, Page
from shipyard.errors import InvalidRequest
from shipyard.registry import datasets as svc
from shipyard.store.db import Store

router = APIRouter(prefix="/datasets", tags=["datasets"])


# -- request models ---------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateDatasetRequest(_Strict):
    name: str = Field(description="1–128 letters, digits, `.`, `_` or `-`.")
    description: str | None = None


class ExampleIn(_Strict):
    input: dict[str, Any] | list[dict[str, Any]] = Field(
        description="Template variables (an object) or chat messages (a list of {role, content})."
    )
    expected: Any = None
    metadata: dict[str, Any] | None = None
    tags: list[str] | None = None


# Examples are checked by the service, whose errors name the example and the field in words
# ("examples[3]: `input` must be an object of template variables or a list of chat messages");
# the schema still documents their shape.
_EXAMPLES_SCHEMA = WithJsonSchema(
    {
        "type": "array",
        "items": ExampleIn.model_json_schema(),
        "description": "In order; the version's hash covers the order.",
    }
)


class CreateVersionRequest(_Strict):
    examples: Annotated[list[Any], _EXAMPLES_SCHEMA]
    message: str | None = None
    dedupe: bool = Field(False, description="Drop examples whose (input, expected) repeats an earlier one.")
    append: bool = Field(
        False, description="Put the examples after the latest version's instead of replacing."
    )


class FromTracesRequest(_Strict):
    route: str | None = None
    since: float | None = Field(None, description="Unix seconds: traces that started at or after this.")
    until: float | None = Field(None, description="Unix seconds: traces that started before this.")
    status: Literal["ok", "error"] | None = None
    prompt: str | None = Field(None, description="Only traces rendered from this prompt.")
    prompt_version: int | None = Field(None, ge=1, le=BIGINT)
    tag: str | None = Field(None, description="Only traces whose tags contain this one.")
    feedback: Literal["positive", "negative", "any", "none"] | None = Field(
        None, description="Only traces with positive (score >= 0.5), negative, any or no user feedback."
    )
    limit: int | None = Field(None, ge=1, le=BIGINT, description="At most this many traces (the newest).")
    scrub_pii: bool = Field(False, description="Replace e-mails, phones, cards, IBANs with typed markers.")
    dedupe: bool = False
    expected_from_output: bool = Field(True, description="The trace's answer becomes `expected`.")
    message: str | None = None


# -- response models --------------------------------------------------------------------------------
class DatasetVersionOut(BaseModel):
    dataset: str
    version: int
    hash: str = Field(description="sha256 over the examples in order (canonical JSON).")
    n_examples: int
    source: dict[str, Any] | None
    created_at: float
    created_by: str | None
    message: str | None


class DatasetOut(BaseModel):
    name: str
    description: str | None
    created_at: float
    n_versions: int
    latest: DatasetVersionOut | None


class WriteOut(BaseModel):
    version: DatasetVersionOut
    created: bool = Field(description="False when a version with the same content already existed.")
    dataset_created: bool
    duplicates_removed: int
    skipped: int = Field(description="from-traces: matched traces with no usable input.")


class ExampleOut(BaseModel):
    idx: int
    input: Any
    expected: Any
    metadata: dict[str, Any]
    tags: list[str]
    trace_id: str | None


# Writes answer 201 with a new version, or 200 with the existing version that has the same content.
_EXISTING: dict[int | str, dict[str, Any]] = {
    200: {"model": WriteOut, "description": "A version with exactly these examples already existed."}
}


def _written(result: svc.WriteResult, response: Response) -> WriteOut:
    response.status_code = 201 if result.created else 200
    return WriteOut.model_validate(result.to_dict())


def _ref(name: str, version: str) -> str:
    return f"{name}@{version}"


# -- endpoints --------------------------------------------------------------------------------------
@router.get("", response_model=Page[DatasetOut], summary="List datasets by name, with their latest version")
def list_datasets(
    limit: int = pages.limit_query(100, 1000),
    cursor: str | None = pages.cursor_query(),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    position = pages.decode(cursor, "datasets", (str,))
    found = [DatasetOut.model_validate(d.to_dict()) for d in svc.list_datasets(store)]
    return pages.page_after(found, lambda d: (d.name,), position, limit, "datasets")


@router.post(
    "",
    response_model=DatasetOut,
    status_code=201,
    summary="Create an empty dataset",
    responses=errors(409, notes={409: "A dataset of that name exists (`dataset_exists`)."}),
)
def create_dataset(body: CreateDatasetRequest, store: Store = Depends(deps.store)) -> DatasetOut:
    return DatasetOut.model_validate(svc.create_dataset(store, body.name, body.description).to_dict())


@router.get("/{name}", response_model=DatasetOut, summary="One dataset with its latest version")
def get_dataset(name: str, store: Store = Depends(deps.store)) -> DatasetOut:
    return DatasetOut.model_validate(svc.get_dataset(store, name).to_dict())


@router.get("/{name}/versions", response_model=Page[DatasetVersionOut], summary="The versions, oldest first")
def list_versions(
    name: str,
    limit: int = pages.limit_query(100, 1000),
    cursor: str | None = pages.cursor_query(),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    position = pages.decode(cursor, "dataset-versions", (int,))
    versions = [DatasetVersionOut.model_validate(v.to_dict()) for v in svc.list_versions(store, name)]
    return pages.page_after(versions, lambda v: (v.version,), position, limit, "dataset-versions")


_VERSION_HEADERS = {
    "x-shipyard-dataset-version": {"description": "The version served.", "schema": {"type": "integer"}},
    "x-shipyard-dataset-hash": {"description": "Its content hash.", "schema": {"type": "string"}},
}


@router.get(
    "/{name}/versions/{version}/examples",
    response_model=Page[ExampleOut],
    summary="A page of a version's examples, in order",
    description="`version` is a number (`3`), `v3` or `latest`. Pages are keyed by position, and a "
    "cursor keeps to the version its first page read: paging through `latest` while a new version "
    "is written finishes the version it started. The headers name the version served.",
    responses={200: {"headers": _VERSION_HEADERS}},
)
def get_examples(
    name: str,
    version: str,
    response: Response,
    limit: int = pages.limit_query(50, 1000),
    cursor: str | None = pages.cursor_query(),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    ref, start = _ref(name, version), 0
    position = pages.decode(cursor, "examples", (int, int))
    if position is not None:
        number, start = position
        if not (1 <= number < 10**18 and start >= 0):
            raise pages.not_a_cursor("examples")
        asked = svc.parse_ref(ref)[1]
        if asked not in (None, number):
            raise InvalidRequest(
                f"`cursor` continues version {number} of `{name}`, not version {asked}; send the `next` "
                "of a page of this version, or leave `cursor` out to start at its first example",
                param="cursor",
            )
        ref = _ref(name, str(number))
    found = svc.get_examples(store, ref, start, limit)
    info = found.version
    response.headers["x-shipyard-dataset-version"] = str(info.version)
    response.headers["x-shipyard-dataset-hash"] = info.hash
    examples = [ExampleOut.model_validate(e) for e in found.to_dict()["examples"]]
    end = examples[-1].idx + 1 if examples else found.total
    return {
        "data": examples,
        "next": pages.encode("examples", (info.version, end)) if end < found.total else None,
    }


@router.post(
    "/{name}/versions",
    response_model=WriteOut,
    status_code=201,
    responses=_EXISTING,
    summary="Add a version from examples",
    description="201 with the new version, or 200 with the existing one when a version of this "
    "dataset already has exactly these examples.",
)
def create_version(
    name: str,
    body: CreateVersionRequest,
    response: Response,
    store: Store = Depends(deps.store),
    actor: str = Depends(deps.actor),
) -> WriteOut:
    result = svc.create_version(
        store,
        name,
        body.examples,
        message=body.message,
        dedupe=body.dedupe,
        append=body.append,
        source={"type": "api"},
        actor=actor,
    )
    return _written(result, response)


_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file's text: JSONL, CSV or YAML as `format` says.",
        "content": {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}},
            "application/yaml": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}


@router.post(
    "/{name}/import",
    response_model=WriteOut,
    status_code=201,
    responses=_EXISTING,
    summary="Add a version from a JSONL, CSV or YAML document",
    description="Creates the dataset when it does not exist. Errors name the line and the field.",
    openapi_extra=_IMPORT_BODY,
)
async def import_examples(
    name: str,
    request: Request,
    response: Response,
    format: Literal["jsonl", "csv", "yaml"] = Query(..., description="How the body is written."),
    dedupe: bool = Query(False),
    append: bool = Query(False),
    message: str | None = Query(None),
    store: Store = Depends(deps.store),
    actor: str = Depends(deps.actor),
) -> WriteOut:
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"the body is not UTF-8 text (byte {exc.start}); save the file as UTF-8", param="body"
        ) from None
    result = await run_in_threadpool(
        svc.import_examples,
        store,
        name,
        text,
        format,
        dedupe=dedupe,
        append=append,
        message=message,
        actor=actor,
    )
    return _written(result, response)


@router.get(
    "/{name}/export",
    summary="A version as JSONL (one example per line)",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {"schema": {"type": "string"}}}}},
)
def export_jsonl(
    name: str,
    version: str = Query("latest", description="A number (`3`), `v3` or `latest`."),
    store: Store = Depends(deps.store),
) -> StreamingResponse:
    info, lines = svc.export_jsonl(store, _ref(name, version))
    return StreamingResponse(
        lines,
        media_type="application/x-ndjson",
        headers={
            "content-disposition": f'attachment; filename="{info.dataset}-v{info.version}.jsonl"',
            "x-shipyard-dataset-version": str(info.version),
            "x-shipyard-dataset-hash": info.hash,
        },
    )


@router.post(
    "/{name}/from-traces",
    response_model=WriteOut,
    status_code=201,
    responses=_EXISTING,
    summary="Add a version built from stored traces",
    description="Creates the dataset when it does not exist. Each example keeps its trace id.",
)
def from_traces(
    name: str,
    body: FromTracesRequest,
    response: Response,
    store: Store = Depends(deps.store),
    actor: str = Depends(deps.actor),
) -> WriteOut:
    selection = svc.TraceSelection(
        route=body.route,
        since=body.since,
        until=body.until,
        status=body.status,
        prompt=body.prompt,
        prompt_version=body.prompt_version,
        tag=body.tag,
        limit=body.limit,
        feedback=body.feedback,
    )
    result = svc.from_traces(
        store,
        name,
        selection,
        expected_from_output=body.expected_from_output,
        scrub_pii=body.scrub_pii,
        dedupe=body.dedupe,
        message=body.message,
        actor=actor,
    )
    return _written(result, response)
