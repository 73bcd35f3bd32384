"""Shared CLI plumbing: resolving settings and config the same way `shipyard up` does, opening the
store, and output (JSON, and tables that stay readable and greppable at any width)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import typer
from rich import box
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderableType, RenderResult
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from shipyard.config.loader import Document, find_config, settings_section
from shipyard.errors import ShipyardError
from shipyard.settings import BY_NAME, Settings
from shipyard.store.db import Store

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

# A read-only command run where no store exists exits with this status (as usage errors do).
NO_STORE_EXIT = 2

HOME_HELP = (
    "Shipyard home directory (store, artifacts). Env: SHIPYARD_HOME. Default: ./.shipyard. "
    "Commands that only read exit with status 2 when no store exists there."
)
CONFIG_HELP = (
    "Path of shipyard.yaml. Env: SHIPYARD_CONFIG. Default: ./shipyard.yaml, else the built-in default."
)
JSON_HELP = "Print the result as machine-readable JSON."

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


# -- the store ---------------------------------------------------------------------------------


def store_file(settings: Settings) -> Path | None:
    """The file of a SQLite store; None for a server database (Postgres) or an in-memory one."""
    url = settings.store_url
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).expanduser().resolve()


def _where_from(settings: Settings) -> str:
    """Which setting chose the store."""
    name = "database_url" if settings.database_url else "home"
    value = f"`{settings.home}`" if name == "home" else ""
    source = settings.source(name)
    if source == "default":
        return f"the default home {value}"
    origin = {
        "flag": "--home",
        "env": f"${BY_NAME[name].env}",
        "config": "the config file's `settings:`",
    }.get(source, source)
    return f"{name} {value} from {origin}".replace("  ", " ")


def check_store(
    settings: Settings, *, create: bool, why: str | None = None, fix: str | None = None
) -> Path | None:
    """Make sure a command does not create a store by accident.

    A SQLite store file that does not exist is an error (exit status 2, naming the path, the
    setting that chose it and the remedy; ``why`` says what needed the store, ``fix`` adds a
    remedy) unless the command is one that writes (``create``): then the path of the store about
    to be created is returned, for `announce_new_store`. Server databases are never missing: their
    URL is an explicit choice."""
    path = store_file(settings)
    if path is None or path.exists():
        return None
    if create:
        return path
    head = f"{why}, and there is no Shipyard store at" if why else "no Shipyard store at"
    err_console.print(
        f"[red]error:[/red] {escape(head)} {escape(str(path))} ({escape(_where_from(settings))}). "
        "Create it with `shipyard up`, or point --home (or SHIPYARD_HOME) at the directory that "
        f"holds your shipyard.db{escape(fix or '')}.",
        highlight=False,
    )
    raise typer.Exit(NO_STORE_EXIT)


def announce_new_store(path: Path | None) -> None:
    if path is not None:
        err_console.print(f"created a new store at {escape(str(path))}", highlight=False)


def open_store(settings: Settings, migrate: bool = True, *, create: bool = False) -> Store:
    """The store the settings name. Only commands that write pass ``create``: they may create a
    missing SQLite store (and say so on stderr); any other command exits with status 2 instead."""
    new = check_store(settings, create=create)
    store = Store.for_settings(settings)
    if migrate:
        store.migrate()
    announce_new_store(new)
    return store


# -- errors ------------------------------------------------------------------------------------


def fail(message: str, status: int = 1) -> typer.Exit:
    """Print one red `error:` line on stderr; the caller raises the returned Exit (``status``)."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(status)


@contextlib.contextmanager
def exit_on_error(*also: type[Exception]) -> Iterator[None]:
    """Service errors (and those of the ``also`` types, such as OSError for commands that read
    files) become one red line on stderr and exit status 1, never a traceback. The line is the
    error's str(): a ConfigError's carries its list of problems."""
    try:
        yield
    except ShipyardError as exc:
        raise fail(str(exc)) from None
    except also as exc:
        raise fail(str(exc)) from None


# -- output ------------------------------------------------------------------------------------


def print_json(data: Any) -> None:
    sys.stdout.write(
        orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode() + "\n"
    )


