/*
 * Tests of the CPU backend's Gated DeltaNet op (cpu_gdn.c) against float64.
 *
 *  - delta rule kernels: recurrent and chunked (chunk 64) against a naive float64
 *    recurrence (model-spec §2.5.6), T = 1, 5, 63, 64, 65, 130, 200, from a random
 *    initial state; outputs and final state.
 *  - the whole op (conv with state, gates, L2 norm, grouped heads r = 1..4, delta
 *    rule, gated norm) against a float64 reference of the same math, for several
 *    sequences with different n_past and segment lengths that pick both the
 *    recurrent and the chunked path, states read/written through non-contiguous
 *    state pages and a hand-built state map (slices of dv/2 rows).
 *  - invariance: chunked prefill in pieces of 1, 7, 64 (and token by token) equals
 *    one-shot prefill (outputs and final states, within fp32 noise: the chunk and
 *    recurrent forms sum in different orders); a sequence alone equals the same
 *    sequence batched with others, bit for bit.
 *  - bf16 state storage: the stored state is exactly the bf16 rounding of the fp32
 *    state of an fp32-state run; a fresh sequence ignores stale page contents.
 *  - the input layout: the op gets [qkv | z | b | a] packed per token (linear_n's
 *    column blocks) between NaN rows, the reference reads the separate per-sequence
 *    arrays; the packed input is unchanged by the op.
 *
 * Tolerances: every value is O(1) (unit-norm k, q scaled by dk^-1/2, |v| <= 1,
 * beta < 1, decays <= 1), so errors are compared absolutely against the scale
 * max|ref|; fp32 vs float64 after up to 200 sequential state updates of dk-term
 * dot products gives ~1e-6..1e-5; the bound is 2e-5 * scale.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/cpu/cpu_int.h"
#include "cpu_testlib.h"

static double max_abs_d(const double *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

/* ------------------------------------------------------------------ kernels --- */

/* Naive float64 recurrence on S [dk][dv] (math orientation). */
static void ref_delta(double *S, int dk, int dv, int T, const float *q, const float *k, const float *v,
                      const float *g, const float *beta, double *o) {
    double *m = malloc(sizeof(double) * dv);
    for (int t = 0; t < T; t++) {
        const float *kt = k + (size_t)t * dk, *qt = q + (size_t)t * dk, *vt = v + (size_t)t * dv;
        double dec = exp((double)g[t]);
        for (int i = 0; i < dk * dv; i++) S[i] *= dec;
        for (int j = 0; j < dv; j++) {
            m[j] = 0;
            for (int i = 0; i < dk; i++) m[j] += S[i * dv + j] * kt[i];
        }
        for (int i = 0; i < dk; i++)
            for (int j = 0; j < dv; j++) S[i * dv + j] += kt[i] * beta[t] * (vt[j] - m[j]);
        for (int j = 0; j < dv; j++) {
            double acc = 0;
            for (int i = 0; i < dk; i++) acc += S[i * dv + j] * qt[i];
            o[(size_t)t * dv + j] = acc;
        }
    }
    free(m);
}

static void l2n(float *x, int n, float scale) {
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    for (int i = 0; i < n; i++) x[i] = (float)(x[i] / sqrt(ss + 1e-6) * scale);
}

