// Quantized weights times 1 to 16 columns of activations, on tensor cores.
//
// ggml-cuda multiplies a quantized matrix by up to 8 columns with its
// matrix-vector kernel (MMVQ), whose cost grows with every column (it decodes
// each weight block again for each column), and by more with its tiled matmul
// (MMQ), whose tiles and stream-k split are sized for large batches. Orthrus's
// passes are 16 columns (a block of drafts), so both views pay 1.8x a one-token
// pass there. This kernel reads each weight once and multiplies it by all the
// columns with int8 mma (m16n8k32, m16n8k16 for Q6_K's 16-value scale groups):
//
//   - a warp owns 16 rows; the 8 warps of a block split K (units of 256 values);
//   - activations are ggml's q8_1 blocks (quantize_row_q8_1_cuda), one row of
//     blocks per column; columns past the last are read as the last (their
//     results are computed and never written, so no bounds checks in the loop);
//   - each output (row, column) is summed in an order that depends only on K:
//     the same for 1 and for 16 columns, so a 16-column product equals 16
//     one-column ones bit for bit.
//
// Self-contained (CUDA runtime only) so that kernels/cuda/mmv-test.cu tests it
// without ggml; kernels/cuda/ggml-hook.cu puts it into ggml-cuda's mul_mat.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>

namespace orthrus_mmv {

enum class WType { Q4_K, Q6_K, Q8_0 };

constexpr int ROWS = 16;      // rows per warp (the mma's M)
constexpr int WARPS = 8;      // warps per block, splitting K
constexpr int MAX_COLS = 16;  // two n-tiles of 8
constexpr int UNIT = 256;     // values of K per unit of work

// ggml's block layouts (ggml-common.h).
struct block_q8_1 { half2 ds; int8_t qs[32]; };
struct block_q8_0 { half d; int8_t qs[32]; };
struct block_q4_K { half2 dm; uint8_t scales[12]; uint8_t qs[128]; };
struct block_q6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; half d; };
static_assert(sizeof(block_q8_1) == 36, "q8_1");
static_assert(sizeof(block_q8_0) == 34, "q8_0");
static_assert(sizeof(block_q4_K) == 144, "q4_K");
static_assert(sizeof(block_q6_K) == 210, "q6_K");

// Bytes of one unit (256 values) of a row.
constexpr int unit_bytes(WType t) {
    return t == WType::Q4_K ? 144 : t == WType::Q6_K ? 210 : 8 * 34;
}

// An int from a 2-byte-aligned address.
static __device__ __forceinline__ int load_b2(const void * p) {
    const uint16_t * u = (const uint16_t *) p;
    return (int) ((uint32_t) u[0] | ((uint32_t) u[1] << 16));
}

static __device__ __forceinline__ int load_b4(const void * p) {
    return *(const int *) p;
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

// What a lane needs of the activations: for n-tile nt, its B column (g) and
// its two C columns (2t, 2t+1), each a row of q8_1 blocks.
template <int NT>
struct Cols {
    const block_q8_1 * b[NT];
    const block_q8_1 * c[NT][2];
};

// One 16x8 product's C, scaled into the accumulators: row scales sa (row g)
// and sb (row g+8), column scales from the q8_1 block kb of the C columns;
// ma, mb (Q4_K's mins) times the columns' sums.
template <bool MINS>
static __device__ __forceinline__ void scale_acc(float acc[4], const int c[4], float sa, float sb, float ma, float mb,
                                                 const block_q8_1 * c0, const block_q8_1 * c1, int kb) {
    const float2 d0 = __half22float2(c0[kb].ds);
    const float2 d1 = __half22float2(c1[kb].ds);
    if (MINS) {
        acc[0] += sa * d0.x * (float) c[0] - ma * d0.y;
        acc[1] += sa * d1.x * (float) c[1] - ma * d1.y;
        acc[2] += sb * d0.x * (float) c[2] - mb * d0.y;
        acc[3] += sb * d1.x * (float) c[3] - mb * d1.y;
    } else {
        acc[0] += sa * d0.x * (float) c[0];
        acc[1] += sa * d1.x * (float) c[1];
        acc[2] += sb * d0.x * (float) c[2];
        acc[3] += sb * d1.x * (float) c[3];
    }
}

// Q4_K's 6-bit scale and min of sub-block j (get_scale_min_k4 in ggml-quants.c),
// from its 12 scale bytes as three ints.
static __device__ __forceinline__ void q4_K_scale_min(const int s[3], int j, float & sc, float & m) {
    const auto byte = [&](int i) { return (s[i / 4] >> (8 * (i % 4))) & 0xFF; };
    if (j < 4) {
        sc = (float) (byte(j) & 63);
        m  = (float) (byte(j + 4) & 63);
    } else {
        sc = (float) ((byte(j + 4) & 0xF) | ((byte(j - 4) >> 6) << 4));
        m  = (float) ((byte(j + 4) >> 4) | ((byte(j) >> 6) << 4));
    }
}

// Unit u (values 256u .. 256u+255) of rows wa (row g) and wb (row g+8).
// Each 32-value sub-block: a lane holds values 8t..8t+7 of both rows (one
// 8-byte load of nibbles serves sub-blocks 2p and 2p+1); the activations' k
// order is the same (ints 2t, 2t+1 of the q8_1 block).
template <int NT>
static __device__ __forceinline__ void unit_q4_K(const char * wa, const char * wb, int u, const Cols<NT> & y,
                                                 float acc[NT][4], int t) {
    const block_q4_K * xa = (const block_q4_K *) wa + u;
    const block_q4_K * xb = (const block_q4_K *) wb + u;
    const float2 dma = __half22float2(xa->dm);
    const float2 dmb = __half22float2(xb->dm);
    int sa[3], sb[3];
#pragma unroll
    for (int i = 0; i < 3; ++i) {
        sa[i] = load_b4(xa->scales + 4 * i);
        sb[i] = load_b4(xb->scales + 4 * i);
    }
#pragma unroll
    for (int p = 0; p < 4; ++p) {
        const int2 qa = *(const int2 *) (xa->qs + 32 * p + 8 * t);
        const int2 qb = *(const int2 *) (xb->qs + 32 * p + 8 * t);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int j = 2 * p + h;
            const int a0 = (qa.x >> (4 * h)) & 0x0F0F0F0F;
            const int a1 = (qb.x >> (4 * h)) & 0x0F0F0F0F;
            const int a2 = (qa.y >> (4 * h)) & 0x0F0F0F0F;
            const int a3 = (qb.y >> (4 * h)) & 0x0F0F0F0F;
            float sca, mna, scb, mnb;
            q4_K_scale_min(sa, j, sca, mna);
            q4_K_scale_min(sb, j, scb, mnb);
            sca *= dma.x; mna *= dma.y;
            scb *= dmb.x; mnb *= dmb.y;
            const int kb = 8 * u + j;
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                const int * by = (const int *) y.b[nt][kb].qs;
                int c[4] = {0, 0, 0, 0};
                mma_k32(c, a0, a1, a2, a3, by[2 * t], by[2 * t + 1]);
                scale_acc<true>(acc[nt], c, sca, scb, mna, mnb, y.c[nt][0], y.c[nt][1], kb);
            }
        }
    }
}

