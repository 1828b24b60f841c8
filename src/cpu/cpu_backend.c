/*
 * cpu_backend: the CPU reference backend's table (backend.h), its memory, weights,
 * per-step batch, and the simple ops (embed, linear, add, swiglu, gather_rows,
 * logits, page_out/page_in).
 *
 * Memory is host memory: alloc = calloc, upload/download/copy = memcpy, sync = no-op.
 * Activations are fp32 (act_dtype = HS_F32).
 *
 * Weights: weight_load dequantises any checkpoint dtype into a dense fp32
 * [rows, cols] array (bf16, fp16, fp32; fp8 E4M3 with 128x128 block scales:
 * w[r][c] = e4m3(q[r][c]) * scale_inv[r/128][c/128]). fp32 storage keeps every
 * GEMM a plain cblas_sgemm; it costs 2x (bf16) / 4x (fp8) the checkpoint's bytes,
 * acceptable for the small models the CPU runs.
 *
 * Batch: set_batch copies the step's arrays into buffers owned by the context
 * (grown, never shrunk) and keeps a shallow copy of the pool descriptor; the
 * statemap's location arrays stay owned by the caller and must outlive the step.
 */
#include <assert.h>
#include <cblas.h>
#undef I /* OpenBLAS pulls in <complex.h>; backend.h uses I as a parameter name */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_int.h"

/* ---- helpers ------------------------------------------------------------------ */

void *cpu_scratch(cpu_ctx_t *c, int i, size_t bytes) {
    assert(i >= 0 && i < CPU_SCR_N);
    cpu_scratch_t *s = &c->scr[i];
    if (bytes == 0) bytes = 1;
    if (s->bytes < bytes) {
        free(s->p);
        s->p = hs_malloc(bytes);
        s->bytes = bytes;
    }
    return s->p;
}

uint8_t cpu_f32_to_e4m3(float f) {
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (isnan(f)) return 0x7f;
    if (a >= 448.0f) return sign | 0x7e; /* saturate to 448 */
    /* Find the nearest representable value by scaling into the integer grid of
     * its binade: quantum 2^(e-3) for normals (e >= -6), 2^-9 for subnormals. */
    int e;
    frexpf(a, &e); /* a = m * 2^e, m in [0.5, 1) -> binade exponent e-1 */
    int be = e - 1;
    if (be < -6) be = -6;
    float q = ldexpf(1.0f, be - 3);
    float n = nearbyintf(a / q); /* ties to even under the default rounding mode */
    float r = n * q;
    if (r == 0.0f) return sign;
    int re;
    frexpf(r, &re);
    int rbe = re - 1;
    if (rbe < -6) { /* subnormal */
        return sign | (uint8_t)(int)n;
    }
    int man = (int)(ldexpf(r, -rbe) * 8.0f + 0.5f) - 8;
    return sign | (uint8_t)((rbe + 7) << 3) | (uint8_t)man;
}

int cpu_row_gemm = 0;
int cpu_gemm_threads = 1;

/* GEMV regime: rows at most this many run as one sgemv each (sgemm packs the whole
 * weight matrix first: measured 1.4 s per token for Qwen3.5-0.8B at batch 1, mostly
 * packing, against ~0.1 s of weight reads). */
#define CPU_GEMV_ROWS 2

/* out[M, N] (row stride ldo >= N) = x[M, K] @ w[N, K]^T; columns past N of each row are
 * left alone. OpenBLAS runs single-threaded (set at creation); the threads here split N,
 * so one thread pool (OpenMP) serves every loop of the backend and no BLAS threads
 * compete with it. Each output element is one dot product over the whole of K computed
 * by one call, whatever the split; the stride changes no arithmetic. */
