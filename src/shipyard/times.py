"""Times the user writes, read one way everywhere: ``since=``/``until=`` on the API, the dashboard's
time windows, the CLI's ``--since``, drift windows.

A time is unix seconds, an ISO 8601 date or time, or a duration meaning that long ago (``15m``,
``2h``, ``7d``). **An ISO time without an offset is UTC** — never the server's local time, which
would make the same ``since=`` name different instants on different machines and endpoints. Add an
offset (``+02:00``) for local times.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shipyard.durations import is_duration, parse_duration
from shipyard.errors import InvalidRequest

# The help text of every time parameter: one rule, said the same way everywhere.
TIME_HELP = (
    "Unix seconds, an ISO 8601 time (UTC unless it has an offset: 2024-06-03T16:00:00Z, "
    "2024-06-03T18:00:00+02:00) or a duration meaning that long ago (15m, 2h, 7d)."
)


def finite(v: Any) -> float | None:
    """``v`` as a finite float, or None (None, booleans, text that is not a number, NaN, ±inf)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt_time(v: Any, with_date: bool = True) -> str:
    """UTC text; ``app.js`` rewrites every ``<time data-ts>`` into the browser's local time."""
    f = finite(v)
    if f is None:
        return "–"
    fmt = "%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S"
    return datetime.fromtimestamp(f, UTC).strftime(fmt) + " UTC"


RANGES: tuple[tuple[str, str], ...] = (
    ("15m", "Last 15 minutes"),
    ("1h", "Last hour"),
    ("6h", "Last 6 hours"),
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
)
_RANGE_SECONDS = {key: parse_duration(key) for key, _ in RANGES}
# Chart step per window, always a whole number of the rollup period the window reads (minute
# rollups up to six hours, hour rollups beyond): a day is 24 hourly points, not 96 quarter-hours
# summed from 1,440 minute rows per route and model, which keeps the overview fast at any traffic.
_STEPS = ((3600, 60), (6 * 3600, 300), (7 * 86400, 3600), (31 * 86400, 6 * 3600))


def parse_time(value: str | float | None, field: str, now: float | None = None) -> float | None:
    """Unix seconds from ``1717430000``, ``2024-06-03T16:00:00+02:00`` or ``15m`` (that long ago)."""
    if value is None:
        return None
    t: float
    if isinstance(value, int | float):
        t = float(value)
    else:
        text = value.strip()
        if not text:
            return None
        try:
            t = float(text)
        except ValueError:
            if is_duration(text):
                t = (now if now is not None else time.time()) - parse_duration(text)
            else:
                try:
                    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
                except ValueError:
                    raise InvalidRequest(
                        f"`{field}` must be unix seconds, an ISO 8601 time (2024-06-03T16:00:00Z) or a "
                        f"duration ago (15m, 2h, 7d); got `{value}`",
                        param=field,
                    ) from None
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                t = parsed.timestamp()
    # NaN, infinities and times outside what the store's columns and datetime can hold.
    if not (math.isfinite(t) and 0 <= t <= LATEST_TIME):
        raise InvalidRequest(f"`{field}` must be a time between 1970 and 9999; got `{value}`", param=field)
    return t


LATEST_TIME = 253402300799.0  # 9999-12-31T23:59:59Z


@dataclass(frozen=True)
class TimeWindow:
    """A time range ``[since, until)``; ``key`` is the preset (``1h``…) or ``custom``."""

    since: float
    until: float
    key: str

    @property
    def seconds(self) -> float:
        return self.until - self.since

    @property
    def step(self) -> int:
        """Chart step in seconds for this window."""
        for limit, step in _STEPS:
            if self.seconds <= limit:
                return step
        return 86400

    @property
    def label(self) -> str:
        for key, label in RANGES:
            if key == self.key:
                return label
        return f"{fmt_time(self.since)} – {fmt_time(self.until)}"

    def params(self) -> dict[str, str]:
        """Query parameters that reproduce this window in a link."""
        if self.key == "custom":
            return {"since": f"{self.since:.0f}", "until": f"{self.until:.0f}"}
        return {"range": self.key}

    @classmethod
    def parse(
        cls,
        range_: str | None = None,
        since: str | float | None = None,
        until: str | float | None = None,
        default: str = "1h",
        now: float | None = None,
    ) -> TimeWindow:
        """``range`` is a preset; ``since``/``until`` make a custom window (``until`` defaults to
        now). Errors name the parameter and the accepted forms."""
        now = time.time() if now is None else now
        if since not in (None, "") or until not in (None, ""):
            start = parse_time(since, "since", now)
            end = parse_time(until, "until", now)
            end = now if end is None else end
            if start is None:
                start = end - _RANGE_SECONDS[default]
            if start >= end:
                raise InvalidRequest(
                    f"`since` ({fmt_time(start)}) must be before `until` ({fmt_time(end)})", param="since"
                )
            return cls(start, end, "custom")
        key = (range_ or default).strip()
        if key in _RANGE_SECONDS:
            return cls(now - _RANGE_SECONDS[key], now, key)
        if is_duration(key):
            seconds = parse_duration(key)
            if seconds <= 0:
                raise InvalidRequest("`range` must be longer than 0 s", param="range")
            if seconds > now:
                raise InvalidRequest(
                    "`range` reaches back before 1970; use a shorter duration", param="range"
                )
            return cls(now - seconds, now, key)
        choices = ", ".join(k for k, _ in RANGES)
        raise InvalidRequest(
            f"`range` must be one of {choices} or a duration like 90m; got `{range_}`", param="range"
        )
