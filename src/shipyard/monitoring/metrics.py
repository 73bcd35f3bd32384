"""Prometheus metrics for ``GET /metrics``.

Every gateway request is counted from its finished trace (a gateway observer, on the request
path, so a scrape right after a response already counts it). Updates go to cached label children:
a request costs a few dictionary lookups and lock-free-ish increments, not a ``labels()`` call per
metric. Each platform has its own registry, so several servers in one process (tests) stay apart.

Label values come from clients (an unknown ``model`` is still counted under the name it asked
for), so each label keeps at most ``max_label_values`` distinct values; the rest are counted
under ``__other__`` and the overflow is itself a counter. Cardinality stays bounded whatever
clients send.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from shipyard.gateway.stages.cache import (
    HIT_ATTR,
    MATCH_ATTR,
    REFUSED_ATTR,
    SAVED_TOKENS_ATTR,
    SAVED_USD_ATTR,
)
from shipyard.tracing import semconv as sc
from shipyard.tracing.spans import Trace

OTHER = "__other__"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _Bounded:
    """Maps a label value to itself while fewer than ``limit`` distinct values were seen."""

    def __init__(self, limit: int, overflow: Callable[[], None]) -> None:
        self.limit = limit
        self.seen: set[str] = set()
        self.overflow = overflow
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        v = value or ""
        if v in self.seen:
            return v
        with self._lock:
            if len(self.seen) < self.limit:
                self.seen.add(v)
                return v
        self.overflow()
        return OTHER


class _LimitRejections:
    """Requests refused by a rate limit or budget, read from the limiter's counter at scrape time
    (labels: the subject kind `key`/`route` and the limit: four values each, bounded)."""

    def __init__(self, limiter: Any) -> None:
        self.limiter = limiter

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "shipyard_limit_rejections",
            "Requests refused with HTTP 429 by a rate limit or budget.",
            labels=["subject", "limit"],
        )
        for (subject, limit), n in sorted(self.limiter.rejections.items()):
            family.add_metric([subject, limit], n)
        yield family


class _ModelWorkers:
    """Model worker processes of the providers that run their model out of the gateway's process
    (``local``), read live at scrape time: restarts (a counter per provider; labels are provider
    names from the config, so bounded) and how many workers are in each state."""

    STATES = ("starting", "ready", "busy", "restarting", "failed", "stopped")

    def __init__(self, platform: Any) -> None:
        self.platform = platform

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        restarts = CounterMetricFamily(
            "shipyard_model_worker_restarts",
            "Model worker processes restarted after they died (segfault, OOM kill, kill -9).",
            labels=["provider"],
        )
        workers = GaugeMetricFamily(
            "shipyard_model_workers", "Model worker processes by state.", labels=["provider", "state"]
        )
        for name, statuses in self.platform.gateway.runtime.worker_statuses().items():
            restarts.add_metric([name], sum(w.restarts for w in statuses))
            for state in self.STATES:
                workers.add_metric([name, state], sum(w.state == state for w in statuses))
        yield restarts
        yield workers


class Metrics:
    def __init__(self, max_label_values: int = 100) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        labels = ("route", "target", "model")
        self.requests = Counter(
            "shipyard_requests",
            "Requests the gateway answered, by outcome (ok or error).",
            (*labels, "operation", "status"),
            registry=r,
        )
        self.errors = Counter(
            "shipyard_request_errors",
            "Failed requests by error type (timeout, rate_limit, upstream_5xx, invalid_request…).",
            (*labels, "error_type"),
            registry=r,
        )
        self.latency = Histogram(
            "shipyard_request_duration_seconds",
            "Time from receiving a request to its last byte.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "shipyard_time_to_first_token_seconds",
            "Streaming requests: time from receiving the request to the first content token.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "shipyard_tokens", "Tokens processed, by direction.", (*labels, "direction"), registry=r
        )
        self.cost = Counter("shipyard_cost_usd", "Spend in USD from the models' pricing.", labels, registry=r)
        self.attempts = Counter(
            "shipyard_provider_attempts",
            "Provider calls including retries and fallbacks (compare with requests for the retry rate).",
            labels,
            registry=r,
        )
        self.rejected = Counter(
            "shipyard_requests_rejected",
            "Requests refused before a route served them (bad body, unknown model, too large…).",
            ("endpoint", "error_type"),
            registry=r,
        )
        self.guard_actions = Counter(
            "shipyard_guard_actions",
            "Guard findings by route, scanner and action (block, redact, flag), from the trace's findings.",
            ("route", "scanner", "action"),
            registry=r,
        )
        self.cache_lookups = Counter(
            "shipyard_cache_lookups",
            "Requests on routes with a response cache, by result (hit or miss): hits / all is the hit ratio.",
            ("route", "result"),
            registry=r,
        )
        self.cache_saved_usd = Counter(
            "shipyard_cache_saved_usd",
            "What the answers served from the cache cost when made.",
            ("route",),
            registry=r,
        )
        self.cache_semantic_hits = Counter(
            "shipyard_cache_semantic_hits",
            "Cache hits found by similarity (`mode: semantic`) rather than by the exact key.",
            ("route",),
            registry=r,
        )
        self.cache_refusals = Counter(
            "shipyard_cache_semantic_refusals",
            "Semantic misses where a conversation above the threshold was refused by the false-hit "
            "guard, by reason (number, negation, date, name, unit, polarity, language, order, wording).",
            ("route", "reason"),
            registry=r,
        )
        self.cache_saved_tokens = Counter(
            "shipyard_cache_saved_tokens",
            "Input plus output tokens of the answers served from the cache.",
            ("route",),
            registry=r,
        )
        self.label_overflow = Counter(
            "shipyard_metric_label_overflow",
            f"Label values counted as `{OTHER}` because a label already had the maximum distinct values.",
            registry=r,
        )
        self.in_flight = Gauge("shipyard_in_flight_requests", "Requests being served now.", registry=r)
        self.trace_queue = Gauge(
            "shipyard_trace_queue_depth", "Traces waiting in memory for the batch writer.", registry=r
        )
        self.traces_written = Gauge(
            "shipyard_traces_written", "Traces the batch writer stored since start.", registry=r
        )
        self.traces_dropped = Gauge(
            "shipyard_traces_dropped",
            "Traces lost since start because the writer queue was full or the store failed.",
            registry=r,
        )
        self._bound = {name: _Bounded(max_label_values, self.label_overflow.inc) for name in labels}
        self._children: dict[tuple[str, str, str], tuple[Any, ...]] = {}

    def bind(self, platform: Any) -> None:
        """Gauges read live from the running platform at scrape time."""
        writer = platform.writer
        self.trace_queue.set_function(lambda: writer.pending)
        self.traces_written.set_function(lambda: writer.written)
        self.traces_dropped.set_function(lambda: writer.dropped)
        self.in_flight.set_function(lambda: platform.gateway.in_flight)
        limiter = getattr(platform.gateway, "limiter", None)
        if limiter is not None:
            self.registry.register(_LimitRejections(limiter))
        self.registry.register(_ModelWorkers(platform))

    def _for(self, route: str, target: str, model: str) -> tuple[Any, ...]:
        key = (route, target, model)
        children = self._children.get(key)
        if children is None:
            children = (
                self.latency.labels(*key),
                self.ttft.labels(*key),
                self.tokens.labels(*key, "input"),
                self.tokens.labels(*key, "output"),
                self.cost.labels(*key),
                self.attempts.labels(*key),
            )
            self._children[key] = children
        return children

    def observe(self, trace: Trace) -> None:
        """Count one finished gateway request (a ``Gateway.observers`` callback)."""
        b = self._bound
        route, target, model = b["route"](trace.route), b["target"](trace.target), b["model"](trace.model)
        latency, ttft, tok_in, tok_out, cost, attempts = self._for(route, target, model)
        self.requests.labels(route, target, model, trace.operation, trace.status).inc()
        end = trace.end or trace.start
        latency.observe(max(0.0, end - trace.start))
        if trace.ttft_ms is not None:
            ttft.observe(trace.ttft_ms / 1000)
        if trace.input_tokens:
            tok_in.inc(trace.input_tokens)
        if trace.output_tokens:
            tok_out.inc(trace.output_tokens)
        if trace.cost_usd:
            cost.inc(trace.cost_usd)
        if trace.attempts:
            attempts.inc(trace.attempts)
        root = trace.spans[0].attributes if trace.spans else {}
        hit = root.get(HIT_ATTR)
        if hit is not None:
            self.cache_lookups.labels(route, "hit" if hit else "miss").inc()
            if hit:
                if root.get(MATCH_ATTR) == "semantic":
                    self.cache_semantic_hits.labels(route).inc()
                self.cache_saved_usd.labels(route).inc(root.get(SAVED_USD_ATTR) or 0.0)
                self.cache_saved_tokens.labels(route).inc(root.get(SAVED_TOKENS_ATTR) or 0)
            elif (refused := root.get(REFUSED_ATTR)) is not None:
                self.cache_refusals.labels(route, str(refused)).inc()
        findings = trace.attributes.get("guard.findings")
        if findings:
            # Scanner names come from the route's config, not from clients: bounded already.
            for f in findings:
                self.guard_actions.labels(route, f.get("scanner", ""), f.get("action", "")).inc()
        if trace.status != "ok":
            kind = "error"
            for span in trace.spans:
                if span.parent_id is None:
                    kind = str(span.attributes.get(sc.ERROR_TYPE, kind))
                    break
            self.errors.labels(route, target, model, kind).inc()

    def reject(self, endpoint: str, error_type: str) -> None:
        """Count a request refused before routing (the endpoint set is fixed: bounded labels)."""
        self.rejected.labels(endpoint, error_type).inc()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition text for an ``Accept`` header (Prometheus text or OpenMetrics)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
