"""The values that cross the eval machinery: a case, what a target produced for it (an
observation), a score, the Scorer protocol and how scorer types register.

A suite runs every case against every target (N times when asked); each scorer turns
(case, observation) into a :class:`Score` in [0, 1] with an explanation and a pass/fail against
its threshold. One line per (case, target, repeat) goes to ``results.jsonl`` (see
:class:`ResultLine`), which the statistics and the reports read back as a stream.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from shipyard.tracing.spans import Trace


@dataclass(slots=True)
class Case:
    """One example: ``input`` is template variables (dict) or chat messages (list)."""

    id: str
    input: dict[str, Any] | list[dict[str, Any]]
    expected: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Observation:
    """What a target produced for a case (and what it cost)."""

    output: str
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    error: str | None = None  # the call failed: scorers see an empty output
    trace_id: str | None = None
    model: str | None = None
    cached: bool = False

    @classmethod
    def of_trace(cls, trace: Trace, error: str | None = None) -> Observation:
        """What a gateway trace says the target produced: the eval runner's calls and the live
        traffic that online evaluation samples read the same fields."""
        return cls(
            output=trace.output or "",
            latency_ms=round(trace.latency_ms, 3),
            ttft_ms=None if trace.ttft_ms is None else round(trace.ttft_ms, 3),
            input_tokens=trace.input_tokens or 0,
            output_tokens=trace.output_tokens or 0,
            cost_usd=trace.cost_usd,
            error=error,
            trace_id=trace.trace_id,
            model=trace.model,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "error": self.error,
            "trace_id": self.trace_id,
            "model": self.model,
            "cached": self.cached,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Observation:
        return cls(**{k: data.get(k) for k in cls.__slots__ if k in data})  # type: ignore[arg-type]


@dataclass(slots=True)
class Score:
    """``value`` in [0, 1]; ``passed`` is value >= the scorer's threshold (decided by the scorer);
    ``details`` holds what is needed to reproduce the verdict (e.g. a judge's prompt and votes)."""

    value: float
    passed: bool
    explanation: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "passed": self.passed, "explanation": self.explanation}
        if self.details:
            out["details"] = self.details
        return out


class ScoreContext(Protocol):
    """What the runner offers scorers beyond the case and the observation."""

    async def complete(self, route: str, messages: list[dict[str, Any]], **params: Any) -> Observation:
        """Call a route of the gateway (in-process), e.g. a judge model. Raises ShipyardError."""
        ...

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Unit-length embeddings from the offline embedding model (wordllama)."""
        ...


class OfflineEmbedder:
    """The offline embedding model (wordllama) behind a ScoreContext's ``embed``: loaded on first
    use, once however many scorers ask at the same time, since most suites never embed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._provider: Any = None
        self._lock = asyncio.Lock()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        from shipyard.providers.base import Call

        async with self._lock:
            if self._provider is None:
                from shipyard.providers.wordllama import WordLlamaProvider

                provider = WordLlamaProvider(self.name)
                await provider.start()
                self._provider = provider
        result = await self._provider.embed(Call(body={"input": texts}, model="wordllama", timeout=120))
        return list(result.vectors)

    async def close(self) -> None:
        if self._provider is not None:
            await self._provider.close()


@runtime_checkable
class Scorer(Protocol):
    """One configured scorer. ``name`` labels it in results (unique within a suite)."""

    name: str
    threshold: float

    async def score(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score: ...


class ScorerOptions(BaseModel):
    """Base of each scorer type's options in a suite file: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        None, description="Label in reports; default: the type (plus a number if repeated)."
    )
    threshold: float = Field(
        1.0, ge=0, le=1, description="A case passes this scorer when its score is >= this."
    )


@dataclass(frozen=True)
class ScorerType:
    """How scorer types register (plugin hook ``register_scorers``): name in suite files, options
    model, and a factory ``factory(options) -> Scorer``."""

    name: str
    options: type[ScorerOptions]
    factory: Any
    description: str = ""


class ResultLine(TypedDict, total=False):
    """One line of ``results.jsonl``: a case run once against one target."""

    case: str
    repeat: int
    target: str
    input: Any
    expected: Any
    observation: dict[str, Any]  # Observation.to_dict()
    scores: dict[str, dict[str, Any]]  # scorer name -> Score.to_dict()
    passed: bool  # every scorer passed and the call did not fail
