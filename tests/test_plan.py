"""`shipyard plan`, the capacity planner, through the CLI: its memory figures against published
ones (cited below and in docs/plan.md), a GGUF read from the shipped embedded model, a config.json,
a stored trace window as the workload, the report files, and bad input exiting 2 with the option
named."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shipyard.capacity.gguf import read_header
from shipyard.cli.main import app

DATA = Path(__file__).parent / "data" / "plan"
GIB = 1024**3
# GPU-only plans need no CPU measurement; CPU plans get fixed CPU figures so tests do not time.
FIXED_CPU = ["--cpu-bandwidth", "20", "--cpu-gflops", "50"]


def plan(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["plan", *args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def within(estimate: float, published: float, tolerance: float = 0.15) -> bool:
    return abs(estimate - published) / published <= tolerance


# -- published figures ------------------------------------------------------------------------------
# Hugging Face, "Llama 3.1 - 405B, 70B & 8B with multilinguality and long context", section
# "Inference Memory Requirements" (https://huggingface.co/blog/llama31#inference-memory-requirements):
# weights in GB (FP16 / FP8 / INT4) and the FP16 KV cache in GB (binary: 1k tokens = 1024, and
# 16k/128k = 16,000/128,000 tokens, as huggingface/blog issue #2345 reproduces them).
LLAMA31_WEIGHTS_GB = {
    ("llama-3.1-8b", "fp16"): 16,
    ("llama-3.1-8b", "fp8"): 8,
    ("llama-3.1-8b", "int4"): 4,
    ("llama-3.1-70b", "fp16"): 140,
    ("llama-3.1-70b", "fp8"): 70,
    ("llama-3.1-70b", "int4"): 35,
}
LLAMA31_KV_GIB = {
    ("llama-3.1-8b", 1024): 0.125,
    ("llama-3.1-8b", 16000): 1.95,
    ("llama-3.1-8b", 128000): 15.62,
    ("llama-3.1-70b", 1024): 0.313,
    ("llama-3.1-70b", 16000): 4.88,
    ("llama-3.1-70b", 128000): 39.06,
}


@pytest.mark.parametrize(("model", "dtype"), sorted(LLAMA31_WEIGHTS_GB))
def test_weights_match_the_llama31_blog(model: str, dtype: str) -> None:
    got = plan(model, "--dtype", dtype, "--gpu", "h100")["model"]["weights_gb"]
    assert within(got, LLAMA31_WEIGHTS_GB[(model, dtype)]), got


@pytest.mark.parametrize(("model", "tokens"), sorted(LLAMA31_KV_GIB))
def test_kv_cache_matches_the_llama31_blog(model: str, tokens: int) -> None:
    data = plan(
        model, "--context", str(tokens), "--input-tokens", "1", "--output-tokens", "1", "--gpu", "h200"
    )
    got = data["model"]["kv_bytes_per_sequence_context"] / GIB
    assert within(got, LLAMA31_KV_GIB[(model, tokens)]), got


def test_kv_cache_and_weights_match_the_vllm_paper() -> None:
    """Kwon et al., "Efficient Memory Management for Large Language Model Serving with
    PagedAttention" (SOSP 2023, https://arxiv.org/abs/2309.06180): for OPT-13B "the KV cache of a
    single token demands 800 KB of space" (2 × 5120 × 40 × 2 bytes), a 2048-token request "as much
    as 1.6 GB", and (Figure 1) a 13B model's parameters take 26 GB of an A100-40GB."""
    m = plan(
        "opt-13b", "--context", "2048", "--input-tokens", "1", "--output-tokens", "1", "--gpu", "a100-40gb"
    )["model"]
    assert within(m["kv_bytes_per_token"] / 1024, 800)
    assert within(m["kv_bytes_per_sequence_context"] / 1e9, 1.6)
    assert within(m["weights_gb"], 26)


