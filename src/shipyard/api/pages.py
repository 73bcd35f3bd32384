"""The admin API's one list envelope: ``{"data": [...], "next": "<cursor>" | null}``.

Every list endpoint takes ``limit`` (with a documented default and maximum) and ``cursor``, the
``next`` of the page before, sent back with the same filters. A cursor is the position after the
page's last item (a time and an id, an id, a name, an index), as base64url-encoded JSON: opaque to
clients, so that a list can change how it keeps its place without breaking them. It names its list
and every element is type-checked before it reaches a query, so a cursor that was edited, cut short
or made for another list is a 400 naming ``cursor``, never a 500 or a wrong page.

The big tables page by keyset on indexed columns: a page costs the same however deep it is, and
rows written meanwhile do not shift the pages (with an offset, an insert shows an item twice or
skips one). The small lists that are read whole (registry entities, datasets, alert rules) page by
name or number.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel, Field

from shipyard.errors import InvalidRequest

T = TypeVar("T")

# Larger numbers do not fit the store's integers (SQLite INTEGER, PostgreSQL BIGINT).
BIGINT = 2**63 - 1
# Far more than any position needs (the longest is a name and a 64-character fingerprint).
MAX_CURSOR_CHARS = 1024
_MAX_TEXT = 512

Position = tuple[Any, ...]


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    data: list[T]
    next: str | None = Field(
        description="Where the next page starts: send it back as `cursor` (with the same filters). "
        "Null on the last page. A page may hold fewer than `limit` items while `next` is set."
    )


def limit_query(default: int, most: int) -> Any:
    return Query(default, ge=1, le=most, description=f"Items per page: 1 to {most}, default {default}.")


def cursor_query() -> Any:
    return Query(
        None,
        max_length=MAX_CURSOR_CHARS,
        description="The `next` of the previous page, to continue the list (with the same filters); "
        "empty or left out: the first page.",
    )


def encode(kind: str, position: Position) -> str:
    raw = orjson.dumps([kind, *position])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(cursor: str | None, kind: str, shape: Sequence[type]) -> Position | None:
    """The position a cursor of list ``kind`` holds, each element of the type ``shape`` names
    (``float`` accepts a whole number too); None without a cursor."""
    if not cursor:
        return None
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        value = orjson.loads(raw)
    except (binascii.Error, ValueError):  # orjson.JSONDecodeError is a ValueError
        value = None
    if (
        not isinstance(value, list)
        or len(value) != len(shape) + 1
        or value[0] != kind
        or not all(_fits(v, t) for v, t in zip(value[1:], shape, strict=True))
    ):
        raise not_a_cursor(kind)
    return tuple(float(v) if t is float else v for v, t in zip(value[1:], shape, strict=True))


def index(cursor: str | None, kind: str) -> int:
    """Where a list that pages by position (an append-only list, a file's lines) continues: 0
    without a cursor."""
    position = decode(cursor, kind, (int,))
    if position is None:
        return 0
    if position[0] < 0:
        raise not_a_cursor(kind)
    return int(position[0])


def not_a_cursor(kind: str) -> InvalidRequest:
    """The 400 for a cursor that is not a position in list ``kind``."""
    return InvalidRequest(
        f"`cursor` is not a position in this list ({kind}); send the `next` of a page of the same "
        "list unchanged, or leave `cursor` out to start at the beginning",
        param="cursor",
    )


def _fits(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int) and -BIGINT <= value <= BIGINT
    if kind is float:
        return isinstance(value, int | float) and math.isfinite(value)
    if kind is str:
        return isinstance(value, str) and len(value) <= _MAX_TEXT
    raise TypeError(f"no cursor element of type {kind}")


def page(items: Sequence[T], limit: int, kind: str, position: Callable[[T], Position]) -> dict[str, Any]:
    """The envelope for ``items`` fetched with ``limit + 1``: the extra one says there is more."""
    shown = list(items[:limit])
    more = len(items) > limit
    return {"data": shown, "next": encode(kind, position(shown[-1])) if more else None}


def page_after(
    items: Sequence[T], key: Callable[[T], Position], after: Position | None, limit: int, kind: str
) -> dict[str, Any]:
    """A page of a small list that is read whole (registry entities, alert rules): the items after
    ``after`` in ``key`` order."""
    ordered = sorted(items, key=key)
    rest = [i for i in ordered if after is None or key(i) > after]
    return page(rest[: limit + 1], limit, kind, key)
