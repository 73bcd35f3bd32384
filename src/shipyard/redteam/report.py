"""The report files of a run: ``report.json`` (the summary), ``report.md`` (tables and examples
for a pull request), ``report.html`` (one self-contained page with Plotly charts, rendered from
``templates/report.html``) and ``results.jsonl`` (every attack and its verdict).

The HTML page inlines Plotly.js from the installed ``plotly`` package, so it opens offline and
loads nothing from a CDN. It is a file the CLI writes, not a dashboard page: it has its own small
template environment rather than the dashboard's.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from shipyard.errors import ShipyardError
from shipyard.redteam.core import OUTCOMES
from shipyard.redteam.runner import Result

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).parent / "templates"


def pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def render_markdown(summary: Mapping[str, Any]) -> str:
    t = summary["totals"]
    lines = [
        f"# Red-team report: route `{summary['route']}`",
        "",
        f"- target: {summary['target']}",
        f"- started: {summary['started_at']} · {summary['duration_s']:.1f}s · seed {summary['seed']}",
        f"- attacks: {t['attacks']} ({t['judged']} judged, {t['errors']} errors)",
        f"- **attack success rate: {pct(t['asr'])}** ({t['succeeded']}/{t['judged']}); "
        f"blocked by guards: {pct(t['blocked_rate'])} ({t['blocked']}/{t['judged']})",
    ]
    if summary.get("run_id"):
        lines.append(f"- experiment run: `{summary['run_id']}` (`shipyard runs show {summary['run_id']}`)")
    lines += [
        "",
        "## By family",
        "",
        "| family | OWASP | attacks | succeeded | blocked | refused | resisted | errors | ASR | blocked |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in summary["by_family"].items():
        lines.append(
            f"| {name} | {', '.join(f['owasp'])} | {f['attacks']} | {f['succeeded']} | {f['blocked']} | "
            f"{f['refused']} | {f['resisted']} | {f['errors']} | {pct(f['asr'])} | "
            f"{pct(f['blocked_rate'])} |"
        )
    lines += [
        "",
        "## By OWASP category (Top 10 for LLM Applications 2025)",
        "",
        "| category | families | attacks | succeeded | blocked | ASR | blocked |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for o in summary["by_owasp"].values():
        lines.append(
            f"| {o['name']} | {', '.join(o['families'])} | {o['attacks']} | {o['succeeded']} | "
            f"{o['blocked']} | {pct(o['asr'])} | {pct(o['blocked_rate'])} |"
        )
    lines += ["", "## Blocked by scanner", ""]
    if summary["blocked_by"]:
        lines += ["| scanner | blocks |", "|---|---:|"]
        lines += [f"| {s} | {n} |" for s, n in summary["blocked_by"].items()]
    else:
        lines.append("No attack was blocked by a guard.")
    if summary["by_technique"]:
        lines += [
            "",
            "## By technique",
            "",
            "| technique | attacks | succeeded | blocked | ASR |",
            "|---|---:|---:|---:|---:|",
        ]
        for k, r in summary["by_technique"].items():
            lines.append(f"| {k} | {r['attacks']} | {r['succeeded']} | {r['blocked']} | {pct(r['asr'])} |")
    for kind, title in (("succeeded", "Successful attacks"), ("blocked", "Blocked attacks")):
        examples = summary["examples"][kind]
        lines += ["", f"## {title} (examples)", ""]
        if not examples:
            lines.append("None.")
        for e in examples:
            lines += [
                f"### `{e['id']}` ({e['family']}, {e['owasp']}) — {e['reason']}",
                "",
                "Attack:",
                "",
                "```text",
                e["prompt"].replace("```", "ʼʼʼ"),
                "```",
            ]
            if e["answer"] is not None:
                lines += ["", "Answer:", "", "```text", e["answer"].replace("```", "ʼʼʼ"), "```"]
            lines.append("")
    if summary["errors"]:
        lines += ["", "## Errors", ""] + [f"- {e['count']}× {e['error']}" for e in summary["errors"]]
    return "\n".join(lines).rstrip() + "\n"


COLORS = {
    "succeeded": "#d64545",
    "blocked": "#2f7d4f",
    "refused": "#5b8def",
    "resisted": "#9aa5b1",
    "error": "#e0a030",
}


def figures(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Plotly figures (data + layout) keyed by the id of the div they go in."""
    fams = list(summary["by_family"])
    fam = summary["by_family"]
    owasp = summary["by_owasp"]
    pct_axis = {"tickformat": ".0%", "range": [0, 1.05], "title": {"text": "share of judged attacks"}}
    base = {"margin": {"t": 40, "l": 60, "r": 20, "b": 90}, "height": 360, "legend": {"orientation": "h"}}
    out: dict[str, dict[str, Any]] = {
        "plot-asr-family": {
            "data": [
                {"type": "bar", "name": "attack success rate", "x": fams, "y": [fam[f]["asr"] for f in fams],
                 "marker": {"color": COLORS["succeeded"]}},
                {"type": "bar", "name": "blocked by guards", "x": fams,
                 "y": [fam[f]["blocked_rate"] for f in fams], "marker": {"color": COLORS["blocked"]}},
            ],
            "layout": {**base, "title": {"text": "By family"}, "barmode": "group", "yaxis": pct_axis},
        },
        "plot-asr-owasp": {
            "data": [
                {"type": "bar", "name": "attack success rate", "x": [o["name"] for o in owasp.values()],
                 "y": [o["asr"] for o in owasp.values()], "marker": {"color": COLORS["succeeded"]}},
                {"type": "bar", "name": "blocked by guards", "x": [o["name"] for o in owasp.values()],
                 "y": [o["blocked_rate"] for o in owasp.values()], "marker": {"color": COLORS["blocked"]}},
            ],
            "layout": {**base, "title": {"text": "By OWASP category"}, "barmode": "group", "yaxis": pct_axis},
        },
        "plot-outcomes": {
            "data": [
                {"type": "bar", "name": outcome, "x": fams,
                 "y": [fam[f]["errors" if outcome == "error" else outcome] for f in fams],
                 "marker": {"color": COLORS[outcome]}}
                for outcome in OUTCOMES
            ],
            "layout": {**base, "title": {"text": "Outcomes by family"}, "barmode": "stack",
                       "yaxis": {"title": {"text": "attacks"}}},
        },
    }  # fmt: skip
    scanners = list(summary["blocked_by"])
    out["plot-blocked-scanner"] = {
        "data": [
            {
                "type": "bar",
                "name": f,
                "x": scanners,
                "y": [fam[f]["blocked_by"].get(s, 0) for s in scanners],
            }
            for f in fams
            if fam[f]["blocked_by"]
        ],
        "layout": {
            **base,
            "title": {
                "text": "Blocks by scanner" if scanners else "Blocks by scanner: no attack was blocked"
            },
            "barmode": "stack",
            "yaxis": {"title": {"text": "attacks blocked"}},
        },
    }
    return out


