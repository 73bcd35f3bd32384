"""Running attacks: each goes through a target with the planted system message first, tagged so
its trace can be found, and is judged; ``concurrency`` attacks are in flight at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipyard.redteam.core import Attack, RedteamAborted
from shipyard.redteam.judge import Judge
from shipyard.redteam.planted import Planted
from shipyard.redteam.targets import AttackFailed, Blocked, Target

# The gateway's tags header (``shipyard.gateway.service.TAGS_HEADER``), spelled out rather than
# imported: it is what a client sends over HTTP, and importing the gateway would load it for
# every `shipyard` command.
TAGS_HEADER = "x-shipyard-tags"
MAX_ANSWER_CHARS = 4000  # kept per result; judging always sees the whole answer


@dataclass
class Result:
    """One attack's outcome: the verdict on its answer, the guard that blocked it, or the error."""

    attack: Attack
    outcome: str
    success: bool
    reason: str
    answer: str | None = None
    signals: dict[str, Any] = field(default_factory=dict)
    blocked_by: str | None = None
    block_kind: str | None = None
    block_stage: str | None = None
    error: str | None = None
    latency_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = self.attack.to_dict()
        out.update(
            {
                "owasp_name": self.attack.owasp_name,
                "outcome": self.outcome,
                "success": self.success,
                "reason": self.reason,
                "answer": None if self.answer is None else self.answer[:MAX_ANSWER_CHARS],
                "signals": self.signals,
                "blocked_by": self.blocked_by,
                "block_kind": self.block_kind,
                "block_stage": self.block_stage,
                "error": self.error,
                "latency_ms": round(self.latency_ms, 2),
            }
        )
        return out


async def run_one(
    target: Target, attack: Attack, planted: Planted, judge: Judge, limit_s: float, run_tag: str
) -> Result:
    messages = planted.messages() + attack.messages
    headers = {TAGS_HEADER: f"redteam,{run_tag},family:{attack.family}"}
    start = time.perf_counter()
    try:
        answer = await asyncio.wait_for(target.send(messages, headers), limit_s)
    except Blocked as b:
        ms = (time.perf_counter() - start) * 1000
        return Result(
            attack,
            "blocked",
            False,
            f"blocked by `{b.scanner}` ({b.stage}{', ' + b.kind if b.kind else ''})",
            blocked_by=b.scanner,
            block_kind=b.kind,
            block_stage=b.stage,
            latency_ms=ms,
        )
    except TimeoutError:
        ms = (time.perf_counter() - start) * 1000
        return Result(
            attack, "error", False, "no answer", error=f"timed out after {limit_s:g}s", latency_ms=ms
        )
    except AttackFailed as exc:
        ms = (time.perf_counter() - start) * 1000
        return Result(attack, "error", False, "no answer", error=str(exc)[:500], latency_ms=ms)
    ms = (time.perf_counter() - start) * 1000
    verdict = judge.judge(attack, answer)
    return Result(
        attack, verdict.outcome, verdict.success, verdict.reason, answer, verdict.signals, latency_ms=ms
    )


async def run_attacks(
    target: Target,
    attacks: Sequence[Attack],
    planted: Planted,
    judge: Judge,
    *,
    concurrency: int = 4,
    limit_s: float = 60.0,
    run_tag: str = "run:redteam",
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Every attack through ``target``, ``concurrency`` at a time; results in attack order. A
    :class:`RedteamAborted` from any attack stops the run and is raised."""
    results: list[Result | None] = [None] * len(attacks)
    jobs = iter(enumerate(attacks))
    aborted: list[BaseException] = []

    async def worker() -> None:
        for i, attack in jobs:  # one shared iterator: each attack is taken once
            if aborted:
                return
            try:
                result = await run_one(target, attack, planted, judge, limit_s, run_tag)
            except RedteamAborted as exc:
                aborted.append(exc)
                return
            results[i] = result
            if on_result is not None:
                on_result(result)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    if aborted:
        raise aborted[0]
    return [r for r in results if r is not None]
