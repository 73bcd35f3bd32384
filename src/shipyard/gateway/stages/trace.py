"""The trace stage: every request is a :class:`~shipyard.tracing.spans.Trace` whose root span is
opened when the request enters and closed when it ends, with one child span per provider attempt
(and the guards' own spans). The finished trace goes to the observers and the batch writer.

The span shapes are an interface (the dashboard, the OTLP exporter, metrics and the evals read
them): the root span keeps what the client asked for; usage, model and cost live on the attempt
span that answered and on the trace row, so nothing is stored twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from shipyard.errors import ProviderError, ProviderTimeout, ShipyardError
from shipyard.gateway.stages.context import OPERATIONS, Request
from shipyard.providers.base import Call, Completion, Embeddings, StreamChunk, Usage
from shipyard.redact import scrub
from shipyard.tracing import semconv as sc
from shipyard.tracing.spans import Span, Trace

if TYPE_CHECKING:
    from shipyard.gateway.auth import Principal
    from shipyard.gateway.runtime import Route, Target
    from shipyard.tracing.writer import TraceWriter

log = logging.getLogger("shipyard.gateway")

TAGS_HEADER = "x-shipyard-tags"  # comma-separated labels stored on the trace (filters, datasets)
MAX_TAGS = 32
# How long an acknowledged answer waits for its trace to be committed before it is sent anyway.
COMMIT_WAIT_S = 30.0


def begin(
    op: str,
    route: Route,
    body: dict[str, Any],
    key: str | None,
    headers: Mapping[str, str] | None,
    principal: Principal | None,
) -> tuple[Trace, Span]:
    """The request's trace and its root span, carrying what the client asked for."""
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
        trace.tags = [t.strip() for t in raw_tags.split(",") if t.strip()][:MAX_TAGS]
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


def attempt_span(req: Request, target: Target, n: int, call: Call) -> Span:
    """The span of the ``n``-th provider attempt, under the root span."""
    trace = req.trace
    # A request that fails on every attempt is charged to the last target it tried (metrics and
    # the dashboard's per-model error rates); a success overwrites these with what answered.
    trace.target, trace.provider, trace.model = target.label, target.provider_name, target.provider_model
    operation = OPERATIONS[req.op]
    span = trace.span(
        f"{operation} {target.provider_model}",
        parent=req.root,
        attributes={
            sc.OPERATION_NAME: operation,
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


def fail_span(span: Span, exc: BaseException) -> None:
    span.finish("error", **{sc.ERROR_TYPE: error_type(exc)})
    # Upstream error messages can echo credentials (a key in a URL, an auth header): scrubbed.
    span.attributes["error.message"] = scrub(str(exc))[:500]


def record_success(
    trace: Trace, span: Span, target: Target, usage: Usage, model: str, finish: str | None
) -> None:
    """What answered, and what it cost, on the trace row and the attempt span."""
    trace.target = target.label
    trace.provider = target.provider_name
    trace.model = model
    trace.model_version = target.model_version
    trace.input_tokens = usage.input_tokens
    trace.output_tokens = usage.output_tokens
    price = target.pricing
    trace.cost_usd = price.cost(usage.input_tokens, usage.output_tokens)
    attrs = {
        sc.COST_SOURCE: price.source,
        sc.RESPONSE_MODEL: model,
        sc.USAGE_INPUT_TOKENS: usage.input_tokens,
        sc.USAGE_OUTPUT_TOKENS: usage.output_tokens,
    }
    if finish:
        attrs[sc.RESPONSE_FINISH_REASONS] = [finish]
    span.finish("ok", **attrs)


def error_type(exc: BaseException) -> str:
    """The span's ``error.type``: a timeout, the error's code, or the upstream's HTTP status."""
    if isinstance(exc, ProviderTimeout):
        return "timeout"
    if isinstance(exc, ShipyardError) and exc.code:
        return exc.code
    if isinstance(exc, ProviderError):
        return f"http_{exc.upstream_status}" if exc.upstream_status else type(exc).__name__
    return type(exc).__name__


class Tracer:
    """Ends requests: closes the trace, shows it to the observers, hands it to the writer."""

    def __init__(self, writer: TraceWriter | None) -> None:
        self.writer = writer
        # Called with every finished trace, on the request path: metrics, online-eval sampling.
        # Each must be cheap and must not raise; slow work belongs on a queue of its own.
        self.observers: list[Callable[[Trace], None]] = []
        # `trace_durability: acknowledged`: an answer is sent only once its trace is committed.
        self.durable = False

    def finish(
        self, req: Request, error: BaseException | None = None, status: int = 200
    ) -> concurrent.futures.Future[bool] | None:
        """Close the trace and hand it to the writer; in durable mode, a successful answer's trace
        comes back as a future the caller awaits (:meth:`committed`) before answering."""
        trace, root = req.trace, req.root
        trace.end = time.time()
        if error is not None:
            # Already counted through its trace; the app counts only errors that have none. The
            # trace id goes back to the client in the error response's headers.
            error.__dict__["shipyard_traced"] = True
            error.__dict__["shipyard_trace_id"] = trace.trace_id
            trace.status = "error"
            trace.status_code = status
            trace.error = scrub(str(error))[:2000]
            root.finish("error", **{sc.ERROR_TYPE: error_type(error)})
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

    @staticmethod
    async def committed(future: concurrent.futures.Future[bool] | None, trace: Trace) -> None:
        """Wait (bounded) until the writer has committed the trace; an answer is never withheld
        for good because the store is slow, but the loss is logged."""
        if future is None:
            return
        try:
            stored = await asyncio.wait_for(asyncio.wrap_future(future), COMMIT_WAIT_S)
        except TimeoutError:
            stored = False
        if not stored:
            log.error("trace %s could not be stored before its answer was sent", trace.trace_id)


def record_answer(trace: Trace, span: Span, target: Target, result: Completion | Embeddings) -> None:
    """A whole answer's success: what answered, its usage, and the prompt the model was given."""
    if isinstance(result, Embeddings):
        record_success(trace, span, target, result.usage, result.model, None)
        return
    if result.rendered_prompt is not None:
        span.attributes[sc.PROMPT_RENDERED] = result.rendered_prompt
    record_success(trace, span, target, result.usage, result.model, result.finish_reason)


def record_stream_start(trace: Trace, span: Span, target: Target, first: StreamChunk) -> None:
    """A stream's first chunk: the target that answers. Its usage is recorded when it ends."""
    trace.target, trace.provider = target.label, target.provider_name
    if first.rendered_prompt is not None:
        span.attributes[sc.PROMPT_RENDERED] = first.rendered_prompt
