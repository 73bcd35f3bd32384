"""Model workers seen from the gateway: start them, feed them jobs, notice when one dies, say why,
start another.

A local provider owns one :class:`FairQueue` and a :class:`WorkerPool` of N worker slots. Each slot
has a dispatcher thread that takes the next job from the queue whenever its worker is idle, sends
it over the worker's pipe and waits for the worker's ``done``; a reader thread per worker turns the
worker's frames into events for the waiting request (on whichever event loop it came from, so a
provider started on one loop serves requests from another).

When a worker dies, the request it was serving ends with a retryable 503 ``model_unavailable``
(routes fall back, as on any provider error); queued requests stay queued and go to the next live
worker. The slot starts a new worker at once, then with growing backoff if it keeps dying young. A
worker that fails while loading (a bad file, a crash in the self-test) is reported with its cause
and a remedy; at provider start that fails the provider, later it is retried a few times and then
left failed rather than restarted in a tight loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from shipyard.errors import ProviderError, ProviderUnavailable
from shipyard.providers.base import WorkerStatus
from shipyard.providers.model_worker import Engine, JobLoop, Sender, read_frame

log = logging.getLogger("shipyard.providers.workers")

STDERR_LINES = 20  # last lines of a worker's log kept to explain its death
START_FAILURES_BEFORE_GIVING_UP = 3
MAX_BACKOFF_S = 30.0
HEALTHY_AFTER_S = 60.0  # a worker that lived this long restarts at once if it dies


# -- jobs and the fair queue ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Started:
    """The worker began this request (streams send their first chunk now, not while queued)."""

    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Finished:
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


Event = Started | Finished | str | BaseException
ErrorFactory = Callable[[dict[str, Any]], BaseException]
_ids = itertools.count(1)


@dataclass(eq=False, slots=True)
class Job:
    """One request waiting for, or running on, a model worker."""

    key: str | None
    payload: dict[str, Any]  # the `run` frame's fields: prompt, sampling, max_tokens, stop…
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event]
    error_for: ErrorFactory  # turns a worker's `error` frame into the exception the client gets
    id: int = field(default_factory=lambda: next(_ids))
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    worker: ModelWorker | None = None
    seq: int = 0
    queued_at: float = field(default_factory=time.monotonic)

    def post(self, event: Event) -> None:
        """Hand an event to the waiting coroutine; safe from any thread."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:
            # The loop is closed: nobody is left to read the answer.
            self.cancelled.set()

    def cancel(self) -> None:
        """The caller is gone (closed stream, timeout, disconnect): stop generating for it."""
        self.cancelled.set()
        worker = self.worker
        if worker is not None and not self.finished.is_set():
            worker.send_cancel(self.id)


