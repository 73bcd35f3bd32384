"""API keys, roles and who is calling.

Keys look like OpenAI's (``sk-shp-`` + 40 base62 characters), so every OpenAI client accepts them.
Only a SHA-256 of the key is stored: keys are 238 random bits, so a slow password hash would add
latency to every request and no safety. The first characters (the prefix) are kept to tell keys
apart in lists.

Roles are ordered: ``admin`` > ``developer`` > ``viewer``; ``client`` is for applications and may
only call the gateway (``/v1``) and send feedback and traces.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shipyard.config.schema import LimitsConfig
from shipyard.errors import Unauthorized, error_json
from shipyard.store import audit, keys, sessions
from shipyard.store.audit import Actor
from shipyard.store.db import Store
from shipyard.store.keys import KeyRecord

log = logging.getLogger("shipyard.auth")

ROLES = ("admin", "developer", "viewer", "client")
# What each role may do, as a level: reading the admin API and the dashboard needs `viewer`,
# changing things needs `developer`, keys, budgets and the audit log need `admin`.
LEVEL = {"client": 0, "viewer": 1, "developer": 2, "admin": 3}
# Refused requests of one key written to the audit log per minute (and server process).
REFUSALS_PER_MINUTE = 10


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated API key."""

    key_id: str
    name: str
    role: str
    prefix: str
    routes: tuple[str, ...] | None = None  # None: every route
    limits: LimitsConfig | None = None  # the key's own rate limits and budgets

    @property
    def actor(self) -> str:
        """How audit entries and registry changes name this caller."""
        return f"{self.name} ({self.key_id})"

    def at_least(self, role: str) -> bool:
        return LEVEL[self.role] >= LEVEL[role]

    def may_use(self, route: str) -> bool:
        return self.routes is None or route in self.routes


# -- the service ------------------------------------------------------------------------------------

SESSION_COOKIE = "shipyard_session"


def role_for_api(method: str, path: str) -> str:
    """The least role an ``/api`` request needs. ``path`` is relative to ``/api``."""
    if path.startswith(("/keys", "/audit")):
        return "admin"
    if method == "POST" and path.endswith("/feedback"):
        return "client"  # applications send their users' feedback with their own key
    if method in ("GET", "HEAD", "OPTIONS"):
        return "viewer"
    return "developer"


