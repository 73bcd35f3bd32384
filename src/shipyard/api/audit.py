"""`/api/audit`: the audit log of admin changes (role `admin`), newest first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from shipyard.api import deps, pages
from shipyard.api.pages import Page
from shipyard.store import audit
from shipyard.store.db import Store
from shipyard.times import parse_time

router = APIRouter(prefix="/audit", tags=["audit"])


class AuditEntry(BaseModel):
    id: int
    at: float
    actor: str
    role: str | None
    action: str
    target: str
    outcome: str
    before: Any
    after: Any
    detail: str | None
    source: str | None


@router.get("", response_model=Page[AuditEntry], summary="Audit entries, newest first")
def list_audit(
    actor: str | None = Query(None, description="Substring of who acted (key name or id, CLI user)."),
    action: str | None = Query(None, description="An action or its prefix: `key`, `alias.set`, `route`…"),
    target: str | None = Query(None, description="Substring of what was changed, e.g. `prompt:support`."),
    outcome: str | None = Query(None, pattern="^(ok|denied)$", description="ok or denied."),
    since: str | None = Query(None, description="A duration (`24h`, `7d`) or an ISO time."),
    limit: int = pages.limit_query(100, 1000),
    cursor: str | None = pages.cursor_query(),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    position = pages.decode(cursor, "audit", (int,))
    rows = audit.query(
        store,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        since=parse_time(since, "since"),
        before_id=position[0] if position else None,
        limit=limit + 1,
    )
    return pages.page(rows, limit, "audit", lambda e: (e["id"],))


class AuditAnchor(BaseModel):
    at: float
    when: str
    entries: int
    last_id: int
    last_hash: str


class AuditVerdict(BaseModel):
    entries: int
    intact: bool
    status: str = Field(description="intact, broken, key_missing or key_wrong")
    first_broken_id: int | None = Field(description="the first entry found changed, missing or uncheckable")
    problem: str | None = Field(description="what is wrong, and for a key problem what to do")
    legacy_entries: int = Field(description="entries from before the keyed chain (plain SHA-256)")
    anchors: int = Field(description="anchors in this server's home the table was compared with")
    anchor: AuditAnchor | None = Field(description="the newest of them")
    warning: str | None = None


@router.get(
    "/verify",
    response_model=AuditVerdict,
    summary="Recompute the keyed hash chain and compare it with the anchors: is the log intact?",
)
def verify_audit(store: Store = Depends(deps.store)) -> dict[str, Any]:
    verdict = audit.verify(store).as_dict()
    verdict["first_broken_id"] = verdict.pop("broken_at")
    verdict.pop("key")  # where the key file is: not for API clients
    return verdict
