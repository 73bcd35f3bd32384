"""Reading a GGUF file's header: its metadata and its tensor table, never its weights.

GGUF (llama.cpp's model format, https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) starts
with the magic ``GGUF``, a version, the tensor and metadata counts, then the metadata as typed
key/value pairs, then one entry per tensor (name, shape, ggml type, offset into the data). The
planner needs the architecture numbers from the metadata and the real bytes of the weights, which
the tensor table gives exactly: a Q4_K_M file mixes Q4_K, Q6_K and F32 tensors, so its real bits
per weight are read here rather than assumed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from shipyard.capacity import PlanError as InvalidRequest

MAGIC = b"GGUF"

# Metadata value types (gguf.md, "GGUFMetadataValueType").
_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9

# ggml tensor types: (elements per block, bytes per block), from ggml.h / ggml.c type traits.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
}


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    type_name: str
    elements: int
    nbytes: int


@dataclass
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[Tensor] = field(default_factory=list)
    # Array lengths of metadata arrays that were skipped rather than kept (the tokenizer's tokens).
    array_lengths: dict[str, int] = field(default_factory=dict)

    @property
    def weight_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def parameters(self) -> int:
        return sum(t.elements for t in self.tensors)

    def bytes_by_type(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.type_name] = out.get(t.type_name, 0) + t.nbytes
        return out


class _Reader:
    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f = f
        self.path = path

    def take(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise InvalidRequest(
                f"{self.path}: the GGUF header is cut short (a truncated download?)", param="model"
            )
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > 1 << 24:
            raise InvalidRequest(
                f"{self.path}: a GGUF string of {n} bytes; the file is not a valid GGUF", param="model"
            )
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, kind: int, keep_arrays: bool) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, n = self.unpack("<I"), self.unpack("<Q")
            if keep_arrays or (item != _STRING and n <= 4096):
                return [self.value(item, keep_arrays) for _ in range(n)]
            # Long arrays (a vocabulary of 262,144 strings) are skipped, their length kept.
            if item == _STRING:
                for _ in range(n):
                    self.f.seek(self.unpack("<Q"), 1)
            elif item in _SCALARS:
                self.f.seek(struct.calcsize(_SCALARS[item]) * n, 1)
            else:
                for _ in range(n):
                    self.value(item, keep_arrays)
            return _Skipped(n)
        raise InvalidRequest(f"{self.path}: unknown GGUF metadata type {kind}", param="model")


@dataclass(frozen=True)
class _Skipped:
    length: int


def read_header(path: str | Path) -> GGUFHeader:
    """The metadata and tensor table of the GGUF at ``path`` (reads only the header)."""
    p = Path(path)
    try:
        f = p.open("rb")
    except OSError as exc:
        raise InvalidRequest(f"--gguf: cannot open {p}: {exc.strerror or exc}", param="gguf") from None
    with f:
        r = _Reader(f, p)
        if r.take(4) != MAGIC:
            raise InvalidRequest(
                f"--gguf: {p} is not a GGUF file (it does not start with `GGUF`); "
                "pass a llama.cpp model file",
                param="gguf",
            )
        version = r.unpack("<I")
        if version < 2:
            raise InvalidRequest(
                f"--gguf: {p} is GGUF version {version}; versions 2 and 3 are read", param="gguf"
            )
        n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
        header = GGUFHeader(path=p, version=version, metadata={})
        for _ in range(n_kv):
            key = r.string()
            kind = r.unpack("<I")
            value = r.value(kind, keep_arrays=False)
            if isinstance(value, _Skipped):
                header.array_lengths[key] = value.length
            else:
                header.metadata[key] = value
        for _ in range(n_tensors):
            name = r.string()
            dims = r.unpack("<I")
            shape = tuple(r.unpack("<Q") for _ in range(dims))
            type_id = r.unpack("<I")
            r.unpack("<Q")  # offset into the data section
            elements = 1
            for d in shape:
                elements *= d
            type_name, block, block_bytes = GGML_TYPES.get(type_id, (f"type{type_id}", 0, 0))
            if not block:
                raise InvalidRequest(
                    f"--gguf: tensor `{name}` in {p} has ggml type {type_id}, "
                    "which the planner does not know",
                    param="gguf",
                )
            header.tensors.append(Tensor(name, shape, type_name, elements, elements // block * block_bytes))
    return header
