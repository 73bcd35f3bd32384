"""Deterministic matchers: the output equals, contains, avoids, matches or starts with given texts.

Binary checks score 1 or 0; ``contains``/``not_contains`` in their counting modes keep partial
credit (the share found or absent), so a regression shows up as a smaller number first.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from shipyard.evals.core import Case, Observation, Score, ScoreContext, ScorerOptions
from shipyard.evals.scorers.base import (
    VALUE_HELP,
    BaseScorer,
    TextOrTexts,
    case_note,
    clip,
    expected_texts,
    fold,
    normalizer,
)


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
        norm = normalizer(o.ignore_case, o.strip)
        how = ", ".join([case_note(o.ignore_case)] + (["ignoring surrounding whitespace"] if o.strip else []))
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


def _search(
    case: Case, observation: Observation, value: str | list[str] | None, ignore_case: bool
) -> tuple[list[str], list[str], list[str], str]:
    """What ``contains`` and ``not_contains`` both look at: the texts searched for, those the output
    contains, those it lacks, and the note on case that ends their explanations."""
    needles = expected_texts(case, value)
    hay = fold(observation.output, ignore_case)
    inside = [n for n in needles if fold(n, ignore_case) in hay]
    outside = [n for n in needles if n not in inside]
    return needles, inside, outside, f"({case_note(ignore_case)})"


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
        needles, found, missing, note = _search(case, observation, o.value, o.ignore_case)
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
        needles, present, absent, note = _search(case, observation, o.value, o.ignore_case)
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
        output = fold(observation.output.lstrip() if o.strip else observation.output, o.ignore_case)
        note = f"({case_note(o.ignore_case)})"
        for prefix in prefixes:
            if output.startswith(fold(prefix, o.ignore_case)):
                return self.result(1.0, f"output starts with {clip(prefix)} {note}")
        wanted = " or ".join(clip(p, 30) for p in prefixes[:5])
        return self.result(0.0, f"output starts with {clip(observation.output, 30)}, not {wanted} {note}")
