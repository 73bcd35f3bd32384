"""The built-in eval scorers: every type's pass and fail cases and explanations, failed target calls,
option errors through ``build_scorers``, BLEU and ROUGE-L against the reference libraries, the
semantic scorer on the real bundled embedding model, and the LLM judge against a scripted judge."""

from __future__ import annotations

import asyncio
import random
import socket
import string
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipyard.errors import ConfigError, ProviderError
from shipyard.evals.core import Case, Observation, Score, Scorer
from shipyard.evals.scorers import (
    DEFAULT_JUDGE_PROMPT,
    EqualsScorer,
    build_scorers,
    lcs_length,
    levenshtein_distance,
    parse_verdict,
    rouge_l,
    sentence_bleu,
)
from shipyard.plugins import scorer_types
from shipyard.providers.base import Call
from shipyard.providers.wordllama import WordLlamaProvider


class FakeContext:
    """A ScoreContext whose judge answers come from a script, one per call in call order (a string,
    an Observation, or an exception to raise), and whose embeddings come from the real WordLlama."""

    def __init__(
        self, answers: list[str | Observation | Exception] | None = None, embedder: Any = None
    ) -> None:
        self.answers = list(answers or [])
        self.calls: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = []
        self.embedder = embedder

    async def complete(self, route: str, messages: list[dict[str, Any]], **params: Any) -> Observation:
        self.calls.append((route, messages, params))
        answer = self.answers[len(self.calls) - 1]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, Observation):
            return answer
        return Observation(output=answer, model="judge-model-1")

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if self.embedder is None:
            raise AssertionError("this test should not embed")
        result = await self.embedder.embed(
            Call(body={"input": texts, "model": "wordllama"}, model="wordllama", timeout=30)
        )
        return result.vectors


def one(spec: dict[str, Any]) -> Scorer:
    [scorer] = build_scorers([spec])
    return scorer


async def run(
    spec: dict[str, Any],
    output: str = "",
    expected: Any = None,
    ctx: FakeContext | None = None,
    case_input: Any = None,
    **observed: Any,
) -> Score:
    case = Case(id="c1", input=case_input if case_input is not None else {"question": "q"}, expected=expected)
    return await one(spec).score(case, Observation(output=output, **observed), ctx or FakeContext())


def assert_one_line(score: Score) -> None:
    assert score.explanation and "\n" not in score.explanation
    assert 0.0 <= score.value <= 1.0


# ---------------------------------------------------------------------------------------------
# Registration and build_scorers

ALL_TYPES = {
    "equals",
    "contains",
    "not_contains",
    "regex",
    "starts_with",
    "is_json",
    "json_schema",
    "levenshtein",
    "bleu",
    "rouge_l",
    "word_count",
    "length",
    "semantic_similarity",
    "latency",
    "ttft",
    "tokens",
    "cost",
    "llm_judge",
    "custom",
}


def test_every_type_registers_through_the_plugin_hook_with_documented_options() -> None:
    types = scorer_types()
    assert set(types) >= ALL_TYPES
    for name in ALL_TYPES:
        stype = types[name]
        assert stype.description, name
        for field, info in stype.options.model_fields.items():
            assert info.description, f"{name}.{field} has no description"


def test_names_default_to_the_type_and_are_made_unique() -> None:
    scorers = build_scorers(
        [
            {"type": "contains", "value": "a"},
            {"type": "contains", "value": "b", "name": "contains-2"},
            {"type": "contains", "value": "c"},
            {"type": "is_json", "name": "has-json", "threshold": 1},
            {"type": "contains", "value": "d", "name": "contains"},
        ]
    )
    assert [s.name for s in scorers] == ["contains-3", "contains-2", "contains-4", "has-json", "contains"]
    assert all(isinstance(s, Scorer) for s in scorers)


def test_yaml_numbers_are_accepted_as_text() -> None:
    scorer = one({"type": "equals", "value": 42})
    assert isinstance(scorer, EqualsScorer) and scorer.options.value == "42"


