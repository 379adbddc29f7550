//! The Qwen3 / Orthrus forward pass as a ggml graph: the one place the
//! architecture is written down. Both views run through [`build`]; they differ
//! only in which attention projections a layer uses and in the attention mask
//! (causal for the AR view, none inside the block for the diffusion view),
//! which the caller fills in.

use orthrus_kernels::ggml::{Context, OwnedGraph, Tensor, Type};

use crate::backend_layout::{self, gate_up_apart, halves, k_rows, project, Attention};
use crate::kv_cache::KvCache;
use crate::model::{Model, Qkv, Stacked};

/// Which set of attention projections the layers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum View {
    Ar,
    Diffusion,
}

/// The shape of one forward pass; graphs are cached per shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub view: View,
    /// A whole greedy decoding step in one graph: the diffusion view over
    /// the block `[x, M, ...]`, then the AR view over `x` and the block's
    /// drafts (its argmax rows), which stay on the device. `view` is then
    /// `Diffusion`, and `n_out` the rows.
    pub step: bool,
    /// Tokens in the batch.
    pub n_tokens: usize,
    /// Cache slots attention reads (slots past the batch are masked out).
    pub n_kv: usize,
    /// Rows of logits computed: the last `n_out` tokens of the batch.
    pub n_out: usize,
    /// What of the logits is copied back besides their argmax.
    pub logits: Logits,
    /// Batch columns per weight matmul group (see
    /// [`backend_layout::project`]); 0: the batch goes to ggml as one
    /// matrix, 1: each column alone.
    pub col_group: usize,
    pub attention: Attention,
    /// The mask is made in the graph from each row's visible slots
    /// (`io::VISIBLE`) instead of being an input of `n_kv` entries a row: a
    /// 16-row mask over a 32K cache is 1 MB to write and copy to the GPU
    /// for each pass.
    pub mask_on_device: bool,
}

/// What of a pass's logits goes to the host besides each row's argmax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Logits {
    /// Nothing (greedy decoding).
    #[default]
    None,
    /// Each row's `k` largest logits and their ids, in no order (top-k
    /// sampling): 16 rows of the 151936 a Qwen3 row has are 9.7 MB to copy
    /// from a GPU and sort on the host, where a step's passes take a few ms.
    Top(usize),
    /// Every logit (sampling without top-k, tests).
    All,
}

impl From<bool> for Logits {
    /// `true`: all of them; `false`: none.
    fn from(all: bool) -> Logits {
        if all {
            Logits::All
        } else {
            Logits::None
        }
    }
}

/// Names of the graph's inputs and outputs.
pub mod io {
    /// I32 `[n_tokens]`: token ids.
    pub const TOKENS: &str = "inp_tokens";
    /// I32 `[n_tokens]`: positions (RoPE).
    pub const POS: &str = "inp_pos";
    /// I64 `[n_tokens]`: the cache slots the batch's K/V are written to.
    pub const SLOTS: &str = "inp_slots";
    /// `[n_kv, n_tokens]`: 0 where a query may attend, -inf elsewhere.
    pub const MASK: &str = "inp_mask";
    /// A step's verify pass's (causal) mask, as `MASK`.
    pub const MASK_VERIFY: &str = "inp_mask_verify";
    /// F32 `[1, n_tokens]`, for a mask made on the device: the slots each
    /// row sees (a prefix of the cache), in place of `MASK`.
    pub const VISIBLE: &str = "inp_visible";
    /// As `VISIBLE`, in place of `MASK_VERIFY`.
    pub const VISIBLE_VERIFY: &str = "inp_visible_verify";
    /// I32 `[n_out]`: argmax of each logits row.
    pub const ARGMAX: &str = "out_argmax";
    /// I32 `[n_tokens]`: a step's drafts, the argmax rows of its diffusion pass.
    pub const DRAFTS: &str = "out_drafts";
    /// F32 `[n_vocab, n_out]`.
    pub const LOGITS: &str = "result_output";
    /// I32 `[k, n_out]`: ids of each row's `k` largest logits (`Logits::Top`).
    pub const TOP_IDS: &str = "out_top_ids";
    /// F32 `[1, k, n_out]`: those logits, in the order of `TOP_IDS`.
    pub const TOP_LOGITS: &str = "out_top_logits";
}

/// Element type of the mask input.
pub fn mask_type(attention: Attention) -> Type {
    match attention {
        Attention::Fused => Type::F16,
        Attention::Plain | Attention::Exact => Type::F32,
    }
}

/// Upper bound on graph nodes for a model of `n_layer` layers (a step's
/// two passes).
pub fn max_nodes(n_layer: usize) -> usize {
    2 * (64 * n_layer + 256)
}

