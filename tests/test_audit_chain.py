"""The audit log against someone who can drop its triggers: a keyed hash chain over every column,
anchors outside the table, and a dashboard badge that says what `shipyard audit verify` says.

Each attack is what a person with SQL access (and no access to the Shipyard home) can do: drop the
append-only triggers, then delete the newest entries, change a column, or edit an entry and
recompute the following hashes with the plain SHA-256 the chain used to have."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa

from shipyard.store import audit
from shipyard.store.db import Store
from shipyard.store.tables import audit_log
from tests.conftest import ShipyardServer

CONFIG = """
providers: [{name: mock, type: mock, echo: true}]
models:
  - {name: echo, provider: mock}
routes:
  - {name: support, targets: [{model: echo}]}
"""

WHO = audit.Actor("alice (key_1)", "admin", "api 10.0.0.7")


# -- what an attacker with SQL access does ---------------------------------------------------------
def drop_triggers(store: Store) -> None:
    with store.engine.begin() as conn:
        if store.is_sqlite:
            conn.execute(sa.text("DROP TRIGGER IF EXISTS audit_log_no_update"))
            conn.execute(sa.text("DROP TRIGGER IF EXISTS audit_log_no_delete"))
        else:
            conn.execute(sa.text("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log"))


def sql(store: Store, statement: str, **params: Any) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def plain_sha256(prev: str, row: dict[str, Any]) -> str:
    """The chain's hash before it was keyed: SHA-256 over nine columns and the previous hash."""
    content = {k: row[k] for k in ("at", "actor", "role", "action", "target", "outcome")}
    content.update(before=row["before"], after=row["after"], detail=row["detail"])
    payload = orjson.dumps(content, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(prev.encode() + payload).hexdigest()


def edit_and_rechain(store: Store, entry: int, *, drop_key_id: bool = True, **changes: Any) -> None:
    """Change an entry, then recompute its hash and every later one with plain SHA-256, so that the
    chain is consistent again by the old rule."""
    with store.engine.begin() as conn:
        columns = [c["name"] for c in sa.inspect(conn).get_columns("audit_log")]
        rows = [dict(r._mapping) for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.id))]
        prev = "0" * 64
        for row in rows:
            if row["id"] == entry:
                row.update(changes)
            if row["id"] >= entry:
                row["hash"] = plain_sha256(prev, row)
                sets = {k: row[k] for k in changes} if row["id"] == entry else {}
                sets["hash"] = row["hash"]
                if drop_key_id and "hash_key_id" in columns:
                    sets["hash_key_id"] = None
                conn.execute(audit_log.update().where(audit_log.c.id == row["id"]).values(**sets))
            prev = row["hash"]


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated store whose home (key, anchors) is ``tmp_path / 'home'``."""
    home = tmp_path / "home"
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'shipyard.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    s = Store(url, home=home)
    s.migrate()
    yield s
    s.close()


def fill(store: Store, n: int = 5) -> None:
    for i in range(n):
        audit.record(
            store, WHO, "route.put", f"route:r{i}", before={"v": i}, after={"v": i + 1, "x": 0.1 + 0.2}
        )


def cli(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipyard", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        env={
            **{k: v for k, v in os.environ.items() if k != "SHIPYARD_AUDIT_KEY"},
            "COLUMNS": "200",
            **(env or {}),
        },
        timeout=120,
    )


def cli_verify(home: Path, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    out = cli("audit", "verify", "--json", home=home, env=env)
    return out.returncode, json.loads(out.stdout)


# -- (a) deleting the newest entries, or all of them -----------------------------------------------
def test_deleting_the_newest_entries_is_found(store: Store) -> None:
    fill(store, 5)
    assert audit.verify(store).intact
    drop_triggers(store)
    sql(store, "DELETE FROM audit_log WHERE id > 3")
    verdict = audit.verify(store)
    assert verdict.status == "broken" and verdict.broken_at == 5
    assert re.search(
        r"the log has 3 entries but an anchor at \S+ recorded 5 \(up to entry 5\)", verdict.problem or ""
    )
    sql(store, "DELETE FROM audit_log")
    verdict = audit.verify(store)
    assert verdict.status == "broken" and verdict.entries == 0
    assert "the log is empty but an anchor" in (verdict.problem or "") and "recorded 5 entries" in (
        verdict.problem or ""
    )


def test_a_deleted_tail_stays_found_after_new_appends(store: Store) -> None:
    """Deleting the newest entries, then letting the server append: the newest anchor is fine, an
    older one names an entry that is gone (or was replaced, where SQLite reuses the id)."""
    fill(store, 5)
    drop_triggers(store)
    sql(store, "DELETE FROM audit_log WHERE id > 3")
    audit.record(store, WHO, "alias.set", "prompt:p@production")
    verdict = audit.verify(store)
    assert verdict.status == "broken", verdict
    assert verdict.broken_at in (4, 5, 6)  # Postgres: id 6 counted as entry 6; SQLite reuses id 4


def test_cli_and_api_report_a_deleted_tail(shipyard_server: Any) -> None:
    server: ShipyardServer = shipyard_server(CONFIG)
    with server.api() as api:
        for name in ("a", "b", "c"):
            assert api.post("/keys", json={"name": name, "role": "viewer"}).status_code == 201
        before = api.get("/audit/verify").json()
    assert before["intact"] and before["entries"] >= 4
    code, verdict = cli_verify(server.home)
    assert code == 0 and verdict["intact"], verdict
    store = Store(server.store_url())
    drop_triggers(store)
    sql(store, "DELETE FROM audit_log WHERE id > (SELECT min(id) FROM audit_log)")
    with server.api() as api:
        after = api.get("/audit/verify").json()
    assert after["intact"] is False and after["status"] == "broken"
    assert "the log has 1 entries but an anchor at" in after["problem"]
    code, verdict = cli_verify(server.home)
    assert code == 1 and verdict["intact"] is False and "the log has 1 entries" in verdict["problem"]
    sql(store, "DELETE FROM audit_log")
    code, verdict = cli_verify(server.home)
    assert code == 1 and verdict["intact"] is False and "the log is empty" in verdict["problem"]
    text = cli("audit", "verify", home=server.home)
    assert text.returncode == 1 and "audit log broken" in text.stdout and "truncated" in text.stdout
    store.close()


@pytest.mark.postgres
def test_api_reports_a_deleted_tail_on_postgres(shipyard_server: Any, pg_url: str) -> None:
    server: ShipyardServer = shipyard_server(CONFIG, env={"SHIPYARD_DATABASE_URL": pg_url})
    with server.api() as api:
        assert api.post("/keys", json={"name": "a", "role": "viewer"}).status_code == 201
        assert api.get("/audit/verify").json()["intact"]
    store = Store(pg_url)
    drop_triggers(store)
    sql(store, "DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)")
    with server.api() as api:
        after = api.get("/audit/verify").json()
    assert after["intact"] is False and "entries were deleted from its end" in after["problem"]
    code, verdict = cli_verify(server.home, env={"SHIPYARD_DATABASE_URL": pg_url})
    assert code == 1 and "entries were deleted from its end" in verdict["problem"]
    store.close()


# -- (b) every column is covered -------------------------------------------------------------------
NEW_VALUES = {
    "id": 99,
    "at": 1.5,
    "actor": "mallory",
    "role": "viewer",
    "action": "key.revoke",
    "target": "key:other",
    "outcome": "denied",
    "before": '{"v": 9}',
    "after": None,
    "detail": "nothing to see",
    "source": "cli",
    "hash_key_id": "0123456789abcdef",
}


def test_every_column_but_the_hash_is_covered() -> None:
    assert set(NEW_VALUES) == {c.name for c in audit_log.columns} - {"hash"}


@pytest.mark.parametrize("column", sorted(NEW_VALUES))
def test_changing_any_column_is_found(tmp_path: Path, column: str) -> None:
    store = Store(f"sqlite:///{tmp_path / 'shipyard.db'}")
    store.migrate()
    fill(store, 3)
    drop_triggers(store)
    sql(store, f'UPDATE audit_log SET "{column}" = :v WHERE id = 2', v=NEW_VALUES[column])
    verdict = audit.verify(store)
    assert not verdict.intact, column
    store.close()


def test_changing_the_source_is_found(store: Store) -> None:
    fill(store, 3)
    drop_triggers(store)
    sql(store, "UPDATE audit_log SET source = 'cli' WHERE id = 2")
    verdict = audit.verify(store)
    assert verdict.status == "broken" and verdict.broken_at == 2


def test_cli_finds_a_changed_source(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert cli("keys", "create", "bot", "--role", "client", home=home).returncode == 0
    assert cli("keys", "revoke", "bot", home=home).returncode == 0
    store = Store(f"sqlite:///{home / 'shipyard.db'}")
    drop_triggers(store)
    sql(store, "UPDATE audit_log SET source = 'api 203.0.113.9' WHERE id = 1")
    code, verdict = cli_verify(home)
    assert code == 1 and verdict["intact"] is False and verdict["broken_at"] == 1
    store.close()


# -- (c) an edit with the following hashes recomputed ----------------------------------------------
def test_an_edit_rechained_with_plain_sha256_is_found(store: Store) -> None:
    fill(store, 5)
    drop_triggers(store)
    # Keeping the key ids: the hashes are not the key's.
    edit_and_rechain(store, 3, drop_key_id=False, actor="mallory")
    verdict = audit.verify(store)
    assert verdict.status == "broken" and verdict.broken_at == 3
    # Dropping them too: an unkeyed entry after keyed ones.
    edit_and_rechain(store, 3, actor="mallory")
    verdict = audit.verify(store)
    assert verdict.status == "broken" and verdict.broken_at == 3 and "unkeyed" in (verdict.problem or "")
    # The whole chain rewritten as if written before it was keyed: the anchors no longer match.
    edit_and_rechain(store, 1, actor="mallory")
    verdict = audit.verify(store)
    assert verdict.status == "broken" and "not the one anchored" in (verdict.problem or "")


def test_cli_finds_an_edit_rechained_with_plain_sha256(tmp_path: Path) -> None:
    home = tmp_path / "h"
    for args in (("keys", "create", "bot", "--role", "client"), ("keys", "update", "bot", "--rpm", "5")):
        assert cli(*args, home=home).returncode == 0
    store = Store(f"sqlite:///{home / 'shipyard.db'}")
    drop_triggers(store)
    edit_and_rechain(store, 1, after=json.dumps({"role": "admin"}))
    code, verdict = cli_verify(home)
    assert code == 1 and verdict["intact"] is False, verdict
    store.close()


# -- (d) the dashboard badge -----------------------------------------------------------------------
def test_the_monitor_says_what_verify_says(store: Store) -> None:
    monitor = audit.Monitor()
    assert monitor.check(store).intact  # empty
    fill(store, 6)
    assert monitor.check(store).intact and monitor.check(store).entries == 6
    fill(store, 2)  # appended since: checked in full
    assert monitor.check(store).entries == 8
    drop_triggers(store)
    scenarios = [
        ("UPDATE audit_log SET actor = 'mallory' WHERE id = 1", 1),  # an old entry's content
        ("UPDATE audit_log SET hash = :h WHERE id = 2", 2),  # an old entry's stored hash
        ("UPDATE audit_log SET source = 'cli' WHERE id = 7", 7),
    ]
    for statement, broken in scenarios:
        with store.engine.connect() as conn:
            original = dict(conn.execute(sa.select(audit_log).where(audit_log.c.id == broken)).one()._mapping)
        sql(store, statement, h="f" * 64)
        seen, truth = monitor.check(store), audit.verify(store)
        assert (seen.status, seen.broken_at) == (truth.status, truth.broken_at) == ("broken", broken), (
            statement
        )
        with store.engine.begin() as conn:  # put it back
            conn.execute(audit_log.update().where(audit_log.c.id == broken).values(**original))
        assert monitor.check(store).intact
    sql(store, "DELETE FROM audit_log WHERE id = 8")
    seen, truth = monitor.check(store), audit.verify(store)
    assert seen.status == truth.status == "broken" and seen.problem == truth.problem


def test_the_monitor_sees_an_edit_to_an_old_anchor(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'shipyard.db'}")
    store.migrate()
    fill(store, 4)
    monitor = audit.Monitor()
    assert monitor.check(store).intact
    anchors = tmp_path / "audit.anchor"
    original = anchors.read_text()
    lines = original.splitlines()
    first = json.loads(lines[0])
    first["at"] += 1
    anchors.write_text("\n".join([json.dumps(first, separators=(",", ":")), *lines[1:]]) + "\n")
    seen, truth = monitor.check(store), audit.verify(store, pin=False)
    assert seen.status == truth.status == "broken" and seen.problem == truth.problem
    assert "line 1 of" in (seen.problem or "") and "signature" in (seen.problem or "")
    anchors.write_text(original)
    assert monitor.check(store).intact
    store.close()


def test_dashboard_badge_shows_an_edit_to_an_old_entry(shipyard_server: Any) -> None:
    server: ShipyardServer = shipyard_server(CONFIG)
    with server.api() as api:
        for name in ("a", "b", "c"):
            assert api.post("/keys", json={"name": name, "role": "viewer"}).status_code == 201
    with httpx.Client(
        base_url=server.url, headers={"accept": "text/html", **server.headers}, timeout=30
    ) as browser:
        page = browser.get("/audit")
        assert page.status_code == 200 and "chain intact" in page.text
        store = Store(server.store_url())
        drop_triggers(store)
        sql(store, "UPDATE audit_log SET actor = 'mallory' WHERE id = (SELECT min(id) FROM audit_log)")
        first = store.engine.connect().execute(sa.text("SELECT min(id) FROM audit_log")).scalar()
        with server.api() as api:
            assert api.get("/audit/verify").json()["first_broken_id"] == first
        page = browser.get("/audit")
        assert f"chain broken at entry {first}" in page.text and "chain intact" not in page.text
        assert 'id="audit-problem"' in page.text
        store.close()


@pytest.mark.postgres
def test_dashboard_badge_on_postgres(shipyard_server: Any, pg_url: str) -> None:
    server: ShipyardServer = shipyard_server(CONFIG, env={"SHIPYARD_DATABASE_URL": pg_url})
    with server.api() as api:
        assert api.post("/keys", json={"name": "a", "role": "viewer"}).status_code == 201
    with httpx.Client(
        base_url=server.url, headers={"accept": "text/html", **server.headers}, timeout=30
    ) as browser:
        assert "chain intact" in browser.get("/audit").text
        store = Store(pg_url)
        drop_triggers(store)
        sql(store, "UPDATE audit_log SET detail = 'x' WHERE id = (SELECT min(id) FROM audit_log)")
        assert re.search(r"chain broken at entry \d+", browser.get("/audit").text)
        store.close()


# -- the key ---------------------------------------------------------------------------------------
def test_the_key_file_is_private_and_the_key_shown_nowhere(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert cli("keys", "create", "bot", "--role", "client", home=home).returncode == 0
    key_file, anchors = home / "audit.key", home / "audit.anchor"
    assert key_file.stat().st_mode & 0o777 == 0o600 and anchors.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    assert len(key) == 64
    from shipyard.settings import Settings

    assert Settings(environ={"SHIPYARD_AUDIT_KEY": "a-shared-audit-key-1234"}).as_dict()["audit_key"] == "***"
    for args in (("audit", "verify"), ("audit", "verify", "--json")):
        shown = cli(*args, home=home, env={"SHIPYARD_AUDIT_KEY": "a-shared-audit-key-1234"})
        assert "a-shared-audit-key-1234" not in shown.stdout + shown.stderr
        assert key not in shown.stdout + shown.stderr
    dump = (home / "shipyard.db").read_bytes() + anchors.read_bytes()
    assert key.encode() not in dump


def test_verify_says_when_the_key_is_missing_or_another(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert cli("keys", "create", "bot", "--role", "client", home=home).returncode == 0
    # Another key: named as such, exit 2, not called tampering.
    code, verdict = cli_verify(home, env={"SHIPYARD_AUDIT_KEY": "not-the-key-that-wrote-it"})
    assert code == 2 and verdict["status"] == "key_wrong", verdict
    assert "hashed with audit key" in verdict["problem"] and "share the key" in verdict["problem"]
    # No key at all (the key file is not there, e.g. another machine's home).
    (home / "audit.key").rename(tmp_path / "kept.key")
    code, verdict = cli_verify(home)
    assert code == 2 and verdict["status"] == "key_missing"
    assert "SHIPYARD_AUDIT_KEY" in verdict["problem"] and "audit.key" in verdict["problem"]
    text = cli("audit", "verify", home=home)
    assert text.returncode == 2 and "cannot be verified here" in text.stdout
    assert not (home / "audit.key").exists()  # verifying does not make a key
    (tmp_path / "kept.key").rename(home / "audit.key")
    assert cli_verify(home)[0] == 0


def test_an_entry_of_another_key_after_this_keys_entries_is_a_break(tmp_path: Path) -> None:
    """One key per store: after entries that verify with this server's key, an entry naming
    another key is a forgery or a misconfigured server, and is reported as a break (exit 1)."""
    url = f"sqlite:///{tmp_path / 'shipyard.db'}"
    store = Store(url)
    store.migrate()
    fill(store, 2)
    other = Store(url, home=tmp_path / "elsewhere", audit_key="another-servers-key")
    audit.record(other, WHO, "route.put", "route:x")
    verdict = audit.verify(store)
    assert (
        verdict.status == "broken" and verdict.broken_at == 3 and "names audit key" in (verdict.problem or "")
    )
    # The other server sees the log as written with another key: a key problem, not a break.
    assert audit.verify(other).status == "key_wrong"
    other.close()
    store.close()


def test_a_key_setting_is_used_instead_of_the_file(tmp_path: Path) -> None:
    env = {"SHIPYARD_AUDIT_KEY": "a-shared-audit-key-1234"}
    home = tmp_path / "h"
    assert cli("keys", "create", "bot", "--role", "client", home=home, env=env).returncode == 0
    assert not (home / "audit.key").exists()
    assert cli_verify(home, env=env)[0] == 0
    code, verdict = cli_verify(home)  # without the setting: a key file is not made, so none
    assert code == 2 and verdict["status"] == "key_missing"


def test_an_edited_anchor_file_is_found(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'shipyard.db'}")
    store.migrate()
    fill(store, 3)
    anchors = tmp_path / "audit.anchor"
    lines = anchors.read_text().splitlines()
    forged = json.loads(lines[-1])
    forged["entries"] = 2
    anchors.write_text("\n".join([*lines[:-1], json.dumps(forged)]) + "\n")
    verdict = audit.verify(store)
    assert verdict.status == "broken" and "does not match its signature" in (verdict.problem or "")
    store.close()


# -- old entries, anchors and transactions ---------------------------------------------------------
def test_entries_from_before_the_keyed_chain_still_verify(tmp_path: Path) -> None:
    """A store written by the previous release (plain SHA-256 chain, migration 0006) upgrades in
    place: its entries verify as the unkeyed start of the chain, new ones are keyed."""
    from importlib import resources

    from alembic import command
    from alembic.config import Config

    store = Store(f"sqlite:///{tmp_path / 'shipyard.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("shipyard.store") / "migrations"))
    cfg.attributes["engine"] = store.engine
    command.upgrade(cfg, "0006")
    prev = "0" * 64
    with store.engine.begin() as conn:
        for i in range(1, 4):
            row = {
                "at": 1000.0 + i,
                "actor": "bob",
                "role": None,
                "action": "key.create",
                "target": f"key:k{i}",
                "outcome": "ok",
                "before": None,
                "after": {"role": "client"},
                "detail": None,
                "source": "cli",
            }
            prev = row["hash"] = plain_sha256(prev, row)
            conn.execute(
                sa.text(
                    "INSERT INTO audit_log (at, actor, role, action, target, outcome, before, after, "
                    "detail, source, hash) VALUES (:at, :actor, :role, :action, :target, :outcome, "
                    ":before, :after, :detail, :source, :hash)"
                ),
                {**row, "after": json.dumps(row["after"])},
            )
    store.migrate()
    verdict = audit.verify(store)
    assert verdict.intact and verdict.legacy == 3 and verdict.entries == 3
    fill(store, 2)
    verdict = audit.verify(store)
    assert verdict.intact and verdict.legacy == 3 and verdict.entries == 5 and verdict.anchor is not None
    # The old entries are protected by the keyed one after them: editing one breaks the chain.
    drop_triggers(store)
    edit_and_rechain(store, 2, drop_key_id=False, actor="mallory")
    assert audit.verify(store).broken_at == 4
    store.close()


def test_the_head_is_anchored_after_the_commit_only(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'shipyard.db'}")
    store.migrate()
    anchors = tmp_path / "audit.anchor"
    with pytest.raises(RuntimeError), store.write() as conn:
        audit.record(store, WHO, "route.put", "route:x", conn=conn)
        raise RuntimeError("the change fails")
    assert not anchors.exists() and audit.verify(store, pin=False).entries == 0
    with store.write() as conn:
        audit.record(store, WHO, "route.put", "route:x", conn=conn)
        audit.record(store, WHO, "alias.set", "prompt:x@production", conn=conn)
        assert not anchors.exists()  # not before the commit
    lines = anchors.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["entries"] == 2
    store.close()


def test_verify_pins_a_head_no_anchor_names(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'shipyard.db'}")
    store.migrate()
    fill(store, 2)
    (tmp_path / "audit.anchor").unlink()
    first = audit.verify(store)
    assert first.intact and first.warning is not None and "no anchors" in first.warning
    second = audit.verify(store)
    assert (
        second.intact and second.warning is None and second.anchor is not None and second.anchor.entries == 2
    )
    store.close()


# -- refused reads ---------------------------------------------------------------------------------
def test_refused_reads_are_audited(shipyard_server: Any) -> None:
    server: ShipyardServer = shipyard_server(CONFIG)
    with server.api() as api:
        developer = api.post("/keys", json={"name": "dev", "role": "developer"}).json()
    headers = {"Authorization": f"Bearer {developer['key']}"}
    assert httpx.get(server.url + "/api/keys", headers=headers).status_code == 403
    assert httpx.get(server.url + "/keys", headers={**headers, "accept": "text/html"}).status_code == 403
    with server.api() as api:
        denied = api.get("/audit", params={"outcome": "denied"}).json()["data"]
    assert [e["target"] for e in denied] == ["GET /keys", "GET /api/keys"]
    assert all(e["action"] == "request.denied" and developer["id"] in e["actor"] for e in denied)
    # A loop of refusals does not flood the log: ten a minute per key, the rest counted.
    for _ in range(15):
        assert httpx.get(server.url + "/api/audit", headers=headers).status_code == 403
    with server.api() as api:
        denied = api.get("/audit", params={"outcome": "denied"}).json()["data"]
        assert api.get("/audit/verify").json()["intact"]
    assert len(denied) == 10


def test_refusals_beyond_the_limit_are_counted_in_the_next_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shipyard.gateway import auth

    store = Store(f"sqlite:///{tmp_path / 'shipyard.db'}")
    store.migrate()
    service = auth.AuthService(store)
    who = auth.Principal("key_1", "dev", "developer", "sk-shp-ab")
    clock = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: clock[0])
    written = [
        service.refused(who, "10.0.0.1", "GET", "/api/keys", "admin")
        for _ in range(auth.REFUSALS_PER_MINUTE + 5)
    ]
    assert written.count(True) == auth.REFUSALS_PER_MINUTE
    clock[0] += 61
    assert service.refused(who, "10.0.0.1", "GET", "/api/keys", "admin")
    newest = audit.query(store, limit=1)[0]
    assert "5 more refusals of this key" in newest["detail"]
    store.close()


def test_each_committed_append_writes_one_anchor_line(tmp_path: Path) -> None:
    """benchmarks/audit_chain.py measures what that costs."""
    store = Store(f"sqlite:///{tmp_path / 'shipyard.db'}")
    store.migrate()
    fill(store, 20)
    lines = (tmp_path / "audit.anchor").read_text().splitlines()
    assert [json.loads(line)["entries"] for line in lines] == list(range(1, 21))
    store.close()
