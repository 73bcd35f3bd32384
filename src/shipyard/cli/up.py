"""`shipyard up`: start the platform (gateway, store, trace writer) in one process."""

from __future__ import annotations

import logging
import sys

import typer

from shipyard import __version__
from shipyard.cli.common import ConfigOpt, HomeOpt, cli_actor, console, resolve
from shipyard.settings import BY_NAME


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
) -> None:
    """Start Shipyard: the OpenAI-compatible gateway on the configured routes, with every call traced.

    With no config file, route `default` serves the embedded local model (Gemma 3 270M on
    llama.cpp) and `wordllama` serves embeddings: no API key, no network. Stop with Ctrl-C
    (or SIGTERM): in-flight requests finish and every pending trace is written first.
    """
    import uvicorn

    from shipyard.gateway.app import create_app
    from shipyard.gateway.platform import Platform

    settings, doc = resolve(home=home, config=config, host=host, port=port, log_level=log_level)
    settings.home_path.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    platform = Platform.build(settings, doc, actor=cli_actor(settings), bootstrap_keys=True)
    app = create_app(platform)
    runtime = platform.runtime
    base = f"http://{settings.host}:{settings.port}"
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
    server.run()
    if not server.started:
        raise typer.Exit(1)
