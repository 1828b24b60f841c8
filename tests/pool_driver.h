/*
 * pool_driver: a random-operation driver for the page pool, shared by the property test
 * (tests/test_pool_prop.c, a PRNG as the source) and the libFuzzer harness
 * (fuzz/fuzz_pool.c, the fuzz input as the source). Header-only; the includer defines
 * DRV_FAIL(msg) (never returns) before including it.
 *
 * Each step draws one operation — admit (prompts from a few shared-prefix families, so
 * prefix hits and evictions happen), append (with look-ahead), publish, free, swap out,
 * swap in, state checkpoint, a bad call — and verifies:
 *   - G8: the check's return code equals the commit's; a failed commit leaves the
 *     stats (counts and cumulative counters) untouched; a check changes nothing;
 *   - pool_check() after every operation;
 *   - contents, through a shadow device: every KV slot the test "writes" records its
 *     token id and every state page its owner. Prefix hits must point at pages holding
 *     exactly the prompt's tokens (only with full 64-bit hashes: with hash_bits the
 *     chain guard is the parent hash, and forced collisions may break it by design),
 *     state pages must still hold their owner's marker, swaps must bring both back,
 *     a checkpoint used at admission must hold the state of exactly the hit prefix (the
 *     fake device writes a hash of the tokens [0, n) into checkpoint pages);
 *   - at the end everything is freed, the cache is drained by one sequence taking every
 *     page, and the pool must equal its initial state.
 */
#ifndef HS_TEST_POOL_DRIVER_H
#define HS_TEST_POOL_DRIVER_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"

#ifndef DRV_FAIL
#error "define DRV_FAIL(msg) before including pool_driver.h"
#endif

#define DRV_FAMILIES 4
#define DRV_FAMILY_LEN 512
#define DRV_MAX_LIVE 48

typedef uint32_t (*drv_src_fn)(void *ctx); /* next 32 random bits; the fuzzer's ends with zeros */

typedef struct {
    int64_t id;
    int32_t *tok;   /* [cap] all tokens written so far (prompt + output) */
    int n, cap;     /* n = committed tokens (mirror of the pool's) */
    int swapped;
} drv_seq_t;

typedef struct {
    pool_t *p;
    pool_config_t cfg;
    int B, E, max_prompt;
    bool check_content;
    int32_t *dev;        /* [n_pages][B] token written in each KV slot; -1 unknown */
    int64_t *dev_state;  /* [n_pages] owner id written in a state page */
    int32_t *host;       /* [n_host][B] */
    int64_t *host_state; /* [n_host] */
    int32_t fam[DRV_FAMILIES][DRV_FAMILY_LEN];
    drv_seq_t live[DRV_MAX_LIVE];
    int n_live;
    int64_t next_id;
    pool_stats_t initial;
    uint64_t n_ops, n_ok, n_again, n_err;
    int64_t ck_marker;   /* what the next checkpoint copy writes */
    drv_src_fn src;
    void *ctx;
    char err[256];
} drv_t;

static uint32_t drv_rand(drv_t *d, uint32_t n) { return n ? d->src(d->ctx) % n : 0; }

static void drv_check(drv_t *d) {
    if (pool_check(d->p, d->err, sizeof d->err) != HS_OK) DRV_FAIL(d->err);
}

static void drv_copy(void *user, int64_t page, int64_t slot, int dir) {
    drv_t *d = user;
    if (page < 0 || page >= d->cfg.n_pages || slot < 0 || slot >= d->cfg.n_host_pages) DRV_FAIL("copy out of range");
    size_t B = (size_t)d->B;
    if (dir == POOL_COPY_TO_HOST) {
        memcpy(d->host + slot * B, d->dev + page * B, B * sizeof(int32_t));
        d->host_state[slot] = d->dev_state[page];
    } else {
        memcpy(d->dev + page * B, d->host + slot * B, B * sizeof(int32_t));
        d->dev_state[page] = d->host_state[slot];
    }
}

static int64_t drv_fnv(const int32_t *t, int n) {
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++) h = (h ^ (uint32_t)t[i]) * 1099511628211ULL;
    return (int64_t)(h >> 1);
}

