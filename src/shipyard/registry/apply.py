"""Config as code: `shipyard apply` plans and applies a `shipyard.yaml` to the registry, and
`shipyard export` writes the registry back as a file that `apply` accepts unchanged.

An entity's versioned *spec* is its YAML mapping without `name` (and a prompt's `aliases:`),
normalised so that cosmetic differences (a default written out, key order) do not make new
versions, and with `${ENV}` references kept as written: secrets never enter the store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from shipyard.config.loader import Document, External, LoadedConfig
from shipyard.config.schema import ModelConfig, PromptConfig, RouteConfig
from shipyard.errors import ConfigError
from shipyard.registry.validation import validate
from shipyard.registry.versions import CURRENT, Registry, Snapshot, content_hash, spec_yaml
from shipyard.store.audit import Actor

ORDER = ("provider", "model", "prompt", "route")  # references point backwards in this order
SECTIONS = {"provider": "providers", "model": "models", "prompt": "prompts", "route": "routes"}
_SCHEMAS: dict[str, type[BaseModel]] = {"model": ModelConfig, "route": RouteConfig, "prompt": PromptConfig}


def normalize(kind: str, item: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    """(name, spec, aliases to ensure) for one entity as written in a file."""
    data = dict(item)
    name = str(data.pop("name"))
    aliases = list(data.pop("aliases", []) or []) if kind == "prompt" else []
    schema = _SCHEMAS.get(kind)
    if schema is None:  # providers: options as written (secrets stay `${REFERENCES}`)
        return name, {k: data[k] for k in sorted(data)}, aliases
    try:
        model = schema.model_validate({"name": name, **data})
    except ValidationError:
        # Only possible for `${ENV}` references in non-string fields: keep them as written.
        return name, data, aliases
    spec = model.model_dump(mode="json", exclude_defaults=True, exclude={"name", "aliases"})
    return name, spec, aliases


@dataclass
class PlanItem:
    kind: str
    name: str
    action: str  # create | update | restore | unchanged
    spec: dict[str, Any]
    current: int | None  # version `current` points at now
    version: int  # version `current` will point at
    diff: str = ""
    new_aliases: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        return self.action != "unchanged" or bool(self.new_aliases)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "from_version": self.current,
            "to_version": self.version,
            "new_aliases": self.new_aliases,
            "diff": self.diff,
        }


@dataclass
class Plan:
    source: str
    items: list[PlanItem]
    applied: bool = False
    ignored: list[str] = field(default_factory=list)

    @property
    def changes(self) -> list[PlanItem]:
        return [i for i in self.items if i.changes]

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "restore": 0, "unchanged": 0}
        for i in self.items:
            out[i.action] += 1
        return out

    def summary(self) -> str:
        if not self.changes:
            return f"no changes: {len(self.items)} entit{'y' if len(self.items) == 1 else 'ies'} unchanged"
        c = self.counts()
        parts = [f"{c[a]} to {a}" for a in ("create", "update", "restore") if c[a]]
        aliases = sum(len(i.new_aliases) for i in self.items)
        if aliases:
            parts.append(f"{aliases} alias(es) to add")
        parts.append(f"{c['unchanged']} unchanged")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "applied": self.applied,
            "summary": self.summary(),
            "counts": self.counts(),
            "ignored": self.ignored,
            "items": [i.to_dict() for i in self.items],
        }


def external_from(snapshot: Snapshot) -> External:
    ext = External()
    ext.providers = {name for name, *_ in snapshot.of_kind("provider")}
    ext.models = {name: str(spec.get("kind", "chat")) for name, _, _, spec in snapshot.of_kind("model")}
    for name, version, _, _ in snapshot.of_kind("prompt"):
        aliases = set(snapshot.aliases.get(("prompt", name), {}))
        ext.prompts[name] = (aliases | {CURRENT}, snapshot.newest.get(("prompt", name), version))
    return ext


def plan(registry: Registry, doc: Document, environ: Mapping[str, str] | None = None) -> Plan:
    """What applying `doc` would change. Raises ConfigError (with lines) when the file is invalid
    on its own or would leave the registry in a state the gateway cannot serve."""
    snapshot = registry.snapshot()
    validate(doc.raw, doc.source, doc.where, environ, external_from(snapshot), check_rendering=True)
    items = []
    seen: set[tuple[str, str]] = set()
    for kind in ORDER:
        for raw in doc.raw.get(SECTIONS[kind]) or []:
            name, spec, aliases = normalize(kind, raw)
            seen.add((kind, name))
            digest = content_hash(kind, spec)
            current = snapshot.current.get((kind, name))
            existing_aliases = snapshot.aliases.get((kind, name), {})
            new_aliases = [a for a in aliases if a not in existing_aliases]
            if current is None:
                items.append(
                    PlanItem(kind, name, "create", spec, None, 1, _diff(None, spec, name), new_aliases)
                )
                continue
            number, current_hash, current_spec = current
            if digest == current_hash:
                items.append(PlanItem(kind, name, "unchanged", spec, number, number, "", new_aliases))
                continue
            known = snapshot.hashes.get((kind, name), {})
            if digest in known:
                target, action = known[digest], "restore"
            else:
                target, action = snapshot.newest[(kind, name)] + 1, "update"
            items.append(
                PlanItem(
                    kind,
                    name,
                    action,
                    spec,
                    number,
                    target,
                    _diff(current_spec, spec, name, number, target),
                    new_aliases,
                )
            )
    ignored = [s for s in ("settings", "monitoring") if doc.raw.get(s)]
    result = Plan(doc.source, items, ignored=ignored)
    # The registry after the apply must still be servable (e.g. a route in the registry that uses
    # a model this file turns into an embedding model).
    merged = merged_config(snapshot, result)
    validate(
        merged, f"the registry after applying {doc.source}", None, environ, prompt_context(snapshot, result)
    )
    return result


def prompt_context(snapshot: Snapshot, result: Plan | None = None) -> External:
    """Aliases and newest version of every prompt (after ``result``, when given): what prompt
    references in routes are checked against."""
    ext = External()
    for (kind, name), existing in snapshot.aliases.items():
        if kind == "prompt":
            ext.prompts[name] = (set(existing) | {CURRENT}, snapshot.newest.get((kind, name), 1))
    for item in result.items if result else []:
        if item.kind == "prompt":
            known, newest = ext.prompts.get(item.name, ({CURRENT}, 0))
            ext.prompts[item.name] = (known | set(item.new_aliases), max(newest, item.version))
    return ext


def merged_config(snapshot: Snapshot, result: Plan | None = None) -> dict[str, Any]:
    """Current specs as one config document, with a plan's specs laid over them."""
    specs: dict[tuple[str, str], dict[str, Any]] = {
        key: spec for key, (_, _, spec) in snapshot.current.items()
    }
    for item in result.items if result else []:
        specs[(item.kind, item.name)] = item.spec
    out: dict[str, Any] = {}
    for kind in ORDER:
        section = [{"name": name, **spec} for (k, name), spec in specs.items() if k == kind]
        if section:
            out[SECTIONS[kind]] = section
    return out


