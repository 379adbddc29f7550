// kernels/cuda/ inside ggml-cuda: kernels/cuda/CMakeLists.txt compiles this
// file into the ggml-cuda target (with mmv.cuh and attn.cuh from beside it),
// and patches/0001-ggml-cuda-orthrus-hooks.patch makes ggml-cuda.cu call
//   - ggml_cuda_orthrus_mul_mat at the top of ggml_cuda_mul_mat;
//   - ggml_cuda_orthrus_mul_mat_add from ggml-cuda's fusion loop, for a
//     MUL_MAT whose one use is an ADD (the residual connections);
//   - ggml_cuda_orthrus_norm_mul_mat first in that loop, for an RMS_NORM,
//     MUL, MUL_MAT;
//   - ggml_cuda_orthrus_flash_attn at the top of GGML_OP_FLASH_ATTN_EXT;
//   - ggml_cuda_orthrus_argmax at the top of GGML_OP_ARGMAX;
//   - ggml_cuda_orthrus_top_k at the top of GGML_OP_TOP_K.
//
// The engine sets the mode (ggml_cuda_orthrus_set_mmv_mode; 1 until then):
//   0: off, ggml's own kernels everywhere (attention too);
//   1: our matmul for Q4_K and Q6_K products of 3..32 columns, Q4_K's of 1
//      and 2 and Q4_0's of 8..32, and our attention for blocks of 2..32
//      queries. Q8_0, fewer Q4_0 columns and lone queries stay with ggml's
//      kernels, which are as quick there;
//   2: exact decoding: Q4_K, Q6_K, Q8_0 and Q4_0 products of 1..64 columns, and no
//      fused one-column products of ggml's, so every product of a decoding
//      pass sums each column as it would alone.
// Our argmax (argmax.cuh) takes every row length in modes 1 and 2, our
// top-k (topk.cuh) every k up to its MAX_K.
// Products beyond our matmul's 32 columns run 32 at a time (mode 2), blocks
// beyond what our attention takes in one launch (32 queries, 128 rows of
// queries times heads per KV head) as many launches. An RMS norm whose
// result goes to our matmul is computed with the quantizing of that result
// in one kernel, and for a later Q6_K product of it too (Prequantized); our
// kernels are launched with programmatic dependent launch
// on sm_90 and later, as ggml-cuda launches its own.
#include "ggml-cuda/common.cuh"

// From this file's directory: ggml-cuda has an mmv.cuh of its own, which the
// path above keeps apart.
#include "argmax.cuh"
#include "attn.cuh"
#include "mmv.cuh"
#include "topk.cuh"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

static std::atomic<int> g_mmv_mode{1};

int ggml_cuda_orthrus_mmv_mode() {
    return g_mmv_mode.load(std::memory_order_relaxed);
}

// Exported through the CUDA registry's get_proc_address (the patch) as
// "ggml_backend_cuda_orthrus_set_mmv_mode": sets the mode (0, 1 or 2) for
// the graphs computed from now on; returns the mode in effect.
int ggml_cuda_orthrus_set_mmv_mode(int mode) {
    if (mode >= 0 && mode <= 2) {
        g_mmv_mode.store(mode, std::memory_order_relaxed);
    }
    return ggml_cuda_orthrus_mmv_mode();
}

// Whether the context's GPU has the mma instructions our kernels use (NVIDIA, Ampere on).
static bool has_mma(const ggml_backend_cuda_context & ctx) {
    const int cc = ggml_cuda_info().devices[ctx.device].cc;
    return GGML_CUDA_CC_IS_NVIDIA(cc) && cc >= GGML_CUDA_CC_AMPERE;
}

// Sets orthrus_launch::use_pdl() for the launches that follow.
static void set_pdl(const ggml_backend_cuda_context & ctx) {
    const int cc = ggml_cuda_info().devices[ctx.device].cc;
    orthrus_launch::use_pdl() = GGML_CUDA_CC_IS_NVIDIA(cc) && cc >= GGML_CUDA_CC_HOPPER;
}

