"""Alert rules: measure, compare, move through inactive → pending → firing → resolved, notify.

:class:`AlertEngine` is synchronous (it reads the store) and runs in a worker thread; it returns
the notifications to send, which :class:`Notifier` delivers on the event loop (webhooks with
timeout and retries, the ``shipyard.alerts`` logger). Deduplication lives in the store (see
``store/alerts.py``): one ``alert_events`` row per firing episode of a fingerprint, and only the
evaluation that creates or resolves that row notifies. A restart adopts the open episodes instead
of announcing them again.

Traffic metrics come from the minute rollups, so their window starts at a whole minute: a 5m
window covers the last 5 to 6 minutes, and ``requests_per_s`` divides by exactly that span.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from shipyard import __version__
from shipyard.monitoring.config import AlertRule, Channel
from shipyard.retries import backoff
from shipyard.store import alerts as alerts_q
from shipyard.store import rollups
from shipyard.store import scores as scores_q
from shipyard.store.db import Store

log = logging.getLogger("shipyard.alerts")

_SEVERITY_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}
_NEVER = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of an alert that is still firing


class MetricError(Exception):
    """The rule's metric cannot be read (e.g. the drift report has no such statistic)."""


def _iso(ts: float | None) -> str:
    if ts is None:
        return _NEVER
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def compare(value: float | None, op: str, threshold: float) -> bool:
    """No data never satisfies a condition: an idle route does not fire ``error_rate > 0.1``."""
    if value is None:
        return False
    if op == ">":
        return value > threshold
    if op == ">=":
        return value >= threshold
    if op == "<":
        return value < threshold
    return value <= threshold


