"""The bench report: ``result.json`` and ``report.html`` (one self-contained page: inline CSS and
SVG charts, no script, nothing fetched), rendered from ``bench/templates/report.html``.

Every value from the run (the model name, error details, the URL) is HTML-escaped by the
environment's autoescape; the SVG this package drew is the only markup passed through."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import orjson
from markupsafe import Markup

from shipyard.bench.plots import distribution_plot, latency_plot, throughput_plot
from shipyard.bench.service import load_name

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f}"


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(ms=_ms, pct=lambda x: f"{x:.1%}", load=load_name, num=lambda x: f"{x:,.2f}")
    return env


def render_html(result: Mapping[str, Any]) -> str:
    levels = result["levels"]
    head = levels[result["headline"]]
    knee = (result.get("sweep") or {}).get("knee")
    charts = [
        latency_plot(levels),
        throughput_plot(levels, knee["index"] if knee else None),
        distribution_plot(head["samples"]["ttft_ms"], "TTFT"),
        distribution_plot(head["samples"]["itl_ms"], "Inter-token latency"),
    ]
    return (
        _environment()
        .get_template("report.html")
        .render(
            result=result,
            head=head,
            knee=knee,
            charts=[Markup(c) for c in charts if c],
            title=f"Bench: {result['target']['model']}",
        )
    )


def write_report(out: Path, result: Mapping[str, Any]) -> dict[str, Path]:
    """result.json and report.html in ``out`` (created)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"result.json": out / "result.json", "report.html": out / "report.html"}
    paths["result.json"].write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    paths["report.html"].write_text(render_html(result), encoding="utf-8")
    return paths
