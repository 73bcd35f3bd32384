"""The HTML reports' plots, as static SVG drawn by matplotlib (object-oriented API only: no pyplot,
so no global figure registry to leak).

Why matplotlib here when the dashboard draws with Plotly: an eval report is a file a run writes and
the dashboard serves as it is, and a developer key can overwrite it, so the dashboard serves it
under ``REPORT_CSP`` — a sandbox with no script at all. A live Plotly chart needs script; Plotly's
own static export (kaleido 1.x, which plotly 7 requires) needs a Chrome installed or downloaded at
run time. ``benchmarks/report_charts.py`` measures both on one report (30 cases, two scorers, a
baseline; docs/benchmarks.md): 46 KB and ~0.15 s to load in Chromium with these SVGs, every chart
drawn under the sandbox, against 4.7 MB (plotly.min.js inlined), ~1.1 s and no chart at all under
it with live Plotly. The dashboard's eval page draws the same figures interactively, with Plotly.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping
from typing import Literal

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from shipyard.evals.report.formatting import one_line, scorer_names
from shipyard.evals.stats import HISTOGRAM_BINS, Comparison, TargetSummary

MAX_PLOTTED_SCORERS = 12

_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
_GOOD = "#2e7d32"
_BAD = "#c62828"

_SVG_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_SVG_NS = re.compile(r'\s+xmlns(?::xlink)?="[^"]*"')
_SVG_STAR_STYLE = re.compile(r"<style[^>]*>\*\{[^}]*\}</style>")
_SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def _label(text: str) -> str:
    """Plot labels: ``$`` would start matplotlib's mathtext parser (and fail on unbalanced input)."""
    return one_line(text, 40).replace("$", r"\$")


