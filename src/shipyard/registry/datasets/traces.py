"""Datasets built from stored traces: each chat or completion trace that matches a selection
becomes an example that keeps its lineage (trace id, route, model, prompt version), optionally with
PII scrubbed before anything is stored and repeats dropped.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from shipyard.errors import InvalidRequest
from shipyard.guard import pii
from shipyard.registry.datasets.examples import check_example, locate_at
from shipyard.registry.datasets.service import WriteResult, check_name, create_version
from shipyard.store import datasets as q
from shipyard.store.datasets import TraceSelection
from shipyard.store.db import Store
from shipyard.store.feedback import check_filter as check_feedback_filter


def _trace_input(row: dict[str, Any]) -> Any:
    """What a trace contributes as ``input``: its template variables when a prompt rendered it,
    else its chat messages, else its completion prompt as ``{"prompt": …}``; None when not captured."""
    variables = (row.get("attributes") or {}).get("shipyard.variables")
    if isinstance(variables, dict):
        return variables
    value = row.get("input")
    if value is None:
        return None
    if row.get("operation") == "chat":
        return value
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return {"prompt": value}


def from_traces(
    store: Store,
    name: str,
    selection: TraceSelection,
    *,
    expected_from_output: bool = True,
    scrub_pii: bool = False,
    dedupe: bool = False,
    message: str | None = None,
    actor: str | None = None,
) -> WriteResult:
    """A version of ``name`` from stored traces (the dataset is created if needed).

    Each example keeps its trace id and gets metadata ``trace_id``, ``route``, ``model``,
    ``prompt``, ``prompt_version``; the trace's answer becomes ``expected`` unless
    ``expected_from_output`` is off. ``scrub_pii`` replaces e-mail addresses, phone numbers, card
    numbers and IBANs in input and expected with typed markers before anything is stored.
    """
    check_name(name)
    if selection.status is not None and selection.status not in ("ok", "error"):
        raise InvalidRequest(f"`status` must be `ok` or `error`; got `{selection.status}`", param="status")
    if selection.limit is not None and selection.limit < 1:
        raise InvalidRequest(f"`limit` must be >= 1; got {selection.limit}", param="limit")
    if selection.feedback is not None:
        check_feedback_filter(selection.feedback)
    filters = {k: v for k, v in asdict(selection).items() if v is not None}
    rows = q.select_traces(store, selection)
    examples = []
    skipped = 0
    for r in rows:
        inp = _trace_input(r)
        expected = r["output"] if expected_from_output else None
        if scrub_pii:
            inp, expected = pii.scrub(inp), pii.scrub(expected)
        raw = {
            "input": inp,
            "expected": expected,
            "metadata": {
                "trace_id": r["trace_id"],
                "route": r["route"],
                "model": r["model"],
                "prompt": r["prompt"],
                "prompt_version": r["prompt_version"],
            },
            "tags": [t for t in (r["tags"] or []) if isinstance(t, str)],
        }
        try:
            example = check_example(raw, locate_at(f"trace {r['trace_id']}"))
        except InvalidRequest:
            # Not captured (capture_messages=none) or not a usable shape: not an example.
            skipped += 1
            continue
        example["trace_id"] = r["trace_id"]
        examples.append(example)
    if not examples:
        shown = ", ".join(f"{k}={v}" for k, v in filters.items()) or "none"
        why = f"; {skipped} matched but had no captured input (setting `capture_messages`)" if skipped else ""
        raise InvalidRequest(
            f"no chat or completion traces match the filters ({shown}){why}; "
            "`shipyard traces list` shows what is stored",
            param="filters",
            code="no_matching_traces",
        )
    source = {
        "type": "traces",
        "filters": filters,
        "matched": len(rows),
        "expected_from_output": expected_from_output,
        "scrub_pii": scrub_pii,
        "dedupe": dedupe,
    }
    result = create_version(
        store,
        name,
        examples,
        message=message,
        dedupe=dedupe,
        source=source,
        actor=actor,
        create_missing=True,
        validated=True,
    )
    result.skipped = skipped
    return result
