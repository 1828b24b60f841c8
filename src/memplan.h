/*
 * memplan: the memory model of one tensor-parallel rank — KV bytes, recurrent-state
 * bytes, weight bytes, the budget left for the page pool, and what the three pool
 * layouts (coupled, slots, paged; layout.h "Layouts") make of that budget for a
 * given workload. Pure arithmetic on an mcfg_t: no allocation, no device, no I/O.
 * `hyserve plan` (cmd_plan.c) prints it; the engine will size its pool with it.
 *
 * Units: every *_bytes field is bytes on one rank; GiB = 2^30 bytes.
 *
 * Formulas (per rank, tp ranks; derivations in docs/ARCHITECTURE.md "Memory model"):
 *
 *   KV block     kv_layout_init (layout.c, the one place this formula lives):
 *                2 * n_attn_rows * bs * kvh * D * size(kv)  (+ n_attn_rows * 2 * bs * kvh * 4 for fp8
 *                scales), n_attn_rows = n_attn (+ the MTP layer when mtp_k > 0),
 *                kvh = Hkv / tp, or 1 (replicated) when Hkv < tp.
 *   KV per token kv_block_bytes / bs (every term is linear in bs).
 *   state slot   n_gdn * ( (Kc - 1 + k) * conv_dim/tp * size(model dtype)      conv
 *                        + Hv/tp * dv * dk * size(state dtype) )               SSM
 *                (ATOM's compute_per_req_cache_bytes; k = mtp_k widens the conv window)
 *   state / req  (1 + k) * slot   (with MTP a request keeps one state per draft position)
 *   weights      every tensor of the model, sharded as model-spec §7 (see memplan.c)
 *   reserve      0.02 * gpu_bytes  (ATOM's safety margin, seed-system §2.5)
 *                + max_batched_tokens * H * 2 B * MEM_ACT_FACTOR  (activations/workspace)
 *   pool budget  gpu_bytes * mem_util - weights - reserve
 *
 * Layouts on that budget, for a workload of P prompt + O output tokens
 * (b = ceil((P + O + k) / bs) KV blocks per request, E = state pages per request):
 *   coupled  page = kv_block + slot; pages = budget / page; E = 1 + k;
 *            a request takes b + E pages.                 (ATOM before #602)
 *   slots    page = kv_block; max_num_seqs * E pages set aside for state at start-up,
 *            the rest are KV blocks; a request takes b KV pages and a free slot.
 *                                                          (ATOM #602 + #894)
 *   paged    page = kv_block; pages = budget / page; a request takes b + E pages from one
 *            free list, E = mem_state_pages(), only while it lives.   (hyserve)
 *   Every layout also caps running requests at max_num_seqs (the scheduler's limit).
 */
#ifndef HS_MEMPLAN_H
#define HS_MEMPLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"
#include "mcfg.h"
#include "util.h"

/* Activation/workspace reserve: bytes per batched token per hidden unit, in units of a
 * bf16 element (2 B). 32 covers the residual stream, norms, the widest projection
 * output (GDN qkvz or MoE gate/up of the routed tokens), attention/GDN scratch and
 * CUDA-graph pools with margin; it is an estimate, shown in the output, not a measure. */
#define MEM_ACT_FACTOR 32
#define MEM_SAFETY_FRACTION 0.02

/* A card: name as given to --gpu and the memory the vendor runtime reports. */
typedef struct {
    const char *name;      /* "h100-80g" */
    double mem_gib;        /* total device memory reported by the runtime, GiB */
    const char *source;    /* where the number comes from */
} mem_gpu_t;

/* The shipped card table, NULL-name terminated. */
const mem_gpu_t *mem_gpus(void);
/* Card by name (case-insensitive), or NULL. */
const mem_gpu_t *mem_gpu_find(const char *name);

typedef struct {
    int tp;                     /* tensor-parallel ranks (default 1) */
    int block_size;             /* tokens per KV block (default 16) */
    hs_dtype_t kv_dtype;        /* HS_BF16 (default) or HS_F8_E4M3 */
    hs_dtype_t state_dtype;     /* SSM state dtype: HS_F32 or HS_BF16 */
    bool state_dtype_set;       /* false: the config's mamba_ssm_dtype, else bf16 */
    hs_dtype_t weights_dtype;   /* HS_BF16 (default) or HS_F8_E4M3 (128x128 block scales) */
    int mtp_k;                  /* speculative tokens (0: no MTP; >0 loads the MTP layer) */
    double gpu_mem_gib;         /* device memory per rank, GiB */
    double mem_util;            /* fraction of device memory hyserve may use (default 0.9) */
    int max_num_seqs;           /* running requests at most (default 512, ATOM's) */
    int max_batched_tokens;     /* tokens per step at most, sizes the reserve (default 16384) */
    int prompt_len;             /* workload: prompt tokens per request (default 1024) */
    int output_len;             /* workload: output tokens per request (default 1024) */
} mem_opts_t;

/* Fill the defaults above (gpu_mem_gib = 0: must be set). */
void mem_opts_default(mem_opts_t *o);

/* Per-rank sizes of one request's recurrent state. */
typedef struct {
    int n_gdn;                  /* GDN layers */
    int conv_dim;               /* conv channels on this rank (conv_dim / tp) */
    int conv_width;             /* Kc - 1 + k columns */
    int hv;                     /* state heads on this rank (Hv / tp) */
    hs_dtype_t conv_dtype;      /* model dtype */
    hs_dtype_t ssm_dtype;       /* SSM state dtype */
    size_t conv_layer_bytes;    /* conv state of one GDN layer */
    size_t ssm_layer_bytes;     /* SSM state of one GDN layer */
    size_t slot_bytes;          /* one state copy, all GDN layers (ATOM's per_slot) */
    int copies;                 /* 1 + k */
    size_t req_bytes;           /* copies * slot_bytes: what one request holds */
} mem_state_t;

