/*
 * Scenario tests for seq + sched over the real pool, driven by the fake model of
 * sched_fake.h (next token = function of the whole token history as the model sees
 * it through KV pages and state pages; see that file). Every scenario checks, after
 * every step, sched_check + pool_check, and that every emitted token is the oracle's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "sched_harness.h"

static harness_t *new_h(const pool_config_t *pc, const sched_config_t *sc) {
    harness_t *h = calloc(1, sizeof *h);
    int rc = h_init(h, pc, sc);
    if (rc != HS_OK) fprintf(stderr, "h_init: %s\n", h->err);
    assert_int_equal(rc, HS_OK);
    return h;
}
static void del_h(harness_t *h) {
    h_free(h);
    free(h);
}

static sampling_params_t sp_len(int max_tokens) {
    sampling_params_t sp;
    sampling_params_default(&sp);
    sp.max_tokens = max_tokens;
    return sp;
}

static void submit_n(harness_t *h, int64_t id, int n_prompt, int max_tokens) {
    int32_t p[4096];
    h_prompt(p, n_prompt, (uint64_t)id + 1000);
    sampling_params_t sp = sp_len(max_tokens);
    int rc = h_submit(h, id, p, n_prompt, &sp);
    if (rc != HS_OK) fprintf(stderr, "submit: %s\n", h->err);
    assert_int_equal(rc, HS_OK);
}

static void expect_clean_end(harness_t *h, int n_req, int max_tokens) {
    assert_int_equal(h->mem.errors, 0);
    assert_int_equal(h->oracle_errors, 0);
    assert_int_equal(h->finish_errors, 0);
    for (int i = 0; i < n_req; i++) {
        assert_int_equal(h->req[i].n_finish, 1);
        if (max_tokens > 0) {
            assert_int_equal(h->req[i].n_out, max_tokens);
            assert_int_equal(h->req[i].finish, SEQ_FINISH_LENGTH);
        }
    }
    assert_true(h_all_returned(h));
    assert_true(sched_idle(h->s));
}

/* ---- seq ------------------------------------------------------------------------ */

static void test_seq_params(void **state) {
    (void)state;
    sampling_params_t sp;
    sampling_params_default(&sp);
    char err[128];
    assert_int_equal(sampling_params_check(&sp, err, sizeof err), HS_OK);
    sp.top_p = 0;
    assert_int_equal(sampling_params_check(&sp, err, sizeof err), HS_ERR_INVALID);
    assert_non_null(strstr(err, "top_p"));
    sampling_params_default(&sp);
    sp.max_tokens = 0;
    assert_int_equal(sampling_params_check(&sp, err, sizeof err), HS_ERR_INVALID);
    sampling_params_default(&sp);
    sp.temperature = -1;
    assert_int_equal(sampling_params_check(&sp, err, sizeof err), HS_ERR_INVALID);
    int32_t stop[] = {5, 6};
    int32_t lens[] = {0};
    sampling_params_default(&sp);
    sp.stop_tokens = stop;
    sp.stop_lens = lens;
    sp.n_stop = 1;
    assert_int_equal(sampling_params_check(&sp, err, sizeof err), HS_ERR_INVALID);

    /* deep copies: the caller's arrays may go away */
    lens[0] = 2;
    int32_t prompt[3] = {1, 2, 3};
    seq_t *q;
    assert_int_equal(seq_create(&q, 7, prompt, 3, &sp, 2, err, sizeof err), HS_OK);
    stop[0] = 99;
    prompt[0] = 99;
    assert_int_equal(q->tokens[0], 1);
    assert_int_equal(q->sp.stop_tokens[0], 5);
    assert_int_equal(q->n_spec, 0);
    seq_append(q, 5);
    assert_int_equal(seq_check_stop(q, 0), SEQ_FINISH_NONE);
    seq_append(q, 6);
    assert_int_equal(seq_check_stop(q, 0), SEQ_FINISH_STOP);
    /* stop sequences match output only: prompt tail [2, 3] + output does not count */
    seq_destroy(q);
    assert_int_equal(seq_create(&q, 1, prompt, 0, &sp, 0, err, sizeof err), HS_ERR_INVALID);
    assert_int_equal(seq_create(&q, -1, prompt, 3, &sp, 0, err, sizeof err), HS_ERR_INVALID);
    assert_string_equal(seq_finish_name(SEQ_FINISH_LENGTH), "length");
    assert_string_equal(seq_status_name(SEQ_SWAPPED), "swapped");
}

