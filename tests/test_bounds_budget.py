"""Budgets hold for prompts that tokenize badly (issue 12, item 11): the admission estimate bounds
a prompt by its UTF-8 bytes (no tokenizer makes more tokens), so concurrent requests spend at most
the budget plus one request. Through the real server, against a mock upstream that bills the
tokens a byte-level BPE tokenizer would for such text.

Before the fix, the estimate was characters/4: text of single characters between spaces bills
twice that, CJK up to 12 times and emoji 16 times, and a $5 budget was overspent to $6.46."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shipyard.providers.mock import MockOptions, MockProvider
from shipyard.providers.mock_upstream import MockUpstream
from tests.conftest import ShipyardServer, ThreadServer

PRICE = 100 / 1_000_000  # USD per token, input and output
BUDGET = 1.0
PROMPTS = {
    "spaced": " ".join("abcdefghij" * 100),  # 1,999 characters: 1,000 one-letter tokens
    "cjk": "漢字の港" * 150,  # 600 characters, 1,800 bytes
    "emoji": "⚓🚢" * 250,  # 500 characters, 1,750 bytes
}


def bpe_like_tokens(text: str) -> int:
    """What a byte-level BPE tokenizer bills for text it has no merges for: a token per ASCII
    word or symbol, and a token per UTF-8 byte of anything else (rare CJK, emoji)."""
    ascii_tokens = len(
        re.findall(r"[A-Za-z]+|\d{1,3}|[^\sA-Za-z\d]", text.encode("ascii", "ignore").decode())
    )
    return ascii_tokens + sum(len(c.encode()) for c in text if not c.isascii())


class BillingUpstream(MockProvider):
    def count_tokens(self, text: str, model: str) -> int:
        return bpe_like_tokens(text)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadServer]:
    app = MockUpstream(MockOptions(latency_ms=400, output="ok"))
    app.provider = BillingUpstream("billing", MockOptions(latency_ms=400, output="ok"))
    with ThreadServer(app) as server:
        yield server


@pytest.fixture(scope="module")
def server(upstream: ThreadServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShipyardServer]:
    config = f"""
providers:
  - {{name: remote, type: openai, base_url: '{upstream.url}/v1'}}
models:
  - {{name: priced, provider: remote, pricing: {{input_per_mtok: 100, output_per_mtok: 100}}}}
routes:
  - name: budgeted
    public: true
    targets: [{{model: priced}}]
    limits: {{usd_per_day: {BUDGET}}}
"""
    s = ShipyardServer(tmp_path_factory.mktemp("budget") / "home", config).start()
    yield s
    s.stop()


def cost(body: dict[str, Any]) -> float:
    usage = body["usage"]
    return float(usage["prompt_tokens"] + usage["completion_tokens"]) * PRICE


async def fire(url: str, prompts: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(prompts), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        return list(
            await asyncio.gather(
                *(
                    client.post(
                        "/v1/chat/completions",
                        json={
                            "model": "budgeted",
                            "messages": [{"role": "user", "content": p}],
                            "max_tokens": 4,
                        },
                    )
                    for p in prompts
                )
            )
        )


def test_the_mock_upstream_bills_like_a_tokenizer() -> None:
    assert bpe_like_tokens(PROMPTS["spaced"]) == 1000
    assert bpe_like_tokens(PROMPTS["cjk"]) == 1800 and bpe_like_tokens(PROMPTS["emoji"]) == 1750
    assert bpe_like_tokens("Count the ships, 1234!") == 7


def test_concurrent_adversarial_prompts_spend_at_most_the_budget_plus_one_request(
    server: ShipyardServer,
) -> None:
    prompts = [PROMPTS[k] for k in ("spaced", "cjk", "emoji")] * 20
    responses = asyncio.run(fire(server.url, prompts))
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(refused) == len(prompts), {r.status_code for r in responses}
    assert ok and refused
    spent = sum(cost(r.json()) for r in ok)
    most = max(cost(r.json()) for r in ok)
    assert spent <= BUDGET + most + 1e-9, (len(ok), spent)
    err = refused[0].json()["error"]
    assert err["code"] == "budget_exceeded" and "route `budgeted`" in err["message"]
    # The upstream really billed the adversarial counts (the estimate's UTF-8 bound covers them).
    billed = {r.json()["usage"]["prompt_tokens"] for r in ok}
    assert billed <= {1000, 1800, 1750}
