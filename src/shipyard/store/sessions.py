"""Dashboard sessions that were ended by logging out (the cookie is signed, not stored)."""

from __future__ import annotations

import hashlib
import time

import sqlalchemy as sa

from shipyard.store.db import Store
from shipyard.store.tables import ended_sessions


def digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def end(store: Store, cookie: str, key_id: str, expires_at: float) -> str:
    """Record that the session ``cookie`` is over; returns its digest."""
    d = digest(cookie)
    now = time.time()
    with store.engine.begin() as conn:
        exists = conn.execute(sa.select(ended_sessions.c.digest).where(ended_sessions.c.digest == d)).first()
        if exists is None:
            conn.execute(
                ended_sessions.insert().values(digest=d, key_id=key_id, expires_at=expires_at, ended_at=now)
            )
        # Rows past their expiry are dead weight: the cookie would be refused as expired anyway.
        conn.execute(ended_sessions.delete().where(ended_sessions.c.expires_at < now))
    return d


def ended(store: Store) -> tuple[float, set[str]]:
    """The newest end time and the digests of every ended session still within its expiry."""
    now = time.time()
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(ended_sessions.c.digest, ended_sessions.c.ended_at).where(
                ended_sessions.c.expires_at >= now
            )
        ).all()
    return max((r.ended_at for r in rows), default=0.0), {r.digest for r in rows}


def revision(store: Store) -> float:
    """Moves whenever a session is ended: running gateways compare it to reload the list."""
    with store.engine.connect() as conn:
        value = conn.execute(sa.select(sa.func.max(ended_sessions.c.ended_at))).scalar()
    return float(value or 0.0)
