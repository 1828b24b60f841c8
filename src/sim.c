/*
 * sim: workload replay against the real scheduler and pool with a step-time model
 * (the model and its constants are documented in sim.h). The loop, per layout:
 *
 *   t = 0
 *   repeat
 *     submit every request that has arrived while the client's in-flight count is
 *     under max_concurrency (the benchmark client's semaphore; its clock starts now)
 *     sched_step -> batch; t += step_time(batch)
 *     every row with logits gets one token (ignore_eos: lengths are the workload's)
 *     sched_update -> events: first token (TTFT), finish (TPOT, in-flight - 1)
 *     sample the pool's occupancy
 *   until every request finished
 *
 * Nothing here touches device memory; one run of 1,280 requests × 2k tokens is about
 * 10k steps of O(running) work each.
 */
#include "sim.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "memplan.h"
#include "pool.h"

#define GIB (1024.0 * 1024.0 * 1024.0)

/* Usable memory as the driver reports it; datasheet bandwidth and dense bf16 peak. */
const sim_gpu_t sim_gpus[] = {
    {"h100-80g", 79.18, 3.35, 989.0, 50.0},
    {"h200-141g", 139.8, 4.8, 989.0, 50.0},
    {"b200-180g", 178.35, 8.0, 2250.0, 50.0},
    {"mi300x-192g", 191.98, 5.3, 1307.0, 50.0},
    {"mi355x-288g", 287.98, 8.0, 2500.0, 50.0},
    {NULL, 0, 0, 0, 0},
};

const sim_gpu_t *sim_gpu_find(const char *name) {
    for (const sim_gpu_t *g = sim_gpus; g->name; g++) {
        if (!strcmp(g->name, name)) return g;
        /* also accept the short name: "h100", "mi355x" */
        size_t l = strlen(name);
        if (!strncmp(g->name, name, l) && g->name[l] == '-') return g;
    }
    return NULL;
}

const char *sim_layout_name(layout_kind_t k) {
    switch (k) {
    case LAYOUT_PAGED: return "paged";
    case LAYOUT_SLOTS: return "slots";
    case LAYOUT_COUPLED: return "coupled";
    }
    return "?";
}

void sim_config_default(sim_config_t *c) {
    memset(c, 0, sizeof *c);
    c->tp = 1;
    c->gpu = sim_gpu_find("h100-80g");
    c->kv_dtype = HS_BF16;
    c->state_dtype = HS_BF16;
    c->weights_dtype = HS_BF16;
    c->mem_util = 0.9;
    c->reserve_gib = -1;
    c->block_size = 16;
    c->max_num_seqs = 512;
    c->max_num_batched_tokens = 16384;
    c->preempt = SCHED_PREEMPT_RECOMPUTE;
    c->swap_gib = 64;
    c->occ_buckets = 48;
    c->k_spec = 0;
    c->accept = 0.7;
}

/* ---- workload ------------------------------------------------------------------ */

