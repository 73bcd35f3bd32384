"""Semantic matching for the response cache (``mode: semantic``): a request that misses the exact
key may be answered with the cached answer of a *similar* request, when both hold.

1. **Same everything but the words.** Candidates come from the request's *partition*: the exact
   key's identity without the conversation's text (route and its version, target, model and
   prompt versions, scope, stream, every sampling parameter, tools, response format), plus the
   sequence of roles. A request with another temperature, system prompt role layout or tool list
   never meets the other's entries.
2. **Similar conversations.** Each conversation is embedded as two unit vectors (WordLlama, the
   offline model Shipyard ships): its last turn, and every turn before it together (system prompt
   and history). The similarity of two conversations is the smaller of the two cosines, so a
   shared long system prompt cannot make two different questions look alike, and the same
   question after a different history is not the same request. It must reach the route's
   ``threshold``.
3. **No answer-changing difference** (:mod:`shipyard.gateway.meaning`): numbers, negation, dates,
   names, units, polarity, language, the order of names and units. The most similar candidate
   that passes wins; a candidate refused by this guard is counted (``/metrics``) and named on the
   trace, so a team sees what the guard saves it from.

Not matched semantically (exact only): embeddings requests, and conversations with anything but
text (images, audio, tool calls and tool results).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson

from shipyard.gateway.meaning import Meaning, conflict
from shipyard.gateway.stages.context import Request
from shipyard.store.redis_pool import POOL_SIZE, POOL_TIMEOUT_S, async_client

DIM = 256  # WordLlama's shipped width
INLINE_CHARS = 4000  # shorter conversations are embedded on the event loop (tens of microseconds)
MAX_PER_PARTITION = 2000  # candidates compared per lookup, at most
MAX_GUARDED = 16  # the most similar candidates above the threshold that the guard examines
REDIS_INDEX_PREFIX = "shipyard:cache:sem:"


@dataclass(slots=True)
class Probe:
    """A request's semantic identity: where its candidates live, and what it says."""

    partition: str
    vectors: np.ndarray  # (2, DIM) float32: the last turn, the turns before it (zeros if none)
    meaning: Meaning


@dataclass(slots=True)
class Candidate:
    key: str  # the exact key of the stored answer
    vectors: np.ndarray
    meaning: Meaning
    expires: float  # time.time()


def _text(content: Any) -> str | None:
    """A message's text, or None for content that is not only text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            text = part.get("text") if isinstance(part, dict) and part.get("type") == "text" else None
            if not isinstance(text, str):
                return None
            parts.append(text)
        return "\n".join(parts)
    return None


def turns(req: Request) -> list[tuple[str, str]] | None:
    """The conversation as (role, text) turns, or None when it cannot be matched semantically."""
    body = req.body
    out: list[tuple[str, str]] = []
    variables = body.get("variables")
    if isinstance(variables, dict) and variables:
        out.append(("variables", "\n".join(f"{k}: {v}" for k, v in sorted(variables.items()))))
    if req.op == "chat":
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            return None
        for message in messages:
            if not isinstance(message, dict) or message.get("tool_calls") or message.get("function_call"):
                return None
            role = message.get("role")
            if role not in ("system", "developer", "user", "assistant"):
                return None
            text = _text(message.get("content"))
            if text is None:
                return None
            out.append((str(role), text))
    elif req.op == "completion":
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return None
        out.append(("prompt", prompt))
    else:
        return None
    return out or None


def partition(identity: list[Any], roles: list[str]) -> str:
    raw = orjson.dumps([identity, roles], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(raw).hexdigest()


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The smaller cosine of the two parts (a part empty on both sides counts as the same)."""
    last = float(a[0] @ b[0])
    if not a[1].any() and not b[1].any():
        return last
    return min(last, float(a[1] @ b[1]))


