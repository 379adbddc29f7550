// Tests and times kernels/cuda/attn.cuh on the GPU, without ggml:
//   nvcc -O3 -std=c++17 -arch=sm_90a -o attn-test kernels/cuda/attn-test.cu && ./attn-test
// Random queries, an f16 cache and masks laid out as the engine's graph lays
// them out (queries inside a fused qkv row, the cache slot-major); the
// reference sums in double from the same f16 K and V. Checks the error for
// several head groupings, query counts and cache lengths (chunks and splits
// cut short, whole splits masked), with one split and with many. Then times
// the models' shapes. Exit status 1 on any failed check.
#include "attn.cuh"
#include "test-util.cuh"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

using namespace orthrus_attn;

static std::mt19937 rng(4321);
// The most shared memory a block may have on the GPU (set in main).
static size_t smem_optin = 0;
static float urand(float a, float b) { return std::uniform_real_distribution<float>(a, b)(rng); }

struct Case {
    int nh, nkv, nq, n_kv;
    int masked_from;  // every query's slots from here on are masked (n_kv: none)
};

struct Data {
    int nh, nkv, nq, n_kv;
    int64_t q_s1, mask_s1;
    std::vector<float> q;
    std::vector<half> k, v, mask;
    float * dq = nullptr;
    half *dk = nullptr, *dv = nullptr, *dmask = nullptr;
    float * ddst = nullptr;
    void * scratch = nullptr;
    size_t scratch_size = 0;
};

