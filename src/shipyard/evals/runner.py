"""Run a suite: every case × target × repeat, concurrently, scored, written as it completes.

- Results go line by line to ``results.jsonl`` (memory stays flat however many cases there
  are: cases are streamed in, lines streamed out, statistics kept per case only).
- An interrupted run (Ctrl-C, a crash) resumes with ``resume=<run id>``: finished lines are read
  back and only the missing (case, target, repeat) are run.
- Target outputs are cached by (target fingerprint, input, params, repeat): re-running or
  re-scoring a suite does not call the model again unless ``use_cache=False``.
- Every run is an experiment run in the registry (experiment ``eval:<suite>``) with lineage links
  to the dataset, route, model and prompt versions, its summary, reports and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from shipyard.errors import InvalidRequest, NotFound, ShipyardError
from shipyard.evals.core import Case, Observation, OfflineEmbedder, ResultLine, Score
from shipyard.evals.suite import Suite, count_cases, iter_cases
from shipyard.evals.targets import EvalTarget, build_eval_runtime
from shipyard.gateway.service import Gateway
from shipyard.registry.runs import RunService
from shipyard.registry.versions import Registry
from shipyard.settings import Settings
from shipyard.store import evals as cache_q
from shipyard.store.db import Store
from shipyard.tracing.writer import TraceWriter

log = logging.getLogger("shipyard.evals")
CACHE_FLUSH = 200
FAIL_ON = ("auto", "threshold", "regression", "any", "none")


@dataclass
class RunOptions:
    name: str | None = None
    concurrency: int | None = None
    repeats: int | None = None
    use_cache: bool = True
    resume: str | None = None
    baseline: str | None = None  # a run id (prefix), or an alias of the suite's prompt (e.g. production)
    fail_on: str = "auto"  # auto | threshold | regression | any | none
    prompt_overrides: dict[str, str] = field(default_factory=dict)
    progress: bool = True
    tags: dict[str, str] = field(default_factory=dict)
    actor: str | None = None
    on_start: Callable[[str], None] | None = None  # told the run id as soon as the run exists

    def __post_init__(self) -> None:
        # Checked before any work, not after a long run.
        if self.fail_on not in FAIL_ON:
            raise InvalidRequest(
                f"--fail-on must be one of {', '.join(FAIL_ON)}; got `{self.fail_on}`", param="fail_on"
            )
        if self.fail_on == "regression" and not self.baseline:
            raise InvalidRequest(
                "--fail-on regression needs --baseline (a run id or a prompt alias)", param="baseline"
            )


@dataclass
class Gate:
    passed: bool
    reason: str
    checks: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    run_id: str
    suite: str
    summary: Any  # stats.Summary
    comparisons: dict[str, Any]  # target label -> stats.Comparison
    gate: Gate
    baseline_run: str | None
    executed: int
    reused: int
    cached: int
    results_path: Path
    reports: dict[str, Path] = field(default_factory=dict)


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)


class RunContext:
    """The ScoreContext the runner gives scorers: judge calls through the eval gateway, and
    embeddings from the offline embedding model (loaded on first use)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._embedder = OfflineEmbedder("eval-embeddings")

    async def complete(self, route: str, messages: list[dict[str, Any]], **params: Any) -> Observation:
        return await call_route(self.gateway, route, {"messages": messages, **params}, stream=False)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self._embedder.embed(texts)


async def call_route(
    gateway: Gateway, route: str, body: dict[str, Any], stream: bool, headers: dict[str, str] | None = None
) -> Observation:
    """One request through the gateway, as an Observation (errors included, never raised)."""
    request = {**body, "model": route}
    started = time.perf_counter()
    try:
        if stream:
            request["stream"] = True
            it, trace = await gateway.open_stream("chat", request, headers)
            async for _ in it:
                pass
        else:
            answer = await gateway.complete("chat", request, headers)
            trace = answer.trace
    except ShipyardError as exc:
        return Observation(output="", latency_ms=(time.perf_counter() - started) * 1000, error=str(exc))
    return Observation.of_trace(trace, error=trace.error if trace.status == "error" else None)


