"""Versioned datasets as a user drives them: traffic through a real gateway becomes a dataset with
`shipyard datasets from-traces`; files go in with `import` and out with `export`; the admin API
under /api/datasets does the same over HTTP. One server serves the whole module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipyard.store import traces as tq
from shipyard.store.db import Store
from shipyard.tracing.spans import Trace
from tests.helpers import count_traces, every_page, named_key

CONFIG = """
providers: [{name: fake, type: mock}]
models:
  - {name: fake-chat, provider: fake}
prompts:
  - name: greet
    messages: [{role: user, content: "Say hello to {{ customer }}"}]
routes:
  - {name: greeter, prompt: greet, targets: [{model: fake-chat}]}
  - {name: support, targets: [{model: fake-chat}]}
  - {name: faq, targets: [{model: fake-chat}]}
  - {name: other, targets: [{model: fake-chat}]}
"""
# Every fifth support message carries an e-mail address and a phone number.
PII_EMAIL = "mara.quinn{}@example.com"
PII_PHONE = "+1 (415) 555-01{:02d}"
FAQ = ["How do I reset my password?", "Where is my order?", "Can I change my plan?", "Do you ship abroad?"]


def support_message(i: int) -> str:
    if i % 5 == 0:
        return f"Ticket {i}: please email me at {PII_EMAIL.format(i)} or call {PII_PHONE.format(i)}."
    return f"Ticket {i}: my parcel number {i} has not arrived yet"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.conftest import ShipyardServer

    s = ShipyardServer(tmp_path_factory.mktemp("datasets") / "home", CONFIG).start()
    client = s.openai()
    for i in range(50):
        client.chat.completions.create(
            model="support",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": support_message(i)},
            ],
        )
    for i in range(12):  # 12 requests, 4 distinct questions: the mock answers the same input the same way
        client.chat.completions.create(model="faq", messages=[{"role": "user", "content": FAQ[i % 4]}])
    for i in range(5):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": f"other {i}"}])
    for i in range(4):  # a prompt route: clients send variables; requests tagged with a header
        client.chat.completions.create(
            model="greeter",
            messages=[],
            extra_body={"variables": {"customer": f"cust{i}"}},
            extra_headers={"x-shipyard-tags": "vip,beta" if i % 2 == 0 else "trial"},
        )
    deadline = time.monotonic() + 10
    while count_traces(s.store_url()) < 71:
        assert time.monotonic() < deadline, "traces were not written"
        time.sleep(0.05)
    yield s
    s.stop()


def cli(
    *commands: tuple[str, ...], home: Path, env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """`shipyard datasets ARGS --home HOME` for each command, run at once: they are independent and
    each CLI start costs a second or so of imports."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "shipyard", "datasets", *args, "--home", str(home)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=home.parent,
            env={**os.environ, "SHIPYARD_ACTOR": "tester", **(env or {})},
        )
        for args in commands
    ]
    out = []
    for args, p in zip(commands, procs, strict=True):
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(list(args), p.returncode, stdout, stderr))
    return out