class FairQueue:
    """Jobs in one FIFO per key; ``get`` serves the key served least recently (never-served keys
    first, ties by arrival), which is round-robin among keys that keep sending. Shared by all the
    workers of a provider, so a client's burst cannot occupy every worker while another waits."""

    def __init__(self, max_size: int, remembered_keys: int = 4096) -> None:
        self._cond = threading.Condition()
        self._queues: dict[str | None, deque[Job]] = {}
        # Keys stay remembered after their queue empties, else a key whose request just ran would
        # look new again and jump ahead of one that has been waiting. Bounded for many-user servers.
        self._last_served: OrderedDict[str | None, int] = OrderedDict()
        self._remembered = remembered_keys
        self._served = 0
        self._size = 0
        self._max = max_size
        self._seq = itertools.count()
        self._closed = False

    def __len__(self) -> int:
        return self._size

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise ProviderUnavailable("the local model is shutting down")
            if self._size >= self._max:
                raise ProviderError(
                    f"the local model's queue is full ({self._max} requests waiting); retry later or "
                    "raise the provider option `max_queue`",
                    status=503,
                    retryable=True,
                    code="queue_full",
                )
            job.seq = next(self._seq)
            self._queues.setdefault(job.key, deque()).append(job)
            self._size += 1
            self._cond.notify()

    def requeue(self, job: Job) -> None:
        """Put back a job a worker took but never started (it died first): first in its key's line."""
        with self._cond:
            if self._closed:
                job.post(ProviderUnavailable("the local model is shutting down"))
                job.finished.set()
                return
            self._queues.setdefault(job.key, deque()).appendleft(job)
            self._size += 1
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Job | None:
        """The next job, waiting up to ``timeout`` seconds for one; None on timeout or once closed."""
        with self._cond:
            if not self._size and not self._closed:
                self._cond.wait(timeout)
            if self._closed or not self._size:
                return None
            key = min(self._queues, key=lambda k: (self._last_served.get(k, -1), self._queues[k][0].seq))
            queue = self._queues[key]
            job = queue.popleft()
            if not queue:
                del self._queues[key]
            self._size -= 1
            self._served += 1
            self._last_served[key] = self._served
            self._last_served.move_to_end(key)
            while len(self._last_served) > self._remembered:
                self._last_served.popitem(last=False)
            return job

    def discard(self, job: Job) -> bool:
        """Remove a job that is still waiting; False if it already left the queue."""
        with self._cond:
            queue = self._queues.get(job.key)
            if queue is None:
                return False
            try:
                queue.remove(job)
            except ValueError:
                return False
            if not queue:
                del self._queues[job.key]
            self._size -= 1
            return True

    def close(self) -> list[Job]:
        """Stop handing out jobs; returns those still waiting."""
        with self._cond:
            self._closed = True
            pending = [job for queue in self._queues.values() for job in queue]
            self._queues.clear()
            self._size = 0
            self._cond.notify_all()
            return pending


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What happened to one request (kept in ``WorkerPool.recent`` for tests and debugging)."""

    user: str | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    wait_s: float
    run_s: float
    worker: int


# -- channels: a worker process, or an engine on a thread (tests) ------------------------------------


def describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = {
            "SIGKILL": " (the kernel's out-of-memory killer sends this too: check `dmesg`)",
            "SIGSEGV": " (a crash in the model's native code)",
            "SIGILL": " (an instruction this CPU cannot execute)",
            "SIGBUS": " (a crash in the model's native code, or the model file changed while mapped)",
            "SIGABRT": " (native code aborted)",
        }.get(name, "")
        return f"killed by {name}{hint}"
    return f"exited with code {code}"


class Channel:
    """The pipe pair to one worker and the threads that read it."""

    pid: int | None = None

    def __init__(self, on_frame: Callable[[dict[str, Any]], None], on_exit: Callable[[str], None]) -> None:
        self._on_frame = on_frame
        self._on_exit = on_exit
        self._send: Sender | None = None
        self.alive = True
        self.stderr: deque[str] = deque(maxlen=STDERR_LINES)

    def send(self, message: dict[str, Any]) -> None:
        if self._send is None or not self.alive:
            raise OSError("the worker is not running")
        self._send(message)

    def _pump(self, out: IO[bytes]) -> None:
        try:
            while True:
                message = read_frame(out)
                if message is None:
                    break
                self._on_frame(message)
        except (OSError, ValueError) as exc:
            self.stderr.append(f"[shipyard] unreadable frame from the worker: {exc}")
        self.alive = False
        self._on_exit(self._reap())

    def _reap(self) -> str:
        return "exited"

    def start(self) -> None:
        """Start reading the worker's frames (after the owner has recorded this channel)."""

    def stop(self, timeout: float) -> None: ...

    def kill(self) -> None: ...