void cpu_gemm_xwt_ld(const float *x, const float *w, int M, int N, int K, float *out, int ldo) {
    if (M <= 0 || N <= 0) return;
    assert(ldo >= N);
    const int nt = N >= 64 * cpu_gemm_threads ? cpu_gemm_threads : 1;
    const int per = (N + nt - 1) / nt;
    /* Batch-invariant mode: one GEMV per row, so a row's result never depends on how
     * many other rows share the call (sgemm picks kernels and blockings by shape, which
     * changes the summation order with M). */
    const bool rows = cpu_row_gemm || M <= CPU_GEMV_ROWS;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int th = 0; th < nt; th++) {
        const int j0 = th * per, n = j0 + per <= N ? per : N - j0;
        if (n <= 0) continue;
        if (rows) {
            for (int i = 0; i < M; i++)
                cblas_sgemv(CblasRowMajor, CblasNoTrans, n, K, 1.0f, w + (size_t)j0 * K, K, x + (size_t)i * K, 1,
                            0.0f, out + (size_t)i * ldo + j0, 1);
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, n, K, 1.0f, x, K, w + (size_t)j0 * K, K, 0.0f,
                        out + j0, ldo);
        }
    }
}

void cpu_gemm_xwt(const float *x, const float *w, int M, int N, int K, float *out) {
    cpu_gemm_xwt_ld(x, w, M, N, K, out, N);
}

/* ---- memory ------------------------------------------------------------------- */

static void *cpu_alloc(backend_t *bk, size_t bytes) {
    (void)bk;
    return calloc(1, bytes ? bytes : 1);
}
static void cpu_free_mem(backend_t *bk, void *p) {
    (void)bk;
    free(p);
}
static void cpu_memcpy(backend_t *bk, void *dst, const void *src, size_t bytes) {
    (void)bk;
    if (bytes) memmove(dst, src, bytes);
}
static void cpu_sync(backend_t *bk) { (void)bk; }
static void cpu_act_upload(backend_t *bk, void *dst, const float *src, size_t n) {
    (void)bk;
    if (n) memmove(dst, src, n * sizeof(float));
}
static void cpu_act_download(backend_t *bk, float *dst, const void *src, size_t n) {
    (void)bk;
    if (n) memmove(dst, src, n * sizeof(float));
}

/* ---- weights ------------------------------------------------------------------ */

static bk_weight_t *cpu_weight_load(backend_t *bk, const bk_host_tensor_t *t, char *err, size_t n) {
    (void)bk;
    if (!t || !t->data || t->rows <= 0 || t->cols <= 0) {
        hs_errf(err, n, HS_ERR_INVALID, "cpu weight_load: empty tensor");
        return NULL;
    }
    if (!cpu_dtype_plain(t->dtype) && t->dtype != HS_F8_E4M3) {
        hs_errf(err, n, HS_ERR_UNSUPPORTED, "cpu weight_load: dtype %s not supported", hs_dtype_name(t->dtype));
        return NULL;
    }
    if (t->dtype == HS_F8_E4M3 && !t->scale_inv) {
        hs_errf(err, n, HS_ERR_INVALID, "cpu weight_load: fp8 weight without scale_inv");
        return NULL;
    }
    size_t count = (size_t)t->rows * (size_t)t->cols;
    float *d = malloc(count * sizeof(float));
    bk_weight_t *w = malloc(sizeof *w);
    if (!d || !w) {
        free(d);
        free(w);
        hs_errf(err, n, HS_ERR_NO_MEMORY, "cpu weight_load: out of memory (%zu floats)", count);
        return NULL;
    }
    if (t->dtype == HS_F8_E4M3) {
        const uint8_t *q = t->data;
        for (int64_t r = 0; r < t->rows; r++)
            for (int64_t c = 0; c < t->cols; c++)
                d[r * t->cols + c] = hs_fp8_block_elem(q, t->scale_inv, t->cols, r, c);
    } else {
        for (size_t i = 0; i < count; i++) d[i] = cpu_load(t->data, t->dtype, i);
    }
    w->data = d;
    w->rows = t->rows;
    w->cols = t->cols;
    return w;
}

static void cpu_weight_free(backend_t *bk, bk_weight_t *w) {
    (void)bk;
    if (!w) return;
    free(w->data);
    free(w);
}

/* ---- batch -------------------------------------------------------------------- */

static int32_t *grow_i32(int32_t *p, size_t *cap, size_t need) {
    if (need <= *cap) return p;
    free(p);
    *cap = need;
    return hs_malloc(need * sizeof(int32_t));
}

static void copy_i32(int32_t *dst, const int32_t *src, size_t n) {
    if (n) {
        assert(src);
        memcpy(dst, src, n * sizeof(int32_t));
    }
}

