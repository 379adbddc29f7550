// Tests and times kernels/cuda/mmv.cuh on the GPU, without ggml:
//   nvcc -O3 -std=c++17 -arch=sm_90a -o mmv-test kernels/cuda/mmv-test.cu && ./mmv-test
// Random weight blocks of each type, random activations quantized by quantize();
// the reference dequantizes the weights as ggml-quants.c does and sums in
// double. Checks, for 1..32 columns: the error against the reference, and that
// each column equals the same column multiplied alone, bit for bit (and plus a
// residual added in place, that plus the residual). Then times
// the model's shapes. Exit status 1 on any failed check.
#include "mmv.cuh"
#include "test-util.cuh"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

using namespace orthrus_mmv;

static std::mt19937 rng(1234);
static float urand(float a, float b) { return std::uniform_real_distribution<float>(a, b)(rng); }
static uint8_t ubyte() { return (uint8_t) (rng() & 0xFF); }

static const char * variant_name(Variant v) {
    return v == Variant::Preload ? "preloading" : v == Variant::Words ? "in words" : "plain";
}

static const char * name(WType t) {
    return t == WType::Q4_K ? "q4_K" : t == WType::Q6_K ? "q6_K" : t == WType::Q8_0 ? "q8_0" : "q4_0";
}

// Random rows of blocks; W (nrows x k floats) gets their dequantized values.
static std::vector<uint8_t> random_weights(WType t, int64_t k, int64_t nrows, std::vector<float> & W) {
    const int64_t units = k / UNIT;
    const int64_t row_bytes = units * unit_bytes(t);
    std::vector<uint8_t> bytes(row_bytes * nrows);
    W.assign(k * nrows, 0.0f);
    for (int64_t r = 0; r < nrows; ++r) {
        uint8_t * row = bytes.data() + r * row_bytes;
        float * wr = W.data() + r * k;
        for (int64_t u = 0; u < units; ++u) {
            if (t == WType::Q4_K) {
                block_q4_K b;
                const float d = urand(1e-3f, 4e-3f), dmin = urand(1e-3f, 4e-3f);
                b.dm = __floats2half2_rn(d, dmin);
                for (auto & s : b.scales) s = ubyte();
                for (auto & q : b.qs) q = ubyte();
                memcpy(row + u * sizeof b, &b, sizeof b);
                const float2 dm = __half22float2(b.dm);
                const uint8_t * q = b.qs;
                float * y = wr + u * 256;
                for (int j = 0, is = 0; j < 256; j += 64, q += 32, is += 2) {
                    uint8_t sc[2], m[2];
                    for (int e = 0; e < 2; ++e) {
                        const int jj = is + e;
                        if (jj < 4) {
                            sc[e] = b.scales[jj] & 63; m[e] = b.scales[jj + 4] & 63;
                        } else {
                            sc[e] = (b.scales[jj + 4] & 0xF) | ((b.scales[jj - 4] >> 6) << 4);
                            m[e]  = (b.scales[jj + 4] >> 4) | ((b.scales[jj] >> 6) << 4);
                        }
                    }
                    for (int l = 0; l < 32; ++l) *y++ = dm.x * sc[0] * (q[l] & 0xF) - dm.y * m[0];
                    for (int l = 0; l < 32; ++l) *y++ = dm.x * sc[1] * (q[l] >> 4) - dm.y * m[1];
                }
            } else if (t == WType::Q6_K) {
                block_q6_K b;
                for (auto & q : b.ql) q = ubyte();
                for (auto & q : b.qh) q = ubyte();
                for (auto & s : b.scales) s = (int8_t) ubyte();
                b.d = __float2half(urand(1e-4f, 4e-4f));
                memcpy(row + u * sizeof b, &b, sizeof b);
                const float d = __half2float(b.d);
                float * y = wr + u * 256;
                const uint8_t * ql = b.ql; const uint8_t * qh = b.qh; const int8_t * sc = b.scales;
                for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
                    for (int l = 0; l < 32; ++l) {
                        const int is = l / 16;
                        const int q1 = (int) ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                        const int q2 = (int) ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                        const int q3 = (int) ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                        const int q4 = (int) ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                        y[l + 0] = d * sc[is + 0] * q1;
                        y[l + 32] = d * sc[is + 2] * q2;
                        y[l + 64] = d * sc[is + 4] * q3;
                        y[l + 96] = d * sc[is + 6] * q4;
                    }
                }
            } else if (t == WType::Q4_0) {
                for (int i = 0; i < 8; ++i) {
                    block_q4_0 b;
                    b.d = __float2half(urand(1e-3f, 4e-3f));
                    for (auto & q : b.qs) q = ubyte();
                    memcpy(row + u * 8 * sizeof b + i * sizeof b, &b, sizeof b);
                    const float d = __half2float(b.d);
                    for (int l = 0; l < 16; ++l) {
                        wr[u * 256 + i * 32 + l] = d * ((b.qs[l] & 0xF) - 8);
                        wr[u * 256 + i * 32 + l + 16] = d * ((b.qs[l] >> 4) - 8);
                    }
                }
            } else {
                for (int i = 0; i < 8; ++i) {
                    block_q8_0 b;
                    b.d = __float2half(urand(1e-3f, 4e-3f));
                    for (auto & q : b.qs) q = (int8_t) ubyte();
                    memcpy(row + u * 8 * sizeof b + i * sizeof b, &b, sizeof b);
                    const float d = __half2float(b.d);
                    for (int l = 0; l < 32; ++l) wr[u * 256 + i * 32 + l] = d * b.qs[l];
                }
            }
        }
    }
    return bytes;
}

