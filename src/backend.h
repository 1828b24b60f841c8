/*
 * backend: the table of operations the model code calls. One implementation per
 * device: cpu/ (the fp32 reference, OpenBLAS GEMMs) and cuda/ (Hopper). The model
 * never knows which one runs; parity tests run the same op on two backends.
 *
 * Conventions
 *   - Buffers are `void *` in the backend's memory (host for cpu, device for cuda)
 *     obtained from bk->alloc. Activations are in the backend's activation dtype
 *     bk->act_dtype (HS_F32 on cpu, HS_BF16 on cuda); a few buffers are always fp32
 *     and say so (logits, gates, router probabilities).
 *   - Row-major. [T, n] means T rows of n contiguous elements. T = tokens of the
 *     step (all sequences packed), S = sequences of the step.
 *   - Weights are opaque handles made by bk->weight_load from host data of any
 *     checkpoint dtype; the backend stores them as it likes (cpu: fp32 or bf16,
 *     cuda: bf16). A linear weight has shape [N, K] (out, in) as in PyTorch.
 *   - Every op is asynchronous on cuda (one stream); bk->sync waits. Ops cannot fail
 *     once their inputs are valid (invariants are asserted); allocation failures at
 *     start-up are reported by alloc returning NULL.
 *   - The step's metadata (bk_batch_t) is handed over once per step with
 *     bk->set_batch; ops that need it read the copy the backend made.
 */
#ifndef HS_BACKEND_H
#define HS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hyserve.h"
#include "layout.h"
#include "util.h"

typedef struct bk_weight bk_weight_t; /* opaque, owned by the backend */

/* Host description of a weight to load (the loader's view of a tensor). */
typedef struct {
    const void *data;       /* host bytes (may be mmap'd) */
    hs_dtype_t dtype;       /* HS_BF16, HS_F16, HS_F32 or HS_F8_E4M3 */
    int64_t rows, cols;     /* [rows, cols]; a vector has rows = 1 */
    const float *scale_inv; /* fp8 only: [ceil(rows/128), ceil(cols/128)] block scales, else NULL */
} bk_host_tensor_t;

/* One step's batch: S sequences, T tokens packed in sequence order. Host pointers;
 * set_batch copies what the device needs. */
typedef struct {
    int n_seqs;                    /* S */
    int n_tokens;                  /* T */
    const int32_t *tok_start;      /* [S+1] cu_seqlens: tokens of seq s are [tok_start[s], tok_start[s+1]) */
    const int32_t *n_past;         /* [S] tokens already in the cache before this step (0: fresh state) */
    const int32_t *positions;      /* [T] absolute position of each token (n_past + i) */
    const int32_t *block_tables;   /* [S][max_blocks] KV block (page) ids, -1 past the end */
    int max_blocks;                /* row stride of block_tables */
    const int32_t *state_pages;    /* [S][n_state_pages] state page ids (statemap ordinal order) */
    int n_state_pages;             /* row stride of state_pages (E) */
    const int32_t *logit_rows;     /* [n_logits] token rows whose logits are wanted */
    int n_logits;
    const int32_t *ids;            /* [T] the step's token ids, or NULL; when set, embed called with
                                      this same pointer may use the copy set_batch made */
    const int32_t *prev_rows;      /* [T] or NULL: where prev_rows[t] >= 0, token t is the one the
                                      last bk->pick chose for its logits row prev_rows[t] (ids[t] is
                                      a placeholder); embed called with ids reads it there */
} bk_batch_t;

/* Where the KV blocks and recurrent state of all sequences live. */
typedef struct {
    void *base;                    /* backend memory: n_pages * page_bytes */
    size_t page_bytes;
    int64_t n_pages;
    kv_layout_t kv;                /* KV block layout */
    statemap_t sm;                 /* state map */
} bk_pool_t;

/* One row for bk->sample: which logits row, the request's sampling parameters and
 * the coordinates of its draw (sample.h, sample_rng.h). */
typedef struct {
    int32_t row;          /* row of the logits buffer */
    float temperature;    /* 0: greedy (lowest id on ties) */
    int32_t top_k;        /* 0 (or >= V): off */
    float top_p;          /* (0, 1]; 1: off */
    float min_p;          /* [0, 1); 0: off */
    int32_t n_top;        /* top log-probabilities wanted, 0..HS_MAX_TOP_LOGPROBS */
    uint64_t seed;        /* the request's seed */
    uint64_t step;        /* index of the output token being generated (0: the first) */
} bk_sample_row_t;

/* What bk->sample returns per row. Log-probabilities are log_softmax of the raw logits. */
typedef struct {
    int32_t token;
    float logprob;                             /* of token */
    int32_t n_top;                             /* = the row's n_top (V if smaller) */
    int32_t top_ids[HS_MAX_TOP_LOGPROBS];      /* best first (ties: lowest id) */
    float top_logprobs[HS_MAX_TOP_LOGPROBS];
} bk_sample_out_t;

typedef struct backend backend_t;
struct backend {
    const char *name;              /* "cpu" or "cuda" */
    hs_dtype_t act_dtype;          /* activation dtype of [T, n] buffers */
    void *ctx;                     /* implementation state */

