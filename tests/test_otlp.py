"""OTLP in and out: an OpenTelemetry-instrumented program's spans become Shipyard traces (model,
tokens, latency, cost, messages), OTLP/JSON and gzip work, spans split over several exports merge
with exact rollups, bad bodies get the right 4xx, and the gateway's own traces reach a collector."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from shipyard.providers.mock import MockOptions
from shipyard.providers.mock_upstream import MockUpstream
from shipyard.store import rollups
from shipyard.store.db import Store
from shipyard.store.tables import traces
from shipyard.store.traces import TRACE_COLUMNS
from shipyard.tracing import otlp
from shipyard.tracing.export import encode, parse_headers, traces_url
from shipyard.tracing.spans import Span as ShipyardSpan
from shipyard.tracing.spans import Trace
from tests.conftest import ShipyardServer, ThreadServer
from tests.helpers import wait_trace

CONFIG = """
providers:
  - {name: fake, type: mock, latency_ms: 5}
models:
  - {name: gpt-4o-mini, provider: fake, pricing: {input_per_mtok: 150, output_per_mtok: 600}}
  - name: house-model
    provider: fake
    model: vendor/house-7b
    pricing: {input_per_mtok: 1, output_per_mtok: 2}
routes:
  - {name: default, targets: [{model: gpt-4o-mini}]}