def test_mixtral_weights_match_the_published_half_precision_figure() -> None:
    """Hugging Face, "Welcome Mixtral" (https://huggingface.co/blog/mixtral): Mixtral 8x7B needs
    about 90 GB of memory in half precision (also https://www.hardware-corner.net/mixtral-8x7b-hefty-vram-needs/).
    And only its active parameters (12.9 B, the model card) multiply each token."""
    m = plan("mixtral-8x7b", "--dtype", "fp16", "--gpu", "h100")["model"]
    assert within(m["weights_gb"], 90)
    assert within(m["active_params"] / 1e9, 12.9)


# -- model sources ---------------------------------------------------------------------------------


def _bundled() -> Path:
    from shipyard.providers.local import bundled_model_path

    return bundled_model_path()


def test_the_embedded_gguf_is_read_from_its_header() -> None:
    path = _bundled()
    data = plan("embedded", "--gpu", "cpu", "--input-tokens", "1", "--output-tokens", "1", *FIXED_CPU)
    m = data["model"]
    assert (m["layers"], m["hidden"], m["heads"], m["kv_heads"], m["head_dim"]) == (18, 640, 4, 1, 256)
    assert (m["vocab"], m["max_context"], m["sliding_window"], m["sliding_layers"]) == (
        262144,
        32768,
        512,
        15,
    )
    assert m["tied_embeddings"] is True
    header = read_header(path)
    assert m["weights_bytes"] == header.weight_bytes == sum(t.nbytes for t in header.tensors)
    # The tensors are the file less its header (metadata and a 262,144-token vocabulary).
    size = path.stat().st_size
    assert 0.95 * size < m["weights_bytes"] < size
    # The same architecture as the catalogue's entry from the model's config.json.
    catalogue = plan("gemma3-270m", "--gpu", "cpu", *FIXED_CPU)["model"]
    assert abs(m["total_params"] - catalogue["total_params"]) / catalogue["total_params"] < 0.001
    # Q4_K_M keeps the tied embedding at Q8_0: the real bits per weight are well above 4.85.
    assert 7 < m["weights_bytes"] * 8 / m["total_params"] < 8
    # The same plan through --gguf FILE.
    assert (
        plan("--gguf", str(path), "--gpu", "cpu", *FIXED_CPU)["model"]["weights_bytes"] == m["weights_bytes"]
    )
    cpu = data["devices"][0]
    assert cpu["device"] == "cpu" and cpu["fits"] and cpu["bandwidth_gbs"] == 20
    # 1 sequence: bytes / bandwidth + multiply-adds / the cores' matrix-vector rate, as shown.
    step = m["weights_bytes"] / 20e9 + m["total_params"] / cpu["matvec_weights_per_s"]
    assert cpu["single_stream_tokens_per_s"]["mid"] == pytest.approx(1 / step, rel=0.02)
    shown = next(f for f in cpu["formulas"] if f["name"] == "decode step, 1 sequence")
    assert "MB / 20 GB/s" in shown["plugged"]


def test_a_config_json_gives_the_same_plan_as_the_catalogue() -> None:
    from_file = plan("--hf-config", str(DATA / "llama-3.1-8b-config.json"), "--gpu", "h100")
    from_catalogue = plan("llama-3.1-8b", "--gpu", "h100")
    for key in ("total_params", "weights_bytes", "kv_bytes_per_token", "kv_bytes_per_sequence_context"):
        assert from_file["model"][key] == from_catalogue["model"][key], key
    assert from_file["model"]["total_params"] == 8_030_261_248 - 266_240  # the card's 8.03 B less the norms
    moe = plan("--hf-config", str(DATA / "mixtral-8x7b-config.json"), "--gpu", "h100")["model"]
    assert (moe["experts"], moe["experts_per_token"]) == (8, 2)
    assert moe["total_params"] == plan("mixtral-8x7b", "--gpu", "h100")["model"]["total_params"]


# -- the plan itself ------------------------------------------------------------------------------


