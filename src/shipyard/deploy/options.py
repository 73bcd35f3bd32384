"""What `shipyard deploy kubernetes` is asked for, where the pod keeps things, and the labels every
rendered object carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipyard import __version__

CONFIG_DIR = "/etc/shipyard"
CONFIG_PATH = f"{CONFIG_DIR}/shipyard.yaml"
HOME_PATH = "/var/lib/shipyard"
# The image's user (deploy/Dockerfile creates it with these ids).
RUN_AS = 10001


@dataclass(frozen=True)
class KubeOptions:
    """What `shipyard deploy kubernetes` is asked for, besides the config."""

    name: str = "shipyard"
    namespace: str | None = None
    image: str = f"shipyard-llmops:{__version__}"
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_cpu: int = 70
    secret_name: str | None = None
    database_url_secret: str | None = None
    redis_url_secret: str | None = None
    storage: str = "10Gi"
    storage_class: str | None = None
    worker_cpu: int = 1
    worker_memory: str | None = None
    ray: bool = False
    ray_app: str | None = None
    ray_version: str | None = None

    @property
    def secret(self) -> str:
        return self.secret_name or f"{self.name}-secrets"


def labels(opts: KubeOptions, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "shipyard",
        "app.kubernetes.io/instance": opts.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/version": __version__,
        "app.kubernetes.io/managed-by": "shipyard-deploy",
    }


def selector(opts: KubeOptions, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "shipyard",
        "app.kubernetes.io/instance": opts.name,
        "app.kubernetes.io/component": component,
    }


def meta(opts: KubeOptions, name: str, component: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if opts.namespace:
        meta["namespace"] = opts.namespace
    meta["labels"] = labels(opts, component)
    return meta
