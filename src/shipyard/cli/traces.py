"""`shipyard traces list|show|stats`: read traces (and their rollups) straight from the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import typer
from rich.markup import escape
from rich.tree import Tree

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
from shipyard.errors import InvalidRequest
from shipyard.store import performance as perf
from shipyard.store import traces as q
from shipyard.times import TimeWindow, parse_time
from shipyard.tracing import semconv as sc

app = typer.Typer(help="Inspect traced requests.", no_args_is_help=True)


def parse_since(value: str | None, option: str = "--since") -> float | None:
    """The one time rule (``shipyard.times``): unix seconds, an ISO time (UTC unless it has an
    offset) or a duration ago (15m, 2h, 7d)."""
    try:
        return parse_time(value, option)
    except InvalidRequest as exc:
        raise typer.BadParameter(exc.message) from None


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:,.1f}"


@app.command("list")
def list_traces(
    route: str = typer.Option(None, "--route", "-r", help="Only this route."),
    model: str = typer.Option(None, "--model", help="Only traces answered by this model."),
    status: str = typer.Option(None, "--status", help="ok or error."),
    since: str = typer.Option(None, "--since", help="Only newer traces: 15m, 2h, 7d or an ISO time."),
    search: str = typer.Option(None, "--search", "-s", help="Text contained in the prompt or the answer."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many (newest first)."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """List recent traces, newest first."""
    if status is not None and status not in ("ok", "error"):
        raise typer.BadParameter("must be `ok` or `error`", param_hint="--status")
    store = open_store(settings_only(home))
    f = q.TraceFilter(route=route, model=model, status=status, since=parse_since(since), search=search)
    rows = q.list_traces(store, f, limit=limit)
    if json_out:
        print_json(rows)
        return
    total = f" of {q.count_traces(store, f)}" if len(rows) == limit else ""
    # The route and the full trace id (what `traces show` takes) are always shown whole; on a
    # narrow console the figures go first, then the target.
    table = CliTable(
        Col("time"),
        Col("route"),
        Col("target", drop=4),
        Col("st"),
        Col("ms", justify="right", drop=5),
        Col("ttft", justify="right", drop=1),
        Col("tok in/out", justify="right", drop=3),
        Col("$", justify="right", drop=2),
        Col("trace id"),
        title=f"{len(rows)} trace(s){total}, newest first",
    )
    today = datetime.now().date()
    for r in rows:
        status_txt = "[green]ok[/green]" if r["status"] == "ok" else f"[red]{r['status_code']}[/red]"
        started = datetime.fromtimestamp(r["start_time"])
        when = started.strftime("%H:%M:%S" if started.date() == today else "%m-%d %H:%M")
        table.add_row(
            when,
            escape(r["route"] or "-"),
            escape(r["target"] or "-"),
            status_txt,
            _ms(r["latency_ms"]),
            _ms(r["ttft_ms"]),
            f"{r['input_tokens'] or 0}/{r['output_tokens'] or 0}",
            f"{r['cost_usd'] or 0:.4g}",
            r["trace_id"],
        )
    console.print(table)


@app.command("show")
def show(
    trace_id: str = typer.Argument(..., help="Trace id (or a unique prefix of it)."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Show one trace: summary, spans (the request with its routing, each attempt) and the messages."""
    store = open_store(settings_only(home))
    t = q.get_trace(store, trace_id)
    if t is None:
        console.print(f"[red]no trace `{trace_id}`[/red]; `shipyard traces list` shows recent ids")
        raise typer.Exit(1)
    if json_out:
        print_json(t)
        return
    console.print(f"[bold]trace {t['trace_id']}[/bold]  {_ts(t['start_time'])}  {t['operation']}")
    if t["target"]:
        console.print(
            f"  route {escape(str(t['route']))} → target {escape(str(t['target']))} "
            f"(provider {escape(str(t['provider']))}, model {escape(str(t['model']))})"
        )
    else:  # refused before any provider was called (a guard, a limit)
        console.print(f"  route {escape(str(t['route']))} → no provider called")
    console.print(
        f"  status {t['status']} ({t['status_code']})  latency {_ms(t['latency_ms'])} ms  "
        f"ttft {_ms(t['ttft_ms'])} ms  attempts {t['attempts']}  stream {t['stream']}"
    )
    if t["input_tokens"] is not None or t["output_tokens"] is not None:
        console.print(
            f"  tokens in {t['input_tokens'] or 0} out {t['output_tokens'] or 0}  "
            f"cost ${t['cost_usd'] or 0:.6f}"
        )
    if t["error"]:
        console.print(f"  [red]error[/red] {escape(t['error'])}", highlight=False)
    tree = Tree("spans")
    nodes: dict[str | None, Tree] = {None: tree}
    for s in t["spans"]:
        parent = nodes.get(s["parent_id"], tree)
        dur = (s["end_time"] - s["start_time"]) * 1000
        colour = "green" if s["status"] == "ok" else "red"
        attrs = s["attributes"] or {}
        shown = ", ".join(
            f"{k}={v}"
            for k, v in attrs.items()
            if k.startswith(("gen_ai.usage", "shipyard.target", "error."))
        )
        nodes[s["span_id"]] = parent.add(f"[{colour}]{s['name']}[/{colour}] {dur:.1f} ms {shown}")
    console.print(tree)
    if t["input"] is not None:
        console.print("[bold]input[/bold]")
        if isinstance(t["input"], list) and t["input"] and isinstance(t["input"][0], dict):
            for m in t["input"]:
                console.print(f"  {m.get('role')}: {m.get('content')}", markup=False, highlight=False)
        else:
            console.print(f"  {t['input']}", markup=False, highlight=False)
    rendered = next(
        (
            text
            for sp in reversed(t["spans"])
            if isinstance(text := (sp["attributes"] or {}).get(sc.PROMPT_RENDERED), str)
        ),
        None,
    )
    if rendered is not None:
        # What a local model was actually given: its prompt format applied to the messages.
        console.print("[bold]the model saw[/bold] (the prompt its provider built from the input)")
        for line in rendered.splitlines():
            console.print(f"  {line}", markup=False, highlight=False)
    if t["output"] is not None:
        console.print("[bold]output[/bold]")
        console.print(f"  {t['output']}", markup=False, highlight=False)


