"""`shipyard datasets …`: versioned datasets for evals, from files or from traced traffic."""

from __future__ import annotations

import contextlib
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from shipyard.cli.common import (
    CliTable,
    Col,
    HomeOpt,
    JsonOpt,
    console,
    err_console,
    exit_on_error,
    open_store,
    print_json,
    settings_only,
)
from shipyard.cli.traces import parse_since
from shipyard.errors import InvalidRequest
from shipyard.registry import datasets as svc
from shipyard.settings import Settings
from shipyard.store.db import Store

app = typer.Typer(
    help="Versioned datasets of examples for evals: import files, build from traces, export.",
    no_args_is_help=True,
)

# Files and versions above these sizes get a progress bar (on a terminal): below them the work
# takes well under a second and a bar would only flicker.
PROGRESS_BYTES = 2 * 1024 * 1024
PROGRESS_EXAMPLES = 20_000

MessageOpt = typer.Option(None, "--message", "-m", help="Why this version exists (kept with it).")
DedupeOpt = typer.Option(
    False,
    "--dedupe",
    help="Drop examples whose input and expected repeat an earlier one (the first is kept).",
)


def _open(home: str | None, create: bool = False) -> tuple[Settings, Store]:
    """Settings and store; only the commands that add datasets from files may create the store."""
    settings = settings_only(home)
    return settings, open_store(settings, create=create)


def _actor(settings: Settings) -> str:
    from shipyard.cli.common import cli_actor

    return cli_actor(settings)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


def _preview(value: Any, width: int = 60) -> str:
    """One line for a table cell: the last user message of a chat, else compact JSON."""
    if value is None:
        return "-"
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        users = [m for m in value if m.get("role") == "user"] or value
        content = users[-1].get("content")
        text = content if isinstance(content, str) else orjson.dumps(content).decode()
        if len(value) > 1:
            text = f"[{len(value)} msgs] {text}"
    elif isinstance(value, str):
        text = value
    else:
        text = orjson.dumps(value).decode()
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _source(src: dict[str, Any] | None) -> str:
    if not src:
        return "-"
    kind = src.get("type", "?")
    if kind == "traces":
        filters = ", ".join(
            f"{k}={v}" for k, v in (src.get("filters") or {}).items() if k not in ("since", "until")
        )
        extras = [x for x in ("scrub_pii", "dedupe") if src.get(x)]
        return f"traces ({filters or 'all'})" + (f" +{'+'.join(extras)}" if extras else "")
    if kind == "file":
        return f"file {Path(str(src.get('path'))).name}"
    return str(kind) + (" +append" if src.get("append") else "")


def _report(result: svc.WriteResult, json_out: bool) -> None:
    if json_out:
        print_json(result.to_dict())
        return
    v = result.version
    if result.dataset_created:
        console.print(f"Created dataset [bold]{escape(v.dataset)}[/bold].")
    if result.created:
        console.print(
            f"Created version [bold]{escape(v.ref)}[/bold] (sha256 {v.hash[:12]}) "
            f"with {v.n_examples} example(s).",
            highlight=False,
        )
    else:
        console.print(
            f"Version [bold]{escape(v.ref)}[/bold] (sha256 {v.hash[:12]}) already has exactly these "
            f"{v.n_examples} example(s); nothing new was written.",
            highlight=False,
        )
    if result.duplicates_removed:
        console.print(f"{result.duplicates_removed} duplicate(s) removed.")
    if result.skipped:
        console.print(f"{result.skipped} matching trace(s) skipped: no captured input.")


class _Bar:
    """A Rich progress bar on stderr for the service's (stage, done, total) callbacks."""

    LABELS = {"parse": "reading", "write": "writing"}

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(self.LABELS.get(stage, stage), total=total or None)
        self.progress.update(self.tasks[stage], completed=done, total=total or None)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


