"""The bench's one error type: bad options or inputs, named with the fix."""

from __future__ import annotations

from shipyard.errors import InvalidRequest


class BenchError(InvalidRequest):
    """A bench option or input that cannot be used; the message names it and says how to fix it."""
