"""`shipyard config check|show`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.markup import escape

from shipyard.cli.common import ConfigOpt, JsonOpt, console, err_console, print_json
from shipyard.config.loader import default_config_text
from shipyard.errors import ConfigError, InvalidRequest
from shipyard.registry.validation import load_config

app = typer.Typer(help="Check and show shipyard.yaml.", no_args_is_help=True)

# The file used to be a positional argument (`shipyard config check FILE`); it still works, but
# --config is how every command names the config file.
_OldFileArg = typer.Argument(None, hidden=True, show_default=False)


def _config_path(config: str | None, file: Path | None) -> str | None:
    """--config (or the old positional FILE), else $SHIPYARD_CONFIG; None: ./shipyard.yaml, else
    the built-in default."""
    if file is not None and config is not None and Path(config) != file:
        raise InvalidRequest(f"two config files given (`{file}` and --config `{config}`); give only --config")
    chosen = config or (str(file) if file is not None else None)
    return chosen or os.environ.get("SHIPYARD_CONFIG")


@app.command("check")
def check(
    config: str = ConfigOpt,
    file: Path = _OldFileArg,
    json_out: bool = JsonOpt,
) -> None:
    """Validate a config: YAML syntax, every field, provider options and references between
    providers, models and routes. Every problem is listed with its line and a fix. Exit code 1
    when the config is invalid."""
    try:
        loaded = load_config(_config_path(config, file))
    except ConfigError as exc:
        if json_out:
            print_json({"valid": False, "error": exc.message, "problems": exc.problems})
        else:
            err_console.print(f"[red]✗[/red] {escape(exc.message)}", highlight=False)
            for p in exc.problems:
                err_console.print(f"  - {p}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    cfg = loaded.config
    if json_out:
        print_json(
            {
                "valid": True,
                "source": loaded.source,
                "providers": len(cfg.providers),
                "models": len(cfg.models),
                "routes": len(cfg.routes),
            }
        )
        return
    console.print(
        f"[green]✓[/green] {escape(loaded.source)} is valid: {len(cfg.providers)} provider(s), "
        f"{len(cfg.models)} model(s), {len(cfg.routes)} route(s)"
    )


@app.command("show")
def show(
    default: bool = typer.Option(
        False, "--default", help="Print the built-in default config (a starting point)."
    ),
    config: str = ConfigOpt,
    json_out: bool = typer.Option(
        False, "--json", help="Print JSON ({source, config}) instead of the file's YAML."
    ),
) -> None:
    """Print the config file in use (or the built-in default), as YAML."""
    path = None if default else _config_path(config, None)
    if path is None and not default and Path("shipyard.yaml").is_file():
        path = "shipyard.yaml"
    if path is None:
        source, text = "built-in default config", default_config_text()
    else:
        if not Path(path).is_file():
            raise InvalidRequest(
                f"config file `{path}` does not exist; check the path given to --config / SHIPYARD_CONFIG"
            )
        source, text = path, Path(path).read_text("utf-8")
    if not json_out:
        typer.echo(text, nl=False)
        return
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}; `shipyard config check` shows where") from None
    print_json({"source": source, "config": data})
