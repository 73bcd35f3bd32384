"""OTLP/HTTP export of the gateway's own traces to an external collector (Jaeger, Tempo, an OTel
Collector, another Shipyard), so teams keep the tracing backend they already run.

The trace writer hands every batch it has stored to :meth:`OtlpExporter.submit`, which only
appends to a bounded in-memory queue (a full queue drops and counts, like the writer). One
background thread encodes batches as ExportTraceServiceRequest protobuf, gzips them and POSTs them
with retries and exponential backoff on 429, 5xx and connection errors (honouring Retry-After);
``close()`` sends what is still queued before a clean shutdown returns.
"""

from __future__ import annotations

import collections
import gzip
import logging
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx
from google.protobuf.message import DecodeError
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

from shipyard import __version__
from shipyard.errors import ConfigError
from shipyard.retries import backoff, parse_retry_after
from shipyard.tracing import semconv as sc
from shipyard.tracing.spans import Span, Trace

log = logging.getLogger("shipyard.tracing")

SERVICE_NAME = "shipyard"
_KINDS = {
    "internal": OtlpSpan.SPAN_KIND_INTERNAL,
    "server": OtlpSpan.SPAN_KIND_SERVER,
    "client": OtlpSpan.SPAN_KIND_CLIENT,
    "producer": OtlpSpan.SPAN_KIND_PRODUCER,
    "consumer": OtlpSpan.SPAN_KIND_CONSUMER,
}
RETRYABLE = frozenset({408, 429})


def parse_headers(raw: str | None) -> dict[str, str]:
    """``k=v,k2=v2`` (values percent-encoded), the format of OTEL_EXPORTER_OTLP_HEADERS."""
    out: dict[str, str] = {}
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"setting `otlp_export_headers`: `{item.strip()}` is not `key=value`; "
                "write headers like `authorization=Bearer%20abc,x-scope-orgid=team-a`"
            )
        out[urllib.parse.unquote(key.strip()).lower()] = urllib.parse.unquote(value.strip())
    return out


def traces_url(endpoint: str) -> str:
    """The endpoint as given; a bare ``http://host:4318`` gets the standard ``/v1/traces`` path."""
    url = endpoint.strip()
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            f"setting `otlp_export_endpoint` must be an http(s) URL like "
            f"`http://collector:4318/v1/traces`; got `{endpoint}`"
        )
    if parsed.path in ("", "/"):
        url = url.rstrip("/") + "/v1/traces"
    return url


