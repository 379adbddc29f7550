// A kernel tracer for the GPU machine, which has no Nsight Systems: loaded
// with LD_PRELOAD into any CUDA program (ours, llama-bench), it records
// through CUPTI's activity API every kernel (those inside CUDA graphs one by
// one), memory copy and set, and CUDA runtime call, with their GPU and host
// times on one clock, and writes them to $KTRACE_OUT at exit, a line each:
//   K,start,end,correlation,graph,name        a kernel (name demangled)
//   M,start,end,correlation,graph,bytes,kind  a copy (kind: CUPTI's copyKind) or a set (kind -1)
//   R,start,end,correlation,name              a runtime call (host thread)
// Times in ns. A kernel launched by cudaGraphLaunch carries that call's
// correlation id, so a graph's kernels are grouped by it (trace-report.py).
// Unlike Nsight Compute, nothing is serialized or replayed: the program runs
// at about its own speed. Built on the GPU machine by trace.sh.
#include <cupti_activity.h>
#include <cupti_callbacks.h>
#include <cupti_result.h>
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace {

FILE * g_out = nullptr;
std::mutex g_mutex;

void CUPTIAPI on_request(uint8_t ** buffer, size_t * size, size_t * max_records) {
    *size = 16 << 20;
    *buffer = (uint8_t *) aligned_alloc(8, *size);
    *max_records = 0;
}

// A kernel's name without its parameter list's noise, demangled when it can be.
void write_name(const char * mangled) {
    int status = 0;
    char * d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
    const char * n = status == 0 && d ? d : mangled;
    for (const char * c = n; *c; ++c) {
        fputc(*c == '\n' ? ' ' : *c, g_out);
    }
    fputc('\n', g_out);
    free(d);
}

void CUPTIAPI on_complete(CUcontext, uint32_t, uint8_t * buffer, size_t, size_t valid) {
    std::lock_guard<std::mutex> lock(g_mutex);
    CUpti_Activity * r = nullptr;
    while (g_out && cuptiActivityGetNextRecord(buffer, valid, &r) == CUPTI_SUCCESS) {
        switch (r->kind) {
            case CUPTI_ACTIVITY_KIND_KERNEL:
            case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
                const auto * k = (const CUpti_ActivityKernel10 *) r;
                fprintf(g_out, "K,%llu,%llu,%u,%u,", (unsigned long long) k->start, (unsigned long long) k->end,
                        k->correlationId, k->graphId);
                write_name(k->name ? k->name : "?");
                break;
            }
            case CUPTI_ACTIVITY_KIND_MEMCPY: {
                const auto * m = (const CUpti_ActivityMemcpy6 *) r;
                fprintf(g_out, "M,%llu,%llu,%u,%u,%llu,%d\n", (unsigned long long) m->start,
                        (unsigned long long) m->end, m->correlationId, m->graphId, (unsigned long long) m->bytes,
                        (int) m->copyKind);
                break;
            }
            case CUPTI_ACTIVITY_KIND_MEMSET: {
                const auto * m = (const CUpti_ActivityMemset4 *) r;
                fprintf(g_out, "M,%llu,%llu,%u,%u,%llu,-1\n", (unsigned long long) m->start,
                        (unsigned long long) m->end, m->correlationId, m->graphId, (unsigned long long) m->bytes);
                break;
            }
            case CUPTI_ACTIVITY_KIND_RUNTIME: {
                const auto * a = (const CUpti_ActivityAPI *) r;
                const char * name = nullptr;
                if (cuptiGetCallbackName(CUPTI_CB_DOMAIN_RUNTIME_API, a->cbid, &name) != CUPTI_SUCCESS || !name) {
                    name = "?";
                }
                fprintf(g_out, "R,%llu,%llu,%u,%s\n", (unsigned long long) a->start, (unsigned long long) a->end,
                        a->correlationId, name);
                break;
            }
            default:
                break;
        }
    }
    free(buffer);
}

void check(CUptiResult r, const char * what) {
    if (r != CUPTI_SUCCESS) {
        const char * s = nullptr;
        cuptiGetResultString(r, &s);
        fprintf(stderr, "ktrace: %s: %s\n", what, s ? s : "?");
    }
}

__attribute__((constructor)) void start() {
    const char * path = getenv("KTRACE_OUT");
    if (!path || !*path) {
        fprintf(stderr, "ktrace: KTRACE_OUT not set; not tracing\n");
        return;
    }
    g_out = fopen(path, "w");
    if (!g_out) {
        fprintf(stderr, "ktrace: cannot write %s\n", path);
        return;
    }
    check(cuptiActivityRegisterCallbacks(on_request, on_complete), "register");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "kernels");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY), "copies");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET), "sets");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_RUNTIME), "runtime");
}

__attribute__((destructor)) void stop() {
    if (!g_out) {
        return;
    }
    check(cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED), "flush");
    std::lock_guard<std::mutex> lock(g_mutex);
    fclose(g_out);
    g_out = nullptr;
}

}  // namespace
