"""`shipyard bench`: load-test an OpenAI-compatible endpoint or a Shipyard route.

Requests go over HTTP as a client's would (one httpx client, streams parsed here); each is measured
for TTFT, inter-token latency, end-to-end latency and output tokens. A run is one level of load
(fixed concurrency, Poisson arrivals, or replayed traces) or a sweep of rising levels that stops at
saturation and reports the knee.

One module per job: ``workload`` (what to send), ``load`` (sending and measuring), ``metrics``
(aggregates, SLO goodput), ``service`` (levels, the sweep's knee, the result, the experiment run),
``report`` and ``plots`` (the HTML page), ``compare`` (two results side by side).
"""

from __future__ import annotations

from shipyard.bench.compare import compare
from shipyard.bench.errors import BenchError
from shipyard.bench.load import (
    MAX_CONCURRENCY,
    MAX_DURATION_S,
    MAX_RATE,
    MAX_REQUESTS,
    Bounds,
    Load,
    Target,
    run_level,
    send_one,
)
from shipyard.bench.metrics import SLO_TERMS, Record, flat_metrics, parse_slo, summarize
from shipyard.bench.report import render_html, write_report
from shipyard.bench.service import (
    Plan,
    SweepRule,
    find_knee,
    finish_run,
    load_name,
    load_result,
    record_run,
    result_metrics,
    run,
)
from shipyard.bench.workload import (
    Item,
    Workload,
    from_dataset,
    from_examples,
    from_jsonl,
    from_traces,
    parse_synthetic,
)

__all__ = [
    "MAX_CONCURRENCY",
    "MAX_DURATION_S",
    "MAX_RATE",
    "MAX_REQUESTS",
    "SLO_TERMS",
    "BenchError",
    "Bounds",
    "Item",
    "Load",
    "Plan",
    "Record",
    "SweepRule",
    "Target",
    "Workload",
    "compare",
    "find_knee",
    "finish_run",
    "flat_metrics",
    "from_dataset",
    "from_examples",
    "from_jsonl",
    "from_traces",
    "load_name",
    "load_result",
    "parse_slo",
    "parse_synthetic",
    "record_run",
    "render_html",
    "result_metrics",
    "run",
    "run_level",
    "send_one",
    "summarize",
    "write_report",
]