/* ---- admission order, head-of-line --------------------------------------------------- */

static void test_admission_order(void **state) {
    (void)state;
    pool_config_t pc;
    h_pool_default(&pc, LAYOUT_PAGED, 200, 2, 4);
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = 2;
    sc.max_num_batched_tokens = 64;
    harness_t *h = new_h(&pc, &sc);
    for (int i = 0; i < 6; i++) submit_n(h, i, 10, 3);
    assert_true(h_run(h, 1000) > 0);
    expect_clean_end(h, 6, 3);
    /* first schedules happen in submission order, two at a time */
    for (int i = 1; i < 6; i++) assert_true(h->req[i].first_step >= h->req[i - 1].first_step);
    assert_int_equal(h->req[0].first_step, h->req[1].first_step);
    assert_true(h->req[2].first_step > h->req[1].first_step);
    del_h(h);

    /* Head-of-line: a big request at the head blocks a small one behind it. */
    h_pool_default(&pc, LAYOUT_PAGED, 40, 2, 4); /* 38 pages for KV at most */
    sched_config_default(&sc);
    sc.max_num_seqs = 4;
    sc.max_num_batched_tokens = 256;
    sc.watermark = 0;
    h = new_h(&pc, &sc);
    submit_n(h, 0, 60, 20);   /* 15 blocks + 2 state, grows to 20 blocks */
    assert_int_equal(h_step(h), 1);
    submit_n(h, 1, 100, 2);   /* 25 blocks + 2: does not fit next to request 0 */
    submit_n(h, 2, 4, 2);     /* would fit, but is behind the head */
    const sched_batch_t *b;
    assert_int_equal(h_step_ex(h, &b), 1);
    assert_int_equal(b->ids[0], 0);
    assert_int_equal(sched_find(h->s, 2)->status, SEQ_WAITING);
    assert_true(h_run(h, 1000) > 0);
    expect_clean_end(h, 3, 0);
    assert_true(h->req[1].first_step < h->req[2].first_step || h->req[1].first_step == h->req[2].first_step);
    assert_true(h->req[1].first_step > h->req[0].first_step);
    del_h(h);
}

/* ---- chunked prefill ---------------------------------------------------------------- */

static void test_chunk_boundaries(void **state) {
    (void)state;
    pool_config_t pc;
    h_pool_default(&pc, LAYOUT_PAGED, 100, 1, 4);
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = 4;
    sc.max_num_batched_tokens = 16;
    harness_t *h = new_h(&pc, &sc);
    submit_n(h, 0, 40, 4);
    const sched_batch_t *b;
    int expect_chunk[] = {16, 16, 8};
    for (int c = 0; c < 3; c++) {
        assert_int_equal(h_step_ex(h, &b), 1);
        assert_int_equal(b->n_tokens, expect_chunk[c]);
        assert_int_equal(b->n_past[0], 16 * c);
        assert_int_equal(b->n_decode, 0);
        assert_int_equal(b->positions[0], 16 * c);
        assert_memory_equal(b->token_ids, h->req[0].prompt + 16 * c, (size_t)expect_chunk[c] * 4);
        /* logits only for the final chunk's last row */
        assert_int_equal(b->n_logits, c == 2 ? 1 : 0);
        if (c == 2) assert_int_equal(b->logit_rows[0], 7);
    }
    assert_int_equal(h->req[0].n_out, 1);
    /* the first decode runs one token at position 40 */
    assert_int_equal(h_step_ex(h, &b), 1);
    assert_int_equal(b->n_decode, 1);
    assert_int_equal(b->positions[0], 40);
    assert_true(h_run(h, 100) > 0);
    expect_clean_end(h, 1, 4);
    del_h(h);

    /* A prompt that is an exact multiple of the budget; a 1-token prompt. */
    h = new_h(&pc, &sc);
    submit_n(h, 0, 32, 2);
    submit_n(h, 1, 1, 2);
    assert_int_equal(h_step_ex(h, &b), 1); /* 16 of request 0, budget gone */
    assert_int_equal(b->n_tokens, 16);
    assert_int_equal(h_step_ex(h, &b), 1);
    assert_int_equal(h_step_ex(h, &b), 2); /* decode 0 + request 1's single token */
    assert_int_equal(b->n_decode, 1);
    assert_int_equal(b->n_tokens, 2);
    assert_true(h_run(h, 100) > 0);
    expect_clean_end(h, 2, 2);
    del_h(h);
}

