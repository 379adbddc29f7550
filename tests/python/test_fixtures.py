"""Tests of models/make_fixtures.py (the random HF checkpoints) and of check_gguf.py.

check_gguf.py is exercised on GGUF files written here by a small reference converter
built on gguf.GGUFWriter, following the converter spec that check_gguf.py documents:
the correct files must pass, and each kind of corruption must be reported.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CONVERT = REPO / "target" / "debug" / "orthrus-convert"
MAKE_FIXTURES = REPO / "models" / "make_fixtures.py"
CHECK_GGUF = Path(__file__).resolve().parent / "check_gguf.py"
FIXTURES = REPO / "models" / "fixtures"
TOKENIZER_DIR = REPO / "models" / "qwen3-tokenizer"
sys.path.insert(0, str(REPO / "models"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_fixtures as mf  # noqa: E402

COMMITTED = ["tiny-tied-bf16", "tiny-untied-f16-sharded"]
SAFETENSORS_DTYPE = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}


def run_make_fixtures(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(MAKE_FIXTURES), *args], capture_output=True, text=True)


def dir_contents(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


# --------------------------------------------------------------------------- make_fixtures


@pytest.mark.parametrize(
    "extra",
    [
        ["--dtype", "bf16", "--shards", "2", "--untied", "--eos-list"],
        ["--dtype", "f32", "--plain-qwen3", "--rope-form", "old"],
    ],
    ids=["orthrus-bf16-sharded", "plain-f32"],
)
def test_custom_is_deterministic(tmp_path: Path, extra: list[str]) -> None:
    shape = ["--hidden", "64", "--heads", "4", "--kv-heads", "2", "--head-dim", "16", "--inter", "96",
             "--layers", "2", "--vocab", "512", "--copy-tokenizer", "--seed", "7"]
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        r = run_make_fixtures("custom", str(out), *shape, *extra)
        assert r.returncode == 0, r.stderr
        outs.append(dir_contents(out))
    assert outs[0] == outs[1]
    assert not any((tmp_path / "a" / n).is_symlink() for n in mf.TOKENIZER_FILES)
    refs = mf.read_checkpoint(tmp_path / "a", strict=True)
    assert refs["model.embed_tokens.weight"].shape == (512, 64)


def test_committed_fixtures_are_what_the_generator_writes(tmp_path: Path) -> None:
    for name in COMMITTED:
        spec, n_shards = mf.COMMITTED[name]
        out = tmp_path / name
        mf.write_checkpoint(out, spec, n_shards=n_shards, tokenizer_mode="copy")
        committed = FIXTURES / name
        for p in sorted(out.iterdir()):
            if p.name in mf.TOKENIZER_FILES:
                continue
            assert (committed / p.name).read_bytes() == p.read_bytes(), (
                f"{committed / p.name} is stale: run `python3 models/make_fixtures.py committed`")
        assert sorted(x.name for x in committed.iterdir()) == sorted(x.name for x in out.iterdir())


def test_committed_fixtures_are_small() -> None:
    total = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file() and not p.is_symlink())
    assert total < 22 * 10**6, f"committed fixtures take {total / 1e6:.1f} MB"


def expected_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a checkpoint with this config.json (written from the spec, not the generator)."""
    h, v, inter = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    hd, nh, nkv = cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, h)
    views = [""] + (["_diff"] if cfg["model_type"] == "orthrus" else [])
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
        shapes[p + "mlp.gate_proj.weight"] = (inter, h)
        shapes[p + "mlp.up_proj.weight"] = (inter, h)
        shapes[p + "mlp.down_proj.weight"] = (h, inter)
        for s in views:
            shapes[p + f"self_attn.q_proj{s}.weight"] = (nh * hd, h)
            shapes[p + f"self_attn.k_proj{s}.weight"] = (nkv * hd, h)
            shapes[p + f"self_attn.v_proj{s}.weight"] = (nkv * hd, h)
            shapes[p + f"self_attn.o_proj{s}.weight"] = (h, nh * hd)
            shapes[p + f"self_attn.q_norm{s}.weight"] = (hd,)
            shapes[p + f"self_attn.k_norm{s}.weight"] = (hd,)
    return shapes


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_fixture_matches_its_config(name: str) -> None:
    d = FIXTURES / name
    cfg = json.loads((d / "config.json").read_text())
    gen = json.loads((d / "generation_config.json").read_text())
    refs = mf.read_checkpoint(d, strict=True)

    shapes = expected_shapes(cfg)
    assert {n: r.shape for n, r in refs.items()} == shapes
    dtype = SAFETENSORS_DTYPE[cfg.get("dtype") or cfg["torch_dtype"]]
    assert {r.dtype for r in refs.values()} == {dtype}

    assert cfg["model_type"] == "orthrus" and cfg["architectures"] == ["OrthrusLM"]
    assert set(cfg["auto_map"]) == {"AutoConfig", "AutoModelForCausalLM"}
    assert cfg["vocab_size"] == 151936
    assert 0 <= cfg["mask_token_id"] < cfg["vocab_size"] and cfg["block_size"] >= 2
    theta = cfg["rope_parameters"]["rope_theta"] if "rope_parameters" in cfg else cfg["rope_theta"]
    assert theta == 1e6 and cfg["rms_norm_eps"] == 1e-6 and cfg["max_position_embeddings"] == 40960
    assert cfg["eos_token_id"] == 151645 and cfg["bos_token_id"] == 151643 and cfg["attention_bias"] is False
    assert gen["do_sample"] is True and (gen["temperature"], gen["top_k"], gen["top_p"]) == (0.6, 20, 0.95)

    if name == "tiny-tied-bf16":
        assert (cfg["tie_word_embeddings"], cfg["block_size"], cfg["mask_token_id"]) == (True, 8, 151669)
        assert cfg["head_dim"] * cfg["num_attention_heads"] != cfg["hidden_size"], "tests the explicit head_dim"
        assert "rope_parameters" in cfg and gen["eos_token_id"] == 151645
        assert (d / "model.safetensors").exists() and not (d / "model.safetensors.index.json").exists()
    else:
        assert (cfg["tie_word_embeddings"], cfg["block_size"], cfg["mask_token_id"]) == (False, 16, 151662)
        assert "rope_theta" in cfg and "rope_parameters" not in cfg and gen["eos_token_id"] == [151645, 151643]
        index = json.loads((d / "model.safetensors.index.json").read_text())
        files = sorted(set(index["weight_map"].values()))
        assert files == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
        assert sorted(index["weight_map"]) == sorted(shapes)
        assert index["metadata"]["total_size"] == sum(r.nbytes for r in refs.values())
        assert sorted(p.name for p in d.glob("*.safetensors")) == files

    for f in mf.TOKENIZER_FILES:
        link = d / f
        assert link.is_symlink() and not Path(link.readlink()).is_absolute()
        assert link.resolve() == (TOKENIZER_DIR / f).resolve()


