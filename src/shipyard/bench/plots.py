"""The bench report's charts, as static SVG drawn by matplotlib's object-oriented API.

The report is a file a run writes and the dashboard serves under its report CSP, which allows no
script; that is why reports draw SVG and not Plotly (docs/benchmarks.md, "report charts").
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

_COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#59a14f", "#76b7b2", "#b07aa1")
_KNEE = "#c62828"
_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_NS = re.compile(r'\s+xmlns(?::xlink)?="[^"]*"')
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def _svg(fig: Figure) -> str:
    """Inline ``<svg>``: text kept as text, no prolog, namespaces or metadata (no URLs in a report),
    ids prefixed by a hash of the plot so several plots share one page."""
    FigureCanvasSVG(fig)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "shipyard-bench"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    svg = _NS.sub("", _METADATA.sub("", _PROLOG.sub("", buf.getvalue(), count=1)))
    prefix = "b" + hashlib.sha1(svg.encode(), usedforsecurity=False).hexdigest()[:8] + "-"
    svg = svg.replace(' id="', f' id="{prefix}').replace("url(#", f"url(#{prefix}")
    svg = svg.replace('xlink:href="#', f'xlink:href="#{prefix}').replace(' href="#', f' href="#{prefix}')
    fig.clear()
    return svg.replace("<svg ", '<svg class="plot" role="img" ', 1).strip()


def _x(levels: Sequence[Mapping[str, Any]]) -> tuple[list[float], str]:
    kind = levels[0]["load"]["kind"]
    label = {"concurrency": "concurrency", "rate": "offered rate (requests/s)"}.get(kind, "load")
    return [float(lv["load"]["value"]) for lv in levels], label


def latency_plot(levels: Sequence[Mapping[str, Any]]) -> str:
    """E2E and TTFT percentiles against the load (one level: the percentiles as bars)."""
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    series = [("e2e_ms", q) for q in ("p50", "p90", "p99")] + [("ttft_ms", q) for q in ("p50", "p99")]
    if len(levels) == 1:
        s = levels[0]["summary"]
        names = [f"{fam.split('_')[0].upper()} {q}" for fam, q in series]
        values = [s[fam][q] or 0.0 for fam, q in series]
        ax.bar(names, values, color=[_COLORS[i % len(_COLORS)] for i in range(len(names))])
        ax.set_title("Latency percentiles")
    else:
        x, label = _x(levels)
        for i, (fam, q) in enumerate(series):
            y = [lv["summary"][fam][q] for lv in levels]
            ax.plot(x, [v if v is not None else float("nan") for v in y], marker="o", color=_COLORS[i],
                    label=f"{fam.split('_')[0].upper()} {q}")  # fmt: skip
        ax.set_xlabel(label)
        ax.set_xscale("log", base=2)
        ax.legend(fontsize="small")
        ax.set_title("Latency percentiles vs load")
    ax.set_ylabel("ms")
    ax.grid(alpha=0.3)
    return _svg(fig)


def throughput_plot(levels: Sequence[Mapping[str, Any]], knee: int | None) -> str:
    """Requests/s and output tokens/s against the load, the knee marked."""
    if len(levels) < 2:
        return ""
    x, label = _x(levels)
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    rps = [lv["summary"]["requests_per_s"] for lv in levels]
    tps = [lv["summary"]["output_tokens_per_s"] for lv in levels]
    ax.plot(x, rps, marker="o", color=_COLORS[0], label="requests/s")
    ax.set_ylabel("requests/s")
    ax.set_xlabel(label)
    ax.set_xscale("log", base=2)
    other = ax.twinx()
    other.plot(x, tps, marker="s", linestyle="--", color=_COLORS[1], label="output tokens/s")
    other.set_ylabel("output tokens/s")
    if knee is not None:
        ax.axvline(x[knee], color=_KNEE, linestyle=":", linewidth=1.5)
        ax.annotate("knee", (x[knee], rps[knee]), textcoords="offset points", xytext=(6, -14), color=_KNEE)
    lines = ax.get_lines()[:1] + other.get_lines()[:1]
    ax.legend(lines, [str(line.get_label()) for line in lines], fontsize="small", loc="upper left")
    ax.set_title("Throughput vs load")
    ax.grid(alpha=0.3)
    return _svg(fig)


def distribution_plot(values: Sequence[float], what: str) -> str:
    """A histogram of one level's TTFT or ITL samples, with its p50 and p99 marked."""
    if not values:
        return ""
    fig = Figure(figsize=(4.8, 3.0))
    ax = fig.add_subplot()
    ax.hist(values, bins=min(40, max(5, len(values) // 5)), color=_COLORS[0], alpha=0.85)
    ordered = sorted(values)
    for q, style in ((50, "-"), (99, "--")):
        v = ordered[min(len(ordered) - 1, round((len(ordered) - 1) * q / 100))]
        ax.axvline(v, color=_KNEE, linestyle=style, linewidth=1, label=f"p{q} {v:.1f} ms")
    ax.set_xlabel(f"{what} (ms)")
    ax.set_ylabel("count")
    ax.set_title(f"{what} distribution")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _svg(fig)
