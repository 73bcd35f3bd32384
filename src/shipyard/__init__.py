"""Shipyard: an open-source LLMOps platform (gateway, versioning, evals, tracing, monitoring)."""

from __future__ import annotations

__version__ = "0.1.0"

# The tracking API (`shipyard.start_run`, …) is imported on first use, so `import shipyard` stays
# cheap for the CLI and the gateway, which never need it. (`TYPE_CHECKING = False` rather than the
# one from `typing`, which type checkers treat the same way, so not even `typing` is imported here.)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from shipyard.tracking import Run as Run
    from shipyard.tracking import active_run as active_run
    from shipyard.tracking import start_run as start_run

_LAZY = {"start_run": "shipyard.tracking", "active_run": "shipyard.tracking", "Run": "shipyard.tracking"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shipyard' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
