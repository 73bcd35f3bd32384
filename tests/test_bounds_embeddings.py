"""`/v1/embeddings` is bounded (issue 12, item 2): inputs per request, input tokens per request,
`dimensions`, token limits that see embedding tokens, and a gateway that stays responsive while the
largest allowed request runs. Through the real server, with the official openai client.

Before the fix, one client-key request with a million one-character inputs built a 374 MB answer
in about 11 s, took the server from 190 MB to 1.5 GB and stalled `/healthz` for seconds."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import ShipyardServer

CONFIG = """
providers:
  - {name: fake, type: mock, embedding_dim: 16}
  - {name: slow, type: mock, embedding_dim: 16, latency_ms: 400}
  - {name: wordllama, type: wordllama}
models:
  - {name: mock-embed, provider: fake, kind: embedding}
  - {name: slow-embed, provider: slow, kind: embedding}
  - {name: wordllama, provider: wordllama, kind: embedding}
  - {name: chat, provider: fake}
routes:
  - name: default
    targets: [{model: chat}]
"""
# 146 WordLlama tokens (630 characters): 2,048 of them are 299,008 tokens, just within the
# default `max_embedding_input_tokens` of 300,000 while far over it as UTF-8 bytes.
SENTENCE = (
    "the ship sails at dawn with cargo of tea and maps while gulls circle over harbour lights and "
    "sailors check ropes before the tide turns toward open water beyond the cape "
)
TEXT_146 = " ".join((SENTENCE * 4).split()[:116])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShipyardServer]:
    s = ShipyardServer(tmp_path_factory.mktemp("embed") / "home", CONFIG).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client_key(server: ShipyardServer) -> str:
    with server.api() as api:
        r = api.post("/keys", json={"name": "app", "role": "client"})
    assert r.status_code == 201, r.text
    return str(r.json()["key"])


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (Linux: VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/<pid>/status on this system")


def test_a_million_inputs_get_a_400_naming_the_setting(server: ShipyardServer, client_key: str) -> None:
    assert server.proc is not None
    before = peak_rss_mb(server.proc.pid)
    # 5 MB of JSON, sent with httpx (the openai client spends seconds preparing a million inputs).
    payload = orjson.dumps({"model": "mock-embed", "input": ["a"] * 1_000_000})
    headers = {"Authorization": f"Bearer {client_key}", "content-type": "application/json"}
    started = time.monotonic()
    r = httpx.post(server.url + "/v1/embeddings", content=payload, headers=headers, timeout=60)
    took = time.monotonic() - started
    assert r.status_code == 400, r.text[:300]
    err = r.json()["error"]
    assert err["param"] == "input"
    assert "1,000,000 items" in err["message"] and "at most 2,048" in err["message"]
    assert "`max_embedding_inputs`" in err["message"] and "split" in err["message"]
    # Refused before any work: no embedding, no answer built (it was 11 s and +1.3 GB).
    assert took < 10, took
    assert peak_rss_mb(server.proc.pid) - before < 400
    # The limit is what OpenAI allows: 2,048 inputs are answered.
    client = server.openai(api_key=client_key, timeout=60)
    ok = client.embeddings.create(model="mock-embed", input=["a"] * 2048)
    assert len(ok.data) == 2048 and ok.data[-1].index == 2047


@pytest.mark.parametrize("dimensions", [-5, 0, 10**9, "8", True, 1.5])
def test_dimensions_must_be_a_positive_bounded_integer(
    server: ShipyardServer, client_key: str, dimensions: Any
) -> None:
    with server.http(headers={"Authorization": f"Bearer {client_key}"}) as http:
        r = http.post("/v1/embeddings", json={"model": "mock-embed", "input": "x", "dimensions": dimensions})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (
        err["param"] == "dimensions" and "`dimensions` must be an integer from 1 to 16,384" in err["message"]
    )


def test_input_tokens_per_request_are_capped(server: ShipyardServer, client_key: str) -> None:
    client = server.openai(api_key=client_key, timeout=120)
    # The mock model has no tokenizer here: its text is held to its UTF-8 size.
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="mock-embed", input=["a" * 200_000, "b" * 200_000])
    e = err.value.response.json()["error"]
    assert e["param"] == "input" and "400,000 bytes" in e["message"]
    assert "`max_embedding_input_tokens`" in e["message"] and "at most 300,000 tokens" in e["message"]
    # WordLlama counts exactly: 1.3 MB of text that is 299,008 tokens is served ...
    ok = client.embeddings.create(model="wordllama", input=[TEXT_146] * 2048)
    assert ok.usage.prompt_tokens == 299_008 and len(ok.data) == 2048
    # ... and a last input eight times as long (about 1,000 tokens more) is over the cap.
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="wordllama", input=[TEXT_146] * 2047 + [" ".join([TEXT_146] * 8)])
    e = err.value.response.json()["error"]
    assert e["param"] == "input" and "more than 300,000 tokens" in e["message"]
    assert "`max_embedding_input_tokens`" in e["message"]


def test_healthz_answers_while_the_largest_allowed_request_runs(
    server: ShipyardServer, client_key: str
) -> None:
    latencies: list[float] = []
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while not done.is_set():
                started = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        time.sleep(0.1)
        latencies.clear()
        client = server.openai(api_key=client_key, timeout=120)
        answer = client.embeddings.create(model="wordllama", input=[TEXT_146] * 2048)
    finally:
        done.set()
        prober.join()
    assert len(answer.data) == 2048 and len(answer.data[0].embedding) == 256
    assert len(latencies) >= 5, latencies
    # The defect stalled /healthz for 10-16 s; a loaded 2-core CI machine can add a few hundred ms
    # to any single probe, so the bound is generous and still far from the stall.
    assert max(latencies) < 2.0, sorted(latencies)[-5:]


def test_embedding_tokens_count_against_a_keys_tokens_per_minute(server: ShipyardServer) -> None:
    """Single characters between spaces: the mock bills a token per character, twice what
    characters/4 guessed, so five concurrent requests used to be admitted where one fits."""
    with server.api() as api:
        r = api.post("/keys", json={"name": "tpm", "role": "client", "limits": {"tokens_per_min": 1500}})
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    text = " ".join("abcdefghij" * 100)  # 1,999 characters, 1,000 words (the mock's tokens)

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=5, max_keepalive_connections=0)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60, headers=headers) as c:
            body = {"model": "slow-embed", "input": text}
            return list(await asyncio.gather(*(c.post("/v1/embeddings", json=body) for _ in range(5))))

    responses = asyncio.run(fire())
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(refused) == 5 and ok and refused, [r.status_code for r in responses]
    used = sum(r.json()["usage"]["prompt_tokens"] for r in ok)
    # At most the limit plus one request (a request bigger than the bucket runs when it is full).
    assert used <= 1500 + 1000, used
    err = refused[0].json()["error"]
    assert (
        err["code"] == "rate_limit_exceeded" and "key `tpm` allows 1500 tokens per minute" in err["message"]
    )
