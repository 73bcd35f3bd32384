"""`shipyard runs list|show|compare`: read experiment runs from the store.

Runs are written by the Python API (``shipyard.start_run``), the admin API and eval runs; the CLI
only reads them (runs are records, so there is no delete). Run ids may be given as a unique prefix.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
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
    open_store,
    print_json,
    settings_only,
)
from shipyard.registry.runs import STATUSES, RunService
from shipyard.store.runs import MetricSummary, RunRow

app = typer.Typer(help="Inspect and compare experiment runs.", no_args_is_help=True)

_STATUS_COLOUR = {"running": "cyan", "finished": "green", "failed": "red", "killed": "yellow"}
_BARS = "▁▂▃▄▅▆▇█"
# Metric names whose value should go down: a drop in these is shown green, a rise red. Anything
# else (accuracy, scores, throughput) is taken as higher-is-better. Matched on whole words of the
# name, so `error_rate` and `latency_p95_ms` count but `terror` does not.
_LOWER_IS_BETTER = {
    "loss",
    "error",
    "errors",
    "err",
    "latency",
    "ttft",
    "itl",
    "cost",
    "usd",
    "perplexity",
    "ppl",
    "ms",
    "seconds",
    "duration",
    "time",
    "wer",
    "cer",
    "toxicity",
    "failures",
}


def _service(home: str | None) -> RunService:
    settings = settings_only(home)
    return RunService(open_store(settings), settings.artifacts_path)


def _ts(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _duration(run: RunRow) -> str:
    seconds = (run["end_time"] or time.time()) - run["start_time"]
    if seconds < 60:
        text = f"{seconds:.1f}s"
    elif seconds < 3600:
        text = f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    else:
        text = f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return text if run["end_time"] is not None else text + "…"


def _status(status: str) -> str:
    colour = _STATUS_COLOUR.get(status, "white")
    return f"[{colour}]{status}[/{colour}]"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.6g}"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    import orjson

    return orjson.dumps(v).decode()


def sparkline(values: Sequence[float], width: int = 24) -> str:
    """A one-line chart of a series; longer series are averaged into ``width`` buckets."""
    if not values:
        return ""
    n = len(values)
    if n > width:
        buckets = [values[i * n // width : (i + 1) * n // width] for i in range(width)]
        values = [sum(b) / len(b) for b in buckets]
    lo, hi = min(values), max(values)
    if hi == lo:
        return _BARS[3] * len(values)
    return "".join(_BARS[round((v - lo) / (hi - lo) * (len(_BARS) - 1))] for v in values)


def lower_is_better(key: str) -> bool:
    return any(word in _LOWER_IS_BETTER for word in re.split(r"[^a-z0-9]+", key.lower()))


def _delta(key: str, delta: float | None, pct: float | None) -> str:
    """`+0.06 (+8.0%)`, green when the change is an improvement, red when it is a regression."""
    if delta is None:
        return "-"
    text = f"{delta:+.6g}" + (f" ({pct:+.1f}%)" if pct is not None else "")
    if delta == 0:
        return f"[dim]{text}[/dim]"
    better = (delta < 0) if lower_is_better(key) else (delta > 0)
    colour = "green" if better else "red"
    return f"[{colour}]{text}[/{colour}]"


def _parse_tags(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"`{pair}` must look like key=value", param_hint="--tag")
        out[key] = value
    return out


@app.command("list")
def list_runs(
    experiment: str = typer.Option(None, "--experiment", "-e", help="Only runs of this experiment."),
    status: str = typer.Option(None, "--status", help="running, finished, failed or killed."),
    tag: list[str] = typer.Option(None, "--tag", "-t", help="key=value; repeat to require several."),
    name: str = typer.Option(None, "--name", help="Only runs whose name contains this text."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, max=10_000, help="How many (newest first)."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """List experiment runs, newest first."""
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"must be one of {', '.join(STATUSES)}", param_hint="--status")
    svc = _service(home)
    filters: dict[str, Any] = {
        "experiment": experiment,
        "status": status,
        "tags": _parse_tags(tag),
        "name_contains": name,
    }
    rows = svc.list_runs(**filters, limit=limit)
    if json_out:
        print_json(rows)
        return
    total = f" of {svc.count_runs(**filters)}" if len(rows) == limit else ""
    # The name and the full id (what `runs show` takes) are always shown whole.
    table = CliTable(
        Col("started", drop=3),
        Col("name"),
        Col("experiment", drop=2),
        Col("status"),
        Col("took", justify="right", drop=1),
        Col("run id"),
        title=f"{len(rows)} run(s){total}, newest first",
    )
    today = datetime.now().date()
    for r in rows:
        started = datetime.fromtimestamp(r["start_time"])
        table.add_row(
            started.strftime("%H:%M:%S" if started.date() == today else "%m-%d %H:%M"),
            escape(r["name"] or "-"),
            escape(r["experiment"]),
            _status(r["status"]),
            _duration(r),
            r["run_id"],
        )
    console.print(table)


@app.command("show")
def show(
    run: str = typer.Argument(..., help="Run id (or a unique prefix of it)."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Show one run: params, metrics (series as sparklines), tags, lineage and artifacts."""
    svc = _service(home)
    detail = svc.get(run)
    run_id = detail["run_id"]
    children = [r["run_id"] for r in svc.list_runs(parent_run_id=run_id, limit=10_000)]
    series = {
        key: [p["value"] for p in svc.metric_history(run_id, key)]
        for key, m in detail["metrics"].items()
        if m["count"] > 1
    }
    if json_out:
        print_json({**detail, "children": children, "series": series})
        return
    title = f"[bold]run {run_id}[/bold]" + (f"  {escape(detail['name'])}" if detail["name"] else "")
    console.print(title, highlight=False)
    console.print(
        f"  experiment {escape(detail['experiment'])}  status {_status(detail['status'])}  "
        f"started {_ts(detail['start_time'])}  took {_duration(detail)}"
        + (f"  by {escape(detail['created_by'])}" if detail["created_by"] else ""),
        highlight=False,
    )
    if detail["parent_run_id"]:
        console.print(f"  parent run {detail['parent_run_id']}", highlight=False)
    if children:
        console.print(f"  child runs {', '.join(children)}", highlight=False)
    if detail["notes"]:
        console.print(f"  notes {escape(detail['notes'])}", highlight=False)

    if detail["params"]:
        table = CliTable(Col("param"), Col("value", wrap=True, whole_words=True), title="params")
        for key, value in sorted(detail["params"].items()):
            table.add_row(escape(key), escape(_value(value)))
        console.print(table)

    if detail["metrics"]:
        table = CliTable(
            Col("metric"),
            Col("last", justify="right"),
            Col("min", justify="right", drop=3),
            Col("max", justify="right", drop=3),
            Col("steps", justify="right", drop=2),
            Col("trend", drop=1),
            title="metrics",
        )
        for key, m in sorted(detail["metrics"].items()):
            is_series = m["count"] > 1
            table.add_row(
                escape(key),
                _num(m["last"]),
                _num(m["min"]) if is_series else "",
                _num(m["max"]) if is_series else "",
                str(m["count"]) if is_series else "",
                sparkline(series[key]) if is_series else "",
            )
        console.print(table)

    if detail["tags"]:
        table = CliTable(Col("tag"), Col("value", wrap=True, whole_words=True), title="tags")
        for key, value in sorted(detail["tags"].items()):
            table.add_row(escape(key), escape(value))
        console.print(table)

    if detail["links"]:
        table = CliTable(Col("kind"), Col("name"), Col("version", justify="right"), title="lineage")
        for link in detail["links"]:
            is_parent = link["kind"] == "run" and link["name"] == detail["parent_run_id"]
            kind = "run (parent)" if is_parent else link["kind"]
            version = "" if link["kind"] == "run" else str(link["version"])
            table.add_row(kind, escape(link["name"]), version)
        console.print(table)

    if detail["artifacts"]:
        table = CliTable(
            Col("path"),
            Col("size", justify="right", drop=2),
            Col("sha256", drop=1),
            title=f"artifacts (in {escape(str(svc.artifact_dir(run_id)))})",
        )
        for art in detail["artifacts"]:
            table.add_row(escape(art["path"]), _size(art["size"]), art["sha256"][:16])
        console.print(table)


