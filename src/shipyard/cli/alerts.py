"""`shipyard alerts list|events|test`: the alert rules of the config with their state in the store,
the episodes, and a test notification to check that a rule's channels work."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import typer
from rich.markup import escape

from shipyard.cli.common import (
    CliTable,
    Col,
    ConfigOpt,
    HomeOpt,
    JsonOpt,
    console,
    open_store,
    print_json,
    resolve,
)
from shipyard.errors import ConfigError
from shipyard.monitoring.config import AlertRule, MonitoringConfig, load_monitoring

app = typer.Typer(help="Alert rules, their state and their episodes.", no_args_is_help=True)


def _config(home: str | None, config: str | None) -> tuple[Any, MonitoringConfig]:
    settings, doc = resolve(home=home, config=config)
    if doc is None:
        return settings, MonitoringConfig()
    return settings, load_monitoring(doc.raw.get("monitoring"), doc.source, doc.where)


def _ts(t: float | None) -> str:
    if t is None:
        return "-"
    when = datetime.fromtimestamp(t)
    return when.strftime("%H:%M:%S" if when.date() == datetime.now().date() else "%Y-%m-%d %H:%M")


def _value(v: float | None) -> str:
    return "no data" if v is None else f"{v:.4g}"


def rule_rows(store: Any, rules: list[AlertRule], now: float) -> list[dict[str, Any]]:
    """Each rule with its state as the store knows it (an open episode is firing) and its value now.
    A pending state lives only in the server's memory: `GET /api/alerts` shows it."""
    from shipyard.monitoring.alerts import MetricError, compare, measure
    from shipyard.store import alerts as alerts_q

    latest = alerts_q.latest_by_fingerprint(store, [r.fingerprint for r in rules])
    out = []
    for r in rules:
        ep = latest.get(r.fingerprint)
        firing = ep is not None and ep["resolved_at"] is None
        error = None
        try:
            value = measure(store, r, now)
        except MetricError as exc:
            value, error = None, str(exc)
        out.append(
            {
                "name": r.name,
                "metric": r.metric,
                "route": r.route,
                "model": r.model,
                "condition": r.describe(),
                "severity": r.severity,
                "state": "firing" if firing else "inactive",
                "since": ep["started_at"] if firing and ep else None,
                "last_resolved": ep["resolved_at"] if ep and not firing else None,
                "value": value,
                "condition_met": compare(value, r.op, r.threshold),
                "notify": [c.label for c in r.notify],
                "fingerprint": r.fingerprint,
                "error": error,
            }
        )
    return out


@app.command("list")
def list_rules(home: str = HomeOpt, config: str = ConfigOpt, json_out: bool = JsonOpt) -> None:
    """List the config's alert rules: state (firing since…, or when it last resolved) and the value
    of the metric right now."""
    settings, mon = _config(home, config)
    store = open_store(settings)
    rows = rule_rows(store, mon.alerts, time.time())
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no alert rules: add them under `monitoring: alerts:` in shipyard.yaml")
        return
    table = CliTable(
        Col("rule"),
        Col("state"),
        Col("since", wrap=True, min_width=8, drop=2),
        Col("condition", wrap=True, whole_words=True, drop=4),
        Col("now", wrap=True, min_width=8),
        Col("severity", drop=1),
        Col("notify", wrap=True, whole_words=True, drop=3),
        title=f"{len(rows)} alert rule(s)",
    )
    for r in rows:
        if r["state"] == "firing":
            state, since = "[red]firing[/red]", _ts(r["since"])
        else:
            state = "[green]inactive[/green]"
            since = f"resolved {_ts(r['last_resolved'])}" if r["last_resolved"] else "-"
        now = _value(r["value"]) + (" [yellow](met)[/yellow]" if r["condition_met"] else "")
        if r["error"]:
            now = f"[red]{escape(r['error'])}[/red]"
        table.add_row(
            escape(r["name"]),
            state,
            since,
            escape(r["condition"]),
            now,
            r["severity"],
            escape(", ".join(r["notify"])),
        )
    console.print(table)


@app.command("events")
def events(
    rule: str = typer.Option(None, "--rule", "-r", help="Only this rule's episodes."),
    state: str = typer.Option(None, "--state", help="firing or resolved."),
    limit: int = typer.Option(20, "--limit", "-n", min=1, help="How many (newest first)."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """List alert episodes, newest first: when each fired and resolved, and how delivery went."""
    from shipyard.cli.common import settings_only
    from shipyard.store import alerts as alerts_q

    if state is not None and state not in ("firing", "resolved"):
        raise typer.BadParameter("must be `firing` or `resolved`", param_hint="--state")
    store = open_store(settings_only(home))
    rows = alerts_q.list_events(store, limit, rule=rule, state=state)
    if json_out:
        print_json(rows)
        return
    table = CliTable(
        Col("rule"),
        Col("state"),
        Col("started"),
        Col("resolved", drop=3),
        Col("value", justify="right", drop=2),
        Col("deliveries", wrap=True, min_width=6, drop=1),
        Col("message", wrap=True, whole_words=True, drop=4),
        title=f"{len(rows)} alert episode(s), newest first",
    )
    for e in rows:
        deliveries = e["deliveries"] or []
        failed = [d for d in deliveries if not d.get("ok")]
        sent = f"{len(deliveries) - len(failed)} ok" + (
            f", [red]{len(failed)} failed[/red]" if failed else ""
        )
        table.add_row(
            escape(e["rule"]),
            "[red]firing[/red]" if e["state"] == "firing" else "[green]resolved[/green]",
            _ts(e["started_at"]),
            _ts(e["resolved_at"]),
            _value(e["value"]),
            sent,
            escape(e["message"] or ""),
        )
    console.print(table)


@app.command("test")
def test(
    rule: str = typer.Argument(..., help="Name of the rule whose channels get the test notification."),
    home: str = HomeOpt,
    config: str = ConfigOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Send a test notification (status firing, label `test: "true"`) through a rule's channels and
    show how each delivery went. Nothing is written to the store. Exit code 1 if one failed."""
    from shipyard.monitoring.alerts import Notification, Notifier

    _, mon = _config(home, config)
    found = mon.rule(rule)
    if found is None:
        known = ", ".join(r.name for r in mon.alerts) or "(none)"
        raise ConfigError(f"no alert rule named `{rule}`; rules in the config: {known}")
    now = time.time()
    note = Notification(
        "firing", "test", found, None, now, None, f"test notification of alert rule `{found.name}`"
    )

    async def send() -> list[dict[str, Any]]:
        notifier = Notifier()
        try:
            return await notifier.deliver(note)
        finally:
            await notifier.close()

    records = asyncio.run(send())
    if json_out:
        print_json(records)
    else:
        for d in records:
            mark = "[green]✓[/green]" if d["ok"] else "[red]✗[/red]"
            detail = f"HTTP {d['status']}" if d.get("status") else ""
            if not d["ok"]:
                detail = d.get("error") or detail
            console.print(f"{mark} {escape(d['channel'])} ({d['attempts']} attempt(s)) {escape(detail)}")
    if not all(d["ok"] for d in records):
        raise typer.Exit(1)
