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
import time
from collections.abc import Mapping
from dataclasses import dataclass

from shipyard.config.schema import LimitsConfig
from shipyard.errors import Unauthorized
from shipyard.store import keys
from shipyard.store.audit import Actor
from shipyard.store.db import Store
from shipyard.store.keys import KeyRecord

ROLES = ("admin", "developer", "viewer", "client")
# What each role may do, as a level: reading the admin API and the dashboard needs `viewer`,
# changing things needs `developer`, keys, budgets and the audit log need `admin`.
LEVEL = {"client": 0, "viewer": 1, "developer": 2, "admin": 3}


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
    # A session cookie is `key_id.expiry.mac`, the MAC keyed with the key's stored hash: no server
    # secret to manage across workers, and revoking the key ends its sessions.
    def session_cookie(self, secret: str) -> tuple[str, Principal]:
        principal = self.principal(secret)
        expiry = int(time.time() + self.session_ttl)
        payload = f"{principal.key_id}.{expiry}"
        mac = hmac.new(keys.key_hash(secret).encode(), payload.encode(), hashlib.sha256).hexdigest()
        return f"{payload}.{mac}", principal

    def from_session(self, cookie: str) -> Principal:
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[1].isdigit():
            raise Unauthorized("the dashboard session is not valid; log in again at /login")
        key_id, expiry, mac = parts
        if int(expiry) < time.time():
            raise Unauthorized("the dashboard session has expired; log in again at /login")
        digest = self._digests.get(key_id)
        if digest is None:
            digest = keys.digest_of(self.store, key_id)
            if digest is not None:
                self._digests[key_id] = digest
        expected = (
            hmac.new(digest.encode(), f"{key_id}.{expiry}".encode(), hashlib.sha256).hexdigest()
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
