"""One running Shipyard: store, registry, trace writer, and the gateway serving the registry's
current routes — reloaded, without a restart, whenever the registry changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shipyard.config.loader import Document, default_document
from shipyard.errors import ConfigError
from shipyard.gateway.auth import AuthService
from shipyard.gateway.cache import RouteCache, build_cache
from shipyard.gateway.limits import build_limiter
from shipyard.gateway.runtime import Runtime, build_runtime
from shipyard.gateway.service import Gateway
from shipyard.monitoring.config import MonitoringConfig, load_monitoring
from shipyard.monitoring.metrics import Metrics
from shipyard.monitoring.service import MonitoringService
from shipyard.registry.apply import Plan, apply
from shipyard.registry.prompts import RenderLimits, set_render_limits
from shipyard.registry.versions import Registry
from shipyard.settings import Settings
from shipyard.store.db import Store
from shipyard.tracing.export import OtlpExporter, parse_headers
from shipyard.tracing.writer import TraceWriter

log = logging.getLogger("shipyard.gateway")


def apply_config(registry: Registry, document: Document | None, actor: str) -> Plan | None:
    """Apply ``document`` (or, on an empty registry, the built-in default) to the registry."""
    if document is not None:
        return apply(registry, document, actor=actor)
    if registry.snapshot().is_empty():
        return apply(registry, default_document(), actor=actor)
    return None


def prepare(settings: Settings, document: Document | None, actor: str) -> tuple[Plan | None, str | None]:
    """What `shipyard up --workers N` does once, before its workers start: migrate the store, apply
    the config, make sure an admin key exists. Returns the applied plan and a new admin key's
    secret (to print once)."""
    set_render_limits(RenderLimits(settings.prompt_render_timeout, settings.prompt_render_max_chars))
    store = Store.for_settings(settings)
    try:
        store.migrate()
        applied = apply_config(Registry(store), document, actor)
        secret = AuthService(store, settings.session_ttl).bootstrap(settings.admin_key)
        return applied, secret
    finally:
        store.close()


@dataclass
class Platform:
    settings: Settings
    store: Store
    registry: Registry
    writer: TraceWriter
    gateway: Gateway
    document: Document | None = None
    applied: Plan | None = None
    metrics: Metrics = field(default_factory=Metrics)
    started_at: float = field(default_factory=time.time)
    store_ok: bool = False
    exporter: OtlpExporter | None = None  # set when `otlp_export_endpoint` is
    reload_error: str | None = None
    monitoring: MonitoringService | None = None  # online evals, drift checks, alert rules
    auth: AuthService = field(init=False)  # API keys and dashboard sessions
    admin_secret: str | None = None  # an admin key created at this start, to print once
    worker: int = 0  # this process's number under `shipyard up --workers N` (0: a single process)
    # Called once the providers of the first runtime have started (or failed to): `shipyard up`
    # says "ready" then, not before each local model has answered its self-test.
    on_started: list[Callable[[Runtime], None]] = field(default_factory=list)
    starting: bool = False  # the first runtime's providers are still starting
    _retired: list[Runtime] = field(default_factory=list)
    _watcher: asyncio.Task[None] | None = None
    _starter: asyncio.Task[None] | None = None
    _failed_revision: int | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        document: Document | None = None,
        actor: str = "shipyard up",
        bootstrap_keys: bool = False,
        apply_document: bool = True,
    ) -> Platform:
        """Open the store, apply ``document`` (or, on an empty registry, the built-in default) and
        build the runtime. Blocking; raises ConfigError before anything is served.
        ``bootstrap_keys``: the server (`shipyard up`) makes sure an admin key exists (the first
        one is created here and printed by the caller); in-process users (chat, red-team) do not,
        so that a key nobody saw is never the store's first. ``apply_document=False``: a worker of
        `shipyard up --workers N`, whose supervisor applied the config once already."""
        # Before the config is applied: `apply` renders new templates to check them.
        set_render_limits(RenderLimits(settings.prompt_render_timeout, settings.prompt_render_max_chars))
        store = Store.for_settings(settings)
        store.migrate()
        registry = Registry(store)
        applied = apply_config(registry, document, actor) if apply_document else None
        runtime = build_runtime(registry, settings.default_timeout)
        writer = TraceWriter(
            store,
            capture=settings.capture_messages,
            max_chars=settings.capture_max_chars,
            queue_size=settings.trace_queue_size,
            batch_size=settings.trace_batch_size,
            flush_interval=settings.trace_flush_interval,
        )
        gateway = Gateway(runtime, writer, settings.default_timeout)
        gateway.durable = settings.trace_durability == "acknowledged"
        gateway.limiter = build_limiter(settings, store)
        gateway.cache.backend = build_cache(
            settings.redis_url,
            settings.cache_max_bytes,
            settings.cache_max_entries,
            settings.redis_max_connections,
            settings.redis_pool_timeout,
        )
        gateway.max_embedding_tokens = settings.max_embedding_input_tokens
        platform = cls(settings, store, registry, writer, gateway, document, applied)
        platform.auth = AuthService(store, settings.session_ttl)
        if bootstrap_keys:
            platform.admin_secret = platform.auth.bootstrap(settings.admin_key)
        platform.metrics = Metrics(settings.metrics_max_label_values)
        platform.metrics.bind(platform)
        gateway.observers.append(platform.metrics.observe)
        if settings.otlp_export_endpoint:
            platform.exporter = OtlpExporter(
                settings.otlp_export_endpoint,
                headers=parse_headers(settings.otlp_export_headers),
                timeout=settings.otlp_export_timeout,
                queue_size=settings.trace_queue_size,
            )
            writer.on_written.append(platform.exporter.submit)
        monitoring = (
            load_monitoring(document.raw.get("monitoring"), document.source, document.where)
            if document is not None
            else MonitoringConfig()
        )
        platform.monitoring = MonitoringService(monitoring, store, settings, gateway)
        for warning in platform.monitoring.check_routes(set(runtime.routes)):
            log.warning("monitoring: %s", warning)
        platform.store_ok = True
        return platform

    @property
    def runtime(self) -> Runtime:
        return self.gateway.runtime

    async def open(self, background: bool = False) -> None:
        """Start everything. ``background``: return before the providers have started (a server
        then answers probes, with /readyz saying 503 "starting", while models load)."""
        if self.gateway.limiter is not None:
            await self.gateway.limiter.start()
        if self.exporter is not None:
            self.exporter.start()
        self.writer.start()
        self.starting = True
        if background:
            self._starter = asyncio.create_task(self._start_providers(), name="shipyard-provider-start")
        else:
            await self._start_providers()
        if self.monitoring is not None:
            await self.monitoring.start()
        self._watcher = asyncio.create_task(self._watch(), name="shipyard-registry-watch")

    async def _start_providers(self) -> None:
        runtime = self.runtime
        try:
            await runtime.start()
        finally:
            self.starting = False
        for callback in self.on_started:
            try:
                callback(runtime)
            except Exception:
                log.exception("start-up callback %r failed", callback)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            try:
                await asyncio.to_thread(self.auth.maintain)
                revision = await asyncio.to_thread(self.registry.revision)
                if revision != self.runtime.revision and revision != self._failed_revision:
                    await self.reload()
                await self._close_retired()
            except asyncio.CancelledError:
                raise
            except ConfigError:
                pass  # reload() logged it; the last good runtime keeps serving
            except Exception:
                log.exception("registry watch failed; will retry")

    async def reload(self) -> Runtime:
        """Serve the registry's current state: build a runtime (keeping unchanged providers),
        start its new providers, swap it in. The old runtime finishes its requests first."""
        old = self.runtime
        try:
            runtime = await asyncio.to_thread(
                build_runtime, self.registry, self.settings.default_timeout, old
            )
        except ConfigError as exc:
            self._failed_revision = await asyncio.to_thread(self.registry.revision)
            self.reload_error = str(exc)
            log.error(
                "registry revision %s cannot be served; still serving revision %s: %s",
                self._failed_revision,
                old.revision,
                exc,
            )
            raise
        await runtime.start()
        self.gateway.runtime = runtime
        self.reload_error = None
        self._failed_revision = None
        self._retired.append(old)
        changed = [n for n in runtime.providers if n not in runtime.reused]
        log.info(
            "serving registry revision %d (was %d); providers (re)started: %s",
            runtime.revision,
            old.revision,
            ", ".join(changed) or "none",
        )
        return runtime

    async def _close_retired(self) -> None:
        for old in list(self._retired):
            if old.active == 0:
                self._retired.remove(old)
                await old.close(keep=self.runtime)

    async def close(self) -> None:
        if self._starter is not None and not self._starter.done():
            # Models still loading: let them finish (bounded by their load timeout), so that the
            # workers they start are stopped below rather than left behind.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._starter), self.settings.shutdown_timeout)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        deadline = time.monotonic() + self.settings.shutdown_timeout
        if self.monitoring is not None:
            # First: its judge calls go through the gateway, which closes below.
            await self.monitoring.stop(min(10.0, self.settings.shutdown_timeout))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.gateway.idle.wait(), self.settings.shutdown_timeout)
        for old in self._retired:
            await old.close(keep=self.runtime)
        await self.runtime.close()
        if self.gateway.limiter is not None:
            await self.gateway.limiter.close()  # saves the spend settled since its last flush
        if isinstance(self.gateway.cache.backend, RouteCache):
            await self.gateway.cache.backend.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.auth.flush)
        pending = self.writer.pending
        await asyncio.to_thread(self.writer.close, max(1.0, deadline - time.monotonic()))
        log.info(
            "trace writer flushed (%d pending at shutdown, %d written in total, %d dropped)",
            pending,
            self.writer.written,
            self.writer.dropped,
        )
        if self.exporter is not None:
            exporter = self.exporter
            pending = exporter.pending
            await asyncio.to_thread(exporter.close, max(1.0, deadline - time.monotonic()))
            log.info(
                "OTLP export flushed (%d pending at shutdown, %d exported in total, %d dropped)",
                pending,
                exporter.exported,
                exporter.dropped,
            )
        self.store.close()
