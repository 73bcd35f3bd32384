"""What one traced request looks like in memory, before the batch writer stores it.

Building these is the only tracing work on the request path, so they are plain slotted
dataclasses; serialization, truncation and cost lookups happen in the writer thread.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

_rand = random.Random()


def new_trace_id() -> str:
    """128 bits like any W3C/OpenTelemetry trace id: a millisecond timestamp, then 80 random bits.

    Time-ordered ids keep the store's primary-key B-trees append-only (inserts stay cheap at
    millions of traces) and sort in arrival order."""
    return f"{int(time.time() * 1000):012x}{_rand.getrandbits(80):020x}"


def new_span_id() -> str:
    return f"{_rand.getrandbits(64):016x}"


@dataclass(slots=True)
class Span:
    name: str
    trace_id: str
    parent_id: str | None = None
    span_id: str = field(default_factory=new_span_id)
    start: float = field(default_factory=time.time)
    end: float = 0.0
    status: str = "ok"
    attributes: dict[str, Any] = field(default_factory=dict)

    def finish(self, status: str = "ok", **attributes: Any) -> None:
        self.end = time.time()
        self.status = status
        if attributes:
            self.attributes.update(attributes)

    @property
    def duration_ms(self) -> float:
        return ((self.end or time.time()) - self.start) * 1000


@dataclass(slots=True)
class Trace:
    """One request. ``input`` is the messages/prompt/input as received; ``output`` the answer text."""

    operation: str
    trace_id: str = field(default_factory=new_trace_id)
    start: float = field(default_factory=time.time)
    end: float = 0.0
    source: str = "gateway"
    route: str | None = None
    target: str | None = None
    provider: str | None = None
    model: str | None = None
    status: str = "ok"
    status_code: int = 200
    error: str | None = None
    ttft_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    stream: bool = False
    attempts: int = 0
    user_id: str | None = None
    input: Any = None
    output: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    # Registry lineage: the versions that served this request.
    route_version: int | None = None
    model_version: int | None = None
    prompt: str | None = None
    prompt_version: int | None = None
    tags: list[str] | None = None
    spans: list[Span] = field(default_factory=list)

    def span(self, name: str, parent: Span | None = None, attributes: dict[str, Any] | None = None) -> Span:
        s = Span(name, self.trace_id, parent.span_id if parent else None, attributes=attributes or {})
        self.spans.append(s)
        return s

    @property
    def latency_ms(self) -> float:
        return ((self.end or time.time()) - self.start) * 1000
