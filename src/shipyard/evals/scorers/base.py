"""What every scorer shares: :class:`BaseScorer`, the expected-answer rule and the helpers that keep
explanations one bounded line.

Where a scorer compares the output with "the expected answer", that is the case's ``expected``
unless the scorer sets ``value``; a list means several acceptable answers and the best one wins.
A failed target call (``observation.error``) fails every scorer, with an explanation that says so:
an error must never pass as "short enough" or "cheap enough".
"""

from __future__ import annotations

import abc
import json
import math
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator

from shipyard.evals.core import Case, Observation, Score, ScoreContext, ScorerOptions


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


def against(answers: list[str], best: str) -> str:
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


def fold(text: str, ignore_case: bool) -> str:
    # casefold, not lower: caseless matching should treat "Straße" and "STRASSE" alike.
    return text.casefold() if ignore_case else text


def case_note(ignore_case: bool) -> str:
    return "checked case-insensitively" if ignore_case else "case-sensitive"


def normalizer(ignore_case: bool, strip: bool) -> Callable[[str], str]:
    """The form both sides of a comparison take: folded when ``ignore_case``, trimmed when ``strip``."""

    def norm(text: str) -> str:
        return fold(text.strip() if strip else text, ignore_case)

    return norm
