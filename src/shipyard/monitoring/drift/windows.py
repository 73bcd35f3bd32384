"""Window specs: which traces (or dataset examples) one side of a drift check samples.

The grammar is :data:`SPEC_GRAMMAR`; :func:`parse_spec` turns a spec into a :class:`WindowSpec`,
whose relative windows become times only when a check runs (:meth:`WindowSpec.bounds`), so a
scheduled check's ``1h`` always means the last hour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from shipyard.durations import is_duration, parse_duration
from shipyard.errors import InvalidRequest
from shipyard.times import parse_time

DEFAULT_REFERENCE = "7d offset 1d"
DEFAULT_CURRENT = "1h"

SPEC_GRAMMAR = """\
A window spec chooses the traces (or dataset examples) of one sample:

    1h, 30m, 7d         the last hour, 30 minutes, 7 days, up to now
    7d offset 1d        the 7 days that ended 1 day ago
    START..END          a time range: ISO 8601 dates or times (2026-11-01,
                        2026-11-01T08:00, 2026-11-01T08:00+02:00; UTC unless
                        an offset is given) or unix seconds; START.. = to now
    dataset:NAME@v2     the inputs of a pinned dataset version (also NAME@2,
                        NAME@latest; dataset:NAME alone = the latest version)

Durations: 90s, 15m, 2h, 7d, 2w. The two windows may not overlap. Only
successful traces of the route are sampled; a sample larger than
max_samples is cut to a seeded uniform random subset."""


@dataclass(frozen=True)
class WindowSpec:
    """A parsed window spec. Relative windows are turned into times by :meth:`bounds` at run time."""

    spec: str
    kind: Literal["window", "range", "dataset"]
    duration: float | None = None
    offset: float = 0.0
    since: float | None = None
    until: float | None = None
    dataset: str | None = None
    version: int | None = None

    def bounds(self, now: float) -> tuple[float, float]:
        """[since, until) in unix seconds for a time window (not for a dataset)."""
        if self.kind == "window":
            assert self.duration is not None
            until = now - self.offset
            return until - self.duration, until
        if self.kind == "range":
            assert self.since is not None
            return self.since, now if self.until is None else self.until
        raise ValueError(f"`{self.spec}` is a dataset, not a time window")


def iso_utc(t: float) -> str:
    """A window end as reports and messages show it: ISO 8601 in UTC, to the second."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _bad_spec(field_name: str, text: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"`{field_name}`: `{text}` {why}. A window spec is a duration (`1h`), a duration with an offset "
        "(`7d offset 1d`), a time range (`2026-11-01T00:00..2026-11-08T00:00`) or a dataset version "
        "(`dataset:NAME@v2`)",
        param=field_name,
    )


def _parse_time(value: str, field_name: str, text: str) -> float:
    """A window end, by the one time rule (``shipyard.times``: an ISO time is UTC unless it has an
    offset), with the window spec named when it is not a time."""
    try:
        t = parse_time(value, field_name)
    except InvalidRequest:
        t = None
    if t is None:
        raise _bad_spec(
            field_name,
            text,
            f"has `{value}`, which is not a time: write an ISO 8601 date or time such as 2026-11-01 or "
            "2026-11-01T08:00 (UTC unless it carries an offset like +02:00), or unix seconds",
        )
    return t


