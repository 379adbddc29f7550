// Checks a libggml-cuda.so built by kernels/cuda/CMakeLists.txt
// (-DORTHRUS_GGML_CUDA_MODULE=ON builds this too):
// ggml loads it, its registry exports our mode setter (the patch is in), and
//   - Q4_K matmuls of 8, 24 and 32 columns, which our matmul takes in mode 1
//     (in one launch each), match both a float reference and
//     ggml's own kernels (mode 0) within quantization error while not being
//     their bit-for-bit result (so something else computed them);
//   - flash attention of blocks of 16, 24 and 32 queries, which our
//     attention takes in mode 1 (in one launch each), matches ggml's own
//     kernel within f16 rounding and is not its bit-for-bit result.
//
//   orthrus-module-check PATH/libggml-cuda.so      exit status 0 when all hold
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

static int fail(const char * msg) {
    fprintf(stderr, "module-check: %s\n", msg);
    return 1;
}

// Computes gf, whose result is y (f32), then frees buf and ctx: y's values,
// or none when the graph did not compute.
static std::vector<float> compute(ggml_backend_t backend, ggml_context * ctx, ggml_cgraph * gf, ggml_tensor * y,
                                  ggml_backend_buffer_t buf) {
    std::vector<float> out(ggml_nelements(y));
    if (ggml_backend_graph_compute(backend, gf) == GGML_STATUS_SUCCESS) {
        ggml_backend_tensor_get(y, out.data(), 0, out.size() * sizeof(float));
    } else {
        out.clear();
    }
    ggml_backend_buffer_free(buf);
    ggml_free(ctx);
    return out;
}

// W (rows x k, Q4_K) times X (k x cols, f32) on `backend` in our `mode`.
static std::vector<float> product(ggml_backend_t backend, int (*set_mode)(int), int mode, const std::vector<uint8_t> & wq,
                                  const std::vector<float> & x, int64_t k, int64_t rows, int64_t cols) {
    set_mode(mode);
    ggml_init_params params = { ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, true };
    ggml_context *   ctx    = ggml_init(params);
    ggml_tensor *    w      = ggml_new_tensor_2d(ctx, GGML_TYPE_Q4_K, k, rows);
    ggml_tensor *    xt     = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, cols);
    ggml_tensor *    y      = ggml_mul_mat(ctx, w, xt);
    ggml_cgraph *    gf     = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, y);
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, backend);
    ggml_backend_tensor_set(w, wq.data(), 0, wq.size());
    ggml_backend_tensor_set(xt, x.data(), 0, x.size() * sizeof(float));
    return compute(backend, ctx, gf, y, buf);
}

// Flash attention of nq queries (nh heads over nkv KV heads, head size 128)
// over n_kv cached slots on `backend` in our `mode`; query j sees the slots
// up to n_kv - nq + j (a block at the end of the cache).
static std::vector<float> attention(ggml_backend_t backend, int (*set_mode)(int), int mode, int64_t nq, int64_t nh,
                                    int64_t nkv, int64_t n_kv, std::mt19937 & rng) {
    const int64_t d = 128;
    set_mode(mode);
    ggml_init_params params = { ggml_tensor_overhead() * 8 + ggml_graph_overhead(), nullptr, true };
    ggml_context *   ctx    = ggml_init(params);
    ggml_tensor *    q      = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, d, nq, nh);
    ggml_tensor *    k      = ggml_new_tensor_3d(ctx, GGML_TYPE_F16, d, n_kv, nkv);
    ggml_tensor *    v      = ggml_new_tensor_3d(ctx, GGML_TYPE_F16, d, n_kv, nkv);
    ggml_tensor *    mask   = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_kv, nq);
    ggml_tensor *    y      = ggml_flash_attn_ext(ctx, q, k, v, mask, 1.0f / std::sqrt((float) d), 0.0f, 0.0f);
    ggml_cgraph *    gf     = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, y);
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, backend);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float>              qv(d * nq * nh);
    for (float & x : qv) {
        x = dist(rng);
    }
    std::vector<ggml_fp16_t> kv(d * n_kv * nkv);
    for (ggml_fp16_t & x : kv) {
        x = ggml_fp32_to_fp16(dist(rng));
    }
    std::vector<ggml_fp16_t> mv(n_kv * nq);
    for (int64_t j = 0; j < nq; j++) {
        for (int64_t i = 0; i < n_kv; i++) {
            mv[j * n_kv + i] = ggml_fp32_to_fp16(i <= n_kv - nq + j ? 0.0f : -INFINITY);
        }
    }
    ggml_backend_tensor_set(q, qv.data(), 0, qv.size() * sizeof(float));
    ggml_backend_tensor_set(k, kv.data(), 0, kv.size() * sizeof(ggml_fp16_t));
    for (ggml_fp16_t & x : kv) {
        x = ggml_fp32_to_fp16(dist(rng));
    }
    ggml_backend_tensor_set(v, kv.data(), 0, kv.size() * sizeof(ggml_fp16_t));
    ggml_backend_tensor_set(mask, mv.data(), 0, mv.size() * sizeof(ggml_fp16_t));
    return compute(backend, ctx, gf, y, buf);
}

