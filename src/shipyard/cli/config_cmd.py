"""`shipyard config check|show`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from shipyard.cli.common import console, err_console, print_json
from shipyard.config.loader import default_config_text, load_config
from shipyard.errors import ConfigError

app = typer.Typer(help="Check and show shipyard.yaml.", no_args_is_help=True)


@app.command("check")
def check(
    file: Path = typer.Argument(
        None,
        help="Config file to check. Default: $SHIPYARD_CONFIG, ./shipyard.yaml, else the built-in default.",
        show_default=False,
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Validate a config: YAML syntax, every field, provider options and references between
    providers, models and routes. Every problem is listed with its line and a fix. Exit code 1
    when the config is invalid."""
    import os

    path = str(file) if file is not None else os.environ.get("SHIPYARD_CONFIG")
    try:
        loaded = load_config(path)
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
        f"[green]✓[/green] {loaded.source} is valid: {len(cfg.providers)} provider(s), "
        f"{len(cfg.models)} model(s), {len(cfg.routes)} route(s)"
    )


@app.command("show")
def show(
    default: bool = typer.Option(
        False, "--default", help="Print the built-in default config (a starting point)."
    ),
) -> None:
    """Print the config file in use (or the built-in default), as YAML."""
    import os

    if default:
        typer.echo(default_config_text(), nl=False)
        return
    path = os.environ.get("SHIPYARD_CONFIG")
    if path is None and Path("shipyard.yaml").is_file():
        path = "shipyard.yaml"
    if path is None:
        typer.echo(default_config_text(), nl=False)
    else:
        typer.echo(Path(path).read_text("utf-8"), nl=False)
