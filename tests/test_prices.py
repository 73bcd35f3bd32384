"""Prices from the catalogue (genai-prices) when a model has no `pricing:`, config prices winning,
the source on every trace, budgets charged at the same prices, and `shipyard models prices`:
through `shipyard up`, a real upstream and the official openai client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

from shipyard.config.schema import ModelConfig, Pricing
from shipyard.prices import resolve
from shipyard.providers.mock import MockOptions
from shipyard.providers.mock_upstream import MockUpstream
from tests.conftest import ThreadServer
from tests.helpers import attempt_spans, wait_trace

# gpt-4o-mini's standard prices in the catalogue version this test runs with.
MINI_IN, MINI_OUT = 0.15, 0.6


def config(upstream: str, budget: str = "") -> str:
    return f"""
providers:
  - {{name: proxy, type: openai, base_url: '{upstream}/v1'}}
  - {{name: fake, type: mock, output_tokens: 8}}
models:
  - {{name: mini, provider: proxy, model: gpt-4o-mini, price_as: openai/gpt-4o-mini}}
  - {{name: mine, provider: proxy, model: gpt-4o-mini, price_as: openai/gpt-4o-mini,
      pricing: {{input_per_mtok: 1000, output_per_mtok: 2000}}}}
  - {{name: self-hosted, provider: proxy, model: my-finetune}}
  - {{name: local, provider: fake}}
routes:
  - {{name: catalogue, targets: [{{model: mini}}]{budget}}}
  - {{name: configured, targets: [{{model: mine}}]}}
  - {{name: unpriced, targets: [{{model: self-hosted}}]}}
  - {{name: free, targets: [{{model: local}}]}}
"""


@pytest.fixture
def upstream() -> Any:
    with ThreadServer(MockUpstream(MockOptions(output_tokens=20))) as server:
        yield server


def ask(server: Any, route: str) -> Any:
    return server.openai().chat.completions.with_raw_response.create(
        model=route, messages=[{"role": "user", "content": "What do harbours do?"}], max_tokens=20
    )


def test_costs_come_from_the_catalogue_unless_the_config_prices_the_model(
    shipyard_server: Any, upstream: Any
) -> None:
    server = shipyard_server(config(upstream.url))
    for route, source, per_in, per_out in (
        ("catalogue", "catalogue", MINI_IN, MINI_OUT),
        ("configured", "config", 1000, 2000),
        ("unpriced", "unpriced", 0, 0),
        ("free", "local", 0, 0),
    ):
        raw = ask(server, route)
        usage = raw.parse().usage
        trace = wait_trace(server.store_url(), raw.headers["x-shipyard-trace-id"])
        expected = (usage.prompt_tokens * per_in + usage.completion_tokens * per_out) / 1e6
        assert trace["cost_usd"] == pytest.approx(expected), route
        (attempt,) = attempt_spans(trace)
        assert attempt["attributes"]["shipyard.cost.source"] == source, route


def test_a_budget_is_charged_at_the_catalogue_price(shipyard_server: Any, upstream: Any) -> None:
    # One answer costs about (9 + 20 tokens) at $0.15/$0.6 per Mtok: ~$0.0000134, and is admitted
    # while the spend plus its worst case (max_tokens 20) fits in the budget: three or four answers of
    # $0.00005, then refusals. Priced at 0 (no catalogue) all twelve would pass.
    server = shipyard_server(config(upstream.url, ", limits: {usd_per_day: 0.00005}"))
    answered, refused = 0, 0
    for _ in range(12):
        try:
            ask(server, "catalogue")
            answered += 1
        except openai.RateLimitError as exc:
            assert "budget" in str(exc)
            refused += 1
    assert 3 <= answered <= 5 and refused == 12 - answered


def test_models_prices_shows_what_is_charged_and_from_where(shipyard_server: Any, upstream: Any) -> None:
    server = shipyard_server(config(upstream.url))
    env = {**os.environ, "SHIPYARD_DATABASE_URL": server.store_url()} if server.database_url else None
    done = subprocess.run(
        [sys.executable, "-m", "shipyard", "models", "prices", "--home", str(server.home), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rows = {r["model"]: r for r in json.loads(done.stdout)}
    assert rows["mini"]["source"] == "catalogue" and rows["mini"]["input_per_mtok"] == MINI_IN
    assert (
        rows["mini"]["detail"].startswith("genai-prices ") and "openai/gpt-4o-mini" in rows["mini"]["detail"]
    )
    assert rows["mine"]["source"] == "config" and rows["mine"]["output_per_mtok"] == 2000
    assert rows["self-hosted"]["source"] == "unpriced" and "set `pricing:`" in rows["self-hosted"]["detail"]
    assert rows["local"]["source"] == "local"
    table = subprocess.run(
        [sys.executable, "-m", "shipyard", "models", "prices", "--home", str(server.home)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert table.returncode == 0 and "catalogue" in table.stdout and "unpriced" in table.stdout


def test_a_provider_is_recognised_by_its_api_url_and_secrets_never_show() -> None:
    model = ModelConfig(name="m", provider="p", model="gpt-4o-mini")
    known = resolve(model, "openai", "https://api.openai.com/v1")
    assert known.source == "catalogue" and known.input_per_mtok == MINI_IN
    assert known.cost(1_000_000, 1_000_000) == pytest.approx(MINI_IN + MINI_OUT)
    hidden = resolve(
        ModelConfig(name="m", provider="p", model="llama"), "openai", "http://u:s3cret@gpu:8000/v1"
    )
    assert hidden.source == "unpriced" and "s3cret" not in hidden.detail and "gpu:8000" in hidden.detail
    free = ModelConfig(name="m", provider="p", model="gpt-4o-mini", pricing=Pricing())
    assert resolve(free, "openai", "https://api.openai.com/v1").source == "config"  # an explicit 0 wins
    unknown = resolve(ModelConfig(name="m", provider="p", price_as="openai/no-such-model"), "openai", None)
    assert unknown.source == "unpriced" and "price_as: openai/no-such-model" in unknown.detail


def test_price_as_is_checked(shipyard_server: Any, upstream: Any) -> None:
    bad = config(upstream.url).replace("price_as: openai/gpt-4o-mini}", "price_as: 'not a ref'}", 1)
    with pytest.raises(RuntimeError, match=r"models\[0\]\.price_as"):
        shipyard_server(bad)


def test_the_catalogue_is_never_fetched(tmp_path: Path) -> None:
    """Prices come from the installed package's snapshot: no network in a process that prices."""
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('no network')\n"
        "socket.socket.connect = refuse\n"
        "from shipyard.config.schema import ModelConfig\n"
        "from shipyard.prices import resolve\n"
        "p = resolve(ModelConfig(name='m', provider='p', model='gpt-4o-mini'), 'openai', 'https://api.openai.com/v1')\n"
        "print(p.source, p.cost(1000, 1000))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "catalogue"
