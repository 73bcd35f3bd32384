"""Formatting every reporter shares (terminal, Markdown, JUnit, HTML): numbers, the verdict line,
the per-target rows, and the one-line reason a failed run gives. One set of rules, so that the
same run reads the same in a PR comment, a CI log and a browser."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from shipyard.evals.stats import Comparison, Summary, TargetSummary

Status = Literal["ok", "warn", "bad"]

MAX_MARKDOWN_CASES = 20  # per list in a PR comment: GitHub truncates comments past 65,536 characters
MAX_MESSAGES = 10  # failing-repeat messages kept per case (JUnit, HTML)
MAX_MESSAGE_CHARS = 1000


def fmt_pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def fmt_pp(x: float | None) -> str:
    """A difference of proportions, in percentage points."""
    return "—" if x is None else f"{100 * x:+.1f} pp"


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.0f} ms" if x < 10_000 else f"{x / 1000:.1f} s"


def fmt_usd(x: float | None) -> str:
    if x is None:
        return "—"
    return f"${x:,.2f}" if x >= 1 else f"${x:.4f}"


def fmt_p(x: float) -> str:
    return f"{x:.3g}"


def rate_ci(t: TargetSummary) -> str:
    if not t.decided:
        return f"— (no stable verdict among {t.cases} cases)"
    lo, hi = t.pass_rate_ci
    return f"{fmt_pct(t.pass_rate)} (95% CI {fmt_pct(lo)}–{fmt_pct(hi)}; {t.passed}/{t.decided})"


def scorer_cell(t: TargetSummary, name: str) -> str:
    s = t.scorers.get(name)
    if s is None:
        return "—"
    return f"{fmt_pct(s.pass_rate)} (mean {s.mean:.2f})"


def scorer_names(targets: Iterable[TargetSummary]) -> list[str]:
    return list(dict.fromkeys(name for t in targets for name in t.scorers))


def cost_cell(t: TargetSummary) -> str:
    if t.cost_usd is None:
        return "—"
    return f"{fmt_usd(t.cost_usd)} ({fmt_usd(t.cost_per_case_usd)}/case)"


def one_line(text: str, limit: int) -> str:
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


def target_rows(t: TargetSummary) -> list[tuple[str, str]]:
    rows = [
        ("Cases", f"{t.cases} ({t.runs} runs)"),
        ("Pass rate", rate_ci(t)),
        ("Flaky", str(t.flaky)),
        ("Errors", f"{t.errored} of {t.cases} cases ({t.errored_runs} runs)"),
    ]
    rows += [(f"Scorer {name}", scorer_cell(t, name)) for name in t.scorers]
    rows += [
        (
            "Latency p50 / p95 / p99",
            f"{fmt_ms(t.latency_p50_ms)} / {fmt_ms(t.latency_p95_ms)} / {fmt_ms(t.latency_p99_ms)}",
        ),
        ("TTFT p50", fmt_ms(t.ttft_p50_ms)),
        ("Tokens in / out", f"{t.input_tokens:,} / {t.output_tokens:,}"),
        ("Cost", cost_cell(t)),
        ("Cached runs", str(t.cached)),
    ]
    return rows


# Characters XML 1.0 cannot carry at all (not even escaped): model output sometimes holds them.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: Any) -> str:
    return _XML_ILLEGAL.sub("\ufffd", str(text))


def run_message(line: Mapping[str, Any]) -> str:
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
    return f"repeat {repeat}: " + one_line(text, MAX_MESSAGE_CHARS)
