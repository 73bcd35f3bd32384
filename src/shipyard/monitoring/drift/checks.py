"""The statistical checks of a drift check and its verdict.

:func:`compare` runs, on two samples: MMD with an RBF kernel on prompt and response embeddings
(permutation p-values); Kolmogorov–Smirnov and PSI on each of :data:`NUMERIC_FEATURES`; k-means
topics over the pooled prompt embeddings. The p-values are Bonferroni-corrected (each multiplied by
the number of p-value tests that ran); the samples drifted when a corrected p-value is at most
``alpha``, or when a PSI reaches ``psi_threshold`` with samples large enough for PSI to be trusted
(see :func:`shipyard.monitoring.stats.psi_noise`). The statistics themselves live in
``shipyard.monitoring.stats``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from shipyard.monitoring import stats
from shipyard.monitoring.drift.sampling import NUMERIC_FEATURES, Sample, embed_texts

DEFAULT_ALPHA = 0.01
DEFAULT_MIN_SAMPLES = 30
DEFAULT_PSI_THRESHOLD = 0.25
_EXAMPLES_PER_CLUSTER = 3
_EXAMPLE_CHARS = 160
# Cosine similarity above which two example prompts count as the same question reworded.
_SAME_EXAMPLE = 0.97


def _present(values: Sequence[str | None]) -> list[str]:
    return [v for v in values if v is not None]


def _test(
    name: str, test: str, feature: str, result: stats.TestResult, threshold: float | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "test": test,
        "feature": feature,
        "statistic": result.statistic,
        "p_value": result.p_value,
        "p_adjusted": None,
        "threshold": threshold,
        "drifted": False,
        "detail": result.detail,
    }


def _topics(
    ref_texts: list[str], cur_texts: list[str], ref_emb: np.ndarray, cur_emb: np.ndarray, seed: int
) -> dict[str, Any]:
    pooled = np.concatenate([ref_emb, cur_emb]).astype(np.float64)
    texts = ref_texts + cur_texts
    n_ref = len(ref_texts)
    k = min(stats.choose_k(len(texts)), len(np.unique(pooled.round(6), axis=0)))
    labels, centers = stats.kmeans(pooled, max(k, 1), seed=seed)
    k = len(centers)
    side = np.zeros(len(texts), dtype=bool)
    side[n_ref:] = True
    counts = np.zeros((2, k), dtype=np.int64)
    np.add.at(counts, (side.astype(np.int64), labels), 1)
    keywords = stats.cluster_keywords(texts, labels, k)
    dist = np.sum((pooled - centers[labels]) ** 2, axis=1)
    clusters: list[dict[str, Any]] = []
    for c in range(k):
        share_ref = counts[0, c] / max(n_ref, 1)
        share_cur = counts[1, c] / max(len(cur_texts), 1)
        # Examples from the side the cluster is more typical of: what grew comes from the current sample.
        from_current = share_cur >= share_ref
        members = np.flatnonzero((labels == c) & (side == from_current))
        if members.size == 0:
            members = np.flatnonzero(labels == c)
        examples: list[str] = []
        picked: list[int] = []
        for i in members[np.argsort(dist[members], kind="stable")]:
            text = " ".join(texts[i].split())
            text = text if len(text) <= _EXAMPLE_CHARS else text[: _EXAMPLE_CHARS - 1] + "…"
            # Typical but not interchangeable: skip prompts nearly identical to one already shown.
            if not text or text in examples or any(pooled[i] @ pooled[j] > _SAME_EXAMPLE for j in picked):
                continue
            examples.append(text)
            picked.append(int(i))
            if len(examples) == _EXAMPLES_PER_CLUSTER:
                break
        if not examples and members.size:
            examples.append(" ".join(texts[members[0]].split())[:_EXAMPLE_CHARS])
        clusters.append(
            {
                "cluster": c,
                "n_reference": int(counts[0, c]),
                "n_current": int(counts[1, c]),
                "share_reference": round(float(share_ref), 6),
                "share_current": round(float(share_cur), 6),
                "change": round(float(share_cur - share_ref), 6),
                "keywords": keywords[c],
                "examples": examples,
                "examples_from": "current" if from_current else "reference",
            }
        )
    clusters.sort(key=lambda c: (-c["change"], c["cluster"]))
    chi2, chi2_p = stats.chi2_contingency(counts)
    return {
        "k": k,
        "method": "k-means (k-means++ seeding, 3 starts) over pooled prompt embeddings",
        "shift": round(0.5 * float(sum(abs(c["change"]) for c in clusters)), 6),
        "chi2": chi2,
        "chi2_p": chi2_p,
        "clusters": clusters,
        "grew": [c["cluster"] for c in clusters if c["change"] > 0][:3],
        "shrank": [c["cluster"] for c in sorted(clusters, key=lambda c: c["change"]) if c["change"] < 0][:3],
    }


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limits: Any = None


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """One BLAS thread while any check computes: the matrices here are small (about 1000 x 1000),
    and OpenBLAS's worker threads spin against the server's own threads on a busy machine, which
    made a check up to 20x slower. The limit is process-wide, so concurrent checks share one and
    the last to finish restores the original."""
    global _blas_users, _blas_limits
    with _blas_lock:
        if _blas_users == 0:
            _blas_limits = threadpool_limits(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limits.restore_original_limits()
                _blas_limits = None


@one_blas_thread()  # contextlib enters a fresh one on every call of the function it decorates
def compare(
    reference: Sample,
    current: Sample,
    *,
    alpha: float = DEFAULT_ALPHA,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    psi_threshold: float | None = DEFAULT_PSI_THRESHOLD,
    seed: int = 0,
) -> dict[str, Any]:
    """Every test on two samples, the Bonferroni-corrected verdict and the topics: the ``results``
    of a report (``drifted`` is ``results["drifted"]``)."""
    started = time.perf_counter()
    timing: dict[str, float] = {}
    skipped: list[dict[str, str]] = []
    ref_desc = reference.source.get("spec", "reference")

    # Decide first which p-value tests can run: their number sets the correction and the permutations.
    ref_prompts, cur_prompts = _present(reference.prompts), _present(current.prompts)
    ref_resp = [r for r in reference.responses if r]
    cur_resp = [r for r in current.responses if r]
    run_mmd_prompt = len(ref_prompts) >= min_samples and len(cur_prompts) >= min_samples
    run_mmd_response = len(ref_resp) >= min_samples and len(cur_resp) >= min_samples
    if not run_mmd_prompt:
        skipped.append({"name": "mmd_prompt", "reason": f"fewer than {min_samples} captured prompts a side"})
    if not run_mmd_response:
        why = (
            f"the reference `{ref_desc}` has no responses"
            if reference.source.get("kind") == "dataset"
            else f"fewer than {min_samples} captured responses a side"
        )
        skipped.append({"name": "mmd_response", "reason": why})
    numeric: list[tuple[str, np.ndarray, np.ndarray]] = []
    for feat in NUMERIC_FEATURES:
        a, b = reference.numeric[feat], current.numeric[feat]
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if len(a) >= min_samples and len(b) >= min_samples:
            numeric.append((feat, a, b))
        else:
            why = (
                f"the reference `{ref_desc}` has no {feat}"
                if len(a) == 0 and reference.source.get("kind") == "dataset"
                else f"{feat} known for {len(a)} reference and {len(b)} current traces; "
                f"needs {min_samples} a side"
            )
            skipped.append({"name": f"ks_{feat}", "reason": why})
            skipped.append({"name": f"psi_{feat}", "reason": why})
    n_tests = int(run_mmd_prompt) + int(run_mmd_response) + len(numeric)
    permutations = stats.permutations_for(n_tests, alpha)

    tests: list[dict[str, Any]] = []
    topics: dict[str, Any] | None = None
    if run_mmd_prompt:
        t0 = time.perf_counter()
        ref_emb, cur_emb = embed_texts(ref_prompts), embed_texts(cur_prompts)
        timing["embed_prompts_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = stats.mmd_test(ref_emb, cur_emb, permutations=permutations, seed=seed * 7919 + 1)
        timing["mmd_prompt_s"] = time.perf_counter() - t0
        tests.append(_test("mmd_prompt", "mmd", "prompt", res))
        t0 = time.perf_counter()
        topics = _topics(ref_prompts, cur_prompts, ref_emb, cur_emb, seed)
        timing["topics_s"] = time.perf_counter() - t0
    if run_mmd_response:
        t0 = time.perf_counter()
        ref_emb, cur_emb = embed_texts(ref_resp), embed_texts(cur_resp)
        res = stats.mmd_test(ref_emb, cur_emb, permutations=permutations, seed=seed * 7919 + 2)
        timing["mmd_response_s"] = time.perf_counter() - t0
        tests.append(_test("mmd_response", "mmd", "response", res))
    t0 = time.perf_counter()
    for feat, a, b in numeric:
        tests.append(_test(f"ks_{feat}", "ks", feat, stats.ks_test(a, b)))
        ps = stats.psi(a, b)
        noise = stats.psi_noise(ps.detail["bins"], len(a), len(b))
        # PSI votes only when chance alone stays far below the threshold (its mean under no
        # change is `noise`); on small samples the KS p-value speaks for the feature.
        votes = psi_threshold is not None and noise <= psi_threshold / 4
        ps.detail.update({"noise": noise, "votes": votes})
        tests.append(_test(f"psi_{feat}", "psi", feat, ps, psi_threshold))
    timing["numeric_s"] = time.perf_counter() - t0

    level = alpha / max(n_tests, 1)
    reasons: list[str] = []
    for t in tests:
        if t["p_value"] is not None:
            t["p_adjusted"] = min(1.0, t["p_value"] * n_tests)
            t["threshold"] = alpha
            t["drifted"] = t["p_adjusted"] <= alpha
            if t["drifted"]:
                reasons.append(
                    f"{t['name']}: p = {t['p_value']:.3g} (corrected {t['p_adjusted']:.3g}) "
                    f"<= alpha {alpha:g}"
                )
        elif t["test"] == "psi" and t["detail"]["votes"]:
            assert psi_threshold is not None
            t["drifted"] = t["statistic"] >= psi_threshold
            if t["drifted"]:
                reasons.append(f"{t['name']}: PSI {t['statistic']:.3f} >= {psi_threshold:g}")
    timing["total_s"] = time.perf_counter() - started
    return {
        "drifted": bool(reasons),
        "reasons": reasons,
        "alpha": alpha,
        "correction": "bonferroni",
        "n_tests": n_tests,
        "corrected_alpha": level,
        "psi_threshold": psi_threshold,
        "psi_bins": stats.PSI_BINS,
        "psi_epsilon": stats.PSI_EPSILON,
        "permutations": permutations,
        "min_samples": min_samples,
        "seed": seed,
        "embedding": "wordllama l2_supercat, 256 dims",
        "tests": tests,
        "skipped": skipped,
        "topics": topics,
        "timing": {k: round(v, 4) for k, v in timing.items()},
    }
