"""The hardware catalogue: memory, memory bandwidth, dense BF16 throughput and an hourly price for
common GPUs, and this machine's CPU measured on the spot.

GPU figures are the vendors' datasheet numbers (dense, without sparsity). Prices are on-demand list
prices for one GPU from the public pricing pages named in ``price_source``, as read in 2025; they
change often, so every one can be overridden with ``--price NAME=USD/h``.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import dataclass, replace

from shipyard.capacity import PlanError

PRICES_AS_OF = "2025 list prices (on-demand, one GPU); check the page before buying"


@dataclass(frozen=True)
class Device:
    name: str
    memory_gb: float  # decimal GB, as vendors state it
    bandwidth_gbs: float  # GB/s
    bf16_tflops: float  # dense
    price_usd_h: float | None
    spec_source: str
    price_source: str = ""
    kind: str = "gpu"
    # Only for the CPU: how its figures were obtained, and the rate its cores multiply quantized
    # weights by activations in a matrix-vector product (weights per second, all cores).
    measured: str = ""
    matvec_weights_per_s: float | None = None


GPUS: dict[str, Device] = {
    d.name: d
    for d in [
        Device(
            "a10g",
            24,
            600,
            70,
            1.006,
            "AWS G5 page (A10G: 24 GB, 600 GB/s; https://aws.amazon.com/ec2/instance-types/g5/); NVIDIA "
            "publishes no A10G datasheet: BF16 dense 70 TFLOPS is the commonly quoted figure, below the "
            "A10's 125 (https://www.nvidia.com/en-us/data-center/products/a10-gpu/)",
            "AWS EC2 on-demand, g5.xlarge, us-east-1 (https://aws.amazon.com/ec2/pricing/on-demand/)",
        ),
        Device(
            "l4",
            24,
            300,
            121,
            0.71,
            "NVIDIA L4 datasheet (https://www.nvidia.com/en-us/data-center/l4/)",
            "Google Cloud, g2-standard-4, us-central1 (https://cloud.google.com/compute/gpus-pricing)",
        ),
        Device(
            "a100-40gb",
            40,
            1555,
            312,
            1.29,
            "NVIDIA A100 datasheet (https://www.nvidia.com/en-us/data-center/a100/)",
            "Lambda on-demand (https://lambda.ai/pricing)",
        ),
        Device(
            "a100-80gb",
            80,
            2039,
            312,
            1.79,
            "NVIDIA A100 datasheet, SXM (https://www.nvidia.com/en-us/data-center/a100/)",
            "Lambda on-demand (https://lambda.ai/pricing)",
        ),
        Device(
            "h100",
            80,
            3350,
            989,
            2.99,
            "NVIDIA H100 datasheet, SXM (https://www.nvidia.com/en-us/data-center/h100/)",
            "Lambda on-demand, H100 SXM (https://lambda.ai/pricing)",
        ),
        Device(
            "h200",
            141,
            4800,
            989,
            3.79,
            "NVIDIA H200 datasheet, SXM (https://www.nvidia.com/en-us/data-center/h200/)",
            "Lambda on-demand (https://lambda.ai/pricing)",
        ),
        Device(
            "rtx-4090",
            24,
            1008,
            165,
            0.69,
            "NVIDIA Ada Lovelace architecture whitepaper, RTX 4090 (FP16/BF16 tensor, FP32 accumulate)",
            "RunPod community cloud (https://www.runpod.io/pricing)",
        ),
    ]
}
ALIASES = {
    "a100": "a100-80gb",
    "a100-80": "a100-80gb",
    "a100-40": "a100-40gb",
    "4090": "rtx-4090",
    "h100-80gb": "h100",
}


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def physical_memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return 0.0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_bandwidth_gbs(seconds: float = 0.4) -> float:
    """Streaming-read bandwidth: one thread per usable core sums its share of a 256 MiB float32
    array with a dot product (each element loaded once and multiplied, as a matrix-vector product
    loads each weight); the best of several passes, in GB/s. numpy releases the GIL in the dot."""
    import numpy as np

    data = np.ones(64 * 1024 * 1024, dtype=np.float32)
    parts = np.array_split(data, usable_cpus())
    best = 0.0
    deadline = time.perf_counter() + seconds
    for _ in range(8):
        threads = [threading.Thread(target=np.dot, args=(p, p)) for p in parts]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        best = max(best, data.nbytes / (time.perf_counter() - start) / 1e9)
        if time.perf_counter() > deadline:
            break
    return best


def measure_gflops(seconds: float = 0.3) -> float:
    """float32 matrix multiplication (numpy's BLAS, all usable cores), best of several, in GFLOP/s."""
    import numpy as np

    n = 1024
    a = np.ones((n, n), dtype=np.float32)
    a @ a
    best = 0.0
    deadline = time.perf_counter() + seconds
    for _ in range(10):
        start = time.perf_counter()
        a @ a
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
        if time.perf_counter() > deadline:
            break
    return best


# llama.cpp's CPU dot products of quantized weights with 8-bit-quantized activations (Q8_0, Q4_K…:
# unpack a 32-weight block, multiply-add as int8, scale as float) take about a dozen AVX2/AVX-512
# instructions per 32-weight block; at about three vector instructions a cycle that is about 8
# weights a cycle per core. An estimate from the kernels' instruction counts, not a measurement.
MATVEC_WEIGHTS_PER_CYCLE = 8


def cpu_ghz() -> float:
    """The cores' clock as the OS reports it (``cpu MHz`` in /proc/cpuinfo: often the base clock in
    a VM), in GHz; 2.5 when the OS does not say."""
    best = 0.0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    best = max(best, float(line.split(":", 1)[1]))
    except (OSError, ValueError):
        pass
    return best / 1000 if best else 2.5


def this_cpu(bandwidth_gbs: float | None = None, gflops: float | None = None) -> Device:
    """This machine's CPU: usable cores and physical memory read from the OS; memory bandwidth
    and float32 throughput measured now (a second or less) unless given. Estimates: another load on
    the machine while measuring lowers them."""
    how = []
    if bandwidth_gbs is None:
        bandwidth_gbs = measure_bandwidth_gbs()
        how.append("bandwidth measured (streaming dot product over 256 MiB)")
    else:
        how.append("bandwidth given (--cpu-bandwidth)")
    if gflops is None:
        gflops = measure_gflops()
        how.append("float32 GEMM measured (numpy BLAS)")
    else:
        how.append("GFLOP/s given (--cpu-gflops)")
    cores = usable_cpus()
    ghz = cpu_ghz()
    how.append(f"matrix-vector rate {cores} cores × {ghz:.2f} GHz × {MATVEC_WEIGHTS_PER_CYCLE} weights/cycle")
    return Device(
        "cpu",
        round(physical_memory_gb(), 1),
        round(bandwidth_gbs, 1),
        round(gflops / 1000, 4),
        None,
        f"this machine: {_cpu_model()}, {cores} usable cores, {physical_memory_gb():.1f} GB memory",
        "no price: pass --price cpu=USD/h",
        kind="cpu",
        measured="; ".join(how) + "; estimates, lower when the machine is busy",
        matvec_weights_per_s=cores * ghz * 1e9 * MATVEC_WEIGHTS_PER_CYCLE,
    )


def device_names() -> list[str]:
    return [*GPUS, "cpu"]


def parse_gpus(values: list[str]) -> list[str]:
    """Names from repeated/comma-separated --gpu values (default: every GPU and this CPU)."""
    names: list[str] = []
    for value in values:
        for part in value.split(","):
            key = part.strip().lower()
            if not key:
                continue
            key = ALIASES.get(key, key)
            if key not in GPUS and key != "cpu":
                raise PlanError(
                    f"--gpu: `{part.strip()}` is not in the hardware catalogue; "
                    f"use one of {', '.join(device_names())}",
                    param="gpu",
                )
            if key not in names:
                names.append(key)
    return names or device_names()


def parse_prices(values: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for value in values:
        name, sep, price = value.partition("=")
        key = ALIASES.get(name.strip().lower(), name.strip().lower())
        if not sep or key not in [*GPUS, "cpu"]:
            raise PlanError(
                f"--price: `{value}` must be NAME=USD_PER_HOUR with NAME one of {', '.join(device_names())} "
                "(e.g. --price h100=2.49)",
                param="price",
            )
        try:
            usd = float(price)
        except ValueError:
            usd = -1.0
        if not usd >= 0:
            raise PlanError(
                f"--price: `{price}` is not a price in USD per hour (e.g. --price h100=2.49)", param="price"
            )
        out[key] = usd
    return out


def with_price(device: Device, prices: dict[str, float]) -> Device:
    if device.name in prices:
        return replace(device, price_usd_h=prices[device.name], price_source="--price")
    return device
