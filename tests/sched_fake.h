/*
 * sched_fake.h: a deterministic fake model and fake device memory for the scheduler
 * tests (a test double; header-only, static functions, included by tests/test_sched*.c).
 *
 * Fake memory mirrors the pool's pages: kv[page][row] holds the token id written at
 * that KV row; a request's recurrent state lives in its first state page as
 * (hash, count). Swap copies move both to / from host slots through the pool's copy
 * callback, as the backend would.
 *
 * Fake forward of a row with n_past p and tokens x_0..x_{n-1} at positions p..p+n-1:
 *   - writes x_i into kv[block_table[(p+i)/B]][(p+i)%B];
 *   - stateful pools: the state must have count == p (p == 0 starts a fresh state),
 *     else the model records an error (a KV-only prefix hit, a lost state, a bad
 *     swap); it then folds x_i into the state hash;
 *   - the KV checksum folds kv rows 0..p+i (what attention reads);
 *   - the "logits" at position p+i give next = mix(state hash, KV checksum).
 * So the next token is a function of the request's whole token history, exactly when
 * the scheduler fed the right tokens at the right positions into the right pages.
 * fake_oracle computes the same function from the history alone.
 *
 * Speculative decoding: a decode row is [last, d_1..d_k]; the model computes the
 * target after each position and accepts drafts while they match; the stored state is
 * the one after the last accepted position (what a real engine keeps by per-position
 * state slots). The drafter (fake_set_drafts) proposes the true continuation for the
 * first m drafts and a wrong token after, m varying per request and step.
 */
#ifndef HS_TEST_SCHED_FAKE_H
#define HS_TEST_SCHED_FAKE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "scheduler.h"

#define FAKE_V 50000

static inline uint64_t fake_fold(uint64_t h, int32_t tok) {
    h ^= (uint64_t)(uint32_t)tok + 0x9E3779B97F4A7C15ull;
    h *= 0x100000001B3ull;
    h ^= h >> 29;
    return h;
}
static inline int32_t fake_next(uint64_t state_h, uint64_t kv_h) {
    uint64_t x = state_h * 31 + kv_h;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (int32_t)(x % FAKE_V);
}
/* The true next token after tokens[0, n). */
static inline int32_t fake_oracle_next(const int32_t *tokens, int n) {
    uint64_t h = 0;
    for (int i = 0; i < n; i++) h = fake_fold(h, tokens[i]);
    return fake_next(h, h);
}

typedef struct {
    int64_t n_pages, n_host;
    int B;
    bool stateful;
    int32_t *kv;        /* [n_pages][B] */
    uint64_t *st_h;     /* [n_pages] state hash (valid in a request's first state page) */
    int32_t *st_n;      /* [n_pages] state count */
    int32_t *hkv;       /* [n_host][B] */
    uint64_t *hst_h;
    int32_t *hst_n;
    int errors;         /* model-detected inconsistencies */
    char last_error[200];
    uint64_t copies;
} fake_mem_t;

static inline void fake_mem_init(fake_mem_t *m, const pool_config_t *pc) {
    memset(m, 0, sizeof *m);
    m->n_pages = pc->n_pages;
    m->n_host = pc->n_host_pages;
    m->B = pc->block_size;
    m->stateful = pc->state_pages > 0;
    m->kv = calloc((size_t)m->n_pages * m->B, sizeof(int32_t));
    m->st_h = calloc((size_t)m->n_pages, sizeof(uint64_t));
    m->st_n = calloc((size_t)m->n_pages, sizeof(int32_t));
    size_t nh = m->n_host ? (size_t)m->n_host : 1;
    m->hkv = calloc(nh * m->B, sizeof(int32_t));
    m->hst_h = calloc(nh, sizeof(uint64_t));
    m->hst_n = calloc(nh, sizeof(int32_t));
    /* garbage in fresh memory, so a missed write is visible */
    for (int64_t i = 0; i < m->n_pages * m->B; i++) m->kv[i] = -7;
    for (int64_t i = 0; i < m->n_pages; i++) m->st_n[i] = -1000;
}

static inline void fake_mem_free(fake_mem_t *m) {
    free(m->kv);
    free(m->st_h);
    free(m->st_n);
    free(m->hkv);
    free(m->hst_h);
    free(m->hst_n);
}

