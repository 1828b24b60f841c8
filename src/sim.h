/*
 * sim: replay a serving workload against the real scheduler and page pool with a
 * step-time model, for each memory layout (coupled, slots, paged). A planning tool:
 * its numbers are A MODEL, NOT A MEASUREMENT.
 *
 * Memory model (per tensor-parallel rank): weights, reserve and the pool budget come
 * from the memory planner (memplan.h, the numbers `hyserve plan` prints):
 *   budget     GPU memory × mem_util − weights − reserve (2 % + activation workspace;
 *              --reserve-gib overrides the reserve)
 *   coupled    page = KV block + one request's state; n_pages = budget / page;
 *              a request holds 1 + k state pages (ATOM before #602)
 *   slots      page = KV block; max_num_seqs × E pages set aside for state
 *              (ATOM #602 + #894); KV gets the rest
 *   paged      page = KV block; n_pages = budget / page; a request's E state pages
 *              come from the same pool only while it lives (hyserve)
 *   KV block bytes come from kv_layout_init, E and the state bytes from statemap_init.
 *
 * Step-time model (per rank; all ranks work in parallel):
 *   t = bytes / (BW × bw_eff) + FLOPs / (peak × flops_eff) + comm
 *   bytes  = dense weights + MoE experts touched by the step's T tokens
 *            (E_n × (1 − (1 − k/E_n)^T) per MoE layer, uniform routing)
 *          + KV read (context of every row) and written (new tokens)
 *          + recurrent state read and written (2 × state bytes per row)
 *   FLOPs  = 2 × active linear parameters × T + 2 × lm_head × rows with logits
 *          + causal attention 4 × Hq × D × n × (n_past + n/2) per attention layer
 *          + GDN 6 × Hv × dk × dv per token per GDN layer
 *   comm   = 2 all-reduces per layer (tp > 1): 10 µs + T × H × 2 bytes × 2 (tp−1)/tp
 *            over 300 GB/s
 *   swap   = pages moved × page bytes over the host link (50 GB/s), added to the step
 *   + a fixed per-step overhead (--step-overhead-ms, default 0)
 *   MTP (k > 0): decode rows carry 1 + k tokens; k sequential draft passes read the MTP
 *   layer (fc, one attention layer, its FFN / experts touched) and the lm_head once
 *   each for the rows that sample; drafts are accepted with probability `accept` each
 *   up to the first miss
 * The efficiencies are measured on one H100 (shared docs gpu-anchors.md: 2.99 TB/s
 * copy of 3.35 datasheet, 767 TFLOP/s bf16 GEMM of 989; ~790 is also quoted) and
 * assumed for every GPU. Figures used (sim.c sim_gpus; memory from memplan's table):
 *
 *   kind          memory (GiB)  HBM TB/s (datasheet)  dense bf16 TFLOP/s (datasheet)
 *   h100-80g         79.18          3.35                   989
 *   h200-141g       139.80          4.8                    989
 *   b200-180g       178.35          8.0                   2250
 *   mi300x-192g     191.98          5.3                   1307
 *   mi355x-288g     287.98          8.0                   2500
 *   host link (swap) 50 GB/s for all; all-reduce 10 µs + 300 GB/s.
 * fp8 weights halve the bytes read but the FLOPs are priced at the bf16 peak.
 */
#ifndef HS_SIM_H
#define HS_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"
#include "mcfg.h"
#include "scheduler.h"
#include "util.h"

typedef struct {
    const char *name;       /* "h100-80g", ... */
    double mem_gib;         /* usable device memory, GiB */
    double bw_tbs;          /* HBM bandwidth, datasheet, TB/s */
    double flops_tf;        /* dense bf16, datasheet, TFLOP/s */
    double host_gbs;        /* host link for swapping, GB/s */
} sim_gpu_t;

/* The GPU kinds, NULL-name terminated. */
extern const sim_gpu_t sim_gpus[];
const sim_gpu_t *sim_gpu_find(const char *name);

#define SIM_BW_EFF 0.893    /* 2.99 / 3.35 (gpu-anchors.md) */
#define SIM_FLOPS_EFF 0.776 /* 767 / 989 (gpu-anchors.md) */

