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

__device__ __forceinline__ float silu_f(float x) { return x / (1.f + __expf(-x)); }
__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + expf(-x)); }

#endif
