"""Experiment runs end to end: a script using ``shipyard.start_run`` (in a subprocess, as a user runs
it), ``shipyard runs list|show|compare`` (the real CLI), ``/api/runs`` on a real server, and the
service's rules (write-once params, finite metrics, artifact paths, endings) in-process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from shipyard.errors import Conflict, InvalidRequest, NotFound
from shipyard.registry.runs import RunService
from tests.helpers import api_as, named_key

SCRIPT = """
import json, pathlib, shipyard

pathlib.Path("report.txt").write_text("accuracy went up\\n")
with shipyard.start_run(
    name="baseline", experiment="qa", params={"temperature": 0.2, "model": "small"}, tags={"team": "nlp"}
) as base:
    base.log_metric("accuracy", 0.75)
    for step, loss in enumerate([1.0, 0.7, 0.5, 0.4, 0.35]):
        base.log_metric("loss", loss, step=step)
    base.log_artifact("report.txt")
    base.log_dict({"labels": ["yes", "no"]}, "eval/labels.yaml")
    with shipyard.start_run(name="child") as child:
        assert shipyard.active_run() is child
        child.log_metric("accuracy", 0.7)
    assert shipyard.active_run() is base

tuned_params = {"temperature": 0.7, "model": "small"}
with shipyard.start_run(name="tuned", experiment="qa", params=tuned_params) as tuned:
    tuned.log_metrics({"accuracy": 0.81, "latency_ms": 120})
    for step, loss in enumerate([1.0, 0.6, 0.45, 0.3]):
        tuned.log_metric("loss", loss, step=step)

try:
    with shipyard.start_run(name="broken", experiment="qa") as broken:
        broken.log_param("temperature", 1.0)
        raise ValueError("the scorer fell over")
except ValueError:
    pass

assert shipyard.active_run() is None
print(json.dumps({
    "base": base.run_id, "child": child.run_id, "child_parent": child.parent_run_id,
    "tuned": tuned.run_id, "broken": broken.run_id, "statuses": [base.status, tuned.status, broken.status],
    "artifact_dir": str(base.artifact_dir),
}))
"""

CONFIG = """
providers: [{name: fake, type: mock}]
models:
  - {name: fake-chat, provider: fake}
routes:
  - {name: default, targets: [{model: fake-chat}]}
