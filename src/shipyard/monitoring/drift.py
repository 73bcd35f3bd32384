"""Drift detection: is the traffic a route gets now different from the traffic it got before?

A check compares two samples of a route's successful traces, a *reference* and a *current* one,
each chosen by a window spec (grammar in :data:`SPEC_GRAMMAR`), on:

(a) prompt and response embeddings (WordLlama, offline): MMD with an RBF kernel and a permutation
    p-value;
(b) prompt and response length (characters), input and output tokens and latency: Kolmogorov–Smirnov
    statistic and p-value, and the population stability index (PSI);
(c) topics: k-means over the pooled prompt embeddings; each cluster's share of the reference and of
    the current sample, with keywords and example prompts.

The verdict: the p-values of (a) and (b) are Bonferroni-corrected (each multiplied by the number of
p-value tests that ran); the route drifted when a corrected p-value is at most ``alpha``, or when a
PSI reaches ``psi_threshold`` with samples large enough for PSI to be trusted (see
:func:`shipyard.monitoring.stats.psi_noise`). Every statistic is recorded in ``drift_reports``.

Too few traces in either sample (below ``min_samples``) raise :class:`InsufficientSamples`; no
report is written, so a quiet route does not fill the table with empty reports.

The background scheduler and the alert rules use :class:`DriftConfig`, :func:`run_drift` and
:meth:`DriftReport.metrics`; their names and signatures are stable.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from threadpoolctl import threadpool_limits

from shipyard.content import content_text
from shipyard.durations import is_duration, parse_duration
from shipyard.errors import InvalidRequest, NotFound
from shipyard.monitoring import stats
from shipyard.store import drift as q
from shipyard.store.db import Store
from shipyard.times import parse_time

log = logging.getLogger("shipyard.monitoring.drift")

DEFAULT_ALPHA = 0.01
DEFAULT_MAX_SAMPLES = 500
DEFAULT_MIN_SAMPLES = 30
DEFAULT_PSI_THRESHOLD = 0.25
DEFAULT_REFERENCE = "7d offset 1d"
DEFAULT_CURRENT = "1h"
NUMERIC_FEATURES = ("prompt_chars", "response_chars", "input_tokens", "output_tokens", "latency_ms")
_EXAMPLES_PER_CLUSTER = 3
_EXAMPLE_CHARS = 160
# Windows up to this many traces are read whole and sampled in memory; bigger ones are sampled
# through per-bucket counts (about _PER_BUCKET traces per bucket, at most _MAX_BUCKETS buckets).
_SMALL_WINDOW = 2000
_PER_BUCKET = 16
_MAX_BUCKETS = 100_000
# Cosine similarity above which two example prompts count as the same question reworded.
_SAME_EXAMPLE = 0.97

SPEC_GRAMMAR = """\
A window spec chooses the traces (or dataset examples) of one sample:

    1h, 30m, 7d         the last hour, 30 minutes, 7 days, up to now
    7d offset 1d        the 7 days that ended 1 day ago
    START..END          a time range: ISO 8601 dates or times (2026-11-01,
                        2026-11-01T08:00, 2026-11-01T08:00+02:00; UTC unless
                        an offset is given) or unix seconds; START.. = to now
    dataset:NAME@v2     the inputs of a pinned dataset version (also NAME@2,
                        NAME@latest; dataset:NAME alone = the latest version)