def apply(
    registry: Registry,
    doc: Document,
    *,
    actor: str | Actor | None,
    dry_run: bool = False,
    message: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Plan:
    """Plan, then (unless `dry_run`) write every change in one transaction: all or nothing."""
    result = plan(registry, doc, environ)
    if dry_run or not result.changes:
        return result
    note = message or f"apply {os.path.basename(doc.source)}"
    with registry.store.write() as conn:
        for item in result.changes:
            registry.put(
                item.kind,
                item.name,
                item.spec,
                actor=actor,
                message=note,
                aliases=item.new_aliases,
                conn=conn,
            )
    result.applied = True
    return result


def export(registry: Registry) -> str:
    """The registry's current state as a `shipyard.yaml` that `apply` accepts with no changes."""
    snapshot = registry.snapshot()
    doc: dict[str, Any] = {"version": 1}
    for kind in ORDER:
        entries = []
        for name, _, _, spec in snapshot.of_kind(kind):
            entry: dict[str, Any] = {"name": name, **spec}
            if kind == "prompt":
                aliases = sorted(a for a in snapshot.aliases.get((kind, name), {}) if a != CURRENT)
                if aliases:
                    entry["aliases"] = aliases
            entries.append(entry)
        if entries:
            doc[SECTIONS[kind]] = entries
    header = (
        "# Exported from the Shipyard registry: the current version of every provider, model, prompt\n"
        "# and route. `shipyard apply` on this file changes nothing; edit it and apply to make changes.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def runtime_config(snapshot: Snapshot, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """The registry's current state, env references resolved and fully checked, for a runtime."""
    merged = merged_config(snapshot)
    if not merged.get("routes"):
        raise ConfigError("the registry has no routes: `shipyard apply shipyard.yaml` creates some")
    return validate(merged, "registry", None, environ, prompt_context(snapshot))


def _diff(
    old: dict[str, Any] | None, new: dict[str, Any], name: str, a: int | None = None, b: int = 1
) -> str:
    import difflib

    left = spec_yaml(old).splitlines(keepends=True) if old is not None else []
    right = spec_yaml(new).splitlines(keepends=True)
    return "".join(
        difflib.unified_diff(left, right, fromfile=f"{name}@v{a}" if a else "(new)", tofile=f"{name}@v{b}")
    )
