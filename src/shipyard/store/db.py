"""The store: one SQLAlchemy engine (SQLite with WAL by default, Postgres by URL) and migrations."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shipyard.errors import StoreError

if TYPE_CHECKING:
    from shipyard.settings import Settings

# Key of `Connection.info` where `Store.write` keeps what to run once its transaction committed.
_AFTER_COMMIT = "shipyard_after_commit"


def json_loads(value: Any) -> Any:
    """SQLite gives a column declared JSON numeric affinity: a bare number stored as JSON text (an
    `expected` of 42) comes back as a number, which is already the decoded value."""
    if isinstance(value, str | bytes):
        return orjson.loads(value)
    return value


def json_dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


def insert_row(conn: sa.Connection, table: sa.Table, **values: Any) -> int:
    """Insert one row and return the integer primary key the database gave it."""
    result = conn.execute(sa.insert(table).values(**values))
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0])


class Store:
    """Owns the engine. Query functions live in one module per domain (``store/traces.py``, …)."""

    def __init__(self, url: str, *, home: Path | None = None, audit_key: str | None = None) -> None:
        """``home`` and ``audit_key``: where the audit log's key and anchor file live and the key
        itself (`store/audit_seal.py`); `for_settings` passes them. Without a home, a SQLite
        file's directory is used, else the home that the environment names."""
        self.url = url
        self.home = home
        self.audit_key = audit_key
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"json_serializer": json_dumps, "json_deserializer": json_loads}
        if self.is_sqlite:
            db_path = url.split("///", 1)[-1]
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine: Engine = sa.create_engine(url, **kwargs)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise StoreError(f"cannot open store `{_redact(url)}`: {exc}") from None
        if self.is_sqlite:
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
        self._migrated = threading.Event()

    @classmethod
    def for_settings(cls, settings: Settings) -> Store:
        """The store the settings name, with the home and audit key its audit log needs."""
        return cls(settings.store_url, home=settings.home_path, audit_key=settings.audit_key)

    @contextlib.contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A transaction for read-then-write work (registry, datasets, runs). Functions given to
        `after_commit` run once it has committed (not at all if it rolls back).

        On SQLite it starts with BEGIN IMMEDIATE, taking the write lock up front: a deferred
        transaction that read first would fail at its first write whenever another writer (the
        trace writer commits several times a second) committed in between, instead of waiting.
        """
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            # `info` belongs to the pooled DBAPI connection: always emptied before it goes back.
            hooks: dict[str, Callable[[], None]] = {}
            conn.info[_AFTER_COMMIT] = hooks
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop(_AFTER_COMMIT, None)
        for hook in hooks.values():
            hook()

    @staticmethod
    def after_commit(conn: sa.Connection, name: str, hook: Callable[[], None]) -> bool:
        """Run ``hook`` once the `write` transaction ``conn`` belongs to has committed (once per
        ``name``, however often it is asked); False when ``conn`` is not one: nothing will run."""
        hooks = conn.info.get(_AFTER_COMMIT)
        if hooks is None:
            return False
        hooks.setdefault(name, hook)
        return True

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        import logging

        # Before the import: alembic logs its plugin set-up at INFO when first imported.
        logging.getLogger("alembic").setLevel(logging.WARNING)

        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(resources.files("shipyard.store") / "migrations"))
        cfg.attributes["engine"] = self.engine
        try:
            command.upgrade(cfg, "head")
        except sa.exc.OperationalError as exc:
            raise StoreError(f"cannot migrate store `{_redact(self.url)}`: {exc.orig}") from None
        self._migrated.set()

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # SQLAlchemy emits BEGIN itself (see _sqlite_begin); the driver's own implicit transactions
    # cannot do BEGIN IMMEDIATE.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # Only takes effect while the file is still empty. 16 KiB pages pack trace rows (a few hundred
    # bytes to a few KiB of messages) with less slack: about 3% smaller stores at millions of traces.
    cur.execute("PRAGMA page_size=16384")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "")
    conn.exec_driver_sql(f"BEGIN {mode}".rstrip())


def _redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url
