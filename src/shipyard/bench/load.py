"""The load generator: one httpx client, requests sent at a fixed concurrency, at Poisson arrivals,
or at the arrival times of replayed traces, each measured with ``time.perf_counter``.

Streams are read as raw bytes and split into server-sent events here, so a token's arrival time is
the moment its bytes were read, with no client library in between (docs/bench.md).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson

from shipyard.bench.metrics import Record, samples, summarize
from shipyard.bench.workload import Item, Workload

# Hard bounds, whatever the options say (the CLI's --help states them).
MAX_CONCURRENCY = 1024
MAX_REQUESTS = 1_000_000
MAX_DURATION_S = 24 * 3600.0
MAX_RATE = 10_000.0

LoadKind = Literal["concurrency", "rate", "replay"]


@dataclass(frozen=True)
class Target:
    """Where requests go: ``base`` is the API root (``…/v1``); ``model`` is the route or model name."""

    base: str
    model: str
    key: str | None = None
    stream: bool = True
    timeout_s: float = 60.0

    @staticmethod
    def api_root(url: str) -> str:
        url = url.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"


@dataclass(frozen=True)
class Load:
    """One level of load: ``value`` is the concurrency, or the mean arrival rate (requests/s);
    ``max_in_flight`` caps open-loop modes (a rate the server cannot keep up with queues here)."""

    kind: LoadKind
    value: float
    max_in_flight: int

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "max_in_flight": self.max_in_flight}


@dataclass(frozen=True)
class Bounds:
    requests: int
    duration_s: float


OnRecord = Callable[[Record], None]


def _error_detail(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace")
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message", ""))[:200]
    return raw[:200].decode("utf-8", "replace")


def _usage_tokens(data: Any) -> int | None:
    usage = data.get("usage") if isinstance(data, dict) else None
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        return int(usage["completion_tokens"])
    return None


def _content(data: Any) -> bool:
    """Whether an event carries answer text."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        return False
    delta = choices[0].get("delta") or {}
    return bool(isinstance(delta, dict) and delta.get("content"))


async def _read_stream(resp: httpx.Response, rec: Record, t0: float) -> None:
    buffer = b""
    last: float | None = None
    chunks = 0
    usage: int | None = None
    async for raw in resp.aiter_raw():
        now = time.perf_counter()  # every event in this read arrived now
        buffer += raw
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                continue
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                rec.error, rec.detail = "stream_error", f"not JSON: {payload[:80]!r}"
                return
            if isinstance(data, dict) and data.get("error"):
                rec.error, rec.detail = "stream_error", _error_detail(payload)
                return
            tokens = _usage_tokens(data)
            if tokens is not None:
                usage = tokens
            if _content(data):
                chunks += 1
                if last is None:
                    rec.ttft_ms = (now - t0) * 1000
                else:
                    rec.itl_ms.append((now - last) * 1000)
                last = now
    rec.output_tokens = usage if usage is not None else chunks


async def send_one(client: httpx.AsyncClient, target: Target, body: dict[str, Any]) -> Record:
    """Send one chat request and measure it; failures become an error type, never an exception."""
    payload = {**body, "model": target.model, "stream": target.stream}
    if target.stream:
        payload["stream_options"] = {"include_usage": True}
    data = orjson.dumps(payload)
    t0 = time.perf_counter()
    rec = Record(sent=t0)
    try:
        async with asyncio.timeout(target.timeout_s):
            async with client.stream("POST", target.base + "/chat/completions", content=data) as resp:
                if resp.status_code >= 400:
                    rec.error, rec.detail = f"http_{resp.status_code}", _error_detail(await resp.aread())
                elif target.stream:
                    await _read_stream(resp, rec, t0)
                else:
                    raw = await resp.aread()
                    try:
                        answer = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        rec.error, rec.detail = "bad_response", raw[:80].decode("utf-8", "replace")
                    else:
                        rec.output_tokens = _usage_tokens(answer) or 0
    except TimeoutError:
        rec.error, rec.detail = "timeout", f"no complete answer within {target.timeout_s:g} s"
    except httpx.TimeoutException as exc:
        rec.error, rec.detail = "timeout", type(exc).__name__
    except httpx.TransportError as exc:
        rec.error, rec.detail = "connection", f"{type(exc).__name__}: {exc}"[:200]
    rec.e2e_ms = (time.perf_counter() - t0) * 1000
    return rec


