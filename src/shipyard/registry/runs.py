"""Experiment runs: the one service the CLI, the admin API, the Python tracking API (and eval runs)
share. It validates everything before it writes, so a rejected call leaves nothing behind, and each
call is one transaction.

Rules worth knowing (they follow MLflow where it has one):

- A param, once set, keeps its value: logging it again with the same value is a no-op, with a
  different value a 409 that names it. Params describe the run's inputs; changing one afterwards
  would make the record lie.
- Metrics are finite numbers. A scalar is step 0; a series has steps 0, 1, 2…; the "latest"
  value of a metric is the one at the highest step (the last logged on a tie).
- Tags are free-form strings and may be overwritten.
- Links record lineage: a dataset version, prompt/model/route/provider versions from the
  registry (checked to exist, so lineage never points nowhere), or another run (version 0).
- A run ends once: finishing again with the same status is a no-op, with another a 409.
- Artifacts are files under ``<artifacts>/<run id>/``; paths are relative and may not escape that
  directory. Each is recorded with its size and sha256.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any, TypedDict, TypeGuard

import orjson
import sqlalchemy as sa

from shipyard.errors import Conflict, InvalidRequest, NotFound
from shipyard.store import runs as q
from shipyard.store.db import Store
from shipyard.store.runs import ArtifactRow, LinkRow, MetricPoint, MetricSummary, RunFilter, RunRow

STATUSES = ("running", "finished", "failed", "killed")
FINAL_STATUSES = ("finished", "failed", "killed")
LINK_KINDS = ("dataset", "prompt", "model", "route", "provider", "run")

# Keys of params, metrics and tags. Restricted (as MLflow does) so they read well in tables, work
# as query parameters (`--tag k=v`) and as JSON paths in the store's tag filter.
_KEY = re.compile(r"^[A-Za-z0-9_\-. /:]+$")
_KEY_CHARS = "letters, digits, spaces and `_ - . / :`"
MAX_KEY_CHARS = 250
MAX_PARAM_CHARS = 6000  # of the value's JSON; bigger inputs belong in an artifact
MAX_TAG_CHARS = 5000
MAX_ARTIFACT_PATH = 1024
MAX_INT = 2**63 - 1  # the largest integer SQLite and PostgreSQL (BIGINT) store
_HEX = re.compile(r"^[0-9a-f]+$")
_CHUNK = 1 << 20


class RunDetail(RunRow):
    """A run with everything logged to it: latest metrics, lineage links and artifacts."""

    metrics: dict[str, MetricSummary]
    links: list[LinkRow]
    artifacts: list[ArtifactRow]


class ParamComparison(TypedDict):
    key: str
    values: list[Any]  # one per run, in the order asked; None where the run lacks the param
    differs: bool


class MetricComparison(TypedDict):
    key: str
    values: list[MetricSummary | None]  # one per run; None where the run lacks the metric
    deltas: list[float | None]  # latest value minus the baseline's; None for the baseline itself
    pct_changes: list[float | None]  # delta as % of |baseline|; None where the baseline is 0 or absent


class Comparison(TypedDict):
    baseline: str
    runs: list[RunRow]
    params: list[ParamComparison]
    metrics: list[MetricComparison]


ArtifactSource = bytes | Path | IO[bytes]


def _clean(x: float) -> float:
    """Drop floating-point noise (0.81 - 0.75 = 0.06000000000000005) from derived numbers."""
    return float(f"{x:.12g}")


def _check_key(what: str, key: Any, param: str) -> str:
    if not isinstance(key, str) or not key.strip():
        raise InvalidRequest(f"{what} names must be non-empty strings; got {key!r}", param=param)
    if len(key) > MAX_KEY_CHARS:
        raise InvalidRequest(
            f"{what} name `{key[:40]}…` is {len(key)} characters; the limit is {MAX_KEY_CHARS}", param=param
        )
    if not _KEY.match(key):
        raise InvalidRequest(f"{what} name `{key}` may only contain {_KEY_CHARS}", param=param)
    return key


def _set_entries(what: str, field: str, entries: Any, hint: str = "") -> Iterator[tuple[str, Any]]:
    """The (name, value) pairs of a params or tags object, each checked as it comes: the object
    must be a mapping, each name valid and each value set (``hint`` ends the message of one that
    is not). A generator, so that one entry's later checks run before the next entry's."""
    if not isinstance(entries, Mapping):
        raise InvalidRequest(f"{field} must be an object of name → value; got {entries!r}", param=field)
    for key, value in entries.items():
        _check_key(what, key, f"{field}.{key}")
        if value is None:
            raise InvalidRequest(f"{what} `{key}` has no value{hint}", param=f"{field}.{key}")
        yield key, value


def _check_object(item: Any, where: str, noun: str, fields: tuple[str, ...], needs: str) -> None:
    """An entry of a metrics or links list must be an object with only ``fields``; ``needs`` says
    which of them it must have, for the message when it is not an object at all."""
    if not isinstance(item, Mapping):
        raise InvalidRequest(f"{where} must be an object with {needs}", param=where)
    unknown = set(item) - set(fields)
    if unknown:
        raise InvalidRequest(
            f"{where} has unknown field(s) {', '.join(sorted(unknown))}; "
            f"a {noun} has {', '.join(fields[:-1])} and {fields[-1]}",
            param=where,
        )


def _whole_number(value: Any, low: int) -> TypeGuard[numbers.Integral]:
    """True for an integer from ``low`` to MAX_INT; a bool is not a number here, though Python says it is."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return False
    return low <= int(value) <= MAX_INT


