// A host-only stand-in for the CUDA headers kernels/cuda/ includes, so that
// test_cuda_host_check.py can have g++ parse and type-check kernels/cuda/'s
// headers and their tests where there is no nvcc (CI): declarations only, never run.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#define __device__
#define __global__
#define __host__
#define __forceinline__ inline
#define __restrict__
// Block-scope automatic arrays here (extern ones, dynamic shared memory, declarations).
#define __shared__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
struct half { uint16_t x; };
struct half2 { half x, y; };
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct int2 { int x, y; };
struct uint4 { unsigned x, y, z, w; };
struct int4 { int x, y, z, w; };
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
struct uint3_ { unsigned x, y, z; };
extern uint3_ threadIdx, blockIdx, blockDim;
typedef struct CUstream_st * cudaStream_t;
typedef struct CUevent_st * cudaEvent_t;
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
float __half2float(half);
half __float2half(float);
float2 __half22float2(half2);
half2 __floats2half2_rn(float, float);
int2 make_int2(int, int);
float2 make_float2(float, float);
float4 make_float4(float, float, float, float);
float rsqrtf(float);
size_t __cvta_generic_to_shared(const void *);
unsigned __byte_perm(unsigned, unsigned, unsigned);
int __dp2a_lo(int, int, int);
unsigned __funnelshift_r(unsigned, unsigned, unsigned);
int __dp2a_hi(int, int, int);
unsigned __vsub4(unsigned, unsigned);
float __shfl_xor_sync(unsigned, float, int);
int __shfl_xor_sync(unsigned, int, int);
int __shfl_down_sync(unsigned, int, int);
void __syncthreads();
void __trap();
template <class T> T min(T a, T b) { return a < b ? a : b; }
struct cudaDeviceProp { char name[256]; int major, minor, multiProcessorCount; size_t sharedMemPerBlockOptin; };
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *, int);
cudaError_t cudaGetDevice(int *);
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
template <class T> cudaError_t cudaFuncSetAttribute(T, cudaFuncAttribute, int);
template <class T> cudaError_t cudaMalloc(T **, size_t);
cudaError_t cudaMemcpy(void *, const void *, size_t, int);
cudaError_t cudaMemset(void *, int, size_t);
cudaError_t cudaGetLastError();
enum cudaLaunchAttributeID { cudaLaunchAttributeProgrammaticStreamSerialization = 5 };
struct cudaLaunchAttribute { cudaLaunchAttributeID id; struct { int programmaticStreamSerializationAllowed; } val; };
struct cudaLaunchConfig_t { dim3 gridDim, blockDim; size_t dynamicSmemBytes; cudaStream_t stream; cudaLaunchAttribute * attrs; unsigned numAttrs; };
template <class... P, class... A> cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t *, void (*)(P...), A...);
const char * cudaGetErrorString(cudaError_t);
cudaError_t cudaFree(void *);
cudaError_t cudaEventCreate(cudaEvent_t *);
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t s = 0);
cudaError_t cudaEventSynchronize(cudaEvent_t);
cudaError_t cudaEventElapsedTime(float *, cudaEvent_t, cudaEvent_t);
cudaError_t cudaEventDestroy(cudaEvent_t);
typedef struct CUgraph_st * cudaGraph_t;
typedef struct CUgraphExec_st * cudaGraphExec_t;
enum { cudaStreamNonBlocking = 1, cudaStreamCaptureModeGlobal = 0 };
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *, unsigned);
cudaError_t cudaStreamDestroy(cudaStream_t);
cudaError_t cudaStreamBeginCapture(cudaStream_t, int);
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t *);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *, cudaGraph_t, unsigned long long);
cudaError_t cudaGraphLaunch(cudaGraphExec_t, cudaStream_t);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t);
cudaError_t cudaGraphDestroy(cudaGraph_t);
