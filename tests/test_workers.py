"""`shipyard up --workers N`: N gateway processes on one port, sharing Redis (limits, budgets) and the
store (Postgres or SQLite), with a supervisor that restarts them, and the monitoring jobs run once
across them under a lease in the store. Real servers, the real Redis and Postgres, the official
openai client."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

from shipyard.store import leases
from shipyard.store.db import Store
from shipyard.store.tables import traces
from tests.conftest import ShipyardServer

REDIS_URL = "redis://127.0.0.1:6379/0"
PRICE = 50 / 1_000_000  # USD per token, input and output
CONFIG = """
providers:
  - {name: fake, type: mock, latency_ms: 30, output_tokens: 8}
models:
  - {name: priced, provider: fake, pricing: {input_per_mtok: 50, output_per_mtok: 50}}
routes:
  - {name: capped, targets: [{model: priced}], limits: {usd_per_day: 0.05}}
  - {name: open, targets: [{model: priced}]}
"""
ALERTING = (
    CONFIG
    + """
monitoring:
  alerts:
    - {name: any-traffic, metric: requests, op: ">", threshold: 0, window: 5m, route: open}
"""
)


@pytest.fixture
def redis_url() -> str:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


def workers_seen(url: str, n: int, timeout: float = 60.0) -> set[int]:
    """The worker numbers that answer /healthz on fresh connections, once all ``n`` have."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < n and time.monotonic() < deadline:
        try:
            with httpx.Client(timeout=2) as client:  # a new connection each time
                seen.add(client.get(url + "/healthz").json()["worker"])
        except httpx.HTTPError:
            pass
    return seen


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    servers: list[ShipyardServer] = []

    def start(config: str, workers: int, env: dict[str, str]) -> ShipyardServer:
        server = ShipyardServer(
            tmp_path / f"home{len(servers)}", config, {"SHIPYARD_WORKERS": str(workers), **env}
        )
        servers.append(server.start())
        assert workers_seen(server.url, workers) == set(range(1, workers + 1)), server.log()
        return server

    yield start
    for server in servers:
        server.stop()


