"""Datasets and their versions: create a dataset, write a version (one transaction, content-
addressed, optionally appended to the latest and deduplicated), read versions and their examples.

The file formats (``files``) and building from traces (``traces``) write through ``create_version``
here, so every way in shares its rules: nothing is written on any error, and the same examples
return the existing version instead of a copy.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from shipyard.config import schema
from shipyard.errors import Conflict, InvalidRequest, NotFound, StoreError
from shipyard.registry.datasets.examples import (
    content_hash,
    dedupe_examples,
    lineage_trace_id,
    validate_examples,
)
from shipyard.store import datasets as q
from shipyard.store.db import Store

_MAX_PAGE = 1000

# Called as work advances: (stage, done, total) with stage "parse" (lines) or "write" (examples).
Progress = Callable[[str, int, int], None]


# -- result types -----------------------------------------------------------------------------------
@dataclass
class VersionInfo:
    dataset: str
    version: int
    hash: str
    n_examples: int
    source: dict[str, Any] | None
    created_at: float
    created_by: str | None
    message: str | None

    @property
    def ref(self) -> str:
        return f"{self.dataset}@v{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DatasetInfo:
    name: str
    description: str | None
    created_at: float
    n_versions: int
    latest: VersionInfo | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WriteResult:
    """What a write produced: the version, and whether it is new or already existed."""

    version: VersionInfo
    created: bool
    dataset_created: bool = False
    duplicates_removed: int = 0
    # from-traces only: traces that matched but had nothing usable as input (capture was off).
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Example:
    idx: int
    input: Any
    expected: Any
    metadata: dict[str, Any]
    tags: list[str]
    trace_id: str | None = None


@dataclass
class ExamplesPage:
    version: VersionInfo
    total: int
    offset: int
    limit: int
    examples: list[Example] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _version_info(dataset: str, row: dict[str, Any], prefix: str = "") -> VersionInfo:
    return VersionInfo(
        dataset=dataset,
        version=int(row[prefix + "version"]),
        hash=str(row[prefix + "hash"]),
        n_examples=int(row[prefix + "n_examples"]),
        source=row[prefix + "source"],
        created_at=float(row[prefix + "created_at"]),
        created_by=row[prefix + "created_by"],
        message=row[prefix + "message"],
    )


# -- names and references ---------------------------------------------------------------------------
def check_name(name: str) -> str:
    """The one name rule (config/schema.py); a dataset name also keeps `@` for versions, as in
    `name@v2`, and `/` out of the URL paths that name it."""
    return schema.check_name(name, "dataset name", reserved="@/")


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME``, ``NAME@3``, ``NAME@v3`` or ``NAME@latest`` → (name, version or None for latest)."""
    name, sep, version = ref.partition("@")
    if not sep or version.lower() == "latest":
        return name, None
    m = re.fullmatch(r"[vV]?(\d{1,18})", version)  # more digits than the store's integers hold
    if m is None or int(m.group(1)) < 1:
        raise InvalidRequest(
            f"`{ref}`: the version after `@` must be a number (`{name}@3` or `{name}@v3`) or `latest`",
            param="version",
        )
    return name, int(m.group(1))


def _no_dataset(store: Store, name: str) -> NotFound:
    known = q.dataset_names(store)
    hint = f"known datasets: {', '.join(known)}" if known else "there are no datasets yet"
    return NotFound(
        f"no dataset `{name}`; {hint}. Create it with `shipyard datasets create {name}` "
        "(or POST /api/datasets), or import a file into it",
        param="name",
        code="dataset_not_found",
    )


def _dataset_row(store: Store, conn: sa.Connection, name: str) -> dict[str, Any]:
    row = q.get_dataset(conn, name)
    if row is None:
        raise _no_dataset(store, name)
    return row


