"""Any OpenAI-compatible upstream: OpenAI, vLLM, Ollama, TGI, LM Studio, llama.cpp's server, …

Requests are forwarded with the body the client sent (unknown fields included), answers come back
byte for byte. Streams are forwarded event by event as they arrive, never collected first. One
pooled aiohttp session per provider keeps connections warm. The API key is held as a secret and
never appears in logs, errors or traces.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from pydantic import Field, SecretStr

from shipyard import __version__
from shipyard.errors import ProviderError, ProviderTimeout, ProviderUnavailable, upstream_status_error
from shipyard.plugins import hookimpl
from shipyard.providers.base import (
    BaseProvider,
    Call,
    Completion,
    Embeddings,
    Health,
    ProviderOptions,
    ProviderType,
    StreamChunk,
    Usage,
    wants_usage,
)


class OpenAIOptions(ProviderOptions):
    base_url: str = Field(
        ..., description="Base URL including the version prefix, e.g. http://localhost:8000/v1"
    )
    api_key: SecretStr | None = Field(None, description="Bearer key; use `${ENV_VAR}` rather than a literal.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers sent upstream.")
    max_connections: int = Field(512, ge=1, description="Size of the connection pool.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to establish a connection.")
    inject_stream_usage: bool = Field(
        True,
        description="Ask the upstream for usage on streams even when the client did not (the extra "
        "usage event is not forwarded), so traces have real token counts.",
    )
    verify_tls: bool = Field(
        True, description="Check the upstream's TLS certificate; turn off only for self-signed test servers."
    )


def _usage(data: Any) -> Usage | None:
    if isinstance(data, dict) and isinstance(u := data.get("usage"), dict):
        return Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
    return None


class OpenAICompatProvider(BaseProvider):
    kind = "openai"
    enforces_timeout = True  # aiohttp's total / sock_read timeouts

    def __init__(self, name: str, options: OpenAIOptions) -> None:
        super().__init__(name)
        self.options = options
        self.base_url = options.base_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        headers = {"User-Agent": f"shipyard/{__version__}", "Content-Type": "application/json"}
        headers.update(options.headers)
        if options.api_key is not None and options.api_key.get_secret_value():
            headers["Authorization"] = "Bearer " + options.api_key.get_secret_value()
        self._headers = headers

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.options.max_connections,
                ttl_dns_cache=300,
                ssl=self.options.verify_tls,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, json_serialize=lambda o: orjson.dumps(o).decode()
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ProviderUnavailable(f"provider `{self.name}` is not started")
        return self._session

    def _errors(self, exc: BaseException, call: Call) -> ProviderError:
        if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
            return ProviderTimeout(
                f"provider `{self.name}` model `{call.model}` timed out after {call.timeout:g}s"
            )
        if isinstance(exc, aiohttp.ClientConnectionError | OSError):
            return ProviderUnavailable(
                f"provider `{self.name}` at {self.base_url} is unreachable: {type(exc).__name__}"
            )
        return ProviderError(f"provider `{self.name}` failed: {type(exc).__name__}: {exc}")

    async def _post(self, path: str, call: Call) -> bytes:
        timeout = aiohttp.ClientTimeout(total=call.timeout, sock_connect=self.options.connect_timeout)
        try:
            async with self.session.post(
                self.base_url + path,
                data=orjson.dumps(call.body),
                timeout=timeout,
                headers=call.extra_headers or None,
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    err = upstream_status_error(resp.status, raw, f"{self.name}/{call.model}")
                    err.retry_after = _retry_after(resp.headers.get("Retry-After"))
                    raise err
                return raw
        except ProviderError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._errors(exc, call) from None

    def _completion(self, raw: bytes, call: Call, chat: bool) -> Completion:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProviderError(f"provider `{self.name}` answered invalid JSON: {raw[:200]!r}") from None
        text = ""
        finish = None
        choices = data.get("choices") if isinstance(data, dict) else None
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            first = choices[0]
            finish = first.get("finish_reason")
            if chat:
                msg = first.get("message") or {}
                text = msg.get("content") or ""
                if not text and msg.get("tool_calls"):
                    text = orjson.dumps(msg["tool_calls"]).decode()
            else:
                text = first.get("text") or ""
        usage = _usage(data) or Usage()
        model = data.get("model") if isinstance(data, dict) else None
        return Completion(
            body=data, usage=usage, text=text, model=model or call.model, finish_reason=finish, raw=raw
        )

    async def chat(self, call: Call) -> Completion:
        return self._completion(await self._post("/chat/completions", call), call, chat=True)

    async def complete(self, call: Call) -> Completion:
        return self._completion(await self._post("/completions", call), call, chat=False)

    async def embed(self, call: Call) -> Embeddings:
        raw = await self._post("/embeddings", call)
        data = orjson.loads(raw)
        vectors = [d.get("embedding") for d in data.get("data", [])]
        u = data.get("usage") or {}
        return Embeddings(
            vectors=vectors,
            usage=Usage(int(u.get("prompt_tokens") or 0), 0),
            model=data.get("model") or call.model,
            raw=raw,
        )

    def stream_chat(self, call: Call) -> AsyncIterator[StreamChunk]:
        return self._stream("/chat/completions", call, chat=True)

    def stream_complete(self, call: Call) -> AsyncIterator[StreamChunk]:
        return self._stream("/completions", call, chat=False)

    async def _stream(self, path: str, call: Call, chat: bool) -> AsyncIterator[StreamChunk]:
        body = call.body
        client_wants_usage = wants_usage(body)
        injected = False
        if not client_wants_usage and self.options.inject_stream_usage:
            body = dict(body)
            opts = dict(body.get("stream_options") or {})
            opts["include_usage"] = True
            body["stream_options"] = opts
            injected = True
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.options.connect_timeout, sock_read=call.timeout
        )
        try:
            async with self.session.post(
                self.base_url + path,
                data=orjson.dumps(body),
                timeout=timeout,
                headers=call.extra_headers or None,
            ) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    if injected and resp.status == 400 and b"stream_options" in raw:
                        # An upstream that rejects stream_options: retry as the client asked.
                        self.options.inject_stream_usage = False
                        async for chunk in self._stream(path, call, chat):
                            yield chunk
                        return
                    err = upstream_status_error(resp.status, raw, f"{self.name}/{call.model}")
                    err.retry_after = _retry_after(resp.headers.get("Retry-After"))
                    raise err
                buf = b""
                async for piece in resp.content.iter_any():
                    buf += piece
                    if b"\r\n" in buf:
                        buf = buf.replace(b"\r\n", b"\n")
                    out = b""
                    text_parts: list[str] = []
                    usage: Usage | None = None
                    finish: str | None = None
                    while True:
                        end = buf.find(b"\n\n")
                        if end < 0:
                            break
                        event, buf = buf[: end + 2], buf[end + 2 :]
                        keep, t, u, f = _inspect_event(event, chat, drop_usage_only=injected)
                        if keep:
                            out += event
                        if t:
                            text_parts.append(t)
                        if u is not None:
                            usage = u
                        if f:
                            finish = f
                    if out or usage is not None:
                        yield StreamChunk(out, text="".join(text_parts), usage=usage, finish_reason=finish)
                if buf.strip():
                    yield StreamChunk(buf)
        except ProviderError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._errors(exc, call) from None

    async def health(self) -> Health:
        try:
            async with self.session.get(
                self.base_url + "/models", timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                await resp.read()
                return Health(resp.status < 500, f"GET /models → {resp.status}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Health(False, f"{type(exc).__name__}: {exc}")


def _inspect_event(
    event: bytes, chat: bool, drop_usage_only: bool
) -> tuple[bool, str, Usage | None, str | None]:
    """Read one SSE event: (forward it?, text delta, usage, finish reason)."""
    data = b""
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            data += line[5:].lstrip()
    if not data or data == b"[DONE]":
        return True, "", None, None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return True, "", None, None
    if not isinstance(obj, dict):
        return True, "", None, None
    usage = _usage(obj)
    choices = obj.get("choices") or []
    text = ""
    finish = None
    for c in choices:
        if not isinstance(c, dict):
            continue
        if chat:
            delta = c.get("delta") or {}
            text += delta.get("content") or ""
        else:
            text += c.get("text") or ""
        finish = c.get("finish_reason") or finish
    keep = not (drop_usage_only and usage is not None and not choices)
    return keep, text, usage, finish


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@hookimpl
def register_providers() -> list[ProviderType]:
    return [
        ProviderType(
            "openai",
            OpenAIOptions,
            OpenAICompatProvider,
            "Any OpenAI-compatible HTTP API (OpenAI, vLLM, Ollama, TGI, LM Studio, llama.cpp server).",
        )
    ]
