"""Train the bundled tiny Orthrus model: a Qwen3-architecture base from scratch,
then its diffusion view with the base frozen. One GPU, well under 30 minutes.

    train.py DATA_DIR OUT_DIR [--base-minutes 6] [--diff-minutes 6] [--device cuda]
             [--weighting uniform|prefix] [--save-base F | --from-base F]

DATA_DIR is what prepare_data.py writes. OUT_DIR gets an HF Orthrus checkpoint
in the published layout (config.json with model_type "orthrus", block_size,
mask_token_id; generation_config.json; model.safetensors in bf16 with the
`*_proj_diff` / `*_norm_diff` tensors; the tokenizer files), and train.json
with the settings and the measured losses and draft acceptance.

The three stages:
1. Base: next-token cross-entropy on the training tokens. The architecture is
   Qwen3's exactly (docs/design.md §3): RMSNorm, q/k norms per head, GQA, NEOX RoPE,
   SwiGLU, tied embeddings.
2. Teacher data: greedy continuations written by the base itself from prompts
   cut out of the training tokens. Every generated token is the base's greedy
   prediction, which is what the diffusion view has to match for its drafts to
   be accepted.
3. Diffusion view (docs/design.md §4): per-layer q/k/v/o `_diff` projections and
   q/k `_diff` norms, initialised from the AR ones; everything else frozen.
   The objective is the block objective: every sequence is cut into blocks of
   block_size tokens (at a random offset); a block is [first token, M, ..., M]
   at its own positions, attends to the clean AR K/V of everything before it
   and bidirectionally to itself, and row j is trained to predict the token at
   j+1 (the masked positions) with cross-entropy against the base's greedy
   token. All blocks of a sequence are trained in one pass: the noisy copy of
   the sequence attends to the clean K/V through a block mask. `--weighting
   prefix` weighs a draft row by the chance that the drafts before it are
   right (see block_loss).

The reported tokens per step walks the held-out greedy sequences as decoding
does (see diffusion_metrics). `--save-base` / `--from-base` let several
diffusion runs share one base (scripts/gpu/train.sh trains two weightings
side by side and keeps the better).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


@dataclass
class Config:
    vocab: int  # embedding rows (tokenizer size rounded up; the mask token is the first unused row)
    hidden: int = 256
    layers: int = 6
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 64
    inter: int = 768
    eps: float = 1e-6
    theta: float = 10000.0
    ctx: int = 512
    block_size: int = 16


def rmsnorm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * w.float()).to(x.dtype)


def rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """NEOX RoPE on x [B, H, T, hd] at positions pos [T] (or [B, T])."""
    hd = x.shape[-1]
    inv = theta ** (-torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd)
    f = pos.float()[..., None] * inv
    emb = torch.cat([f, f], -1)
    cos, sin = emb.cos(), emb.sin()
    if cos.dim() == 3:  # per-batch positions
        cos, sin = cos[:, None], sin[:, None]
    x1, x2 = x.float().chunk(2, -1)
    rot = torch.cat([-x2, x1], -1)
    return (x.float() * cos + rot * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.q = nn.Linear(c.hidden, c.heads * c.head_dim, bias=False)
        self.k = nn.Linear(c.hidden, c.kv_heads * c.head_dim, bias=False)
        self.v = nn.Linear(c.hidden, c.kv_heads * c.head_dim, bias=False)
        self.o = nn.Linear(c.heads * c.head_dim, c.hidden, bias=False)
        self.q_norm = nn.Parameter(torch.ones(c.head_dim))
        self.k_norm = nn.Parameter(torch.ones(c.head_dim))

    def qkv(self, h: torch.Tensor, pos: torch.Tensor):
        c = self.c
        B, T, _ = h.shape
        q = rmsnorm(self.q(h).view(B, T, c.heads, c.head_dim), self.q_norm, c.eps).transpose(1, 2)
        k = rmsnorm(self.k(h).view(B, T, c.kv_heads, c.head_dim), self.k_norm, c.eps).transpose(1, 2)
        v = self.v(h).view(B, T, c.kv_heads, c.head_dim).transpose(1, 2)
        return rope(q, pos, c.theta), rope(k, pos, c.theta), v

    def out(self, a: torch.Tensor) -> torch.Tensor:
        B, H, T, D = a.shape
        return self.o(a.transpose(1, 2).reshape(B, T, H * D))


class Layer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.attn_norm = nn.Parameter(torch.ones(c.hidden))
        self.attn = Attention(c)
        self.attn_diff = Attention(c)
        self.ffn_norm = nn.Parameter(torch.ones(c.hidden))
        self.gate = nn.Linear(c.hidden, c.inter, bias=False)
        self.up = nn.Linear(c.hidden, c.inter, bias=False)
        self.down = nn.Linear(c.inter, c.hidden, bias=False)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        h = rmsnorm(x, self.ffn_norm, self.c.eps)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Model(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.vocab, c.hidden)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.layers))
        self.norm = nn.Parameter(torch.ones(c.hidden))
        nn.init.normal_(self.embed.weight, std=0.02)
        for n, p in self.named_parameters():
            if p.dim() == 2 and "embed" not in n:
                nn.init.normal_(p, std=0.02 if not n.endswith(("o.weight", "down.weight")) else 0.02 / math.sqrt(2 * c.layers))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return rmsnorm(x, self.norm, self.c.eps) @ self.embed.weight.T

    def forward(self, ids: torch.Tensor, pos0: int = 0, cache: list | None = None, keep_kv: bool = False):
        """AR view (causal). With `cache` (a list of [K, V] per layer, [B, nKV, Tmax, hd]),
        the new K/V are written at pos0.. and attention reads the cache up to them.
        With keep_kv, also returns each layer's K/V (after norm and RoPE)."""
        B, T = ids.shape
        pos = torch.arange(pos0, pos0 + T, device=ids.device)
        x = self.embed(ids)
        kvs = []
        for i, L in enumerate(self.layers):
            h = rmsnorm(x, L.attn_norm, self.c.eps)
            q, k, v = L.attn.qkv(h, pos)
            if cache is not None:
                cache[i][0][:, :, pos0:pos0 + T] = k
                cache[i][1][:, :, pos0:pos0 + T] = v
                K, V = cache[i][0][:, :, :pos0 + T], cache[i][1][:, :, :pos0 + T]
                mask = torch.ones(T, pos0 + T, dtype=torch.bool, device=ids.device).tril(pos0)
                a = F.scaled_dot_product_attention(q, K, V, attn_mask=mask, enable_gqa=True)
            else:
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            if keep_kv:
                kvs.append((k, v))
            x = L.mlp(x + L.attn.out(a))
        return self.logits(x), kvs

    def forward_diffusion(self, noisy: torch.Tensor, clean_kv: list, mask: torch.Tensor):
        """Diffusion view over the noisy copy of a sequence (same positions as the
        clean one), keys = clean AR K/V ++ the noisy block K/V, under `mask` [T, 2T]."""
        B, T = noisy.shape
        pos = torch.arange(T, device=noisy.device)
        x = self.embed(noisy)
        for L, (kc, vc) in zip(self.layers, clean_kv):
            h = rmsnorm(x, L.attn_norm, self.c.eps)
            q, k, v = L.attn_diff.qkv(h, pos)
            K, V = torch.cat([kc, k], 2), torch.cat([vc, v], 2)
            a = F.scaled_dot_product_attention(q, K, V, attn_mask=mask, enable_gqa=True)
            x = L.mlp(x + L.attn_diff.out(a))
        return self.logits(x)


