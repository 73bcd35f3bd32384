"""`shipyard guard scan`: run guard scanners over a file offline, one JSON line out per text in.

Teams use it to measure the guards on their own data before turning them on (and the numbers in
docs/benchmarks.md come from the same code, `benchmarks/guard_detectors.py`). Nothing is sent
anywhere and no server is needed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import typer
from pydantic import ValidationError
from rich.markup import escape

from shipyard.cli.common import ConfigOpt, err_console, print_json
from shipyard.errors import InvalidRequest, ShipyardError
from shipyard.guard.base import Finding, ScanContext, Scanner, Stage

app = typer.Typer(
    help="Guard scanners (prompt injection, PII, secrets…) outside the gateway.", no_args_is_help=True
)

_RANK = {"pass": 0, "flag": 1, "redact": 2, "block": 3}
_SPAN_MAX = 200


class ScanError(InvalidRequest):
    """Bad input to `guard scan`: the message names the line or option and the fix."""


def scanners_by_type(names: Sequence[str], stage: Stage) -> list[tuple[str, Scanner]]:
    """Scanners built by type name with their default options."""
    from shipyard.plugins import scanner_types

    types = scanner_types()
    out: list[tuple[str, Scanner]] = []
    for name in names:
        stype = types.get(name)
        if stype is None:
            raise ScanError(f"unknown scanner type `{name}`; known types: {', '.join(sorted(types))}")
        if stage not in stype.stages:
            raise ScanError(
                f"scanner `{name}` runs on {'/'.join(stype.stages)} only; pass `--stage {stype.stages[0]}`"
            )
        try:
            options = stype.options.model_validate({})
        except ValidationError as exc:
            needed = ", ".join(str(e["loc"][-1]) for e in exc.errors())
            raise ScanError(
                f"scanner `{name}` needs options ({needed}); configure it on a route and use --route"
            ) from None
        out.append((name, stype.factory(name, options)))
    return out


def scanners_of_route(route: str, stage: Stage, config: str | None) -> list[tuple[str, Scanner]]:
    """The scanners a route's ``guards:`` configure for ``stage``, built as the gateway builds them."""
    from shipyard.guard.pipeline import GuardPipeline
    from shipyard.registry.validation import load_config

    loaded = load_config(config)
    routes = {r.name: r for r in loaded.config.routes}
    rc = routes.get(route)
    if rc is None:
        known = ", ".join(sorted(routes)) or "none"
        raise ScanError(f"{loaded.source} has no route `{route}`; known routes: {known}")
    guards = getattr(rc, "guards", None)
    pipeline = GuardPipeline.build(route, guards) if guards is not None else None
    configured = [] if pipeline is None else (pipeline.inputs if stage == "input" else pipeline.outputs)
    if not configured:
        raise ScanError(
            f"route `{route}` has no {stage} guards in {loaded.source}; add `guards: {{{stage}: [...]}}` "
            "to the route, or pick scanners with --scanners"
        )
    return [(c.name, c.scanner) for c in configured]


def read_records(lines: Iterable[str], source: str) -> Iterator[dict[str, Any]]:
    """JSONL objects with a `text` field, or plain text (one prompt per line): decided by the first
    non-empty line. Empty lines are skipped."""
    mode: str | None = None
    for n, line in enumerate(lines, 1):
        raw = line.rstrip("\r\n")
        if not raw.strip():
            continue
        if mode is None:
            mode = "jsonl" if raw.lstrip().startswith("{") else "text"
        if mode == "text":
            yield {"text": raw}
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ScanError(
                f"{source} line {n}: not valid JSON ({exc}); JSONL needs one object per line"
            ) from None
        if not isinstance(obj, dict):
            raise ScanError(f"{source} line {n}: expected a JSON object with a `text` field")
        if not isinstance(obj.get("text"), str):
            raise ScanError(
                f"{source} line {n}: the object has no string `text` field; add one with the text to scan"
            )
        yield obj


def context_of(record: dict[str, Any], stage: Stage, role: str | None) -> ScanContext:
    """What a record may tell the scanners besides its text: role, system prompt, canaries, schema."""
    canaries = record.get("canaries")
    schema = record.get("response_schema")
    system = record.get("system_prompt")
    rec_role = record.get("role")
    return ScanContext(
        stage=stage,
        role=rec_role if isinstance(rec_role, str) else role,
        system_prompt=system if isinstance(system, str) else None,
        canaries=tuple(c for c in canaries if isinstance(c, str)) if isinstance(canaries, list) else (),
        response_schema=schema if isinstance(schema, dict) else None,
    )


