"""Eval statistics: intervals and tests against known values, streaming summaries (flaky cases,
errors, bounded memory on 50,000 lines), JSON round trips, and baseline comparisons."""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from shipyard.errors import InvalidRequest
from shipyard.evals.stats import (
    MAX_EXPLANATION_CHARS,
    Comparison,
    Summarizer,
    Summary,
    compare,
    iter_results,
    mcnemar_exact,
    paired_bootstrap,
    summarize,
    wilson,
)


def line(
    case: str,
    passed: bool = True,
    target: str = "t",
    repeat: int = 0,
    *,
    value: float | None = None,
    explanation: str = "",
    error: str | None = None,
    latency_ms: float = 100.0,
    ttft_ms: float | None = None,
    cost_usd: float | None = None,
    cached: bool = False,
    output: str = "ok",
) -> dict[str, Any]:
    """A result line as the runner writes it, with one `exact` scorer."""
    v = (1.0 if passed else 0.0) if value is None else value
    return {
        "case": case,
        "repeat": repeat,
        "target": target,
        "input": {"q": case},
        "expected": "ok",
        "observation": {
            "output": output,
            "latency_ms": latency_ms,
            "ttft_ms": ttft_ms,
            "input_tokens": 10,
            "output_tokens": 5,
            "cost_usd": cost_usd,
            "error": error,
            "trace_id": None,
            "model": "m",
            "cached": cached,
        },
        "scores": {"exact": {"value": v, "passed": passed, "explanation": explanation}},
        "passed": passed and error is None,
    }


def run_of(verdicts: dict[str, bool], target: str = "t") -> Summary:
    return summarize([line(c, p, target, explanation=f"{c} wrong") for c, p in verdicts.items()], suite="s")


# ---------------------------------------------------------------------------------------------
# Wilson, McNemar, bootstrap
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (50, 100, 0.4038, 0.5962),
        (1, 1, 0.2065, 1.0),
    ],
)
def test_wilson_matches_known_values(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-4)


def test_wilson_without_trials_is_uninformative() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson(3, 2)


def _binomial_upper(b: int, n: int) -> float:
    """P(X >= b), X ~ Bin(n, 1/2), summed exactly with rationals."""
    return float(Fraction(sum(math.comb(n, i) for i in range(b, n + 1)), 2**n))


@pytest.mark.parametrize(("b", "c"), [(0, 0), (3, 0), (10, 2), (2, 10), (5, 5), (7, 1), (40, 25), (1, 0)])
def test_mcnemar_matches_binomial_tail(b: int, c: int) -> None:
    n = b + c
    try:
        from scipy.stats import binomtest
    except ImportError:
        upper = 1.0 if n == 0 else _binomial_upper(b, n)
        lower = 1.0 if n == 0 else _binomial_upper(n - b, n)
        two = min(1.0, 2 * min(upper, lower))
    else:
        upper = 1.0 if n == 0 else binomtest(b, n, 0.5, alternative="greater").pvalue
        two = 1.0 if n == 0 else binomtest(b, n, 0.5, alternative="two-sided").pvalue
    assert mcnemar_exact(b, c) == pytest.approx(upper, rel=1e-12)
    assert mcnemar_exact(b, c, "two-sided") == pytest.approx(two, rel=1e-12)


def test_mcnemar_hand_computed_values() -> None:
    assert mcnemar_exact(3, 0) == 0.125  # 1/8: three regressions, no improvement
    assert mcnemar_exact(10, 2) == pytest.approx(79 / 4096)  # (C(12,10)+C(12,11)+C(12,12)) / 2^12
    assert mcnemar_exact(5, 5, "two-sided") == 1.0
    assert mcnemar_exact(2, 9, "two-sided") == mcnemar_exact(9, 2, "two-sided")
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_mcnemar_large_counts_agree_with_exact_sums() -> None:
    # Above 1000 discordant pairs the tail is summed in log space; it must still match exactly.
    for b, c in [(1550, 1450), (1600, 1400), (700, 800)]:
        assert mcnemar_exact(b, c) == pytest.approx(_binomial_upper(b, b + c), rel=1e-9)


