/*
 * gemv: bf16 GEMV / small-M GEMM for decode projections, out[M, N] = x[M, K] @ W[N, K]^T
 * with fp32 accumulation, bf16 or fp32 output. At M <= 16 such a product reads each
 * weight byte once and does little arithmetic, so its time is the weight bytes over the
 * HBM read bandwidth; cuBLAS reaches only 0.9-2.1 TB/s at these shapes, this kernel
 * streams every weight row once with 16-byte no-L1 loads (bench/bench_gemv.cu).
 * A grouped launch runs several weights that read the same x (a layer's q/k/v or the
 * GDN in_proj qkv/z/b/a) in one kernel, each writing its own output.
 *
 * Plain C launchers like cuda_ops.h: raw device pointers, the stream as void *,
 * asynchronous; HS_OK, HS_ERR_INVALID for arguments the kernel does not serve (then
 * nothing is launched and the caller uses cuBLAS), HS_ERR_STATE on a CUDA error.
 * Requirements: 1 <= M <= GEMV_MAX_M, K % 8 == 0, x and every W 16-byte aligned. Row
 * strides are dense: x row m at x + m*K, out row m at out + m*N.
 * Safe inside CUDA-graph capture (the per-kernel set-up runs once, at the first call).
 */
#ifndef HS_GEMV_H
#define HS_GEMV_H

#ifdef __cplusplus
extern "C" {
#endif

#define GEMV_MAX_M 16
#define GEMV_MAX_GROUP 8

/* One weight of a grouped launch: W bf16 [N, K], out [M, N] bf16 (out_f32 = 0) or fp32, its
 * rows ld elements apart (0: N; e.g. column blocks of one buffer). */
typedef struct {
    const void *w;
    int N;
    void *out;
    int out_f32;
    int ld;
} gemv_seg_t;

/* cfg: 0 = heuristic; 1..gemv_n_cfgs() force a variant (rows per warp, loads in flight,
 * shared-memory cap; gemv_cfg_name) for tuning. */
int gemv_launch(const void *x, int M, int K, const void *w, int N, void *out, int out_f32, int cfg, void *stream);
int gemv_grouped_launch(const void *x, int M, int K, const gemv_seg_t *segs, int n_segs, int cfg, void *stream);

int gemv_n_cfgs(void);
const char *gemv_cfg_name(int cfg);

/* The largest M at which gemv_launch beats cuBLAS for an [N, K] weight (measured on an
 * H100, bench/RESULTS.md "GEMV"); 0: use cuBLAS at every M. */
int gemv_max_m(int N, int K);
/* The largest M at which one grouped launch of n weights of K columns beats n cuBLAS
 * GEMMs (measured for the GDN and attention in-projections). */
int gemv_grouped_max_m(int n, int K);

#ifdef __cplusplus
}
#endif

#endif