    /* ---- memory ---- */
    void *(*alloc)(backend_t *bk, size_t bytes);                 /* NULL on failure; zeroed */
    void (*free)(backend_t *bk, void *p);
    void (*upload)(backend_t *bk, void *dst, const void *src, size_t bytes);   /* host -> backend */
    void (*download)(backend_t *bk, void *dst, const void *src, size_t bytes); /* backend -> host */
    void (*copy)(backend_t *bk, void *dst, const void *src, size_t bytes);     /* within backend */
    void (*sync)(backend_t *bk);
    /* Device memory free and total in bytes; NULL for host backends (the engine then
     * sizes the pool from its config). */
    void (*mem_info)(backend_t *bk, size_t *free_bytes, size_t *total_bytes);
    /* Convert [n] values between fp32 host arrays and act_dtype backend buffers. */
    void (*act_upload)(backend_t *bk, void *dst, const float *src, size_t n);
    void (*act_download)(backend_t *bk, float *dst, const void *src, size_t n);

    /* ---- weights ---- */
    bk_weight_t *(*weight_load)(backend_t *bk, const bk_host_tensor_t *t, char *err, size_t n);
    void (*weight_free)(backend_t *bk, bk_weight_t *w);
    /* Optional (NULL: not supported). Re-store n weights of equal width contiguously, in
     * order, in one allocation: every handle stays valid (same rows, same values, freed
     * in any order), and linear_n over exactly these weights may then run them as one
     * product. Returns false, changing nothing, when it cannot (widths differ, a weight
     * is already packed, no memory). */
    bool (*weights_pack)(backend_t *bk, bk_weight_t *const *w, int n);

    /* ---- per step ---- */
    void (*set_batch)(backend_t *bk, const bk_batch_t *b, const bk_pool_t *pool);

    /* ---- step graphs (optional: NULL where the backend has none) ----
     * A backend may record the ops of a step whose shape repeats (decode steps) and replay
     * them as one unit (CUDA graphs). After set_batch: graph_launch replays the recording
     * for this step's shape and returns true, or returns false; then graph_begin returns
     * true when it starts recording this step (the ops that follow are recorded, not run),
     * and graph_end finishes the recording and runs it, or returns false when the recording
     * failed (nothing ran: the caller issues the ops again, unrecorded). Between begin and
     * end the caller issues exactly the step's ops (none may read results on the host). */
    long graphs_recorded, graphs_replayed; /* counts, for tests and reports */
    bool (*graph_launch)(backend_t *bk);
    bool (*graph_begin)(backend_t *bk);
    bool (*graph_end)(backend_t *bk);

    /* ---- ops ---- */
    /* out[T, H] = embed[ids[t], :] ; ids is a host array. */
    void (*embed)(backend_t *bk, const bk_weight_t *embed, const int32_t *ids, int T, void *out);
    /* out[T, N] = x[T, K] @ W[N, K]^T */
    void (*linear)(backend_t *bk, const void *x, const bk_weight_t *w, int T, void *out);
    /* n projections of the same x into the column blocks of one buffer, in order:
     * out[T, ld] with ld = N_0 + ... + N_{n-1}, out[t, o_i + j] = (x[t] . w[i][j]) for
     * j < N_i, o_i = N_0 + ... + N_{i-1} (every w[i] has K columns). The ops that take
     * a layer's projections (attention, gdn) read them in this layout, strided, so no
     * copy separates them. On cuda one grouped kernel at small T, one product over
     * packed weights (weights_pack) above, else n GEMMs into the blocks. */
    void (*linear_n)(backend_t *bk, const void *x, int n, const bk_weight_t *const *w, int T, void *out);
    /* RMSNorm over rows of n: out = x * rsqrt(mean(x^2) + eps) * (plus_one ? 1 + w : w), fp32 math.
     * When residual != NULL: residual[T, n] += x first and the norm reads the sum
     * (residual is updated in place; x is untouched). out may alias x. */
    void (*rmsnorm)(backend_t *bk, const void *x, void *residual, const bk_weight_t *w, float eps,
                    bool plus_one, int T, int n, void *out);
    /* y[T, n] += x[T, n] */
    void (*add)(backend_t *bk, void *y, const void *x, int T, int n);

    /* Gated attention, one full-attention layer `a` (index among attention layers).
     * qkv[T, Hq*2D + 2*Hkv*D]: per token [qg | k | v] as linear_n over q_proj, k_proj and
     * v_proj emits it: qg [Hq*2D], per head [q (D) | gate (D)]; k [Hkv*D]; v [Hkv*D].
     * qkv is only read. Applies q_norm / k_norm (1+w, eps), partial rotate-half RoPE on the first rope_dim
     * dims (theta), writes k, v into the paged KV cache at each token's position, runs
     * causal GQA attention over the cached prefix plus the new tokens (scale D^-1/2,
     * softmax fp32) and multiplies by sigmoid(gate). out[T, Hq*D]. */
    void (*attention)(backend_t *bk, int a, const void *qkv, const bk_weight_t *q_norm, const bk_weight_t *k_norm,
                      int Hq, int Hkv, int D, int rope_dim, float theta, float eps, void *out);

