"""One rule for names (issue 12, item 10): `shipyard.config.schema.check_name` / `Name`, used by
the config schema (providers, models, routes, prompts, target labels, scanners), the registry,
and datasets. Through the admin API and `shipyard apply` against a real server.

Before the fix, a route target labelled with a CR/LF was accepted, and since the label goes out
in the `x-shipyard-target` header, every call to that route got an empty reply."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import yaml

from shipyard.config.schema import check_name, name_problem
from shipyard.errors import InvalidRequest
from tests.conftest import ShipyardServer

CONFIG = """
providers:
  - {name: fake, type: mock, output: hello}
models:
  - {name: chat, provider: fake}
routes:
  - name: support
    targets: [{model: chat, name: blue}]
"""
BAD = ["blue\r\nx-evil: 1", "blue\n", "a b", "", "-lead", "x" * 129, "tab\there", "nul\0"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShipyardServer]:
    s = ShipyardServer(tmp_path_factory.mktemp("names") / "home", CONFIG).start()
    yield s
    s.stop()


def route_spec(label: str) -> dict[str, object]:
    return {"targets": [{"model": "chat", "name": label}]}


def test_the_rule() -> None:
    for good in ("support", "gpt-4o-mini", "llama3:8b", "meta-llama/Llama-3.1-8B", "v1.2_x", "x" * 128):
        assert name_problem(good) is None and check_name(good) == good
    for bad in BAD:
        problem = name_problem(bad)
        assert problem is not None and "no spaces or control characters" in problem
    # The message quotes the value with its control characters escaped, never raw.
    problem = name_problem("a\r\nb")
    assert problem is not None and "\n" not in problem and "'a\\r\\nb'" in problem
    with pytest.raises(InvalidRequest) as err:
        check_name("ds@2", "dataset name", reserved="@/")
    assert err.value.param == "name" and "`@`" not in err.value.message


@pytest.mark.parametrize("label", ["blue\r\nx-evil: 1", "blue\n", "a b"])
def test_a_target_label_with_a_line_break_is_refused_by_the_api(server: ShipyardServer, label: str) -> None:
    with server.api() as api:
        r = api.post("/routes", json={"name": "support", "spec": route_spec(label)})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert "routes[0].targets[0].name" in err["message"] and "not valid" in err["message"]
        assert "no spaces or control characters" in err["message"]
        text = yaml.safe_dump({"routes": [{"name": "other", **route_spec(label)}]})
        r = api.post("/apply", json={"yaml": text})
        assert r.status_code == 400 and "routes[0].targets[0].name" in r.json()["error"]["message"]
        assert api.get("/routes/other").status_code == 404
        # Every name of the schema follows the same rule.
        r = api.post("/models", json={"name": label, "spec": {"provider": "fake"}})
        assert r.status_code == 400 and "models[0].name" in r.json()["error"]["message"]
    # The route still answers, with its clean label in the header.
    r = httpx.post(
        server.url + "/v1/chat/completions",
        headers=server.headers,
        json={"model": "support", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["x-shipyard-target"] == "blue"


def test_shipyard_apply_refuses_it_and_the_route_keeps_working(
    server: ShipyardServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cfg = tmp_path_factory.mktemp("apply") / "bad.yaml"
    cfg.write_text('routes:\n  - name: support\n    targets: [{model: chat, name: "blue\\r\\nx-evil: 1"}]\n')
    r = subprocess.run(
        [sys.executable, "-m", "shipyard", "apply", str(cfg), "--home", str(server.home)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SHIPYARD_ACTOR": "tester"},
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "bad.yaml:3" in r.stderr and "routes[0].targets[0].name" in r.stderr
    assert "'blue\\r\\nx-evil: 1' is not valid" in r.stderr and "Traceback" not in r.stderr
    with server.api() as api:
        assert api.get("/routes/support").json()["version"] == 1
    client = server.openai()
    reply = client.chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": "hi"}]
    )
    assert (
        reply.headers["x-shipyard-target"] == "blue" and reply.parse().choices[0].message.content == "hello"
    )


def test_dataset_names_follow_the_same_rule(server: ShipyardServer) -> None:
    with server.api() as api:
        for bad in ("set\n", "set\r\nx", "a b", "v@2", "a/b"):
            r = api.post("/datasets", json={"name": bad})
            assert r.status_code == 400, (bad, r.text)
            err = r.json()["error"]
            assert (
                err["param"] == "name" and "dataset name" in err["message"] and "not valid" in err["message"]
            )
        assert api.post("/datasets", json={"name": "eval:set-1"}).status_code == 201
