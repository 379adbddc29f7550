// Attention's splits combined where the output projection quantizes its
// input: the attention output of a block is read by one product only (Wo, then
// the residual add), so instead of attn.cuh's combine kernel writing it and
// mmv.cuh's quantize kernel reading it back, one kernel combines each value
// from the splits' partial results and quantizes it for the product. One
// kernel a layer fewer; the values, and so the product, are the same bit for
// bit (attn-test.cu checks the quantized activations against combine, then
// quantize).
//
// Self-contained beside attn.cuh and mmv.cuh (CUDA runtime only);
// ggml-hook.cu puts it into ggml-cuda's fusion loop.
#pragma once

#include "attn.cuh"
#include "mmv.cuh"

namespace orthrus_attn_quantize {

using orthrus_mmv::WType;

// Warps a block: few, so that the splits' reads spread over many SMs (the
// 1.7B's 16 queries are 128 warps).
constexpr int WARPS = 2;

// One warp per (span, column) as quantize_kernel: column c (of the 8 NT) is
// query c, its nh * D values the heads' outputs one after another, as the
// attention's dst lays them out. Lane l's 8 values lie in one head; each is
// combine_kernel's sum over the splits, in its order.
template <WType T, int NT>
__global__ void __launch_bounds__(32 * WARPS) combine_quantize_kernel(const orthrus_attn::Params p, void * __restrict__ buf,
                                                               const int nkb) {
    constexpr int SPAN = orthrus_mmv::scale_span(T);
    constexpr int LANES = SPAN / 8;
    constexpr int D = orthrus_attn::D;
    orthrus_launch::grid_release();
    orthrus_launch::grid_wait();
    const int64_t item = (int64_t) blockIdx.x * blockDim.y + threadIdx.y;
    const int nspan = nkb * 32 / SPAN;
    if (item >= (int64_t) nspan * 8 * NT) {
        return;
    }
    const int sp = (int) (item / (8 * NT));
    const int c = (int) (item % (8 * NT));
    const int lane = threadIdx.x;
    float v[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) {
        v[e] = 0.0f;
    }
    if (c < p.nq && lane < LANES) {
        const int at_value = SPAN * sp + 8 * lane;
        const int h = at_value / D, d0 = at_value % D;
        const int gqa = p.nh / p.nkv;
        const int kvh = h / gqa;
        // The row of KV head kvh's block that is (query c, head h).
        const int rows = orthrus_attn::block_rows(p);
        const int r = (h - kvh * gqa) * p.nq + c;
        const int64_t at0 = (int64_t) kvh * p.nsplit * rows + r;
        // Unrolled: a lane's loads of several splits in flight at once (a
        // long cache has 32 splits or more).
        float m = -INFINITY;
#pragma unroll 8
        for (int s = 0; s < p.nsplit; ++s) {
            m = fmaxf(m, p.part_ml[at0 + (int64_t) s * rows].x);
        }
        const float base = m == -INFINITY ? 0.0f : m;
        float l = 0.0f;
        float acc[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 4
        for (int s = 0; s < p.nsplit; ++s) {
            const int64_t at = at0 + (int64_t) s * rows;
            const float2 ml = p.part_ml[at];
            const float w = exp2f(ml.x - base);
            l += w * ml.y;
            const float4 * o = (const float4 *) (p.part_o + at * D + d0);
            const float4 a = o[0], b = o[1];
            acc[0] += w * a.x; acc[1] += w * a.y; acc[2] += w * a.z; acc[3] += w * a.w;
            acc[4] += w * b.x; acc[5] += w * b.y; acc[6] += w * b.z; acc[7] += w * b.w;
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            v[e] = l > 0.0f ? acc[e] / l : 0.0f;
        }
    }
    orthrus_mmv::quantize_values<T, NT>(v, buf, nkb, sp, c, lane);
}

template <WType T>
static void launch_type(const orthrus_attn::Params & p, void * buf, cudaStream_t stream) {
    const int64_t k = (int64_t) p.nh * orthrus_attn::D;
    const int nkb = (int) (k / 32);
    const int64_t items = k / orthrus_mmv::scale_span(T) * 8 * orthrus_mmv::n_tiles(p.nq);
    const dim3 block(32, WARPS);
    const dim3 grid((unsigned) ((items + WARPS - 1) / WARPS));
    orthrus_mmv::with_n_tiles(p.nq, [&](auto n) {
        orthrus_launch::launch_kernel(combine_quantize_kernel<T, decltype(n)::value>, grid, block, 0, stream, p, buf,
                                      nkb);
    });
}

// Whether the combine can go this way: the splits' partial results exist
// (nsplit > 1, after orthrus_attn::launch(p, scratch, stream, false)), the
// queries are one product's columns and the K-quants' spans of 256 values
// hold whole heads.
static inline bool supported(const orthrus_attn::Params & p, WType type) {
    return p.nsplit > 1 && p.nq >= 1 && p.nq <= orthrus_mmv::MAX_COLS && type != WType::Q8_0 &&
           orthrus_mmv::supported((int64_t) p.nh * orthrus_attn::D);
}

// The attention output of p (query t's column: nh * D values) into buf as
// orthrus_mmv::quantize() would quantize it for a product with weights of
// `type`, after orthrus_attn::launch(p, scratch, stream, false) on the same
// stream. Asynchronous on `stream`.
static inline void combine_quantize(WType type, const orthrus_attn::Params & p, void * buf, cudaStream_t stream) {
    switch (type) {
        case WType::Q4_K: launch_type<WType::Q4_K>(p, buf, stream); break;
        case WType::Q6_K: launch_type<WType::Q6_K>(p, buf, stream); break;
        case WType::Q8_0: break;  // not supported()
    }
}

}  // namespace orthrus_attn_quantize
