"""Alert rules end to end: a real server, real traffic or a real drift in the store, a real webhook
receiver. Firing after `for`, exactly one notification per state change, recovery after a restart
without re-notifying, resolution; the state machine and delivery in-process; bad config errors."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shipyard.config.loader import read_document
from shipyard.errors import ConfigError
from shipyard.monitoring.alerts import AlertEngine, MetricError, Notification, Notifier, measure
from shipyard.monitoring.config import DRIFT_METRICS, AlertRule, MonitoringConfig
from shipyard.registry.validation import parse_config
from shipyard.store import alerts as alerts_q
from shipyard.store import scores as scores_q
from shipyard.store import traces as traces_q
from shipyard.store.db import Store
from shipyard.store.tables import alert_events, feedback, traces
from shipyard.tracing.spans import Trace
from tests.conftest import ThreadServer, cli_env, store_url_for


# -- a webhook receiver -----------------------------------------------------------------------------
class Receiver:
    """Collects JSON POSTs; answers ``fail_first`` of them with HTTP 500 (to exercise retries)."""

    def __init__(self, fail_first: int = 0, status: int = 500) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.attempts = 0
        self.fail_first = fail_first
        self.status = status
        self._lock = threading.Lock()

        async def hook(request: Request) -> JSONResponse:
            body = await request.json()
            with self._lock:
                self.attempts += 1
                if self.attempts <= self.fail_first:
                    return JSONResponse({"error": "not now"}, status_code=self.status)
                self.received.append(body)
                self.headers.append(dict(request.headers))
            return JSONResponse({"ok": True})

        self.server = ThreadServer(Starlette(routes=[Route("/hook", hook, methods=["POST"])]))
        self.url = self.server.url + "/hook"

    def wait(self, n: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= n:
                    return list(self.received)
            time.sleep(0.1)
        raise AssertionError(f"expected {n} notification(s) within {timeout}s, got {self.received}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    with r.server:
        yield r


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def rules_by_name(server: Any) -> dict[str, dict[str, Any]]:
    body = httpx.get(server.url + "/api/alerts", headers=server.headers).json()
    return {r["name"]: r for r in body["data"]}


# -- synthetic traffic for drift --------------------------------------------------------------------
COOKING = (
    "How long should I bake {a} bread with {b} at {n} degrees?",
    "What spice goes well with {a} soup and {b}?",
    "Can I replace {a} butter with {b} oil in a cake recipe?",
    "How do I keep {a} pasta from sticking when I add {b}?",
    "Is it safe to roast {a} vegetables with {b} for {n} minutes?",
)
COOKING_WORDS = ("garlic", "tomato", "lemon", "basil", "onion", "ginger", "honey", "pepper", "rice", "cheese")
CARS = (
    "Why does my {a} engine rattle when the {b} warms up after {n} miles?",
    "How often should the {a} brake pads and {b} be replaced?",
    "My dashboard shows a {a} warning light next to the {b} gauge, what now?",
    "Is a {a} transmission leak dangerous if the {b} is low?",
    "What tire pressure should a {a} sedan with a {b} spare use at {n} psi?",
)
CAR_WORDS = ("diesel", "clutch", "radiator", "alternator", "battery", "gearbox", "coolant", "piston", "axle")


def topic_traces(route: str, topic: str, since: float, until: float, n: int, seed: int) -> list[Trace]:
    rng = random.Random(seed)
    templates, words = (COOKING, COOKING_WORDS) if topic == "cooking" else (CARS, CAR_WORDS)
    out = []
    for i in range(n):
        prompt = rng.choice(templates).format(a=rng.choice(words), b=rng.choice(words), n=rng.randint(5, 500))
        answer = f"Here is what to do about {rng.choice(words)} and {rng.choice(words)}: keep it simple."
        t = Trace(operation="chat", route=route, model="m", target="m", provider="mock", attempts=1)
        t.start = since + (until - since) * (i + rng.random()) / n
        t.end = t.start + rng.uniform(0.2, 0.4)
        t.input = [{"role": "user", "content": prompt}]
        t.output = answer
        t.input_tokens, t.output_tokens = len(prompt.split()), len(answer.split())
        out.append(t)
    return out


DRIFT_CONFIG = """
version: 1
providers: [{{name: mock, type: mock}}]
models: [{{name: m, provider: mock}}]
routes:
  - {{name: support, targets: [{{model: m}}]}}
  - {{name: calm, targets: [{{model: m}}]}}