// src1 = rms_norm(x) * w, to be computed with the product.
struct NormArgs {
    const float * x;
    const float * w;
    float eps;
};

// src1 = silu(gate) * up, to be computed with the product: column c of gate
// at gate + c * gs, of up at up + c * us (floats).
struct GluArgs {
    const float * gate;
    const float * up;
    int64_t gs, us;
};

// Whether our matmul computes dst = src0 src1, by the mode and the
// tensors' types and layouts; type: src0's.
static bool takes(const ggml_backend_cuda_context & ctx, const ggml_tensor * src0, const ggml_tensor * src1,
                  const ggml_tensor * dst, orthrus_mmv::WType & type) {
    const int mode = ggml_cuda_orthrus_mmv_mode();
    if (mode <= 0) {
        return false;
    }
    switch (src0->type) {
        case GGML_TYPE_Q4_K: type = orthrus_mmv::WType::Q4_K; break;
        case GGML_TYPE_Q6_K: type = orthrus_mmv::WType::Q6_K; break;
        case GGML_TYPE_Q8_0: type = orthrus_mmv::WType::Q8_0; break;
        case GGML_TYPE_Q4_0: type = orthrus_mmv::WType::Q4_0; break;
        default: return false;
    }
    if (!has_mma(ctx)) {
        return false;
    }
    const int64_t k = src0->ne[0];
    const int64_t nrows = src0->ne[1];
    const int64_t ncols = src1->ne[1] * src1->ne[2] * src1->ne[3];
    // Weights: one plain matrix in a weight buffer (no padding to clear),
    // 16-byte aligned (Q4_K's blocks are read 16 bytes at a time).
    if ((uintptr_t) src0->data % 16 != 0 || src0->ne[2] != 1 || src0->ne[3] != 1 || src0->nb[0] != ggml_type_size(src0->type) ||
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
    // Mode 1 takes a block of up to 32 columns, mode 2 up to 64 (a verify
    // pass of a larger block stays batch-invariant), 32 at a time; a prompt's
    // chunks go to ggml's MMQ. Products of 1 or 2 columns (a one-token pass):
    // ours for Q4_K only in mode 1, where ggml's fused one-column kernels are
    // as quick for the other types.
    const int64_t max_cols = (mode == 2 ? 2 : 1) * orthrus_mmv::MAX_COLS;
    const bool few = ncols < 3 && type != orthrus_mmv::WType::Q4_K;
    // Q4_0 in mode 1 from 8 columns: ggml's matrix-vector kernel was quicker
    // at 4 (a step of 4 rows on the 1.7B's shapes on the H200, 3.82 ms
    // against 4.04 with ours preloading), ours from 8 (4.04 against 4.21; 16
    // rows 4.52 against 5.55).
    const bool few_q4_0 = ncols < 8 && type == orthrus_mmv::WType::Q4_0;
    return orthrus_mmv::supported(k) && ncols >= 1 && ncols <= max_cols &&
           !(mode == 1 && (few || few_q4_0 || type == orthrus_mmv::WType::Q8_0));
}

// Q6_K's activations of an RMS norm's result, which norm_quantize made beside
// Q4_K's for a later product of it (in Q4_K_M files, the attention's V of
// Q6_K weights beside Q and K of Q4_K ones), so that that product skips its
// quantize(). Per thread that computes graphs and device: one graph's
// products on each at a time. buf: made once and kept (a CUDA graph captured
// with it keeps its address), for rows of up to PRE_MAX_K values.
struct Prequantized {
    const ggml_tensor * consumer = nullptr;  // the MUL_MAT to take them, until it does
    const ggml_tensor * src1 = nullptr;
    const void * data = nullptr;
    void * buf = nullptr;
};
constexpr int64_t PRE_MAX_K = 16384;
static thread_local Prequantized g_pre[GGML_CUDA_MAX_DEVICES];

// dst = src0 src1 (+ add, laid out as dst, when not null); with norm or glu,
// src1 is computed on the way (contiguous); with norm, pre_q6_K (not null)
// gets Q6_K's activations too (see Prequantized).
static bool mul_mat_into(ggml_backend_cuda_context & ctx, const ggml_tensor * src0, const ggml_tensor * src1,
                         const float * add, ggml_tensor * dst, const NormArgs * norm = nullptr,
                         const GluArgs * glu = nullptr, void * pre_q6_K = nullptr) {
    // Activations norm_quantize made for this product.
    Prequantized & pre = g_pre[ctx.device];
    const bool prequantized = !norm && !glu && pre.consumer == dst && pre.src1 == src1 && pre.data == src1->data;
    if (pre.consumer == dst) {
        pre.consumer = nullptr;
    }
    orthrus_mmv::WType type;
    if (!takes(ctx, src0, src1, dst, type)) {
        return false;
    }
    const int64_t k = src0->ne[0];
    const int64_t nrows = src0->ne[1];
    const int64_t ncols = src1->ne[1] * src1->ne[2] * src1->ne[3];

    set_pdl(ctx);
    cudaStream_t stream = ctx.stream();
    const orthrus_mmv::Plan plan{orthrus_mmv::row_tiles(nrows), orthrus_mmv::default_variant(type), true};
    // The activations: quantized here, MAX_COLS columns at a time, unless
    // norm_quantize made them (at most MAX_COLS columns, see prequantized_for).
    ggml_cuda_pool_alloc<char> acts(ctx.pool());
    if (!prequantized) {
        acts.alloc(orthrus_mmv::acts_bytes(k, (int) std::min<int64_t>(ncols, orthrus_mmv::MAX_COLS)));
    }
    const int64_t ts = sizeof(float);
    for (int64_t c0 = 0; c0 < ncols; c0 += orthrus_mmv::MAX_COLS) {
        const int n = (int) std::min<int64_t>(ncols - c0, orthrus_mmv::MAX_COLS);
        if (prequantized) {
            // Made already.
        } else if (norm) {
            orthrus_mmv::norm_quantize(type, norm->x, norm->w, norm->eps, k, (int) c0, n, (float *) src1->data,
                                       acts.get(), stream, pre_q6_K);
        } else if (glu) {
            orthrus_mmv::glu_quantize(type, glu->gate, glu->up, glu->gs, glu->us, k, (int) c0, n, (float *) src1->data,
                                      acts.get(), stream);
        } else {
            orthrus_mmv::quantize(type, (const float *) src1->data, k, (int) c0, n, src1->ne[1], src1->ne[2],
                                  src1->nb[1] / ts, src1->nb[2] / ts, src1->nb[3] / ts, acts.get(), stream);
        }
        orthrus_mmv::launch(type, src0->data, prequantized ? pre.buf : acts.get(), add ? add + c0 * nrows : nullptr,
                            (float *) dst->data + c0 * nrows, k, nrows, n, src0->nb[1], nrows, stream, plan);
    }
    CUDA_CHECK(cudaGetLastError());
    return true;
}

bool ggml_cuda_orthrus_mul_mat(ggml_backend_cuda_context & ctx, const ggml_tensor * src0, const ggml_tensor * src1,
                               ggml_tensor * dst) {
    return mul_mat_into(ctx, src0, src1, nullptr, dst);
}

// Whether add can be added to a product where it writes dst: f32, laid out
// as dst, and in place (ggml's allocator reuses x for x = x + W h) or apart,
// not partly overlapping.
static bool addable(const ggml_tensor * add, const ggml_tensor * dst) {
    if (add->type != GGML_TYPE_F32 || !ggml_is_contiguous(add) || !ggml_are_same_shape(add, dst)) {
        return false;
    }
    const char * a = (const char *) add->data, * d = (const char *) dst->data;
    const size_t n = ggml_nbytes(dst);
    return a == d || a >= d + n || d >= a + n;
}

// dst = src0 src1 + add, for ggml-cuda's fusion loop: a MUL_MAT whose one use
// is the ADD dst (add its other operand; false: not fused, ggml goes on).
bool ggml_cuda_orthrus_mul_mat_add(ggml_backend_cuda_context & ctx, const ggml_tensor * src0, const ggml_tensor * src1,
                                   const ggml_tensor * add, ggml_tensor * dst) {
    return addable(add, dst) && mul_mat_into(ctx, src0, src1, (const float *) add->data, dst);
}

// A later product of the norm's result mul, among the nodes after i + 2,
// that our matmul takes with Q6_K weights while the first (mm) has Q4_K
// ones, so that norm_quantize makes Q6_K's activations too (see
// Prequantized); null when there is none, or no buffer for them (it is made
// outside a CUDA graph's capture).
static const ggml_tensor * prequantized_for(ggml_backend_cuda_context & ctx, const ggml_cgraph * cgraph, int i,
                                            const ggml_tensor * mm, const ggml_tensor * mul) {
    Prequantized & pre = g_pre[ctx.device];
    const int64_t k = mul->ne[0], ncols = mul->ne[1] * mul->ne[2] * mul->ne[3];
    if (mm->src[0]->type != GGML_TYPE_Q4_K || k > PRE_MAX_K || ncols > orthrus_mmv::MAX_COLS) {
        return nullptr;
    }
    // The V product follows Q and K's norms, RoPE and cache write: about
    // a dozen nodes on.
    constexpr int LOOK_AHEAD = 32;
    const ggml_tensor * consumer = nullptr;
    for (int j = i + 3; j < std::min(cgraph->n_nodes, i + 3 + LOOK_AHEAD) && !consumer; ++j) {
        const ggml_tensor * n = cgraph->nodes[j];
        orthrus_mmv::WType type;
        if (n->op == GGML_OP_MUL_MAT && n->src[1] == mul && (n->flags & GGML_TENSOR_FLAG_COMPUTE) &&
            n->src[0]->type == GGML_TYPE_Q6_K && takes(ctx, n->src[0], mul, n, type)) {
            consumer = n;
        }
    }
    if (!consumer) {
        return nullptr;
    }
    if (!pre.buf) {
        cudaStreamCaptureStatus capture;
        CUDA_CHECK(cudaStreamIsCapturing(ctx.stream(), &capture));
        if (capture != cudaStreamCaptureStatusNone) {
            return nullptr;
        }
        CUDA_CHECK(cudaMalloc(&pre.buf, orthrus_mmv::acts_bytes(PRE_MAX_K, orthrus_mmv::MAX_COLS)));
    }
    return consumer;
}

// Nodes i, i+1, i+2 = RMS_NORM, MUL by its weight, MUL_MAT of the result, for
// ggml-cuda's fusion loop (false: not fused, ggml goes on): the norm's result written, for any other use, and quantized for our
// matmul in one kernel (orthrus_mmv::norm_quantize) instead of ggml's norm and
// our quantize().
bool ggml_cuda_orthrus_norm_mul_mat(ggml_backend_cuda_context & ctx, ggml_cgraph * cgraph, int i) {
    if (i + 2 >= cgraph->n_nodes || !ctx.stream_context().concurrent_events.empty() ||
        !ggml_can_fuse(cgraph, i, {GGML_OP_RMS_NORM, GGML_OP_MUL})) {
        return false;
    }
    const ggml_tensor * rms = cgraph->nodes[i];
    ggml_tensor * mul = cgraph->nodes[i + 1];
    ggml_tensor * mm = cgraph->nodes[i + 2];
    if (mm->op != GGML_OP_MUL_MAT || mm->src[1] != mul || (mm->flags & GGML_TENSOR_FLAG_COMPUTE) == 0) {
        return false;
    }
    const ggml_tensor * x = rms->src[0];
    const ggml_tensor * w = mul->src[0] == rms ? mul->src[1] : mul->src[0];
    const int64_t k = x->ne[0];
    if (x->type != GGML_TYPE_F32 || w->type != GGML_TYPE_F32 || mul->type != GGML_TYPE_F32 || !ggml_is_contiguous(x) ||
        !ggml_is_contiguous(w) || !ggml_is_contiguous(mul) || w->ne[0] != k || ggml_nelements(w) != k ||
        (uintptr_t) x->data % 16 || (uintptr_t) w->data % 16 || (uintptr_t) mul->data % 16) {
        return false;
    }
    NormArgs norm{(const float *) x->data, (const float *) w->data, 0.0f};
    memcpy(&norm.eps, rms->op_params, sizeof(float));
    Prequantized & pre = g_pre[ctx.device];
    pre.consumer = nullptr;
    const ggml_tensor * consumer = prequantized_for(ctx, cgraph, i, mm, mul);
    if (!mul_mat_into(ctx, mm->src[0], mul, nullptr, mm, &norm, nullptr, consumer ? pre.buf : nullptr)) {
        return false;
    }
    if (consumer) {
        pre.consumer = consumer;
        pre.src1 = mul;
        pre.data = mul->data;
    }
    return true;
}

// Nodes i, i+1 (and i+2) = GLU (SwiGLU), MUL_MAT of its result (and ADD of
// the product and a residual), for ggml-cuda's fusion loop: the GLU's
// result written, for any other use, and quantized for our matmul in one
// kernel (orthrus_mmv::glu_quantize) instead of ggml's GLU and our
// quantize(). Returns the nodes after i it computed too (0: not fused, ggml
// goes on).
int ggml_cuda_orthrus_glu_mul_mat(ggml_backend_cuda_context & ctx, ggml_cgraph * cgraph, int i) {
    if (i + 1 >= cgraph->n_nodes || !ctx.stream_context().concurrent_events.empty()) {
        return 0;
    }
    ggml_tensor * glu = cgraph->nodes[i];
    ggml_tensor * mm = cgraph->nodes[i + 1];
    if (glu->op != GGML_OP_GLU || ggml_get_glu_op(glu) != GGML_GLU_OP_SWIGLU || mm->op != GGML_OP_MUL_MAT ||
        mm->src[1] != glu || (mm->flags & GGML_TENSOR_FLAG_COMPUTE) == 0) {
        return 0;
    }
    const ggml_tensor * a = glu->src[0];
    const ggml_tensor * b = glu->src[1];
    const int64_t k = glu->ne[0];
    const int32_t swapped = ggml_get_op_params_i32(glu, 1);
    if (glu->type != GGML_TYPE_F32 || a->type != GGML_TYPE_F32 || (b && b->type != GGML_TYPE_F32) ||
        !ggml_is_contiguous(glu) || glu->ne[2] != 1 || glu->ne[3] != 1 || a->nb[0] != sizeof(float) ||
        a->nb[1] % 16 || a->ne[2] != 1 || a->ne[3] != 1 || (uintptr_t) a->data % 16 ||
        (b && (b->nb[0] != sizeof(float) || b->nb[1] % 16 || b->ne[0] != k || b->ne[2] != 1 || b->ne[3] != 1 ||
               (uintptr_t) b->data % 16)) ||
        (!b && (a->ne[0] != 2 * k || k % 4)) || a->ne[1] != glu->ne[1] || (b && b->ne[1] != glu->ne[1])) {
        return 0;
    }
    // As ggml's GLU: one tensor's halves (gate first unless swapped), or two.
    const float * x = (const float *) a->data;
    GluArgs args{x, b ? (const float *) b->data : x, (int64_t) (a->nb[1] / sizeof(float)),
                 (int64_t) ((b ? b->nb[1] : a->nb[1]) / sizeof(float))};
    if (!b) {
        (swapped ? args.gate : args.up) += k;
    } else if (swapped) {
        std::swap(args.gate, args.up);
        std::swap(args.gs, args.us);
    }
    // With the residual add after the product, as ggml_cuda_orthrus_mul_mat_add takes it.
    if (ggml_can_fuse(cgraph, i + 1, {GGML_OP_MUL_MAT, GGML_OP_ADD})) {
        ggml_tensor * add = cgraph->nodes[i + 2];
        const ggml_tensor * other = add->src[0] == mm ? add->src[1] : add->src[0];
        if ((add->src[0] == mm || add->src[1] == mm) && ggml_are_same_shape(mm, add) && addable(other, add)) {
            return mul_mat_into(ctx, mm->src[0], glu, (const float *) other->data, add, nullptr, &args) ? 2 : 0;
        }
    }
    return mul_mat_into(ctx, mm->src[0], glu, nullptr, mm, nullptr, &args) ? 1 : 0;
}

// GGML_OP_FLASH_ATTN_EXT through attn.cuh when it takes the node (false:
// ggml's kernels compute it).
bool ggml_cuda_orthrus_flash_attn(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    if (ggml_cuda_orthrus_mmv_mode() <= 0 || dst->src[0]->ne[1] == 1) {
        return false;
    }
    const ggml_tensor * q = dst->src[0];
    const ggml_tensor * k = dst->src[1];
    const ggml_tensor * v = dst->src[2];
    const ggml_tensor * mask = dst->src[3];
    float scale, max_bias, softcap;
    memcpy(&scale, (const float *) dst->op_params + 0, sizeof(float));
    memcpy(&max_bias, (const float *) dst->op_params + 1, sizeof(float));
    memcpy(&softcap, (const float *) dst->op_params + 2, sizeof(float));
    if (max_bias != 0.0f || softcap != 0.0f || dst->src[4] || !mask) {
        return false;
    }
    if (!has_mma(ctx)) {
        return false;
    }
    if (q->type != GGML_TYPE_F32 || k->type != GGML_TYPE_F16 || v->type != GGML_TYPE_F16 ||
        mask->type != GGML_TYPE_F16 || dst->type != GGML_TYPE_F32) {
        return false;
    }
    const int64_t nq = q->ne[1], nh = q->ne[2], nkv = k->ne[2], n_kv = k->ne[1];
    // Queries a launch takes: MAX_Q, fewer where the heads per KV head are
    // many; a block of more goes in as many launches.
    const int64_t max_q = nkv > 0 && nh % nkv == 0 ? orthrus_attn::max_queries(nh / nkv) : 0;
    if (max_q < 1 || nq > 2 * orthrus_attn::MAX_Q || !orthrus_attn::supported(q->ne[0], std::min(nq, max_q), nh, nkv) ||
        k->ne[0] != orthrus_attn::D ||
        v->ne[0] != orthrus_attn::D || v->ne[1] != n_kv || v->ne[2] != nkv || q->ne[3] != 1 || k->ne[3] != 1 ||
        v->ne[3] != 1 || n_kv < 1 || n_kv > INT32_MAX) {
        return false;
    }
    // The mask read 16 bytes at a time, in rows of whole pieces.
    if (mask->ne[0] < n_kv || mask->ne[0] % 8 || mask->ne[1] < nq || mask->ne[2] != 1 || mask->ne[3] != 1 ||
        mask->nb[0] != sizeof(half) || mask->nb[1] % 16 || (uintptr_t) mask->data % 16) {
        return false;
    }
    // Queries read 8 bytes at a time, K and V 16.
    if (q->nb[0] != sizeof(float) || q->nb[1] % 8 || q->nb[2] % 8 || (uintptr_t) q->data % 8) {
        return false;
    }
    for (const ggml_tensor * c : {k, v}) {
        if (c->nb[0] != sizeof(half) || c->nb[1] % 16 || c->nb[2] % 16 || (uintptr_t) c->data % 16) {
            return false;
        }
    }
    if (!ggml_is_contiguous(dst) || dst->ne[0] != orthrus_attn::D || dst->ne[1] != nh || dst->ne[2] != nq) {
        return false;
    }
    for (int64_t q0 = 0; q0 < nq; q0 += max_q) {
        orthrus_attn::Params p{};
        p.q_s1 = q->nb[1] / sizeof(float);
        p.q_s2 = q->nb[2] / sizeof(float);
        p.k_s1 = k->nb[1] / sizeof(half);
        p.k_s2 = k->nb[2] / sizeof(half);
        p.v_s1 = v->nb[1] / sizeof(half);
        p.v_s2 = v->nb[2] / sizeof(half);
        p.mask_s1 = mask->nb[1] / sizeof(half);
        p.q = (const float *) q->data + q0 * p.q_s1;
        p.k = (const half *) k->data;
        p.v = (const half *) v->data;
        p.mask = (const half *) mask->data + q0 * p.mask_s1;
        p.dst = (float *) dst->data + q0 * nh * orthrus_attn::D;
        p.nq = (int) std::min(nq - q0, max_q);
        p.nh = (int) nh;
        p.nkv = (int) nkv;
        p.n_kv = (int) n_kv;
        p.scale = scale;
        const auto & info = ggml_cuda_info().devices[ctx.device];
        orthrus_attn::plan(p, info.nsm, info.smpbo);
        ggml_cuda_pool_alloc<char> scratch(ctx.pool());
        if (const size_t bytes = orthrus_attn::scratch_bytes(p)) {
            scratch.alloc(bytes);
        }
        set_pdl(ctx);
        orthrus_attn::launch(p, scratch.get(), ctx.stream());
    }
    CUDA_CHECK(cudaGetLastError());
    return true;
}

// GGML_OP_ARGMAX through argmax.cuh (false: ggml's kernel computes it). Not
// mode-dependent beyond off: each row's index is the same however it is split.
bool ggml_cuda_orthrus_argmax(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * src = dst->src[0];
    const auto & info = ggml_cuda_info().devices[ctx.device];
    if (ggml_cuda_orthrus_mmv_mode() <= 0 || !GGML_CUDA_CC_IS_NVIDIA(info.cc) || src->type != GGML_TYPE_F32 ||
        dst->type != GGML_TYPE_I32 || !ggml_is_contiguous(src) || !ggml_is_contiguous(dst) ||
        !orthrus_argmax::supported(src->ne[0], ggml_nrows(src))) {
        return false;
    }
    const int ncols = (int) src->ne[0];
    const int nrows = (int) ggml_nrows(src);
    ggml_cuda_pool_alloc<char> scratch(ctx.pool(), orthrus_argmax::scratch_bytes(ncols, nrows, info.nsm));
    set_pdl(ctx);
    orthrus_argmax::launch((const float *) src->data, ncols, nrows, ncols, (int32_t *) dst->data, scratch.get(),
                           info.nsm, ctx.stream());
    CUDA_CHECK(cudaGetLastError());
    return true;
}

// GGML_OP_TOP_K through topk.cuh (false: ggml's sort computes it). Not
// mode-dependent beyond off: the set of the k largest is the same however
// it is found, but for which of several values equal to the k-th it takes
// (ours: the lowest indices; CUB's: any).
bool ggml_cuda_orthrus_top_k(ggml_backend_cuda_context & ctx, ggml_tensor * dst) {
    const ggml_tensor * src = dst->src[0];
    const auto & info = ggml_cuda_info().devices[ctx.device];
    if (ggml_cuda_orthrus_mmv_mode() <= 0 || !GGML_CUDA_CC_IS_NVIDIA(info.cc) || src->type != GGML_TYPE_F32 ||
        dst->type != GGML_TYPE_I32 || !ggml_is_contiguous(src) || !ggml_is_contiguous(dst) ||
        !orthrus_topk::supported(src->ne[0], ggml_nrows(src), dst->ne[0])) {
        return false;
    }
    const int ncols = (int) src->ne[0];
    const int nrows = (int) ggml_nrows(src);
    const int k = (int) dst->ne[0];
    ggml_cuda_pool_alloc<char> scratch(ctx.pool());
    if (const size_t bytes = orthrus_topk::scratch_bytes(ncols, nrows, k)) {
        scratch.alloc(bytes);
    }
    set_pdl(ctx);
    orthrus_topk::launch((const float *) src->data, ncols, nrows, ncols, k, (int32_t *) dst->data, scratch.get(),
                         ctx.stream());
    CUDA_CHECK(cudaGetLastError());
    return true;
}
