// Quantized weights times 1 to 32 columns of activations, on tensor cores.
//
// ggml-cuda multiplies a quantized matrix by up to 8 columns with its
// matrix-vector kernel (MMVQ), whose cost grows with every column (it decodes
// each weight block again for each column), and by more with its tiled matmul
// (MMQ), whose tiles and stream-k split are sized for large batches. Orthrus's
// passes are up to 32 columns (a block of drafts), so both views paid 1.8x a
// one-token pass at 16 with those. This kernel reads each weight once and
// multiplies it by all the columns with int8 mma (m16n8k32, m16n8k16 for
// Q6_K's 16-value scale groups), for Q4_K, Q6_K, Q8_0 and Q4_0 weights:
//
//   - a warp owns 16 rows; the 8 warps of a block split K (units of 256 values);
//   - the activations are quantized by quantize() into the mma's B layout; for
//     the K-quants with one scale per column and 256 values (as ggml's CPU
//     code does, q8_K), so that a unit's products add up in integers and meet
//     the float scales once; for Q8_0 and Q4_0 one per 32 (as ggml's q8_1);
//   - each output (row, column) is summed in an order that depends only on K:
//     the same for 1 and for 32 columns, so a 32-column product equals 32
//     one-column ones bit for bit.
//
// Self-contained (CUDA runtime only) so that kernels/cuda/mmv-test.cu tests it
// without ggml; kernels/cuda/ggml-hook.cu puts it into ggml-cuda's mul_mat.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>
#include <type_traits>

#include "orthrus-launch.cuh"

namespace orthrus_mmv {

using orthrus_launch::grid_release;
using orthrus_launch::grid_wait;
using orthrus_launch::launch_kernel;
using orthrus_launch::launch_kernel_as;
using orthrus_launch::prefetch_l2;
using orthrus_launch::use_pdl;

enum class WType { Q4_K, Q6_K, Q8_0, Q4_0 };

// The kernels' variants (the same sums): Plain; Preload, with 2 blocks per SM
// and a unit's weights loaded first (Q4_K, Q6_K, Q4_0); Words, Q8_0's blocks read
// in aligned 4- and 8-byte words instead of 2-byte pieces.
enum class Variant { Plain, Preload, Words };

__host__ __device__ constexpr bool has_variant(WType t, Variant v) {
    return v == Variant::Plain || (v == Variant::Preload && t != WType::Q8_0) || (v == Variant::Words && t == WType::Q8_0);
}

// The variant a product takes unless told otherwise: Q4_K and Q4_0
// preloading, Q8_0 in words, Q6_K plain. Measured on the H200, 2026-12-01
// (mmv-test.cu, 16 columns): preloading makes Q4_K 8-17% quicker on the 8B's
// shapes and Q6_K up to 14% slower; end to end (8B Q4_K_M) the step ratio
// 2.21 plain, 2.06 with Q4_K preloading. Q8_0's words are 11-28% quicker than
// its 2-byte loads at every shape there (the 8B's LM head 377 against 521
// us). Q4_0, 2026-12-04, the 1.7B's shapes: alone, preloading is 3-6% quicker
// on qkv, o and down and 27% slower on gate+up; end to end its 16-row pass
// took 2.26 ms, plain 2.43.
__host__ __device__ constexpr Variant default_variant(WType t) {
    return t == WType::Q4_K || t == WType::Q4_0 ? Variant::Preload
           : t == WType::Q8_0                   ? Variant::Words
                                                : Variant::Plain;
}

constexpr int ROWS = 16;      // rows per warp (the mma's M)
constexpr int WARPS = 8;      // warps per block: RT row tiles, each split over K by WARPS / RT
constexpr int MAX_COLS = 32;  // four n-tiles of 8
constexpr int UNIT = 256;     // values of K per unit of work

// ggml's block layouts (ggml-common.h).
struct block_q8_0 { half d; int8_t qs[32]; };
struct block_q4_K { half2 dm; uint8_t scales[12]; uint8_t qs[128]; };
struct block_q6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; half d; };
struct block_q4_0 { half d; uint8_t qs[16]; };
static_assert(sizeof(block_q8_0) == 34, "q8_0");
static_assert(sizeof(block_q4_K) == 144, "q4_K");
static_assert(sizeof(block_q6_K) == 210, "q6_K");
static_assert(sizeof(block_q4_0) == 18, "q4_0");

// Bytes of one unit (256 values) of a row.
__host__ __device__ constexpr int unit_bytes(WType t) {
    return t == WType::Q4_K ? 144 : t == WType::Q6_K ? 210 : t == WType::Q8_0 ? 8 * 34 : 8 * 18;
}

// An int from a 2-byte-aligned address.
static __device__ __forceinline__ int load_b2(const void * p) {
    const uint16_t * u = (const uint16_t *) p;
    return (int) ((uint32_t) u[0] | ((uint32_t) u[1] << 16));
}

// C += A B, A 16x32 s8 (row g: a0 k[0,4), a2 k[16,20); row g+8: a1, a3, in
// units of the lane's t = lane % 4), B 32x8 s8 (column g: b0, b1), C 16x8 s32
// (c0, c1: row g, columns 2t, 2t+1; c2, c3: row g+8).
static __device__ __forceinline__ void mma_k32(int c[4], int a0, int a1, int a2, int a3, int b0, int b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    (void) c; (void) a0; (void) a1; (void) a2; (void) a3; (void) b0; (void) b1;
    __trap();
#endif
}

// The same with K = 16: A row g a0, row g+8 a1; B column g b0.
static __device__ __forceinline__ void mma_k16(int c[4], int a0, int a1, int b0) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5}, {%6}, {%0, %1, %2, %3};"
        : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
        : "r"(a0), "r"(a1), "r"(b0));
#else
    (void) c; (void) a0; (void) a1; (void) b0;
    __trap();
#endif
}

// The activations, quantized per column, laid out for the mma's B, in pairs
// of 32-value blocks (kb = 2 pr, 2 pr + 1) so that a lane reads both blocks'
// values, sums and scales with one 16-byte load each:
//   - per pair pr and n-tile nt, lane (g, t)'s int4: block 2 pr's two ints of
//     column 8 nt + g, then block 2 pr + 1's (ints 2t, 2t+1 = values 8t..8t+7
//     for Q4_K and Q8_0, whose A rows a lane reads 8 bytes at a time; ints t,
//     t+4 for Q6_K, whose 16-value groups are then one int each, and Q4_0,
//     whose bytes 4t.. hold values 4t.. and 16 + 4t..);
//   - the scales d = max|x|/127 (q = round(x/d)) of the 8 NT columns: per
//     unit of 256 values for the K-quants ([unit][8 NT]); per 32 for Q8_0
//     and Q4_0, as the sums below;
//   - for Q4_K's mins, the sums of q per 32, as int16 (|sum| <= 32 * 127):
//     per unit, n-tile and column, 4 ints, pair p's (block 2p low, 2p + 1
//     high), so that lane t reads its columns 2t, 2t + 1 with two 16-byte
//     loads and multiplies them by a row's mins with dp2a.
// Columns past the last are zeros.
enum class KOrder { Pairs, Halves };

