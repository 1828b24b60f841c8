/*
 * engine: the loop behind include/hyserve.h.
 *
 *   submit ──▶ sched (waiting) ─┐
 *   step:  sched_step ──▶ batch ──▶ model_forward ──▶ logits ──▶ bk->pick (stats, draws)
 *                         ▲                                        │
 *                         └── sched_advance / sched_resolve ◀──────┘──▶ events ──▶ poll
 *
 * Overlapped steps (async_scheduling): a step issues its forward and its pick, advances
 * the scheduler (its tokens pending) and returns without waiting; the next step builds
 * and issues its batch, whose rows read the pending tokens where the pick left them on
 * the device (bk_batch_t.prev_rows), and only then waits for the last pick and resolves
 * it. The host's turn (schedule, batch, launch, events) then runs while the device
 * computes. Without overlap a step waits for its own pick. Either way the tokens are
 * the same: the draw of a row depends on (seed, output index) only.
 *
 * The engine owns, in order of creation: the model config, the weights (host,
 * freed once uploaded), the backend, the state map and KV layout, the page pool
 * (bookkeeping), the scheduler, the model (device weights, activations, the
 * pool's memory), and per-request sampling state (seed, logprob options) in a hash
 * table keyed by request id. Events wait in a ring buffer until
 * polled. Single-threaded (hyserve.h).
 */
#include "hyserve.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backend.h"
#include "layout.h"
#include "mcfg.h"
#include "memplan.h"
#include "model.h"
#include "pool.h"
#include "sample.h"
#include "scheduler.h"
#include "util.h"
#include "weights.h"

/* Per-request state the scheduler does not keep. */
typedef struct {
    uint64_t id;              /* 0: empty slot (ids start at 1) */
    bool tomb;                /* deleted (keeps probe chains intact) */
    uint64_t seed;            /* draws are counter-based: (seed, output index) */
    hs_sampling_t sp;         /* as submitted */
    int n_prompt;
    int n_output;
    int n_cached;
    int row;                  /* logits row of its token in the pick in flight */
} req_t;

struct hs_engine {
    hs_engine_config_t cfg;
    mcfg_t mc;
    backend_t *bk;
    kv_layout_t kv;
    statemap_t sm;
    size_t page_bytes;
    pool_t *pool;
    sched_t *sched;
    model_t *model;
    int max_model_len;

    /* host pool for swapped pages */
    void *host_pages;

    /* requests */
    req_t *reqs;              /* open addressing, power-of-two capacity */
    size_t req_cap, req_count, req_used;
    uint64_t next_id;
    uint64_t seed_counter;

    /* per-step scratch */
    int32_t *bt;              /* [max_seqs][bt_stride] */
    int bt_stride;
    int32_t *sp_rows;         /* [max_seqs][E] */
    bk_sample_row_t *smp_rows;/* [max_seqs] rows drawn by bk->pick (not plain greedy) */
    bk_sample_out_t *smp_out; /* [max_seqs] */
    int32_t *lg_argmax;       /* [max_logits] per-row argmax, max and log-sum-exp */
    float *lg_max, *lg_lse;
    int32_t *tokens;          /* [max_logits] the token of each logits row of the resolved pick */
    smp_result_t *results;    /* [max_logits] and its logprobs */
    int32_t *prev_rows;       /* [max_num_batched_tokens] bk_batch_t.prev_rows */
    bool async;               /* overlapped steps */
    bool inflight;            /* a pick awaits pick_wait and sched_resolve */
    int pick_n, pick_n_smp;   /* its logits rows and draws */

    /* events: ring buffer */
    hs_event_t *ev;
    size_t ev_cap, ev_head, ev_count;

    int64_t preempt_total;
    uint64_t prompt_tokens, generated_tokens, steps;
    /* HS_STEP_TIMES=1: host seconds per phase of a step, printed by hs_engine_destroy */
    bool times_on;
    double t_phase[5];
};

/* ---- configuration ------------------------------------------------------------ */

void hs_engine_config_default(hs_engine_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->device = "cpu";
    cfg->load_format = "auto";
    cfg->state_layout = "paged";
    cfg->kv_dtype = "auto";
    cfg->max_num_seqs = 256;
    cfg->max_num_batched_tokens = 2048;
    cfg->block_size = 16;
    cfg->mem_util = 0.9;
    cfg->enable_prefix_caching = true;
    cfg->async_scheduling = -1;
}