class Embedder:
    """WordLlama, loaded on the first semantic lookup (once, whatever the concurrency)."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = asyncio.Lock()

    async def _load(self) -> Any:
        async with self._lock:
            if self._model is None:
                from shipyard.providers.wordllama import load_model

                self._model = await asyncio.to_thread(load_model)
        return self._model

    async def vectors(self, conversation: list[tuple[str, str]]) -> np.ndarray:
        from shipyard.providers.wordllama import embed_texts

        model = self._model or await self._load()
        last = conversation[-1][1]
        before = "\n".join(f"{role}: {text}" for role, text in conversation[:-1])
        texts = [last, before] if before else [last]
        if len(last) + len(before) <= INLINE_CHARS:
            found, _ = embed_texts(model, texts, DIM)
        else:
            found, _ = await asyncio.to_thread(embed_texts, model, texts, DIM)
        out = np.zeros((2, DIM), dtype=np.float32)
        out[: len(found)] = found
        return out


class SemanticIndex(Protocol):
    """Where candidates live: by partition, each under the exact key of its stored answer."""

    async def candidates(self, partition: str) -> list[Candidate]: ...

    async def add(self, partition: str, candidate: Candidate) -> None: ...

    async def close(self) -> None: ...


class MemoryIndex:
    """Candidates in this process: at most ``max_entries`` in all (least recently added out first)
    and :data:`MAX_PER_PARTITION` per partition."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self.size = 0
        self._parts: OrderedDict[str, OrderedDict[str, Candidate]] = OrderedDict()

    async def candidates(self, partition: str) -> list[Candidate]:
        part = self._parts.get(partition)
        if not part:
            return []
        now = time.time()
        for key in [k for k, c in part.items() if c.expires <= now]:
            del part[key]
            self.size -= 1
        return list(part.values())

    async def add(self, partition: str, candidate: Candidate) -> None:
        part = self._parts.setdefault(partition, OrderedDict())
        self._parts.move_to_end(partition)
        if candidate.key in part:
            del part[candidate.key]
            self.size -= 1
        part[candidate.key] = candidate
        self.size += 1
        while len(part) > MAX_PER_PARTITION:
            part.popitem(last=False)
            self.size -= 1
        while self.size > self.max_entries and self._parts:
            oldest_name, oldest = next(iter(self._parts.items()))
            oldest.popitem(last=False)
            self.size -= 1
            if not oldest:
                del self._parts[oldest_name]

    async def close(self) -> None:
        self._parts.clear()
        self.size = 0


def _pack(candidate: Candidate) -> bytes:
    return orjson.dumps(
        {
            "v": base64.b64encode(candidate.vectors.astype(np.float32).tobytes()).decode("ascii"),
            "m": candidate.meaning.to_json(),
            "e": candidate.expires,
        }
    )


def _unpack(key: str, raw: bytes) -> Candidate | None:
    try:
        entry = orjson.loads(raw)
        vectors = np.frombuffer(base64.b64decode(entry["v"]), dtype=np.float32).reshape(2, DIM)
        return Candidate(key, vectors, Meaning.from_json(entry["m"]), float(entry["e"]))
    except (ValueError, KeyError, TypeError):
        return None  # written by another version, or not by Shipyard: never a match


class RedisIndex:
    """Candidates in Redis (one hash per partition), shared by every gateway worker on it."""

    def __init__(
        self,
        url: str,
        prefix: str = REDIS_INDEX_PREFIX,
        max_connections: int = POOL_SIZE,
        pool_timeout: float = POOL_TIMEOUT_S,
    ) -> None:
        self.prefix = prefix
        self.client = async_client(url, max_connections, pool_timeout)

    async def candidates(self, partition: str) -> list[Candidate]:
        found = await self.client.hgetall(self.prefix + partition)
        now = time.time()
        out: list[Candidate] = []
        stale: list[Any] = []
        for field, raw in found.items():
            key = field.decode() if isinstance(field, bytes) else str(field)
            candidate = _unpack(key, raw if isinstance(raw, bytes) else str(raw).encode())
            if candidate is None or candidate.expires <= now:
                stale.append(field)
            else:
                out.append(candidate)
        if stale:
            await self.client.hdel(self.prefix + partition, *stale)
        return out[-MAX_PER_PARTITION:]

    async def add(self, partition: str, candidate: Candidate) -> None:
        name = self.prefix + partition
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(name, candidate.key, _pack(candidate))
            pipe.hlen(name)
            pipe.pexpire(name, max(1, int((candidate.expires - time.time()) * 1000)), gt=True)
            pipe.pexpire(name, max(1, int((candidate.expires - time.time()) * 1000)), nx=True)
            _, size, *_ = await pipe.execute()
        if size > MAX_PER_PARTITION:  # drop the tenth that expires first
            current = await self.candidates(partition)
            current.sort(key=lambda c: c.expires)
            drop = [c.key for c in current[: max(1, len(current) // 10)]]
            if drop:
                await self.client.hdel(name, *drop)

    async def close(self) -> None:
        await self.client.aclose()


def best_match(
    probe: Probe, found: list[Candidate], threshold: float
) -> tuple[Candidate | None, float, str | None]:
    """The most similar candidate at or above ``threshold`` that the false-hit guard lets through,
    its similarity, and (when none) why the most similar one above the threshold was refused."""
    if not found:
        return None, 0.0, None
    matrix = np.stack([c.vectors for c in found])  # (n, 2, DIM)
    last = matrix[:, 0, :] @ probe.vectors[0]
    before = matrix[:, 1, :] @ probe.vectors[1]
    empty = ~matrix[:, 1, :].any(axis=1) & (not probe.vectors[1].any())
    scores = np.where(empty, last, np.minimum(last, before))
    refused: str | None = None
    for i in np.argsort(-scores)[:MAX_GUARDED]:
        score = float(scores[i])
        if score < threshold:
            break
        why = conflict(probe.meaning, found[i].meaning)
        if why is None:
            return found[i], score, None
        refused = refused or why
    return None, float(scores.max()), refused