static uint64_t rng_u64(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_unit(uint64_t *s) { return (double)(rng_u64(s) >> 11) * (1.0 / 9007199254740992.0); }
static int rng_len(uint64_t *s, int len, double ratio) {
    int lo = (int)(len * ratio);
    if (lo < 1) lo = 1;
    if (lo > len) lo = len;
    return lo + (int)(rng_u64(s) % (uint64_t)(len - lo + 1));
}

void sim_workload_random(sim_workload_t *w, int n, int in_len, int out_len, double ratio, double rate,
                         double long_fraction, int long_in, int long_out, uint64_t seed) {
    w->n = n;
    w->arrival = hs_calloc((size_t)n, sizeof(double));
    w->in_len = hs_calloc((size_t)n, sizeof(int32_t));
    w->out_len = hs_calloc((size_t)n, sizeof(int32_t));
    uint64_t s = seed;
    double t = 0;
    for (int i = 0; i < n; i++) {
        bool lng = long_fraction > 0 && rng_unit(&s) < long_fraction;
        w->in_len[i] = rng_len(&s, lng ? long_in : in_len, ratio);
        w->out_len[i] = rng_len(&s, lng ? long_out : out_len, ratio);
        if (rate > 0) t += -log(1.0 - rng_unit(&s)) / rate;
        w->arrival[i] = t;
    }
}

void sim_workload_free(sim_workload_t *w) {
    hs_free(w->arrival);
    hs_free(w->in_len);
    hs_free(w->out_len);
    memset(w, 0, sizeof *w);
}

/* ---- parameters ------------------------------------------------------------------ */

typedef struct {
    double lin;          /* linear params read every step, in weights_dtype: attention, GDN, dense FFN, shared expert */
    double bf16_step;    /* params read every step in bf16: routers */
    double lm_head;      /* V × H, bf16 */
    double embed;        /* V × H, bf16, resident only (0 when tied) */
    double expert;       /* one routed expert of one layer */
    int n_moe;           /* MoE layers */
    double mtp_lin;      /* MTP layer, params read every draft pass: fc [H, 2H], one attention
                            layer, shared expert or dense FFN (its routed experts: expert) */
} sim_params_t;

static void params_of(const mcfg_t *c, sim_params_t *p) {
    memset(p, 0, sizeof *p);
    double H = c->hidden;
    for (int l = 0; l < c->n_layers; l++) {
        if (mcfg_is_attn(c, l)) {
            double qd = (double)c->n_heads * c->head_dim;
            double a = H * qd * (c->attn_output_gate ? 2 : 1) + 2 * H * c->n_kv_heads * c->head_dim + qd * H;
            p->lin += a;
            p->mtp_lin = a;
        } else {
            double vd = mcfg_value_dim(c);
            p->lin += H * (mcfg_conv_dim(c) + vd) + H * 2 * c->lin_v_heads + vd * H +
                      (double)mcfg_conv_dim(c) * c->conv_kernel;
        }
        if (mcfg_layer_is_moe(c, l)) {
            p->n_moe++;
            p->bf16_step += H * c->n_experts;
            p->expert = 3 * H * c->moe_intermediate;
            if (c->shared_intermediate > 0) p->lin += 3 * H * c->shared_intermediate + H;
        } else {
            p->lin += 3 * H * c->intermediate;
        }
    }
    p->mtp_lin += 2 * H * H + (c->is_moe ? 3 * H * c->shared_intermediate + H * c->n_experts : 3 * H * c->intermediate);
    p->lm_head = (double)c->vocab * H;
    p->embed = c->tie_embeddings ? 0 : (double)c->vocab * H;
}

static double wsize(hs_dtype_t t) {
    /* fp8 weights carry one fp32 scale per 128×128 block */
    return t == HS_F8_E4M3 ? 1.0 + 4.0 / 16384.0 : (double)hs_dtype_size(t);
}

int sim_memory(const sim_config_t *c, layout_kind_t kind, sim_memory_t *out, char *err, size_t n) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    /* Weights, reserve and budget: the memory planner's (hyserve plan shows the same). */
    mem_opts_t mo;
    mem_opts_default(&mo);
    mo.tp = c->tp;
    mo.block_size = c->block_size;
    mo.kv_dtype = c->kv_dtype;
    mo.state_dtype = c->state_dtype;
    mo.state_dtype_set = true;
    mo.weights_dtype = c->weights_dtype;
    const mem_gpu_t *mg = mem_gpu_find(c->gpu->name);
    mo.gpu_mem_gib = mg ? mg->mem_gib : c->gpu->mem_gib;
    mo.mem_util = c->mem_util;
    mo.max_num_seqs = c->max_num_seqs;
    mo.max_batched_tokens = c->max_num_batched_tokens;
    mo.mtp_k = c->k_spec;
    mem_plan_t plan;
    int rc = mem_plan(&plan, &c->model, &mo, err, n);
    if (rc != HS_OK && rc != HS_ERR_NO_MEMORY) return rc;
    kv_layout_t kv = plan.kv;
    out->kv_bytes = kv.kv_bytes;
    double weights = (double)plan.weight_bytes;
    double reserve = c->reserve_gib >= 0 ? c->reserve_gib * GIB : (double)plan.reserve_bytes;
    double budget = (double)plan.usable_bytes - weights - reserve;
    out->weights_gib = weights / GIB;
    out->reserve_gib = reserve / GIB;
    out->budget_gib = budget / GIB;
    if (budget <= 0)
        return hs_errf(err, n, HS_ERR_NO_MEMORY, "%s: weights %.1f GiB + reserve %.1f GiB leave no memory of %.1f GiB",
                       sim_layout_name(kind), weights / GIB, reserve / GIB, (double)plan.usable_bytes / GIB);
    /* The state map: one request's state in pages of page_bytes from base_offset. */
    statemap_t sm;
    memset(&sm, 0, sizeof sm);
    size_t page = kv.kv_bytes, base = 0;
    if (kind == LAYOUT_COUPLED) {
        /* Measure the state first, then give every page room for exactly one. */
        rc = statemap_init(&sm, &c->model, c->tp, c->state_dtype, c->k_spec, (size_t)1 << 30, 0, 0, err, n);
        if (rc != HS_OK) return rc;
        size_t st = (sm.state_bytes + 15) / 16 * 16;
        statemap_free(&sm);
        base = (kv.kv_bytes + 15) / 16 * 16;
        page = base + st;
    }
    rc = statemap_init(&sm, &c->model, c->tp, c->state_dtype, c->k_spec, page, base, 0, err, n);
    if (rc != HS_OK) return rc;
    /* With k drafts a request keeps 1 + k states (one per verified position, ATOM's
     * slots per request); each copy is packed by the state map on its own. */
    out->state_bytes = sm.state_bytes * (size_t)(1 + c->k_spec);
    out->page_bytes = page;
    out->E = sm.n_pages * (1 + c->k_spec);
    statemap_free(&sm);
    if (kind == LAYOUT_COUPLED && out->E != 1 + c->k_spec && out->state_bytes > 0)
        return hs_errf(err, n, HS_ERR_INVALID, "coupled: one state does not pack into one page (%d)", out->E);
    out->n_pages = (int64_t)(budget / (double)page);
    if (kind == LAYOUT_SLOTS && out->E > 0) {
        out->n_slots = c->max_num_seqs;
        if ((int64_t)out->n_slots * out->E >= out->n_pages)
            return hs_errf(err, n, HS_ERR_NO_MEMORY,
                           "slots: %d state slots × %d pages (%.2f GiB) exceed the %.2f GiB budget: lower "
                           "--max-num-seqs (ATOM: 'per-request cache tensor exceeds available KV budget')",
                           out->n_slots, out->E, (double)out->n_slots * out->E * page / GIB, budget / GIB);
    }
    if (out->n_pages > INT32_MAX - 1) out->n_pages = INT32_MAX - 1;
    return HS_OK;
}

