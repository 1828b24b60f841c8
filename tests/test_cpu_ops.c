/*
 * Unit tests for the CPU backend's simple ops against float64 references written
 * plainly here: rmsnorm (1+w and plain, residual, aliasing), linear over fp32 /
 * bf16 / fp16 / fp8-block-scaled weights (dequantisation checked exactly through
 * an identity input), the E4M3 codec, embed, add, swiglu, gather_rows, logits,
 * MoE routing + experts + shared expert, page_out/page_in.
 *
 * Tolerances: fp32 arithmetic against float64 with sums of <= a few hundred terms
 * of O(1) values: relative error ~ n * 2^-24 ~ 1e-5 worst case, so checks use
 * 2e-5 relative (with an absolute floor of 1e-6 near zero) unless said otherwise.
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

static void test_rmsnorm(void **state) {
    backend_t *bk = *state;
    trng_t r = {42};
    enum { T = 5, N = 96 };
    float x[T * N], w[N], res[T * N], res0[T * N], out[T * N];
    double ref[T * N];
    trng_fill(&r, x, T * N, 2.0f);
    trng_fill(&r, w, N, 0.5f);
    trng_fill(&r, res0, T * N, 1.0f);
    bk_weight_t *wt = tw_load(bk, w, 1, N);
    const float eps = 1e-6f;
    for (int variant = 0; variant < 4; variant++) {
        bool plus_one = variant & 1, with_res = variant & 2;
        memcpy(res, res0, sizeof res);
        for (int t = 0; t < T; t++) {
            double ss = 0, src[N];
            for (int i = 0; i < N; i++) {
                src[i] = with_res ? (double)res0[t * N + i] + x[t * N + i] : x[t * N + i];
                ss += src[i] * src[i];
            }
            double inv = 1.0 / sqrt(ss / N + eps);
            for (int i = 0; i < N; i++) ref[t * N + i] = src[i] * inv * (plus_one ? 1.0 + w[i] : w[i]);
        }
        bk->rmsnorm(bk, x, with_res ? res : NULL, wt, eps, plus_one, T, N, out);
        terr_t e = terr(out, ref, T * N, 1e-3);
        terr_print(plus_one ? "rmsnorm (1+w)" : "rmsnorm (w)", e, out, ref);
        assert_true(e.max_rel < 2e-5);
        if (with_res)
            for (int i = 0; i < T * N; i++) assert_true(res[i] == res0[i] + x[i]);
    }
    /* out aliasing x */
    float y[T * N];
    memcpy(y, x, sizeof y);
    bk->rmsnorm(bk, y, NULL, wt, eps, true, T, N, y);
    bk->rmsnorm(bk, x, NULL, wt, eps, true, T, N, out);
    assert_memory_equal(y, out, sizeof y);
    bk->weight_free(bk, wt);
}

/* Independent E4M3 decoder in double (OCP fn format: bias 7, no inf, 0x7f = NaN). */
static double e4m3_ref(uint8_t v) {
    int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
    double r = e == 0 ? m / 8.0 * pow(2, -6) : (1 + m / 8.0) * pow(2, e - 7);
    return s ? -r : r;
}

static void test_e4m3(void **state) {
    (void)state;
    for (int v = 0; v < 256; v++) {
        if ((v & 0x7f) == 0x7f) {
            assert_true(isnan(hs_e4m3_to_f32((uint8_t)v)));
            continue;
        }
        float f = hs_e4m3_to_f32((uint8_t)v);
        assert_true((double)f == e4m3_ref((uint8_t)v));
        if (v != 0x80) assert_int_equal(cpu_f32_to_e4m3(f), v); /* -0 encodes as 0x80 too, skip */
    }
    assert_int_equal(cpu_f32_to_e4m3(1000.0f), 0x7e);  /* saturates to 448 */
    assert_int_equal(cpu_f32_to_e4m3(-1000.0f), 0xfe);
    /* 1 + 1/16 lies half way between 1 (0x38) and 1.125 (0x39): ties to even -> 0x38 */
    assert_int_equal(cpu_f32_to_e4m3(1.0625f), 0x38);
    assert_int_equal(cpu_f32_to_e4m3(1.1875f), 0x3a); /* half way 1.125/1.25 -> even 1.25 */
    assert_int_equal(cpu_f32_to_e4m3(ldexpf(1.0f, -10)), 0x00); /* half of the smallest subnormal -> 0 */
}

