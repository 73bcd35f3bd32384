"""`shipyard models list`."""

from __future__ import annotations

import typer
from rich.table import Table

from shipyard.cli.common import ConfigOpt, JsonOpt, console, print_json, resolve

app = typer.Typer(help="List the routes and models a config defines.", no_args_is_help=True)


@app.command("list")
def list_models(config: str = ConfigOpt, json_out: bool = JsonOpt) -> None:
    """List routes (what clients send as `model`) with their targets, and every model with its
    provider and price."""
    _, loaded = resolve(config=config)
    cfg = loaded.config
    providers = cfg.provider_by_name()
    if json_out:
        print_json(
            {
                "routes": [r.model_dump() for r in cfg.routes],
                "models": [
                    {**m.model_dump(), "provider_type": providers[m.provider].type} for m in cfg.models
                ],
            }
        )
        return
    routes = Table(title=f"Routes ({loaded.source})")
    for col in ("route", "targets (weight)", "fallbacks", "sticky"):
        routes.add_column(col)
    for r in cfg.routes:
        total = sum(t.weight for t in r.targets) or 1
        targets = ", ".join(f"{t.label} ({100 * t.weight / total:.0f}%)" for t in r.targets)
        routes.add_row(
            r.name, targets, ", ".join(t.label for t in r.fallbacks) or "-", "yes" if r.sticky else "no"
        )
    console.print(routes)
    models = Table(title="Models")
    for col in ("model", "kind", "provider", "provider model", "$ / 1M in", "$ / 1M out"):
        models.add_column(col)
    for m in cfg.models:
        models.add_row(
            m.name,
            m.kind,
            f"{m.provider} ({providers[m.provider].type})",
            m.provider_model,
            f"{m.pricing.input_per_mtok:g}",
            f"{m.pricing.output_per_mtok:g}",
        )
    console.print(models)
