/*
 * cpu_int.h: internals shared by the files of the CPU reference backend (src/cpu/).
 *
 * The CPU backend is the fp32 oracle of backend.h: activations are fp32 host
 * buffers (act_dtype = HS_F32), every weight is stored as a dense fp32 array so
 * that GEMMs go straight to OpenBLAS (cblas_sgemm). That costs 2x the memory of a
 * bf16 checkpoint (4x for fp8); fine for the small models we run on the CPU.
 * Non-BLAS loops (norms, attention, GDN, conv) are parallelised with OpenMP over
 * independent rows / (token, head) / (sequence, head) pairs; every loop body does
 * the same arithmetic in the same order whatever the thread count, so results are
 * bit-identical across thread counts and batch compositions.
 *
 * Files: cpu_backend.c (table, memory, weights, batch, simple ops), cpu_norm.c
 * (rmsnorm), cpu_attn.c (gated attention + paged KV), cpu_gdn.c (Gated DeltaNet),
 * cpu_moe.c (sparse MoE).
 */
#ifndef HS_CPU_INT_H
#define HS_CPU_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>

#include "backend.h"

struct bk_weight {
    float *data;        /* [rows, cols] fp32, row-major (dequantised at load) */
    int64_t rows, cols; /* a vector has rows = 1 */
};

/* A scratch buffer that only grows (allocations happen when a step is larger
 * than every earlier one; steady state allocates nothing). */
typedef struct {
    void *p;
    size_t bytes;
} cpu_scratch_t;

enum { CPU_SCR_A, CPU_SCR_B, CPU_SCR_C, CPU_SCR_D, CPU_SCR_E, CPU_SCR_F, CPU_SCR_N };

typedef struct {
    int n_threads;             /* OpenMP threads for the non-BLAS loops */
    /* the step's batch (copies of bk_batch_t arrays, owned) */
    bool has_batch;
    int n_seqs, n_tokens, max_blocks, n_state_pages, n_logits;
    int32_t *tok_start;        /* [S+1] */
    int32_t *n_past;           /* [S] */
    int32_t *positions;        /* [T] */
    int32_t *block_tables;     /* [S][max_blocks] */
    int32_t *state_pages;      /* [S][n_state_pages] */
    int32_t *logit_rows;       /* [n_logits] */
    size_t cap_seqs, cap_npast, cap_tokens, cap_bt, cap_sp, cap_logits; /* element capacities */
    bk_pool_t pool;            /* shallow copy; the caller keeps pool.sm's arrays alive */
    bool has_pool;
    /* prev_rows of the batch (NULL when none) and the ids pointer they go with */
    int32_t *prev_rows;        /* [T] */
    size_t cap_prev;
    const int32_t *ids_src;
    bool has_prev;
    /* the last bk->pick: its results until pick_wait; tokens for the next embed */
    int pick_n, pick_n_smp;
    bool pick_open;
    int32_t *pick_tok, *pick_argmax; /* [n] */
    float *pick_max, *pick_lse;      /* [n] */
    bk_sample_out_t *pick_out;       /* [n_smp] */
    size_t cap_pick, cap_pick_smp;
    cpu_scratch_t scr[CPU_SCR_N];
} cpu_ctx_t;

static inline cpu_ctx_t *cpu_ctx(backend_t *bk) { return (cpu_ctx_t *)bk->ctx; }

/* Scratch slot `i` with at least `bytes` bytes (contents undefined). */
void *cpu_scratch(cpu_ctx_t *c, int i, size_t bytes);

/* fp8 E4M3 (OCP, "fn": no inf, max 448) <-> fp32. Encoding saturates to +-448 and
 * rounds to nearest even. */
uint8_t cpu_f32_to_e4m3(float f);

