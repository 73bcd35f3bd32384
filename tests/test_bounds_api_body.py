"""The admin API has a body-size limit (issue 12, item 9): `api_max_body_bytes` for JSON bodies
and dataset imports, `artifact_max_bytes` for artifact uploads; over it, a 413 naming the
setting, whether the body declares its length or is sent in chunks. Through the real server.

Before the fix, 50 MB of run notes were accepted and cost the server about 110 MB of memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import ShipyardServer

MB = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShipyardServer]:
    env = {"SHIPYARD_API_MAX_BODY_BYTES": str(MB), "SHIPYARD_ARTIFACT_MAX_BYTES": str(2 * MB)}
    s = ShipyardServer(tmp_path_factory.mktemp("body") / "home", env=env).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def run_id(server: ShipyardServer) -> str:
    with server.api() as api:
        r = api.post("/runs", json={"name": "limits", "notes": "small notes are fine"})
    assert r.status_code == 201, r.text
    return str(r.json()["run_id"])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/<pid>/status on this system")


def check_413(r: httpx.Response, setting: str) -> str:
    assert r.status_code == 413, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert err["code"] == "request_too_large" and f"`{setting}`" in err["message"]
    return str(err["message"])


def test_fifty_megabytes_of_run_notes_get_a_413(server: ShipyardServer, run_id: str) -> None:
    assert server.proc is not None
    before = peak_rss_mb(server.proc.pid)
    body = orjson.dumps({"notes": "n" * (50 * MB)})
    with server.api(timeout=120) as api:
        r = api.patch(f"/runs/{run_id}", content=body, headers={"content-type": "application/json"})
        message = check_413(r, "api_max_body_bytes")
        assert f"{len(body):,} bytes" in message and "1,048,576 bytes" in message
        # Nothing was stored; bodies within the limit still work.
        assert api.get(f"/runs/{run_id}").json()["notes"] == "small notes are fine"
        ok = api.patch(f"/runs/{run_id}", json={"notes": "n" * (MB // 2)})
        assert ok.status_code == 200 and len(ok.json()["notes"]) == MB // 2
    assert peak_rss_mb(server.proc.pid) - before < 60


def test_a_chunked_body_without_a_length_is_counted_as_it_arrives(
    server: ShipyardServer, run_id: str
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"notes": "'
        for _ in range(40):
            yield b"n" * 65536
        yield b'"}'

    with server.api(timeout=60) as api:
        r = api.patch(f"/runs/{run_id}", content=chunks(), headers={"content-type": "application/json"})
        check_413(r, "api_max_body_bytes")
        r = api.post("/datasets/big/import", params={"format": "jsonl"}, content=chunks())
        assert "append=true" in check_413(r, "api_max_body_bytes")
        assert api.get("/datasets/big").status_code == 404


def test_artifacts_have_their_own_larger_limit(server: ShipyardServer, run_id: str) -> None:
    with server.api(timeout=60) as api:
        ok = api.put(f"/runs/{run_id}/artifacts/model.bin", content=b"\0" * (MB + MB // 2))
        assert ok.status_code == 201, ok.text
        assert ok.json()["size"] == MB + MB // 2
        r = api.put(f"/runs/{run_id}/artifacts/too-big.bin", content=b"\0" * (3 * MB))
        assert "2,097,152 bytes" in check_413(r, "artifact_max_bytes")
        names = [a["path"] for a in api.get(f"/runs/{run_id}").json()["artifacts"]]
        assert "model.bin" in names and "too-big.bin" not in names
