"""Eval queries: the target-output cache."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from shipyard.store.db import Store
from shipyard.store.tables import eval_cache


def cached(store: Store, key: str) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        value = conn.execute(sa.select(eval_cache.c.observation).where(eval_cache.c.key == key)).scalar()
    return dict(value) if value is not None else None


def remember(store: Store, entries: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Store observations by key; a key already there keeps its first observation."""
    if not entries:
        return
    now = time.time()
    keys = [k for k, _ in entries]
    with store.write() as conn:
        have = set(conn.execute(sa.select(eval_cache.c.key).where(eval_cache.c.key.in_(keys))).scalars())
        rows = []
        for key, obs in entries:
            if key not in have:
                have.add(key)
                rows.append({"key": key, "observation": obs, "created_at": now})
        if rows:
            conn.execute(eval_cache.insert(), rows)
