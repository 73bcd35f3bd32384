"""A model's architecture facts, from a built-in catalogue, a Hugging Face ``config.json`` or a
GGUF header, and the parameter count and KV-cache size they imply.

The catalogue's numbers are copied from each model's public ``config.json`` (URL beside each).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shipyard.capacity import PlanError
from shipyard.capacity.gguf import read_header

GIB = 1024**3

# Bits per weight of each dtype / quantization the planner knows. The int4 of AWQ/GPTQ carries an
# fp16 scale and zero point per group of 128 weights (4 + 32/128 = 4.25); llama.cpp's formats are
# their block sizes (Q8_0: 34 bytes per 32 weights = 8.5; Q4_0: 18/32 = 4.5) and, for the K-quant
# mixes, the average llama.cpp's `quantize` reports for a 7B model (Q4_K_M 4.85, Q5_K_M 5.69).
DTYPE_BITS: dict[str, float] = {
    "fp32": 32.0,
    "fp16": 16.0,
    "bf16": 16.0,
    "fp8": 8.0,
    "int8": 8.0,
    "int4": 4.25,
    "q8_0": 8.5,
    "q6_k": 6.56,
    "q5_k_m": 5.69,
    "q4_k_m": 4.85,
    "q4_0": 4.5,
}
ALIASES = {
    "float32": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "q4": "q4_k_m",
    "q8": "q8_0",
}
# The KV cache's element size: engines keep it in fp16/bf16 unless told otherwise (vLLM
# --kv-cache-dtype fp8, llama.cpp --cache-type-k q8_0).
KV_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
}


def dtype_name(value: str, option: str = "--dtype", table: dict[str, float] = DTYPE_BITS) -> str:
    key = ALIASES.get(value.strip().lower(), value.strip().lower())
    if key not in table:
        raise PlanError(
            f"{option}: `{value}` is not a dtype the planner knows; use one of {', '.join(table)}",
            param=option,
        )
    return key


@dataclass(frozen=True)
class Architecture:
    """What sizing needs of a decoder-only transformer."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    max_context: int
    dtype: str = "bf16"
    tied_embeddings: bool = False
    mlp_matrices: int = 3  # gated MLP (gate, up, down); 2 for a plain one (OPT, GPT-2)
    experts: int = 1
    experts_per_token: int = 1
    # Layers that attend to the last `sliding_window` tokens only (Gemma 2/3 interleave them).
    sliding_window: int | None = None
    sliding_layers: int = 0
    # Read from a GGUF: the parameter count and the real bytes of its tensors.
    params_exact: int | None = None
    weight_bytes_exact: int | None = None
    embedding_bytes_exact: int | None = None
    source: str = ""

    # -- parameters -----------------------------------------------------------------------------
    @property
    def attention_params_per_layer(self) -> int:
        q_and_o = 2 * self.hidden * self.heads * self.head_dim
        k_and_v = 2 * self.hidden * self.kv_heads * self.head_dim
        return q_and_o + k_and_v

    @property
    def expert_params_per_layer(self) -> int:
        return self.mlp_matrices * self.hidden * self.intermediate

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def params_breakdown(self) -> dict[str, int]:
        router = self.hidden * self.experts if self.experts > 1 else 0
        per_layer = self.attention_params_per_layer + self.experts * self.expert_params_per_layer + router
        out = {
            "embedding": self.embedding_params,
            "layers": self.layers * per_layer,
            "lm_head": 0 if self.tied_embeddings else self.embedding_params,
        }
        return out

    @property
    def total_params(self) -> int:
        if self.params_exact:
            return self.params_exact
        return sum(self.params_breakdown().values())

    @property
    def active_params(self) -> int:
        """Parameters one token multiplies: all but the inactive experts (and the input embedding,
        which is a row lookup — counted back when tied, because the output head is that matrix)."""
        inactive = self.layers * (self.experts - self.experts_per_token) * self.expert_params_per_layer
        lookup = 0 if self.tied_embeddings else self.embedding_params
        return max(1, self.total_params - inactive - lookup)

    # -- memory ---------------------------------------------------------------------------------
    def weight_bytes(self, dtype: str | None = None) -> float:
        """Bytes of the weights: a GGUF's real tensor bytes, else parameters × bits per weight."""
        if dtype is None and self.weight_bytes_exact:
            return float(self.weight_bytes_exact)
        return self.total_params * DTYPE_BITS[dtype or self.dtype] / 8

    def kv_bytes_per_token(self, kv_bytes: float) -> float:
        """2 (K and V) × layers × kv_heads × head_dim × bytes: every layer's cache for one token."""
        return 2 * self.layers * self.kv_heads * self.head_dim * kv_bytes

    def kv_bytes_per_sequence(self, tokens: int, kv_bytes: float) -> float:
        """Sliding-window layers keep at most `sliding_window` tokens; the others keep all."""
        per_layer_token = 2 * self.kv_heads * self.head_dim * kv_bytes
        full = self.layers - self.sliding_layers
        window = min(tokens, self.sliding_window) if self.sliding_window else tokens
        return per_layer_token * (full * tokens + self.sliding_layers * window)