// Queries as rows of a fused [q; k; v] projection (q_s1 = (nh + 2 nkv) D),
// the cache as [slot][KV head][D], the mask rows a little longer than n_kv.
static Data make(const Case & c) {
    Data x;
    x.nh = c.nh; x.nkv = c.nkv; x.nq = c.nq; x.n_kv = c.n_kv;
    x.q_s1 = (int64_t) (c.nh + 2 * c.nkv) * D;
    x.mask_s1 = (c.n_kv + 15) / 8 * 8;
    x.q.resize(x.q_s1 * c.nq);
    for (auto & e : x.q) e = urand(-2.0f, 2.0f);
    x.k.resize((size_t) c.n_kv * c.nkv * D);
    x.v.resize(x.k.size());
    for (auto & e : x.k) e = __float2half(urand(-2.0f, 2.0f));
    for (auto & e : x.v) e = __float2half(urand(-1.0f, 1.0f));
    x.mask.assign(x.mask_s1 * c.nq, __float2half(0.0f));
    for (int t = 0; t < c.nq; ++t) {
        for (int j = 0; j < c.n_kv; ++j) {
            // A causal edge near the end for the later queries, random holes, the tail.
            const bool off = j >= c.masked_from || (t % 2 == 1 && j > c.n_kv - c.nq + t) || (rng() % 7 == 0 && j > 0);
            x.mask[t * x.mask_s1 + j] = __float2half(off ? -INFINITY : 0.0f);
        }
    }
    CHECK(cudaMalloc(&x.dq, x.q.size() * sizeof(float)));
    CHECK(cudaMalloc(&x.dk, x.k.size() * sizeof(half)));
    CHECK(cudaMalloc(&x.dv, x.v.size() * sizeof(half)));
    CHECK(cudaMalloc(&x.dmask, x.mask.size() * sizeof(half)));
    CHECK(cudaMalloc(&x.ddst, sizeof(float) * D * c.nh * c.nq));
    CHECK(cudaMemcpy(x.dq, x.q.data(), x.q.size() * sizeof(float), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(x.dk, x.k.data(), x.k.size() * sizeof(half), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(x.dv, x.v.data(), x.v.size() * sizeof(half), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(x.dmask, x.mask.data(), x.mask.size() * sizeof(half), cudaMemcpyHostToDevice));
    return x;
}

static void release(Data & x) {
    cudaFree(x.dq); cudaFree(x.dk); cudaFree(x.dv); cudaFree(x.dmask); cudaFree(x.ddst); cudaFree(x.scratch);
}

static Params params(Data & x, int n_sm, const Tuning & tuning = Tuning()) {
    Params p{};
    p.q = x.dq; p.k = x.dk; p.v = x.dv; p.mask = x.dmask; p.dst = x.ddst;
    p.q_s1 = x.q_s1; p.q_s2 = D;
    p.k_s1 = p.v_s1 = (int64_t) x.nkv * D; p.k_s2 = p.v_s2 = D;
    p.mask_s1 = x.mask_s1;
    p.nq = x.nq; p.nh = x.nh; p.nkv = x.nkv; p.n_kv = x.n_kv;
    p.scale = 1.0f / sqrtf((float) D);
    plan(p, n_sm, smem_optin, tuning);
    if (scratch_bytes(p) > x.scratch_size) {
        cudaFree(x.scratch);
        x.scratch_size = scratch_bytes(p);
        CHECK(cudaMalloc(&x.scratch, x.scratch_size));
    }
    return p;
}

// max |out - ref| / max |ref| over the outputs, the reference in double.
static double error(const Data & x, const std::vector<float> & out) {
    const int gqa = x.nh / x.nkv;
    double worst = 0.0, mag = 0.0;
    std::vector<double> w(x.n_kv);
    for (int t = 0; t < x.nq; ++t) {
        for (int h = 0; h < x.nh; ++h) {
            const int g = h / gqa;
            double m = -INFINITY;
            for (int j = 0; j < x.n_kv; ++j) {
                double s = 0.0;
                for (int d = 0; d < D; ++d) {
                    s += (double) x.q[t * x.q_s1 + h * D + d] * (double) __half2float(x.k[((size_t) j * x.nkv + g) * D + d]);
                }
                w[j] = s / sqrt((double) D) + (double) __half2float(x.mask[t * x.mask_s1 + j]);
                m = fmax(m, w[j]);
            }
            double l = 0.0;
            for (int j = 0; j < x.n_kv; ++j) {
                w[j] = exp(w[j] - m);
                l += w[j];
            }
            for (int d = 0; d < D; ++d) {
                double ref = 0.0;
                for (int j = 0; j < x.n_kv; ++j) {
                    ref += w[j] * (double) __half2float(x.v[((size_t) j * x.nkv + g) * D + d]);
                }
                ref /= l;
                mag = fmax(mag, fabs(ref));
                worst = fmax(worst, fabs((double) out[((size_t) t * x.nh + h) * D + d] - ref));
            }
        }
    }
    return worst / mag;
}

int main(int argc, char ** argv) {
    const bool profile = argc > 1 && strcmp(argv[1], "profile") == 0;
    int failures = 0;
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s (sm_%d%d), %d SMs\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
    smem_optin = prop.sharedMemPerBlockOptin;

    const Case cases[] = {
        {16, 8, 16, 640, 640},   // Qwen3-1.7B: 2 heads per KV head, 32 rows
        {32, 8, 16, 640, 640},   // Qwen3-8B: 4, 64 rows
        {16, 8, 32, 640, 640},   // Qwen3-1.7B, a block of 32: 64 rows
        {32, 8, 32, 900, 880},   // Qwen3-8B, a block of 32: 128 rows (8 warps)
        {16, 8, 27, 4100, 4100}, // 27 queries over several chunks per split
        {32, 8, 16, 700, 600},   // the last splits wholly masked
        {16, 8, 2, 37, 37},      // one short chunk
        {8, 8, 5, 300, 300},     // one head per KV head, a row count not a multiple of 16
        {64, 8, 16, 2000, 2000}, // 8 warps
        {16, 8, 16, 4100, 4100}, // long: several chunks per split
        {16, 8, 1, 768, 768},    // one query (a one-token pass): 2 rows
        {32, 8, 1, 640, 600},    // 4 rows, the last splits wholly masked
        {32, 8, 1, 37, 37},
    };
    for (const Case & c : cases) {
        if (profile) break;
        Data x = make(c);
        for (int n_sm : {1, prop.multiProcessorCount})
        for (int stages = 1; stages <= MAX_STAGES; ++stages) {
            Tuning tuning;
            tuning.stages = stages;
            Params p = params(x, n_sm, tuning);
            CHECK(cudaMemset(x.ddst, 0xFF, sizeof(float) * D * c.nh * c.nq));
            launch(p, x.scratch, 0);
            CHECK(cudaGetLastError());
            std::vector<float> out((size_t) D * c.nh * c.nq);
            CHECK(cudaMemcpy(out.data(), x.ddst, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
            const double e = error(x, out);
            const bool ok = e < 4e-3;  // f16 Q and P, f32 sums
            failures += !ok;
            printf("heads %2d/%d, %2d queries, %4d slots (masked from %4d), %2d splits of %4d, %d stages: error / max|out| %.2e: %s\n",
                   c.nh, c.nkv, c.nq, c.n_kv, c.masked_from, p.nsplit, p.split_len, p.stages, e, ok ? "ok" : "FAILED");
        }
        release(x);
    }

    // Timing: microseconds per call on the models' shapes, inside a CUDA graph
    // (profile: one plain launch each, for ncu).
    struct Shape { const char * what; int nh, nkv; };
    for (const Shape & s : {Shape{"1.7B", 16, 8}, Shape{"8B", 32, 8}}) {
        for (int nq : {1, 16, 32})
        for (int n_kv : {768, 1024, 4096, 8192, 32768}) {
            if (profile && n_kv != 768) continue;
            Data x = make({s.nh, s.nkv, nq, n_kv, n_kv});
            Params p = params(x, prop.multiProcessorCount);
            if (profile) {
                launch(p, x.scratch, 0);
            } else {
                const float us = graph_us([&](cudaStream_t st) { launch(p, x.scratch, st); });
                // With programmatic dependent launch: the same values bit for bit, and its time.
                const auto run = [&](cudaStream_t st) { launch(p, x.scratch, st); };
                const bool same = same_with_pdl(run, x.ddst, (size_t) D * s.nh * nq);
                const float us_pdl = graph_us_with_pdl(run);
                failures += !same;
                // The cache's K and V read once, in GB/s at the time without PDL.
                const double gbs = 4.0 * n_kv * s.nkv * D / (us * 1e3);
                printf("%-4s heads %d/%d, %2d queries, %5d slots, %2d splits: %6.2f us (%4.0f GB/s), with PDL %6.2f us (values %s)\n",
                       s.what, s.nh, s.nkv, nq, n_kv, p.nsplit, us, gbs, us_pdl, same ? "the same" : "DIFFER");
                // Other plans (blocks per SM, fewest chunks a split, stages), with PDL.
                if (nq > 1 && n_kv >= 4096) {
                    printf("     plans:");
                    for (const Tuning t : {Tuning{4, 4, 1}, Tuning{2, 2, 2}, Tuning{2, 8, 2}, Tuning{1, 4, 2}}) {
                        Params q = params(x, prop.multiProcessorCount, t);
                        const float u = graph_us_with_pdl([&](cudaStream_t st) { launch(q, x.scratch, st); });
                        printf(" %d/%d/%d %2d splits %6.2f us (%4.0f GB/s);", t.per_sm, t.min_chunks, t.stages, q.nsplit,
                               u, 4.0 * n_kv * s.nkv * D / (u * 1e3));
                    }
                    printf("\n");
                }
            }
            release(x);
        }
    }
    CHECK(cudaGetLastError());
    printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