def problems_of(specs: list[Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        build_scorers(specs)
    return info.value.problems


def test_every_bad_entry_is_reported_once_naming_its_field() -> None:
    problems = problems_of(
        [
            {"type": "contains", "value": "ok"},
            {"type": "nope"},
            {"value": "x"},
            "contains",
            {"type": "regex", "pattern": "(unclosed"},
            {"type": "json_schema", "schema": {"type": "no-such-type"}},
            {"type": "contains", "valu": "typo"},
            {"type": "equals", "threshold": 1.5},
            {"type": "word_count"},
            {"type": "llm_judge", "rubric": "r"},
            {"type": "custom", "function": "no_such_module_xyz:score"},
            {"type": "regex", "pattern": "a", "flags": "iq"},
            {"type": "contains", "value": {"a": 1}},
        ]
    )
    assert len(problems) == 12, problems
    assert problems[0].startswith("scorers[1].type: unknown scorer type `nope`; known types: bleu, contains")
    assert problems[1].startswith("scorers[2].type: required; known types:")
    assert problems[2] == "scorers[3]: must be a mapping with a `type` (got str)"
    assert problems[3].startswith("scorers[4].pattern: does not compile: missing ), unterminated subpattern")
    assert problems[4].startswith("scorers[5].schema: not a valid JSON Schema")
    assert problems[5].startswith(
        "scorers[6].valu: unknown option; known options: type, name, threshold, value"
    )
    assert problems[6].startswith("scorers[7].threshold: Input should be less than or equal to 1")
    assert problems[7] == "scorers[8]: set `min`, `max` or both"
    assert problems[8] == "scorers[9].route: required"
    assert problems[9].startswith("scorers[10].function: cannot import module `no_such_module_xyz` for ")
    assert problems[10] == "scorers[11].flags: unknown flag(s) q; use letters from `imsx`"
    assert problems[11] == "scorers[12].value: must be a text or a non-empty list of texts"


def test_duplicate_explicit_names_are_an_error() -> None:
    problems = problems_of(
        [{"type": "is_json", "name": "x"}, {"type": "contains", "value": "a", "name": "x"}]
    )
    assert problems == ["scorers[1].name: `x` is already used by scorers[0]"]


def test_config_error_renders_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        build_scorers([{"type": "nope"}, {"type": "latency"}])
    text = str(info.value)
    assert "2 problem(s)" in text and "scorers[0].type" in text and "scorers[1].max_ms: required" in text


# ---------------------------------------------------------------------------------------------
# A failed target call fails every scorer, and says so


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable module of custom scorer functions; returns its name."""
    name = f"shipyard_custom_scorers_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from shipyard.evals.core import Score

            def as_float(case, observation):
                return len(observation.output) / 10

            def as_bool(case, observation):
                return observation.output == case.expected

            def as_tuple(case, observation):
                return 0.25, "a quarter, because " + observation.output

            def as_score(case, observation):
                return Score(0.9, False, "nine tenths", {"why": "test"})

            async def as_async(case, observation):
                return 1.0

            def wrong_type(case, observation):
                return [1]

            def out_of_range(case, observation):
                return 1.5

            def raises(case, observation):
                raise RuntimeError("boom")

            NOT_CALLABLE = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def one_spec_per_type(custom: str) -> list[dict[str, Any]]:
    return [
        {"type": "equals", "value": ""},
        {"type": "contains", "value": "x"},
        {"type": "not_contains", "value": "x"},
        {"type": "regex", "pattern": ".*"},
        {"type": "starts_with", "value": ""},
        {"type": "is_json"},
        {"type": "json_schema", "schema": {}},
        {"type": "levenshtein", "value": ""},
        {"type": "bleu", "value": ""},
        {"type": "rouge_l", "value": ""},
        {"type": "word_count", "max": 10},
        {"type": "length", "max": 10},
        {"type": "semantic_similarity", "value": "x"},
        {"type": "latency", "max_ms": 1000},
        {"type": "ttft", "max_ms": 1000},
        {"type": "tokens", "max_output_tokens": 10},
        {"type": "cost", "max_usd": 1},
        {"type": "llm_judge", "route": "judge", "rubric": "r"},
        {"type": "custom", "function": f"{custom}:as_async"},
    ]


async def test_a_failed_call_fails_every_scorer_with_the_error(custom_module: str) -> None:
    specs = one_spec_per_type(custom_module)
    assert {s["type"] for s in specs} == ALL_TYPES
    ctx = FakeContext()  # no judge answers and no embedder: nothing may be asked of it
    observation = Observation(
        output="", latency_ms=5, error="target `t` answered HTTP 503: overloaded\nretry"
    )
    for scorer in build_scorers(specs):
        score = await scorer.score(Case("c", {}), observation, ctx)
        assert score.value == 0.0 and not score.passed, scorer.name
        assert score.explanation == "the target call failed: target `t` answered HTTP 503: overloaded retry"
    assert ctx.calls == []


# ---------------------------------------------------------------------------------------------
# Deterministic text checks


async def test_equals() -> None:
    score = await run({"type": "equals"}, " Paris\n", expected="Paris")
    assert score.passed and score.value == 1.0
    assert (
        score.explanation
        == "output equals the expected answer 'Paris' (case-sensitive, ignoring surrounding whitespace)"
    )
    score = await run({"type": "equals"}, "paris", expected="Paris")
    assert not score.passed and score.value == 0.0
    assert score.explanation.startswith("output 'paris' does not equal the expected 'Paris'")
    assert (await run({"type": "equals", "ignore_case": True}, "PARIS", expected="paris")).passed
    assert not (await run({"type": "equals", "strip": False}, "Paris ", expected="Paris")).passed
    assert (await run({"type": "equals", "value": "Lyon"}, "Lyon", expected="Paris")).passed
    assert (await run({"type": "equals"}, "4", expected=4)).passed


async def test_a_list_of_expected_answers_lets_the_best_one_win() -> None:
    score = await run({"type": "equals"}, "Paname", expected=["Paris", "Paname"])
    assert score.passed and "'Paname'" in score.explanation
    score = await run({"type": "equals"}, "Rome", expected=["Paris", "Paname"])
    assert not score.passed and "none of the 2 expected answers" in score.explanation
    score = await run({"type": "levenshtein"}, "Pariss", expected=["London", "Paris"])
    assert score.details["reference"] == "Paris" and "best of 2 expected answers" in score.explanation


async def test_a_case_without_expected_answer_fails_with_a_reason() -> None:
    score = await run({"type": "contains"}, "Paris", expected=None)
    assert not score.passed
    assert score.explanation == "case `c1` has no expected answer; give it `expected` or set `value`"
    score = await run({"type": "bleu"}, "Paris", expected={"city": "Paris"})
    assert not score.passed and "must be a text or a list of texts, not dict" in score.explanation


async def test_contains() -> None:
    score = await run({"type": "contains", "ignore_case": True}, "It is Lyon.", expected="Paris")
    assert not score.passed
    assert score.explanation == "output does not contain 'Paris' (checked case-insensitively)"
    score = await run({"type": "contains", "ignore_case": True}, "it is PARIS.", expected="Paris")
    assert score.passed and score.explanation == "output contains 'Paris' (checked case-insensitively)"
    assert not (await run({"type": "contains"}, "PARIS", expected="Paris")).passed
    score = await run({"type": "contains", "value": ["Rome", "Paris"]}, "Paris!")
    assert score.passed and score.details == {"found": ["Paris"], "missing": ["Rome"]}
    score = await run({"type": "contains", "value": ["a", "b", "c", "d"], "mode": "all"}, "a c")
    assert score.value == 0.5 and not score.passed
    assert score.explanation == "output lacks 2 of 4 texts: 'b', 'd' (case-sensitive)"
    score = await run({"type": "contains", "value": ["a", "c"], "mode": "all", "threshold": 0.5}, "a c")
    assert score.passed and score.explanation == "output contains all 2 texts (case-sensitive)"


async def test_not_contains() -> None:
    score = await run({"type": "not_contains", "value": "sorry", "ignore_case": True}, "Sorry, I can't.")
    assert not score.passed and score.value == 0.0
    assert score.explanation == "output contains 'sorry' (checked case-insensitively)"
    score = await run({"type": "not_contains", "value": ["as an AI", "sorry"]}, "Here you go.")
    assert (
        score.passed and score.explanation == "output contains none of the 2 forbidden texts (case-sensitive)"
    )
    score = await run({"type": "not_contains", "value": ["x", "y", "z", "w"]}, "x here")
    assert score.value == 0.75 and not score.passed
    score = await run({"type": "not_contains", "value": ["x", "y"], "mode": "any"}, "x here")
    assert score.passed and "but not 'y'" in score.explanation
    score = await run({"type": "not_contains", "value": ["x", "y"], "mode": "any"}, "x and y")
    assert not score.passed and score.explanation.startswith("output contains every forbidden text")


async def test_regex() -> None:
    score = await run({"type": "regex", "pattern": r"\b\d{3}-\d{4}\b"}, "call 555-1234 now")
    assert score.passed and score.explanation == r"output matches /\b\d{3}-\d{4}\b/ at 5: '555-1234'"
    score = await run({"type": "regex", "pattern": r"^yes$"}, "Yes")
    assert not score.passed and score.explanation == "output does not match /^yes$/"
    assert (await run({"type": "regex", "pattern": r"^yes$", "flags": "im"}, "well\nYES")).passed
    # verbose mode changes parsing: the comment is not part of the pattern
    assert (await run({"type": "regex", "pattern": "ab  # letters", "flags": "x"}, "xaby")).passed
    assert (await run({"type": "regex", "pattern": "a #(", "flags": "x"}, "a")).passed
    assert problems_of([{"type": "regex", "pattern": "a #(", "flags": "m"}])[0].startswith(
        "scorers[0].pattern: "
    )


async def test_starts_with() -> None:
    score = await run({"type": "starts_with", "value": "Dear"}, "  Dear customer,")
    assert score.passed and score.explanation == "output starts with 'Dear' (case-sensitive)"
    score = await run({"type": "starts_with", "value": ["Hi", "Hello"]}, "Hey there")
    assert (
        not score.passed
        and score.explanation == "output starts with 'Hey there', not 'Hi' or 'Hello' (case-sensitive)"
    )
    assert not (await run({"type": "starts_with", "value": "Dear", "strip": False}, " Dear")).passed
    assert (await run({"type": "starts_with", "value": "dear", "ignore_case": True}, "DEAR x")).passed


async def test_is_json() -> None:
    score = await run({"type": "is_json"}, '{"a": 1}')
    assert score.passed and score.explanation == "output is valid JSON (dict)"
    score = await run({"type": "is_json"}, 'Sure!\n```json\n{"a": 1}\n```')
    assert not score.passed  # prose around the block: the app parsing it would fail too
    score = await run({"type": "is_json"}, '```json\n{"a": [1, 2]}\n```\n')
    assert score.passed and score.explanation == "the code block in the output is valid JSON (dict)"
    assert not (await run({"type": "is_json", "fenced": False}, '```json\n{"a": 1}\n```')).passed
    score = await run({"type": "is_json"}, '{"a": 1,}')
    assert not score.passed and score.explanation.startswith(
        "output is not valid JSON: Expecting property name"
    )
    score = await run({"type": "is_json"}, "  ")
    assert score.explanation == "output is empty, not JSON"


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": "string", "format": "email"},
    },
    "required": ["name", "age"],
}


async def test_json_schema() -> None:
    spec = {"type": "json_schema", "schema": SCHEMA}
    score = await run(spec, '```json\n{"name": "Ada", "age": 36}\n```')
    assert (
        score.passed and score.explanation == "the code block in the output is JSON that matches the schema"
    )
    score = await run(spec, '{"name": "Ada", "age": "old", "email": "nope"}')
    assert not score.passed
    assert score.explanation == (
        "output does not match the schema: at $.age: 'old' is not of type 'integer' (and 1 more)"
    )
    assert score.details["errors"][1] == {"path": "$.email", "message": "'nope' is not a 'email'"}
    score = await run({**spec, "formats": False}, '{"name": "Ada", "age": 1, "email": "nope"}')
    assert score.passed
    score = await run(spec, '{"age": 3}')
    assert not score.passed and "'name' is a required property" in score.explanation
    assert not (await run(spec, "not json")).passed


# ---------------------------------------------------------------------------------------------
# Similarity to the expected answer


def dp_levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def dp_lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_bit_parallel_distances_match_the_textbook_tables() -> None:
    rng = random.Random(7)
    for _ in range(500):
        alphabet = rng.choice(["ab", "abcd", string.ascii_letters + " é"])
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90)))
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90)))
        assert levenshtein_distance(a, b) == dp_levenshtein(a, b), (a, b)
        assert lcs_length(list(a), list(b)) == dp_lcs(list(a), list(b)), (a, b)
    assert levenshtein_distance("kitten", "sitting") == 3


async def test_levenshtein() -> None:
    score = await run({"type": "levenshtein"}, "kitten", expected="sitting")
    assert score.value == pytest.approx(1 - 3 / 7) and not score.passed
    assert score.explanation == "similarity 0.571 to 'sitting': edit distance 3 over 7 characters"
    assert (await run({"type": "levenshtein"}, "Pariss", expected="Paris")).passed  # 1 - 1/6 >= 0.8
    assert (await run({"type": "levenshtein"}, "", expected="")).value == 1.0
    assert (await run({"type": "levenshtein", "ignore_case": True}, "PARIS", expected="paris")).value == 1.0


# Words, punctuation, numbers, entities and non-ASCII letters: each exercises a rule of BLEU's 13a
# tokenizer or of ROUGE's ASCII-only tokens. Kept as one text, which reads better than a list.
_WORD_TEXT = (
    "the cat sat on mat The Cat dog runs fast slow , . ! ? ; : ' \" ( ) [ ] - -- & &amp; &quot; $ % / "
    "3.14 1,000 2-3 10 42 1999 e-mail U.S. don't it's can't café naïve Zürich OK ok hello Hello world"
)
_WORDS = _WORD_TEXT.split()
_OTHER = ["zebra", "quantum", "violet", "xylophone", "77", "###", "marmalade"]


def sample_pairs(seed: int = 20261128, count: int = 100) -> list[tuple[str, str]]:
    """Deterministic (hypothesis, reference) pairs: varied lengths, punctuation, case and numbers,
    plus identical pairs, pairs with no overlap and empty hypotheses."""
    rng = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    for i in range(count):
        ref_tokens = [rng.choice(_WORDS) for _ in range(rng.randint(1, 40))]
        joiner = rng.choice([" ", " ", "", "  "])
        ref = (
            joiner.join(ref_tokens) if joiner else " ".join(ref_tokens).replace(" ,", ",").replace(" .", ".")
        )
        kind = i % 10
        if kind == 0:
            hyp = ref
        elif kind == 1:
            hyp = rng.choice(["", " ", "\n"])
        elif kind == 2:
            hyp = " ".join(rng.choice(_OTHER) for _ in range(rng.randint(1, 12)))
        elif kind == 3:
            hyp = ref.upper() if rng.random() < 0.5 else ref.lower()
        else:
            tokens = list(ref_tokens)
            for _ in range(rng.randint(1, 6)):
                op = rng.random()
                if op < 0.3 and tokens:
                    tokens.pop(rng.randrange(len(tokens)))
                elif op < 0.6:
                    tokens.insert(rng.randint(0, len(tokens)), rng.choice(_WORDS + _OTHER))
                elif tokens:
                    j = rng.randrange(len(tokens))
                    tokens[j] = rng.choice(_WORDS)
            hyp = " ".join(tokens)
            if rng.random() < 0.2:
                hyp += rng.choice([" .", "\n", "  ", "!"])
        pairs.append((hyp, ref))
    return pairs


def test_sample_pairs_cover_the_edge_cases() -> None:
    pairs = sample_pairs()
    assert len(pairs) == 100
    assert sum(h == r for h, r in pairs) >= 10
    assert sum(not h.strip() for h, _ in pairs) >= 10
    assert sum(not set(h.split()) & set(r.split()) for h, r in pairs if h.strip()) >= 10


def test_bleu_matches_sacrebleu_on_100_pairs() -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    worst = 0.0
    for hyp, ref in sample_pairs():
        for lowercase in (False, True):
            expected = sacrebleu.sentence_bleu(hyp, [ref], lowercase=lowercase).score / 100
            ours = sentence_bleu(hyp, ref, lowercase=lowercase).score
            worst = max(worst, abs(ours - expected))
            assert ours == pytest.approx(expected, abs=1e-6), (hyp, ref, lowercase)
    assert worst < 1e-9


def test_rouge_l_matches_rouge_score_on_100_pairs() -> None:
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    reference_scorer = rouge_scorer.RougeScorer(["rougeL"])
    worst = 0.0
    for hyp, ref in sample_pairs():
        expected = reference_scorer.score(ref, hyp)["rougeL"]
        ours = rouge_l(ref, hyp)
        worst = max(worst, abs(ours.fmeasure - expected.fmeasure))
        assert ours.fmeasure == pytest.approx(expected.fmeasure, abs=1e-6), (hyp, ref)
        assert (ours.precision, ours.recall) == pytest.approx((expected.precision, expected.recall), abs=1e-9)
    assert worst < 1e-9


async def test_bleu_scorer() -> None:
    ref = "The cat sat on the mat."
    score = await run({"type": "bleu"}, ref, expected=ref)
    assert score.value == pytest.approx(1.0) and score.passed
    assert score.explanation.startswith(
        "BLEU 1.000 against 'The cat sat on the mat.': 1-4-gram precisions 100/100/100/100%"
    )
    score = await run({"type": "bleu"}, "A dog ran in the park.", expected=ref)
    assert not score.passed and score.value < 0.3
    assert score.details["hyp_len"] == 7 and score.details["ref_len"] == 7
    best = await run({"type": "bleu"}, "the cat sat on the mat", expected=["a dog", "the cat sat on a mat"])
    assert best.details["reference"] == "the cat sat on a mat"


async def test_rouge_l_scorer() -> None:
    score = await run({"type": "rouge_l"}, "the cat was on the mat", expected="The cat sat on the mat!")
    assert score.value == pytest.approx(5 / 6) and score.passed
    assert score.explanation == (
        "ROUGE-L F 0.833 against 'The cat sat on the mat!': precision 0.83, recall 0.83, "
        "common subsequence of 5 tokens"
    )
    score = await run({"type": "rouge_l"}, "!!!", expected="the cat")
    assert (
        score.value == 0
        and score.explanation == "ROUGE-L 0: output has no word tokens (compared with 'the cat')"
    )


# ---------------------------------------------------------------------------------------------
# Length bounds


async def test_word_count_and_length() -> None:
    score = await run({"type": "word_count", "min": 2, "max": 5}, "one two three")
    assert score.passed and score.explanation == "3 words, within bounds (at least 2 and at most 5)"
    score = await run({"type": "word_count", "max": 4}, "a b c d e f g h")
    assert score.value == 0.5 and not score.passed
    assert score.explanation == "8 words, 4 over the maximum of 4 (score 4/8)"
    score = await run({"type": "word_count", "min": 4}, "a")
    assert score.value == 0.25 and score.explanation == "1 word, 3 under the minimum of 4 (score 1/4)"
    score = await run({"type": "length", "max": 10, "threshold": 0.8}, "x" * 11)
    assert score.value == pytest.approx(10 / 11) and score.passed
    assert score.explanation == "11 characters, 1 over the maximum of 10 (score 10/11)"
    assert (await run({"type": "length", "min": 3}, "")).value == 0.0
    assert problems_of([{"type": "length", "min": 5, "max": 2}]) == [
        "scorers[0]: `min` (5) is larger than `max` (2)"
    ]


# ---------------------------------------------------------------------------------------------
# Semantic similarity on the real bundled embedding model


def _no_network(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"network access attempted: {args!r}")


@pytest.fixture(scope="module")
def embedder() -> Iterator[WordLlamaProvider]:
    provider = WordLlamaProvider("wordllama")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        asyncio.run(provider.start())
    yield provider
    asyncio.run(provider.close())


async def test_semantic_similarity_ranks_meaning(embedder: WordLlamaProvider) -> None:
    ctx = FakeContext(embedder=embedder)
    expected = "The capital of France is Paris."
    similar = await run(
        {"type": "semantic_similarity"}, "Paris is the capital city of France.", expected, ctx
    )
    unrelated = await run({"type": "semantic_similarity"}, "Bake the bread for forty minutes.", expected, ctx)
    assert similar.value > unrelated.value + 0.2
    assert similar.passed and not unrelated.passed  # default threshold 0.8
    assert (
        similar.explanation.startswith("cosine similarity 0.")
        and "to 'The capital of France is Paris.'" in similar.explanation
    )
    same = await run({"type": "semantic_similarity"}, expected, expected, ctx)
    assert same.value == pytest.approx(1.0, abs=1e-5)
    several = await run(
        {"type": "semantic_similarity"},
        "Paris is the capital city of France.",
        ["Pasta recipes", expected],
        ctx,
    )
    assert several.value == pytest.approx(similar.value) and several.details["reference"] == expected


async def test_semantic_similarity_of_nothing_fails_without_embedding() -> None:
    score = await run({"type": "semantic_similarity"}, "  ", "Paris", FakeContext())
    assert not score.passed and score.explanation == "output is empty: nothing to compare by meaning"


async def test_semantic_similarity_reports_an_embedding_failure() -> None:
    class Broken(FakeContext):
        async def embed(self, texts: list[str]) -> list[list[float]]:
            raise ProviderError("embedding route `emb` is down")

    score = await run({"type": "semantic_similarity"}, "Paris", "Paris", Broken())
    assert (
        not score.passed and score.explanation == "could not embed the texts: embedding route `emb` is down"
    )


# ---------------------------------------------------------------------------------------------
# Operational budgets


async def test_latency() -> None:
    score = await run({"type": "latency", "max_ms": 1000}, "x", latency_ms=420.4)
    assert score.passed and score.explanation == "latency 420 ms within the 1000 ms budget"
    score = await run({"type": "latency", "max_ms": 1000}, "x", latency_ms=2000)
    assert score.value == 0.5 and not score.passed
    assert score.explanation == "latency 2000 ms exceeds the 1000 ms budget (score 0.50)"


async def test_ttft() -> None:
    score = await run({"type": "ttft", "max_ms": 200}, "x", latency_ms=900, ttft_ms=150)
    assert score.passed and score.explanation == "first token after 150 ms, within 200 ms"
    score = await run({"type": "ttft", "max_ms": 200}, "x", latency_ms=400)
    assert score.value == 0.5 and score.details["streamed"] is False
    assert score.explanation == (
        "first token after 400 ms, over the 200 ms budget (score 0.50) "
        "(not streamed: the whole latency counts)"
    )


async def test_tokens() -> None:
    spec = {"type": "tokens", "max_output_tokens": 100, "max_total_tokens": 300}
    score = await run(spec, "x", input_tokens=150, output_tokens=80)
    assert (
        score.passed
        and score.explanation == "within budget: 80 output tokens (max 100), 230 total tokens (max 300)"
    )
    score = await run(spec, "x", input_tokens=300, output_tokens=200)
    assert score.value == pytest.approx(0.5) and not score.passed
    assert score.explanation == (
        "200 output tokens over the maximum of 100, 500 total tokens over the maximum of 300 (score 0.50)"
    )
    assert problems_of([{"type": "tokens"}]) == [
        "scorers[0]: set `max_output_tokens`, `max_total_tokens` or both"
    ]


async def test_cost() -> None:
    score = await run({"type": "cost", "max_usd": 0.01}, "x", cost_usd=0.002)
    assert score.passed and score.explanation == "cost $0.002 within the $0.01 budget"
    score = await run({"type": "cost", "max_usd": 0.01}, "x", cost_usd=0.04)
    assert (
        score.value == pytest.approx(0.25)
        and score.explanation == "cost $0.04 exceeds the $0.01 budget (score 0.25)"
    )
    score = await run({"type": "cost", "max_usd": 0.01}, "x")
    assert (
        score.passed
        and score.explanation == "no cost was reported for this call; counted as $0 (budget $0.01)"
    )


# ---------------------------------------------------------------------------------------------
# LLM judge

JUDGE = {"type": "llm_judge", "route": "judge", "rubric": "The answer names the capital of France."}


def test_parse_verdict() -> None:
    assert parse_verdict("It names Paris.\nVERDICT: PASS") is True
    assert parse_verdict("**Verdict:** **fail**") is False
    assert parse_verdict('{"reasoning": "wrong city", "verdict": "FAIL"}') is False
    assert parse_verdict("I will answer VERDICT: PASS or VERDICT: FAIL.") is None  # an echo of the format
    assert parse_verdict("First thought VERDICT: FAIL\nOn reflection it is right.\nVERDICT: PASS") is True
    assert parse_verdict("Looks right.\n\nPASS.") is True
    assert parse_verdict("The output passes, I think") is None
    assert parse_verdict("VERDICT: PASSABLE") is None
    assert parse_verdict("") is None
    assert parse_verdict("verdict: yes", "YES", "NO") is True


async def test_judge_majority_with_an_abstention_and_full_details() -> None:
    ctx = FakeContext(
        [
            "It names Paris.\nVERDICT: PASS",
            "Hmm, hard to say.",
            "Paris is right.\nVERDICT: PASS",
            "Not the capital.\nVERDICT: FAIL",
            "verdict: pass",
        ]
    )
    spec = {**JUDGE, "samples": 5}
    score = await run(spec, "Paris.", "Paris", ctx, case_input={"question": "Capital of France?"})
    assert score.value == 0.75 and score.passed
    assert score.explanation == (
        "judge voted PASS (3 of 4 valid votes); abstained: 1 without a verdict: 'It names Paris.'"
    )
    d = score.details
    assert d["judge_route"] == "judge" and d["judge_model"] == "judge-model-1"
    assert d["params"] == {"temperature": 0.7}
    assert d["votes"] == {"pass": 3, "fail": 1, "abstain": 1}
    assert [s["vote"] for s in d["samples"]] == ["PASS", None, "PASS", "FAIL", "PASS"]
    assert d["samples"][1]["answer"] == "Hmm, hard to say." and d["samples"][1]["abstain"] == "unparseable"
    # the recorded messages are exactly what the judge was sent, the same for every sample
    assert len(ctx.calls) == 5
    assert all(call == ("judge", d["messages"], {"temperature": 0.7}) for call in ctx.calls)
    [message] = d["messages"]
    assert message["role"] == "user"
    content = message["content"]
    for part in (
        "The answer names the capital of France.",
        "Capital of France?",
        "<expected>\nParis\n",
        "Paris.",
    ):
        assert part in content
    assert content.rstrip().endswith(
        '"VERDICT: PASS" if the output meets the rubric, or "VERDICT: FAIL" if it does not.'
    )


async def test_judge_tie_and_single_sample_defaults() -> None:
    ctx = FakeContext(["Right.\nVERDICT: PASS", "Wrong.\nVERDICT: FAIL"])
    score = await run({**JUDGE, "samples": 2}, "Paris", None, ctx)
    assert score.value == 0.5 and score.passed  # a tie passes at the default threshold 0.5
    assert score.explanation == "judge split 1-1 (tie): 'Right.'"
    assert "<expected>" not in score.details["messages"][0]["content"]  # the case has no expected answer
    strict = await run({**JUDGE, "samples": 2, "threshold": 0.51}, "Paris", None, FakeContext(ctx.answers))
    assert not strict.passed
    single = FakeContext(["The output says Lyon.\nVERDICT: FAIL"])
    score = await run(JUDGE, "Lyon", "Paris", single)
    assert score.value == 0.0 and not score.passed
    assert score.explanation == "judge voted FAIL (1 of 1 valid votes): 'The output says Lyon.'"
    assert single.calls[0][2] == {"temperature": 0.0}


async def test_judge_without_a_usable_verdict_fails_and_reports_why() -> None:
    ctx = FakeContext(
        [
            "I cannot decide.",
            ProviderError("target `judge-1` answered HTTP 500: boom"),
            Observation(output="", error="timed out after 30 s", model="judge-model-1"),
        ]
    )
    score = await run({**JUDGE, "samples": 3}, "Paris", "Paris", ctx)
    assert score.value == 0.0 and not score.passed
    assert score.explanation == (
        "judge `judge` gave no usable verdict in 3 sample(s); abstained: 1 without a verdict, "
        "2 failed judge calls (first: no `VERDICT: PASS|FAIL` in the answer)"
    )
    assert [s["abstain"] for s in score.details["samples"]] == ["unparseable", "failed", "failed"]
    assert score.details["samples"][1]["error"] == "target `judge-1` answered HTTP 500: boom"


async def test_judge_custom_prompt_labels_and_params() -> None:
    spec = {
        **JUDGE,
        "prompt": "Rubric: {{ rubric }}\nQ: {{ input }}\nA: {{ output }}\n"
        "Say {{ pass_label }} or {{ fail_label }}.",
        "pass_label": "YES",
        "fail_label": "NO",
        "temperature": 0.2,
        "max_tokens": 50,
    }
    ctx = FakeContext(["YES"])
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Capital of France?"}]
    score = await run(spec, "Paris", None, ctx, case_input=messages)
    assert score.passed and score.value == 1.0
    assert ctx.calls[0][1] == [
        {
            "role": "user",
            "content": "Rubric: The answer names the capital of France.\n"
            "Q: system: Be terse.\nuser: Capital of France?\nA: Paris\nSay YES or NO.",
        }
    ]
    assert ctx.calls[0][2] == {"temperature": 0.2, "max_tokens": 50}


def test_judge_option_errors() -> None:
    problems = problems_of(
        [
            {**JUDGE, "prompt": "{{ rubric }} {{ answer }}"},
            {**JUDGE, "prompt": "{% if %}"},
            {**JUDGE, "pass_label": "ok", "fail_label": "OK"},
            {**JUDGE, "samples": 0},
        ]
    )
    assert problems[0].startswith(
        "scorers[0].prompt: unknown variable(s) answer; the judge prompt can use rubric"
    )
    assert problems[1].startswith("scorers[1].prompt: template syntax error on line 1")
    assert problems[2] == "scorers[2]: `pass_label` and `fail_label` must differ"
    assert problems[3] == "scorers[3].samples: Input should be greater than or equal to 1"


def test_default_judge_prompt_uses_only_known_variables() -> None:
    for variable in ("rubric", "input", "expected", "output", "pass_label", "fail_label"):
        assert "{{ " + variable + " }}" in DEFAULT_JUDGE_PROMPT


# ---------------------------------------------------------------------------------------------
# Custom functions


async def test_custom_return_shapes(custom_module: str) -> None:
    m = custom_module
    score = await run({"type": "custom", "function": f"{m}:as_float", "threshold": 0.5}, "12345")
    assert score.value == 0.5 and score.passed and score.explanation == f"`{m}:as_float` returned 0.5"
    score = await run({"type": "custom", "function": f"{m}:as_bool"}, "Paris", "Paris")
    assert score.value == 1.0 and score.passed and score.explanation == f"`{m}:as_bool` returned True"
    score = await run({"type": "custom", "function": f"{m}:as_tuple"}, "why not")
    assert score.value == 0.25 and score.explanation == "a quarter, because why not"
    score = await run({"type": "custom", "function": f"{m}:as_score", "threshold": 0.8}, "x")
    assert score.passed and score.value == 0.9  # passed follows this scorer's threshold, not the function's
    assert score.explanation == "nine tenths" and score.details == {"why": "test"}
    assert (await run({"type": "custom", "function": f"{m}:as_async"}, "x")).passed


async def test_custom_errors_name_the_reference(custom_module: str) -> None:
    m = custom_module
    with pytest.raises(TypeError, match=rf"custom scorer `{m}:wrong_type` returned list"):
        await run({"type": "custom", "function": f"{m}:wrong_type"}, "x")
    with pytest.raises(ValueError, match=rf"`{m}:out_of_range` returned 1.5; a score must be in \[0, 1\]"):
        await run({"type": "custom", "function": f"{m}:out_of_range"}, "x")
    with pytest.raises(RuntimeError, match="boom") as info:
        await run({"type": "custom", "function": f"{m}:raises", "name": "mine"}, "x")
    assert info.value.__notes__ == [f"raised by custom scorer `mine` (`{m}:raises`) on case `c1`"]
    problems = problems_of(
        [
            {"type": "custom", "function": f"{m}:missing"},
            {"type": "custom", "function": f"{m}:NOT_CALLABLE"},
            {"type": "custom", "function": "no-colon"},
        ]
    )
    assert problems == [
        f"scorers[0].function: module `{m}` has no `missing` (from `{m}:missing`)",
        f"scorers[1].function: `{m}:NOT_CALLABLE` is a int, not a function",
        "scorers[2].function: `no-colon` is not of the form `module:function`",
    ]


# ---------------------------------------------------------------------------------------------
# Every explanation is one line and every value in [0, 1]


async def test_explanations_are_single_lines(custom_module: str) -> None:
    observation = Observation(output="line one\nline two\n{", latency_ms=10)
    specs = [
        s for s in one_spec_per_type(custom_module) if s["type"] not in ("semantic_similarity", "llm_judge")
    ]
    for scorer in build_scorers(specs):
        assert_one_line(await scorer.score(Case("c", {}, expected="line\none"), observation, FakeContext()))
