"""Each stage of the request pipeline (gateway/stages/) on its own, with the fakes of
``test_gateway_pipeline.py``: trace, limits, guards, plan, cache slot, attempts, relay, payload."""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from shipyard import redact
from shipyard.config.schema import LimitsConfig
from shipyard.errors import InvalidRequest, ProviderError, ProviderTimeout, ShipyardError
from shipyard.gateway.auth import Principal
from shipyard.gateway.stages import guards
from shipyard.gateway.stages.attempts import (
    NO_DEADLINE,
    Answered,
    aclose,
    attempt,
    call_whole,
    deadline,
    exhausted,
    open_stream,
)
from shipyard.gateway.stages.cache import CachedAnswer, CacheSlot
from shipyard.gateway.stages.context import ClientGone
from shipyard.gateway.stages.limits import Limits
from shipyard.gateway.stages.payload import embedding_bytes
from shipyard.gateway.stages.plan import Planner
from shipyard.gateway.stages.relay import Relay, replay, sse_error
from shipyard.gateway.stages.trace import Tracer, begin, error_type, fail_span
from shipyard.guard.pipeline import GuardState
from shipyard.providers.base import Call, Completion, Embeddings, StreamChunk, Usage
from shipyard.registry.prompts import Prompt
from shipyard.tracing.spans import Trace
from tests.test_gateway_pipeline import (
    MSG,
    PIECES,
    FakeLimiter,
    FakeWriter,
    Scripted,
    failing,
    guard,
    make_request,
    make_route,
    make_target,
)


# -- trace -------------------------------------------------------------------------------------------
def test_the_root_span_keeps_what_the_client_asked_for() -> None:
    route = make_route([make_target(Scripted("m"))])
    body = {"model": "harbour", "messages": MSG, "temperature": 0.3, "max_tokens": 9, "stream": True}
    key = Principal("k1", "bot", "client", "sk-shp-ab")
    trace, root = begin("chat", route, body, "sess", {"x-shipyard-tags": "a, b,,c"}, key)
    assert trace.operation == "chat" and trace.stream and trace.user_id == "sess" and trace.route_version == 2
    assert trace.tags == ["a", "b", "c"] and trace.input == MSG
    assert trace.attributes == {"shipyard.key.id": "k1", "shipyard.key.name": "bot"}
    assert root.name == "chat harbour" and root.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "harbour",
        "shipyard.route": "harbour",
        "shipyard.stream": True,
        "gen_ai.request.temperature": 0.3,
        "gen_ai.request.max_tokens": 9,
    }
    trace, root = begin("embeddings", route, {"input": ["x"]}, None, None, None)
    assert root.name == "embeddings harbour" and trace.input == ["x"] and trace.tags is None


def test_failed_spans_are_typed_and_scrubbed() -> None:
    secret = "tok-" + uuid.uuid4().hex
    error = ProviderError(f"denied for {secret} " + "x" * 600, upstream_status=401)
    redact.register(secret)
    trace = Trace(operation="chat")
    span = trace.span("attempt")
    fail_span(span, error)
    assert span.status == "error" and span.attributes["error.type"] == "http_401"
    assert secret not in span.attributes["error.message"] and len(span.attributes["error.message"]) == 500
    assert error_type(ProviderTimeout("slow")) == "timeout"
    assert error_type(ProviderError("x", code="mock_failure")) == "mock_failure"
    assert error_type(ProviderError("x")) == "ProviderError"
    assert error_type(ValueError("x")) == "ValueError"