/* checkpoint copy: the "state after n tokens" is the hash of those tokens */
static void drv_ck_copy(void *user, int64_t dst, int64_t src) {
    drv_t *d = user;
    if (dst < 0 || dst >= d->cfg.n_pages || src < 0 || src >= d->cfg.n_pages) DRV_FAIL("checkpoint copy out of range");
    d->dev_state[dst] = d->ck_marker;
}

static void drv_stats_equal(drv_t *d, const pool_stats_t *a, const char *what) {
    pool_stats_t b;
    pool_stats(d->p, &b);
    if (memcmp(a, &b, sizeof b) != 0) DRV_FAIL(what);
}

/* Write tokens [from, to) of s into the shadow through its block table. */
static void drv_write(drv_t *d, const drv_seq_t *s, int from, int to) {
    int nb;
    const int32_t *bt = pool_block_table(d->p, s->id, &nb);
    if (!bt && to > from) DRV_FAIL("no block table");
    for (int t = from; t < to; t++) {
        if (t / d->B >= nb) DRV_FAIL("token beyond the block table");
        d->dev[(size_t)bt[t / d->B] * d->B + t % d->B] = s->tok[t];
    }
}

/* Verify the shadow holds tokens [0, to) of s (and its state marker if `state`). */
static void drv_verify_kv(drv_t *d, const drv_seq_t *s, int to, bool state) {
    int nb;
    const int32_t *bt = pool_block_table(d->p, s->id, &nb);
    if (!bt) DRV_FAIL("verify: no block table");
    if ((int64_t)nb * d->B < s->n) DRV_FAIL("block table shorter than the committed tokens");
    for (int t = 0; t < to; t++)
        if (d->dev[(size_t)bt[t / d->B] * d->B + t % d->B] != s->tok[t]) DRV_FAIL("KV content mismatch");
    const int32_t *st = state ? pool_state_table(d->p, s->id) : NULL;
    for (int j = 0; st && j < d->E; j++)
        if (d->dev_state[st[j]] != s->id) DRV_FAIL("state page content mismatch");
}
#define drv_verify(d, s, to) drv_verify_kv(d, s, to, true)

static void drv_reserve(drv_seq_t *s, int n) {
    if (n <= s->cap) return;
    int cap = s->cap ? s->cap : 64;
    while (cap < n) cap *= 2;
    s->tok = realloc(s->tok, sizeof(int32_t) * (size_t)cap);
    s->cap = cap;
}

static int drv_init(drv_t *d, const pool_config_t *cfg, bool check_content, drv_src_fn src, void *ctx,
                    uint64_t fam_seed) {
    memset(d, 0, sizeof *d);
    d->cfg = *cfg;
    d->src = src;
    d->ctx = ctx;
    int rc = pool_create(&d->p, cfg, d->err, sizeof d->err);
    if (rc != HS_OK) return rc;
    d->B = cfg->block_size;
    d->E = cfg->state_pages;
    d->max_prompt = cfg->max_seq_tokens < 300 ? cfg->max_seq_tokens : 300;
    d->check_content = check_content && cfg->hash_bits == 0;
    d->dev = malloc(sizeof(int32_t) * (size_t)cfg->n_pages * d->B);
    d->dev_state = malloc(sizeof(int64_t) * (size_t)cfg->n_pages);
    d->host = malloc(sizeof(int32_t) * ((size_t)cfg->n_host_pages + 1) * d->B);
    d->host_state = malloc(sizeof(int64_t) * ((size_t)cfg->n_host_pages + 1));
    for (int64_t i = 0; i < cfg->n_pages * d->B; i++) d->dev[i] = -1;
    for (int64_t i = 0; i < cfg->n_pages; i++) d->dev_state[i] = -1;
    uint64_t x = fam_seed * 2654435761u + 1;
    for (int f = 0; f < DRV_FAMILIES; f++)
        for (int i = 0; i < DRV_FAMILY_LEN; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            d->fam[f][i] = (int32_t)(x % 50000);
        }
    pool_stats(d->p, &d->initial);
    drv_check(d);
    return HS_OK;
}

