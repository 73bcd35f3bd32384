"""The one small protocol every model backend implements, and the values that cross it.

A provider turns an OpenAI-shaped request body into an answer. It is handed the body with the
route's target already applied (``model`` is the provider-side model name, target params merged),
and answers either a whole response or a stream of :class:`StreamChunk`. Each chunk carries the
exact bytes to send to the client (an SSE event) plus what the trace needs (text delta, usage), so
a pass-through provider can forward upstream bytes untouched while local providers build their own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import orjson
from pydantic import BaseModel, ConfigDict


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_openai(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(slots=True)
class Call:
    """One request to a provider.

    ``body`` is the OpenAI request body to send (already a fresh dict the provider may keep);
    ``model`` the provider-side model name; ``timeout`` seconds for this attempt (for streams: until
    the first chunk and between chunks); ``user`` the fairness/sticky key when the client gave one.
    """

    body: dict[str, Any]
    model: str
    timeout: float
    user: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)
    # Embeddings: the most input tokens the call may carry (setting `max_embedding_input_tokens`).
    # The gateway holds other providers to it by the text's size; a provider that counts tokens
    # itself (`exact_token_count`) enforces it while it tokenizes.
    max_input_tokens: int | None = None


@dataclass(slots=True)
class Completion:
    """A whole (non-streamed) answer.

    ``raw`` holds bytes to return to the client unchanged when the provider has them (pass-through);
    otherwise the gateway serializes ``body``. ``text`` is what the trace records as the output.
    """

    body: dict[str, Any] | None
    usage: Usage
    text: str
    model: str
    finish_reason: str | None = None
    raw: bytes | None = None
    rendered_prompt: str | None = None  # the text the model was given, when the provider built it

    def to_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return orjson.dumps(self.body)


@dataclass(slots=True)
class StreamChunk:
    """One piece of a streamed answer: ``data`` goes to the client as-is (may be empty)."""

    data: bytes
    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    rendered_prompt: str | None = None  # on a stream's first chunk: the text the model was given


@dataclass(slots=True)
class Embeddings:
    vectors: list[list[float]]
    usage: Usage
    model: str
    raw: bytes | None = None

    def to_bytes(self) -> bytes:
        return self.raw if self.raw is not None else orjson.dumps(self.to_openai())

    def to_openai(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(self.vectors)],
            "model": self.model,
            "usage": {"prompt_tokens": self.usage.input_tokens, "total_tokens": self.usage.input_tokens},
        }


@dataclass(slots=True)
class WorkerStatus:
    """One model worker process of a provider that runs its model out of the gateway's process."""

    index: int
    state: str  # starting | ready | busy | restarting | failed | stopped
    pid: int | None
    restarts: int
    served: int
    last_exit: str | None  # how the previous process ended (signal, exit code, start-up error)
    since: float  # when it entered this state (epoch seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "served": self.served,
            "last_exit": self.last_exit,
            "since": round(self.since, 3),
        }


@dataclass(slots=True)
class Health:
    ok: bool
    detail: str = ""


