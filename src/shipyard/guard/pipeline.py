"""The guard pipeline of one route: input scanners before the provider call, output scanners after.

Built once per route when the gateway's runtime is built (``GuardPipeline.build``); routes without
``guards:`` have no pipeline and pay nothing. For a guarded request the gateway calls

1. ``check_input`` on the client's body: every message (and prompt-template ``variables``) is
   scanned; a ``block`` finding raises :class:`GuardBlocked` (400, ``guard_blocked``), ``redact``
   findings are replaced — PII by numbered placeholders (``<EMAIL_1>``) remembered in the request's
   :class:`GuardState` so the answer can get the original values back (``restore_pii``);
2. ``prepare_call`` on each attempt's provider body: plants the canary token in the system prompt
   and remembers the system prompt and promised JSON schema for the output scanners;
3. ``check_output`` on a finished answer, or ``stream`` around a streamed one
   (:mod:`shipyard.guard.stream`): a ``block`` finding raises :class:`OutputBlocked` (422,
   ``guard_blocked_output``), ``redact`` findings are replaced, placeholders are restored.

Findings go on the trace as ``attributes["guard.findings"]`` (scanner, kind, score, span, action,
stage, where — never the matched text) and each stage gets a ``guard`` span with ``guard.action``
(the strongest action taken: block > redact > flag > pass) and ``guard.scanners``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ValidationError

from shipyard.content import content_text
from shipyard.errors import ConfigError, InvalidRequest, ShipyardError
from shipyard.guard.base import Finding, ScanContext, Scanner, ScannerType, Stage, splice

if TYPE_CHECKING:
    from shipyard.config.schema import GuardsConfig
    from shipyard.providers.base import Call, Completion, StreamChunk
    from shipyard.tracing.spans import Span, Trace

log = logging.getLogger("shipyard.guard")

FINDINGS_ATTR = "guard.findings"
CHARS_PER_TOKEN = 4  # the stream window is configured in tokens and held in characters
_RANK = {"pass": 0, "flag": 1, "redact": 2, "block": 3}
# What a blocked client can do about it, by scanner type (the message names the scanner too).
_INPUT_HINTS = {
    "injection": 'remove instructions aimed at the model ("ignore previous instructions", role-play '
    "overrides, encoded commands) from the messages and documents you send",
    "pii": "remove the personal data from the request",
    "secrets": "remove the credential from the request, and rotate it: it has left your machine",
    "banned": "this route does not accept this content; rephrase the request without it",
    "token_limit": "shorten the request",
    "toxicity": "rephrase the request without insults, profanity or threats",
    "urls": "remove the link, or use a domain the route allows",
}
_OUTPUT_HINTS = {
    "canary": "the model revealed its hidden instructions; rephrase the request without asking for them",
    "system_leak": "the model repeated its system prompt; rephrase the request without asking for it",
    "json_schema": "the model's answer did not match the promised JSON schema; retrying may succeed",
    "toxicity": "the model's answer contained toxic language; rephrase the request",
}


class GuardBlocked(InvalidRequest):
    """A request refused by an input scanner (400, so OpenAI clients raise BadRequestError)."""

    code = "guard_blocked"


class OutputBlocked(ShipyardError):
    """An answer refused by an output scanner. 422: the request was well formed but the answer it
    produced breaks the route's policy; a 4xx, so clients do not retry it automatically."""

    status = 422
    type = "invalid_request_error"
    code = "guard_blocked_output"


class GuardFailed(ShipyardError):
    """A scanner raised: the request fails closed rather than passing unchecked."""

    status = 500
    code = "guard_error"


@dataclass(slots=True)
class Configured:
    """One scanner as configured on a route."""

    name: str
    type: str
    scanner: Scanner
    options: BaseModel
    whole_request: bool = False  # scans every message joined (token_limit)
    whole_text: bool = False  # needs the whole answer (json_schema, system_leak): end of stream
    plants_canary: bool = False


@dataclass(slots=True)
class GuardState:
    """What one request's guards remember between input and output."""

    restore: dict[str, str] = field(default_factory=dict)  # placeholder -> original value
    by_value: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, value) -> placeholder
    counts: dict[str, int] = field(default_factory=dict)
    canary: str | None = None
    canary_line: str | None = None
    system_prompt: str | None = None
    response_schema: dict[str, Any] | None = None

    def placeholder(self, kind: str, value: str) -> str:
        key = (kind, value)
        found = self.by_value.get(key)
        if found is None:
            n = self.counts.get(kind, 0) + 1
            self.counts[kind] = n
            found = f"<{kind}_{n}>"
            self.by_value[key] = found
            self.restore[found] = value
        return found

    def restore_text(self, text: str) -> str:
        if not self.restore or "<" not in text:
            return text
        for placeholder, value in self.restore.items():
            if placeholder in text:
                text = text.replace(placeholder, value)
        return text


