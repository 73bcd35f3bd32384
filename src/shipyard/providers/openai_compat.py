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
from shipyard.redact import scrub, strip_userinfo
from shipyard.retries import parse_retry_after


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
        self.shown_url = strip_userinfo(self.base_url)  # for messages: never the credentials
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
                f"provider `{self.name}` at {self.shown_url} is unreachable: {type(exc).__name__}"
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
                    err.retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    raise err
                return raw
        except ProviderError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._errors(exc, call) from None

    def _json(self, raw: bytes, call: Call, field: str) -> dict[str, Any]:
        """A 200 answer's JSON object, or a retryable error when it is not one (so a route with a
        fallback falls back instead of passing garbage on as a success)."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        problem = None
        if not isinstance(data, dict):
            problem = f"invalid JSON: {scrub(raw[:200].decode('utf-8', 'replace'))!r}"
        elif "error" in data:
            problem = f"an error: {scrub(_event_error(data))}"
        elif not isinstance(data.get(field), list):
            problem = f"JSON without a `{field}` list"
        if problem is not None:
            raise ProviderError(
                f"provider `{self.name}` model `{call.model}` answered HTTP 200 with {problem}",
                code="upstream_malformed",
            )
        assert isinstance(data, dict)
        return data

    def _completion(self, raw: bytes, call: Call, chat: bool) -> Completion:
        data = self._json(raw, call, "choices")
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
        data = self._json(raw, call, "data")
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
                    err.retry_after = parse_retry_after(resp.headers.get("Retry-After"))
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
                        try:
                            keep, t, u, f = _inspect_event(event, chat, drop_usage_only=injected)
                        except ValueError as exc:
                            if out:  # what came before the bad event still goes out first
                                yield StreamChunk(out, text="".join(text_parts), usage=usage)
                            raise self._malformed(call, exc) from None
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
                    # The stream ended without the blank line after its last event.
                    try:
                        keep, t, u, f = _inspect_event(buf + b"\n\n", chat, drop_usage_only=injected)
                    except ValueError as exc:
                        raise self._malformed(call, exc) from None
                    if keep or u is not None:
                        yield StreamChunk(buf + b"\n\n" if keep else b"", text=t, usage=u, finish_reason=f)
        except ProviderError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._errors(exc, call) from None

    def _malformed(self, call: Call, exc: ValueError) -> ProviderError:
        return ProviderError(
            f"provider `{self.name}` model `{call.model}` sent a malformed stream event ({exc}); the "
            "upstream is not speaking OpenAI's server-sent events",
            code="upstream_malformed",
        )

    async def health(self) -> Health:
        try:
            async with self.session.get(
                self.base_url + "/models", timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                await resp.read()
                return Health(resp.status < 500, f"GET /models → {resp.status}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Health(False, scrub(f"{type(exc).__name__}: {exc}"))


def _inspect_event(
    event: bytes, chat: bool, drop_usage_only: bool
) -> tuple[bool, str, Usage | None, str | None]:
    """Read one SSE event: (forward it?, text delta, usage, finish reason). Raises ValueError for an
    event whose data is not a JSON object (nor ``[DONE]``): garbage must not pass for an answer."""
    lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    data = b"\n".join(lines)
    if not lines or data.strip() == b"[DONE]":
        return True, "", None, None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ValueError(f"data is not JSON: {scrub(data[:80].decode('utf-8', 'replace'))!r}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"data is JSON but not an object: {type(obj).__name__}")
    if "error" in obj:
        raise ValueError(f"the upstream sent an error event: {scrub(_event_error(obj))}")
    usage = _usage(obj)
    choices = obj.get("choices") or []
    if not isinstance(choices, list):
        raise ValueError("`choices` is not a list")
    text = ""
    finish = None
    for c in choices:
        if not isinstance(c, dict):
            continue
        if chat:
            delta = c.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            text += content if isinstance(content, str) else ""
        else:
            piece = c.get("text")
            text += piece if isinstance(piece, str) else ""
        finish = c.get("finish_reason") or finish
    keep = not (drop_usage_only and usage is not None and not choices)
    return keep, text, usage, finish


def _event_error(obj: dict[str, Any]) -> str:
    err = obj.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err)[:300]
    return str(err)[:300]


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