/* Load / store one element of a storage dtype (HS_F32, HS_BF16, HS_F16). */
static inline float cpu_load(const void *p, hs_dtype_t t, size_t i) { return hs_load_f32(p, t, i); }
static inline void cpu_store(void *p, hs_dtype_t t, size_t i, float v) {
    switch (t) {
    case HS_F32: ((float *)p)[i] = v; break;
    case HS_BF16: ((uint16_t *)p)[i] = hs_f32_to_bf16(v); break;
    case HS_F16: ((uint16_t *)p)[i] = hs_f32_to_f16(v); break;
    default: break;
    }
}
static inline bool cpu_dtype_plain(hs_dtype_t t) { return t == HS_F32 || t == HS_BF16 || t == HS_F16; }

/* out[M, N] = x[M, K] @ W[N, K]^T via cblas_sgemm (beta = 0). */
void cpu_gemm_xwt(const float *x, const float *w, int M, int N, int K, float *out);
/* The same with output row stride ldo >= N (a column block of a wider buffer). */
void cpu_gemm_xwt_ld(const float *x, const float *w, int M, int N, int K, float *out, int ldo);

static inline float cpu_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline float cpu_silu(float x) { return x / (1.0f + expf(-x)); }

/* Ops implemented in the other files (signatures as in backend.h). */
void cpu_rmsnorm(backend_t *bk, const void *x, void *residual, const bk_weight_t *w, float eps, bool plus_one,
                 int T, int n, void *out);
void cpu_attention(backend_t *bk, int a, const void *qkv, const bk_weight_t *q_norm, const bk_weight_t *k_norm,
                   int Hq, int Hkv, int D, int rope_dim, float theta, float eps, void *out);
void cpu_gdn(backend_t *bk, int g, const void *in, const bk_weight_t *conv_w, const bk_weight_t *A_log,
             const bk_weight_t *dt_bias, const bk_weight_t *norm_w, int Hk, int Hv, int dk, int dv, int Kc, float eps,
             void *out);
/* bk->sample (cpu_sample.c). */
void cpu_sample(backend_t *bk, const float *logits, int n, int V, const bk_sample_row_t *rows, bk_sample_out_t *out);
void cpu_moe(backend_t *bk, const void *x, const bk_weight_t *router, bk_weight_t *const *experts_gate_up,
             bk_weight_t *const *experts_down, int n_experts, int top_k, bool norm_topk, int I,
             const bk_weight_t *shared_gate_up, const bk_weight_t *shared_down, const bk_weight_t *shared_gate,
             int I_shared, int T, int H, void *out);

/* Delta-rule kernels on one (sequence, value head), exposed for the tests.
 * St[dv][dk] fp32: the state S^T (in/out). q[T][ldq], k[T][ldk] already L2-normed
 * (q also scaled), v[T][ldv]; g[T], beta[T] (stride ldg); o[T][ldo] out.
 * cpu_delta_chunked needs work of cpu_delta_chunk_work(dk, dv) floats. */
void cpu_delta_recurrent(float *St, int dk, int dv, int T, const float *q, int ldq, const float *k, int ldk,
                         const float *v, int ldv, const float *g, const float *beta, int ldg, float *o, int ldo);
size_t cpu_delta_chunk_work(int dk, int dv);
void cpu_delta_chunked(float *St, int dk, int dv, int T, const float *q, int ldq, const float *k, int ldk,
                       const float *v, int ldv, const float *g, const float *beta, int ldg, float *o, int ldo,
                       float *work);
#define CPU_GDN_CHUNK 64
/* 1: segments longer than CPU_GDN_CHUNK use the chunked form (tests); default 0. */
extern int cpu_gdn_force_chunked;
/* 1: GEMMs run row by row (batch-invariant results, slower prefill). Set from the
 * environment variable HS_CPU_BATCH_INVARIANT=1 when a CPU backend is created. */
extern int cpu_row_gemm;
/* Threads of cpu_gemm_xwt (the backend's n_threads). */
extern int cpu_gemm_threads;

#endif
