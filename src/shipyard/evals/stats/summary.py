"""Summaries of an eval run: one streaming pass over ``results.jsonl`` into per-target figures.

An eval run writes one :class:`~shipyard.evals.core.ResultLine` per (case, target, repeat); runs can
hold tens of thousands of cases, so everything here reads the lines once, as a stream, and keeps
only small per-case state (a pass count, a score sum, a short explanation for failing cases) plus
one float per run for the latency percentiles. Whole lines are never kept.

Verdicts. A case run N times against a target is

- ``pass`` when every repeat passed, ``fail`` when every repeat failed, and
- ``flaky`` when the repeats disagree. Flaky cases are reported on their own and left out of the
  pass rate and its confidence interval: counting them as failures would make a nondeterministic
  target look broken, counting them as passes would hide the nondeterminism. The per-case mean
  score (used by the paired bootstrap) still includes every repeat.
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
from shipyard.evals.stats.inference import wilson

Verdict = Literal["pass", "fail", "flaky"]
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "flaky")

HISTOGRAM_BINS = 10  # over [0, 1]: bin i holds values in [i/10, (i+1)/10), the last one includes 1.0
MAX_EXPLANATION_CHARS = 300  # what a summary keeps per failing case; the full text is in results.jsonl
SUMMARY_FORMAT = "shipyard.eval-summary/1"
_NUMBER = (int, float)  # a tuple, not `int | float`: that builds a new union object on every call


def _short(text: str, limit: int = MAX_EXPLANATION_CHARS) -> str:
    text = " ".join(text.split())  # one line: summaries feed tables and CI logs
    return text if len(text) <= limit else text[: limit - 1] + "…"


def optional_float(value: Any) -> float | None:
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
            latency_mean_ms=optional_float(data.get("latency_mean_ms")),
            latency_p50_ms=optional_float(data.get("latency_p50_ms")),
            latency_p95_ms=optional_float(data.get("latency_p95_ms")),
            latency_p99_ms=optional_float(data.get("latency_p99_ms")),
            ttft_p50_ms=optional_float(data.get("ttft_p50_ms")),
            input_tokens=int(data["input_tokens"]),
            output_tokens=int(data["output_tokens"]),
            cost_usd=optional_float(data.get("cost_usd")),
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