/* ---- request table -------------------------------------------------------------- */

static size_t hash_id(uint64_t id) {
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdull;
    id ^= id >> 33;
    return (size_t)id;
}

static req_t *req_find(const hs_engine_t *e, uint64_t id) {
    size_t mask = e->req_cap - 1;
    for (size_t i = hash_id(id) & mask;; i = (i + 1) & mask) {
        req_t *r = &e->reqs[i];
        if (r->id == 0 && !r->tomb) return NULL;
        if (r->id == id && !r->tomb) return r;
    }
}

static req_t *req_insert(hs_engine_t *e, uint64_t id);

static void req_grow(hs_engine_t *e) {
    req_t *old = e->reqs;
    size_t cap = e->req_cap;
    e->req_cap = cap ? cap * 2 : 64;
    if (e->req_count * 4 < cap) e->req_cap = cap; /* mostly tombstones: rehash in place size */
    e->reqs = hs_calloc(e->req_cap, sizeof *e->reqs);
    e->req_count = e->req_used = 0;
    for (size_t i = 0; i < cap; i++)
        if (old[i].id && !old[i].tomb) *req_insert(e, old[i].id) = old[i];
    free(old);
}

static req_t *req_insert(hs_engine_t *e, uint64_t id) {
    if ((e->req_used + 1) * 4 >= e->req_cap * 3) req_grow(e);
    size_t mask = e->req_cap - 1;
    for (size_t i = hash_id(id) & mask;; i = (i + 1) & mask) {
        req_t *r = &e->reqs[i];
        if (r->id == 0 && !r->tomb) {
            memset(r, 0, sizeof *r);
            r->id = id;
            e->req_count++;
            e->req_used++;
            return r;
        }
    }
}

static void req_remove(hs_engine_t *e, req_t *r) {
    r->tomb = true;
    e->req_count--;
}

/* ---- events --------------------------------------------------------------------- */

static void ev_push(hs_engine_t *e, const hs_event_t *ev) {
    if (e->ev_count == e->ev_cap) {
        size_t cap = e->ev_cap ? e->ev_cap * 2 : 256;
        hs_event_t *q = hs_malloc(cap * sizeof *q);
        for (size_t i = 0; i < e->ev_count; i++) q[i] = e->ev[(e->ev_head + i) % e->ev_cap];
        free(e->ev);
        e->ev = q;
        e->ev_cap = cap;
        e->ev_head = 0;
    }
    e->ev[(e->ev_head + e->ev_count) % e->ev_cap] = *ev;
    e->ev_count++;
}

bool hs_engine_poll(hs_engine_t *e, hs_event_t *ev) {
    if (e->ev_count == 0) return false;
    *ev = e->ev[e->ev_head];
    e->ev_head = (e->ev_head + 1) % e->ev_cap;
    e->ev_count--;
    return true;
}

static void finish_event(hs_engine_t *e, req_t *r, hs_finish_t why) {
    hs_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.id = r->id;
    ev.token = -1;
    ev.finish = why;
    ev.n_prompt = r->n_prompt;
    ev.n_output = r->n_output;
    ev.n_cached = r->n_cached;
    ev_push(e, &ev);
    req_remove(e, r);
}

/* ---- swap copies ------------------------------------------------------------------ */

static void swap_copy(void *user, int64_t page, int64_t slot, int dir) {
    hs_engine_t *e = user;
    const bk_pool_t *bp = model_pool(e->model);
    char *host = (char *)e->host_pages + (size_t)slot * e->page_bytes;
    if (dir == POOL_COPY_TO_HOST)
        e->bk->page_out(e->bk, bp, page, host);
    else
        e->bk->page_in(e->bk, bp, page, host);
}

/* ---- create / destroy ----------------------------------------------------------- */

static int parse_layout(const char *s, layout_kind_t *k) {
    if (!s || !strcasecmp(s, "paged")) *k = LAYOUT_PAGED;
    else if (!strcasecmp(s, "slots")) *k = LAYOUT_SLOTS;
    else if (!strcasecmp(s, "coupled")) *k = LAYOUT_COUPLED;
    else return HS_ERR_INVALID;
    return HS_OK;
}

