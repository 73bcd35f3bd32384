"""Eval-report charts: static SVG from matplotlib (what Shipyard ships) against live Plotly charts
(what the dashboard draws), on the same report, in one run.

    .venv/bin/python benchmarks/report_charts.py            # writes its section of docs/benchmarks.md
    .venv/bin/python benchmarks/report_charts.py --quick    # fewer repeats, prints only

Both pages carry the same three figures (pass rate per scorer, score distribution, per-scorer
deltas against a baseline) for a 30-case, two-scorer, two-repeat run. Measured: the time to render
the page in Python, its size, the time until Chromium fires its ``load`` event, and how many
of its charts are drawn when the dashboard serves it under its
report policy (``REPORT_CSP``: a sandbox with no script, since a developer key can write a report).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio

from benchdoc import write_section
from shipyard.evals import report
from shipyard.evals.report.formatting import scorer_names
from shipyard.evals.stats import HISTOGRAM_BINS, Comparison, Summary, compare, summarize
from shipyard.gateway.http_headers import REPORT_CSP

CHROMIUM = "/usr/bin/chromium"
SVG_BLOCK = re.compile(r"<svg\b.*?</svg>", re.S)
# Charts on screen: Plotly containers that drew their SVG, plus the page's own plot-sized SVGs.
CHARTS_DRAWN = """() => {
  const live = [...document.querySelectorAll('.js-plotly-plot')].filter(d => d.querySelector('svg.main-svg'));
  const svg = [...document.querySelectorAll('svg')].filter(
    s => !s.closest('.js-plotly-plot') && s.id !== 'js-plotly-tester'
      && s.getBoundingClientRect().width > 200);
  return live.length + svg.length;
}"""


def run_lines(failing: set[str], target: str = "small") -> list[dict[str, Any]]:
    """30 cases x 2 repeats with two scorers; ``failing`` cases fail `exact`."""
    out = []
    for repeat in range(2):
        for i in range(30):
            case = f"case-{i}"
            passed = case not in failing
            out.append(
                {
                    "case": case,
                    "repeat": repeat,
                    "target": target,
                    "input": {"question": f"what is {case}?"},
                    "expected": f"expected {case}",
                    "observation": {
                        "output": f"answer to {case}",
                        "latency_ms": 100.0 + i,
                        "ttft_ms": 40.0,
                        "input_tokens": 12,
                        "output_tokens": 7,
                        "cost_usd": 0.002,
                        "error": None,
                        "trace_id": None,
                        "model": "m",
                        "cached": False,
                    },
                    "scores": {
                        "exact": {"value": float(passed), "passed": passed, "explanation": case},
                        "sim": {"value": 0.8 if passed else 0.3, "passed": True, "explanation": "close"},
                    },
                    "passed": passed,
                }
            )
    return out


def plotly_figures(summary: Summary, comparison: Comparison) -> list[go.Figure]:
    """The report's three figures, drawn with Plotly from the same summaries."""
    targets = list(summary.targets.values())
    names = scorer_names(targets)
    rates = go.Figure(
        [
            go.Bar(
                name=t.target,
                x=["overall", *names],
                y=[t.pass_rate] + [t.scorers[n].pass_rate for n in names],
            )
            for t in targets
        ],
        layout={"title": "Pass rate per scorer", "yaxis": {"tickformat": ".0%", "range": [0, 1.05]}},
    )
    edges = [i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS)]
    dist = go.Figure(
        [go.Bar(name=f"{t.target} · {n}", x=edges, y=t.scorers[n].histogram) for t in targets for n in names],
        layout={"title": "Score distribution", "barmode": "group"},
    )
    rows = {"pass rate": 100 * comparison.delta_pass_rate, "mean score": 100 * comparison.score_delta}
    for name, d in comparison.scorers.items():
        if d.delta_pass_rate is not None:
            rows[f"scorer {name}"] = 100 * d.delta_pass_rate
    deltas = go.Figure(
        [go.Bar(x=list(rows.values()), y=list(rows), orientation="h")],
        layout={"title": "Against the baseline", "xaxis": {"title": "percentage points"}},
    )
    return [rates, dist, deltas]


def plotly_page(svg_page: str, figures: list[go.Figure]) -> str:
    """The Shipyard page with its SVG plots replaced by live Plotly charts (plotly.js inlined once,
    so the file stays self-contained and works offline, as a report must)."""
    charts = [
        pio.to_html(fig, full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False})
        for i, fig in enumerate(figures)
    ]
    it = iter(charts)
    page = SVG_BLOCK.sub(lambda _: next(it, ""), svg_page)
    for rest in it:  # a page with fewer SVGs than figures still carries every chart
        page = page.replace("</body>", rest + "</body>")
    return page