pub fn build<'m>(model: &'m Model, cache: &'m KvCache, shape: Shape) -> OwnedGraph<'m> {
    OwnedGraph::build(
        max_nodes(model.hparams.n_layer),
        model,
        cache,
        move |ctx, m, c| forward(ctx, m, c, shape),
    )
}

fn forward<'c>(ctx: &'c Context, m: &'c Model, cache: &'c KvCache, s: Shape) -> Vec<Tensor<'c>> {
    let t = s.n_tokens as i64;
    let tokens = ctx.input(io::TOKENS, Type::I32, &[t]);
    let pos = ctx.input(io::POS, Type::I32, &[t]);
    let slots = ctx.input(io::SLOTS, Type::I64, &[t]);
    let mask = attention_mask(ctx, io::MASK, io::VISIBLE, s);
    let embd = ctx.get_rows(m.weights.get(m.tok_embd), tokens);
    let inputs = PassInputs { pos, slots, mask };
    let logits = layers(ctx, m, cache, embd, s.view, inputs, s);
    if !s.step {
        let logits = logits.named(io::LOGITS);
        let argmax = ctx.argmax(logits).named(io::ARGMAX);
        return match s.logits {
            Logits::None => vec![argmax],
            Logits::All => vec![argmax, logits],
            Logits::Top(k) => {
                let ids = ctx.top_k(logits, k).named(io::TOP_IDS);
                // Gathered per row: the logits as n_out matrices of one column.
                let [n_vocab, n_out, ..] = logits.ne();
                let columns = ctx.reshape(logits, &[1, n_vocab, n_out]);
                let top = ctx.get_rows(columns, ids).named(io::TOP_LOGITS);
                vec![argmax, ids, top]
            }
        };
    }
    // Row j of the diffusion pass drafts the token after row j, so the
    // verify pass reads x (the block's first row) and then drafts 0..t-1.
    let drafts = ctx.argmax(logits).named(io::DRAFTS);
    let row = embd.nb()[1];
    let x = ctx.view(embd, [m.hparams.n_embd as i64, 1, 1], [row, row], 0);
    let before_last = ctx.view(drafts, [t - 1, 1, 1], [4 * (t - 1) as usize; 2], 0);
    // A tied head is the embedding, already on the head's device: looking
    // the drafts up there keeps the step on it.
    let lookup = if m.output_is_embd {
        m.output
    } else {
        m.tok_embd
    };
    let verify = ctx.concat(x, ctx.get_rows(m.weights.get(lookup), before_last), 1);
    let mask = attention_mask(ctx, io::MASK_VERIFY, io::VISIBLE_VERIFY, s);
    let inputs = PassInputs { pos, slots, mask };
    let logits = layers(ctx, m, cache, verify, View::Ar, inputs, s);
    vec![drafts, ctx.argmax(logits).named(io::ARGMAX)]
}

/// A pass's attention mask `[n_kv, n_tokens]`: the input `host`, or, with
/// `Shape::mask_on_device`, made from the input `visible` (each row's open
/// prefix): `visible - slot - 1/2` (never 0) times +inf, clamped to at most
/// 0: 0 where the slot is seen and -inf where not, as the host writes them,
/// exactly on any device (no transcendental, which fast math would round).
fn attention_mask<'c>(ctx: &'c Context, host: &str, visible: &str, s: Shape) -> Tensor<'c> {
    let (n_kv, t) = (s.n_kv as i64, s.n_tokens as i64);
    if !s.mask_on_device {
        return ctx.input(host, mask_type(s.attention), &[n_kv, t]);
    }
    let seen = ctx.input(visible, Type::F32, &[1, t]);
    let slots = ctx.arange(0.5, n_kv as f32 + 0.5, 1.0);
    // In place: a prompt's mask over a long cache is tens of MB.
    let ahead = ctx.sub_in_place(ctx.repeat(seen, [n_kv, t, 1, 1]), slots);
    let mask = ctx.clamp_in_place(
        ctx.scale_in_place(ahead, f32::INFINITY),
        f32::NEG_INFINITY,
        0.0,
    );
    match mask_type(s.attention) {
        Type::F32 => mask,
        ty => ctx.cast(mask, ty),
    }
}

/// A pass's inputs besides its tokens' embeddings (see [`io`]).
#[derive(Clone, Copy)]
struct PassInputs<'c> {
    pos: Tensor<'c>,
    slots: Tensor<'c>,
    mask: Tensor<'c>,
}

