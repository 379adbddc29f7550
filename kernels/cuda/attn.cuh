// Attention of 1 to 32 queries over an f16 cache, on tensor cores.
//
// ggml-cuda's flash attention takes its vector kernel only for one query of
// one sequence; a block of 16 or 32 (both Orthrus views) goes to its tiled kernel,
// which costs about twice as much (plus a stream-k fixup per layer). Here all
// the query heads that share a KV head, times all the block's queries, are
// the rows of one product (Qwen3: 2 or 4 heads x 32 queries = 64 or 128 rows),
// so each K and V value is read once for all of them:
//
//   - a thread block per (KV head, split of the cached slots); a warp per 16
//     rows; K and V go through shared memory in chunks of 64 slots, the next
//     chunk's copies in flight while one is computed (a long cache is read
//     at the bandwidth only when every SM keeps enough bytes in flight);
//   - S = Q K^T and O += P V with f16 mma (m16n8k16, f32 accumulators), the
//     online softmax in between in f32 (S's accumulator fragment is P's A
//     fragment: no shuffles);
//   - with more than one split, the splits' (O, max, sum) meet in combine().
//
// One query (a one-token pass) is the same with 2 or 4 of a warp's 16 rows;
// ggml-hook.cu leaves lone queries to ggml's vector kernel, as quick there,
// and gives blocks of more queries than a launch takes (max_queries) in parts.
//
// softmax(scale * q k^T + mask) v with an f16 mask per (query, slot) shared by
// the heads, as ggml_flash_attn_ext computes it without ALiBi, soft-capping or
// sinks. Self-contained (CUDA runtime only) so that kernels/cuda/attn-test.cu
// tests it without ggml; kernels/cuda/ggml-hook.cu puts it into ggml-cuda.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdint>

#include "orthrus-launch.cuh"

namespace orthrus_attn {

using orthrus_launch::grid_release;
using orthrus_launch::grid_wait;
using orthrus_launch::launch_kernel;

constexpr int D = 128;         // head size
constexpr int CHUNK = 64;      // cached slots per pass through shared memory
constexpr int LD = D + 8;      // halves per shared-memory row: rows 4 banks apart
constexpr int MAX_WARPS = 8;   // rows = heads per KV head x queries, up to 128
constexpr int MAX_Q = 32;      // queries
constexpr int THREADS_COMBINE = D;

struct Params {
    const float * q;      // q[t * q_s1 + h * q_s2 + d]: query t, head h
    const half * k;       // k[j * k_s1 + g * k_s2 + d]: slot j, KV head g
    const half * v;
    const half * mask;    // mask[t * mask_s1 + j], rows of a multiple of 8 (16-byte aligned)
    float * dst;          // dst[(t * nh + h) * D + d]
    float * part_o;       // [nkv][splits][rows][D], with splits > 1
    float2 * part_ml;     // [nkv][splits][rows]: the split's max (log2 units) and sum
    int64_t q_s1, q_s2, k_s1, k_s2, v_s1, v_s2, mask_s1;  // in elements
    int nq, nh, nkv, n_kv;
    int split_len, nsplit;  // set by plan(): slots per block (whole chunks), blocks per KV head
    int stages;             // set by plan(): chunks in shared memory at once (see MAX_STAGES)
    float scale;
};

// Chunks a block keeps in shared memory: 1, copies then products; 2, the
// next chunk's copies in flight during a chunk's products.
constexpr int MAX_STAGES = 2;

// Halves of shared memory one stage takes: the chunk's K and V, the mask's piece.
constexpr int STAGE_HALVES = 2 * CHUNK * LD + MAX_Q * CHUNK;

static inline size_t smem_bytes(int stages) { return (size_t) stages * STAGE_HALVES * sizeof(half); }

// D += A B: A 16x16 f16 (a0 row g, k 2t..2t+1; a1 row g+8; a2, a3 the same at
// k + 8), B 16x8 f16 (b0: k 2t..2t+1 of column g; b1 at k + 8), D 16x8 f32
// (d0, d1 row g, columns 2t, 2t+1; d2, d3 row g+8).
static __device__ __forceinline__ void mma_f16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    (void) d; (void) a; (void) b0; (void) b1;
    __trap();
#endif
}

// Four 8x8 f16 matrices from shared memory, transposed: lane l gives the
// address of row l % 8 of matrix l / 8. Of a row-major [k][n] tile whose
// matrices are (k 0..7, n 0..7), (k 8..15, n 0..7), (k 0..7, n 8..15),
// (k 8..15, n 8..15), that is B's b0, b1 for n-tile 0 and b0, b1 for n-tile 1.
static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const half * p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const uint32_t a = (uint32_t) __cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
#else
    (void) r; (void) p;
    __trap();
