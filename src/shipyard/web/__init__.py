"""The dashboard: server-rendered pages (Starlette + Jinja2) served by ``shipyard up`` at ``/``.

Pages live in page modules (``PAGE_MODULES``), each exporting ``routes``: a list of Starlette
routes. A module that is not installed is skipped, so pages land one module at a time. Charts are
Plotly.js from the installed ``plotly`` package; pages load nothing from other hosts.
See ``web/README.md`` for how to add a page and test it in Chromium.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route, get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipyard.errors import ShipyardError, error_json
from shipyard.gateway.auth import CsrfGuard
from shipyard.gateway.http_headers import PAGE_HEADERS, DefaultHeaders

log = logging.getLogger("shipyard.web")

PAGE_MODULES = (
    "shipyard.web.traffic_pages",  # overview, traces, trace
    "shipyard.web.performance_pages",  # where time and money go
    "shipyard.web.prompt_pages",  # prompts, and models, routes, providers under /registry
    "shipyard.web.dataset_pages",  # datasets
    "shipyard.web.run_pages",  # runs, compare
    "shipyard.web.eval_pages",  # evals, eval reports
    "shipyard.web.monitor_pages",  # drift, alerts
    "shipyard.web.security_pages",  # login, keys, audit
)

# Reachable without a session: the login page and what it needs to render.
OPEN_PATHS = ("/login", "/static/", "/favicon.ico")
ADMIN_PATHS = ("/keys", "/audit")


def _wants_html(request: Request) -> bool:
    """A browser navigating (not an API client that strayed onto a dashboard path)."""
    if request.method not in ("GET", "HEAD") or request.url.path.startswith(("/v1/", "/api/")):
        return False
    return "text/html" in request.headers.get("accept", "")


def _json_error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    param: Any = None,
    code: str | None = None,
) -> Response:
    return Response(
        error_json(message, type_, param, code), status_code=status, media_type="application/json"
    )


def _not_found_message(request: Request) -> str:
    if request.url.path.startswith("/v1"):
        return (
            f"no endpoint at {request.method} {request.url.path}; the gateway serves "
            "/v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models"
        )
    return f"no page at {request.url.path}; the dashboard starts at /"


def _error_page(request: Request, status: int, title: str, message: str) -> Response:
    from shipyard.web.common import render

    return render(
        request,
        "error.html",
        {"status": status, "title": title, "message": message},
        status=status,
        active="",
    )


async def _on_shipyard_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ShipyardError)
    if not _wants_html(request):
        return _json_error(exc.status, str(exc), exc.type, exc.param, exc.code)
    title = "Not found" if exc.status == 404 else "Cannot show this page"
    return _error_page(request, exc.status, title, exc.message)


def _allowed_elsewhere(request: Request) -> set[str]:
    """Methods the enclosing app's other routes accept on this path. The dashboard is mounted at
    ``/`` after them, so it matches every path; without this a GET on a POST-only endpoint such as
    ``/v1/chat/completions`` would get the dashboard's 404 instead of the app's 405."""
    outer = request.scope.get("router")
    methods: set[str] = set()
    if outer is None or outer is request.app.router:
        return methods
    path = get_route_path(request.scope)
    for route in getattr(outer, "routes", ()):
        if isinstance(route, Route) and route.path_regex.match(path) and route.methods:
            methods |= route.methods
    return methods


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    allowed = _allowed_elsewhere(request) if exc.status_code == 404 else set()
    if allowed:
        message = f"{request.method} is not allowed on {request.url.path}"
        response = _json_error(405, message)
        response.headers["allow"] = ", ".join(sorted(allowed))
        return response
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = _not_found_message(request)
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    if not _wants_html(request):
        return _json_error(exc.status_code, message)
    title = "Page not found" if exc.status_code == 404 else f"HTTP {exc.status_code}"
    return _error_page(request, exc.status_code, title, message)


class _Unexpected:
    """Turns an unexpected exception into a 500 page (or JSON error) and logs it once.

    Inside the app's middleware stack, so the exception stops here instead of reaching Starlette's
    outermost handler, which would re-raise it through the gateway app into the server's log too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise
            request = Request(scope, receive)
            log.exception("unexpected error on %s %s", request.method, request.url.path)
            message = f"internal error ({type(exc).__name__}); see the server log"
            if _wants_html(request):
                response = _error_page(request, 500, "Something went wrong", message)
            else:
                response = _json_error(500, message, "api_error")
            await response(scope, receive, send)


