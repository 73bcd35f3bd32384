"""What API handlers get from the running platform, and who is calling."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from shipyard.errors import Forbidden, Unauthorized
from shipyard.gateway.auth import Principal, actor_of, role_for_api
from shipyard.settings import Settings
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
    the method and path. A refused request, read or change, is written to the audit log (at most
    `auth.REFUSALS_PER_MINUTE` a minute per key)."""
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
        auth.refused(principal, _client(request), request.method, request.url.path, needed)
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
