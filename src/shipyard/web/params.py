"""Query-string parsing for the dashboard's pages: a bad value is a 400 that names the parameter and
what it accepts (an error page in a browser, JSON for an API client), never a silent default."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shipyard.errors import InvalidRequest


def int_param(params: Mapping[str, str], name: str, default: int, lo: int, hi: int | None = None) -> int:
    raw = (params.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"`{name}` must be a whole number; got `{raw}`", param=name) from None
    if value < lo or (hi is not None and value > hi):
        bound = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
        raise InvalidRequest(f"`{name}` must be {bound}; got {value}", param=name)
    return value


def choice_param(params: Mapping[str, str], name: str, choices: Sequence[str], default: str) -> str:
    value = (params.get(name) or "").strip() or default
    if value not in choices:
        raise InvalidRequest(f"`{name}` must be one of {', '.join(choices)}; got `{value}`", param=name)
    return value
