"""API robustness: schemathesis generates requests from the admin API's OpenAPI schema
(``/api/openapi.json``) and from the gateway's (:func:`shipyard.gateway.openapi.gateway_schema`), sends
them to a real `shipyard up` with data in its store, and fails on any 5xx or any answer that breaks
the schema. Bounded and seeded, so a run takes about a minute and finds the same things each time."""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import schemathesis
from hypothesis import strategies as st
from schemathesis.schemas import BaseSchema

from shipyard.gateway.openapi import gateway_schema
from tests.conftest import ShipyardServer
from tests.web_helpers import wait_for_traces

ADMIN_KEY = "sk-shp-Sch3m4th3s1sF1xedAdm1nKey0123456789abcde"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
ENV = {"SHIPYARD_ADMIN_KEY": ADMIN_KEY}
# Bounded for CI (about a minute for both servers on two cores); a deeper run, another seed:
#   SHIPYARD_SCHEMATHESIS_EXAMPLES=200 SHIPYARD_SCHEMATHESIS_SEED=7 pytest tests/test_schemathesis.py
SEED = int(os.environ.get("SHIPYARD_SCHEMATHESIS_SEED", "20250"))
MAX_EXAMPLES = int(os.environ.get("SHIPYARD_SCHEMATHESIS_EXAMPLES", "12"))

# Every kind of thing the admin API and the gateway serve: a plain chat route, one rendered from a
# prompt template, a guarded one, an embedding model; online evals and an alert rule (log only: a
# fuzzer must not reach a webhook).
CONFIG = """
providers:
  - {name: mock, type: mock, output_tokens: 8}
  - {name: vectors, type: mock, embedding_dim: 8}
models:
  - {name: chat-m, provider: mock, pricing: {input_per_mtok: 1, output_per_mtok: 2}}
  - {name: text-embed, provider: vectors, kind: embedding}
prompts:
  - name: support
    aliases: [production]
    messages:
      - {role: system, content: "You help customers of a harbour."}
      - {role: user, content: "{{ question }}"}
routes:
  - {name: chat, targets: [{model: chat-m}]}
  - {name: support, prompt: support@production, targets: [{model: chat-m}]}
  - name: guarded
    targets: [{model: chat-m}]
    guards:
      input: [{type: pii}, {type: secrets}]
      output: [{type: pii}]
monitoring:
  online_evals:
    - {route: chat, sample: 1, scorers: [{type: word_count, max: 50}]}
  alerts:
    - {name: errors, metric: error_rate, window: 5m, op: ">", threshold: 0.5, notify: [log]}
"""

ROUTES = ("chat", "support", "guarded", "text-embed")

EVAL_SUITE = """
name: smoke
dataset:
  cases:
    - {id: a, input: {question: "Where is berth 4?"}, expected: "berth"}
    - {id: b, input: {question: "When does the ferry leave?"}, expected: "ferry"}
targets:
  - route: support
scorers:
  - {type: contains, name: has-word}
"""


def _config(url: str, checks: list[str]) -> schemathesis.Config:
    enabled: dict[str, Any] = {"enabled": False, **{name: {"enabled": True} for name in checks}}
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": url,
            "headers": AUTH,
            "request-timeout": 30,
            "continue-on-failure": True,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            "checks": enabled,
            # Stateful sequences multiply the requests; single calls already reach every handler.
            "phases": {"stateful": {"enabled": False}},
        }
    )


def _send_traffic(server: ShipyardServer) -> list[str]:
    client = server.openai(default_headers=AUTH)
    ids = []
    for i, question in enumerate(["Where is berth 4?", "Is the crane free at noon?", "Tide times?"]):
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": question}], user=f"u{i}"
        )
        ids.append(raw.headers["x-shipyard-trace-id"])
    client.chat.completions.create(
        model="support", messages=[], extra_body={"variables": {"question": "Where do I park?"}}
    )
    client.embeddings.create(model="text-embed", input=["harbour", "tide"])
    return ids


