/*
 * Property test for the scheduler over random workloads (deterministic seeds): every
 * layout (paged, slots, coupled), both preemption modes, with and without
 * speculative look-ahead, with overlapped steps (sched_advance / sched_resolve: the
 * next batch runs before the tokens are known), random arrivals, prompt lengths, output limits, eos hits
 * and cancels. After every step and update: sched_check + pool_check. At the end:
 * every request finished exactly once (or was cancelled and emitted nothing after),
 * every token is the fake model's oracle token in order (none lost or duplicated),
 * and every page is back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "sched_harness.h"

static uint64_t rng_next(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}
static int rng_int(uint64_t *x, int lo, int hi) { return lo + (int)(rng_next(x) % (uint64_t)(hi - lo + 1)); }

static uint64_t g_swap, g_recompute, g_cancel, g_stop, g_hits, g_steps, g_fed;

static void run_one(uint64_t seed, layout_kind_t kind, sched_preempt_t mode, int k, int n_req, sched_policy_t pol,
                    bool async) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 12345;
    pool_config_t pc;
    int E = kind == LAYOUT_COUPLED ? 1 + k : rng_int(&x, 1, 3);
    if (kind == LAYOUT_PAGED && rng_int(&x, 0, 2) == 0) E = 0; /* a stateless model: prefix hits usable */
    h_pool_default(&pc, kind, rng_int(&x, 50, 120), E, rng_int(&x, 2, 8));
    pc.n_slots = 6;
    pc.n_host_pages = mode == SCHED_PREEMPT_SWAP ? rng_int(&x, 0, 300) : 0;
    pc.max_seq_tokens = 512;
    pc.prefix_caching = rng_int(&x, 0, 1);
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = 6;
    sc.max_num_batched_tokens = rng_int(&x, 6 * (1 + k), 80);
    sc.k_spec = k;
    sc.preempt = mode;
    sc.policy = pol;
    sc.watermark = rng_int(&x, 0, 1) ? 0.0 : 0.05;
    harness_t *h = calloc(1, sizeof *h);
    int rc = h_init(h, &pc, &sc);
    if (rc != HS_OK) fprintf(stderr, "h_init: %s\n", h->err);
    assert_int_equal(rc, HS_OK);
    h->async = async;

    int submitted = 0, guard = 0;
    int32_t prompt[256];
    int max_tok[H_MAX_REQ];
    while ((submitted < n_req || !sched_idle(h->s)) && guard++ < 20000) {
        /* arrivals: 0..2 per step */
        int arrivals = rng_int(&x, 0, 2);
        for (int a = 0; a < arrivals && submitted < n_req; a++) {
            int np = rng_int(&x, 1, 60);
            /* some prompts share a prefix with an earlier one */
            h_prompt(prompt, np, rng_int(&x, 0, 3) == 0 ? 77 : (uint64_t)submitted + seed * 1000);
            sampling_params_t sp;
            sampling_params_default(&sp);
            sp.max_tokens = max_tok[submitted] = rng_int(&x, 1, 40);
            if (rng_int(&x, 0, 4) == 0) { /* an eos that the model emits with some chance */
                sp.n_eos = 2;
                sp.eos_ids[0] = rng_int(&x, 0, FAKE_V - 1);
                int32_t hist[512];
                memcpy(hist, prompt, (size_t)np * sizeof(int32_t));
                int at = rng_int(&x, 0, 10);
                for (int i = 0; i <= at; i++) hist[np + i] = fake_oracle_next(hist, np + i);
                sp.eos_ids[1] = hist[np + at];
            }
            rc = h_submit(h, submitted, prompt, np, &sp);
            if (rc != HS_OK) fprintf(stderr, "submit: %s\n", h->err);
            assert_int_equal(rc, HS_OK);
            submitted++;
        }
        /* cancels: rarely, any live request */
        if (submitted > 0 && rng_int(&x, 0, 30) == 0) {
            int id = rng_int(&x, 0, submitted - 1);
            if (sched_cancel(h->s, id) == HS_OK) h->req[id].cancelled = true;
        }
        rc = h_step(h);
        if (rc < 0) fprintf(stderr, "seed %llu: step: %d %s\n", (unsigned long long)seed, rc, h->err);
        assert_true(rc >= 0);
    }
    assert_true(sched_idle(h->s));
    if (h->mem.errors) fprintf(stderr, "seed %llu: model: %s\n", (unsigned long long)seed, h->mem.last_error);
    assert_int_equal(h->mem.errors, 0);
    assert_int_equal(h->oracle_errors, 0);
    assert_int_equal(h->finish_errors, 0);
    for (int i = 0; i < n_req; i++) {
        h_req_t *r = &h->req[i];
        if (r->cancelled) {
            assert_int_equal(r->n_finish, 0);
            continue;
        }
        assert_int_equal(r->n_finish, 1);
        /* length: max_tokens, the model length, or it outgrew the whole pool (KV pages
         * it could ever hold: all but the state of one request, or the slot region) */
        int64_t ever = kind == LAYOUT_SLOTS ? pc.n_pages - (int64_t)pc.n_slots * E : pc.n_pages - E;
        if (r->finish == SEQ_FINISH_LENGTH)
            assert_true(r->n_out == max_tok[i] || r->n_prompt + r->n_out >= 512 - k ||
                        r->n_prompt + r->n_out + k > ever * pc.block_size);
        else assert_int_equal(r->finish, SEQ_FINISH_STOP);
        assert_true(r->n_out <= max_tok[i]);
    }
    assert_true(h_all_returned(h));
    if (async) { /* only a stop, unknown until resolved, costs a row; a length end is known */
        int n_stop = 0;
        for (int i = 0; i < n_req; i++) n_stop += !h->req[i].cancelled && h->req[i].finish == SEQ_FINISH_STOP;
        assert_true(h->n_wasted <= n_stop);
    }
    sched_stats_t st;
    sched_stats(h->s, &st);
    pool_stats_t ps;
    pool_stats(h->pool, &ps);
    g_swap += st.n_preempt_swap;
    g_recompute += st.n_preempt_recompute;
    g_hits += ps.hit_tokens;
    g_steps += st.n_steps;
    g_fed += (uint64_t)h->n_pending_fed;
    for (int i = 0; i < n_req; i++) {
        g_cancel += h->req[i].cancelled;
        g_stop += !h->req[i].cancelled && h->req[i].finish == SEQ_FINISH_STOP;
    }
    h_free(h);
    free(h);
}

