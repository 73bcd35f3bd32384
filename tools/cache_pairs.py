"""Expand the hand-written groups of ``tests/data/cache_pairs.yaml`` into labelled prompt pairs,
``tests/data/cache_pairs.jsonl``, which ``benchmarks/cache.py`` measures the semantic cache on.

    python tools/cache_pairs.py            # rewrite the JSONL
    python tools/cache_pairs.py --check    # exit 1 if the JSONL is not what the YAML gives

Each group gives: every (base, same) and (same, same) pair, labelled ``same``; every (base, differ)
pair, labelled ``differ`` with what changed. A pair's prompts are whole conversations: the group's
system prompt and earlier turns (if any), then the question.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import yaml

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SOURCE = DATA / "cache_pairs.yaml"
PAIRS = DATA / "cache_pairs.jsonl"


def conversation(group: dict[str, Any], question: str) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    if group.get("system"):
        messages.append({"role": "system", "content": group["system"]})
    for i, turn in enumerate(group.get("context") or []):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": turn})
    messages.append({"role": "user", "content": question})
    return messages


def expand(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for n, group in enumerate(groups):
        same = [group["base"], *group["same"]]
        for a, b in itertools.combinations(same, 2):
            rows.append({"group": n, "label": "same", "kind": "paraphrase", "a": a, "b": b})
        for kind, text in group["differ"]:
            rows.append({"group": n, "label": "differ", "kind": kind, "a": group["base"], "b": text})
    for row in rows:
        group = groups[row["group"]]
        row["a"], row["b"] = conversation(group, row["a"]), conversation(group, row["b"])
    return rows


def render() -> str:
    groups = yaml.safe_load(SOURCE.read_text(encoding="utf-8"))["groups"]
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in expand(groups))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSONL is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not PAIRS.exists() or PAIRS.read_text(encoding="utf-8") != text:
            print(f"{PAIRS} is stale: run python tools/cache_pairs.py", file=sys.stderr)
            return 1
        return 0
    PAIRS.write_text(text, encoding="utf-8")
    print(f"{PAIRS}: {text.count(chr(10))} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
