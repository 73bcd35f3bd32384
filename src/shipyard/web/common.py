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
from shipyard.gateway.auth import csrf_token, session_of
from shipyard.gateway.http_headers import PAGE_CSP, PAGE_HEADERS
from shipyard.store.db import Store
from shipyard.times import finite, fmt_time

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

# The navigation bar, in order: (label, path). A page module adds its routes; the bar is fixed so
# that every page shows the same one.
NAV: tuple[tuple[str, str], ...] = (
    ("Overview", "/"),
    ("Traces", "/traces"),
    ("Performance", "/performance"),
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
def fmt_num(v: Any, digits: int = 0) -> str:
    """12,345 / 1.2M — compact above a million so tiles stay one line."""
    f = finite(v)
    if f is None:
        return "–"
    if abs(f) >= 1e9:
        return f"{f / 1e9:.2f}B"
    if abs(f) >= 1e6:
        return f"{f / 1e6:.2f}M"
    return f"{f:,.{digits}f}"


def fmt_ms(v: Any) -> str:
    """Latency: 0.8 ms, 12 ms, 1.25 s, 2.1 min."""
    f = finite(v)
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
    f = finite(v)
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
    f = finite(v)
    return "–" if f is None else f"{f * 100:.{digits}f}%"


def fmt_rate(v: Any) -> str:
    """Requests per second, readable at low traffic (0.02/s) and high (1,250/s)."""
    f = finite(v)
    if f is None:
        return "–"
    if f == 0:
        return "0/s"
    if f < 0.1:
        return f"{f * 60:.2f}/min"
    if f < 10:
        return f"{f:.2f}/s"
    return f"{f:,.0f}/s"


def time_tag(v: Any, style: str = "datetime") -> markupsafe.Markup:
    """``<time data-ts=… data-style=…>`` that the page script shows in local time."""
    f = finite(v)
    if f is None:
        return markupsafe.Markup("–")
    iso = datetime.fromtimestamp(f, UTC).isoformat()
    return markupsafe.Markup('<time datetime="{}" data-ts="{}" data-style="{}">{}</time>').format(
        iso, f"{f:.3f}", style, fmt_time(f)
    )


def fmt_duration(seconds: Any) -> str:
    f = finite(seconds)
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