/* ---- decode first ------------------------------------------------------------------- */

static void test_decode_first(void **state) {
    (void)state;
    pool_config_t pc;
    h_pool_default(&pc, LAYOUT_PAGED, 200, 1, 4);
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = 4;
    sc.max_num_batched_tokens = 16;
    harness_t *h = new_h(&pc, &sc);
    submit_n(h, 0, 8, 10);
    submit_n(h, 1, 8, 10);
    assert_int_equal(h_step(h), 2); /* both prompts, 16 tokens */
    submit_n(h, 2, 50, 3);
    const sched_batch_t *b;
    assert_int_equal(h_step_ex(h, &b), 3);
    assert_int_equal(b->n_decode, 2);
    assert_int_equal(b->ids[0], 0);
    assert_int_equal(b->ids[1], 1);
    assert_int_equal(b->ids[2], 2);
    assert_int_equal(b->n_decode_tokens, 2);
    assert_int_equal(b->n_prefill_tokens, 14); /* the rest of the budget */
    assert_int_equal(b->tok_start[2], 2);
    assert_true(h_run(h, 200) > 0);
    expect_clean_end(h, 3, 0);
    del_h(h);
}

/* ---- preemption and resume ------------------------------------------------------------ */

static void run_preempt(layout_kind_t kind, sched_preempt_t mode, int k, int64_t n_pages, int n_host) {
    pool_config_t pc;
    h_pool_default(&pc, kind, n_pages, kind == LAYOUT_COUPLED ? 1 + k : 2, 4);
    pc.n_host_pages = n_host;
    pc.n_slots = 6;
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = 6;
    sc.max_num_batched_tokens = 48;
    sc.k_spec = k;
    sc.preempt = mode;
    sc.watermark = 0;
    harness_t *h = new_h(&pc, &sc);
    for (int i = 0; i < 6; i++) submit_n(h, i, 9 + 3 * i, 40);
    assert_true(h_run(h, 5000) > 0);
    sched_stats_t st;
    sched_stats(h->s, &st);
    if (h->mem.errors) fprintf(stderr, "fake model: %s\n", h->mem.last_error);
    expect_clean_end(h, 6, 40);
    if (mode == SCHED_PREEMPT_SWAP) {
        assert_true(st.n_preempt_swap > 0);
        assert_true(h->mem.copies > 0);
    } else {
        assert_true(st.n_preempt_recompute > 0);
        assert_true(st.tokens_recomputed > 0);
    }
    del_h(h);
}

static void test_preempt_recompute(void **state) {
    (void)state;
    run_preempt(LAYOUT_PAGED, SCHED_PREEMPT_RECOMPUTE, 0, 40, 0);
    run_preempt(LAYOUT_SLOTS, SCHED_PREEMPT_RECOMPUTE, 0, 12 + 28, 0);
    run_preempt(LAYOUT_COUPLED, SCHED_PREEMPT_RECOMPUTE, 0, 36, 0);
}

static void test_preempt_swap(void **state) {
    (void)state;
    run_preempt(LAYOUT_PAGED, SCHED_PREEMPT_SWAP, 0, 40, 400);
    run_preempt(LAYOUT_SLOTS, SCHED_PREEMPT_SWAP, 0, 12 + 28, 400);
    run_preempt(LAYOUT_COUPLED, SCHED_PREEMPT_SWAP, 0, 36, 400);
}

/* Swap with a host pool too small falls back to recompute. */
static void test_swap_fallback(void **state) {
    (void)state;
    pool_config_t pc;
    h_pool_default(&pc, LAYOUT_PAGED, 40, 2, 4);
    pc.n_host_pages = 12;
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = 6;
    sc.max_num_batched_tokens = 48;
    sc.preempt = SCHED_PREEMPT_SWAP;
    sc.watermark = 0;
    harness_t *h = new_h(&pc, &sc);
    for (int i = 0; i < 6; i++) submit_n(h, i, 9 + 3 * i, 40);
    assert_true(h_run(h, 5000) > 0);
    sched_stats_t st;
    sched_stats(h->s, &st);
    expect_clean_end(h, 6, 40);
    assert_true(st.n_preempt_recompute > 0);
    del_h(h);
}

/* ---- speculative look-ahead ------------------------------------------------------------ */