static void test_delta_kernels(void **state) {
    (void)state;
    const int Ts[] = {1, 5, 63, 64, 65, 130, 200};
    const int dk = 32, dv = 16;
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
        int T = Ts[ti];
        trng_t r = {1000 + (uint64_t)T};
        float *q = malloc(sizeof(float) * T * dk), *k = malloc(sizeof(float) * T * dk);
        float *v = malloc(sizeof(float) * T * dv), *g = malloc(sizeof(float) * T), *beta = malloc(sizeof(float) * T);
        trng_fill(&r, q, (size_t)T * dk, 1.0f);
        trng_fill(&r, k, (size_t)T * dk, 1.0f);
        trng_fill(&r, v, (size_t)T * dv, 1.0f);
        for (int t = 0; t < T; t++) {
            l2n(q + t * dk, dk, 1.0f / sqrtf((float)dk));
            l2n(k + t * dk, dk, 1.0f);
            /* mostly mild decays, some strong ones (g down to -8) */
            g[t] = t % 17 == 3 ? -8.0f * (float)fabs(trng_u(&r)) : -0.3f * (float)fabs(trng_u(&r));
            beta[t] = 0.5f + 0.5f * (float)trng_u(&r);
        }
        double *S = malloc(sizeof(double) * dk * dv), *o = malloc(sizeof(double) * T * dv);
        double *Sref_t = malloc(sizeof(double) * dk * dv);
        float *St0 = malloc(sizeof(float) * dk * dv), *St1 = malloc(sizeof(float) * dk * dv);
        float *St2 = malloc(sizeof(float) * dk * dv);
        float *o1 = malloc(sizeof(float) * T * dv), *o2 = malloc(sizeof(float) * T * dv);
        float *work = malloc(sizeof(float) * cpu_delta_chunk_work(dk, dv));
        trng_fill(&r, St0, (size_t)dk * dv, 0.5f);
        for (int i = 0; i < dk; i++)
            for (int j = 0; j < dv; j++) S[i * dv + j] = St0[j * dk + i];
        memcpy(St1, St0, sizeof(float) * dk * dv);
        memcpy(St2, St0, sizeof(float) * dk * dv);
        ref_delta(S, dk, dv, T, q, k, v, g, beta, o);
        for (int i = 0; i < dk; i++)
            for (int j = 0; j < dv; j++) Sref_t[j * dk + i] = S[i * dv + j];
        cpu_delta_recurrent(St1, dk, dv, T, q, dk, k, dk, v, dv, g, beta, 1, o1, dv);
        cpu_delta_chunked(St2, dk, dv, T, q, dk, k, dk, v, dv, g, beta, 1, o2, dv, work);
        double so = max_abs_d(o, (size_t)T * dv), ss = max_abs_d(Sref_t, (size_t)dk * dv);
        terr_t e1 = terr(o1, o, (size_t)T * dv, so), e2 = terr(o2, o, (size_t)T * dv, so);
        terr_t f1 = terr(St1, Sref_t, (size_t)dk * dv, ss), f2 = terr(St2, Sref_t, (size_t)dk * dv, ss);
        printf("  T=%3d  recurrent: out %.2e state %.2e | chunked: out %.2e state %.2e (abs, scale %.2f/%.2f)\n", T,
               e1.max_abs, f1.max_abs, e2.max_abs, f2.max_abs, so, ss);
        assert_true(e1.max_abs < 2e-5 * so && f1.max_abs < 2e-5 * ss);
        assert_true(e2.max_abs < 2e-5 * so && f2.max_abs < 2e-5 * ss);
        free(q), free(k), free(v), free(g), free(beta), free(S), free(o), free(Sref_t), free(St0), free(St1);
        free(St2), free(o1), free(o2), free(work);
    }
}

/* ------------------------------------------------------------------ the op --- */

typedef struct {
    int Hk, Hv, dk, dv, Kc, conv_dim, W;
    float eps;
    float *conv_w, *A_log, *dt_bias, *norm_w;   /* host copies */
    bk_weight_t *wconv, *wA, *wdt, *wn;
} gdn_w_t;

static void gdn_w_init(gdn_w_t *m, backend_t *bk, int Hk, int Hv, int dk, int dv, uint64_t seed) {
    trng_t r = {seed};
    m->Hk = Hk, m->Hv = Hv, m->dk = dk, m->dv = dv, m->Kc = 4;
    m->conv_dim = 2 * Hk * dk + Hv * dv;
    m->W = m->Kc - 1;
    m->eps = 1e-6f;
    m->conv_w = malloc(sizeof(float) * m->conv_dim * m->Kc);
    m->A_log = malloc(sizeof(float) * Hv);
    m->dt_bias = malloc(sizeof(float) * Hv);
    m->norm_w = malloc(sizeof(float) * dv);
    trng_fill(&r, m->conv_w, (size_t)m->conv_dim * m->Kc, 0.7f);
    for (int h = 0; h < Hv; h++) {
        m->A_log[h] = (float)log(1.0 + 15.0 * fabs(trng_u(&r))) - 1.5f; /* A in ~[0.2, 3.6] */
        m->dt_bias[h] = trng_f(&r, 1.0f);
    }
    for (int j = 0; j < dv; j++) m->norm_w[j] = 1.0f + trng_f(&r, 0.3f);
    m->wconv = tw_load(bk, m->conv_w, m->conv_dim, m->Kc);
    m->wA = tw_load(bk, m->A_log, 1, Hv);
    m->wdt = tw_load(bk, m->dt_bias, 1, Hv);
    m->wn = tw_load(bk, m->norm_w, 1, dv);
}

