"""What a bench sends: request bodies (without ``model`` and ``stream``, which the run sets) and,
for replayed traces, when each was sent.

Three sources: a registry dataset or a JSONL file (each example's ``input`` as the eval runner sends
it: chat messages, or template variables for a route with a prompt), synthetic prompts of given
lengths (seeded, so two runs send the same text), and stored traces replayed with their messages,
sampling parameters and arrival times.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shipyard.bench.errors import BenchError
from shipyard.registry.datasets import get_examples
from shipyard.store.db import Store

MAX_ITEMS = 100_000  # requests a workload may hold (one per example, trace or synthetic prompt)
_PAGE = 500  # examples read from the store at a time

# Words of synthetic prompts: common English, so a tokenizer sees about one token per word.
_VOCABULARY = (
    "time year people way day man thing woman life child world school state family student group "
    "country problem hand part place case week company system program question work government "
    "number night point home water room mother area money story fact month lot right study book eye "
    "job word business issue side kind head house service friend father power hour game line end "
    "member law car city community name president team minute idea kid body information back parent "
    "face others level office door health person art war history party result change morning reason "
    "research girl guy moment air teacher force education"
)
_WORDS = _VOCABULARY.split()

# Sampling parameters a replayed trace carries on its root span (OTel GenAI names) → body fields.
_REPLAY_PARAMS = {
    "gen_ai.request.temperature": "temperature",
    "gen_ai.request.top_p": "top_p",
    "gen_ai.request.max_tokens": "max_tokens",
    "gen_ai.request.stop_sequences": "stop",
    "gen_ai.request.seed": "seed",
}


@dataclass(frozen=True)
class Item:
    """One request body to send; ``at`` is its arrival offset in seconds (replays only)."""

    body: dict[str, Any]
    at: float | None = None


@dataclass
class Workload:
    items: list[Item]
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def timed(self) -> bool:
        return bool(self.items) and self.items[0].at is not None


def _body_of(value: Any, where: str) -> dict[str, Any]:
    """An example's ``input`` as a request body: messages, variables, or a prompt as one user turn."""
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m for m in value):
        return {"messages": value}
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        return dict(value)
    if isinstance(value, dict) and isinstance(value.get("prompt"), str):
        return {"messages": [{"role": "user", "content": value["prompt"]}]}
    if isinstance(value, dict) and value:
        return {"messages": [], "variables": value}
    if isinstance(value, str) and value.strip():
        return {"messages": [{"role": "user", "content": value}]}
    raise BenchError(
        f"{where}: `input` must be chat messages, template variables (an object) or text; got "
        f"{orjson.dumps(value, default=str).decode()[:80]}",
        param="dataset",
    )


def parse_synthetic(spec: str, seed: int, count: int) -> Workload:
    """``input=200,output=64``: ``count`` prompts of ``input`` words, ``max_tokens`` = ``output``."""
    sizes: dict[str, int] = {}
    for part in spec.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in ("input", "output") or not re.fullmatch(r"\s*\d+\s*", value):
            raise BenchError(
                f"--synthetic: bad term `{part.strip()}`; write input=WORDS,output=TOKENS with whole "
                "numbers, e.g. --synthetic input=200,output=64",
                param="synthetic",
            )
        sizes[name] = int(value)
    for name, low, high in (("input", 1, 100_000), ("output", 1, 100_000)):
        if name not in sizes:
            raise BenchError(f"--synthetic: give {name}=N (e.g. input=200,output=64)", param="synthetic")
        if not low <= sizes[name] <= high:
            raise BenchError(
                f"--synthetic: {name}={sizes[name]} is out of range; use {low}..{high}", param="synthetic"
            )
    rng = random.Random(seed)
    # Distinct prompts (a cache in front of the model must not turn the bench into a cache test),
    # at most 1,000 of them: a longer run cycles through them.
    items = []
    for i in range(min(count, 1000)):
        words = [f"#{i}"] + [rng.choice(_WORDS) for _ in range(sizes["input"] - 1)]
        items.append(
            Item({"messages": [{"role": "user", "content": " ".join(words)}], "max_tokens": sizes["output"]})
        )
    return Workload(
        items, {"kind": "synthetic", "input_words": sizes["input"], "output_tokens": sizes["output"]}
    )