static void cpu_set_batch(backend_t *bk, const bk_batch_t *b, const bk_pool_t *pool) {
    cpu_ctx_t *c = cpu_ctx(bk);
    assert(b && b->n_seqs >= 0 && b->n_tokens >= 0);
    size_t S = (size_t)b->n_seqs, T = (size_t)b->n_tokens;
    size_t nbt = S * (size_t)(b->max_blocks > 0 ? b->max_blocks : 0);
    size_t nsp = S * (size_t)(b->n_state_pages > 0 ? b->n_state_pages : 0);
    size_t nl = (size_t)(b->n_logits > 0 ? b->n_logits : 0);
    c->tok_start = grow_i32(c->tok_start, &c->cap_seqs, S + 1);
    c->n_past = grow_i32(c->n_past, &c->cap_npast, S + 1);
    c->positions = grow_i32(c->positions, &c->cap_tokens, T + 1);
    c->block_tables = grow_i32(c->block_tables, &c->cap_bt, nbt + 1);
    c->state_pages = grow_i32(c->state_pages, &c->cap_sp, nsp + 1);
    c->logit_rows = grow_i32(c->logit_rows, &c->cap_logits, nl + 1);
    c->n_seqs = b->n_seqs;
    c->n_tokens = b->n_tokens;
    c->max_blocks = b->max_blocks;
    c->n_state_pages = b->n_state_pages;
    c->n_logits = b->n_logits;
    copy_i32(c->tok_start, b->tok_start, S + 1);
    copy_i32(c->n_past, b->n_past, S);
    copy_i32(c->positions, b->positions, T);
    copy_i32(c->block_tables, b->block_tables, nbt);
    copy_i32(c->state_pages, b->state_pages, nsp);
    copy_i32(c->logit_rows, b->logit_rows, nl);
    c->has_prev = b->prev_rows != NULL;
    if (c->has_prev) {
        c->prev_rows = grow_i32(c->prev_rows, &c->cap_prev, T + 1);
        copy_i32(c->prev_rows, b->prev_rows, T);
    }
    c->ids_src = b->ids;
    assert(S == 0 || (c->tok_start[0] == 0 && c->tok_start[S] == b->n_tokens));
    for (size_t s = 0; s < S; s++) assert(c->tok_start[s] <= c->tok_start[s + 1] && c->n_past[s] >= 0);
    c->has_batch = true;
    if (pool) {
        c->pool = *pool;
        c->has_pool = true;
    } else {
        memset(&c->pool, 0, sizeof c->pool);
        c->has_pool = false;
    }
}

/* ---- simple ops --------------------------------------------------------------- */

static void cpu_embed(backend_t *bk, const bk_weight_t *embed, const int32_t *ids, int T, void *out) {
    const cpu_ctx_t *c = cpu_ctx(bk);
    /* the batch's ids: tokens marked in prev_rows are the last pick's */
    const int32_t *prev = c->has_prev && ids == c->ids_src && T == c->n_tokens ? c->prev_rows : NULL;
    float *o = out;
    size_t H = (size_t)embed->cols;
    for (int t = 0; t < T; t++) {
        int32_t id = ids[t];
        if (prev && prev[t] >= 0) {
            assert(prev[t] < c->pick_n);
            id = c->pick_tok[prev[t]];
        }
        assert(id >= 0 && id < embed->rows);
        memcpy(o + (size_t)t * H, embed->data + (size_t)id * H, H * sizeof(float));
    }
}

static void cpu_linear(backend_t *bk, const void *x, const bk_weight_t *w, int T, void *out) {
    (void)bk;
    cpu_gemm_xwt(x, w->data, T, (int)w->rows, (int)w->cols, out);
}

/* One GEMM per weight into its column block: the same call as cpu_linear with the output
 * strided, so each block is bit-identical to a separate linear. */
