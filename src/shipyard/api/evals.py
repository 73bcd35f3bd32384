"""Eval endpoints: start a suite run (in the background), read its summary, results and
reports, and promote a prompt through a suite."""

from __future__ import annotations

import threading
from typing import Any

import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from shipyard.api import deps, pages
from shipyard.api.openapi import errors
from shipyard.api.pages import Page
from shipyard.errors import InvalidRequest, NotFound
from shipyard.gateway.http_headers import REPORT_HEADERS
from shipyard.settings import Settings
from shipyard.store.audit import Actor
from shipyard.store.db import Store

router = APIRouter(prefix="/evals", tags=["evals"])
REPORTS = {
    "report.html": "text/html",
    "report.md": "text/markdown",
    "junit.xml": "application/xml",
    "compare.html": "text/html",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartRun(Strict):
    suite: str = Field(
        ...,
        description="The suite as YAML. Datasets must be inline `cases` or a `registry` "
        "version (the server does not read files named by a request).",
    )
    baseline: str | None = Field(None, description="Run id (prefix) or prompt alias to compare with.")
    fail_on: str = "auto"
    use_cache: bool = True


class Promote(Strict):
    prompt: str
    alias: str
    suite: str = Field(..., description="The suite as YAML (inline cases or a registry dataset).")
    candidate: str = "current"
    reason: str | None = None


def _runner(store: Store = Depends(deps.store), settings: Settings = Depends(deps.settings)) -> Any:
    from shipyard.evals.runner import EvalRunner

    return EvalRunner(settings, store)


def _suite(text: str) -> Any:
    from shipyard.evals.suite import parse_suite

    suite = parse_suite(text, "request body")
    if suite.spec.dataset.file is not None:
        raise InvalidRequest(
            "suites sent to the API use inline `cases` or a `registry` dataset, not `file`", param="suite"
        )
    return suite


@router.post(
    "/runs",
    status_code=202,
    summary="Start a suite run in the background; returns its run id",
    responses=errors(404, notes={404: "The suite names a dataset, prompt or baseline that does not exist."}),
)
def start_run(
    body: StartRun, runner: Any = Depends(_runner), actor: str = Depends(deps.actor)
) -> dict[str, Any]:
    from shipyard.evals.runner import RunOptions

    suite = _suite(body.suite)
    started = threading.Event()
    state: dict[str, Any] = {}

    def on_start(run_id: str) -> None:
        state["run_id"] = run_id
        started.set()

    def work() -> None:
        try:
            runner.run(
                suite,
                RunOptions(
                    baseline=body.baseline,
                    fail_on=body.fail_on,
                    use_cache=body.use_cache,
                    progress=False,
                    actor=actor,
                    on_start=on_start,
                ),
            )
        except BaseException as exc:  # reported to the caller if the run never started
            state["error"] = exc
            started.set()

    threading.Thread(target=work, name=f"eval-{suite.name}", daemon=True).start()
    started.wait(120)
    if "run_id" not in state:
        error = state.get("error")
        if error is not None:
            raise error
        raise InvalidRequest("the run did not start within 120 s")
    return {"run_id": state["run_id"], "status": "running", "suite": suite.name}


@router.get("/runs", response_model=Page[dict[str, Any]], summary="Eval runs, newest first")
def list_runs(
    suite: str | None = None,
    limit: int = pages.limit_query(50, 500),
    cursor: str | None = pages.cursor_query(),
    runner: Any = Depends(_runner),
) -> dict[str, Any]:
    position = pages.decode(cursor, "eval-runs", (float, str))
    tags = {"kind": "eval", **({"suite": suite} if suite else {})}
    before = (position[0], position[1]) if position else None
    rows = runner.runs.list_runs(tags=tags, limit=limit + 1, before=before)
    return pages.page(rows, limit, "eval-runs", lambda r: (r["start_time"], r["run_id"]))


@router.get("/runs/{run_id}", summary="An eval run: status, gate, summary, comparison")
def get_run(run_id: str, runner: Any = Depends(_runner)) -> dict[str, Any]:
    detail = runner.runs.get(run_id)
    if (detail.get("tags") or {}).get("kind") != "eval":
        raise NotFound(f"run `{detail['run_id']}` is not an eval run", param="run_id")
    out: dict[str, Any] = {"run": detail, "summary": None, "comparison": None}
    paths = {a["path"] for a in detail["artifacts"]}
    if "summary.json" in paths:
        out["summary"] = orjson.loads(runner.runs.read_artifact(detail["run_id"], "summary.json"))
    if "comparison.json" in paths:
        out["comparison"] = orjson.loads(runner.runs.read_artifact(detail["run_id"], "comparison.json"))
    tags = detail.get("tags") or {}
    out["gate"] = (
        {"passed": tags.get("gate") == "passed", "reason": tags.get("gate_reason")}
        if "gate" in tags
        else None
    )
    return out


@router.get(
    "/runs/{run_id}/results",
    response_model=Page[dict[str, Any]],
    summary="Result lines (one per case × target × repeat), in the order they were written",
    description="Pages are keyed by line: a run still going only adds lines after the last.",
)
def results(
    run_id: str,
    limit: int = pages.limit_query(100, 1000),
    cursor: str | None = pages.cursor_query(),
    runner: Any = Depends(_runner),
) -> dict[str, Any]:
    start = pages.index(cursor, "eval-results")
    rid = runner.runs.resolve_id(run_id)
    path = runner.runs.artifact_dir(rid) / "results.jsonl"
    if not path.exists():
        path = runner.work_dir(rid) / "results.jsonl"  # still running
    if not path.exists():
        raise NotFound(f"run `{rid}` has no results yet", param="run_id")
    lines: list[Any] = []
    more = False
    with path.open("rb") as f:
        seen = 0
        for raw in f:
            if not raw.strip():
                continue
            if seen >= start + limit:
                more = True
                break
            if seen >= start:
                try:
                    lines.append(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    pass  # a line cut short by a crash: counted, not shown
            seen += 1
    return {"data": lines, "next": pages.encode("eval-results", (start + limit,)) if more else None}


@router.get("/runs/{run_id}/{report}", summary="A report: report.html, report.md, junit.xml or compare.html")
def get_report(run_id: str, report: str, runner: Any = Depends(_runner)) -> Response:
    if report not in REPORTS:
        raise NotFound(f"no report `{report}`; one of {', '.join(REPORTS)}", param="report")
    rid = runner.runs.resolve_id(run_id)
    # A report is a run artifact, which a developer key can overwrite: no script, in a sandbox.
    return Response(
        runner.runs.read_artifact(rid, report), media_type=REPORTS[report], headers=REPORT_HEADERS
    )


@router.post(
    "/promote",
    summary="Move a prompt alias only if the candidate passes the suite",
    responses=errors(
        404, notes={404: "The prompt, its candidate version or the suite's dataset does not exist."}
    ),
)
def promote(
    body: Promote, runner: Any = Depends(_runner), actor: Actor = Depends(deps.audit_actor)
) -> dict[str, Any]:
    from shipyard.evals.promote import promote_prompt

    result = promote_prompt(
        runner, _suite(body.suite), body.prompt, body.alias, body.candidate, actor=actor, reason=body.reason
    )
    return result.to_dict()