static void gdn_w_free(gdn_w_t *m, backend_t *bk) {
    bk->weight_free(bk, m->wconv), bk->weight_free(bk, m->wA), bk->weight_free(bk, m->wdt), bk->weight_free(bk, m->wn);
    free(m->conv_w), free(m->A_log), free(m->dt_bias), free(m->norm_w);
}

/* One sequence's inputs for all its L tokens, outputs, and its pages. */
typedef struct {
    int L;
    float *qkv, *z, *b, *a; /* [L, conv_dim], [L, Hv*dv], [L, Hv], [L, Hv] */
    float *out;             /* [L, Hv*dv] */
    int32_t *pages;         /* [E] state pages */
    int done;               /* tokens processed */
} gseq_t;

static void gseq_init(gseq_t *q, const gdn_w_t *m, int L, uint64_t seed) {
    trng_t r = {seed};
    q->L = L;
    q->qkv = malloc(sizeof(float) * L * m->conv_dim);
    q->z = malloc(sizeof(float) * L * m->Hv * m->dv);
    q->b = malloc(sizeof(float) * L * m->Hv);
    q->a = malloc(sizeof(float) * L * m->Hv);
    q->out = calloc((size_t)L * m->Hv * m->dv, sizeof(float));
    trng_fill(&r, q->qkv, (size_t)L * m->conv_dim, 1.0f);
    trng_fill(&r, q->z, (size_t)L * m->Hv * m->dv, 2.0f);
    trng_fill(&r, q->b, (size_t)L * m->Hv, 3.0f);
    trng_fill(&r, q->a, (size_t)L * m->Hv, 3.0f);
    q->pages = NULL;
    q->done = 0;
}
static void gseq_free(gseq_t *q) { free(q->qkv), free(q->z), free(q->b), free(q->a), free(q->out), free(q->pages); }

/* Run one step: n sequences (indices idx) with cnt[i] new tokens each. */
static void gdn_step(backend_t *bk, tpool_t *tp, const gdn_w_t *m, int layer, gseq_t *seqs, const int *idx,
                     const int *cnt, int n) {
    int T = 0, E = tp->pool.sm.n_pages;
    for (int i = 0; i < n; i++) T += cnt[i];
    int32_t *tok_start = malloc(sizeof(int32_t) * (n + 1)), *n_past = malloc(sizeof(int32_t) * n);
    int32_t *pos = malloc(sizeof(int32_t) * (T + 1)), *sp = malloc(sizeof(int32_t) * n * E);
    int cd = m->conv_dim, vd = m->Hv * m->dv, Hv = m->Hv, ld = cd + vd + 2 * Hv;
    /* the op's input as linear_n writes it: rows [qkv | z | b | a] of ld, between a NaN
     * row before and after, so a read outside the rows (or of a block with the wrong
     * stride past the end) turns outputs into NaN; a copy checks that the op only reads it */
    const size_t nbuf = (size_t)(T + 2) * ld;
    float *buf = malloc(sizeof(float) * nbuf), *in = buf + ld, *copy = malloc(sizeof(float) * nbuf);
    for (size_t i = 0; i < nbuf; i++) buf[i] = NAN;
    float *out = malloc(sizeof(float) * (T + 1) * vd);
    int t = 0;
    for (int i = 0; i < n; i++) {
        gseq_t *q = &seqs[idx[i]];
        tok_start[i] = t;
        n_past[i] = q->done;
        memcpy(sp + i * E, q->pages, sizeof(int32_t) * E);
        for (int j = 0; j < cnt[i]; j++, t++) {
            int p = q->done + j;
            pos[t] = p;
            float *row = in + (size_t)t * ld;
            memcpy(row, q->qkv + (size_t)p * cd, sizeof(float) * cd);
            memcpy(row + cd, q->z + (size_t)p * vd, sizeof(float) * vd);
            memcpy(row + cd + vd, q->b + (size_t)p * Hv, sizeof(float) * Hv);
            memcpy(row + cd + vd + Hv, q->a + (size_t)p * Hv, sizeof(float) * Hv);
        }
    }
    tok_start[n] = T;
    bk_batch_t bt = {.n_seqs = n, .n_tokens = T, .tok_start = tok_start, .n_past = n_past, .positions = pos,
                     .state_pages = sp, .n_state_pages = E};
    bk->set_batch(bk, &bt, &tp->pool);
    memcpy(copy, buf, sizeof(float) * nbuf);
    bk->gdn(bk, layer, in, m->wconv, m->wA, m->wdt, m->wn, m->Hk, m->Hv, m->dk, m->dv, m->Kc, m->eps, out);
    assert_memory_equal(buf, copy, sizeof(float) * nbuf);
    t = 0;
    for (int i = 0; i < n; i++) {
        gseq_t *q = &seqs[idx[i]];
        memcpy(q->out + (size_t)q->done * vd, out + (size_t)t * vd, sizeof(float) * vd * cnt[i]);
        t += cnt[i];
        q->done += cnt[i];
    }
    free(tok_start), free(n_past), free(pos), free(sp), free(buf), free(copy), free(out);
}

