"""What keeps the audit log tamper-evident when its triggers are gone: a key outside the database
and anchors outside the table.

- **The key.** Each entry's hash is an HMAC-SHA256, keyed with the `audit_key` setting or, unset,
  with a random key kept in ``<home>/audit.key`` (mode 0600, created on first use). Someone who can
  write to the database but lacks the key cannot recompute the chain after an edit. The entry names
  its key by an id (an HMAC of a constant, which tells nothing about the key), so that a verifier
  with another key says so instead of reporting tampering.
- **Every column.** The hash covers a canonical serialization (sorted JSON) of every column of
  the entry except the hash itself, its id included; null columns are left out, so a nullable
  column added later does not change the hash of the entries written before it.
- **Anchors.** After each write the head of the chain (entries, last id, last hash) is appended to
  ``<home>/audit.anchor`` as one HMAC-signed JSON line, and logged (logger ``shipyard.audit``).
  Verification compares the table with every anchor, so entries deleted from the end (which
  leave a shorter, still valid chain) are found too.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from shipyard import redact
from shipyard.errors import StoreError
from shipyard.store.db import Store
from shipyard.store.tables import audit_log

log = logging.getLogger("shipyard.audit")

GENESIS = "0" * 64
KEY_FILE = "audit.key"
ANCHOR_FILE = "audit.anchor"
_ENTRY_DOMAIN = b"shipyard-audit-entry-v2\n"
_ANCHOR_DOMAIN = b"shipyard-audit-anchor-v1\n"
_KEY_ID_DOMAIN = b"shipyard-audit-key-id"


@dataclass(frozen=True, slots=True)
class Seal:
    """The audit key of a store (None: none found) and where its anchors go (None: nowhere, for
    an in-memory store)."""

    key: bytes | None
    key_id: str | None
    source: str  # where the key comes from, for messages: "the audit_key setting", "<path>", …
    key_path: Path | None
    anchor_path: Path | None


def key_id_of(key: bytes) -> str:
    return hmac.new(key, _KEY_ID_DOMAIN, hashlib.sha256).hexdigest()[:16]


def _home_and_setting(store: Store) -> tuple[Path | None, str | None]:
    """Where the key file and anchors live, and the key setting, for a store built without
    `Store.for_settings`: a SQLite file's directory (the default `<home>/shipyard.db`), nothing
    for an in-memory store, else the home the environment names."""
    if store.home is not None:
        return store.home, store.audit_key
    if store.is_sqlite:
        path = store.url.split("///", 1)[-1].split("?", 1)[0]
        if not path or path == ":memory:":
            return None, store.audit_key
        from shipyard.settings import Settings

        return Path(path).expanduser().resolve().parent, store.audit_key or Settings().audit_key
    from shipyard.settings import Settings

    env = Settings()
    return env.home_path, store.audit_key or env.audit_key


def _read_key(path: Path) -> bytes | None:
    try:
        text = path.read_text("ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.error("cannot read the audit key %s: %s", path, exc)
        return None
    return text.encode() if text else None


def _create_key(path: Path) -> bytes:
    """A new random key at ``path`` (0600). Written aside and linked into place, so that another
    process creating it at the same moment never reads half a file: one of the two keys wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    key = _read_key(path)
    assert key is not None
    log.info("created the audit key %s", path)
    return key


_seals: weakref.WeakKeyDictionary[Store, Seal] = weakref.WeakKeyDictionary()
_seals_lock = threading.Lock()


