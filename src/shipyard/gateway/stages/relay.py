"""The end of a streamed request: relay the (guarded) chunks to the client as they arrive, then
close its trace, settle its limits and offer it to the cache. The non-streamed counterpart is the
tail of :meth:`shipyard.gateway.service.Gateway.complete`.

Events are forwarded as they arrive; a failure after the first byte can no longer be an HTTP
status, so it ends the stream with an error event. In durable mode (`trace_durability:
acknowledged`) the closing ``[DONE]`` is held back until the trace is committed, so a client that
saw the end of its answer can rely on its trace being stored.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING

import orjson

from shipyard.content import input_text
from shipyard.errors import ProviderTimeout, ShipyardError
from shipyard.gateway.stages.attempts import NO_DEADLINE, Answered, Stream, aclose, deadline
from shipyard.gateway.stages.cache import CacheSlot
from shipyard.gateway.stages.context import ClientGone, Request
from shipyard.gateway.stages.limits import Limits
from shipyard.gateway.stages.trace import Tracer, error_type, record_success
from shipyard.providers.base import SSE_DONE, StreamChunk, Usage
from shipyard.tracing import semconv as sc

if TYPE_CHECKING:
    from shipyard.gateway.runtime import Runtime

log = logging.getLogger("shipyard.gateway")


class Relay:
    def __init__(self, tracer: Tracer, limits: Limits, cache: CacheSlot) -> None:
        self.tracer = tracer
        self.limits = limits
        self.cache = cache

    async def run(
        self,
        req: Request,
        first: StreamChunk,
        chunks: AsyncIterator[StreamChunk],
        answered: Answered[Stream] | None,
        leave: Callable[[Runtime], None],
    ) -> AsyncGenerator[bytes, None]:
        """The client's events, from ``first`` on. ``answered``: the attempt that produced the
        stream; None for an answer replayed from the cache. ``leave`` ends the request's in-flight
        count, whatever way the stream ends."""
        trace, root = req.trace, req.root
        target = answered.target if answered is not None else None
        label = target.label if target is not None else trace.target
        durable = self.tracer.durable
        kept: list[StreamChunk] | None = [] if answered is not None and self.cache.applies(req) else None
        texts: list[str] = []
        usage: Usage | None = None
        finish: str | None = None
        error: BaseException | None = None
        status = 200
        chunk = first
        held = b""  # durable mode: the closing `[DONE]`, sent once the trace is committed
        committed: concurrent.futures.Future[bool] | None = None
        try:
            while True:
                if kept is not None:
                    kept.append(chunk)
                if chunk.text:
                    texts.append(chunk.text)
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.finish_reason:
                    finish = chunk.finish_reason
                data = chunk.data
                if durable and data.endswith(SSE_DONE):
                    data, held = data[: -len(SSE_DONE)], SSE_DONE
                if data:
                    if trace.ttft_ms is None and (chunk.text or chunk.finish_reason):
                        trace.ttft_ms = (time.time() - trace.start) * 1000
                    yield data
                try:
                    async with deadline(target) if target is not None else NO_DEADLINE:
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
        except TimeoutError:
            assert target is not None
            error = ProviderTimeout(f"target `{label}` stalled for {target.timeout:g}s mid-stream")
            status = 504
            yield sse_error(error)
        except ShipyardError as exc:
            error, status = exc, exc.status
            yield sse_error(exc)
        except (asyncio.CancelledError, GeneratorExit) as exc:
            error, status = ClientGone("client disconnected mid-stream"), 499
            await aclose(chunks)
            raise exc
        except Exception as exc:
            log.exception("stream from target `%s` failed", label)
            error, status = exc, 502
            yield sse_error(ShipyardError(f"stream from target `{label}` failed: {exc}"))
        finally:
            leave(req.runtime)
            trace.output = "".join(texts)
            if trace.ttft_ms is None and texts:
                trace.ttft_ms = trace.latency_ms
            if answered is not None:
                provider, model = answered.target.provider, answered.target.provider_model
                if usage is None:
                    usage = Usage(
                        provider.count_tokens(input_text(trace.input), model),
                        provider.count_tokens(trace.output, model),
                    )
                    root.attributes["shipyard.usage_estimated"] = True
                record_success(trace, answered.span, answered.target, usage, model, finish)
            self.limits.settle(req)
            if error is not None and answered is not None:
                answered.span.status = "error"
                answered.span.attributes[sc.ERROR_TYPE] = error_type(error)
            committed = self.tracer.finish(req, error, status)
            if error is not None:
                self.cache.release(req)
        if kept is not None and error is None:
            # Offered only now, once the trace has the answer's usage and cost (what a hit saves).
            await self.cache.store(req, self.cache.answer(req, chunks=kept))
            self.cache.release(req)  # also when the answer was not kept (a personal one)
        if held:
            await self.tracer.committed(committed, trace)
            yield held


async def replay(chunks: list[StreamChunk]) -> AsyncIterator[StreamChunk]:
    """A cached stream's events after the first, as a stream."""
    for chunk in chunks[1:]:
        yield chunk


class Primed:
    """A started relay and the event it already produced."""

    def __init__(self, head: bytes | None, rest: AsyncGenerator[bytes, None]) -> None:
        self._head = head
        self._rest = rest

    def __aiter__(self) -> Primed:
        return self

    async def __anext__(self) -> bytes:
        if self._head is not None:
            head, self._head = self._head, None
            return head
        return await anext(self._rest)

    async def aclose(self) -> None:
        await self._rest.aclose()


def sse_error(exc: ShipyardError) -> bytes:
    """An error event in OpenAI's shape, then the end of the stream."""
    return b"data: " + orjson.dumps(exc.to_openai()) + b"\n\ndata: [DONE]\n\n"
