"""Registry pages: prompts (versions, aliases and their history, diffs, rendered templates), models,
routes and providers (``/registry``), datasets, experiment runs and their comparison, and eval runs
with their reports.

Everything is read through the same services the CLI and ``/api`` use (``Registry``,
``registry.datasets``, ``RunService``), so a page shows exactly what ``shipyard … show`` prints.
Handlers parse the query string (bad values are a 400 page naming the parameter), load in the
thread pool, and render a template under ``templates/registry/``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import markupsafe
import orjson
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shipyard.errors import InvalidRequest, NotFound
from shipyard.gateway.http_headers import REPORT_HEADERS
from shipyard.registry import datasets as ds
from shipyard.registry.prompts import Prompt, variables_of
from shipyard.registry.runs import STATUSES, RunService
from shipyard.registry.versions import CURRENT, PLURALS, Registry, Version, check_kind, spec_yaml, split_ref
from shipyard.store.db import Store
from shipyard.store.runs import MetricSummary
from shipyard.store.tables import run_links, runs
from shipyard.web.common import blocking, platform_of, render, store_of

KIND_PLURAL = {single: plural for plural, single in PLURALS.items()}
PAGE_SIZES = (20, 50, 100)
EXAMPLES_PAGE = 20
MAX_EXAMPLES_PAGE = 200
MAX_SERIES_CHARTS = 12
MAX_COMPARE = 8
MAX_FAILURES = 50
DIFF_CONTEXT = 3
# Keys whose values are credentials when written literally (a `${ENV}` reference is shown as is).
_SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|authorization)", re.I)
_ENV_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
_TEMPLATE_TAG = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\})", re.S)
# Served inside a sandboxed iframe: the eval report is self-contained (inline styles and SVG only).
REPORTS = {"report.html": "text/html; charset=utf-8", "compare.html": "text/html; charset=utf-8"}


# -- query parameters -------------------------------------------------------------------------------
def int_param(params: Mapping[str, str], name: str, default: int, lo: int, hi: int | None = None) -> int:
    raw = (params.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"`{name}` must be a whole number; got `{raw}`", param=name) from None
    if value < lo or (hi is not None and value > hi):
        bound = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
        raise InvalidRequest(f"`{name}` must be {bound}; got {value}", param=name)
    return value


def _choice(params: Mapping[str, str], name: str, choices: Sequence[str], default: str) -> str:
    value = (params.get(name) or "").strip() or default
    if value not in choices:
        raise InvalidRequest(f"`{name}` must be one of {', '.join(choices)}; got `{value}`", param=name)
    return value


def _services(request: Request) -> tuple[Store, Registry, RunService]:
    platform = platform_of(request)
    store = store_of(request)
    registry = getattr(platform, "registry", None) or Registry(store)
    return store, registry, RunService(store, platform.settings.artifacts_path)


# -- formatting helpers -----------------------------------------------------------------------------
def pretty(value: Any) -> str:
    """Strings as they are, everything else as indented JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode()


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


def short_id(run_id: str) -> str:
    return run_id[:12]


# -- diffs ------------------------------------------------------------------------------------------
@dataclass
class DiffRow:
    """One row of a side-by-side diff (``left``/``right`` are escaped HTML), or a collapsed run of
    unchanged lines (kind ``skip``, ``skipped`` lines)."""

    kind: str  # equal | replace | delete | insert | skip
    left_no: int | None = None
    left: markupsafe.Markup = field(default_factory=markupsafe.Markup)
    right_no: int | None = None
    right: markupsafe.Markup = field(default_factory=markupsafe.Markup)
    skipped: int = 0


@dataclass
class UnifiedRow:
    kind: str  # context | del | ins | skip
    old_no: int | None
    new_no: int | None
    text: markupsafe.Markup
    skipped: int = 0


@dataclass
class Diff:
    left_label: str
    right_label: str
    rows: list[DiffRow]
    unified: list[UnifiedRow]
    added: int
    removed: int

    @property
    def identical(self) -> bool:
        return not self.added and not self.removed


