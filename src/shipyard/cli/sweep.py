"""`shipyard sweep`: a grid of routes × sampling parameters, each point judged by an eval suite
(quality, cost) and a short bench through the running gateway (p95 latency); the Pareto front and
the best point under --max-p95 / --max-cost. The engine is :mod:`shipyard.sweep`."""

from __future__ import annotations

import asyncio
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from shipyard import sweep as sw
from shipyard.cli.common import (
    CliTable,
    Col,
    ConfigOpt,
    HomeOpt,
    JsonOpt,
    cli_actor,
    console,
    err_console,
    exit_on_error,
    fail,
    open_store,
    print_json,
    resolve,
)
from shipyard.config.loader import ConfigError
from shipyard.durations import parse_duration

USAGE = 2


def _limits(max_p95: str | None, max_cost: float | None) -> sw.Limits:
    p95_ms = None
    if max_p95 is not None:
        try:
            p95_ms = parse_duration(max_p95) * 1000
        except ValueError as exc:
            raise sw.SweepError(f"--max-p95: {exc}", param="max_p95") from None
        if p95_ms <= 0:
            raise sw.SweepError("--max-p95 must be above 0 (e.g. 800ms, 2s)", param="max_p95")
    if max_cost is not None and max_cost < 0:
        raise sw.SweepError(
            f"--max-cost must be 0 or more US dollars per request; got {max_cost:g}", param="max_cost"
        )
    return sw.Limits(p95_ms, max_cost)


def _spec(
    spec_file: Path | None, suite: Path | None, targets: list[str], params: list[str], requests: int | None,
    concurrency: int | None,
) -> tuple[sw.SweepSpec, Path]:  # fmt: skip
    parsed = dict(sw.parse_param_option(p) for p in params)
    if spec_file is not None:
        spec, base = sw.load_spec(spec_file)
        if suite is not None:
            spec.suite = str(suite.resolve())
    else:
        if suite is None or not targets:
            raise sw.SweepError(
                "give --spec FILE, or --suite FILE with at least one --target ROUTE (and --param NAME=V1,V2)",
                param="spec",
            )
        spec, base = sw.build_spec({"suite": str(suite), "targets": targets}, "the command line"), Path.cwd()
    spec = sw.merged(spec, targets, parsed)
    if requests is not None:
        spec.bench.requests = requests
    if concurrency is not None:
        spec.bench.concurrency = concurrency
    return spec, base


def _table(result: dict[str, Any]) -> CliTable:
    table = CliTable(
        Col("point", wrap=True, min_width=16),
        Col("quality", justify="right"),
        Col("p95 ms", justify="right"),
        Col("cost/request", justify="right"),
        Col("req/s", justify="right", drop=1),
        Col("", justify="left"),
        title=f"Sweep: suite {escape(result['suite'])}",
    )
    for i, p in enumerate(result["points"]):
        marks = []
        if p["pareto"]:
            marks.append("[red]front[/red]")
        if result["best"] == i:
            marks.append("[bold green]best[/bold green]")
        cost = "unknown" if p["cost_per_request_usd"] is None else f"${p['cost_per_request_usd']:.6f}"
        p95 = "—" if p["p95_ms"] is None else f"{p['p95_ms']:,.1f}"
        table.add_row(
            escape(p["label"]),
            f"{p['quality']:.1%}",
            p95,
            cost,
            f"{p['requests_per_s']:.2f}",
            " ".join(marks),
        )
    return table


