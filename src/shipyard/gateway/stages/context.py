"""What flows through the request pipeline: one :class:`Request`, which each stage reads and
extends, and the error a request ends with when its client leaves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.errors import ShipyardError

if TYPE_CHECKING:
    from shipyard.gateway.auth import Principal
    from shipyard.gateway.limits import Ticket
    from shipyard.gateway.runtime import Route, Runtime, Target
    from shipyard.guard.pipeline import GuardState
    from shipyard.tracing.spans import Span, Trace

OPERATIONS = {"chat": "chat", "completion": "text_completion", "embeddings": "embeddings"}


@dataclass(slots=True)
class Request:
    """One request on its way through the stages. The first block is fixed when it enters; each
    stage fills in the field it owns (input guards: ``body`` and ``guard``; plan: ``plan``; limits:
    ``ticket``), so a later stage sees what earlier ones decided without calling them again."""

    op: str  # chat | completion | embeddings
    body: dict[str, Any]  # the client's body; the input guards may swap in a redacted copy
    route: Route
    # The runtime the request started on: a registry reload swaps the gateway's runtime mid-request,
    # and the retired one closes only when its own requests have ended.
    runtime: Runtime
    key: str | None  # the sticky and fairness key (session header, or the body's `user`)
    # The API key that the HTTP edge (gateway/http.py) already checked; None for public routes and
    # in-process callers. The pipeline never authenticates: it only reads limits and names from it.
    principal: Principal | None
    trace: Trace
    root: Span
    headers: Mapping[str, str] | None = None  # the client's request headers (Cache-Control)
    guard: GuardState | None = None
    plan: list[Target] = field(default_factory=list)
    ticket: Ticket | None = None
    cache_key: str | None = None  # set by the cache stage when the answer may be stored


class ClientGone(ShipyardError):
    """The client disconnected (or the request was cancelled) before its answer was complete."""

    status = 499
    type = "client_closed_request"