def block_layout(T: int, L: int, offset: int, device):
    """Blocks [s, s+L) for s = offset, offset+L, ... (whole blocks only). Returns
    block start per position (-1 outside blocks) and the [T, 2T] attention mask:
    a block query sees clean keys before its block and noisy keys of its block;
    a position outside blocks sees only itself (noisy)."""
    start = torch.full((T,), -1, dtype=torch.long)
    for s in range(offset, T - L + 1, L):
        start[s:s + L] = s
    idx = torch.arange(T)
    in_block = start >= 0
    clean = in_block[:, None] & (idx[None, :] < start[:, None])
    noisy = (in_block[:, None] & (start[None, :] == start[:, None])) | (~in_block[:, None] & (idx[None, :] == idx[:, None]))
    return start.to(device), torch.cat([clean, noisy], 1).to(device)


def diffusion_batch(clean: torch.Tensor, L: int, offset: int, mask_id: int, first_target: int):
    """Noisy inputs, targets (-100 where no loss) and the mask for a batch of clean
    sequences. Row j of a block predicts the token at j+1 inside the block; targets
    before `first_target` (prompt tokens, not greedy) get no loss."""
    B, T = clean.shape
    start, mask = block_layout(T, L, offset, clean.device)
    idx = torch.arange(T, device=clean.device)
    in_block = start >= 0
    noisy = torch.where(in_block & (idx != start), torch.full_like(clean, mask_id), clean)
    tgt = torch.full_like(clean, -100)
    ok = in_block & (idx - start < L - 1) & (idx + 1 >= first_target)
    tgt[:, :-1] = torch.where(ok[:-1], clean[:, 1:], tgt[:, :-1])
    return noisy, tgt, mask


