"""The live objects built from a config: provider instances, routes with their targets, and the
selection logic (weighted split, sticky assignment, fallback order)."""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.config.loader import LoadedConfig
from shipyard.config.schema import CacheConfig, LimitsConfig, ModelConfig, RouteConfig, TargetConfig
from shipyard.errors import ConfigError, RouteNotFound
from shipyard.prices import Price
from shipyard.prices import resolve as resolve_price
from shipyard.providers.base import Health, Provider, SupervisesWorkers, WorkerStatus
from shipyard.registry.prompts import Prompt

if TYPE_CHECKING:
    from shipyard.guard.pipeline import GuardPipeline
    from shipyard.registry.versions import Registry, Snapshot

log = logging.getLogger("shipyard.gateway")


@dataclass(slots=True)
class Target:
    label: str
    model: ModelConfig
    provider: Provider
    provider_name: str
    params: dict[str, Any]
    timeout: float
    retries: int
    weight: float = 1.0
    model_version: int | None = None
    prompt: Prompt | None = None
    price: Price | None = None  # resolved when the runtime is built (prices.py)

    @property
    def provider_model(self) -> str:
        return self.model.provider_model

    @property
    def pricing(self) -> Price:
        """What a request costs here (the config's `pricing:`, else the price catalogue)."""
        if self.price is None:
            self.price = resolve_price(self.model, "", None)
        return self.price


@dataclass(slots=True)
class Route:
    name: str
    kind: str  # chat | embedding
    targets: list[Target]
    fallbacks: list[Target]
    sticky: bool = True
    retry_backoff: float = 0.05
    description: str = ""
    version: int | None = None
    guard: GuardPipeline | None = None  # None: no guards, and no cost on the request path
    public: bool = False  # served on /v1 without an API key
    limits: LimitsConfig | None = None  # route-wide rate limits and budgets
    cache: CacheConfig | None = None  # None: no response cache, and no cost on the request path
    _cumulative: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        total = 0.0
        self._cumulative = []
        for t in self.targets:
            total += t.weight
            self._cumulative.append(total)

    def pick(self, key: str | None) -> Target:
        """Weighted choice; with a sticky key the same key always lands on the same target."""
        if len(self.targets) == 1:
            return self.targets[0]
        total = self._cumulative[-1]
        if key is not None and self.sticky:
            h = hashlib.blake2b(f"{self.name}\x00{key}".encode(), digest_size=8).digest()
            u = int.from_bytes(h, "big") / 2**64
        else:
            u = random.random()
        i = bisect.bisect_right(self._cumulative, u * total)
        return self.targets[min(i, len(self.targets) - 1)]

    def plan(self, key: str | None) -> list[Target]:
        """The chosen target followed by the fallbacks, in the order they will be tried."""
        first = self.pick(key)
        return [first, *(t for t in self.fallbacks if t is not first)]


PromptResolver = Callable[[str], Prompt]


