"""The built-in scorer types of eval suites, one module per family, and :func:`build_scorers`, which
turns a suite's ``scorers:`` entries into scorer instances.

Every scorer answers a :class:`~shipyard.evals.core.Score`: a value in [0, 1], ``passed = value >=
threshold`` and one line that says why. Graded scorers (similarity, bounds, budgets) keep partial
credit in the value so that a regression shows up as a smaller number before it becomes a failure.

Families: ``matching`` (equals, contains, not_contains, regex, starts_with), ``structured``
(is_json, json_schema), ``similarity`` (levenshtein, bleu, rouge_l), ``length`` (word_count,
length), ``embeddings`` (semantic_similarity), ``budgets`` (latency, ttft, tokens, cost),
``judge`` (llm_judge) and ``custom``; ``base`` holds what they share.

Types register through the ``register_scorers`` plugin hook, the same way third-party ones do:
``shipyard.plugins`` registers this package, so the hook implementation must be importable here.
"""

from __future__ import annotations

from shipyard.evals.scorers.base import (
    VALUE_HELP,
    BaseScorer,
    TextOrTexts,
    Unscorable,
    clip,
    expected_texts,
    one_line,
)
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
from shipyard.evals.scorers.build import build_scorers, register_scorers
from shipyard.evals.scorers.custom import CustomOptions, CustomScorer, resolve_function
from shipyard.evals.scorers.embeddings import SemanticSimilarityOptions, SemanticSimilarityScorer
from shipyard.evals.scorers.judge import (
    DEFAULT_JUDGE_PROMPT,
    JUDGE_VARIABLES,
    LlmJudgeOptions,
    LlmJudgeScorer,
    parse_verdict,
)
from shipyard.evals.scorers.length import BoundsOptions, BoundsScorer, LengthScorer, WordCountScorer
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
    BLEU_MAX_ORDER,
    BleuOptions,
    BleuResult,
    BleuScorer,
    LevenshteinOptions,
    LevenshteinScorer,
    RougeLOptions,
    RougeLScorer,
    RougeResult,
    bleu_tokenize,
    lcs_length,
    levenshtein_distance,
    rouge_l,
    rouge_tokenize,
    sentence_bleu,
)
from shipyard.evals.scorers.structured import (
    FENCED_HELP,
    IsJsonOptions,
    IsJsonScorer,
    JsonSchemaOptions,
    JsonSchemaScorer,
    parse_json_output,
)

__all__ = [
    "BLEU_MAX_ORDER",
    "DEFAULT_JUDGE_PROMPT",
    "FENCED_HELP",
    "JUDGE_VARIABLES",
    "VALUE_HELP",
    "BaseScorer",
    "BleuOptions",
    "BleuResult",
    "BleuScorer",
    "BoundsOptions",
    "BoundsScorer",
    "ContainsOptions",
    "ContainsScorer",
    "CostOptions",
    "CostScorer",
    "CustomOptions",
    "CustomScorer",
    "EqualsOptions",
    "EqualsScorer",
    "IsJsonOptions",
    "IsJsonScorer",
    "JsonSchemaOptions",
    "JsonSchemaScorer",
    "LatencyOptions",
    "LatencyScorer",
    "LengthScorer",
    "LevenshteinOptions",
    "LevenshteinScorer",
    "LlmJudgeOptions",
    "LlmJudgeScorer",
    "NotContainsOptions",
    "NotContainsScorer",
    "RegexOptions",
    "RegexScorer",
    "RougeLOptions",
    "RougeLScorer",
    "RougeResult",
    "SemanticSimilarityOptions",
    "SemanticSimilarityScorer",
    "StartsWithOptions",
    "StartsWithScorer",
    "TextOrTexts",
    "TokensOptions",
    "TokensScorer",
    "TtftOptions",
    "TtftScorer",
    "Unscorable",
    "WordCountScorer",
    "bleu_tokenize",
    "build_scorers",
    "clip",
    "expected_texts",
    "lcs_length",
    "levenshtein_distance",
    "one_line",
    "parse_json_output",
    "parse_verdict",
    "register_scorers",
    "resolve_function",
    "rouge_l",
    "rouge_tokenize",
    "sentence_bleu",
]
