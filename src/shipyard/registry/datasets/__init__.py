"""Versioned datasets: the service layer behind ``shipyard datasets`` and ``/api/datasets``.

A dataset is a name; its content lives in immutable, numbered versions. A version is
content-addressed: its hash is the sha256 of its examples in canonical JSON, in order, so writing
the same examples again returns the existing version instead of a copy, and an export imported
elsewhere has the same hash.

Each version is written in one transaction together with its examples (and the dataset row when
an import or a from-traces run creates it): on any error, nothing is written.

Import from here; the modules behind it are one seam each:

- ``examples``: what an example is (validation with errors that say where), its canonical form,
  the content hash and dedupe;
- ``service``: datasets and versions, reading and writing (``create_version``, which every way in
  writes through);
- ``files``: JSONL, CSV and YAML in (``import_examples``) and JSONL out (``export_jsonl``);
- ``traces``: a version built from stored traces, PII scrubbed on request (``from_traces``).
"""

from __future__ import annotations

from shipyard.registry.datasets.examples import (
    EXAMPLE_KEYS,
    Locate,
    content_hash,
    dedupe_examples,
    validate_examples,
)
from shipyard.registry.datasets.files import (
    FORMATS,
    export_jsonl,
    format_for_path,
    import_examples,
    parse_examples,
)
from shipyard.registry.datasets.service import (
    DatasetInfo,
    Example,
    ExamplesPage,
    Progress,
    VersionInfo,
    WriteResult,
    check_name,
    create_dataset,
    create_version,
    get_dataset,
    get_examples,
    list_datasets,
    list_versions,
    parse_ref,
    resolve,
    resolve_version_id,
)
from shipyard.registry.datasets.traces import from_traces
from shipyard.store.datasets import TraceSelection

__all__ = [
    "EXAMPLE_KEYS",
    "FORMATS",
    "DatasetInfo",
    "Example",
    "ExamplesPage",
    "Locate",
    "Progress",
    "TraceSelection",
    "VersionInfo",
    "WriteResult",
    "check_name",
    "content_hash",
    "create_dataset",
    "create_version",
    "dedupe_examples",
    "export_jsonl",
    "format_for_path",
    "from_traces",
    "get_dataset",
    "get_examples",
    "import_examples",
    "list_datasets",
    "list_versions",
    "parse_examples",
    "parse_ref",
    "resolve",
    "resolve_version_id",
    "validate_examples",
]
