"""Eval suites from Python: the same thing as `shipyard eval run`.

from shipyard.evals import run_suite
outcome = run_suite({"name": "smoke", "dataset": {"cases": [...]}, "targets": [{"route": "support"}],
                     "scorers": [{"type": "contains"}]})
assert outcome.gate.passed, outcome.gate.reason
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run_suite(suite: str | Path | dict[str, Any], home: str | None = None, **options: Any) -> Any:
    """Run a suite (a YAML path, or the same structure as a dict) and return its Outcome.
    ``options`` are :class:`shipyard.evals.runner.RunOptions` fields (baseline, fail_on, …)."""
    from shipyard.evals.runner import EvalRunner, RunOptions
    from shipyard.evals.suite import load_suite, suite_from_dict
    from shipyard.settings import Settings

    loaded = suite_from_dict(suite) if isinstance(suite, dict) else load_suite(suite)
    options.setdefault("progress", False)
    return EvalRunner(Settings(overrides={"home": home})).run(loaded, RunOptions(**options))