#endif
}

// 16 bytes from global to shared memory without registers (cp.async); zeros
// when !ok (src then unread).
static __device__ __forceinline__ void copy16(half * dst, const half * src, bool ok) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const uint32_t a = (uint32_t) __cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(a), "l"(src), "r"(ok ? 16 : 0));
#else
    (void) dst; (void) src; (void) ok;
    __trap();
#endif
}

// Closes this thread's copy16()s issued since the last call into a group.
static __device__ __forceinline__ void copies_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

// Waits until at most N of this thread's groups are still in flight (a
// __syncthreads() then shows all threads' older groups).
template <int N>
static __device__ __forceinline__ void copies_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

static __device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
    const half2 h = __floats2half2_rn(lo, hi);
    return *(const uint32_t *) &h;
}

// The rows of a KV head's block: its query heads times the queries.
static __host__ __device__ __forceinline__ int block_rows(const Params & p) { return (p.nh / p.nkv) * p.nq; }

// Row r of KV head kvh's block: query r % nq of query head kvh * (nh / nkv) + r / nq.
static __device__ __forceinline__ int row_query(int r, int nq) { return r % nq; }
static __device__ __forceinline__ int row_head(const Params & p, int kvh, int r) {
    return kvh * (p.nh / p.nkv) + r / p.nq;
}

// The copies of chunk c0 (of the block's slots [j0, j1)) into a stage: K and V
// past j1 are zeros (masked in the products), and so is the mask there.
static __device__ __forceinline__ void load_chunk(const Params & p, half * stage, int kvh, int c0, int j0, int j1,
                                                  int tid, int nthreads) {
    half * ks = stage;
    half * vs = stage + CHUNK * LD;
    half * ms = stage + 2 * CHUNK * LD;
    for (int i = tid; i < CHUNK * (D / 8); i += nthreads) {
        const int r = i / (D / 8), c = 8 * (i % (D / 8));
        const int j = c0 + r < j1 ? c0 + r : j0;
        copy16(ks + r * LD + c, p.k + (int64_t) j * p.k_s1 + (int64_t) kvh * p.k_s2 + c, c0 + r < j1);
        copy16(vs + r * LD + c, p.v + (int64_t) j * p.v_s1 + (int64_t) kvh * p.v_s2 + c, c0 + r < j1);
    }
    // A mask row's piece that starts before j1 lies inside the row (whose
    // length is a multiple of 8).
    for (int i = tid; i < p.nq * (CHUNK / 8); i += nthreads) {
        const int tq = i / (CHUNK / 8), c = 8 * (i % (CHUNK / 8));
        const int j = c0 + c < j1 ? c0 + c : j0;
        copy16(ms + tq * CHUNK + c, p.mask + (int64_t) tq * p.mask_s1 + j, c0 + c < j1);
    }
}