def test_workers_need_redis(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SHIPYARD_REDIS_URL"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shipyard",
            "up",
            "--workers",
            "2",
            "--home",
            str(tmp_path / "h"),
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--workers 2 needs Redis" in done.stderr and "SHIPYARD_REDIS_URL" in done.stderr


async def wave(server: ShipyardServer, n: int) -> list[Any]:
    """``n`` requests at once through the official client, each on its own connection."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=120) as http:
        client = openai.AsyncOpenAI(
            base_url=server.url + "/v1", api_key=server.admin_key, max_retries=0, http_client=http
        )
        ask = [{"role": "user", "content": "Count the ships in harbour"}]

        async def one() -> Any:
            try:
                return await client.chat.completions.create(model="capped", messages=ask, max_tokens=8)
            except openai.APIStatusError as exc:
                return exc

        return list(await asyncio.gather(*(one() for _ in range(n))))


def test_four_workers_on_postgres_and_redis_never_overspend_a_budget(
    cluster: Any, pg_url: str, redis_url: str
) -> None:
    server = cluster(CONFIG, 4, {"SHIPYARD_DATABASE_URL": pg_url, "SHIPYARD_REDIS_URL": redis_url})
    answered: list[Any] = []
    for _ in range(2):  # two waves of 500: the second meets a budget already spent
        answered += asyncio.run(wave(server, 500))
    refused = [a for a in answered if isinstance(a, openai.APIStatusError)]
    ok = [a for a in answered if not isinstance(a, openai.APIStatusError)]
    # Nothing fails but for the budget: no 503 because Redis or the store was busy.
    assert {e.status_code for e in refused} == {429}, {e.status_code: e.message for e in refused}
    assert all(e.body["code"] == "budget_exceeded" for e in refused)
    assert ok and refused
    spent_by_clients = sum((a.usage.prompt_tokens + a.usage.completion_tokens) * PRICE for a in ok)
    assert spent_by_clients <= 0.05 + 1e-9
    store = Store(pg_url)
    try:
        deadline = time.monotonic() + 30
        while True:
            with store.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(sa.func.count(), sa.func.sum(traces.c.cost_usd)).where(
                        traces.c.route == "capped", traces.c.status == "ok"
                    )
                ).one()
            if rows[0] == len(ok) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert rows[0] == len(ok)  # every answer traced once, by whichever worker gave it
        assert rows[1] == pytest.approx(spent_by_clients) and rows[1] <= 0.05 + 1e-9
    finally:
        store.close()


def test_a_worker_that_dies_is_replaced_and_the_others_keep_serving(cluster: Any, redis_url: str) -> None:
    server = cluster(CONFIG, 2, {"SHIPYARD_REDIS_URL": redis_url})
    workers = [
        int(line.split("pid ")[1].split(")")[0]) for line in server.log().splitlines() if ") ready" in line
    ]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    client = server.openai()
    answers = [
        client.chat.completions.create(model="open", messages=[{"role": "user", "content": "hi"}])
        for _ in range(20)
    ]
    assert all(a.choices[0].message.content for a in answers)  # the survivor served meanwhile
    deadline = time.monotonic() + 60
    while "restarting it" not in server.log() or server.log().count(") ready") < 3:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.2)
    assert workers_seen(server.url, 2) == {1, 2}
    assert server.stop() == 0  # SIGTERM: every worker drains and exits cleanly


def test_a_revoked_key_is_refused_by_every_worker_within_a_second_or_so(cluster: Any, redis_url: str) -> None:
    server = cluster(CONFIG, 2, {"SHIPYARD_REDIS_URL": redis_url})
    with server.api() as api:
        made = api.post("/keys", json={"name": "app", "role": "client"}).json()
    key = made["key"]
    for _ in range(6):  # both workers know the key
        assert (
            httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code
            == 200
        )
    with server.api() as api:
        assert api.delete(f"/keys/{made['id']}").status_code == 200
    revoked_at = time.monotonic()
    while True:
        codes = {
            httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code
            for _ in range(10)
        }
        if codes == {401}:
            break
        assert time.monotonic() - revoked_at < 2.5, codes
        time.sleep(0.05)
    assert time.monotonic() - revoked_at < 2.5


def test_monitoring_runs_in_one_worker_and_moves_when_it_dies(cluster: Any, redis_url: str) -> None:
    server = cluster(ALERTING, 2, {"SHIPYARD_REDIS_URL": redis_url, "SHIPYARD_LEASE_TTL": "2"})
    store = Store(server.store_url())
    try:
        first = leases.current(store, "monitoring")
        assert first is not None and first.expires_at > time.time()
        pid = int(first.holder.split(":")[1])
        assert pid in {
            int(line.split("pid ")[1].split(")")[0])
            for line in server.log().splitlines()
            if ") ready" in line
        }
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while True:
            now = leases.current(store, "monitoring")
            if now is not None and now.holder != first.holder and now.expires_at > time.time():
                break
            assert time.monotonic() < deadline, "no worker took the monitoring lease over"
            time.sleep(0.2)
        assert now.token == first.token + 1  # fenced: the old holder's token is stale
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_lease_has_one_holder_is_renewed_taken_over_and_fenced(
    backend: str, tmp_path: Path, request: Any
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = Store(url)
    store.migrate()
    try:
        a = leases.acquire(store, "job", "a", ttl=10, now=1000)
        assert a is not None and a.token == 1
        assert leases.acquire(store, "job", "b", ttl=10, now=1005) is None  # a holds it
        renewed = leases.acquire(store, "job", "a", ttl=10, now=1008)
        assert renewed is not None and renewed.token == 1 and renewed.expires_at == 1018
        assert leases.acquire(store, "job", "b", ttl=10, now=1015) is None  # renewed: still a's
        b = leases.acquire(store, "job", "b", ttl=10, now=1019)  # a stopped renewing: taken over
        assert b is not None and b.token == 2
        assert not leases.holds(store, renewed, now=1019) and leases.holds(store, b, now=1019)
        assert leases.acquire(store, "job", "a", ttl=10, now=1020) is None  # a came back: fenced out
        leases.release(store, b)
        c = leases.acquire(store, "job", "a", ttl=10, now=1021)
        assert c is not None and c.token == 3
    finally:
        store.close()


def test_only_one_of_many_racing_workers_takes_a_lease(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    Store(url).migrate()
    script = (
        "import sys; from shipyard.store import leases; from shipyard.store.db import Store; "
        f"s = Store({url!r}); print(leases.acquire(s, 'race', sys.argv[1], 30) is not None)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(i)], stdout=subprocess.PIPE, text=True)
        for i in range(6)
    ]
    results = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert results.count("True") == 1, results
