"""Online evals: eval-suite scorers on a sampled share of live traffic, scored in the background
(never on the request path) and stored as trace scores that the score API charts over time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, cast

import pytest

from shipyard.errors import ConfigError
from shipyard.evals.core import Score
from shipyard.gateway.service import Gateway
from shipyard.monitoring.config import OnlineEval
from shipyard.monitoring.online import JUDGE_TAG, OnlineEvaluator, case_of, observation_of, score_detail
from shipyard.registry.validation import parse_config
from shipyard.store import scores as scores_q
from shipyard.store import traces as traces_q
from shipyard.store.db import Store
from shipyard.tracing.spans import Trace

NO_GATEWAY = cast(Gateway, None)  # these scorers never call a judge
JSON_ANSWER = '{"status": "ok", "items": [1, 2]}'
SLOW_SECONDS = 1.0

CONFIG = f"""
version: 1
providers:
  - {{name: words, type: mock}}
  - {{name: json-mock, type: mock, output: '{JSON_ANSWER}'}}
  - {{name: judge-mock, type: mock, output: "The output is JSON with a status.\\nVERDICT: PASS"}}
models:
  - {{name: json-model, provider: json-mock}}
  - {{name: words-model, provider: words}}
  - {{name: judge-model, provider: judge-mock}}
routes:
  - {{name: api, targets: [{{model: json-model}}]}}
  - {{name: quiet, targets: [{{model: words-model}}]}}
  - {{name: judge, targets: [{{model: judge-model}}]}}
monitoring:
  online_evals:
    - route: api
      sample: 1.0
      scorers:
        - {{type: is_json}}
        - {{type: contains, value: status}}
        - {{type: regex, pattern: '"items": \\[', name: has-items}}
        - {{type: llm_judge, route: judge, rubric: "The output is JSON that reports a status."}}
        - {{type: custom, function: "slow_scorer:slow", name: slow}}
    - route: quiet
      sample: 0
      scorers:
        - {{type: length, max: 10000}}
"""

# A *sync* scorer that sleeps: were scoring on the gateway's event loop, every request would wait.
SLOW_SCORER = f"""
import time


def slow(case, observation):
    time.sleep({SLOW_SECONDS})
    return (1.0, "slept")
