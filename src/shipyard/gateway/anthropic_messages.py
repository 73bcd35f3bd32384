"""Anthropic's Messages API on the gateway: ``POST /v1/messages``.

The official ``anthropic`` client (and tools built on it) can call any Shipyard route. A request is
checked here (by hand, bounded like ``/v1/chat/completions``), translated into the gateway's
OpenAI-shaped chat body and run through the same pipeline as every other request (guards, plan,
limits, cache, attempts, trace); the answer (whole, or the stream event by event) is translated
back into Anthropic's shape. Errors use Anthropic's envelope ``{"type": "error", "error": {type,
message}}``. What has no counterpart in the gateway's chat body (images, documents, thinking,
server tools) is refused with a 400 that names the field.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from shipyard.errors import InvalidRequest, ShipyardError
from shipyard.gateway import validation
from shipyard.gateway.service import Gateway
from shipyard.tracing.spans import Trace

__all__ = ["messages_endpoint", "to_chat_body"]

JSON = "application/json"
MAX_TOOLS = 128  # OpenAI's limit on functions per request, so every upstream accepts them
MAX_STOP_SEQUENCES = 16
MAX_BLOCKS = 1024  # content blocks in one message

# Top-level request fields: translated, or accepted and ignored (documented in docs/anthropic.md).
_FIELDS = {
    "model", "messages", "system", "max_tokens", "temperature", "top_p", "top_k", "stop_sequences",
    "stream", "tools", "tool_choice", "metadata",
}  # fmt: skip
_IGNORED = {"service_tier"}  # a hint about Anthropic's capacity tiers; no meaning on a route
_UNSUPPORTED = {
    "thinking": "extended thinking",
    "mcp_servers": "MCP servers",
    "container": "code-execution containers",
    "context_management": "context management",
}
_UNSUPPORTED_BLOCKS = {
    "image": "images",
    "document": "documents",
    "thinking": "thinking blocks",
    "redacted_thinking": "thinking blocks",
    "server_tool_use": "server tools",
    "web_search_tool_result": "server tools",
    "search_result": "search results",
    "container_upload": "container uploads",
}

Caller = Callable[[Request, Any, str, Mapping[str, str] | None], Any]
ReadBody = Callable[[Request], Awaitable[bytes]]
TraceHeaders = Callable[[Trace], dict[str, str]]


# -- request: Anthropic → the gateway's chat body ---------------------------------------------------
def _bad(param: str, expected: str, value: Any) -> InvalidRequest:
    got = orjson.dumps(value, default=str).decode()
    got = got if len(got) <= 60 else got[:57] + "..."
    return InvalidRequest(f"`{param}` must be {expected}; got {got}", param=param)


def _unsupported(param: str, what: str) -> InvalidRequest:
    return InvalidRequest(
        f"`{param}`: {what} are not supported by Shipyard's /v1/messages (the gateway speaks OpenAI's "
        "chat shape to its providers); leave it out",
        param=param,
    )


def _text_blocks(value: Any, where: str) -> str:
    """A string, or text blocks joined: ``system`` and a tool result's content."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or len(value) > MAX_BLOCKS:
        raise _bad(where, f"a string or an array of at most {MAX_BLOCKS} text blocks", value)
    parts = []
    for i, block in enumerate(value):
        if (
            not isinstance(block, dict)
            or block.get("type") != "text"
            or not isinstance(block.get("text"), str)
        ):
            btype = block.get("type") if isinstance(block, dict) else None
            if isinstance(btype, str) and btype in _UNSUPPORTED_BLOCKS:
                raise _unsupported(f"{where}[{i}]", _UNSUPPORTED_BLOCKS[btype])
            raise _bad(f"{where}[{i}]", 'a text block {"type": "text", "text": "…"}', block)
        parts.append(block["text"])
    return "\n".join(parts)


