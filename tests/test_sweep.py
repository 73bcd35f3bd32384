"""`shipyard sweep` as a user runs it: a real `shipyard up` with two routes on paced mock models
with pricing, an eval suite, and a grid over routes × max_tokens; quality, cost and p95 latency of
each point checked against what the mocks do, the Pareto front and the best point under a limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shipyard.cli.main import app
from shipyard.sweep import best, front

CONFIG = """
providers:
  - {name: quick, type: mock, output: "alpha beta gamma delta", latency_ms: 20, tokens_per_s: 50}
  - {name: slow, type: mock, output: "alpha beta gamma delta", latency_ms: 300, tokens_per_s: 50}
models:
  - {name: quick-m, provider: quick, pricing: {input_per_mtok: 1000, output_per_mtok: 2000}}
  - {name: slow-m, provider: slow, pricing: {input_per_mtok: 1000, output_per_mtok: 2000}}
routes:
  - {name: quick, targets: [{model: quick-m}]}
  - {name: slow, targets: [{model: slow-m}]}
"""

SUITE = """
name: ends-with-delta
dataset:
  cases:
    - {input: [{role: user, content: "first question"}], expected: delta}
    - {input: [{role: user, content: "second question"}], expected: delta}
targets: [{route: quick}]
scorers: [{type: contains}]
"""


def test_a_sweep_reports_quality_latency_cost_the_front_and_the_best_point(
    shipyard_server: Any, tmp_path: Path
) -> None:
    server = shipyard_server(CONFIG)
    (tmp_path / "suite.yaml").write_text(SUITE)
    (tmp_path / "sweep.yaml").write_text(
        "suite: suite.yaml\ntargets: [quick, slow]\nparams: {max_tokens: [1, 4]}\n"
        "bench: {requests: 6, concurrency: 2}\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "shipyard", "sweep", "--spec", str(tmp_path / "sweep.yaml"),
         "--url", server.url, "--home", str(server.home), "--max-p95", "200ms",
         "--output", str(tmp_path / "out"), "--json"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
        env={**os.environ, "SHIPYARD_API_KEY": server.admin_key},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    points = {p["label"]: p for p in result["points"]}
    assert set(points) == {
        "quick max_tokens=1",
        "quick max_tokens=4",
        "slow max_tokens=1",
        "slow max_tokens=4",
    }
    # One token ("alpha") misses the expected word; four reach "delta".
    assert points["quick max_tokens=1"]["quality"] == 0.0 and points["quick max_tokens=4"]["quality"] == 1.0
    # Cost follows the output tokens at the same pricing; p95 follows each mock's delay and pace.
    assert (
        points["quick max_tokens=1"]["cost_per_request_usd"]
        < points["quick max_tokens=4"]["cost_per_request_usd"]
    )
    assert points["quick max_tokens=4"]["p95_ms"] >= 20 + 3 * 20
    assert points["slow max_tokens=1"]["p95_ms"] >= 300
    # The slow route is never better: both of its points are dominated by the quick ones.
    on_front = {result["points"][i]["label"] for i in result["front"]}
    assert on_front == {"quick max_tokens=1", "quick max_tokens=4"}
    # Under a 200 ms p95 limit the best point is the fastest route with the best quality that fits.
    assert result["points"][result["best"]]["label"] == "quick max_tokens=4"
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<svg" in html and "<script" not in html and "quick max_tokens=4" in html
    shown = subprocess.run(
        [sys.executable, "-m", "shipyard", "runs", "show", result["run_id"], "--home", str(server.home),
         "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    run = json.loads(shown.stdout)
    assert run["status"] == "finished" and run["metrics"]["best_quality"]["last"] == 1.0
    assert {a["path"] for a in run["artifacts"]} >= {"sweep.json", "report.html"}

    # A limit no point meets: no best point, said so.
    rows = result["points"]
    assert best(rows, 10.0, None) == (None, "no point meets p95 ≤ 10 ms")
    assert set(front(rows)) == set(result["front"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--suite", "s.yaml", "--target", "r", "--param", "temperature=hot"], "--param: `temperature=hot`"),
        (["--suite", "s.yaml", "--target", "r", "--param", "seed=1,2"], "params: `seed` is not a parameter"),
        (
            ["--suite", "s.yaml", "--target", "r", "--param", "top_p=0.5,3"],
            "params.top_p: `3.0` is not allowed",
        ),
        (["--suite", "s.yaml"], "give --spec FILE, or --suite FILE with at least one --target"),
        (["--spec", "missing.yaml"], "--spec: no file at `missing.yaml`"),
        (["--suite", "s.yaml", "--target", "r", "--max-p95", "soon"], "--max-p95: `soon` is not a duration"),
    ],
)
def test_bad_sweep_options_exit_2_naming_the_option(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sweep", "--no-track", "--home", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
