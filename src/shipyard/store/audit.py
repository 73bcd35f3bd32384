"""The audit log: who changed what, when, from what to what. Append-only.

Entries are written in the same transaction as the change they describe (pass ``conn``), so a
change cannot land without its entry. Each entry's hash covers its content and the previous
entry's hash: `verify` recomputes the chain and names the first entry that does not match.
The database refuses UPDATE and DELETE on the table (triggers from migration 0005).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from shipyard.store.db import Store
from shipyard.store.tables import audit_log

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is making a change: a key's name and role, or a command-line user (role None)."""

    name: str
    role: str | None = None
    source: str = "cli"


def _digest(prev: str, row: dict[str, Any]) -> str:
    content = {k: row.get(k) for k in ("at", "actor", "role", "action", "target", "outcome")}
    content["before"], content["after"], content["detail"] = (
        row.get("before"),
        row.get("after"),
        row.get("detail"),
    )
    payload = orjson.dumps(content, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(prev.encode() + payload).hexdigest()


def _jsonable(value: Any) -> Any:
    """What JSON columns can hold (and what hashes the same after a round trip)."""
    if value is None:
        return None
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str))


def record(
    store: Store,
    actor: Actor,
    action: str,
    target: str,
    *,
    before: Any = None,
    after: Any = None,
    outcome: str = "ok",
    detail: str | None = None,
    conn: sa.Connection | None = None,
) -> int:
    """Append one entry; returns its id."""
    if conn is None:
        with store.write() as own:
            return record(
                store,
                actor,
                action,
                target,
                before=before,
                after=after,
                outcome=outcome,
                detail=detail,
                conn=own,
            )
    if conn.dialect.name == "postgresql":
        # Serialise appends so two writers never chain onto the same previous entry.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7236512)"))
    prev = conn.execute(sa.select(audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1)).scalar()
    row = {
        "at": time.time(),
        "actor": actor.name[:256],
        "role": actor.role,
        "action": action,
        "target": target[:256],
        "outcome": outcome,
        "before": _jsonable(before),
        "after": _jsonable(after),
        "detail": detail,
        "source": actor.source[:64],
    }
    row["hash"] = _digest(prev or GENESIS, row)
    inserted = conn.execute(audit_log.insert().values(**row))
    assert inserted.inserted_primary_key is not None
    return int(inserted.inserted_primary_key[0])


def entry_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at,
        "actor": row.actor,
        "role": row.role,
        "action": row.action,
        "target": row.target,
        "outcome": row.outcome,
        "before": row.before,
        "after": row.after,
        "detail": row.detail,
        "source": row.source,
    }


def query(
    store: Store,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    outcome: str | None = None,
    since: float | None = None,
    until: float | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest first. ``action`` matches a prefix (``key`` finds ``key.create`` and ``key.revoke``);
    ``actor`` and ``target`` match substrings; ``before_id`` pages backwards."""
    q = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if actor:
        q = q.where(audit_log.c.actor.contains(actor, autoescape=True))
    if action:
        q = q.where(
            sa.or_(audit_log.c.action == action, audit_log.c.action.startswith(action + ".", autoescape=True))
        )
    if target:
        q = q.where(audit_log.c.target.contains(target, autoescape=True))
    if outcome:
        q = q.where(audit_log.c.outcome == outcome)
    if since is not None:
        q = q.where(audit_log.c.at >= since)
    if until is not None:
        q = q.where(audit_log.c.at < until)
    if before_id is not None:
        q = q.where(audit_log.c.id < before_id)
    with store.engine.connect() as conn:
        return [entry_dict(r) for r in conn.execute(q)]


def _rows(store: Store, after: int = 0, batch: int = 5000) -> Iterator[Any]:
    last = after
    while True:
        with store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(audit_log).where(audit_log.c.id > last).order_by(audit_log.c.id).limit(batch)
            ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].id


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far the chain has been verified: entries checked, the last one's id and hash."""

    entries: int = 0
    last_id: int = 0
    last_hash: str = GENESIS


def verify_from(store: Store, start: Checkpoint) -> tuple[Checkpoint, int | None]:
    """Verify the entries after ``start``: the new checkpoint, and the id of the first entry whose
    hash does not match (None if intact). A page that shows the chain's state keeps the checkpoint
    and reads only what was appended since."""
    prev, n, last_id = start.last_hash, start.entries, start.last_id
    for row in _rows(store, start.last_id):
        n += 1
        if _digest(prev, entry_dict(row)) != row.hash:
            return Checkpoint(n, last_id, prev), int(row.id)
        prev, last_id = row.hash, int(row.id)
    return Checkpoint(n, last_id, prev), None


def verify(store: Store) -> tuple[int, int | None]:
    """(entries checked, id of the first entry whose hash does not match, or None): the whole log."""
    checkpoint, broken = verify_from(store, Checkpoint())
    return checkpoint.entries, broken
