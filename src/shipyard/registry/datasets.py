"""Versioned datasets: the service layer behind ``shipyard datasets`` and ``/api/datasets``.

A dataset is a name; its content lives in immutable, numbered versions. A version is
content-addressed: its hash is the sha256 of its examples in canonical JSON, in order, so writing
the same examples again returns the existing version instead of a copy, and an export imported
elsewhere has the same hash.

An example is ``input`` (an object of template variables, or a list of chat messages), an optional
``expected`` (any JSON), ``metadata`` (an object) and ``tags`` (strings). Every way in — the API,
JSONL / CSV / YAML files, traces — goes through the same validation, and every error says where
(example index, file line) and which field, so the user can fix the input without guessing.

Each version is written in one transaction together with its examples (and the dataset row when
an import or a from-traces run creates it): on any error, nothing is written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
import yaml

from shipyard.config import schema
from shipyard.errors import Conflict, InvalidRequest, NotFound, StoreError
from shipyard.guard import pii
from shipyard.store import datasets as q
from shipyard.store.datasets import TraceSelection
from shipyard.store.db import Store
from shipyard.store.feedback import check_filter as check_feedback_filter

__all__ = [
    "FORMATS",
    "DatasetInfo",
    "Example",
    "ExamplesPage",
    "TraceSelection",
    "VersionInfo",
    "WriteResult",
    "content_hash",
    "create_dataset",
    "create_version",
    "dedupe_examples",
    "export_jsonl",
    "format_for_path",
    "from_traces",
    "get_dataset",
    "get_examples",
    "import_examples",
    "list_datasets",
    "list_versions",
    "parse_examples",
    "parse_ref",
    "resolve",
    "validate_examples",
]

EXAMPLE_KEYS = ("input", "expected", "metadata", "tags")
FORMATS = ("jsonl", "csv", "yaml")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".yaml": "yaml", ".yml": "yaml"}
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


# -- reading ----------------------------------------------------------------------------------------
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


def export_jsonl(store: Store, ref: str) -> tuple[VersionInfo, Iterator[bytes]]:
    """The version and its examples as JSONL lines (``input``, ``expected``, ``metadata``, ``tags``).

    The lines are produced lazily, so a large version streams instead of sitting in memory.
    Importing the output gives a version with the same hash.
    """
    info, version_id = resolve_version_id(store, ref)

    def lines() -> Iterator[bytes]:
        for row in q.iter_examples(store, version_id):
            yield orjson.dumps(_public(row)) + b"\n"

    return info, lines()


def _public(ex: dict[str, Any]) -> dict[str, Any]:
    return {
        "input": ex["input"],
        "expected": ex.get("expected"),
        "metadata": ex.get("metadata") or {},
        "tags": ex.get("tags") or [],
    }


# -- validation, hashing, dedupe --------------------------------------------------------------------
# Says where an example came from, for error messages: given the field at fault (or None for the
# example as a whole) it returns e.g. "examples[3]" or "data.yaml line 12".
Locate = Callable[[str | None], str]

_KIND = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
}


def _at(label: str) -> Locate:
    """A locator for sources that know only the example's position, not each field's."""

    def locate(_field: str | None) -> str:
        return label

    return locate


def _kind(value: Any) -> str:
    return "null" if value is None else _KIND.get(type(value), type(value).__name__)


def _check_messages(messages: list[Any], where: Locate, param: str | None) -> None:
    if not messages:
        raise InvalidRequest(
            f"{where('input')}: `input` is an empty list; a list of chat messages needs at least one "
            'message like {"role": "user", "content": "…"}',
            param=param and f"{param}.input",
        )
    for j, m in enumerate(messages):
        at = f"input[{j}]"
        p = param and f"{param}.{at}"
        if not isinstance(m, dict):
            raise InvalidRequest(
                f'{where("input")}: `{at}` must be a message object like {{"role": "user", "content": "…"}}; '
                f"got {_kind(m)}",
                param=p,
            )
        role = m.get("role")
        if not isinstance(role, str) or not role:
            raise InvalidRequest(
                f"{where('input')}: `{at}.role` is required: a string such as system, user or assistant",
                param=p and f"{p}.role",
            )
        if "content" not in m:
            raise InvalidRequest(f"{where('input')}: `{at}.content` is required", param=p and f"{p}.content")
        content = m["content"]
        tool_call = content is None and ("tool_calls" in m or "function_call" in m)
        if not (isinstance(content, str | list) or tool_call):
            raise InvalidRequest(
                f"{where('input')}: `{at}.content` must be a string or a list of content parts; "
                f"got {_kind(content)}",
                param=p and f"{p}.content",
            )


def _check_example(raw: Any, where: Locate, param: str | None = None) -> dict[str, Any]:
    """One example, validated and normalized (metadata → object, tags → list, JSON-only values)."""
    if not isinstance(raw, dict):
        raise InvalidRequest(
            f"{where(None)}: an example must be an object with `input` (and optionally `expected`, "
            f"`metadata`, `tags`); got {_kind(raw)}",
            param=param,
        )
    unknown = [k for k in raw if k not in EXAMPLE_KEYS]
    if unknown:
        raise InvalidRequest(
            f"{where(str(unknown[0]))}: unknown key `{unknown[0]}`; an example has only "
            + ", ".join(f"`{k}`" for k in EXAMPLE_KEYS)
            + " (put anything else under `metadata`)",
            param=param and f"{param}.{unknown[0]}",
        )
    inp = raw.get("input")
    if inp is None:
        raise InvalidRequest(
            f"{where('input')}: `input` is required: an object of template variables "
            '(e.g. {"question": "…"}) or a list of chat messages',
            param=param and f"{param}.input",
        )
    if isinstance(inp, list):
        _check_messages(inp, where, param)
    elif not isinstance(inp, dict):
        raise InvalidRequest(
            f"{where('input')}: `input` must be an object of template variables "
            f'(e.g. {{"question": "…"}}) or a list of chat messages; got {_kind(inp)}',
            param=param and f"{param}.input",
        )
    metadata = raw.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequest(
            f"{where('metadata')}: `metadata` must be an object; got {_kind(metadata)}",
            param=param and f"{param}.metadata",
        )
    tags = raw.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise InvalidRequest(
            f'{where("tags")}: `tags` must be a list of strings, e.g. ["refund", "hard"]',
            param=param and f"{param}.tags",
        )
    example = {"input": inp, "expected": raw.get("expected"), "metadata": metadata or {}, "tags": tags or []}
    try:
        # Through JSON and back: what is hashed is exactly what the store will hand back (YAML dates
        # become ISO strings, tuples lists), and non-JSON values are caught here with a location.
        normalized: dict[str, Any] = orjson.loads(orjson.dumps(example))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidRequest(f"{where(None)}: not representable as JSON: {exc}", param=param) from None
    return normalized


def validate_examples(raw: Any, param: str = "examples") -> list[dict[str, Any]]:
    """Examples sent as JSON (API, Python): errors name ``examples[i]`` and the field."""
    if not isinstance(raw, list):
        raise InvalidRequest(f"`{param}` must be a list of examples; got {_kind(raw)}", param=param)
    out = []
    for i, ex in enumerate(raw):
        label = f"{param}[{i}]"
        out.append(_check_example(ex, _at(label), label))
    return out


def _integral_floats_as_ints(value: Any) -> Any:
    # JSON has one number type, and stores disagree on 1.0 vs 1 (SQLite hands a bare 1.0 back as
    # 1, Postgres keeps 1.0), so the canonical form writes integral numbers without a fraction,
    # as RFC 8785 (JSON canonicalization) does.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    return value


def _canonical(value: Any) -> bytes:
    return orjson.dumps(_integral_floats_as_ints(value), option=orjson.OPT_SORT_KEYS)


def content_hash(examples: Sequence[dict[str, Any]]) -> str:
    """sha256 over the examples in order, each as canonical JSON (sorted keys) on its own line."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(_canonical(_public(ex)))
        h.update(b"\n")
    return h.hexdigest()


