"""What every dashboard page uses: the template environment, ``render``, number/time formatting
filters, the time-window parser, and the store of the running platform.

Pages are server-rendered; blocking store work runs in the thread pool (``blocking``) so a slow
query never stalls the event loop that also serves ``/v1``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlencode

import jinja2
import markupsafe
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse

from shipyard import __version__
from shipyard.durations import is_duration, parse_duration
from shipyard.errors import InvalidRequest
from shipyard.gateway.auth import csrf_token, session_of
from shipyard.gateway.http_headers import PAGE_CSP, PAGE_HEADERS
from shipyard.store.db import Store

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

# The navigation bar, in order: (label, path). A page module adds its routes; the bar is fixed so
# that every page shows the same one.
NAV: tuple[tuple[str, str], ...] = (
    ("Overview", "/"),
    ("Traces", "/traces"),
    ("Prompts", "/prompts"),
    ("Datasets", "/datasets"),
    ("Runs", "/runs"),
    ("Evals", "/evals"),
    ("Drift", "/drift"),
    ("Alerts", "/alerts"),
    ("Keys", "/keys"),
    ("Audit", "/audit"),
)

# One policy for every page (see gateway/http_headers.py): scripts only from this server.
CSP = PAGE_CSP
SECURITY_HEADERS = PAGE_HEADERS

P = ParamSpec("P")
T = TypeVar("T")


async def blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run store work in the thread pool."""
    return await run_in_threadpool(fn, *args, **kwargs)


def platform_of(request: Request) -> Any:
    return request.app.state.platform


def store_of(request: Request) -> Store:
    store: Store = platform_of(request).store
    return store


# -- static files -----------------------------------------------------------------------------------
@lru_cache(maxsize=256)
def _file_version(path: str) -> str:
    p = STATIC / path
    try:
        return hashlib.sha256(p.read_bytes()).hexdigest()[:12]
    except OSError:
        return __version__


def static_url(path: str) -> str:
    """``/static/<path>?v=<content hash>``: served with a year-long cache, busted by any edit."""
    if path == "vendor/plotly.min.js":
        from shipyard.web.assets import plotly_version

        return f"/static/vendor/plotly.min.js?v={plotly_version()}"
    return f"/static/{path}?v={_file_version(path)}"


# -- formatting filters -----------------------------------------------------------------------------
def _finite(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt_num(v: Any, digits: int = 0) -> str:
    """12,345 / 1.2M — compact above a million so tiles stay one line."""
    f = _finite(v)
    if f is None:
        return "–"
    if abs(f) >= 1e9:
        return f"{f / 1e9:.2f}B"
    if abs(f) >= 1e6:
        return f"{f / 1e6:.2f}M"
    return f"{f:,.{digits}f}"


def fmt_ms(v: Any) -> str:
    """Latency: 0.8 ms, 12 ms, 1.25 s, 2.1 min."""
    f = _finite(v)
    if f is None:
        return "–"
    if f < 10:
        return f"{f:.1f} ms"
    if f < 1000:
        return f"{f:.0f} ms"
    if f < 60_000:
        return f"{f / 1000:.2f} s"
    return f"{f / 60_000:.1f} min"


def fmt_usd(v: Any) -> str:
    f = _finite(v)
    if f is None:
        return "–"
    if f == 0:
        return "$0"
    if abs(f) < 0.01:
        # Two significant digits however small: $0.0042, $0.000036.
        decimals = min(10, max(2, 1 - math.floor(math.log10(abs(f)))))
        return f"${f:.{decimals}f}"
    return f"${f:,.2f}"


def fmt_pct(v: Any, digits: int = 1) -> str:
    f = _finite(v)
    return "–" if f is None else f"{f * 100:.{digits}f}%"


def fmt_rate(v: Any) -> str:
    """Requests per second, readable at low traffic (0.02/s) and high (1,250/s)."""
    f = _finite(v)
    if f is None:
        return "–"
    if f == 0:
        return "0/s"
    if f < 0.1:
        return f"{f * 60:.2f}/min"
    if f < 10:
        return f"{f:.2f}/s"
    return f"{f:,.0f}/s"


def fmt_time(v: Any, with_date: bool = True) -> str:
    """UTC text; ``app.js`` rewrites every ``<time data-ts>`` into the browser's local time."""
    f = _finite(v)
    if f is None:
        return "–"
    fmt = "%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S"
    return datetime.fromtimestamp(f, UTC).strftime(fmt) + " UTC"


def time_tag(v: Any, style: str = "datetime") -> markupsafe.Markup:
    """``<time data-ts=… data-style=…>`` that the page script shows in local time."""
    f = _finite(v)
    if f is None:
        return markupsafe.Markup("–")
    iso = datetime.fromtimestamp(f, UTC).isoformat()
    return markupsafe.Markup('<time datetime="{}" data-ts="{}" data-style="{}">{}</time>').format(
        iso, f"{f:.3f}", style, fmt_time(f)
    )


def fmt_duration(seconds: Any) -> str:
    f = _finite(seconds)
    if f is None:
        return "–"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if f >= size:
            n = f / size
            return f"{n:.0f} {unit}" if n == int(n) else f"{n:.1f} {unit}"
    return f"{f:.0f} s"


def to_json_script(value: Any) -> markupsafe.Markup:
    """JSON safe to place inside ``<script type="application/json">``: ``<``, ``>``, ``&`` and
    line separators are escaped so no value can close the script element."""
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY, default=str)
    s = (
        text.decode()
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )
    return markupsafe.Markup(s)


def query_url(path: str, params: Mapping[str, Any], **changes: Any) -> str:
    """``path`` with ``params`` updated by ``changes`` (a ``None`` value drops the key)."""
    merged = {**params, **changes}
    clean = {k: v for k, v in merged.items() if v is not None and v != ""}
    return path + ("?" + urlencode(clean) if clean else "")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html", "xml"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        num=fmt_num,
        ms=fmt_ms,
        usd=fmt_usd,
        pct=fmt_pct,
        rate=fmt_rate,
        time=fmt_time,
        time_tag=time_tag,
        duration=fmt_duration,
        json_script=to_json_script,
    )
    env.globals.update(
        nav=NAV, static_url=static_url, version=__version__, query_url=query_url, time_tag=time_tag
    )
    return env


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    active: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """Render ``template`` with the layout's variables; ``active`` is the nav path to highlight
    (default: the nav entry the request path falls under)."""
    path = request.url.path
    if active is None:
        active = "/"
        for _, href in NAV:
            if href != "/" and (path == href or path.startswith(href + "/")):
                active = href
    ctx = {
        "request": request,
        "active": active,
        "path": path,
        "params": dict(request.query_params),
        "now": time.time(),
        "me": getattr(request.state, "principal", None),
        "csrf_token": csrf_token(session) if (session := session_of(request.headers)) else "",
        **(context or {}),
    }
    html = environment().get_template(template).render(ctx)
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


# -- time windows -----------------------------------------------------------------------------------
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
