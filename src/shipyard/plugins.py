"""Plugin hooks (pluggy). Built-in providers register through the same hooks as third-party ones.

A third-party package adds a provider type by exposing an entry point in the ``shipyard`` group
whose module has a ``@hookimpl``-decorated ``register_providers`` returning ``ProviderType``s.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from shipyard.providers.base import ProviderType

hookspec = pluggy.HookspecMarker("shipyard")
hookimpl = pluggy.HookimplMarker("shipyard")

BUILTIN_PLUGINS = (
    "shipyard.providers.mock",
    "shipyard.providers.openai_compat",
    "shipyard.providers.local",
    "shipyard.providers.wordllama",
)


class Specs:
    @hookspec
    def register_providers(self) -> list[ProviderType]:  # type: ignore[empty-body]
        """Return the provider types this plugin contributes."""


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    import importlib

    pm = pluggy.PluginManager("shipyard")
    pm.add_hookspecs(Specs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    pm.load_setuptools_entrypoints("shipyard")
    return pm


def provider_types() -> dict[str, ProviderType]:
    found: dict[str, ProviderType] = {}
    for group in plugin_manager().hook.register_providers():
        for ptype in group:
            found[ptype.name] = ptype
    return found
