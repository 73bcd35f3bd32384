"""The ASGI application: OpenAI-compatible ``/v1`` endpoints, health probes, and the lifespan that
opens the store, starts the trace writer and the providers, and flushes everything on shutdown.

Handlers only parse, validate and hand over to :class:`~shipyard.gateway.service.Gateway`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from shipyard import __version__
from shipyard.errors import Forbidden, PayloadTooLarge, ShipyardError, Unauthorized
from shipyard.gateway import validation
from shipyard.gateway.api import create_api
from shipyard.gateway.auth import Principal
from shipyard.gateway.platform import Platform
from shipyard.tracing.otlp import otlp_traces
from shipyard.tracing.spans import Trace
from shipyard.web import create_web

log = logging.getLogger("shipyard.gateway")
JSON = "application/json"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


def _trace_headers(trace: Trace) -> dict[str, str]:
    headers = {"x-shipyard-trace-id": trace.trace_id}
    if trace.route:
        headers["x-shipyard-route"] = trace.route
    if trace.target:
        headers["x-shipyard-target"] = trace.target
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


def create_app(platform: Platform, background_start: bool = False) -> FastPath:
    """The ASGI app serving ``platform`` (built with :meth:`Platform.build`). ``background_start``:
    serve probes while the providers start (``shipyard up``); otherwise the lifespan waits for them."""
    gw = platform.gateway
    auth = platform.auth
    limit = platform.settings.max_body_bytes
    max_inputs = platform.settings.max_embedding_inputs

    def _caller(request: Request, model: Any, kind: str) -> Principal | None:
        """Who may call route ``model``: a key with a role that calls the gateway and a scope that
        includes the route; no key only for a public route. Unknown routes get 401 before 404 so
        that route names are not told to callers without a key."""
        principal = auth.from_headers(request.headers, cookies=False)
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

    async def healthz(request: Request) -> Response:
        return _json(
            {"status": "ok", "version": __version__, "uptime_s": round(time.time() - platform.started_at, 1)}
        )

    async def readyz(request: Request) -> Response:
        providers: dict[str, dict[str, Any]] = {
            n: {"ready": h.ok, "detail": h.detail} for n, h in gw.runtime.readiness().items()
        }
        # Informational: a started provider whose health check fails (an upstream that is down)
        # does not make this instance unready, since fallbacks may still serve its routes.
        for name, h in (await gw.runtime.probe()).items():
            providers[name]["health"] = {"ok": h.ok, "detail": h.detail}
        for name, workers in gw.runtime.worker_statuses().items():
            providers[name]["workers"] = [w.to_dict() for w in workers]
        ready = platform.store_ok and not platform.starting and all(p["ready"] for p in providers.values())
        if ready:
            status = "ready"
        elif platform.starting:
            loading = [n for n, p in providers.items() if not p["ready"]]
            status = (
                f"starting: waiting for provider(s) {', '.join(loading)} "
                "(local models load, then answer a self-test)"
            )
        else:
            status = "not ready"
        body = {
            "status": status,
            "store": "ok" if platform.store_ok else "not open",
            "registry_revision": gw.runtime.revision,
            "reload_error": platform.reload_error,
            "providers": providers,
            "trace_queue": platform.writer.pending,
            "in_flight": gw.in_flight,
        }
        return _json(body, 200 if ready else 503)

    async def metrics(request: Request) -> Response:
        body, content_type = platform.metrics.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    async def on_shipyard_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ShipyardError)
        path = request.url.path
        if path in hot and not exc.__dict__.get("shipyard_traced"):
            platform.metrics.reject(path, exc.code or exc.type)
        headers = {}
        if trace_id := exc.__dict__.get("shipyard_trace_id"):
            headers["x-shipyard-trace-id"] = trace_id
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            headers["retry-after"] = str(int(retry_after + 0.999))
        return _json(exc.to_openai(), exc.status, headers)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = (
                f"no endpoint at {request.method} {request.url.path}; the gateway serves "
                "/v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models"
            )
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        err = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
        return _json(err, exc.status_code, dict(exc.headers or {}))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        err = {
            "error": {
                "message": f"internal error ({type(exc).__name__}); see the server log",
                "type": "api_error",
                "param": None,
                "code": None,
            }
        }
        return _json(err, 500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await platform.open(background=background_start)
        # Everything loaded so far (libraries, config, the model) lives as long as the process:
        # moving it out of the collector's reach keeps full collections short, which is what
        # otherwise shows up as multi-millisecond stalls in the request latency tail.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await platform.close()

    hot = {
        "/v1/chat/completions": chat_completions,
        "/v1/completions": completions,
        "/v1/embeddings": embeddings,
    }
    routes = [
        *(Route(path, handler, methods=["POST"]) for path, handler in hot.items()),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{name:path}", get_model, methods=["GET"]),
        # OTLP/HTTP trace ingest: through the router, not FastPath's `hot` (OTLP errors, not OpenAI's).
        Route("/v1/traces", traces_ingest, methods=["POST"]),
        Route("/v1/openapi.json", gateway_schema, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Mount("/api", app=create_api(platform)),
        # The dashboard takes every other path, so it must stay the last route.
        Mount("/", app=create_web(platform)),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ShipyardError: on_shipyard_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )
    app.state.platform = platform
    return FastPath(app, hot, on_shipyard_error, on_unexpected)


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
