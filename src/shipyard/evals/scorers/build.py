"""The built-in scorer types' registration, and :func:`build_scorers`, which turns a suite's
``scorers:`` entries into scorer instances with every problem reported at once."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from shipyard.errors import ConfigError
from shipyard.evals.core import Scorer, ScorerOptions, ScorerType
from shipyard.evals.scorers.base import BaseScorer
from shipyard.evals.scorers.budgets import (
    CostOptions,
    CostScorer,
    LatencyOptions,
    LatencyScorer,
    TokensOptions,
    TokensScorer,
    TtftOptions,
    TtftScorer,
)
from shipyard.evals.scorers.custom import CustomOptions, CustomScorer
from shipyard.evals.scorers.embeddings import SemanticSimilarityOptions, SemanticSimilarityScorer
from shipyard.evals.scorers.judge import LlmJudgeOptions, LlmJudgeScorer
from shipyard.evals.scorers.length import BoundsOptions, LengthScorer, WordCountScorer
from shipyard.evals.scorers.matching import (
    ContainsOptions,
    ContainsScorer,
    EqualsOptions,
    EqualsScorer,
    NotContainsOptions,
    NotContainsScorer,
    RegexOptions,
    RegexScorer,
    StartsWithOptions,
    StartsWithScorer,
)
from shipyard.evals.scorers.similarity import (
    BleuOptions,
    BleuScorer,
    LevenshteinOptions,
    LevenshteinScorer,
    RougeLOptions,
    RougeLScorer,
)
from shipyard.evals.scorers.structured import IsJsonOptions, IsJsonScorer, JsonSchemaOptions, JsonSchemaScorer
from shipyard.plugins import hookimpl, scorer_types

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