def _message(m: Any, i: int, out: list[dict[str, Any]]) -> None:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise _bad(where, "an object with `role` and `content`", m)
    role = m.get("role")
    if role not in ("user", "assistant"):
        raise InvalidRequest(
            f"`{where}.role` must be `user` or `assistant` (the system prompt goes in `system`); got "
            f"{orjson.dumps(role, default=str).decode()[:40]}",
            param=f"{where}.role",
        )
    content = m.get("content")
    if isinstance(content, str):
        out.append({"role": role, "content": content})
        return
    if not isinstance(content, list) or len(content) > MAX_BLOCKS:
        raise _bad(
            f"{where}.content", f"a string or an array of at most {MAX_BLOCKS} content blocks", content
        )
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        bw = f"{where}.content[{j}]"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _bad(bw, "a content block object with a `type`", block)
        btype = block["type"]
        if btype == "text":
            if not isinstance(block.get("text"), str):
                raise _bad(f"{bw}.text", "a string", block.get("text"))
            texts.append(block["text"])
        elif btype == "tool_use" and role == "assistant":
            tid, name, args = block.get("id"), block.get("name"), block.get("input", {})
            if not isinstance(tid, str) or not tid:
                raise _bad(f"{bw}.id", "a non-empty string", tid)
            if not isinstance(name, str) or not name:
                raise _bad(f"{bw}.name", "a non-empty string", name)
            if not isinstance(args, dict):
                raise _bad(f"{bw}.input", "an object", args)
            tool_calls.append(
                {
                    "id": tid,
                    "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(args).decode()},
                }
            )
        elif btype == "tool_result" and role == "user":
            tid = block.get("tool_use_id")
            if not isinstance(tid, str) or not tid:
                raise _bad(f"{bw}.tool_use_id", "a non-empty string", tid)
            text = _text_blocks(block.get("content", ""), f"{bw}.content")
            if block.get("is_error") is True:
                text = "[tool error] " + text
            out.append({"role": "tool", "tool_call_id": tid, "content": text})
        elif btype in _UNSUPPORTED_BLOCKS:
            raise _unsupported(bw, _UNSUPPORTED_BLOCKS[btype])
        else:
            allowed = "text, tool_use" if role == "assistant" else "text, tool_result"
            raise InvalidRequest(
                f"`{bw}.type` `{btype[:40]}` is not a {role} content block Shipyard translates ({allowed})",
                param=f"{bw}.type",
            )
    if role == "assistant":
        msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
        if tool_calls:
            msg["tool_calls"] = tool_calls
        if texts or tool_calls:
            out.append(msg)
    elif texts:
        out.append({"role": "user", "content": "\n".join(texts)})


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise _bad("tools", f"an array of at most {MAX_TOOLS} tools", tools)
    out = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad(where, "a tool object with `name` and `input_schema`", tool)
        ttype = tool.get("type")
        if ttype not in (None, "custom"):
            raise _unsupported(
                f"{where}.type", f"server and client-defined Anthropic tools (`{str(ttype)[:40]}`)"
            )
        name, schema, desc = tool.get("name"), tool.get("input_schema"), tool.get("description")
        if not isinstance(name, str) or not name:
            raise _bad(f"{where}.name", "a non-empty string", name)
        if not isinstance(schema, dict):
            raise _bad(f"{where}.input_schema", "a JSON Schema object", schema)
        if desc is not None and not isinstance(desc, str):
            raise _bad(f"{where}.description", "a string", desc)
        fn: dict[str, Any] = {"name": name, "parameters": schema}
        if desc:
            fn["description"] = desc
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any, body: dict[str, Any]) -> None:
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _bad(
            "tool_choice", 'an object with `type` auto, any, tool or none, like {"type": "auto"}', choice
        )
    kind = choice["type"]
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("tool_choice.name", "the name of one of `tools`", name)
        body["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        body["parallel_tool_calls"] = False


def _number(body: dict[str, Any], name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi):
        raise _bad(name, f"a number between {lo:g} and {hi:g}", v)


def to_chat_body(req: dict[str, Any]) -> dict[str, Any]:
    """Check an Anthropic Messages request and translate it into the gateway's chat body. Raises
    InvalidRequest naming the field for anything malformed or untranslatable."""
    for key in req:
        if key in _UNSUPPORTED:
            raise _unsupported(key, _UNSUPPORTED[key])
        if key not in _FIELDS and key not in _IGNORED:
            raise InvalidRequest(f"`{key[:60]}`: unknown field of a Messages request", param=key[:60])
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "a non-empty string naming a route (GET /v1/models lists them)", model)
    max_tokens = req.get("max_tokens")
    if max_tokens is None:
        raise InvalidRequest("`max_tokens` is required: the most tokens to generate", param="max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _bad("max_tokens", "an integer >= 1", max_tokens)
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages", "a non-empty array of message objects", messages)
    chat: list[dict[str, Any]] = []
    if (system := req.get("system")) is not None:
        text = _text_blocks(system, "system")
        if text:
            chat.append({"role": "system", "content": text})
    for i, m in enumerate(messages):
        _message(m, i, chat)
    body: dict[str, Any] = {"model": model, "messages": chat, "max_tokens": max_tokens}
    _number(req, "temperature", 0, 1)
    _number(req, "top_p", 0, 1)
    for name in ("temperature", "top_p"):
        if req.get(name) is not None:
            body[name] = req[name]
    top_k = req.get("top_k")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise _bad("top_k", "an integer >= 0", top_k)
        body["top_k"] = top_k
    stops = req.get("stop_sequences")
    if stops is not None:
        if (
            not isinstance(stops, list)
            or len(stops) > MAX_STOP_SEQUENCES
            or not all(isinstance(s, str) and s for s in stops)
        ):
            raise _bad("stop_sequences", f"an array of at most {MAX_STOP_SEQUENCES} non-empty strings", stops)
        if stops:
            body["stop"] = stops
    stream = req.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "true or false", stream)
    if stream:
        # message_delta carries the output tokens: ask the pipeline for the usage chunk.
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    if (tools := req.get("tools")) is not None and (converted := _tools(tools)):
        body["tools"] = converted
    if (choice := req.get("tool_choice")) is not None:
        _tool_choice(choice, body)
    metadata = req.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _bad("metadata", 'an object like {"user_id": "…"}', metadata)
        user = metadata.get("user_id")
        if user is not None and not isinstance(user, str):
            raise _bad("metadata.user_id", "a string", user)
        if user:
            body["user"] = user  # the sticky-routing and fairness key, as OpenAI's `user`
    validation.validate_chat(body)  # the gateway's own checks, so nothing reaches it unchecked
    return body


