"""What one request measured, and the aggregates of a load level: percentiles, throughput, errors,
and goodput under an SLO.

Definitions (docs/bench.md):

- TTFT: from the moment the request is sent to the first chunk that carries answer text.
- ITL (inter-token latency): the gaps between consecutive chunks that carry answer text.
- E2E: from the moment the request is sent to the end of the response body.
- Output tokens: the server's `usage.completion_tokens` when it sends usage, else the number of
  content chunks (one chunk is one token on OpenAI-compatible servers, and on Shipyard's).
- Goodput: the requests that succeeded and met every term of the SLO, as a fraction of all
  requests and as a rate per second of the level's wall time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shipyard.bench.errors import BenchError
from shipyard.durations import parse_duration

PERCENTILES = (50, 90, 95, 99)
# Distributions kept in a result for its charts: enough points for a histogram, bounded size.
MAX_SAMPLES = 2000

# SLO terms: what each limits, in milliseconds.
SLO_TERMS = {
    "ttft": "time to first token",
    "itl": "mean inter-token latency of a request",
    "e2e": "end-to-end latency",
}


@dataclass(slots=True)
class Record:
    """One request: when it was sent (seconds on the run's perf_counter clock) and what it measured.
    Times are milliseconds; ``error`` is the error type (``http_503``, ``timeout``, ``connection``,
    ``stream_error``, ``empty``) or None."""

    sent: float
    e2e_ms: float = 0.0
    ttft_ms: float | None = None
    itl_ms: list[float] = field(default_factory=list)
    output_tokens: int = 0
    error: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def mean_itl_ms(self) -> float | None:
        return sum(self.itl_ms) / len(self.itl_ms) if self.itl_ms else None


def parse_slo(spec: str | None) -> dict[str, float]:
    """``ttft=500ms,e2e=5s`` → ``{"ttft": 500.0, "e2e": 5000.0}`` (milliseconds)."""
    if spec is None or not spec.strip():
        return {}
    out: dict[str, float] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in SLO_TERMS:
            known = ", ".join(f"{k} ({v})" for k, v in SLO_TERMS.items())
            raise BenchError(
                f"--slo: bad term `{part.strip()}`; write NAME=DURATION terms separated by commas, "
                f"e.g. ttft=500ms,e2e=5s; names: {known}",
                param="slo",
            )
        try:
            seconds = parse_duration(value.strip())
        except ValueError:
            seconds = 0.0
        if seconds <= 0:
            raise BenchError(
                f"--slo: bad duration `{value.strip()}` in term `{part.strip()}`; give a positive number "
                "with a unit: ms, s or m (e.g. ttft=500ms)",
                param="slo",
            )
        out[name] = seconds * 1000
    return out


def meets(record: Record, slo: Mapping[str, float]) -> bool:
    """Whether a request succeeded and met every SLO term."""
    if not record.ok:
        return False
    for name, limit in slo.items():
        value = {"ttft": record.ttft_ms, "itl": record.mean_itl_ms, "e2e": record.e2e_ms}[name]
        if name == "itl" and value is None:  # one token: no gap to miss the limit with
            continue
        if value is None or value > limit:
            return False
    return True


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), on sorted ``values``."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    pos = (len(values) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def _stats(values: Iterable[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    out: dict[str, float | None] = {f"p{q}": _round(percentile(ordered, q)) for q in PERCENTILES}
    out["mean"] = _round(sum(ordered) / len(ordered)) if ordered else None
    out["max"] = _round(ordered[-1]) if ordered else None
    return out


def _round(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def thin(values: Sequence[float], limit: int = MAX_SAMPLES) -> list[float]:
    """At most ``limit`` values, evenly spread over the sorted list (a distribution, not the log)."""
    ordered = sorted(values)
    if len(ordered) <= limit:
        return [round(v, 3) for v in ordered]
    step = (len(ordered) - 1) / (limit - 1)
    return [round(ordered[round(i * step)], 3) for i in range(limit)]


def summarize(
    records: Sequence[Record], wall_s: float, slo: Mapping[str, float], peak_in_flight: int
) -> dict[str, Any]:
    """The aggregates of one load level; ``wall_s`` is from the first send to the last answer."""
    ok = [r for r in records if r.ok]
    errors = Counter(r.error for r in records if r.error is not None)
    good = sum(1 for r in records if meets(r, slo))
    tokens = sum(r.output_tokens for r in ok)
    wall = max(wall_s, 1e-9)
    n = len(records)
    return {
        "requests": n,
        "ok": len(ok),
        "errors": n - len(ok),
        "error_rate": round((n - len(ok)) / n, 6) if n else 0.0,
        "errors_by_type": dict(sorted(errors.items())),
        "duration_s": round(wall_s, 3),
        "requests_per_s": round(len(ok) / wall, 3),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / wall, 3),
        "peak_in_flight": peak_in_flight,
        "ttft_ms": _stats(r.ttft_ms for r in ok if r.ttft_ms is not None),
        "itl_ms": _stats(x for r in ok for x in r.itl_ms),
        "e2e_ms": _stats(r.e2e_ms for r in ok),
        "goodput": {
            "slo_ms": dict(slo),
            "requests": good,
            "fraction": round(good / n, 6) if n else 0.0,
            "per_s": round(good / wall, 3),
        },
    }


def samples(records: Sequence[Record]) -> dict[str, list[float]]:
    """The distributions the report draws (thinned)."""
    ok = [r for r in records if r.ok]
    return {
        "ttft_ms": thin([r.ttft_ms for r in ok if r.ttft_ms is not None]),
        "itl_ms": thin([x for r in ok for x in r.itl_ms]),
        "e2e_ms": thin([r.e2e_ms for r in ok]),
    }


def flat_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """One level's summary as flat numeric metrics (what an experiment run records and compare reads)."""
    out: dict[str, float] = {}
    for key in (
        "requests",
        "ok",
        "errors",
        "error_rate",
        "requests_per_s",
        "output_tokens_per_s",
        "duration_s",
    ):
        out[key] = float(summary[key])
    out["peak_in_flight"] = float(summary["peak_in_flight"])
    for family in ("ttft_ms", "itl_ms", "e2e_ms"):
        for stat, value in summary[family].items():
            if value is not None and stat != "max":
                out[f"{family}_{stat}"] = float(value)
    out["goodput_fraction"] = float(summary["goodput"]["fraction"])
    out["goodput_per_s"] = float(summary["goodput"]["per_s"])
    return out
