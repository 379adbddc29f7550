// Tests and times kernels/cuda/topk.cuh on the GPU, without ggml:
//   nvcc -O3 -std=c++17 -arch=sm_90a -o topk-test kernels/cuda/topk-test.cu && ./topk-test
// Rows of random values with planted ties (across chunks too), NaNs, +inf,
// +0 beside -0 and rows of nothing above -inf, for row lengths around the
// chunk, k from 1 to MAX_K, one to four rounds (chunks of fewer than k
// too), with row strides; each row's indices against the reference's, in
// three launches (launch() takes no PDL: topk.cuh says why).
// Then times rows of Qwen3's vocabulary (a one-token pass, blocks of 16 and
// 32) at the top-k of llama-server's and the reference's defaults. Exit
// status 1 on any failed check.
#include "test-util.cuh"
#include "topk.cuh"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

using namespace orthrus_topk;

static std::mt19937 rng(4321);

// The indices of the k largest, best first: larger value, then lower index;
// NaN as -inf.
static std::vector<int> reference(const float * r, int n, int k) {
    std::vector<int> idx(n);
    std::iota(idx.begin(), idx.end(), 0);
    auto val = [&](int i) { return std::isnan(r[i]) ? -INFINITY : r[i]; };
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return val(a) > val(b); });
    idx.resize(k);
    return idx;
}

struct Case {
    int ncols, nrows, k;
    int64_t s1;  // row stride, >= ncols
};

// Row r: values on a coarse grid (many ties), then plant_specials' (11 the
// maximum, planted across chunks); rows 6, 13, ...: negative values but for
// every 50th, +0 and -0 alternating (equal, ties by index).
static std::vector<float> make(const Case & c) {
    std::vector<float> h(c.s1 * c.nrows, 7.0f);
    std::uniform_int_distribution<int> u(-400, 400);
    for (int r = 0; r < c.nrows; ++r) {
        float * row = h.data() + c.s1 * r;
        for (int i = 0; i < c.ncols; ++i) {
            row[i] = u(rng) / 40.0f;
            if (r % 7 == 6) {
                row[i] = i % 50 ? row[i] - 20.0f : i % 100 ? -0.0f : 0.0f;
            }
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
        {1, 1, 1, 1},           {5, 4, 3, 5},           {5, 3, 5, 8},             {100, 7, 20, 100},
        {1024, 8, 1024, 1024},  {8191, 3, 40, 8191},    {8192, 7, 1024, 8192},    {8193, 7, 40, 8200},
        {8197, 2, 1024, 8197},  {20000, 16, 64, 20004}, {20000, 3, 1024, 20000},  {151936, 1, 40, 151936},
        {151936, 16, 40, 151936}, {151936, 33, 20, 151940}, {151936, 4, 1, 151936}, {151936, 2, 1024, 151936},
        {151937, 9, 257, 151937}, {600000, 2, 1000, 600000},
    };
    for (const Case & c : cases) {
        const std::vector<float> h = make(c);
        float * dx;
        int32_t * ddst;
        void * scratch = nullptr;
        CHECK(cudaMalloc(&dx, h.size() * sizeof(float)));
        CHECK(cudaMemcpy(dx, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
        CHECK(cudaMalloc(&ddst, (size_t) c.nrows * c.k * sizeof(int32_t)));
        if (const size_t bytes = scratch_bytes(c.ncols, c.nrows, c.k)) {
            CHECK(cudaMalloc(&scratch, bytes));
        }
        std::vector<std::vector<int>> want(c.nrows);
        for (int r = 0; r < c.nrows; ++r) {
            want[r] = reference(h.data() + c.s1 * r, c.ncols, c.k);
        }
        int bad = 0;
        for (int launches = 0; launches < 3; ++launches) {
            CHECK(cudaMemset(ddst, 0xff, (size_t) c.nrows * c.k * sizeof(int32_t)));
            launch(dx, c.ncols, c.nrows, c.s1, c.k, ddst, scratch, 0);
            CHECK(cudaGetLastError());
            std::vector<int32_t> got((size_t) c.nrows * c.k);
            CHECK(cudaMemcpy(got.data(), ddst, got.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
            for (int r = 0; r < c.nrows; ++r) {
                for (int j = 0; j < c.k; ++j) {
                    if (got[(size_t) r * c.k + j] != want[r][j]) {
                        if (bad++ < 3) {
                            printf("  launch %d, row %d, place %d: %d, want %d\n", launches, r, j,
                                   got[(size_t) r * c.k + j], want[r][j]);
                        }
                        break;
                    }
                }
            }
        }
        printf("%-4s ncols %6d rows %2d k %4d stride %6lld: %s\n", bad ? "FAIL" : "ok", c.ncols, c.nrows, c.k,
               (long long) c.s1, bad ? "wrong rows" : "every row");
        failures += bad != 0;
        CHECK(cudaFree(dx));
        CHECK(cudaFree(ddst));
        if (scratch) {
            CHECK(cudaFree(scratch));
        }
    }

    // Timing: rows of Qwen3's vocabulary.
    const int ncols = 151936;
    for (int k : {20, 40}) {
        for (int nrows : {1, 16, 32}) {
            const Case c{ncols, nrows, k, ncols};
            const std::vector<float> h = make(c);
            float * dx;
            int32_t * ddst;
            void * scratch;
            CHECK(cudaMalloc(&dx, h.size() * sizeof(float)));
            CHECK(cudaMemcpy(dx, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice));
            CHECK(cudaMalloc(&ddst, (size_t) nrows * k * sizeof(int32_t)));
            CHECK(cudaMalloc(&scratch, scratch_bytes(ncols, nrows, k)));
            const float us = graph_us([&](cudaStream_t s) { launch(dx, ncols, nrows, ncols, k, ddst, scratch, s); });
            printf("time ncols %d rows %2d k %d: %.2f us\n", ncols, nrows, k, us);
            CHECK(cudaFree(dx));
            CHECK(cudaFree(ddst));
            CHECK(cudaFree(scratch));
        }
    }
    printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
