"""The plan as files: plan.json, plan.md and a self-contained plan.html with SVG plots (matplotlib,
no script: the dashboard serves reports under a CSP without scripts). Every value that comes from
input (a model name from a config.json, a file path) is escaped by Jinja2's autoescape."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import jinja2
import matplotlib
import orjson
from markupsafe import Markup
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from shipyard.capacity.formulas import RANGE
from shipyard.capacity.models import GIB
from shipyard.capacity.planner import Plan, assumptions

_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_NS = re.compile(r'\s+xmlns(?::xlink)?="[^"]*"')
_META = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def _svg(fig: Figure) -> Markup:
    FigureCanvasSVG(fig)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "shipyard-plan"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    svg = _NS.sub("", _META.sub("", _PROLOG.sub("", buf.getvalue(), count=1)))
    prefix = "p" + hashlib.sha1(svg.encode(), usedforsecurity=False).hexdigest()[:8] + "-"
    svg = svg.replace(' id="', f' id="{prefix}').replace("url(#", f"url(#{prefix}")
    svg = svg.replace('xlink:href="#', f'xlink:href="#{prefix}').replace(' href="#', f' href="#{prefix}')
    fig.clear()
    # Drawn here from numbers and catalogue names (labels pass through matplotlib's SVG writer,
    # which escapes text), never raw input: safe to inline.
    return Markup(svg.replace("<svg ", '<svg class="plot" role="img" ', 1).strip())


def _label(text: str) -> str:
    return text.replace("$", r"\$")[:40]


def memory_plot(plan: Plan) -> Markup:
    """Per device that fits: weights, reserve and KV pool per replica, against its memory."""
    fits = [p for p in plan.devices if p.fits]
    fig = Figure(figsize=(6.5, 0.5 + 0.45 * max(1, len(fits))))
    ax = fig.add_subplot()
    for i, p in enumerate(fits):
        weights = plan.model.weight_bytes / GIB
        reserve = p.reserve_bytes * p.tp / GIB
        pool = p.kv_pool_bytes / GIB
        left = 0.0
        for j, (value, name) in enumerate(((weights, "weights"), (reserve, "reserve"), (pool, "KV pool"))):
            ax.barh(i, value, left=left, color=_PALETTE[j], label=name if i == 0 else None)
            left += value
    ax.set_yticks(range(len(fits)), [_label(f"{p.device.name} ×{p.tp}") for p in fits])
    ax.invert_yaxis()
    ax.set_xlabel("GiB per replica")
    ax.set_title("Memory per replica")
    if fits:
        ax.legend(loc="lower right", fontsize=8)
    return _svg(fig)


def throughput_plot(plan: Plan) -> Markup:
    """Decode tokens/s against batch size (expected efficiencies), per device that fits."""
    fig = Figure(figsize=(6.5, 3.4))
    ax = fig.add_subplot()
    for i, p in enumerate(x for x in plan.devices if x.fits):
        if not p.curve:
            continue
        ax.plot([b for b, _ in p.curve], [t for _, t in p.curve], marker="o", ms=3, color=_PALETTE[i % 8],
                label=_label(f"{p.device.name} ×{p.tp}"))  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequences decoded together (batch)")
    ax.set_ylabel("decode tokens/s per replica")
    ax.set_title("Decode throughput bound")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    return _svg(fig)


TEMPLATES = Path(__file__).resolve().parent / "templates"


def _rng(d: dict[str, float], digits: int = 0) -> str:
    values = [float(v) for v in d.values()]
    return f"{min(values):,.{digits}f}–{max(values):,.{digits}f}"


def _env(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        num=lambda n: f"{n:,}",
        rng=_rng,
        money=lambda v: "—" if v is None else f"{v:,.0f}",
    )
    return env


def _md_cell(value: object) -> object:
    """Markdown table cells: a `|` in a name or path would split the cell."""
    return value.replace("|", "\\|").replace("\n", " ") if isinstance(value, str) else value


def _clean(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return _md_cell(obj)


def write_report(plan: Plan, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    data = plan.as_dict()
    ctx = {
        "plan": plan,
        "m": data["model"],
        "w": data["workload"],
        "devices": data["devices"],
        "rec": data["recommendation"],
        "assumptions": assumptions(),
        "gib": GIB,
        "range": RANGE,
    }
    md_ctx = {**ctx, **{k: _clean(ctx[k]) for k in ("m", "w", "devices", "assumptions")}}
    paths = [directory / "plan.json", directory / "plan.md", directory / "plan.html"]
    paths[0].write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    paths[1].write_text(_env(False).get_template("plan.md.j2").render(md_ctx))
    html = (
        _env(True)
        .get_template("plan.html.j2")
        .render({**ctx, "memory_svg": memory_plot(plan), "throughput_svg": throughput_plot(plan)})
    )
    paths[2].write_text(html)
    return paths
