"""Experiment-run queries: runs, their metrics, artifacts and lineage links.

Functions take a ``Connection`` rather than the ``Store`` so the service layer
(``shipyard.registry.runs``) can put several of them in one transaction: creating a run with its
params, tags and links, or logging a batch of metrics, either happens entirely or not at all.
Validation lives in the service; this module writes what it is given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import sqlalchemy as sa

from shipyard.store.tables import (
    dataset_versions,
    datasets,
    registry_entities,
    registry_versions,
    run_artifacts,
    run_links,
    run_metrics,
    runs,
)


class RunRow(TypedDict):
    run_id: str
    name: str | None
    experiment: str
    status: str
    start_time: float
    end_time: float | None
    params: dict[str, Any]
    tags: dict[str, str]
    parent_run_id: str | None
    created_by: str | None
    notes: str | None


class MetricSummary(TypedDict):
    """The latest value of one metric (highest step, then latest logged) and the series' range."""

    last: float
    step: int
    timestamp: float
    min: float
    max: float
    count: int


class MetricPoint(TypedDict):
    step: int
    value: float
    timestamp: float


class LinkRow(TypedDict):
    kind: str
    name: str
    version: int


class ArtifactRow(TypedDict):
    path: str
    size: int
    sha256: str
    created_at: float


def _run_row(row: sa.Row[Any]) -> RunRow:
    d = row._asdict()
    return RunRow(
        run_id=d["run_id"],
        name=d["name"],
        experiment=d["experiment"],
        status=d["status"],
        start_time=d["start_time"],
        end_time=d["end_time"],
        params=dict(d["params"] or {}),
        tags=dict(d["tags"] or {}),
        parent_run_id=d["parent_run_id"],
        created_by=d["created_by"],
        notes=d["notes"],
    )


# -- runs -------------------------------------------------------------------------------------------
def insert_run(conn: sa.Connection, row: Mapping[str, Any]) -> None:
    conn.execute(sa.insert(runs).values(**row))


def get_run(conn: sa.Connection, run_id: str) -> RunRow | None:
    row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).first()
    return None if row is None else _run_row(row)


def ids_with_prefix(conn: sa.Connection, prefix: str, limit: int = 10) -> list[str]:
    """Run ids starting with ``prefix`` (which the caller has checked is hex: no LIKE wildcards)."""
    q = (
        sa.select(runs.c.run_id)
        .where(runs.c.run_id.like(prefix + "%"))
        .order_by(runs.c.start_time.desc())
        .limit(limit)
    )
    return [r[0] for r in conn.execute(q)]


def lock_run(conn: sa.Connection, run_id: str) -> bool:
    """Lock a run's row for the rest of the transaction; False if the run does not exist.

    A no-op UPDATE rather than SELECT … FOR UPDATE so the same statement works on both stores.
    On Postgres it makes a concurrent read-modify-write of the run's params or tags wait instead
    of losing an update; on SQLite the ``Store.write()`` transaction already holds the database
    write lock, so it only checks that the run exists.
    """
    result = conn.execute(sa.update(runs).where(runs.c.run_id == run_id).values(status=runs.c.status))
    return bool(result.rowcount)


def update_run(conn: sa.Connection, run_id: str, values: Mapping[str, Any]) -> None:
    conn.execute(sa.update(runs).where(runs.c.run_id == run_id).values(**values))


@dataclass
class RunFilter:
    experiment: str | None = None
    status: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    name_contains: str | None = None
    parent_run_id: str | None = None