// Q6_K: 16 groups of 16 values, each with its own scale, so K = 16 products.
// A lane holds values 4t..4t+3 of each group (the activations' ints 4h+t).
template <int NT>
static __device__ __forceinline__ void unit_q6_K(const char * wa, const char * wb, int u, const Cols<NT> & y,
                                                 float acc[NT][4], int t) {
    const block_q6_K * xa = (const block_q6_K *) wa + u;
    const block_q6_K * xb = (const block_q6_K *) wb + u;
    const float da = __half2float(xa->d);
    const float db = __half2float(xb->d);
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int off = 16 * h + 4 * t;
            const int la[2] = {load_b2(xa->ql + 64 * n + off), load_b2(xa->ql + 64 * n + 32 + off)};
            const int lb[2] = {load_b2(xb->ql + 64 * n + off), load_b2(xb->ql + 64 * n + 32 + off)};
            const int ha = load_b2(xa->qh + 32 * n + off);
            const int hb = load_b2(xb->qh + 32 * n + off);
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                const int va = __vsubss4(((la[q & 1] >> (4 * (q >> 1))) & 0x0F0F0F0F) | (((ha >> (2 * q)) & 0x03030303) << 4),
                                         0x20202020);
                const int vb = __vsubss4(((lb[q & 1] >> (4 * (q >> 1))) & 0x0F0F0F0F) | (((hb >> (2 * q)) & 0x03030303) << 4),
                                         0x20202020);
                const int s = 8 * n + 2 * q + h;
                const float sca = da * (float) xa->scales[s];
                const float scb = db * (float) xb->scales[s];
                const int kb = 8 * u + 4 * n + q;
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
                    const int * by = (const int *) y.b[nt][kb].qs;
                    int c[4] = {0, 0, 0, 0};
                    mma_k16(c, va, vb, by[4 * h + t]);
                    scale_acc<false>(acc[nt], c, sca, scb, 0.0f, 0.0f, y.c[nt][0], y.c[nt][1], kb);
                }
            }
        }
    }
}

// Q8_0: 8 blocks of 32 per unit, 2-byte aligned.
template <int NT>
static __device__ __forceinline__ void unit_q8_0(const char * wa, const char * wb, int u, const Cols<NT> & y,
                                                 float acc[NT][4], int t) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const block_q8_0 * xa = (const block_q8_0 *) wa + 8 * u + i;
        const block_q8_0 * xb = (const block_q8_0 *) wb + 8 * u + i;
        const int a0 = load_b2(xa->qs + 8 * t);
        const int a2 = load_b2(xa->qs + 8 * t + 4);
        const int a1 = load_b2(xb->qs + 8 * t);
        const int a3 = load_b2(xb->qs + 8 * t + 4);
        const float da = __half2float(xa->d);
        const float db = __half2float(xb->d);
        const int kb = 8 * u + i;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const int * by = (const int *) y.b[nt][kb].qs;
            int c[4] = {0, 0, 0, 0};
            mma_k32(c, a0, a1, a2, a3, by[2 * t], by[2 * t + 1]);
            scale_acc<false>(acc[nt], c, da, db, 0.0f, 0.0f, y.c[nt][0], y.c[nt][1], kb);
        }
    }
}

