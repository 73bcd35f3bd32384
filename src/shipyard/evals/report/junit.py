"""JUnit XML for CI test tabs: one ``<testsuite>`` per target, one ``<testcase>`` per case.

Flaky cases: a flaky case (its repeats disagree) is written as a *passed* testcase with a
``<system-out>`` note naming the failing repeats. It is not a failure (the stats leave flaky cases
out of the pass rate, and a CI tab should agree), and ``<skipped>`` would claim it did not run. A
case whose every repeat failed is a ``<failure>``, or an ``<error>`` when every repeat's call itself
failed (the target errored, so the scorers never saw an answer).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any

from shipyard.evals.report.formatting import MAX_MESSAGES, run_message, xml_safe
from shipyard.evals.stats import Summary


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
                kept.append(run_message(line))

    suite_name = summary.suite or "eval"
    root = ET.Element("testsuites", name=xml_safe(suite_name))
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_time = 0.0
    for name, t in summary.targets.items():
        classname = xml_safe(f"{suite_name}/{name}")
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
            seconds = f"{times[name].get(case, 0.0):.3f}"
            tc = ET.SubElement(ts, "testcase", classname=classname, name=xml_safe(case), time=seconds)
            if verdict == "pass":
                continue
            f = failures[name][case]
            body = "\n".join(messages[name].get(case) or [f.explanation])
            if verdict == "flaky":
                out = ET.SubElement(tc, "system-out")
                out.text = xml_safe(
                    f"FLAKY: {f.runs - f.failed_runs} of {f.runs} repeats passed; reported as passed.\n{body}"
                )
            elif f.errored_runs == f.runs:
                err = ET.SubElement(tc, "error", message=xml_safe(f.explanation), type="error")
                err.text = xml_safe(body)
            else:
                fail = ET.SubElement(tc, "failure", message=xml_safe(f.explanation), type="failure")
                fail.text = xml_safe(body)
        totals["tests"] += t.cases
        totals["failures"] += n_failures
        totals["errors"] += n_errors
        total_time += suite_time
    for key, count in totals.items():
        root.set(key, str(count))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
