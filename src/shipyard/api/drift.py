"""``/api/drift``: drift reports of routes, and on-demand checks. Handlers are plain ``def``
(FastAPI runs them in its thread pool): a check reads the store and computes for about a second."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from shipyard.api import deps, pages
from shipyard.api.openapi import errors
from shipyard.api.pages import BIGINT, Page
from shipyard.errors import InvalidRequest
from shipyard.monitoring import drift as svc
from shipyard.store import drift as q
from shipyard.store.db import Store
from shipyard.times import LATEST_TIME

router = APIRouter(prefix="/drift", tags=["drift"])

_SPEC = (
    "Window spec: `1h`, `7d offset 1d`, `2026-11-01T00:00..2026-11-08T00:00` (UTC unless an offset is "
    "given), or `dataset:NAME@v2`."
)


class RunDriftRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    route: str = Field(min_length=1, description="The route whose traffic is checked.")
    reference: str = Field(svc.DEFAULT_REFERENCE, description="Reference sample. " + _SPEC)
    current: str = Field(svc.DEFAULT_CURRENT, description="Current sample. " + _SPEC)
    alpha: float = Field(svc.DEFAULT_ALPHA, gt=0, lt=1, description="Level after Bonferroni correction.")
    max_samples: int = Field(svc.DEFAULT_MAX_SAMPLES, ge=5, le=20000, description="Cap per sample.")
    min_samples: int = Field(
        svc.DEFAULT_MIN_SAMPLES, ge=5, description="Fewer traces: 400 insufficient_samples."
    )
    psi_threshold: float | None = Field(
        svc.DEFAULT_PSI_THRESHOLD,
        gt=0,
        description="PSI at or above this means drift; null: PSI does not vote.",
    )
    seed: int = Field(0, ge=0, description="Seeds sampling, permutations and clustering.")


class DriftSummaryOut(BaseModel):
    id: int
    route: str
    created_at: float
    reference: dict[str, Any] = Field(description="How the reference sample was chosen, resolved.")
    current: dict[str, Any]
    n_reference: int
    n_current: int
    drifted: bool
    reasons: list[str] = Field(description="The tests that found drift.")
    metrics: dict[str, float] = Field(description="Flat numbers; alert rules use them as `drift.<key>`.")


class DriftReportOut(BaseModel):
    id: int
    route: str
    created_at: float
    reference: dict[str, Any]
    current: dict[str, Any]
    n_reference: int
    n_current: int
    drifted: bool
    results: dict[str, Any] = Field(
        description="Every test with statistic and p-value, skipped tests, topics."
    )
    metrics: dict[str, float]


def _check_window(spec: str, field: str, now: float) -> None:
    """A duration window reaches back from now: one of a million days would start before 1970,
    which no trace and no date in the report can hold."""
    parsed = svc.parse_spec(spec, field)
    if parsed.kind == "dataset":
        return
    since, until = parsed.bounds(now)
    if not 0 <= since <= until <= LATEST_TIME:
        raise InvalidRequest(
            f"`{field}`: the window `{spec}` does not lie between 1970 and 9999; use a shorter duration "
            "or offset, or a time range like `2026-11-01T00:00..2026-11-08T00:00`",
            param=field,
        )


@router.get("", response_model=Page[DriftSummaryOut], summary="List drift reports, newest first")
def list_drift(
    route: str | None = Query(None, description="Only this route's reports."),
    limit: int = pages.limit_query(50, 1000),
    cursor: str | None = pages.cursor_query(),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    position = pages.decode(cursor, "drift", (float, int))
    before = (position[0], position[1]) if position else None
    rows = q.list_reports(store, route, limit=limit + 1, before=before, with_results=True)
    summaries = [svc.DriftReport.from_row(r).summary() for r in rows]
    return pages.page(summaries, limit, "drift", lambda r: (r["created_at"], r["id"]))


@router.get("/{report_id}", response_model=DriftReportOut, summary="One drift report with every test")
def get_drift(report_id: int = Path(ge=1, le=BIGINT), store: Store = Depends(deps.store)) -> dict[str, Any]:
    return svc.get_report(store, report_id).to_dict()


@router.post(
    "/run",
    response_model=DriftReportOut,
    status_code=201,
    summary="Run a drift check now and save its report",
    responses=errors(
        404, notes={404: "A `dataset:NAME@v…` window names a dataset or version that does not exist."}
    ),
)
def run_drift(body: RunDriftRequest, store: Store = Depends(deps.store)) -> dict[str, Any]:
    now = time.time()
    _check_window(body.reference, "reference", now)
    _check_window(body.current, "current", now)
    # The request's fields are run_drift's arguments, one for one (as a scheduled check's are).
    return svc.run_drift(store, **body.model_dump()).to_dict()
