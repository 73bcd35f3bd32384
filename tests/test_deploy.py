"""`shipyard deploy kubernetes`: manifests rendered from the user's own config, through the CLI as a
user runs it. Every object is validated offline against the Kubernetes JSON schema that
`kubernetes-validate` ships (strict: unknown fields are errors); the RayService against KubeRay's
CRD schema (trimmed copy in tests/data, see tools/trim_kuberay_crd.py). Secrets never appear in the
output, replicas are refused on SQLite, and the committed kustomize base and production overlay are
what the renderer produces."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "deploy" / "kustomize" / "base"
OVERLAY = ROOT / "deploy" / "kustomize" / "overlays" / "production"
RAY_SCHEMA = ROOT / "tests" / "data" / "kuberay_rayservice_v1.schema.json"
K8S_VERSION = "1.33.0"
PRODUCTION_FLAGS = [
    "--namespace",
    "shipyard",
    "--database-url-secret",
    "shipyard-secrets",
    "--redis-url-secret",
    "shipyard-secrets",
    "--replicas",
    "2",
    "--max-replicas",
    "6",
]

# Values that exist only in the environment of whoever renders: none may reach the output.
SECRETS = {
    "OPENAI_API_KEY": "sk-live-7d0c2f1e9a8b4c3d",
    "PG_PASSWORD": "pg-pass-51f0aa",
    "SHIPYARD_ADMIN_KEY": "sk-shp-" + "Q" * 40,
    "SHIPYARD_AUDIT_KEY": "audit-key-9c1e",
    "SHIPYARD_DATABASE_URL": "postgresql+psycopg://app:env-db-pass-77@db/shipyard",
    "SHIPYARD_REDIS_URL": "redis://:env-redis-pass-88@redis:6379/0",
}

POSTGRES_CONFIG = """\
version: 1
settings:
  database_url: postgresql+psycopg://shipyard:${PG_PASSWORD}@db/shipyard
  redis_url: redis://:hunter2-in-file@redis:6379/0
  log_level: debug
  trace_durability: acknowledged
