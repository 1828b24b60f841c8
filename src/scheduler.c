/*
 * sched: continuous batching over the page pool (policy in scheduler.h and
 * docs/ARCHITECTURE.md "Scheduler").
 *
 * Data structures
 *   waiting, running, swapped   doubly linked queues of seq_t, each kept sorted by
 *                               submission order (oldest at the head). New requests
 *                               append at the tail in O(1); a preempted or swapped-in
 *                               request is inserted at its age position by walking from
 *                               the end it is nearest to (O(1) in the common case).
 *   id map                      open addressing (linear probing, backward-shift delete)
 *                               from request id to seq_t*, for cancel / drafts / lookup.
 *   batch                       arrays sized at creation by max_num_seqs and
 *                               max_num_batched_tokens, refilled every step.
 *   events                      a growable array (amortised), cleared at each step.
 *
 * Invariants (sched_check)
 *   - a sequence is in exactly one queue, matching its status; queues are age-sorted;
 *   - running <= max_num_seqs; every running / swapped sequence is live in the pool
 *     with pool n_tokens == n_committed; waiting ones hold nothing in the pool;
 *   - 0 <= n_cached <= n_computed <= n_committed <= n_tokens for running sequences.
 *
 * Not here (by design): sampling (the engine), the byte copies of swapping (the
 * backend, through the pool's copy callback), state checkpoints for hybrid prefix
 * hits (a later issue; until then hybrid hits are refused by the pool).
 */
#include "scheduler.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    seq_t *head, *tail;
    int n;
} squeue_t;

typedef struct {
    int64_t key;   /* -1 = empty */
    seq_t *val;
} smap_slot_t;

struct sched {
    sched_config_t cfg;
    pool_t *pool;
    int B;                   /* block size */
    int E;                   /* state pages per sequence */
    bool prefix_caching;
    bool hits_gated;         /* stateful pool refusing KV-only hits */
    int64_t watermark_pages;
    uint64_t next_order;

    squeue_t waiting, running, swapped;

    smap_slot_t *map;
    size_t map_cap, map_n;   /* power of two; load <= 1/2 */

    sched_batch_t batch;
    bool pending;            /* a non-empty batch awaits sched_update */
    seq_t **infl;            /* [max_num_seqs] in-flight rows (sched_advance), NULL once retired */
    int n_infl;              /* > 0 while rows are in flight */
    int n_prefilling;        /* running sequences part-way through a prefill, seen this step */
    bool publish_output;     /* publish output blocks too (only when hits are usable) */

    sched_event_t *ev;
    int n_ev, ev_cap;

    sched_stats_t st;
};

/* ---- queues ------------------------------------------------------------------ */

static void q_remove(squeue_t *q, seq_t *s) {
    if (s->prev) s->prev->next = s->next; else q->head = s->next;
    if (s->next) s->next->prev = s->prev; else q->tail = s->prev;
    s->prev = s->next = NULL;
    q->n--;
}

/* Insert keeping the queue sorted by order (oldest first). */
static void q_insert_sorted(squeue_t *q, seq_t *s) {
    seq_t *after = q->tail;
    if (after && after->order > s->order) {
        /* Not the newest: walk from whichever end is nearer in age. */
        if (q->head->order > s->order) {
            after = NULL;
        } else {
            while (after && after->order > s->order) after = after->prev;
        }
    }
    s->prev = after;
    s->next = after ? after->next : q->head;
    if (s->next) s->next->prev = s; else q->tail = s;
    if (after) after->next = s; else q->head = s;
    q->n++;
}

/* ---- id map ------------------------------------------------------------------ */

static size_t map_hash(int64_t k, size_t cap) {
    uint64_t x = (uint64_t)k * 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 17) & (cap - 1);
}

static void map_put(sched_t *s, int64_t key, seq_t *val);

static void map_grow(sched_t *s) {
    smap_slot_t *old = s->map;
    size_t old_cap = s->map_cap;
    s->map_cap = old_cap ? old_cap * 2 : 64;
    s->map = hs_malloc(s->map_cap * sizeof *s->map);
    for (size_t i = 0; i < s->map_cap; i++) s->map[i].key = -1;
    s->map_n = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key >= 0) map_put(s, old[i].key, old[i].val);
    hs_free(old);
}

static void map_put(sched_t *s, int64_t key, seq_t *val) {
    if ((s->map_n + 1) * 2 > s->map_cap) map_grow(s);
    size_t i = map_hash(key, s->map_cap);
    while (s->map[i].key >= 0) {
        assert(s->map[i].key != key);
        i = (i + 1) & (s->map_cap - 1);
    }
    s->map[i].key = key;
    s->map[i].val = val;
    s->map_n++;
}

static seq_t *map_get(const sched_t *s, int64_t key) {
    if (!s->map_cap || key < 0) return NULL;
    size_t i = map_hash(key, s->map_cap);
    while (s->map[i].key >= 0) {
        if (s->map[i].key == key) return s->map[i].val;
        i = (i + 1) & (s->map_cap - 1);
    }
    return NULL;
}