def lr_at(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def batches(tokens: np.ndarray, B: int, T: int, rng: np.random.Generator, device):
    while True:
        starts = rng.integers(0, len(tokens) - T - 1, B)
        x = np.stack([tokens[s:s + T + 1] for s in starts]).astype(np.int64)
        yield torch.from_numpy(x).to(device)


def mixed(a):
    """bf16 autocast on a GPU; plain float32 on the CPU."""
    return torch.autocast(a.device.split(":")[0], dtype=torch.bfloat16, enabled=a.device != "cpu")


def optimize(params, peak_lr: float, weight_decay: float, warmup: int, probe: int, steps: int, minutes: float,
             loss_of, name: str, log, every: int = 0, evaluate=None):
    """AdamW with warmup and cosine decay for `steps` steps, or (steps == 0) for
    `minutes`: the schedule's length is then estimated from the pace of the
    first `probe` steps. `loss_of(step)` computes one batch's loss; with
    `evaluate`, it is called as evaluate(step) every `every` steps and at the
    end. Returns the step count and the last loss."""
    fused = all(p.is_cuda for p in params)
    opt = torch.optim.AdamW(params, lr=peak_lr, betas=(0.9, 0.95), weight_decay=weight_decay, fused=fused)
    t0, step, total, loss = time.time(), 0, steps or 10**9, float("nan")

    def more() -> bool:
        return step < steps if steps else time.time() - t0 <= minutes * 60

    while more():
        if not steps and step == probe:
            total = int(probe * minutes * 60 / (time.time() - t0))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, peak_lr, warmup)
        batch_loss = loss_of(step)
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss = batch_loss.item()
        if step % 100 == 0:
            log(f"{name} step {step} loss {loss:.3f} ({time.time() - t0:.0f} s)")
        step += 1
        if evaluate and every and step % every == 0:
            evaluate(step)
    if evaluate and not (every and step % every == 0):
        evaluate(step)
    return step, loss


