"""Statistics over eval results: streaming summaries (``summary``), confidence intervals and tests
(``inference``) and baseline comparisons (``comparison``). Everything a reporter, the runner or a
page needs is importable from here."""

from __future__ import annotations

from shipyard.evals.stats.comparison import (
    COMPARISON_FORMAT,
    CaseChange,
    Comparison,
    ScorerDelta,
    compare,
)
from shipyard.evals.stats.inference import mcnemar_exact, paired_bootstrap, wilson
from shipyard.evals.stats.summary import (
    HISTOGRAM_BINS,
    MAX_EXPLANATION_CHARS,
    SUMMARY_FORMAT,
    VERDICTS,
    CaseFailure,
    ScorerSummary,
    Summarizer,
    Summary,
    TargetSummary,
    Verdict,
    iter_results,
    summarize,
)

__all__ = [
    "COMPARISON_FORMAT",
    "HISTOGRAM_BINS",
    "MAX_EXPLANATION_CHARS",
    "SUMMARY_FORMAT",
    "VERDICTS",
    "CaseChange",
    "CaseFailure",
    "Comparison",
    "ScorerDelta",
    "ScorerSummary",
    "Summarizer",
    "Summary",
    "TargetSummary",
    "Verdict",
    "compare",
    "iter_results",
    "mcnemar_exact",
    "paired_bootstrap",
    "summarize",
    "wilson",
]
