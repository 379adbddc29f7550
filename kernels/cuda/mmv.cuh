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

// The activations, quantized per column and 32 values (d = max|x|/127,
// q = round(x/d), s = sum of x, as ggml's q8_1), laid out for the mma's B:
// per 32-block kb and n-tile nt, lane (g, t)'s two ints of column 8 nt + g
// (lanes' ints 2t, 2t+1 = values 8t..8t+7 for Q4_K and Q8_0, whose A rows a
// lane reads 8 bytes at a time; ints t, t+4 for Q6_K, whose 16-value groups
// are then one int each), then d and s of the 8 NT columns of each block.
// Columns past the last are zeros.
enum class KOrder { Pairs, Halves };

constexpr KOrder korder(WType t) { return t == WType::Q6_K ? KOrder::Halves : KOrder::Pairs; }

constexpr int n_tiles(int ncols) { return ncols <= 8 ? 1 : 2; }

static inline size_t acts_bytes(int64_t k, int ncols) {
    const int64_t nkb = k / 32, nt = n_tiles(ncols);
    return (size_t) (nkb * nt * 32 * sizeof(int2) + 2 * nkb * 8 * nt * sizeof(float));
}

struct Acts {
    const int2 * q;   // [nkb][NT][32 lanes]
    const float * d;  // [nkb][8 NT]
    const float * s;  // [nkb][8 NT]
};

template <int NT>
static __device__ __forceinline__ Acts acts_at(const void * buf, int nkb) {
    const int2 * q = (const int2 *) buf;
    const float * d = (const float *) (q + (int64_t) nkb * NT * 32);
    return {q, d, d + (int64_t) nkb * 8 * NT};
}

// One warp per (block of 32 values, column): column c of x is
// x + i1*s1 + i2*s2 + i3*s3 with c = i1 + n1*(i2 + n2*i3).
template <KOrder O, int NT>
__global__ void __launch_bounds__(256) quantize_kernel(const float * __restrict__ x, void * __restrict__ buf, const int nkb,
                                                       const int ncols, const int n1, const int n2, const int64_t s1,
                                                       const int64_t s2, const int64_t s3) {
    const int lane = threadIdx.x;
    const int64_t item = (int64_t) blockIdx.x * blockDim.y + threadIdx.y;
    if (item >= (int64_t) nkb * 8 * NT) {
        return;
    }
    const int kb = (int) (item / (8 * NT));
    const int c = (int) (item % (8 * NT));
    float v = 0.0f;
    if (c < ncols) {
        const int i1 = c % n1, i2 = (c / n1) % n2, i3 = c / (n1 * n2);
        v = x[i1 * s1 + i2 * s2 + i3 * s3 + 32 * kb + lane];
    }
    float amax = fabsf(v), sum = v;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFF, amax, o));
        sum += __shfl_xor_sync(0xFFFFFFFF, sum, o);
    }
    const float d = amax / 127.0f;
    const int q = amax == 0.0f ? 0 : (int) roundf(v / d);
    // Four lanes' bytes make an int: gather them at the first of the four.
    const int b0 = q & 0xFF;
    const int b1 = __shfl_down_sync(0xFFFFFFFF, b0, 1);
    const int b2 = __shfl_down_sync(0xFFFFFFFF, b0, 2);
    const int b3 = __shfl_down_sync(0xFFFFFFFF, b0, 3);
    Acts a = acts_at<NT>(buf, nkb);
    if (lane % 4 == 0) {
        const int i = lane / 4;  // the int's index in the block
        const int t = O == KOrder::Pairs ? i / 2 : i % 4;
        const int slot = O == KOrder::Pairs ? i % 2 : i / 4;
        int * dst = (int *) (a.q + ((int64_t) kb * NT + c / 8) * 32 + (c % 8) * 4 + t) + slot;
        *dst = b0 | (b1 << 8) | (b2 << 16) | (b3 << 24);
    }
    if (lane == 0) {
        ((float *) a.d)[kb * 8 * NT + c] = d;
        ((float *) a.s)[kb * 8 * NT + c] = sum;
    }
}

