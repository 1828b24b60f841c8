/*
 * Unit tests for the page pool (pool.c) and the state map (layout.c):
 *   - statemap properties for every shipped config x tp {1,2,4,8} x KV dtype {bf16,
 *     fp8} x SSM dtype {f32, bf16} x n_spec {0, 3}: every granule present, inside
 *     [base_offset, page_bytes) of a page in [0, E), 16-byte aligned, no overlaps, waste
 *     = E * usable - state bytes; the coupled page (kv + statemap_bytes) gives E = 1.
 *     Prints the table of E and packing waste (paged layout, n_spec 0).
 *   - prefix caching: hash chain, collision guard (forced with hash_bits), LRU eviction
 *     order, partial blocks never hashed, the last block always computed, free-listed
 *     hits charged (ATOM's over-commit), the hybrid state gate, sharing and refcounts.
 *   - append with look-ahead, swap out / in through a fake device, every bad call.
 *   - pool_check itself: each kind of corruption, made through pool_int.h, is reported.
 *   - state checkpoints: creation, refresh, the deepest one wins, eviction, errors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layout.h"
#include "pool.h"
#include "pool_int.h" /* test_check_catches: corrupts a pool on purpose */

static char err[256];

static void check(const pool_t *p) {
    int rc = pool_check(p, err, sizeof err);
    if (rc != HS_OK) fail_msg("%s", err);
}

static pool_t *mk_cfg(const pool_config_t *c) {
    pool_t *p = NULL;
    if (pool_create(&p, c, err, sizeof err) != HS_OK) fail_msg("%s", err);
    check(p);
    return p;
}

/* paged, B = 4, stateless unless E > 0 */
static pool_t *mk(int64_t n_pages, int E) {
    pool_config_t c;
    pool_config_default(&c);
    c.block_size = 4;
    c.n_pages = n_pages;
    c.state_pages = E;
    c.max_seqs = 64;
    c.max_seq_tokens = 4096;
    return mk_cfg(&c);
}

static pool_stats_t stats(const pool_t *p) {
    pool_stats_t s;
    pool_stats(p, &s);
    return s;
}

static void seq_tokens(int32_t *t, int n, int base) {
    for (int i = 0; i < n; i++) t[i] = base + i;
}

static int admit(pool_t *p, int64_t id, const int32_t *tok, int n) {
    pool_admit_info_t info;
    int rc = pool_admit(p, id, tok, n, &info, err, sizeof err);
    check(p);
    return rc == HS_OK ? info.n_hit_tokens : -1000 + rc;
}

static void publish(pool_t *p, int64_t id, const int32_t *tok, int n) {
    assert_int_equal(pool_publish(p, id, tok, n, err, sizeof err), HS_OK);
    check(p);
}

static void sfree(pool_t *p, int64_t id) {
    assert_int_equal(pool_free_seq(p, id, err, sizeof err), HS_OK);
    check(p);
}

/* ---- statemap ---------------------------------------------------------------------------- */

typedef struct {
    int32_t page, offset;
    size_t size;
} gran_t;