def request_body(case: Case, target: EvalTarget) -> dict[str, Any]:
    body: dict[str, Any] = dict(target.params)
    if isinstance(case.input, dict):
        body["messages"] = []
        body["variables"] = case.input
    else:
        body["messages"] = case.input
    return body


class EvalRunner:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store.for_settings(settings)
        self.store.migrate()
        self.registry = Registry(self.store)
        self.runs = RunService(self.store, settings.artifacts_path)

    def work_dir(self, run_id: str) -> Path:
        """Where a run's results grow while it runs (moved into its artifacts when it ends)."""
        return self.settings.home_path / "evals" / run_id

    def run(self, suite: Suite, options: RunOptions | None = None) -> Outcome:
        return asyncio.run(self.arun(suite, options or RunOptions()))

    # -- the run ---------------------------------------------------------------------------------
    async def arun(self, suite: Suite, options: RunOptions) -> Outcome:
        from shipyard.evals.stats import Summarizer

        repeats = options.repeats or suite.spec.repeats
        concurrency = options.concurrency or suite.spec.concurrency
        runtime, targets = await asyncio.to_thread(
            build_eval_runtime, self.registry, suite, self.settings.default_timeout, options.prompt_overrides
        )
        run_id = await asyncio.to_thread(self._open_run, suite, targets, options, repeats)
        if options.on_start is not None:
            options.on_start(run_id)
        work = self.work_dir(run_id)
        work.mkdir(parents=True, exist_ok=True)
        results_path = work / "results.jsonl"
        summarizer = Summarizer(suite.name)
        done: set[tuple[str, str, int]] = set()
        if results_path.exists():
            _drop_torn_tail(results_path)
            for line in _read_lines(results_path):
                done.add((line["case"], line["target"], int(line.get("repeat", 0))))
                summarizer.add(line)
        reused = len(done)
        total = count_cases(suite, self.store) * len(targets) * repeats
        writer = TraceWriter(
            self.store, capture=self.settings.capture_messages, max_chars=self.settings.capture_max_chars
        )
        writer.start()
        gateway = Gateway(runtime, writer, self.settings.default_timeout)
        await runtime.start()
        ctx = RunContext(gateway)
        stats = {"executed": 0, "cached": 0}
        pending_cache: list[tuple[str, dict[str, Any]]] = []
        headers = {"x-shipyard-tags": f"eval,{suite.name},run:{run_id}"}

        def jobs() -> Iterator[tuple[Case, EvalTarget, int]]:
            for case in iter_cases(suite, self.store):
                for target in targets:
                    for r in range(repeats):
                        if (case.id, target.label, r) not in done:
                            yield case, target, r

        job_iter = jobs()
        progress, task = _progress(options.progress, total, reused, suite.name)
        status = "finished"
        with results_path.open("ab") as out:

            async def work_on(case: Case, target: EvalTarget, repeat: int) -> None:
                body = request_body(case, target)
                key = hashlib.sha256(
                    target.fingerprint.encode() + b"\0" + _canonical(body) + b"\0" + str(repeat).encode()
                ).hexdigest()
                cached = (
                    await asyncio.to_thread(cache_q.cached, self.store, key) if options.use_cache else None
                )
                if cached is not None:
                    obs = Observation.from_dict(cached)
                    obs.cached = True
                    stats["cached"] += 1
                else:
                    obs = await call_route(gateway, target.route, body, suite.spec.stream, headers)
                    if obs.error is None:
                        pending_cache.append((key, obs.to_dict()))
                scores: dict[str, Score] = {}
                for scorer in suite.scorers:
                    scores[scorer.name] = await scorer.score(case, obs, ctx)
                line: ResultLine = {
                    "case": case.id,
                    "repeat": repeat,
                    "target": target.label,
                    "input": case.input,
                    "expected": case.expected,
                    "observation": obs.to_dict(),
                    "scores": {n: s.to_dict() for n, s in scores.items()},
                    "passed": obs.error is None and all(s.passed for s in scores.values()),
                }
                out.write(orjson.dumps(line, default=str) + b"\n")
                summarizer.add(line)
                stats["executed"] += 1
                if len(pending_cache) >= CACHE_FLUSH:
                    batch = pending_cache[:]
                    pending_cache.clear()
                    await asyncio.to_thread(cache_q.remember, self.store, batch)
                if progress is not None:
                    progress.advance(task)

            async def worker() -> None:
                for case, target, repeat in job_iter:  # the iterator is shared: each job taken once
                    await work_on(case, target, repeat)

            try:
                with progress or contextlib.nullcontext():
                    await asyncio.gather(*(worker() for _ in range(concurrency)))
            except (KeyboardInterrupt, asyncio.CancelledError):
                status = "killed"
                raise
            except BaseException:
                status = "failed"
                raise
            finally:
                out.flush()
                await asyncio.to_thread(cache_q.remember, self.store, pending_cache)
                await runtime.close()
                await asyncio.to_thread(writer.close)
                if status != "finished":
                    await asyncio.to_thread(self.runs.finish, run_id, status)
        summary = summarizer.result()
        return await asyncio.to_thread(
            self._close_run, suite, run_id, summary, options, stats, reused, results_path
        )

    def _open_run(self, suite: Suite, targets: list[EvalTarget], options: RunOptions, repeats: int) -> str:
        if options.resume:
            detail = self.runs.get(options.resume)
            if (detail.get("tags") or {}).get("suite") != suite.name:
                raise InvalidRequest(
                    f"run `{detail['run_id']}` is not a run of suite `{suite.name}`; resume it with its own "
                    "suite",
                    param="resume",
                )
            if detail["status"] == "finished":
                raise InvalidRequest(
                    f"run `{detail['run_id']}` already finished; there is nothing to resume", param="resume"
                )
            self.runs.reopen(detail["run_id"])
            return str(detail["run_id"])
        links: list[dict[str, Any]] = []
        if suite.spec.dataset.registry:
            from shipyard.registry import datasets

            info = datasets.resolve(self.store, suite.spec.dataset.registry)
            links.append({"kind": "dataset", "name": info.dataset, "version": info.version})
        for t in targets:
            links.extend(t.links)
        unique = list({(lk["kind"], lk["name"], lk["version"]): lk for lk in links}.values())
        params = {
            "suite": suite.name,
            "targets": suite.labels,
            "scorers": [f"{s.name}>={s.threshold:g}" for s in suite.scorers],
            "repeats": repeats,
            "dataset": suite.spec.dataset.registry or suite.spec.dataset.file or "inline",
            "suite_params": suite.spec.params,
        }
        if options.prompt_overrides:
            params["prompt_overrides"] = options.prompt_overrides
        run = self.runs.create(
            name=options.name or suite.name,
            experiment=f"eval:{suite.name}",
            params=params,
            tags={"kind": "eval", "suite": suite.name, **options.tags},
            links=unique,
            created_by=options.actor,
        )
        return str(run["run_id"])

    def _close_run(
        self,
        suite: Suite,
        run_id: str,
        summary: Any,
        options: RunOptions,
        stats: dict[str, int],
        reused: int,
        results_path: Path,
    ) -> Outcome:
        from shipyard.evals import report

        baseline_run, comparisons = self._compare(suite, run_id, summary, options)
        gate = decide(suite, summary, comparisons, options.fail_on, baseline_run is not None)
        self.runs.log_artifact(run_id, results_path, "results.jsonl")
        stored = self.runs.artifact_dir(run_id) / "results.jsonl"
        self.runs.write_dict(run_id, "summary.json", summary.to_dict())
        one = next(iter(comparisons.values()), None)
        reports = {
            "report.md": report.render_markdown(summary, one),
            "report.html": report.render_html(summary, one, _read_lines(stored), title=f"Eval: {suite.name}"),
            "junit.xml": report.render_junit(summary, _read_lines(stored)),
        }
        for name, text in reports.items():
            self.runs.write_artifact(run_id, name, text)
        if comparisons:
            self.runs.write_dict(
                run_id, "comparison.json", {label: c.to_dict() for label, c in comparisons.items()}
            )
        self.runs.log_metrics(run_id, summary_metrics(summary))
        tags = {"gate": "passed" if gate.passed else "failed", "gate_reason": gate.reason[:500]}
        if baseline_run:
            tags["baseline_run"] = baseline_run
        self.runs.set_tags(run_id, tags)
        self.runs.finish(run_id, "finished")
        shutil.rmtree(self.work_dir(run_id), ignore_errors=True)
        paths = {name: self.runs.artifact_dir(run_id) / name for name in reports}
        return Outcome(
            run_id,
            suite.name,
            summary,
            comparisons,
            gate,
            baseline_run,
            stats["executed"],
            reused,
            stats["cached"],
            stored,
            paths,
        )

    # -- baselines --------------------------------------------------------------------------------
    def find_baseline(self, suite: Suite, ref: str, exclude: str | None = None) -> str:
        """A finished run of this suite: `ref` is a run id (prefix), or a prompt alias/version
        (`production`, `v3`), meaning the newest run whose targets used that prompt version."""
        try:
            detail = self.runs.get(ref)
        except (NotFound, InvalidRequest):
            detail = None
        if detail is not None:
            if (detail.get("tags") or {}).get("suite") != suite.name:
                raise InvalidRequest(
                    f"baseline run `{detail['run_id']}` is a run of another suite", param="baseline"
                )
            return str(detail["run_id"])
        prompts = self.suite_prompts(suite)
        if not prompts:
            raise NotFound(
                f"`{ref}` is not a run id, and suite `{suite.name}` uses no prompt whose alias it could be",
                param="baseline",
            )
        wanted = set()
        for name in prompts:
            wanted.add((name, self.registry.get("prompt", name, ref).version))
        for run in self.runs.list_runs(experiment=f"eval:{suite.name}", status="finished", limit=200):
            if run["run_id"] == exclude:
                continue
            links = {
                (lk["name"], lk["version"])
                for lk in self.runs.get(run["run_id"])["links"]
                if lk["kind"] == "prompt"
            }
            if wanted <= links:
                return str(run["run_id"])
        versions = ", ".join(f"{n}@v{v}" for n, v in sorted(wanted))
        raise NotFound(
            f"no finished run of suite `{suite.name}` used {versions} (`{ref}`); run the suite against it "
            "first, or pass a run id as --baseline",
            param="baseline",
        )

    def suite_prompts(self, suite: Suite) -> set[str]:
        from shipyard.registry.versions import split_ref

        names = set()
        snapshot = self.registry.snapshot()
        for t in suite.spec.targets:
            if t.prompt:
                names.add(split_ref(t.prompt)[0])
            if t.route and ("route", t.route) in snapshot.current:
                spec = snapshot.current[("route", t.route)][2]
                for ref in [spec.get("prompt"), *(x.get("prompt") for x in spec.get("targets", []))]:
                    if ref:
                        names.add(split_ref(ref)[0])
        return names

    def load_summary(self, run_id: str) -> Any:
        from shipyard.evals.stats import Summary

        return Summary.from_dict(orjson.loads(self.runs.read_artifact(run_id, "summary.json")))

    def _compare(
        self, suite: Suite, run_id: str, summary: Any, options: RunOptions
    ) -> tuple[str | None, dict[str, Any]]:
        if not options.baseline:
            return None, {}
        from shipyard.evals.stats import compare

        baseline_run = self.find_baseline(suite, options.baseline, exclude=run_id)
        baseline = self.load_summary(baseline_run)
        out = {}
        base_targets = list(baseline.targets)
        for label in summary.targets:
            base_label = (
                label if label in baseline.targets else (base_targets[0] if len(base_targets) == 1 else None)
            )
            if base_label is None:
                continue
            out[label] = compare(baseline, summary, target=label, baseline_target=base_label)
        return baseline_run, out


