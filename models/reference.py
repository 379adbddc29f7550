#!/usr/bin/env python3
"""A plain numpy reference of an Orthrus-Qwen3 model: the ground truth the engine is tested against.

Written from docs/design.md §3-§5 (the AR view, the diffusion view, greedy decoding),
for clarity and exactness, not speed. Weights are read from bf16/f16/f32 safetensors and
widened exactly; everything is computed in float64 (or float32 with --dtype float32).
Argmax ties go to the lowest token id (numpy's argmax).

Commands (all output is deterministic):

    reference.py logits HF_DIR --ids 1,2,3 --out X.npy
        AR logits of every prompt position, float32 [T, vocab]
        with --diffusion-last N --diffusion-out Y.npy [--diffusion-block L], then also what
        `diffusion` gives for --last N (one process and one weight load for both)
    reference.py diffusion HF_DIR --ids 1,2,3 --last 7 [--block L] --out X.npy
        after an AR prefill of --ids, the diffusion-view logits float32 [L, vocab] of the
        block [last, M, ..., M] at positions len(ids) .. len(ids)+L-1 (L: config block_size)
    reference.py generate HF_DIR --ids 1,2,3 -n 32 --mode ar|orthrus [--ignore-eos] [--block L]
        greedy decoding; prints {"tokens": [...], "steps": [{"drafts": [...], "accepted": a}, ...]}
        (steps empty for ar)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_fixtures import load_tensor, read_checkpoint  # noqa: E402  (the project's safetensors reader)

DTYPES = {"float64": np.float64, "float32": np.float32}


# --------------------------------------------------------------------------- the math


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * w over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """Rotary embedding, NEOX / rotate-half form: dimension i is paired with i + hd/2.

    x: [T, heads, hd]; positions: [T]. Pair i turns by angle p * theta^(-2i/hd).
    """
    hd = x.shape[-1]
    half = hd // 2
    inv_freq = theta ** (-(2.0 * np.arange(half, dtype=np.float64)) / hd)
    angle = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]  # [T, half]
    cos = np.cos(angle).astype(x.dtype)[:, None, :]  # broadcast over heads
    sin = np.sin(angle).astype(x.dtype)[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - np.max(s, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """softmax(q keys^T / sqrt(hd) [masked]) values, with grouped-query attention.

    q: [T, nH, hd]; keys, values: [S, nKV, hd]; mask: [T, S] bool (True = may attend) or
    None (every query sees every key). Query head h reads kv head h // (nH / nKV).
    Returns [T, nH * hd] (heads concatenated, the input of o_proj).
    """
    t, n_heads, hd = q.shape
    n_kv = keys.shape[1]
    group = n_heads // n_kv
    out = np.empty_like(q)
    for h in range(n_heads):
        kv = h // group
        scores = q[:, h, :] @ keys[:, kv, :].T / math.sqrt(hd)  # [T, S]
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        out[:, h, :] = softmax(scores) @ values[:, kv, :]
    return out.reshape(t, n_heads * hd)


def causal_mask(positions: np.ndarray, n_keys: int) -> np.ndarray:
    """[T, n_keys]: the query at position p sees the keys at positions 0..p."""
    return np.arange(n_keys)[None, :] <= np.asarray(positions)[:, None]


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def mlp(h: np.ndarray, layer: Layer) -> np.ndarray:
    return (silu(h @ layer.gate.T) * (h @ layer.up.T)) @ layer.down.T


# --------------------------------------------------------------------------- weights


@dataclass
class Config:
    vocab: int
    hidden: int
    inter: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    theta: float
    tied: bool
    block_size: int
    mask_token_id: int
    eos_ids: tuple[int, ...]

    @classmethod
    def from_hf(cls, hf_dir: Path) -> Config:
        c = json.loads((hf_dir / "config.json").read_text())
        if "rope_parameters" in c and c["rope_parameters"] and "rope_theta" in c["rope_parameters"]:
            theta = c["rope_parameters"]["rope_theta"]
        else:
            theta = c["rope_theta"]
        eos = c.get("eos_token_id")
        gen = hf_dir / "generation_config.json"
        if gen.exists():
            eos = json.loads(gen.read_text()).get("eos_token_id", eos)
        eos_ids = () if eos is None else tuple(eos) if isinstance(eos, list) else (eos,)
        heads = c["num_attention_heads"]
        return cls(
            vocab=c["vocab_size"],
            hidden=c["hidden_size"],
            inter=c["intermediate_size"],
            layers=c["num_hidden_layers"],
            heads=heads,
            kv_heads=c.get("num_key_value_heads", heads),
            head_dim=c.get("head_dim") or c["hidden_size"] // heads,
            eps=float(c["rms_norm_eps"]),
            theta=float(theta),
            tied=bool(c.get("tie_word_embeddings", False)),
            block_size=c["block_size"],
            mask_token_id=c["mask_token_id"],
            eos_ids=eos_ids,
        )


@dataclass
class AttnWeights:
    """One view's attention: the AR view (q_proj, ...) or the diffusion view (q_proj_diff, ...)."""

    q: np.ndarray  # [nH*hd, hidden]
    k: np.ndarray  # [nKV*hd, hidden]
    v: np.ndarray  # [nKV*hd, hidden]
    o: np.ndarray  # [hidden, nH*hd]
    q_norm: np.ndarray  # [hd]
    k_norm: np.ndarray  # [hd]


