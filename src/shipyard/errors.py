"""One exception hierarchy for the whole platform.

Every error knows the HTTP status it maps to and renders itself in OpenAI's error JSON shape
(``{"error": {"message", "type", "param", "code"}}``), so an OpenAI client shows the message as-is.
Messages name the thing that is wrong and, where there is one, the fix.
"""

from __future__ import annotations

from typing import Any

from shipyard.redact import scrub, scrub_bytes


def _printable(text: str) -> str:
    """Messages quote what the client sent; a lone surrogate in it (JSON allows `\\ud800`) cannot
    be encoded as UTF-8, so it would turn a 4xx into a 500 when the error is rendered."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class ShipyardError(Exception):
    """Base class; ``status`` is the HTTP status code the gateway answers with."""

    status: int = 500
    type: str = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        # Every message can end up in a response, a trace or a log: no resolved secret in any.
        message = scrub(_printable(message))
        super().__init__(message)
        self.message = message
        self.param = None if param is None else _printable(param)
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_openai(self) -> dict[str, Any]:
        # str(): a ConfigError's message carries its list of problems.
        return error_body(str(self), self.type, self.param, self.code)


def error_body(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The one error envelope every Shipyard HTTP answer uses, OpenAI's:
    ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_json(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> bytes:
    import orjson

    return orjson.dumps(error_body(message, type, param, code))


class InvalidRequest(ShipyardError):
    """The client sent something malformed (400)."""

    status = 400
    type = "invalid_request_error"


class NotFound(ShipyardError):
    status = 404
    type = "invalid_request_error"


class Conflict(ShipyardError):
    """The request clashes with what exists (409), e.g. creating a dataset that already exists."""

    status = 409
    type = "conflict"


class RouteNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class UnsupportedOperation(InvalidRequest):
    """The route's model cannot do what was asked (chat on an embedding model, …)."""

    code = "unsupported_operation"


class ConfigError(ShipyardError):
    """``shipyard.yaml`` (or a setting) is invalid. Carries every problem found, with lines."""

    status = 400
    type = "config_error"

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = [_printable(p) for p in problems or []]

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        return self.message + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class StoreError(ShipyardError):
    status = 500
    type = "store_error"


class ProviderError(ShipyardError):
    """A provider call failed. ``retryable`` says whether another attempt or a fallback may help."""

    status = 502
    type = "upstream_error"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool | None = None,
        code: str | None = None,
        body: bytes | None = None,
        retry_after: float | None = None,
        upstream_status: int | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        if retryable is not None:
            self.retryable = retryable
        self.body = scrub_bytes(body) if body else body
        self.retry_after = retry_after
        self.upstream_status = upstream_status


class ProviderTimeout(ProviderError):
    status = 504
    type = "timeout"
    code = "upstream_timeout"


class ProviderUnavailable(ProviderError):
    """Could not connect, or the provider is not loaded (503)."""

    status = 503
    code = "upstream_unavailable"


def upstream_status_error(status: int, body: bytes, target: str) -> ProviderError:
    """Map an upstream HTTP error status to a ProviderError.

    5xx, 429 and 408 are retryable (another attempt or target may succeed); other 4xx mean the
    request itself is wrong, so they go back to the client as they are.
    """
    detail = _upstream_message(body)
    retryable = status >= 500 or status in (408, 429)
    err = ProviderError(
        f"target `{target}` answered HTTP {status}: {detail}",
        status=status if status < 500 else 502,
        retryable=retryable,
        body=body,
        upstream_status=status,
    )
    if 400 <= status < 500:
        err.type = "invalid_request_error" if status != 429 else "rate_limit_error"
        err.status = status
    return err


def _upstream_message(body: bytes) -> str:
    import orjson

    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return text[:300] or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
        if isinstance(data.get("detail"), str):
            return str(data["detail"])[:300]
    return body.decode("utf-8", "replace")[:300]


class Unauthorized(ShipyardError):
    """No API key, or one that is unknown, revoked or expired (401, OpenAI's `invalid_api_key`)."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(ShipyardError):
    """A valid key whose role or route scope does not allow the request (403)."""

    status = 403
    type = "permission_error"
    code = "permission_denied"


class RateLimited(ShipyardError):
    """A rate limit or budget is spent (429); ``retry_after`` seconds until it allows again."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(0.0, retry_after)
