/*
 * gemm_lt: out[M, N] = x[M, K] @ W[N, K]^T in bf16 (fp32 accumulate, bf16 or fp32 out)
 * through cuBLASLt with the algorithm measured fastest for each shape.
 *
 * Why: for the middle sizes of M (a decode batch of 16 to 256 rows) these products are
 * still bound by reading W, and cuBLAS's first-choice algorithm leaves much of the
 * bandwidth unused (measured on an H100: 1.5 TB/s for 4096 x 4096 at M = 128, where the
 * weight stream allows ~3). cuBLASLt offers several algorithms (tile shapes, split-K);
 * the first call of a shape times each candidate on the real operands and keeps the
 * fastest. M is grouped in classes ~1.5x apart (2, 3, 4, 6, 8, 12 ... 4096, 6144 ...):
 * a later M of the same class and shape reuses the timed algorithm when cuBLASLt accepts
 * it for that M, so a batch size that changes every step costs one timing per class. A call made while the stream is being captured into a graph never times
 * (events cannot be timed inside a capture): it uses the tuned algorithm when there is
 * one, else cuBLASLt's first choice.
 */
#ifndef HS_GEMM_LT_H
#define HS_GEMM_LT_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gemm_lt gemm_lt_t;

/* ws: device workspace of ws_bytes that the algorithms may use (owned by the caller). */
gemm_lt_t *gemm_lt_create(void *ws, size_t ws_bytes);
void gemm_lt_destroy(gemm_lt_t *g);
/* HS_OK, or HS_ERR_UNSUPPORTED when cuBLASLt has no algorithm for the shape (nothing ran). */
int gemm_lt_run(gemm_lt_t *g, const void *x, const void *W, int M, int N, int K, void *out, bool out_f32,
                void *stream);
/* Shapes tuned so far (for reports). */
int gemm_lt_tuned(const gemm_lt_t *g);

#ifdef __cplusplus
}
#endif

#endif
