// The k largest of each row of f32 values: a sampled pass's candidates.
//
// Sampling needs only each row's top-k logits, so the engine asks the graph
// for them (GGML_OP_TOP_K) instead of copying 151936 logits a row to the
// host. ggml-cuda computes that op by sorting whole rows with CUB: one
// device-wide radix sort for a row, a segmented one (a block a row) for
// several; on the H100 a sampled 16-row pass then took about 1 ms longer than
// a greedy one. Sorting is more than the op needs: here each block takes a
// chunk of CHUNK values (PER_THREAD a thread, in registers) and finds its k
// best by radix select, the k-th largest value's bits a byte at a time (a
// 256-bin histogram in shared memory each), so that each value is read once
// and nothing is sorted. The chunks' winners are selected again until one
// chunk is left per row; only its k are sorted.
//
// The result is the set of the k largest, ties going to the lower index
// (where more values equal the k-th largest than fit, a second radix select
// on their indices); NaN counts as -inf and -0 as +0. The indices come out
// best first (ggml promises no order). Self-contained (CUDA runtime only) so
// that kernels/cuda/topk-test.cu tests it without ggml;
// kernels/cuda/ggml-hook.cu puts it into ggml-cuda.
#pragma once

#include <cuda_runtime.h>
#include <climits>
#include <cmath>
#include <cstdint>

#include "orthrus-launch.cuh"

namespace orthrus_topk {

using orthrus_launch::grid_release;
using orthrus_launch::grid_wait;
using orthrus_launch::launch_kernel_as;

constexpr int THREADS = 512;
constexpr int PER_THREAD = 16;
constexpr int CHUNK = THREADS * PER_THREAD;  // values a block selects from
constexpr int MAX_K = CHUNK / 8;             // so that each round leaves at most an eighth
constexpr int MAX_ROWS = 65535;              // grid.y

// A value's place in the order as an unsigned int: larger key, larger value;
// NaN as -inf, -0 as +0 (equal floats, equal keys).
static __device__ __forceinline__ uint32_t key_of(float v) {
    v = isnan(v) ? -INFINITY : v;
    v = v == 0.0f ? 0.0f : v;
    const uint32_t b = __float_as_uint(v);
    return b & 0x80000000u ? ~b : b | 0x80000000u;
}

// A chunk's slot that holds nothing (past the row's end, or a round's
// padding): below every value's key.
constexpr uint32_t NO_KEY = 0;

struct Shared {
    unsigned hist[256];
    uint32_t prefix;  // the digits of the k-th largest found so far
    unsigned krem;    // how many of the k are still to be found among the keys matching prefix
    unsigned taken;   // winners' slots handed out
    unsigned claims;  // the last place's claims among equal (key, index) pairs
};

// The k-th largest of the block's keys whose bit in `live` is set (k at most
// their count), by radix select; *equal_to_take: how many keys equal to it are
// among the k, *equal (unless null): how many live keys equal it. Every
// thread calls it.
static __device__ uint32_t kth_largest(const uint32_t (&key)[PER_THREAD], unsigned live, unsigned k, Shared & s,
                                       unsigned * equal_to_take, unsigned * equal) {
    uint32_t prefix = 0;
    unsigned krem = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        __syncthreads();  // the last pass's readers of hist and prefix are done
        for (int b = threadIdx.x; b < 256; b += THREADS) {
            s.hist[b] = 0;
        }
        __syncthreads();
        const uint32_t high = shift == 24 ? 0u : ~0u << (shift + 8);
#pragma unroll
        for (int j = 0; j < PER_THREAD; ++j) {
            if ((live >> j & 1u) && (key[j] & high) == prefix) {
                atomicAdd(&s.hist[(key[j] >> shift) & 255u], 1u);
            }
        }
        __syncthreads();
        if (threadIdx.x < 32) {
            // Lane l's bins are 255 - 8l down to 248 - 8l: the lanes' sums
            // scanned from the top find the bin where the count reaches krem.
            const int lane = threadIdx.x;
            unsigned c[8], sum = 0;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                c[i] = s.hist[255 - 8 * lane - i];
                sum += c[i];
            }
            unsigned incl = sum;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const unsigned n = __shfl_up_sync(0xFFFFFFFFu, incl, o);
                incl += lane >= o ? n : 0u;
            }
            const unsigned excl = incl - sum;
            if (excl < krem && incl >= krem) {
                unsigned above = excl;
                int i = 0;
                while (above + c[i] < krem) {
                    above += c[i++];
                }
                s.prefix = prefix | ((uint32_t) (255 - 8 * lane - i) << shift);
                s.krem = krem - above;
            }
        }
        __syncthreads();
        prefix = s.prefix;
        krem = s.krem;
    }
    *equal_to_take = krem;
    if (equal) {
        *equal = s.hist[prefix & 255u];
    }
    return prefix;
}

