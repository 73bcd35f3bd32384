"""Values written with a character trick inside (zero-width characters, non-breaking spaces,
full-width letters, tabs, line breaks, doubled spaces) are still found by the `pii` and `secrets`
scanners, on input and output, streamed and not, and redacted whole: the redaction takes the
obfuscated value with its invisible characters, and nothing of it reaches the client.

The end-to-end tests run `shipyard up` with the mock provider echoing the user's message, so the
"model" outputs the obfuscated value; a scripted upstream splits one inside the value, across
streamed chunks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from shipyard.guard import normalize
from shipyard.guard.base import ScanContext
from shipyard.guard.pii import ALL_KINDS, find_pii, scrub_text
from shipyard.plugins import scanner_types
from tests.conftest import ShipyardServer, ThreadServer
from tests.test_guard_gateway import ScriptedUpstream, latest_trace

CARD = "4111111111111111"
EMAIL = ("jane.doe", "example.com")
AWS = "AKIAZ7VRSQ5BKXN2HD4M"
IN = ScanContext("input")
OUT = ScanContext("output")


def _groups(value: str, sep: str, size: int = 4) -> str:
    return sep.join(value[i : i + size] for i in range(0, len(value), size))


def _fullwidth(value: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in value)


# How each trick writes a card number, an e-mail address and an AWS access key id.
TRICKS: dict[str, dict[str, Callable[[], str]]] = {
    "zero_width_space": {
        "card": lambda: _groups(CARD, "\u200b"),
        "email": lambda: "jane\u200b.doe@exam\u200bple.com",
        "aws": lambda: _groups(AWS, "\u200b", 3),
    },
    "zero_width_joiner": {
        "card": lambda: _groups(CARD, "\u200d", 2),
        "email": lambda: "ja\u200dne.doe@example\u200d.com",
        "aws": lambda: _groups(AWS, "\u200d", 2),
    },
    "non_breaking_space": {
        "card": lambda: _groups(CARD, "\u00a0"),
        "email": lambda: f"{EMAIL[0]}\u00a0@\u00a0{EMAIL[1]}",
        "aws": lambda: _groups(AWS, "\u00a0"),
    },
    "full_width": {
        "card": lambda: _fullwidth(_groups(CARD, " ")),
        "email": lambda: _fullwidth(f"{EMAIL[0]}@{EMAIL[1]}"),
        "aws": lambda: _fullwidth(AWS),
    },
    "tabs": {
        "card": lambda: _groups(CARD, "\t"),
        "email": lambda: f"{EMAIL[0]}\t@\t{EMAIL[1]}",
        "aws": lambda: _groups(AWS, "\t"),
    },
    "newlines": {
        "card": lambda: _groups(CARD, "\n"),
        "email": lambda: f"{EMAIL[0]}\n@\n{EMAIL[1]}",
        "aws": lambda: _groups(AWS, "\n"),
    },
    "doubled_spaces": {
        "card": lambda: _groups(CARD, "  "),
        "email": lambda: f"{EMAIL[0]}  @  {EMAIL[1]}",
        "aws": lambda: _groups(AWS, "  "),
    },
}
# (scanner, value) -> what the output guard puts in the value's place
MARKERS = {"card": "<CREDIT_CARD>", "email": "<EMAIL>", "aws": "<SECRET:aws_access_key>"}
INPUT_MARKERS = {"card": "<CREDIT_CARD_1>", "email": "<EMAIL_1>", "aws": "<SECRET:aws_access_key>"}
SCANNER_OF = {"card": "pii", "email": "pii", "aws": "secrets"}
CASES = [(trick, value) for trick in TRICKS for value in ("card", "email", "aws")]


def scanner(kind: str, **options: Any) -> Any:
    stype = scanner_types()[kind]
    return stype.factory(kind, stype.options.model_validate(options))


def message(value: str) -> str:
    return f"Here it is: {value} - keep it safe."


# -- scanners ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("trick", "value"), CASES)
@pytest.mark.parametrize("ctx", [IN, OUT], ids=["input", "output"])
def test_each_trick_is_seen_through_and_its_span_is_the_whole_value(
    trick: str, value: str, ctx: ScanContext
) -> None:
    obfuscated = TRICKS[trick][value]()
    text = message(obfuscated)
    found = scanner(SCANNER_OF[value]).scan(text, ctx)
    assert len(found) == 1, (trick, value, found)
    assert text[found[0].start : found[0].end] == obfuscated


def test_the_normaliser_maps_spans_back_over_invisible_characters() -> None:
    text = "key: AK\u200bIA\u200dZ7VR\u2060SQ5BKXN2HD4M\u200b\u200b, done"
    norm = normalize.normalized(text)
    assert norm.text == f"key: {AWS}, done"
    start = norm.text.index(AWS)
    a, b = norm.origin(start, start + len(AWS))
    # From the first character to the last, and the invisible ones right after it.
    assert text[a:b] == "AK\u200bIA\u200dZ7VR\u2060SQ5BKXN2HD4M\u200b\u200b"
    assert normalize.normalized("plain ascii").offsets is None


def test_pii_scrub_of_datasets_sees_through_the_tricks_too() -> None:
    text = f"card {_groups(CARD, chr(0xA0))}, mail {EMAIL[0]} @ {EMAIL[1]}"
    assert scrub_text(text) == "card <CREDIT_CARD>, mail <EMAIL>"
    [card, email] = find_pii(text, ALL_KINDS)
    assert card.text == _groups(CARD, "\u00a0") and email.text == f"{EMAIL[0]} @ {EMAIL[1]}"


@pytest.mark.parametrize(
    "text",
    [
        "thanks @ john.smith for the review",  # no common or country-code domain after a spaced @
        "years\n1999\n2004\n2010\n2015\n",  # a column of years is not a card
        "Note: sk-learn is a library for machine learning",  # no key once its words are given back
        "The commit 3f786850e387550fdab836ed7e6dc881de23001b fixed it.",
    ],
)
def test_the_tricks_do_not_turn_ordinary_text_into_findings(text: str) -> None:
    assert scanner("pii").scan(text, IN) == []
    assert scanner("secrets").scan(text, IN) == []


@pytest.mark.parametrize("sep", [" ", "\t", "\n", "  ", "\u00a0"])
def test_a_variable_length_key_with_whitespace_inside_gives_back_the_words_after_it(sep: str) -> None:
    key = "sk-proj-Q7wErT9yUiOp2aSdF4gHjK6lZxC8vBn1"
    spaced = _groups(key, sep)
    text = f"Your key: {spaced} and that is all."
    [found] = scanner("secrets").scan(text, OUT)
    assert found.kind == "openai_key" and text[found.start : found.end] == spaced


# -- through `shipyard up` ---------------------------------------------------------------------------
CONFIG = """
providers:
  - {{name: echo, type: mock, echo: true}}
  - {{name: up, type: openai, base_url: '{url}/v1'}}