/* ---- step time ------------------------------------------------------------------- */

typedef struct {
    const sim_config_t *c;
    sim_params_t p;
    double kv_tok;        /* KV bytes per token per rank */
    double state;         /* state bytes per request per rank */
    double page;
    double w;             /* weight dtype size */
    double bw, flops;     /* effective bytes/s, FLOP/s */
} step_model_t;

static double step_time(const step_model_t *m, const sched_batch_t *b) {
    const sim_config_t *c = m->c;
    const mcfg_t *mc = &c->model;
    const double tp = c->tp;
    int T = b->n_tokens;
    double bytes = (m->p.lin * m->w + m->p.bf16_step * 2 + (b->n_logits ? m->p.lm_head * 2 : 0)) / tp;
    double flops = 2.0 * (m->p.lin + m->p.bf16_step) / tp * T + 2.0 * m->p.lm_head / tp * b->n_logits;
    if (m->p.n_moe > 0) {
        double E = mc->n_experts, k = mc->n_experts_per_tok;
        double touched = E * (1.0 - pow(1.0 - k / E, (double)T));
        bytes += m->p.n_moe * touched * m->p.expert * m->w / tp;
        flops += 2.0 * m->p.n_moe * k * m->p.expert / tp * T;
    }
    double attn_per = 4.0 * mc->n_heads * mc->head_dim * mc->n_attn / tp;
    for (int r = 0; r < b->n_seqs; r++) {
        double nt = b->tok_start[r + 1] - b->tok_start[r], past = b->n_past[r];
        bytes += (past + 2 * nt) * m->kv_tok + 2 * m->state;
        flops += attn_per * nt * (past + nt / 2);
    }
    flops += 6.0 * mc->lin_v_heads * mc->lin_k_dim * mc->lin_v_dim * mc->n_gdn / tp * T;
    if (c->k_spec > 0 && b->n_logits > 0) {
        /* k sequential MTP passes over the rows that sample (one token each): the MTP
         * layer, its routed experts and the lm_head are read k times. */
        double S = b->n_decode + (b->n_logits - b->n_decode * (1 + c->k_spec));
        double eb = m->p.mtp_lin * m->w + m->p.lm_head * 2, ef = 2.0 * (m->p.mtp_lin + m->p.lm_head) * S;
        if (m->p.n_moe > 0) {
            double E = mc->n_experts, k = mc->n_experts_per_tok;
            eb += E * (1.0 - pow(1.0 - k / E, S)) * m->p.expert * m->w;
            ef += 2.0 * k * m->p.expert * S;
        }
        bytes += c->k_spec * eb / tp;
        flops += c->k_spec * ef / tp;
    }
    double t = bytes / m->bw + flops / m->flops;
    if (c->tp > 1) t += 2.0 * mc->n_layers * (10e-6 + T * mc->hidden * 2.0 * 2.0 * (tp - 1) / tp / 300e9);
    t += (double)(b->n_pages_swapped_out + b->n_pages_swapped_in) * m->page / (c->gpu->host_gbs * 1e9);
    return t + c->step_overhead_s;
}

