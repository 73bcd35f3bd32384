"""The HTML reports: one run's page (``report.html``) and targets side by side (``compare.html``).

Each is one self-contained file rendered from a Jinja2 template under ``evals/templates/``: inline
CSS and inline SVG plots, no script, nothing fetched, so that it opens from a CI artifact as well as
from the dashboard, which serves it under ``REPORT_CSP``. The functions here compute what a page
shows; the templates only lay it out.

Escaping: every value a template prints is HTML-escaped with its control characters (which HTML
forbids, and model output may hold) replaced, through the environment's ``finalize``; the plots,
which this package draws itself, are the only markup passed through as is.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jinja2
import orjson
from markupsafe import Markup

from shipyard.evals.report.formatting import (
    MAX_MESSAGES,
    cost_cell,
    fmt_ms,
    fmt_p,
    fmt_pct,
    fmt_pp,
    fmt_usd,
    headline,
    rate_ci,
    run_message,
    scorer_cell,
    scorer_names,
    xml_safe,
)
from shipyard.evals.report.plots import delta_plot, pass_rate_plot, quality_cost_plot, score_distribution_plot
from shipyard.evals.stats import Comparison, Summary, TargetSummary

MAX_HTML_CASES = 50  # failed cases shown per target in the HTML report
MAX_FIELD_CHARS = 2000  # of an input, expected value or output in the HTML report

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def _escaped(value: Any) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(xml_safe(value), quote=True))


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        finalize=_escaped,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        pct=fmt_pct,
        pp=fmt_pp,
        ms=fmt_ms,
        p=fmt_p,
        rate_ci=rate_ci,
        cost_cell=cost_cell,
        scorer_cell=scorer_cell,
        grouped=lambda n: f"{n:,}",
    )
    return env


def _plots(*svgs: str) -> Markup:
    """SVG this package drew (matplotlib's output, nothing from the data unescaped), as markup."""
    return Markup("".join(svgs))


# --------------------------------------------------------------------------------------------------
# Per-case detail streamed from results.jsonl
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class CaseDetail:
    """What the HTML report shows of a failed case: the first failing run and every failing message."""

    input: str = ""
    expected: str = ""
    output: str = ""
    messages: list[str] = field(default_factory=list)


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
    else:  # lines built in memory (the pytest plugin) may hold values JSON has no type for
        options = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
        text = orjson.dumps(value, option=options, default=str).decode()
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS] + f"… ({len(text):,} chars)"


def collect_details(
    wanted: Mapping[str, Sequence[str]], lines: Iterable[Mapping[str, Any]] | None
) -> dict[tuple[str, str], CaseDetail]:
    """One pass over the lines, keeping the first failing run of each wanted (target, case)."""
    keys = {(target, case) for target, cases in wanted.items() for case in cases}
    details: dict[tuple[str, str], CaseDetail] = {}
    for line in lines or ():
        key = (str(line.get("target") or "default"), str(line.get("case")))
        if key not in keys or line.get("passed"):
            continue
        d = details.get(key)
        if d is None:
            obs = line.get("observation") or {}
            d = details[key] = CaseDetail(
                input=_show(line.get("input")),
                expected=_show(line.get("expected")),
                output=_show(obs.get("output")),
            )
        if len(d.messages) < MAX_MESSAGES:
            d.messages.append(run_message(line))
    return details


def _failure_groups(
    targets: Sequence[TargetSummary],
    comparison: Comparison | None,
    lines: Iterable[Mapping[str, Any]] | None,
    max_cases: int,
) -> list[dict[str, Any]]:
    """Per target with failures: its shown cases (regressions first, at most ``max_cases``) with
    input, expected value, output and every failing message, and how many were left out."""
    shown: dict[str, list[str]] = {}
    for t in targets:
        first = (
            [r.case for r in comparison.regressions] if comparison and comparison.target == t.target else []
        )
        failing = {f.case for f in t.failures}
        order = [c for c in first if c in failing] + [f.case for f in t.failures]
        shown[t.target] = list(dict.fromkeys(order))[:max_cases]
    details = collect_details(shown, lines)
    groups = []
    for t in targets:
        if not t.failures:
            continue
        by_case = {f.case: f for f in t.failures}
        rows = []
        for case in shown[t.target]:
            f = by_case[case]
            d = details.get((t.target, case))
            rows.append(
                {
                    "case": case,
                    "verdict": f.verdict,
                    "runs": f.runs,
                    "failed_runs": f.failed_runs,
                    "input": d.input if d else "",
                    "expected": d.expected if d else "",
                    "output": d.output if d else "",
                    "why": "\n".join(d.messages if d and d.messages else [f.explanation]),
                }
            )
        groups.append(
            {
                "target": t.target,
                "count": len(t.failures),
                "rows": rows,
                "hidden": len(t.failures) - len(shown[t.target]),
            }
        )
    return groups


