/*
 * sched_harness.h: drives a scheduler + pool + fake model (sched_fake.h) and checks,
 * after every step and update, sched_check (which runs pool_check), that every token
 * event is the oracle's next token, and that each request finishes exactly once.
 * Header-only, for tests/test_sched*.c.
 */
#ifndef HS_TEST_SCHED_HARNESS_H
#define HS_TEST_SCHED_HARNESS_H

#include "sched_fake.h"

#define H_MAX_REQ 512
#define H_MAX_OUT 1024

typedef struct {
    bool used;
    int32_t *prompt;
    int n_prompt;
    int32_t out[H_MAX_OUT];
    int n_out;
    int n_finish;           /* finish events seen (must end at exactly 1) */
    int finish;             /* seq_finish_t */
    bool cancelled;
    int first_step;         /* step of the first schedule, -1 */
} h_req_t;

typedef struct {
    pool_config_t pc;
    sched_config_t sc;
    pool_t *pool;
    sched_t *s;
    fake_mem_t mem;
    h_req_t req[H_MAX_REQ];
    int32_t *new_tokens;
    int32_t *n_new;
    int step;
    int oracle_errors;
    int finish_errors;
    char err[256];
    int64_t initial_capacity;
    bool check_every_step;
    /* Overlapped steps (sched_advance / sched_resolve, k = 0): the forward of step n + 1
     * runs before step n's tokens are resolved; pending tokens are fed from where they
     * were "sampled", as the engine's device would. */
    bool async;
    int32_t *tok_prev, *tok_cur;  /* [max_num_seqs] token of each logit row: last step, this one */
    int32_t *run_ids;             /* [max_num_batched_tokens] the batch's ids, pending ones filled in */
    int32_t lrow[H_MAX_REQ];      /* logit row of each request in the step in flight, -1 */
    int32_t lrow_cur[H_MAX_REQ];
    int n_pending_fed;            /* pending tokens fed (the overlap happened) */
    int n_wasted;                 /* rows run for a request that finished before they were resolved */
} harness_t;

/* Create everything; returns HS_OK or the first error (message in h->err). */
static inline int h_init(harness_t *h, const pool_config_t *pc, const sched_config_t *sc) {
    memset(h, 0, sizeof *h);
    h->pc = *pc;
    h->sc = *sc;
    h->check_every_step = true;
    fake_mem_init(&h->mem, pc);
    h->sc.copy = fake_copy;
    h->sc.copy_user = &h->mem;
    int rc = pool_create(&h->pool, pc, h->err, sizeof h->err);
    if (rc != HS_OK) return rc;
    rc = sched_create(&h->s, &h->sc, h->pool, h->err, sizeof h->err);
    if (rc != HS_OK) return rc;
    h->new_tokens = calloc((size_t)sc->max_num_seqs * (1 + sc->k_spec), sizeof(int32_t));
    h->n_new = calloc((size_t)sc->max_num_seqs, sizeof(int32_t));
    h->initial_capacity = pool_free_capacity(h->pool);
    h->tok_prev = calloc((size_t)sc->max_num_seqs, sizeof(int32_t));
    h->tok_cur = calloc((size_t)sc->max_num_seqs, sizeof(int32_t));
    h->run_ids = calloc((size_t)sc->max_num_batched_tokens, sizeof(int32_t));
    for (int i = 0; i < H_MAX_REQ; i++) h->lrow[i] = -1;
    return HS_OK;
}

static inline void h_free(harness_t *h) {
    sched_destroy(h->s);
    pool_destroy(h->pool);
    fake_mem_free(&h->mem);
    for (int i = 0; i < H_MAX_REQ; i++) free(h->req[i].prompt);
    free(h->new_tokens);
    free(h->n_new);
    free(h->tok_prev);
    free(h->tok_cur);
    free(h->run_ids);
}

/* Submit request id with a prompt derived from (id, seed) of length n (or given). */
static inline int h_submit(harness_t *h, int64_t id, const int32_t *prompt, int n, const sampling_params_t *sp) {
    h_req_t *r = &h->req[id];
    r->used = true;
    r->prompt = realloc(r->prompt, (size_t)n * sizeof(int32_t));
    memcpy(r->prompt, prompt, (size_t)n * sizeof(int32_t));
    r->n_prompt = n;
    r->n_out = 0;
    r->first_step = -1;
    return sched_submit(h->s, id, prompt, n, sp, h->err, sizeof h->err);
}

static inline void h_prompt(int32_t *p, int n, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (int32_t)(x % FAKE_V);
    }
}

static inline void h_check_event(harness_t *h, const sched_event_t *e) {
    h_req_t *r = &h->req[e->id];
    if (e->kind == SCHED_EV_TOKEN) {
        if (r->n_finish) h->finish_errors++;
        if (e->index != r->n_out || r->n_out >= H_MAX_OUT) {
            h->oracle_errors++;
            return;
        }
        int32_t hist[8192];
        int n = r->n_prompt + r->n_out;
        if (n <= 8192) {
            memcpy(hist, r->prompt, (size_t)r->n_prompt * sizeof(int32_t));
            memcpy(hist + r->n_prompt, r->out, (size_t)r->n_out * sizeof(int32_t));
            if (fake_oracle_next(hist, n) != e->token) h->oracle_errors++;
        }
        r->out[r->n_out++] = e->token;
    } else {
        r->n_finish++;
        r->finish = e->finish;
        if (e->n_output != r->n_out) h->finish_errors++;
    }
}

/* Overlapped: step n + 1, its fake forward (pending tokens fed from step n's logit rows),
 * resolve step n, advance step n + 1. */
