"""Online evaluation: the scorers of eval suites, run on a sampled share of live traffic.

On the request path there is only :meth:`OnlineEvaluator.observe` (a gateway observer): a dict
lookup, a random draw and a ``put_nowait`` on a bounded queue; a full queue drops the trace (and
counts it), never the request. Scoring happens in a thread of its own with its own event loop, so
that a slow or CPU-bound scorer (a sync custom function, a long BLEU) cannot stall the gateway's
loop. Model-graded scorers call their judge route through the platform's own gateway, on the
gateway's loop; the judge's traces are tagged :data:`JUDGE_TAG` and never sampled themselves.

Each scorer's result becomes one ``trace_scores`` row (source ``online``), written in batches.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shipyard.evals.core import Case, Observation, OfflineEmbedder, Score, Scorer
from shipyard.gateway.service import TAGS_HEADER, Gateway
from shipyard.monitoring.config import OnlineEval
from shipyard.store import scores as scores_q
from shipyard.store.db import Store
from shipyard.tracing.spans import Trace

log = logging.getLogger("shipyard.monitoring")

JUDGE_TAG = "shipyard-online-eval"
FLUSH_INTERVAL = 0.5
FLUSH_ROWS = 500
# Details that repeat the prompt or the answer: kept only when traces keep messages in full.
_MESSAGE_DETAILS = ("messages", "samples", "match", "reference", "found", "missing", "present", "absent")


class OnlineContext:
    """The ScoreContext of online scorers (they run on the evaluator's loop, not the gateway's)."""

    def __init__(self, gateway: Gateway, gateway_loop: asyncio.AbstractEventLoop) -> None:
        self.gateway = gateway
        self.gateway_loop = gateway_loop
        self._embedder = OfflineEmbedder("online-eval-embeddings")

    async def complete(self, route: str, messages: list[dict[str, Any]], **params: Any) -> Observation:
        from shipyard.evals.runner import call_route

        # Providers belong to the gateway's loop (their HTTP clients, their locks): run it there.
        future = asyncio.run_coroutine_threadsafe(
            call_route(
                self.gateway,
                route,
                {"messages": messages, **params},
                stream=False,
                headers={TAGS_HEADER: JUDGE_TAG},
            ),
            self.gateway_loop,
        )
        return await asyncio.wrap_future(future)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self._embedder.embed(texts)

    async def close(self) -> None:
        await self._embedder.close()


@dataclass
class EvalStats:
    sampled: int = 0
    scored: int = 0
    failed_scores: int = 0
    last_scored_at: float | None = None


@dataclass
class _Entry:
    config: OnlineEval
    scorers: list[Scorer]
    stats: EvalStats = field(default_factory=EvalStats)


def case_of(trace: Trace) -> Case:
    """A live request as an eval case: its messages (a completion's prompt as one user message) and
    no expected answer."""
    value = trace.input
    if isinstance(value, str):
        messages: list[dict[str, Any]] | dict[str, Any] = [{"role": "user", "content": value}]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        messages = [{"role": "user", "content": "\n".join(value)}]
    elif isinstance(value, list | dict):
        messages = value
    else:
        messages = []
    return Case(id=trace.trace_id, input=messages, metadata={"route": trace.route})


def observation_of(trace: Trace) -> Observation:
    # A sampled trace's error is not the scorers' business: only answered requests are sampled.
    return Observation.of_trace(trace)


def score_detail(score: Score, label: str, capture: str) -> dict[str, Any]:
    """What a stored score keeps, under the same policy as the trace's messages: with ``none`` no
    text that could quote the request or the answer, with ``truncated`` the one-line explanation
    but not the judge's transcript."""
    detail: dict[str, Any] = {"online_eval": label}
    if capture == "none":
        return detail
    detail["explanation"] = score.explanation
    if score.details:
        if capture == "full":
            detail["details"] = score.details
        else:
            kept = {k: v for k, v in score.details.items() if k not in _MESSAGE_DETAILS}
            if kept:
                detail["details"] = kept
    return detail


class OnlineEvaluator:
    def __init__(
        self,
        store: Store,
        gateway: Gateway,
        evals: Sequence[OnlineEval],
        *,
        queue_size: int = 1000,
        concurrency: int = 4,
        capture: str = "full",
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.capture = capture
        self.concurrency = max(1, concurrency)
        self.entries = [_Entry(e, e.build()) for e in evals]
        self._by_route: dict[str, list[tuple[_Entry, float]]] = {}
        for entry in self.entries:
            if entry.config.sample > 0:
                self._by_route.setdefault(entry.config.route, []).append((entry, entry.config.sample))
        self._q: queue.Queue[tuple[_Entry, Trace]] = queue.Queue(maxsize=queue_size)
        self._random = random.random
        self.accepting = False
        self.dropped = 0
        self.write_failures = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._abort: asyncio.Event | None = None
        self._pending: list[scores_q.ScoreRow] = []

    # -- the request path ---------------------------------------------------------------------------
    def observe(self, trace: Trace) -> None:
        """Gateway observer: O(1), never blocks, never raises."""
        if not self.accepting:
            return
        targets = self._by_route.get(trace.route) if trace.route is not None else None
        if targets is None or trace.status != "ok" or trace.operation == "embeddings":
            return
        if trace.tags and JUDGE_TAG in trace.tags:
            return
        for entry, sample in targets:
            if sample >= 1.0 or self._random() < sample:
                try:
                    self._q.put_nowait((entry, trace))
                except queue.Full:
                    self.dropped += 1
                    if self.dropped == 1 or self.dropped % 1000 == 0:
                        log.warning(
                            "online-eval queue full (%d): %d sampled trace(s) dropped so far",
                            self._q.maxsize,
                            self.dropped,
                        )
                else:
                    entry.stats.sampled += 1

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, gateway_loop: asyncio.AbstractEventLoop) -> None:
        if self._thread is not None or not self.entries:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, args=(gateway_loop,), name="shipyard-online-evals", daemon=True
        )
        self._thread.start()
        self.accepting = True

    async def stop(self, grace: float) -> None:
        """Stop sampling, score what is already queued for up to ``grace`` seconds, write it."""
        self.accepting = False
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        await asyncio.to_thread(thread.join, grace)
        if thread.is_alive():
            left = self._q.qsize()
            loop, abort = self._loop, self._abort
            if loop is not None and abort is not None:
                loop.call_soon_threadsafe(abort.set)
            await asyncio.to_thread(thread.join, 5.0)
            log.warning("online evals stopped before scoring %d queued trace(s)", left)
        self._thread = None

    @property
    def queued(self) -> int:
        return self._q.qsize()

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "name": e.config.label,
                "route": e.config.route,
                "sample": e.config.sample,
                "scorers": [s.name for s in e.scorers],
                "sampled": e.stats.sampled,
                "scored": e.stats.scored,
                "failed_scores": e.stats.failed_scores,
                "last_scored_at": e.stats.last_scored_at,
            }
            for e in self.entries
        ]

    # -- the scoring thread -------------------------------------------------------------------------
    def _run(self, gateway_loop: asyncio.AbstractEventLoop) -> None:
        try:
            asyncio.run(self._main(gateway_loop))
        except Exception:
            log.exception("online evals stopped on an unexpected error")

    async def _main(self, gateway_loop: asyncio.AbstractEventLoop) -> None:
        self._loop = asyncio.get_running_loop()
        self._abort = asyncio.Event()
        ctx = OnlineContext(self.gateway, gateway_loop)
        work: asyncio.Queue[tuple[_Entry, Trace] | None] = asyncio.Queue(maxsize=self.concurrency)
        workers = [asyncio.create_task(self._worker(work, ctx)) for _ in range(self.concurrency)]
        flusher = asyncio.create_task(self._flusher())
        reader = asyncio.create_task(self._reader(work))
        abort = asyncio.create_task(self._abort.wait())
        await asyncio.wait([reader, abort], return_when=asyncio.FIRST_COMPLETED)
        if not abort.done():
            for _ in workers:
                await work.put(None)
            drained: asyncio.Future[Any] = asyncio.gather(*workers)
            await asyncio.wait([drained, abort], return_when=asyncio.FIRST_COMPLETED)
        for task in (*workers, reader, abort, flusher):
            task.cancel()
        await asyncio.gather(*workers, reader, abort, flusher, return_exceptions=True)
        await asyncio.to_thread(self._flush)
        await ctx.close()

    def _take(self) -> tuple[_Entry, Trace] | None:
        """The next sampled trace; None once stopping and the queue is empty."""
        while True:
            try:
                return self._q.get(timeout=0.2)
            except queue.Empty:
                if self._stopping.is_set():
                    return None

    async def _reader(self, work: asyncio.Queue[tuple[_Entry, Trace] | None]) -> None:
        while True:
            item = await asyncio.to_thread(self._take)
            if item is None:
                return
            await work.put(item)

    async def _worker(self, work: asyncio.Queue[tuple[_Entry, Trace] | None], ctx: OnlineContext) -> None:
        while True:
            item = await work.get()
            if item is None:
                return
            entry, trace = item
            try:
                await self._score(entry, trace, ctx)
            except Exception:
                log.exception("online eval `%s` failed on trace %s", entry.config.label, trace.trace_id)

    async def _score(self, entry: _Entry, trace: Trace, ctx: OnlineContext) -> None:
        case, obs = case_of(trace), observation_of(trace)
        results = await asyncio.gather(
            *(scorer.score(case, obs, ctx) for scorer in entry.scorers), return_exceptions=True
        )
        for scorer, result in zip(entry.scorers, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                entry.stats.failed_scores += 1
                if entry.stats.failed_scores == 1 or entry.stats.failed_scores % 100 == 0:
                    log.warning(
                        "online eval `%s`: scorer `%s` raised %s: %s (%d failure(s) so far)",
                        entry.config.label,
                        scorer.name,
                        type(result).__name__,
                        result,
                        entry.stats.failed_scores,
                    )
                # A crashed scorer is not a bad answer: no value, so averages and alerts skip it.
                row = scores_q.ScoreRow(
                    trace.trace_id,
                    scorer.name,
                    None,
                    None,
                    {"online_eval": entry.config.label, "error": f"{type(result).__name__}: {result}"},
                    "online",
                    trace.route,
                    trace.start,
                )
            else:
                row = scores_q.ScoreRow(
                    trace.trace_id,
                    scorer.name,
                    result.value,
                    result.passed,
                    score_detail(result, entry.config.label, self.capture),
                    "online",
                    trace.route,
                    trace.start,
                )
            self._pending.append(row)
        entry.stats.scored += 1
        entry.stats.last_scored_at = time.time()
        if len(self._pending) >= FLUSH_ROWS:
            await asyncio.to_thread(self._flush)

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            if self._pending:
                await asyncio.to_thread(self._flush)

    def _flush(self) -> None:
        rows, self._pending = self._pending, []
        if not rows:
            return
        try:
            scores_q.insert_scores(self.store, rows)
        except Exception:
            self.write_failures += len(rows)
            log.exception("could not write %d online-eval score(s); they are lost", len(rows))
