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
    return HS_OK;
}

static inline void h_free(harness_t *h) {
    sched_destroy(h->s);
    pool_destroy(h->pool);
    fake_mem_free(&h->mem);
    for (int i = 0; i < H_MAX_REQ; i++) free(h->req[i].prompt);
    free(h->new_tokens);
    free(h->n_new);
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

/* One step + fake forward + update. Returns the batch's row count, or < 0 on error. */
static inline int h_step_ex(harness_t *h, const sched_batch_t **bout) {
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
