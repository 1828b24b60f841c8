/*
 * Tests of the CPU backend's gated attention (cpu_attn.c) over a paged KV cache
 * against a float64 reference written plainly here: q/k RMSNorm(1+w), partial
 * rotate-half RoPE, causal GQA softmax attention, sigmoid output gate.
 *
 *  - prefill, chunked prefill over several steps, decode, GQA (Hq/Hkv = 1, 2, 4),
 *    three sequences with different n_past in one step, non-contiguous block tables
 *    (pages handed out from a shuffled list), attention layer 1 of 2 (offsets);
 *  - KV dtypes: f32 (tight), bf16 and fp8 E4M3 with per-token-head scales (loose,
 *    bounded by the storage rounding);
 *  - invariance: one-shot prefill == pieces of 1, 7, 64 == batched with others, bit
 *    for bit (each token's attention reads the same cache rows in the same order).
 *  - the input layout: the op gets [qg | k | v] packed per token (linear_n's column
 *    blocks) between NaN rows, the reference reads the separate per-sequence arrays;
 *    the packed input is unchanged by the op.
 *
 * Tolerances (f32 KV): every output is a convex combination of O(1) values times a
 * gate in (0, 1); fp32 vs float64 over D-term dot products and <= 200-term softmax
 * sums, plus fp32 RoPE angles (pos * inv_freq rounded to fp32: ~pos * 6e-8 rad):
 * < 1e-5 absolute; bound 2e-5. bf16 KV: k and v rounded to 8 bits (2^-9 relative)
 * -> bound 2e-2. fp8 KV: 3 mantissa bits (2^-4 relative) -> bound 1.5e-1.
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

typedef struct {
    int Hq, Hkv, D, R;
    float theta, eps;
    float *qn, *kn;
    bk_weight_t *wq, *wk;
} attn_m_t;

typedef struct {
    int L, done;
    float *qg, *k, *v, *out; /* [L, Hq*2D], [L, Hkv*D] x2, [L, Hq*D] */
    int32_t *bt;             /* [max_blocks] */
} aseq_t;

enum { MAXB = 16, BS = 16 };

static void am_init(attn_m_t *m, backend_t *bk, int Hq, int Hkv, int D) {
    trng_t r = {(uint64_t)(Hq * 100 + Hkv)};
    m->Hq = Hq, m->Hkv = Hkv, m->D = D, m->R = D / 4, m->theta = 10000.0f, m->eps = 1e-6f;
    m->qn = malloc(sizeof(float) * D), m->kn = malloc(sizeof(float) * D);
    trng_fill(&r, m->qn, D, 0.3f);
    trng_fill(&r, m->kn, D, 0.3f);
    m->wq = tw_load(bk, m->qn, 1, D);
    m->wk = tw_load(bk, m->kn, 1, D);
}
static void am_free(attn_m_t *m, backend_t *bk) {
    bk->weight_free(bk, m->wq), bk->weight_free(bk, m->wk);
    free(m->qn), free(m->kn);
}

static void as_init(aseq_t *s, const attn_m_t *m, int L, uint64_t seed) {
    trng_t r = {seed};
    s->L = L, s->done = 0;
    s->qg = malloc(sizeof(float) * L * m->Hq * 2 * m->D);
    s->k = malloc(sizeof(float) * L * m->Hkv * m->D);
    s->v = malloc(sizeof(float) * L * m->Hkv * m->D);
    s->out = calloc((size_t)L * m->Hq * m->D, sizeof(float));
    trng_fill(&r, s->qg, (size_t)L * m->Hq * 2 * m->D, 2.0f);
    trng_fill(&r, s->k, (size_t)L * m->Hkv * m->D, 2.0f);
    trng_fill(&r, s->v, (size_t)L * m->Hkv * m->D, 1.0f);
    s->bt = malloc(sizeof(int32_t) * MAXB);
}
static void as_free(aseq_t *s) { free(s->qg), free(s->k), free(s->v), free(s->out), free(s->bt); }

