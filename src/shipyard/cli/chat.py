"""`shipyard chat`: talk to a route from the terminal, streaming.

Uses the running gateway when one answers at --url; otherwise runs the gateway in this process
(same config, same store: the conversation is traced either way), and says so on stderr. The
fallback needs an existing store (it never creates one by accident); --in-process may create it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import orjson
import typer
from rich.markup import escape

from shipyard.cli.common import (
    ConfigOpt,
    HomeOpt,
    announce_new_store,
    check_store,
    console,
    err_console,
    resolve,
    store_file,
)
from shipyard.errors import ShipyardError


def _events(buffer: bytearray) -> list[dict[str, Any]]:
    """Pop complete SSE events from ``buffer``; return their JSON payloads."""
    out: list[dict[str, Any]] = []
    while True:
        end = buffer.find(b"\n\n")
        if end < 0:
            return out
        event = bytes(buffer[:end])
        del buffer[: end + 2]
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                data = line[5:].strip()
                if data and data != b"[DONE]":
                    with contextlib.suppress(orjson.JSONDecodeError):
                        out.append(orjson.loads(data))


def _piece(event: dict[str, Any], completion: bool) -> str:
    if "error" in event:
        raise ShipyardError(str(event["error"].get("message", event["error"])))
    choices = event.get("choices") or []
    if not choices:
        return ""
    if completion:
        return str(choices[0].get("text") or "")
    return str((choices[0].get("delta") or {}).get("content") or "")


async def _http_stream(url: str, path: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
    import httpx

    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(300, connect=5)) as client,
        client.stream(
            "POST",
            url + path,
            json=body,
            # The gateway needs a key unless the route is public: SHIPYARD_API_KEY.
            headers={"Authorization": f"Bearer {key}"} if (key := os.environ.get("SHIPYARD_API_KEY")) else {},
        ) as resp,
    ):
        if resp.status_code >= 400:
            data = await resp.aread()
            try:
                message = orjson.loads(data)["error"]["message"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                message = data.decode("utf-8", "replace")
            raise ShipyardError(f"HTTP {resp.status_code}: {message}")
        async for chunk in resp.aiter_bytes():
            yield chunk


def _reachable(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/healthz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def chat(
    message: str = typer.Argument(
        None, help="What to send. Omit for an interactive session (Ctrl-D ends it).", show_default=False
    ),
    route: str = typer.Option(
        "default", "--route", "-r", help="Route to send to (what clients call `model`)."
    ),
    system: str = typer.Option(None, "--system", "-s", help="System message to start the conversation with."),
    completion: bool = typer.Option(
        False, "--completion", help="Use /v1/completions: the model continues MESSAGE."
    ),
    max_tokens: int = typer.Option(None, "--max-tokens", min=1, help="Cap on generated tokens."),
    temperature: float = typer.Option(
        None, "--temperature", "-t", min=0, max=2, help="Sampling temperature."
    ),
    url: str = typer.Option(
        None,
        "--url",
        help="Gateway base URL. Env: SHIPYARD_URL. Default: http://HOST:PORT from the host and port "
        "settings (SHIPYARD_HOST, SHIPYARD_PORT), http://127.0.0.1:8700 unless set",
        show_default=False,
    ),
    in_process: bool = typer.Option(
        False,
        "--in-process",
        help="Do not look for a running gateway; load the config and models in this process "
        "(creating the store if there is none). Without it, chat falls back to this only when no "
        "gateway answers and a store exists.",
    ),
    home: str = HomeOpt,
    config: str = ConfigOpt,
) -> None:
    """Chat with a route (or continue text with --completion), printing tokens as they stream.

    Talks to the gateway at --url. When none answers at the default URL, it runs the route in this
    process on the existing store (and says so on stderr); with no store there it stops, exit
    status 2. --in-process skips the gateway and creates the store if needed.
    """
    # The gateway `shipyard up` would serve with the same settings (SHIPYARD_PORT included).
    settings, _ = resolve(home=home, config=config)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    default = f"http://{host}:{settings.port}"
    base = (url or os.environ.get("SHIPYARD_URL") or default).rstrip("/")
    remote = not in_process and _reachable(base)
    if not remote and (url or os.environ.get("SHIPYARD_URL")) and not in_process:
        err_console.print(
            f"[red]no gateway answers at {base}[/red]; start one with `shipyard up` or drop --url"
        )
        raise typer.Exit(1)
    try:
        asyncio.run(
            _session(
                message,
                route,
                system,
                completion,
                max_tokens,
                temperature,
                base,
                remote,
                in_process,
                home,
                config,
            )
        )
    except ShipyardError as exc:
        err_console.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False)
        raise typer.Exit(1) from None
    except (KeyboardInterrupt, EOFError):
        console.print()


async def _session(
    message: str | None,
    route: str,
    system: str | None,
    completion: bool,
    max_tokens: int | None,
    temperature: float | None,
    base: str,
    remote: bool,
    in_process: bool,
    home: str | None,
    config: str | None,
) -> None:
    platform = None
    if not remote:
        from shipyard.cli.common import cli_actor
        from shipyard.server.platform import Platform

        settings, doc = resolve(home=home, config=config)
        # The fallback only uses a store that exists; asking for --in-process may create one.
        new = check_store(
            settings,
            create=in_process,
            why=f"no gateway answers at {base} to run route `{route}`",
            fix="; or run the route in this process on a new store with --in-process",
        )
        db_file = store_file(settings)
        store = f"the store at {db_file}" if db_file is not None else "the database set by `database_url`"
        routes = f" (from {doc.source})" if doc is not None else ""
        what = f"running route `{route}`{routes} in this process on {store}"
        err_console.print(
            escape(f"{what} (--in-process)" if in_process else f"no gateway answers at {base}; {what}"),
            highlight=False,
        )
        platform = await asyncio.to_thread(Platform.build, settings, doc, cli_actor(settings))
        announce_new_store(new)
        await platform.open()
    try:
        history: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
        while True:
            text = message if message is not None else await asyncio.to_thread(input, "you> ")
            if not text.strip():
                continue
            body: dict[str, Any] = {"model": route, "stream": True}
            if max_tokens:
                body["max_tokens"] = max_tokens
            if temperature is not None:
                body["temperature"] = temperature
            if completion:
                body["prompt"] = text
                path, op = "/v1/completions", "completion"
            else:
                history.append({"role": "user", "content": text})
                body["messages"] = history
                path, op = "/v1/chat/completions", "chat"
            if platform is not None:
                stream, _ = await platform.gateway.open_stream(op, body)
            else:
                stream = _http_stream(base, path, body)
            buffer = bytearray()
            answer = []
            if message is None:
                console.print("[bold cyan]assistant>[/bold cyan] ", end="")
            async for chunk in stream:
                buffer += chunk
                for event in _events(buffer):
                    piece = _piece(event, completion)
                    answer.append(piece)
                    console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)
            console.print()
            if not completion:
                history.append({"role": "assistant", "content": "".join(answer)})
            if message is not None:
                return
    finally:
        if platform is not None:
            await platform.close()
