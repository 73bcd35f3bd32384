"""The body of a whole answer: the provider's bytes where it kept them (pass-through), otherwise
serialised here; embeddings as floats or, on request, base64 of little-endian float32."""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

import orjson

from shipyard.providers.base import Embeddings

# Above this many vectors, serialising takes long enough (tens of milliseconds for thousands) that
# it runs in a thread rather than on the event loop, where it would stall every other request.
THREAD_ABOVE_VECTORS = 64


async def embedding_payload(result: Embeddings, encoding_format: Any) -> bytes:
    if result.raw is None and len(result.vectors) > THREAD_ABOVE_VECTORS:
        return await asyncio.to_thread(embedding_bytes, result, encoding_format)
    return embedding_bytes(result, encoding_format)


def embedding_bytes(result: Embeddings, encoding_format: Any) -> bytes:
    if result.raw is not None:
        return result.raw
    data = result.to_openai()
    if encoding_format == "base64":
        for item in data["data"]:
            vec = item["embedding"]
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
    return orjson.dumps(data)
