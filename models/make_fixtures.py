#!/usr/bin/env python3
"""Write random-weight Orthrus-Qwen3 (or plain Qwen3) checkpoints in Hugging Face layout.

The output is what `save_pretrained` of an Orthrus model writes: `config.json`,
`generation_config.json`, `model.safetensors` or shards `model-0000i-of-0000n.safetensors`
with `model.safetensors.index.json`, and the Qwen3 tokenizer files. Only numpy is
needed: safetensors files are written (and read back, see `read_checkpoint`) by hand.

Commands:

    make_fixtures.py committed
        the small checkpoints kept in the repository, in models/fixtures/:
        tiny-tied-bf16/           one file, tied embeddings, bf16, block_size 8,
                                  mask_token_id 151669 (an unused row past the
                                  tokenizer), `rope_parameters`, eos int
        tiny-untied-f16-sharded/  two shards + index, lm_head, f16, block_size 16,
                                  mask_token_id 151662 (an ordinary token), top-level
                                  `rope_theta`, eos list [151645, 151643]
    make_fixtures.py custom OUT_DIR --hidden H --heads N ... (see --help)
    make_fixtures.py preset {qwen3-0.6b,qwen3-1.7b,qwen3-8b} OUT_DIR
        real sizes (4.1 GB / 18 GB with the diffusion view), sharded at 4 GB like HF
    make_fixtures.py published {Orthrus-Qwen3-1.7B,Orthrus-Qwen3-4B,Orthrus-Qwen3-8B} OUT_DIR
                     [--layers N] [--narrow]
        the configuration of a published Orthrus model (chiennv/Orthrus-Qwen3-*): its
        config.json key for key (model_type orthrus, OrthrusLM, block_size 32,
        mask_token_id 151669, bfloat16; tied embeddings but on the 8B), sharded bf16
        with the index, random weights; --layers keeps fewer layers, --narrow makes
        the widths small (head_dim 128 and the query/KV head ratio kept) so tests
        stay quick; config.json then says so and nothing else changes

Values are deterministic (byte-identical on every run and machine): each tensor is
generated in fixed row chunks, chunk c of tensor NAME from
`np.random.SeedSequence([seed, crc32(NAME), c])`. They are chosen so that a random
model behaves like a model, not like noise or a constant:

- linear weights ~ N(0, 1/in_features), so every projection keeps activations O(1);
  the two that write into the residual stream (o_proj, down_proj) get 3x that std,
  so the stream is dominated by what the layers compute rather than by the input
  embedding: with gain 1 a tied model mostly predicts a token close to its input,
  and greedy decoding falls into 1-3 token cycles;
- norm weights ~ 1 + N(0, 0.1);
- the output projection (lm_head, or the embedding when tied) has std 4/sqrt(hidden),
  giving logits of std ~4 over 151936 tokens: top-2 gaps are usually ~1, and a
  near-tie (1e-3) is rare;
- untied input embeddings ~ N(0, 1);
- the diffusion view (`*_diff`) is the AR view plus a small perturbation (10% of the
  weight std for projections, N(0, 0.02) for norms), the way an Orthrus head starts
  from the AR weights, so drafts are correlated with the AR predictions.

Generation runs on all cores with a bounded window of chunks in flight, and each chunk
goes straight to the file: memory stays at a few chunks whatever the model size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import struct
import sys
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_TOKENIZER_DIR = MODELS_DIR / "qwen3-tokenizer"
FIXTURES_DIR = MODELS_DIR / "fixtures"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

QWEN3_VOCAB = 151936  # embedding rows of every Qwen3 checkpoint
TOKENIZER_IDS = 151669  # ids the tokenizer defines; rows past it are unused
BOS_ID = 151643  # <|endoftext|>
EOS_ID = 151645  # <|im_end|>
PAD_ID = 151643
UNUSED_ROW_MASK_ID = 151669
ROPE_THETA = 1_000_000
MAX_POSITIONS = 40960
SHARD_BYTES = 4 * 10**9

LOGIT_STD = 4.0
RESIDUAL_GAIN = 3.0  # o_proj and down_proj: see the module docstring
NORM_STD = 0.1
DIFF_REL_STD = 0.1
DIFF_NORM_STD = 0.02

CHUNK_ELEMS = 1 << 22  # part of the value definition: changing it changes every file

# dtype name -> (safetensors dtype, config torch dtype, bytes per element)
DTYPES = {
    "bf16": ("BF16", "bfloat16", 2),
    "f16": ("F16", "float16", 2),
    "f32": ("F32", "float32", 4),
}
SAFETENSORS_ITEMSIZE = {"BF16": 2, "F16": 2, "F32": 4}


@dataclass(frozen=True)
class ModelSpec:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    inter: int
    layers: int
    vocab: int = QWEN3_VOCAB
    dtype: str = "bf16"
    tied: bool = True
    orthrus: bool = True
    block_size: int = 16
    mask_token_id: int = UNUSED_ROW_MASK_ID
    rope_form: str = "new"  # "new": rope_parameters + dtype; "old": rope_theta + torch_dtype
    eos_list: bool = False
    seed: int = 0


@dataclass(frozen=True)
class TensorPlan:
    """One tensor: its HF name and shape, and how its values are drawn."""

    name: str
    shape: tuple[int, ...]
    kind: str  # "matrix" | "norm"
    std: float
    base: TensorPlan | None = None  # diffusion tensors: the AR tensor they perturb (std: of the perturbation)


# --------------------------------------------------------------------------- layout


def tensor_plans(spec: ModelSpec) -> list[TensorPlan]:
    """All tensors in the order HF writes them (embeddings, layers, norm, lm_head)."""
    h, q_out, kv_out = spec.hidden, spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim
    embed_std = LOGIT_STD / math.sqrt(h) if spec.tied else 1.0
    plans = [TensorPlan("model.embed_tokens.weight", (spec.vocab, h), "matrix", embed_std)]

    def linear(name: str, out_f: int, in_f: int, gain: float = 1.0) -> TensorPlan:
        return TensorPlan(name, (out_f, in_f), "matrix", gain / math.sqrt(in_f))

    def norm(name: str, n: int) -> TensorPlan:
        return TensorPlan(name, (n,), "norm", NORM_STD)

    def diff_of(p: TensorPlan, name: str) -> TensorPlan:
        std = p.std * DIFF_REL_STD if p.kind == "matrix" else DIFF_NORM_STD
        return TensorPlan(name, p.shape, p.kind, std, base=p)

    for i in range(spec.layers):
        pre = f"model.layers.{i}."
        attn = {
            "q_proj": linear(pre + "self_attn.q_proj.weight", q_out, h),
            "k_proj": linear(pre + "self_attn.k_proj.weight", kv_out, h),
            "v_proj": linear(pre + "self_attn.v_proj.weight", kv_out, h),
            "o_proj": linear(pre + "self_attn.o_proj.weight", h, q_out, RESIDUAL_GAIN),
            "q_norm": norm(pre + "self_attn.q_norm.weight", spec.head_dim),
            "k_norm": norm(pre + "self_attn.k_norm.weight", spec.head_dim),
        }
        plans.append(norm(pre + "input_layernorm.weight", h))
        plans.extend(attn.values())
        if spec.orthrus:
            plans.extend(
                diff_of(p, f"{pre}self_attn.{key}_diff.weight") for key, p in attn.items()
            )
        plans.append(norm(pre + "post_attention_layernorm.weight", h))
        plans.append(linear(pre + "mlp.gate_proj.weight", spec.inter, h))
        plans.append(linear(pre + "mlp.up_proj.weight", spec.inter, h))
        plans.append(linear(pre + "mlp.down_proj.weight", h, spec.inter, RESIDUAL_GAIN))
    plans.append(norm("model.norm.weight", h))
    if not spec.tied:
        plans.append(TensorPlan("lm_head.weight", (spec.vocab, h), "matrix", LOGIT_STD / math.sqrt(h)))
    return plans


def tensor_nbytes(spec: ModelSpec, plan: TensorPlan) -> int:
    return math.prod(plan.shape) * DTYPES[spec.dtype][2]


def shard_by_count(sizes: list[int], n_shards: int) -> list[int]:
    """Shard index per tensor, in order: shard k ends once (k+1)/n of the bytes are written,
    or earlier when every later shard needs one of the remaining tensors."""
    if not 1 <= n_shards <= len(sizes):
        raise ValueError(f"cannot split {len(sizes)} tensors into {n_shards} non-empty shards")
    total = sum(sizes)
    shard, done, used, out = 0, 0, 0, []
    for i, size in enumerate(sizes):
        later = n_shards - 1 - shard
        if used and later and (done * n_shards >= total * (shard + 1) or len(sizes) - i <= later):
            shard, used = shard + 1, 0
        out.append(shard)
        done += size
        used += 1
    return out


def shard_by_size(sizes: list[int], max_bytes: int) -> list[int]:
    """Shard index per tensor, in order, like HF's max_shard_size (a tensor is never split)."""
    shard, used, out = 0, 0, []
    for size in sizes:
        if used and used + size > max_bytes:
            shard, used = shard + 1, 0
        out.append(shard)
        used += size
    return out


