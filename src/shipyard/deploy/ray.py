"""A KubeRay ``RayService`` (``ray.io/v1``): a Ray cluster on Kubernetes and the Ray Serve
application it runs, for ``shipyard deploy kubernetes --ray``.

The application is named, not invented: ``--ray-app module:attribute`` is the import path of a
Ray Serve application in the image, and ``--ray-version`` the Ray release the image carries (KubeRay
starts the cluster with it). Shipyard's own Ray Serve application (``shipyard serve --ray``) is not
built yet, so there is no default to point at.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from shipyard.deploy.options import CONFIG_DIR, RUN_AS, KubeOptions, labels, meta
from shipyard.errors import InvalidRequest

_IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_.]*$")
_RAY_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
SERVE_PORT = 8000
# Ray keeps its object store in shared memory; the container's default /dev/shm is 64 MiB.
SHM_LIMIT = "1Gi"
HEAD_RESOURCES = {
    "requests": {"cpu": "1", "memory": "2Gi"},
    "limits": {"cpu": "2", "memory": "2Gi"},
}


def _security() -> dict[str, Any]:
    # Ray writes its session files and logs under /tmp/ray (an emptyDir here) and, as far as
    # KubeRay documents, elsewhere too: the root filesystem stays writable in Ray pods.
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod(
    opts: KubeOptions, name: str, env: list[dict[str, Any]], resources: dict[str, Any], ports: list[Any]
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": opts.image,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "resources": resources,
        "securityContext": _security(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    if ports:
        container["ports"] = ports
    return {
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS},
            "containers": [container],
            "volumes": [
                {"name": "config", "configMap": {"name": f"{opts.name}-config"}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_LIMIT}},
            ],
        }
    }


def ray_service(
    opts: KubeOptions, env: list[dict[str, Any]], worker_resources: dict[str, Any]
) -> dict[str, Any]:
    """The RayService: a head pod, one autoscaled worker group sized like the gateway pod (each
    worker pod hosts gateway and model replicas), and the Serve application ``opts.ray_app``."""
    if not opts.ray_app or not _IMPORT_PATH.match(opts.ray_app):
        raise InvalidRequest(
            "--ray needs --ray-app MODULE:ATTRIBUTE, the import path of a Ray Serve application in the "
            f"image; got {opts.ray_app!r}. Shipyard's own (`shipyard serve --ray`) is not built yet",
            param="--ray-app",
        )
    if not opts.ray_version or not _RAY_VERSION.match(opts.ray_version):
        raise InvalidRequest(
            "--ray needs --ray-version X.Y.Z, the Ray release installed in the image (KubeRay "
            f"starts the cluster with it); got {opts.ray_version!r}",
            param="--ray-version",
        )
    lowest = opts.min_replicas if opts.min_replicas is not None else opts.replicas
    most = max(opts.max_replicas or lowest, lowest)
    serve_config = yaml.safe_dump(
        {"applications": [{"name": "shipyard", "import_path": opts.ray_app, "route_prefix": "/"}]},
        sort_keys=False,
    )
    head_ports = [
        {"name": "gcs", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
        {"name": "serve", "containerPort": SERVE_PORT},
    ]
    head = _pod(opts, "ray-head", env, HEAD_RESOURCES, head_ports)
    worker = _pod(opts, "ray-worker", env, worker_resources, [])
    head["metadata"] = {"labels": labels(opts, "ray-head")}
    worker["metadata"] = {"labels": labels(opts, "ray-worker")}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": meta(opts, opts.name, "ray"),
        "spec": {
            "serveConfigV2": serve_config,
            "rayClusterConfig": {
                "rayVersion": opts.ray_version,
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0"},
                    "template": head,
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "shipyard",
                        "replicas": lowest,
                        "minReplicas": lowest,
                        "maxReplicas": most,
                        "rayStartParams": {},
                        "template": worker,
                    }
                ],
            },
        },
    }