"""
PROTO = {"content-type": "application/x-protobuf"}
JSON_CT = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShipyardServer]:
    s = ShipyardServer(tmp_path_factory.mktemp("otlp") / "home", CONFIG).start()
    yield s
    s.stop()


# -- helpers ----------------------------------------------------------------------------------------


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        v = AnyValue(bool_value=value)
    elif isinstance(value, int):
        v = AnyValue(int_value=value)
    elif isinstance(value, float):
        v = AnyValue(double_value=value)
    else:
        v = AnyValue(string_value=str(value))
    return KeyValue(key=key, value=v)


def span(
    trace_id: str,
    span_id: str,
    parent: str | None,
    name: str,
    start: float,
    end: float,
    attrs: dict[str, Any] | None = None,
    error: str | None = None,
) -> Span:
    s = Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent) if parent else b"",
        name=name,
        kind=Span.SPAN_KIND_CLIENT if parent else Span.SPAN_KIND_SERVER,
        start_time_unix_nano=int(start * 1e9),
        end_time_unix_nano=int(end * 1e9),
        attributes=[kv(k, v) for k, v in (attrs or {}).items()],
    )
    if error is not None:
        s.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
    return s


def request(*spans: Span, service: str = "batch-app") -> bytes:
    rs = ResourceSpans(
        resource=Resource(attributes=[kv("service.name", service), kv("deployment.environment", "test")]),
        scope_spans=[ScopeSpans(spans=list(spans))],
    )
    return ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()


def post(server: ShipyardServer, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/traces", content=body, headers={**server.headers, **headers}, timeout=30
    )


def new_trace_id(tag: int) -> str:
    return f"{int(time.time() * 1e6):016x}{os.urandom(6).hex()}{tag:04x}"


def rollup_matches_traces(store_url: str) -> None:
    """Every source=otlp rollup figure equals the same figure summed over the stored trace rows."""
    store = Store(store_url)
    try:
        agg = rollups.total(store, 0, time.time() + 3600, source="otlp", period=3600)
        with store.engine.connect() as conn:
            n, errors, lat, tin, tout, cost = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.sum(sa.case((traces.c.status != "ok", 1), else_=0)),
                    sa.func.sum(traces.c.latency_ms),
                    sa.func.sum(traces.c.input_tokens),
                    sa.func.sum(traces.c.output_tokens),
                    sa.func.sum(traces.c.cost_usd),
                ).where(traces.c.source == "otlp")
            ).one()
            lats = [
                r[0] for r in conn.execute(sa.select(traces.c.latency_ms).where(traces.c.source == "otlp"))
            ]
        assert agg.requests == n and agg.errors == (errors or 0)
        assert (agg.input_tokens, agg.output_tokens) == (tin or 0, tout or 0)
        assert agg.latency_sum == pytest.approx(lat or 0.0)
        assert agg.cost_usd == pytest.approx(cost or 0.0)
        hist = [0] * len(agg.latency or [])
        for ms in lats:
            hist[rollups.hist_index(ms)] += 1
        assert agg.latency == hist
    finally:
        store.close()


# -- 1. an OpenTelemetry-instrumented program -------------------------------------------------------

PROGRAM = textwrap.dedent(
    """
    import json, sys
    import openai
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    shipyard, upstream = sys.argv[1], sys.argv[2]
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=shipyard + "/v1/traces", compression=Compression.Gzip))
    )
    trace.set_tracer_provider(provider)
    OpenAIInstrumentor().instrument()

    client = openai.OpenAI(base_url=upstream + "/v1", api_key="sk-none", max_retries=0)
    tracer = trace.get_tracer("support-bot")
    messages = [
        {"role": "system", "content": "You answer harbour questions."},
        {"role": "user", "content": "When does the ferry leave?"},
    ]
    with tracer.start_as_current_span("answer-ticket") as root:
        root.set_attribute("user.id", "u-42")
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=9)
        trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()  # flushes the BatchSpanProcessor
    print(json.dumps({
        "trace_id": trace_id,
        "model": reply.model,
        "input_tokens": reply.usage.prompt_tokens,
        "output_tokens": reply.usage.completion_tokens,
        "answer": reply.choices[0].message.content,
    }))
    """
)


def run_program(tmp_path: Path, server: ShipyardServer, upstream: str, env: dict[str, str]) -> dict[str, Any]:
    script = tmp_path / "instrumented_app.py"
    script.write_text(PROGRAM)
    proc = subprocess.run(
        [sys.executable, str(script), server.url, upstream],
        capture_output=True,
        text=True,
        timeout=120,
        # The exporter's standard header variable carries the key, as in any instrumented app
        # (values are URL-encoded: the space after Bearer is %20).
        env={**os.environ, "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization=Bearer%20{server.admin_key}", **env},
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_openai_instrumented_program_becomes_a_trace(server: ShipyardServer, tmp_path: Path) -> None:
    pytest.importorskip("opentelemetry.instrumentation.openai_v2")
    with ThreadServer(MockUpstream(MockOptions(latency_ms=40, output_tokens=9))) as upstream:
        started = time.time()
        # The latest GenAI conventions, with message content captured on the spans.
        out = run_program(
            tmp_path,
            server,
            upstream.url,
            {
                "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
            },
        )
        t = wait_trace(server.store_url(), out["trace_id"])
        assert t["source"] == "otlp" and t["operation"] == "chat"
        assert t["model"] == out["model"] == "gpt-4o-mini"
        assert (t["input_tokens"], t["output_tokens"]) == (out["input_tokens"], out["output_tokens"])
        assert t["output_tokens"] == 9
        assert t["cost_usd"] == pytest.approx((out["input_tokens"] * 150 + 9 * 600) / 1e6)
        assert 40 <= t["latency_ms"] < (time.time() - started) * 1000
        assert t["status"] == "ok" and t["user_id"] == "u-42"
        assert t["input"] == [
            {"role": "system", "content": "You answer harbour questions."},
            {"role": "user", "content": "When does the ferry leave?"},
        ]
        assert t["output"] == out["answer"]
        assert t["attributes"]["service.name"] == "support-bot"
        root = next(s for s in t["spans"] if s["parent_id"] is None)
        llm = next(s for s in t["spans"] if s["parent_id"] == root["span_id"])
        assert root["name"] == "answer-ticket" and root["attributes"]["service.name"] == "support-bot"
        assert llm["attributes"]["gen_ai.request.model"] == "gpt-4o-mini"
        assert llm["attributes"]["otel.span_kind"] == "client"
        assert len(t["trace_id"]) == 32 and len(llm["span_id"]) == 16

        # The instrumentation's default (older) conventions: model, tokens and latency still arrive.
        out = run_program(tmp_path, server, upstream.url, {})
        t = wait_trace(server.store_url(), out["trace_id"])
        assert t["model"] == "gpt-4o-mini" and t["output_tokens"] == out["output_tokens"]
        assert t["input_tokens"] == out["input_tokens"] and t["latency_ms"] >= 40

    # It shows up where gateway traces do.
    cli = subprocess.run(
        [sys.executable, "-m", "shipyard", "traces", "show", out["trace_id"], "--home", str(server.home)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "gpt-4o-mini" in cli.stdout and "answer-ticket" in cli.stdout


def test_sdk_spans_with_events_and_legacy_attributes(server: ShipyardServer) -> None:
    """GenAI spans built with the OTel SDK by hand: prompt/completion events, the pre-1.27
    prompt_tokens names, indexed gen_ai.prompt.N attributes, and a failed call."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource as SdkResource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, StatusCode

    provider = TracerProvider(resource=SdkResource.create({"service.name": "agent"}))
    exporter = OTLPSpanExporter(endpoint=server.url + "/v1/traces", headers=server.headers)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("hand-made")
    with tracer.start_as_current_span("invoke_agent planner") as agent:
        agent.set_attribute("gen_ai.operation.name", "invoke_agent")
        # The agent span totals its model calls; those must not be counted twice.
        agent.set_attribute("gen_ai.usage.input_tokens", 30)
        agent.set_attribute("gen_ai.usage.output_tokens", 12)
        with tracer.start_as_current_span("chat house-model", kind=SpanKind.CLIENT) as s1:
            s1.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": "vendor",
                    "gen_ai.request.model": "house-model",
                    "gen_ai.response.model": "vendor/house-7b",
                    "gen_ai.usage.prompt_tokens": 20,
                    "gen_ai.usage.completion_tokens": 5,
                }
            )
            s1.add_event("gen_ai.system.message", {"content": "Plan the trip."})
            s1.add_event("gen_ai.user.message", {"content": "Lisbon to Porto by boat?"})
            s1.add_event(
                "gen_ai.choice",
                {"index": 0, "finish_reason": "stop", "message": '{"content": "Sail north."}'},
            )
        with tracer.start_as_current_span("chat house-model", kind=SpanKind.CLIENT) as s2:
            s2.set_attributes(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "house-model",
                    "gen_ai.usage.input_tokens": 10,
                    "gen_ai.usage.output_tokens": 7,
                    "gen_ai.prompt.0.role": "user",
                    "gen_ai.prompt.0.content": "Shorter please",
                    "gen_ai.completion.0.role": "assistant",
                    "gen_ai.completion.0.content": "North along the coast.",
                }
            )
        with tracer.start_as_current_span("tool weather") as tool:
            tool.set_status(StatusCode.ERROR, "weather service down")
        trace_id = format(agent.get_span_context().trace_id, "032x")
    provider.shutdown()

    t = wait_trace(server.store_url(), trace_id)
    assert t["operation"] == "invoke_agent" and t["provider"] == "vendor"
    assert t["model"] == "vendor/house-7b"  # the response model of the first call
    assert (t["input_tokens"], t["output_tokens"]) == (30, 12)
    assert t["cost_usd"] == pytest.approx((30 * 1 + 12 * 2) / 1e6)  # priced by provider-side name
    assert t["input"] == [
        {"role": "system", "content": "Plan the trip."},
        {"role": "user", "content": "Lisbon to Porto by boat?"},
    ]
    assert t["output"] == "North along the coast."  # the last call's answer
    assert t["status"] == "error" and "weather service down" in t["error"]
    assert len(t["spans"]) == 4 and t["attempts"] == 2


