"""Running a drift check: parse the windows, draw both samples, compare them, store the report.

:func:`run_drift` is the one entry point (the CLI, the API and the scheduler call it);
:class:`DriftConfig` is one scheduled check of ``monitoring.drift`` in shipyard.yaml, and
:func:`run_config` runs it. Too few traces in either sample (below ``min_samples``) raise
:class:`InsufficientSamples` and write no report, so a quiet route does not fill the table with
empty reports.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shipyard.durations import parse_duration
from shipyard.errors import InvalidRequest
from shipyard.monitoring.drift.checks import (
    DEFAULT_ALPHA,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_PSI_THRESHOLD,
    compare,
)
from shipyard.monitoring.drift.report import DriftReport
from shipyard.monitoring.drift.sampling import DEFAULT_MAX_SAMPLES, Sample, load_sample
from shipyard.monitoring.drift.windows import (
    DEFAULT_CURRENT,
    DEFAULT_REFERENCE,
    WindowSpec,
    check_disjoint,
    parse_spec,
)
from shipyard.store import drift as q
from shipyard.store.db import Store

log = logging.getLogger("shipyard.monitoring.drift")


class InsufficientSamples(InvalidRequest):
    """A sample has fewer traces than ``min_samples``: there is nothing trustworthy to compare."""

    code = "insufficient_samples"


class DriftConfig(BaseModel):
    """One scheduled drift check (``monitoring.drift`` in shipyard.yaml)."""

    model_config = ConfigDict(extra="forbid")

    route: str = Field(min_length=1, description="The route whose traffic is checked.")
    reference: str = Field(DEFAULT_REFERENCE, description="Window spec of the reference sample.")
    current: str = Field(DEFAULT_CURRENT, description="Window spec of the current sample.")
    every: str = Field("15m", description="How often the check runs: a duration such as 15m or 1h.")
    min_samples: int = Field(
        DEFAULT_MIN_SAMPLES, ge=5, description="Fewer traces than this in a sample: the check is skipped."
    )
    max_samples: int = Field(
        DEFAULT_MAX_SAMPLES, ge=5, le=20000, description="Larger samples are cut to a seeded random subset."
    )
    alpha: float = Field(
        DEFAULT_ALPHA, gt=0, lt=1, description="Significance level after the Bonferroni correction."
    )
    psi_threshold: float | None = Field(
        DEFAULT_PSI_THRESHOLD, gt=0, description="A PSI at or above this also means drift; null turns it off."
    )
    seed: int = Field(0, ge=0, description="Seeds sampling, permutations and clustering.")

    @field_validator("reference", "current")
    @classmethod
    def _spec(cls, value: str, info: Any) -> str:
        try:
            parse_spec(value, info.field_name)
        except InvalidRequest as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator("every")
    @classmethod
    def _every(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be longer than 0s")
        return value

    @model_validator(mode="after")
    def _sizes(self) -> DriftConfig:
        if self.max_samples < self.min_samples:
            raise ValueError(f"max_samples ({self.max_samples}) is below min_samples ({self.min_samples})")
        return self

    @property
    def interval_s(self) -> float:
        return parse_duration(self.every)


def _check_params(
    route: str, alpha: float, min_samples: int, max_samples: int, psi_threshold: float | None
) -> None:
    if not isinstance(route, str) or not route.strip():
        raise InvalidRequest("`route` is empty; name the route whose traffic to check", param="route")
    if not 0 < alpha < 1:
        raise InvalidRequest(f"`alpha` must be between 0 and 1 (e.g. 0.01); got {alpha}", param="alpha")
    if min_samples < 5:
        raise InvalidRequest(f"`min_samples` must be at least 5; got {min_samples}", param="min_samples")
    if max_samples < min_samples:
        raise InvalidRequest(
            f"`max_samples` ({max_samples}) must be at least `min_samples` ({min_samples})",
            param="max_samples",
        )
    if psi_threshold is not None and psi_threshold <= 0:
        raise InvalidRequest(
            f"`psi_threshold` must be above 0 (0.25 is a major shift); got {psi_threshold}",
            param="psi_threshold",
        )


def _too_few(store: Store, route: str, which: str, sample: Sample, min_samples: int) -> InsufficientSamples:
    src = sample.source
    if src["kind"] == "dataset":
        where = f"dataset `{src['dataset']}@v{src['version']}` has {src['n_examples']} example(s)"
        fix = "use a larger dataset version or lower `min_samples`"
    else:
        where = (
            f"the {which} window `{src['spec']}` ({src['since_iso']} to {src['until_iso']}) has "
            f"{src['n_sampled']} successful trace(s) of route `{route}`"
        )
        fix = f"widen the {which} window or lower `min_samples`"
        if src["n_in_window"] == 0:
            others = q.routes_in_window(store, src["since"], src["until"])
            fix += (
                f"; routes with traces in that window: {', '.join(others)}"
                if others
                else "; there are no traces at all in that window"
            )
    return InsufficientSamples(
        f"cannot check drift of route `{route}`: {where}, and a check needs at least {min_samples} "
        f"(`min_samples`); {fix}",
        param=which,
    )


def run_drift(
    store: Store,
    route: str,
    reference: str | WindowSpec,
    current: str | WindowSpec,
    *,
    alpha: float = DEFAULT_ALPHA,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    psi_threshold: float | None = DEFAULT_PSI_THRESHOLD,
    seed: int = 0,
    now: float | None = None,
    save: bool = True,
) -> DriftReport:
    """Compare the reference and current samples of ``route``, save the report, return it.

    Blocking (database reads, then about a second of numpy for 500 vs 500): call it from a worker
    thread in async code. Raises InvalidRequest for bad specs or parameters, NotFound for an
    unknown dataset, InsufficientSamples when a sample has fewer than ``min_samples`` traces.
    """
    _check_params(route, alpha, min_samples, max_samples, psi_threshold)
    ref_spec = parse_spec(reference, "reference")
    cur_spec = parse_spec(current, "current")
    now = time.time() if now is None else now
    check_disjoint(ref_spec, cur_spec, now)
    ref = load_sample(
        store, route, ref_spec, now=now, max_samples=max_samples, rng=np.random.default_rng([seed, 1])
    )
    if ref.n < min_samples:
        raise _too_few(store, route, "reference", ref, min_samples)
    cur = load_sample(
        store, route, cur_spec, now=now, max_samples=max_samples, rng=np.random.default_rng([seed, 2])
    )
    if cur.n < min_samples:
        raise _too_few(store, route, "current", cur, min_samples)
    results = compare(ref, cur, alpha=alpha, min_samples=min_samples, psi_threshold=psi_threshold, seed=seed)
    results["max_samples"] = max_samples
    drifted = bool(results["drifted"])
    report = DriftReport(
        id=None,
        route=route,
        created_at=time.time(),
        reference=ref.source,
        current=cur.source,
        n_reference=ref.n,
        n_current=cur.n,
        drifted=drifted,
        results=results,
    )
    if save:
        report.save(store)
    log.info(
        "drift check of route `%s`: %s (%d vs %d traces, %.2fs)",
        route,
        "DRIFTED: " + "; ".join(results["reasons"]) if drifted else "no drift",
        ref.n,
        cur.n,
        results["timing"]["total_s"],
    )
    return report


def run_config(store: Store, config: DriftConfig, *, now: float | None = None) -> DriftReport:
    """Run one scheduled check as configured."""
    return run_drift(
        store,
        config.route,
        config.reference,
        config.current,
        alpha=config.alpha,
        max_samples=config.max_samples,
        min_samples=config.min_samples,
        psi_threshold=config.psi_threshold,
        seed=config.seed,
        now=now,
    )