def _any(value: Any) -> AnyValue | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return AnyValue(int_value=value)
        return AnyValue(string_value=str(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list | tuple):
        out = AnyValue()
        for v in value:
            item = _any(v)
            if item is not None:
                out.array_value.values.append(item)
        return out
    if isinstance(value, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(_key_values(value.items()))
        return out
    return AnyValue(string_value=str(value))


def _key_values(items: Iterable[tuple[Any, Any]]) -> list[KeyValue]:
    out = []
    for key, value in items:
        v = _any(value)
        if v is not None:
            out.append(KeyValue(key=str(key), value=v))
    return out


def _kind(span: Span) -> int:
    named = span.attributes.get("otel.span_kind")
    if isinstance(named, str) and named in _KINDS:
        return _KINDS[named]
    if span.parent_id is None:
        return OtlpSpan.SPAN_KIND_SERVER  # the gateway answering its client
    if sc.ATTEMPT in span.attributes:
        return OtlpSpan.SPAN_KIND_CLIENT  # the gateway calling a provider
    return OtlpSpan.SPAN_KIND_INTERNAL


def _root_extras(trace: Trace) -> dict[str, Any]:
    """Trace-level facts that live on the trace row, not on a span: the root span carries them."""
    extras: dict[str, Any] = {"http.response.status_code": trace.status_code}
    if trace.user_id:
        extras["user.id"] = trace.user_id
    if trace.cost_usd is not None:
        extras[sc.COST_USD] = trace.cost_usd
    for key, value in (
        ("shipyard.route_version", trace.route_version),
        ("shipyard.model_version", trace.model_version),
        ("shipyard.prompt", trace.prompt),
        ("shipyard.prompt_version", trace.prompt_version),
        ("shipyard.tags", trace.tags),
    ):
        if value is not None:
            extras[key] = value
    return extras


def encode(traces: Sequence[Trace]) -> ExportTraceServiceRequest:
    """The traces as one OTLP request: resource ``service.name=shipyard``, one scope, their spans."""
    scope = ScopeSpans(scope=InstrumentationScope(name="shipyard.gateway", version=__version__))
    for trace in traces:
        trace_id = bytes.fromhex(trace.trace_id)
        for span in trace.spans:
            attrs: Mapping[str, Any] = span.attributes
            if sc.PROMPT_RENDERED in attrs:
                # Message content stays in Shipyard's store, as the trace's input and output do.
                attrs = {k: v for k, v in attrs.items() if k != sc.PROMPT_RENDERED}
            if span.parent_id is None:
                attrs = {**span.attributes, **_root_extras(trace)}
            end = span.end or span.start
            out = OtlpSpan(
                trace_id=trace_id,
                span_id=bytes.fromhex(span.span_id),
                parent_span_id=bytes.fromhex(span.parent_id) if span.parent_id else b"",
                name=span.name,
                kind=_kind(span),  # type: ignore[arg-type]
                start_time_unix_nano=int(span.start * 1e9),
                end_time_unix_nano=int(end * 1e9),
                status=Status(
                    code=Status.STATUS_CODE_ERROR if span.status == "error" else Status.STATUS_CODE_OK,
                    message=str(span.attributes.get("error.message") or "") if span.status == "error" else "",
                ),
            )
            out.attributes.extend(_key_values(attrs.items()))
            scope.spans.append(out)
    resource = Resource(
        attributes=_key_values(
            [
                ("service.name", SERVICE_NAME),
                ("service.version", __version__),
                ("telemetry.sdk.name", "shipyard"),
                ("telemetry.sdk.language", "python"),
            ]
        )
    )
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=resource, scope_spans=[scope])])


