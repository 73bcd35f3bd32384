"""The attempts stage: the one retry and fallback implementation, shared by whole and streamed
answers. Targets are tried in plan order, each up to ``1 + retries`` times with backoff between
retries; a retryable failure moves on, anything else goes back to the client at once. Every attempt
is a span on the trace.

What differs between a whole answer and a stream is only what one attempt is (:data:`Attempt`):
:func:`call_whole` awaits the provider's answer; :func:`open_stream` opens the provider's stream and
waits for its first chunk, so any failure before the first byte can still fall back and still be
an HTTP error; after that the stream belongs to the target that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from shipyard.errors import ProviderError, ProviderTimeout, ShipyardError
from shipyard.gateway.stages.context import Request
from shipyard.gateway.stages.trace import attempt_span, fail_span
from shipyard.providers.base import Call, Completion, Embeddings, StreamChunk
from shipyard.retries import backoff

if TYPE_CHECKING:
    from shipyard.gateway.runtime import Route, Target
    from shipyard.tracing.spans import Span

R = TypeVar("R")
# One attempt on one target: its result, or an exception (ProviderError when another attempt may
# help, which includes ProviderTimeout). It applies the target's deadline itself, since what the
# deadline covers is what differs between a whole answer and a stream.
Attempt = Callable[[Request, "Target", Call], Awaitable[R]]
Stream = tuple[StreamChunk, AsyncIterator[StreamChunk]]
# The longest pause before a retry, even when an upstream asks for longer: a route has fallbacks.
MAX_BACKOFF_S = 10.0


@dataclass(slots=True)
class Answered(Generic[R]):
    """The attempt that succeeded: its result, its target and its (still open) span."""

    result: R
    target: Target
    span: Span


async def attempt(req: Request, one: Attempt[R], call_for: Callable[[Request, Target], Call]) -> Answered[R]:
    """Try ``req.plan`` until an attempt succeeds; raise the first non-retryable error, or, when
    every attempt failed, one error that names how many were made and the last failure."""
    trace = req.trace
    last: ProviderError | None = None
    n = 0
    for target in req.plan:
        for retry in range(target.retries + 1):
            if retry:
                assert last is not None
                await pause(req.route, retry - 1, last)
            n += 1
            trace.attempts = n
            call = call_for(req, target)
            span = attempt_span(req, target, n, call)
            try:
                result = await one(req, target, call)
            except ProviderError as exc:
                fail_span(span, exc)
                if not exc.retryable:
                    raise
                last = exc
                continue
            except ShipyardError as exc:
                fail_span(span, exc)
                raise
            return Answered(result, target, span)
    raise exhausted(req.route, n, last)


async def call_whole(req: Request, target: Target, call: Call) -> Completion | Embeddings:
    """A whole answer: the provider's call, within the target's timeout."""
    provider = target.provider
    try:
        async with deadline(target):
            if req.op == "chat":
                return await provider.chat(call)
            if req.op == "completion":
                return await provider.complete(call)
            return await provider.embed(call)
    except TimeoutError:
        raise ProviderTimeout(f"target `{target.label}` timed out after {target.timeout:g}s") from None


async def open_stream(req: Request, target: Target, call: Call) -> Stream:
    """A stream, up to its first chunk (within the target's timeout); the rest is the relay's. A
    stream that failed is closed here, so the upstream connection is not left open."""
    provider = target.provider
    chunks = provider.stream_chat(call) if req.op == "chat" else provider.stream_complete(call)
    try:
        async with deadline(target):
            first = await anext(chunks)
    except StopAsyncIteration:
        raise ProviderTimeout(f"target `{target.label}` ended its stream without data") from None
    except TimeoutError:
        await aclose(chunks)
        raise ProviderTimeout(f"target `{target.label}` sent nothing for {target.timeout:g}s") from None
    except ShipyardError:
        await aclose(chunks)
        raise
    return first, chunks


async def pause(route: Route, retry: int, exc: ProviderError) -> None:
    """The wait before retry number ``retry + 1`` of a target (the upstream's Retry-After wins)."""
    delay = backoff(retry, route.retry_backoff, cap=MAX_BACKOFF_S, retry_after=exc.retry_after)
    if delay > 0:
        await asyncio.sleep(delay)


def exhausted(route: Route, attempts: int, last: ProviderError | None) -> ShipyardError:
    """The error of a request whose every attempt failed: the last failure's status and type, so
    a client still sees a 429 as a 429 and a timeout as a 504."""
    detail = last.message if last is not None else "no target could be tried"
    err = ProviderError(
        f"route `{route.name}`: all {attempts} attempt(s) failed; last error: {detail}",
        status=last.status if last is not None else 502,
        code=last.code if last is not None else None,
    )
    if last is not None:
        err.type = last.type
        err.retry_after = last.retry_after
    return err


NO_DEADLINE = contextlib.nullcontext()


def deadline(target: Target) -> contextlib.AbstractAsyncContextManager[Any]:
    """The per-attempt (for streams: per-chunk) timeout, unless the provider enforces it itself."""
    if getattr(target.provider, "enforces_timeout", False):
        return NO_DEADLINE
    return asyncio.timeout(target.timeout)


async def aclose(it: AsyncIterator[Any]) -> None:
    """Close a stream that is given up on; its own errors while closing do not matter any more."""
    close: Callable[[], Awaitable[None]] | None = getattr(it, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:
            pass