def decide(suite: Suite, summary: Any, comparisons: dict[str, Any], fail_on: str, has_baseline: bool) -> Gate:
    """The CI gate. `threshold`: every target's pass rate reaches `pass_rate_min` (default 1.0);
    `regression`: no target is worse than the baseline with 95% confidence; `auto`: threshold,
    plus regression when a baseline was given; `any`: both; `none`: never fails."""
    if fail_on not in ("auto", "threshold", "regression", "any", "none"):
        raise InvalidRequest(f"--fail-on must be auto, threshold, regression, any or none; got `{fail_on}`")
    check_threshold = fail_on in ("auto", "threshold", "any")
    check_regression = fail_on in ("regression", "any") or (fail_on == "auto" and has_baseline)
    if fail_on == "regression" and not has_baseline:
        raise InvalidRequest("--fail-on regression needs --baseline (a run id or a prompt alias)")
    default_min = suite.spec.pass_rate_min if suite.spec.pass_rate_min is not None else 1.0
    per_target = {
        label: spec.pass_rate_min for label, spec in zip(suite.labels, suite.spec.targets, strict=True)
    }
    failures: list[str] = []
    checks: list[str] = []
    for label, t in summary.targets.items():
        own = per_target.get(label)
        minimum = own if own is not None else default_min
        rate = t.pass_rate
        line = f"{label}: pass rate {rate:.1%} (min {minimum:.0%})"
        checks.append(line)
        if check_threshold and rate + 1e-12 < minimum:
            failed = ", ".join(t.failed_ids[:5]) + (" …" if len(t.failed_ids) > 5 else "")
            failures.append(f"{label} pass rate {rate:.1%} < {minimum:.0%} (failed: {failed})")
    for label, c in comparisons.items():
        checks.append(f"{label}: {c.reason}")
        if check_regression and c.worse:
            failures.append(f"{label} regressed: {c.reason}")
    if failures:
        return Gate(False, "gate failed: " + "; ".join(failures), checks)
    return Gate(True, "gate passed: " + "; ".join(checks), checks)


