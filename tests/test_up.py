"""`shipyard up` on the first-run path: nothing changes in a store until the new server can really
serve, and a second server on a store another one serves is a deliberate act (`--join`)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ShipyardServer, free_port

CONFIG = """
version: 1
providers: [{name: mock, type: mock, output: "first"}]
models: [{name: m, provider: mock}]
routes: [{name: alpha, targets: [{model: m}]}]
"""
UP = [sys.executable, "-m", "shipyard", "up"]
OTHER = """
version: 1
providers: [{name: mock, type: mock, output: "second"}]
models: [{name: m, provider: mock}]
routes: [{name: alpha, targets: [{model: m}]}, {name: beta, targets: [{model: m}]}]
"""


def up(s: ShipyardServer, config: Path, port: int, *extra: str, timeout: float = 60) -> Any:
    return subprocess.run(
        [*UP, "--home", str(s.home), "--port", str(port), "--config", str(config), *extra],
        capture_output=True,
        text=True,
        env=s.env,
        timeout=timeout,
    )


def routes(s: ShipyardServer) -> set[str]:
    return {m.id for m in s.openai().models.list()}


def revision(s: ShipyardServer) -> int:
    return int(httpx.get(s.url + "/readyz").json()["registry_revision"])


def test_port_in_use_exits_3_and_changes_nothing(shipyard_server: Any, tmp_path: Path) -> None:
    s = shipyard_server(CONFIG)
    before = revision(s)
    other = tmp_path / "other.yaml"
    other.write_text(OTHER)
    r = up(s, other, s.port)
    assert r.returncode == 3, r.stderr
    assert f"port {s.port}" in r.stderr and "already in use" in r.stderr and "--port" in r.stderr
    time.sleep(1.5)  # longer than the running server's reload interval
    assert routes(s) == {"alpha"} and revision(s) == before
    assert s.openai().chat.completions.create(model="alpha", messages=[{"role": "user", "content": "x"}])


def test_a_second_server_on_the_same_store_is_refused_unless_it_joins(
    shipyard_server: Any, tmp_path: Path
) -> None:
    s = shipyard_server(CONFIG)
    before = revision(s)
    other = tmp_path / "other.yaml"
    other.write_text(OTHER)
    r = up(s, other, free_port())
    assert r.returncode == 3, r.stderr
    assert "another Shipyard server" in r.stderr and s.url in r.stderr and "--join" in r.stderr
    time.sleep(1.5)
    assert routes(s) == {"alpha"} and revision(s) == before
    # Deliberately: --join serves the same store, and its config reaches the first server too.
    port = free_port()
    joined = subprocess.Popen(
        [*UP, "--home", str(s.home), "--port", str(port), "--config", str(other), "--join"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=s.env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert joined.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while routes(s) != {"alpha", "beta"}:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        joined.terminate()
        joined.wait(30)


def test_the_store_is_free_again_once_the_server_stops(tmp_path: Path) -> None:
    s = ShipyardServer(tmp_path / "home", CONFIG).start()
    s.stop()
    again = ShipyardServer(tmp_path / "home", CONFIG)
    again.start()
    try:
        assert routes(again) == {"alpha"}
    finally:
        again.stop()