static void test_random_workloads(void **state) {
    (void)state;
    /* 10 seeds: about 0.3 s, 3 s under ASan. HS_SCHED_PROP_SEEDS=N runs more by hand. */
    const char *env = getenv("HS_SCHED_PROP_SEEDS");
    const int n_seeds = env && atoi(env) > 0 ? atoi(env) : 10;
    for (int seed = 1; seed <= n_seeds; seed++)
        for (int kind = 0; kind < 3; kind++)
            for (int mode = 0; mode < 2; mode++)
                for (int v = 0; v < 3; v++) /* k = 0, k = 2, k = 0 overlapped */
                    run_one((uint64_t)seed, (layout_kind_t)kind, (sched_preempt_t)mode, v == 1 ? 2 : 0, 80,
                            seed % 3 == 0 ? SCHED_POLICY_SEED : SCHED_POLICY_DEFAULT, v == 2);
    fprintf(stderr, "property: %llu steps, %llu swap + %llu recompute preemptions, %llu cancels, %llu stops, "
            "%llu prefix-hit tokens (stateless pools only), %llu pending tokens fed (overlapped)\n",
            (unsigned long long)g_steps, (unsigned long long)g_swap, (unsigned long long)g_recompute,
            (unsigned long long)g_cancel, (unsigned long long)g_stop, (unsigned long long)g_hits,
            (unsigned long long)g_fed);
    assert_true(g_swap > 0 && g_recompute > 0 && g_cancel > 0 && g_stop > 0 && g_hits > 0 && g_fed > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_workloads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
