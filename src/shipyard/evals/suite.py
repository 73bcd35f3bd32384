"""Eval suites: what to run (a dataset), against what (targets), and how to judge it (scorers).

A suite is a YAML file (or the same dict from Python)::

    name: support-quality
    dataset:
      file: cases.jsonl            # or `cases: [...]` inline, or `registry: support-qa@v3`
    targets:
      - route: support             # a route in the registry
      - prompt: support@v3         # a prompt version on a registry model
        model: gemma3-270m
      - endpoint: {base_url: http://localhost:8000/v1, model: llama3}   # any OpenAI-compatible API
    scorers:
      - {type: contains, threshold: 1}
    pass_rate_min: 0.9

Problems are reported with the line of the suite file, like ``shipyard.yaml``'s.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shipyard.config.loader import Document, read_document, substitute_env, validation_problems
from shipyard.config.schema import NAME_PATTERN
from shipyard.errors import ConfigError, InvalidRequest
from shipyard.evals.core import Case, Scorer


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InlineCase(Strict):
    id: str | None = Field(None, description="Stable id used in reports and baselines; default: case-N.")
    input: dict[str, Any] | list[dict[str, Any]] = Field(
        ..., description="Template variables (object) or chat messages (list)."
    )
    expected: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)


class DatasetSpec(Strict):
    cases: list[InlineCase] | None = Field(None, description="Cases written in the suite.")
    file: str | None = Field(None, description="JSONL, CSV or YAML file, relative to the suite file.")
    registry: str | None = Field(
        None, description="A registry dataset version: `name@v3` (or `name` = latest)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DatasetSpec:
        given = [k for k in ("cases", "file", "registry") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of `cases`, `file` or `registry` (got {', '.join(given) or 'none'})"
            )
        return self


class EndpointSpec(Strict):
    base_url: str = Field(..., description="OpenAI-compatible base URL including /v1.")
    model: str = Field(..., description="Model name the endpoint knows.")
    api_key: str | None = Field(None, description="Use `${ENV_VAR}`.")
    headers: dict[str, str] = Field(default_factory=dict)


class TargetSpec(Strict):
    label: str | None = Field(None, description="Name in reports; default derived from the target.")
    route: str | None = Field(None, description="A route of the registry (its current version).")
    model: str | None = Field(None, description="A model of the registry, with `prompt` or message cases.")
    endpoint: EndpointSpec | None = Field(None, description="Any OpenAI-compatible endpoint.")
    prompt: str | None = Field(
        None, description="Prompt reference (`name@alias`, `name@v3`); with `route`, replaces the route's."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Request params for this target.")
    pass_rate_min: float | None = Field(
        None,
        ge=0,
        le=1,
        description="This target's threshold gate, instead of the suite's (0: measure only).",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> TargetSpec:
        given = [k for k in ("route", "model", "endpoint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of `route`, `model` or `endpoint` (got {', '.join(given) or 'none'})"
            )
        return self

    def default_label(self) -> str:
        if self.label:
            return self.label
        if self.route:
            return self.route + (f" [{self.prompt}]" if self.prompt else "")
        base = self.model or (self.endpoint.model if self.endpoint else "target")
        return f"{self.prompt} on {base}" if self.prompt else base


class SuiteSpec(Strict):
    name: str = Field(..., pattern=NAME_PATTERN, description="Identifies the suite across runs (baselines).")
    description: str = ""
    dataset: DatasetSpec
    targets: list[TargetSpec] = Field(..., min_length=1)
    scorers: list[dict[str, Any]] = Field(..., min_length=1, description="See docs/evals.md for the types.")
    repeats: int = Field(
        1, ge=1, le=50, description="Runs of each case per target; varying verdicts = flaky."
    )
    concurrency: int = Field(4, ge=1, le=512, description="Cases in flight at once.")
    params: dict[str, Any] = Field(default_factory=dict, description="Request params for every target.")
    stream: bool = Field(False, description="Stream answers (measures time to first token).")
    pass_rate_min: float | None = Field(
        None,
        ge=0,
        le=1,
        description="The threshold gate: each target's pass rate must reach it (default 1.0).",
    )


@dataclass
class Suite:
    spec: SuiteSpec
    scorers: list[Scorer]
    source: str
    base_dir: Path
    labels: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name


def load_suite(path: str | Path) -> Suite:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"suite file `{p}` does not exist")
    return parse_suite(p.read_text("utf-8"), str(p), p.resolve().parent)


def parse_suite(text: str, source: str = "suite.yaml", base_dir: Path | None = None) -> Suite:
    return suite_from_document(read_document(text, source), base_dir or Path.cwd())


def suite_from_dict(data: dict[str, Any], source: str = "suite", base_dir: Path | None = None) -> Suite:
    """The same suite from Python: a dict shaped like the YAML file."""
    from shipyard.config.loader import YamlReader

    return suite_from_document(Document(source, data, YamlReader(source)), base_dir or Path.cwd())


def suite_from_document(doc: Document, base_dir: Path) -> Suite:
    from shipyard.evals.scorers import build_scorers

    problems: list[str] = []
    data = substitute_env(doc.raw, os.environ, doc.where, problems)
    if problems:
        raise ConfigError(f"{doc.source} has {len(problems)} problem(s):", problems)
    try:
        spec = SuiteSpec.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, doc.where, SuiteSpec)
        raise ConfigError(f"{doc.source} has {len(problems)} problem(s):", problems) from None
    try:
        scorers = build_scorers(spec.scorers)
    except ConfigError as exc:
        located = []
        for problem in exc.problems or [exc.message]:
            m = re.match(r"scorers\[(\d+)\](?:\.(\w+))?", problem)
            path: tuple[str | int, ...] = ("scorers",)
            if m:
                path = ("scorers", int(m.group(1))) + ((m.group(2),) if m.group(2) else ())
            located.append(f"{doc.where(path)}: {problem}")
        raise ConfigError(f"{doc.source} has {len(located)} problem(s):", located) from None
    labels = [t.default_label() for t in spec.targets]
    for label in {x for x in labels if labels.count(x) > 1}:
        raise ConfigError(
            f"{doc.where(('targets',))}: two targets are labelled `{label}`; give each a distinct `label:`"
        )
    if spec.dataset.file is not None and not (base_dir / spec.dataset.file).is_file():
        raise ConfigError(
            f"{doc.where(('dataset', 'file'))}: dataset.file: `{spec.dataset.file}` does not exist "
            f"(looked in {base_dir})"
        )
    return Suite(spec, scorers, doc.source, base_dir, labels)


# -- cases ------------------------------------------------------------------------------------------
def _case(raw: dict[str, Any], default_id: str) -> Case:
    metadata = dict(raw.get("metadata") or {})
    case_id = raw.get("id") or metadata.get("id") or default_id
    return Case(
        id=str(case_id),
        input=raw["input"],
        expected=raw.get("expected"),
        metadata=metadata,
        tags=list(raw.get("tags") or []),
    )


def iter_cases(suite: Suite, store: Any = None) -> Iterator[Case]:
    """The suite's cases in order, streamed where the source allows (JSONL files, registry)."""
    ds = suite.spec.dataset
    if ds.cases is not None:
        for i, c in enumerate(ds.cases):
            yield _case(c.model_dump(), f"case-{i + 1}")
        return
    if ds.registry is not None:
        from shipyard.registry import datasets
        from shipyard.store.datasets import iter_examples

        if store is None:
            raise InvalidRequest("a registry dataset needs the store")
        info, version_id = datasets.resolve_version_id(store, ds.registry)
        for row in iter_examples(store, version_id):
            yield _case(row, f"{info.dataset}#{row['idx']}")
        return
    assert ds.file is not None
    path = suite.base_dir / ds.file
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        from shipyard.registry.datasets import validate_examples

        with path.open("rb") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    raw = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise InvalidRequest(f"{path}:{n}: not valid JSON: {exc}") from None
                try:
                    (example,) = validate_examples([raw])
                except InvalidRequest as exc:
                    raise InvalidRequest(f"{path}:{n}: {exc.message}") from None
                yield _case(example, f"case-{n}")
        return
    from shipyard.registry.datasets import format_for_path, parse_examples

    examples = parse_examples(path.read_text("utf-8"), format_for_path(path), str(path))
    for i, example in enumerate(examples):
        yield _case(example, f"case-{i + 1}")


def count_cases(suite: Suite, store: Any = None) -> int:
    ds = suite.spec.dataset
    if ds.cases is not None:
        return len(ds.cases)
    if ds.registry is not None:
        from shipyard.registry import datasets

        return datasets.resolve(store, ds.registry).n_examples
    assert ds.file is not None
    path = suite.base_dir / ds.file
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with path.open("rb") as f:
            return sum(1 for line in f if line.strip())
    return sum(1 for _ in iter_cases(suite, store))
