"""Durations as people write them in config and on the command line: ``90s``, ``15m``, ``2h``, ``7d``."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``value``; a bare number is seconds. Raises ValueError naming the accepted forms."""
    if isinstance(value, bool):
        raise ValueError(f"`{value}` is not a duration; write e.g. 30s, 15m, 2h or 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"`{value}` is negative; a duration must be 0 or more")
        return float(value)
    m = _DURATION.match(str(value).strip())
    if not m:
        raise ValueError(f"`{value}` is not a duration; write e.g. 30s, 15m, 2h or 7d")
    return float(m.group(1)) * _UNIT[m.group(2)]


def is_duration(value: str) -> bool:
    return bool(_DURATION.match(value.strip()))