static void map_del(sched_t *s, int64_t key) {
    size_t mask = s->map_cap - 1;
    size_t i = map_hash(key, s->map_cap);
    while (s->map[i].key != key) {
        assert(s->map[i].key >= 0);
        i = (i + 1) & mask;
    }
    /* Backward-shift deletion keeps probe chains intact without tombstones. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (s->map[j].key < 0) break;
        size_t h = map_hash(s->map[j].key, s->map_cap);
        /* Move j into the hole i when h is not cyclically in (i, j]. */
        bool in_range = (i <= j) ? (h > i && h <= j) : (h > i || h <= j);
        if (!in_range) {
            s->map[i] = s->map[j];
            i = j;
        }
    }
    s->map[i].key = -1;
    s->map_n--;
}

/* ---- events ------------------------------------------------------------------ */

static sched_event_t *ev_push(sched_t *s) {
    if (s->n_ev == s->ev_cap) {
        s->ev_cap = s->ev_cap ? s->ev_cap * 2 : 256;
        s->ev = hs_realloc(s->ev, (size_t)s->ev_cap * sizeof *s->ev);
    }
    sched_event_t *e = &s->ev[s->n_ev++];
    memset(e, 0, sizeof *e);
    return e;
}

/* q's last token, just appended (or resolved). */
static void ev_token(sched_t *s, const seq_t *q) {
    sched_event_t *e = ev_push(s);
    e->id = q->id;
    e->kind = SCHED_EV_TOKEN;
    e->token = q->last;
    e->index = seq_n_output(q) - 1;
}

static void ev_finish(sched_t *s, const seq_t *q, seq_finish_t why) {
    sched_event_t *e = ev_push(s);
    e->id = q->id;
    e->kind = SCHED_EV_FINISH;
    e->finish = (uint8_t)why;
    e->n_output = seq_n_output(q);
}

/* ---- config, create, destroy -------------------------------------------------- */

void sched_config_default(sched_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->max_num_seqs = 256;
    cfg->max_num_batched_tokens = 8192;
    cfg->max_model_len = 0;
    cfg->k_spec = 0;
    cfg->preempt = SCHED_PREEMPT_RECOMPUTE;
    cfg->watermark = 0.01;
}

int sched_create(sched_t **out, const sched_config_t *cfg, pool_t *pool, char *err, size_t n) {
    *out = NULL;
    if (!pool) return hs_errf(err, n, HS_ERR_INVALID, "sched: no pool");
    const pool_config_t *pc = pool_config(pool);
    if (cfg->max_num_seqs < 1) return hs_errf(err, n, HS_ERR_INVALID, "max_num_seqs: must be >= 1");
    if (cfg->k_spec < 0 || cfg->k_spec > 16) return hs_errf(err, n, HS_ERR_INVALID, "k_spec: 0..16");
    if ((int64_t)cfg->max_num_batched_tokens < (int64_t)cfg->max_num_seqs * (1 + cfg->k_spec))
        return hs_errf(err, n, HS_ERR_INVALID,
                       "max_num_batched_tokens (%d) must be >= max_num_seqs * (1 + k) = %d so every running "
                       "decode fits one step", cfg->max_num_batched_tokens, cfg->max_num_seqs * (1 + cfg->k_spec));
    if (!(cfg->watermark >= 0 && cfg->watermark < 1)) return hs_errf(err, n, HS_ERR_INVALID, "watermark: [0, 1)");
    if (cfg->max_num_seqs > pc->max_seqs)
        return hs_errf(err, n, HS_ERR_INVALID, "max_num_seqs (%d) exceeds the pool's sequence records (%d)",
                       cfg->max_num_seqs, pc->max_seqs);
    int max_len = cfg->max_model_len > 0 ? cfg->max_model_len : pc->max_seq_tokens - cfg->k_spec;
    if (max_len < 2 || max_len + cfg->k_spec > pc->max_seq_tokens)
        return hs_errf(err, n, HS_ERR_INVALID, "max_model_len (%d) + k must be in [2, pool max_seq_tokens = %d]",
                       max_len, pc->max_seq_tokens);
    if (pc->state_pages > 0 && pc->prefix_caching && pc->kv_only_hits && !cfg->allow_kv_only_hits)
        return hs_errf(err, n, HS_ERR_INVALID,
                       "pool hands out KV-only prefix hits for a model with recurrent state: the state at "
                       "the hit is unknown and the output would be wrong (set allow_kv_only_hits only for "
                       "experiments)");
    if (pc->kind == LAYOUT_COUPLED && pc->state_pages != 0 && pc->state_pages < 1 + cfg->k_spec)
        return hs_errf(err, n, HS_ERR_INVALID, "coupled pool: state_pages must be 1 + k");

    sched_t *s = hs_calloc(1, sizeof *s);
    s->cfg = *cfg;
    s->cfg.max_model_len = max_len;
    s->pool = pool;
    s->B = pc->block_size;
    s->E = pc->state_pages;
    s->prefix_caching = pc->prefix_caching;
    s->hits_gated = pc->state_pages > 0 && !pc->kv_only_hits;
    /* Prompt blocks are always published (a stateful pool counts the hits it has to
     * refuse); output blocks only where a hit could be used. */
    s->publish_output = !s->hits_gated;
    s->watermark_pages = (int64_t)(cfg->watermark * (double)pool_free_capacity(pool) + 0.999999);

    int S = cfg->max_num_seqs, T = cfg->max_num_batched_tokens;
    sched_batch_t *b = &s->batch;
    b->seqs = hs_calloc((size_t)S, sizeof *b->seqs);
    b->ids = hs_calloc((size_t)S, sizeof *b->ids);
    b->tok_start = hs_calloc((size_t)S + 1, sizeof *b->tok_start);
    b->token_ids = hs_calloc((size_t)T, sizeof *b->token_ids);
    b->positions = hs_calloc((size_t)T, sizeof *b->positions);
    b->n_past = hs_calloc((size_t)S, sizeof *b->n_past);
    b->block_tables = hs_calloc((size_t)S, sizeof *b->block_tables);
    b->n_blocks = hs_calloc((size_t)S, sizeof *b->n_blocks);
    b->state_pages = hs_calloc((size_t)S, sizeof *b->state_pages);
    b->logit_rows = hs_calloc((size_t)T, sizeof *b->logit_rows);
    b->logit_start = hs_calloc((size_t)S + 1, sizeof *b->logit_start);
    b->n_state_pages = s->E;
    s->infl = hs_calloc((size_t)S, sizeof *s->infl);
    map_grow(s);
    *out = s;
    return HS_OK;
}