def from_jsonl(path: Path, max_tokens: int | None) -> Workload:
    """A JSONL file of examples (``{"input": …}`` per line, as `shipyard datasets import` reads)."""
    if not path.is_file():
        raise BenchError(f"--dataset: no dataset file at `{path}`", param="dataset")
    items = []
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise BenchError(f"--dataset: {path}:{n}: not JSON ({exc})", param="dataset") from None
            value = row.get("input", row) if isinstance(row, dict) else row
            items.append(Item(_with(_body_of(value, f"{path}:{n}"), max_tokens)))
            if len(items) >= MAX_ITEMS:
                break
    if not items:
        raise BenchError(f"--dataset: `{path}` holds no examples", param="dataset")
    return Workload(items, {"kind": "file", "path": str(path), "examples": len(items)})


def from_examples(ref: str, version: int, inputs: Sequence[Any], max_tokens: int | None) -> Workload:
    """Examples of a registry dataset version (their ``input`` values)."""
    items = [Item(_with(_body_of(v, f"{ref} example {i}"), max_tokens)) for i, v in enumerate(inputs)]
    if not items:
        raise BenchError(f"--dataset: `{ref}` has no examples", param="dataset")
    return Workload(items, {"kind": "dataset", "dataset": ref, "version": version, "examples": len(items)})


def from_dataset(store: Store, ref: str, max_tokens: int | None) -> Workload:
    """A registry dataset version (``name``, ``name@v3``), read page by page, at most MAX_ITEMS."""
    first = get_examples(store, ref, 0, _PAGE)
    inputs = [e.input for e in first.examples]
    ref = first.version.ref  # pinned: later pages come from the same version
    while len(inputs) < min(first.total, MAX_ITEMS):
        page = get_examples(store, ref, len(inputs), _PAGE)
        if not page.examples:
            break
        inputs += [e.input for e in page.examples]
    return from_examples(ref, first.version.version, inputs[:MAX_ITEMS], max_tokens)


def from_traces(
    rows: Sequence[Mapping[str, Any]],
    params: Sequence[Mapping[str, Any]],
    time_scale: float,
    route: str | None,
) -> Workload:
    """Stored chat traces (oldest first) with their root spans' sampling parameters: the arrival of
    each is its start time after the first one's, divided by ``time_scale`` (2: twice as fast)."""
    items = []
    first: float | None = None
    for row, attrs in zip(rows, params, strict=True):
        messages = row.get("input")
        if row.get("operation") != "chat" or not isinstance(messages, list) or not messages:
            continue
        body: dict[str, Any] = {"messages": messages}
        for attr, name in _REPLAY_PARAMS.items():
            if attrs.get(attr) is not None:
                body[name] = attrs[attr]
        start = float(row["start_time"])
        first = start if first is None else first
        items.append(Item(body, at=(start - first) / time_scale))
    if not items:
        where = f" of route `{route}`" if route else ""
        raise BenchError(
            f"--replay: no stored chat traces{where} with captured messages in the selection; widen "
            "--since, or check that the server captures inputs (setting `capture`)",
            param="replay",
        )
    span = items[-1].at or 0.0
    return Workload(
        items,
        {
            "kind": "replay",
            "route": route,
            "traces": len(items),
            "time_scale": time_scale,
            "span_s": round(span, 3),
        },
    )


def _with(body: dict[str, Any], max_tokens: int | None) -> dict[str, Any]:
    if max_tokens is not None and "max_tokens" not in body:
        body = {**body, "max_tokens": max_tokens}
    return body