class AuthService:
    """Turns an ``Authorization: Bearer sk-shp-…`` header (or a dashboard session cookie) into a
    Principal. Keys are cached in memory; the cache is dropped whenever the keys table changes
    (the platform's watcher checks every `reload_interval`, and changes made through this
    process's API drop it at once), so a revoked key stops working within a second."""

    def __init__(self, store: Store, session_ttl: float = 12 * 3600.0) -> None:
        self.store = store
        self.session_ttl = session_ttl
        # key hash -> (record, its principal, cached until): one dict lookup per request
        self._cache: dict[str, tuple[KeyRecord | None, Principal | None, float]] = {}
        self._digests: dict[str, str] = {}  # key id -> stored hash, for dashboard sessions
        self._revision = -1.0
        self._used: dict[str, float] = {}
        self._last_touch = time.monotonic()
        self._ended: set[str] = set()  # digests of session cookies ended by logging out
        self._ended_revision = -1.0
        # key id -> (start of its minute, refusals audited in it, refusals not audited since)
        self._refusals: dict[str, tuple[float, int, int]] = {}
        self._refusals_lock = threading.Lock()

    # -- bootstrap --------------------------------------------------------------------------------
    def bootstrap(self, admin_key: str | None) -> str | None:
        """Make sure someone can administer this store. With ``admin_key``, import it if unknown.
        Without, on a store that has never had a key, create an admin key and return its secret
        (the caller prints it: it is not stored and never shown again)."""
        actor = Actor("shipyard up", None, "cli")
        if admin_key:
            if keys.by_hash(self.store, keys.key_hash(admin_key)) is None:
                keys.create(
                    self.store, "admin (from the admin_key setting)", "admin", actor, secret=admin_key
                )
            return None
        if keys.list_keys(self.store, include_revoked=True):
            return None
        _, secret = keys.create(self.store, "admin", "admin", actor)
        return secret

    # -- keeping up with the store -------------------------------------------------------------------
    def invalidate(self) -> None:
        self._cache.clear()
        self._digests.clear()

    def maintain(self) -> None:
        """Blocking; called from the platform's watcher thread: notice key changes made elsewhere
        (the CLI, other workers) and record when keys were last used."""
        revision = keys.revision(self.store)
        if revision != self._revision:
            self._revision = revision
            self.invalidate()
        ended = sessions.revision(self.store)
        if ended != self._ended_revision:
            self._ended_revision, self._ended = sessions.ended(self.store)
        if self._used and time.monotonic() - self._last_touch > 5:
            used, self._used = self._used, {}
            self._last_touch = time.monotonic()
            keys.touch(self.store, used)

    def flush(self) -> None:
        used, self._used = self._used, {}
        keys.touch(self.store, used)

    # -- authentication ------------------------------------------------------------------------------
    def _lookup(self, digest: str) -> tuple[KeyRecord | None, Principal | None]:
        hit = self._cache.get(digest)
        now = time.time()
        if hit is not None and hit[2] > now:
            return hit[0], hit[1]
        record = keys.by_hash(self.store, digest)
        if len(self._cache) > 50_000:  # random keys sprayed at the gateway must not grow memory
            self._cache.clear()
        expires = record.expires_at if record is not None and record.expires_at else now + 3600
        principal = _principal(record) if record is not None else None
        self._cache[digest] = (record, principal, min(expires, now + 3600))
        return record, principal

    def principal(self, secret: str) -> Principal:
        """The key's principal, or Unauthorized naming what is wrong (never which keys exist)."""
        if not secret.startswith(keys.KEY_PREFIX):
            raise Unauthorized(
                "this is not a Shipyard API key (they start with `sk-shp-`); "
                "an admin creates one with `shipyard keys create NAME --role client`"
            )
        record, principal = self._lookup(keys.key_hash(secret))
        if record is None or principal is None:
            raise Unauthorized(f"API key `{secret[: keys.SHOWN]}…` is not known to this Shipyard")
        if record.revoked_at is not None:
            raise Unauthorized(f"API key `{record.prefix}…` ({record.name}) was revoked")
        now = time.time()
        if record.expires_at is not None and record.expires_at <= now:
            raise Unauthorized(f"API key `{record.prefix}…` ({record.name}) has expired")
        self._used[record.id] = now
        return principal

    def from_headers(self, headers: Mapping[str, str], cookies: bool = True) -> Principal | None:
        """The caller of a request, None when it sends no credentials. The gateway (``/v1``)
        takes only the header; the dashboard and its API also take the session cookie."""
        raw = headers.get("authorization")
        if raw:
            scheme, _, token = raw.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("the Authorization header must be `Bearer sk-shp-…`")
            return self.principal(token.strip())
        cookie = _cookie(headers.get("cookie"), SESSION_COOKIE) if cookies else None
        if cookie:
            return self.from_session(cookie)
        return None

    # -- dashboard sessions ---------------------------------------------------------------------------
    # A session cookie is `key_id.expiry.nonce.mac`, the MAC keyed with the key's stored hash: no
    # server secret to manage across workers, and revoking the key ends its sessions. The nonce
    # makes each login its own session, so logging out ends that one and no other.
    def session_cookie(self, secret: str) -> tuple[str, Principal]:
        principal = self.principal(secret)
        expiry = int(time.time() + self.session_ttl)
        payload = f"{principal.key_id}.{expiry}.{secrets.token_hex(8)}"
        mac = hmac.new(keys.key_hash(secret).encode(), payload.encode(), hashlib.sha256).hexdigest()
        return f"{payload}.{mac}", principal

    def from_session(self, cookie: str) -> Principal:
        parts = cookie.split(".")
        # ASCII digits only, and few: "²".isdigit() is true and int() of 5,000 digits raises.
        if len(parts) != 4 or not re.fullmatch(r"[0-9]{1,12}", parts[1]):
            raise Unauthorized("the dashboard session is not valid; log in again at /login")
        key_id, expiry, nonce, mac = parts
        if int(expiry) < time.time():
            raise Unauthorized("the dashboard session has expired; log in again at /login")
        if self._ended and sessions.digest(cookie) in self._ended:
            raise Unauthorized("this dashboard session was ended by logging out; log in again at /login")
        digest = self._digests.get(key_id)
        if digest is None:
            digest = keys.digest_of(self.store, key_id)
            if digest is not None:
                self._digests[key_id] = digest
        expected = (
            hmac.new(digest.encode(), f"{key_id}.{expiry}.{nonce}".encode(), hashlib.sha256).hexdigest()
            if digest
            else ""
        )
        if not digest or not hmac.compare_digest(expected, mac):
            raise Unauthorized("the dashboard session is not valid; log in again at /login")
        record, principal = self._lookup(digest)
        if record is None or principal is None or not record.active:
            raise Unauthorized("the key of this dashboard session was revoked or has expired; log in again")
        self._used[record.id] = time.time()
        return principal

    def end_session(self, cookie: str) -> None:
        """Log out: the cookie stops working here at once and on other workers within a second."""
        try:
            principal = self.from_session(cookie)
        except Unauthorized:
            return  # not a live session: nothing to end
        expiry = float(cookie.split(".")[1])
        self._ended.add(sessions.end(self.store, cookie, principal.key_id, expiry))

    # -- refusals ---------------------------------------------------------------------------------------
    def refused(self, principal: Principal, client: str | None, method: str, path: str, needed: str) -> bool:
        """Blocking. Audit a request that an authenticated key was refused for its role
        (`request.denied`), reads included. At most `REFUSALS_PER_MINUTE` entries per key and
        minute in this process, so that a loop cannot flood the log: the refusals beyond are
        counted, and the count goes into the key's next entry. True when an entry was written."""
        now = time.monotonic()
        with self._refusals_lock:
            start, written, dropped = self._refusals.get(principal.key_id, (now, 0, 0))
            if now - start >= 60:
                start, written = now, 0
            if written >= REFUSALS_PER_MINUTE:
                self._refusals[principal.key_id] = (start, written, dropped + 1)
                return False
            self._refusals[principal.key_id] = (start, written + 1, 0)
        detail = f"role `{principal.role}` may not do this; it needs `{needed}` or above"
        if dropped:
            detail += (
                f" ({dropped} more refusals of this key before this one were not recorded one by one: "
                f"at most {REFUSALS_PER_MINUTE} a minute are)"
            )
        try:
            audit.record(
                self.store,
                actor_of(principal, client),
                "request.denied",
                f"{method} {path}",
                outcome="denied",
                detail=detail,
            )
        except Exception:  # the refusal stands (403) even when it cannot be recorded
            log.exception("could not audit a refused request of key %s", principal.key_id)
            return False
        return True


