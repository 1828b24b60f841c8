/* Unit tests for sample: greedy, filters, counter-based seeded draws, frequencies, logprobs. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "sample.h"
#include "util.h"

static hs_sampling_t params(float t, float top_p, int top_k, float min_p) {
    hs_sampling_t sp;
    hs_sampling_default(&sp);
    sp.temperature = t;
    sp.top_p = top_p;
    sp.top_k = top_k;
    sp.min_p = min_p;
    return sp;
}

static void test_greedy_and_logprobs(void **state) {
    (void)state;
    float logits[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, -3.0f};
    smp_scratch_t scr;
    smp_scratch_init(&scr, 6);
    hs_sampling_t sp = params(0, 1, 0, 0);
    sp.top_logprobs = 3;
    smp_result_t r;
    smp_sample(logits, 6, &sp, 1, 0, &scr, &r);
    assert_int_equal(r.token, 1); /* tie between 1 and 3: lowest id */
    double z = 0;
    for (int i = 0; i < 6; i++) z += exp((double)logits[i]);
    assert_true(fabs(r.logprob - (2.0 - log(z))) < 1e-6);
    assert_int_equal(r.n_top, 3);
    assert_int_equal(r.top_ids[0], 1);
    assert_int_equal(r.top_ids[1], 3);
    assert_int_equal(r.top_ids[2], 4);
    assert_true(fabs(r.top_logprobs[2] - (1.0 - log(z))) < 1e-6);
    smp_scratch_free(&scr);
}

/* Filters that leave one candidate make sampling greedy. */
static void test_filters_collapse(void **state) {
    (void)state;
    float logits[5] = {1.0f, 3.0f, 2.9f, -1.0f, 0.0f};
    smp_scratch_t scr;
    smp_scratch_init(&scr, 5);
    smp_result_t r;
    int seen[5] = {0};
    for (int i = 0; i < 200; i++) {
        hs_sampling_t a = params(1.0f, 1, 1, 0), b = params(1.0f, 1e-3f, 0, 0), c = params(1.0f, 1, 0, 0.99f);
        smp_sample(logits, 5, &a, 7, (uint64_t)i, &scr, &r);
        assert_int_equal(r.token, 1);
        smp_sample(logits, 5, &b, 7, (uint64_t)i, &scr, &r);
        assert_int_equal(r.token, 1);
        smp_sample(logits, 5, &c, 7, (uint64_t)i, &scr, &r);
        assert_int_equal(r.token, 1);
        /* top-k 2 only ever yields 1 or 2 (and both show up) */
        hs_sampling_t d = params(1.0f, 1, 2, 0);
        smp_sample(logits, 5, &d, 7, (uint64_t)i, &scr, &r);
        assert_true(r.token == 1 || r.token == 2);
        seen[r.token]++;
        /* min-p 0.5: p(2.9) / p(3.0) = 0.905 stays, the rest (<= 0.135) goes */
        hs_sampling_t m = params(1.0f, 1, 0, 0.5f);
        smp_sample(logits, 5, &m, 7, (uint64_t)i, &scr, &r);
        assert_true(r.token == 1 || r.token == 2);
    }
    assert_true(seen[1] > 50 && seen[2] > 50);
    smp_scratch_free(&scr);
}

/* Frequencies follow softmax(logits / T) (and renormalised top-p mass). */
static void test_frequencies(void **state) {
    (void)state;
    float logits[4] = {0.0f, 1.0f, 2.0f, -0.5f};
    const float T = 0.7f;
    double p[4], z = 0;
    for (int i = 0; i < 4; i++) z += p[i] = exp(logits[i] / T);
    for (int i = 0; i < 4; i++) p[i] /= z;
    smp_scratch_t scr;
    smp_scratch_init(&scr, 4);
    int count[4] = {0}, N = 200000;
    hs_sampling_t sp = params(T, 1, 0, 0);
    smp_result_t r;
    for (int i = 0; i < N; i++) { /* one seed, steps 0..N-1: the stream of one request */
        smp_sample(logits, 4, &sp, 12345, (uint64_t)i, &scr, &r);
        count[r.token]++;
    }
    for (int i = 0; i < 4; i++) {
        double sd = sqrt(p[i] * (1 - p[i]) / N);
        assert_true(fabs((double)count[i] / N - p[i]) < 5 * sd); /* 5 sigma: a real failure, not noise */
    }
    /* top_p 0.8: tokens 2 (p~.75) and 1 (p~.18) cover .8; 0 and 3 never drawn. */
    memset(count, 0, sizeof count);
    sp.top_p = 0.8f;
    for (int i = 0; i < 20000; i++) { /* many seeds, step 0 */
        smp_sample(logits, 4, &sp, 1000 + (uint64_t)i, 0, &scr, &r);
        count[r.token]++;
    }
    assert_int_equal(count[0] + count[3], 0);
    double q2 = p[2] / (p[1] + p[2]);
    assert_true(fabs((double)count[2] / 20000 - q2) < 5 * sqrt(q2 * (1 - q2) / 20000));
    smp_scratch_free(&scr);
}

static void test_seed_determinism(void **state) {
    (void)state;
    enum { V = 1000 };
    static float logits[V];
    for (int i = 0; i < V; i++) logits[i] = (float)sin(i * 0.37) * 3;
    smp_scratch_t scr;
    smp_scratch_init(&scr, V);
    hs_sampling_t sp = params(1.0f, 0.95f, 50, 0.01f);
    int32_t a[64], b[64], c[64];
    for (int run = 0; run < 2; run++)
        for (int i = 0; i < 64; i++) {
            smp_result_t r;
            /* run 1 visits the steps backwards: a draw depends on (seed, step) only */
            const int step = run ? 63 - i : i;
            smp_sample(logits, V, &sp, 42, (uint64_t)step, &scr, &r);
            (run ? b : a)[step] = r.token;
        }
    assert_memory_equal(a, b, sizeof a);
    int differ = 0, distinct = 0;
    for (int i = 0; i < 64; i++) {
        smp_result_t r;
        smp_sample(logits, V, &sp, 43, (uint64_t)i, &scr, &r);
        c[i] = r.token;
        differ += c[i] != a[i];
        distinct += i > 0 && a[i] != a[i - 1];
    }
    assert_true(differ > 16);   /* another seed, another stream */
    assert_true(distinct > 16); /* steps of one seed are not one draw repeated */
    smp_scratch_free(&scr);
}

static void test_validate(void **state) {
    (void)state;
    char err[128];
    hs_sampling_t sp = params(1, 1, 0, 0);
    assert_int_equal(smp_validate(&sp, err, sizeof err), HS_OK);
    sp.top_p = 0;
    assert_int_equal(smp_validate(&sp, err, sizeof err), HS_ERR_INVALID);
    sp = params(-1, 1, 0, 0);
    assert_int_equal(smp_validate(&sp, err, sizeof err), HS_ERR_INVALID);
    sp = params(1, 1, 0, 0);
    sp.max_tokens = 0;
    assert_int_equal(smp_validate(&sp, err, sizeof err), HS_ERR_INVALID);
    assert_non_null(strstr(err, "max_tokens"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_and_logprobs), cmocka_unit_test(test_filters_collapse),
        cmocka_unit_test(test_frequencies), cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_validate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