/* Read a sequence's state of GDN layer `layer` from the pool: conv [W][cd], S^T [Hv][dv][dk]. */
static void read_state(const tpool_t *tp, const gseq_t *q, int layer, float *conv, float *ssm) {
    const statemap_t *sm = &tp->pool.sm;
    const char *base = tp->pool.base;
    sm_loc_t cl = statemap_conv(sm, layer);
    const char *cp = base + (size_t)q->pages[cl.page] * tp->pool.page_bytes + cl.offset;
    for (int i = 0; i < sm->conv_width * sm->conv_dim; i++) conv[i] = cpu_load(cp, sm->conv_dtype, (size_t)i);
    for (int h = 0; h < sm->hv; h++)
        for (int j = 0; j < sm->n_slices; j++) {
            sm_loc_t l = statemap_ssm(sm, layer, h, j);
            const char *p = base + (size_t)q->pages[l.page] * tp->pool.page_bytes + l.offset;
            for (int i = 0; i < sm->slice_rows * sm->dk; i++)
                ssm[((size_t)h * sm->dv + (size_t)j * sm->slice_rows) * sm->dk + i] = cpu_load(p, sm->ssm_dtype, (size_t)i);
        }
}

/* Float64 reference of the whole op for one sequence's tokens [p0, p0+n) from the
 * given states (conv [W][cd] pre-conv rows, S^T [Hv][dv][dk]); updates the states. */
static void ref_gdn(const gdn_w_t *m, const gseq_t *q, int p0, int n, double *conv, double *St, double *out) {
    int cd = m->conv_dim, W = m->W, Hk = m->Hk, Hv = m->Hv, dk = m->dk, dv = m->dv, r = Hv / Hk;
    double *win = malloc(sizeof(double) * (W + n) * cd), *y = malloc(sizeof(double) * n * cd);
    memcpy(win, conv, sizeof(double) * W * cd);
    for (int t = 0; t < n; t++)
        for (int c = 0; c < cd; c++) win[(size_t)(W + t) * cd + c] = q->qkv[(size_t)(p0 + t) * cd + c];
    for (int t = 0; t < n; t++)
        for (int c = 0; c < cd; c++) {
            double acc = 0;
            for (int j = 0; j < m->Kc; j++) acc += m->conv_w[c * m->Kc + j] * win[(size_t)(t + 1 + j - 1 + W - (m->Kc - 1)) * cd + c];
            y[(size_t)t * cd + c] = acc / (1 + exp(-acc));
        }
    memcpy(conv, win + (size_t)n * cd, sizeof(double) * W * cd);
    for (int t = 0; t < n; t++)
        for (int h = 0; h < 2 * Hk; h++) {
            double *x = y + (size_t)t * cd + h * dk, ss = 0;
            for (int i = 0; i < dk; i++) ss += x[i] * x[i];
            double f = 1 / sqrt(ss + 1e-6) * (h < Hk ? 1 / sqrt((double)dk) : 1);
            for (int i = 0; i < dk; i++) x[i] *= f;
        }
    double *o = malloc(sizeof(double) * dv), *mm = malloc(sizeof(double) * dv);
    for (int t = 0; t < n; t++)
        for (int h = 0; h < Hv; h++) {
            int kh = h / r, p = p0 + t;
            double av = (double)q->a[p * Hv + h] + m->dt_bias[h];
            double sp = av > 20 ? av : log1p(exp(av));
            double g = -exp((double)m->A_log[h]) * sp, beta = 1 / (1 + exp(-(double)q->b[p * Hv + h]));
            const double *qq = y + (size_t)t * cd + kh * dk, *kk = y + (size_t)t * cd + (Hk + kh) * dk;
            const double *vv = y + (size_t)t * cd + 2 * Hk * dk + h * dv;
            double *S = St + (size_t)h * dv * dk; /* S^T[j][i] */
            for (int j = 0; j < dv; j++) {
                double mj = 0;
                for (int i = 0; i < dk; i++) {
                    S[j * dk + i] *= exp(g);
                    mj += S[j * dk + i] * kk[i];
                }
                double d = beta * (vv[j] - mj), oj = 0;
                for (int i = 0; i < dk; i++) {
                    S[j * dk + i] += kk[i] * d;
                    oj += S[j * dk + i] * qq[i];
                }
                o[j] = oj;
            }
            double ss = 0;
            for (int j = 0; j < dv; j++) ss += o[j] * o[j];
            double inv = 1 / sqrt(ss / dv + m->eps);
            for (int j = 0; j < dv; j++) {
                double zz = q->z[(size_t)p * Hv * dv + h * dv + j];
                out[(size_t)t * Hv * dv + h * dv + j] = o[j] * inv * m->norm_w[j] * zz / (1 + exp(-zz));
            }
        }
    (void)mm;
    free(win), free(y), free(o), free(mm);
}

