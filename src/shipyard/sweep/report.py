"""The sweep report: ``sweep.json`` and ``report.html`` (the points table with the Pareto front and
the best point marked, and an SVG chart of quality against p95 latency, cost as the marker's size).
One self-contained page, no script; every value is escaped by the template's autoescape."""

from __future__ import annotations

import functools
import hashlib
import io
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
import orjson
from markupsafe import Markup
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

TEMPLATES = Path(__file__).resolve().parent / "templates"
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_NS = re.compile(r'\s+xmlns(?::xlink)?="[^"]*"')
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def _svg(fig: Figure) -> str:
    """Inline ``<svg>`` with no prolog, namespaces or metadata, ids prefixed by a hash of the plot."""
    FigureCanvasSVG(fig)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "shipyard-sweep"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    svg = _NS.sub("", _METADATA.sub("", _PROLOG.sub("", buf.getvalue(), count=1)))
    prefix = "w" + hashlib.sha1(svg.encode(), usedforsecurity=False).hexdigest()[:8] + "-"
    svg = svg.replace(' id="', f' id="{prefix}').replace("url(#", f"url(#{prefix}")
    svg = svg.replace('xlink:href="#', f'xlink:href="#{prefix}').replace(' href="#', f' href="#{prefix}')
    fig.clear()
    return svg.replace("<svg ", '<svg class="plot" role="img" ', 1).strip()


def tradeoff_plot(result: Mapping[str, Any]) -> str:
    """Quality against p95 latency; the front joined by a line; the best point ringed."""
    pts = [p for p in result["points"] if p["p95_ms"] is not None]
    if not pts:
        return ""
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.add_subplot()
    costs = [p["cost_per_request_usd"] or 0.0 for p in pts]
    top = max(costs) or 1.0
    sizes = [30 + 220 * c / top for c in costs]
    colors = ["#c62828" if p["pareto"] else "#4e79a7" for p in pts]
    ax.scatter([p["p95_ms"] for p in pts], [p["quality"] for p in pts], s=sizes, c=colors, alpha=0.75)
    for p in pts:
        label = p["label"].replace("$", r"\$")[:40]
        ax.annotate(label, (p["p95_ms"], p["quality"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    on_front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["p95_ms"])
    if len(on_front) > 1:
        ax.plot([p["p95_ms"] for p in on_front], [p["quality"] for p in on_front], color="#c62828", lw=1)
    if result["best"] is not None:
        b = result["points"][result["best"]]
        ax.scatter(
            [b["p95_ms"]], [b["quality"]], s=400, facecolors="none", edgecolors="#2e7d32", linewidths=2
        )
    limit = result["limits"]["max_p95_ms"]
    if limit is not None:
        ax.axvline(limit, color="#2e7d32", linestyle=":", linewidth=1)
    ax.set_xlabel("p95 end-to-end latency (ms)")
    ax.set_ylabel("quality (pass rate)")
    ax.set_ylim(-0.05, 1.08)
    ax.set_title("Quality × latency (marker size: cost per request; red: Pareto front)")
    ax.grid(alpha=0.3)
    return _svg(fig)


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:.6f}"


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(usd=_usd, ms=lambda v: "—" if v is None else f"{v:,.1f}", pct=lambda v: f"{v:.1%}")
    return env


def render_html(result: Mapping[str, Any]) -> str:
    chart = tradeoff_plot(result)
    return _environment().get_template("report.html").render(result=result, chart=Markup(chart))


def write_report(out: Path, result: Mapping[str, Any]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"sweep.json": out / "sweep.json", "report.html": out / "report.html"}
    paths["sweep.json"].write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    paths["report.html"].write_text(render_html(result), encoding="utf-8")
    return paths
