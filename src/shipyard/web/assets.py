"""Static files: the dashboard's own CSS/JS and the Plotly.js bundle that ships inside the
``plotly`` Python package (nothing is fetched from a CDN, so the dashboard works offline).

Every URL the templates emit carries a version (``?v=<content hash>`` from ``static_url``), so
responses can be cached for a year: an edited file gets a new URL.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

LONG_CACHE = "public, max-age=31536000, immutable"
SHORT_CACHE = "no-cache"


@lru_cache(maxsize=1)
def plotly_js_path() -> Path:
    path = Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    if not path.is_file():
        raise FileNotFoundError(
            f"plotly.min.js is missing from the installed plotly package ({path}); reinstall plotly"
        )
    return path


@lru_cache(maxsize=1)
def plotly_version() -> str:
    try:
        from importlib.metadata import version

        return version("plotly")
    except Exception:
        return str(int(os.path.getmtime(plotly_js_path())))


async def plotly_js(request: Request) -> Response:
    headers = {"cache-control": LONG_CACHE if request.query_params.get("v") else SHORT_CACHE}
    return FileResponse(plotly_js_path(), media_type="text/javascript; charset=utf-8", headers=headers)


class CachedStatic(StaticFiles):
    """StaticFiles that lets browsers keep versioned URLs (``?v=``) for a year."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            versioned = b"v=" in scope.get("query_string", b"")
            response.headers["cache-control"] = LONG_CACHE if versioned else SHORT_CACHE
        return response
