/*
 * Property test of the page pool: >= 1,000,000 random operations (tests/pool_driver.h:
 * admit with shared-prefix prompts, append with look-ahead, publish, free, swap out/in,
 * bad calls, pure checks) over several pool sizes, shipped configs (E from their real
 * state maps) and all three layouts, with pool_check() after every operation and a
 * shadow device that verifies contents (state checkpoints included). At the end of each run everything is freed and
 * the pool must equal its initial state.
 * Under the sanitizers (HS_SANITIZED=1, set by scripts/test.sh) the count is 1/10.
 * HS_PROP_OPS overrides the total, HS_PROP_SEED the seed (default 1).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>

#include "layout.h"
#include "util.h"

#define DRV_FAIL(msg)                                                   \
    do {                                                                \
        fail_msg("after %llu ops: %s", (unsigned long long)g_ops, (msg)); \
        abort();                                                        \
    } while (0)
static unsigned long long g_ops;
#include "pool_driver.h"

static uint32_t xs_next(void *ctx) {
    uint64_t *x = ctx;
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return (uint32_t)((*x * 0x2545F4914F6CDD1DULL) >> 32);
}

/* E of a shipped config on tp ranks (bf16 or fp8 KV, bf16 or f32 state). */
static int shipped_E(const char *name, int tp, hs_dtype_t kvd, hs_dtype_t ssd) {
    mcfg_t c;
    char err[256];
    if (mcfg_load(name, &c, err, sizeof err) != HS_OK) fail_msg("%s", err);
    kv_layout_t kv;
    kv_layout_init(&kv, &c, tp, 16, kvd, 0);
    statemap_t m;
    if (statemap_init(&m, &c, tp, ssd, 0, kv.kv_bytes, 0, 0, err, sizeof err) != HS_OK) fail_msg("%s", err);
    int E = m.n_pages;
    statemap_free(&m);
    return E;
}

typedef struct {
    const char *what;
    layout_kind_t kind;
    int E, B, n_slots, hash_bits;
    int64_t n_pages, n_host;
    bool kv_only_hits;
    int weight; /* share of the operations */
    bool ckpt;
} run_t;

static void test_prop(void **st) {
    (void)st;
    const char *s = getenv("HS_SANITIZED");
    uint64_t total = s && *s && *s != '0' ? 100000 : 1000000;
    const char *o = getenv("HS_PROP_OPS");
    if (o) total = strtoull(o, NULL, 10);
    const char *sd = getenv("HS_PROP_SEED");
    uint64_t seed = sd ? strtoull(sd, NULL, 10) : 1;

    int e08 = shipped_E("qwen3.5-0.8b", 8, HS_BF16, HS_BF16);       /* small E */
    int e9b = shipped_E("qwen3.5-9b", 8, HS_BF16, HS_F32);          /* medium */
    int enx = shipped_E("qwen3-next-80b-a3b", 8, HS_F8_E4M3, HS_BF16);
    run_t runs[] = {
        {"paged stateless B16", LAYOUT_PAGED, 0, 16, 0, 0, 96, 48, false, 2, false},
        {"paged 0.8B tp8 B16", LAYOUT_PAGED, e08, 16, 0, 0, 4 * e08 + 80, 64, false, 2, false},
        {"paged 0.8B tp8 B4 small", LAYOUT_PAGED, e08, 4, 0, 0, 2 * e08 + 40, 40, false, 2, false},
        {"slots 0.8B tp8 B16", LAYOUT_SLOTS, e08, 16, 4, 0, 4 * e08 + 80, 64, false, 2, false},
        {"coupled k=1 B16", LAYOUT_COUPLED, 2, 16, 0, 0, 96, 48, false, 2, false},
        {"paged 9B tp8 kv-only hits B4", LAYOUT_PAGED, e9b, 4, 0, 0, 3 * e9b + 60, 2 * e9b + 20, true, 2, false},
        {"slots 80B tp8 fp8 B16", LAYOUT_SLOTS, enx, 16, 3, 0, 3 * enx + 60, 2 * enx + 40, false, 1, false},
        {"paged stateless B4 hash_bits 3", LAYOUT_PAGED, 0, 4, 0, 3, 48, 24, false, 1, false},
        {"slots tiny B4 hash_bits 5", LAYOUT_SLOTS, 3, 4, 2, 5, 30, 0, true, 1, false},
        {"paged 0.8B tp8 checkpoints B4", LAYOUT_PAGED, e08, 4, 0, 0, 6 * e08 + 60, 40, false, 2, true},
        {"coupled k=0 checkpoints B16", LAYOUT_COUPLED, 1, 16, 0, 0, 80, 40, false, 1, true},
    };
    int nr = (int)(sizeof runs / sizeof runs[0]), wsum = 0;
    for (int i = 0; i < nr; i++) wsum += runs[i].weight;
    double t0 = hs_now();
    uint64_t done = 0;
    for (int i = 0; i < nr; i++) {
        run_t *r = &runs[i];
        pool_config_t c;
        pool_config_default(&c);
        c.kind = r->kind;
        c.block_size = r->B;
        c.state_pages = r->E;
        c.n_slots = r->n_slots;
        c.n_pages = r->n_pages;
        c.n_host_pages = r->n_host;
        c.hash_bits = r->hash_bits;
        c.kv_only_hits = r->kv_only_hits;
        c.state_checkpoints = r->ckpt;
        c.max_seqs = 40;
        c.max_seq_tokens = 2048;
        uint64_t x = seed * 0x9E3779B97F4A7C15ULL + (uint64_t)i + 1;
        drv_t d;
        if (drv_init(&d, &c, true, xs_next, &x, seed + (uint64_t)i) != HS_OK) fail_msg("%s: %s", r->what, d.err);
        uint64_t n = total * (uint64_t)r->weight / (uint64_t)wsum + 1;
        for (uint64_t k = 0; k < n; k++, g_ops++) drv_step(&d);
        pool_stats_t ps;
        pool_stats(d.p, &ps);
        printf("%-32s E %3d pages %4lld: %8llu ops (ok %llu, again %llu, err %llu) hits %llu tok, refused %llu, "
               "evictions %llu, swaps %llu, checkpoints %llu (hits %llu)\n",
               r->what, r->E, (long long)r->n_pages, (unsigned long long)n, (unsigned long long)d.n_ok,
               (unsigned long long)d.n_again, (unsigned long long)d.n_err, (unsigned long long)ps.hit_tokens,
               (unsigned long long)ps.refused_tokens, (unsigned long long)ps.evictions,
               (unsigned long long)(ps.swap_outs + ps.swap_ins), (unsigned long long)ps.ckpts_made,
               (unsigned long long)ps.ckpt_hits);
        drv_finish(&d);
        done += n;
    }
    printf("%llu operations, pool_check after each: %.1f s\n", (unsigned long long)done, hs_now() - t0);
    assert_true(done >= total);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_prop)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
