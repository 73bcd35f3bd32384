"""The audit log: who changed what, when, from what to what. Append-only.

Entries are written in the same transaction as the change they describe (pass ``conn``), so a
change cannot land without its entry. The database refuses UPDATE and DELETE on the table
(triggers from migration 0005). For someone who drops the triggers, each entry's hash is an
HMAC (the key lives outside the database) over all its columns and the previous entry's hash, and
the head of the chain is anchored outside the table after each write (`audit_seal`): `verify`
recomputes the chain, compares it with the anchors and names the first entry that does not match,
or says that the key to check it is missing or another one.

Entries written before migration 0007 carry a plain SHA-256 and no key id: they verify as the
unkeyed start of the chain, and an unkeyed entry after a keyed one is a break.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import sqlalchemy as sa

from shipyard.errors import StoreError
from shipyard.store.audit_seal import (
    GENESIS,
    Anchor,
    AnchorFile,
    Seal,
    anchor_head,
    entry_hash,
    head,
    legacy_hash,
    read_anchors,
    seal_of,
    write_anchor,
)
from shipyard.store.db import Store
from shipyard.store.tables import audit_log

__all__ = [
    "BROKEN",
    "GENESIS",
    "INTACT",
    "KEY_MISSING",
    "KEY_WRONG",
    "Actor",
    "Monitor",
    "Verdict",
    "entry_dict",
    "query",
    "record",
    "verify",
]

log = logging.getLogger("shipyard.audit")

# Serialises appends on Postgres (a transaction-scoped advisory lock).
_PG_APPEND_LOCK = 7236512


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is making a change: a key's name and role, or a command-line user (role None)."""

    name: str
    role: str | None = None
    source: str = "cli"


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
    """Append one entry; returns its id. Once the transaction commits, the new head is anchored."""
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
    seal = seal_of(store, create=True)
    if seal.key is None:
        raise StoreError(f"cannot write to the audit log: the audit key {seal.source} cannot be read")
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        # Serialise appends so two writers never chain onto the same previous entry.
        conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_APPEND_LOCK})"))
    prev = conn.execute(
        sa.select(audit_log.c.id, audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1)
    ).first()
    # The id is chosen here because the hash covers it: on Postgres from the table's sequence (as
    # an insert without one would), on SQLite the next rowid (as SQLite would). Always above the
    # head, even when the sequence lags behind rows inserted with their ids (an import).
    new_id = (int(prev.id) if prev is not None else 0) + 1
    if postgres:
        sequence = "pg_get_serial_sequence('audit_log', 'id')"
        new_id = max(new_id, int(conn.execute(sa.text(f"SELECT nextval({sequence})")).scalar_one()))
        conn.execute(sa.text(f"SELECT setval({sequence}, :id)"), {"id": new_id})
    row: dict[str, Any] = {
        "id": new_id,
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
        "hash_key_id": seal.key_id,
    }
    row["hash"] = entry_hash(seal.key, prev.hash if prev is not None else GENESIS, row)
    conn.execute(audit_log.insert().values(**row))
    Store.after_commit(conn, "audit.anchor", lambda: _anchor(store))
    return new_id


def _anchor(store: Store) -> None:
    anchor_head(store)


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


