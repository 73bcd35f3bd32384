"""Anthropic's Messages API as a provider (type ``anthropic``): routes can target Claude models
while clients keep speaking OpenAI to the gateway.

The gateway hands a provider an OpenAI-shaped chat body; this adapter translates it into a
Messages request (system messages → ``system``, tool calls and results → ``tool_use`` and
``tool_result`` blocks, ``max_tokens`` defaulted when the client sent none, since Anthropic
requires it), and translates the answer back: a chat completion, or Anthropic's stream events as
OpenAI chunks as they arrive. 429 and 529 (overloaded) are retryable with ``Retry-After`` kept;
other 4xx go back to the client with Anthropic's message. The key is a secret: it is sent as
``x-api-key`` and never appears in errors, logs or traces.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from pydantic import Field, SecretStr

from shipyard import __version__
from shipyard.errors import (
    InvalidRequest,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    upstream_status_error,
)
from shipyard.plugins import hookimpl
from shipyard.providers.base import (
    SSE_DONE,
    BaseProvider,
    Call,
    Completion,
    Health,
    ProviderOptions,
    ProviderType,
    StreamChunk,
    Usage,
    chat_chunk,
    chat_usage_chunk,
    new_id,
    now,
    wants_usage,
)
from shipyard.redact import scrub, strip_userinfo
from shipyard.retries import parse_retry_after


class AnthropicOptions(ProviderOptions):
    base_url: str = Field("https://api.anthropic.com", description="Base URL, without `/v1`.")
    api_key: SecretStr | None = Field(None, description="Sent as `x-api-key`; use `${ANTHROPIC_API_KEY}`.")
    anthropic_version: str = Field("2023-06-01", description="The `anthropic-version` header.")
    default_max_tokens: int = Field(
        4096, ge=1, description="`max_tokens` when the client sends none (Anthropic requires one)."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers sent upstream (e.g. `anthropic-beta`)."
    )
    max_connections: int = Field(512, ge=1, description="Size of the connection pool.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to establish a connection.")
    verify_tls: bool = Field(True, description="Check the upstream's TLS certificate.")


# OpenAI request fields with no Messages counterpart that change the answer: refused, not dropped.
_REFUSED = {
    "logprobs": "log probabilities",
    "top_logprobs": "log probabilities",
    "logit_bias": "logit bias",
    "audio": "audio output",
    "prediction": "predicted outputs",
}
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _refuse(provider: str, param: str, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"provider `{provider}` (anthropic) does not support {what}: leave out `{param}`", param=param
    )


def _text(content: Any) -> str:
    """An OpenAI message's content as text (a string, or text parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _user_blocks(content: Any, provider: str, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for j, part in enumerate(content if isinstance(content, list) else []):
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
        else:
            raise _refuse(provider, f"{where}.content[{j}]", f"`{str(part.get('type'))[:30]}` content parts")
    return blocks