# --------------------------------------------------------------------------- values


def _rows_per_chunk(shape: tuple[int, ...]) -> int:
    cols = shape[-1]
    return max(1, CHUNK_ELEMS // cols)


def _normal(seed: int, name: str, chunk: int, n: int) -> np.ndarray:
    seq = np.random.SeedSequence([seed, zlib.crc32(name.encode()), chunk])
    return np.random.Generator(np.random.PCG64(seq)).standard_normal(n, dtype=np.float32)


def _chunk_values(seed: int, plan: TensorPlan, chunk: int, n: int) -> np.ndarray:
    """float32 values of one chunk (n elements) of a tensor."""
    x = _normal(seed, plan.name, chunk, n)
    x *= np.float32(plan.std)
    if plan.base is not None:
        x += _chunk_values(seed, plan.base, chunk, n)
    elif plan.kind == "norm":
        x += np.float32(1.0)
    return x


def to_dtype_bytes(x: np.ndarray, dtype: str) -> np.ndarray:
    """Convert float32 values to the storage dtype (bf16/f16 round to nearest even). May reuse x."""
    if dtype == "f32":
        return x
    if dtype == "f16":
        return x.astype(np.float16)
    u = x.view(np.uint32)
    u += np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))
    u >>= np.uint32(16)
    return u.astype(np.uint16)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def _tensor_chunks(spec: ModelSpec, plan: TensorPlan) -> list[tuple[int, int]]:
    """(chunk index, element count) of every chunk of a tensor, in file order."""
    rows = plan.shape[0] if len(plan.shape) > 1 else 1
    cols = math.prod(plan.shape) // rows
    step = _rows_per_chunk(plan.shape) if len(plan.shape) > 1 else 1
    return [(c, (min(rows, r + step) - r) * cols) for c, r in enumerate(range(0, rows, step))]


