"""OTLP/HTTP trace ingest: ``POST /v1/traces`` from any OpenTelemetry-instrumented application.

The body (protobuf or JSON, optionally gzip) is decoded into OTLP spans, the spans become rows of
the ``spans`` table, and each OTel trace becomes one row of ``traces`` (``source="otlp"``) whose
model, tokens, cost, messages and status come from the GenAI semantic conventions. Spans of one
trace may arrive over several requests (a BatchSpanProcessor exports children before their parent),
so the trace row is recomputed from all of its stored spans whenever new ones arrive
(``store/otlp.py``). Responses follow the OTLP/HTTP specification: an ExportTraceServiceResponse in
the request's encoding, with ``partial_success`` when some spans were rejected; a ``google.rpc.Status``
with a readable message for bodies that cannot be decoded (400), unknown content types (415) and
oversized bodies (413).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as OtlpStatus
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from shipyard.content import text_parts
from shipyard.store.traces import TRACE_COLUMNS, trace_row
from shipyard.tracing import semconv as sc
from shipyard.tracing.spans import Span, Trace

if TYPE_CHECKING:
    from shipyard.config.schema import Pricing
    from shipyard.store.db import Store

log = logging.getLogger("shipyard.tracing")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# Attributes Shipyard adds to ingested spans (the spans table has no columns for them). They keep
# what is needed to recompute a trace from its stored spans: kind, scope, explicit status, events.
KIND_ATTR = "otel.span_kind"
SCOPE_ATTR = "otel.scope.name"
STATUS_CODE_ATTR = "otel.status_code"
STATUS_DESCRIPTION_ATTR = "otel.status_description"
EVENTS_ATTR = "otel.events"

KIND_NAMES = {
    OtlpSpan.SPAN_KIND_INTERNAL: "internal",
    OtlpSpan.SPAN_KIND_SERVER: "server",
    OtlpSpan.SPAN_KIND_CLIENT: "client",
    OtlpSpan.SPAN_KIND_PRODUCER: "producer",
    OtlpSpan.SPAN_KIND_CONSUMER: "consumer",
}

# GenAI attribute names beyond those the gateway itself sets (semconv.py).
USAGE_PROMPT_TOKENS = "gen_ai.usage.prompt_tokens"  # before semconv 1.27
USAGE_COMPLETION_TOKENS = "gen_ai.usage.completion_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
LEGACY_PROMPT = "gen_ai.prompt"  # indexed: gen_ai.prompt.0.role / .content; or a JSON event attribute
LEGACY_COMPLETION = "gen_ai.completion"
MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
CHOICE_EVENT = "gen_ai.choice"
PROMPT_EVENT = "gen_ai.content.prompt"  # semconv 1.26 span events
COMPLETION_EVENT = "gen_ai.content.completion"
USER_ATTRS = ("user.id", "enduser.id")
HTTP_STATUS_ATTRS = ("http.response.status_code", "http.status_code")

# Column widths of the traces/spans tables (Postgres enforces them).
_MAX_NAME = 256
_MAX_OPERATION = 32
_MAX_MODEL = 256
_MAX_PROVIDER = 128
_MAX_USER = 256

# Rollup buckets are 32-bit unix seconds; later times cannot be stored.
_LATEST_NS = (2**31 - 2 * 3600) * 10**9
_MAX_INT = 2**31 - 1

_INDEXED = re.compile(r"^gen_ai\.(prompt|completion)\.(\d+)\.(\w+)$")
_CONTENT_KEYS = (
    f"{LEGACY_PROMPT}.",
    f"{LEGACY_COMPLETION}.",
    INPUT_MESSAGES,
    OUTPUT_MESSAGES,
    SYSTEM_INSTRUCTIONS,
)


class OtlpError(Exception):
    """A request the endpoint refuses as a whole; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- decoding ---------------------------------------------------------------------------------------


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decode_body(body: bytes, content_type: str | None, content_encoding: str | None, limit: int) -> bytes:
    """Check the content type and undo the content encoding, never inflating past ``limit``."""
    kind = media_type(content_type)
    if kind not in (PROTOBUF, JSON):
        got = f"`{content_type}`" if content_type else "no Content-Type"
        raise OtlpError(
            415,
            f"unsupported content type {got}: send OTLP as `{PROTOBUF}` "
            f"(ExportTraceServiceRequest) or `{JSON}` (OTLP/JSON)",
        )
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "deflate"):
        raise OtlpError(415, f"unsupported Content-Encoding `{content_encoding}`: use gzip, deflate or none")
    # wbits: 16+ for a gzip header, plain for zlib-wrapped deflate.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise OtlpError(400, f"body is not valid {encoding} data: {exc}") from None
    if len(out) > limit:
        raise OtlpError(
            413,
            f"decompressed body exceeds the limit of {limit} bytes (setting `otlp_max_body_bytes`); "
            "export smaller batches (BatchSpanProcessor max_export_batch_size)",
        )
    if not inflater.eof:
        raise OtlpError(400, f"body is truncated {encoding} data")
    return out