static void test_lookahead(void **state) {
    (void)state;
    pool_config_t pc;
    h_pool_default(&pc, LAYOUT_PAGED, 200, 2, 4);
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = 4;
    sc.max_num_batched_tokens = 64;
    sc.k_spec = 3;
    harness_t *h = new_h(&pc, &sc);
    submit_n(h, 0, 7, 30);
    const sched_batch_t *b;
    assert_int_equal(h_step_ex(h, &b), 1); /* prefill: 7 tokens, one logit row */
    assert_int_equal(b->n_logits, 1);
    assert_int_equal(b->n_blocks[0], 2);
    const seq_t *q = sched_find(h->s, 0);
    assert_int_equal(q->n_tokens, 8);
    assert_int_equal(h_step_ex(h, &b), 1); /* decode: last token + 3 drafts */
    assert_int_equal(b->n_decode, 1);
    assert_int_equal(b->n_tokens, 4);
    assert_int_equal(b->n_logits, 4);
    /* the table covers position 7 plus 3 look-ahead slots: 11 tokens -> 3 blocks */
    assert_int_equal(b->n_blocks[0], 3);
    /* some drafts are accepted: fewer decode steps than tokens */
    int steps = h_run(h, 100);
    assert_true(steps > 0 && steps < 28);
    expect_clean_end(h, 1, 30);
    del_h(h);

    /* Placeholders are stripped on preemption, and tokens stay exact across it. */
    for (int mode = 0; mode < 2; mode++) {
        run_preempt(LAYOUT_PAGED, (sched_preempt_t)mode, 2, 44, 400);
        run_preempt(LAYOUT_COUPLED, (sched_preempt_t)mode, 2, 44, 400);
    }
    h_pool_default(&pc, LAYOUT_PAGED, 30, 2, 4);
    sc.max_num_batched_tokens = 64;
    sc.watermark = 0;
    h = new_h(&pc, &sc);
    submit_n(h, 0, 30, 40);
    submit_n(h, 1, 30, 40);
    bool seen = false;
    while (!sched_idle(h->s)) {
        const sched_batch_t *bb;
        assert_true(h_step_ex(h, &bb) >= 0);
        if (bb->n_preempt_recompute > 0) {
            const seq_t *v = sched_find(h->s, 1);
            if (v && v->status == SEQ_WAITING) {
                assert_int_equal(v->n_spec, 0);
                for (int i = 0; i < v->k_spec; i++) assert_int_equal(v->spec[i], v->spec_placeholder);
                seen = true;
            }
        }
    }
    assert_true(seen);
    expect_clean_end(h, 2, 40);
    del_h(h);
}

/* ---- stop conditions -------------------------------------------------------------------- */

static void test_stop_conditions(void **state) {
    (void)state;
    pool_config_t pc;
    h_pool_default(&pc, LAYOUT_PAGED, 200, 1, 4);
    pc.max_seq_tokens = 64;
    /* Learn request 0's natural continuation (20 tokens). */
    int32_t p[12];
    h_prompt(p, 12, 42);
    int32_t cont[40];
    {
        int32_t hist[64];
        memcpy(hist, p, sizeof p);
        for (int i = 0; i < 40; i++) hist[12 + i] = cont[i] = fake_oracle_next(hist, 12 + i);
    }
    for (int v = 0; v < 3; v++) { /* k = 0, k = 2, k = 0 with overlapped steps */
        const int k = v == 1 ? 2 : 0;
        sched_config_t sc;
        sched_config_default(&sc);
        sc.max_num_seqs = 8;
        sc.max_num_batched_tokens = 64;
        sc.k_spec = k;
        harness_t *h = new_h(&pc, &sc);
        h->async = v == 2;
        sampling_params_t sp = sp_len(20);
        /* 0: eos = the 4th output token */
        sp.eos_ids[0] = cont[3];
        sp.n_eos = 1;
        assert_int_equal(h_submit(h, 0, p, 12, &sp), HS_OK);
        /* 1: same eos but ignore_eos: runs to max_tokens */
        sp.ignore_eos = true;
        assert_int_equal(h_submit(h, 1, p, 12, &sp), HS_OK);
        /* 2: stop sequence = output tokens 5..7 */
        sampling_params_t sp2 = sp_len(20);
        int32_t stops[] = {1, 2, cont[5], cont[6], cont[7]};
        int32_t lens[] = {2, 3};
        sp2.stop_tokens = stops;
        sp2.stop_lens = lens;
        sp2.n_stop = 2;
        assert_int_equal(h_submit(h, 2, p, 12, &sp2), HS_OK);
        /* 3: max_tokens */
        sampling_params_t sp3 = sp_len(5);
        assert_int_equal(h_submit(h, 3, p, 12, &sp3), HS_OK);
        /* 4: model length (pool max 64 - k): 12 prompt + outputs up to the limit */
        sampling_params_t sp4 = sp_len(1000);
        assert_int_equal(h_submit(h, 4, p, 12, &sp4), HS_OK);
        assert_true(h_run(h, 500) > 0);
        expect_clean_end(h, 5, 0);
        assert_int_equal(h->req[0].finish, SEQ_FINISH_STOP);
        assert_int_equal(h->req[0].n_out, 4);
        assert_int_equal(h->req[1].finish, SEQ_FINISH_LENGTH);
        assert_int_equal(h->req[1].n_out, 20);
        assert_int_equal(h->req[2].finish, SEQ_FINISH_STOP);
        assert_int_equal(h->req[2].n_out, 8);
        assert_int_equal(h->req[3].finish, SEQ_FINISH_LENGTH);
        assert_int_equal(h->req[3].n_out, 5);
        assert_int_equal(h->req[4].finish, SEQ_FINISH_LENGTH);
        assert_int_equal(h->req[4].n_out, 64 - k - 12);
        /* overlapped: the two stops ran one row each past their end; the length ends none */
        if (h->async) assert_int_equal(h->n_wasted, 2);
        del_h(h);
    }
}

