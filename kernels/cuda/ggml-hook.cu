// kernels/cuda/mmv.cuh inside ggml-cuda: scripts/gpu/patch-ggml.py copies this
// file and mmv.cuh into ggml/src/ggml-cuda/ (whose CMake globs *.cu) and calls
// ggml_cuda_orthrus_mul_mat at the top of ggml_cuda_mul_mat.
//
// ORTHRUS_MMV (read once): 0 = off (ggml's own kernels everywhere);
// 1 = the default, products of 2..16 columns; 2 = 1..16 columns, and ggml's
// fused one-column matrix-vector paths off, so that every product of up to 16
// columns sums each column the same way (batch-invariant decoding).
#include "common.cuh"

#include "orthrus-mmv.cuh"

#include <algorithm>
#include <cstdlib>

int ggml_cuda_orthrus_mmv_mode() {
    static const int mode = [] {
        const char * e = getenv("ORTHRUS_MMV");
        return e && *e ? atoi(e) : 1;
    }();
    return mode;
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
    if (!orthrus_mmv::supported(k, ncols) || (mode == 1 && ncols < 2)) {
        return false;
    }

    cudaStream_t stream = ctx.stream();
    ggml_cuda_pool_alloc<char> acts(ctx.pool(), orthrus_mmv::acts_bytes(k, (int) ncols));
    const int64_t ts = sizeof(float);
    orthrus_mmv::quantize(type, (const float *) src1->data, k, (int) ncols, src1->ne[1], src1->ne[2], src1->nb[1] / ts,
                          src1->nb[2] / ts, src1->nb[3] / ts, acts.get(), stream);
    orthrus_mmv::launch(type, src0->data, acts.get(), (float *) dst->data, k, nrows, (int) ncols, src0->nb[1], nrows,
                        stream);
    CUDA_CHECK(cudaGetLastError());
    return true;
}
