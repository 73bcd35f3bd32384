"""The request pipeline: what happens to a ``/v1`` request between the HTTP edge and the provider.

The API key is checked at the HTTP edge (``gateway/http.py``) before a request gets here; the
pipeline receives the principal it resolved to (None for public routes and in-process callers) and
reads only its limits and its name. :class:`Gateway` then runs the stages of
:mod:`shipyard.gateway.stages`, each one concern, in this order, the same for streamed and whole
answers:

    trace begins → input guards → plan → limits → cache slot → attempts (retry, fallback)
    → output guards → answer (payload, or the stream's relay) → trace ends, limits settle

The limits come after the guards and the plan because a blocked request must not spend its key's
requests, and the reservation is priced on the redacted body and the plan's dearest target; the
cache slot comes after everything that decides what the answer would be (see ``stages/cache.py``).
HTTP handlers stay thin; the CLI's in-process chat, the eval runner and the red-team runner call
:meth:`Gateway.complete` and :meth:`Gateway.open_stream` directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shipyard.errors import ShipyardError
from shipyard.gateway.limits import Limiter
from shipyard.gateway.runtime import Route, Runtime
from shipyard.gateway.stages import guards
from shipyard.gateway.stages.attempts import attempt, call_whole, open_stream
from shipyard.gateway.stages.cache import CacheSlot
from shipyard.gateway.stages.context import ClientGone, Request
from shipyard.gateway.stages.limits import Limits
from shipyard.gateway.stages.payload import embedding_payload
from shipyard.gateway.stages.plan import Planner
from shipyard.gateway.stages.relay import Primed, Relay, replay
from shipyard.gateway.stages.trace import (
    TAGS_HEADER,
    Tracer,
    begin,
    record_answer,
    record_stream_start,
)
from shipyard.providers.base import Embeddings
from shipyard.tracing.spans import Trace
from shipyard.tracing.writer import TraceWriter

if TYPE_CHECKING:
    from shipyard.gateway.auth import Principal

__all__ = ["SESSION_HEADER", "TAGS_HEADER", "Answer", "Gateway"]

SESSION_HEADER = "x-shipyard-session"


@dataclass(slots=True)
class Answer:
    """A finished non-streamed answer and the trace that recorded it."""

    body: bytes
    trace: Trace


class Gateway:
    """The pipeline's stages, wired once, and the two ways through them."""

    def __init__(self, runtime: Runtime, writer: TraceWriter | None, default_timeout: float = 120.0) -> None:
        self.runtime = runtime
        self.default_timeout = default_timeout
        self.in_flight = 0
        self.idle = asyncio.Event()  # set whenever no request is in flight (shutdown waits on it)
        self.idle.set()
        self.tracer = Tracer(writer)
        self.planner = Planner()
        self.limits = Limits()
        self.cache = CacheSlot()
        self.relay = Relay(self.tracer, self.limits, self.cache)

    # -- what the server configures (each setting belongs to the stage that uses it) --------------
    @property
    def writer(self) -> TraceWriter | None:
        return self.tracer.writer

    @writer.setter
    def writer(self, writer: TraceWriter | None) -> None:
        self.tracer.writer = writer

    @property
    def observers(self) -> list[Callable[[Trace], None]]:
        """Called with every finished trace, on the request path (metrics, online-eval sampling):
        each must be cheap and must not raise."""
        return self.tracer.observers

    @observers.setter
    def observers(self, observers: list[Callable[[Trace], None]]) -> None:
        self.tracer.observers = observers

    @property
    def durable(self) -> bool:
        """`trace_durability: acknowledged`: an answer is sent only once its trace is committed."""
        return self.tracer.durable

    @durable.setter
    def durable(self, durable: bool) -> None:
        self.tracer.durable = durable

    @property
    def limiter(self) -> Limiter | None:
        """Rate limits and budgets; None (in-process gateways of eval runs) serves without them."""
        return self.limits.limiter

    @limiter.setter
    def limiter(self, limiter: Limiter | None) -> None:
        self.limits.limiter = limiter

    @property
    def max_embedding_tokens(self) -> int:
        """Most input tokens one embeddings request may carry (`max_embedding_input_tokens`)."""
        return self.planner.max_embedding_tokens

    @max_embedding_tokens.setter
    def max_embedding_tokens(self, tokens: int) -> None:
        self.planner.max_embedding_tokens = tokens

    @staticmethod
    def sticky_key(body: Mapping[str, Any], headers: Mapping[str, str] | None) -> str | None:
        """The key a sticky route assigns by: the session header, else the body's ``user``."""
        if headers is not None:
            key = headers.get(SESSION_HEADER)
            if key:
                return key
        user = body.get("user")
        return user if isinstance(user, str) and user else None

    # -- non-streamed ----------------------------------------------------------------------------
    async def complete(
        self,
        op: str,
        body: dict[str, Any],
        headers: Mapping[str, str] | None = None,
        *,
        principal: Principal | None = None,
    ) -> Answer:
        """Answer a non-streamed chat/completion/embeddings request (``op``) for ``principal``
        (the API key; None for public routes and in-process callers)."""
        runtime = self.runtime
        route = runtime.resolve(body.get("model"), "embedding" if op == "embeddings" else "chat")
        req = self._enter(op, route, runtime, body, headers, principal)
        abandoned = False
        try:
            guards.check_input(req)
            self.planner.plan(req)
            if self.limits.applies(req):
                await self.limits.admit(req)
            cached = await self.cache.lookup(req, stream=False) if self.cache.applies(req) else None
            if cached is not None:
                assert cached.result is not None
                result = cached.result
            else:
                answered = await attempt(req, call_whole, self.planner.call)
                record_answer(req.trace, answered.span, answered.target, answered.result)
                result = guards.check_output(req, answered.result)
                if self.cache.applies(req):
                    await self.cache.store(req, self.cache.answer(req, result=result))
        except ShipyardError as exc:
            self.tracer.finish(req, exc, exc.status)
            raise
        except asyncio.CancelledError as exc:
            abandoned = True
            self.tracer.finish(req, ClientGone("client disconnected"), 499)
            raise exc
        finally:
            self._leave(runtime)
            self.limits.settle(req, abandoned)
            if req.cache_key is not None:
                self.cache.release(req)
        trace = req.trace
        trace.ttft_ms = trace.latency_ms
        if isinstance(result, Embeddings):
            trace.output = None
            try:
                payload = await embedding_payload(result, req.body.get("encoding_format"))
            except asyncio.CancelledError:
                self.tracer.finish(req, ClientGone("client disconnected"), 499)
                raise
        else:
            trace.output = result.text
            payload = result.to_bytes()
        await self.tracer.committed(self.tracer.finish(req), trace)
        return Answer(payload, trace)

    # -- streamed --------------------------------------------------------------------------------
    async def open_stream(
        self,
        op: str,
        body: dict[str, Any],
        headers: Mapping[str, str] | None = None,
        *,
        principal: Principal | None = None,
    ) -> tuple[AsyncIterator[bytes], Trace]:
        """Start a streamed answer (see ``_open_stream``). The relay is run up to its first event
        before it is handed over: a started generator is always closed (by whoever iterates it,
        or by the event loop when it is dropped), and its ``finally`` ends the request: the
        in-flight count, the trace, the limits' reservation. One that never started would keep
        them forever if the client left before the server began sending."""
        stream, trace = await self._open_stream(op, body, headers, principal)
        try:
            head: bytes | None = await anext(stream)
        except StopAsyncIteration:
            head = None
        return Primed(head, stream), trace

    async def _open_stream(
        self,
        op: str,
        body: dict[str, Any],
        headers: Mapping[str, str] | None,
        principal: Principal | None,
    ) -> tuple[AsyncGenerator[bytes, None], Trace]:
        """Everything up to a stream's first chunk; any failure until then is still an HTTP error
        (and could fall back). From then on the relay owns the request."""
        runtime = self.runtime
        route = runtime.resolve(body.get("model"), "chat")
        req = self._enter(op, route, runtime, body, headers, principal)
        try:
            guards.check_input(req)
            self.planner.plan(req)
            if self.limits.applies(req):
                await self.limits.admit(req)
            cached = await self.cache.lookup(req, stream=True) if self.cache.applies(req) else None
            if cached is not None:
                assert cached.chunks
                stream = self.relay.run(req, cached.chunks[0], replay(cached.chunks), None, self._leave)
                return stream, req.trace
            answered = await attempt(req, open_stream, self.planner.call)
            first, chunks = answered.result
            record_stream_start(req.trace, answered.span, answered.target, first)
            if guards.guards_stream(req):
                first, chunks = await guards.guard_stream(req, answered.span, first, chunks)
            return self.relay.run(req, first, chunks, answered, self._leave), req.trace
        except ShipyardError as exc:
            self._leave(runtime)
            self.tracer.finish(req, exc, exc.status)
            self.limits.settle(req)
            self.cache.release(req)
            raise
        except BaseException as exc:
            self._leave(runtime)
            self.tracer.finish(req, ClientGone(f"stream setup aborted: {type(exc).__name__}"), 499)
            self.limits.settle(req, abandoned=True)
            self.cache.release(req)
            raise

    # -- in flight -------------------------------------------------------------------------------
    def _enter(
        self,
        op: str,
        route: Route,
        runtime: Runtime,
        body: dict[str, Any],
        headers: Mapping[str, str] | None,
        principal: Principal | None,
    ) -> Request:
        """A request enters: its trace begins and it counts as in flight (on the gateway, and on
        its runtime, which a reload retires only when its requests have ended)."""
        key = self.sticky_key(body, headers)
        trace, root = begin(op, route, body, key, headers, principal)
        self.in_flight += 1
        runtime.active += 1
        self.idle.clear()
        return Request(op, body, route, runtime, key, principal, trace, root, headers)

    def _leave(self, runtime: Runtime) -> None:
        self.in_flight -= 1
        runtime.active -= 1
        if not self.in_flight:
            self.idle.set()