static void destroy_queue(sched_t *s, squeue_t *q, bool in_pool) {
    seq_t *x = q->head;
    while (x) {
        seq_t *nx = x->next;
        if (in_pool) pool_free_seq(s->pool, x->id, NULL, 0);
        seq_destroy(x);
        x = nx;
    }
    q->head = q->tail = NULL;
    q->n = 0;
}

void sched_destroy(sched_t *s) {
    if (!s) return;
    destroy_queue(s, &s->running, true);
    destroy_queue(s, &s->swapped, true);
    destroy_queue(s, &s->waiting, false);
    sched_batch_t *b = &s->batch;
    hs_free(b->seqs);
    hs_free(b->ids);
    hs_free(b->tok_start);
    hs_free(b->token_ids);
    hs_free(b->positions);
    hs_free(b->n_past);
    hs_free(b->block_tables);
    hs_free(b->n_blocks);
    hs_free(b->state_pages);
    hs_free(b->logit_rows);
    hs_free(b->logit_start);
    hs_free(s->map);
    hs_free(s->infl);
    hs_free(s->ev);
    hs_free(s);
}

/* ---- submit, cancel, lookups ------------------------------------------------------ */

int sched_submit(sched_t *s, int64_t id, const int32_t *prompt, int n_prompt, const sampling_params_t *sp,
                 char *err, size_t n) {
    if (id < 0) return hs_errf(err, n, HS_ERR_INVALID, "request id must be >= 0");
    if (map_get(s, id)) return hs_errf(err, n, HS_ERR_STATE, "request %lld: id already live", (long long)id);
    if (n_prompt >= s->cfg.max_model_len)
        return hs_errf(err, n, HS_ERR_INVALID, "request %lld: prompt of %d tokens leaves no room under max_model_len %d",
                       (long long)id, n_prompt, s->cfg.max_model_len);
    /* A prompt the pool could never hold is refused now, not left to block the queue. */
    int rc = pool_can_admit(s->pool, id, NULL, n_prompt > 0 ? n_prompt : 1, NULL, err, n);
    if (rc < 0 && rc != HS_ERR_STATE) return rc == HS_ERR_INVALID ? HS_ERR_NO_MEMORY : rc;
    seq_t *q;
    rc = seq_create(&q, id, prompt, n_prompt, sp, s->cfg.k_spec, err, n);
    if (rc != HS_OK) return rc;
    q->order = s->next_order++;
    q_insert_sorted(&s->waiting, q);
    map_put(s, id, q);
    return HS_OK;
}

static squeue_t *queue_of(sched_t *s, const seq_t *q) {
    switch (q->status) {
    case SEQ_WAITING: return &s->waiting;
    case SEQ_RUNNING: return &s->running;
    case SEQ_SWAPPED: return &s->swapped;
    default: return NULL;
    }
}

/* Remove a live sequence from everything and destroy it. */
static void retire(sched_t *s, seq_t *q) {
    squeue_t *qq = queue_of(s, q);
    assert(qq);
    if (q->status != SEQ_WAITING) {
        int rc = pool_free_seq(s->pool, q->id, NULL, 0);
        assert(rc == HS_OK);
        (void)rc;
    }
    if (q->sched_row >= 0 && s->pending && s->batch.seqs[q->sched_row] == q) s->batch.seqs[q->sched_row] = NULL;
    if (q->infl >= 0) s->infl[q->infl] = NULL;
    q_remove(qq, q);
    map_del(s, q->id);
    q->status = SEQ_FINISHED;
    seq_destroy(q);
}

/* q ends with an event: freed and gone. */
static void finish_seq(sched_t *s, seq_t *q, seq_finish_t why) {
    q->finish = why;
    ev_finish(s, q, why);
    retire(s, q);
    s->st.n_finished++;
}