"""


def _wait_scores(store: Store, route: str, expected: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n = scores_q.count_scores(store, route=route)
        if n >= expected:
            return n
        time.sleep(0.2)
    return n


def test_online_evals_score_sampled_live_traffic_off_the_request_path(
    shipyard_server: Any, tmp_path: Path
) -> None:
    (tmp_path / "slow_scorer.py").write_text(SLOW_SCORER)
    server = shipyard_server(CONFIG)
    client = server.openai()

    # Warm up the connection and the route before timing anything.
    client.chat.completions.create(model="quiet", messages=[{"role": "user", "content": "warm up"}])

    ids: list[str] = []
    durations: list[float] = []
    for i in range(5):
        started = time.perf_counter()
        raw = client.chat.completions.with_raw_response.create(
            model="api", messages=[{"role": "user", "content": f"give me status number {i}"}]
        )
        durations.append(time.perf_counter() - started)
        ids.append(raw.headers["x-shipyard-trace-id"])
    with client.chat.completions.with_streaming_response.create(
        model="api", messages=[{"role": "user", "content": "stream the status"}], stream=True
    ) as resp:
        ids.append(resp.headers["x-shipyard-trace-id"])
        for _ in resp.iter_lines():
            pass
    for i in range(3):
        client.chat.completions.create(model="quiet", messages=[{"role": "user", "content": f"hi {i}"}])

    # Each trace's scoring sleeps SLOW_SECONDS in a sync scorer; the requests never waited for it.
    assert max(durations) < SLOW_SECONDS / 2, durations

    store = Store(server.store_url())
    try:
        n = _wait_scores(store, "api", 6 * 5)
        assert n == 6 * 5, server.log()
        for trace_id in ids:
            rows = {r["name"]: r for r in scores_q.scores_for_trace(store, trace_id)}
            assert set(rows) == {"is_json", "contains", "has-items", "llm_judge", "slow"}, rows
            for row in rows.values():
                assert row["source"] == "online" and row["route"] == "api"
                assert row["score"] == 1.0 and row["passed"] is True, row
                assert row["detail"]["online_eval"] == "api"
            judge = rows["llm_judge"]["detail"]
            assert judge["details"]["judge_route"] == "judge"
            assert judge["details"]["votes"] == {"pass": 1, "fail": 0, "abstain": 0}
            # The judged input is the request's own messages.
            assert "give me status" in str(judge["details"]["messages"]) or "stream" in str(
                judge["details"]["messages"]
            )
            trace = traces_q.get_trace(store, trace_id)
            assert trace is not None and rows["slow"]["trace_time"] == trace["start_time"]

        # The judge's own calls are traced (they cost money), tagged, and never scored themselves.
        # A judge call's trace goes through the batch writer, which may still hold the last one
        # when its score (written directly) is already in.
        deadline = time.monotonic() + 10
        while True:
            judge_traces = traces_q.list_traces(store, traces_q.TraceFilter(route="judge"), limit=50)
            if len(judge_traces) >= 6 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(judge_traces) == 6
        assert all(t["tags"] == [JUDGE_TAG] for t in judge_traces)
        assert scores_q.count_scores(store, route="judge") == 0
        # sample: 0 scores nothing.
        assert scores_q.count_scores(store, route="quiet") == 0
    finally:
        store.close()

    with server.api() as api:
        # Charted over time: the series endpoint sums up to every score of the name.
        series = api.get("/scores", params={"name": "is_json", "route": "api", "since": "1h"})
        assert series.status_code == 200, series.text
        body = series.json()
        assert sum(p["count"] for p in body["points"]) == 6
        assert all(p["avg"] == 1.0 and p["pass_rate"] == 1.0 for p in body["points"])
        assert body["step"] >= 1 and body["since"] < body["until"]

        names = api.get("/scores/names").json()["data"]
        one_by_one = [api.get("/scores/names", params={"limit": 1}).json()]
        while one_by_one[-1]["next"]:
            cursor = one_by_one[-1]["next"]
            one_by_one.append(api.get("/scores/names", params={"limit": 1, "cursor": cursor}).json())
        assert [n for page in one_by_one for n in page["data"]] == names
        assert {(n["name"], n["route"], n["count"]) for n in names} == {
            (name, "api", 6) for name in ("is_json", "contains", "has-items", "llm_judge", "slow")
        }
        per_trace = api.get(f"/scores/trace/{ids[0]}").json()
        assert len(per_trace["data"]) == 5 and per_trace["next"] is None

        status = api.get("/monitoring").json()["online_evals"]
        by_name = {e["name"]: e for e in status["evals"]}
        assert by_name["api"]["sampled"] == 6 and by_name["api"]["scored"] == 6
        assert by_name["quiet"]["sampled"] == 0
        assert status["dropped"] == 0

        bad = api.get("/scores", params={"name": "is_json", "since": "yesterday-ish"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"
        missing = api.get("/scores")
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "name"


def _config_problems(monitoring: str) -> list[str]:
    text = (
        "version: 1\nproviders: [{name: m, type: mock}]\nmodels: [{name: mm, provider: m}]\n"
        "routes: [{name: r, targets: [{model: mm}]}]\nmonitoring:\n" + monitoring
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text, "shipyard.yaml", environ={})
    return err.value.problems


def test_scorers_that_need_an_expected_answer_are_rejected_at_load() -> None:
    problems = _config_problems(
        "  online_evals:\n"
        "    - route: r\n"
        "      sample: 0.5\n"
        "      scorers:\n"
        "        - {type: is_json}\n"
        "        - {type: equals}\n"
    )
    assert len(problems) == 1
    assert problems[0].startswith("shipyard.yaml:7: monitoring.online_evals[0]")
    assert "scorers[1] (`equals`) compares the output with an expected answer" in problems[0]
    assert "set its `value:`" in problems[0]
    # With the answer given, the same scorer is fine on live traffic.
    OnlineEval.model_validate({"route": "r", "sample": 1, "scorers": [{"type": "equals", "value": "yes"}]})


def test_bad_online_eval_configs_name_the_problem() -> None:
    cases = {
        "      sample: 1.5\n      scorers: [{type: is_json}]\n": "less than or equal to 1",
        "      sample: 1\n      scorers: []\n": "at least 1 item",
        "      sample: 1\n      scorers: [{type: nope}]\n": "unknown scorer type `nope`",
        "      sample: 1\n      scorers: [{type: regex, pattern: '('}]\n": "pattern: does not compile",
        "      sample: 1\n      scorers: [{type: is_json}]\n      every: 5m\n": "unknown key `every`",
    }
    for body, expected in cases.items():
        problems = _config_problems("  online_evals:\n    - route: r\n" + body)
        assert any(expected in p for p in problems), (expected, problems)
        assert all(p.startswith("shipyard.yaml:") for p in problems)
    dup = _config_problems(
        "  online_evals:\n"
        "    - {route: r, sample: 1, scorers: [{type: is_json}]}\n"
        "    - {route: r, sample: 1, name: second, scorers: [{type: is_json}]}\n"
    )
    assert "both score route `r` with a scorer named `is_json`" in dup[0]


def _trace(**kw: Any) -> Trace:
    t = Trace(operation="chat", route="r", **kw)
    t.end = t.start + 0.05
    return t


def test_observer_is_bounded_and_only_samples_successful_traffic_of_its_route(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.migrate()
    spec = OnlineEval.model_validate({"route": "r", "sample": 1.0, "scorers": [{"type": "is_json"}]})
    evaluator = OnlineEvaluator(store, NO_GATEWAY, [spec], queue_size=2)
    evaluator.observe(_trace(output="{}"))
    assert evaluator.queued == 0  # not started: inert
    evaluator.accepting = True
    evaluator.observe(_trace(output="{}", status="error"))
    evaluator.observe(Trace(operation="chat", route="other", output="{}"))
    evaluator.observe(_trace(output="{}", tags=[JUDGE_TAG]))
    evaluator.observe(Trace(operation="embeddings", route="r"))
    assert evaluator.queued == 0
    for _ in range(5):
        evaluator.observe(_trace(output="{}"))
    assert evaluator.queued == 2 and evaluator.dropped == 3
    assert evaluator.status()[0]["sampled"] == 2

    half = OnlineEval.model_validate({"route": "r", "sample": 0.25, "scorers": [{"type": "is_json"}]})
    sampler = OnlineEvaluator(store, NO_GATEWAY, [half], queue_size=100_000)
    sampler.accepting = True
    for _ in range(4000):
        sampler.observe(_trace(output="{}"))
    assert 800 <= sampler.queued <= 1200  # 1000 expected; 6+ standard deviations of slack
    store.close()


def test_a_live_trace_becomes_a_case_and_an_observation() -> None:
    t = _trace(
        input=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        output="hello",
        input_tokens=7,
        output_tokens=2,
        cost_usd=0.001,
        model="m",
    )
    case, obs = case_of(t), observation_of(t)
    assert case.id == t.trace_id and case.input == t.input and case.expected is None
    assert obs.output == "hello" and obs.input_tokens == 7 and obs.cost_usd == 0.001
    assert obs.latency_ms == pytest.approx(50, abs=1) and obs.trace_id == t.trace_id
    completion = Trace(operation="text_completion", route="r", input="Once upon")
    assert case_of(completion).input == [{"role": "user", "content": "Once upon"}]


def test_stored_detail_follows_the_capture_policy() -> None:
    score = Score(1.0, True, "output matches /x/", {"match": "secret text", "votes": {"pass": 1}})
    assert score_detail(score, "e", "full")["details"] == {"match": "secret text", "votes": {"pass": 1}}
    assert score_detail(score, "e", "truncated")["details"] == {"votes": {"pass": 1}}
    assert score_detail(score, "e", "none") == {"online_eval": "e"}


def test_a_crashing_scorer_stores_no_value_and_the_rest_still_score(tmp_path: Path) -> None:
    (tmp_path / "crashing_scorer.py").write_text("def boom(case, obs):\n    raise RuntimeError('kaput')\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        spec = OnlineEval.model_validate(
            {
                "route": "r",
                "sample": 1.0,
                "scorers": [{"type": "custom", "function": "crashing_scorer:boom"}, {"type": "is_json"}],
            }
        )
    finally:
        sys.path.remove(str(tmp_path))
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.migrate()
    evaluator = OnlineEvaluator(store, NO_GATEWAY, [spec])
    trace = _trace(output='{"a": 1}')

    async def run() -> None:
        evaluator.start(asyncio.get_running_loop())
        evaluator.observe(trace)
        await evaluator.stop(10)

    asyncio.run(run())
    rows = {r["name"]: r for r in scores_q.scores_for_trace(store, trace.trace_id)}
    assert rows["custom"]["score"] is None and "kaput" in rows["custom"]["detail"]["error"]
    assert rows["is_json"]["score"] == 1.0
    assert evaluator.status()[0]["failed_scores"] == 1
    store.close()