async def test_the_tracer_shows_each_trace_to_the_observers_and_the_writer(caplog: Any) -> None:
    writer = FakeWriter()
    tracer = Tracer(writer)  # type: ignore[arg-type]
    seen: list[Trace] = []

    def broken(trace: Trace) -> None:
        raise RuntimeError("observer bug")

    tracer.observers += [broken, seen.append]
    req = make_request(make_route([make_target(Scripted("m"))]))
    req.trace.ttft_ms = 12.34567
    with caplog.at_level(logging.ERROR, "shipyard.gateway"):
        assert tracer.finish(req) is None
    assert "observer" in caplog.text and seen == [req.trace] and writer.submitted == [req.trace]
    assert req.root.status == "ok" and req.root.attributes["shipyard.ttft_ms"] == 12.346
    # Durable mode: a successful answer waits for its commit; a failed one does not.
    tracer.durable = True
    ok = make_request(make_route([make_target(Scripted("m"))]))
    future = tracer.finish(ok)
    assert future is not None
    await tracer.committed(future, ok.trace)
    failed = make_request(make_route([make_target(Scripted("m"))]))
    error = ProviderError("nope")
    assert tracer.finish(failed, error, 502) is None
    assert failed.trace.status_code == 502 and failed.root.attributes["error.type"] == "ProviderError"
    assert error.__dict__["shipyard_traced"] and error.__dict__["shipyard_trace_id"] == failed.trace.trace_id


# -- limits ------------------------------------------------------------------------------------------
async def test_limits_apply_only_to_limited_routes_and_keys() -> None:
    limits = Limits()
    plain = make_request(make_route([make_target(Scripted("m"))]))
    assert not limits.applies(plain)
    limits.limiter = FakeLimiter()
    assert not limits.applies(plain)
    plain.principal = Principal("k", "k", "client", "sk-shp-x", limits=LimitsConfig(requests_per_min=1))
    assert limits.applies(plain)
    await limits.admit(plain)
    assert plain.ticket is not None


async def test_settlement_charges_usage_the_prompt_or_nothing(caplog: Any) -> None:
    limiter = FakeLimiter()
    limits = Limits(limiter)
    req = make_request(make_route([make_target(Scripted("m"))], limits=LimitsConfig(requests_per_min=1)))
    limits.settle(req)  # nothing reserved: nothing to settle
    assert limiter.settled == []
    await limits.admit(req)
    ticket = req.ticket
    assert ticket is not None
    limits.settle(req)
    limits.settle(req, abandoned=True)
    req.trace.cost_usd, req.trace.input_tokens, req.trace.output_tokens = 0.5, 3, 4
    limits.settle(req, abandoned=True)
    assert limiter.settled == [(0.0, 0), (ticket.demand.prompt_usd, ticket.demand.prompt_tokens), (0.5, 7)]

    def broken(ticket: Any, usd: float, tokens: int) -> None:
        raise RuntimeError("store down")

    limiter.settle = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, "shipyard.gateway"):
        limits.settle(req)
    assert "settling usage" in caplog.text


# -- guards ------------------------------------------------------------------------------------------
async def test_guards_on_unguarded_routes_and_embeddings_do_nothing() -> None:
    req = make_request(make_route([make_target(Scripted("m"))]))
    body = req.body
    guards.check_input(req)
    assert req.body is body and req.guard is None and not guards.guards_stream(req)
    pii = make_route([make_target(Scripted("m"))], guard=guard([{"type": "pii"}], []))
    emb = make_request(pii, "embeddings", {"input": "mail jane.doe@example.com"})
    guards.check_input(emb)
    assert emb.guard is None and emb.body["input"] == "mail jane.doe@example.com"


async def test_a_block_in_a_streams_first_chunk_is_an_error_before_anything_is_sent() -> None:
    class Blocking:
        def stream(self, *args: Any) -> AsyncIterator[StreamChunk]:
            return self.chunks()

        async def chunks(self) -> AsyncIterator[StreamChunk]:
            self.open = True
            try:
                raise ShipyardError("blocked")
                yield StreamChunk(b"")
            finally:
                self.open = False

    req = make_request(make_route([make_target(Scripted("m"))]))
    blocking = Blocking()
    req.route.guard = blocking  # type: ignore[assignment]
    req.guard = GuardState()
    span = req.trace.span("attempt", parent=req.root)

    async def upstream() -> AsyncIterator[StreamChunk]:
        yield StreamChunk(b"x")

    with pytest.raises(ShipyardError, match="blocked"):
        await guards.guard_stream(req, span, StreamChunk(b"first"), upstream())
    assert blocking.open is False and span.status == "ok" and span.end > 0


