"""`shipyard keys create|list|update|revoke`: API keys for the gateway, the admin API and the
dashboard. Works on the store directly (whoever can read the store administers it); every change
is written to the audit log with the operating-system user (or the `actor` setting) as the actor."""

from __future__ import annotations

import time
from datetime import datetime
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
    open_store,
    print_json,
    settings_only,
)
from shipyard.config.schema import LimitsConfig
from shipyard.errors import InvalidRequest
from shipyard.store import keys
from shipyard.store.audit import Actor

app = typer.Typer(
    help="API keys (`sk-shp-…`): roles admin, developer, viewer, client; route scopes; limits.",
    no_args_is_help=True,
)

ROLE_HELP = (
    "admin: everything, incl. keys and the audit log; developer: change the registry, run evals, call "
    "routes; viewer: read the dashboard and the API; client: call routes on /v1 and send feedback."
)


def _ts(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def _limits(
    rpm: int | None, tpm: int | None, usd_day: float | None, usd_month: float | None
) -> dict[str, Any]:
    try:
        spec = LimitsConfig(
            requests_per_min=rpm, tokens_per_min=tpm, usd_per_day=usd_day, usd_per_month=usd_month
        )
    except ValueError as exc:
        raise InvalidRequest(f"limits: {exc}") from None
    return spec.model_dump(exclude_none=True)


def _routes(value: str | None) -> list[str] | None:
    if value is None:
        return None
    routes = [r.strip() for r in value.split(",") if r.strip()]
    if not routes:
        raise InvalidRequest("`--routes` needs route names, e.g. `--routes support,search`")
    return routes


def _actor(settings: Any) -> Actor:
    return Actor(cli_actor(settings), None, "cli")


def _limits_text(limits: dict[str, Any] | None) -> str:
    if not limits:
        return "-"
    names = {
        "requests_per_min": "req/min",
        "tokens_per_min": "tok/min",
        "usd_per_day": "$/day",
        "usd_per_month": "$/month",
    }
    return ", ".join(f"{v:g} {names[k]}" for k, v in limits.items())


RpmOpt = typer.Option(None, "--rpm", help="Requests per minute.", min=1)
TpmOpt = typer.Option(None, "--tpm", help="Tokens (input + output) per minute.", min=1)
UsdDayOpt = typer.Option(None, "--usd-per-day", help="Spend per UTC day, in USD.", min=0)
UsdMonthOpt = typer.Option(None, "--usd-per-month", help="Spend per UTC month, in USD.", min=0)


@app.command("create")
def create(
    name: str = typer.Argument(..., help="What the key is for, e.g. `support-bot` or `alice`."),
    role: str = typer.Option("client", "--role", "-r", help=ROLE_HELP),
    routes: str = typer.Option(
        None, "--routes", help="Comma-separated routes the key may call on /v1. Default: every route."
    ),
    expires_in_days: float = typer.Option(
        None, "--expires-in-days", help="Days until the key stops working."
    ),
    rpm: int = RpmOpt,
    tpm: int = TpmOpt,
    usd_per_day: float = UsdDayOpt,
    usd_per_month: float = UsdMonthOpt,
    home: str = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a key and print its secret. The secret is shown only now: only a hash is stored.

    Example: `shipyard keys create support-bot --role client --routes support --usd-per-day 5`
    """
    settings = settings_only(home)
    store = open_store(settings, create=True)
    expires = time.time() + expires_in_days * 86400 if expires_in_days else None
    record, secret = keys.create(
        store,
        name,
        role,
        _actor(settings),
        routes=_routes(routes),
        limits=_limits(rpm, tpm, usd_per_day, usd_per_month) or None,
        expires_at=expires,
    )
    if as_json:
        print_json({**record.to_dict(), "key": secret})
        return
    console.print(f"Created key [cyan]{record.id}[/cyan] ({escape(record.name)}, role {record.role}).")
    console.print("The secret is shown only this once; store it now:\n")
    console.print(f"  {secret}\n", highlight=False, markup=False)
    console.print("Use it as the OpenAI client's api_key, or `Authorization: Bearer …` on the API.")


@app.command("list")
def list_command(
    all_keys: bool = typer.Option(False, "--all", help="Include revoked keys."),
    home: str = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """List keys: id, name, visible prefix, role, routes, limits, when created and last used."""
    store = open_store(settings_only(home))
    records = keys.list_keys(store, include_revoked=all_keys)
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    if not records:
        console.print("No keys. `shipyard keys create NAME --role client` makes one.")
        return
    table = CliTable(
        Col("id"),
        Col("name"),
        Col("prefix", drop=3),
        Col("role"),
        Col("routes", wrap=True, whole_words=True, drop=5),
        Col("limits", wrap=True, drop=4),
        Col("status"),
        Col("created", drop=1),
        Col("last used", drop=2),
    )
    for r in records:
        table.add_row(
            r.id,
            escape(r.name),
            r.prefix + "…",
            r.role,
            escape(", ".join(r.routes)) if r.routes is not None else "all",
            _limits_text(r.limits),
            r.status,
            _ts(r.created_at),
            _ts(r.last_used_at),
        )
    console.print(table)


@app.command("update")
def update(
    key: str = typer.Argument(..., help="Key id, visible prefix, or name."),
    name: str = typer.Option(None, "--name", help="New name."),
    role: str = typer.Option(None, "--role", "-r", help=ROLE_HELP),
    routes: str = typer.Option(None, "--routes", help="New comma-separated route scope."),
    all_routes: bool = typer.Option(False, "--all-routes", help="Let the key call every route."),
    rpm: int = RpmOpt,
    tpm: int = TpmOpt,
    usd_per_day: float = UsdDayOpt,
    usd_per_month: float = UsdMonthOpt,
    no_limits: bool = typer.Option(False, "--no-limits", help="Remove the key's limits."),
    home: str = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Change a key's name, role, route scope or limits (the secret stays the same).
    Limits given replace the key's limits as a whole."""
    settings = settings_only(home)
    store = open_store(settings)
    record = keys.find(store, key)
    changes: dict[str, Any] = {"name": name, "role": role}
    if all_routes:
        changes["routes"] = None
    elif routes is not None:
        changes["routes"] = _routes(routes)
    new_limits = _limits(rpm, tpm, usd_per_day, usd_per_month)
    if no_limits:
        changes["limits"] = None
    elif new_limits:
        changes["limits"] = new_limits
    updated = keys.update(store, record.id, _actor(settings), **changes)
    if as_json:
        print_json(updated.to_dict())
        return
    console.print(
        f"Key [cyan]{updated.id}[/cyan] ({escape(updated.name)}): role {updated.role}, routes "
        f"{escape(', '.join(updated.routes)) if updated.routes is not None else 'all'}, "
        f"limits {_limits_text(updated.limits)}. Running gateways apply it within a second."
    )


@app.command("revoke")
def revoke(
    key: str = typer.Argument(..., help="Key id, visible prefix, or name."),
    force: bool = typer.Option(False, "--force", help="Allow revoking the last admin key."),
    home: str = HomeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Revoke a key: from then on it gets HTTP 401 (running gateways notice within a second)."""
    settings = settings_only(home)
    store = open_store(settings)
    record = keys.find(store, key)
    if record.role == "admin" and record.active and keys.count_admins(store) <= 1 and not force:
        raise InvalidRequest(
            f"`{record.id}` is the last admin key; create another (`shipyard keys create NAME --role admin`) "
            "or pass --force"
        )
    revoked = keys.revoke(store, record.id, _actor(settings))
    if as_json:
        print_json(revoked.to_dict())
        return
    console.print(f"Revoked key [cyan]{revoked.id}[/cyan] ({escape(revoked.name)}, {revoked.prefix}…).")