def sweep(
    spec_file: Path = typer.Option(
        None,
        "--spec",
        help="Sweep file (YAML): suite, targets (routes), params (values per parameter), "
        "bench (requests, concurrency, timeout_s). See docs/sweep.md.",
        show_default=False,
    ),
    suite: Path = typer.Option(
        None, "--suite", help="Eval suite file (overrides the spec's).", show_default=False
    ),
    target: list[str] = typer.Option(
        None,
        "--target",
        "-t",
        help="A route to try (repeatable; replaces the spec's targets).",
        show_default=False,
    ),
    param: list[str] = typer.Option(
        None,
        "--param",
        "-p",
        help=f"Values to try: NAME=V1,V2 (repeatable); names: {', '.join(sw.PARAMS)}.",
        show_default=False,
    ),
    url: str = typer.Option(
        None,
        "--url",
        help="The running gateway the benches go to. Env: SHIPYARD_URL. Default: the local "
        "`shipyard up` (SHIPYARD_HOST/SHIPYARD_PORT).",
        show_default=False,
    ),
    key: str = typer.Option(
        None,
        "--key",
        "--api-key",
        envvar="SHIPYARD_API_KEY",
        help="API key for the gateway. Env: SHIPYARD_API_KEY.",
        show_default=False,
    ),
    requests: int = typer.Option(
        None,
        "--requests",
        "-n",
        min=1,
        max=10_000,
        help="Bench requests per point (default: the spec's, else 20).",
        show_default=False,
    ),
    concurrency: int = typer.Option(
        None,
        "--concurrency",
        "-j",
        min=1,
        max=256,
        help="Bench concurrency (default: the spec's, else 2).",
        show_default=False,
    ),
    max_p95: str = typer.Option(
        None,
        "--max-p95",
        help="Best point: p95 end-to-end latency at most this (800ms, 2s).",
        show_default=False,
    ),
    max_cost: float = typer.Option(
        None,
        "--max-cost",
        help="Best point: cost per request at most this many US dollars.",
        show_default=False,
    ),
    output: Path = typer.Option(
        None, "--output", "-o", help="Directory to write sweep.json and report.html into.", show_default=False
    ),
    track: bool = typer.Option(True, "--track/--no-track", help="Record the sweep as an experiment run."),
    json_output: bool = JsonOpt,
    home: str = HomeOpt,
    config: str = ConfigOpt,
) -> None:
    """Sweep routes × sampling parameters (temperature, top_p, max_tokens): run the eval suite on
    every point (quality = pass rate, cost per request from the models' pricing) and a short bench
    through the running gateway (p95 latency); report the Pareto front of quality × latency × cost
    and the best point under --max-p95 / --max-cost. At most 64 points."""
    settings, _ = resolve(home=home, config=config)
    try:
        limits = _limits(max_p95, max_cost)
        spec, base = _spec(spec_file, suite, target or [], param or [], requests, concurrency)
        points = sw.grid(spec)
    except sw.SweepError as exc:
        raise fail(str(exc), USAGE) from None
    except ConfigError as exc:
        raise fail(str(exc), USAGE) from None
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    gateway_url = url or os.environ.get("SHIPYARD_URL") or f"http://{host}:{settings.port}"

    from shipyard.evals.runner import EvalRunner
    from shipyard.registry.runs import RunService

    store = open_store(settings, create=True)
    runner = EvalRunner(settings, store)
    actor = cli_actor(settings)
    runs = RunService(store, settings.artifacts_path) if track else None
    run_id = None
    if runs is not None:
        with exit_on_error():
            run_id = str(
                runs.create(
                    name=f"sweep {Path(spec.suite).stem}",
                    experiment=f"sweep:{Path(spec.suite).stem}",
                    params={
                        "suite": spec.suite,
                        "targets": ",".join(spec.targets),
                        **{f"grid.{k}": ",".join(f"{v:g}" for v in vs) for k, vs in spec.params.items()},
                        "bench_requests": spec.bench.requests,
                        "bench_concurrency": spec.bench.concurrency,
                        "url": gateway_url,
                    },
                    tags={"kind": "sweep"},
                    created_by=actor,
                )["run_id"]
            )

    def on_point(what: str) -> None:
        err_console.print(f"[dim]sweep:[/dim] {escape(what)}", highlight=False)

    try:
        with exit_on_error(ConfigError):
            result = asyncio.run(
                sw.run(runner, spec, base, points, gateway_url, key or None, limits, actor, on_point)
            )
    except BaseException as exc:
        if runs is not None and run_id is not None:
            runs.finish(run_id, "failed" if isinstance(exc, Exception | typer.Exit) else "killed")
        raise
    result["run_id"] = run_id
    started = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = output or Path(tempfile.mkdtemp(prefix=f"shipyard-sweep-{started}-"))
    with exit_on_error(OSError):
        paths = sw.write_report(out_dir, result)
        if runs is not None and run_id is not None:
            runs.add_links(run_id, [{"kind": "run", "name": result["eval_run_id"], "version": 0}])
            for name, path in paths.items():
                runs.log_artifact(run_id, path, name)
            runs.log_metrics(run_id, [{"key": k, "value": v} for k, v in sw.run_metrics(result).items()])
            runs.finish(run_id, "finished")
    if json_output:
        print_json(result)
        return
    console.print(_table(result))
    if result["best"] is not None:
        label = escape(result["points"][result["best"]]["label"])
        console.print(f"best: [bold]{label}[/bold] ({escape(result['best_reason'])})")
    else:
        console.print(f"[yellow]no best point[/yellow]: {escape(result['best_reason'])}")
    where = [f"report: {escape(str(paths['report.html']))}"] if output else []
    if run_id:
        where.append(f"run {run_id}")
    if where:
        console.print("; ".join(where))