def parse_spec(text: str | WindowSpec, field_name: str = "reference") -> WindowSpec:
    """Parse a window spec (see :data:`SPEC_GRAMMAR`); errors name ``field_name`` and the forms."""
    if isinstance(text, WindowSpec):
        return text
    if not isinstance(text, str) or not text.strip():
        raise _bad_spec(field_name, str(text or ""), "is empty")
    s = " ".join(text.split())
    if s.lower().startswith("dataset:"):
        # Deferred: only dataset specs need the registry.
        from shipyard.registry import datasets

        ref = s[len("dataset:") :].strip()
        if not ref:
            raise _bad_spec(field_name, text, "names no dataset after `dataset:`")
        try:
            name, version = datasets.parse_ref(ref)
            datasets.check_name(name)
        except InvalidRequest as exc:
            raise InvalidRequest(f"`{field_name}`: {exc.message}", param=field_name) from None
        canonical = f"dataset:{name}" + (f"@v{version}" if version is not None else "")
        return WindowSpec(spec=canonical, kind="dataset", dataset=name, version=version)
    if ".." in s:
        start, _, end = s.partition("..")
        if not start.strip():
            raise _bad_spec(field_name, text, "has no start time before `..`")
        since = _parse_time(start, field_name, text)
        until = _parse_time(end, field_name, text) if end.strip() else None
        if until is not None and until <= since:
            raise _bad_spec(field_name, text, "ends before it starts")
        return WindowSpec(spec=s, kind="range", since=since, until=until)
    parts = s.split(" ")
    if len(parts) in (2, 3) and parts[1].lower() == "offset":
        if len(parts) == 2:
            raise _bad_spec(field_name, text, "has no duration after `offset`")
        duration_text, offset_text = parts[0], parts[2]
    elif len(parts) == 1:
        duration_text, offset_text = parts[0], "0s"
    else:
        raise _bad_spec(field_name, text, "is not a window spec")
    if len(parts) == 1 and not is_duration(duration_text):
        if re.match(r"^\d", duration_text):
            raise _bad_spec(field_name, text, "is not a duration (30s, 15m, 2h, 7d)")
        raise _bad_spec(field_name, text, "is not a window spec")
    for value in (duration_text, offset_text):
        if not is_duration(value):
            raise _bad_spec(field_name, text, f"has `{value}`, which is not a duration (30s, 15m, 2h, 7d)")
    duration, offset = parse_duration(duration_text), parse_duration(offset_text)
    if duration <= 0:
        raise _bad_spec(field_name, text, "is an empty window")
    return WindowSpec(spec=s, kind="window", duration=duration, offset=offset)


def join_offset(spec: str, offset: str | None, field_name: str) -> str:
    """``7d`` + ``--reference-offset 1d`` → ``7d offset 1d`` (the CLI's separate offset flags)."""
    if not offset:
        return spec
    parsed = parse_spec(spec, field_name)
    if parsed.kind != "window" or parsed.offset:
        raise InvalidRequest(
            f"`{field_name}-offset` shifts a duration window such as `7d`; `{spec}` is not one",
            param=f"{field_name}-offset",
        )
    joined = f"{spec.strip()} offset {offset.strip()}"
    parse_spec(joined, f"{field_name}-offset")
    return joined


def check_disjoint(reference: WindowSpec, current: WindowSpec, now: float) -> None:
    """Refuse time windows that overlap: traces in both samples would hide a change. A dataset
    has no times, so it overlaps nothing."""
    if reference.kind == "dataset" or current.kind == "dataset":
        return
    rs, ru = reference.bounds(now)
    cs, cu = current.bounds(now)
    if rs < cu and cs < ru:
        raise InvalidRequest(
            f"the reference window `{reference.spec}` ({iso_utc(rs)} to {iso_utc(ru)}) overlaps the current "
            f"window `{current.spec}` ({iso_utc(cs)} to {iso_utc(cu)}): traces in both would hide a "
            f"change; end the reference earlier, e.g. `{_suggest(reference, current, now)}`",
            param="reference",
        )


def _suggest(ref: WindowSpec, cur: WindowSpec, now: float) -> str:
    """A reference spec that ends where the current window starts."""
    if ref.kind == "window" and cur.kind == "window" and cur.offset == 0:
        return f"{ref.spec.split(' ')[0]} offset {cur.spec.split(' ')[0]}"
    since, _ = ref.bounds(now)
    cur_since, _ = cur.bounds(now)
    return f"{iso_utc(since)}..{iso_utc(cur_since)}"