/* Build a pool for model m with n_gdn = 2 layers, slices of dv/2 rows, E pages per request. */
static void gdn_pool(tpool_t *tp, backend_t *bk, const gdn_w_t *m, int n_req, hs_dtype_t conv_dt, hs_dtype_t ssm_dt) {
    size_t slice = (size_t)(m->dv / 2) * m->dk * hs_dtype_size(ssm_dt);
    size_t convb = (size_t)m->W * m->conv_dim * hs_dtype_size(conv_dt);
    size_t pb = (slice > convb ? slice : convb) * 3; /* several granules per page, several pages per request */
    tpool_init(tp, bk, 0, 1, 1, 16, 16, HS_F32, 2, m->Hv, m->dk, m->dv, m->conv_dim, m->W, conv_dt, ssm_dt, m->dv / 2, pb);
    int E = tp->pool.sm.n_pages;
    bk->free(bk, tp->pool.base);
    tp->pool.n_pages = (int64_t)n_req * E + 3;
    tp->pool.base = bk->alloc(bk, (size_t)tp->pool.n_pages * tp->pool.page_bytes);
    /* stale garbage everywhere: fresh sequences must ignore it */
    trng_t r = {99};
    if (ssm_dt == HS_F32 && conv_dt == HS_F32) trng_fill(&r, tp->pool.base, tp->pool.n_pages * tp->pool.page_bytes / 4, 5.0f);
}

/* Pages of request i: interleaved from the end (non-contiguous, descending). */
static void give_pages(const tpool_t *tp, gseq_t *q, int i, int n_req) {
    int E = tp->pool.sm.n_pages;
    q->pages = malloc(sizeof(int32_t) * E);
    for (int e = 0; e < E; e++) q->pages[e] = (int32_t)(tp->pool.n_pages - 1 - (e * n_req + i));
}

/* The op against the float64 reference: 3 sequences, steps mixing prefill
 * segments (recurrent <= 64, chunked > 64) and decode. */
