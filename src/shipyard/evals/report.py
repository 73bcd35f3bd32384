"""Reports of an eval run: a terminal table (Rich), a Markdown PR comment, JUnit XML for CI test
tabs, and one self-contained HTML file (inline CSS and inline SVG plots, nothing fetched).

Every reporter starts from a :class:`~shipyard.evals.stats.Summary` (and a
:class:`~shipyard.evals.stats.Comparison` when there is a baseline). Those that show per-case detail
(JUnit messages and times, the HTML table of failed cases) also take the ``results.jsonl`` lines as an
iterable and read them once, keeping only what they will print: runs can hold 50,000 cases.

JUnit and flaky cases: a flaky case (its repeats disagree) is written as a *passed* testcase with a
``<system-out>`` note naming the failing repeats. It is not a failure (the stats leave flaky cases out
of the pass rate, and a CI tab should agree), and ``<skipped>`` would claim it did not run. A case
whose every repeat failed is a ``<failure>``, or an ``<error>`` when every repeat's call itself failed
(the target errored, so the scorers never saw an answer).
"""

from __future__ import annotations

import hashlib
import html
import io
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import matplotlib
import numpy as np
import orjson
from matplotlib import ticker
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from shipyard.evals.stats import HISTOGRAM_BINS, Comparison, Summary, TargetSummary

Status = Literal["ok", "warn", "bad"]

MAX_MARKDOWN_CASES = 20  # per list in a PR comment: GitHub truncates comments past 65,536 characters
MAX_HTML_CASES = 50  # failed cases shown per target in the HTML report
MAX_FIELD_CHARS = 2000  # of an input, expected value or output in the HTML report
MAX_MESSAGES = 10  # failing-repeat messages kept per case (JUnit, HTML)
MAX_MESSAGE_CHARS = 1000
MAX_PLOTTED_SCORERS = 12

_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
_GOOD = "#2e7d32"
_BAD = "#c62828"


# --------------------------------------------------------------------------------------------------
# Formatting shared by every reporter
# --------------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _pp(x: float | None) -> str:
    """A difference of proportions, in percentage points."""
    return "—" if x is None else f"{100 * x:+.1f} pp"


def _ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.0f} ms" if x < 10_000 else f"{x / 1000:.1f} s"


def _usd(x: float | None) -> str:
    if x is None:
        return "—"
    return f"${x:,.2f}" if x >= 1 else f"${x:.4f}"


def _p(x: float) -> str:
    return f"{x:.3g}"


def _rate_ci(t: TargetSummary) -> str:
    if not t.decided:
        return f"— (no stable verdict among {t.cases} cases)"
    lo, hi = t.pass_rate_ci
    return f"{_pct(t.pass_rate)} (95% CI {_pct(lo)}–{_pct(hi)}; {t.passed}/{t.decided})"


def _scorer_cell(t: TargetSummary, name: str) -> str:
    s = t.scorers.get(name)
    if s is None:
        return "—"
    return f"{_pct(s.pass_rate)} (mean {s.mean:.2f})"


def _scorer_names(targets: Iterable[TargetSummary]) -> list[str]:
    return list(dict.fromkeys(name for t in targets for name in t.scorers))


def _cost_cell(t: TargetSummary) -> str:
    if t.cost_usd is None:
        return "—"
    return f"{_usd(t.cost_usd)} ({_usd(t.cost_per_case_usd)}/case)"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def headline(summary: Summary, comparison: Comparison | None = None) -> tuple[Status, str]:
    """The verdict every reporter leads with: against the baseline when there is one."""
    if comparison is not None:
        if comparison.worse:
            return "bad", f"Worse than the baseline: {comparison.reason}"
        return "ok", f"No significant regression: {comparison.reason}"
    cases = sum(t.cases for t in summary.targets.values())
    failed = sum(t.failed for t in summary.targets.values())
    flaky = sum(t.flaky for t in summary.targets.values())
    if cases == 0:
        return "warn", "No results"
    if failed == 0 and flaky == 0:
        return "ok", f"All {cases} cases passed"
    parts = [f"{failed} failed"] + ([f"{flaky} flaky"] if flaky else [])
    return ("bad" if failed else "warn"), f"{', '.join(parts)} of {cases} cases"


