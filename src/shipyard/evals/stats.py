"""Statistics over eval results: streaming summaries, confidence intervals and baseline comparisons.

An eval run writes one :class:`~shipyard.evals.core.ResultLine` per (case, target, repeat) to
``results.jsonl``; runs can hold tens of thousands of cases, so everything here reads the lines once,
as a stream, and keeps only small per-case state (a pass count, a score sum, a short explanation for
failing cases) plus one float per run for the latency percentiles. Whole lines are never kept.

Verdicts. A case run N times against a target is

- ``pass`` when every repeat passed, ``fail`` when every repeat failed, and
- ``flaky`` when the repeats disagree. Flaky cases are reported on their own and left out of the
  pass rate and its confidence interval: counting them as failures would make a nondeterministic
  target look broken, counting them as passes would hide the nondeterminism. The per-case mean
  score (used by the paired bootstrap) still includes every repeat.

Comparisons pair cases by id. A case that passed in the baseline and fails now is a *regression*,
the reverse an *improvement*; cases flaky on either side are counted apart and do not enter the
McNemar test (which needs a binary outcome per side). The gate rule is one line: the current run is
**worse** when the one-sided exact McNemar test (regressions vs improvements) gives p < alpha.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import orjson

from shipyard.errors import InvalidRequest
from shipyard.evals.core import ResultLine

Verdict = Literal["pass", "fail", "flaky"]
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "flaky")

HISTOGRAM_BINS = 10  # over [0, 1]: bin i holds values in [i/10, (i+1)/10), the last one includes 1.0
MAX_EXPLANATION_CHARS = 300  # what a summary keeps per failing case; the full text is in results.jsonl
SUMMARY_FORMAT = "shipyard.eval-summary/1"
_NUMBER = (int, float)  # a tuple, not `int | float`: that builds a new union object on every call
COMPARISON_FORMAT = "shipyard.eval-comparison/1"

# Above this many discordant pairs the exact binomial tail is summed in log space: the integer sums
# stay exact but grow to thousands of digits, and a 50,000-case run would spend seconds on them.
_EXACT_BINOMIAL_MAX_N = 1000


# --------------------------------------------------------------------------------------------------
# Tests and intervals
# --------------------------------------------------------------------------------------------------


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion of ``k`` successes in ``n`` trials.

    Chosen over the normal ("Wald") interval because eval suites are often small and pass rates
    close to 1, where Wald's interval collapses to zero width or leaves [0, 1]. ``n == 0`` gives the
    uninformative (0, 1).
    """
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"wilson: k={k} must lie in [0, n={n}]")
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _binomial_tail_ge(k: int, n: int) -> float:
    """P(X >= k) for X ~ Binomial(n, 1/2)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if n <= _EXACT_BINOMIAL_MAX_N:
        total = 0
        term = math.comb(n, k)
        for i in range(k, n + 1):
            total += term
            term = term * (n - i) // (i + 1)
        return min(1.0, total / (1 << n))  # int / int true division is correctly rounded
    j = np.arange(1, n + 1, dtype=np.float64)
    log_comb = np.concatenate(([0.0], np.cumsum(np.log(n - j + 1) - np.log(j))))
    tail = log_comb[k:]
    top = float(tail.max())
    log_p = top + math.log(float(np.exp(tail - top).sum())) - n * math.log(2.0)
    return min(1.0, math.exp(log_p))


def mcnemar_exact(b: int, c: int, alternative: Literal["worse", "two-sided"] = "worse") -> float:
    """Exact McNemar test on the discordant pairs of a paired comparison.

    ``b`` counts cases that passed in the baseline and fail now (regressions), ``c`` cases that
    failed before and pass now (improvements). Under the null hypothesis a discordant case is as
    likely to go either way, so ``b ~ Binomial(b + c, 1/2)``.

    - ``"worse"`` (the default, and what :func:`compare`'s gate uses): the one-sided p-value
      P(X >= b), i.e. how surprising this many regressions would be if the current run were no worse.
    - ``"two-sided"``: min(1, 2 * min(P(X >= b), P(X <= b))), for reporting a change either way.

    No discordant pairs (b + c == 0) is no evidence at all: p = 1.
    """
    if b < 0 or c < 0:
        raise ValueError(f"mcnemar_exact: counts must be >= 0 (b={b}, c={c})")
    n = b + c
    if n == 0:
        return 1.0
    upper = _binomial_tail_ge(b, n)
    if alternative == "worse":
        return upper
    if alternative == "two-sided":
        lower = _binomial_tail_ge(n - b, n)  # P(X <= b) by symmetry of Binomial(n, 1/2)
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


# --------------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------------


def _short(text: str, limit: int = MAX_EXPLANATION_CHARS) -> str:
    text = " ".join(text.split())  # one line: summaries feed tables and CI logs
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(slots=True)
class ScorerSummary:
    """One scorer over every run of a target: pass count, mean value and a 10-bin histogram."""

    runs: int = 0
    passed: int = 0
    mean: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BINS)

    @property
    def pass_rate(self) -> float:
        return self.passed / self.runs if self.runs else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "passed": self.passed,
            "pass_rate": self.pass_rate,
            "mean": self.mean,
            "histogram": list(self.histogram),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScorerSummary:
        return cls(
            runs=int(data["runs"]),
            passed=int(data["passed"]),
            mean=float(data["mean"]),
            histogram=[int(x) for x in data["histogram"]],
        )


@dataclass(slots=True)
class CaseFailure:
    """A case that failed or was flaky, with the first failing explanation (shortened)."""

    case: str
    verdict: Verdict
    runs: int
    failed_runs: int
    errored_runs: int  # repeats whose call failed (observation.error set)
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "verdict": self.verdict,
            "runs": self.runs,
            "failed_runs": self.failed_runs,
            "errored_runs": self.errored_runs,
            "explanation": self.explanation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseFailure:
        return cls(
            case=str(data["case"]),
            verdict=_verdict(data["verdict"]),
            runs=int(data["runs"]),
            failed_runs=int(data["failed_runs"]),
            errored_runs=int(data["errored_runs"]),
            explanation=str(data["explanation"]),
        )


def _verdict(value: Any) -> Verdict:
    if value not in VERDICTS:
        raise InvalidRequest(f"unknown case verdict {value!r}; expected one of {', '.join(VERDICTS)}")
    return cast(Verdict, value)


@dataclass(slots=True)
class TargetSummary:
    """Everything a report or a later comparison needs about one target of a run.

    ``passed``/``failed``/``flaky`` partition the cases; ``errored`` counts cases with at least one
    failed call (they are also in ``failed`` or ``flaky``). The pass rate and its Wilson interval are
    over non-flaky cases only. Per-scorer figures, latency, tokens and cost are over runs (lines).
    """

    target: str
    cases: int = 0
    runs: int = 0
    passed: int = 0
    failed: int = 0
    flaky: int = 0
    errored: int = 0
    errored_runs: int = 0
    scorers: dict[str, ScorerSummary] = field(default_factory=dict)
    latency_mean_ms: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    ttft_p50_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None  # None when no run reported a cost (unknown, not free)
    cached: int = 0  # runs answered from the gateway's cache
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    case_scores: dict[str, float] = field(default_factory=dict)  # mean over scorers and repeats
    failures: list[CaseFailure] = field(default_factory=list)  # failed and flaky cases, first-seen order

    @property
    def decided(self) -> int:
        """Cases with a stable verdict: the denominator of the pass rate."""
        return self.passed + self.failed

    @property
    def pass_rate(self) -> float:
        """Passed over non-flaky cases; 0.0 when no case has a stable verdict, so that a threshold
        gate fails safe rather than passing a run it knows nothing about."""
        return self.passed / self.decided if self.decided else 0.0

    @property
    def pass_rate_ci(self) -> tuple[float, float]:
        """95% Wilson interval of the pass rate ((0, 1) when no case has a stable verdict)."""
        return wilson(self.passed, self.decided)

    @property
    def ci_low(self) -> float:
        return self.pass_rate_ci[0]

    @property
    def ci_high(self) -> float:
        return self.pass_rate_ci[1]

    @property
    def failed_ids(self) -> list[str]:
        """Ids of the cases that failed every repeat (flaky ones are not failures), first-seen order."""
        return [f.case for f in self.failures if f.verdict == "fail"]

    @property
    def flaky_ids(self) -> list[str]:
        return [f.case for f in self.failures if f.verdict == "flaky"]

    @property
    def mean_score(self) -> float | None:
        return math.fsum(self.case_scores.values()) / len(self.case_scores) if self.case_scores else None

    @property
    def cost_per_case_usd(self) -> float | None:
        return self.cost_usd / self.cases if self.cost_usd is not None and self.cases else None

    def to_dict(self) -> dict[str, Any]:
        lo, hi = self.pass_rate_ci
        return {
            "target": self.target,
            "cases": self.cases,
            "runs": self.runs,
            "passed": self.passed,
            "failed": self.failed,
            "flaky": self.flaky,
            "errored": self.errored,
            "errored_runs": self.errored_runs,
            "pass_rate": self.pass_rate,
            "pass_rate_ci": [lo, hi],
            "mean_score": self.mean_score,
            "scorers": {name: s.to_dict() for name, s in self.scorers.items()},
            "latency_mean_ms": self.latency_mean_ms,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "ttft_p50_ms": self.ttft_p50_ms,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "cost_per_case_usd": self.cost_per_case_usd,
            "cached": self.cached,
            "verdicts": dict(self.verdicts),
            "case_scores": dict(self.case_scores),
            "failures": [f.to_dict() for f in self.failures],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetSummary:
        # Derived figures (pass_rate, pass_rate_ci, mean_score, cost_per_case_usd) are recomputed.
        return cls(
            target=str(data["target"]),
            cases=int(data["cases"]),
            runs=int(data["runs"]),
            passed=int(data["passed"]),
            failed=int(data["failed"]),
            flaky=int(data["flaky"]),
            errored=int(data["errored"]),
            errored_runs=int(data.get("errored_runs", 0)),
            scorers={str(k): ScorerSummary.from_dict(v) for k, v in data["scorers"].items()},
            latency_mean_ms=_opt_float(data.get("latency_mean_ms")),
            latency_p50_ms=_opt_float(data.get("latency_p50_ms")),
            latency_p95_ms=_opt_float(data.get("latency_p95_ms")),
            latency_p99_ms=_opt_float(data.get("latency_p99_ms")),
            ttft_p50_ms=_opt_float(data.get("ttft_p50_ms")),
            input_tokens=int(data["input_tokens"]),
            output_tokens=int(data["output_tokens"]),
            cost_usd=_opt_float(data.get("cost_usd")),
            cached=int(data["cached"]),
            verdicts={str(k): _verdict(v) for k, v in data["verdicts"].items()},
            case_scores={str(k): float(v) for k, v in data["case_scores"].items()},
            failures=[CaseFailure.from_dict(f) for f in data["failures"]],
        )


@dataclass(slots=True)
class Summary:
    """A run's summary, per target; stored as ``summary.json`` next to ``results.jsonl``."""

    suite: str = ""
    targets: dict[str, TargetSummary] = field(default_factory=dict)

    def target(self, name: str | None = None) -> TargetSummary:
        """The named target, or the only one when ``name`` is None."""
        if name is None:
            if len(self.targets) == 1:
                return next(iter(self.targets.values()))
            known = ", ".join(self.targets) or "none"
            raise InvalidRequest(f"suite `{self.suite}` has targets {known}; name the one to use")
        if name not in self.targets:
            known = ", ".join(self.targets) or "none"
            raise InvalidRequest(f"suite `{self.suite}` has no target `{name}`; known targets: {known}")
        return self.targets[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SUMMARY_FORMAT,
            "suite": self.suite,
            "targets": {name: t.to_dict() for name, t in self.targets.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Summary:
        if data.get("format") != SUMMARY_FORMAT:
            raise InvalidRequest(
                f"not an eval summary (format {data.get('format')!r}, expected {SUMMARY_FORMAT!r})"
            )
        return cls(
            suite=str(data.get("suite", "")),
            targets={str(k): TargetSummary.from_dict(v) for k, v in data["targets"].items()},
        )


class _CaseState:
    """Per (target, case) state while streaming: a few numbers and, for failing cases, one string."""

    __slots__ = ("errored", "explanation", "passed", "runs", "score_sum")

    def __init__(self) -> None:
        self.runs = 0
        self.passed = 0
        self.errored = 0
        self.score_sum = 0.0
        self.explanation: str | None = None


class _ScorerState:
    __slots__ = ("histogram", "passed", "runs", "value_sum")

    def __init__(self) -> None:
        self.runs = 0
        self.passed = 0
        self.value_sum = 0.0
        self.histogram = [0] * HISTOGRAM_BINS


class _TargetState:
    def __init__(self) -> None:
        self.cases: dict[str, _CaseState] = {}
        self.scorers: dict[str, _ScorerState] = {}
        self.runs = 0
        self.errored_runs = 0
        # One float per run (8 bytes, not a boxed float) for exact percentiles.
        self.latency = array("d")
        self.ttft = array("d")
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.cost_runs = 0
        self.cached = 0


def _failing_explanation(scores: Mapping[str, Any], error: Any) -> str:
    """Why a run failed, in one short line: the call's error, else the first failing scorer's word."""
    if error:
        return _short(f"error: {error}")
    for name, s in scores.items():
        if isinstance(s, Mapping) and not s.get("passed", False):
            explanation = str(s.get("explanation") or "").strip()
            return _short(f"{name}: {explanation}" if explanation else f"{name} failed")
    return "failed"


def _percentiles(values: array[float], qs: Sequence[float]) -> list[float | None]:
    if not values:
        return [None] * len(qs)
    arr = np.frombuffer(values, dtype=np.float64)
    return [float(x) for x in np.percentile(arr, qs)]


class Summarizer:
    """Builds a :class:`Summary` from result lines in one pass (``add`` each, then ``result``).

    Only small per-case state is kept, never the lines, so 50,000-case runs summarise in a few
    megabytes. ``result`` does not consume the state: it can be called again after more ``add``s.
    """

    def __init__(self, suite: str = "") -> None:
        self.suite = suite
        self._targets: dict[str, _TargetState] = {}

    def add(self, line: Mapping[str, Any]) -> None:
        # This runs once per line of runs with 50,000+ lines: it avoids needless calls and
        # temporary objects (`str()` of a str, ABC isinstance checks on plain dicts, min/max).
        case_id = line.get("case")
        if case_id is None:
            raise InvalidRequest("result line has no `case`; is this a results.jsonl written by shipyard?")
        if type(case_id) is not str:
            case_id = str(case_id)
        target = line.get("target") or "default"
        if type(target) is not str:
            target = str(target)
        state = self._targets.get(target)
        if state is None:
            state = self._targets[target] = _TargetState()
        case = state.cases.get(case_id)
        if case is None:
            case = state.cases[case_id] = _CaseState()

        obs = line.get("observation") or {}
        scores = line.get("scores") or {}
        error = obs.get("error")
        passed_field = line.get("passed")
        if passed_field is None:  # older or hand-written lines: derive it the way the runner does
            passed = not error and all(isinstance(s, Mapping) and s.get("passed") for s in scores.values())
        else:
            passed = bool(passed_field)

        state.runs += 1
        case.runs += 1
        if passed:
            case.passed += 1
        elif case.explanation is None:
            case.explanation = _failing_explanation(scores, error)
        if error:
            case.errored += 1
            state.errored_runs += 1

        value_sum = 0.0
        n_values = 0
        for name, s in scores.items():
            if type(s) is not dict and not isinstance(s, Mapping):
                continue
            sc = state.scorers.get(name)
            if sc is None:
                sc = state.scorers[name] = _ScorerState()
            raw = s.get("value", 0.0)
            value = float(raw) if isinstance(raw, _NUMBER) and math.isfinite(raw) else 0.0
            sc.runs += 1
            sc.passed += 1 if s.get("passed") else 0
            sc.value_sum += value
            b = int(value * HISTOGRAM_BINS)
            sc.histogram[HISTOGRAM_BINS - 1 if b >= HISTOGRAM_BINS else (b if b > 0 else 0)] += 1
            value_sum += value
            n_values += 1
        # A line with no scores (e.g. a failed call in a suite without scorers) scores its verdict.
        case.score_sum += value_sum / n_values if n_values else (1.0 if passed else 0.0)

        latency = obs.get("latency_ms")
        # NaN would poison every percentile; a line without a timing simply has none.
        if isinstance(latency, _NUMBER) and math.isfinite(latency):
            state.latency.append(float(latency))
        ttft = obs.get("ttft_ms")
        if isinstance(ttft, _NUMBER) and math.isfinite(ttft):
            state.ttft.append(float(ttft))
        state.input_tokens += int(obs.get("input_tokens") or 0)
        state.output_tokens += int(obs.get("output_tokens") or 0)
        cost = obs.get("cost_usd")
        if isinstance(cost, _NUMBER) and math.isfinite(cost):
            state.cost += float(cost)
            state.cost_runs += 1
        if obs.get("cached"):
            state.cached += 1

    def add_all(self, lines: Iterable[Mapping[str, Any]]) -> Summarizer:
        for line in lines:
            self.add(line)
        return self

    def result(self) -> Summary:
        return Summary(suite=self.suite, targets={t: self._target(t, s) for t, s in self._targets.items()})

    @staticmethod
    def _target(name: str, state: _TargetState) -> TargetSummary:
        out = TargetSummary(target=name, cases=len(state.cases), runs=state.runs)
        for case_id, case in state.cases.items():
            verdict: Verdict
            if case.passed == case.runs:
                verdict = "pass"
                out.passed += 1
            elif case.passed == 0:
                verdict = "fail"
                out.failed += 1
            else:
                verdict = "flaky"
                out.flaky += 1
            if case.errored:
                out.errored += 1
            out.verdicts[case_id] = verdict
            out.case_scores[case_id] = case.score_sum / case.runs
            if verdict != "pass":
                out.failures.append(
                    CaseFailure(
                        case=case_id,
                        verdict=verdict,
                        runs=case.runs,
                        failed_runs=case.runs - case.passed,
                        errored_runs=case.errored,
                        explanation=case.explanation or "failed",
                    )
                )
        out.errored_runs = state.errored_runs
        out.scorers = {
            name: ScorerSummary(
                runs=s.runs,
                passed=s.passed,
                mean=s.value_sum / s.runs if s.runs else 0.0,
                histogram=list(s.histogram),
            )
            for name, s in state.scorers.items()
        }
        if state.latency:
            out.latency_mean_ms = float(np.frombuffer(state.latency, dtype=np.float64).mean())
        out.latency_p50_ms, out.latency_p95_ms, out.latency_p99_ms = _percentiles(state.latency, (50, 95, 99))
        (out.ttft_p50_ms,) = _percentiles(state.ttft, (50,))
        out.input_tokens = state.input_tokens
        out.output_tokens = state.output_tokens
        out.cost_usd = state.cost if state.cost_runs else None
        out.cached = state.cached
        return out


def summarize(lines: Iterable[Mapping[str, Any]], suite: str = "") -> Summary:
    """Summarise an iterable of result lines in one pass."""
    return Summarizer(suite).add_all(lines).result()


def iter_results(path: str | Path) -> Iterator[ResultLine]:
    """Read ``results.jsonl`` lazily, one parsed line at a time (blank lines skipped)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield cast(ResultLine, orjson.loads(raw))
            except orjson.JSONDecodeError as e:
                raise InvalidRequest(f"{path}:{number}: not a JSON result line ({e})") from None


# --------------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class CaseChange:
    """A case whose verdict changed; ``explanation`` says why the failing side failed."""

    case: str
    explanation: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "explanation": self.explanation}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseChange:
        return cls(case=str(data["case"]), explanation=str(data.get("explanation", "")))


@dataclass(slots=True)
class ScorerDelta:
    """One scorer's pass rate and mean value on each side (None where a side lacks the scorer)."""

    baseline_pass_rate: float | None
    current_pass_rate: float | None
    baseline_mean: float | None
    current_mean: float | None

    @property
    def delta_pass_rate(self) -> float | None:
        if self.baseline_pass_rate is None or self.current_pass_rate is None:
            return None
        return self.current_pass_rate - self.baseline_pass_rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline_pass_rate": self.baseline_pass_rate,
            "current_pass_rate": self.current_pass_rate,
            "baseline_mean": self.baseline_mean,
            "current_mean": self.current_mean,
            "delta_pass_rate": self.delta_pass_rate,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScorerDelta:
        return cls(
            baseline_pass_rate=_opt_float(data.get("baseline_pass_rate")),
            current_pass_rate=_opt_float(data.get("current_pass_rate")),
            baseline_mean=_opt_float(data.get("baseline_mean")),
            current_mean=_opt_float(data.get("current_mean")),
        )


@dataclass(slots=True)
class Comparison:
    """The current run of a target against a baseline run, case by case.

    ``worse`` is the gate: one-sided exact McNemar p (regressions vs improvements) < ``alpha``.
    ``reason`` is one line a CI gate can print.
    """

    target: str
    baseline_target: str
    alpha: float
    regressions: list[CaseChange]
    improvements: list[CaseChange]
    unchanged_pass: int
    unchanged_fail: int
    flaky: int  # common cases flaky on either side: not in the McNemar test
    only_baseline: list[str]
    only_current: list[str]
    mcnemar_p_worse: float
    mcnemar_p_two_sided: float
    score_delta: float  # paired bootstrap over per-case mean scores of the common cases
    score_ci_low: float
    score_ci_high: float
    score_p_worse: float
    baseline_pass_rate: float
    current_pass_rate: float
    scorers: dict[str, ScorerDelta]
    worse: bool
    reason: str

    @property
    def delta_pass_rate(self) -> float:
        return self.current_pass_rate - self.baseline_pass_rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": COMPARISON_FORMAT,
            "target": self.target,
            "baseline_target": self.baseline_target,
            "alpha": self.alpha,
            "regressions": [r.to_dict() for r in self.regressions],
            "improvements": [r.to_dict() for r in self.improvements],
            "unchanged_pass": self.unchanged_pass,
            "unchanged_fail": self.unchanged_fail,
            "flaky": self.flaky,
            "only_baseline": list(self.only_baseline),
            "only_current": list(self.only_current),
            "mcnemar_p_worse": self.mcnemar_p_worse,
            "mcnemar_p_two_sided": self.mcnemar_p_two_sided,
            "score_delta": self.score_delta,
            "score_ci_low": self.score_ci_low,
            "score_ci_high": self.score_ci_high,
            "score_p_worse": self.score_p_worse,
            "baseline_pass_rate": self.baseline_pass_rate,
            "current_pass_rate": self.current_pass_rate,
            "delta_pass_rate": self.delta_pass_rate,
            "scorers": {name: s.to_dict() for name, s in self.scorers.items()},
            "worse": self.worse,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        if data.get("format") != COMPARISON_FORMAT:
            raise InvalidRequest(
                f"not an eval comparison (format {data.get('format')!r}, expected {COMPARISON_FORMAT!r})"
            )
        return cls(
            target=str(data["target"]),
            baseline_target=str(data["baseline_target"]),
            alpha=float(data["alpha"]),
            regressions=[CaseChange.from_dict(r) for r in data["regressions"]],
            improvements=[CaseChange.from_dict(r) for r in data["improvements"]],
            unchanged_pass=int(data["unchanged_pass"]),
            unchanged_fail=int(data["unchanged_fail"]),
            flaky=int(data["flaky"]),
            only_baseline=[str(x) for x in data["only_baseline"]],
            only_current=[str(x) for x in data["only_current"]],
            mcnemar_p_worse=float(data["mcnemar_p_worse"]),
            mcnemar_p_two_sided=float(data["mcnemar_p_two_sided"]),
            score_delta=float(data["score_delta"]),
            score_ci_low=float(data["score_ci_low"]),
            score_ci_high=float(data["score_ci_high"]),
            score_p_worse=float(data["score_p_worse"]),
            baseline_pass_rate=float(data["baseline_pass_rate"]),
            current_pass_rate=float(data["current_pass_rate"]),
            scorers={str(k): ScorerDelta.from_dict(v) for k, v in data["scorers"].items()},
            worse=bool(data["worse"]),
            reason=str(data["reason"]),
        )


def _pick_targets(
    baseline: Summary, current: Summary, target: str | None, baseline_target: str | None
) -> tuple[str, str]:
    if target is not None or baseline_target is not None:
        cur = current.target(target if target is not None else baseline_target)
        base = baseline.target(baseline_target if baseline_target is not None else target)
        return base.target, cur.target
    if len(baseline.targets) == 1 and len(current.targets) == 1:
        # One target each: compare them even if the names differ (e.g. a new model vs the old one).
        return next(iter(baseline.targets)), next(iter(current.targets))
    raise InvalidRequest(
        f"the baseline has targets {', '.join(baseline.targets) or 'none'} and the current run "
        f"{', '.join(current.targets) or 'none'}; name the target to compare"
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _case_list(changes: Sequence[CaseChange], limit: int = 10) -> str:
    names = ", ".join(c.case for c in changes[:limit])
    return names + (f" and {len(changes) - limit} more" if len(changes) > limit else "")


def compare(
    baseline: Summary,
    current: Summary,
    target: str | None = None,
    alpha: float = 0.05,
    *,
    baseline_target: str | None = None,
    n_resamples: int = 10000,
    seed: int = 0,
) -> Comparison:
    """Compare one target of ``current`` with a target of ``baseline``, case by case.

    ``target`` names the current run's target and ``baseline_target`` the baseline's (default: the
    same name, so a renamed target can still be compared). With neither, each summary must have
    exactly one target (their names may differ).

    Gate rule: ``worse`` is True exactly when the one-sided exact McNemar p-value
    (:func:`mcnemar_exact` with b = regressions, c = improvements) is below ``alpha``. That already
    requires more regressions than improvements, so a run that trades one fixed case for one broken
    case never fails the gate, and neither does a single regression on its own (p = 0.5). The
    bootstrap on mean scores and the pass-rate delta are reported alongside, for people, not used by
    the gate: a gate with one rule is one a team can reason about.
    """
    base_name, cur_name = _pick_targets(baseline, current, target, baseline_target)
    base = baseline.targets[base_name]
    cur = current.targets[cur_name]
    cur_failures = {f.case: f.explanation for f in cur.failures}
    base_failures = {f.case: f.explanation for f in base.failures}

    regressions: list[CaseChange] = []
    improvements: list[CaseChange] = []
    unchanged_pass = unchanged_fail = flaky = 0
    only_current: list[str] = []
    base_scores: list[float] = []
    cur_scores: list[float] = []
    for case_id, now in cur.verdicts.items():
        before = base.verdicts.get(case_id)
        if before is None:
            only_current.append(case_id)
            continue
        base_scores.append(base.case_scores.get(case_id, 0.0))
        cur_scores.append(cur.case_scores.get(case_id, 0.0))
        if before == "flaky" or now == "flaky":
            flaky += 1
        elif before == now:
            if now == "pass":
                unchanged_pass += 1
            else:
                unchanged_fail += 1
        elif before == "pass":
            regressions.append(CaseChange(case_id, cur_failures.get(case_id, "")))
        else:
            improvements.append(CaseChange(case_id, base_failures.get(case_id, "")))
    only_baseline = [c for c in base.verdicts if c not in cur.verdicts]

    b, c = len(regressions), len(improvements)
    p_worse = mcnemar_exact(b, c, "worse")
    p_two = mcnemar_exact(b, c, "two-sided")
    delta, lo, hi, boot_p = paired_bootstrap(base_scores, cur_scores, n_resamples=n_resamples, seed=seed)
    worse = p_worse < alpha

    rates = f"pass rate {_pct(base.pass_rate)} -> {_pct(cur.pass_rate)}"
    counts = f"{_plural(b, 'regression')} vs {_plural(c, 'improvement')}"
    if worse:
        reason = f"{counts} (McNemar p={p_worse:.3g} < {alpha:g}; {rates}): {_case_list(regressions)}"
    elif b:
        reason = (
            f"{counts}, not significant (McNemar p={p_worse:.3g} >= {alpha:g}; {rates}): "
            f"{_case_list(regressions)}"
        )
    else:
        reason = f"no regressions, {_plural(c, 'improvement')} ({rates})"

    scorers = {
        name: ScorerDelta(
            baseline_pass_rate=base.scorers[name].pass_rate if name in base.scorers else None,
            current_pass_rate=cur.scorers[name].pass_rate if name in cur.scorers else None,
            baseline_mean=base.scorers[name].mean if name in base.scorers else None,
            current_mean=cur.scorers[name].mean if name in cur.scorers else None,
        )
        for name in dict.fromkeys([*base.scorers, *cur.scorers])
    }
    return Comparison(
        target=cur_name,
        baseline_target=base_name,
        alpha=alpha,
        regressions=regressions,
        improvements=improvements,
        unchanged_pass=unchanged_pass,
        unchanged_fail=unchanged_fail,
        flaky=flaky,
        only_baseline=only_baseline,
        only_current=only_current,
        mcnemar_p_worse=p_worse,
        mcnemar_p_two_sided=p_two,
        score_delta=delta,
        score_ci_low=lo,
        score_ci_high=hi,
        score_p_worse=boot_p,
        baseline_pass_rate=base.pass_rate,
        current_pass_rate=cur.pass_rate,
        scorers=scorers,
        worse=worse,
        reason=reason,
    )