def _wilson_closed_form(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The closed-form Wilson interval that `wilson` computed by hand before it used SciPy."""
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def test_wilson_agrees_with_the_closed_form_on_a_grid() -> None:
    small = [(k, n, 1.96) for n in range(1, 41) for k in range(n + 1)]
    large = [(k, n) for n in (99, 250, 1000, 50_000) for k in {0, 1, n // 3, n // 2, n - 1, n}]
    for k, n, z in small + [(k, n, z) for k, n in large for z in (1.96, 2.576)]:
        assert wilson(k, n, z) == pytest.approx(_wilson_closed_form(k, n, z), abs=1e-12), (k, n, z)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0


def _exact_upper_tails(n: int) -> list[float]:
    """P(X >= b) for every b in 0..n, X ~ Bin(n, 1/2): suffix sums of binomial coefficients in
    integers, each divided by 2**n once (int / int true division is correctly rounded)."""
    combs = [math.comb(n, i) for i in range(n + 1)]
    tails = [0] * (n + 2)
    for i in range(n, -1, -1):
        tails[i] = tails[i + 1] + combs[i]
    return [tails[b] / 2**n for b in range(n + 1)]


def test_mcnemar_agrees_with_exact_rational_tails_on_a_grid() -> None:
    # Every split of up to 80 discordant pairs, and a sample of larger ones: the one-sided tail and
    # the doubled smaller tail, against sums of binomial coefficients done in exact arithmetic.
    assert mcnemar_exact(0, 0) == mcnemar_exact(0, 0, "two-sided") == 1.0
    for n in [*range(1, 81), 500, 999, 1001, 3000]:
        tails = _exact_upper_tails(n)
        for b in range(0, n + 1, 1 if n <= 80 else n // 40):
            upper, lower = tails[b], tails[n - b]  # P(X <= b) = P(X >= n - b) by symmetry
            assert mcnemar_exact(b, n - b) == pytest.approx(upper, rel=1e-11), (b, n)
            two = min(1.0, 2 * min(upper, lower))
            assert mcnemar_exact(b, n - b, "two-sided") == pytest.approx(two, rel=1e-11), (b, n)


def test_bootstrap_identical_runs() -> None:
    scores = np.random.default_rng(1).random(200)
    delta, lo, hi, p_worse = paired_bootstrap(scores, scores)
    assert (delta, lo, hi) == (0.0, 0.0, 0.0)
    assert p_worse == 0.5


def test_bootstrap_noise_without_a_shift_is_undecided() -> None:
    rng = np.random.default_rng(2)
    base = rng.random(300)
    noise = rng.normal(0, 0.1, 150)
    current = base + np.concatenate([noise, -noise])  # mean difference exactly 0
    delta, lo, hi, p_worse = paired_bootstrap(base, current, seed=3)
    assert delta == pytest.approx(0.0, abs=1e-12)
    assert lo < 0 < hi
    assert 0.3 < p_worse < 0.7


def test_bootstrap_clearly_worse() -> None:
    rng = np.random.default_rng(4)
    base = rng.random(400)
    current = base - 0.2 + rng.normal(0, 0.05, 400)  # continuous: the index-resampling path
    delta, lo, hi, p_worse = paired_bootstrap(base, current)
    assert delta == pytest.approx(-0.2, abs=0.02)
    assert lo < hi < 0
    assert p_worse > 0.999


def test_bootstrap_binary_scores_and_determinism() -> None:
    base = np.array([1.0] * 90 + [0.0] * 10)
    current = base.copy()
    current[:15] = 0.0  # 15 cases regress: the multinomial path (few distinct deltas)
    first = paired_bootstrap(base, current, seed=7)
    assert first == paired_bootstrap(base, current, seed=7)
    assert first[0] == pytest.approx(-0.15)
    assert first[2] < 0 and first[3] > 0.99
    assert paired_bootstrap([], []) == (0.0, 0.0, 0.0, 0.5)
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 0.0])


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------


def test_summary_counts_flaky_apart_from_failures() -> None:
    lines = []
    for r in range(3):
        lines.append(line("always", True, repeat=r))
        lines.append(line("never", False, repeat=r, explanation=f"wrong {r}"))
        lines.append(line("sometimes", r != 1, repeat=r, explanation="wrong once"))
        lines.append(line("also-ok", True, repeat=r))
    t = summarize(lines).target()
    assert (t.cases, t.runs) == (4, 12)
    assert (t.passed, t.failed, t.flaky) == (2, 1, 1)
    assert t.verdicts == {"always": "pass", "never": "fail", "sometimes": "flaky", "also-ok": "pass"}
    # Flaky cases are out of the pass rate and its interval: 2 of 3 decided cases.
    assert t.decided == 3
    assert t.pass_rate == pytest.approx(2 / 3)
    assert t.pass_rate_ci == wilson(2, 3)
    assert (t.ci_low, t.ci_high) == t.pass_rate_ci
    assert t.failed_ids == ["never"]
    assert t.flaky_ids == ["sometimes"]
    by_case = {f.case: f for f in t.failures}
    assert by_case["never"].explanation == "exact: wrong 0"  # the first failing repeat's
    assert (by_case["sometimes"].runs, by_case["sometimes"].failed_runs) == (3, 1)
    assert t.case_scores["sometimes"] == pytest.approx(2 / 3)


def test_all_flaky_has_no_pass_rate_to_speak_of() -> None:
    t = summarize([line("a", True, repeat=0), line("a", False, repeat=1)]).target()
    assert (t.flaky, t.decided, t.pass_rate, t.pass_rate_ci) == (1, 0, 0.0, (0.0, 1.0))


def test_summary_errors_latency_tokens_cost() -> None:
    lines = [
        line("a", True, latency_ms=100, ttft_ms=10, cost_usd=0.01, cached=True),
        line("b", True, latency_ms=200, ttft_ms=30, cost_usd=0.03),
        line("c", False, latency_ms=5000, error="upstream timed out after 5s", cost_usd=None),
        line("d", True, latency_ms=300),
    ]
    t = summarize(lines).target()
    assert (t.errored, t.errored_runs, t.failed) == (1, 1, 1)
    assert t.failures[0].explanation == "error: upstream timed out after 5s"
    lat = np.array([100, 200, 5000, 300], dtype=float)
    assert t.latency_p50_ms == pytest.approx(float(np.percentile(lat, 50)))
    assert t.latency_p95_ms == pytest.approx(float(np.percentile(lat, 95)))
    assert t.latency_p99_ms == pytest.approx(float(np.percentile(lat, 99)))
    assert t.ttft_p50_ms == pytest.approx(20.0)
    assert (t.input_tokens, t.output_tokens, t.cached) == (40, 20, 1)
    assert t.cost_usd == pytest.approx(0.04)
    assert t.cost_per_case_usd == pytest.approx(0.01)
    assert summarize([line("x")]).target().cost_usd is None  # unknown, not free


def test_scorer_stats_and_histogram() -> None:
    values = [0.0, 0.05, 0.15, 0.55, 0.95, 1.0, 1.0]
    lines = [line(f"c{i}", v >= 0.5, value=v) for i, v in enumerate(values)]
    s = summarize(lines).target().scorers["exact"]
    assert (s.runs, s.passed) == (7, 4)
    assert s.pass_rate == pytest.approx(4 / 7)
    assert s.mean == pytest.approx(sum(values) / 7)
    assert s.histogram == [2, 1, 0, 0, 0, 1, 0, 0, 0, 3]  # 1.0 falls in the last bin


def test_explanations_are_short_single_lines() -> None:
    long = "why\n" * 500
    t = summarize([line("a", False, explanation=long)]).target()
    text = t.failures[0].explanation
    assert len(text) <= MAX_EXPLANATION_CHARS and "\n" not in text and text.endswith("…")


def test_targets_are_summarised_separately() -> None:
    s = summarize([line("a", True, "small"), line("a", False, "big"), line("b", True, "big")], suite="qa")
    assert set(s.targets) == {"small", "big"}
    assert (s.targets["big"].cases, s.targets["big"].failed) == (2, 1)
    with pytest.raises(InvalidRequest, match="small, big"):
        s.target()
    with pytest.raises(InvalidRequest, match="no target `medium`"):
        s.target("medium")


def test_passed_is_derived_when_absent() -> None:
    bare = line("a", True)
    del bare["passed"]
    errored = line("b", True, error="boom")
    del errored["passed"]
    t = summarize([bare, errored]).target()
    assert t.verdicts == {"a": "pass", "b": "fail"}
    with pytest.raises(InvalidRequest, match="no `case`"):
        Summarizer().add({"target": "t"})


def test_summarizer_result_can_be_taken_midway() -> None:
    s = Summarizer()
    s.add(line("a", True))
    assert s.result().target().cases == 1
    s.add(line("b", False))
    assert s.result().target().cases == 2


def test_summary_json_round_trip() -> None:
    lines = [line("a", True, cost_usd=0.5, ttft_ms=3), line("b", False, explanation="nope")]
    lines += [line("c", r == 0, repeat=r, value=0.4 + 0.1 * r) for r in range(2)]
    summary = summarize(lines, suite="qa")
    data = orjson.loads(orjson.dumps(summary.to_dict()))
    assert data["targets"]["t"]["pass_rate"] == 0.5
    assert Summary.from_dict(data) == summary
    with pytest.raises(InvalidRequest, match="not an eval summary"):
        Summary.from_dict({"targets": {}})


def test_iter_results_reads_lazily(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line(c)) + b"\n" for c in "abc") + b"\n")
    assert summarize(iter_results(path)).target().cases == 3
    path.write_bytes(orjson.dumps(line("a")) + b"\n{oops\n")
    with pytest.raises(InvalidRequest, match=r"results.jsonl:2"):
        list(iter_results(path))


def _stream(cases: int, repeats: int, output_chars: int) -> Iterator[dict[str, Any]]:
    """Lines made one at a time, each with its own output string (as JSON parsing would)."""
    for r in range(repeats):
        for i in range(cases):
            yield line(
                f"case-{i:06d}",
                (i + r) % 7 != 0,
                repeat=r,
                value=(i % 11) / 10,
                explanation="mismatch " * 4,
                latency_ms=float(i % 997),
                output=f"{i}:{r}:" + "x" * output_chars,
            )


def _peak(lines: Iterator[dict[str, Any]]) -> tuple[int, Summary]:
    tracemalloc.start()
    try:
        summary = summarize(lines)
        return tracemalloc.get_traced_memory()[1], summary
    finally:
        tracemalloc.stop()


def test_streaming_memory_grows_with_cases_not_lines() -> None:
    # 5,000 cases once vs the same 5,000 cases ten times (50,000 lines of ~2 KB): only the
    # per-run latency floats may grow, so the peak stays within ~3x.
    small, _ = _peak(_stream(5_000, 1, 2_000))
    large, s10 = _peak(_stream(5_000, 10, 2_000))
    assert s10.target().runs == 50_000 and s10.target().cases == 5_000
    assert s10.target().flaky > 0
    assert large <= 3 * small, (small, large)


def test_streaming_memory_for_50k_cases_is_small_per_case_state() -> None:
    peak, summary = _peak(_stream(50_000, 1, 4_000))
    t = summary.target()
    assert (t.cases, t.runs) == (50_000, 50_000)
    # Holding the lines would take more than 200 MB; per-case state is a few hundred bytes.
    assert peak / 50_000 < 1_500, peak


# ---------------------------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------------------------


def test_compare_flags_significant_regressions_and_names_them() -> None:
    base = run_of({f"billing-{i}": True for i in range(20)} | {"refund-1": True, "refund-2": False})
    current = run_of(
        {f"billing-{i}": i not in (2, 7, 9, 11, 12) for i in range(20)}
        | {"refund-1": False, "refund-2": False}
    )
    c = compare(base, current)
    assert [r.case for r in c.regressions] == [f"billing-{i}" for i in (2, 7, 9, 11, 12)] + ["refund-1"]
    assert c.regressions[0].explanation == "exact: billing-2 wrong"
    assert (len(c.improvements), c.unchanged_pass, c.unchanged_fail) == (0, 15, 1)
    assert c.mcnemar_p_worse == pytest.approx(1 / 64)
    assert c.worse
    assert c.reason.startswith("6 regressions vs 0 improvements (McNemar p=0.0156 < 0.05")
    assert "billing-2, billing-7, billing-9, billing-11, billing-12, refund-1" in c.reason
    assert c.delta_pass_rate == pytest.approx(15 / 22 - 21 / 22)
    assert c.score_delta < 0 and c.score_ci_high < 0 and c.score_p_worse > 0.99


def test_compare_is_not_worse_on_a_single_regression_or_a_trade() -> None:
    base = run_of({"a": True, "b": False, "c": True})
    one = compare(base, run_of({"a": False, "b": False, "c": True}))
    assert not one.worse and one.mcnemar_p_worse == 0.5
    assert one.reason.startswith("1 regression vs 0 improvements, not significant (McNemar p=0.5 >= 0.05")
    assert one.reason.endswith(": a")
    trade = compare(base, run_of({"a": False, "b": True, "c": True}))
    assert not trade.worse and [r.case for r in trade.improvements] == ["b"]
    assert trade.improvements[0].explanation == "exact: b wrong"  # why it used to fail
    better = compare(base, run_of({"a": True, "b": True, "c": True}))
    assert better.reason.startswith("no regressions, 1 improvement")


def test_compare_leaves_flaky_and_one_sided_cases_out_of_mcnemar() -> None:
    base = summarize(
        [line("a"), line("b"), line("gone"), line("f", True, repeat=0), line("f", False, repeat=1)]
    )
    current = summarize([line("a", False), line("b"), line("f", False), line("new")])
    c = compare(base, current)
    assert c.flaky == 1
    assert (c.only_baseline, c.only_current) == (["gone"], ["new"])
    assert [r.case for r in c.regressions] == ["a"]


def test_compare_chooses_targets() -> None:
    base = summarize([line("a", True, "gpt"), line("a", True, "llama")])
    current = summarize([line("a", False, "gpt"), line("a", True, "llama")])
    with pytest.raises(InvalidRequest, match="name the target"):
        compare(base, current)
    assert compare(base, current, target="gpt").regressions[0].case == "a"
    assert not compare(base, current, target="llama").regressions
    renamed = summarize([line("a", False, "gpt-new")])
    c = compare(base, renamed, target="gpt-new", baseline_target="gpt")
    assert (c.target, c.baseline_target, len(c.regressions)) == ("gpt-new", "gpt", 1)
    # One target on each side: compared even when the names differ.
    assert compare(summarize([line("a", True, "x")]), renamed).baseline_target == "x"
    with pytest.raises(InvalidRequest, match="no target `nope`"):
        compare(base, current, target="nope")


def test_comparison_json_round_trip() -> None:
    base = run_of({"a": True, "b": False, "c": True})
    c = compare(base, run_of({"a": False, "b": True, "c": True}))
    data = orjson.loads(orjson.dumps(c.to_dict()))
    assert data["worse"] is False and data["regressions"][0]["case"] == "a"
    assert Comparison.from_dict(data) == c
    with pytest.raises(InvalidRequest, match="not an eval comparison"):
        Comparison.from_dict({})
