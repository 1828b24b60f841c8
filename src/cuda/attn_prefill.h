/*
 * attn_prefill: the launcher of the paged flash-attention kernel for prefill rows
 * (attn_prefill.cu): varlen causal attention where each sequence's new tokens attend to
 * its n_past cached tokens and, causally, to each other, every key read from the paged
 * KV cache (layout.h block layout; the new tokens' K/V are already written there).
 * Plain C interface, same conventions as cuda_ops.h (void * stream, HS_ codes).
 */
#ifndef HS_ATTN_PREFILL_H
#define HS_ATTN_PREFILL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sequences [s0, S) of the batch; T = tokens of all S sequences, packed.
 *   q, gate  bf16 [T][Hq][D] (q already normed + roped); gate may be NULL (no gate)
 *   kv_base, page_bytes, block_tables [S][max_blocks], layer_off, block_size: as in
 *            attn_decode_launch (K of (token, KV head) at ((pos % bs) * Hkv + kh) * D
 *            elements into the page, V block_size * Hkv * D elements after K)
 *   tok_start device i32 [S+1] (cu_seqlens); n_past device i32 [S] (cached tokens
 *            before the segment; token i of sequence s is at position n_past[s] + i
 *            and sees keys 0 .. n_past[s] + i)
 *   tok_start_host: host copy of tok_start (sizes the grid)
 *   out      bf16 [T][Hq][D]: rows of sequences [s0, S) written, others untouched;
 *            out = softmax(q k^T * scale) v (fp32 softmax) * sigmoid(gate)
 * D: multiple of 8, at most 256 (kernels for 128 and 256; smaller D is zero-padded).
 * G = Hq / Hkv <= 64. Returns HS_OK, HS_ERR_INVALID / HS_ERR_UNSUPPORTED (nothing
 * launched) or HS_ERR_STATE. */
int attn_prefill_launch(const void *q, const void *gate, const void *kv_base, size_t page_bytes,
                        const int32_t *block_tables, int max_blocks, const int32_t *tok_start, const int32_t *n_past,
                        const int32_t *tok_start_host, int s0, int S, size_t layer_off, int block_size, int Hq,
                        int Hkv, int D, float scale, void *out, void *stream);

/* Tuning (benchmarks): block shape 0 (default) or 1 = 64 query rows (4 warps), 2 = 128
 * rows (8 warps). Process-wide; returns the previous value. */
int attn_prefill_config(int variant);

#ifdef __cplusplus
}
#endif

#endif
