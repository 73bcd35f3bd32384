"""Mapping the stored spans of one OTel trace to a Shipyard trace, by the GenAI conventions.

:func:`summarize` (and :func:`trace_row_of`, the stored row) reads model, provider, tokens, cost,
user, status, error and messages from whichever GenAI convention the instrumentation used: the
current ``gen_ai.*`` attributes, the pre-1.27 token names, indexed ``gen_ai.prompt.N`` attributes,
or message events. Model calls are the GenAI spans with no GenAI span below them, so a gateway's or
an agent's span that totals its calls is not counted twice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from shipyard.content import text_parts
from shipyard.store.traces import TRACE_COLUMNS, trace_row
from shipyard.tracing import semconv as sc
from shipyard.tracing.otlp.attributes import (
    CHOICE_EVENT,
    COMPLETION_EVENT,
    EVENTS_ATTR,
    HTTP_STATUS_ATTRS,
    INPUT_MESSAGES,
    LEGACY_COMPLETION,
    LEGACY_PROMPT,
    MESSAGE_EVENTS,
    OUTPUT_MESSAGES,
    PROMPT_EVENT,
    STATUS_CODE_ATTR,
    STATUS_DESCRIPTION_ATTR,
    SYSTEM_INSTRUCTIONS,
    USAGE_COMPLETION_TOKENS,
    USAGE_PROMPT_TOKENS,
    USER_ATTRS,
)
from shipyard.tracing.otlp.decode import safe_text
from shipyard.tracing.spans import Span, Trace

if TYPE_CHECKING:
    from shipyard.config.schema import Pricing
    from shipyard.prices import Price

# Column widths of the traces table (Postgres enforces them).
_MAX_OPERATION = 32
_MAX_MODEL = 256
_MAX_PROVIDER = 128
_MAX_USER = 256
# The store's integer columns are 32-bit.
_MAX_INT = 2**31 - 1

_INDEXED = re.compile(r"^gen_ai\.(prompt|completion)\.(\d+)\.(\w+)$")

# A model's price by its name and the provider the span names (gen_ai.provider.name / gen_ai.system).
PriceLookup = Callable[[str, str | None], "Pricing | Price | None"]


def summarize(trace_id: str, spans: list[Span], price: PriceLookup | None = None) -> Trace:
    """The trace for all (known so far) spans of one OTel trace. ``status_code`` is the HTTP status
    on the root span when the application recorded one, else 200 (ok) or 500 (error)."""
    return _summarize(trace_id, spans, price)[0]


def trace_row_of(
    trace_id: str,
    spans: list[Span],
    price: PriceLookup | None = None,
    capture: str = "full",
    max_chars: int = 2000,
) -> tuple[Any, ...]:
    """The stored row: like :func:`summarize`, but ``status_code`` stays empty when no span says it."""
    trace, http_status = _summarize(trace_id, spans, price)
    row = list(trace_row(trace, capture, max_chars))
    row[_STATUS_CODE] = http_status
    return tuple(row)


_STATUS_CODE = TRACE_COLUMNS.index("status_code")


def _summarize(trace_id: str, spans: list[Span], price: PriceLookup | None) -> tuple[Trace, int | None]:
    ordered = sorted(spans, key=lambda s: (s.start, s.end))
    by_id = {s.span_id: s for s in ordered}
    roots = [s for s in ordered if s.parent_id is None]
    orphans = [s for s in ordered if s.parent_id is not None and s.parent_id not in by_id]
    root = (roots or orphans or ordered)[0]
    genai = [s for s in ordered if _is_genai(s.attributes)]

    t = Trace(operation="", trace_id=trace_id, source="otlp")
    t.start = ordered[0].start
    t.end = max(s.end for s in ordered)
    # Model calls: GenAI spans with a model and no GenAI span below them (a gateway's root span
    # names the route it was asked for; its attempt spans are the calls).
    genai_parents = {s.parent_id for s in genai}
    t.attempts = sum(1 for s in genai if s.span_id not in genai_parents and _model_of(s.attributes))
    ra = root.attributes
    t.operation = str(_first(s.attributes.get(sc.OPERATION_NAME) for s in [root, *genai]) or root.name)[
        :_MAX_OPERATION
    ]
    model_span = next((s for s in genai if s.attributes.get(sc.RESPONSE_MODEL)), None) or next(
        (s for s in genai if s.attributes.get(sc.REQUEST_MODEL)), None
    )
    if model_span is not None:
        t.model = _str(_model_of(model_span.attributes), _MAX_MODEL)
    t.provider = _str(
        _first(
            s.attributes.get(sc.PROVIDER_NAME) or s.attributes.get(sc.SYSTEM)
            for s in ([model_span] if model_span else []) + genai
        ),
        _MAX_PROVIDER,
    )
    t.user_id = _str(_first(s.attributes.get(k) for s in [root, *ordered] for k in USER_ATTRS), _MAX_USER)
    _usage_and_cost(t, ordered, by_id, price)
    http_status = _status(t, root, ordered)
    _messages(t, genai)
    ttft = ra.get(sc.TTFT_MS)
    if isinstance(ttft, int | float) and not isinstance(ttft, bool) and 0 <= ttft < 1e9:
        t.ttft_ms = float(ttft)
    t.route = _str(ra.get(sc.ROUTE), 128)
    t.target = _str(_first(s.attributes.get(sc.TARGET) for s in genai if s.status == "ok"), 128)
    t.stream = ra.get(sc.STREAM) is True
    t.attributes = {k: v for k, v in ra.items() if _is_resource_key(k)}
    if "service.name" not in t.attributes:
        service = _first(s.attributes.get("service.name") for s in ordered)
        if service is not None:
            t.attributes["service.name"] = service
    return t, http_status


def _first(values: Iterable[Any]) -> Any:
    for v in values:
        if v is not None and v != "":
            return v
    return None


def _str(value: Any, limit: int) -> str | None:
    return None if value is None else str(value)[:limit]


def _is_resource_key(key: str) -> bool:
    return key.startswith(("service.", "deployment.", "telemetry.sdk.", "host.", "process.runtime."))


def _is_genai(attrs: Mapping[str, Any]) -> bool:
    return any(
        k in attrs
        for k in (
            sc.OPERATION_NAME,
            sc.REQUEST_MODEL,
            sc.RESPONSE_MODEL,
            sc.SYSTEM,
            sc.PROVIDER_NAME,
            sc.USAGE_INPUT_TOKENS,
            sc.USAGE_OUTPUT_TOKENS,
            USAGE_PROMPT_TOKENS,
            USAGE_COMPLETION_TOKENS,
        )
    )


def _model_of(attrs: Mapping[str, Any]) -> Any:
    return attrs.get(sc.RESPONSE_MODEL) or attrs.get(sc.REQUEST_MODEL)


def _int(value: Any) -> int | None:
    """A count that fits the store's integer columns, or None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        n = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return n if 0 <= n <= _MAX_INT else None