monitoring:
  drift:
    - {{route: support, reference: 1h offset 1h, current: 1h, every: 2s, max_samples: 200}}
    - {{route: calm, reference: 1h offset 1h, current: 1h, every: 2s, max_samples: 200}}
  alerts:
    - name: support-drift
      metric: drift.drifted
      route: support
      op: ">="
      threshold: 1
      severity: critical
      notify: [log, {{webhook: "{hook}", headers: {{X-Token: s3cret}}}}]
    - name: calm-drift
      metric: drift.drifted
      route: calm
      op: ">="
      threshold: 1
      notify: [{{webhook: "{hook}"}}]
"""


def test_a_synthetic_drift_fires_one_webhook_and_resolves_when_unshifted(
    shipyard_server: Any, receiver: Receiver, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    store = Store(store_url_for(home))
    store.migrate()
    now = time.time()
    reference = (now - 7200 + 60, now - 3600 - 60)
    current = (now - 3000, now - 60)
    traces_q.insert_traces(
        store,
        [
            *topic_traces("support", "cooking", *reference, 60, seed=1),
            *topic_traces("support", "cars", *current, 60, seed=2),  # the prompts switched topic
            *topic_traces("calm", "cooking", *reference, 60, seed=3),
            *topic_traces("calm", "cooking", *current, 60, seed=4),  # same topic, other samples
        ],
    )
    server = shipyard_server(DRIFT_CONFIG.format(hook=receiver.url), env={"SHIPYARD_ALERT_INTERVAL": "0.3"})
    try:
        (firing,) = receiver.wait(1)
        assert firing["status"] == "firing" and firing["rule"] == "support-drift"
        assert firing["labels"] == {
            "alertname": "support-drift",
            "metric": "drift.drifted",
            "severity": "critical",
            "route": "support",
        }
        assert firing["value"] == 1.0 and firing["threshold"] == 1.0
        assert firing["message"] == "drift.drifted route=support latest report >= 1 (value 1)"
        assert firing["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
        assert receiver.headers[0]["x-token"] == "s3cret"

        # The unshifted route was checked too, several times, and stayed quiet.
        from shipyard.monitoring.drift import latest_report, list_reports

        wait_for(lambda: len(list_reports(store, "calm")) >= 3, what="three drift checks of `calm`")
        calm = latest_report(store, "calm")
        assert calm is not None
        assert not calm.drifted, calm.results.get("reasons")
        report = latest_report(store, "support")
        assert report is not None and report.drifted
        assert set(report.metrics()) <= set(DRIFT_METRICS), set(report.metrics()) - set(DRIFT_METRICS)

        rules = rules_by_name(server)
        assert rules["support-drift"]["state"] == "firing"
        assert rules["calm-drift"]["state"] == "inactive" and rules["calm-drift"]["value"] == 0.0
        # Still firing, more checks done: no second notification.
        runs = len(list_reports(store, "support"))
        wait_for(lambda: len(list_reports(store, "support")) >= runs + 2, what="two more drift checks")
        assert len(receiver.received) == 1

        # Traffic back to the reference topic: the next check finds no drift and the alert resolves.
        with store.engine.begin() as conn:
            conn.execute(
                traces.delete().where(traces.c.route == "support", traces.c.start_time >= now - 3600)
            )
        traces_q.insert_traces(store, topic_traces("support", "cooking", *current, 60, seed=5))
        firing_again, resolved = receiver.wait(2)
        assert firing_again == firing
        assert resolved["status"] == "resolved" and resolved["rule"] == "support-drift"
        assert resolved["value"] == 0.0 and resolved["startsAt"] == firing["startsAt"]
        assert resolved["endsAt"] > resolved["startsAt"]
        assert rules_by_name(server)["support-drift"]["state"] == "inactive"
        time.sleep(1.0)
        assert len(receiver.received) == 2  # nothing for the calm route, ever

        (episode,) = alerts_q.list_events(store, rule="support-drift")
        assert episode["state"] == "resolved" and episode["resolved_at"] is not None
        deliveries = {(d["channel"], d["event"]): d for d in episode["deliveries"]}
        host = receiver.url.rsplit("/", 1)[0]
        assert set(deliveries) == {
            ("log", "firing"),
            (f"webhook {host}", "firing"),
            ("log", "resolved"),
            (f"webhook {host}", "resolved"),
        }
        assert all(d["ok"] for d in deliveries.values())
        assert "s3cret" not in json.dumps(episode["deliveries"])
        assert alerts_q.list_events(store, rule="calm-drift") == []
    finally:
        store.close()
    assert "FIRING support-drift" in server.log() and "RESOLVED support-drift" in server.log()


ERROR_CONFIG = """
version: 1
providers:
  - {{name: ok, type: mock}}
  - {{name: broken, type: mock, error_rate: 1.0, error_status: 500}}