class Runtime:
    """Providers, routes and embedding models for one state of the registry. Swapped as a whole
    when the registry changes; providers whose spec did not change are carried over (``reuse``),
    so a reload keeps connection pools warm and the local model loaded."""

    def __init__(
        self,
        loaded: LoadedConfig,
        default_timeout: float = 120.0,
        *,
        versions: dict[tuple[str, str], int] | None = None,
        provider_hashes: dict[str, str] | None = None,
        prompts: PromptResolver | None = None,
        reuse: Runtime | None = None,
        revision: int = 0,
    ) -> None:
        from shipyard.plugins import provider_types

        cfg = loaded.config
        self.source = loaded.source
        self.revision = revision
        self.versions = versions or {}
        self.provider_hashes = provider_hashes or {}
        self.active = 0  # requests in flight on this runtime (a retired runtime closes at 0)
        types = provider_types()
        self.providers: dict[str, Provider] = {}
        self._ready: dict[str, Health] = {}
        self._probed: tuple[float, dict[str, Health]] | None = None
        self.reused: set[str] = set()
        for p in cfg.providers:
            digest = self.provider_hashes.get(p.name)
            if reuse is not None and digest is not None and reuse.provider_hashes.get(p.name) == digest:
                self.providers[p.name] = reuse.providers[p.name]
                self._ready[p.name] = reuse.readiness()[p.name]
                self.reused.add(p.name)
            else:
                self.providers[p.name] = types[p.type].factory(p.name, loaded.provider_options[p.name])
        self.provider_types = {p.name: p.type for p in cfg.providers}
        models = cfg.model_by_name()
        self.models = models
        self._prompts: dict[str, Prompt] = {}
        self._resolve_prompt = prompts
        self.routes: dict[str, Route] = {}
        for r in cfg.routes:
            self.routes[r.name] = self._route(r, models, default_timeout)
        # Embedding models are addressable by name too (OpenAI clients send the model name).
        self.embedding_models: dict[str, Route] = {}
        for m in cfg.models:
            if m.kind == "embedding" and m.name not in self.routes:
                t = self._target(TargetConfig(model=m.name), models, default_timeout, None)
                self.embedding_models[m.name] = Route(m.name, "embedding", [t], [])

    def _prompt(self, ref: str | None) -> Prompt | None:
        if ref is None:
            return None
        if ref not in self._prompts:
            if self._resolve_prompt is None:
                raise ConfigError(
                    f"prompt `{ref}` is referenced but this runtime has no registry to read it from"
                )
            self._prompts[ref] = self._resolve_prompt(ref)
        return self._prompts[ref]

    def _target(
        self,
        t: TargetConfig,
        models: dict[str, ModelConfig],
        default_timeout: float,
        route_prompt: str | None,
    ) -> Target:
        m = models[t.model]
        provider = self.providers[m.provider]
        price = resolve_price(m, self.provider_types[m.provider], getattr(provider, "base_url", None))
        return Target(
            label=t.label,
            model=m,
            provider=self.providers[m.provider],
            provider_name=m.provider,
            params=dict(t.params),
            timeout=t.timeout or default_timeout,
            retries=t.retries,
            weight=t.weight,
            model_version=self.versions.get(("model", m.name)),
            prompt=self._prompt(t.prompt or route_prompt),
            price=price,
        )

    def _route(self, r: RouteConfig, models: dict[str, ModelConfig], default_timeout: float) -> Route:
        targets = [self._target(t, models, default_timeout, r.prompt) for t in r.targets]
        fallbacks = [self._target(t, models, default_timeout, r.prompt) for t in r.fallbacks]
        kind = targets[0].model.kind
        guard = None
        if r.guards is not None:
            from shipyard.guard.pipeline import GuardPipeline

            guard = GuardPipeline.build(r.name, r.guards)
        return Route(
            r.name,
            kind,
            targets,
            fallbacks,
            r.sticky,
            r.retry_backoff,
            r.description,
            self.versions.get(("route", r.name)),
            guard,
            r.public,
            r.limits if r.limits is not None and not r.limits.empty() else None,
            r.cache,
        )

    def resolve(self, name: Any, kind: str) -> Route:
        route = self.routes.get(name) if isinstance(name, str) else None
        if route is None and kind == "embedding" and isinstance(name, str):
            route = self.embedding_models.get(name)
        if route is None:
            known = [r for r, v in self.routes.items() if v.kind == kind]
            if kind == "embedding":
                known += list(self.embedding_models)
            what = "embedding models" if kind == "embedding" else "routes"
            raise RouteNotFound(
                f"route `{name}` does not exist; known {what}: "
                f"{', '.join(sorted(known)) or '(none configured)'}",
                param="model",
            )
        if route.kind != kind:
            what = "chat/completions" if kind == "chat" else "embeddings"
            raise RouteNotFound(
                f"route `{name}` serves {route.kind} models and cannot answer {what} requests",
                param="model",
            )
        return route

    async def start(self) -> None:
        """Start every provider not carried over from the previous runtime; failures are recorded
        (see ``readiness``) rather than fatal, so the gateway still serves routes whose providers
        did start."""

        async def one(name: str, p: Provider) -> None:
            try:
                await p.start()
                self._ready[name] = Health(True, "started")
            except Exception as exc:
                log.error("provider `%s` failed to start: %s", name, exc)
                self._ready[name] = Health(False, f"failed to start: {exc}")

        await asyncio.gather(*(one(n, p) for n, p in self.providers.items() if n not in self.reused))

    def worker_statuses(self) -> dict[str, list[WorkerStatus]]:
        """Live state of the model worker processes of each provider that has them (``local``):
        one source for /readyz, /metrics and the dashboard."""
        return {
            name: p.workers()
            for name, p in self.providers.items()
            if isinstance(p, SupervisesWorkers) and p.workers()
        }

    def readiness(self) -> dict[str, Health]:
        return {n: self._ready.get(n, Health(False, "starting")) for n in self.providers}

    async def probe(self, per_check: float = 2.0, max_age: float = 10.0) -> dict[str, Health]:
        """Each started provider's own health check (an upstream's ``/models``, the local model
        being loaded), run concurrently with a short timeout and remembered for ``max_age``
        seconds so frequent readiness probes do not turn into upstream traffic."""
        now = time.monotonic()
        if self._probed is not None and now - self._probed[0] < max_age:
            return self._probed[1]

        async def one(p: Provider) -> Health:
            try:
                return await asyncio.wait_for(p.health(), per_check)
            except TimeoutError:
                return Health(False, f"no answer within {per_check:g}s")
            except Exception as exc:
                return Health(False, f"{type(exc).__name__}: {exc}")

        ready = self.readiness()
        names = [n for n in self.providers if ready[n].ok]
        results = await asyncio.gather(*(one(self.providers[n]) for n in names))
        health = dict(zip(names, results, strict=True))
        self._probed = (now, health)
        return health

    async def close(self, keep: Runtime | None = None) -> None:
        """Close the providers; those the runtime ``keep`` carried over stay open."""
        kept = {id(p) for p in keep.providers.values()} if keep is not None else set()
        for name, p in self.providers.items():
            if id(p) in kept:
                continue
            try:
                await p.close()
            except Exception as exc:
                log.warning("provider `%s` did not close cleanly: %s", name, exc)

    def model_list(self) -> list[dict[str, Any]]:
        out = []
        for r in self.routes.values():
            out.append(
                {
                    "id": r.name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "shipyard",
                    "shipyard": {
                        "type": "route",
                        "kind": r.kind,
                        "version": r.version,
                        "description": r.description,
                        "targets": [t.label for t in r.targets],
                        "fallbacks": [t.label for t in r.fallbacks],
                        "prompts": sorted({t.prompt.ref for t in (*r.targets, *r.fallbacks) if t.prompt}),
                    },
                }
            )
        for name, r in self.embedding_models.items():
            out.append(
                {
                    "id": name,
                    "object": "model",
                    "created": 0,
                    "owned_by": r.targets[0].provider_name,
                    "shipyard": {"type": "embedding_model", "kind": "embedding"},
                }
            )
        return out