def _seed(server: ShipyardServer) -> None:
    """Something for every GET to find: traces with feedback, a dataset, runs, an eval run."""
    trace_ids = _send_traffic(server)
    wait_for_traces(server, len(trace_ids) + 1)
    with httpx.Client(base_url=server.url + "/api", headers=AUTH, timeout=60) as api:

        def ok(r: httpx.Response) -> dict[str, Any]:
            assert r.status_code < 300, (r.request.url, r.status_code, r.text)
            return dict(r.json()) if r.headers.get("content-type", "").startswith("application/json") else {}

        ok(api.post("/feedback", json={"trace_id": trace_ids[0], "score": "up", "comment": "clear"}))
        ok(api.post("/datasets", json={"name": "questions", "description": "seeded"}))
        examples = [{"input": {"question": "Where is berth 4?"}, "expected": "berth"}]
        ok(api.post("/datasets/questions/versions", json={"examples": examples}))
        ok(api.post("/datasets/from-traffic/from-traces", json={"route": "chat"}))
        run = ok(api.post("/runs", json={"name": "seed", "params": {"lr": 0.1}, "tags": {"team": "a"}}))
        rid = run["run_id"]
        ok(api.post(f"/runs/{rid}/metrics", json=[{"key": "loss", "value": 0.5, "step": 0}]))
        ok(api.put(f"/runs/{rid}/artifacts/notes.txt", content=b"seeded artifact"))
        ok(api.post("/runs", json={"name": "child", "parent_run_id": rid}))
        ok(api.post("/evals/runs", json={"suite": EVAL_SUITE}))


def _steer_models(schema: BaseSchema) -> None:
    """Send a known route as `model` in about half of the gateway's requests: random names only
    reach the 404, and the handlers behind a route are the ones worth fuzzing."""

    @schema.hook  # type: ignore[misc]
    def flatmap_body(context: Any, body: Any) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return st.just(body)
        return st.one_of(st.just(body), st.sampled_from(ROUTES).map(lambda m: {**body, "model": m}))


def _start(shipyard_server: Any) -> ShipyardServer:
    server: ShipyardServer = shipyard_server(CONFIG, env=ENV)
    _seed(server)
    return server


@dataclass
class Outcome:
    """What a schemathesis run found: failed checks and errors, one line each, and the volume."""

    problems: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)  # per operation
    statuses: Counter[int] = field(default_factory=Counter)

    def report(self) -> str:
        return "\n\n".join(self.problems[:40])


def run_schemathesis(schema: BaseSchema) -> Outcome:
    """Every phase but the stateful one, through the engine (the CLI's runner)."""
    from schemathesis.engine import Status, events, from_schema

    out = Outcome()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            label = recorder.label
            out.requests[label] = out.requests.get(label, 0) + len(recorder.interactions)
            out.statuses.update(i.response.status_code for i in recorder.interactions.values() if i.response)
            for checks in recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        out.problems.append(
                            f"{label}: {check.name}: {failure.title}\n{failure.message}\n"
                            f"{check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            out.problems.append(f"{getattr(event, 'label', '?')}: {event.info.format()}")
    return out


def _checked(schema: BaseSchema) -> Outcome:
    outcome = run_schemathesis(schema)
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(outcome.statuses.items()))
    print(f"{sum(outcome.requests.values())} requests to {len(outcome.requests)} operations ({statuses})")
    assert not outcome.problems, f"{len(outcome.problems)} problems:\n" + outcome.report()
    return outcome


def _every_operation_tested(schema: BaseSchema, outcome: Outcome) -> None:
    operations = [op.ok().label for op in schema.get_all_operations()]
    untested = [label for label in operations if not outcome.requests.get(label)]
    assert not untested, f"operations that got no request: {untested}"


BIG = 2**70  # beyond the store's 64-bit integers and the JSON encoder's


def cursor(*position: Any) -> str:
    """A cursor as the API writes them (base64url JSON), holding whatever position a test needs."""
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode().rstrip("=")


