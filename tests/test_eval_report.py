"""Eval reports: Markdown for PR comments, JUnit XML checked against a JUnit schema, a
self-contained HTML page with inline SVG plots, the terminal tables and the side-by-side comparison,
and the HTML report as the dashboard and the API serve it, drawn in Chromium."""

from __future__ import annotations

import io
import re
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

import matplotlib
import pytest
import xmlschema
from rich.console import Console

from shipyard.evals import report
from shipyard.evals.stats import Comparison, Summary, compare, summarize
from shipyard.gateway.http_headers import REPORT_CSP
from tests import web_helpers
from tests.web_helpers import Dashboard

browser, empty_dashboard = web_helpers.browser, web_helpers.empty_dashboard

XSD = Path(__file__).parent / "data" / "junit.xsd"
NASTY = "<script>alert(1)</script> | [bold]x[/bold] $x$ `tick`"


def line(case: str, passed: bool, target: str = "small", repeat: int = 0, **obs: Any) -> dict[str, Any]:
    """A result line with two scorers; `exact` decides the verdict, `sim` is informative."""
    observation = {
        "output": obs.pop("output", f"answer to {case}"),
        "latency_ms": obs.pop("latency_ms", 250.0),
        "ttft_ms": 40.0,
        "input_tokens": 12,
        "output_tokens": 7,
        "cost_usd": obs.pop("cost_usd", 0.002),
        "error": obs.pop("error", None),
        "trace_id": None,
        "model": "m",
        "cached": False,
    }
    return {
        "case": case,
        "repeat": repeat,
        "target": target,
        "input": {"question": f"what is {case}?"},
        "expected": f"expected {case}",
        "observation": observation,
        "scores": {
            "exact": {"value": 1.0 if passed else 0.0, "passed": passed, "explanation": f"{case}: {NASTY}"},
            "sim": {"value": 0.8 if passed else 0.3, "passed": True, "explanation": "close enough"},
        },
        "passed": passed and observation["error"] is None,
    }


def run_lines(
    failing: Collection[str],
    flaky: Collection[str] = (),
    errored: Collection[str] = (),
    target: str = "small",
) -> list[dict[str, Any]]:
    """30 cases x 2 repeats; flaky cases fail their second repeat only."""
    out = []
    for r in range(2):
        for i in range(30):
            c = f"case-{i}"
            passed = c not in failing and c not in errored and not (c in flaky and r == 1)
            out.append(
                line(
                    c,
                    passed,
                    target,
                    r,
                    error="upstream timed out" if c in errored else None,
                    output=f"out {NASTY}\x00\x1b",
                    latency_ms=100.0 + i,
                )
            )
    return out


@pytest.fixture()
def current_lines() -> list[dict[str, Any]]:
    return run_lines({f"case-{i}" for i in (2, 4, 6, 7, 8, 1)}, flaky={"case-9"}, errored={"case-3"})


@pytest.fixture()
def current(current_lines: list[dict[str, Any]]) -> Summary:
    return summarize(current_lines, suite="qa")


@pytest.fixture()
def comparison(current: Summary) -> Comparison:
    baseline = summarize(run_lines({"case-1"}), suite="qa")
    return compare(baseline, current)


def test_headline(current: Summary, comparison: Comparison) -> None:
    assert comparison.worse
    status, text = report.headline(current, comparison)
    assert status == "bad" and text.startswith("Worse than the baseline: 6 regressions vs 0 improvements")
    assert report.headline(current) == ("bad", "7 failed, 1 flaky of 30 cases")
    clean = summarize(run_lines(set()), suite="qa")
    assert report.headline(clean) == ("ok", "All 30 cases passed")


