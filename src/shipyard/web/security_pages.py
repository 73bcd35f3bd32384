"""Security pages: ``/login`` and ``/logout`` (a dashboard session from an API key), ``/keys``
(list, create, revoke; role admin) and ``/audit`` (the audit log with filters and a chart of changes
per day; role admin). The login gate itself is ``RequireLogin`` in ``web/__init__.py``."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from shipyard.errors import ShipyardError, Unauthorized
from shipyard.gateway.auth import SESSION_COOKIE, actor_of, session_of
from shipyard.store import audit, keys
from shipyard.web.common import blocking, platform_of, render, store_of

AUDIT_PAGE = 100
# One colour per kind of change; red is kept for refused attempts.
FAMILY_COLORS = {
    "key": "#1f77b4",
    "alias": "#9467bd",
    "route": "#2ca02c",
    "prompt": "#ff7f0e",
    "model": "#17becf",
    "provider": "#8c564b",
    "denied": "#d62728",
}


def safe_next(value: str | None) -> str:
    """Only a path on this server (no `//host`, no scheme): an open redirect otherwise."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body())[: 64 * 1024].decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _cookie_headers(request: Request, value: str, max_age: int) -> dict[str, str]:
    secure = "; Secure" if request.url.scheme == "https" else ""
    attributes = f"Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    return {"set-cookie": f"{SESSION_COOKIE}={value}; {attributes}"}


async def login_page(request: Request) -> Response:
    return render(
        request, "security/login.html", {"next": safe_next(request.query_params.get("next")), "error": None}
    )


async def login(request: Request) -> Response:
    form = await _form(request)
    nxt = safe_next(form.get("next"))
    secret = form.get("key", "").strip()
    auth = platform_of(request).auth
    try:
        if not secret:
            raise Unauthorized("paste an API key (`sk-shp-…`)")
        cookie, principal = await blocking(auth.session_cookie, secret)
        if principal.role == "client":
            raise Unauthorized(
                f"key `{principal.name}` has role `client`, which calls the gateway only; "
                "the dashboard needs a key with role viewer, developer or admin"
            )
    except ShipyardError as exc:
        return render(request, "security/login.html", {"next": nxt, "error": exc.message}, status=401)
    response = RedirectResponse(nxt, status_code=303)
    response.headers.update(_cookie_headers(request, cookie, int(auth.session_ttl)))
    return response


async def logout(request: Request) -> Response:
    cookie = session_of(request.headers)
    if cookie:
        await blocking(platform_of(request).auth.end_session, cookie)
    response = RedirectResponse("/login", status_code=303)
    response.headers.update(_cookie_headers(request, "", 0))
    return response


# -- keys ---------------------------------------------------------------------------------------------
async def keys_page(
    request: Request, created: dict[str, Any] | None = None, error: str | None = None
) -> Response:
    show_revoked = request.query_params.get("revoked") == "1"
    records = await blocking(keys.list_keys, store_of(request), show_revoked)
    runtime = platform_of(request).runtime
    routes = sorted([*runtime.routes, *runtime.embedding_models])
    return render(
        request,
        "security/keys.html",
        {
            "keys": [r.to_dict() for r in records],
            "routes": routes,
            "roles": keys.ROLES,
            "created": created,
            "error": error,
            "show_revoked": show_revoked,
        },
        status=400 if error else 200,
        headers={"cache-control": "no-store"},
    )


async def create_key(request: Request) -> Response:
    form = await _form(request)
    principal = request.state.principal
    actor = actor_of(principal, request.client.host if request.client else None)
    routes = [r.strip() for r in form.get("routes", "").split(",") if r.strip()] or None
    days = form.get("expires_in_days", "").strip()
    expires = None
    if days:
        try:
            expires = time.time() + float(days) * 86400
        except ValueError:
            return await keys_page(request, error="`expires in days` must be a number of days, e.g. 30")
    try:
        record, secret = await blocking(
            keys.create,
            store_of(request),
            form.get("name", ""),
            form.get("role", "client"),
            actor,
            routes=routes,
            expires_at=expires,
        )
    except ShipyardError as exc:
        return await keys_page(request, error=exc.message)
    platform_of(request).auth.invalidate()
    return await keys_page(request, created={**record.to_dict(), "key": secret})


async def revoke_key(request: Request) -> Response:
    key_id = request.path_params["key_id"]
    principal = request.state.principal
    store = store_of(request)
    try:
        record = await blocking(keys.get, store, key_id)
        if record.role == "admin" and record.active and await blocking(keys.count_admins, store) <= 1:
            return await keys_page(
                request, error=f"`{key_id}` is the last admin key; create another admin key first"
            )
        await blocking(
            keys.revoke, store, key_id, actor_of(principal, request.client.host if request.client else None)
        )
    except ShipyardError as exc:
        return await keys_page(request, error=exc.message)
    platform_of(request).auth.invalidate()
    return RedirectResponse("/keys", status_code=303)


# -- audit --------------------------------------------------------------------------------------------
def _audit_chart(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Changes per day, stacked by action family (key, alias, route…), denied attempts in red."""
    if not rows:
        return None
    from datetime import UTC, datetime

    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        day = datetime.fromtimestamp(r["at"], UTC).strftime("%Y-%m-%d")
        family = "denied" if r["outcome"] == "denied" else r["action"].split(".")[0]
        counts.setdefault(family, {}).setdefault(day, 0)
        counts[family][day] += 1
    days = sorted({d for c in counts.values() for d in c})
    traces = [
        {
            "type": "bar",
            "name": family,
            "x": days,
            "y": [c.get(d, 0) for d in days],
            "marker": {"color": FAMILY_COLORS.get(family, "#7f7f7f")},
        }
        for family, c in sorted(counts.items())
    ]
    return {
        "kind": "plotly",
        "data": traces,
        "layout": {
            "barmode": "stack",
            "xaxis": {"type": "category"},
            "yaxis": {"title": {"text": "entries"}},
        },
    }


async def audit_page(request: Request) -> Response:
    q = request.query_params
    filters = {k: q.get(k) or None for k in ("actor", "action", "target", "outcome")}
    if filters["outcome"] not in (None, "ok", "denied"):
        filters["outcome"] = None
    before_id = q.get("before_id")
    store = store_of(request)
    # The badge says what `shipyard audit verify` would say now: the monitor re-reads every entry
    # (an edit to an old one must show) and recomputes the hashes of those it has not verified.
    state = request.app.state
    if getattr(state, "audit_monitor", None) is None:
        state.audit_monitor = audit.Monitor()
    rows, chain = await asyncio.gather(
        blocking(
            audit.query,
            store,
            actor=filters["actor"],
            action=filters["action"],
            target=filters["target"],
            outcome=filters["outcome"],
            before_id=int(before_id) if before_id and before_id.isdigit() else None,
            limit=AUDIT_PAGE,
        ),
        blocking(state.audit_monitor.check, store),
    )
    older = None
    if len(rows) == AUDIT_PAGE:
        older = "/audit?" + urlencode(
            {**{k: v for k, v in filters.items() if v}, "before_id": rows[-1]["id"]}
        )
    return render(
        request,
        "security/audit.html",
        {
            "rows": rows,
            "filters": filters,
            "older": older,
            "chart": _audit_chart(rows),
            "chain": chain,
        },
    )


routes = [
    Route("/login", login_page, methods=["GET", "HEAD"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/keys", keys_page, methods=["GET", "HEAD"]),
    Route("/keys", create_key, methods=["POST"]),
    Route("/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
    Route("/audit", audit_page, methods=["GET", "HEAD"]),
]
