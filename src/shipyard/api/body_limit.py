"""A size limit on the admin API's request bodies (settings `api_max_body_bytes` and, for
artifact uploads, `artifact_max_bytes`): HTTP 413 naming the setting, before or while the body is
read, so that no handler ever holds more than the limit in memory."""

from __future__ import annotations

import re

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipyard.errors import PayloadTooLarge

# `PUT /api/runs/{id}/artifacts/{path}` streams to disk: it has a limit of its own.
_ARTIFACT = re.compile(r"/runs/[^/]+/artifacts/.")
# A refused body is read and dropped (no memory) up to this many bytes, so that a client still
# sending it gets to read the 413 instead of a reset connection; a bigger one is cut off.
DRAIN_BYTES = 64 * 1024 * 1024


class BodyLimit:
    """ASGI middleware: refuse a body over the limit with 413, never a 500 or a half-read body.

    A declared ``Content-Length`` over the limit is refused before the app runs. A body sent
    without one (chunked) is counted as it arrives: the read that crosses the limit raises
    :class:`PayloadTooLarge`, which the API's error handler answers; where the app turns the
    failed read into another answer (FastAPI's "error parsing the body"), the 413 replaces it."""

    def __init__(self, app: ASGIApp, limit: int, artifact_limit: int) -> None:
        self.app = app
        self.limit = limit
        self.artifact_limit = artifact_limit

    def _rule(self, scope: Scope) -> tuple[int, str]:
        if scope["method"] == "PUT" and _ARTIFACT.search(scope["path"]):
            limit = self.artifact_limit
            return limit, f"artifact uploads are limited to {limit:,} bytes (setting `artifact_max_bytes`)"
        limit = self.limit
        return limit, (
            f"the admin API accepts request bodies of up to {limit:,} bytes (setting `api_max_body_bytes`); "
            "send less per request (a dataset import can be split: `append=true` adds to the latest version)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, rule = self._rule(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            if declared <= limit + DRAIN_BYTES:
                await _drain(receive, DRAIN_BYTES + limit)
            await _refuse(send, f"the request body is {declared:,} bytes; {rule}")
            return
        too_big = f"the request body is over {limit:,} bytes; {rule}"
        received = 0
        over = replaced = False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    if message.get("more_body"):
                        await _drain(receive, DRAIN_BYTES)
                    raise PayloadTooLarge(too_big)
            return message

        async def guarded(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the rest of an answer the 413 replaced
            if over and message["type"] == "http.response.start" and message["status"] != 413:
                replaced = True
                await _refuse(send, too_big)
                return
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
            if not replaced:
                replaced = True
                await _refuse(send, too_big)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def _drain(receive: Receive, most: int) -> None:
    dropped = 0
    while dropped <= most:
        message = await receive()
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body"):
            return


async def _refuse(send: Send, message: str) -> None:
    body = orjson.dumps(PayloadTooLarge(message).to_openai())
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