def _principal(record: KeyRecord) -> Principal:
    limits = LimitsConfig(**record.limits) if record.limits else None
    return Principal(
        record.id,
        record.name,
        record.role,
        record.prefix,
        tuple(record.routes) if record.routes is not None else None,
        limits if limits is not None and not limits.empty() else None,
    )


def _cookie(header: str | None, name: str) -> str | None:
    if not header:
        return None
    for part in header.split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return None


def actor_of(principal: Principal | None, client: str | None = None) -> Actor:
    """The audit actor for a request."""
    source = f"api {client}" if client else "api"
    if principal is None:
        return Actor("anonymous", None, source)
    return Actor(principal.actor, principal.role, source)


# -- cross-site request forgery ------------------------------------------------------------------------
# The session cookie is SameSite=Strict, which stops other *sites*, but not another page on the same
# site (another port on 127.0.0.1, a sibling subdomain): a browser sends the cookie with its
# requests. So every state-changing request authenticated by the cookie must (1) come from this
# very origin, by `Sec-Fetch-Site` or `Origin`, and (2) carry a token derived from the session
# (hidden form field, or the `X-CSRF-Token` header that the dashboard's scripts send), which a page
# elsewhere cannot read. Requests with an `Authorization` header are not cookie-authenticated and
# not affected.

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def csrf_token(session: str) -> str:
    """The token that goes with a session cookie (the cookie is HttpOnly, so pages elsewhere can
    neither read it nor compute this)."""
    return hmac.new(session.encode(), b"shipyard-csrf", hashlib.sha256).hexdigest()[:40]


def session_of(headers: Mapping[str, str]) -> str | None:
    return _cookie(headers.get("cookie"), SESSION_COOKIE)


class CsrfGuard:
    """ASGI middleware for the dashboard and its API (see above). Form posts are read (at most
    ``max_form`` bytes) to find the token and then replayed to the app unchanged."""

    def __init__(self, app: Any, max_form: int = 64 * 1024) -> None:
        self.app = app
        self.max_form = max_form

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        problem = _cross_origin(scope, headers)
        session = session_of(headers)
        if problem is None and session and not headers.get("authorization"):
            token = headers.get(CSRF_HEADER)
            if token is None and headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"
            ):
                body, receive = await _buffer(receive, self.max_form)
                token = None if body is None else _form_field(body, CSRF_FIELD)
            if token is None or not hmac.compare_digest(token, csrf_token(session)):
                problem = (
                    "this change was sent with the dashboard's session but without its CSRF token; "
                    "reload the page and try again (scripts send the `X-CSRF-Token` header, or use an "
                    "API key in `Authorization`)"
                )
        if problem is None:
            await self.app(scope, receive, send)
            return
        body = error_json(problem, "permission_error", code="csrf")
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 403, "headers": head})
        await send({"type": "http.response.body", "body": body})


def _cross_origin(scope: Any, headers: Mapping[str, str]) -> str | None:
    """Why a state-changing request is not from this origin, or None. Browsers send
    `Sec-Fetch-Site` (and `Origin` on every non-GET); other clients send neither and pass."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"changes are only accepted from this dashboard's own pages (Sec-Fetch-Site: {site})"
    origin = headers.get("origin")
    if origin is not None and origin != "null":
        # Host and port, not the scheme: behind a TLS-terminating proxy the page is https and this
        # server sees http. A page elsewhere cannot set X-Forwarded-Host (a custom header needs a
        # CORS preflight, which this server never grants).
        netloc = origin.split("://", 1)[-1].rstrip("/").lower()
        hosts = {headers.get("host", "").lower(), headers.get("x-forwarded-host", "").lower()}
        if netloc not in hosts:
            return f"changes are only accepted from this dashboard's own pages (Origin: {origin[:100]})"
    elif origin == "null":
        return "changes are not accepted from an opaque origin (Origin: null)"
    return None


async def _buffer(receive: Any, limit: int) -> tuple[bytes | None, Any]:
    """Read the request body and a receive() that replays it; None when it exceeds ``limit`` (a
    dashboard form is a few hundred bytes)."""
    parts: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(parts)
    sent = False
    if size > limit:
        return None, receive

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _form_field(body: bytes, name: str) -> str | None:
    from urllib.parse import parse_qs

    values = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).get(name)
    return values[0] if values else None
