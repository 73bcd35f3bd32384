"""The response cache, side by side in one run: a route without a cache, a cached route on requests
it has not seen (misses: the cache stage's cost), the same route on a repeat (hits), and the same
for a `mode: semantic` route (a miss embeds the conversation and searches the index; a hit is a
paraphrase of a stored question). Then the semantic match on the labelled pairs of
`tests/data/cache_pairs.jsonl`: hit rate on paraphrases, false-hit rate on near-duplicates, with the
false-hit guard and with embedding similarity alone (what a semantic cache without it does).

    .venv/bin/python benchmarks/cache.py            # writes its sections of docs/benchmarks.md
    .venv/bin/python benchmarks/cache.py --quick    # fewer requests, prints only

One `shipyard up` with the mock provider standing in for a model that takes 20 ms; requests one at
a time (concurrency 1) from httpx. *Gateway time* is the trace's own latency (request in to answer
out, inside the server), read from the store; *client p50/p99* is what the caller waited.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import string
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from benchdoc import start_shipyard, write_section

KEY = "sk-shp-" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
MODEL_MS = 20
CONFIG = f"""
providers: [{{name: mock, type: mock, latency_ms: {MODEL_MS}}}]
models: [{{name: m, provider: mock, pricing: {{input_per_mtok: 1, output_per_mtok: 2}}}}]
routes:
  - {{name: plain, targets: [{{model: m}}]}}
  - {{name: cached, targets: [{{model: m}}], cache: {{ttl: 600}}}}
  - {{name: semantic, targets: [{{model: m}}], cache: {{ttl: 600, mode: semantic}}}}
"""
PAIRS = Path(__file__).resolve().parent.parent / "tests" / "data" / "cache_pairs.jsonl"


def start(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    return start_shipyard(home, CONFIG, {"SHIPYARD_ADMIN_KEY": KEY})


def measure(
    client: httpx.Client, route: str, n: int, repeat: bool, paraphrase: bool = False
) -> dict[str, Any]:
    """``n`` requests to ``route``: the same question each time (``repeat``; with ``paraphrase``, a
    paraphrase of the question a miss stored) or a new one each time."""
    waits: list[float] = []
    ids: list[str] = []
    answers: dict[str, int] = {}
    for i in range(n):
        if paraphrase:
            question = "What tide is next?"
        else:
            question = "Which tide is next?" if repeat else f"Which tide is next, case {i}?"
        body = {"model": route, "messages": [{"role": "user", "content": question}]}
        t0 = time.perf_counter()
        r = client.post("/v1/chat/completions", json=body)
        waits.append((time.perf_counter() - t0) * 1000)
        r.raise_for_status()
        ids.append(r.headers["x-shipyard-trace-id"])
        verdict = r.headers.get("x-shipyard-cache", "none")
        answers[verdict] = answers.get(verdict, 0) + 1
    waits.sort()
    return {
        "ids": ids,
        "client_p50": waits[len(waits) // 2],
        "client_p99": waits[int(len(waits) * 0.99)],
        **answers,
    }


def gateway_times(home: Path, ids: list[str]) -> list[float]:
    engine = sa.create_engine(f"sqlite:///{home / 'shipyard.db'}")
    wanted = set(ids)
    deadline = time.monotonic() + 30
    while True:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT trace_id, latency_ms FROM traces")).all()
        found = {tid: ms for tid, ms in rows if tid in wanted}
        if len(found) == len(wanted) or time.monotonic() > deadline:
            return sorted(found.values())
        time.sleep(0.3)


def run(n: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        proc, url = start(home)
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
                measure(client, "plain", 20, repeat=False)  # warm up both paths
                measure(client, "cached", 1, repeat=True)
                measure(client, "semantic", 1, repeat=True)  # loads the embedding model
                cases = [
                    ("no cache (route without `cache:`)", measure(client, "plain", n, repeat=False)),
                    ("cache miss (a new request)", measure(client, "cached", n, repeat=False)),
                    ("cache hit (a repeat)", measure(client, "cached", n, repeat=True)),
                    ("semantic miss (a new request)", measure(client, "semantic", n, repeat=False)),
                ]
                measure(client, "semantic", 1, repeat=True)  # stores the question paraphrased next
                cases.append(
                    (
                        f"semantic hit (a paraphrase, among {n + 1} stored)",
                        measure(client, "semantic", n, repeat=True, paraphrase=True),
                    )
                )
            rows = []
            for label, r in cases:
                times = gateway_times(home, r["ids"])
                rows.append(
                    {
                        "case": label,
                        "n": n,
                        "gateway_p50": statistics.median(times),
                        "gateway_p99": times[int(len(times) * 0.99)],
                        "client_p50": r["client_p50"],
                        "client_p99": r["client_p99"],
                        "hits": r.get("hit", 0),
                    }
                )
            return rows
        finally:
            proc.terminate()
            proc.wait(30)


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "## Response cache: hits, misses and no cache",
        "",
        f"`benchmarks/cache.py`: one `shipyard up`, the mock provider standing in for a model that takes "
        f"{MODEL_MS} ms, {rows[0]['n']} requests per case one at a time. *Gateway time* is the trace's "
        "latency inside the server; *client* is what the caller waited (loopback HTTP included).",
        "",
        "| case | gateway p50 | gateway p99 | client p50 | client p99 | hits |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['gateway_p50']:.3f} ms | {r['gateway_p99']:.3f} ms | "
            f"{r['client_p50']:.2f} ms | {r['client_p99']:.2f} ms | {r['hits']} / {r['n']} |"
        )
    return "\n".join(lines) + "\n"


async def pair_scores() -> list[tuple[dict[str, Any], float, str | None]]:
    """Each labelled pair with its similarity and the guard's verdict (None: no conflict)."""
    from shipyard.gateway.meaning import conflict, meaning
    from shipyard.gateway.semantic import Embedder

    embedder = Embedder()
    out = []
    for line in PAIRS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        a = [(m["role"], m["content"]) for m in row["a"]]
        b = [(m["role"], m["content"]) for m in row["b"]]
        va, vb = await embedder.vectors(a), await embedder.vectors(b)
        score = float(va[0] @ vb[0])
        if va[1].any() or vb[1].any():
            score = min(score, float(va[1] @ vb[1]))
        out.append((row, score, conflict(meaning([t for _, t in a]), meaning([t for _, t in b]))))
    return out


