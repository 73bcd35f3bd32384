"""The `shipyard` command."""

from __future__ import annotations

import sys
from typing import Any

import typer

from shipyard import __version__
from shipyard.cli import (
    alerts,
    audit,
    bench,
    chat,
    config_cmd,
    datasets,
    deploy,
    drift,
    evals,
    guard,
    keys,
    mock_cmd,
    plan,
    redteam,
    registry_cmd,
    runs,
    sweep,
    traces,
    up,
)
from shipyard.errors import ShipyardError


def _flags_take_no_value() -> None:
    """Typer's rich help prints a value placeholder after every option, flags included
    (`--json <bool>`), as if a flag took a value; its plain help and `typer … utils docs` leave it
    out. Leave it out of the rich help too: a flag's type is shown as nothing."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "flags_take_no_value", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.flags_take_no_value = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()

app = typer.Typer(
    name="shipyard",
    help="Shipyard: an LLMOps platform. `shipyard up` starts an OpenAI-compatible gateway (on a local "
    "model by default) with every call traced.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shipyard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass


app.command("up")(up.up)
app.command("chat")(chat.chat)
app.command("mock-upstream")(mock_cmd.mock_upstream)
app.command("apply")(registry_cmd.apply_command)
app.command("export")(registry_cmd.export_command)
app.add_typer(config_cmd.app, name="config")
for _kind in ("prompt", "model", "route", "provider"):
    app.add_typer(registry_cmd.make_group(_kind), name=_kind + "s")
app.add_typer(traces.app, name="traces")
app.add_typer(datasets.app, name="datasets")
app.add_typer(runs.app, name="runs")
app.add_typer(evals.app, name="eval")
app.command("promote")(evals.promote)
app.add_typer(alerts.app, name="alerts")
app.add_typer(drift.app, name="drift")
app.add_typer(guard.app, name="guard")
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.command("redteam")(redteam.redteam)
app.add_typer(bench.app, name="bench")
app.command("sweep")(sweep.sweep)
app.add_typer(deploy.app, name="deploy")
app.command("plan")(plan.plan)


def main() -> None:
    try:
        app()
    except ShipyardError as exc:
        from rich.markup import escape

        from shipyard.cli.common import err_console

        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
