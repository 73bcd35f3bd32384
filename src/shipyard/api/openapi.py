"""Every answer of the admin API in its OpenAPI schema, the 4xx ones included, each with the one
error envelope (``{"error": {"message", "type", "param", "code"}}``).

FastAPI documents the successes from the response models and a 422 that this API never sends (its
validation errors are 400s in the error envelope). :func:`document_errors` rewrites each operation's
4xx answers from what applies to every operation of its shape, so no route can forget them:

- 401 and 403 on every operation: every one needs a key whose role allows it;
- 400 where there is anything to validate: a parameter or a body;
- 404 where a path names something (a run, a dataset, a version…);
- 413 where there is a body (setting ``api_max_body_bytes``; artifacts: ``artifact_max_bytes``).

What only some routes answer (a 409 on a clash, a 404 for a filter that names a run) each route
declares with :func:`errors`. ``tests/test_schemathesis.py`` checks every status the server sends
against this schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

_DEFAULTS: dict[int, str] = {
    400: "The request is malformed: the message names the parameter or field (`param`) and the fix.",
    401: "No API key (or dashboard session), or one that is unknown, revoked or expired.",
    403: "The key's role does not allow this method and path (`permission_denied`); or a change "
    "sent with the dashboard's session but without its CSRF token (`csrf`).",
    404: "What the path names does not exist; the message says what does.",
    409: "The change clashes with what exists; the message says what to do instead.",
    413: "The body is larger than the setting `api_max_body_bytes` (artifact uploads: `artifact_max_bytes`).",
}
_UNUSED = ("HTTPValidationError", "ValidationError")
_ERROR_REF = {"$ref": "#/components/schemas/Error"}


class ErrorDetail(BaseModel):
    message: str = Field(description="What is wrong and, where there is one, the fix.")
    type: str = Field(description="invalid_request_error, authentication_error, permission_error, conflict…")
    param: str | None = Field(description="The parameter or field at fault, if one is.")
    code: str | None = Field(description="A stable code where the type is not enough, e.g. `dataset_exists`.")


class Error(BaseModel):
    """The error envelope of every Shipyard HTTP answer (OpenAI's error shape)."""

    error: ErrorDetail


def errors(*codes: int, notes: Mapping[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: the 4xx it answers beyond those of its shape, with why."""
    notes = notes or {}
    return {code: {"model": Error, "description": notes.get(code) or _DEFAULTS[code]} for code in codes}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite ``schema`` (in place) so that every operation lists the 4xx it can answer."""
    for operation in _operations(schema):
        responses: dict[str, Any] = operation["responses"]
        responses.pop("422", None)
        parameters = operation.get("parameters", [])
        body = "requestBody" in operation
        applies = {401, 403}
        if parameters or body:
            applies.add(400)
        if any(p.get("in") == "path" for p in parameters):
            applies.add(404)
        if body:
            applies.add(413)
        for status in applies:
            responses.setdefault(str(status), {"description": _DEFAULTS[status]})
        for code, response in responses.items():
            if code.startswith("4"):
                response["content"] = {"application/json": {"schema": _ERROR_REF}}
        operation["responses"] = dict(sorted(responses.items()))
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in _UNUSED:
        schemas.pop(name, None)
    error = Error.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in {**error.pop("$defs", {}), "Error": error}.items():
        schemas.setdefault(name, definition)
    return schema


def _operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [op for item in schema.get("paths", {}).values() for op in item.values() if isinstance(op, dict)]