// Block (kvh, split): KV head kvh over the slots [split * split_len, min((split + 1)
// * split_len, n_kv)). Warps: one per 16 of the rows = (nh / nkv) * nq. Shared
// (dynamic, smem_bytes(S)): S stages of a chunk's K, V and mask; chunk i in stage
// i % S, the copies of chunk i + S - 1 issued before chunk i's products.
template <int S>
__global__ void __launch_bounds__(32 * MAX_WARPS) attn_kernel(const Params p) {
    extern __shared__ __align__(16) half smem[];

    const int lane = threadIdx.x, warp = threadIdx.y;
    const int g = lane / 4, t = lane % 4;
    const int tid = warp * 32 + lane, nthreads = 32 * blockDim.y;
    const int kvh = blockIdx.x, split = blockIdx.y, nsplit = p.nsplit;
    const int rows = block_rows(p);
    const int j0 = split * p.split_len;
    const int j1 = min(j0 + p.split_len, p.n_kv);
    constexpr float LOG2E = 1.4426950408889634f;
    const float sc = p.scale * LOG2E;
    grid_wait();  // q, k, v and the mask are earlier kernels' outputs (PDL)

    // This warp's rows g and g+8 (of 16), as the A fragments of Q (8 k-steps of 16).
    const int r0 = 16 * warp + g, r1 = r0 + 8;
    uint32_t qa[D / 16][4];
    {
        const float * q0 = p.q + (int64_t) row_query(r0, p.nq) * p.q_s1 + (int64_t) row_head(p, kvh, r0) * p.q_s2;
        const float * q1 = p.q + (int64_t) row_query(r1, p.nq) * p.q_s1 + (int64_t) row_head(p, kvh, r1) * p.q_s2;
        const bool ok0 = r0 < rows, ok1 = r1 < rows;
#pragma unroll
        for (int s = 0; s < D / 16; ++s) {
            const int d = 16 * s + 2 * t;
            const float2 x0 = ok0 ? *(const float2 *) (q0 + d) : make_float2(0.0f, 0.0f);
            const float2 x1 = ok1 ? *(const float2 *) (q1 + d) : make_float2(0.0f, 0.0f);
            const float2 x2 = ok0 ? *(const float2 *) (q0 + d + 8) : make_float2(0.0f, 0.0f);
            const float2 x3 = ok1 ? *(const float2 *) (q1 + d + 8) : make_float2(0.0f, 0.0f);
            qa[s][0] = pack_half2(x0.x, x0.y);
            qa[s][1] = pack_half2(x1.x, x1.y);
            qa[s][2] = pack_half2(x2.x, x2.y);
            qa[s][3] = pack_half2(x3.x, x3.y);
        }
    }
    const int tq0 = row_query(r0, p.nq), tq1 = row_query(r1, p.nq);

    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    }
    float mx[2] = {-INFINITY, -INFINITY};  // rows g, g+8: running max of scale * log2e * (s + mask)
    float sum[2] = {0.0f, 0.0f};           // this lane's share of the running sums

    // K, V and the mask in 16-byte pieces, straight into shared memory, one
    // group of copies a chunk (an empty group past the last keeps the count).
#pragma unroll
    for (int i = 0; i < S - 1; ++i) {
        if (j0 + i * CHUNK < j1) {
            load_chunk(p, smem + i * STAGE_HALVES, kvh, j0 + i * CHUNK, j0, j1, tid, nthreads);
        }
        copies_commit();
    }
    for (int c0 = j0, i = 0; c0 < j1; c0 += CHUNK, ++i) {
        const int ahead = c0 + (S - 1) * CHUNK;
        if (ahead < j1) {
            load_chunk(p, smem + (i + S - 1) % S * STAGE_HALVES, kvh, ahead, j0, j1, tid, nthreads);
        }
        copies_commit();
        copies_wait<S - 1>();  // chunk i's group
        __syncthreads();
        const half * ks = smem + i % S * STAGE_HALVES;
        const half * vs = ks + CHUNK * LD;
        const half (*ms)[CHUNK] = (const half (*)[CHUNK]) (ks + 2 * CHUNK * LD);
        const int live = j1 - c0;  // slots of the chunk before j1

        // S = Q K^T for the chunk: 8 n-tiles of 8 slots.
        float s[CHUNK / 8][4];
#pragma unroll
        for (int n = 0; n < CHUNK / 8; ++n) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
            const half * kr = ks + (8 * n + g) * LD + 2 * t;
#pragma unroll
            for (int k = 0; k < D / 16; ++k) {
                mma_f16(s[n], qa[k], *(const uint32_t *) (kr + 16 * k), *(const uint32_t *) (kr + 16 * k + 8));
            }
        }
        // The online softmax, in log2 units: rows g (entries 0, 1) and g+8 (2, 3).
        float cmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < CHUNK / 8; ++n) {
            const int c = 8 * n + 2 * t;
            const float2 m0 = __half22float2(*(const half2 *) &ms[tq0][c]);
            const float2 m1 = __half22float2(*(const half2 *) &ms[tq1][c]);
            s[n][0] = c < live ? s[n][0] * sc + m0.x * LOG2E : -INFINITY;
            s[n][1] = c + 1 < live ? s[n][1] * sc + m0.y * LOG2E : -INFINITY;
            s[n][2] = c < live ? s[n][2] * sc + m1.x * LOG2E : -INFINITY;
            s[n][3] = c + 1 < live ? s[n][3] * sc + m1.y * LOG2E : -INFINITY;
            cmax[0] = fmaxf(cmax[0], fmaxf(s[n][0], s[n][1]));
            cmax[1] = fmaxf(cmax[1], fmaxf(s[n][2], s[n][3]));
        }
        float alpha[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            cmax[i] = fmaxf(cmax[i], __shfl_xor_sync(0xFFFFFFFF, cmax[i], 1));
            cmax[i] = fmaxf(cmax[i], __shfl_xor_sync(0xFFFFFFFF, cmax[i], 2));
            const float m = fmaxf(mx[i], cmax[i]);
            // All masked so far: keep the exponents finite (every p is 0 then).
            const float base = m == -INFINITY ? 0.0f : m;
            alpha[i] = exp2f(mx[i] - base);
            mx[i] = m;
            cmax[i] = base;
            sum[i] *= alpha[i];
        }
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            o[n][0] *= alpha[0]; o[n][1] *= alpha[0];
            o[n][2] *= alpha[1]; o[n][3] *= alpha[1];
        }
        // P (as A fragments, 4 k-steps of 16 slots) and the row sums.
        uint32_t pa[CHUNK / 16][4];
