// Tests and times kernels/cuda/argmax.cuh on the GPU, without ggml:
//   nvcc -O3 -std=c++17 -arch=sm_90a -o argmax-test kernels/cuda/argmax-test.cu && ./argmax-test
// Rows of random values with planted ties (across splits too), NaNs, +inf and
// rows of nothing above -inf, for row lengths around the split and vector
// sizes, aligned and not, with one SM's plan and the GPU's; each index
// against the reference's, with and without programmatic dependent launch.
// Then times rows of Qwen3's vocabulary against one block a row (ggml-cuda's
// way). Exit status 1 on any failed check.
#include "argmax.cuh"
#include "test-util.cuh"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using namespace orthrus_argmax;

static std::mt19937 rng(1234);

// The lower index of the largest value; NaN never wins; 0 with none above -inf.
static int reference(const float * r, int n) {
    float v = -INFINITY;
    int i = 0;
    for (int c = 0; c < n; ++c) {
        if (r[c] > v) {
            v = r[c];
            i = c;
        }
    }
    return i;
}

// One block a row, its threads striding over the row (as ggml-cuda's argmax):
// the baseline timed below.
static __global__ void one_block_kernel(const float * x, int ncols, int32_t * dst) {
    const float * r = x + (int64_t) blockIdx.x * ncols;
    float v = -INFINITY;
    int i = 0;
    for (int c = threadIdx.x; c < ncols; c += blockDim.x) {
        take(v, i, r[c], c);
    }
    warp_best(v, i);
    __shared__ float sv[32];
    __shared__ int si[32];
    if (threadIdx.x % 32 == 0) {
        sv[threadIdx.x / 32] = v;
        si[threadIdx.x / 32] = i;
    }
    __syncthreads();
    if (threadIdx.x < 32) {
        v = threadIdx.x < blockDim.x / 32 ? sv[threadIdx.x] : -INFINITY;
        i = threadIdx.x < blockDim.x / 32 ? si[threadIdx.x] : INT_MAX;
        warp_best(v, i);
        if (threadIdx.x == 0) {
            dst[blockIdx.x] = i;
        }
    }
}

struct Case {
    int ncols, nrows;
    int64_t s1;  // row stride, >= ncols
    int offset;  // floats from a 16-byte boundary to the first row
};

// Row r: uniform values, then plant_specials' (11 the maximum, planted
// across splits).
static std::vector<float> make(const Case & c) {
    std::vector<float> h(c.offset + c.s1 * c.nrows, 7.0f);
    std::uniform_real_distribution<float> u(-10.0f, 10.0f);
    for (int r = 0; r < c.nrows; ++r) {
        float * row = h.data() + c.offset + c.s1 * r;
        for (int k = 0; k < c.ncols; ++k) {
            row[k] = u(rng);
        }
        plant_specials(row, r, c.ncols, 11.0f);
    }
    return h;
}

int main() {
    int failures = 0;
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s (sm_%d%d), %d SMs\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);

    const Case cases[] = {
        {1, 1, 1, 0},          {3, 4, 3, 0},           {4, 3, 4, 0},          {5, 7, 8, 0},
        {1000, 16, 1000, 0},   {4096, 3, 4096, 0},     {4097, 5, 4100, 0},    {MIN_SPLIT * 3 + 5, 17, MIN_SPLIT * 3 + 8, 0},
        {65539, 2, 65540, 1},  {151936, 1, 151936, 0}, {151936, 16, 151936, 0}, {151936, 32, 151936, 2},
        {151937, 9, 151937, 0}, {151936, 33, 151940, 0},
    };
    for (const Case & c : cases) {
        const std::vector<float> h = make(c);
        float * dx;
        int32_t * ddst;
        CHECK(cudaMalloc(&dx, h.size() * sizeof(float)));
        CHECK(cudaMemcpy(dx, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
        CHECK(cudaMalloc(&ddst, c.nrows * sizeof(int32_t)));
        for (int nsm : {1, prop.multiProcessorCount}) {
            void * scratch;
            CHECK(cudaMalloc(&scratch, scratch_bytes(c.ncols, c.nrows, nsm)));
            for (bool pdl : {false, true}) {
                orthrus_launch::use_pdl() = pdl;
                CHECK(cudaMemset(ddst, 0xff, c.nrows * sizeof(int32_t)));
                launch(dx + c.offset, c.ncols, c.nrows, c.s1, ddst, scratch, nsm, 0);
                CHECK(cudaGetLastError());
                std::vector<int32_t> got(c.nrows);
                CHECK(cudaMemcpy(got.data(), ddst, c.nrows * sizeof(int32_t), cudaMemcpyDeviceToHost));
                int bad = 0;
                for (int r = 0; r < c.nrows; ++r) {
                    const int want = reference(h.data() + c.offset + c.s1 * r, c.ncols);
                    if (got[r] != want) {
                        if (bad++ < 3) {
                            printf("  row %d: %d, want %d\n", r, got[r], want);
                        }
                    }
                }
                const Plan p = plan(c.ncols, c.nrows, nsm);
                printf("%-4s ncols %6d rows %2d stride %6lld offset %d, %2d SMs (%3d splits of %6d)%s: %s\n",
                       bad ? "FAIL" : "ok", c.ncols, c.nrows, (long long) c.s1, c.offset, nsm, p.nsplit, p.split_len,
                       pdl ? ", PDL" : "", bad ? "wrong rows" : "every row");
                failures += bad != 0;
            }
            orthrus_launch::use_pdl() = false;
            CHECK(cudaFree(scratch));
        }
        CHECK(cudaFree(dx));
        CHECK(cudaFree(ddst));
    }

    // Timing: rows of Qwen3's vocabulary (a one-token pass, blocks of 16 and 32).
    const int ncols = 151936;
    for (int nrows : {1, 16, 32}) {
        const Case c{ncols, nrows, ncols, 0};
        const std::vector<float> h = make(c);
        float * dx;
        int32_t * ddst;
        void * scratch;
        CHECK(cudaMalloc(&dx, h.size() * sizeof(float)));
        CHECK(cudaMemcpy(dx, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
        CHECK(cudaMalloc(&ddst, nrows * sizeof(int32_t)));
        CHECK(cudaMalloc(&scratch, scratch_bytes(ncols, nrows, prop.multiProcessorCount)));
        const float ours = graph_us([&](cudaStream_t s) {
            launch(dx, ncols, nrows, ncols, ddst, scratch, prop.multiProcessorCount, s);
        });
        const float ours_pdl = graph_us_with_pdl([&](cudaStream_t s) {
            launch(dx, ncols, nrows, ncols, ddst, scratch, prop.multiProcessorCount, s);
        });
        const float one_block = graph_us([&](cudaStream_t s) { one_block_kernel<<<nrows, 1024, 0, s>>>(dx, ncols, ddst); });
        printf("time ncols %d rows %2d: %.2f us (%.2f with PDL), one block a row %.2f us\n", ncols, nrows, ours, ours_pdl,
               one_block);
        CHECK(cudaFree(dx));
        CHECK(cudaFree(ddst));
        CHECK(cudaFree(scratch));
    }
    printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
