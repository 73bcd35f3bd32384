"""The terminal report: one Rich table per target, the verdict and, with a baseline, the changes."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from shipyard.evals.report.formatting import (
    MAX_MARKDOWN_CASES,
    fmt_p,
    fmt_pct,
    fmt_pp,
    headline,
    one_line,
    target_rows,
)
from shipyard.evals.stats import Comparison, Summary


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
        for k, v in target_rows(t):
            table.add_row(Text(k), Text(v))
        console.print(table)
    console.print(Text(line, style=style))
    if comparison is not None:
        c = comparison
        console.print(
            Text(
                f"vs baseline `{c.baseline_target}`: pass rate {fmt_pct(c.baseline_pass_rate)} -> "
                f"{fmt_pct(c.current_pass_rate)} ({fmt_pp(c.delta_pass_rate)}), "
                f"mean score {c.score_delta:+.3f} "
                f"(95% CI {c.score_ci_low:+.3f} to {c.score_ci_high:+.3f}), "
                f"McNemar p={fmt_p(c.mcnemar_p_worse)} one-sided / {fmt_p(c.mcnemar_p_two_sided)} two-sided"
            )
        )
        if c.regressions:
            console.print(Text(f"Regressions ({len(c.regressions)}):", style="bold red"))
            for r in c.regressions[:max_cases]:
                console.print(Text(f"  {r.case}: {one_line(r.explanation, 200)}"))
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
                Text(f"  [{target}] {f.case} ({f.verdict}): {one_line(f.explanation, 200)}")
                for target, f in failures[:max_cases]
            ]
            if len(failures) > max_cases:
                group.append(Text(f"  … and {len(failures) - max_cases} more"))
            console.print(Group(*group))