def _target_rows(t: TargetSummary) -> list[tuple[str, str]]:
    rows = [
        ("Cases", f"{t.cases} ({t.runs} runs)"),
        ("Pass rate", _rate_ci(t)),
        ("Flaky", str(t.flaky)),
        ("Errors", f"{t.errored} of {t.cases} cases ({t.errored_runs} runs)"),
    ]
    rows += [(f"Scorer {name}", _scorer_cell(t, name)) for name in t.scorers]
    rows += [
        (
            "Latency p50 / p95 / p99",
            f"{_ms(t.latency_p50_ms)} / {_ms(t.latency_p95_ms)} / {_ms(t.latency_p99_ms)}",
        ),
        ("TTFT p50", _ms(t.ttft_p50_ms)),
        ("Tokens in / out", f"{t.input_tokens:,} / {t.output_tokens:,}"),
        ("Cost", _cost_cell(t)),
        ("Cached runs", str(t.cached)),
    ]
    return rows


# --------------------------------------------------------------------------------------------------
# Terminal
# --------------------------------------------------------------------------------------------------


def render_terminal(
    summary: Summary,
    comparison: Comparison | None = None,
    console: Console | None = None,
    max_cases: int = MAX_MARKDOWN_CASES,
) -> None:
    """Print one table per target, the verdict and, with a comparison, the regressions.

    Case ids and explanations go in as :class:`~rich.text.Text`, never as markup, so a ``[bold]``
    in a model's output prints as written.
    """
    console = console or Console()
    status, line = headline(summary, comparison)
    style = {"ok": "bold green", "warn": "bold yellow", "bad": "bold red"}[status]
    for t in summary.targets.values():
        table = Table(title=Text(f"{summary.suite or 'eval'} · {t.target}"), show_header=False)
        table.add_column("metric", style="dim", no_wrap=True)  # scorer names stay whole, for grep
        table.add_column("value")
        for k, v in _target_rows(t):
            table.add_row(Text(k), Text(v))
        console.print(table)
    console.print(Text(line, style=style))
    if comparison is not None:
        c = comparison
        console.print(
            Text(
                f"vs baseline `{c.baseline_target}`: pass rate {_pct(c.baseline_pass_rate)} -> "
                f"{_pct(c.current_pass_rate)} ({_pp(c.delta_pass_rate)}), mean score {c.score_delta:+.3f} "
                f"(95% CI {c.score_ci_low:+.3f} to {c.score_ci_high:+.3f}), "
                f"McNemar p={_p(c.mcnemar_p_worse)} one-sided / {_p(c.mcnemar_p_two_sided)} two-sided"
            )
        )
        if c.regressions:
            console.print(Text(f"Regressions ({len(c.regressions)}):", style="bold red"))
            for r in c.regressions[:max_cases]:
                console.print(Text(f"  {r.case}: {_one_line(r.explanation, 200)}"))
            if len(c.regressions) > max_cases:
                console.print(Text(f"  … and {len(c.regressions) - max_cases} more"))
        if c.improvements:
            ids = ", ".join(r.case for r in c.improvements[:max_cases])
            more = f" and {len(c.improvements) - max_cases} more" if len(c.improvements) > max_cases else ""
            console.print(Text(f"Improvements ({len(c.improvements)}): {ids}{more}", style="green"))
    else:
        failures = [(t.target, f) for t in summary.targets.values() for f in t.failures]
        if failures:
            group = [
                Text(f"  [{target}] {f.case} ({f.verdict}): {_one_line(f.explanation, 200)}")
                for target, f in failures[:max_cases]
            ]
            if len(failures) > max_cases:
                group.append(Text(f"  … and {len(failures) - max_cases} more"))
            console.print(Group(*group))


# --------------------------------------------------------------------------------------------------
# Markdown (PR comments)
# --------------------------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~$])")