def _strongest(findings: Sequence[Finding]) -> str:
    best = "pass"
    for f in findings:
        if _RANK[f.action] > _RANK[best]:
            best = f.action
    return best


def record(
    trace: Trace, findings: Sequence[Finding], stage: Stage, where: str | None, offset: int = 0
) -> None:
    """Append findings (without their text) to the trace's ``guard.findings``."""
    if not findings:
        return
    out = trace.attributes.setdefault(FINDINGS_ATTR, [])
    for f in findings:
        d = f.to_dict()
        d["stage"] = stage
        if offset:
            d["start"] += offset
            d["end"] += offset
        if where is not None:
            d["where"] = where
        out.append(d)


def _scrub(text: str, replaced: Sequence[tuple[str, str]]) -> str:
    """``text`` with every value a guard redacted from this request replaced the same way."""
    for original, replacement in sorted(replaced, key=lambda p: -len(p[0])):
        if original and original in text:
            text = text.replace(original, replacement)
    return text


def _scrub_findings(recorded: Sequence[dict[str, Any]], replaced: Sequence[tuple[str, str]]) -> None:
    """Findings' details quote a little of the text (an injection's trigger phrase): never a value
    another scanner redacted."""
    for d in recorded:
        if isinstance(d.get("detail"), str):
            d["detail"] = _scrub(d["detail"], replaced)


def non_overlapping(findings: Sequence[Finding]) -> list[Finding]:
    """Earliest first; of overlapping findings the longer one wins."""
    ordered = sorted(findings, key=lambda f: (f.start, -(f.end - f.start)))
    kept: list[Finding] = []
    for f in ordered:
        if kept and f.start < kept[-1].end:
            if f.end > kept[-1].end and f.end - f.start > kept[-1].end - kept[-1].start:
                kept[-1] = f
            continue
        kept.append(f)
    return kept


