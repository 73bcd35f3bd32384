"""The built-in scorer types of eval suites, and :func:`build_scorers`, which turns a suite's
``scorers:`` entries into scorer instances.

Every scorer answers a :class:`~shipyard.evals.core.Score`: a value in [0, 1], ``passed = value >=
threshold`` and one line that says why. Graded scorers (similarity, bounds, budgets) keep partial
credit in the value so that a regression shows up as a smaller number before it becomes a failure.

Where a scorer compares the output with "the expected answer", that is the case's ``expected``
unless the scorer sets ``value``; a list means several acceptable answers and the best one wins.
A failed target call (``observation.error``) fails every scorer, with an explanation that says so:
an error must never pass as "short enough" or "cheap enough".

BLEU and ROUGE-L are implemented here rather than imported, so that the metrics are part of the
runtime install; they reproduce ``sacrebleu.sentence_bleu`` and ``rouge_score``'s ``rougeL`` with
default settings (the tests check both on a hundred generated pairs).

Types register through the ``register_scorers`` plugin hook, the same way third-party ones do.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import inspect
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator, model_validator

from shipyard.errors import ConfigError, ShipyardError
from shipyard.evals.core import Case, Observation, Score, ScoreContext, Scorer, ScorerOptions, ScorerType
from shipyard.plugins import hookimpl, scorer_types
from shipyard.registry.prompts import Prompt, check_templates, variables_of

# ----------------------------------------------------------------------------------------------
# Shared pieces


class Unscorable(Exception):
    """Raised inside a scorer when the case cannot be scored (no expected answer, a judge that could
    not be reached…): the scorer answers a failing score with this message instead of crashing the run."""


def clip(text: str, limit: int = 60) -> str:
    """A quoted, one-line, bounded rendering of a text for explanations (repr escapes newlines)."""
    if len(text) > limit:
        return repr(text[:limit]) + "…"
    return repr(text)


def one_line(text: str, limit: int = 200) -> str:
    """Whitespace runs (newlines included) collapsed, and bounded: explanations are one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def _text_or_texts(value: Any) -> Any:
    """YAML gives numbers where people mean text (``value: 42``); accept them as their text, and
    give one clear message instead of pydantic's per-union-member errors."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    texts = isinstance(value, list) and value and all(isinstance(v, str | int | float) for v in value)
    if texts and not any(isinstance(v, bool) for v in value):
        return [str(v) for v in value]
    raise ValueError("must be a text or a non-empty list of texts")


TextOrTexts = Annotated[str | list[str] | None, BeforeValidator(_text_or_texts)]

VALUE_HELP = (
    "The expected answer, or a list of acceptable answers (the best match wins); default: the "
    "case's `expected`."
)


def expected_texts(case: Case, value: str | list[str] | None) -> list[str]:
    """The answers to compare with: the scorer's ``value`` when set, else the case's ``expected``."""
    raw: Any = case.expected if value is None else value
    source = f"case `{case.id}`'s `expected`" if value is None else "the scorer's `value`"
    if raw is None:
        raise Unscorable(f"case `{case.id}` has no expected answer; give it `expected` or set `value`")
    items = raw if isinstance(raw, list) else [raw]
    texts: list[str] = []
    for item in items:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, bool | int | float):
            texts.append(json.dumps(item))
        else:
            raise Unscorable(f"{source} must be a text or a list of texts, not {type(item).__name__}")
    if not texts:
        raise Unscorable(f"{source} is an empty list")
    return texts


def _against(answers: list[str], best: str) -> str:
    """How an explanation names the reference it compared with."""
    if len(answers) == 1:
        return clip(best)
    return f"{clip(best)} (best of {len(answers)} expected answers)"


class BaseScorer(abc.ABC):
    """Holds the options; turns a failed call or an :class:`Unscorable` case into a failing score,
    and keeps every value in [0, 1] so no scorer's arithmetic can leak out of range."""

    type: ClassVar[str]

    def __init__(self, options: ScorerOptions) -> None:
        self.options = options
        self.name: str = options.name or self.type
        self.threshold: float = options.threshold

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} threshold={self.threshold}>"

    async def score(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        if observation.error is not None:
            return self.result(
                0.0, f"the target call failed: {one_line(observation.error)}", {"error": observation.error}
            )
        try:
            return await self.evaluate(case, observation, ctx)
        except Unscorable as exc:
            return self.result(0.0, str(exc), {"unscorable": str(exc)})

    @abc.abstractmethod
    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        """The score of a successful call; raise :class:`Unscorable` when the case cannot be scored."""

    def result(self, value: float, explanation: str, details: dict[str, Any] | None = None) -> Score:
        value = float(value)
        value = 0.0 if math.isnan(value) else min(1.0, max(0.0, value))
        return Score(value, value >= self.threshold, one_line(explanation, 400), details or {})


def _fold(text: str, ignore_case: bool) -> str:
    # casefold, not lower: caseless matching should treat "Straße" and "STRASSE" alike.
    return text.casefold() if ignore_case else text


def _case_note(ignore_case: bool) -> str:
    return "checked case-insensitively" if ignore_case else "case-sensitive"


# ----------------------------------------------------------------------------------------------
# Deterministic text checks


class EqualsOptions(ScorerOptions):
    value: TextOrTexts = Field(None, description=VALUE_HELP)
    ignore_case: bool = Field(False, description="Compare case-insensitively.")
    strip: bool = Field(True, description="Ignore leading and trailing whitespace on both sides.")


class EqualsScorer(BaseScorer):
    """1 when the output equals an expected answer, else 0."""

    type = "equals"
    options: EqualsOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        o = self.options
        answers = expected_texts(case, o.value)

        def norm(text: str) -> str:
            return _fold(text.strip() if o.strip else text, o.ignore_case)

        how = ", ".join(
            [_case_note(o.ignore_case)] + (["ignoring surrounding whitespace"] if o.strip else [])
        )
        output = norm(observation.output)
        for answer in answers:
            if norm(answer) == output:
                return self.result(1.0, f"output equals the expected answer {clip(answer)} ({how})")
        if len(answers) == 1:
            why = f"output {clip(observation.output)} does not equal the expected {clip(answers[0])} ({how})"
        else:
            why = (
                f"output {clip(observation.output)} equals none of the {len(answers)} expected answers "
                f"({', '.join(clip(a, 30) for a in answers[:5])}) ({how})"
            )
        return self.result(0.0, why)


class ContainsOptions(ScorerOptions):
    value: TextOrTexts = Field(
        None, description="Text or list of texts to look for; default: the case's `expected`."
    )
    mode: Literal["any", "all"] = Field(
        "any",
        description="`any`: one of the texts is enough (score 1 or 0); `all`: every text must appear "
        "(score = share found).",
    )
    ignore_case: bool = Field(False, description="Search case-insensitively.")


class ContainsScorer(BaseScorer):
    """Substring search; with ``mode: all`` the score is the share of texts found."""

    type = "contains"
    options: ContainsOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        o = self.options
        needles = expected_texts(case, o.value)
        hay = _fold(observation.output, o.ignore_case)
        found = [n for n in needles if _fold(n, o.ignore_case) in hay]
        missing = [n for n in needles if n not in found]
        note = f"({_case_note(o.ignore_case)})"
        details = {"found": found, "missing": missing}
        if o.mode == "any" or len(needles) == 1:
            if found:
                return self.result(1.0, f"output contains {clip(found[0])} {note}", details)
            if len(needles) == 1:
                return self.result(0.0, f"output does not contain {clip(needles[0])} {note}", details)
            listed = ", ".join(clip(n, 30) for n in needles[:5])
            return self.result(0.0, f"output contains none of {listed} {note}", details)
        value = len(found) / len(needles)
        if not missing:
            return self.result(value, f"output contains all {len(needles)} texts {note}", details)
        listed = ", ".join(clip(n, 30) for n in missing[:5])
        return self.result(
            value, f"output lacks {len(missing)} of {len(needles)} texts: {listed} {note}", details
        )


class NotContainsOptions(ScorerOptions):
    value: TextOrTexts = Field(
        None, description="Text or list of texts that must not appear; default: the case's `expected`."
    )
    mode: Literal["any", "all"] = Field(
        "all",
        description="`all`: none of the texts may appear (score = share absent); `any`: it is enough "
        "that one of them is absent (score 1 or 0). The negation of `contains` with the other mode.",
    )
    ignore_case: bool = Field(False, description="Search case-insensitively.")


class NotContainsScorer(BaseScorer):
    """Forbidden texts: the negation of ``contains``."""

    type = "not_contains"
    options: NotContainsOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        o = self.options
        needles = expected_texts(case, o.value)
        hay = _fold(observation.output, o.ignore_case)
        present = [n for n in needles if _fold(n, o.ignore_case) in hay]
        absent = [n for n in needles if n not in present]
        note = f"({_case_note(o.ignore_case)})"
        details = {"present": present, "absent": absent}
        if not present:
            if len(needles) == 1:
                return self.result(1.0, f"output does not contain {clip(needles[0])} {note}", details)
            return self.result(
                1.0, f"output contains none of the {len(needles)} forbidden texts {note}", details
            )
        listed = ", ".join(clip(n, 30) for n in present[:5])
        if o.mode == "any":
            if absent:
                return self.result(
                    1.0, f"output contains {listed} but not {clip(absent[0])} (mode any) {note}", details
                )
            return self.result(0.0, f"output contains every forbidden text: {listed} {note}", details)
        value = len(absent) / len(needles)
        if len(needles) == 1:
            return self.result(value, f"output contains {clip(needles[0])} {note}", details)
        return self.result(
            value,
            f"output contains {len(present)} of {len(needles)} forbidden texts: {listed} {note}",
            details,
        )


_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


class RegexOptions(ScorerOptions):
    # `flags` comes first so that `pattern` is compiled with them: verbose mode changes how it parses.
    flags: str = Field(
        "",
        description="Letters of regex flags: `i` ignore case, `m` `^`/`$` at every line, `s` `.` "
        "matches newlines, `x` verbose.",
    )
    pattern: str = Field(
        description="Python regular expression, searched anywhere in the output (anchor it with `^` "
        "and `$`, or `\\A` and `\\Z`, to require a full match)."
    )

    @field_validator("flags")
    @classmethod
    def _known_flags(cls, flags: str) -> str:
        unknown = sorted(set(flags) - set(_REGEX_FLAGS))
        if unknown:
            raise ValueError(f"unknown flag(s) {', '.join(unknown)}; use letters from `imsx`")
        return flags

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str, info: ValidationInfo) -> str:
        try:
            re.compile(pattern, _flag_bits(info.data.get("flags", "")))
        except re.error as exc:
            raise ValueError(f"does not compile: {exc}") from None
        return pattern

    def compiled(self) -> re.Pattern[str]:
        return re.compile(self.pattern, _flag_bits(self.flags))