static int gran_cmp(const void *a, const void *b) {
    const gran_t *x = a, *y = b;
    if (x->page != y->page) return x->page < y->page ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Verify every property of one map; returns the number of granules. */
static size_t verify_map(const statemap_t *m) {
    if (m->n_gdn == 0) return 0;
    size_t conv = (size_t)m->conv_width * m->conv_dim * hs_dtype_size(m->conv_dtype);
    size_t slice = (size_t)m->slice_rows * m->dk * hs_dtype_size(m->ssm_dtype);
    size_t ng = (size_t)m->n_gdn * (1 + (size_t)m->hv * m->n_slices), k = 0;
    assert_int_equal(m->dv % m->slice_rows, 0);
    assert_int_equal(m->n_slices * m->slice_rows, m->dv);
    gran_t *g = malloc(ng * sizeof *g);
    for (int l = 0; l < m->n_gdn; l++) {
        sm_loc_t c = statemap_conv(m, l);
        g[k++] = (gran_t){c.page, c.offset, conv};
        for (int h = 0; h < m->hv; h++)
            for (int j = 0; j < m->n_slices; j++) {
                sm_loc_t s = statemap_ssm(m, l, h, j);
                g[k++] = (gran_t){s.page, s.offset, slice};
            }
    }
    size_t used = 0;
    for (size_t i = 0; i < ng; i++) {
        assert_true(g[i].page >= 0 && g[i].page < m->n_pages);
        assert_true((size_t)g[i].offset >= m->base_offset);
        assert_true((size_t)g[i].offset + g[i].size <= m->page_bytes); /* never straddles */
        assert_int_equal(g[i].offset % 16, 0);
        used += g[i].size;
    }
    assert_int_equal(used, m->state_bytes);
    assert_int_equal((size_t)m->n_pages * (m->page_bytes - m->base_offset) - m->state_bytes, m->waste_bytes);
    qsort(g, ng, sizeof *g, gran_cmp);
    for (size_t i = 1; i < ng; i++)
        if (g[i].page == g[i - 1].page) assert_true((size_t)g[i - 1].offset + g[i - 1].size <= (size_t)g[i].offset);
    /* every page is used */
    for (size_t i = 1; i < ng; i++) assert_true(g[i].page == g[i - 1].page || g[i].page == g[i - 1].page + 1);
    assert_int_equal(g[0].page, 0);
    assert_int_equal(g[ng - 1].page, m->n_pages - 1);
    free(g);
    return ng;
}

static void test_statemap_shipped(void **st) {
    (void)st;
    const char *const *names = mcfg_shipped_names();
    int n_maps = 0;
    double worst = 0;
    printf("%-20s %-3s %-4s %-4s %8s %5s %4s %6s %s\n", "config", "tp", "kv", "ssm", "page B", "E", "rows", "waste",
           "(E lower bound)");
    for (int i = 0; names[i]; i++) {
        mcfg_t c;
        if (mcfg_load(names[i], &c, err, sizeof err) != HS_OK) fail_msg("%s", err);
        for (int tp = 1; tp <= 8; tp *= 2)
            for (int kd = 0; kd < 2; kd++)
                for (int sd = 0; sd < 2; sd++)
                    for (int spec = 0; spec <= 3; spec += 3) {
                        hs_dtype_t kvd = kd ? HS_F8_E4M3 : HS_BF16, ssd = sd ? HS_BF16 : HS_F32;
                        kv_layout_t kv;
                        kv_layout_init(&kv, &c, tp, 16, kvd, 0);
                        statemap_t m;
                        if (statemap_init(&m, &c, tp, ssd, spec, kv.kv_bytes, 0, 0, err, sizeof err) != HS_OK)
                            fail_msg("%s tp%d: %s", names[i], tp, err);
                        assert_true(m.n_pages >= 1);
                        assert_int_equal(m.conv_width, c.conv_kernel - 1 + spec);
                        verify_map(&m);
                        n_maps++;
                        double w = (double)m.waste_bytes / ((double)m.n_pages * kv.kv_bytes);
                        assert_true(w < 0.04); /* packing waste stays under 4 % everywhere */
                        if (w > worst) worst = w;
                        if (spec == 0)
                            printf("%-20s %-3d %-4s %-4s %8zu %5d %4d %5.2f%% (%zu)\n", names[i], tp,
                                   hs_dtype_name(kvd), hs_dtype_name(ssd), kv.kv_bytes, m.n_pages, m.slice_rows,
                                   100 * w, (m.state_bytes + kv.kv_bytes - 1) / kv.kv_bytes);
                        statemap_free(&m);
                        /* coupled: one page of kv_bytes + the whole state region, E = 1 */
                        size_t region = statemap_bytes(&c, tp, ssd, spec);
                        assert_int_equal(statemap_init(&m, &c, tp, ssd, spec, kv.kv_bytes + region, kv.kv_bytes, 0,
                                                       err, sizeof err),
                                         HS_OK);
                        assert_int_equal(m.n_pages, 1);
                        assert_int_equal(m.waste_bytes, 0);
                        verify_map(&m);
                        statemap_free(&m);
                    }
    }
    printf("%d state maps verified; worst packing waste %.2f %%\n", n_maps, 100 * worst);
}

static void test_statemap_errors(void **st) {
    (void)st;
    mcfg_t c;
    assert_int_equal(mcfg_load("qwen3.5-0.8b", &c, err, sizeof err), HS_OK);
    statemap_t m;
    /* explicit slice size that does not divide dv */
    assert_int_equal(statemap_init(&m, &c, 1, HS_F32, 0, 1 << 20, 0, 48, err, sizeof err), HS_ERR_INVALID);
    statemap_free(&m);
    /* a page smaller than the conv granule */
    assert_int_equal(statemap_init(&m, &c, 1, HS_F32, 0, 4096, 0, 0, err, sizeof err), HS_ERR_INVALID);
    statemap_free(&m);
    /* tp that does not divide the heads */
    assert_int_equal(statemap_init(&m, &c, 3, HS_F32, 0, 1 << 20, 0, 0, err, sizeof err), HS_ERR_INVALID);
    statemap_free(&m);
    /* explicit slice sizes all give valid maps */
    for (int r = 8; r <= 128; r *= 2) {
        assert_int_equal(statemap_init(&m, &c, 2, HS_BF16, 1, 98304, 0, r, err, sizeof err), HS_OK);
        assert_int_equal(m.slice_rows, r);
        verify_map(&m);
        statemap_free(&m);
    }
    /* a stateless model: E = 0 */
    mcfg_t d = c;
    d.n_gdn = 0;
    assert_int_equal(statemap_init(&m, &d, 1, HS_F32, 0, 98304, 0, 0, err, sizeof err), HS_OK);
    assert_int_equal(m.n_pages, 0);
    statemap_free(&m);
}

/* ---- prefix caching ----------------------------------------------------------------------- */

static void test_hash_chain(void **st) {
    (void)st;
    pool_t *p = mk(64, 0);
    int32_t a[16], b[16];
    seq_tokens(a, 16, 100);
    assert_int_equal(admit(p, 1, a, 12), 0);
    publish(p, 1, a, 12);
    assert_int_equal(stats(p).published, 3);
    /* the same 12 tokens: 2 blocks (the last block is always computed) */
    assert_int_equal(pool_lookup(p, a, 12, NULL), 8);
    /* one more token: all 3 blocks */
    a[12] = 7;
    assert_int_equal(pool_lookup(p, a, 13, NULL), 12);
    /* block 0 different, blocks 1-2 equal: nothing (the hash chains on the parent) */
    memcpy(b, a, sizeof b);
    b[0] = 9999;
    assert_int_equal(pool_lookup(p, b, 13, NULL), 0);
    /* block 1 different: only block 0; block 2 equal again does not count (sticky miss) */
    memcpy(b, a, sizeof b);
    b[5] = 9999;
    assert_int_equal(pool_lookup(p, b, 13, NULL), 4);
    /* an admission that hits shares the pages */
    assert_int_equal(admit(p, 2, a, 13), 12);
    int n1, n2;
    const int32_t *t1 = pool_block_table(p, 1, &n1), *t2 = pool_block_table(p, 2, &n2);
    assert_int_equal(n2, 4);
    for (int i = 0; i < 3; i++) assert_int_equal(t1[i], t2[i]);
    pool_seq_info_t si;
    assert_int_equal(pool_seq_info(p, 2, &si), HS_OK);
    assert_int_equal(si.n_cached_tokens, 12);
    pool_stats_t s = stats(p);
    assert_int_equal(s.n_kv, 4);
    assert_int_equal(s.hit_tokens, 12);
    sfree(p, 1);
    assert_int_equal(stats(p).n_kv, 4); /* still referenced by 2 */
    sfree(p, 2);
    s = stats(p);
    assert_int_equal(s.n_kv, 0);
    assert_int_equal(s.n_cached, 3); /* the unpublished 4th block went back to the free list */
    assert_int_equal(s.n_free, 61);
    pool_destroy(p);
}

static void test_hash_seed(void **st) {
    (void)st;
    pool_config_t c;
    pool_config_default(&c);
    c.block_size = 4;
    c.n_pages = 16;
    pool_t *p = mk_cfg(&c);
    int32_t a[9];
    seq_tokens(a, 9, 1);
    admit(p, 1, a, 9);
    publish(p, 1, a, 8);
    assert_int_equal(pool_lookup(p, a, 9, NULL), 8);
    pool_destroy(p);
    c.hash_seed = 12345; /* another salt: a different cache namespace, still self-consistent */
    p = mk_cfg(&c);
    admit(p, 1, a, 9);
    publish(p, 1, a, 8);
    assert_int_equal(pool_lookup(p, a, 9, NULL), 8);
    pool_destroy(p);
}

/* With 2-bit hashes nearly every block collides; only the token (and parent) compare
 * keeps lookups exact. */
static void test_collision_guard(void **st) {
    (void)st;
    pool_config_t c;
    pool_config_default(&c);
    c.block_size = 4;
    c.n_pages = 256;
    c.hash_bits = 2;
    c.max_seqs = 64;
    pool_t *p = mk_cfg(&c);
    int32_t a[5] = {1, 2, 3, 4, 0};
    admit(p, 1, a, 5);
    publish(p, 1, a, 4);
    int collisions = 0;
    for (int k = 0; k < 40; k++) {
        int32_t b[5] = {k + 10, 2, 3, 4, 0};
        assert_int_equal(pool_lookup(p, b, 5, NULL), 0); /* never a false hit */
        /* register b: it collides with a (same 2-bit hash) about 1 time in 4 */
        uint64_t before = stats(p).published;
        assert_int_equal(admit(p, 100 + k, b, 5), 0);
        publish(p, 100 + k, b, 4);
        collisions += stats(p).published == before;
    }
    assert_true(collisions > 0);
    assert_int_equal(pool_lookup(p, a, 5, NULL), 4); /* the original still hits */
    pool_destroy(p);
}

static void test_lru_eviction_order(void **st) {
    (void)st;
    pool_t *p = mk(8, 0);
    int32_t a[9], b[9], c[21];
    seq_tokens(a, 9, 100);
    seq_tokens(b, 9, 200);
    seq_tokens(c, 21, 300);
    admit(p, 1, a, 8);
    publish(p, 1, a, 8);
    sfree(p, 1); /* LRU: a1 a0 (tail block released first) */
    admit(p, 2, b, 8);
    publish(p, 2, b, 8);
    sfree(p, 2); /* LRU: a1 a0 b1 b0 */
    assert_int_equal(stats(p).n_cached, 4);
    assert_int_equal(stats(p).n_free, 4);
    assert_int_equal(pool_lookup(p, a, 9, NULL), 8);
    /* 5 fresh pages: the free 4, then the oldest cached page a1 */
    assert_int_equal(admit(p, 3, c, 20), 0);
    assert_int_equal(stats(p).evictions, 1);
    assert_int_equal(pool_lookup(p, a, 9, NULL), 4);
    assert_int_equal(pool_lookup(p, b, 9, NULL), 8);
    /* a hit revives a cached page; released again it becomes the most recent */
    assert_int_equal(admit(p, 4, a, 5), 4); /* takes a0 (cached) + 1 new page (evicts b1) */
    assert_int_equal(stats(p).evictions, 2);
    assert_int_equal(pool_lookup(p, b, 9, NULL), 4);
    sfree(p, 4); /* LRU: b0 a0 (a0 re-released last), plus 4's fresh page to FREE */
    assert_int_equal(admit(p, 5, c + 1, 8), 0); /* 2 fresh: the free one, then b0 */
    assert_int_equal(pool_lookup(p, b, 9, NULL), 0);
    assert_int_equal(pool_lookup(p, a, 9, NULL), 4);
    assert_int_equal(stats(p).evictions, 3);
    pool_destroy(p);
}

static void test_partial_blocks_never_hashed(void **st) {
    (void)st;
    pool_t *p = mk(32, 0);
    int32_t a[16];
    seq_tokens(a, 16, 1);
    admit(p, 1, a, 6);
    publish(p, 1, a, 6);
    assert_int_equal(stats(p).published, 1);
    publish(p, 1, a, 6); /* idempotent */
    assert_int_equal(stats(p).published, 1);
    /* decode: the partial block fills up and can be published then */
    assert_int_equal(pool_append(p, 1, 2, 0, err, sizeof err), HS_OK);
    publish(p, 1, a, 8);
    assert_int_equal(stats(p).published, 2);
    assert_int_equal(pool_lookup(p, a, 9, NULL), 8);
    /* publishing beyond the committed tokens is refused */
    assert_int_equal(pool_publish(p, 1, a, 9, err, sizeof err), HS_ERR_INVALID);
    check(p);
    pool_destroy(p);
}

static void test_same_content_twice(void **st) {
    (void)st;
    pool_t *p = mk(32, 0);
    int32_t a[9];
    seq_tokens(a, 9, 1);
    admit(p, 1, a, 9);
    admit(p, 2, a, 9); /* nothing published yet: no hit (KV not written) */
    publish(p, 1, a, 9);
    publish(p, 2, a, 9); /* same hashes already indexed: stays unregistered */
    assert_int_equal(stats(p).published, 2);
    sfree(p, 1);
    sfree(p, 2);
    assert_int_equal(stats(p).n_cached, 2);
    assert_int_equal(stats(p).n_free, 30);
    pool_destroy(p);
}

/* ATOM counts a hit on a free-listed cached block as free capacity and can over-commit
 * (seed-system §2.8). Here such hits are charged. */
static void test_cached_hits_charged(void **st) {
    (void)st;
    pool_t *p = mk(8, 0);
    int32_t a[21], c[12];
    seq_tokens(a, 21, 1);
    seq_tokens(c, 12, 500);
    admit(p, 1, a, 12);
    publish(p, 1, a, 12);
    sfree(p, 1);          /* 3 cached + 5 free */
    admit(p, 2, c, 12);   /* takes 3 free pages: 3 cached + 2 free left */
    pool_admit_info_t info;
    /* 21 tokens = 6 blocks: 3 hits on cached pages + 3 misses = 6 pages > 5. ATOM would
     * count only the 3 misses against its free set of 5 (which includes the cached
     * blocks) and over-commit. */
    assert_int_equal(pool_can_admit(p, 3, a, 21, &info, err, sizeof err), HS_AGAIN);
    assert_int_equal(info.n_hit_blocks, 3);
    assert_int_equal(info.n_pages_needed, 6);
    assert_int_equal(info.n_pages_avail, 5);
    /* 17 tokens = 5 blocks: 3 hits + 2 misses = 5 pages: fits exactly */
    assert_int_equal(admit(p, 3, a, 17), 12);
    assert_int_equal(stats(p).n_free + stats(p).n_cached, 0);
    pool_destroy(p);
}

static void test_hybrid_gate(void **st) {
    (void)st;
    pool_config_t c;
    pool_config_default(&c);
    c.block_size = 4;
    c.n_pages = 64;
    c.state_pages = 3;
    pool_t *p = mk_cfg(&c);
    int32_t a[13];
    seq_tokens(a, 13, 1);
    admit(p, 1, a, 12);
    publish(p, 1, a, 12);
    assert_int_equal(stats(p).published, 3); /* blocks are still published */
    pool_admit_info_t info;
    assert_int_equal(pool_lookup(p, a, 13, &info), 0);
    assert_int_equal(info.n_refused_tokens, 12);
    assert_int_equal(admit(p, 2, a, 13), 0); /* computes all 13 tokens, from a zero state */
    pool_stats_t s = stats(p);
    assert_int_equal(s.refused_tokens, 12);
    assert_int_equal(s.hit_tokens, 0);
    assert_int_equal(s.n_kv, 3 + 4); /* nothing shared */
    pool_destroy(p);
    /* opt-in KV-only hits (a model without state, or an experiment) */
    c.kv_only_hits = true;
    p = mk_cfg(&c);
    admit(p, 1, a, 12);
    publish(p, 1, a, 12);
    assert_int_equal(admit(p, 2, a, 13), 12);
    assert_int_equal(stats(p).n_kv, 4);
    pool_destroy(p);
}

static void test_prefix_off(void **st) {
    (void)st;
    pool_config_t c;
    pool_config_default(&c);
    c.block_size = 4;
    c.n_pages = 16;
    c.prefix_caching = false;
    pool_t *p = mk_cfg(&c);
    int32_t a[9];
    seq_tokens(a, 9, 1);
    admit(p, 1, a, 9);
    publish(p, 1, a, 9);
    assert_int_equal(pool_lookup(p, a, 9, NULL), 0);
    assert_int_equal(admit(p, 2, a, 9), 0);
    sfree(p, 1);
    assert_int_equal(stats(p).n_cached, 0);
    pool_destroy(p);
}

/* ---- append ------------------------------------------------------------------------------------ */

static void test_append_lookahead(void **st) {
    (void)st;
    pool_t *p = mk(16, 0);
    admit(p, 1, NULL, 4); /* 1 full block */
    int need = -1;
    assert_int_equal(pool_can_append(p, 1, 1, 0, &need, err, sizeof err), HS_OK);
    assert_int_equal(need, 1);
    assert_int_equal(pool_append(p, 1, 1, 3, err, sizeof err), HS_OK); /* 5 committed, 8 slots */
    pool_seq_info_t si;
    pool_seq_info(p, 1, &si);
    assert_int_equal(si.n_tokens, 5);
    assert_int_equal(si.n_blocks, 2);
    /* 2 drafts accepted (3 tokens in all): no page */
    assert_int_equal(pool_can_append(p, 1, 2, 0, &need, err, sizeof err), HS_OK);
    assert_int_equal(need, 0);
    assert_int_equal(pool_append(p, 1, 2, 0, err, sizeof err), HS_OK);
    pool_seq_info(p, 1, &si);
    assert_int_equal(si.n_tokens, 7);
    assert_int_equal(si.n_blocks, 2);
    /* next step: 1 + 3 look-ahead = 11 slots: a third block */
    assert_int_equal(pool_append(p, 1, 1, 3, err, sizeof err), HS_OK);
    pool_seq_info(p, 1, &si);
    assert_int_equal(si.n_tokens, 8);
    assert_int_equal(si.n_blocks, 3);
    check(p);
    /* decode for a block every B tokens */
    for (int i = 0; i < 40; i++) assert_int_equal(pool_append(p, 1, 1, 0, err, sizeof err), HS_OK);
    pool_seq_info(p, 1, &si);
    assert_int_equal(si.n_tokens, 48);
    assert_int_equal(si.n_blocks, 12);
    /* out of pages: soft (12 + 2 blocks used, 2 free, 3 needed) */
    admit(p, 2, NULL, 8);
    assert_int_equal(pool_can_append(p, 1, 12, 0, &need, err, sizeof err), HS_AGAIN);
    assert_int_equal(need, 3);
    assert_int_equal(pool_append(p, 1, 12, 0, err, sizeof err), HS_AGAIN);
    /* more than the pool could ever hold: hard */
    assert_int_equal(pool_can_append(p, 1, 100, 0, NULL, err, sizeof err), HS_ERR_NO_MEMORY);
    check(p);
    pool_seq_info(p, 1, &si);
    assert_int_equal(si.n_tokens, 48);
    pool_destroy(p);
}

/* ---- swap -------------------------------------------------------------------------------------- */

/* A fake device: one int per page and per host slot. */
typedef struct {
    int dev[512], host[512];
    int n_out, n_in;
} fake_t;

static void fake_copy(void *user, int64_t page, int64_t slot, int dir) {
    fake_t *f = user;
    assert_true(page >= 0 && page < 512 && slot >= 0 && slot < 512);
    if (dir == POOL_COPY_TO_HOST) {
        f->host[slot] = f->dev[page];
        f->n_out++;
    } else {
        f->dev[page] = f->host[slot];
        f->n_in++;
    }
}

static void stamp(fake_t *f, const pool_t *p, int64_t id) {
    int nb;
    const int32_t *bt = pool_block_table(p, id, &nb);
    for (int i = 0; i < nb; i++) f->dev[bt[i]] = (int)(id * 1000 + i);
    const int32_t *stt = pool_state_table(p, id);
    for (int j = 0; stt && j < pool_config(p)->state_pages; j++) f->dev[stt[j]] = (int)(id * 1000 + 500 + j);
}

static void verify_stamp(const fake_t *f, const pool_t *p, int64_t id) {
    int nb;
    const int32_t *bt = pool_block_table(p, id, &nb);
    for (int i = 0; i < nb; i++) assert_int_equal(f->dev[bt[i]], id * 1000 + i);
    const int32_t *stt = pool_state_table(p, id);
    for (int j = 0; stt && j < pool_config(p)->state_pages; j++) assert_int_equal(f->dev[stt[j]], id * 1000 + 500 + j);
}

static void swap_round(layout_kind_t kind) {
    pool_config_t c;
    pool_config_default(&c);
    c.kind = kind;
    c.block_size = 4;
    c.state_pages = 3;
    c.n_slots = 4;
    c.n_pages = 40 + (kind == LAYOUT_SLOTS ? 12 : 0);
    c.n_host_pages = 16;
    c.max_seqs = 16;
    pool_t *p = mk_cfg(&c);
    fake_t f = {0};
    int32_t a[200];
    seq_tokens(a, 200, 1);
    assert_true(admit(p, 1, a, 30) >= 0); /* 8 blocks + 3 state */
    assert_true(admit(p, 2, a + 1, 10) >= 0);
    stamp(&f, p, 1);
    stamp(&f, p, 2);
    pool_stats_t s0 = stats(p);
    assert_int_equal(pool_swap_out(p, 1, fake_copy, &f, err, sizeof err), HS_OK);
    check(p);
    assert_int_equal(f.n_out, 8 + 3);
    pool_stats_t s1 = stats(p);
    assert_int_equal(s1.n_host_used, 11);
    assert_int_equal(s1.n_swapped, 1);
    assert_int_equal(s1.n_kv, s0.n_kv - 8);
    assert_null(pool_block_table(p, 1, NULL));
    assert_null(pool_state_table(p, 1));
    /* bad calls on a swapped sequence */
    assert_int_equal(pool_append(p, 1, 1, 0, err, sizeof err), HS_ERR_STATE);
    assert_int_equal(pool_publish(p, 1, a, 4, err, sizeof err), HS_ERR_STATE);
    assert_int_equal(pool_swap_out(p, 1, fake_copy, &f, err, sizeof err), HS_ERR_STATE);
    assert_int_equal(pool_swap_in(p, 2, fake_copy, &f, err, sizeof err), HS_ERR_STATE);
    /* host pool too small for sequence 2 now (3 + 3 > 5 free)? 16 - 11 = 5 */
    assert_int_equal(pool_can_swap_out(p, 2, err, sizeof err), HS_AGAIN);
    check(p);
    /* the device pages are reused by someone else meanwhile */
    assert_true(admit(p, 3, a + 2, 120) >= 0);
    stamp(&f, p, 3);
    assert_int_equal(pool_can_swap_in(p, 1, err, sizeof err), HS_AGAIN);
    sfree(p, 3);
    assert_int_equal(pool_swap_in(p, 1, fake_copy, &f, err, sizeof err), HS_OK);
    check(p);
    assert_int_equal(f.n_in, 8 + 3);
    verify_stamp(&f, p, 1);
    verify_stamp(&f, p, 2);
    pool_seq_info_t si;
    pool_seq_info(p, 1, &si);
    assert_false(si.swapped);
    assert_int_equal(si.n_tokens, 30);
    /* decode continues */
    assert_int_equal(pool_append(p, 1, 3, 0, err, sizeof err), HS_OK);
    /* free of a swapped sequence gives back host slots */
    assert_int_equal(pool_swap_out(p, 2, NULL, NULL, err, sizeof err), HS_OK);
    sfree(p, 2);
    sfree(p, 1);
    pool_stats_t s = stats(p);
    assert_int_equal(s.n_host_used, 0);
    assert_int_equal(s.n_kv + s.n_state, 0);
    assert_int_equal(s.swap_outs, 2);
    assert_int_equal(s.swap_ins, 1);
    pool_destroy(p);
}

static void test_swap(void **st) {
    (void)st;
    swap_round(LAYOUT_PAGED);
    swap_round(LAYOUT_SLOTS);
    swap_round(LAYOUT_COUPLED);
}

static void test_swap_limits(void **st) {
    (void)st;
    pool_t *p = mk(64, 2); /* no host pool */
    admit(p, 1, NULL, 10);
    assert_int_equal(pool_swap_out(p, 1, NULL, NULL, err, sizeof err), HS_ERR_UNSUPPORTED);
    pool_destroy(p);
    pool_config_t c;
    pool_config_default(&c);
    c.block_size = 4;
    c.n_pages = 64;
    c.state_pages = 2;
    c.n_host_pages = 4;
    p = mk_cfg(&c);
    admit(p, 1, NULL, 10); /* 3 blocks + 2 state > 4 host slots, ever */
    assert_int_equal(pool_swap_out(p, 1, NULL, NULL, err, sizeof err), HS_ERR_NO_MEMORY);
    check(p);
    pool_destroy(p);
}

/* ---- bad calls --------------------------------------------------------------------------- */

static void same_stats(const pool_stats_t *a, const pool_stats_t *b) { assert_memory_equal(a, b, sizeof *a); }

static void test_bad_calls(void **st) {
    (void)st;
    pool_config_t c;
    pool_config_default(&c);
    c.block_size = 4;
    c.n_pages = 32;
    c.state_pages = 2;
    c.max_seq_tokens = 64;
    c.n_host_pages = 8;
    pool_t *p = mk_cfg(&c);
    int32_t a[100];
    seq_tokens(a, 100, 1);
    assert_true(admit(p, 1, a, 8) >= 0);
    pool_stats_t s0 = stats(p), s;
#define UNCHANGED()          \
    do {                     \
        check(p);            \
        s = stats(p);        \
        same_stats(&s0, &s); \
    } while (0)
    assert_int_equal(pool_admit(p, 1, a, 8, NULL, err, sizeof err), HS_ERR_STATE);
    UNCHANGED();
    assert_int_equal(pool_admit(p, -5, a, 8, NULL, err, sizeof err), HS_ERR_INVALID);
    UNCHANGED();
    assert_int_equal(pool_admit(p, 2, a, 0, NULL, err, sizeof err), HS_ERR_INVALID);
    UNCHANGED();
    assert_int_equal(pool_admit(p, 2, a, 65, NULL, err, sizeof err), HS_ERR_INVALID); /* over-long */
    UNCHANGED();
    /* unknown ids everywhere */
    assert_int_equal(pool_append(p, 9, 1, 0, err, sizeof err), HS_ERR_NOT_FOUND);
    UNCHANGED();
    assert_int_equal(pool_free_seq(p, 9, err, sizeof err), HS_ERR_NOT_FOUND);
    UNCHANGED();
    assert_int_equal(pool_publish(p, 9, a, 4, err, sizeof err), HS_ERR_NOT_FOUND);
    UNCHANGED();
    assert_int_equal(pool_swap_out(p, 9, NULL, NULL, err, sizeof err), HS_ERR_NOT_FOUND);
    UNCHANGED();
    assert_int_equal(pool_swap_in(p, 9, NULL, NULL, err, sizeof err), HS_ERR_NOT_FOUND);
    UNCHANGED();
    pool_seq_info_t si;
    assert_int_equal(pool_seq_info(p, 9, &si), HS_ERR_NOT_FOUND);
    assert_null(pool_block_table(p, 9, NULL));
    /* append: negative counts, beyond max_seq_tokens */
    assert_int_equal(pool_append(p, 1, -1, 0, err, sizeof err), HS_ERR_INVALID);
    UNCHANGED();
    assert_int_equal(pool_append(p, 1, 0, -1, err, sizeof err), HS_ERR_INVALID);
    UNCHANGED();
    assert_int_equal(pool_append(p, 1, 50, 7, err, sizeof err), HS_ERR_INVALID);
    UNCHANGED();
    /* publish: negative, beyond committed, NULL tokens */
    assert_int_equal(pool_publish(p, 1, a, -1, err, sizeof err), HS_ERR_INVALID);
    UNCHANGED();
    assert_int_equal(pool_publish(p, 1, a, 9, err, sizeof err), HS_ERR_INVALID);
    UNCHANGED();
    assert_int_equal(pool_publish(p, 1, NULL, 4, err, sizeof err), HS_ERR_INVALID);
    UNCHANGED();
    /* swap in a running sequence */
    assert_int_equal(pool_swap_in(p, 1, NULL, NULL, err, sizeof err), HS_ERR_STATE);
    UNCHANGED();
    /* double free */
    assert_int_equal(pool_free_seq(p, 1, err, sizeof err), HS_OK);
    check(p);
    s0 = stats(p);
    assert_int_equal(pool_free_seq(p, 1, err, sizeof err), HS_ERR_NOT_FOUND);
    UNCHANGED();
    assert_non_null(strstr(err, "unknown sequence 1"));
    /* a prompt that can never fit (32 pages - 2 state) */
    pool_destroy(p);
    c.max_seq_tokens = 1000;
    p = mk_cfg(&c);
    s0 = stats(p);
    assert_int_equal(pool_can_admit(p, 2, NULL, 31 * 4, NULL, err, sizeof err), HS_ERR_NO_MEMORY);
    assert_int_equal(pool_admit(p, 2, NULL, 31 * 4, NULL, err, sizeof err), HS_ERR_NO_MEMORY);
    UNCHANGED();
    assert_int_equal(pool_admit(p, 2, NULL, 30 * 4, NULL, err, sizeof err), HS_OK); /* exactly fits */
    check(p);
    pool_destroy(p);
    /* invalid configs */
    pool_config_default(&c);
    assert_int_equal(pool_create(&p, &c, err, sizeof err), HS_ERR_INVALID); /* n_pages 0 */
    c.n_pages = 10;
    c.kind = LAYOUT_SLOTS;
    c.state_pages = 5;
    c.n_slots = 2;
    assert_int_equal(pool_create(&p, &c, err, sizeof err), HS_ERR_INVALID); /* no KV page left */
    c.n_slots = 0;
    assert_int_equal(pool_create(&p, &c, err, sizeof err), HS_ERR_INVALID);
    c.kind = LAYOUT_PAGED;
    c.block_size = 0;
    assert_int_equal(pool_create(&p, &c, err, sizeof err), HS_ERR_INVALID);
    pool_destroy(NULL);
#undef UNCHANGED
}

static void test_stats_and_capacity(void **st) {
    (void)st;
    pool_t *p = mk(20, 3);
    pool_stats_t s = stats(p);
    assert_int_equal(s.n_pages, 20);
    assert_int_equal(s.state_pages, 3);
    assert_int_equal(pool_free_capacity(p), 20);
    admit(p, 1, NULL, 9); /* 3 blocks + 3 state */
    s = stats(p);
    assert_int_equal(s.n_free, 14);
    assert_int_equal(s.n_kv, 3);
    assert_int_equal(s.n_state, 3);
    assert_int_equal(s.n_seqs, 1);
    assert_int_equal(s.n_admits, 1);
    assert_int_equal(s.prompt_tokens, 9);
    assert_int_equal(pool_free_capacity(p), 14);
    assert_int_equal(s.n_free + s.n_kv + s.n_cached + s.n_state + s.n_reserved, s.n_pages);
    pool_destroy(p);
}


/* Corrupt one thing at a time through the internals: pool_check must report it (and
 * return, not abort), and be happy again once it is undone. */
static void expect_broken(const pool_t *p, const char *what) {
    char msg[256] = "";
    int rc = pool_check(p, msg, sizeof msg);
    if (rc != HS_ERR_STATE) fail_msg("pool_check missed: %s", what);
    assert_true(strncmp(msg, "pool_check: ", 12) == 0);
}

static void test_check_catches(void **st) {
    (void)st;
    pool_config_t c;
    pool_config_default(&c);
    c.block_size = 4;
    c.n_pages = 32;
    c.state_pages = 2;
    c.n_host_pages = 8;
    pool_t *p = mk_cfg(&c);
    int32_t a[13];
    seq_tokens(a, 13, 1);
    admit(p, 1, a, 12);
    publish(p, 1, a, 12);
    admit(p, 2, a, 13);
    sfree(p, 1);
    admit(p, 3, a + 1, 8);
    publish(p, 3, a + 1, 8);
    sfree(p, 3); /* 2 cached pages from 3 */
    admit(p, 4, NULL, 5);
    assert_int_equal(pool_swap_out(p, 4, NULL, NULL, err, sizeof err), HS_OK);
    check(p);
    int nb;
    const int32_t *bt = pool_block_table(p, 2, &nb);
    int32_t kvpg = bt[0], stpg = pool_state_table(p, 2)[0], freepg = p->free_stack[p->n_free - 1];
    int32_t cachedpg = p->lru_head;
    assert_true(cachedpg >= 0);

    p->pg[freepg].role = PG_KV;
    expect_broken(p, "free page with role KV");
    p->pg[freepg].role = PG_FREE;
    check(p);

    p->pg[kvpg].ref++;
    expect_broken(p, "refcount off by one");
    p->pg[kvpg].ref--;
    check(p);

    p->n_free--;
    expect_broken(p, "free counter");
    p->n_free++;
    check(p);

    p->pg[stpg].owner = 99;
    expect_broken(p, "state page owner");
    p->pg[stpg].owner = p->pg[pool_state_table(p, 2)[1]].owner;
    check(p);

    int32_t nx = p->pg[cachedpg].lru_next;
    p->pg[cachedpg].lru_next = -1;
    expect_broken(p, "broken LRU link");
    p->pg[cachedpg].lru_next = nx;
    check(p);

    p->pg[cachedpg].pflags = 0;
    expect_broken(p, "cached page not registered");
    p->pg[cachedpg].pflags = PF_REG;
    if (pool_check(p, err, sizeof err) != HS_OK) p->pg[cachedpg].pflags = PF_REG | PF_ROOT;
    check(p);

    p->pg[cachedpg].hash ^= 1;
    expect_broken(p, "hash index out of step");
    p->pg[cachedpg].hash ^= 1;
    check(p);

    int r4 = map_find(p, 4);
    int32_t h0 = p->seqs[r4].blocks[0];
    p->host_owner[h0] = -1;
    expect_broken(p, "host slot owner");
    p->host_owner[h0] = r4;
    check(p);

    p->seqs[map_find(p, 2)].n_tokens = 1000;
    expect_broken(p, "tokens beyond the block table");
    p->seqs[map_find(p, 2)].n_tokens = 13;
    check(p);
    pool_destroy(p);
}

/* ---- state checkpoints ------------------------------------------------------------------ */

typedef struct {
    int n;
    int64_t dst[16], src[16];
} ckcopy_t;

static void ck_copy(void *user, int64_t dst, int64_t src) {
    ckcopy_t *c = user;
    assert_true(c->n < 16);
    c->dst[c->n] = dst;
    c->src[c->n++] = src;
}

static void test_checkpoints(void **st) {
    (void)st;
    pool_config_t c;
    pool_config_default(&c);
    c.block_size = 4;
    c.n_pages = 40;
    c.state_pages = 3;
    c.state_checkpoints = true;
    pool_t *p = mk_cfg(&c);
    int32_t a[17];
    seq_tokens(a, 17, 1);
    admit(p, 1, a, 12);
    /* not published yet */
    assert_int_equal(pool_checkpoint(p, 1, 8, ck_copy, NULL, err, sizeof err), HS_ERR_STATE);
    publish(p, 1, a, 12);
    assert_int_equal(pool_checkpoint(p, 1, 6, ck_copy, NULL, err, sizeof err), HS_ERR_INVALID);  /* not a boundary */
    assert_int_equal(pool_checkpoint(p, 1, 16, ck_copy, NULL, err, sizeof err), HS_ERR_INVALID); /* > committed */
    assert_int_equal(pool_checkpoint(p, 9, 8, ck_copy, NULL, err, sizeof err), HS_ERR_NOT_FOUND);
    check(p);
    ckcopy_t cc = {0};
    assert_int_equal(pool_can_checkpoint(p, 1, 8, err, sizeof err), HS_OK);
    assert_int_equal(pool_checkpoint(p, 1, 8, ck_copy, &cc, err, sizeof err), HS_OK);
    check(p);
    assert_int_equal(cc.n, 3);
    const int32_t *st1 = pool_state_table(p, 1);
    for (int j = 0; j < 3; j++) assert_int_equal(cc.src[j], st1[j]); /* ckpt page j <- state page j */
    pool_stats_t s = stats(p);
    assert_int_equal(s.n_ckpts, 1);
    assert_int_equal(s.n_ckpt_pages, 3);
    assert_int_equal(s.n_free, 40 - 3 - 3 - 3);
    assert_int_equal(pool_free_capacity(p), 31 + 3); /* checkpoints are cache: they count */
    /* the same block again: refreshed, no copy */
    assert_int_equal(pool_checkpoint(p, 1, 8, ck_copy, &cc, err, sizeof err), HS_OK);
    assert_int_equal(cc.n, 3);
    assert_int_equal(stats(p).ckpts_made, 1);
    /* a prompt through blocks 0-2: KV hits 12 tokens, usable up to the checkpoint at 8 */
    pool_admit_info_t info;
    assert_int_equal(pool_lookup(p, a, 13, &info), 8);
    assert_int_equal(info.n_refused_tokens, 4);
    assert_non_null(info.ckpt_pages);
    for (int j = 0; j < 3; j++) assert_int_equal(info.ckpt_pages[j], cc.dst[j]);
    assert_int_equal(pool_admit(p, 2, a, 13, &info, err, sizeof err), HS_OK);
    check(p);
    assert_int_equal(info.n_hit_tokens, 8);
    assert_non_null(info.ckpt_pages);
    int n1, n2;
    const int32_t *b1 = pool_block_table(p, 1, &n1), *b2 = pool_block_table(p, 2, &n2);
    assert_int_equal(b1[0], b2[0]);
    assert_int_equal(b1[1], b2[1]);
    assert_int_not_equal(b1[2], b2[2]); /* beyond the checkpoint: computed again */
    assert_int_equal(stats(p).ckpt_hits, 1);
    /* a deeper checkpoint wins */
    cc.n = 0;
    assert_int_equal(pool_checkpoint(p, 1, 12, ck_copy, &cc, err, sizeof err), HS_OK);
    assert_int_equal(pool_lookup(p, a, 13, &info), 12);
    assert_int_equal(info.n_refused_tokens, 0);
    /* a prompt that leaves block 1: no checkpoint on its chain */
    int32_t b[13];
    memcpy(b, a, sizeof b);
    b[5] = 999;
    assert_int_equal(pool_lookup(p, b, 13, &info), 0);
    assert_int_equal(info.n_refused_tokens, 4);
    assert_null(info.ckpt_pages);
    sfree(p, 1);
    sfree(p, 2);
    /* a request that needs every page evicts the checkpoints and the cached blocks */
    s = stats(p);
    assert_int_equal(s.n_ckpts, 2);
    assert_int_equal(pool_free_capacity(p), 40);
    assert_int_equal(admit(p, 3, NULL, 37 * 4), 0);
    s = stats(p);
    assert_int_equal(s.n_ckpts, 0);
    assert_int_equal(s.ckpt_evictions + 0 >= 1, 1);
    assert_int_equal(s.n_free + s.n_cached + s.n_ckpt_pages, 0);
    sfree(p, 3);
    assert_int_equal(stats(p).n_free, 40);
    pool_destroy(p);
    /* invalid configurations and a pool without checkpoints */
    c.kind = LAYOUT_SLOTS;
    c.n_slots = 2;
    assert_int_equal(pool_create(&p, &c, err, sizeof err), HS_ERR_INVALID);
    c.kind = LAYOUT_PAGED;
    c.state_checkpoints = false;
    p = mk_cfg(&c);
    admit(p, 1, a, 12);
    publish(p, 1, a, 12);
    assert_int_equal(pool_checkpoint(p, 1, 8, NULL, NULL, err, sizeof err), HS_ERR_UNSUPPORTED);
    pool_destroy(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_statemap_shipped),
        cmocka_unit_test(test_statemap_errors),
        cmocka_unit_test(test_hash_chain),
        cmocka_unit_test(test_hash_seed),
        cmocka_unit_test(test_collision_guard),
        cmocka_unit_test(test_lru_eviction_order),
        cmocka_unit_test(test_partial_blocks_never_hashed),
        cmocka_unit_test(test_same_content_twice),
        cmocka_unit_test(test_cached_hits_charged),
        cmocka_unit_test(test_hybrid_gate),
        cmocka_unit_test(test_prefix_off),
        cmocka_unit_test(test_append_lookahead),
        cmocka_unit_test(test_swap),
        cmocka_unit_test(test_swap_limits),
        cmocka_unit_test(test_bad_calls),
        cmocka_unit_test(test_stats_and_capacity),
        cmocka_unit_test(test_check_catches),
        cmocka_unit_test(test_checkpoints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
