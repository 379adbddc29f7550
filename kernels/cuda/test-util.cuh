// What kernels/cuda/*-test.cu share: CUDA error checks and timing.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "orthrus-launch.cuh"

#define CHECK(x)                                                                             \
    do {                                                                                     \
        cudaError_t e_ = (x);                                                                \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(2);                                                                         \
        }                                                                                    \
    } while (0)

// Microseconds per call of launch(stream) as a decoding pass runs it: many
// calls captured in one CUDA graph, so that the CPU's launch cost (a few
// microseconds a kernel, more than these kernels take) is not what is timed.
template <class F>
static float graph_us(F && launch, int per_graph = 20, int reps = 25) {
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaGraph_t g;
    cudaGraphExec_t e;
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < per_graph; ++i) {
        launch(s);
    }
    CHECK(cudaStreamEndCapture(s, &g));
    CHECK(cudaGraphInstantiate(&e, g, 0));
    for (int i = 0; i < 3; ++i) {
        CHECK(cudaGraphLaunch(e, s));
    }
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    CHECK(cudaEventRecord(a, s));
    for (int i = 0; i < reps; ++i) {
        CHECK(cudaGraphLaunch(e, s));
    }
    CHECK(cudaEventRecord(b, s));
    CHECK(cudaEventSynchronize(b));
    float ms = 0.0f;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaGraphExecDestroy(e);
    cudaGraphDestroy(g);
    cudaStreamDestroy(s);
    return 1000.0f * ms / (reps * per_graph);
}

// Whether launch(stream) writes the same n floats at dst with programmatic
// dependent launch (orthrus_launch::use_pdl) as without; and graph_us() of it
// with PDL. Both leave PDL off.
template <class F>
static bool same_with_pdl(F && launch, float * dst, size_t n) {
    std::vector<float> off(n), on(n);
    launch((cudaStream_t) 0);
    CHECK(cudaMemcpy(off.data(), dst, n * sizeof(float), cudaMemcpyDeviceToHost));
    orthrus_launch::use_pdl() = true;
    CHECK(cudaMemset(dst, 0, n * sizeof(float)));
    launch((cudaStream_t) 0);
    CHECK(cudaMemcpy(on.data(), dst, n * sizeof(float), cudaMemcpyDeviceToHost));
    orthrus_launch::use_pdl() = false;
    return memcmp(off.data(), on.data(), n * sizeof(float)) == 0;
}
template <class F>
static float graph_us_with_pdl(F && launch) {
    orthrus_launch::use_pdl() = true;
    const float us = graph_us(launch);
    orthrus_launch::use_pdl() = false;
    return us;
}

// What the row tests (argmax, top-k) plant in row r of ncols values, after
// their own values: every third row `top` at several places (one near each
// end, so across a row's splits or chunks); every fifth a NaN every 97th
// value; row 1 two +inf; row 2 nothing above -inf (NaN and -inf).
static void plant_specials(float * row, int r, int ncols, float top) {
    if (r % 3 == 0) {
        for (int k : {ncols - 1, ncols / 2, 1, ncols / 3}) {
            if (k >= 0 && k < ncols) {
                row[k] = top;
            }
        }
    }
    if (r % 5 == 4) {
        for (int k = 0; k < ncols; k += 97) {
            row[k] = NAN;
        }
    }
    if (r == 1) {
        row[ncols - 1] = INFINITY;
        row[ncols / 2] = INFINITY;
    }
    if (r == 2) {
        for (int k = 0; k < ncols; ++k) {
            row[k] = k % 2 ? NAN : -INFINITY;
        }
    }
}