class ProcessChannel(Channel):
    def __init__(
        self,
        label: str,
        init: dict[str, Any],
        on_frame: Callable[[dict[str, Any]], None],
        on_exit: Callable[[str], None],
    ) -> None:
        super().__init__(on_frame, on_exit)
        self.label = label
        env = dict(os.environ)
        # The worker must find this very package (an editable install, a source checkout in tests).
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shipyard.providers.model_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            # Its own session: Ctrl-C in the terminal goes to the gateway, which drains requests
            # and then stops its workers; a worker dies with the gateway through its pipe (EOF) and,
            # on Linux, PR_SET_PDEATHSIG.
            start_new_session=True,
        )
        self.pid = self.proc.pid
        assert self.proc.stdin is not None
        self._send = Sender(self.proc.stdin)
        with contextlib.suppress(OSError):  # died at once: the reader reports how
            self._send(init)

    def start(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(
            target=self._drain_stderr, args=(self.proc.stderr,), daemon=True, name=f"{self.label}-stderr"
        ).start()
        threading.Thread(
            target=self._pump, args=(self.proc.stdout,), daemon=True, name=f"{self.label}-reader"
        ).start()

    def _drain_stderr(self, err: IO[bytes]) -> None:
        for raw in iter(err.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.stderr.append(line)
                log.debug("%s: %s", self.label, line)

    def _reap(self) -> str:
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        return describe_exit(code)

    def stop(self, timeout: float) -> None:
        """Ask the worker to finish and exit; kill it if it has not within ``timeout``."""
        with contextlib.suppress(OSError):
            self.send({"t": "stop"})
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()


class ThreadChannel(Channel):
    """An engine object served on a thread of this process, over real pipes with the same frames:
    tests drive the scheduler with fake engines whose timing they control."""

    def __init__(
        self,
        label: str,
        engine: Engine,
        on_frame: Callable[[dict[str, Any]], None],
        on_exit: Callable[[str], None],
    ) -> None:
        super().__init__(on_frame, on_exit)
        to_worker_r, to_worker_w = os.pipe()
        to_gateway_r, to_gateway_w = os.pipe()
        self._send = Sender(os.fdopen(to_worker_w, "wb"))
        worker_in, worker_out = os.fdopen(to_worker_r, "rb"), os.fdopen(to_gateway_w, "wb")

        def serve() -> None:
            send = Sender(worker_out)
            try:
                hello = {"t": "hello", "pid": os.getpid(), "n_ctx": engine.n_ctx, "n_vocab": engine.n_vocab}
                send({**hello, "describe": engine.describe(), "template": engine.template()})
                JobLoop(engine, worker_in, send).serve()
            finally:
                worker_out.close()
                worker_in.close()

        self._thread = threading.Thread(target=serve, daemon=True, name=f"{label}-engine")
        self._reader = threading.Thread(
            target=self._pump, args=(os.fdopen(to_gateway_r, "rb"),), daemon=True, name=f"{label}-reader"
        )

    def start(self) -> None:
        self._thread.start()
        self._reader.start()

    def stop(self, timeout: float) -> None:
        with contextlib.suppress(OSError):
            self.send({"t": "stop"})
        self._thread.join(timeout)


# -- the supervised slots ---------------------------------------------------------------------------


class WorkerStartError(Exception):
    def __init__(self, message: str, crashed: bool = False, repack: bool | None = None) -> None:
        super().__init__(message)
        self.crashed = crashed  # died by a signal before it answered its self-test
        self.repack = repack


class ModelWorker:
    """One worker slot: its current process, its dispatcher thread, and what happened to it."""

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.label = f"{pool.name}#{index}"
        self.state = "starting"
        self.channel: Channel | None = None
        self.current: Job | None = None
        self.restarts = 0
        self.served = 0
        self.last_exit: str | None = None
        self.since = time.time()
        self.hello: dict[str, Any] | None = None
        self._launched_at = 0.0
        self._quick_deaths = 0
        self.thread: threading.Thread | None = None

    # -- process lifetime ----------------------------------------------------------------------
    def launch(self) -> dict[str, Any]:
        """Start a process and wait for its hello (loaded, self-test answered). Blocking."""
        pool = self.pool
        loaded = threading.Event()
        seen: dict[str, Any] = {}

        def on_frame(message: dict[str, Any]) -> None:
            kind = message.get("t")
            if kind in ("hello", "fail"):
                seen[kind] = message
                loaded.set()
            elif kind == "loading":
                seen["loading"] = message
            else:
                self._on_job_frame(message)

        box: list[Channel] = []

        def on_exit(reason: str) -> None:
            seen["exit"] = reason
            loaded.set()
            self._on_exit(box[0], reason)

        self.state = "starting"
        self.since = time.time()
        self.hello = None
        channel: Channel
        if pool.engine is not None:
            channel = ThreadChannel(self.label, pool.engine, on_frame, on_exit)
        else:
            init = {"t": "init", "options": pool.init_options(), "self_test": pool.self_test}
            channel = ProcessChannel(f"shipyard-worker-{self.label}", init, on_frame, on_exit)
        box.append(channel)
        self.channel = channel
        channel.start()
        if not loaded.wait(pool.load_timeout):
            channel.kill()
            raise WorkerStartError(f"did not load within {pool.load_timeout:g}s")
        hello = seen.get("hello")
        if hello is None:
            repack = (seen.get("loading") or {}).get("repack")
            tail = "; ".join(list(channel.stderr)[-5:])
            said = f"; its last output: {tail}" if tail else ""
            if "fail" in seen:
                channel.kill()
                failure = seen["fail"].get("message")
                raise WorkerStartError(f"could not load the model ({failure}){said}", repack=repack)
            reason = str(seen.get("exit", "exited"))
            raise WorkerStartError(
                f"died while loading the model or answering its self-test: {reason}{said}",
                crashed=reason.startswith("killed by"),
                repack=repack,
            )
        self.hello = hello
        self._launched_at = time.monotonic()
        self.state = "ready"
        self.since = time.time()
        return hello

    def _on_exit(self, channel: Channel, reason: str) -> None:
        """A worker's pipe closed: it exited or died. Runs on that worker's reader thread."""
        job = self.current
        if job is not None and job.worker is self and not job.finished.is_set():
            job.post(
                ProviderError(
                    f"model worker {self.label} {reason} while serving this request; it is being "
                    "restarted (the request can be retried)",
                    status=503,
                    retryable=True,
                    code="model_unavailable",
                )
            )
            job.finished.set()
        if self.pool.closing or self.hello is None or channel is not self.channel:
            return
        self.last_exit = reason
        self.restarts += 1
        self.state = "restarting"
        self.since = time.time()
        tail = "; ".join(list(channel.stderr)[-5:])
        log.error(
            "model worker %s (pid %s) %s%s; restarting it",
            self.label,
            channel.pid,
            reason,
            f"; its last output: {tail}" if tail else "",
        )

    def _relaunch(self) -> bool:
        """Start a new process after a death, with backoff if workers keep dying young; False when
        the slot gives up (or the pool is closing)."""
        failures = 0
        lived = time.monotonic() - self._launched_at
        self._quick_deaths = 0 if lived >= HEALTHY_AFTER_S else self._quick_deaths + 1
        while not self.pool.closing:
            steps = self._quick_deaths - 1 + failures
            delay = 0.0 if steps <= 0 else min(MAX_BACKOFF_S, 0.5 * 2 ** (steps - 1))
            if delay and self.pool.closed_event.wait(delay):
                return False
            try:
                self.launch()
                log.info("model worker %s is back (pid %s)", self.label, self.pid)
                return True
            except WorkerStartError as exc:
                failures += 1
                self.last_exit = str(exc)
                if failures >= START_FAILURES_BEFORE_GIVING_UP:
                    self.state = "failed"
                    self.since = time.time()
                    log.error(
                        "model worker %s failed to start %d times in a row (%s); giving up on it until "
                        "the provider restarts",
                        self.label,
                        failures,
                        exc,
                    )
                    self.pool.on_worker_failed()
                    return False
                log.error("model worker %s failed to start again (%s); retrying", self.label, exc)
        return False

    @property
    def pid(self) -> int | None:
        channel = self.channel
        return channel.pid if channel is not None else None

    # -- jobs ------------------------------------------------------------------------------------
    def supervise(self, started: Callable[[WorkerStartError | None], None]) -> None:
        """The slot's thread, for the pool's lifetime: start the first process (reporting the
        outcome through ``started``), then feed jobs to it one at a time and start a new process
        whenever one dies. One long-lived thread owns the process: on Linux a worker is killed when
        the thread that started it exits (PR_SET_PDEATHSIG follows the thread, not the process)."""
        try:
            self._launch_first()
        except WorkerStartError as exc:
            self.state = "failed"
            started(exc)
            return
        started(None)
        pool = self.pool
        while not pool.closing:
            channel = self.channel
            if channel is None or not channel.alive:
                if not self._relaunch():
                    return
                continue
            job = pool.queue.get(timeout=0.25)
            if job is None:
                continue
            self._run(job, channel)

    def _launch_first(self) -> None:
        options = self.pool.options
        try:
            self.launch()
        except WorkerStartError as exc:
            # `cpu_repack: auto` left repacking on and the model crashed at its first compute: a CPU
            # path that faults (like llama.cpp's AMX matmul on some machines). Once more without.
            if not (exc.crashed and exc.repack and options.get("cpu_repack", "auto") == "auto"):
                raise
            log.warning(
                "model worker %s %s with CPU weight repacking on; starting it again with `cpu_repack: off`",
                self.label,
                exc,
            )
            options["cpu_repack"] = "off"
            self.launch()

    def _run(self, job: Job, channel: Channel) -> None:
        job.worker = self  # before the cancelled check: a cancel from now on reaches the worker
        if job.cancelled.is_set():
            job.finished.set()
            return
        self.current = job
        self.state = "busy"
        try:
            channel.send({"t": "run", "id": job.id, **job.payload})
        except OSError:
            # It died between jobs and this one never reached it: first in line for the next worker.
            job.worker = None
            self.current = None
            self.pool.queue.requeue(job)
            return
        job.finished.wait()
        if self.current is job:  # the worker died on it: _on_exit failed the job
            self.current = None

    def send_cancel(self, jid: int) -> None:
        channel = self.channel
        if channel is not None:
            with contextlib.suppress(OSError):
                channel.send({"t": "cancel", "id": jid})

    def _on_job_frame(self, message: dict[str, Any]) -> None:
        job = self.current
        if job is None or message.get("id") != job.id:
            return  # a late frame of a job already settled (cancelled, or failed by shutdown)
        kind = message.get("t")
        if kind == "started":
            job.post(Started(int(message["prompt_tokens"])))
        elif kind == "text":
            job.post(str(message["text"]))
        elif kind == "done":
            finish = str(message["finish"])
            prompt, produced = int(message["prompt_tokens"]), int(message["completion_tokens"])
            self.pool.record(job, finish, prompt, produced, float(message["seconds"]), self.index)
            self._idle()
            if finish != "cancelled":
                job.post(Finished(finish, prompt, produced))
            job.finished.set()
        elif kind == "error":
            self._idle()
            job.post(job.error_for(message))
            job.finished.set()

    def _idle(self) -> None:
        # Before the answer is posted, so whoever receives it already sees the worker as idle.
        self.current = None
        self.served += 1
        if self.state == "busy":
            self.state = "ready"

    def status(self) -> WorkerStatus:
        return WorkerStatus(
            index=self.index,
            state=self.state,
            pid=self.pid if self.state in ("ready", "busy", "starting") else None,
            restarts=self.restarts,
            served=self.served,
            last_exit=self.last_exit,
            since=self.since,
        )


class WorkerPool:
    """The N worker slots of one local provider, sharing its fair queue."""

    def __init__(
        self,
        name: str,
        options: dict[str, Any],
        count: int,
        queue: FairQueue,
        *,
        engine: Engine | None = None,
        load_timeout: float = 300.0,
        self_test: bool = True,
    ) -> None:
        self.name = name
        self.options = options
        self.queue = queue
        self.engine = engine
        self.load_timeout = load_timeout
        self.self_test = self_test
        self.workers = [ModelWorker(self, i + 1) for i in range(count)]
        self.closed_event = threading.Event()
        self.hello: dict[str, Any] = {}
        self.recent: deque[RunRecord] = deque(maxlen=100)
        self.tokens_generated = 0
        self.generation_seconds = 0.0
        self._stats = threading.Lock()

    @property
    def closing(self) -> bool:
        return self.closed_event.is_set()

    def init_options(self) -> dict[str, Any]:
        return dict(self.options)

    def start(self) -> dict[str, Any]:
        """Start every worker and wait until each answered its self-test (blocking). Raises
        WorkerStartError naming the first failure; no worker is left running then."""
        errors: list[WorkerStartError] = []
        done = threading.Semaphore(0)

        def started(error: WorkerStartError | None) -> None:
            if error is not None:
                errors.append(error)
            done.release()

        for w in self.workers:
            w.thread = threading.Thread(
                target=w.supervise, args=(started,), daemon=True, name=f"shipyard-{w.label}"
            )
            w.thread.start()
        for _ in self.workers:
            done.acquire()
        if errors:
            self.close(5.0)
            for w in self.workers:
                w.state = "failed"
            raise errors[0]
        self.hello = self.workers[0].hello or {}
        return self.hello

    def on_worker_failed(self) -> None:
        """A slot gave up: when none is left that can serve, fail whoever is waiting."""
        if any(w.state != "failed" for w in self.workers):
            return
        reason = "; ".join(f"{w.label}: {w.last_exit}" for w in self.workers)
        for job in self.queue.close():
            job.post(
                ProviderUnavailable(
                    f"every model worker of provider `{self.name}` failed ({reason}); restart Shipyard "
                    "after fixing the cause"
                )
            )
            job.finished.set()

    @property
    def serving(self) -> bool:
        return any(w.state in ("ready", "busy") for w in self.workers)

    @property
    def failed(self) -> bool:
        return all(w.state == "failed" for w in self.workers)

    def record(self, job: Job, finish: str, prompt: int, produced: int, seconds: float, worker: int) -> None:
        with self._stats:
            self.tokens_generated += produced
            self.generation_seconds += seconds
            wait = max(0.0, time.monotonic() - job.queued_at - seconds)
            self.recent.append(RunRecord(job.key, finish, prompt, produced, wait, seconds, worker))

    def statuses(self) -> list[WorkerStatus]:
        return [w.status() for w in self.workers]

    def close(self, timeout: float = 30.0) -> None:
        """Fail what waits, cancel what runs, stop the workers (killed after ``timeout``)."""
        self.closed_event.set()
        for job in self.queue.close():
            job.post(ProviderUnavailable(f"provider `{self.name}` is shutting down"))
            job.finished.set()
        for w in self.workers:
            running = w.current
            if running is not None and not running.finished.is_set():
                running.cancel()
                # A cancelled generation posts nothing more, so its caller learns why from this.
                running.post(ProviderUnavailable(f"provider `{self.name}` is shutting down"))
                running.finished.set()
        deadline = time.monotonic() + timeout
        for w in self.workers:
            channel = w.channel
            if channel is not None:
                channel.stop(max(0.5, deadline - time.monotonic()))
            if w.thread is not None and w.thread is not threading.current_thread():
                w.thread.join(max(0.5, deadline - time.monotonic()))
            if w.state != "failed":
                w.state = "stopped"