def _intraline(old: str, new: str) -> tuple[markupsafe.Markup, markupsafe.Markup]:
    """Both lines escaped, with the characters that changed wrapped in <del> / <ins>. Lines that
    share little are marked whole: character soup helps nobody read them."""
    sm = difflib.SequenceMatcher(None, old, new, autojunk=False)
    if sm.ratio() < 0.35:
        return (
            markupsafe.Markup("<del>{}</del>").format(old) if old else markupsafe.Markup(""),
            markupsafe.Markup("<ins>{}</ins>").format(new) if new else markupsafe.Markup(""),
        )
    left: list[markupsafe.Markup] = []
    right: list[markupsafe.Markup] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        a, b = old[i1:i2], new[j1:j2]
        if tag == "equal":
            left.append(markupsafe.escape(a))
            right.append(markupsafe.escape(b))
            continue
        if a:
            left.append(markupsafe.Markup("<del>{}</del>").format(a))
        if b:
            right.append(markupsafe.Markup("<ins>{}</ins>").format(b))
    return markupsafe.Markup("").join(left), markupsafe.Markup("").join(right)


def diff_texts(left: str, right: str, left_label: str, right_label: str, context: int = DIFF_CONTEXT) -> Diff:
    """Side-by-side and unified views of a line diff, unchanged runs longer than ``2 * context``
    collapsed, changed lines highlighted down to the characters."""
    a, b = left.splitlines(), right.splitlines()
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    rows: list[DiffRow] = []
    unified: list[UnifiedRow] = []
    added = removed = 0
    esc = markupsafe.escape

    def equal(i: int, j: int) -> None:
        rows.append(DiffRow("equal", i + 1, esc(a[i]), j + 1, esc(b[j])))
        unified.append(UnifiedRow("context", i + 1, j + 1, esc(a[i])))

    for n, (tag, i1, i2, j1, j2) in enumerate(ops):
        if tag == "equal":
            head = 0 if n == 0 else context
            tail = 0 if n == len(ops) - 1 else context
            length = i2 - i1
            if length > head + tail + 1:
                for k in range(head):
                    equal(i1 + k, j1 + k)
                hidden = length - head - tail
                rows.append(DiffRow("skip", skipped=hidden))
                unified.append(UnifiedRow("skip", None, None, markupsafe.Markup(""), hidden))
                for k in range(length - tail, length):
                    equal(i1 + k, j1 + k)
            else:
                for k in range(length):
                    equal(i1 + k, j1 + k)
            continue
        old, new = a[i1:i2], b[j1:j2]
        removed += len(old)
        added += len(new)
        pairs = max(len(old), len(new))
        dels: list[UnifiedRow] = []
        inss: list[UnifiedRow] = []
        for k in range(pairs):
            lo = old[k] if k < len(old) else None
            ro = new[k] if k < len(new) else None
            if lo is not None and ro is not None:
                lh, rh = _intraline(lo, ro)
                rows.append(DiffRow("replace", i1 + k + 1, lh, j1 + k + 1, rh))
                dels.append(UnifiedRow("del", i1 + k + 1, None, lh))
                inss.append(UnifiedRow("ins", None, j1 + k + 1, rh))
            elif lo is not None:
                rows.append(DiffRow("delete", i1 + k + 1, esc(lo)))
                dels.append(UnifiedRow("del", i1 + k + 1, None, esc(lo)))
            elif ro is not None:
                rows.append(DiffRow("insert", right_no=j1 + k + 1, right=esc(ro)))
                inss.append(UnifiedRow("ins", None, j1 + k + 1, esc(ro)))
        unified.extend(dels)
        unified.extend(inss)
    return Diff(left_label, right_label, rows, unified, added, removed)


# -- prompts, models, routes, providers -------------------------------------------------------------
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


def _runs_using(
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


def item(key: str, text: str, href: str | None = None, mono: bool = False) -> dict[str, Any]:
    """A display item for ``rx.items_dl``: every key present (templates use StrictUndefined)."""
    return {"key": key, "text": text, "href": href, "mono": mono}


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
    view = _choice(params, "view", ("split", "unified"), "split")

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
        "runs": _runs_using(store, kind, name, selected.version),
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


# -- datasets ---------------------------------------------------------------------------------------
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
        runs=_runs_using(store, "dataset", name, v),
    )
    return out