def _flag_bits(flags: str) -> int:
    bits = 0
    for letter in flags:
        bits |= _REGEX_FLAGS[letter]
    return bits


class RegexScorer(BaseScorer):
    """1 when the pattern matches somewhere in the output, else 0."""

    type = "regex"
    options: RegexOptions

    def __init__(self, options: RegexOptions) -> None:
        super().__init__(options)
        self.pattern = options.compiled()

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        shown = f"/{self.options.pattern}/{self.options.flags}"
        match = self.pattern.search(observation.output)
        if match is None:
            return self.result(0.0, f"output does not match {shown}")
        return self.result(
            1.0,
            f"output matches {shown} at {match.start()}: {clip(match.group(0))}",
            {"match": match.group(0)},
        )


class StartsWithOptions(ScorerOptions):
    value: TextOrTexts = Field(
        None, description="Prefix, or list of acceptable prefixes; default: the case's `expected`."
    )
    ignore_case: bool = Field(False, description="Compare case-insensitively.")
    strip: bool = Field(True, description="Ignore whitespace at the start of the output.")


class StartsWithScorer(BaseScorer):
    """1 when the output starts with an expected prefix, else 0."""

    type = "starts_with"
    options: StartsWithOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        o = self.options
        prefixes = expected_texts(case, o.value)
        output = _fold(observation.output.lstrip() if o.strip else observation.output, o.ignore_case)
        note = f"({_case_note(o.ignore_case)})"
        for prefix in prefixes:
            if output.startswith(_fold(prefix, o.ignore_case)):
                return self.result(1.0, f"output starts with {clip(prefix)} {note}")
        wanted = " or ".join(clip(p, 30) for p in prefixes[:5])
        return self.result(0.0, f"output starts with {clip(observation.output, 30)}, not {wanted} {note}")


# A whole output that is one Markdown code block, as chat models like to wrap JSON.
_FENCE = re.compile(r"\A\s*```[\w+-]*[ \t]*\r?\n(.*?)\r?\n?```\s*\Z", re.DOTALL)


