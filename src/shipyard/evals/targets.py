"""Eval targets as gateway routes.

Every target of a suite becomes a route of an in-process gateway runtime built from the
registry: a registry route is copied (with a prompt override when a promotion tests a candidate),
a prompt + model pair gets a route of its own, an external endpoint gets a provider, a model and
a route. The runner then calls targets exactly like the gateway serves clients — same prompt
rendering, retries and fallbacks, and every call is traced.

Each target also gets a *fingerprint*: a hash of everything that decides its answers (route,
model and provider specs, prompt versions), which keys the output cache.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import orjson

from shipyard.errors import ConfigError
from shipyard.evals.suite import Suite, TargetSpec
from shipyard.gateway.runtime import Runtime, registry_lineage
from shipyard.registry.apply import merged_config, prompt_context
from shipyard.registry.validation import validate
from shipyard.registry.versions import Registry, content_hash, split_ref


@dataclass
class EvalTarget:
    label: str
    route: str  # route name in the eval runtime
    fingerprint: str
    links: list[dict[str, Any]] = field(default_factory=list)  # lineage for the run
    params: dict[str, Any] = field(default_factory=dict)  # request params (suite's, then target's)


def _override(ref: str | None, overrides: dict[str, str]) -> str | None:
    if ref is None:
        return None
    name, _ = split_ref(ref)
    return overrides.get(name, ref)


def build_eval_runtime(
    registry: Registry, suite: Suite, default_timeout: float, prompt_overrides: dict[str, str] | None = None
) -> tuple[Runtime, list[EvalTarget]]:
    """A runtime with the registry's routes plus one `eval:N` route per suite target."""
    return build_target_runtime(
        registry,
        suite.spec.targets,
        suite.labels,
        suite.spec.params,
        suite.spec.stream,
        default_timeout,
        prompt_overrides,
        f"suite {suite.name}",
        suite.source,
    )


def build_target_runtime(
    registry: Registry,
    specs: list[TargetSpec],
    labels: list[str],
    params: dict[str, Any],
    stream: bool,
    default_timeout: float,
    prompt_overrides: dict[str, str] | None = None,
    what: str = "eval targets",
    source: str = "targets",
) -> tuple[Runtime, list[EvalTarget]]:
    """The same for any list of target specs (the pytest plugin has no suite)."""
    overrides = prompt_overrides or {}
    snapshot = registry.snapshot()
    data = merged_config(snapshot)
    routes = {r["name"]: r for r in data.get("routes", [])}
    models = {m["name"] for m in data.get("models", [])}
    data.setdefault("providers", [])
    data.setdefault("models", [])
    data.setdefault("routes", [])
    plans: list[tuple[str, str, TargetSpec]] = []
    for i, (spec, label) in enumerate(zip(specs, labels, strict=True)):
        name = f"eval:{i}"
        if spec.route is not None:
            if spec.route not in routes:
                raise ConfigError(
                    f"{source}: targets[{i}].route: route `{spec.route}` is not in the registry; "
                    f"known routes: {', '.join(sorted(routes)) or '(none: `shipyard apply` a config first)'}"
                )
            route = dict(routes[spec.route])
            route["name"] = name
            route["prompt"] = _override(spec.prompt or route.get("prompt"), overrides)
            for group in ("targets", "fallbacks"):
                route[group] = [
                    {**t, "prompt": _override(t.get("prompt"), overrides)} if t.get("prompt") else t
                    for t in route.get(group, [])
                ]
        else:
            model = spec.model
            if spec.endpoint is not None:
                provider = f"eval-endpoint-{i}"
                endpoint: dict[str, Any] = {
                    "name": provider,
                    "type": "openai",
                    "base_url": spec.endpoint.base_url,
                }
                if spec.endpoint.api_key is not None:
                    endpoint["api_key"] = spec.endpoint.api_key
                if spec.endpoint.headers:
                    endpoint["headers"] = spec.endpoint.headers
                data["providers"].append(endpoint)
                model = f"eval-model-{i}"
                data["models"].append({"name": model, "provider": provider, "model": spec.endpoint.model})
            elif model not in models:
                raise ConfigError(
                    f"{source}: targets[{i}].model: model `{model}` is not in the registry; known "
                    f"models: {', '.join(sorted(models)) or '(none)'}"
                )
            route = {"name": name, "targets": [{"model": model}]}
            if spec.prompt:
                route["prompt"] = _override(spec.prompt, overrides)
        route = {k: v for k, v in route.items() if v is not None}
        data["routes"].append(route)
        plans.append((name, label, spec))
    loaded = validate(data, what, None, os.environ, prompt_context(snapshot))
    versions, hashes, resolve = registry_lineage(registry, snapshot)
    for p in data["providers"]:
        hashes.setdefault(p["name"], content_hash("provider", {k: v for k, v in p.items() if k != "name"}))
    runtime = Runtime(
        loaded,
        default_timeout,
        versions=versions,
        provider_hashes=hashes,
        prompts=resolve,
        revision=snapshot.revision,
    )
    model_specs = {m["name"]: m for m in data["models"]}
    targets = []
    for name, label, spec in plans:
        live = runtime.routes[name]
        parts = []
        links: list[dict[str, Any]] = []
        if spec.route is not None:
            links.append({"kind": "route", "name": spec.route, "version": versions[("route", spec.route)]})
        for t in (*live.targets, *live.fallbacks):
            model_spec = model_specs[t.model.name]
            parts.append(
                {
                    "model": model_spec,
                    "provider": hashes.get(t.provider_name),
                    "prompt": t.prompt.hash if t.prompt else None,
                    "params": t.params,
                    "weight": t.weight,
                }
            )
            if t.model_version is not None:
                links.append({"kind": "model", "name": t.model.name, "version": t.model_version})
            if t.prompt is not None:
                links.append({"kind": "prompt", "name": t.prompt.name, "version": t.prompt.version})
            provider_version = versions.get(("provider", t.provider_name))
            if provider_version is not None:
                links.append({"kind": "provider", "name": t.provider_name, "version": provider_version})
        request_params = {**params, **spec.params}
        fingerprint = hashlib.sha256(
            orjson.dumps(
                {"parts": parts, "params": request_params, "stream": stream},
                option=orjson.OPT_SORT_KEYS,
                default=str,
            )
        ).hexdigest()
        unique = {(lk["kind"], lk["name"], lk["version"]): lk for lk in links}
        targets.append(EvalTarget(label, name, fingerprint, list(unique.values()), request_params))
    return runtime, targets
