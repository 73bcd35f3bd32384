"""The guard extension point: a ``Scanner`` looks at one text and reports ``Finding``s.

A scanner only detects; what happens next is the pipeline's job, driven by each finding's
``action``: ``block`` (refuse the request or answer with a 4xx), ``redact`` (replace the span
before it reaches the provider or the client), or ``flag`` (record only). A scanner's options
choose the default action of its findings (``action:`` in config), so one detector can block on
one route and only flag on another.

Built-in scanners register through the ``register_scanners`` plugin hook, like providers and
scorers; a third-party package adds its own the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

Action = Literal["block", "redact", "flag"]
Stage = Literal["input", "output"]
ACTIONS: tuple[str, ...] = ("block", "redact", "flag")


class Located(Protocol):
    """Anything found at ``text[start:end]``: a scanner's finding, a piece of PII."""

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...


LocatedT = TypeVar("LocatedT", bound=Located)


def splice(text: str, spans: Iterable[LocatedT], replacement: Callable[[LocatedT], str]) -> str:
    """``text`` with each span (in order, none overlapping) replaced by ``replacement(span)``."""
    out: list[str] = []
    pos = 0
    for span in spans:
        out.append(text[pos : span.start])
        out.append(replacement(span))
        pos = span.end
    out.append(text[pos:])
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Finding:
    """What a scanner found in ``text[start:end]``.

    ``score`` is the scanner's confidence in [0, 1]; ``kind`` refines the scanner (``EMAIL``,
    ``aws_access_key``, ``base64_payload`` …); ``replacement`` is what ``redact`` puts in the
    span's place (default ``<KIND>``)."""

    scanner: str
    kind: str
    score: float
    start: int
    end: int
    action: Action
    replacement: str | None = None
    detail: str = ""

    def to_dict(self, text: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "scanner": self.scanner,
            "kind": self.kind,
            "score": round(self.score, 4),
            "start": self.start,
            "end": self.end,
            "action": self.action,
        }
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(slots=True)
class ScanContext:
    """What a scanner may want besides the text: the stage, the message's role and position, the
    request's system prompt (leak detection), canary tokens planted in it, the route's promised
    JSON schema."""

    stage: Stage
    role: str | None = None
    message_index: int | None = None
    system_prompt: str | None = None
    canaries: Sequence[str] = ()
    response_schema: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ScannerOptions(BaseModel):
    """Base of every scanner's options in config; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    action: Action = Field("block", description="What to do with this scanner's findings.")
    threshold: float = Field(0.5, ge=0, le=1, description="Findings scoring below this are ignored.")


@runtime_checkable
class Scanner(Protocol):
    """Detects one kind of problem. ``scan`` must be pure and fast (it runs on the request path:
    budget well under a millisecond per kilobyte) and thread-safe."""

    name: str
    stages: tuple[Stage, ...]  # where it may run: ("input",), ("output",) or both

    def scan(self, text: str, ctx: ScanContext) -> list[Finding]: ...


@dataclass(frozen=True)
class ScannerType:
    """How plugins register a scanner type: its config name, options model and factory."""

    name: str
    options: type[ScannerOptions]
    factory: Callable[[str, Any], Scanner]  # (name, options) -> Scanner
    stages: tuple[Stage, ...]
    description: str = ""