# -- answer: the gateway's chat answer → Anthropic -------------------------------------------------
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def _stop(finish: Any, matched: Any, stops: list[str]) -> tuple[str, str | None]:
    """Anthropic's (stop_reason, stop_sequence) from OpenAI's finish reason; ``matched`` is the
    choice's ``stop_reason`` (vLLM and Shipyard's anthropic provider name the stop string there)."""
    if finish == "stop" and isinstance(matched, str) and matched in stops:
        return "stop_sequence", matched
    return _STOP_REASONS.get(finish if isinstance(finish, str) else "stop", "end_turn"), None


def _tool_input(arguments: Any) -> Any:
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {"arguments": arguments}  # a model's malformed JSON: kept, not lost
    return value if isinstance(value, dict) else {"value": value}


def _message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def to_message(data: dict[str, Any], model: str, stops: list[str]) -> dict[str, Any]:
    """An OpenAI chat completion as an Anthropic Message."""
    choices = data.get("choices")
    first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    msg = _obj(first.get("message"))
    content: list[dict[str, Any]] = []
    text = msg.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict):
            content.append(
                {
                    "type": "tool_use",
                    "id": str(call.get("id") or "toolu_" + uuid.uuid4().hex[:24]),
                    "name": str(fn.get("name") or ""),
                    "input": _tool_input(fn.get("arguments")),
                }
            )
    reason, sequence = _stop(first.get("finish_reason"), first.get("stop_reason"), stops)
    usage = _obj(data.get("usage"))
    return {
        "id": _message_id(),
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": data.get("model") if isinstance(data.get("model"), str) else model,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        },
    }


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class StreamTranslator:
    """OpenAI chat chunks (SSE bytes, in any slicing) in, Anthropic stream events out."""

    def __init__(self, model: str, stops: list[str]) -> None:
        self.model = model
        self.stops = stops
        self.buf = b""
        self.started = False
        self.pinged = False
        self.block: int | None = None  # index of the open content block
        self.block_kind = ""  # "text", or "tool:<openai index>"
        self.blocks = 0
        self.finish: Any = None
        self.matched: Any = None
        self.usage: dict[str, Any] = {}
        self.done = False

    def _start(self, model: Any) -> bytes:
        self.started = True
        message: dict[str, Any] = {
            "id": _message_id(),
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model if isinstance(model, str) and model else self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.block, self.block_kind = self.blocks, kind
        self.blocks += 1
        out += _event(
            "content_block_start",
            {"type": "content_block_start", "index": self.block, "content_block": block},
        )
        if not self.pinged:
            self.pinged = True
            out += _event("ping", {"type": "ping"})
        return out

    def _close(self) -> bytes:
        if self.block is None:
            return b""
        index, self.block = self.block, None
        return _event("content_block_stop", {"type": "content_block_stop", "index": index})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event(
            "content_block_delta", {"type": "content_block_delta", "index": self.block, "delta": delta}
        )

    def _chunk(self, obj: dict[str, Any]) -> bytes:
        out = b"" if self.started else self._start(obj.get("model"))
        if isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = _obj(choice.get("delta"))
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.block_kind != "text" or self.block is None:
                    out += self._open("text", {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": text})
            for call in delta.get("tool_calls") or []:
                if not isinstance(call, dict):
                    continue
                kind = f"tool:{call.get('index', 0)}"
                fn = _obj(call.get("function"))
                if self.block_kind != kind or self.block is None:
                    tool_id = call.get("id") or "toolu_" + uuid.uuid4().hex[:24]
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": tool_id,
                        "name": fn.get("name") or "",
                        "input": {},
                    }
                    out += self._open(kind, block)
                args = fn.get("arguments")
                if isinstance(args, str) and args:
                    out += self._delta({"type": "input_json_delta", "partial_json": args})
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
                self.matched = choice.get("stop_reason")
        return out

    def _error(self, obj: dict[str, Any]) -> bytes:
        err = _obj(obj.get("error"))
        status = {"rate_limit_error": 429, "authentication_error": 401, "permission_error": 403}.get(
            str(err.get("type")), 500
        )
        if str(err.get("code") or "").startswith("guard_blocked"):
            status = 400
        self.done = True
        return _event("error", anthropic_error(status, str(err.get("message") or "the stream failed")))

    def feed(self, data: bytes) -> bytes:
        if self.done:
            return b""
        self.buf += data.replace(b"\r\n", b"\n") if b"\r" in data else data
        out = b""
        while not self.done:
            end = self.buf.find(b"\n\n")
            if end < 0:
                break
            event, self.buf = self.buf[:end], self.buf[end + 2 :]
            lines = [ln[5:].removeprefix(b" ") for ln in event.split(b"\n") if ln.startswith(b"data:")]
            payload = b"\n".join(lines).strip()
            if not payload:
                continue
            if payload == b"[DONE]":
                out += self.finish_events()
                continue
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            out += self._error(obj) if "error" in obj else self._chunk(obj)
        return out

    def finish_events(self) -> bytes:
        """The closing events (once): the open block's stop, message_delta, message_stop."""
        if self.done:
            return b""
        self.done = True
        out = b"" if self.started else self._start(None)
        out += self._close()
        reason, sequence = _stop(self.finish, self.matched, self.stops)
        usage = {
            "input_tokens": int(self.usage.get("prompt_tokens") or 0),
            "output_tokens": int(self.usage.get("completion_tokens") or 0),
        }
        out += _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": usage,
            },
        )
        return out + _event("message_stop", {"type": "message_stop"})