/* A request that outgrows the whole pool ends with "length" instead of stalling. */
static void test_outgrows_pool(void **state) {
    (void)state;
    pool_config_t pc;
    h_pool_default(&pc, LAYOUT_PAGED, 12, 2, 4); /* 10 pages for KV: 40 tokens at most */
    pc.max_seq_tokens = 1000;
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = 2;
    sc.max_num_batched_tokens = 64;
    sc.watermark = 0;
    for (int async = 0; async <= 1; async++) {
        harness_t *h = new_h(&pc, &sc);
        h->async = async;
        submit_n(h, 0, 10, 500);
        assert_true(h_run(h, 200) > 0);
        assert_true(sched_idle(h->s));
        assert_int_equal(h->req[0].n_finish, 1);
        assert_int_equal(h->req[0].finish, SEQ_FINISH_LENGTH);
        assert_int_equal(h->req[0].n_out, 40 - 10 + 1); /* positions 0..39 computed, one more sampled */
        assert_int_equal(h->oracle_errors, 0);
        assert_true(h_all_returned(h));
        del_h(h);
    }
}

/* Overlapped steps: the calls' order is checked, and a batch of the same requests gives
 * the same tokens as with sched_update (the harness checks each against the oracle). */
static void test_overlap_api(void **state) {
    (void)state;
    pool_config_t pc;
    h_pool_default(&pc, LAYOUT_PAGED, 100, 1, 4);
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = 4;
    sc.max_num_batched_tokens = 32;
    harness_t *h = new_h(&pc, &sc);
    assert_int_equal(sched_advance(h->s), HS_ERR_STATE); /* no batch */
    submit_n(h, 0, 6, 3);
    submit_n(h, 1, 9, 5);
    const sched_batch_t *b;
    assert_int_equal(sched_step(h->s, &b), HS_OK);
    assert_int_equal(b->n_logits, 2);
    assert_int_equal(sched_advance(h->s), HS_OK);
    assert_int_equal(sched_advance(h->s), HS_ERR_STATE); /* twice */
    const seq_t *q = sched_find(h->s, 0);
    assert_true(seq_pending(q));
    assert_int_equal(q->tokens[q->n_tokens - 1], SEQ_TOKEN_PENDING);
    /* the next batch runs both pending tokens */
    assert_int_equal(sched_step(h->s, &b), HS_OK);
    assert_int_equal(b->n_decode, 2);
    assert_int_equal(b->token_ids[0], SEQ_TOKEN_PENDING);
    assert_int_equal(b->token_ids[1], SEQ_TOKEN_PENDING);
    int32_t tok[2] = {7, 8}, nn[2] = {1, 1};
    assert_int_equal(sched_update(h->s, tok, nn, NULL, NULL), HS_ERR_STATE); /* rows in flight */
    const sched_event_t *ev;
    int nev;
    assert_int_equal(sched_resolve(h->s, NULL, &ev, &nev), HS_ERR_INVALID);
    assert_int_equal(sched_resolve(h->s, tok, &ev, &nev), HS_OK);
    assert_int_equal(nev, 2);
    assert_int_equal(ev[0].kind, SCHED_EV_TOKEN);
    assert_int_equal(ev[0].token, 7);
    assert_int_equal(ev[0].index, 0);
    assert_int_equal(ev[1].token, 8);
    assert_int_equal(q->tokens[q->n_tokens - 1], 7);
    assert_false(seq_pending(q));
    assert_int_equal(sched_check(h->s, h->err, sizeof h->err), HS_OK);
    assert_int_equal(sched_resolve(h->s, NULL, &ev, &nev), HS_OK); /* nothing in flight */
    del_h(h);
    /* k > 0 has no overlapped mode */
    sc.k_spec = 1;
    h = new_h(&pc, &sc);
    submit_n(h, 0, 6, 3);
    assert_int_equal(sched_step(h->s, &b), HS_OK);
    assert_int_equal(sched_advance(h->s), HS_ERR_STATE);
    del_h(h);
    /* the same workload, both ways: identical outputs */
    for (int async = 0; async <= 1; async++) {
        sc.k_spec = 0;
        h = new_h(&pc, &sc);
        h->async = async;
        for (int i = 0; i < 10; i++) submit_n(h, i, 3 + 5 * i, 4 + i);
        assert_true(h_run(h, 500) > 0);
        for (int i = 0; i < 10; i++) assert_int_equal(h->req[i].n_out, 4 + i);
        expect_clean_end(h, 10, 0);
        if (async) assert_true(h->n_pending_fed > 10);
        del_h(h);
    }
}