models:
  - {{name: echo-m, provider: echo, model: echo}}
  - {{name: up-m, provider: up, model: up-model}}
routes:
  - name: out-pii
    targets: [{{model: echo-m}}]
    guards: {{output: [{{type: pii}}]}}
  - name: out-secrets
    targets: [{{model: echo-m}}]
    guards: {{output: [{{type: secrets}}]}}
  - name: in-pii
    targets: [{{model: echo-m}}]
    guards: {{input: [{{type: pii}}]}}
  - name: in-secrets
    targets: [{{model: echo-m}}]
    guards: {{input: [{{type: secrets}}]}}
  - name: split
    targets: [{{model: up-m}}]
    guards: {{output: [{{type: secrets}}, {{type: pii}}], stream_window_tokens: 16}}
"""
# What the scripted upstream streams on the `split` route: values cut inside, between chunks.
SPLIT_AWS = _groups(AWS, "\u200b", 1)
PADDED_AWS = _groups(AWS, "\u200b" * 30, 1)  # 590 characters, 20 of them visible
SPLIT_CARD = _groups(CARD, "\u00a0")
SPLIT_PIECES = [
    "First ",
    SPLIT_AWS[:15],
    SPLIT_AWS[15:],
    " then ",
    PADDED_AWS[:300],
    PADDED_AWS[300:],
    " and ",
    SPLIT_CARD[:7],
    SPLIT_CARD[7:],
    " done.",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ShipyardServer, ScriptedUpstream]]:
    upstream = ScriptedUpstream(SPLIT_PIECES, gap_s=0.02)
    with ThreadServer(upstream) as up:
        home: Path = tmp_path_factory.mktemp("obfuscation") / "home"
        s = ShipyardServer(home, CONFIG.format(url=up.url)).start()
        try:
            yield s, upstream
        finally:
            s.stop()


def _ask(client: openai.OpenAI, route: str, text: str, stream: bool) -> str:
    messages = [{"role": "user", "content": text}]
    if not stream:
        answer = client.chat.completions.create(model=route, messages=messages)  # type: ignore[arg-type]
        return answer.choices[0].message.content or ""
    chunks = client.chat.completions.create(model=route, messages=messages, stream=True)  # type: ignore[arg-type]
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize(("trick", "value"), CASES)
def test_output_guards_redact_the_obfuscated_value_streamed_and_not(
    server: tuple[ShipyardServer, ScriptedUpstream], trick: str, value: str
) -> None:
    client = server[0].openai()
    obfuscated = TRICKS[trick][value]()
    route = f"out-{SCANNER_OF[value]}"
    expected = message(MARKERS[value])
    for stream in (False, True):
        assert _ask(client, route, message(obfuscated), stream) == expected, (trick, value, stream)


@pytest.mark.parametrize(("trick", "value"), CASES)
def test_input_guards_redact_the_obfuscated_value_before_the_provider(
    server: tuple[ShipyardServer, ScriptedUpstream], trick: str, value: str
) -> None:
    client = server[0].openai()
    obfuscated = TRICKS[trick][value]()
    route = f"in-{SCANNER_OF[value]}"
    # The mock echoes what it was sent: the placeholder, never the value.
    expected = message(INPUT_MARKERS[value])
    for stream in (False, True):
        assert _ask(client, route, message(obfuscated), stream) == expected, (trick, value, stream)


def test_a_value_split_across_chunks_with_invisible_characters_inside_is_held_and_redacted(
    server: tuple[ShipyardServer, ScriptedUpstream],
) -> None:
    s, _ = server
    r = httpx.post(
        s.url + "/v1/chat/completions",
        json={"model": "split", "messages": [{"role": "user", "content": "go"}], "stream": True},
        headers=s.headers,
        timeout=30,
    )
    assert r.status_code == 200
    text = "".join(
        c.choices[0].delta.content or ""
        for c in s.openai().chat.completions.create(
            model="split", messages=[{"role": "user", "content": "go"}], stream=True
        )
        if c.choices
    )
    assert text == ("First <SECRET:aws_access_key> then <SECRET:aws_access_key> and <CREDIT_CARD> done.")
    # Not one character of a value left the gateway, in any event (the padded key is 590
    # characters, over four windows of 64: the window counts only what is visible).
    for piece in ("AKIA", "Z7V", "HD4M", "4111", "\u200b", "\u00a0"):
        assert piece not in r.text
    time.sleep(0.3)
    trace = latest_trace(s.store_url(), "split")
    assert trace["output"] == text
    assert [f["kind"] for f in trace["attributes"]["guard.findings"]] == [
        "aws_access_key",
        "aws_access_key",
        "CREDIT_CARD",
    ]