def client_for(target: Target, connections: int) -> httpx.AsyncClient:
    """One client, its pool sized to the most requests that can be in flight at once."""
    headers = {"content-type": "application/json"}
    if target.key:
        headers["authorization"] = f"Bearer {target.key}"
    return httpx.AsyncClient(
        headers=headers,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(target.timeout_s, connect=min(10.0, target.timeout_s)),
        trust_env=False,
    )


class _Level:
    """The state of one level while it runs."""

    def __init__(self, on_record: OnRecord | None) -> None:
        self.records: list[Record] = []
        self.in_flight = 0
        self.peak = 0
        self.delayed = 0  # open loop: arrivals that waited because max_in_flight requests were open
        self.on_record = on_record

    async def send(self, client: httpx.AsyncClient, target: Target, item: Item) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            rec = await send_one(client, target, item.body)
        finally:
            self.in_flight -= 1
        self.records.append(rec)
        if self.on_record is not None:
            self.on_record(rec)


async def run_level(
    target: Target,
    workload: Workload,
    load: Load,
    bounds: Bounds,
    slo: dict[str, float],
    seed: int = 0,
    on_record: OnRecord | None = None,
) -> dict[str, Any]:
    """Run one level of load and return its summary, its distributions and what was asked."""
    state = _Level(on_record)
    items = itertools.cycle(workload.items)
    cap = int(load.value) if load.kind == "concurrency" else load.max_in_flight
    start = time.perf_counter()
    deadline = start + bounds.duration_s
    async with client_for(target, cap) as client:
        if load.kind == "concurrency":
            issued = itertools.count()

            async def worker() -> None:
                while time.perf_counter() < deadline and next(issued) < bounds.requests:
                    await state.send(client, target, next(items))

            await asyncio.gather(*(worker() for _ in range(cap)))
        else:
            arrivals = _arrivals(load, workload.items, seed)
            gate = asyncio.Semaphore(cap)
            tasks: set[asyncio.Task[None]] = set()

            async def gated(item: Item) -> None:
                try:
                    await state.send(client, target, item)
                finally:
                    gate.release()

            for n, (at, item) in enumerate(arrivals):
                if n >= bounds.requests or at > bounds.duration_s:
                    break
                wait = start + at - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                if gate.locked():
                    state.delayed += 1
                await gate.acquire()
                task = asyncio.create_task(gated(item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
    records = state.records
    wall = (max(r.sent + r.e2e_ms / 1000 for r in records) - start) if records else 0.0
    summary = summarize(records, wall, slo, state.peak)
    if load.kind != "concurrency":
        summary["delayed_arrivals"] = state.delayed
        # The rate the arrivals actually had: sends over the span from the first send to the last.
        sends = sorted(r.sent for r in records)
        span = sends[-1] - sends[0] if len(sends) > 1 else 0.0
        summary["offered_rate"] = round((len(sends) - 1) / span, 3) if span > 0 else 0.0
    return {"load": load.to_dict(), "summary": summary, "samples": samples(records)}


def _arrivals(load: Load, items: Sequence[Item], seed: int) -> itertools.chain[tuple[float, Item]]:
    """(offset in seconds, item) pairs: exponential gaps at ``load.value`` per second (Poisson
    arrivals, seeded, cycling through the items), or a replay's own times, each item once."""
    if load.kind == "replay":
        return itertools.chain((item.at or 0.0, item) for item in items)
    rng = random.Random(seed)

    def poisson() -> Any:
        t = 0.0
        for item in itertools.cycle(items):
            t += rng.expovariate(load.value)
            yield t, item

    return itertools.chain(poisson())