__host__ __device__ constexpr KOrder korder(WType t) {
    return t == WType::Q6_K || t == WType::Q4_0 ? KOrder::Halves : KOrder::Pairs;
}

// Values per activation scale.
__host__ __device__ constexpr int scale_span(WType t) { return t == WType::Q8_0 || t == WType::Q4_0 ? 32 : UNIT; }

// n-tiles of 8 columns: 1, 2 or 4 (17..24 columns take 4, one kernel fewer
// to build for each type, row tiling and variant).
__host__ __device__ constexpr int n_tiles(int ncols) { return ncols <= 8 ? 1 : ncols <= 16 ? 2 : 4; }

static inline size_t acts_bytes(int64_t k, int ncols) {
    const int64_t nkb = k / 32, nt = n_tiles(ncols);
    return (size_t) (nkb * nt * 32 * sizeof(int2) + 2 * nkb * 8 * nt * sizeof(float));
}

struct Acts {
    const int4 * q;     // [nkb / 2][NT][32 lanes]
    const float * d;    // K-quants: [k / 256][8 NT]; Q8_0, Q4_0: as pair_slot lays it out
    const int * qsum;   // Q4_K: [k / 256][NT][8 columns][4 pairs] int16 pairs
};

template <int NT>
static __device__ __forceinline__ Acts acts_at(const void * buf, int nkb) {
    const int4 * q = (const int4 *) buf;
    const float * d = (const float *) (q + (int64_t) nkb / 2 * NT * 32);
    return {q, d, (const int *) (d + (int64_t) nkb * 8 * NT)};
}

// Where column c's value of 32-block kb goes in a per-column array laid out
// as Q8_0's d: per pair and n-tile, lane t's float4 holds columns 8 nt + 2t,
// 2t + 1 of block 2 pr, then of block 2 pr + 1.
template <int NT>
static __device__ __forceinline__ int64_t pair_slot(int kb, int c) {
    return ((int64_t) (kb / 2) * NT + c / 8) * 16 + (c % 8) / 2 * 4 + 2 * (kb % 2) + c % 2;
}

// Span sp of column c (of the 8 NT) into buf, by one warp, from the lane's 8
// consecutive values of it in v (lanes of 32 for a 256 span, 4 lanes for a 32
// block; the others' v zeros).
template <WType T, int NT>
static __device__ __forceinline__ void quantize_values(const float (&v)[8], void * buf, const int nkb, const int sp,
                                                       const int c, const int lane) {
    constexpr int SPAN = scale_span(T);
    constexpr int LANES = SPAN / 8;  // lanes with values
    float amax = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
        amax = fmaxf(amax, fabsf(v[e]));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFF, amax, o));
    }
    const float d = amax / 127.0f;
    int w[2] = {0, 0};
    int sum = 0;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
        const int q = amax == 0.0f ? 0 : (int) roundf(v[e] / d);
        w[e / 4] |= (q & 0xFF) << (8 * (e % 4));
        sum += q;
    }
    // The 32-block's sum of q: its 4 lanes'.
    sum += __shfl_xor_sync(0xFFFFFFFF, sum, 1);
    sum += __shfl_xor_sync(0xFFFFFFFF, sum, 2);
    if (lane >= LANES) {
        return;
    }
    const Acts a = acts_at<NT>(buf, nkb);
    const int kb = sp * (SPAN / 32) + lane / 4;
    const int i = 2 * (lane % 4);  // the first of this lane's two ints in the block
    // The 4 mma lanes of column c, an int4 each; this block's half of them.
    int * lanes = (int *) (a.q + ((int64_t) (kb / 2) * NT + c / 8) * 32 + (c % 8) * 4) + 2 * (kb % 2);
    if (korder(T) == KOrder::Pairs) {
        lanes[4 * (i / 2)] = w[0];
        lanes[4 * (i / 2) + 1] = w[1];
    } else {
        lanes[4 * (i % 4) + i / 4] = w[0];
        lanes[4 * ((i + 1) % 4) + (i + 1) / 4] = w[1];
    }
    if (lane == 0) {
        if (SPAN == 32) {
            ((float *) a.d)[pair_slot<NT>(kb, c)] = d;
        } else {
            ((float *) a.d)[sp * 8 * NT + c] = d;
        }
    }
    if (T == WType::Q4_K && lane % 4 == 0) {
        const int64_t pair = ((int64_t) (sp * NT + c / 8) * 8 + c % 8) * 4 + lane / 8;
        ((int16_t *) a.qsum)[2 * pair + (lane / 4) % 2] = (int16_t) sum;
    }
}

