"""What every red-team module shares: the errors, the goals and outcomes, and the attack itself."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from shipyard.errors import InvalidRequest, ShipyardError
from shipyard.redteam.families import MARKER_WORDS, OWASP_ALL

GOALS = ("marker", "system", "pii", "comply")
OUTCOMES = ("succeeded", "blocked", "refused", "resisted", "error")
CUSTOM = "custom"  # the family of corpus attacks that name none


class RedteamError(InvalidRequest):
    """Bad red-team input (options, corpus file): the message names the line or option and the fix."""


class RedteamAborted(ShipyardError):
    """The run cannot go on: the gateway is unreachable, refuses the key, or has no such route."""

    status = 502
    code = "redteam_aborted"


@dataclass
class Attack:
    """One attack: the messages the run sends after its system message, and how to judge the answer."""

    id: str
    family: str
    owasp: str  # a code: LLM01 … LLM10
    goal: str  # marker | system | pii | comply
    messages: list[dict[str, Any]]
    marker: str | None = None
    seed: int | None = None  # index of the seed template (built-in) or line number (corpus)
    technique: str = ""  # encoding used, carrier of a document…
    mutations: list[str] = field(default_factory=list)
    source: str = "builtin"

    @property
    def owasp_name(self) -> str:
        return OWASP_ALL.get(self.owasp, self.owasp)

    def prompt_text(self) -> str:
        """The attack as one readable text (for reports): every message, with its role when the
        attack has more than one."""
        parts = []
        for m in self.messages:
            content = m.get("content")
            if content is None and m.get("tool_calls"):
                content = "(calls tool " + ", ".join(c["function"]["name"] for c in m["tool_calls"]) + ")"
            parts.append(f"[{m['role']}] {content}" if len(self.messages) > 1 else str(content))
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "family": self.family,
            "owasp": self.owasp,
            "goal": self.goal,
            "marker": self.marker,
            "seed": self.seed,
            "technique": self.technique,
            "mutations": list(self.mutations),
            "source": self.source,
            "messages": self.messages,
        }


def user_message(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def make_marker(rng: random.Random) -> str:
    return f"{rng.choice(MARKER_WORDS)}-{rng.getrandbits(24):06x}"