def ds(server: Any, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`shipyard datasets ARGS` against the module's server home, as a user runs it."""
    (r,) = cli(args, home=server.home)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def ds_all(server: Any, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    return cli(*commands, home=server.home)


def ds_json(server: Any, *args: str) -> Any:
    return json.loads(ds(server, *args, "--json").stdout)


def api(server: Any) -> httpx.Client:
    client: httpx.Client = server.api()
    return client


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


def failed(r: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """A clean CLI failure: exit 1, one `error:` line naming the problem, no traceback."""
    assert r.returncode == 1, (r.args, r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    for fragment in fragments:
        assert fragment in r.stderr, (fragment, r.stderr)


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _examples(server: Any, name: str, version: int | str) -> list[dict[str, Any]]:
    with api(server) as http:
        return every_page(http, f"/datasets/{name}/versions/{version}/examples", {"limit": 1000})


# -- from traces ------------------------------------------------------------------------------------
def test_from_traces_gives_exactly_the_route_traffic_with_dedupe_and_pii_scrub(server: Any) -> None:
    plain, deduped, scrubbed = ds_all(
        server,
        ("from-traces", "support-set", "--route", "support", "--since", "1h", "-m", "first cut", "--json"),
        ("from-traces", "faq-set", "--route", "faq", "--dedupe"),
        ("from-traces", "support-clean", "--route", "support", "--since", "1h", "--scrub-pii", "--json"),
    )
    out = json.loads(plain.stdout)
    assert out["created"] and out["dataset_created"] and out["duplicates_removed"] == 0
    v = out["version"]
    assert (v["dataset"], v["version"], v["n_examples"], v["message"]) == ("support-set", 1, 50, "first cut")
    assert v["created_by"] == "tester" and len(v["hash"]) == 64
    assert v["source"]["type"] == "traces" and v["source"]["filters"]["route"] == "support"
    assert v["source"]["scrub_pii"] is False and v["source"]["matched"] == 50

    examples = _examples(server, "support-set", 1)
    # In traffic order, with the messages as sent, the answers as expected, and lineage.
    assert [e["input"][1]["content"] for e in examples] == [support_message(i) for i in range(50)]
    first = examples[0]
    assert first["input"][0] == {"role": "system", "content": "Be brief."}
    meta = first["metadata"]
    assert set(meta) == {"trace_id", "route", "model", "prompt", "prompt_version"}
    assert (
        meta["route"] == "support" and meta["model"] == "fake-chat" and meta["trace_id"] == first["trace_id"]
    )
    trace = tq.get_trace(Store(server.store_url()), first["trace_id"])
    assert trace is not None and first["expected"] == trace["output"] and first["expected"]

    # 12 FAQ requests, 4 distinct questions: --dedupe keeps the first of each.
    assert "Created dataset faq-set" in deduped.stdout, deduped.stdout + deduped.stderr
    assert "faq-set@v1" in deduped.stdout and "with 4 example(s)" in deduped.stdout
    assert "8 duplicate(s) removed" in deduped.stdout
    assert [e["input"][0]["content"] for e in _examples(server, "faq-set", 1)] == FAQ
    with api(server) as http:
        r = http.post("/datasets/faq-set/from-traces", json={"route": "faq"})
        assert r.status_code == 201 and r.json()["version"]["n_examples"] == 12, r.text
        # The same traffic again is the same content: the existing version comes back.
        r = http.post("/datasets/faq-set/from-traces", json={"route": "faq"})
        assert r.status_code == 200 and r.json()["created"] is False and r.json()["version"]["version"] == 2
        r = http.post(
            "/datasets/other-set/from-traces", json={"route": "other", "expected_from_output": False}
        )
        assert r.status_code == 201 and r.json()["version"]["n_examples"] == 5
    assert all(e["expected"] is None for e in _examples(server, "other-set", 1))

    out = json.loads(scrubbed.stdout)
    assert out["version"]["n_examples"] == 50 and out["version"]["source"]["scrub_pii"] is True
    clean = _examples(server, "support-clean", 1)
    dumped = json.dumps([[e["input"], e["expected"]] for e in clean])
    assert "@example.com" not in dumped and "555-01" not in dumped
    assert clean[0]["input"][1]["content"] == "Ticket 0: please email me at <EMAIL> or call <PHONE>."
    assert clean[45]["input"][1]["content"] == "Ticket 45: please email me at <EMAIL> or call <PHONE>."
    assert clean[1]["input"][1]["content"] == support_message(1)  # no PII: untouched, numbers and all


def test_from_traces_filters_prompt_tag_status_and_template_variables(server: Any) -> None:
    # What one config cannot serve (two versions of a prompt, failed requests, a text completion,
    # a trace stored without its input) is written straight to the server's store, as the gateway
    # writes it: lineage columns, tags, the template variables in attributes["shipyard.variables"].
    store = Store(server.store_url())
    base = time.time() - 30
    rows = []
    for i, (version, tags, status) in enumerate(
        [(1, ["gold"], "ok"), (2, ["gold", "eu"], "ok"), (2, ["eu"], "ok"), (2, ["gold"], "error")]
    ):
        t = Trace(
            operation="chat", route="welcomer", model="fake-chat", prompt="welcome", prompt_version=version
        )
        t.start, t.end = base + i, base + i + 0.1
        t.status, t.tags = status, tags
        t.input = [{"role": "user", "content": f"Say hello to customer {i}"}]
        t.output = None if status == "error" else f"Hello customer {i}"
        t.attributes = {"shipyard.variables": {"customer": f"c{i}"}}
        rows.append(t)
    completion = Trace(operation="text_completion", route="welcomer", model="fake-chat", tags=["raw"])
    completion.start, completion.end = base + 10, base + 10.1
    completion.input, completion.output = "Once upon a time", "there was a harbour"
    uncaptured = Trace(operation="chat", route="welcomer", model="fake-chat", tags=["raw"])
    uncaptured.start, uncaptured.end = base + 11, base + 11.1
    tq.insert_traces(store, [*rows, completion, uncaptured])
    store.close()

    vip, picked, missing = ds_all(
        server,
        ("from-traces", "greet-vip", "--prompt", "greet", "--tag", "vip", "--json"),
        ("from-traces", "welcome-v2", "--prompt", "welcome@v2", "--tag", "gold", "--status", "ok", "--json"),
        ("from-traces", "nothing", "--route", "no-such-route"),
    )
    # Real traffic on the prompt route: the variables are the input, the header's tags the tags.
    assert json.loads(vip.stdout)["version"]["n_examples"] == 2, vip.stderr
    examples = _examples(server, "greet-vip", 1)
    assert [e["input"] for e in examples] == [{"customer": "cust0"}, {"customer": "cust2"}]
    assert examples[0]["tags"] == ["vip", "beta"] and examples[0]["expected"]
    assert examples[0]["metadata"]["prompt"] == "greet" and examples[0]["metadata"]["prompt_version"] == 1
    assert examples[0]["metadata"]["route"] == "greeter"

    out = json.loads(picked.stdout)
    assert out["version"]["n_examples"] == 1
    assert out["version"]["source"]["filters"] == {
        "status": "ok",
        "prompt": "welcome",
        "prompt_version": 2,
        "tag": "gold",
    }
    (ex,) = _examples(server, "welcome-v2", 1)
    assert ex["input"] == {"customer": "c1"} and ex["expected"] == "Hello customer 1"
    assert ex["tags"] == ["gold", "eu"] and ex["metadata"]["prompt_version"] == 2
    failed(missing, "no chat or completion traces match the filters (route=no-such-route)")

    with api(server) as http:
        r = http.post("/datasets/welcome-all/from-traces", json={"prompt": "welcome", "limit": 2})
        assert r.status_code == 201, r.text
        assert [e["input"]["customer"] for e in _examples(server, "welcome-all", 1)] == ["c2", "c3"]  # newest
        r = http.post("/datasets/raw/from-traces", json={"tag": "raw", "since": base, "until": base + 20})
        assert r.status_code == 201 and r.json()["skipped"] == 1, r.text
        (ex,) = _examples(server, "raw", 1)
        assert ex["input"] == {"prompt": "Once upon a time"} and ex["expected"] == "there was a harbour"

        err = error_of(http.post("/datasets/nothing/from-traces", json={"route": "no-such-route"}), 400)
        assert "no chat or completion traces match" in err["message"] and err["param"] == "filters"
        assert err["code"] == "no_matching_traces"
        gone = http.get("/datasets/nothing")
        assert gone.status_code == 404, gone.text  # nothing written, not even the dataset
        err = error_of(http.post("/datasets/x/from-traces", json={"route": "a", "colour": "red"}), 400)
        assert err["param"] == "colour"
        err = error_of(http.post("/datasets/x/from-traces", json={"status": "meh"}), 400)
        assert err["param"] == "status"


# -- files through the CLI --------------------------------------------------------------------------
def test_content_addressed_versions_and_import_errors_name_the_line(server: Any, tmp_path: Path) -> None:
    rows = [
        {"input": {"question": f"What is {i} + {i}?"}, "expected": str(2 * i), "tags": ["math"]}
        for i in range(5)
    ]
    data = write_jsonl(tmp_path / "math.jsonl", rows)
    first = ds_json(server, "import", "math", str(data), "-m", "five sums")
    assert first["created"] and first["version"]["version"] == 1 and first["version"]["n_examples"] == 5
    assert first["version"]["source"] == {"type": "file", "format": "jsonl", "path": str(data.resolve())}

    rows[3]["expected"] = "7"  # one character
    changed_file = write_jsonl(tmp_path / "math2.jsonl", rows)
    # An error on line 3 of 5 writes nothing: no new version, and no new dataset either.
    lines = [json.dumps(r) for r in rows]
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*lines[:2], '{"input": "just a string"}', *lines[3:]]) + "\n")
    (tmp_path / "sums.csv").write_text("question,expected,tags\nWhat is 1 + 1?,2,math;easy\n")
    (tmp_path / "sums.yml").write_text("- input: {question: 'What is 2 + 2?'}\n  expected: 4\n")
    same, changed, broken_existing, broken_new, unknown, from_csv, from_yaml = ds_all(
        server,
        ("import", "math", str(data)),
        ("import", "math", str(changed_file), "--json"),
        ("import", "math", str(broken)),
        ("import", "math-broken", str(broken)),
        ("show", "no-such-set"),
        ("import", "sums-csv", str(tmp_path / "sums.csv"), "--json"),
        ("import", "sums-yaml", str(tmp_path / "sums.yml"), "--json"),
    )
    for r, fmt in ((from_csv, "csv"), (from_yaml, "yaml")):
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["version"]["source"]["format"] == fmt and out["version"]["n_examples"] == 1
    assert _examples(server, "sums-csv", 1)[0]["tags"] == ["math", "easy"]
    assert _examples(server, "sums-yaml", 1)[0]["expected"] == 4
    assert "already has exactly these 5" in same.stdout and "math@v1" in same.stdout
    out = json.loads(changed.stdout)
    assert (
        out["created"]
        and out["version"]["version"] == 2
        and out["version"]["hash"] != first["version"]["hash"]
    )
    for r in (broken_existing, broken_new):
        failed(r, "broken.jsonl line 3: `input` must be an object of template variables")
    failed(unknown, "no dataset `no-such-set`; known datasets:", "math")

    with api(server) as http:
        assert [v["version"] for v in http.get("/datasets/math/versions").json()["data"]] == [1, 2]
        assert http.get("/datasets/math-broken").status_code == 404


def test_export_then_import_gives_the_same_hash(server: Any, tmp_path: Path) -> None:
    with api(server) as http:
        r = http.post("/datasets/export-src/from-traces", json={"route": "support"})
        assert r.status_code in (200, 201), r.text
        src = r.json()["version"]
    out = tmp_path / "export.jsonl"
    r = ds(server, "export", "export-src@v1", "-o", str(out))
    assert f"Wrote 50 example(s) of export-src@v1 (sha256 {src['hash'][:12]})" in r.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 50 and set(json.loads(lines[0])) == {"input", "expected", "metadata", "tags"}

    stdout, copy, table = ds_all(
        server,
        ("export", "export-src"),
        ("import", "export-copy", str(out), "--json"),
        ("versions", "export-src"),
    )
    assert stdout.stdout == out.read_text()  # to standard output, latest version
    imported = json.loads(copy.stdout)
    assert imported["created"] and imported["version"]["hash"] == src["hash"]
    # Lineage survives the round trip: the trace id comes back from the metadata.
    assert _examples(server, "export-copy", 1)[0]["trace_id"] == json.loads(lines[0])["metadata"]["trace_id"]
    assert "v1" in table.stdout and src["hash"][:12] in table.stdout and "50" in table.stdout


def test_show_and_list(server: Any) -> None:
    body = (
        "examples:\n"
        "  - input: {question: 'Where, exactly?', context: docs}\n"
        "    expected: Here\n"
        "    tags: [geo]\n"
        "  - input:\n      - {role: user, content: Hello there}\n"
    )
    with api(server) as http:
        assert http.post("/datasets/qa/import", params={"format": "yaml"}, content=body).status_code == 201
    shown, table, listed = ds_all(
        server, ("show", "qa@v1", "--json"), ("show", "qa", "--limit", "2"), ("list", "--json")
    )
    data = json.loads(shown.stdout)
    assert data["version"]["version"] == 1 and len(data["examples"]) == 2
    assert data["examples"][1]["input"] == [{"role": "user", "content": "Hello there"}]
    assert "qa@v1" in table.stdout and "2 example(s)" in table.stdout
    assert "Where, exactly?" in table.stdout and "Hello there" in table.stdout and "geo" in table.stdout
    entry = next(d for d in json.loads(listed.stdout) if d["name"] == "qa")
    assert entry["n_versions"] == 1 and entry["latest"]["n_examples"] == 2


# -- the admin API ----------------------------------------------------------------------------------
def test_api_create_versions_examples_and_errors(server: Any) -> None:
    with api(server) as http:
        r = http.post("/datasets", json={"name": "api-set", "description": "made over HTTP"})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == "api-set" and r.json()["n_versions"] == 0 and r.json()["latest"] is None
        err = error_of(http.post("/datasets", json={"name": "api-set"}), 409)
        assert err["type"] == "conflict" and "already exists" in err["message"] and err["param"] == "name"
        err = error_of(http.post("/datasets", json={"name": "bad name@2"}), 400)
        assert err["param"] == "name" and "not valid" in err["message"]
        err = error_of(http.post("/datasets", json={"name": "x", "colour": "red"}), 400)
        assert err["param"] == "colour"

        examples = [{"input": {"n": i}, "expected": i * i} for i in range(120)]
        alice = named_key(server, "alice")
        r = http.post(
            "/datasets/api-set/versions",
            json={"examples": examples, "message": "squares"},
            headers=alice.headers,
        )
        assert r.status_code == 201, r.text
        v1 = r.json()["version"]
        assert (v1["version"], v1["n_examples"], v1["created_by"], v1["message"]) == (
            1,
            120,
            alice.actor,
            "squares",
        )
        r = http.post("/datasets/api-set/versions", json={"examples": examples})
        assert r.status_code == 200 and r.json()["created"] is False and r.json()["version"]["version"] == 1
        r = http.post("/datasets/api-set/versions", json={"examples": examples[:3] * 2, "dedupe": True})
        assert r.status_code == 201 and r.json()["duplicates_removed"] == 3
        assert r.json()["version"]["n_examples"] == 3
        r = http.post(
            "/datasets/api-set/versions", json={"examples": [{"input": {"n": 999}}], "append": True}
        )
        assert r.json()["version"]["n_examples"] == 4 and r.json()["version"]["source"]["base_version"] == 2

        err = error_of(
            http.post(
                "/datasets/api-set/versions", json={"examples": [{"input": {"a": 1}}, {"expected": 2}]}
            ),
            400,
        )
        assert err["param"] == "examples[1].input" and "examples[1]: `input` is required" in err["message"]
        err = error_of(
            http.post("/datasets/api-set/versions", json={"examples": [{"input": {}, "tags": "x"}]}), 400
        )
        assert err["param"] == "examples[0].tags"
        err = error_of(http.post("/datasets/api-set/versions", json={"examples": []}), 400)
        assert "at least one example" in err["message"]
        err = error_of(http.post("/datasets/nope/versions", json={"examples": examples}), 404)
        assert "no dataset `nope`" in err["message"] and err["code"] == "dataset_not_found"

        got = http.get("/datasets/api-set").json()
        assert (
            got["n_versions"] == 3
            and got["latest"]["version"] == 3
            and got["description"] == "made over HTTP"
        )
        assert [v["version"] for v in http.get("/datasets/api-set/versions").json()["data"]] == [1, 2, 3]
        assert [v["version"] for v in every_page(http, "/datasets/api-set/versions", {"limit": 2})] == [
            1,
            2,
            3,
        ]
        assert "api-set" in [d["name"] for d in http.get("/datasets").json()["data"]]

        first = http.get("/datasets/api-set/versions/v1/examples", params={"limit": 100})
        assert first.headers["x-shipyard-dataset-version"] == "1"
        assert first.headers["x-shipyard-dataset-hash"] == v1["hash"]
        assert [e["idx"] for e in first.json()["data"]] == list(range(100))
        page = http.get(
            "/datasets/api-set/versions/v1/examples", params={"cursor": first.json()["next"], "limit": 15}
        ).json()
        assert [e["idx"] for e in page["data"]] == list(range(100, 115))
        assert page["data"][0]["input"] == {"n": 100} and page["data"][0]["expected"] == 10000
        tail = http.get("/datasets/api-set/versions/1/examples", params={"cursor": page["next"], "limit": 50})
        assert len(tail.json()["data"]) == 5 and tail.json()["next"] is None
        # A cursor keeps to the version it started: `latest` (v3 now) finishes v1; v2 refuses it.
        latest = http.get(
            "/datasets/api-set/versions/latest/examples", params={"cursor": page["next"], "limit": 50}
        )
        assert latest.headers["x-shipyard-dataset-version"] == "1" and latest.json() == tail.json()
        err = error_of(
            http.get("/datasets/api-set/versions/2/examples", params={"cursor": page["next"]}), 400
        )
        assert err["param"] == "cursor" and "version 1" in err["message"]
        err = error_of(http.get("/datasets/api-set/versions/1/examples", params={"cursor": "bm9wZQ"}), 400)
        assert err["param"] == "cursor"
        assert (
            error_of(http.get("/datasets/api-set/versions/1/examples", params={"limit": 0}), 400)["param"]
            == "limit"
        )
        err = error_of(http.get("/datasets/api-set/versions/9/examples"), 404)
        assert "no version 9" in err["message"] and err["code"] == "version_not_found"
        err = error_of(http.get("/datasets/api-set/versions/first/examples"), 400)
        assert "`latest`" in err["message"]
        err = error_of(http.get("/datasets/ghost"), 404)
        assert err["type"] == "invalid_request_error" and "no dataset `ghost`" in err["message"]

        err = error_of(http.get("/datasets/api-set/export", params={"version": "v9"}), 404)
        assert "no version 9" in err["message"]
        exported = http.get("/datasets/api-set/export", params={"version": "1"})
        assert exported.status_code == 200
        assert exported.headers["content-type"].startswith("application/x-ndjson")
        assert exported.headers["x-shipyard-dataset-hash"] == v1["hash"]
        lines = exported.text.splitlines()
        assert len(lines) == 120 and json.loads(lines[7]) == {
            "input": {"n": 7},
            "expected": 49,
            "metadata": {},
            "tags": [],
        }

        r = http.post(
            "/datasets/api-import/import",
            params={"format": "jsonl", "message": "round trip"},
            content=exported.content,
            headers={"content-type": "application/x-ndjson"},
        )
        assert r.status_code == 201 and r.json()["version"]["hash"] == v1["hash"], r.text
        assert r.json()["dataset_created"] is True and r.json()["version"]["source"] == {
            "type": "upload",
            "format": "jsonl",
        }
        r = http.post(
            "/datasets/api-import/import",
            params={"format": "csv", "append": True},
            content="question\nWhy?\n",
        )
        assert r.status_code == 201 and r.json()["version"]["n_examples"] == 121
        err = error_of(
            http.post(
                "/datasets/api-import/import", params={"format": "jsonl"}, content=lines[0] + "\n[1]\n"
            ),
            400,
        )
        assert err["message"].startswith("body line 2: an example must be an object")
        err = error_of(
            http.post("/datasets/api-import/import", params={"format": "xml"}, content="<x/>"), 400
        )
        assert err["param"] == "format"
        assert len(http.get("/datasets/api-import/versions").json()["data"]) == 2

        schema = http.get("/openapi.json").json()
        assert (
            "/datasets/{name}/from-traces" in schema["paths"]
            and "WriteOut" in schema["components"]["schemas"]
        )


def test_api_import_formats_append_and_errors_name_the_line(server: Any) -> None:
    def post(fmt: str, body: str, **params: Any) -> httpx.Response:
        with api(server) as http:
            return http.post("/datasets/qa-api/import", params={"format": fmt, **params}, content=body)

    r = post(
        "csv",
        "question,context,expected,tags,metadata.source\n"
        '"Where, exactly?",docs,Here,geo;easy,faq\n'
        "Who?,,Me,,\n",
    )
    assert r.status_code == 201 and r.json()["version"]["source"] == {"type": "upload", "format": "csv"}, (
        r.text
    )
    first, second = _examples(server, "qa-api", 1)
    assert (
        first["input"] == {"question": "Where, exactly?", "context": "docs"} and first["expected"] == "Here"
    )
    assert first["tags"] == ["geo", "easy"] and first["metadata"] == {"source": "faq"}
    assert second["input"] == {"question": "Who?", "context": ""} and second["tags"] == []
    assert second["metadata"] == {} and second["expected"] == "Me"

    yaml_body = (
        "- input: {question: 'Why?', context: docs}\n"
        "  expected: {answer: because, score: 1}\n"
        "- input:\n"
        "    - {role: user, content: Hello}\n"
        "  tags: [chat]\n"
    )
    r = post("yaml", yaml_body, append=True, message="two more")
    assert r.status_code == 201, r.text
    v = r.json()["version"]
    assert (v["version"], v["n_examples"], v["message"]) == (2, 4, "two more")
    assert v["source"]["append"] is True and v["source"]["base_version"] == 1
    examples = _examples(server, "qa-api", "latest")
    assert [e["idx"] for e in examples] == [0, 1, 2, 3]
    assert examples[2]["expected"] == {"answer": "because", "score": 1}
    assert examples[3]["input"] == [{"role": "user", "content": "Hello"}] and examples[3]["tags"] == ["chat"]
    r = post("yaml", yaml_body, append=True, dedupe=True)  # the same two again, removed again
    assert r.status_code == 200 and r.json()["duplicates_removed"] == 2 and r.json()["created"] is False

    good = json.dumps({"input": {"q": 1}})
    cases = [
        (
            "jsonl",
            good + "\n\n" + '{"input": {"q": 1}, "expectd": 2}\n',
            "body line 3: unknown key `expectd`",
        ),
        ("jsonl", good + "\n{oops\n", "body line 2: not valid JSON"),
        ("jsonl", good + "\n[1]\n", "body line 2: an example must be an object"),
        (
            "jsonl",
            '{"input": [{"role": "user", "content": "hi"}, {"content": "x"}]}\n',
            "body line 1: `input[1].role` is required",
        ),
        ("jsonl", '{"input": {"q": 1}, "metadata": [1]}\n', "body line 1: `metadata` must be an object"),
        (
            "csv",
            'question,expected\n"a, b",1\nonly-one-field\n',
            "body line 3: 1 field(s), but the header has 2",
        ),
        ("csv", "expected,tags\n1,a\n", "no input columns"),
        (
            "yaml",
            "examples:\n  - input: {q: one}\n  - input: {q: two}\n    tags: [x, 3]\n",
            "body line 4 (example 2): `tags` must be a list of strings",
        ),
        ("yaml", "examples:\n  - input: {q: one\n", "not valid YAML"),
        ("yaml", "rows:\n  - input: {q: one}\n", "body line 1: unknown key `rows`"),
        ("yaml", "- input: hello\n", "body line 1 (example 1): `input` must be an object"),
    ]
    for fmt, body, fragment in cases:
        err = error_of(post(fmt, body), 400)
        assert fragment in err["message"], (fragment, err)
        assert err["type"] == "invalid_request_error"
    err = error_of(post("xml", "<x/>"), 400)
    assert err["param"] == "format"
    with api(server) as http:
        assert (
            len(http.get("/datasets/qa-api/versions").json()["data"]) == 2
        )  # no failed import wrote anything


# -- the same on PostgreSQL -------------------------------------------------------------------------


@pytest.mark.postgres
def test_cli_on_postgres(pg_url: str, tmp_path: Path) -> None:
    store = Store(pg_url)
    store.migrate()
    traces = []
    for i, tags in enumerate([["gold"], ["gold", "eu"], ["eu"], None]):
        t = Trace(operation="chat", route="support", model="fake-chat", tags=tags)
        t.input = [{"role": "user", "content": f"Question {i} from ana{i}@example.org"}]
        t.output, t.end = f"Answer {i}", t.start + 0.01
        traces.append(t)
    tq.insert_traces(store, traces)
    store.close()
    env = {"SHIPYARD_DATABASE_URL": pg_url}
    home = tmp_path / "home"
    # Numbers JSON cannot tell apart (1.0 and 1) and floats that need all 17 digits must survive.
    rows = [
        {"input": {"q": "a"}, "expected": 1.0},
        {"input": {"q": "b"}, "expected": 0.30000000000000004},
        {"input": {"q": "c"}, "expected": {"k": [1, 2.5]}, "metadata": {"m": 1}, "tags": ["x"]},
    ]
    data = write_jsonl(tmp_path / "nums.jsonl", rows)
    imported, gold = cli(
        ("import", "nums", str(data), "--json"),
        ("from-traces", "gold", "--tag", "gold", "--scrub-pii", "--json"),
        home=home,
        env=env,
    )
    assert imported.returncode == 0 and gold.returncode == 0, imported.stderr + gold.stderr
    assert json.loads(gold.stdout)["version"]["n_examples"] == 2
    source_hash = json.loads(imported.stdout)["version"]["hash"]
    exported, shown = cli(("export", "nums"), ("show", "gold", "--json"), home=home, env=env)
    assert [json.loads(line)["expected"] for line in exported.stdout.splitlines()] == [
        1.0,
        0.30000000000000004,
        {"k": [1, 2.5]},
    ]
    (tmp_path / "copy.jsonl").write_text(exported.stdout)
    copy, again = cli(
        ("import", "nums-copy", str(tmp_path / "copy.jsonl"), "--json"),
        ("import", "nums", str(tmp_path / "copy.jsonl"), "--json"),
        home=home,
        env=env,
    )
    assert json.loads(copy.stdout)["version"]["hash"] == source_hash
    assert json.loads(again.stdout)["created"] is False
    examples = json.loads(shown.stdout)["examples"]
    assert [e["input"][0]["content"] for e in examples] == [
        "Question 0 from <EMAIL>",
        "Question 1 from <EMAIL>",
    ]
