"""`shipyard audit [list] | verify`: the append-only log of admin changes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
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
from shipyard.cli.traces import parse_since
from shipyard.store import audit

app = typer.Typer(
    help="The audit log: every change to keys, aliases, routes, guards and budgets, and refused attempts.",
    invoke_without_command=True,
)


def _short(value: Any, width: int = 60) -> str:
    if value is None:
        return "-"
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()
    return text if len(text) <= width else text[: width - 1] + "…"


@app.callback()
def list_entries(
    ctx: typer.Context,
    actor: str = typer.Option(None, "--actor", help="Substring of who acted (key name or id, user)."),
    action: str = typer.Option(
        None, "--action", help="An action or prefix: key, alias, route, request.denied…"
    ),
    target: str = typer.Option(None, "--target", help="Substring of the target, e.g. `prompt:support`."),
    denied: bool = typer.Option(False, "--denied", help="Only refused attempts."),
    since: str = typer.Option(None, "--since", help="A duration (24h, 7d) or an ISO time."),
    limit: int = typer.Option(50, "--limit", "-n", min=1, max=10000, help="Most entries to show."),
    full: bool = typer.Option(False, "--full", help="Show before/after in full."),
    home: str = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show audit entries, newest first. `shipyard audit verify` checks the log is intact."""
    if ctx.invoked_subcommand is not None:
        return
    store = open_store(settings_only(home))
    rows = audit.query(
        store,
        actor=actor,
        action=action,
        target=target,
        outcome="denied" if denied else None,
        since=parse_since(since),
        limit=limit,
    )
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("No audit entries match.")
        return
    # The outcome goes with the action (`key.create denied`): targets such as
    # `prompt:customer-support-escalations-system@production` leave no room for a column of `ok`s.
    table = CliTable(
        Col("id", justify="right"),
        Col("when", drop=3),
        Col("actor"),
        Col("action"),
        Col("target"),
        Col("before", wrap=True, drop=1),
        Col("after / detail", wrap=True, drop=2),
    )
    width = 10_000 if full else 40
    for r in rows:
        action = escape(r["action"])
        if r["outcome"] != "ok":
            action += f" [red]{escape(r['outcome'])}[/red]"
        table.add_row(
            str(r["id"]),
            datetime.fromtimestamp(r["at"]).strftime("%Y-%m-%d %H:%M:%S"),
            escape(r["actor"] + (f" ({r['role']})" if r["role"] else "")),
            action,
            escape(r["target"]),
            escape(_short(r["before"], width)),
            escape(_short(r["after"], width) if r["outcome"] == "ok" else (r["detail"] or "-")),
        )
    console.print(table)


@app.command("verify")
def verify(home: str = HomeOpt, as_json: bool = JsonOpt) -> None:
    """Recompute the keyed hash chain of the log and compare it with the anchors kept in the home
    directory: exit 1 if an entry was changed, forged or deleted; exit 2 if this home has no
    audit key, or another key than the one the log was written with (not evidence of tampering
    by itself)."""
    store = open_store(settings_only(home))
    verdict = audit.verify(store)
    code = 0 if verdict.intact else 1 if verdict.status == audit.BROKEN else 2
    if as_json:
        print_json({**verdict.as_dict(), "checked": verdict.entries})
        if code:
            raise typer.Exit(code)
        return
    anchor = verdict.anchor
    if verdict.intact:
        extra = f" ({verdict.legacy} from before the keyed chain)" if verdict.legacy else ""
        console.print(f"[green]✓[/green] audit log intact: {verdict.entries} entries{extra}")
        if anchor is not None:
            console.print(
                f"  matches the newest anchor ({anchor.entries} entries, {anchor.when()})", highlight=False
            )
        if verdict.warning:
            console.print(f"[yellow]![/yellow] {escape(verdict.warning)}", highlight=False)
        return
    if verdict.status == audit.BROKEN:
        where = f" at entry {verdict.broken_at}" if verdict.broken_at is not None else ""
        console.print(f"[red]✗[/red] audit log broken{where} (checked {verdict.entries})")
    else:
        console.print(f"[yellow]?[/yellow] audit log cannot be verified here (checked {verdict.entries})")
    console.print(f"  {escape(verdict.problem or '')}", highlight=False)
    raise typer.Exit(code)