class GuardPipeline:
    def __init__(
        self,
        route: str,
        inputs: list[Configured],
        outputs: list[Configured],
        window_chars: int,
        restore_pii: bool,
    ) -> None:
        self.route = route
        self.inputs = inputs
        self.outputs = outputs
        self.window_chars = window_chars
        self.restore_pii = restore_pii
        self.types = {c.name: c.type for c in (*inputs, *outputs)}
        self.canary = next((c for c in outputs if c.plants_canary), None)
        self.input_names = [c.name for c in inputs]
        self.output_names = [c.name for c in outputs]

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def build(cls, route: str, config: GuardsConfig) -> GuardPipeline | None:
        """The pipeline for ``config``, or None when it configures no scanner. Raises ConfigError
        for specs that ``check_guards`` would reject (the loader reports them with lines first)."""
        from shipyard.plugins import scanner_types

        problems = check_guards(config)
        if problems:
            raise ConfigError(
                f"route `{route}` has invalid guards:",
                [f"guards{_loc(loc)}: {msg}" for loc, msg in problems],
            )
        if not config.input and not config.output:
            return None
        types = scanner_types()
        built: dict[str, list[Configured]] = {"input": [], "output": []}
        for stage in ("input", "output"):
            for spec in getattr(config, stage):
                stype = types[spec.type]
                options = stype.options.model_validate(spec.options)
                name = spec.name or spec.type
                scanner = stype.factory(name, options)
                built[stage].append(
                    Configured(
                        name,
                        spec.type,
                        scanner,
                        options,
                        bool(getattr(scanner, "whole_request", False)),
                        bool(getattr(scanner, "whole_text", False)),
                        bool(getattr(scanner, "plants_canary", False)),
                    )
                )
        window = config.stream_window_chars or config.stream_window_tokens * CHARS_PER_TOKEN
        return cls(route, built["input"], built["output"], window, config.restore_pii)

    # -- scanning --------------------------------------------------------------------------------
    def scan(self, configured: Sequence[Configured], text: str, ctx: ScanContext) -> list[Finding]:
        found: list[Finding] = []
        for c in configured:
            try:
                found += c.scanner.scan(text, ctx)
            except Exception as exc:
                log.exception("guard scanner `%s` failed on route `%s`", c.name, self.route)
                raise GuardFailed(
                    f"guard scanner `{c.name}` on route `{self.route}` failed ({type(exc).__name__}); "
                    "the request was not served unchecked. Check the server log."
                ) from exc
        return found

    def redact(
        self,
        text: str,
        findings: Sequence[Finding],
        stage: Stage,
        state: GuardState,
        replaced: list[tuple[str, str]] | None = None,
    ) -> str:
        """``text`` with every ``redact`` finding replaced; PII on input becomes a numbered
        placeholder that ``restore_text`` can turn back into the value. ``replaced`` collects
        (original, replacement) pairs, to scrub the same values from messages and findings."""
        spans = non_overlapping([f for f in findings if f.action == "redact"])
        if not spans:
            return text

        def replacement(f: Finding) -> str:
            original = text[f.start : f.end]
            if self.types.get(f.scanner) == "pii" and stage == "input":
                new = state.placeholder(f.kind, original)
            else:
                new = f.replacement or f"<{f.kind.upper()}>"
            if replaced is not None:
                replaced.append((original, new))
            return new

        return splice(text, spans, replacement)

    def open_span(self, trace: Trace, root: Span, stage: Stage) -> Span:
        names = self.input_names if stage == "input" else self.output_names
        return trace.span(
            f"guard {stage}", parent=root, attributes={"guard.stage": stage, "guard.scanners": names}
        )

    @staticmethod
    def close_span(span: Span, findings: Sequence[Finding]) -> None:
        action = _strongest(findings)
        span.finish(
            "error" if action == "block" else "ok",
            **{"guard.action": action, "guard.findings": len(findings)},
        )

    def blocked_input(self, f: Finding, where: str) -> GuardBlocked:
        hint = _INPUT_HINTS.get(self.types.get(f.scanner, ""), "change the request")
        detail = f", {f.detail}" if f.detail else ""
        return GuardBlocked(
            f"request blocked by guard `{f.scanner}` on route `{self.route}`: {f.kind} in {where} "
            f"(score {f.score:.2f}{detail}). To proceed, {hint}. If this is a false positive, the route's "
            f"owner can set `action: flag` for `{f.scanner}` under the route's `guards.input`.",
            param="messages" if where.startswith("messages") else where.split("[")[0],
        )

    def blocked_output(self, f: Finding) -> OutputBlocked:
        hint = _OUTPUT_HINTS.get(self.types.get(f.scanner, ""), "rephrase the request")
        detail = f", {f.detail}" if f.detail else ""
        return OutputBlocked(
            f"the answer from route `{self.route}` was blocked by guard `{f.scanner}`: {f.kind} "
            f"(score {f.score:.2f}{detail}); {hint}. The route's owner can set `action: flag` for "
            f"`{f.scanner}` under the route's `guards.output` if this is a false positive."
        )

    # -- input -----------------------------------------------------------------------------------
    def check_input(
        self, op: str, body: dict[str, Any], trace: Trace, root: Span
    ) -> tuple[dict[str, Any], GuardState]:
        """The body to send on (a copy where something was redacted) and the request's state."""
        state = GuardState()
        if self.canary is not None:
            template = getattr(self.canary.options, "template", "{canary}")
            state.canary = "cnry-" + secrets.token_hex(8)
            state.canary_line = template.replace("{canary}", state.canary)
        if not self.inputs:
            return body, state
        span = self.open_span(trace, root, "input")
        all_findings: list[Finding] = []
        per_text = [c for c in self.inputs if not c.whole_request]
        whole = [c for c in self.inputs if c.whole_request]
        items = list(_input_texts(op, body))
        system = "\n".join(t for _, role, t, _ in items if role in ("system", "developer")) or None
        blocked: tuple[Finding, str] | None = None
        changes: dict[tuple[Any, ...], str] = {}
        replaced: list[tuple[str, str]] = []
        first_recorded = len(trace.attributes.get(FINDINGS_ATTR, ()))
        for where, role, text, path in items:
            ctx = ScanContext(
                "input",
                role=role,
                message_index=path[1] if path[0] == "messages" else None,
                system_prompt=system,
            )
            findings = self.scan(per_text, text, ctx)
            if not findings:
                continue
            record(trace, findings, "input", where)
            all_findings += findings
            # Redacted even when a finding blocks the request: the stored trace of a blocked
            # request must not keep the values the PII and secrets scanners found (a blocked
            # request's body goes nowhere else, so redacting blocked values costs nothing).
            hidden = [
                replace(f, action="redact")
                if f.action == "block" and self.types.get(f.scanner) in ("pii", "secrets")
                else f
                for f in findings
            ]
            new = self.redact(text, hidden, "input", state, replaced)
            if new != text:
                changes[path] = new
            block = next((f for f in findings if f.action == "block"), None)
            if block is not None:
                blocked = blocked or (block, where)
        if whole and blocked is None:
            joined = "\n".join(t for _, _, t, _ in items)
            findings = self.scan(whole, joined, ScanContext("input", system_prompt=system))
            record(trace, findings, "input", "request")
            all_findings += findings
            block = next((f for f in findings if f.action == "block"), None)
            if block is not None:
                blocked = (block, "the request")
        self.close_span(span, all_findings)
        if replaced:
            _scrub_findings(trace.attributes.get(FINDINGS_ATTR, [])[first_recorded:], replaced)
        new_body = _apply_changes(body, changes) if changes else body
        if changes:
            if op == "chat":
                trace.input = new_body.get("messages")
            elif op == "completion":
                trace.input = new_body.get("prompt")
            if "variables" in new_body:
                trace.attributes["shipyard.variables"] = new_body["variables"]
        if blocked is not None:
            error = self.blocked_input(*blocked)
            if replaced:
                error.message = _scrub(error.message, replaced)
                error.args = (error.message,)
            raise error
        return new_body, state

    def prepare_call(self, call: Call, state: GuardState) -> None:
        """Per attempt: plant the canary, remember the system prompt and the promised schema."""
        body = call.body
        messages = body.get("messages")
        if isinstance(messages, list):
            if state.canary_line is not None:
                messages = list(messages)
                first = messages[0] if messages else None
                if (
                    isinstance(first, dict)
                    and first.get("role") in ("system", "developer")
                    and isinstance(first.get("content"), str)
                ):
                    messages[0] = {**first, "content": f"{first['content']}\n\n{state.canary_line}"}
                else:
                    messages.insert(0, {"role": "system", "content": state.canary_line})
                body["messages"] = messages
            system = [
                content_text(m.get("content"))
                for m in messages
                if isinstance(m, dict) and m.get("role") in ("system", "developer")
            ]
            state.system_prompt = "\n".join(system) or None
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema")
            state.response_schema = schema if isinstance(schema, dict) else None

    # -- output ----------------------------------------------------------------------------------
    def output_context(self, state: GuardState) -> ScanContext:
        return ScanContext(
            "output",
            role="assistant",
            system_prompt=state.system_prompt,
            canaries=(state.canary,) if state.canary else (),
            response_schema=state.response_schema,
        )

    def guards_output(self, state: GuardState) -> bool:
        """Whether answers need the output stage: output scanners, or placeholders to restore.
        Input-only routes stream untouched, with no hold-back."""
        return bool(self.outputs) or (self.restore_pii and bool(state.restore))

    def check_output(
        self, op: str, result: Completion, state: GuardState, trace: Trace, root: Span
    ) -> Completion:
        """Scan a finished answer; returns it with redactions applied and PII restored (``text``
        keeps the placeholders: it is what the trace stores)."""
        if not self.guards_output(state):
            return result
        body = result.body if result.body is not None else _loads(result.raw)
        if body is None:
            return result
        raw_choices = body.get("choices")
        choices: list[Any] = raw_choices if isinstance(raw_choices, list) else []
        span = self.open_span(trace, root, "output") if self.outputs else None
        ctx = self.output_context(state)
        all_findings: list[Finding] = []
        changed = False
        trace_text: str | None = None
        for i, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            holder, key = (choice.get("message"), "content") if op == "chat" else (choice, "text")
            if not isinstance(holder, dict) or not isinstance(holder.get(key), str):
                continue
            text: str = holder[key]
            findings = self.scan(self.outputs, text, ctx) if self.outputs else []
            where = f"choices[{i}]"
            record(trace, findings, "output", where)
            all_findings += findings
            block = next((f for f in findings if f.action == "block"), None)
            if block is not None:
                assert span is not None
                self.close_span(span, all_findings)
                raise self.blocked_output(block)
            guarded = self.redact(text, findings, "output", state)
            client = state.restore_text(guarded) if self.restore_pii else guarded
            if i == 0:
                trace_text = guarded
            if client != text:
                holder[key] = client
                changed = True
        if span is not None:
            self.close_span(span, all_findings)
        if changed:
            result.body = body
            result.raw = None
        if trace_text is not None:
            result.text = trace_text
        return result

    def stream(
        self,
        op: str,
        first: StreamChunk,
        chunks: AsyncIterator[StreamChunk],
        state: GuardState,
        trace: Trace,
        root: Span,
    ) -> AsyncIterator[StreamChunk]:
        """The provider's chunks with the output guards applied (see :mod:`shipyard.guard.stream`)."""
        from shipyard.guard.stream import guard_stream

        return guard_stream(self, op, first, chunks, state, trace, root)


