"""Attack generation: each built-in family's seed templates become attacks, every one with its own
marker and zero to two mutations.

One ``random.Random`` per family and seed makes a run reproducible, and choosing families does not
change any family's attacks. The order of the random draws is part of that promise: the same seed
must keep giving the same attacks, byte for byte, so a change here changes every saved report.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shipyard.redteam.core import Attack, RedteamError, make_marker, user_message
from shipyard.redteam.families import ENCODINGS, FAMILIES, INDIRECT_DOCUMENTS, FamilySpec
from shipyard.redteam.mutations import (
    AFTER_ENCODING,
    ALL_MUTATIONS,
    IN_DOCUMENTS,
    encode,
    mutate,
    split_turns,
)


@dataclass
class _Draft:
    """An attack being built: ``text`` is what mutations change, ``compose`` puts it into messages."""

    text: str
    compose: Callable[[str], list[dict[str, Any]]]
    splittable: bool = True  # a single user message: "split" may spread it over turns
    encoded: bool = False  # already an encoding: character-level mutations would break it
    technique: str = ""


def _fill(template: str, marker: str) -> str:
    return template.replace("{marker}", marker)


def _build_plain(spec: FamilySpec, index: int, marker: str, rng: random.Random, n: int) -> _Draft:
    return _Draft(_fill(spec.seeds[index], marker), user_message)


def _build_encoding(spec: FamilySpec, index: int, marker: str, rng: random.Random, n: int) -> _Draft:
    kinds = list(ENCODINGS)
    # Cycle through every encoding before repeating one, starting at a seeded offset.
    kind = kinds[(n + _offset(rng, len(kinds))) % len(kinds)]
    payload = encode(kind, _fill(spec.seeds[index], marker), marker, rng)
    carrier = rng.choice(ENCODINGS[kind])
    return _Draft(carrier.replace("{payload}", payload), user_message, encoded=True, technique=kind)


def _offset(rng: random.Random, size: int) -> int:
    return rng.randrange(size)


def _build_indirect(spec: FamilySpec, index: int, marker: str, rng: random.Random, n: int) -> _Draft:
    question, document = INDIRECT_DOCUMENTS[index]
    carrier = "paste" if (n + index) % 2 == 0 else "tool"
    if carrier == "paste":

        def compose(doc: str) -> list[dict[str, Any]]:
            return user_message(f'{question}\n\n"""\n{doc}\n"""')

    else:
        call_id = f"call_{hashlib.sha256(marker.encode()).hexdigest()[:12]}"

        def compose(doc: str) -> list[dict[str, Any]]:
            return [
                {"role": "user", "content": question},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": "fetch_document", "arguments": '{"ref": "latest"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": call_id, "content": doc},
            ]

    return _Draft(_fill(document, marker), compose, splittable=False, technique=carrier)


_BUILDERS: dict[str, Callable[[FamilySpec, int, str, random.Random, int], _Draft]] = {
    "encoding": _build_encoding,
    "indirect_injection": _build_indirect,
}


def family_names() -> list[str]:
    return list(FAMILIES)


def parse_families(raw: str | None) -> list[str]:
    """``a,b`` → known family names (hyphens accepted); None or empty → every family."""
    if raw is None or not raw.strip():
        return family_names()
    out: list[str] = []
    for part in raw.split(","):
        name = part.strip().lower().replace("-", "_")
        if not name:
            continue
        if name not in FAMILIES:
            raise RedteamError(
                f"--families: unknown family `{part.strip()}`; known families: {', '.join(FAMILIES)}",
                param="families",
            )
        if name not in out:
            out.append(name)
    if not out:
        raise RedteamError(f"--families is empty; give some of: {', '.join(FAMILIES)}", param="families")
    return out


def generate(families: Sequence[str], per_family: int, seed: int = 0) -> list[Attack]:
    """``per_family`` attacks of each family, reproducible from ``seed``. Seeds are used round-robin
    in a seeded order, so a small ``per_family`` still covers different templates."""
    attacks: list[Attack] = []
    for family in families:
        spec = FAMILIES[family]
        rng = random.Random(f"shipyard-redteam:{seed}:{family}")
        order = list(range(len(spec.seeds)))
        rng.shuffle(order)
        build = _BUILDERS.get(family, _build_plain)
        for n in range(per_family):
            index = order[n % len(order)]
            marker = make_marker(rng)
            draft = build(spec, index, marker, rng, n)
            if family == "indirect_injection":
                pool: Sequence[str] = IN_DOCUMENTS
            elif draft.encoded:
                pool = AFTER_ENCODING
            else:
                pool = ALL_MUTATIONS
            text, names = mutate(draft.text, marker, rng, pool)
            messages = None
            if "split" in names and draft.splittable:
                messages = split_turns(text, marker, rng)
            if messages is None:
                if "split" in names:
                    names.remove("split")
                messages = draft.compose(text)
            attacks.append(
                Attack(
                    id=f"{family}-{n + 1:03d}",
                    family=family,
                    owasp=spec.owasp,
                    goal=spec.goal,
                    messages=messages,
                    marker=marker if spec.goal == "marker" else None,
                    seed=index,
                    technique=draft.technique,
                    mutations=names,
                )
            )
    return attacks