# -- runs -------------------------------------------------------------------------------------------
def _experiments(store: Store) -> list[tuple[str, int]]:
    q = sa.select(runs.c.experiment, sa.func.count()).group_by(runs.c.experiment).order_by(runs.c.experiment)
    with store.engine.connect() as conn:
        return [(str(e), int(n)) for e, n in conn.execute(q)]


def _duration(run: Mapping[str, Any]) -> float | None:
    end = run.get("end_time")
    return None if end is None else max(0.0, float(end) - float(run["start_time"]))


def load_runs(store: Store, svc: RunService, params: Mapping[str, str]) -> dict[str, Any]:
    experiment = (params.get("experiment") or "").strip() or None
    status = (params.get("status") or "").strip() or None
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"`status` must be one of {', '.join(STATUSES)}; got `{status}`", param="status")
    search = (params.get("q") or "").strip() or None
    limit = int_param(params, "limit", 50, 1, 500)
    offset = int_param(params, "offset", 0, 0)
    rows = svc.list_runs(
        experiment=experiment, status=status, name_contains=search, limit=limit, offset=offset
    )
    total = svc.count_runs(experiment=experiment, status=status, name_contains=search)
    from shipyard.store import runs as rq

    with store.engine.connect() as conn:
        metrics = rq.metric_summaries(conn, [r["run_id"] for r in rows])
    items: list[dict[str, Any]] = []
    for r in rows:
        m = metrics.get(r["run_id"], {})
        items.append(
            {
                **r,
                "duration": _duration(r),
                "metrics": [(k, s["last"]) for k, s in sorted(m.items())][:4],
                "n_metrics": len(m),
                "is_eval": (r.get("tags") or {}).get("kind") == "eval",
            }
        )
    experiments = _experiments(store)
    return {
        "rows": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "experiments": experiments,
        "statuses": STATUSES,
        "filters": {"experiment": experiment, "status": status, "q": search},
        "any_runs": total > 0 or any(n for _, n in experiments),
    }


def link_href(link: Mapping[str, Any]) -> str:
    kind, name, version = link["kind"], link["name"], link["version"]
    if kind == "run":
        return f"/runs/{name}"
    if kind == "dataset":
        return f"/datasets/{name}?v={version}"
    if kind == "prompt":
        return f"/prompts/{name}?v={version}"
    return f"/registry/{KIND_PLURAL.get(kind, kind + 's')}/{name}?v={version}"


def _series_chart(key: str, points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "kind": "plotly",
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers" if len(points) < 60 else "lines",
                "name": key,
                "x": [p["step"] for p in points],
                "y": [p["value"] for p in points],
                "line": {"width": 2},
                "marker": {"size": 5},
                "hovertemplate": "step %{x}: %{y:.6~g}<extra></extra>",
            }
        ],
        "layout": {
            "showlegend": False,
            "xaxis": {"title": {"text": "step", "font": {"size": 11}}},
            "yaxis": {"rangemode": "normal"},
        },
    }


def load_run(svc: RunService, ref: str) -> dict[str, Any]:
    detail = svc.get(ref)
    run_id = detail["run_id"]
    series = [k for k, s in sorted(detail["metrics"].items()) if s["count"] > 1]
    charts = {}
    for i, key in enumerate(series[:MAX_SERIES_CHARTS]):
        charts[key] = {"id": f"metric-{i}", "spec": _series_chart(key, svc.metric_history(run_id, key))}
    children = svc.list_runs(parent_run_id=run_id, limit=50)
    tags = detail.get("tags") or {}
    return {
        "run": detail,
        "duration": _duration(detail),
        "run_params": sorted(detail["params"].items()),
        "params_text": {k: pretty(v) for k, v in detail["params"].items()},
        "metrics": sorted(detail["metrics"].items()),
        "charts": charts,
        "more_series": max(0, len(series) - MAX_SERIES_CHARTS),
        "links": [{**lk, "href": link_href(lk)} for lk in detail["links"]],
        "children": children,
        "is_eval": tags.get("kind") == "eval",
        "tags": sorted(tags.items()),
    }


def _last(summary: MetricSummary | None) -> float | None:
    return None if summary is None else summary["last"]


def _total(metrics: Mapping[str, MetricSummary], name: str) -> float | None:
    """A count over every target of an eval run: `name` itself, or the sum of `<target>/name`
    (the runner prefixes per-target metrics with the target's label when there are several)."""
    if name in metrics:
        return metrics[name]["last"]
    parts = [s["last"] for k, s in metrics.items() if k.endswith("/" + name)]
    return sum(parts) if parts else None


