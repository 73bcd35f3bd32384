"""`shipyard prompts|models|routes|providers …`: versions, aliases, diffs and rollbacks, plus
`shipyard apply` and `shipyard export` (config as code). One command set serves every kind."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.markup import escape
from rich.syntax import Syntax

from shipyard.cli.common import (
    CliTable,
    Col,
    HomeOpt,
    JsonOpt,
    cli_actor,
    console,
    err_console,
    exit_on_error,
    fail,
    open_store,
    print_json,
    settings_only,
    store_file,
)
from shipyard.config.loader import read_document
from shipyard.errors import InvalidRequest, ShipyardError
from shipyard.registry.apply import SECTIONS, Plan, apply, export
from shipyard.registry.versions import CURRENT, Registry
from shipyard.store.db import Store

HELP = {
    "prompt": "Versioned prompt templates (chat messages with Jinja2 variables), their aliases and diffs.",
    "model": "Versioned model configs (provider, provider-side name, price, default params).",
    "route": "Versioned routes (targets, splits, fallbacks, prompt references).",
    "provider": "Versioned provider configs (type and options; secrets stay ${ENV} references).",
}


def _registry(home: str | None, create: bool = False) -> tuple[Registry, str]:
    """The registry of the store; only commands that record versions may create the store."""
    settings = settings_only(home)
    return Registry(open_store(settings, create=create)), cli_actor(settings)


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _fail(exc: ShipyardError) -> typer.Exit:
    return fail(str(exc))


def print_plan(plan: Plan, dry_run: bool) -> None:
    marks = {
        "create": "[green]+ create[/green]",
        "update": "[yellow]~ update[/yellow]",
        "restore": "[cyan]↺ restore[/cyan]",
        "unchanged": "[dim]= unchanged[/dim]",
    }
    for item in plan.items:
        where = (
            f"v{item.current} → v{item.version}"
            if item.current and item.current != item.version
            else f"v{item.version}"
        )
        aliases = f"  (+ alias {', '.join(item.new_aliases)})" if item.new_aliases else ""
        console.print(f"{marks[item.action]:<28} {item.kind:<8} [bold]{item.name}[/bold]  {where}{aliases}")
        if item.diff and item.action != "create":
            console.print(
                Syntax(item.diff.rstrip("\n"), "diff", theme="ansi_dark", background_color="default")
            )
    for section in plan.ignored:
        console.print(f"[dim]note: `{section}:` is read by `shipyard up`, not stored in the registry[/dim]")
    verb = "would apply" if dry_run and plan.changes else ("applied" if plan.applied else "")
    console.print(
        f"\n{plan.summary()}"
        + (f" — {verb}" if verb else "")
        + (" (dry run: nothing written)" if dry_run else "")
    )


def model_prices(home: str = HomeOpt, json_out: bool = JsonOpt) -> None:
    """What each model in the registry will be charged per million tokens, and where that price
    comes from: the model's own `pricing:` (config), the genai-prices catalogue (for providers it
    knows by their API URL), local (nothing per token), or unpriced (cost 0: set `pricing:`)."""
    from shipyard.prices import resolve
    from shipyard.registry.apply import runtime_config

    registry, _ = _registry(home)
    with exit_on_error():
        loaded = runtime_config(registry.snapshot())
    types = {p.name: p.type for p in loaded.config.providers}
    rows: list[dict[str, Any]] = []
    for m in loaded.config.models:
        base_url = getattr(loaded.provider_options.get(m.provider), "base_url", None)
        price = resolve(m, types.get(m.provider, ""), base_url)
        rows.append(
            {
                "model": m.name,
                "provider": m.provider,
                "provider_model": m.provider_model,
                "input_per_mtok": price.input_per_mtok,
                "output_per_mtok": price.output_per_mtok,
                "source": price.source,
                "detail": price.detail,
            }
        )
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print("no models yet: `shipyard apply shipyard.yaml` or `shipyard up`")
        return
    table = CliTable(
        Col("model"),
        Col("provider", drop=2),
        Col("input $/Mtok", justify="right"),
        Col("output $/Mtok", justify="right"),
        Col("source"),
        Col("from", wrap=True, drop=1),
        title=f"prices of {len(rows)} model(s)",
    )
    for r in rows:
        table.add_row(
            escape(r["model"]),
            escape(r["provider"]),
            f"{r['input_per_mtok']:g}",
            f"{r['output_per_mtok']:g}",
            r["source"],
            escape(r["detail"]),
        )
    console.print(table)


def make_group(kind: str) -> typer.Typer:
    plural = SECTIONS[kind]
    app = typer.Typer(help=HELP[kind], no_args_is_help=True)
    if kind == "model":
        app.command("prices")(model_prices)
    alias_app = typer.Typer(
        help=f"Named pointers to {kind} versions (`production`, `staging`, …).", no_args_is_help=True
    )
    app.add_typer(alias_app, name="alias")

    @app.command("list")
    def list_(home: str = HomeOpt, json_out: bool = JsonOpt) -> None:
        registry, _ = _registry(home)
        rows = registry.entities(kind)
        if json_out:
            print_json(rows)
            return
        if not rows:
            console.print(f"no {plural} yet: `shipyard apply shipyard.yaml` or `shipyard {plural} create`")
            return
        table = CliTable(
            Col("name"),
            Col("current"),
            Col("versions", justify="right", drop=2),
            Col("aliases", wrap=True, whole_words=True),
            Col("updated", drop=1),
            title=f"{len(rows)} {plural}",
        )
        for r in rows:
            aliases = ", ".join(f"{a}→v{v}" for a, v in sorted(r["aliases"].items()) if a != CURRENT)
            table.add_row(
                escape(r["name"]),
                f"v{r['current']}",
                str(r["versions"]),
                escape(aliases or "-"),
                _when(r["updated_at"]),
            )
        console.print(table)

    @app.command("show")
    def show(
        ref: str = typer.Argument(
            ..., help=f"{kind.capitalize()} as NAME, NAME@alias, NAME@v3 or NAME@<hash prefix>."
        ),
        home: str = HomeOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """Print one version: number, hash, aliases, and its spec as YAML."""
        registry, _ = _registry(home)
        with exit_on_error():
            v = registry.get_ref(kind, ref)
        data = v.to_dict()
        if kind == "prompt":
            from shipyard.registry.prompts import variables_of

            data["variables"] = variables_of(v.spec.get("messages", []))
        if json_out:
            print_json(data)
            return
        console.print(
            f"[bold]{kind} {v.name}[/bold] v{v.version}  sha256 {v.hash[:12]}  "
            f"aliases: {', '.join(v.aliases) or '-'}"
        )
        console.print(
            f"created {_when(v.created_at)} by {v.created_by or '?'}"
            + (f": {v.message}" if v.message else "")
        )
        if kind == "prompt":
            console.print(f"variables: {', '.join(data['variables']) or '(none)'}")
        console.print(
            Syntax(
                yaml.safe_dump(v.spec, sort_keys=False, allow_unicode=True),
                "yaml",
                theme="ansi_dark",
                background_color="default",
            )
        )

    @app.command("versions")
    def versions(
        name: str = typer.Argument(..., help=f"{kind.capitalize()} name."),
        home: str = HomeOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """Every version with its number, hash, aliases and author."""
        registry, _ = _registry(home)
        with exit_on_error():
            rows = registry.versions(kind, name)
        if json_out:
            print_json([v.to_dict() for v in rows])
            return
        table = CliTable(
            Col("version"),
            Col("hash"),
            Col("aliases", wrap=True, whole_words=True),
            Col("created", drop=1),
            Col("by", drop=2),
            Col("message", wrap=True, drop=3),
            title=f"{kind} {escape(name)}: {len(rows)} version(s)",
        )
        for v in rows:
            table.add_row(
                f"v{v.version}",
                v.hash[:12],
                escape(", ".join(v.aliases) or "-"),
                _when(v.created_at),
                escape(v.created_by or "-"),
                escape(v.message or ""),
            )
        console.print(table)

    @app.command("diff")
    def diff(
        name: str = typer.Argument(..., help=f"{kind.capitalize()} name."),
        a: str = typer.Argument(..., help="From: a version (v3), alias or hash prefix."),
        b: str = typer.Argument(CURRENT, help="To: a version, alias or hash prefix. Default: current."),
        home: str = HomeOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """A unified diff of two versions (messages, params, targets…)."""
        registry, _ = _registry(home)
        with exit_on_error():
            text = registry.diff(kind, name, a, b)
            va, vb = registry.get(kind, name, a), registry.get(kind, name, b)
        if json_out:
            print_json(
                {
                    "kind": kind,
                    "name": name,
                    "from": {"ref": a, "version": va.version, "hash": va.hash},
                    "to": {"ref": b, "version": vb.version, "hash": vb.hash},
                    "identical": not text,
                    "diff": text,
                }
            )
            return
        if not text:
            console.print("no differences")
            return
        console.print(Syntax(text.rstrip("\n"), "diff", theme="ansi_dark", background_color="default"))

    file_help = (
        f"YAML or JSON file holding the spec (the keys of an entry under `{plural}:` in "
        "shipyard.yaml, without `name`)."
    )
    if kind == "prompt":

        @app.command("create")
        def create_prompt(
            name: str = typer.Argument(..., help="Prompt name."),
            file: Path = typer.Option(None, "--file", "-f", help=file_help, show_default=False),
            system: str = typer.Option(
                None, "--system", help="The system message template.", show_default=False
            ),
            user: str = typer.Option(None, "--user", help="The user message template.", show_default=False),
            param: list[str] = typer.Option([], "--param", help="A default param, KEY=VALUE (YAML value)."),
            message: str = typer.Option(None, "--message", "-m", help="Why this version exists."),
            home: str = HomeOpt,
            json_out: bool = JsonOpt,
        ) -> None:
            """Record a prompt version (content-addressed: the same content gives back the existing
            version). Templates are Jinja2: `Hello {{ customer_name }}`."""
            spec = _read_spec(file)
            messages = list(spec.get("messages") or [])
            if system:
                messages.insert(0, {"role": "system", "content": system})
            if user:
                messages.append({"role": "user", "content": user})
            if messages:
                spec["messages"] = messages
            for item in param:
                key, sep, value = item.partition("=")
                if not sep:
                    raise _fail(InvalidRequest(f"--param `{item}` must be KEY=VALUE"))
                spec.setdefault("params", {})[key] = yaml.safe_load(value)
            _create(kind, name, spec, message, home, json_out)

    else:

        @app.command("create")
        def create(
            name: str = typer.Argument(..., help=f"{kind.capitalize()} name."),
            file: Path = typer.Option(..., "--file", "-f", help=file_help),
            message: str = typer.Option(None, "--message", "-m", help="Why this version exists."),
            home: str = HomeOpt,
            json_out: bool = JsonOpt,
        ) -> None:
            """Record a new version (content-addressed: the same content gives back the existing version)."""
            _create(kind, name, _read_spec(file), message, home, json_out)

    @alias_app.command("set")
    def alias_set(
        name: str = typer.Argument(..., help=f"{kind.capitalize()} name."),
        alias: str = typer.Argument(..., help="Alias to move (created if new), e.g. production."),
        version: str = typer.Argument(..., help="Version (v3), another alias, or a hash prefix."),
        reason: str = typer.Option(None, "--reason", "-r", help="Why: recorded in the alias history."),
        home: str = HomeOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """Point ALIAS at VERSION. A running gateway serves the change within a few seconds."""
        registry, actor = _registry(home)
        with exit_on_error():
            event = registry.set_alias(kind, name, alias, version, actor=actor, reason=reason)
        if json_out:
            print_json(event.to_dict())
            return
        before = f"v{event.from_version}" if event.from_version else "(new)"
        console.print(f"{kind} {name}: {alias} {before} → v{event.to_version}")

    @alias_app.command("history")
    def alias_history(
        name: str = typer.Argument(..., help=f"{kind.capitalize()} name."),
        alias: str = typer.Argument(None, help="Only this alias.", show_default=False),
        home: str = HomeOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """Every move of the aliases: when, who, from → to, why."""
        registry, _ = _registry(home)
        with exit_on_error():
            events = registry.history(kind, name, alias)
        if json_out:
            print_json([e.to_dict() for e in events])
            return
        table = CliTable(
            Col("when"),
            Col("alias"),
            Col("from"),
            Col("to"),
            Col("by", drop=2),
            Col("reason", wrap=True, drop=3),
            Col("eval run", drop=1),
            title=f"{kind} {escape(name)}: alias history",
        )
        for e in events:
            evidence = e.evidence.get("eval_run", "") if isinstance(e.evidence, dict) else ""
            table.add_row(
                _when(e.at),
                escape(e.alias),
                f"v{e.from_version}" if e.from_version else "-",
                f"v{e.to_version}",
                escape(e.actor or "-"),
                escape(e.reason or ""),
                evidence[:12],
            )
        console.print(table)

    @app.command("rollback")
    def rollback(
        name: str = typer.Argument(..., help=f"{kind.capitalize()} name."),
        alias: str = typer.Argument(CURRENT, help="Alias to move back to its previous version."),
        reason: str = typer.Option(None, "--reason", "-r", help="Why: recorded in the alias history."),
        home: str = HomeOpt,
        json_out: bool = JsonOpt,
    ) -> None:
        """Move ALIAS back to where it pointed before its latest move."""
        registry, actor = _registry(home)
        with exit_on_error():
            event = registry.rollback(kind, name, alias, actor=actor, reason=reason)
        if json_out:
            print_json(event.to_dict())
            return
        console.print(f"{kind} {name}: {alias} v{event.from_version} → v{event.to_version} (rolled back)")

    if kind == "prompt":

        @app.command("render")
        def render(
            ref: str = typer.Argument(..., help="Prompt as NAME, NAME@alias or NAME@v3."),
            var: list[str] = typer.Option([], "--var", "-v", help="A variable, NAME=VALUE."),
            home: str = HomeOpt,
            json_out: bool = JsonOpt,
        ) -> None:
            """Render a prompt version with variables: exactly the messages the gateway would send."""
            from shipyard.registry.prompts import Prompt

            registry, _ = _registry(home)
            variables = {}
            for item in var:
                key, sep, value = item.partition("=")
                if not sep:
                    raise _fail(InvalidRequest(f"--var `{item}` must be NAME=VALUE"))
                variables[key] = value
            with exit_on_error():
                v = registry.get_ref("prompt", ref)
                messages = Prompt.from_spec(v.name, v.version, v.hash, v.spec).render(variables)
            if json_out:
                print_json(messages)
                return
            for m in messages:
                console.print(f"[bold]{m['role']}[/bold]: ", end="")
                console.print(m["content"], markup=False, highlight=False)

    return app


def _read_spec(file: Path | None) -> dict[str, Any]:
    if file is None:
        return {}
    try:
        loaded = yaml.safe_load(file.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise _fail(InvalidRequest(f"cannot read {file}: {exc}")) from None
    if not isinstance(loaded, dict):
        raise _fail(InvalidRequest(f"{file} must hold a mapping (the spec)"))
    loaded.pop("name", None)
    return loaded


def _create(
    kind: str, name: str, spec: dict[str, Any], message: str | None, home: str | None, json_out: bool
) -> None:
    """Record one entity through `apply`, so it gets exactly the checks a config file gets."""
    if not spec:
        raise _fail(
            InvalidRequest(
                "nothing to record: give --file" + (" or --system/--user" if kind == "prompt" else "")
            )
        )
    doc_text = yaml.safe_dump({SECTIONS[kind]: [{"name": name, **spec}]}, sort_keys=False, allow_unicode=True)
    registry, actor = _registry(home, create=True)
    with exit_on_error():
        plan = apply(registry, read_document(doc_text, f"{kind} `{name}`"), actor=actor, message=message)
        item = plan.items[0]
        v = registry.get(kind, name, f"v{item.version}")
    if json_out:
        print_json({**v.to_dict(), "status": item.action})
        return
    said = {
        "create": "created",
        "update": "created",
        "restore": "identical to an older version: `current` moved back to it",
        "unchanged": "unchanged: identical to the current version",
    }[item.action]
    console.print(f"{kind} [bold]{name}[/bold] v{v.version} (sha256 {v.hash[:12]}) — {said}")


def apply_command(
    file: Path = typer.Argument(..., help="The shipyard.yaml to apply.", exists=False),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show the plan; change nothing."),
    message: str = typer.Option(None, "--message", "-m", help="Recorded on every version this creates."),
    home: str = HomeOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Apply a config file to the registry: show what is new, changed or unchanged (with diffs),
    then record the changes as new versions in one transaction. Re-applying an unchanged file
    changes nothing. A running gateway serves the result within a few seconds."""
    if not file.is_file():
        raise _fail(InvalidRequest(f"config file `{file}` does not exist"))
    settings = settings_only(home)
    missing = store_file(settings)
    if dry_run and missing is not None and not missing.exists():
        # A dry run writes nothing, a new store included: plan against an empty registry.
        store = Store("sqlite:///:memory:")
        store.migrate()
    else:
        store = open_store(settings, create=True)
    registry, actor = Registry(store), cli_actor(settings)
    try:
        doc = read_document(file.read_text("utf-8"), str(file))
        plan = apply(registry, doc, actor=actor, dry_run=dry_run, message=message)
    except ShipyardError as exc:
        if json_out:
            print_json({"error": exc.message, "problems": getattr(exc, "problems", [])})
            raise typer.Exit(1) from None
        raise _fail(exc) from None
    if json_out:
        print_json(plan.to_dict())
        return
    print_plan(plan, dry_run)


def export_command(
    output: Path = typer.Option(
        None, "--output", "-o", help="Write to this file instead of standard output.", show_default=False
    ),
    home: str = HomeOpt,
) -> None:
    """Write the registry's current providers, models, prompts and routes as a shipyard.yaml that
    `shipyard apply` accepts with no changes (secrets stay ${ENV} references)."""
    registry, _ = _registry(home)
    text = export(registry)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, "utf-8")
        err_console.print(f"wrote {output}")