@dataclass
class Layer:
    input_norm: np.ndarray
    ar: AttnWeights
    diff: AttnWeights
    post_norm: np.ndarray
    gate: np.ndarray
    up: np.ndarray
    down: np.ndarray


def hf_tensor_names(cfg: Config) -> list[str]:
    """Every tensor an Orthrus checkpoint of this config holds (docs/design.md §2)."""
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    if not cfg.tied:
        names.append("lm_head.weight")
    for i in range(cfg.layers):
        pre = f"model.layers.{i}."
        names += [pre + "input_layernorm.weight", pre + "post_attention_layernorm.weight"]
        names += [pre + f"mlp.{m}_proj.weight" for m in ("gate", "up", "down")]
        for suffix in ("", "_diff"):
            names += [pre + f"self_attn.{p}_proj{suffix}.weight" for p in "qkvo"]
            names += [pre + f"self_attn.{p}_norm{suffix}.weight" for p in "qk"]
    return names


def gguf_weights(path: Path, cfg: Config) -> dict[str, np.ndarray]:
    """The tensors of an orthrus-convert GGUF, dequantized to float32, under their HF names.

    Lets a test separate the engine's arithmetic from quantization error: the reference
    then computes with exactly the weights the engine reads.
    """
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize
    from gguf_scan import scan, tensor_bytes  # models/, on the path above

    stems = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for v in ("", "_diff"):
        stems.update({f"attn_{p}{v}": f"self_attn.{p}_proj{v}" for p in "qkv"})
        stems[f"attn_output{v}"] = f"self_attn.o_proj{v}"
        stems.update({f"attn_{p}_norm{v}": f"self_attn.{p}_norm{v}" for p in "qk"})
    out = {}
    file = scan(path)
    for t in file.tensors:
        parts = t.name.split(".")
        if parts[0] == "blk":
            name = f"model.layers.{parts[1]}.{stems[parts[2]]}.weight"
        else:
            name = {"token_embd": "model.embed_tokens.weight", "output_norm": "model.norm.weight",
                    "output": "lm_head.weight"}[parts[0]]
        qtype = GGMLQuantizationType(t.qtype)
        shape = list(reversed(t.dims))
        out[name] = dequantize(tensor_bytes(file, t), qtype).reshape(shape).astype(np.float32)
    return out