/* Publish the full blocks q's last step completed ([0, n_computed) are known tokens). */
static void publish_blocks(sched_t *s, seq_t *q, int prev_computed) {
    if (s->prefix_caching && q->n_computed / s->B > prev_computed / s->B &&
        (s->publish_output || prev_computed < q->n_prompt))
        pool_publish(s->pool, q->id, q->tokens, q->n_computed, NULL, 0);
}

int sched_cancel(sched_t *s, int64_t id) {
    seq_t *q = map_get(s, id);
    if (!q) return HS_ERR_NOT_FOUND;
    q->finish = SEQ_FINISH_CANCELLED;
    retire(s, q);
    s->st.n_finished++;
    return HS_OK;
}

const seq_t *sched_find(const sched_t *s, int64_t id) { return map_get(s, id); }

int sched_set_drafts(sched_t *s, int64_t id, const int32_t *draft, int n) {
    seq_t *q = map_get(s, id);
    if (!q) return HS_ERR_NOT_FOUND;
    if (n < 0 || n > q->k_spec || (n > 0 && !draft)) return HS_ERR_INVALID;
    for (int i = 0; i < q->k_spec; i++) q->spec[i] = i < n ? draft[i] : q->spec_placeholder;
    return HS_OK;
}

pool_t *sched_pool(sched_t *s) { return s->pool; }

bool sched_idle(const sched_t *s) { return !s->waiting.n && !s->running.n && !s->swapped.n; }

void sched_stats(const sched_t *s, sched_stats_t *out) {
    *out = s->st;
    out->n_waiting = s->waiting.n;
    out->n_running = s->running.n;
    out->n_swapped = s->swapped.n;
}

/* ---- preemption ---------------------------------------------------------------- */

static void preempt(sched_t *s, seq_t *q) {
    assert(q->status == SEQ_RUNNING && q->sched_row < 0);
    seq_strip_spec(q);
    q->n_preempt++;
    sched_batch_t *b = &s->batch;
    q_remove(&s->running, q);
    if (s->cfg.preempt == SCHED_PREEMPT_SWAP && pool_can_swap_out(s->pool, q->id, NULL, 0) == HS_OK) {
        pool_seq_info_t info;
        pool_seq_info(s->pool, q->id, &info);
        int rc = pool_swap_out(s->pool, q->id, s->cfg.copy, s->cfg.copy_user, NULL, 0);
        assert(rc == HS_OK);
        (void)rc;
        q->status = SEQ_SWAPPED;
        q_insert_sorted(&s->swapped, q);
        b->n_preempt_swap++;
        b->n_pages_swapped_out += info.n_blocks + s->E;
        s->st.n_preempt_swap++;
        return;
    }
    int rc = pool_free_seq(s->pool, q->id, NULL, 0);
    assert(rc == HS_OK);
    (void)rc;
    s->st.tokens_recomputed += (uint64_t)(q->n_computed - q->n_cached);
    q->n_computed = q->n_cached = q->n_committed = 0;
    q->status = SEQ_WAITING;
    q_insert_sorted(&s->waiting, q);
    b->n_preempt_recompute++;
    s->st.n_preempt_recompute++;
}

/* ---- step --------------------------------------------------------------------- */

/* Add a row running tokens [n_computed, n_computed + n) of q (prefill), or the
 * decode row (last token + k placeholders) when decode. */
static void add_row(sched_t *s, seq_t *q, int n, bool decode) {
    sched_batch_t *b = &s->batch;
    int r = b->n_seqs++;
    int t0 = b->n_tokens;
    b->seqs[r] = q;
    b->ids[r] = q->id;
    b->n_past[r] = q->n_computed;
    if (decode) {
        assert(n == 1 + s->cfg.k_spec && b->n_decode == r); /* decode rows come first */
        b->token_ids[t0] = q->last;
        for (int i = 0; i < s->cfg.k_spec; i++) b->token_ids[t0 + 1 + i] = q->spec[i];
        for (int i = 0; i < n; i++) {
            b->positions[t0 + i] = q->n_computed + i;
            b->logit_rows[b->n_logits++] = t0 + i;
        }
        b->n_decode++;
        b->n_decode_tokens += n;
        s->st.tokens_decode += (uint64_t)n;
    } else {
        memcpy(b->token_ids + t0, q->tokens + q->n_computed, (size_t)n * sizeof(int32_t));
        for (int i = 0; i < n; i++) b->positions[t0 + i] = q->n_computed + i;
        if (q->n_computed + n == q->n_tokens) b->logit_rows[b->n_logits++] = t0 + n - 1;
        b->n_prefill_tokens += n;
        s->st.tokens_prefill += (uint64_t)n;
    }
    b->n_tokens += n;
    b->tok_start[r + 1] = b->n_tokens;
    b->logit_start[r + 1] = b->n_logits;
    q->sched_row = r;
    q->n_sched = n;
}

static int budget_left(const sched_t *s) { return s->cfg.max_num_batched_tokens - s->batch.n_tokens; }

/* Re-read the pool's table pointers for q (after admit, swap-in, or an append that
 * took pages: the only calls that may move them). */
static void refresh_tables(sched_t *s, seq_t *q) {
    q->bt = pool_block_table(s->pool, q->id, &q->n_blocks);
    q->st = s->E > 0 ? pool_state_table(s->pool, q->id) : NULL;
}