def measure(store: Store, rule: AlertRule, now: float) -> float | None:
    """The rule's current value; None when there is no data in the window."""
    kind = rule.kind
    if kind == "rollup":
        since = now - rule.window
        period = rollups.choose_period(since, now)
        start = int(since // period) * period
        agg = rollups.total(store, since, now + 1, route=rule.route, model=rule.model, period=period)
        value = agg.summary(max(now - start, 1.0)).get(rule.metric)
        return None if value is None else float(value)
    if kind == "score":
        return scores_q.aggregate(
            store, rule.key, now - rule.window, now + 1, rule.effective_aggregation or "avg", rule.route
        )
    if kind == "feedback":
        return alerts_q.feedback_aggregate(
            store, rule.key, now - rule.window, now + 1, rule.effective_aggregation or "avg", rule.route
        )
    from shipyard.monitoring.drift import latest_report

    assert rule.route is not None  # checked by the config
    report = latest_report(store, rule.route)
    if report is None:
        return None
    metrics = report.metrics()
    if rule.key not in metrics:
        raise MetricError(
            f"the drift report of route `{rule.route}` has no statistic `{rule.key}`; it has: "
            f"{', '.join(sorted(metrics)) or '(none)'}"
        )
    return metrics[rule.key]


def _fmt(value: float | None) -> str:
    return "no data" if value is None else f"{value:.4g}"


@dataclass
class Notification:
    status: str  # firing | resolved
    event: str  # firing | repeat | resolved | test
    rule: AlertRule
    value: float | None
    started_at: float
    ended_at: float | None
    message: str
    episode_id: int | None = None

    def payload(self) -> dict[str, Any]:
        """Alertmanager's webhook shape (``alerts``, ``commonLabels``…, so receivers written for
        it work), plus the one alert's fields at the top level for simple receivers."""
        r = self.rule
        labels = {**r.labels, "test": "true"} if self.event == "test" else r.labels
        annotations = {"message": self.message, "condition": r.describe()}
        alert = {
            "status": self.status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": _iso(self.started_at),
            "endsAt": _iso(self.ended_at),
            "fingerprint": r.fingerprint,
            "value": self.value,
            "threshold": r.threshold,
        }
        return {
            "version": "4",
            "receiver": "shipyard",
            "status": self.status,
            "event": self.event,
            "rule": r.name,
            "severity": r.severity,
            "labels": labels,
            "value": self.value,
            "threshold": r.threshold,
            "op": r.op,
            "startsAt": alert["startsAt"],
            "endsAt": alert["endsAt"],
            "message": self.message,
            "fingerprint": r.fingerprint,
            "groupKey": r.fingerprint,
            "alerts": [alert],
            "commonLabels": labels,
            "commonAnnotations": annotations,
            "groupLabels": {"alertname": r.name},
        }


@dataclass
class RuleState:
    rule: AlertRule
    state: str = "inactive"  # inactive | pending | firing
    value: float | None = None
    since: float | None = None  # when the current pending or firing state began
    episode_id: int | None = None
    last_notified: float | None = None
    last_evaluated: float | None = None
    last_resolved: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        r = self.rule
        return {
            "name": r.name,
            "metric": r.metric,
            "route": r.route,
            "model": r.model,
            "window": r.window,
            "aggregation": r.effective_aggregation,
            "op": r.op,
            "threshold": r.threshold,
            "for": r.for_,
            "repeat": r.repeat,
            "severity": r.severity,
            "condition": r.describe(),
            "notify": [c.label for c in r.notify],
            "fingerprint": r.fingerprint,
            "state": self.state,
            "value": self.value,
            "since": self.since,
            "last_evaluated": self.last_evaluated,
            "last_resolved": self.last_resolved,
            "episode_id": self.episode_id,
            "error": self.error,
        }


def firing_message(rule: AlertRule, value: float | None) -> str:
    """The rule's own `message`, else its condition and value (the rule's name travels apart)."""
    return rule.message or f"{rule.describe()} (value {_fmt(value)})"


def resolved_message(rule: AlertRule, value: float | None) -> str:
    prefix = f"{rule.message}: " if rule.message else ""
    return f"{prefix}resolved, value {_fmt(value)} no longer {rule.op} {rule.threshold:g}"


@dataclass
class AlertEngine:
    store: Store
    rules: Sequence[AlertRule]
    states: dict[str, RuleState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.states = {r.fingerprint: RuleState(r) for r in self.rules}

    def recover(self, now: float | None = None) -> None:
        """Adopt the store's open episodes (a restart must not notify them again); resolve, without
        a notification, the ones whose rule is gone from the config (nobody is left to tell)."""
        now = time.time() if now is None else now
        for ep in alerts_q.open_episodes(self.store):
            st = self.states.get(ep.fingerprint)
            if st is None:
                alerts_q.resolve_episode(
                    self.store,
                    ep.id,
                    value=None,
                    message=f"rule `{ep.rule}` is no longer configured",
                    now=now,
                )
                log.info("alert `%s` closed: its rule is no longer configured", ep.rule)
                continue
            st.state, st.since, st.episode_id, st.last_notified = (
                "firing",
                ep.started_at,
                ep.id,
                ep.updated_at,
            )

    def evaluate(self, now: float | None = None) -> list[Notification]:
        now = time.time() if now is None else now
        out: list[Notification] = []
        for st in self.states.values():
            try:
                note = self._step(st, now)
            except Exception as exc:
                # A failing rule keeps its state: a store hiccup must not resolve (or fire) an alert.
                message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, MetricError) else str(exc)
                if st.error != message:
                    log.warning("alert rule `%s` could not be evaluated: %s", st.rule.name, message)
                st.error = message
                st.last_evaluated = now
                continue
            if note is not None:
                out.append(note)
        return out

    def _step(self, st: RuleState, now: float) -> Notification | None:
        rule = st.rule
        value = measure(self.store, rule, now)
        st.value, st.last_evaluated, st.error = value, now, None
        active = compare(value, rule.op, rule.threshold)
        if not active:
            if st.state == "firing" and st.episode_id is not None:
                message = resolved_message(rule, value)
                resolved = alerts_q.resolve_episode(
                    self.store, st.episode_id, value=value, message=message, now=now
                )
                note = None
                if resolved:
                    note = Notification(
                        "resolved", "resolved", rule, value, st.since or now, now, message, st.episode_id
                    )
                st.state, st.since, st.episode_id, st.last_resolved = "inactive", None, None, now
                return note
            st.state, st.since = "inactive", None
            return None
        if st.state == "inactive":
            st.state, st.since = "pending", now
        if st.state == "pending":
            if now - (st.since or now) < rule.for_:
                return None
            message = firing_message(rule, value)
            episode, created = alerts_q.open_episode(
                self.store,
                rule=rule.name,
                fingerprint=rule.fingerprint,
                severity=rule.severity,
                labels=rule.labels,
                value=value,
                threshold=rule.threshold,
                message=message,
                now=now,
            )
            st.state, st.since, st.episode_id, st.last_notified = (
                "firing",
                episode.started_at,
                episode.id,
                episode.updated_at,
            )
            if created:
                return Notification(
                    "firing", "firing", rule, value, episode.started_at, None, message, episode.id
                )
            return None  # another worker (or this one before a restart) already announced it
        # firing: a reminder every `repeat`, sent by whichever evaluation claims it in the store
        last, repeat = st.last_notified, rule.repeat
        if repeat is None or last is None or st.episode_id is None or now - last < repeat:
            return None
        claimed = alerts_q.claim_repeat(self.store, st.episode_id, last, now)
        st.last_notified = now
        if not claimed:
            return None
        message = firing_message(rule, value)
        return Notification("firing", "repeat", rule, value, st.since or now, None, message, st.episode_id)

    def status(self) -> list[dict[str, Any]]:
        return [st.to_dict() for st in self.states.values()]


class Notifier:
    """Delivers notifications: a JSON POST per webhook (timeout, retries with backoff; 4xx other
    than 408/429 is not retried) and a log line. Answers one delivery record per channel."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(
            transport=transport, headers={"user-agent": f"shipyard/{__version__}"}, follow_redirects=False
        )
        self.backoff = 0.5

    async def close(self) -> None:
        await self._client.aclose()

    async def deliver(self, note: Notification) -> list[dict[str, Any]]:
        payload = note.payload()
        return list(await asyncio.gather(*(self._one(ch, note, payload) for ch in note.rule.notify)))

    async def _one(self, ch: Channel, note: Notification, payload: dict[str, Any]) -> dict[str, Any]:
        record: dict[str, Any] = {"channel": ch.label, "event": note.event, "at": time.time()}
        if ch.webhook is None:
            level = logging.INFO if note.status == "resolved" else _SEVERITY_LEVEL[note.rule.severity]
            log.log(
                level,
                "[%s] %s %s: %s",
                note.rule.severity,
                note.event.upper(),
                note.rule.name,
                note.message,
            )
            return {**record, "ok": True, "attempts": 1}
        return {**record, **await self._post(ch, payload)}

    async def _post(self, ch: Channel, payload: dict[str, Any]) -> dict[str, Any]:
        # A plain loop over `shipyard.retries.backoff` rather than tenacity or stamina: the
        # delivery record needs the attempts made, the last status and the last error whether the
        # webhook answered or not, and a 4xx other than 408/429 stops at once; a library would
        # spread that over callbacks, and stamina would bring a backoff formula of its own.
        assert ch.webhook is not None
        error = ""
        status: int | None = None
        attempts = 0
        for attempt in range(ch.retries + 1):
            if attempt:
                await asyncio.sleep(backoff(attempt - 1, self.backoff, jitter=False))
            attempts += 1
            try:
                response = await self._client.post(
                    ch.webhook, json=payload, headers=ch.headers, timeout=ch.timeout
                )
            except httpx.HTTPError as exc:
                status, error = None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            status = response.status_code
            if response.is_success:
                return {"ok": True, "status": status, "attempts": attempts}
            error = f"HTTP {status}: {response.text[:200]}"
            if 400 <= status < 500 and status not in (408, 429):
                break
        log.warning("alert notification to %s failed after %d attempt(s): %s", ch.label, attempts, error)
        return {"ok": False, "status": status, "error": error, "attempts": attempts}
