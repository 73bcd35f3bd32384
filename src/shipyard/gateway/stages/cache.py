"""The cache stage: the slot where a response cache plugs in (``gateway/cache.py``: per route, opt-in).
An empty slot, or a route the cache does not apply to, costs an attribute check per request.

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
from shipyard.providers.base import Completion, Embeddings, StreamChunk, Usage

log = logging.getLogger("shipyard.gateway")

# A Shipyard body field, never sent upstream: `"cache": false` keeps the request out of the cache.
OPT_OUT_FIELD = "cache"
HIT_ATTR = "shipyard.cache.hit"  # on the root span, only where the route uses a cache
SOURCE_ATTR = "shipyard.cache.source_trace"  # on a hit: the trace that produced the answer
SAVED_USD_ATTR = "shipyard.cache.saved_usd"  # on a hit: what the answer cost when it was made
SAVED_TOKENS_ATTR = "shipyard.cache.saved_tokens"  # on a hit: its input plus output tokens
MATCH_ATTR = "shipyard.cache.match"  # on a hit: exact | semantic
SIMILARITY_ATTR = "shipyard.cache.similarity"  # semantic: of the match, or of a refused candidate
REFUSED_ATTR = "shipyard.cache.refused"  # semantic miss: why the guard refused a similar candidate


@dataclass(slots=True)
class CachedAnswer:
    """An answer as its client got it, and what produced it (the trace of a hit names it)."""

    target: str | None
    provider: str | None
    model: str | None
    result: Completion | Embeddings | None = None  # a whole answer
    chunks: list[StreamChunk] | None = None  # a streamed answer, event by event
    source_trace: str | None = None  # the trace whose answer this is (on a hit)
    saved_usd: float | None = None  # what that answer cost (on a hit: what the hit saved)
    match: str = "exact"  # how the hit was found: exact | semantic
    similarity: float | None = None  # semantic: of the two conversations

    def usage(self) -> Usage | None:
        """The tokens the answer took when it was made."""
        if self.result is not None:
            return self.result.usage
        for chunk in reversed(self.chunks or []):
            if chunk.usage is not None:
                return chunk.usage
        return None


class ResponseCache(Protocol):
    """What a response cache implements. Keys are its own business: ``req`` carries the route (and
    its version), the redacted body, the plan and the principal."""

    async def lookup(self, req: Request, stream: bool) -> CachedAnswer | None:
        """The answer to send instead of calling a provider (for ``stream``: one with ``chunks``)."""
        ...

    async def store(self, req: Request, answer: CachedAnswer) -> None:
        """Keep an answer that passed the output guards."""
        ...

    def applies(self, req: Request) -> bool:
        """Whether the request's route uses this cache at all (a plain check, no await)."""
        ...

    def release(self, req: Request) -> None:
        """The request ended, answered or not: whatever it held in the cache is let go."""
        ...


class CacheSlot:
    """The stage around an optional :class:`ResponseCache` (``backend``). The pipeline calls it only
    while :attr:`active`, so an empty slot adds no await to a request."""

    def __init__(self, backend: ResponseCache | None = None) -> None:
        self.backend = backend

    @property
    def active(self) -> bool:
        return self.backend is not None

    def applies(self, req: Request) -> bool:
        """Whether the cache stage runs for this request: a cache is plugged in and its route uses it."""
        return self.backend is not None and self.backend.applies(req)

    def release(self, req: Request) -> None:
        if self.backend is not None:
            try:
                self.backend.release(req)
            except Exception:
                log.exception("response cache release failed for trace %s", req.trace.trace_id)

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
        attributes = req.root.attributes
        attributes[HIT_ATTR] = cached is not None
        if cached is not None:
            trace = req.trace
            trace.target, trace.provider, trace.model = cached.target, cached.provider, cached.model
            attributes[MATCH_ATTR] = cached.match
            if cached.similarity is not None:
                attributes[SIMILARITY_ATTR] = round(cached.similarity, 4)
            if cached.source_trace is not None:
                attributes[SOURCE_ATTR] = cached.source_trace
            if cached.saved_usd:
                attributes[SAVED_USD_ATTR] = cached.saved_usd
            usage = cached.usage()
            if usage is not None:
                attributes[SAVED_TOKENS_ATTR] = usage.total_tokens
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