/* Does the decode append of q (1 token + k look-ahead) fit the blocks it has? */
static bool decode_fits_table(const sched_t *s, const seq_t *q) {
    int64_t need = (int64_t)q->n_committed + 1 + s->cfg.k_spec;
    return need <= (int64_t)q->n_blocks * s->B;
}

/* The decode append for q; the caller checked it fits (table or pool). */
static void commit_decode(sched_t *s, seq_t *q) {
    bool grow = !decode_fits_table(s, q);
    int rc = pool_append(s->pool, q->id, 1, s->cfg.k_spec, NULL, 0);
    assert(rc == HS_OK);
    (void)rc;
    if (grow) refresh_tables(s, q);
    q->n_committed++;
    q->n_spec = s->cfg.k_spec;
    add_row(s, q, 1 + s->cfg.k_spec, true);
}

/* Schedule a decode row for q if the pool gives it room now (no preemption). */
static bool try_decode(sched_t *s, seq_t *q) {
    int k = s->cfg.k_spec;
    if (budget_left(s) < 1 + k || s->batch.n_seqs >= s->cfg.max_num_seqs) return false;
    if (!decode_fits_table(s, q) && pool_can_append(s->pool, q->id, 1, k, NULL, NULL, 0) != HS_OK) return false;
    commit_decode(s, q);
    return true;
}

/* Schedule the next prefill chunk of q within the budget. */
static bool try_prefill(sched_t *s, seq_t *q) {
    int chunk = q->n_committed - q->n_computed;
    int left = budget_left(s);
    if (chunk > left) chunk = left;
    if (chunk <= 0 || s->batch.n_seqs >= s->cfg.max_num_seqs) return false;
    add_row(s, q, chunk, false);
    return true;
}

/* 1. decode, oldest first; preempt the newest when the pool is short. */
static int pass_decode(sched_t *s) {
    sched_batch_t *b = &s->batch;
    const int k = s->cfg.k_spec;
    for (seq_t *q = s->running.head; q;) {
        seq_t *next = q->next;
        if (!seq_decode_ready(q) || q->sched_row >= 0) {
            if (q->n_computed < q->n_committed) s->n_prefilling++;
            q = next;
            continue;
        }
        assert(b->n_seqs < s->cfg.max_num_seqs && budget_left(s) >= 1 + k);
        bool self_preempted = false, q_finished = false;
        for (;;) {
            if (decode_fits_table(s, q)) break; /* no new block: cannot fail */
            int rc = pool_can_append(s->pool, q->id, 1, k, NULL, NULL, 0);
            if (rc == HS_OK) break;
            if (rc == HS_ERR_NO_MEMORY || rc == HS_ERR_INVALID) {
                /* It can never grow further (its blocks would exceed the whole pool or
                 * the pool's token limit): it has reached its length, decided once its
                 * last token is known when that is pending. */
                if (!seq_pending(q)) finish_seq(s, q, SEQ_FINISH_LENGTH);
                self_preempted = q_finished = true; /* nothing to schedule for q */
                break;
            }
            if (rc < 0) return rc; /* a bug: the pool and the scheduler disagree */
            seq_t *victim = s->running.tail;
            assert(victim && victim->sched_row < 0);
            if (victim == q) {
                preempt(s, q);
                self_preempted = true;
                break;
            }
            if (victim == next) next = NULL;
            preempt(s, victim);
        }
        if (self_preempted) {
            if (q_finished) {
                q = next;
                continue;
            }
            break; /* q was the newest running: nothing newer is left */
        }
        commit_decode(s, q);
        q = next;
    }
    return HS_OK;
}

/* 2. swap-in, oldest first. */
static void pass_swap_in(sched_t *s) {
    sched_batch_t *b = &s->batch;
    while (s->swapped.head && s->running.n < s->cfg.max_num_seqs) {
        seq_t *q = s->swapped.head;
        if (pool_can_swap_in(s->pool, q->id, NULL, 0) != HS_OK) break;
        pool_seq_info_t info;
        pool_seq_info(s->pool, q->id, &info);
        int64_t pages = info.n_blocks + s->E;
        if (s->running.n > 0 && pool_free_capacity(s->pool) - pages < s->watermark_pages) break;
        int rc = pool_swap_in(s->pool, q->id, s->cfg.copy, s->cfg.copy_user, NULL, 0);
        assert(rc == HS_OK);
        (void)rc;
        q_remove(&s->swapped, q);
        q->status = SEQ_RUNNING;
        q_insert_sorted(&s->running, q);
        b->n_pages_swapped_in += pages;
        s->st.n_swap_in++;
        refresh_tables(s, q);
        if (q->n_computed < q->n_committed) s->n_prefilling++;
        /* A decode row now (decode rows stay ahead of prefill rows); a part-way
         * prefill continues in the prefill pass. */
        if (seq_decode_ready(q)) try_decode(s, q);
    }
}

/* 3. prefill chunks of running sequences part-way through their prompt. */
static void pass_prefill_running(sched_t *s) {
    if (s->n_prefilling == 0) return; /* counted by the passes before: nothing to walk */
    for (seq_t *q = s->running.head; q && budget_left(s) > 0; q = q->next)
        if (q->sched_row < 0 && q->n_computed < q->n_committed) try_prefill(s, q);
}