def seal_of(store: Store, *, create: bool = False) -> Seal:
    """The store's seal. ``create``: make the key file when there is no key yet (appending does;
    verifying does not, so a verifier on the wrong home reports "no key" rather than making one)."""
    with _seals_lock:
        found = _seals.get(store)
        if found is not None:
            return found
        home, setting = _home_and_setting(store)
        anchor_path = home / ANCHOR_FILE if home is not None else None
        key: bytes | None
        if setting:
            redact.register(setting)
            key, source, key_path = setting.encode(), "the audit_key setting (SHIPYARD_AUDIT_KEY)", None
        elif home is None:
            # An in-memory store lives as long as this process: so does its key.
            key, source, key_path = secrets.token_bytes(32), "a key for this in-memory store", None
        else:
            key_path = home / KEY_FILE
            key, source = _read_key(key_path), str(key_path)
            if key is None and create:
                try:
                    key = _create_key(key_path)
                except OSError as exc:
                    raise StoreError(
                        f"cannot create the audit key {key_path}: {exc}; make the home directory "
                        "writable, or set the audit_key setting (SHIPYARD_AUDIT_KEY)"
                    ) from None
        seal = Seal(key, key_id_of(key) if key else None, source, key_path, anchor_path)
        if key is not None:
            _seals[store] = seal
        return seal


# -- entry hashes -------------------------------------------------------------------------------------
def canonical(row: Mapping[str, Any]) -> bytes:
    """Every column but the hash, null ones left out, as JSON with sorted keys."""
    content = {k: v for k, v in row.items() if k != "hash" and v is not None}
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)


def entry_hash(key: bytes, prev: str, row: Mapping[str, Any]) -> str:
    """The keyed hash of an entry (hash scheme 2, from migration 0007)."""
    return hmac.new(key, _ENTRY_DOMAIN + prev.encode() + b"\n" + canonical(row), hashlib.sha256).hexdigest()


def legacy_hash(prev: str, row: Mapping[str, Any]) -> str:
    """The hash of entries written before migration 0007: a plain SHA-256 over nine columns."""
    content = {k: row.get(k) for k in ("at", "actor", "role", "action", "target", "outcome")}
    content["before"], content["after"], content["detail"] = (
        row.get("before"),
        row.get("after"),
        row.get("detail"),
    )
    payload = orjson.dumps(content, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(prev.encode() + payload).hexdigest()


# -- anchors ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Anchor:
    """The head of the chain at a moment: how many entries, the last one's id and hash."""

    at: float
    entries: int
    last_id: int
    last_hash: str
    line: int  # in the anchor file, from 1

    def when(self) -> str:
        from datetime import UTC, datetime

        return datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "entries": self.entries, "last_id": self.last_id, "last_hash": self.last_hash}


def _sign(key: bytes, payload: bytes) -> str:
    return hmac.new(key, _ANCHOR_DOMAIN + payload, hashlib.sha256).hexdigest()


_write_lock = threading.Lock()


