"""Secrets Shipyard resolved from `${ENV}` never reach a client, a trace, the dashboard or the log,
and an upstream that answers garbage is an error (and a fallback), never a 200 with it inside."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from shipyard import redact
from tests.conftest import ThreadServer, free_port
from tests.helpers import attempt_spans, named_key, wait_trace

SECRET = "s3cr3t-Value-8d1f6b2a"
UPSTREAM_KEY = "sk-upstream-live-4f0c2a9b7e"


def echo_auth_upstream() -> Starlette:
    """An upstream that rejects every call and echoes the Authorization header in its error."""

    async def handler(request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        return JSONResponse({"error": {"message": f"invalid credentials: {auth}"}}, status_code=401)

    return Starlette(routes=[Route("/v1/chat/completions", handler, methods=["POST"])])


def garbage_upstream() -> Starlette:
    """Streams: /v1/chat/completions per the `mode` in the last message: `garbage-first` sends a
    non-JSON data line first, `garbage-later` two good chunks then one, `array` a JSON array."""

    def chunk(text: str) -> bytes:
        body = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}  # fmt: skip
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    async def handler(request: Request) -> Response:
        body = await request.json()
        mode = body["messages"][-1]["content"]
        if not body.get("stream"):
            return Response(b"<html>Bad gateway</html>", media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            if mode == "garbage-first":
                yield b"data: <html>proxy error</html>\n\n"
            elif mode == "array":
                yield b"data: [1, 2, 3]\n\n"
            else:
                yield chunk("Hello")
                yield chunk(" there")
                yield b"data: {truncated json\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", handler, methods=["POST"])])


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[ThreadServer, ThreadServer]]:
    with ThreadServer(echo_auth_upstream()) as echo, ThreadServer(garbage_upstream()) as garbage:
        yield echo, garbage


def config(echo: ThreadServer, garbage: ThreadServer, closed_port: int) -> str:
    return f"""
version: 1
providers:
  - {{name: down, type: openai, base_url: "http://svc-user:${{UPSTREAM_SECRET}}@127.0.0.1:{closed_port}/v1"}}
  - {{name: echo, type: openai, base_url: "{echo.url}/v1", api_key: "${{UPSTREAM_KEY}}"}}
  - {{name: junk, type: openai, base_url: "{garbage.url}/v1"}}
  - {{name: mock, type: mock, output: "from the fallback"}}
models:
  - {{name: down-m, provider: down}}
  - {{name: echo-m, provider: echo}}
  - {{name: junk-m, provider: junk}}
  - {{name: mock-m, provider: mock}}
routes:
  - {{name: down, targets: [{{model: down-m}}]}}
  - {{name: echo, targets: [{{model: echo-m}}]}}
  - {{name: junk, targets: [{{model: junk-m}}]}}
  - {{name: junk-fallback, targets: [{{model: junk-m}}], fallbacks: [{{model: mock-m}}]}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[ThreadServer, ThreadServer]) -> Any:
    from tests.conftest import ShipyardServer

    echo, garbage = upstreams
    env = {"UPSTREAM_SECRET": SECRET, "UPSTREAM_KEY": UPSTREAM_KEY}
    s = ShipyardServer(
        tmp_path_factory.mktemp("secrets") / "home", config(echo, garbage, free_port()), env=env
    )
    s.start()
    yield s
    s.stop()


def ask(server: Any, route: str, text: str = "hi", **kw: Any) -> Any:
    return server.openai().chat.completions.create(
        model=route, messages=[{"role": "user", "content": text}], **kw
    )


def everywhere(server: Any, trace_id: str) -> str:
    """What every surface says about a trace: the stored row, /api/traces for a viewer, the page."""
    viewer = named_key(server, "auditor", role="viewer")
    trace = wait_trace(server.store_url(), trace_id)
    with httpx.Client(base_url=server.url, headers=viewer.headers, timeout=10) as http:
        api = http.get(f"/api/traces/{trace_id}").text
        listing = http.get("/api/traces").text
    with server.http() as http:
        page = http.get(f"/traces/{trace_id}", headers={"accept": "text/html"}).text
    return "\n".join([json.dumps(trace), api, listing, page, server.log()])


def test_a_secret_in_a_base_url_reaches_no_client_trace_page_or_log(server: Any) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        ask(server, "down")
    message = info.value.message
    assert info.value.status_code == 503
    assert "127.0.0.1" in message and SECRET not in message and "svc-user" not in message
    text = everywhere(server, info.value.response.headers["x-shipyard-trace-id"])
    assert SECRET not in text and "svc-user:" not in text
    with server.http() as http:
        ready = http.get("/readyz").text
    assert SECRET not in ready


def test_an_upstream_echoing_the_authorization_header_is_masked(server: Any) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        ask(server, "echo")
    assert info.value.status_code == 401
    assert UPSTREAM_KEY not in info.value.message and "Bearer ***" in info.value.message
    text = everywhere(server, info.value.response.headers["x-shipyard-trace-id"])
    assert UPSTREAM_KEY not in text


def test_garbage_before_the_first_byte_is_an_error_and_falls_back(server: Any) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        list(ask(server, "junk", "garbage-first", stream=True))
    assert info.value.status_code == 502 and "malformed stream event" in info.value.message
    trace = wait_trace(server.store_url(), info.value.response.headers["x-shipyard-trace-id"])
    assert trace["status"] == "error"
    with pytest.raises(openai.APIStatusError, match="not an object"):
        list(ask(server, "junk", "array", stream=True))
    # With a fallback, nothing reached the client before the garbage: the fallback answers.
    with server.openai().chat.completions.with_streaming_response.create(
        model="junk-fallback", messages=[{"role": "user", "content": "garbage-first"}], stream=True
    ) as resp:
        text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
        trace_id = resp.headers["x-shipyard-trace-id"]
    assert text == "from the fallback"
    first, second = attempt_spans(wait_trace(server.store_url(), trace_id))
    assert first["status"] == "error" and second["status"] == "ok"


def test_garbage_mid_stream_ends_with_an_error_event_and_an_error_trace(server: Any) -> None:
    pieces: list[str] = []
    with server.openai().chat.completions.with_streaming_response.create(
        model="junk", messages=[{"role": "user", "content": "garbage-later"}], stream=True
    ) as resp:
        trace_id = resp.headers["x-shipyard-trace-id"]
        with pytest.raises(openai.APIError, match="malformed stream event"):
            for c in resp.parse():
                pieces.append(c.choices[0].delta.content or "")
    assert "".join(pieces) == "Hello there"
    trace = wait_trace(server.store_url(), trace_id)
    assert trace["status"] == "error" and "malformed" in trace["error"]


def test_a_non_stream_200_that_is_not_json_is_an_error(server: Any) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        ask(server, "junk")
    assert info.value.status_code == 502 and "HTTP 200 with invalid JSON" in info.value.message
    assert ask(server, "junk-fallback").choices[0].message.content == "from the fallback"


def test_scrub_masks_registered_values_and_userinfo() -> None:
    redact.register("abcdefghij-token")
    assert redact.scrub("failed with abcdefghij-token inside") == "failed with *** inside"
    assert redact.scrub("see http://bob:pw@host:8000/v1 now") == "see http://host:8000/v1 now"
    assert redact.strip_userinfo("https://u:p@[::1]:9/v1?q=1") == "https://[::1]:9/v1?q=1"
    redact.register("tiny")  # too short to mask safely: ordinary words would vanish
    assert redact.scrub("a tiny thing") == "a tiny thing"