def train_base(m: Model, tokens: np.ndarray, held: np.ndarray, minutes: float, a, log) -> None:
    """Next-token training; the held-out loss is measured every `--eval-every`
    steps and the weights with the lowest one are kept (early stopping: a base
    that has begun to memorise its data writes recitations from training
    prompts, which is not what it writes from new ones)."""
    c = m.c
    params = [p for n, p in m.named_parameters() if "attn_diff" not in n]
    data = batches(tokens, a.batch, c.ctx, np.random.default_rng(0), a.device)
    hx = next(batches(held, 32, c.ctx, np.random.default_rng(1), a.device))
    best = {"loss": float("inf")}
    curve = []

    def loss_of(step: int) -> torch.Tensor:
        x = next(data)
        with mixed(a):
            logits, _ = m(x[:, :-1])
        return F.cross_entropy(logits.float().reshape(-1, c.vocab), x[:, 1:].reshape(-1))

    @torch.no_grad()
    def evaluate(step: int) -> None:
        m.eval()
        with mixed(a):
            hl, _ = m(hx[:, :-1])
        m.train()
        loss = F.cross_entropy(hl.float().reshape(-1, c.vocab), hx[:, 1:].reshape(-1)).item()
        curve.append((step, round(loss, 4)))
        log(f"base step {step}: held-out loss {loss:.3f}")
        if loss < best["loss"]:
            best.update(loss=loss, step=step, state={k: v.detach().clone() for k, v in m.state_dict().items()})

    step, loss = optimize(params, a.base_lr, 0.1, 100, 50, a.base_steps, minutes, loss_of, "base", log,
                          a.eval_every, evaluate)
    m.load_state_dict(best["state"])
    a.stats["base_heldout_loss"] = best["loss"]
    a.stats["base_kept_step"] = best["step"]
    a.stats["base_heldout_curve"] = curve
    a.stats["base_steps"] = step
    a.stats["base_train_loss"] = loss
    log(f"base: {step} steps, kept step {best['step']} (held-out loss {best['loss']:.3f})")


@torch.no_grad()
def greedy_data(m: Model, tokens: np.ndarray, n: int, prompt: int, a) -> torch.Tensor:
    """n sequences of ctx tokens: `prompt` tokens cut from the data, then the base's greedy continuation."""
    c = m.c
    rng = np.random.default_rng(2)
    out = []
    for b0 in range(0, n, a.gen_batch):
        B = min(a.gen_batch, n - b0)
        starts = rng.integers(0, len(tokens) - prompt, B)
        seq = torch.from_numpy(np.stack([tokens[s:s + prompt] for s in starts]).astype(np.int64)).to(a.device)
        cache = [[torch.zeros(B, c.kv_heads, c.ctx, c.head_dim, device=a.device, dtype=torch.bfloat16 if a.device != "cpu" else torch.float32) for _ in range(2)] for _ in range(c.layers)]
        ids = torch.empty(B, c.ctx, dtype=torch.long, device=a.device)
        ids[:, :prompt] = seq
        with mixed(a):
            logits, _ = m(seq, 0, cache)
            nxt = logits[:, -1].float().argmax(-1)
            for t in range(prompt, c.ctx):
                ids[:, t] = nxt
                if t + 1 == c.ctx:
                    break
                logits, _ = m(nxt[:, None], t, cache)
                nxt = logits[:, -1].float().argmax(-1)
        out.append(ids.cpu())
    return torch.cat(out)


def diffusion_metrics(m: Model, seqs: torch.Tensor, a) -> dict:
    """Held-out loss, per-row draft accuracy, and tokens per step as decoding
    gets them. The block at every start s after the prompt is scored (16
    passes, one per block offset): lead(s) = leading drafts equal to the greedy
    tokens. Decoding then walks s -> s + lead(s) + 1, so tokens per step is the
    length-weighted harmonic mean of lead + 1, not its mean over a fixed grid
    of blocks (which overstates it wherever acceptance varies: hard stretches
    take a step per token, easy ones are crossed in a few steps)."""
    c = m.c
    L, P, T = c.block_size, a.prompt, seqs.shape[1]
    x = seqs.to(a.device)
    lead = torch.full(x.shape, -1, dtype=torch.long, device=a.device)
    right_rows = torch.zeros(L - 1, device=a.device)
    blocks, losses = 0, []
    with torch.no_grad(), mixed(a):
        _, kv = m(x, keep_kv=True)
        for offset in range(L):
            noisy, tgt, mask = diffusion_batch(x, L, offset, a.mask_id, P)
            logits = m.forward_diffusion(noisy, kv, mask).float()
            losses.append(F.cross_entropy(logits.reshape(-1, c.vocab), tgt.reshape(-1), ignore_index=-100).item())
            right = logits.argmax(-1) == tgt
            for s in range(offset, T - L + 1, L):
                if s >= P:  # blocks whose targets are all greedy tokens
                    r = right[:, s:s + L - 1].int()
                    lead[:, s] = r.cumprod(1).sum(1)
                    right_rows += r.sum(0)
                    blocks += r.shape[0]
    lead = lead.cpu()
    committed = steps = 0
    for row in lead:
        s = P
        while s <= T - L:
            committed += int(row[s]) + 1
            steps += 1
            s += int(row[s]) + 1
    grid = lead[:, P:T - L + 1]
    return {
        "loss": sum(losses) / len(losses),
        "tokens_per_step": committed / max(1, steps),
        "tokens_per_step_fixed_grid": float((grid[grid >= 0] + 1).float().mean()),
        "row_accuracy": [round(v, 3) for v in (right_rows / max(1, blocks)).tolist()],
    }