def _check_json_value(value: Any) -> bool:
    """True when the value is JSON data without NaN/Infinity (which JSON cannot represent) and
    without integers beyond 64 bits (which the JSON encoder refuses)."""
    if value is None or isinstance(value, str | bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**64
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_check_json_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _check_json_value(v) for k, v in value.items())
    return False


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _number(value: Any, what: str, param: str) -> float:
    # numbers.Real covers numpy scalars too; bool is an int subclass but never a meaningful metric.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidRequest(f"{what} must be a number; got {value!r}", param=param)
    out = float(value)
    if not math.isfinite(out):
        raise InvalidRequest(f"{what} must be a finite number; got {out}", param=param)
    return out


def artifact_relpath(path: str) -> str:
    """Normalise an artifact path, refusing anything that could land outside the run's directory."""
    if not isinstance(path, str) or not path.strip():
        raise InvalidRequest(
            "artifact path is empty; give a relative path like `results/summary.json`", param="path"
        )
    if "\x00" in path or "\\" in path:
        raise InvalidRequest(
            f"artifact path {path!r} contains a backslash or NUL; use `/` between directories", param="path"
        )
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise InvalidRequest(
            f"artifact path `{path}` is absolute; give a path relative to the run's artifact directory, "
            "like `results/summary.json`",
            param="path",
        )
    parts = [p for p in PurePosixPath(path).parts if p != "."]
    if ".." in parts:
        raise InvalidRequest(
            f"artifact path `{path}` contains `..`; artifacts must stay inside the run's artifact directory",
            param="path",
        )
    if not parts:
        raise InvalidRequest(f"artifact path `{path}` names no file", param="path")
    rel = "/".join(parts)
    if len(rel) > MAX_ARTIFACT_PATH:
        raise InvalidRequest(
            f"artifact path is {len(rel)} characters; the limit is {MAX_ARTIFACT_PATH}", param="path"
        )
    return rel


def _copy_hashing(source: ArtifactSource, dest: Path) -> tuple[int, str]:
    """Copy ``source`` to ``dest``; returns its size and sha256. A caller's file object stays open."""
    digest = hashlib.sha256()
    size = 0
    with open(dest, "wb") as out:
        if isinstance(source, bytes):
            out.write(source)
            digest.update(source)
            return len(source), digest.hexdigest()
        src = source.open("rb") if isinstance(source, Path) else source
        try:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        finally:
            if src is not source:
                src.close()
    return size, digest.hexdigest()


def serialize_dict(obj: Any, path: str) -> bytes:
    """An object as YAML when the artifact path ends in .yaml/.yml, else as JSON."""
    if not _check_json_value(obj):
        raise InvalidRequest(
            f"artifact `{path}`: the object is not JSON data (or holds NaN/Infinity)", param="obj"
        )
    if path.lower().endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_dump(_plain(obj), sort_keys=False, allow_unicode=True).encode()
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n"


