"""Scaling out on one machine, side by side in one run: `shipyard up` with 1 and 2 workers, on a
SQLite store and on Postgres, every case with the same Redis for limits and the same mock upstream.

    .venv/bin/python benchmarks/scale.py            # writes its section of docs/benchmarks.md
    .venv/bin/python benchmarks/scale.py --quick    # 4 s per case, prints only

Load from wrk (64 connections, then 1 for latency) against a route with a requests-per-minute limit
and a daily budget, so every request goes through the Redis limiter and is traced to the store.
The workers and the upstream may use every core; wrk runs on the cores after the first, as in the
gateway benchmark. Ray Serve is not measured: `shipyard serve --ray` is not built.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchdoc import free_port, write_section
from gateway_overhead import BENCH_KEY, BODY, LOAD_CPU, process, wait_ready, wrk

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PY = sys.executable
ALL_CPUS = f"0-{(os.cpu_count() or 1) - 1}"


def config(upstream: str) -> str:
    return f"""
providers:
  - {{name: up, type: openai, base_url: "{upstream}/v1", api_key: sk-none}}
models:
  - {{name: mock-model, provider: up, pricing: {{input_per_mtok: 0.15, output_per_mtok: 0.6}}}}
routes:
  - name: relay
    targets: [{{model: mock-model}}]
    limits: {{requests_per_min: 100000000, usd_per_day: 1000000}}
"""


def postgres_db() -> str:
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"shipyard_scale_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_db(url: str) -> None:
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def traced(store_url: str) -> int:
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM traces")).scalar() or 0)
    finally:
        engine.dispose()


def case(workers: int, store: str, upstream: str, seconds: int, tmp: Path) -> dict[str, Any]:
    home = tmp / f"{store}-{workers}"
    cfg = tmp / f"{store}-{workers}.yaml"
    cfg.write_text(config(upstream))
    store_url = postgres_db() if store == "postgres" else f"sqlite:///{home / 'shipyard.db'}"
    env = {
        "SHIPYARD_ADMIN_KEY": BENCH_KEY,
        "SHIPYARD_REDIS_URL": REDIS_URL,
        "SHIPYARD_WORKERS": str(workers),
        "SHIPYARD_LOG_LEVEL": "warning",
    }
    if store == "postgres":
        env["SHIPYARD_DATABASE_URL"] = store_url
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [PY, "-m", "shipyard", "up", "--port", str(port), "--home", str(home), "--config", str(cfg)]
    try:
        with process(cmd, ALL_CPUS, env, log=tmp / f"{store}-{workers}.log"):
            wait_ready(url)
            time.sleep(2 if workers > 1 else 0)  # every worker up, not only the first to answer
            wrk(url, BODY, 8, 2)
            thr = wrk(url, BODY, 64, seconds)
            lat = wrk(url, BODY, 1, seconds)
        count = traced(store_url)
    finally:
        if store == "postgres":
            drop_db(store_url)
    row = {"workers": workers, "store": store, "c64": thr, "c1": lat, "traced": count}
    print(
        f"{workers} worker(s), {store}: {thr['rps']:.0f} req/s at c=64, p99 {thr['p99_ms']:.1f} ms",
        flush=True,
    )
    return row


def render(rows: list[dict[str, Any]], seconds: int) -> str:
    base = {r["store"]: r["c64"]["rps"] for r in rows if r["workers"] == 1}
    lines = [
        "## Scaling out: workers and stores",
        "",
        f"`benchmarks/scale.py`, measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores, "
        f"{platform.machine()}, Python {platform.python_version()}: `shipyard up --workers N` in front of "
        f"`shipyard mock-upstream`, a route with a rate limit and a budget counted in Redis, every request "
        f"traced to the store; wrk (on CPU {LOAD_CPU}) with 64 connections for {seconds} s, then 1 "
        "connection. The workers and the upstream may use every core: they share the machine with wrk.",
        "",
        "| workers | store | req/s @ c=64 | vs 1 worker | p50 @ c=64 | p99 @ c=64 | p50 @ c=1 | p99 @ c=1 "
        "| errors | traces stored |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t, one = r["c64"], r["c1"]
        gain = f"{t['rps'] / base[r['store']]:.2f}×" if r["store"] in base else "—"
        lines.append(
            f"| {r['workers']} | {r['store']} | {t['rps']:,.0f} | {gain} | {t['p50_ms']:.1f} ms | "
            f"{t['p99_ms']:.1f} ms | {one['p50_ms']:.2f} ms | {one['p99_ms']:.2f} ms | "
            f"{t['errors'] + one['errors']} | {r['traced']:,} |"
        )
    lines += [
        "",
        f"On {os.cpu_count()} cores the second worker competes with wrk and the upstream for CPU: the gain "
        "shown is what one busy host gets, not what a machine with a free core per worker would (not "
        "measured here). Every answered request was traced (the last column counts the store's rows, "
        "warm-up included).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="Seconds per load level (default 10).")
    parser.add_argument("--quick", action="store_true", help="4 s per level; print only.")
    args = parser.parse_args()
    seconds = 4 if args.quick else args.seconds
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    answer = "Harbours shelter ships from storms and let trade flow between distant shores every day"
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        process(
            [PY, "-m", "shipyard", "mock-upstream", "--port", str(up_port), "--answer", answer], ALL_CPUS
        ),
    ):
        for store in ("sqlite", "postgres"):
            for workers in (1, 2):
                rows.append(case(workers, store, upstream, seconds, Path(tmp)))
    section = render(rows, seconds)
    print(section)
    if not args.quick:
        write_section("scale-workers", section)


if __name__ == "__main__":
    main()