#pragma unroll
        for (int n = 0; n < CHUNK / 8; ++n) {
            const float e0 = exp2f(s[n][0] - cmax[0]), e1 = exp2f(s[n][1] - cmax[0]);
            const float e2 = exp2f(s[n][2] - cmax[1]), e3 = exp2f(s[n][3] - cmax[1]);
            sum[0] += e0 + e1;
            sum[1] += e2 + e3;
            pa[n / 2][2 * (n % 2) + 0] = pack_half2(e0, e1);
            pa[n / 2][2 * (n % 2) + 1] = pack_half2(e2, e3);
        }
        // O += P V: V's chunk as B, 16 n-tiles of 8 of the head's values.
#pragma unroll
        for (int k = 0; k < CHUNK / 16; ++k) {
            const half * vr = vs + (16 * k + (lane % 8) + 8 * ((lane / 8) % 2)) * LD + 8 * (lane / 16);
#pragma unroll
            for (int n = 0; n < D / 16; ++n) {
                uint32_t b[4];
                ldmatrix_x4_trans(b, vr + 16 * n);
                mma_f16(o[2 * n], pa[k], b[0], b[1]);
                mma_f16(o[2 * n + 1], pa[k], b[2], b[3]);
            }
        }
        __syncthreads();  // this stage is done with before its next copies
    }

    grid_release();
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        sum[i] += __shfl_xor_sync(0xFFFFFFFF, sum[i], 1);
        sum[i] += __shfl_xor_sync(0xFFFFFFFF, sum[i], 2);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int r = i == 0 ? r0 : r1;
        if (r >= rows) {
            continue;
        }
        if (nsplit == 1) {
            float * out = p.dst + ((int64_t) row_query(r, p.nq) * p.nh + row_head(p, kvh, r)) * D;
            const float inv = sum[i] > 0.0f ? 1.0f / sum[i] : 0.0f;
#pragma unroll
            for (int n = 0; n < D / 8; ++n) {
                *(float2 *) (out + 8 * n + 2 * t) = make_float2(o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
            }
        } else {
            const int64_t at = ((int64_t) kvh * nsplit + split) * rows + r;
            float * out = p.part_o + at * D;
#pragma unroll
            for (int n = 0; n < D / 8; ++n) {
                *(float2 *) (out + 8 * n + 2 * t) = make_float2(o[n][2 * i], o[n][2 * i + 1]);
            }
            if (t == 0) {
                p.part_ml[at] = make_float2(mx[i], sum[i]);
            }
        }
    }
}

// One block per (KV head, row): the splits' partial outputs, weighted by
// 2^(max_s - max).
__global__ void __launch_bounds__(THREADS_COMBINE) combine_kernel(const Params p) {
    grid_release();
    grid_wait();
    const int d = threadIdx.x;
    const int kvh = blockIdx.x, r = blockIdx.y, nsplit = p.nsplit;
    const int rows = block_rows(p);
    const int64_t at0 = (int64_t) kvh * nsplit * rows + r;
    float m = -INFINITY;
    for (int s = 0; s < nsplit; ++s) {
        m = fmaxf(m, p.part_ml[at0 + (int64_t) s * rows].x);
    }
    const float base = m == -INFINITY ? 0.0f : m;
    float l = 0.0f, acc = 0.0f;
    for (int s = 0; s < nsplit; ++s) {
        const int64_t at = at0 + (int64_t) s * rows;
        const float2 ml = p.part_ml[at];
        const float w = exp2f(ml.x - base);
        l += w * ml.y;
        acc += w * p.part_o[at * D + d];
    }
    p.dst[((int64_t) row_query(r, p.nq) * p.nh + row_head(p, kvh, r)) * D + d] = l > 0.0f ? acc / l : 0.0f;
}