def block_loss(logits: torch.Tensor, tgt: torch.Tensor, L: int, offset: int, weighting: str) -> torch.Tensor:
    """Cross-entropy on the masked positions. `uniform`: every draft row counts
    alike. `prefix`: row j of a block counts by the (detached) probability that
    rows 0..j-1 of the same block are all right, floored at 0.02: a draft only
    matters when every draft before it is accepted, so this is (up to the
    floor) the gradient of the expected accepted length."""
    B, T, V = logits.shape
    ce = F.cross_entropy(logits.float().reshape(-1, V), tgt.reshape(-1), ignore_index=-100, reduction="none").view(B, T)
    valid = (tgt != -100).float()
    if weighting == "uniform":
        return (ce * valid).sum() / valid.sum()
    starts = torch.arange(offset, T - L + 1, L, device=logits.device)
    idx = starts[:, None] + torch.arange(L - 1, device=logits.device)[None, :]
    ce_b, v_b = ce[:, idx], valid[:, idx]
    p = torch.exp(-ce_b.detach()) * v_b
    w = torch.cumprod(torch.cat([torch.ones_like(p[..., :1]), p[..., :-1]], -1), -1)
    w = w.clamp(min=0.02) * v_b
    return (w * ce_b).sum() / w.sum().clamp(min=1.0)


def train_diffusion(m: Model, seqs: torch.Tensor, held: torch.Tensor, minutes: float, a, log) -> None:
    c = m.c
    for L in m.layers:
        L.attn_diff.load_state_dict(L.attn.state_dict())
    for n, p in m.named_parameters():
        p.requires_grad_("attn_diff" in n)
    params = [p for p in m.parameters() if p.requires_grad]
    at_init = diffusion_metrics(m, held, a)
    log(f"diffusion at init: held-out {at_init}")
    a.stats["diffusion_init"] = at_init
    rng = np.random.default_rng(3)
    curve = []

    def evaluate(step: int) -> None:
        r = diffusion_metrics(m, held, a)
        curve.append((step, round(r["tokens_per_step"], 3)))
        log(f"diffusion step {step}: held-out tokens per step {r['tokens_per_step']:.3f}")

    def loss_of(step: int) -> torch.Tensor:
        x = seqs[torch.from_numpy(rng.integers(0, len(seqs), a.diff_batch))].to(a.device)
        offset = int(rng.integers(0, c.block_size))
        noisy, tgt, mask = diffusion_batch(x, c.block_size, offset, a.mask_id, a.prompt)
        with mixed(a):
            with torch.no_grad():
                _, kv = m(x, keep_kv=True)
            logits = m.forward_diffusion(noisy, kv, mask)
        return block_loss(logits, tgt, c.block_size, offset, a.weighting)

    step, _ = optimize(params, a.diff_lr, 0.0, 50, 30, a.diff_steps, minutes, loss_of, "diffusion", log,
                       a.eval_every * 4, evaluate)
    a.stats["diffusion_curve"] = curve
    final = diffusion_metrics(m, held, a)
    log(f"diffusion ({a.weighting} weighting): {step} steps, held-out {final}")
    a.stats["diffusion_steps"] = step
    a.stats["diffusion_weighting"] = a.weighting
    a.stats["diffusion_final"] = final