def _plain(obj: Any) -> Any:
    # yaml.safe_dump refuses tuples; JSON has only lists anyway.
    if isinstance(obj, tuple | list):
        return [_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


class RunService:
    """Create, log to, finish, read and compare experiment runs.

    ``artifacts_root`` is ``Settings.artifacts_path``; a run's files live in ``<root>/<run id>/``.
    Run references may be a full run id or a unique prefix of one (like git commits).
    """

    def __init__(self, store: Store, artifacts_root: Path) -> None:
        self.store = store
        self.artifacts_root = Path(artifacts_root)

    # -- identity -----------------------------------------------------------------------------------
    def artifact_dir(self, run_id: str) -> Path:
        return self.artifacts_root / run_id

    def resolve_id(self, ref: str) -> str:
        with self.store.engine.connect() as conn:
            return self._resolve(conn, ref)

    def _resolve(self, conn: sa.Connection, ref: str, param: str = "run_id") -> str:
        if not isinstance(ref, str) or not ref.strip():
            raise InvalidRequest("run id is empty; `shipyard runs list` shows run ids", param=param)
        ref = ref.strip().lower()
        if len(ref) == 32 and q.get_run(conn, ref) is not None:
            return ref
        matches = q.ids_with_prefix(conn, ref, limit=6) if _HEX.match(ref) and len(ref) < 32 else []
        if not matches:
            raise NotFound(f"no run `{ref}`; `shipyard runs list` shows run ids", param=param)
        if len(matches) > 1:
            shown = ", ".join(m[:12] for m in matches[:5])
            raise InvalidRequest(
                f"run id prefix `{ref}` is ambiguous: it matches {shown}{'…' if len(matches) > 5 else ''}; "
                "give more characters",
                param=param,
                code="ambiguous_run_id",
            )
        return matches[0]

    def _lock(self, conn: sa.Connection, ref: str) -> str:
        run_id = self._resolve(conn, ref)
        if not q.lock_run(conn, run_id):  # resolved a moment ago; runs are never deleted
            raise NotFound(f"no run `{run_id}`", param="run_id")
        return run_id

    # -- validation ---------------------------------------------------------------------------------
    @staticmethod
    def _check_params(params: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in _set_entries("param", "params", params, "; give one or leave the param out"):
            if not _check_json_value(value):
                raise InvalidRequest(
                    f"param `{key}` must be a string, number, boolean, or a list/object of those "
                    f"(finite numbers only, integers within 64 bits); got {_short(value)}",
                    param=f"params.{key}",
                )
            size = len(_canonical(value))
            if size > MAX_PARAM_CHARS:
                raise InvalidRequest(
                    f"param `{key}` is {size} characters of JSON; the limit is {MAX_PARAM_CHARS}. "
                    "Log large inputs as an artifact (`log_dict`) instead",
                    param=f"params.{key}",
                )
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @staticmethod
    def _check_tags(tags: Mapping[str, Any]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in _set_entries("tag", "tags", tags):
            text = value if isinstance(value, str) else str(value)
            if len(text) > MAX_TAG_CHARS:
                raise InvalidRequest(
                    f"tag `{key}` is {len(text)} characters; the limit is {MAX_TAG_CHARS}",
                    param=f"tags.{key}",
                )
            out[key] = text
        return out

    @staticmethod
    def _check_metrics(metrics: Iterable[Mapping[str, Any]], now: float) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for i, m in enumerate(metrics):
            where = f"metrics[{i}]"
            _check_object(m, where, "metric", ("key", "value", "step", "timestamp"), "`key` and `value`")
            key = _check_key("metric", m.get("key"), f"{where}.key")
            value = _number(m.get("value"), f"metric `{key}`", f"{where}.value")
            step = m.get("step")
            if step is None:
                step = 0
            elif not _whole_number(step, 0):
                raise InvalidRequest(
                    f"metric `{key}`: step must be a whole number from 0 to {MAX_INT}; got {step!r}",
                    param=f"{where}.step",
                )
            ts = m.get("timestamp")
            timestamp = now if ts is None else _number(ts, f"metric `{key}`: timestamp", f"{where}.timestamp")
            rows.append({"key": key, "value": value, "step": int(step), "timestamp": timestamp})
        return rows

    def _check_links(
        self, conn: sa.Connection, links: Iterable[Mapping[str, Any]], self_id: str | None
    ) -> list[LinkRow]:
        out: list[LinkRow] = []
        for i, link in enumerate(links):
            where = f"links[{i}]"
            _check_object(link, where, "link", ("kind", "name", "version"), "kind, name and version")
            kind = link.get("kind")
            if kind not in LINK_KINDS:
                raise InvalidRequest(
                    f"{where}: kind must be one of {', '.join(LINK_KINDS)}; got {kind!r}",
                    param=f"{where}.kind",
                )
            name = link.get("name")
            if not isinstance(name, str) or not name.strip() or len(name) > 128:
                raise InvalidRequest(
                    f"{where}: name must be a non-empty string of at most 128 characters; got {name!r}",
                    param=f"{where}.name",
                )
            version = link.get("version")
            if kind == "run":
                if version not in (None, 0):
                    raise InvalidRequest(
                        f"{where}: a link to a run has version 0 (runs are not versioned); got {version!r}",
                        param=f"{where}.version",
                    )
                target = self._resolve(conn, name, param=f"{where}.name")
                if target == self_id:
                    raise InvalidRequest(f"{where}: a run cannot link to itself", param=f"{where}.name")
                out.append(LinkRow(kind=kind, name=target, version=0))
                continue
            if not _whole_number(version, 1):
                raise InvalidRequest(
                    f"{where}: {kind} `{name}` needs a version number from 1 to {MAX_INT}; got {version!r}",
                    param=f"{where}.version",
                )
            version = int(version)
            if kind == "dataset":
                if not q.dataset_version_exists(conn, name, version):
                    raise InvalidRequest(
                        f"{where}: dataset `{name}` has no version {version}; "
                        f"`shipyard datasets versions {name}` lists its versions",
                        param=f"{where}.version",
                        code="link_not_found",
                    )
            elif not q.registry_version_exists(conn, kind, name, version):
                raise InvalidRequest(
                    f"{where}: the registry has no {kind} `{name}` version {version}; "
                    f"`shipyard {kind}s versions {name}` lists its versions",
                    param=f"{where}.version",
                    code="link_not_found",
                )
            out.append(LinkRow(kind=kind, name=name, version=version))
        return out

    # -- runs ---------------------------------------------------------------------------------------
    def create(
        self,
        *,
        name: str | None = None,
        experiment: str = "default",
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        links: Iterable[Mapping[str, Any]] | None = None,
        parent_run_id: str | None = None,
        created_by: str | None = None,
        notes: str | None = None,
    ) -> RunRow:
        """Start a run (status `running`), with its first params, tags and links in one go."""
        if name is not None and (not isinstance(name, str) or len(name) > 256):
            raise InvalidRequest("run name must be a string of at most 256 characters", param="name")
        if not isinstance(experiment, str) or not experiment.strip() or len(experiment) > 128:
            raise InvalidRequest(
                f"experiment must be a non-empty name of at most 128 characters; got {experiment!r}",
                param="experiment",
            )
        checked_params = self._check_params(params or {})
        checked_tags = self._check_tags(tags or {})
        run_id = uuid.uuid4().hex
        with self.store.write() as conn:
            parent = None
            if parent_run_id is not None:
                parent = self._resolve(conn, parent_run_id, param="parent_run_id")
            checked_links = self._check_links(conn, links or (), run_id)
            if parent is not None:
                # The parent is also a lineage link, so "which runs came from run X" is one query.
                checked_links.append(LinkRow(kind="run", name=parent, version=0))
            q.insert_run(
                conn,
                {
                    "run_id": run_id,
                    "name": name,
                    "experiment": experiment.strip(),
                    "status": "running",
                    "start_time": time.time(),
                    "end_time": None,
                    "params": checked_params,
                    "tags": checked_tags,
                    "parent_run_id": parent,
                    "created_by": created_by,
                    "notes": notes,
                },
            )
            q.insert_links(conn, run_id, checked_links)
            row = q.get_run(conn, run_id)
        assert row is not None
        return row

    def get(self, ref: str) -> RunDetail:
        with self.store.engine.connect() as conn:
            run_id = self._resolve(conn, ref)
            row = q.get_run(conn, run_id)
            assert row is not None
            return RunDetail(
                **row,
                metrics=q.metric_summaries(conn, [run_id])[run_id],
                links=q.list_links(conn, run_id),
                artifacts=q.list_artifacts(conn, run_id),
            )

    def list_runs(
        self,
        *,
        experiment: str | None = None,
        status: str | None = None,
        tags: Mapping[str, str] | None = None,
        name_contains: str | None = None,
        parent_run_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
        before: tuple[float, str] | None = None,
    ) -> list[RunRow]:
        """Runs matching every filter given, newest first; ``before`` (a run's start time and id)
        starts after that run."""
        with self.store.engine.connect() as conn:
            return q.list_runs(
                conn,
                self._filter(experiment, status, tags, name_contains, parent_run_id),
                limit=self._limit(limit),
                offset=max(0, offset),
                before=before,
            )

    def count_runs(
        self,
        *,
        experiment: str | None = None,
        status: str | None = None,
        tags: Mapping[str, str] | None = None,
        name_contains: str | None = None,
        parent_run_id: str | None = None,
    ) -> int:
        with self.store.engine.connect() as conn:
            return q.count_runs(conn, self._filter(experiment, status, tags, name_contains, parent_run_id))

    @staticmethod
    def _limit(limit: int) -> int:
        if limit < 1 or limit > 10_000:
            raise InvalidRequest(f"limit must be between 1 and 10000; got {limit}", param="limit")
        return limit

    @staticmethod
    def _filter(
        experiment: str | None,
        status: str | None,
        tags: Mapping[str, str] | None,
        name_contains: str | None,
        parent_run_id: str | None,
    ) -> RunFilter:
        if status is not None and status not in STATUSES:
            raise InvalidRequest(
                f"status must be one of {', '.join(STATUSES)}; got `{status}`", param="status"
            )
        checked_tags = {}
        for key, value in (tags or {}).items():
            _check_key("tag", key, "tag")
            checked_tags[key] = str(value)
        return RunFilter(
            experiment=experiment,
            status=status,
            tags=checked_tags,
            name_contains=name_contains,
            parent_run_id=parent_run_id,
        )

    def update(
        self, ref: str, *, name: str | None = None, notes: str | None = None, status: str | None = None
    ) -> RunRow:
        """Rename, annotate, or end a run (ending follows :meth:`finish`'s rules)."""
        if name is not None and len(name) > 256:
            raise InvalidRequest("run name must be at most 256 characters", param="name")
        if status is not None:
            self._check_final(status)
        with self.store.write() as conn:
            run_id = self._lock(conn, ref)
            values: dict[str, Any] = {}
            if name is not None:
                values["name"] = name
            if notes is not None:
                values["notes"] = notes
            if status is not None:
                values.update(self._ending(conn, run_id, status, None))
            if values:
                q.update_run(conn, run_id, values)
            row = q.get_run(conn, run_id)
        assert row is not None
        return row

    def finish(self, ref: str, status: str = "finished", end_time: float | None = None) -> RunRow:
        """End a run. Ending it again with the same status changes nothing; with another, 409."""
        self._check_final(status)
        if end_time is not None:
            end_time = _number(end_time, "end_time", "end_time")
        with self.store.write() as conn:
            run_id = self._lock(conn, ref)
            values = self._ending(conn, run_id, status, end_time)
            if values:
                q.update_run(conn, run_id, values)
            row = q.get_run(conn, run_id)
        assert row is not None
        return row

    def reopen(self, ref: str) -> RunRow:
        """Continue a run that was interrupted (`killed`) or crashed (`failed`): it is `running`
        again, with its end time cleared. Finished runs stay finished. Used by resumable work such
        as eval runs."""
        with self.store.write() as conn:
            run_id = self._lock(conn, ref)
            row = q.get_run(conn, run_id)
            assert row is not None
            if row["status"] == "finished":
                raise Conflict(
                    f"run `{run_id}` finished; only killed or failed runs can be continued",
                    param="status",
                    code="run_already_ended",
                )
            if row["status"] != "running":
                q.update_run(conn, run_id, {"status": "running", "end_time": None})
            row = q.get_run(conn, run_id)
        assert row is not None
        return row

    @staticmethod
    def _check_final(status: str) -> None:
        if status not in FINAL_STATUSES:
            raise InvalidRequest(
                f"status `{status}` cannot be set; a run ends as one of {', '.join(FINAL_STATUSES)} "
                "(and a run that ended cannot be reopened)",
                param="status",
            )

    @staticmethod
    def _ending(conn: sa.Connection, run_id: str, status: str, end_time: float | None) -> dict[str, Any]:
        row = q.get_run(conn, run_id)
        assert row is not None
        if row["status"] == "running":
            return {"status": status, "end_time": time.time() if end_time is None else end_time}
        if row["status"] == status:
            return {}
        raise Conflict(
            f"run `{run_id}` already ended as `{row['status']}`; it cannot become `{status}`",
            param="status",
            code="run_already_ended",
        )

    # -- params, tags, links ------------------------------------------------------------------------
    def log_params(self, ref: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Add params; returns all of the run's params. Changing a param's value is a 409."""
        checked = self._check_params(params)
        with self.store.write() as conn:
            run_id = self._lock(conn, ref)
            row = q.get_run(conn, run_id)
            assert row is not None
            current = row["params"]
            for key, value in checked.items():
                if key in current and _canonical(current[key]) != _canonical(value):
                    raise Conflict(
                        f"param `{key}` of run `{run_id}` is already {current[key]!r}; params cannot change "
                        f"(got {value!r}). Start a new run for a different value, "
                        "or record it as a tag or metric",
                        param=f"params.{key}",
                        code="param_changed",
                    )
            merged = {**current, **checked}
            if merged != current:
                q.update_run(conn, run_id, {"params": merged})
        return merged

    def set_tags(self, ref: str, tags: Mapping[str, Any]) -> dict[str, str]:
        """Set (or overwrite) tags; returns all of the run's tags."""
        checked = self._check_tags(tags)
        with self.store.write() as conn:
            run_id = self._lock(conn, ref)
            row = q.get_run(conn, run_id)
            assert row is not None
            merged = {**row["tags"], **checked}
            if merged != row["tags"]:
                q.update_run(conn, run_id, {"tags": merged})
        return merged

    def add_links(self, ref: str, links: Iterable[Mapping[str, Any]]) -> list[LinkRow]:
        """Add lineage links (adding an existing one is a no-op); returns all of the run's links."""
        with self.store.write() as conn:
            run_id = self._lock(conn, ref)
            q.insert_links(conn, run_id, self._check_links(conn, list(links), run_id))
            return q.list_links(conn, run_id)

    # -- metrics ------------------------------------------------------------------------------------
    def log_metric(
        self, ref: str, key: str, value: float, step: int | None = None, timestamp: float | None = None
    ) -> None:
        self.log_metrics(ref, [{"key": key, "value": value, "step": step, "timestamp": timestamp}])

    def log_metrics(self, ref: str, metrics: Iterable[Mapping[str, Any]]) -> int:
        """Log a batch of points (``{key, value, step?, timestamp?}``) in one transaction: all or none."""
        rows = self._check_metrics(list(metrics), time.time())
        with self.store.write() as conn:
            run_id = self._lock(conn, ref)
            q.insert_metrics(conn, [{"run_id": run_id, **r} for r in rows])
        return len(rows)

    def metric_history(self, ref: str, key: str) -> list[MetricPoint]:
        """Every point of one metric, by step."""
        with self.store.engine.connect() as conn:
            run_id = self._resolve(conn, ref)
            points = q.metric_history(conn, run_id, key)
            if not points:
                known = sorted(q.metric_summaries(conn, [run_id])[run_id])
                raise NotFound(
                    f"run `{run_id}` has no metric `{key}`; "
                    + (f"it has: {', '.join(known)}" if known else "it has logged no metrics"),
                    param="key",
                )
            return points

    # -- artifacts ----------------------------------------------------------------------------------
    def log_artifact(
        self, ref: str, source: str | os.PathLike[str], name: str | None = None
    ) -> list[ArtifactRow]:
        """Copy a file, or a directory's files, into the run's artifacts.

        ``name`` is the path inside the run's artifact directory; by default the source's own
        name. A directory keeps its layout under that name.
        """
        src = Path(source)
        if not src.exists():
            raise InvalidRequest(f"`{src}` does not exist; give a file or directory to log", param="path")
        dest = artifact_relpath(name if name is not None else src.name)
        items: list[tuple[str, ArtifactSource]] = []
        if src.is_dir():
            for dirpath, dirnames, filenames in os.walk(src):
                dirnames.sort()
                for fname in sorted(filenames):
                    full = Path(dirpath) / fname
                    if full.is_file():
                        items.append((artifact_relpath(f"{dest}/{full.relative_to(src).as_posix()}"), full))
            if not items:
                raise InvalidRequest(f"directory `{src}` has no files to log", param="path")
        else:
            items.append((dest, src))
        return self._store_files(ref, items)

    def write_artifact(self, ref: str, path: str, data: bytes | str | IO[bytes]) -> ArtifactRow:
        """Write bytes, text (UTF-8) or a binary file object's content as the artifact ``path``."""
        payload: ArtifactSource = data.encode() if isinstance(data, str) else data
        return self._store_files(ref, [(artifact_relpath(path), payload)])[0]

    def write_dict(self, ref: str, path: str, obj: Any) -> ArtifactRow:
        """Write an object as JSON, or as YAML when ``path`` ends in .yaml/.yml."""
        rel = artifact_relpath(path)
        return self._store_files(ref, [(rel, serialize_dict(obj, rel))])[0]

    def _store_files(self, ref: str, items: Sequence[tuple[str, ArtifactSource]]) -> list[ArtifactRow]:
        """Stage the files, then record them and move them into place in one transaction.

        Files are copied (and hashed) into a staging directory on the same filesystem first, so
        the slow part happens outside the transaction and a failed copy leaves nothing behind.
        A failure while moving them into place puts back what was there before.
        """
        paths = [rel for rel, _ in items]
        if len(set(paths)) != len(paths):
            raise InvalidRequest("the same artifact path is given twice", param="path")
        self.resolve_id(ref)  # fail fast, before copying anything
        staging = self.artifacts_root / ".staging" / uuid.uuid4().hex
        staging.mkdir(parents=True)
        try:
            staged: list[tuple[str, Path, int, str]] = []
            for i, (rel, source) in enumerate(items):
                tmp = staging / f"{i}.part"
                size, sha = _copy_hashing(source, tmp)
                staged.append((rel, tmp, size, sha))
            with self.store.write() as conn:
                run_id = self._lock(conn, ref)
                self._check_clashes(paths, {a["path"] for a in q.list_artifacts(conn, run_id)})
                now = time.time()
                rows = [
                    ArtifactRow(path=rel, size=size, sha256=sha, created_at=now)
                    for rel, _, size, sha in staged
                ]
                for row in rows:
                    q.upsert_artifact(conn, run_id, row)
                self._move_into_place(self.artifact_dir(run_id), staging, staged)
            return rows
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @staticmethod
    def _check_clashes(paths: Sequence[str], existing: set[str]) -> None:
        """A file cannot also be a directory: `a` and `a/b` cannot both be artifacts."""
        taken = existing | set(paths)
        for rel in paths:
            parts = rel.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in taken:
                    raise Conflict(
                        f"artifact path `{rel}` needs `{'/'.join(parts[:i])}` to be a directory, "
                        "but it is an artifact file; choose another path",
                        param="path",
                    )
            prefix = rel + "/"
            under = next((p for p in taken if p.startswith(prefix)), None)
            if under is not None:
                raise Conflict(
                    f"artifact path `{rel}` is a directory holding `{under}`; choose another path",
                    param="path",
                )

    @staticmethod
    def _move_into_place(run_dir: Path, staging: Path, staged: Sequence[tuple[str, Path, int, str]]) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        root = run_dir.resolve()
        done: list[tuple[Path, Path | None]] = []
        try:
            for i, (rel, tmp, _, _) in enumerate(staged):
                final = run_dir / rel
                # The path was checked for `..` already; only a symlink planted inside the run
                # directory could still lead elsewhere, and resolve() sees through it.
                if not final.parent.resolve().is_relative_to(root):
                    raise InvalidRequest(
                        f"artifact path `{rel}` leads outside the run's directory", param="path"
                    )
                try:
                    final.parent.mkdir(parents=True, exist_ok=True)
                except (FileExistsError, NotADirectoryError):
                    raise Conflict(
                        f"artifact path `{rel}` needs a directory where {run_dir} holds a file "
                        "(one not logged as an artifact); choose another path",
                        param="path",
                    ) from None
                if final.is_dir() and not final.is_symlink():
                    # Files put into the run directory by hand: never replace (and lose) them.
                    raise Conflict(
                        f"artifact path `{rel}` is a directory in {run_dir}; choose another path",
                        param="path",
                    )
                backup = None
                if final.exists() or final.is_symlink():
                    backup = staging / f"{i}.old"
                    os.replace(final, backup)
                os.replace(tmp, final)
                done.append((final, backup))
        except BaseException:
            for final, backup in reversed(done):
                if backup is not None:
                    os.replace(backup, final)
                else:
                    final.unlink(missing_ok=True)
            raise

    def artifact_file(self, ref: str, path: str) -> tuple[Path, ArtifactRow]:
        """The file on disk of a recorded artifact, with its record."""
        rel = artifact_relpath(path)
        with self.store.engine.connect() as conn:
            run_id = self._resolve(conn, ref)
            art = q.get_artifact(conn, run_id, rel)
            if art is None:
                known = [a["path"] for a in q.list_artifacts(conn, run_id)]
                listing = ", ".join(known[:10]) + ("…" if len(known) > 10 else "")
                raise NotFound(
                    f"run `{run_id}` has no artifact `{rel}`; "
                    + (f"it has: {listing}" if known else "it has no artifacts"),
                    param="path",
                )
        file = self.artifact_dir(run_id) / rel
        if not file.is_file():
            raise NotFound(
                f"artifact `{rel}` of run `{run_id}` is recorded but its file {file} is missing", param="path"
            )
        return file, art

    def read_artifact(self, ref: str, path: str) -> bytes:
        file, _ = self.artifact_file(ref, path)
        return file.read_bytes()

    def list_artifacts(self, ref: str) -> list[ArtifactRow]:
        with self.store.engine.connect() as conn:
            return q.list_artifacts(conn, self._resolve(conn, ref))

    # -- compare ------------------------------------------------------------------------------------
    def compare(self, refs: Sequence[str]) -> Comparison:
        """Params side by side, and each metric's latest value per run with its change vs the first."""
        if len(refs) < 2:
            raise InvalidRequest("compare needs at least two runs", param="ids")
        with self.store.engine.connect() as conn:
            ids: list[str] = []
            for ref in refs:
                run_id = self._resolve(conn, ref, param="ids")
                if run_id in ids:
                    raise InvalidRequest(f"run `{run_id}` is given twice", param="ids")
                ids.append(run_id)
            rows = [q.get_run(conn, run_id) for run_id in ids]
            summaries = q.metric_summaries(conn, ids)
        run_rows = [r for r in rows if r is not None]

        param_keys = sorted({k for r in run_rows for k in r["params"]})
        params: list[ParamComparison] = []
        for key in param_keys:
            values = [r["params"].get(key) for r in run_rows]
            distinct = {_canonical(v) for v in values}
            params.append(ParamComparison(key=key, values=values, differs=len(distinct) > 1))

        metric_keys = sorted({k for run_id in ids for k in summaries[run_id]})
        metrics: list[MetricComparison] = []
        for key in metric_keys:
            per_run = [summaries[run_id].get(key) for run_id in ids]
            base = per_run[0]
            deltas: list[float | None] = [None]
            pcts: list[float | None] = [None]
            for s in per_run[1:]:
                if base is None or s is None:
                    deltas.append(None)
                    pcts.append(None)
                    continue
                delta = s["last"] - base["last"]
                deltas.append(_clean(delta))
                pcts.append(_clean(delta / abs(base["last"]) * 100) if base["last"] != 0 else None)
            metrics.append(MetricComparison(key=key, values=per_run, deltas=deltas, pct_changes=pcts))
        return Comparison(baseline=ids[0], runs=run_rows, params=params, metrics=metrics)
