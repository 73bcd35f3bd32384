"""Registry, eval, drift and alert pages in real headless Chromium against a real `shipyard up`.

The data is made the way users make it: a config applied at start (prompts, routes, monitoring
rules), a prompt version and a dataset version through the admin API, a dataset file through the
CLI, traffic through the official openai client, drift checks and eval runs (and an eval-gated
promotion) through the API, experiment runs through `shipyard.start_run`. Alerts fire because the
server's own alert loop sees the traffic and the drift report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ShipyardServer
from tests.web_helpers import Dashboard, browser, empty_dashboard, wait_for_traces  # noqa: F401 (fixtures)

CONFIG = """
providers:
  - {name: fake, type: mock, latency_ms: 2, echo: true}
  - {name: shaky, type: mock, latency_ms: 2, echo: true, error_rate: 0.5, seed: 3}
models:
  - {name: echo-chat, provider: fake, pricing: {input_per_mtok: 1, output_per_mtok: 2}}
  - {name: shaky-chat, provider: shaky}
prompts:
  - name: support
    aliases: [production]
    messages:
      - {role: system, content: "You are a harbour assistant. Answer briefly."}
      - {role: user, content: "{{ question }}"}
routes:
  - {name: support, prompt: support@production, targets: [{model: echo-chat}]}
  - {name: flaky, targets: [{model: shaky-chat}]}
  - {name: plain, targets: [{model: echo-chat}]}
monitoring:
  drift:
    - {route: plain, reference: 7d offset 1h, current: 1h, every: 1h, min_samples: 10}
  alerts:
    - name: flaky-errors
      metric: error_rate
      route: flaky
      window: 5m
      op: ">"
      threshold: 0.1
      severity: critical
    - {name: plain-drift, metric: drift.drifted, route: plain, op: ">=", threshold: 1}
    - {name: slow-plain, metric: latency_p95_ms, route: plain, window: 5m, op: ">", threshold: 60000}
"""

V2_USER = "Customer asks: {{ question }}"
HARBOUR = [
    "Which berth is free for a container ship arriving at the harbour tonight",
    "How many cranes work on the north quay of the harbour during the night shift",
    "When does the pilot boat leave the harbour for the tanker at anchor",
    "Is the harbour master's office open for cargo manifests on Sunday",
    "What is the draft limit for vessels entering the inner harbour basin",
]
COOKING = [
    "How long should I roast a chicken with garlic and lemon in the oven",
    "What spices go into a creamy chickpea curry with coconut milk",
    "Can I bake sourdough bread without a dutch oven at home",
    "How do I caramelise onions slowly for a french onion soup",
    "What is the best way to whisk egg whites for a fluffy chocolate mousse",
]


def suite(targets: str, extra: str = "") -> str:
    return f"""
name: support-golden-check
dataset: {{registry: support-golden}}
targets:
{targets}
scorers:
  - {{type: contains, name: keeps-code}}
