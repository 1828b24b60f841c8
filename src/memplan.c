/*
 * memplan: per-rank memory arithmetic (formulas in memplan.h, derivations in
 * docs/ARCHITECTURE.md "Memory model").
 *
 * Weight count. Every tensor of model-spec §6, sharded as model-spec §7:
 *   vocab-parallel   embed_tokens, lm_head (untied only): ceil(V / tp) rows
 *   column-parallel  q_proj (+gate), k/v_proj (KV heads replicated when Hkv < tp),
 *                    GDN in_proj_* (by head), conv1d, A_log, dt_bias, expert and
 *                    shared-expert gate/up, dense gate/up, mtp.fc: rows / tp
 *   row-parallel     o_proj, out_proj, expert/shared/dense down_proj: cols / tp
 *   replicated       every norm, q_norm/k_norm, the router mlp.gate, shared_expert_gate
 * Experts are split by TP (moe_intermediate / tp), not by EP.
 * --weights-dtype fp8 stores the projection matrices (attention q/k/v/o, GDN
 * in_proj_qkv(z)/in_proj_z/out_proj, experts, shared expert, dense MLP, mtp.fc) in
 * e4m3 with one fp32 scale per 128x128 block of the rank's shard; embeddings,
 * lm_head, norms, conv1d, A_log, dt_bias, in_proj_b/a (ba), the router and
 * shared_expert_gate stay in the model dtype, as Qwen's FP8 checkpoints do.
 */
#include "memplan.h"

#include <assert.h>
#include <ctype.h>
#include <math.h>
#include <string.h>
#include <strings.h>

/* Total memory the vendor runtime reports per card (GiB = 2^30 B). */
static const mem_gpu_t gpus[] = {
    {"h100-80g", 79.18, "cudaMemGetInfo total on an H100 80GB HBM3: 85,017,493,504 B (measured)"},
    {"h200-141g", 139.80, "cudaMemGetInfo total on an H200: 150,109,880,320 B (measured)"},
    {"b200-180g", 178.35, "cudaGetDeviceProperties totalGlobalMem on a B200: 178.35 GiB (pytorch/ao#4002)"},
    {"mi300x-192g", 191.98, "rocminfo GLOBAL pool on an MI300X: 201,310,208 KiB (ROCm issue 4414)"},
    {"mi355x-288g", 287.98, "MI355X as reported in ATOM PR #1164 (seed-system §4.2)"},
    {NULL, 0, NULL},
};

const mem_gpu_t *mem_gpus(void) { return gpus; }

const mem_gpu_t *mem_gpu_find(const char *name) {
    for (const mem_gpu_t *g = gpus; g->name; g++)
        if (!strcasecmp(g->name, name)) return g;
    return NULL;
}

void mem_opts_default(mem_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->tp = 1;
    o->block_size = 16;
    o->kv_dtype = HS_BF16;
    o->state_dtype = HS_BF16;
    o->state_dtype_set = false;
    o->weights_dtype = HS_BF16;
    o->mtp_k = 0;
    o->gpu_mem_gib = 0;
    o->mem_util = 0.9;
    o->max_num_seqs = 512;
    o->max_batched_tokens = 16384;
    o->prompt_len = 1024;
    o->output_len = 1024;
}

int mem_kv_heads(const mcfg_t *c, int tp) { return c->n_kv_heads >= tp ? c->n_kv_heads / tp : 1; }

int mem_check_tp(const mcfg_t *c, int tp, char *err, size_t n) {
    if (tp < 1) return hs_errf(err, n, HS_ERR_INVALID, "tp %d: must be at least 1", tp);
    if (c->lin_k_heads % tp)
        return hs_errf(err, n, HS_ERR_INVALID, "tp %d does not divide linear_num_key_heads %d", tp, c->lin_k_heads);
    if (c->lin_v_heads % tp)
        return hs_errf(err, n, HS_ERR_INVALID, "tp %d does not divide linear_num_value_heads %d", tp, c->lin_v_heads);
    if (c->n_heads % tp)
        return hs_errf(err, n, HS_ERR_INVALID, "tp %d does not divide num_attention_heads %d", tp, c->n_heads);
    if (c->n_kv_heads >= tp ? c->n_kv_heads % tp : tp % c->n_kv_heads)
        return hs_errf(err, n, HS_ERR_INVALID, "tp %d and num_key_value_heads %d: one must divide the other", tp,
                       c->n_kv_heads);
    return HS_OK;
}

