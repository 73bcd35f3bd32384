"""The gateway's service layer: resolve the route, try targets (retry, backoff, fallback), trace it.

HTTP handlers stay thin; the CLI's in-process chat calls this directly too. Every attempt becomes
a span carrying the OpenTelemetry GenAI attributes; the finished trace goes to the batch writer.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import logging
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from shipyard.content import input_text
from shipyard.errors import InvalidRequest, ProviderError, ProviderTimeout, ShipyardError
from shipyard.gateway.limits import Limiter, Ticket, estimate, measure_prompt, subjects_for
from shipyard.gateway.runtime import Route, Runtime, Target
from shipyard.providers.base import SSE_DONE, Call, Completion, Embeddings, StreamChunk, Usage
from shipyard.redact import scrub
from shipyard.retries import backoff
from shipyard.settings import BY_NAME
from shipyard.tracing import semconv as sc
from shipyard.tracing.spans import Span, Trace
from shipyard.tracing.writer import TraceWriter

if TYPE_CHECKING:
    from shipyard.gateway.auth import Principal
    from shipyard.guard.pipeline import GuardState

log = logging.getLogger("shipyard.gateway")

OPERATIONS = {"chat": "chat", "completion": "text_completion", "embeddings": "embeddings"}
SESSION_HEADER = "x-shipyard-session"
TAGS_HEADER = "x-shipyard-tags"  # comma-separated labels stored on the trace (filters, datasets)


@dataclass(slots=True)
class Answer:
    """A finished non-streamed answer and the trace that recorded it."""

    body: bytes
    trace: Trace


class Gateway:
    def __init__(self, runtime: Runtime, writer: TraceWriter | None, default_timeout: float = 120.0) -> None:
        self.runtime = runtime
        self.writer = writer
        self.default_timeout = default_timeout
        self.in_flight = 0
        self.idle = asyncio.Event()  # set whenever no request is in flight (shutdown waits on it)
        self.idle.set()
        # Called with every finished trace, on the request path: metrics, online-eval sampling.
        # Each must be cheap and must not raise; slow work belongs on a queue of its own.
        self.observers: list[Callable[[Trace], None]] = []
        # Rate limits and budgets; None (in-process gateways of eval runs) serves without them.
        self.limiter: Limiter | None = None
        # `trace_durability: acknowledged`: an answer is sent only once its trace is committed.
        self.durable = False
        # Most input tokens one embeddings request may carry (setting `max_embedding_input_tokens`).
        self.max_embedding_tokens: int = BY_NAME["max_embedding_input_tokens"].default

    def _enter(self, runtime: Runtime) -> None:
        self.in_flight += 1
        runtime.active += 1
        self.idle.clear()

    def _leave(self, runtime: Runtime) -> None:
        self.in_flight -= 1
        runtime.active -= 1
        if not self.in_flight:
            self.idle.set()

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def sticky_key(body: Mapping[str, Any], headers: Mapping[str, str] | None) -> str | None:
        if headers is not None:
            key = headers.get(SESSION_HEADER)
            if key:
                return key
        user = body.get("user")
        return user if isinstance(user, str) and user else None

    def _begin(
        self,
        op: str,
        route: Route,
        body: dict[str, Any],
        key: str | None,
        headers: Mapping[str, str] | None,
        principal: Principal | None = None,
    ) -> tuple[Trace, Span]:
        operation = OPERATIONS[op]
        trace = Trace(
            operation=operation,
            route=route.name,
            stream=bool(body.get("stream")),
            user_id=key,
            route_version=route.version,
        )
        if principal is not None:
            trace.attributes["shipyard.key.id"] = principal.key_id
            trace.attributes["shipyard.key.name"] = principal.name
        if headers is not None and (raw_tags := headers.get(TAGS_HEADER)):
            trace.tags = [t.strip() for t in raw_tags.split(",") if t.strip()][:32]
        if op == "chat":
            trace.input = body.get("messages")
        elif op == "completion":
            trace.input = body.get("prompt")
        else:
            trace.input = body.get("input")
        root = trace.span(
            f"{operation} {route.name}",
            attributes={
                sc.OPERATION_NAME: operation,
                sc.REQUEST_MODEL: route.name,
                sc.ROUTE: route.name,
                sc.STREAM: trace.stream,
            },
        )
        for param, attr in sc.REQUEST_PARAMS.items():
            if param in body:
                root.attributes[attr] = body[param]
        return trace, root

    def _call(self, op: str, target: Target, body: dict[str, Any], key: str | None, trace: Trace) -> Call:
        """The body this target gets: the model's defaults < the prompt's params < the client's
        < the target's params; on prompt routes, the rendered template before the client's messages."""
        prompt = target.prompt if op == "chat" else None
        if prompt is not None:
            variables = body.get("variables") or {}
            messages = prompt.render(variables) + list(body.get("messages") or [])
            defaults = {**target.model.params, **prompt.params}
            if prompt.response_schema is not None and "response_format" not in body:
                defaults["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": prompt.name, "schema": prompt.response_schema},
                }
            merged = {**defaults, **body, **target.params, "messages": messages}
            trace.input = messages
            trace.prompt, trace.prompt_version = prompt.name, prompt.version
            if variables:
                trace.attributes["shipyard.variables"] = variables
        elif op == "chat" and not body.get("messages"):
            what = "is required" if body.get("messages") is None else "must contain at least one message"
            raise InvalidRequest(
                f'`messages` {what}: an array like [{{"role": "user", "content": "Hi"}}] '
                f"(route `{trace.route}` has no prompt template to build them from `variables`)",
                param="messages",
            )
        elif target.model.params or target.params:
            merged = {**target.model.params, **body, **target.params}
        else:
            merged = dict(body)
        merged.pop("variables", None)  # Shipyard's own field: never sent upstream
        merged["model"] = target.provider_model
        call = Call(body=merged, model=target.provider_model, timeout=target.timeout, user=key)
        if op == "embeddings":
            call.max_input_tokens = self.max_embedding_tokens
        return call

    def _attempt_span(self, trace: Trace, root: Span, op: str, target: Target, n: int, call: Call) -> Span:
        # A request that fails on every attempt is charged to the last target it tried (metrics and
        # the dashboard's per-model error rates); a success overwrites these with what answered.
        trace.target, trace.provider, trace.model = target.label, target.provider_name, target.provider_model
        span = trace.span(
            f"{OPERATIONS[op]} {target.provider_model}",
            parent=root,
            attributes={
                sc.OPERATION_NAME: OPERATIONS[op],
                sc.PROVIDER_NAME: target.provider_name,
                sc.REQUEST_MODEL: target.provider_model,
                sc.TARGET: target.label,
                sc.ATTEMPT: n,
            },
        )
        for param, attr in sc.REQUEST_PARAMS.items():
            if param in call.body:
                span.attributes[attr] = call.body[param]
        return span

    def _fail_span(self, span: Span, exc: BaseException) -> None:
        span.finish("error", **{sc.ERROR_TYPE: _error_type(exc)})
        span.attributes["error.message"] = scrub(str(exc))[:500]

    def _record_success(
        self, trace: Trace, span: Span, target: Target, usage: Usage, model: str, finish: str | None
    ) -> None:
        trace.target = target.label
        trace.provider = target.provider_name
        trace.model = model
        trace.model_version = target.model_version
        trace.input_tokens = usage.input_tokens
        trace.output_tokens = usage.output_tokens
        trace.cost_usd = target.pricing.cost(usage.input_tokens, usage.output_tokens)
        attrs = {
            sc.RESPONSE_MODEL: model,
            sc.USAGE_INPUT_TOKENS: usage.input_tokens,
            sc.USAGE_OUTPUT_TOKENS: usage.output_tokens,
        }
        if finish:
            attrs[sc.RESPONSE_FINISH_REASONS] = [finish]
        # Usage, model and cost live on the attempt span and the trace row; the root span keeps
        # only what the client asked for, so nothing is stored twice.
        span.finish("ok", **attrs)

    def _finish(
        self, trace: Trace, root: Span, error: BaseException | None = None, status: int = 200
    ) -> concurrent.futures.Future[bool] | None:
        """Close the trace and hand it to the writer; in durable mode, a successful answer's
        trace comes back as a future the caller awaits (``_committed``) before answering."""
        trace.end = time.time()
        if error is not None:
            # Already counted through its trace; the app counts only errors that have none. The
            # trace id goes back to the client in the error response's headers.
            error.__dict__["shipyard_traced"] = True
            error.__dict__["shipyard_trace_id"] = trace.trace_id
            trace.status = "error"
            trace.status_code = status
            trace.error = scrub(str(error))[:2000]
            root.finish("error", **{sc.ERROR_TYPE: _error_type(error)})
        else:
            root.finish("ok")
        if trace.ttft_ms is not None:
            root.attributes[sc.TTFT_MS] = round(trace.ttft_ms, 3)
        for observe in self.observers:
            try:
                observe(trace)
            except Exception:
                log.exception("trace observer %r failed", observe)
        if self.writer is not None:
            if self.durable and error is None:
                return self.writer.submit_acknowledged(trace)
            self.writer.submit(trace)
        return None

    async def _committed(self, future: concurrent.futures.Future[bool] | None, trace: Trace) -> None:
        if future is None:
            return
        try:
            stored = await asyncio.wait_for(asyncio.wrap_future(future), 30.0)
        except TimeoutError:
            stored = False
        if not stored:
            log.error("trace %s could not be stored before its answer was sent", trace.trace_id)

    def _plan(self, root: Span, route: Route, key: str | None) -> list[Target]:
        """The targets to try, in order. The routing decision takes microseconds, so it is recorded
        on the root span (candidates, the first being the one chosen) rather than as a span of its
        own: at millions of traces a span row per request is a tenth of the store."""
        plan = route.plan(key)
        root.attributes[sc.STICKY] = key is not None and route.sticky
        root.attributes[sc.CANDIDATES] = [t.label for t in plan]
        return plan

    def _limited(self, route: Route, principal: Principal | None) -> bool:
        """Whether the request has limits to pass (a plain check, so unlimited traffic awaits nothing)."""
        return self.limiter is not None and (
            route.limits is not None or (principal is not None and principal.limits is not None)
        )

    async def _admit(
        self, op: str, route: Route, body: dict[str, Any], plan: list[Target], principal: Principal | None
    ) -> Ticket | None:
        """Reserve what the request may use under its key's and route's limits (429 if it does not
        fit). Only called for limited routes or keys: unlimited traffic never gets here."""
        assert self.limiter is not None
        subjects = subjects_for(route, principal)
        if not subjects:
            return None
        return await self.limiter.admit(subjects, estimate(op, body, plan))

    def _settle(self, ticket: Ticket, trace: Trace, abandoned: bool = False) -> None:
        """Replace the reservation by what the request cost: the priced usage when it got any; the
        prompt's estimate when the client left while a provider was working (providers bill the
        prompt once they start); nothing when every attempt failed."""
        assert self.limiter is not None
        if trace.cost_usd is not None:
            usd = trace.cost_usd
            tokens = (trace.input_tokens or 0) + (trace.output_tokens or 0)
        elif abandoned:
            usd, tokens = ticket.demand.prompt_usd, ticket.demand.prompt_tokens
        else:
            usd, tokens = 0.0, 0
        try:
            self.limiter.settle(ticket, usd, tokens)
        except Exception:
            log.exception("settling usage for trace %s failed", trace.trace_id)

    def _check_embedding_size(self, body: dict[str, Any], plan: list[Target]) -> None:
        """Refuse an embeddings request with more input tokens than `max_embedding_input_tokens`.
        Text within the cap as UTF-8 bytes is within it as tokens. Above that, a provider with its
        own tokenizer enforces the cap as it tokenizes (``Call.max_input_tokens``); others are held
        to the bytes, since nothing smaller is certain."""
        cap = self.max_embedding_tokens
        size = measure_prompt("embeddings", body)
        if size.bound() <= cap:
            return
        for target in plan:
            if not getattr(target.provider, "exact_token_count", False):
                raise InvalidRequest(
                    f"`input` is {size.bound():,} bytes of text and token ids, which may be as many tokens "
                    f"(model `{target.label}` has no tokenizer here to count them exactly); one embeddings "
                    f"request may carry at most {cap:,} tokens (setting `max_embedding_input_tokens`): "
                    "split it into several requests",
                    param="input",
                )

    async def _backoff(self, route: Route, retry: int, exc: ProviderError) -> None:
        # Capped at 10 s even when an upstream asks for longer: a route has fallbacks to try.
        delay = backoff(retry, route.retry_backoff, cap=10.0, retry_after=exc.retry_after)
        if delay > 0:
            await asyncio.sleep(delay)

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
        kind = "embedding" if op == "embeddings" else "chat"
        runtime = self.runtime
        route = runtime.resolve(body.get("model"), kind)
        key = self.sticky_key(body, headers)
        trace, root = self._begin(op, route, body, key, headers, principal)
        self._enter(runtime)
        ticket: Ticket | None = None
        abandoned = False
        try:
            guard = route.guard
            state: GuardState | None = None
            if guard is not None and op != "embeddings":
                body, state = guard.check_input(op, body, trace, root)
            plan = self._plan(root, route, key)
            if op == "embeddings":
                self._check_embedding_size(body, plan)
            if self._limited(route, principal):
                ticket = await self._admit(op, route, body, plan, principal)
            result = await self._try_targets(op, route, plan, body, key, trace, root, state)
            if state is not None and guard is not None and isinstance(result, Completion):
                result = guard.check_output(op, result, state, trace, root)
        except ShipyardError as exc:
            self._finish(trace, root, exc, exc.status)
            raise
        except asyncio.CancelledError as exc:
            abandoned = True
            self._finish(trace, root, ClientGone("client disconnected"), 499)
            raise exc
        finally:
            self._leave(runtime)
            if ticket is not None:
                self._settle(ticket, trace, abandoned)
        trace.ttft_ms = trace.latency_ms
        if isinstance(result, Embeddings):
            trace.output = None
            try:
                payload = await _embedding_payload(result, body.get("encoding_format"))
            except asyncio.CancelledError:
                self._finish(trace, root, ClientGone("client disconnected"), 499)
                raise
        else:
            trace.output = result.text
            payload = result.to_bytes()
        await self._committed(self._finish(trace, root), trace)
        return Answer(payload, trace)

    async def _try_targets(
        self,
        op: str,
        route: Route,
        plan: list[Target],
        body: dict[str, Any],
        key: str | None,
        trace: Trace,
        root: Span,
        guard_state: GuardState | None = None,
    ) -> Completion | Embeddings:
        last: ProviderError | None = None
        n = 0
        for target in plan:
            for retry in range(target.retries + 1):
                if retry:
                    assert last is not None
                    await self._backoff(route, retry - 1, last)
                n += 1
                trace.attempts = n
                call = self._call(op, target, body, key, trace)
                if guard_state is not None and route.guard is not None:
                    route.guard.prepare_call(call, guard_state)
                span = self._attempt_span(trace, root, op, target, n, call)
                provider = target.provider
                try:
                    async with _deadline(target):
                        if op == "chat":
                            result: Completion | Embeddings = await provider.chat(call)
                        elif op == "completion":
                            result = await provider.complete(call)
                        else:
                            result = await provider.embed(call)
                except TimeoutError:
                    last = ProviderTimeout(f"target `{target.label}` timed out after {target.timeout:g}s")
                    self._fail_span(span, last)
                    continue
                except ProviderError as exc:
                    self._fail_span(span, exc)
                    if not exc.retryable:
                        raise
                    last = exc
                    continue
                except ShipyardError as exc:
                    self._fail_span(span, exc)
                    raise
                if isinstance(result, Embeddings):
                    self._record_success(trace, span, target, result.usage, result.model, None)
                else:
                    if result.rendered_prompt is not None:
                        span.attributes[sc.PROMPT_RENDERED] = result.rendered_prompt
                    self._record_success(
                        trace, span, target, result.usage, result.model, result.finish_reason
                    )
                return result
        raise _exhausted(route, n, last)

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
        stream, trace = await self._open_stream(op, body, headers, principal=principal)
        assert isinstance(stream, AsyncGenerator)
        try:
            head: bytes | None = await anext(stream)
        except StopAsyncIteration:
            head = None
        return _Primed(head, stream), trace

    async def _open_stream(
        self,
        op: str,
        body: dict[str, Any],
        headers: Mapping[str, str] | None = None,
        *,
        principal: Principal | None = None,
    ) -> tuple[AsyncIterator[bytes], Trace]:
        """Start a streamed answer. Targets are tried until one produces its first chunk, so any
        failure before the first byte is still an HTTP error (and can fall back); after that the
        stream belongs to the target that started it."""
        runtime = self.runtime
        route = runtime.resolve(body.get("model"), "chat")
        key = self.sticky_key(body, headers)
        trace, root = self._begin(op, route, body, key, headers, principal)
        self._enter(runtime)
        ticket: Ticket | None = None
        try:
            guard = route.guard
            state: GuardState | None = None
            if guard is not None:
                body, state = guard.check_input(op, body, trace, root)
            plan = self._plan(root, route, key)
            if self._limited(route, principal):
                ticket = await self._admit(op, route, body, plan, principal)
            last: ProviderError | None = None
            n = 0
            for target in plan:
                for retry in range(target.retries + 1):
                    if retry:
                        assert last is not None
                        await self._backoff(route, retry - 1, last)
                    n += 1
                    trace.attempts = n
                    call = self._call(op, target, body, key, trace)
                    if state is not None and guard is not None:
                        guard.prepare_call(call, state)
                    span = self._attempt_span(trace, root, op, target, n, call)
                    it = (
                        target.provider.stream_chat(call)
                        if op == "chat"
                        else target.provider.stream_complete(call)
                    )
                    try:
                        async with _deadline(target):
                            first = await anext(it)
                    except StopAsyncIteration:
                        last = ProviderTimeout(f"target `{target.label}` ended its stream without data")
                        self._fail_span(span, last)
                        continue
                    except TimeoutError:
                        await _aclose(it)
                        last = ProviderTimeout(
                            f"target `{target.label}` sent nothing for {target.timeout:g}s"
                        )
                        self._fail_span(span, last)
                        continue
                    except ProviderError as exc:
                        await _aclose(it)
                        self._fail_span(span, exc)
                        if not exc.retryable:
                            raise
                        last = exc
                        continue
                    except ShipyardError as exc:
                        await _aclose(it)
                        self._fail_span(span, exc)
                        raise
                    trace.target, trace.provider = target.label, target.provider_name
                    if first.rendered_prompt is not None:
                        span.attributes[sc.PROMPT_RENDERED] = first.rendered_prompt
                    if state is not None and guard is not None and guard.guards_output(state):
                        # The output guard wraps the stream; a block in the first chunk is still
                        # an HTTP error, since nothing has been sent yet.
                        it = guard.stream(op, first, it, state, trace, root)
                        try:
                            first = await anext(it)
                        except ShipyardError:
                            await _aclose(it)
                            span.finish("ok")
                            raise
                    return self._relay(runtime, trace, root, span, target, it, first, ticket), trace
            raise _exhausted(route, n, last)
        except ShipyardError as exc:
            self._leave(runtime)
            self._finish(trace, root, exc, exc.status)
            if ticket is not None:
                self._settle(ticket, trace)
            raise
        except BaseException as exc:
            self._leave(runtime)
            self._finish(trace, root, ClientGone(f"stream setup aborted: {type(exc).__name__}"), 499)
            if ticket is not None:
                self._settle(ticket, trace, abandoned=True)
            raise

    async def _relay(
        self,
        runtime: Runtime,
        trace: Trace,
        root: Span,
        span: Span,
        target: Target,
        it: AsyncIterator[StreamChunk],
        first: StreamChunk,
        ticket: Ticket | None = None,
    ) -> AsyncIterator[bytes]:
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
                if chunk.text:
                    texts.append(chunk.text)
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.finish_reason:
                    finish = chunk.finish_reason
                data = chunk.data
                if self.durable and data.endswith(SSE_DONE):
                    data, held = data[: -len(SSE_DONE)], SSE_DONE
                if data:
                    if trace.ttft_ms is None and (chunk.text or chunk.finish_reason):
                        trace.ttft_ms = (time.time() - trace.start) * 1000
                    yield data
                try:
                    async with _deadline(target):
                        chunk = await anext(it)
                except StopAsyncIteration:
                    break
        except TimeoutError:
            error = ProviderTimeout(f"target `{target.label}` stalled for {target.timeout:g}s mid-stream")
            status = 504
            yield _sse_error(error)
        except ShipyardError as exc:
            error, status = exc, exc.status
            yield _sse_error(exc)
        except (asyncio.CancelledError, GeneratorExit) as exc:
            error, status = ClientGone("client disconnected mid-stream"), 499
            await _aclose(it)
            raise exc
        except Exception as exc:
            log.exception("stream from target `%s` failed", target.label)
            error, status = exc, 502
            yield _sse_error(ShipyardError(f"stream from target `{target.label}` failed: {exc}"))
        finally:
            self._leave(runtime)
            trace.output = "".join(texts)
            if trace.ttft_ms is None and texts:
                trace.ttft_ms = trace.latency_ms
            if usage is None:
                usage = Usage(
                    target.provider.count_tokens(input_text(trace.input), target.provider_model),
                    target.provider.count_tokens(trace.output, target.provider_model),
                )
                root.attributes["shipyard.usage_estimated"] = True
            self._record_success(trace, span, target, usage, target.provider_model, finish)
            if ticket is not None:
                self._settle(ticket, trace)
            if error is not None:
                span.status = "error"
                span.attributes[sc.ERROR_TYPE] = _error_type(error)
            committed = self._finish(trace, root, error, status)
        if held:
            await self._committed(committed, trace)
            yield held


class _Primed:
    """A started relay and the event it already produced."""

    def __init__(self, head: bytes | None, rest: AsyncGenerator[bytes, None]) -> None:
        self._head = head
        self._rest = rest

    def __aiter__(self) -> _Primed:
        return self

    async def __anext__(self) -> bytes:
        if self._head is not None:
            head, self._head = self._head, None
            return head
        return await anext(self._rest)

    async def aclose(self) -> None:
        await self._rest.aclose()


class ClientGone(ShipyardError):
    status = 499
    type = "client_closed_request"


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, ProviderTimeout):
        return "timeout"
    if isinstance(exc, ShipyardError) and exc.code:
        return exc.code
    if isinstance(exc, ProviderError):
        return f"http_{exc.upstream_status}" if exc.upstream_status else type(exc).__name__
    return type(exc).__name__


def _exhausted(route: Route, attempts: int, last: ProviderError | None) -> ShipyardError:
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


def _sse_error(exc: ShipyardError) -> bytes:
    return b"data: " + orjson.dumps(exc.to_openai()) + b"\n\ndata: [DONE]\n\n"


async def _embedding_payload(result: Embeddings, encoding_format: Any) -> bytes:
    if result.raw is None and len(result.vectors) > 64:
        # Thousands of vectors take tens of milliseconds to serialise: not on the event loop.
        return await asyncio.to_thread(_embedding_bytes, result, encoding_format)
    return _embedding_bytes(result, encoding_format)


def _embedding_bytes(result: Embeddings, encoding_format: Any) -> bytes:
    if result.raw is not None:
        return result.raw
    data = result.to_openai()
    if encoding_format == "base64":
        for item in data["data"]:
            vec = item["embedding"]
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
    return orjson.dumps(data)


async def _aclose(it: AsyncIterator[Any]) -> None:
    close: Callable[[], Awaitable[None]] | None = getattr(it, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:
            pass


_NO_DEADLINE = contextlib.nullcontext()


def _deadline(target: Target) -> contextlib.AbstractAsyncContextManager[Any]:
    """The per-attempt (per-chunk, for streams) timeout, unless the provider enforces it itself."""
    if getattr(target.provider, "enforces_timeout", False):
        return _NO_DEADLINE
    return asyncio.timeout(target.timeout)