// One 16x8 product's C into the accumulators: row scales sa (row g), sb
// (row g+8) times the columns' d (C columns 2t, 2t+1); ma, mb (Q4_K's mins)
// times the columns' sums.
template <bool MINS>
static __device__ __forceinline__ void scale_acc(float acc[4], const int c[4], float sa, float sb, float ma, float mb,
                                                 float2 d, float2 s) {
    if (MINS) {
        acc[0] += sa * d.x * (float) c[0] - ma * s.x;
        acc[1] += sa * d.y * (float) c[1] - ma * s.y;
        acc[2] += sb * d.x * (float) c[2] - mb * s.x;
        acc[3] += sb * d.y * (float) c[3] - mb * s.y;
    } else {
        acc[0] += sa * d.x * (float) c[0];
        acc[1] += sa * d.y * (float) c[1];
        acc[2] += sb * d.x * (float) c[2];
        acc[3] += sb * d.y * (float) c[3];
    }
}

template <int NT>
static __device__ __forceinline__ float2 col_scales(const float * v, int kb, int nt, int t) {
    return *(const float2 *) (v + kb * 8 * NT + 8 * nt + 2 * t);
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

// Unit u (values 256u .. 256u+255) of R row tiles (wa[r]: row g of tile r,
// wb[r]: row g+8). Q4_K: a lane holds values 8t..8t+7 of each 32-value
// sub-block (one 8-byte load of nibbles serves sub-blocks 2p and 2p+1).
template <int NT, int R>
static __device__ __forceinline__ void unit_q4_K(const char * const wa[R], const char * const wb[R], int u,
                                                 const Acts & y, float acc[R][NT][4], int lane, int t) {
    float dma[R][2], dmb[R][2];
    int sa[R][3], sb[R][3];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const block_q4_K * xa = (const block_q4_K *) wa[r] + u;
        const block_q4_K * xb = (const block_q4_K *) wb[r] + u;
        const float2 fa = __half22float2(xa->dm), fb = __half22float2(xb->dm);
        dma[r][0] = fa.x; dma[r][1] = fa.y; dmb[r][0] = fb.x; dmb[r][1] = fb.y;
#pragma unroll
        for (int i = 0; i < 3; ++i) {
            sa[r][i] = load_b4(xa->scales + 4 * i);
            sb[r][i] = load_b4(xb->scales + 4 * i);
        }
    }
#pragma unroll
    for (int p = 0; p < 4; ++p) {
        int2 qa[R], qb[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            qa[r] = *(const int2 *) (((const block_q4_K *) wa[r] + u)->qs + 32 * p + 8 * t);
            qb[r] = *(const int2 *) (((const block_q4_K *) wb[r] + u)->qs + 32 * p + 8 * t);
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int j = 2 * p + h;
            const int kb = 8 * u + j;
            int2 b[NT];
            float2 d[NT], s[NT];
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                b[nt] = y.q[((int64_t) kb * NT + nt) * 32 + lane];
                d[nt] = col_scales<NT>(y.d, kb, nt, t);
                s[nt] = col_scales<NT>(y.s, kb, nt, t);
            }
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const int a0 = (qa[r].x >> (4 * h)) & 0x0F0F0F0F;
                const int a1 = (qb[r].x >> (4 * h)) & 0x0F0F0F0F;
                const int a2 = (qa[r].y >> (4 * h)) & 0x0F0F0F0F;
                const int a3 = (qb[r].y >> (4 * h)) & 0x0F0F0F0F;
                float sca, mna, scb, mnb;
                q4_K_scale_min(sa[r], j, sca, mna);
                q4_K_scale_min(sb[r], j, scb, mnb);
                sca *= dma[r][0]; mna *= dma[r][1];
                scb *= dmb[r][0]; mnb *= dmb[r][1];
#pragma unroll
                for (int nt = 0; nt < NT; ++nt) {
                    int c[4] = {0, 0, 0, 0};
                    mma_k32(c, a0, a1, a2, a3, b[nt].x, b[nt].y);
                    scale_acc<true>(acc[r][nt], c, sca, scb, mna, mnb, d[nt], s[nt]);
                }
            }
        }
    }
}