// Sorts s_key / s_idx[0, n) best first (larger key, then lower index), n a
// power of two up to MAX_K: a bitonic network. Thread t takes pairs t, t +
// THREADS, ...: a warp's 32 pairs at a stride of at most 32 lie in 64 values
// of their own, so such steps wait for the warp alone.
static __device__ void sort_best_first(uint32_t * s_key, int * s_idx, int n) {
    __syncthreads();
    for (int size = 2; size <= n; size <<= 1) {
        for (int stride = size / 2; stride > 0; stride >>= 1) {
            if (stride >= 64 || (stride == 32 && size >= 128)) {
                __syncthreads();
            } else {
                __syncwarp();
            }
            for (int t = threadIdx.x; t < n / 2; t += THREADS) {
                const int lo = 2 * t - (t & (stride - 1));
                const int hi = lo + stride;
                // Runs of `size` alternate: best first, then best last, so
                // that each pair of runs is bitonic for the next size.
                const bool best_first = (lo & size) == 0;
                const uint32_t a = s_key[lo], b = s_key[hi];
                const int ia = s_idx[lo], ib = s_idx[hi];
                const bool a_before = a > b || (a == b && ia < ib);
                if (a_before != best_first) {
                    s_key[lo] = b;
                    s_key[hi] = a;
                    s_idx[lo] = ib;
                    s_idx[hi] = ia;
                }
            }
        }
    }
    __syncthreads();
}

// Block (chunk, row): the k best of the row's n values in [chunk * CHUNK,
// +CHUNK): FIRST, floats x[row * s1 + i] at index i; else keys and indices
// (xk, xi) as a round before left them. LAST (one chunk a row): their indices
// sorted best first into out_i[row * k, +k); else the winners' keys and
// indices, in no order, into out_k / out_i[(row * chunks + chunk) * k, +k)
// (padding where the chunk has fewer than k).
template <bool FIRST, bool LAST>
static __global__ void __launch_bounds__(THREADS)
    select_kernel(const float * x, const uint32_t * xk, const int * xi, int n, int64_t s1, int k, uint32_t * out_k,
                  int * out_i) {
    __shared__ Shared s;
    __shared__ uint32_t s_key[LAST ? MAX_K : 1];
    __shared__ int s_idx[LAST ? MAX_K : 1];
    const int chunk = blockIdx.x, row = blockIdx.y;
    const int begin = chunk * CHUNK;
    const int have = min(CHUNK, n - begin);  // the chunk's values
    const int64_t in = row * s1 + begin;
    if (threadIdx.x == 0) {
        s.taken = 0;
        s.claims = 0;
    }
    grid_wait();
    uint32_t key[PER_THREAD];
    unsigned live = 0;
#pragma unroll
    for (int j = 0; j < PER_THREAD; ++j) {
        const int p = threadIdx.x + THREADS * j;
        key[j] = NO_KEY;
        if (p < have) {
            key[j] = FIRST ? key_of(x[in + p]) : xk[in + p];
            live |= 1u << j;
        }
    }
    const auto index_of = [&](int j) {
        const int p = threadIdx.x + THREADS * j;
        return FIRST ? begin + p : xi[in + p];
    };

    // The winners: keys above the k-th largest, and of those equal to it the
    // lowest indices (taken whole when all of them fit).
    uint32_t kth = 0, kth_index = 0;  // kth_index as the complement, so that larger is better
    unsigned tie_take = 0, tie_equal = 0, last_take = 0;
    if (have > k) {
        kth = kth_largest(key, live, (unsigned) k, s, &tie_take, &tie_equal);
        if (tie_equal > tie_take) {
            uint32_t rank[PER_THREAD];
            unsigned tied = 0;
#pragma unroll
            for (int j = 0; j < PER_THREAD; ++j) {
                rank[j] = 0;
                if ((live >> j & 1u) && key[j] == kth) {
                    rank[j] = ~(uint32_t) index_of(j);
                    tied |= 1u << j;
                }
            }
            kth_index = kth_largest(rank, tied, tie_take, s, &last_take, nullptr);
        }
    }
    __syncthreads();
    const int64_t out = LAST ? 0 : ((int64_t) row * gridDim.x + chunk) * k;
#pragma unroll
    for (int j = 0; j < PER_THREAD; ++j) {
        if (!(live >> j & 1u)) {
            continue;
        }
        bool win = have <= k || key[j] > kth;
        int idx = 0;
        if (!win && key[j] == kth) {
            idx = index_of(j);
            const uint32_t r = ~(uint32_t) idx;
            // Equal (key, index) pairs are a round's padding, all alike:
            // any of them serve.
            win = tie_equal == tie_take || r > kth_index ||
                  (r == kth_index && atomicAdd(&s.claims, 1u) < last_take);
        } else if (win) {
            idx = index_of(j);
        }
        if (win) {
            const unsigned slot = atomicAdd(&s.taken, 1u);
            if (LAST) {
                s_key[slot] = key[j];
                s_idx[slot] = idx;
            } else {
                out_k[out + slot] = key[j];
                out_i[out + slot] = idx;
            }
        }
    }
    // Padding, below every value, after the winners: in a chunk of fewer
    // than k, up to k; in the last round, up to the sort's power of two.
    int size = 1;
    while (LAST && size < k) {
        size <<= 1;
    }
    for (int slot = min(have, k) + threadIdx.x; slot < (LAST ? size : k); slot += THREADS) {
        if (LAST) {
            s_key[slot] = NO_KEY;
            s_idx[slot] = INT_MAX;
        } else {
            out_k[out + slot] = NO_KEY;
            out_i[out + slot] = INT_MAX;
        }
    }
    if (LAST) {
        sort_best_first(s_key, s_idx, size);
        for (int t = threadIdx.x; t < k; t += THREADS) {
            out_i[(int64_t) row * k + t] = s_idx[t];
        }
    }
    grid_release();
}