int hs_engine_create(const hs_engine_config_t *cfg, hs_engine_t **out, char *err, size_t n) {
    *out = NULL;
    if (!cfg->model) return hs_errf(err, n, HS_ERR_INVALID, "no model given");
    hs_engine_t *e = hs_calloc(1, sizeof *e);
    e->cfg = *cfg;
    e->next_id = 1;
    e->times_on = getenv("HS_STEP_TIMES") != NULL;
    wt_model_t w;
    memset(&w, 0, sizeof w);
    int rc;

    if ((rc = mcfg_load(cfg->model, &e->mc, err, n)) != HS_OK) goto fail;
    const mcfg_t *c = &e->mc;

    layout_kind_t kind;
    if (parse_layout(cfg->state_layout, &kind) != HS_OK) {
        rc = hs_errf(err, n, HS_ERR_INVALID, "state layout '%s': expected paged, slots or coupled", cfg->state_layout);
        goto fail;
    }
    hs_dtype_t kv_dtype = HS_BF16, ssm_dtype = c->ssm_dtype;
    bool kv_auto = !cfg->kv_dtype || !strcmp(cfg->kv_dtype, "auto");
    if (!kv_auto && hs_dtype_parse(cfg->kv_dtype, &kv_dtype) != HS_OK) {
        rc = hs_errf(err, n, HS_ERR_INVALID, "kv dtype '%s': expected bf16 or fp8", cfg->kv_dtype);
        goto fail;
    }
    if (cfg->state_dtype && (hs_dtype_parse(cfg->state_dtype, &ssm_dtype) != HS_OK ||
                             (ssm_dtype != HS_F32 && ssm_dtype != HS_BF16))) {
        rc = hs_errf(err, n, HS_ERR_INVALID, "state dtype '%s': expected f32 or bf16", cfg->state_dtype);
        goto fail;
    }
    if (cfg->max_num_seqs < 1 || cfg->max_num_batched_tokens < cfg->max_num_seqs || cfg->block_size < 1) {
        rc = hs_errf(err, n, HS_ERR_INVALID,
                     "need max_num_seqs >= 1, max_num_batched_tokens >= max_num_seqs and block_size >= 1");
        goto fail;
    }

    /* Weights (host). */
    wt_opts_t wo;
    memset(&wo, 0, sizeof wo);
    wo.n_threads = cfg->n_threads;
    wo.touch = false;
    wt_load_format_t lf;
    if (wt_load_format_parse(cfg->load_format ? cfg->load_format : "auto", &lf) != HS_OK) {
        rc = hs_errf(err, n, HS_ERR_INVALID, "load format '%s': expected auto or dummy", cfg->load_format);
        goto fail;
    }
    rc = lf == WT_LOAD_DUMMY ? wt_load_dummy(c, &wo, &w, err, n) : wt_load(cfg->model, c, &wo, &w, err, n);
    if (rc != HS_OK) goto fail;

    /* Backend. */
    if (!cfg->device || !strcmp(cfg->device, "cpu")) {
        e->bk = backend_cpu_create(cfg->n_threads);
    } else if (!strcmp(cfg->device, "cuda")) {
        /* What the CUDA kernels are built for (every released model has it). */
        if (c->lin_k_dim != 128 || c->lin_v_dim != 128 || c->conv_kernel != 4 || c->head_dim % 32 ||
            c->head_dim > 256) {
            rc = hs_errf(err, n, HS_ERR_UNSUPPORTED,
                         "%s: the CUDA backend needs linear_key_head_dim = linear_value_head_dim = 128, "
                         "linear_conv_kernel_dim = 4 and head_dim a multiple of 32 up to 256 (got %d, %d, %d, %d); "
                         "use --device cpu",
                         cfg->model, c->lin_k_dim, c->lin_v_dim, c->conv_kernel, c->head_dim);
            goto fail;
        }
        if (!kv_auto && kv_dtype != HS_BF16) {
            rc = hs_errf(err, n, HS_ERR_UNSUPPORTED, "kv dtype '%s': the CUDA backend keeps the KV cache in bf16",
                         cfg->kv_dtype);
            goto fail;
        }
        e->bk = backend_cuda_create(0, err, n);
        if (!e->bk) {
            rc = HS_ERR_UNSUPPORTED;
            goto fail;
        }
    } else {
        rc = hs_errf(err, n, HS_ERR_INVALID, "device '%s': expected cpu or cuda", cfg->device);
        goto fail;
    }

    /* KV "auto": the backend's activation dtype (fp32 on the CPU reference, bf16 on
     * CUDA). The conv state holds pre-conv activations, so it is stored in the
     * activation dtype too (the statemap reads it from the config's dtype). */
    if (kv_auto) kv_dtype = e->bk->act_dtype;
    mcfg_t cs = *c;
    cs.dtype = e->bk->act_dtype;

    /* Layout: KV block = one page (paged, slots); coupled pages also carry a state. */
    kv_layout_init(&e->kv, c, 1, cfg->block_size, kv_dtype, 0);
    size_t base = 0;
    e->page_bytes = e->kv.kv_bytes;
    if (kind == LAYOUT_COUPLED) {
        base = e->kv.kv_bytes;
        e->page_bytes = e->kv.kv_bytes + statemap_bytes(&cs, 1, ssm_dtype, 0);
    }
    if ((rc = statemap_init(&e->sm, &cs, 1, ssm_dtype, 0, e->page_bytes, base, 0, err, n)) != HS_OK) goto fail;

    /* Weights and activations first: on a GPU the pool gets what is left. */
    model_config_t mcfg = {.max_tokens = cfg->max_num_batched_tokens, .max_logits = cfg->max_num_seqs};
    if ((rc = model_create(&e->model, &w, e->bk, &mcfg, err, n)) != HS_OK) goto fail;
    wt_free(&w);

    e->max_model_len = cfg->max_model_len > 0 ? cfg->max_model_len : c->max_position_embeddings;
    size_t pool_bytes = cfg->pool_bytes;
    if (!pool_bytes && e->bk->mem_info) {
        /* budget = total * mem_util - what is in use now (weights, activations, runtime) */
        size_t free_b = 0, total_b = 0;
        e->bk->mem_info(e->bk, &free_b, &total_b);
        double budget = (double)total_b * cfg->mem_util - (double)(total_b - free_b);
        pool_bytes = budget > 0 ? (size_t)budget : 0;
    }
    if (!pool_bytes) pool_bytes = (size_t)1 << 30;
    int64_t n_pages = (int64_t)(pool_bytes / e->page_bytes);
    if (n_pages < 2) {
        rc = hs_errf(err, n, HS_ERR_NO_MEMORY, "pool of %zu bytes holds fewer than 2 pages of %zu bytes", pool_bytes,
                     e->page_bytes);
        goto fail;
    }
    if ((rc = model_alloc_pool(e->model, n_pages, e->page_bytes, &e->kv, &e->sm, err, n)) != HS_OK) goto fail;
    /* A request can never need more pages than the pool: cap the model length. */
    int64_t fit_tokens = (n_pages - e->sm.n_pages) * cfg->block_size;
    if (kind == LAYOUT_SLOTS) fit_tokens -= (int64_t)cfg->max_num_seqs * e->sm.n_pages * cfg->block_size;
    if (fit_tokens < e->max_model_len) e->max_model_len = (int)(fit_tokens > 1 ? fit_tokens : 1);

    pool_config_t pc;
    pool_config_default(&pc);
    pc.kind = kind;
    pc.n_pages = n_pages;
    pc.block_size = cfg->block_size;
    pc.state_pages = kind == LAYOUT_COUPLED ? (c->n_gdn > 0 ? 1 : 0) : e->sm.n_pages;
    pc.n_slots = kind == LAYOUT_SLOTS ? cfg->max_num_seqs : 0;
    pc.max_seqs = cfg->max_num_seqs * 4 > 1024 ? cfg->max_num_seqs * 4 : 1024;
    pc.max_seq_tokens = e->max_model_len;
    pc.prefix_caching = cfg->enable_prefix_caching;
    pc.n_host_pages = (int64_t)(cfg->swap_bytes / e->page_bytes);
    if ((rc = pool_create(&e->pool, &pc, err, n)) != HS_OK) goto fail;
    if (pc.n_host_pages > 0) e->host_pages = hs_malloc((size_t)pc.n_host_pages * e->page_bytes);

    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = cfg->max_num_seqs;
    sc.max_num_batched_tokens = cfg->max_num_batched_tokens;
    sc.max_model_len = e->max_model_len;
    sc.preempt = cfg->preempt_mode == 1 && pc.n_host_pages > 0 ? SCHED_PREEMPT_SWAP : SCHED_PREEMPT_RECOMPUTE;
    sc.copy = swap_copy;
    sc.copy_user = e;
    if ((rc = sched_create(&e->sched, &sc, e->pool, err, n)) != HS_OK) goto fail;


    e->bt_stride = 16;
    e->bt = hs_malloc(sizeof(int32_t) * (size_t)cfg->max_num_seqs * (size_t)e->bt_stride);
    e->sp_rows = hs_malloc(sizeof(int32_t) * (size_t)cfg->max_num_seqs * (size_t)(e->sm.n_pages + 1));
    e->smp_rows = hs_malloc(sizeof(bk_sample_row_t) * (size_t)cfg->max_num_seqs);
    e->smp_out = hs_malloc(sizeof(bk_sample_out_t) * (size_t)cfg->max_num_seqs);
    e->lg_argmax = hs_malloc(sizeof(int32_t) * (size_t)cfg->max_num_seqs);
    e->lg_max = hs_malloc(sizeof(float) * (size_t)cfg->max_num_seqs);
    e->lg_lse = hs_malloc(sizeof(float) * (size_t)cfg->max_num_seqs);
    e->tokens = hs_malloc(sizeof(int32_t) * (size_t)cfg->max_num_seqs);
    e->results = hs_malloc(sizeof(smp_result_t) * (size_t)cfg->max_num_seqs);
    e->prev_rows = hs_malloc(sizeof(int32_t) * (size_t)cfg->max_num_batched_tokens);
    e->async = cfg->async_scheduling > 0 || (cfg->async_scheduling < 0 && !strcmp(e->bk->name, "cuda"));
    req_grow(e);
    hs_info("engine: %s on %s, %s layout, %lld pages of %zu bytes, E = %d, max model len %d%s", c->model_type,
            e->bk->name, cfg->state_layout ? cfg->state_layout : "paged", (long long)n_pages, e->page_bytes,
            e->sm.n_pages, e->max_model_len, e->async ? ", overlapped steps" : "");
    *out = e;
    return HS_OK;
fail:
    wt_free(&w);
    hs_engine_destroy(e);
    return rc;
}