/* 4. admission, FIFO with head-of-line blocking. whole: admit only prompts whose
 * uncached part fits the remaining budget in one piece (the seed's policy), unless
 * the batch is empty (a prompt longer than the budget is then chunked). */
static void pass_admit(sched_t *s, bool whole) {
    sched_batch_t *b = &s->batch;
    while (!s->swapped.head && s->waiting.head && s->running.n < s->cfg.max_num_seqs && budget_left(s) > 0 &&
           b->n_seqs < s->cfg.max_num_seqs) {
        seq_t *q = s->waiting.head;
        if (seq_pending(q)) break; /* preempted with its last token in flight: next step */
        const int32_t *toks = s->prefix_caching ? q->tokens : NULL;
        pool_admit_info_t info;
        int rc = pool_can_admit(s->pool, q->id, toks, q->n_tokens, &info, NULL, 0);
        if (rc == HS_AGAIN) break;
        if (rc < 0) {
            /* Can never fit (e.g. grew past the pool by recompute): fail it, go on. */
            finish_seq(s, q, SEQ_FINISH_ERROR);
            continue;
        }
        if (s->running.n > 0 && info.n_pages_avail - info.n_pages_needed < s->watermark_pages) break;
        if (whole && b->n_seqs > 0 && q->n_tokens - info.n_hit_tokens > budget_left(s)) break;
        rc = pool_admit(s->pool, q->id, toks, q->n_tokens, &info, NULL, 0);
        assert(rc == HS_OK);
        /* The hybrid prefix rule: without state checkpoints a stateful pool must not
         * hand out KV-only hits (the recurrent state there is unknown). */
        assert(!s->hits_gated || info.n_hit_tokens == 0);
        q_remove(&s->waiting, q);
        q->status = SEQ_RUNNING;
        q->n_cached = q->n_computed = info.n_hit_tokens;
        q->n_committed = q->n_tokens;
        refresh_tables(s, q);
        q_insert_sorted(&s->running, q);
        b->n_admitted++;
        try_prefill(s, q);
    }
}

int sched_step(sched_t *s, const sched_batch_t **out) {
    if (s->pending) return HS_ERR_STATE;
    sched_batch_t *b = &s->batch;
    b->n_seqs = b->n_tokens = b->n_decode = b->n_decode_tokens = b->n_prefill_tokens = b->n_logits = 0;
    b->n_preempt_recompute = b->n_preempt_swap = b->n_admitted = 0;
    b->n_pages_swapped_out = b->n_pages_swapped_in = 0;
    b->tok_start[0] = 0;
    b->logit_start[0] = 0;
    s->n_ev = 0;
    s->n_prefilling = 0;
    int rc = HS_OK;
    if (s->cfg.policy == SCHED_POLICY_SEED) {
        /* ATOM #602/#659: prefill-first, whole prompts, no mixing. */
        pass_swap_in(s);
        pass_admit(s, true);
        if (b->n_seqs == 0) {
            rc = pass_decode(s);
            if (rc == HS_OK && b->n_seqs == 0) pass_prefill_running(s);
        }
    } else {
        rc = pass_decode(s);
        if (rc == HS_OK) {
            pass_swap_in(s);
            pass_prefill_running(s);
            pass_admit(s, false);
        }
    }
    if (rc != HS_OK) return rc;
    /* Block tables last: every pool call of this step is done, the pointers are stable. */
    for (int r = 0; r < b->n_seqs; r++) {
        const seq_t *q = b->seqs[r];
        b->block_tables[r] = q->bt;
        b->n_blocks[r] = q->n_blocks;
        b->state_pages[r] = q->st;
    }
    s->pending = b->n_seqs > 0;
    s->st.n_steps++;
    *out = b;
    return HS_OK;
}

/* ---- update ------------------------------------------------------------------- */

static int check_update(const sched_t *s, const int32_t *new_tokens, const int32_t *n_new) {
    const sched_batch_t *b = &s->batch;
    const int stride = 1 + s->cfg.k_spec;
    for (int r = 0; r < b->n_seqs; r++) {
        const seq_t *q = b->seqs[r];
        if (!q) continue;
        int nl = b->logit_start[r + 1] - b->logit_start[r];
        int nn = n_new[r];
        if (nl == 0 && nn != 0) return HS_ERR_INVALID;
        if (r >= b->n_decode && nl == 1 && nn != 1) return HS_ERR_INVALID;
        if (r < b->n_decode) {
            if (nn < 1 || nn > stride) return HS_ERR_INVALID;
            /* the accepted drafts must be the ones this row ran */
            const int32_t *ran = b->token_ids + b->tok_start[r] + 1;
            for (int j = 0; j + 1 < nn; j++)
                if (new_tokens[(size_t)r * stride + j] != ran[j]) return HS_ERR_INVALID;
        }
    }
    return HS_OK;
}