/* Linear through an identity input: out[t][n] = W[n][t] exactly, so the
 * dequantised weight is checked bit for bit; then a random input against double. */
static void check_linear(backend_t *bk, const bk_host_tensor_t *ht, const double *wref, const char *what) {
    int64_t N = ht->rows, K = ht->cols;
    char err[128];
    bk_weight_t *w = bk->weight_load(bk, ht, err, sizeof err);
    assert_non_null(w);
    float *eye = calloc((size_t)K * K, sizeof(float)), *out = malloc((size_t)K * N * sizeof(float));
    for (int64_t i = 0; i < K; i++) eye[i * K + i] = 1.0f;
    bk->linear(bk, eye, w, (int)K, out);
    for (int64_t t = 0; t < K; t++)
        for (int64_t n = 0; n < N; n++) assert_true((double)out[t * N + n] == wref[n * K + t]);
    enum { T = 3 };
    trng_t r = {7};
    float *x = malloc((size_t)T * K * sizeof(float));
    double *ref = malloc((size_t)T * N * sizeof(double));
    trng_fill(&r, x, (size_t)T * K, 1.0f);
    for (int t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++) acc += (double)x[t * K + k] * wref[n * K + k];
            ref[t * N + n] = acc;
        }
    bk->linear(bk, x, w, T, out);
    /* K up to 300 products of O(1) terms: abs error <= K * 2^-24 * sum|x w| ~ 1e-5 */
    terr_t e = terr(out, ref, (size_t)T * N, 1.0);
    terr_print(what, e, out, ref);
    assert_true(e.max_abs < 2e-5 * sqrt((double)K));
    bk->weight_free(bk, w);
    free(eye);
    free(out);
    free(x);
    free(ref);
}

static void test_linear(void **state) {
    backend_t *bk = *state;
    trng_t r = {3};
    enum { N = 200, K = 300 };
    double *wref = malloc((size_t)N * K * sizeof(double));
    float *wf = malloc((size_t)N * K * sizeof(float));
    uint16_t *wh = malloc((size_t)N * K * sizeof(uint16_t));
    uint8_t *w8 = malloc((size_t)N * K);
    trng_fill(&r, wf, (size_t)N * K, 0.1f);
    for (int i = 0; i < N * K; i++) wref[i] = wf[i];
    bk_host_tensor_t ht = {.data = wf, .dtype = HS_F32, .rows = N, .cols = K};
    check_linear(bk, &ht, wref, "linear fp32");
    for (int i = 0; i < N * K; i++) {
        wh[i] = hs_f32_to_bf16(wf[i]);
        wref[i] = hs_bf16_to_f32(wh[i]);
    }
    ht.data = wh;
    ht.dtype = HS_BF16;
    check_linear(bk, &ht, wref, "linear bf16");
    for (int i = 0; i < N * K; i++) {
        wh[i] = hs_f32_to_f16(wf[i]);
        wref[i] = hs_f16_to_f32(wh[i]);
    }
    ht.dtype = HS_F16;
    check_linear(bk, &ht, wref, "linear fp16");
    /* fp8 with 128x128 block scales: [ceil(200/128)=2, ceil(300/128)=3] (partial edge blocks) */
    float scale_inv[2 * 3];
    for (int i = 0; i < 6; i++) scale_inv[i] = 0.001f * (float)(i + 1);
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++) {
            uint8_t v = (uint8_t)(r.s = r.s * 6364136223846793005ull + 1442695040888963407ull, r.s >> 56);
            if ((v & 0x7f) == 0x7f) v ^= 1; /* no NaN codes */
            w8[n * K + k] = v;
            /* fp32 storage: the product correctly rounded to fp32 */
            wref[n * K + k] = (double)(float)(e4m3_ref(v) * (double)scale_inv[(n / 128) * 3 + k / 128]);
        }
    ht.data = w8;
    ht.dtype = HS_F8_E4M3;
    ht.scale_inv = scale_inv;
    check_linear(bk, &ht, wref, "linear fp8 (128x128 block scales)");
    /* fp8 without scales is rejected */
    ht.scale_inv = NULL;
    char err[128];
    assert_null(bk->weight_load(bk, &ht, err, sizeof err));
    free(wref);
    free(wf);
    free(wh);
    free(w8);
}

