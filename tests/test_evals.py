"""Eval suites through the real CLI and API: reports (JUnit validated), the regression gate that
catches a worse prompt and lets an equivalent one through, eval-gated promotion, flat memory and
resume on 10,000 cases, compare, bad suite files, the pytest plugin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """
providers:
  - {name: fake, type: mock, echo: true}
models:
  - {name: echo-1, provider: fake, pricing: {input_per_mtok: 1, output_per_mtok: 2}}
prompts:
  - name: support
    aliases: [production]
    messages:
      - {role: user, content: "{{ question }}"}
routes:
  - {name: support, prompt: support@production, targets: [{model: echo-1}]}
"""


def suite_text(n: int = 30, target: str = "- route: support", extra: str = "") -> str:
    cases = "\n".join(
        f'    - {{id: q{i}, input: {{question: "Help with order {i}, code Z{i}X"}}, expected: "Z{i}X"}}'
        for i in range(n)
    )
    return f"""
name: support-regression
dataset:
  cases:
{cases}
targets:
  {target}
scorers:
  - {{type: contains, name: keeps-code}}
{extra}
"""


def shipyard(
    *args: str, home: Path, cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "shipyard", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "SHIPYARD_ACTOR": "ci", **(env or {})},
        timeout=600,
    )
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture
def home(tmp_path: Path) -> Path:
    cfg = tmp_path / "shipyard.yaml"
    cfg.write_text(CONFIG)
    h = tmp_path / "home"
    shipyard("apply", str(cfg), home=h, cwd=tmp_path)
    # v2 drops the customer's text: a deliberately worse prompt. v3 words it differently but keeps it.
    shipyard(
        "prompts", "create", "support", "--user", "Sorry, I cannot help with that.", home=h, cwd=tmp_path
    )
    shipyard("prompts", "create", "support", "--user", "Customer says: {{ question }}", home=h, cwd=tmp_path)
    return h


def test_worse_prompt_fails_the_gate_and_an_equivalent_one_passes(home: Path, tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(suite_text())
    first = json.loads(shipyard("eval", "run", str(base), "--json", home=home, cwd=tmp_path).stdout)
    assert first["gate"]["passed"] and first["summary"]["targets"]["support"]["passed"] == 30

    worse = tmp_path / "worse.yaml"
    worse.write_text(suite_text(target="- {route: support, prompt: support@v2, label: support}"))
    r = shipyard(
        "eval", "run", str(worse), "--baseline", first["run_id"][:10], home=home, cwd=tmp_path, check=False
    )
    assert r.returncode == 1
    reason = r.stderr.strip().splitlines()[-1]
    assert (
        reason.startswith("gate failed:") and "regress" in reason and "q0" in reason and "McNemar" in reason
    )

    same = tmp_path / "same.yaml"
    same.write_text(suite_text(target="- {route: support, prompt: support@v3, label: support}"))
    r = shipyard(
        "eval",
        "run",
        str(same),
        "--baseline",
        "production",
        "--fail-on",
        "regression",
        home=home,
        cwd=tmp_path,
    )
    assert "gate passed" in r.stderr and "no regressions" in r.stderr


def test_reports_and_junit_validates(home: Path, tmp_path: Path) -> None:
    import xmlschema

    suite = tmp_path / "suite.yaml"
    suite.write_text(suite_text(n=6, extra="pass_rate_min: 0.5"))
    reports = tmp_path / "reports"
    out = shipyard("eval", "run", str(suite), "--report-dir", str(reports), home=home, cwd=tmp_path)
    assert "Pass rate" in out.stdout and "gate passed" in out.stderr
    schema = xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit.xsd"))
    schema.validate(str(reports / "junit.xml"))
    assert "support" in (reports / "report.md").read_text()
    html = (reports / "report.html").read_text()
    assert "<svg" in html and "https://" not in html and "<script src" not in html
    runs = json.loads(shipyard("runs", "list", "--json", home=home, cwd=tmp_path).stdout)
    run = runs[0] if isinstance(runs, list) else runs["data"][0]
    shown = json.loads(shipyard("runs", "show", run["run_id"], "--json", home=home, cwd=tmp_path).stdout)
    artifacts = {a["path"] for a in shown["artifacts"]}
    assert {"results.jsonl", "summary.json", "report.md", "report.html", "junit.xml"} <= artifacts
    assert {(lk["kind"], lk["name"]) for lk in shown["links"]} >= {
        ("route", "support"),
        ("prompt", "support"),
        ("model", "echo-1"),
    }
    assert shown["metrics"]["pass_rate"]["last"] == 1.0


def test_promotion_refuses_a_worse_candidate_and_records_the_evidence(home: Path, tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(suite_text(n=12))
    r = shipyard(
        "promote",
        "prompt",
        "support",
        "--to",
        "production",
        "--require",
        str(suite),
        "--candidate",
        "v2",
        home=home,
        cwd=tmp_path,
        check=False,
    )
    assert r.returncode == 1 and "refused" in r.stderr and "stays at v1" in r.stderr
    assert (
        json.loads(
            shipyard("prompts", "show", "support@production", "--json", home=home, cwd=tmp_path).stdout
        )["version"]
        == 1
    )
    refused = [
        run for run in _runs(home, tmp_path) if (run.get("tags") or {}).get("promotion_result") == "refused"
    ]
    assert len(refused) == 1 and refused[0]["tags"]["gate"] == "failed"

    r = shipyard(
        "promote",
        "prompt",
        "support",
        "--to",
        "production",
        "--require",
        str(suite),
        "--candidate",
        "v3",
        "--json",
        home=home,
        cwd=tmp_path,
    )
    result = json.loads(r.stdout)
    assert result["promoted"] and result["previous"] == 1 and result["candidate"] == 3
    history = json.loads(
        shipyard(
            "prompts", "alias", "history", "support", "production", "--json", home=home, cwd=tmp_path
        ).stdout
    )
    assert history[-1]["to_version"] == 3 and history[-1]["evidence"]["eval_run"] == result["run_id"]
    assert len(history) == 2  # the refused attempt moved nothing
    table = shipyard(
        "prompts", "alias", "history", "support", home=home, cwd=tmp_path, env={"COLUMNS": "250"}
    ).stdout
    assert f"eval run {result['run_id'][:12]}" in table


def _runs(home: Path, cwd: Path) -> list[dict[str, Any]]:
    data = json.loads(shipyard("runs", "list", "--json", "--limit", "100", home=home, cwd=cwd).stdout)
    return data if isinstance(data, list) else list(data["data"])


def test_bad_suite_files_name_the_field_and_line(home: Path, tmp_path: Path) -> None:
    cases = [
        (
            "unknown scorer",
            suite_text(n=2).replace("type: contains", "type: containz"),
            ":10:",
            "unknown scorer type `containz`",
        ),
        (
            "missing field",
            suite_text(n=2).replace("name: support-regression\n", ""),
            ":2:",
            "name: Field required",
        ),
        (
            "wrong type",
            suite_text(n=2) + "repeats: many\n",
            ":12:",
            "repeats: Input should be a valid integer",
        ),
        (
            "bad option",
            suite_text(n=2).replace("name: keeps-code", "name: keeps-code, mode: most"),
            ":10:",
            "mode",
        ),
    ]
    for label, text, line, fragment in cases:
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        r = shipyard("eval", "run", str(path), home=home, cwd=tmp_path, check=False)
        assert r.returncode == 2, (label, r.stderr)
        assert f"bad.yaml{line}" in r.stderr and fragment in r.stderr and "Traceback" not in r.stderr, (
            label,
            r.stderr,
        )


def test_cache_rescoring_and_compare(home: Path, tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        suite_text(
            n=5,
            target="- route: support\n  - {model: echo-1, prompt: support@v2, label: v2-direct}",
            extra="pass_rate_min: 0",
        )
    )
    first = json.loads(shipyard("eval", "run", str(suite), "--json", home=home, cwd=tmp_path).stdout)
    assert first["cached"] == 0 and first["executed"] == 10
    again = json.loads(shipyard("eval", "run", str(suite), "--json", home=home, cwd=tmp_path).stdout)
    assert again["cached"] == 10  # re-scoring did not call the targets again
    fresh = json.loads(
        shipyard("eval", "run", str(suite), "--json", "--no-cache", home=home, cwd=tmp_path).stdout
    )
    assert fresh["cached"] == 0
    html = tmp_path / "compare.html"
    out = shipyard("eval", "compare", str(suite), "--html", str(html), home=home, cwd=tmp_path).stdout
    assert "support" in out and "v2-direct" in out
    assert "<svg" in html.read_text()


def test_ten_thousand_cases_flat_memory_and_resume(home: Path, tmp_path: Path) -> None:
    import psutil

    def write_suite(n: int, name: str) -> Path:
        cases = tmp_path / f"{name}.jsonl"
        with cases.open("w") as f:
            for i in range(n):
                f.write(
                    json.dumps(
                        {
                            "input": {"question": f"order {i} code Z{i}X " + "x" * 40},
                            "expected": f"Z{i}X",
                            "metadata": {"id": f"c{i}"},
                        }
                    )
                    + "\n"
                )
        suite = tmp_path / f"{name}.yaml"
        suite.write_text(
            f"name: {name}\ndataset: {{file: {cases.name}}}\ntargets: [{{route: support}}]\n"
            "scorers: [{type: contains}]\nconcurrency: 16\n"
        )
        return suite

    def peak_rss_kib(suite: Path, *extra: str) -> tuple[int, subprocess.Popen[str]]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shipyard",
                "eval",
                "run",
                str(suite),
                "--quiet",
                "--json",
                "--home",
                str(home),
                *extra,
            ],
            cwd=tmp_path,
            # To files: a pipe nobody reads while the process runs would block it.
            stdout=(tmp_path / f"{suite.stem}.out").open("w"),
            stderr=(tmp_path / f"{suite.stem}.err").open("w"),
            text=True,
        )
        peak = 0
        ps = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                peak = max(peak, ps.memory_info().rss // 1024)
            except psutil.Error:
                break
            time.sleep(0.05)
        return peak, proc

    small, proc = peak_rss_kib(write_suite(1_000, "small"))
    assert proc.returncode == 0, (tmp_path / "small.err").read_text()
    big_suite = write_suite(10_000, "big")
    big, proc = peak_rss_kib(big_suite)
    assert proc.returncode == 0, (tmp_path / "big.err").read_text()
    result = json.loads((tmp_path / "big.out").read_text())
    assert result["summary"]["targets"]["support"]["cases"] == 10_000
    assert big <= 2 * small, f"peak RSS {big} KiB for 10,000 cases vs {small} KiB for 1,000"

    # Interrupt a fresh run (no cache, so every case calls the target) and resume it. Only its own
    # results count: an earlier run's file (already 10,000 lines) would trigger the interrupt before
    # the new process had even started Python, and a signal that arrives before exec is lost.
    work = home / "evals"
    earlier = set(work.glob("*/results.jsonl")) if work.exists() else set()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shipyard",
            "eval",
            "run",
            str(big_suite),
            "--quiet",
            "--no-cache",
            "--home",
            str(home),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        # Ctrl-C as a terminal sends it: a test run started in the background (a shell's `&`)
        # ignores SIGINT, and an ignored signal stays ignored across exec.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while True:
        partial = [p for p in work.glob("*/results.jsonl") if p not in earlier] if work.exists() else []
        if partial and sum(1 for _ in partial[0].open()) > 2_000:
            break
        assert time.monotonic() < deadline and proc.poll() is None, (
            "the run finished before it could be interrupted"
        )
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    assert proc.returncode == 130
    run_id = partial[0].parent.name
    done_before = sum(1 for line in partial[0].open() if line.strip())
    assert 2_000 <= done_before < 10_000
    assert any(r["run_id"] == run_id and r["status"] == "killed" for r in _runs(home, tmp_path))
    resumed = json.loads(
        shipyard(
            "eval",
            "run",
            str(big_suite),
            "--resume",
            run_id[:12],
            "--no-cache",
            "--json",
            "--quiet",
            home=home,
            cwd=tmp_path,
        ).stdout
    )
    assert resumed["run_id"] == run_id and resumed["resumed"] == done_before
    assert resumed["executed"] == 10_000 - done_before  # nothing finished was run again
    lines = Path(resumed["artifacts"]["results.jsonl"]).read_text().splitlines()
    assert len(lines) == 10_000 and len({json.loads(x)["case"] for x in lines}) == 10_000


def test_api_runs_a_suite_and_promotes(shipyard_server: Any, tmp_path: Path) -> None:
    server = shipyard_server(CONFIG)
    api = server.api(timeout=60)
    started = api.post("/evals/runs", json={"suite": suite_text(n=8)})
    assert started.status_code == 202
    run_id = started.json()["run_id"]
    deadline = time.monotonic() + 60
    while (detail := api.get(f"/evals/runs/{run_id}").json())["run"]["status"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert detail["gate"]["passed"] and detail["summary"]["targets"]["support"]["passed"] == 8
    page = api.get(f"/evals/runs/{run_id}/results", params={"limit": 3}).json()
    assert len(page["data"]) == 3 and page["next"]
    rest = api.get(f"/evals/runs/{run_id}/results", params={"limit": 5, "cursor": page["next"]}).json()
    assert len(rest["data"]) == 5 and rest["next"] is None
    assert page["data"] + rest["data"] == api.get(f"/evals/runs/{run_id}/results").json()["data"]
    listed = api.get("/evals/runs", params={"limit": 1}).json()
    assert [r["run_id"] for r in listed["data"]] == [run_id]
    assert "<svg" in api.get(f"/evals/runs/{run_id}/report.html").text
    assert api.get(f"/evals/runs/{run_id}/junit.xml").text.startswith("<?xml")
    bad = api.post("/evals/runs", json={"suite": suite_text(n=2).replace("type: contains", "type: nope")})
    assert bad.status_code == 400 and "unknown scorer type" in bad.json()["error"]["message"]
    api.post("/prompts", json={"name": "support", "spec": {"messages": [{"role": "user", "content": "No."}]}})
    refused = api.post(
        "/evals/promote",
        json={"prompt": "support", "alias": "production", "candidate": "v2", "suite": suite_text(n=8)},
    ).json()
    assert not refused["promoted"] and "regress" in refused["message"]
    assert api.get("/prompts/support", params={"ref": "production"}).json()["version"] == 1


def test_pytest_plugin_records_a_run(home: Path, tmp_path: Path) -> None:
    tests = tmp_path / "llm_tests"
    tests.mkdir()
    (tests / "test_support.py").write_text(
        "def test_keeps_the_code(shipyard_eval):\n"
        "    target = shipyard_eval.target(route='support')\n"
        "    answer = target.ask(variables={'question': 'order 7 code Z7X'})\n"
        "    shipyard_eval.assert_score(answer, {'type': 'contains'}, expected='Z7X')\n"
        "    shipyard_eval.assert_score(answer, 'word_count', max=20)\n"
        "\n"
        "def test_a_failing_expectation(shipyard_eval):\n"
        "    target = shipyard_eval.target(prompt='support@v2', model='echo-1')\n"
        "    answer = target.ask(variables={'question': 'order 8 code Z8X'})\n"
        "    shipyard_eval.assert_score(answer, 'contains', value='Z8X')\n"
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tests),
            "--shipyard-home",
            str(home),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert "1 failed, 1 passed" in r.stdout, r.stdout + r.stderr
    assert "does not contain 'Z8X'" in r.stdout
    assert "shipyard: eval results recorded as run" in r.stdout
    runs = [run for run in _runs(home, tmp_path) if run["experiment"] == "pytest"]
    assert len(runs) == 1
    shown = json.loads(shipyard("runs", "show", runs[0]["run_id"], "--json", home=home, cwd=tmp_path).stdout)
    assert shown["metrics"]["pass_rate"]["last"] == 0.5


@pytest.mark.local_model
def test_example_suite_runs_offline_on_the_embedded_model_and_a_mock(tmp_path: Path) -> None:
    import xmlschema

    home = tmp_path / "home"
    shipyard("apply", str(ROOT / "examples" / "evals" / "shipyard.yaml"), home=home, cwd=tmp_path)
    reports = tmp_path / "reports"
    r = shipyard(
        "eval",
        "run",
        str(ROOT / "examples" / "evals" / "suite.yaml"),
        "--report-dir",
        str(reports),
        "--quiet",
        home=home,
        cwd=tmp_path,
    )
    assert "capital-mock" in r.stdout and "capital" in r.stdout and "Pass rate" in r.stdout  # terminal table
    assert "gate passed" in r.stderr
    xmlschema.XMLSchema(str(ROOT / "tests" / "data" / "junit.xsd")).validate(str(reports / "junit.xml"))
    markdown = (reports / "report.md").read_text()
    assert "`capital`" in markdown and "`capital-mock`" in markdown
    html = (reports / "report.html").read_text()
    assert html.count("<svg") >= 2 and "http://" not in html.split("<svg", 1)[0]


def test_the_same_suite_from_python(home: Path, tmp_path: Path) -> None:
    from shipyard.evals import run_suite

    suite = {
        "name": "from-python",
        "dataset": {
            "cases": [
                {"input": {"question": "code Z1X"}, "expected": "Z1X"},
                {"input": [{"role": "user", "content": "code Z2X"}], "expected": "Z2X"},
            ]
        },
        "targets": [{"route": "support"}, {"model": "echo-1", "label": "raw-model"}],
        "scorers": [{"type": "contains"}],
        "pass_rate_min": 0.5,
    }
    outcome = run_suite(suite, home=str(home))
    assert outcome.gate.passed, outcome.gate.reason
    # Variables need a prompt and the route's prompt needs its variables: each target fails one case.
    assert outcome.summary.targets["support"].failed_ids == ["case-2"]
    assert outcome.summary.targets["raw-model"].failed_ids == ["case-1"]
    with pytest.raises(Exception, match="--fail-on must be one of"):
        run_suite(suite, home=str(home), fail_on="sometimes")
