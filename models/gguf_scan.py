"""Where everything of a GGUF v3 file lies, without decoding its values.

The gguf package's GGUFReader decodes every value, the 300k tokenizer strings of a
Qwen3 file one numpy view at a time: about 12 s a file. The tools that only need the
tensors (models/reference.py --gguf-weights) or that copy whole keys from one file to
another (tests/python/llama_vocab.py) use this instead: a walk over the header that
records each key's byte range and each tensor's place, in about 0.2 s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Sizes of the fixed-size value types (GGUF value types 0-7 and 10-12); 8 is a
# string, 9 an array.
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY, _UINT32 = 8, 9, 4


@dataclass
class Tensor:
    name: str
    dims: list[int]  # ggml order, innermost first
    qtype: int  # a GGMLQuantizationType value
    offset: int  # from the start of the data section


@dataclass
class Scan:
    raw: np.memmap  # the whole file, bytes
    keys: list[tuple[str, int, int]]  # (name, start, end) of each key-value entry
    tensors: list[Tensor]
    tensor_infos: tuple[int, int]  # byte range of the tensor infos
    alignment: int
    data_start: int


def scan(path: Path) -> Scan:
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    buf = memoryview(raw)
    pos = 0

    def take(fmt: str):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0] if len(v) == 1 else v

    def string() -> str:
        nonlocal pos
        n = take("Q")
        pos += n
        return bytes(buf[pos - n:pos]).decode()

    def skip(vtype: int) -> None:
        nonlocal pos
        if vtype == _STRING:
            n = take("Q")  # before the +=, which would read pos first
            pos += n
        elif vtype == _ARRAY:
            sub, count = take("IQ")
            if sub == _STRING:
                for _ in range(count):
                    skip(_STRING)
            elif sub in _SIZES:
                pos += _SIZES[sub] * count
            else:
                raise ValueError(f"{path}: arrays of type {sub} are not read here")
        elif vtype in _SIZES:
            pos += _SIZES[vtype]
        else:
            raise ValueError(f"{path}: unknown value type {vtype}")

    magic, version, n_tensors, n_kv = take("4sIQQ")
    if magic != b"GGUF" or version != 3:
        raise ValueError(f"{path}: not a GGUF v3 file")
    keys, alignment = [], 32
    for _ in range(n_kv):
        start = pos
        name = string()
        vtype = take("I")
        if name == "general.alignment" and vtype == _UINT32:
            alignment = take("I")
        else:
            skip(vtype)
        keys.append((name, start, pos))
    infos_start, tensors = pos, []
    for _ in range(n_tensors):
        name = string()
        dims = [take("Q") for _ in range(take("I"))]
        qtype, offset = take("IQ")
        tensors.append(Tensor(name, dims, qtype, offset))
    infos_end = pos
    data_start = -(-pos // alignment) * alignment
    return Scan(raw, keys, tensors, (infos_start, infos_end), alignment, data_start)


def tensor_bytes(s: Scan, t: Tensor) -> np.ndarray:
    """The raw bytes of tensor `t` of scan `s`."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(t.qtype)]
    start = s.data_start + t.offset
    return s.raw[start:start + int(np.prod(t.dims)) // block * size].view(np.uint8)
