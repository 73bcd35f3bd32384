"""Prompt and registry pages: prompts (``/prompts``: versions, aliases and their history, diffs
between versions, the template with its variables and a rendered preview) and the other versioned
entities, models, routes and providers (``/registry``).

Handlers parse the query string (bad values are a 400 page naming the parameter), load in the
thread pool, and render a template under ``templates/registry/``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import markupsafe
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shipyard.errors import InvalidRequest
from shipyard.registry.prompts import Prompt, variables_of
from shipyard.registry.versions import CURRENT, Registry, Version, check_kind, spec_yaml, split_ref
from shipyard.store.db import Store
from shipyard.web.common import blocking, render
from shipyard.web.diff import diff_texts
from shipyard.web.params import choice_param
from shipyard.web.registry_common import KIND_PLURAL, item, pretty, runs_using, services, short_id

# -- showing a spec ---------------------------------------------------------------------------------
# Keys whose values are credentials when written literally (a `${ENV}` reference is shown as is).
_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|authorization)", re.I)
_ENV_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
_TEMPLATE_TAG = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\})", re.S)


def highlight_template(text: str) -> markupsafe.Markup:
    """A Jinja2 template with its ``{{ variables }}`` and ``{% tags %}`` marked up (escaped)."""
    out = []
    for i, part in enumerate(_TEMPLATE_TAG.split(text)):
        if i % 2:
            out.append(markupsafe.Markup('<span class="tpl-var">{}</span>').format(part))
        else:
            out.append(markupsafe.escape(part))
    return markupsafe.Markup("").join(out)


def mask_secrets(value: Any, key: str = "") -> Any:
    """Literal credentials in a spec become ``••••``; ``${ENV}`` references stay readable."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if isinstance(value, str) and _SECRET_KEY.search(key) and not _ENV_REF.match(value):
        return "••••"
    return value


# -- lists ------------------------------------------------------------------------------------------
def prompt_usage(registry: Registry) -> dict[str, list[dict[str, str]]]:
    """Which routes render which prompt: prompt name → [{route, ref, where}], from current specs."""
    out: dict[str, list[dict[str, str]]] = {}
    for route, _version, _hash, spec in registry.snapshot().of_kind("route"):
        refs: list[tuple[str, str]] = []
        if spec.get("prompt"):
            refs.append((str(spec["prompt"]), "route"))
        for group in ("targets", "fallbacks"):
            for t in spec.get(group) or []:
                if isinstance(t, dict) and t.get("prompt"):
                    refs.append((str(t["prompt"]), f"{group[:-1]} {t.get('name') or t.get('model')}"))
        for ref, where in refs:
            name, _ = split_ref(ref)
            out.setdefault(name, []).append({"route": route, "ref": ref, "where": where})
    return out


def load_prompts(registry: Registry) -> dict[str, Any]:
    rows = registry.entities("prompt")
    usage = prompt_usage(registry)
    for r in rows:
        r["aliases_sorted"] = sorted(
            ((a, v) for a, v in r["aliases"].items() if a != CURRENT), key=lambda av: av[0]
        )
        r["used_by"] = usage.get(r["name"], [])
    return {"rows": rows}


def route_summary(spec: dict[str, Any]) -> str:
    def target(t: dict[str, Any]) -> str:
        label = str(t.get("name") or t.get("model"))
        weight = t.get("weight")
        return label + (f" ×{weight:g}" if isinstance(weight, int | float) and weight != 1 else "")

    parts = [", ".join(target(t) for t in spec.get("targets") or [] if isinstance(t, dict))]
    if spec.get("fallbacks"):
        parts.append("fallbacks: " + ", ".join(target(t) for t in spec["fallbacks"] if isinstance(t, dict)))
    if spec.get("prompt"):
        parts.append(f"prompt {spec['prompt']}")
    return " · ".join(p for p in parts if p)


def model_summary(spec: dict[str, Any]) -> str:
    parts = [f"{spec.get('provider')}/{spec.get('model') or '(same name)'}"]
    if spec.get("kind") == "embedding":
        parts.append("embedding")
    pricing = spec.get("pricing") or {}
    if pricing:
        parts.append(
            f"${pricing.get('input_per_mtok', 0):g} in / ${pricing.get('output_per_mtok', 0):g} out per Mtok"
        )
    return " · ".join(parts)


def load_registry_overview(registry: Registry) -> dict[str, Any]:
    snap = registry.snapshot()
    sections = []
    for kind, title in (("route", "Routes"), ("model", "Models"), ("provider", "Providers")):
        rows = registry.entities(kind)
        for r in rows:
            current = snap.current.get((kind, r["name"]))
            spec = current[2] if current else {}
            r["summary"] = (
                route_summary(spec)
                if kind == "route"
                else model_summary(spec)
                if kind == "model"
                else str(spec.get("type", ""))
            )
            r["aliases_sorted"] = sorted((a, v) for a, v in r["aliases"].items() if a != CURRENT)
        sections.append({"kind": kind, "plural": KIND_PLURAL[kind], "title": title, "rows": rows})
    return {"sections": sections}


# -- one entity: its versions, aliases, history and diffs -------------------------------------------
def _evidence(evidence: Any) -> list[dict[str, Any]]:
    """An alias move's evidence as display items: links for the eval runs that gated it."""
    if evidence is None:
        return []
    if not isinstance(evidence, dict):
        return [item("evidence", pretty(evidence))]
    items = []
    for key, value in evidence.items():
        if value is None:
            continue
        if key in ("eval_run", "baseline_run") and isinstance(value, str):
            label = "eval run" if key == "eval_run" else "baseline run"
            items.append(item(label, short_id(value), href=f"/evals/{value}"))
        else:
            items.append(item(key.replace("_", " "), pretty(value)))
    return items