def plotly_js() -> str:
    path = resources.files("plotly") / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise ShipyardError(
            f"plotly.min.js is missing from the installed plotly package ({path}); reinstall plotly"
        )
    return path.read_text(encoding="utf-8")


@functools.cache
def _environment() -> jinja2.Environment:
    # jinja2 is imported on first use: every `shipyard` command loads this package, and only a
    # finished run renders a page.
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = pct
    return env


def render_html(summary: Mapping[str, Any], include_plotlyjs: bool = True) -> str:
    """One self-contained page: key figures, four Plotly charts, the tables and examples. Every
    value from the run is HTML-escaped by the template; the figure JSON is made safe to sit inside
    <script>."""
    from markupsafe import Markup

    figs = figures(summary)
    # A value such as `</script>` in a family or scanner name must not end the script element.
    payload = orjson.dumps(figs).decode().replace("</", "<\\/")
    return (
        _environment()
        .get_template("report.html")
        .render(
            summary=summary,
            plot_ids=list(figs),
            figures_json=Markup(payload),
            plotly_js=Markup(plotly_js()) if include_plotlyjs else None,
        )
    )


def write_report(out: Path, summary: Mapping[str, Any], results: Sequence[Result]) -> dict[str, Path]:
    """report.json, report.md, report.html and results.jsonl (every attack and its verdict) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "report.json": out / "report.json",
        "report.md": out / "report.md",
        "report.html": out / "report.html",
        "results.jsonl": out / "results.jsonl",
    }
    paths["report.json"].write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2, default=str))
    paths["report.md"].write_text(render_markdown(summary), encoding="utf-8")
    paths["report.html"].write_text(render_html(summary), encoding="utf-8")
    with paths["results.jsonl"].open("wb") as f:
        for r in results:
            f.write(orjson.dumps(r.to_dict(), default=str) + b"\n")
    return paths
