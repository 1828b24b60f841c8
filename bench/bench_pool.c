/*
 * bench_pool: all pool work of one decode step for 1,024 running sequences, on one core.
 *
 * Model: Qwen3.5-397B-A17B at tp 4, fp8 KV, bf16 SSM state, block size 16, paged
 * layout, prefix caching on (stateful default: hits refused, blocks still hashed and
 * published). The pool has room for the 1,024 sequences (E state pages + ~64 blocks
 * each) plus headroom. One step =
 *   - for each running sequence: pool_can_append(id, 1, 0) then pool_append(id, 1, 0)
 *     (a new block every 16 tokens; lengths are staggered so 1/16 of them take one);
 *   - A sequences finish (pool_free_seq) and A new ones are admitted (pool_can_admit +
 *     pool_admit with a 512-token prompt sharing a 256-token system prefix, so the
 *     lookup hashes 17 blocks), and the new ones publish their prompt blocks
 *     (pool_publish, 32 blocks hashed). A = 1 is the steady state of the seed's
 *     1024/1024 benchmark (a sequence lives ~1,000 steps, so ~1 of 1,024 ends per
 *     step); A = 2 is also reported.
 * Reports the median, p10, p90 and mean over the measured steps (after a warm-up), and
 * the append-only part. Usage: bench_pool [steps] (default 20000).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layout.h"
#include "pool.h"

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

static void run(int steps, int n_adm);

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 20000;
    run(steps, 1);
    run(steps, 2);
    return 0;
}

static void run(int steps, int n_adm) {
    int warm = 500;
    rng = 88172645463325252ULL;
    char err[256];
    mcfg_t c;
    if (mcfg_load("qwen3.5-397b-a17b", &c, err, sizeof err) != HS_OK) hs_die(1, "%s", err);
    kv_layout_t kv;
    kv_layout_init(&kv, &c, 4, 16, HS_F8_E4M3, 0);
    statemap_t m;
    if (statemap_init(&m, &c, 4, HS_BF16, 0, kv.kv_bytes, 0, 0, err, sizeof err) != HS_OK) hs_die(1, "%s", err);
    pool_config_t pc;
    pool_config_default(&pc);
    pc.state_pages = m.n_pages;
    pc.max_seqs = N_SEQS + 16;
    pc.n_pages = (int64_t)N_SEQS * (m.n_pages + 80) + 20000;
    pool_t *p;
    if (pool_create(&p, &pc, err, sizeof err) != HS_OK) hs_die(1, "%s", err);
    statemap_free(&m);

    static int32_t prompt[PROMPT];
    for (int i = 0; i < PROMPT; i++) prompt[i] = (int32_t)(rnd() % 200000);
    int64_t ids[N_SEQS], next_id = 0;
    int len[N_SEQS];
    /* start: 1,024 sequences with staggered lengths (prompt + 0..1023 generated) */
    for (int s = 0; s < N_SEQS; s++) {
        for (int i = 256; i < PROMPT; i++) prompt[i] = (int32_t)(rnd() % 200000);
        ids[s] = next_id++;
        if (pool_admit(p, ids[s], prompt, PROMPT, NULL, err, sizeof err) != HS_OK) hs_die(1, "%s", err);
        pool_publish(p, ids[s], prompt, PROMPT, err, sizeof err);
        int extra = (int)(rnd() % 1024);
        if (pool_append(p, ids[s], extra, 0, err, sizeof err) != HS_OK) hs_die(1, "%s", err);
        len[s] = PROMPT + extra;
    }
    uint64_t *t_step = malloc(sizeof(uint64_t) * (size_t)steps), *t_app = malloc(sizeof(uint64_t) * (size_t)steps);
    uint64_t *t_free = malloc(sizeof(uint64_t) * (size_t)steps), *t_adm = malloc(sizeof(uint64_t) * (size_t)steps),
             *t_pub = malloc(sizeof(uint64_t) * (size_t)steps);
    for (int st = -warm; st < steps; st++) {
        /* which sequences finish this step (chosen outside the timed region) */
        int fin[2] = {(int)(rnd() % N_SEQS), (int)(rnd() % N_SEQS)};
        if (fin[1] == fin[0]) fin[1] = (fin[0] + 1) % N_SEQS;
        (void)fin;
        int32_t newp[2][PROMPT];
        for (int k = 0; k < 2; k++) {
            memcpy(newp[k], prompt, 256 * sizeof(int32_t));
            for (int i = 256; i < PROMPT; i++) newp[k][i] = (int32_t)(rnd() % 200000);
        }
        uint64_t t0 = hs_now_ns();
        for (int s = 0; s < N_SEQS; s++) {
            if (pool_can_append(p, ids[s], 1, 0, NULL, err, sizeof err) != HS_OK) hs_die(1, "append check: %s", err);
            pool_append(p, ids[s], 1, 0, err, sizeof err);
        }
        uint64_t t1 = hs_now_ns();
        uint64_t tf = 0, ta = 0, tp = 0;
        for (int k = 0; k < n_adm; k++) {
            int s = fin[k];
            uint64_t a = hs_now_ns();
            pool_free_seq(p, ids[s], err, sizeof err);
            uint64_t b = hs_now_ns();
            ids[s] = next_id++;
            if (pool_can_admit(p, ids[s], newp[k], PROMPT, NULL, err, sizeof err) != HS_OK) hs_die(1, "admit: %s", err);
            pool_admit(p, ids[s], newp[k], PROMPT, NULL, err, sizeof err);
            uint64_t c2 = hs_now_ns();
            pool_publish(p, ids[s], newp[k], PROMPT, err, sizeof err);
            tf += b - a, ta += c2 - b, tp += hs_now_ns() - c2;
            len[s] = PROMPT;
        }
        uint64_t t2 = hs_now_ns();
        for (int s = 0; s < N_SEQS; s++) len[s]++;
        if (st >= 0) {
            t_step[st] = t2 - t0;
            t_app[st] = t1 - t0;
            t_free[st] = tf, t_adm[st] = ta, t_pub[st] = tp;
        }
    }
    char msg[256];
    if (pool_check(p, msg, sizeof msg) != HS_OK) hs_die(1, "%s", msg);
    pool_stats_t ps;
    pool_stats(p, &ps);
    double mean = 0;
    for (int i = 0; i < steps; i++) mean += (double)t_step[i];
    mean /= steps;
    qsort(t_step, (size_t)steps, sizeof *t_step, cmp_u64);
    qsort(t_app, (size_t)steps, sizeof *t_app, cmp_u64);
    qsort(t_free, (size_t)steps, sizeof *t_free, cmp_u64);
    qsort(t_adm, (size_t)steps, sizeof *t_adm, cmp_u64);
    qsort(t_pub, (size_t)steps, sizeof *t_pub, cmp_u64);
    printf("bench_pool: %d sequences, E = %d, %lld pages (%lld free, %lld cached), %d steps\n", N_SEQS, pc.state_pages,
           (long long)pc.n_pages, (long long)ps.n_free, (long long)ps.n_cached, steps);
    printf("decode step (1024 appends + %d frees + %d admits + %d publishes): median %.2f us  p10 %.2f  p90 %.2f  mean %.2f\n",
           n_adm, n_adm, n_adm, t_step[steps / 2] / 1e3, t_step[steps / 10] / 1e3, t_step[steps * 9 / 10] / 1e3, mean / 1e3);
    printf("  appends only (1024 x can_append + append):                    median %.2f us  p10 %.2f  p90 %.2f\n",
           t_app[steps / 2] / 1e3, t_app[steps / 10] / 1e3, t_app[steps * 9 / 10] / 1e3);
    printf("  medians of the parts: free %.2f us, can_admit + admit %.2f us, publish %.2f us\n", t_free[steps / 2] / 1e3,
           t_adm[steps / 2] / 1e3, t_pub[steps / 2] / 1e3);
    free(t_step);
    free(t_app);
    free(t_free);
    free(t_adm);
    free(t_pub);
    pool_destroy(p);
}
