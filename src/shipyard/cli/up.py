"""`shipyard up`: start the platform (gateway, store, trace writer) in one process."""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from typing import Any

import typer

from shipyard import __version__, redact
from shipyard.cli.common import ConfigOpt, HomeOpt, cli_actor, console, err_console, resolve
from shipyard.config.loader import Document
from shipyard.settings import BY_NAME, Settings


def client_example(base: str, route: str, key: str = "sk-shp-…") -> str:
    return (
        "from openai import OpenAI\n"
        f'client = OpenAI(base_url="{base}/v1", api_key="{key}")\n'
        "reply = client.chat.completions.create(\n"
        f'    model="{route}", messages=[{{"role": "user", "content": "Tell me about harbours."}}])\n'
        "print(reply.choices[0].message.content)"
    )


def up(
    host: str = typer.Option(
        None,
        "--host",
        help=f"Interface to listen on. Env: SHIPYARD_HOST. Default: {BY_NAME['host'].default}",
        show_default=False,
    ),
    port: int = typer.Option(
        None,
        "--port",
        "-p",
        help=f"Port to listen on. Env: SHIPYARD_PORT. Default: {BY_NAME['port'].default}",
        show_default=False,
    ),
    home: str = HomeOpt,
    config: str = ConfigOpt,
    log_level: str = typer.Option(
        None,
        "--log-level",
        help="debug, info, warning or error. Env: SHIPYARD_LOG_LEVEL. Default: info",
        show_default=False,
    ),
    workers: int = typer.Option(
        None,
        "--workers",
        "-w",
        help="Gateway worker processes on the one port (Env: SHIPYARD_WORKERS; default 1). More than one "
        "needs `redis_url` (Redis), where limits, budgets and the response cache are shared.",
        show_default=False,
    ),
    worker_fd: int = typer.Option(None, "--worker-fd", hidden=True),
    worker_index: int = typer.Option(None, "--worker-index", hidden=True),
    join: bool = typer.Option(
        False,
        "--join",
        help="Serve a store that another running Shipyard server already serves. Without it a second "
        "server on the same store is refused, since it would apply its config to the routes the first "
        "one serves.",
    ),
) -> None:
    """Start Shipyard: the OpenAI-compatible gateway on the configured routes, with every call traced.

    With no config file, route `default` serves the embedded local model (Gemma 3 270M on
    llama.cpp, in a model worker process) and `wordllama` serves embeddings: no API key, no
    network. The port is taken first and the store is claimed next: if either is in use, nothing
    is changed and the exit code is 3. "ready" is printed once every local model has loaded and
    answered a self-test (/readyz says 503 until then). Stop with Ctrl-C (or SIGTERM): in-flight
    requests finish and every pending trace is written first.
    """
    from shipyard.store import serving

    settings, doc = resolve(
        home=home, config=config, host=host, port=port, log_level=log_level, workers=workers
    )
    base = f"http://{settings.host}:{settings.port}"
    if worker_fd is not None:  # one worker of `--workers N`: its supervisor bound and prepared
        _serve(settings, doc, socket.socket(fileno=worker_fd), base, worker=worker_index or 0)
        return
    if settings.workers > 1 and not settings.redis_url:
        err_console.print(
            f"[red]error:[/red] --workers {settings.workers} needs Redis: rate limits, budgets and the "
            "response cache must be shared by the workers, or each would count and spend on its own. Set "
            "`redis_url` (SHIPYARD_REDIS_URL=redis://host:6379/0), or run one worker."
        )
        raise typer.Exit(2)
    # Nothing may change before this server can really serve: the port first, then the store.
    sock = _bind(settings.host, settings.port)
    lock: serving.ServingLock | None = None
    if not join:
        try:
            lock = serving.acquire(settings.store_url, base)
        except serving.StoreInUse as exc:
            sock.close()
            err_console.print(
                f"[red]error:[/red] {exc}. Stop that server first, or give this one its own store "
                "(--home DIR or SHIPYARD_HOME), or pass --join to serve the same store on purpose "
                "(this server's config is then applied to it)."
            )
            raise typer.Exit(3) from None
    try:
        if settings.workers > 1:
            status = _supervise(settings, doc, sock, base)
            if status:
                raise typer.Exit(status)
        else:
            _serve(settings, doc, sock, base)
    finally:
        if lock is not None:
            lock.release()


def _supervise(settings: Settings, doc: Document | None, sock: socket.socket, base: str) -> int:
    """Prepare the store once, then run and watch the workers (cli/supervise.py)."""
    from shipyard.cli.supervise import supervise
    from shipyard.server.platform import prepare

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    applied, admin_secret = prepare(settings, doc, cli_actor(settings))
    console.print(f"[bold]Shipyard {__version__}[/bold] — LLMOps platform, {settings.workers} workers")
    if applied is not None:
        console.print(f"  config   {applied.source}: {applied.summary()}")
    console.print(f"  store    {settings.store_url}")
    console.print(f"  gateway  {base}/v1  (OpenAI-compatible)")
    console.print(f"  health   {base}/healthz   ready: {base}/readyz (per worker)")
    if admin_secret is not None:
        console.print(
            "\n[bold yellow]First start: created an admin API key.[/bold yellow] It is shown only now "
            "(the store keeps a hash); save it:\n"
        )
        console.print(f"  {admin_secret}\n", highlight=False, markup=False)
    sock.set_inheritable(True)
    return supervise(settings, sock.fileno(), settings.workers)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else happens; exit 3 when the port is taken."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as exc:
        err_console.print(
            f"[red]error:[/red] cannot listen on host {host!r}: {exc}; check --host / SHIPYARD_HOME"
        )
        raise typer.Exit(3) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        busy = exc.errno == errno.EADDRINUSE
        why = "is already in use (another Shipyard?" if busy else f"cannot be used ({exc.strerror};"
        err_console.print(
            f"[red]error:[/red] port {port} on {host} {why} try `curl http://{host}:{port}/healthz`). "
            "Nothing was changed. Stop the other server, or pick a free port with --port N "
            "(or SHIPYARD_PORT)."
        )
        raise typer.Exit(3) from None
    # Listening from now on: a client that connects while the platform is being built waits in the
    # backlog instead of being refused, and /readyz then answers 503 until the models are ready.
    sock.listen(2048)
    return sock