# -- 2. OTLP/JSON with gzip -------------------------------------------------------------------------


def test_json_encoding_with_gzip(server: ShipyardServer) -> None:
    tid = new_trace_id(1)
    now = time.time_ns()
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-app"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "manual"},
                        "spans": [
                            {
                                "traceId": tid,
                                "spanId": "00f067aa0ba902b7",
                                "parentSpanId": "",
                                "name": "embeddings text-embedder",
                                "kind": 3,
                                "startTimeUnixNano": str(now),
                                "endTimeUnixNano": str(now + 25_000_000),
                                "attributes": [
                                    {"key": "gen_ai.operation.name", "value": {"stringValue": "embeddings"}},
                                    {
                                        "key": "gen_ai.request.model",
                                        "value": {"stringValue": "text-embedder"},
                                    },
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "17"}},
                                    {"key": "enduser.id", "value": {"stringValue": "u-7"}},
                                    {
                                        "key": "gen_ai.request.encoding_formats",
                                        "value": {"arrayValue": {"values": [{"stringValue": "float"}]}},
                                    },
                                ],
                                "status": {},
                                "unknownFutureField": 1,
                            },
                            {  # invalid: a trace id of 8 bytes is rejected, the rest is kept
                                "traceId": "0af7651916cd43dd",
                                "spanId": "b7ad6b7169203331",
                                "name": "broken",
                                "startTimeUnixNano": str(now),
                                "endTimeUnixNano": str(now),
                            },
                        ],
                    }
                ],
            }
        ]
    }
    body = gzip.compress(json.dumps(doc).encode())
    r = post(server, body, {**JSON_CT, "content-encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    partial = r.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "trace_id must be 16 bytes" in partial["errorMessage"]
    t = wait_trace(server.store_url(), tid)
    assert t["operation"] == "embeddings" and t["model"] == "text-embedder"
    assert (t["input_tokens"], t["output_tokens"]) == (17, None)
    assert t["latency_ms"] == pytest.approx(25.0, abs=0.01) and t["user_id"] == "u-7"
    (s,) = t["spans"]
    assert s["span_id"] == "00f067aa0ba902b7" and s["attributes"]["gen_ai.request.encoding_formats"] == [
        "float"
    ]

    # A fully valid JSON export answers an empty ExportTraceServiceResponse.
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"].pop()  # type: ignore[index]
    r = post(server, json.dumps(doc).encode(), JSON_CT)
    assert r.status_code == 200 and r.json() == {}


# -- 3. spans of one trace over several exports -----------------------------------------------------


def split_batches(server: ShipyardServer, store_url: str) -> None:
    tid = new_trace_id(3)
    t0 = time.time() - 5
    root, a, b = "1000000000000001", "1000000000000002", "1000000000000003"
    llm = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini"}
    first = request(
        span(
            tid,
            a,
            root,
            "chat gpt-4o-mini",
            t0 + 0.1,
            t0 + 0.4,
            {**llm, "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10},
        )
    )
    second = request(
        span(
            tid,
            b,
            root,
            "chat gpt-4o-mini",
            t0 + 0.5,
            t0 + 0.9,
            {**llm, "gen_ai.usage.input_tokens": 50, "gen_ai.usage.output_tokens": 5},
        ),
        span(tid, root, None, "handle", t0, t0 + 1.0),
    )

    def send(body: bytes) -> None:
        r = post(server, body, PROTO)
        assert r.status_code == 200
        resp = ExportTraceServiceResponse()
        resp.ParseFromString(r.content)
        assert resp.partial_success.rejected_spans == 0

    send(first)
    # The children-first state is already a trace of its own, with the rollups to match.
    t = wait_trace(store_url, tid)
    assert (len(t["spans"]), t["input_tokens"]) == (1, 100)
    assert t["latency_ms"] == pytest.approx(300, abs=0.01)
    rollup_matches_traces(store_url)
    for body in (second, second, first):  # the repeats are an exporter's retries
        send(body)
    t = wait_trace(store_url, tid)
    assert len(t["spans"]) == 3 and t["operation"] == "chat"
    assert (t["input_tokens"], t["output_tokens"]) == (150, 15)
    assert t["latency_ms"] == pytest.approx(1000, abs=0.01) and t["start_time"] == pytest.approx(t0, abs=1e-6)
    assert t["cost_usd"] == pytest.approx((150 * 150 + 15 * 600) / 1e6)
    store = Store(store_url)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).where(traces.c.trace_id == tid)).scalar() == 1
    finally:
        store.close()
    rollup_matches_traces(store_url)

    # Concurrent exports for the same traces (several processes of one app) still merge exactly.
    tids = [new_trace_id(100 + i) for i in range(8)]

    def bodies(i: int) -> list[bytes]:
        tid = tids[i]
        return [
            request(
                span(
                    tid,
                    f"20000000000000{k:02x}",
                    "2000000000000000",
                    "step",
                    t0 + k,
                    t0 + k + 0.5,
                    {**llm, "gen_ai.usage.input_tokens": k},
                )
            )
            for k in range(1, 4)
        ] + [request(span(tid, "2000000000000000", None, "job", t0, t0 + 4))]

    async def send_all() -> None:
        async with httpx.AsyncClient(timeout=30, headers=server.headers) as client:
            jobs = [
                client.post(server.url + "/v1/traces", content=b, headers=PROTO)
                for i in range(len(tids))
                for b in bodies(i)
            ]
            for r in await asyncio.gather(*jobs):
                assert r.status_code == 200

    asyncio.run(send_all())
    for tid in tids:
        t = wait_trace(store_url, tid)
        assert (
            len(t["spans"]) == 4
            and t["input_tokens"] == 6
            and t["latency_ms"] == pytest.approx(4000, abs=0.01)
        )
    rollup_matches_traces(store_url)


def odd_values(server: ShipyardServer, store_url: str) -> None:
    """Values the store's columns cannot hold are made to fit or refused per span, never a 5xx."""
    tid = new_trace_id(5)
    now = time.time()
    odd = span(
        tid,
        "5000000000000001",
        None,
        "nul\x00name",
        now,
        now + 1,
        {
            "gen_ai.request.model": "m\x00",
            "gen_ai.usage.input_tokens": 2**40,  # beyond the integer column
            "gen_ai.usage.output_tokens": 3,
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"content": "a\x00b"}]}]),
            "http.response.status_code": 70000,
        },
    )
    late = span(tid, "5000000000000002", "5000000000000001", "in 2100", 4.1e9, 4.1e9 + 1)
    r = post(server, request(odd, late), PROTO)
    resp = ExportTraceServiceResponse()
    resp.ParseFromString(r.content)
    assert r.status_code == 200 and resp.partial_success.rejected_spans == 1
    assert "after 2038" in resp.partial_success.error_message
    t = wait_trace(store_url, tid)
    assert (t["input_tokens"], t["output_tokens"], t["status_code"]) == (None, 3, None)
    assert t["output"] == "a\ufffdb" and t["model"] == "m\ufffd" and t["spans"][0]["name"] == "nul\ufffdname"
    rollup_matches_traces(store_url)


