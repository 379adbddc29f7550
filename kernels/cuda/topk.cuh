// The k largest of each row of f32 values: a sampled pass's candidates.
//
// Sampling needs only each row's top-k logits, so the engine asks the graph
// for them (GGML_OP_TOP_K) instead of copying 151936 logits a row to the
// host. ggml-cuda computes that op by sorting whole rows with CUB: one
// device-wide radix sort for a row, a segmented one (a block a row) for
// several; on the H100 a sampled 16-row pass then took about 1 ms longer than
// a greedy one. Here each block sorts a chunk of CHUNK values in shared
// memory (bitonic) and keeps its k best; the chunks' winners are chunked
// again until one chunk is left per row.
//
// The result is the set of the k largest, ties going to the lower index;
// NaN counts as -inf. The indices come out best first (ggml promises no
// order). Self-contained (CUDA runtime only) so that kernels/cuda/topk-test.cu
// tests it without ggml; kernels/cuda/ggml-hook.cu puts it into ggml-cuda.
#pragma once

#include <cuda_runtime.h>
#include <climits>
#include <cmath>
#include <cstdint>

#include "orthrus-launch.cuh"

namespace orthrus_topk {

using orthrus_launch::grid_release;
using orthrus_launch::grid_wait;
using orthrus_launch::launch_kernel;

constexpr int THREADS = 512;
constexpr int CHUNK = 4096;      // values a block sorts (32 KB of shared memory)
constexpr int MAX_K = CHUNK / 4;  // so that each round leaves at most a quarter
constexpr int MAX_ROWS = 65535;  // grid.y

// Whether (a, ia) goes before (b, ib): the larger value, then the lower index.
static __device__ __forceinline__ bool before(float a, int ia, float b, int ib) {
    return a > b || (a == b && ia < ib);
}

// Sorts v (with its indices) best first: a bitonic network over CHUNK.
// Thread t takes pairs t, t + THREADS, ...: a warp's 32 pairs at a stride of
// at most 32 lie in 64 values of their own, so such steps wait for the
// warp alone, and 27 of the 78 steps for the whole block (on the H100 a
// barrier each step made a round over 4096 values take about 45 us).
static __device__ void sort_chunk(float * v, int * idx) {
    __syncthreads();
    for (int size = 2; size <= CHUNK; size <<= 1) {
        for (int stride = size / 2; stride > 0; stride >>= 1) {
            // The block's barrier where this step or the one before spans warps.
            if (stride >= 64 || (stride == 32 && size >= 128)) {
                __syncthreads();
            } else {
                __syncwarp();
            }
            for (int t = threadIdx.x; t < CHUNK / 2; t += THREADS) {
                const int lo = 2 * t - (t & (stride - 1));
                const int hi = lo + stride;
                // Runs of `size` alternate: best first, then best last, so
                // that each pair of runs is bitonic for the next size.
                const bool best_first = (lo & size) == 0;
                const float a = v[lo], b = v[hi];
                const int ia = idx[lo], ib = idx[hi];
                if (before(a, ia, b, ib) != best_first) {
                    v[lo] = b;
                    v[hi] = a;
                    idx[lo] = ib;
                    idx[hi] = ia;
                }
            }
        }
    }
    __syncthreads();
}

// Block (chunk, row): the k best of x[row * s1 + chunk * CHUNK, ...) (n
// values a row; their indices, xi at the same places, or the positions
// themselves when FIRST) into out_i[row * out_s1 + chunk * k, ...) and, if
// out_v, their values beside.
template <bool FIRST>
static __global__ void __launch_bounds__(THREADS)
    chunk_kernel(const float * __restrict__ x, const int * __restrict__ xi, int n, int64_t s1, int k,
                 float * __restrict__ out_v, int * __restrict__ out_i, int64_t out_s1) {
    __shared__ float sv[CHUNK];
    __shared__ int si[CHUNK];
    const int chunk = blockIdx.x, row = blockIdx.y;
    const int begin = chunk * CHUNK;
    grid_wait();
    for (int t = threadIdx.x; t < CHUNK; t += THREADS) {
        const int c = begin + t;
        float v = -INFINITY;
        int i = INT_MAX;
        if (c < n) {
            v = x[row * s1 + c];
            i = FIRST ? c : xi[row * s1 + c];
            v = isnan(v) ? -INFINITY : v;
        }
        sv[t] = v;
        si[t] = i;
    }
    sort_chunk(sv, si);
    const int64_t at = row * out_s1 + (int64_t) chunk * k;
    for (int t = threadIdx.x; t < k; t += THREADS) {
        if (out_v) {
            out_v[at + t] = sv[t];
        }
        out_i[at + t] = si[t];
    }
    grid_release();
}

inline int chunks(int n) {
    return (n + CHUNK - 1) / CHUNK;
}

// Scratch launch() needs: two buffers of the first round's winners.
inline size_t scratch_bytes(int ncols, int nrows, int k) {
    const int c = chunks(ncols);
    return c > 1 ? 2 * (size_t) c * k * nrows * (sizeof(float) + sizeof(int)) : 0;
}

inline bool supported(int64_t ncols, int64_t nrows, int64_t k) {
    // Chunk offsets (begin + CHUNK) stay ints.
    return k >= 1 && k <= MAX_K && k <= ncols && ncols <= INT_MAX - CHUNK && nrows >= 1 && nrows <= MAX_ROWS;
}

// dst[r * k, ...) = the indices of the k largest of x[r * s1 + 0 .. ncols),
// r < nrows, best first; scratch of scratch_bytes() (4-byte aligned).
inline void launch(const float * x, int ncols, int nrows, int64_t s1, int k, int32_t * dst, void * scratch,
                   cudaStream_t stream) {
    const size_t cap = (size_t) chunks(ncols) * k * nrows;
    float * vbuf[2] = {static_cast<float *>(scratch), static_cast<float *>(scratch) + cap};
    int * ibuf[2] = {reinterpret_cast<int *>(vbuf[1] + cap), reinterpret_cast<int *>(vbuf[1] + cap) + cap};
    const float * in_v = x;
    const int * in_i = nullptr;
    int n = ncols;
    int64_t in_s1 = s1;
    for (int round = 0;; ++round) {
        const int c = chunks(n);
        const bool last = c == 1;
        float * out_v = last ? nullptr : vbuf[round % 2];
        int * out_i = last ? dst : ibuf[round % 2];
        const int64_t out_s1 = last ? k : (int64_t) c * k;
        launch_kernel(round == 0 ? chunk_kernel<true> : chunk_kernel<false>, dim3(c, nrows), dim3(THREADS), 0,
                      stream, in_v, in_i, n, in_s1, k, out_v, out_i, out_s1);
        if (last) {
            return;
        }
        // Each round leaves k of every CHUNK (k <= CHUNK / 4): at most a
        // quarter and one chunk's k, so rounds end and fit the buffers.
        in_v = out_v;
        in_i = out_i;
        n = c * k;
        in_s1 = out_s1;
    }
}

}  // namespace orthrus_topk