// Q6_K: 16 groups of 16 values, each with its own scale, so K = 16 products;
// a lane holds values 4t..4t+3 of each group.
template <int NT, int R>
static __device__ __forceinline__ void unit_q6_K(const char * const wa[R], const char * const wb[R], int u,
                                                 const Acts & y, float acc[R][NT][4], int lane, int t) {
#pragma unroll
    for (int n = 0; n < 2; ++n) {
        int la[R][2][2], lb[R][2][2], ha[R][2], hb[R][2];  // [r][h][ql half]
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const block_q6_K * xa = (const block_q6_K *) wa[r] + u;
            const block_q6_K * xb = (const block_q6_K *) wb[r] + u;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int off = 16 * h + 4 * t;
                la[r][h][0] = load_b2(xa->ql + 64 * n + off);
                la[r][h][1] = load_b2(xa->ql + 64 * n + 32 + off);
                lb[r][h][0] = load_b2(xb->ql + 64 * n + off);
                lb[r][h][1] = load_b2(xb->ql + 64 * n + 32 + off);
                ha[r][h] = load_b2(xa->qh + 32 * n + off);
                hb[r][h] = load_b2(xb->qh + 32 * n + off);
            }
        }
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int kb = 8 * u + 4 * n + q;
            int2 b[NT];
            float2 d[NT];
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                b[nt] = y.q[((int64_t) kb * NT + nt) * 32 + lane];
                d[nt] = col_scales<NT>(y.d, kb, nt, t);
            }
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const block_q6_K * xa = (const block_q6_K *) wa[r] + u;
                const block_q6_K * xb = (const block_q6_K *) wb[r] + u;
                const float da = __half2float(xa->d), db = __half2float(xb->d);
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int va = __vsubss4(((la[r][h][q & 1] >> (4 * (q >> 1))) & 0x0F0F0F0F) |
                                             (((ha[r][h] >> (2 * q)) & 0x03030303) << 4), 0x20202020);
                    const int vb = __vsubss4(((lb[r][h][q & 1] >> (4 * (q >> 1))) & 0x0F0F0F0F) |
                                             (((hb[r][h] >> (2 * q)) & 0x03030303) << 4), 0x20202020);
                    const int si = 8 * n + 2 * q + h;
                    const float sca = da * (float) xa->scales[si];
                    const float scb = db * (float) xb->scales[si];
#pragma unroll
                    for (int nt = 0; nt < NT; ++nt) {
                        int c[4] = {0, 0, 0, 0};
                        mma_k16(c, va, vb, h == 0 ? b[nt].x : b[nt].y);
                        scale_acc<false>(acc[r][nt], c, sca, scb, 0.0f, 0.0f, d[nt], d[nt]);
                    }
                }
            }
        }
    }
}