"""


def shipyard(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real CLI; COLUMNS keeps rich from wrapping table cells so the output can be matched."""
    r = subprocess.run(
        [sys.executable, "-m", "shipyard", *args, "--home", str(home)],
        capture_output=True,
        text=True,
        cwd=home.parent,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        timeout=120,
    )
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def parallel(
    *calls: tuple[str, ...], home: Path, check: bool = True
) -> list[subprocess.CompletedProcess[str]]:
    """Independent CLI calls at once: each spends most of its time starting Python."""
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda a: shipyard(*a, home=home, check=check), calls))


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The acceptance script, run once as a user would: `python script.py` with SHIPYARD_HOME set."""
    work = tmp_path_factory.mktemp("script")
    (work / "experiment.py").write_text(SCRIPT)
    home = work / "home"
    r = subprocess.run(
        [sys.executable, "experiment.py"],
        capture_output=True,
        text=True,
        cwd=work,
        env={**os.environ, "SHIPYARD_HOME": str(home)},
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return {**json.loads(r.stdout), "home": home}


def test_script_runs_end_as_expected(logged: dict[str, Any]) -> None:
    assert logged["statuses"] == ["finished", "finished", "failed"]
    assert logged["child_parent"] == logged["base"]
    assert logged["artifact_dir"] == str(logged["home"] / "artifacts" / logged["base"])


def test_show_prints_params_metrics_series_and_artifacts(logged: dict[str, Any]) -> None:
    home, base = logged["home"], logged["base"]
    text, as_json = parallel(("runs", "show", base[:10]), ("runs", "show", base, "--json"), home=home)
    out = text.stdout
    assert f"run {base}" in out and "baseline" in out and "finished" in out
    assert "temperature" in out and "0.2" in out and "small" in out
    assert "accuracy" in out and "0.75" in out
    loss_line = next(line for line in out.splitlines() if line.strip().startswith("loss"))
    assert loss_line.split()[1:5] == ["0.35", "0.35", "1", "5"]  # last, min, max, steps
    assert "█" in loss_line and "▁" in loss_line  # the sparkline falls from 1.0 to 0.35
    assert "report.txt" in out and "17 B" in out and "eval/labels.yaml" in out
    assert f"child runs {logged['child']}" in out

    detail = json.loads(as_json.stdout)
    assert detail["params"] == {"temperature": 0.2, "model": "small"}
    assert detail["tags"] == {"team": "nlp"}
    assert detail["metrics"]["accuracy"]["last"] == 0.75
    assert detail["metrics"]["loss"] == {
        **detail["metrics"]["loss"],
        "last": 0.35,
        "step": 4,
        "min": 0.35,
        "max": 1.0,
        "count": 5,
    }
    assert detail["series"]["loss"] == [1.0, 0.7, 0.5, 0.4, 0.35]
    assert detail["children"] == [logged["child"]]
    artifacts = {a["path"]: a for a in detail["artifacts"]}
    assert set(artifacts) == {"report.txt", "eval/labels.yaml"}
    for path, art in artifacts.items():
        on_disk = (home / "artifacts" / base / path).read_bytes()
        assert art["size"] == len(on_disk)
        assert art["sha256"] == hashlib.sha256(on_disk).hexdigest()
    assert (home / "artifacts" / base / "report.txt").read_text() == "accuracy went up\n"
    assert "labels:\n- 'yes'\n- 'no'\n" in (home / "artifacts" / base / "eval/labels.yaml").read_text()


def test_compare_shows_deltas_against_the_first_run(logged: dict[str, Any]) -> None:
    home, base, tuned = logged["home"], logged["base"], logged["tuned"]
    text, as_json = parallel(
        ("runs", "compare", base[:8], tuned[:8]), ("runs", "compare", base, tuned, "--json"), home=home
    )
    lines = text.stdout.splitlines()
    accuracy = next(line for line in lines if line.strip().startswith("accuracy"))
    assert accuracy.split() == ["accuracy", "0.75", "0.81", "+0.06", "(+8.0%)"]
    loss = next(line for line in lines if line.strip().startswith("loss"))
    assert loss.split() == ["loss", "0.35", "0.3", "-0.05", "(-14.3%)"]
    latency = next(line for line in lines if line.strip().startswith("latency_ms"))
    assert latency.split() == ["latency_ms", "-", "120", "-"]  # nothing to compare against
    temperature = next(line for line in lines if "temperature" in line)
    assert temperature.split() == ["≠", "temperature", "0.2", "0.7"]
    assert "≠" not in next(line for line in lines if line.strip().startswith("model"))

    cmp = json.loads(as_json.stdout)
    assert cmp["baseline"] == base
    assert [r["run_id"] for r in cmp["runs"]] == [base, tuned]
    assert cmp["params"] == [
        {"key": "model", "values": ["small", "small"], "differs": False},
        {"key": "temperature", "values": [0.2, 0.7], "differs": True},
    ]
    metrics = {m["key"]: m for m in cmp["metrics"]}
    assert metrics["accuracy"]["deltas"] == [None, 0.06]
    assert metrics["accuracy"]["pct_changes"] == [None, 8.0]
    assert metrics["loss"]["deltas"] == [None, -0.05]
    assert metrics["loss"]["pct_changes"] == pytest.approx([None, -14.2857142857])
    assert [v["count"] for v in metrics["loss"]["values"]] == [5, 4]
    assert metrics["latency_ms"]["values"][0] is None and metrics["latency_ms"]["deltas"] == [None, None]


def test_failed_block_marks_the_run_failed_and_nested_runs_link_their_parent(logged: dict[str, Any]) -> None:
    home = logged["home"]
    out = shipyard("runs", "list", "--experiment", "qa", "--json", home=home).stdout
    listed = {r["name"]: r for r in json.loads(out)}
    assert list(listed) == ["broken", "tuned", "child", "baseline"]  # newest first
    broken = listed["broken"]
    assert broken["status"] == "failed" and broken["end_time"] is not None
    assert broken["tags"]["error"] == "ValueError: the scorer fell over"
    assert broken["params"] == {"temperature": 1.0}
    assert listed["child"]["parent_run_id"] == logged["base"]  # and the parent's experiment
    assert {"kind": "run", "name": logged["base"], "version": 0} in _service(home).get(logged["child"])[
        "links"
    ]


def test_list_filters(logged: dict[str, Any]) -> None:
    home = logged["home"]
    by_tag, failed_in_qa, table = parallel(
        ("runs", "list", "--tag", "team=nlp", "--json"),
        ("runs", "list", "--experiment", "qa", "--status", "failed", "--json"),
        ("runs", "list", "--experiment", "qa"),
        home=home,
    )
    assert [r["name"] for r in json.loads(by_tag.stdout)] == ["baseline"]
    assert [r["run_id"] for r in json.loads(failed_in_qa.stdout)] == [logged["broken"]]
    assert "4 run(s)" in table.stdout and logged["tuned"] in table.stdout


def test_cli_errors_name_the_problem(logged: dict[str, Any]) -> None:
    home = logged["home"]
    ids = [logged[k] for k in ("base", "child", "tuned", "broken")]
    # Four random ids rarely share a first character; make sure some run does, for the ambiguity.
    svc = _service(home)
    while True:
        shared = next((a[0] for a in ids if sum(b[0] == a[0] for b in ids) > 1), None)
        if shared is not None:
            break
        ids.append(svc.create(name="filler", experiment="filler")["run_id"])
    unknown, ambiguous, one_run, bad_status = parallel(
        ("runs", "show", "0123456789abcdef"),
        ("runs", "show", shared),
        ("runs", "compare", ids[0]),
        ("runs", "list", "--status", "done"),
        home=home,
        check=False,
    )
    assert unknown.returncode == 2
    assert "no run `0123456789abcdef`" in unknown.stderr and "shipyard runs list" in unknown.stderr
    assert ambiguous.returncode == 2
    assert (
        f"run id prefix `{shared}` is ambiguous" in ambiguous.stderr and "more characters" in ambiguous.stderr
    )
    assert one_run.returncode == 2 and "at least two runs" in one_run.stderr
    assert bad_status.returncode == 2 and "running, finished, failed" in bad_status.stderr


# -- the service's rules, in-process -----------------------------------------------------------------
def _service(home: Path) -> RunService:
    from shipyard.settings import Settings
    from shipyard.store.db import Store

    settings = Settings(overrides={"home": str(home)})
    store = Store(settings.store_url)
    store.migrate()
    return RunService(store, settings.artifacts_path)


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[RunService]:
    service = _service(tmp_path / "home")
    yield service
    service.store.close()


def test_metrics_must_be_finite_and_a_bad_batch_writes_nothing(svc: RunService) -> None:
    run_id = svc.create(name="m")["run_id"]
    for bad in (float("nan"), float("inf"), "0.5", True, None):
        with pytest.raises(InvalidRequest) as err:
            svc.log_metrics(run_id, [{"key": "ok", "value": 1.0}, {"key": "acc", "value": bad}])
        assert err.value.param == "metrics[1].value" and "`acc`" in err.value.message
    with pytest.raises(InvalidRequest, match="step must be a whole number"):
        svc.log_metric(run_id, "acc", 0.5, step=-1)
    with pytest.raises(InvalidRequest, match="may only contain"):
        svc.log_metric(run_id, "acc{bad}", 0.5)
    assert svc.get(run_id)["metrics"] == {}
    svc.log_metric(run_id, "acc", 0.5)
    svc.log_metric(run_id, "acc", 0.6)  # the same step again: the later value is the latest
    assert svc.get(run_id)["metrics"]["acc"]["last"] == 0.6
    with pytest.raises(NotFound, match="has no metric `nope`; it has: acc"):
        svc.metric_history(run_id, "nope")


def test_params_are_write_once(svc: RunService) -> None:
    run_id = svc.create(name="p", params={"lr": 0.1, "layers": [1, 2]})["run_id"]
    assert svc.log_params(run_id, {"lr": 0.1, "layers": [1, 2], "seed": 7}) == {
        "lr": 0.1,
        "layers": [1, 2],
        "seed": 7,
    }
    with pytest.raises(Conflict) as err:
        svc.log_params(run_id, {"batch": 32, "lr": 0.2})
    assert err.value.status == 409 and err.value.param == "params.lr"
    assert "param `lr`" in err.value.message and "0.1" in err.value.message and "0.2" in err.value.message
    assert svc.get(run_id)["params"] == {"lr": 0.1, "layers": [1, 2], "seed": 7}  # `batch` not half-written
    with pytest.raises(InvalidRequest, match="finite numbers only"):
        svc.log_params(run_id, {"x": float("nan")})
    with pytest.raises(InvalidRequest, match="has no value"):
        svc.log_params(run_id, {"x": None})


def test_artifact_paths_cannot_escape_the_run_directory(svc: RunService, tmp_path: Path) -> None:
    run_id = svc.create(name="a")["run_id"]
    outside = svc.artifacts_root.parent
    for bad in ("../escape.txt", "a/../../escape.txt", "/etc/passwd", "C:/x", "a\\b", "", "./"):
        with pytest.raises(InvalidRequest) as err:
            svc.write_artifact(run_id, bad, b"x")
        assert err.value.param == "path"
    assert not (outside / "escape.txt").exists()

    # A symlink planted inside the run directory does not lead writes elsewhere either.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    svc.artifact_dir(run_id).mkdir(parents=True)
    (svc.artifact_dir(run_id) / "link").symlink_to(elsewhere)
    with pytest.raises(InvalidRequest, match="leads outside"):
        svc.write_artifact(run_id, "link/x.txt", b"x")
    assert list(elsewhere.iterdir()) == []
    assert svc.list_artifacts(run_id) == []
    assert not (svc.artifacts_root / ".staging").exists() or not any(
        (svc.artifacts_root / ".staging").iterdir()
    )


def test_artifacts_files_directories_overwrites_and_clashes(svc: RunService, tmp_path: Path) -> None:
    run_id = svc.create(name="a")["run_id"]
    src = tmp_path / "outputs"
    (src / "nested").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "nested" / "b.bin").write_bytes(b"\x00\x01")
    rows = svc.log_artifact(run_id, src)
    assert [r["path"] for r in rows] == ["outputs/a.txt", "outputs/nested/b.bin"]
    assert svc.read_artifact(run_id, "outputs/nested/b.bin") == b"\x00\x01"
    svc.write_dict(run_id, "summary.json", {"score": 1})
    assert json.loads(svc.read_artifact(run_id, "summary.json")) == {"score": 1}

    again = svc.write_artifact(run_id, "outputs/a.txt", "AA")
    assert again["size"] == 2 and svc.read_artifact(run_id, "outputs/a.txt") == b"AA"
    with pytest.raises(Conflict, match="is an artifact file"):
        svc.write_artifact(run_id, "summary.json/inner.txt", b"x")
    with pytest.raises(Conflict, match="is a directory holding"):
        svc.write_artifact(run_id, "outputs", b"x")
    (svc.artifact_dir(run_id) / "by-hand").mkdir()
    (svc.artifact_dir(run_id) / "by-hand" / "keep.txt").write_text("mine")
    with pytest.raises(Conflict, match="is a directory in"):
        svc.write_artifact(run_id, "by-hand", b"x")
    assert (svc.artifact_dir(run_id) / "by-hand" / "keep.txt").read_text() == "mine"
    with pytest.raises(InvalidRequest, match="does not exist"):
        svc.log_artifact(run_id, tmp_path / "missing.txt")
    with pytest.raises(NotFound, match=r"has no artifact `nope\.txt`"):
        svc.read_artifact(run_id, "nope.txt")
    with pytest.raises(NotFound, match="no run `feedface`"):
        svc.write_artifact("feedface", "x.txt", b"x")
    assert sorted(a["path"] for a in svc.list_artifacts(run_id)) == [
        "outputs/a.txt",
        "outputs/nested/b.bin",
        "summary.json",
    ]


def test_a_run_ends_once(svc: RunService) -> None:
    run_id = svc.create(name="e")["run_id"]
    ended = svc.finish(run_id, "finished")
    assert ended["status"] == "finished" and ended["end_time"] is not None
    assert svc.finish(run_id, "finished")["end_time"] == ended["end_time"]  # idempotent
    with pytest.raises(Conflict, match="already ended as `finished`"):
        svc.finish(run_id, "failed")
    with pytest.raises(InvalidRequest, match="cannot be reopened"):
        svc.update(run_id, status="running")
    assert svc.update(run_id, notes="kept for the report")["notes"] == "kept for the report"


def test_links_must_point_at_something_that_exists(svc: RunService) -> None:
    from shipyard.store.tables import dataset_versions, datasets

    with svc.store.engine.begin() as conn:
        ds = conn.execute(sa.insert(datasets).values(name="support-qa", created_at=0)).inserted_primary_key[0]
        conn.execute(
            sa.insert(dataset_versions).values(dataset_id=ds, version=1, hash="h", n_examples=3, created_at=0)
        )
    parent = svc.create(name="parent")["run_id"]
    run_id = svc.create(
        name="eval", links=[{"kind": "dataset", "name": "support-qa", "version": 1}], parent_run_id=parent[:8]
    )["run_id"]
    links = svc.get(run_id)["links"]
    assert links == [
        {"kind": "dataset", "name": "support-qa", "version": 1},
        {"kind": "run", "name": parent, "version": 0},
    ]
    for bad, fragment in [
        ({"kind": "dataset", "name": "support-qa", "version": 2}, "has no version 2"),
        ({"kind": "prompt", "name": "greeting", "version": 1}, "no prompt `greeting` version 1"),
        ({"kind": "table", "name": "x", "version": 1}, "kind must be one of"),
        ({"kind": "model", "name": "m"}, "needs a version number"),
        ({"kind": "run", "name": run_id}, "cannot link to itself"),
    ]:
        with pytest.raises((InvalidRequest, NotFound), match=fragment):
            svc.add_links(run_id, [bad])
    assert svc.get(run_id)["links"] == links
    with pytest.raises(NotFound):
        svc.create(name="orphan", parent_run_id="0" * 32)
    assert [r["name"] for r in svc.list_runs()] == ["eval", "parent"]  # the orphan was not created


def test_concurrent_writers_lose_nothing(svc: RunService) -> None:
    run_id = svc.create(name="c")["run_id"]

    def work(i: int) -> None:
        svc.set_tags(run_id, {f"worker-{i}": "done"})
        svc.log_params(run_id, {f"p{i}": i})
        svc.log_metrics(run_id, [{"key": "progress", "value": float(i), "step": i}])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    detail = svc.get(run_id)
    assert set(detail["tags"]) == {f"worker-{i}" for i in range(8)}
    assert detail["params"] == {f"p{i}": i for i in range(8)}
    assert detail["metrics"]["progress"]["count"] == 8


# -- the Python API, in-process ----------------------------------------------------------------------
def test_tracking_api_endings_and_nesting(tmp_path: Path) -> None:
    import shipyard

    home = str(tmp_path / "home")
    with pytest.raises(InvalidRequest, match="needs an active run"):
        shipyard.start_run(name="lonely", home=home, nested=True)
    with pytest.raises(KeyboardInterrupt), shipyard.start_run(name="interrupted", home=home) as run:
        raise KeyboardInterrupt
    assert run.status == "killed"

    run = shipyard.start_run(name="manual", home=home, params={"k": 1})
    assert shipyard.active_run() is run
    with shipyard.start_run(name="inner", home=home, nested=True) as inner:
        inner.log_text("hello", "notes/hello.txt")
        inner.link("run", run.run_id)
    assert inner.parent_run_id == run.run_id and shipyard.active_run() is run
    assert (inner.artifact_dir / "notes" / "hello.txt").read_text() == "hello"
    with pytest.raises(Conflict, match="param `k`"):
        run.log_param("k", 2)
    run.finish("killed")
    assert shipyard.active_run() is None and run.info()["status"] == "killed"

    with shipyard.start_run(name="self-ended", home=home) as ended:
        ended.finish("failed")  # what the code chose inside the block stands
    assert ended.info()["status"] == "failed"


# -- the admin API on a real server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.conftest import ShipyardServer

    s = ShipyardServer(tmp_path_factory.mktemp("runs-api") / "home", CONFIG).start()
    yield s
    s.stop()


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


def test_api_create_log_get_compare(server: Any) -> None:
    # Runs record the calling key's name as their creator.
    ci = named_key(server, "ci")
    api = api_as(server, ci, timeout=10)
    r = api.post("/runs", json={"name": "api-a", "experiment": "api", "params": {"k": 5}, "tags": {"v": 1}})
    assert r.status_code == 201, r.text
    a = r.json()
    assert a["status"] == "running" and a["created_by"] == ci.actor and a["tags"] == {"v": "1"}
    points = [{"key": "acc", "value": 0.5}] + [
        {"key": "loss", "value": 1.0 / (s + 1), "step": s} for s in range(3)
    ]
    assert api.post(f"/runs/{a['run_id']}/metrics", json=points).json() == {"logged": 4}
    assert api.post(f"/runs/{a['run_id']}/params", json={"params": {"k": 5, "j": "x"}}).json() == {
        "params": {"k": 5, "j": "x"}
    }
    assert api.post(f"/runs/{a['run_id']}/tags", json={"tags": {"stage": "dev"}}).json()["tags"] == {
        "v": "1",
        "stage": "dev",
    }
    b = api.post("/runs", json={"name": "api-b", "experiment": "api", "parent_run_id": a["run_id"]}).json()
    api.post(f"/runs/{b['run_id']}/metrics", json=[{"key": "acc", "value": 0.6}])
    assert api.post(
        f"/runs/{b['run_id']}/links", json={"links": [{"kind": "run", "name": a["run_id"]}]}
    ).json() == {"links": [{"kind": "run", "name": a["run_id"], "version": 0}]}

    detail = api.get(f"/runs/{a['run_id'][:12]}").json()
    assert detail["metrics"]["loss"]["count"] == 3 and detail["metrics"]["loss"]["last"] == pytest.approx(
        1 / 3
    )
    series = api.get(f"/runs/{a['run_id']}/metrics/loss").json()
    assert [p["step"] for p in series["points"]] == [0, 1, 2]

    cmp = api.get("/runs/compare", params={"ids": f"{a['run_id']},{b['run_id']}"}).json()
    acc = next(m for m in cmp["metrics"] if m["key"] == "acc")
    assert acc["deltas"] == [None, 0.1] and acc["pct_changes"] == [None, 20.0]
    assert cmp["params"] == [
        {"key": "j", "values": ["x", None], "differs": True},
        {"key": "k", "values": [5, None], "differs": True},
    ]

    patched = api.patch(f"/runs/{a['run_id']}", json={"status": "finished", "notes": "good"}).json()
    assert patched["status"] == "finished" and patched["notes"] == "good"
    listed = api.get("/runs", params={"experiment": "api", "tag": "stage=dev"}).json()
    assert [r["run_id"] for r in listed["data"]] == [a["run_id"]] and listed["next"] is None
    newest = api.get("/runs", params={"experiment": "api", "limit": 1}).json()
    older = api.get("/runs", params={"experiment": "api", "limit": 1, "cursor": newest["next"]}).json()
    assert [r["run_id"] for r in newest["data"] + older["data"]] == [b["run_id"], a["run_id"]]
    assert older["next"] is None
    children = api.get("/runs", params={"parent": a["run_id"]}).json()
    assert [r["run_id"] for r in children["data"]] == [b["run_id"]]

    paths = api.get("/openapi.json").json()["paths"]
    assert "/runs/compare" in paths and "/runs/{run_id}/artifacts/{path}" in paths
    assert "RunDetailOut" in api.get("/openapi.json").json()["components"]["schemas"]


def test_api_artifact_upload_and_download(server: Any) -> None:
    api = server.api(timeout=10)
    run_id = api.post("/runs", json={"name": "files"}).json()["run_id"]
    payload = os.urandom(3 * 1024 * 1024 + 17)  # bigger than one streamed chunk
    r = api.put(f"/runs/{run_id}/artifacts/results/blob.bin", content=payload)
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == hashlib.sha256(payload).hexdigest() and r.json()["size"] == len(payload)
    got = api.get(f"/runs/{run_id}/artifacts/results/blob.bin")
    assert got.status_code == 200 and got.content == payload
    assert got.headers["x-shipyard-sha256"] == hashlib.sha256(payload).hexdigest()
    assert (server.home / "artifacts" / run_id / "results" / "blob.bin").read_bytes() == payload

    api.put(f"/runs/{run_id}/artifacts/summary.json", content=b'{"ok": true}')
    assert api.get(f"/runs/{run_id}/artifacts/summary.json").headers["content-type"] == "application/json"
    listed = [a["path"] for a in api.get(f"/runs/{run_id}").json()["artifacts"]]
    assert listed == ["results/blob.bin", "summary.json"]

    # `..` sent percent-encoded, so no client or proxy normalises it away before the server sees it.
    err = error_of(api.put(f"/runs/{run_id}/artifacts/a/%2E%2E/%2E%2E/escape.txt", content=b"x"), 400)
    assert "contains `..`" in err["message"] and err["param"] == "path"
    err = error_of(api.put(f"/runs/{run_id}/artifacts/%2Fetc%2Fpasswd", content=b"x"), 400)
    assert "is absolute" in err["message"]
    assert not (server.home / "artifacts" / "escape.txt").exists()
    err = error_of(api.get(f"/runs/{run_id}/artifacts/missing.txt"), 404)
    assert "has no artifact `missing.txt`" in err["message"] and "summary.json" in err["message"]


def test_api_errors_have_the_openai_shape(server: Any) -> None:
    api = server.api(timeout=10)
    run_id = api.post("/runs", json={"name": "errors", "params": {"lr": 0.1}}).json()["run_id"]

    err = error_of(api.get("/runs/0123456789abcdef0123456789abcdef"), 404)
    assert "no run `0123456789abcdef0123456789abcdef`" in err["message"] and err["param"] == "run_id"
    err = error_of(api.post(f"/runs/{run_id}/params", json={"params": {"lr": 0.3}}), 409)
    assert "param `lr`" in err["message"] and err["type"] == "conflict" and err["param"] == "params.lr"
    # Python's JSON parser accepts NaN; the service refuses it.
    nan = b'[{"key": "acc", "value": 0.5}, {"key": "acc", "value": NaN}]'
    r = api.post(f"/runs/{run_id}/metrics", content=nan, headers={"content-type": "application/json"})
    err = error_of(r, 400)
    assert "finite number" in err["message"] and err["param"] == "metrics[1].value"
    assert api.get(f"/runs/{run_id}").json()["metrics"] == {}  # the good point was not written either
    err = error_of(api.post(f"/runs/{run_id}/metrics", json=[{"key": "acc", "value": "high"}]), 400)
    assert "0.value" in err["message"]
    err = error_of(api.post("/runs", json={"name": "x", "colour": "red"}), 400)
    assert err["param"] == "colour"
    err = error_of(
        api.post("/runs", json={"links": [{"kind": "dataset", "name": "nope", "version": 1}]}), 400
    )
    assert "dataset `nope` has no version 1" in err["message"]
    err = error_of(api.get("/runs/compare", params={"ids": f"{run_id},ffffffffffffffffffffffff"}), 404)
    assert "no run `ffffffffffffffffffffffff`" in err["message"]
    api.patch(f"/runs/{run_id}", json={"status": "killed"})
    err = error_of(api.patch(f"/runs/{run_id}", json={"status": "finished"}), 409)
    assert "already ended as `killed`" in err["message"]
    err = error_of(api.get("/runs", params={"tag": "novalue"}), 400)
    assert "key=value" in err["message"]


def test_python_api_and_server_share_the_store(server: Any) -> None:
    """A script pointed at the server's home writes runs the running server serves."""
    script = textwrap.dedent(
        """
        import shipyard, sys
        with shipyard.start_run(name="from-script", home=sys.argv[1]) as run:
            run.log_metric("acc", 0.9)
        print(run.run_id)
        """
    )
    env = {**os.environ, **({"SHIPYARD_DATABASE_URL": server.database_url} if server.database_url else {})}
    r = subprocess.run(
        [sys.executable, "-c", script, str(server.home)], capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip()
    got = httpx.get(f"{server.url}/api/runs/{run_id}", headers=server.headers, timeout=10).json()
    assert (
        got["name"] == "from-script" and got["metrics"]["acc"]["last"] == 0.9 and got["status"] == "finished"
    )


@pytest.mark.postgres
def test_run_service_on_postgres(pg_url: str, tmp_path: Path) -> None:
    """The JSON tag filter, the row lock on params/tags and the metric summaries on PostgreSQL."""
    from shipyard.registry.runs import RunService
    from shipyard.store.db import Store

    store = Store(pg_url)
    store.migrate()
    service = RunService(store, tmp_path / "artifacts")
    a = service.create(name="a", experiment="pg", params={"temperature": 0.2}, tags={"team": "blue"})
    b = service.create(name="b", experiment="pg", params={"temperature": 0.7}, tags={"team": "red"})
    for step, value in enumerate([0.5, 0.7, 0.75]):
        service.log_metric(a["run_id"], "accuracy", value, step=step)
    service.log_metric(b["run_id"], "accuracy", 0.81)
    service.set_tags(b["run_id"], {"stage": "final"})
    service.write_artifact(a["run_id"], "notes/summary.txt", "ok")
    assert [r["name"] for r in service.list_runs(experiment="pg", tags={"team": "red"})] == ["b"]
    assert service.list_runs(experiment="pg", tags={"stage": "final", "team": "red"})[0]["name"] == "b"
    comparison = service.compare([a["run_id"], b["run_id"]])
    (metric,) = comparison["metrics"]
    assert metric["deltas"][1] == pytest.approx(0.06)
    assert service.read_artifact(a["run_id"], "notes/summary.txt") == b"ok"
    store.close()