def test_markdown_has_verdict_table_regressions_and_failures(
    current: Summary, comparison: Comparison
) -> None:
    md = report.render_markdown(current, comparison, max_cases=4)
    first = md.splitlines()[0]
    assert first.startswith("### ❌ Eval `qa`: Worse than the baseline: 6 regressions vs 0 improvements")
    assert "| `small` | 30 | 75.9% (95% CI" in md  # 22 of 29 decided cases; the flaky one is apart
    assert "| `exact` | 75.0% (mean 0.75) |" in md
    assert "**Regressions** (6)" in md
    for case in ("case-2", "case-3", "case-4", "case-6"):
        assert f"- `{case}` — " in md
    assert "- … and 2 more" in md  # regressions capped at 4
    assert "Failed and flaky cases (8)" in md
    full = report.render_markdown(current, comparison)
    assert "- `case-9` (flaky, 1/2 runs failed)" in full
    assert "- `case-3` (fail, 2/2 runs failed) — error: upstream timed out" in full
    # Text from the data cannot inject markup, break a table or start math.
    assert "<script>" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt; \\| \\[bold\\]x\\[/bold\\] \\$x\\$ \\`tick\\`" in md


def test_markdown_without_baseline(current: Summary) -> None:
    md = report.render_markdown(current)
    assert md.startswith("### ❌ Eval `qa`: 7 failed, 1 flaky of 30 cases")
    assert "Against the baseline" not in md


def _junit(summary: Summary, lines: list[dict[str, Any]] | None) -> ET.Element:
    xml = report.render_junit(summary, iter(lines) if lines is not None else None)
    xmlschema.XMLSchema(str(XSD)).validate(xml)  # raises with the offending path when invalid
    return ET.fromstring(xml.encode())


def test_junit_schema_rejects_what_ci_tools_would() -> None:
    schema = xmlschema.XMLSchema(str(XSD))
    assert schema.is_valid(
        '<testsuites><testsuite name="s" tests="1"><testcase name="a"/></testsuite></testsuites>'
    )
    assert not schema.is_valid(
        '<testsuites><testsuite name="s" tests="1"><testcase/></testsuite></testsuites>'
    )
    assert not schema.is_valid('<testsuite name="s" tests="1"><testcase name="a" time="NaN"/></testsuite>')
    assert not schema.is_valid('<testsuite name="s" tests="-1"/>')
    bad_order = '<testsuite name="s" tests="1"><testcase name="a"><failure/><skipped/></testcase></testsuite>'
    assert not schema.is_valid(bad_order)


def test_junit_validates_and_counts_match(current: Summary, current_lines: list[dict[str, Any]]) -> None:
    root = _junit(current, current_lines)
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert suite.get("name") == "qa/small"
    assert len(cases) == int(suite.get("tests", "")) == 30
    failures = [c for c in cases if c.find("failure") is not None]
    errors = [c for c in cases if c.find("error") is not None]
    assert len(failures) == int(suite.get("failures", "")) == 6
    assert len(errors) == int(suite.get("errors", "")) == 1  # every repeat's call failed
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("30", "6", "1")
    by_name = {c.get("name"): c for c in cases}
    assert {c.get("classname") for c in cases} == {"qa/small"}
    # time = the case's latency summed over its two repeats
    assert by_name["case-5"].get("time") == "0.210"
    assert float(suite.get("time", "")) == pytest.approx(
        sum(2 * (100 + i) for i in range(30)) / 1000, abs=1e-3
    )
    failure = by_name["case-2"].find("failure")
    assert failure is not None
    assert failure.get("message", "").startswith("exact: case-2: <script>alert(1)</script>")
    assert (failure.text or "").count("repeat ") == 2
    error = by_name["case-3"].find("error")
    assert error is not None and "upstream timed out" in error.get("message", "")
    # Flaky: passed, with a note.
    flaky = by_name["case-9"]
    assert flaky.find("failure") is None and flaky.find("error") is None and flaky.find("skipped") is None
    assert (flaky.findtext("system-out") or "").startswith("FLAKY: 1 of 2 repeats passed")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["flaky"] == "1" and props["pass_rate"] == "0.7586"