@pytest.mark.parametrize("name", COMMITTED)
def test_safetensors_headers_follow_the_format(name: str) -> None:
    for path in sorted((FIXTURES / name).glob("*.safetensors")):
        raw = path.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        assert n % 8 == 0
        header = json.loads(raw[8:8 + n])
        assert header.pop("__metadata__") == {"format": "pt"}
        spans = sorted(tuple(t["data_offsets"]) for t in header.values())
        assert spans[0][0] == 0 and spans[-1][1] == len(raw) - 8 - n
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_values_are_what_the_docs_say() -> None:
    refs = mf.read_checkpoint(FIXTURES / "tiny-tied-bf16")
    w = {n: mf.load_tensor(r) for n, r in refs.items()}
    q = w["model.layers.0.self_attn.q_proj.weight"]
    assert abs(q.std() * math.sqrt(32) - 1) < 0.1
    norm = w["model.layers.1.input_layernorm.weight"]
    assert abs(norm.mean() - 1) < 0.1
    diff = w["model.layers.0.self_attn.q_proj_diff.weight"]
    rel = np.linalg.norm(diff - q) / np.linalg.norm(q)
    assert 0.05 < rel < 0.2, "the diffusion view is a small perturbation of the AR view"
    assert not np.array_equal(w["model.layers.0.self_attn.q_proj.weight"], w["model.layers.1.self_attn.q_proj.weight"])


def test_bf16_rounds_to_nearest_even() -> None:
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-7, -2.5, 1 + 2**-8 + 2**-20], np.float32)
    bits = mf.to_dtype_bytes(x.copy(), "bf16")
    got = mf.bf16_bits_to_f32(bits)
    np.testing.assert_array_equal(got, np.array([1.0, 1.0, 1 + 2**-6, 1 + 2**-7, -2.5, 1 + 2**-7], np.float32))


