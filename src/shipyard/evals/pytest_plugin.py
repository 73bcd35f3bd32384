"""pytest plugin: LLM tests next to the code, scored like suites, recorded as a run.

    def test_capital(shipyard_eval):
        target = shipyard_eval.target(route="support")
        answer = target.ask(variables={"question": "Capital of France?"})
        shipyard_eval.assert_score(answer, {"type": "contains", "value": "Paris"})

Targets are the same as in suite files (a registry route, a prompt on a registry model, an
OpenAI-compatible endpoint) and are called in-process through the gateway, so every call is
traced. At the end of the session every scored answer is stored as one experiment run
(experiment ``pytest``), with results.jsonl, a summary and the reports. The store is the one
`SHIPYARD_HOME` (or ``--shipyard-home`` / the ``shipyard_home`` ini option) points at.

The plugin is registered for every pytest session where Shipyard is installed; it does nothing
until a test asks for the ``shipyard_eval`` fixture.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shipyard")
    group.addoption("--shipyard-home", default=None, help="Shipyard home (store) for shipyard_eval tests.")
    parser.addini("shipyard_home", "Shipyard home (store) for shipyard_eval tests.", default=None)


class Answer:
    """What a target said; ``.text`` is the output, ``.observation`` everything measured."""

    def __init__(self, observation: Any, case: Any, target: str) -> None:
        self.observation = observation
        self.case = case
        self.target = target

    @property
    def text(self) -> str:
        return str(self.observation.output)

    def __str__(self) -> str:
        return self.text


class Target:
    def __init__(self, session: EvalSession, label: str, route: Any) -> None:
        self._session = session
        self.label = label
        self._route = route

    def ask(
        self,
        variables: dict[str, Any] | None = None,
        messages: list[dict[str, Any]] | None = None,
        expected: Any = None,
        case_id: str | None = None,
    ) -> Answer:
        """Send one case (template variables, or messages) and return the answer (never raises for
        a failed call: the answer carries the error and every scorer fails it)."""
        from shipyard.evals.core import Case
        from shipyard.evals.runner import call_route, request_body

        if (variables is None) == (messages is None):
            raise ValueError("give either variables= (for a prompt template) or messages=")
        payload: Any = variables if variables is not None else messages
        case = Case(id=case_id or self._session.current_test(), input=payload, expected=expected)
        body = request_body(case, self._route)
        observation = self._session.call(call_route(self._session.gateway, self._route.route, body, False))
        return Answer(observation, case, self.label)


class EvalSession:
    def __init__(self, home: str | None, rootname: str) -> None:
        from shipyard.evals.runner import EvalRunner
        from shipyard.settings import Settings

        self.settings = Settings(overrides={"home": home})
        self.runner = EvalRunner(self.settings)
        self.rootname = rootname
        self.lines: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="shipyard-eval-loop", daemon=True)
        self._thread.start()
        self._gateway: Any = None
        self._writer: Any = None
        self._runtimes: list[Any] = []
        self._test = "test"
        self._links: dict[tuple[str, str, int], dict[str, Any]] = {}

    # -- plumbing ----------------------------------------------------------------------------------
    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def current_test(self) -> str:
        return self._test

    @property
    def gateway(self) -> Any:
        return self._gateway

    def _ensure_gateway(self, runtime: Any) -> None:
        from shipyard.gateway.service import Gateway
        from shipyard.tracing.writer import TraceWriter

        if self._writer is None:
            self._writer = TraceWriter(self.runner.store, capture=self.settings.capture_messages)
            self._writer.start()
        if self._gateway is None:
            self._gateway = Gateway(runtime, self._writer, self.settings.default_timeout)
        else:
            # Targets built later add their routes to the same gateway.
            self._gateway.runtime.routes.update(runtime.routes)

    # -- the API tests use -------------------------------------------------------------------------
    def target(
        self,
        route: str | None = None,
        *,
        prompt: str | None = None,
        model: str | None = None,
        endpoint: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        label: str | None = None,
    ) -> Target:
        """A target like a suite's: `route=` (registry), `prompt=` + `model=`, or `endpoint=`."""
        from shipyard.evals.suite import TargetSpec
        from shipyard.evals.targets import build_target_runtime

        spec = TargetSpec.model_validate(
            {
                k: v
                for k, v in {
                    "route": route,
                    "prompt": prompt,
                    "model": model,
                    "endpoint": endpoint,
                    "params": params or {},
                    "label": label,
                }.items()
                if v is not None
            }
        )
        name = spec.default_label()
        runtime, (built,) = build_target_runtime(
            self.runner.registry,
            [spec],
            [name],
            {},
            False,
            self.settings.default_timeout,
            what="pytest target",
        )
        # Each target gets its own route name in the shared gateway.
        suffix = hashlib.sha256(built.fingerprint.encode()).hexdigest()[:8]
        runtime.routes[f"{built.route}:{suffix}"] = runtime.routes.pop(built.route)
        built.route = f"{built.route}:{suffix}"
        self.call(runtime.start())
        self._runtimes.append(runtime)
        self._ensure_gateway(runtime)
        for link in built.links:
            self._links[(link["kind"], link["name"], link["version"])] = link
        return Target(self, name, built)

    def scorer(self, spec: dict[str, Any] | str, **options: Any) -> Any:
        from shipyard.evals.scorers import build_scorers

        if isinstance(spec, str):
            spec = {"type": spec, **options}
        return build_scorers([spec])[0]

    def assert_score(self, answer: Answer, *scorers: Any, expected: Any = None, **options: Any) -> list[Any]:
        """Score the answer with each scorer (a Scorer, a `{type: …}` dict or a type name with
        options as keywords); record the result; fail the test with the explanations of every
        scorer that did not pass."""
        from shipyard.evals.runner import RunContext

        __tracebackhide__ = True  # a failure points at the test's line, not at this plugin
        built = [s if hasattr(s, "score") else self.scorer(s, **options) for s in scorers]
        if not built:
            raise ValueError("assert_score needs at least one scorer")
        case = answer.case
        if expected is not None:
            case.expected = expected
        ctx = RunContext(self._gateway)
        results = [self.call(s.score(case, answer.observation, ctx)) for s in built]
        passed = answer.observation.error is None and all(r.passed for r in results)
        self.lines.append(
            {
                "case": case.id,
                "repeat": sum(
                    1 for line in self.lines if line["case"] == case.id and line["target"] == answer.target
                ),
                "target": answer.target,
                "input": case.input,
                "expected": case.expected,
                "observation": answer.observation.to_dict(),
                "scores": {s.name: r.to_dict() for s, r in zip(built, results, strict=True)},
                "passed": passed,
            }
        )
        if not passed:
            reasons = [
                f"{s.name}: {r.explanation}" for s, r in zip(built, results, strict=True) if not r.passed
            ]
            if answer.observation.error:
                reasons.insert(0, f"the call failed: {answer.observation.error}")
            raise AssertionError(f"{answer.target} answered {answer.text!r}\n  " + "\n  ".join(reasons))
        return results

    # -- the end -----------------------------------------------------------------------------------
    def finish(self) -> str | None:
        """Record every scored answer as one run; return its id (None when nothing was scored)."""
        run_id = None
        try:
            if self.lines:
                run_id = self._record()
        finally:
            for runtime in self._runtimes:
                self.call(runtime.close())
            if self._writer is not None:
                self._writer.close()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        return run_id

    def _record(self) -> str:
        import tempfile

        import orjson

        from shipyard.evals import report
        from shipyard.evals.stats import Summarizer

        runs = self.runner.runs
        summarizer = Summarizer(f"pytest:{self.rootname}")
        for line in self.lines:
            summarizer.add(line)
        summary = summarizer.result()
        run = runs.create(
            name=f"pytest {self.rootname}",
            experiment="pytest",
            params={"tests": len({line["case"] for line in self.lines})},
            tags={"kind": "eval", "suite": f"pytest:{self.rootname}"},
            links=list(self._links.values()),
        )
        run_id = str(run["run_id"])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "results.jsonl"
            path.write_bytes(b"".join(orjson.dumps(line, default=str) + b"\n" for line in self.lines))
            runs.log_artifact(run_id, path, "results.jsonl")
        runs.write_dict(run_id, "summary.json", summary.to_dict())
        runs.write_artifact(run_id, "report.md", report.render_markdown(summary, None))
        runs.write_artifact(run_id, "junit.xml", report.render_junit(summary, iter(self.lines)))
        from shipyard.evals.runner import summary_metrics

        runs.log_metrics(run_id, summary_metrics(summary))
        runs.finish(run_id, "finished")
        return run_id


@pytest.fixture(scope="session")
def shipyard_eval(request: pytest.FixtureRequest) -> Iterator[EvalSession]:
    """Targets, scorers and `assert_score` for LLM tests; results become one Shipyard run."""
    config = request.config
    home = config.getoption("--shipyard-home") or config.getini("shipyard_home") or None
    session = EvalSession(home, Path(str(config.rootpath)).name)
    config.stash[_SESSION] = session
    yield session
    run_id = session.finish()
    if run_id:
        config.stash[_RUN] = run_id


@pytest.fixture(autouse=True)
def _shipyard_current_test(request: pytest.FixtureRequest) -> None:
    """Name cases after the test that asked (only matters when shipyard_eval is in use)."""
    session = request.config.stash.get(_SESSION, None)
    if session is not None:
        session._test = request.node.nodeid


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run_id = config.stash.get(_RUN, None)
    if run_id:
        terminalreporter.write_line(
            f"shipyard: eval results recorded as run {run_id} (`shipyard runs show {run_id[:12]}`)"
        )


_SESSION = pytest.StashKey[EvalSession]()
_RUN = pytest.StashKey[str]()
