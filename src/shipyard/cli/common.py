"""Shared CLI plumbing: resolving settings and config the same way `shipyard up` does, output."""

from __future__ import annotations

import sys
from typing import Any

import orjson
import typer
from rich.console import Console

from shipyard.config.loader import Document, find_config, settings_section
from shipyard.settings import Settings
from shipyard.store.db import Store

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

HOME_HELP = "Shipyard home directory (store, artifacts). Env: SHIPYARD_HOME. Default: ./.shipyard"
CONFIG_HELP = (
    "Path of shipyard.yaml. Env: SHIPYARD_CONFIG. Default: ./shipyard.yaml, else the built-in default."
)
JSON_HELP = "Print machine-readable JSON instead of a table."

HomeOpt = typer.Option(None, "--home", help=HOME_HELP, show_default=False)
ConfigOpt = typer.Option(None, "--config", "-c", help=CONFIG_HELP, show_default=False)
JsonOpt = typer.Option(False, "--json", help=JSON_HELP)


def resolve(
    home: str | None = None, config: str | None = None, **flags: Any
) -> tuple[Settings, Document | None]:
    """Settings (flag > env > the file's `settings:` > default) and the config file, if any."""
    first = Settings(overrides={"home": home, "config": config, **flags})
    doc = find_config(first.config)
    return first.with_file_values(settings_section(doc)), doc


def settings_only(home: str | None = None) -> Settings:
    """Settings for commands that only need the store: the config file's `settings:` still count."""
    settings, _ = resolve(home=home)
    return settings


def open_store(settings: Settings, migrate: bool = True) -> Store:
    store = Store(settings.store_url)
    if migrate:
        store.migrate()
    return store


def print_json(data: Any) -> None:
    sys.stdout.write(
        orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode() + "\n"
    )


def cli_actor(settings: Settings | None = None) -> str:
    """Who is making a change from the command line: the `actor` setting, else the OS user."""
    if settings is not None and settings.actor:
        return str(settings.actor)
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"