def parse_request(data: bytes, content_type: str | None) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    if media_type(content_type) == PROTOBUF:
        try:
            req.ParseFromString(data)
        except (DecodeError, ValueError) as exc:
            raise OtlpError(
                400, f"body is not a valid protobuf ExportTraceServiceRequest: {exc or 'cannot parse'}"
            ) from None
        return req
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise OtlpError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise OtlpError(400, 'OTLP/JSON body must be an object like {"resourceSpans": [...]}')
    try:
        _hex_ids_to_base64(doc)
        json_format.ParseDict(doc, req, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OtlpError(400, f"body is not a valid OTLP/JSON ExportTraceServiceRequest: {exc}") from None
    except RecursionError:
        raise OtlpError(400, "OTLP/JSON body is nested too deeply (attribute values inside values)") from None
    return req


_ID_FIELDS = {
    "traceId": 16,
    "trace_id": 16,
    "spanId": 8,
    "span_id": 8,
    "parentSpanId": 8,
    "parent_span_id": 8,
}


def _hex_ids_to_base64(doc: dict[str, Any]) -> None:
    """OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping expects base64."""

    def fix(obj: dict[str, Any], where: str) -> None:
        for key in _ID_FIELDS:
            value = obj.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise OtlpError(400, f"{where}.{key} must be a hex string, got {type(value).__name__}")
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raise OtlpError(
                    400,
                    f"{where}.{key} `{value[:40]}` is not hex: OTLP/JSON encodes ids as hex strings "
                    f"({_ID_FIELDS[key] * 2} hex digits), not base64",
                ) from None
            obj[key] = base64.b64encode(raw).decode()

    for i, rs in enumerate(_list(doc, "resourceSpans", "resource_spans", "")):
        for j, ss in enumerate(_list(rs, "scopeSpans", "scope_spans", f"resourceSpans[{i}]")):
            for k, span in enumerate(_list(ss, "spans", "spans", f"resourceSpans[{i}].scopeSpans[{j}]")):
                where = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                if not isinstance(span, dict):
                    raise OtlpError(400, f"{where} must be an object")
                fix(span, where)
                for n, link in enumerate(_list(span, "links", "links", where)):
                    if isinstance(link, dict):
                        fix(link, f"{where}.links[{n}]")


def _list(obj: Any, camel: str, snake: str, where: str) -> list[Any]:
    if not isinstance(obj, dict):
        raise OtlpError(400, f"{where or 'body'} must be an object")
    value = obj.get(camel, obj.get(snake))
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpError(400, f"{(where + '.') if where else ''}{camel} must be an array")
    return value


# -- OTLP spans -> Shipyard spans -------------------------------------------------------------------


def any_value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return key_values(v.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if kind == "double_value" and not math.isfinite(v.double_value):
        return str(v.double_value)  # JSON has no NaN/Infinity
    if kind == "string_value":
        return _text(v.string_value)
    return getattr(v, kind)


def key_values(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    return {_text(kv.key): any_value(kv.value) for kv in kvs}


def _text(value: str) -> str:
    """Postgres text and jsonb cannot hold NUL characters."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


@dataclass
class Batch:
    """What one request carried, grouped by trace id; ``rejected`` counts spans refused as invalid."""

    traces: dict[str, list[Span]] = field(default_factory=dict)
    spans: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, n: int, reason: str) -> None:
        self.rejected += n
        if len(self.reasons) < 5 and reason not in self.reasons:
            self.reasons.append(reason)


def spans_from_request(req: ExportTraceServiceRequest, capture: str = "full", max_chars: int = 2000) -> Batch:
    """The request's spans as rows for the spans table, grouped by trace id (lowercase hex).

    Root spans carry their resource's attributes (``service.name``, …); other spans only
    ``service.name``. The capture policy applies to prompt and completion attributes and events."""
    out = Batch()
    for rs in req.resource_spans:
        resource = key_values(rs.resource.attributes)
        service = resource.get("service.name")
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for s in ss.spans:
                out.spans += 1
                problem = _invalid(s)
                if problem:
                    out.reject(1, problem)
                    continue
                span = _span(s, resource, service, scope, capture, max_chars)
                out.traces.setdefault(span.trace_id, []).append(span)
    return out


def _invalid(s: OtlpSpan) -> str | None:
    if len(s.trace_id) != 16 or not any(s.trace_id):
        return f"span `{s.name[:60]}`: trace_id must be 16 bytes and not all zero (got {len(s.trace_id)})"
    if len(s.span_id) != 8 or not any(s.span_id):
        return f"span `{s.name[:60]}`: span_id must be 8 bytes and not all zero (got {len(s.span_id)})"
    if s.parent_span_id and len(s.parent_span_id) != 8:
        return f"span `{s.name[:60]}`: parent_span_id must be empty or 8 bytes (got {len(s.parent_span_id)})"
    if not s.start_time_unix_nano:
        return f"span `{s.name[:60]}`: start_time_unix_nano is missing"
    if max(s.start_time_unix_nano, s.end_time_unix_nano) > _LATEST_NS:
        return f"span `{s.name[:60]}`: start/end time is after 2038, not a plausible time (unix nanoseconds?)"
    return None


def _span(
    s: OtlpSpan, resource: dict[str, Any], service: Any, scope: str, capture: str, max_chars: int
) -> Span:
    parent = s.parent_span_id.hex() if s.parent_span_id and any(s.parent_span_id) else None
    attrs: dict[str, Any] = {}
    if parent is None:
        attrs.update(resource)
    elif service is not None:
        attrs["service.name"] = service
    attrs.update(key_values(s.attributes))
    if s.kind in KIND_NAMES:
        attrs[KIND_ATTR] = KIND_NAMES[s.kind]
    if scope:
        attrs[SCOPE_ATTR] = _text(scope)
    status = "error" if s.status.code == OtlpStatus.STATUS_CODE_ERROR else "ok"
    if s.status.code == OtlpStatus.STATUS_CODE_OK:
        attrs[STATUS_CODE_ATTR] = "OK"  # explicit OK (see summarize) differs from unset
    if s.status.message:
        attrs[STATUS_DESCRIPTION_ATTR] = _text(s.status.message)
    if s.events:
        attrs[EVENTS_ATTR] = [
            {"name": _text(e.name), "time": e.time_unix_nano / 1e9, "attributes": key_values(e.attributes)}
            for e in s.events
        ]
    if capture != "full":
        _apply_capture(attrs, capture, max_chars)
    start = s.start_time_unix_nano / 1e9
    end = max(s.end_time_unix_nano / 1e9, start)
    return Span(
        name=_text(s.name)[:_MAX_NAME],
        trace_id=s.trace_id.hex(),
        parent_id=parent,
        span_id=s.span_id.hex(),
        start=start,
        end=end,
        status=status,
        attributes=attrs,
    )


def _is_content_key(key: str) -> bool:
    return key.startswith(_CONTENT_KEYS) or key in (LEGACY_PROMPT, LEGACY_COMPLETION)


def _apply_capture(attrs: dict[str, Any], capture: str, max_chars: int) -> None:
    """``capture_messages`` for spans: drop (none) or cut (truncated) prompts and completions."""

    def cut(value: Any) -> Any:
        if isinstance(value, str) and len(value) > max_chars:
            return value[:max_chars] + f"…[{len(value) - max_chars} more chars]"
        return value

    for key in [k for k in attrs if _is_content_key(k)]:
        if capture == "none":
            del attrs[key]
        else:
            attrs[key] = cut(attrs[key])
    events = attrs.get(EVENTS_ATTR)
    if not events:
        return
    for e in events:
        if not str(e.get("name", "")).startswith("gen_ai."):
            continue
        ea = e["attributes"]
        for key in list(ea):
            if key in ("content", "message", LEGACY_PROMPT, LEGACY_COMPLETION) or _is_content_key(key):
                if capture == "none":
                    del ea[key]
                else:
                    ea[key] = cut(ea[key])


# -- Shipyard spans -> one trace row ----------------------------------------------------------------

PriceLookup = Callable[[str], "Pricing | None"]


def summarize(trace_id: str, spans: list[Span], price: PriceLookup | None = None) -> Trace:
    """The trace for all (known so far) spans of one OTel trace. ``status_code`` is the HTTP status
    on the root span when the application recorded one, else 200 (ok) or 500 (error)."""
    return _summarize(trace_id, spans, price)[0]


def trace_row_of(
    trace_id: str,
    spans: list[Span],
    price: PriceLookup | None = None,
    capture: str = "full",
    max_chars: int = 2000,
) -> tuple[Any, ...]:
    """The stored row: like :func:`summarize`, but ``status_code`` stays empty when no span says it."""
    trace, http_status = _summarize(trace_id, spans, price)
    row = list(trace_row(trace, capture, max_chars))
    row[_STATUS_CODE] = http_status
    return tuple(row)


_STATUS_CODE = TRACE_COLUMNS.index("status_code")


def _summarize(trace_id: str, spans: list[Span], price: PriceLookup | None) -> tuple[Trace, int | None]:
    ordered = sorted(spans, key=lambda s: (s.start, s.end))
    by_id = {s.span_id: s for s in ordered}
    roots = [s for s in ordered if s.parent_id is None]
    orphans = [s for s in ordered if s.parent_id is not None and s.parent_id not in by_id]
    root = (roots or orphans or ordered)[0]
    genai = [s for s in ordered if _is_genai(s.attributes)]

    t = Trace(operation="", trace_id=trace_id, source="otlp")
    t.start = ordered[0].start
    t.end = max(s.end for s in ordered)
    # Model calls: GenAI spans with a model and no GenAI span below them (a gateway's root span
    # names the route it was asked for; its attempt spans are the calls).
    genai_parents = {s.parent_id for s in genai}
    t.attempts = sum(1 for s in genai if s.span_id not in genai_parents and _model_of(s.attributes))
    ra = root.attributes
    t.operation = str(_first(s.attributes.get(sc.OPERATION_NAME) for s in [root, *genai]) or root.name)[
        :_MAX_OPERATION
    ]
    model_span = next((s for s in genai if s.attributes.get(sc.RESPONSE_MODEL)), None) or next(
        (s for s in genai if s.attributes.get(sc.REQUEST_MODEL)), None
    )
    if model_span is not None:
        t.model = _str(_model_of(model_span.attributes), _MAX_MODEL)
    t.provider = _str(
        _first(
            s.attributes.get(sc.PROVIDER_NAME) or s.attributes.get(sc.SYSTEM)
            for s in ([model_span] if model_span else []) + genai
        ),
        _MAX_PROVIDER,
    )
    t.user_id = _str(_first(s.attributes.get(k) for s in [root, *ordered] for k in USER_ATTRS), _MAX_USER)
    _usage_and_cost(t, ordered, by_id, price)
    http_status = _status(t, root, ordered)
    _messages(t, genai)
    ttft = ra.get(sc.TTFT_MS)
    if isinstance(ttft, int | float) and not isinstance(ttft, bool) and 0 <= ttft < 1e9:
        t.ttft_ms = float(ttft)
    t.route = _str(ra.get(sc.ROUTE), 128)
    t.target = _str(_first(s.attributes.get(sc.TARGET) for s in genai if s.status == "ok"), 128)
    t.stream = ra.get(sc.STREAM) is True
    t.attributes = {k: v for k, v in ra.items() if _is_resource_key(k)}
    if "service.name" not in t.attributes:
        service = _first(s.attributes.get("service.name") for s in ordered)
        if service is not None:
            t.attributes["service.name"] = service
    return t, http_status


def _first(values: Iterable[Any]) -> Any:
    for v in values:
        if v is not None and v != "":
            return v
    return None


def _str(value: Any, limit: int) -> str | None:
    return None if value is None else str(value)[:limit]


def _is_resource_key(key: str) -> bool:
    return key.startswith(("service.", "deployment.", "telemetry.sdk.", "host.", "process.runtime."))


def _is_genai(attrs: Mapping[str, Any]) -> bool:
    return any(
        k in attrs
        for k in (
            sc.OPERATION_NAME,
            sc.REQUEST_MODEL,
            sc.RESPONSE_MODEL,
            sc.SYSTEM,
            sc.PROVIDER_NAME,
            sc.USAGE_INPUT_TOKENS,
            sc.USAGE_OUTPUT_TOKENS,
            USAGE_PROMPT_TOKENS,
            USAGE_COMPLETION_TOKENS,
        )
    )


def _model_of(attrs: Mapping[str, Any]) -> Any:
    return attrs.get(sc.RESPONSE_MODEL) or attrs.get(sc.REQUEST_MODEL)


def _int(value: Any) -> int | None:
    """A count that fits the store's integer columns, or None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return n if 0 <= n <= _MAX_INT else None


def _usage(attrs: Mapping[str, Any]) -> tuple[int | None, int | None]:
    inp = _int(attrs.get(sc.USAGE_INPUT_TOKENS))
    if inp is None:
        inp = _int(attrs.get(USAGE_PROMPT_TOKENS))
    out = _int(attrs.get(sc.USAGE_OUTPUT_TOKENS))
    if out is None:
        out = _int(attrs.get(USAGE_COMPLETION_TOKENS))
    return inp, out


def _sum(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _usage_and_cost(t: Trace, ordered: list[Span], by_id: dict[str, Span], price: PriceLookup | None) -> None:
    """Tokens summed over the spans that report usage; a span whose descendants report usage too
    (an agent span totalling its model calls) is left out so nothing is counted twice."""
    usage = {s.span_id: _usage(s.attributes) for s in ordered}
    usage = {k: v for k, v in usage.items() if v != (None, None)}
    covered: set[str] = set()
    for span_id in usage:
        parent = by_id[span_id].parent_id
        seen = 0
        while parent is not None and parent in by_id and seen < len(by_id):
            covered.add(parent)
            parent = by_id[parent].parent_id
            seen += 1
    leaves = [s for s in ordered if s.span_id in usage and s.span_id not in covered]
    t.input_tokens = _sum(usage[s.span_id][0] for s in leaves)
    t.output_tokens = _sum(usage[s.span_id][1] for s in leaves)
    # A Shipyard gateway exporting its traces states the cost it computed; otherwise price each
    # model call with the registry's pricing for that model.
    stated = _first(s.attributes.get(sc.COST_USD) for s in ordered if s.parent_id is None)
    if isinstance(stated, int | float) and not isinstance(stated, bool) and math.isfinite(stated):
        t.cost_usd = float(stated)
        return
    if price is None:
        return
    cost: float | None = None
    for s in leaves:
        pricing = None
        for name in (s.attributes.get(sc.RESPONSE_MODEL), s.attributes.get(sc.REQUEST_MODEL)):
            if isinstance(name, str) and name:
                pricing = price(name)
                if pricing is not None:
                    break
        if pricing is not None:
            inp, out = usage[s.span_id]
            cost = (cost or 0.0) + pricing.cost(inp or 0, out or 0)
    t.cost_usd = cost


def _status(t: Trace, root: Span, ordered: list[Span]) -> int | None:
    """Error when any span failed, unless the root span was explicitly marked OK: instrumentations
    never set OK (the spec reserves it for the application), so an OK root means a failure below
    it was handled, e.g. a gateway attempt that a fallback recovered."""
    code = _int(_first(root.attributes.get(k) for k in HTTP_STATUS_ATTRS))
    if code is not None and not 100 <= code <= 599:
        code = None
    if code is not None:
        t.status_code = code
    errors = [s for s in ordered if s.status == "error"]
    if not errors or (root.status == "ok" and root.attributes.get(STATUS_CODE_ATTR) == "OK"):
        return code
    t.status = "error"
    failed = root if root.status == "error" else errors[0]
    t.error = _error_message(failed)[:2000]
    if code is None:
        t.status_code = 500
    return code


def _error_message(s: Span) -> str:
    a = s.attributes
    for e in a.get(EVENTS_ATTR) or ():
        if e.get("name") == "exception":
            ea = e.get("attributes") or {}
            kind, msg = ea.get("exception.type"), ea.get("exception.message")
            if msg or kind:
                detail = f"{kind}: {msg}" if kind and msg else str(msg or kind)
                if a.get(STATUS_DESCRIPTION_ATTR) and a[STATUS_DESCRIPTION_ATTR] not in detail:
                    return f"{a[STATUS_DESCRIPTION_ATTR]} ({detail})"
                return detail
    text = a.get(STATUS_DESCRIPTION_ATTR) or a.get("error.message") or a.get(sc.ERROR_TYPE)
    return f"span `{s.name}`: {text}" if text else f"span `{s.name}` failed"


# -- prompts and completions ------------------------------------------------------------------------


def _messages(t: Trace, genai: list[Span]) -> None:
    """Input: the messages of the first model call; output: the answer of the last one."""
    for s in genai:
        msgs = input_messages(s.attributes)
        if msgs:
            t.input = _clean(msgs)
            break
    for s in sorted(genai, key=lambda s: s.end, reverse=True):
        text = output_text(s.attributes)
        if text is not None:
            t.output = _text(text)
            break


def _clean(value: Any) -> Any:
    """``_text`` all through decoded JSON (message contents may carry \\u0000 escapes)."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_text(str(k)): _clean(v) for k, v in value.items()}
    return value


def _loads(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _parts_text(parts: Any) -> str | None:
    """Text of a message's ``parts`` (semconv GenAI message schema): the text parts joined."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        return None
    texts = [
        str(p.get("content"))
        for p in parts
        if isinstance(p, dict) and p.get("type", "text") == "text" and p.get("content") is not None
    ]
    return "".join(texts) if texts else None


def _message(role: Any, raw: Mapping[str, Any]) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": str(role or raw.get("role") or "user")}
    content = raw.get("content")
    if "parts" in raw:
        content = _parts_text(raw["parts"])
        if any(isinstance(p, dict) and p.get("type", "text") != "text" for p in raw["parts"] or []):
            msg["parts"] = raw["parts"]
    msg["content"] = _content_text(content)
    for extra in ("tool_calls", "tool_call_id", "name"):
        if raw.get(extra) is not None:
            msg[extra] = raw[extra]
    return msg


def _content_text(content: Any) -> Any:
    """Content parts with text become that text; anything else is kept as sent, for display."""
    texts = text_parts(content) if isinstance(content, list) else []
    return "".join(texts) if texts else content


def input_messages(attrs: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The prompt messages a GenAI span carries, in whichever convention it used."""
    msgs: list[dict[str, Any]] = []
    system = _loads(attrs.get(SYSTEM_INSTRUCTIONS))
    if system is not None:
        text = _parts_text(system) if isinstance(system, list) else str(system)
        if text:
            msgs.append({"role": "system", "content": text})
    structured = _loads(attrs.get(INPUT_MESSAGES))
    if isinstance(structured, list) and structured:
        msgs.extend(_message(None, m) for m in structured if isinstance(m, dict))
        return msgs
    indexed = _indexed(attrs, "prompt")
    if indexed:
        msgs.extend(_message(m.get("role"), m) for m in indexed)
        return msgs
    for e in attrs.get(EVENTS_ATTR) or ():
        name, ea = e.get("name"), e.get("attributes") or {}
        if name in MESSAGE_EVENTS:
            msgs.append(_message(ea.get("gen_ai.message.role") or MESSAGE_EVENTS[name], _event_body(ea)))
        elif name == PROMPT_EVENT and ea.get(LEGACY_PROMPT) is not None:
            value = _loads(ea[LEGACY_PROMPT])
            if isinstance(value, list):
                msgs.extend(_message(None, m) for m in value if isinstance(m, dict))
            else:
                msgs.append({"role": "user", "content": str(value)})
    return msgs or None


def output_text(attrs: Mapping[str, Any]) -> str | None:
    """The answer text a GenAI span carries (first choice), in whichever convention it used."""
    structured = _loads(attrs.get(OUTPUT_MESSAGES))
    if isinstance(structured, list) and structured:
        first = structured[0]
        if isinstance(first, dict):
            text = _parts_text(first.get("parts")) if "parts" in first else first.get("content")
            if text is not None:
                return str(_content_text(text))
    indexed = _indexed(attrs, "completion")
    if indexed and indexed[0].get("content") is not None:
        return str(indexed[0]["content"])
    for e in attrs.get(EVENTS_ATTR) or ():
        name, ea = e.get("name"), e.get("attributes") or {}
        if name == CHOICE_EVENT and _int(ea.get("index")) in (None, 0):
            content = _event_body(ea).get("content")
            if content is not None:
                return str(_content_text(content))
        elif name == COMPLETION_EVENT and ea.get(LEGACY_COMPLETION) is not None:
            value = _loads(ea[LEGACY_COMPLETION])
            if isinstance(value, list) and value and isinstance(value[0], dict):
                return str(_content_text(value[0].get("content")))
            return str(value)
    return None


def _event_body(ea: Mapping[str, Any]) -> dict[str, Any]:
    """A message event's fields: ``content`` as an attribute, or a ``message`` map (or JSON)."""
    message = _loads(ea.get("message"))
    if isinstance(message, dict):
        return {**ea, **message}
    body = _loads(ea.get("body"))
    if isinstance(body, dict):
        return {**ea, **body.get("message", body)}
    return dict(ea)


def _indexed(attrs: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    """``gen_ai.prompt.0.role``/``gen_ai.prompt.0.content``… as a list ordered by index."""
    found: dict[int, dict[str, Any]] = {}
    prefix = f"gen_ai.{kind}."
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        m = _INDEXED.match(key)
        if m:
            found.setdefault(int(m.group(2)), {})[m.group(3)] = value
    return [found[i] for i in sorted(found)]


# -- responses --------------------------------------------------------------------------------------


def _status_bytes(code: int, message: str) -> bytes:
    """A serialized ``google.rpc.Status`` {code = 1, message = 2}; googleapis-common-protos is not a
    dependency for two fields."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            byte = n & 0x7F
            n >>= 7
            if n:
                out.append(byte | 0x80)
            else:
                out.append(byte)
                return bytes(out)

    text = message.encode()
    return b"\x08" + varint(code) + b"\x12" + varint(len(text)) + text


_GRPC_CODES = {400: 3, 413: 8, 415: 3, 503: 14}  # INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE


def error_response(
    status: int, message: str, content_type: str | None, headers: dict[str, str] | None = None
) -> Response:
    code = _GRPC_CODES.get(status, 2)
    if media_type(content_type) == PROTOBUF:
        return Response(_status_bytes(code, message), status, headers=headers, media_type=PROTOBUF)
    body = orjson.dumps({"code": code, "message": message})
    return Response(body, status, headers=headers, media_type=JSON)


def success_response(rejected: int, message: str, content_type: str | None) -> Response:
    resp = ExportTraceServiceResponse()
    if rejected:
        resp.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
        )
    if media_type(content_type) == PROTOBUF:
        return Response(resp.SerializeToString(), 200, media_type=PROTOBUF)
    return Response(json_format.MessageToJson(resp, indent=None).encode(), 200, media_type=JSON)


# -- the endpoint -----------------------------------------------------------------------------------


@dataclass
class IngestOutcome:
    spans: int
    traces: int
    rejected: int
    message: str


def ingest_bytes(
    store: Store,
    data: bytes,
    content_type: str | None,
    *,
    capture: str = "full",
    max_chars: int = 2000,
    price: PriceLookup | None = None,
) -> IngestOutcome:
    """Decode, map and store one request (blocking: runs in a worker thread)."""
    from shipyard.store import otlp as otlp_store

    req = parse_request(data, content_type)
    batch = spans_from_request(req, capture, max_chars)

    def build(trace_id: str, spans: list[Span]) -> tuple[Any, ...]:
        return trace_row_of(trace_id, spans, price, capture, max_chars)

    result = otlp_store.ingest(store, batch.traces, build)
    for reason in result.reasons:
        batch.reject(0, reason)
    rejected = batch.rejected + result.rejected
    message = "; ".join(batch.reasons)
    if rejected:
        message = f"{rejected} of {batch.spans} span(s) rejected: {message}"
    return IngestOutcome(batch.spans, result.traces, rejected, message)


def price_lookup(models: Mapping[str, Any]) -> PriceLookup:
    """Pricing of a registry model by its name or the name its provider knows it by."""
    by_name: dict[str, Pricing] = {}
    for m in models.values():
        pricing = m.pricing
        if pricing.input_per_mtok or pricing.output_per_mtok:
            by_name.setdefault(m.name, pricing)
            by_name.setdefault(m.provider_model, pricing)

    def lookup(name: str) -> Pricing | None:
        return by_name.get(name)

    return lookup


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise OtlpError(
            413,
            f"body is {int(declared)} bytes; the limit is {limit} bytes (setting `otlp_max_body_bytes`); "
            "export smaller batches",
        )
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise OtlpError(413, f"body exceeds the limit of {limit} bytes (setting `otlp_max_body_bytes`)")
        parts.append(chunk)
    return b"".join(parts)


async def otlp_traces(request: Request) -> Response:
    """``POST /v1/traces``: the OTLP/HTTP trace receiver."""
    platform = request.app.state.platform
    settings = platform.settings
    content_type = request.headers.get("content-type")
    limit = settings.otlp_max_body_bytes
    try:
        body = await _read(request, limit)
        data = decode_body(body, content_type, request.headers.get("content-encoding"), limit)
        outcome = await asyncio.to_thread(
            ingest_bytes,
            platform.store,
            data,
            content_type,
            capture=settings.capture_messages,
            max_chars=settings.capture_max_chars,
            price=price_lookup(platform.gateway.runtime.models),
        )
    except OtlpError as exc:
        return error_response(exc.status, exc.message, content_type)
    except ClientDisconnect:
        return Response(status_code=400)
    except sa.exc.DataError as exc:
        # Not retryable: the same batch would fail again.
        log.warning("OTLP ingest refused a batch the store cannot hold: %s", exc)
        return error_response(400, f"a value does not fit the store: {exc.orig}", content_type)
    except sa.exc.SQLAlchemyError as exc:
        # Retryable for OTLP exporters: they back off and send the batch again.
        log.warning("OTLP ingest could not write to the store: %s", exc)
        return error_response(
            503,
            f"the store is unavailable ({type(exc).__name__}); retry later",
            content_type,
            {"retry-after": "1"},
        )
    if outcome.rejected:
        log.info("OTLP ingest: %s", outcome.message)
    return success_response(outcome.rejected, outcome.message, content_type)
