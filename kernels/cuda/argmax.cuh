// Argmax of each row of f32 values: the last op of a greedy decoding pass.
//
// ggml-cuda's argmax gives a row one block, whose threads walk their share of
// the row one dependent load after another; over a vocabulary of 151936
// logits that is long for a single SM, on the critical path of every pass.
// Here a row is split over blocks (about two an SM in all), each thread keeps
// several 16-byte loads in flight, and a second kernel picks among the
// splits' winners.
//
// Ties go to the lower index, as ggml's CPU argmax; NaN never wins, and a
// row with no value above -inf gives 0.
// Self-contained (CUDA runtime only) so that kernels/cuda/argmax-test.cu
// tests it without ggml; kernels/cuda/ggml-hook.cu puts it into ggml-cuda.
#pragma once

#include <cuda_runtime.h>
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "orthrus-launch.cuh"

namespace orthrus_argmax {

using orthrus_launch::grid_release;
using orthrus_launch::grid_wait;
using orthrus_launch::launch_kernel;

constexpr int THREADS = 256;
constexpr int UNROLL = 4;                      // 16-byte loads in flight a thread
constexpr int MIN_SPLIT = THREADS * 4 * UNROLL;  // values a block takes at least
constexpr int MAX_ROWS = 65535;                // grid.y

// (v, i) becomes (v2, i2) where that is the better pair.
static __device__ __forceinline__ void take(float & v, int & i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) {
        v = v2;
        i = i2;
    }
}

static __device__ __forceinline__ void warp_best(float & v, int & i) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        take(v, i, __shfl_xor_sync(0xffffffffu, v, off), __shfl_xor_sync(0xffffffffu, i, off));
    }
}

// Block (split, row): the best of row[split * split_len, ...) into
// part_v/part_i[row * nsplit + split]. vec: rows are 16-byte aligned and
// split_len a multiple of 4, so whole float4s are read.
static __global__ void __launch_bounds__(THREADS)
    partial_kernel(const float * __restrict__ x, int ncols, int64_t s1, int split_len, bool vec,
                   float * __restrict__ part_v, int * __restrict__ part_i) {
    const int split = blockIdx.x, row = blockIdx.y, nsplit = gridDim.x;
    const int begin = split * split_len;
    const int end = min(ncols, begin + split_len);
    const float * r = x + row * s1;
    float v = -INFINITY;
    int i = begin;
    grid_wait();
    const int n4 = vec ? (end - begin) / 4 : 0;
    const float4 * r4 = reinterpret_cast<const float4 *>(r + begin);
    for (int base = threadIdx.x; base < n4; base += THREADS * UNROLL) {
        float4 q[UNROLL];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int k = base + u * THREADS;
            if (k < n4) {
                q[u] = r4[k];
            }
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            const int k = base + u * THREADS;
            if (k < n4) {
                const int c = begin + 4 * k;
                take(v, i, q[u].x, c);
                take(v, i, q[u].y, c + 1);
                take(v, i, q[u].z, c + 2);
                take(v, i, q[u].w, c + 3);
            }
        }
    }
    for (int c = begin + 4 * n4 + threadIdx.x; c < end; c += THREADS) {
        take(v, i, r[c], c);
    }
    warp_best(v, i);
    __shared__ float sv[THREADS / 32];
    __shared__ int si[THREADS / 32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
        sv[warp] = v;
        si[warp] = i;
    }
    __syncthreads();
    if (warp == 0) {
        v = lane < THREADS / 32 ? sv[lane] : -INFINITY;
        i = lane < THREADS / 32 ? si[lane] : INT_MAX;
        warp_best(v, i);
        if (lane == 0) {
            part_v[(int64_t) row * nsplit + split] = v;
            part_i[(int64_t) row * nsplit + split] = i;
        }
    }
    grid_release();
}

// A warp per row: the best of its splits' winners into dst[row].
static __global__ void final_kernel(const float * __restrict__ part_v, const int * __restrict__ part_i, int nsplit,
                                    int32_t * __restrict__ dst) {
    const int row = blockIdx.x;
    float v = -INFINITY;
    int i = INT_MAX;
    grid_wait();
    for (int s = threadIdx.x; s < nsplit; s += 32) {
        take(v, i, part_v[(int64_t) row * nsplit + s], part_i[(int64_t) row * nsplit + s]);
    }
    warp_best(v, i);
    if (threadIdx.x == 0) {
        dst[row] = i;
    }
    grid_release();
}

struct Plan {
    int nsplit, split_len;
};

// About two blocks an SM over all rows, none with fewer than MIN_SPLIT
// values (a row shorter than that is one split).
inline Plan plan(int ncols, int nrows, int nsm) {
    const int64_t by_len = std::max<int64_t>(1, ncols / MIN_SPLIT);
    const int64_t by_sm = std::max<int64_t>(1, (2 * (int64_t) nsm + nrows - 1) / nrows);
    const int64_t want = std::min(by_len, by_sm);
    const int64_t len = ((ncols + want - 1) / want + 3) / 4 * 4;
    return {(int) ((ncols + len - 1) / len), (int) len};
}

// Scratch launch() needs: each split's best value and index.
inline size_t scratch_bytes(int ncols, int nrows, int nsm) {
    return (size_t) plan(ncols, nrows, nsm).nsplit * nrows * (sizeof(float) + sizeof(int));
}

inline bool supported(int64_t ncols, int64_t nrows) {
    return ncols >= 1 && ncols <= INT_MAX && nrows >= 1 && nrows <= MAX_ROWS;
}

// dst[r] = argmax of x[r * s1 + 0 .. ncols), r < nrows; scratch of
// scratch_bytes() (4-byte aligned), nsm the GPU's SMs.
inline void launch(const float * x, int ncols, int nrows, int64_t s1, int32_t * dst, void * scratch, int nsm,
                   cudaStream_t stream) {
    const Plan p = plan(ncols, nrows, nsm);
    float * part_v = static_cast<float *>(scratch);
    int * part_i = reinterpret_cast<int *>(part_v + (size_t) p.nsplit * nrows);
    const bool vec = (uintptr_t) x % 16 == 0 && s1 % 4 == 0;
    launch_kernel(partial_kernel, dim3(p.nsplit, nrows), dim3(THREADS), 0, stream, x, ncols, s1, p.split_len, vec,
                  part_v, part_i);
    launch_kernel(final_kernel, dim3(nrows), dim3(32), 0, stream, (const float *) part_v, (const int *) part_i,
                  p.nsplit, dst);
}

}  // namespace orthrus_argmax