pass_rate_min: 0.8
{extra}
"""


@dataclass
class Data:
    dash: Dashboard
    api: httpx.Client
    runs: list[str] = field(default_factory=list)
    eval_run: str = ""
    promotion: dict[str, Any] = field(default_factory=dict)
    drift_ids: list[int] = field(default_factory=list)


def cli(server: ShipyardServer, *args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "shipyard", *args, "--home", str(server.home)],
        capture_output=True,
        text=True,
        env={**os.environ, "SHIPYARD_ACTOR": "dana"},
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def send(server: ShipyardServer, route: str, texts: list[str], **extra: Any) -> None:
    import openai

    client = server.openai()
    for text in texts:
        try:
            client.chat.completions.create(
                model=route, messages=[{"role": "user", "content": text}], max_tokens=40, **extra
            )
        except openai.APIStatusError:
            pass  # the shaky provider fails half its calls, on purpose


def wait_eval(api: httpx.Client, run_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(f"/evals/runs/{run_id}").json()
        if body["run"]["status"] != "running":
            assert body["run"]["status"] == "finished", body
            return dict(body)
        assert time.monotonic() < deadline, f"eval run {run_id} still running after {timeout}s"
        time.sleep(0.2)


def wait_alert(api: httpx.Client, rule: str, state: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        rules = {r["name"]: r for r in api.get("/alerts").json()["data"]}
        if rules[rule]["state"] == state:
            return dict(rules[rule])
        assert time.monotonic() < deadline, f"alert `{rule}` is {rules[rule]['state']}, not {state}"
        time.sleep(0.2)


def populate(d: Data, tmp: Path) -> None:
    """Everything the pages show, made through the CLI, the API, the gateway and the Python API."""
    server, api = d.dash.server, d.api
    # A second prompt version (current moves; production stays on v1 until promoted).
    r = api.post(
        "/prompts",
        json={
            "name": "support",
            "spec": {
                "messages": [
                    {"role": "system", "content": "You are a harbour assistant. Answer briefly."},
                    {"role": "user", "content": V2_USER},
                ]
            },
            "message": "say who is asking",
        },
    )
    assert r.status_code == 200, r.text
    # A dataset: v1 from a file through the CLI, v2 appended through the API.
    cases = tmp / "golden.jsonl"
    cases.write_text(
        "\n".join(
            json.dumps(
                {
                    "input": {"question": f"Where is parcel {i}? Its code is Z{i}X."},
                    "expected": f"Z{i}X" if i % 10 else "NOT-IN-ANSWER",
                    "tags": ["parcel"] + (["hard"] if i % 7 == 0 else []),
                    "metadata": {"ticket": 1000 + i},
                }
            )
            for i in range(25)
        )
        + "\n"
    )
    cli(server, "datasets", "import", "support-golden", str(cases), "-m", "first cut")
    r = api.post(
        "/datasets/support-golden/versions",
        json={
            "examples": [
                {"input": {"question": f"Where is parcel {i}? Its code is Z{i}X."}, "expected": f"Z{i}X"}
                for i in range(25, 30)
            ],
            "append": True,
            "message": "five more parcels",
        },
    )
    assert r.status_code == 201, r.text

    # Traffic: errors on `flaky` (an alert fires), three topic batches on `plain` (drift).
    send(server, "flaky", [f"Ping {i}" for i in range(12)])
    t0 = time.time() - 1
    send(server, "plain", [f"{HARBOUR[i % 5]} (berth {i})" for i in range(20)])
    t1 = time.time()
    send(server, "plain", [f"{HARBOUR[(i + 2) % 5]} (quay {i})" for i in range(20)])
    t2 = time.time()
    send(server, "plain", [f"{COOKING[i % 5]} (recipe {i})" for i in range(20)])
    send(server, "support", ["unused"] * 3, extra_body={"variables": {"question": "Where is my parcel?"}})
    wait_for_traces(server, 75)

    # Drift reports: same topic (no drift), topic switch (drift: the alert fires), same again.
    for ref, cur in (
        (f"{t0}..{t1}", f"{t1}..{t2}"),
        (f"{t0}..{t2}", f"{t2}.."),
        (f"{t0}..{t1}", f"{t1}..{t2}"),
    ):
        r = api.post(
            "/drift/run", json={"route": "plain", "reference": ref, "current": cur, "min_samples": 10}
        )
        assert r.status_code == 201, r.text
        d.drift_ids.append(int(r.json()["id"]))
        if cur.endswith(".."):
            assert r.json()["drifted"], r.json()
            wait_alert(api, "plain-drift", "firing")
    wait_alert(api, "flaky-errors", "firing")

    # An eval run with a flaky target, then an eval-gated promotion of v2 to production.
    two_targets = suite(
        "  - {route: support, prompt: support@v1, label: support}\n"
        "  - {route: flaky, prompt: support@v1, label: flaky}",
        "repeats: 2",
    )
    r = api.post("/evals/runs", json={"suite": two_targets})
    assert r.status_code == 202, r.text
    d.eval_run = r.json()["run_id"]
    wait_eval(api, d.eval_run)
    r = api.post(
        "/evals/promote",
        json={
            "prompt": "support",
            "alias": "production",
            "suite": suite("  - route: support"),
            "candidate": "v2",
        },
    )
    assert r.status_code == 200 and r.json()["promoted"], r.text
    d.promotion = r.json()

    # Experiment runs from Python, the way a notebook logs them.
    import shipyard

    for temp, losses in ((0.2, [0.9, 0.6, 0.45, 0.4, 0.38]), (0.7, [0.95, 0.7, 0.6, 0.55, 0.52])):
        with shipyard.start_run(
            name=f"tune-t{temp}",
            experiment="tuning",
            params={"temperature": temp, "model": "echo-chat", "max_tokens": 64},
            home=str(server.home),
        ) as run:
            run.link_dataset("support-golden", 1)
            run.link_prompt("support", 2)
            for step, loss in enumerate(losses):
                run.log_metric("loss", loss, step=step)
            run.log_metric("accuracy", 0.9 - temp / 4)
            run.log_dict({"temperature": temp, "notes": "grid search"}, "config.json")
            with shipyard.start_run(name=f"fold-{temp}", home=str(server.home)) as child:
                child.log_metric("accuracy", 0.8)
            d.runs.append(run.run_id)


@pytest.fixture(scope="module")
def data(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Data]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("pages")
    server = ShipyardServer(tmp / "home", CONFIG, env={"SHIPYARD_ALERT_INTERVAL": "0.3"}).start()
    api = server.api(timeout=120)
    try:
        d = Data(Dashboard(server, browser, tmp), api)
        populate(d, tmp)
        yield d
    finally:
        api.close()
        server.stop()


# -- prompts and the registry -------------------------------------------------------------------------
def test_prompts_list_and_detail(data: Data) -> None:
    with data.dash.page() as page:
        page.goto("/prompts")
        page.expect_text("Prompts", "support", "production", "support@production")
        assert page.raw.locator("#prompts-table tbody tr").count() == 1
        page.raw.click("#prompts-table a:has-text('support')")
        page.wait_ready()
        assert page.raw.url.endswith("/prompts/support")
        # Current is v2 and production was promoted to it, with the eval run as evidence.
        page.expect_text(
            "2 versions", "Template messages", "Customer asks:", "Alias history", "say who is asking"
        )
        history = page.raw.inner_text("#history")
        assert "v1 → v2" in " ".join(history.split())
        assert "eval run" in history and data.promotion["run_id"][:12] in history
        href = page.raw.get_attribute(f"#history a[href='/evals/{data.promotion['run_id']}']", "href")
        assert href == f"/evals/{data.promotion['run_id']}"
        # The template's variable is marked up, and the gateway's rendering is one click away.
        assert page.raw.inner_text("#template-messages .tpl-var") == "{{ question }}"
        page.raw.fill("#var-question", "Where is parcel 7?")
        page.raw.click("#render button[type=submit]")
        page.wait_ready()
        assert "Customer asks: Where is parcel 7?" in page.raw.inner_text("#rendered-messages")
        page.screenshot("prompt")


def test_prompt_diff_shows_the_changed_line(data: Data) -> None:
    with data.dash.page() as page:
        page.goto("/prompts/support?a=1&b=2")
        inserted = page.raw.locator("#diff td.code.diff-ins").all_inner_texts()
        removed = page.raw.locator("#diff td.code.diff-del").all_inner_texts()
        assert any("Customer asks: {{ question }}" in t for t in inserted), inserted
        assert any("{{ question }}" in t and "Customer" not in t for t in removed), removed
        # Only the changed characters are highlighted within the line.
        assert page.raw.locator("#diff td.diff-ins ins").first.inner_text().startswith("Customer asks:")
        page.expect_text("+1", "−1")
        # The unified view of the same change, picked with the view selector.
        page.raw.select_option("select[name=view]", "unified")
        page.raw.wait_for_url("**view=unified**")
        page.wait_ready()
        rows = page.raw.locator("table.diff-unified tr.diff-ins").all_inner_texts()
        assert any("Customer asks:" in r for r in rows), rows
        page.screenshot("prompt-diff")
        page.goto("/prompts/support?a=2&b=2")
        page.expect_text("Both sides are v2")


def test_registry_page_and_route(data: Data) -> None:
    with data.dash.page() as page:
        page.goto("/registry")
        page.expect_text("Routes", "Models", "Providers", "support", "flaky", "echo-chat", "fake/")
        page.raw.click("#routes a:has-text('support')")
        page.wait_ready()
        assert "/registry/routes/support" in page.raw.url
        page.expect_text("route", "support@production", "v1")
        page.goto("/registry/prompts/support?v=1")  # prompts live on their own page
        assert page.raw.url.endswith("/prompts/support?v=1")


# -- datasets -----------------------------------------------------------------------------------------
def test_dataset_pages(data: Data) -> None:
    with data.dash.page() as page:
        page.goto("/datasets")
        page.expect_text("support-golden", "v2", "30")
        page.goto("/datasets/support-golden")
        page.expect_text("Examples of v2", "1–20 of 30", "appended to", "five more parcels")
        assert page.raw.locator(".example").count() == 20
        page.raw.click("text=Next →")
        page.wait_ready()
        page.expect_text("21–30 of 30", "Where is parcel 29? Its code is Z29X.")
        assert page.raw.locator(".example").count() == 10
        # v1 came from the file, and two runs used it.
        page.goto("/datasets/support-golden?v=1")
        page.expect_text("golden.jsonl", "jsonl", "first cut", "NOT-IN-ANSWER", "ticket")
        assert page.raw.locator("#used-by a").count() >= 2
        page.screenshot("dataset")


# -- runs ---------------------------------------------------------------------------------------------
def test_runs_list_run_and_compare(data: Data) -> None:
    a, b = data.runs
    with data.dash.page() as page:
        page.goto("/runs?experiment=tuning")
        page.expect_text("tune-t0.2", "tune-t0.7", "fold-0.2", "loss")
        assert page.raw.locator("[data-compare-button]").is_disabled()
        # Tick the two tuning runs and compare them, as a user would.
        page.raw.check(f"input[data-compare][value='{a}']")
        page.raw.check(f"input[data-compare][value='{b}']")
        page.raw.click("[data-compare-button]")
        page.raw.wait_for_url("**/runs/compare?**")
        page.wait_ready()
        assert page.raw.url.endswith(f"/runs/compare?ids={a},{b}")  # the older run is the baseline
        page.expect_text("Compare 2 runs", "tune-t0.2", "tune-t0.7", "temperature", "0.2", "0.7")
        assert page.expect_charts(2) >= 2  # latest values, and the loss curves side by side
        legend = page.raw.inner_text("#compare-series-0")
        assert "tune-t0.2" in legend and "tune-t0.7" in legend
        page.expect_text("+0.14")  # final loss 0.52 vs 0.38
        page.screenshot("runs-compare")

        page.goto(f"/runs/compare?ids={a[:10]},{b[:10]}&all=1")
        page.expect_text("max_tokens", "64")

        page.goto(f"/runs/{a}")
        page.expect_text(
            "tune-t0.2", "finished", "loss", "accuracy", "config.json", "support-golden@v1", "support@v2"
        )
        assert page.expect_charts(1) == 1
        page.expect_text("fold-0.2")  # the child run
        page.screenshot("run")


# -- evals --------------------------------------------------------------------------------------------
def test_evals_list_and_report(data: Data) -> None:
    with data.dash.page() as page:
        page.goto("/evals")
        page.expect_text(
            "support-golden-check", "gate passed", "gate failed", "promotion support->production"
        )
        assert page.expect_charts(1) == 1
        page.goto(f"/evals/{data.eval_run}")
        page.expect_text(
            "Targets", "support", "flaky", "95% interval", "keeps-code", "Failed and flaky cases"
        )
        assert page.expect_charts(2) == 2
        failures = page.raw.inner_text("#failures")
        assert "flaky" in failures and "fail" in failures
        assert "support-golden@v2" in page.raw.inner_text("#lineage")
        # The runner's own HTML report, served locked down, inside the page.
        frame_el = page.raw.locator("iframe.report")
        frame_el.scroll_into_view_if_needed()
        frame = page.raw.frame_locator("iframe.report")
        frame.locator("body").wait_for()
        assert "support-golden-check" in frame.locator("body").inner_text()
        page.screenshot("eval")
        # The promotion's candidate run was compared with its baseline.
        page.goto(f"/evals/{data.promotion['run_id']}")
        page.expect_text("Against the baseline", "Regressions", "gate passed")
    report = httpx.get(
        f"{data.dash.server.url}/evals/{data.eval_run}/report.html", headers=data.dash.server.headers
    )
    assert report.status_code == 200 and "script-src" not in report.headers["content-security-policy"]
    assert "default-src 'none'" in report.headers["content-security-policy"]


# -- drift and alerts ---------------------------------------------------------------------------------
def test_drift_pages(data: Data) -> None:
    with data.dash.page() as page:
        page.goto("/drift")
        page.expect_text("Latest report per route", "plain", "Scheduled checks", "skipped", "History")
        assert page.expect_charts(3) == 3
        page.screenshot("drift")
        drifted = data.drift_ids[1]
        page.goto(f"/drift/{drifted}")
        page.expect_text(
            "Drift: the current traffic differs", "MMD (embeddings)", "Kolmogorov–Smirnov", "Topics", "grew"
        )
        tests = page.raw.inner_text("#tests")
        assert "drift" in tests and "prompt length" in tests
        topics = page.raw.inner_text("#topics")
        assert any(c.split(" (")[0][:30] in topics for c in COOKING), topics  # example prompts that grew
        assert page.expect_charts(3) == 3
        page.screenshot("drift-report")


def test_alerts_page(data: Data) -> None:
    with data.dash.page() as page:
        page.goto("/alerts")
        page.expect_text("Firing", "flaky-errors", "plain-drift", "slow-plain", "critical", "Episodes")
        rules = page.raw.inner_text("#rules")
        assert "firing" in rules and "ok" in rules
        events = page.raw.inner_text("#events")
        assert "flaky-errors" in events and "log" in events
        assert page.expect_charts(1) == 1
        page.screenshot("alerts")
        page.goto("/alerts?rule=flaky-errors")
        assert "plain-drift" not in page.raw.inner_text("#events table")


# -- an empty store -----------------------------------------------------------------------------------
EMPTY = {
    "/prompts": "No prompts yet",
    "/registry": "Routes",
    "/datasets": "No datasets yet",
    "/runs": "No runs yet",
    "/evals": "No eval runs yet",
    "/drift": "No drift reports yet",
    "/alerts": "No alert rules configured",
    "/performance": "No gateway requests in this time range",
}


@pytest.mark.parametrize("path", list(EMPTY))
def test_pages_with_an_empty_store(empty_dashboard: Dashboard, path: str) -> None:  # noqa: F811
    with empty_dashboard.page() as page:
        page.goto(path)
        page.expect_text(EMPTY[path])
        assert not page.charts()


# -- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        ("/runs/compare?ids=abc", 400, "compare needs at least two runs"),
        ("/runs?status=done", 400, "`status` must be one of"),
        ("/runs/ffffffff", 404, "no run `ffffffff`"),
        ("/prompts/nope", 404, "prompt `nope` does not exist"),
        ("/prompts/support?v=9", 404, "has no version 9"),
        ("/datasets/nope", 404, "no dataset `nope`"),
        ("/datasets/support-golden?offset=-1", 400, "`offset` must be at least 0"),
        ("/drift/abc", 400, "not a drift report id"),
        ("/drift/999999", 404, "no drift report 999999"),
        ("/drift?route=nope", 400, "no drift reports for route `nope`"),
        ("/alerts?state=on", 400, "`state` must be `firing` or `resolved`"),
        ("/registry/widgets/x", 400, "unknown registry kind"),
    ],
)
def test_bad_input_is_a_clear_error(data: Data, path: str, status: int, text: str) -> None:
    with data.dash.page() as page:
        page.goto(path, status=status)
        page.expect_text(text)
    r = httpx.get(
        data.dash.server.url + path, headers={**data.dash.server.headers, "accept": "application/json"}
    )
    assert r.status_code == status and text in r.json()["error"]["message"]
