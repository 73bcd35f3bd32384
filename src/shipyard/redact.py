"""Secret values Shipyard resolved from the config, kept out of everything it shows.

A provider's API key, its header values, the password in a ``base_url`` such as
``http://user:${SECRET}@host/v1``, and any ``${ENV}`` reference whose name says it is a secret
(…KEY, …TOKEN, …SECRET, …PASSWORD…) are registered here when a config is validated. Every error
message (``ShipyardError`` scrubs its own), log line (:class:`LogFilter`) and upstream error body
that passes through the gateway has them replaced by ``***``, so neither a client, a trace, the
store, the dashboard nor the log ever carries one — not even when an upstream echoes the
``Authorization`` header back in its error. URLs that Shipyard shows lose their userinfo.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
MIN_LENGTH = 6  # shorter values ("user", "true", a port) would mask ordinary words
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|PASSPHRASE|CREDENTIAL|AUTH|PRIVATE", re.IGNORECASE)

_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None
_pattern_bytes: re.Pattern[bytes] | None = None


def register(value: Any) -> None:
    """Remember ``value`` (a resolved secret) so it is masked from now on."""
    global _pattern, _pattern_bytes
    if not isinstance(value, str):
        return
    value = value.strip()
    if len(value) < MIN_LENGTH or value in _values:
        return
    with _lock:
        _values.add(value)
        # Longest first, so a secret that contains another is masked whole.
        ordered = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))
        _pattern_bytes = re.compile(b"|".join(re.escape(v.encode()) for v in ordered))


def register_url(url: Any) -> None:
    """Register the credentials in a URL's userinfo (``scheme://user:password@host``)."""
    if not isinstance(url, str) or "@" not in url:
        return
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    if parts.password:
        register(parts.password)
        if len(parts.username or "") >= 16:  # a token used as the user name
            register(parts.username)
    elif parts.username:
        register(parts.username)  # `https://TOKEN@host`: the user name is the credential


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***`` and URL userinfo removed."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if "@" in text and "://" in text:
        text = _USERINFO.sub(r"\1", text)
    return text


def scrub_bytes(data: bytes) -> bytes:
    pattern = _pattern_bytes
    return pattern.sub(MASK.encode(), data) if pattern is not None else data


def strip_userinfo(url: str) -> str:
    """``url`` without ``user:password@``, for showing where a provider points."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# scheme://userinfo@host → scheme://host, wherever a URL appears inside a message.
_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")


def register_options(options: Any) -> None:
    """Register the secrets among a provider's typed options: ``SecretStr`` fields, header values,
    and the userinfo of URL-valued fields."""
    from pydantic import BaseModel, SecretStr

    if not isinstance(options, BaseModel):
        return
    for name in type(options).model_fields:
        value = getattr(options, name, None)
        if isinstance(value, SecretStr):
            register(value.get_secret_value())
        elif isinstance(value, str) and "://" in value:
            register_url(value)
        elif name == "headers" and isinstance(value, dict):
            for v in value.values():
                register(v)


class LogFilter(logging.Filter):
    """Masks registered secrets in log records (attach to handlers: filters on a logger do not see
    records propagated from its children)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is None and "://" not in str(record.msg):
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = scrub(text)
        return True


def install_log_filter(*logger_names: str) -> None:
    """Add :class:`LogFilter` to the handlers of the root logger and of ``logger_names``."""
    f = LogFilter()
    for name in ("", *logger_names):
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(x, LogFilter) for x in handler.filters):
                handler.addFilter(f)