models:
  - {{name: ok-model, provider: ok}}
  - {{name: broken-model, provider: broken}}
routes:
  - {{name: good, targets: [{{model: ok-model}}]}}
  - {{name: flaky, targets: [{{model: broken-model}}]}}
monitoring:
  alerts:
    - name: high-error-rate
      metric: error_rate
      window: 5m
      op: ">"
      threshold: 0.5
      for: 3s
      notify: [log, {{webhook: "{hook}"}}]
"""


def shipyard_cli(*args: str) -> Any:
    """The CLI in-process (the interpreter and its imports are already warm), on a wide terminal."""
    from typer.testing import CliRunner

    from shipyard.cli.main import app

    return CliRunner().invoke(
        app, list(args), env={"COLUMNS": "200", "SHIPYARD_CONFIG": None, **cli_env(args)}
    )


def test_error_rate_fires_after_its_for_duration_once_survives_a_restart_and_resolves(
    shipyard_server: Any, receiver: Receiver, tmp_path: Path
) -> None:
    import openai

    config = ERROR_CONFIG.format(hook=receiver.url)
    env = {"SHIPYARD_ALERT_INTERVAL": "0.3"}
    server = shipyard_server(config, env=env)
    client = server.openai()
    for i in range(4):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="flaky", messages=[{"role": "user", "content": f"x{i}"}])

    # The condition holds, but only for less than `for`: pending, nothing sent.
    pending = wait_for(
        lambda: (r := rules_by_name(server)["high-error-rate"])["state"] != "inactive" and r,
        timeout=10,
        what="the rule to leave `inactive`",
    )
    assert pending["state"] == "pending", pending
    assert pending["value"] == 1.0 and receiver.received == []

    (firing,) = receiver.wait(1, timeout=30)
    assert firing["status"] == "firing" and firing["rule"] == "high-error-rate"
    assert firing["value"] == 1.0 and firing["severity"] == "warning"
    rule = rules_by_name(server)["high-error-rate"]
    assert rule["state"] == "firing" and rule["since"] - pending["since"] >= 3.0
    forced = httpx.post(server.url + "/api/alerts/evaluate", headers=server.headers)
    assert forced.status_code == 200 and forced.json()["rules"][0]["state"] == "firing"
    time.sleep(1.5)  # several more evaluations
    assert len(receiver.received) == 1

    # A restart adopts the open episode from the store instead of announcing it again.
    server.stop()
    server = shipyard_server(config, env=env)
    assert rules_by_name(server)["high-error-rate"]["state"] == "firing"
    time.sleep(1.5)
    assert len(receiver.received) == 1

    listed = shipyard_cli(
        "alerts", "list", "--json", "--home", str(server.home), "-c", str(server.config_path)
    )
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "high-error-rate" and row["state"] == "firing" and row["condition_met"] is True

    # Successful traffic brings the error rate below the threshold: resolved, once.
    client = server.openai()
    for i in range(10):
        client.chat.completions.create(model="good", messages=[{"role": "user", "content": f"ok {i}"}])
    firing_again, resolved = receiver.wait(2, timeout=30)
    assert firing_again == firing
    # (It resolves as soon as enough successes are written: at 4/8 already, at 4/14 at the latest.)
    assert resolved["status"] == "resolved" and 4 / 14 - 1e-9 <= resolved["value"] <= 0.5
    time.sleep(1.0)
    assert len(receiver.received) == 2

    body = httpx.get(server.url + "/api/alerts", headers=server.headers).json()
    assert body["data"][0]["state"] == "inactive" and body["next"] is None
    (event,) = httpx.get(server.url + "/api/alerts/events", headers=server.headers).json()["data"]
    assert event["state"] == "resolved" and event["rule"] == "high-error-rate"
    assert [d["event"] for d in event["deliveries"] if d["channel"].startswith("webhook")] == [
        "firing",
        "resolved",
    ]
    events = httpx.get(
        server.url + "/api/alerts/events", params={"limit": 5, "state": "resolved"}, headers=server.headers
    )
    assert [e["id"] for e in events.json()["data"]] == [event["id"]]

    listed = shipyard_cli(
        "alerts", "list", "--json", "--home", str(server.home), "-c", str(server.config_path)
    )
    (row,) = json.loads(listed.stdout)
    assert row["state"] == "inactive" and row["last_resolved"] is not None
    table = shipyard_cli("alerts", "events", "--home", str(server.home))
    assert table.exit_code == 0 and "high-error-rate" in table.stdout and "resolved" in table.stdout
    test = shipyard_cli(
        "alerts",
        "test",
        "high-error-rate",
        "--home",
        str(server.home),
        "-c",
        str(server.config_path),
    )
    assert test.exit_code == 0, test.output
    assert receiver.wait(3)[2]["event"] == "test" and receiver.received[2]["labels"]["test"] == "true"
    assert "FIRING high-error-rate" in server.log() or "RESOLVED high-error-rate" in server.log()


# -- the state machine and delivery, in-process -----------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'alerts.db'}")
    s.migrate()
    yield s
    s.close()


def _rule(**kw: Any) -> AlertRule:
    base: dict[str, Any] = {"name": "r", "metric": "error_rate", "op": ">", "threshold": 0.5}
    return AlertRule.model_validate({**base, **kw})


def _traffic(store: Store, ok: int, errors: int, route: str = "api") -> None:
    batch = []
    for i in range(ok + errors):
        t = Trace(operation="chat", route=route, model="m", attempts=1)
        t.end = t.start + 0.1
        if i >= ok:
            t.status, t.status_code, t.error = "error", 502, "boom"
        batch.append(t)
    traces_q.insert_traces(store, batch)


def test_state_machine_pending_firing_dedup_repeat_and_resolution(store: Store) -> None:
    rule = _rule(**{"for": "10s", "repeat": "30s"})
    a, b = AlertEngine(store, [rule]), AlertEngine(store, [rule])  # two workers sharing one store
    t0 = time.time()
    assert a.evaluate(t0) == [] and a.states[rule.fingerprint].state == "inactive"  # no data: never fires
    _traffic(store, ok=1, errors=3)
    assert a.evaluate(t0 + 1) == [] and a.states[rule.fingerprint].state == "pending"
    assert a.evaluate(t0 + 5) == []
    (note,) = a.evaluate(t0 + 11)
    assert note.status == "firing" and note.event == "firing" and note.value == 0.75
    assert a.evaluate(t0 + 12) == []
    # The other worker reaches the same conclusion but finds the episode open: no second notification.
    assert b.evaluate(t0 + 1) == [] and b.evaluate(t0 + 12) == []
    assert b.states[rule.fingerprint].state == "firing"
    # A restart (a fresh engine) adopts it.
    c = AlertEngine(store, [rule])
    c.recover(t0 + 13)
    assert c.states[rule.fingerprint].state == "firing" and c.evaluate(t0 + 14) == []
    # The repeat is sent once, by whoever claims it first.
    (repeat,) = a.evaluate(t0 + 42)
    assert repeat.event == "repeat" and repeat.status == "firing"
    assert b.evaluate(t0 + 42) == [] and c.evaluate(t0 + 42) == []
    assert a.evaluate(t0 + 43) == []
    # Resolution: one notification, whichever worker sees it first.
    _traffic(store, ok=20, errors=0)
    (resolved,) = c.evaluate(t0 + 50)
    assert resolved.status == "resolved" and resolved.value == pytest.approx(3 / 24)
    assert a.evaluate(t0 + 51) == [] and b.evaluate(t0 + 51) == []
    assert all(e.states[rule.fingerprint].state == "inactive" for e in (a, b, c))
    (episode,) = alerts_q.list_events(store)
    assert episode["state"] == "resolved" and episode["started_at"] == t0 + 11
    assert episode["resolved_at"] == t0 + 50 and episode["value"] == pytest.approx(3 / 24)


def test_a_removed_rule_closes_its_open_episode_without_notifying(store: Store) -> None:
    old = _rule(name="old")
    _traffic(store, ok=0, errors=2)
    assert len(AlertEngine(store, [old]).evaluate()) == 1
    engine = AlertEngine(store, [_rule(name="new", metric="requests", op="<", threshold=0)])
    engine.recover()
    (episode,) = alerts_q.list_events(store, rule="old")
    assert episode["state"] == "resolved" and "no longer configured" in episode["message"]


def test_metrics_from_rollups_scores_feedback_and_drift(store: Store) -> None:
    now = time.time()
    _traffic(store, ok=8, errors=2, route="api")
    _traffic(store, ok=5, errors=0, route="other")
    assert measure(store, _rule(metric="requests", route="api"), now) == 10
    assert measure(store, _rule(metric="error_rate", route="api"), now) == pytest.approx(0.2)
    assert measure(store, _rule(metric="requests"), now) == 15
    rps = measure(store, _rule(metric="requests_per_s", window="5m"), now)
    assert rps is not None and 15 / 360 <= rps <= 15 / 300  # the window starts at a whole minute
    p95 = measure(store, _rule(metric="latency_p95_ms", route="api"), now)
    assert p95 is not None and 2**6.5 <= p95 <= 2**7  # inside the histogram bucket that holds 100 ms
    assert measure(store, _rule(metric="error_rate", route="nothing-here"), now) is None

    values = [0.1, 0.2, 0.3, 0.4, 1.0]
    scores_q.insert_scores(
        store,
        [
            scores_q.ScoreRow(f"t{i}", "judge", v, v >= 0.3, None, "online", "api", now - 10)
            for i, v in enumerate(values)
        ]
        + [scores_q.ScoreRow("old", "judge", 0.0, False, None, "online", "api", now - 7200)],
    )
    expect = {"avg": 0.4, "min": 0.1, "max": 1.0, "count": 5, "p50": 0.3, "p95": 0.88, "pass_rate": 0.6}
    for agg, value in expect.items():
        rule = _rule(metric="score.judge", aggregation=agg, route="api", window="1h")
        assert measure(store, rule, now) == pytest.approx(value), agg
    assert measure(store, _rule(metric="score.judge", route="other"), now) is None

    api_trace = traces_q.list_traces(store, traces_q.TraceFilter(route="api"), limit=1)[0]["trace_id"]
    with store.engine.begin() as conn:
        conn.execute(
            feedback.insert(),
            [
                {
                    "trace_id": api_trace,
                    "name": "thumbs",
                    "kind": "thumbs",
                    "score": 1.0,
                    "created_at": now - 5,
                },
                {
                    "trace_id": api_trace,
                    "name": "thumbs",
                    "kind": "thumbs",
                    "score": 0.0,
                    "created_at": now - 5,
                },
                {
                    "trace_id": "elsewhere",
                    "name": "thumbs",
                    "kind": "thumbs",
                    "score": 0.0,
                    "created_at": now - 5,
                },
            ],
        )
    assert measure(store, _rule(metric="feedback.thumbs"), now) == pytest.approx(1 / 3)
    assert measure(store, _rule(metric="feedback.thumbs", route="api"), now) == 0.5
    assert measure(store, _rule(metric="feedback.thumbs", aggregation="count"), now) == 3

    from shipyard.store import drift as drift_q

    drift_rule = _rule(metric="drift.mmd_prompt_p", route="api", op="<", threshold=0.01)
    assert measure(store, drift_rule, now) is None  # no report yet: no data
    drift_q.insert_report(
        store,
        route="api",
        created_at=now,
        reference={},
        current={},
        n_reference=40,
        n_current=40,
        drifted=False,
        results={"tests": [], "skipped": [{"name": "mmd_prompt", "reason": "no prompts captured"}]},
    )
    assert measure(store, _rule(metric="drift.drifted", route="api"), now) == 0.0
    with pytest.raises(MetricError, match="has no statistic `mmd_prompt_p`; it has: drifted, n_current"):
        measure(store, drift_rule, now)
    engine = AlertEngine(store, [drift_rule])
    assert engine.evaluate(now) == []
    assert "mmd_prompt_p" in (engine.states[drift_rule.fingerprint].error or "")


def test_webhook_delivery_retries_then_succeeds_and_4xx_is_not_retried(caplog: Any) -> None:
    flaky = Receiver(fail_first=2)
    refusing = Receiver(fail_first=100, status=404)
    with flaky.server, refusing.server:
        rule = _rule(
            severity="critical",
            notify=[
                "log",
                {"webhook": flaky.url, "retries": 3, "timeout": "2s"},
                {"webhook": refusing.url, "retries": 3},
                {"webhook": "http://127.0.0.1:9/nowhere", "retries": 1, "timeout": "1s"},
            ],
        )
        note = Notification("firing", "firing", rule, 0.9, time.time(), None, "too many errors")

        async def send() -> list[dict[str, Any]]:
            notifier = Notifier()
            notifier.backoff = 0.01
            try:
                return await notifier.deliver(note)
            finally:
                await notifier.close()

        with caplog.at_level(logging.INFO, logger="shipyard.alerts"):
            log_rec, ok, refused, unreachable = asyncio.run(send())
    assert log_rec["ok"] and log_rec["channel"] == "log"
    assert any(
        r.levelno == logging.ERROR and "FIRING r: too many errors" in r.getMessage() for r in caplog.records
    )
    assert ok == {**ok, "ok": True, "status": 200, "attempts": 3}
    assert flaky.received[0]["message"] == "too many errors" and flaky.received[0]["status"] == "firing"
    assert refused["ok"] is False and refused["status"] == 404 and refused["attempts"] == 1
    assert unreachable["ok"] is False and unreachable["attempts"] == 2 and unreachable["error"]
    assert refused["channel"] == f"webhook {refusing.server.url}"  # never the path: it may hold a token


# -- configuration ----------------------------------------------------------------------------------
BASE = """version: 1
providers: [{name: m, type: mock}]
models: [{name: mm, provider: m}]
routes: [{name: r, targets: [{model: mm}]}]
monitoring:
  online_evals:
    - {route: r, sample: 1, scorers: [{type: is_json}]}
  alerts:
"""


def alert_problems(rule: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + rule, "shipyard.yaml", environ={})
    return err.value.problems


def test_bad_alert_rules_are_config_errors_with_lines() -> None:
    cases = [
        (
            "metric: latency, op: '>', threshold: 1",
            "unknown metric `latency`; known metrics: requests, errors",
        ),
        ("metric: error_rate, op: '==', threshold: 1", "Input should be '>', '>=', '<' or '<='"),
        ("metric: error_rate, op: '>', threshold: 1, aggregation: avg", "applies to score.* and feedback.*"),
        ("metric: drift.drifted, op: '>', threshold: 0", "drift metrics are per route: set `route:`"),
        (
            "metric: drift.wobble, route: r, op: '>', threshold: 0",
            "unknown drift statistic `wobble`; known: ",
        ),
        ("metric: score.judge, op: '<', threshold: 0.5", "no online eval has a scorer named `judge`; known "),
        ("metric: score.is_json, route: x, op: '<', threshold: 0.5", "scores route(s) r, not `x`"),
        (
            "metric: score.is_json, aggregation: median, op: '<', threshold: 0.5",
            "aggregation `median` is not ",
        ),
        ("metric: error_rate, op: '>', threshold: 1, for: 5 minutes", "`5 minutes` is not a duration; write"),
        (
            "metric: error_rate, op: '>', threshold: 1, notify: [email]",
            "a notify entry is `log` or a mapping",
        ),
        ("metric: errors, op: '>', threshold: 1, notify: [{webhook: example.com}]", "is not an http(s) URL"),
        ("metric: errors, op: '>', threshold: 1, notify: [{webhook: 'http://x', log: true}]", "give either"),
        ("metric: error_rate, op: '>', threshold: 1, severity: page", "'info', 'warning' or 'critical'"),
        ("metric: error_rate, op: '>', threshold: 1, treshold: 2", "unknown key `treshold`"),
        ("metric: error_rate, op: '>'", "threshold: Field required"),
        (
            "metric: errors, op: '>', threshold: 1}\n    - {name: a, metric: errors, op: '<', threshold: 1",
            "both named",
        ),
        (
            "metric: errors, op: '>', threshold: 1, notify: [{webhook: '${HOOK_URL}'}]",
            "`HOOK_URL` is not set",
        ),
    ]
    for fields, expected in cases:
        problems = alert_problems(f"    - {{name: a, {fields}}}\n")
        assert any(expected in p for p in problems), (expected, problems)
        assert all(p.startswith("shipyard.yaml:") and "monitoring" in p for p in problems), problems
    # The line is the rule's own line (line 9 is the first rule).
    assert alert_problems("    - {name: a, metric: latency, op: '>', threshold: 1}\n")[0].startswith(
        "shipyard.yaml:9: monitoring.alerts[0].metric:"
    )
    assert any(
        p.startswith("shipyard.yaml:10: monitoring.alerts[1].op")
        for p in alert_problems(
            "    - {name: a, metric: errors, op: '>', threshold: 1}\n"
            "    - {name: b, metric: errors, op: '!', threshold: 1}\n"
        )
    )


def test_a_good_monitoring_section_parses_and_apply_and_export_ignore_it(tmp_path: Path) -> None:
    text = BASE + (
        "    - name: slow\n"
        "      metric: latency_p95_ms\n"
        "      route: r\n"
        "      window: 10m\n"
        "      op: '>'\n"
        "      threshold: 2000\n"
        "      for: 2m\n"
        "      repeat: 1h\n"
        "      severity: critical\n"
        "      notify: [log, {webhook: 'https://hooks.example.com/T0/B1/secret?x=1', headers: {A: b}}]\n"
        "    - {name: judged, metric: score.is_json, aggregation: pass_rate, op: '<', threshold: 0.9}\n"
    )
    cfg = parse_config(text, "shipyard.yaml", environ={}).config.monitoring
    assert isinstance(cfg, MonitoringConfig)
    slow, judged = cfg.alerts
    assert (slow.window, slow.for_, slow.repeat) == (600.0, 120.0, 3600.0)
    assert [c.label for c in slow.notify] == ["log", "webhook https://hooks.example.com"]
    assert slow.describe() == "latency_p95_ms route=r over 10m > 2000"
    assert judged.describe() == "pass_rate(score.is_json) over 5m < 0.9"
    assert slow.fingerprint != judged.fingerprint
    assert slow.fingerprint == _rule(name="slow", metric="latency_p95_ms", route="r", threshold=1).fingerprint

    from shipyard.registry.apply import apply, export
    from shipyard.registry.versions import Registry

    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.migrate()
    registry = Registry(store)
    plan = apply(registry, read_document(text, "shipyard.yaml"), actor="test", environ={})
    assert {i.kind for i in plan.items} == {"provider", "model", "route"}
    assert "monitoring" not in export(registry)
    store.close()


def test_config_check_reports_monitoring_problems_with_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "    - {name: a, metric: latency, op: '>', threshold: 1}\n")
    r = shipyard_cli("config", "check", "--config", str(bad))
    assert r.exit_code == 1
    assert f"{bad}:9: monitoring.alerts[0].metric" in r.output and "unknown metric `latency`" in r.output
    good = tmp_path / "good.yaml"
    good.write_text(BASE + "    - {name: a, metric: error_rate, op: '>', threshold: 0.1}\n")
    assert shipyard_cli("config", "check", "--config", str(good)).exit_code == 0


def test_events_store_keeps_one_row_per_episode(store: Store) -> None:
    rule = _rule()
    _traffic(store, ok=0, errors=1)
    engine = AlertEngine(store, [rule])
    for _ in range(3):
        t = time.time()
        assert [n.status for n in engine.evaluate(t)] == ["firing"]
        # A day later the errors are out of the window: no data, resolved.
        assert [n.status for n in engine.evaluate(t + 86400)] == ["resolved"]
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(alert_events)).scalar() == 3
    assert [e["state"] for e in alerts_q.list_events(store)] == ["resolved"] * 3