class RequireLogin:
    """Every dashboard page needs a session (or an `Authorization: Bearer` key) of role viewer or
    above; `/keys` and `/audit` need admin, and changes (POST) need developer. A browser without a
    session is sent to `/login`; an API client gets a JSON 401. Paths under `/v1/` and `/api/` only
    reach the dashboard when nothing else matched them, so they keep their 404 and 405 answers."""

    def __init__(self, app: ASGIApp, platform: Any) -> None:
        self.app = app
        self.platform = platform

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(OPEN_PATHS) or path.startswith(("/v1/", "/api/")):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        response = self._refuse(request)
        if response is None:
            await self.app(scope, receive, send)
            return
        refused = scope.get("state", {}).get("refused_for")
        if refused is not None:  # an authenticated key without the role: audited, as in /api
            await run_in_threadpool(
                self.platform.auth.refused,
                refused[0],
                request.client.host if request.client else None,
                request.method,
                request.url.path,
                refused[1],
            )
        await response(scope, receive, send)

    def _refuse(self, request: Request) -> Response | None:
        from starlette.responses import RedirectResponse

        from shipyard.errors import Unauthorized

        try:
            principal = self.platform.auth.from_headers(request.headers)
        except Unauthorized as exc:
            principal, reason = None, exc.message
        else:
            reason = "log in with an API key"
        if principal is None:
            if _wants_html(request):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)
            return _json_error(401, f"the dashboard needs a session: {reason}", "authentication_error")
        needed = "viewer"
        if request.url.path.startswith(ADMIN_PATHS):
            needed = "admin"
        elif request.method not in ("GET", "HEAD") and request.url.path != "/logout":
            needed = "developer"
        request.scope.setdefault("state", {})["principal"] = principal
        if principal.at_least(needed):
            return None
        request.scope["state"]["refused_for"] = (principal, needed)
        message = (
            f"key `{principal.name}` has role `{principal.role}`; this page needs `{needed}` or above"
            if principal.role != "client"
            else f"key `{principal.name}` has role `client`, which calls the gateway only"
        )
        if _wants_html(request):
            return _error_page(request, 403, "Not allowed", message)
        return _json_error(403, message, "permission_error")


async def _favicon(request: Request) -> Response:
    from shipyard.web.assets import LONG_CACHE
    from shipyard.web.common import STATIC

    return FileResponse(
        STATIC / "favicon.svg", media_type="image/svg+xml", headers={"cache-control": LONG_CACHE}
    )


def page_routes() -> list[BaseRoute]:
    """Every page module's routes, in ``PAGE_MODULES`` order."""
    routes: list[BaseRoute] = []
    for name in PAGE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        routes.extend(module.routes)
    return routes


def create_web(platform: Any) -> Starlette:
    """The dashboard as an ASGI app; ``shipyard.server`` mounts it at ``/`` after every other route."""
    from shipyard.web.assets import CachedStatic, plotly_js
    from shipyard.web.common import STATIC

    routes: list[BaseRoute] = [
        Route("/static/vendor/plotly.min.js", plotly_js, methods=["GET", "HEAD"]),
        Mount("/static", app=CachedStatic(directory=str(STATIC)), name="static"),
        Route("/favicon.ico", _favicon, methods=["GET", "HEAD"]),
        *page_routes(),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            ShipyardError: _on_shipyard_error,
            HTTPException: _on_http_error,
        },
        middleware=[
            Middleware(DefaultHeaders, headers=PAGE_HEADERS),
            Middleware(_Unexpected),
            Middleware(CsrfGuard),
            Middleware(RequireLogin, platform=platform),
        ],
    )
    app.state.platform = platform
    return app