_BY_HEADER = {"route": "route", "model": "model", "key": "API key", "prompt": "prompt version"}


def _window(since: str | None, until: str | None) -> TimeWindow:
    try:
        return TimeWindow.parse(None, since, until, default="24h")
    except InvalidRequest as exc:
        raise typer.BadParameter(exc.message, param_hint=f"--{exc.param or 'since'}") from None


def _group_name(by: str, row: dict[str, Any]) -> str:
    if by == "key" and row.get("key_name"):
        return f"{row['key_name']} ({row['group']})"
    return row["group"] or "(none)"


@app.command("stats")
def stats(
    since: str = typer.Option(
        None,
        "--since",
        help="Start: 15m, 2h, 7d or an ISO time (UTC unless it has an offset). Default: 24h ago.",
    ),
    until: str = typer.Option(None, "--until", help="End of the range, the same forms. Default: now."),
    route: str = typer.Option(None, "--route", "-r", help="Only this route."),
    model: str = typer.Option(None, "--model", help="Only requests this model answered."),
    by: str = typer.Option(
        "route", "--by", help="Group by route, model, key (API key) or prompt (prompt version)."
    ),
    limit: int = typer.Option(
        50, "--limit", "-n", min=1, max=perf.MAX_GROUPS, help="How many groups (in name order)."
    ),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Where time and money go: per route, model, API key or prompt version, the average latency
    cut into queue, guards, retries, upstream time to first token, generation and gateway
    overhead; cost and tokens; and what the response cache saved. Read from the performance
    rollups (gateway traces)."""
    if by not in perf.GROUPS:
        raise typer.BadParameter(f"must be one of {', '.join(perf.GROUPS)}; got `{by}`", param_hint="--by")
    window = _window(since, until)
    store = open_store(settings_only(home))
    rows = perf.groups(store, window.since, window.until, by, route=route, model=model, limit=limit)
    total = perf.total(store, window.since, window.until, route=route, model=model)
    if json_out:
        print_json(
            {
                "since": window.since,
                "until": window.until,
                "by": by,
                "total": total,
                "data": [{k: v for k, v in r.items() if k != "position"} for r in rows],
            }
        )
        return
    if not rows:
        console.print(
            f"no gateway traces between {_ts(window.since)} and {_ts(window.until)}"
            + (f" for route {escape(route)}" if route else "")
            + "; widen --since or send requests through the gateway"
        )
        return
    table = CliTable(
        Col(_BY_HEADER[by]),
        Col("req", justify="right"),
        Col("avg ms", justify="right"),
        *(Col(c, justify="right", drop=d) for c, d in zip(perf.COMPONENTS, (6, 5, 4, 7, 7, 6), strict=True)),
        Col("$", justify="right", drop=8),
        Col("$/req", justify="right", drop=3),
        Col("cache hits", justify="right", drop=2),
        Col("saved $", justify="right", drop=1),
        title=f"where time (average ms per request) and money go, per {_BY_HEADER[by]}, "
        f"{_ts(window.since)} – {_ts(window.until)}",
    )
    for name, r in [*((escape(_group_name(by, r)), r) for r in rows), ("[bold]all[/bold]", total)]:
        lat, cache = r["latency"], r["cache"]
        table.add_row(
            name,
            f"{r['requests']:,}",
            _ms(lat["total_ms"]),
            *(_ms(lat[f"{c}_ms"]) for c in perf.COMPONENTS),
            f"{r['cost_usd']:.4g}",
            "-" if r["cost_per_request_usd"] is None else f"{r['cost_per_request_usd']:.4g}",
            "-" if not cache["lookups"] else f"{cache['hits']}/{cache['lookups']}",
            f"{cache['saved_usd']:.4g}",
        )
    console.print(table)