// v = the 8 floats at p (16-byte aligned).
static __device__ __forceinline__ void load8(const float * p, float (&v)[8]) {
    const float4 a = ((const float4 *) p)[0], b = ((const float4 *) p)[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

// The 8 floats at p (16-byte aligned) = v.
static __device__ __forceinline__ void store8(float * p, const float (&v)[8]) {
    ((float4 *) p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    ((float4 *) p)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

// The span sp and column c (of the 8 NT) of this warp, in a grid of one warp
// per (span of values, column) (span_column_grid); false for a warp past
// the last.
template <WType T, int NT>
static __device__ __forceinline__ bool span_column(const int nkb, int & sp, int & c) {
    const int64_t item = (int64_t) blockIdx.x * blockDim.y + threadIdx.y;
    const int nspan = nkb * 32 / scale_span(T);
    if (item >= (int64_t) nspan * 8 * NT) {
        return false;
    }
    sp = (int) (item / (8 * NT));
    c = (int) (item % (8 * NT));
    return true;
}

// The same from memory: span points at the span's values (null: a column
// past the last, zeros).
template <WType T, int NT>
static __device__ __forceinline__ void quantize_span(const float * span, void * buf, const int nkb, const int sp,
                                                     const int c, const int lane) {
    constexpr int LANES = scale_span(T) / 8;
    float v[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    if (span && lane < LANES) {
        load8(span + 8 * lane, v);
    }
    quantize_values<T, NT>(v, buf, nkb, sp, c, lane);
}

// One warp per (span of values, column). Column c (of ncols, from c0) of x is
// x + i1*s1 + i2*s2 + i3*s3, c0 + c = i1 + n1*(i2 + n2*i3).
template <WType T, int NT>
__global__ void __launch_bounds__(256) quantize_kernel(const float * __restrict__ x, void * __restrict__ buf, const int nkb,
                                                       const int c0, const int ncols, const int n1, const int n2,
                                                       const int64_t s1, const int64_t s2, const int64_t s3) {
    constexpr int SPAN = scale_span(T);
    grid_release();
    grid_wait();
    int sp, c;
    if (!span_column<T, NT>(nkb, sp, c)) {
        return;
    }
    const float * span = nullptr;
    if (c < ncols) {
        const int cg = c0 + c;
        const int i1 = cg % n1, i2 = (cg / n1) % n2, i3 = cg / (n1 * n2);
        span = x + i1 * s1 + i2 * s2 + i3 * s3 + (int64_t) SPAN * sp;
    }
    quantize_span<T, NT>(span, buf, nkb, sp, c, threadIdx.x);
}

// 1 / sqrt(mean(x^2) + eps) of a row of k values, from each thread's sum of
// squares ss over its share, by the block's 8 warps (part: 8 shared floats).
// Every thread of the block calls it (a barrier).
static __device__ __forceinline__ float block_rms_scale(float ss, float (&part)[8], int warp, int lane, int k,
                                                        float eps) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        ss += __shfl_xor_sync(0xFFFFFFFF, ss, o);
    }
    if (lane == 0) {
        part[warp] = ss;
    }
    __syncthreads();
    float total = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        total += part[j];
    }
    return rsqrtf(total / (float) k + eps);
}

// Spans of 256 a warp of norm_quantize_kernel holds in registers (k up to
// 8 * 256 * this; longer rows, and Q8_0's and Q4_0's spans of 32, write h and
// read it back).
constexpr int NORM_SPANS = 4;

// RMS norm, its weight and quantize() in one: a block per column c of the 8 NT
// (columns c0 + c of x and h, k = 32 nkb floats each, contiguous): h = x /
// sqrt(mean(x^2) + eps) * w, written to h and quantized by its 8 warps as
// quantize() would quantize h. x may be h. For the K-quants warp w holds
// spans w, w + 8, ... of x (8 values a lane, as quantize_values takes them),
// so that h is quantized from registers, not read back. For a K-quant T,
// buf_q6_K (unless null) also gets h as quantize() quantizes it for Q6_K
// weights: the same values, in Q6_K's order (a second product of h).
template <WType T, int NT>
__global__ void __launch_bounds__(256) norm_quantize_kernel(const float * x, const float * __restrict__ w, const float eps,
                                                            float * h, void * buf, void * buf_q6_K, const int nkb,
                                                            const int c0, const int ncols) {
    constexpr int SPAN = scale_span(T);
    grid_release();
    grid_wait();
    const int c = blockIdx.x;
    const int lane = threadIdx.x, warp = threadIdx.y, tid = 32 * warp + lane;
    const int k = 32 * nkb;
    const int nspan = k / SPAN;
    float * hc = h + (int64_t) (c0 + c) * k;
    const float * xc = x + (int64_t) (c0 + c) * k;
    __shared__ float part[8];
    if (SPAN == UNIT && nspan <= 8 * NORM_SPANS) {
        float v[NORM_SPANS][8];
        float ss = 0.0f;
#pragma unroll
        for (int j = 0; j < NORM_SPANS; ++j) {
            const int sp = warp + 8 * j;
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                v[j][e] = 0.0f;
            }
            if (c < ncols && sp < nspan) {
                const float * u = v[j];
                load8(xc + SPAN * sp + 8 * lane, v[j]);
                ss += u[0] * u[0] + u[1] * u[1] + u[2] * u[2] + u[3] * u[3];
                ss += u[4] * u[4] + u[5] * u[5] + u[6] * u[6] + u[7] * u[7];
            }
        }
        const float scale = block_rms_scale(ss, part, warp, lane, k, eps);
#pragma unroll
        for (int j = 0; j < NORM_SPANS; ++j) {
            const int sp = warp + 8 * j;
            if (sp >= nspan) {
                break;
            }
            if (c < ncols) {
                const float4 * ws = (const float4 *) (w + SPAN * sp + 8 * lane);
                const float4 ga = ws[0], gb = ws[1];
                const float g[8] = {ga.x, ga.y, ga.z, ga.w, gb.x, gb.y, gb.z, gb.w};
#pragma unroll
                for (int e = 0; e < 8; ++e) {
                    v[j][e] = v[j][e] * scale * g[e];
                }
                store8(hc + SPAN * sp + 8 * lane, v[j]);
            }
            quantize_values<T, NT>(v[j], buf, nkb, sp, c, lane);
            if (buf_q6_K) {
                quantize_values<WType::Q6_K, NT>(v[j], buf_q6_K, nkb, sp, c, lane);
            }
        }
        return;
    }
    if (c < ncols) {
        const float4 * xs = (const float4 *) xc;
        float ss = 0.0f;
        for (int i = tid; i < k / 4; i += 256) {
            const float4 v = xs[i];
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
        const float scale = block_rms_scale(ss, part, warp, lane, k, eps);
        const float4 * ws = (const float4 *) w;
        for (int i = tid; i < k / 4; i += 256) {
            const float4 v = xs[i], g = ws[i];
            ((float4 *) hc)[i] = make_float4(v.x * scale * g.x, v.y * scale * g.y, v.z * scale * g.z, v.w * scale * g.w);
        }
        __syncthreads();  // the block's writes of h, read back below
    }
    for (int sp = warp; sp < nspan; sp += 8) {
        quantize_span<T, NT>(c < ncols ? hc + (int64_t) SPAN * sp : nullptr, buf, nkb, sp, c, lane);
        if (SPAN == UNIT && buf_q6_K) {
            quantize_span<WType::Q6_K, NT>(c < ncols ? hc + (int64_t) SPAN * sp : nullptr, buf_q6_K, nkb, sp, c, lane);
        }
    }
}

// SwiGLU and quantize() in one: h = silu(gate) * up (ggml's swiglu, in the
// same float operations) for columns c0 + c of gate and up (gate + col *
// gs, up + col * us) into h (k floats a column, contiguous), quantized from
// registers as quantize() would quantize h. One warp per (span, column), as
// quantize_kernel.
template <WType T, int NT>
__global__ void __launch_bounds__(256) glu_quantize_kernel(const float * __restrict__ gate, const float * __restrict__ up,
                                                           const int64_t gs, const int64_t us, float * __restrict__ h,
                                                           void * __restrict__ buf, const int nkb, const int c0,
                                                           const int ncols) {
    constexpr int SPAN = scale_span(T);
    constexpr int LANES = SPAN / 8;
    grid_release();
    grid_wait();
    int sp, c;
    if (!span_column<T, NT>(nkb, sp, c)) {
        return;
    }
    const int lane = threadIdx.x;
    float v[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    if (c < ncols && lane < LANES) {
        const int64_t col = c0 + c, at = (int64_t) SPAN * sp + 8 * lane;
        float g[8], u[8];
        load8(gate + col * gs + at, g);
        load8(up + col * us + at, u);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            v[e] = g[e] / (1.0f + expf(-g[e])) * u[e];
        }
        store8(h + col * (32 * (int64_t) nkb) + at, v);
    }
    quantize_values<T, NT>(v, buf, nkb, sp, c, lane);
}

// The lane's B fragments of blocks 2 pr (x, y) and 2 pr + 1 (z, w), n-tile nt.
template <int NT>
static __device__ __forceinline__ int4 b_frags(const Acts & y, int pr, int nt, int lane) {
    return y.q[((int64_t) pr * NT + nt) * 32 + lane];
}

// Lane t's columns 2t, 2t+1 (of n-tile nt) of blocks 2 pr and 2 pr + 1 in a
// per-column array laid out as pair_slot lays it out (Q8_0's d).
template <int NT, typename E4, typename E>
static __device__ __forceinline__ E4 pair_cols(const E * v, int pr, int nt, int t) {
    return *(const E4 *) (v + (((int64_t) pr * NT + nt) * 4 + t) * 4);
}

// Half h of a pair's int4 / float4 (as b_frags and pair_cols load them):
// block 2 pr's (x, y) for h = 0, block 2 pr + 1's (z, w) for h = 1.
static __device__ __forceinline__ int2 pair_half(const int4 & v, int h) {
    return h == 0 ? make_int2(v.x, v.y) : make_int2(v.z, v.w);
}
static __device__ __forceinline__ float2 pair_half(const float4 & v, int h) {
    return h == 0 ? make_float2(v.x, v.y) : make_float2(v.z, v.w);
}

// Two columns' (2t, 2t+1 of n-tile nt) entries of a per-unit array.
template <int NT, typename E, typename E2>
static __device__ __forceinline__ E2 col_pair(const E * v, int i, int nt, int t) {
    return *(const E2 *) (v + i * 8 * NT + 8 * nt + 2 * t);
}

// Q4_K's 6-bit scales and mins of sub-blocks 0..7 (get_scale_min_k4 in
// ggml-quants.c), a byte each (sc[0]: sub-blocks 0..3, sc[1]: 4..7; m the
// same), from the block's 12 scale bytes as three ints: for j < 4, sc = s[j]
// & 63 and m = s[j + 4] & 63; else the low nibbles (sc) or high (m) of s[j +
// 4] with the top 2 bits of s[j - 4] (sc) or s[j] (m) above them.
static __device__ __forceinline__ void q4_K_scales_mins(int s0, int s1, int s2, int sc[2], int m[2]) {
    sc[0] = s0 & 0x3F3F3F3F;
    m[0] = s1 & 0x3F3F3F3F;
    sc[1] = (s2 & 0x0F0F0F0F) | ((s0 >> 2) & 0x30303030);
    m[1] = ((s2 >> 4) & 0x0F0F0F0F) | ((s1 >> 2) & 0x30303030);
}

// Byte j % 4 of x, as an int.
static __device__ __forceinline__ int byte_of(int x, int j) {
    return (int) __byte_perm((unsigned) x, 0u, 0x4440u | (unsigned) (j % 4));
}

// sum_j m_j s_j over a unit's 8 sub-blocks: m, a row's mins (as
// q4_K_scales_mins gives them); s, a column's 4 int16 pairs (Acts::qsum).
static __device__ __forceinline__ int q4_K_mins_dot(const int m[2], const int4 & s) {
    int r = __dp2a_lo(s.x, m[0], 0);
    r = __dp2a_hi(s.y, m[0], r);
    r = __dp2a_lo(s.z, m[1], r);
    return __dp2a_hi(s.w, m[1], r);
}

// Unit u (values 256u .. 256u+255) of rows g (its block xa) and g+8 (xb). A
// lane holds values 8t..8t+7 of each 32-value sub-block (one 8-byte load of
// nibbles serves sub-blocks 2p and 2p+1). In integers: sum_j sc_j (q . a)_j,
// and sum_j m_j (sum a)_j with dp2a; then d, dmin and the column's scale. PRELOAD: all the unit's weight loads are
// issued before its first product (the registers for that come from fewer
// blocks per SM; see mmv_kernel).
template <int NT, bool PRELOAD>
static __device__ __forceinline__ void unit_q4_K(const block_q4_K * xa, const block_q4_K * xb, int u, const Acts & y,
                                                 float acc[NT][4], int lane, int t) {
    // d, dmin and the 12 scale bytes: a block's first 16 bytes, in one load
    // (blocks of 144 bytes from 16-byte aligned rows).
    const int4 ha = *(const int4 *) xa;
    const int4 hb = *(const int4 *) xb;
    int2 pre_a[4], pre_b[4];
    if (PRELOAD) {
#pragma unroll
        for (int p = 0; p < 4; ++p) {
            pre_a[p] = *(const int2 *) (xa->qs + 32 * p + 8 * t);
            pre_b[p] = *(const int2 *) (xb->qs + 32 * p + 8 * t);
        }
    }
    int sca[2], mna[2], scb[2], mnb[2];
    q4_K_scales_mins(ha.y, ha.z, ha.w, sca, mna);
    q4_K_scales_mins(hb.y, hb.z, hb.w, scb, mnb);
    int dot[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        dot[nt][0] = dot[nt][1] = dot[nt][2] = dot[nt][3] = 0;
    }
#pragma unroll
    for (int p = 0; p < 4; ++p) {
        const int2 qa = PRELOAD ? pre_a[p] : *(const int2 *) (xa->qs + 32 * p + 8 * t);
        const int2 qb = PRELOAD ? pre_b[p] : *(const int2 *) (xb->qs + 32 * p + 8 * t);
        const int pr = 4 * u + p;  // the pair of the unit's blocks 2p and 2p+1
        int4 b4[NT];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            b4[nt] = b_frags<NT>(y, pr, nt, lane);
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int j = 2 * p + h;
            const int a0 = (qa.x >> (4 * h)) & 0x0F0F0F0F;
            const int a1 = (qb.x >> (4 * h)) & 0x0F0F0F0F;
            const int a2 = (qa.y >> (4 * h)) & 0x0F0F0F0F;
            const int a3 = (qb.y >> (4 * h)) & 0x0F0F0F0F;
            const int sa = byte_of(sca[j / 4], j), sb = byte_of(scb[j / 4], j);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const int2 b = pair_half(b4[nt], h);
                int c[4] = {0, 0, 0, 0};
                mma_k32(c, a0, a1, a2, a3, b.x, b.y);
                dot[nt][0] += sa * c[0]; dot[nt][1] += sa * c[1];
                dot[nt][2] += sb * c[2]; dot[nt][3] += sb * c[3];
            }
        }
    }
    const float2 dma = __half22float2(*(const half2 *) &ha.x);
    const float2 dmb = __half22float2(*(const half2 *) &hb.x);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        // Columns 2t and 2t + 1's sums of q, pairs 0..3 each.
        const int4 * sums = (const int4 *) (y.qsum + ((int64_t) (u * NT + nt) * 8 + 2 * t) * 4);
        const int4 s0 = sums[0], s1 = sums[1];
        const float2 d = col_pair<NT, float, float2>(y.d, u, nt, t);
        acc[nt][0] += d.x * (dma.x * (float) dot[nt][0] - dma.y * (float) q4_K_mins_dot(mna, s0));
        acc[nt][1] += d.y * (dma.x * (float) dot[nt][1] - dma.y * (float) q4_K_mins_dot(mna, s1));
        acc[nt][2] += d.x * (dmb.x * (float) dot[nt][2] - dmb.y * (float) q4_K_mins_dot(mnb, s0));
        acc[nt][3] += d.y * (dmb.x * (float) dot[nt][3] - dmb.y * (float) q4_K_mins_dot(mnb, s1));
    }
}