/* linear_n: the projections sharing one input land in the column blocks of one buffer
 * [T, ld], ld = sum N_i; each block equals its own linear bit for bit (the same GEMM,
 * strided), every element is written, and nothing past the buffer is. T covers the
 * one-GEMV-per-row path (1, 2) and the sgemm path; the widths differ (a block written
 * with the wrong stride or offset lands on another's columns). */
static void test_linear_n(void **state) {
    backend_t *bk = *state;
    trng_t r = {11};
    enum { K = 96, NW = 4, TMAX = 9, GUARD = 16 };
    const int Ns[NW] = {160, 32, 3, 5};
    const int Ts[] = {1, 2, 5, TMAX};
    bk_weight_t *w[NW];
    float *x = malloc(sizeof(float) * TMAX * K), *want[NW];
    trng_fill(&r, x, (size_t)TMAX * K, 1.0f);
    char err[128];
    int ld = 0;
    for (int i = 0; i < NW; i++) {
        float *h = malloc(sizeof(float) * (size_t)Ns[i] * K);
        trng_fill(&r, h, (size_t)Ns[i] * K, 0.1f);
        bk_host_tensor_t ht = {.data = h, .dtype = HS_F32, .rows = Ns[i], .cols = K};
        w[i] = bk->weight_load(bk, &ht, err, sizeof err);
        assert_non_null(w[i]);
        free(h);
        want[i] = malloc(sizeof(float) * TMAX * (size_t)Ns[i]);
        ld += Ns[i];
    }
    float *out = malloc(sizeof(float) * ((size_t)TMAX * ld + GUARD));
    for (size_t c = 0; c < sizeof Ts / sizeof Ts[0]; c++) {
        const int T = Ts[c];
        for (int i = 0; i < NW; i++) bk->linear(bk, x, w[i], T, want[i]);
        for (size_t j = 0; j < (size_t)T * ld + GUARD; j++) out[j] = NAN;
        bk->linear_n(bk, x, NW, (const bk_weight_t *const *)w, T, out);
        for (int t = 0; t < T; t++)
            for (int i = 0, o = 0; i < NW; o += Ns[i], i++)
                assert_memory_equal(out + (size_t)t * ld + o, want[i] + (size_t)t * Ns[i], sizeof(float) * Ns[i]);
        for (int j = 0; j < GUARD; j++) assert_true(isnan(out[(size_t)T * ld + j]));
        /* n = 1: the block is the whole row, as linear writes it */
        bk->linear_n(bk, x, 1, (const bk_weight_t *const *)w, T, out);
        assert_memory_equal(out, want[0], sizeof(float) * T * (size_t)Ns[0]);
    }
    for (int i = 0; i < NW; i++) {
        bk->weight_free(bk, w[i]);
        free(want[i]);
    }
    free(out);
    free(x);
}

