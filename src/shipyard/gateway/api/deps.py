"""What API handlers get from the running platform, and who is calling."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from shipyard.errors import Forbidden, Unauthorized
from shipyard.gateway.auth import Principal, actor_of, role_for_api
from shipyard.settings import Settings
from shipyard.store import audit as audit_log
from shipyard.store.audit import Actor
from shipyard.store.db import Store


def platform(request: Request) -> Any:
    return request.app.state.platform


def store(request: Request) -> Store:
    return platform(request).store


def settings(request: Request) -> Settings:
    return platform(request).settings


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def authorize(request: Request) -> Principal:
    """Every `/api` endpoint depends on this: a valid key (or dashboard session) whose role allows
    the method and path. A refused change is written to the audit log."""
    auth = platform(request).auth
    principal = auth.from_headers(request.headers)
    if principal is None:
        raise Unauthorized(
            "this endpoint needs an API key: send `Authorization: Bearer sk-shp-…` "
            "(`shipyard keys create NAME --role viewer` makes one)"
        )
    path = request.url.path.removeprefix(request.scope.get("root_path", ""))
    needed = role_for_api(request.method, path)
    if not principal.at_least(needed):
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            audit_log.record(
                platform(request).store,
                actor_of(principal, _client(request)),
                "request.denied",
                f"{request.method} {request.url.path}",
                outcome="denied",
                detail=f"role `{principal.role}` may not do this; it needs `{needed}` or above",
            )
        raise Forbidden(
            f"key `{principal.name}` has role `{principal.role}`; {request.method} {request.url.path} "
            f"needs role `{needed}` or above"
        )
    request.state.principal = principal
    return principal


def principal(request: Request) -> Principal:
    found: Principal = request.state.principal
    return found


def actor(request: Request) -> str:
    """Who is making a change, as registry versions and runs record it: the key's name and id."""
    return principal(request).actor


def audit_actor(request: Request) -> Actor:
    """Who is making a change, as the audit log records it (with the role and the client address)."""
    return actor_of(principal(request), _client(request))