static void drv_count(drv_t *d, int rc) {
    if (rc == HS_OK) d->n_ok++;
    else if (rc == HS_AGAIN) d->n_again++;
    else d->n_err++;
}

static void drv_remove(drv_t *d, int i) {
    free(d->live[i].tok);
    d->live[i] = d->live[--d->n_live];
}

static void op_admit(drv_t *d) {
    if (d->n_live == DRV_MAX_LIVE) return;
    drv_seq_t s = {0};
    s.id = d->next_id++;
    int fam = (int)drv_rand(d, DRV_FAMILIES);
    int n = 1 + (int)drv_rand(d, (uint32_t)d->max_prompt);
    int shared = (int)drv_rand(d, (uint32_t)n + 1);
    if (drv_rand(d, 4) == 0) shared = n; /* often a whole prompt from a family */
    drv_reserve(&s, n);
    for (int i = 0; i < n; i++) s.tok[i] = i < shared ? d->fam[fam][i % DRV_FAMILY_LEN] : (int32_t)(50000 + drv_rand(d, 1000));
    pool_admit_info_t ci, ai;
    pool_stats_t before;
    pool_stats(d->p, &before);
    const int32_t *tok = drv_rand(d, 8) ? s.tok : NULL; /* sometimes no lookup */
    int rc1 = pool_can_admit(d->p, s.id, tok, n, &ci, d->err, sizeof d->err);
    drv_stats_equal(d, &before, "can_admit changed the pool");
    int rc2 = pool_admit(d->p, s.id, tok, n, &ai, d->err, sizeof d->err);
    if (rc1 != rc2) DRV_FAIL("can_admit and admit disagree");
    if (memcmp(&ci, &ai, sizeof ci) != 0) DRV_FAIL("admit plan differs from the check's");
    drv_count(d, rc2);
    if (rc2 != HS_OK) {
        drv_stats_equal(d, &before, "failed admit changed the pool");
        free(s.tok);
        if (rc2 != HS_AGAIN && rc2 != HS_ERR_NO_MEMORY) DRV_FAIL("unexpected admit error");
        return;
    }
    s.n = n;
    if (d->check_content) drv_verify_kv(d, &s, ai.n_hit_tokens, false); /* hits hold exactly the prompt */
    if (ai.ckpt_pages) {
        if (!d->cfg.state_checkpoints || ai.n_hit_tokens == 0) DRV_FAIL("checkpoint pages without checkpoints");
        for (int j = 0; d->check_content && j < d->E; j++)
            if (d->dev_state[ai.ckpt_pages[j]] != drv_fnv(s.tok, ai.n_hit_tokens)) DRV_FAIL("checkpoint content mismatch");
    } else if (d->E > 0 && !d->cfg.kv_only_hits && ai.n_hit_tokens > 0) {
        DRV_FAIL("a stateful hit without a checkpoint");
    }
    drv_write(d, &s, ai.n_hit_tokens, n);
    const int32_t *st = pool_state_table(d->p, s.id);
    for (int j = 0; st && j < d->E; j++) d->dev_state[st[j]] = s.id;
    d->live[d->n_live++] = s;
}

static void op_append(drv_t *d, drv_seq_t *s) {
    int n_new = drv_rand(d, 4) ? 1 : (int)drv_rand(d, 20);
    int k = drv_rand(d, 2) ? 0 : (int)drv_rand(d, 4);
    pool_stats_t before;
    pool_stats(d->p, &before);
    int need = -1;
    int rc1 = pool_can_append(d->p, s->id, n_new, k, &need, d->err, sizeof d->err);
    drv_stats_equal(d, &before, "can_append changed the pool");
    int rc2 = pool_append(d->p, s->id, n_new, k, d->err, sizeof d->err);
    if (rc1 != rc2) DRV_FAIL("can_append and append disagree");
    drv_count(d, rc2);
    if (s->swapped) {
        if (rc2 != HS_ERR_STATE) DRV_FAIL("append to a swapped sequence");
        return;
    }
    if (rc2 != HS_OK) {
        drv_stats_equal(d, &before, "failed append changed the pool");
        if (rc2 != HS_AGAIN && rc2 != HS_ERR_NO_MEMORY && rc2 != HS_ERR_INVALID) DRV_FAIL("unexpected append error");
        return;
    }
    pool_stats_t after;
    pool_stats(d->p, &after);
    if (after.n_kv != before.n_kv + need) DRV_FAIL("append took a different page count");
    drv_reserve(s, s->n + n_new);
    for (int i = 0; i < n_new; i++) s->tok[s->n + i] = (int32_t)(60000 + drv_rand(d, 1000));
    drv_write(d, s, s->n, s->n + n_new);
    s->n += n_new;
    pool_seq_info_t si;
    if (pool_seq_info(d->p, s->id, &si) != HS_OK || si.n_tokens != s->n ||
        (int64_t)si.n_blocks * d->B < (int64_t)s->n + k)
        DRV_FAIL("append: sequence info");
}

