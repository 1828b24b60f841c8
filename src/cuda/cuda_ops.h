/*
 * cuda_ops: plain C launchers of hyserve's CUDA kernels (sm_90a). Every launcher takes
 * raw device pointers, sizes and a cudaStream_t (passed as void * so that C callers
 * need no CUDA header), enqueues its kernels asynchronously and returns HS_OK, or
 * HS_ERR_INVALID / HS_ERR_UNSUPPORTED for arguments it cannot serve (nothing is
 * launched then), or HS_ERR_STATE when a CUDA call failed (the message goes to
 * stderr). The backend table (cuda_backend.cu) is the intended caller.
 *
 * dtypes: "bf16" = __nv_bfloat16 / uint16_t bits, "f32" = float. Shapes in brackets,
 * row-major, innermost last. T = tokens (all sequences packed, cu_seqlens order),
 * S = sequences. dk = dv = 128 (every released model) is required by the GDN kernels.
 */
#ifndef HS_CUDA_OPS_H
#define HS_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "layout.h"
#include "util.h"
#ifdef __cplusplus
}
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Where a GDN layer's recurrent state lives (layout.h): pool pages, the request state
 * page tables and this layer's granule locations. */
typedef struct {
    void *pool_base;              /* device: pool of n_pages * page_bytes */
    size_t page_bytes;
    const int32_t *state_pages;   /* device [S][n_state_pages] page ids */
    int n_state_pages;            /* E: row stride of state_pages */
    const sm_loc_t *ssm_loc;      /* device [Hv][n_slices] granules of this layer (statemap ssm + g*Hv*n_slices) */
    int slice_rows;               /* V rows per ssm granule (dv % slice_rows == 0) */
    sm_loc_t conv_loc;            /* host value: this layer's conv granule [Kc-1][conv_dim] bf16 */
    hs_dtype_t ssm_dtype;         /* HS_F32 or HS_BF16 */
} gdn_state_t;

/* Largest number of tokens one sequence may have on the recurrent (decode) path. */
#define GDN_RECURRENT_MAX_T 64

/* Fused GDN decode / short-segment recurrence (model-spec §2.9), state updated in place.
 *   qkv     bf16 [T][conv_dim]   pre-conv channels [q (Hk*dk) | k (Hk*dk) | v (Hv*dv)]
 *   z       bf16 [T][Hv*dv]      gate of the gated RMSNorm; NULL: no norm, out = o
 *   b, a    bf16 [T][Hv]         beta / decay pre-activations
 *   conv_w  bf16 [conv_dim][4]   depthwise conv taps (Kc = 4), tap 3 = current token
 *   A_log, dt_bias  f32 [Hv];  norm_w f32 [dv] (plain weight; unused when z == NULL)
 *   tok_start  device i32 [S+1]  cu_seqlens; every sequence has 1..max_t tokens
 *   n_past     device i32 [S]    0: the sequence starts from zero conv and SSM state
 *   out     bf16 [T][Hv*dv]
 * max_t (host) bounds the tokens of any sequence (<= GDN_RECURRENT_MAX_T).
 * cfg_override: 0 = heuristic; 1..7 force a block shape (BV rows x threads: 128x512, 64x256,
 * 64x512, 32x256, 32x128, 16x128, 128x256) for tuning; granules need slice_rows % 8 == 0.
 * ld: 0 = qkv, z, b and a are contiguous as above; else they are column blocks of rows of
 * ld elements (the backend's linear_n output [qkv | z | b | a]), ld >= conv_dim. qkv and z
 * need 16-byte alignment and row strides that keep it. */
int gdn_decode_launch(const void *qkv, const void *z, const void *b, const void *a, const void *conv_w,
                      const float *A_log, const float *dt_bias, const float *norm_w, const int32_t *tok_start,
                      const int32_t *n_past, int S, int max_t, int Hk, int Hv, int dk, int dv, float eps,
                      const gdn_state_t *st, void *out, int cfg_override, int ld, void *stream);

/* ---- chunked prefill (chunk 64), model-spec §3.1 -------------------------------- */
/* Pre-processing for prefill: causal conv (state as left context) + SiLU over qkv, gates.
 *   q, k bf16 [T][Hk*dk] (not L2-normalised: gdn_chunk_launch applies the norm);
 *   v bf16 [T][Hv*dv]; g f32 [T][Hv] log decay; beta f32 [T][Hv].
 * Then writes each sequence's new conv state (the last Kc-1 pre-conv inputs).
 * ld: 0 = qkv [T][conv_dim], b and a [T][Hv] contiguous; else column blocks of rows of ld
 * elements (gdn_decode_launch's ld). */