def summary_metrics(summary: Any) -> list[dict[str, Any]]:
    """Run metrics: per target (prefixed by its label when there are several) and overall."""
    import re

    out = []
    if len(summary.targets) > 1:
        passed = sum(t.passed for t in summary.targets.values())
        decided = sum(t.decided for t in summary.targets.values())
        out.append({"key": "pass_rate", "value": passed / decided if decided else 0.0})
    for label, t in summary.targets.items():
        prefix = re.sub(r"[^A-Za-z0-9 _.:/-]", "_", label) if len(summary.targets) > 1 else ""

        def key(name: str, prefix: str = prefix) -> str:
            return f"{prefix}/{name}" if prefix else name

        out.append({"key": key("pass_rate"), "value": t.pass_rate})
        out.append({"key": key("flaky_cases"), "value": float(t.flaky)})
        out.append({"key": key("errors"), "value": float(t.errored)})
        if t.latency_p50_ms is not None:
            out.append({"key": key("latency_p50_ms"), "value": t.latency_p50_ms})
        out.append({"key": key("cost_usd"), "value": t.cost_usd or 0.0})
        for name, scorer in t.scorers.items():
            out.append({"key": key(f"score/{name}"), "value": scorer.mean})
            out.append({"key": key(f"pass_rate/{name}"), "value": scorer.pass_rate})
    return out


def _drop_torn_tail(path: Path) -> None:
    """A run killed mid-write can leave half a line at the end; cut it so appends start clean."""
    with path.open("rb+") as f:
        f.seek(0, 2)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        step = min(size, 1 << 16)
        pos = size
        while pos > 0:
            start = max(0, pos - step)
            f.seek(start)
            chunk = f.read(pos - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                f.truncate(start + cut + 1)
                return
            pos = start
        f.truncate(0)


def _read_lines(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                try:
                    yield orjson.loads(raw)
                except orjson.JSONDecodeError:
                    # A run killed mid-write leaves a torn last line: it is simply run again.
                    continue


def _progress(enabled: bool, total: int, done: int, name: str) -> tuple[Any, Any]:
    if not enabled:
        return None, None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    stream: IO[str] = sys.stderr
    progress = Progress(
        TextColumn(f"eval {name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(file=stream),
        transient=False,
    )
    task = progress.add_task("run", total=total, completed=done)
    return progress, task
