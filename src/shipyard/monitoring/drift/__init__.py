"""Drift detection: is the traffic a route gets now different from the traffic it got before?

A check compares two samples of a route's successful traces, a *reference* and a *current* one,
each chosen by a window spec (grammar in :data:`SPEC_GRAMMAR`), on:

(a) prompt and response embeddings (WordLlama, offline): MMD with an RBF kernel and a permutation
    p-value;
(b) prompt and response length (characters), input and output tokens and latency: Kolmogorov–Smirnov
    statistic and p-value, and the population stability index (PSI);
(c) topics: k-means over the pooled prompt embeddings; each cluster's share of the reference and of
    the current sample, with keywords and example prompts.

The verdict: the p-values of (a) and (b) are Bonferroni-corrected (each multiplied by the number of
p-value tests that ran); the route drifted when a corrected p-value is at most ``alpha``, or when a
PSI reaches ``psi_threshold`` with samples large enough for PSI to be trusted (see
:func:`shipyard.monitoring.stats.psi_noise`). Every statistic is recorded in ``drift_reports``.

Too few traces in either sample (below ``min_samples``) raise :class:`InsufficientSamples`; no
report is written, so a quiet route does not fill the table with empty reports.

The modules, in the order a check uses them: ``windows`` (window specs and their parsing),
``sampling`` (drawing a sample, the features of a trace, embeddings), ``checks`` (the statistical
tests and the verdict), ``report`` (the stored report and its metrics), ``runner`` (one check end
to end, and the schedule's :class:`DriftConfig`). Import from here: the background scheduler and
the alert rules use :class:`DriftConfig`, :func:`run_drift` and :meth:`DriftReport.metrics`, and
their names and signatures are stable.
"""

from shipyard.monitoring.drift.checks import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_PSI_THRESHOLD,
    compare,
    one_blas_thread,
)
from shipyard.monitoring.drift.report import DriftReport, get_report, latest_report, list_reports
from shipyard.monitoring.drift.runner import DriftConfig, InsufficientSamples, run_config, run_drift
from shipyard.monitoring.drift.sampling import (
    DEFAULT_MAX_SAMPLES,
    NUMERIC_FEATURES,
    Sample,
    embed_texts,
    load_sample,
    prompt_text,
)
from shipyard.monitoring.drift.windows import (
    DEFAULT_CURRENT,
    DEFAULT_REFERENCE,
    SPEC_GRAMMAR,
    WindowSpec,
    join_offset,
    parse_spec,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CURRENT",
    "DEFAULT_MAX_SAMPLES",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_PSI_THRESHOLD",
    "DEFAULT_REFERENCE",
    "NUMERIC_FEATURES",
    "SPEC_GRAMMAR",
    "DriftConfig",
    "DriftReport",
    "InsufficientSamples",
    "Sample",
    "WindowSpec",
    "compare",
    "embed_texts",
    "get_report",
    "join_offset",
    "latest_report",
    "list_reports",
    "load_sample",
    "one_blas_thread",
    "parse_spec",
    "prompt_text",
    "run_config",
    "run_drift",
]
