"""`shipyard chat`: talk to a route from the terminal, streaming.

Uses the running gateway when one answers at --url; otherwise runs the gateway in this process
(same config, same store: the conversation is traced either way)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import orjson
import typer
from rich.markup import escape

from shipyard.cli.common import ConfigOpt, HomeOpt, console, err_console, resolve
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
        help="Gateway base URL. Env: SHIPYARD_URL. Default: http://127.0.0.1:8700",
        show_default=False,
    ),
    in_process: bool = typer.Option(
        False,
        "--in-process",
        help="Do not look for a running gateway; load the config and models in this process.",
    ),
    home: str = HomeOpt,
    config: str = ConfigOpt,
) -> None:
    """Chat with a route (or continue text with --completion), printing tokens as they stream."""
    base = (url or os.environ.get("SHIPYARD_URL") or "http://127.0.0.1:8700").rstrip("/")
    remote = not in_process and _reachable(base)
    if not remote and (url or os.environ.get("SHIPYARD_URL")) and not in_process:
        err_console.print(
            f"[red]no gateway answers at {base}[/red]; start one with `shipyard up` or drop --url"
        )
        raise typer.Exit(1)
    try:
        asyncio.run(
            _session(message, route, system, completion, max_tokens, temperature, base, remote, home, config)
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
    home: str | None,
    config: str | None,
) -> None:
    platform = None
    if not remote:
        from shipyard.cli.common import cli_actor
        from shipyard.gateway.platform import Platform

        settings, doc = resolve(home=home, config=config)
        where = doc.source if doc is not None else f"the registry in {settings.home_path}"
        err_console.print(f"[dim]no gateway at {base}: serving {where} in this process[/dim]")
        platform = await asyncio.to_thread(Platform.build, settings, doc, cli_actor(settings))
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