/// The layers of `view` over the embeddings `x` `[n_embd, n_tokens]`, then
/// the LM head over the last `n_out` rows: their logits.
fn layers<'c>(
    ctx: &'c Context,
    m: &'c Model,
    cache: &'c KvCache,
    mut x: Tensor<'c>,
    view: View,
    inputs: PassInputs<'c>,
    s: Shape,
) -> Tensor<'c> {
    let PassInputs { pos, slots, mask } = inputs;
    let hp = &m.hparams;
    let (t, hd, nh, nkv) = (
        s.n_tokens as i64,
        hp.head_dim as i64,
        hp.n_head as i64,
        hp.n_head_kv as i64,
    );
    let eps = hp.rms_eps;
    let w = |id| m.weights.get(id);
    let mm = |id, x| project(ctx, w(id), x, s.col_group);
    // Intermediate tensors are named as llama.cpp names them, so that
    // graphs of the two can be dumped and compared node by node.
    let name = |x: Tensor<'c>, what: &str, il: usize| x.named(&format!("{what}-{il}"));

    let norm = |x, weight| ctx.mul(ctx.rms_norm(x, eps), w(weight));

    for (il, layer) in m.layers.iter().enumerate() {
        let a = match view {
            View::Ar => layer.ar,
            View::Diffusion => layer
                .diffusion
                .expect("the diffusion view needs _diff tensors"),
        };
        let h = name(norm(x, layer.attn_norm), "attn_norm", il);
        // Rows of [q; k; ...] per token: q and k as [hd, heads, T] views.
        let q_and_k = |x: Tensor<'c>| {
            let (f, row) = (std::mem::size_of::<f32>(), x.nb()[1]);
            let head = hd as usize * f;
            let q = ctx.view(x, [hd, nh, t], [head, row], 0);
            let k = ctx.view(x, [hd, nkv, t], [head, row], (nh * hd) as usize * f);
            (q, k)
        };
        let (q, k, v) = match a.qkv {
            Qkv::Stacked(Stacked::Fused(qkv)) => {
                // v as a [hd * nkv, T] view after q and k.
                let qkv = mm(qkv, h);
                let (q, k) = q_and_k(qkv);
                let row = qkv.nb()[1];
                let v = ctx.view(
                    qkv,
                    [hd * nkv, t, 1],
                    [row, row * t as usize],
                    ((nh + nkv) * hd) as usize * std::mem::size_of::<f32>(),
                );
                (q, k, v)
            }
            Qkv::QkThenV { qk, v } => {
                let (q, k) = q_and_k(mm(qk, h));
                (q, k, mm(v, h))
            }
            Qkv::Stacked(Stacked::Apart([wq, wk, wv])) => (
                ctx.reshape(mm(wq, h), &[hd, nh, t]),
                ctx.reshape(mm(wk, h), &[hd, nkv, t]),
                mm(wv, h),
            ),
        };
        let q = name(
            ctx.rope_neox(norm(q, a.q_norm), pos, hp.rope_base),
            "Qcur",
            il,
        );
        let k = name(
            ctx.rope_neox(norm(k, a.k_norm), pos, hp.rope_base),
            "Kcur",
            il,
        );
        let v = name(v, "Vcur", il);

        let k_all = ctx.set_rows(cache.store.get(cache.k[il]), k_rows(ctx, k), slots);
        let v_all = store_v(ctx, cache, cache.store.get(cache.v[il]), v, slots);
        let attn = attention(ctx, cache, q, k_all, v_all, mask, s, hp.head_dim, nkv);
        let attn = name(attn, "kqv_out", il);
        x = name(ctx.add(x, mm(a.o, attn)), "ffn_inp", il);

        if il + 1 == m.layers.len() && s.n_out < s.n_tokens {
            // Only the last n_out rows reach the LM head.
            let row = x.nb()[1];
            x = ctx.cont(ctx.view(
                x,
                [hp.n_embd as i64, s.n_out as i64, 1],
                [row, row * s.n_out],
                row * (s.n_tokens - s.n_out),
            ));
        }
        let h = name(norm(x, layer.ffn_norm), "ffn_norm", il);
        let exact = s.attention == Attention::Exact;
        let up = match layer.ffn_gate_up {
            Stacked::Fused(gate_up)
                if gate_up_apart(s.n_tokens, exact, m.repacked, w(gate_up).ty()) =>
            {
                let (gate, up) = halves(ctx, w(gate_up));
                ctx.swiglu(
                    project(ctx, gate, h, s.col_group),
                    project(ctx, up, h, s.col_group),
                )
            }
            Stacked::Fused(gate_up) => ctx.swiglu_halves(mm(gate_up, h)),
            Stacked::Apart([gate, up]) => ctx.swiglu(mm(gate, h), mm(up, h)),
        };
        let ffn_out = name(mm(layer.ffn_down, up), "ffn_out", il);
        x = name(ctx.add(x, ffn_out), "l_out", il);
    }
    let h = norm(x, m.output_norm).named("result_norm");
    mm(m.output, h)
}