def finding_dict(f: Finding, text: str) -> dict[str, Any]:
    out = f.to_dict()
    span = text[f.start : f.end]
    out["span"] = span if len(span) <= _SPAN_MAX else span[: _SPAN_MAX - 1] + "…"
    return out


def scan_record(
    scanners: Sequence[tuple[str, Scanner]], record: dict[str, Any], stage: Stage, role: str | None = None
) -> dict[str, Any]:
    """``record`` plus ``blocked``, ``action`` (the strongest: block > redact > flag > pass) and
    ``findings``."""
    text: str = record["text"]
    ctx = context_of(record, stage, role)
    findings: list[Finding] = []
    for name, scanner in scanners:
        try:
            findings += scanner.scan(text, ctx)
        except Exception as exc:
            raise ScanError(f"scanner `{name}` failed ({type(exc).__name__}: {exc})") from exc
    action = max((f.action for f in findings), key=_RANK.__getitem__, default="pass")
    return {
        **record,
        "blocked": action == "block",
        "action": action,
        "findings": [finding_dict(f, text) for f in findings],
    }


@app.command("scan")
def scan(
    file: str = typer.Argument(
        ...,
        metavar="FILE",
        help="JSONL (objects with a `text` field) or plain text, one per line; - for stdin.",
    ),
    route: str = typer.Option(None, "--route", "-r", help="Use this route's configured guards."),
    scanners: str = typer.Option(
        None,
        "--scanners",
        "-s",
        help="Comma-separated scanner types, with default options (e.g. injection,pii).",
    ),
    stage: str = typer.Option(
        "input", "--stage", help="input or output: which guards of the route, and the scan context."
    ),
    role: str = typer.Option(
        None,
        "--role",
        help="Message role for records without a `role` field (e.g. tool for retrieved documents).",
    ),
    config: str = ConfigOpt,
    json_out: bool = typer.Option(
        False,
        "--json",
        help="Print one JSON document (the counts, and every result under `results`) instead of JSON lines.",
    ),
) -> None:
    """Scan texts offline; write one JSON line per text with `blocked`, `action` and `findings`.

    Example: shipyard guard scan prompts.jsonl --scanners injection,pii > findings.jsonl
    """
    import os

    if stage not in ("input", "output"):
        raise typer.BadParameter("must be `input` or `output`", param_hint="--stage")
    if (route is None) == (scanners is None):
        raise typer.BadParameter(
            "give exactly one of --route R or --scanners a,b", param_hint="--route/--scanners"
        )
    st: Stage = "input" if stage == "input" else "output"
    try:
        if route is not None:
            chosen = scanners_of_route(route, st, config or os.environ.get("SHIPYARD_CONFIG"))
        else:
            names = [n.strip() for n in scanners.split(",") if n.strip()]
            if not names:
                raise typer.BadParameter("name at least one scanner type", param_hint="--scanners")
            chosen = scanners_by_type(names, st)
        if file == "-":
            lines: Iterable[str] = sys.stdin
            source = "stdin"
        else:
            path = Path(file)
            if not path.is_file():
                raise ScanError(f"file `{file}` does not exist")
            lines = path.read_text("utf-8").splitlines()
            source = file
        t0 = time.perf_counter()
        n = blocked = flagged = 0
        out = sys.stdout
        results: list[dict[str, Any]] = []
        for record in read_records(lines, source):
            result = scan_record(chosen, record, st, role)
            if json_out:
                results.append(result)
            else:
                out.write(orjson.dumps(result).decode() + "\n")
            n += 1
            blocked += result["blocked"]
            flagged += bool(result["findings"])
        elapsed = time.perf_counter() - t0
    except ShipyardError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    if json_out:
        print_json(
            {
                "scanners": [name for name, _ in chosen],
                "stage": st,
                "scanned": n,
                "blocked": blocked,
                "with_findings": flagged,
                "seconds": round(elapsed, 3),
                "results": results,
            }
        )
    err_console.print(
        f"scanned {n} text(s) with {', '.join(name for name, _ in chosen)}: {blocked} blocked, "
        f"{flagged} with findings, {elapsed:.2f} s",
        highlight=False,
    )