static inline int h_step_async(harness_t *h, const sched_batch_t **bout) {
    const sched_batch_t *b;
    int rc = sched_step(h->s, &b);
    if (rc != HS_OK) return rc;
    if (bout) *bout = b;
    if (h->check_every_step && sched_check(h->s, h->err, sizeof h->err) != HS_OK) return HS_ERR_STATE;
    const int S = b->n_seqs;
    sched_batch_t run = *b;
    memcpy(h->run_ids, b->token_ids, (size_t)b->n_tokens * sizeof(int32_t));
    for (int r = 0; r < S; r++) {
        if (b->seqs[r] && h->req[b->ids[r]].first_step < 0) h->req[b->ids[r]].first_step = h->step;
        for (int t = b->tok_start[r]; t < b->tok_start[r + 1]; t++) {
            if (h->run_ids[t] != SEQ_TOKEN_PENDING) continue;
            /* only a decode row's one token can be pending, from the step in flight */
            const int lr = h->lrow[b->ids[r]];
            if (r >= b->n_decode || t != b->tok_start[r] || lr < 0) {
                snprintf(h->err, sizeof h->err, "id %lld: pending token at an unexpected place", (long long)b->ids[r]);
                return HS_ERR_STATE;
            }
            h->run_ids[t] = h->tok_prev[lr];
            h->n_pending_fed++;
        }
    }
    run.token_ids = h->run_ids;
    fake_forward(&h->mem, &run, 0, h->new_tokens, h->n_new);
    for (int r = 0; r < S; r++) {
        if (b->logit_start[r + 1] == b->logit_start[r]) continue;
        h->tok_cur[b->logit_start[r]] = h->new_tokens[r];
        h->lrow_cur[b->ids[r]] = b->logit_start[r];
    }
    const sched_event_t *ev;
    int nev;
    int live = 0;
    for (int r = 0; r < S; r++) live += b->seqs[r] != NULL;
    rc = sched_resolve(h->s, h->tok_prev, &ev, &nev);
    if (rc != HS_OK) return rc;
    for (int r = 0; r < S; r++) live -= b->seqs[r] != NULL;
    h->n_wasted += live;
    for (int i = 0; i < nev; i++) h_check_event(h, &ev[i]);
    for (int i = 0; i < H_MAX_REQ; i++) h->lrow[i] = -1;
    if (S > 0) {
        rc = sched_advance(h->s);
        if (rc != HS_OK) return rc;
        for (int r = 0; r < S; r++)
            if (b->logit_start[r + 1] > b->logit_start[r]) h->lrow[b->ids[r]] = h->lrow_cur[b->ids[r]];
        int32_t *t = h->tok_prev;
        h->tok_prev = h->tok_cur;
        h->tok_cur = t;
    }
    if (h->check_every_step && sched_check(h->s, h->err, sizeof h->err) != HS_OK) return HS_ERR_STATE;
    h->step++;
    return S;
}

/* One step + fake forward + update. Returns the batch's row count, or < 0 on error. */
static inline int h_step_ex(harness_t *h, const sched_batch_t **bout) {
    if (h->async) return h_step_async(h, bout);
    const sched_batch_t *b;
    int rc = sched_step(h->s, &b);
    if (rc != HS_OK) return rc;
    if (bout) *bout = b;
    const sched_event_t *ev;
    int nev;
    if (h->check_every_step && sched_check(h->s, h->err, sizeof h->err) != HS_OK) return HS_ERR_STATE;
    for (int r = 0; r < b->n_seqs; r++)
        if (b->seqs[r] && h->req[b->ids[r]].first_step < 0) h->req[b->ids[r]].first_step = h->step;
    int S = b->n_seqs;
    fake_forward(&h->mem, b, h->sc.k_spec, h->new_tokens, h->n_new);
    rc = sched_update(h->s, h->new_tokens, h->n_new, &ev, &nev);
    if (rc != HS_OK) return rc;
    for (int i = 0; i < nev; i++) h_check_event(h, &ev[i]);
    if (h->check_every_step && sched_check(h->s, h->err, sizeof h->err) != HS_OK) return HS_ERR_STATE;
    if (h->sc.k_spec > 0)
        for (int i = 0; i < H_MAX_REQ; i++)
            if (h->req[i].used) fake_set_drafts(h->s, h->sc.k_spec, i);
    h->step++;
    return S;
}
static inline int h_step(harness_t *h) { return h_step_ex(h, NULL); }

/* Step until idle (or max_steps). Returns steps run, or < 0 on error. */
static inline int h_run(harness_t *h, int max_steps) {
    int n = 0;
    while (!sched_idle(h->s) && n < max_steps) {
        int rc = h_step(h);
        if (rc < 0) return rc;
        n++;
    }
    return n;
}

/* All pages back: no live sequence, free + cached capacity as at the start. */
static inline bool h_all_returned(harness_t *h) {
    pool_stats_t ps;
    pool_stats(h->pool, &ps);
    return ps.n_seqs == 0 && ps.n_kv == 0 && ps.n_state == 0 && ps.n_host_used == 0 &&
           pool_free_capacity(h->pool) == h->initial_capacity;
}

static inline void h_pool_default(pool_config_t *pc, layout_kind_t kind, int64_t n_pages, int E, int B) {
    pool_config_default(pc);
    pc->kind = kind;
    pc->n_pages = n_pages;
    pc->block_size = B;
    pc->state_pages = E;
    pc->n_slots = kind == LAYOUT_SLOTS ? 8 : 0;
    pc->max_seqs = 64;
    pc->max_seq_tokens = 4096;
    pc->prefix_caching = false;
}

#endif
