"""Dataset queries: datasets, their immutable versions and the examples of each version.

The store writes what it is given: validation, hashing and deduplication live in
``shipyard.registry.datasets``. Functions that take a ``Connection`` run inside the caller's
transaction, so a version and its examples are written all together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from shipyard.store.db import Store, insert_row
from shipyard.store.feedback import trace_condition as feedback_condition
from shipyard.store.tables import dataset_examples, dataset_versions, datasets, traces

VERSION_COLUMNS = (
    dataset_versions.c.id,
    dataset_versions.c.version,
    dataset_versions.c.hash,
    dataset_versions.c.n_examples,
    dataset_versions.c.source,
    dataset_versions.c.created_at,
    dataset_versions.c.created_by,
    dataset_versions.c.message,
)
_EXAMPLE_JSON = ("input", "expected", "metadata", "tags")


EXAMPLE_COLUMNS = [dataset_examples.c[n] for n in ("idx", *_EXAMPLE_JSON, "trace_id")]


# Rows per executemany: large imports stay one transaction without one giant statement.
INSERT_BATCH = 1000


# -- datasets ---------------------------------------------------------------------------------------
def get_dataset(conn: sa.Connection, name: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(datasets).where(datasets.c.name == name)).first()
    return None if row is None else row._asdict()


def insert_dataset(conn: sa.Connection, name: str, description: str | None, created_at: float) -> int:
    return insert_row(conn, datasets, name=name, description=description, created_at=created_at)


def dataset_names(store: Store, limit: int = 20) -> list[str]:
    with store.engine.connect() as conn:
        return list(conn.scalars(sa.select(datasets.c.name).order_by(datasets.c.name).limit(limit)))


def list_datasets(store: Store) -> list[dict[str, Any]]:
    """Every dataset with its number of versions and its latest version (columns ``latest_*``)."""
    counts = (
        sa.select(
            dataset_versions.c.dataset_id,
            sa.func.count().label("n_versions"),
            sa.func.max(dataset_versions.c.version).label("latest"),
        )
        .group_by(dataset_versions.c.dataset_id)
        .subquery()
    )
    latest = dataset_versions.alias("latest_version")
    q = (
        sa.select(
            datasets,
            sa.func.coalesce(counts.c.n_versions, 0).label("n_versions"),
            *(latest.c[c.name].label(f"latest_{c.name}") for c in VERSION_COLUMNS),
        )
        .select_from(
            datasets.outerjoin(counts, counts.c.dataset_id == datasets.c.id).outerjoin(
                latest, sa.and_(latest.c.dataset_id == datasets.c.id, latest.c.version == counts.c.latest)
            )
        )
        .order_by(datasets.c.name)
    )
    with store.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(q)]


def count_versions(conn: sa.Connection, dataset_id: int) -> int:
    q = sa.select(sa.func.count()).where(dataset_versions.c.dataset_id == dataset_id)
    return int(conn.execute(q).scalar() or 0)


# -- versions ---------------------------------------------------------------------------------------
def list_versions(conn: sa.Connection, dataset_id: int) -> list[dict[str, Any]]:
    q = (
        sa.select(*VERSION_COLUMNS)
        .where(dataset_versions.c.dataset_id == dataset_id)
        .order_by(dataset_versions.c.version)
    )
    return [r._asdict() for r in conn.execute(q)]


def get_version(conn: sa.Connection, dataset_id: int, version: int | None) -> dict[str, Any] | None:
    """One version by number; ``None`` asks for the latest."""
    q = sa.select(*VERSION_COLUMNS).where(dataset_versions.c.dataset_id == dataset_id)
    if version is None:
        q = q.order_by(dataset_versions.c.version.desc()).limit(1)
    else:
        q = q.where(dataset_versions.c.version == version)
    row = conn.execute(q).first()
    return None if row is None else row._asdict()


def version_by_hash(conn: sa.Connection, dataset_id: int, hash_: str) -> dict[str, Any] | None:
    q = sa.select(*VERSION_COLUMNS).where(
        dataset_versions.c.dataset_id == dataset_id, dataset_versions.c.hash == hash_
    )
    row = conn.execute(q).first()
    return None if row is None else row._asdict()


def next_version_number(conn: sa.Connection, dataset_id: int) -> int:
    q = sa.select(sa.func.max(dataset_versions.c.version)).where(dataset_versions.c.dataset_id == dataset_id)
    return int(conn.execute(q).scalar() or 0) + 1


def insert_version(
    conn: sa.Connection,
    *,
    dataset_id: int,
    version: int,
    hash_: str,
    n_examples: int,
    source: dict[str, Any] | None,
    created_at: float,
    created_by: str | None,
    message: str | None,
) -> int:
    return insert_row(
        conn,
        dataset_versions,
        dataset_id=dataset_id,
        version=version,
        hash=hash_,
        n_examples=n_examples,
        source=source,
        created_at=created_at,
        created_by=created_by,
        message=message,
    )


# -- examples ---------------------------------------------------------------------------------------
def insert_examples(
    conn: sa.Connection, version_id: int, examples: Sequence[dict[str, Any]], first_idx: int = 0
) -> None:
    """Examples in order (``idx`` from ``first_idx``); each has input, expected, metadata, tags, trace_id."""
    for start in range(0, len(examples), INSERT_BATCH):
        rows = [
            {
                "version_id": version_id,
                "idx": first_idx + start + i,
                "input": ex["input"],
                "expected": ex.get("expected"),
                "metadata": ex.get("metadata"),
                "tags": ex.get("tags"),
                "trace_id": ex.get("trace_id"),
            }
            for i, ex in enumerate(examples[start : start + INSERT_BATCH])
        ]
        conn.execute(sa.insert(dataset_examples), rows)


def get_examples(
    conn: sa.Connection, version_id: int, offset: int = 0, limit: int | None = 50
) -> list[dict[str, Any]]:
    q = (
        sa.select(*EXAMPLE_COLUMNS)
        .where(dataset_examples.c.version_id == version_id, dataset_examples.c.idx >= offset)
        .order_by(dataset_examples.c.idx)
        .limit(limit)
    )
    return [r._asdict() for r in conn.execute(q)]


def iter_examples(store: Store, version_id: int, page: int = 1000) -> Iterator[dict[str, Any]]:
    """All examples of a version in order, a page per short-lived connection.

    Keyset pagination on ``idx`` keeps memory flat for big versions, and not holding one
    connection across yields lets a slow consumer (an HTTP download) not pin a pooled connection.
    """
    after = -1
    while True:
        with store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(*EXAMPLE_COLUMNS)
                .where(dataset_examples.c.version_id == version_id, dataset_examples.c.idx > after)
                .order_by(dataset_examples.c.idx)
                .limit(page)
            ).all()
        if not rows:
            return
        for r in rows:
            yield r._asdict()
        after = rows[-1].idx


# -- traces as a source -----------------------------------------------------------------------------
@dataclass
class TraceSelection:
    """Which traces become examples. Times are unix seconds; ``tag`` must be in the trace's tags."""

    route: str | None = None
    since: float | None = None
    until: float | None = None
    status: str | None = None
    prompt: str | None = None
    prompt_version: int | None = None
    tag: str | None = None
    limit: int | None = None
    feedback: str | None = None  # positive | negative | any | none (store/feedback.py)