def to_messages_body(
    body: dict[str, Any], model: str, options: AnthropicOptions, provider: str
) -> dict[str, Any]:
    """An OpenAI chat body as a Messages request body."""
    for key, what in _REFUSED.items():
        if body.get(key):
            raise _refuse(provider, key, what)
    if isinstance(body.get("n"), int) and body["n"] > 1:
        raise _refuse(provider, "n", "several choices per request")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        raise _refuse(provider, "response_format", "`response_format` (JSON mode)")
    system: list[str] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        # Anthropic wants one message per turn: results of parallel tool calls go in one user message.
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        elif blocks:
            messages.append({"role": role, "content": blocks})

    for i, m in enumerate(body.get("messages") or []):
        role, content = m.get("role"), m.get("content")
        if role in ("system", "developer"):
            if text := _text(content):
                system.append(text)
        elif role == "user":
            add("user", _user_blocks(content, provider, f"messages[{i}]"))
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            if text := _text(content):
                blocks.append({"type": "text", "text": text})
            for call in m.get("tool_calls") or []:
                fn = call.get("function") or {}
                try:
                    args = orjson.loads(fn.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    raise InvalidRequest(
                        f"`messages[{i}].tool_calls` has arguments that are not JSON", param=f"messages[{i}]"
                    ) from None
                blocks.append(
                    {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args or {}}
                )
            add("assistant", blocks)
        elif role == "tool":
            result = {"type": "tool_result", "tool_use_id": m.get("tool_call_id"), "content": _text(content)}
            add("user", [result])
        else:
            raise _refuse(provider, f"messages[{i}].role", f"role `{str(role)[:20]}`")
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens")
        or body.get("max_tokens")
        or options.default_max_tokens,
    }
    if system:
        out["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = [
        t.get("function")
        for t in body.get("tools") or []
        if isinstance(t, dict) and t.get("type") == "function"
    ]
    if tools:
        out["tools"] = [
            {
                "name": fn.get("name"),
                **({"description": fn["description"]} if fn.get("description") else {}),
                "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
            }
            for fn in tools
            if isinstance(fn, dict)
        ]
    choice = body.get("tool_choice")
    anthropic_choice: dict[str, Any] | None = None
    if choice == "auto":
        anthropic_choice = {"type": "auto"}
    elif choice == "required":
        anthropic_choice = {"type": "any"}
    elif choice == "none":
        anthropic_choice = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        anthropic_choice = {"type": "tool", "name": choice["function"].get("name")}
    if body.get("parallel_tool_calls") is False and tools:
        anthropic_choice = anthropic_choice or {"type": "auto"}
        if anthropic_choice["type"] != "none":
            anthropic_choice["disable_parallel_tool_use"] = True
    if anthropic_choice is not None and tools:
        out["tool_choice"] = anthropic_choice
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    return out


def _usage(u: Any) -> Usage:
    if not isinstance(u, dict):
        return Usage()
    # Cached prompt tokens are prompt tokens too (Anthropic counts them apart from input_tokens).
    cached = int(u.get("cache_read_input_tokens") or 0) + int(u.get("cache_creation_input_tokens") or 0)
    return Usage(int(u.get("input_tokens") or 0) + cached, int(u.get("output_tokens") or 0))


