"""The batch writer: traces leave the request path through a bounded in-memory queue and are
written by one background thread, many per transaction. ``close()`` drains the queue, so a clean
shutdown loses nothing; a full queue drops new traces (counted) rather than slowing requests.

A process killed outright (``kill -9``, a power cut) loses what was queued: at most about
``flush_interval`` of traffic. ``submit_acknowledged`` is for servers that must not lose the record
of an answer they gave (setting ``trace_durability: acknowledged``): the caller waits for the
commit, and the writer then commits what it has at once instead of collecting a batch (group
commit), trading throughput for durability."""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from shipyard.retries import backoff
from shipyard.store import traces as trace_queries
from shipyard.store.db import Store
from shipyard.tracing.spans import Trace

log = logging.getLogger("shipyard.tracing")
_STOP = object()


class TraceWriter:
    """Traces go into a deque (an append is atomic and takes no lock) and the writer thread takes
    them out in batches. The request path wakes the writer only when it is idle, when a batch is
    full, or when a caller waits for a commit: a ``queue.Queue`` would take a lock and notify a
    condition on every trace, which profiling showed as 5% of the gateway's time under load."""

    def __init__(
        self,
        store: Store,
        *,
        capture: str = "full",
        max_chars: int = 2000,
        queue_size: int = 50_000,
        batch_size: int = 500,
        flush_interval: float = 0.25,
    ) -> None:
        self.store = store
        self.capture = capture
        self.max_chars = max_chars
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.queue_size = queue_size
        self._items: collections.deque[Any] = collections.deque()
        self._idle = threading.Event()  # set when there is something to take and the writer waits
        self._urgent = threading.Event()  # set to end a batch's collecting early
        self._appended = itertools.count(1)  # next(): how many items went in (atomic in CPython)
        self._last_appended = 0
        self._finished = 0  # items the writer is done with (written, failed or a stop)
        self._thread: threading.Thread | None = None
        self.submitted = 0
        self.written = 0
        self.dropped = 0
        self.failed_batches = 0
        # Called from the writer thread with each batch once it is stored (e.g. the OTLP exporter
        # queueing it); each must return quickly and must not raise.
        self.on_written: list[Callable[[list[Trace]], None]] = []

    @property
    def pending(self) -> int:
        return len(self._items)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shipyard-trace-writer", daemon=True)
            self._thread.start()

    def _put(self, item: Any, urgent: bool) -> bool:
        if len(self._items) >= self.queue_size:
            return False
        self._items.append(item)
        self._last_appended = next(self._appended)
        if not self._idle.is_set():
            self._idle.set()
        if (urgent or len(self._items) >= self.batch_size) and not self._urgent.is_set():
            self._urgent.set()
        return True

    def submit(self, trace: Trace) -> bool:
        """Hand a finished trace to the writer; never blocks."""
        if not self._put(trace, urgent=False):
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.warning("trace queue full: %d trace(s) dropped so far", self.dropped)
            return False
        self.submitted += 1
        return True

    def submit_acknowledged(self, trace: Trace) -> concurrent.futures.Future[bool]:
        """Hand over a trace and get a future that is done once it is committed (True) or could
        not be (False: the queue was full, or the store failed after retries)."""
        done: concurrent.futures.Future[bool] = concurrent.futures.Future()
        if not self._put((trace, done), urgent=True):
            self.dropped += 1
            done.set_result(False)
            return done
        self.submitted += 1
        return done

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is written. Returns False on timeout."""
        deadline = time.monotonic() + timeout
        target = self._last_appended
        while self._finished < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 30.0) -> None:
        if self._thread is None:
            return
        self._items.append(_STOP)  # past the size bound: a stop is never refused
        self._last_appended = next(self._appended)
        self._idle.set()
        self._urgent.set()
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        # Collect for up to `flush_interval` (or until `batch_size`) before writing: one transaction
        # per batch keeps the store's cost per trace low and the writer off the GIL most of the time.
        # A trace whose caller waits for its commit ends the collecting: what is queued is written
        # right away.
        items = self._items
        stop = False
        while not stop:
            if not items:
                self._idle.wait(1.0)
                self._idle.clear()
                continue  # an append between the wait and the clear is seen here, in `items`
            self._urgent.wait(self.flush_interval)
            self._urgent.clear()
            batch: list[Trace] = []
            waiters: list[concurrent.futures.Future[bool]] = []
            n_items = 0
            while items:  # everything queued so far: at most `queue_size` traces
                item = items.popleft()
                n_items += 1
                if item is _STOP:
                    stop = True
                else:
                    self._take(item, batch, waiters)
            ok = True
            try:
                for i in range(0, len(batch), self.batch_size):
                    ok = self._write(batch[i : i + self.batch_size]) and ok
            finally:
                for waiter in waiters:
                    waiter.set_result(ok)
                self._finished += n_items

    @staticmethod
    def _take(item: Any, batch: list[Trace], waiters: list[concurrent.futures.Future[bool]]) -> None:
        if isinstance(item, tuple):
            batch.append(item[0])
            waiters.append(item[1])
        else:
            batch.append(item)

    def _write(self, batch: list[Trace]) -> bool:
        for attempt in range(6):
            try:
                trace_queries.insert_traces(self.store, batch, self.capture, self.max_chars)
                self.written += len(batch)
                for hook in self.on_written:
                    try:
                        hook(batch)
                    except Exception:
                        log.exception("trace writer hook %r failed", hook)
                return True
            except Exception as exc:  # the store may be locked or briefly unreachable
                if attempt == 5:
                    self.failed_batches += 1
                    self.dropped += len(batch)
                    log.error("could not write %d trace(s) after retries: %s", len(batch), exc)
                    return False
                delay = backoff(attempt, 0.05, jitter=False)
                log.warning("trace write failed (%s); retrying in %.2fs", exc, delay)
                time.sleep(delay)
        return False
