"""Checking a whole ``shipyard.yaml`` against everything it names: the schema, each provider type's
options (the plugins'), references between providers, models, routes and prompts, prompt templates
and guard configurations. ``config/`` holds the schema and the YAML reading; this needs the domains
above it (providers, prompts, guards), so it lives here, beside ``apply``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from shipyard import redact
from shipyard.config.loader import (
    External,
    LoadedConfig,
    Path_,
    default_config_text,
    fmt_path,
    read_document,
    substitute_env,
    validation_problems,
)
from shipyard.config.schema import ShipyardConfig
from shipyard.errors import ConfigError


def parse_config(
    text: str, source: str = "shipyard.yaml", environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Parse and fully check a config; raise ConfigError listing every problem found."""
    doc = read_document(text, source)
    return validate(doc.raw, source, doc.where, environ, check_rendering=True)


def validate(
    raw: dict[str, Any],
    source: str,
    where: Callable[[Path_], str] | None = None,
    environ: Mapping[str, str] | None = None,
    external: External | None = None,
    *,
    check_rendering: bool = False,
) -> LoadedConfig:
    """Resolve ``${ENV}`` references in ``raw`` and check everything: schema, provider options,
    references between providers, models, routes and prompts, prompt templates.
    ``check_rendering``: also render each prompt with placeholder variables and refuse templates
    that go over the render limits even so (for files being applied; a registry that is already
    stored is served as it is, and bounded at render time)."""
    from shipyard.plugins import config_sections, provider_types
    from shipyard.registry.prompts import check_render_limits, check_templates

    env = os.environ if environ is None else environ
    where = where or (lambda path: source)
    ext = external or External()
    problems: list[str] = []
    data = substitute_env(raw, env, where, problems)
    try:
        cfg = ShipyardConfig.model_validate(data)
    except ValidationError as exc:
        problems += validation_problems(exc, where, ShipyardConfig)
        raise ConfigError(f"{source} has {len(problems)} problem(s):", problems) from None

    types = provider_types()
    options: dict[str, BaseModel] = {}
    seen: dict[str, int] = {}
    for i, p in enumerate(cfg.providers):
        path: Path_ = ("providers", i)
        if p.name in seen:
            problems.append(
                f"{where((*path, 'name'))}: providers[{i}].name: `{p.name}` is already "
                f"used by providers[{seen[p.name]}]; names must be unique"
            )
        seen[p.name] = i
        ptype = types.get(p.type)
        if ptype is None:
            problems.append(
                f"{where((*path, 'type'))}: providers[{i}].type: unknown provider type "
                f"`{p.type}`; known types: {', '.join(sorted(types))}"
            )
            continue
        try:
            options[p.name] = ptype.options.model_validate(p.options)
            redact.register_options(options[p.name])
            # Keep the typed options (secrets stay SecretStr, masked in any repr or dump) instead
            # of the raw values, so a printed config never shows a resolved API key.
            p.__pydantic_extra__ = options[p.name].model_dump(exclude_unset=True)
        except ValidationError as exc:
            problems += validation_problems(exc, where, ptype.options, path)

    def check_unique(section: str, i: int, name: str, seen: dict[str, int]) -> None:
        """A problem when an earlier entry of ``section`` has this name; ``seen`` maps names to entries."""
        if name in seen:
            problems.append(
                f"{where((section, i, 'name'))}: {section}[{i}].name: `{name}` is already "
                f"defined at {section}[{seen[name]}]"
            )
        seen[name] = i

    providers = [*cfg.provider_by_name(), *sorted(ext.providers - set(cfg.provider_by_name()))]
    model_kinds = {
        **{m.name: m.kind for m in cfg.models},
        **{n: k for n, k in ext.models.items() if n not in {m.name for m in cfg.models}},
    }
    seen = {}
    for i, m in enumerate(cfg.models):
        check_unique("models", i, m.name, seen)
        if m.provider not in providers:
            problems.append(
                f"{where(('models', i, 'provider'))}: models[{i}].provider: no provider "
                f"named `{m.provider}`; defined providers: {', '.join(providers) or '(none)'}"
            )

    prompts: dict[str, tuple[set[str], int]] = dict(ext.prompts)
    seen = {}
    for i, pr in enumerate(cfg.prompts):
        check_unique("prompts", i, pr.name, seen)
        messages = [m.model_dump() for m in pr.messages]
        found = check_templates(messages)
        if check_rendering and not found:
            found = check_render_limits(messages)
        for problem in found:
            index = int(problem.split("]", 1)[0].split("[", 1)[1])
            problems.append(f"{where(('prompts', i, 'messages', index, 'content'))}: prompts[{i}].{problem}")
        known_aliases, newest = prompts.get(pr.name, (set(), 0))
        prompts[pr.name] = (known_aliases | set(pr.aliases) | {"current"}, max(newest, 1))

    def check_prompt_ref(ref: str | None, path: Path_, label: str) -> None:
        if ref is None:
            return
        name, _, version = ref.partition("@")
        if name not in prompts:
            problems.append(
                f"{where(path)}: {label}: no prompt named `{name}`; defined prompts: "
                f"{', '.join(sorted(prompts)) or '(none)'}"
            )
            return
        aliases, newest = prompts[name]
        if not version or version in aliases:
            return
        number = version[1:] if version.startswith("v") else version
        if number.isdigit():
            if not 1 <= int(number) <= newest:
                problems.append(
                    f"{where(path)}: {label}: prompt `{name}` has no version {number} (newest: v{newest})"
                )
            return
        problems.append(
            f"{where(path)}: {label}: prompt `{name}` has no alias `{version}`; aliases: "
            f"{', '.join(sorted(aliases))} (create it with `shipyard prompts alias set {name} {version} vN`, "
            "or list it under the prompt's `aliases:`)"
        )

    seen = {}
    for i, r in enumerate(cfg.routes):
        check_unique("routes", i, r.name, seen)
        check_prompt_ref(r.prompt, ("routes", i, "prompt"), f"routes[{i}].prompt")
        kinds = set()
        for group in ("targets", "fallbacks"):
            for j, t in enumerate(getattr(r, group)):
                kind = model_kinds.get(t.model)
                check_prompt_ref(
                    t.prompt, ("routes", i, group, j, "prompt"), f"routes[{i}].{group}[{j}].prompt"
                )
                if kind is None:
                    problems.append(
                        f"{where(('routes', i, group, j, 'model'))}: routes[{i}].{group}[{j}].model: "
                        f"route `{r.name}` refers to model `{t.model}`, which is not defined; "
                        f"defined models: {', '.join(model_kinds) or '(none)'}"
                    )
                else:
                    kinds.add(kind)
        labels = [t.label for t in r.targets]
        for label in {x for x in labels if labels.count(x) > 1}:
            problems.append(
                f"{where(('routes', i, 'targets'))}: routes[{i}].targets: two targets are "
                f"labelled `{label}`; give each a distinct `name:` so traces and splits can tell "
                "them apart"
            )
        if len(kinds) > 1:
            problems.append(
                f"{where(('routes', i))}: routes[{i}]: route `{r.name}` mixes chat and "
                "embedding models; a route serves one kind"
            )
        if r.guards is not None:
            from shipyard.guard.pipeline import check_guards

            if "embedding" in kinds:
                problems.append(
                    f"{where(('routes', i, 'guards'))}: routes[{i}].guards: route `{r.name}` serves "
                    "embeddings; guards apply to chat and completion routes only"
                )
            for loc, msg in check_guards(r.guards):
                gpath: Path_ = ("routes", i, "guards", *loc)
                problems.append(f"{where(gpath)}: routes[{i}].{fmt_path(('guards', *loc))}: {msg}")
        if "embedding" in kinds and (r.prompt or any(t.prompt for t in r.targets)):
            problems.append(
                f"{where(('routes', i))}: routes[{i}]: route `{r.name}` serves embeddings; "
                "prompt templates apply to chat routes only"
            )
    # Sections whose schema lives above this layer (`monitoring:`) check themselves, with lines.
    for key, section in config_sections().items():
        try:
            parsed = section.check(data.get(key), source, where)
        except ConfigError as exc:
            problems += exc.problems or [exc.message]
        else:
            setattr(cfg, key, parsed)
    if problems:
        raise ConfigError(f"{source} has {len(problems)} problem(s):", problems)
    return LoadedConfig(config=cfg, source=source, provider_options=options)


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Load ``path``; with None, ``./shipyard.yaml`` when present, else the built-in default."""
    if path is None:
        local = Path("shipyard.yaml")
        if local.is_file():
            path = local
        else:
            return parse_config(default_config_text(), "built-in default config", environ)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"config file `{p}` does not exist; check the path given to --config / SHIPYARD_CONFIG"
        )
    return parse_config(p.read_text("utf-8"), str(p), environ)
