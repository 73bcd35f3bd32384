"""`/api/keys`: create, list, change and revoke API keys (role `admin`)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from shipyard.api import deps, pages
from shipyard.api.pages import Page
from shipyard.config.schema import LimitsConfig
from shipyard.errors import InvalidRequest
from shipyard.gateway.auth import Principal
from shipyard.store import keys
from shipyard.store.audit import Actor
from shipyard.store.db import Store

router = APIRouter(prefix="/keys", tags=["keys"])


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        ..., min_length=1, max_length=128, description="What the key is for, e.g. `support-bot`."
    )
    role: str = Field("client", description="admin, developer, viewer or client.")
    routes: list[str] | None = Field(
        None, description="Routes the key may call on /v1; omitted or null: every route."
    )
    limits: LimitsConfig | None = Field(None, description="The key's own rate limits and budgets.")
    expires_in_days: float | None = Field(None, gt=0, description="Days until the key stops working.")


class KeyPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=128)
    role: str | None = None
    routes: list[str] | None = Field(
        None, description="New route scope; send `all_routes: true` to clear it."
    )
    all_routes: bool = Field(False, description="Let the key call every route.")
    limits: LimitsConfig | None = Field(None, description="New limits; `{}` removes them.")


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    role: str
    routes: list[str] | None
    limits: dict[str, Any] | None
    status: str
    created_at: float
    created_by: str | None
    expires_at: float | None
    revoked_at: float | None
    revoked_by: str | None
    last_used_at: float | None


class CreatedKey(KeyOut):
    key: str = Field(..., description="The secret. Shown only in this response: store it now.")


def _limits(value: LimitsConfig | None) -> dict[str, Any] | None:
    if value is None or value.empty():
        return None
    return value.model_dump(exclude_none=True)


def _check_routes(platform: Any, routes: list[str] | None) -> None:
    if routes is None:
        return
    known = set(platform.runtime.routes) | set(platform.runtime.embedding_models)
    unknown = [r for r in routes if r not in known]
    if unknown:
        raise InvalidRequest(
            f"`routes`: no route {', '.join(f'`{r}`' for r in unknown)}; known: {', '.join(sorted(known))}",
            param="routes",
        )


@router.post(
    "", response_model=CreatedKey, status_code=201, summary="Create a key (the secret is shown once)"
)
def create_key(
    body: KeyIn,
    store: Store = Depends(deps.store),
    platform: Any = Depends(deps.platform),
    actor: Actor = Depends(deps.audit_actor),
) -> dict[str, Any]:
    _check_routes(platform, body.routes)
    expires = time.time() + body.expires_in_days * 86400 if body.expires_in_days else None
    record, secret = keys.create(
        store,
        body.name,
        body.role,
        actor,
        routes=body.routes,
        limits=_limits(body.limits),
        expires_at=expires,
    )
    platform.auth.invalidate()
    return {**record.to_dict(), "key": secret}


@router.get("", response_model=Page[KeyOut], summary="Keys, oldest first (secrets are never shown again)")
def list_keys(
    include_revoked: bool = Query(False, description="Also list revoked keys."),
    limit: int = pages.limit_query(100, 1000),
    cursor: str | None = pages.cursor_query(),
    store: Store = Depends(deps.store),
) -> dict[str, Any]:
    position = pages.decode(cursor, "keys", (float, str))
    after = (position[0], position[1]) if position else None
    records = keys.list_keys(store, include_revoked, after=after, limit=limit + 1)
    return pages.page([k.to_dict() for k in records], limit, "keys", lambda k: (k["created_at"], k["id"]))


@router.get("/{key_id}", response_model=KeyOut, summary="One key")
def get_key(key_id: str, store: Store = Depends(deps.store)) -> dict[str, Any]:
    return keys.get(store, key_id).to_dict()


@router.patch("/{key_id}", response_model=KeyOut, summary="Change a key's name, role, routes or limits")
def patch_key(
    key_id: str,
    body: KeyPatch,
    store: Store = Depends(deps.store),
    platform: Any = Depends(deps.platform),
    actor: Actor = Depends(deps.audit_actor),
    me: Principal = Depends(deps.principal),
) -> dict[str, Any]:
    if key_id == me.key_id and body.role is not None and body.role != me.role:
        raise InvalidRequest("a key cannot change its own role; use another admin key", param="role")
    changes: dict[str, Any] = {"name": body.name, "role": body.role}
    if body.all_routes:
        changes["routes"] = None
    elif body.routes is not None:
        _check_routes(platform, body.routes)
        changes["routes"] = body.routes
    if body.limits is not None:
        changes["limits"] = _limits(body.limits)
    record = keys.update(store, key_id, actor, **changes)
    platform.auth.invalidate()
    return record.to_dict()


@router.delete("/{key_id}", response_model=KeyOut, summary="Revoke a key (it gets 401 from then on)")
def revoke_key(
    key_id: str,
    store: Store = Depends(deps.store),
    platform: Any = Depends(deps.platform),
    actor: Actor = Depends(deps.audit_actor),
    me: Principal = Depends(deps.principal),
) -> dict[str, Any]:
    if key_id == me.key_id:
        raise InvalidRequest(
            "a key cannot revoke itself through the API; revoke it with another admin key or "
            "`shipyard keys revoke`",
            param="key_id",
        )
    record = keys.get(store, key_id)
    if record.role == "admin" and record.active and keys.count_admins(store) <= 1:
        raise InvalidRequest(
            f"`{key_id}` is the last admin key; create another admin key before revoking it", param="key_id"
        )
    revoked = keys.revoke(store, key_id, actor)
    platform.auth.invalidate()
    return revoked.to_dict()