def quality() -> str:
    from shipyard.config.schema import CacheConfig

    scored = asyncio.run(pair_scores())
    default = CacheConfig().threshold
    same = [(s, w) for r, s, w in scored if r["label"] == "same"]
    differ = [(r["kind"], s, w) for r, s, w in scored if r["label"] == "differ"]

    def rates(threshold: float, guard: bool) -> tuple[float, float, int]:
        hits = sum(1 for s, w in same if s >= threshold and (w is None or not guard))
        false = sum(1 for _, s, w in differ if s >= threshold and (w is None or not guard))
        return hits / len(same), false / len(differ), false

    # The best similarity alone can do while keeping false hits at 1% or under.
    alone = min(
        (t / 1000 for t in range(500, 1001) if rates(t / 1000, guard=False)[1] <= 0.01),
        default=1.0,
    )
    lines = [
        "## Semantic cache: paraphrases and near-duplicates",
        "",
        f"`benchmarks/cache.py` on `tests/data/cache_pairs.jsonl`: {len(scored)} labelled pairs written for "
        f"Shipyard ({len(same)} paraphrase pairs that one answer serves, {len(differ)} near-duplicates that "
        "need another answer; how they were made is at the top of `tests/data/cache_pairs.yaml`). Similarity "
        "is the cache's own (WordLlama, the smaller cosine of the last turns and of the turns before). "
        "*Similarity alone* is a semantic cache without the false-hit guard, at the same threshold and at "
        "the lowest threshold that keeps its false hits at 1% or under.",
        "",
        "| matcher | threshold | paraphrase hit rate | false-hit rate (near-duplicates) |",
        "|---|---|---|---|",
    ]
    for label, threshold, guard in (
        ("**Shipyard: similarity + false-hit guard (default)**", default, True),
        ("similarity alone", default, False),
        ("similarity alone, tuned to ≤ 1% false hits", alone, False),
    ):
        hit, false, n_false = rates(threshold, guard)
        lines.append(f"| {label} | {threshold:.3f} | {hit:.1%} | {false:.1%} ({n_false} of {len(differ)}) |")
    lines += ["", "False hits by what changed, at the default threshold:", ""]
    lines += ["| changed | pairs | similarity alone | with the guard |", "|---|---|---|---|"]
    for kind in sorted({k for k, _, _ in differ}):
        rows = [(s, w) for k, s, w in differ if k == kind]
        alone_n = sum(1 for s, _ in rows if s >= default)
        guarded = sum(1 for s, w in rows if s >= default and w is None)
        lines.append(f"| {kind} | {len(rows)} | {alone_n} | {guarded} |")
    refused = {}
    for s, w in same:
        if s >= default and w is not None:
            refused[w] = refused.get(w, 0) + 1
    if refused:
        reasons = ", ".join(f"{n} {w}" for w, n in sorted(refused.items(), key=lambda x: -x[1]))
        lines += [
            "",
            f"What the guard costs: paraphrases above the threshold that it refused (a model call each, "
            f"never a wrong answer): {reasons}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="Requests per case.")
    parser.add_argument("--quick", action="store_true", help="50 requests per case; print only.")
    args = parser.parse_args()
    rows = run(50 if args.quick else args.n)
    section = render(rows)
    print(section)
    semantic = quality()
    print(semantic)
    if not args.quick:
        write_section("response-cache", section)
        write_section("semantic-cache", semantic)


if __name__ == "__main__":
    main()
