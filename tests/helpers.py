"""Small helpers shared by tests (servers live in conftest.py)."""

from __future__ import annotations

import time
from typing import Any

from shipyard.store import traces as q
from shipyard.store.db import Store


def wait_trace(store_url: str, trace_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The stored trace, once the batch writer has written it."""
    store = Store(store_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            t = q.get_trace(store, trace_id)
            if t is not None:
                return t
            if time.monotonic() > deadline:
                raise AssertionError(f"trace {trace_id} was not written within {timeout}s")
            time.sleep(0.05)
    finally:
        store.close()


def count_traces(store_url: str, **filters: Any) -> int:
    store = Store(store_url)
    try:
        return q.count_traces(store, q.TraceFilter(**filters))
    finally:
        store.close()


def attempt_spans(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Provider-attempt spans (they carry shipyard.attempt), in attempt order."""
    spans = [s for s in trace["spans"] if (s["attributes"] or {}).get("shipyard.attempt")]
    return sorted(spans, key=lambda s: s["attributes"]["shipyard.attempt"])
