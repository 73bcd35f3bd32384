"""`shipyard eval run|compare|show` and `shipyard promote`: test changes before they ship."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from shipyard.cli.common import (
    CliTable,
    Col,
    HomeOpt,
    JsonOpt,
    cli_actor,
    console,
    err_console,
    open_store,
    print_json,
    settings_only,
)
from shipyard.errors import InvalidRequest

app = typer.Typer(
    help="Run eval suites: scored, compared with a baseline, gated for CI.", no_args_is_help=True
)


def _runner(home: str | None, create: bool = False) -> Any:
    """The runner on the store; eval runs record a run, so they may create the store."""
    from shipyard.evals.runner import EvalRunner

    settings = settings_only(home)
    return EvalRunner(settings, open_store(settings, create=create)), cli_actor(settings)


def _write_reports(
    outcome: Any, report_dir: Path | None, junit: Path | None, markdown: Path | None, html: Path | None
) -> None:
    wanted: dict[str, Path] = {}
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        wanted = {name: report_dir / name for name in ("report.md", "report.html", "junit.xml")}
    for name, path in (("junit.xml", junit), ("report.md", markdown), ("report.html", html)):
        if path is not None:
            wanted[name] = path
    for name, path in wanted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(outcome.reports[name], path)
        err_console.print(f"[dim]wrote {path}[/dim]")


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary without its per-case maps (they are in the run's summary.json artifact)."""
    targets = {
        label: {k: v for k, v in t.items() if k not in ("verdicts", "case_scores")}
        for label, t in summary.get("targets", {}).items()
    }
    return {**summary, "targets": targets}


def _outcome_json(outcome: Any) -> dict[str, Any]:
    return {
        "run_id": outcome.run_id,
        "suite": outcome.suite,
        "gate": {"passed": outcome.gate.passed, "reason": outcome.gate.reason, "checks": outcome.gate.checks},
        "baseline_run": outcome.baseline_run,
        "executed": outcome.executed,
        "resumed": outcome.reused,
        "cached": outcome.cached,
        "summary": _brief(outcome.summary.to_dict()),
        "comparisons": {k: v.to_dict() for k, v in outcome.comparisons.items()},
        "artifacts": {k: str(v) for k, v in outcome.reports.items()}
        | {"results.jsonl": str(outcome.results_path)},
    }


