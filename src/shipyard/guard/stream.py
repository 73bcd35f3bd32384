"""Streaming-safe output guards: scan a streamed answer with a bounded hold-back window.

A secret or an e-mail address can arrive split over two chunks (``sk-pr`` + ``oj-…``), so each
chunk cannot be scanned alone, and waiting for the whole answer would throw away streaming. The
guard keeps the not-yet-sent text of each choice in a buffer and, after every chunk, scans the
buffer and releases only its head: everything except the last ``window`` characters
(``stream_window_tokens`` × 4, or ``stream_window_chars``), moved back so that the cut never falls
inside a word, a finding or a ``<PLACEHOLDER>``. A value shorter than the window is therefore
always seen whole before any of it leaves, and tokens keep flowing: the client's time to first
token grows by at most the window. At the end of the stream (a ``finish_reason``, ``[DONE]`` or
the upstream closing) the rest is scanned and flushed, and the scanners that need the whole answer
(``json_schema``, ``system_leak``) run on it.

The window counts visible characters: zero-width and other invisible characters the scanners
see through (see :mod:`shipyard.guard.normalize`) do not count, so padding a secret with them
cannot push its head out of the window before its tail arrives.

Limits, by construction: text already sent cannot be recalled, so a ``block`` from a whole-answer
scanner at the end ends the stream with an error event after the text; and a single token longer
than four windows (a huge base64 blob), or more than 64 windows of raw text held (invisible
padding), is released in pieces, each still scanned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson

from shipyard.guard.base import Finding
from shipyard.guard.normalize import is_invisible
from shipyard.guard.pipeline import GuardState, non_overlapping, record
from shipyard.providers.base import StreamChunk

if TYPE_CHECKING:
    from shipyard.guard.pipeline import GuardPipeline
    from shipyard.tracing.spans import Span, Trace

_MAX_HOLD_WINDOWS = 4  # a single unbroken token is held for at most this many windows
_MAX_HOLD_RAW = 64  # … and the buffer, invisible characters included, for at most this many
_PLACEHOLDER_MAX = 32  # longest `<KIND_n>` placeholder a cut must not split


class ChoiceGuard:
    """The hold-back buffer and scanning of one choice's text."""

    def __init__(self, pipeline: GuardPipeline, state: GuardState, trace: Trace, where: str) -> None:
        self.pipeline = pipeline
        self.state = state
        self.trace = trace
        self.where = where
        self.pending = ""
        self.sent = 0  # characters of the original answer already released
        self.full: list[str] = []  # the original answer, for whole-answer scanners
        self.ctx = pipeline.output_context(state)
        self.streamable = [c for c in pipeline.outputs if not c.whole_text]
        self.whole = [c for c in pipeline.outputs if c.whole_text]
        self.findings: list[Finding] = []
        self.done = False

    def feed(self, text: str) -> tuple[str, str]:
        """Add upstream text; return (guarded text for the trace, text for the client) to send now."""
        self.pending += text
        self.full.append(text)
        return self._release(final=False)

    def finish(self) -> tuple[str, str]:
        if self.done:
            return "", ""
        self.done = True
        return self._release(final=True)

    def _cut(self, findings: list[Finding]) -> int:
        p = self.pending
        window = self.pipeline.window_chars
        cut = _visible_cut(p, window)
        if cut <= 0:
            return 0
        forced = len(p) > window * _MAX_HOLD_RAW or _visible_len(p) > window * _MAX_HOLD_WINDOWS
        if not forced and not p[cut - 1].isspace() and not p[cut].isspace():
            # Never split a word: a secret is one word, and so is most PII.
            space = max(p.rfind(" ", 0, cut), p.rfind("\n", 0, cut), p.rfind("\t", 0, cut))
            cut = space + 1 if space >= 0 else 0
        lt = p.rfind("<", max(0, cut - _PLACEHOLDER_MAX), cut)
        if lt >= 0 and p.find(">", lt, cut) < 0:
            cut = lt  # a placeholder still arriving
        moved = True
        while moved:  # never split a finding: hold it until it is whole and complete
            moved = False
            for f in findings:
                if f.start < cut < f.end and not forced:
                    cut, moved = f.start, True
        return cut

    def _release(self, final: bool) -> tuple[str, str]:
        pipeline = self.pipeline
        p = self.pending
        findings = pipeline.scan(self.streamable, p, self.ctx) if self.streamable and p else []
        block = next((f for f in findings if f.action == "block"), None)
        if block is not None:
            self._record([block], self.sent)
            raise pipeline.blocked_output(block)
        cut = len(p) if final else self._cut(findings)
        released = [f for f in findings if f.end <= cut or (f.start < cut and final)]
        if cut < len(p):
            # A forced cut through a finding: redact the part that leaves now.
            released += [
                Finding(f.scanner, f.kind, f.score, f.start, cut, f.action, f.replacement, f.detail)
                for f in findings
                if f.start < cut < f.end
            ]
        self._record(released, self.sent)
        head = p[:cut]
        guarded = pipeline.redact(head, released, "output", self.state)
        self.pending = p[cut:]
        self.sent += cut
        if final and self.whole:
            text = "".join(self.full)
            whole = pipeline.scan(self.whole, text, self.ctx)
            self._record(whole, 0)
            block = next((f for f in whole if f.action == "block"), None)
            if block is not None:
                # The text is out already; what can still be done is end the stream with an error.
                raise pipeline.blocked_output(block)
        client = self.state.restore_text(guarded) if pipeline.restore_pii else guarded
        return guarded, client

    def _record(self, findings: list[Finding], offset: int) -> None:
        if findings:
            findings = non_overlapping(findings) if len(findings) > 1 else findings
            record(self.trace, findings, "output", self.where, offset)
            self.findings += findings