/* ---- prefix caching and the hybrid rule --------------------------------------------------- */

static void run_prefix(int E, bool kv_only_hits, int *hit_tokens_seen, int *model_errors) {
    pool_config_t pc;
    h_pool_default(&pc, LAYOUT_PAGED, 200, E, 4);
    pc.prefix_caching = true;
    pc.kv_only_hits = kv_only_hits;
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = 4;
    sc.max_num_batched_tokens = 64;
    if (E > 0 && kv_only_hits) {
        /* refused unless explicitly allowed */
        pool_t *pool;
        sched_t *s;
        char err[256];
        assert_int_equal(pool_create(&pool, &pc, err, sizeof err), HS_OK);
        assert_int_equal(sched_create(&s, &sc, pool, err, sizeof err), HS_ERR_INVALID);
        assert_non_null(strstr(err, "KV-only"));
        pool_destroy(pool);
        sc.allow_kv_only_hits = true;
    }
    harness_t *h = new_h(&pc, &sc);
    int32_t p[22];
    h_prompt(p, 22, 7);
    sampling_params_t sp = sp_len(6);
    assert_int_equal(h_submit(h, 0, p, 22, &sp), HS_OK);
    assert_true(h_run(h, 100) > 0);
    assert_int_equal(h_submit(h, 1, p, 22, &sp), HS_OK);
    const sched_batch_t *b;
    assert_int_equal(h_step_ex(h, &b), 1);
    *hit_tokens_seen = b->n_past[0];
    assert_true(h_run(h, 100) > 0);
    *model_errors = h->mem.errors;
    if (!kv_only_hits || E == 0) expect_clean_end(h, 2, 6);
    pool_stats_t ps;
    pool_stats(h->pool, &ps);
    if (E > 0 && !kv_only_hits) assert_true(ps.refused_tokens > 0);
    del_h(h);
}

static void test_hybrid_prefix(void **state) {
    (void)state;
    int hit, errs;
    /* stateless model: the second prompt skips its 5 full cached blocks (20 tokens) */
    run_prefix(0, false, &hit, &errs);
    assert_int_equal(hit, 20);
    assert_int_equal(errs, 0);
    /* hybrid model, no state checkpoints: the hit is refused, output is right */
    run_prefix(2, false, &hit, &errs);
    assert_int_equal(hit, 0);
    assert_int_equal(errs, 0);
    /* ATOM's bug (seed-system §2.9) when KV-only hits are forced on: the recurrent
     * state at the hit is unknown and the fake model sees it. */
    run_prefix(2, true, &hit, &errs);
    assert_int_equal(hit, 20);
    assert_true(errs > 0);
}

/* ---- cancel ------------------------------------------------------------------------------- */