// u - 32 in each byte, for bytes u of 0..63 (Q6_K's 6-bit values), as
// __vsubss4(u, 0x20202020) gives it (no byte saturates) in fewer
// instructions: bit 5 flipped (u - 32 for u >= 32, u + 32 below), and for u <
// 32 bits 6 and 7 set too (u + 32 - 64 in two's complement).
static __device__ __forceinline__ int q6_minus_32(int u) {
    const unsigned m = ~(unsigned) u & 0x20202020u;
    return (int) (((unsigned) u ^ 0x20202020u) | (m << 1) | (m << 2));
}

// Byte j % 4 of x, sign-extended.
static __device__ __forceinline__ int signed_byte(int x, int j) {
    return (int) ((unsigned) x << (8 * (3 - j % 4))) >> 24;
}

// Q6_K: 16 groups of 16 values, each with its own scale, so K = 16 products;
// a lane holds values 4t..4t+3 of each group. In integers: sum_g sc_g (q . a)_g.
template <int NT>
static __device__ __forceinline__ void unit_q6_K(const char * wa, const char * wb, int u, const Acts & y,
                                                 float acc[NT][4], int lane, int t) {
    const block_q6_K * xa = (const block_q6_K *) wa + u;
    const block_q6_K * xb = (const block_q6_K *) wb + u;
    int dot[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        dot[nt][0] = dot[nt][1] = dot[nt][2] = dot[nt][3] = 0;
    }
#pragma unroll
    for (int n = 0; n < 2; ++n) {
        int la[2][2], lb[2][2], ha[2], hb[2];  // [h][ql half]
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int off = 16 * h + 4 * t;
            la[h][0] = load_b2(xa->ql + 64 * n + off);
            la[h][1] = load_b2(xa->ql + 64 * n + 32 + off);
            lb[h][0] = load_b2(xb->ql + 64 * n + off);
            lb[h][1] = load_b2(xb->ql + 64 * n + 32 + off);
            ha[h] = load_b2(xa->qh + 32 * n + off);
            hb[h] = load_b2(xb->qh + 32 * n + off);
        }
        const int sca8 = load_b2(xa->scales + 8 * n), sca8b = load_b2(xa->scales + 8 * n + 4);
        const int scb8 = load_b2(xb->scales + 8 * n), scb8b = load_b2(xb->scales + 8 * n + 4);
        int4 b4[NT];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            // Blocks 8u + 4n + q in pairs: q even loads both.
            int2 b[NT];
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                if (q % 2 == 0) {
                    b4[nt] = b_frags<NT>(y, 4 * u + 2 * n + q / 2, nt, lane);
                }
                b[nt] = pair_half(b4[nt], q % 2);
            }
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int va = q6_minus_32(((la[h][q & 1] >> (4 * (q >> 1))) & 0x0F0F0F0F) |
                                           (((ha[h] >> (2 * q)) & 0x03030303) << 4));
                const int vb = q6_minus_32(((lb[h][q & 1] >> (4 * (q >> 1))) & 0x0F0F0F0F) |
                                           (((hb[h] >> (2 * q)) & 0x03030303) << 4));
                const int si = 2 * q + h;  // the scale's index within this half's 8
                const int sca = signed_byte(si < 4 ? sca8 : sca8b, si);
                const int scb = signed_byte(si < 4 ? scb8 : scb8b, si);
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
                    int c[4] = {0, 0, 0, 0};
                    mma_k16(c, va, vb, h == 0 ? b[nt].x : b[nt].y);
                    dot[nt][0] += sca * c[0]; dot[nt][1] += sca * c[1];
                    dot[nt][2] += scb * c[2]; dot[nt][3] += scb * c[3];
                }
            }
        }
    }
    const float da = __half2float(xa->d), db = __half2float(xb->d);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        const float2 d = col_pair<NT, float, float2>(y.d, u, nt, t);
        acc[nt][0] += d.x * (da * (float) dot[nt][0]);
        acc[nt][1] += d.y * (da * (float) dot[nt][1]);
        acc[nt][2] += d.x * (db * (float) dot[nt][2]);
        acc[nt][3] += d.y * (db * (float) dot[nt][3]);
    }
}