void mem_kv_init(kv_layout_t *kv, const mcfg_t *c, int tp, int block_size, hs_dtype_t kv_dtype, int mtp_k) {
    /* The MTP layer is full attention and keeps KV rows after the target's (seed §2.1). */
    kv_layout_init(kv, c, tp, block_size, kv_dtype, mtp_k > 0 ? c->n_mtp_layers : 0);
}

void mem_state_init(mem_state_t *s, const mcfg_t *c, int tp, hs_dtype_t ssm_dtype, int mtp_k) {
    assert(tp >= 1 && c->lin_v_heads % tp == 0 && mtp_k >= 0);
    memset(s, 0, sizeof *s);
    s->n_gdn = c->n_gdn;
    s->conv_dim = mcfg_conv_dim(c) / tp;
    s->conv_width = c->conv_kernel - 1 + mtp_k;
    s->hv = c->lin_v_heads / tp;
    s->conv_dtype = c->dtype;
    s->ssm_dtype = ssm_dtype;
    s->conv_layer_bytes = (size_t)s->conv_width * s->conv_dim * hs_dtype_size(s->conv_dtype);
    s->ssm_layer_bytes = (size_t)s->hv * c->lin_v_dim * c->lin_k_dim * hs_dtype_size(ssm_dtype);
    s->slot_bytes = (size_t)s->n_gdn * (s->conv_layer_bytes + s->ssm_layer_bytes);
    s->copies = 1 + mtp_k;
    s->req_bytes = (size_t)s->copies * s->slot_bytes;
}

int64_t mem_state_pages(const mcfg_t *c, int tp, hs_dtype_t ssm_dtype, int mtp_k, size_t page_bytes) {
    assert(page_bytes > 0);
    mem_state_t s;
    mem_state_init(&s, c, tp, ssm_dtype, mtp_k);
    return (int64_t)hs_ceil_div(s.req_bytes, page_bytes);
}

int64_t mem_state_pages_packed(const mcfg_t *c, int tp, hs_dtype_t ssm_dtype, int mtp_k, size_t page_bytes) {
    statemap_t m;
    char err[256];
    if (statemap_init(&m, c, tp, ssm_dtype, mtp_k, page_bytes, 0, 0, err, sizeof err) != HS_OK) return -1;
    const int64_t e = m.n_pages;
    statemap_free(&m);
    return e;
}

/* ---- weights ------------------------------------------------------------------ */

typedef struct {
    size_t wsz;  /* bytes per element of an unquantised tensor (model dtype) */
    bool fp8;    /* projections in e4m3 + 128x128 fp32 block scales */
} wq_t;

/* A [rows, cols] matrix of one rank's shard; quant: may it be fp8. */
static size_t mat(const wq_t *q, uint64_t rows, uint64_t cols, bool quant) {
    if (quant && q->fp8) return (size_t)(rows * cols + hs_ceil_div(rows, 128) * hs_ceil_div(cols, 128) * 4);
    return (size_t)(rows * cols * q->wsz);
}

static size_t attn_layer(const mcfg_t *c, int tp, const wq_t *q) {
    uint64_t H = (uint64_t)c->hidden, D = (uint64_t)c->head_dim, hq = (uint64_t)(c->n_heads / tp);
    uint64_t kvh = (uint64_t)mem_kv_heads(c, tp);
    size_t b = mat(q, hq * D * (c->attn_output_gate ? 2 : 1), H, true); /* q_proj (+gate) */
    b += 2 * mat(q, kvh * D, H, true);                                    /* k_proj, v_proj */
    b += mat(q, H, hq * D, true);                                         /* o_proj */
    b += 2 * D * q->wsz;                                                  /* q_norm, k_norm */
    return b;
}

static size_t gdn_layer(const mcfg_t *c, int tp, const wq_t *q) {
    uint64_t H = (uint64_t)c->hidden, hv = (uint64_t)(c->lin_v_heads / tp);
    uint64_t kd = (uint64_t)(mcfg_key_dim(c) / tp), vd = (uint64_t)(mcfg_value_dim(c) / tp);
    uint64_t conv = 2 * kd + vd;
    size_t b;
    if (c->family == MCFG_QWEN3_NEXT)
        b = mat(q, conv + vd, H, true) + mat(q, 2 * hv, H, false); /* in_proj_qkvz, in_proj_ba */
    else
        b = mat(q, conv, H, true) + mat(q, vd, H, true) + 2 * mat(q, hv, H, false); /* qkv, z, b, a */
    b += conv * (uint64_t)c->conv_kernel * q->wsz;   /* conv1d */
    b += 2 * hv * q->wsz;                            /* A_log, dt_bias */
    b += (uint64_t)c->lin_v_dim * q->wsz;            /* gated norm (replicated) */
    b += mat(q, H, vd, true);                        /* out_proj */
    return b;
}

