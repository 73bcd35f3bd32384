"""`/metrics` speaks Prometheus: it parses with prometheus-client's own parser, its counters match
the requests sent, and label cardinality stays bounded whatever model names clients send."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shipyard.monitoring.metrics import OTHER, Metrics
from shipyard.tracing.spans import Trace

CONFIG = """
settings:
  metrics_max_label_values: 4
providers:
  - {name: fake, type: mock, latency_ms: 5, tokens_per_s: 2000}
  - {name: broken, type: mock, error_rate: 1.0, error_status: 503}
models:
  - {name: fake-chat, provider: fake, pricing: {input_per_mtok: 3, output_per_mtok: 15}}
  - {name: broken-chat, provider: broken}
routes:
  - {name: default, targets: [{model: fake-chat}]}
  - {name: flaky, targets: [{model: broken-chat}]}
"""
MSG = [{"role": "user", "content": "Name a harbour town"}]


def scrape(server: Any, accept: str | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    headers = {"accept": accept} if accept else {}
    resp = httpx.get(server.url + "/metrics", headers=headers, timeout=10)
    assert resp.status_code == 200
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(
        v
        for (n, lab), v in samples.items()
        if n == name and all(dict(lab).get(k) == want for k, want in labels.items())
    )


def test_counters_match_requests_sent(shipyard_server: Any) -> None:
    server = shipyard_server(CONFIG)
    client = server.openai()
    tokens_in = tokens_out = 0
    for _ in range(7):
        r = client.chat.completions.create(model="default", messages=MSG, max_tokens=5)
        tokens_in += r.usage.prompt_tokens
        tokens_out += r.usage.completion_tokens
    for _ in range(2):
        chunks = list(
            client.chat.completions.create(
                model="default",
                messages=MSG,
                max_tokens=4,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        tokens_in += chunks[-1].usage.prompt_tokens
        tokens_out += chunks[-1].usage.completion_tokens
    for _ in range(3):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="flaky", messages=MSG, max_tokens=5)

    m = scrape(server)
    ok = dict(route="default", target="fake-chat", model="fake-chat", status="ok", operation="chat")
    assert total(m, "shipyard_requests_total", **ok) == 9
    assert total(m, "shipyard_requests_total", route="flaky", status="error") == 3
    assert total(m, "shipyard_requests_total") == 12
    assert total(m, "shipyard_request_errors_total", route="flaky") == 3
    assert total(m, "shipyard_request_duration_seconds_count", route="default") == 9
    # Non-streamed answers arrive whole: their first token is their last.
    assert total(m, "shipyard_time_to_first_token_seconds_count", route="default") == 9
    assert total(m, "shipyard_tokens_total", route="default", direction="input") == tokens_in
    assert total(m, "shipyard_tokens_total", route="default", direction="output") == tokens_out
    expected_cost = (tokens_in * 3 + tokens_out * 15) / 1e6
    assert abs(total(m, "shipyard_cost_usd_total", route="default") - expected_cost) < 1e-12
    assert ("shipyard_trace_queue_depth", ()) in m
    assert ("shipyard_in_flight_requests", ()) in m

    # OpenMetrics on request (what Prometheus asks for when it can); same numbers.
    resp = httpx.get(server.url + "/metrics", headers={"accept": "application/openmetrics-text"})
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    assert resp.text.rstrip().endswith("# EOF")


def test_label_cardinality_is_bounded_and_rejections_are_counted(shipyard_server: Any) -> None:
    routes = "".join(f"  - {{name: r{i}, targets: [{{model: fake-chat}}]}}\n" for i in range(8))
    server = shipyard_server(CONFIG + routes)
    client = server.openai()
    for i in range(8):
        client.chat.completions.create(model=f"r{i}", messages=MSG, max_tokens=2)
    for i in range(5):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=f"no-such-model-{i}", messages=MSG)
    bad = httpx.post(
        server.url + "/v1/chat/completions", content=b"{not json", headers=server.headers, timeout=10
    )
    assert bad.status_code == 400
    m = scrape(server)
    seen = {dict(lab)["route"] for (n, lab) in m if n == "shipyard_requests_total"}
    assert len(seen) == 4 + 1 and OTHER in seen
    assert total(m, "shipyard_requests_total") == 8
    assert total(m, "shipyard_metric_label_overflow_total") > 0
    # Requests refused before any route served them: counted by endpoint and type, not by name.
    rejected = "shipyard_requests_rejected_total"
    assert total(m, rejected, endpoint="/v1/chat/completions", error_type="model_not_found") == 5
    assert total(m, rejected, endpoint="/v1/chat/completions", error_type="invalid_request_error") == 1


def test_observe_counts_error_type_from_the_root_span() -> None:
    metrics = Metrics()
    t = Trace("chat", route="r", target="t", model="m", status="error", status_code=504)
    root = t.span("chat r")
    root.finish("error", **{"error.type": "timeout"})
    t.end = t.start + 0.2
    metrics.observe(t)
    text = metrics.render(None)[0].decode()
    assert 'shipyard_request_errors_total{error_type="timeout",model="m",route="r",target="t"} 1.0' in text