// The 8 bytes at p + o of a Q8_0 unit p (8 blocks, 272 bytes, 16-byte
// aligned), o = 34 i + 2 + 8 t (block i's values 8t..8t+7), in aligned words:
// for odd i one 8-byte load (o % 8 == 0, i = 3, 7) or two 4-byte ones; for
// even i (o % 4 == 2) three 4-byte ones and two funnel shifts. (i is known at
// compile time where the caller's loop is unrolled.)
static __device__ __forceinline__ int2 q8_0_words(const char * p, int i, int o) {
    if (i % 2 == 1) {
        if ((34 * i + 2) % 8 == 0) {
            return *(const int2 *) (p + o);
        }
        const int * w = (const int *) (p + o);
        return make_int2(w[0], w[1]);
    }
    const int * w = (const int *) (p + o - 2);
    const int w0 = w[0], w1 = w[1], w2 = w[2];
    return make_int2((int) __funnelshift_r((unsigned) w0, (unsigned) w1, 16),
                     (int) __funnelshift_r((unsigned) w1, (unsigned) w2, 16));
}

// For the types with a scale per 32 values on both sides (Q8_0, Q4_0): the
// activations' B fragments and scales of pair pr (blocks 2 pr and 2 pr + 1),
// every n-tile.
template <int NT>
static __device__ __forceinline__ void pair_acts(const Acts & y, int pr, int lane, int t, int4 b4[NT], float4 d4[NT]) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        b4[nt] = b_frags<NT>(y, pr, nt, lane);
        d4[nt] = pair_cols<NT, float4>(y.d, pr, nt, t);
    }
}

// acc += the products of one 32-value block, block h of the pair pair_acts
// loaded: A rows g (a0, a2; weight scale da) and g + 8 (a1, a3; db), each sum
// times both sides' scales.
template <int NT>
static __device__ __forceinline__ void block32_products(float acc[NT][4], int a0, int a1, int a2, int a3, float da,
                                                        float db, const int4 b4[NT], const float4 d4[NT], int h) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        const int2 b = pair_half(b4[nt], h);
        const float2 d = pair_half(d4[nt], h);
        int c[4] = {0, 0, 0, 0};
        mma_k32(c, a0, a1, a2, a3, b.x, b.y);
        acc[nt][0] += (da * d.x) * (float) c[0];
        acc[nt][1] += (da * d.y) * (float) c[1];
        acc[nt][2] += (db * d.x) * (float) c[2];
        acc[nt][3] += (db * d.y) * (float) c[3];
    }
}