# -- the catalogue ----------------------------------------------------------------------------------


def _hf(repo: str) -> str:
    return f"https://huggingface.co/{repo}/blob/main/config.json"


CATALOGUE: dict[str, Architecture] = {
    a.name: a
    for a in [
        Architecture(
            "llama-3.1-8b",
            32,
            4096,
            32,
            8,
            128,
            14336,
            128256,
            131072,
            source=_hf("meta-llama/Llama-3.1-8B-Instruct"),
        ),
        Architecture(
            "llama-3.1-70b",
            80,
            8192,
            64,
            8,
            128,
            28672,
            128256,
            131072,
            source=_hf("meta-llama/Llama-3.1-70B-Instruct"),
        ),
        Architecture(
            "mistral-7b",
            32,
            4096,
            32,
            8,
            128,
            14336,
            32768,
            32768,
            source=_hf("mistralai/Mistral-7B-Instruct-v0.3"),
        ),
        Architecture(
            "qwen2.5-7b", 28, 3584, 28, 4, 128, 18944, 152064, 32768, source=_hf("Qwen/Qwen2.5-7B-Instruct")
        ),
        Architecture(
            "qwen2.5-72b", 80, 8192, 64, 8, 128, 29568, 152064, 32768, source=_hf("Qwen/Qwen2.5-72B-Instruct")
        ),
        Architecture(
            "gemma-2-9b",
            42,
            3584,
            16,
            8,
            256,
            14336,
            256000,
            8192,
            tied_embeddings=True,
            sliding_window=4096,
            sliding_layers=21,
            source=_hf("google/gemma-2-9b-it"),
        ),
        Architecture(
            "gemma-2-27b",
            46,
            4608,
            32,
            16,
            128,
            36864,
            256000,
            8192,
            tied_embeddings=True,
            sliding_window=4096,
            sliding_layers=23,
            source=_hf("google/gemma-2-27b-it"),
        ),
        Architecture(
            "mixtral-8x7b",
            32,
            4096,
            32,
            8,
            128,
            14336,
            32000,
            32768,
            experts=8,
            experts_per_token=2,
            source=_hf("mistralai/Mixtral-8x7B-Instruct-v0.1"),
        ),
        Architecture(
            "phi-3-mini",
            32,
            3072,
            32,
            32,
            96,
            8192,
            32064,
            4096,
            source=_hf("microsoft/Phi-3-mini-4k-instruct"),
        ),
        Architecture(
            "gemma3-270m",
            18,
            640,
            4,
            1,
            256,
            2048,
            262144,
            32768,
            tied_embeddings=True,
            sliding_window=512,
            sliding_layers=15,
            source=_hf("google/gemma-3-270m"),
        ),
        # The model of vLLM's PagedAttention paper (its memory figures are a published check).
        Architecture(
            "opt-13b",
            40,
            5120,
            40,
            40,
            128,
            20480,
            50272,
            2048,
            dtype="fp16",
            tied_embeddings=True,
            mlp_matrices=2,
            source=_hf("facebook/opt-13b"),
        ),
    ]
}


def catalogue_model(name: str) -> Architecture:
    key = name.strip().lower()
    if key not in CATALOGUE:
        raise PlanError(
            f"MODEL: `{name}` is not in the catalogue ({', '.join(CATALOGUE)}); name one of those, or pass "
            "--gguf FILE or --hf-config config.json",
            param="model",
        )
    return CATALOGUE[key]


# -- Hugging Face config.json ---------------------------------------------------------------------

# Every Nth layer attends globally, the others through the sliding window (when the config does
# not list `layer_types`): Gemma 2 alternates, Gemma 3 has five local layers per global one.
_GLOBAL_EVERY = {"gemma2": 2, "gemma3": 6, "gemma3_text": 6}


def _sliding(cfg: dict[str, Any], layers: int, model_type: str) -> tuple[int | None, int]:
    window = cfg.get("sliding_window")
    if not isinstance(window, int) or window <= 0 or cfg.get("use_sliding_window") is False:
        return None, 0
    types = cfg.get("layer_types")
    if isinstance(types, list) and types:
        return window, sum(1 for t in types if t == "sliding_attention")
    every = cfg.get("sliding_window_pattern") or _GLOBAL_EVERY.get(model_type)
    if isinstance(every, int) and every > 0:
        return window, layers - layers // every
    return window, layers  # Mistral 7B v0.1: every layer slides