static size_t swiglu(const wq_t *q, uint64_t H, uint64_t inter_rank) {
    return 2 * mat(q, inter_rank, H, true) + mat(q, H, inter_rank, true); /* gate, up, down */
}

static size_t ffn(const mcfg_t *c, int tp, const wq_t *q, bool moe) {
    uint64_t H = (uint64_t)c->hidden;
    if (!moe) return swiglu(q, H, hs_ceil_div((uint64_t)c->intermediate, (uint64_t)tp));
    size_t b = mat(q, (uint64_t)c->n_experts, H, false); /* router, replicated */
    b += (size_t)c->n_experts * swiglu(q, H, hs_ceil_div((uint64_t)c->moe_intermediate, (uint64_t)tp));
    if (c->shared_intermediate > 0) {
        b += swiglu(q, H, hs_ceil_div((uint64_t)c->shared_intermediate, (uint64_t)tp));
        b += mat(q, 1, H, false); /* shared_expert_gate, replicated */
    }
    return b;
}

size_t mem_weight_bytes(const mcfg_t *c, int tp, hs_dtype_t weights_dtype, bool with_mtp) {
    assert(tp >= 1 && (weights_dtype == HS_BF16 || weights_dtype == HS_F8_E4M3));
    wq_t q = {.wsz = hs_dtype_size(c->dtype), .fp8 = weights_dtype == HS_F8_E4M3};
    uint64_t H = (uint64_t)c->hidden, vr = hs_ceil_div((uint64_t)c->vocab, (uint64_t)tp);
    size_t b = mat(&q, vr, H, false);              /* embed_tokens */
    if (!c->tie_embeddings) b += mat(&q, vr, H, false); /* lm_head */
    b += H * q.wsz;                                /* final norm */
    for (int l = 0; l < c->n_layers; l++) {
        b += 2 * H * q.wsz;                        /* input / post-attention norms */
        b += mcfg_is_attn(c, l) ? attn_layer(c, tp, &q) : gdn_layer(c, tp, &q);
        b += ffn(c, tp, &q, mcfg_layer_is_moe(c, l));
    }
    if (with_mtp) {
        for (int m = 0; m < c->n_mtp_layers; m++) {
            b += mat(&q, hs_ceil_div(H, (uint64_t)tp), 2 * H, true); /* fc [H, 2H], column-parallel */
            b += 3 * H * q.wsz;                    /* pre_fc_norm_embedding, pre_fc_norm_hidden, norm */
            b += 2 * H * q.wsz + attn_layer(c, tp, &q) + ffn(c, tp, &q, c->is_moe);
        }
    }
    return b;
}

/* ---- the plan -------------------------------------------------------------------- */

static const double GIB = 1073741824.0;

static void finish(mem_layout_t *L, const mem_plan_t *p, int64_t mem_conc) {
    const mem_opts_t *o = &p->opts;
    L->mem_concurrent = mem_conc < 0 ? 0 : mem_conc;
    L->max_concurrent = L->mem_concurrent < o->max_num_seqs ? L->mem_concurrent : o->max_num_seqs;
    L->seq_bound = L->mem_concurrent >= o->max_num_seqs;
    L->alloc_bytes = (size_t)L->pool_pages * L->page_bytes;
    L->used_bytes = (size_t)L->max_concurrent * ((size_t)p->tokens_per_req * p->kv_token_bytes + L->state_bytes);
    L->waste_pct = L->alloc_bytes ? 100.0 * (double)(L->alloc_bytes - L->used_bytes) / (double)L->alloc_bytes : 0;
}