int gdn_prefill_prep_launch(const void *qkv, const void *b, const void *a, const void *conv_w, const float *A_log,
                            const float *dt_bias, const int32_t *tok_start, const int32_t *n_past, int S, int T,
                            int Hk, int Hv, int dk, int dv, const gdn_state_t *st, void *qn, void *kn, void *v,
                            float *g, float *beta, int ld, void *stream);

/* In-place L2 normalisation of x bf16 [n_rows][128] (eps 1e-6 inside the sqrt). A utility:
 * the chunk path needs no separate pass (gdn_chunk_launch applies the norms itself). */
int gdn_l2norm_launch(void *x, int64_t n_rows, void *stream);

/* Workspace bytes of gdn_chunk_launch for T tokens, Hv heads. */
size_t gdn_chunk_workspace_bytes(int T, int Hv);

/* The chunked gated delta rule core over varlen sequences:
 *   qn, kn bf16 [T][Hk][128]: q, k after conv + SiLU, not normalised: the L2 norm
 *   (eps 1e-6) is applied inside (q, k are only read); v bf16 [T][Hv][128];
 *   g f32 [T][Hv] log decay per token; beta f32 [T][Hv];
 *   o bf16 [T][Hv][128] = S_t^T (q / sqrt(dk)) (before the gated norm).
 * Initial state: the paged state (st) where n_past[s] > 0, else zero; the final state is
 * written back in place. st == NULL: zero initial state, no state written.
 * tok_start_host: host copy of cu_seqlens [S+1] (the grid is sized from it).
 * ws: device workspace of gdn_chunk_workspace_bytes(T, Hv). */
int gdn_chunk_launch(const void *qn, const void *kn, const void *v, const float *g, const float *beta,
                     const int32_t *tok_start, const int32_t *tok_start_host, const int32_t *n_past, int S, int T,
                     int Hk, int Hv, const gdn_state_t *st, void *ws, void *o, void *stream);

/* Gated RMSNorm: out[t][h][:] = o * rsqrt(mean(o^2) + eps) * w * silu(z), fp32 math.
 *   o, z, out bf16 [T][Hv][dv] (out may alias o); w f32 [dv]. dv = 128.
 *   ldz: z's row stride in elements (0: Hv*dv, contiguous). */
int gdn_gated_norm_launch(const void *o, const void *z, int64_t ldz, const float *w, int64_t T, int Hv, int dv,
                          float eps, void *out, void *stream);

/* ---- paged attention decode ------------------------------------------------------- */
/* One query token per sequence, GQA (G = Hq / Hkv in {1, 2, 4, 6, 8}), head dim 256,
 * bf16 KV in the layout.h block layout; tensor cores for both products.
 *   q        bf16 [S][Hq][256] (already normed + roped)
 *   kv_base  device pool base; page_bytes: pool page size
 *   block_tables device i32 [S][max_blocks]; seq_lens device i32 [S] (tokens in cache, >= 1)
 *   layer_off byte offset of this layer's K inside a block (kv_offset(kv, a, 0, 0, 0));
 *   block_size, Hkv: the block layout (V at layer_off + block_size*Hkv*256*2).
 *   gate     bf16 [S][Hq][256] or NULL: out *= sigmoid(gate)
 *   out      bf16 [S][Hq][256]
 * max_seq_len (host) sizes the split-KV grid; ws: workspace of
 * attn_decode_workspace_bytes(S, Hq, max_seq_len, split_override) bytes (fp32 split
 * partials); split_override: 0 = heuristic (fills the resident block slots in waves), else
 * the split count. With several splits a second kernel merges them (programmatic
 * dependent launch). */
size_t attn_decode_workspace_bytes(int S, int Hq, int max_seq_len, int split_override);
int attn_decode_launch(const void *q, const void *kv_base, size_t page_bytes, const int32_t *block_tables,
                       int max_blocks, const int32_t *seq_lens, int S, int max_seq_len, size_t layer_off,
                       int block_size, int Hq, int Hkv, int D, float scale, const void *gate, void *ws, void *out,
                       int split_override, void *stream);
/* Tuning (benchmarks): tile shape variant 0 = 32 tokens x 3 stages, 1 = 16 x 4, 2 = 64 x 2,
 * 3 = by batch (the default: 1 for a few (sequence, KV head) pairs at long contexts, else
 * 0); pdl 0/1 = merge kernel without/with programmatic dependent launch (-1: keep).
 * Process-wide; returns the previous variant. */
int attn_decode_config(int variant, int pdl);

/* Prefill / chunked-prefill rows: attn_prefill_launch (paged flash attention), declared
 * in attn_prefill.h. */
#include "attn_prefill.h"

#ifdef __cplusplus
}
#endif

#endif