def to_chat_completion(data: dict[str, Any], model: str) -> tuple[dict[str, Any], str, Usage, str]:
    """A Message as an OpenAI chat completion: (body, text, usage, finish reason)."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in data.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    text = "".join(texts)
    finish = _FINISH.get(str(data.get("stop_reason")), "stop")
    usage = _usage(data.get("usage"))
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    choice: dict[str, Any] = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    if data.get("stop_reason") == "stop_sequence" and data.get("stop_sequence"):
        choice["stop_reason"] = data["stop_sequence"]  # the matched stop string, as vLLM names it
    body = {
        "id": "chatcmpl-" + str(data.get("id") or new_id("msg")),
        "object": "chat.completion",
        "created": now(),
        "model": data.get("model") or model,
        "choices": [choice],
        "usage": usage.to_openai(),
    }
    return body, text or (orjson.dumps(tool_calls).decode() if tool_calls else ""), usage, finish


class AnthropicProvider(BaseProvider):
    kind = "anthropic"
    enforces_timeout = True  # aiohttp's total / sock_read timeouts

    def __init__(self, name: str, options: AnthropicOptions) -> None:
        super().__init__(name)
        self.options = options
        base = options.base_url.rstrip("/")
        self.base_url = base  # what the price catalogue recognises the provider by
        self.url = base + "/v1/messages"
        self.shown_url = strip_userinfo(base)
        headers = {
            "User-Agent": f"shipyard/{__version__}",
            "Content-Type": "application/json",
            "anthropic-version": options.anthropic_version,
        }
        headers.update(options.headers)
        if options.api_key is not None and options.api_key.get_secret_value():
            headers["x-api-key"] = options.api_key.get_secret_value()
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.options.max_connections, ttl_dns_cache=300, ssl=self.options.verify_tls
            )
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ProviderUnavailable(f"provider `{self.name}` is not started")
        return self._session

    def _failure(self, exc: BaseException, call: Call) -> ProviderError:
        if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
            return ProviderTimeout(
                f"provider `{self.name}` model `{call.model}` timed out after {call.timeout:g}s"
            )
        if isinstance(exc, aiohttp.ClientConnectionError | OSError):
            return ProviderUnavailable(
                f"provider `{self.name}` at {self.shown_url} is unreachable: {type(exc).__name__}"
            )
        return ProviderError(f"provider `{self.name}` failed: {type(exc).__name__}: {exc}")

    def _status_error(self, status: int, raw: bytes, headers: Any, call: Call) -> ProviderError:
        err = upstream_status_error(status, raw, f"{self.name}/{call.model}")
        err.retry_after = parse_retry_after(headers.get("Retry-After"))
        return err

    def _malformed(self, call: Call, what: str) -> ProviderError:
        return ProviderError(
            f"provider `{self.name}` model `{call.model}` answered with {scrub(what)}; the upstream is not "
            "speaking Anthropic's Messages API",
            code="upstream_malformed",
        )

    async def chat(self, call: Call) -> Completion:
        payload = to_messages_body(call.body, call.model, self.options, self.name)
        timeout = aiohttp.ClientTimeout(total=call.timeout, sock_connect=self.options.connect_timeout)
        try:
            async with self.session.post(
                self.url, data=orjson.dumps(payload), timeout=timeout, headers=call.extra_headers or None
            ) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise self._status_error(resp.status, raw, resp.headers, call)
        except ProviderError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._failure(exc, call) from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or data.get("type") != "message":
            raise self._malformed(call, f"HTTP 200 and no message: {raw[:200].decode('utf-8', 'replace')!r}")
        body, text, usage, finish = to_chat_completion(data, call.model)
        return Completion(body=body, usage=usage, text=text, model=body["model"], finish_reason=finish)

    async def stream_chat(self, call: Call) -> AsyncIterator[StreamChunk]:
        payload = to_messages_body(call.body, call.model, self.options, self.name)
        payload["stream"] = True
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.options.connect_timeout, sock_read=call.timeout
        )
        state = _StreamState(call.model, wants_usage(call.body))
        try:
            async with self.session.post(
                self.url, data=orjson.dumps(payload), timeout=timeout, headers=call.extra_headers or None
            ) as resp:
                if resp.status >= 400:
                    raise self._status_error(resp.status, await resp.read(), resp.headers, call)
                buf = b""
                async for piece in resp.content.iter_any():
                    buf += piece
                    if b"\r\n" in buf:
                        buf = buf.replace(b"\r\n", b"\n")
                    while (end := buf.find(b"\n\n")) >= 0:
                        event, buf = buf[:end], buf[end + 2 :]
                        chunk = state.event(event, self, call)
                        if chunk is not None:
                            yield chunk
                        if state.stopped:
                            return
                if buf.strip() and (chunk := state.event(buf, self, call)) is not None:
                    yield chunk
                if not state.stopped:
                    raise ProviderError(
                        f"provider `{self.name}` model `{call.model}` ended its stream before `message_stop`"
                    )
        except ProviderError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._failure(exc, call) from None

    async def health(self) -> Health:
        # Anthropic has no free health endpoint; a reachable host answering anything is healthy.
        try:
            async with self.session.get(self.url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                await resp.read()
                return Health(resp.status < 500, f"GET /v1/messages → {resp.status}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Health(False, scrub(f"{type(exc).__name__}: {exc}"))


class _StreamState:
    """Anthropic stream events → OpenAI chat chunks, one event at a time."""

    def __init__(self, model: str, client_wants_usage: bool) -> None:
        self.cid = new_id("chatcmpl")
        self.created = now()
        self.model = model
        self.wants_usage = client_wants_usage
        self.input_tokens = 0
        self.output_tokens = 0
        self.finish: str | None = None
        self.stop_sequence: str | None = None
        self.tools: dict[int, int] = {}  # Anthropic block index → OpenAI tool call index
        self.stopped = False
        self.first = True

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if self.first:
            self.first = False
            delta = {"role": "assistant", **delta}
        return chat_chunk(self.cid, self.created, self.model, delta, finish)

    def event(self, raw: bytes, provider: AnthropicProvider, call: Call) -> StreamChunk | None:
        lines = [ln[5:].removeprefix(b" ") for ln in raw.split(b"\n") if ln.startswith(b"data:")]
        if not lines:
            return None
        try:
            obj = orjson.loads(b"\n".join(lines))
        except orjson.JSONDecodeError:
            raise provider._malformed(call, "a stream event that is not JSON") from None
        if not isinstance(obj, dict):
            raise provider._malformed(call, "a stream event that is not a JSON object")
        kind = obj.get("type")
        if kind == "message_start":
            msg = obj.get("message") or {}
            self.model = msg.get("model") or self.model
            usage = _usage(msg.get("usage"))
            self.input_tokens, self.output_tokens = usage.input_tokens, usage.output_tokens
            return StreamChunk(self._chunk({"content": ""}))
        if kind == "content_block_start":
            block = obj.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self.tools.setdefault(int(obj.get("index") or 0), len(self.tools))
                call_delta = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return StreamChunk(self._chunk({"tool_calls": [call_delta]}))
            if block.get("type") == "text" and block.get("text"):
                text = str(block["text"])
                return StreamChunk(self._chunk({"content": text}), text=text)
            return None
        if kind == "content_block_delta":
            delta = obj.get("delta") or {}
            if delta.get("type") == "text_delta":
                text = str(delta.get("text") or "")
                return StreamChunk(self._chunk({"content": text}), text=text) if text else None
            if delta.get("type") == "input_json_delta":
                tool = self.tools.get(int(obj.get("index") or 0))
                part = str(delta.get("partial_json") or "")
                if tool is None or not part:
                    return None
                args = {"tool_calls": [{"index": tool, "function": {"arguments": part}}]}
                return StreamChunk(self._chunk(args))
            return None  # thinking and signature deltas have no OpenAI counterpart
        if kind == "message_delta":
            delta = obj.get("delta") or {}
            if delta.get("stop_reason"):
                self.finish = _FINISH.get(str(delta["stop_reason"]), "stop")
                self.stop_sequence = delta.get("stop_sequence")
            counts = obj.get("usage") or {}
            if counts.get("output_tokens") is not None:
                self.output_tokens = int(counts["output_tokens"])
            if counts.get("input_tokens") is not None:
                self.input_tokens = _usage(counts).input_tokens
            return None
        if kind == "message_stop":
            self.stopped = True
            usage = Usage(self.input_tokens, self.output_tokens)
            finish = self.finish or "stop"
            choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}
            if self.stop_sequence:
                choice["stop_reason"] = self.stop_sequence
            data = (
                b"data: "
                + orjson.dumps(
                    {
                        "id": self.cid,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [choice],
                    }
                )
                + b"\n\n"
            )
            if self.wants_usage:
                data += chat_usage_chunk(self.cid, self.created, self.model, usage)
            return StreamChunk(data + SSE_DONE, usage=usage, finish_reason=finish)
        if kind == "error":
            err = obj.get("error") or {}
            etype = str(err.get("type") or "")
            message = scrub(str(err.get("message") or etype)[:300])
            status = {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500}.get(etype, 400)
            raise ProviderError(
                f"target `{provider.name}/{call.model}` sent a stream error ({etype}): {message}",
                status=502 if status >= 500 else status,
                retryable=status >= 500 or status == 429,
                upstream_status=status,
            )
        return None  # ping, and event types added later


@hookimpl
def register_providers() -> list[ProviderType]:
    return [
        ProviderType(
            "anthropic",
            AnthropicOptions,
            AnthropicProvider,
            "Anthropic's Messages API (Claude models), translated to and from OpenAI's chat shape.",
        )
    ]
