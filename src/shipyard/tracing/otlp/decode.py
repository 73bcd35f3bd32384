"""Decoding an OTLP/HTTP trace request into Shipyard spans.

:func:`decode_body` checks the content type and undoes the content encoding without inflating past
the body limit; :func:`parse_request` reads protobuf or OTLP/JSON into an ExportTraceServiceRequest;
:func:`spans_from_request` turns its spans into :class:`~shipyard.tracing.spans.Span` rows grouped by
trace id, refusing invalid spans one by one and applying the capture policy to message content.
Every refusal is an :class:`OtlpError` (a whole request) or a reason in :class:`Batch` (one span).
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as OtlpStatus

from shipyard.tracing.otlp.attributes import (
    EVENTS_ATTR,
    INPUT_MESSAGES,
    KIND_ATTR,
    LEGACY_COMPLETION,
    LEGACY_PROMPT,
    OUTPUT_MESSAGES,
    SCOPE_ATTR,
    STATUS_CODE_ATTR,
    STATUS_DESCRIPTION_ATTR,
    SYSTEM_INSTRUCTIONS,
)
from shipyard.tracing.spans import Span

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

KIND_NAMES = {
    OtlpSpan.SPAN_KIND_INTERNAL: "internal",
    OtlpSpan.SPAN_KIND_SERVER: "server",
    OtlpSpan.SPAN_KIND_CLIENT: "client",
    OtlpSpan.SPAN_KIND_PRODUCER: "producer",
    OtlpSpan.SPAN_KIND_CONSUMER: "consumer",
}

# Column width of the spans table's name (Postgres enforces it).
_MAX_NAME = 256
# Rollup buckets are 32-bit unix seconds; later times cannot be stored.
_LATEST_NS = (2**31 - 2 * 3600) * 10**9

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
        return safe_text(v.string_value)
    return getattr(v, kind)


def key_values(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    return {safe_text(kv.key): any_value(kv.value) for kv in kvs}


def safe_text(value: str) -> str:
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
                span = span_from_otlp(s, resource, service, scope, capture, max_chars)
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


def span_from_otlp(
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
        attrs[SCOPE_ATTR] = safe_text(scope)
    status = "error" if s.status.code == OtlpStatus.STATUS_CODE_ERROR else "ok"
    if s.status.code == OtlpStatus.STATUS_CODE_OK:
        attrs[STATUS_CODE_ATTR] = "OK"  # explicit OK (see summarize) differs from unset
    if s.status.message:
        attrs[STATUS_DESCRIPTION_ATTR] = safe_text(s.status.message)
    if s.events:
        attrs[EVENTS_ATTR] = [
            {
                "name": safe_text(e.name),
                "time": e.time_unix_nano / 1e9,
                "attributes": key_values(e.attributes),
            }
            for e in s.events
        ]
    if capture != "full":
        _apply_capture(attrs, capture, max_chars)
    start = s.start_time_unix_nano / 1e9
    end = max(s.end_time_unix_nano / 1e9, start)
    return Span(
        name=safe_text(s.name)[:_MAX_NAME],
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
