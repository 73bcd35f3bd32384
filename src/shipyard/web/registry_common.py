"""What the registry page families (``prompt_pages``, ``dataset_pages``, ``run_pages``,
``eval_pages``) share: the services they read through, how they show a value, and the lineage
links between versions and runs.

Pages read through the same services the CLI and ``/api`` use (``Registry``,
``registry.datasets``, ``RunService``), so a page shows exactly what ``shipyard … show`` prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import sqlalchemy as sa
from starlette.requests import Request

from shipyard.registry.runs import RunService
from shipyard.registry.versions import PLURALS, Registry
from shipyard.store.db import Store
from shipyard.store.runs import MetricSummary
from shipyard.store.tables import run_links, runs
from shipyard.web.common import platform_of, store_of

KIND_PLURAL = {single: plural for plural, single in PLURALS.items()}


def services(request: Request) -> tuple[Store, Registry, RunService]:
    platform = platform_of(request)
    store = store_of(request)
    registry = getattr(platform, "registry", None) or Registry(store)
    return store, registry, RunService(store, platform.settings.artifacts_path)


def pretty(value: Any) -> str:
    """Strings as they are, everything else as indented JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode()


def short_id(run_id: str) -> str:
    return run_id[:12]


def item(key: str, text: str, href: str | None = None, mono: bool = False) -> dict[str, Any]:
    """A display item for ``rx.items_dl``: every key present (templates use StrictUndefined)."""
    return {"key": key, "text": text, "href": href, "mono": mono}


def run_duration(run: Mapping[str, Any]) -> float | None:
    end = run.get("end_time")
    return None if end is None else max(0.0, float(end) - float(run["start_time"]))


def last_value(summary: MetricSummary | None) -> float | None:
    return None if summary is None else summary["last"]


def link_href(link: Mapping[str, Any]) -> str:
    """The page of what a run's lineage link names, at the version the run used."""
    kind, name, version = link["kind"], link["name"], link["version"]
    if kind == "run":
        return f"/runs/{name}"
    if kind == "dataset":
        return f"/datasets/{name}?v={version}"
    if kind == "prompt":
        return f"/prompts/{name}?v={version}"
    return f"/registry/{KIND_PLURAL.get(kind, kind + 's')}/{name}?v={version}"


def runs_using(
    store: Store, kind: str, name: str, version: int | None, limit: int = 20
) -> list[dict[str, Any]]:
    """Runs whose lineage names this registry/dataset version (or any version when None)."""
    cond = [run_links.c.kind == kind, run_links.c.name == name]
    if version is not None:
        cond.append(run_links.c.version == version)
    q = (
        sa.select(
            runs.c.run_id,
            runs.c.name,
            runs.c.experiment,
            runs.c.status,
            runs.c.start_time,
            runs.c.tags,
            run_links.c.version,
        )
        .join(run_links, run_links.c.run_id == runs.c.run_id)
        .where(*cond)
        .order_by(runs.c.start_time.desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(q)]
