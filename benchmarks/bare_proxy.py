"""The practical limit for a Python gateway: Starlette + one pooled aiohttp client, no parsing,
no validation, no tracing. Forwards /v1/* to UPSTREAM byte for byte (streams too).

    python benchmarks/bare_proxy.py http://127.0.0.1:9100 8790
"""

from __future__ import annotations

import sys

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = sys.argv[1].rstrip("/")
PORT = int(sys.argv[2])
session: aiohttp.ClientSession | None = None


async def proxy(request: Request) -> Response:
    global session
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
    body = await request.body()
    resp = await session.post(
        UPSTREAM + request.url.path, data=body, headers={"content-type": "application/json"}
    )
    if resp.headers.get("content-type", "").startswith("text/event-stream"):

        async def relay():  # type: ignore[no-untyped-def]
            async for chunk in resp.content.iter_any():
                yield chunk
            resp.release()

        return StreamingResponse(relay(), status_code=resp.status, media_type="text/event-stream")
    data = await resp.read()
    return Response(data, status_code=resp.status, media_type="application/json")


app = Starlette(routes=[Route("/v1/{path:path}", proxy, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=PORT, log_level="warning", access_log=False)