def parse_ids(request: Request) -> list[str]:
    """``?ids=a,b,c`` or ``?ids=a&ids=b`` (what a form of checkboxes sends)."""
    ids: list[str] = []
    for raw in request.query_params.getlist("ids"):
        ids.extend(p.strip() for p in raw.split(",") if p.strip())
    if len(ids) < 2:
        raise InvalidRequest(
            "compare needs at least two runs: /runs/compare?ids=RUN1,RUN2 (ids or unique prefixes); "
            "tick them on the runs page and press Compare",
            param="ids",
        )
    if len(ids) > MAX_COMPARE:
        raise InvalidRequest(f"compare at most {MAX_COMPARE} runs at a time; got {len(ids)}", param="ids")
    return ids


def load_compare(svc: RunService, ids: Sequence[str], show_all: bool) -> dict[str, Any]:
    cmp = svc.compare(list(ids))
    run_rows = cmp["runs"]
    labels = [r["name"] or short_id(r["run_id"]) for r in run_rows]
    # Two runs can share a name: the id tells them apart in legends.
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({short_id(r['run_id'])[:6]})" for lab, r in zip(labels, run_rows, strict=True)]
    params = [p for p in cmp["params"] if show_all or p["differs"]]
    scalar_keys = [m["key"] for m in cmp["metrics"]]
    charts: list[dict[str, Any]] = []
    if scalar_keys:
        charts.append(
            {
                "id": "compare-latest",
                "title": "Latest value of each metric",
                "spec": {
                    "kind": "bar",
                    "categories": scalar_keys[:30],
                    "series": [
                        {
                            "name": labels[i],
                            "y": [_last(m["values"][i]) for m in cmp["metrics"][:30]],
                        }
                        for i in range(len(run_rows))
                    ],
                    "y": {"format": ".4~g"},
                },
            }
        )
    # Metrics logged as series by at least two of the runs: their curves side by side.
    series_keys = [
        m["key"]
        for m in cmp["metrics"]
        if sum(1 for v in m["values"] if v is not None and v["count"] > 1) >= 2
    ]
    for n, key in enumerate(series_keys[:4]):
        data = []
        for i, r in enumerate(run_rows):
            try:
                points = svc.metric_history(r["run_id"], key)
            except NotFound:
                continue
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers" if len(points) < 60 else "lines",
                    "name": labels[i],
                    "x": [p["step"] for p in points],
                    "y": [p["value"] for p in points],
                    "hovertemplate": "%{fullData.name}, step %{x}: %{y:.6~g}<extra></extra>",
                }
            )
        charts.append(
            {
                "id": f"compare-series-{n}",
                "title": key,
                "spec": {
                    "kind": "plotly",
                    "data": data,
                    "layout": {
                        "xaxis": {"title": {"text": "step", "font": {"size": 11}}},
                        "yaxis": {"rangemode": "normal"},
                    },
                },
            }
        )
    return {
        "cmp": cmp,
        "labels": labels,
        "param_rows": params,
        "hidden_params": len(cmp["params"]) - len(params),
        "show_all": show_all,
        "charts": charts,
        "pretty": pretty,
        "ids": [r["run_id"] for r in run_rows],
    }


