"""Two-sample statistics behind drift detection, in numpy (and scipy for the KS distribution).

- :func:`mmd_test`: maximum mean discrepancy between two sets of embeddings, RBF kernel with the
  median-heuristic bandwidth, p-value from a seeded permutation test.
- :func:`ks_test`: two-sample Kolmogorov–Smirnov, exactly ``scipy.stats.ks_2samp`` (two-sided,
  ``method="auto"``: the exact distribution up to 10,000 values a side, the asymptotic one above).
- :func:`psi`: population stability index over quantile bins of the reference.
- :func:`kmeans` and :func:`cluster_keywords`: the topic view (which kinds of prompt grew or shrank).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PSI_BINS = 10
PSI_EPSILON = 1e-4
DEFAULT_PERMUTATIONS = 500
MAX_PERMUTATIONS = 20000
# Permutations are scored in blocks: one (pooled x block) matrix product each, bounded memory.
_PERMUTATION_BLOCK = 512


@dataclass
class TestResult:
    statistic: float
    p_value: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


# -- MMD --------------------------------------------------------------------------------------------
def permutations_for(n_tests: int, alpha: float) -> int:
    """Enough permutations that the smallest p-value a permutation test can give, 1/(B+1), is at
    most half the Bonferroni level alpha/n_tests: with too few, a real shift could never be
    significant after the correction."""
    needed = math.ceil(2 * max(n_tests, 1) / alpha)
    return int(min(max(DEFAULT_PERMUTATIONS, needed), MAX_PERMUTATIONS))


def _rbf_gram(z: np.ndarray) -> tuple[np.ndarray, float]:
    """RBF kernel matrix (float32) of the pooled sample and its bandwidth sigma^2 (median
    heuristic: the median squared distance between distinct pooled points)."""
    z = np.asarray(z, dtype=np.float32)
    sq = np.einsum("ij,ij->i", z, z)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    np.maximum(d2, 0.0, out=d2)
    upper = d2[np.triu(np.ones(d2.shape, dtype=bool), 1)]
    sigma2 = float(np.median(upper)) if upper.size else 0.0
    if sigma2 <= 0.0:
        # More than half the pairs coincide (many identical texts): fall back to the mean distance
        # so the kernel still separates the points that differ.
        mean = float(upper.mean()) if upper.size else 0.0
        sigma2 = mean if mean > 0 else 1.0
    d2 *= np.float32(-0.5 / sigma2)
    np.exp(d2, out=d2)
    return d2, sigma2


def mmd_test(
    x: np.ndarray, y: np.ndarray, *, permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0
) -> TestResult:
    """Unbiased MMD^2 between samples ``x`` (m x d) and ``y`` (n x d), with a permutation p-value.

    The pooled kernel matrix is computed once; every permutation's MMD^2 then needs only the sums
    of the kernel over the X-X, X-Y and Y-Y blocks, which for a batch of label vectors P (B x N)
    are one matrix product: S_xx = diag(P K P^T), S_x = P K 1. p = (1 + #{perm >= observed}) / (1 + B).
    """
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("MMD needs at least 2 points in each sample")
    kernel, sigma2 = _rbf_gram(np.concatenate([np.asarray(x), np.asarray(y)]))
    np.fill_diagonal(kernel, 0.0)  # the unbiased estimator leaves out i == j
    row_sums = kernel.sum(axis=1, dtype=np.float64)
    total = float(row_sums.sum())
    r32 = row_sums.astype(np.float32)

    def mmd2(labels: np.ndarray) -> np.ndarray:
        """MMD^2 for each row of ``labels`` (B x N, 1.0 where a point is in X)."""
        s_xx = np.einsum("bn,nb->b", labels, kernel @ labels.T).astype(np.float64)
        s_x = (labels @ r32).astype(np.float64)
        s_xy = s_x - s_xx
        s_yy = total - 2.0 * s_x + s_xx
        return s_xx / (m * (m - 1)) + s_yy / (n * (n - 1)) - 2.0 * s_xy / (m * n)

    observed_labels = np.zeros((1, m + n), dtype=np.int8)
    observed_labels[0, :m] = 1
    observed = float(mmd2(observed_labels.astype(np.float32))[0])
    # The reported statistic in float64; the permutation comparison uses the float32 value above,
    # computed like every permuted one.
    s_xx, s_yy = kernel[:m, :m].sum(dtype=np.float64), kernel[m:, m:].sum(dtype=np.float64)
    s_xy = kernel[:m, m:].sum(dtype=np.float64)
    statistic = float(s_xx / (m * (m - 1)) + s_yy / (n * (n - 1)) - 2.0 * s_xy / (m * n))
    rng = np.random.default_rng(seed)
    exceed = 0
    done = 0
    while done < permutations:
        block = min(_PERMUTATION_BLOCK, permutations - done)
        labels = rng.permuted(np.repeat(observed_labels, block, axis=0), axis=1).astype(np.float32)
        exceed += int(np.count_nonzero(mmd2(labels) >= observed))
        done += block
    p_value = (1 + exceed) / (1 + permutations)
    return TestResult(
        statistic=statistic,
        p_value=p_value,
        detail={
            "kernel": "rbf",
            "sigma2": sigma2,
            "permutations": permutations,
            "min_p": 1 / (1 + permutations),
            "estimator": "unbiased",
        },
    )


# -- KS and PSI -------------------------------------------------------------------------------------
def ks_test(reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray) -> TestResult:
    """Two-sided two-sample Kolmogorov–Smirnov test, as ``scipy.stats.ks_2samp(ref, cur)``.

    ``sign`` is +1 when the reference's distribution function is above the current's at the
    point of largest difference (the current values tend to be larger), -1 otherwise.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    from scipy import stats as sps  # imported when used: it costs seconds at every CLI start

    res = sps.ks_2samp(ref, cur, alternative="two-sided", method="auto")
    return TestResult(
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
        detail={"location": float(res.statistic_location), "sign": int(res.statistic_sign)},
    )


def psi(
    reference: Sequence[float] | np.ndarray,
    current: Sequence[float] | np.ndarray,
    *,
    bins: int = PSI_BINS,
    epsilon: float = PSI_EPSILON,
) -> TestResult:
    """Population stability index: sum over bins of (q - p) * ln(q / p).

    Bin edges are the reference's quantiles at 1/bins … (bins-1)/bins (numpy's linear
    interpolation), duplicates merged, so each bin holds about 1/bins of the reference; a value
    equal to an edge goes to the bin above it. p and q are the reference and current shares of
    each bin, each raised to at least ``epsilon`` so an empty bin does not make the index infinite.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("PSI needs values in both samples")
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    n_bins = len(edges) + 1
    p = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=n_bins) / ref.size
    q = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=n_bins) / cur.size
    p = np.maximum(p, epsilon)
    q = np.maximum(q, epsilon)
    value = float(np.sum((q - p) * np.log(q / p)))
    return TestResult(
        statistic=value,
        detail={
            "bins": n_bins,
            "edges": [float(e) for e in edges],
            "reference_shares": [round(float(v), 6) for v in p],
            "current_shares": [round(float(v), 6) for v in q],
            "epsilon": epsilon,
        },
    )


def psi_noise(n_bins: int, n_reference: int, n_current: int) -> float:
    """The PSI two samples from the same distribution show on average, (bins - 1)(1/n_ref + 1/n_cur):
    PSI is asymptotically that times a chi-square with bins - 1 degrees of freedom. Small samples
    give large PSI by chance alone."""
    return (n_bins - 1) * (1.0 / n_reference + 1.0 / n_current)


# -- topics -----------------------------------------------------------------------------------------
def kmeans(
    x: np.ndarray, k: int, *, seed: int = 0, n_init: int = 3, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding; the best of ``n_init`` seeded starts (lowest
    within-cluster sum of squares). Returns (labels, centers)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    sq = np.einsum("ij,ij->i", x, x)
    rows = np.arange(n)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(n_init):
        centers = _kmeans_pp(x, sq, k, rng)
        labels = np.full(n, -1, dtype=np.int64)
        for _ in range(max_iter):
            d2 = sq[:, None] - 2.0 * x @ centers.T + np.einsum("ij,ij->i", centers, centers)[None, :]
            new = np.argmin(d2, axis=1)
            if np.array_equal(new, labels):
                break
            labels = new
            onehot = np.zeros((n, k))
            onehot[rows, labels] = 1.0
            counts = onehot.sum(axis=0)
            sums = onehot.T @ x
            filled = counts > 0
            centers[filled] = sums[filled] / counts[filled, None]
            for c in np.flatnonzero(~filled):
                # An emptied cluster restarts at the point worst served by its center.
                centers[c] = x[int(np.argmax(d2[rows, labels]))]
        inertia = float(np.sum((x - centers[labels]) ** 2))
        if best is None or inertia < best[0]:
            best = (inertia, labels.copy(), centers.copy())
    assert best is not None
    return best[1], best[2]


def _kmeans_pp(x: np.ndarray, sq: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = len(x)
    centers = np.empty((k, x.shape[1]))
    centers[0] = x[rng.integers(n)]
    closest = np.maximum(sq - 2.0 * x @ centers[0] + centers[0] @ centers[0], 0.0)
    for c in range(1, k):
        total = closest.sum()
        # All remaining points coincide with a center: any choice is as good.
        idx = int(rng.integers(n)) if total <= 0 else int(rng.choice(n, p=closest / total))
        centers[c] = x[idx]
        closest = np.minimum(closest, np.maximum(sq - 2.0 * x @ centers[c] + centers[c] @ centers[c], 0.0))
    return centers


def choose_k(n: int) -> int:
    """Clusters for ``n`` pooled prompts: one per ~40 prompts, between 2 and 8, so each cluster
    has enough members for its shares to mean something and the report stays readable."""
    return int(min(8, max(2, n // 40)))


_WORD = re.compile(r"[a-z][a-z0-9'\-]{2,}")
_STOPWORDS = """about above after again against all also and any are aren't because been before being below
    between both but can can't cannot could couldn't did didn't does doesn't doing don't down during
    each few for from further had hadn't has hasn't have haven't having her here hers herself him
    himself his how i'd i'll i'm i've into isn't it's its itself just let's more most mustn't myself
    nor not now off once only other ought our ours ourselves out over own please same shan't she
    should shouldn't some such than that that's the their theirs them themselves then there there's
    these they they'd they'll they're they've this those through too under until very was wasn't
    we'd we'll we're we've were weren't what what's when when's where where's which while who who's
    whom why why's will with won't would wouldn't you you'd you'll you're you've your yours yourself
    yourselves one two get got make want need tell give know like use using way thing things"""
STOPWORDS = frozenset(_STOPWORDS.split())


def tokenize(text: str) -> list[str]:
    return [w.strip("'-") for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def cluster_keywords(texts: Sequence[str], labels: np.ndarray, k: int, top: int = 5) -> list[list[str]]:
    """Top words per cluster by class-based TF-IDF: a word's frequency in the cluster times
    log(1 + average words per cluster / the word's frequency over all clusters), so words common
    everywhere ("help", "question") rank below the words that set a cluster apart."""
    counts = [Counter[str]() for _ in range(k)]
    for text, label in zip(texts, labels, strict=True):
        counts[int(label)].update(tokenize(text))
    overall: Counter[str] = Counter()
    for c in counts:
        overall.update(c)
    avg_words = sum(overall.values()) / max(k, 1)
    out: list[list[str]] = []
    for c in counts:
        size = sum(c.values())
        if size == 0:
            out.append([])
            continue
        scored = sorted(
            ((tf / size) * math.log(1.0 + avg_words / overall[w]), w) for w, tf in c.items() if tf >= 2
        )
        out.append([w for _, w in sorted(scored, key=lambda s: (-s[0], s[1]))[:top]])
    return out


def chi2_contingency(counts: np.ndarray) -> tuple[float, float]:
    """Chi-square test of independence on a (2 x k) table of counts, empty columns dropped."""
    table = counts[:, counts.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    from scipy import stats as sps

    res = sps.chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue)