static void cpu_linear_n(backend_t *bk, const void *x, int n, const bk_weight_t *const *w, int T, void *out) {
    (void)bk;
    assert(n >= 1);
    int ld = 0;
    for (int i = 0; i < n; i++) {
        assert(w[i]->cols == w[0]->cols);
        ld += (int)w[i]->rows;
    }
    float *o = out;
    for (int i = 0; i < n; i++) {
        cpu_gemm_xwt_ld(x, w[i]->data, T, (int)w[i]->rows, (int)w[i]->cols, o, ld);
        o += w[i]->rows;
    }
}

static void cpu_add(backend_t *bk, void *y, const void *x, int T, int n) {
    (void)bk;
    float *yy = y;
    const float *xx = x;
    size_t N = (size_t)T * (size_t)n;
    for (size_t i = 0; i < N; i++) yy[i] += xx[i];
}

static void cpu_swiglu(backend_t *bk, const void *gu, int T, int I, void *out) {
    int nt = cpu_ctx(bk)->n_threads;
    const float *g = gu;
    float *o = out;
    (void)nt;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < T; t++) {
        const float *gt = g + (size_t)t * 2 * I;
        float *ot = o + (size_t)t * I;
        for (int i = 0; i < I; i++) ot[i] = cpu_silu(gt[i]) * gt[I + i];
    }
}

static void cpu_gather_rows(backend_t *bk, const void *x, int H, void *out) {
    cpu_ctx_t *c = cpu_ctx(bk);
    assert(c->has_batch);
    const float *xx = x;
    float *o = out;
    for (int i = 0; i < c->n_logits; i++) {
        int r = c->logit_rows[i];
        assert(r >= 0 && r < c->n_tokens);
        memmove(o + (size_t)i * H, xx + (size_t)r * H, (size_t)H * sizeof(float));
    }
}

static void cpu_logits(backend_t *bk, const void *x, const bk_weight_t *lm_head, int n, void *out_f32) {
    (void)bk;
    cpu_gemm_xwt(x, lm_head->data, n, (int)lm_head->rows, (int)lm_head->cols, out_f32);
}

/* Per row: the argmax (lowest id on ties), the max and the log-sum-exp (bk->pick). */
static void cpu_logits_stats(const void *logits, int n, int V, int32_t *argmax, float *max, float *lse) {
    for (int r = 0; r < n; r++) {
        const float *x = (const float *)logits + (size_t)r * (size_t)V;
        int a = 0;
        for (int i = 1; i < V; i++)
            if (x[i] > x[a]) a = i;
        double s = 0;
        for (int i = 0; i < V; i++) s += exp((double)x[i] - x[a]);
        argmax[r] = a;
        max[r] = x[a];
        lse[r] = x[a] + (float)log(s);
    }
}

/* bk->pick runs at once (a host backend has nothing to overlap); its results wait in
 * the context for pick_wait and its tokens for the next embed. */
static void cpu_pick(backend_t *bk, const float *logits, int n, int V, const bk_sample_row_t *smp, int n_smp) {
    cpu_ctx_t *c = cpu_ctx(bk);
    assert(!c->pick_open && n >= 0 && n_smp >= 0);
    if ((size_t)n > c->cap_pick) {
        c->cap_pick = (size_t)n * 2;
        c->pick_tok = hs_realloc(c->pick_tok, c->cap_pick * sizeof(int32_t));
        c->pick_argmax = hs_realloc(c->pick_argmax, c->cap_pick * sizeof(int32_t));
        c->pick_max = hs_realloc(c->pick_max, c->cap_pick * sizeof(float));
        c->pick_lse = hs_realloc(c->pick_lse, c->cap_pick * sizeof(float));
    }
    if ((size_t)n_smp > c->cap_pick_smp) {
        c->cap_pick_smp = (size_t)n_smp * 2;
        c->pick_out = hs_realloc(c->pick_out, c->cap_pick_smp * sizeof(bk_sample_out_t));
    }
    cpu_logits_stats(logits, n, V, c->pick_argmax, c->pick_max, c->pick_lse);
    if (n_smp > 0) cpu_sample(bk, logits, n_smp, V, smp, c->pick_out);
    if (n > 0) memcpy(c->pick_tok, c->pick_argmax, (size_t)n * sizeof(int32_t));
    for (int i = 0; i < n_smp; i++) {
        assert(smp[i].row >= 0 && smp[i].row < n);
        c->pick_tok[smp[i].row] = c->pick_out[i].token;
    }
    c->pick_n = n;
    c->pick_n_smp = n_smp;
    c->pick_open = true;
}

