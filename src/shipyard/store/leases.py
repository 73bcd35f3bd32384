"""Leases: a background job that must run once across gateway workers (``shipyard up --workers N``,
or several servers on one store) runs in whichever worker holds its lease.

A lease is a row (name, holder, token, expires_at). Taking or renewing it is one conditional
UPDATE — "mine already, or expired" — which the database applies atomically on SQLite and on
Postgres, so two workers can never both hold it. A holder renews well before ``expires_at``; when
it dies or hangs, another worker takes the lease over once it expires, and the takeover increments
``token``. The token fences: a worker acts only while :func:`holds` confirms its token is still
current, so one that lost its lease (a long pause, a partition) stops instead of acting twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from shipyard.store.db import Store
from shipyard.store.tables import leases


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    holder: str
    token: int
    expires_at: float


def acquire(store: Store, name: str, holder: str, ttl: float, now: float | None = None) -> Lease | None:
    """Take or renew the lease ``name`` for ``holder`` for ``ttl`` seconds; None while another
    holder's lease has not expired."""
    now = time.time() if now is None else now
    try:
        return _acquire(store, name, holder, ttl, now)
    except sa.exc.IntegrityError:  # two first holders at once (Postgres): the other one won
        return None


def _acquire(store: Store, name: str, holder: str, ttl: float, now: float) -> Lease | None:
    with store.write() as conn:
        row = conn.execute(sa.select(leases).where(leases.c.name == name)).one_or_none()
        if row is None:
            conn.execute(sa.insert(leases).values(name=name, holder=holder, token=1, expires_at=now + ttl))
            return Lease(name, holder, 1, now + ttl)
        if row.holder == holder and row.expires_at > now:
            token = int(row.token)
        elif row.expires_at <= now:
            token = int(row.token) + 1  # a takeover (or a holder coming back after expiry): fenced
        else:
            return None
        done = conn.execute(
            sa.update(leases)
            .where(leases.c.name == name, leases.c.token == row.token, leases.c.holder == row.holder)
            .values(holder=holder, token=token, expires_at=now + ttl)
        )
        if done.rowcount != 1:  # someone else changed it between our read and write
            return None
        return Lease(name, holder, token, now + ttl)


def holds(store: Store, lease: Lease, now: float | None = None) -> bool:
    """Whether ``lease`` is still the current one (same token and holder, not expired)."""
    now = time.time() if now is None else now
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(leases).where(leases.c.name == lease.name)).one_or_none()
    return (
        row is not None
        and row.holder == lease.holder
        and int(row.token) == lease.token
        and row.expires_at > now
    )


def release(store: Store, lease: Lease) -> None:
    """Give the lease up at once (a clean shutdown), so another worker need not wait for expiry."""
    with store.write() as conn:
        conn.execute(
            sa.update(leases)
            .where(
                leases.c.name == lease.name, leases.c.token == lease.token, leases.c.holder == lease.holder
            )
            .values(expires_at=0.0)
        )


def current(store: Store, name: str) -> Lease | None:
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(leases).where(leases.c.name == name)).one_or_none()
    return Lease(row.name, row.holder, int(row.token), float(row.expires_at)) if row is not None else None
