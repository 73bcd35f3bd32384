"""The cache stage: the slot where a response cache plugs in. None is plugged in yet, and an empty
slot costs one attribute check per request.

Where it sits, and why there: after the input guards (a key must be built from the redacted body,
and a blocked request must not be answered from the cache), after the plan (the target chosen by a
weighted or sticky split is part of the answer: a cache that ignored it would serve one canary
arm's answers to the other) and after the limits (a hit still counts as a request; it settles at
no cost); before the attempts, which a hit replaces. Answers are stored after the output guards, so
a hit is sent as it is, without guarding it again; an answer in which the guards restored the
client's own redacted values (``restore_pii``) is personal, and is never offered to the cache.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from shipyard.gateway.stages.context import Request
from shipyard.providers.base import Completion, Embeddings, StreamChunk

log = logging.getLogger("shipyard.gateway")

HIT_ATTR = "shipyard.cache.hit"  # on the root span, only when a cache is plugged in


@dataclass(slots=True)
class CachedAnswer:
    """An answer as its client got it, and what produced it (the trace of a hit names it)."""

    target: str | None
    provider: str | None
    model: str | None
    result: Completion | Embeddings | None = None  # a whole answer
    chunks: list[StreamChunk] | None = None  # a streamed answer, event by event


class ResponseCache(Protocol):
    """What a response cache implements. Keys are its own business: ``req`` carries the route (and
    its version), the redacted body, the plan and the principal."""

    async def lookup(self, req: Request, stream: bool) -> CachedAnswer | None:
        """The answer to send instead of calling a provider (for ``stream``: one with ``chunks``)."""
        ...

    async def store(self, req: Request, answer: CachedAnswer) -> None:
        """Keep an answer that passed the output guards."""
        ...


class CacheSlot:
    """The stage around an optional :class:`ResponseCache` (``backend``). The pipeline calls it only
    while :attr:`active`, so an empty slot adds no await to a request."""

    def __init__(self, backend: ResponseCache | None = None) -> None:
        self.backend = backend

    @property
    def active(self) -> bool:
        return self.backend is not None

    async def lookup(self, req: Request, stream: bool) -> CachedAnswer | None:
        """A usable hit (recorded on the trace), or None. A failing cache is a miss, never an
        error: the providers can still answer."""
        assert self.backend is not None
        try:
            cached = await self.backend.lookup(req, stream)
        except Exception:
            log.exception("response cache lookup failed for trace %s", req.trace.trace_id)
            cached = None
        if cached is not None and not (cached.chunks if stream else cached.result is not None):
            cached = None  # a whole answer cannot be replayed as a stream, nor chunks sent whole
        req.root.attributes[HIT_ATTR] = cached is not None
        if cached is not None:
            trace = req.trace
            trace.target, trace.provider, trace.model = cached.target, cached.provider, cached.model
        return cached

    async def store(self, req: Request, answer: CachedAnswer) -> None:
        assert self.backend is not None
        if req.guard is not None and req.guard.restore:
            return
        try:
            await self.backend.store(req, answer)
        except Exception:
            log.exception("response cache store failed for trace %s", req.trace.trace_id)

    @staticmethod
    def answer(
        req: Request, result: Completion | Embeddings | None = None, chunks: list[StreamChunk] | None = None
    ) -> CachedAnswer:
        """What to store for the request's answer, named after the target that produced it."""
        trace = req.trace
        return CachedAnswer(trace.target, trace.provider, trace.model, result, chunks)
