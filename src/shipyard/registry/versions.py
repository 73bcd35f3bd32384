"""Versioned registry entities: providers, models, routes and prompts.

Every change is an immutable, content-addressed version (same content → same version, never a
duplicate), numbered per entity (v1, v2, …). Named aliases point at versions; `current` is the
one the gateway serves for providers, models and routes, and the default for prompt references
without an alias. Every alias move is recorded (who, when, from → to, why), and a running gateway
notices any change through `revision`, a counter bumped in the same transaction.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
import yaml

from shipyard.config.schema import check_name
from shipyard.errors import InvalidRequest, NotFound
from shipyard.store import audit
from shipyard.store.audit import Actor
from shipyard.store.db import Store, insert_row
from shipyard.store.tables import (
    registry_alias_events,
    registry_aliases,
    registry_entities,
    registry_state,
    registry_versions,
)

KINDS = ("provider", "model", "route", "prompt")
PLURALS = {"providers": "provider", "models": "model", "routes": "route", "prompts": "prompt"}
CURRENT = "current"
# At most 18 digits: a version number the store can hold (a longer one is no version, so 404).
_VERSION_REF = re.compile(r"^v?(\d{1,18})$")
_HASH_REF = re.compile(r"^[0-9a-f]{6,64}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


def _actor(actor: str | Actor | None) -> Actor:
    """Callers name who acts with a string (the command line) or an Actor (an API key's role too)."""
    if isinstance(actor, Actor):
        return actor
    return Actor(actor or "unknown", None, "cli")


def content_hash(kind: str, spec: dict[str, Any]) -> str:
    try:
        canonical = orjson.dumps({"kind": kind, "spec": spec}, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:  # an integer beyond 64 bits, or a value JSON has no form for
        raise InvalidRequest(
            f"the {kind} spec cannot be stored as JSON ({exc}); use numbers within 64 bits", param="spec"
        ) from None
    return hashlib.sha256(canonical).hexdigest()


def check_kind(kind: str) -> str:
    kind = PLURALS.get(kind, kind)
    if kind not in KINDS:
        raise InvalidRequest(f"unknown registry kind `{kind}`; one of {', '.join(KINDS)}", param="kind")
    return kind


def check_alias(alias: str) -> str:
    if not _ALIAS.match(alias) or _VERSION_REF.match(alias):
        raise InvalidRequest(
            f"alias `{alias}` is not valid: use letters, digits, `-` and `_`, starting with a letter, and "
            "nothing that looks like a version number (v3)",
            param="alias",
        )
    return alias


def split_ref(ref: str) -> tuple[str, str]:
    """`support@production` → (`support`, `production`); `support` → (`support`, `current`)."""
    name, _, version = ref.partition("@")
    if not name:
        raise InvalidRequest(f"`{ref}` is not a reference: write `name`, `name@alias` or `name@v3`")
    return name, version or CURRENT


@dataclass
class Version:
    kind: str
    name: str
    version: int
    hash: str
    spec: dict[str, Any]
    created_at: float
    created_by: str | None = None
    message: str | None = None
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "hash": self.hash,
            "spec": self.spec,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "message": self.message,
            "aliases": self.aliases,
        }


@dataclass
class AliasEvent:
    kind: str
    name: str
    alias: str
    from_version: int | None
    to_version: int
    at: float
    actor: str | None
    reason: str | None
    evidence: Any = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Change:
    """What `put` did: `created` a new version, `unchanged` (already current), or `restored` an
    older version with the same content (moving `current` back to it)."""

    status: str
    version: Version
    previous: int | None
    aliases_created: list[str] = field(default_factory=list)


class Registry:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reading ---------------------------------------------------------------------------------
    def revision(self) -> int:
        with self.store.engine.connect() as conn:
            return int(conn.execute(sa.select(registry_state.c.revision)).scalar() or 0)

    def _entity_id(self, conn: sa.Connection, kind: str, name: str) -> int | None:
        q = sa.select(registry_entities.c.id).where(
            registry_entities.c.kind == kind, registry_entities.c.name == name
        )
        value = conn.execute(q).scalar()
        return None if value is None else int(value)

    def _require_entity(self, conn: sa.Connection, kind: str, name: str) -> int:
        entity_id = self._entity_id(conn, kind, name)
        if entity_id is None:
            known = self._names(conn, kind)
            raise NotFound(
                f"{kind} `{name}` does not exist; known {kind}s: {', '.join(known) or '(none)'}", param="name"
            )
        return entity_id

    def _names(self, conn: sa.Connection, kind: str) -> list[str]:
        q = sa.select(registry_entities.c.name).where(registry_entities.c.kind == kind)
        return sorted(str(n) for n in conn.execute(q).scalars())

    def _aliases(self, conn: sa.Connection, entity_id: int) -> dict[str, int]:
        q = sa.select(registry_aliases.c.alias, registry_aliases.c.version).where(
            registry_aliases.c.entity_id == entity_id
        )
        return {str(a): int(v) for a, v in conn.execute(q)}

    def _version(self, conn: sa.Connection, kind: str, name: str, entity_id: int, number: int) -> Version:
        row = conn.execute(
            sa.select(registry_versions).where(
                registry_versions.c.entity_id == entity_id, registry_versions.c.version == number
            )
        ).first()
        if row is None:
            existing = conn.execute(
                sa.select(sa.func.max(registry_versions.c.version)).where(
                    registry_versions.c.entity_id == entity_id
                )
            ).scalar()
            raise NotFound(
                f"{kind} `{name}` has no version {number}; the newest is v{existing}", param="version"
            )
        aliases = self._aliases(conn, entity_id)
        return Version(
            kind=kind,
            name=name,
            version=int(row.version),
            hash=str(row.hash),
            spec=dict(row.spec),
            created_at=float(row.created_at),
            created_by=row.created_by,
            message=row.message,
            aliases=sorted(a for a, v in aliases.items() if v == row.version),
        )

    def _resolve(self, conn: sa.Connection, kind: str, name: str, entity_id: int, ref: str) -> int:
        """Version number for `ref`: `v3` / `3`, an alias, or a hash prefix (6+ hex digits)."""
        ref = (ref or CURRENT).strip()
        m = _VERSION_REF.match(ref)
        if m:
            return int(m.group(1))
        aliases = self._aliases(conn, entity_id)
        if ref in aliases:
            return aliases[ref]
        if _HASH_REF.match(ref):
            rows = conn.execute(
                sa.select(registry_versions.c.version).where(
                    registry_versions.c.entity_id == entity_id, registry_versions.c.hash.like(ref + "%")
                )
            ).all()
            if len(rows) == 1:
                return int(rows[0][0])
        raise NotFound(
            f"{kind} `{name}` has no alias or version `{ref}`; aliases: "
            f"{', '.join(f'{a} → v{v}' for a, v in sorted(aliases.items())) or '(none)'}",
            param="ref",
        )

    def get(self, kind: str, name: str, ref: str = CURRENT) -> Version:
        kind = check_kind(kind)
        with self.store.engine.connect() as conn:
            entity_id = self._require_entity(conn, kind, name)
            return self._version(conn, kind, name, entity_id, self._resolve(conn, kind, name, entity_id, ref))

    def get_ref(self, kind: str, ref: str) -> Version:
        name, version = split_ref(ref)
        return self.get(kind, name, version)

    def versions(self, kind: str, name: str) -> list[Version]:
        kind = check_kind(kind)
        with self.store.engine.connect() as conn:
            entity_id = self._require_entity(conn, kind, name)
            aliases = self._aliases(conn, entity_id)
            rows = conn.execute(
                sa.select(registry_versions)
                .where(registry_versions.c.entity_id == entity_id)
                .order_by(registry_versions.c.version)
            )
            return [
                Version(
                    kind,
                    name,
                    int(r.version),
                    str(r.hash),
                    dict(r.spec),
                    float(r.created_at),
                    r.created_by,
                    r.message,
                    sorted(a for a, v in aliases.items() if v == r.version),
                )
                for r in rows
            ]

    def entities(self, kind: str) -> list[dict[str, Any]]:
        """Every entity of a kind: name, current version, number of versions, aliases."""
        kind = check_kind(kind)
        with self.store.engine.connect() as conn:
            counts = (
                sa.select(
                    registry_versions.c.entity_id,
                    sa.func.count().label("n"),
                    sa.func.max(registry_versions.c.created_at).label("updated"),
                )
                .group_by(registry_versions.c.entity_id)
                .subquery()
            )
            rows = conn.execute(
                sa.select(registry_entities.c.id, registry_entities.c.name, counts.c.n, counts.c.updated)
                .join(counts, counts.c.entity_id == registry_entities.c.id)
                .where(registry_entities.c.kind == kind)
                .order_by(registry_entities.c.name)
            ).all()
            out = []
            for r in rows:
                aliases = self._aliases(conn, int(r.id))
                out.append(
                    {
                        "kind": kind,
                        "name": r.name,
                        "current": aliases.get(CURRENT),
                        "versions": int(r.n),
                        "aliases": aliases,
                        "updated_at": float(r.updated),
                    }
                )
            return out

    def history(self, kind: str, name: str, alias: str | None = None) -> list[AliasEvent]:
        kind = check_kind(kind)
        with self.store.engine.connect() as conn:
            entity_id = self._require_entity(conn, kind, name)
            q = sa.select(registry_alias_events).where(registry_alias_events.c.entity_id == entity_id)
            if alias:
                q = q.where(registry_alias_events.c.alias == alias)
            rows = conn.execute(q.order_by(registry_alias_events.c.id)).all()
            return [
                AliasEvent(
                    kind,
                    name,
                    r.alias,
                    r.from_version,
                    int(r.to_version),
                    float(r.at),
                    r.actor,
                    r.reason,
                    r.evidence,
                )
                for r in rows
            ]

    def diff(self, kind: str, name: str, a: str, b: str) -> str:
        """A unified diff of two versions' specs, as YAML (messages, params, targets…)."""
        va, vb = self.get(kind, name, a), self.get(kind, name, b)
        left = spec_yaml(va.spec).splitlines(keepends=True)
        right = spec_yaml(vb.spec).splitlines(keepends=True)
        return "".join(difflib.unified_diff(left, right, fromfile=va.ref, tofile=vb.ref))

    # -- writing ---------------------------------------------------------------------------------
    def put(
        self,
        kind: str,
        name: str,
        spec: dict[str, Any],
        *,
        actor: str | Actor | None,
        message: str | None = None,
        aliases: list[str] | tuple[str, ...] = (),
        conn: sa.Connection | None = None,
    ) -> Change:
        """Record `spec` as the current version of `name` (content-addressed)."""
        kind = check_kind(kind)
        check_name(name, f"{kind} name")
        who = _actor(actor)
        actor = who.name
        if conn is None:
            with self.store.write() as own:
                return self.put(kind, name, spec, actor=who, message=message, aliases=aliases, conn=own)
        now = time.time()
        digest = content_hash(kind, spec)
        entity_id = self._entity_id(conn, kind, name)
        if entity_id is None:
            entity_id = insert_row(conn, registry_entities, kind=kind, name=name, created_at=now)
        current = self._aliases(conn, entity_id).get(CURRENT)
        row = conn.execute(
            sa.select(registry_versions.c.version).where(
                registry_versions.c.entity_id == entity_id, registry_versions.c.hash == digest
            )
        ).first()
        if row is not None:
            number = int(row[0])
            status = "unchanged" if number == current else "restored"
        else:
            latest = conn.execute(
                sa.select(sa.func.max(registry_versions.c.version)).where(
                    registry_versions.c.entity_id == entity_id
                )
            ).scalar()
            number = int(latest or 0) + 1
            conn.execute(
                registry_versions.insert().values(
                    entity_id=entity_id,
                    version=number,
                    hash=digest,
                    spec=spec,
                    created_at=now,
                    created_by=actor,
                    message=message,
                )
            )
            status = "created"
        changed = status != "unchanged"
        if changed:
            self._move(
                conn, entity_id, CURRENT, current, number, actor, message or f"{status} v{number}", None
            )
        created_aliases = []
        existing = self._aliases(conn, entity_id)
        for alias in aliases:
            if alias not in existing:
                check_alias(alias)
                self._move(conn, entity_id, alias, None, number, actor, "declared in config", None)
                created_aliases.append(alias)
        if changed or created_aliases:
            self._bump(conn)
        if changed:
            before_spec = None
            if current is not None:
                before_spec = self._version(conn, kind, name, entity_id, current).spec
            audit.record(
                self.store,
                who,
                f"{kind}.put",
                f"{kind}:{name}",
                before=None if before_spec is None else {"version": current, "spec": before_spec},
                after={"version": number, "spec": spec, "status": status},
                detail=message,
                conn=conn,
            )
        for alias in created_aliases:
            audit.record(
                self.store, who, "alias.set", f"{kind}:{name}@{alias}", after={"version": number}, conn=conn
            )
        return Change(status, self._version(conn, kind, name, entity_id, number), current, created_aliases)

    def set_alias(
        self,
        kind: str,
        name: str,
        alias: str,
        ref: str,
        *,
        actor: str | Actor | None,
        reason: str | None = None,
        evidence: Any = None,
    ) -> AliasEvent:
        kind = check_kind(kind)
        who = _actor(actor)
        actor = who.name
        if alias != CURRENT:
            check_alias(alias)
        with self.store.write() as conn:
            entity_id = self._require_entity(conn, kind, name)
            target = self._resolve(conn, kind, name, entity_id, ref)
            self._version(conn, kind, name, entity_id, target)  # exists?
            before = self._aliases(conn, entity_id).get(alias)
            if before == target:  # already there: nothing moves, nothing is recorded
                now = time.time()
                return AliasEvent(kind, name, alias, before, target, now, actor, "unchanged", evidence)
            event = self._move(conn, entity_id, alias, before, target, actor, reason, evidence)
            self._bump(conn)
            audit.record(
                self.store,
                who,
                "alias.set",
                f"{kind}:{name}@{alias}",
                before=None if before is None else {"version": before},
                after={"version": target},
                detail=reason,
                conn=conn,
            )
        return AliasEvent(kind, name, alias, before, target, event, actor, reason, evidence)

    def rollback(
        self, kind: str, name: str, alias: str, *, actor: str | Actor | None, reason: str | None = None
    ) -> AliasEvent:
        """Move `alias` back to where it pointed before its latest move."""
        kind = check_kind(kind)
        who = _actor(actor)
        actor = who.name
        with self.store.write() as conn:
            entity_id = self._require_entity(conn, kind, name)
            last = conn.execute(
                sa.select(registry_alias_events)
                .where(registry_alias_events.c.entity_id == entity_id, registry_alias_events.c.alias == alias)
                .order_by(registry_alias_events.c.id.desc())
                .limit(1)
            ).first()
            if last is None:
                raise NotFound(f"{kind} `{name}` has no alias `{alias}`", param="alias")
            if last.from_version is None:
                raise InvalidRequest(
                    f"alias `{alias}` of {kind} `{name}` was created at v{last.to_version} and has never "
                    "moved; there is nothing to roll back to",
                    param="alias",
                )
            target = int(last.from_version)
            why = reason or f"rollback of the move v{last.from_version} → v{last.to_version}"
            at = self._move(conn, entity_id, alias, int(last.to_version), target, actor, why, None)
            self._bump(conn)
            audit.record(
                self.store,
                who,
                "alias.rollback",
                f"{kind}:{name}@{alias}",
                before={"version": int(last.to_version)},
                after={"version": target},
                detail=why,
                conn=conn,
            )
        return AliasEvent(kind, name, alias, int(last.to_version), target, at, actor, why)

    def _move(
        self,
        conn: sa.Connection,
        entity_id: int,
        alias: str,
        before: int | None,
        target: int,
        actor: str | None,
        reason: str | None,
        evidence: Any,
    ) -> float:
        now = time.time()
        if before is None:
            conn.execute(
                registry_aliases.insert().values(
                    entity_id=entity_id, alias=alias, version=target, updated_at=now
                )
            )
        else:
            conn.execute(
                registry_aliases.update()
                .where(registry_aliases.c.entity_id == entity_id, registry_aliases.c.alias == alias)
                .values(version=target, updated_at=now)
            )
        conn.execute(
            registry_alias_events.insert().values(
                entity_id=entity_id,
                alias=alias,
                from_version=before,
                to_version=target,
                at=now,
                actor=actor,
                reason=reason,
                evidence=evidence,
            )
        )
        return now

    def _bump(self, conn: sa.Connection) -> None:
        updated = conn.execute(registry_state.update().values(revision=registry_state.c.revision + 1))
        if not updated.rowcount:
            conn.execute(registry_state.insert().values(id=1, revision=1))

    # -- the live view ---------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Current specs, aliases and version hashes of every entity, taken in one read."""
        with self.store.engine.connect() as conn:
            revision = int(conn.execute(sa.select(registry_state.c.revision)).scalar() or 0)
            names = {
                int(r.id): (str(r.kind), str(r.name))
                for r in conn.execute(
                    sa.select(
                        registry_entities.c.id, registry_entities.c.kind, registry_entities.c.name
                    ).order_by(registry_entities.c.id)
                )
            }
            snap = Snapshot(revision)
            for r in conn.execute(
                sa.select(registry_aliases.c.entity_id, registry_aliases.c.alias, registry_aliases.c.version)
            ):
                snap.aliases.setdefault(names[int(r.entity_id)], {})[str(r.alias)] = int(r.version)
            wanted = {key: aliases.get(CURRENT) for key, aliases in snap.aliases.items()}
            for r in conn.execute(
                sa.select(
                    registry_versions.c.entity_id, registry_versions.c.version, registry_versions.c.hash
                )
            ):
                key = names[int(r.entity_id)]
                snap.hashes.setdefault(key, {})[str(r.hash)] = int(r.version)
                snap.newest[key] = max(snap.newest.get(key, 0), int(r.version))
            current = (
                sa.select(
                    registry_versions.c.entity_id,
                    registry_versions.c.version,
                    registry_versions.c.hash,
                    registry_versions.c.spec,
                )
                .join(
                    registry_aliases,
                    sa.and_(
                        registry_aliases.c.entity_id == registry_versions.c.entity_id,
                        registry_aliases.c.alias == CURRENT,
                        registry_aliases.c.version == registry_versions.c.version,
                    ),
                )
                .order_by(registry_versions.c.entity_id)
            )
            for c in conn.execute(current):
                key = names[int(c.entity_id)]
                if wanted.get(key) == int(c.version):
                    snap.current[key] = (int(c.version), str(c.hash), dict(c.spec))
        return snap


@dataclass
class Snapshot:
    revision: int
    current: dict[tuple[str, str], tuple[int, str, dict[str, Any]]] = field(default_factory=dict)
    aliases: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    hashes: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    newest: dict[tuple[str, str], int] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[tuple[str, int, str, dict[str, Any]]]:
        return [(name, v, h, spec) for (k, name), (v, h, spec) in self.current.items() if k == kind]

    def is_empty(self) -> bool:
        return not self.current


def spec_yaml(spec: dict[str, Any]) -> str:
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