static void run_gdn_ref(backend_t *bk, int Hk, int r) {
    gdn_w_t m;
    gdn_w_init(&m, bk, Hk, Hk * r, 16, 8, 500 + (uint64_t)r);
    enum { NS = 3 };
    const int L[NS] = {150, 9, 80};
    gseq_t s[NS];
    tpool_t tp;
    gdn_pool(&tp, bk, &m, NS, HS_F32, HS_F32);
    for (int i = 0; i < NS; i++) {
        gseq_init(&s[i], &m, L[i], 77 + (uint64_t)i);
        give_pages(&tp, &s[i], i, NS);
    }
    /* steps: {seq idx, count}... */
    const int steps[][2][3] = {
        {{0, 1, 2}, {70, 5, 80}},   /* A chunked (70), B recurrent (5), C chunked (80) */
        {{0, 1, -1}, {1, 1, 0}},    /* decode A, B */
        {{0, 1, -1}, {79, 3, 0}},   /* A chunked with history, B recurrent with history */
    };
    int cd = m.conv_dim, vd = m.Hv * m.dv;
    double *conv[NS], *St[NS];
    for (int i = 0; i < NS; i++) {
        conv[i] = calloc((size_t)m.W * cd, sizeof(double));
        St[i] = calloc((size_t)m.Hv * m.dv * m.dk, sizeof(double));
    }
    double *ref = malloc(sizeof(double) * 200 * vd);
    double worst = 0;
    for (size_t st = 0; st < sizeof steps / sizeof steps[0]; st++) {
        int idx[3], cnt[3], n = 0;
        for (int j = 0; j < 3; j++)
            if (steps[st][0][j] >= 0) idx[n] = steps[st][0][j], cnt[n++] = steps[st][1][j];
        int p0[3];
        for (int j = 0; j < n; j++) p0[j] = s[idx[j]].done;
        gdn_step(bk, &tp, &m, 1, s, idx, cnt, n);
        for (int j = 0; j < n; j++) {
            gseq_t *q = &s[idx[j]];
            ref_gdn(&m, q, p0[j], cnt[j], conv[idx[j]], St[idx[j]], ref);
            double sc = max_abs_d(ref, (size_t)cnt[j] * vd);
            terr_t e = terr(q->out + (size_t)p0[j] * vd, ref, (size_t)cnt[j] * vd, sc);
            worst = fmax(worst, e.max_abs / sc);
            assert_true(e.max_abs < 2e-5 * sc);
            /* states */
            float *gc = malloc(sizeof(float) * m.W * cd), *gs = malloc(sizeof(float) * m.Hv * m.dv * m.dk);
            read_state(&tp, q, 1, gc, gs);
            terr_t ec = terr(gc, conv[idx[j]], (size_t)m.W * cd, 1);
            terr_t es = terr(gs, St[idx[j]], (size_t)m.Hv * m.dv * m.dk, 1);
            assert_true(ec.max_abs == 0); /* pre-conv inputs are copied, not computed */
            assert_true(es.max_abs < 2e-5 * fmax(1, max_abs_d(St[idx[j]], (size_t)m.Hv * m.dv * m.dk)));
            worst = fmax(worst, es.max_abs);
            free(gc), free(gs);
        }
    }
    printf("  gdn op Hk=%d Hv=%d (r=%d): worst scaled error %.2e\n", Hk, Hk * r, r, worst);
    for (int i = 0; i < NS; i++) free(conv[i]), free(St[i]), gseq_free(&s[i]);
    free(ref);
    tpool_free(&tp, bk);
    gdn_w_free(&m, bk);
}

static void test_gdn_op(void **state) {
    /* Both forms of the delta rule: the op's default (recurrent for every segment)
     * and the chunked form for segments longer than 64 tokens. */
    for (int forced = 0; forced < 2; forced++) {
        cpu_gdn_force_chunked = forced;
        for (int r = 1; r <= 4; r++) run_gdn_ref(*state, 2, r);
    }
    cpu_gdn_force_chunked = 0;
}

/* Prefill of one 200-token sequence in different piece schedules. Returns outputs
 * and final state (layer 0) into out/ssm/conv. */
static void run_schedule(backend_t *bk, const gdn_w_t *m, const int *pieces, int n_pieces, int batched, float *out,
                         float *ssm, float *conv, hs_dtype_t ssm_dt) {
    tpool_t tp;
    enum { NS = 3 };
    gdn_pool(&tp, bk, m, NS, HS_F32, ssm_dt);
    gseq_t s[NS];
    gseq_init(&s[0], m, 200, 4242);
    gseq_init(&s[1], m, 200, 1111);
    gseq_init(&s[2], m, 200, 2222);
    for (int i = 0; i < NS; i++) give_pages(&tp, &s[i], batched ? i : 0, NS);
    for (int i = 0; i < n_pieces; i++) {
        int idx[3] = {1, 0, 2}, cnt[3] = {batched ? 65 - 20 * (i % 3) : 0, pieces[i], 3};
        if (batched) {
            cnt[0] = s[1].done + cnt[0] <= 200 ? cnt[0] : 200 - s[1].done;
            cnt[2] = s[2].done + cnt[2] <= 200 ? cnt[2] : 200 - s[2].done;
            gdn_step(bk, &tp, m, 0, s, idx, cnt, 3);
        } else {
            gdn_step(bk, &tp, m, 0, s, idx + 1, cnt + 1, 1);
        }
    }
    assert_int_equal(s[0].done, 200);
    memcpy(out, s[0].out, sizeof(float) * 200 * m->Hv * m->dv);
    read_state(&tp, &s[0], 0, conv, ssm);
    for (int i = 0; i < NS; i++) gseq_free(&s[i]);
    tpool_free(&tp, bk);
}

