/*
 * attn_common: device helpers shared by the paged attention kernels (attn_decode.cu,
 * attn_prefill.cu), not a public header: the XOR swizzle of 512-byte rows in shared
 * memory (cp.async, ldmatrix and mma wrappers are in cuda_common.cuh).
 *
 * Swizzle: a K/V row of 256 bf16 is 32 chunks of 16 bytes; chunk c of row r is stored at
 * chunk c ^ (r & 7), so the 8 rows an ldmatrix reads at one column fall in 8 different
 * groups of 4 banks (no bank conflicts), and a warp's cp.async of one row stays contiguous.
 */
#ifndef HS_ATTN_COMMON_CUH
#define HS_ATTN_COMMON_CUH

#include "cuda_common.cuh"

/* Index (in 16-byte chunks) of chunk c of row r in a swizzled tile of rows of `rc` chunks. */
__device__ __forceinline__ int attn_swz(int r, int c, int rc) { return r * rc + (c ^ (r & 7)); }

__device__ __forceinline__ uint32_t attn_pack_bf2(float lo, float hi) { return f2_to_bf2x2(lo, hi); }

#endif