def _usage(attrs: Mapping[str, Any]) -> tuple[int | None, int | None]:
    inp = _int(attrs.get(sc.USAGE_INPUT_TOKENS))
    if inp is None:
        inp = _int(attrs.get(USAGE_PROMPT_TOKENS))
    out = _int(attrs.get(sc.USAGE_OUTPUT_TOKENS))
    if out is None:
        out = _int(attrs.get(USAGE_COMPLETION_TOKENS))
    return inp, out


def _sum(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _usage_and_cost(t: Trace, ordered: list[Span], by_id: dict[str, Span], price: PriceLookup | None) -> None:
    """Tokens summed over the spans that report usage; a span whose descendants report usage too
    (an agent span totalling its model calls) is left out so nothing is counted twice."""
    usage = {s.span_id: _usage(s.attributes) for s in ordered}
    usage = {k: v for k, v in usage.items() if v != (None, None)}
    covered: set[str] = set()
    for span_id in usage:
        parent = by_id[span_id].parent_id
        seen = 0
        while parent is not None and parent in by_id and seen < len(by_id):
            covered.add(parent)
            parent = by_id[parent].parent_id
            seen += 1
    leaves = [s for s in ordered if s.span_id in usage and s.span_id not in covered]
    t.input_tokens = _sum(usage[s.span_id][0] for s in leaves)
    t.output_tokens = _sum(usage[s.span_id][1] for s in leaves)
    # A Shipyard gateway exporting its traces states the cost it computed; otherwise price each
    # model call with the registry's pricing for that model.
    stated = _first(s.attributes.get(sc.COST_USD) for s in ordered if s.parent_id is None)
    if isinstance(stated, int | float) and not isinstance(stated, bool) and math.isfinite(stated):
        t.cost_usd = float(stated)
        return
    if price is None:
        return
    cost: float | None = None
    for s in leaves:
        pricing = None
        system = _first(s.attributes.get(k) for k in (sc.PROVIDER_NAME, sc.SYSTEM))
        system = system if isinstance(system, str) and system else None
        for name in (s.attributes.get(sc.RESPONSE_MODEL), s.attributes.get(sc.REQUEST_MODEL)):
            if isinstance(name, str) and name:
                pricing = price(name, system)
                if pricing is not None:
                    break
        if pricing is not None:
            inp, out = usage[s.span_id]
            cost = (cost or 0.0) + pricing.cost(inp or 0, out or 0)
    t.cost_usd = cost


def _status(t: Trace, root: Span, ordered: list[Span]) -> int | None:
    """Error when any span failed, unless the root span was explicitly marked OK: instrumentations
    never set OK (the spec reserves it for the application), so an OK root means a failure below
    it was handled, e.g. a gateway attempt that a fallback recovered."""
    code = _int(_first(root.attributes.get(k) for k in HTTP_STATUS_ATTRS))
    if code is not None and not 100 <= code <= 599:
        code = None
    if code is not None:
        t.status_code = code
    errors = [s for s in ordered if s.status == "error"]
    if not errors or (root.status == "ok" and root.attributes.get(STATUS_CODE_ATTR) == "OK"):
        return code
    t.status = "error"
    failed = root if root.status == "error" else errors[0]
    t.error = _error_message(failed)[:2000]
    if code is None:
        t.status_code = 500
    return code


def _error_message(s: Span) -> str:
    a = s.attributes
    for e in a.get(EVENTS_ATTR) or ():
        if e.get("name") == "exception":
            ea = e.get("attributes") or {}
            kind, msg = ea.get("exception.type"), ea.get("exception.message")
            if msg or kind:
                detail = f"{kind}: {msg}" if kind and msg else str(msg or kind)
                if a.get(STATUS_DESCRIPTION_ATTR) and a[STATUS_DESCRIPTION_ATTR] not in detail:
                    return f"{a[STATUS_DESCRIPTION_ATTR]} ({detail})"
                return detail
    text = a.get(STATUS_DESCRIPTION_ATTR) or a.get("error.message") or a.get(sc.ERROR_TYPE)
    return f"span `{s.name}`: {text}" if text else f"span `{s.name}` failed"


# -- prompts and completions ------------------------------------------------------------------------


def _messages(t: Trace, genai: list[Span]) -> None:
    """Input: the messages of the first model call; output: the answer of the last one."""
    for s in genai:
        msgs = input_messages(s.attributes)
        if msgs:
            t.input = _clean(msgs)
            break
    for s in sorted(genai, key=lambda s: s.end, reverse=True):
        text = output_text(s.attributes)
        if text is not None:
            t.output = safe_text(text)
            break


def _clean(value: Any) -> Any:
    """``_text`` all through decoded JSON (message contents may carry \\u0000 escapes)."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {safe_text(str(k)): _clean(v) for k, v in value.items()}
    return value


def _loads(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _parts_text(parts: Any) -> str | None:
    """Text of a message's ``parts`` (semconv GenAI message schema): the text parts joined."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        return None
    texts = [
        str(p.get("content"))
        for p in parts
        if isinstance(p, dict) and p.get("type", "text") == "text" and p.get("content") is not None
    ]
    return "".join(texts) if texts else None


def _message(role: Any, raw: Mapping[str, Any]) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": str(role or raw.get("role") or "user")}
    content = raw.get("content")
    if "parts" in raw:
        content = _parts_text(raw["parts"])
        if any(isinstance(p, dict) and p.get("type", "text") != "text" for p in raw["parts"] or []):
            msg["parts"] = raw["parts"]
    msg["content"] = _content_text(content)
    for extra in ("tool_calls", "tool_call_id", "name"):
        if raw.get(extra) is not None:
            msg[extra] = raw[extra]
    return msg


def _content_text(content: Any) -> Any:
    """Content parts with text become that text; anything else is kept as sent, for display."""
    texts = text_parts(content) if isinstance(content, list) else []
    return "".join(texts) if texts else content


def input_messages(attrs: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The prompt messages a GenAI span carries, in whichever convention it used."""
    msgs: list[dict[str, Any]] = []
    system = _loads(attrs.get(SYSTEM_INSTRUCTIONS))
    if system is not None:
        text = _parts_text(system) if isinstance(system, list) else str(system)
        if text:
            msgs.append({"role": "system", "content": text})
    structured = _loads(attrs.get(INPUT_MESSAGES))
    if isinstance(structured, list) and structured:
        msgs.extend(_message(None, m) for m in structured if isinstance(m, dict))
        return msgs
    indexed = _indexed(attrs, "prompt")
    if indexed:
        msgs.extend(_message(m.get("role"), m) for m in indexed)
        return msgs
    for e in attrs.get(EVENTS_ATTR) or ():
        name, ea = e.get("name"), e.get("attributes") or {}
        if name in MESSAGE_EVENTS:
            msgs.append(_message(ea.get("gen_ai.message.role") or MESSAGE_EVENTS[name], _event_body(ea)))
        elif name == PROMPT_EVENT and ea.get(LEGACY_PROMPT) is not None:
            value = _loads(ea[LEGACY_PROMPT])
            if isinstance(value, list):
                msgs.extend(_message(None, m) for m in value if isinstance(m, dict))
            else:
                msgs.append({"role": "user", "content": str(value)})
    return msgs or None


def output_text(attrs: Mapping[str, Any]) -> str | None:
    """The answer text a GenAI span carries (first choice), in whichever convention it used."""
    structured = _loads(attrs.get(OUTPUT_MESSAGES))
    if isinstance(structured, list) and structured:
        first = structured[0]
        if isinstance(first, dict):
            text = _parts_text(first.get("parts")) if "parts" in first else first.get("content")
            if text is not None:
                return str(_content_text(text))
    indexed = _indexed(attrs, "completion")
    if indexed and indexed[0].get("content") is not None:
        return str(indexed[0]["content"])
    for e in attrs.get(EVENTS_ATTR) or ():
        name, ea = e.get("name"), e.get("attributes") or {}
        if name == CHOICE_EVENT and _int(ea.get("index")) in (None, 0):
            content = _event_body(ea).get("content")
            if content is not None:
                return str(_content_text(content))
        elif name == COMPLETION_EVENT and ea.get(LEGACY_COMPLETION) is not None:
            value = _loads(ea[LEGACY_COMPLETION])
            if isinstance(value, list) and value and isinstance(value[0], dict):
                return str(_content_text(value[0].get("content")))
            return str(value)
    return None


def _event_body(ea: Mapping[str, Any]) -> dict[str, Any]:
    """A message event's fields: ``content`` as an attribute, or a ``message`` map (or JSON)."""
    message = _loads(ea.get("message"))
    if isinstance(message, dict):
        return {**ea, **message}
    body = _loads(ea.get("body"))
    if isinstance(body, dict):
        return {**ea, **body.get("message", body)}
    return dict(ea)


def _indexed(attrs: Mapping[str, Any], kind: str) -> list[dict[str, Any]]:
    """``gen_ai.prompt.0.role``/``gen_ai.prompt.0.content``… as a list ordered by index."""
    found: dict[int, dict[str, Any]] = {}
    prefix = f"gen_ai.{kind}."
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        m = _INDEXED.match(key)
        if m:
            found.setdefault(int(m.group(2)), {})[m.group(3)] = value
    return [found[i] for i in sorted(found)]
