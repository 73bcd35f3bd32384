"""Dataset pages: every dataset with its latest version (``/datasets``), and one dataset
(``/datasets/{name}``): its versions, where the selected one came from (with a link to the traces
it was built from), its examples a page at a time, and the runs that used it.

Read through ``shipyard.registry.datasets``, the service ``shipyard datasets`` and ``/api`` use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shipyard.registry import datasets as ds
from shipyard.store.db import Store
from shipyard.web.common import blocking, render, store_of
from shipyard.web.params import int_param
from shipyard.web.registry_common import item, pretty, runs_using

EXAMPLES_PAGE = 20
MAX_EXAMPLES_PAGE = 200


def source_items(source: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Where a dataset version came from, as display items (links to the traces it was built from)."""
    if not source:
        return [item("source", "unknown")]
    kind = str(source.get("type", "?"))
    names = {"traces": "traces", "file": "file", "upload": "uploaded file", "api": "API"}
    items = [item("source", names.get(kind, kind))]
    if kind == "file":
        items.append(item("path", str(source.get("path")), mono=True))
    if source.get("format"):
        items.append(item("format", str(source["format"])))
    if kind == "traces":
        filters = source.get("filters") or {}
        shown = {k: v for k, v in filters.items() if v not in (None, "")}
        items.append(item("filters", ", ".join(f"{k}={v}" for k, v in shown.items()) or "all traces"))
        query = {k: str(v) for k, v in shown.items() if k in ("route", "status", "tag", "since", "until")}
        if query:
            items.append(item("traces", "matching traces", href="/traces?" + urlencode(query)))
        if source.get("matched") is not None:
            items.append(item("matched", f"{source['matched']:,} traces"))
        flags = [f for f in ("scrub_pii", "dedupe", "expected_from_output") if source.get(f)]
        if flags:
            items.append(item("options", ", ".join(f.replace("_", " ") for f in flags)))
    elif source.get("dedupe"):
        items.append(item("options", "dedupe"))
    if source.get("append"):
        base = source.get("base_version")
        if base:
            items.append(item("appended to", f"v{base}", href=f"?v={base}"))
        else:
            items.append(item("appended to", "an empty dataset"))
    return items


def example_view(ex: ds.Example) -> dict[str, Any]:
    view: dict[str, Any] = {"idx": ex.idx, "trace_id": ex.trace_id, "tags": ex.tags}
    if isinstance(ex.input, list):
        view["messages"] = [
            {
                "role": str(m.get("role", "?")),
                "text": m.get("content") if isinstance(m.get("content"), str) else pretty(m.get("content")),
            }
            for m in ex.input
            if isinstance(m, dict)
        ]
    else:
        view["variables"] = [(k, pretty(v)) for k, v in (ex.input or {}).items()]
    view["expected"] = None if ex.expected is None else pretty(ex.expected)
    view["metadata"] = pretty(ex.metadata) if ex.metadata else None
    return view


def load_dataset(store: Store, name: str, params: Mapping[str, str]) -> dict[str, Any]:
    info = ds.get_dataset(store, name)
    versions = ds.list_versions(store, name)
    out: dict[str, Any] = {"info": info, "versions": list(reversed(versions)), "selected": None}
    if not versions:
        return out
    v = int_param(params, "v", versions[-1].version, 1)
    offset = int_param(params, "offset", 0, 0)
    limit = int_param(params, "limit", EXAMPLES_PAGE, 1, MAX_EXAMPLES_PAGE)
    page = ds.get_examples(store, f"{name}@{v}", offset, limit)
    out.update(
        selected=page.version,
        source=source_items(page.version.source),
        examples=[example_view(e) for e in page.examples],
        offset=offset,
        limit=limit,
        total=page.total,
        runs=runs_using(store, "dataset", name, v),
    )
    return out


async def datasets_page(request: Request) -> Response:
    rows = await blocking(ds.list_datasets, store_of(request))
    return render(request, "registry/datasets.html", {"rows": rows, "source_items": source_items})


async def dataset_page(request: Request) -> Response:
    context = await blocking(
        load_dataset, store_of(request), request.path_params["name"], request.query_params
    )
    return render(request, "registry/dataset.html", context)


routes = [
    Route("/datasets", datasets_page, methods=["GET", "HEAD"]),
    Route("/datasets/{name}", dataset_page, methods=["GET", "HEAD"]),
]
