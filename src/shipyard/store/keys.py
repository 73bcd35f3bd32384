"""API keys in the store: created (the secret returned once), listed, looked up by hash, revoked.

Every change is audited in the same transaction (``shipyard.store.audit``).
"""

from __future__ import annotations

import hashlib
import secrets
import string
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from shipyard.errors import Conflict, InvalidRequest, NotFound
from shipyard.store import audit
from shipyard.store.audit import Actor
from shipyard.store.db import Store
from shipyard.store.tables import api_keys

KEY_PREFIX = "sk-shp-"
_ALPHABET = string.ascii_letters + string.digits
KEY_BODY = 40  # base62 characters: 238 bits
SHOWN = len(KEY_PREFIX) + 6  # characters of a key that lists show
ROLES = ("admin", "developer", "viewer", "client")


def new_secret() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(KEY_BODY))


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(secret: str) -> bool:
    body = secret[len(KEY_PREFIX) :]
    return secret.startswith(KEY_PREFIX) and len(body) == KEY_BODY and all(c in _ALPHABET for c in body)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    name: str
    prefix: str
    role: str
    routes: list[str] | None
    limits: dict[str, Any] | None
    created_at: float
    created_by: str | None
    expires_at: float | None
    revoked_at: float | None
    revoked_by: str | None
    last_used_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > time.time())

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= time.time():
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "role": self.role,
            "routes": self.routes,
            "limits": self.limits,
            "status": self.status,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "revoked_by": self.revoked_by,
            "last_used_at": self.last_used_at,
        }

    def audit_view(self) -> dict[str, Any]:
        """What the audit log keeps of a key: never the secret, nor its hash."""
        view = self.to_dict()
        for volatile in ("last_used_at", "status"):
            view.pop(volatile)
        return view


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        role=row.role,
        routes=list(row.routes) if row.routes is not None else None,
        limits=dict(row.limits) if row.limits else None,
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
        last_used_at=row.last_used_at,
    )


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidRequest(f"`role` must be one of {', '.join(ROLES)}, not `{role}`", param="role")
    return role


def create(
    store: Store,
    name: str,
    role: str,
    actor: Actor,
    *,
    routes: list[str] | None = None,
    limits: dict[str, Any] | None = None,
    expires_at: float | None = None,
    secret: str | None = None,
) -> tuple[KeyRecord, str]:
    """A new key; returns its record and the secret, which is stored nowhere and shown only now.
    ``secret`` imports a given key (the `admin_key` setting) instead of generating one."""
    name = name.strip()
    if not name or len(name) > 128:
        raise InvalidRequest("`name` must be 1 to 128 characters, e.g. `support-bot`", param="name")
    check_role(role)
    if secret is None:
        secret = new_secret()
    elif not looks_like_key(secret):
        raise InvalidRequest(
            f"a Shipyard key is `{KEY_PREFIX}` followed by {KEY_BODY} letters and digits; "
            "create one with `shipyard keys create`",
            param="key",
        )
    now = time.time()
    key_id = "key_" + secrets.token_hex(6)
    values = {
        "id": key_id,
        "name": name,
        "prefix": secret[:SHOWN],
        "hash": key_hash(secret),
        "role": role,
        "routes": sorted(set(routes)) if routes is not None else None,
        "limits": limits or None,
        "created_at": now,
        "created_by": actor.name,
        "expires_at": expires_at,
        "updated_at": now,
    }
    with store.write() as conn:
        exists = conn.execute(sa.select(api_keys.c.id).where(api_keys.c.hash == values["hash"])).first()
        if exists is not None:
            raise Conflict(f"that key already exists as `{exists.id}`", param="key")
        conn.execute(api_keys.insert().values(**values))
        record = _record(conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).one())
        audit.record(store, actor, "key.create", f"key:{key_id}", after=record.audit_view(), conn=conn)
    return record, secret


def get(store: Store, key_id: str) -> KeyRecord:
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
    if row is None:
        raise NotFound(f"no API key `{key_id}`; `shipyard keys list` shows the keys", param="key_id")
    return _record(row)


