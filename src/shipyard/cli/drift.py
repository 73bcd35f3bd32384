"""`shipyard drift`: compare a route's current traffic with a reference, on demand; list past reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer
from rich.markup import escape

from shipyard.cli.common import (
    CliTable,
    Col,
    HomeOpt,
    JsonOpt,
    console,
    exit_on_error,
    open_store,
    print_json,
    settings_only,
)
from shipyard.monitoring import drift as svc

_HELP = (
    "Detect drift of a route's traffic: compare a reference sample with a current one on prompt and "
    "response embeddings (MMD), lengths, tokens and latency (KS, PSI) and topics (clusters that grew "
    "or shrank).\n\n"
    "Run a check: shipyard drift --route R --reference 7d --reference-offset 1d --current 1h\n\n"
    + svc.SPEC_GRAMMAR
)

app = typer.Typer(help=_HELP, invoke_without_command=True, rich_markup_mode=None)


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _stat(value: float) -> str:
    return f"{value:.4g}"


def _short(text: str, n: int = 72) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _side(src: dict[str, Any]) -> str:
    if src.get("kind") == "dataset":
        return f"dataset {src['dataset']}@v{src['version']} ({src['n_examples']} examples)"
    return (
        f"`{src['spec']}` = {src['since_iso']} .. {src['until_iso']} ({src['n_in_window']} traces in window)"
    )


def print_report(report: svc.DriftReport) -> None:
    r = report.results
    verdict = "[bold red]DRIFTED[/bold red]" if report.drifted else "[bold green]no drift[/bold green]"
    title = f"drift report {report.id} of route `{escape(report.route)}`" if report.id else "drift check"
    console.print(f"[bold]{title}[/bold]  {_when(report.created_at)}  {verdict}")
    console.print(
        f"  reference: {escape(_side(report.reference))}, sampled {report.n_reference}", highlight=False
    )
    console.print(
        f"  current:   {escape(_side(report.current))}, sampled {report.n_current}", highlight=False
    )
    console.print(
        f"  {r.get('n_tests', 0)} p-value tests, Bonferroni: each p x {r.get('n_tests', 0)} <= alpha "
        f"{r.get('alpha')}; PSI threshold {r.get('psi_threshold')}",
        highlight=False,
    )
    table = CliTable(
        Col("test"),
        Col("statistic", justify="right"),
        Col("p-value", justify="right", drop=1),
        Col("corrected p", justify="right"),
        Col("threshold", justify="right", drop=2),
        Col("verdict"),
    )
    for t in r.get("tests", []):
        if t["drifted"]:
            verdict_cell = "[red]drift[/red]"
        elif t["test"] == "psi" and not t["detail"].get("votes"):
            verdict_cell = "[dim]info[/dim]"
        else:
            verdict_cell = "ok"
        table.add_row(
            escape(t["name"]),
            _stat(t["statistic"]),
            _p(t["p_value"]),
            _p(t["p_adjusted"]),
            "-" if t["threshold"] is None else f"{t['threshold']:g}",
            verdict_cell,
        )
    console.print(table)
    for s in r.get("skipped", []):
        if s["name"].startswith("psi_"):
            continue  # said once, with its KS twin
        console.print(f"  [dim]skipped {s['name']}: {escape(s['reason'])}[/dim]", highlight=False)
    topics = r.get("topics")
    if topics:
        console.print(
            f"[bold]topics[/bold]: {topics['k']} clusters of prompts; shift (total variation) "
            f"{topics['shift']:.3f}, chi-square p {_p(topics.get('chi2_p'))}",
            highlight=False,
        )
        tt = CliTable(
            Col("change", justify="right"),
            Col("ref", justify="right"),
            Col("cur", justify="right"),
            Col("keywords", wrap=True),
            Col("examples", wrap=True, min_width=20, drop=1),
        )
        for c in topics["clusters"]:
            change = c["change"]
            colour = "red" if abs(change) >= 0.1 else ""
            cell = f"{change:+.0%}"
            tt.add_row(
                f"[{colour}]{cell}[/{colour}]" if colour else cell,
                f"{c['share_reference']:.0%}",
                f"{c['share_current']:.0%}",
                escape(", ".join(c["keywords"])),
                escape(" | ".join(_short(e) for e in c["examples"][:2])),
            )
        console.print(tt)
    for reason in r.get("reasons", []):
        console.print(f"  [red]•[/red] {escape(reason)}", highlight=False)


@app.callback(invoke_without_command=True)
def drift(
    ctx: typer.Context,
    route: str = typer.Option(None, "--route", "-r", help="The route to check."),
    reference: str = typer.Option(
        svc.DEFAULT_REFERENCE, "--reference", help="Window spec of the reference sample (see above)."
    ),
    reference_offset: str = typer.Option(
        None,
        "--reference-offset",
        help="End the reference window this long ago: `--reference 7d --reference-offset 1d`.",
    ),
    current: str = typer.Option(svc.DEFAULT_CURRENT, "--current", help="Window spec of the current sample."),
    current_offset: str = typer.Option(
        None, "--current-offset", help="End the current window this long ago."
    ),
    alpha: float = typer.Option(svc.DEFAULT_ALPHA, "--alpha", help="Significance level after Bonferroni."),
    max_samples: int = typer.Option(
        svc.DEFAULT_MAX_SAMPLES, "--max-samples", help="Cap per sample (seeded subset)."
    ),
    min_samples: int = typer.Option(
        svc.DEFAULT_MIN_SAMPLES, "--min-samples", help="Fewer traces in a sample: error, no report."
    ),
    psi_threshold: float = typer.Option(
        svc.DEFAULT_PSI_THRESHOLD,
        "--psi-threshold",
        help="PSI at or above this is drift; 0 turns PSI's vote off.",
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seeds sampling, permutations and clustering."),
    fail_on_drift: bool = typer.Option(
        False, "--fail-on-drift", help="Exit with status 3 when drift is found (CI)."
    ),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if route is None:
        console.print(ctx.get_help())
        raise typer.Exit(0 if len(ctx.args) == 0 else 2)
    with exit_on_error():
        ref_spec = svc.join_offset(reference, reference_offset, "reference")
        cur_spec = svc.join_offset(current, current_offset, "current")
        store = open_store(settings_only(home))
        report = svc.run_drift(
            store,
            route,
            ref_spec,
            cur_spec,
            alpha=alpha,
            max_samples=max_samples,
            min_samples=min_samples,
            psi_threshold=psi_threshold or None,
            seed=seed,
        )
    if json_out:
        print_json(report.to_dict())
    else:
        print_report(report)
    if fail_on_drift and report.drifted:
        raise typer.Exit(3)


@app.command("list")
def list_reports(
    route: str = typer.Option(None, "--route", "-r", help="Only this route's reports."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=1000, help="How many (newest first)."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """List past drift reports, newest first."""
    with exit_on_error():
        reports = svc.list_reports(open_store(settings_only(home)), route, limit=limit)
    if json_out:
        print_json([r.summary() for r in reports])
        return
    if not reports:
        console.print("no drift reports yet; run one with `shipyard drift --route R`")
        return
    table = CliTable(
        Col("id", justify="right"),
        Col("time", drop=5),
        Col("route"),
        Col("n ref/cur", justify="right", drop=2),
        Col("verdict"),
        Col("min corrected p", justify="right", drop=3),
        Col("topic shift", justify="right", drop=1),
        Col("why", wrap=True, drop=4),
        title=f"{len(reports)} drift report(s), newest first",
    )
    for rep in reports:
        m = rep.metrics()
        table.add_row(
            str(rep.id),
            _when(rep.created_at),
            escape(rep.route),
            f"{rep.n_reference}/{rep.n_current}",
            "[red]drifted[/red]" if rep.drifted else "[green]ok[/green]",
            _p(m.get("p_value")),
            "-" if "topic_shift" not in m else f"{m['topic_shift']:.3f}",
            escape("; ".join(rep.results.get("reasons", [])) or "-"),
        )
    console.print(table)


@app.command("show")
def show(
    report_id: int = typer.Argument(..., help="Report id (from `shipyard drift list`)."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Show one saved drift report: every test and the topic clusters."""
    with exit_on_error():
        report = svc.get_report(open_store(settings_only(home)), report_id)
    if json_out:
        print_json(report.to_dict())
    else:
        print_report(report)
