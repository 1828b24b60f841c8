/*
 * cuda_sample: the CUDA sampler behind bk->sample (sample.cu). One block per row reads
 * the row's fp32 logits where the model wrote them and returns the token, its logprob
 * and the top log-probabilities; the semantics and the counter-based draw are those of
 * sample.h / sample_rng.h, so the CPU reference picks the same token for the same
 * logits and (seed, step) unless the probabilities are within rounding of a boundary.
 * Plain C interface (the stream is passed as void *).
 */
#ifndef HS_CUDA_SAMPLE_H
#define HS_CUDA_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "backend.h"

/* Largest vocabulary sample_run accepts (the fixed-point mass sums need V < 2^19). */
#define SAMPLE_MAX_VOCAB (1 << 19)

/* Device workspace bytes sample_run needs for n rows. */
size_t sample_ws_bytes(int n);

/* Sample n rows of logits[*, V] (device, fp32): uploads rows[n] (host) into d_ws,
 * runs one block per row on `stream`, copies the results to out[n] (host) and waits
 * for the stream. HS_OK; HS_ERR_INVALID for bad sizes or parameters (nothing runs);
 * HS_ERR_STATE when a CUDA call failed. */
int sample_run(const float *logits, int V, const bk_sample_row_t *rows, int n, bk_sample_out_t *out, void *d_ws,
               void *stream);
/* sample_run without the wait: out must be pinned host memory, valid once the stream
 * has passed the copy. tok_out (device, may be NULL): tok_out[rows[i].row] gets row i's
 * token as well. */
int sample_queue(const float *logits, int V, const bk_sample_row_t *rows, int n, bk_sample_out_t *out, void *d_ws,
                 int32_t *tok_out, void *stream);

#ifdef __cplusplus
}
#endif

#endif