/* One step over n sequences idx[] with cnt[] new tokens. */
static void attn_step(backend_t *bk, tpool_t *tp, const attn_m_t *m, int layer, aseq_t *seqs, const int *idx,
                      const int *cnt, int n) {
    int T = 0;
    for (int i = 0; i < n; i++) T += cnt[i];
    int qd = m->Hq * 2 * m->D, kd = m->Hkv * m->D, od = m->Hq * m->D;
    int32_t *ts = malloc(sizeof(int32_t) * (n + 1)), *np = malloc(sizeof(int32_t) * n);
    int32_t *pos = malloc(sizeof(int32_t) * (T + 1)), *bt = malloc(sizeof(int32_t) * n * MAXB);
    /* the op's input as linear_n writes it: rows [qg | k | v] of ld, between a NaN row
     * before and after, so a read outside the rows (or of a block with the wrong stride
     * past the end) turns outputs into NaN; a copy checks that the op only reads it */
    const int ld = qd + 2 * kd;
    const size_t nbuf = (size_t)(T + 2) * ld;
    float *buf = malloc(sizeof(float) * nbuf), *qkv = buf + ld, *copy = malloc(sizeof(float) * nbuf);
    for (size_t i = 0; i < nbuf; i++) buf[i] = NAN;
    float *out = malloc(sizeof(float) * (T + 1) * od);
    int t = 0;
    for (int i = 0; i < n; i++) {
        aseq_t *s = &seqs[idx[i]];
        ts[i] = t, np[i] = s->done;
        memcpy(bt + i * MAXB, s->bt, sizeof(int32_t) * MAXB);
        for (int j = 0; j < cnt[i]; j++, t++) {
            int p = s->done + j;
            pos[t] = p;
            float *row = qkv + (size_t)t * ld;
            memcpy(row, s->qg + (size_t)p * qd, sizeof(float) * qd);
            memcpy(row + qd, s->k + (size_t)p * kd, sizeof(float) * kd);
            memcpy(row + qd + kd, s->v + (size_t)p * kd, sizeof(float) * kd);
        }
    }
    ts[n] = T;
    bk_batch_t b = {.n_seqs = n, .n_tokens = T, .tok_start = ts, .n_past = np, .positions = pos,
                    .block_tables = bt, .max_blocks = MAXB};
    bk->set_batch(bk, &b, &tp->pool);
    memcpy(copy, buf, sizeof(float) * nbuf);
    bk->attention(bk, layer, qkv, m->wq, m->wk, m->Hq, m->Hkv, m->D, m->R, m->theta, m->eps, out);
    assert_memory_equal(buf, copy, sizeof(float) * nbuf);
    t = 0;
    for (int i = 0; i < n; i++) {
        aseq_t *s = &seqs[idx[i]];
        memcpy(s->out + (size_t)s->done * od, out + (size_t)t * od, sizeof(float) * od * cnt[i]);
        t += cnt[i];
        s->done += cnt[i];
    }
    free(ts), free(np), free(pos), free(bt), free(buf), free(copy), free(out);
}

static void ref_normrope(const attn_m_t *m, const float *x, const float *w, int pos, double *y) {
    double ss = 0;
    for (int i = 0; i < m->D; i++) ss += (double)x[i] * x[i];
    double inv = 1 / sqrt(ss / m->D + m->eps);
    for (int i = 0; i < m->D; i++) y[i] = x[i] * inv * (1.0 + w[i]);
    int half = m->R / 2;
    for (int i = 0; i < half; i++) {
        double f = pos * pow((double)m->theta, -2.0 * i / m->R), c = cos(f), s = sin(f);
        double a = y[i], b = y[i + half];
        y[i] = a * c - b * s;
        y[i + half] = b * c + a * s;
    }
}