static void op_swap(drv_t *d, drv_seq_t *s) {
    pool_stats_t before;
    pool_stats(d->p, &before);
    int rc1, rc2;
    if (!s->swapped) {
        rc1 = pool_can_swap_out(d->p, s->id, d->err, sizeof d->err);
        drv_stats_equal(d, &before, "can_swap_out changed the pool");
        if (d->check_content && rc1 == HS_OK) drv_verify(d, s, s->n);
        rc2 = pool_swap_out(d->p, s->id, drv_copy, d, d->err, sizeof d->err);
    } else {
        rc1 = pool_can_swap_in(d->p, s->id, d->err, sizeof d->err);
        drv_stats_equal(d, &before, "can_swap_in changed the pool");
        rc2 = pool_swap_in(d->p, s->id, drv_copy, d, d->err, sizeof d->err);
    }
    if (rc1 != rc2) DRV_FAIL("swap check and commit disagree");
    drv_count(d, rc2);
    if (rc2 != HS_OK) {
        drv_stats_equal(d, &before, "failed swap changed the pool");
        return;
    }
    s->swapped = !s->swapped;
    if (!s->swapped && d->check_content) drv_verify(d, s, s->n);
}

static void op_checkpoint(drv_t *d, drv_seq_t *s) {
    int n = s->n >= d->B ? d->B * (1 + (int)drv_rand(d, (uint32_t)(s->n / d->B))) : d->B;
    pool_stats_t before;
    pool_stats(d->p, &before);
    int rc1 = pool_can_checkpoint(d->p, s->id, n, d->err, sizeof d->err);
    drv_stats_equal(d, &before, "can_checkpoint changed the pool");
    if (n <= s->n) d->ck_marker = drv_fnv(s->tok, n);
    int rc2 = pool_checkpoint(d->p, s->id, n, drv_ck_copy, d, d->err, sizeof d->err);
    if (rc1 != rc2) DRV_FAIL("can_checkpoint and checkpoint disagree");
    drv_count(d, rc2);
    if (rc2 != HS_OK) drv_stats_equal(d, &before, "failed checkpoint changed the pool");
    if (!d->cfg.state_checkpoints && rc2 != HS_ERR_UNSUPPORTED && rc2 != HS_ERR_STATE) DRV_FAIL("checkpoint while off");
}

static void op_bad(drv_t *d) {
    pool_stats_t before;
    pool_stats(d->p, &before);
    int64_t unknown = d->next_id + 1000;
    int rc = 0, want = 0;
    switch (drv_rand(d, 6)) {
    case 0: rc = pool_free_seq(d->p, unknown, d->err, sizeof d->err), want = HS_ERR_NOT_FOUND; break;
    case 1: rc = pool_append(d->p, unknown, 1, 0, d->err, sizeof d->err), want = HS_ERR_NOT_FOUND; break;
    case 2: rc = pool_swap_in(d->p, unknown, NULL, NULL, d->err, sizeof d->err), want = HS_ERR_NOT_FOUND; break;
    case 3:
        if (!d->n_live) return;
        rc = pool_admit(d->p, d->live[0].id, NULL, 1, NULL, d->err, sizeof d->err), want = HS_ERR_STATE;
        break;
    case 4:
        rc = pool_admit(d->p, unknown, NULL, d->cfg.max_seq_tokens + 1, NULL, d->err, sizeof d->err);
        want = HS_ERR_INVALID;
        break;
    default:
        if (!d->n_live) return;
        rc = pool_publish(d->p, d->live[0].id, d->live[0].tok, d->live[0].n + 1, d->err, sizeof d->err);
        want = d->live[0].swapped ? HS_ERR_STATE : HS_ERR_INVALID;
        break;
    }
    if (rc != want) DRV_FAIL("bad call returned the wrong code");
    drv_stats_equal(d, &before, "bad call changed the pool");
}

