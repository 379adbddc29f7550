// Checks a libggml-cuda.so built by kernels/cuda/CMakeLists.txt
// (-DORTHRUS_GGML_CUDA_MODULE=ON builds this too):
// ggml loads it, its registry exports our mode setter (the patch is in), and
// a Q4_K matmul of 8 columns, which our matmul takes in mode 1, matches both
// a float reference and ggml's own kernels (mode 0) within quantization error
// while not being their bit-for-bit result (so something else computed it).
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
    std::vector<float> out(rows * cols);
    if (ggml_backend_graph_compute(backend, gf) == GGML_STATUS_SUCCESS) {
        ggml_backend_tensor_get(y, out.data(), 0, out.size() * sizeof(float));
    } else {
        out.clear();
    }
    ggml_backend_buffer_free(buf);
    ggml_free(ctx);
    return out;
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

    const int64_t k = 4096, rows = 1024, cols = 8;
    std::mt19937                          rng(7);
    std::normal_distribution<float>       dist(0.0f, 1.0f);
    std::vector<float>                    w(k * rows), x(k * cols);
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
    ggml_backend_free(backend);
    if (err_ours > tol || err_ggml > tol) {
        return fail("a product is off the reference");
    }
    if (same) {
        return fail("mode 1 gave ggml's result bit for bit: our matmul did not run");
    }
    printf("module-check: ok\n");
    return 0;
}