# -- verification ---------------------------------------------------------------------------------------
INTACT, BROKEN, KEY_MISSING, KEY_WRONG = "intact", "broken", "key_missing", "key_wrong"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What verifying the log found. ``status``: intact, broken (an entry changed, deleted or
    forged, or the anchors edited), key_missing or key_wrong (the chain cannot be checked here:
    not evidence of tampering by itself, ``problem`` says what to do)."""

    status: str
    entries: int  # entries read
    broken_at: int | None = None  # id of the first entry found changed, missing or uncheckable
    problem: str | None = None
    legacy: int = 0  # entries in the unkeyed start of the chain (written before migration 0007)
    anchor: Anchor | None = None  # the anchor with the most entries, which the table was held to
    anchors: int = 0  # anchors compared
    key: str = ""  # where this verifier's key comes from
    warning: str | None = None  # intact, but something limits what that means

    @property
    def intact(self) -> bool:
        return self.status == INTACT

    def as_dict(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "status": self.status,
            "entries": self.entries,
            "broken_at": self.broken_at,
            "problem": self.problem,
            "legacy_entries": self.legacy,
            "anchors": self.anchors,
            "anchor": None if self.anchor is None else {**self.anchor.as_dict(), "when": self.anchor.when()},
            "key": self.key,
            "warning": self.warning,
        }


_FIELDS = [c.name for c in audit_log.columns]
_JSON = {c.name for c in audit_log.columns if isinstance(c.type, sa.JSON)}
_ID, _HASH = _FIELDS.index("id"), _FIELDS.index("hash")


def _raw(dialect: str) -> list[Any]:
    """The columns as stored, without their types: what the dashboard's monitor digests, read the
    same way by both of its passes. JSON as text on Postgres (psycopg would decode JSONB)."""
    return [
        sa.literal_column(
            f'CAST("{name}" AS TEXT)' if dialect == "postgresql" and name in _JSON else f'"{name}"'
        )
        for name in _FIELDS
    ]


def _typers(store: Store) -> list[Any]:
    """Per column, what turns its raw value into the value a typed select gives (None: as is)."""
    dialect = store.engine.dialect
    if dialect.name == "postgresql":
        from shipyard.store.db import json_loads

        return [
            json_loads if c.name in _JSON else c.type.result_processor(dialect, None)
            for c in audit_log.columns
        ]
    return [c.type.result_processor(dialect, None) for c in audit_log.columns]


def _batches(store: Store, after: int = 0, upto: int | None = None) -> Iterator[list[Any]]:
    """The entries after id ``after`` (up to ``upto``) in id order, as stored (`_raw`)."""
    columns = _raw(store.engine.dialect.name)
    last = after
    while True:
        q = sa.select(*columns).select_from(audit_log).where(audit_log.c.id > last)
        if upto is not None:
            q = q.where(audit_log.c.id <= upto)
        with store.engine.connect() as conn:
            rows = conn.execute(q.order_by(audit_log.c.id).limit(5000)).all()
        if not rows:
            return
        yield list(rows)
        last = rows[-1][_ID]


@dataclass(slots=True)
class _Walk:
    """Verifying entries in id order, from where an earlier walk stopped."""

    seal: Seal
    anchors: dict[int, list[Anchor]]  # anchors not yet met, by the entry id they name
    entries: int = 0
    last_id: int = 0
    last_hash: str = GENESIS
    legacy: int = 0
    keyed: bool = False  # a keyed entry has been met: unkeyed ones may not follow
    verdict: Verdict | None = None  # the first problem found

    def fail(self, status: str, entry: int | None, problem: str) -> bool:
        self.verdict = Verdict(status, self.entries, entry, problem)
        return False

    def check(self, values: Any) -> bool:
        """One entry (a mapping of its columns); False once something is wrong (see ``verdict``)."""
        self.entries += 1
        entry_id = int(values["id"])
        kid = values["hash_key_id"]
        if kid is None:
            if self.keyed:
                return self.fail(
                    BROKEN,
                    entry_id,
                    f"entry {entry_id} has an unkeyed hash after keyed entries: it was rewritten by "
                    "someone without the audit key",
                )
            if legacy_hash(self.last_hash, values) != values["hash"]:
                return self.fail(
                    BROKEN, entry_id, f"entry {entry_id} does not match its hash: it was changed"
                )
            self.legacy += 1
        else:
            if self.seal.key is None:
                return self.fail(
                    KEY_MISSING,
                    entry_id,
                    f"entry {entry_id} is hashed with audit key {kid}, and this server has no audit key: "
                    f"set SHIPYARD_AUDIT_KEY, or copy the key file ({self.seal.key_path}) from the server "
                    "that wrote the log",
                )
            if kid != self.seal.key_id and self.keyed:
                # Entries before it verified with this key: one key per store, so this is a forgery
                # or a server that was given another key.
                return self.fail(
                    BROKEN,
                    entry_id,
                    f"entry {entry_id} names audit key {kid}, but the entries before it were hashed with "
                    f"this server's key {self.seal.key_id}: it was forged, or written by a server with "
                    "another key (servers sharing a store must share the key)",
                )
            if kid != self.seal.key_id:
                return self.fail(
                    KEY_WRONG,
                    entry_id,
                    f"entry {entry_id} is hashed with audit key {kid}, but the key here ({self.seal.source}) "
                    f"is {self.seal.key_id}: use the key of the server that wrote it (servers sharing a "
                    "store must share the key). If no key was ever changed, the entry was forged",
                )
            self.keyed = True
            if entry_hash(self.seal.key, self.last_hash, values) != values["hash"]:
                return self.fail(
                    BROKEN,
                    entry_id,
                    f"entry {entry_id} does not match its hash: it, or the entry before it, was changed",
                )
        self.last_id, self.last_hash = entry_id, str(values["hash"])
        return self.meet(entry_id, self.last_hash, self.entries)

    def meet(self, entry_id: int, stored_hash: str, position: int) -> bool:
        """Hold entry ``entry_id``, entry ``position`` of the log, to the anchors that name it."""
        for anchor in self.anchors.pop(entry_id, ()):
            if anchor.last_hash != stored_hash:
                return self.fail(
                    BROKEN,
                    entry_id,
                    f"entry {entry_id} is not the one anchored at {anchor.when()} (its hash differs): "
                    "the newest entries were replaced",
                )
            if anchor.entries != position:
                return self.fail(
                    BROKEN,
                    entry_id,
                    f"entry {entry_id} is entry {position} of the log, but was entry {anchor.entries} when "
                    f"anchored at {anchor.when()}: entries before it were deleted or inserted",
                )
        return True

    def finish(self, anchor_file: AnchorFile) -> Verdict:
        """The verdict, once the walk is over: the first problem it met; else anchors naming
        entries that are gone (a deleted tail); else a problem in the anchor file."""
        verdict = self.verdict or self._missing() or Verdict(INTACT, self.entries)
        if verdict.intact and anchor_file.problem is not None:
            status = BROKEN
            if anchor_file.other_key:
                status = KEY_MISSING if self.seal.key is None else KEY_WRONG
            verdict = Verdict(status, self.entries, None, anchor_file.problem)
        if verdict.intact and self.entries and not anchor_file.anchors:
            where = self.seal.anchor_path or "this in-memory store"
            verdict = replace(
                verdict,
                warning=f"no anchors in {where}: entries deleted from the end of the log could not be "
                "noticed (anchors are written by the server that appends, and by a verification that "
                "finds the log intact)",
            )
        return replace(
            verdict,
            legacy=self.legacy,
            anchor=max(anchor_file.anchors, key=lambda a: (a.entries, a.at), default=None),
            anchors=len(anchor_file.anchors),
            key=self.seal.source,
        )

    def _missing(self) -> Verdict | None:
        missing = [a for found in self.anchors.values() for a in found]
        if not missing:
            return None
        worst = max(missing, key=lambda a: (a.entries, a.at))
        if self.entries == 0:
            problem = (
                f"the log is empty but an anchor at {worst.when()} recorded {worst.entries} entries: "
                "it was truncated"
            )
        elif self.entries < worst.entries:
            problem = (
                f"the log has {self.entries} entries but an anchor at {worst.when()} recorded "
                f"{worst.entries} (up to entry {worst.last_id}): entries were deleted from its end"
            )
        else:
            problem = (
                f"entry {worst.last_id}, anchored at {worst.when()} as entry {worst.entries} of the log, "
                "is gone: entries were deleted and others written since"
            )
        return Verdict(BROKEN, self.entries, worst.last_id, problem)


def _by_entry(anchors: list[Anchor]) -> dict[int, list[Anchor]]:
    found: dict[int, list[Anchor]] = {}
    for a in anchors:
        found.setdefault(a.last_id, []).append(a)
    return found


def _pin(store: Store, seal: Seal, walk: _Walk, anchor_file: AnchorFile) -> None:
    """Anchor a head that verified but that no anchor names yet (a log written before anchors
    existed, or by another server): deleting it later is then noticed too."""
    if seal.key is None or walk.entries == 0:
        return
    if any(a.last_id == walk.last_id and a.last_hash == walk.last_hash for a in anchor_file.anchors):
        return
    with store.engine.connect() as conn:
        now = head(conn)
    # Only if nothing was appended meanwhile: the head read is then the one verified.
    if now == (walk.entries, walk.last_id, walk.last_hash):
        try:
            write_anchor(seal, *now)
        except OSError as exc:  # a home this verifier may read but not write
            log.warning("could not anchor the verified audit log in %s: %s", seal.anchor_path, exc)


def verify(store: Store, *, pin: bool = True) -> Verdict:
    """Verify the whole log: the chain, then the anchors. ``pin``: once it verified, anchor the
    head if no anchor names it yet."""
    seal = seal_of(store)
    # The anchors first: each names an entry committed before it was written, so the table read
    # next holds it unless it was deleted.
    anchor_file = read_anchors(seal)
    walk = _Walk(seal, _by_entry(anchor_file.anchors))
    _walk_entries(store, walk)
    verdict = walk.finish(anchor_file)
    if pin and verdict.intact:
        _pin(store, seal, walk, anchor_file)
    return verdict


def _walk_entries(store: Store, walk: _Walk, digest: Any = None) -> None:
    """Verify the entries after the walk's last one; add their stored values to ``digest``.
    Read as stored and typed here with the columns' own result processors, which is quicker than
    typed rows and gives the monitor its digest from the same read."""
    processors = _typers(store)
    for rows in _batches(store, walk.last_id):
        for r in rows:
            values = {
                name: value if process is None or value is None else process(value)
                for name, process, value in zip(_FIELDS, processors, r, strict=True)
            }
            if not walk.check(values):
                return
        if digest is not None:
            digest.update(_stored(rows))


def _stored(rows: list[Any]) -> bytes:
    """Entries' stored values as bytes to digest, the same however they are batched. `repr` is
    unambiguous (strings are quoted and escaped, floats exact) and the quickest of the ways tried."""
    return "".join([repr(tuple(r)) + "\n" for r in rows]).encode()


# -- the dashboard's badge --------------------------------------------------------------------------------
@dataclass(slots=True)
class _Verified:
    """What a Monitor knows to be intact: where the walk stopped, the digest of the stored values
    it read, the anchors it held the table to, and with which key."""

    walk: _Walk
    digest: bytes
    anchor_file: AnchorFile
    key_id: str | None


@dataclass
class Monitor:
    """Verifies the log as `verify` does, for a page that shows its state on every view, without
    recomputing every entry's hash each time. The entries verified before are re-read, all of
    them (an edit to an old entry must show), but only compared with what was verified, as a keyed
    digest of their stored values; the entries appended since, and the anchors written since, are
    checked in full. Any difference makes it verify everything again, so it reports what `verify`
    reports."""

    _state: _Verified | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Keyed with a secret of this process: nobody who changes the table can aim at a digest.
    _digest_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def check(self, store: Store) -> Verdict:
        with self._lock:
            seal = seal_of(store)
            state = self._state
            if state is not None and state.key_id == seal.key_id:
                verdict = self._resume(store, seal, state)
                if verdict is not None:
                    return verdict
            anchor_file = read_anchors(seal)
            walk = _Walk(seal, _by_entry(anchor_file.anchors))
            digest = self._hasher()
            _walk_entries(store, walk, digest)
            verdict = walk.finish(anchor_file)
            self._state = (
                _Verified(walk, digest.digest(), anchor_file, seal.key_id) if verdict.intact else None
            )
            return verdict

    def _hasher(self) -> Any:
        return hashlib.blake2b(key=self._digest_key, digest_size=32)

    def _resume(self, store: Store, seal: Seal, state: _Verified) -> Verdict | None:
        """The verdict if the entries verified before are unchanged and all the rest is intact;
        None otherwise (then a full walk names the first problem)."""
        anchor_file = read_anchors(seal, since=state.anchor_file)
        if anchor_file.anchors[: len(state.anchor_file.anchors)] != state.anchor_file.anchors:
            return None  # the anchors read before changed: read again in full
        old = state.walk
        walk = _Walk(seal, _by_entry(anchor_file.anchors[len(state.anchor_file.anchors) :]))
        walk.entries, walk.last_id, walk.last_hash = old.entries, old.last_id, old.last_hash
        walk.legacy, walk.keyed = old.legacy, old.keyed
        digest = self._hasher()
        position = 0
        for rows in _batches(store, 0, upto=old.last_id):
            digest.update(_stored(rows))
            # A new anchor may name an old entry (another process anchored late).
            for i, r in enumerate(rows, position + 1) if walk.anchors else ():
                if r[_ID] in walk.anchors and not walk.meet(int(r[_ID]), str(r[_HASH]), i):
                    return None
            position += len(rows)
        if position != old.entries or digest.digest() != state.digest:
            return None
        _walk_entries(store, walk, digest)
        verdict = walk.finish(anchor_file)
        if not verdict.intact:
            return None
        self._state = _Verified(walk, digest.digest(), anchor_file, seal.key_id)
        return verdict
