"""The composition root: one running Shipyard as an ASGI app.

It puts together the gateway's ``/v1`` endpoints (``gateway.http``), the admin API (``shipyard.api``),
the dashboard (``shipyard.web``), the probes and Prometheus ``/metrics``, and the lifespan that
opens the platform (store, trace writer, providers, monitoring) and flushes everything on
shutdown. Nothing below imports this package.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from shipyard import __version__
from shipyard.api import create_api
from shipyard.errors import ShipyardError, error_body
from shipyard.gateway.http import JSON, FastPath, v1_routes
from shipyard.server.platform import Platform
from shipyard.web import create_web

log = logging.getLogger("shipyard.gateway")

__all__ = ["Platform", "create_app"]


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON, headers=headers)


def create_app(platform: Platform, background_start: bool = False) -> FastPath:
    """The ASGI app serving ``platform`` (built with :meth:`Platform.build`). ``background_start``:
    serve probes while the providers start (``shipyard up``); otherwise the lifespan waits for them."""
    gw = platform.gateway
    settings = platform.settings
    v1 = v1_routes(gw, platform.auth, settings.max_body_bytes, settings.max_embedding_inputs)
    hot = v1.hot

    async def healthz(request: Request) -> Response:
        return _json(
            {
                "status": "ok",
                "version": __version__,
                "uptime_s": round(time.time() - platform.started_at, 1),
                "worker": platform.worker,  # which of `--workers N` answered (0: a single process)
            }
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
                "/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/messages and /v1/models"
            )
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return _json(error_body(message), exc.status_code, dict(exc.headers or {}))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        err = error_body(f"internal error ({type(exc).__name__}); see the server log", "api_error")
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

    routes = [
        *v1.routes,
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
