"""Model workers: local models run in processes the gateway supervises. These tests cross the real
process boundary (fork, pipes, signals) with a scripted engine (tests/fake_engines.py), so crashes,
kills, restarts, backoff and cancellation are checked in seconds; the real model's turn is in
tests/test_local_gateway.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from shipyard.errors import ProviderError, ProviderUnavailable
from shipyard.providers.base import Call
from shipyard.providers.local import LocalOptions, LocalProvider, resolve_threads, usable_cpus
from shipyard.providers.model_worker import LoopGuard
from shipyard.providers.workers import describe_exit

ROOT = Path(__file__).resolve().parents[1]
FACTORY = "tests.fake_engines:scripted"


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    # Worker processes import the scripted engine from this repository's tests package.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[LocalProvider] = []

    async def make(spec: dict[str, Any] | None = None, start: bool = True, **options: Any) -> LocalProvider:
        model = tmp_path / f"model-{len(started)}.json"
        model.write_text(json.dumps(spec or {}))
        p = LocalProvider("local", LocalOptions(engine_factory=FACTORY, model_path=str(model), **options))
        started.append(p)
        if start:
            await p.start()
        return p

    yield make
    for p in started:
        await p.close()


def completion(prompt: str = "hello", **body: Any) -> Call:
    return Call(body={"prompt": prompt, "max_tokens": 1000, **body}, model="m", timeout=30)


async def until(predicate: Callable[[], bool], within: float = 10.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_worker_runs_in_its_own_process(provider: Callable[..., Any]) -> None:
    p = await provider({"pieces": 3})
    [w] = p.workers()
    assert w.state == "ready" and w.pid not in (None, os.getpid()) and alive(w.pid)
    answer = await p.complete(completion())
    assert answer.text == " tok tok tok" and answer.usage.output_tokens == 3
    assert (await p.health()).ok


async def test_sigkill_mid_stream_fails_that_request_and_the_queue_is_served_by_the_new_worker(
    provider: Callable[..., Any],
) -> None:
    p = await provider({"pieces": 20, "delay": 0.02})
    [before] = p.workers()

    async def stream(i: int) -> tuple[str, str]:
        text = ""
        try:
            async for chunk in p.stream_complete(completion(f"request {i}", stream=True)):
                text += chunk.text
        except ProviderError as exc:
            return "error", f"{exc.status} {exc.code} {exc}"
        return "ok", text

    tasks = [asyncio.create_task(stream(i)) for i in range(10)]
    await until(lambda: p.waiting == 9)
    await asyncio.sleep(0.1)  # the first is generating
    assert before.pid is not None
    os.kill(before.pid, signal.SIGKILL)
    back = await until(lambda: [w.state for w in p.workers()] in (["ready"], ["busy"]))
    results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    errors = [r for r in results if r[0] == "error"]
    assert len(errors) == 1, results
    assert "503 model_unavailable" in errors[0][1] and "SIGKILL" in errors[0][1]
    # Everything queued behind it was answered, whole, by the restarted worker.
    assert [r[1] for r in results if r[0] == "ok"] == [" tok" * 20] * 9
    [after] = p.workers()
    assert after.pid != before.pid and after.restarts == 1 and "SIGKILL" in (after.last_exit or "")
    assert back < 10
    assert (await p.complete(completion(max_tokens=2))).text == " tok tok"


async def test_segfault_mid_generation_is_a_retryable_503(provider: Callable[..., Any]) -> None:
    p = await provider({"pieces": 5})
    with pytest.raises(ProviderError) as info:
        await p.complete(completion("please CRASH now"))
    assert (info.value.status, info.value.code, info.value.retryable) == (503, "model_unavailable", True)
    assert "SIGSEGV" in info.value.message
    answer = await asyncio.wait_for(p.complete(completion("fine")), 20)
    assert answer.text == " tok" * 5
    assert p.workers()[0].restarts == 1


async def test_crash_on_load_is_a_clear_start_error_not_a_restart_loop(
    provider: Callable[..., Any], tmp_path: Path
) -> None:
    starts = tmp_path / "starts.txt"
    p = await provider({"crash_on_load": True, "starts": str(starts)}, start=False)
    with pytest.raises(ProviderUnavailable) as info:
        await p.start()
    message = info.value.message
    assert "killed by SIGSEGV" in message and "while loading the model" in message
    assert "cpu_repack: off" in message or "rebuild llama-cpp-python" in message
    await asyncio.sleep(1.0)
    assert len(starts.read_text().splitlines()) == 1  # tried once, not restarted
    assert not (await p.health()).ok


async def test_clean_load_error_names_the_cause(provider: Callable[..., Any]) -> None:
    p = await provider({"fail_on_load": True}, start=False)
    with pytest.raises(ProviderUnavailable, match="this is not a model file"):
        await p.start()


async def test_a_worker_that_keeps_crashing_on_restart_is_given_up_with_backoff(
    provider: Callable[..., Any], tmp_path: Path
) -> None:
    marker, starts = tmp_path / "broken", tmp_path / "starts.txt"
    p = await provider({"crash_on_load_if": str(marker), "starts": str(starts)})
    marker.touch()  # from now on every start crashes while loading
    waiting = asyncio.create_task(p.complete(completion("CRASH")))
    with pytest.raises(ProviderError, match=r"model_unavailable|SIGSEGV"):
        await waiting
    queued = asyncio.create_task(p.complete(completion("queued behind a dead worker")))
    await until(lambda: p.workers()[0].state == "failed", within=20)
    with pytest.raises(ProviderUnavailable, match="every model worker"):
        await asyncio.wait_for(queued, 5)
    with pytest.raises(ProviderUnavailable, match="every model worker failed"):
        await p.complete(completion())
    lines = starts.read_text().splitlines()
    assert len(lines) == 1 + 3  # the first start, then three failed restarts, then no more
    await asyncio.sleep(1.0)
    assert len(starts.read_text().splitlines()) == 4


async def test_closing_a_stream_stops_generation_in_the_worker(provider: Callable[..., Any]) -> None:
    p = await provider({"pieces": 1000, "delay": 0.005})
    stream = p.stream_complete(completion(stream=True))
    seen = 0
    async for chunk in stream:
        seen += bool(chunk.text)
        if seen == 3:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    await until(lambda: bool(p.recent) and p.recent[-1].finish_reason == "cancelled")
    assert p.recent[-1].completion_tokens < 300
    assert (await p.complete(completion(max_tokens=1))).text == " tok"


async def test_two_workers_generate_at_the_same_time(provider: Callable[..., Any]) -> None:
    p = await provider({"pieces": 20, "delay": 0.02}, workers=2)
    assert len({w.pid for w in p.workers()}) == 2
    events: list[tuple[str, int]] = []

    async def one(i: int) -> None:
        async for chunk in p.stream_complete(completion(f"r{i}", stream=True)):
            if chunk.text and ("first", i) not in events:
                events.append(("first", i))
        events.append(("done", i))

    await asyncio.gather(one(0), one(1))
    # Both had produced text before either finished: they ran side by side, one per worker.
    assert {e for e in events[:2]} == {("first", 0), ("first", 1)}
    assert {r.worker for r in p.recent} == {1, 2}


def test_workers_exit_when_the_gateway_dies(tmp_path: Path) -> None:
    model = tmp_path / "model.json"
    model.write_text(json.dumps({"pieces": 1}))
    code = (
        "import asyncio, sys\n"
        "from shipyard.providers.local import LocalOptions, LocalProvider\n"
        f"p = LocalProvider('local', LocalOptions(engine_factory={FACTORY!r}, model_path={str(model)!r}))\n"
        "asyncio.run(p.start())\n"
        "print(p.workers()[0].pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    gateway = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(os.environ)
    )
    assert gateway.stdout is not None
    worker_pid = int(gateway.stdout.readline())
    assert alive(worker_pid)
    gateway.kill()
    gateway.wait()
    deadline = time.monotonic() + 10
    while alive(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker_pid), "the worker outlived its gateway"


def test_threads_are_split_among_workers() -> None:
    assert resolve_threads(None, {}, workers=2) == max(1, usable_cpus() // 2)
    assert resolve_threads(None, {}, workers=64) == 1
    assert resolve_threads(3, {}, workers=2) == 3
    assert resolve_threads(None, {"SHIPYARD_LOCAL_THREADS": "2"}, workers=4) == 2


def test_exit_descriptions_name_the_signal_and_a_likely_cause() -> None:
    assert "SIGSEGV" in describe_exit(-11) and "native code" in describe_exit(-11)
    assert "out-of-memory" in describe_exit(-9)
    assert describe_exit(3) == "exited with code 3"


def pieces(text: str) -> list[bytes]:
    return [w.encode() for w in text.split("|")]


def test_loop_guard_stops_a_repeating_run_but_not_a_short_repetition() -> None:
    guard = LoopGuard(4)
    looped = [guard.looping(p) for p in pieces("Good| morning|,|\n" + "|good| morning|,|\n" * 8)]
    # Caught once the repeats cover 24 tokens (six repeats of this 4-token line), not at max_tokens.
    assert any(looped) and looped.index(True) < 4 + 24 + 4
    calm = LoopGuard(4)
    assert not any(calm.looping(p) for p in pieces("ha| ha| ha| ha|!| The| end|."))
    prose = LoopGuard(4)
    text = "|".join(f"w{i % 37}" for i in range(200))  # a period longer than 32 tokens
    assert not any(prose.looping(p) for p in pieces(text))
    off = LoopGuard(0)
    assert not any(off.looping(b"x") for _ in range(200))


# -- through the real server -------------------------------------------------------------------------


def gateway_config(model: Path, **local: Any) -> str:
    options = {"engine_factory": FACTORY, "model_path": str(model), **local}
    return json.dumps(
        {
            "version": 1,
            "providers": [
                {"name": "local", "type": "local", **options},
                {"name": "mock", "type": "mock", "output": "from the fallback"},
            ],
            "models": [
                {"name": "fake-local", "provider": "local"},
                {"name": "mock-model", "provider": "mock"},
            ],
            "routes": [
                {
                    "name": "chat",
                    "targets": [{"model": "fake-local"}],
                    "fallbacks": [{"model": "mock-model"}],
                },
                {"name": "local-only", "targets": [{"model": "fake-local"}]},
                {"name": "other", "targets": [{"model": "mock-model"}]},
            ],
        }
    )


def test_a_crashing_model_falls_back_and_the_gateway_keeps_serving(
    shipyard_server: Any, tmp_path: Path
) -> None:
    from tests.helpers import attempt_spans, wait_trace

    model = tmp_path / "model.json"
    model.write_text(json.dumps({"pieces": 4}))
    s = shipyard_server(gateway_config(model), env={"PYTHONPATH": str(ROOT)})
    client = s.openai()
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "CRASH please"}]
    )
    reply = raw.parse()
    assert reply.choices[0].message.content == "from the fallback"
    trace = wait_trace(s.store_url(), raw.headers["x-shipyard-trace-id"])
    first, second = attempt_spans(trace)
    assert first["status"] == "error" and "SIGSEGV" in first["attributes"]["error.message"]
    assert second["status"] == "ok" and trace["target"] == "mock-model"
    # Other routes never noticed; the local route answers again once its worker is back.
    assert client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    deadline = time.monotonic() + 10
    while True:
        with s.http() as http:
            workers = http.get("/readyz").json()["providers"]["local"]["workers"]
        if workers[0]["state"] == "ready":
            break
        assert time.monotonic() < deadline, workers
        time.sleep(0.1)
    assert workers[0]["restarts"] == 1 and "SIGSEGV" in workers[0]["last_exit"]
    answer = client.completions.create(model="local-only", prompt="fine", max_tokens=2)
    assert answer.choices[0].text == " tok tok"
    with s.http() as http:
        metrics = http.get("/metrics").text
        overview = http.get("/", headers={"accept": "text/html"}).text
    assert 'shipyard_model_worker_restarts_total{provider="local"} 1.0' in metrics
    assert 'shipyard_model_workers{provider="local",state="ready"} 1.0' in metrics
    assert "Model workers" in overview and str(workers[0]["pid"]) in overview


def test_a_route_without_fallback_answers_503_model_unavailable(shipyard_server: Any, tmp_path: Path) -> None:
    import openai

    model = tmp_path / "model.json"
    model.write_text(json.dumps({"pieces": 4}))
    s = shipyard_server(gateway_config(model), env={"PYTHONPATH": str(ROOT)})
    with pytest.raises(openai.APIStatusError) as info:
        s.openai().completions.create(model="local-only", prompt="CRASH")
    assert info.value.status_code == 503
    assert info.value.body["code"] == "model_unavailable"  # type: ignore[index]


def test_readyz_is_503_while_the_model_loads_and_ready_is_printed_after(tmp_path: Path) -> None:
    import threading

    import httpx

    from tests.conftest import ShipyardServer

    model = tmp_path / "model.json"
    model.write_text(json.dumps({"load_delay": 3}))
    s = ShipyardServer(tmp_path / "home", gateway_config(model), env={"PYTHONPATH": str(ROOT)})
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                r = httpx.get(s.url + "/readyz", timeout=2)
                seen.append((r.status_code, r.json()["status"]))
            except httpx.HTTPError:
                pass
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        s.start()
    finally:
        stop.set()
        poller.join()
    try:
        starting = [status for code, status in seen if code == 503]
        assert starting and all(st.startswith("starting: waiting for provider(s) local") for st in starting)
        log = s.log()
        assert "ready on" in log and log.index("worker(s) ready") < log.index("ready on")
        assert log.index("starting providers") < log.index("ready on")
    finally:
        s.stop()


def test_a_model_that_cannot_load_is_reported_once_with_the_remedy(tmp_path: Path) -> None:
    import httpx

    from tests.conftest import ShipyardServer

    starts = tmp_path / "starts.txt"
    model = tmp_path / "model.json"
    model.write_text(json.dumps({"crash_on_load": True, "starts": str(starts)}))
    s = ShipyardServer(tmp_path / "home", gateway_config(model), env={"PYTHONPATH": str(ROOT)})
    s.start(ready=False)
    try:
        deadline = time.monotonic() + 20
        while "cannot answer" not in s.log():
            assert time.monotonic() < deadline, s.log()
            time.sleep(0.1)
        log = s.log()
        assert "error: provider `local`" in log and "SIGSEGV" in log and "cpu_repack: off" in log
        assert "`local-only` cannot answer" in log  # `chat` still can, through its fallback
        r = httpx.get(s.url + "/readyz")
        assert r.status_code == 503 and r.json()["status"] == "not ready"
        local = r.json()["providers"]["local"]
        assert not local["ready"] and "SIGSEGV" in local["detail"]
        reply = s.openai().chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "from the fallback"
        time.sleep(1)
        assert len(starts.read_text().splitlines()) == 1  # reported once, never restarted
    finally:
        s.stop()