static void gdn_invariance(void **state, int forced) {
    backend_t *bk = *state;
    cpu_gdn_force_chunked = forced;
    gdn_w_t m;
    gdn_w_init(&m, bk, 2, 4, 16, 8, 31337);
    size_t no = 200 * (size_t)m.Hv * m.dv, ns = (size_t)m.Hv * m.dv * m.dk, nc = (size_t)m.W * m.conv_dim;
    float *o1 = malloc(4 * no), *s1 = malloc(4 * ns), *c1 = malloc(4 * nc);
    float *o2 = malloc(4 * no), *s2 = malloc(4 * ns), *c2 = malloc(4 * nc);
    double *ro = malloc(8 * no), *rs = malloc(8 * ns);
    const int one[] = {200};
    run_schedule(bk, &m, one, 1, 0, o1, s1, c1, HS_F32);
    for (size_t i = 0; i < no; i++) ro[i] = o1[i];
    for (size_t i = 0; i < ns; i++) rs[i] = s1[i];
    double so = max_abs_d(ro, no), ss = max_abs_d(rs, ns);
    int p1[200], p7[40], p64[4] = {64, 64, 64, 8}, n7 = 0;
    for (int i = 0; i < 200; i++) p1[i] = 1;
    for (int t = 0; t < 200; t += 7) p7[n7++] = 200 - t < 7 ? 200 - t : 7;
    struct {
        const char *name;
        const int *p;
        int n;
    } sch[] = {{"pieces of 1 (token by token)", p1, 200}, {"pieces of 7", p7, n7}, {"pieces of 64", p64, 4}};
    for (size_t k = 0; k < 3; k++) {
        run_schedule(bk, &m, sch[k].p, sch[k].n, 0, o2, s2, c2, HS_F32);
        terr_t eo = terr(o2, ro, no, so), es = terr(s2, rs, ns, ss);
        printf("  %s: chunked prefill, %-28s vs one-shot: out %.2e state %.2e (abs; scales %.2f %.2f)\n",
               forced ? "chunked form" : "recurrent form", sch[k].name, eo.max_abs, es.max_abs, so, ss);
        if (forced) {
            /* the chunked form reorders operations at chunk edges: fp32 noise */
            assert_true(eo.max_abs < 2e-5 * so && es.max_abs < 2e-5 * ss);
        } else {
            /* the recurrent form does the same operations for every cut */
            assert_memory_equal(o2, o1, 4 * no);
            assert_memory_equal(s2, s1, 4 * ns);
        }
        assert_memory_equal(c1, c2, 4 * nc); /* conv state: copies of inputs */
    }
    /* batched with others, same schedule: bitwise */
    run_schedule(bk, &m, p7, n7, 0, o1, s1, c1, HS_F32);
    run_schedule(bk, &m, p7, n7, 1, o2, s2, c2, HS_F32);
    assert_memory_equal(o1, o2, 4 * no);
    assert_memory_equal(s1, s2, 4 * ns);
    assert_memory_equal(c1, c2, 4 * nc);
    printf("  alone == batched with 2 others: bit-identical\n");
    /* bf16 state storage: the stored state is the bf16 rounding of the fp32 run's */
    run_schedule(bk, &m, one, 1, 0, o1, s1, c1, HS_F32);
    run_schedule(bk, &m, one, 1, 0, o2, s2, c2, HS_BF16);
    assert_memory_equal(o1, o2, 4 * no);
    for (size_t i = 0; i < ns; i++) assert_true(s2[i] == hs_bf16_to_f32(hs_f32_to_bf16(s1[i])));
    free(o1), free(s1), free(c1), free(o2), free(s2), free(c2), free(ro), free(rs);
    gdn_w_free(&m, bk);
    cpu_gdn_force_chunked = 0;
}

static void test_gdn_invariance(void **state) { gdn_invariance(state, 0); }
static void test_gdn_invariance_chunked(void **state) { gdn_invariance(state, 1); }

/* The pool's real state maps (statemap_init): the paged layout (E small pages from
 * offset 0), the slots layout (same map, pages from a reserved range) and the coupled
 * layout (one page per request, state after the KV part: base_offset = kv_bytes) give
 * bit-identical outputs and states: only addresses differ. */
