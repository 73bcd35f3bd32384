"""`shipyard deploy kubernetes`: manifests for the user's own config."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.markup import escape

from shipyard.cli.common import ConfigOpt, err_console, print_json
from shipyard.config.loader import LoadedConfig, default_document, find_config
from shipyard.deploy import KubeOptions, Rendered, render_kubernetes, to_yaml, write_directory
from shipyard.deploy.kubernetes import references
from shipyard.registry.validation import validate

app = typer.Typer(help="Render deployment manifests from your config.", no_args_is_help=True)

# What `${NAME}` references resolve to while the file is checked here: their values live in the
# cluster's Secret, not on the machine that renders, and are never written out.
STAND_IN = "value-from-the-secret"


def load_for_deploy(config: str | None) -> tuple[LoadedConfig, dict[str, object], str]:
    """The config `shipyard up --config` would load, checked by the same code (the same errors),
    with ``${ENV}`` references standing in for values that only the cluster has."""
    doc = find_config(config or os.environ.get("SHIPYARD_CONFIG")) or default_document()
    environ = {name: STAND_IN for name, has_default in references(doc.raw).items() if not has_default}
    loaded = validate(doc.raw, doc.source, doc.where, environ, check_rendering=True)
    return loaded, doc.raw, doc.source


@app.command("kubernetes")
def kubernetes(
    config: str = ConfigOpt,
    output: str = typer.Option(
        "-",
        "--output",
        "-o",
        help="`-`: one YAML stream on stdout (for `kubectl apply -f -`). A directory: one file per "
        "object, a kustomization.yaml (a kustomize base) and create-secret.sh.",
    ),
    name: str = typer.Option("shipyard", "--name", help="Name of the objects (and their label instance)."),
    namespace: str = typer.Option(
        None,
        "--namespace",
        "-n",
        help="Namespace of the objects. Default: none (kubectl's or kustomize's).",
        show_default=False,
    ),
    image: str = typer.Option(
        KubeOptions.image, "--image", help="Container image built from deploy/Dockerfile."
    ),
    replicas: int = typer.Option(
        1,
        "--replicas",
        help="Gateway pods (more than 1 needs Postgres and Redis: see --database-url-secret).",
    ),
    min_replicas: int = typer.Option(
        None, "--min-replicas", help="Autoscaler minimum. Default: --replicas.", show_default=False
    ),
    max_replicas: int = typer.Option(
        None,
        "--max-replicas",
        help="Autoscaler maximum: renders a HorizontalPodAutoscaler (autoscaling/v2) on CPU.",
        show_default=False,
    ),
    target_cpu: int = typer.Option(
        70, "--target-cpu", help="Autoscaler target: average CPU use, in % of the pods' CPU request."
    ),
    secret_name: str = typer.Option(
        None,
        "--secret-name",
        help="Secret holding the admin key, audit key and every ${NAME} of the config. "
        "Default: NAME-secrets.",
        show_default=False,
    ),
    database_url_secret: str = typer.Option(
        None,
        "--database-url-secret",
        help="Secret (NAME or NAME:KEY; key default SHIPYARD_DATABASE_URL) holding the Postgres URL of the "
        "store. Unset and no `database_url` in the config: SQLite on a volume, 1 replica.",
        show_default=False,
    ),
    redis_url_secret: str = typer.Option(
        None,
        "--redis-url-secret",
        help="Secret (NAME or NAME:KEY; key default SHIPYARD_REDIS_URL) holding the Redis URL that "
        "limits, budgets and the cache are shared through.",
        show_default=False,
    ),
    storage: str = typer.Option("10Gi", "--storage", help="Size of the SQLite store's volume."),
    storage_class: str = typer.Option(
        None,
        "--storage-class",
        help="StorageClass of that volume. Default: the cluster's.",
        show_default=False,
    ),
    worker_cpu: int = typer.Option(
        1, "--worker-cpu", min=1, help="CPU cores (and llama.cpp threads) for each local model worker."
    ),
    worker_memory: str = typer.Option(
        None,
        "--worker-memory",
        help="Memory of each local model worker (e.g. 6Gi). Default: the GGUF's size plus a KV-cache "
        "allowance for its n_ctx.",
        show_default=False,
    ),
    ray: bool = typer.Option(
        False, "--ray", help="Render a KubeRay RayService (ray.io/v1) instead of the gateway Deployment."
    ),
    ray_app: str = typer.Option(
        None,
        "--ray-app",
        help="With --ray: import path (module:attribute) of the Ray Serve application in the image.",
        show_default=False,
    ),
    ray_version: str = typer.Option(
        None, "--ray-version", help="With --ray: the Ray release installed in the image.", show_default=False
    ),
    json_out: bool = typer.Option(
        False,
        "--json",
        help="Print JSON: the objects (or, with --output DIR, the files written), the Secret's name and "
        "keys, and the notes.",
    ),
) -> None:
    """Render Kubernetes manifests for your config: a ConfigMap with it, the gateway Deployment
    (`shipyard up`, settings as environment variables, secrets from a Secret), a Service, and for
    several replicas a HorizontalPodAutoscaler and a PodDisruptionBudget. Local models run as model
    worker processes inside the gateway pod, which is sized for them. The config is checked as
    `shipyard up` checks it; nothing is applied to a cluster."""
    loaded, raw, source = load_for_deploy(config)
    opts = KubeOptions(
        name=name,
        namespace=namespace,
        image=image,
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        target_cpu=target_cpu,
        secret_name=secret_name,
        database_url_secret=database_url_secret,
        redis_url_secret=redis_url_secret,
        storage=storage,
        storage_class=storage_class,
        worker_cpu=worker_cpu,
        worker_memory=worker_memory,
        ray=ray,
        ray_app=ray_app,
        ray_version=ray_version,
    )
    rendered = render_kubernetes(loaded, raw, opts, source)
    if json_out:
        summary = {
            "source": source,
            "namespace": rendered.namespace,
            "secret": {
                "name": rendered.secret_name,
                "keys": [
                    {"key": k.key, "what": k.what, "required": k.required} for k in rendered.secret_keys
                ],
            },
            "notes": rendered.notes,
        }
        if output == "-":
            print_json({"objects": rendered.objects, **summary})
        else:
            print_json({"files": [str(f) for f in write_directory(rendered, Path(output))], **summary})
        return
    for note in rendered.notes:
        err_console.print(f"note: {escape(note)}", highlight=False)
    if output == "-":
        typer.echo(to_yaml(rendered.objects), nl=False)
        _explain_secret(rendered, None)
        return
    files = write_directory(rendered, Path(output))
    for f in files:
        err_console.print(f"wrote {escape(str(f))}", highlight=False)
    _explain_secret(rendered, Path(output))


def _explain_secret(rendered: Rendered, directory: Path | None) -> None:
    keys = ", ".join(k.key + ("" if k.required else " (optional)") for k in rendered.secret_keys)
    where = f" -n {rendered.namespace}" if rendered.namespace else ""
    err_console.print(
        f"The pods read Secret `{rendered.secret_name}`{where} (keys: {escape(keys)}); no value is in "
        "these manifests.",
        highlight=False,
    )
    if directory is not None:
        err_console.print(
            f"Create it with {escape(str(directory / 'create-secret.sh'))} (values from your "
            "environment; the admin and audit keys are generated when unset), then "
            f"`kubectl apply -k {escape(str(directory))}`.",
            highlight=False,
        )
    else:
        err_console.print(
            "Create it first: `kubectl create secret generic "
            f"{rendered.secret_name}{where} --from-literal=KEY=VALUE …` for each key (or render with "
            "--output DIR for a create-secret.sh), then pipe these manifests to `kubectl apply -f -`.",
            highlight=False,
        )