void hs_engine_destroy(hs_engine_t *e) {
    if (!e) return;
    if (e->times_on && e->steps > 0) {
        static const char *nm[5] = {"schedule", "forward (enqueue)", "resolve the last pick (waits for the device)",
                                    "pick (enqueue) and advance", "resolve without overlap"};
        fprintf(stderr, "hyserve: info: host time per step over %llu steps (HS_STEP_TIMES):",
                (unsigned long long)e->steps);
        for (int i = 0; i < 5; i++) fprintf(stderr, " %s %.1f us%s", nm[i], e->t_phase[i] * 1e6 / (double)e->steps,
                                            i < 4 ? "," : "\n");
    }
    sched_destroy(e->sched);
    pool_destroy(e->pool);
    model_destroy(e->model);
    statemap_free(&e->sm);
    if (e->bk) e->bk->destroy(e->bk);
    free(e->host_pages);
    free(e->reqs);
    free(e->bt);
    free(e->sp_rows);
    free(e->smp_rows);
    free(e->smp_out);
    free(e->lg_argmax);
    free(e->lg_max);
    free(e->lg_lse);
    free(e->tokens);
    free(e->results);
    free(e->prev_rows);
    free(e->ev);
    free(e);
}

/* ---- requests -------------------------------------------------------------------- */