BIG_VERSION_SUITE = f"""
name: a
dataset: {{registry: "questions@v{BIG}"}}
targets: [{{route: chat}}]
scorers: [{{type: contains}}]
"""
# Inputs that answered 500 before they were validated (found by schemathesis and by hand): each must
# now be a 4xx in the error shape, naming the field.
EDGE_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/drift", {"params": {"limit": BIG}}),
    ("GET", f"/drift/{BIG}", {}),
    ("GET", "/runs", {"params": {"limit": BIG}}),
    ("GET", "/feedback", {"params": {"limit": BIG}}),
    ("GET", "/datasets/questions/versions/1/examples", {"params": {"limit": BIG}}),
    # Cursors that were edited: numbers beyond 64 bits, another list's, not base64, not JSON.
    ("GET", "/feedback", {"params": {"cursor": cursor("feedback", BIG)}}),
    ("GET", "/audit", {"params": {"cursor": cursor("audit", -BIG)}}),
    ("GET", "/runs", {"params": {"cursor": cursor("runs", "x", "y")}}),
    ("GET", "/datasets/questions/versions/1/examples", {"params": {"cursor": cursor("examples", 1, BIG)}}),
    ("GET", "/datasets/questions/versions/1/examples", {"params": {"cursor": cursor("examples", BIG, 0)}}),
    ("GET", "/datasets/questions/versions/latest/examples", {"params": {"cursor": cursor("examples", 0, 0)}}),
    ("GET", "/prompts/support/history", {"params": {"cursor": cursor("prompt-history", -1)}}),
    ("GET", "/traces", {"params": {"cursor": cursor("runs", 1.5, "ab")}}),
    ("GET", "/traces", {"params": {"cursor": "!!!"}}),
    ("GET", "/traces", {"params": {"cursor": "bm90IGpzb24"}}),
    ("GET", f"/datasets/questions/versions/{BIG}/examples", {}),
    ("GET", "/datasets/questions/export", {"params": {"version": f"v{BIG}"}}),
    ("GET", "/prompts/support", {"params": {"ref": f"v{BIG}"}}),
    ("GET", f"/prompts/support/versions/{BIG}", {}),
    ("PUT", "/prompts/support/aliases/next", {"json": {"version": str(BIG)}}),
    ("POST", "/providers", {"json": {"name": "big", "spec": {"type": "mock", "seed": BIG}}}),
    ("POST", "/runs", {"json": {"params": {"lr": BIG}}}),
    ("POST", "/runs", {"json": {"links": [{"kind": "dataset", "name": "questions", "version": BIG}]}}),
    ("POST", "/datasets/questions/import", {"params": {"format": "yaml"}, "content": b"- input: {a: 1\x1e}"}),
    (
        "POST",
        "/datasets/questions/import",
        {"params": {"format": "yaml"}, "content": b"- input: {a: 1" + b"0" * 5000 + b"}"},
    ),
    ("GET", "/scores", {"params": {"name": "x", "since": "-inf"}}),
    ("GET", "/scores", {"params": {"name": "x", "until": "nan"}}),
    ("GET", "/scores", {"params": {"name": "x", "since": "99999999999999999999d"}}),
    ("POST", "/drift/run", {"json": {"route": "chat", "reference": "99999999999d", "current": "1h"}}),
    (
        "POST",
        "/drift/run",
        {"json": {"route": "chat", "reference": "1h offset 9999999999999d", "current": "1h"}},
    ),
    ("POST", "/evals/runs", {"json": {"suite": BIG_VERSION_SUITE}}),
    # A lone surrogate (valid in JSON escapes) quoted back in the error message.
    ("POST", "/datasets/questions/import", {"params": {"format": "yaml"}, "content": b'{"\\udab5x": {}}'}),
    ("GET", "/overview", {"params": {"since": "-inf"}}),
    ("GET", "/overview", {"params": {"since": "nan"}}),
    ("GET", "/overview", {"params": {"range": "99999999999999999d"}}),
    ("GET", "/traces", {"params": {"since": "nan"}}),
]


def test_admin_api_survives_schemathesis(shipyard_server: Any) -> None:
    server = _start(shipyard_server)
    # Every answer, 4xx included, is in the schema (shipyard.api.openapi) with its body's shape.
    checks = ["not_a_server_error", "status_code_conformance", "response_schema_conformance"]
    schema = schemathesis.openapi.from_url(
        server.url + "/api/openapi.json", config=_config(server.url + "/api", checks), headers=AUTH
    )
    outcome = _checked(schema)
    _every_operation_tested(schema, outcome)
    assert len(outcome.requests) >= 60 and sum(outcome.requests.values()) > 1000
    # The fuzzer calls PATCH and DELETE /keys/{key_id} with the key it sends too: the server refuses
    # to let a key revoke or demote itself, so the key stays valid for the whole run.
    assert outcome.statuses[401] < sum(outcome.statuses.values()) / 10
    with httpx.Client(base_url=server.url + "/api", headers=AUTH, timeout=30) as api:
        for method, path, kwargs in EDGE_CASES:
            r = api.request(method, path, **kwargs)
            assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
            error = r.json()["error"]
            assert error["message"] and error["type"] == "invalid_request_error", (method, path, error)
            if "cursor" in kwargs.get("params", {}):
                assert error["param"] == "cursor", (method, path, error)
    assert "Traceback" not in server.log()


def test_gateway_survives_schemathesis(shipyard_server: Any) -> None:
    server = _start(shipyard_server)
    checks = [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
    served = httpx.get(server.url + "/v1/openapi.json", headers=AUTH)
    assert served.status_code == 200 and served.json() == gateway_schema()
    schema = schemathesis.openapi.from_dict(served.json(), config=_config(server.url, checks))
    _steer_models(schema)
    outcome = _checked(schema)
    _every_operation_tested(schema, outcome)
    assert "Traceback" not in server.log()
