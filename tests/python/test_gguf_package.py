"""The `gguf` PyPI package (llama.cpp's own Python reader) reads every key and
tensor of orthrus-convert's files, and plain-typed tensors hold the source values.

Needs the converter binary; scripts/test.sh runs cargo test first, which builds it.
"""
import json
import pathlib
import struct
import subprocess

import numpy as np
import pytest
from gguf import GGUFReader
from gguf.constants import GGMLQuantizationType as Q
from gguf.quants import dequantize

REPO = pathlib.Path(__file__).resolve().parents[2]
CONVERT = REPO / "target" / "debug" / "orthrus-convert"
FIXTURES = REPO / "models" / "fixtures"


def read_safetensors(d: pathlib.Path) -> dict:
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        raw = f.read_bytes()
        n = struct.unpack("<Q", raw[:8])[0]
        for name, info in json.loads(raw[8 : 8 + n]).items():
            if name == "__metadata__":
                continue
            b, e = info["data_offsets"]
            buf = raw[8 + n + b : 8 + n + e]
            if info["dtype"] == "BF16":
                a = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                a = np.frombuffer(buf, {"F16": np.float16, "F32": np.float32}[info["dtype"]]).astype(np.float32)
            out[name] = a.reshape(info["shape"])
    return out


def hf_name(gguf_name: str) -> str:
    table = {
        "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
        "attn_k_norm": "self_attn.k_norm", "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    }
    top = {"token_embd.weight": "model.embed_tokens.weight", "output.weight": "lm_head.weight",
           "output_norm.weight": "model.norm.weight"}
    if gguf_name in top:
        return top[gguf_name]
    _, layer, stem, _ = gguf_name.split(".")
    diff = stem.endswith("_diff")
    base = table[stem[: -len("_diff")] if diff else stem]
    if diff:
        base = base.replace("_proj", "_proj_diff").replace("_norm", "_norm_diff")
    return f"model.layers.{layer}.{base}.weight"


# Each type once, bf16 from both sources (exact from bf16, rounded from f16), Q4_K_M
# on the untied fixture (its output.weight is Q6_K): each case takes GGUFReader ~12 s,
# walking the 300k tokenizer strings one by one, so not every pair.
@pytest.mark.parametrize(
    "ftype, fixture",
    [
        ("f32", "tiny-untied-f16-sharded"),
        ("bf16", "tiny-tied-bf16"),
        ("bf16", "tiny-untied-f16-sharded"),
        ("q8_0", "tiny-tied-bf16"),
        ("q4_k_m", "tiny-untied-f16-sharded"),
    ],
)
def test_gguf_package_reads_every_key_and_tensor(tmp_path, fixture, ftype):
    assert CONVERT.exists(), "build the converter first (cargo test --workspace)"
    src = FIXTURES / fixture
    out = tmp_path / "m.gguf"
    subprocess.run([str(CONVERT), str(src), "-o", str(out), "--type", ftype], check=True, capture_output=True)
    reader = GGUFReader(out)
    keys = {f.name: f for f in reader.fields.values()}
    cfg = json.loads((src / "config.json").read_text())

    def scalar(k):
        f = keys[k]
        return f.parts[f.data[0]][0]

    # The community layout of the llama.cpp Orthrus fork.
    assert bytes(keys["general.architecture"].parts[-1]).decode() == "orthrus"
    assert scalar("orthrus.block_count") == cfg["num_hidden_layers"]
    assert scalar("orthrus.attention.key_length") == cfg["head_dim"]
    assert scalar("orthrus.diffusion.block_size") == cfg["block_size"]
    assert scalar("tokenizer.ggml.mask_token_id") == cfg["mask_token_id"]
    assert len(keys["tokenizer.ggml.tokens"].data) == cfg["vocab_size"]
    for f in reader.fields.values():  # every value decodes
        for i in f.data:
            f.parts[i]

    source = read_safetensors(src)
    assert {hf_name(t.name) for t in reader.tensors} == set(source)
    for t in reader.tensors:
        want = source[hf_name(t.name)]
        assert list(reversed([int(d) for d in t.shape])) == list(want.shape) or want.ndim == 1
        got = dequantize(t.data, t.tensor_type).reshape(want.shape).astype(np.float32)
        if t.tensor_type == Q.F32 or (t.tensor_type == Q.BF16 and ftype == "bf16" and fixture.endswith("bf16")):
            assert np.array_equal(got, want), t.name
        else:
            err = np.linalg.norm(got - want) / np.linalg.norm(want)
            bound = {Q.BF16: 4e-3, Q.F16: 1e-3, Q.Q8_0: 6e-3, Q.Q6_K: 2e-2}.get(t.tensor_type, 1e-1)
            assert err <= bound, f"{t.name} {t.tensor_type.name}: {err}"