Durations: 90s, 15m, 2h, 7d, 2w. The two windows may not overlap. Only
successful traces of the route are sampled; a sample larger than
max_samples is cut to a seeded uniform random subset."""


class InsufficientSamples(InvalidRequest):
    """A sample has fewer traces than ``min_samples``: there is nothing trustworthy to compare."""

    code = "insufficient_samples"


# -- window specs -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class WindowSpec:
    """A parsed window spec. Relative windows are turned into times by :meth:`bounds` at run time."""

    spec: str
    kind: Literal["window", "range", "dataset"]
    duration: float | None = None
    offset: float = 0.0
    since: float | None = None
    until: float | None = None
    dataset: str | None = None
    version: int | None = None

    def bounds(self, now: float) -> tuple[float, float]:
        """[since, until) in unix seconds for a time window (not for a dataset)."""
        if self.kind == "window":
            assert self.duration is not None
            until = now - self.offset
            return until - self.duration, until
        if self.kind == "range":
            assert self.since is not None
            return self.since, now if self.until is None else self.until
        raise ValueError(f"`{self.spec}` is a dataset, not a time window")


def _bad_spec(field_name: str, text: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"`{field_name}`: `{text}` {why}. A window spec is a duration (`1h`), a duration with an offset "
        "(`7d offset 1d`), a time range (`2026-11-01T00:00..2026-11-08T00:00`) or a dataset version "
        "(`dataset:NAME@v2`)",
        param=field_name,
    )


def _parse_time(value: str, field_name: str, text: str) -> float:
    """A window end, by the one time rule (``shipyard.times``: an ISO time is UTC unless it has an
    offset), with the window spec named when it is not a time."""
    try:
        t = parse_time(value, field_name)
    except InvalidRequest:
        t = None
    if t is None:
        raise _bad_spec(
            field_name,
            text,
            f"has `{value}`, which is not a time: write an ISO 8601 date or time such as 2026-11-01 or "
            "2026-11-01T08:00 (UTC unless it carries an offset like +02:00), or unix seconds",
        )
    return t


def parse_spec(text: str | WindowSpec, field_name: str = "reference") -> WindowSpec:
    """Parse a window spec (see :data:`SPEC_GRAMMAR`); errors name ``field_name`` and the forms."""
    if isinstance(text, WindowSpec):
        return text
    if not isinstance(text, str) or not text.strip():
        raise _bad_spec(field_name, str(text or ""), "is empty")
    s = " ".join(text.split())
    if s.lower().startswith("dataset:"):
        from shipyard.registry import datasets

        ref = s[len("dataset:") :].strip()
        if not ref:
            raise _bad_spec(field_name, text, "names no dataset after `dataset:`")
        try:
            name, version = datasets.parse_ref(ref)
            datasets.check_name(name)
        except InvalidRequest as exc:
            raise InvalidRequest(f"`{field_name}`: {exc.message}", param=field_name) from None
        canonical = f"dataset:{name}" + (f"@v{version}" if version is not None else "")
        return WindowSpec(spec=canonical, kind="dataset", dataset=name, version=version)
    if ".." in s:
        start, _, end = s.partition("..")
        if not start.strip():
            raise _bad_spec(field_name, text, "has no start time before `..`")
        since = _parse_time(start, field_name, text)
        until = _parse_time(end, field_name, text) if end.strip() else None
        if until is not None and until <= since:
            raise _bad_spec(field_name, text, "ends before it starts")
        return WindowSpec(spec=s, kind="range", since=since, until=until)
    parts = s.split(" ")
    if len(parts) in (2, 3) and parts[1].lower() == "offset":
        if len(parts) == 2:
            raise _bad_spec(field_name, text, "has no duration after `offset`")
        duration_text, offset_text = parts[0], parts[2]
    elif len(parts) == 1:
        duration_text, offset_text = parts[0], "0s"
    else:
        raise _bad_spec(field_name, text, "is not a window spec")
    if len(parts) == 1 and not is_duration(duration_text):
        if re.match(r"^\d", duration_text):
            raise _bad_spec(field_name, text, "is not a duration (30s, 15m, 2h, 7d)")
        raise _bad_spec(field_name, text, "is not a window spec")
    for value in (duration_text, offset_text):
        if not is_duration(value):
            raise _bad_spec(field_name, text, f"has `{value}`, which is not a duration (30s, 15m, 2h, 7d)")
    duration, offset = parse_duration(duration_text), parse_duration(offset_text)
    if duration <= 0:
        raise _bad_spec(field_name, text, "is an empty window")
    return WindowSpec(spec=s, kind="window", duration=duration, offset=offset)


def join_offset(spec: str, offset: str | None, field_name: str) -> str:
    """``7d`` + ``--reference-offset 1d`` → ``7d offset 1d`` (the CLI's separate offset flags)."""
    if not offset:
        return spec
    parsed = parse_spec(spec, field_name)
    if parsed.kind != "window" or parsed.offset:
        raise InvalidRequest(
            f"`{field_name}-offset` shifts a duration window such as `7d`; `{spec}` is not one",
            param=f"{field_name}-offset",
        )
    joined = f"{spec.strip()} offset {offset.strip()}"
    parse_spec(joined, f"{field_name}-offset")
    return joined


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- configuration for scheduled checks -------------------------------------------------------------
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


# -- the report -------------------------------------------------------------------------------------
@dataclass
class DriftReport:
    """One drift check. ``results`` holds every test (``tests``), the ones that could not run
    (``skipped``, with the reason), the topic clusters (``topics``) and the settings used."""

    id: int | None
    route: str
    created_at: float
    reference: dict[str, Any]
    current: dict[str, Any]
    n_reference: int
    n_current: int
    drifted: bool
    results: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> DriftReport:
        return cls(
            id=int(row["id"]),
            route=str(row["route"]),
            created_at=float(row["created_at"]),
            reference=row["reference"] or {},
            current=row["current"] or {},
            n_reference=int(row["n_reference"]),
            n_current=int(row["n_current"]),
            drifted=bool(row["drifted"]),
            results=row.get("results") or {},
        )

    def metrics(self) -> dict[str, float]:
        """Flat numbers for alert rules, referenced there as ``drift.<key>``:

        - ``drifted`` 1 or 0; ``p_value`` the smallest Bonferroni-corrected p-value (1 when none ran);
        - ``n_reference``, ``n_current``;
        - ``mmd_prompt``, ``mmd_response`` (MMD², unbiased) and ``mmd_prompt_p``, ``mmd_response_p``;
        - for each FEATURE in prompt_chars, response_chars, input_tokens, output_tokens, latency_ms:
          ``ks_FEATURE`` (KS statistic), ``ks_FEATURE_p`` (its p-value), ``psi_FEATURE``;
        - ``psi_max`` the largest PSI; ``topic_shift`` the total variation distance between the
          reference's and the current sample's cluster shares (0 = same mix, 1 = disjoint);
          ``topic_max_growth`` the largest gain of one cluster's share; ``topic_chi2_p``.

        ``_p`` values are uncorrected. Tests that were skipped have no key.
        """
        out: dict[str, float] = {
            "drifted": 1.0 if self.drifted else 0.0,
            "n_reference": float(self.n_reference),
            "n_current": float(self.n_current),
        }
        adjusted: list[float] = []
        psis: list[float] = []
        for t in self.results.get("tests", []):
            out[t["name"]] = float(t["statistic"])
            if t.get("p_value") is not None:
                out[t["name"] + "_p"] = float(t["p_value"])
                adjusted.append(float(t["p_adjusted"]))
            if t["test"] == "psi":
                psis.append(float(t["statistic"]))
        out["p_value"] = min(adjusted) if adjusted else 1.0
        if psis:
            out["psi_max"] = max(psis)
        topics = self.results.get("topics")
        if topics:
            out["topic_shift"] = float(topics["shift"])
            out["topic_max_growth"] = max((float(c["change"]) for c in topics["clusters"]), default=0.0)
            if topics.get("chi2_p") is not None:
                out["topic_chi2_p"] = float(topics["chi2_p"])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "metrics": self.metrics()}

    def summary(self) -> dict[str, Any]:
        """Everything but the per-test detail: what a list of reports shows."""
        out = self.to_dict()
        results = out.pop("results")
        out["reasons"] = results.get("reasons", [])
        return out


