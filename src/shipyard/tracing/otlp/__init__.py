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

The modules, in the order a request meets them: ``endpoint`` (the ASGI handler and its answers),
``decode`` (body → OTLP request → Shipyard spans), ``genai`` (a trace's spans → its trace row, by
the GenAI conventions), ``attributes`` (the span attribute names both read).
"""

from shipyard.tracing.otlp.decode import (
    JSON,
    PROTOBUF,
    Batch,
    OtlpError,
    any_value,
    decode_body,
    key_values,
    media_type,
    parse_request,
    span_from_otlp,
    spans_from_request,
)
from shipyard.tracing.otlp.endpoint import (
    IngestOutcome,
    error_response,
    ingest_bytes,
    otlp_traces,
    price_lookup,
    success_response,
)
from shipyard.tracing.otlp.genai import PriceLookup, input_messages, output_text, summarize, trace_row_of

__all__ = [
    "JSON",
    "PROTOBUF",
    "Batch",
    "IngestOutcome",
    "OtlpError",
    "PriceLookup",
    "any_value",
    "decode_body",
    "error_response",
    "ingest_bytes",
    "input_messages",
    "key_values",
    "media_type",
    "otlp_traces",
    "output_text",
    "parse_request",
    "price_lookup",
    "span_from_otlp",
    "spans_from_request",
    "success_response",
    "summarize",
    "trace_row_of",
]
