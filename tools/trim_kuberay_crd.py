"""Write ``tests/data/kuberay_rayservice_v1.schema.json`` from KubeRay's RayService CRD.

The CRD (``ray-operator/config/crd/bases/ray.io_rayservices.yaml`` in ray-project/kuberay,
Apache-2.0) carries the whole Kubernetes pod template inside each head and worker group: 18,000
lines. The tests validate those pod templates against the core ``PodTemplateSpec`` schema that
``kubernetes-validate`` ships, so this keeps the ``ray.io/v1`` openAPIV3Schema of the RayService
and replaces each embedded Kubernetes type (pod templates, services, ingress options) by a plain
``object``, noting where it was cut.

    python tools/trim_kuberay_crd.py path/to/ray.io_rayservices.yaml COMMIT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "kuberay_rayservice_v1.schema.json"
# Embedded Kubernetes types, validated elsewhere (pod templates) or not rendered by Shipyard.
CUT = {"template", "serveService", "headService", "ingressOptions", "autoscalerOptions", "status"}


def trim(node: Any, path: tuple[str, ...] = ()) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "description":
                continue
            if key == "properties" and isinstance(value, dict):
                out[key] = {
                    name: (
                        {"type": "object", "x-trimmed": f"embedded type at {'.'.join((*path, name))}"}
                        if name in CUT
                        else trim(sub, (*path, name))
                    )
                    for name, sub in value.items()
                }
            else:
                out[key] = trim(value, path)
        return out
    if isinstance(node, list):
        return [trim(v, path) for v in node]
    return node


def main(crd_path: str, commit: str) -> None:
    crd = yaml.safe_load(Path(crd_path).read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = trim(v1["schema"]["openAPIV3Schema"])
    schema["$comment"] = (
        "Trimmed from KubeRay's RayService CRD (ray.io/v1), "
        f"https://github.com/ray-project/kuberay/blob/{commit}/ray-operator/config/crd/bases/"
        "ray.io_rayservices.yaml, Apache License 2.0 (c) the KubeRay authors. Descriptions and "
        "embedded Kubernetes types (x-trimmed) removed by tools/trim_kuberay_crd.py."
    )
    OUT.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
