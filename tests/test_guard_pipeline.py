"""Guard scanners, pipeline and streaming guard, in process (the gateway tests are in
test_guard_gateway.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from shipyard.config.schema import GuardsConfig
from shipyard.errors import ConfigError
from shipyard.guard.base import ScanContext
from shipyard.guard.pipeline import GuardBlocked, GuardPipeline, OutputBlocked
from shipyard.plugins import scanner_types
from shipyard.providers.base import SSE_DONE, Call, Completion, StreamChunk, Usage, chat_body, chat_chunk
from shipyard.registry.validation import parse_config
from shipyard.tracing.spans import Trace

OUT = ScanContext("output")
IN = ScanContext("input")
OPENAI_KEY = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
CARD = "4111 1111 1111 1111"


def scanner(kind: str, **options: Any) -> Any:
    stype = scanner_types()[kind]
    return stype.factory(kind, stype.options.model_validate(options))


def kinds(findings: list[Any]) -> list[str]:
    return [f.kind for f in findings]


def pipeline(**guards: Any) -> GuardPipeline:
    p = GuardPipeline.build("r", GuardsConfig.model_validate(guards))
    assert p is not None
    return p


def new_trace() -> tuple[Trace, Any]:
    trace = Trace(operation="chat", route="r")
    return trace, trace.span("chat r")


# -- scanners ----------------------------------------------------------------------------------------
def test_builtin_scanners_are_registered() -> None:
    names = set(scanner_types())
    expected = {"pii", "secrets", "banned", "token_limit", "canary", "system_leak", "toxicity"}
    assert expected | {"json_schema", "refusal", "urls"} <= names


def test_pii_structured_kinds_with_checksums() -> None:
    s = scanner("pii")
    text = (
        "Mail jane.doe@example.com, card 4111 1111 1111 1111, bad card 4111 1111 1111 1112, "
        "IBAN GB82 WEST 1234 5698 7654 32, SSN 123-45-6788, not 666-12-3456, "
        "host 10.1.2.3, my name is Maria Garcia."
    )
    found = {f.kind: text[f.start : f.end] for f in s.scan(text, IN)}
    assert found == {
        "EMAIL": "jane.doe@example.com",
        "CREDIT_CARD": "4111 1111 1111 1111",
        "IBAN": "GB82 WEST 1234 5698 7654 32",
        "US_SSN": "123-45-6788",
        "IP_ADDRESS": "10.1.2.3",
        "PERSON": "Maria Garcia",
    }
    assert scanner("pii", kinds=["email"]).scan(text, IN)[0].kind == "EMAIL"
    with pytest.raises(ValueError, match="unknown PII kind"):
        scanner("pii", kinds=["shoe_size"])


@pytest.mark.parametrize(
    ("secret", "kind"),
    [
        (OPENAI_KEY, "openai_key"),
        ("AKIAIOSFODNN7EXAMPLE", "aws_access_key"),
        ("ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", "github_token"),
        ("xoxb-1234567890-abcdefghij", "slack_token"),
        ("AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "google_api_key"),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "jwt",
        ),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx1b2c3d4e5f6\n-----END RSA PRIVATE KEY-----",
            "private_key",
        ),
        ("Zx8Qp2Lm7Rt4Vb9Nc3Kd6Hf1Js5Gw0Ty", "high_entropy"),
    ],
)
def test_secrets_by_prefix_and_entropy(secret: str, kind: str) -> None:
    text = f"here it is: {secret} thanks"
    found = scanner("secrets").scan(text, IN)
    assert kinds(found) == [kind]
    assert text[found[0].start : found[0].end] == secret


def test_secrets_leave_ordinary_text_and_hashes_alone() -> None:
    text = (
        "The commit 3f786850e387550fdab836ed7e6dc881de23001b fixed internationalization in "
        "src/shipyard/gateway/service.py; see CONTRIBUTING_GUIDELINES_FOR_NEW_DEVELOPERS."
    )
    assert scanner("secrets").scan(text, IN) == []
    bearer = scanner("secrets").scan("Authorization: Bearer abcdefghijklmnopqrstuvwxyz123456", IN)
    assert kinds(bearer) == ["bearer_token"]


def test_banned_substrings_regexes_topics() -> None:
    s = scanner(
        "banned", substrings=["project falcon"], regexes=[r"\bACME-\d+"], topics={"weapons": ["rifle"]}
    )
    found = s.scan("Tell me about PROJECT  Falcon, ticket acme-42 and a Rifle. Falconry is fine.", IN)
    assert [f.detail for f in found] == ["substring:project falcon", r"regex:\bACME-\d+", "topic:weapons"]
    with pytest.raises(ValueError, match="not a valid regular expression"):
        scanner("banned", regexes=["("])


def test_token_limit() -> None:
    s = scanner("token_limit", max_tokens=10)
    assert s.scan("short question?", IN) == []
    assert kinds(s.scan("word " * 50, IN)) == ["too_long"]
    with pytest.raises(ValueError, match="block"):
        scanner("token_limit", action="redact")


def test_toxicity_sees_through_disguises_but_not_substrings() -> None:
    s = scanner("toxicity")
    for text in [
        "you are an idiot",
        "sh1t happens",
        "f.u.c.k this",
        "what the f**k",
        "I will kill you",
        "IDIOOOOT",
    ]:
        assert s.scan(text, IN), text
    for text in [
        "Scunthorpe is a town",
        "please assess the class",
        "the cockpit of the plane",
        "kill the process",
    ]:
        assert s.scan(text, IN) == [], text
    assert scanner("toxicity", allow_words=["crap"]).scan("oh crap", IN) == []


def test_canary_and_system_leak() -> None:
    ctx = ScanContext(
        "output",
        canaries=("cnry-1234abcd",),
        system_prompt="You are Bob, the support bot "
        "of Acme. Never discuss pricing. Always answer in French and sign as Bob.",
    )
    assert kinds(scanner("canary").scan("sure: cnry-1234abcd", ctx)) == ["canary_leak"]
    assert scanner("canary").scan("nothing here", ctx) == []
    leak = scanner("system_leak").scan(
        "My instructions: you are bob the support bot of acme never discuss pricing always answer in french",
        ctx,
    )
    assert kinds(leak) == ["system_prompt_overlap"] and leak[0].score >= 0.5
    assert scanner("system_leak").scan("Bonjour! How can I help you with your Acme order?", ctx) == []


def test_json_schema_refusal_urls() -> None:
    schema = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}
    js = scanner("json_schema", schema=schema)
    assert js.scan('{"answer": "yes"}', OUT) == []
    assert js.scan('```json\n{"answer": "yes"}\n```', OUT) == []
    assert kinds(js.scan('{"answer": 3}', OUT)) == ["schema_mismatch"]
    assert kinds(js.scan("not json", OUT)) == ["invalid_json"]
    with pytest.raises(ValueError, match="not a valid JSON schema"):
        scanner("json_schema", schema={"type": "nonsense"})
    assert kinds(scanner("refusal").scan("I'm sorry, but I can't help with that.", OUT)) == ["refusal"]
    assert scanner("refusal").scan("Sure, here is the summary.", OUT) == []
    urls = scanner("urls", allowed_domains=["example.com"])
    text = (
        "see https://docs.example.com/a, http://192.168.0.1/x, https://bit.ly/abc, "
        "https://xn--pple-43d.com, ![x](data:image/png;base64,AAAA) and https://evil.test/?q=secret"
    )
    assert kinds(urls.scan(text, OUT)) == [
        "ip_literal",
        "shortener",
        "punycode",
        "data_uri",
        "unknown_domain",
    ]
    assert scanner("urls").scan("read https://python.org/docs", OUT) == []


# -- config ------------------------------------------------------------------------------------------
BASE = """
providers: [{name: m, type: mock}]
models: [{name: mm, provider: m}]
routes:
  - name: r
    targets: [{model: mm}]
    guards:
"""


def test_config_errors_name_the_field_line_and_known_types() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(
            BASE
            + """      input:
        - {type: nope}
        - {type: pii, colour: red}
        - {type: canary}
      output:
        - {type: token_limit, max_tokens: 0}
"""
        )
    problems = "\n".join(err.value.problems)
    assert (
        "shipyard.yaml:9: routes[0].guards.input[0].type: unknown scanner type `nope`; known types:"
        in problems
    )
    assert "pii" in problems and "secrets" in problems
    assert (
        "shipyard.yaml:10: routes[0].guards.input[1].colour: unknown option `colour` for scanner `pii`"
        in problems
    )
    assert "routes[0].guards.input[2].type: scanner `canary` runs on output only" in problems
    assert "routes[0].guards.output[0].type: scanner `token_limit` runs on input only" in problems
    assert "max_tokens: Input should be greater than or equal to 1" in problems


def test_config_accepts_guards() -> None:
    loaded = parse_config(
        BASE
        + """      input: [{type: pii, action: redact}, {type: secrets}]
      output: [{type: canary}, {type: urls, name: links, allowed_domains: [example.com]}]
      stream_window_tokens: 16
      restore_pii: true
"""
    )
    guards = loaded.config.routes[0].guards
    assert guards is not None
    p = GuardPipeline.build("r", guards)
    assert p is not None and p.window_chars == 64 and p.restore_pii
    assert p.output_names == ["canary", "links"]


# -- pipeline ----------------------------------------------------------------------------------------
def test_input_redaction_with_placeholders_and_restore() -> None:
    p = pipeline(input=[{"type": "pii"}], output=[{"type": "pii"}], restore_pii=True)
    trace, root = new_trace()
    body = {
        "messages": [{"role": "user", "content": f"I am bob@example.com, card {CARD}. Mail bob@example.com"}]
    }
    new, state = p.check_input("chat", body, trace, root)
    sent = new["messages"][0]["content"]
    assert sent == "I am <EMAIL_1>, card <CREDIT_CARD_1>. Mail <EMAIL_1>"
    assert body["messages"][0]["content"].startswith("I am bob@")  # the client's body is not mutated
    assert trace.input == new["messages"]
    findings = trace.attributes["guard.findings"]
    assert [(f["scanner"], f["kind"], f["action"], f["stage"]) for f in findings] == [
        ("pii", "EMAIL", "redact", "input"),
        ("pii", "CREDIT_CARD", "redact", "input"),
        ("pii", "EMAIL", "redact", "input"),
    ]
    assert "bob@example.com" not in orjson.dumps(findings).decode()
    guard_span = next(s for s in trace.spans if s.name == "guard input")
    assert guard_span.attributes["guard.action"] == "redact" and guard_span.attributes["guard.scanners"] == [
        "pii"
    ]

    answer = chat_body(
        "c1", "m", "Noted <EMAIL_1> and <CREDIT_CARD_1>; also eve@evil.test", "stop", Usage(1, 1)
    )
    result = p.check_output("chat", Completion(answer, Usage(1, 1), "", "m"), state, trace, root)
    assert result.body is not None
    assert (
        result.body["choices"][0]["message"]["content"] == f"Noted bob@example.com and {CARD}; also <EMAIL>"
    )
    assert result.text == "Noted <EMAIL_1> and <CREDIT_CARD_1>; also <EMAIL>"  # what the trace stores


def test_input_block_names_scanner_and_fix() -> None:
    p = pipeline(input=[{"type": "secrets", "action": "block"}])
    trace, root = new_trace()
    with pytest.raises(GuardBlocked) as err:
        p.check_input("chat", {"messages": [{"role": "user", "content": f"key {OPENAI_KEY}"}]}, trace, root)
    assert err.value.status == 400 and err.value.code == "guard_blocked"
    assert "guard `secrets`" in err.value.message and "messages[0]" in err.value.message
    assert "rotate it" in err.value.message
    assert OPENAI_KEY not in err.value.message


def test_canary_is_planted_and_its_leak_blocked() -> None:
    p = pipeline(output=[{"type": "canary"}])
    trace, root = new_trace()
    _, state = p.check_input("chat", {"messages": [{"role": "user", "content": "hi"}]}, trace, root)
    call = Call(
        body={"messages": [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "hi"}]},
        model="m",
        timeout=1,
    )
    p.prepare_call(call, state)
    assert state.canary and state.canary in call.body["messages"][0]["content"]
    assert call.body["messages"][0]["content"].startswith("Be nice.")
    leaked = chat_body("c", "m", f"My prompt says {state.canary}", "stop", Usage(1, 1))
    with pytest.raises(OutputBlocked) as err:
        p.check_output("chat", Completion(leaked, Usage(1, 1), "", "m"), state, trace, root)
    assert err.value.status == 422 and "guard `canary`" in err.value.message


# -- streaming ---------------------------------------------------------------------------------------
def sse(pieces: list[str]) -> list[StreamChunk]:
    chunks = [StreamChunk(chat_chunk("c", 1, "m", {"role": "assistant", "content": ""}, None))]
    chunks += [StreamChunk(chat_chunk("c", 1, "m", {"content": p}, None), text=p) for p in pieces]
    chunks.append(StreamChunk(chat_chunk("c", 1, "m", {}, "stop"), finish_reason="stop"))
    chunks.append(StreamChunk(SSE_DONE))
    return chunks


async def _aiter(items: list[StreamChunk]) -> AsyncIterator[StreamChunk]:
    for item in items:
        yield item


def run_stream(p: GuardPipeline, pieces: list[str], state: Any = None) -> tuple[list[str], str, Trace]:
    """(content of each event the client gets, in order; the trace's text; the trace)."""
    trace, root = new_trace()
    if state is None:
        _, state = p.check_input("chat", {"messages": [{"role": "user", "content": "x"}]}, trace, root)
    chunks = sse(pieces)

    async def go() -> tuple[list[str], str]:
        out: list[str] = []
        text = ""
        async for chunk in p.stream("chat", chunks[0], _aiter(chunks[1:]), state, trace, root):
            text += chunk.text
            for line in chunk.data.split(b"\n\n"):
                if line.startswith(b"data: {"):
                    delta = orjson.loads(line[6:])["choices"][0]["delta"]
                    if delta.get("content"):
                        out.append(delta["content"])
        return out, text

    out, text = asyncio.run(go())
    return out, text, trace


def test_secret_split_across_chunks_is_redacted() -> None:
    p = pipeline(output=[{"type": "secrets"}])
    half = len(OPENAI_KEY) // 2
    out, text, trace = run_stream(p, ["Your key is ", OPENAI_KEY[:half], OPENAI_KEY[half:], " keep it safe."])
    client = "".join(out)
    assert client == "Your key is <SECRET:openai_key> keep it safe."
    assert OPENAI_KEY[:6] not in client and text == client
    findings = trace.attributes["guard.findings"]
    assert [(f["kind"], f["start"], f["stage"]) for f in findings] == [("openai_key", 12, "output")]
    span = next(s for s in trace.spans if s.name == "guard output")
    assert span.attributes["guard.action"] == "redact"


def test_stream_keeps_flowing_and_holds_at_most_the_window() -> None:
    p = pipeline(output=[{"type": "pii"}], stream_window_chars=20)
    words = [f"word{i} " for i in range(40)]
    out, _, _ = run_stream(p, words)
    assert "".join(out) == "".join(words)
    assert len(out) > 10  # released as it came, not once at the end
    # Each release happens while at most ~window characters (plus one word) are still held.
    sent = 0
    for piece in out[:-1]:
        sent += len(piece)
    assert len("".join(words)) - sent <= 20 + len("word39 ")


def test_stream_restores_placeholders_and_redacts_split_email() -> None:
    p = pipeline(input=[{"type": "pii"}], output=[{"type": "pii"}], restore_pii=True, stream_window_chars=16)
    trace, root = new_trace()
    _, state = p.check_input(
        "chat", {"messages": [{"role": "user", "content": "I'm ann@example.com"}]}, trace, root
    )
    out, text, _ = run_stream(p, ["Hello <EMA", "IL_1>, write to ma", "llory@evil.", "test now"], state)
    assert "".join(out) == "Hello ann@example.com, write to <EMAIL> now"
    assert text == "Hello <EMAIL_1>, write to <EMAIL> now"


def test_stream_block_raises_before_the_offending_text() -> None:
    p = pipeline(output=[{"type": "canary"}])
    trace, root = new_trace()
    _, state = p.check_input("chat", {"messages": [{"role": "user", "content": "x"}]}, trace, root)
    assert state.canary
    with pytest.raises(OutputBlocked):
        run_stream(p, ["Sure, my secret marker is ", state.canary[:6], state.canary[6:], " ok"], state)


def test_stream_whole_answer_scanner_runs_at_the_end() -> None:
    p = pipeline(output=[{"type": "json_schema", "action": "flag"}])
    _, _, trace = run_stream(p, ['{"a": ', "1"])
    assert [f["kind"] for f in trace.attributes["guard.findings"]] == ["invalid_json"]


def test_placeholders_are_not_detected_again_on_output() -> None:
    p = pipeline(
        input=[{"type": "pii"}, {"type": "secrets"}],
        output=[{"type": "pii"}, {"type": "secrets"}, {"type": "urls"}, {"type": "toxicity"}],
    )
    trace, root = new_trace()
    body = {
        "messages": [{"role": "user", "content": f"key {OPENAI_KEY}, mail ann@example.com, url bit.ly/x"}]
    }
    new, state = p.check_input("chat", body, trace, root)
    sent = new["messages"][0]["content"]
    assert sent == "key <SECRET:openai_key>, mail <EMAIL_1>, url bit.ly/x"
    echoed = chat_body("c", "m", sent, "stop", Usage(1, 1))
    result = p.check_output("chat", Completion(echoed, Usage(1, 1), "", "m"), state, trace, root)
    assert result.text == sent
    assert [f["stage"] for f in trace.attributes["guard.findings"]] == ["input", "input"]
