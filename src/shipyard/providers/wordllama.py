"""Embeddings from WordLlama: a token-embedding table distilled from Llama 2, averaged per text.

It is the built-in embedding model because it is tiny, fast on a CPU and needs no network: the
`wordllama` wheel ships the 256-dim `l2_supercat` weights and its tokenizer. Its plain ``load()``
would still look for the tokenizer in ``~/.cache/wordllama`` and download it from Hugging Face,
so it is loaded with the package's own folder as the cache and downloads disabled.

The weights are Matryoshka-trained, so the first 64 or 128 dimensions are embeddings in their own
right; requests may ask for them with OpenAI's ``dimensions``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from shipyard.errors import InvalidRequest, ProviderUnavailable
from shipyard.plugins import hookimpl
from shipyard.providers.base import (
    BaseProvider,
    Call,
    Embeddings,
    Health,
    ProviderOptions,
    ProviderType,
    Usage,
    estimate_tokens,
)

log = logging.getLogger("shipyard.providers.wordllama")

CONFIG = "l2_supercat"
SHIPPED_DIM = 256
# Matryoshka sizes of l2_supercat up to the shipped weights' width (512 and 1024 need a download).
SUPPORTED_DIMS = (64, 128, 256)
# Token rows gathered per step, so one very long text never materialises a huge (tokens x dim) array.
_ROWS_PER_STEP = 8192


class WordLlamaOptions(ProviderOptions):
    dim: int = Field(
        default=256,
        description="Embedding size when a request sets no `dimensions`: 64, 128 or 256 (leading "
        "dimensions of the 256-dim model, re-normalised).",
    )
    batch_size: int = Field(default=64, ge=1, le=4096, description="Texts tokenized together per batch.")
    max_inputs: int = Field(
        default=2048, ge=1, description="Most texts one request may embed (OpenAI's limit is 2048)."
    )

    @field_validator("dim")
    @classmethod
    def _supported_dim(cls, value: int) -> int:
        if value not in SUPPORTED_DIMS:
            raise ValueError(f"must be one of {', '.join(map(str, SUPPORTED_DIMS))}")
        return value


def _import_wordllama() -> Any:
    # Importing wordllama runs logging.basicConfig(level=INFO) (in wordllama.inference), which would
    # turn on INFO output of every library in the server; undo what that import did to the root logger.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import wordllama
    except ImportError:
        raise ProviderUnavailable(
            "the embedding provider needs the `wordllama` package; pip install wordllama", retryable=False
        ) from None
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)
    return wordllama


def load_model() -> Any:
    """The shipped WordLlama model, from the installed package only (never downloads)."""
    wordllama = _import_wordllama()
    package_dir = Path(wordllama.__file__).parent
    try:
        return wordllama.WordLlama.load(
            config=CONFIG, dim=SHIPPED_DIM, cache_dir=package_dir, disable_download=True
        )
    except FileNotFoundError as exc:
        raise ProviderUnavailable(
            f"WordLlama's `{CONFIG}` files are missing from {package_dir} ({exc}); reinstall the "
            "`wordllama` package",
            retryable=False,
        ) from None


class WordLlamaProvider(BaseProvider):
    kind = "wordllama"
    exact_token_count = True  # its tokenizer is loaded in this process and fast

    def __init__(self, name: str, options: WordLlamaOptions | None = None) -> None:
        super().__init__(name)
        self.options = options or WordLlamaOptions()
        self._model: Any = None

    async def start(self) -> None:
        if self._model is None:
            self._model = await asyncio.to_thread(load_model)
            log.info(
                "embedding model `%s` loaded: WordLlama %s, %d dims", self.name, CONFIG, self.options.dim
            )

    async def close(self) -> None:
        self._model = None

    async def health(self) -> Health:
        if self._model is None:
            return Health(False, f"provider `{self.name}`: WordLlama not loaded")
        return Health(True, f"WordLlama {CONFIG}, {self.options.dim} dims")

    def count_tokens(self, text: str, model: str) -> int:
        if self._model is None:
            return estimate_tokens(text)
        return int(sum(self._model.tokenizer.encode(text, add_special_tokens=False).attention_mask))

    def _texts(self, body: Mapping[str, Any]) -> list[str]:
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts:
            raise InvalidRequest("`input` must be a non-empty string or list of strings", param="input")
        if not all(isinstance(t, str) for t in texts):
            raise InvalidRequest(
                f"provider `{self.name}` embeds text: `input` must be strings (token-id arrays come from "
                "another model's tokenizer)",
                param="input",
            )
        if len(texts) > self.options.max_inputs:
            raise InvalidRequest(
                f"`input` has {len(texts)} texts; provider `{self.name}` takes at most "
                f"{self.options.max_inputs} per request",
                param="input",
            )
        for i, t in enumerate(texts):
            if not t:
                raise InvalidRequest(f"`input[{i}]` is an empty string", param="input")
        return texts

    def _dim(self, body: Mapping[str, Any]) -> int:
        dim = body.get("dimensions")
        if dim is None:
            return self.options.dim
        if isinstance(dim, bool) or dim not in SUPPORTED_DIMS:
            raise InvalidRequest(
                f"`dimensions` must be one of {', '.join(map(str, SUPPORTED_DIMS))} for provider "
                f"`{self.name}`; got {dim!r}",
                param="dimensions",
            )
        return int(dim)

    async def embed(self, call: Call) -> Embeddings:
        model = self._model
        if model is None:
            raise ProviderUnavailable(f"provider `{self.name}`: WordLlama is not loaded")
        texts = self._texts(call.body)
        dim = self._dim(call.body)
        vectors: list[list[float]] = [[] for _ in texts]
        total = 0
        # Texts of similar length share a batch, since the tokenizer pads a batch to its longest.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        size = self.options.batch_size
        # Off the event loop, one batch at a time: between batches the loop serves other requests
        # (and a cancelled request stops), and no step holds more than a batch's arrays.
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            done, tokens = await asyncio.to_thread(self._embed_batch, model, [texts[i] for i in batch], dim)
            for i, vector in zip(batch, done, strict=True):
                vectors[i] = vector
            total += tokens
            if call.max_input_tokens is not None and total > call.max_input_tokens:
                raise InvalidRequest(
                    f"`input` has more than {call.max_input_tokens:,} tokens for model `{call.model}`, the "
                    "most one embeddings request may carry (setting `max_embedding_input_tokens`): split "
                    "it into several requests",
                    param="input",
                )
        return Embeddings(vectors=vectors, usage=Usage(input_tokens=total), model=call.model)

    def _embed_batch(self, model: Any, texts: list[str], dim: int) -> tuple[list[list[float]], int]:
        vectors, total = embed_texts(model, texts, dim)
        return vectors.tolist(), total


def embed_texts(model: Any, texts: list[str], dim: int = SHIPPED_DIM) -> tuple[np.ndarray, int]:
    """Unit vectors (one row per text, float32) and the tokens they took: WordLlama's embedding is
    the mean of its token rows, and after normalising the sum is the same."""
    table: np.ndarray = model.embedding
    last_row = table.shape[0] - 1
    out: np.ndarray = np.zeros((len(texts), dim), dtype=np.float32)
    total = 0
    encodings = model.tokenizer.encode_batch(texts, add_special_tokens=False)
    for row, enc in enumerate(encodings):
        ids = np.asarray(enc.ids, dtype=np.int64)[np.asarray(enc.attention_mask, dtype=bool)]
        np.clip(ids, 0, last_row, out=ids)
        total += len(ids)
        acc = out[row]
        for at in range(0, len(ids), _ROWS_PER_STEP):
            acc += table[ids[at : at + _ROWS_PER_STEP], :dim].sum(axis=0)
        norm = float(np.linalg.norm(acc))
        if norm > 0:
            acc /= norm
    return out, total


@hookimpl
def register_providers() -> list[ProviderType]:
    return [
        ProviderType(
            "wordllama",
            WordLlamaOptions,
            WordLlamaProvider,
            "WordLlama text embeddings (64-256 dims), bundled and offline; embeddings only.",
        )
    ]