static void cpu_pick_wait(backend_t *bk, int32_t *argmax, float *max, float *lse, bk_sample_out_t *smp_out) {
    cpu_ctx_t *c = cpu_ctx(bk);
    assert(c->pick_open);
    c->pick_open = false;
    const size_t n = (size_t)c->pick_n;
    if (n == 0) return; /* a step whose rows all continue a prefill */
    memcpy(argmax, c->pick_argmax, n * sizeof(int32_t));
    memcpy(max, c->pick_max, n * sizeof(float));
    memcpy(lse, c->pick_lse, n * sizeof(float));
    if (c->pick_n_smp > 0) memcpy(smp_out, c->pick_out, (size_t)c->pick_n_smp * sizeof(bk_sample_out_t));
}

static void cpu_page_out(backend_t *bk, const bk_pool_t *pool, int64_t page, void *host) {
    (void)bk;
    assert(page >= 0 && page < pool->n_pages);
    memcpy(host, (const char *)pool->base + (size_t)page * pool->page_bytes, pool->page_bytes);
}

static void cpu_page_in(backend_t *bk, const bk_pool_t *pool, int64_t page, const void *host) {
    (void)bk;
    assert(page >= 0 && page < pool->n_pages);
    memcpy((char *)pool->base + (size_t)page * pool->page_bytes, host, pool->page_bytes);
}

/* ---- construction ------------------------------------------------------------- */

static void cpu_destroy(backend_t *bk) {
    if (!bk) return;
    cpu_ctx_t *c = bk->ctx;
    if (c) {
        free(c->tok_start);
        free(c->n_past);
        free(c->positions);
        free(c->block_tables);
        free(c->state_pages);
        free(c->logit_rows);
        free(c->prev_rows);
        free(c->pick_tok);
        free(c->pick_argmax);
        free(c->pick_max);
        free(c->pick_lse);
        free(c->pick_out);
        for (int i = 0; i < CPU_SCR_N; i++) free(c->scr[i].p);
        free(c);
    }
    free(bk);
}

backend_t *backend_cpu_create(int n_threads) {
    backend_t *bk = hs_calloc(1, sizeof *bk);
    cpu_ctx_t *c = hs_calloc(1, sizeof *c);
    if (n_threads <= 0) {
#ifdef _OPENMP
        n_threads = omp_get_num_procs();
#else
        n_threads = 1;
#endif
    }
    c->n_threads = n_threads;
    openblas_set_num_threads(1); /* cpu_gemm_xwt splits the work over OpenMP threads */
    cpu_gemm_threads = n_threads;
    const char *bi = getenv("HS_CPU_BATCH_INVARIANT");
    cpu_row_gemm = bi && *bi && strcmp(bi, "0") != 0;
    bk->name = "cpu";
    bk->act_dtype = HS_F32;
    bk->ctx = c;
    bk->alloc = cpu_alloc;
    bk->free = cpu_free_mem;
    bk->upload = cpu_memcpy;
    bk->download = cpu_memcpy;
    bk->copy = cpu_memcpy;
    bk->sync = cpu_sync;
    bk->act_upload = cpu_act_upload;
    bk->act_download = cpu_act_download;
    bk->weight_load = cpu_weight_load;
    bk->weight_free = cpu_weight_free;
    bk->set_batch = cpu_set_batch;
    bk->embed = cpu_embed;
    bk->linear = cpu_linear;
    bk->linear_n = cpu_linear_n;
    bk->rmsnorm = cpu_rmsnorm;
    bk->add = cpu_add;
    bk->attention = cpu_attention;
    bk->gdn = cpu_gdn;
    bk->swiglu = cpu_swiglu;
    bk->moe = cpu_moe;
    bk->gather_rows = cpu_gather_rows;
    bk->logits = cpu_logits;
    bk->sample = cpu_sample;
    bk->pick = cpu_pick;
    bk->pick_wait = cpu_pick_wait;
    bk->page_out = cpu_page_out;
    bk->page_in = cpu_page_in;
    bk->destroy = cpu_destroy;
    return bk;
}