/* Float64 output of the whole sequence s: out[L, Hq*D]. */
static void ref_attn(const attn_m_t *m, const aseq_t *s, double *out) {
    int D = m->D, L = s->L, qd = m->Hq * 2 * D, kd = m->Hkv * D, grp = m->Hq / m->Hkv;
    double *K = malloc(sizeof(double) * L * kd), *q = malloc(sizeof(double) * D), *p = malloc(sizeof(double) * L);
    for (int t = 0; t < L; t++)
        for (int h = 0; h < m->Hkv; h++) ref_normrope(m, s->k + (size_t)t * kd + h * D, m->kn, t, K + (size_t)t * kd + h * D);
    for (int t = 0; t < L; t++)
        for (int h = 0; h < m->Hq; h++) {
            ref_normrope(m, s->qg + (size_t)t * qd + h * 2 * D, m->qn, t, q);
            int kh = h / grp;
            double mx = -1e300, sum = 0;
            for (int j = 0; j <= t; j++) {
                double d = 0;
                for (int i = 0; i < D; i++) d += q[i] * K[(size_t)j * kd + kh * D + i];
                p[j] = d / sqrt((double)D);
                mx = fmax(mx, p[j]);
            }
            for (int j = 0; j <= t; j++) sum += (p[j] = exp(p[j] - mx));
            for (int i = 0; i < D; i++) {
                double acc = 0;
                for (int j = 0; j <= t; j++) acc += p[j] / sum * s->v[(size_t)j * kd + kh * D + i];
                double g = s->qg[(size_t)t * qd + h * 2 * D + D + i];
                out[((size_t)t * m->Hq + h) * D + i] = acc / (1 + exp(-g));
            }
        }
    free(K), free(q), free(p);
}

/* Pool with 2 attention layers; pages handed out from a shuffled list. */
static void attn_pool(tpool_t *tp, backend_t *bk, const attn_m_t *m, hs_dtype_t kv_dt, aseq_t *s, int ns) {
    tpool_init(tp, bk, (int64_t)ns * MAXB + 5, 2, m->Hkv, m->D, BS, kv_dt, 0, 0, 0, 0, 0, 0, HS_F32, HS_F32, 0, 0);
    int np = (int)tp->pool.n_pages, *perm = malloc(sizeof(int) * np);
    for (int i = 0; i < np; i++) perm[i] = i;
    trng_t r = {5};
    for (int i = np - 1; i > 0; i--) {
        int j = (int)((trng_u(&r) + 1) / 2 * (i + 1)) % (i + 1), x = perm[i];
        perm[i] = perm[j], perm[j] = x;
    }
    for (int i = 0; i < ns; i++)
        for (int b = 0; b < MAXB; b++) s[i].bt[b] = b * BS < s[i].L ? perm[i * MAXB + b] : -1;
    free(perm);
}

static void run_attn_ref(backend_t *bk, int Hq, int Hkv, int D, hs_dtype_t kv_dt, double tol) {
    attn_m_t m;
    am_init(&m, bk, Hq, Hkv, D);
    enum { NS = 3 };
    const int L[NS] = {150, 20, 70};
    aseq_t s[NS];
    for (int i = 0; i < NS; i++) as_init(&s[i], &m, L[i], 900 + (uint64_t)i);
    tpool_t tp;
    attn_pool(&tp, bk, &m, kv_dt, s, NS);
    /* steps mixing prefill, chunked prefill (n_past > 0) and decode */
    const int steps[][2][3] = {
        {{0, 1, -1}, {64, 5, 0}},
        {{0, 1, 2}, {1, 1, 33}},
        {{2, 0, 1}, {37, 80, 14}},
        {{0, -1, -1}, {5, 0, 0}},
    };
    for (size_t st = 0; st < sizeof steps / sizeof steps[0]; st++) {
        int idx[3], cnt[3], n = 0;
        for (int j = 0; j < 3; j++)
            if (steps[st][0][j] >= 0) idx[n] = steps[st][0][j], cnt[n++] = steps[st][1][j];
        attn_step(bk, &tp, &m, 1, s, idx, cnt, n);
    }
    double worst = 0;
    for (int i = 0; i < NS; i++) {
        assert_int_equal(s[i].done, L[i]);
        size_t no = (size_t)L[i] * Hq * D;
        double *ref = malloc(sizeof(double) * no);
        ref_attn(&m, &s[i], ref);
        terr_t e = terr(s[i].out, ref, no, 1.0);
        worst = fmax(worst, e.max_abs);
        free(ref);
    }
    printf("  attention Hq=%d Hkv=%d D=%d kv %-4s: max abs error %.2e (bound %.0e)\n", Hq, Hkv, D,
           hs_dtype_name(kv_dt), worst, tol);
    assert_true(worst < tol);
    for (int i = 0; i < NS; i++) as_free(&s[i]);
    tpool_free(&tp, bk);
    am_free(&m, bk);
}