def test_split_batches_merge_sqlite(server: ShipyardServer) -> None:
    split_batches(server, server.store_url())
    odd_values(server, server.store_url())


@pytest.mark.postgres
def test_split_batches_merge_postgres(pg_url: str, tmp_path: Path) -> None:
    s = ShipyardServer(tmp_path / "pg", CONFIG, env={"SHIPYARD_DATABASE_URL": pg_url}).start()
    try:
        split_batches(s, pg_url)
        odd_values(s, pg_url)
    finally:
        s.stop()


# -- 4. bad input -----------------------------------------------------------------------------------


def rpc_message(r: httpx.Response) -> str:
    """The message of the google.rpc.Status an OTLP error carries, in the request's encoding."""
    if r.headers["content-type"].startswith("application/json"):
        return str(r.json()["message"])
    status = RpcStatus()
    status.ParseFromString(r.content)
    assert status.message
    return status.message


def test_bad_input_gets_the_right_4xx(server: ShipyardServer) -> None:
    cases: list[tuple[bytes, dict[str, str], int, str]] = [
        (b"\xff\xff\xff\xff garbage", PROTO, 400, "not a valid protobuf ExportTraceServiceRequest"),
        (b'{"resourceSpans": [', JSON_CT, 400, "not valid JSON"),
        (b"[1, 2]", JSON_CT, 400, "must be an object"),
        (b'{"resourceSpans": {"a": 1}}', JSON_CT, 400, "resourceSpans must be an array"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "00f067aa"}]}]}]}',
            JSON_CT,
            400,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId `zz` is not hex",
        ),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5, "startTimeUnixNano": "x"}]}]}]}',
            JSON_CT,
            400,
            "not a valid OTLP/JSON ExportTraceServiceRequest",
        ),
        (b"spans", {"content-type": "text/plain"}, 415, "unsupported content type `text/plain`"),
        (b"spans", {}, 415, "no Content-Type"),
        (request(), {**PROTO, "content-encoding": "br"}, 415, "unsupported Content-Encoding `br`"),
        (b"not gzip at all", {**PROTO, "content-encoding": "gzip"}, 400, "not valid gzip data"),
        (gzip.compress(request())[:-12], {**PROTO, "content-encoding": "gzip"}, 400, "truncated gzip"),
        (b"\0" * (16 * 1024 * 1024 + 1), PROTO, 413, "the limit is 16777216 bytes"),
        # A gzip bomb: 17 kB on the wire, 32 MB inflated; refused without inflating it all.
        (
            gzip.compress(b"\0" * (32 * 1024 * 1024)),
            {**PROTO, "content-encoding": "gzip"},
            413,
            "decompressed body exceeds the limit",
        ),
    ]
    for body, headers, status, message in cases:
        r = post(server, body, headers)
        assert r.status_code == status, (message, r.status_code, r.text[:300])
        assert message in rpc_message(r), (message, rpc_message(r))
    # The server is unharmed: a good export still lands.
    tid = new_trace_id(4)
    assert (
        post(
            server, request(span(tid, "3000000000000001", None, "ok", time.time(), time.time())), PROTO
        ).status_code
        == 200
    )
    wait_trace(server.store_url(), tid)
    assert "Traceback" not in server.log()