async def _translated(stream: AsyncIterator[bytes], translator: StreamTranslator) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            out = translator.feed(chunk)
            if out:
                yield out
        out = translator.finish_events()
        if out:
            yield out
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()


# -- errors in Anthropic's shape -------------------------------------------------------------------
def error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 413:
        return "request_too_large"
    if status == 429:
        return "rate_limit_error"
    if status in (503, 529):
        return "overloaded_error"
    if status >= 500:
        return "api_error"
    return "invalid_request_error"


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def _error_response(exc: ShipyardError) -> Response:
    headers: dict[str, str] = {}
    if trace_id := exc.__dict__.get("shipyard_trace_id"):
        headers["x-shipyard-trace-id"] = trace_id
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["retry-after"] = str(int(retry_after + 0.999))
    body = anthropic_error(exc.status, str(exc))
    return Response(orjson.dumps(body), status_code=exc.status, media_type=JSON, headers=headers)


# -- the endpoint ----------------------------------------------------------------------------------
def _credentials(request: Request) -> Mapping[str, str] | None:
    """The anthropic client sends its key as ``x-api-key``; ``Authorization: Bearer`` wins when
    both are there."""
    if request.headers.get("authorization"):
        return None
    key = request.headers.get("x-api-key")
    return {"authorization": f"Bearer {key.strip()}"} if key and key.strip() else None


def messages_endpoint(
    gw: Gateway, caller: Caller, read_body: ReadBody, trace_headers: TraceHeaders
) -> Callable[[Request], Awaitable[Response]]:
    """The ``POST /v1/messages`` handler: ``caller`` checks the key against the route (the same
    rule as the OpenAI endpoints), ``read_body`` reads a bounded body, ``trace_headers`` are the
    x-shipyard-* headers of the answer."""

    async def messages(request: Request) -> Response:
        try:
            req = validation.parse_json(await read_body(request))
            model = req.get("model")
            principal = caller(request, model, "chat", _credentials(request))
            body = to_chat_body(req)
            stops = list(body.get("stop") or [])
            if body.get("stream"):
                stream, trace = await gw.open_stream("chat", body, request.headers, principal=principal)
                headers = trace_headers(trace)
                headers["cache-control"] = "no-cache"
                headers["x-accel-buffering"] = "no"
                translated = _translated(stream, StreamTranslator(body["model"], stops))
                return StreamingResponse(translated, media_type="text/event-stream", headers=headers)
            answer = await gw.complete("chat", body, request.headers, principal=principal)
            data = orjson.loads(answer.body)
            message = to_message(data if isinstance(data, dict) else {}, body["model"], stops)
            return Response(orjson.dumps(message), media_type=JSON, headers=trace_headers(answer.trace))
        except ShipyardError as exc:
            return _error_response(exc)

    return messages
