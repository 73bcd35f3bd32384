"""Malformed requests get OpenAI-style 4xx errors that name the field and the fix — never a 500."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import openai
import orjson
import pytest

CONFIG = """
providers: [{name: fake, type: mock}]
models:
  - {name: fake-chat, provider: fake}
  - {name: fake-embed, provider: fake, kind: embedding, model: embed-v1}
routes:
  - {name: default, targets: [{model: fake-chat}]}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import ShipyardServer

    s = ShipyardServer(
        tmp_path_factory.mktemp("errors") / "home", CONFIG, env={"SHIPYARD_MAX_BODY_BYTES": "4096"}
    ).start()
    yield s
    s.stop()


def post(
    server: Any, path: str, content: bytes | str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        server.url + path,
        content=content,
        headers={**server.headers, **(headers or {"content-type": "application/json"})},
        timeout=10,
    )


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


@pytest.mark.parametrize(
    ("body", "status", "param", "fragment"),
    [
        (b"{not json", 400, None, "not valid JSON"),
        (b"", 400, None, "empty"),
        (b"[1, 2]", 400, None, "must be a JSON object"),
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model", "`model` is required"),
        ({"model": "default"}, 400, "messages", "`messages` is required"),
        ({"model": "default", "messages": "hi"}, 400, "messages", "array"),
        ({"model": "default", "messages": []}, 400, "messages", "at least one"),
        (
            {"model": "default", "messages": [{"role": "robot", "content": "x"}]},
            400,
            "messages[0].role",
            "one of",
        ),
        ({"model": "default", "messages": [{"role": "user"}]}, 400, "messages[0].content", "required"),
        (
            {"model": "default", "messages": [{"role": "user", "content": 5}]},
            400,
            "messages[0].content",
            "string",
        ),
        ({"model": 7, "messages": [{"role": "user", "content": "x"}]}, 400, "model", "string"),
        (
            {"model": "default", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            400,
            "temperature",
            "number",
        ),
        (
            {"model": "default", "messages": [{"role": "user", "content": "x"}], "temperature": 9},
            400,
            "temperature",
            "between 0 and 2",
        ),
        (
            {"model": "default", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            400,
            "max_tokens",
            "integer >= 1",
        ),
        (
            {"model": "default", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            400,
            "stream",
            "true or false",
        ),
        (
            {"model": "default", "messages": [{"role": "user", "content": "x"}], "stop": [1]},
            400,
            "stop",
            "strings",
        ),
        (
            {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
            404,
            "model",
            "route `nope` does not exist; known routes: default",
        ),
        (
            {"model": "fake-embed", "messages": [{"role": "user", "content": "x"}]},
            404,
            "model",
            "does not exist",
        ),
    ],
)
def test_chat_validation(server: Any, body: Any, status: int, param: str | None, fragment: str) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    r = post(server, "/v1/chat/completions", raw)
    assert r.status_code == status, r.text
    err = error_of(r)
    assert err["param"] == param
    assert fragment in err["message"], err
    assert err["type"] == "invalid_request_error"


def test_unknown_route_code_matches_openai(server: Any) -> None:
    r = post(
        server,
        "/v1/chat/completions",
        orjson.dumps({"model": "gpt-x", "messages": [{"role": "user", "content": "x"}]}),
    )
    assert error_of(r)["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"model": "default"}, "prompt"),
        ("/v1/completions", {"model": "default", "prompt": {"a": 1}}, "prompt"),
        ("/v1/embeddings", {"model": "fake-embed"}, "input"),
        ("/v1/embeddings", {"model": "fake-embed", "input": []}, "input"),
        (
            "/v1/embeddings",
            {"model": "fake-embed", "input": "x", "encoding_format": "hex"},
            "encoding_format",
        ),
        ("/v1/embeddings", {"input": "x"}, "model"),
    ],
)
def test_other_endpoints_validation(server: Any, path: str, body: Any, param: str) -> None:
    r = post(server, path, orjson.dumps(body))
    assert r.status_code == 400
    assert error_of(r)["param"] == param


def test_embeddings_on_a_chat_route_is_a_clear_error(server: Any) -> None:
    r = post(server, "/v1/embeddings", orjson.dumps({"model": "default", "input": "x"}))
    assert r.status_code == 404
    assert "serves chat models" in error_of(r)["message"]


def test_oversized_body_is_413(server: Any) -> None:
    big = orjson.dumps({"model": "default", "messages": [{"role": "user", "content": "x" * 10_000}]})
    r = post(server, "/v1/chat/completions", big)
    assert r.status_code == 413
    assert "max_body_bytes" in error_of(r)["message"]

    # Chunked upload with no Content-Length is cut off too.
    def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 1000

    r = httpx.post(server.url + "/v1/chat/completions", content=chunks(), headers=server.headers, timeout=10)
    assert r.status_code == 413


def test_wrong_method_and_unknown_path(server: Any) -> None:
    r = httpx.get(server.url + "/v1/chat/completions", headers=server.headers)
    assert r.status_code == 405
    assert "GET is not allowed" in error_of(r)["message"]
    r = httpx.post(server.url + "/v1/nothing-here", json={}, headers=server.headers)
    assert r.status_code == 404
    assert "/v1/chat/completions" in error_of(r)["message"]
    r = httpx.get(server.url + "/v1/models/unknown-model", headers=server.headers)
    assert r.status_code == 404
    assert "unknown-model" in error_of(r)["message"]


def test_openai_client_sees_the_message(server: Any) -> None:
    client = server.openai()
    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
    assert "known routes: default" in str(exc.value)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="default", messages=[{"role": "wizard", "content": "x"}])  # type: ignore
    assert "messages[0].role" in str(bad.value)


def test_random_garbage_never_gives_a_500(server: Any) -> None:
    rng = random.Random(7)
    good = {"model": "default", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}
    values: list[Any] = [None, True, -1, 0, 3.5, "", "x", [], {}, [1], [{}], {"a": None}, "default", 10**30]
    keys = [
        "model",
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "stream",
        "stop",
        "n",
        "user",
        "stream_options",
        "messages.0",
        "messages.0.role",
        "messages.0.content",
        "prompt",
        "input",
    ]
    with server.http(timeout=10) as http:
        for _ in range(300):
            body = orjson.loads(orjson.dumps(good))
            for _ in range(rng.randint(1, 3)):
                key = rng.choice(keys)
                value = rng.choice(values)
                if key.startswith("messages."):
                    parts = key.split(".")
                    if (
                        isinstance(body.get("messages"), list)
                        and body["messages"]
                        and isinstance(body["messages"][0], dict)
                    ):
                        if len(parts) == 2:
                            body["messages"][0] = value
                        else:
                            body["messages"][0][parts[2]] = value
                else:
                    body[key] = value
            path = rng.choice(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
            r = http.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
            assert r.status_code < 500, (path, body, r.text)
            if r.status_code >= 400:
                error_of(r)


def test_health_and_readiness(server: Any) -> None:
    health = httpx.get(server.url + "/healthz").json()
    assert health["status"] == "ok" and health["version"]
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["store"] == "ok"
    assert body["providers"] == {
        "fake": {"ready": True, "detail": "started", "health": {"ok": True, "detail": ""}}
    }
    models = httpx.get(server.url + "/v1/models", headers=server.headers).json()
    assert [m["id"] for m in models["data"]] == ["default", "fake-embed"]
    default = httpx.get(server.url + "/v1/models/default", headers=server.headers).json()
    assert default["shipyard"]["targets"] == ["fake-chat"]


def test_readiness_reports_an_unreachable_upstream_without_going_unready(shipyard_server: Any) -> None:
    from tests.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"
    server = shipyard_server(
        f"""
providers:
  - {{name: fake, type: mock}}
  - {{name: remote, type: openai, base_url: "{dead}"}}
models:
  - {{name: fake-chat, provider: fake}}
  - {{name: remote-chat, provider: remote, model: gpt-x}}
routes:
  - {{name: default, targets: [{{model: remote-chat}}], fallbacks: [{{model: fake-chat}}]}}
"""
    )
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200, ready.text
    remote = ready.json()["providers"]["remote"]
    assert remote["ready"] is True
    assert remote["health"]["ok"] is False and "Connect" in remote["health"]["detail"]
    assert ready.json()["providers"]["fake"]["health"]["ok"] is True
