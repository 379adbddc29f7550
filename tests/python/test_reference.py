"""models/reference.py, the numpy ground truth of docs/design.md: its pieces against hand
computations, its cache against itself, and greedy Orthrus decoding against greedy AR."""
import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "models" / "fixtures"
TIED = FIXTURES / "tiny-tied-bf16"
UNTIED = FIXTURES / "tiny-untied-f16-sharded"
REFERENCE = REPO / "models" / "reference.py"
sys.path.insert(0, str(REPO / "models"))

import reference as ref  # noqa: E402

PROMPTS = [[9707, 11, 1879], [151644, 872, 198, 3838, 374], [42]]


@pytest.fixture(scope="module")
def tied():
    return ref.Model.load(TIED)


@pytest.fixture(scope="module")
def untied():
    return ref.Model.load(UNTIED)


@pytest.fixture(params=["tied", "untied"])
def model(request):
    return request.getfixturevalue(request.param)


def small_config(**kw) -> ref.Config:
    base = dict(vocab=64, hidden=8, inter=16, layers=2, heads=4, kv_heads=2, head_dim=4, eps=1e-6, theta=10000.0,
                tied=False, block_size=4, mask_token_id=63, eos_ids=())
    base.update(kw)
    return ref.Config(**base)


def random_weights(cfg: ref.Config, seed: int = 0) -> dict:
    """Every tensor of `cfg` (docs/design.md §2 shapes), random but O(1) activations."""
    rng = np.random.default_rng(seed)
    q_out, kv_out = cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    shapes = {"q_proj": (q_out, cfg.hidden), "k_proj": (kv_out, cfg.hidden), "v_proj": (kv_out, cfg.hidden),
              "o_proj": (cfg.hidden, q_out), "q_norm": (cfg.head_dim,), "k_norm": (cfg.head_dim,),
              "gate_proj": (cfg.inter, cfg.hidden), "up_proj": (cfg.inter, cfg.hidden),
              "down_proj": (cfg.hidden, cfg.inter), "embed_tokens": (cfg.vocab, cfg.hidden),
              "lm_head": (cfg.vocab, cfg.hidden)}
    out = {}
    for name in ref.hf_tensor_names(cfg):
        key = name.split(".")[-2].removesuffix("_diff")
        if key in shapes and len(shapes[key]) == 2:
            out[name] = rng.standard_normal(shapes[key]) / math.sqrt(shapes[key][1])
        else:
            n = shapes[key][0] if key in shapes else cfg.hidden
            out[name] = 1.0 + 0.1 * rng.standard_normal(n)
    return {k: v.astype(np.float32) for k, v in out.items()}


def cache_bytes(m: ref.Model) -> list[bytes]:
    return [a.tobytes() for a in m.k_cache + m.v_cache]


# --------------------------------------------------------------------------- pieces