def dedupe_examples(examples: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Drop examples whose (input, expected) was seen before; keep the first. Returns (kept, removed)."""
    seen: set[bytes] = set()
    kept = []
    for ex in examples:
        key = _canonical([ex["input"], ex.get("expected")])
        if key in seen:
            continue
        seen.add(key)
        kept.append(ex)
    return kept, len(examples) - len(kept)


def _lineage_trace_id(example: dict[str, Any]) -> str | None:
    # An exported example built from a trace carries its trace id in metadata; re-importing it
    # keeps the lineage column filled.
    tid = (example.get("metadata") or {}).get("trace_id")
    return tid if isinstance(tid, str) and 0 < len(tid) <= 32 else None


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
        ex.setdefault("trace_id", _lineage_trace_id(ex))
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


# -- files ------------------------------------------------------------------------------------------
def format_for_path(path: str | Path) -> str:
    """The import format a file name implies (``.jsonl``/``.ndjson``, ``.csv``, ``.yaml``/``.yml``)."""
    suffix = Path(path).suffix.lower()
    fmt = _EXTENSIONS.get(suffix)
    if fmt is None:
        raise InvalidRequest(
            f"cannot tell the format of `{Path(path).name}` from its extension; pass --format "
            f"({', '.join(FORMATS)})",
            param="format",
        )
    return fmt


def parse_examples(
    text: str, fmt: str, filename: str = "input", progress: Progress | None = None
) -> list[dict[str, Any]]:
    """Parse and validate a JSONL, CSV or YAML document; errors name the file line and the field."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if fmt == "jsonl":
        return _parse_jsonl(text, filename, progress)
    if fmt == "csv":
        return _parse_csv(text, filename, progress)
    if fmt == "yaml":
        return _parse_yaml(text, filename)
    raise InvalidRequest(f"unknown format `{fmt}`; use one of {', '.join(FORMATS)}", param="format")


def _parse_jsonl(text: str, filename: str, progress: Progress | None) -> list[dict[str, Any]]:
    # Split on "\n" only: str.splitlines() would also split inside strings at U+2028 and friends,
    # which JSON allows unescaped.
    lines = text.split("\n")
    out = []
    for n, line in enumerate(lines, 1):
        if progress is not None and n % 5000 == 0:
            progress("parse", n, len(lines))
        if not line.strip():
            continue
        try:
            raw = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(
                f"{filename} line {n}: not valid JSON ({exc}); each line must be one JSON object"
            ) from None
        label = f"{filename} line {n}"
        out.append(_check_example(raw, _at(label)))
    if progress is not None:
        progress("parse", len(lines), len(lines))
    return out


def _split_tags(cell: str) -> list[str]:
    return [t.strip() for t in re.split(r"[;,]", cell) if t.strip()]


def _parse_csv(text: str, filename: str, progress: Progress | None) -> list[dict[str, Any]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidRequest(f"{filename}: the file is empty; the first row must name the columns") from None
    except csv.Error as exc:
        raise InvalidRequest(f"{filename} line 1: {exc}") from None
    header = [h.strip() for h in header]
    for i, h in enumerate(header):
        if not h:
            raise InvalidRequest(
                f"{filename} line 1: column {i + 1} has no name; every column needs a header"
            )
        if h == "metadata.":
            raise InvalidRequest(f"{filename} line 1: column `metadata.` needs a key, e.g. `metadata.source`")
        if header.index(h) != i:
            raise InvalidRequest(
                f"{filename} line 1: column `{h}` appears twice; column names must be unique"
            )
    inputs = [h for h in header if h not in ("expected", "tags") and not h.startswith("metadata.")]
    if not inputs:
        raise InvalidRequest(
            f"{filename} line 1: no input columns; every column except `expected`, `tags` and "
            "`metadata.*` becomes an input variable, so add at least one (e.g. `question`)"
        )
    out: list[dict[str, Any]] = []
    line = reader.line_num
    total_lines = text.count("\n") + 1
    while True:
        start = line + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InvalidRequest(f"{filename} line {start}: {exc}") from None
        line = reader.line_num
        if progress is not None and len(out) % 5000 == 4999:
            progress("parse", line, total_lines)
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InvalidRequest(
                f"{filename} line {start}: {len(row)} field(s), but the header has {len(header)}; "
                "quote values that contain commas or line breaks"
            )
        example: dict[str, Any] = {"input": {}, "metadata": {}}
        for col, cell in zip(header, row, strict=True):
            if col == "expected":
                example["expected"] = cell if cell != "" else None
            elif col == "tags":
                example["tags"] = _split_tags(cell)
            elif col.startswith("metadata."):
                if cell != "":
                    example["metadata"][col.removeprefix("metadata.")] = cell
            else:
                example["input"][col] = cell
        label = f"{filename} line {start}"
        out.append(_check_example(example, _at(label)))
    if progress is not None:
        progress("parse", total_lines, total_lines)
    return out


def _parse_yaml(text: str, filename: str) -> list[dict[str, Any]]:
    try:
        # The reader checks the characters as it is built: a control character fails here.
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{filename}: not valid YAML: {exc}") from None
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"{filename} line {mark.line + 1}" if mark is not None else filename
        raise InvalidRequest(f"{at}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{filename}: not valid YAML: {exc}") from None
    except ValueError as exc:  # a scalar the constructor cannot turn into a value (a 5,000-digit int)
        raise InvalidRequest(f"{filename}: a value cannot be read: {exc}") from None
    finally:
        loader.dispose()
    shape = f"{filename}: expected a list of examples, or a mapping with `examples:` holding that list"
    if node is None or data is None:
        raise InvalidRequest(f"{shape}; the file is empty")
    items_node: yaml.Node = node
    if isinstance(data, dict):
        assert isinstance(node, yaml.MappingNode)
        for key_node, value_node in node.value:
            if key_node.value != "examples":
                raise InvalidRequest(
                    f"{filename} line {key_node.start_mark.line + 1}: unknown key `{key_node.value}`; "
                    "the top level holds only `examples:`"
                )
            items_node = value_node
        if "examples" not in data:
            raise InvalidRequest(f"{shape}; `examples:` is missing")
        data = data["examples"]
    if not isinstance(data, list) or not isinstance(items_node, yaml.SequenceNode):
        line = items_node.start_mark.line + 1
        raise InvalidRequest(f"{filename} line {line}: {shape.split(': ', 1)[1]}; got {_kind(data)}")
    out = []
    for i, (item, item_node) in enumerate(zip(data, items_node.value, strict=True)):
        item_line = item_node.start_mark.line + 1
        field_lines: dict[str, int] = {}
        if isinstance(item_node, yaml.MappingNode):
            field_lines = {str(k.value): k.start_mark.line + 1 for k, _v in item_node.value}

        def where(
            fld: str | None, i: int = i, item_line: int = item_line, lines: dict[str, int] = field_lines
        ) -> str:
            line = lines.get(fld, item_line) if fld else item_line
            return f"{filename} line {line} (example {i + 1})"

        out.append(_check_example(item, where))
    return out


def import_examples(
    store: Store,
    name: str,
    text: str,
    fmt: str,
    *,
    path: str | None = None,
    dedupe: bool = False,
    append: bool = False,
    message: str | None = None,
    actor: str | None = None,
    progress: Progress | None = None,
) -> WriteResult:
    """A version of ``name`` from a JSONL, CSV or YAML document (the dataset is created if needed)."""
    check_name(name)
    if fmt not in FORMATS:
        raise InvalidRequest(f"unknown format `{fmt}`; use one of {', '.join(FORMATS)}", param="format")
    filename = Path(path).name if path else "body"
    examples = parse_examples(text, fmt, filename, progress)
    if not examples:
        raise InvalidRequest(f"{filename}: no examples found; the file has no data rows")
    source: dict[str, Any] = (
        {"type": "file", "format": fmt, "path": path} if path else {"type": "upload", "format": fmt}
    )
    if dedupe:
        source["dedupe"] = True
    return create_version(
        store,
        name,
        examples,
        message=message,
        dedupe=dedupe,
        append=append,
        source=source,
        actor=actor,
        create_missing=True,
        progress=progress,
        validated=True,
    )


# -- traces -----------------------------------------------------------------------------------------
def _trace_input(row: dict[str, Any]) -> Any:
    """What a trace contributes as ``input``: its template variables when a prompt rendered it,
    else its chat messages, else its completion prompt as ``{"prompt": …}``; None when not captured."""
    variables = (row.get("attributes") or {}).get("shipyard.variables")
    if isinstance(variables, dict):
        return variables
    value = row.get("input")
    if value is None:
        return None
    if row.get("operation") == "chat":
        return value
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return {"prompt": value}


def from_traces(
    store: Store,
    name: str,
    selection: TraceSelection,
    *,
    expected_from_output: bool = True,
    scrub_pii: bool = False,
    dedupe: bool = False,
    message: str | None = None,
    actor: str | None = None,
) -> WriteResult:
    """A version of ``name`` from stored traces (the dataset is created if needed).

    Each example keeps its trace id and gets metadata ``trace_id``, ``route``, ``model``,
    ``prompt``, ``prompt_version``; the trace's answer becomes ``expected`` unless
    ``expected_from_output`` is off. ``scrub_pii`` replaces e-mail addresses, phone numbers, card
    numbers and IBANs in input and expected with typed markers before anything is stored.
    """
    check_name(name)
    if selection.status is not None and selection.status not in ("ok", "error"):
        raise InvalidRequest(f"`status` must be `ok` or `error`; got `{selection.status}`", param="status")
    if selection.limit is not None and selection.limit < 1:
        raise InvalidRequest(f"`limit` must be >= 1; got {selection.limit}", param="limit")
    if selection.feedback is not None:
        check_feedback_filter(selection.feedback)
    filters = {k: v for k, v in asdict(selection).items() if v is not None}
    rows = q.select_traces(store, selection)
    examples = []
    skipped = 0
    for r in rows:
        inp = _trace_input(r)
        expected = r["output"] if expected_from_output else None
        if scrub_pii:
            inp, expected = pii.scrub(inp), pii.scrub(expected)
        raw = {
            "input": inp,
            "expected": expected,
            "metadata": {
                "trace_id": r["trace_id"],
                "route": r["route"],
                "model": r["model"],
                "prompt": r["prompt"],
                "prompt_version": r["prompt_version"],
            },
            "tags": [t for t in (r["tags"] or []) if isinstance(t, str)],
        }
        try:
            example = _check_example(raw, _at(f"trace {r['trace_id']}"))
        except InvalidRequest:
            # Not captured (capture_messages=none) or not a usable shape: not an example.
            skipped += 1
            continue
        example["trace_id"] = r["trace_id"]
        examples.append(example)
    if not examples:
        shown = ", ".join(f"{k}={v}" for k, v in filters.items()) or "none"
        why = f"; {skipped} matched but had no captured input (setting `capture_messages`)" if skipped else ""
        raise InvalidRequest(
            f"no chat or completion traces match the filters ({shown}){why}; "
            "`shipyard traces list` shows what is stored",
            param="filters",
            code="no_matching_traces",
        )
    source = {
        "type": "traces",
        "filters": filters,
        "matched": len(rows),
        "expected_from_output": expected_from_output,
        "scrub_pii": scrub_pii,
        "dedupe": dedupe,
    }
    result = create_version(
        store,
        name,
        examples,
        message=message,
        dedupe=dedupe,
        source=source,
        actor=actor,
        create_missing=True,
        validated=True,
    )
    result.skipped = skipped
    return result