TRACE_SOURCE_COLUMNS = (
    traces.c.trace_id,
    traces.c.start_time,
    traces.c.operation,
    traces.c.route,
    traces.c.model,
    traces.c.status,
    traces.c.prompt,
    traces.c.prompt_version,
    traces.c.input,
    traces.c.output,
    traces.c.attributes,
    traces.c.tags,
)


def has_tag(dialect: str, tag: str) -> Any:
    if dialect == "postgresql":
        return sa.cast(traces.c.tags, JSONB).op("@>")(
            sa.cast(sa.literal(orjson.dumps([tag]).decode()), JSONB)
        )
    # SQLite: the JSON1 table-valued function walks the array; exact match, no LIKE escaping games.
    each = sa.func.json_each(traces.c.tags).table_valued("value")
    return sa.exists(sa.select(1).select_from(each).where(each.c.value == tag))


def select_traces(store: Store, sel: TraceSelection) -> list[dict[str, Any]]:
    """Chat and text-completion traces matching ``sel``, oldest first.

    With a limit, the newest ``limit`` traces are taken (a dataset of recent traffic), then put back
    in time order so the dataset reads like the traffic did.
    """
    cond: list[Any] = [traces.c.operation.in_(("chat", "text_completion"))]
    if sel.route:
        cond.append(traces.c.route == sel.route)
    if sel.status:
        cond.append(traces.c.status == sel.status)
    if sel.since is not None:
        cond.append(traces.c.start_time >= sel.since)
    if sel.until is not None:
        cond.append(traces.c.start_time < sel.until)
    if sel.prompt:
        cond.append(traces.c.prompt == sel.prompt)
    if sel.prompt_version is not None:
        cond.append(traces.c.prompt_version == sel.prompt_version)
    if sel.feedback:
        cond.append(feedback_condition(sel.feedback))
    with store.engine.connect() as conn:
        if sel.tag:
            cond.append(has_tag(conn.dialect.name, sel.tag))
        q = sa.select(*TRACE_SOURCE_COLUMNS).where(*cond)
        if sel.limit is not None:
            q = q.order_by(traces.c.start_time.desc(), traces.c.trace_id.desc()).limit(sel.limit)
            rows = [r._asdict() for r in conn.execute(q)]
            rows.reverse()
            return rows
        q = q.order_by(traces.c.start_time, traces.c.trace_id)
        return [r._asdict() for r in conn.execute(q)]