int hs_engine_submit(hs_engine_t *e, const int32_t *prompt, int n_prompt, const hs_sampling_t *sp, uint64_t *id,
                     char *err, size_t n) {
    if (n_prompt < 1) return hs_errf(err, n, HS_ERR_INVALID, "the prompt is empty");
    if (n_prompt >= e->max_model_len)
        return hs_errf(err, n, HS_ERR_INVALID, "the prompt has %d tokens; this model's context is %d tokens",
                       n_prompt, e->max_model_len);
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= e->mc.vocab)
            return hs_errf(err, n, HS_ERR_INVALID, "token id %d at position %d is outside the vocabulary (%d)",
                           prompt[i], i, e->mc.vocab);
    int rc = smp_validate(sp, err, n);
    if (rc != HS_OK) return rc;

    sampling_params_t p;
    sampling_params_default(&p);
    p.temperature = sp->temperature;
    p.top_p = sp->top_p;
    p.top_k = sp->top_k;
    p.min_p = sp->min_p;
    p.max_tokens = sp->max_tokens;
    p.ignore_eos = sp->ignore_eos;
    p.n_eos = e->mc.n_eos < SEQ_MAX_EOS ? e->mc.n_eos : SEQ_MAX_EOS;
    for (int i = 0; i < p.n_eos; i++) p.eos_ids[i] = e->mc.eos_ids[i];
    int32_t stop_tokens[HS_MAX_STOP_SEQS * HS_MAX_STOP_LEN], stop_lens[HS_MAX_STOP_SEQS];
    int o = 0;
    for (int s = 0; s < sp->n_stop; s++) {
        for (int j = 0; j < sp->stop_len[s]; j++) stop_tokens[o++] = sp->stop[s][j];
        stop_lens[s] = sp->stop_len[s];
    }
    p.stop_tokens = stop_tokens;
    p.stop_lens = stop_lens;
    p.n_stop = sp->n_stop;
    p.logprobs = sp->logprobs;
    p.top_logprobs = sp->top_logprobs;
    p.seed = sp->has_seed ? sp->seed : 0x5eed0000ull + e->seed_counter++;

    uint64_t rid = e->next_id;
    rc = sched_submit(e->sched, (int64_t)rid, prompt, n_prompt, &p, err, n);
    if (rc != HS_OK) return rc;
    e->next_id++;
    req_t *r = req_insert(e, rid);
    r->sp = *sp;
    r->n_prompt = n_prompt;
    r->seed = p.seed;
    *id = rid;
    return HS_OK;
}