// Q8_0: 8 blocks of 32 per unit, 2-byte aligned (a unit 16-byte aligned: rows
// of whole units from 16-byte aligned weights); a scale per 32 on both sides.
// WORDS: the values read by q8_0_words, else 2 bytes at a time.
template <int NT, bool WORDS>
static __device__ __forceinline__ void unit_q8_0(const char * wa, const char * wb, int u, const Acts & y,
                                                 float acc[NT][4], int lane, int t) {
    int4 b4[NT];
    float4 d4[NT];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int kb = 8 * u + i;
        if (i % 2 == 0) {
            pair_acts<NT>(y, kb / 2, lane, t, b4, d4);
        }
        const block_q8_0 * xa = (const block_q8_0 *) wa + kb;
        const block_q8_0 * xb = (const block_q8_0 *) wb + kb;
        int a0, a1, a2, a3;
        if (WORDS) {
            const int o = 34 * i + 2 + 8 * t;
            const int2 qa = q8_0_words(wa + 272 * u, i, o), qb = q8_0_words(wb + 272 * u, i, o);
            a0 = qa.x; a2 = qa.y; a1 = qb.x; a3 = qb.y;
        } else {
            a0 = load_b2(xa->qs + 8 * t);
            a2 = load_b2(xa->qs + 8 * t + 4);
            a1 = load_b2(xb->qs + 8 * t);
            a3 = load_b2(xb->qs + 8 * t + 4);
        }
        block32_products<NT>(acc, a0, a1, a2, a3, __half2float(xa->d), __half2float(xb->d), b4, d4, i % 2);
    }
}

// The 4 bytes at p + 18 i + 2 + 4 t of a Q4_0 unit p (8 blocks of 18 bytes,
// 16-byte aligned): block i's bytes 4t..4t+3, values 4t.. (low nibbles) and
// 16 + 4t.. (high); an aligned load for odd i, two and a funnel shift for even
// i. (i is known at compile time where the caller's loop is unrolled.)
static __device__ __forceinline__ int q4_0_word(const char * p, int i, int t) {
    const int o = 18 * i + 2 + 4 * t;
    if (i % 2 == 1) {
        return *(const int *) (p + o);
    }
    const int * w = (const int *) (p + o - 2);
    return (int) __funnelshift_r((unsigned) w[0], (unsigned) w[1], 16);
}

// Q4_0: 8 blocks of 32 per unit (a unit 16-byte aligned, as Q8_0's), a scale
// per 32 on both sides. Values in the mma's own K order (KOrder::Halves): lane
// t's word of bytes 4t..4t+3 holds its A values for K 4t.. (low nibbles) and
// 16 + 4t.. (high), each stored plus 8, made int8 by a bytewise subtraction.
// PRELOAD: all the unit's weight loads are issued before its first product.
template <int NT, bool PRELOAD>
static __device__ __forceinline__ void unit_q4_0(const char * wa, const char * wb, int u, const Acts & y,
                                                 float acc[NT][4], int lane, int t) {
    const char * pa = wa + 144 * (int64_t) u;
    const char * pb = wb + 144 * (int64_t) u;
    int pre_a[PRELOAD ? 8 : 1], pre_b[PRELOAD ? 8 : 1];
    half pre_da[PRELOAD ? 8 : 1], pre_db[PRELOAD ? 8 : 1];
    if (PRELOAD) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            pre_a[i] = q4_0_word(pa, i, t);
            pre_b[i] = q4_0_word(pb, i, t);
            pre_da[i] = *(const half *) (pa + 18 * i);
            pre_db[i] = *(const half *) (pb + 18 * i);
        }
    }
    int4 b4[NT];
    float4 d4[NT];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        if (i % 2 == 0) {
            pair_acts<NT>(y, 4 * u + i / 2, lane, t, b4, d4);
        }
        const int qa = PRELOAD ? pre_a[i] : q4_0_word(pa, i, t);
        const int qb = PRELOAD ? pre_b[i] : q4_0_word(pb, i, t);
        const float da = __half2float(PRELOAD ? pre_da[i] : *(const half *) (pa + 18 * i));
        const float db = __half2float(PRELOAD ? pre_db[i] : *(const half *) (pb + 18 * i));
        const int a0 = (int) __vsub4((unsigned) qa & 0x0F0F0F0Fu, 0x08080808u);
        const int a2 = (int) __vsub4(((unsigned) qa >> 4) & 0x0F0F0F0Fu, 0x08080808u);
        const int a1 = (int) __vsub4((unsigned) qb & 0x0F0F0F0Fu, 0x08080808u);
        const int a3 = (int) __vsub4(((unsigned) qb >> 4) & 0x0F0F0F0Fu, 0x08080808u);
        block32_products<NT>(acc, a0, a1, a2, a3, da, db, b4, d4, i % 2);
    }
}

// The sums of a block's row tile (the warps' acc, warp = ks RT + rt) into
// dst: the K splits' partial sums added in the order of the splits. Every
// warp of the tile adds and stores a share of its sums (its first warp alone
// took 1.6x as long at 32 columns: NT * 4 sums of KS partials a lane). Every
// warp of the block calls it (a barrier).
template <int NT, int RT>
static __device__ __forceinline__ void store_tile(const float acc[NT][4], float (*part)[NT * 4][32], const float * add,
                                                  float * dst, int row0, int nrows, int ncols, int64_t dst_col_stride,
                                                  int warp, int lane) {
    constexpr int KS = WARPS / RT;
    constexpr int SUMS = NT * 4 * 32;  // a tile's sums, (nt, i, lane) as acc holds them
    const int rt = warp % RT, ks = warp / RT;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            part[warp][nt * 4 + i][lane] = acc[nt][i];
        }
    }
    __syncthreads();
    for (int e = ks * 32 + lane; e < SUMS; e += KS * 32) {
        const int v_at = e / 32, l = e % 32;  // the sum's nt * 4 + i and lane
        float v = part[rt][v_at][l];
#pragma unroll
        for (int j = 1; j < KS; ++j) {
            v += part[j * RT + rt][v_at][l];
        }
        const int i = v_at % 4, g = l / 4, t = l % 4;
        const int row = row0 + g + 8 * (i / 2);
        const int col = 8 * (v_at / 4) + 2 * t + (i % 2);
        if (row < nrows && col < ncols) {
            const int64_t at = (int64_t) col * dst_col_stride + row;
            dst[at] = add ? v + add[at] : v;
        }
    }
}