int sched_update(sched_t *s, const int32_t *new_tokens, const int32_t *n_new, const sched_event_t **events,
                 int *n_events) {
    sched_batch_t *b = &s->batch;
    if (!s->pending) {
        if (events) *events = s->ev;
        if (n_events) *n_events = s->n_ev;
        return b->n_seqs == 0 ? HS_OK : HS_ERR_STATE;
    }
    if (!new_tokens || !n_new) return HS_ERR_INVALID;
    if (s->n_infl) return HS_ERR_STATE; /* overlapped steps resolve instead */
    int rc = check_update(s, new_tokens, n_new);
    if (rc != HS_OK) return rc;
    const int stride = 1 + s->cfg.k_spec;
    s->pending = false;

    for (int r = 0; r < b->n_seqs; r++) {
        seq_t *q = b->seqs[r];
        if (!q) continue;
        q->sched_row = -1;
        int prev = q->n_computed;
        int nn = n_new[r];
        const int32_t *nt = new_tokens + (size_t)r * stride;
        seq_finish_t fin = SEQ_FINISH_NONE;
        if (r >= b->n_decode) {
            q->n_computed += q->n_sched;
            assert(q->n_computed <= q->n_committed);
        }
        int appended = 0;
        for (int j = 0; j < nn && fin == SEQ_FINISH_NONE; j++) {
            seq_append(q, nt[j]);
            appended++;
            ev_token(s, q);
            fin = seq_check_stop(q, s->cfg.max_model_len);
        }
        if (r < b->n_decode) {
            seq_strip_spec(q);
            if (fin == SEQ_FINISH_NONE) {
                /* 1 + (nn - 1) accepted positions are now computed; commit the drafts. */
                q->n_computed += nn;
                if (nn > 1) {
                    int arc = pool_append(s->pool, q->id, nn - 1, 0, NULL, 0);
                    assert(arc == HS_OK);
                    (void)arc;
                    q->n_committed += nn - 1;
                }
                assert(q->n_computed == q->n_committed && q->n_tokens == q->n_computed + 1);
            }
        }
        (void)appended;
        if (fin != SEQ_FINISH_NONE) {
            finish_seq(s, q, fin);
            continue;
        }
        publish_blocks(s, q, prev);
    }
    if (events) *events = s->ev;
    if (n_events) *n_events = s->n_ev;
    return HS_OK;
}

/* ---- overlapped steps (scheduler.h) --------------------------------------------- */

int sched_advance(sched_t *s) {
    sched_batch_t *b = &s->batch;
    if (!s->pending || s->n_infl || s->cfg.k_spec) return HS_ERR_STATE;
    s->pending = false;
    for (int r = 0; r < b->n_seqs; r++) {
        seq_t *q = b->seqs[r];
        const bool has_logit = b->logit_start[r + 1] > b->logit_start[r];
        if (has_logit) s->infl[b->logit_start[r]] = q;
        if (!q) continue;
        q->sched_row = -1;
        const int prev = q->n_computed;
        q->n_computed += q->n_sched;
        assert(q->n_computed <= q->n_committed);
        if (has_logit) {
            assert(q->n_computed == q->n_committed && q->n_computed == q->n_tokens && !seq_pending(q));
            seq_append(q, SEQ_TOKEN_PENDING);
            q->infl = b->logit_start[r];
            q->ending = seq_n_output(q) >= q->max_tokens || q->n_tokens >= s->cfg.max_model_len;
        }
        publish_blocks(s, q, prev); /* [0, n_computed) excludes the pending token */
    }
    s->n_infl = b->n_logits;
    return HS_OK;
}

int sched_resolve(sched_t *s, const int32_t *tokens, const sched_event_t **events, int *n_events) {
    const int n = s->n_infl;
    if (n > 0 && !tokens) return HS_ERR_INVALID;
    s->n_infl = 0;
    for (int i = 0; i < n; i++) {
        seq_t *q = s->infl[i];
        s->infl[i] = NULL;
        if (!q) continue; /* cancelled, or finished meanwhile */
        assert(q->infl == i && q->tokens[q->n_tokens - 1] == SEQ_TOKEN_PENDING);
        q->tokens[q->n_tokens - 1] = q->last = tokens[i];
        q->infl = -1;
        ev_token(s, q);
        const seq_finish_t fin = seq_check_stop(q, s->cfg.max_model_len);
        assert(fin != SEQ_FINISH_NONE || !q->ending);
        if (fin != SEQ_FINISH_NONE) finish_seq(s, q, fin);
    }
    if (events) *events = s->ev;
    if (n_events) *n_events = s->n_ev;
    return HS_OK;
}

/* ---- checks and helpers ----------------------------------------------------------- */