def registry_lineage(
    registry: Registry, snapshot: Snapshot
) -> tuple[dict[tuple[str, str], int], dict[str, str], Callable[[str], Prompt]]:
    """What a runtime built from ``snapshot`` needs from the registry: the current version of each
    entity (for trace lineage), each provider's content hash (to reuse unchanged providers) and
    a resolver for prompt references like ``support@production``."""
    from shipyard.registry.versions import content_hash

    versions = {key: number for key, (number, _, _) in snapshot.current.items()}
    hashes = {name: content_hash("provider", spec) for name, _, _, spec in snapshot.of_kind("provider")}

    def resolve(ref: str) -> Prompt:
        v = registry.get_ref("prompt", ref)
        return Prompt.from_spec(v.name, v.version, v.hash, v.spec)

    return versions, hashes, resolve


def build_runtime(registry: Registry, default_timeout: float, reuse: Runtime | None = None) -> Runtime:
    """A runtime for the registry's current state (blocking: reads the store)."""
    from shipyard.registry.apply import runtime_config

    snapshot = registry.snapshot()
    versions, hashes, resolve = registry_lineage(registry, snapshot)
    return Runtime(
        runtime_config(snapshot),
        default_timeout,
        versions=versions,
        provider_hashes=hashes,
        prompts=resolve,
        reuse=reuse,
        revision=snapshot.revision,
    )