def _md(text: str, limit: int = 300) -> str:
    """Plain text made inert in GitHub Markdown, on one line (tables and list items)."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(_one_line(text, limit), quote=False))


def _code(text: str) -> str:
    """An id as inline code; backticks cannot be escaped inside a code span, pipes must be."""
    return "`" + _one_line(text, 120).replace("`", "'").replace("|", "\\|") + "`"


def render_markdown(
    summary: Summary, comparison: Comparison | None = None, max_cases: int = MAX_MARKDOWN_CASES
) -> str:
    """A PR comment: the verdict, a table of targets, per-scorer pass rates, the comparison with
    its regressions and improvements, and the failed cases (each list capped at ``max_cases``)."""
    status, line = headline(summary, comparison)
    icon = {"ok": "✅", "warn": "⚠️", "bad": "❌"}[status]
    out: list[str] = [f"### {icon} Eval {_code(summary.suite or 'eval')}: {_md(line, 600)}", ""]
    targets = list(summary.targets.values())

    out += [
        "| Target | Cases | Pass rate (95% CI) | Flaky | Errors | Latency p50 / p95 | Cost |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    for t in targets:
        out.append(
            f"| {_code(t.target)} | {t.cases} | {_rate_ci(t)} | {t.flaky} | {t.errored} | "
            f"{_ms(t.latency_p50_ms)} / {_ms(t.latency_p95_ms)} | {_cost_cell(t)} |"
        )
    scorers = _scorer_names(targets)
    if scorers:
        out += ["", "| Scorer | " + " | ".join(_code(t.target) for t in targets) + " |"]
        out.append("|---|" + "---|" * len(targets))
        for name in scorers:
            out.append(f"| {_code(name)} | " + " | ".join(_scorer_cell(t, name) for t in targets) + " |")

    if comparison is not None:
        c = comparison
        out += [
            "",
            f"**Against the baseline** ({_code(c.baseline_target)} → {_code(c.target)})",
            "",
            "| | |",
            "|---|---|",
            f"| Pass rate | {_pct(c.baseline_pass_rate)} → {_pct(c.current_pass_rate)} "
            f"({_pp(c.delta_pass_rate)}) |",
            f"| Regressions / improvements | {len(c.regressions)} / {len(c.improvements)} |",
            f"| Unchanged (pass / fail), flaky | {c.unchanged_pass} / {c.unchanged_fail}, {c.flaky} |",
            f"| Only in baseline / only now | {len(c.only_baseline)} / {len(c.only_current)} |",
            f"| McNemar p (one-sided worse / two-sided) | {_p(c.mcnemar_p_worse)} / "
            f"{_p(c.mcnemar_p_two_sided)} |",
            f"| Mean score Δ (95% bootstrap CI), P(worse) | {c.score_delta:+.3f} "
            f"({c.score_ci_low:+.3f} to {c.score_ci_high:+.3f}), {c.score_p_worse:.2f} |",
        ]
        for title, changes in (("Regressions", c.regressions), ("Improvements", c.improvements)):
            if not changes:
                continue
            out += ["", f"**{title}** ({len(changes)})", ""]
            for ch in changes[:max_cases]:
                why = f" — {_md(ch.explanation)}" if ch.explanation else ""
                out.append(f"- {_code(ch.case)}{why}")
            if len(changes) > max_cases:
                out.append(f"- … and {len(changes) - max_cases} more")

    failures = [(t.target, f) for t in targets for f in t.failures]
    if failures:
        out += ["", f"<details><summary>Failed and flaky cases ({len(failures)})</summary>", ""]
        many = len(targets) > 1
        for target, f in failures[:max_cases]:
            where = f"{_code(target)} " if many else ""
            runs = f", {f.failed_runs}/{f.runs} runs failed" if f.runs > 1 else ""
            out.append(f"- {where}{_code(f.case)} ({f.verdict}{runs}) — {_md(f.explanation)}")
        if len(failures) > max_cases:
            out.append(f"- … and {len(failures) - max_cases} more")
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------
# Per-case detail streamed from results.jsonl
# --------------------------------------------------------------------------------------------------


def _run_message(line: Mapping[str, Any]) -> str:
    """Why one run failed, in full (capped): the call's error or every failing scorer."""
    obs = line.get("observation") or {}
    repeat = line.get("repeat", 0)
    parts: list[str] = []
    if obs.get("error"):
        parts.append(f"error: {obs['error']}")
    for name, s in (line.get("scores") or {}).items():
        if isinstance(s, Mapping) and not s.get("passed", False):
            value = s.get("value")
            shown = f" ({value:.3g})" if isinstance(value, int | float) else ""
            parts.append(f"{name}{shown}: {s.get('explanation') or 'failed'}")
    text = "; ".join(parts) or "failed"
    return f"repeat {repeat}: " + _one_line(text, MAX_MESSAGE_CHARS)


@dataclass(slots=True)
class _CaseDetail:
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