static void test_simple_ops(void **state) {
    backend_t *bk = *state;
    trng_t r = {11};
    enum { V = 50, H = 16, T = 6, I = 12 };
    float emb[V * H], out[T * H], y[T * H], x[T * H];
    trng_fill(&r, emb, V * H, 1.0f);
    bk_weight_t *we = tw_load(bk, emb, V, H);
    int32_t ids[T] = {3, 0, 49, 3, 17, 8};
    bk->embed(bk, we, ids, T, out);
    for (int t = 0; t < T; t++) assert_memory_equal(out + t * H, emb + ids[t] * H, H * sizeof(float));
    /* add */
    trng_fill(&r, x, T * H, 1.0f);
    memcpy(y, out, sizeof y);
    bk->add(bk, y, x, T, H);
    for (int i = 0; i < T * H; i++) assert_true(y[i] == out[i] + x[i]);
    /* swiglu: gate first */
    float gu[T * 2 * I], sw[T * I];
    double ref[T * V];
    trng_fill(&r, gu, T * 2 * I, 3.0f);
    bk->swiglu(bk, gu, T, I, sw);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < I; i++) {
            double g = gu[t * 2 * I + i], u = gu[t * 2 * I + I + i];
            ref[t * I + i] = g / (1 + exp(-g)) * u;
        }
    terr_t e = terr(sw, ref, T * I, 1e-3);
    terr_print("swiglu", e, sw, ref);
    assert_true(e.max_rel < 1e-5);
    /* gather_rows + logits (tied: lm_head = embed) */
    int32_t tok_start[2] = {0, T}, n_past[1] = {0}, pos[T] = {0, 1, 2, 3, 4, 5}, rows[3] = {5, 0, 2};
    bk_batch_t b = {.n_seqs = 1, .n_tokens = T, .tok_start = tok_start, .n_past = n_past, .positions = pos,
                    .logit_rows = rows, .n_logits = 3};
    bk->set_batch(bk, &b, NULL);
    float g[3 * H], lg[3 * V];
    bk->gather_rows(bk, x, H, g);
    for (int i = 0; i < 3; i++) assert_memory_equal(g + i * H, x + rows[i] * H, H * sizeof(float));
    bk->logits(bk, g, we, 3, lg);
    for (int i = 0; i < 3; i++)
        for (int v = 0; v < V; v++) {
            double acc = 0;
            for (int h = 0; h < H; h++) acc += (double)g[i * H + h] * emb[v * H + h];
            ref[i * V + v] = acc;
        }
    e = terr(lg, ref, 3 * V, 1.0);
    terr_print("logits", e, lg, ref);
    assert_true(e.max_abs < 1e-5);
    bk->weight_free(bk, we);
}

