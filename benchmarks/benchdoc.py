"""What the benchmark scripts share: a free port, a `shipyard up` to measure, and their section of
docs/benchmarks.md.

Each script owns one section between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` and rewrites
only that, so reruns of one benchmark leave the others' numbers alone.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
INTRO = (
    "# Benchmarks\n\nEvery number here comes from a script in `benchmarks/` that anyone can rerun; each "
    "compares Shipyard with the alternative a user would pick, in one run on one machine.\n\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_section(name: str, section: str) -> Path:
    """Put ``section`` between the markers of ``name`` in docs/benchmarks.md (appended if new)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{section.rstrip()}\n{end}\n"
    text = DOC.read_text() if DOC.exists() else INTRO
    if begin in text:
        text = re.sub(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block
    DOC.write_text(text)
    return DOC


def start_shipyard(home: Path, config: str, env: Mapping[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """``shipyard up`` on a free port with ``config`` (YAML text) and ``env`` added to this process's
    environment, once ``/readyz`` says it is ready: the process and its base URL."""
    port = free_port()
    path = home.parent / f"{home.name}.yaml"
    path.write_text(config)
    args = ["up", "--port", str(port), "--home", str(home), "--config", str(path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "shipyard", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "SHIPYARD_LOG_LEVEL": "warning", **env},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("shipyard up did not become ready within 60 s")
