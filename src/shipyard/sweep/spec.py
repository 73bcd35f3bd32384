"""What a sweep tries: a YAML file (or the same on the command line) naming the eval suite, the
routes, and the values of each sampling parameter; the grid is every combination."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipyard.config.loader import read_document
from shipyard.errors import InvalidRequest

MAX_POINTS = (
    64  # each point is an eval run's worth of calls and a bench: a grid bigger than this is a mistake
)

# The parameters a sweep varies, with the range each must be in.
PARAMS: dict[str, tuple[type, float, float]] = {
    "temperature": (float, 0.0, 2.0),
    "top_p": (float, 0.0, 1.0),
    "max_tokens": (int, 1, 1_000_000),
}


class SweepError(InvalidRequest):
    """A sweep spec or option that cannot be used; the message names it and the fix."""


class BenchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests: int = Field(20, ge=1, le=10_000, description="Requests of the short bench per point.")
    concurrency: int = Field(2, ge=1, le=256, description="Concurrency of the short bench.")
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Seconds one bench request may take.")


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    suite: str = Field(
        ..., description="The eval suite file (its dataset and scorers; its targets are replaced)."
    )
    targets: list[str] = Field(
        ..., min_length=1, description="Routes to try (each pins a model and prompt version)."
    )
    params: dict[str, list[Any]] = Field(default_factory=dict, description="Values to try per parameter.")
    bench: BenchSpec = Field(default_factory=BenchSpec)


@dataclass(frozen=True)
class Point:
    """One combination: a route and the sampling parameters sent with every request."""

    route: str
    params: dict[str, Any]

    @property
    def label(self) -> str:
        shown = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        return f"{self.route} {shown}".strip()


def _check_values(name: str, values: Sequence[Any]) -> list[Any]:
    if name not in PARAMS:
        raise SweepError(
            f"params: `{name}` is not a parameter a sweep varies; use {', '.join(PARAMS)}", param="params"
        )
    kind, low, high = PARAMS[name]
    if not values:
        raise SweepError(f"params.{name}: give at least one value", param="params")
    out = []
    for v in values:
        ok = (
            isinstance(v, int | float)
            and not isinstance(v, bool)
            and (kind is float or float(v).is_integer())
        )
        if not ok or not low <= v <= high:
            what = "whole numbers" if kind is int else "numbers"
            raise SweepError(
                f"params.{name}: `{v}` is not allowed; use {what} from {low:g} to {high:g}", param="params"
            )
        out.append(int(v) if kind is int else float(v))
    if len(set(out)) != len(out):
        raise SweepError(f"params.{name}: a value is listed twice", param="params")
    return out


def parse_param_option(text: str) -> tuple[str, list[Any]]:
    """``temperature=0,0.7`` → ("temperature", [0.0, 0.7])."""
    name, sep, raw = text.partition("=")
    try:
        values = [float(v) for v in raw.split(",") if v.strip()] if sep else []
    except ValueError:
        values = []
    if not sep or not values:
        raise SweepError(
            f"--param: `{text}` is not NAME=V1,V2 (e.g. --param temperature=0,0.7)", param="param"
        )
    return name.strip(), _check_values(name.strip(), values)


def load_spec(path: Path) -> tuple[SweepSpec, Path]:
    """The spec and the directory its relative paths start from."""
    if not path.is_file():
        raise SweepError(f"--spec: no file at `{path}`", param="spec")
    doc = read_document(path.read_text("utf-8"), str(path))
    return build_spec(doc.raw, str(path)), path.resolve().parent


def build_spec(data: Any, source: str) -> SweepSpec:
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        raise SweepError(f"{source}: {where}: {first['msg']}", param="spec") from None
    for name, values in spec.params.items():
        spec.params[name] = _check_values(name, values)
    if len(set(spec.targets)) != len(spec.targets):
        raise SweepError(f"{source}: targets: a route is listed twice", param="targets")
    return spec


def grid(spec: SweepSpec) -> list[Point]:
    names = list(spec.params)
    points = [
        Point(route, dict(zip(names, combo, strict=True)))
        for route in spec.targets
        for combo in itertools.product(*(spec.params[n] for n in names))
    ]
    if len(points) > MAX_POINTS:
        raise SweepError(
            f"the grid has {len(points)} points, more than {MAX_POINTS}; list fewer routes or values",
            param="params",
        )
    return points


def merged(spec: SweepSpec, targets: Sequence[str], params: Mapping[str, list[Any]]) -> SweepSpec:
    """The spec with the command line's targets and parameters in place of the file's."""
    out = spec.model_copy(deep=True)
    if targets:
        out.targets = list(targets)
    out.params.update(params)
    return out
