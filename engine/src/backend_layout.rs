//! What the graph's layout owes to ggml's backends rather than to the model:
//! how a batch is split into column groups for the weight products, which
//! node orders ggml-cuda fuses, and what the exact path assumes of the
//! kernels. `graph` writes the model's math and asks here how to lay it out;
//! the values give the same sums either way, only the kernels differ.

use orthrus_kernels::ggml::{Context, Tensor};
use orthrus_kernels::GgmlType;

/// Batch columns per weight product in decoding passes on a GPU, for models
/// up to [`SMALL_MODEL_EMBD`] wide: ggml-cuda's matrix-vector kernel (MMVQ,
/// up to 8 columns) once per group beats its tiled matmul (MMQ) on small
/// models only; larger ones keep ggml's choice.
pub const GPU_COL_GROUP: usize = 8;
pub const SMALL_MODEL_EMBD: usize = 512;
/// Column groups of exact AR-view passes on ggml's own kernels: MMVQ sums a
/// column alike in its 1- to 4-column kernels (4 warps over a row), not in
/// its 5- to 8-column ones.
pub const EXACT_COL_GROUP: usize = 4;
/// Query heads per product in exact attention: ggml-cuda's f32
/// matrix-vector kernel (MMVF) takes up to 3 columns.
const EXACT_ATTN_HEADS: i64 = 3;

/// ggml-cuda drops the CUDA graph of a ggml graph unused for 10 seconds
/// (sweeping every 5): its next run is uncaptured, the one after captures
/// it again, as for a graph just built. Taken a little short of that.
pub const GPU_GRAPH_IDLE_DROP: std::time::Duration = std::time::Duration::from_secs(9);
/// ...except, in ggml-cuda as our patches leave it, the graphs among the
/// most recently used this many (kernels/cuda/patches/0002-*): a server's
/// next request, or bench's next mode, finds its graphs still captured.
pub const GPU_GRAPHS_KEPT: u64 = 64;

/// How attention is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Attention {
    /// ggml's fused kernel (f16 and q8_0 caches), our CUDA kernel for blocks.
    Fused,
    /// matmul, softmax, matmul over the batch (an f32 cache: f32 rounding).
    Plain,
    /// The plain path with each token a sample of its own (see
    /// [`exact_heads`]): every row computed as a one-token pass computes
    /// it. Needs an f32 cache and `n_kv` a multiple of
    /// [`crate::kv_cache::SLOT_ALIGN`].
    Exact,
}

/// The column group of decoding passes by default: [`GPU_COL_GROUP`] for a
/// small model with a layer on a GPU, else none (0).
pub fn decode_col_group(on_gpu: bool, n_embd: usize) -> usize {
    if on_gpu && n_embd <= SMALL_MODEL_EMBD {
        GPU_COL_GROUP
    } else {
        0
    }
}

/// `w x` for a batch `x` of `[k, T]`. With `col_group` c > 0 the batch goes
/// to ggml as `[k, c', T / c']` (c' the largest divisor of T up to c), a
/// stack of narrow matrices that the weights broadcast over, and back to
/// `[n, T]`: the same values in the same memory, but ggml-cuda multiplies
/// each group with its matrix-vector kernel. c' may be 1: each column alone.
pub fn project<'c>(ctx: &'c Context, w: Tensor<'c>, x: Tensor<'c>, col_group: usize) -> Tensor<'c> {
    let [k, t, ..] = x.ne();
    let c = largest_divisor_up_to(t, col_group as i64);
    if col_group == 0 || c == t {
        return ctx.mul_mat(w, x);
    }
    let y = ctx.mul_mat(w, ctx.reshape(x, &[k, c, t / c]));
    ctx.reshape(y, &[w.ne()[1], t])
}

/// The roped K `[hd, nkv, T]` as the rows the cache takes: a view, not a
/// reshape, so that ggml-cuda fuses the norm, RoPE and cache write into one
/// kernel.
pub fn k_rows<'c>(ctx: &'c Context, k: Tensor<'c>) -> Tensor<'c> {
    let [hd, nkv, t, ..] = k.ne();
    ctx.view(k, [hd * nkv, t, 1], [k.nb()[2], k.nb()[2] * t as usize], 0)
}

/// Whether a pass multiplies the halves of a gate/up stack apart: a lone
/// token, so that ggml-cuda's one-column kernel computes both and the
/// SwiGLU in one launch. Not for Q4_K, whose one-column product is our CUDA
/// matmul's (it takes the whole stack at once); not in an exact pass, where
/// our matmul's sums depend on the rows it is given and must be the verify
/// pass's; not for repacked CPU weights, which their kernels read whole.
pub fn gate_up_apart(n_tokens: usize, exact: bool, repacked: bool, ty: GgmlType) -> bool {
    n_tokens == 1 && !exact && !repacked && ty != GgmlType::Q4_K
}

/// The two halves of a row-wise stack of two matrices, as views that come
/// first in the graph's node order (see [`Context::expand_first`]), so that
/// the two products of them and what combines them stay consecutive nodes.
pub fn halves<'c>(ctx: &'c Context, w: Tensor<'c>) -> (Tensor<'c>, Tensor<'c>) {
    let [k, n, ..] = w.ne();
    let row = w.nb()[1];
    let half = |i: usize| {
        let v = ctx.view(
            w,
            [k, n / 2, 1],
            [row, row * (n / 2) as usize],
            i * row * (n / 2) as usize,
        );
        ctx.expand_first(v);
        v
    };
    (half(0), half(1))
}

/// Query heads of one KV head per product in exact attention: then every
/// op runs one query row at a time the way a one-token pass runs it
/// (ggml-cuda's MMVF sums each of its columns as a lone column, and the
/// softmax and the V product sum over `n_kv` with thread blocks that are the
/// same for every `n_kv` that is a multiple of 1024, the masked slots
/// adding exact zeros).
pub fn exact_heads(heads_per_kv_head: i64) -> i64 {
    largest_divisor_up_to(heads_per_kv_head, EXACT_ATTN_HEADS)
}

/// The largest divisor of `n` that is at most `max` (1 when `max` < 1).
fn largest_divisor_up_to(n: i64, max: i64) -> i64 {
    (1..=max.min(n)).rev().find(|c| n % c == 0).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisors_and_defaults() {
        assert_eq!(largest_divisor_up_to(16, 8), 8);
        assert_eq!(largest_divisor_up_to(12, 8), 6);
        assert_eq!(largest_divisor_up_to(7, 4), 1);
        assert_eq!(largest_divisor_up_to(5, 0), 1);
        assert_eq!(exact_heads(2), 2);
        assert_eq!(exact_heads(4), 2);
        assert_eq!(exact_heads(6), 3);
        assert_eq!(decode_col_group(true, 256), GPU_COL_GROUP);
        assert_eq!(decode_col_group(true, 2048), 0);
        assert_eq!(decode_col_group(false, 256), 0);
    }
}