static inline void fake_copy(void *user, int64_t page, int64_t host, int dir) {
    fake_mem_t *m = user;
    m->copies++;
    if (dir == POOL_COPY_TO_HOST) {
        memcpy(m->hkv + host * m->B, m->kv + page * m->B, (size_t)m->B * sizeof(int32_t));
        m->hst_h[host] = m->st_h[page];
        m->hst_n[host] = m->st_n[page];
        /* A swapped-out KV page keeps its bytes (it may stay in the prefix cache);
         * a state page's contents are dead once given back: scribble on them. */
        m->st_n[page] = -2000;
    } else {
        memcpy(m->kv + page * m->B, m->hkv + host * m->B, (size_t)m->B * sizeof(int32_t));
        m->st_h[page] = m->hst_h[host];
        m->st_n[page] = m->hst_n[host];
    }
}

static inline void fake_err(fake_mem_t *m, const char *what, int64_t id) {
    m->errors++;
    snprintf(m->last_error, sizeof m->last_error, "%s (request %lld)", what, (long long)id);
}

/* Run the batch through the fake model: fill new_tokens [S][1+k] and n_new [S]. */
static inline void fake_forward(fake_mem_t *m, const sched_batch_t *b, int k, int32_t *new_tokens, int32_t *n_new) {
    const int B = m->B, stride = 1 + k;
    for (int r = 0; r < b->n_seqs; r++) {
        n_new[r] = 0;
        const seq_t *q = b->seqs[r];
        if (!q) continue;
        const int32_t *bt = b->block_tables[r];
        int p = b->n_past[r];
        int n = b->tok_start[r + 1] - b->tok_start[r];
        const int32_t *x = b->token_ids + b->tok_start[r];
        int32_t sp0 = m->stateful ? b->state_pages[r][0] : -1;
        if (p + n > b->n_blocks[r] * B) {
            fake_err(m, "row runs past its block table", q->id);
            continue;
        }
        uint64_t sh = 0;
        if (m->stateful) {
            if (p == 0) {
                sh = 0;
            } else if (m->st_n[sp0] != p) {
                fake_err(m, "recurrent state does not match n_past", q->id);
                sh = 0xdead;
            } else {
                sh = m->st_h[sp0];
            }
        }
        uint64_t kh = 0;
        for (int i = 0; i < p; i++) kh = fake_fold(kh, m->kv[(int64_t)bt[i / B] * B + i % B]);
        int32_t target[32];
        uint64_t sh_at[32];
        int nl = b->logit_start[r + 1] - b->logit_start[r];
        for (int i = 0; i < n; i++) {
            int pos = p + i;
            if (b->positions[b->tok_start[r] + i] != pos) fake_err(m, "bad position", q->id);
            m->kv[(int64_t)bt[pos / B] * B + pos % B] = x[i];
            kh = fake_fold(kh, m->kv[(int64_t)bt[pos / B] * B + pos % B]);
            if (m->stateful) sh = fake_fold(sh, x[i]);
            int j = i - (n - nl); /* logit index within the row, when >= 0 */
            if (j >= 0) {
                target[j] = fake_next(m->stateful ? sh : kh, kh);
                sh_at[j] = sh;
            }
        }
        if (r < b->n_decode) {
            /* verify drafts x_1..x_k against targets */
            int acc = 0;
            new_tokens[r * stride] = target[0];
            while (acc < k && x[1 + acc] == target[acc]) {
                acc++;
                new_tokens[r * stride + acc] = target[acc];
            }
            n_new[r] = 1 + acc;
            if (m->stateful) {
                m->st_h[sp0] = sh_at[acc];
                m->st_n[sp0] = p + 1 + acc;
            }
        } else {
            if (nl == 1) {
                new_tokens[r * stride] = target[0];
                n_new[r] = 1;
            }
            if (m->stateful) {
                m->st_h[sp0] = sh;
                m->st_n[sp0] = p + n;
            }
        }
    }
}

/* Drafts for every live decode-ready request: the true continuation for the first m
 * tokens, then wrong ones (m = hash(id, n_tokens) % (k + 1)). */
static inline void fake_set_drafts(sched_t *s, int k, int64_t id) {
    const seq_t *q = sched_find(s, id);
    if (!q || k == 0 || q->status != SEQ_RUNNING || !seq_decode_ready(q)) return;
    int32_t hist[4096 + 64], d[16];
    int n = q->n_tokens;
    if (n + k > 4096 + 64) return;
    memcpy(hist, q->tokens, (size_t)n * sizeof(int32_t));
    int m = (int)(fake_fold((uint64_t)id, n) % (uint64_t)(k + 1));
    for (int i = 0; i < k; i++) {
        int32_t t = fake_oracle_next(hist, n + i);
        d[i] = i < m ? t : (t + 1) % FAKE_V;
        hist[n + i] = d[i];
    }
    sched_set_drafts(s, id, d, k);
}

#endif
