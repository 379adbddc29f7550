#!/usr/bin/env python3
"""Check a GGUF file written by our converter against the HF checkpoint it came from.

    check_gguf.py GGUF_PATH HF_DIR [--head | --base] [--file-type NAME]

An independent reading: the GGUF goes through the `gguf` PyPI package (llama.cpp's own
reader), the checkpoint through a small numpy safetensors reader
(models/make_fixtures.py). Every key and every tensor is compared with what the
converter spec says it must be:

- keys: `general.*`, the hyperparameters from config.json under the architecture
  (`orthrus.*` for an Orthrus model or head, the community layout of the llama.cpp
  Orthrus fork; `qwen3.*` for plain Qwen3 and split bases), `tokenizer.*` (from
  tokenizer.json / tokenizer_config.json; not in head files) and, for Orthrus files,
  `orthrus.diffusion.block_size`, `tokenizer.ggml.mask_token_id` and
  `orthrus.eos_token_ids`; each with its exact GGUF type; no other keys.
- tensors: llama.cpp names (`token_embd.weight`, `blk.N.attn_q.weight`, ...,
  `blk.N.attn_q_diff.weight`, ...), shapes in ggml order (reversed HF shapes), no
  others. 1-D tensors are F32. F32/F16/BF16 tensors must equal the source values
  converted with round-to-nearest-even; quantized ones are dequantized and their
  relative RMS error must stay under a per-type bound.

File kinds: a whole model (default), `--head` (only the diffusion-view tensors,
general.type "orthrus-head", orthrus.* keys and the mask token, no tokenizer) and
`--base` (a split base file: everything but the diffusion-view tensors, a plain
Qwen3 file).

Where the spec leaves a choice open, both readings pass: tokenizer.ggml.padding_token_id
may be absent when config.json has no pad_token_id (if present it must equal
generation_config.json's pad_token_id, else tokenizer_config.json's pad_token), and
general.quantization_version may be absent from F32/F16/BF16 files.

Exit status: 0 with a one-line summary when everything matches; 1 with one line per
mismatch otherwise; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

try:
    import gguf
    from gguf import GGMLQuantizationType as QT
    from gguf import GGUFReader
    from gguf import GGUFValueType as VT
except ImportError:  # pragma: no cover - environment problem, said plainly
    sys.exit("check_gguf.py needs the gguf package: pip install gguf")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models"))
from make_fixtures import TensorRef, load_tensor, read_checkpoint  # noqa: E402

# general.file_type values the converter writes (llama.cpp's LLAMA_FTYPE_*).
FILE_TYPES = {0: "f32", 1: "f16", 32: "bf16", 7: "q8_0", 2: "q4_0", 15: "q4_k_m", 17: "q5_k_m", 18: "q6_k"}
FLOAT_FILE_TYPES = {0: QT.F32, 1: QT.F16, 32: QT.BF16}
FLOAT_TYPES = {QT.F32, QT.F16, QT.BF16}

# Largest relative RMS error ||deq - src|| / ||src|| accepted per quantized type. Wrong
# block layouts or scales give errors of 0.3 and more; llama.cpp's reference quantizers
# (quantize_row_*_ref) on Gaussian weights measure, over 262144 values: q8_0 0.0053,
# q6_K 0.0177, q5_K 0.0360, q5_1 0.0378, q5_0 0.0427, q4_K 0.0711, q4_1 0.0781,
# iq4_nl 0.0785, q4_0 0.0855 (and up to 0.090 on a 32x32 tensor). The bounds leave
# room for small tensors and heavier-tailed real weights.
QUANT_BOUNDS = {
    QT.Q8_0: 1e-2,
    QT.Q6_K: 3e-2,
    QT.Q5_0: 6e-2,
    QT.Q5_1: 6e-2,
    QT.Q5_K: 6e-2,
    QT.Q4_0: 1.2e-1,
    QT.Q4_1: 1.2e-1,
    QT.Q4_K: 1.2e-1,
    QT.IQ4_NL: 1.2e-1,
}

# 2-D tensor types a quantized file may hold: its main type, the higher-precision
# types llama.cpp-style mixes use for some tensors (output, attn_v, ffn_down), and the
# fallbacks for rows whose length is not a multiple of the block size.
QUANT_FILE_TYPES_2D = {
    7: {QT.Q8_0},
    2: {QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0, QT.Q6_K},
    15: {QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0, QT.IQ4_NL},
    17: {QT.Q5_K, QT.Q6_K, QT.Q5_0, QT.Q5_1, QT.Q8_0},
    18: {QT.Q6_K, QT.Q8_0},
}
MAIN_QUANT_TYPE = {7: QT.Q8_0, 2: QT.Q4_0, 15: QT.Q4_K, 17: QT.Q5_K, 18: QT.Q6_K}

HF_LAYER_TO_GGUF = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "self_attn.q_proj_diff.weight": "attn_q_diff.weight",
    "self_attn.k_proj_diff.weight": "attn_k_diff.weight",
    "self_attn.v_proj_diff.weight": "attn_v_diff.weight",
    "self_attn.o_proj_diff.weight": "attn_output_diff.weight",
    "self_attn.q_norm_diff.weight": "attn_q_norm_diff.weight",
    "self_attn.k_norm_diff.weight": "attn_k_norm_diff.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
HF_GLOBAL_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}

CHUNK_ELEMS = 1 << 22  # values compared per step: memory stays bounded on 8B embeddings

VT_NAMES = {
    VT.UINT8: "u8", VT.INT8: "i8", VT.UINT16: "u16", VT.INT16: "i16", VT.UINT32: "u32", VT.INT32: "i32",
    VT.FLOAT32: "f32", VT.BOOL: "bool", VT.STRING: "str", VT.UINT64: "u64", VT.INT64: "i64", VT.FLOAT64: "f64",
}


class Problems:
    """Collects mismatches; each is one line saying what differs."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)

    def __bool__(self) -> bool:
        return bool(self.lines)


