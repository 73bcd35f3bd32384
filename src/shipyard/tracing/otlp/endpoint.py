"""``POST /v1/traces``: the OTLP/HTTP trace receiver, as an ASGI handler.

It reads the body (refusing one over ``otlp_max_body_bytes`` before reading it all), decodes and
maps it in a worker thread, and stores it (``store/otlp.py``). Answers follow the OTLP/HTTP
specification: an ExportTraceServiceResponse in the request's encoding, with ``partial_success``
when some spans were rejected; a ``google.rpc.Status`` with a readable message for bodies that
cannot be decoded (400), unknown content types (415), oversized bodies (413) and a store that is
down (503, which exporters retry).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from shipyard.store import otlp as otlp_store
from shipyard.tracing.otlp.decode import (
    JSON,
    PROTOBUF,
    OtlpError,
    decode_body,
    media_type,
    parse_request,
    spans_from_request,
)
from shipyard.tracing.otlp.genai import PriceLookup, trace_row_of
from shipyard.tracing.spans import Span

if TYPE_CHECKING:
    from shipyard.config.schema import Pricing
    from shipyard.prices import Price
    from shipyard.store.db import Store

log = logging.getLogger("shipyard.tracing")

_GRPC_CODES = {400: 3, 413: 8, 415: 3, 503: 14}  # INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE


def error_response(
    status: int, message: str, content_type: str | None, headers: dict[str, str] | None = None
) -> Response:
    """The request refused as a whole: a ``google.rpc.Status`` in the request's encoding."""
    code = _GRPC_CODES.get(status, 2)
    if media_type(content_type) == PROTOBUF:
        body = Status(code=code, message=message).SerializeToString()
        return Response(body, status, headers=headers, media_type=PROTOBUF)
    body = orjson.dumps({"code": code, "message": message})
    return Response(body, status, headers=headers, media_type=JSON)


def success_response(rejected: int, message: str, content_type: str | None) -> Response:
    """An ExportTraceServiceResponse in the request's encoding, naming what was rejected."""
    resp = ExportTraceServiceResponse()
    if rejected:
        resp.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
        )
    if media_type(content_type) == PROTOBUF:
        return Response(resp.SerializeToString(), 200, media_type=PROTOBUF)
    return Response(json_format.MessageToJson(resp, indent=None).encode(), 200, media_type=JSON)


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


# gen_ai.provider.name values (and older gen_ai.system ones) that name a provider of the price
# catalogue by another id.
CATALOGUE_PROVIDERS = {
    "aws.bedrock": "aws",
    "az.ai.inference": "azure",
    "az.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "azure.ai.openai": "azure",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "mistral_ai": "mistral",
    "xai": "x-ai",
}
MAX_CACHED_PRICES = 1024  # (provider, model) pairs remembered; names come from clients


def price_lookup(models: Mapping[str, Any]) -> PriceLookup:
    """A model call's price: the registry model's `pricing` by its name or the name its provider
    knows it by; else the price catalogue's, for the provider the span names (an application that
    calls OpenAI directly and exports `gen_ai.system: openai`, `gen_ai.request.model: gpt-4o-mini`)."""
    from shipyard.prices import catalogue_price

    by_name: dict[str, Pricing] = {}
    for m in models.values():
        pricing = m.pricing
        if pricing.input_per_mtok or pricing.output_per_mtok:
            by_name.setdefault(m.name, pricing)
            by_name.setdefault(m.provider_model, pricing)
    catalogue: dict[tuple[str, str], Price | None] = {}

    def lookup(name: str, system: str | None) -> Pricing | Price | None:
        found = by_name.get(name)
        if found is not None or system is None:
            return found
        key = (system, name)
        if key not in catalogue:
            if len(catalogue) >= MAX_CACHED_PRICES:
                catalogue.clear()
            provider = CATALOGUE_PROVIDERS.get(system.lower(), system.lower())
            catalogue[key] = catalogue_price(name, None, provider)
        return catalogue[key]

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
