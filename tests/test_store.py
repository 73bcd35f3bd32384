"""The store: migrations build exactly the tables the code declares, on SQLite and on Postgres,
and traces round-trip through both."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from shipyard.store import traces as q
from shipyard.store.db import Store
from shipyard.store.tables import metadata
from shipyard.tracing.spans import Trace


def sample_trace(route: str = "support") -> Trace:
    t = Trace(
        operation="chat",
        route=route,
        target="a",
        provider="p",
        model="m",
        input_tokens=5,
        output_tokens=7,
        cost_usd=0.001,
        input=[{"role": "user", "content": "hi ünïcode"}],
        output="hello",
        attributes={"k": [1, 2]},
    )
    root = t.span("chat support", attributes={"gen_ai.operation.name": "chat"})
    t.span("chat m", parent=root).finish()
    root.finish()
    t.end = t.start + 0.01
    return t


def check_store(store: Store) -> None:
    assert store.current_revision() is None
    store.migrate()
    store.migrate()  # idempotent
    assert store.current_revision() is not None
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == [], f"migrations and store/tables.py disagree: {diff}"
    t = sample_trace()
    q.insert_traces(store, [t, sample_trace("other")])
    got = q.get_trace(store, t.trace_id)
    assert got is not None
    assert got["input"] == [{"role": "user", "content": "hi ünïcode"}] and got["attributes"] == {"k": [1, 2]}
    assert [s["name"] for s in got["spans"]] == ["chat support", "chat m"]
    assert got["spans"][1]["parent_id"] == got["spans"][0]["span_id"]
    assert q.count_traces(store) == 2
    assert len(q.list_traces(store, q.TraceFilter(route="support"))) == 1
    assert len(q.list_traces(store, q.TraceFilter(search="ünïcode"))) == 2


def test_sqlite_store(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'nested' / 'shipyard.db'}")
    check_store(store)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
    store.close()


@pytest.mark.postgres
def test_postgres_store(pg_url: str) -> None:
    store = Store(pg_url)
    check_store(store)
    store.close()


def test_bad_store_url_is_a_clear_error() -> None:
    from shipyard.errors import StoreError

    with pytest.raises(StoreError, match="cannot open store"):
        Store("nosuchdb://x")