# --------------------------------------------------------------------------------------------------
# JUnit XML
# --------------------------------------------------------------------------------------------------

# Characters XML 1.0 cannot carry at all (not even escaped): model output sometimes holds them.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: Any) -> str:
    return _XML_ILLEGAL.sub("\ufffd", str(text))


def render_junit(summary: Summary, lines: Iterable[Mapping[str, Any]] | None = None) -> str:
    """JUnit XML: one ``<testsuite>`` per target, one ``<testcase>`` per case (classname
    ``suite/target``, name = case id, time = the case's summed latency over its repeats).

    ``lines`` (the run's result lines, read once) supply times and the full message of every
    failing repeat; without them the testcases carry the summary's first explanation and no time.
    Flaky cases pass with a ``<system-out>`` note (see the module docstring); a case whose every
    repeat's call failed is an ``<error>``, any other failing case a ``<failure>``.
    """
    failures = {name: {f.case: f for f in t.failures} for name, t in summary.targets.items()}
    times: dict[str, dict[str, float]] = {name: {} for name in summary.targets}
    messages: dict[str, dict[str, list[str]]] = {name: {} for name in summary.targets}
    for line in lines or ():
        target = str(line.get("target") or "default")
        case = str(line.get("case"))
        if target not in times or case not in summary.targets[target].verdicts:
            continue
        obs = line.get("observation") or {}
        latency = obs.get("latency_ms")
        # JUnit times are non-negative decimals: a NaN or a clock step backwards must not leak in.
        if isinstance(latency, int | float) and math.isfinite(latency) and latency > 0:
            times[target][case] = times[target].get(case, 0.0) + latency / 1000.0
        if not line.get("passed") and case in failures[target]:
            kept = messages[target].setdefault(case, [])
            if len(kept) < MAX_MESSAGES:
                kept.append(_run_message(line))

    suite_name = summary.suite or "eval"
    root = ET.Element("testsuites", name=_xml(suite_name))
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    for name, t in summary.targets.items():
        classname = _xml(f"{suite_name}/{name}")
        n_errors = sum(1 for f in t.failures if f.verdict == "fail" and f.errored_runs == f.runs)
        n_failures = t.failed - n_errors
        suite_time = sum(times[name].values())
        ts = ET.SubElement(
            root,
            "testsuite",
            name=classname,
            tests=str(t.cases),
            failures=str(n_failures),
            errors=str(n_errors),
            skipped="0",
            time=f"{suite_time:.3f}",
        )
        props = ET.SubElement(ts, "properties")
        lo, hi = t.pass_rate_ci
        for key, value in (
            ("pass_rate", f"{t.pass_rate:.4f}" if t.decided else ""),
            ("pass_rate_ci_95", f"{lo:.4f}-{hi:.4f}"),
            ("flaky", str(t.flaky)),
            ("runs", str(t.runs)),
            ("latency_p95_ms", "" if t.latency_p95_ms is None else f"{t.latency_p95_ms:.1f}"),
            ("cost_usd", "" if t.cost_usd is None else f"{t.cost_usd:.6f}"),
        ):
            ET.SubElement(props, "property", name=key, value=value)
        for case, verdict in t.verdicts.items():
            tc = ET.SubElement(
                ts, "testcase", classname=classname, name=_xml(case), time=f"{times[name].get(case, 0.0):.3f}"
            )
            if verdict == "pass":
                continue
            f = failures[name][case]
            body = "\n".join(messages[name].get(case) or [f.explanation])
            if verdict == "flaky":
                out = ET.SubElement(tc, "system-out")
                out.text = _xml(
                    f"FLAKY: {f.runs - f.failed_runs} of {f.runs} repeats passed; reported as passed.\n{body}"
                )
            elif f.errored_runs == f.runs:
                err = ET.SubElement(tc, "error", message=_xml(f.explanation), type="error")
                err.text = _xml(body)
            else:
                fail = ET.SubElement(tc, "failure", message=_xml(f.explanation), type="failure")
                fail.text = _xml(body)
        totals["tests"] += t.cases
        totals["failures"] += n_failures
        totals["errors"] += n_errors
        total_time += suite_time
    for key, count in totals.items():
        root.set(key, str(count))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# --------------------------------------------------------------------------------------------------
# Plots (matplotlib, object-oriented API only: no pyplot, so no global figure registry to leak)
# --------------------------------------------------------------------------------------------------

