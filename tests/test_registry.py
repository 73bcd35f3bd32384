"""Versioning through the real CLI and API: content-addressed prompt versions, aliases that a
running gateway follows without restart, rollback and history, trace lineage, config as code
(apply → export → apply), diffs, and clear errors with nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import api_as, every_page, named_key, wait_trace

CONFIG = """
providers:
  - {name: fake, type: mock, echo: true}
models:
  - {name: echo-1, provider: fake, params: {max_tokens: 50}}
prompts:
  - name: support
    aliases: [production]
    messages:
      - {role: system, content: "You help customers of {{ company }}."}
      - {role: user, content: "v1 answer to: {{ question }}"}
    params: {temperature: 0.2}
routes:
  - name: support
    prompt: support@production
    targets: [{model: echo-1}]
  - name: plain
    targets: [{model: echo-1}]
"""


def shipyard(
    *args: str, cwd: Path, home: Path, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHIPYARD_ACTOR": "tester"}
    r = subprocess.run(
        [sys.executable, "-m", "shipyard", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        input=input,
    )
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def ask(server: Any, question: str, route: str = "support") -> httpx.Response:
    return httpx.post(
        server.url + "/v1/chat/completions",
        headers=server.headers,
        timeout=10,
        json={"model": route, "variables": {"company": "Acme", "question": question}},
    )


def answer(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["message"]["content"])


def test_same_content_is_one_version_one_character_makes_another(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = json.loads(
        shipyard(
            "prompts", "create", "greet", "--user", "Hello {{ name }}", "--json", cwd=tmp_path, home=home
        ).stdout
    )
    again = json.loads(
        shipyard(
            "prompts", "create", "greet", "--user", "Hello {{ name }}", "--json", cwd=tmp_path, home=home
        ).stdout
    )
    assert (first["version"], again["version"]) == (1, 1)
    assert first["hash"] == again["hash"] and again["status"] == "unchanged"
    changed = json.loads(
        shipyard(
            "prompts", "create", "greet", "--user", "Hello {{ name }}!", "--json", cwd=tmp_path, home=home
        ).stdout
    )
    assert changed["version"] == 2 and changed["hash"] != first["hash"] and changed["status"] == "update"
    versions = json.loads(shipyard("prompts", "versions", "greet", "--json", cwd=tmp_path, home=home).stdout)
    assert [(v["version"], v["hash"]) for v in versions] == [(1, first["hash"]), (2, changed["hash"])]
    table = shipyard("prompts", "versions", "greet", cwd=tmp_path, home=home).stdout
    assert "v1" in table and "v2" in table and first["hash"][:12] in table and "tester" in table
    # Going back to the old content restores v1 instead of writing a duplicate.
    back = json.loads(
        shipyard(
            "prompts", "create", "greet", "--user", "Hello {{ name }}", "--json", cwd=tmp_path, home=home
        ).stdout
    )
    assert back["version"] == 1 and back["status"] == "restore"
    shown = json.loads(shipyard("prompts", "show", "greet@v2", "--json", cwd=tmp_path, home=home).stdout)
    assert shown["variables"] == ["name"] and shown["spec"]["messages"][0]["content"] == "Hello {{ name }}!"
    by_hash = json.loads(
        shipyard("prompts", "show", f"greet@{changed['hash'][:10]}", "--json", cwd=tmp_path, home=home).stdout
    )
    assert by_hash["version"] == 2
    diff = shipyard("prompts", "diff", "greet", "v1", "v2", cwd=tmp_path, home=home).stdout
    assert "-  content: Hello {{ name }}" in diff and "+  content: Hello {{ name }}!" in diff


def test_alias_moves_reach_the_running_gateway_and_roll_back(shipyard_server: Any, tmp_path: Path) -> None:
    server = shipyard_server(CONFIG, env={"SHIPYARD_RELOAD_INTERVAL": "0.2"})
    home = server.home
    assert answer(ask(server, "where is my parcel?")) == "v1 answer to: where is my parcel?"

    v2 = tmp_path / "support-v2.yaml"
    v2.write_text(
        "messages:\n"
        "  - {role: system, content: 'You help customers of {{ company }}.'}\n"
        "  - {role: user, content: 'v2 answer to: {{ question }}'}\n"
        "params: {temperature: 0.2}\n"
    )
    created = json.loads(
        shipyard(
            "prompts",
            "create",
            "support",
            "-f",
            str(v2),
            "--json",
            "-m",
            "friendlier",
            cwd=tmp_path,
            home=home,
        ).stdout
    )
    assert created["version"] == 2
    # A new version alone does not change what `support@production` serves.
    time.sleep(0.6)
    assert answer(ask(server, "hi")).startswith("v1 ")

    moved_at = time.monotonic()
    shipyard(
        "prompts",
        "alias",
        "set",
        "support",
        "production",
        "v2",
        "--reason",
        "A/B winner",
        cwd=tmp_path,
        home=home,
    )
    while not answer(ask(server, "hi")).startswith("v2 "):
        assert time.monotonic() - moved_at < 5, "the gateway did not pick up the alias move within 5 s"
        time.sleep(0.1)

    shipyard(
        "prompts", "rollback", "support", "production", "--reason", "complaints", cwd=tmp_path, home=home
    )
    rolled_at = time.monotonic()
    while not answer(ask(server, "hi")).startswith("v1 "):
        assert time.monotonic() - rolled_at < 5, "the rollback did not reach the gateway within 5 s"
        time.sleep(0.1)

    history = json.loads(
        shipyard(
            "prompts", "alias", "history", "support", "production", "--json", cwd=tmp_path, home=home
        ).stdout
    )
    moves = [(e["from_version"], e["to_version"], e["actor"], e["reason"]) for e in history]
    # The first entry is `shipyard up` applying the config (as the server's OS user).
    assert moves[0][:2] == (None, 1) and moves[0][3] == "declared in config"
    assert moves[1:] == [(1, 2, "tester", "A/B winner"), (2, 1, "tester", "complaints")]
    text = shipyard("prompts", "alias", "history", "support", cwd=tmp_path, home=home).stdout
    assert "A/B winner" in text and "complaints" in text


def test_trace_names_prompt_model_and_route_versions(shipyard_server: Any, tmp_path: Path) -> None:
    server = shipyard_server(CONFIG, env={"SHIPYARD_RELOAD_INTERVAL": "0.2"})
    r = ask(server, "refund?")
    t = wait_trace(server.store_url(), r.headers["x-shipyard-trace-id"])
    assert (t["prompt"], t["prompt_version"], t["route_version"], t["model_version"]) == ("support", 1, 1, 1)
    assert t["input"] == [
        {"role": "system", "content": "You help customers of Acme."},
        {"role": "user", "content": "v1 answer to: refund?"},
    ]
    assert t["attributes"]["shipyard.variables"] == {"company": "Acme", "question": "refund?"}

    # A route change is a new route version, served without restart; traces follow it.
    changed = CONFIG.replace("params: {max_tokens: 50}", "params: {max_tokens: 3}")
    cfg = tmp_path / "changed.yaml"
    cfg.write_text(changed)
    plan = json.loads(shipyard("apply", str(cfg), "--json", cwd=tmp_path, home=server.home).stdout)
    assert plan["counts"] == {"create": 0, "update": 1, "restore": 0, "unchanged": 4}
    deadline = time.monotonic() + 5
    while True:
        r = ask(server, "one two three four five six")
        if r.json()["usage"]["completion_tokens"] == 3:
            break
        assert time.monotonic() < deadline, "the new model config was not served within 5 s"
        time.sleep(0.1)
    t = wait_trace(server.store_url(), r.headers["x-shipyard-trace-id"])
    assert (t["model_version"], t["route_version"], t["prompt_version"]) == (2, 1, 1)
    # Only the model config changed: the provider instance was kept, not restarted.
    assert "providers (re)started: none" in server.log()


def test_client_messages_follow_the_template_and_missing_variables_are_named(shipyard_server: Any) -> None:
    server = shipyard_server(CONFIG)
    client = server.openai()
    reply = client.chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": "and one more thing"}],
        extra_body={"variables": {"company": "Acme", "question": "first"}},
    )
    assert reply.choices[0].message.content == "and one more thing"  # echo of the last user message
    # The SDK needs a `messages` argument: an empty list means "only the template".
    only_template = client.chat.completions.create(
        model="support", messages=[], extra_body={"variables": {"company": "Acme", "question": "status?"}}
    )
    assert only_template.choices[0].message.content == "v1 answer to: status?"
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "support", "variables": {"company": "A"}},
        headers=server.headers,
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "variables" and "`question`" in err["message"] and "support@v1" in err["message"]
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "support", "variables": ["x"]},
        headers=server.headers,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "variables"
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "plain", "variables": {"q": 1}},
        headers=server.headers,
    )
    assert r.status_code == 400 and "has no prompt template" in r.json()["error"]["message"]


def test_apply_export_apply_is_a_no_op(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cfg = tmp_path / "shipyard.yaml"
    text = CONFIG + "  - name: with-secret\n    targets: [{model: remote, weight: 2, timeout: 5}]\n"
    text = text.replace(
        "providers:\n",
        "providers:\n  - {name: cloud, type: openai, base_url: "
        "'https://example.invalid/v1', api_key: '${SHIPYARD_TEST_SECRET}'}\n",
    )
    text = text.replace(
        "models:\n", "models:\n  - {name: remote, provider: cloud, pricing: {input_per_mtok: 1.5}}\n"
    )
    cfg.write_text(text)
    env_secret = {"SHIPYARD_TEST_SECRET": "sk-super-secret"}
    os.environ.update(env_secret)
    try:
        dry = shipyard("apply", str(cfg), "--dry-run", cwd=tmp_path, home=home).stdout
        assert "+ create" in dry and "dry run: nothing written" in dry
        assert not home.exists()  # a dry run writes nothing, not even a new store
        first = json.loads(shipyard("apply", str(cfg), "--json", cwd=tmp_path, home=home).stdout)
        assert (
            first["applied"] and first["counts"]["create"] == 8
        )  # 2 providers, 2 models, 1 prompt, 3 routes
        again = shipyard("apply", str(cfg), cwd=tmp_path, home=home).stdout
        assert "no changes" in again
        exported = tmp_path / "exported.yaml"
        shipyard("export", "-o", str(exported), cwd=tmp_path, home=home)
        text = exported.read_text()
        assert "${SHIPYARD_TEST_SECRET}" in text and "sk-super-secret" not in text
        assert "aliases:\n  - production" in text
        round_trip = json.loads(shipyard("apply", str(exported), "--json", cwd=tmp_path, home=home).stdout)
        assert round_trip["summary"].startswith("no changes") and not round_trip["applied"]
        # …and into an empty registry it rebuilds the same versions (same hashes).
        other = tmp_path / "other"
        shipyard("apply", str(exported), cwd=tmp_path, home=other)
        a = json.loads(shipyard("routes", "show", "support", "--json", cwd=tmp_path, home=home).stdout)
        b = json.loads(shipyard("routes", "show", "support", "--json", cwd=tmp_path, home=other).stdout)
        assert a["hash"] == b["hash"]
        # The store never saw the secret's value.
        db = (home / "shipyard.db").read_bytes()
        assert b"sk-super-secret" not in db
    finally:
        for key in env_secret:
            os.environ.pop(key, None)


def test_route_and_model_rollback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cfg = tmp_path / "shipyard.yaml"
    cfg.write_text(CONFIG)
    shipyard("apply", str(cfg), cwd=tmp_path, home=home)
    cfg.write_text(
        CONFIG.replace(
            "targets: [{model: echo-1}]\n  - name: plain",
            "targets: [{model: echo-1, retries: 2}]\n  - name: plain",
        )
    )
    out = shipyard("apply", str(cfg), cwd=tmp_path, home=home).stdout
    assert "~ update" in out and "support" in out and "+  retries: 2" in out
    assert (
        json.loads(shipyard("routes", "show", "support", "--json", cwd=tmp_path, home=home).stdout)["version"]
        == 2
    )
    shipyard("routes", "rollback", "support", cwd=tmp_path, home=home)
    shown = json.loads(shipyard("routes", "show", "support", "--json", cwd=tmp_path, home=home).stdout)
    assert shown["version"] == 1 and "current" in shown["aliases"]
    listed = json.loads(shipyard("routes", "list", "--json", cwd=tmp_path, home=home).stdout)
    assert {r["name"]: (r["current"], r["versions"]) for r in listed} == {"support": (1, 2), "plain": (1, 1)}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ("prompt: support@production", "prompt `support` has no alias `staging`"),
        ('{{ question }}"}', "template syntax error"),
        ("{model: echo-1}]\n  - name: plain", "refers to model `nope`"),
    ],
    ids=["unknown-alias", "template-syntax", "unknown-model"],
)
def test_invalid_apply_names_the_problem_and_writes_nothing(
    tmp_path: Path, change: str, fragment: str
) -> None:
    home = tmp_path / "home"
    bad = {
        "prompt: support@production": "prompt: support@staging",
        '{{ question }}"}': '{{ question }"}',
        "{model: echo-1}]\n  - name: plain": "{model: nope}]\n  - name: plain",
    }[change]
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(CONFIG.replace(change, bad, 1))
    r = shipyard("apply", str(cfg), cwd=tmp_path, home=home, check=False)
    assert r.returncode == 1 and fragment in r.stderr and "bad.yaml:" in r.stderr, r.stderr
    for kind in ("prompts", "models", "routes", "providers"):
        assert json.loads(shipyard(kind, "list", "--json", cwd=tmp_path, home=home).stdout) == []


def test_malformed_yaml_and_unknown_alias_errors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("prompts:\n  - name: x\n   messages: [\n")
    r = shipyard("apply", str(cfg), cwd=tmp_path, home=home, check=False)
    assert r.returncode == 1 and "broken.yaml:" in r.stderr and "not valid YAML" in r.stderr
    shipyard("prompts", "create", "greet", "--user", "Hi {{ name }}", cwd=tmp_path, home=home)
    r = shipyard("prompts", "alias", "set", "greet", "production", "v7", cwd=tmp_path, home=home, check=False)
    assert r.returncode == 1 and "has no version 7" in r.stderr
    r = shipyard("prompts", "show", "greet@staging", cwd=tmp_path, home=home, check=False)
    assert r.returncode == 1 and "no alias or version `staging`" in r.stderr
    r = shipyard("prompts", "rollback", "greet", "production", cwd=tmp_path, home=home, check=False)
    assert r.returncode == 1 and "no alias `production`" in r.stderr
    r = shipyard("prompts", "render", "greet", cwd=tmp_path, home=home, check=False)
    assert r.returncode == 1 and "needs variable(s) `name`" in r.stderr
    assert (
        shipyard("prompts", "render", "greet", "--var", "name=Ada", cwd=tmp_path, home=home).stdout.strip()
        == "user: Hi Ada"
    )
    r = shipyard("prompts", "create", "broken", "--user", "Hi {{ name", cwd=tmp_path, home=home, check=False)
    assert r.returncode == 1 and "template syntax error" in r.stderr
    assert [
        p["name"] for p in json.loads(shipyard("prompts", "list", "--json", cwd=tmp_path, home=home).stdout)
    ] == ["greet"]


def test_admin_api(shipyard_server: Any) -> None:
    server = shipyard_server(CONFIG)
    # Changes are recorded under the calling key's name.
    user = named_key(server, "api-user")
    api = api_as(server, user, timeout=10)
    listed = api.get("/prompts").json()["data"]
    assert listed[0]["name"] == "support" and listed[0]["aliases"] == {"current": 1, "production": 1}
    spec = {"messages": [{"role": "user", "content": "v2: {{ question }} at {{ company }}"}]}
    created = api.post("/prompts", json={"name": "support", "spec": spec, "message": "shorter"}).json()
    assert (
        created["version"] == 2
        and created["status"] == "update"
        and created["variables"] == ["company", "question"]
    )
    assert api.post("/prompts", json={"name": "support", "spec": spec}).json()["status"] == "unchanged"
    assert [v["version"] for v in api.get("/prompts/support/versions").json()["data"]] == [1, 2]
    one = api.get("/prompts/support/versions", params={"limit": 1}).json()
    assert [v["version"] for v in one["data"]] == [1] and one["next"]
    two = api.get("/prompts/support/versions", params={"limit": 1, "cursor": one["next"]}).json()
    assert [v["version"] for v in two["data"]] == [2] and two["next"] is None
    wrong = api.get("/models/x/versions", params={"cursor": one["next"]})  # another list's cursor
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "cursor"
    moved = api.put("/prompts/support/aliases/production", json={"version": "v2", "reason": "ship it"}).json()
    assert (moved["from_version"], moved["to_version"], moved["actor"]) == (1, 2, user.actor)
    assert api.get("/prompts/support", params={"ref": "production"}).json()["version"] == 2
    same = api.put("/prompts/support/aliases/production", json={"version": "2"}).json()
    assert same["reason"] == "unchanged"  # a no-op move is not recorded
    back = api.post("/prompts/support/aliases/production/rollback", json={"reason": "oops"}).json()
    assert back["to_version"] == 1
    assert [
        e["reason"] for e in every_page(api, "/prompts/support/history", {"alias": "production", "limit": 2})
    ] == ["declared in config", "ship it", "oops"]
    diff = api.get("/prompts/support/diff", params={"from": "v1", "to": "v2"}).json()
    assert diff["from"] == "support@v1" and diff["to"] == "support@v2"
    assert "-  content: 'v1 answer to: {{ question }}'" in diff["diff"] and "-params:" in diff["diff"]
    assert "+  content: 'v2: {{ question }} at {{ company }}'" in diff["diff"]
    rendered = api.post(
        "/prompts/support/render", json={"version": "v2", "variables": {"question": "q", "company": "c"}}
    ).json()
    assert rendered["messages"] == [{"role": "user", "content": "v2: q at c"}]
    plan = api.post("/apply", json={"yaml": api.get("/export").text, "dry_run": True}).json()
    assert plan["summary"].startswith("no changes")
    for path, status in (("/prompts/nope", 404), ("/prompts/support?ref=v9", 404), ("/nothing", 404)):
        r = api.get(path)
        assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = api.put("/prompts/support/aliases/v3", json={"version": "v1"})
    assert r.status_code == 400 and "looks like a version" in r.json()["error"]["message"]
    r = api.post("/prompts", json={"name": "x", "spec": {"messages": []}, "extra": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "extra"
    r = api.post("/prompts", json={"name": "x", "spec": {"messages": [{"role": "user", "content": "{{ x"}]}})
    assert r.status_code == 400 and "template syntax error" in r.json()["error"]["message"]
    schema = api.get("/openapi.json").json()
    assert "/prompts/{name}/aliases/{alias}" in schema["paths"] and "/apply" in schema["paths"]


def test_unservable_registry_change_keeps_the_last_good_runtime(shipyard_server: Any, tmp_path: Path) -> None:
    """The CLI that applies has an env var the server lacks: the server cannot build the new state,
    says so on /readyz, and keeps serving what it served."""
    server = shipyard_server(CONFIG, env={"SHIPYARD_RELOAD_INTERVAL": "0.2"})
    cfg = tmp_path / "more.yaml"
    cfg.write_text(
        "providers:\n"
        "  - {name: cloud, type: openai, base_url: 'http://127.0.0.1:9/v1', api_key: '${ONLY_IN_CLI}'}\n"
        "models:\n  - {name: remote, provider: cloud}\n"
        "routes:\n  - {name: remote, targets: [{model: remote}]}\n"
    )
    os.environ["ONLY_IN_CLI"] = "sk-x"
    try:
        shipyard("apply", str(cfg), cwd=tmp_path, home=server.home)
    finally:
        os.environ.pop("ONLY_IN_CLI")
    deadline = time.monotonic() + 5
    while not (ready := httpx.get(server.url + "/readyz").json())["reload_error"]:
        assert time.monotonic() < deadline, "the failed reload was not reported"
        time.sleep(0.1)
    assert "ONLY_IN_CLI" in ready["reload_error"] and ready["registry_revision"] >= 1
    assert answer(ask(server, "still there?")) == "v1 answer to: still there?"
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": "remote", "messages": MSG_HI},
        headers=server.headers,
    )
    assert r.status_code == 404
    assert server.log().count("cannot be served") == 1  # reported once, not every second


MSG_HI = [{"role": "user", "content": "hi"}]