async def test_the_output_guards_see_whole_answers_but_not_embeddings() -> None:
    secret = "sk-proj-" + "Q7wErT9yUiOp2aSdF4gHjK6lZxC8vBn1"
    route = make_route(
        [make_target(Scripted("m"))], guard=guard([], [{"type": "secrets", "action": "redact"}])
    )
    req = make_request(route)
    guards.check_input(req)
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"key {secret}"}}]}
    answer = guards.check_output(req, Completion(body, Usage(), f"key {secret}", "m"))
    assert isinstance(answer, Completion) and secret not in answer.text
    vectors = Embeddings([[1.0]], Usage(), "m")
    assert guards.check_output(req, vectors) is vectors


# -- plan --------------------------------------------------------------------------------------------
def test_the_plan_is_recorded_on_the_root_span() -> None:
    route = make_route([make_target(Scripted("a"))], [make_target(Scripted("b")), make_target(Scripted("c"))])
    req = make_request(route)
    req.key = "sess"
    Planner().plan(req)
    assert [t.label for t in req.plan] == ["a", "b", "c"]
    assert req.root.attributes["shipyard.sticky"] is True
    assert req.root.attributes["shipyard.candidates"] == ["a", "b", "c"]


def test_each_target_gets_its_own_body() -> None:
    target = make_target(
        Scripted("m"), params={"temperature": 0.0}, model_params={"temperature": 1.0, "top_p": 0.5}
    )
    req = make_request(
        make_route([target]), body={"model": "harbour", "messages": MSG, "top_p": 0.9, "user": "u"}
    )
    req.key = "u"
    call = Planner().call(req, target)
    assert call.body == {"model": "m", "messages": MSG, "top_p": 0.9, "temperature": 0.0, "user": "u"}
    assert call.model == "m" and call.user == "u" and call.timeout == 5.0 and call.max_input_tokens is None
    assert call.body is not req.body


def test_prompt_routes_render_their_template_first() -> None:
    prompt = Prompt(
        "helper",
        3,
        "h",
        [{"role": "system", "content": "You help {{who}}."}],
        params={"max_tokens": 50},
        response_schema={"type": "object"},
    )
    target = make_target(Scripted("m"), prompt=prompt)
    req = make_request(make_route([target]), body={"model": "harbour", "variables": {"who": "sailors"}})
    call = Planner().call(req, target)
    assert call.body["messages"] == [{"role": "system", "content": "You help sailors."}]
    assert call.body["max_tokens"] == 50 and "variables" not in call.body
    assert call.body["response_format"]["json_schema"] == {"name": "helper", "schema": {"type": "object"}}
    trace = req.trace
    assert (trace.prompt, trace.prompt_version, trace.input) == ("helper", 3, call.body["messages"])
    assert trace.attributes["shipyard.variables"] == {"who": "sailors"}


def test_a_chat_without_messages_or_a_prompt_is_refused() -> None:
    target = make_target(Scripted("m"))
    req = make_request(make_route([target]), body={"model": "harbour", "messages": []})
    with pytest.raises(InvalidRequest, match="must contain at least one message") as err:
        Planner().call(req, target)
    assert err.value.param == "messages"


def test_embeddings_carry_the_token_cap_and_are_refused_above_it() -> None:
    target = make_target(Scripted("e"))
    planner = Planner()
    planner.max_embedding_tokens = 8
    req = make_request(make_route([target], kind="embedding"), "embeddings", {"input": "12345678"})
    planner.plan(req)
    assert planner.call(req, target).max_input_tokens == 8
    req = make_request(make_route([target], kind="embedding"), "embeddings", {"input": "123456789"})
    with pytest.raises(InvalidRequest, match="at most 8 tokens") as err:
        planner.plan(req)
    assert err.value.param == "input"
    # A provider that counts exactly enforces the cap itself.
    target.provider.exact_token_count = True  # type: ignore[misc]
    planner.plan(req)


