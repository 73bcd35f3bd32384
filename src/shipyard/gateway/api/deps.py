"""What API handlers get from the running platform."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from shipyard.settings import Settings
from shipyard.store.db import Store

ACTOR_HEADER = "x-shipyard-actor"


def platform(request: Request) -> Any:
    return request.app.state.platform


def store(request: Request) -> Store:
    return platform(request).store


def settings(request: Request) -> Settings:
    return platform(request).settings


def actor(request: Request) -> str:
    """Who is making a change: the X-Shipyard-Actor header until API keys carry identities."""
    return request.headers.get(ACTOR_HEADER) or "api"
