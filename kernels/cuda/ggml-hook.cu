// kernels/cuda/mmv.cuh inside ggml-cuda: scripts/gpu/patch-ggml.py copies this
// file and mmv.cuh into ggml/src/ggml-cuda/ (whose CMake globs *.cu) and calls
// ggml_cuda_orthrus_mul_mat at the top of ggml_cuda_mul_mat.
//
// The mode: ORTHRUS_MMV in the environment, else what the engine set through
// ggml_cuda_orthrus_set_mmv_mode, else 1.
//   0: off, ggml's own kernels everywhere.
//   1: Q4_K and Q6_K products of 3..16 columns. Measured on the H200,
//      2026-12-01: for 2 columns ggml's matrix-vector kernel is quicker, and
//      for Q8_0 ggml's kernels are at every count (ours pays 2-byte loads and
//      a float scale per 32 values on both sides).
//   2: Q4_K, Q6_K and Q8_0 products of 1..64 columns (16 at a time), and no
//      fused one-column matrix-vector products of ggml's: every product of a
//      decoding pass then sums each column as it would alone (exact decoding).
#include "common.cuh"

#include "orthrus-mmv.cuh"

#include <algorithm>
#include <atomic>
#include <cstdlib>

// The mode; ORTHRUS_MMV, when set, wins over ggml_cuda_orthrus_set_mmv_mode.
static std::atomic<int> g_mmv_mode{-1};
static const char * mmv_env() {
    const char * e = getenv("ORTHRUS_MMV");
    return e && *e ? e : nullptr;
}

int ggml_cuda_orthrus_mmv_mode() {
    int mode = g_mmv_mode.load(std::memory_order_relaxed);
    if (mode < 0) {
        mode = mmv_env() ? atoi(mmv_env()) : 1;
        g_mmv_mode.store(mode, std::memory_order_relaxed);
    }
    return mode;
}

// Exported through the CUDA registry's get_proc_address (patch-ggml.py) as
// "ggml_backend_cuda_orthrus_set_mmv_mode": sets the mode (0, 1 or 2) for
// the graphs computed from now on, unless ORTHRUS_MMV is set; returns the
// mode in effect.
int ggml_cuda_orthrus_set_mmv_mode(int mode) {
    if (!mmv_env() && mode >= 0 && mode <= 2) {
        g_mmv_mode.store(mode, std::memory_order_relaxed);
    }
    return ggml_cuda_orthrus_mmv_mode();
}

bool ggml_cuda_orthrus_mul_mat(ggml_backend_cuda_context & ctx, const ggml_tensor * src0, const ggml_tensor * src1,
                               ggml_tensor * dst) {
    const int mode = ggml_cuda_orthrus_mmv_mode();
    if (mode <= 0) {
        return false;
    }
    orthrus_mmv::WType type;
    switch (src0->type) {
        case GGML_TYPE_Q4_K: type = orthrus_mmv::WType::Q4_K; break;
        case GGML_TYPE_Q6_K: type = orthrus_mmv::WType::Q6_K; break;
        case GGML_TYPE_Q8_0: type = orthrus_mmv::WType::Q8_0; break;
        default: return false;
    }
    const int cc = ggml_cuda_info().devices[ctx.device].cc;
    if (!GGML_CUDA_CC_IS_NVIDIA(cc) || cc < GGML_CUDA_CC_AMPERE) {
        return false;
    }
    const int64_t k = src0->ne[0];
    const int64_t nrows = src0->ne[1];
    const int64_t ncols = src1->ne[1] * src1->ne[2] * src1->ne[3];
    // Weights: one plain matrix in a weight buffer (no padding to clear).
    if (src0->ne[2] != 1 || src0->ne[3] != 1 || src0->nb[0] != ggml_type_size(src0->type) ||
        src0->nb[1] != ggml_row_size(src0->type, k) || !src0->buffer ||
        ggml_backend_buffer_get_usage(src0->buffer) == GGML_BACKEND_BUFFER_USAGE_COMPUTE) {
        return false;
    }
    // Activations: f32, read 16 bytes at a time.
    if ((uintptr_t) src1->data % 16 != 0 || src1->nb[1] % 16 != 0 || src1->nb[2] % 16 != 0 || src1->nb[3] % 16 != 0) {
        return false;
    }
    if (src1->type != GGML_TYPE_F32 || dst->type != GGML_TYPE_F32 || src1->nb[0] != sizeof(float) ||
        !ggml_is_contiguous(dst) || dst->ne[0] != nrows || nrows > INT32_MAX) {
        return false;
    }
    // Mode 2 takes up to 64 columns, 16 at a time (a verify pass of a larger
    // block stays batch-invariant; a prompt's chunks go to ggml's MMQ).
    const int64_t max_cols = mode == 2 ? 4 * orthrus_mmv::MAX_COLS : orthrus_mmv::MAX_COLS;
    if (!orthrus_mmv::supported(k) || ncols < 1 || ncols > max_cols ||
        (mode == 1 && (ncols < 3 || type == orthrus_mmv::WType::Q8_0))) {
        return false;
    }

    cudaStream_t stream = ctx.stream();
    ggml_cuda_pool_alloc<char> acts(ctx.pool(), orthrus_mmv::acts_bytes(k, (int) std::min<int64_t>(ncols, orthrus_mmv::MAX_COLS)));
    const int64_t ts = sizeof(float);
    for (int64_t c0 = 0; c0 < ncols; c0 += orthrus_mmv::MAX_COLS) {
        const int n = (int) std::min<int64_t>(ncols - c0, orthrus_mmv::MAX_COLS);
        orthrus_mmv::quantize(type, (const float *) src1->data, k, (int) c0, n, src1->ne[1], src1->ne[2],
                              src1->nb[1] / ts, src1->nb[2] / ts, src1->nb[3] / ts, acts.get(), stream);
        orthrus_mmv::launch(type, src0->data, acts.get(), (float *) dst->data + c0 * nrows, k, nrows, n, src0->nb[1],
                            nrows, stream);
    }
    CUDA_CHECK(cudaGetLastError());
    return true;
}