// Q8_0: 8 blocks of 32 per unit, 2-byte aligned.
template <int NT, int R>
static __device__ __forceinline__ void unit_q8_0(const char * const wa[R], const char * const wb[R], int u,
                                                 const Acts & y, float acc[R][NT][4], int lane, int t) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int kb = 8 * u + i;
        int2 b[NT];
        float2 d[NT];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            b[nt] = y.q[((int64_t) kb * NT + nt) * 32 + lane];
            d[nt] = col_scales<NT>(y.d, kb, nt, t);
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const block_q8_0 * xa = (const block_q8_0 *) wa[r] + kb;
            const block_q8_0 * xb = (const block_q8_0 *) wb[r] + kb;
            const int a0 = load_b2(xa->qs + 8 * t);
            const int a2 = load_b2(xa->qs + 8 * t + 4);
            const int a1 = load_b2(xb->qs + 8 * t);
            const int a3 = load_b2(xb->qs + 8 * t + 4);
            const float da = __half2float(xa->d);
            const float db = __half2float(xb->d);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                int c[4] = {0, 0, 0, 0};
                mma_k32(c, a0, a1, a2, a3, b[nt].x, b[nt].y);
                scale_acc<false>(acc[r][nt], c, da, db, 0.0f, 0.0f, d[nt], d[nt]);
            }
        }
    }
}

// dst[col * dst_col_stride + row] = sum_k w[row][k] * x[col][k] for rows < nrows,
// cols < ncols; w rows of row_bytes; the activations as quantize_kernel left them.
template <WType T, int NT, int R>
__global__ void __launch_bounds__(32 * WARPS) mmv_kernel(
        const char * __restrict__ w, const void * __restrict__ acts, float * __restrict__ dst,
        const int units, const int nrows, const int ncols, const int64_t row_bytes, const int64_t dst_col_stride) {
    const int lane = threadIdx.x;
    const int warp = threadIdx.y;
    const int g = lane / 4;
    const int t = lane % 4;
    const int row0 = blockIdx.x * ROWS * R;

    const char * wa[R];
    const char * wb[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        wa[r] = w + (int64_t) min(row0 + ROWS * r + g, nrows - 1) * row_bytes;
        wb[r] = w + (int64_t) min(row0 + ROWS * r + g + 8, nrows - 1) * row_bytes;
    }
    const Acts y = acts_at<NT>(acts, units * (UNIT / 32));

    float acc[R][NT][4];
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            acc[r][nt][0] = acc[r][nt][1] = acc[r][nt][2] = acc[r][nt][3] = 0.0f;
        }
    }
    for (int u = warp; u < units; u += WARPS) {
        if (T == WType::Q4_K) {
            unit_q4_K<NT, R>(wa, wb, u, y, acc, lane, t);
        } else if (T == WType::Q6_K) {
            unit_q6_K<NT, R>(wa, wb, u, y, acc, lane, t);
        } else {
            unit_q8_0<NT, R>(wa, wb, u, y, acc, lane, t);
        }
    }

    // The warps' partial sums, added in warp order.
    __shared__ float part[WARPS - 1][R * NT * 4][32];
    if (warp > 0) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    part[warp - 1][(r * NT + nt) * 4 + i][lane] = acc[r][nt][i];
                }
            }
        }
    }
    __syncthreads();
    if (warp > 0) {
        return;
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                float v = acc[r][nt][i];
#pragma unroll
                for (int w2 = 0; w2 < WARPS - 1; ++w2) {
                    v += part[w2][(r * NT + nt) * 4 + i][lane];
                }
                const int row = row0 + ROWS * r + g + 8 * (i / 2);
                const int col = 8 * nt + 2 * t + (i % 2);
                if (row < nrows && col < ncols) {
                    dst[(int64_t) col * dst_col_stride + row] = v;
                }
            }
        }
    }
}

// Row tiles per warp: 2 (each activation fragment loaded once for both) when
// there are rows enough to keep every SM busy with the blocks that leaves.
static inline int row_tiles(int64_t nrows) {
    return nrows >= 2 * ROWS * 1024 ? 2 : 1;
}

