"""The exact response cache, side by side in one run: a route without a cache, a cached route on
requests it has not seen (misses: the cache stage's cost), and the same route on a repeat (hits).

    .venv/bin/python benchmarks/cache.py            # writes its section of docs/benchmarks.md
    .venv/bin/python benchmarks/cache.py --quick    # fewer requests, prints only

One `shipyard up` with the mock provider standing in for a model that takes 20 ms; requests one at
a time (concurrency 1) from httpx. *Gateway time* is the trace's own latency (request in to answer
out, inside the server), read from the store; *client p50/p99* is what the caller waited.
"""

from __future__ import annotations

import argparse
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
"""


def start(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    return start_shipyard(home, CONFIG, {"SHIPYARD_ADMIN_KEY": KEY})


def measure(client: httpx.Client, route: str, n: int, repeat: bool) -> dict[str, Any]:
    """``n`` requests to ``route``: the same question each time (``repeat``) or a new one each time."""
    waits: list[float] = []
    ids: list[str] = []
    answers: dict[str, int] = {}
    for i in range(n):
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
                cases = [
                    ("no cache (route without `cache:`)", measure(client, "plain", n, repeat=False)),
                    ("cache miss (a new request)", measure(client, "cached", n, repeat=False)),
                    ("cache hit (a repeat)", measure(client, "cached", n, repeat=True)),
                ]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="Requests per case.")
    parser.add_argument("--quick", action="store_true", help="50 requests per case; print only.")
    args = parser.parse_args()
    rows = run(50 if args.quick else args.n)
    section = render(rows)
    print(section)
    if not args.quick:
        write_section("response-cache", section)


if __name__ == "__main__":
    main()
