"""Comparisons of a run with a baseline, case by case, and the regression gate's one rule.

Cases pair by id. A case that passed in the baseline and fails now is a *regression*, the reverse
an *improvement*; cases flaky on either side are counted apart and do not enter the McNemar test
(which needs a binary outcome per side). The current run is **worse** when the one-sided exact
McNemar test (regressions vs improvements) gives p < alpha.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shipyard.errors import InvalidRequest
from shipyard.evals.stats.inference import mcnemar_exact, paired_bootstrap
from shipyard.evals.stats.summary import Summary, optional_float

COMPARISON_FORMAT = "shipyard.eval-comparison/1"


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
            baseline_pass_rate=optional_float(data.get("baseline_pass_rate")),
            current_pass_rate=optional_float(data.get("current_pass_rate")),
            baseline_mean=optional_float(data.get("baseline_mean")),
            current_mean=optional_float(data.get("current_mean")),
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