inline int chunks(int n) {
    return (n + CHUNK - 1) / CHUNK;
}

// Scratch launch() needs: two buffers of the first round's winners.
inline size_t scratch_bytes(int ncols, int nrows, int k) {
    const int c = chunks(ncols);
    return c > 1 ? 2 * (size_t) c * k * nrows * (sizeof(uint32_t) + sizeof(int)) : 0;
}

inline bool supported(int64_t ncols, int64_t nrows, int64_t k) {
    // Chunk offsets (begin + CHUNK) stay ints.
    return k >= 1 && k <= MAX_K && k <= ncols && ncols <= INT_MAX - CHUNK && nrows >= 1 && nrows <= MAX_ROWS;
}

// dst[r * k, ...) = the indices of the k largest of x[r * s1 + 0 .. ncols),
// r < nrows, best first; scratch of scratch_bytes() (4-byte aligned).
// Launched without PDL whatever use_pdl() says: on the H100 one run of
// topk-test.cu's PDL launches gave one row of 2 x 151936 (k 1024) a wrong
// index, where every launch without PDL, in two runs, was right. The inputs,
// written by the kernel before, were const __restrict__ then, which allows
// non-coherent loads, and with PDL that kernel may still be running when
// this one starts; they are plain pointers now, but that form has not run
// with PDL.
inline void launch(const float * x, int ncols, int nrows, int64_t s1, int k, int32_t * dst, void * scratch,
                   cudaStream_t stream) {
    const size_t cap = (size_t) chunks(ncols) * k * nrows;
    uint32_t * kbuf[2] = {static_cast<uint32_t *>(scratch), static_cast<uint32_t *>(scratch) + cap};
    int * ibuf[2] = {reinterpret_cast<int *>(kbuf[1] + cap), reinterpret_cast<int *>(kbuf[1] + cap) + cap};
    const uint32_t * in_k = nullptr;
    const int * in_i = nullptr;
    int n = ncols;
    int64_t in_s1 = s1;
    for (int round = 0;; ++round) {
        const int c = chunks(n);
        const bool first = round == 0, last = c == 1;
        uint32_t * out_k = last ? nullptr : kbuf[round % 2];
        int * out_i = last ? dst : ibuf[round % 2];
        auto kernel = first ? (last ? select_kernel<true, true> : select_kernel<true, false>)
                            : (last ? select_kernel<false, true> : select_kernel<false, false>);
        launch_kernel_as(false, kernel, dim3(c, nrows), dim3(THREADS), 0, stream, x, in_k, in_i, n, in_s1, k, out_k,
                         out_i);
        if (last) {
            return;
        }
        // Each round leaves k of every CHUNK (k <= CHUNK / 8): at most an
        // eighth and one chunk's k, so rounds end and fit the buffers.
        in_k = out_k;
        in_i = out_i;
        n = c * k;
        in_s1 = n;
    }
}

}  // namespace orthrus_topk
