"""Spend and usage per limited subject (an API key or a route) per UTC day and month.

The in-process limiter keeps the live counters in memory and adds what it settled here in batches,
so a restart (or a second look from the CLI and dashboard) sees the day's and month's spend. Every
write is an atomic add (``INSERT … ON CONFLICT DO UPDATE SET usd = usd + excluded.usd``): two
writers on one Postgres store add up instead of overwriting each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from shipyard.store.db import Store
from shipyard.store.tables import usage_counters

WINDOWS = ("day", "month")


@dataclass(frozen=True, slots=True)
class UsageKey:
    subject: str  # `key:<key_id>` or `route:<name>`
    window: str  # day | month
    start: float  # epoch seconds of the window's start (UTC)


@dataclass(slots=True)
class UsageRow:
    usd: float = 0.0
    tokens: int = 0
    requests: int = 0


def add_usage(store: Store, deltas: Mapping[UsageKey, UsageRow]) -> None:
    """Add ``deltas`` to the stored counters (creating rows as needed), in one transaction."""
    if not deltas:
        return
    params = [
        {
            "subject": k.subject,
            "window": k.window,
            "start": k.start,
            "usd": v.usd,
            "tokens": v.tokens,
            "requests": v.requests,
        }
        # Sorted, so that concurrent writers take row locks in the same order (no deadlock).
        for k, v in sorted(deltas.items(), key=lambda kv: (kv[0].subject, kv[0].window, kv[0].start))
    ]
    dialect = postgresql if store.engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(usage_counters)
    stmt = stmt.on_conflict_do_update(
        index_elements=[usage_counters.c.subject, usage_counters.c.window, usage_counters.c.start],
        set_={
            "usd": usage_counters.c.usd + stmt.excluded.usd,
            "tokens": usage_counters.c.tokens + stmt.excluded.tokens,
            "requests": usage_counters.c.requests + stmt.excluded.requests,
        },
    )
    with store.engine.begin() as conn:
        conn.execute(stmt, params)


def load_usage(store: Store, windows: Iterable[tuple[str, float]]) -> dict[UsageKey, UsageRow]:
    """Every subject's counters for the given ``(window, start)`` pairs (the current day and month)."""
    pairs = list(windows)
    if not pairs:
        return {}
    cond = sa.or_(*(sa.and_(usage_counters.c.window == w, usage_counters.c.start == s) for w, s in pairs))
    q = sa.select(usage_counters).where(cond)
    with store.engine.connect() as conn:
        return {
            UsageKey(r.subject, r.window, r.start): UsageRow(r.usd, r.tokens, r.requests)
            for r in conn.execute(q)
        }


def usage_of(store: Store, subject: str, window: str | None = None) -> list[tuple[UsageKey, UsageRow]]:
    """One subject's stored counters, newest window first (for reports and the CLI)."""
    q = sa.select(usage_counters).where(usage_counters.c.subject == subject)
    if window is not None:
        q = q.where(usage_counters.c.window == window)
    q = q.order_by(usage_counters.c.start.desc())
    with store.engine.connect() as conn:
        return [
            (UsageKey(r.subject, r.window, r.start), UsageRow(r.usd, r.tokens, r.requests))
            for r in conn.execute(q)
        ]