def hf_to_gguf_name(name: str) -> str | None:
    if name in HF_GLOBAL_TO_GGUF:
        return HF_GLOBAL_TO_GGUF[name]
    parts = name.split(".", 3)
    if len(parts) == 4 and parts[0] == "model" and parts[1] == "layers" and parts[2].isdigit():
        suffix = HF_LAYER_TO_GGUF.get(parts[3])
        if suffix is not None:
            return f"blk.{int(parts[2])}.{suffix}"
    return None


def is_diffusion_tensor(hf_name: str) -> bool:
    return hf_name.endswith("_diff.weight")


# --------------------------------------------------------------------------- expectations


@dataclass
class Hf:
    """What the converter reads from a HF checkpoint directory."""

    dir: Path
    config: dict
    generation_config: dict
    tokenizer_bytes: bytes | None
    tokenizer_config: dict
    tensors: dict[str, TensorRef]

    @property
    def is_orthrus(self) -> bool:
        return self.config.get("model_type") == "orthrus" or any(map(is_diffusion_tensor, self.tensors))

    @property
    def tied(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", False))


def load_hf(hf_dir: Path, need_tokenizer: bool) -> Hf:
    def read_json(name: str, required: bool) -> dict:
        path = hf_dir / name
        if not path.exists():
            if required:
                raise FileNotFoundError(f"{path} not found")
            return {}
        return json.loads(path.read_text())

    tok_path = hf_dir / "tokenizer.json"
    if need_tokenizer and not tok_path.exists():
        raise FileNotFoundError(f"{tok_path} not found")
    return Hf(
        dir=hf_dir,
        config=read_json("config.json", True),
        generation_config=read_json("generation_config.json", False),
        tokenizer_bytes=tok_path.read_bytes() if tok_path.exists() else None,
        tokenizer_config=read_json("tokenizer_config.json", need_tokenizer),
        tensors=read_checkpoint(hf_dir, strict=False),
    )


@dataclass
class Key:
    """An expected GGUF key: its type ("u32", "str", "arr[i32]", ...) and a check of its value."""

    type: str
    check: Callable[[Any], str | None]  # returns a description of the mismatch, or None
    optional: bool = False


def equals(expected: Any) -> Callable[[Any], str | None]:
    def check(actual: Any) -> str | None:
        return None if actual == expected else f"is {short(actual)}, expected {short(expected)}"

    return check


def equals_f32(expected: float) -> Callable[[Any], str | None]:
    def check(actual: Any) -> str | None:
        return None if np.float32(actual) == np.float32(expected) else f"is {actual!r}, expected {np.float32(expected)!r}"

    return check


def equals_list(expected: list, what: str) -> Callable[[Any], str | None]:
    def check(actual: Any) -> str | None:
        actual = list(actual)
        if len(actual) != len(expected):
            return f"has {len(actual)} {what}, expected {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            if a != e:
                return f"differs first at index {i}: {short(a)}, expected {short(e)}"
        return None

    return check


def non_empty_string(actual: Any) -> str | None:
    return None if isinstance(actual, bytes) and actual.strip() else "is empty"


def short(v: Any) -> str:
    if isinstance(v, bytes):
        try:
            v = v.decode("utf-8")
        except UnicodeDecodeError:
            pass
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def hf_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def token_id_of(hf: Hf, token: Any) -> int | None:
    """Id of a tokenizer_config token entry (a string or {"content": ...})."""
    if isinstance(token, dict):
        token = token.get("content")
    if not isinstance(token, str) or hf.tokenizer_bytes is None:
        return None
    tok = json.loads(hf.tokenizer_bytes)
    for added in tok.get("added_tokens", []):
        if added["content"] == token:
            return int(added["id"])
    return tok["model"]["vocab"].get(token)


def expected_vocab(hf: Hf, problems: Problems) -> tuple[list[bytes], list[int], list[bytes]]:
    """tokenizer.ggml.tokens, token_type and merges as the spec defines them."""
    tok = json.loads(hf.tokenizer_bytes)
    n = int(hf.config["vocab_size"])
    tokens: list[bytes | None] = [None] * n
    types = [5] * n  # unused, for the [PAD{id}] fillers
    for text, i in tok["model"]["vocab"].items():
        if i >= n:
            problems.add(f"HF: tokenizer.json token {text!r} has id {i} >= vocab_size {n}")
            continue
        tokens[i], types[i] = text.encode("utf-8"), 1
    for added in tok.get("added_tokens", []):
        i, text = int(added["id"]), added["content"]
        if i >= n:
            problems.add(f"HF: tokenizer.json added token {text!r} has id {i} >= vocab_size {n}")
            continue
        control = added.get("special", False) or (text.startswith("<|") and text.endswith("|>"))
        tokens[i], types[i] = text.encode("utf-8"), 3 if control else 4
    tokens = [t if t is not None else f"[PAD{i}]".encode() for i, t in enumerate(tokens)]
    merges = [(m if isinstance(m, str) else " ".join(m)).encode("utf-8") for m in tok["model"].get("merges", [])]
    return tokens, types, merges


def expected_keys(hf: Hf, kind: str, problems: Problems) -> dict[str, Key]:
    c = hf.config

    def cfg(name: str) -> Any:
        if name not in c:
            problems.add(f"HF: config.json has no {name}")
            return None
        return c[name]

    head_dim = c.get("head_dim") or (c["hidden_size"] // c["num_attention_heads"])
    rope = c.get("rope_parameters") or {}
    rope_theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
    # An Orthrus model or head is an `orthrus` file (the community layout of the llama.cpp
    # Orthrus fork); a plain Qwen3 model or a split base is a `qwen3` file.
    arch = "orthrus" if hf.is_orthrus and kind != "base" else "qwen3"
    keys: dict[str, Key] = {
        "general.architecture": Key("str", equals(arch.encode())),
        "general.type": Key("str", equals(b"orthrus-head" if kind == "head" else b"model")),
        "general.name": Key("str", non_empty_string),
        "general.file_type": Key("u32", lambda v: None if v in FILE_TYPES else
                                 f"is {v}, expected one of {sorted(FILE_TYPES)} ({', '.join(FILE_TYPES.values())})"),
        # required = 2 in quantized files; see check_keys
        "general.quantization_version": Key("u32", equals(2), optional=True),
        "general.alignment": Key("u32", lambda v: None if v > 0 and v & (v - 1) == 0 else "is not a power of 2",
                                 optional=True),
        f"{arch}.context_length": Key("u32", equals(cfg("max_position_embeddings"))),
        f"{arch}.embedding_length": Key("u32", equals(cfg("hidden_size"))),
        f"{arch}.feed_forward_length": Key("u32", equals(cfg("intermediate_size"))),
        f"{arch}.block_count": Key("u32", equals(cfg("num_hidden_layers"))),
        f"{arch}.attention.head_count": Key("u32", equals(cfg("num_attention_heads"))),
        f"{arch}.attention.head_count_kv": Key("u32", equals(c.get("num_key_value_heads",
                                                                   c.get("num_attention_heads")))),
        f"{arch}.attention.key_length": Key("u32", equals(head_dim)),
        f"{arch}.attention.value_length": Key("u32", equals(head_dim)),
        f"{arch}.rope.freq_base": Key("f32", equals_f32(rope_theta)),
        f"{arch}.attention.layer_norm_rms_epsilon": Key("f32", equals_f32(cfg("rms_norm_eps"))),
    }

    gen = hf.generation_config
    eos_ids = hf_ids(gen.get("eos_token_id")) or hf_ids(c.get("eos_token_id"))
    if arch == "orthrus":
        keys["orthrus.diffusion.block_size"] = Key("u32", equals(cfg("block_size")))
        keys["tokenizer.ggml.mask_token_id"] = Key("u32", equals(cfg("mask_token_id")))
        # Ours beside the fork's keys: generation_config.json's end ids.
        keys["orthrus.eos_token_ids"] = Key("arr[u32]", equals_list(eos_ids, "ids"))
        if not eos_ids:
            problems.add("HF: neither generation_config.json nor config.json has eos_token_id")

    if kind == "head":
        return keys

    tokens, types, merges = expected_vocab(hf, problems)
    bos = c.get("bos_token_id", gen.get("bos_token_id"))
    # The spec names no source for the padding id when config.json has none: a converter may
    # take it from generation_config.json or tokenizer_config.json, or leave the key out.
    pad = c.get("pad_token_id")
    pad_optional = pad is None
    if pad is None:
        pad = gen.get("pad_token_id")
    if pad is None:
        pad = token_id_of(hf, hf.tokenizer_config.get("pad_token"))
    template = hf.tokenizer_config.get("chat_template")
    if isinstance(template, list):  # named templates: the converter keeps the default one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if template is None and (hf.dir / "chat_template.jinja").exists():
        template = (hf.dir / "chat_template.jinja").read_text()
    keys.update({
        "tokenizer.ggml.model": Key("str", equals(b"gpt2")),
        "tokenizer.ggml.pre": Key("str", equals(b"qwen2")),
        "tokenizer.ggml.tokens": Key("arr[str]", equals_list(tokens, "tokens")),
        "tokenizer.ggml.token_type": Key("arr[i32]", equals_list(types, "token types")),
        "tokenizer.ggml.merges": Key("arr[str]", equals_list(merges, "merges")),
        "tokenizer.ggml.add_bos_token": Key("bool", equals(False)),
        "tokenizer.huggingface.json": Key("str", equals_bytes(hf.tokenizer_bytes, "tokenizer.json")),
    })
    if eos_ids:
        keys["tokenizer.ggml.eos_token_id"] = Key("u32", equals(eos_ids[0]))
    if bos is not None:
        keys["tokenizer.ggml.bos_token_id"] = Key("u32", equals(int(bos)))
    if pad is not None:
        keys["tokenizer.ggml.padding_token_id"] = Key("u32", equals(int(pad)), optional=pad_optional)
    if template is not None:
        keys["tokenizer.chat_template"] = Key("str", equals_bytes(template.encode("utf-8"), "the chat_template"))
    return keys


def equals_bytes(expected: bytes, what: str) -> Callable[[Any], str | None]:
    def check(actual: Any) -> str | None:
        if actual == expected:
            return None
        n = min(len(actual), len(expected))
        first = next((i for i in range(n) if actual[i] != expected[i]), n)
        return f"is not byte-identical to {what}: {len(actual)} vs {len(expected)} bytes, first difference at byte {first}"

    return check


# --------------------------------------------------------------------------- reading GGUF keys


def field_type_and_value(field) -> tuple[str, Any]:
    """("u32", 7), ("str", b"..."), ("arr[u32]", [..]), ("arr[str]", [b"..", ..]) of a reader field."""
    main = field.types[0]
    if main == VT.ARRAY:
        sub = VT(int(field.parts[3][0]))  # parts: key len, key, value type, item type, count, items...
        if sub == VT.STRING:
            return "arr[str]", [bytes(field.parts[i]) for i in field.data]
        if sub == VT.ARRAY:
            return "arr[arr]", None
        values = [field.parts[i] for i in field.data]
        flat = np.concatenate(values).tolist() if values else []
        return f"arr[{VT_NAMES.get(sub, sub.name)}]", flat
    if main == VT.STRING:
        return "str", bytes(field.parts[-1])
    value = field.parts[-1].tolist()[0]
    return VT_NAMES.get(main, main.name), value


def check_keys(reader: GGUFReader, expected: dict[str, Key], problems: Problems) -> int | None:
    """Compares all keys; returns general.file_type when it is readable."""
    actual = {name: f for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    for name in actual.keys() - expected.keys():
        problems.add(f"key {name}: unexpected (the spec has no such key for this kind of file)")
    file_type = None
    for name, key in expected.items():
        field = actual.get(name)
        if field is None:
            if not key.optional:
                problems.add(f"key {name}: missing (expected type {key.type})")
            continue
        type_name, value = field_type_and_value(field)
        if type_name != key.type:
            problems.add(f"key {name}: has type {type_name}, expected {key.type}")
            continue
        why = key.check(value)
        if why:
            problems.add(f"key {name}: {why}")
        elif name == "general.file_type":
            file_type = value
    if file_type is not None and file_type not in FLOAT_FILE_TYPES and "general.quantization_version" not in actual:
        problems.add(f"key general.quantization_version: missing, required (= 2) in a {FILE_TYPES[file_type]} file")
    return file_type


# --------------------------------------------------------------------------- tensors


def expected_tensors(hf: Hf, kind: str, problems: Problems) -> dict[str, str]:
    """GGUF tensor name -> HF tensor name, for the tensors this kind of file holds."""
    out = {}
    for hf_name in sorted(hf.tensors):
        gguf_name = hf_to_gguf_name(hf_name)
        if gguf_name is None:
            problems.add(f"HF: tensor {hf_name} has no GGUF name in the spec")
            continue
        if hf_name == "lm_head.weight" and hf.tied:
            continue  # tied: the converter writes no output.weight
        diff = is_diffusion_tensor(hf_name)
        if (kind == "head" and not diff) or (kind == "base" and diff):
            continue
        out[gguf_name] = hf_name
    if kind != "head" and not hf.tied and "output.weight" not in out:
        problems.add("HF: tie_word_embeddings is false but the checkpoint has no lm_head.weight")
    return out


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns, round to nearest even (our sources hold no NaN)."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


@dataclass
class TensorStats:
    types: Counter
    worst: dict  # quant type name -> (relative error, tensor name)


def check_tensor(t, hf_ref: TensorRef, file_type: int | None, problems: Problems, stats: TensorStats) -> None:
    name, qtype = t.name, QT(int(t.tensor_type))
    stats.types[qtype.name] += 1
    hf_shape = tuple(hf_ref.shape)
    ggml_shape = tuple(int(d) for d in t.shape)
    if ggml_shape != hf_shape[::-1]:
        problems.add(f"tensor {name}: ggml shape {list(ggml_shape)}, expected {list(hf_shape[::-1])} "
                     f"(reversed HF {hf_ref.name} {list(hf_shape)})")
        return

    if len(hf_shape) == 1:
        allowed = {QT.F32}
    elif file_type in FLOAT_FILE_TYPES:
        allowed = {FLOAT_FILE_TYPES[file_type]}
    elif file_type in QUANT_FILE_TYPES_2D:
        allowed = QUANT_FILE_TYPES_2D[file_type] | FLOAT_TYPES
    else:
        allowed = set(QUANT_BOUNDS) | FLOAT_TYPES  # file type unreadable: still check the values
    if qtype not in allowed:
        kind = "1-D tensors are always F32" if len(hf_shape) == 1 else f"file type {FILE_TYPES.get(file_type, file_type)}"
        problems.add(f"tensor {name}: type {qtype.name}, expected one of "
                     f"{sorted(a.name for a in allowed)} ({kind})")
        return
    if qtype not in FLOAT_TYPES and qtype not in QUANT_BOUNDS:
        problems.add(f"tensor {name}: type {qtype.name} has no error bound in this checker")
        return

    rows = hf_shape[0] if len(hf_shape) == 2 else 1
    cols = hf_shape[-1]
    data = t.data.reshape(rows, -1)
    step = max(1, CHUNK_ELEMS // cols)
    err2 = ref2 = 0.0
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        src = load_tensor(hf_ref, (r0, r1) if len(hf_shape) == 2 else None).reshape(r1 - r0, cols)
        got = data[r0:r1]
        if qtype == QT.F32:
            bad = ~np.equal(got.view(np.float32), src)
        elif qtype == QT.F16:
            bad = ~np.equal(got.view(np.float16), src.astype(np.float16))
        elif qtype == QT.BF16:
            bad = got.view(np.uint16) != bf16_bits(src)
        else:
            deq = gguf.quants.dequantize(np.ascontiguousarray(got), qtype).reshape(r1 - r0, cols)
            err2 += float(np.sum((deq.astype(np.float64) - src) ** 2))
            ref2 += float(np.sum(src.astype(np.float64) ** 2))
            continue
        if bad.any():
            r, col = (int(i) for i in np.argwhere(bad)[0])
            problems.add(f"tensor {name}: {int(bad.sum())} of {bad.size} values in rows {r0}..{r1} differ from "
                         f"{hf_ref.name} converted to {qtype.name}; first at HF [{r0 + r}, {col}]: "
                         f"{float(dequant_one(got, r, col, qtype))!r} vs source {float(src[r, col])!r}")
            return
    if qtype in QUANT_BOUNDS:
        rel = math.sqrt(err2 / ref2) if ref2 > 0 else math.sqrt(err2)
        if not rel <= QUANT_BOUNDS[qtype]:  # also catches NaN
            problems.add(f"tensor {name}: {qtype.name} relative RMS error {rel:.4g} > bound "
                         f"{QUANT_BOUNDS[qtype]:g} (against {hf_ref.name})")
        prev = stats.worst.get(qtype.name)
        if prev is None or rel > prev[0]:
            stats.worst[qtype.name] = (rel, name)


def dequant_one(got: np.ndarray, r: int, col: int, qtype: QT) -> float:
    if qtype == QT.BF16:
        return float((np.uint32(got.view(np.uint16)[r, col]) << np.uint32(16)).view(np.float32))
    dtype = np.float32 if qtype == QT.F32 else np.float16
    return float(got.view(dtype)[r, col])


def check_tensors(reader: GGUFReader, hf: Hf, expected: dict[str, str], file_type: int | None,
                  problems: Problems) -> TensorStats:
    stats = TensorStats(Counter(), {})
    seen = set()
    for t in reader.tensors:
        if t.name not in expected:
            problems.add(f"tensor {t.name}: unexpected (no such tensor in this kind of file)")
            continue
        seen.add(t.name)
        try:
            check_tensor(t, hf.tensors[expected[t.name]], file_type, problems, stats)
        except Exception as e:  # a malformed tensor must be reported, not crash the check
            problems.add(f"tensor {t.name}: cannot be read/compared: {type(e).__name__}: {e}")
    for name in sorted(expected.keys() - seen):
        problems.add(f"tensor {name}: missing (from HF {expected[name]})")
    if len(reader.tensors) != len(expected):
        problems.add(f"file holds {len(reader.tensors)} tensors, expected {len(expected)}")
    if file_type in MAIN_QUANT_TYPE and stats.types and MAIN_QUANT_TYPE[file_type].name not in stats.types:
        # Not an error: tiny models may have no row long enough for the main type's blocks.
        print(f"note: no tensor uses {MAIN_QUANT_TYPE[file_type].name}, the main type of "
              f"{FILE_TYPES[file_type]}", file=sys.stderr)
    return stats


# --------------------------------------------------------------------------- main


def check(gguf_path: Path, hf_dir: Path, kind: str, expect_file_type: str | None = None) -> tuple[Problems, str]:
    """Run every check; returns the problems and a summary line."""
    problems = Problems()
    # The checkpoint first: a wrong file kind is then reported without the ~12 s
    # GGUFReader takes to decode a whole model's tokenizer.
    try:
        hf = load_hf(hf_dir, need_tokenizer=kind != "head")
    except Exception as e:
        problems.add(f"HF: {hf_dir}: {type(e).__name__}: {e}")
        return problems, ""
    if kind != "model" and not hf.is_orthrus:
        problems.add(f"HF: {hf_dir} is a plain Qwen3 checkpoint; --{kind} files exist only for Orthrus checkpoints")
        return problems, ""
    try:
        reader = GGUFReader(gguf_path)
    except Exception as e:
        problems.add(f"{gguf_path}: not a readable GGUF file: {type(e).__name__}: {e}")
        return problems, ""

    keys = expected_keys(hf, kind, problems)
    file_type = check_keys(reader, keys, problems)
    if expect_file_type is not None and file_type is not None and FILE_TYPES.get(file_type) != expect_file_type:
        problems.add(f"key general.file_type: is {file_type} ({FILE_TYPES.get(file_type)}), "
                     f"expected {expect_file_type} (--file-type)")
    tensors = expected_tensors(hf, kind, problems)
    stats = check_tensors(reader, hf, tensors, file_type, problems)

    n_keys = sum(1 for k in reader.fields if not k.startswith("GGUF."))
    types = ", ".join(f"{n} {t}" for t, n in sorted(stats.types.items()))
    worst = "; ".join(f"worst {t} rel err {e:.4f} ({n})" for t, (e, n) in sorted(stats.worst.items()))
    summary = (f"OK {gguf_path} ({kind}, {FILE_TYPES.get(file_type, file_type)}) matches {hf_dir}: "
               f"{n_keys} keys, {len(reader.tensors)} tensors ({types})" + (f"; {worst}" if worst else ""))
    return problems, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check a converted GGUF against its Hugging Face checkpoint.")
    parser.add_argument("gguf_path", type=Path, metavar="GGUF_PATH")
    parser.add_argument("hf_dir", type=Path, metavar="HF_DIR")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--head", action="store_true", help="GGUF_PATH is an Orthrus head file (diffusion view only)")
    which.add_argument("--base", action="store_true", help="GGUF_PATH is a split base file (no diffusion view)")
    parser.add_argument("--file-type", choices=sorted(FILE_TYPES.values()),
                        help="also require this general.file_type")
    a = parser.parse_args(argv)
    if not a.gguf_path.is_file():
        parser.error(f"GGUF_PATH {a.gguf_path} is not a file")
    if not a.hf_dir.is_dir():
        parser.error(f"HF_DIR {a.hf_dir} is not a directory")
    kind = "head" if a.head else "base" if a.base else "model"

    problems, summary = check(a.gguf_path, a.hf_dir, kind, a.file_type)
    if problems:
        for line in problems.lines:
            print(f"MISMATCH {line}")
        print(f"FAIL {a.gguf_path}: {len(problems.lines)} mismatch(es) against {a.hf_dir}")
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
