"""The CLI as a user runs it: `shipyard --version`, `models list`, `traces list/show`, `chat`
(through a running gateway and in-process), `mock-upstream`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.helpers import count_traces

CONFIG = """
providers: [{name: fake, type: mock, output: "Fair winds and following seas"}]
models:
  - {name: fake-chat, provider: fake, pricing: {input_per_mtok: 1, output_per_mtok: 1}}
routes:
  - {name: default, targets: [{model: fake-chat}]}
  - name: ab
    targets: [{model: fake-chat, name: left, weight: 3}, {model: fake-chat, name: right, weight: 1}]
"""


def shipyard(
    *args: str, cwd: Path, env: dict[str, str] | None = None, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    import os

    r = subprocess.run(
        [sys.executable, "-m", "shipyard", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
        input=input,
    )
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_version_and_help(tmp_path: Path) -> None:
    from shipyard import __version__

    assert shipyard("--version", cwd=tmp_path).stdout.strip() == f"shipyard {__version__}"
    out = shipyard("--help", cwd=tmp_path).stdout
    for command in ("up", "chat", "config", "models", "traces", "mock-upstream"):
        assert command in out
    assert "--home" in shipyard("up", "--help", cwd=tmp_path).stdout


def test_models_and_routes_list_show_the_applied_registry(tmp_path: Path) -> None:
    (tmp_path / "shipyard.yaml").write_text(CONFIG)
    home = str(tmp_path / "home")
    # Reading never creates a store: with none there yet, the command says where it looked.
    missing = shipyard("models", "list", "--json", "--home", home, cwd=tmp_path, check=False)
    assert missing.returncode == 2
    assert f"no Shipyard store at {tmp_path / 'home' / 'shipyard.db'}" in missing.stderr
    assert not (tmp_path / "home").exists()
    applied = shipyard("apply", "shipyard.yaml", "--home", home, cwd=tmp_path)
    assert f"created a new store at {tmp_path / 'home' / 'shipyard.db'}" in applied.stderr
    assert json.loads(shipyard("prompts", "list", "--json", "--home", home, cwd=tmp_path).stdout) == []
    routes = json.loads(shipyard("routes", "list", "--json", "--home", home, cwd=tmp_path).stdout)
    assert [r["name"] for r in routes] == ["ab", "default"]
    models = json.loads(shipyard("models", "list", "--json", "--home", home, cwd=tmp_path).stdout)
    assert [(m["name"], m["current"]) for m in models] == [("fake-chat", 1)]
    shown = json.loads(shipyard("routes", "show", "ab", "--json", "--home", home, cwd=tmp_path).stdout)
    # Normalised specs leave defaults out (weight 1), so cosmetic edits never make new versions.
    assert shown["spec"]["targets"] == [
        {"model": "fake-chat", "name": "left", "weight": 3.0},
        {"model": "fake-chat", "name": "right"},
    ]
    table = shipyard("routes", "list", "--home", home, cwd=tmp_path).stdout
    assert "ab" in table and "v1" in table


def test_traces_list_and_show_after_traffic(shipyard_server: Any, tmp_path: Path) -> None:
    server = shipyard_server(CONFIG)
    client = server.openai()
    for i in range(3):
        client.chat.completions.create(model="ab", messages=[{"role": "user", "content": f"question {i}"}])
    client.chat.completions.create(model="default", messages=[{"role": "user", "content": "find me later"}])
    deadline = time.monotonic() + 5
    while count_traces(server.store_url()) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    home = str(server.home)
    rows = json.loads(shipyard("traces", "list", "--home", home, "--json", cwd=tmp_path).stdout)
    assert len(rows) == 4 and rows[0]["route"] == "default"  # newest first
    assert {r["target"] for r in rows[1:]} <= {"left", "right"}
    only_ab = json.loads(
        shipyard("traces", "list", "--home", home, "--route", "ab", "--json", cwd=tmp_path).stdout
    )
    assert len(only_ab) == 3
    found = json.loads(
        shipyard("traces", "list", "--home", home, "-s", "find me", "--json", cwd=tmp_path).stdout
    )
    assert len(found) == 1
    assert (
        json.loads(
            shipyard("traces", "list", "--home", home, "--status", "error", "--json", cwd=tmp_path).stdout
        )
        == []
    )
    table = shipyard("traces", "list", "--home", home, "--since", "1h", cwd=tmp_path).stdout
    assert "4 trace(s)" in table

    trace_id = rows[0]["trace_id"]
    shown = json.loads(
        shipyard("traces", "show", trace_id[:20], "--home", home, "--json", cwd=tmp_path).stdout
    )
    assert shown["trace_id"] == trace_id and len(shown["spans"]) == 2
    text = shipyard("traces", "show", trace_id, "--home", home, cwd=tmp_path).stdout
    assert "find me later" in text and "Fair winds and following seas" in text and "chat default" in text
    missing = shipyard("traces", "show", "ffffffff", "--home", home, cwd=tmp_path, check=False)
    assert missing.returncode == 1 and "no trace" in missing.stdout
    bad = shipyard("traces", "list", "--home", home, "--since", "yesterday-ish", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "duration" in bad.stderr


def test_chat_through_running_gateway(shipyard_server: Any, tmp_path: Path) -> None:
    server = shipyard_server(CONFIG)
    key = {"SHIPYARD_API_KEY": server.admin_key}
    r = shipyard("chat", "Hello there", "--url", server.url, cwd=tmp_path, env=key)
    assert "Fair winds and following seas" in r.stdout
    # Interactive: two turns on stdin, then EOF.
    r = shipyard("chat", "--url", server.url, "-r", "ab", cwd=tmp_path, env=key, input="first\nsecond\n")
    assert r.stdout.count("Fair winds and following seas") == 2
    deadline = time.monotonic() + 5
    while count_traces(server.store_url()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count_traces(server.store_url()) == 3
    bad = shipyard("chat", "hi", "--url", server.url, "-r", "nope", cwd=tmp_path, env=key, check=False)
    assert bad.returncode == 1 and "route `nope` does not exist" in bad.stderr


def test_chat_in_process_is_traced_to_the_same_store(tmp_path: Path) -> None:
    (tmp_path / "shipyard.yaml").write_text(CONFIG)
    home = tmp_path / "home"
    r = shipyard("chat", "Hello", "--in-process", "--home", str(home), cwd=tmp_path)
    assert "Fair winds and following seas" in r.stdout
    assert f"created a new store at {home / 'shipyard.db'}" in r.stderr  # --in-process may create it
    r = shipyard("chat", "Once", "--completion", "--in-process", "--home", str(home), cwd=tmp_path)
    assert "Fair winds" in r.stdout
    assert count_traces(f"sqlite:///{home / 'shipyard.db'}") == 2


def test_chat_with_unreachable_url_is_a_clear_error(tmp_path: Path) -> None:
    r = shipyard("chat", "hi", "--url", f"http://127.0.0.1:{free_port()}", cwd=tmp_path, check=False)
    assert r.returncode == 1 and "no gateway answers" in r.stderr


def test_mock_upstream_command(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shipyard", "mock-upstream", "--port", str(port), "--answer", "mocked"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
                )
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert r.json()["choices"][0]["message"]["content"] == "mocked"
    finally:
        proc.terminate()
        proc.wait(10)