def parse_json_output(output: str, fenced: bool) -> tuple[Any, str]:
    """The JSON document in the output and how it was found; raises Unscorable when there is none."""
    if not output.strip():
        raise Unscorable("output is empty, not JSON")
    try:
        return json.loads(output), "output"
    except json.JSONDecodeError as exc:
        error = exc
    match = _FENCE.match(output) if fenced else None
    if match is not None:
        try:
            return json.loads(match.group(1)), "the code block in the output"
        except json.JSONDecodeError as exc:
            raise Unscorable(f"the code block in the output is not valid JSON: {exc}") from None
    raise Unscorable(f"output is not valid JSON: {error} (starts {clip(output, 30)})")


FENCED_HELP = (
    "Also accept an output that is one Markdown code block (```json … ```), as chat models often "
    "wrap JSON in one."
)


class IsJsonOptions(ScorerOptions):
    fenced: bool = Field(True, description=FENCED_HELP)


class IsJsonScorer(BaseScorer):
    """1 when the output parses as JSON, else 0."""

    type = "is_json"
    options: IsJsonOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        document, where = parse_json_output(observation.output, self.options.fenced)
        return self.result(1.0, f"{where} is valid JSON ({type(document).__name__})")


class JsonSchemaOptions(ScorerOptions):
    schema_: dict[str, Any] = Field(
        alias="schema",
        description="JSON Schema (inline) the output must validate against; its `$schema` picks the "
        "draft (default: the latest jsonschema supports).",
    )
    formats: bool = Field(
        True, description="Check `format` keywords too (date-time, email, uri…), not only types."
    )
    fenced: bool = Field(True, description=FENCED_HELP)

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        # Imported here: every process that loads the plugins (the gateway too) imports this module.
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            raise ValueError(f"not a valid JSON Schema at {where}: {exc.message}") from None
        return schema


