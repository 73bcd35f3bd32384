"""The background side of monitoring in a running server: online evals, scheduled drift checks and
the alert loop, built from the ``monitoring:`` section of the loaded config and started and stopped
with the platform.

Nothing here runs on the request path except the online-eval observer (see ``online.py``). Drift
checks and alert evaluation read the store in worker threads; notifications go out from a queue
of their own, in order, so a slow webhook delays neither the next evaluation nor the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from shipyard.gateway.service import Gateway
from shipyard.monitoring.alerts import AlertEngine, Notification, Notifier
from shipyard.monitoring.config import MonitoringConfig
from shipyard.monitoring.drift import DriftConfig, InsufficientSamples, run_config
from shipyard.monitoring.online import OnlineEvaluator
from shipyard.settings import Settings
from shipyard.store import alerts as alerts_q
from shipyard.store import leases
from shipyard.store.db import Store

LEASE = "monitoring"  # the lease of alert evaluation and scheduled drift checks

log = logging.getLogger("shipyard.monitoring")


@dataclass
class DriftCheckStatus:
    config: DriftConfig
    runs: int = 0
    last_run: float | None = None
    last_report_id: int | None = None
    last_drifted: bool | None = None
    last_skipped: str | None = None
    last_error: str | None = None
    next_run: float | None = None

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "route": c.route,
            "reference": c.reference,
            "current": c.current,
            "every": c.every,
            "runs": self.runs,
            "last_run": self.last_run,
            "last_report_id": self.last_report_id,
            "last_drifted": self.last_drifted,
            "last_skipped": self.last_skipped,
            "last_error": self.last_error,
            "next_run": self.next_run,
        }


class MonitoringService:
    def __init__(self, config: MonitoringConfig, store: Store, settings: Settings, gateway: Gateway) -> None:
        self.config = config
        self.store = store
        self.settings = settings
        self.gateway = gateway
        self.online: OnlineEvaluator | None = None
        if config.online_evals:
            self.online = OnlineEvaluator(
                store,
                gateway,
                config.online_evals,
                queue_size=settings.online_eval_queue_size,
                concurrency=settings.online_eval_concurrency,
                capture=settings.capture_messages,
            )
            # Registered now, inert until start(): the observer list is fixed before serving.
            gateway.observers.append(self.online.observe)
        self.engine = AlertEngine(store, config.alerts)
        self.drift = [DriftCheckStatus(c) for c in config.drift]
        self.notifier: Notifier | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._alert_task: asyncio.Task[None] | None = None
        self._closing = False
        self._deliveries: asyncio.Queue[Notification] | None = None
        self._delivery_task: asyncio.Task[None] | None = None
        self._kick: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self.started = False
        # Alert evaluation and drift checks run once across workers: in the one holding the lease.
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease: leases.Lease | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._jobs_running = False

    def check_routes(self, routes: set[str]) -> list[str]:
        """Warnings for references to routes the gateway does not serve (they may be added later
        with `shipyard apply`, or be OTLP-ingested traffic, so these are not errors)."""
        warnings = []
        for e in self.config.online_evals:
            if e.route not in routes:
                warnings.append(f"online eval `{e.label}`: route `{e.route}` is not served (yet)")
            for spec in e.scorers:
                judge = spec.get("route") if spec.get("type") == "llm_judge" else None
                if judge is not None and judge not in routes:
                    warnings.append(
                        f"online eval `{e.label}`: judge route `{judge}` is not served; its scores will "
                        "fail until it is"
                    )
        for d in self.config.drift:
            if d.route not in routes:
                warnings.append(f"drift check: route `{d.route}` is not served (yet)")
        return warnings

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.started:
            return
        self.started = True
        self._closing = False
        loop = asyncio.get_running_loop()
        self._kick = asyncio.Event()
        self._lock = asyncio.Lock()
        if self.online is not None:
            self.online.start(loop)  # per worker: each scores the traces it served
        if self.config.alerts:
            self.notifier = Notifier()
            self._deliveries = asyncio.Queue()
            self._delivery_task = asyncio.create_task(self._deliver_loop(), name="shipyard-alert-delivery")
        if self.config.alerts or self.config.drift:
            await self._hold_lease()  # usually taken at once: the loops start before serving
            self._lease_task = asyncio.create_task(self._lease_loop(), name="shipyard-monitoring-lease")
        if self.config.online_evals or self.config.alerts or self.config.drift:
            log.info(
                "monitoring: %d online eval(s), %d drift check(s), %d alert rule(s) (every %gs)",
                len(self.config.online_evals),
                len(self.config.drift),
                len(self.config.alerts),
                self.settings.alert_interval,
            )

    async def _hold_lease(self) -> None:
        """Take or renew the monitoring lease; start the jobs on taking it, stop them on losing it."""
        try:
            lease = await asyncio.to_thread(
                leases.acquire, self.store, LEASE, self.holder, self.settings.lease_ttl
            )
        except Exception:
            log.exception("could not take or renew the monitoring lease; will retry")
            lease = None
        if lease is not None and not self._jobs_running:
            if self.lease is None or self.lease.token != lease.token:
                log.info(
                    "monitoring lease taken (token %d): this worker runs alerts and drift checks", lease.token
                )
            self.lease = lease
            await self._start_jobs()
        elif lease is None and self._jobs_running:
            log.warning("monitoring lease lost: alerts and drift checks stop in this worker")
            self.lease = None
            await self._stop_jobs(grace=1.0)
        else:
            self.lease = lease

    async def _lease_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.settings.lease_ttl / 3)
            await self._hold_lease()

    async def _fenced(self) -> bool:
        """Whether this worker's lease is still the current one: checked before each job acts."""
        lease = self.lease
        if lease is None:
            return False
        try:
            return await asyncio.to_thread(leases.holds, self.store, lease)
        except Exception:
            log.exception("could not check the monitoring lease; skipping this run")
            return False

    async def _start_jobs(self) -> None:
        self._jobs_running = True
        if self.config.alerts:
            await asyncio.to_thread(self.engine.recover)  # a takeover continues open episodes
            self._alert_task = asyncio.create_task(self._alert_loop(), name="shipyard-alerts")
        for status in self.drift:
            self._tasks.append(
                asyncio.create_task(self._drift_loop(status), name=f"shipyard-drift-{status.config.route}")
            )

    async def _stop_jobs(self, grace: float) -> None:
        self._jobs_running = False
        if self._alert_task is not None:
            # Not cancelled mid-evaluation: an episode it opens must also get its notification.
            assert self._kick is not None
            closing, self._closing = self._closing, True
            self._kick.set()
            try:
                await asyncio.wait_for(self._alert_task, grace)
            except (TimeoutError, asyncio.CancelledError):
                pass
            self._closing = closing
            self._alert_task = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the loops; score what online evals already queued and send pending notifications,
        each for at most ``grace`` seconds."""
        if not self.started:
            return
        self.started = False
        self._closing = True
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
            self._lease_task = None
        if self._jobs_running:
            await self._stop_jobs(grace)
        if self.lease is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(leases.release, self.store, self.lease)  # no wait for expiry
            self.lease = None
        if self.online is not None:
            await self.online.stop(grace)
        if self._delivery_task is not None and self._deliveries is not None:
            # A resolution found just before shutdown is still worth sending.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._deliveries.join(), grace)
            self._delivery_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._delivery_task
            self._delivery_task = None
        if self.notifier is not None:
            await self.notifier.close()
            self.notifier = None

    # -- alerts -------------------------------------------------------------------------------------
    async def evaluate(self) -> list[dict[str, Any]]:
        """Evaluate every rule now; queue the notifications; answer the rules' states."""
        if self._lock is None:
            raise RuntimeError("the monitoring service is not started")
        async with self._lock:
            notes = await asyncio.to_thread(self.engine.evaluate)
        if self._deliveries is not None:
            for note in notes:
                self._deliveries.put_nowait(note)
        return self.engine.status()

    async def _alert_loop(self) -> None:
        assert self._kick is not None
        interval = self.settings.alert_interval
        while not self._closing:
            try:
                if await self._fenced():
                    await self.evaluate()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert evaluation failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), interval)
            self._kick.clear()

    async def _deliver_loop(self) -> None:
        assert self._deliveries is not None and self.notifier is not None
        while True:
            note = await self._deliveries.get()
            try:
                records = await self.notifier.deliver(note)
                if note.episode_id is not None:
                    await asyncio.to_thread(alerts_q.add_deliveries, self.store, note.episode_id, records)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not deliver the %s notification of `%s`", note.event, note.rule.name)
            finally:
                self._deliveries.task_done()

    def rules(self) -> list[dict[str, Any]]:
        return self.engine.status()

    # -- drift --------------------------------------------------------------------------------------
    async def _drift_loop(self, status: DriftCheckStatus) -> None:
        cfg = status.config
        while True:
            if await self._fenced():
                await self.run_drift_check(status)
            status.next_run = time.time() + cfg.interval_s
            await asyncio.sleep(cfg.interval_s)

    async def run_drift_check(self, status: DriftCheckStatus) -> None:
        cfg = status.config
        status.last_run = time.time()
        status.runs += 1
        try:
            report = await asyncio.to_thread(run_config, self.store, cfg)
        except asyncio.CancelledError:
            raise
        except InsufficientSamples as exc:
            if status.last_skipped != exc.message:
                log.info("drift check of route `%s` skipped: %s", cfg.route, exc.message)
            status.last_skipped, status.last_error = exc.message, None
            return
        except Exception as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            if status.last_error != message:
                log.warning("drift check of route `%s` failed: %s", cfg.route, message)
            status.last_error = message
            return
        status.last_report_id, status.last_drifted = report.id, report.drifted
        status.last_skipped = status.last_error = None
        if self._kick is not None and self.config.alerts:
            self._kick.set()  # rules on drift.* see the new report now, not an interval later

    # -- status -------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        online: dict[str, Any] = {"evals": [], "queued": 0, "dropped": 0, "write_failures": 0}
        if self.online is not None:
            online = {
                "evals": self.online.status(),
                "queued": self.online.queued,
                "dropped": self.online.dropped,
                "write_failures": self.online.write_failures,
            }
        return {
            "running": self.started,
            "alert_interval": self.settings.alert_interval,
            "online_evals": online,
            "drift": [d.to_dict() for d in self.drift],
            "alerts": self.engine.status(),
        }
