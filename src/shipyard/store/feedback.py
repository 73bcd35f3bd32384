"""User feedback on traces: thumbs up/down or a score from 0 to 1, with an optional comment.

A feedback row is *positive* when its score is at least 0.5 (a thumbs up is 1, a thumbs down 0);
a trace "has positive feedback" when any of its rows is positive, so a trace rated both ways
matches both filters. The same conditions filter the trace list and pick traces for datasets.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa

from shipyard.errors import InvalidRequest, NotFound
from shipyard.store.db import Store
from shipyard.store.tables import feedback, traces

POSITIVE_AT = 0.5
FILTERS = ("positive", "negative", "any", "none")
MAX_NAME = 64
MAX_COMMENT = 10_000
MAX_USER_ID = 256

_SCORE_HELP = (
    '`score` must be "up" or "down", true or false, or a number from 0 to 1 '
    "(rescale other scales: 4 of 5 stars is 0.8)"
)


def parse_score(value: Any) -> tuple[str, float]:
    """``(kind, score)`` from what a client sent: thumbs → ("thumbs", 1.0 | 0.0), a number in
    [0, 1] → ("numeric", value). Raises InvalidRequest naming the field otherwise."""
    if isinstance(value, bool):
        return "thumbs", 1.0 if value else 0.0
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("up", "thumbs_up", "+1"):
            return "thumbs", 1.0
        if word in ("down", "thumbs_down", "-1"):
            return "thumbs", 0.0
        raise InvalidRequest(f"{_SCORE_HELP}; got the string {value!r}", param="score")
    if isinstance(value, int | float):
        f = float(value)
        if not math.isfinite(f) or not 0.0 <= f <= 1.0:
            raise InvalidRequest(f"{_SCORE_HELP}; got {value!r}", param="score")
        return "numeric", f
    got = "nothing" if value is None else type(value).__name__
    raise InvalidRequest(f"{_SCORE_HELP}; got {got}", param="score")


def _text(value: Any, field: str, limit: int, *, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise InvalidRequest(f"`{field}` is required", param=field)
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"`{field}` must be a string; got {type(value).__name__}", param=field)
    text = value.strip()
    if not text:
        if required:
            raise InvalidRequest(f"`{field}` must not be empty", param=field)
        return None
    if len(text) > limit:
        raise InvalidRequest(f"`{field}` is {len(text)} characters; at most {limit} fit", param=field)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"`{field}` holds a lone surrogate (like \\ud800), which is not text; send valid UTF-8",
            param=field,
        ) from None
    return text


def _exists(conn: sa.Connection, trace_id: str) -> bool:
    q = sa.select(traces.c.trace_id).where(traces.c.trace_id == trace_id)
    return conn.execute(q).first() is not None


def add_feedback(
    store: Store,
    trace_id: Any,
    score: Any,
    *,
    name: Any = "user",
    comment: Any = None,
    user_id: Any = None,
    wait_for_trace: Callable[[], Any] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Store one feedback row and return it.

    ``wait_for_trace`` is called once when the trace is not in the store yet (the batch writer
    may still hold it: a client can rate an answer the moment it arrives) before giving up with
    NotFound.
    """
    tid = _text(trace_id, "trace_id", 32, required=True)
    assert tid is not None
    kind, value = parse_score(score)
    row = {
        "trace_id": tid,
        "name": _text(name, "name", MAX_NAME) or "user",
        "kind": kind,
        "score": value,
        "comment": _text(comment, "comment", MAX_COMMENT),
        "user_id": _text(user_id, "user_id", MAX_USER_ID),
        "created_at": time.time() if now is None else now,
    }
    with store.engine.connect() as conn:
        found = _exists(conn, tid)
    if not found and wait_for_trace is not None:
        wait_for_trace()
        with store.engine.connect() as conn:
            found = _exists(conn, tid)
    if not found:
        raise NotFound(
            f"trace `{tid}` does not exist; use the full id from the x-shipyard-trace-id response "
            "header or GET /api/traces",
            param="trace_id",
        )
    with store.write() as conn:
        key = conn.execute(feedback.insert().values(**row)).inserted_primary_key
    assert key is not None
    return {"id": int(key[0]), **row}


def list_feedback(
    store: Store,
    trace_id: str | None = None,
    *,
    limit: int = 50,
    before_id: int | None = None,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first; ``before_id`` pages further back."""
    q = sa.select(feedback)
    if trace_id is not None:
        q = q.where(feedback.c.trace_id == trace_id)
    if name is not None:
        q = q.where(feedback.c.name == name)
    if before_id is not None:
        q = q.where(feedback.c.id < before_id)
    q = q.order_by(feedback.c.id.desc()).limit(limit)
    with store.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(q)]


def summaries(store: Store, trace_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per trace: ``{"n", "positive", "negative", "avg", "comments"}`` (only traces with feedback)."""
    ids = list(dict.fromkeys(trace_ids))
    if not ids:
        return {}
    positive = sa.case((feedback.c.score >= POSITIVE_AT, 1), else_=0)
    has_comment = sa.case((feedback.c.comment.is_not(None), 1), else_=0)
    q = (
        sa.select(
            feedback.c.trace_id,
            sa.func.count(),
            sa.func.sum(positive),
            sa.func.avg(feedback.c.score),
            sa.func.sum(has_comment),
        )
        .where(feedback.c.trace_id.in_(ids))
        .group_by(feedback.c.trace_id)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
    return {
        r[0]: {
            "n": int(r[1]),
            "positive": int(r[2] or 0),
            "negative": int(r[1]) - int(r[2] or 0),
            "avg": float(r[3]) if r[3] is not None else None,
            "comments": int(r[4] or 0),
        }
        for r in rows
    }


def check_filter(value: str | None, field: str = "feedback") -> str | None:
    if value is None or value == "":
        return None
    if value not in FILTERS:
        raise InvalidRequest(f"`{field}` must be one of {', '.join(FILTERS)}; got `{value}`", param=field)
    return value


def trace_condition(kind: str, trace_id: Any = None) -> Any:
    """A WHERE condition on ``traces`` (or on the column ``trace_id``) selecting traces with
    positive / negative / any / no feedback. Probes ``ix_feedback_trace`` once per trace."""
    col = traces.c.trace_id if trace_id is None else trace_id
    match = sa.select(sa.literal(1)).select_from(feedback).where(feedback.c.trace_id == col)
    if kind == "positive":
        return match.where(feedback.c.score >= POSITIVE_AT).exists()
    if kind == "negative":
        return match.where(feedback.c.score < POSITIVE_AT).exists()
    if kind == "any":
        return match.exists()
    if kind == "none":
        return ~match.exists()
    raise InvalidRequest(f"`feedback` must be one of {', '.join(FILTERS)}; got `{kind}`", param="feedback")
