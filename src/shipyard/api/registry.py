"""Registry endpoints: versions, aliases, history, diffs and rollbacks of prompts, models, routes
and providers; `apply` and `export` for config as code. Thin: the work is in the registry."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from shipyard.api import deps, pages
from shipyard.api.pages import Page
from shipyard.config.loader import read_document
from shipyard.errors import InvalidRequest
from shipyard.registry.apply import apply, export
from shipyard.registry.prompts import Prompt, variables_of
from shipyard.registry.versions import CURRENT, PLURALS, Registry
from shipyard.store.audit import Actor
from shipyard.store.db import Store

router = APIRouter(tags=["registry"])


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VersionOut(BaseModel):
    kind: str
    name: str
    version: int
    hash: str
    spec: dict[str, Any]
    created_at: float
    created_by: str | None
    message: str | None
    aliases: list[str]
    variables: list[str] | None = None
    status: str | None = Field(None, description="On create: create, update, restore or unchanged.")


class EntityOut(BaseModel):
    kind: str
    name: str
    current: int | None
    versions: int
    aliases: dict[str, int]
    updated_at: float


class AliasEventOut(BaseModel):
    kind: str
    name: str
    alias: str
    from_version: int | None
    to_version: int
    at: float
    actor: str | None
    reason: str | None
    evidence: Any = None


class CreateVersion(Strict):
    name: str = Field(..., description="Entity name.")
    spec: dict[str, Any] = Field(..., description="Same keys as an entry in shipyard.yaml, without `name`.")
    message: str | None = None


class MoveAlias(Strict):
    version: str = Field(..., description="v3, 3, another alias, or a hash prefix.")
    reason: str | None = None


class Rollback(Strict):
    reason: str | None = None


class RenderPrompt(Strict):
    version: str = Field(CURRENT, description="Version, alias or hash prefix to render.")
    variables: dict[str, Any] = Field(default_factory=dict)


class ApplyIn(Strict):
    yaml: str = Field(..., description="A shipyard.yaml document.")
    dry_run: bool = False
    message: str | None = None


def _registry(store: Store = Depends(deps.store)) -> Registry:
    return Registry(store)


def _out(version: Any, status: str | None = None) -> VersionOut:
    data = version.to_dict()
    if version.kind == "prompt":
        data["variables"] = variables_of(version.spec.get("messages", []))
    return VersionOut(**data, status=status)


@router.post("/apply", summary="Plan (and unless dry_run, apply) a shipyard.yaml")
def apply_config(
    body: ApplyIn, registry: Registry = Depends(_registry), actor: Actor = Depends(deps.audit_actor)
) -> dict[str, Any]:
    plan = apply(
        registry,
        read_document(body.yaml, "request body"),
        actor=actor,
        dry_run=body.dry_run,
        message=body.message,
    )
    return plan.to_dict()


@router.get("/export", response_class=PlainTextResponse, summary="The registry as a shipyard.yaml")
def export_config(registry: Registry = Depends(_registry)) -> str:
    return export(registry)


def _kind_router(plural: str) -> APIRouter:
    """The same endpoints for every kind, under its own prefix (so paths never shadow /datasets
    or /runs, and the OpenAPI schema lists each kind)."""
    single = PLURALS[plural]
    r = APIRouter(prefix=f"/{plural}", tags=[plural])

    @r.get(
        "", response_model=Page[EntityOut], summary=f"List {plural} by name, with current version and aliases"
    )
    def list_entities(
        limit: int = pages.limit_query(100, 1000),
        cursor: str | None = pages.cursor_query(),
        registry: Registry = Depends(_registry),
    ) -> dict[str, Any]:
        position = pages.decode(cursor, plural, (str,))
        return pages.page_after(registry.entities(single), lambda e: (e["name"],), position, limit, plural)

    @r.post("", response_model=VersionOut, summary=f"Record a {single} version (content-addressed)")
    def create_version(
        body: CreateVersion, registry: Registry = Depends(_registry), actor: Actor = Depends(deps.audit_actor)
    ) -> VersionOut:
        spec = {k: v for k, v in body.spec.items() if k != "name"}
        text = yaml.safe_dump({plural: [{"name": body.name, **spec}]}, sort_keys=False, allow_unicode=True)
        plan = apply(
            registry, read_document(text, f"{single} `{body.name}`"), actor=actor, message=body.message
        )
        item = plan.items[0]
        return _out(registry.get(single, body.name, f"v{item.version}"), item.action)

    @r.get("/{name}", response_model=VersionOut, summary=f"A {single} version (default: current)")
    def get_version(
        name: str,
        ref: str = Query(CURRENT, description="Version, alias or hash prefix."),
        registry: Registry = Depends(_registry),
    ) -> VersionOut:
        return _out(registry.get(single, name, ref))

    @r.get(
        "/{name}/versions",
        response_model=Page[VersionOut],
        summary=f"The versions of a {single}, oldest first",
    )
    def list_versions(
        name: str,
        limit: int = pages.limit_query(100, 1000),
        cursor: str | None = pages.cursor_query(),
        registry: Registry = Depends(_registry),
    ) -> dict[str, Any]:
        kind = f"{single}-versions"
        position = pages.decode(cursor, kind, (int,))
        versions = [_out(v) for v in registry.versions(single, name)]
        return pages.page_after(versions, lambda v: (v.version,), position, limit, kind)

    @r.get(
        "/{name}/versions/{ref}", response_model=VersionOut, summary="One version by number, alias or hash"
    )
    def get_ref(name: str, ref: str, registry: Registry = Depends(_registry)) -> VersionOut:
        return _out(registry.get(single, name, ref))

    @r.get("/{name}/diff", summary="Unified diff between two versions")
    def diff(
        name: str,
        a: str = Query(..., alias="from"),
        b: str = Query(CURRENT, alias="to"),
        registry: Registry = Depends(_registry),
    ) -> dict[str, Any]:
        va, vb = registry.get(single, name, a), registry.get(single, name, b)
        return {"from": va.ref, "to": vb.ref, "diff": registry.diff(single, name, a, b)}

    @r.put("/{name}/aliases/{alias}", response_model=AliasEventOut, summary="Move (or create) an alias")
    def move_alias(
        name: str,
        alias: str,
        body: MoveAlias,
        registry: Registry = Depends(_registry),
        actor: Actor = Depends(deps.audit_actor),
    ) -> dict[str, Any]:
        return registry.set_alias(
            single, name, alias, body.version, actor=actor, reason=body.reason
        ).to_dict()

    @r.post(
        "/{name}/aliases/{alias}/rollback",
        response_model=AliasEventOut,
        summary="Move an alias back to its previous version",
    )
    def rollback(
        name: str,
        alias: str,
        body: Rollback | None = Body(None),
        registry: Registry = Depends(_registry),
        actor: Actor = Depends(deps.audit_actor),
    ) -> dict[str, Any]:
        return registry.rollback(
            single, name, alias, actor=actor, reason=body.reason if body else None
        ).to_dict()

    @r.get("/{name}/history", response_model=Page[AliasEventOut], summary="Alias moves, oldest first")
    def history(
        name: str,
        alias: str | None = None,
        limit: int = pages.limit_query(100, 1000),
        cursor: str | None = pages.cursor_query(),
        registry: Registry = Depends(_registry),
    ) -> dict[str, Any]:
        # The moves are only ever appended: a position in them stays where it was.
        kind = f"{single}-history"
        start = pages.index(cursor, kind)
        moves = [e.to_dict() for e in registry.history(single, name, alias)[start : start + limit + 1]]
        return pages.page(moves, limit, kind, lambda _: (start + limit,))

    return r


@router.post("/prompts/{name}/render", summary="Render a prompt version with variables (a preview)")
def render(name: str, body: RenderPrompt, registry: Registry = Depends(_registry)) -> dict[str, Any]:
    v = registry.get("prompt", name, body.version)
    if not isinstance(body.variables, dict):
        raise InvalidRequest("`variables` must be an object", param="variables")
    prompt = Prompt.from_spec(v.name, v.version, v.hash, v.spec)
    return {"prompt": v.ref, "messages": prompt.render(body.variables), "params": prompt.params}


for _plural in ("prompts", "models", "routes", "providers"):
    router.include_router(_kind_router(_plural))
