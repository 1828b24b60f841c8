/*
 * cuda_common: helpers shared by hyserve's CUDA kernels (not a public header).
 * Error checking (every CUDA call and every launch), bf16 <-> fp32, warp reductions,
 * programmatic dependent launch, and the cp.async / ldmatrix / mma wrappers the tensor-core
 * and streaming kernels share.
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
/* The 8 bf16 of one 16-byte load as floats, in order. */
__device__ __forceinline__ void bf16x8_to_f(uint4 u, float *f) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 v = bf2x2_to_f2(w[i]);
        f[2 * i] = v.x, f[2 * i + 1] = v.y;
    }
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

/* ---- shared memory, cp.async, ldmatrix, mma (sm_80+) ------------------------------ */
__device__ __forceinline__ unsigned smem_u32(const void *p) { return (unsigned)__cvta_generic_to_shared(p); }
/* 16 bytes global -> shared, bypassing L1 (cp.async.cg) */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem)), "l"(gmem) : "memory");
}
/* the same, reading only the first src_bytes (0 or 16 here) and zero-filling the rest:
 * src_bytes 0 reads nothing */
__device__ __forceinline__ void cp_async16_bytes(void *smem, const void *gmem, unsigned src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem),
                 "r"(src_bytes)
                 : "memory");
}
/* valid == false zero-fills the 16 bytes (nothing is read): cp_async16_bytes with 16 or 0,
 * written out so that the select stays next to its use (the kernels were measured so) */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem),
                 "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
/* wait until at most N committed groups of this thread are in flight */
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
__device__ __forceinline__ void ldsm_x4(unsigned &r0, unsigned &r1, unsigned &r2, unsigned &r3, const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned &r0, unsigned &r1, unsigned &r2, unsigned &r3, const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(smem_u32(p)));
}
/* d += A(16x16 bf16, a0..a3 in the mma fragment order) * B(16x8 bf16, b0 b1), fp32 accumulate */
__device__ __forceinline__ void mma_16816(float *d, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0,
                                          unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_16816(float *d, const unsigned *a, unsigned b0, unsigned b1) {
    mma_16816(d, a[0], a[1], a[2], a[3], b0, b1);
}

/* mbarriers (sm_90): init with `count` arrivals expected, make the init visible to the
 * cluster, one arrival announcing `bytes` more to come by complete_tx, wait for a phase */
__device__ __forceinline__ void mbar_init(uint64_t *bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
}
/* one arrival, and `bytes` more to come through complete_tx */
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t *bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void fence_mbar_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_wait(uint64_t *bar, unsigned parity) {
    const unsigned a = smem_u32(bar);
    unsigned done;
    do {
        asm volatile("{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(a), "r"(parity)
                     : "memory");
    } while (!done);
}

__device__ __forceinline__ float silu_f(float x) { return x / (1.f + __expf(-x)); }
__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + expf(-x)); }

#endif