# --------------------------------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------------------------------


def render_html(
    summary: Summary,
    comparison: Comparison | None = None,
    lines: Iterable[Mapping[str, Any]] | None = None,
    title: str | None = None,
    max_cases: int = MAX_HTML_CASES,
) -> str:
    """One self-contained HTML page: verdict, targets table, per-scorer pass rates and score
    distributions (inline SVG), the comparison with a plot of the deltas, and a table of failed and
    flaky cases (at most ``max_cases`` per target; regressions first) with input, expected value,
    output and explanations from ``lines``. Everything from the data is HTML-escaped."""
    title = title or f"Eval report: {summary.suite or 'eval'}"
    status, verdict = headline(summary, comparison)
    targets = list(summary.targets.values())
    by_label = {t.target: t for t in targets}
    return (
        environment()
        .get_template("report.html")
        .render(
            title=title,
            status=status,
            verdict=verdict,
            targets=targets,
            scorer_names=scorer_names(targets),
            plots=_plots(pass_rate_plot(by_label), score_distribution_plot(by_label)),
            comparison=comparison,
            delta_plot=_plots(delta_plot(comparison)) if comparison is not None else "",
            max_cases=max_cases,
            failures=_failure_groups(targets, comparison, lines, max_cases),
        )
    )


def _flatten(summaries: Mapping[str, Summary]) -> dict[str, TargetSummary]:
    """Label -> target summary: a summary's target named like its key, else its only target, else
    every target as ``label/target``."""
    out: dict[str, TargetSummary] = {}
    for label, s in summaries.items():
        if label in s.targets:
            out[label] = s.targets[label]
        elif len(s.targets) == 1:
            out[label] = next(iter(s.targets.values()))
        else:
            for name, t in s.targets.items():
                out[f"{label}/{name}"] = t
    return out


Row = tuple[str, list[tuple[str, bool]]]


def _row(
    name: str, values: list[float | None], fmt: Callable[[Any], str], best: Literal["max", "min", None]
) -> Row:
    """A row of the side-by-side table, each cell flagged when it holds the best of several values."""
    known = [v for v in values if v is not None]
    pick = (max(known) if best == "max" else min(known)) if known and best and len(known) > 1 else None
    return name, [(fmt(v), v is not None and v == pick) for v in values]


def _count(v: float | None) -> str:
    return f"{v:.0f}"


def _side_by_side(ts: Sequence[TargetSummary]) -> list[Row]:
    rows = [
        _row("Cases", [float(t.cases) for t in ts], _count, None),
        _row("Pass rate", [t.pass_rate if t.decided else None for t in ts], fmt_pct, "max"),
        ("95% CI", [(f"{fmt_pct(t.pass_rate_ci[0])}–{fmt_pct(t.pass_rate_ci[1])}", False) for t in ts]),
        _row("Mean score", [t.mean_score for t in ts], lambda v: "—" if v is None else f"{v:.3f}", "max"),
        _row("Flaky cases", [float(t.flaky) for t in ts], _count, "min"),
        _row("Errored cases", [float(t.errored) for t in ts], _count, "min"),
    ]
    for name in scorer_names(ts):
        rows.append(
            _row(
                f"Scorer {name}",
                [t.scorers[name].pass_rate if name in t.scorers else None for t in ts],
                fmt_pct,
                "max",
            )
        )
    rows += [
        _row("Latency p50", [t.latency_p50_ms for t in ts], fmt_ms, "min"),
        _row("Latency p95", [t.latency_p95_ms for t in ts], fmt_ms, "min"),
        _row("Latency p99", [t.latency_p99_ms for t in ts], fmt_ms, "min"),
        _row("TTFT p50", [t.ttft_p50_ms for t in ts], fmt_ms, "min"),
        _row("Tokens in", [float(t.input_tokens) for t in ts], lambda v: f"{v:,.0f}", None),
        _row("Tokens out", [float(t.output_tokens) for t in ts], lambda v: f"{v:,.0f}", None),
        _row("Cost", [t.cost_usd for t in ts], fmt_usd, "min"),
        _row("Cost per case", [t.cost_per_case_usd for t in ts], fmt_usd, "min"),
    ]
    return rows


def render_compare_html(summaries: Mapping[str, Summary], title: str = "Eval comparison") -> str:
    """Targets side by side (quality, latency, cost; the best value of each row in bold) with a
    pass-rate bar plot and quality-vs-cost and quality-vs-latency scatter plots."""
    targets = _flatten(summaries)
    return (
        environment()
        .get_template("compare.html")
        .render(
            title=title,
            labels=list(targets),
            rows=_side_by_side(list(targets.values())),
            plots=_plots(
                pass_rate_plot(targets),
                quality_cost_plot(targets, "cost"),
                quality_cost_plot(targets, "latency"),
            ),
            no_cost=[k for k, t in targets.items() if t.cost_per_case_usd is None],
        )
    )