# -- evals ------------------------------------------------------------------------------------------
def load_evals(store: Store, svc: RunService, params: Mapping[str, str]) -> dict[str, Any]:
    suite = (params.get("suite") or "").strip() or None
    limit = int_param(params, "limit", 50, 1, 500)
    offset = int_param(params, "offset", 0, 0)
    tags = {"kind": "eval", **({"suite": suite} if suite else {})}
    rows = svc.list_runs(tags=tags, limit=limit, offset=offset)
    total = svc.count_runs(tags=tags)
    from shipyard.store import runs as rq

    with store.engine.connect() as conn:
        metrics = rq.metric_summaries(conn, [r["run_id"] for r in rows])
        suites = sorted(
            {
                str(s)
                for s in conn.execute(
                    sa.select(runs.c.tags["suite"].as_string())
                    .where(runs.c.tags["kind"].as_string() == "eval")
                    .distinct()
                ).scalars()
                if s
            }
        )
    items: list[dict[str, Any]] = []
    for r in rows:
        m = metrics.get(r["run_id"], {})
        t = r.get("tags") or {}
        items.append(
            {
                **r,
                "suite": t.get("suite", ""),
                "gate": t.get("gate"),
                "gate_reason": t.get("gate_reason"),
                "baseline": t.get("baseline_run"),
                "promotion": t.get("promotion"),
                "promotion_result": t.get("promotion_result"),
                "pass_rate": _last(m.get("pass_rate")),
                "flaky": _total(m, "flaky_cases"),
                "errors": _total(m, "errors"),
                "duration": _duration(r),
            }
        )
    # Pass rate of each suite's runs over time, oldest first: the trend the table can't show.
    trend: dict[str, tuple[list[float], list[float]]] = {}
    for it in reversed(items):
        if it["pass_rate"] is not None and it["status"] == "finished":
            xs, ys = trend.setdefault(it["suite"], ([], []))
            xs.append(it["start_time"])
            ys.append(it["pass_rate"])
    chart = None
    if any(len(xs) >= 1 for xs, _ in trend.values()):
        chart = {
            "kind": "timeseries",
            "series": [
                {"name": s, "x": xs, "y": ys, "type": "line", "format": ".1%"}
                for s, (xs, ys) in sorted(trend.items())
            ],
            "y": {"title": "pass rate", "format": ".0%", "range": [0, 1.05]},
            "legend": True,
        }
    return {
        "rows": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "suites": suites,
        "suite": suite,
        "chart": chart,
    }


def _artifact_json(svc: RunService, run_id: str, path: str) -> Any:
    try:
        return orjson.loads(svc.read_artifact(run_id, path))
    except NotFound:
        return None


def load_eval(svc: RunService, ref: str) -> dict[str, Any]:
    from shipyard.evals.stats import Comparison, Summary

    detail = svc.get(ref)
    run_id = detail["run_id"]
    tags = detail.get("tags") or {}
    if tags.get("kind") != "eval":
        raise NotFound(
            f"run `{run_id}` is not an eval run (it has no `kind: eval` tag); see it at /runs/{run_id}",
            param="run_id",
        )
    paths = {a["path"] for a in detail["artifacts"]}
    raw_summary = _artifact_json(svc, run_id, "summary.json") if "summary.json" in paths else None
    summary = Summary.from_dict(raw_summary) if raw_summary else None
    raw_cmp = _artifact_json(svc, run_id, "comparison.json") if "comparison.json" in paths else None
    comparisons = {label: Comparison.from_dict(c) for label, c in (raw_cmp or {}).items()}
    targets = list(summary.targets.values()) if summary else []
    scorer_names = sorted({n for t in targets for n in t.scorers})
    charts: dict[str, Any] = {}
    if targets:
        charts["pass_rate"] = {
            "kind": "plotly",
            "data": [
                {
                    "type": "bar",
                    "x": [t.target for t in targets],
                    "y": [t.pass_rate for t in targets],
                    "error_y": {
                        "type": "data",
                        "symmetric": False,
                        "array": [max(0.0, t.ci_high - t.pass_rate) for t in targets],
                        "arrayminus": [max(0.0, t.pass_rate - t.ci_low) for t in targets],
                        "color": "#5f6b7a",
                    },
                    "marker": {"color": "#1f4fd1"},
                    "hovertemplate": "%{x}: %{y:.1%}<extra>95% Wilson interval shown</extra>",
                    "name": "pass rate",
                }
            ],
            "layout": {
                "showlegend": False,
                "yaxis": {"tickformat": ".0%", "range": [0, 1.05]},
                "xaxis": {"type": "category"},
            },
        }
        if scorer_names:
            charts["scorers"] = {
                "kind": "bar",
                "categories": scorer_names,
                "series": [
                    {
                        "name": t.target,
                        "y": [t.scorers[n].pass_rate if n in t.scorers else None for n in scorer_names],
                    }
                    for t in targets
                ],
                "y": {"format": ".0%", "range": [0, 1.05]},
            }
    return {
        "run": detail,
        "tags": tags,
        "summary": summary,
        "targets": targets,
        "failures": [(t.target, f) for t in targets for f in t.failures][:MAX_FAILURES],
        "n_failures": sum(len(t.failures) for t in targets),
        "scorer_names": scorer_names,
        "comparisons": comparisons,
        "gate": {"passed": tags.get("gate") == "passed", "reason": tags.get("gate_reason")}
        if "gate" in tags
        else None,
        "has_report": "report.html" in paths,
        "reports": [
            p
            for p in ("report.html", "report.md", "junit.xml", "results.jsonl", "summary.json")
            if p in paths
        ],
        "links": [{**lk, "href": link_href(lk)} for lk in detail["links"]],
        "charts": charts,
        "duration": _duration(detail),
    }