static void test_cancel(void **state) {
    (void)state;
    pool_config_t pc;
    h_pool_default(&pc, LAYOUT_PAGED, 30, 2, 4);
    pc.n_host_pages = 200;
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = 4;
    sc.max_num_batched_tokens = 32;
    sc.preempt = SCHED_PREEMPT_SWAP;
    sc.watermark = 0;
    harness_t *h = new_h(&pc, &sc);
    submit_n(h, 0, 40, 30); /* chunked prefill over 2 steps */
    submit_n(h, 1, 8, 30);
    submit_n(h, 2, 8, 30);
    submit_n(h, 3, 8, 30);
    /* waiting */
    assert_int_equal(sched_cancel(h->s, 3), HS_OK);
    assert_null(sched_find(h->s, 3));
    assert_int_equal(sched_cancel(h->s, 3), HS_ERR_NOT_FOUND);
    /* running mid-prefill */
    assert_int_equal(h_step(h), 1);
    assert_int_equal(sched_find(h->s, 0)->status, SEQ_RUNNING);
    assert_true(sched_find(h->s, 0)->n_computed < 40);
    assert_int_equal(sched_cancel(h->s, 0), HS_OK);
    assert_int_equal(sched_check(h->s, h->err, sizeof h->err), HS_OK);
    /* in flight: between step and update */
    const sched_batch_t *b;
    assert_int_equal(sched_step(h->s, &b), HS_OK);
    assert_int_equal(b->n_seqs, 2);
    assert_int_equal(sched_cancel(h->s, 1), HS_OK);
    assert_null(b->seqs[0]);
    fake_forward(&h->mem, b, 0, h->new_tokens, h->n_new);
    const sched_event_t *ev;
    int nev;
    assert_int_equal(sched_update(h->s, h->new_tokens, h->n_new, &ev, &nev), HS_OK);
    for (int i = 0; i < nev; i++) {
        assert_int_not_equal(ev[i].id, 1);
        h_check_event(h, &ev[i]);
    }
    assert_int_equal(sched_check(h->s, h->err, sizeof h->err), HS_OK);
    /* swapped: fill the pool so request 2 gets swapped out by a newcomer's growth */
    submit_n(h, 4, 8, 60);
    submit_n(h, 5, 8, 60);
    int64_t swapped_id = -1;
    for (int i = 0; i < 200 && swapped_id < 0 && !sched_idle(h->s); i++) {
        assert_true(h_step(h) >= 0);
        for (int id = 2; id <= 5; id++) {
            const seq_t *q = sched_find(h->s, id);
            if (q && q->status == SEQ_SWAPPED) swapped_id = id;
        }
    }
    assert_true(swapped_id >= 0);
    assert_int_equal(sched_cancel(h->s, swapped_id), HS_OK);
    assert_int_equal(sched_check(h->s, h->err, sizeof h->err), HS_OK);
    /* decode-ready running ones */
    for (int id = 2; id <= 5; id++)
        if (sched_find(h->s, id) && sched_find(h->s, id)->status == SEQ_RUNNING) {
            assert_int_equal(sched_cancel(h->s, id), HS_OK);
            break;
        }
    assert_true(h_run(h, 1000) >= 0);
    for (int id = 2; id <= 5; id++) {
        const seq_t *q = sched_find(h->s, id);
        if (q) assert_int_equal(sched_cancel(h->s, id), HS_OK);
    }
    assert_int_equal(h->mem.errors, 0);
    assert_int_equal(h->oracle_errors, 0);
    assert_true(h_all_returned(h));
    del_h(h);
}

/* ---- submit errors, update errors, bk batch ----------------------------------------------------- */

