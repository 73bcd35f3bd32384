"""A mock OpenAI-compatible *server* around :class:`MockProvider`.

It stands in for a paid or remote upstream (tests, benchmarks, course labs): the gateway talks to
it over real HTTP exactly as it would talk to vLLM or OpenAI. It is a bare ASGI app, so on a
benchmark the upstream costs as little CPU as possible. ``shipyard mock-upstream`` serves it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from shipyard.errors import ShipyardError
from shipyard.providers.base import Call
from shipyard.providers.mock import MockOptions, MockProvider

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class MockUpstream:
    """ASGI app: POST /v1/chat/completions, /v1/completions, /v1/embeddings; GET /v1/models."""

    def __init__(self, options: MockOptions | None = None, model: str = "mock-model") -> None:
        self.provider = MockProvider("mock-upstream", options or MockOptions())
        self.model = model
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith("/v1"):
            path = path[3:]
        method = scope["method"]
        if method == "GET" and path == "/models":
            data = {"object": "list", "data": [{"id": self.model, "object": "model", "owned_by": "mock"}]}
            await _respond(send, 200, orjson.dumps(data))
            return
        if method != "POST" or path not in ("/chat/completions", "/completions", "/embeddings"):
            await _respond(send, 404, orjson.dumps({"error": {"message": f"no route {method} {path}"}}))
            return
        raw = b""
        while True:
            msg = await receive()
            raw += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        self.requests += 1
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await _respond(send, 400, orjson.dumps({"error": {"message": "invalid JSON"}}))
            return
        call = Call(body=body, model=str(body.get("model") or self.model), timeout=3600)
        try:
            if path == "/embeddings":
                await _respond(send, 200, (await self.provider.embed(call)).to_bytes())
            elif body.get("stream"):
                it = (
                    self.provider.stream_chat(call)
                    if path == "/chat/completions"
                    else self.provider.stream_complete(call)
                )
                started = False
                async for chunk in it:
                    if not started:
                        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
                        started = True
                    if chunk.data:
                        await send({"type": "http.response.body", "body": chunk.data, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                result = await (
                    self.provider.chat(call) if path == "/chat/completions" else self.provider.complete(call)
                )
                await _respond(send, 200, result.to_bytes())
        except ShipyardError as exc:
            status = self.provider.options.error_status if exc.code == "mock_failure" else exc.status
            await _respond(send, status, orjson.dumps(exc.to_openai()))


async def _respond(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON_HEADERS})
    await send({"type": "http.response.body", "body": body})