# -- samples ----------------------------------------------------------------------------------------
@dataclass
class Sample:
    """What one side of the comparison holds: the texts and numbers of each sampled trace."""

    source: dict[str, Any]
    prompts: list[str | None]
    responses: list[str | None]
    numeric: dict[str, np.ndarray]
    ids: list[str] = field(default_factory=list)  # trace ids, or `#idx` of dataset examples

    @property
    def n(self) -> int:
        return len(self.prompts)


_CUT_MARK = re.compile(r"…\[(\d+) more chars\]$")


def _untruncated(text: str) -> tuple[str, int]:
    """A text the trace writer cut (capture `truncate` appends ``…[N more chars]``) and its full length."""
    m = _CUT_MARK.search(text)
    if m is None:
        return text, len(text)
    kept = text[: m.start()]
    return kept, len(kept) + int(m.group(1))


def prompt_text(value: Any, attributes: dict[str, Any] | None = None) -> str | None:
    """The part of a request that varies with what users ask.

    A prompt-template route's trace carries its template variables (attribute
    ``shipyard.variables``): their values are the prompt, because the template text is the same
    in every request and would only dilute the comparison; a dataset built from such traces holds
    the same variables. Otherwise: the user messages of a chat (all messages when there are none),
    or the completion prompt. None when the trace did not capture its input.
    """
    variables = (attributes or {}).get("shipyard.variables")
    if isinstance(variables, dict):
        value = variables
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("messages"), list):
            return prompt_text(value["messages"])
        return "\n".join(v if isinstance(v, str) else str(v) for v in value.values() if v is not None)
    if isinstance(value, list):
        messages = [m for m in value if isinstance(m, dict)]
        if messages:
            users = [m for m in messages if m.get("role") == "user"] or messages
            return "\n".join(content_text(m.get("content")) for m in users)
        return "\n".join(str(v) for v in value if v is not None)
    return str(value)


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def _trace_sample(rows: Sequence[dict[str, Any]], source: dict[str, Any]) -> Sample:
    prompts: list[str | None] = []
    responses: list[str | None] = []
    numeric: dict[str, list[float]] = {f: [] for f in NUMERIC_FEATURES}
    for r in rows:
        prompt = prompt_text(r["input"], r["attributes"])
        prompt_chars = math.nan
        if prompt is not None:
            prompt, n = _untruncated(prompt)
            prompt_chars = float(n)
        response = r["output"]
        response_chars = math.nan
        if response is not None:
            response, n = _untruncated(response)
            response_chars = float(n)
        prompts.append(prompt)
        responses.append(response)
        numeric["prompt_chars"].append(prompt_chars)
        numeric["response_chars"].append(response_chars)
        numeric["input_tokens"].append(_num(r["input_tokens"]))
        numeric["output_tokens"].append(_num(r["output_tokens"]))
        numeric["latency_ms"].append(_num(r["latency_ms"]))
    numbers = {k: np.asarray(v, dtype=np.float64) for k, v in numeric.items()}
    return Sample(source, prompts, responses, numbers, [str(r["trace_id"]) for r in rows])