@app.command("run")
def run(
    suite_file: Path = typer.Argument(..., help="The suite YAML."),
    baseline: str = typer.Option(
        None,
        "--baseline",
        "-b",
        help="Compare with this run (id or prefix), or with "
        "the newest run that used this alias/version of the suite's prompt "
        "(e.g. production).",
        show_default=False,
    ),
    fail_on: str = typer.Option(
        "auto",
        "--fail-on",
        help="What fails the gate: threshold (pass rate below "
        "pass_rate_min), regression (worse than the baseline with 95% confidence), "
        "any, none, or auto (threshold, plus regression with --baseline).",
    ),
    resume: str = typer.Option(
        None,
        "--resume",
        help="Continue an interrupted run (its id or prefix): only unfinished cases run.",
        show_default=False,
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Call targets again even for inputs already answered."
    ),
    repeats: int = typer.Option(
        None, "--repeats", min=1, help="Override the suite's repeats.", show_default=False
    ),
    concurrency: int = typer.Option(
        None, "--concurrency", "-j", min=1, help="Override the suite's concurrency.", show_default=False
    ),
    report_dir: Path = typer.Option(
        None, "--report-dir", help="Write report.md, report.html and junit.xml here.", show_default=False
    ),
    junit: Path = typer.Option(None, "--junit", help="Write the JUnit XML here.", show_default=False),
    markdown: Path = typer.Option(
        None, "--markdown", help="Write the Markdown report here.", show_default=False
    ),
    html: Path = typer.Option(None, "--html", help="Write the HTML report here.", show_default=False),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Run a suite against its targets and gate on the result. Exit code 0: the gate passed;
    1: the gate failed (the reason is printed in one line); 2: the suite or an option is wrong."""
    from shipyard.evals import report
    from shipyard.evals.runner import RunOptions
    from shipyard.evals.suite import load_suite

    suite = load_suite(suite_file)
    runner, actor = _runner(home, create=True)
    options = RunOptions(
        resume=resume,
        baseline=baseline,
        fail_on=fail_on,
        use_cache=not no_cache,
        repeats=repeats,
        concurrency=concurrency,
        progress=not quiet and not json_out,
        actor=actor,
    )
    try:
        outcome = runner.run(suite, options)
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/yellow]: the run is saved as killed; continue it with "
            "`shipyard eval run SUITE --resume RUN_ID` (`shipyard runs list` shows the id)"
        )
        raise typer.Exit(130) from None
    _write_reports(outcome, report_dir, junit, markdown, html)
    if json_out:
        print_json(_outcome_json(outcome))
    else:
        comparison = next(iter(outcome.comparisons.values()), None)
        report.render_terminal(outcome.summary, comparison, console)
        reused = f", {outcome.reused} resumed" if outcome.reused else ""
        console.print(
            f"run {outcome.run_id}: {outcome.executed} executed ({outcome.cached} from cache){reused}"
            + (f"; baseline {outcome.baseline_run}" if outcome.baseline_run else "")
        )
    colour = "green" if outcome.gate.passed else "red"
    err_console.print(f"[{colour}]{escape(outcome.gate.reason)}[/{colour}]", highlight=False)
    if not outcome.gate.passed:
        raise typer.Exit(1)


@app.command("compare")
def compare(
    suite_file: Path = typer.Argument(..., help="A suite with several targets (routes, models, endpoints)."),
    html: Path = typer.Option(
        None, "--html", help="Write the comparison report (with a quality-vs-cost plot).", show_default=False
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Call targets again even for inputs already answered."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Run one suite against several targets and put quality, latency and cost side by side:
    how to choose a model, a prompt or a backend."""
    from shipyard.evals import report
    from shipyard.evals.runner import RunOptions
    from shipyard.evals.suite import load_suite

    suite = load_suite(suite_file)
    runner, actor = _runner(home, create=True)
    outcome = runner.run(
        suite,
        RunOptions(
            fail_on="none",
            use_cache=not no_cache,
            progress=not quiet and not json_out,
            actor=actor,
            tags={"compare": "true"},
        ),
    )
    rows = []
    for label, t in outcome.summary.targets.items():
        rows.append(
            {
                "target": label,
                "pass_rate": t.pass_rate,
                "pass_rate_ci": [t.ci_low, t.ci_high],
                "latency_p50_ms": t.latency_p50_ms,
                "latency_p95_ms": t.latency_p95_ms,
                "cost_usd": t.cost_usd,
                "cost_per_case_usd": t.cost_per_case_usd,
                "flaky": t.flaky,
                "errors": t.errored,
            }
        )
    text = report.render_compare_html(
        {label: outcome.summary for label in outcome.summary.targets}, title=f"Compare: {suite.name}"
    )
    stored = runner.runs.write_artifact(outcome.run_id, "compare.html", text)
    if html is not None:
        html.write_text(text, "utf-8")
        err_console.print(f"[dim]wrote {html}[/dim]")
    if json_out:
        print_json({"run_id": outcome.run_id, "targets": rows, "artifact": stored["path"]})
        return
    table = CliTable(
        Col("target"),
        Col("pass rate (95% CI)", justify="right"),
        Col("p50 ms", justify="right", drop=4),
        Col("p95 ms", justify="right", drop=2),
        Col("cost $", justify="right", drop=5),
        Col("$ / case", justify="right", drop=3),
        Col("flaky", justify="right", drop=1),
        Col("errors", justify="right", drop=6),
        title=f"{escape(suite.name)}: {len(rows)} target(s), run {outcome.run_id}",
    )
    best = max(r["pass_rate"] for r in rows) if rows else 0
    for r in rows:
        mark = " ★" if r["pass_rate"] == best else ""
        table.add_row(
            escape(r["target"]) + mark,
            f"{r['pass_rate']:.1%} ({r['pass_rate_ci'][0]:.0%}–{r['pass_rate_ci'][1]:.0%})",
            _num(r["latency_p50_ms"]),
            _num(r["latency_p95_ms"]),
            f"{r['cost_usd'] or 0:.4g}",
            f"{r['cost_per_case_usd'] or 0:.4g}",
            str(r["flaky"]),
            str(r["errors"]),
        )
    console.print(table)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


@app.command("show")
def show(
    run_ref: str = typer.Argument(..., help="An eval run id (or prefix)."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Print a stored eval run's summary (and its comparison with its baseline, if it had one)."""
    import orjson

    from shipyard.evals import report
    from shipyard.evals.stats import Comparison

    runner, _ = _runner(home)
    detail = runner.runs.get(run_ref)
    if (detail.get("tags") or {}).get("kind") != "eval":
        raise InvalidRequest(f"run `{detail['run_id']}` is not an eval run")
    summary = runner.load_summary(detail["run_id"])
    comparison = None
    if any(a["path"] == "comparison.json" for a in detail["artifacts"]):
        stored = orjson.loads(runner.runs.read_artifact(detail["run_id"], "comparison.json"))
        first = next(iter(stored.values()), None)
        comparison = Comparison.from_dict(first) if first else None
    if json_out:
        print_json(
            {
                "run": detail,
                "summary": summary.to_dict(),
                "comparison": comparison.to_dict() if comparison else None,
            }
        )
        return
    report.render_terminal(summary, comparison, console)
    tags = detail.get("tags") or {}
    console.print(f"{tags.get('gate', '?')}: {tags.get('gate_reason', '')}", markup=False, highlight=False)


def promote(
    kind: str = typer.Argument(..., help="What to promote: `prompt`."),
    name: str = typer.Argument(..., help="Its name."),
    to: str = typer.Option(..., "--to", help="The alias to move, e.g. production."),
    require: Path = typer.Option(..., "--require", help="The suite the candidate must pass."),
    candidate: str = typer.Option(
        "current", "--candidate", help="Version to promote (v3, an alias, a hash prefix)."
    ),
    reason: str = typer.Option(None, "--reason", "-r", help="Recorded with the alias move."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Move ALIAS to the candidate only if it passes the suite: the suite runs with the candidate
    in place of the prompt, is compared with the version the alias points at now, and the run is
    kept as the promotion's evidence (shown in the alias history). Exit 1 when refused."""
    from shipyard.evals.promote import promote_prompt
    from shipyard.evals.suite import load_suite

    if kind not in ("prompt", "prompts"):
        raise InvalidRequest(f"`shipyard promote` promotes prompts; got `{kind}`", param="kind")
    suite = load_suite(require)
    runner, actor = _runner(home)
    result = promote_prompt(
        runner,
        suite,
        name,
        to,
        candidate,
        actor=actor,
        reason=reason,
        progress=not quiet and not json_out,
    )
    if json_out:
        print_json(result.to_dict())
    else:
        for line in result.log:
            console.print(line, markup=False, highlight=False)
    colour = "green" if result.promoted else "red"
    err_console.print(f"[{colour}]{escape(result.message)}[/{colour}]", highlight=False)
    if not result.promoted:
        raise typer.Exit(1)