int main(int argc, char ** argv) {
    if (argc != 2) {
        return fail("usage: orthrus-module-check PATH/libggml-cuda.so");
    }
    // A captured CUDA graph would replay the first mode's kernels.
    setenv("GGML_CUDA_DISABLE_GRAPHS", "1", 1);
    ggml_backend_reg_t reg = ggml_backend_load(argv[1]);
    if (!reg) {
        return fail("ggml could not load the module");
    }
    auto set_mode = (int (*)(int)) ggml_backend_reg_get_proc_address(reg, "ggml_backend_cuda_orthrus_set_mmv_mode");
    if (!set_mode) {
        return fail("the module's registry does not export ggml_backend_cuda_orthrus_set_mmv_mode (unpatched ggml-cuda)");
    }
    if (ggml_backend_reg_dev_count(reg) == 0) {
        return fail("the module sees no GPU");
    }
    ggml_backend_dev_t dev = ggml_backend_reg_dev_get(reg, 0);
    printf("module-check: %s (%s)\n", ggml_backend_dev_name(dev), ggml_backend_dev_description(dev));
    ggml_backend_t backend = ggml_backend_dev_init(dev, nullptr);
    if (!backend) {
        return fail("could not start the CUDA backend");
    }

    const int64_t k = 4096, rows = 1024;
    bool          ok = true;
    for (const int64_t cols : { 8, 24, 32 }) {
        std::mt19937                    rng(7);
        std::normal_distribution<float> dist(0.0f, 1.0f);
        std::vector<float>              w(k * rows), x(k * cols);
        for (float & v : w) {
            v = dist(rng) * 0.02f;
        }
        for (float & v : x) {
            v = dist(rng);
        }
        std::vector<uint8_t> wq(ggml_row_size(GGML_TYPE_Q4_K, k) * rows);
        ggml_quantize_chunk(GGML_TYPE_Q4_K, w.data(), wq.data(), 0, rows, k, nullptr);
        // The reference: the dequantized weights times X, in double.
        std::vector<float> wd(k * rows);
        ggml_get_type_traits(GGML_TYPE_Q4_K)->to_float(wq.data(), wd.data(), k * rows);
        std::vector<double> ref(rows * cols);
        double              scale = 0;
        for (int64_t c = 0; c < cols; c++) {
            for (int64_t r = 0; r < rows; r++) {
                double s = 0;
                for (int64_t i = 0; i < k; i++) {
                    s += (double) wd[r * k + i] * x[c * k + i];
                }
                ref[c * rows + r] = s;
                scale             = std::fmax(scale, std::fabs(s));
            }
        }
        std::vector<float> ours = product(backend, set_mode, 1, wq, x, k, rows, cols);
        std::vector<float> ggml = product(backend, set_mode, 0, wq, x, k, rows, cols);
        if (ours.empty() || ggml.empty()) {
            return fail("a graph did not compute");
        }
        double err_ours = 0, err_ggml = 0;
        bool   same     = true;
        for (size_t i = 0; i < ref.size(); i++) {
            err_ours = std::fmax(err_ours, std::fabs(ours[i] - ref[i]));
            err_ggml = std::fmax(err_ggml, std::fabs(ggml[i] - ref[i]));
            same     = same && ours[i] == ggml[i];
        }
        // X is quantized to 8 bits on the way in (by both): about 1% of the scale.
        const double tol = 0.02 * scale;
        printf("module-check: Q4_K %lldx%lld times %lld columns: max |error| ours %.3g, ggml %.3g (scale %.3g); %s\n",
               (long long) rows, (long long) k, (long long) cols, err_ours, err_ggml, scale,
               same ? "bit for bit ggml's" : "not ggml's bits");
        if (err_ours > tol || err_ggml > tol) {
            fail("a product is off the reference");
            ok = false;
        }
        if (same) {
            fail("mode 1 gave ggml's result bit for bit: our matmul did not run");
            ok = false;
        }
    }
    // Qwen3-1.7B's heads: 16 query heads over 8 KV heads.
    for (const int64_t nq : { 16, 24, 32 }) {
        std::mt19937             rng(11), rng2(11);
        const std::vector<float> ours = attention(backend, set_mode, 1, nq, 16, 8, 512, rng);
        const std::vector<float> ggml = attention(backend, set_mode, 0, nq, 16, 8, 512, rng2);
        if (ours.empty() || ggml.empty()) {
            return fail("an attention graph did not compute");
        }
        double diff = 0;
        bool   same = true;
        for (size_t i = 0; i < ours.size(); i++) {
            diff = std::fmax(diff, std::fabs(ours[i] - ggml[i]));
            same = same && ours[i] == ggml[i];
        }
        printf("module-check: attention of %lld queries over 512 slots: max |ours - ggml| %.3g; %s\n", (long long) nq,
               diff, same ? "bit for bit ggml's" : "not ggml's bits");
        // Outputs are averages of N(0, 1) values; f16 probabilities round at 1e-3.
        if (!(diff < 2e-2)) {
            fail("attention is off ggml's");
            ok = false;
        }
        if (same) {
            fail("mode 1 gave ggml's attention bit for bit: ours did not run");
            ok = false;
        }
    }
    ggml_backend_free(backend);
    if (!ok) {
        return 1;
    }
    printf("module-check: ok\n");
    return 0;
}