static void run_layout(backend_t *bk, const gdn_w_t *m, int kind, float *out, float *ssm, float *conv) {
    mcfg_t c;
    memset(&c, 0, sizeof c);
    c.n_gdn = 2, c.n_attn = 1, c.n_layers = 3, c.lin_k_heads = m->Hk, c.lin_v_heads = m->Hv;
    c.lin_k_dim = m->dk, c.lin_v_dim = m->dv, c.conv_kernel = m->Kc, c.dtype = HS_F32;
    c.n_kv_heads = 1, c.head_dim = 16, c.n_heads = 1;
    kv_layout_t kv;
    kv_layout_init(&kv, &c, 1, 16, HS_BF16, 0);
    statemap_t sm;
    char err[200];
    size_t pb = kind == 2 ? kv.kv_bytes + statemap_bytes(&c, 1, HS_F32, 0) : 2048; /* paged: several pages per request */
    int rc = statemap_init(&sm, &c, 1, HS_F32, 0, pb, kind == 2 ? kv.kv_bytes : 0, 0, err, sizeof err);
    if (rc != HS_OK) fprintf(stderr, "statemap_init: %s\n", err);
    assert_int_equal(rc, HS_OK);
    assert_true(kind != 2 || sm.n_pages == 1);
    assert_int_equal(sm.conv_dtype, HS_F32);
    tpool_t tp;
    memset(&tp, 0, sizeof tp);
    tp.pool.kv = kv;
    tp.pool.sm = sm;
    tp.pool.page_bytes = pb;
    enum { NS = 2 };
    int E = sm.n_pages;
    tp.pool.n_pages = (int64_t)NS * E + 4;
    tp.pool.base = bk->alloc(bk, (size_t)tp.pool.n_pages * pb);
    gseq_t s[NS];
    gseq_init(&s[0], m, 80, 777);
    gseq_init(&s[1], m, 80, 778);
    for (int i = 0; i < NS; i++) {
        s[i].pages = malloc(sizeof(int32_t) * E);
        for (int e = 0; e < E; e++) /* paged: interleaved; slots: a contiguous range at the end */
            s[i].pages[e] = kind == 1 ? (int32_t)(tp.pool.n_pages - NS * E + i * E + e) : (int32_t)(e * NS + i);
    }
    int idx[2] = {0, 1}, c1[2] = {70, 5}, c2[2] = {1, 1}, c3[2] = {9, 74};
    gdn_step(bk, &tp, m, 1, s, idx, c1, 2);
    gdn_step(bk, &tp, m, 1, s, idx, c2, 2);
    gdn_step(bk, &tp, m, 1, s, idx, c3, 2);
    size_t vd = (size_t)m->Hv * m->dv;
    memcpy(out, s[0].out, sizeof(float) * 80 * vd);
    memcpy(out + 80 * vd, s[1].out, sizeof(float) * 80 * vd);
    read_state(&tp, &s[1], 1, conv, ssm);
    for (int i = 0; i < NS; i++) gseq_free(&s[i]);
    bk->free(bk, tp.pool.base);
    statemap_free(&sm);
}

static void test_gdn_layouts(void **state) {
    backend_t *bk = *state;
    gdn_w_t m;
    gdn_w_init(&m, bk, 2, 4, 16, 8, 4711);
    size_t no = 160 * (size_t)m.Hv * m.dv, ns = (size_t)m.Hv * m.dv * m.dk, nc = (size_t)m.W * m.conv_dim;
    float *o[3], *st[3], *cv[3];
    for (int k = 0; k < 3; k++) {
        o[k] = malloc(4 * no), st[k] = malloc(4 * ns), cv[k] = malloc(4 * nc);
        run_layout(bk, &m, k, o[k], st[k], cv[k]);
    }
    for (int k = 1; k < 3; k++) {
        assert_memory_equal(o[0], o[k], 4 * no);
        assert_memory_equal(st[0], st[k], 4 * ns);
        assert_memory_equal(cv[0], cv[k], 4 * nc);
    }
    printf("  paged == slots == coupled state maps (statemap_init): bit-identical\n");
    for (int k = 0; k < 3; k++) free(o[k]), free(st[k]), free(cv[k]);
    gdn_w_free(&m, bk);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delta_kernels),
        cmocka_unit_test_setup_teardown(test_gdn_op, cpu_setup, cpu_teardown),
        cmocka_unit_test_setup_teardown(test_gdn_invariance, cpu_setup, cpu_teardown),
        cmocka_unit_test_setup_teardown(test_gdn_invariance_chunked, cpu_setup, cpu_teardown),
        cmocka_unit_test_setup_teardown(test_gdn_layouts, cpu_setup, cpu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
