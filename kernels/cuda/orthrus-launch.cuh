// Kernel launches with programmatic dependent launch (PDL), shared by
// mmv.cuh and attn.cuh (the "orthrus-" prefix keeps it apart from ggml-cuda's
// headers).
#pragma once

#include <cuda_runtime.h>

namespace orthrus_launch {

// Programmatic dependent launch (sm_90; see use_pdl()): grid_wait() waits
// for the kernels before this one on its stream to complete (at once without
// PDL), grid_release() lets the next one start its blocks early, and
// prefetch_l2() warms L2 with memory no earlier kernel writes (weights).
static __device__ __forceinline__ void grid_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
static __device__ __forceinline__ void grid_release() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
static __device__ __forceinline__ void prefetch_l2(const void * p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
    (void) p;
#endif
}

// Whether launch_kernel() launches with programmatic dependent launch
// (cudaLaunchAttributeProgrammaticStreamSerialization): each kernel may then
// start while the one before it on the stream finishes, as ggml-cuda's own
// kernels do on sm_90; each waits (grid_wait) before it reads what an earlier
// kernel wrote. Off here; ggml-hook.cu sets it (on by default, see its
// pdl_mode). The matmul's kernels (mmv.cuh) and attention's (attn.cuh) take
// it. Measured on the H200, 2026-12-02, in the kernel tests (graphs of 20
// launches, the same values bit for bit): Q4_K products 0.6-1.1 us quicker
// a quantize + product pair at the 1.7B's and 8B's shapes below 12288 rows
// (8B q at 16 columns 7.77 -> 7.00 us), the same on the LM heads; Q6_K mixed,
// quicker on the 1.7B's shapes, slower on the 8B's gate/up and down (down
// 23.8 -> 29.8 us at 16 columns); attention for one query 0.6-0.8 us
// quicker, for 16 0.7-5 us slower (8B, 768 slots: 9.6 -> 10.3 us). End to end
// it makes decoding quicker (ggml-hook.cu).
static inline bool & use_pdl() {
    static bool on = false;
    return on;
}

// kernel<<<grid, block, smem, stream>>>(args...), with PDL when pdl.
template <typename... P, typename... A>
static void launch_kernel_as(bool pdl, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                             A... args) {
    if (!pdl) {
        kernel<<<grid, block, smem, stream>>>(args...);
        return;
    }
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    cudaLaunchKernelEx(&cfg, kernel, args...);
}

// The same, with PDL when use_pdl().
template <typename... P, typename... A>
static void launch_kernel(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A... args) {
    launch_kernel_as(use_pdl(), kernel, grid, block, smem, stream, args...);
}

}  // namespace orthrus_launch