def _version_row(conn: sa.Connection, ds: dict[str, Any], version: int | None) -> dict[str, Any]:
    row = q.get_version(conn, ds["id"], version)
    if row is not None:
        return row
    name = ds["name"]
    n = q.count_versions(conn, ds["id"])
    if n == 0:
        raise NotFound(
            f"dataset `{name}` has no versions yet; add one with `shipyard datasets import {name} FILE` "
            f"or `shipyard datasets from-traces {name}`",
            param="version",
            code="version_not_found",
        )
    latest = q.get_version(conn, ds["id"], None)
    assert latest is not None
    raise NotFound(
        f"dataset `{name}` has no version {version}; its versions are 1–{latest['version']}",
        param="version",
        code="version_not_found",
    )


# -- creating and reading ---------------------------------------------------------------------------
def create_dataset(store: Store, name: str, description: str | None = None) -> DatasetInfo:
    check_name(name)
    now = time.time()
    try:
        with store.write() as conn:
            if q.get_dataset(conn, name) is not None:
                raise _exists(name)
            q.insert_dataset(conn, name, description, now)
    except sa.exc.IntegrityError:
        raise _exists(name) from None
    return DatasetInfo(name=name, description=description, created_at=now, n_versions=0, latest=None)


def _exists(name: str) -> Conflict:
    return Conflict(
        f"dataset `{name}` already exists; add a version to it (`shipyard datasets import {name} FILE`) "
        "or choose another name",
        param="name",
        code="dataset_exists",
    )


def list_datasets(store: Store) -> list[DatasetInfo]:
    out = []
    for r in q.list_datasets(store):
        latest = _version_info(r["name"], r, "latest_") if r["latest_version"] is not None else None
        out.append(
            DatasetInfo(
                name=r["name"],
                description=r["description"],
                created_at=r["created_at"],
                n_versions=int(r["n_versions"]),
                latest=latest,
            )
        )
    return out


def get_dataset(store: Store, name: str) -> DatasetInfo:
    with store.engine.connect() as conn:
        ds = _dataset_row(store, conn, name)
        latest = q.get_version(conn, ds["id"], None)
        n = q.count_versions(conn, ds["id"])
    return DatasetInfo(
        name=ds["name"],
        description=ds["description"],
        created_at=ds["created_at"],
        n_versions=n,
        latest=None if latest is None else _version_info(name, latest),
    )


def list_versions(store: Store, name: str) -> list[VersionInfo]:
    with store.engine.connect() as conn:
        ds = _dataset_row(store, conn, name)
        return [_version_info(name, r) for r in q.list_versions(conn, ds["id"])]


def resolve(store: Store, ref: str) -> VersionInfo:
    """The version a reference names (``NAME`` and ``NAME@latest`` mean the newest)."""
    name, version = parse_ref(ref)
    with store.engine.connect() as conn:
        ds = _dataset_row(store, conn, name)
        return _version_info(name, _version_row(conn, ds, version))


def resolve_version_id(store: Store, ref: str) -> tuple[VersionInfo, int]:
    name, version = parse_ref(ref)
    with store.engine.connect() as conn:
        ds = _dataset_row(store, conn, name)
        row = _version_row(conn, ds, version)
    return _version_info(name, row), int(row["id"])


def _example(row: dict[str, Any]) -> Example:
    return Example(
        idx=int(row["idx"]),
        input=row["input"],
        expected=row["expected"],
        metadata=row["metadata"] or {},
        tags=row["tags"] or [],
        trace_id=row["trace_id"],
    )


def get_examples(store: Store, ref: str, offset: int = 0, limit: int = 50) -> ExamplesPage:
    if offset < 0:
        raise InvalidRequest(f"`offset` must be >= 0; got {offset}", param="offset")
    if not 1 <= limit <= _MAX_PAGE:
        raise InvalidRequest(f"`limit` must be between 1 and {_MAX_PAGE}; got {limit}", param="limit")
    info, version_id = resolve_version_id(store, ref)
    with store.engine.connect() as conn:
        rows = q.get_examples(conn, version_id, offset, limit)
    return ExamplesPage(
        version=info, total=info.n_examples, offset=offset, limit=limit, examples=[_example(r) for r in rows]
    )


