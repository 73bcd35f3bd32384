"""The two samples a drift check compares, and the features read from each trace.

A :class:`Sample` holds, per sampled trace, the prompt (:func:`prompt_text`), the response and the
numbers in :data:`NUMERIC_FEATURES`; :func:`load_sample` draws one from a time window of a route's
successful traces or from a dataset version; :func:`embed_texts` turns texts into the WordLlama
vectors the MMD test and the topic clusters work on.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shipyard.content import content_text
from shipyard.monitoring.drift.windows import WindowSpec, iso_utc
from shipyard.store import drift as q
from shipyard.store.db import Store

DEFAULT_MAX_SAMPLES = 500
NUMERIC_FEATURES = ("prompt_chars", "response_chars", "input_tokens", "output_tokens", "latency_ms")
# Windows up to this many traces are read whole and sampled in memory; bigger ones are sampled
# through per-bucket counts (about _PER_BUCKET traces per bucket, at most _MAX_BUCKETS buckets).
_SMALL_WINDOW = 2000
_PER_BUCKET = 16
_MAX_BUCKETS = 100_000


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


# -- features of one trace --------------------------------------------------------------------------
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


# -- drawing a sample -------------------------------------------------------------------------------
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
        "since_iso": iso_utc(since),
        "until_iso": iso_utc(until),
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