def from_hf_config(path: str | Path) -> Architecture:
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except OSError as exc:
        raise PlanError(f"--hf-config: cannot read {p}: {exc.strerror or exc}", param="hf-config") from None
    except ValueError as exc:
        raise PlanError(f"--hf-config: {p} is not JSON ({exc})", param="hf-config") from None
    if not isinstance(raw, dict):
        raise PlanError(f"--hf-config: {p} is not a config.json object", param="hf-config")
    cfg = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else raw
    assert isinstance(cfg, dict)
    names = {
        "layers": ("num_hidden_layers", "n_layer", "num_layers"),
        "hidden": ("hidden_size", "n_embd", "d_model"),
        "heads": ("num_attention_heads", "n_head"),
        "intermediate": ("intermediate_size", "ffn_dim", "n_inner"),
        "vocab": ("vocab_size",),
    }
    found: dict[str, int] = {}
    missing = []
    for key, options in names.items():
        value = next((cfg[o] for o in options if isinstance(cfg.get(o), int) and cfg[o] > 0), None)
        if value is None:
            missing.append(options[0])
        else:
            found[key] = value
    if missing:
        raise PlanError(
            f"--hf-config: {p} lacks {', '.join(missing)} (positive integers); "
            "pass the model's full config.json from its Hugging Face repository",
            param="hf-config",
        )
    model_type = str(cfg.get("model_type") or raw.get("model_type") or "")
    heads = found["heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim") or found["hidden"] // heads
    experts = cfg.get("num_local_experts") or cfg.get("num_experts") or 1
    per_token = cfg.get("num_experts_per_tok") or (1 if experts == 1 else 2)
    intermediate = (
        cfg.get("moe_intermediate_size") if experts > 1 and cfg.get("moe_intermediate_size") else None
    )
    window, sliding_layers = _sliding(cfg, found["layers"], model_type)
    dtype = str(cfg.get("torch_dtype") or raw.get("torch_dtype") or cfg.get("dtype") or "bf16")
    return Architecture(
        name=str(raw.get("_name_or_path") or p.parent.name or p.stem),
        layers=found["layers"],
        hidden=found["hidden"],
        heads=heads,
        kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        intermediate=int(intermediate or found["intermediate"]),
        vocab=found["vocab"],
        max_context=int(cfg.get("max_position_embeddings") or 2048),
        dtype=ALIASES.get(dtype, dtype) if ALIASES.get(dtype, dtype) in DTYPE_BITS else "bf16",
        tied_embeddings=bool(cfg.get("tie_word_embeddings", raw.get("tie_word_embeddings", False))),
        mlp_matrices=2 if model_type in ("opt", "gpt2", "gpt_neox", "falcon", "bloom") else 3,
        experts=int(experts),
        experts_per_token=int(per_token),
        sliding_window=window,
        sliding_layers=sliding_layers,
        source=str(p),
    )


# -- GGUF ---------------------------------------------------------------------------------------

_GGUF_GLOBAL_EVERY = {"gemma2": 2, "gemma3": 6}
# `general.file_type` (llama.cpp's llama_ftype): the name of the file's quantization mix.
_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 30: "IQ4_XS", 32: "BF16",
}  # fmt: skip


def from_gguf(path: str | Path) -> Architecture:
    header = read_header(path)
    meta = header.metadata
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise PlanError(f"--gguf: {path} has no `general.architecture` in its metadata", param="gguf")

    def num(key: str, default: int | None = None) -> int:
        value = meta.get(f"{arch}.{key}", default)
        if isinstance(value, list):  # per-layer values (some models vary kv heads by layer)
            value = max(value) if value else default
        if not isinstance(value, int) or value <= 0:
            raise PlanError(f"--gguf: {path} lacks `{arch}.{key}` in its metadata", param="gguf")
        return value

    layers, hidden, heads = num("block_count"), num("embedding_length"), num("attention.head_count")
    kv_heads = num("attention.head_count_kv", heads)
    head_dim = num("attention.key_length", hidden // heads)
    window = meta.get(f"{arch}.attention.sliding_window")
    every = _GGUF_GLOBAL_EVERY.get(arch)
    sliding = layers - layers // every if isinstance(window, int) and window > 0 and every else 0
    names = {t.name for t in header.tensors}
    embedding = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    vocab = header.array_lengths.get("tokenizer.ggml.tokens") or (embedding.shape[-1] if embedding else 0)
    experts = int(meta.get(f"{arch}.expert_count") or 1)
    file_type = meta.get("general.file_type")
    mix = _FILE_TYPES.get(file_type, f"file type {file_type}") if isinstance(file_type, int) else "mix"
    return Architecture(
        name=str(meta.get("general.name") or Path(path).stem),
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=num("feed_forward_length"),
        vocab=int(vocab),
        max_context=num("context_length", 2048),
        dtype=f"GGUF {mix}",
        tied_embeddings="output.weight" not in names,
        experts=experts,
        experts_per_token=int(meta.get(f"{arch}.expert_used_count") or 1),
        sliding_window=window if sliding else None,
        sliding_layers=sliding,
        params_exact=header.parameters,
        weight_bytes_exact=header.weight_bytes,
        embedding_bytes_exact=embedding.nbytes if embedding else None,
        source=str(path),
    )


def with_dtype(arch: Architecture, dtype: str | None) -> Architecture:
    """The architecture stored as ``dtype`` (a GGUF given a dtype is re-planned at that dtype)."""
    if dtype is None:
        return arch
    return replace(arch, dtype=dtype, weight_bytes_exact=None, embedding_bytes_exact=None)
