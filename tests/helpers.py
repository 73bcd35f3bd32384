"""Small helpers shared by tests (servers live in conftest.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

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


@dataclass(frozen=True)
class NamedKey:
    """An API key made through the admin API; changes made with it are recorded as ``actor``."""

    secret: str
    key_id: str
    name: str

    @property
    def actor(self) -> str:
        return f"{self.name} ({self.key_id})"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


def named_key(server: Any, name: str, role: str = "developer") -> NamedKey:
    """A new key called ``name`` on a running server (made with its admin key): who made a change
    is the calling key, so tests that check the recorded actor call with a key of that name."""
    with server.api() as api:
        r = api.post("/keys", json={"name": name, "role": role})
    assert r.status_code == 201, r.text
    body = r.json()
    return NamedKey(body["key"], body["id"], name)


def api_as(server: Any, key: NamedKey, **kwargs: Any) -> httpx.Client:
    """An httpx client for the server's `/api` that calls with ``key``."""
    kwargs.setdefault("timeout", 30)
    headers = {**kwargs.pop("headers", {}), **key.headers}
    return httpx.Client(base_url=server.url + "/api", headers=headers, **kwargs)


def csrf_token(page: str) -> str:
    """The CSRF token a dashboard page carries (a change made with its session cookie needs it)."""
    marker = 'name="csrf-token" content="'
    assert marker in page, "not a dashboard page (no csrf-token meta tag)"
    return page.split(marker, 1)[1].split('"', 1)[0]


def every_page(api: httpx.Client, path: str, params: dict[str, Any] | None = None) -> list[Any]:
    """Every item of an `/api` list, following `next` page after page."""
    seen: list[Any] = []
    cursor = None
    for _ in range(1000):
        r = api.get(path, params={**(params or {}), **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"data", "next"}, body
        seen += body["data"]
        cursor = body["next"]
        if cursor is None:
            return seen
    raise AssertionError(f"the pages of {path} did not end")
