"""Structured output: the output is JSON, or JSON that validates against a JSON Schema.

``jsonschema`` is imported where a schema is checked, not at module level: every process that
loads the plugins (the gateway too) imports the scorers.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import Field, field_validator

from shipyard.evals.core import Case, Observation, Score, ScoreContext, ScorerOptions
from shipyard.evals.scorers.base import BaseScorer, Unscorable, clip, one_line

# A whole output that is one Markdown code block, as chat models like to wrap JSON.
_FENCE = re.compile(r"\A\s*```[\w+-]*[ \t]*\r?\n(.*?)\r?\n?```\s*\Z", re.DOTALL)


def parse_json_output(output: str, fenced: bool) -> tuple[Any, str]:
    """The JSON document in the output and how it was found; raises Unscorable when there is none."""
    if not output.strip():
        raise Unscorable("output is empty, not JSON")
    try:
        return json.loads(output), "output"
    except json.JSONDecodeError as exc:
        error = exc
    match = _FENCE.match(output) if fenced else None
    if match is not None:
        try:
            return json.loads(match.group(1)), "the code block in the output"
        except json.JSONDecodeError as exc:
            raise Unscorable(f"the code block in the output is not valid JSON: {exc}") from None
    raise Unscorable(f"output is not valid JSON: {error} (starts {clip(output, 30)})")


FENCED_HELP = (
    "Also accept an output that is one Markdown code block (```json … ```), as chat models often "
    "wrap JSON in one."
)


class IsJsonOptions(ScorerOptions):
    fenced: bool = Field(True, description=FENCED_HELP)


class IsJsonScorer(BaseScorer):
    """1 when the output parses as JSON, else 0."""

    type = "is_json"
    options: IsJsonOptions

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        document, where = parse_json_output(observation.output, self.options.fenced)
        return self.result(1.0, f"{where} is valid JSON ({type(document).__name__})")


class JsonSchemaOptions(ScorerOptions):
    schema_: dict[str, Any] = Field(
        alias="schema",
        description="JSON Schema (inline) the output must validate against; its `$schema` picks the "
        "draft (default: the latest jsonschema supports).",
    )
    formats: bool = Field(
        True, description="Check `format` keywords too (date-time, email, uri…), not only types."
    )
    fenced: bool = Field(True, description=FENCED_HELP)

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        # Imported here: every process that loads the plugins (the gateway too) imports this module.
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
            raise ValueError(f"not a valid JSON Schema at {where}: {exc.message}") from None
        return schema


class JsonSchemaScorer(BaseScorer):
    """1 when the output is JSON that validates against the schema, else 0; the errors go to details."""

    type = "json_schema"
    options: JsonSchemaOptions

    def __init__(self, options: JsonSchemaOptions) -> None:
        super().__init__(options)
        import jsonschema

        cls = jsonschema.validators.validator_for(options.schema_)
        checker = cls.FORMAT_CHECKER if options.formats else None
        self.validator = cls(options.schema_, format_checker=checker)

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        document, where = parse_json_output(observation.output, self.options.fenced)
        errors = sorted(self.validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
        if not errors:
            return self.result(1.0, f"{where} is JSON that matches the schema")
        found = [{"path": e.json_path, "message": e.message} for e in errors[:20]]
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return self.result(
            0.0,
            f"{where} does not match the schema: at {first.json_path}: {one_line(first.message, 150)}{more}",
            {"errors": found, "error_count": len(errors)},
        )
