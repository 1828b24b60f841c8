/*
 * bk->sample on the CPU backend (src/cpu/cpu_sample.c) and the engine's use of it:
 *   - every row equals smp_sample on its logits row (rows scattered in the buffer,
 *     mixed parameters, top-K logprobs), greedy and top-k 1 give the argmax;
 *   - the draw is counter-based: the engine's sampled tokens (temperature, top-k,
 *     top-p, min-p, fixed seed) are the same alone, batched with other requests and
 *     preempted by recompute or swap, and a request's tokens do not depend on when
 *     it was submitted; another seed gives other tokens.
 * Model for the engine tests: the tiny Qwen3.5 text fixture, GEMMs row by row
 * (HS_CPU_BATCH_INVARIANT=1) so that logits are bit-identical across schedules.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "hyserve.h"
#include "sample.h"
#include "util.h"

#define MODEL HYSERVE_SOURCE_DIR "/tests/fixtures/golden/qwen3_5_text"

static uint64_t g_x = 88172645463325252ull;
static double urand(void) {
    g_x ^= g_x << 13;
    g_x ^= g_x >> 7;
    g_x ^= g_x << 17;
    return (double)(g_x >> 11) * 0x1.0p-53;
}

static void test_op_matches_reference(void **state) {
    (void)state;
    enum { V = 3000, NR = 6, N = 40 };
    backend_t *bk = backend_cpu_create(1);
    assert_non_null(bk);
    assert_non_null(bk->sample);
    float *logits = bk->alloc(bk, sizeof(float) * NR * V);
    float *h = malloc(sizeof(float) * NR * V);
    for (int i = 0; i < NR * V; i++) h[i] = (float)(3 * (urand() - 0.5) + (urand() < 0.01 ? 6 : 0));
    for (int i = 0; i < 50; i++) h[(int)(urand() * NR * V)] = 1.25f; /* exact ties */
    bk->upload(bk, logits, h, sizeof(float) * NR * V);
    bk_sample_row_t rows[N];
    bk_sample_out_t out[N];
    for (int r = 0; r < N; r++) {
        bk_sample_row_t *q = &rows[r];
        memset(q, 0, sizeof *q);
        q->row = (int32_t)(urand() * NR);
        q->temperature = r % 5 == 0 ? 0.f : (float)(0.2 + urand());
        q->top_k = r % 3 == 0 ? 0 : r % 7 == 1 ? 1 : (int)(urand() * 100);
        q->top_p = r % 2 ? 1.f : (float)(0.3 + 0.7 * urand());
        q->min_p = r % 4 == 3 ? 0.1f : 0.f;
        q->n_top = r % 3 == 2 ? 1 + r % HS_MAX_TOP_LOGPROBS : 0;
        q->seed = 100 + (uint64_t)r;
        q->step = (uint64_t)(urand() * 1000);
    }
    memset(out, 0xff, sizeof out);
    bk->sample(bk, logits, N, V, rows, out);
    smp_scratch_t scr;
    smp_scratch_init(&scr, V);
    for (int r = 0; r < N; r++) {
        const bk_sample_row_t *q = &rows[r];
        const float *x = h + (size_t)q->row * V;
        hs_sampling_t sp;
        hs_sampling_default(&sp);
        sp.temperature = q->temperature, sp.top_k = q->top_k, sp.top_p = q->top_p, sp.min_p = q->min_p;
        sp.top_logprobs = q->n_top;
        smp_result_t ref;
        smp_sample(x, V, &sp, q->seed, q->step, &scr, &ref);
        assert_int_equal(out[r].token, ref.token);
        assert_true(out[r].logprob == ref.logprob);
        assert_int_equal(out[r].n_top, q->n_top);
        for (int j = 0; j < q->n_top; j++) {
            assert_int_equal(out[r].top_ids[j], ref.top_ids[j]);
            assert_true(out[r].top_logprobs[j] == ref.top_logprobs[j]);
        }
        if (q->temperature == 0 || q->top_k == 1) {
            int a = 0;
            for (int i = 1; i < V; i++)
                if (x[i] > x[a]) a = i;
            assert_int_equal(out[r].token, a);
        }
    }
    smp_scratch_free(&scr);
    free(h);
    bk->free(bk, logits);
    bk->destroy(bk);
}

/* ---- engine: counter-based draws are schedule-invariant ---------------------------- */

#define NREQ 6
#define NGEN 24

typedef struct {
    int n;
    int32_t tok[NGEN];
} gen_t;

static void cfg_of(hs_engine_config_t *c) {
    hs_engine_config_default(c);
    c->model = MODEL;
    c->n_threads = 1;
    c->pool_bytes = 64u << 20;
    c->max_num_seqs = 16;
    c->max_num_batched_tokens = 512;
    c->state_dtype = "f32";
}

