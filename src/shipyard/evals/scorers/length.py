"""Length bounds: words or characters of the output within [min, max], with partial credit outside."""

from __future__ import annotations

import abc
from typing import ClassVar

from pydantic import Field, model_validator

from shipyard.evals.core import Case, Observation, Score, ScoreContext, ScorerOptions
from shipyard.evals.scorers.base import BaseScorer


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