// ncols columns of k random values; X gets them as quantize() rounds them
// (d = max|x|/127 per span values, q = round(x/d)).
static std::vector<float> random_acts(int64_t k, int ncols, std::vector<float> & X, int span) {
    std::vector<float> x(ncols * k);
    X.assign(ncols * k, 0.0f);
    for (auto & v : x) v = urand(-1.0f, 1.0f);
    for (int64_t b = 0; b < ncols * k / span; ++b) {
        float amax = 0.0f;
        for (int l = 0; l < span; ++l) amax = fmaxf(amax, fabsf(x[span * b + l]));
        const float d = amax / 127.0f;
        for (int l = 0; l < span; ++l) X[span * b + l] = d * roundf(x[span * b + l] / d);
    }
    return x;
}

// x: ncols columns of k floats on the device, k apart; split as n1 x n2 when
// ncols allows, to take quantize()'s 3-D column order too.
// What a kernel that computes n columns of k floats into dh and quantizes
// them into da (run()) wrote there, and whether its quantized values equal
// quantize() of its dh (into da2), byte for byte. Both buffers start with
// the same filler: what neither writes (the K-quants' scales take k / 256
// of the k / 32 floats kept) compares equal.
struct Fused {
    std::vector<float> h;
    std::vector<uint8_t> acts;
    bool as_quantize;
};
template <class F>
static Fused fused_as_quantize(WType t, int64_t k, int n, float * dh, void * da, void * da2, F && run) {
    const size_t ab = acts_bytes(k, n);
    CHECK(cudaMemset(da, 0x55, ab));
    CHECK(cudaMemset(da2, 0x55, ab));
    run();
    quantize(t, dh, k, 0, n, n, 1, k, n * k, n * k, da2, 0);
    Fused f{std::vector<float>(n * k), std::vector<uint8_t>(ab), false};
    std::vector<uint8_t> a2(ab);
    CHECK(cudaMemcpy(f.h.data(), dh, sizeof(float) * n * k, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(f.acts.data(), da, ab, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(a2.data(), da2, ab, cudaMemcpyDeviceToHost));
    f.as_quantize = memcmp(f.acts.data(), a2.data(), ab) == 0;
    return f;
}

static void product(WType t, const void * w, const float * x, void * acts, float * dst, int64_t k, int64_t nrows,
                    int ncols, int64_t row_bytes, int64_t dst_col_stride, const Plan & plan = Plan(),
                    cudaStream_t stream = 0) {
    const int64_t n1 = ncols % 4 == 0 ? 4 : ncols, n2 = ncols / n1;
    quantize(t, x, k, 0, ncols, n1, n2, k, n1 * k, n1 * n2 * k, acts, stream);
    launch(t, w, acts, nullptr, dst, k, nrows, ncols, row_bytes, dst_col_stride, stream, plan);
}

int main(int argc, char ** argv) {
    // "profile": one launch of each timed product (for ncu), no checks.
    const bool profile = argc > 1 && strcmp(argv[1], "profile") == 0;
    int failures = 0;
    int dev = 0;
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, dev));
    printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);

    // Correctness: every type, 1..32 columns, a K of 2 and of 3 units per warp,
    // one unit not shared by all warps and fewer units than warps; rows not a
    // multiple of 16; 1, 2 and 4 row tiles a block; plain, and the type's
    // other variants (preloading, Q8_0's aligned words), which must give the
    // plain kernel's values bit for bit.
    const int64_t ks[] = {2048, 256 * 12, 6144, 1024};
    struct Pass { Variant v; int rt; };
    std::vector<Pass> passes;
    for (Variant v : {Variant::Plain, Variant::Preload, Variant::Words}) {
        for (int rt : {1, 2, 4}) {
            passes.push_back({v, rt});
        }
    }
    for (WType t : {WType::Q4_K, WType::Q6_K, WType::Q8_0, WType::Q4_0}) {
        for (int64_t k : ks) {
            if (profile) break;
            const int64_t nrows = 200;
            std::vector<float> W, X;
            const auto wbytes = random_weights(t, k, nrows, W);
            const auto y = random_acts(k, MAX_COLS, X, scale_span(t));
            const int64_t row_bytes = (k / UNIT) * unit_bytes(t);
            void *dw, *dy, *da; float * dd;
            CHECK(cudaMalloc(&dw, wbytes.size()));
            CHECK(cudaMalloc(&dy, y.size() * sizeof(float)));
            CHECK(cudaMalloc(&da, acts_bytes(k, MAX_COLS)));
            CHECK(cudaMalloc(&dd, sizeof(float) * nrows * MAX_COLS));
            CHECK(cudaMemcpy(dw, wbytes.data(), wbytes.size(), cudaMemcpyHostToDevice));
            CHECK(cudaMemcpy(dy, y.data(), y.size() * sizeof(float), cudaMemcpyHostToDevice));
            std::vector<float> plain[5];  // the plain kernel's columns alone, by row tiles
            for (const Pass & pass : passes) {
                if (!has_variant(t, pass.v)) continue;
                const int rt = pass.rt;
                const Plan plan{rt, pass.v};
                // Each column alone.
                std::vector<float> alone(nrows * MAX_COLS);
                for (int c = 0; c < MAX_COLS; ++c) {
                    product(t, dw, (const float *) dy + c * k, da, dd + c * nrows, k, nrows, 1, row_bytes, nrows, plan);
                }
                CHECK(cudaMemcpy(alone.data(), dd, sizeof(float) * nrows * MAX_COLS, cudaMemcpyDeviceToHost));
                double worst = 0.0;
                for (int c = 0; c < MAX_COLS; ++c) {
                    for (int64_t r = 0; r < nrows; ++r) {
                        double ref = 0.0, mag = 0.0;
                        for (int64_t i = 0; i < k; ++i) {
                            ref += (double) W[r * k + i] * X[c * k + i];
                            mag += fabs((double) W[r * k + i] * X[c * k + i]);
                        }
                        worst = fmax(worst, fabs(alone[c * nrows + r] - ref) / mag);
                    }
                }
                int differ = 0;
                if (pass.v == Variant::Plain) {
                    plain[rt] = alone;
                } else {
                    differ += memcmp(alone.data(), plain[rt].data(), sizeof(float) * nrows * MAX_COLS) != 0;
                }
                for (int n = 1; n <= MAX_COLS; ++n) {
                    CHECK(cudaMemset(dd, 0xFF, sizeof(float) * nrows * MAX_COLS));
                    product(t, dw, (const float *) dy, da, dd, k, nrows, n, row_bytes, nrows, plan);
                    std::vector<float> out(nrows * MAX_COLS);
                    CHECK(cudaMemcpy(out.data(), dd, sizeof(float) * nrows * MAX_COLS, cudaMemcpyDeviceToHost));
                    for (int c = 0; c < MAX_COLS; ++c) {
                        for (int64_t r = 0; r < nrows; ++r) {
                            uint32_t a, b;
                            memcpy(&a, &out[c * nrows + r], 4);
                            memcpy(&b, &alone[c * nrows + r], 4);
                            if (c < n ? a != b : a != 0xFFFFFFFFu) ++differ;  // columns past n untouched
                        }
                    }
                }
                // A chunk of columns from c0 (as ggml-hook.cu takes more than
                // MAX_COLS): columns 10.. of the MAX_COLS read as a 4 x 4 x n grid.
                {
                    const int c0 = 10, n = MAX_COLS - c0;
                    quantize(t, (const float *) dy, k, c0, n, 4, 4, k, 4 * k, 16 * k, da, 0);
                    launch(t, dw, da, nullptr, dd, k, nrows, n, row_bytes, nrows, 0, plan);
                    std::vector<float> out(nrows * n);
                    CHECK(cudaMemcpy(out.data(), dd, sizeof(float) * nrows * n, cudaMemcpyDeviceToHost));
                    differ += memcmp(out.data(), &alone[c0 * nrows], sizeof(float) * nrows * n) != 0;
                }
                // A residual added in place (the add is dst itself, as ggml's
                // allocator lays out x = x + W h): each value is the product's
                // plus the residual's, one f32 addition.
                int add_differ = 0;
                {
                    std::vector<float> res(nrows * MAX_COLS);
                    for (auto & v : res) v = urand(-4.0f, 4.0f);
                    CHECK(cudaMemcpy(dd, res.data(), sizeof(float) * nrows * MAX_COLS, cudaMemcpyHostToDevice));
                    quantize(t, (const float *) dy, k, 0, MAX_COLS, MAX_COLS, 1, k, MAX_COLS * k, MAX_COLS * k, da, 0);
                    launch(t, dw, da, dd, dd, k, nrows, MAX_COLS, row_bytes, nrows, 0, plan);
                    std::vector<float> out(nrows * MAX_COLS);
                    CHECK(cudaMemcpy(out.data(), dd, sizeof(float) * nrows * MAX_COLS, cudaMemcpyDeviceToHost));
                    for (int64_t i = 0; i < nrows * MAX_COLS; ++i) {
                        const float want = alone[i] + res[i];
                        add_differ += memcmp(&out[i], &want, 4) != 0;
                    }
                }
                CHECK(cudaGetLastError());
                const bool ok = worst < 2e-3 && differ == 0 && add_differ == 0;
                failures += !ok;
                printf("%s k=%lld rows=%lld, %d row tiles a block%s%s: error / sum|w x| %.2e, values unlike the column alone %d, unlike it plus the residual %d: %s\n",
                       name(t), (long long) k, (long long) nrows, rt, pass.v == Variant::Plain ? "" : ", ",
                       pass.v == Variant::Plain ? "" : variant_name(pass.v), worst, differ,
                       add_differ, ok ? "ok" : "FAILED");
            }
            cudaFree(dw); cudaFree(dy); cudaFree(da); cudaFree(dd);
        }
    }

    // norm_quantize(): h = rms_norm(x) * w against a float64 reference, then
    // quantized exactly as quantize() quantizes that h; in place (x = h) the
    // same; and a column the same alone as among 16. For Q4_K, with Q6_K's
    // activations as a second output: those as quantize() makes them for
    // Q6_K, Q4_K's unchanged. Then its time and quantize()'s for 16 columns
    // of 2048 and 4096.
    // 10240: past the rows norm_quantize holds in registers (NORM_SPANS).
    for (WType t : {WType::Q4_K, WType::Q6_K, WType::Q8_0, WType::Q4_0}) {
        for (int64_t k : {ks[0], ks[1], ks[2], ks[3], (int64_t) 10240}) {
            if (profile) break;
            const float eps = 1e-6f;
            std::vector<float> x(MAX_COLS * k), w(k);
            for (auto & v : x) v = urand(-2.0f, 2.0f);
            for (auto & v : w) v = urand(0.5f, 1.5f);
            float *dx, *dw, *dh, *dh2;
            void *da, *da2, *da3;
            const size_t xb = sizeof(float) * MAX_COLS * k;
            CHECK(cudaMalloc(&dx, xb));
            CHECK(cudaMalloc(&dh, xb));
            CHECK(cudaMalloc(&dh2, xb));
            CHECK(cudaMalloc(&dw, sizeof(float) * k));
            CHECK(cudaMalloc(&da, acts_bytes(k, MAX_COLS)));
            CHECK(cudaMalloc(&da2, acts_bytes(k, MAX_COLS)));
            CHECK(cudaMalloc(&da3, acts_bytes(k, MAX_COLS)));
            CHECK(cudaMemcpy(dx, x.data(), xb, cudaMemcpyHostToDevice));
            CHECK(cudaMemcpy(dw, w.data(), sizeof(float) * k, cudaMemcpyHostToDevice));
            for (int n : {1, 7, 16, 23, 32}) {
                const size_t ab = acts_bytes(k, n);
                const Fused f = fused_as_quantize(t, k, n, dh, da, da2,
                                                  [&] { norm_quantize(t, dx, dw, eps, k, 0, n, dh, da, 0); });
                const std::vector<float> & h = f.h;
                std::vector<float> h2(n * k);
                std::vector<uint8_t> a2(ab);
                double worst = 0.0;
                for (int c = 0; c < n; ++c) {
                    double ss = 0.0;
                    for (int64_t i = 0; i < k; ++i) ss += (double) x[c * k + i] * x[c * k + i];
                    const double scale = 1.0 / sqrt(ss / k + eps);
                    for (int64_t i = 0; i < k; ++i) {
                        const double ref = x[c * k + i] * scale * w[i];
                        worst = fmax(worst, fabs(h[c * k + i] - ref) / fmax(fabs(ref), 1e-3));
                    }
                }
                const bool same_acts = f.as_quantize;
                // In place.
                CHECK(cudaMemcpy(dh2, dx, xb, cudaMemcpyDeviceToDevice));
                norm_quantize(t, dh2, dw, eps, k, 0, n, dh2, da2, 0);
                CHECK(cudaMemcpy(h2.data(), dh2, sizeof(float) * n * k, cudaMemcpyDeviceToHost));
                CHECK(cudaMemcpy(a2.data(), da2, ab, cudaMemcpyDeviceToHost));
                const bool in_place = memcmp(h.data(), h2.data(), sizeof(float) * n * k) == 0 && memcmp(f.acts.data(), a2.data(), ab) == 0;
                // The last column alone (c0 = n - 1), as among the n.
                norm_quantize(t, dx, dw, eps, k, n - 1, 1, dh2, da2, 0);
                CHECK(cudaMemcpy(h2.data(), dh2 + (n - 1) * k, sizeof(float) * k, cudaMemcpyDeviceToHost));
                const bool alone = memcmp(h2.data(), &h[(n - 1) * k], sizeof(float) * k) == 0;
                // Q4_K's and, as a second output, Q6_K's activations.
                bool both = true;
                if (t == WType::Q4_K) {
                    std::vector<uint8_t> a3(ab);
                    CHECK(cudaMemset(da2, 0x55, ab));
                    CHECK(cudaMemset(da3, 0x55, ab));
                    norm_quantize(t, dx, dw, eps, k, 0, n, dh2, da2, 0, da3);
                    CHECK(cudaMemcpy(a2.data(), da2, ab, cudaMemcpyDeviceToHost));
                    both = memcmp(a2.data(), f.acts.data(), ab) == 0;
                    CHECK(cudaMemset(da2, 0x55, ab));
                    quantize(WType::Q6_K, dh2, k, 0, n, n, 1, k, n * k, n * k, da2, 0);
                    CHECK(cudaMemcpy(a2.data(), da2, ab, cudaMemcpyDeviceToHost));
                    CHECK(cudaMemcpy(a3.data(), da3, ab, cudaMemcpyDeviceToHost));
                    both = both && memcmp(a2.data(), a3.data(), ab) == 0;
                }
                CHECK(cudaGetLastError());
                const bool ok = worst < 1e-5 && same_acts && in_place && alone && both;
                failures += !ok;
                printf("%s norm_quantize k=%lld, %2d columns: error %.1e, as quantize() of its h %s, in place %s, a column alone %s%s: %s\n",
                       name(t), (long long) k, n, worst, same_acts ? "yes" : "NO", in_place ? "yes" : "NO",
                       alone ? "the same" : "DIFFERS",
                       t != WType::Q4_K ? "" : both ? ", with q6_K's too the same" : ", with q6_K's DIFFERENT",
                       ok ? "ok" : "FAILED");
            }
            cudaFree(dx); cudaFree(dh); cudaFree(dh2); cudaFree(dw); cudaFree(da); cudaFree(da2); cudaFree(da3);
        }
    }
    // glu_quantize(): h = silu(gate) * up against a float64 reference (gate
    // and up the halves of one row, as the engine's stacked gate+up gives
    // them), then quantized exactly as quantize() quantizes that h; and a
    // column the same alone as among n. Then its time against quantize()
    // alone, for 16 columns of the 1.7B's 6144.
    for (WType t : {WType::Q4_K, WType::Q6_K, WType::Q8_0, WType::Q4_0}) {
        for (int64_t k : {ks[2], ks[3]}) {
            if (profile) break;
            std::vector<float> gu(MAX_COLS * 2 * k);
            for (auto & v : gu) v = urand(-6.0f, 6.0f);
            float *dgu, *dh, *dh2;
            void *da, *da2;
            CHECK(cudaMalloc(&dgu, sizeof(float) * gu.size()));
            CHECK(cudaMalloc(&dh, sizeof(float) * MAX_COLS * k));
            CHECK(cudaMalloc(&dh2, sizeof(float) * MAX_COLS * k));
            CHECK(cudaMalloc(&da, acts_bytes(k, MAX_COLS)));
            CHECK(cudaMalloc(&da2, acts_bytes(k, MAX_COLS)));
            CHECK(cudaMemcpy(dgu, gu.data(), sizeof(float) * gu.size(), cudaMemcpyHostToDevice));
            for (int n : {1, 7, 16, 23, 32}) {
                const Fused f = fused_as_quantize(t, k, n, dh, da, da2, [&] {
                    glu_quantize(t, dgu, dgu + k, 2 * k, 2 * k, k, 0, n, dh, da, 0);
                });
                const std::vector<float> & h = f.h;
                std::vector<float> h2(k);
                double worst = 0.0;
                for (int c = 0; c < n; ++c) {
                    for (int64_t i = 0; i < k; ++i) {
                        const double g = gu[c * 2 * k + i], u = gu[c * 2 * k + k + i];
                        const double ref = g / (1.0 + exp(-g)) * u;
                        worst = fmax(worst, fabs(h[c * k + i] - ref) / fmax(fabs(ref), 1e-3));
                    }
                }
                const bool same_acts = f.as_quantize;
                glu_quantize(t, dgu, dgu + k, 2 * k, 2 * k, k, n - 1, 1, dh2, da2, 0);
                CHECK(cudaMemcpy(h2.data(), dh2 + (n - 1) * k, sizeof(float) * k, cudaMemcpyDeviceToHost));
                const bool alone = memcmp(h2.data(), &h[(n - 1) * k], sizeof(float) * k) == 0;
                CHECK(cudaGetLastError());
                const bool ok = worst < 1e-5 && same_acts && alone;
                failures += !ok;
                printf("%s glu_quantize k=%lld, %2d columns: error %.1e, as quantize() of its h %s, a column alone %s: %s\n",
                       name(t), (long long) k, n, worst, same_acts ? "yes" : "NO", alone ? "the same" : "DIFFERS",
                       ok ? "ok" : "FAILED");
            }
            if (k == ks[2]) {
                const float fused = graph_us([&](cudaStream_t st) {
                    glu_quantize(t, dgu, dgu + k, 2 * k, 2 * k, k, 0, 16, dh, da, st);
                });
                const float alone = graph_us([&](cudaStream_t st) {
                    quantize(t, dh, k, 0, 16, 16, 1, k, 16 * k, 16 * k, da, st);
                });
                printf("%s 16 columns of %lld: glu_quantize %.2f us, quantize alone %.2f us\n", name(t), (long long) k,
                       fused, alone);
            }
            cudaFree(dgu); cudaFree(dh); cudaFree(dh2); cudaFree(da); cudaFree(da2);
        }
    }
    for (int64_t k : {2048, 4096}) {
        if (profile) break;
        float *dx, *dw, *dh;
        void * da;
        CHECK(cudaMalloc(&dx, sizeof(float) * MAX_COLS * k));
        CHECK(cudaMalloc(&dh, sizeof(float) * MAX_COLS * k));
        CHECK(cudaMalloc(&dw, sizeof(float) * k));
        CHECK(cudaMalloc(&da, acts_bytes(k, MAX_COLS)));
        CHECK(cudaMemset(dx, 0, sizeof(float) * MAX_COLS * k));
        CHECK(cudaMemset(dw, 0, sizeof(float) * k));
        void * da2;
        CHECK(cudaMalloc(&da2, acts_bytes(k, MAX_COLS)));
        const float fused = graph_us([&](cudaStream_t st) { norm_quantize(WType::Q4_K, dx, dw, 1e-6f, k, 0, 16, dh, da, st); });
        const float with_q6 = graph_us([&](cudaStream_t st) {
            norm_quantize(WType::Q4_K, dx, dw, 1e-6f, k, 0, 16, dh, da, st, da2);
        });
        const float alone = graph_us([&](cudaStream_t st) {
            quantize(WType::Q4_K, dh, k, 0, 16, 16, 1, k, 16 * k, 16 * k, da, st);
        });
        printf("q4_K 16 columns of %lld: norm_quantize %.2f us (with q6_K's too %.2f), quantize alone %.2f us\n",
               (long long) k, fused, with_q6, alone);
        cudaFree(dx); cudaFree(dh); cudaFree(dw); cudaFree(da); cudaFree(da2);
    }

    // Timing on the models' shapes (rows x K): microseconds per product
    // (quantize and matmul) inside a CUDA graph, and the 16-column product's
    // cost over the one-column one's.
    struct Shape { const char * what; int64_t nrows, k; };
    const Shape shapes[] = {
        {"1.7B q", 2048, 2048}, {"1.7B kv", 1024, 2048}, {"1.7B qkv", 4096, 2048}, {"1.7B gate/up", 6144, 2048},
        {"1.7B gate+up", 12288, 2048}, {"1.7B down", 2048, 6144}, {"8B q", 4096, 4096}, {"8B qkv", 6144, 4096},
        {"8B gate/up", 12288, 4096}, {"8B gate+up", 24576, 4096}, {"8B down", 4096, 12288},
        {"lm head", 151936, 2048}, {"8B lm head", 151936, 4096},
    };
    for (WType t : {WType::Q4_K, WType::Q6_K, WType::Q8_0, WType::Q4_0}) {
        for (const Shape & s : shapes) {
            // Profiling (kernel-test.sh PROFILE=1, under Nsight Compute): the
            // 8B's Q4_K and Q6_K shapes (K 4096 or 12288; not gate/up alone,
            // 12288 rows, which the engine stacks into gate+up), 1 and 16
            // columns, as ggml-hook.cu launches them (row_tiles, default_variant).
            if (profile && (t == WType::Q8_0 || t == WType::Q4_0 || s.k == 2048 || s.nrows == 12288)) continue;
            std::vector<float> W, X;
            const int64_t row_bytes = (s.k / UNIT) * unit_bytes(t);
            std::vector<uint8_t> wbytes(row_bytes * s.nrows);
            for (auto & b : wbytes) b = ubyte();
            {
                // keep the f16 scales finite: fill from one valid random row
                std::vector<float> Wrow;
                const auto one = random_weights(t, s.k, 1, Wrow);
                for (int64_t r = 0; r < s.nrows; ++r) memcpy(wbytes.data() + r * row_bytes, one.data(), row_bytes);
            }
            const auto y = random_acts(s.k, MAX_COLS, X, scale_span(t));
            void *dw, *dy, *da; float * dd;
            CHECK(cudaMalloc(&dw, wbytes.size()));
            CHECK(cudaMalloc(&dy, y.size() * sizeof(float)));
            CHECK(cudaMalloc(&da, acts_bytes(s.k, MAX_COLS)));
            CHECK(cudaMalloc(&dd, sizeof(float) * s.nrows * MAX_COLS));
            CHECK(cudaMemcpy(dw, wbytes.data(), wbytes.size(), cudaMemcpyHostToDevice));
            CHECK(cudaMemcpy(dy, y.data(), y.size() * sizeof(float), cudaMemcpyHostToDevice));
            printf("%-4s %-13s %6lld x %5lld:", name(t), s.what, (long long) s.nrows, (long long) s.k);
            // Plain with 1, 2 and 4 row tiles; then the type's other variants with 1 and 2.
            for (const Pass & pass : passes) {
                if (!has_variant(t, pass.v) || (pass.v != Variant::Plain && pass.rt == 4)) continue;
                const Plan plan{pass.rt, pass.v};
                float us1 = 0.0f;
                printf(" | %s%s%d row tiles", pass.v == Variant::Plain ? "" : variant_name(pass.v),
                       pass.v == Variant::Plain ? "" : ", ", pass.rt);
                for (int n : {1, 8, 16, 32}) {
                    if (profile) {
                        if (n != 8 && pass.rt == row_tiles(s.nrows) && pass.v == default_variant(t)) {
                            product(t, dw, (const float *) dy, da, dd, s.k, s.nrows, n, row_bytes, s.nrows, plan);
                        }
                        continue;
                    }
                    const float us = graph_us([&](cudaStream_t st) {
                        product(t, dw, (const float *) dy, da, dd, s.k, s.nrows, n, row_bytes, s.nrows, plan, st);
                    });
                    if (n == 1) us1 = us;
                    printf(" %d: %6.2f", n, us);
                    if (n >= 16) printf(" (%d/1 %.2f)", n, us / us1);
                }
            }
            // The default plan with programmatic dependent launch (use_pdl):
            // the same values bit for bit, and its time at 1 and 16 columns.
            if (!profile) {
                const Plan plan{row_tiles(s.nrows), default_variant(t)};
                const bool same = same_with_pdl([&](cudaStream_t st) {
                    product(t, dw, (const float *) dy, da, dd, s.k, s.nrows, MAX_COLS, row_bytes, s.nrows, plan, st);
                }, dd, (size_t) s.nrows * MAX_COLS);
                failures += !same;
                printf(" | default with PDL:");
                for (int n : {1, 16, 32}) {
                    printf(" %d: %6.2f", n, graph_us_with_pdl([&](cudaStream_t st) {
                        product(t, dw, (const float *) dy, da, dd, s.k, s.nrows, n, row_bytes, s.nrows, plan, st);
                    }));
                }
                printf(", values %s", same ? "the same" : "DIFFER");
            }
            printf("\n");
            cudaFree(dw); cudaFree(dy); cudaFree(da); cudaFree(dd);
        }
    }
    CHECK(cudaGetLastError());
    printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
