"""What an example is, and when two are the same.

An example is ``input`` (an object of template variables, or a list of chat messages), an optional
``expected`` (any JSON), ``metadata`` (an object) and ``tags`` (strings). Every way in — the API,
JSONL / CSV / YAML files, traces — goes through ``check_example``, and every error says where
(example index, file line) and which field, so the user can fix the input without guessing.

A version's hash and deduplication both read an example in one canonical JSON form, so the same
examples hash the same on SQLite and Postgres, and after an export and a re-import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from shipyard.errors import InvalidRequest

EXAMPLE_KEYS = ("input", "expected", "metadata", "tags")

# -- validation -------------------------------------------------------------------------------------
# Says where an example came from, for error messages: given the field at fault (or None for the
# example as a whole) it returns e.g. "examples[3]" or "data.yaml line 12".
Locate = Callable[[str | None], str]

_KIND = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
}


def locate_at(label: str) -> Locate:
    """A locator for sources that know only the example's position, not each field's."""

    def locate(_field: str | None) -> str:
        return label

    return locate


def kind_of(value: Any) -> str:
    return "null" if value is None else _KIND.get(type(value), type(value).__name__)


def _check_messages(messages: list[Any], where: Locate, param: str | None) -> None:
    if not messages:
        raise InvalidRequest(
            f"{where('input')}: `input` is an empty list; a list of chat messages needs at least one "
            'message like {"role": "user", "content": "…"}',
            param=param and f"{param}.input",
        )
    for j, m in enumerate(messages):
        at = f"input[{j}]"
        p = param and f"{param}.{at}"
        if not isinstance(m, dict):
            raise InvalidRequest(
                f'{where("input")}: `{at}` must be a message object like {{"role": "user", "content": "…"}}; '
                f"got {kind_of(m)}",
                param=p,
            )
        role = m.get("role")
        if not isinstance(role, str) or not role:
            raise InvalidRequest(
                f"{where('input')}: `{at}.role` is required: a string such as system, user or assistant",
                param=p and f"{p}.role",
            )
        if "content" not in m:
            raise InvalidRequest(f"{where('input')}: `{at}.content` is required", param=p and f"{p}.content")
        content = m["content"]
        tool_call = content is None and ("tool_calls" in m or "function_call" in m)
        if not (isinstance(content, str | list) or tool_call):
            raise InvalidRequest(
                f"{where('input')}: `{at}.content` must be a string or a list of content parts; "
                f"got {kind_of(content)}",
                param=p and f"{p}.content",
            )


def check_example(raw: Any, where: Locate, param: str | None = None) -> dict[str, Any]:
    """One example, validated and normalized (metadata → object, tags → list, JSON-only values)."""
    if not isinstance(raw, dict):
        raise InvalidRequest(
            f"{where(None)}: an example must be an object with `input` (and optionally `expected`, "
            f"`metadata`, `tags`); got {kind_of(raw)}",
            param=param,
        )
    unknown = [k for k in raw if k not in EXAMPLE_KEYS]
    if unknown:
        raise InvalidRequest(
            f"{where(str(unknown[0]))}: unknown key `{unknown[0]}`; an example has only "
            + ", ".join(f"`{k}`" for k in EXAMPLE_KEYS)
            + " (put anything else under `metadata`)",
            param=param and f"{param}.{unknown[0]}",
        )
    inp = raw.get("input")
    if inp is None:
        raise InvalidRequest(
            f"{where('input')}: `input` is required: an object of template variables "
            '(e.g. {"question": "…"}) or a list of chat messages',
            param=param and f"{param}.input",
        )
    if isinstance(inp, list):
        _check_messages(inp, where, param)
    elif not isinstance(inp, dict):
        raise InvalidRequest(
            f"{where('input')}: `input` must be an object of template variables "
            f'(e.g. {{"question": "…"}}) or a list of chat messages; got {kind_of(inp)}',
            param=param and f"{param}.input",
        )
    metadata = raw.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequest(
            f"{where('metadata')}: `metadata` must be an object; got {kind_of(metadata)}",
            param=param and f"{param}.metadata",
        )
    tags = raw.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise InvalidRequest(
            f'{where("tags")}: `tags` must be a list of strings, e.g. ["refund", "hard"]',
            param=param and f"{param}.tags",
        )
    example = {"input": inp, "expected": raw.get("expected"), "metadata": metadata or {}, "tags": tags or []}
    try:
        # Through JSON and back: what is hashed is exactly what the store will hand back (YAML dates
        # become ISO strings, tuples lists), and non-JSON values are caught here with a location.
        normalized: dict[str, Any] = orjson.loads(orjson.dumps(example))
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise InvalidRequest(f"{where(None)}: not representable as JSON: {exc}", param=param) from None
    return normalized


def validate_examples(raw: Any, param: str = "examples") -> list[dict[str, Any]]:
    """Examples sent as JSON (API, Python): errors name ``examples[i]`` and the field."""
    if not isinstance(raw, list):
        raise InvalidRequest(f"`{param}` must be a list of examples; got {kind_of(raw)}", param=param)
    out = []
    for i, ex in enumerate(raw):
        label = f"{param}[{i}]"
        out.append(check_example(ex, locate_at(label), label))
    return out


# -- identity: the canonical form, the content hash, dedupe -----------------------------------------
def public_fields(ex: dict[str, Any]) -> dict[str, Any]:
    """The four fields that are the example: what is hashed and exported (not the store's index or
    lineage columns)."""
    return {
        "input": ex["input"],
        "expected": ex.get("expected"),
        "metadata": ex.get("metadata") or {},
        "tags": ex.get("tags") or [],
    }


def _integral_floats_as_ints(value: Any) -> Any:
    # JSON has one number type, and stores disagree on 1.0 vs 1 (SQLite hands a bare 1.0 back as
    # 1, Postgres keeps 1.0), so the canonical form writes integral numbers without a fraction,
    # as RFC 8785 (JSON canonicalization) does.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    return value


def _canonical(value: Any) -> bytes:
    return orjson.dumps(_integral_floats_as_ints(value), option=orjson.OPT_SORT_KEYS)


def content_hash(examples: Sequence[dict[str, Any]]) -> str:
    """sha256 over the examples in order, each as canonical JSON (sorted keys) on its own line."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(_canonical(public_fields(ex)))
        h.update(b"\n")
    return h.hexdigest()


def dedupe_examples(examples: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Drop examples whose (input, expected) was seen before; keep the first. Returns (kept, removed)."""
    seen: set[bytes] = set()
    kept = []
    for ex in examples:
        key = _canonical([ex["input"], ex.get("expected")])
        if key in seen:
            continue
        seen.add(key)
        kept.append(ex)
    return kept, len(examples) - len(kept)


def lineage_trace_id(example: dict[str, Any]) -> str | None:
    # An exported example built from a trace carries its trace id in metadata; re-importing it
    # keeps the lineage column filled.
    tid = (example.get("metadata") or {}).get("trace_id")
    return tid if isinstance(tid, str) and 0 < len(tid) <= 32 else None