def test_junit_without_lines_and_with_several_targets() -> None:
    lines = run_lines({"case-0"}, target="a") + run_lines(set(), target="b")
    summary = summarize(lines, suite="multi")
    root = _junit(summary, None)
    assert [s.get("name") for s in root.findall("testsuite")] == ["multi/a", "multi/b"]
    assert root.get("tests") == "60" and root.get("failures") == "1"
    failure = root.find(".//testcase[@name='case-0']/failure")
    assert failure is not None and failure.text == summary.targets["a"].failures[0].explanation


def test_junit_survives_what_xml_cannot_carry() -> None:
    odd = [
        line("bad\x00id\x1b", False, output="\x07"),
        line("bad\x00id\x1b", False, repeat=1, latency_ms=float("nan")),
        line("clock", True, latency_ms=-5.0),
    ]
    summary = summarize(odd, suite="s\x01")
    root = _junit(summary, odd)  # control characters, NaN and negative latencies: still valid
    names = [c.get("name") for c in root.iter("testcase")]
    assert names == ["bad\ufffdid\ufffd", "clock"]
    assert [c.get("time") for c in root.iter("testcase")] == ["0.250", "0.000"]
    assert summary.target().latency_p50_ms == pytest.approx((250.0 - 5.0) / 2)  # NaN is no timing


def test_html_is_self_contained_with_inline_plots(
    current: Summary, comparison: Comparison, current_lines: list[dict[str, Any]]
) -> None:
    before_rc = dict(matplotlib.rcParams)
    page = report.render_html(current, comparison, iter(current_lines), title="QA <report>")
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<title>QA &lt;report&gt;</title>" in page
    assert page.count("<svg") == 3  # pass rates, score distributions, deltas vs the baseline
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<script|<link|@import|<iframe|<img", page, re.I)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "\x00" not in page and "\x1b" not in page
    # Several plots in one document: every id is unique and every reference resolves.
    ids = re.findall(r' id="([^"]+)"', page)
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    refs = set(re.findall(r"url\(#([^)]+)\)", page)) | set(re.findall(r'href="#([^"]+)"', page))
    assert refs <= set(ids)
    assert "Worse than the baseline" in page
    # Failed cases: input, expected and output from the lines, regressions first.
    table = page[page.index("<h2>Failed and flaky cases</h2>") :]
    assert table.index("<code>case-2</code>") < table.index("<code>case-1</code>")
    assert "&quot;question&quot;: &quot;what is case-2?&quot;" in table
    assert "expected case-2" in table
    assert "error: upstream timed out" in table
    assert dict(matplotlib.rcParams) == before_rc
    # Reproducible: the same data renders to the same bytes.
    assert report.render_html(current, comparison, iter(current_lines), title="QA <report>") == page


def test_html_escapes_names_drawn_inside_the_plots() -> None:
    # Target and scorer names come from the suite file; the plots' SVG is inlined as markup.
    name = "<script>alert(1)</script>&"
    summary = summarize(run_lines({"case-1"}, target=name), suite="qa")
    for page in (report.render_html(summary), report.render_compare_html({name: summary})):
        assert "<script" not in page and "&lt;script&gt;" in page


def test_html_caps_failed_cases_and_needs_no_lines(current: Summary) -> None:
    page = report.render_html(current, max_cases=3)
    assert page.count("<svg") == 2  # no comparison, no delta plot
    table = page[page.index("<h2>Failed and flaky cases</h2>") :]
    assert table.count("<tr><td><code>") == 3
    assert "5 more not shown" in table


def test_plots_leave_no_pyplot_figures(current: Summary, comparison: Comparison) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    report.render_html(current, comparison)
    report.render_compare_html({"small": current})
    assert plt.get_fignums() == before


