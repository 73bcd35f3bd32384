"""Eval-gated promotion: an alias moves to a candidate prompt version only if the candidate
passes a suite, compared with the version the alias points at now. The eval run is the evidence,
recorded with the alias move (or, when refused, on the run itself)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from shipyard.errors import InvalidRequest, NotFound
from shipyard.evals.runner import EvalRunner, RunOptions
from shipyard.evals.suite import Suite
from shipyard.store.audit import Actor


@dataclass
class Promotion:
    promoted: bool
    message: str
    prompt: str
    alias: str
    candidate: int
    previous: int | None
    run_id: str | None = None
    baseline_run: str | None = None
    log: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def promote_prompt(
    runner: EvalRunner,
    suite: Suite,
    name: str,
    alias: str,
    candidate_ref: str = "current",
    *,
    actor: str | Actor | None = None,
    reason: str | None = None,
    progress: bool = False,
) -> Promotion:
    registry = runner.registry
    run_actor = actor.name if isinstance(actor, Actor) else actor
    candidate = registry.get("prompt", name, candidate_ref)
    if name not in runner.suite_prompts(suite):
        raise InvalidRequest(
            f"suite `{suite.name}` does not use prompt `{name}` (in a target's `prompt:` or a route's), "
            "so it cannot judge a candidate of it",
            param="require",
        )
    try:
        previous: int | None = registry.get("prompt", name, alias).version
    except NotFound:
        previous = None
    log: list[str] = []
    if previous == candidate.version:
        return Promotion(
            True,
            f"{name}@{alias} already points at v{candidate.version}; nothing to do",
            name,
            alias,
            candidate.version,
            previous,
            log=log,
        )
    baseline_run = None
    if previous is not None:
        try:
            baseline_run = runner.find_baseline(suite, f"v{previous}")
            log.append(f"baseline: run {baseline_run} of {name}@v{previous} ({alias} now)")
        except NotFound:
            log.append(f"baseline: no run of suite `{suite.name}` with {name}@v{previous} yet; running it")
            outcome = runner.run(
                suite,
                RunOptions(
                    prompt_overrides={name: f"{name}@v{previous}"},
                    fail_on="none",
                    progress=progress,
                    actor=run_actor,
                    tags={"promotion": "baseline", "prompt": f"{name}@v{previous}"},
                ),
            )
            baseline_run = outcome.run_id
            log.append(
                f"baseline: run {baseline_run}, pass rate "
                + ", ".join(f"{t.pass_rate:.1%}" for t in outcome.summary.targets.values())
            )
    outcome = runner.run(
        suite,
        RunOptions(
            prompt_overrides={name: f"{name}@v{candidate.version}"},
            baseline=baseline_run,
            fail_on="any" if baseline_run else "threshold",
            progress=progress,
            actor=run_actor,
            tags={"promotion": f"{name}->{alias}", "prompt": f"{name}@v{candidate.version}"},
        ),
    )
    log.append(f"candidate: run {outcome.run_id} of {name}@v{candidate.version}: {outcome.gate.reason}")

    def result(promoted: bool, message: str) -> Promotion:
        """The candidate run tagged with the result (after any alias move), and the Promotion."""
        runner.runs.set_tags(outcome.run_id, {"promotion_result": "promoted" if promoted else "refused"})
        return Promotion(
            promoted, message, name, alias, candidate.version, previous, outcome.run_id, baseline_run, log
        )

    if not outcome.gate.passed:
        return result(False, f"refused: {name}@{alias} stays at v{previous}; {outcome.gate.reason}")
    why = reason or f"promoted by eval run {outcome.run_id} ({suite.name})"
    registry.set_alias(
        "prompt",
        name,
        alias,
        f"v{candidate.version}",
        actor=actor,
        reason=why,
        evidence={
            "eval_run": outcome.run_id,
            "suite": suite.name,
            "baseline_run": baseline_run,
            "gate": outcome.gate.reason,
        },
    )
    before = f"v{previous}" if previous is not None else "(new)"
    return result(True, f"promoted: {name}@{alias} {before} → v{candidate.version}; {outcome.gate.reason}")