# -- helpers -----------------------------------------------------------------------------------------
def _input_texts(op: str, body: dict[str, Any]) -> list[tuple[str, str | None, str, tuple[Any, ...]]]:
    """(where, role, text, path) for every piece of client text the provider will see."""
    out: list[tuple[str, str | None, str, tuple[Any, ...]]] = []
    if op == "chat":
        for i, m in enumerate(body.get("messages") or []):
            if not isinstance(m, dict):
                continue
            role = m.get("role") if isinstance(m.get("role"), str) else None
            content = m.get("content")
            if isinstance(content, str):
                out.append((f"messages[{i}]", role, content, ("messages", i, "content")))
            elif isinstance(content, list):
                for j, part in enumerate(content):
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        out.append(
                            (
                                f"messages[{i}].content[{j}]",
                                role,
                                part["text"],
                                ("messages", i, "content", j, "text"),
                            )
                        )
    elif op == "completion":
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            out.append(("prompt", "user", prompt, ("prompt",)))
        elif isinstance(prompt, list):
            for i, p in enumerate(prompt):
                if isinstance(p, str):
                    out.append((f"prompt[{i}]", "user", p, ("prompt", i)))
    variables = body.get("variables")
    if isinstance(variables, dict):
        for k, v in variables.items():
            if isinstance(v, str):
                out.append((f"variables.{k}", "user", v, ("variables", k)))
    return out