class JsonSchemaScorer(BaseScorer):
    """1 when the output is JSON that validates against the schema, else 0; the errors go to details."""

    type = "json_schema"
    options: JsonSchemaOptions

    def __init__(self, options: JsonSchemaOptions) -> None:
        super().__init__(options)
        import jsonschema

        cls = jsonschema.validators.validator_for(options.schema_)
        checker = cls.FORMAT_CHECKER if options.formats else None
        self.validator = cls(options.schema_, format_checker=checker)

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        document, where = parse_json_output(observation.output, self.options.fenced)
        errors = sorted(self.validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
        if not errors:
            return self.result(1.0, f"{where} is JSON that matches the schema")
        found = [{"path": e.json_path, "message": e.message} for e in errors[:20]]
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return self.result(
            0.0,
            f"{where} does not match the schema: at {first.json_path}: {one_line(first.message, 150)}{more}",
            {"errors": found, "error_count": len(errors)},
        )


# ----------------------------------------------------------------------------------------------
# Similarity to the expected answer


def levenshtein_distance(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), by Myers' bit-parallel algorithm in
    Hyyrö's formulation: one pass over ``a`` with ``b``'s column held in an integer's bits, so long
    outputs cost O(len(a) * len(b) / 64) machine work instead of a quadratic table in Python."""
    if a == b:
        return 0
    # Common ends never change the distance and are common between a model's output and its reference.
    start = 0
    while start < len(a) and start < len(b) and a[start] == b[start]:
        start += 1
    a, b = a[start:], b[start:]
    end = 0
    while end < len(a) and end < len(b) and a[-1 - end] == b[-1 - end]:
        end += 1
    if end:
        a, b = a[:-end], b[:-end]
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, ch in enumerate(b):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    full = (1 << m) - 1
    high = 1 << (m - 1)
    pv, mv, dist = full, 0, m
    for ch in a:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & full)
        mh = pv & xh
        if ph & high:
            dist += 1
        elif mh & high:
            dist -= 1
        ph = ((ph << 1) | 1) & full
        mh = (mh << 1) & full
        pv = mh | (~(xv | ph) & full)
        mv = ph & xv
    return dist


class LevenshteinOptions(ScorerOptions):
    value: TextOrTexts = Field(None, description=VALUE_HELP)
    threshold: float = Field(
        0.8, ge=0, le=1, description="A case passes when similarity (1 - distance / longer length) >= this."
    )
    ignore_case: bool = Field(False, description="Compare case-insensitively.")
    strip: bool = Field(True, description="Ignore leading and trailing whitespace on both sides.")


class LevenshteinScorer(BaseScorer):
    """Character-level similarity: 1 - edit distance / length of the longer text."""

    type = "levenshtein"
    options: LevenshteinOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        o = self.options
        answers = expected_texts(case, o.value)

        def norm(text: str) -> str:
            return _fold(text.strip() if o.strip else text, o.ignore_case)

        output = norm(observation.output)
        best: tuple[float, int, int, str] | None = None
        for answer in answers:
            ref = norm(answer)
            longest = max(len(ref), len(output))
            distance = levenshtein_distance(output, ref)
            similarity = 1.0 if longest == 0 else 1 - distance / longest
            if best is None or similarity > best[0]:
                best = (similarity, distance, longest, answer)
        assert best is not None
        similarity, distance, longest, answer = best
        return self.result(
            similarity,
            f"similarity {similarity:.3f} to {_against(answers, answer)}: edit distance {distance} over "
            f"{longest} characters",
            {"distance": distance, "length": longest, "reference": answer},
        )


# --- BLEU: sacrebleu's sentence_bleu with its defaults (13a tokenizer, exp smoothing, effective order)

# mteval-v13a's tokenization as sacrebleu's TokenizerRegexp writes it, rule for rule.
_BLEU_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # punctuation and symbols
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless preceded by a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... unless followed by a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
)
BLEU_MAX_ORDER = 4


def bleu_tokenize(line: str, lowercase: bool = False) -> list[str]:
    """sacrebleu's ``13a`` tokens of one segment (after its own lowercasing and rstrip)."""
    if lowercase:
        line = line.lower()
    line = line.rstrip()
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, repl in _BLEU_RULES:
        line = pattern.sub(repl, line)
    return line.split()


def _ngrams(tokens: list[str], max_order: int) -> Counter[tuple[str, ...]]:
    return Counter(
        tuple(tokens[i : i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1)
    )


@dataclass(frozen=True, slots=True)
class BleuResult:
    score: float  # in [0, 1] (sacrebleu reports 100 times this)
    precisions: tuple[float, ...]  # per n-gram order, in [0, 1], smoothed as the score used them
    brevity_penalty: float
    hyp_len: int
    ref_len: int


def sentence_bleu(hypothesis: str, reference: str, lowercase: bool = False) -> BleuResult:
    """Sentence BLEU of one hypothesis against one reference, as ``sacrebleu.sentence_bleu(hyp,
    [ref])`` computes it: exp smoothing (NIST's, as mteval-v13a) and effective order, so a short
    sentence is not zeroed by the orders it is too short to have."""
    hyp = bleu_tokenize(hypothesis, lowercase)
    ref = bleu_tokenize(reference, lowercase)
    hyp_ngrams, ref_ngrams = _ngrams(hyp, BLEU_MAX_ORDER), _ngrams(ref, BLEU_MAX_ORDER)
    correct = [0] * BLEU_MAX_ORDER
    total = [0] * BLEU_MAX_ORDER
    for ngram, count in hyp_ngrams.items():
        total[len(ngram) - 1] += count
        if ngram in ref_ngrams:
            correct[len(ngram) - 1] += min(count, ref_ngrams[ngram])
    sys_len, ref_len = len(hyp), len(ref)
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    # Precisions in percent, with sacrebleu's very operations, so the floating-point result is identical.
    percent = [0.0] * BLEU_MAX_ORDER
    if not any(correct):
        return BleuResult(0.0, tuple(percent), bp, sys_len, ref_len)
    smooth = 1.0
    order = BLEU_MAX_ORDER
    for n in range(1, BLEU_MAX_ORDER + 1):
        if total[n - 1] == 0:
            break
        order = n
        if correct[n - 1] == 0:
            smooth *= 2
            percent[n - 1] = 100.0 / (smooth * total[n - 1])
        else:
            percent[n - 1] = 100.0 * correct[n - 1] / total[n - 1]
    logs = [math.log(p) if p > 0 else -9999999999 for p in percent[:order]]
    score = bp * math.exp(sum(logs) / order) / 100.0
    return BleuResult(score, tuple(p / 100.0 for p in percent), bp, sys_len, ref_len)


class BleuOptions(ScorerOptions):
    value: TextOrTexts = Field(
        None,
        description="Reference, or list of references each scored on its own (the best wins, unlike "
        "multi-reference BLEU); default: the case's `expected`.",
    )
    threshold: float = Field(0.3, ge=0, le=1, description="A case passes when BLEU (0-1) >= this.")
    lowercase: bool = Field(False, description="Lowercase both sides first (sacrebleu's `lowercase`).")


class BleuScorer(BaseScorer):
    """Sentence BLEU in [0, 1], identical to sacrebleu's ``sentence_bleu(...).score / 100``."""

    type = "bleu"
    options: BleuOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        answers = expected_texts(case, self.options.value)
        results = [(sentence_bleu(observation.output, a, self.options.lowercase), a) for a in answers]
        best, answer = max(results, key=lambda r: r[0].score)
        precisions = "/".join(f"{100 * p:.0f}" for p in best.precisions)
        return self.result(
            best.score,
            f"BLEU {best.score:.3f} against {_against(answers, answer)}: 1-4-gram precisions {precisions}%, "
            f"brevity penalty {best.brevity_penalty:.2f} ({best.hyp_len} vs {best.ref_len} tokens)",
            {
                "precisions": list(best.precisions),
                "brevity_penalty": best.brevity_penalty,
                "hyp_len": best.hyp_len,
                "ref_len": best.ref_len,
                "reference": answer,
            },
        )


# --- ROUGE-L: rouge_score's rougeL F-measure with its default tokenizer (no stemming)

_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


def rouge_tokenize(text: str) -> list[str]:
    """rouge_score's default tokens: lowercase ASCII letters and digits; everything else separates.
    (Its replace-then-split-then-filter comes to exactly these runs.)"""
    return _ROUGE_TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison-Dix / Hyyrö): one integer of
    len(b) bits carries a whole table row, so each token of ``a`` costs a few big-integer operations."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, token in enumerate(b):
        masks[token] = masks.get(token, 0) | (1 << i)
    full = (1 << len(b)) - 1
    row = full
    for token in a:
        u = row & masks.get(token, 0)
        row = ((row + u) | (row - u)) & full
    return len(b) - row.bit_count()


@dataclass(frozen=True, slots=True)
class RougeResult:
    fmeasure: float
    precision: float
    recall: float
    lcs: int


def rouge_l(reference: str, hypothesis: str) -> RougeResult:
    """ROUGE-L of a hypothesis against a reference, as ``RougeScorer(["rougeL"]).score(ref, hyp)``."""
    ref, hyp = rouge_tokenize(reference), rouge_tokenize(hypothesis)
    if not ref or not hyp:
        return RougeResult(0.0, 0.0, 0.0, 0)
    lcs = lcs_length(ref, hyp)
    precision, recall = lcs / len(hyp), lcs / len(ref)
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return RougeResult(f, precision, recall, lcs)


class RougeLOptions(ScorerOptions):
    value: TextOrTexts = Field(None, description=VALUE_HELP)
    threshold: float = Field(0.5, ge=0, le=1, description="A case passes when the ROUGE-L F-measure >= this.")


class RougeLScorer(BaseScorer):
    """ROUGE-L F-measure (longest common subsequence of word tokens), as rouge-score computes it."""

    type = "rouge_l"
    options: RougeLOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        answers = expected_texts(case, self.options.value)
        results = [(rouge_l(a, observation.output), a) for a in answers]
        best, answer = max(results, key=lambda r: r[0].fmeasure)
        if not rouge_tokenize(observation.output):
            why = f"ROUGE-L 0: output has no word tokens (compared with {_against(answers, answer)})"
        else:
            why = (
                f"ROUGE-L F {best.fmeasure:.3f} against {_against(answers, answer)}: precision "
                f"{best.precision:.2f}, recall {best.recall:.2f}, common subsequence of {best.lcs} tokens"
            )
        return self.result(
            best.fmeasure,
            why,
            {"precision": best.precision, "recall": best.recall, "lcs": best.lcs, "reference": answer},
        )


# ----------------------------------------------------------------------------------------------
# Length bounds


class BoundsOptions(ScorerOptions):
    min: int | None = Field(
        None, ge=0, description="Smallest acceptable count; below it the score is count/min."
    )
    max: int | None = Field(
        None, ge=0, description="Largest acceptable count; above it the score is max/count."
    )

    @model_validator(mode="after")
    def _bounds(self) -> BoundsOptions:
        if self.min is None and self.max is None:
            raise ValueError("set `min`, `max` or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"`min` ({self.min}) is larger than `max` ({self.max})")
        return self


class BoundsScorer(BaseScorer):
    """Score 1 inside [min, max]; outside, the ratio of the bound to the count (or the count to the
    bound), so 10% too long scores about 0.9 and an empty answer against a minimum scores 0."""

    unit: ClassVar[str]
    options: BoundsOptions

    @abc.abstractmethod
    def count(self, output: str) -> int:
        """What is bounded: words, characters…"""

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        lo, hi = self.options.min, self.options.max
        n = self.count(observation.output)
        counted = f"{n} {self.unit.removesuffix('s') if n == 1 else self.unit}"
        details = {"count": n, "min": lo, "max": hi}
        if lo is not None and n < lo:
            return self.result(
                n / lo, f"{counted}, {lo - n} under the minimum of {lo} (score {n}/{lo})", details
            )
        if hi is not None and n > hi:
            return self.result(
                hi / n, f"{counted}, {n - hi} over the maximum of {hi} (score {hi}/{n})", details
            )
        bounds = " and ".join(
            ([f"at least {lo}"] if lo is not None else []) + ([f"at most {hi}"] if hi is not None else [])
        )
        return self.result(1.0, f"{counted}, within bounds ({bounds})", details)


class WordCountScorer(BoundsScorer):
    """Words (whitespace-separated) in the output, within bounds."""

    type = "word_count"
    unit = "words"

    def count(self, output: str) -> int:
        return len(output.split())


class LengthScorer(BoundsScorer):
    """Characters in the output, within bounds."""

    type = "length"
    unit = "characters"

    def count(self, output: str) -> int:
        return len(output)


# ----------------------------------------------------------------------------------------------
# Semantic similarity


class SemanticSimilarityOptions(ScorerOptions):
    value: TextOrTexts = Field(None, description=VALUE_HELP)
    threshold: float = Field(
        0.8, ge=0, le=1, description="A case passes when the cosine similarity (clamped to 0-1) >= this."
    )


class SemanticSimilarityScorer(BaseScorer):
    """Cosine similarity of the output's and the expected answer's embeddings (the runner's offline
    embedding model), clamped to [0, 1]: meaning rather than wording."""

    type = "semantic_similarity"
    options: SemanticSimilarityOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        answers = expected_texts(case, self.options.value)
        if not observation.output.strip():
            raise Unscorable("output is empty: nothing to compare by meaning")
        usable = [a for a in answers if a.strip()]
        if not usable:
            raise Unscorable("the expected answer is empty: nothing to compare by meaning")
        try:
            vectors = await ctx.embed([observation.output, *usable])
        except ShipyardError as exc:
            raise Unscorable(f"could not embed the texts: {one_line(exc.message)}") from None
        out, refs = vectors[0], vectors[1:]
        sims = [_cosine(out, ref) for ref in refs]
        best = max(range(len(sims)), key=sims.__getitem__)
        return self.result(
            sims[best],
            f"cosine similarity {sims[best]:.3f} to {_against(usable, usable[best])}",
            {"similarity": sims[best], "reference": usable[best]},
        )


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    # Normalised here too: a context's embed() is meant to return unit vectors, but a plugin's may not.
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return 0.0 if norm == 0 else dot / norm


# ----------------------------------------------------------------------------------------------
# Operational budgets


def _budget(actual: float, limit: float) -> float:
    """1 within the budget, else limit/actual: 10% over scores about 0.91, twice over 0.5."""
    if actual <= limit:
        return 1.0
    return limit / actual


class LatencyOptions(ScorerOptions):
    max_ms: float = Field(gt=0, description="Latency budget of the whole call, in milliseconds.")


class LatencyScorer(BaseScorer):
    """1 when the call took at most ``max_ms``, else max_ms / latency."""

    type = "latency"
    options: LatencyOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        limit, actual = self.options.max_ms, observation.latency_ms
        value = _budget(actual, limit)
        details = {"latency_ms": actual, "max_ms": limit}
        if value >= 1:
            return self.result(1.0, f"latency {actual:.0f} ms within the {limit:g} ms budget", details)
        return self.result(
            value, f"latency {actual:.0f} ms exceeds the {limit:g} ms budget (score {value:.2f})", details
        )


class TtftOptions(ScorerOptions):
    max_ms: float = Field(gt=0, description="Time-to-first-token budget, in milliseconds.")


class TtftScorer(BaseScorer):
    """1 when the first token came within ``max_ms``, else max_ms / ttft. A call that was not
    streamed has no separate first token: its whole latency counts (that is when the client saw it)."""

    type = "ttft"
    options: TtftOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        limit = self.options.max_ms
        if observation.ttft_ms is None:
            actual, note = observation.latency_ms, " (not streamed: the whole latency counts)"
        else:
            actual, note = observation.ttft_ms, ""
        value = _budget(actual, limit)
        details = {"ttft_ms": actual, "max_ms": limit, "streamed": observation.ttft_ms is not None}
        if value >= 1:
            return self.result(1.0, f"first token after {actual:.0f} ms, within {limit:g} ms{note}", details)
        return self.result(
            value,
            f"first token after {actual:.0f} ms, over the {limit:g} ms budget (score {value:.2f}){note}",
            details,
        )


class TokensOptions(ScorerOptions):
    max_output_tokens: int | None = Field(None, ge=0, description="Budget for the answer's tokens.")
    max_total_tokens: int | None = Field(None, ge=0, description="Budget for prompt plus answer tokens.")

    @model_validator(mode="after")
    def _some_budget(self) -> TokensOptions:
        if self.max_output_tokens is None and self.max_total_tokens is None:
            raise ValueError("set `max_output_tokens`, `max_total_tokens` or both")
        return self


class TokensScorer(BaseScorer):
    """1 within every token budget set; otherwise the worst budget/actual ratio."""

    type = "tokens"
    options: TokensOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        o = self.options
        total = observation.input_tokens + observation.output_tokens
        checks: list[tuple[str, int, int]] = []
        if o.max_output_tokens is not None:
            checks.append(("output tokens", observation.output_tokens, o.max_output_tokens))
        if o.max_total_tokens is not None:
            checks.append(("total tokens", total, o.max_total_tokens))
        details = {"input_tokens": observation.input_tokens, "output_tokens": observation.output_tokens}
        over = [(what, n, limit) for what, n, limit in checks if n > limit]
        if not over:
            within = ", ".join(f"{n} {what} (max {limit})" for what, n, limit in checks)
            return self.result(1.0, f"within budget: {within}", details)
        value = min(limit / n for _, n, limit in over)
        listed = ", ".join(f"{n} {what} over the maximum of {limit}" for what, n, limit in over)
        return self.result(value, f"{listed} (score {value:.2f})", details)


class CostOptions(ScorerOptions):
    max_usd: float = Field(ge=0, description="Budget of one call, in US dollars.")


class CostScorer(BaseScorer):
    """1 when the call cost at most ``max_usd``, else max_usd / cost. A call without a known cost
    (a local model, a model without prices) counts as free, and the explanation says so."""

    type = "cost"
    options: CostOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        limit = self.options.max_usd
        if observation.cost_usd is None:
            return self.result(
                1.0,
                f"no cost was reported for this call; counted as $0 (budget ${limit:g})",
                {"cost_usd": None},
            )
        cost = observation.cost_usd
        value = _budget(cost, limit)
        details = {"cost_usd": cost, "max_usd": limit}
        if value >= 1:
            return self.result(1.0, f"cost ${cost:.6g} within the ${limit:g} budget", details)
        return self.result(
            value, f"cost ${cost:.6g} exceeds the ${limit:g} budget (score {value:.2f})", details
        )


# ----------------------------------------------------------------------------------------------
# Model-graded: LLM as a judge

DEFAULT_JUDGE_PROMPT = """\
You are a strict, impartial grader. Decide whether the OUTPUT of an AI system meets the RUBRIC.

RUBRIC:
{{ rubric }}

INPUT given to the system:
<input>
{{ input }}
</input>
{% if expected %}
EXPECTED ANSWER (a reference; the output need not match it word for word):
<expected>
{{ expected }}
</expected>
{% endif %}
OUTPUT to grade:
<output>
{{ output }}
</output>

Reply with one short sentence of reasoning, then a final line that is exactly \
"VERDICT: {{ pass_label }}" if the output meets the rubric, or "VERDICT: {{ fail_label }}" if it does not.
"""

JUDGE_VARIABLES = ("rubric", "input", "expected", "output", "pass_label", "fail_label")


class LlmJudgeOptions(ScorerOptions):
    route: str = Field(description="Gateway route of the judge model.")
    rubric: str = Field(description="What a good output does, in words the judge can check.")
    samples: int = Field(
        1,
        ge=1,
        le=25,
        description="Judge answers per case; the majority decides (an odd number avoids ties).",
    )
    temperature: float | None = Field(
        None,
        ge=0,
        le=2,
        description="Judge sampling temperature; default 0 for one sample and 0.7 for several "
        "(identical samples would make the vote pointless).",
    )
    max_tokens: int | None = Field(None, ge=1, description="Cap on each judge answer; default: the route's.")
    pass_label: str = Field("PASS", description="Verdict word for an output that meets the rubric.")
    fail_label: str = Field("FAIL", description="Verdict word for an output that does not.")
    prompt: str | None = Field(
        None,
        description="Custom judge prompt (Jinja2, sent as one user message) using any of "
        "`{{ rubric }}`, `{{ input }}`, `{{ expected }}` (empty when the case has none), `{{ output }}`, "
        "`{{ pass_label }}`, `{{ fail_label }}`; it must ask for a last line `VERDICT: <label>`.",
    )
    threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A case passes when the share of pass votes among valid votes >= this (at 0.5 a "
        "tie passes; use an odd `samples` to avoid ties).",
    )

    @field_validator("pass_label", "fail_label")
    @classmethod
    def _label(cls, label: str) -> str:
        label = label.strip()
        if not label or "\n" in label:
            raise ValueError("must be a non-empty single-line word")
        return label

    @field_validator("prompt")
    @classmethod
    def _template(cls, prompt: str | None) -> str | None:
        if prompt is None:
            return None
        messages = [{"role": "user", "content": prompt}]
        problems = check_templates(messages)
        if problems:
            raise ValueError(problems[0].removeprefix("messages[0].content: "))
        unknown = [v for v in variables_of(messages) if v not in JUDGE_VARIABLES]
        if unknown:
            raise ValueError(
                f"unknown variable(s) {', '.join(unknown)}; "
                f"the judge prompt can use {', '.join(JUDGE_VARIABLES)}"
            )
        return prompt

    @model_validator(mode="after")
    def _distinct_labels(self) -> LlmJudgeOptions:
        if self.pass_label.casefold() == self.fail_label.casefold():
            raise ValueError("`pass_label` and `fail_label` must differ")
        return self


def parse_verdict(answer: str, pass_label: str = "PASS", fail_label: str = "FAIL") -> bool | None:
    """True for pass, False for fail, None when the answer gives no clear verdict (an abstention).

    Accepted: a ``VERDICT: <label>`` anywhere (markdown, quotes or JSON around it are fine; the last
    one wins, as models sometimes restate the format before answering), else a last line that is just
    a label. A line that names both labels (an echo of the instructions) is not a verdict.
    """
    labels = f"({re.escape(pass_label)}|{re.escape(fail_label)})"
    pattern = re.compile(rf"verdict\W{{0,6}}{labels}(?!\w)", re.IGNORECASE)
    matches = list(pattern.finditer(answer))
    if matches:
        last = matches[-1]
        line_start = answer.rfind("\n", 0, last.start()) + 1
        line_end = answer.find("\n", last.end())
        line = answer[line_start : None if line_end < 0 else line_end]
        said = {m.group(1).casefold() for m in pattern.finditer(line)}
        if len(said) > 1:
            return None
        return last.group(1).casefold() == pass_label.casefold()
    lines = [ln.strip(" \t*_`'\".:!#>-[]()") for ln in answer.strip().splitlines()]
    lines = [ln for ln in lines if ln]
    if lines:
        word = lines[-1].casefold()
        if word == pass_label.casefold():
            return True
        if word == fail_label.casefold():
            return False
    return None


def _render_input(value: Any) -> str:
    """A case's input as the judge should read it: chat messages as ``role: content`` lines, a single
    template variable as its text, several as ``name: value`` lines."""
    if isinstance(value, list):
        lines = []
        for m in value:
            if isinstance(m, dict):
                content = m.get("content")
                if isinstance(content, list):  # content parts: keep the text ones
                    content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
                lines.append(f"{m.get('role', 'user')}: {content}")
            else:
                lines.append(str(m))
        return "\n".join(lines)
    if isinstance(value, dict):
        if len(value) == 1:
            only = next(iter(value.values()))
            return only if isinstance(only, str) else json.dumps(only, ensure_ascii=False)
        return "\n".join(
            f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}" for k, v in value.items()
        )
    return "" if value is None else str(value)


def _render_expected(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "Any of:\n" + "\n".join(f"- {v}" for v in value)
    return json.dumps(value, ensure_ascii=False, indent=2)


class LlmJudgeScorer(BaseScorer):
    """A judge model grades the output against a rubric with a binary verdict, ``samples`` times.

    Design: pass/fail labels rather than a 1-5 scale, because a binary verdict is what a CI gate
    needs and what small judges answer most consistently; graded nuance comes from the vote share.
    The score is the share of pass votes among the valid votes; an answer without a clear verdict,
    or a judge call that failed, is an abstention (reported, not counted). No valid vote at all
    scores 0. ``details`` keeps what reproduces the verdict: route, judge model, the exact messages
    and params sent, and every raw answer with its parsed vote.
    """

    type = "llm_judge"
    options: LlmJudgeOptions

    def __init__(self, options: LlmJudgeOptions) -> None:
        super().__init__(options)
        template = options.prompt if options.prompt is not None else DEFAULT_JUDGE_PROMPT
        self.prompt = Prompt.from_spec(
            f"{self.name}-judge", 1, "", {"messages": [{"role": "user", "content": template}]}
        )

    def params(self) -> dict[str, Any]:
        o = self.options
        temperature = o.temperature if o.temperature is not None else (0.0 if o.samples == 1 else 0.7)
        params: dict[str, Any] = {"temperature": temperature}
        if o.max_tokens is not None:
            params["max_tokens"] = o.max_tokens
        return params

    def messages(self, case: Case, observation: Observation) -> list[dict[str, Any]]:
        o = self.options
        variables = {
            "rubric": o.rubric.strip(),
            "input": _render_input(case.input),
            "expected": _render_expected(case.expected),
            "output": observation.output,
            "pass_label": o.pass_label,
            "fail_label": o.fail_label,
        }
        return self.prompt.render(variables)

    async def _ask(
        self, ctx: ScoreContext, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> dict[str, Any]:
        """One judge sample: its raw answer, parsed vote (a label, or None for an abstention) and,
        for an abstention, why: ``failed`` (the judge call failed) or ``unparseable``."""
        o = self.options
        try:
            answer = await ctx.complete(o.route, [dict(m) for m in messages], **params)
        except ShipyardError as exc:
            return {"answer": None, "vote": None, "abstain": "failed", "error": exc.message, "model": None}
        if answer.error is not None:
            return {
                "answer": answer.output or None,
                "vote": None,
                "abstain": "failed",
                "error": answer.error,
                "model": answer.model,
            }
        vote = parse_verdict(answer.output, o.pass_label, o.fail_label)
        if vote is None:
            return {
                "answer": answer.output,
                "vote": None,
                "abstain": "unparseable",
                "error": f"no `VERDICT: {o.pass_label}|{o.fail_label}` in the answer",
                "model": answer.model,
            }
        return {
            "answer": answer.output,
            "vote": o.pass_label if vote else o.fail_label,
            "model": answer.model,
        }

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        o = self.options
        messages = self.messages(case, observation)
        params = self.params()
        samples = await asyncio.gather(*(self._ask(ctx, messages, params) for _ in range(o.samples)))
        passes = sum(1 for s in samples if s["vote"] == o.pass_label)
        fails = sum(1 for s in samples if s["vote"] == o.fail_label)
        failed_calls = sum(1 for s in samples if s.get("abstain") == "failed")
        unparseable = sum(1 for s in samples if s.get("abstain") == "unparseable")
        models = [s["model"] for s in samples if s["model"]]
        details: dict[str, Any] = {
            "judge_route": o.route,
            "judge_model": models[0] if models else None,
            "messages": messages,
            "params": params,
            "samples": samples,
            "votes": {"pass": passes, "fail": fails, "abstain": o.samples - passes - fails},
        }
        abstained = []
        if unparseable:
            abstained.append(f"{unparseable} without a verdict")
        if failed_calls:
            abstained.append(f"{failed_calls} failed judge call{'s' if failed_calls > 1 else ''}")
        abstain_note = f"; abstained: {', '.join(abstained)}" if abstained else ""
        valid = passes + fails
        if valid == 0:
            first_error = next((s["error"] for s in samples if s.get("error")), "")
            return self.result(
                0.0,
                f"judge `{o.route}` gave no usable verdict in {o.samples} sample(s){abstain_note}"
                + (f" (first: {one_line(first_error, 120)})" if first_error else ""),
                details,
            )
        value = passes / valid
        if passes == fails:
            verdict = f"judge split {passes}-{fails} (tie)"
            majority = None
        else:
            majority = o.pass_label if passes > fails else o.fail_label
            verdict = f"judge voted {majority} ({max(passes, fails)} of {valid} valid votes)"
        reason = ""
        for s in samples:
            if s["vote"] is not None and (majority is None or s["vote"] == majority):
                reason = _reasoning(s["answer"])
                break
        return self.result(
            value, f"{verdict}{abstain_note}" + (f": {clip(reason, 120)}" if reason else ""), details
        )


_VERDICT_LINE = re.compile(r"^.*verdict\W.*$", re.IGNORECASE | re.MULTILINE)


def _reasoning(answer: str) -> str:
    """The judge's reasoning without the verdict line, flattened for a one-line explanation."""
    return one_line(_VERDICT_LINE.sub("", answer), 400)


# ----------------------------------------------------------------------------------------------
# Custom: a Python function


def resolve_function(ref: str) -> Callable[..., Any]:
    """``package.module:function`` (or ``module:Class.method``) to the callable; ValueError naming
    the reference when it cannot be imported."""
    module_name, sep, attr_path = ref.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"`{ref}` is not of the form `module:function`")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is this reference's problem
        raise ValueError(
            f"cannot import module `{module_name}` for `{ref}`: {type(exc).__name__}: {exc}"
        ) from None
    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module `{module_name}` has no `{attr_path}` (from `{ref}`)") from None
    if not callable(target):
        raise ValueError(f"`{ref}` is a {type(target).__name__}, not a function")
    return target


class CustomOptions(ScorerOptions):
    function: str = Field(
        description="`module:function` to call with (case, observation), sync or async; it returns a "
        "float in [0, 1], a bool, a (float, explanation) tuple or a Score. The module must be importable "
        "(installed, or on PYTHONPATH)."
    )

    @field_validator("function")
    @classmethod
    def _importable(cls, ref: str) -> str:
        resolve_function(ref)
        return ref


class CustomScorer(BaseScorer):
    """Your own Python function as a scorer. ``passed`` is always value >= this scorer's threshold
    (a returned Score's own ``passed`` is recomputed), so a suite's threshold means the same for all.
    A sync function runs on the event loop: make slow ones async."""

    type = "custom"
    options: CustomOptions

    def __init__(self, options: CustomOptions) -> None:
        super().__init__(options)
        self.function = resolve_function(options.function)

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        ref = self.options.function
        try:
            returned = self.function(case, observation)
            if inspect.isawaitable(returned):
                returned = await returned
        except Exception as exc:
            exc.add_note(f"raised by custom scorer `{self.name}` (`{ref}`) on case `{case.id}`")
            raise
        value, explanation, details = self._unpack(returned)
        if not math.isfinite(value) or not 0 <= value <= 1:
            raise ValueError(f"custom scorer `{ref}` returned {value!r}; a score must be in [0, 1]")
        return self.result(value, explanation or f"`{ref}` returned {value:g}", details)

    def _unpack(self, returned: Any) -> tuple[float, str, dict[str, Any]]:
        ref = self.options.function
        if isinstance(returned, Score):
            return float(returned.value), returned.explanation, returned.details
        if isinstance(returned, bool):
            return float(returned), f"`{ref}` returned {returned}", {}
        if isinstance(returned, int | float):
            return float(returned), "", {}
        if (
            isinstance(returned, tuple)
            and len(returned) == 2
            and isinstance(returned[0], int | float)
            and isinstance(returned[1], str)
        ):
            return float(returned[0]), returned[1], {}
        raise TypeError(
            f"custom scorer `{ref}` returned {type(returned).__name__} {clip(repr(returned), 40)}; it must "
            "return a float in [0, 1], a bool, a (float, str) tuple or a Score"
        )


# ----------------------------------------------------------------------------------------------
# Registration and construction from suite files

_BUILTIN: tuple[tuple[type[BaseScorer], type[ScorerOptions]], ...] = (
    (EqualsScorer, EqualsOptions),
    (ContainsScorer, ContainsOptions),
    (NotContainsScorer, NotContainsOptions),
    (RegexScorer, RegexOptions),
    (StartsWithScorer, StartsWithOptions),
    (IsJsonScorer, IsJsonOptions),
    (JsonSchemaScorer, JsonSchemaOptions),
    (LevenshteinScorer, LevenshteinOptions),
    (BleuScorer, BleuOptions),
    (RougeLScorer, RougeLOptions),
    (WordCountScorer, BoundsOptions),
    (LengthScorer, BoundsOptions),
    (SemanticSimilarityScorer, SemanticSimilarityOptions),
    (LatencyScorer, LatencyOptions),
    (TtftScorer, TtftOptions),
    (TokensScorer, TokensOptions),
    (CostScorer, CostOptions),
    (LlmJudgeScorer, LlmJudgeOptions),
    (CustomScorer, CustomOptions),
)


def _summary(cls: type) -> str:
    """A scorer class's first docstring paragraph, as one Markdown line for the generated reference."""
    first = (inspect.getdoc(cls) or "").split("\n\n")[0]
    return " ".join(first.split()).replace("``", "`")


@hookimpl
def register_scorers() -> list[ScorerType]:
    return [ScorerType(cls.type, options, cls, _summary(cls)) for cls, options in _BUILTIN]


def _problem(where: str, error: Mapping[str, Any], known: list[str]) -> str:
    loc = ".".join(str(p) for p in error.get("loc", ()))
    at = f"{where}.{loc}" if loc else where
    kind = error.get("type")
    if kind == "extra_forbidden":
        return f"{at}: unknown option; known options: type, {', '.join(known)}"
    if kind == "missing":
        return f"{at}: required"
    message = str(error.get("msg", "invalid"))
    return f"{at}: {message.removeprefix('Value error, ')}"


def build_scorers(specs: Sequence[Mapping[str, Any]]) -> list[Scorer]:
    """Scorer instances from a suite's ``scorers:`` entries (``{type: contains, value: Paris}``).

    Names default to the type, numbered when a type repeats (``contains``, ``contains-2``) and never
    clash with explicit names. Every bad entry is reported at once in a ConfigError, one problem per
    field as ``scorers[i].field: …``.
    """
    types = scorer_types()
    known_types = ", ".join(sorted(types))
    problems: list[str] = []
    built: list[tuple[int, ScorerType, ScorerOptions]] = []
    for i, spec in enumerate(specs):
        where = f"scorers[{i}]"
        if not isinstance(spec, Mapping):
            problems.append(f"{where}: must be a mapping with a `type` (got {type(spec).__name__})")
            continue
        type_name = spec.get("type")
        if type_name is None:
            problems.append(f"{where}.type: required; known types: {known_types}")
            continue
        stype = types.get(str(type_name))
        if stype is None:
            problems.append(f"{where}.type: unknown scorer type `{type_name}`; known types: {known_types}")
            continue
        try:
            options = stype.options.model_validate({k: v for k, v in spec.items() if k != "type"})
        except ValidationError as exc:
            fields = [info.alias or name for name, info in stype.options.model_fields.items()]
            problems.extend(_problem(where, e, fields) for e in exc.errors())
            continue
        built.append((i, stype, options))

    taken: dict[str, int] = {}
    for i, _, options in built:
        if options.name is None:
            continue
        if options.name in taken:
            problems.append(
                f"scorers[{i}].name: `{options.name}` is already used by scorers[{taken[options.name]}]"
            )
        else:
            taken[options.name] = i
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the suite's scorers", problems)

    scorers: list[Scorer] = []
    for i, stype, options in built:
        if options.name is None:
            name, n = stype.name, 1
            while name in taken:
                n += 1
                name = f"{stype.name}-{n}"
            taken[name] = i
            options = options.model_copy(update={"name": name})
        try:
            scorers.append(stype.factory(options))
        except (ValueError, TypeError) as exc:
            problems.append(f"scorers[{i}]: {exc}")
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the suite's scorers", problems)
    return scorers
