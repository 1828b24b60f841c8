/*
 * attn_common: device helpers shared by the paged attention kernels (attn_decode.cu,
 * attn_prefill.cu), not a public header: cp.async 16-byte copies, ldmatrix, the
 * m16n8k16 bf16 tensor-core product, programmatic-dependent-launch controls, and the
 * XOR swizzle of 512-byte rows in shared memory.
 *
 * Swizzle: a K/V row of 256 bf16 is 32 chunks of 16 bytes; chunk c of row r is stored at
 * chunk c ^ (r & 7), so the 8 rows an ldmatrix reads at one column fall in 8 different
 * groups of 4 banks (no bank conflicts), and a warp's cp.async of one row stays contiguous.
 */
#ifndef HS_ATTN_COMMON_CUH
#define HS_ATTN_COMMON_CUH

#include "cuda_common.cuh"

__device__ __forceinline__ unsigned attn_smem_u32(const void *p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
/* 16 bytes global -> shared, bypassing L1; valid == false zero-fills (src not read). */
__device__ __forceinline__ void attn_cp16(void *smem, const void *gmem, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(attn_smem_u32(smem)), "l"(gmem),
                 "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void attn_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void attn_cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void attn_ldsm_x4(unsigned &r0, unsigned &r1, unsigned &r2, unsigned &r3, const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(attn_smem_u32(p)));
}
__device__ __forceinline__ void attn_ldsm_x4_t(unsigned &r0, unsigned &r1, unsigned &r2, unsigned &r3,
                                               const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(attn_smem_u32(p)));
}
/* d += A(16x16, regs a0..a3 in the mma fragment order) * B(16x8, b0 b1), fp32 accumulate */
__device__ __forceinline__ void attn_mma(float *d, unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0,
                                         unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
/* Index (in 16-byte chunks) of chunk c of row r in a swizzled tile of rows of `rc` chunks. */
__device__ __forceinline__ int attn_swz(int r, int c, int rc) { return r * rc + (c ^ (r & 7)); }

__device__ __forceinline__ uint32_t attn_pack_bf2(float lo, float hi) { return f2_to_bf2x2(lo, hi); }

#endif
