"""Alert episodes and the feedback aggregates alert rules read.

One ``alert_events`` row per firing episode of a fingerprint (a rule and its labels): inserted when
it starts firing, updated when it resolves. The store is the single source of truth for "is this
firing", so that a restarted server, or several workers sharing Postgres, never notify twice: only
the caller that creates an episode (or resolves it, or moves its ``updated_at`` for a repeat) sends
the notification.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from shipyard.store.db import Store
from shipyard.store.scores import MAX_PERCENTILE_VALUES, quantile
from shipyard.store.tables import alert_events, feedback, traces


@dataclass(frozen=True, slots=True)
class Episode:
    id: int
    rule: str
    fingerprint: str
    state: str
    started_at: float
    updated_at: float
    resolved_at: float | None


def _episode(row: Any) -> Episode:
    return Episode(
        row.id, row.rule, row.fingerprint, row.state, row.started_at, row.updated_at, row.resolved_at
    )


def _lock(conn: sa.Connection, fingerprint: str) -> None:
    """Serialize writers of one fingerprint. SQLite's BEGIN IMMEDIATE (``store.write``) already
    does; on Postgres two workers could both see "no open episode" without this lock."""
    if conn.dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(fingerprint.encode()).digest()[:8], "big", signed=True)
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def open_episode(
    store: Store,
    *,
    rule: str,
    fingerprint: str,
    severity: str,
    labels: dict[str, str],
    value: float | None,
    threshold: float,
    message: str,
    now: float,
) -> tuple[Episode, bool]:
    """The open episode of ``fingerprint``, created now unless one exists; True when created."""
    c = alert_events.c
    with store.write() as conn:
        _lock(conn, fingerprint)
        row = conn.execute(
            sa.select(alert_events)
            .where(c.fingerprint == fingerprint, c.resolved_at.is_(None))
            .order_by(c.started_at.desc())
            .limit(1)
        ).first()
        if row is not None:
            return _episode(row), False
        inserted = conn.execute(
            alert_events.insert().values(
                rule=rule,
                fingerprint=fingerprint,
                state="firing",
                severity=severity,
                labels=labels,
                value=value,
                threshold=threshold,
                message=message,
                started_at=now,
                updated_at=now,
                deliveries=[],
            )
        ).inserted_primary_key
    assert inserted is not None
    return Episode(int(inserted[0]), rule, fingerprint, "firing", now, now, None), True


def resolve_episode(store: Store, episode_id: int, *, value: float | None, message: str, now: float) -> bool:
    """Mark the episode resolved; False when someone else already did."""
    c = alert_events.c
    with store.engine.begin() as conn:
        result = conn.execute(
            alert_events.update()
            .where(c.id == episode_id, c.resolved_at.is_(None))
            .values(state="resolved", resolved_at=now, updated_at=now, value=value, message=message)
        )
    return result.rowcount == 1


def claim_repeat(store: Store, episode_id: int, last: float, now: float) -> bool:
    """Move an open episode's ``updated_at`` from ``last`` to ``now``: True for the one caller that
    gets to send the repeat notification."""
    c = alert_events.c
    with store.engine.begin() as conn:
        result = conn.execute(
            alert_events.update()
            .where(c.id == episode_id, c.resolved_at.is_(None), c.updated_at == last)
            .values(updated_at=now)
        )
    return result.rowcount == 1


def add_deliveries(store: Store, episode_id: int, records: Sequence[dict[str, Any]]) -> None:
    with store.write() as conn:
        current = conn.execute(
            sa.select(alert_events.c.deliveries).where(alert_events.c.id == episode_id)
        ).scalar()
        merged = [*(current or []), *records]
        conn.execute(alert_events.update().where(alert_events.c.id == episode_id).values(deliveries=merged))


def open_episodes(store: Store) -> list[Episode]:
    c = alert_events.c
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(alert_events).where(c.resolved_at.is_(None)).order_by(c.started_at))
        return [_episode(r) for r in rows]


def latest_by_fingerprint(store: Store, fingerprints: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The newest episode of each fingerprint that has one."""
    if not fingerprints:
        return {}
    c = alert_events.c
    newest = (
        sa.select(c.fingerprint, sa.func.max(c.id).label("id"))
        .where(c.fingerprint.in_(list(fingerprints)))
        .group_by(c.fingerprint)
        .subquery()
    )
    q = sa.select(alert_events).join(newest, newest.c.id == c.id)
    with store.engine.connect() as conn:
        return {r.fingerprint: r._asdict() for r in conn.execute(q)}


def list_events(
    store: Store,
    limit: int = 50,
    *,
    rule: str | None = None,
    state: str | None = None,
    before: tuple[float, int] | None = None,
) -> list[dict[str, Any]]:
    """Episodes, newest first; ``before`` (an episode's ``started_at`` and ``id``) pages further back."""
    c = alert_events.c
    q = sa.select(alert_events)
    if rule is not None:
        q = q.where(c.rule == rule)
    if state is not None:
        q = q.where(c.state == state)
    if before is not None:
        started, id_ = before
        # The first conjunct alone is what ix_alert_events_started ranges over; the second settles ties.
        q = q.where(c.started_at <= started, sa.or_(c.started_at < started, c.id < id_))
    q = q.order_by(c.started_at.desc(), c.id.desc()).limit(limit)
    with store.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(q)]


def feedback_aggregate(
    store: Store, name: str, since: float, until: float, aggregation: str = "avg", route: str | None = None
) -> float | None:
    """One number over the feedback named ``name`` given in [since, until), optionally only on
    traces of ``route``; None when there is none (``count`` answers 0)."""
    f = feedback.c
    cond: list[Any] = [f.name == name, f.created_at >= since, f.created_at < until]
    source: Any = feedback
    if route is not None:
        # Feedback in a window is few rows; each finds its trace by primary key.
        source = feedback.join(traces, traces.c.trace_id == f.trace_id)
        cond.append(traces.c.route == route)
    with store.engine.connect() as conn:
        if aggregation in ("p50", "p95"):
            rows = conn.execute(
                sa.select(f.score)
                .select_from(source)
                .where(*cond)
                .order_by(f.created_at.desc())
                .limit(MAX_PERCENTILE_VALUES)
            )
            return quantile([float(r[0]) for r in rows], 0.5 if aggregation == "p50" else 0.95)
        if aggregation == "count":
            return float(
                conn.execute(sa.select(sa.func.count()).select_from(source).where(*cond)).scalar() or 0
            )
        func: Any = {"avg": sa.func.avg, "min": sa.func.min, "max": sa.func.max}.get(aggregation)
        if func is None:
            raise ValueError(f"aggregation `{aggregation}` does not apply to feedback")
        value = conn.execute(sa.select(func(f.score)).select_from(source).where(*cond)).scalar()
    return None if value is None else float(value)