// dst[col * dst_col_stride + row] = sum_k w[row][k] * x[col][k] (+ add[the
// same index], when add is not null; add may be dst) for rows < nrows, cols <
// ncols; w rows of row_bytes; the activations as quantize_kernel left them.
// A block has RT tiles of 16 rows, which read the same activations (through
// L1); the WARPS / RT warps of a tile split K.
//
// V == Preload (Q4_K, Q6_K): 2 blocks per SM instead of 3 or 4, whose registers
// let a warp issue a whole unit's weight loads before its first product
// (Q4_K asks for it explicitly; the compiler may interleave them with the
// products otherwise, one pair of sub-blocks' loads after the other's use).
// Four n-tiles (17..32 columns) hold twice the sums of two: 2 blocks per SM
// too, so that they stay in registers.
template <WType T, int NT, int RT, Variant V>
__global__ void __launch_bounds__(32 * WARPS, V == Variant::Preload || NT == 4 ? 2 : NT == 1 ? 4 : 3) mmv_kernel(
        const char * __restrict__ w, const void * __restrict__ acts, const float * add, float * dst,
        const int units, const int nrows, const int ncols, const int64_t row_bytes, const int64_t dst_col_stride) {
    const int lane = threadIdx.x;
    const int warp = threadIdx.y;
    const int g = lane / 4;
    const int t = lane % 4;
    constexpr int KS = WARPS / RT;  // warps per row tile
    const int rt = warp % RT, ks = warp / RT;
    const int row0 = (blockIdx.x * RT + rt) * ROWS;

    const char * wa = w + (int64_t) min(row0 + g, nrows - 1) * row_bytes;
    const char * wb = w + (int64_t) min(row0 + g + 8, nrows - 1) * row_bytes;
    const Acts y = acts_at<NT>(acts, units * (UNIT / 32));
    // The first unit's weights into L2 while the kernel before finishes
    // (PDL), then the wait for the activations it wrote.
    if (ks < units) {
        const int64_t at = (int64_t) ks * unit_bytes(T) + min(96 * t, unit_bytes(T) - 1);
        prefetch_l2(wa + at);
        prefetch_l2(wb + at);
    }
    grid_wait();

    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    }
    for (int u = ks; u < units; u += KS) {
        if (T == WType::Q4_K) {
            unit_q4_K<NT, V == Variant::Preload>((const block_q4_K *) wa + u, (const block_q4_K *) wb + u, u, y, acc,
                                                 lane, t);
        } else if (T == WType::Q6_K) {
            unit_q6_K<NT>(wa, wb, u, y, acc, lane, t);
        } else if (T == WType::Q4_0) {
            unit_q4_0<NT, V == Variant::Preload>(wa, wb, u, y, acc, lane, t);
        } else {
            unit_q8_0<NT, V == Variant::Words>(wa, wb, u, y, acc, lane, t);
        }
    }

    grid_release();
    __shared__ float part[WARPS][NT * 4][32];
    store_tile<NT, RT>(acc, part, add, dst, row0, nrows, ncols, dst_col_stride, warp, lane);
}

// How a product is launched: rt row tiles of 16 per block (1, 2 or 4, which
// share the activations' reads; a product's sums depend on it, as its tiles
// split K in WARPS / rt, not on its columns), the variant, and whether PDL.
struct Plan {
    int rt = 1;
    Variant variant = Variant::Plain;
    bool pdl = true;  // the product itself with PDL when use_pdl() (its quantizing: when use_pdl())
};

template <WType T, int RT, int NT>
static void launch_nt(const void * w, const void * acts, const float * add, float * dst, int64_t k, int64_t nrows,
                      int ncols, int64_t row_bytes, int64_t dst_col_stride, const Plan & plan, cudaStream_t stream) {
    const dim3 block(32, WARPS);
    const dim3 grid((unsigned) ((nrows + ROWS * RT - 1) / (ROWS * RT)));
    const int units = (int) (k / UNIT);
    const char * wc = (const char *) w;
    const int nr = (int) nrows;
    const bool pdl = use_pdl() && plan.pdl;
    const auto go = [&](auto kernel) {
        launch_kernel_as(pdl, kernel, grid, block, 0, stream, wc, acts, add, dst, units, nr, ncols, row_bytes,
                         dst_col_stride);
    };
    if constexpr (has_variant(T, Variant::Preload)) {
        if (plan.variant == Variant::Preload) {
            go(mmv_kernel<T, NT, RT, Variant::Preload>);
            return;
        }
    }
    if constexpr (has_variant(T, Variant::Words)) {
        if (plan.variant == Variant::Words) {
            go(mmv_kernel<T, NT, RT, Variant::Words>);
            return;
        }
    }
    go(mmv_kernel<T, NT, RT, Variant::Plain>);
}

// f(std::integral_constant<int, n_tiles(ncols)>()).
template <typename F>
static void with_n_tiles(int ncols, F && f) {
    switch (n_tiles(ncols)) {
        case 1: f(std::integral_constant<int, 1>()); break;
        case 2: f(std::integral_constant<int, 2>()); break;
        default: f(std::integral_constant<int, 4>()); break;
    }
}

template <WType T, int RT>
static void launch_tiles(const void * w, const void * acts, const float * add, float * dst, int64_t k, int64_t nrows,
                         int ncols, int64_t row_bytes, int64_t dst_col_stride, const Plan & plan, cudaStream_t stream) {
    with_n_tiles(ncols, [&](auto nt) {
        launch_nt<T, RT, decltype(nt)::value>(w, acts, add, dst, k, nrows, ncols, row_bytes, dst_col_stride, plan,
                                              stream);
    });
}

template <WType T>
static void launch_type(const void * w, const void * acts, const float * add, float * dst, int64_t k, int64_t nrows,
                        int ncols, int64_t row_bytes, int64_t dst_col_stride, const Plan & plan, cudaStream_t stream) {
    switch (plan.rt) {
        case 2: launch_tiles<T, 2>(w, acts, add, dst, k, nrows, ncols, row_bytes, dst_col_stride, plan, stream); break;
        case 4: launch_tiles<T, 4>(w, acts, add, dst, k, nrows, ncols, row_bytes, dst_col_stride, plan, stream); break;
        default: launch_tiles<T, 1>(w, acts, add, dst, k, nrows, ncols, row_bytes, dst_col_stride, plan, stream); break;
    }
}

// Row tiles a block for a product of nrows rows: 2 from 12288 rows (the
// gate+up stacks, the LM heads), else 1. Measured on an H200, 2026-12-01
// (mmv-test.cu, 16 columns): 2 tiles are 4-12% quicker there and 10-45%
// slower on the qkv, o and down shapes. By rows alone, so that a product's
// sums do not depend on its columns.
static inline int row_tiles(int64_t nrows) {
    return nrows >= 12288 ? 2 : 1;
}

// Whether the kernel takes rows of k values: whole units of 256 (a launch
// then takes 1..MAX_COLS columns).
static inline bool supported(int64_t k) {
    return k > 0 && k % UNIT == 0;
}

// Blocks of 8 warps, one warp per (span of values, column of the n-tiles),
// for k values a column (see span_column).
template <WType T>
static dim3 span_column_grid(int64_t k, int ncols) {
    const int64_t items = k / scale_span(T) * 8 * n_tiles(ncols);
    return dim3((unsigned) ((items + 7) / 8));
}