template <WType T, int NT>
static void launch_tiles(const void * w, const void * acts, float * dst, int64_t k, int64_t nrows, int ncols,
                         int64_t row_bytes, int64_t dst_col_stride, cudaStream_t stream) {
    const dim3 block(32, WARPS);
    const int units = (int) (k / UNIT);
    if (row_tiles(nrows) == 2) {
        const dim3 grid((unsigned) ((nrows + 2 * ROWS - 1) / (2 * ROWS)));
        mmv_kernel<T, NT, 2><<<grid, block, 0, stream>>>((const char *) w, acts, dst, units, (int) nrows, ncols, row_bytes,
                                                         dst_col_stride);
    } else {
        const dim3 grid((unsigned) ((nrows + ROWS - 1) / ROWS));
        mmv_kernel<T, NT, 1><<<grid, block, 0, stream>>>((const char *) w, acts, dst, units, (int) nrows, ncols, row_bytes,
                                                         dst_col_stride);
    }
}

template <WType T>
static void launch_type(const void * w, const void * acts, float * dst, int64_t k, int64_t nrows, int ncols,
                        int64_t row_bytes, int64_t dst_col_stride, cudaStream_t stream) {
    if (n_tiles(ncols) == 1) {
        launch_tiles<T, 1>(w, acts, dst, k, nrows, ncols, row_bytes, dst_col_stride, stream);
    } else {
        launch_tiles<T, 2>(w, acts, dst, k, nrows, ncols, row_bytes, dst_col_stride, stream);
    }
}

// Whether the kernel takes this product: K a multiple of 256, 1..16 columns.
static inline bool supported(int64_t k, int64_t ncols) {
    return k > 0 && k % UNIT == 0 && ncols >= 1 && ncols <= MAX_COLS;
}

// Quantizes ncols columns of k floats (column c = i1 + n1*(i2 + n2*i3) at
// x + i1*s1 + i2*s2 + i3*s3, strides in floats) into buf (acts_bytes(k, ncols))
// for a product with weights of `type`. Asynchronous on `stream`.
static inline void quantize(WType type, const float * x, int64_t k, int ncols, int64_t n1, int64_t n2, int64_t s1,
                            int64_t s2, int64_t s3, void * buf, cudaStream_t stream) {
    const int nkb = (int) (k / 32);
    const int nt = n_tiles(ncols);
    const dim3 block(32, 8);
    const dim3 grid((unsigned) (((int64_t) nkb * 8 * nt + 7) / 8));
    const int a = (int) n1, b = (int) n2;
    if (korder(type) == KOrder::Pairs) {
        if (nt == 1) quantize_kernel<KOrder::Pairs, 1><<<grid, block, 0, stream>>>(x, buf, nkb, ncols, a, b, s1, s2, s3);
        else         quantize_kernel<KOrder::Pairs, 2><<<grid, block, 0, stream>>>(x, buf, nkb, ncols, a, b, s1, s2, s3);
    } else {
        if (nt == 1) quantize_kernel<KOrder::Halves, 1><<<grid, block, 0, stream>>>(x, buf, nkb, ncols, a, b, s1, s2, s3);
        else         quantize_kernel<KOrder::Halves, 2><<<grid, block, 0, stream>>>(x, buf, nkb, ncols, a, b, s1, s2, s3);
    }
}

// w: nrows rows of k values of type `type` (row_bytes apart); acts: what
// quantize() wrote for these ncols columns; dst: ncols columns of nrows floats
// (dst_col_stride apart). Asynchronous on `stream`.
static inline void launch(WType type, const void * w, const void * acts, float * dst, int64_t k, int64_t nrows, int ncols,
                          int64_t row_bytes, int64_t dst_col_stride, cudaStream_t stream) {
    switch (type) {
        case WType::Q4_K: launch_type<WType::Q4_K>(w, acts, dst, k, nrows, ncols, row_bytes, dst_col_stride, stream); break;
        case WType::Q6_K: launch_type<WType::Q6_K>(w, acts, dst, k, nrows, ncols, row_bytes, dst_col_stride, stream); break;
        case WType::Q8_0: launch_type<WType::Q8_0>(w, acts, dst, k, nrows, ncols, row_bytes, dst_col_stride, stream); break;
    }
}

}  // namespace orthrus_mmv