    /* Gated DeltaNet mixer of GDN layer `g` (index among GDN layers), everything
     * between the input projections and out_proj, on in[T, conv_dim + Hv*dv + 2*Hv]: per
     * token [qkv | z | b | a] as linear_n over in_proj_qkv, in_proj_z, in_proj_b and
     * in_proj_a emits it (only read):
     *   qkv [conv_dim] pre-conv channels [q | k | v] (this rank's shard),
     *   z [Hv*dv], b [Hv], a [Hv];
     *   causal depthwise conv (Kc taps, weights conv_w [conv_dim, Kc]) with the conv state,
     *   SiLU; beta = sigmoid(b); g = -exp(A_log) * softplus(a + dt_bias) (fp32);
     *   L2-normalised q, k (eps 1e-6), q scaled by dk^-1/2; the gated delta rule with the
     *   paged SSM state (chunked for prefill segments, recurrent for short ones; a
     *   sequence with n_past == 0 starts from zero state); gated RMSNorm of the output
     *   with plain weight norm_w[dv] times SiLU(z).
     *   out[T, Hv*dv]. The conv and SSM states of every sequence are read and written
     *   in place through the batch's state pages and the pool's state map. */
    void (*gdn)(backend_t *bk, int g, const void *in, const bk_weight_t *conv_w, const bk_weight_t *A_log,
                const bk_weight_t *dt_bias, const bk_weight_t *norm_w, int Hk, int Hv, int dk, int dv, int Kc,
                float eps, void *out);

    /* out[T, I] = silu(gu[T, 0:I]) * gu[T, I:2I]   (gate first, then up) */
    void (*swiglu)(backend_t *bk, const void *gu, int T, int I, void *out);

    /* Sparse MoE FFN on x[T, H]: router logits = x @ router^T (fp32), softmax over E,
     * top-k, renormalise when norm_topk; out = sum_k w_k * down_e(silu(gate_e x) * up_e x)
     * + (shared_gate_up ? sigmoid(x . shared_gate) * shared(x) : 0). out[T, H].
     * experts_gate_up[e]: [2*I, H] (gate rows first), experts_down[e]: [H, I]. */
    void (*moe)(backend_t *bk, const void *x, const bk_weight_t *router, bk_weight_t *const *experts_gate_up,
                bk_weight_t *const *experts_down, int n_experts, int top_k, bool norm_topk, int I,
                const bk_weight_t *shared_gate_up, const bk_weight_t *shared_down, const bk_weight_t *shared_gate,
                int I_shared, int T, int H, void *out);

    /* Gather the batch's logit_rows of x[T, H] into out[n_logits, H]. */
    void (*gather_rows)(backend_t *bk, const void *x, int H, void *out);
    /* logits[n, V] fp32 = x[n, H] @ W[V, H]^T (backend buffer, always fp32). */
    void (*logits)(backend_t *bk, const void *x, const bk_weight_t *lm_head, int n, void *out_f32);

    /* Sample n rows of logits[*, V] (backend memory, fp32): rows[i] names the logits row
     * and its parameters, out[i] (host) receives the token, its logprob and the top
     * log-probabilities. Semantics of sample.h (temperature, top-k, top-p, min-p, the
     * counter-based draw of (seed, step)), so that every backend picks the same token
     * for the same logits except within rounding of a filter or draw boundary. Waits
     * for the result (one sync per call). */
    void (*sample)(backend_t *bk, const float *logits, int n, int V, const bk_sample_row_t *rows,
                   bk_sample_out_t *out);

    /* Token choice without waiting, for overlapped steps. pick queues, for the n rows of
     * logits[n, V] (backend memory, fp32): per row the argmax (lowest id on ties), the max
     * and the log-sum-exp, so greedy rows are served without moving the vocabulary to the
     * host; and the draws of smp[0, n_smp) (bk->sample of rows naming logits rows). The
     * chosen token of row i, the draw where smp names row i and else the argmax, stays in
     * backend memory for the next step's embed (bk_batch_t.prev_rows). pick_wait waits
     * for the last pick and writes its results to host arrays: argmax, max, lse [n] and
     * smp_out [n_smp]. A pick must be waited for before the next pick; forwards may run
     * between the two. */
    void (*pick)(backend_t *bk, const float *logits, int n, int V, const bk_sample_row_t *smp, int n_smp);
    void (*pick_wait)(backend_t *bk, int32_t *argmax, float *max, float *lse, bk_sample_out_t *smp_out);

    /* Copy whole pages between the pool and host memory (swap out / in). */
    void (*page_out)(backend_t *bk, const bk_pool_t *pool, int64_t page, void *host);
    void (*page_in)(backend_t *bk, const bk_pool_t *pool, int64_t page, const void *host);

    void (*destroy)(backend_t *bk);
};

/* Constructors. n_threads <= 0: all cores. */
backend_t *backend_cpu_create(int n_threads);
/* NULL (with a message) when built without CUDA or no device is present. */
backend_t *backend_cuda_create(int device, char *err, size_t n);

#endif