def write_anchor(seal: Seal, entries: int, last_id: int, last_hash: str) -> Anchor | None:
    """Append one signed line to the anchor file and log it. One `write` on a file opened for
    appending, no fsync: lines from several processes do not interleave, and a line lost in a
    power cut only makes the anchors older (never claims more than the table holds)."""
    if seal.key is None or seal.anchor_path is None:
        return None
    at = time.time()
    body = {"at": at, "entries": entries, "last_id": last_id, "last_hash": last_hash, "key_id": seal.key_id}
    payload = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    line = orjson.dumps({**body, "sig": _sign(seal.key, payload)}) + b"\n"
    with _write_lock:
        seal.anchor_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(seal.anchor_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    log.info("audit anchor: %d entries, last id %d, last hash %s", entries, last_id, last_hash)
    return Anchor(at, entries, last_id, last_hash, 0)


@dataclass(slots=True)
class AnchorFile:
    """The anchors read so far from one file (`read_anchors` continues from ``offset``)."""

    anchors: list[Anchor]
    problem: str | None = None  # a line that is not this key's
    other_key: str | None = None  # the key id it names, when that is why
    offset: int = 0
    lines: int = 0
    digest: bytes = b""  # of the file's first ``offset`` bytes, to tell that they did not change


def read_anchors(seal: Seal, since: AnchorFile | None = None) -> AnchorFile:
    """The file's anchors with their signatures checked (the first bad line stops the reading and
    is the ``problem``). With ``since``: only the lines after it are parsed, if the bytes it read
    are still there unchanged (the file is read and hashed whole, a few ms for 100,000 lines);
    otherwise the whole file is parsed again."""
    path = seal.anchor_path
    if path is None:
        return AnchorFile([])
    try:
        with open(path, "rb") as f:
            whole = f.read()
    except FileNotFoundError:
        return AnchorFile([])
    result = AnchorFile([])
    unchanged = (
        since is not None
        and since.problem is None
        and len(whole) >= since.offset
        and hashlib.sha256(whole[: since.offset]).digest() == since.digest
    )
    if since is not None and unchanged:
        result = AnchorFile(list(since.anchors), offset=since.offset, lines=since.lines)
    data = whole[result.offset :]
    end = data.rfind(b"\n") + 1  # a line still being written is read next time
    for raw in data[:end].splitlines():
        result.lines += 1
        where = f"line {result.lines} of {path}"
        try:
            doc = orjson.loads(raw)
            body = {k: doc[k] for k in ("at", "entries", "last_id", "last_hash", "key_id")}
            sig = str(doc["sig"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            result.problem = f"{where} is not an anchor: the anchor file was edited"
            break
        if seal.key is None:
            result.problem = f"{where} is signed with audit key {body['key_id']}, and no key is set here"
            result.other_key = str(body["key_id"])
            break
        if body["key_id"] != seal.key_id:
            result.problem = (
                f"{where} is signed with audit key {body['key_id']}, not this server's key {seal.key_id}"
            )
            result.other_key = str(body["key_id"])
            break
        if not hmac.compare_digest(sig, _sign(seal.key, orjson.dumps(body, option=orjson.OPT_SORT_KEYS))):
            result.problem = f"{where} does not match its signature: the anchor file was edited"
            break
        result.anchors.append(
            Anchor(
                float(body["at"]),
                int(body["entries"]),
                int(body["last_id"]),
                str(body["last_hash"]),
                result.lines,
            )
        )
    if result.problem is None:
        result.offset += end
        result.digest = hashlib.sha256(whole[: result.offset]).digest()
    return result


def head(conn: sa.Connection, known: tuple[int, int] | None = None) -> tuple[int, int, str] | None:
    """(entries, last id, last hash) in one statement, hence one snapshot on every database.
    ``known``: (entries, last id) of an earlier head, so that only the entries after it are
    counted (a range of the primary key instead of the whole table: on Postgres a count of
    100,000 entries takes about 13 ms). Appends get increasing ids and commit in that order (one
    at a time), so the entries up to an id only change if someone deletes or inserts some."""
    count = sa.select(sa.func.count()).select_from(audit_log)
    if known is not None:
        count = count.where(audit_log.c.id > known[1])
    row = conn.execute(
        sa.select(count.scalar_subquery(), audit_log.c.id, audit_log.c.hash)
        .order_by(audit_log.c.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return (int(row[0]) + (known[0] if known is not None else 0), int(row[1]), str(row[2]))


# The head this process anchored last, per store: the next anchor counts only what came after it.
_anchored: weakref.WeakKeyDictionary[Store, tuple[int, int]] = weakref.WeakKeyDictionary()


def anchor_head(store: Store) -> Anchor | None:
    """Anchor the committed head of the chain. Called after each write; never raises (the change
    it follows has already committed): a failure is logged."""
    try:
        seal = seal_of(store, create=True)
        known = _anchored.get(store)
        with store.engine.connect() as conn:
            found = head(conn, known)
        if found is None:
            return None
        if known is not None and found[1] < known[1]:
            # The head went back: entries were deleted. Anchor what the table holds now, counted
            # in full, and say so (verify reports it against the earlier anchors).
            log.error("audit log: entry %d, anchored before, is gone: entries were deleted", known[1])
            with store.engine.connect() as conn:
                found = head(conn)
            if found is None:
                return None
        _anchored[store] = (found[0], found[1])
        return write_anchor(seal, *found)
    except Exception:
        log.exception("could not anchor the audit log")
        return None
