"""The browser-facing security headers of everything Shipyard serves on its one origin.

The dashboard, its admin API and the files users upload share an origin, and the dashboard's
session cookie is valid on all of it. So nothing user-supplied may ever run as a page there:

- dashboard pages (``PAGE_CSP``): scripts only from this server, no inline script;
- reports Shipyard wrote from run data (``REPORT_CSP``): no script at all, in a sandbox (an opaque
  origin that cannot read the session), since a developer key can overwrite a run's artifacts;
- everything under ``/api`` (``API_CSP``): an API response is never a page — opened in a browser it
  is a sandbox with nothing allowed; uploaded artifacts also download as attachments;
- ``nosniff`` everywhere, so a browser never second-guesses a declared type into HTML.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Pages embed their data and load scripts only from this server; Plotly injects <style> elements.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'self'; "
    "form-action 'self'"
)
REPORT_CSP = (
    "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; "
    "base-uri 'none'; form-action 'none'"
)
API_CSP = "sandbox; default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

PAGE_HEADERS = {
    "content-security-policy": PAGE_CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}
REPORT_HEADERS = {
    "content-security-policy": REPORT_CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
API_HEADERS = {
    "content-security-policy": API_CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}

# Types a browser would render as an active document (script, markup that can hold script).
ACTIVE_TYPES = (
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
    "application/ecmascript",
    "text/xsl",
    "application/pdf",
)


def download_headers(filename: str) -> dict[str, str]:
    """Headers for serving a user's file: always a download, never a page on this origin."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)[:200] or "download"
    return {**API_HEADERS, "content-disposition": f'attachment; filename="{safe}"'}


def served_type(media_type: str) -> str:
    """The type to declare for a user's file: active types become opaque bytes."""
    base = media_type.split(";", 1)[0].strip().lower()
    return "application/octet-stream" if base in ACTIVE_TYPES or "xml" in base else media_type


class DefaultHeaders:
    """ASGI middleware: adds ``headers`` to every HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp, headers: Mapping[str, str]) -> None:
        self.app = app
        self.headers = dict(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)