def _svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element ready to inline in HTML.

    Text stays text (``svg.fonttype: none``): smaller files and selectable labels. The XML prolog
    and namespace declarations go (HTML parses inline SVG without them, and a report must not hold
    ``http`` URLs); element ids get a per-plot prefix because several plots share one document's id
    space and matplotlib reuses names such as ``figure_1``.
    """
    FigureCanvasSVG(fig)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "shipyard"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    svg = _SVG_PROLOG.sub("", buf.getvalue(), count=1)
    svg = _SVG_METADATA.sub("", svg)  # RDF/Dublin Core block: namespace URLs and nothing for readers
    svg = _SVG_NS.sub("", svg)
    svg = _SVG_STAR_STYLE.sub("", svg)  # a page-wide `*` rule; the page CSS scopes it to plots
    # Prefixed by a hash of the plot, not a counter: the same data renders to the same bytes.
    prefix = "s" + hashlib.sha1(svg.encode(), usedforsecurity=False).hexdigest()[:8] + "-"
    svg = svg.replace(' id="', f' id="{prefix}').replace("url(#", f"url(#{prefix}")
    svg = svg.replace('xlink:href="#', f'xlink:href="#{prefix}').replace(' href="#', f' href="#{prefix}')
    # The figure is not registered anywhere (no pyplot), so dropping it frees it; clearing it now
    # releases the artists even if a caller keeps a reference.
    fig.clear()
    return svg.replace("<svg ", '<svg class="plot" role="img" ', 1).strip()


def _color(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def pass_rate_plot(targets: Mapping[str, TargetSummary]) -> str:
    """Grouped bars: the overall pass rate (with its Wilson CI) and each scorer's, per target."""
    if not targets:
        return ""
    names = scorer_names(targets.values())[:MAX_PLOTTED_SCORERS]
    groups = ["overall", *names]
    fig = Figure(figsize=(max(5.0, 1.0 + 0.9 * len(groups) * max(1, len(targets)) ** 0.5), 3.2))
    ax = fig.add_subplot()
    width = 0.8 / len(targets)
    x = np.arange(len(groups))
    for i, (label, t) in enumerate(targets.items()):
        values = [t.pass_rate] + [t.scorers[n].pass_rate if n in t.scorers else 0.0 for n in names]
        offset = (i - (len(targets) - 1) / 2) * width
        ax.bar(x + offset, values, width, color=_color(i), label=_label(label))
        if t.decided:  # the interval belongs to the overall bar only
            lo, hi = t.pass_rate_ci
            ax.errorbar(
                [offset],
                [t.pass_rate],
                yerr=[[max(0.0, t.pass_rate - lo)], [max(0.0, hi - t.pass_rate)]],
                fmt="none",
                ecolor="#222222",
                capsize=3,
                linewidth=1,
            )
    slanted = len(groups) > 4
    ax.set_xticks(
        x, [_label(g) for g in groups], rotation=20 if slanted else 0, ha="right" if slanted else "center"
    )
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
    ax.set_ylabel("pass rate")
    ax.set_title("Pass rate per scorer (overall with 95% CI)")
    if len(targets) > 1:
        ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def score_distribution_plot(targets: Mapping[str, TargetSummary]) -> str:
    """One panel per scorer: the share of runs in each tenth of [0, 1], one outline per target."""
    names = scorer_names(targets.values())[:MAX_PLOTTED_SCORERS]
    if not names:
        return ""
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig = Figure(figsize=(3.4 * cols, 2.5 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        for i, (label, t) in enumerate(targets.items()):
            s = t.scorers.get(name)
            if s is None or not s.runs:
                continue
            share = np.asarray(s.histogram, dtype=float) / s.runs
            ax.stairs(
                share,
                edges,
                color=_color(i),
                label=_label(label),
                fill=len(targets) == 1,
                alpha=0.8,
                linewidth=1.5,
            )
        ax.set_title(_label(name), fontsize="medium")
        ax.set_xlim(0, 1)
        ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
        ax.grid(axis="y", alpha=0.3)
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    if len(targets) > 1:
        axes[0][0].legend(fontsize="x-small")
    fig.suptitle("Score distributions (share of runs)")
    fig.tight_layout()
    return _svg(fig)


def delta_plot(comparison: Comparison) -> str:
    """Horizontal bars of the changes against the baseline, in percentage points: pass rate, the
    mean score with its paired-bootstrap 95% CI, and each scorer's pass rate."""
    c = comparison
    rows: list[tuple[str, float]] = [
        ("pass rate", 100 * c.delta_pass_rate),
        ("mean score", 100 * c.score_delta),
    ]
    for name, d in list(c.scorers.items())[:MAX_PLOTTED_SCORERS]:
        if d.delta_pass_rate is not None:
            rows.append((f"scorer {_label(name)}", 100 * d.delta_pass_rate))
    values = [v for _, v in rows]
    fig = Figure(figsize=(6.0, 0.9 + 0.38 * len(rows)))
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    ax.barh(y, values, color=[_GOOD if v >= 0 else _BAD for v in values])
    lo, hi = 100 * c.score_ci_low, 100 * c.score_ci_high
    ax.errorbar(
        [100 * c.score_delta],
        [y[1]],
        xerr=[[100 * c.score_delta - lo], [hi - 100 * c.score_delta]],
        fmt="none",
        ecolor="#222222",
        capsize=3,
        linewidth=1,
    )
    ax.set_yticks(y, [label for label, _ in rows])
    ax.axvline(0, color="#555555", linewidth=0.8)
    span = max(1.0, *(abs(v) for v in values), abs(lo), abs(hi))
    ax.set_xlim(-1.15 * span, 1.15 * span)
    ax.set_xlabel("change vs baseline (percentage points)")
    ax.set_title("Against the baseline")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def quality_cost_plot(targets: Mapping[str, TargetSummary], x: Literal["cost", "latency"] = "cost") -> str:
    """Scatter of pass rate (with its Wilson CI) against cost per case or p50 latency, one point per
    target (coloured as in the other plots); the best trade-offs sit top-left. Targets without the x
    value (no cost reported) or without a pass rate (all flaky) are left out; "" when none is left."""
    points = []
    for i, (label, t) in enumerate(targets.items()):
        xv = t.cost_per_case_usd if x == "cost" else t.latency_p50_ms
        if xv is None or not t.decided:
            continue
        lo, hi = t.pass_rate_ci
        points.append((i, label, xv, t.pass_rate, lo, hi))
    if not points:
        return ""
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    for i, label, xv, rate, lo, hi in points:
        ax.errorbar(
            [xv],
            [rate],
            yerr=[[max(0.0, rate - lo)], [max(0.0, hi - rate)]],
            fmt="o",
            color=_color(i),
            capsize=3,
            markersize=7,
        )
        ax.annotate(_label(label), (xv, rate), textcoords="offset points", xytext=(6, 6), fontsize="small")
    ax.set_ylim(0, 1.05)
    ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0, decimals=0))
    ax.set_ylabel("pass rate (95% CI)")
    ax.xaxis.set_major_locator(ticker.MaxNLocator(5))
    if x == "cost":
        ax.set_xlabel("cost per case (USD)")
        ax.set_title("Quality vs cost")
    else:
        ax.set_xlabel("latency p50 (ms)")
        ax.set_title("Quality vs latency")
    # Room on the right for the labels of the costliest (or slowest) targets.
    ax.set_xlim(0, 1.3 * max(p[2] for p in points) or 1.0)
    ax.grid(alpha=0.3)
    return _svg(fig)
