"""Plugin hooks (pluggy). Built-in providers register through the same hooks as third-party ones.

A third-party package adds a provider type by exposing an entry point in the ``shipyard`` group
whose module has a ``@hookimpl``-decorated ``register_providers`` returning ``ProviderType``s.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy
from pydantic import BaseModel

if TYPE_CHECKING:
    from shipyard.evals.core import ScorerType
    from shipyard.guard.base import ScannerType
    from shipyard.providers.base import ProviderType

hookspec = pluggy.HookspecMarker("shipyard")
hookimpl = pluggy.HookimplMarker("shipyard")

BUILTIN_PLUGINS = (
    "shipyard.providers.mock",
    "shipyard.providers.openai_compat",
    "shipyard.providers.anthropic",
    "shipyard.providers.local",
    "shipyard.providers.wordllama",
    "shipyard.evals.scorers",
    "shipyard.guard.scanners",
    "shipyard.guard.injection",
    "shipyard.monitoring.config",
)


@dataclass(frozen=True)
class ConfigSection:
    """A top-level section of ``shipyard.yaml`` whose schema belongs to a package above the config
    layer (``monitoring:``): ``check(raw, source, where)`` returns the parsed section or raises
    ConfigError with every problem and its line. The config checker calls it without importing it."""

    key: str
    check: Callable[[Any, str, Any], Any]


class Specs:
    @hookspec
    def register_providers(self) -> list[ProviderType]:  # type: ignore[empty-body]
        """Return the provider types this plugin contributes."""

    @hookspec
    def register_scorers(self) -> list[ScorerType]:  # type: ignore[empty-body]
        """Return the eval scorer types this plugin contributes."""

    @hookspec
    def register_scanners(self) -> list[ScannerType]:  # type: ignore[empty-body]
        """Return the guard scanner types this plugin contributes."""

    @hookspec
    def register_config_sections(self) -> list[ConfigSection]:  # type: ignore[empty-body]
        """Return the ``shipyard.yaml`` sections this plugin checks."""


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    import importlib

    pm = pluggy.PluginManager("shipyard")
    pm.add_hookspecs(Specs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    pm.load_setuptools_entrypoints("shipyard")
    return pm


def _registered(hook: str, key: str = "name") -> dict[str, Any]:
    """What every plugin returns from ``hook``, by each entry's ``key`` attribute; where two
    plugins register the same name, the one called later wins."""
    found: dict[str, Any] = {}
    for group in getattr(plugin_manager().hook, hook)():
        for entry in group:
            found[getattr(entry, key)] = entry
    return found


def provider_types() -> dict[str, ProviderType]:
    return _registered("register_providers")


def scorer_types() -> dict[str, ScorerType]:
    return _registered("register_scorers")


def scanner_types() -> dict[str, ScannerType]:
    return _registered("register_scanners")


def _options_rows(options: type[BaseModel]) -> list[str]:
    """The Markdown table of an options model: option, default, description."""
    rows = ["| option | default | description |", "|---|---|---|"]
    for field, info in options.model_fields.items():
        if info.is_required():
            default = "(required)"
        else:
            value = info.get_default(call_default_factory=True)
            default = "(unset)" if value is None else f"`{value}`"
        description = " ".join((info.description or "").split())
        rows.append(f"| `{info.alias or field}` | {default} | {description} |")
    return rows


def _reference(intro: list[str], sections: list[tuple[str, str, list[str], type[BaseModel]]]) -> str:
    """A generated reference page: ``intro``, then per type its description, notes and options."""
    lines = [*intro, ""]
    for name, description, notes, options in sorted(sections, key=lambda s: s[0]):
        lines += [f"## `{name}`", "", " ".join(description.split()), ""]
        for note in notes:
            lines += [note, ""]
        lines += [*_options_rows(options), ""]
    return "\n".join(lines)


def render_provider_reference() -> str:
    """docs/reference/providers.md: every provider type's options, generated from their models."""
    intro = [
        "# Provider reference",
        "",
        "Generated from the provider option models by `python -m shipyard.plugins`; do not edit by hand.",
        "Each provider in `shipyard.yaml` has a `name`, a `type`, and the options of its type:",
    ]
    return _reference(intro, [(n, t.description, [], t.options) for n, t in provider_types().items()])


def render_scorer_reference() -> str:
    """docs/reference/scorers.md: every scorer type's options, generated from their models."""
    intro = [
        "# Scorer reference",
        "",
        "Generated from the scorer option models by `python -m shipyard.plugins scorers`; do not edit "
        "by hand.",
        "Each entry under `scorers:` in a suite has a `type` and the options of its type. Every score is in "
        "[0, 1]; a case passes a scorer when its score is at least `threshold`.",
    ]
    return _reference(intro, [(n, t.description, [], t.options) for n, t in scorer_types().items()])


def render_scanner_reference() -> str:
    """docs/reference/scanners.md: every guard scanner type's options, generated from their models."""
    intro = [
        "# Guard scanner reference",
        "",
        "Generated from the scanner option models by `python -m shipyard.plugins scanners`; do not edit "
        "by hand. Each entry under a route's `guards.input` / `guards.output` has a `type`, an optional "
        "`name`, and the options of its type (see docs/security.md).",
    ]
    return _reference(
        intro,
        [
            (n, t.description, [f"Stages: {', '.join(t.stages)}."], t.options)
            for n, t in scanner_types().items()
        ],
    )


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["scorers"]:
        print(render_scorer_reference(), end="")
    elif sys.argv[1:] == ["scanners"]:
        print(render_scanner_reference(), end="")
    else:
        print(render_provider_reference(), end="")


def config_sections() -> dict[str, ConfigSection]:
    return _registered("register_config_sections", key="key")
