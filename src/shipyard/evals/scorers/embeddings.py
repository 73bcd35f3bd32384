"""Semantic similarity: the output and the expected answer compared by meaning, through the
embedding model the runner's :class:`~shipyard.evals.core.ScoreContext` provides (offline by default)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import Field

from shipyard.errors import ShipyardError
from shipyard.evals.core import Case, Observation, Score, ScoreContext, ScorerOptions
from shipyard.evals.scorers.base import (
    VALUE_HELP,
    BaseScorer,
    TextOrTexts,
    Unscorable,
    against,
    expected_texts,
    one_line,
)


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
            f"cosine similarity {sims[best]:.3f} to {against(usable, usable[best])}",
            {"similarity": sims[best], "reference": usable[best]},
        )


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    # Normalised here too: a context's embed() is meant to return unit vectors, but a plugin's may not.
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return 0.0 if norm == 0 else dot / norm
