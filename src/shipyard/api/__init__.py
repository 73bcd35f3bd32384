"""The admin API under ``/api``: JSON for the registry, datasets and runs, documented in the
OpenAPI schema at ``/api/openapi.json``. Routers are thin: each calls the service layer in
``shipyard.registry`` or a query module in ``shipyard.store``. Lists answer one envelope with cursor
pagination (``api/pages.py``); errors use the same ``{"error": {...}}`` shape as the gateway, and
the schema documents every one of them (``api/openapi.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from shipyard import __version__
from shipyard.api.body_limit import BodyLimit
from shipyard.api.deps import authorize
from shipyard.api.openapi import document_errors
from shipyard.errors import ShipyardError, error_json
from shipyard.gateway.auth import CsrfGuard
from shipyard.gateway.http_headers import API_HEADERS, DefaultHeaders


def _error(
    status: int, message: str, type_: str, param: str | None = None, code: str | None = None
) -> Response:
    return Response(
        error_json(message, type_, param, code), status_code=status, media_type="application/json"
    )


ROUTERS = (
    "shipyard.api.registry",
    "shipyard.api.datasets",
    "shipyard.api.runs",
    "shipyard.api.evals",
    "shipyard.api.alerts",
    "shipyard.api.drift",
    "shipyard.api.monitoring",
    "shipyard.api.keys",
    "shipyard.api.audit",
)


def create_api(platform: Any) -> FastAPI:
    import importlib

    api = FastAPI(
        title="Shipyard admin API",
        version=__version__,
        description="Versioned prompts, model configs, routes and providers; datasets; experiment runs; "
        "traces, monitoring, keys and the audit log. Every list answers "
        '`{"data": [...], "next": "<cursor>" | null}`: send `next` back as `cursor` (with the same '
        "filters) for the following page. Every error answers "
        '`{"error": {"message", "type", "param", "code"}}`.',
        docs_url=None,  # Swagger UI loads its assets from a CDN; the schema is at /api/openapi.json
        redoc_url=None,
        dependencies=[Depends(authorize)],
    )
    api.state.platform = platform
    # Innermost of the middlewares, so that its 413 gets the same headers as every answer.
    settings = platform.settings
    api.add_middleware(
        BodyLimit, limit=settings.api_max_body_bytes, artifact_limit=settings.artifact_max_bytes
    )
    # No /api response is a page: sandboxed and nosniff unless a route says otherwise.
    api.add_middleware(CsrfGuard)  # the dashboard's scripts call /api with its session cookie
    api.add_middleware(DefaultHeaders, headers=API_HEADERS)

    @api.exception_handler(ShipyardError)
    async def on_shipyard_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ShipyardError)
        # str() carries a ConfigError's list of problems
        return _error(exc.status, str(exc), exc.type, exc.param, exc.code)

    @api.exception_handler(UnicodeEncodeError)
    async def on_unencodable(request: Request, exc: Exception) -> Response:
        # JSON may carry a lone surrogate (`\ud800`), which no store can hold as text.
        return _error(
            400,
            "the request holds a lone surrogate (like \\ud800), which is not text; send valid UTF-8",
            "invalid_request_error",
            None,
        )

    @api.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = str(exc.detail)
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"no endpoint at {request.method} {request.url.path}; see /api/openapi.json for the API"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return _error(exc.status_code, message, "invalid_request_error")

    @api.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        return _error(
            400,
            f"`{field}`: {first.get('msg')}" if field else str(first.get("msg")),
            "invalid_request_error",
            field,
        )

    for name in ROUTERS:
        api.include_router(importlib.import_module(name).router)

    def schema() -> dict[str, Any]:
        if api.openapi_schema is None:
            api.openapi_schema = document_errors(FastAPI.openapi(api))
        return api.openapi_schema

    api.openapi = schema  # type: ignore[method-assign]
    return api