def _metric_cell(m: MetricSummary | None) -> str:
    return "-" if m is None else _num(m["last"])


@app.command("compare")
def compare(
    runs: list[str] = typer.Argument(
        ..., help="Two or more run ids (or prefixes); the first is the baseline."
    ),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Compare runs: params side by side, metrics with their change against the first run."""
    if len(runs) < 2:
        raise typer.BadParameter("give at least two runs to compare", param_hint="RUNS")
    svc = _service(home)
    cmp = svc.compare(runs)
    if json_out:
        print_json(cmp)
        return
    # Columns are headed by the short id alone (names can be long); the legend names the runs.
    labels = [r["run_id"][:8] for r in cmp["runs"]]
    console.print(f"[bold]comparing {len(labels)} runs[/bold]", highlight=False)
    for i, r in enumerate(cmp["runs"]):
        console.print(
            f"  {labels[i]}  {r['run_id']}"
            + (f"  {escape(r['name'])}" if r["name"] else "")
            + ("  (baseline)" if i == 0 else ""),
            highlight=False,
        )

    if cmp["params"]:
        table = CliTable(
            Col(""),
            Col("param"),
            *(Col(label, wrap=True, min_width=8, whole_words=True) for label in labels),
            title="params (≠ marks a difference; = the baseline's value)",
        )
        for p in cmp["params"]:
            style = "bold yellow" if p["differs"] else None
            first = p["values"][0]
            cells = [escape(_value(first))]
            cells += ["=" if v == first else escape(_value(v)) for v in p["values"][1:]]
            table.add_row("≠" if p["differs"] else "", escape(p["key"]), *cells, style=style)
        console.print(table)

    if cmp["metrics"]:
        # On a narrow console the changes of the last runs go first: the values stay.
        columns = [Col("metric"), Col(labels[0], justify="right")]
        for i, label in enumerate(labels[1:], 1):
            columns += [Col(label, justify="right"), Col("Δ", justify="right", drop=len(labels) - i)]
        table = CliTable(*columns, title="metrics (latest value; Δ: change vs the baseline)")
        for m in cmp["metrics"]:
            cells = [_metric_cell(m["values"][0])]
            for i in range(1, len(labels)):
                cells += [_metric_cell(m["values"][i]), _delta(m["key"], m["deltas"][i], m["pct_changes"][i])]
            table.add_row(escape(m["key"]), *cells)
        console.print(table)

    series = [m for m in cmp["metrics"] if any(v is not None and v["count"] > 1 for v in m["values"])]
    if series:
        table = CliTable(
            Col("metric"),
            Col("run"),
            Col("last", justify="right"),
            Col("min", justify="right", drop=3),
            Col("max", justify="right", drop=3),
            Col("steps", justify="right", drop=2),
            Col("trend", drop=1),
            title="series",
        )
        for m in series:
            for run_row, label, v in zip(cmp["runs"], labels, m["values"], strict=True):
                if v is None:
                    continue
                points = [p["value"] for p in svc.metric_history(run_row["run_id"], m["key"])]
                table.add_row(
                    escape(m["key"]),
                    escape(label),
                    _num(v["last"]),
                    _num(v["min"]),
                    _num(v["max"]),
                    str(v["count"]),
                    sparkline(points),
                )
        console.print(table)
    if not cmp["params"] and not cmp["metrics"]:
        console.print("[dim]none of these runs has params or metrics[/dim]")