def test_a_model_too_big_for_one_gpu_is_split_and_costed() -> None:
    data = plan("llama-3.1-70b", "--rps", "4", "--gpu", "h100,a10g,l4", "--price", "h100=2.5")
    by = {d["device"]: d for d in data["devices"]}
    h100 = by["h100"]
    # 141 GB of bf16 weights exceed two cards' 2 × (72 GB − reserve): four; in fp8, two.
    assert h100["fits"] and h100["tensor_parallel"] == 4
    assert h100["replicas"] >= 1 and h100["devices"] == h100["replicas"] * 4
    fp8 = plan("llama-3.1-70b", "--dtype", "fp8", "--gpu", "h100")["devices"][0]
    assert fp8["tensor_parallel"] == 2
    assert h100["monthly_usd"] == pytest.approx(h100["devices"] * 2.5 * 730)
    assert h100["price_source"] == "--price"
    assert by["a10g"]["tensor_parallel"] == 8  # 8 × (21.6 GB − reserve) hold 141 GB and the KV cache
    # …but not with a 131,072-token sequence (40 GiB of KV cache) as well.
    long = plan("llama-3.1-70b", "--context", "131072", "--gpu", "a10g")["devices"][0]
    assert not long["fits"] and "do not fit in 8 × 24 GB" in long["reason"]
    # The formulas are shown with their numbers.
    names = [f["name"] for f in h100["formulas"]]
    assert {"KV-cache pool", "max concurrent sequences", "replicas", "monthly cost"} <= set(names)
    assert any("2 × 80 × 8 × 128 × 2" in f["plugged"] for f in data["model"]["formulas"])
    # Throughput rises with batch; one sequence is bandwidth-bound: ≤ bandwidth / weights read.
    curve = [p["tokens_per_s"] for p in h100["throughput_curve"]]
    assert curve == sorted(curve)
    bound = 4 * 3350e9 / (data["model"]["weights_bytes"] - 128256 * 8192 * 2)
    assert h100["single_stream_tokens_per_s"]["fast"] <= bound


def test_latency_targets_limit_the_batch_and_mark_what_misses() -> None:
    loose = plan("llama-3.1-8b", "--rps", "10", "--gpu", "h100")["devices"][0]
    tight = plan("llama-3.1-8b", "--rps", "10", "--tpot", "10", "--ttft-p95", "2000", "--gpu", "h100")[
        "devices"
    ][0]
    assert tight["batch"] < loose["batch"]
    assert tight["decode_step_ms"]["mid"] <= 10
    assert tight["meets_targets"] is True
    assert tight["replicas"] >= loose["replicas"]
    impossible = plan("llama-3.1-8b", "--tpot", "1", "--gpu", "l4")["devices"][0]
    assert impossible["meets_targets"] is False or not impossible["fits"]