/* One random operation, then pool_check. */
static void drv_step(drv_t *d) {
    uint32_t r = drv_rand(d, 100);
    drv_seq_t *s = d->n_live ? &d->live[drv_rand(d, (uint32_t)d->n_live)] : NULL;
    d->n_ops++;
    if (r < 22 || !s) {
        op_admit(d);
    } else if (r < 57) {
        op_append(d, s);
    } else if (r < 67) {
        int n = (int)drv_rand(d, (uint32_t)s->n + 1);
        int rc = pool_publish(d->p, s->id, s->tok, n, d->err, sizeof d->err);
        if (rc != (s->swapped ? HS_ERR_STATE : HS_OK)) DRV_FAIL("publish");
    } else if (r < 82) {
        if (d->check_content && !s->swapped) drv_verify(d, s, s->n);
        if (pool_free_seq(d->p, s->id, d->err, sizeof d->err) != HS_OK) DRV_FAIL("free");
        if (pool_free_seq(d->p, s->id, d->err, sizeof d->err) != HS_ERR_NOT_FOUND) DRV_FAIL("double free");
        drv_remove(d, (int)(s - d->live));
    } else if (r < 92) {
        op_swap(d, s);
    } else if (r < 97) {
        op_checkpoint(d, s);
    } else {
        op_bad(d);
    }
    drv_check(d);
}

/* Free everything, drain the cache, compare with the initial state; then destroy. */
static void drv_finish(drv_t *d) {
    while (d->n_live) {
        if (d->check_content && !d->live[0].swapped) drv_verify(d, &d->live[0], d->live[0].n);
        if (pool_free_seq(d->p, d->live[0].id, d->err, sizeof d->err) != HS_OK) DRV_FAIL("final free");
        drv_remove(d, 0);
        drv_check(d);
    }
    pool_stats_t s;
    pool_stats(d->p, &s);
    if (s.n_kv || s.n_state || s.n_seqs || s.n_swapped || s.n_host_used) DRV_FAIL("pages held after freeing all");
    if (s.n_free + s.n_cached + s.n_ckpt_pages != d->initial.n_free || s.n_reserved != d->initial.n_reserved ||
        s.n_slots_free != d->initial.n_slots_free)
        DRV_FAIL("capacity differs from the initial state");
    /* drain: one sequence takes every KV page (evicting all cached blocks), then goes */
    int64_t kv_pages = d->initial.n_free - (d->cfg.kind == LAYOUT_SLOTS ? 0 : d->E);
    int64_t tokens = kv_pages * d->B;
    if (tokens <= d->cfg.max_seq_tokens && d->cfg.max_seqs >= 1) {
        if (pool_admit(d->p, -7 + 1000000007LL, NULL, (int)tokens, NULL, d->err, sizeof d->err) != HS_OK)
            DRV_FAIL(d->err);
        drv_check(d);
        if (pool_free_capacity(d->p) != 0) DRV_FAIL("drain left capacity");
        if (pool_free_seq(d->p, -7 + 1000000007LL, d->err, sizeof d->err) != HS_OK) DRV_FAIL("drain free");
        drv_check(d);
        pool_stats(d->p, &s);
        if (s.n_free != d->initial.n_free || s.n_cached != 0 || s.n_ckpts != 0)
            DRV_FAIL("pool differs from its initial state");
    }
    pool_destroy(d->p);
    free(d->dev);
    free(d->dev_state);
    free(d->host);
    free(d->host_state);
}

#endif