class StreamGuard:
    """Rewrites SSE events: content is replaced by what the choice guards release."""

    def __init__(self, pipeline: GuardPipeline, op: str, state: GuardState, trace: Trace) -> None:
        self.pipeline = pipeline
        self.chat = op == "chat"
        self.state = state
        self.trace = trace
        self.choices: dict[int, ChoiceGuard] = {}
        self.template: dict[str, Any] | None = None  # last content event, to build flush events from

    def guard(self, index: int) -> ChoiceGuard:
        g = self.choices.get(index)
        if g is None:
            g = self.choices[index] = ChoiceGuard(self.pipeline, self.state, self.trace, f"choices[{index}]")
        return g

    def _event(self, index: int, text: str) -> bytes:
        base = dict(self.template or {"object": "chat.completion.chunk" if self.chat else "text_completion"})
        choice: dict[str, Any] = {"index": index, "logprobs": None, "finish_reason": None}
        if self.chat:
            choice["delta"] = {"content": text}
        else:
            choice["text"] = text
        base["choices"] = [choice]
        base.pop("usage", None)
        return b"data: " + orjson.dumps(base) + b"\n\n"

    def flush_all(self) -> tuple[list[bytes], str]:
        out: list[bytes] = []
        trace_text = ""
        for index, g in sorted(self.choices.items()):
            guarded, client = g.finish()
            if client:
                out.append(self._event(index, client))
            if index == 0:
                trace_text += guarded
        return out, trace_text

    def process(self, chunk: StreamChunk) -> StreamChunk:
        if not chunk.data:
            return chunk
        out: list[bytes] = []
        trace_text = ""
        for event in _split_events(chunk.data):
            payload = _data(event)
            if payload is None:
                out.append(event)
                continue
            if payload.strip() == b"[DONE]":
                flushed, flushed_text = self.flush_all()
                out += flushed
                trace_text += flushed_text
                out.append(event)
                continue
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                out.append(event)
                continue
            choices = obj.get("choices") if isinstance(obj, dict) else None
            if not isinstance(choices, list) or not choices:
                out.append(event)  # usage-only or unknown events pass through
                continue
            changed = False
            keep = False
            for c in choices:
                if not isinstance(c, dict):
                    keep = True
                    continue
                raw_index = c.get("index")
                index: int = raw_index if isinstance(raw_index, int) else 0
                holder = c.get("delta") if self.chat else c
                key = "content" if self.chat else "text"
                text = holder.get(key) if isinstance(holder, dict) else None
                guarded: str = ""
                client: str = ""
                if isinstance(text, str) and text:
                    self.template = {k: v for k, v in obj.items() if k != "choices"}
                    guarded, client = self.guard(index).feed(text)
                    changed = True
                if c.get("finish_reason"):
                    g2, c2 = self.guard(index).finish()
                    guarded, client = guarded + g2, client + c2
                    changed = changed or bool(c2)
                    keep = True
                if isinstance(holder, dict) and (
                    set(holder) - {"content"} or (isinstance(text, str) and not text)
                ):
                    keep = True  # a role, tool calls, or an explicit empty first delta
                if isinstance(holder, dict) and changed:
                    holder[key] = client
                if client:
                    keep = True
                if index == 0:
                    trace_text += guarded
            if keep:
                out.append(b"data: " + orjson.dumps(obj) + b"\n\n" if changed else event)
        return StreamChunk(
            b"".join(out), text=trace_text, usage=chunk.usage, finish_reason=chunk.finish_reason
        )

    def close_span(self, span: Span) -> None:
        findings = [f for g in self.choices.values() for f in g.findings]
        self.pipeline.close_span(span, findings)


def _visible_len(text: str) -> int:
    if text.isascii():
        return len(text)
    return sum(1 for c in text if c < "\x80" or not is_invisible(c))


def _visible_cut(text: str, window: int) -> int:
    """The index from which ``text`` holds its last ``window`` visible characters (0: fewer)."""
    if text.isascii():
        return max(len(text) - window, 0)
    seen = 0
    for i in range(len(text) - 1, -1, -1):
        c = text[i]
        if c < "\x80" or not is_invisible(c):
            seen += 1
            if seen == window:
                return i
    return 0


def _split_events(data: bytes) -> list[bytes]:
    parts = data.split(b"\n\n")
    events = [p + b"\n\n" for p in parts[:-1] if p.strip()]
    if parts[-1].strip():
        events.append(parts[-1])
    return events


def _data(event: bytes) -> bytes | None:
    lines = [line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None


async def guard_stream(
    pipeline: GuardPipeline,
    op: str,
    first: StreamChunk,
    chunks: AsyncIterator[StreamChunk],
    state: GuardState,
    trace: Trace,
    root: Span,
) -> AsyncIterator[StreamChunk]:
    """One output chunk per upstream chunk (possibly with nothing to send yet), plus one at the end
    if the upstream closed without a finish event. Raises ``OutputBlocked`` on a block."""
    guard = StreamGuard(pipeline, op, state, trace)
    span = pipeline.open_span(trace, root, "output") if pipeline.outputs else None
    try:
        chunk: StreamChunk | None = first
        while chunk is not None:
            yield guard.process(chunk)
            try:
                chunk = await anext(chunks)
            except StopAsyncIteration:
                chunk = None
        flushed, text = guard.flush_all()
        if flushed:
            yield StreamChunk(b"".join(flushed), text=text)
    finally:
        if span is not None:
            guard.close_span(span)
        close = getattr(chunks, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception:
                pass