def find(store: Store, ref: str) -> KeyRecord:
    """A key by id, by its visible prefix, or by name (when exactly one active key has it)."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(api_keys).where(
                sa.or_(api_keys.c.id == ref, api_keys.c.prefix == ref, api_keys.c.name == ref)
            )
        ).all()
    records = [_record(r) for r in rows]
    exact = [r for r in records if r.id == ref]
    if exact:
        return exact[0]
    if len(records) > 1:
        active = [r for r in records if r.active]
        if len(active) == 1:
            return active[0]
        raise InvalidRequest(
            f"`{ref}` names {len(records)} keys ({', '.join(r.id for r in records)}); use the key id",
            param="key_id",
        )
    if not records:
        raise NotFound(f"no API key `{ref}` (id, prefix or name); `shipyard keys list` shows them")
    return records[0]


def by_hash(store: Store, digest: str) -> KeyRecord | None:
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.hash == digest)).first()
    return None if row is None else _record(row)


def list_keys(
    store: Store,
    include_revoked: bool = False,
    *,
    after: tuple[float, str] | None = None,
    limit: int | None = None,
) -> list[KeyRecord]:
    """Oldest first; ``after`` (a key's ``created_at`` and ``id``) pages on."""
    c = api_keys.c
    q = sa.select(api_keys).order_by(c.created_at, c.id).limit(limit)
    if not include_revoked:
        q = q.where(c.revoked_at.is_(None))
    if after is not None:
        created, id_ = after
        q = q.where(c.created_at >= created, sa.or_(c.created_at > created, c.id > id_))
    with store.engine.connect() as conn:
        return [_record(r) for r in conn.execute(q)]


def count_admins(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(api_keys)
                .where(api_keys.c.role == "admin", api_keys.c.revoked_at.is_(None))
            ).scalar()
            or 0
        )


def _existing(conn: sa.Connection, key_id: str) -> KeyRecord:
    """The key as it is before a change; NotFound for an id no key has."""
    row = conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).first()
    if row is None:
        raise NotFound(f"no API key `{key_id}`; `shipyard keys list` shows the keys", param="key_id")
    return _record(row)


def revoke(store: Store, key_id: str, actor: Actor) -> KeyRecord:
    with store.write() as conn:
        before = _existing(conn, key_id)
        if before.revoked_at is not None:
            return before  # revoking twice changes nothing and records nothing
        now = time.time()
        conn.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id)
            .values(revoked_at=now, revoked_by=actor.name, updated_at=now)
        )
        after = _record(conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).one())
        audit.record(
            store,
            actor,
            "key.revoke",
            f"key:{key_id}",
            before=before.audit_view(),
            after=after.audit_view(),
            conn=conn,
        )
    return after


_UNSET: Any = object()


def update(
    store: Store,
    key_id: str,
    actor: Actor,
    *,
    name: str | None = None,
    role: str | None = None,
    routes: Any = _UNSET,
    limits: Any = _UNSET,
    expires_at: Any = _UNSET,
) -> KeyRecord:
    """Change a key's name, role, route scope, limits (a budget change is audited as
    ``key.limits``) or expiry. The secret never changes: to rotate, create a key and revoke this one."""
    changes: dict[str, Any] = {}
    if name is not None:
        if not name.strip() or len(name) > 128:
            raise InvalidRequest("`name` must be 1 to 128 characters", param="name")
        changes["name"] = name.strip()
    if role is not None:
        changes["role"] = check_role(role)
    if routes is not _UNSET:
        changes["routes"] = sorted(set(routes)) if routes is not None else None
    if limits is not _UNSET:
        changes["limits"] = limits or None
    if expires_at is not _UNSET:
        changes["expires_at"] = expires_at
    with store.write() as conn:
        before = _existing(conn, key_id)
        if before.revoked_at is not None:
            raise InvalidRequest(f"key `{key_id}` is revoked; create a new one", param="key_id")
        if not changes:
            return before
        conn.execute(
            api_keys.update().where(api_keys.c.id == key_id).values(**changes, updated_at=time.time())
        )
        after = _record(conn.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).one())
        action = "key.limits" if set(changes) == {"limits"} else "key.update"
        audit.record(
            store,
            actor,
            action,
            f"key:{key_id}",
            before=before.audit_view(),
            after=after.audit_view(),
            conn=conn,
        )
    return after


def touch(store: Store, used: dict[str, float]) -> None:
    """Record when keys were last used (batched by the auth service, off the request path)."""
    if not used:
        return
    with store.write() as conn:
        for key_id, at in used.items():
            conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=at))


def revision(store: Store) -> float:
    """Moves whenever a key is created or changed: running gateways compare it to reload keys."""
    with store.engine.connect() as conn:
        value = conn.execute(sa.select(sa.func.max(api_keys.c.updated_at))).scalar()
    return float(value or 0.0)


def digest_of(store: Store, key_id: str) -> str | None:
    """The stored hash of a key (dashboard sessions are signed with it)."""
    with store.engine.connect() as conn:
        value = conn.execute(sa.select(api_keys.c.hash).where(api_keys.c.id == key_id)).scalar()
    return None if value is None else str(value)