_SVG_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_SVG_NS = re.compile(r'\s+xmlns(?::xlink)?="[^"]*"')
_SVG_STAR_STYLE = re.compile(r"<style[^>]*>\*\{[^}]*\}</style>")
_SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def _label(text: str) -> str:
    """Plot labels: ``$`` would start matplotlib's mathtext parser (and fail on unbalanced input)."""
    return _one_line(text, 40).replace("$", r"\$")


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
    names = _scorer_names(targets.values())[:MAX_PLOTTED_SCORERS]
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
    names = _scorer_names(targets.values())[:MAX_PLOTTED_SCORERS]
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


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------

_CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --bg: #ffffff; --soft: #f5f7fa;
        --ok: #2e7d32; --warn: #b26a00; --bad: #c62828; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0 auto; padding: 24px; max-width: 1200px; }
h1 { font-size: 22px; margin: 0 0 6px; } h2 { font-size: 17px; margin: 28px 0 10px; }
.verdict { font-weight: 600; padding: 10px 14px; border-radius: 6px; border-left: 5px solid; }
.verdict.ok { border-color: var(--ok); background: #e8f5e9; }
.verdict.warn { border-color: var(--warn); background: #fff4e0; }
.verdict.bad { border-color: var(--bad); background: #fdecea; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; }
th, td { border: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: 700; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; max-height: 16em; overflow: auto;
      font: 12px/1.35 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.muted { color: var(--muted); }
.tag { display: inline-block; padding: 0 6px; border-radius: 4px; font-size: 12px; font-weight: 600; }
.tag.fail { background: #fdecea; color: var(--bad); } .tag.flaky { background: #fff4e0; color: var(--warn); }
.plots { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
svg.plot { max-width: 100%; height: auto; }
svg.plot * { stroke-linejoin: round; stroke-linecap: butt; }
ul.cases li { margin: 2px 0; }
"""


def _e(text: Any) -> str:
    """HTML-escaped, with control characters (which HTML forbids, and model output may hold) replaced."""
    return html.escape(_xml(text), quote=True)


def _page(title: str, body: list[str]) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + '\n<footer class="muted"><p>Generated by Shipyard. Self-contained: no scripts, nothing fetched.'
        "</p></footer>\n</body>\n</html>\n"
    )


def _targets_table(targets: Sequence[TargetSummary]) -> str:
    head = (
        "<tr><th>Target</th><th>Cases</th><th>Pass rate (95% CI)</th><th>Flaky</th><th>Errors</th>"
        "<th>Latency p50 / p95 / p99</th><th>TTFT p50</th><th>Tokens in / out</th><th>Cost</th>"
        "<th>Cached</th></tr>"
    )
    rows = [
        f"<tr><td>{_e(t.target)}</td><td class=num>{t.cases}</td><td>{_e(_rate_ci(t))}</td>"
        f"<td class=num>{t.flaky}</td><td class=num>{t.errored}</td>"
        f"<td>{_e(_ms(t.latency_p50_ms))} / {_e(_ms(t.latency_p95_ms))} / {_e(_ms(t.latency_p99_ms))}</td>"
        f"<td>{_e(_ms(t.ttft_p50_ms))}</td><td class=num>{t.input_tokens:,} / {t.output_tokens:,}</td>"
        f"<td>{_e(_cost_cell(t))}</td><td class=num>{t.cached}</td></tr>"
        for t in targets
    ]
    return f"<table>{head}{''.join(rows)}</table>"


def _scorers_table(targets: Sequence[TargetSummary]) -> str:
    names = _scorer_names(targets)
    if not names:
        return ""
    head = "<tr><th>Scorer</th>" + "".join(f"<th>{_e(t.target)}</th>" for t in targets) + "</tr>"
    rows = [
        f"<tr><td>{_e(n)}</td>" + "".join(f"<td>{_e(_scorer_cell(t, n))}</td>" for t in targets) + "</tr>"
        for n in names
    ]
    return f"<table>{head}{''.join(rows)}</table>"


def _comparison_html(c: Comparison, max_cases: int) -> list[str]:
    out = [
        f"<h2>Against the baseline <span class=muted>({_e(c.baseline_target)} → {_e(c.target)})</span></h2>",
        "<table>",
        f"<tr><th>Pass rate</th><td>{_pct(c.baseline_pass_rate)} → {_pct(c.current_pass_rate)} "
        f"({_e(_pp(c.delta_pass_rate))})</td></tr>",
        f"<tr><th>Regressions / improvements</th><td>{len(c.regressions)} / {len(c.improvements)}</td></tr>",
        f"<tr><th>Unchanged pass / fail; flaky</th><td>{c.unchanged_pass} / {c.unchanged_fail}; "
        f"{c.flaky}</td></tr>",
        f"<tr><th>Only in baseline / only now</th><td>{len(c.only_baseline)} / "
        f"{len(c.only_current)}</td></tr>",
        f"<tr><th>McNemar p (one-sided worse / two-sided)</th><td>{_p(c.mcnemar_p_worse)} / "
        f"{_p(c.mcnemar_p_two_sided)} (gate: one-sided &lt; {c.alpha:g})</td></tr>",
        f"<tr><th>Mean score Δ (95% paired bootstrap CI)</th><td>{c.score_delta:+.3f} "
        f"({c.score_ci_low:+.3f} to {c.score_ci_high:+.3f}); P(worse) {c.score_p_worse:.2f}</td></tr>",
        "</table>",
        f'<div class="plots">{delta_plot(c)}</div>',
    ]
    for title, changes in (("Regressions", c.regressions), ("Improvements", c.improvements)):
        if not changes:
            continue
        out.append(f"<h3>{title} ({len(changes)})</h3><ul class=cases>")
        out += [
            f"<li><code>{_e(ch.case)}</code>"
            + (f" — {_e(ch.explanation)}" if ch.explanation else "")
            + "</li>"
            for ch in changes[:max_cases]
        ]
        if len(changes) > max_cases:
            out.append(f"<li class=muted>… and {len(changes) - max_cases} more</li>")
        out.append("</ul>")
    return out


def _collect_details(
    wanted: Mapping[str, Sequence[str]], lines: Iterable[Mapping[str, Any]] | None
) -> dict[tuple[str, str], _CaseDetail]:
    """One pass over the lines, keeping the first failing run of each wanted (target, case)."""
    keys = {(target, case) for target, cases in wanted.items() for case in cases}
    details: dict[tuple[str, str], _CaseDetail] = {}
    for line in lines or ():
        key = (str(line.get("target") or "default"), str(line.get("case")))
        if key not in keys or line.get("passed"):
            continue
        d = details.get(key)
        if d is None:
            obs = line.get("observation") or {}
            d = details[key] = _CaseDetail(
                input=_show(line.get("input")),
                expected=_show(line.get("expected")),
                output=_show(obs.get("output")),
            )
        if len(d.messages) < MAX_MESSAGES:
            d.messages.append(_run_message(line))
    return details


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
    status, line = headline(summary, comparison)
    targets = list(summary.targets.values())
    body = [f"<h1>{_e(title)}</h1>", f'<p class="verdict {status}">{_e(line)}</p>']
    body += ["<h2>Targets</h2>", _targets_table(targets)]
    by_label = {t.target: t for t in targets}
    plots = [pass_rate_plot(by_label), score_distribution_plot(by_label)]
    body += ["<h2>Scorers</h2>", _scorers_table(targets), '<div class="plots">' + "".join(plots) + "</div>"]
    if comparison is not None:
        body += _comparison_html(comparison, max_cases)

    shown: dict[str, list[str]] = {}
    for t in targets:
        first = (
            [r.case for r in comparison.regressions] if comparison and comparison.target == t.target else []
        )
        failing = {f.case for f in t.failures}
        order = [c for c in first if c in failing] + [f.case for f in t.failures]
        shown[t.target] = list(dict.fromkeys(order))[:max_cases]
    details = _collect_details(shown, lines)
    if any(t.failures for t in targets):
        body.append("<h2>Failed and flaky cases</h2>")
    for t in targets:
        if not t.failures:
            continue
        by_case = {f.case: f for f in t.failures}
        body.append(f"<h3>{_e(t.target)} <span class=muted>({len(t.failures)})</span></h3>")
        body.append("<table><tr><th>Case</th><th>Input</th><th>Expected</th><th>Output</th><th>Why</th></tr>")
        for case in shown[t.target]:
            f = by_case[case]
            d = details.get((t.target, case))
            why = d.messages if d and d.messages else [f.explanation]
            runs = f"<br><span class=muted>{f.failed_runs}/{f.runs} runs failed</span>" if f.runs > 1 else ""
            body.append(
                f"<tr><td><code>{_e(case)}</code><br>"
                f"<span class='tag {f.verdict}'>{f.verdict}</span>{runs}</td>"
                f"<td><pre>{_e(d.input if d else '')}</pre></td>"
                f"<td><pre>{_e(d.expected if d else '')}</pre></td>"
                f"<td><pre>{_e(d.output if d else '')}</pre></td>"
                f"<td><pre>{_e(chr(10).join(why))}</pre></td></tr>"
            )
        body.append("</table>")
        hidden = len(t.failures) - len(shown[t.target])
        if hidden > 0:
            body.append(f"<p class=muted>{hidden} more not shown; every run is in results.jsonl.</p>")
    return _page(title, body)


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


def render_compare_html(summaries: Mapping[str, Summary], title: str = "Eval comparison") -> str:
    """Targets side by side (quality, latency, cost; the best value of each row in bold) with a
    pass-rate bar plot and quality-vs-cost and quality-vs-latency scatter plots."""
    targets = _flatten(summaries)
    labels = list(targets)

    def row(name: str, values: list[float | None], fmt: Any, best: Literal["max", "min", None]) -> str:
        known = [v for v in values if v is not None]
        pick = (max(known) if best == "max" else min(known)) if known and best and len(known) > 1 else None
        cells = "".join(
            f'<td class="num{" best" if v is not None and v == pick else ""}">{_e(fmt(v))}</td>'
            for v in values
        )
        return f"<tr><th>{_e(name)}</th>{cells}</tr>"

    ts = [targets[k] for k in labels]
    rows = [
        "<tr><th></th>" + "".join(f"<th>{_e(k)}</th>" for k in labels) + "</tr>",
        row("Cases", [float(t.cases) for t in ts], lambda v: f"{v:.0f}", None),
        row("Pass rate", [t.pass_rate if t.decided else None for t in ts], _pct, "max"),
        "<tr><th>95% CI</th>"
        + "".join(f"<td class=num>{_pct(t.pass_rate_ci[0])}–{_pct(t.pass_rate_ci[1])}</td>" for t in ts)
        + "</tr>",
        row("Mean score", [t.mean_score for t in ts], lambda v: "—" if v is None else f"{v:.3f}", "max"),
        row("Flaky cases", [float(t.flaky) for t in ts], lambda v: f"{v:.0f}", "min"),
        row("Errored cases", [float(t.errored) for t in ts], lambda v: f"{v:.0f}", "min"),
    ]
    for name in _scorer_names(ts):
        rows.append(
            row(
                f"Scorer {name}",
                [t.scorers[name].pass_rate if name in t.scorers else None for t in ts],
                _pct,
                "max",
            )
        )
    rows += [
        row("Latency p50", [t.latency_p50_ms for t in ts], _ms, "min"),
        row("Latency p95", [t.latency_p95_ms for t in ts], _ms, "min"),
        row("Latency p99", [t.latency_p99_ms for t in ts], _ms, "min"),
        row("TTFT p50", [t.ttft_p50_ms for t in ts], _ms, "min"),
        row("Tokens in", [float(t.input_tokens) for t in ts], lambda v: f"{v:,.0f}", None),
        row("Tokens out", [float(t.output_tokens) for t in ts], lambda v: f"{v:,.0f}", None),
        row("Cost", [t.cost_usd for t in ts], _usd, "min"),
        row("Cost per case", [t.cost_per_case_usd for t in ts], _usd, "min"),
    ]
    body = [f"<h1>{_e(title)}</h1>", "<h2>Side by side</h2>", "<table>" + "".join(rows) + "</table>"]
    plots = [
        pass_rate_plot(targets),
        quality_cost_plot(targets, "cost"),
        quality_cost_plot(targets, "latency"),
    ]
    body += [
        "<h2>Quality, cost and latency</h2>",
        '<div class="plots">' + "".join(p for p in plots if p) + "</div>",
    ]
    no_cost = [k for k, t in targets.items() if t.cost_per_case_usd is None]
    if no_cost:
        body.append(
            f"<p class=muted>No cost reported (left out of the cost plot): {_e(', '.join(no_cost))}</p>"
        )
    return _page(title, body)