def _where(f: RunFilter) -> list[Any]:
    cond: list[Any] = []
    if f.experiment is not None:
        cond.append(runs.c.experiment == f.experiment)
    if f.status is not None:
        cond.append(runs.c.status == f.status)
    for key, value in f.tags.items():
        # JSON path lookup: json_extract on SQLite, ->> on Postgres.
        cond.append(runs.c.tags[key].as_string() == value)
    if f.name_contains:
        cond.append(runs.c.name.ilike(f"%{_escape_like(f.name_contains)}%", escape="\\"))
    if f.parent_run_id is not None:
        cond.append(runs.c.parent_run_id == f.parent_run_id)
    return cond


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_runs(
    conn: sa.Connection,
    f: RunFilter,
    limit: int = 50,
    offset: int = 0,
    *,
    before: tuple[float, str] | None = None,
) -> list[RunRow]:
    """Newest first. ``before`` (a run's ``start_time`` and ``run_id``) pages further back along
    ix_runs_start, so a page deep in the list costs what the first one does; ``offset`` skips."""
    c = runs.c
    cond = _where(f)
    if before is not None:
        started, run_id = before
        # The first conjunct alone is what the index ranges over; the second settles ties.
        cond += [c.start_time <= started, sa.or_(c.start_time < started, c.run_id < run_id)]
    q = (
        sa.select(runs)
        .where(*cond)
        .order_by(c.start_time.desc(), c.run_id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [_run_row(r) for r in conn.execute(q)]


def count_runs(conn: sa.Connection, f: RunFilter) -> int:
    q = sa.select(sa.func.count()).select_from(runs).where(*_where(f))
    return int(conn.execute(q).scalar() or 0)


# -- metrics ----------------------------------------------------------------------------------------
def insert_metrics(conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        conn.execute(sa.insert(run_metrics), list(rows))


def metric_summaries(conn: sa.Connection, run_ids: Sequence[str]) -> dict[str, dict[str, MetricSummary]]:
    """For each run, every metric's latest value and its min/max/count, in one query.

    "Latest" is the point with the highest step; among points logged at the same step (a scalar
    logged twice), the one logged last wins, as in MLflow.
    """
    if not run_ids:
        return {}
    part = (run_metrics.c.run_id, run_metrics.c.key)
    ranked = (
        sa.select(
            run_metrics.c.run_id,
            run_metrics.c.key,
            run_metrics.c.value,
            run_metrics.c.step,
            run_metrics.c.timestamp,
            sa.func.row_number()
            .over(partition_by=part, order_by=(run_metrics.c.step.desc(), run_metrics.c.id.desc()))
            .label("rn"),
            sa.func.min(run_metrics.c.value).over(partition_by=part).label("vmin"),
            sa.func.max(run_metrics.c.value).over(partition_by=part).label("vmax"),
            sa.func.count().over(partition_by=part).label("n"),
        )
        .where(run_metrics.c.run_id.in_(list(run_ids)))
        .subquery()
    )
    q = sa.select(ranked).where(ranked.c.rn == 1).order_by(ranked.c.run_id, ranked.c.key)
    out: dict[str, dict[str, MetricSummary]] = {rid: {} for rid in run_ids}
    for r in conn.execute(q):
        out[r.run_id][r.key] = MetricSummary(
            last=r.value, step=r.step, timestamp=r.timestamp, min=r.vmin, max=r.vmax, count=r.n
        )
    return out


def metric_history(conn: sa.Connection, run_id: str, key: str) -> list[MetricPoint]:
    q = (
        sa.select(run_metrics.c.step, run_metrics.c.value, run_metrics.c.timestamp)
        .where(run_metrics.c.run_id == run_id, run_metrics.c.key == key)
        .order_by(run_metrics.c.step, run_metrics.c.id)
    )
    return [MetricPoint(step=r.step, value=r.value, timestamp=r.timestamp) for r in conn.execute(q)]


# -- links ------------------------------------------------------------------------------------------
def insert_links(conn: sa.Connection, run_id: str, links: Iterable[LinkRow]) -> None:
    """Add links that are not there yet (adding one twice is not an error: lineage is a set)."""
    existing = {(link["kind"], link["name"], link["version"]) for link in list_links(conn, run_id)}
    rows = []
    for link in links:
        key = (link["kind"], link["name"], link["version"])
        if key not in existing:
            existing.add(key)
            rows.append({"run_id": run_id, **link})
    if rows:
        conn.execute(sa.insert(run_links), rows)


def list_links(conn: sa.Connection, run_id: str) -> list[LinkRow]:
    q = (
        sa.select(run_links.c.kind, run_links.c.name, run_links.c.version)
        .where(run_links.c.run_id == run_id)
        .order_by(run_links.c.kind, run_links.c.name, run_links.c.version)
    )
    return [LinkRow(kind=r.kind, name=r.name, version=r.version) for r in conn.execute(q)]


def registry_version_exists(conn: sa.Connection, kind: str, name: str, version: int) -> bool:
    q = (
        sa.select(sa.literal(1))
        .select_from(registry_versions.join(registry_entities))
        .where(
            registry_entities.c.kind == kind,
            registry_entities.c.name == name,
            registry_versions.c.version == version,
        )
    )
    return conn.execute(q).first() is not None


def dataset_version_exists(conn: sa.Connection, name: str, version: int) -> bool:
    q = (
        sa.select(sa.literal(1))
        .select_from(dataset_versions.join(datasets))
        .where(datasets.c.name == name, dataset_versions.c.version == version)
    )
    return conn.execute(q).first() is not None


# -- artifacts --------------------------------------------------------------------------------------
def upsert_artifact(conn: sa.Connection, run_id: str, art: ArtifactRow) -> None:
    """Record an artifact; writing the same path again replaces the record (and the file)."""
    where = (run_artifacts.c.run_id == run_id, run_artifacts.c.path == art["path"])
    if conn.execute(sa.select(run_artifacts.c.path).where(*where)).first() is None:
        conn.execute(sa.insert(run_artifacts).values(run_id=run_id, **art))
    else:
        conn.execute(
            sa.update(run_artifacts)
            .where(*where)
            .values(size=art["size"], sha256=art["sha256"], created_at=art["created_at"])
        )


def get_artifact(conn: sa.Connection, run_id: str, path: str) -> ArtifactRow | None:
    q = sa.select(
        run_artifacts.c.path, run_artifacts.c.size, run_artifacts.c.sha256, run_artifacts.c.created_at
    ).where(run_artifacts.c.run_id == run_id, run_artifacts.c.path == path)
    r = conn.execute(q).first()
    return (
        None if r is None else ArtifactRow(path=r.path, size=r.size, sha256=r.sha256, created_at=r.created_at)
    )


def list_artifacts(conn: sa.Connection, run_id: str) -> list[ArtifactRow]:
    q = (
        sa.select(
            run_artifacts.c.path, run_artifacts.c.size, run_artifacts.c.sha256, run_artifacts.c.created_at
        )
        .where(run_artifacts.c.run_id == run_id)
        .order_by(run_artifacts.c.path)
    )
    return [
        ArtifactRow(path=r.path, size=r.size, sha256=r.sha256, created_at=r.created_at)
        for r in conn.execute(q)
    ]