def test_the_guards_prepare_every_attempt() -> None:
    route = make_route([make_target(Scripted("m"))], guard=guard([], [{"type": "canary"}]))
    req = make_request(
        route, body={"model": "harbour", "messages": [{"role": "system", "content": "Be kind."}, *MSG]}
    )
    guards.check_input(req)
    assert req.guard is not None and req.guard.canary
    call = Planner().call(req, route.targets[0])
    assert req.guard.canary in call.body["messages"][0]["content"]
    assert req.body["messages"][0]["content"] == "Be kind."  # the client's body is not changed


# -- cache slot --------------------------------------------------------------------------------------
async def test_the_cache_slot_turns_bad_answers_into_misses() -> None:
    class Odd:
        async def lookup(self, req: Any, stream: bool) -> CachedAnswer | None:
            return CachedAnswer("m", "m", "m", result=Completion(None, Usage(), "", "m"))

        async def store(self, req: Any, answer: CachedAnswer) -> None:
            raise AssertionError("not reached")

    slot = CacheSlot()
    assert not slot.active
    slot.backend = Odd()
    req = make_request(make_route([make_target(Scripted("m"))]))
    # A whole answer is no answer to a stream.
    assert await slot.lookup(req, stream=True) is None and req.root.attributes["shipyard.cache.hit"] is False
    assert await slot.lookup(req, stream=False) is not None and req.trace.target == "m"
    req.guard = GuardState(restore={"<EMAIL_1>": "jane.doe@example.com"})
    await slot.store(req, slot.answer(req, chunks=[]))  # personal: never reaches the backend


# -- attempts ----------------------------------------------------------------------------------------
def calls(req: Any, target: Any) -> Call:
    return Call(body={"model": target.label}, model=target.label, timeout=target.timeout)


async def test_retries_wait_as_the_upstream_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    slow_down = ProviderError("HTTP 429", status=429, upstream_status=429, retry_after=2.5)
    target = make_target(Scripted("m", slow_down, slow_down, None), retries=2)
    req = make_request(make_route([target]))
    req.plan = [target]
    answered = await attempt(req, call_whole, calls)
    assert waits == [2.5, 2.5] and answered.target is target and req.trace.attempts == 3


async def test_an_exhausted_plan_reports_the_last_failure() -> None:
    target = make_target(Scripted("m", ProviderError("HTTP 429", status=429, retry_after=3.0, code="rl")))
    req = make_request(make_route([target]))
    req.plan = [target]
    with pytest.raises(ProviderError) as err:
        await attempt(req, call_whole, calls)
    assert err.value.message == "route `harbour`: all 1 attempt(s) failed; last error: HTTP 429"
    assert (err.value.status, err.value.code, err.value.retry_after) == (429, "rl", 3.0)
    assert exhausted(req.route, 0, None).message.endswith("no target could be tried")


async def test_whole_calls_and_streams_time_out_in_their_own_words() -> None:
    target = make_target(Scripted("m", "hang"), timeout=0.05)
    req = make_request(make_route([target]))
    with pytest.raises(ProviderTimeout, match=r"target `m` timed out after 0\.05s"):
        await call_whole(req, target, calls(req, target))
    provider = Scripted("m", "hang", "empty", failing())
    target = make_target(provider, timeout=0.05)
    with pytest.raises(ProviderTimeout, match=r"target `m` sent nothing for 0\.05s"):
        await open_stream(req, target, calls(req, target))
    with pytest.raises(ProviderTimeout, match="target `m` ended its stream without data"):
        await open_stream(req, target, calls(req, target))
    with pytest.raises(ProviderError, match="HTTP 500"):
        await open_stream(req, target, calls(req, target))
    assert provider.closed == [True, True, True]  # no upstream stream is left open
    first, rest = await open_stream(req, make_target(Scripted("m")), calls(req, target))
    assert first.text == "Harbour"
    await aclose(rest)