def test_the_terminal_output_shows_formulas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["plan", "qwen2.5-7b", "--rps", "2", "--gpu", "l4,h100"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "2 × 28 × 4 × 128 × 2" in text  # KV per token of Qwen2.5 7B, plugged in
    assert "monthly cost" in text and "h100" in text and "l4" in text


def test_the_report_files_escape_what_the_input_names(tmp_path: Path) -> None:
    cfg = json.loads((DATA / "llama-3.1-8b-config.json").read_text())
    cfg["_name_or_path"] = "<script>alert(1)</script>|x"
    evil = tmp_path / "config.json"
    evil.write_text(json.dumps(cfg))
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        ["plan", "--hf-config", str(evil), "--rps", "3", "--gpu", "h100,l4,cpu", *FIXED_CPU, "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    html = (out / "plan.html").read_text()
    assert "<script" not in html and "&lt;script&gt;" in html
    assert html.count("<svg") == 2 and "http://www.w3.org" not in html
    md = (out / "plan.md").read_text()
    assert "KV cache per token" in md and "monthly cost" in md and "\\|x" in md
    assert json.loads((out / "plan.json").read_text())["model"]["name"] == cfg["_name_or_path"]


def test_stored_traces_are_the_workload(tmp_path: Path) -> None:
    from shipyard.settings import Settings
    from shipyard.store.db import Store
    from shipyard.store.traces import insert_traces
    from shipyard.tracing.spans import Span, Trace

    store = Store.for_settings(Settings(overrides={"home": str(tmp_path)}))
    store.migrate()
    now = time.time()
    batch = []
    for i in range(120):  # 120 requests over the last ~10 minutes
        t = Trace("chat", start=now - 600 + i * 5, end=now - 599 + i * 5, route="support", model="m")
        t.input_tokens, t.output_tokens = 300, 100
        t.spans.append(Span("chat support", t.trace_id, start=t.start, end=t.end))
        batch.append(t)
    insert_traces(store, batch)
    data = plan("llama-3.1-8b", "--from-traces", "--since", "1h", "--home", str(tmp_path), "--gpu", "h100")
    w = data["workload"]
    assert (w["input_tokens"], w["output_tokens"]) == (300, 100)
    assert 0.1 <= w["rps"] <= 0.3  # the busiest minute: 12 requests in 60 s (edges may split it)
    assert "120 requests" in w["source"]
    empty = CliRunner().invoke(
        app,
        [
            "plan",
            "llama-3.1-8b",
            "--from-traces",
            "--since",
            "1h",
            "--route",
            "other",
            "--home",
            str(tmp_path),
        ],
    )
    assert empty.exit_code == 2 and "--from-traces" in empty.output


def test_list_models_names_each_source() -> None:
    result = CliRunner().invoke(app, ["plan", "--list-models", "--json"])
    assert result.exit_code == 0
    models = json.loads(result.stdout)
    assert {"llama-3.1-8b", "mixtral-8x7b", "gemma3-270m", "qwen2.5-72b", "phi-3-mini"} <= set(models)
    assert all(m["source"].startswith("https://huggingface.co/") for m in models.values())


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["llama-9"], "MODEL: `llama-9` is not in the catalogue"),
        ([], "name one model"),
        (["llama-3.1-8b", "--gguf", "x.gguf"], "name one model"),
        (
            ["--hf-config", str(DATA / "missing-fields-config.json")],
            "lacks num_hidden_layers, intermediate_size",
        ),
        (["--hf-config", "/nonexistent/config.json"], "--hf-config: cannot read"),
        (["--gguf", str(DATA / "llama-3.1-8b-config.json")], "is not a GGUF file"),
        (["llama-3.1-8b", "--rps", "-1"], "--rps: `-1` must be a positive number"),
        (["llama-3.1-8b", "--gpu", "b200"], "--gpu: `b200` is not in the hardware catalogue"),
        (["llama-3.1-8b", "--price", "h100"], "--price: `h100` must be NAME=USD_PER_HOUR"),
        (["llama-3.1-8b", "--price", "h100=cheap"], "--price: `cheap` is not a price"),
        (["llama-3.1-8b", "--dtype", "int3"], "--dtype: `int3` is not a dtype"),
        (["llama-3.1-8b", "--context", "200000"], "beyond the model's maximum of 131,072"),
        (["llama-3.1-8b", "--input-tokens", "9000", "--context", "4096"], "raise --context"),
        (["llama-3.1-8b", "--output-tokens", "0"], "--output-tokens: `0` must be"),
        (["llama-3.1-8b", "--from-traces", "--rps", "3"], "leave out --rps"),
    ],
)
def test_bad_input_exits_2_naming_the_option(args: list[str], message: str, tmp_path: Path) -> None:
    os.environ.pop("SHIPYARD_HOME", None)
    result = CliRunner().invoke(app, ["plan", *args, "--gpu", "h100", "--home", str(tmp_path)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert re.search(re.escape(message), text), text
    assert "Traceback" not in result.output


def test_a_ttft_target_the_prompt_cannot_meet_on_one_gpu_splits_it() -> None:
    one = plan("llama-3.1-70b", "--dtype", "fp8", "--input-tokens", "8000", "--gpu", "h100")["devices"][0]
    assert one["tensor_parallel"] == 2  # the memory's choice
    fast = plan(
        "llama-3.1-70b", "--dtype", "fp8", "--input-tokens", "8000", "--ttft-p95", "1000", "--gpu", "h100"
    )["devices"][0]
    # 8,000 tokens × 2 × 70 B FLOPs ≈ 1.1 PFLOP: ~1.3 s on two H100s at 45% MFU, under 1 s on four.
    assert fast["tensor_parallel"] == 4 and fast["prefill_ms"]["mid"] < 1000
