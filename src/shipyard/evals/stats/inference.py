"""The statistics an eval gate and its reports stand on: the Wilson interval of a pass rate, the
exact McNemar test of a paired comparison, and a paired bootstrap of mean scores.

The interval and the binomial tail come from SciPy (``binomtest``), not from formulas of our own:
``tests/test_eval_stats.py`` checks them against the closed-form Wilson interval and exact rational
binomial sums on a grid, so the numbers a gate decides on are the textbook ones.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy.stats import binomtest, norm


# Cached: SciPy's binomtest also computes a p-value nobody asked for (about a millisecond), and
# reports and dashboard lists ask for the same few intervals many times.
@functools.lru_cache(maxsize=4096)
def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``k`` successes in ``n`` trials.

    Chosen over the normal ("Wald") interval because eval suites are often small and pass rates
    close to 1, where Wald's interval collapses to zero width or leaves [0, 1]. ``n == 0`` gives the
    uninformative (0, 1). ``z`` is the normal quantile (1.96: 95%), turned into the confidence
    level SciPy takes so that the interval is the one for exactly this ``z``.
    """
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"wilson: k={k} must lie in [0, n={n}]")
    confidence = 1.0 - 2.0 * float(norm.sf(z))
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (max(0.0, float(ci.low)), min(1.0, float(ci.high)))


def mcnemar_exact(b: int, c: int, alternative: Literal["worse", "two-sided"] = "worse") -> float:
    """Exact McNemar test on the discordant pairs of a paired comparison.

    ``b`` counts cases that passed in the baseline and fail now (regressions), ``c`` cases that
    failed before and pass now (improvements). Under the null hypothesis a discordant case is as
    likely to go either way, so ``b ~ Binomial(b + c, 1/2)``.

    - ``"worse"`` (the default, and what :func:`~shipyard.evals.stats.compare`'s gate uses): the
      one-sided p-value P(X >= b), i.e. how surprising this many regressions would be if the current
      run were no worse.
    - ``"two-sided"``: min(1, 2 * min(P(X >= b), P(X <= b))), for reporting a change either way.

    No discordant pairs (b + c == 0) is no evidence at all: p = 1.
    """
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact: counts must be >= 0 (b={b}, c={c})")
    n = b + c
    if n == 0:
        return 1.0
    upper = float(binomtest(b, n, 0.5, alternative="greater").pvalue)
    if alternative == "worse":
        return upper
    if alternative == "two-sided":
        lower = float(binomtest(b, n, 0.5, alternative="less").pvalue)
        return min(1.0, 2.0 * min(upper, lower))
    raise ValueError(f"mcnemar_exact: alternative must be 'worse' or 'two-sided', not {alternative!r}")


def paired_bootstrap(
    baseline: Sequence[float] | np.ndarray,
    current: Sequence[float] | np.ndarray,
    n_resamples: int = 10000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float, float]:
    """Paired bootstrap of the mean per-case score difference ``current - baseline``.

    Returns ``(mean_delta, ci_lo, ci_hi, p_worse)``: the observed mean difference, a percentile
    confidence interval for it, and the share of resampled means below zero (ties at exactly zero
    count half), i.e. the bootstrap's estimate of the probability that the current run is worse.
    Identical runs give ``(0, 0, 0, 0.5)``. Both sequences list the same cases in the same order.

    The resampled means come from multinomial counts over the distinct differences when there are
    few of them (the common case: binary scorers, most cases unchanged), which is exact and cheap;
    otherwise from index draws in chunks, so memory stays bounded for 50,000-case runs.
    """
    b = np.asarray(baseline, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    if b.ndim != 1 or b.shape != c.shape:
        raise ValueError(f"paired_bootstrap: paired 1-d sequences needed, got shapes {b.shape} and {c.shape}")
    if n_resamples < 1:
        raise ValueError("paired_bootstrap: n_resamples must be >= 1")
    n = b.size
    if n == 0:
        return (0.0, 0.0, 0.0, 0.5)
    d = c - b
    mean_delta = float(d.mean())
    rng = np.random.default_rng(seed)
    values, counts = np.unique(d, return_counts=True)
    if values.size * 4 <= n:
        draws = rng.multinomial(n, counts / n, size=n_resamples)
        means = (draws @ values) / n
    else:
        means = np.empty(n_resamples, dtype=np.float64)
        chunk = max(1, 4_000_000 // n)  # ~32 MB of indices per chunk
        for start in range(0, n_resamples, chunk):
            stop = min(n_resamples, start + chunk)
            idx = rng.integers(0, n, size=(stop - start, n), dtype=np.int64)
            means[start:stop] = d[idx].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    p_worse = (np.count_nonzero(means < 0) + 0.5 * np.count_nonzero(means == 0)) / n_resamples
    return (mean_delta, float(lo), float(hi), float(p_worse))