def ar_logits(d: Path, ids: np.ndarray) -> np.ndarray:
    """Logits of every position of one sequence: a plain numpy Qwen3 forward (docs/design.md §3)."""
    cfg = json.loads((d / "config.json").read_text())
    w = {n: mf.load_tensor(r) for n, r in mf.read_checkpoint(d).items()}
    nh, nkv, hd, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["rms_norm_eps"]
    theta = (cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta"))
    T = len(ids)

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    ang = np.arange(T)[:, None] * theta ** (-np.arange(0, hd, 2) / hd)[None]
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]

    def rope(x):
        a, b = x[..., : hd // 2], x[..., hd // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)

    x = w["model.embed_tokens.weight"][ids]
    causal = np.triu(np.ones((T, T), bool), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope(rms((h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd), w[p + "self_attn.q_norm.weight"]))
        k = rope(rms((h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd), w[p + "self_attn.k_norm.weight"]))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
        k, v = np.repeat(k, nh // nkv, 1), np.repeat(v, nh // nkv, 1)
        s = np.where(causal[None], -np.inf, np.einsum("thd,shd->hts", q, k) / math.sqrt(hd))
        s = np.exp(s - s.max(-1, keepdims=True))
        a = np.einsum("hts,shd->thd", s / s.sum(-1, keepdims=True), v).reshape(T, nh * hd)
        x = x + a @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    lm = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return rms(x, w["model.norm.weight"]) @ lm.T


@pytest.mark.parametrize("name", COMMITTED)
def test_random_model_logits_are_not_degenerate(name: str) -> None:
    ids = np.random.default_rng(0).integers(0, 151669, 48)
    logits = ar_logits(FIXTURES / name, ids)
    top2 = np.sort(logits, -1)[:, -2:]
    gaps = top2[:, 1] - top2[:, 0]
    assert np.median(gaps) > 0.2, "top-2 gaps are tiny: greedy decoding would hinge on rounding"
    assert 2 < logits.std() < 8
    argmax = logits.argmax(-1)
    assert len(set(argmax.tolist())) > 30, "the model predicts (nearly) the same token everywhere"
    assert (argmax == ids).mean() < 0.1, "the model mostly predicts its input token"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--heads", "3", "--kv-heads", "2"], "not a multiple of --kv-heads"),
        (["--head-dim", "15"], "must be even"),
        (["--plain-qwen3", "--block-size", "8"], "plain-qwen3"),
        (["--mask-token-id", "600", "--vocab", "512"], "not a row of the embedding"),
        (["--block-size", "1"], "at least 2"),
        (["--shards", "1000"], "more than the"),
        (["--hidden", "0"], "positive integer"),
        (["--tied", "--untied"], "not allowed with"),
        (["--dtype", "q8"], "invalid choice"),
    ],
)
def test_custom_rejects_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    base = {"--hidden": "32", "--heads": "4", "--kv-heads": "2", "--head-dim": "16", "--inter": "64",
            "--layers": "1", "--vocab": "512"}
    for k in args:
        base.pop(k, None)
    flat = [x for kv in base.items() for x in kv]
    r = run_make_fixtures("custom", str(tmp_path / "out"), *flat, *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- check_gguf

gguf = pytest.importorskip("gguf")
import check_gguf  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import GGUFValueType as VT  # noqa: E402

FTYPE = {QT.F32: 0, QT.F16: 1, QT.BF16: 32, QT.Q8_0: 7, QT.Q4_0: 2}


def reference_gguf(hf_dir: Path, qtype: QT, kind: str = "model") -> tuple[list, dict]:
    """Keys [(name, vtype, value, subtype)] and tensors {name: (array, raw_dtype)} the spec asks for."""
    cfg = json.loads((hf_dir / "config.json").read_text())
    gen = json.loads((hf_dir / "generation_config.json").read_text())
    orthrus = cfg["model_type"] == "orthrus"
    quantized = qtype not in (QT.F32, QT.F16, QT.BF16)
    theta = (cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta"))
    arch = "orthrus" if orthrus and kind != "base" else "qwen3"
    keys = [
        ("general.architecture", VT.STRING, arch, None),
        ("general.type", VT.STRING, "orthrus-head" if kind == "head" else "model", None),
        ("general.name", VT.STRING, hf_dir.name, None),
        ("general.file_type", VT.UINT32, FTYPE[qtype], None),
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
    if quantized:
        keys.append(("general.quantization_version", VT.UINT32, 2, None))
    eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
    eos = eos if isinstance(eos, list) else [eos]
    if arch == "orthrus":
        keys += [
            ("orthrus.diffusion.block_size", VT.UINT32, cfg["block_size"], None),
            ("tokenizer.ggml.mask_token_id", VT.UINT32, cfg["mask_token_id"], None),
            ("orthrus.eos_token_ids", VT.ARRAY, eos, VT.UINT32),
        ]
    if kind != "head":
        raw = (hf_dir / "tokenizer.json").read_bytes()
        tok = json.loads(raw)
        n = cfg["vocab_size"]
        tokens, types = [f"[PAD{i}]" for i in range(n)], [5] * n
        for t, i in tok["model"]["vocab"].items():
            tokens[i], types[i] = t, 1
        for a in tok["added_tokens"]:
            c = a["content"]
            tokens[a["id"]] = c
            types[a["id"]] = 3 if a["special"] or (c.startswith("<|") and c.endswith("|>")) else 4
        tc = json.loads((hf_dir / "tokenizer_config.json").read_text())
        keys += [
            ("tokenizer.ggml.model", VT.STRING, "gpt2", None),
            ("tokenizer.ggml.pre", VT.STRING, "qwen2", None),
            ("tokenizer.ggml.tokens", VT.ARRAY, tokens, VT.STRING),
            ("tokenizer.ggml.token_type", VT.ARRAY, types, VT.INT32),
            ("tokenizer.ggml.merges", VT.ARRAY, [" ".join(m) for m in tok["model"]["merges"]], VT.STRING),
            ("tokenizer.ggml.bos_token_id", VT.UINT32, cfg["bos_token_id"], None),
            ("tokenizer.ggml.eos_token_id", VT.UINT32, eos[0], None),
            ("tokenizer.ggml.padding_token_id", VT.UINT32, cfg.get("pad_token_id", gen.get("pad_token_id")), None),
            ("tokenizer.ggml.add_bos_token", VT.BOOL, False, None),
            ("tokenizer.chat_template", VT.STRING, tc["chat_template"], None),
            ("tokenizer.huggingface.json", VT.STRING, raw.decode("utf-8"), None),
        ]
    tensors = {}
    for hf_name, ref in sorted(mf.read_checkpoint(hf_dir).items()):
        name = check_gguf.hf_to_gguf_name(hf_name)
        diff = hf_name.endswith("_diff.weight")
        if (hf_name == "lm_head.weight" and cfg["tie_word_embeddings"]) or (kind == "head" and not diff) or (
                kind == "base" and diff):
            continue
        x = mf.load_tensor(ref)
        t = QT.F32 if x.ndim == 1 else qtype
        tensors[name] = (gguf.quants.quantize(x, t) if t != QT.F32 else x, t)
    return keys, tensors


def write_gguf(path: Path, keys: list, tensors: dict) -> Path:
    arch = next((k[2] for k in keys if k[0] == "general.architecture"), "qwen3")
    w = gguf.GGUFWriter(path, arch)
    for name, vtype, value, sub in keys:
        if name != "general.architecture":
            w.add_key_value(name, value, vtype, sub_type=sub)
    for name, (arr, t) in tensors.items():
        w.add_tensor(name, arr, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def run_check(gguf_path: Path, hf_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK_GGUF), str(gguf_path), str(hf_dir), *extra],
                          capture_output=True, text=True)


def test_check_gguf_accepts_a_correct_bf16_file(tmp_path: Path) -> None:
    hf = FIXTURES / "tiny-tied-bf16"
    keys, tensors = reference_gguf(hf, QT.BF16)
    r = run_check(write_gguf(tmp_path / "m.gguf", keys, tensors), hf, "--file-type", "bf16")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK ") and f"{len(tensors)} tensors" in r.stdout and r.stdout.count("\n") == 1


# Whole-model files take ~10 s each to read (GGUFReader walks the 300k tokenizer strings
# one by one), so most cases use head files, which hold no tokenizer.
@pytest.mark.parametrize(
    "fixture, qtype, kind",
    [
        ("tiny-untied-f16-sharded", QT.F16, "model"),
        ("tiny-tied-bf16", QT.Q8_0, "base"),
        ("tiny-untied-f16-sharded", QT.F32, "head"),
        ("tiny-tied-bf16", QT.Q4_0, "head"),
        ("tiny-tied-bf16", QT.F16, "head"),  # f16 from a bf16 source
    ],
)
def test_check_gguf_accepts_correct_files(tmp_path: Path, fixture: str, qtype: QT, kind: str) -> None:
    hf = FIXTURES / fixture
    path = write_gguf(tmp_path / "m.gguf", *reference_gguf(hf, qtype, kind))
    r = run_check(path, hf, *([f"--{kind}"] if kind != "model" else []))
    assert r.returncode == 0, r.stdout + r.stderr
    if qtype in (QT.Q8_0, QT.Q4_0):
        assert f"worst {qtype.name} rel err" in r.stdout


def test_check_gguf_accepts_a_plain_qwen3_conversion(tmp_path: Path) -> None:
    hf = tmp_path / "plain"
    r = run_make_fixtures("custom", str(hf), "--hidden", "32", "--heads", "2", "--kv-heads", "1", "--head-dim", "32",
                          "--inter", "64", "--layers", "1", "--plain-qwen3", "--rope-form", "old", "--dtype", "f32")
    assert r.returncode == 0, r.stderr
    path = write_gguf(tmp_path / "p.gguf", *reference_gguf(hf, QT.F32))
    r = run_check(path, hf)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_check(path, hf, "--head")
    assert r.returncode == 1 and "plain Qwen3" in r.stdout


def set_key(keys: list, name: str, value=None, vtype=None, sub=None) -> list:
    out = []
    for k in keys:
        if k[0] == name:
            k = (name, vtype or k[1], k[2] if value is None else value, sub or k[3])
        out.append(k)
    return out


def corrupt_tensor(tensors: dict, name: str) -> dict:
    arr, t = tensors[name]
    arr = arr.copy()
    arr.reshape(-1)[5] ^= 1  # one bit of one value (uint8 bytes for BF16)
    return {**tensors, name: (arr, t)}


CORRUPTIONS = {
    "tensor value": (lambda k, t: (k, corrupt_tensor(t, "blk.1.attn_k_diff.weight")),
                     "tensor blk.1.attn_k_diff.weight: 1 of"),
    "norm value": (lambda k, t: (k, {**t, "blk.0.attn_q_norm_diff.weight":
                                     (t["blk.0.attn_q_norm_diff.weight"][0] * 2, QT.F32)}),
                   "tensor blk.0.attn_q_norm_diff.weight"),
    "missing key": (lambda k, t: ([x for x in k if x[0] != "tokenizer.ggml.mask_token_id"], t),
                    "key tokenizer.ggml.mask_token_id: missing"),
    "key type": (lambda k, t: (set_key(k, "orthrus.block_count", vtype=VT.INT32), t),
                 "key orthrus.block_count: has type i32, expected u32"),
    "key value": (lambda k, t: (set_key(k, "orthrus.rope.freq_base", 10000.0), t), "key orthrus.rope.freq_base: is"),
    "extra key": (lambda k, t: (k + [("orthrus.rope.dimension_count", VT.UINT32, 16, None)], t),
                  "key orthrus.rope.dimension_count: unexpected"),
    "earlier layout": (lambda k, t: ([("general.architecture", VT.STRING, "qwen3", None)] + k[1:], t),
                       "key general.architecture: is 'qwen3'"),
    "head type": (lambda k, t: (set_key(k, "general.type", "model"), t), "key general.type: is 'model'"),
    "extra tensor": (lambda k, t: (k, {**t, "blk.0.attn_q.weight": t["blk.0.attn_q_diff.weight"]}),
                     "tensor blk.0.attn_q.weight: unexpected"),
    "missing tensor": (lambda k, t: (k, {n: v for n, v in t.items() if n != "blk.0.attn_v_diff.weight"}),
                       "tensor blk.0.attn_v_diff.weight: missing"),
    "shape": (lambda k, t: (k, {**t, "blk.0.attn_k_diff.weight": (t["blk.0.attn_k_diff.weight"][0][:16], QT.BF16)}),
              "tensor blk.0.attn_k_diff.weight: ggml shape"),
    "eos ids as i32": (lambda k, t: (set_key(k, "orthrus.eos_token_ids", sub=VT.INT32), t),
                       "key orthrus.eos_token_ids: has type arr[i32], expected arr[u32]"),
    "1-D tensor in bf16": (lambda k, t: (k, {**t, "blk.0.attn_q_norm_diff.weight":
                                             (gguf.quants.quantize(t["blk.0.attn_q_norm_diff.weight"][0], QT.BF16),
                                              QT.BF16)}),
                           "1-D tensors are always F32"),
    "wrong file type": (lambda k, t: (set_key(k, "general.file_type", 1), t), "(file type f16)"),
}


@pytest.fixture(scope="module")
def tied_bf16_head() -> tuple[list, dict]:
    return reference_gguf(FIXTURES / "tiny-tied-bf16", QT.BF16, "head")


@pytest.mark.parametrize("what", sorted(CORRUPTIONS))
def test_check_gguf_reports_mismatches(tmp_path: Path, tied_bf16_head, what: str) -> None:
    keys, tensors = tied_bf16_head
    mutate, expected_line = CORRUPTIONS[what]
    path = write_gguf(tmp_path / "bad.gguf", *mutate(list(keys), dict(tensors)))
    r = run_check(path, FIXTURES / "tiny-tied-bf16", "--head")
    assert r.returncode == 1, r.stdout + r.stderr
    assert expected_line in r.stdout, r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("FAIL ")


def test_check_gguf_reports_a_wrong_token_type(tmp_path: Path) -> None:
    hf = FIXTURES / "tiny-tied-bf16"
    keys, tensors = reference_gguf(hf, QT.BF16)
    types = [1] * 151643 + [4] * 26 + [5] * (151936 - 151669)  # added specials must be 3 (control)
    r = run_check(write_gguf(tmp_path / "t.gguf", set_key(keys, "tokenizer.ggml.token_type", types), tensors), hf)
    assert r.returncode == 1
    assert "key tokenizer.ggml.token_type: differs first at index 151643: 4, expected 3" in r.stdout, r.stdout


def test_check_gguf_bounds_quantization_error(tmp_path: Path) -> None:
    hf = FIXTURES / "tiny-tied-bf16"
    keys, tensors = reference_gguf(hf, QT.Q8_0, "head")
    arr, t = tensors["blk.0.attn_q_diff.weight"]
    # A wrong scale layout: every Q8_0 block's f16 scale (its first 2 of 34 bytes) x1.5.
    blocks = arr.copy().reshape(-1, 34)
    blocks[:, :2] = (blocks[:, :2].copy().view(np.float16) * np.float16(1.5)).view(np.uint8)
    tensors["blk.0.attn_q_diff.weight"] = (blocks.reshape(arr.shape), t)
    r = run_check(write_gguf(tmp_path / "q.gguf", keys, tensors), hf, "--head")
    assert r.returncode == 1 and "tensor blk.0.attn_q_diff.weight: Q8_0 relative RMS error" in r.stdout, r.stdout


# The real converter, where it is built (cargo build -p orthrus-convert, or cargo test).
@pytest.mark.skipif(not CONVERT.exists(), reason="orthrus-convert is not built (cargo build)")
@pytest.mark.parametrize(
    "model, ftype, split",
    [("tiny-tied-bf16", "q8_0", False), ("tiny-untied-f16-sharded", "bf16", True), ("wide", "q4_k_m", False)],
)
def test_check_gguf_accepts_orthrus_convert_output(tmp_path: Path, model: str, ftype: str, split: bool) -> None:
    hf = FIXTURES / model
    if model == "wide":  # rows of 256: the K-quant blocks apply
        hf = tmp_path / "wide"
        r = run_make_fixtures("custom", str(hf), "--hidden", "256", "--heads", "4", "--kv-heads", "2",
                              "--head-dim", "64", "--inter", "512", "--layers", "1", "--untied")
        assert r.returncode == 0, r.stderr
    out = tmp_path / "m.gguf"
    r = subprocess.run([str(CONVERT), str(hf), "-o", str(out), "-t", ftype, *(["--split"] if split else [])],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    files = [(out, "--base"), (tmp_path / "m.head.gguf", "--head")] if split else [(out, None)]
    for path, kind in files:
        r = run_check(path, hf, "--file-type", ftype, *([kind] if kind else []))
        assert r.returncode == 0, r.stdout + r.stderr
