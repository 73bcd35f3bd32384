"""The Markdown report, written for a PR comment: the verdict first, tables, and capped lists.

Text from the data is made inert (HTML-escaped, Markdown specials backslashed, one line), so a
model's output can neither inject markup into the comment nor break a table.
"""

from __future__ import annotations

import html
import re

from shipyard.evals.report.formatting import (
    MAX_MARKDOWN_CASES,
    cost_cell,
    fmt_ms,
    fmt_p,
    fmt_pct,
    fmt_pp,
    headline,
    one_line,
    rate_ci,
    scorer_cell,
    scorer_names,
)
from shipyard.evals.stats import Comparison, Summary

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~$])")


def _md(text: str, limit: int = 300) -> str:
    """Plain text made inert in GitHub Markdown, on one line (tables and list items)."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(one_line(text, limit), quote=False))


def _code(text: str) -> str:
    """An id as inline code; backticks cannot be escaped inside a code span, pipes must be."""
    return "`" + one_line(text, 120).replace("`", "'").replace("|", "\\|") + "`"


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
            f"| {_code(t.target)} | {t.cases} | {rate_ci(t)} | {t.flaky} | {t.errored} | "
            f"{fmt_ms(t.latency_p50_ms)} / {fmt_ms(t.latency_p95_ms)} | {cost_cell(t)} |"
        )
    scorers = scorer_names(targets)
    if scorers:
        out += ["", "| Scorer | " + " | ".join(_code(t.target) for t in targets) + " |"]
        out.append("|---|" + "---|" * len(targets))
        for name in scorers:
            out.append(f"| {_code(name)} | " + " | ".join(scorer_cell(t, name) for t in targets) + " |")

    if comparison is not None:
        c = comparison
        out += [
            "",
            f"**Against the baseline** ({_code(c.baseline_target)} → {_code(c.target)})",
            "",
            "| | |",
            "|---|---|",
            f"| Pass rate | {fmt_pct(c.baseline_pass_rate)} → {fmt_pct(c.current_pass_rate)} "
            f"({fmt_pp(c.delta_pass_rate)}) |",
            f"| Regressions / improvements | {len(c.regressions)} / {len(c.improvements)} |",
            f"| Unchanged (pass / fail), flaky | {c.unchanged_pass} / {c.unchanged_fail}, {c.flaky} |",
            f"| Only in baseline / only now | {len(c.only_baseline)} / {len(c.only_current)} |",
            f"| McNemar p (one-sided worse / two-sided) | {fmt_p(c.mcnemar_p_worse)} / "
            f"{fmt_p(c.mcnemar_p_two_sided)} |",
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