def timed(fn: Callable[[], str], repeat: int) -> tuple[str, float]:
    out, times = "", []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def serve(body: bytes, headers: dict[str, str]) -> Callable[[Any], None]:
    """A route handler that answers with this page (Playwright passes the route alone)."""

    def handler(route: Any) -> None:
        route.fulfill(body=body, headers=headers)

    return handler


def browser_measure(pages: dict[str, Path], repeat: int) -> dict[str, dict[str, float]]:
    """Per page: median time to laid out in Chromium, and charts drawn without and with REPORT_CSP."""
    from playwright.sync_api import sync_playwright

    out: dict[str, dict[str, float]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        for name, path in pages.items():
            body = path.read_bytes()
            loads = []
            for policy in (None, REPORT_CSP):
                context = browser.new_context()
                page = context.new_page()
                headers = {"content-type": "text/html; charset=utf-8"}
                if policy is not None:
                    headers["content-security-policy"] = policy
                page.route("http://report.test/", serve(body, headers))
                runs = repeat if policy is None else 1
                for _ in range(runs):
                    t0 = time.perf_counter()
                    page.goto("http://report.test/", wait_until="load")
                    if policy is None:
                        loads.append(time.perf_counter() - t0)
                drawn = page.evaluate(CHARTS_DRAWN)
                key = "charts_drawn_csp" if policy is not None else "charts_drawn"
                out.setdefault(name, {})[key] = float(drawn)
                context.close()
            out[name]["load_s"] = statistics.median(loads)
        browser.close()
    return out


def render(rows: dict[str, dict[str, float]], figures: int) -> str:
    lines = [
        "## Eval-report charts: static SVG (matplotlib) vs live Plotly",
        "",
        "`benchmarks/report_charts.py`: the HTML report of a 30-case, two-scorer run with a baseline "
        f"({figures} figures), written both ways from the same summaries. Load is Chromium's `load` event "
        "(median); the last column is what the dashboard shows, since it serves reports "
        "under a no-script sandbox (`REPORT_CSP`).",
        "",
        "| charts | render (Python) | page size | load in Chromium | charts drawn | drawn under REPORT_CSP |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['render_s'] * 1000:,.0f} ms | {r['bytes'] / 1024:,.0f} KB | "
            f"{r['load_s'] * 1000:,.0f} ms | {r['charts_drawn']:.0f} | {r['charts_drawn_csp']:.0f} |"
        )
    lines += [
        "",
        "Why the reports keep matplotlib while the dashboard uses Plotly: a report is a file that must "
        "open offline and be safe to serve from the dashboard's origin, so it cannot run script; Plotly's "
        "static export (kaleido) needs a Chrome at run time. The price is the first column: matplotlib "
        "takes longer to draw, once per eval run, where the page is then smaller and faster for every "
        "reader. The dashboard's eval page draws the same figures live, with Plotly.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="Renders and page loads timed per variant.")
    parser.add_argument("--quick", action="store_true", help="3 repeats; print only, do not touch the docs.")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 3
    current = summarize(run_lines({f"case-{i}" for i in (1, 2, 4, 6, 7, 8)}), suite="qa")
    baseline = summarize(run_lines({"case-1"}), suite="qa")
    comparison = compare(baseline, current)

    svg_page, svg_s = timed(lambda: report.render_html(current, comparison), args.repeat)
    figures = plotly_figures(current, comparison)
    live_page, live_s = timed(lambda: plotly_page(svg_page, plotly_figures(current, comparison)), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {
            "SVG (matplotlib, shipped)": Path(tmp) / "svg.html",
            "Plotly (live)": Path(tmp) / "plotly.html",
        }
        paths["SVG (matplotlib, shipped)"].write_text(svg_page)
        paths["Plotly (live)"].write_text(live_page)
        measured = browser_measure(paths, args.repeat)
    rows = {
        "SVG (matplotlib, shipped)": {"render_s": svg_s, "bytes": len(svg_page.encode())},
        "Plotly (live)": {"render_s": live_s, "bytes": len(live_page.encode())},
    }
    for name in rows:
        rows[name].update(measured[name])
    section = render(rows, len(figures))
    print(section)
    if not args.quick:
        write_section("report-charts", section)


if __name__ == "__main__":
    main()