providers:
  - name: openai
    type: openai
    base_url: https://api.openai.com/v1
    api_key: ${OPENAI_API_KEY}
  - name: backup
    type: openai
    base_url: ${BACKUP_URL:-http://vllm:8000/v1}
  - name: local
    type: local
    workers: 2
models:
  - {name: gpt, provider: openai, model: gpt-4o-mini}
  - {name: small, provider: backup}
  - {name: gemma, provider: local}
routes:
  - name: default
    targets: [{model: gpt}]
    fallbacks: [{model: small}, {model: gemma}]
"""


def shipyard(
    *args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "SHIPYARD_CONFIG"}
    r = subprocess.run(
        [sys.executable, "-m", "shipyard", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**base, **(env or {})},
        timeout=120,
    )
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def validate(obj: dict[str, Any]) -> None:
    """The object against its Kubernetes schema (strict); a RayService against KubeRay's CRD, and
    its pod templates against the core PodTemplateSpec (the trimmed CRD leaves them out)."""
    if obj["kind"] == "RayService":
        assert obj["apiVersion"] == "ray.io/v1"
        jsonschema.validate(obj, json.loads(RAY_SCHEMA.read_text()))
        cluster = obj["spec"]["rayClusterConfig"]
        templates = [cluster["headGroupSpec"]["template"]] + [
            g["template"] for g in cluster["workerGroupSpecs"]
        ]
        for template in templates:
            wrapped = {
                "apiVersion": "v1",
                "kind": "PodTemplate",
                "metadata": {"name": "t"},
                "template": template,
            }
            kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)
        return
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c["env"]}


def mebibytes(q: str) -> int:
    assert q.endswith("Mi"), q
    return int(q[:-2])


def test_default_config_renders_valid_objects_for_one_pod(tmp_path: Path) -> None:
    r = shipyard("deploy", "kubernetes", cwd=tmp_path)
    docs = documents(r.stdout)
    assert [d["kind"] for d in docs] == ["ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"]
    for d in docs:
        validate(d)
    kinds = by_kind(docs)
    dep = kinds["Deployment"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    c = container(dep)
    assert c["args"] == ["up"]  # one pod owns the SQLite store: no --join
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    sec = c["securityContext"]
    assert sec["runAsNonRoot"] and sec["readOnlyRootFilesystem"] and not sec["allowPrivilegeEscalation"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    env = env_of(c)
    # Where Shipyard writes (SHIPYARD_HOME, /tmp) is a volume; the home is the claim.
    home = env["SHIPYARD_HOME"]["value"]
    assert (
        volumes[mounts[home]]["persistentVolumeClaim"]["claimName"]
        == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    )
    assert "/tmp" in mounts
    assert env["SHIPYARD_CONFIG"]["value"].startswith(next(p for p, n in mounts.items() if n == "config"))
    assert env["SHIPYARD_HOST"]["value"] == "0.0.0.0"
    assert env["SHIPYARD_ADMIN_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "shipyard-secrets",
        "key": "SHIPYARD_ADMIN_KEY",
    }
    # The embedded model's worker is a child process of the gateway: the pod is sized for it and
    # llama.cpp's threads are pinned to the CPU it requests.
    assert env["SHIPYARD_LOCAL_THREADS"]["value"] == "1"
    assert mebibytes(c["resources"]["requests"]["memory"]) > 512 + 384
    service = kinds["Service"]
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == c["ports"][0]["containerPort"] == 8700
    assert "The pods read Secret `shipyard-secrets`" in r.stderr


def test_postgres_and_redis_render_autoscaled_replicas(tmp_path: Path) -> None:
    (tmp_path / "shipyard.yaml").write_text(POSTGRES_CONFIG)
    r = shipyard(
        "deploy", "kubernetes", "--replicas", "2", "--max-replicas", "5", "--target-cpu", "60", cwd=tmp_path
    )
    docs = documents(r.stdout)
    assert [d["kind"] for d in docs] == [
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    for d in docs:
        validate(d)
    kinds = by_kind(docs)
    dep, hpa, pdb = kinds["Deployment"], kinds["HorizontalPodAutoscaler"], kinds["PodDisruptionBudget"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "shipyard",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["metrics"][0]["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": 60,
    }
    assert "replicas" not in dep["spec"]  # the autoscaler owns it
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    c = container(dep)
    assert c["args"] == ["up", "--join"]  # every pod serves the one store
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["home"] == {"name": "home", "emptyDir": {}}
    env = env_of(c)
    assert env["SHIPYARD_LOG_LEVEL"]["value"] == "debug"
    assert env["SHIPYARD_TRACE_DURABILITY"]["value"] == "acknowledged"
    # Two local workers in each pod: twice the worker's memory on top of the gateway's.
    one = shipyard("deploy", "kubernetes", "--replicas", "2", "--max-replicas", "5", cwd=tmp_path)
    assert one.stdout == r.stdout.replace("averageUtilization: 60", "averageUtilization: 70")
    assert "2 model worker(s) run inside the gateway pod" in r.stderr


def test_secrets_are_never_written_into_the_manifests(tmp_path: Path) -> None:
    (tmp_path / "shipyard.yaml").write_text(POSTGRES_CONFIG)
    out = tmp_path / "out"
    r = shipyard(
        "deploy",
        "kubernetes",
        "--replicas",
        "3",
        "--max-replicas",
        "4",
        "-o",
        str(out),
        cwd=tmp_path,
        env=SECRETS,
    )
    shipyard("deploy", "kubernetes", "--ray", "--ray-app", "app.serve:app", "--ray-version", "2.50.0", "-o",
             str(tmp_path / "ray"), cwd=tmp_path, env=SECRETS)  # fmt: skip
    written = {p: p.read_text() for d in (out, tmp_path / "ray") for p in d.iterdir()}
    for path, text in [*written.items(), ("stdout", r.stdout), ("stderr", r.stderr)]:
        for name, value in SECRETS.items():
            assert value not in text, f"{name} leaked into {path}"
        assert "hunter2-in-file" not in text, f"the Redis password of the file leaked into {path}"
    docs = [
        d
        for p, t in written.items()
        if p.suffix == ".yaml" and p.name != "kustomization.yaml"
        for d in documents(t)
    ]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    pod_config = yaml.safe_load(config_map["data"]["shipyard.yaml"])
    assert "settings" not in pod_config  # settings are environment variables, secrets from the Secret
    assert pod_config["providers"][0]["api_key"] == "${OPENAI_API_KEY}"  # kept as a reference
    for d in docs:
        validate(d)
        for c in _containers(d):
            for e in c["env"]:
                if e["name"] in SECRETS or e["name"] in ("SHIPYARD_DATABASE_URL", "SHIPYARD_REDIS_URL"):
                    assert "value" not in e and e["valueFrom"]["secretKeyRef"]["name"] == "shipyard-secrets"
            env = env_of(c)
            assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "OPENAI_API_KEY"
            # A reference with a default may be missing from the Secret.
            assert env["BACKUP_URL"]["valueFrom"]["secretKeyRef"]["optional"] is True
    script = (out / "create-secret.sh").read_text()
    for key in ("SHIPYARD_DATABASE_URL", "SHIPYARD_REDIS_URL", "SHIPYARD_ADMIN_KEY", "OPENAI_API_KEY"):
        assert f'--from-literal="{key}=${key}"' in script


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "Deployment":
        return [container(obj)]
    if obj["kind"] == "RayService":
        cluster = obj["spec"]["rayClusterConfig"]
        groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        return [c for g in groups for c in g["template"]["spec"]["containers"]]
    return []


def test_a_secret_written_into_the_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "shipyard.yaml").write_text(
        POSTGRES_CONFIG.replace("api_key: ${OPENAI_API_KEY}", "api_key: sk-inline-123456")
    )
    r = shipyard("deploy", "kubernetes", cwd=tmp_path, check=False)
    assert r.returncode == 2 and r.stdout == ""
    assert "providers[0].api_key is written in the file" in r.stderr
    assert "sk-inline-123456" not in r.stderr


def test_replicas_on_sqlite_are_refused(tmp_path: Path) -> None:
    for flags in (["--replicas", "3"], ["--max-replicas", "3"]):
        r = shipyard("deploy", "kubernetes", *flags, cwd=tmp_path, check=False)
        assert r.returncode == 2 and r.stdout == "", r.stderr
        assert "SQLite" in r.stderr and "`database_url`" in r.stderr and "Postgres" in r.stderr
    # Postgres without Redis: every pod would count limits and budgets on its own.
    r = shipyard(
        "deploy",
        "kubernetes",
        "--replicas",
        "2",
        "--database-url-secret",
        "pg-app:uri",
        cwd=tmp_path,
        check=False,
    )
    assert r.returncode == 2 and "`redis_url`" in r.stderr and "overspent" in r.stderr
    r = shipyard(
        "deploy", "kubernetes", "--replicas", "2", "--database-url-secret", "pg-app:uri",
        "--redis-url-secret", "redis", cwd=tmp_path,
    )  # fmt: skip
    env = env_of(container(by_kind(documents(r.stdout))["Deployment"]))
    assert env["SHIPYARD_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "pg-app", "key": "uri"}
    assert env["SHIPYARD_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "redis",
        "key": "SHIPYARD_REDIS_URL",
    }
    (tmp_path / "shipyard.yaml").write_text("version: 1\nsettings:\n  database_url: sqlite:////data/x.db\n")
    r = shipyard("deploy", "kubernetes", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "settings.database_url is a SQLite URL" in r.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-replicas", "2", "--min-replicas", "3"], "--max-replicas (2) is below the minimum (3)"),
        (["--min-replicas", "2"], "--min-replicas needs --max-replicas"),
        (["--max-replicas", "4", "--target-cpu", "0"], "--target-cpu is a percentage"),
        (["--replicas", "0"], "--replicas must be at least 1"),
    ],
)
def test_autoscaler_bounds_are_checked(tmp_path: Path, flags: list[str], message: str) -> None:
    (tmp_path / "shipyard.yaml").write_text(POSTGRES_CONFIG)
    r = shipyard("deploy", "kubernetes", *flags, cwd=tmp_path, check=False)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_a_bad_config_fails_with_the_loaders_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nproviders:\n  - {name: up, type: openai, base_url: http://x/v1, colour: red}\n"
        "models:\n  - {name: m, provider: nowhere}\nroutes:\n  - {name: r, targets: [{model: m}]}\n"
    )
    check = shipyard("config", "check", "--config", str(bad), cwd=tmp_path, check=False)
    r = shipyard("deploy", "kubernetes", "--config", str(bad), cwd=tmp_path, check=False)
    assert check.returncode == 1 and r.returncode == 2 and r.stdout == ""
    problems = [line.strip()[2:] for line in check.stderr.splitlines() if line.strip().startswith("- ")]
    assert len(problems) == 2
    for p in problems:
        assert p in r.stderr
    missing = shipyard("deploy", "kubernetes", "--config", "nope.yaml", cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "config file `nope.yaml` does not exist" in missing.stderr


def test_the_config_in_the_configmap_is_what_shipyard_up_accepts(tmp_path: Path) -> None:
    from shipyard.registry.validation import parse_config

    (tmp_path / "shipyard.yaml").write_text(POSTGRES_CONFIG)
    r = shipyard("deploy", "kubernetes", "--replicas", "2", "--max-replicas", "3", cwd=tmp_path)
    text = by_kind(documents(r.stdout))["ConfigMap"]["data"]["shipyard.yaml"]
    loaded = parse_config(text, "configmap", environ={"OPENAI_API_KEY": "k"})
    assert [p.name for p in loaded.config.providers] == ["openai", "backup", "local"]
    assert [r.name for r in loaded.config.routes] == ["default"]


def test_local_model_workers_size_the_gateway_pod(tmp_path: Path) -> None:
    (tmp_path / "shipyard.yaml").write_text(
        "version: 1\nproviders:\n  - {name: local, type: local, workers: 3, n_ctx: 4096}\n"
        "models:\n  - {name: g, provider: local}\nroutes:\n  - {name: default, targets: [{model: g}]}\n"
    )
    r = shipyard("deploy", "kubernetes", "--worker-memory", "2Gi", "--worker-cpu", "2", cwd=tmp_path)
    c = container(by_kind(documents(r.stdout))["Deployment"])
    assert c["resources"]["requests"] == {"cpu": f"{500 + 3 * 2000}m", "memory": f"{512 + 3 * 2048}Mi"}
    assert c["resources"]["limits"] == {"cpu": f"{1000 + 3 * 2000}m", "memory": f"{1024 + 3 * 2048}Mi"}
    assert env_of(c)["SHIPYARD_LOCAL_THREADS"]["value"] == "2"
    # Sized from the bundled GGUF: more context, more KV-cache allowance.
    short = shipyard("deploy", "kubernetes", cwd=tmp_path)
    (tmp_path / "shipyard.yaml").write_text((tmp_path / "shipyard.yaml").read_text().replace("4096", "1024"))
    shorter = shipyard("deploy", "kubernetes", cwd=tmp_path)
    mem = [
        mebibytes(container(by_kind(documents(x.stdout))["Deployment"])["resources"]["requests"]["memory"])
        for x in (short, shorter)
    ]
    assert mem[0] > mem[1] > 512 + 3 * 241
    (tmp_path / "shipyard.yaml").write_text(
        (tmp_path / "shipyard.yaml").read_text().replace("workers: 3", "model_path: /models/llama-8b.gguf")
    )
    r = shipyard("deploy", "kubernetes", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "--worker-memory" in r.stderr and "/models/llama-8b.gguf" in r.stderr


def test_ray_service_matches_the_kuberay_crd(tmp_path: Path) -> None:
    (tmp_path / "shipyard.yaml").write_text(POSTGRES_CONFIG)
    r = shipyard(
        "deploy", "kubernetes", "--ray", "--ray-app", "myteam.serve:app", "--ray-version", "2.50.0",
        "--min-replicas", "1", "--max-replicas", "4", cwd=tmp_path,
    )  # fmt: skip
    docs = documents(r.stdout)
    assert [d["kind"] for d in docs] == ["ConfigMap", "RayService"]  # Ray Serve is the gateway here
    for d in docs:
        validate(d)
    spec = docs[1]["spec"]
    assert yaml.safe_load(spec["serveConfigV2"])["applications"][0]["import_path"] == "myteam.serve:app"
    (group,) = spec["rayClusterConfig"]["workerGroupSpecs"]
    assert (group["minReplicas"], group["maxReplicas"]) == (1, 4)
    # The schema really checks: a wrong field type fails.
    broken = json.loads(json.dumps(docs[1]))
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)
    no_app = shipyard("deploy", "kubernetes", "--ray", "--ray-version", "2.50.0", cwd=tmp_path, check=False)
    assert no_app.returncode == 2 and "`shipyard serve --ray`) is not built yet" in no_app.stderr
    (tmp_path / "shipyard.yaml").unlink()
    sqlite = shipyard(
        "deploy",
        "kubernetes",
        "--ray",
        "--ray-app",
        "a:b",
        "--ray-version",
        "2.50.0",
        cwd=tmp_path,
        check=False,
    )
    assert sqlite.returncode == 2 and "the Ray cluster need one store" in sqlite.stderr


def test_the_kustomize_base_is_what_the_renderer_writes(tmp_path: Path) -> None:
    out = tmp_path / "base"
    shipyard("deploy", "kubernetes", "--output", str(out), cwd=tmp_path)
    rendered = {p.name: p.read_text() for p in out.iterdir()}
    committed = {p.name: p.read_text() for p in BASE.iterdir()}
    assert rendered == committed, (
        "deploy/kustomize/base is stale: run `shipyard deploy kubernetes --output deploy/kustomize/base` "
        "from a directory without shipyard.yaml"
    )
    kustomization = yaml.safe_load(committed["kustomization.yaml"])
    for name in kustomization["resources"]:
        for d in documents(committed[name]):
            validate(d)


def _normalized(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Order-free: objects by kind, env and volumes by name (a strategic merge puts what it
    adds or changes first; neither order means anything here)."""
    docs = json.loads(json.dumps(docs))
    for d in docs:
        for c in _containers(d):
            c["env"] = sorted(c["env"], key=lambda e: e["name"])
        if d["kind"] == "Deployment":
            pod = d["spec"]["template"]["spec"]
            pod["volumes"] = sorted(pod["volumes"], key=lambda v: v["name"])
    return sorted(docs, key=lambda d: d["kind"])


def test_the_production_overlay_is_the_renderers_production_output(tmp_path: Path) -> None:
    out = tmp_path / "production"
    shipyard("deploy", "kubernetes", *PRODUCTION_FLAGS, "--output", str(out), cwd=tmp_path)
    for name in ("hpa.yaml", "pdb.yaml", "create-secret.sh"):
        assert (OVERLAY / name).read_text() == (out / name).read_text(), (
            f"overlays/production/{name} is stale"
        )
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed: the overlay was not built")
    built = subprocess.run([kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, check=True)
    expected = [
        d
        for p in sorted(out.glob("*.yaml"))
        if p.name != "kustomization.yaml"
        for d in documents(p.read_text())
    ]
    assert _normalized(documents(built.stdout)) == _normalized(expected)
    base = subprocess.run([kubectl, "kustomize", str(BASE)], capture_output=True, text=True, check=True)
    assert len(documents(base.stdout)) == 4


def _fake_kubectl(tmp_path: Path, secret_exists: bool) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "kubectl"
    fake.write_text(
        "#!/bin/sh\n"
        f'case "$1" in\n  get) exit {0 if secret_exists else 1};;\n'
        '  create) printf "%s\\n" "$@" > "$KUBECTL_LOG";;\n  apply) cat > /dev/null;;\nesac\n'
    )
    fake.chmod(0o755)
    keep = {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}
    return {**keep, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KUBECTL_LOG": str(tmp_path / "kubectl.log")}


def test_create_secret_script_makes_the_secret_from_the_environment(tmp_path: Path) -> None:
    env = _fake_kubectl(tmp_path, secret_exists=False)
    r = subprocess.run(["sh", str(BASE / "create-secret.sh")], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    args = (tmp_path / "kubectl.log").read_text().splitlines()
    assert args[:4] == ["create", "secret", "generic", "shipyard-secrets"]
    literals = dict(
        a.removeprefix("--from-literal=").split("=", 1) for a in args if a.startswith("--from-literal=")
    )
    assert re.fullmatch(r"sk-shp-[A-Za-z0-9]{40}", literals["SHIPYARD_ADMIN_KEY"])
    assert re.fullmatch(r"[0-9a-f]{64}", literals["SHIPYARD_AUDIT_KEY"])
    assert literals["SHIPYARD_ADMIN_KEY"] in r.stderr  # shown once, to be kept
    # The production Secret needs the database and Redis URLs from whoever runs it.
    r = subprocess.run(["sh", str(OVERLAY / "create-secret.sh")], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "set SHIPYARD_DATABASE_URL" in r.stderr
    given = {
        **env,
        "SHIPYARD_DATABASE_URL": SECRETS["SHIPYARD_DATABASE_URL"],
        "SHIPYARD_REDIS_URL": "redis://r",
    }
    r = subprocess.run(["sh", str(OVERLAY / "create-secret.sh")], env=given, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    args = (tmp_path / "kubectl.log").read_text().splitlines()
    assert (
        "--namespace" in args
        and f"--from-literal=SHIPYARD_DATABASE_URL={SECRETS['SHIPYARD_DATABASE_URL']}" in args
    )
    # An existing Secret is not replaced by accident (a new admin key would lock the admin out).
    exists = _fake_kubectl(tmp_path, secret_exists=True)
    r = subprocess.run(["sh", str(BASE / "create-secret.sh")], env=exists, capture_output=True, text=True)
    assert r.returncode == 1 and "set REPLACE=1" in r.stderr


def test_gateway_workers_in_a_pod_need_redis_and_multiply_its_size(tmp_path: Path) -> None:
    (tmp_path / "shipyard.yaml").write_text("version: 1\nsettings:\n  workers: 2\n")
    r = shipyard("deploy", "kubernetes", cwd=tmp_path, check=False)
    assert (
        r.returncode == 2
        and "settings.workers (2 gateway processes" in r.stderr
        and "`redis_url`" in r.stderr
    )
    # SQLite is fine within one pod (one machine, one file), as for `shipyard up --workers 2`.
    two = shipyard("deploy", "kubernetes", "--redis-url-secret", "redis", cwd=tmp_path)
    (tmp_path / "shipyard.yaml").write_text("version: 1\n")
    one = shipyard("deploy", "kubernetes", "--redis-url-secret", "redis", cwd=tmp_path)
    c2, c1 = (container(by_kind(documents(x.stdout))["Deployment"]) for x in (two, one))
    assert env_of(c2)["SHIPYARD_WORKERS"]["value"] == "2" and "SHIPYARD_WORKERS" not in env_of(c1)
    for kind in ("requests", "limits"):
        assert mebibytes(c2["resources"][kind]["memory"]) == 2 * mebibytes(c1["resources"][kind]["memory"])


READ_ONLY_ROOT = """\
set -e
mount --make-rprivate /
mount -o remount,bind,ro /
mount -t tmpfs tmpfs "$RW"   # the only writable place (in a pod: /tmp and SHIPYARD_HOME)
if touch /.shipyard-ro-probe 2>/dev/null; then echo "root is writable"; exit 1; fi
cd "$RW"
"$SHIPYARD" up > "$RW/up.log" 2>&1 &
pid=$!
for i in $(seq 1 120); do
  if "$PYTHON" -c "import httpx,sys; sys.exit(httpx.get('$BASE/readyz').status_code != 200)" 2>/dev/null
  then break; fi
  sleep 1
done
"$PYTHON" - <<'PY'
import os
from openai import OpenAI
client = OpenAI(base_url=os.environ["BASE"] + "/v1", api_key=os.environ["SHIPYARD_ADMIN_KEY"])
hi = [{"role": "user", "content": "Hi"}]
reply = client.chat.completions.create(model="default", messages=hi, max_tokens=4)
print("chat:", reply.choices[0].finish_reason)
print("embedding:", len(client.embeddings.create(model="wordllama", input="ships").data[0].embedding))
PY
kill -TERM $pid
wait $pid || true
grep -i -E "read-only|Traceback" "$RW/up.log" || true
"""


@pytest.mark.local_model
def test_shipyard_up_serves_on_a_read_only_root_filesystem(tmp_path: Path) -> None:
    """What the Deployment's securityContext asks for: the embedded model and embeddings served
    with only /tmp and SHIPYARD_HOME writable (the image assembles the GGUF at build time; here it
    is already in ~/.cache from the install). A private mount namespace, so it needs root."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("needs `unshare -m` (root) to make the root filesystem read-only for one process")
    from shipyard.providers.local import bundled_model_path

    bundled_model_path()  # assembled before the root goes read-only, as the Dockerfile does
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # A tmpfs on a directory of the test's own, not over /tmp: the checkout (and its .venv) may
    # itself live under /tmp, and must stay visible, read-only.
    rw = tmp_path / "rw"
    rw.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")},
        "SHIPYARD": str(Path(sys.executable).parent / "shipyard"),
        "PYTHON": sys.executable,
        "RW": str(rw),
        "TMPDIR": str(rw),
        "SHIPYARD_HOME": str(rw / "home"),
        "SHIPYARD_PORT": str(port),
        "BASE": f"http://127.0.0.1:{port}",
        "SHIPYARD_LOCAL_THREADS": "1",
        "MPLCONFIGDIR": str(rw / "matplotlib"),
        "SHIPYARD_ADMIN_KEY": "sk-shp-" + "R" * 40,
    }
    r = subprocess.run(
        ["unshare", "-m", "sh", "-c", READ_ONLY_ROOT], env=env, capture_output=True, text=True, timeout=240
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "chat: " in r.stdout and "embedding: " in r.stdout, r.stdout + r.stderr
    assert "read-only" not in r.stdout.lower() and "traceback" not in r.stdout.lower(), r.stdout


def test_json_output_carries_the_objects_and_the_secrets_keys(tmp_path: Path) -> None:
    (tmp_path / "shipyard.yaml").write_text(POSTGRES_CONFIG)
    r = shipyard("deploy", "kubernetes", "--json", cwd=tmp_path, env=SECRETS)
    data = json.loads(r.stdout)
    assert [o["kind"] for o in data["objects"]] == ["ConfigMap", "Deployment", "Service"]
    assert data["objects"] == documents(shipyard("deploy", "kubernetes", cwd=tmp_path).stdout)
    assert data["secret"]["name"] == "shipyard-secrets"
    assert {k["key"]: k["required"] for k in data["secret"]["keys"]}["BACKUP_URL"] is False
    assert not any(value in r.stdout for value in SECRETS.values())
    written = json.loads(shipyard("deploy", "kubernetes", "--json", "-o", "k8s", cwd=tmp_path).stdout)
    assert sorted(Path(f).name for f in written["files"]) == sorted(
        p.name for p in (tmp_path / "k8s").iterdir()
    )