def test_terminal_tables_and_regressions(current: Summary, comparison: Comparison) -> None:
    console = Console(record=True, width=150, file=io.StringIO())
    report.render_terminal(current, comparison, console)
    text = console.export_text()
    assert "qa · small" in text
    assert "75.9% (95% CI" in text and "Scorer exact" in text and "Cost" in text
    assert "Worse than the baseline: 6 regressions" in text
    assert "Regressions (6):" in text
    assert "case-2: exact: case-2: <script>alert(1)</script> | [bold]x[/bold]" in text  # not markup


def test_terminal_without_comparison_lists_failures(current: Summary) -> None:
    console = Console(record=True, width=150, file=io.StringIO())
    report.render_terminal(current, None, console, max_cases=2)
    text = console.export_text()
    assert "[small] case-1 (fail)" in text and "… and 6 more" in text


def test_compare_html_side_by_side() -> None:
    lines = run_lines({"case-0"}, target="cheap") + [
        {**ln, "observation": {**ln["observation"], "cost_usd": 0.02, "latency_ms": 900.0}}
        for ln in run_lines(set(), target="strong")
    ]
    summary = summarize(lines, suite="qa")
    page = report.render_compare_html({t: summary for t in summary.targets}, title="Compare <qa>")
    assert "<th>cheap</th><th>strong</th>" in page
    assert page.count("<svg") == 3  # pass rates, quality vs cost, quality vs latency
    assert "Quality vs cost" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert '<td class="num best">100.0%</td>' in page  # the best pass rate in bold


def test_quality_cost_plot_without_costs_is_empty() -> None:
    summary = summarize([line("a", True, cost_usd=None)])
    assert report.quality_cost_plot(summary.targets) == ""
    assert report.quality_cost_plot(summary.targets, x="latency").startswith("<svg")


# Last in the module: Playwright's sync API holds an event loop on the main thread while it runs.
def test_served_report_draws_in_chromium_under_the_report_csp(empty_dashboard: Dashboard) -> None:
    """The runner's report.html, served by the dashboard and by the API under REPORT_CSP (sandbox,
    no script): it loads with no console error or blocked request, and both plots are drawn."""
    # Every third case expects a code the mock never says: 8 pass, 4 fail.
    expected = ["" if i % 3 else f"Z{i}X" for i in range(12)]
    cases = "\n".join(
        f'    - {{id: q{i}, input: [{{role: user, content: "order {i}"}}], expected: "{e}"}}'
        for i, e in enumerate(expected)
    )
    suite = f"""
name: served-report
dataset:
  cases:
{cases}
targets:
  - route: default
scorers:
  - {{type: contains, name: keeps-code}}
  - {{type: word_count, min: 1}}
"""
    server = empty_dashboard.server
    with server.api(timeout=60) as api:
        started = api.post("/evals/runs", json={"suite": suite})
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        deadline = time.monotonic() + 60
        while (detail := api.get(f"/evals/runs/{run_id}").json())["run"]["status"] == "running":
            assert time.monotonic() < deadline, "the eval run did not finish"
            time.sleep(0.2)
    counts = detail["summary"]["targets"]["default"]
    assert counts["errored"] == 0 and counts["passed"] == 8 and counts["failed"] == 4, counts
    with empty_dashboard.page() as page:
        for path in (f"/evals/{run_id}/report.html", f"/api/evals/runs/{run_id}/report.html"):
            response = page.raw.goto(server.url + path, wait_until="load")
            assert response is not None and response.status == 200, path
            assert response.headers["content-security-policy"] == REPORT_CSP
            assert page.raw.evaluate("document.scripts.length") == 0
            page.expect_text("Eval: served-report", "Targets", "keeps-code", "Failed and flaky cases", "q0")
            plots = page.raw.locator("svg.plot")
            assert plots.count() == 2, path  # pass rates and score distributions; no baseline
            for i in range(plots.count()):
                box = plots.nth(i).bounding_box()
                assert box is not None and box["width"] > 200 and box["height"] > 150, (path, box)
                web_helpers.assert_not_blank(plots.nth(i).screenshot(), f"{path} plot {i}")
        page.screenshot("eval-report")
