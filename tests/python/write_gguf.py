#!/usr/bin/env python3
"""Write a GGUF file from a HF checkpoint with the `gguf` package, in one of the
layouts other tools write, for the engine to load (tests/tests/engine.rs):

    write_gguf.py HF_DIR OUT.gguf --layout {orthrus,earlier,qwen3} --type {f32,q8_0} [--head]

- orthrus: the community layout, as the llama.cpp Orthrus fork's
  convert_hf_to_gguf.py writes it (its OrthrusModel class, gguf-py's key list):
  `general.architecture = orthrus`, the Qwen3 hyperparameters under `orthrus.*`,
  `orthrus.diffusion.block_size`, `tokenizer.ggml.mask_token_id`, the tokenizer as
  `tokenizer.ggml.*` arrays and `tokenizer.chat_template`; no
  `tokenizer.huggingface.json`, no list of end ids.
- earlier: this project's layout before the community one: `general.architecture =
  qwen3`, `qwen3.*` hyperparameters, `orthrus.block_size`, `orthrus.mask_token_id`,
  `orthrus.eos_token_ids` and the HF tokenizer JSON.
- qwen3: a plain Qwen3 file as llama.cpp's converter writes one (the AR view only,
  no `orthrus` keys, no HF JSON): the base users pair with a `--head`.

--head writes a head file of the layout instead (`general.type = orthrus-head`, the
`_diff` tensors only, no tokenizer), as orthrus-convert --split wrote them.

Tensors: llama.cpp's names, in the checkpoint's order; 1-D ones F32, the others F32 or
Q8_0 (gguf's numpy quantizer; F16 for rows that are no whole Q8_0 blocks), as
llama.cpp's `--outtype q8_0` does and as orthrus-convert's q8_0 recipe does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models"))
import make_fixtures as mf  # noqa: E402

GLOBAL = {"model.embed_tokens.weight": "token_embd", "model.norm.weight": "output_norm", "lm_head.weight": "output"}
LAYER = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
LAYER.update({f"{k}_diff": f"{v}_diff" for k, v in list(LAYER.items()) if k.startswith("self_attn.")})
TYPES = {"f32": (QT.F32, 0), "q8_0": (QT.Q8_0, 7)}


def gguf_name(hf_name: str) -> str:
    if hf_name in GLOBAL:
        return GLOBAL[hf_name] + ".weight"
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{int(layer)}.{LAYER[rest.removesuffix('.weight')]}.weight"


def tokenizer_keys(hf_dir: Path, cfg: dict) -> list:
    tok = json.loads((hf_dir / "tokenizer.json").read_text())
    tc = json.loads((hf_dir / "tokenizer_config.json").read_text())
    n = cfg["vocab_size"]
    tokens, types = [f"[PAD{i}]" for i in range(n)], [5] * n
    for t, i in tok["model"]["vocab"].items():
        tokens[i], types[i] = t, 1
    for a in tok["added_tokens"]:
        c = a["content"]
        tokens[a["id"]] = c
        types[a["id"]] = 3 if a["special"] or (c.startswith("<|") and c.endswith("|>")) else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    ids = {t: i for i, t in enumerate(tokens)}
    keys = [
        ("tokenizer.ggml.model", VT.STRING, "gpt2", None),
        ("tokenizer.ggml.pre", VT.STRING, "qwen2", None),
        ("tokenizer.ggml.tokens", VT.ARRAY, tokens, VT.STRING),
        ("tokenizer.ggml.token_type", VT.ARRAY, types, VT.INT32),
        ("tokenizer.ggml.merges", VT.ARRAY, merges, VT.STRING),
        # gguf-py's SpecialVocab: eos and pad from tokenizer_config.json, bos from config.json.
        ("tokenizer.ggml.eos_token_id", VT.UINT32, ids[tc["eos_token"]], None),
        ("tokenizer.ggml.padding_token_id", VT.UINT32, ids[tc["pad_token"]], None),
        ("tokenizer.ggml.bos_token_id", VT.UINT32, cfg["bos_token_id"], None),
        ("tokenizer.ggml.add_bos_token", VT.BOOL, False, None),
        ("tokenizer.chat_template", VT.STRING, tc["chat_template"], None),
    ]
    return keys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("hf_dir", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--layout", choices=["orthrus", "earlier", "qwen3"], required=True)
    p.add_argument("--type", choices=sorted(TYPES), default="f32")
    p.add_argument("--head", action="store_true", help="a head file: the diffusion view alone")
    a = p.parse_args()
    if a.head and a.layout == "qwen3":
        p.error("a qwen3 file has no diffusion view to put in a head file")
    cfg = json.loads((a.hf_dir / "config.json").read_text())
    gen_path = a.hf_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    if cfg.get("model_type") != "orthrus" and a.layout != "qwen3":
        p.error(f"{a.hf_dir} is not an Orthrus checkpoint; only --layout qwen3 fits it")
    qtype, ftype = TYPES[a.type]
    arch = "orthrus" if a.layout == "orthrus" else "qwen3"
    theta = (cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta"))

    w = gguf.GGUFWriter(a.out, arch)
    keys = [
        ("general.type", VT.STRING, "orthrus-head" if a.head else "model", None),
        ("general.name", VT.STRING, a.hf_dir.name, None),
        ("general.file_type", VT.UINT32, ftype, None),
        ("general.quantization_version", VT.UINT32, 2, None),
        (f"{arch}.context_length", VT.UINT32, cfg["max_position_embeddings"], None),
        (f"{arch}.embedding_length", VT.UINT32, cfg["hidden_size"], None),
        (f"{arch}.feed_forward_length", VT.UINT32, cfg["intermediate_size"], None),
        (f"{arch}.block_count", VT.UINT32, cfg["num_hidden_layers"], None),
        (f"{arch}.attention.head_count", VT.UINT32, cfg["num_attention_heads"], None),
        (f"{arch}.attention.head_count_kv", VT.UINT32, cfg["num_key_value_heads"], None),
        (f"{arch}.attention.key_length", VT.UINT32, cfg["head_dim"], None),
        (f"{arch}.attention.value_length", VT.UINT32, cfg["head_dim"], None),
        (f"{arch}.rope.freq_base", VT.FLOAT32, float(theta), None),
        (f"{arch}.attention.layer_norm_rms_epsilon", VT.FLOAT32, cfg["rms_norm_eps"], None),
    ]
    if not a.head:
        keys += tokenizer_keys(a.hf_dir, cfg)
    if a.layout == "orthrus":
        keys += [
            ("orthrus.diffusion.block_size", VT.UINT32, cfg["block_size"], None),
            ("tokenizer.ggml.mask_token_id", VT.UINT32, cfg["mask_token_id"], None),
        ]
    elif a.layout == "earlier":
        eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
        if not a.head:
            keys.append(("tokenizer.huggingface.json", VT.STRING, (a.hf_dir / "tokenizer.json").read_text(), None))
        keys += [
            ("orthrus.block_size", VT.UINT32, cfg["block_size"], None),
            ("orthrus.mask_token_id", VT.UINT32, cfg["mask_token_id"], None),
            ("orthrus.eos_token_ids", VT.ARRAY, eos if isinstance(eos, list) else [eos], VT.UINT32),
        ]
    for name, vtype, value, sub in keys:
        w.add_key_value(name, value, vtype, sub_type=sub)

    for hf_name, ref in mf.read_checkpoint(a.hf_dir).items():
        diff = hf_name.endswith("_diff.weight")
        if (a.layout == "qwen3" and diff) or (a.head and not diff):
            continue
        x = mf.load_tensor(ref)
        t = QT.F32 if x.ndim == 1 else qtype
        if t == QT.Q8_0 and x.shape[-1] % 32:
            t = QT.F16  # rows that are no whole Q8_0 blocks, as llama.cpp's converter does
        data = gguf.quants.quantize(x, t) if t != QT.F32 else np.ascontiguousarray(x, np.float32)
        w.add_tensor(gguf_name(hf_name), data, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