int hs_engine_cancel(hs_engine_t *e, uint64_t id) {
    req_t *r = req_find(e, id);
    if (!r) return HS_ERR_NOT_FOUND;
    int rc = sched_cancel(e->sched, (int64_t)id);
    if (rc != HS_OK) return rc;
    finish_event(e, r, HS_FINISH_CANCELLED);
    return HS_OK;
}

bool hs_engine_has_work(const hs_engine_t *e) { return !sched_idle(e->sched); }

static hs_finish_t finish_of(int f) {
    switch (f) {
    case SEQ_FINISH_LENGTH: return HS_FINISH_LENGTH;
    case SEQ_FINISH_STOP: return HS_FINISH_STOP;
    case SEQ_FINISH_CANCELLED: return HS_FINISH_CANCELLED;
    case SEQ_FINISH_ERROR: return HS_FINISH_ERROR;
    default: return HS_FINISH_NONE;
    }
}

/* Queue the token choice of the batch's logits rows (k = 0: row s has at most one, at
 * logit_start[s]). Greedy rows without top_logprobs need only the argmax and the
 * log-sum-exp; every other row gets a draw, of (seed, index of the output token), so
 * batching, preemption and overlap do not change it. */
static void pick_start(hs_engine_t *e, const sched_batch_t *b, const float *dev_logits) {
    int n_smp = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        if (b->logit_start[s + 1] == b->logit_start[s] || !b->seqs[s]) continue;
        req_t *r = req_find(e, (uint64_t)b->ids[s]);
        assert(r);
        r->row = b->logit_start[s];
        if (r->sp.temperature == 0 && r->sp.top_logprobs == 0) continue;
        bk_sample_row_t *q = &e->smp_rows[n_smp++];
        q->row = r->row;
        q->temperature = r->sp.temperature;
        q->top_k = r->sp.top_k;
        q->top_p = r->sp.top_p;
        q->min_p = r->sp.min_p;
        q->n_top = r->sp.top_logprobs;
        q->seed = r->seed;
        q->step = (uint64_t)seq_n_output(b->seqs[s]);
    }
    e->bk->pick(e->bk, dev_logits, b->n_logits, e->mc.vocab, e->smp_rows, n_smp);
    e->pick_n = b->n_logits;
    e->pick_n_smp = n_smp;
    e->inflight = true;
}

/* Wait for the pick in flight: each logits row's token and logprobs. */
static void pick_collect(hs_engine_t *e) {
    assert(e->inflight);
    e->bk->pick_wait(e->bk, e->lg_argmax, e->lg_max, e->lg_lse, e->smp_out);
    e->inflight = false;
    for (int i = 0; i < e->pick_n; i++) {
        smp_result_t *res = &e->results[i];
        res->token = e->tokens[i] = e->lg_argmax[i];
        res->logprob = e->lg_max[i] - e->lg_lse[i];
        res->n_top = 0;
    }
    for (int i = 0; i < e->pick_n_smp; i++) {
        const bk_sample_out_t *o = &e->smp_out[i];
        smp_result_t *res = &e->results[e->smp_rows[i].row];
        res->token = e->tokens[e->smp_rows[i].row] = o->token;
        res->logprob = o->logprob;
        res->n_top = o->n_top;
        memcpy(res->top_ids, o->top_ids, sizeof(int32_t) * (size_t)o->n_top);
        memcpy(res->top_logprobs, o->top_logprobs, sizeof(float) * (size_t)o->n_top);
    }
}

