"""The gateway's HTTP surface: the OpenAI-compatible ``/v1`` endpoints.

Handlers only parse, validate, check who is calling and hand over to
:class:`~shipyard.gateway.service.Gateway`; the server (``shipyard.server``) mounts them beside the
admin API, the dashboard and the probes. :class:`FastPath` sends the hot POSTs straight to their
handlers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from shipyard.errors import Forbidden, PayloadTooLarge, ShipyardError, Unauthorized
from shipyard.gateway import validation
from shipyard.gateway.anthropic_messages import messages_endpoint
from shipyard.gateway.auth import AuthService, Principal
from shipyard.gateway.service import Gateway
from shipyard.gateway.stages.cache import HIT_ATTR, MATCH_ATTR, SIMILARITY_ATTR
from shipyard.tracing.otlp import otlp_traces
from shipyard.tracing.spans import Trace

JSON = "application/json"
CACHE_HEADER = "x-shipyard-cache"  # hit | miss, on routes with a response cache
CACHE_MATCH_HEADER = "x-shipyard-cache-match"  # on a hit: exact, or semantic; similarity=0.93


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


def _trace_headers(trace: Trace) -> dict[str, str]:
    headers = {"x-shipyard-trace-id": trace.trace_id}
    if trace.route:
        headers["x-shipyard-route"] = trace.route
    if trace.target:
        headers["x-shipyard-target"] = trace.target
    root = trace.spans[0].attributes if trace.spans else {}
    hit = root.get(HIT_ATTR)
    if hit is not None:  # only on routes with a response cache
        headers[CACHE_HEADER] = "hit" if hit else "miss"
        match = root.get(MATCH_ATTR)
        if hit and match == "semantic":
            headers[CACHE_MATCH_HEADER] = f"semantic; similarity={root.get(SIMILARITY_ATTR, 0):.4f}"
        elif hit:
            headers[CACHE_MATCH_HEADER] = "exact"
    return headers


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"request body is {int(declared)} bytes; the limit is {limit} bytes (setting `max_body_bytes`)"
        )
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"request body exceeds the limit of {limit} bytes (setting `max_body_bytes`)"
            )
        parts.append(chunk)
    return b"".join(parts)


@dataclass
class V1:
    """The ``/v1`` routes and, among them, the hot POST handlers that FastPath serves directly."""

    hot: Mapping[str, Handler]
    routes: list[BaseRoute]


def v1_routes(gw: Gateway, auth: AuthService, limit: int, max_inputs: int) -> V1:
    """The gateway's endpoints: chat, completions and embeddings (the hot path), models, OTLP
    trace ingest and the gateway's own OpenAPI schema. ``limit``: largest request body in bytes;
    ``max_inputs``: most inputs of one embeddings request."""

    def _caller(
        request: Request, model: Any, kind: str, credentials: Mapping[str, str] | None = None
    ) -> Principal | None:
        """Who may call route ``model``: a key with a role that calls the gateway and a scope that
        includes the route; no key only for a public route. Unknown routes get 401 before 404 so
        that route names are not told to callers without a key. ``credentials``: headers to read
        the key from instead of the request's (/v1/messages: Anthropic's `x-api-key`)."""
        principal = auth.from_headers(credentials or request.headers, cookies=False)
        if principal is None:
            runtime = gw.runtime
            route = runtime.routes.get(model) if isinstance(model, str) else None
            if route is None and kind == "embedding" and isinstance(model, str):
                route = runtime.embedding_models.get(model)
            if route is not None and route.public and route.kind == kind:
                return None
            raise Unauthorized(
                "this route needs an API key: send `Authorization: Bearer sk-shp-…` (the OpenAI "
                "clients' api_key); an admin creates one with `shipyard keys create NAME --role client`"
            )
        if principal.role == "viewer":
            raise Forbidden(
                f"key `{principal.name}` has role `viewer`, which reads the dashboard and the admin API "
                "but does not call models; use a key with role `client` or above"
            )
        if isinstance(model, str) and not principal.may_use(model):
            allowed = ", ".join(f"`{r}`" for r in principal.routes or ())
            raise Forbidden(
                f"key `{principal.name}` may call {allowed or 'no route'}, not `{model}`; "
                "an admin can widen it with `shipyard keys update`",
                param="model",
            )
        return principal

    async def chat_completions(request: Request) -> Response:
        body = validation.parse_json(await _read_body(request, limit))
        principal = _caller(request, body.get("model") if isinstance(body, dict) else None, "chat")
        validation.validate_chat(body)
        return await _answer("chat", body, request, principal)

    async def completions(request: Request) -> Response:
        body = validation.parse_json(await _read_body(request, limit))
        principal = _caller(request, body.get("model") if isinstance(body, dict) else None, "chat")
        validation.validate_completion(body)
        return await _answer("completion", body, request, principal)

    async def embeddings(request: Request) -> Response:
        body = validation.parse_json(await _read_body(request, limit))
        principal = _caller(request, body.get("model") if isinstance(body, dict) else None, "embedding")
        validation.validate_embeddings(body, max_inputs)
        answer = await gw.complete("embeddings", body, request.headers, principal=principal)
        return Response(answer.body, media_type=JSON, headers=_trace_headers(answer.trace))

    async def _answer(
        op: str, body: dict[str, Any], request: Request, principal: Principal | None
    ) -> Response:
        if body.get("stream"):
            stream, trace = await gw.open_stream(op, body, request.headers, principal=principal)
            headers = _trace_headers(trace)
            headers["cache-control"] = "no-cache"
            headers["x-accel-buffering"] = "no"
            return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
        answer = await gw.complete(op, body, request.headers, principal=principal)
        return Response(answer.body, media_type=JSON, headers=_trace_headers(answer.trace))

    def _visible_models(request: Request) -> list[dict[str, Any]]:
        principal = auth.from_headers(request.headers, cookies=False)
        models = gw.runtime.model_list()
        if principal is None:
            public = {n for n, r in gw.runtime.routes.items() if r.public}
            public |= {n for n, r in gw.runtime.embedding_models.items() if r.public}
            if not public:
                raise Unauthorized("listing models needs an API key: send `Authorization: Bearer sk-shp-…`")
            return [m for m in models if m["id"] in public]
        return [m for m in models if principal.may_use(m["id"])]

    async def list_models(request: Request) -> Response:
        return _json({"object": "list", "data": _visible_models(request)})

    async def get_model(request: Request) -> Response:
        name = request.path_params["name"]
        for m in _visible_models(request):
            if m["id"] == name:
                return _json(m)
        raise HTTPException(404, f"route or model `{name}` does not exist; GET /v1/models lists them")

    async def traces_ingest(request: Request) -> Response:
        principal = auth.from_headers(request.headers, cookies=False)
        if principal is None or principal.role == "viewer":
            message = (
                "sending traces needs an API key with role `client` or above: set the exporter's header "
                "`Authorization=Bearer sk-shp-…` (OTEL_EXPORTER_OTLP_HEADERS)"
            )
            raise Unauthorized(message) if principal is None else Forbidden(message)
        return await otlp_traces(request)

    async def gateway_schema(request: Request) -> Response:
        from shipyard.gateway.openapi import gateway_schema

        return _json(gateway_schema())

    hot: dict[str, Handler] = {
        "/v1/chat/completions": chat_completions,
        "/v1/completions": completions,
        "/v1/embeddings": embeddings,
        # Anthropic's Messages API over the same pipeline (gateway/anthropic_messages.py).
        "/v1/messages": messages_endpoint(gw, _caller, lambda r: _read_body(r, limit), _trace_headers),
    }
    routes: list[BaseRoute] = [
        *(Route(path, handler, methods=["POST"]) for path, handler in hot.items()),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{name:path}", get_model, methods=["GET"]),
        # OTLP/HTTP trace ingest: through the router, not FastPath's `hot` (OTLP errors, not OpenAI's).
        Route("/v1/traces", traces_ingest, methods=["POST"]),
        Route("/v1/openapi.json", gateway_schema, methods=["GET"]),
    ]
    return V1(hot, routes)


Handler = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class FastPath:
    """The ASGI entry point. POSTs to the OpenAI endpoints go straight to their handlers (the same
    functions Starlette routes to, with the same error handling), skipping the router and the
    middleware layers: that is a measurable share of a pass-through request's CPU. Everything else
    (lifespan, GETs, unknown paths, wrong methods) goes through the Starlette app."""

    def __init__(
        self, app: Starlette, hot: Mapping[str, Handler], on_error: ErrorHandler, on_unexpected: ErrorHandler
    ) -> None:
        self.app = app
        self.state = app.state
        self.hot = hot
        self.on_error = on_error
        self.on_unexpected = on_unexpected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.hot.get(scope["path"])
            if handler is not None:
                request = Request(scope, receive, send)
                try:
                    response = await handler(request)
                except ShipyardError as exc:
                    response = await self.on_error(request, exc)
                except Exception as exc:
                    response = await self.on_unexpected(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
