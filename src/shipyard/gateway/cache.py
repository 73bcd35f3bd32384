"""The response cache that plugs into the pipeline's cache slot (``stages/cache.py``): per route,
opt-in (``cache:`` in a route), exact match, in this process or in Redis (shared by every gateway
worker that uses the same ``redis_url``).

What the key covers: everything that changes the answer. The route and its version (a new version
of the route, of its prompt or of a model changes the key, so an answer made under an older version
is never served; it ages out), the target the plan chose with its model and prompt versions (a
canary arm's answers are not served to the other arm), the operation and whether it streams, the
scope (the API key; with ``scope: user`` also the end user; nothing with ``scope: global``), and the
request body as the input guards left it: messages (system prompt included), sampling parameters,
tools, response format, every other field. Only ``user`` (outside ``scope: user``) and the cache's
own opt-out field are left out.

What is never cached: requests with a ``temperature`` above 0 (from the client, the target, the
prompt or the model's defaults) unless the route sets ``sampled: true``; requests that opt out
(``Cache-Control: no-store`` stores and reads nothing, ``no-cache`` skips the lookup and stores the
fresh answer; the body field ``"cache": false`` is ``no-store``); answers in which the output
guards restored the client's own redacted values (personal); answers larger than
``max_entry_bytes``; failures.

Single flight: while one request for a key is being answered, identical requests in this process
wait for it (up to ``FLIGHT_WAIT_S``) and are then answered from the cache, so a burst of the same
request makes one upstream call.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

import orjson

from shipyard.gateway.meaning import meaning
from shipyard.gateway.semantic import (
    REDIS_INDEX_PREFIX,
    Candidate,
    Embedder,
    MemoryIndex,
    Probe,
    RedisIndex,
    SemanticIndex,
    best_match,
    partition,
    turns,
)
from shipyard.gateway.stages.cache import OPT_OUT_FIELD, REFUSED_ATTR, SIMILARITY_ATTR, CachedAnswer
from shipyard.gateway.stages.context import Request
from shipyard.providers.base import Completion, Embeddings, StreamChunk, Usage
from shipyard.store.redis_pool import POOL_SIZE, POOL_TIMEOUT_S, async_client

log = logging.getLogger("shipyard.gateway")

# How long an identical request waits for the one in flight before it calls the provider itself.
FLIGHT_WAIT_S = 120.0
FORMAT = 1  # of a stored entry; entries of another format are misses
SEMANTIC_FORMAT = 1  # bumped when conversations are embedded or compared otherwise: old partitions go unread
REDIS_PREFIX = "shipyard:cache:"


class EntryStore(Protocol):
    """Where entries live: bytes under a key, for ``ttl`` seconds."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def close(self) -> None: ...


class MemoryEntries:
    """Entries in this process: least recently used first out, bounded by count and by bytes."""

    def __init__(self, max_entries: int = 100_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        if len(value) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic() + ttl, value)
        self.bytes += len(value)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.bytes -= len(value)

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0


class RedisEntries:
    """Entries in Redis, shared by every gateway worker on the same server; Redis expires them."""

    def __init__(
        self,
        url: str,
        prefix: str = REDIS_PREFIX,
        max_connections: int = POOL_SIZE,
        pool_timeout: float = POOL_TIMEOUT_S,
    ) -> None:
        self.prefix = prefix
        self.client = async_client(url, max_connections, pool_timeout)

    async def get(self, key: str) -> bytes | None:
        value = await self.client.get(self.prefix + key)
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self.client.set(self.prefix + key, value, px=max(1, int(ttl * 1000)))

    async def close(self) -> None:
        await self.client.aclose()


def cache_control(req: Request) -> tuple[bool, bool]:
    """(read, write): what the request allows the cache to do."""
    read = write = True
    if req.body.get(OPT_OUT_FIELD) is False:
        return False, False
    header = (req.headers or {}).get("cache-control")
    if header:
        directives = {d.strip().lower() for d in header.split(",")}
        if "no-store" in directives:
            return False, False
        if "no-cache" in directives:
            read = False
    return read, write


def effective_temperature(req: Request) -> float | None:
    """The temperature the chosen target will run with, from the one place that sets it last."""
    target = req.plan[0]
    for source in (
        target.params,
        req.body,
        target.prompt.params if target.prompt else {},
        target.model.params,
    ):
        value = source.get("temperature")
        if value is not None:
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    return None