/// Writes the batch's V `[hd * nkv, T]` into the cache slots `slots`; a
/// transposed cache takes it one value a row: the cache as `[1, slots, hd *
/// nkv]`, the batch as `[1, T, hd * nkv]`, the slot of each value its token's.
fn store_v<'c>(
    ctx: &'c Context,
    cache: &KvCache,
    all: Tensor<'c>,
    v: Tensor<'c>,
    slots: Tensor<'c>,
) -> Tensor<'c> {
    if !cache.v_trans {
        return ctx.set_rows(all, v, slots);
    }
    let [e, t, ..] = v.ne();
    let f = std::mem::size_of::<f32>();
    let dst = ctx.view(all, [1, cache.slots as i64, e], [f, cache.slots * f], 0);
    let src = ctx.view(v, [1, t, e], [v.nb()[1], f], 0);
    ctx.set_rows(dst, src, slots)
}

/// softmax(q K^T / sqrt(hd) + mask) V over the first `n_kv` cache slots,
/// by `Shape::attention`. The exact path takes each token as a sample of its
/// own (`[hd, c, heads / c, T]`, see [`backend_layout::exact_heads`]), the
/// cache broadcast over the samples, so a verify row is bit-identical to the
/// one-token pass AR decoding runs, on a GPU too, if the weight products
/// are (`Shape::col_group` at most [`backend_layout::EXACT_COL_GROUP`]).
#[allow(clippy::too_many_arguments)]
fn attention<'c>(
    ctx: &'c Context,
    cache: &KvCache,
    q: Tensor<'c>,
    k_all: Tensor<'c>,
    v_all: Tensor<'c>,
    mask: Tensor<'c>,
    s: Shape,
    head_dim: usize,
    nkv: i64,
) -> Tensor<'c> {
    let (t, hd, n_kv) = (s.n_tokens as i64, head_dim as i64, s.n_kv as i64);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let ty = cache.ty;
    let head_bytes = ty
        .row_bytes(head_dim as u64)
        .expect("checked at cache creation") as usize;
    let slot_bytes = head_bytes * nkv as usize;
    // Cached K and V as [hd, nkv, n_kv]; attention wants [hd, n_kv, nkv].
    let cached = |all| ctx.view(all, [hd, nkv, n_kv], [head_bytes, slot_bytes], 0);
    let k = ctx.permute(cached(k_all), [0, 2, 1, 3]);
    let nh = q.ne()[1];
    // V as [n_kv, hd, nkv]: a view of a transposed cache, else a copy.
    let vt = || {
        if cache.v_trans {
            let row = cache.slots * std::mem::size_of::<f32>();
            ctx.view(v_all, [n_kv, hd, nkv], [row, row * hd as usize], 0)
        } else {
            ctx.cont(ctx.permute(cached(v_all), [1, 2, 0, 3]))
        }
    };
    let q_heads = |q| ctx.permute(q, [0, 2, 1, 3]); // [hd, T, nh]
    match s.attention {
        Attention::Exact => {
            // c query heads of one KV head as the columns of one product,
            // the tokens as samples.
            let c = backend_layout::exact_heads(nh / nkv);
            let q = ctx.reshape(q, &[hd, c, nh / c, t]);
            let kq = ctx.reshape(ctx.mul_mat(k, q), &[n_kv, 1, nh, t]);
            let mask = ctx.reshape(mask, &[n_kv, 1, 1, t]);
            let kq = ctx.reshape(ctx.soft_max(kq, mask, scale), &[n_kv, c, nh / c, t]);
            let out = ctx.mul_mat(vt(), kq); // [hd, c, nh / c, T]: [hd, nh, T]
            ctx.reshape(out, &[hd * nh, t])
        }
        Attention::Fused => {
            let v = ctx.permute(cached(v_all), [0, 2, 1, 3]);
            let out = ctx.flash_attn(q_heads(q), k, v, mask, scale); // [hd, nh, T]
            ctx.reshape(out, &[hd * nh, t])
        }
        Attention::Plain => {
            let kq = ctx.soft_max(ctx.mul_mat(k, q_heads(q)), mask, scale); // [n_kv, T, nh]
            let out = ctx.mul_mat(vt(), kq); // [hd, T, nh]
            ctx.reshape(ctx.cont(ctx.permute(out, [0, 2, 1, 3])), &[hd * nh, t])
        }
    }
}
