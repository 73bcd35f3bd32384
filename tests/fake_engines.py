"""Engines for model worker processes in tests (provider option `engine_factory`), so the process
boundary — crashes, kills, restarts, cancellation — is tested in seconds, without the real model.

The "model file" (`model_path`) is a JSON object saying how to behave:

    {"delay": 0.01,             seconds per generated token
     "pieces": 50,              tokens per answer (each " tok")
     "load_delay": 0,           seconds to "load"
     "crash_on_load": false,    segfault while loading
     "crash_on_load_if": PATH,  segfault while loading when PATH exists (crash loops after a restart)
     "fail_on_load": false,     raise a clean load error
     "starts": PATH}            append a line to PATH at every start (counts restarts)

A prompt containing CRASH segfaults the worker mid-generation.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shipyard.providers.model_worker import Sampling


def segfault() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV, as a native crash would


class ScriptedEngine:
    def __init__(self, spec: dict[str, Any], n_ctx: int) -> None:
        self.spec = spec
        self.n_ctx = n_ctx
        self.n_vocab = 256

    def tokenize(self, text: str, *, bos: bool, special: bool) -> list[int]:
        return list(text.encode())

    def generate(self, tokens: list[int], sampling: Sampling) -> Iterator[bytes]:
        if b"CRASH" in bytes(tokens):
            time.sleep(0.05)
            segfault()
        for _ in range(int(self.spec.get("pieces", 50))):
            time.sleep(float(self.spec.get("delay", 0.01)))
            yield b" tok"

    def template(self) -> dict[str, str] | None:
        return None

    def describe(self) -> str:
        return f"scripted engine (pid {os.getpid()})"

    def close(self) -> None:
        return None


def scripted(options: dict[str, Any]) -> ScriptedEngine:
    spec = json.loads(Path(options["model_path"]).read_text())
    if spec.get("starts"):
        with open(spec["starts"], "a") as f:
            f.write(f"{os.getpid()}\n")
    time.sleep(float(spec.get("load_delay", 0)))
    if spec.get("crash_on_load") or (
        spec.get("crash_on_load_if") and Path(spec["crash_on_load_if"]).exists()
    ):
        segfault()
    if spec.get("fail_on_load"):
        raise ValueError("this is not a model file")
    return ScriptedEngine(spec, int(options["n_ctx"]))