def _apply_changes(body: dict[str, Any], changes: dict[tuple[Any, ...], str]) -> dict[str, Any]:
    """A copy of ``body`` with the values at ``changes``' paths replaced; untouched parts shared."""
    new = dict(body)
    for path, value in changes.items():
        node: Any = new
        for key in path[:-1]:
            child = node[key]
            child = list(child) if isinstance(child, list) else dict(child)
            node[key] = child
            node = child
        node[path[-1]] = value
    return new


def _loads(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _loc(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)


def check_guards(
    config: GuardsConfig, types: dict[str, ScannerType] | None = None
) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems in a route's ``guards:`` as (path under ``guards``, message): unknown scanner types
    (naming the known ones), a scanner in a stage it cannot run in, duplicate names, and each
    scanner's options checked by its own options model."""
    if types is None:
        from shipyard.plugins import scanner_types

        types = scanner_types()
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for stage in ("input", "output"):
        seen: dict[str, int] = {}
        for j, spec in enumerate(getattr(config, stage)):
            stype = types.get(spec.type)
            if stype is None:
                problems.append(
                    (
                        (stage, j, "type"),
                        f"unknown scanner type `{spec.type}`; known types: {', '.join(sorted(types))}",
                    )
                )
                continue
            if stage not in stype.stages:
                other = "output" if stage == "input" else "input"
                problems.append(
                    (
                        (stage, j, "type"),
                        f"scanner `{spec.type}` runs on {other} only; move it to `guards.{other}`",
                    )
                )
            name = spec.name or spec.type
            if name in seen:
                problems.append(
                    (
                        (stage, j),
                        f"two `{stage}` scanners are named `{name}` (also {stage}[{seen[name]}]); "
                        "give one a distinct `name:`",
                    )
                )
            seen[name] = j
            try:
                stype.options.model_validate(spec.options)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = (stage, j, *err["loc"])
                    if err.get("type") == "extra_forbidden":
                        known = sorted(i.alias or k for k, i in stype.options.model_fields.items())
                        msg = (
                            f"unknown option `{err['loc'][-1]}` for scanner `{spec.type}`; "
                            f"known options: {', '.join(known)}"
                        )
                    else:
                        msg = err["msg"]
                    problems.append((loc, msg))
    return problems