# The body fields that hold the conversation: a semantic partition is the key's identity without them.
CONVERSATION_FIELDS = ("messages", "prompt", "variables")


def identity(req: Request, stream: bool) -> list[Any]:
    """Everything that changes the answer (see the module's docstring), as one JSON-able list whose
    last item is the request body."""
    route = req.route
    cfg = route.cache
    assert cfg is not None
    target = req.plan[0]
    principal = req.principal
    scope: list[Any] = []
    if cfg.scope != "global":
        scope.append(principal.key_id if principal is not None else None)
    if cfg.scope == "user":
        scope.append(req.key)
    body = {k: v for k, v in req.body.items() if k != OPT_OUT_FIELD and (k != "user" or cfg.scope == "user")}
    return [
        FORMAT,
        req.op,
        stream,
        route.name,
        route.version,
        target.label,
        target.provider_model,
        target.model_version,
        target.prompt.version if target.prompt is not None else None,
        scope,
        body,
    ]


def cache_key(req: Request, stream: bool) -> str:
    """The exact key of everything that changes the answer (see the module's docstring)."""
    raw = orjson.dumps(
        identity(req, stream), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str
    )
    return hashlib.sha256(raw).hexdigest()


def encode(answer: CachedAnswer, trace_id: str, saved_usd: float | None) -> bytes:
    """An entry as bytes: JSON, never pickle (whoever can write to Redis must not run code here)."""

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    entry: dict[str, Any] = {
        "format": FORMAT,
        "target": answer.target,
        "provider": answer.provider,
        "model": answer.model,
        "trace": trace_id,
        "usd": saved_usd,
    }
    result = answer.result
    if isinstance(result, Completion):
        entry["completion"] = {
            "raw": b64(result.to_bytes()),
            "text": result.text,
            "model": result.model,
            "finish": result.finish_reason,
            "usage": [result.usage.input_tokens, result.usage.output_tokens],
        }
    elif isinstance(result, Embeddings):
        entry["embeddings"] = {
            "raw": b64(result.raw) if result.raw is not None else None,
            "vectors": result.vectors if result.raw is None else None,
            "model": result.model,
            "usage": [result.usage.input_tokens, result.usage.output_tokens],
        }
    elif answer.chunks is not None:
        entry["chunks"] = [
            [
                b64(c.data),
                c.text,
                c.finish_reason,
                [c.usage.input_tokens, c.usage.output_tokens] if c.usage is not None else None,
            ]
            for c in answer.chunks
        ]
    return orjson.dumps(entry)


def decode(raw: bytes) -> tuple[CachedAnswer, str | None, float | None] | None:
    """An entry back as an answer, the trace that produced it and what it cost then; None for an
    entry this version cannot read."""
    entry = orjson.loads(raw)
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        return None
    answer = CachedAnswer(entry.get("target"), entry.get("provider"), entry.get("model"))
    if (c := entry.get("completion")) is not None:
        answer.result = Completion(
            None, Usage(*c["usage"]), c["text"], c["model"], c["finish"], base64.b64decode(c["raw"])
        )
    elif (e := entry.get("embeddings")) is not None:
        raw_bytes = base64.b64decode(e["raw"]) if e["raw"] is not None else None
        answer.result = Embeddings(e["vectors"] or [], Usage(*e["usage"]), e["model"], raw_bytes)
    elif (chunks := entry.get("chunks")) is not None:
        answer.chunks = [
            StreamChunk(
                base64.b64decode(d), text, usage=Usage(*u) if u is not None else None, finish_reason=finish
            )
            for d, text, finish, u in chunks
        ]
    else:
        return None
    return answer, entry.get("trace"), entry.get("usd")