/* ---- run ----------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void percentiles(double *v, int n, double out[3]) {
    out[0] = out[1] = out[2] = 0;
    if (n <= 0) return;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    const double q[3] = {0.5, 0.9, 0.99};
    for (int i = 0; i < 3; i++) {
        double x = q[i] * (n - 1);
        int lo = (int)x;
        int hi = lo + 1 < n ? lo + 1 : lo;
        out[i] = v[lo] + (v[hi] - v[lo]) * (x - lo);
    }
}

typedef struct {
    double *t, *kv, *st, *run;
    size_t n, cap;
} occ_log_t;

static void occ_push(occ_log_t *o, double t, double kv, double st, double run) {
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 4096;
        o->t = hs_realloc(o->t, o->cap * sizeof(double));
        o->kv = hs_realloc(o->kv, o->cap * sizeof(double));
        o->st = hs_realloc(o->st, o->cap * sizeof(double));
        o->run = hs_realloc(o->run, o->cap * sizeof(double));
    }
    o->t[o->n] = t;
    o->kv[o->n] = kv;
    o->st[o->n] = st;
    o->run[o->n] = run;
    o->n++;
}

int sim_run(const sim_config_t *c, layout_kind_t kind, const sim_workload_t *w, sim_result_t *r, char *err,
            size_t n) {
    memset(r, 0, sizeof *r);
    int rc = sim_memory(c, kind, &r->mem, r->error, sizeof r->error);
    if (rc != HS_OK) {
        r->ok = false;
        return HS_OK;
    }
    r->ok = true;
    int max_len = 0;
    for (int i = 0; i < w->n; i++)
        if (w->in_len[i] + w->out_len[i] > max_len) max_len = w->in_len[i] + w->out_len[i];

    pool_config_t pc;
    pool_config_default(&pc);
    pc.kind = kind;
    pc.n_pages = r->mem.n_pages;
    pc.block_size = c->block_size;
    pc.state_pages = r->mem.E;
    pc.n_slots = r->mem.n_slots;
    pc.max_seqs = c->max_num_seqs;
    pc.max_seq_tokens = max_len + 16 + c->k_spec;
    pc.prefix_caching = false; /* random prompts; ATOM's default */
    if (c->preempt == SCHED_PREEMPT_SWAP) {
        double hp = c->swap_gib * GIB / (double)r->mem.page_bytes;
        pc.n_host_pages = hp > INT32_MAX - 1 ? INT32_MAX - 1 : (int64_t)hp;
    }
    pool_t *pool = NULL;
    sched_t *s = NULL;
    if ((rc = pool_create(&pool, &pc, err, n)) != HS_OK) return rc;
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = c->max_num_seqs;
    sc.max_num_batched_tokens = c->max_num_batched_tokens;
    sc.k_spec = c->k_spec;
    sc.preempt = c->preempt;
    sc.policy = c->policy;
    if (c->policy == SCHED_POLICY_SEED) sc.watermark = 0;
    if ((rc = sched_create(&s, &sc, pool, err, n)) != HS_OK) {
        pool_destroy(pool);
        return rc;
    }

    step_model_t m;
    memset(&m, 0, sizeof m);
    m.c = c;
    params_of(&c->model, &m.p);
    m.kv_tok = (double)r->mem.kv_bytes / c->block_size;
    m.state = (double)r->mem.state_bytes;
    m.page = (double)r->mem.page_bytes;
    m.w = wsize(c->weights_dtype);
    m.bw = c->gpu->bw_tbs * 1e12 * SIM_BW_EFF;
    m.flops = c->gpu->flops_tf * 1e12 * SIM_FLOPS_EFF;

    int N = w->n;
    double *sent = hs_calloc((size_t)N, sizeof(double));
    double *first = hs_calloc((size_t)N, sizeof(double));
    double *ttft = hs_calloc((size_t)N, sizeof(double));
    double *tpot = hs_calloc((size_t)N, sizeof(double));
    int n_ttft = 0, n_tpot = 0;
    int32_t *zeros = hs_calloc((size_t)max_len + 1, sizeof(int32_t));
    int32_t *new_tokens = hs_calloc((size_t)c->max_num_seqs * (1 + c->k_spec), sizeof(int32_t));
    uint64_t acc_rng = 0x5EED;
    int32_t *n_new = hs_calloc((size_t)c->max_num_seqs, sizeof(int32_t));
    occ_log_t occ;
    memset(&occ, 0, sizeof occ);
    pool_stats_t ps;

    double t = 0, run_area = 0, batch_sum = 0;
    int next = 0, in_flight = 0;
    sampling_params_t sp;
    sampling_params_default(&sp);
    sp.ignore_eos = true;
    while (next < N || !sched_idle(s)) {
        while (next < N && w->arrival[next] <= t && (c->max_concurrency <= 0 || in_flight < c->max_concurrency)) {
            sp.max_tokens = w->out_len[next];
            char serr[160];
            if (sched_submit(s, next, zeros, w->in_len[next], &sp, serr, sizeof serr) != HS_OK) {
                if (!r->n_failed) snprintf(r->error, sizeof r->error, "request %d: %s", next, serr);
                r->n_failed++;
            } else {
                sent[next] = t;
                in_flight++;
                r->in_tokens += (uint64_t)w->in_len[next];
            }
            next++;
        }
        if (sched_idle(s)) {
            if (next < N && w->arrival[next] > t) t = w->arrival[next];
            continue;
        }
        const sched_batch_t *b;
        if ((rc = sched_step(s, &b)) != HS_OK) break;
        double dt = b->n_seqs ? step_time(&m, b) : 0;
        t += dt;
        sched_stats_t st;
        sched_stats(s, &st);
        run_area += st.n_running * dt;
        if (st.n_running > r->max_running) r->max_running = st.n_running;
        batch_sum += b->n_seqs;
        const int stride = 1 + c->k_spec;
        for (int i = 0; i < b->n_seqs; i++) {
            int nn = b->logit_start[i + 1] > b->logit_start[i] ? 1 : 0;
            if (i < b->n_decode) {
                /* drafts accepted one by one with probability accept, up to the first miss */
                const int32_t *ran = b->token_ids + b->tok_start[i] + 1;
                while (nn <= c->k_spec && rng_unit(&acc_rng) < c->accept) {
                    new_tokens[i * stride + nn - 1] = ran[nn - 1];
                    nn++;
                }
            }
            new_tokens[i * stride + nn - 1] = 1;
            n_new[i] = nn;
        }
        const sched_event_t *ev;
        int nev;
        if ((rc = sched_update(s, new_tokens, n_new, &ev, &nev)) != HS_OK) break;
        for (int i = 0; i < nev; i++) {
            int id = (int)ev[i].id;
            if (ev[i].kind == SCHED_EV_TOKEN) {
                r->out_tokens++;
                if (ev[i].index == 0) {
                    first[id] = t;
                    ttft[n_ttft++] = t - sent[id];
                }
            } else {
                in_flight--;
                if (ev[i].finish == SEQ_FINISH_LENGTH || ev[i].finish == SEQ_FINISH_STOP) r->n_done++;
                else r->n_failed++;
                if (ev[i].n_output > 1) tpot[n_tpot++] = (t - first[id]) / (ev[i].n_output - 1);
            }
        }
        if (b->n_seqs == 0 && nev == 0) {
            /* nothing can run: wait for the next arrival, or give up (cannot happen
             * unless a request can never fit, which submit refuses) */
            if (next < N && (c->max_concurrency <= 0 || in_flight < c->max_concurrency) && w->arrival[next] > t) {
                t = w->arrival[next];
                continue;
            }
            rc = hs_errf(err, n, HS_ERR_STATE, "simulation stalled at t = %.3f s", t);
            break;
        }
        pool_stats(pool, &ps);
        occ_push(&occ, t, (double)(ps.n_kv + ps.n_cached) / ps.n_pages,
                 (double)(ps.n_state + ps.n_reserved) / ps.n_pages, st.n_running);
    }
    sched_stats_t st;
    sched_stats(s, &st);
    r->steps = st.n_steps;
    r->preempt_recompute = st.n_preempt_recompute;
    r->preempt_swap = st.n_preempt_swap;
    r->recomputed_tokens = st.tokens_recomputed;
    r->duration_s = t;
    if (t > 0) {
        r->total_tps = (double)(r->in_tokens + r->out_tokens) / t;
        r->output_tps = (double)r->out_tokens / t;
        r->mean_running = run_area / t;
    }
    r->mean_batch = r->steps ? batch_sum / (double)r->steps : 0;
    for (int i = 0; i < n_ttft; i++) ttft[i] *= 1e3;
    for (int i = 0; i < n_tpot; i++) tpot[i] *= 1e3;
    percentiles(ttft, n_ttft, r->ttft_ms);
    percentiles(tpot, n_tpot, r->tpot_ms);

    /* occupancy: time-weighted means over equal time buckets */
    int nb = c->occ_buckets > 0 ? c->occ_buckets : 48;
    r->n_occ = nb;
    r->occ_kv = hs_calloc((size_t)nb, sizeof(double));
    r->occ_state = hs_calloc((size_t)nb, sizeof(double));
    r->occ_running = hs_calloc((size_t)nb, sizeof(double));
    double *wsum = hs_calloc((size_t)nb, sizeof(double));
    double prev = 0;
    for (size_t i = 0; i < occ.n && t > 0; i++) {
        double dt = occ.t[i] - prev;
        int k = (int)(occ.t[i] / t * nb);
        if (k >= nb) k = nb - 1;
        r->occ_kv[k] += occ.kv[i] * dt;
        r->occ_state[k] += occ.st[i] * dt;
        r->occ_running[k] += occ.run[i] * dt;
        wsum[k] += dt;
        prev = occ.t[i];
    }
    for (int k = 0; k < nb; k++)
        if (wsum[k] > 0) {
            r->occ_kv[k] /= wsum[k];
            r->occ_state[k] /= wsum[k];
            r->occ_running[k] /= wsum[k];
        }
    hs_free(wsum);
    hs_free(occ.t);
    hs_free(occ.kv);
    hs_free(occ.st);
    hs_free(occ.run);
    hs_free(sent);
    hs_free(first);
    hs_free(ttft);
    hs_free(tpot);
    hs_free(zeros);
    hs_free(new_tokens);
    hs_free(n_new);
    sched_destroy(s);
    pool_destroy(pool);
    return rc;
}

void sim_result_free(sim_result_t *r) {
    hs_free(r->occ_kv);
    hs_free(r->occ_state);
    hs_free(r->occ_running);
    r->occ_kv = r->occ_state = r->occ_running = NULL;
}
