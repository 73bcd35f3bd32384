"""The planner's arithmetic: memory, the KV-cache pool, decode and prefill times, replicas and cost,
each result kept with its formula and the numbers plugged in (``Step``) so the output can show them.

Assumptions (docs/plan.md says why):

- GPU memory: vLLM's default ``gpu_memory_utilization`` 0.9 of each device; from that, 1 GiB of
  non-torch memory (CUDA context, CUDA graphs, NCCL buffers) and the activation peak of one
  scheduler step of ``MAX_BATCHED_TOKENS`` tokens are reserved — what vLLM's profiler measures at
  start-up — and the rest, after the weights, is the KV-cache pool.
- Decode is a matrix-vector product per step: every weight is read once per step whatever the
  batch, and each sequence's KV cache is read too. On a GPU the reading and the arithmetic overlap,
  so a step takes the larger of bytes / (bandwidth × efficiency) and FLOPs / (peak × MFU). On a CPU
  the same few cores load the weights and multiply them, so the two times add up.
- Prefill is compute-bound: 2 × active parameters × prompt tokens plus the attention's
  2 × layers × heads × head_dim × tokens², at a model FLOPs utilisation (MFU).
- Each figure is a range: (optimistic, expected, pessimistic) efficiencies below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from shipyard.capacity import PlanError
from shipyard.capacity.hardware import Device
from shipyard.capacity.models import DTYPE_BITS, GIB, Architecture

GPU_MEMORY_UTILIZATION = 0.9
NON_TORCH_GIB = 1.0
MAX_BATCHED_TOKENS = 8192  # vLLM's default per-step token budget with chunked prefill
MAX_NUM_SEQS = 256  # vLLM's default cap on sequences decoded together
CPU_MEMORY_FRACTION = 0.9  # of physical memory, the rest for the OS and the gateway
CPU_RESERVE_GIB = 0.5
TENSOR_PARALLEL = (1, 2, 4, 8)
TARGET_UTILIZATION = 0.8  # replicas are planned to run at most this busy, so queues stay short
HOURS_PER_MONTH = 730

# (optimistic, expected, pessimistic)
GPU_BANDWIDTH_EFFICIENCY = (0.9, 0.8, 0.6)
GPU_MFU = (0.6, 0.45, 0.3)
# CPU decode: expected = memory time + compute time (the cores that load also multiply);
# optimistic = the larger of the two (perfect overlap); pessimistic = expected / 0.8.
CPU_SLOW = 0.8
# CPU prefill (llama.cpp's quantized GEMM) against the measured float32 GEMM rate.
CPU_PREFILL_MFU = (1.0, 0.5, 0.3)
RANGE = ("fast", "mid", "slow")


@dataclass(frozen=True)
class Workload:
    input_tokens: int
    output_tokens: int
    context: int
    rps: float | None = None
    ttft_p95_ms: float | None = None
    tpot_ms: float | None = None
    source: str = "options"


@dataclass
class Step:
    name: str
    formula: str
    plugged: str
    value: float
    unit: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "formula": self.formula,
            "plugged": self.plugged,
            "value": self.value,
            "unit": self.unit,
        }


def _g(x: float) -> str:
    """A number for a formula line: short, no scientific notation for ordinary sizes."""
    if x == 0:
        return "0"
    if abs(x) >= 1e15 or abs(x) < 1e-4:
        return f"{x:.3e}"
    if abs(x) >= 100 or float(x).is_integer():
        return f"{x:,.0f}"
    return f"{x:.4g}"


def _gib(b: float) -> str:
    return f"{b / GIB:.3f} GiB"


@dataclass
class ModelFacts:
    """Device-independent figures."""

    arch: Architecture
    dtype: str
    weight_bytes: float
    kv_dtype: str
    kv_elem_bytes: float
    kv_per_token: float
    kv_per_seq_workload: float
    kv_per_seq_context: float
    steps: list[Step] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        a = self.arch
        return {
            "name": a.name,
            "source": a.source,
            "layers": a.layers,
            "hidden": a.hidden,
            "heads": a.heads,
            "kv_heads": a.kv_heads,
            "head_dim": a.head_dim,
            "intermediate": a.intermediate,
            "vocab": a.vocab,
            "max_context": a.max_context,
            "experts": a.experts,
            "experts_per_token": a.experts_per_token,
            "sliding_window": a.sliding_window,
            "sliding_layers": a.sliding_layers,
            "tied_embeddings": a.tied_embeddings,
            "total_params": a.total_params,
            "active_params": a.active_params,
            "dtype": self.dtype,
            "weights_bytes": self.weight_bytes,
            "weights_gb": self.weight_bytes / 1e9,
            "weights_gib": self.weight_bytes / GIB,
            "kv_dtype": self.kv_dtype,
            "kv_bytes_per_token": self.kv_per_token,
            "kv_bytes_per_sequence_workload": self.kv_per_seq_workload,
            "kv_bytes_per_sequence_context": self.kv_per_seq_context,
            "formulas": [s.as_dict() for s in self.steps],
        }


def model_facts(
    arch: Architecture, dtype: str | None, kv_dtype: str, kv_bytes: float, w: Workload
) -> ModelFacts:
    steps: list[Step] = []
    params = arch.total_params
    if dtype is None and arch.weight_bytes_exact:
        weights = float(arch.weight_bytes_exact)
        shown = arch.dtype
        steps.append(
            Step(
                "weights",
                "sum of the GGUF's tensor bytes (its real mix of quantization types)",
                f"{params:,} parameters in {weights:,.0f} bytes = {weights * 8 / params:.2f} bits per weight",
                weights,
                "bytes",
            )
        )
    else:
        shown = dtype or arch.dtype
        bits = DTYPE_BITS[shown]
        weights = params * bits / 8
        steps.append(
            Step(
                "weights",
                "parameters × bits per weight / 8",
                f"{params:,} × {bits:g} / 8 = {weights / 1e9:.2f} GB ({_gib(weights)})",
                weights,
                "bytes",
            )
        )
    if arch.experts > 1:
        steps.append(
            Step(
                "active parameters",
                "total − layers × (experts − experts per token) × expert parameters − input embedding",
                f"{arch.active_params:,} of {params:,} multiply each token",
                arch.active_params,
                "parameters",
            )
        )
    per_token = arch.kv_bytes_per_token(kv_bytes)
    steps.append(
        Step(
            "KV cache per token",
            "2 × layers × kv_heads × head_dim × bytes",
            f"2 × {arch.layers} × {arch.kv_heads} × {arch.head_dim} × {kv_bytes:g} = {per_token:,.0f} bytes"
            f" ({per_token / 1024:.1f} KiB)",
            per_token,
            "bytes",
        )
    )
    tokens = w.input_tokens + w.output_tokens
    seq_w = arch.kv_bytes_per_sequence(tokens, kv_bytes)
    seq_c = arch.kv_bytes_per_sequence(w.context, kv_bytes)
    for label, n, value in (("workload", tokens, seq_w), ("context", w.context, seq_c)):
        if arch.sliding_layers:
            full = arch.layers - arch.sliding_layers
            kept = min(n, arch.sliding_window or n)
            plugged = (
                f"2 × {arch.kv_heads} × {arch.head_dim} × {kv_bytes:g} × ({full} × {n:,} + "
                f"{arch.sliding_layers} × "
                f"{kept:,}) = {_gib(value)}"
            )
            formula = (
                "2 × kv_heads × head_dim × bytes × "
                "(global layers × tokens + sliding layers × min(tokens, window))"
            )
        else:
            plugged = f"{per_token:,.0f} × {n:,} = {_gib(value)}"
            formula = "KV per token × tokens"
        steps.append(Step(f"KV cache per sequence ({label}: {n:,} tokens)", formula, plugged, value, "bytes"))
    return ModelFacts(arch, shown, weights, kv_dtype, kv_bytes, per_token, seq_w, seq_c, steps)


# -- per device ---------------------------------------------------------------------------------------


def _weights_read(m: ModelFacts, batch: int) -> float:
    """Bytes of weights one decode step reads: all, less the input embedding when it is a separate
    matrix (a row lookup), and for a mixture of experts only the experts the batch's tokens touch:
    E × (1 − (1 − k/E)^batch) of E, when tokens pick experts independently."""
    a = m.arch
    per_param = m.weight_bytes / a.total_params
    read = m.weight_bytes
    if not a.tied_embeddings:
        read -= (
            (a.embedding_bytes_exact or a.embedding_params * per_param)
            if a.weight_bytes_exact
            else (a.embedding_params * per_param)
        )
    if a.experts > 1:
        touched = a.experts * (1 - (1 - a.experts_per_token / a.experts) ** batch)
        idle = a.experts - min(a.experts, touched)
        read -= a.layers * idle * a.expert_params_per_layer * per_param
    return read


def _attended(a: Architecture, tokens: float) -> float:
    """Σ over layers of the tokens each attends to (sliding layers see at most the window)."""
    full = a.layers - a.sliding_layers
    window = min(tokens, a.sliding_window) if a.sliding_window else tokens
    return full * tokens + a.sliding_layers * window


def decode_flops(a: Architecture, batch: int, ctx: float) -> float:
    return batch * (2 * a.active_params + 4 * a.heads * a.head_dim * _attended(a, ctx))


def prefill_flops(a: Architecture, tokens: int) -> float:
    """2 × (active parameters − output head) × tokens + 2 × output head (last token only) +
    attention 2 × heads × head_dim × tokens² over the layers (causal: half of 4·n²·d)."""
    head = a.vocab * a.hidden
    body = max(1, a.active_params - head)
    return 2 * body * tokens + 2 * head + 2 * a.heads * a.head_dim * tokens * _attended(a, tokens)


@dataclass
class DevicePlan:
    device: Device
    fits: bool
    reason: str = ""
    tp: int = 0
    usable_bytes: float = 0.0
    reserve_bytes: float = 0.0
    kv_pool_bytes: float = 0.0
    max_seqs_workload: int = 0
    max_seqs_context: int = 0
    batch: int = 0
    step_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)
    step1_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tokens_per_s: tuple[float, float, float] = (0.0, 0.0, 0.0)
    single_stream_tokens_per_s: tuple[float, float, float] = (0.0, 0.0, 0.0)
    prefill_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ttft_ms: tuple[float, float] = (0.0, 0.0)
    itl_ms: tuple[float, float] = (0.0, 0.0)
    requests_per_s: float = 0.0
    replicas: int | None = None
    devices: int | None = None
    monthly_usd: float | None = None
    meets_targets: bool | None = None
    target_notes: list[str] = field(default_factory=list)
    curve: list[tuple[int, float]] = field(default_factory=list)  # (batch, tokens/s mid)
    steps: list[Step] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = self.device
        out: dict[str, Any] = {
            "device": d.name,
            "kind": d.kind,
            "memory_gb": d.memory_gb,
            "bandwidth_gbs": d.bandwidth_gbs,
            "bf16_tflops": d.bf16_tflops,
            "price_usd_h": d.price_usd_h,
            "spec_source": d.spec_source,
            "price_source": d.price_source,
            "fits": self.fits,
            "reason": self.reason,
        }
        if d.measured:
            out["measured"] = d.measured
            out["matvec_weights_per_s"] = d.matvec_weights_per_s
        if not self.fits:
            return out
        out.update(
            {
                "tensor_parallel": self.tp,
                "usable_bytes_per_device": self.usable_bytes,
                "reserve_bytes_per_device": self.reserve_bytes,
                "kv_pool_bytes": self.kv_pool_bytes,
                "max_sequences_workload": self.max_seqs_workload,
                "max_sequences_context": self.max_seqs_context,
                "batch": self.batch,
                "decode_step_ms": dict(zip(RANGE, self.step_ms, strict=True)),
                "single_stream_tokens_per_s": dict(zip(RANGE, self.single_stream_tokens_per_s, strict=True)),
                "decode_tokens_per_s": dict(zip(RANGE, self.tokens_per_s, strict=True)),
                "prefill_ms": dict(zip(RANGE, self.prefill_ms, strict=True)),
                "ttft_ms": {"low": self.ttft_ms[0], "high": self.ttft_ms[1]},
                "itl_ms": {"low": self.itl_ms[0], "high": self.itl_ms[1]},
                "requests_per_s_per_replica": self.requests_per_s,
                "replicas": self.replicas,
                "devices": self.devices,
                "monthly_usd": self.monthly_usd,
                "meets_targets": self.meets_targets,
                "target_notes": self.target_notes,
                "throughput_curve": [{"batch": b, "tokens_per_s": t} for b, t in self.curve],
                "formulas": [s.as_dict() for s in self.steps],
            }
        )
        return out


def _reserve(m: ModelFacts, tp: int) -> float:
    """Per device: non-torch memory plus the activations of one step of MAX_BATCHED_TOKENS tokens
    (hidden state, residual, q/k/v and the MLP's intermediate, in 2-byte activations)."""
    a = m.arch
    per_token = 2 * (4 * a.hidden + (a.heads + 2 * a.kv_heads) * a.head_dim / tp + 2 * a.intermediate / tp)
    return NON_TORCH_GIB * GIB + MAX_BATCHED_TOKENS * per_token


def _timing(
    m: ModelFacts, dev: Device, tp: int, batch: int, ctx: float
) -> tuple[tuple[float, float, float], float, float]:
    """Seconds per decode step (fast, mid, slow), and the bytes and FLOPs it moves."""
    bytes_ = _weights_read(m, batch) + batch * m.arch.kv_bytes_per_sequence(int(ctx), m.kv_elem_bytes)
    flops = decode_flops(m.arch, batch, ctx)
    bw = dev.bandwidth_gbs * 1e9 * tp
    peak = dev.bf16_tflops * 1e12 * tp
    if dev.kind == "cpu":
        # Multiply-adds (FLOPs / 2) at the cores' quantized matrix-vector rate.
        rate = dev.matvec_weights_per_s or peak / 2
        mem, comp = bytes_ / bw, flops / 2 / rate
        fast = max(mem, comp)  # perfect overlap: the optimistic end
        return (fast, mem + comp, (mem + comp) / CPU_SLOW), bytes_, flops
    t = tuple(
        max(bytes_ / (bw * e), flops / (peak * f))
        for e, f in zip(GPU_BANDWIDTH_EFFICIENCY, GPU_MFU, strict=True)
    )
    return (t[0], t[1], t[2]), bytes_, flops


def _prefill(m: ModelFacts, dev: Device, tp: int, tokens: int) -> tuple[float, float, float]:
    flops = prefill_flops(m.arch, tokens)
    peak = dev.bf16_tflops * 1e12 * tp
    mfu = CPU_PREFILL_MFU if dev.kind == "cpu" else GPU_MFU
    return (flops / (peak * mfu[0]), flops / (peak * mfu[1]), flops / (peak * mfu[2]))


def plan_device(m: ModelFacts, dev: Device, w: Workload) -> DevicePlan:
    ctx_avg = w.input_tokens + w.output_tokens / 2
    choices = (1,) if dev.kind == "cpu" else TENSOR_PARALLEL
    last_reason = ""
    for tp in choices:
        mem = dev.memory_gb * 1e9
        if dev.kind == "cpu":
            usable = mem * CPU_MEMORY_FRACTION
            reserve = CPU_RESERVE_GIB * GIB
        else:
            usable = mem * GPU_MEMORY_UTILIZATION
            reserve = _reserve(m, tp)
        pool = tp * (usable - reserve) - m.weight_bytes
        if pool < m.kv_per_seq_context:
            last_reason = (
                f"weights {m.weight_bytes / 1e9:.1f} GB + one {w.context:,}-token sequence "
                f"({m.kv_per_seq_context / 1e9:.2f} GB) do not fit in {tp} × {dev.memory_gb:g} GB"
            )
            continue
        step1, _, _ = _timing(m, dev, tp, 1, ctx_avg)
        if w.tpot_ms is not None and step1[1] * 1000 > w.tpot_ms and tp != choices[-1]:
            last_reason = f"one sequence decodes at {step1[1] * 1000:.1f} ms/token > --tpot {w.tpot_ms:g} ms"
            continue
        prefill_ms = _prefill(m, dev, tp, w.input_tokens)[1] * 1000
        if w.ttft_p95_ms is not None and prefill_ms > w.ttft_p95_ms and tp != choices[-1]:
            last_reason = f"the prompt's prefill takes {prefill_ms:.0f} ms > --ttft-p95 {w.ttft_p95_ms:g} ms"
            continue
        plan = DevicePlan(dev, True, tp=tp, usable_bytes=usable, reserve_bytes=reserve, kv_pool_bytes=pool)
        _fill(plan, m, dev, tp, w, ctx_avg)
        return plan
    return DevicePlan(dev, False, reason=last_reason or "does not fit")


def _fill(p: DevicePlan, m: ModelFacts, dev: Device, tp: int, w: Workload, ctx_avg: float) -> None:
    a = m.arch
    p.max_seqs_workload = int(p.kv_pool_bytes // max(1.0, m.kv_per_seq_workload))
    p.max_seqs_context = int(p.kv_pool_bytes // max(1.0, m.kv_per_seq_context))
    limit = max(1, min(p.max_seqs_workload, MAX_NUM_SEQS))
    pre = _prefill(m, dev, tp, w.input_tokens)
    p.prefill_ms = (pre[0] * 1000, pre[1] * 1000, pre[2] * 1000)

    def rate(b: int) -> float:
        t = _timing(m, dev, tp, b, ctx_avg)[0][1]
        return 1.0 / (pre[1] + w.output_tokens * t / b)

    batches = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, limit} & set(range(1, limit + 1)))
    p.curve = [(b, b / _timing(m, dev, tp, b, ctx_avg)[0][1]) for b in batches]
    best = 1
    for b in range(1, limit + 1) if limit <= 512 else batches:
        step = _timing(m, dev, tp, b, ctx_avg)[0][1]
        if w.tpot_ms is not None and step * 1000 > w.tpot_ms:
            break
        best = b
    step1, bytes1, flops1 = _timing(m, dev, tp, 1, ctx_avg)
    stepb, bytesb, flopsb = _timing(m, dev, tp, best, ctx_avg)
    p.batch = best
    p.step1_ms = tuple(x * 1000 for x in step1)  # type: ignore[assignment]
    p.step_ms = tuple(x * 1000 for x in stepb)  # type: ignore[assignment]
    p.single_stream_tokens_per_s = tuple(1 / x for x in step1)  # type: ignore[assignment]
    p.tokens_per_s = tuple(best / x for x in stepb)  # type: ignore[assignment]
    p.requests_per_s = rate(best)
    bw = dev.bandwidth_gbs * tp
    peak = dev.bf16_tflops * tp
    s = p.steps
    if dev.kind == "cpu":
        s.append(
            Step(
                "usable memory",
                "physical memory × 0.9 − 0.5 GiB",
                f"{dev.memory_gb:g} GB × 0.9 − 0.5 GiB",
                p.usable_bytes - p.reserve_bytes,
                "bytes",
            )
        )
    else:
        s.append(
            Step(
                "reserve per device",
                f"{NON_TORCH_GIB:g} GiB non-torch + {MAX_BATCHED_TOKENS} tokens × 2 B × "
                "(4·hidden + (heads + 2·kv_heads)·head_dim/tp + 2·intermediate/tp)",
                f"{_gib(p.reserve_bytes)}",
                p.reserve_bytes,
                "bytes",
            )
        )
    share = CPU_MEMORY_FRACTION if dev.kind == "cpu" else GPU_MEMORY_UTILIZATION
    s.append(
        Step(
            "KV-cache pool",
            "tp × (memory × utilisation − reserve) − weights" if dev.kind != "cpu" else "usable − weights",
            f"{tp} × ({dev.memory_gb:g} GB × {share:g} − "
            f"{_gib(p.reserve_bytes)}) − {m.weight_bytes / 1e9:.2f} GB = {_gib(p.kv_pool_bytes)}",
            p.kv_pool_bytes,
            "bytes",
        )
    )
    s.append(
        Step(
            "max concurrent sequences",
            "floor(KV pool / KV per sequence)",
            f"{_gib(p.kv_pool_bytes)} / {_gib(m.kv_per_seq_workload)} = {p.max_seqs_workload:,} at "
            f"{w.input_tokens + w.output_tokens:,} tokens; {p.max_seqs_context:,} at {w.context:,}",
            p.max_seqs_workload,
            "sequences",
        )
    )
    if dev.kind == "cpu":
        matvec = dev.matvec_weights_per_s or peak * 1e12 / 2
        formula = (
            "bytes read / bandwidth + multiply-adds / matrix-vector rate (the same cores load and multiply)"
        )
        plugged1 = (
            f"{bytes1 / 1e6:,.1f} MB / {bw:g} GB/s + {flops1 / 2e9:.3g} G / {matvec / 1e9:.3g} G/s = "
            f"{step1[1] * 1000:.2f} ms"
        )
    else:
        formula = "max(bytes read / (bandwidth × eff), FLOPs / (peak × MFU))"
        plugged1 = (
            f"max({bytes1 / 1e9:.3f} GB / ({bw:g} GB/s × {GPU_BANDWIDTH_EFFICIENCY[1]}), "
            f"{flops1 / 1e12:.4g} TFLOP / "
            f"({peak:g} TFLOPS × {GPU_MFU[1]})) = {step1[1] * 1000:.2f} ms"
        )
    s.append(
        Step(
            "decode step, 1 sequence",
            formula + "; bytes = weights read + KV of the sequence",
            plugged1 + f" → {1 / step1[1]:,.1f} tokens/s",
            step1[1],
            "s",
        )
    )
    s.append(
        Step(
            f"decode step, batch {best}",
            "same, with bytes = weights read + batch × KV per sequence, FLOPs × batch",
            f"{bytesb / 1e9:.3f} GB, {flopsb / 1e12:.4g} TFLOP → {stepb[1] * 1000:.2f} ms → {best} / step = "
            f"{best / stepb[1]:,.0f} tokens/s",
            stepb[1],
            "s",
        )
    )
    pf = prefill_flops(a, w.input_tokens)
    mfu_mid = CPU_PREFILL_MFU[1] if dev.kind == "cpu" else GPU_MFU[1]
    s.append(
        Step(
            f"prefill of {w.input_tokens:,} tokens",
            "(2 × active params × tokens + attention 2 × heads × head_dim × Σ attended) / (peak × MFU)",
            f"{pf / 1e12:.4g} TFLOP / ({peak:g} TFLOPS × {mfu_mid}) = {pre[1] * 1000:.1f} ms",
            pre[1],
            "s",
        )
    )
    s.append(
        Step(
            "requests/s per replica",
            "1 / (prefill + output tokens × step / batch)",
            f"1 / ({pre[1] * 1000:.1f} ms + {w.output_tokens} × {stepb[1] * 1000:.2f} ms / {best}) = "
            f"{p.requests_per_s:.3g}",
            p.requests_per_s,
            "requests/s",
        )
    )
    # Latency ranges. TTFT: the prompt's prefill, a decode step it waits for, and queueing behind
    # other prompts' prefills at the planned load (p95 ≈ 3 × the M/D/1 mean wait).
    lam = (w.rps / max(1, _replicas(p, w))) if w.rps else TARGET_UTILIZATION * p.requests_per_s
    rho = min(0.95, lam * pre[2])
    wait = 3 * rho * pre[2] / (2 * (1 - rho))
    p.ttft_ms = (pre[0] * 1000, (pre[2] + stepb[2] + wait) * 1000)
    p.itl_ms = (step1[0] * 1000, (stepb[2] + lam * pre[2] * stepb[2]) * 1000)
    notes = []
    if w.ttft_p95_ms is not None:
        ok = p.ttft_ms[1] <= w.ttft_p95_ms
        notes.append(
            f"TTFT p95 ≤ {p.ttft_ms[1]:.0f} ms {'meets' if ok else 'misses'} --ttft-p95 {w.ttft_p95_ms:g}"
        )
    if w.tpot_ms is not None:
        ok2 = p.step_ms[1] <= w.tpot_ms
        notes.append(
            f"decode {p.step_ms[1]:.1f} ms/token {'meets' if ok2 else 'misses'} --tpot {w.tpot_ms:g}"
        )
    if notes:
        p.meets_targets = all("meets" in n for n in notes)
    p.target_notes = notes
    if w.rps:
        p.replicas = _replicas(p, w)
        p.devices = p.replicas * tp
        s.append(
            Step(
                "replicas",
                f"ceil(rps / (requests/s per replica × {TARGET_UTILIZATION}))",
                f"ceil({w.rps:g} / ({p.requests_per_s:.3g} × {TARGET_UTILIZATION})) = {p.replicas} × tp {tp} "
                f"= {p.devices} devices",
                p.replicas,
                "replicas",
            )
        )
        if dev.price_usd_h is not None:
            p.monthly_usd = p.devices * dev.price_usd_h * HOURS_PER_MONTH
            s.append(
                Step(
                    "monthly cost",
                    f"devices × USD/h × {HOURS_PER_MONTH} h",
                    f"{p.devices} × {dev.price_usd_h:g} × {HOURS_PER_MONTH} = ${p.monthly_usd:,.0f}",
                    p.monthly_usd,
                    "USD",
                )
            )


def _replicas(p: DevicePlan, w: Workload) -> int:
    if not w.rps or p.requests_per_s <= 0:
        return 1
    return max(1, math.ceil(w.rps / (p.requests_per_s * TARGET_UTILIZATION)))


def check_workload(w: Workload, arch: Architecture) -> None:
    if w.input_tokens + w.output_tokens > w.context:
        raise PlanError(
            f"--input-tokens + --output-tokens ({w.input_tokens + w.output_tokens:,}) exceed --context "
            f"({w.context:,}); raise --context (the model allows {arch.max_context:,})",
            param="context",
        )