static int check_queue(const sched_t *s, const squeue_t *q, seq_status_t st, char *err, size_t n) {
    int cnt = 0;
    const seq_t *prev = NULL;
    for (const seq_t *x = q->head; x; prev = x, x = x->next) {
        cnt++;
        if (x->prev != prev) return hs_errf(err, n, HS_ERR_STATE, "queue %s: broken links", seq_status_name(st));
        if (prev && prev->order >= x->order)
            return hs_errf(err, n, HS_ERR_STATE, "queue %s: not age-sorted at id %lld", seq_status_name(st),
                           (long long)x->id);
        if (x->status != st)
            return hs_errf(err, n, HS_ERR_STATE, "id %lld: status %s in queue %s", (long long)x->id,
                           seq_status_name(x->status), seq_status_name(st));
        if (map_get(s, x->id) != x) return hs_errf(err, n, HS_ERR_STATE, "id %lld: not in the id map", (long long)x->id);
        pool_seq_info_t info;
        int rc = pool_seq_info(s->pool, x->id, &info);
        if (st == SEQ_WAITING) {
            if (rc == HS_OK) return hs_errf(err, n, HS_ERR_STATE, "id %lld: waiting but live in the pool", (long long)x->id);
            if (x->n_computed != 0 || x->n_committed != 0)
                return hs_errf(err, n, HS_ERR_STATE, "id %lld: waiting with computed tokens", (long long)x->id);
        } else {
            if (rc != HS_OK) return hs_errf(err, n, HS_ERR_STATE, "id %lld: %s but unknown to the pool", (long long)x->id,
                                            seq_status_name(st));
            if (info.swapped != (st == SEQ_SWAPPED))
                return hs_errf(err, n, HS_ERR_STATE, "id %lld: pool swapped flag disagrees", (long long)x->id);
            if (info.n_tokens != x->n_committed)
                return hs_errf(err, n, HS_ERR_STATE, "id %lld: pool n_tokens %d != n_committed %d", (long long)x->id,
                               info.n_tokens, x->n_committed);
            if (st == SEQ_RUNNING) {
                int nb = 0;
                const int32_t *bt = pool_block_table(s->pool, x->id, &nb);
                if (bt != x->bt || nb != x->n_blocks || (s->E > 0 && pool_state_table(s->pool, x->id) != x->st))
                    return hs_errf(err, n, HS_ERR_STATE, "id %lld: cached pool tables are stale", (long long)x->id);
            }
            if (!(0 <= x->n_cached && x->n_cached <= x->n_computed && x->n_computed <= x->n_committed &&
                  x->n_committed <= x->n_tokens))
                return hs_errf(err, n, HS_ERR_STATE, "id %lld: token counts out of order", (long long)x->id);
        }
        if (x->n_tokens < x->n_prompt || x->n_tokens > x->cap)
            return hs_errf(err, n, HS_ERR_STATE, "id %lld: bad n_tokens", (long long)x->id);
    }
    if (cnt != q->n) return hs_errf(err, n, HS_ERR_STATE, "queue %s: count %d != %d", seq_status_name(st), cnt, q->n);
    return HS_OK;
}

int sched_check(const sched_t *s, char *err, size_t n) {
    int rc;
    if ((rc = check_queue(s, &s->waiting, SEQ_WAITING, err, n)) != HS_OK) return rc;
    if ((rc = check_queue(s, &s->running, SEQ_RUNNING, err, n)) != HS_OK) return rc;
    if ((rc = check_queue(s, &s->swapped, SEQ_SWAPPED, err, n)) != HS_OK) return rc;
    if (s->running.n > s->cfg.max_num_seqs) return hs_errf(err, n, HS_ERR_STATE, "running > max_num_seqs");
    if (s->map_n != (size_t)(s->waiting.n + s->running.n + s->swapped.n))
        return hs_errf(err, n, HS_ERR_STATE, "id map holds %zu, queues %d", s->map_n,
                       s->waiting.n + s->running.n + s->swapped.n);
    pool_stats_t ps;
    pool_stats(s->pool, &ps);
    if (ps.n_seqs != s->running.n + s->swapped.n || ps.n_swapped != s->swapped.n)
        return hs_errf(err, n, HS_ERR_STATE, "pool has %d live (%d swapped), scheduler %d running + %d swapped",
                       ps.n_seqs, ps.n_swapped, s->running.n, s->swapped.n);
    return pool_check(s->pool, err, n);
}

int sched_batch_max_blocks(const sched_batch_t *b) {
    int m = 0;
    for (int r = 0; r < b->n_seqs; r++)
        if (b->n_blocks[r] > m) m = b->n_blocks[r];
    return m;
}

void sched_batch_to_bk(const sched_batch_t *b, int32_t *block_tables_out, int max_blocks, int32_t *state_out,
                       bk_batch_t *out) {
    memset(out, 0, sizeof *out);
    for (int r = 0; r < b->n_seqs; r++) {
        int32_t *row = block_tables_out + (size_t)r * max_blocks;
        int nb = b->n_blocks[r];
        assert(nb <= max_blocks);
        if (nb) memcpy(row, b->block_tables[r], (size_t)nb * sizeof(int32_t));
        for (int i = nb; i < max_blocks; i++) row[i] = -1;
        if (b->n_state_pages > 0 && state_out)
            memcpy(state_out + (size_t)r * b->n_state_pages, b->state_pages[r],
                   (size_t)b->n_state_pages * sizeof(int32_t));
    }
    out->n_seqs = b->n_seqs;
    out->n_tokens = b->n_tokens;
    out->tok_start = b->tok_start;
    out->n_past = b->n_past;
    out->positions = b->positions;
    out->block_tables = block_tables_out;
    out->max_blocks = max_blocks;
    out->state_pages = b->n_state_pages > 0 ? state_out : NULL;
    out->n_state_pages = b->n_state_pages;
    out->logit_rows = b->logit_rows;
    out->n_logits = b->n_logits;
}
