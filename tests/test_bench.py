"""`shipyard bench` as a user runs it: against a real `shipyard up` whose route calls a mock upstream
over HTTP, and against mock upstreams directly; the measured numbers are checked against what the
mock was configured to do (its first-chunk delay, its token pace, its failures, its capacity)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shipyard.bench import SweepRule, find_knee
from shipyard.cli.main import app
from shipyard.providers.mock import MockOptions
from shipyard.providers.mock_upstream import MockUpstream
from tests.conftest import ThreadServer, free_port
from tests.helpers import wait_trace

LATENCY_MS = 50.0  # the mock's delay before the first chunk
TOKENS_PER_S = 50.0  # its streaming pace: one token every 20 ms
OUTPUT_TOKENS = 10


def config(upstream: str) -> str:
    return f"""
providers:
  - {{name: up, type: openai, base_url: '{upstream}/v1'}}
models:
  - {{name: up-m, provider: up, model: up-model}}
routes:
  - {{name: bench, targets: [{{model: up-m}}]}}
"""


def bench(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipyard", "bench", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def result_of(r: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


@pytest.fixture
def paced() -> Any:
    mock = MockUpstream(
        MockOptions(
            latency_ms=LATENCY_MS, tokens_per_s=TOKENS_PER_S, output_tokens=OUTPUT_TOKENS, keep_received=500
        )
    )
    with ThreadServer(mock) as server:
        server.mock = mock
        yield server


class Capacity:
    """An upstream that serves at most ``slots`` requests at once (the rest queue): a server that
    saturates, for the sweep to find."""

    def __init__(self, app: Any, slots: int) -> None:
        self.app = app
        self.slots = slots
        self.gate: asyncio.Semaphore | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.gate is None:
            self.gate = asyncio.Semaphore(self.slots)
        async with self.gate:
            await self.app(scope, receive, send)


def test_through_the_gateway_measures_what_the_upstream_does_and_records_a_run(
    shipyard_server: Any, paced: Any, tmp_path: Path
) -> None:
    server = shipyard_server(config(paced.url))
    out = tmp_path / "out"
    env = {"SHIPYARD_API_KEY": server.admin_key}
    r = bench(
        "run", "--url", server.url, "--model", "bench", "--concurrency", "4", "--requests", "40",
        "--slo", "ttft=1s,e2e=3s", "--output", str(out), "--home", str(server.home), "--json",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    result = result_of(r)
    s = result["summary"]
    assert s["requests"] == 40 and s["ok"] == 40 and s["errors"] == 0
    assert s["peak_in_flight"] == 4  # the concurrency was really reached
    # Tokens come from the stream's usage: the mock's answer length, for every request.
    assert s["output_tokens"] == 40 * OUTPUT_TOKENS
    gap = 1000 / TOKENS_PER_S
    # The mock waits LATENCY_MS before its first chunk and `gap` between tokens; the gateway and a
    # loaded 2-core machine add a little on top, never take anything away.
    assert LATENCY_MS <= s["ttft_ms"]["p50"] <= LATENCY_MS + 60
    assert 0.7 * gap <= s["itl_ms"]["p50"] <= 1.3 * gap
    expected_e2e = LATENCY_MS + (OUTPUT_TOKENS - 1) * gap
    assert expected_e2e <= s["e2e_ms"]["p50"] <= expected_e2e + 80
    assert s["goodput"]["fraction"] == 1.0 and s["goodput"]["slo_ms"] == {"ttft": 1000.0, "e2e": 3000.0}
    # Throughput is what closed-loop concurrency 4 at this latency allows.
    assert s["requests_per_s"] == pytest.approx(4 / (s["e2e_ms"]["mean"] / 1000), rel=0.3)
    # Files, and the experiment run with both as artifacts.
    assert (out / "result.json").is_file()
    html = (out / "report.html").read_text()
    assert "<svg" in html and "<script" not in html
    run_id = result["run_id"]
    listed = subprocess.run(
        [sys.executable, "-m", "shipyard", "runs", "show", run_id, "--home", str(server.home), "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    run = json.loads(listed.stdout)
    assert run["status"] == "finished" and run["tags"]["kind"] == "bench"
    assert {a["path"] for a in run["artifacts"]} >= {"result.json", "report.html"}
    assert run["metrics"]["ttft_ms_p50"]["last"] == pytest.approx(s["ttft_ms"]["p50"])

    # A slower upstream, compared with the first run by run id and by result path.
    paced.mock.provider.options.latency_ms = LATENCY_MS * 4
    r2 = bench(
        "run", "--url", server.url, "--model", "bench", "--concurrency", "4", "--requests", "20",
        "--output", str(tmp_path / "slow"), "--home", str(server.home), "--json", cwd=tmp_path, env=env,
    )  # fmt: skip
    result_of(r2)
    cmp = bench(
        "compare", run_id[:12], str(tmp_path / "slow"), "--home", str(server.home), "--json", cwd=tmp_path
    )
    rows = {row["metric"]: row for row in result_of(cmp)["metrics"]}
    assert rows["ttft_ms_p50"]["verdict"] == "worse" and rows["ttft_ms_p50"]["change"] > 100
    assert rows["requests_per_s"]["verdict"] == "worse"
    text = bench("compare", str(out), str(tmp_path / "slow" / "result.json"), cwd=tmp_path)
    assert text.returncode == 0 and "ttft_ms_p50" in text.stdout and "worse" in text.stdout


def test_poisson_arrivals_keep_the_rate_and_errors_are_counted_by_type(tmp_path: Path) -> None:
    failing = MockUpstream(MockOptions(latency_ms=5, error_rate=0.5, error_status=503, seed=3))
    with ThreadServer(failing) as upstream:
        r = bench(
            "run", "--url", upstream.url, "--model", "m", "--rate", "40", "--requests", "120", "--seed", "7",
            "--no-track", "--json", cwd=tmp_path,
        )  # fmt: skip
    s = result_of(r)["summary"]
    assert s["requests"] == 120
    assert s["offered_rate"] == pytest.approx(40, rel=0.25)
    assert set(s["errors_by_type"]) == {"http_503"}
    assert s["errors_by_type"]["http_503"] == s["errors"] and 30 <= s["errors"] <= 90
    assert s["goodput"]["requests"] == s["ok"]

    # Nothing listening: connection errors; an upstream slower than --timeout: timeouts.
    closed = bench(
        "run", "--url", f"http://127.0.0.1:{free_port()}", "--model", "m", "--requests", "3", "--no-track",
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert closed.returncode == 1 and "every request failed (connection)" in closed.stderr
    with ThreadServer(MockUpstream(MockOptions(latency_ms=2000))) as slow:
        timed = bench(
            "run", "--url", slow.url, "--model", "m", "--requests", "2", "--timeout", "0.3", "--no-track",
            "--json", cwd=tmp_path,
        )  # fmt: skip
    assert json.loads(timed.stdout)["summary"]["errors_by_type"] == {"timeout": 2}


def test_a_sweep_finds_the_knee_of_an_upstream_with_two_slots(tmp_path: Path) -> None:
    mock = MockUpstream(MockOptions(latency_ms=100, output_tokens=4))
    with ThreadServer(Capacity(mock, 2)) as upstream:
        r = bench(
            "run", "--url", upstream.url, "--model", "m", "--sweep", "--levels", "1,2,4,8",
            "--requests", "16", "--no-track", "--json", "--output", str(tmp_path / "sweep"), cwd=tmp_path,
        )  # fmt: skip
    result = result_of(r)
    knee = result["sweep"]["knee"]
    assert knee["saturated"] and result["levels"][knee["index"]]["load"]["value"] == 2
    assert len(result["levels"]) == 3  # stopped at the first level that did not gain
    assert result["summary"] == result["levels"][knee["index"]]["summary"]
    assert "knee" in (tmp_path / "sweep" / "report.html").read_text()


def test_the_knee_rule_on_errors_and_the_slo() -> None:
    def level(value: int, rps: float, error_rate: float = 0.0, good: float = 1.0) -> dict[str, Any]:
        return {
            "load": {"kind": "concurrency", "value": value},
            "summary": {"requests_per_s": rps, "error_rate": error_rate, "goodput": {"fraction": good}},
        }

    rule = SweepRule(min_gain=0.1, max_error_rate=0.05, min_goodput=0.9)
    errors = find_knee([level(1, 10), level(2, 19), level(4, 35, error_rate=0.2)], rule, {})
    assert errors["index"] == 1 and "error rate 20.0%" in errors["reason"]
    slo = find_knee([level(1, 10), level(2, 19, good=0.5)], rule, {"ttft": 500.0})
    assert slo["index"] == 0 and "goodput 50.0%" in slo["reason"]
    growing = find_knee([level(1, 10), level(2, 19)], rule, {})
    assert growing["index"] is None and not growing["saturated"]


def test_replay_sends_stored_traces_with_their_parameters_and_pace(
    shipyard_server: Any, paced: Any, tmp_path: Path
) -> None:
    server = shipyard_server(config(paced.url))
    client = server.openai()
    ids = []
    for i in range(5):
        answer = client.chat.completions.with_raw_response.create(
            model="bench",
            messages=[{"role": "user", "content": f"replay me {i}"}],
            temperature=0.3,
            max_tokens=3,
        )
        ids.append(answer.headers["x-shipyard-trace-id"])
        time.sleep(0.2)
    for trace_id in ids:
        wait_trace(server.store_url(), trace_id)
    before = len(paced.mock.provider.received)
    r = bench(
        "run", "--url", server.url, "--model", "bench", "--replay", "--time-scale", "2",
        "--home", str(server.home), "--no-track", "--json",
        cwd=tmp_path, env={"SHIPYARD_API_KEY": server.admin_key},
    )  # fmt: skip
    result = result_of(r)
    assert result["workload"]["kind"] == "replay" and result["workload"]["traces"] == 5
    replayed = list(paced.mock.provider.received)[before:]
    assert len(replayed) == 5 and result["summary"]["requests"] == 5  # each trace once
    assert {b["temperature"] for b in replayed} == {0.3} and {b["max_tokens"] for b in replayed} == {3}
    assert {b["messages"][-1]["content"] for b in replayed} >= {f"replay me {i}" for i in range(5)}
    # Five requests about 0.2 s apart, replayed twice as fast: about 0.4 s of arrivals in all.
    span = result["workload"]["span_s"]
    assert 0.35 <= span <= 0.8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slo", "ttft=abc"], "--slo: bad duration `abc` in term `ttft=abc`"),
        (["--slo", "latency=1s"], "--slo: bad term `latency=1s`"),
        (["--rate", "-1"], "--rate must be a positive number"),
        (["--rate", "5", "--concurrency", "2"], "--concurrency and --rate contradict"),
        (["--synthetic", "input=lots"], "--synthetic: bad term `input=lots`"),
        (["--duration", "forever"], "--duration: `forever` is not a duration"),
        (["--sweep", "--levels", "4,2"], "--levels: `4,2` must be positive numbers in rising order"),
        (["--dataset", "missing.jsonl"], "--dataset: no dataset file at `missing.jsonl`"),
    ],
)
def test_bad_options_exit_2_naming_the_option(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["bench", "run", "--model", "m", "--no-track", "--home", str(tmp_path), *args]
    )
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_a_registry_dataset_is_the_workload(tmp_path: Path) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        "\n".join(json.dumps({"input": [{"role": "user", "content": f"question {i}"}]}) for i in range(3))
        + "\n"
    )
    runner = CliRunner()
    imported = runner.invoke(app, ["datasets", "import", "qs", str(cases), "--home", str(tmp_path / "h")])
    assert imported.exit_code == 0, imported.output
    mock = MockUpstream(MockOptions(keep_received=100))
    with ThreadServer(mock) as upstream:
        result = runner.invoke(
            app,
            ["bench", "run", "--url", upstream.url, "--model", "m", "--dataset", "qs@v1", "--max-tokens", "5",
             "--requests", "6", "--home", str(tmp_path / "h"), "--json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    sent = [b["messages"][0]["content"] for b in mock.provider.received]
    assert sorted(sent) == sorted([f"question {i}" for i in range(3)] * 2)  # cycled through the examples
    assert {b["max_tokens"] for b in mock.provider.received} == {5}
    listed = runner.invoke(app, ["runs", "list", "--home", str(tmp_path / "h"), "--json"])
    assert listed.exit_code == 0 and "bench m" in listed.output


def test_the_report_escapes_what_the_run_names() -> None:
    from shipyard.bench import Record, render_html, summarize
    from shipyard.bench.metrics import samples

    records = [Record(sent=0.0, e2e_ms=120.0, ttft_ms=40.0, itl_ms=[10.0, 12.0], output_tokens=3),
               Record(sent=0.1, e2e_ms=5.0, error="http_<b>500</b>")]  # fmt: skip
    level = {
        "load": {"kind": "concurrency", "value": 2, "max_in_flight": 2},
        "summary": summarize(records, 0.2, {"ttft": 500.0}, 2),
        "samples": samples(records),
    }
    hostile = "<script>alert(1)</script>"
    result = {
        "target": {"url": f"http://x/{hostile}", "model": hostile, "stream": True},
        "mode": "concurrency", "workload": {"kind": "synthetic"}, "started_at": "now", "duration_s": 0.2,
        "run_id": None, "slo_ms": {"ttft": 500.0}, "sweep": None, "levels": [level], "headline": 0,
        "summary": level["summary"],
    }  # fmt: skip
    html = render_html(result)
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "http_&lt;b&gt;500&lt;/b&gt; 1" in html
    assert (
        html.count("<svg") == 3
    )  # latency bars, TTFT and ITL distributions (one level: no throughput curve)
