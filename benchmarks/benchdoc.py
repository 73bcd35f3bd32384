"""What the benchmark scripts share: a free port, and their section of docs/benchmarks.md.

Each script owns one section between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` and rewrites
only that, so reruns of one benchmark leave the others' numbers alone.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

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