/* A workload: n requests. Arrays owned by the workload (sim_workload_free). */
typedef struct {
    int n;
    double *arrival;        /* [n] seconds since start; 0 for all with rate = inf */
    int32_t *in_len;        /* [n] prompt tokens */
    int32_t *out_len;       /* [n] output tokens (ignore_eos: exactly this many) */
} sim_workload_t;

typedef struct {
    mcfg_t model;
    int tp;
    const sim_gpu_t *gpu;
    hs_dtype_t kv_dtype, state_dtype, weights_dtype;
    double mem_util;        /* default 0.9 */
    double reserve_gib;     /* < 0: automatic (see above) */
    int block_size;         /* 16 */
    int max_num_seqs;       /* 512 (ATOM's default) */
    int max_num_batched_tokens; /* 16384 (ATOM's default) */
    int max_concurrency;    /* client-side in-flight limit; 0 = none */
    sched_preempt_t preempt;
    sched_policy_t policy;  /* SCHED_POLICY_SEED also turns the admission watermark off, as ATOM */
    double swap_gib;        /* host swap space for SCHED_PREEMPT_SWAP (default 64) */
    int occ_buckets;        /* occupancy samples in the result (default 48) */
    int k_spec;             /* MTP draft tokens per decode step (0: off); state copies and
                               the MTP layer's KV row and weights are counted */
    double accept;          /* probability that each draft is accepted, up to the first miss (0.7) */
    double step_overhead_s; /* fixed time added to every step (host scheduling, launches,
                               framework): 0 by default; a Python engine pays milliseconds */
} sim_config_t;

void sim_config_default(sim_config_t *c);

/* Random workload as the seed's benchmark: lengths uniform integers in
 * [int(len × ratio), len]; with long_fraction > 0 that share of requests uses
 * long_in / long_out instead. rate <= 0: all arrive at 0; else Poisson(rate/s). */
void sim_workload_random(sim_workload_t *w, int n, int in_len, int out_len, double ratio, double rate,
                         double long_fraction, int long_in, int long_out, uint64_t seed);
void sim_workload_free(sim_workload_t *w);

/* Pool sizing of one layout. */
typedef struct {
    layout_kind_t kind;
    size_t kv_bytes;        /* KV block per rank */
    size_t state_bytes;     /* one request's state per rank */
    size_t page_bytes;
    int E;                  /* state pages per request (coupled: 1 + k) */
    int64_t n_pages;        /* whole pool, slot pages included */
    int n_slots;            /* slots layout: max_num_seqs */
    double weights_gib, budget_gib, reserve_gib;
} sim_memory_t;

int sim_memory(const sim_config_t *c, layout_kind_t kind, sim_memory_t *out, char *err, size_t n);

typedef struct {
    sim_memory_t mem;
    bool ok;                /* false: the layout cannot be built (error says why) */
    char error[256];
    int n_done, n_failed;
    double duration_s;
    uint64_t in_tokens, out_tokens;
    double total_tps, output_tps;
    double ttft_ms[3], tpot_ms[3];  /* p50, p90, p99 */
    double mean_running;    /* time-weighted running (resident) requests */
    int max_running;
    double mean_batch;      /* mean rows per step */
    uint64_t steps, preempt_recompute, preempt_swap, recomputed_tokens;
    int n_occ;              /* occupancy buckets over time */
    double *occ_kv;         /* [n_occ] mean fraction of pool pages holding KV (cached included) */
    double *occ_state;      /* [n_occ] ... holding a live request's state (slots: reserved too) */
    double *occ_running;    /* [n_occ] mean running requests */
} sim_result_t;

/* Run the workload on one layout. Fills r (free with sim_result_free). Returns HS_OK
 * (r->ok false when the layout cannot be built for this config), or an error. */
int sim_run(const sim_config_t *c, layout_kind_t kind, const sim_workload_t *w, sim_result_t *r, char *err,
            size_t n);
void sim_result_free(sim_result_t *r);

const char *sim_layout_name(layout_kind_t k);

#endif