def export(m: Model, data: Path, out: Path, a) -> None:
    c = m.c
    out.mkdir(parents=True, exist_ok=True)
    t = {}
    bf = lambda p: p.detach().to(torch.bfloat16).cpu().contiguous()  # noqa: E731
    t["model.embed_tokens.weight"] = bf(m.embed.weight)
    for i, L in enumerate(m.layers):
        pre = f"model.layers.{i}."
        t[pre + "input_layernorm.weight"] = bf(L.attn_norm)
        for view, suffix in ((L.attn, ""), (L.attn_diff, "_diff")):
            for name in ("q", "k", "v", "o"):
                t[pre + f"self_attn.{name}_proj{suffix}.weight"] = bf(getattr(view, name).weight)
            t[pre + f"self_attn.q_norm{suffix}.weight"] = bf(view.q_norm)
            t[pre + f"self_attn.k_norm{suffix}.weight"] = bf(view.k_norm)
        t[pre + "post_attention_layernorm.weight"] = bf(L.ffn_norm)
        t[pre + "mlp.gate_proj.weight"] = bf(L.gate.weight)
        t[pre + "mlp.up_proj.weight"] = bf(L.up.weight)
        t[pre + "mlp.down_proj.weight"] = bf(L.down.weight)
    t["model.norm.weight"] = bf(m.norm)
    save_file(t, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["OrthrusLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_orthrus.OrthrusConfig", "AutoModelForCausalLM": "modeling_orthrus.OrthrusForCausalLM"},
        "block_size": c.block_size,
        "bos_token_id": a.eot,
        "dtype": "bfloat16",
        "eos_token_id": a.eos,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "hidden_size": c.hidden,
        "initializer_range": 0.02,
        "intermediate_size": c.inter,
        "mask_token_id": a.mask_id,
        "max_position_embeddings": a.max_positions,
        "model_type": "orthrus",
        "num_attention_heads": c.heads,
        "num_hidden_layers": c.layers,
        "num_key_value_heads": c.kv_heads,
        "pad_token_id": a.eot,
        "rms_norm_eps": c.eps,
        "rope_parameters": {"rope_theta": c.theta, "rope_type": "default"},
        "tie_word_embeddings": True,
        "use_cache": True,
        "vocab_size": c.vocab,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {"bos_token_id": a.eot, "eos_token_id": [a.eos, a.eot], "pad_token_id": a.eot, "do_sample": False}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(data / f, out / f)


def check_export(m: Model, out: Path, held: torch.Tensor, a, log) -> None:
    """The exported checkpoint, run by the float64 numpy reference of the spec
    (models/reference.py), gives the logits of this training code (in float32,
    with the bf16-rounded weights): both views. A mismatch means the training
    code is not the architecture the engine runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import reference  # noqa: PLC0415

    ref = reference.Model.load(out)
    c = m.c
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.to(torch.bfloat16).float())
        m32 = m.float().cpu()
        ids = held[0, : a.prompt + 8].tolist()
        want = ref.ar_forward(ids)
        got, kv = m32(torch.tensor([ids]), keep_kv=True)
        ar_err = float(np.abs(got[0].numpy() - want).max() / np.abs(want).max())
        L = c.block_size
        block = [ids[-1]] + [a.mask_id] * (L - 1)
        ref.truncate_cache(len(ids) - 1)
        want_d = ref.diffusion_forward(ids[-1], len(ids) - 1, L)
        # The same block through the training-time path: clean K/V of the prefix, a noisy block after it.
        _, mask = block_layout(len(ids) - 1 + L, L, len(ids) - 1, "cpu")
        seq = torch.tensor([ids[:-1] + block])
        _, kv = m32(seq, keep_kv=True)
        got_d = m32.forward_diffusion(seq, kv, mask)[0, len(ids) - 1:]
        diff_err = float(np.abs(got_d.numpy() - want_d).max() / np.abs(want_d).max())
    a.stats["export_check"] = {"ar_max_rel_err": ar_err, "diffusion_max_rel_err": diff_err}
    log(f"export check against reference.py: AR {ar_err:.2e}, diffusion {diff_err:.2e}")
    if max(ar_err, diff_err) > 1e-3:
        raise SystemExit("the exported model does not match the reference implementation")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--base-minutes", type=float, default=6.0)
    ap.add_argument("--diff-minutes", type=float, default=6.0)
    ap.add_argument("--base-steps", type=int, default=0, help="fixed step count instead of a time budget")
    ap.add_argument("--diff-steps", type=int, default=0)
    ap.add_argument("--base-lr", type=float, default=3e-3)
    ap.add_argument("--diff-lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=64, help="base training batch (sequences of --ctx tokens)")
    ap.add_argument("--diff-batch", type=int, default=64, help="diffusion training batch (greedy sequences)")
    ap.add_argument("--eval-every", type=int, default=250,
                    help="held-out loss of the base every this many steps (the diffusion view's every 4x as many)")
    ap.add_argument("--sequences", type=int, default=4096, help="greedy sequences for the diffusion view")
    ap.add_argument("--gen-batch", type=int, default=1024)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--inter", type=int, default=768)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--weighting", choices=["uniform", "prefix"], default="uniform",
                    help="how the diffusion loss weighs draft rows (see block_loss)")
    ap.add_argument("--save-base", type=Path, help="after the base and the greedy data, save both here")
    ap.add_argument("--from-base", type=Path,
                    help="skip the base and the greedy data: load them from a --save-base file of the same settings")
    a = ap.parse_args()
    torch.manual_seed(0)
    tok = json.loads((a.data / "tokenizer.json").read_text())
    n_tok = len(tok["model"]["vocab"]) + len(tok["added_tokens"])
    ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
    a.eot, a.eos = ids["<|endoftext|>"], ids["<|im_end|>"]
    a.mask_id = n_tok  # the first embedding row past the tokenizer, as in the published models
    a.max_positions = 4096
    vocab = (n_tok + 1 + 63) // 64 * 64
    c = Config(vocab=vocab, hidden=a.hidden, layers=a.layers, inter=a.inter, ctx=a.ctx, block_size=a.block_size)
    a.stats = {}
    t_start = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    train = np.fromfile(a.data / "train.bin", dtype=np.uint16)
    held = np.fromfile(a.data / "heldout.bin", dtype=np.uint16)
    m = Model(c).to(a.device)
    n_params = sum(p.numel() for n, p in m.named_parameters() if "attn_diff" not in n)
    log(f"{n_params / 1e6:.2f}M base parameters, {len(train)} training tokens, device {a.device}")
    if a.from_base:
        saved = torch.load(a.from_base, map_location=a.device)
        m.load_state_dict(saved["model"])
        seqs, held_seqs = saved["seqs"], saved["held_seqs"]
        a.stats.update(saved["stats"])
        log(f"base and greedy data from {a.from_base}")
    else:
        train_base(m, train, held, a.base_minutes, a, log)
    m.eval()
    if not a.from_base:
        seqs = greedy_data(m, train, a.sequences, a.prompt, a)
        held_seqs = greedy_data(m, held, max(16, a.sequences // 32), a.prompt, a)
    log(f"greedy data: {tuple(seqs.shape)} train, {tuple(held_seqs.shape)} held-out")
    if a.save_base:
        tmp = a.save_base.with_name(a.save_base.name + ".tmp")
        torch.save({"model": m.state_dict(), "seqs": seqs, "held_seqs": held_seqs, "stats": dict(a.stats)}, tmp)
        tmp.replace(a.save_base)  # whole or absent: another run may be waiting for it
        log(f"saved the base and the greedy data to {a.save_base}")
    train_diffusion(m, seqs, held_seqs[:64], a.diff_minutes, a, log)
    a.stats["seconds"] = time.time() - t_start
    export(m, a.data, a.out, a)
    check_export(m, a.out, held_seqs, a, log)
    (a.out / "train.json").write_text(json.dumps({"config": asdict(c), **a.stats}, indent=2) + "\n")
    log(f"wrote {a.out}")


if __name__ == "__main__":
    main()