typedef struct {
    const char *name;           /* "coupled", "slots", "paged" */
    layout_kind_t kind;
    size_t page_bytes;          /* one page of the pool */
    size_t kv_block_bytes;      /* KV part of a page */
    size_t state_bytes;         /* state one request holds (mem_state_t.req_bytes) */
    int64_t state_pages;        /* E: pages one request's state takes, ceil(state / page) as
                                   ATOM counts it; the accounting below uses this E */
    int64_t state_pages_packed; /* E as hyserve's state map packs the granules (layout.c),
                                   what the engine takes: a few pages more (-1: no map) */
    int64_t pool_pages;         /* pages in the pool (slots: KV + state region) */
    int64_t state_region_pages; /* slots: max_num_seqs * E pages reserved; else 0 */
    int64_t kv_pages;           /* pages that can hold KV blocks */
    int64_t blocks_per_req;     /* b: KV blocks of one request at its peak */
    int64_t pages_per_req;      /* pages one request takes at its peak (slots: b) */
    int64_t mem_concurrent;     /* requests that fit in memory (no max_num_seqs cap) */
    int64_t max_concurrent;     /* min(mem_concurrent, max_num_seqs) */
    bool seq_bound;             /* max_num_seqs, not memory, is the binding limit */
    int64_t max_cached_tokens;  /* KV token rows left for KV with max_concurrent states resident */
    size_t alloc_bytes;         /* bytes the layout allocates */
    size_t used_bytes;          /* bytes holding data with max_concurrent requests at their peak */
    double waste_pct;           /* 100 * (alloc - used) / alloc */
    char verdict[256];          /* one line */
} mem_layout_t;

typedef struct {
    mem_opts_t opts;            /* resolved options (state dtype filled in) */
    kv_layout_t kv;             /* one KV block (kv_layout_init) */
    size_t kv_token_bytes;      /* KV bytes per token (all attention rows) */
    mem_state_t state;
    size_t weight_bytes;        /* weights on this rank */
    size_t gpu_bytes;           /* gpu_mem_gib * 2^30 */
    size_t usable_bytes;        /* gpu_bytes * mem_util */
    size_t reserve_bytes;       /* safety + activations */
    size_t safety_bytes;        /* MEM_SAFETY_FRACTION * gpu_bytes */
    size_t act_bytes;           /* max_batched_tokens * H * 2 * MEM_ACT_FACTOR */
    size_t budget_bytes;        /* for the pool: usable - weights - reserve */
    int64_t tokens_per_req;     /* P + O + k: KV rows one request peaks at */
    mem_layout_t layouts[3];    /* coupled, slots, paged */
} mem_plan_t;

/* KV heads on one rank: Hkv / tp, or 1 (replicated) when Hkv < tp. */
int mem_kv_heads(const mcfg_t *c, int tp);

/* Check that `c` shards over tp ranks (Hk, Hv, Hq divisible by tp; tp % Hkv == 0 when
 * Hkv < tp). HS_OK or HS_ERR_INVALID with the reason in err. */
int mem_check_tp(const mcfg_t *c, int tp, char *err, size_t n);

/* One request's recurrent state on one rank (can't fail; call after mem_check_tp). */
void mem_state_init(mem_state_t *s, const mcfg_t *c, int tp, hs_dtype_t ssm_dtype, int mtp_k);

/* One KV block on one rank: kv_layout_init with the MTP layer's rows when mtp_k > 0. */
void mem_kv_init(kv_layout_t *kv, const mcfg_t *c, int tp, int block_size, hs_dtype_t kv_dtype, int mtp_k);

/* Weight bytes on one rank: bf16, or fp8 projections with fp32 128x128 block scales.
 * with_mtp adds the MTP layer (fc, norms, one attention layer and its FFN). */
size_t mem_weight_bytes(const mcfg_t *c, int tp, hs_dtype_t weights_dtype, bool with_mtp);

/* Pages one request's whole state (1 + mtp_k copies, mem_state_init) takes in pages of
 * page_bytes, in the paged and slots layouts. Today: ceil(state bytes / page_bytes).
 * This is the one hook between the planner and the state map: when statemap_init
 * (layout.h) packs granules into pages, this returns the pages it lays out (granules
 * never straddle a page, so that can exceed the ceiling); callers do not change. */
int64_t mem_state_pages(const mcfg_t *c, int tp, hs_dtype_t ssm_dtype, int mtp_k, size_t page_bytes);
/* The same state packed into pages of page_bytes by the state map (statemap_init), as the
 * engine lays it out; -1 when no map fits (a granule larger than a page). */
int64_t mem_state_pages_packed(const mcfg_t *c, int tp, hs_dtype_t ssm_dtype, int mtp_k, size_t page_bytes);

/* The whole plan. HS_OK; HS_ERR_INVALID for bad options or a model that does not
 * shard over tp; HS_ERR_NO_MEMORY when weights + reserve leave no pool budget.
 * The message goes to err. */
int mem_plan(mem_plan_t *p, const mcfg_t *c, const mem_opts_t *o, char *err, size_t n);

#endif