// Whether the kernel takes this shape: head size D, 1..MAX_Q queries, query
// heads a multiple of the KV heads with (nh / nkv) * nq rows for 8 warps.
static inline bool supported(int64_t head_dim, int64_t nq, int64_t nh, int64_t nkv) {
    return head_dim == D && nq >= 1 && nq <= MAX_Q && nkv > 0 && nh % nkv == 0 &&
           (nh / nkv) * nq <= 16 * MAX_WARPS;
}

// Queries one launch takes with `gqa` query heads per KV head: as many as
// fill the 8 warps' rows, up to MAX_Q.
static inline int max_queries(int64_t gqa) {
    return gqa < 1 ? 0 : (int) std::min<int64_t>(MAX_Q, 16 * MAX_WARPS / gqa);
}

// How plan() splits the cache: blocks per SM wanted for a long cache, the
// fewest chunks a split takes then, and the stages (attn-test.cu times
// others). Measured on the H200 (attn-test.cu, with PDL, 1.7B's heads, 16
// queries): two stages at two blocks a SM take 52.6 us over 32768 slots and
// 19.6 us over 8192, where one stage at four a SM took 58.5 and 30.2; more
// blocks a SM than two stages' shared memory lets run at once were slower.
struct Tuning {
    int per_sm = 2;
    int min_chunks = 4;
    int stages = 2;
};

// Sets p.split_len, p.nsplit and p.stages: the n_kv slots split in whole
// chunks over about one block per SM in all (n_sm), and over up to t.per_sm
// a SM for a long cache (no more than fit in a SM's shared memory, smem_optin
// being the most a block may have), each split at least t.min_chunks chunks
// long: a block of a few queries has a warp or two, too few alone to keep a
// SM's memory requests in flight. Stages that do not fit in smem_optin are
// fewer.
static inline void plan(Params & p, int n_sm, size_t smem_optin, const Tuning & t = Tuning()) {
    int stages = t.stages < 1 ? 1 : t.stages > MAX_STAGES ? MAX_STAGES : t.stages;
    while (stages > 1 && smem_bytes(stages) > smem_optin) {
        --stages;
    }
    p.stages = stages;
    // A SM has about 1 KB more than a block may take, and keeps 1 KB a block.
    const int fit = (int) ((smem_optin + 1024) / (smem_bytes(stages) + 1024));
    const int per_sm = std::max(1, std::min(t.per_sm, fit));
    const int chunks = (p.n_kv + CHUNK - 1) / CHUNK;
    int want = n_sm / p.nkv;
    want = want < 1 ? 1 : want > chunks ? chunks : want;
    const int long_want = std::min(per_sm * n_sm / p.nkv, chunks / t.min_chunks);
    want = std::max(want, long_want);
    p.split_len = CHUNK * ((chunks + want - 1) / want);
    p.nsplit = (p.n_kv + p.split_len - 1) / p.split_len;
}

// Bytes of scratch launch() needs after plan(): the splits' partial results
// (0 for one split).
static inline size_t scratch_bytes(const Params & p) {
    if (p.nsplit <= 1) {
        return 0;
    }
    return (size_t) p.nkv * p.nsplit * block_rows(p) * (D * sizeof(float) + sizeof(float2));
}

// After plan(), with scratch_bytes() of 8-byte aligned scratch. Asynchronous on
// `stream`; with PDL when orthrus_launch::use_pdl().
static inline void launch(Params p, void * scratch, cudaStream_t stream) {
    const int rows = block_rows(p);
    if (p.nsplit > 1) {
        p.part_o = (float *) scratch;
        p.part_ml = (float2 *) (p.part_o + (size_t) p.nkv * p.nsplit * rows * D);
    }
    const dim3 grid(p.nkv, p.nsplit), block(32, (rows + 15) / 16);
    // Above 48 KB of dynamic shared memory a kernel must be allowed it, once
    // on each device.
    static bool allowed[64] = {};
    int device = 0;
    cudaGetDevice(&device);
    if (device >= 0 && device < 64 && !allowed[device]) {
        cudaFuncSetAttribute(attn_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int) smem_bytes(1));
        cudaFuncSetAttribute(attn_kernel<2>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int) smem_bytes(2));
        allowed[device] = true;
    }
    if (p.stages >= 2) {
        launch_kernel(attn_kernel<2>, grid, block, smem_bytes(2), stream, p);
    } else {
        launch_kernel(attn_kernel<1>, grid, block, smem_bytes(1), stream, p);
    }
    if (p.nsplit > 1) {
        launch_kernel(combine_kernel, dim3(p.nkv, rows), dim3(THREADS_COMBINE), 0, stream, p);
    }
}

}  // namespace orthrus_attn
