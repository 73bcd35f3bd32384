"""API keys, roles, route scopes, the dashboard login and the audit log, through the real server, the
official openai client and the real CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

from shipyard.store import audit
from shipyard.store.db import Store
from tests.conftest import ShipyardServer, make_key
from tests.helpers import csrf_token, every_page

CONFIG = """
providers: [{name: mock, type: mock, echo: true}]
models:
  - {name: echo, provider: mock}
routes:
  - {name: support, targets: [{model: echo}]}
  - {name: search, targets: [{model: echo}]}
  - {name: open, public: true, targets: [{model: echo}]}
prompts:
  - name: greet
    messages: [{role: system, content: "You greet people."}]
    aliases: [production]
"""

CHAT = {"messages": [{"role": "user", "content": "hello"}]}


def cli(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shipyard", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        timeout=120,
    )


@pytest.fixture
def server(shipyard_server: Any) -> ShipyardServer:
    s: ShipyardServer = shipyard_server(CONFIG)
    return s


def new_key(server: ShipyardServer, role: str, **body: Any) -> dict[str, Any]:
    with server.api() as api:
        r = api.post("/keys", json={"name": f"{role}-key", "role": role, **body})
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def add_prompt_version(server: ShipyardServer) -> None:
    spec = {"messages": [{"role": "system", "content": "You greet people warmly."}]}
    with server.api() as api:
        r = api.post("/prompts", json={"name": "greet", "spec": spec})
    assert r.status_code == 200, r.text


def test_gateway_and_api_need_a_key(server: ShipyardServer) -> None:
    # The admin API: no key → 401, naming the header and how to make a key.
    r = httpx.get(server.url + "/api/prompts")
    assert r.status_code == 401
    assert "Authorization: Bearer" in r.json()["error"]["message"]
    # The gateway, through the official client: no usable key → AuthenticationError.
    for bad in ("not-a-key", make_key()):
        with pytest.raises(openai.AuthenticationError) as info:
            server.openai(api_key=bad).chat.completions.create(model="support", **CHAT)
        assert info.value.status_code == 401
    # An unknown route answers 401 too (not 404): route names are not told to callers without a key.
    assert httpx.post(server.url + "/v1/chat/completions", json={"model": "nope", **CHAT}).status_code == 401
    # A public route needs none; the others do.
    anonymous = httpx.post(server.url + "/v1/chat/completions", json={"model": "open", **CHAT})
    assert anonymous.status_code == 200, anonymous.text
    assert (
        httpx.post(server.url + "/v1/chat/completions", json={"model": "support", **CHAT}).status_code == 401
    )
    assert [m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]] == ["open"]
    # The admin key works everywhere; health probes and metrics stay open for load balancers.
    reply = server.openai().chat.completions.create(model="support", **CHAT)
    assert reply.choices[0].message.content == "hello"
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(server.url + path).status_code == 200


def test_keys_are_hashed_shown_once_and_shaped_like_openai(server: ShipyardServer) -> None:
    created = new_key(server, "client")
    secret = created["key"]
    assert re.fullmatch(r"sk-shp-[A-Za-z0-9]{40}", secret)
    assert secret.startswith(created["prefix"]) and len(created["prefix"]) < 20
    with server.api() as api:
        listed = api.get("/keys").json()["data"]
        one = api.get(f"/keys/{created['id']}").json()
        assert every_page(api, "/keys", {"limit": 1}) == listed  # oldest first, one per page
    assert all("key" not in k for k in listed) and "key" not in one
    assert {k["id"] for k in listed} >= {created["id"]}
    # The store holds a SHA-256, never the secret.
    store = Store(server.store_url())
    try:
        with store.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM api_keys"))]
    finally:
        store.close()
    dump = repr(rows)
    assert secret not in dump and secret[len(created["prefix"]) :] not in dump
    import hashlib

    assert hashlib.sha256(secret.encode()).hexdigest() in dump
    # The official client accepts it as is.
    reply = server.openai(api_key=secret).chat.completions.create(model="search", **CHAT)
    assert reply.choices[0].message.content == "hello"


def test_roles(server: ShipyardServer) -> None:
    viewer = new_key(server, "viewer")["key"]
    developer = new_key(server, "developer")["key"]
    client = new_key(server, "client")["key"]

    def api(key: str) -> httpx.Client:
        return httpx.Client(
            base_url=server.url + "/api", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    with api(viewer) as v, api(developer) as d, api(client) as c:
        assert v.get("/prompts").status_code == 200
        assert v.get("/traces").status_code == 200
        assert c.get("/prompts").status_code == 403
        assert v.get("/keys").status_code == 403 and d.get("/keys").status_code == 403
        assert d.get("/audit").status_code == 403
        r = d.post("/keys", json={"name": "x", "role": "admin"})
        assert r.status_code == 403 and "needs role `admin`" in r.json()["error"]["message"]
    # Viewers read; they do not call models.
    with pytest.raises(openai.PermissionDeniedError):
        server.openai(api_key=viewer).chat.completions.create(model="support", **CHAT)
    for key in (client, developer):
        assert server.openai(api_key=key).chat.completions.create(model="support", **CHAT).choices


def test_viewer_cannot_move_an_alias_and_the_attempt_is_audited(server: ShipyardServer) -> None:
    add_prompt_version(server)
    viewer = new_key(server, "viewer")
    developer = new_key(server, "developer")
    move = {"version": "v2", "reason": "ship the warmer greeting"}
    r = httpx.put(
        server.url + "/api/prompts/greet/aliases/production",
        json=move,
        headers={"Authorization": f"Bearer {viewer['key']}"},
    )
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "permission_error"
    assert "viewer" in r.json()["error"]["message"]
    with server.api() as api:
        assert api.get("/prompts/greet/versions/production").json()["version"] == 1  # did not move
        denied = api.get("/audit", params={"outcome": "denied"}).json()["data"]
    assert len(denied) == 1
    entry = denied[0]
    assert entry["action"] == "request.denied" and entry["role"] == "viewer"
    assert entry["target"] == "PUT /api/prompts/greet/aliases/production"
    assert viewer["id"] in entry["actor"]
    # The developer may, and the change is audited with who, before and after.
    r = httpx.put(
        server.url + "/api/prompts/greet/aliases/production",
        json=move,
        headers={"Authorization": f"Bearer {developer['key']}"},
    )
    assert r.status_code == 200, r.text
    with server.api() as api:
        entries = api.get("/audit", params={"action": "alias.set", "target": "greet@production"}).json()[
            "data"
        ]
    latest = entries[0]
    assert developer["id"] in latest["actor"] and latest["role"] == "developer"
    assert latest["before"] == {"version": 1} and latest["after"] == {"version": 2}
    assert latest["detail"] == "ship the warmer greeting"
    assert latest["source"].startswith("api")


def test_revoked_key_gets_401_through_the_api_and_the_cli(server: ShipyardServer) -> None:
    first = new_key(server, "client")
    c = server.openai(api_key=first["key"])
    assert c.chat.completions.create(model="support", **CHAT).choices
    with server.api() as api:
        r = api.delete(f"/keys/{first['id']}")
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    with pytest.raises(openai.AuthenticationError) as info:
        c.chat.completions.create(model="support", **CHAT)
    assert "revoked" in str(info.value)

    # Revoked from the command line (another process): the server notices within its reload interval.
    second = new_key(server, "developer")
    headers = {"Authorization": f"Bearer {second['key']}"}
    assert httpx.get(server.url + "/api/prompts", headers=headers).status_code == 200
    out = cli("keys", "revoke", second["id"], home=server.home)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 5
    status = 200
    while time.monotonic() < deadline and status != 401:
        time.sleep(0.2)
        status = httpx.get(server.url + "/api/prompts", headers=headers).status_code
    assert status == 401
    with server.api() as api:
        revokes = api.get("/audit", params={"action": "key.revoke"}).json()["data"]
        assert every_page(api, "/audit", {"action": "key.revoke", "limit": 1}) == revokes
    assert {e["target"] for e in revokes} == {f"key:{first['id']}", f"key:{second['id']}"}
    assert all(e["before"]["revoked_at"] is None and e["after"]["revoked_at"] for e in revokes)


def test_route_scope(server: ShipyardServer) -> None:
    scoped = new_key(server, "client", routes=["support"])
    c = server.openai(api_key=scoped["key"])
    assert c.chat.completions.create(model="support", **CHAT).choices
    with pytest.raises(openai.PermissionDeniedError) as info:
        c.chat.completions.create(model="search", **CHAT)
    assert "`support`" in str(info.value) and "`search`" in str(info.value)
    assert [m.id for m in c.models.list()] == ["support"]
    with server.api() as api:
        bad = api.post("/keys", json={"name": "x", "routes": ["nope"]})
    assert bad.status_code == 400 and "`nope`" in bad.json()["error"]["message"]


def test_admin_key_printed_once_on_first_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SHIPYARD_ADMIN_KEY"}
    first = ShipyardServer(tmp_path / "home", CONFIG, env={})
    first.env = {**env, "SHIPYARD_CONFIG": ""}
    first.env.pop("SHIPYARD_CONFIG")
    first.start()
    try:
        keys_printed = re.findall(r"sk-shp-[A-Za-z0-9]{40}", first.log())
        assert len(set(keys_printed)) == 1
        secret = keys_printed[0]
        assert (
            httpx.get(first.url + "/api/keys", headers={"Authorization": f"Bearer {secret}"}).status_code
            == 200
        )
    finally:
        first.stop()
    again = ShipyardServer(tmp_path / "home", CONFIG)
    again.env = dict(first.env)
    again.log_path = tmp_path / "second.log"
    again.start()
    try:
        assert not re.findall(r"sk-shp-[A-Za-z0-9]{40}", again.log())
    finally:
        again.stop()


def test_keys_cli(tmp_path: Path) -> None:
    home = tmp_path / "h"
    out = cli(
        "keys", "create", "bot", "--role", "client", "--routes", "support", "--usd-per-day", "2", home=home
    )
    assert out.returncode == 0, out.stderr
    secret = re.search(r"sk-shp-[A-Za-z0-9]{40}", out.stdout)
    assert secret is not None
    listed = cli("keys", "list", home=home)
    assert "bot" in listed.stdout and secret.group(0) not in listed.stdout and "2 $/day" in listed.stdout
    bad = cli("keys", "create", "x", "--role", "root", home=home)
    assert bad.returncode == 2 and "`role` must be one of admin, developer, viewer, client" in bad.stderr
    upd = cli("keys", "update", "bot", "--rpm", "10", home=home)
    assert upd.returncode == 0, upd.stderr
    rev = cli("keys", "revoke", "bot", home=home)
    assert rev.returncode == 0 and "Revoked" in rev.stdout
    log = cli("audit", "--json", home=home)
    import json

    actions = [e["action"] for e in json.loads(log.stdout)]
    assert actions == ["key.revoke", "key.limits", "key.create"]
    verify = cli("audit", "verify", home=home)
    assert verify.returncode == 0 and "intact: 3 entries" in verify.stdout


def test_audit_log_is_append_only_and_tamper_evident(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.migrate()
    who = audit.Actor("alice", "admin", "api")
    for i in range(3):
        audit.record(store, who, "route.put", f"route:r{i}", after={"n": i})
    assert audit.verify(store).intact and audit.verify(store).entries == 3
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET actor = 'mallory' WHERE id = 2"))
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_log WHERE id = 2"))
    # Someone who drops the trigger and edits a row is still caught by the hash chain.
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER audit_log_no_update"))
        conn.execute(sa.text("UPDATE audit_log SET actor = 'mallory' WHERE id = 2"))
    verdict = audit.verify(store)
    assert (verdict.status, verdict.entries, verdict.broken_at) == ("broken", 2, 2)
    store.close()


def test_audit_log_append_only_on_postgres(pg_url: str, tmp_path: Path) -> None:
    store = Store(pg_url, home=tmp_path)
    store.migrate()
    audit.record(store, audit.Actor("bob", None, "cli"), "key.create", "key:k1", after={"role": "client"})
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET actor = 'mallory'"))
    assert audit.verify(store).intact and audit.verify(store).entries == 1
    store.close()


def test_dashboard_login(server: ShipyardServer) -> None:
    viewer = new_key(server, "viewer")["key"]
    client = new_key(server, "client")["key"]
    with httpx.Client(base_url=server.url, headers={"accept": "text/html"}, timeout=30) as browser:
        r = browser.get("/traces?range=1h")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Ftraces%3Frange%3D1h"
        assert browser.get("/login").status_code == 200
        bad = browser.post("/login", data={"key": client, "next": "/"})
        assert bad.status_code == 401 and "role `client`" in bad.text
        wrong = browser.post("/login", data={"key": make_key(), "next": "/"})
        assert wrong.status_code == 401 and "not known" in wrong.text
        ok = browser.post("/login", data={"key": viewer, "next": "//evil.example/"})
        assert ok.status_code == 303 and ok.headers["location"] == "/"  # no open redirect
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert browser.get("/traces").status_code == 200
        assert browser.get("/audit").status_code == 403  # admin only
        # The session also carries the dashboard's own API calls (feedback from the trace page).
        assert browser.get("/api/prompts").status_code == 200
        token = csrf_token(browser.get("/").text)
        assert browser.post("/logout").status_code == 403  # a change by cookie needs its CSRF token
        assert browser.post("/logout", data={"csrf_token": token}).status_code == 303
        # Logged out, the same cookie no longer opens anything.
        assert browser.get("/").status_code == 303 and browser.get("/api/prompts").status_code == 401


def test_dashboard_keys_and_audit_pages(server: ShipyardServer) -> None:
    add_prompt_version(server)
    with httpx.Client(base_url=server.url, headers={"accept": "text/html"}, timeout=30) as browser:
        assert browser.post("/login", data={"key": server.admin_key, "next": "/keys"}).status_code == 303
        token = csrf_token(browser.get("/keys").text)
        made = browser.post(
            "/keys", data={"name": "page-made", "role": "viewer", "routes": "", "csrf_token": token}
        )
        assert made.status_code == 200
        secret = re.search(r"sk-shp-[A-Za-z0-9]{40}", made.text)
        assert secret is not None and "not shown again" in made.text
        page = browser.get("/keys")
        assert "page-made" in page.text and secret.group(0) not in page.text
        key_id = re.search(r'data-key="(key_[0-9a-f]+)"[^<]*<td><b>page-made', page.text.replace("\n", ""))
        assert key_id is not None
        assert browser.post(f"/keys/{key_id.group(1)}/revoke", data={"csrf_token": token}).status_code == 303
        assert (
            httpx.get(
                server.url + "/api/prompts", headers={"Authorization": f"Bearer {secret.group(0)}"}
            ).status_code
            == 401
        )
        audit_page = browser.get("/audit")
        assert audit_page.status_code == 200
        for action in ("key.create", "key.revoke", "prompt.put"):
            assert f'data-action="{action}"' in audit_page.text
        assert "chain intact" in audit_page.text
        only_keys = browser.get("/audit", params={"action": "key"})
        assert 'data-action="prompt.put"' not in only_keys.text


def test_a_key_cannot_revoke_or_demote_itself(server: ShipyardServer) -> None:
    admin = new_key(server, "admin")
    headers = {"Authorization": f"Bearer {admin['key']}"}
    with httpx.Client(base_url=server.url + "/api", headers=headers, timeout=30) as api:
        r = api.delete(f"/keys/{admin['id']}")
        assert r.status_code == 400 and "cannot revoke itself" in r.json()["error"]["message"]
        r = api.patch(f"/keys/{admin['id']}", json={"role": "viewer"})
        assert r.status_code == 400 and "own role" in r.json()["error"]["message"]
        assert api.patch(f"/keys/{admin['id']}", json={"name": "renamed"}).json()["name"] == "renamed"
    with server.api() as api:
        assert api.delete(f"/keys/{admin['id']}").status_code == 200  # another admin may
