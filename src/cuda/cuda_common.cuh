/*
 * cuda_common: helpers shared by hyserve's CUDA kernels (not a public header).
 * Error checking (every CUDA call and every launch), bf16 <-> fp32, warp reductions.
 */
#ifndef HS_CUDA_COMMON_CUH
#define HS_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "util.h"
#ifdef __cplusplus
}
#endif

/* Evaluate a CUDA call; on failure print where and return HS_ERR_STATE from the caller. */
#define HS_CUDA_TRY(call)                                                                    \
    do {                                                                                     \
        cudaError_t e_ = (call);                                                             \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "hyserve: cuda: %s:%d: %s: %s\n", __FILE__, __LINE__, #call,    \
                    cudaGetErrorString(e_));                                                 \
            return HS_ERR_STATE;                                                             \
        }                                                                                    \
    } while (0)
/* After a <<<>>> launch. */
#define HS_CUDA_LAUNCHED() HS_CUDA_TRY(cudaGetLastError())

typedef __nv_bfloat16 bf16_t;

__device__ __forceinline__ float bf2f(bf16_t x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16_t f2bf(float x) { return __float2bfloat16_rn(x); }
/* Two packed bf16 in a 32-bit word -> two floats (low half first). */
__device__ __forceinline__ float2 bf2x2_to_f2(uint32_t u) {
    float2 r;
    r.x = __uint_as_float(u << 16);
    r.y = __uint_as_float(u & 0xffff0000u);
    return r;
}
__device__ __forceinline__ uint32_t f2_to_bf2x2(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* The sequence of packed token t: the last s with cu_seqlens ts[s] <= t (binary search
 * over ts[0..S)). */
__device__ __forceinline__ int seq_of_token(const int32_t *ts, int S, int t) {
    int lo = 0, hi = S - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (ts[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* ---- programmatic dependent launch (PDL) --------------------------------------------
 * A kernel launched with launch_pdl() (cudaLaunchAttributeProgrammaticStreamSerialization)
 * may start while the kernel before it in the stream is still running: its blocks become
 * resident as soon as every block of that kernel has called pdl_trigger() (or exited), so
 * its launch latency and the set-up before pdl_wait() (a GEMV's weight prefetch) overlap
 * the tail of its predecessor. Rules for a kernel launched this way:
 *   - pdl_wait() before the first read of anything an earlier kernel of the step wrote,
 *     and before the first global write (an earlier kernel may still read the buffer);
 *   - every block reaches pdl_wait() (also on early exits): the kernel then completes only
 *     after its predecessor did, which makes "complete" transitive down the stream for the
 *     kernel after it (whose own pdl_wait() waits for this one alone).
 * Kernels launched plainly (<<<>>>, cuBLAS, other files) need nothing: they start after
 * their predecessor completed, and pdl_wait() in a plainly launched kernel returns at once.
 * pdl_trigger() at the top of a kernel is always safe: it only lets the next kernel's
 * blocks be scheduled early, and that kernel waits before touching shared data.
 * HS_CUDA_PDL=0 launches everything plainly (hs_cuda_pdl). */
__device__ __forceinline__ void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

/* The process-wide PDL switch: 1 unless HS_CUDA_PDL=0; set >= 0 changes it (benchmarks
 * compare both in one process). Defined in gemv.cu. */
extern "C" int hs_cuda_pdl(int set);

/* kernel<<<grid, block, smem, st>>>(args...) as a programmatic dependent of the stream's
 * previous kernel (when hs_cuda_pdl), for kernels that follow the rules above. */
template <typename... KArgs, typename... Args>
static inline cudaError_t launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t st,
                                     Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = hs_cuda_pdl(-1);
    cfg.attrs = at;
    cfg.numAttrs = 1;
    return cudaLaunchKernelEx(&cfg, kernel, args...);
}

__device__ __forceinline__ float silu_f(float x) { return x / (1.f + __expf(-x)); }
__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + expf(-x)); }

#endif
