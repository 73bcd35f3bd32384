"""The WordLlama embedding provider, with the real bundled model and no network."""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pydantic
import pytest

from shipyard.errors import InvalidRequest, ProviderUnavailable, UnsupportedOperation
from shipyard.providers.base import Call
from shipyard.providers.wordllama import WordLlamaOptions, WordLlamaProvider, load_model


def _no_network(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError(f"network access attempted: {args!r}")


@pytest.fixture(scope="module")
def provider() -> Iterator[WordLlamaProvider]:
    p = WordLlamaProvider("wordllama")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        asyncio.run(p.start())
    yield p
    asyncio.run(p.close())


def embed_call(inp: Any, **body: Any) -> Call:
    return Call(body={"input": inp, "model": "wordllama", **body}, model="wordllama", timeout=10)


def cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))


async def test_one_string(provider: WordLlamaProvider) -> None:
    result = await provider.embed(embed_call("The harbour lights came on at dusk."))
    assert len(result.vectors) == 1
    vector = result.vectors[0]
    assert len(vector) == 256 and all(type(x) is float for x in vector)
    assert math.isclose(math.fsum(x * x for x in vector), 1.0, rel_tol=1e-5)
    assert result.model == "wordllama"
    assert result.usage.input_tokens == provider.count_tokens("The harbour lights came on at dusk.", "m") > 0
    body = result.to_openai()
    assert (
        body["data"][0]["embedding"] == vector and body["usage"]["prompt_tokens"] == result.usage.input_tokens
    )


async def test_several_strings_keep_their_order_and_are_unit_length(provider: WordLlamaProvider) -> None:
    texts = [
        "A considerably longer sentence about ships, tides, cargo and the sailors who check the ropes.",
        "Short one.",
        "Medium length text about tea.",
    ]
    result = await provider.embed(embed_call(texts))
    assert len(result.vectors) == 3
    for text, vector in zip(texts, result.vectors, strict=True):
        alone = (await provider.embed(embed_call(text))).vectors[0]
        assert np.allclose(vector, alone, atol=1e-6)
        assert math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-5)
    assert result.usage.input_tokens == sum(provider.count_tokens(t, "m") for t in texts)


async def test_similar_sentences_are_closer_than_unrelated_ones(provider: WordLlamaProvider) -> None:
    cat, kitten, revenue = (
        await provider.embed(
            embed_call(
                [
                    "The cat sat on the mat.",
                    "A kitten was sitting on the rug.",
                    "Quarterly revenue grew by eight percent.",
                ]
            )
        )
    ).vectors
    assert cosine(cat, kitten) > cosine(cat, revenue) + 0.1


async def test_matches_wordllamas_own_embeddings(provider: WordLlamaProvider) -> None:
    import wordllama

    texts = ["The ship sails at dawn.", "Gulls circle over the harbour while the tide turns."]
    reference = wordllama.WordLlama.load(
        dim=256, trunc_dim=64, cache_dir=wordllama.__path__[0], disable_download=True
    ).embed(texts, norm=True)
    ours = (await provider.embed(embed_call(texts, dimensions=64))).vectors
    assert np.allclose(ours, reference, atol=1e-5)


@pytest.mark.parametrize("dim", [64, 128, 256])
async def test_dimensions_option_and_request(provider: WordLlamaProvider, dim: int) -> None:
    result = await provider.embed(embed_call("sea", dimensions=dim))
    assert len(result.vectors[0]) == dim
    assert math.isclose(float(np.linalg.norm(result.vectors[0])), 1.0, rel_tol=1e-5)
    small = WordLlamaProvider("small", WordLlamaOptions(dim=dim))
    await small.start()
    assert len((await small.embed(embed_call("sea"))).vectors[0]) == dim


def test_unsupported_dim_option_is_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="64, 128, 256"):
        WordLlamaOptions(dim=100)
    with pytest.raises(pydantic.ValidationError):
        WordLlamaOptions.model_validate({"dim": 256, "colour": "blue"})


@pytest.mark.parametrize(
    "body",
    [
        {"input": []},
        {"input": ""},
        {"input": ["ok", ""]},
        {"input": [1, 2, 3]},
        {"input": [[1, 2]]},
        {"input": None},
        {"input": "x", "dimensions": 512},
        {"input": "x", "dimensions": True},
    ],
)
async def test_bad_requests_are_400(provider: WordLlamaProvider, body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        await provider.embed(Call(body=body, model="wordllama", timeout=10))


async def test_too_many_inputs(provider: WordLlamaProvider) -> None:
    limited = WordLlamaProvider("limited", WordLlamaOptions(max_inputs=2))
    await limited.start()
    with pytest.raises(InvalidRequest, match="at most 2"):
        await limited.embed(embed_call(["a", "b", "c"]))


async def test_big_batch(provider: WordLlamaProvider) -> None:
    texts = [f"document number {i} about {'tides ' * (i % 7)}and harbours" for i in range(1000)]
    result = await provider.embed(embed_call(texts))
    assert len(result.vectors) == 1000
    norms = np.linalg.norm(np.asarray(result.vectors), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)


async def test_only_embeddings_are_supported(provider: WordLlamaProvider) -> None:
    call = Call(body={"messages": [{"role": "user", "content": "hi"}]}, model="wordllama", timeout=10)
    with pytest.raises(UnsupportedOperation):
        await provider.chat(call)


async def test_before_start_it_is_unavailable() -> None:
    p = WordLlamaProvider("cold")
    assert not (await p.health()).ok
    with pytest.raises(ProviderUnavailable, match="not loaded"):
        await p.embed(embed_call("hi"))
    assert p.count_tokens("four word long text", "m") > 0  # an estimate until loaded


def test_loads_with_no_network_and_no_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import requests

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(requests, "get", _no_network)
    model = load_model()
    assert model.embedding.shape[1] == 256


def test_loading_leaves_the_root_logger_alone() -> None:
    code = (
        "import logging\n"
        "from shipyard.providers.wordllama import load_model\n"
        "load_model()\n"
        "root = logging.getLogger()\n"
        "assert root.handlers == [] and root.level == logging.WARNING, (root.handlers, root.level)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