def load_weights(hf_dir: Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint (single file or sharded), as exact float32."""
    refs = read_checkpoint(hf_dir)
    return {name: load_tensor(ref) for name, ref in refs.items()}


# --------------------------------------------------------------------------- the model


class Model:
    """Weights of both views plus one K/V cache per layer.

    The cache of layer i holds, for committed positions 0..n-1, K after k_norm and RoPE
    ([n, nKV, hd]) and V ([n, nKV, hd]). Only the AR view writes it.
    """

    def __init__(self, cfg: Config, weights: dict[str, np.ndarray], dtype=np.float64):
        missing = [n for n in hf_tensor_names(cfg) if n not in weights]
        if missing:
            raise ValueError(f"checkpoint lacks tensors: {missing[:5]}")
        self.cfg, self.dtype = cfg, dtype

        def w(name: str) -> np.ndarray:
            return np.asarray(weights[name], dtype=np.float32).astype(dtype)  # widening is exact

        def attn(pre: str, suffix: str) -> AttnWeights:
            return AttnWeights(*(w(f"{pre}self_attn.{p}_proj{suffix}.weight") for p in "qkvo"),
                               *(w(f"{pre}self_attn.{p}_norm{suffix}.weight") for p in "qk"))

        self.embed = w("model.embed_tokens.weight")
        self.norm = w("model.norm.weight")
        self.lm_head = self.embed if cfg.tied else w("lm_head.weight")
        self.layers = []
        for i in range(cfg.layers):
            pre = f"model.layers.{i}."
            self.layers.append(Layer(
                input_norm=w(pre + "input_layernorm.weight"),
                ar=attn(pre, ""),
                diff=attn(pre, "_diff"),
                post_norm=w(pre + "post_attention_layernorm.weight"),
                gate=w(pre + "mlp.gate_proj.weight"),
                up=w(pre + "mlp.up_proj.weight"),
                down=w(pre + "mlp.down_proj.weight"),
            ))
        self.reset()

    @classmethod
    def load(cls, hf_dir, dtype=np.float64) -> Model:
        hf_dir = Path(hf_dir)
        return cls(Config.from_hf(hf_dir), load_weights(hf_dir), dtype)

    # ------------------------------------------------------------------ cache

    def reset(self) -> None:
        empty = np.zeros((0, self.cfg.kv_heads, self.cfg.head_dim), self.dtype)
        self.k_cache = [empty] * self.cfg.layers
        self.v_cache = [empty] * self.cfg.layers

    @property
    def cache_len(self) -> int:
        return self.k_cache[0].shape[0]

    def truncate_cache(self, n: int) -> None:
        """Drop the cached positions >= n."""
        self.k_cache = [k[:n] for k in self.k_cache]
        self.v_cache = [v[:n] for v in self.v_cache]

    # ------------------------------------------------------------------ views

    def _qkv(self, w: AttnWeights, h: np.ndarray, positions: np.ndarray):
        """q [T, nH, hd] and k [T, nKV, hd] after their per-head norm and RoPE; v [T, nKV, hd]."""
        c, t = self.cfg, h.shape[0]
        q = rmsnorm((h @ w.q.T).reshape(t, c.heads, c.head_dim), w.q_norm, c.eps)
        k = rmsnorm((h @ w.k.T).reshape(t, c.kv_heads, c.head_dim), w.k_norm, c.eps)
        v = (h @ w.v.T).reshape(t, c.kv_heads, c.head_dim)
        return rope(q, positions, c.theta), rope(k, positions, c.theta), v

    def _embed(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError("expected a non-empty list of token ids")
        if ids.min() < 0 or ids.max() >= self.cfg.vocab:
            raise ValueError(f"token id out of range 0..{self.cfg.vocab - 1}: {ids.tolist()}")
        return self.embed[ids]

    def _logits(self, x: np.ndarray) -> np.ndarray:
        return rmsnorm(x, self.norm, self.cfg.eps) @ self.lm_head.T

    def ar_forward(self, ids, positions=None) -> np.ndarray:
        """AR view (section 3) on `ids` at `positions` (default: right after the cache).

        Appends their K/V to the cache; each token attends causally to the cache and to
        the earlier tokens of `ids`. Returns logits [T, vocab].
        """
        x = self._embed(ids)
        n = self.cache_len
        if positions is None:
            positions = np.arange(n, n + len(x))
        positions = np.asarray(positions, dtype=np.int64)
        if not np.array_equal(positions, np.arange(n, n + len(x))):
            raise ValueError(f"positions {positions.tolist()} must continue the cache, which holds 0..{n - 1}")
        mask = causal_mask(positions, n + len(x))
        for i, layer in enumerate(self.layers):
            h = rmsnorm(x, layer.input_norm, self.cfg.eps)
            q, k, v = self._qkv(layer.ar, h, positions)
            self.k_cache[i] = np.concatenate([self.k_cache[i], k])
            self.v_cache[i] = np.concatenate([self.v_cache[i], v])
            x = x + attention(q, self.k_cache[i], self.v_cache[i], mask) @ layer.ar.o.T
            x = x + mlp(rmsnorm(x, layer.post_norm, self.cfg.eps), layer)
        return self._logits(x)

    def diffusion_block_forward(self, block_ids, n_committed: int) -> np.ndarray:
        """Diffusion view (section 4) on any block of tokens at positions n .. n+L-1.

        Uses the `_diff` projections and norms; every block query attends, with no mask,
        to the cached K/V of positions 0..n-1 and to the block's own k/v. The cache is
        only read. Returns logits [L, vocab].
        """
        x = self._embed(block_ids)
        n = n_committed
        if not 0 <= n <= self.cache_len:
            raise ValueError(f"n_committed {n} is not within the cache (0..{self.cache_len})")
        positions = np.arange(n, n + len(x))
        for i, layer in enumerate(self.layers):
            h = rmsnorm(x, layer.input_norm, self.cfg.eps)
            q, k, v = self._qkv(layer.diff, h, positions)
            keys = np.concatenate([self.k_cache[i][:n], k])
            values = np.concatenate([self.v_cache[i][:n], v])
            x = x + attention(q, keys, values, None) @ layer.diff.o.T
            x = x + mlp(rmsnorm(x, layer.post_norm, self.cfg.eps), layer)
        return self._logits(x)

    def diffusion_forward(self, last_token: int, n_committed: int, L: int) -> np.ndarray:
        """Logits [L, vocab] of the block [x_n, M, ..., M]; index j drafts position n+j+1."""
        if L < 1:
            raise ValueError(f"block length must be at least 1, got {L}")
        block = [last_token] + [self.cfg.mask_token_id] * (L - 1)
        return self.diffusion_block_forward(block, n_committed)

    # ------------------------------------------------------------------ decoding

    def generate_greedy(self, prompt_ids, max_new: int, mode: str = "ar", eos_ids=None, block_size=None):
        """Greedy decoding (section 5). Returns (generated ids, steps).

        eos_ids: None = the checkpoint's EOS ids; () = never stop early. The first EOS
        among committed tokens is emitted and ends generation. steps (orthrus only): one
        {"drafts": [d_1..d_{L-1}], "accepted": a} per verify step.
        """
        if mode not in ("ar", "orthrus"):
            raise ValueError(f"mode must be 'ar' or 'orthrus', got {mode!r}")
        eos = set(self.cfg.eos_ids if eos_ids is None else eos_ids)
        block_size = self.cfg.block_size if block_size is None else block_size
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        self.reset()
        x = int(np.argmax(self.ar_forward(prompt_ids)[-1]))
        n = len(prompt_ids)
        out: list[int] = []
        steps: list[dict] = []
        if mode == "ar":
            while len(out) < max_new:
                out.append(x)
                if x in eos or len(out) == max_new:
                    break
                x = int(np.argmax(self.ar_forward([x])[-1]))
            return out, steps

        while len(out) < max_new:
            L = min(block_size, max_new - len(out))
            drafts = []
            if L > 1:
                drafts = [int(t) for t in np.argmax(self.diffusion_forward(x, n, L)[: L - 1], axis=-1)]
            targets = [int(t) for t in np.argmax(self.ar_forward([x] + drafts), axis=-1)]  # t_0..t_{L-1}
            a = accepted_count(drafts, targets)
            steps.append({"drafts": drafts, "accepted": a})
            committed = [x] + drafts[:a]
            self.truncate_cache(n + a + 1)
            for t in committed:
                out.append(t)
                if t in eos:
                    return out, steps
            x, n = targets[a], n + a + 1
        return out, steps


def accepted_count(drafts: list[int], targets: list[int]) -> int:
    """The number a of leading drafts d_j (j = 1..L-1) with d_j == t_{j-1}."""
    a = 0
    while a < len(drafts) and drafts[a] == targets[a]:
        a += 1
    return a


# --------------------------------------------------------------------------- CLI


def _ids(text: str) -> list[int]:
    try:
        ids = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids, got {text!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError("expected at least one token id")
    return ids


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="numpy reference of an Orthrus-Qwen3 model (docs/design.md).")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("hf_dir", type=Path, metavar="HF_DIR", help="Hugging Face checkpoint directory")
        p.add_argument("--ids", type=_ids, required=True, help="prompt token ids, comma-separated")
        p.add_argument("--dtype", choices=sorted(DTYPES), default="float64", help="compute dtype (default float64)")
        p.add_argument("--gguf-weights", type=Path, default=None, metavar="GGUF",
                       help="compute with this orthrus-convert file's dequantized weights instead of the checkpoint's")

    p = sub.add_parser("logits", help="AR logits of every prompt position -> float32 .npy [T, vocab]")
    common(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--diffusion-last", type=int, default=None, metavar="N",
                   help="then the diffusion logits of [N, M, ...] after the prompt, as `diffusion --last N`")
    p.add_argument("--diffusion-block", type=_positive, default=None, metavar="L",
                   help="their block length (default: config block_size)")
    p.add_argument("--diffusion-out", type=Path, default=None, metavar="NPY")

    p = sub.add_parser("diffusion", help="diffusion-view logits of [last, M, ...] after the prompt -> .npy [L, vocab]")
    common(p)
    p.add_argument("--last", type=int, required=True, help="the token x_n at position len(ids)")
    p.add_argument("--block", type=_positive, default=None, help="block length L (default: config block_size)")
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser("generate", help="greedy decoding; prints {\"tokens\": [...], \"steps\": [...]}")
    common(p)
    p.add_argument("-n", "--max-new", type=_positive, required=True, help="maximum number of new tokens")
    p.add_argument("--mode", choices=["ar", "orthrus"], default="ar")
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at EOS")
    p.add_argument("--block", type=_positive, default=None, help="block size (default: config block_size)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return run(a)
    except (OSError, KeyError, ValueError) as e:
        parser.error(f"{a.hf_dir}: {e}")


def run(a: argparse.Namespace) -> int:
    if a.gguf_weights is None:
        model = Model.load(a.hf_dir, DTYPES[a.dtype])
    else:
        cfg = Config.from_hf(a.hf_dir)
        model = Model(cfg, gguf_weights(a.gguf_weights, cfg), DTYPES[a.dtype])
    if a.command == "logits":
        if (a.diffusion_last is None) != (a.diffusion_out is None):
            raise ValueError("--diffusion-last and --diffusion-out go together")
        np.save(a.out, model.ar_forward(a.ids).astype(np.float32))
        if a.diffusion_last is not None:
            L = model.cfg.block_size if a.diffusion_block is None else a.diffusion_block
            np.save(a.diffusion_out, model.diffusion_forward(a.diffusion_last, len(a.ids), L).astype(np.float32))
    elif a.command == "diffusion":
        model.ar_forward(a.ids)
        L = model.cfg.block_size if a.block is None else a.block
        np.save(a.out, model.diffusion_forward(a.last, len(a.ids), L).astype(np.float32))
    else:
        tokens, steps = model.generate_greedy(a.ids, a.max_new, a.mode, () if a.ignore_eos else None, a.block)
        print(json.dumps({"tokens": tokens, "steps": steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
