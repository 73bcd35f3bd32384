"""Reports of an eval run: a terminal table (Rich), a Markdown PR comment, JUnit XML for CI test
tabs, and self-contained HTML pages (inline CSS and inline SVG plots, nothing fetched).

Every reporter starts from a :class:`~shipyard.evals.stats.Summary` (and a
:class:`~shipyard.evals.stats.Comparison` when there is a baseline). Those that show per-case detail
(JUnit messages and times, the HTML table of failed cases) also take the ``results.jsonl`` lines as
an iterable and read them once, keeping only what they will print: runs can hold 50,000 cases.

One module per output: ``terminal``, ``markdown``, ``junit``, ``pages`` (HTML, from the Jinja2
templates in ``evals/templates/``) and ``plots`` (the pages' SVG); ``formatting`` is what they share.
"""

from __future__ import annotations

from shipyard.evals.report.formatting import (
    MAX_MARKDOWN_CASES,
    MAX_MESSAGE_CHARS,
    MAX_MESSAGES,
    Status,
    headline,
)
from shipyard.evals.report.junit import render_junit
from shipyard.evals.report.markdown import render_markdown
from shipyard.evals.report.pages import MAX_FIELD_CHARS, MAX_HTML_CASES, render_compare_html, render_html
from shipyard.evals.report.plots import (
    MAX_PLOTTED_SCORERS,
    delta_plot,
    pass_rate_plot,
    quality_cost_plot,
    score_distribution_plot,
)
from shipyard.evals.report.terminal import render_terminal

__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_HTML_CASES",
    "MAX_MARKDOWN_CASES",
    "MAX_MESSAGES",
    "MAX_MESSAGE_CHARS",
    "MAX_PLOTTED_SCORERS",
    "Status",
    "delta_plot",
    "headline",
    "pass_rate_plot",
    "quality_cost_plot",
    "render_compare_html",
    "render_html",
    "render_junit",
    "render_markdown",
    "render_terminal",
    "score_distribution_plot",
]