static void test_errors(void **state) {
    (void)state;
    pool_config_t pc;
    h_pool_default(&pc, LAYOUT_PAGED, 20, 2, 4);
    pc.max_seq_tokens = 200;
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = 4;
    sc.max_num_batched_tokens = 3; /* < max_num_seqs: refused */
    pool_t *pool;
    char err[256];
    assert_int_equal(pool_create(&pool, &pc, err, sizeof err), HS_OK);
    sched_t *s;
    assert_int_equal(sched_create(&s, &sc, pool, err, sizeof err), HS_ERR_INVALID);
    assert_non_null(strstr(err, "max_num_batched_tokens"));
    sc.max_num_batched_tokens = 64;
    sc.max_num_seqs = 100; /* more than the pool's records */
    assert_int_equal(sched_create(&s, &sc, pool, err, sizeof err), HS_ERR_INVALID);
    sc.max_num_seqs = 4;
    assert_int_equal(sched_create(&s, &sc, pool, err, sizeof err), HS_OK);
    int32_t p[300] = {0};
    sampling_params_t sp = sp_len(4);
    assert_int_equal(sched_submit(s, 1, p, 100, &sp, err, sizeof err), HS_ERR_NO_MEMORY); /* 25 blocks > 18 */
    assert_int_equal(sched_submit(s, 1, p, 200, &sp, err, sizeof err), HS_ERR_INVALID);   /* > max_model_len */
    assert_int_equal(sched_submit(s, 1, p, 10, &sp, err, sizeof err), HS_OK);
    assert_int_equal(sched_submit(s, 1, p, 10, &sp, err, sizeof err), HS_ERR_STATE);     /* duplicate id */
    sp.top_k = -1;
    assert_int_equal(sched_submit(s, 2, p, 10, &sp, err, sizeof err), HS_ERR_INVALID);
    const sched_batch_t *b;
    assert_int_equal(sched_step(s, &b), HS_OK);
    assert_int_equal(b->n_seqs, 1);
    assert_int_equal(sched_step(s, &b), HS_ERR_STATE); /* update first */
    int32_t nt[4] = {5, 0, 0, 0}, nn[4] = {2, 0, 0, 0};
    assert_int_equal(sched_update(s, nt, nn, NULL, NULL), HS_ERR_INVALID); /* 2 tokens for a prefill row */
    /* the bk batch */
    int mb = sched_batch_max_blocks(b);
    assert_int_equal(mb, 3);
    int32_t bt[3 * 4], stp[2 * 4];
    bk_batch_t bk;
    sched_batch_to_bk(b, bt, 4, stp, &bk);
    assert_int_equal(bk.n_seqs, 1);
    assert_int_equal(bk.n_tokens, 10);
    assert_int_equal(bk.n_state_pages, 2);
    assert_int_equal(bk.block_tables[3], -1);
    assert_int_equal(bk.n_logits, 1);
    assert_int_equal(bk.logit_rows[0], 9);
    nn[0] = 1;
    const sched_event_t *ev;
    int nev;
    assert_int_equal(sched_update(s, nt, nn, &ev, &nev), HS_OK);
    assert_int_equal(nev, 1);
    assert_int_equal(ev[0].kind, SCHED_EV_TOKEN);
    assert_int_equal(ev[0].token, 5);
    assert_int_equal(ev[0].index, 0);
    assert_int_equal(sched_update(s, nt, nn, NULL, NULL), HS_ERR_STATE);
    assert_int_equal(sched_check(s, err, sizeof err), HS_OK);
    sched_destroy(s); /* frees the live request's pages */
    pool_stats_t ps;
    pool_stats(pool, &ps);
    assert_int_equal(ps.n_seqs, 0);
    pool_destroy(pool);
}

/* ---- determinism --------------------------------------------------------------------------- */

static uint64_t run_fingerprint(void) {
    pool_config_t pc;
    h_pool_default(&pc, LAYOUT_PAGED, 60, 2, 4);
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = 6;
    sc.max_num_batched_tokens = 24;
    sc.watermark = 0;
    harness_t *h = new_h(&pc, &sc);
    for (int i = 0; i < 10; i++) submit_n(h, i, 5 + 7 * i % 23, 12 + i);
    uint64_t fp = 0;
    while (!sched_idle(h->s)) {
        const sched_batch_t *b;
        assert_true(h_step_ex(h, &b) >= 0);
        for (int r = 0; r < b->n_seqs; r++) {
            fp = fake_fold(fp, (int32_t)b->ids[r]);
            fp = fake_fold(fp, b->n_past[r]);
            fp = fake_fold(fp, b->tok_start[r + 1]);
            for (int i = 0; i < b->n_blocks[r]; i++) fp = fake_fold(fp, b->block_tables[r][i]);
        }
    }
    expect_clean_end(h, 10, 0);
    del_h(h);
    return fp;
}

static void test_deterministic(void **state) {
    (void)state;
    assert_true(run_fingerprint() == run_fingerprint());
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seq_params),
        cmocka_unit_test(test_admission_order),
        cmocka_unit_test(test_chunk_boundaries),
        cmocka_unit_test(test_decode_first),
        cmocka_unit_test(test_preempt_recompute),
        cmocka_unit_test(test_preempt_swap),
        cmocka_unit_test(test_swap_fallback),
        cmocka_unit_test(test_lookahead),
        cmocka_unit_test(test_stop_conditions),
        cmocka_unit_test(test_outgrows_pool),
        cmocka_unit_test(test_hybrid_prefix),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_overlap_api),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