// dst[col * dst_col_stride + row] = sum_k w[row][k] * y[col][k] for rows < nrows,
// cols < ncols; w rows of row_bytes, y rows of y_col_stride q8_1 blocks.
template <WType T, int NT>
__global__ void __launch_bounds__(32 * WARPS) mmv_kernel(
        const char * __restrict__ w, const block_q8_1 * __restrict__ y, float * __restrict__ dst,
        const int units, const int nrows, const int ncols, const int64_t row_bytes,
        const int64_t y_col_stride, const int64_t dst_col_stride) {
    const int lane = threadIdx.x;
    const int warp = threadIdx.y;
    const int g = lane / 4;
    const int t = lane % 4;
    const int row0 = blockIdx.x * ROWS;

    const char * wa = w + (int64_t) min(row0 + g, nrows - 1) * row_bytes;
    const char * wb = w + (int64_t) min(row0 + g + 8, nrows - 1) * row_bytes;
    Cols<NT> cols;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        cols.b[nt]    = y + (int64_t) min(8 * nt + g, ncols - 1) * y_col_stride;
        cols.c[nt][0] = y + (int64_t) min(8 * nt + 2 * t, ncols - 1) * y_col_stride;
        cols.c[nt][1] = y + (int64_t) min(8 * nt + 2 * t + 1, ncols - 1) * y_col_stride;
    }

    float acc[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.0f;
    }
    for (int u = warp; u < units; u += WARPS) {
        if (T == WType::Q4_K) {
            unit_q4_K<NT>(wa, wb, u, cols, acc, t);
        } else if (T == WType::Q6_K) {
            unit_q6_K<NT>(wa, wb, u, cols, acc, t);
        } else {
            unit_q8_0<NT>(wa, wb, u, cols, acc, t);
        }
    }

    // The warps' partial sums, added in warp order.
    __shared__ float part[WARPS - 1][NT * 4][32];
    if (warp > 0) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                part[warp - 1][nt * 4 + i][lane] = acc[nt][i];
            }
        }
    }
    __syncthreads();
    if (warp > 0) {
        return;
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            float v = acc[nt][i];
#pragma unroll
            for (int w2 = 0; w2 < WARPS - 1; ++w2) {
                v += part[w2][nt * 4 + i][lane];
            }
            const int row = row0 + g + 8 * (i / 2);
            const int col = 8 * nt + 2 * t + (i % 2);
            if (row < nrows && col < ncols) {
                dst[(int64_t) col * dst_col_stride + row] = v;
            }
        }
    }
}

template <WType T>
static void launch_type(const void * w, const void * y, float * dst, int64_t k, int64_t nrows, int ncols,
                        int64_t row_bytes, int64_t y_col_stride, int64_t dst_col_stride, cudaStream_t stream) {
    const dim3 grid((unsigned) ((nrows + ROWS - 1) / ROWS));
    const dim3 block(32, WARPS);
    const int units = (int) (k / UNIT);
    if (ncols <= 8) {
        mmv_kernel<T, 1><<<grid, block, 0, stream>>>((const char *) w, (const block_q8_1 *) y, dst, units, (int) nrows,
                                                     ncols, row_bytes, y_col_stride, dst_col_stride);
    } else {
        mmv_kernel<T, 2><<<grid, block, 0, stream>>>((const char *) w, (const block_q8_1 *) y, dst, units, (int) nrows,
                                                     ncols, row_bytes, y_col_stride, dst_col_stride);
    }
}

// Whether the kernel takes this product: K a multiple of 256, 1..16 columns.
static inline bool supported(int64_t k, int ncols) {
    return k > 0 && k % UNIT == 0 && ncols >= 1 && ncols <= MAX_COLS;
}

// w: nrows rows of k values of type `type` (row_bytes apart); y: ncols rows of
// k/32 q8_1 blocks (y_col_stride blocks apart, >= k/32); dst: ncols columns of
// nrows floats (dst_col_stride apart). Asynchronous on `stream`.
static inline void launch(WType type, const void * w, const void * y, float * dst, int64_t k, int64_t nrows, int ncols,
                          int64_t row_bytes, int64_t y_col_stride, int64_t dst_col_stride, cudaStream_t stream) {
    switch (type) {
        case WType::Q4_K:
            launch_type<WType::Q4_K>(w, y, dst, k, nrows, ncols, row_bytes, y_col_stride, dst_col_stride, stream);
            break;
        case WType::Q6_K:
            launch_type<WType::Q6_K>(w, y, dst, k, nrows, ncols, row_bytes, y_col_stride, dst_col_stride, stream);
            break;
        case WType::Q8_0:
            launch_type<WType::Q8_0>(w, y, dst, k, nrows, ncols, row_bytes, y_col_stride, dst_col_stride, stream);
            break;
    }
}

}  // namespace orthrus_mmv
