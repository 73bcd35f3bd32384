"""What a `kill -9` costs the trace record: with the default batched writer, the traces still in
memory (at most `trace_flush_interval` of them); with `trace_durability: acknowledged`, nothing the
server answered, streamed or not."""

from __future__ import annotations

import signal
from pathlib import Path

from shipyard.store import traces as q
from shipyard.store.db import Store
from tests.conftest import ShipyardServer

CONFIG = """
providers: [{name: mock, type: mock, tokens_per_s: 2000}]
models: [{name: m, provider: mock}]
routes: [{name: default, targets: [{model: m}]}]
"""


def answered_then_killed(tmp_path: Path, durability: str) -> tuple[ShipyardServer, list[str]]:
    # A long flush interval makes the batched writer's window obvious: nothing is written for 30 s.
    env = {"SHIPYARD_TRACE_DURABILITY": durability, "SHIPYARD_TRACE_FLUSH_INTERVAL": "30"}
    s = ShipyardServer(tmp_path / durability, CONFIG, env=env).start()
    client = s.openai()
    ids: list[str] = []
    for i in range(6):
        raw = client.chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": f"question {i}"}]
        )
        ids.append(raw.headers["x-shipyard-trace-id"])
        with client.chat.completions.with_streaming_response.create(
            model="default", messages=[{"role": "user", "content": f"stream {i}"}], stream=True
        ) as resp:
            chunks = list(resp.parse())
            ids.append(resp.headers["x-shipyard-trace-id"])
        assert chunks
    s.stop(signal.SIGKILL)
    return s, ids


def stored(s: ShipyardServer, ids: list[str]) -> int:
    store = Store(s.store_url())
    try:
        return sum(q.get_trace(store, i) is not None for i in ids)
    finally:
        store.close()


def test_acknowledged_answers_survive_kill_9(tmp_path: Path) -> None:
    s, ids = answered_then_killed(tmp_path, "acknowledged")
    assert stored(s, ids) == len(ids) == 12


def test_batched_traces_in_memory_are_lost_on_kill_9(tmp_path: Path) -> None:
    s, ids = answered_then_killed(tmp_path, "batched")
    assert stored(s, ids) < len(ids)  # the trade the setting exists for