class OtlpExporter:
    """Background OTLP/HTTP exporter; ``submit`` never blocks and never raises."""

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        queue_size: int = 50_000,
        batch_size: int = 256,
        max_attempts: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.url = traces_url(endpoint)
        self.headers = {
            **dict(headers or {}),
            "content-type": "application/x-protobuf",
            "content-encoding": "gzip",
            "user-agent": f"shipyard/{__version__}",
        }
        self.timeout = timeout
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._queue: collections.deque[Trace] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._inflight = 0
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None
        self._deadline = float("inf")  # set by close(): retries and waits stop there
        self.exported = 0  # traces the collector accepted
        self.exported_spans = 0
        self.rejected_spans = 0  # spans the collector said it refused (partial success)
        self.dropped = 0  # traces dropped: queue full, or the collector refused or stayed down
        self.failed_requests = 0

    @property
    def pending(self) -> int:
        return len(self._queue) + self._inflight

    def start(self) -> None:
        if self._thread is None:
            self._client = httpx.Client(timeout=self.timeout)
            self._thread = threading.Thread(target=self._run, name="shipyard-otlp-export", daemon=True)
            self._thread.start()

    def submit(self, traces: Sequence[Trace]) -> None:
        """Queue stored traces for export (the trace writer calls this after each batch)."""
        with self._cond:
            room = self.queue_size - len(self._queue)
            if self._closing:
                room = 0
            taken = traces if len(traces) <= room else traces[: max(room, 0)]
            self._queue.extend(taken)
            lost = len(traces) - len(taken)
            if taken:
                self._cond.notify()
        if lost:
            before = self.dropped
            self.dropped += lost
            if before == 0 or before // 10_000 != self.dropped // 10_000:
                log.warning("OTLP export queue full: %d trace(s) dropped so far", self.dropped)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far was sent (or given up on)."""
        deadline = time.monotonic() + timeout
        while self.pending:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Send what is queued (within ``timeout``), then stop the thread."""
        if self._thread is None:
            return
        self._deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join(timeout + 1)
        self._thread = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._queue:
            self.dropped += len(self._queue)
            log.warning("OTLP export: %d trace(s) not sent before shutdown", len(self._queue))
            self._queue.clear()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait(1.0)
                if not self._queue or (self._closing and time.monotonic() > self._deadline):
                    return
                batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                self._inflight = len(batch)
            try:
                self._send(batch)
            except Exception:  # an encoding bug must not kill the thread
                log.exception("OTLP export of %d trace(s) failed", len(batch))
                self.dropped += len(batch)
            finally:
                self._inflight = 0

    def _send(self, batch: list[Trace]) -> None:
        # A plain loop over `shipyard.retries.backoff` rather than tenacity or stamina: the wait
        # depends on the answer (Retry-After), the deadline close() sets both cuts waits short and
        # gives up a retry that could not finish before it, and each outcome has its own counter
        # and log line. In tenacity that is a retry predicate, a wait, a stop, a sleep, a
        # before-sleep and an error callback sharing state through the retry state; stamina
        # brings a backoff formula of its own, which is not Shipyard's one rule.
        body = gzip.compress(encode(batch).SerializeToString(), compresslevel=5)
        n_spans = sum(len(t.spans) for t in batch)
        assert self._client is not None
        for attempt in range(1, self.max_attempts + 1):
            retry_after: float | None = None
            try:
                resp = self._client.post(self.url, content=body, headers=self.headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code == 200:
                    self._accepted(batch, n_spans, resp)
                    return
                problem = f"HTTP {resp.status_code}: {_status_message(resp)}"
                if resp.status_code < 500 and resp.status_code not in RETRYABLE:
                    self._give_up(batch, problem)
                    return
                retry_after = parse_retry_after(resp.headers.get("retry-after"))
            self.failed_requests += 1
            wait = backoff(attempt - 1, self.backoff, self.max_backoff, retry_after)
            if attempt == self.max_attempts or time.monotonic() + wait > self._deadline:
                self._give_up(batch, problem)
                return
            log.warning("OTLP export to %s failed (%s); retry %d in %.1fs", self.url, problem, attempt, wait)
            self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        # A shutdown cuts the wait short to what its deadline allows.
        end = min(time.monotonic() + seconds, self._deadline)
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))

    def _accepted(self, batch: list[Trace], n_spans: int, resp: httpx.Response) -> None:
        self.exported += len(batch)
        self.exported_spans += n_spans
        if not resp.content:
            return
        answer = ExportTraceServiceResponse()
        try:
            answer.ParseFromString(resp.content)
        except Exception:
            return  # a collector answering 200 with something else still took the spans
        partial = answer.partial_success
        if partial.rejected_spans:
            self.rejected_spans += partial.rejected_spans
            log.warning(
                "OTLP collector at %s rejected %d span(s): %s",
                self.url,
                partial.rejected_spans,
                partial.error_message,
            )

    def _give_up(self, batch: list[Trace], problem: str) -> None:
        self.dropped += len(batch)
        log.error("OTLP export to %s gave up on %d trace(s): %s", self.url, len(batch), problem)


def _status_message(resp: httpx.Response) -> str:
    """The message of an error answer: a google.rpc.Status (protobuf or JSON) or plain text."""
    if resp.headers.get("content-type", "").startswith("application/x-protobuf"):
        status = RpcStatus()
        try:
            status.ParseFromString(resp.content)
        except DecodeError:
            pass
        else:
            if status.message:
                return status.message
    return resp.text[:300].strip() or "(empty body)"