# -- writing ----------------------------------------------------------------------------------------
def create_version(
    store: Store,
    name: str,
    examples: Sequence[dict[str, Any]],
    *,
    message: str | None = None,
    dedupe: bool = False,
    append: bool = False,
    source: dict[str, Any] | None = None,
    actor: str | None = None,
    create_missing: bool = False,
    progress: Progress | None = None,
    validated: bool = False,
) -> WriteResult:
    """A new version of ``name`` from ``examples`` (or the existing one with the same content).

    ``append`` puts the examples after the latest version's; ``dedupe`` then drops repeats across
    both. ``create_missing`` creates the dataset when it does not exist (imports, from-traces);
    otherwise an unknown dataset is a 404.
    """
    check_name(name)
    new = list(examples) if validated else validate_examples(list(examples))
    for ex in new:
        ex.setdefault("trace_id", lineage_trace_id(ex))
    source = dict(source or {"type": "api"})
    if append:
        source["append"] = True
    # SQLite takes the write lock up front (BEGIN IMMEDIATE), so only Postgres can race on the
    # version number; the loser of such a race retries and sees the winner's version.
    for attempt in range(3):
        try:
            with store.write() as conn:
                return _write(
                    store, conn, name, new, message, dedupe, append, source, actor, create_missing, progress
                )
        except sa.exc.IntegrityError as exc:
            if attempt == 2:
                raise StoreError(f"could not write a version of dataset `{name}`: {exc.orig}") from None
    raise AssertionError("unreachable")


def _write(
    store: Store,
    conn: sa.Connection,
    name: str,
    new: list[dict[str, Any]],
    message: str | None,
    dedupe: bool,
    append: bool,
    source: dict[str, Any],
    actor: str | None,
    create_missing: bool,
    progress: Progress | None,
) -> WriteResult:
    now = time.time()
    ds = q.get_dataset(conn, name)
    dataset_created = False
    if ds is None:
        if not create_missing:
            raise _no_dataset(store, name)
        dataset_id = q.insert_dataset(conn, name, None, now)
        dataset_created = True
    else:
        dataset_id = int(ds["id"])
    final = new
    if append:
        base = q.get_version(conn, dataset_id, None)
        if base is not None:
            source["base_version"] = base["version"]
            old = [
                {k: v for k, v in r.items() if k != "idx"} for r in q.get_examples(conn, base["id"], 0, None)
            ]
            final = old + new
    removed = 0
    if dedupe:
        final, removed = dedupe_examples(final)
    if not final:
        raise InvalidRequest(
            f"a version of dataset `{name}` needs at least one example; none were given",
            param="examples",
        )
    hash_ = content_hash(final)
    existing = q.version_by_hash(conn, dataset_id, hash_)
    if existing is not None:
        return WriteResult(_version_info(name, existing), created=False, duplicates_removed=removed)
    version = q.next_version_number(conn, dataset_id)
    version_id = q.insert_version(
        conn,
        dataset_id=dataset_id,
        version=version,
        hash_=hash_,
        n_examples=len(final),
        source=source,
        created_at=now,
        created_by=actor,
        message=message,
    )
    step = q.INSERT_BATCH * 10
    for start in range(0, len(final), step):
        q.insert_examples(conn, version_id, final[start : start + step], first_idx=start)
        if progress is not None:
            progress("write", min(start + step, len(final)), len(final))
    info = VersionInfo(
        dataset=name,
        version=version,
        hash=hash_,
        n_examples=len(final),
        source=source,
        created_at=now,
        created_by=actor,
        message=message,
    )
    return WriteResult(info, created=True, dataset_created=dataset_created, duplicates_removed=removed)
