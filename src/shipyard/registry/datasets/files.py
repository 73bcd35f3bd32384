"""Datasets in and out of files: JSONL, CSV and YAML parsed into examples (errors name the file
line and the field), imported as a version, and a version exported as JSONL that imports back to the
same hash.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import yaml

from shipyard.errors import InvalidRequest
from shipyard.registry.datasets.examples import check_example, kind_of, locate_at, public_fields
from shipyard.registry.datasets.service import (
    Progress,
    VersionInfo,
    WriteResult,
    check_name,
    create_version,
    resolve_version_id,
)
from shipyard.store import datasets as q
from shipyard.store.db import Store

FORMATS = ("jsonl", "csv", "yaml")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".yaml": "yaml", ".yml": "yaml"}


# -- import -----------------------------------------------------------------------------------------
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
        out.append(check_example(raw, locate_at(label)))
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
        out.append(check_example(example, locate_at(label)))
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
        raise InvalidRequest(f"{filename} line {line}: {shape.split(': ', 1)[1]}; got {kind_of(data)}")
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

        out.append(check_example(item, where))
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


# -- export -----------------------------------------------------------------------------------------
def export_jsonl(store: Store, ref: str) -> tuple[VersionInfo, Iterator[bytes]]:
    """The version and its examples as JSONL lines (``input``, ``expected``, ``metadata``, ``tags``).

    The lines are produced lazily, so a large version streams instead of sitting in memory.
    Importing the output gives a version with the same hash.
    """
    info, version_id = resolve_version_id(store, ref)

    def lines() -> Iterator[bytes]:
        for row in q.iter_examples(store, version_id):
            yield orjson.dumps(public_fields(row)) + b"\n"

    return info, lines()