@app.command("create")
def create(
    name: str = typer.Argument(..., help="Dataset name: letters, digits, `.`, `_`, `-`."),
    description: str = typer.Option(None, "--description", "-d", help="What the dataset is for."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Create an empty dataset (import or from-traces also create one when needed)."""
    with exit_on_error(OSError):
        _, store = _open(home, create=True)
        dataset = svc.create_dataset(store, name, description)
    if json_out:
        print_json(dataset.to_dict())
        return
    console.print(f"Created dataset [bold]{escape(name)}[/bold] (no versions yet).")


@app.command("list")
def list_datasets(home: str = HomeOpt, json_out: bool = JsonOpt) -> None:
    """List datasets with their latest version."""
    with exit_on_error(OSError):
        _, store = _open(home)
        rows = svc.list_datasets(store)
    if json_out:
        print_json([d.to_dict() for d in rows])
        return
    if not rows:
        console.print(
            "No datasets yet: `shipyard datasets import NAME FILE` or `shipyard datasets from-traces NAME`."
        )
        return
    table = CliTable(
        Col("name"),
        Col("versions", justify="right", drop=3),
        Col("latest"),
        Col("examples", justify="right"),
        Col("hash", drop=4),
        Col("updated", drop=1),
        Col("description", wrap=True, drop=2),
        title=f"{len(rows)} dataset(s)",
    )
    for d in rows:
        latest = d.latest
        table.add_row(
            escape(d.name),
            str(d.n_versions),
            f"v{latest.version}" if latest else "-",
            str(latest.n_examples) if latest else "-",
            latest.hash[:12] if latest else "-",
            _when(latest.created_at if latest else d.created_at),
            escape(d.description or ""),
        )
    console.print(table)


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="NAME (latest version), NAME@3, NAME@v3 or NAME@latest."),
    limit: int = typer.Option(5, "--limit", "-n", min=0, max=1000, help="How many examples to show."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Show a dataset version: summary and its first examples."""
    with exit_on_error(OSError):
        _, store = _open(home)
        name, _ = svc.parse_ref(ref)
        dataset = svc.get_dataset(store, name)
        page = svc.get_examples(store, ref, 0, max(limit, 1))
    examples = page.examples[:limit]
    if json_out:
        print_json(
            {
                "dataset": {
                    "name": dataset.name,
                    "description": dataset.description,
                    "n_versions": dataset.n_versions,
                },
                "version": page.version.to_dict(),
                "examples": [e.__dict__ for e in examples],
            }
        )
        return
    v = page.version
    console.print(
        f"[bold]{escape(v.ref)}[/bold]  {v.n_examples} example(s)  sha256 {v.hash}", highlight=False
    )
    if dataset.description:
        console.print(f"  {escape(dataset.description)}")
    console.print(
        f"  created {_when(v.created_at)} by {escape(v.created_by or '-')}  "
        f"source {escape(_source(v.source))}  (version {v.version} of {dataset.n_versions})",
        highlight=False,
    )
    if v.message:
        console.print(f"  message: {escape(v.message)}", highlight=False)
    if not examples:
        return
    table = CliTable(
        Col("#", justify="right"),
        Col("input", wrap=True),
        Col("expected", wrap=True),
        Col("tags", wrap=True, whole_words=True, drop=1),
        title=f"first {len(examples)} of {v.n_examples}",
    )
    for e in examples:
        table.add_row(
            str(e.idx), escape(_preview(e.input)), escape(_preview(e.expected)), escape(", ".join(e.tags))
        )
    console.print(table)


@app.command("versions")
def versions(
    name: str = typer.Argument(..., help="Dataset name."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """List every version of a dataset, oldest first."""
    with exit_on_error(OSError):
        _, store = _open(home)
        rows = svc.list_versions(store, name)
    if json_out:
        print_json([v.to_dict() for v in rows])
        return
    if not rows:
        console.print(f"Dataset [bold]{escape(name)}[/bold] has no versions yet.")
        return
    table = CliTable(
        Col("version", justify="right"),
        Col("examples", justify="right"),
        Col("hash"),
        Col("created", drop=2),
        Col("by", drop=1),
        Col("source", wrap=True, drop=3),
        Col("message", wrap=True, drop=4),
        title=f"{escape(name)}: {len(rows)} version(s)",
    )
    for v in rows:
        table.add_row(
            f"v{v.version}",
            str(v.n_examples),
            v.hash[:12],
            _when(v.created_at),
            escape(v.created_by or "-"),
            escape(_source(v.source)),
            escape(v.message or ""),
        )
    console.print(table)


@app.command("import")
def import_file(
    name: str = typer.Argument(..., help="Dataset name (created if it does not exist)."),
    file: Path = typer.Argument(..., help="JSONL, CSV or YAML file."),
    fmt: str = typer.Option(
        None,
        "--format",
        "-f",
        help="jsonl, csv or yaml. Default: from the file's extension.",
        show_default=False,
    ),
    dedupe: bool = DedupeOpt,
    append: bool = typer.Option(
        False, "--append", help="Add to the latest version's examples instead of replacing."
    ),
    message: str = MessageOpt,
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Add a version from a JSONL, CSV or YAML file.

    JSONL: one {input, expected, metadata, tags} object per line.

    CSV: columns `expected`, `tags` (split on `;` or `,`) and `metadata.X`; the rest are input variables.

    YAML: a list of examples, or `examples:` holding that list.

    The whole file is checked first: an error names its line and field and writes nothing.
    """
    with exit_on_error(OSError):
        if fmt is not None and fmt not in svc.FORMATS:
            raise InvalidRequest(f"--format must be one of {', '.join(svc.FORMATS)}; got `{fmt}`")
        if not file.is_file():
            raise InvalidRequest(f"no file `{file}`")
        fmt = fmt or svc.format_for_path(file)
        settings, store = _open(home, create=True)
        big = file.stat().st_size >= PROGRESS_BYTES and err_console.is_terminal
        with _progress() if big else contextlib.nullcontext() as progress:
            bar = _Bar(progress) if isinstance(progress, Progress) else None
            try:
                text = file.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidRequest(
                    f"{file.name} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
                ) from None
            result = svc.import_examples(
                store,
                name,
                text,
                fmt,
                path=str(file.resolve()),
                dedupe=dedupe,
                append=append,
                message=message,
                actor=_actor(settings),
                progress=bar,
            )
    _report(result, json_out)


@app.command("export")
def export(
    ref: str = typer.Argument(..., help="NAME (latest version), NAME@3, NAME@v3 or NAME@latest."),
    output: Path = typer.Option(None, "--output", "-o", help="File to write. Default: standard output."),
    home: str = HomeOpt,
) -> None:
    """Write a version as JSONL (one example per line); importing it gives the same hash."""
    with exit_on_error(OSError):
        _, store = _open(home)
        info, lines = svc.export_jsonl(store, ref)
        big = output is not None and info.n_examples >= PROGRESS_EXAMPLES and err_console.is_terminal
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(output.open("wb")) if output is not None else sys.stdout.buffer
            if big:
                progress = stack.enter_context(_progress())
                task = progress.add_task("writing", total=info.n_examples)
            for i, line in enumerate(lines, 1):
                sink.write(line)
                if big and i % 1000 == 0:
                    progress.update(task, completed=i)
            sink.flush()
    if output is not None:
        err_console.print(
            f"Wrote {info.n_examples} example(s) of {escape(info.ref)} (sha256 {info.hash[:12]}) "
            f"to {escape(str(output))}.",
            highlight=False,
        )


_PROMPT_REF = re.compile(r"^(?P<name>[^@]+)(?:@[vV]?(?P<version>\d+))?$")


@app.command("from-traces")
def from_traces(
    name: str = typer.Argument(..., help="Dataset name (created if it does not exist)."),
    route: str = typer.Option(None, "--route", "-r", help="Only traces of this route."),
    since: str = typer.Option(None, "--since", help="Only newer traces: 15m, 2h, 7d or an ISO time."),
    until: str = typer.Option(None, "--until", help="Only older traces: 15m, 2h, 7d (ago) or an ISO time."),
    status: str = typer.Option(None, "--status", help="ok or error."),
    prompt: str = typer.Option(
        None, "--prompt", help="Only traces rendered from this prompt: NAME or NAME@vN."
    ),
    tag: str = typer.Option(None, "--tag", help="Only traces carrying this tag."),
    feedback: str = typer.Option(
        None,
        "--feedback",
        help="Only traces with user feedback: positive (a thumbs up or a score >= 0.5), negative "
        "(a thumbs down or a score < 0.5), any, or none.",
    ),
    limit: int = typer.Option(None, "--limit", "-n", min=1, help="At most this many traces (the newest)."),
    scrub_pii: bool = typer.Option(
        False,
        "--scrub-pii",
        help="Replace e-mail addresses, phone numbers, card numbers and IBANs with typed markers.",
    ),
    dedupe: bool = DedupeOpt,
    no_expected: bool = typer.Option(
        False, "--no-expected", help="Do not use the traced answers as `expected`."
    ),
    message: str = MessageOpt,
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Add a version built from traced requests: their input (or prompt variables) and answers."""
    if status is not None and status not in ("ok", "error"):
        raise typer.BadParameter("must be `ok` or `error`", param_hint="--status")
    if feedback is not None and feedback not in ("positive", "negative", "any", "none"):
        raise typer.BadParameter("must be positive, negative, any or none", param_hint="--feedback")
    prompt_name = prompt_version = None
    if prompt is not None:
        m = _PROMPT_REF.match(prompt)
        if m is None:
            raise typer.BadParameter("use NAME or NAME@vN, e.g. support@v3", param_hint="--prompt")
        prompt_name = m.group("name")
        prompt_version = int(m.group("version")) if m.group("version") else None
    selection = svc.TraceSelection(
        route=route,
        since=parse_since(since),
        until=parse_since(until, "--until"),
        status=status,
        prompt=prompt_name,
        prompt_version=prompt_version,
        tag=tag,
        limit=limit,
        feedback=feedback,
    )
    with exit_on_error(OSError):
        settings, store = _open(home)
        result = svc.from_traces(
            store,
            name,
            selection,
            expected_from_output=not no_expected,
            scrub_pii=scrub_pii,
            dedupe=dedupe,
            message=message,
            actor=_actor(settings),
        )
    _report(result, json_out)
