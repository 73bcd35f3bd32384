"""Which server serves a store: a lock that `shipyard up` holds for as long as it runs.

A second `shipyard up` on the same store would apply its own config to the routes the first one is
serving, so it is refused unless the user asks for it (`--join`). The lock goes away with its
process, however that ends (a crash included): on SQLite an advisory lock on a file beside the
database, on Postgres a session-level advisory lock on a connection held open for the purpose.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from shipyard.errors import ShipyardError

# pg_advisory_lock key: the bytes "shipyard" as a big-endian int64.
_PG_KEY = int.from_bytes(b"shipyard", "big") - 2**63


class StoreInUse(ShipyardError):
    """Another running server holds the store's serving lock."""


class ServingLock:
    def __init__(self, release: Any) -> None:
        self._release = release

    def release(self) -> None:
        if self._release is not None:
            with contextlib.suppress(Exception):
                self._release()
            self._release = None


def acquire(store_url: str, url: str) -> ServingLock:
    """Hold the serving lock of the store at ``store_url`` for the server answering at ``url``;
    raises StoreInUse naming the holder when another server has it."""
    if store_url.startswith("sqlite"):
        return _sqlite(store_url, url)
    if store_url.startswith("postgresql"):
        return _postgres(store_url, url)
    return ServingLock(None)


def _sqlite(store_url: str, url: str) -> ServingLock:
    path = store_url.split("///", 1)[-1]
    if not path or path == ":memory:":
        return ServingLock(None)
    try:
        import fcntl
    except ImportError:  # no advisory file locks here (Windows): nothing to enforce with
        return ServingLock(None)
    lock_path = Path(path + ".serving")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = _read_holder(fd)
        os.close(fd)
        who = f"pid {holder.get('pid', '?')}, {holder.get('url', 'address unknown')}" if holder else "unknown"
        raise StoreInUse(f"another Shipyard server ({who}) is serving the store {path}") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "url": url, "since": time.time()}).encode())

    def release() -> None:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    return ServingLock(release)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096) or b"{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _postgres(store_url: str, url: str) -> ServingLock:
    # Its own connection, outside any pool: the lock lives exactly as long as this session.
    name = f"shipyard up {url}"[:63]
    engine = sa.create_engine(store_url, poolclass=sa.pool.NullPool, connect_args={"application_name": name})
    conn = engine.connect()
    try:
        got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_KEY}).scalar()
        if not got:
            holder = conn.execute(
                sa.text(
                    "SELECT a.application_name, a.client_addr FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                    "AND l.granted AND l.classid = :hi AND l.objid = :lo AND l.objsubid = 1 LIMIT 1"
                ),
                {"hi": (_PG_KEY >> 32) & 0xFFFFFFFF, "lo": _PG_KEY & 0xFFFFFFFF},
            ).first()
            who = f"{holder[0]} from {holder[1] or 'this host'}" if holder else "unknown"
            raise StoreInUse(f"another Shipyard server ({who}) is serving this Postgres store")
        conn.commit()
    except BaseException:
        conn.close()
        engine.dispose()
        raise

    def release() -> None:
        conn.close()
        engine.dispose()

    return ServingLock(release)
