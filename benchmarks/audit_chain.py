"""What the keyed, anchored audit chain costs: an append (with and without its anchor), a full
`shipyard audit verify`, and the dashboard's badge (`audit.Monitor`), first view and later views,
on a log of --entries entries (default 100 000).

    .venv/bin/python benchmarks/audit_chain.py                       # SQLite in a temporary home
    .venv/bin/python benchmarks/audit_chain.py --store postgresql+psycopg://postgres@127.0.0.1/bench

The log is filled directly with correctly chained entries (one transaction per 5 000) whose
before/after are prompt specs of about 600 bytes, as `prompt.put` entries carry, and one anchor
per entry, as a server writes them; then timed:

- *append*: `audit.record` in its own transaction, p50/p95 over --appends appends, once with the
  anchor (count + head query, one line appended to `<home>/audit.anchor`, no fsync) and once without;
- *verify*: `audit.verify` over the whole log (what the CLI and `/api/audit/verify` run);
- *badge*: `Monitor.check` on a fresh monitor (a full walk), then again after one more append
  (re-read of the verified entries' stored values as a digest + a full check of the new one).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from shipyard.store import audit
from shipyard.store.audit_seal import GENESIS, entry_hash, seal_of, write_anchor
from shipyard.store.db import Store
from shipyard.store.tables import audit_log

SPEC = {
    "messages": [
        {"role": "system", "content": "You are the support assistant of ACME. " * 8},
        {"role": "user", "content": "{{ question }}"},
    ],
    "params": {"temperature": 0.2, "max_tokens": 512},
}


def fill(store: Store, n: int) -> None:
    seal = seal_of(store, create=True)
    assert seal.key is not None
    prev, at = GENESIS, time.time() - n
    for start in range(0, n, 5000):
        rows = []
        for i in range(start + 1, min(n, start + 5000) + 1):
            row: dict[str, Any] = {
                "id": i,
                "at": at + i,
                "actor": "alice (key_0123456789abcdef)",
                "role": "admin",
                "action": "prompt.put",
                "target": f"prompt:p{i % 50}",
                "outcome": "ok",
                "before": {"version": i, "spec": SPEC},
                "after": {"version": i + 1, "spec": SPEC, "status": "created"},
                "detail": None,
                "source": "api 10.0.0.7",
                "hash_key_id": seal.key_id,
            }
            row["hash"] = prev = entry_hash(seal.key, prev, row)
            rows.append(row)
        with store.engine.begin() as conn:
            conn.execute(audit_log.insert(), rows)
        for row in rows:  # as a server writes them: one anchor per change
            write_anchor(seal, row["id"], row["id"], row["hash"])
    if store.engine.dialect.name == "postgresql":
        # What autovacuum does to a table that grew: without statistics the planner counts the
        # entries after an id with a scan of the whole table.
        with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE audit_log"))


def ms(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def appends(store: Store, n: int) -> list[float]:
    who = audit.Actor("bench", "admin", "api 127.0.0.1")
    return [
        ms(lambda: audit.record(store, who, "route.put", "route:bench", after={"spec": SPEC}))
        for _ in range(n)
    ]


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--appends", type=int, default=200)
    ap.add_argument("--store", help="a Postgres URL (an empty database); default: SQLite in a temporary home")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        store = Store(args.store or f"sqlite:///{home / 'shipyard.db'}", home=home)
        store.migrate()
        t = time.perf_counter()
        fill(store, args.entries)
        took = time.perf_counter() - t
        print(f"store: {store.engine.dialect.name}; filled {args.entries} entries in {took:.1f}s")

        with_anchor = appends(store, args.appends)
        real_anchor = audit._anchor
        audit._anchor = lambda store: None  # type: ignore[assignment]
        without = appends(store, args.appends)
        audit._anchor = real_anchor  # type: ignore[assignment]
        for name, values in (("append, anchored", with_anchor), ("append, no anchor", without)):
            print(f"{name:<20} p50 {statistics.median(values):7.2f} ms   p95 {p(values, 0.95):7.2f} ms")

        full = [ms(lambda: audit.verify(store, pin=False)) for _ in range(3)]
        verdict = audit.verify(store, pin=False)
        assert verdict.intact, verdict
        print(f"verify ({verdict.entries} entries)   {min(full):7.0f} ms (best of 3)")

        monitor = audit.Monitor()
        first = ms(lambda: monitor.check(store))
        later = []
        for _ in range(3):
            audit.record(store, audit.Actor("bench"), "route.put", "route:bench")
            later.append(ms(lambda: monitor.check(store)))
        assert monitor.check(store).intact
        print(f"badge, first view    {first:7.0f} ms")
        print(f"badge, later view    {min(later):7.0f} ms (best of 3, one new entry each)")
        store.close()


if __name__ == "__main__":
    sys.exit(main())
