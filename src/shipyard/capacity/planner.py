"""One plan: the model facts, then every requested device planned for the workload."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shipyard.capacity import formulas as f
from shipyard.capacity.hardware import PRICES_AS_OF, Device
from shipyard.capacity.models import Architecture


@dataclass
class Plan:
    model: f.ModelFacts
    workload: f.Workload
    devices: list[f.DevicePlan]
    created: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))

    @property
    def best(self) -> f.DevicePlan | None:
        """The cheapest device that fits and meets the targets (by monthly cost, else by price per
        token of capacity)."""
        ok = [
            p
            for p in self.devices
            if p.fits and p.meets_targets is not False and p.device.price_usd_h is not None
        ]
        if not ok:
            return None

        def cost(p: f.DevicePlan) -> float:
            if p.monthly_usd is not None:
                return p.monthly_usd
            price = p.device.price_usd_h or 0.0
            return price * p.tp / max(1e-9, p.tokens_per_s[1])

        return min(ok, key=cost)

    def as_dict(self) -> dict[str, Any]:
        w = self.workload
        best = self.best
        return {
            "created": self.created,
            "model": self.model.as_dict(),
            "workload": {
                "input_tokens": w.input_tokens,
                "output_tokens": w.output_tokens,
                "context": w.context,
                "rps": w.rps,
                "ttft_p95_ms": w.ttft_p95_ms,
                "tpot_ms": w.tpot_ms,
                "source": w.source,
            },
            "assumptions": assumptions(),
            "devices": [p.as_dict() for p in self.devices],
            "recommendation": best.device.name if best else None,
        }


def assumptions() -> dict[str, Any]:
    return {
        "gpu_memory_utilization": f.GPU_MEMORY_UTILIZATION,
        "non_torch_gib_per_gpu": f.NON_TORCH_GIB,
        "max_batched_tokens": f.MAX_BATCHED_TOKENS,
        "max_num_seqs": f.MAX_NUM_SEQS,
        "gpu_bandwidth_efficiency": dict(zip(f.RANGE, f.GPU_BANDWIDTH_EFFICIENCY, strict=True)),
        "gpu_mfu": dict(zip(f.RANGE, f.GPU_MFU, strict=True)),
        "cpu_memory_fraction": f.CPU_MEMORY_FRACTION,
        "cpu_decode": "bytes / measured bandwidth + multiply-adds / (cores × GHz × 8 weights per cycle)",
        "cpu_prefill_mfu_vs_float32_gemm": dict(zip(f.RANGE, f.CPU_PREFILL_MFU, strict=True)),
        "target_utilization": f.TARGET_UTILIZATION,
        "hours_per_month": f.HOURS_PER_MONTH,
        "prices": PRICES_AS_OF,
    }


def make_plan(
    arch: Architecture,
    dtype: str | None,
    kv_dtype: str,
    kv_bytes: float,
    workload: f.Workload,
    devices: list[Device],
) -> Plan:
    f.check_workload(workload, arch)
    facts = f.model_facts(arch, dtype, kv_dtype, kv_bytes, workload)
    return Plan(facts, workload, [f.plan_device(facts, d, workload) for d in devices])
