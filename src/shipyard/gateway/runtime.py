"""The live objects built from a config: provider instances, routes with their targets, and the
selection logic (weighted split, sticky assignment, fallback order)."""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from shipyard.config.loader import LoadedConfig
from shipyard.config.schema import ModelConfig, Pricing, RouteConfig, TargetConfig
from shipyard.errors import RouteNotFound
from shipyard.providers.base import Health, Provider

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

    @property
    def provider_model(self) -> str:
        return self.model.provider_model

    @property
    def pricing(self) -> Pricing:
        return self.model.pricing


@dataclass(slots=True)
class Route:
    name: str
    kind: str  # chat | embedding
    targets: list[Target]
    fallbacks: list[Target]
    sticky: bool = True
    retry_backoff: float = 0.05
    description: str = ""
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


class Runtime:
    """Providers, routes and embedding models for one config. Swappable as a whole."""

    def __init__(self, loaded: LoadedConfig, default_timeout: float = 120.0) -> None:
        from shipyard.plugins import provider_types

        cfg = loaded.config
        self.source = loaded.source
        types = provider_types()
        self.providers: dict[str, Provider] = {}
        for p in cfg.providers:
            ptype = types[p.type]
            self.providers[p.name] = ptype.factory(p.name, loaded.provider_options[p.name])
        self.provider_types = {p.name: p.type for p in cfg.providers}
        models = cfg.model_by_name()
        self.models = models
        self.routes: dict[str, Route] = {}
        for r in cfg.routes:
            self.routes[r.name] = self._route(r, models, default_timeout)
        # Embedding models are addressable by name too (OpenAI clients send the model name).
        self.embedding_models: dict[str, Route] = {}
        for m in cfg.models:
            if m.kind == "embedding" and m.name not in self.routes:
                t = self._target(TargetConfig(model=m.name), models, default_timeout)
                self.embedding_models[m.name] = Route(m.name, "embedding", [t], [])
        self._ready: dict[str, Health] = {}
        self._start_tasks: list[asyncio.Task[None]] = []

    def _target(self, t: TargetConfig, models: dict[str, ModelConfig], default_timeout: float) -> Target:
        m = models[t.model]
        return Target(
            label=t.label,
            model=m,
            provider=self.providers[m.provider],
            provider_name=m.provider,
            params=dict(t.params),
            timeout=t.timeout or default_timeout,
            retries=t.retries,
            weight=t.weight,
        )

    def _route(self, r: RouteConfig, models: dict[str, ModelConfig], default_timeout: float) -> Route:
        targets = [self._target(t, models, default_timeout) for t in r.targets]
        fallbacks = [self._target(t, models, default_timeout) for t in r.fallbacks]
        kind = targets[0].model.kind
        return Route(r.name, kind, targets, fallbacks, r.sticky, r.retry_backoff, r.description)

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
        """Start every provider; failures are recorded (see ``readiness``) rather than fatal, so the
        gateway still serves routes whose providers did start."""

        async def one(name: str, p: Provider) -> None:
            try:
                await p.start()
                self._ready[name] = Health(True, "started")
            except Exception as exc:
                log.error("provider `%s` failed to start: %s", name, exc)
                self._ready[name] = Health(False, f"failed to start: {exc}")

        await asyncio.gather(*(one(n, p) for n, p in self.providers.items()))

    def readiness(self) -> dict[str, Health]:
        return {n: self._ready.get(n, Health(False, "starting")) for n in self.providers}

    async def close(self) -> None:
        for name, p in self.providers.items():
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
                        "description": r.description,
                        "targets": [t.label for t in r.targets],
                        "fallbacks": [t.label for t in r.fallbacks],
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
