"""Prompt templates: a list of chat messages whose contents are sandboxed Jinja2.

Templates come from people (and from the registry API), so they render in Jinja2's sandbox: no
attribute access to Python internals, no imports. Undefined variables are errors, never silently
empty strings — a prompt that lost its customer name should fail loudly, naming the variable.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from shipyard.errors import InvalidRequest


@functools.cache
def _env() -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
    )


def check_templates(messages: list[dict[str, Any]]) -> list[str]:
    """Syntax problems, one string per broken message (empty when all compile)."""
    problems = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if not isinstance(content, str):
            continue
        try:
            _env().parse(content)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(
                f"messages[{i}].content: template syntax error on line {exc.lineno}: {exc.message}"
            )
    return problems


def variables_of(messages: list[dict[str, Any]]) -> list[str]:
    """Every variable the templates use, sorted."""
    found: set[str] = set()
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            try:
                found |= meta.find_undeclared_variables(_env().parse(content))
            except jinja2.TemplateSyntaxError:
                continue
    return sorted(found)


@dataclass
class Prompt:
    """One prompt version, ready to render."""

    name: str
    version: int
    hash: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    response_schema: dict[str, Any] | None = None
    variables: list[str] = field(default_factory=list)

    @classmethod
    def from_spec(cls, name: str, version: int, hash_: str, spec: dict[str, Any]) -> Prompt:
        messages = [dict(m) for m in spec.get("messages") or []]
        problems = check_templates(messages)
        if problems:
            raise InvalidRequest(f"prompt `{name}` v{version}: " + "; ".join(problems))
        return cls(
            name=name,
            version=version,
            hash=hash_,
            messages=messages,
            params=dict(spec.get("params") or {}),
            response_schema=spec.get("response_schema"),
            variables=variables_of(messages),
        )

    @functools.cached_property
    def _templates(self) -> list[jinja2.Template]:
        return [_env().from_string(m["content"]) for m in self.messages]

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    def render(self, variables: dict[str, Any]) -> list[dict[str, Any]]:
        missing = [v for v in self.variables if v not in variables]
        if missing:
            raise InvalidRequest(
                f"prompt `{self.ref}` needs variable(s) {', '.join(f'`{m}`' for m in missing)}; send them in "
                f"`variables` (it uses: {', '.join(self.variables)})",
                param="variables",
            )
        out = []
        for m, template in zip(self.messages, self._templates, strict=True):
            try:
                content = template.render(**variables)
            except jinja2.TemplateError as exc:
                raise InvalidRequest(
                    f"prompt `{self.ref}` failed to render: {exc}", param="variables"
                ) from None
            out.append({"role": m["role"], "content": content})
        return out