static void verdict(mem_layout_t *L, const mem_plan_t *p) {
    const mem_opts_t *o = &p->opts;
    char bound[112];
    if (L->seq_bound && L->kind == LAYOUT_SLOTS)
        snprintf(bound, sizeof bound, "capped by its %d state slots (KV room for %lld)", o->max_num_seqs,
                 (long long)L->mem_concurrent);
    else if (L->seq_bound)
        snprintf(bound, sizeof bound, "capped by --max-num-seqs %d (memory fits %lld)", o->max_num_seqs,
                 (long long)L->mem_concurrent);
    else
        snprintf(bound, sizeof bound, "bound by memory");
    if (L->max_concurrent == 0) {
        if (L->kind == LAYOUT_SLOTS && L->kv_pages <= 0)
            snprintf(L->verdict, sizeof L->verdict, "does not fit: %d state slots (%.2f GiB) exceed the pool budget",
                     o->max_num_seqs, (double)L->state_region_pages * L->page_bytes / GIB);
        else
            snprintf(L->verdict, sizeof L->verdict, "does not fit: a request needs %lld pages, the pool has %lld",
                     (long long)L->pages_per_req, (long long)L->kv_pages);
        return;
    }
    switch (L->kind) {
    case LAYOUT_COUPLED:
        snprintf(L->verdict, sizeof L->verdict, "%lld requests, %s; every page carries %.2f MiB of state room",
                 (long long)L->max_concurrent, bound, (double)(L->page_bytes - L->kv_block_bytes) / 1048576.0);
        break;
    case LAYOUT_SLOTS:
        snprintf(L->verdict, sizeof L->verdict, "%lld requests, %s; %.2f GiB of state reserved up front",
                 (long long)L->max_concurrent, bound, (double)L->state_region_pages * L->page_bytes / GIB);
        break;
    case LAYOUT_PAGED:
        snprintf(L->verdict, sizeof L->verdict, "%lld requests, %s; state pages only while a request lives",
                 (long long)L->max_concurrent, bound);
        break;
    }
}

static int check_opts(const mcfg_t *c, const mem_opts_t *o, char *err, size_t n) {
    if (o->tp < 1 || o->tp > 64) return hs_errf(err, n, HS_ERR_INVALID, "--tp %d: must be in [1, 64]", o->tp);
    if (o->block_size < 1 || o->block_size > 4096)
        return hs_errf(err, n, HS_ERR_INVALID, "--block-size %d: must be in [1, 4096]", o->block_size);
    if (o->kv_dtype != HS_BF16 && o->kv_dtype != HS_F8_E4M3)
        return hs_errf(err, n, HS_ERR_INVALID, "--kv-dtype %s: must be bf16 or fp8", hs_dtype_name(o->kv_dtype));
    if (o->state_dtype_set && o->state_dtype != HS_BF16 && o->state_dtype != HS_F32)
        return hs_errf(err, n, HS_ERR_INVALID, "--state-dtype %s: must be f32 or bf16", hs_dtype_name(o->state_dtype));
    if (o->weights_dtype != HS_BF16 && o->weights_dtype != HS_F8_E4M3)
        return hs_errf(err, n, HS_ERR_INVALID, "--weights-dtype %s: must be bf16 or fp8",
                       hs_dtype_name(o->weights_dtype));
    if (o->mtp_k < 0 || o->mtp_k > 4) return hs_errf(err, n, HS_ERR_INVALID, "--mtp %d: must be in [0, 4]", o->mtp_k);
    if (o->mtp_k > 0 && c->n_mtp_layers < 1)
        return hs_errf(err, n, HS_ERR_INVALID, "--mtp %d: the model has no MTP layer", o->mtp_k);
    if (!(o->gpu_mem_gib > 0 && o->gpu_mem_gib < 1e6))
        return hs_errf(err, n, HS_ERR_INVALID, "GPU memory %g GiB: must be positive (--gpu or --gpu-mem-gib)",
                       o->gpu_mem_gib);
    if (!(o->mem_util > 0 && o->mem_util <= 1))
        return hs_errf(err, n, HS_ERR_INVALID, "--mem-util %g: must be in (0, 1]", o->mem_util);
    if (o->max_num_seqs < 1) return hs_errf(err, n, HS_ERR_INVALID, "--max-num-seqs %d: must be >= 1", o->max_num_seqs);
    if (o->max_batched_tokens < 1)
        return hs_errf(err, n, HS_ERR_INVALID, "--max-batched-tokens %d: must be >= 1", o->max_batched_tokens);
    if (c->n_attn < 1)
        return hs_errf(err, n, HS_ERR_UNSUPPORTED, "the model has no full-attention layer: no KV block to page");
    if (o->prompt_len < 1 || o->output_len < 0)
        return hs_errf(err, n, HS_ERR_INVALID, "workload %d + %d tokens: prompt must be >= 1, output >= 0",
                       o->prompt_len, o->output_len);
    return HS_OK;
}

