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
from shipyard.gateway.api.audit import parse_since
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
        since=parse_since(since) if since else None,
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
    """Recompute the hash chain of the whole log; exit 1 if an entry was changed or removed."""
    store = open_store(settings_only(home))
    checked, broken = audit.verify(store)
    if as_json:
        print_json({"intact": broken is None, "checked": checked, "broken_at": broken})
        if broken is not None:
            raise typer.Exit(1)
        return
    if broken is None:
        console.print(f"[green]✓[/green] audit log intact: {checked} entries")
        return
    console.print(f"[red]✗[/red] audit log broken at entry {broken} (checked {checked})")
    raise typer.Exit(1)