class ProviderOptions(BaseModel):
    """Base for each provider type's options in ``shipyard.yaml``; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@runtime_checkable
class Provider(Protocol):
    """What the gateway needs from a backend. :class:`MockProvider` is the shipped fake."""

    name: str

    async def start(self) -> None:
        """Open pools / load weights. Called once before the first request."""

    async def close(self) -> None:
        """Release everything; called on shutdown."""

    async def chat(self, call: Call) -> Completion: ...

    def stream_chat(self, call: Call) -> AsyncIterator[StreamChunk]: ...

    async def complete(self, call: Call) -> Completion: ...

    def stream_complete(self, call: Call) -> AsyncIterator[StreamChunk]: ...

    async def embed(self, call: Call) -> Embeddings: ...

    def count_tokens(self, text: str, model: str) -> int: ...

    async def health(self) -> Health: ...


@runtime_checkable
class SupervisesWorkers(Protocol):
    """A provider whose model runs in worker processes it supervises (``local``): the gateway shows
    their state on /readyz, /metrics and the dashboard."""

    def workers(self) -> list[WorkerStatus]: ...


@dataclass(frozen=True)
class ProviderType:
    """How plugins register a provider type: its name in config, options model and factory."""

    name: str
    options: type[ProviderOptions]
    factory: Any  # Callable[[str, ProviderOptions], Provider]
    description: str = ""


class BaseProvider:
    """Shared behaviour: unsupported operations answer a clear 400, token counting falls back to
    a rough estimate. Subclasses override what they support."""

    kind: ClassVar[str] = "base"
    # True when the provider bounds each call by ``Call.timeout`` itself (and raises
    # ProviderTimeout); the gateway then skips its own timer, which costs a scheduled callback
    # per request and per streamed chunk.
    enforces_timeout: ClassVar[bool] = False
    # True when ``count_tokens`` is the model's own tokenizer and cheap: rate limits and budgets
    # then count prompts with it instead of the UTF-8 bound (see gateway/limits.py).
    exact_token_count: ClassVar[bool] = False

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _unsupported(self, what: str) -> Exception:
        from shipyard.errors import UnsupportedOperation

        return UnsupportedOperation(f"provider `{self.name}` ({self.kind}) does not support {what}")

    async def chat(self, call: Call) -> Completion:
        raise self._unsupported("chat completions")

    def stream_chat(self, call: Call) -> AsyncIterator[StreamChunk]:
        raise self._unsupported("streamed chat completions")

    async def complete(self, call: Call) -> Completion:
        raise self._unsupported("text completions")

    def stream_complete(self, call: Call) -> AsyncIterator[StreamChunk]:
        raise self._unsupported("streamed text completions")

    async def embed(self, call: Call) -> Embeddings:
        raise self._unsupported("embeddings")

    def count_tokens(self, text: str, model: str) -> int:
        return estimate_tokens(text)

    async def health(self) -> Health:
        return Health(True)


def estimate_tokens(text: str) -> int:
    """About 4 characters per token for English; used only where no tokenizer is available."""
    return max(1, (len(text) + 3) // 4) if text else 0


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def _chunk(cid: str, created: int, model: str, obj: str, choices: list[Any], **extra: Any) -> bytes:
    """One streamed event of either API: the four headers every chunk repeats, then its choices."""
    return sse({"id": cid, "object": obj, "created": created, "model": model, "choices": choices, **extra})


def chat_chunk(cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return _chunk(cid, created, model, "chat.completion.chunk", [choice])


def chat_usage_chunk(cid: str, created: int, model: str, usage: Usage) -> bytes:
    return _chunk(cid, created, model, "chat.completion.chunk", [], usage=usage.to_openai())


def completion_chunk(cid: str, created: int, model: str, text: str, finish: str | None) -> bytes:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return _chunk(cid, created, model, "text_completion", [choice])


def completion_usage_chunk(cid: str, created: int, model: str, usage: Usage) -> bytes:
    return _chunk(cid, created, model, "text_completion", [], usage=usage.to_openai())


def _body(cid: str, model: str, obj: str, choice: dict[str, Any], usage: Usage) -> dict[str, Any]:
    """A whole (not streamed) answer of either API: one choice and the usage."""
    return {
        "id": cid,
        "object": obj,
        "created": now(),
        "model": model,
        "choices": [choice],
        "usage": usage.to_openai(),
    }


def chat_body(cid: str, model: str, text: str, finish: str, usage: Usage) -> dict[str, Any]:
    message = {"role": "assistant", "content": text, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return _body(cid, model, "chat.completion", choice, usage)


def completion_body(cid: str, model: str, text: str, finish: str, usage: Usage) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return _body(cid, model, "text_completion", choice, usage)


def wants_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return bool(isinstance(opts, dict) and opts.get("include_usage"))