/* MoE against a double reference: router softmax, top-k, renormalise, experts, shared. */
static void run_moe(backend_t *bk, bool norm_topk, bool shared) {
    enum { T = 9, H = 32, E = 8, K = 2, I = 16, IS = 24 };
    trng_t r = {norm_topk * 2 + shared + 100};
    float x[T * H], router[E * H], gu[E][2 * I * H], dn[E][H * I], sgu[2 * IS * H], sdn[H * IS], sg[H], out[T * H];
    double ref[T * H];
    trng_fill(&r, x, T * H, 1.0f);
    trng_fill(&r, router, E * H, 0.5f);
    for (int e = 0; e < E; e++) {
        trng_fill(&r, gu[e], 2 * I * H, 0.3f);
        trng_fill(&r, dn[e], H * I, 0.3f);
    }
    trng_fill(&r, sgu, 2 * IS * H, 0.3f);
    trng_fill(&r, sdn, H * IS, 0.3f);
    trng_fill(&r, sg, H, 0.5f);
    bk_weight_t *wr = tw_load(bk, router, E, H), *wgu[E], *wdn[E];
    for (int e = 0; e < E; e++) {
        wgu[e] = tw_load(bk, gu[e], 2 * I, H);
        wdn[e] = tw_load(bk, dn[e], H, I);
    }
    bk_weight_t *wsgu = tw_load(bk, sgu, 2 * IS, H), *wsdn = tw_load(bk, sdn, H, IS), *wsg = tw_load(bk, sg, 1, H);
    for (int t = 0; t < T; t++) {
        const float *xt = x + t * H;
        double p[E], mx = -1e300, sum = 0;
        for (int e = 0; e < E; e++) {
            p[e] = 0;
            for (int h = 0; h < H; h++) p[e] += (double)xt[h] * router[e * H + h];
            mx = fmax(mx, p[e]);
        }
        for (int e = 0; e < E; e++) sum += (p[e] = exp(p[e] - mx));
        for (int e = 0; e < E; e++) p[e] /= sum;
        int sel[K];
        double wsum = 0;
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int j = 0; j < k; j++) taken |= sel[j] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            sel[k] = best;
            wsum += p[best];
        }
        for (int h = 0; h < H; h++) ref[t * H + h] = 0;
        for (int k = 0; k < K; k++) {
            int e = sel[k];
            double wk = norm_topk ? p[e] / wsum : p[e], act[I];
            for (int i = 0; i < I; i++) {
                double g = 0, u = 0;
                for (int h = 0; h < H; h++) {
                    g += (double)xt[h] * gu[e][i * H + h];
                    u += (double)xt[h] * gu[e][(I + i) * H + h];
                }
                act[i] = g / (1 + exp(-g)) * u;
            }
            for (int h = 0; h < H; h++) {
                double d = 0;
                for (int i = 0; i < I; i++) d += act[i] * dn[e][h * I + i];
                ref[t * H + h] += wk * d;
            }
        }
        if (shared) {
            double act[IS], gate = 0;
            for (int h = 0; h < H; h++) gate += (double)xt[h] * sg[h];
            gate = 1 / (1 + exp(-gate));
            for (int i = 0; i < IS; i++) {
                double g = 0, u = 0;
                for (int h = 0; h < H; h++) {
                    g += (double)xt[h] * sgu[i * H + h];
                    u += (double)xt[h] * sgu[(IS + i) * H + h];
                }
                act[i] = g / (1 + exp(-g)) * u;
            }
            for (int h = 0; h < H; h++) {
                double d = 0;
                for (int i = 0; i < IS; i++) d += act[i] * sdn[h * IS + i];
                ref[t * H + h] += gate * d;
            }
        }
    }
    bk->moe(bk, x, wr, wgu, wdn, E, K, norm_topk, I, shared ? wsgu : NULL, shared ? wsdn : NULL,
            shared ? wsg : NULL, IS, T, H, out);
    terr_t e = terr(out, ref, T * H, 1.0);
    terr_print(norm_topk ? (shared ? "moe norm_topk + shared" : "moe norm_topk") : "moe (no renorm)", e, out, ref);
    assert_true(e.max_abs < 1e-5);
    bk->weight_free(bk, wr);
    for (int e2 = 0; e2 < E; e2++) {
        bk->weight_free(bk, wgu[e2]);
        bk->weight_free(bk, wdn[e2]);
    }
    bk->weight_free(bk, wsgu);
    bk->weight_free(bk, wsdn);
    bk->weight_free(bk, wsg);
}

static void test_moe(void **state) {
    run_moe(*state, true, true);
    run_moe(*state, true, false);
    run_moe(*state, false, true);
}

static void test_pages(void **state) {
    backend_t *bk = *state;
    tpool_t tp;
    tpool_init(&tp, bk, 4, 1, 2, 8, 4, HS_BF16, 0, 0, 0, 0, 0, 0, HS_BF16, HS_F32, 0, 0);
    size_t pb = tp.pool.page_bytes;
    unsigned char *h = malloc(pb), *h2 = malloc(pb);
    for (size_t i = 0; i < pb; i++) h[i] = (unsigned char)(i * 7 + 1);
    bk->page_in(bk, &tp.pool, 2, h);
    bk->page_out(bk, &tp.pool, 2, h2);
    assert_memory_equal(h, h2, pb);
    bk->page_out(bk, &tp.pool, 1, h2); /* untouched page is still zero */
    for (size_t i = 0; i < pb; i++) assert_int_equal(h2[i], 0);
    free(h);
    free(h2);
    tpool_free(&tp, bk);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rmsnorm, cpu_setup, cpu_teardown),
        cmocka_unit_test(test_e4m3),
        cmocka_unit_test_setup_teardown(test_linear, cpu_setup, cpu_teardown),
        cmocka_unit_test_setup_teardown(test_linear_n, cpu_setup, cpu_teardown),
        cmocka_unit_test_setup_teardown(test_simple_ops, cpu_setup, cpu_teardown),
        cmocka_unit_test_setup_teardown(test_moe, cpu_setup, cpu_teardown),
        cmocka_unit_test_setup_teardown(test_pages, cpu_setup, cpu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