int mem_plan(mem_plan_t *p, const mcfg_t *c, const mem_opts_t *o, char *err, size_t n) {
    memset(p, 0, sizeof *p);
    int rc = check_opts(c, o, err, n);
    if (rc == HS_OK) rc = mem_check_tp(c, o->tp, err, n);
    if (rc != HS_OK) return rc;
    p->opts = *o;
    if (!o->state_dtype_set) p->opts.state_dtype = c->ssm_dtype; /* mamba_ssm_dtype, else bf16 (mcfg) */
    const mem_opts_t *q = &p->opts;

    mem_kv_init(&p->kv, c, q->tp, q->block_size, q->kv_dtype, q->mtp_k);
    p->kv_token_bytes = p->kv.kv_bytes / (size_t)q->block_size;
    mem_state_init(&p->state, c, q->tp, q->state_dtype, q->mtp_k);
    p->weight_bytes = mem_weight_bytes(c, q->tp, q->weights_dtype, q->mtp_k > 0);

    p->gpu_bytes = (size_t)llround(q->gpu_mem_gib * GIB);
    p->usable_bytes = (size_t)((double)p->gpu_bytes * q->mem_util);
    p->safety_bytes = (size_t)(MEM_SAFETY_FRACTION * (double)p->gpu_bytes);
    p->act_bytes = (size_t)q->max_batched_tokens * (size_t)c->hidden * 2 * MEM_ACT_FACTOR;
    p->reserve_bytes = p->safety_bytes + p->act_bytes;
    if (p->usable_bytes <= p->weight_bytes + p->reserve_bytes)
        return hs_errf(err, n, HS_ERR_NO_MEMORY,
                       "no room for a pool: %.2f GiB usable per rank < weights %.2f GiB + reserve %.2f GiB "
                       "(try a larger --tp, --weights-dtype fp8 or a bigger GPU)",
                       p->usable_bytes / GIB, p->weight_bytes / GIB, p->reserve_bytes / GIB);
    p->budget_bytes = p->usable_bytes - p->weight_bytes - p->reserve_bytes;
    p->tokens_per_req = (int64_t)q->prompt_len + q->output_len + q->mtp_k;
    const int64_t b = (int64_t)hs_ceil_div((uint64_t)p->tokens_per_req, (uint64_t)q->block_size);
    const size_t K = p->kv.kv_bytes, S = p->state.req_bytes;

    /* coupled: each page = KV block + room for one state copy; a request's 1+k copies take 1+k pages. */
    mem_layout_t *L = &p->layouts[0];
    L->name = "coupled";
    L->kind = LAYOUT_COUPLED;
    L->kv_block_bytes = K;
    L->page_bytes = K + p->state.slot_bytes;
    L->state_bytes = S;
    L->state_pages = L->state_pages_packed = p->state.copies;
    L->pool_pages = (int64_t)(p->budget_bytes / L->page_bytes);
    L->kv_pages = L->pool_pages;
    L->blocks_per_req = b;
    L->pages_per_req = b + L->state_pages;
    finish(L, p, L->pool_pages / L->pages_per_req);
    L->max_cached_tokens = (L->pool_pages - L->max_concurrent * L->state_pages) * q->block_size;
    verdict(L, p);

    /* slots: max_num_seqs * E pages of state set aside up front; KV gets the rest. */
    L = &p->layouts[1];
    L->name = "slots";
    L->kind = LAYOUT_SLOTS;
    L->kv_block_bytes = L->page_bytes = K;
    L->state_bytes = S;
    L->state_pages = mem_state_pages(c, q->tp, q->state_dtype, q->mtp_k, K);
    L->state_pages_packed = mem_state_pages_packed(c, q->tp, q->state_dtype, q->mtp_k, K);
    L->pool_pages = (int64_t)(p->budget_bytes / K);
    L->state_region_pages = (int64_t)q->max_num_seqs * L->state_pages;
    L->kv_pages = L->pool_pages - L->state_region_pages;
    L->blocks_per_req = L->pages_per_req = b;
    if (L->kv_pages > 0) {
        finish(L, p, L->kv_pages / b); /* capped at max_num_seqs: one slot per request */
        L->max_cached_tokens = L->kv_pages * q->block_size;
    } else {
        finish(L, p, 0);
        L->max_cached_tokens = 0;
    }
    verdict(L, p);

    /* paged: one free list; a request takes b KV pages + E state pages while it lives. */
    L = &p->layouts[2];
    L->name = "paged";
    L->kind = LAYOUT_PAGED;
    L->kv_block_bytes = L->page_bytes = K;
    L->state_bytes = S;
    L->state_pages = mem_state_pages(c, q->tp, q->state_dtype, q->mtp_k, K);
    L->state_pages_packed = mem_state_pages_packed(c, q->tp, q->state_dtype, q->mtp_k, K);
    L->pool_pages = L->kv_pages = (int64_t)(p->budget_bytes / K);
    L->blocks_per_req = b;
    L->pages_per_req = b + L->state_pages;
    finish(L, p, L->pool_pages / L->pages_per_req);
    L->max_cached_tokens = (L->pool_pages - L->max_concurrent * L->state_pages) * q->block_size;
    verdict(L, p);
    return HS_OK;
}