template <WType T>
static void quantize_type(const float * x, int64_t k, int c0, int ncols, int n1, int n2, int64_t s1, int64_t s2,
                          int64_t s3, void * buf, cudaStream_t stream) {
    const int nkb = (int) (k / 32);
    with_n_tiles(ncols, [&](auto n) {
        launch_kernel(quantize_kernel<T, decltype(n)::value>, span_column_grid<T>(k, ncols), dim3(32, 8), 0, stream, x,
                      buf, nkb, c0, ncols, n1, n2, s1, s2, s3);
    });
}

template <WType T>
static void norm_quantize_type(const float * x, const float * w, float eps, int64_t k, int c0, int ncols, float * h,
                               void * buf, void * buf_q6_K, cudaStream_t stream) {
    const int nkb = (int) (k / 32);
    const int nt = n_tiles(ncols);
    const dim3 block(32, 8);
    const dim3 grid((unsigned) (8 * nt));
    with_n_tiles(ncols, [&](auto n) {
        launch_kernel(norm_quantize_kernel<T, decltype(n)::value>, grid, block, 0, stream, x, w, eps, h, buf,
                      buf_q6_K, nkb, c0, ncols);
    });
}

template <WType T>
static void glu_quantize_type(const float * gate, const float * up, int64_t gs, int64_t us, int64_t k, int c0,
                              int ncols, float * h, void * buf, cudaStream_t stream) {
    const int nkb = (int) (k / 32);
    with_n_tiles(ncols, [&](auto n) {
        launch_kernel(glu_quantize_kernel<T, decltype(n)::value>, span_column_grid<T>(k, ncols), dim3(32, 8), 0,
                      stream, gate, up, gs, us, h, buf, nkb, c0, ncols);
    });
}

// h = silu(gate) * up for columns c0 .. c0 + ncols - 1 (1 to MAX_COLS) of
// gate and up (k floats each, gs and us floats apart) and h (k floats a
// column, contiguous); then h quantized into buf as quantize() would quantize
// it, for a product with weights of `type`. gate, up and h 16-byte aligned,
// gs and us multiples of 4. Asynchronous on `stream`.
static inline void glu_quantize(WType type, const float * gate, const float * up, int64_t gs, int64_t us, int64_t k,
                                int c0, int ncols, float * h, void * buf, cudaStream_t stream) {
    switch (type) {
        case WType::Q4_K: glu_quantize_type<WType::Q4_K>(gate, up, gs, us, k, c0, ncols, h, buf, stream); break;
        case WType::Q6_K: glu_quantize_type<WType::Q6_K>(gate, up, gs, us, k, c0, ncols, h, buf, stream); break;
        case WType::Q8_0: glu_quantize_type<WType::Q8_0>(gate, up, gs, us, k, c0, ncols, h, buf, stream); break;
        case WType::Q4_0: glu_quantize_type<WType::Q4_0>(gate, up, gs, us, k, c0, ncols, h, buf, stream); break;
    }
}

// h = x / sqrt(mean(x^2) + eps) * w for columns c0 .. c0 + ncols - 1 (1 to
// MAX_COLS) of x and h, k floats each (whole units), contiguous; then h
// quantized into buf as quantize() would quantize it, for a product with
// weights of `type`. x, w and h 16-byte aligned; x may be h. buf_q6_K: null,
// or (for Q4_K, whose values differ from Q6_K's in order only) where h is
// also quantized as for Q6_K weights, acts_bytes(k, ncols). Asynchronous on
// `stream`.
static inline void norm_quantize(WType type, const float * x, const float * w, float eps, int64_t k, int c0, int ncols,
                                 float * h, void * buf, cudaStream_t stream, void * buf_q6_K = nullptr) {
    switch (type) {
        case WType::Q4_K: norm_quantize_type<WType::Q4_K>(x, w, eps, k, c0, ncols, h, buf, buf_q6_K, stream); break;
        case WType::Q6_K: norm_quantize_type<WType::Q6_K>(x, w, eps, k, c0, ncols, h, buf, nullptr, stream); break;
        case WType::Q8_0: norm_quantize_type<WType::Q8_0>(x, w, eps, k, c0, ncols, h, buf, nullptr, stream); break;
        case WType::Q4_0: norm_quantize_type<WType::Q4_0>(x, w, eps, k, c0, ncols, h, buf, nullptr, stream); break;
    }
}

// Quantizes ncols columns of k floats, c0.. of x's (column c at
// x + i1*s1 + i2*s2 + i3*s3 with c = i1 + n1*(i2 + n2*i3), strides in floats,
// x and the strides 16-byte aligned), into buf (acts_bytes(k, ncols)) for a
// product with weights of `type`. Asynchronous on `stream`.
static inline void quantize(WType type, const float * x, int64_t k, int c0, int ncols, int64_t n1, int64_t n2,
                            int64_t s1, int64_t s2, int64_t s3, void * buf, cudaStream_t stream) {
    const int a = (int) n1, b = (int) n2;
    switch (type) {
        case WType::Q4_K: quantize_type<WType::Q4_K>(x, k, c0, ncols, a, b, s1, s2, s3, buf, stream); break;
        case WType::Q6_K: quantize_type<WType::Q6_K>(x, k, c0, ncols, a, b, s1, s2, s3, buf, stream); break;
        case WType::Q8_0: quantize_type<WType::Q8_0>(x, k, c0, ncols, a, b, s1, s2, s3, buf, stream); break;
        case WType::Q4_0: quantize_type<WType::Q4_0>(x, k, c0, ncols, a, b, s1, s2, s3, buf, stream); break;
    }
}

// w: nrows rows of k values of type `type` (row_bytes apart); acts: what
// quantize() wrote for these ncols columns; dst: ncols columns of nrows floats
// (dst_col_stride apart); add: null, or what to add to dst, laid out as dst
// (a residual connection; it may be dst itself). plan: see Plan; a variant the
// type lacks is Plain. Asynchronous on `stream`.
static inline void launch(WType type, const void * w, const void * acts, const float * add, float * dst, int64_t k,
                          int64_t nrows, int ncols, int64_t row_bytes, int64_t dst_col_stride, cudaStream_t stream,
                          const Plan & plan = Plan()) {
    switch (type) {
        case WType::Q4_K: launch_type<WType::Q4_K>(w, acts, add, dst, k, nrows, ncols, row_bytes, dst_col_stride, plan, stream); break;
        case WType::Q6_K: launch_type<WType::Q6_K>(w, acts, add, dst, k, nrows, ncols, row_bytes, dst_col_stride, plan, stream); break;
        case WType::Q8_0: launch_type<WType::Q8_0>(w, acts, add, dst, k, nrows, ncols, row_bytes, dst_col_stride, plan, stream); break;
        case WType::Q4_0: launch_type<WType::Q4_0>(w, acts, add, dst, k, nrows, ncols, row_bytes, dst_col_stride, plan, stream); break;
    }
}

}  // namespace orthrus_mmv