# -- handlers ---------------------------------------------------------------------------------------
async def prompts_page(request: Request) -> Response:
    _, registry, _ = _services(request)
    return render(request, "registry/prompts.html", await blocking(load_prompts, registry))


async def prompt_page(request: Request) -> Response:
    return await _entity(request, "prompt", request.path_params["name"])


async def registry_page(request: Request) -> Response:
    _, registry, _ = _services(request)
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
    store, registry, _ = _services(request)
    context = await blocking(load_entity, store, registry, kind, name, request.query_params)
    return render(request, "registry/entity.html", context, active="/prompts")


async def datasets_page(request: Request) -> Response:
    rows = await blocking(ds.list_datasets, store_of(request))
    return render(request, "registry/datasets.html", {"rows": rows, "source_items": source_items})


async def dataset_page(request: Request) -> Response:
    context = await blocking(
        load_dataset, store_of(request), request.path_params["name"], request.query_params
    )
    return render(request, "registry/dataset.html", context)


async def runs_page(request: Request) -> Response:
    store, _, svc = _services(request)
    context = await blocking(load_runs, store, svc, request.query_params)
    context["page_sizes"] = PAGE_SIZES
    return render(request, "registry/runs.html", context)


async def run_page(request: Request) -> Response:
    _, _, svc = _services(request)
    context = await blocking(load_run, svc, request.path_params["run_id"])
    return render(request, "registry/run.html", context)


async def compare_page(request: Request) -> Response:
    _, _, svc = _services(request)
    ids = parse_ids(request)
    show_all = request.query_params.get("all") in ("1", "true", "yes")
    context = await blocking(load_compare, svc, ids, show_all)
    return render(request, "registry/compare.html", context, active="/runs")


async def evals_page(request: Request) -> Response:
    store, _, svc = _services(request)
    context = await blocking(load_evals, store, svc, request.query_params)
    return render(request, "registry/evals.html", context)


async def eval_page(request: Request) -> Response:
    _, _, svc = _services(request)
    context = await blocking(load_eval, svc, request.path_params["run_id"])
    return render(request, "registry/eval.html", context)


async def eval_report(request: Request) -> Response:
    """The HTML report the eval runner wrote, as it is, locked down to styles and inline SVG."""
    _, _, svc = _services(request)
    name = request.path_params["report"]
    if name not in REPORTS:
        raise NotFound(f"no report `{name}`; one of {', '.join(REPORTS)}", param="report")
    body = await blocking(svc.read_artifact, request.path_params["run_id"], name)
    return Response(body, media_type=REPORTS[name], headers={**REPORT_HEADERS, "cache-control": "no-cache"})


routes = [
    Route("/prompts", prompts_page, methods=["GET", "HEAD"]),
    Route("/prompts/{name}", prompt_page, methods=["GET", "HEAD"]),
    Route("/registry", registry_page, methods=["GET", "HEAD"]),
    Route("/registry/{kind}/{name}", entity_page, methods=["GET", "HEAD"]),
    Route("/datasets", datasets_page, methods=["GET", "HEAD"]),
    Route("/datasets/{name}", dataset_page, methods=["GET", "HEAD"]),
    Route("/runs", runs_page, methods=["GET", "HEAD"]),
    Route("/runs/compare", compare_page, methods=["GET", "HEAD"]),
    Route("/runs/{run_id}", run_page, methods=["GET", "HEAD"]),
    Route("/evals", evals_page, methods=["GET", "HEAD"]),
    Route("/evals/{run_id}", eval_page, methods=["GET", "HEAD"]),
    Route("/evals/{run_id}/{report}", eval_report, methods=["GET", "HEAD"]),
]
