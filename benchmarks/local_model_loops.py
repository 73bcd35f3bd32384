"""The embedded base model's loops, before and after the local provider's defaults against them.

    .venv/bin/python benchmarks/local_model_loops.py           # writes docs/benchmarks.md
    .venv/bin/python benchmarks/local_model_loops.py --quick   # prints only

Twelve short chat prompts, greedy, `max_tokens` 96, through the `local` provider twice: with the
old behaviour (no repeat penalty, no loop guard) and with the defaults (`default_repeat_penalty`
1.1, `max_repeats` 4). Counted: answers that ran to `max_tokens`, answers with a line repeated three
times or more, and tokens generated. The example eval suite (`examples/evals/suite.yaml`) is
reported by `shipyard eval run`; its answers are identical under both settings.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time
from pathlib import Path
from typing import Any

from benchdoc import write_section
from shipyard.providers.base import Call
from shipyard.providers.local import LocalOptions, LocalProvider

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
PROMPTS = [
    "Translate 'good morning' into French",
    "List the days of the week.",
    "Write a haiku about the sea.",
    "Count from one to five.",
    "Say hello in three languages.",
    "Describe a lighthouse.",
    "Give me a tip for sleeping better.",
    "What is the capital of France?",
    "Name three colors.",
    "Write a short poem about rain.",
    "What do sailors eat?",
    "Spell the word harbour.",
]
SETTINGS = {
    "before (no penalty, no loop guard)": {"default_repeat_penalty": 1.0, "max_repeats": 0},
    "after (the defaults)": {},
}


def looping(text: str) -> bool:
    lines = [line.strip().lower().strip(".,!") for line in text.splitlines() if line.strip()]
    counts = collections.Counter(lines)
    return bool(counts) and max(counts.values()) >= 3


async def answers(options: dict[str, Any]) -> list[tuple[str, str, int, str]]:
    provider = LocalProvider("local", LocalOptions(**options))
    await provider.start()
    try:
        out = []
        for prompt in PROMPTS:
            body = {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 96}
            c = await provider.chat(Call(body=body, model="m", timeout=120))
            out.append((prompt, c.finish_reason or "", c.usage.output_tokens, c.text))
        return out
    finally:
        await provider.close()


def report(results: dict[str, list[tuple[str, str, int, str]]]) -> str:
    lines = [
        "## Embedded model: loops before and after the defaults against them",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')}: {len(PROMPTS)} chat prompts to the bundled "
        "Gemma 3 270M, greedy, `max_tokens` 96. Reproduce with "
        "`.venv/bin/python benchmarks/local_model_loops.py`.",
        "",
        "| | answers that ran to max_tokens | answers repeating a line 3+ times | tokens generated |",
        "|---|---|---|---|",
    ]
    for name, rows in results.items():
        hit = sum(r[1] == "length" for r in rows)
        loops = sum(looping(r[3]) for r in rows)
        lines.append(f"| {name} | {hit} of {len(rows)} | {loops} | {sum(r[2] for r in rows)} |")
    lines += ["", "| prompt | before | after |", "|---|---|---|"]
    before, after = results.values()
    for (prompt, _, _, a), (_, _, _, b) in zip(before, after, strict=True):

        def cell(text: str) -> str:
            short = text if len(text) <= 70 else text[:70] + "…"
            return short.replace("\n", "⏎").replace("|", "\\|")

        lines.append(f"| {prompt} | {cell(a)} | {cell(b)} |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="print only")
    args = parser.parse_args()
    results = {name: asyncio.run(answers(opts)) for name, opts in SETTINGS.items()}
    section = report(results)
    print(section)
    if not args.quick:
        write_section("local-model-loops", section)
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
