"""A deterministic fake provider for tests, benchmarks and teaching.

Same input, same answer. Latency, streaming speed and failures are configurable, so fallbacks,
timeouts and dashboards can be exercised without a model or a network. It keeps the last requests
it received (``received``), which lets tests check what a provider was actually sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import Field

from shipyard.content import messages_text
from shipyard.errors import ProviderError
from shipyard.plugins import hookimpl
from shipyard.providers.base import (
    SSE_DONE,
    BaseProvider,
    Call,
    Completion,
    Embeddings,
    ProviderOptions,
    ProviderType,
    StreamChunk,
    Usage,
    chat_body,
    chat_chunk,
    chat_usage_chunk,
    completion_body,
    completion_chunk,
    completion_usage_chunk,
    new_id,
    now,
    wants_usage,
)

_WORDS = (
    "the",
    "ship",
    "sails",
    "at",
    "dawn",
    "with",
    "cargo",
    "of",
    "tea",
    "and",
    "maps",
    "while",
    "gulls",
    "circle",
    "over",
    "harbour",
    "lights",
    "and",
    "sailors",
    "check",
    "ropes",
    "before",
    "the",
    "tide",
    "turns",
    "toward",
    "open",
    "water",
    "beyond",
    "the",
    "cape",
)


class MockOptions(ProviderOptions):
    latency_ms: float = Field(0.0, ge=0, description="Delay before the answer (or the first chunk).")
    tokens_per_s: float = Field(0.0, ge=0, description="Streaming pace; 0 sends all chunks at once.")
    output: str | None = Field(None, description="Fixed answer; unset: words derived from the input.")
    echo: bool = Field(False, description="Answer with the last user message.")
    output_tokens: int = Field(16, ge=1, description="Length of derived answers, in tokens (words).")
    error_rate: float = Field(0.0, ge=0, le=1, description="Fraction of calls that fail.")
    error_status: int = Field(500, ge=400, le=599, description="HTTP status of injected failures.")
    seed: int = Field(0, description="Seed of the failure sequence.")
    embedding_dim: int = Field(16, ge=1, le=4096, description="Size of the (hash-derived) embedding vectors.")
    keep_received: int = Field(100, ge=0, description="How many received requests to remember.")


class MockProvider(BaseProvider):
    kind = "mock"

    def __init__(self, name: str, options: MockOptions | None = None) -> None:
        super().__init__(name)
        self.options = options or MockOptions()
        self._rng = random.Random(self.options.seed)
        self.received: deque[dict[str, Any]] = deque(maxlen=self.options.keep_received or None)

    # -- behaviour -------------------------------------------------------------------------------
    async def _before(self, call: Call) -> None:
        if self.options.keep_received:
            self.received.append(call.body)
        failing = self.options.error_rate > 0 and self._rng.random() < self.options.error_rate
        if self.options.latency_ms:
            await asyncio.sleep(self.options.latency_ms / 1000)
        if failing:
            status = self.options.error_status
            raise ProviderError(
                f"mock provider `{self.name}` injected a failure (HTTP {status})",
                status=status if status < 500 else 502,
                retryable=status >= 500 or status in (408, 429),
                code="mock_failure",
                upstream_status=status,
            )

    def _answer(self, prompt: str, body: dict[str, Any]) -> list[str]:
        if self.options.output is not None:
            words = self.options.output.split(" ")
        elif self.options.echo:
            words = prompt.split(" ")
        else:
            digest = hashlib.blake2b(prompt.encode(), digest_size=32).digest()
            n = self.options.output_tokens
            words = [_WORDS[digest[i % 32] % len(_WORDS)] for i in range(n)]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and limit > 0:
            words = words[:limit]
        # Tokens are words; a leading space keeps streamed pieces joinable.
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    def _finish(self, body: dict[str, Any], pieces: list[str]) -> str:
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        return "length" if isinstance(limit, int) and len(pieces) >= limit > 0 else "stop"

    def count_tokens(self, text: str, model: str) -> int:
        return len(text.split())

    @staticmethod
    def _last_user(messages: list[dict[str, Any]]) -> str:
        for m in reversed(messages):
            if m.get("role") == "user":
                return messages_text([m])
        return messages_text(messages[-1:])

    def _chat_prompt(self, body: dict[str, Any]) -> tuple[str, str]:
        messages = body.get("messages") or []
        return messages_text(messages), self._last_user(messages)

    def _whole(
        self, call: Call, prompt: str, answered: str, make_body: Callable[..., dict[str, Any]], prefix: str
    ) -> Completion:
        """A whole (not streamed) answer to ``answered``; ``prompt`` is what the input tokens count."""
        pieces = self._answer(answered, call.body)
        text = "".join(pieces)
        usage = Usage(self.count_tokens(prompt, call.model), len(pieces))
        finish = self._finish(call.body, pieces)
        body = make_body(new_id(prefix), call.model, text, finish, usage)
        return Completion(body=body, usage=usage, text=text, model=call.model, finish_reason=finish)

    async def _paced(self, pieces: list[str]) -> AsyncIterator[str]:
        """The pieces of a streamed answer, ``tokens_per_s`` apart when that option is set."""
        delay = 1.0 / self.options.tokens_per_s if self.options.tokens_per_s else 0.0
        for i, piece in enumerate(pieces):
            if delay and i:
                await asyncio.sleep(delay)
            yield piece

    # -- chat ------------------------------------------------------------------------------------
    async def chat(self, call: Call) -> Completion:
        await self._before(call)
        full, last = self._chat_prompt(call.body)
        return self._whole(call, full, last if self.options.echo else full, chat_body, "chatcmpl")

    async def stream_chat(self, call: Call) -> AsyncIterator[StreamChunk]:
        await self._before(call)
        full, last = self._chat_prompt(call.body)
        pieces = self._answer(last if self.options.echo else full, call.body)
        cid, created = new_id("chatcmpl"), now()
        usage = Usage(self.count_tokens(full, call.model), len(pieces))
        yield StreamChunk(chat_chunk(cid, created, call.model, {"role": "assistant", "content": ""}, None))
        async for piece in self._paced(pieces):
            yield StreamChunk(chat_chunk(cid, created, call.model, {"content": piece}, None), text=piece)
        finish = self._finish(call.body, pieces)
        yield StreamChunk(chat_chunk(cid, created, call.model, {}, finish), finish_reason=finish)
        tail = chat_usage_chunk(cid, created, call.model, usage) if wants_usage(call.body) else b""
        yield StreamChunk(tail + SSE_DONE, usage=usage)

    # -- completions -----------------------------------------------------------------------------
    def _prompt(self, body: dict[str, Any]) -> str:
        prompt = body.get("prompt", "")
        return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))

    async def complete(self, call: Call) -> Completion:
        await self._before(call)
        prompt = self._prompt(call.body)
        return self._whole(call, prompt, prompt, completion_body, "cmpl")

    async def stream_complete(self, call: Call) -> AsyncIterator[StreamChunk]:
        await self._before(call)
        prompt = self._prompt(call.body)
        pieces = self._answer(prompt, call.body)
        cid, created = new_id("cmpl"), now()
        usage = Usage(self.count_tokens(prompt, call.model), len(pieces))
        async for piece in self._paced(pieces):
            yield StreamChunk(completion_chunk(cid, created, call.model, piece, None), text=piece)
        finish = self._finish(call.body, pieces)
        yield StreamChunk(completion_chunk(cid, created, call.model, "", finish), finish_reason=finish)
        tail = completion_usage_chunk(cid, created, call.model, usage) if wants_usage(call.body) else b""
        yield StreamChunk(tail + SSE_DONE, usage=usage)

    # -- embeddings ------------------------------------------------------------------------------
    async def embed(self, call: Call) -> Embeddings:
        await self._before(call)
        raw = call.body.get("input")
        texts = [raw] if isinstance(raw, str) else [str(t) for t in (raw or [])]
        dim = self.options.embedding_dim
        vectors = []
        for t in texts:
            digest = hashlib.blake2b(t.encode(), digest_size=64).digest()
            v = [(digest[i % 64] - 127.5) / 127.5 for i in range(dim)]
            norm = sum(x * x for x in v) ** 0.5 or 1.0
            vectors.append([x / norm for x in v])
        usage = Usage(sum(self.count_tokens(t, call.model) for t in texts), 0)
        return Embeddings(vectors=vectors, usage=usage, model=call.model)


@hookimpl
def register_providers() -> list[ProviderType]:
    return [
        ProviderType(
            "mock",
            MockOptions,
            MockProvider,
            "Deterministic fake model with configurable latency, speed and failures.",
        )
    ]
