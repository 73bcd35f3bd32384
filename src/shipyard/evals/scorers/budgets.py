"""Operational budgets: latency, time to first token, tokens and cost of the call.

Over budget scores limit/actual rather than 0, so a slowly creeping cost or latency shows up as a
falling mean score before it fails a gate.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from shipyard.evals.core import Case, Observation, Score, ScoreContext, ScorerOptions
from shipyard.evals.scorers.base import BaseScorer


def _budget(actual: float, limit: float) -> float:
    """1 within the budget, else limit/actual: 10% over scores about 0.91, twice over 0.5."""
    if actual <= limit:
        return 1.0
    return limit / actual


def _scored(
    scorer: BaseScorer, actual: float, limit: float, shown: str, budget: str, details: dict[str, Any]
) -> Score:
    """The score of one measured amount against its budget; ``shown`` and ``budget`` are the two
    rendered with their units, for the explanation."""
    value = _budget(actual, limit)
    if value >= 1:
        return scorer.result(1.0, f"{shown} within the {budget} budget", details)
    return scorer.result(value, f"{shown} exceeds the {budget} budget (score {value:.2f})", details)


class LatencyOptions(ScorerOptions):
    max_ms: float = Field(gt=0, description="Latency budget of the whole call, in milliseconds.")


class LatencyScorer(BaseScorer):
    """1 when the call took at most ``max_ms``, else max_ms / latency."""

    type = "latency"
    options: LatencyOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        limit, actual = self.options.max_ms, observation.latency_ms
        details = {"latency_ms": actual, "max_ms": limit}
        return _scored(self, actual, limit, f"latency {actual:.0f} ms", f"{limit:g} ms", details)


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
        details = {"cost_usd": cost, "max_usd": limit}
        return _scored(self, cost, limit, f"cost ${cost:.6g}", f"${limit:g}", details)