static void test_attn_ref(void **state) {
    backend_t *bk = *state;
    run_attn_ref(bk, 4, 4, 32, HS_F32, 2e-5);
    run_attn_ref(bk, 4, 2, 32, HS_F32, 2e-5);
    run_attn_ref(bk, 8, 2, 64, HS_F32, 2e-5);
    run_attn_ref(bk, 8, 2, 64, HS_BF16, 2e-2);
    run_attn_ref(bk, 4, 2, 32, HS_F16, 5e-3);
    run_attn_ref(bk, 4, 2, 32, HS_F8_E4M3, 1.5e-1);
}

/* One 150-token sequence in pieces, optionally batched with two others. */
static void run_pieces(backend_t *bk, const attn_m_t *m, const int *pieces, int n_pieces, int batched, float *out) {
    enum { NS = 3 };
    aseq_t s[NS];
    as_init(&s[0], m, 150, 31);
    as_init(&s[1], m, 150, 32);
    as_init(&s[2], m, 150, 33);
    tpool_t tp;
    attn_pool(&tp, bk, m, HS_BF16, s, NS);
    for (int i = 0; i < n_pieces; i++) {
        int idx[3] = {1, 0, 2}, cnt[3] = {s[1].done < 140 ? 10 : 150 - s[1].done, pieces[i], s[2].done < 150 ? 1 : 0};
        if (batched) attn_step(bk, &tp, m, 0, s, idx, cnt, 3);
        else attn_step(bk, &tp, m, 0, s, idx + 1, cnt + 1, 1);
    }
    memcpy(out, s[0].out, sizeof(float) * 150 * m->Hq * m->D);
    for (int i = 0; i < NS; i++) as_free(&s[i]);
    tpool_free(&tp, bk);
}

static void test_attn_invariance(void **state) {
    backend_t *bk = *state;
    attn_m_t m;
    am_init(&m, bk, 4, 2, 32);
    size_t no = 150 * 4 * 32;
    float *a = malloc(4 * no), *b = malloc(4 * no);
    const int one[] = {150}, p64[] = {64, 64, 22};
    int p1[150], p7[22], n7 = 0;
    for (int i = 0; i < 150; i++) p1[i] = 1;
    for (int t = 0; t < 150; t += 7) p7[n7++] = 150 - t < 7 ? 150 - t : 7;
    run_pieces(bk, &m, one, 1, 0, a);
    run_pieces(bk, &m, p1, 150, 0, b);
    assert_memory_equal(a, b, 4 * no);
    run_pieces(bk, &m, p7, n7, 0, b);
    assert_memory_equal(a, b, 4 * no);
    run_pieces(bk, &m, p64, 3, 0, b);
    assert_memory_equal(a, b, 4 * no);
    run_pieces(bk, &m, p7, n7, 1, b);
    assert_memory_equal(a, b, 4 * no);
    printf("  one-shot == pieces of 1, 7, 64 == batched with 2 others: bit-identical (bf16 KV)\n");
    free(a), free(b);
    am_free(&m, bk);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_attn_ref, cpu_setup, cpu_teardown),
        cmocka_unit_test_setup_teardown(test_attn_invariance, cpu_setup, cpu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