def load_entity(
    store: Store, registry: Registry, kind: str, name: str, params: Mapping[str, str]
) -> dict[str, Any]:
    versions = registry.versions(kind, name)  # NotFound names the known ones
    by_number = {v.version: v for v in versions}
    selected = registry.get(kind, name, (params.get("v") or CURRENT).strip())
    history = registry.history(kind, name)
    aliases: dict[str, int] = {}
    for v in versions:
        for a in v.aliases:
            aliases[a] = v.version
    alias_rows = []
    for alias, number in sorted(aliases.items(), key=lambda av: (av[0] != CURRENT, av[0])):
        moves = [e for e in history if e.alias == alias]
        alias_rows.append(
            {"alias": alias, "version": number, "moves": len(moves), "last": moves[-1] if moves else None}
        )
    events = [
        {"event": e, "evidence": _evidence(e.evidence)}
        for e in sorted(history, key=lambda e: e.at, reverse=True)
    ]

    diff = None
    diff_note = None
    b_ref = (params.get("b") or "").strip()
    a_ref = (params.get("a") or "").strip()
    vb = registry.get(kind, name, b_ref) if b_ref else selected
    va: Version | None
    if a_ref:
        va = registry.get(kind, name, a_ref)
    else:
        older = [n for n in by_number if n < vb.version]
        va = by_number[max(older)] if older else None
    if va is None:
        diff_note = f"v{vb.version} is the first version: there is nothing before it to compare with."
    elif va.version == vb.version:
        diff_note = f"Both sides are v{va.version}; pick two different versions."
    else:
        diff = diff_texts(spec_yaml(mask_secrets(va.spec)), spec_yaml(mask_secrets(vb.spec)), va.ref, vb.ref)
    view = choice_param(params, "view", ("split", "unified"), "split")

    out: dict[str, Any] = {
        "kind": kind,
        "plural": KIND_PLURAL[kind],
        "name": name,
        "base": f"/prompts/{name}" if kind == "prompt" else f"/registry/{KIND_PLURAL[kind]}/{name}",
        "versions": list(reversed(versions)),
        "selected": selected,
        "spec_text": spec_yaml(mask_secrets(selected.spec)),
        "aliases": alias_rows,
        "events": events,
        "diff": diff,
        "diff_note": diff_note,
        "diff_a": va.version if va else None,
        "diff_b": vb.version,
        "view": view,
        "runs": runs_using(store, kind, name, selected.version),
        "current": aliases.get(CURRENT),
    }
    if kind == "prompt":
        out.update(_prompt_detail(registry, selected, params))
    elif kind == "route":
        out["route_prompts"] = _route_prompts(selected.spec)
    return out


def _route_prompts(spec: dict[str, Any]) -> list[dict[str, str]]:
    refs = [spec.get("prompt")] + [t.get("prompt") for t in spec.get("targets") or [] if isinstance(t, dict)]
    out = []
    for ref in refs:
        if ref:
            name, version = split_ref(str(ref))
            out.append({"ref": str(ref), "name": name, "version": version})
    return out


def _prompt_detail(registry: Registry, v: Version, params: Mapping[str, str]) -> dict[str, Any]:
    messages = [dict(m) for m in v.spec.get("messages") or []]
    variables = variables_of(messages)
    given = {k[4:]: val for k, val in params.items() if k.startswith("var.")}
    preview: list[dict[str, Any]] | None = None
    preview_error = None
    if given or params.get("preview"):
        try:
            preview = Prompt.from_spec(v.name, v.version, v.hash, v.spec).render(given)
        except InvalidRequest as exc:
            preview_error = exc.message
    return {
        "messages": [
            {"role": str(m.get("role", "?")), "html": highlight_template(str(m.get("content", "")))}
            for m in messages
        ],
        "variables": variables,
        "given": given,
        "preview": preview,
        "preview_error": preview_error,
        "params_text": spec_yaml(v.spec["params"]) if v.spec.get("params") else None,
        "schema_text": pretty(v.spec["response_schema"]) if v.spec.get("response_schema") else None,
        "used_by": prompt_usage(registry).get(v.name, []),
    }


# -- handlers ---------------------------------------------------------------------------------------
async def prompts_page(request: Request) -> Response:
    _, registry, _ = services(request)
    return render(request, "registry/prompts.html", await blocking(load_prompts, registry))


async def prompt_page(request: Request) -> Response:
    return await _entity(request, "prompt", request.path_params["name"])


async def registry_page(request: Request) -> Response:
    _, registry, _ = services(request)
    context = await blocking(load_registry_overview, registry)
    return render(request, "registry/registry.html", context, active="/prompts")


async def entity_page(request: Request) -> Response:
    kind = check_kind(request.path_params["kind"])
    if kind == "prompt":
        from starlette.responses import RedirectResponse

        target = f"/prompts/{request.path_params['name']}"
        query = request.url.query
        return RedirectResponse(target + (f"?{query}" if query else ""), status_code=308)
    return await _entity(request, kind, request.path_params["name"])


async def _entity(request: Request, kind: str, name: str) -> Response:
    store, registry, _ = services(request)
    context = await blocking(load_entity, store, registry, kind, name, request.query_params)
    return render(request, "registry/entity.html", context, active="/prompts")


routes = [
    Route("/prompts", prompts_page, methods=["GET", "HEAD"]),
    Route("/prompts/{name}", prompt_page, methods=["GET", "HEAD"]),
    Route("/registry", registry_page, methods=["GET", "HEAD"]),
    Route("/registry/{kind}/{name}", entity_page, methods=["GET", "HEAD"]),
]
