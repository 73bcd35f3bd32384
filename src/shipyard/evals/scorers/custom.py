"""Custom scorers: a user's Python function, named as ``module:function`` in the suite."""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from typing import Any

from pydantic import Field, field_validator

from shipyard.evals.core import Case, Observation, Score, ScoreContext, ScorerOptions
from shipyard.evals.scorers.base import BaseScorer, clip


def resolve_function(ref: str) -> Callable[..., Any]:
    """``package.module:function`` (or ``module:Class.method``) to the callable; ValueError naming
    the reference when it cannot be imported."""
    module_name, sep, attr_path = ref.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"`{ref}` is not of the form `module:function`")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of user code is this reference's problem
        raise ValueError(
            f"cannot import module `{module_name}` for `{ref}`: {type(exc).__name__}: {exc}"
        ) from None
    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module `{module_name}` has no `{attr_path}` (from `{ref}`)") from None
    if not callable(target):
        raise ValueError(f"`{ref}` is a {type(target).__name__}, not a function")
    return target


class CustomOptions(ScorerOptions):
    function: str = Field(
        description="`module:function` to call with (case, observation), sync or async; it returns a "
        "float in [0, 1], a bool, a (float, explanation) tuple or a Score. The module must be importable "
        "(installed, or on PYTHONPATH)."
    )

    @field_validator("function")
    @classmethod
    def _importable(cls, ref: str) -> str:
        resolve_function(ref)
        return ref


class CustomScorer(BaseScorer):
    """Your own Python function as a scorer. ``passed`` is always value >= this scorer's threshold
    (a returned Score's own ``passed`` is recomputed), so a suite's threshold means the same for all.
    A sync function runs on the event loop: make slow ones async."""

    type = "custom"
    options: CustomOptions

    def __init__(self, options: CustomOptions) -> None:
        super().__init__(options)
        self.function = resolve_function(options.function)

    async def evaluate(self, case: Case, observation: Observation, ctx: ScoreContext) -> Score:
        ref = self.options.function
        try:
            returned = self.function(case, observation)
            if inspect.isawaitable(returned):
                returned = await returned
        except Exception as exc:
            exc.add_note(f"raised by custom scorer `{self.name}` (`{ref}`) on case `{case.id}`")
            raise
        value, explanation, details = self._unpack(returned)
        if not math.isfinite(value) or not 0 <= value <= 1:
            raise ValueError(f"custom scorer `{ref}` returned {value!r}; a score must be in [0, 1]")
        return self.result(value, explanation or f"`{ref}` returned {value:g}", details)

    def _unpack(self, returned: Any) -> tuple[float, str, dict[str, Any]]:
        ref = self.options.function
        if isinstance(returned, Score):
            return float(returned.value), returned.explanation, returned.details
        if isinstance(returned, bool):
            return float(returned), f"`{ref}` returned {returned}", {}
        if isinstance(returned, int | float):
            return float(returned), "", {}
        if (
            isinstance(returned, tuple)
            and len(returned) == 2
            and isinstance(returned[0], int | float)
            and isinstance(returned[1], str)
        ):
            return float(returned[0]), returned[1], {}
        raise TypeError(
            f"custom scorer `{ref}` returned {type(returned).__name__} {clip(repr(returned), 40)}; it must "
            "return a float in [0, 1], a bool, a (float, str) tuple or a Score"
        )