class RouteCache:
    """The :class:`~shipyard.gateway.stages.cache.ResponseCache` of routes with ``cache:``: exact
    entries in ``entries``, and for ``mode: semantic`` routes the conversations that produced them in
    ``index`` (see :mod:`shipyard.gateway.semantic`)."""

    def __init__(self, entries: EntryStore, index: SemanticIndex | None = None) -> None:
        self.entries = entries
        self.index: SemanticIndex = index if index is not None else MemoryIndex()
        self.embedder = Embedder()
        self._flights: dict[str, tuple[asyncio.Future[None], str]] = {}
        self._probes: dict[str, Probe] = {}  # by trace id, from a semantic lookup until the store

    def applies(self, req: Request) -> bool:
        return req.route.cache is not None

    async def lookup(self, req: Request, stream: bool) -> CachedAnswer | None:
        cfg = req.route.cache
        if cfg is None or not req.plan:
            return None
        read, write = cache_control(req)
        if not cfg.sampled and (effective_temperature(req) or 0.0) > 0:
            return None
        key = cache_key(req, stream)
        if write:
            req.cache_key = key
        if not read:
            return None
        found = await self._get(key)
        if found is not None:
            return found
        if cfg.mode == "semantic":
            found = await self._semantic(req, stream, write)
            if found is not None:
                return found
        flight = self._flights.get(key)
        if flight is not None:
            try:
                await asyncio.wait_for(asyncio.shield(flight[0]), FLIGHT_WAIT_S)
            except TimeoutError:
                return None
            return await self._get(key)
        if write:
            self._flights[key] = (asyncio.get_running_loop().create_future(), req.trace.trace_id)
        return None

    async def _semantic(self, req: Request, stream: bool, write: bool) -> CachedAnswer | None:
        """The cached answer of the most similar conversation that asks the same thing, if any."""
        cfg = req.route.cache
        assert cfg is not None
        conversation = turns(req)
        if conversation is None:
            return None
        whole = identity(req, stream)
        whole[-1] = {k: v for k, v in whole[-1].items() if k not in CONVERSATION_FIELDS}
        probe = Probe(
            partition([*whole, SEMANTIC_FORMAT], [role for role, _ in conversation]),
            await self.embedder.vectors(conversation),
            meaning([text for _, text in conversation]),
        )
        if write:
            self._probes[req.trace.trace_id] = probe
        candidates = await self.index.candidates(probe.partition)
        while True:
            candidate, score, refused = best_match(probe, candidates, cfg.threshold)
            attributes = req.root.attributes
            if candidate is None:
                if refused is not None:
                    attributes[REFUSED_ATTR] = refused
                    attributes[SIMILARITY_ATTR] = round(score, 4)
                return None
            found = await self._get(candidate.key)
            if found is not None:
                found.match, found.similarity = "semantic", score
                return found
            candidates = [c for c in candidates if c is not candidate]  # its answer expired

    async def _get(self, key: str) -> CachedAnswer | None:
        raw = await self.entries.get(key)
        if raw is None:
            return None
        try:
            decoded = decode(raw)
        except (ValueError, KeyError, TypeError, IndexError):
            log.warning("response cache entry %s is unreadable; treated as a miss", key[:12])
            return None
        if decoded is None:
            return None
        answer, source, usd = decoded
        answer.source_trace, answer.saved_usd = source, usd
        return answer

    async def store(self, req: Request, answer: CachedAnswer) -> None:
        cfg = req.route.cache
        key = req.cache_key
        if cfg is None or key is None:
            return
        trace = req.trace
        try:
            raw = encode(answer, trace.trace_id, trace.cost_usd)
            if len(raw) <= cfg.max_entry_bytes:
                await self.entries.put(key, raw, cfg.ttl)
                probe = self._probes.pop(trace.trace_id, None)
                if probe is not None:
                    candidate = Candidate(key, probe.vectors, probe.meaning, time.time() + cfg.ttl)
                    await self.index.add(probe.partition, candidate)
        finally:  # a store that failed must not keep identical requests waiting
            self.release(req)

    def release(self, req: Request) -> None:
        """The request that led a flight ended (answered, stored or failed): wake its followers."""
        self._probes.pop(req.trace.trace_id, None)
        key = req.cache_key
        if key is None:
            return
        flight = self._flights.get(key)
        if flight is not None and flight[1] == req.trace.trace_id:
            del self._flights[key]
            if not flight[0].done():
                flight[0].set_result(None)

    async def close(self) -> None:
        await self.entries.close()
        await self.index.close()


def build_cache(
    redis_url: str | None,
    max_bytes: int,
    max_entries: int = 100_000,
    max_connections: int = POOL_SIZE,
    pool_timeout: float = POOL_TIMEOUT_S,
) -> RouteCache:
    """The cache the server plugs in: Redis when the server counts limits there too, else memory."""
    if redis_url:
        return RouteCache(
            RedisEntries(redis_url, REDIS_PREFIX, max_connections, pool_timeout),
            RedisIndex(redis_url, REDIS_INDEX_PREFIX, max_connections, pool_timeout),
        )
    return RouteCache(MemoryEntries(max_entries, max_bytes), MemoryIndex(max_entries))