def _window_sample(
    store: Store,
    route: str,
    spec: WindowSpec,
    since: float,
    until: float,
    max_samples: int,
    rng: np.random.Generator,
) -> Sample:
    total = q.count_window(store, route, since, until)
    if total <= max(2 * max_samples, _SMALL_WINDOW):
        ok = q.window_rows(store, route, since, until)
        rows = [ok[i] for i in rng.permutation(len(ok))[:max_samples]]
    else:
        rows = _sample_big_window(store, route, since, until, total, max_samples, rng)
    source = {
        "spec": spec.spec,
        "kind": spec.kind,
        "since": since,
        "until": until,
        "since_iso": _iso(since),
        "until_iso": _iso(until),
        "n_in_window": total,
        "n_sampled": len(rows),
    }
    return _trace_sample(rows, source)


def _sample_big_window(
    store: Store,
    route: str,
    since: float,
    until: float,
    total: int,
    max_samples: int,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """A uniform sample of a window too big to read: walk a random permutation of the window's
    trace ranks, finding each rank's start time through per-bucket counts, and fetch rows a chunk at
    a time until ``max_samples`` successful traces are in."""
    width = (until - since) / max(1, min(total // _PER_BUCKET, _MAX_BUCKETS))
    ids, counts = q.bucket_counts(store, route, since, until, width)
    ends = np.cumsum(counts)
    ranks = rng.permutation(int(ends[-1])) if len(ends) else np.empty(0, dtype=np.int64)
    bucket_times: dict[int, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    step = max(max_samples, 100)
    for start in range(0, len(ranks), step):
        chunk = ranks[start : start + step]
        at = np.searchsorted(ends, chunk, side="right")
        offsets = chunk - (ends[at] - counts[at])
        missing = sorted({int(b) for b in ids[at]} - bucket_times.keys())
        bucket_times.update(q.bucket_start_times(store, route, since, until, width, missing))
        chosen: list[float] = []
        for bucket, offset in zip(ids[at], offsets, strict=True):
            times = bucket_times[int(bucket)]
            if offset < len(times):  # traces written since the count can shift a bucket; skip those
                chosen.append(float(times[offset]))
        by_time: dict[float, list[dict[str, Any]]] = {}
        for r in q.traces_at(store, route, sorted(set(chosen))):
            by_time.setdefault(float(r["start_time"]), []).append(r)
        for t in chosen:
            for r in sorted(by_time.get(t, []), key=lambda r: str(r["trace_id"])):
                if r["trace_id"] not in seen:
                    seen.add(r["trace_id"])
                    rows.append(r)
                    break
        if len(rows) >= max_samples:
            break
    return rows[:max_samples]


def _dataset_sample(store: Store, spec: WindowSpec, max_samples: int, rng: np.random.Generator) -> Sample:
    from shipyard.registry import datasets
    from shipyard.store import datasets as dq

    assert spec.dataset is not None
    ref = spec.dataset + ("" if spec.version is None else f"@{spec.version}")
    info, version_id = datasets.resolve_version_id(store, ref)
    n = info.n_examples
    keep: set[int] | None = None
    if n > max_samples:
        keep = {int(i) for i in rng.choice(n, size=max_samples, replace=False)}
    prompts: list[str | None] = []
    ids: list[str] = []
    for ex in dq.iter_examples(store, version_id):
        if keep is None or int(ex["idx"]) in keep:
            prompts.append(prompt_text(ex["input"]))
            ids.append(f"#{ex['idx']}")
    chars = [math.nan if p is None else float(len(p)) for p in prompts]
    nan = np.full(len(prompts), math.nan)
    numeric = {f: nan for f in NUMERIC_FEATURES}
    numeric["prompt_chars"] = np.asarray(chars, dtype=np.float64)
    source = {
        "spec": spec.spec,
        "kind": "dataset",
        "dataset": info.dataset,
        "version": info.version,
        "hash": info.hash,
        "n_examples": n,
        "n_sampled": len(prompts),
    }
    return Sample(source, prompts, [None] * len(prompts), numeric, ids)


def load_sample(
    store: Store,
    route: str,
    spec: WindowSpec,
    *,
    now: float,
    max_samples: int,
    rng: np.random.Generator,
) -> Sample:
    if spec.kind == "dataset":
        return _dataset_sample(store, spec, max_samples, rng)
    since, until = spec.bounds(now)
    return _window_sample(store, route, spec, since, until, max_samples, rng)


# -- embeddings -------------------------------------------------------------------------------------
_model_lock = threading.Lock()
_model: Any = None


def _wordllama() -> Any:
    """The shipped WordLlama model, loaded once per process (the provider's offline loader)."""
    global _model
    with _model_lock:
        if _model is None:
            from shipyard.providers.wordllama import load_model

            _model = load_model()
        return _model


def embed_texts(texts: Sequence[str], dim: int = 256) -> np.ndarray:
    """Unit-length WordLlama embeddings (len(texts) x dim): the normalised mean of each text's
    token rows, as the wordllama embedding provider computes them. An empty text is a zero vector."""
    model = _wordllama()
    table: np.ndarray = model.embedding
    last_row = table.shape[0] - 1
    out = np.zeros((len(texts), dim), dtype=np.float32)
    batch = 256
    for start in range(0, len(texts), batch):
        chunk = list(texts[start : start + batch])
        encodings = model.tokenizer.encode_batch(chunk, add_special_tokens=False)
        ids_list = [
            np.asarray(e.ids, dtype=np.int64)[np.asarray(e.attention_mask, dtype=bool)] for e in encodings
        ]
        lengths = np.asarray([len(ids) for ids in ids_list])
        if lengths.sum() == 0:
            continue
        ids = np.clip(np.concatenate(ids_list), 0, last_row)
        rows = table[ids, :dim].astype(np.float32, copy=False)
        nonempty = lengths > 0
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])[nonempty]
        sums = np.add.reduceat(rows, offsets, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        sums /= np.where(norms > 0, norms, 1.0)
        out[start : start + len(chunk)][nonempty] = sums
    return out


# -- running a check --------------------------------------------------------------------------------
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


def _present(values: Sequence[str | None]) -> list[str]:
    return [v for v in values if v is not None]


def _test(
    name: str, test: str, feature: str, result: stats.TestResult, threshold: float | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "test": test,
        "feature": feature,
        "statistic": result.statistic,
        "p_value": result.p_value,
        "p_adjusted": None,
        "threshold": threshold,
        "drifted": False,
        "detail": result.detail,
    }


def _topics(
    ref_texts: list[str], cur_texts: list[str], ref_emb: np.ndarray, cur_emb: np.ndarray, seed: int
) -> dict[str, Any]:
    pooled = np.concatenate([ref_emb, cur_emb]).astype(np.float64)
    texts = ref_texts + cur_texts
    n_ref = len(ref_texts)
    k = min(stats.choose_k(len(texts)), len(np.unique(pooled.round(6), axis=0)))
    labels, centers = stats.kmeans(pooled, max(k, 1), seed=seed)
    k = len(centers)
    side = np.zeros(len(texts), dtype=bool)
    side[n_ref:] = True
    counts = np.zeros((2, k), dtype=np.int64)
    np.add.at(counts, (side.astype(np.int64), labels), 1)
    keywords = stats.cluster_keywords(texts, labels, k)
    dist = np.sum((pooled - centers[labels]) ** 2, axis=1)
    clusters: list[dict[str, Any]] = []
    for c in range(k):
        share_ref = counts[0, c] / max(n_ref, 1)
        share_cur = counts[1, c] / max(len(cur_texts), 1)
        # Examples from the side the cluster is more typical of: what grew comes from the current sample.
        from_current = share_cur >= share_ref
        members = np.flatnonzero((labels == c) & (side == from_current))
        if members.size == 0:
            members = np.flatnonzero(labels == c)
        examples: list[str] = []
        picked: list[int] = []
        for i in members[np.argsort(dist[members], kind="stable")]:
            text = " ".join(texts[i].split())
            text = text if len(text) <= _EXAMPLE_CHARS else text[: _EXAMPLE_CHARS - 1] + "…"
            # Typical but not interchangeable: skip prompts nearly identical to one already shown.
            if not text or text in examples or any(pooled[i] @ pooled[j] > _SAME_EXAMPLE for j in picked):
                continue
            examples.append(text)
            picked.append(int(i))
            if len(examples) == _EXAMPLES_PER_CLUSTER:
                break
        if not examples and members.size:
            examples.append(" ".join(texts[members[0]].split())[:_EXAMPLE_CHARS])
        clusters.append(
            {
                "cluster": c,
                "n_reference": int(counts[0, c]),
                "n_current": int(counts[1, c]),
                "share_reference": round(float(share_ref), 6),
                "share_current": round(float(share_cur), 6),
                "change": round(float(share_cur - share_ref), 6),
                "keywords": keywords[c],
                "examples": examples,
                "examples_from": "current" if from_current else "reference",
            }
        )
    clusters.sort(key=lambda c: (-c["change"], c["cluster"]))
    chi2, chi2_p = stats.chi2_contingency(counts)
    return {
        "k": k,
        "method": "k-means (k-means++ seeding, 3 starts) over pooled prompt embeddings",
        "shift": round(0.5 * float(sum(abs(c["change"]) for c in clusters)), 6),
        "chi2": chi2,
        "chi2_p": chi2_p,
        "clusters": clusters,
        "grew": [c["cluster"] for c in clusters if c["change"] > 0][:3],
        "shrank": [c["cluster"] for c in sorted(clusters, key=lambda c: c["change"]) if c["change"] < 0][:3],
    }


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limits: Any = None


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """One BLAS thread while any check computes: the matrices here are small (about 1000 x 1000),
    and OpenBLAS's worker threads spin against the server's own threads on a busy machine, which
    made a check up to 20x slower. The limit is process-wide, so concurrent checks share one and
    the last to finish restores the original."""
    global _blas_users, _blas_limits
    with _blas_lock:
        if _blas_users == 0:
            _blas_limits = threadpool_limits(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limits.restore_original_limits()
                _blas_limits = None


def compare(
    reference: Sample,
    current: Sample,
    *,
    alpha: float = DEFAULT_ALPHA,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    psi_threshold: float | None = DEFAULT_PSI_THRESHOLD,
    seed: int = 0,
) -> dict[str, Any]:
    """Every test on two samples, the Bonferroni-corrected verdict and the topics: the ``results``
    of a report (``drifted`` is ``results["drifted"]``)."""
    with _one_blas_thread():
        return _compare(
            reference, current, alpha=alpha, min_samples=min_samples, psi_threshold=psi_threshold, seed=seed
        )


def _compare(
    reference: Sample,
    current: Sample,
    *,
    alpha: float = DEFAULT_ALPHA,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    psi_threshold: float | None = DEFAULT_PSI_THRESHOLD,
    seed: int = 0,
) -> dict[str, Any]:
    started = time.perf_counter()
    timing: dict[str, float] = {}
    skipped: list[dict[str, str]] = []
    ref_desc = reference.source.get("spec", "reference")

    # Decide first which p-value tests can run: their number sets the correction and the permutations.
    ref_prompts, cur_prompts = _present(reference.prompts), _present(current.prompts)
    ref_resp = [r for r in reference.responses if r]
    cur_resp = [r for r in current.responses if r]
    run_mmd_prompt = len(ref_prompts) >= min_samples and len(cur_prompts) >= min_samples
    run_mmd_response = len(ref_resp) >= min_samples and len(cur_resp) >= min_samples
    if not run_mmd_prompt:
        skipped.append({"name": "mmd_prompt", "reason": f"fewer than {min_samples} captured prompts a side"})
    if not run_mmd_response:
        why = (
            f"the reference `{ref_desc}` has no responses"
            if reference.source.get("kind") == "dataset"
            else f"fewer than {min_samples} captured responses a side"
        )
        skipped.append({"name": "mmd_response", "reason": why})
    numeric: list[tuple[str, np.ndarray, np.ndarray]] = []
    for feat in NUMERIC_FEATURES:
        a, b = reference.numeric[feat], current.numeric[feat]
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if len(a) >= min_samples and len(b) >= min_samples:
            numeric.append((feat, a, b))
        else:
            why = (
                f"the reference `{ref_desc}` has no {feat}"
                if len(a) == 0 and reference.source.get("kind") == "dataset"
                else f"{feat} known for {len(a)} reference and {len(b)} current traces; "
                f"needs {min_samples} a side"
            )
            skipped.append({"name": f"ks_{feat}", "reason": why})
            skipped.append({"name": f"psi_{feat}", "reason": why})
    n_tests = int(run_mmd_prompt) + int(run_mmd_response) + len(numeric)
    permutations = stats.permutations_for(n_tests, alpha)

    tests: list[dict[str, Any]] = []
    topics: dict[str, Any] | None = None
    if run_mmd_prompt:
        t0 = time.perf_counter()
        ref_emb, cur_emb = embed_texts(ref_prompts), embed_texts(cur_prompts)
        timing["embed_prompts_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = stats.mmd_test(ref_emb, cur_emb, permutations=permutations, seed=seed * 7919 + 1)
        timing["mmd_prompt_s"] = time.perf_counter() - t0
        tests.append(_test("mmd_prompt", "mmd", "prompt", res))
        t0 = time.perf_counter()
        topics = _topics(ref_prompts, cur_prompts, ref_emb, cur_emb, seed)
        timing["topics_s"] = time.perf_counter() - t0
    if run_mmd_response:
        t0 = time.perf_counter()
        ref_emb, cur_emb = embed_texts(ref_resp), embed_texts(cur_resp)
        res = stats.mmd_test(ref_emb, cur_emb, permutations=permutations, seed=seed * 7919 + 2)
        timing["mmd_response_s"] = time.perf_counter() - t0
        tests.append(_test("mmd_response", "mmd", "response", res))
    t0 = time.perf_counter()
    for feat, a, b in numeric:
        tests.append(_test(f"ks_{feat}", "ks", feat, stats.ks_test(a, b)))
        ps = stats.psi(a, b)
        noise = stats.psi_noise(ps.detail["bins"], len(a), len(b))
        # PSI votes only when chance alone stays far below the threshold (its mean under no
        # change is `noise`); on small samples the KS p-value speaks for the feature.
        votes = psi_threshold is not None and noise <= psi_threshold / 4
        ps.detail.update({"noise": noise, "votes": votes})
        tests.append(_test(f"psi_{feat}", "psi", feat, ps, psi_threshold))
    timing["numeric_s"] = time.perf_counter() - t0

    level = alpha / max(n_tests, 1)
    reasons: list[str] = []
    for t in tests:
        if t["p_value"] is not None:
            t["p_adjusted"] = min(1.0, t["p_value"] * n_tests)
            t["threshold"] = alpha
            t["drifted"] = t["p_adjusted"] <= alpha
            if t["drifted"]:
                reasons.append(
                    f"{t['name']}: p = {t['p_value']:.3g} (corrected {t['p_adjusted']:.3g}) "
                    f"<= alpha {alpha:g}"
                )
        elif t["test"] == "psi" and t["detail"]["votes"]:
            assert psi_threshold is not None
            t["drifted"] = t["statistic"] >= psi_threshold
            if t["drifted"]:
                reasons.append(f"{t['name']}: PSI {t['statistic']:.3f} >= {psi_threshold:g}")
    timing["total_s"] = time.perf_counter() - started
    return {
        "drifted": bool(reasons),
        "reasons": reasons,
        "alpha": alpha,
        "correction": "bonferroni",
        "n_tests": n_tests,
        "corrected_alpha": level,
        "psi_threshold": psi_threshold,
        "psi_bins": stats.PSI_BINS,
        "psi_epsilon": stats.PSI_EPSILON,
        "permutations": permutations,
        "min_samples": min_samples,
        "seed": seed,
        "embedding": "wordllama l2_supercat, 256 dims",
        "tests": tests,
        "skipped": skipped,
        "topics": topics,
        "timing": {k: round(v, 4) for k, v in timing.items()},
    }


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
    if ref_spec.kind != "dataset" and cur_spec.kind != "dataset":
        rs, ru = ref_spec.bounds(now)
        cs, cu = cur_spec.bounds(now)
        if rs < cu and cs < ru:
            raise InvalidRequest(
                f"the reference window `{ref_spec.spec}` ({_iso(rs)} to {_iso(ru)}) overlaps the current "
                f"window `{cur_spec.spec}` ({_iso(cs)} to {_iso(cu)}): traces in both would hide a "
                f"change; end the reference earlier, e.g. `{_suggest(ref_spec, cur_spec, now)}`",
                param="reference",
            )
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
        report.id = q.insert_report(
            store,
            route=route,
            created_at=report.created_at,
            reference=report.reference,
            current=report.current,
            n_reference=report.n_reference,
            n_current=report.n_current,
            drifted=drifted,
            results=results,
        )
    log.info(
        "drift check of route `%s`: %s (%d vs %d traces, %.2fs)",
        route,
        "DRIFTED: " + "; ".join(results["reasons"]) if drifted else "no drift",
        ref.n,
        cur.n,
        results["timing"]["total_s"],
    )
    return report


def _suggest(ref: WindowSpec, cur: WindowSpec, now: float) -> str:
    """A reference spec that ends where the current window starts."""
    if ref.kind == "window" and cur.kind == "window" and cur.offset == 0:
        return f"{ref.spec.split(' ')[0]} offset {cur.spec.split(' ')[0]}"
    since, _ = ref.bounds(now)
    cur_since, _ = cur.bounds(now)
    return f"{_iso(since)}..{_iso(cur_since)}"


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


# -- reading reports --------------------------------------------------------------------------------
def get_report(store: Store, report_id: int) -> DriftReport:
    row = q.get_report(store, report_id)
    if row is None:
        raise NotFound(
            f"no drift report {report_id}; `shipyard drift list` (or GET /api/drift) shows the reports",
            param="id",
            code="drift_report_not_found",
        )
    return DriftReport.from_row(row)


def latest_report(store: Store, route: str) -> DriftReport | None:
    row = q.latest_report(store, route)
    return None if row is None else DriftReport.from_row(row)


def list_reports(
    store: Store, route: str | None = None, *, limit: int = 50, offset: int = 0
) -> list[DriftReport]:
    """Reports newest first, with their results (so each has its metrics)."""
    if not 1 <= limit <= 1000:
        raise InvalidRequest(f"`limit` must be between 1 and 1000; got {limit}", param="limit")
    if offset < 0:
        raise InvalidRequest(f"`offset` must be >= 0; got {offset}", param="offset")
    rows = q.list_reports(store, route, limit=limit, offset=offset, with_results=True)
    return [DriftReport.from_row(r) for r in rows]