def test_rope_is_rotate_half_for_head_dim_4():
    # hd = 4 pairs dimension 0 with 2 (frequency theta^0 = 1) and 1 with 3 (theta^(-2/4) = 0.1).
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    p = 3
    c0, s0, c1, s1 = math.cos(3.0), math.sin(3.0), math.cos(0.3), math.sin(0.3)
    expected = [1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 3 * c0 + 1 * s0, 4 * c1 + 2 * s1]
    np.testing.assert_allclose(ref.rope(x, np.array([p]), theta=100.0)[0, 0], expected, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(ref.rope(x, np.array([0]), theta=100.0), x)


def test_rmsnorm_by_hand():
    x = np.array([3.0, 4.0])  # mean of squares 12.5
    w = np.array([1.0, 2.0])
    np.testing.assert_allclose(ref.rmsnorm(x, w, 0.0), [3 / math.sqrt(12.5), 8 / math.sqrt(12.5)], rtol=1e-15)


def test_attention_by_hand():
    # one head, hd 4 (scale 1/2), two keys: weights softmax([q.k0, q.k1] / 2)
    q = np.array([[[1.0, 0.0, 2.0, 0.0]]])
    keys = np.array([[[1.0, 1.0, 1.0, 1.0]], [[0.0, 0.0, -1.0, 3.0]]])  # q.k = 3, -2
    values = np.array([[[1.0, 2.0, 3.0, 4.0]], [[-1.0, 0.0, 5.0, 0.5]]])
    e0, e1 = math.exp(1.5), math.exp(-1.0)
    w0, w1 = e0 / (e0 + e1), e1 / (e0 + e1)
    expected = w0 * values[0, 0] + w1 * values[1, 0]
    np.testing.assert_allclose(ref.attention(q, keys, values, None)[0], expected, rtol=1e-15)
    # a mask that hides key 1 leaves exactly value 0
    masked = ref.attention(q, keys, values, np.array([[True, False]]))[0]
    np.testing.assert_array_equal(masked, values[0, 0])


@pytest.mark.parametrize("tied", [False, True])
def test_single_token_forward_by_hand(tied):
    # One token at position 0 with an empty cache: RoPE is the identity and attention
    # over the single key returns its value, so a layer is x += expand(v) Wo^T, then the
    # MLP; written out here independently of the reference's functions.
    cfg = small_config(layers=2, tied=tied)
    w = {k: v.astype(np.float64) for k, v in random_weights(cfg, seed=3).items()}
    assert ("lm_head.weight" in w) != tied

    def norm(x, g):
        return x * g / np.sqrt((x ** 2).mean() + cfg.eps)

    tok = 11
    x = w["model.embed_tokens.weight"][tok]
    for i in range(cfg.layers):
        pre = f"model.layers.{i}."
        h = norm(x, w[pre + "input_layernorm.weight"])
        v = (w[pre + "self_attn.v_proj.weight"] @ h).reshape(cfg.kv_heads, cfg.head_dim)
        a = np.repeat(v, cfg.heads // cfg.kv_heads, axis=0).reshape(-1)  # heads 0,1 <- kv 0; 2,3 <- kv 1
        x = x + w[pre + "self_attn.o_proj.weight"] @ a
        h = norm(x, w[pre + "post_attention_layernorm.weight"])
        g = w[pre + "mlp.gate_proj.weight"] @ h
        u = w[pre + "mlp.up_proj.weight"] @ h
        x = x + w[pre + "mlp.down_proj.weight"] @ (g / (1 + np.exp(-g)) * u)
    head = w["model.embed_tokens.weight" if tied else "lm_head.weight"]
    expected = head @ norm(x, w["model.norm.weight"])
    got = ref.Model(cfg, {k: v.astype(np.float32) for k, v in w.items()}).ar_forward([tok])[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_each_view_uses_its_own_attention_tensors():
    # With an empty cache the diffusion view reads no AR attention tensor and the AR view
    # no _diff tensor; every one of them matters to its own view.
    cfg = small_config(layers=2)
    base = random_weights(cfg)
    block = [7, 63, 63, 63]

    def both(weights):
        m = ref.Model(cfg, weights)
        return m.ar_forward(block), m.diffusion_block_forward(block, 0)

    ar0, diff0 = both(base)
    for layer in range(cfg.layers):
        for t in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"):
            for suffix, own, other in (("", 0, 1), ("_diff", 1, 0)):
                name = f"model.layers.{layer}.self_attn.{t}{suffix}.weight"
                w = dict(base)
                w[name] = base[name] * np.float32(1.5) + np.float32(0.25)
                out = both(w)
                assert np.abs(out[own] - (ar0, diff0)[own]).max() > 1e-6, name
                assert np.array_equal(out[other], (ar0, diff0)[other]), name


def test_gqa_query_head_reads_kv_head_h_over_group():
    # 4 query heads, 2 kv heads: heads 0,1 read kv head 0 and heads 2,3 read kv head 1
    # (not h % nKV, which would pair heads 0,2 and 1,3).
    rng = np.random.default_rng(1)
    q = rng.standard_normal((3, 4, 4))
    keys = rng.standard_normal((5, 2, 4))
    values = rng.standard_normal((5, 2, 4))
    values[:, 0] = 0.0
    out = ref.attention(q, keys, values, None).reshape(3, 4, 4)
    assert np.all(out[:, :2] == 0.0)
    assert np.all(np.abs(out[:, 2:]).max(axis=-1) > 1e-3)


def test_gqa_mapping_inside_the_model():
    # Only kv head 1 carries values, and o_proj only reads query heads 0 and 1: with the
    # h // (nH/nKV) mapping those heads see kv head 0, so attention adds nothing and the
    # logits equal those of the same model without attention output.
    cfg = small_config(layers=1)
    w = random_weights(cfg)
    hd, pre = cfg.head_dim, "model.layers.0.self_attn."
    w[pre + "v_proj.weight"][:hd] = 0.0  # kv head 0
    w[pre + "o_proj.weight"][:, 2 * hd:] = 0.0  # columns of query heads 2, 3
    silent = dict(w)
    silent[pre + "o_proj.weight"] = np.zeros_like(w[pre + "o_proj.weight"])
    ids = [5, 9, 17, 33]
    got = ref.Model(cfg, w).ar_forward(ids)
    np.testing.assert_array_equal(got, ref.Model(cfg, silent).ar_forward(ids))
    # the other half of the query heads does move the logits
    w[pre + "o_proj.weight"] = random_weights(cfg)[pre + "o_proj.weight"]
    w[pre + "o_proj.weight"][:, : 2 * hd] = 0.0
    assert np.abs(ref.Model(cfg, w).ar_forward(ids) - got).max() > 1e-3


def test_accepted_count():
    assert ref.accepted_count([], [7]) == 0
    assert ref.accepted_count([1, 2, 3], [1, 2, 3, 4]) == 3
    assert ref.accepted_count([1, 9, 3], [1, 2, 3, 4]) == 1
    assert ref.accepted_count([9, 2, 3], [1, 2, 3, 4]) == 0


def test_config_reads_both_rope_forms_and_eos_lists(tied, untied):
    assert tied.cfg.theta == untied.cfg.theta == 1e6  # rope_parameters.rope_theta / rope_theta
    assert (tied.cfg.head_dim, untied.cfg.head_dim) == (16, 16)  # explicit; hidden/heads would be 8
    assert tied.cfg.tied and not untied.cfg.tied
    assert tied.lm_head is tied.embed
    assert tied.cfg.eos_ids == (151645,) and untied.cfg.eos_ids == (151645, 151643)
    assert (tied.cfg.block_size, tied.cfg.mask_token_id) == (8, 151669)
    assert (untied.cfg.block_size, untied.cfg.mask_token_id) == (16, 151662)
    assert len(tied.layers) == 2 and len(untied.layers) == 3
    assert tied.embed.dtype == np.float64


# --------------------------------------------------------------------------- views and cache


def test_prefill_equals_token_by_token(model):
    ids = [151644, 872, 198, 3838, 374, 220, 17, 10, 17, 30]
    model.reset()
    batched = model.ar_forward(ids)
    batched_cache = [a.copy() for a in model.k_cache + model.v_cache]
    model.reset()
    single = np.concatenate([model.ar_forward([t], [p]) for p, t in enumerate(ids)])
    assert np.abs(batched - single).max() < 1e-10
    for a, b in zip(batched_cache, model.k_cache + model.v_cache):
        assert np.abs(a - b).max() < 1e-10
    assert model.cache_len == len(ids)


def test_ar_view_is_causal(tied):
    tied.reset()
    a = tied.ar_forward([9707, 11, 1879, 5, 6])
    tied.reset()
    b = tied.ar_forward([9707, 11, 1879, 5, 999])
    assert np.abs(a[:4] - b[:4]).max() < 1e-12
    assert np.abs(a[4] - b[4]).max() > 1e-3


def test_truncate_then_refeed_gives_the_same_logits(tied):
    tied.reset()
    full = tied.ar_forward([9707, 11, 1879, 5, 6, 7])
    tied.truncate_cache(3)
    assert tied.cache_len == 3
    assert np.abs(tied.ar_forward([5, 6, 7]) - full[3:]).max() < 1e-10


def test_positions_must_continue_the_cache(tied):
    tied.reset()
    tied.ar_forward([1, 2])
    with pytest.raises(ValueError, match="continue the cache"):
        tied.ar_forward([3], [5])


def test_diffusion_leaves_the_cache_bit_identical(model):
    model.reset()
    prompt = [9707, 11, 1879, 5, 6]
    model.ar_forward(prompt)
    before = cache_bytes(model)
    logits = model.diffusion_forward(17, len(prompt), model.cfg.block_size)
    assert logits.shape == (model.cfg.block_size, model.cfg.vocab)
    assert cache_bytes(model) == before
    model.diffusion_forward(17, 2, 3)  # fewer committed positions than cached
    assert cache_bytes(model) == before
    # and the AR view continues as if no diffusion pass had happened
    after = model.ar_forward([17])
    model.reset()
    model.ar_forward(prompt)
    assert np.array_equal(model.ar_forward([17]), after)


def test_diffusion_block_is_bidirectional(model):
    model.reset()
    prompt = [9707, 11, 1879]
    model.ar_forward(prompt)
    m = model.cfg.mask_token_id
    a = model.diffusion_block_forward([5, m, m, m], len(prompt))
    b = model.diffusion_block_forward([5, m, m, 1234], len(prompt))
    assert np.abs(a[0] - b[0]).max() > 1e-3  # the first block token sees the last one
    assert np.array_equal(model.diffusion_forward(5, len(prompt), 4), a)


def test_diffusion_reads_the_cache(tied):
    tied.reset()
    tied.ar_forward([9707, 11, 1879])
    a = tied.diffusion_forward(5, 3, 4)
    tied.reset()
    tied.ar_forward([9707, 12, 1879])
    assert np.abs(tied.diffusion_forward(5, 3, 4) - a).max() > 1e-3


def test_diffusion_with_ar_weights_matches_ar_on_the_last_block_token():
    # With the _diff tensors set to the AR ones and one layer, the last block query sees
    # exactly what the AR view's last query sees (all cached positions and the whole
    # block), so the two views agree there; earlier queries differ (they also see later
    # block tokens). With more layers the block's keys themselves would differ.
    cfg = small_config(layers=1)
    w = random_weights(cfg)
    for name in list(w):
        if "_diff" in name:
            w[name] = w[name.replace("_diff", "")]
    m = ref.Model(cfg, w)
    prompt, block = [3, 14, 15, 9], [26, 63, 63, 5]
    m.ar_forward(prompt)
    diff = m.diffusion_block_forward(block, len(prompt))
    ar = m.ar_forward(block)
    assert np.abs(diff[-1] - ar[-1]).max() < 1e-12
    assert np.abs(diff[0] - ar[0]).max() > 1e-3
    # the real fixtures' diffusion view differs from the AR view
    real = random_weights(cfg)
    m2 = ref.Model(cfg, {**w, **{k: v for k, v in real.items() if "_diff" in k}})
    m2.ar_forward(prompt)
    assert np.abs(m2.diffusion_block_forward(block, len(prompt))[-1] - ar[-1]).max() > 1e-3


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_orthrus_equals_greedy_ar(model, prompt):
    ar, ar_steps = model.generate_greedy(prompt, 40, "ar", eos_ids=())
    orthrus, steps = model.generate_greedy(prompt, 40, "orthrus", eos_ids=())
    assert ar_steps == []
    assert len(ar) == 40
    assert orthrus == ar
    assert sum(s["accepted"] + 1 for s in steps) == 40
    block = model.cfg.block_size
    done = 0
    for s in steps:  # L = min(block_size, tokens still allowed); L - 1 drafts
        assert len(s["drafts"]) == min(block, 40 - done) - 1
        assert 0 <= s["accepted"] <= len(s["drafts"])
        done += s["accepted"] + 1


@pytest.mark.parametrize("max_new", [1, 2, 13])
def test_max_new_cuts_exactly(tied, max_new):
    ar, _ = tied.generate_greedy(PROMPTS[0], 40, "ar", eos_ids=())
    for mode in ("ar", "orthrus"):
        out, _ = tied.generate_greedy(PROMPTS[0], max_new, mode, eos_ids=())
        assert out == ar[:max_new]


def test_eos_is_emitted_and_ends_generation(untied):
    ar, _ = untied.generate_greedy(PROMPTS[1], 40, "ar", eos_ids=())
    eos = ar[17]
    first = ar.index(eos)
    for mode in ("ar", "orthrus"):
        out, _ = untied.generate_greedy(PROMPTS[1], 40, mode, eos_ids=(eos, 151645))
        assert out == ar[: first + 1]


class OracleDrafts:
    """A diffusion view that drafts the AR greedy continuation, wrong at one block index."""

    def __init__(self, model, prompt, wrong_at=None):
        self.model, self.p, self.wrong_at = model, len(prompt), wrong_at
        self.ar, _ = model.generate_greedy(prompt, 64, "ar", eos_ids=())

    def __call__(self, last_token, n, L):
        logits = np.zeros((L, self.model.cfg.vocab))
        for j in range(L - 1):  # index j drafts position n+j+1, i.e. generated token n+j+1-P
            tok = self.ar[n + j + 1 - self.p]
            logits[j, tok + 1 if j == self.wrong_at else tok] = 1.0
        return logits


@pytest.mark.parametrize("wrong_at,accepted", [(None, 7), (0, 0), (3, 3)])
def test_acceptance_count_with_oracle_drafts(tied, monkeypatch, wrong_at, accepted):
    prompt = PROMPTS[0]
    oracle = OracleDrafts(tied, prompt, wrong_at)
    monkeypatch.setattr(tied, "diffusion_forward", oracle)
    out, steps = tied.generate_greedy(prompt, 30, "orthrus", eos_ids=())
    assert out == oracle.ar[:30]
    # block 8: each step accepts min(`accepted`, L-1) and commits one more
    assert [s["accepted"] for s in steps[:-1]] == [accepted] * (len(steps) - 1)
    last_l = len(steps[-1]["drafts"]) + 1
    assert steps[-1]["accepted"] == min(accepted, last_l - 1)
    assert sum(s["accepted"] + 1 for s in steps) == 30


# --------------------------------------------------------------------------- CLI


def run_cli(*args) -> str:
    return subprocess.run([sys.executable, str(REFERENCE), *map(str, args)], check=True, capture_output=True,
                          text=True).stdout


def test_cli_logits_and_diffusion(tied, tmp_path):
    run_cli("logits", TIED, "--ids", "9707,11,1879", "--out", tmp_path / "l.npy")
    logits = np.load(tmp_path / "l.npy")
    tied.reset()
    expected = tied.ar_forward([9707, 11, 1879])
    assert logits.dtype == np.float32 and logits.shape == (3, 151936)
    assert np.array_equal(logits, expected.astype(np.float32))

    run_cli("diffusion", TIED, "--ids", "9707,11,1879", "--last", 7, "--block", 5, "--out", tmp_path / "d.npy")
    diff = np.load(tmp_path / "d.npy")
    assert diff.dtype == np.float32 and diff.shape == (5, 151936)
    assert np.array_equal(diff, tied.diffusion_forward(7, 3, 5).astype(np.float32))

    run_cli("diffusion", TIED, "--ids", "9707,11,1879", "--last", 7, "--out", tmp_path / "b.npy")
    assert np.load(tmp_path / "b.npy").shape == (8, 151936)  # config block_size

    args = ("--ids", "9707,11,1879", "--last", 7, "--block", 5, "--dtype", "float32", "--out", tmp_path / "f.npy")
    run_cli("diffusion", TIED, *args)
    assert np.abs(np.load(tmp_path / "f.npy") - diff).max() < 1e-3

    # Both from one process, as the engine tests ask for them.
    run_cli("logits", TIED, "--ids", "9707,11,1879", "--out", tmp_path / "l2.npy", "--diffusion-last", 7,
            "--diffusion-block", 5, "--diffusion-out", tmp_path / "d2.npy")
    assert np.array_equal(np.load(tmp_path / "l2.npy"), logits)
    assert np.array_equal(np.load(tmp_path / "d2.npy"), diff)
    r = subprocess.run([sys.executable, str(REFERENCE), "logits", str(TIED), "--ids", "1", "--out",
                        str(tmp_path / "x.npy"), "--diffusion-last", "7"], capture_output=True, text=True)
    assert r.returncode == 2 and "go together" in r.stderr


def test_cli_generate(tied):
    out = json.loads(run_cli("generate", TIED, "--ids", "9707,11,1879", "-n", 12, "--mode", "orthrus",
                             "--ignore-eos"))
    ar = json.loads(run_cli("generate", TIED, "--ids", "9707,11,1879", "-n", 12, "--mode", "ar"))
    assert out["tokens"] == ar["tokens"] == tied.generate_greedy([9707, 11, 1879], 12, "ar", eos_ids=())[0]
    assert ar["steps"] == [] and sum(s["accepted"] + 1 for s in out["steps"]) == 12