def test_spans_of_a_gateway_trace_are_refused(server: ShipyardServer) -> None:
    """Sending the gateway's own traces back to it (export pointed at itself) must not overwrite them."""
    raw = server.openai().chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "hi"}]
    )
    tid = raw.headers["x-shipyard-trace-id"]
    before = wait_trace(server.store_url(), tid)
    r = post(server, request(span(tid, "4000000000000001", None, "echo", time.time(), time.time())), PROTO)
    resp = ExportTraceServiceResponse()
    resp.ParseFromString(r.content)
    assert r.status_code == 200 and resp.partial_success.rejected_spans == 1
    assert "recorded by this gateway" in resp.partial_success.error_message
    assert wait_trace(server.store_url(), tid) == before


# -- unit checks of the mapping ---------------------------------------------------------------------


def test_summarize_conventions() -> None:
    tid = "ab" * 16
    structured = ShipyardSpan(
        "chat m",
        tid,
        None,
        "0000000000000001",
        100.0,
        100.5,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "m",
            "gen_ai.system_instructions": '[{"type": "text", "content": "Be terse."}]',
            "gen_ai.input.messages": json.dumps(
                [
                    {
                        "role": "user",
                        "parts": [{"type": "text", "content": "Hi "}, {"type": "text", "content": "there"}],
                    }
                ]
            ),
            "gen_ai.output.messages": json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": "Hello."}],
                        "finish_reason": "stop",
                    }
                ]
            ),
        },
    )
    t = otlp.summarize(tid, [structured])
    assert t.input == [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi there"}]
    assert t.output == "Hello." and t.model == "m" and t.status == "ok" and t.cost_usd is None
    assert t.input_tokens is None and t.latency_ms == pytest.approx(500)

    # An explicitly OK root (a gateway whose fallback recovered) is ok despite a failed child.
    root = ShipyardSpan(
        "chat r", tid, None, "0000000000000002", 1.0, 2.0, attributes={"otel.status_code": "OK"}
    )
    failed = ShipyardSpan("chat a", tid, root.span_id, "0000000000000003", 1.1, 1.2, status="error")
    assert otlp.summarize(tid, [root, failed]).status == "ok"
    root.attributes.clear()
    t = otlp.summarize(tid, [root, failed])
    assert t.status == "error" and t.error == "span `chat a` failed" and t.status_code == 500
    row = otlp.trace_row_of(tid, [root, failed])
    assert row[TRACE_COLUMNS.index("status_code")] is None  # no HTTP status was recorded

    # Capture policy applies to ingested prompt attributes and message events.
    s = otlp.span_from_otlp(
        Span(
            trace_id=bytes.fromhex(tid),
            span_id=bytes.fromhex("0000000000000004"),
            name="chat",
            start_time_unix_nano=1,
            end_time_unix_nano=2,
            attributes=[kv("gen_ai.prompt.0.content", "secret " * 10), kv("gen_ai.request.model", "m")],
            events=[Span.Event(name="gen_ai.user.message", attributes=[kv("content", "secret")])],
        ),
        {},
        None,
        "",
        "none",
        10,
    )
    assert "gen_ai.prompt.0.content" not in s.attributes and s.attributes["gen_ai.request.model"] == "m"
    assert s.attributes["otel.events"][0]["attributes"] == {}


# -- 5. export of the gateway's traces --------------------------------------------------------------


def test_export_headers_and_url_parsing() -> None:
    assert parse_headers("Authorization=Bearer%20abc, x-scope-orgid=team-a") == {
        "authorization": "Bearer abc",
        "x-scope-orgid": "team-a",
    }
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("https://c.example/otlp/v1/traces") == "https://c.example/otlp/v1/traces"
    from shipyard.errors import ConfigError

    with pytest.raises(ConfigError, match="otlp_export_headers"):
        parse_headers("novalue")
    with pytest.raises(ConfigError, match="otlp_export_endpoint"):
        traces_url("collector:4318")
    trace = Trace(operation="chat", route="r", model="m", input_tokens=3, output_tokens=4, cost_usd=0.5)
    root = trace.span("chat r", attributes={"gen_ai.operation.name": "chat"})
    attempt = trace.span(
        "chat m", parent=root, attributes={"shipyard.attempt": 1, "shipyard.candidates": ["a", "b"]}
    )
    root.finish()
    attempt.finish("error", **{"error.message": "boom"})
    spans = encode([trace]).resource_spans[0].scope_spans[0].spans
    assert [s.kind for s in spans] == [Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT]
    assert spans[1].status.code == Status.STATUS_CODE_ERROR and spans[1].status.message == "boom"
    assert spans[1].parent_span_id.hex() == root.span_id and spans[0].trace_id.hex() == trace.trace_id
    attrs = {a.key: a.value for a in spans[0].attributes}
    assert (
        attrs["shipyard.cost_usd"].double_value == 0.5 and attrs["http.response.status_code"].int_value == 200
    )


class Receiver:
    """A small OTLP collector: decodes gzip protobuf exports; fails the first one with 503."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.calls = 0
        self.lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            await send({"type": "http.response.start", "status": 503, "headers": [(b"retry-after", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await asyncio.sleep(self.delay)
        req = ExportTraceServiceRequest()
        req.ParseFromString(gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body)
        with self.lock:
            self.requests.append(req)
            self.headers.append(headers)
        out = ExportTraceServiceResponse().SerializeToString()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/x-protobuf")],
            }
        )
        await send({"type": "http.response.body", "body": out})

    def trace_ids(self) -> set[str]:
        with self.lock:
            return {
                s.trace_id.hex()
                for r in self.requests
                for rs in r.resource_spans
                for ss in rs.scope_spans
                for s in ss.spans
            }


def test_gateway_traces_exported_to_another_shipyard(server: ShipyardServer, tmp_path: Path) -> None:
    a = ShipyardServer(
        tmp_path / "a",
        CONFIG,
        env={
            "SHIPYARD_OTLP_EXPORT_ENDPOINT": server.url,
            # The receiving Shipyard takes OTLP only with a key.
            "SHIPYARD_OTLP_EXPORT_HEADERS": f"authorization=Bearer%20{server.admin_key}, x-team=harbour",
        },
    ).start()
    try:
        client = a.openai()
        raw = client.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": "Export me"}], user="u-9", max_tokens=6
        )
        tid = raw.headers["x-shipyard-trace-id"]
        mine = wait_trace(a.store_url(), tid)
        theirs = wait_trace(server.store_url(), tid, timeout=20)
        assert theirs["source"] == "otlp" and theirs["attributes"]["service.name"] == "shipyard"
        for key in (
            "model",
            "provider",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "route",
            "target",
            "user_id",
            "status",
            "operation",
        ):
            assert theirs[key] == mine[key], key
        # The gateway's trace clock starts a few microseconds before its root span does.
        assert theirs["start_time"] == pytest.approx(mine["start_time"], abs=1e-3)
        assert theirs["latency_ms"] == pytest.approx(mine["latency_ms"], abs=1.0)
        assert {(s["span_id"], s["parent_id"], s["name"]) for s in theirs["spans"]} == {
            (s["span_id"], s["parent_id"], s["name"]) for s in mine["spans"]
        }
        attempt = next(s for s in theirs["spans"] if s["attributes"].get("shipyard.attempt"))
        assert attempt["attributes"]["otel.span_kind"] == "client"
        assert attempt["attributes"]["gen_ai.usage.output_tokens"] == mine["output_tokens"] == 6
    finally:
        a.stop()


def test_export_retries_and_flushes_on_shutdown(tmp_path: Path) -> None:
    receiver = Receiver(delay=0.5)
    with ThreadServer(receiver) as collector:
        a = ShipyardServer(
            tmp_path / "a",
            CONFIG,
            env={
                "SHIPYARD_OTLP_EXPORT_ENDPOINT": collector.url + "/custom/v1/traces",
                "SHIPYARD_OTLP_EXPORT_HEADERS": "authorization=Bearer%20s3cret",
            },
        ).start()
        client = a.openai()
        ids = set()
        for i in range(12):
            raw = client.chat.completions.with_raw_response.create(
                model="default", messages=[{"role": "user", "content": f"q{i}"}]
            )
            ids.add(raw.headers["x-shipyard-trace-id"])
        a.stop()  # SIGTERM right away, while the exporter is still retrying the first batch
        assert ids <= receiver.trace_ids()
        assert receiver.calls >= 2  # the 503 was retried
        assert receiver.headers[0]["authorization"] == "Bearer s3cret"
        assert receiver.headers[0]["content-type"] == "application/x-protobuf"
        resource = receiver.requests[0].resource_spans[0].resource
        assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "shipyard"
        log = a.log()
        assert "OTLP export flushed" in log and " 0 dropped)" in log.split("OTLP export flushed")[1]


def test_a_provider_call_of_an_instrumented_app_is_priced_from_the_catalogue(server: ShipyardServer) -> None:
    """An application that calls OpenAI itself and exports the span: no registry model prices
    gpt-4.1-nano, so the price catalogue does, by the provider the span names."""
    trace_id = new_trace_id(77)
    now = time.time()
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4.1-nano",
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 500,
    }
    unknown = {**attrs, "gen_ai.system": "my-own-cluster", "gen_ai.request.model": "house-llm"}
    body = request(
        span(trace_id, "00f067aa0ba90200", None, "handle", now - 1, now),
        span(
            trace_id, "00f067aa0ba90201", "00f067aa0ba90200", "chat gpt-4o-mini", now - 0.9, now - 0.5, attrs
        ),
        span(
            trace_id, "00f067aa0ba90202", "00f067aa0ba90200", "chat house-llm", now - 0.4, now - 0.1, unknown
        ),
    )
    assert post(server, body, PROTO).status_code == 200
    t = wait_trace(server.store_url(), trace_id)
    # 1000 × $0.10 + 500 × $0.40 per million tokens; the unknown provider's call adds nothing.
    assert t["cost_usd"] == pytest.approx((1000 * 0.1 + 500 * 0.4) / 1e6)
