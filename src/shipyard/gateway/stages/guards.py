"""The guard stages: the route's input guards before anything else is decided (they may redact the
body that the plan, the limits and a cache key then see, or block the request), a per-attempt
preparation of what the provider is sent (the canary, the promised schema), and the output guards
on the answer, whole or streamed.

A route without guards (``route.guard is None``) costs one attribute check per stage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from shipyard.errors import ShipyardError
from shipyard.gateway.stages.attempts import aclose
from shipyard.gateway.stages.context import Request
from shipyard.providers.base import Call, Completion, Embeddings, StreamChunk
from shipyard.tracing.spans import Span


def check_input(req: Request) -> None:
    """Scan the client's text: ``req.body`` becomes the redacted copy, ``req.guard`` the state the
    later stages need. Embeddings carry no conversation to guard."""
    guard = req.route.guard
    if guard is not None and req.op != "embeddings":
        req.body, req.guard = guard.check_input(req.op, req.body, req.trace, req.root)


def prepare_call(req: Request, call: Call) -> None:
    """Per attempt, since each target gets its own body: plant the canary, note the system prompt
    and the response schema that the output guards check the answer against."""
    guard, state = req.route.guard, req.guard
    if guard is not None and state is not None:
        guard.prepare_call(call, state)


def check_output(req: Request, result: Completion | Embeddings) -> Completion | Embeddings:
    """The answer with the output guards applied (OutputBlocked on a block)."""
    guard, state = req.route.guard, req.guard
    if guard is not None and state is not None and isinstance(result, Completion):
        return guard.check_output(req.op, result, state, req.trace, req.root)
    return result


def guards_stream(req: Request) -> bool:
    """Whether a stream needs the output stage; input-only routes stream untouched, with no hold-back."""
    guard, state = req.route.guard, req.guard
    return guard is not None and state is not None and guard.guards_output(state)


async def guard_stream(
    req: Request, span: Span, first: StreamChunk, chunks: AsyncIterator[StreamChunk]
) -> tuple[StreamChunk, AsyncIterator[StreamChunk]]:
    """The stream with the output guards wrapped around it, run up to its first chunk: a block in
    that chunk is still an HTTP error, since nothing has been sent yet. Only when
    :func:`guards_stream`."""
    guard, state = req.route.guard, req.guard
    assert guard is not None and state is not None
    guarded = guard.stream(req.op, first, chunks, state, req.trace, req.root)
    try:
        head = await anext(guarded)
    except ShipyardError:
        await aclose(guarded)
        # The provider answered; it is the answer that was refused (the output guard's span says why).
        span.finish("ok")
        raise
    return head, guarded