/* The scheduler's events of this call (sched_step's, then the resolved tokens'). */
static void emit_events(hs_engine_t *e, const sched_event_t *evs, int n_ev) {
    for (int i = 0; i < n_ev; i++) {
        const sched_event_t *se = &evs[i];
        req_t *r = req_find(e, (uint64_t)se->id);
        if (!r) continue; /* cancelled meanwhile */
        if (se->kind == SCHED_EV_TOKEN) {
            hs_event_t ev;
            memset(&ev, 0, sizeof ev);
            ev.id = r->id;
            ev.token = se->token;
            ev.first = se->index == 0;
            /* The row's pick result carries the logprobs (k = 0: one token per row). */
            assert(r->row >= 0 && r->row < e->pick_n && e->tokens[r->row] == se->token);
            const smp_result_t *res = &e->results[r->row];
            ev.logprob = res->logprob;
            ev.n_top = r->sp.top_logprobs < res->n_top ? r->sp.top_logprobs : res->n_top;
            memcpy(ev.top_ids, res->top_ids, sizeof(int32_t) * (size_t)ev.n_top);
            memcpy(ev.top_logprobs, res->top_logprobs, sizeof(float) * (size_t)ev.n_top);
            if (ev.first) {
                const seq_t *q = sched_find(e->sched, se->id);
                r->n_cached = q ? q->n_cached : 0;
            }
            r->n_output++;
            e->generated_tokens++;
            ev_push(e, &ev);
        } else {
            r->n_output = se->n_output;
            finish_event(e, r, finish_of(se->finish));
        }
    }
}

/* Resolve the pick in flight, if any (else only sched_step's events): its tokens into
 * the scheduler, its events out. */
static int resolve(hs_engine_t *e) {
    const bool had = e->inflight;
    if (had) pick_collect(e);
    const sched_event_t *evs;
    int n_ev;
    int rc = sched_resolve(e->sched, had ? e->tokens : NULL, &evs, &n_ev);
    if (rc != HS_OK) return rc;
    emit_events(e, evs, n_ev);
    return HS_OK;
}

int hs_engine_step(hs_engine_t *e) {
    const sched_batch_t *b;
    double tp = e->times_on ? hs_now() : 0;
#define PHASE(i)                                                                                                   \
    do {                                                                                                           \
        if (e->times_on) {                                                                                         \
            const double t_ = hs_now();                                                                            \
            e->t_phase[i] += t_ - tp;                                                                              \
            tp = t_;                                                                                               \
        }                                                                                                          \
    } while (0)
    int rc = sched_step(e->sched, &b);
    if (rc != HS_OK) return rc;
    e->preempt_total += b->n_preempt_recompute + b->n_preempt_swap;
    const float *dev_logits = NULL;
    if (b->n_seqs > 0) {
        e->steps++;
        /* Block tables into a dense [S][max_blocks] array. */
        int mb = sched_batch_max_blocks(b);
        if (mb > e->bt_stride) {
            while (e->bt_stride < mb) e->bt_stride *= 2;
            e->bt = hs_realloc(e->bt, sizeof(int32_t) * (size_t)e->cfg.max_num_seqs * (size_t)e->bt_stride);
        }
        bk_batch_t bb;
        sched_batch_to_bk(b, e->bt, e->bt_stride, e->sp_rows, &bb);
        /* Tokens still pending (a decode row's only token) are the pick's in flight. */
        if (e->inflight) {
            bool any = false;
            for (int t = 0; t < b->n_tokens; t++) e->prev_rows[t] = -1;
            for (int s = 0; s < b->n_decode; s++) {
                const int t = b->tok_start[s];
                if (b->token_ids[t] != SEQ_TOKEN_PENDING) continue;
                const req_t *r = req_find(e, (uint64_t)b->ids[s]);
                assert(r && r->row >= 0 && r->row < e->pick_n);
                e->prev_rows[t] = r->row;
                any = true;
            }
            if (any) bb.prev_rows = e->prev_rows;
        }
        PHASE(0);
        dev_logits = model_forward(e->model, &bb, b->token_ids);
        PHASE(1);
    }
    /* Overlapped: the last step's tokens, while this one runs. */
    rc = resolve(e);
    if (rc != HS_OK) return rc;
    PHASE(2);
    if (b->n_seqs > 0) {
        pick_start(e, b, dev_logits);
        rc = sched_advance(e->sched);
        if (rc != HS_OK) return rc;
        e->prompt_tokens += (uint64_t)b->n_prefill_tokens;
        PHASE(3);
        if (!e->async) {
            rc = resolve(e);
            if (rc != HS_OK) return rc;
        }
    }
    PHASE(4);
#undef PHASE
    return HS_OK;
}