@dataclass(frozen=True)
class Col:
    """A column of a `CliTable`.

    Cells of a column that does not ``wrap`` are always printed whole on one line: ids, names,
    metric names, times and figures (so `grep ID` finds the row). A ``wrap`` column holds free text
    and takes the width that is left (at least ``min_width``), wrapping between words and cutting
    a word longer than the column; with ``whole_words`` (a list of names) it is never narrower than
    its longest word. Columns with a ``drop`` rank are left out when the table would not fit
    otherwise, lowest rank first; columns without one are always shown."""

    header: str
    wrap: bool = False
    justify: JustifyMethod = "left"
    drop: int | None = None
    min_width: int = 12
    whole_words: bool = False
    style: str | None = None


# Between two columns: the right padding of one and the left padding of the next, collapsed.
_GAP = 2


class CliTable:
    """The one table of the CLI: laid out when printed, for the console's width (80 columns when
    output is piped), by dropping the least important columns and wrapping free text, never by
    cutting or folding an id or a name. When even the columns that are never dropped do not fit,
    the table prints wider than the console rather than cut them."""

    def __init__(
        self,
        *columns: Col,
        title: str | None = None,
        title_justify: JustifyMethod = "left",
        show_header: bool = True,
    ) -> None:
        self.columns = list(columns)
        self.title = title
        self.title_justify = title_justify
        self.show_header = show_header
        self.rows: list[tuple[list[RenderableType], str | None, bool]] = []

    def add_row(self, *cells: RenderableType, style: str | None = None, end_section: bool = False) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append((list(cells), style, end_section))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.layout(console, options)

    def layout(self, console: Console, options: ConsoleOptions) -> Table:
        width = options.max_width
        natural: list[int] = []
        shortest: list[int] = []  # the width below which a word would be cut
        for i, col in enumerate(self.columns):
            cells: list[RenderableType] = [col.header] if self.show_header else []
            cells += [row[i] for row, _, _ in self.rows]
            sizes = [Measurement.get(console, options.update_width(10_000), c) for c in cells]
            natural.append(max((m.maximum for m in sizes), default=1))
            shortest.append(max((m.minimum for m in sizes), default=1))

        def need(i: int) -> int:
            col = self.columns[i]
            if not col.wrap:
                return natural[i]
            if col.whole_words:
                return min(natural[i], max(col.min_width, shortest[i]))
            return min(natural[i], col.min_width)

        def total(kept: list[int]) -> int:
            return sum(need(i) for i in kept) + _GAP * (len(kept) - 1)

        kept = list(range(len(self.columns)))
        droppable = sorted(
            (i for i, c in enumerate(self.columns) if c.drop is not None),
            key=lambda i: (self.columns[i].drop, -i),
        )
        dropped: list[int] = []
        while total(kept) > width and droppable:
            i = droppable.pop(0)
            kept.remove(i)
            dropped.append(i)
        # A wide column may have made room for narrower ones dropped before it: take them back,
        # most important first, as long as they fit (never a column over a more important one).
        for i in reversed(dropped[:-1]):
            if total(sorted([*kept, i])) > width:
                break
            kept = sorted([*kept, i])
            dropped.remove(i)

        widths = {i: need(i) for i in kept}
        spare = width - total(kept)
        # What is left goes to the wrap columns, the one furthest from its natural width first.
        while spare > 0:
            short = [i for i in kept if self.columns[i].wrap and widths[i] < natural[i]]
            if not short:
                break
            i = max(short, key=lambda i: natural[i] - widths[i])
            widths[i] += 1
            spare -= 1

        table = Table(
            title=self.title,
            title_justify=self.title_justify,
            show_header=self.show_header,
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            padding=(0, 1),
            collapse_padding=True,
        )
        used = sum(widths.values()) + _GAP * (len(kept) - 1)
        if used > width:
            table.width = used
        for i in kept:
            col = self.columns[i]
            table.add_column(
                col.header,
                justify=col.justify,
                style=col.style,
                width=widths[i],
                no_wrap=not col.wrap,
                overflow="fold" if col.wrap else "ignore",
            )
        for cells, style, end_section in self.rows:
            table.add_row(*(cells[i] for i in kept), style=style, end_section=end_section)
        if dropped:
            names = ", ".join(self.columns[i].header or "#" for i in sorted(dropped))
            table.caption = f"left out to fit {width} columns: {names}"
            table.caption_justify = "left"
            table.caption_style = "dim"
        return table


def cli_actor(settings: Settings | None = None) -> str:
    """Who is making a change from the command line: the `actor` setting, else the OS user."""
    if settings is not None and settings.actor:
        return str(settings.actor)
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"