async def test_providers_that_time_themselves_get_no_timer() -> None:
    provider = Scripted("m")
    assert deadline(make_target(provider)) is not NO_DEADLINE
    provider.enforces_timeout = True  # type: ignore[misc]
    assert deadline(make_target(provider)) is NO_DEADLINE


# -- relay -------------------------------------------------------------------------------------------
def relay_for() -> tuple[Relay, FakeWriter, FakeLimiter, list[Any]]:
    writer, limiter = FakeWriter(), FakeLimiter()
    relay = Relay(Tracer(writer), Limits(limiter), CacheSlot())  # type: ignore[arg-type]
    return relay, writer, limiter, []


async def relayed(provider: Scripted) -> tuple[bytes, Trace, list[Any]]:
    target = make_target(provider, timeout=0.05)
    req = make_request(make_route([target]))
    relay, writer, _, left = relay_for()
    first, rest = await open_stream(req, target, calls(req, target))
    answered = Answered((first, rest), target, req.trace.span("attempt", parent=req.root))
    out = b"".join([part async for part in relay.run(req, first, rest, answered, left.append)])
    assert left == [req.runtime] and writer.submitted == [req.trace]
    return out, req.trace, left


async def test_the_relay_estimates_usage_the_stream_did_not_report() -> None:
    out, trace, _ = await relayed(Scripted("m", usage=False))
    assert out.endswith(b"data: [DONE]\n\n") and trace.output == "".join(PIECES)
    assert trace.spans[0].attributes["shipyard.usage_estimated"] is True
    assert (trace.input_tokens, trace.output_tokens) == (6, 3)  # words, by the provider's counter
    assert trace.ttft_ms is not None and trace.status == "ok"


async def test_a_stream_that_stalls_mid_way_ends_with_an_error_event() -> None:
    out, trace, _ = await relayed(Scripted("m", "stall"))
    assert b"Harbour" in out and b"stalled for 0.05s mid-stream" in out and out.endswith(b"data: [DONE]\n\n")
    assert trace.status_code == 504 and trace.spans[1].status == "error"
    assert trace.spans[1].attributes["error.type"] == "timeout"


async def test_a_cached_stream_replays_without_a_target() -> None:
    chunks = [StreamChunk(b"a", text="a"), StreamChunk(b"b", text="b", finish_reason="stop")]
    req = make_request(make_route([make_target(Scripted("m"))]))
    relay, writer, _, left = relay_for()
    out = b"".join([part async for part in relay.run(req, chunks[0], replay(chunks), None, left.append)])
    assert out == b"ab" and req.trace.output == "ab" and writer.submitted == [req.trace]
    assert len(req.trace.spans) == 1 and req.trace.input_tokens is None


def test_stream_errors_are_openai_error_events() -> None:
    event = sse_error(ClientGone("gone"))
    assert event.endswith(b"\n\ndata: [DONE]\n\n")
    error = orjson.loads(event[len(b"data: ") : event.index(b"\n\n")])["error"]
    assert error["type"] == "client_closed_request"


# -- payload -----------------------------------------------------------------------------------------
def test_embeddings_as_floats_base64_or_the_providers_own_bytes() -> None:
    vectors = Embeddings([[0.5, -2.0]], Usage(1, 0), "m")
    assert orjson.loads(embedding_bytes(vectors, None))["data"][0]["embedding"] == [0.5, -2.0]
    encoded = orjson.loads(embedding_bytes(vectors, "base64"))["data"][0]["embedding"]
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (0.5, -2.0)
    assert embedding_bytes(Embeddings([], Usage(), "m", raw=b"as sent"), "base64") == b"as sent"
