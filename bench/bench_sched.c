/*
 * bench_sched: one scheduler step with 1,024 running sequences, pool work included,
 * on one core. Target (issue 4): <= 50 µs.
 *
 * Setting: Qwen3.5-397B-A17B at tp 4, fp8 KV, bf16 state, block 16, paged layout
 * (E from the state map), max_num_seqs 1024, max_num_batched_tokens 8192, prefix
 * caching on (stateful pool: hits refused, full blocks still hashed and published).
 * Steady state: 1,024 sequences decoding; output lengths uniform in [768, 1280] with
 * 512-token prompts, so about one sequence finishes per step and its replacement is
 * submitted and admitted with a 512-token prefill chunk in the next step. One
 * measured step is
 *   sched_step (1,024 decode rows: pool_can_append + pool_append each, a new block
 *               every 16 tokens; admission + prefill row of the new arrival; block
 *               table and state table lookups for every row)
 *   + sched_update (1,024 tokens appended, stop checks, events, publish at block
 *               boundaries, finished sequences freed)
 * The fake model's work (writing one token per row) is outside the timing, as is
 * sched_submit (the engine's intake). Reports median / p10 / p90 / mean over the
 * measured steps after a warm-up, and step-only / update-only medians.
 * Usage: bench_sched [steps] (default 20000).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layout.h"
#include "pool.h"
#include "scheduler.h"

#define N_SEQS 1024
#define PROMPT 512

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t rng = 88172645463325252ULL;
static uint32_t rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)rng;
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 20000;
    int warm = 3000;
    char err[256];
    mcfg_t c;
    if (mcfg_load("qwen3.5-397b-a17b", &c, err, sizeof err) != HS_OK) hs_die(1, "%s", err);
    kv_layout_t kv;
    kv_layout_init(&kv, &c, 4, 16, HS_F8_E4M3, 0);
    statemap_t m;
    if (statemap_init(&m, &c, 4, HS_BF16, 0, kv.kv_bytes, 0, 0, err, sizeof err) != HS_OK) hs_die(1, "%s", err);
    pool_config_t pc;
    pool_config_default(&pc);
    pc.kind = LAYOUT_PAGED;
    pc.block_size = 16;
    pc.state_pages = m.n_pages;
    pc.max_seqs = N_SEQS + 64;
    pc.max_seq_tokens = 4096;
    pc.n_pages = (int64_t)(N_SEQS + 64) * (m.n_pages + (PROMPT + 1280) / 16 + 2);
    pc.prefix_caching = true;
    pool_t *pool;
    if (pool_create(&pool, &pc, err, sizeof err) != HS_OK) hs_die(1, "%s", err);
    sched_config_t sc;
    sched_config_default(&sc);
    sc.max_num_seqs = N_SEQS;
    sc.max_num_batched_tokens = 8192;
    sched_t *s;
    if (sched_create(&s, &sc, pool, err, sizeof err) != HS_OK) hs_die(1, "%s", err);

    int32_t prompt[PROMPT];
    for (int i = 0; i < PROMPT; i++) prompt[i] = (int32_t)(rnd() % 150000);
    sampling_params_t sp;
    sampling_params_default(&sp);
    sp.ignore_eos = true;
    int64_t next_id = 0;
    int in_flight = 0;
    int32_t *new_tokens = calloc(N_SEQS, sizeof(int32_t));
    int32_t *n_new = calloc(N_SEQS, sizeof(int32_t));
    uint64_t *t_all = calloc((size_t)steps, sizeof(uint64_t));
    uint64_t *t_step = calloc((size_t)steps, sizeof(uint64_t));
    uint64_t *t_upd = calloc((size_t)steps, sizeof(uint64_t));
    int rows_min = 1 << 30;
    uint64_t admitted = 0;
    for (int it = 0; it < warm + steps; it++) {
        while (in_flight < N_SEQS) {
            prompt[0] = (int32_t)next_id; /* distinct prompts */
            sp.max_tokens = 768 + (int)(rnd() % 513);
            if (sched_submit(s, next_id++, prompt, PROMPT, &sp, err, sizeof err) != HS_OK) hs_die(1, "%s", err);
            in_flight++;
        }
        const sched_batch_t *b;
        uint64_t t0 = hs_now_ns();
        if (sched_step(s, &b) != HS_OK) hs_die(1, "sched_step failed");
        uint64_t t1 = hs_now_ns();
        for (int r = 0; r < b->n_seqs; r++) {
            new_tokens[r] = (int32_t)(rnd() % 150000);
            n_new[r] = b->logit_start[r + 1] - b->logit_start[r];
        }
        const sched_event_t *ev;
        int nev;
        uint64_t t2 = hs_now_ns();
        if (sched_update(s, new_tokens, n_new, &ev, &nev) != HS_OK) hs_die(1, "sched_update failed");
        uint64_t t3 = hs_now_ns();
        for (int i = 0; i < nev; i++)
            if (ev[i].kind == SCHED_EV_FINISH) in_flight--;
        if (it >= warm) {
            int k = it - warm;
            t_step[k] = t1 - t0;
            t_upd[k] = t3 - t2;
            t_all[k] = (t1 - t0) + (t3 - t2);
            if (b->n_seqs < rows_min) rows_min = b->n_seqs;
            admitted += (uint64_t)b->n_admitted;
        }
    }
    char e2[256];
    if (sched_check(s, e2, sizeof e2) != HS_OK) hs_die(1, "sched_check: %s", e2);
    qsort(t_all, (size_t)steps, sizeof(uint64_t), cmp_u64);
    qsort(t_step, (size_t)steps, sizeof(uint64_t), cmp_u64);
    qsort(t_upd, (size_t)steps, sizeof(uint64_t), cmp_u64);
    double mean = 0;
    for (int i = 0; i < steps; i++) mean += (double)t_all[i];
    mean /= steps;
    pool_stats_t ps;
    pool_stats(pool, &ps);
    printf("bench_sched: %d running sequences (min rows per step %d), E = %d, %d measured steps, "
           "%.2f admissions per step\n", N_SEQS, rows_min, m.n_pages, steps, (double)admitted / steps);
    printf("  step + update: median %.1f us, p10 %.1f, p90 %.1f, p99 %.1f, mean %.1f  (target <= 50 us)\n",
           t_all[steps / 2] / 1e3, t_all[steps / 10] / 1e3, t_all[steps * 9 / 10] / 1e3,
           t_all[steps * 99 / 100] / 1e3, mean / 1e3);
    printf("  sched_step alone: median %.1f us; sched_update alone: median %.1f us\n", t_step[steps / 2] / 1e3,
           t_upd[steps / 2] / 1e3);
    printf("  pool: %lld pages, %lld KV, %lld state, %llu blocks published\n", (long long)ps.n_pages,
           (long long)ps.n_kv, (long long)ps.n_state, (unsigned long long)ps.published);
    sched_destroy(s);
    pool_destroy(pool);
    statemap_free(&m);
    free(new_tokens);
    free(n_new);
    free(t_all);
    free(t_step);
    free(t_upd);
    return 0;
}