/* ---- introspection --------------------------------------------------------------- */

void hs_engine_stats(const hs_engine_t *e, hs_stats_t *st) {
    memset(st, 0, sizeof *st);
    sched_stats_t ss;
    sched_stats(e->sched, &ss);
    pool_stats_t ps;
    pool_stats(e->pool, &ps);
    st->n_running = ss.n_running;
    st->n_waiting = ss.n_waiting;
    st->n_swapped = ss.n_swapped;
    st->pages_total = ps.n_pages;
    st->pages_free = ps.n_free;
    st->pages_kv = ps.n_kv;
    st->pages_state = ps.n_state;
    st->pages_cached = ps.n_cached;
    st->state_pages_per_request = ps.state_pages;
    st->prefix_hit_tokens = (int64_t)ps.hit_tokens;
    st->prefix_query_tokens = (int64_t)ps.prompt_tokens;
    st->preemptions = (int64_t)(ss.n_preempt_recompute + ss.n_preempt_swap);
    st->prompt_tokens = (int64_t)e->prompt_tokens;
    st->generated_tokens = (int64_t)e->generated_tokens;
    st->steps = (int64_t)e->steps;
}

void hs_engine_info(const hs_engine_t *e, hs_model_info_t *info) {
    memset(info, 0, sizeof *info);
    info->vocab = e->mc.vocab;
    info->max_model_len = e->max_model_len;
    info->n_eos = e->mc.n_eos < 8 ? e->mc.n_eos : 8;
    for (int i = 0; i < info->n_eos; i++) info->eos_ids[i] = e->mc.eos_ids[i];
    snprintf(info->model_type, sizeof info->model_type, "%s", e->mc.model_type);
    const mcfg_t *c = &e->mc;
    mcfg_t cs = *c;
    cs.dtype = e->bk->act_dtype; /* how the backend stores the weights */
    const int64_t wsz = (int64_t)hs_dtype_size(cs.dtype), H = c->hidden;
    info->weight_bytes = (int64_t)mem_weight_bytes(&cs, 1, HS_BF16, false) - (int64_t)c->vocab * H * wsz;
    int n_moe = 0;
    for (int l = 0; l < c->n_layers; l++) n_moe += mcfg_layer_is_moe(c, l);
    info->n_experts = n_moe ? c->n_experts : 0;
    info->top_k = n_moe ? c->n_experts_per_tok : 0;
    info->expert_bytes = n_moe ? (int64_t)n_moe * 3 * H * c->moe_intermediate * wsz : 0;
    info->state_bytes = (int64_t)statemap_bytes(&cs, 1, e->sm.ssm_dtype, 0);
    info->kv_bytes_per_token = (int64_t)(e->kv.kv_bytes / (size_t)e->kv.block_size);
}

int hs_engine_membw(hs_engine_t *e, double *bytes_per_s) {
    const size_t n = (size_t)256 << 20;
    backend_t *bk = e->bk;
    void *a = bk->alloc(bk, n), *b = a ? bk->alloc(bk, n) : NULL;
    if (!b) {
        if (a) bk->free(bk, a);
        return HS_ERR_NO_MEMORY;
    }
    double t[5];
    bk->copy(bk, b, a, n); /* warm-up */
    bk->sync(bk);
    for (int i = 0; i < 5; i++) {
        const double t0 = hs_now();
        bk->copy(bk, b, a, n);
        bk->sync(bk);
        t[i] = hs_now() - t0;
    }
    for (int i = 1; i < 5; i++) /* median */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            const double x = t[j];
            t[j] = t[j - 1], t[j - 1] = x;
        }
    *bytes_per_s = 2.0 * (double)n / t[2];
    bk->free(bk, a);
    bk->free(bk, b);
    return HS_OK;
}

int hs_engine_check(const hs_engine_t *e, char *err, size_t n) { return sched_check(e->sched, err, n); }