def _serve(settings: Settings, doc: Document | None, sock: socket.socket, base: str, worker: int = 0) -> None:
    """Serve on ``sock`` in this process. ``worker``: its number under a supervisor (0: alone)."""

    from shipyard.server import create_app
    from shipyard.server.platform import Platform

    settings.home_path.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    platform = Platform.build(
        settings, doc, actor=cli_actor(settings), bootstrap_keys=not worker, apply_document=not worker
    )
    platform.worker = worker
    if worker:
        platform.on_started.append(lambda runtime: _report_worker(runtime, worker))
    else:
        platform.on_started.append(lambda runtime: _report_start(runtime, base))
    app = create_app(platform, background_start=True)
    if worker:
        _run(settings, app, sock)
        return
    runtime = platform.runtime
    first_route = next((r for r in runtime.routes.values() if r.kind == "chat"), None)
    console.print(f"[bold]Shipyard {__version__}[/bold] — LLMOps platform")
    if platform.applied is not None:
        console.print(f"  config   {platform.applied.source}: {platform.applied.summary()}")
    console.print(f"  registry revision {runtime.revision} (changes apply live: `shipyard apply`, aliases)")
    for r in runtime.routes.values():
        targets = ", ".join(f"{t.label} ({runtime.provider_types[t.provider_name]})" for t in r.targets)
        prompts = sorted({t.prompt.ref for t in r.targets if t.prompt})
        extra = f"  prompt {', '.join(prompts)}" if prompts else ""
        console.print(f"  route    [cyan]{r.name}[/cyan] v{r.version} → {targets}{extra}")
    for name in runtime.embedding_models:
        console.print(f"  embed    [cyan]{name}[/cyan]")
    console.print(f"  store    {settings.store_url}")
    console.print(f"  gateway  {base}/v1  (OpenAI-compatible)")
    console.print(f"  health   {base}/healthz   ready: {base}/readyz")
    if platform.admin_secret is not None:
        console.print(
            "\n[bold yellow]First start: created an admin API key.[/bold yellow] It is shown only now "
            "(the store keeps a hash); save it:\n"
        )
        console.print(f"  {platform.admin_secret}\n", highlight=False, markup=False)
        console.print(
            "  Log in to the dashboard with it, and make keys for applications: "
            "`shipyard keys create NAME --role client`."
        )
    if first_route is not None:
        console.print("\nTry it (pip install openai):\n")
        key = platform.admin_secret or "sk-shp-…"
        console.print(client_example(base, first_route.name, key), highlight=False, markup=False)
        console.print()
    console.print("  starting providers… (/readyz answers 503 until they are ready)")
    _run(settings, app, sock)


def _run(settings: Settings, app: Any, sock: socket.socket) -> None:
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(settings.shutdown_timeout) or None,
            server_header=False,
            proxy_headers=False,
        )
    )
    # The trace writer thread competes with the event loop for the GIL; a shorter switch interval
    # keeps a request from waiting behind a whole batch being serialized (p50/p99 at low load).
    sys.setswitchinterval(0.0005)
    # After uvicorn.Config, which set up its own loggers: every handler masks resolved secrets.
    redact.install_log_filter("uvicorn", "uvicorn.error", "uvicorn.access")
    server.run(sockets=[sock])
    if not server.started:
        raise typer.Exit(1)


def _report_worker(runtime: Any, index: int) -> None:
    failed = {n: h.detail for n, h in runtime.readiness().items() if not h.ok}
    for name, detail in failed.items():
        err_console.print(f"[red]error:[/red] worker {index}: provider `{name}`: {detail}", highlight=False)
    console.print(f"  worker {index} (pid {os.getpid()}) ready", highlight=False)


def _report_start(runtime: Any, base: str) -> None:
    """Printed once the providers have started: "ready", or what failed, why, and the remedy."""
    failed = {n: h.detail for n, h in runtime.readiness().items() if not h.ok}
    for name, workers in runtime.worker_statuses().items():
        if name not in failed:
            console.print(
                f"  model    [cyan]{name}[/cyan]: {len(workers)} worker(s) ready "
                f"(pids {', '.join(str(w.pid) for w in workers)}), self-test answered"
            )
    for name, detail in failed.items():
        err_console.print(f"[red]error:[/red] provider `{name}`: {detail}", highlight=False)
    if failed:
        routes = sorted(
            r.name
            for r in runtime.routes.values()
            if all(t.provider_name in failed for t in (*r.targets, *r.fallbacks))
        )
        err_console.print(
            f"Shipyard is serving on {base}, but {', '.join(f'`{r}`' for r in routes) or 'no route'} "
            "cannot answer until this is fixed (details on /readyz)."
        )
    else:
        console.print(f"[bold green]ready[/bold green] on {base}", highlight=False)