/* Run requests `which` (submitted in order, the first `delay` steps after the rest
 * when delay > 0) with seed base + request number. */
static void gen(const hs_engine_config_t *cfg, const int *which, int n, uint64_t seed_base, int delay, gen_t *out,
                int64_t *preempts) {
    hs_engine_t *e;
    char err[512];
    if (hs_engine_create(cfg, &e, err, sizeof err)) fail_msg("%s", err);
    uint64_t ids[NREQ];
    int submitted = 0, steps = 0;
    memset(out, 0, sizeof(gen_t) * (size_t)n);
    for (;;) {
        while (submitted < n && (submitted == 0 || steps >= delay)) {
            const int r = which[submitted];
            int32_t p[64];
            const int len = 3 + 11 * r;
            for (int i = 0; i < len; i++) p[i] = 2 + (int32_t)((r * 131 + i * 17) % 400);
            hs_sampling_t sp;
            hs_sampling_default(&sp);
            sp.temperature = 0.9f;
            sp.top_k = r % 2 ? 40 : 0;
            sp.top_p = r % 3 ? 0.9f : 1.f;
            sp.min_p = r == 4 ? 0.05f : 0.f;
            sp.top_logprobs = r == 5 ? 3 : 0;
            sp.max_tokens = NGEN;
            sp.ignore_eos = true;
            sp.has_seed = true;
            sp.seed = seed_base + (uint64_t)r;
            if (hs_engine_submit(e, p, len, &sp, &ids[submitted], err, sizeof err)) fail_msg("%s", err);
            submitted++;
        }
        if (!hs_engine_has_work(e) && submitted == n) break;
        assert_int_equal(hs_engine_step(e), HS_OK);
        steps++;
        hs_event_t ev;
        while (hs_engine_poll(e, &ev)) {
            int i = 0;
            while (i < submitted && ids[i] != ev.id) i++;
            assert_true(i < submitted);
            if (ev.token >= 0) {
                assert_true(out[i].n < NGEN);
                out[i].tok[out[i].n++] = ev.token;
            }
        }
        assert_true(steps < 100000);
    }
    hs_stats_t st;
    hs_engine_stats(e, &st);
    if (preempts) *preempts = st.preemptions;
    hs_engine_destroy(e);
}

static void test_engine_seeded_invariance(void **state) {
    (void)state;
    hs_engine_config_t c;
    cfg_of(&c);
    gen_t alone[NREQ];
    for (int r = 0; r < NREQ; r++) gen(&c, &r, 1, 500, 0, &alone[r], NULL);
    int all[NREQ] = {0, 1, 2, 3, 4, 5};
    gen_t o[NREQ];
    gen(&c, all, NREQ, 500, 0, o, NULL);
    for (int r = 0; r < NREQ; r++) {
        assert_int_equal(alone[r].n, NGEN);
        assert_memory_equal(alone[r].tok, o[r].tok, sizeof o[r].tok);
    }
    /* request 0 first, the rest 5 steps later: other batches, same tokens */
    int rev[NREQ] = {5, 4, 3, 2, 1, 0};
    gen(&c, rev, NREQ, 500, 5, o, NULL);
    for (int i = 0; i < NREQ; i++) assert_memory_equal(alone[rev[i]].tok, o[i].tok, sizeof o[i].tok);
    /* preempted by recompute and by swap */
    for (int mode = 0; mode < 2; mode++) {
        hs_engine_config_t p = c;
        p.pool_bytes = 120 * 1024;
        p.preempt_mode = mode;
        p.swap_bytes = mode == 1 ? 8u << 20 : 0;
        int64_t pre = 0;
        gen(&p, all, NREQ, 500, 0, o, &pre);
        printf("preempt mode %s: %lld preemptions\n", mode ? "swap" : "recompute", (long long)pre);
        assert_true(pre > 0);
        for (int r = 0; r < NREQ; r++) assert_memory_equal(alone[r].tok, o[r].tok, sizeof o[r].tok);
    }
    /* another seed: other tokens (the fixture's distributions are far from one-hot) */
    gen(&c, all, NREQ, 9000, 0, o, NULL);
    int differ = 0;
    for (int r = 0; r < NREQ; r++) differ += memcmp(alone[r].tok, o[r].tok, sizeof o[r].tok) != 0;
    assert_true(differ >= NREQ / 2);
}

int main(void) {
    setenv("HS_CPU_BATCH_INVARIANT", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_op_matches_reference),
        cmocka_unit_test(test_engine_seeded_invariance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