def _write_tensor_data(f, spec: ModelSpec, plan: TensorPlan, pool: ThreadPoolExecutor, window: int) -> None:
    def make(c_n: tuple[int, int]) -> bytes:
        c, n = c_n
        return to_dtype_bytes(_chunk_values(spec.seed, plan, c, n), spec.dtype).tobytes()

    pending: deque = deque()
    for job in _tensor_chunks(spec, plan):
        pending.append(pool.submit(make, job))
        if len(pending) >= window:
            f.write(pending.popleft().result())
    while pending:
        f.write(pending.popleft().result())


# --------------------------------------------------------------------------- writing


def _safetensors_header(spec: ModelSpec, plans: list[TensorPlan]) -> bytes:
    st_dtype = DTYPES[spec.dtype][0]
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for p in plans:
        size = tensor_nbytes(spec, p)
        header[p.name] = {"dtype": st_dtype, "shape": list(p.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write_safetensors(path: Path, spec: ModelSpec, plans: list[TensorPlan], pool, window: int) -> None:
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(_safetensors_header(spec, plans))
        for p in plans:
            _write_tensor_data(f, spec, p, pool, window)
    os.replace(tmp, path)


def hf_config(spec: ModelSpec) -> dict:
    dtype_name = DTYPES[spec.dtype][1]
    cfg = {
        "architectures": ["OrthrusLM"] if spec.orthrus else ["Qwen3ForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "head_dim": spec.head_dim,
        "hidden_act": "silu",
        "hidden_size": spec.hidden,
        "initializer_range": 0.02,
        "intermediate_size": spec.inter,
        "max_position_embeddings": MAX_POSITIONS,
        "max_window_layers": spec.layers,
        "model_type": "orthrus" if spec.orthrus else "qwen3",
        "num_attention_heads": spec.heads,
        "num_hidden_layers": spec.layers,
        "num_key_value_heads": spec.kv_heads,
        "rms_norm_eps": 1e-06,
        "sliding_window": None,
        "tie_word_embeddings": spec.tied,
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": spec.vocab,
    }
    if spec.rope_form == "new":
        cfg.update(
            dtype=dtype_name,
            layer_types=["full_attention"] * spec.layers,
            pad_token_id=PAD_ID,
            rope_parameters={"rope_theta": float(ROPE_THETA), "rope_type": "default"},
            transformers_version="4.57.1",
        )
    else:
        cfg.update(rope_scaling=None, rope_theta=ROPE_THETA, torch_dtype=dtype_name, transformers_version="4.51.0")
    if spec.orthrus:
        cfg.update(
            auto_map={
                "AutoConfig": "configuration_orthrus.OrthrusConfig",
                "AutoModelForCausalLM": "modeling_orthrus.OrthrusForCausalLM",
            },
            block_size=spec.block_size,
            mask_token_id=spec.mask_token_id,
        )
    return cfg


def generation_config(spec: ModelSpec) -> dict:
    return {
        "bos_token_id": BOS_ID,
        "do_sample": True,
        "eos_token_id": [EOS_ID, BOS_ID] if spec.eos_list else EOS_ID,
        "pad_token_id": PAD_ID,
        "temperature": 0.6,
        "top_k": 20,
        "top_p": 0.95,
        "transformers_version": "4.57.1" if spec.rope_form == "new" else "4.51.0",
    }


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _clear_generated(out: Path) -> None:
    """Remove what an earlier run may have left (e.g. shards of another count); keep the rest."""
    for p in out.iterdir():
        generated = (p.name.startswith("model") and p.name.endswith((".safetensors", ".partial"))) or p.name in (
            "model.safetensors.index.json",
            "config.json",
            "generation_config.json",
            *TOKENIZER_FILES,
        )
        if generated and (p.is_file() or p.is_symlink()):
            p.unlink()


def install_tokenizer(out: Path, tokenizer_dir: Path, mode: str) -> None:
    """mode: "relative" (symlink relative to out), "absolute" (symlink) or "copy"."""
    for name in TOKENIZER_FILES:
        src = tokenizer_dir / name
        dst = out / name
        if mode == "copy":
            shutil.copyfile(src, dst)
        elif mode == "relative":
            dst.symlink_to(os.path.relpath(src.resolve(), out.resolve()))
        else:
            dst.symlink_to(src.resolve())


def write_checkpoint(
    out: Path,
    spec: ModelSpec,
    *,
    n_shards: int | None = None,
    max_shard_bytes: int | None = None,
    tokenizer_dir: Path = DEFAULT_TOKENIZER_DIR,
    tokenizer_mode: str = "absolute",
    log=None,
) -> list[Path]:
    """Write a whole checkpoint into `out`; returns the safetensors files written."""
    out.mkdir(parents=True, exist_ok=True)
    _clear_generated(out)
    plans = tensor_plans(spec)
    sizes = [tensor_nbytes(spec, p) for p in plans]
    if max_shard_bytes is not None:
        shard_of = shard_by_size(sizes, max_shard_bytes)
    else:
        shard_of = shard_by_count(sizes, n_shards or 1)
    n = shard_of[-1] + 1
    names = ["model.safetensors"] if n == 1 else [f"model-{k + 1:05d}-of-{n:05d}.safetensors" for k in range(n)]

    workers = os.cpu_count() or 1
    written = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for k, fname in enumerate(names):
            shard_plans = [p for p, s in zip(plans, shard_of) if s == k]
            if log:
                size = sum(sz for sz, s in zip(sizes, shard_of) if s == k)
                log(f"writing {out / fname} ({len(shard_plans)} tensors, {size / 1e9:.2f} GB)")
            write_safetensors(out / fname, spec, shard_plans, pool, window=workers + 1)
            written.append(out / fname)
    if n > 1:
        index = {
            "metadata": {"total_size": sum(sizes)},
            "weight_map": {p.name: names[s] for p, s in sorted(zip(plans, shard_of), key=lambda t: t[0].name)},
        }
        _write_json(out / "model.safetensors.index.json", index)
    _write_json(out / "config.json", hf_config(spec))
    _write_json(out / "generation_config.json", generation_config(spec))
    install_tokenizer(out, tokenizer_dir, tokenizer_mode)
    return written


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor of a checkpoint lies: `load_tensor` reads it."""

    name: str
    path: Path
    dtype: str  # safetensors dtype: BF16 | F16 | F32
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    nbytes: int


def read_safetensors_header(path: Path) -> dict[str, TensorRef]:
    """Parse and validate one safetensors file's header."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: too short for a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8 or n > 100 << 20:
            raise ValueError(f"{path}: header length {n} does not fit the file ({size} bytes)")
        header = json.loads(f.read(n))
    data_start = 8 + n
    refs, spans = {}, []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        if dtype not in SAFETENSORS_ITEMSIZE:
            raise ValueError(f"{path}: tensor {name} has dtype {dtype}; expected one of BF16, F16, F32")
        nbytes = math.prod(shape) * SAFETENSORS_ITEMSIZE[dtype]
        if end - begin != nbytes:
            raise ValueError(f"{path}: tensor {name} {dtype}{list(shape)} spans {end - begin} bytes, expected {nbytes}")
        if data_start + end > size:
            raise ValueError(f"{path}: tensor {name} ends past the end of the file")
        refs[name] = TensorRef(name, path, dtype, shape, data_start + begin, nbytes)
        spans.append((begin, end, name))
    spans.sort()
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise ValueError(f"{path}: tensors {a} and {b} overlap")
    return refs


def read_checkpoint(hf_dir: Path, strict: bool = True) -> dict[str, TensorRef]:
    """All tensors of a HF checkpoint (single file or sharded with an index).

    With strict, the index must list exactly the tensors of its shards and its
    total_size must be their byte sum (true of `save_pretrained` output).
    """
    hf_dir = Path(hf_dir)
    index_path = hf_dir / "model.safetensors.index.json"
    if not index_path.exists():
        single = hf_dir / "model.safetensors"
        if not single.exists():
            raise FileNotFoundError(f"{hf_dir}: neither model.safetensors nor model.safetensors.index.json")
        return read_safetensors_header(single)
    index = json.loads(index_path.read_text())
    weight_map: dict[str, str] = index["weight_map"]
    refs: dict[str, TensorRef] = {}
    for fname in sorted(set(weight_map.values())):
        for name, ref in read_safetensors_header(hf_dir / fname).items():
            if name in refs:
                raise ValueError(f"{hf_dir}: tensor {name} is in both {refs[name].path.name} and {fname}")
            if weight_map.get(name) != fname:
                if strict or name in weight_map:
                    raise ValueError(f"{hf_dir}: index maps {name} to {weight_map.get(name)}, but it is in {fname}")
            refs[name] = ref
    missing = sorted(set(weight_map) - set(refs))
    if missing:
        raise ValueError(f"{hf_dir}: index lists tensors no shard holds: {missing[:5]}")
    total = sum(r.nbytes for r in refs.values())
    if strict and index.get("metadata", {}).get("total_size") != total:
        raise ValueError(f"{index_path}: total_size {index.get('metadata', {}).get('total_size')} != {total}")
    return refs


def load_tensor(ref: TensorRef, rows: tuple[int, int] | None = None) -> np.ndarray:
    """The tensor as float32 (exact for BF16/F16/F32), in HF row-major shape.

    rows=(begin, end) reads only those rows (first dimension), to bound memory on big tensors.
    """
    item = SAFETENSORS_ITEMSIZE[ref.dtype]
    shape = ref.shape
    offset, nbytes = ref.offset, ref.nbytes
    if rows is not None:
        row_bytes = math.prod(shape[1:]) * item
        offset += rows[0] * row_bytes
        nbytes = (rows[1] - rows[0]) * row_bytes
        shape = (rows[1] - rows[0], *shape[1:])
    if nbytes == 0:
        return np.zeros(shape, np.float32)
    raw = np.memmap(ref.path, dtype=np.uint8, mode="r", offset=offset, shape=(nbytes,))
    if ref.dtype == "F32":
        x = raw.view(np.float32).astype(np.float32)
    elif ref.dtype == "F16":
        x = raw.view(np.float16).astype(np.float32)
    else:
        x = bf16_bits_to_f32(raw.view(np.uint16))
    return x.reshape(shape)


# --------------------------------------------------------------------------- CLI

COMMITTED = {
    "tiny-tied-bf16": (
        ModelSpec(hidden=32, heads=4, kv_heads=2, head_dim=16, inter=64, layers=2, dtype="bf16", tied=True,
                  block_size=8, mask_token_id=UNUSED_ROW_MASK_ID, rope_form="new", eos_list=False, seed=1),
        1,
    ),
    "tiny-untied-f16-sharded": (
        ModelSpec(hidden=16, heads=2, kv_heads=1, head_dim=16, inter=48, layers=3, dtype="f16", tied=False,
                  block_size=16, mask_token_id=151662, rope_form="old", eos_list=True, seed=2),
        2,
    ),
}

PRESETS = {
    "qwen3-0.6b": ModelSpec(hidden=1024, heads=16, kv_heads=8, head_dim=128, inter=3072, layers=28, tied=True,
                            block_size=16, eos_list=True),
    "qwen3-1.7b": ModelSpec(hidden=2048, heads=16, kv_heads=8, head_dim=128, inter=6144, layers=28, tied=True,
                            block_size=16, eos_list=True),
    "qwen3-8b": ModelSpec(hidden=4096, heads=32, kv_heads=8, head_dim=128, inter=12288, layers=36, tied=False,
                          block_size=16, eos_list=True),
}


# config.json of the published Orthrus models (chiennv/Orthrus-Qwen3-1.7B/4B/8B): the
# Qwen3 base model's configuration plus Orthrus's fields; every key, in the file's order.
def _published_config(hidden: int, inter: int, layers: int, heads: int, tied: bool) -> dict:
    return {
        "architectures": ["OrthrusLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "auto_map": {"AutoModelForCausalLM": "modeling_orthrus.OrthrusLM"},
        "block_size": 32,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": inter,
        "mask_token_id": UNUSED_ROW_MASK_ID,
        "max_position_embeddings": MAX_POSITIONS,
        "max_window_layers": layers,
        "model_type": "orthrus",
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": ROPE_THETA,
        "sliding_window": None,
        "tie_word_embeddings": tied,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.51.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": QWEN3_VOCAB,
    }


PUBLISHED = {
    "Orthrus-Qwen3-1.7B": _published_config(2048, 6144, 28, 16, tied=True),
    "Orthrus-Qwen3-4B": _published_config(2560, 9728, 36, 32, tied=True),
    "Orthrus-Qwen3-8B": _published_config(4096, 12288, 36, 32, tied=False),
}
# --narrow: 256 wide (whole 256-value rows, as the K quants need), head_dim 128, the
# published query/KV head ratio, the published intermediate/hidden ratio rounded to 256.
NARROW_HIDDEN = 256


def published_checkpoint(name: str, layers: int | None, narrow: bool) -> tuple[dict, ModelSpec]:
    """The config.json to write and the spec of the tensors it implies."""
    cfg = dict(PUBLISHED[name])
    if layers is not None:
        cfg["num_hidden_layers"] = cfg["max_window_layers"] = layers
    if narrow:
        ratio = cfg["num_attention_heads"] // cfg["num_key_value_heads"]
        inter = round(cfg["intermediate_size"] / cfg["hidden_size"] * NARROW_HIDDEN / 256) * 256
        cfg.update(hidden_size=NARROW_HIDDEN, intermediate_size=inter, num_key_value_heads=1,
                   num_attention_heads=ratio)
    spec = ModelSpec(hidden=cfg["hidden_size"], heads=cfg["num_attention_heads"], kv_heads=cfg["num_key_value_heads"],
                     head_dim=cfg["head_dim"], inter=cfg["intermediate_size"], layers=cfg["num_hidden_layers"],
                     dtype="bf16", tied=cfg["tie_word_embeddings"], block_size=cfg["block_size"],
                     mask_token_id=cfg["mask_token_id"], rope_form="old", eos_list=True, seed=3)
    return cfg, spec


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _non_negative(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {v}")
    return v


def _add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=_non_negative, default=0, help="random seed (default 0)")
    p.add_argument("--plain-qwen3", action="store_true", help="a plain Qwen3 checkpoint: no *_diff tensors, "
                   "model_type qwen3, no block_size / mask_token_id")
    p.add_argument("--tokenizer-dir", type=Path, default=DEFAULT_TOKENIZER_DIR,
                   help=f"where tokenizer.json and tokenizer_config.json are (default {DEFAULT_TOKENIZER_DIR})")
    p.add_argument("--copy-tokenizer", action="store_true",
                   help="copy the tokenizer files instead of linking them (absolute symlinks)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write random-weight Orthrus-Qwen3 / Qwen3 checkpoints in Hugging Face layout.")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("committed", help=f"(re)write the committed fixtures in {FIXTURES_DIR}")

    c = sub.add_parser("custom", help="a checkpoint of any shape")
    c.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    c.add_argument("--hidden", type=_positive, required=True, help="hidden_size")
    c.add_argument("--heads", type=_positive, required=True, help="num_attention_heads")
    c.add_argument("--kv-heads", type=_positive, required=True, help="num_key_value_heads (divides --heads)")
    c.add_argument("--head-dim", type=_positive, required=True, help="head_dim (even: RoPE rotates pairs)")
    c.add_argument("--inter", type=_positive, required=True, help="intermediate_size")
    c.add_argument("--layers", type=_positive, required=True, help="num_hidden_layers")
    c.add_argument("--vocab", type=_positive, default=QWEN3_VOCAB, help=f"vocab_size (default {QWEN3_VOCAB})")
    c.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="weight dtype (default bf16)")
    c.add_argument("--block-size", type=_positive, default=None, help="Orthrus block_size (default 16)")
    c.add_argument("--mask-token-id", type=_non_negative, default=None,
                   help=f"Orthrus mask_token_id (default {UNUSED_ROW_MASK_ID}, or the last row of a smaller vocab)")
    tie = c.add_mutually_exclusive_group()
    tie.add_argument("--tied", dest="tied", action="store_true", default=True,
                     help="tie lm_head to the embeddings (default)")
    tie.add_argument("--untied", dest="tied", action="store_false", help="write a separate lm_head.weight")
    c.add_argument("--shards", type=_positive, default=1, help="number of safetensors shards (default 1)")
    c.add_argument("--rope-form", choices=["new", "old"], default="new",
                   help="new: rope_parameters.rope_theta + dtype; old: top-level rope_theta + torch_dtype")
    c.add_argument("--eos-list", action="store_true",
                   help="generation_config eos_token_id as the list [151645, 151643] instead of an int")
    _add_output_options(c)

    pub = sub.add_parser("published", help="a published Orthrus model's configuration, random weights")
    pub.add_argument("name", choices=sorted(PUBLISHED))
    pub.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    pub.add_argument("--layers", type=_positive, default=None, help="keep this many layers")
    pub.add_argument("--narrow", action="store_true", help="256 wide, 2-4 heads of 128 (see the module doc)")
    pub.add_argument("--shards", type=_positive, default=2, help="safetensors shards (default 2)")
    pub.add_argument("--tokenizer-dir", type=Path, default=DEFAULT_TOKENIZER_DIR,
                     help=f"where tokenizer.json and tokenizer_config.json are (default {DEFAULT_TOKENIZER_DIR})")

    p = sub.add_parser("preset", help="a real-size random checkpoint (sharded at 4 GB)")
    p.add_argument("preset", choices=sorted(PRESETS))
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    _add_output_options(p)
    return parser


def _check_tokenizer_dir(parser: argparse.ArgumentParser, d: Path) -> None:
    for name in TOKENIZER_FILES:
        if not (d / name).is_file():
            parser.error(f"tokenizer file {d / name} not found (set --tokenizer-dir)")


def _check_out_dir(parser: argparse.ArgumentParser, d: Path) -> None:
    if d.exists() and not d.is_dir():
        parser.error(f"OUT_DIR {d} exists and is not a directory")


def _spec_from_custom(parser: argparse.ArgumentParser, a: argparse.Namespace) -> ModelSpec:
    if a.heads % a.kv_heads:
        parser.error(f"--heads {a.heads} is not a multiple of --kv-heads {a.kv_heads} (grouped-query attention)")
    if a.head_dim % 2:
        parser.error(f"--head-dim {a.head_dim} must be even (RoPE rotates pairs of dimensions)")
    if a.plain_qwen3 and (a.block_size is not None or a.mask_token_id is not None):
        parser.error("--block-size and --mask-token-id describe the Orthrus diffusion view; "
                     "a --plain-qwen3 checkpoint has neither")
    block_size = 16 if a.block_size is None else a.block_size
    if block_size < 2:
        parser.error("--block-size must be at least 2 (the last token plus at least one mask)")
    mask = a.mask_token_id
    if mask is None:
        mask = UNUSED_ROW_MASK_ID if a.vocab > UNUSED_ROW_MASK_ID else a.vocab - 1
    if mask >= a.vocab:
        parser.error(f"--mask-token-id {mask} is not a row of the embedding (--vocab {a.vocab})")
    n_tensors = len(tensor_plans(ModelSpec(hidden=1, heads=1, kv_heads=1, head_dim=2, inter=1, layers=a.layers,
                                           vocab=1, tied=a.tied, orthrus=not a.plain_qwen3)))
    if a.shards > n_tensors:
        parser.error(f"--shards {a.shards} is more than the {n_tensors} tensors of this model")
    if a.vocab < TOKENIZER_IDS:
        print(f"warning: --vocab {a.vocab} is smaller than the tokenizer ({TOKENIZER_IDS} ids); "
              "such a checkpoint is only good for tests that never tokenize", file=sys.stderr)
    return ModelSpec(hidden=a.hidden, heads=a.heads, kv_heads=a.kv_heads, head_dim=a.head_dim, inter=a.inter,
                     layers=a.layers, vocab=a.vocab, dtype=a.dtype, tied=a.tied, orthrus=not a.plain_qwen3,
                     block_size=block_size, mask_token_id=mask, rope_form=a.rope_form, eos_list=a.eos_list,
                     seed=a.seed)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr)  # noqa: E731

    if a.command == "committed":
        _check_tokenizer_dir(parser, DEFAULT_TOKENIZER_DIR)
        for name, (spec, n_shards) in COMMITTED.items():
            out = FIXTURES_DIR / name
            if out.exists():
                shutil.rmtree(out)
            write_checkpoint(out, spec, n_shards=n_shards, tokenizer_mode="relative", log=log)
        return 0

    _check_tokenizer_dir(parser, a.tokenizer_dir)
    _check_out_dir(parser, a.out_dir)
    if a.command == "published":
        cfg, spec = published_checkpoint(a.name, a.layers, a.narrow)
        write_checkpoint(a.out_dir, spec, n_shards=a.shards, tokenizer_dir=a.tokenizer_dir, tokenizer_mode="copy",
                         log=log)
        (a.out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        return 0
    mode = "copy" if a.copy_tokenizer else "absolute"
    if a.command == "custom":
        spec = _spec_from_custom(parser, a)
        write_checkpoint(a.out_dir, spec, n_shards=a.shards, tokenizer_dir=a.tokenizer_dir, tokenizer_mode=mode,
                         log=log)
    else:
        spec = replace(PRESETS[a.preset], orthrus=not a.plain_qwen3, seed=a.seed)
        write_checkpoint(a.out_dir, spec, max_shard_bytes=SHARD_BYTES, tokenizer_dir=a.tokenizer_dir,
                         tokenizer_mode=mode, log=log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
