/*
 * ATOM's 24 decoupling unit tests (seed-system.md §5, tests/test_per_req_cache_decoupling.py)
 * ported to hyserve's pool, each in two flavours:
 *   slots_*  LAYOUT_SLOTS, the seed's own design. ATOM's fixture: block size 4, 100 KV
 *            blocks, 8 groups, equiv 5. Our slots layout reserves n_slots * E pages at
 *            creation, so the fixture pool has 100 + 8 * 5 pages and KV gets exactly the
 *            100 of ATOM's block pool. We follow #894: admission charges no equivalent
 *            blocks (the state memory is already set aside), so where ATOM asserted
 *            "free blocks drop by 1 + equiv" we assert "by 1" (the comment of each test
 *            says how it maps).
 *   paged_*  LAYOUT_PAGED, hyserve's design: the same 5 state pages per request come
 *            from the common pool, so the #602 "equivalent block" charge becomes real
 *            pages and KV and state compete (test 12).
 * ATOM's "plain" (stateless) sequences map to a pool with state_pages = 0: in hyserve
 * every sequence of a model is stateful or none is.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "pool.h"

#define BS 4
#define KV_BLOCKS 100
#define GROUPS 8
#define EQUIV 5

static char err[256];

static void check(const pool_t *p) {
    int rc = pool_check(p, err, sizeof err);
    if (rc != HS_OK) fail_msg("%s", err);
}

/* layout, KV pages, slots (slots layout), state pages per request */
static pool_t *mk(layout_kind_t kind, int kv_pages, int slots, int E) {
    pool_config_t c;
    pool_config_default(&c);
    c.kind = kind;
    c.block_size = BS;
    c.state_pages = E;
    c.n_slots = slots;
    c.n_pages = kv_pages + (kind == LAYOUT_SLOTS ? (int64_t)slots * E : 0);
    c.max_seqs = 512;
    pool_t *p = NULL;
    assert_int_equal(pool_create(&p, &c, err, sizeof err), HS_OK);
    check(p);
    return p;
}

static int admit(pool_t *p, int64_t id, int n_tokens) {
    int rc = pool_admit(p, id, NULL, n_tokens, NULL, err, sizeof err);
    check(p);
    return rc;
}

static pool_stats_t stats(const pool_t *p) {
    pool_stats_t s;
    pool_stats(p, &s);
    return s;
}

static int slot_of(const pool_t *p, int64_t id) {
    pool_seq_info_t si;
    assert_int_equal(pool_seq_info(p, id, &si), HS_OK);
    return si.slot;
}

/* ---- BlockManager tests 1-12 ----------------------------------------------------------- */

/* 1. test_disabled_no_slots: a plain config has 0 free groups and equiv 0. */
static void t01_disabled_no_slots(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, GROUPS, 0);
    pool_stats_t s = stats(p);
    assert_int_equal(s.n_slots_free, 0);
    assert_int_equal(s.state_pages, 0);
    assert_int_equal(s.n_reserved, 0);
    pool_destroy(p);
    /* paged: no state pages either; every page is free for KV */
    p = mk(LAYOUT_PAGED, KV_BLOCKS, 0, 0);
    s = stats(p);
    assert_int_equal(s.state_pages, 0);
    assert_int_equal(s.n_free, KV_BLOCKS);
    pool_destroy(p);
}

/* 2. test_enabled_has_slots: 8 free groups and equiv 5. */
static void t02_enabled_has_slots(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, GROUPS, EQUIV);
    pool_stats_t s = stats(p);
    assert_int_equal(s.n_slots_free, GROUPS);
    assert_int_equal(s.state_pages, EQUIV);
    assert_int_equal(s.n_reserved, GROUPS * EQUIV);
    assert_int_equal(s.n_free, KV_BLOCKS);
    pool_destroy(p);
    /* paged: E = 5, nothing reserved, no slot count at all */
    p = mk(LAYOUT_PAGED, KV_BLOCKS, 0, EQUIV);
    s = stats(p);
    assert_int_equal(s.state_pages, EQUIV);
    assert_int_equal(s.n_reserved, 0);
    assert_int_equal(s.n_slots_free, 0);
    pool_destroy(p);
}

/* 3. test_allocate_assigns_slot: a 4-token stateful sequence gets a group in [0, 8), 7 remain. */
static void t03_allocate_assigns_slot(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, GROUPS, EQUIV);
    assert_int_equal(admit(p, 1, 4), HS_OK);
    int slot = slot_of(p, 1);
    assert_true(slot >= 0 && slot < GROUPS);
    assert_int_equal(slot, GROUPS - 1); /* LIFO pop from the end, as ATOM */
    assert_int_equal(stats(p).n_slots_free, GROUPS - 1);
    pool_destroy(p);
    /* paged: the sequence gets E state pages instead of a slot */
    p = mk(LAYOUT_PAGED, KV_BLOCKS, 0, EQUIV);
    assert_int_equal(admit(p, 1, 4), HS_OK);
    assert_int_equal(slot_of(p, 1), -1);
    assert_non_null(pool_state_table(p, 1));
    assert_int_equal(stats(p).n_state, EQUIV);
    pool_destroy(p);
}

/* 4. test_allocate_deducts_equiv_blocks. ATOM #602: free blocks drop by 6 (1 KV + 5
 * equiv). #894 (our slots layout): by 1 — the state lives in the reserved slot. Paged:
 * by 6, the 5 are real state pages. */
static void t04_allocate_deducts(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, GROUPS, EQUIV);
    assert_int_equal(admit(p, 1, 4), HS_OK);
    pool_stats_t s = stats(p);
    assert_int_equal(s.n_free, KV_BLOCKS - 1);
    assert_int_equal(s.n_state, EQUIV); /* the slot's pages, taken from the reservation */
    assert_int_equal(s.n_reserved, (GROUPS - 1) * EQUIV);
    pool_destroy(p);
    p = mk(LAYOUT_PAGED, KV_BLOCKS, 0, EQUIV);
    assert_int_equal(admit(p, 1, 4), HS_OK);
    s = stats(p);
    assert_int_equal(s.n_free, KV_BLOCKS - 1 - EQUIV);
    assert_int_equal(s.n_kv, 1);
    assert_int_equal(s.n_state, EQUIV);
    pool_destroy(p);
}

/* 5. test_deallocate_returns_slot_and_blocks: allocate then free restores everything. */
static void t05_deallocate_returns(void **st) {
    (void)st;
    for (int k = 0; k < 2; k++) {
        pool_t *p = k ? mk(LAYOUT_PAGED, KV_BLOCKS, 0, EQUIV) : mk(LAYOUT_SLOTS, KV_BLOCKS, GROUPS, EQUIV);
        pool_stats_t before = stats(p);
        assert_int_equal(admit(p, 1, 4), HS_OK);
        assert_int_equal(pool_free_seq(p, 1, err, sizeof err), HS_OK);
        check(p);
        pool_stats_t after = stats(p);
        assert_int_equal(after.n_free, before.n_free);
        assert_int_equal(after.n_slots_free, before.n_slots_free);
        assert_int_equal(after.n_reserved, before.n_reserved);
        assert_int_equal(after.n_state, 0);
        pool_seq_info_t si;
        assert_int_equal(pool_seq_info(p, 1, &si), HS_ERR_NOT_FOUND); /* "gone from accounting" */
        pool_destroy(p);
    }
}

/* 6. test_can_allocate_checks_both_kv_and_slot: True with 100 blocks. */
static void t06_can_allocate(void **st) {
    (void)st;
    for (int k = 0; k < 2; k++) {
        pool_t *p = k ? mk(LAYOUT_PAGED, KV_BLOCKS, 0, EQUIV) : mk(LAYOUT_SLOTS, KV_BLOCKS, GROUPS, EQUIV);
        pool_stats_t before = stats(p);
        assert_int_equal(pool_can_admit(p, 1, NULL, 4, NULL, err, sizeof err), HS_OK);
        pool_stats_t after = stats(p);
        assert_memory_equal(&before, &after, sizeof before); /* the check is pure */
        pool_destroy(p);
    }
}

/* 7. test_can_allocate_fails_not_enough_blocks. ATOM #602: 5 free blocks, need 1 + 5.
 * At HEAD (#894 semantics, ours for slots) a 24-token prompt (6 blocks) is needed to
 * fail. Paged: 5 free pages, a 1-block prompt needs 1 + 5 and fails (as #602). */
static void t07_can_allocate_fails_blocks(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, GROUPS, EQUIV);
    assert_int_equal(admit(p, 1, 95 * BS), HS_OK); /* leaves 5 KV pages */
    assert_int_equal(stats(p).n_free, 5);
    assert_int_equal(pool_can_admit(p, 2, NULL, 24, NULL, err, sizeof err), HS_AGAIN);
    assert_int_equal(pool_can_admit(p, 2, NULL, 20, NULL, err, sizeof err), HS_OK);
    pool_destroy(p);
    p = mk(LAYOUT_PAGED, KV_BLOCKS, 0, EQUIV);
    assert_int_equal(admit(p, 1, 90 * BS), HS_OK); /* 90 + 5 state pages */
    assert_int_equal(stats(p).n_free, 5);
    assert_int_equal(pool_can_admit(p, 2, NULL, 4, NULL, err, sizeof err), HS_AGAIN);
    assert_int_equal(admit(p, 2, 4), HS_AGAIN); /* commit refuses too, pool untouched */
    pool_destroy(p);
}

/* 8. test_can_allocate_fails_no_free_slots: 1 group, one allocated, a second fails.
 * Paged has no slots; its analogue is the sequence-record limit (max_seqs). */
static void t08_no_free_slots(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, 1, EQUIV);
    assert_int_equal(admit(p, 1, 4), HS_OK);
    assert_int_equal(pool_can_admit(p, 2, NULL, 4, NULL, err, sizeof err), HS_AGAIN);
    pool_destroy(p);
    pool_config_t c;
    pool_config_default(&c);
    c.block_size = BS;
    c.n_pages = KV_BLOCKS;
    c.state_pages = EQUIV;
    c.max_seqs = 1;
    assert_int_equal(pool_create(&p, &c, err, sizeof err), HS_OK);
    assert_int_equal(admit(p, 1, 4), HS_OK);
    assert_int_equal(pool_can_admit(p, 2, NULL, 4, NULL, err, sizeof err), HS_AGAIN);
    pool_destroy(p);
}

/* 9. test_plain_seq_ignores_per_req_cache: a plain sequence keeps group -1, the group
 * count is unchanged, no accounting. Ours: a stateless pool. */
static void t09_plain_seq(void **st) {
    (void)st;
    for (int k = 0; k < 2; k++) {
        pool_t *p = mk(k ? LAYOUT_PAGED : LAYOUT_SLOTS, KV_BLOCKS, GROUPS, 0);
        assert_int_equal(admit(p, 1, 4), HS_OK);
        assert_int_equal(slot_of(p, 1), -1);
        assert_null(pool_state_table(p, 1));
        pool_stats_t s = stats(p);
        assert_int_equal(s.n_state, 0);
        assert_int_equal(s.n_free, KV_BLOCKS - 1);
        pool_destroy(p);
    }
}

/* 10. test_multiple_allocate_deallocate: 8 sequences (ids 100-107, 200 blocks) get 8
 * distinct groups; freeing all restores 8. Paged: 8 disjoint state tables, and the
 * pool admits more than 8 as long as pages last (concurrency follows demand). */
static void t10_multiple(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, 200, GROUPS, EQUIV);
    bool used[GROUPS] = {0};
    for (int i = 0; i < GROUPS; i++) {
        assert_int_equal(admit(p, 100 + i, 4), HS_OK);
        int s = slot_of(p, 100 + i);
        assert_false(used[s]);
        used[s] = true;
    }
    assert_int_equal(stats(p).n_slots_free, 0);
    assert_int_equal(admit(p, 108, 4), HS_AGAIN);
    for (int i = 0; i < GROUPS; i++) assert_int_equal(pool_free_seq(p, 100 + i, err, sizeof err), HS_OK);
    check(p);
    assert_int_equal(stats(p).n_slots_free, GROUPS);
    pool_destroy(p);

    p = mk(LAYOUT_PAGED, 200, 0, EQUIV);
    int n = 0;
    while (admit(p, 100 + n, 4) == HS_OK) n++;
    assert_int_equal(n, 200 / (1 + EQUIV)); /* 33 requests of 1 block + 5 state pages */
    uint8_t owner[200] = {0};
    for (int i = 0; i < n; i++) {
        const int32_t *t = pool_state_table(p, 100 + i);
        for (int j = 0; j < EQUIV; j++) {
            assert_int_equal(owner[t[j]], 0);
            owner[t[j]] = 1;
        }
    }
    for (int i = 0; i < n; i++) assert_int_equal(pool_free_seq(p, 100 + i, err, sizeof err), HS_OK);
    check(p);
    assert_int_equal(stats(p).n_free, 200);
    pool_destroy(p);
}

/* 11. test_slot_reuse_after_dealloc: 2 groups; s1, s2; free s1; s3 gets s1's group
 * (LIFO). Paged: s3 gets s1's state pages back (LIFO free stack). */
static void t11_slot_reuse(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, 2, EQUIV);
    assert_int_equal(admit(p, 1, 4), HS_OK);
    assert_int_equal(admit(p, 2, 4), HS_OK);
    int s1 = slot_of(p, 1);
    assert_int_equal(pool_free_seq(p, 1, err, sizeof err), HS_OK);
    assert_int_equal(admit(p, 3, 4), HS_OK);
    assert_int_equal(slot_of(p, 3), s1);
    pool_destroy(p);
    p = mk(LAYOUT_PAGED, KV_BLOCKS, 0, EQUIV);
    assert_int_equal(admit(p, 1, 4), HS_OK);
    assert_int_equal(admit(p, 2, 4), HS_OK);
    int32_t t1[EQUIV];
    memcpy(t1, pool_state_table(p, 1), sizeof t1);
    assert_int_equal(pool_free_seq(p, 1, err, sizeof err), HS_OK);
    assert_int_equal(admit(p, 3, 4), HS_OK);
    /* the freed pages (KV block + state) are reused; every old state page is in use again */
    const int32_t *t3 = pool_state_table(p, 3);
    int32_t b3 = pool_block_table(p, 3, NULL)[0];
    for (int j = 0; j < EQUIV; j++) {
        bool found = b3 == t1[j];
        for (int k = 0; k < EQUIV; k++) found |= t3[k] == t1[j];
        assert_true(found);
    }
    pool_destroy(p);
}

/* 12. test_dynamic_competition: 20 blocks; a 16-token sequence uses 4; two stateful
 * sequences of 1 block + 5 equiv leave 4; the third fails (4 < 6). Slots (#894 / HEAD
 * test_state_slots_independent_of_kv_pool): state does not touch the KV pages, the
 * third succeeds. Paged: real competition, exactly ATOM #602's numbers. */
static void t12_dynamic_competition(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, 20, GROUPS, EQUIV);
    assert_int_equal(admit(p, 1, 16), HS_OK);
    assert_int_equal(stats(p).n_free, 20 - 4);
    assert_int_equal(admit(p, 2, 4), HS_OK);
    assert_int_equal(admit(p, 3, 4), HS_OK);
    assert_int_equal(pool_can_admit(p, 4, NULL, 4, NULL, err, sizeof err), HS_OK);
    assert_int_equal(stats(p).n_free, 14);
    pool_destroy(p);
    /* paged: the 16-token request also holds its state; start from 20 + 5 pages so the
     * numbers match ATOM's (16 left after the first request) */
    p = mk(LAYOUT_PAGED, 25, 0, EQUIV);
    assert_int_equal(admit(p, 1, 16), HS_OK);
    assert_int_equal(stats(p).n_free, 16);
    assert_int_equal(admit(p, 2, 4), HS_OK);
    assert_int_equal(admit(p, 3, 4), HS_OK);
    assert_int_equal(stats(p).n_free, 4);
    assert_int_equal(pool_can_admit(p, 4, NULL, 4, NULL, err, sizeof err), HS_AGAIN);
    /* and the other way round: freeing one request's state makes room for KV */
    assert_int_equal(pool_free_seq(p, 2, err, sizeof err), HS_OK);
    assert_int_equal(pool_can_append(p, 1, 10 * BS, 0, NULL, err, sizeof err), HS_OK);
    pool_destroy(p);
}

/* ---- Sequence tests 13-15 ------------------------------------------------------------------ */

/* 13. test_default_slot_negative: a new stateful sequence has no group. Ours: the pool
 * does not know it before admission; after it, it has a slot / state table. */
static void t13_default_slot_negative(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, GROUPS, EQUIV);
    pool_seq_info_t si;
    assert_int_equal(pool_seq_info(p, 7, &si), HS_ERR_NOT_FOUND);
    assert_null(pool_state_table(p, 7));
    assert_int_equal(admit(p, 7, 4), HS_OK);
    assert_true(slot_of(p, 7) >= 0);
    pool_destroy(p);
}

/* 14. test_plain_seq_no_slot: a plain sequence has group -1 (stateless pool). */
static void t14_plain_no_slot(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, GROUPS, 0);
    assert_int_equal(admit(p, 7, 4), HS_OK);
    assert_int_equal(slot_of(p, 7), -1);
    pool_destroy(p);
}

/* 15. test_no_legacy_num_mamba_blocks: the sequence no longer carries 1 + k mamba
 * blocks. Ours: decode appends take KV blocks only, never state pages, in both layouts
 * (coupled is the legacy one: state_pages = 1 + k at admission, none on append). */
static void t15_no_legacy_mamba_blocks(void **st) {
    (void)st;
    layout_kind_t kinds[3] = {LAYOUT_SLOTS, LAYOUT_PAGED, LAYOUT_COUPLED};
    for (int k = 0; k < 3; k++) {
        pool_t *p = mk(kinds[k], KV_BLOCKS, GROUPS, EQUIV);
        assert_int_equal(admit(p, 1, 4), HS_OK);
        int64_t state = stats(p).n_state;
        for (int i = 0; i < 20; i++) assert_int_equal(pool_append(p, 1, 1, 3, err, sizeof err), HS_OK);
        check(p);
        assert_int_equal(stats(p).n_state, state);
        assert_int_equal(stats(p).n_kv, (4 + 20 + 3 + BS - 1) / BS);
        pool_destroy(p);
    }
}

/* ---- ScheduledBatch tests 16-17 -------------------------------------------------------------- */

/* 16. test_per_req_cache_slots_collected: a stateful sequence contributes its group to
 * the batch. Ours: the batch's state_pages row of a sequence is its state table; in
 * the slots layout it is the slot's pages slot*E .. slot*E+E-1. */
static void t16_slots_collected(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, GROUPS, EQUIV);
    assert_int_equal(admit(p, 1, 4), HS_OK);
    int s = slot_of(p, 1);
    const int32_t *t = pool_state_table(p, 1);
    assert_non_null(t);
    for (int j = 0; j < EQUIV; j++) assert_int_equal(t[j], s * EQUIV + j);
    pool_destroy(p);
}

/* 17. test_no_stateful_seqs: plain sequences give no state rows. */
static void t17_no_stateful(void **st) {
    (void)st;
    for (int k = 0; k < 2; k++) {
        pool_t *p = mk(k ? LAYOUT_PAGED : LAYOUT_SLOTS, KV_BLOCKS, GROUPS, 0);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(admit(p, i, 4), HS_OK);
            assert_null(pool_state_table(p, i));
        }
        pool_destroy(p);
    }
}

/* ---- State index mapping 18-20 ------------------------------------------------------------- */

/* 18. test_non_spec_mapping: slots_per_group 4, group 7 -> base 28. Ours: E = 4, slot 7
 * (the first admission pops slot n_slots - 1 = 7) -> first state page 28. */
static void t18_non_spec_mapping(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, 8, 4);
    assert_int_equal(admit(p, 1, 4), HS_OK);
    assert_int_equal(slot_of(p, 1), 7);
    assert_int_equal(pool_state_table(p, 1)[0], 28);
    pool_destroy(p);
}

/* 19. test_spec_mapping: k = 3, group 5 -> [20, 21, 22, 23]. Ours: a slot of 1 + k = 4
 * pages; slot 5 is the third admission. Paged: 4 distinct pages, any ids. */
static void t19_spec_mapping(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, 8, 1 + 3);
    for (int i = 0; i < 3; i++) assert_int_equal(admit(p, i, 4), HS_OK);
    assert_int_equal(slot_of(p, 2), 5);
    const int32_t *t = pool_state_table(p, 2);
    for (int j = 0; j < 4; j++) assert_int_equal(t[j], 20 + j);
    pool_destroy(p);
    p = mk(LAYOUT_PAGED, KV_BLOCKS, 0, 1 + 3);
    assert_int_equal(admit(p, 1, 4), HS_OK);
    t = pool_state_table(p, 1);
    for (int j = 0; j < 4; j++)
        for (int k = 0; k < j; k++) assert_int_not_equal(t[j], t[k]);
    pool_destroy(p);
}

/* 20. test_all_indices_in_range: max_num_seqs 256, k = 3: every index < 1024, the last
 * group's last is 1023. Ours: 256 slots of 4 pages are pages [0, 1024). */
static void t20_all_indices_in_range(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, 256, 256, 4);
    int32_t max = -1;
    for (int i = 0; i < 256; i++) {
        assert_int_equal(pool_admit(p, i, NULL, 1, NULL, err, sizeof err), HS_OK);
        const int32_t *t = pool_state_table(p, i);
        for (int j = 0; j < 4; j++) {
            assert_true(t[j] >= 0 && t[j] < 1024);
            if (t[j] > max) max = t[j];
        }
    }
    check(p);
    assert_int_equal(max, 1023);
    assert_int_equal(pool_state_table(p, 0)[3], 1023); /* first admission = last slot */
    pool_destroy(p);
}

/* ---- Scheduler integration 21-24 (the pool side of them) --------------------------------- */

/* 21. test_prefill_stateful_seq: admission gives a group >= 0 and one state row. */
static void t21_prefill_stateful(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, GROUPS, EQUIV);
    pool_admit_info_t info;
    assert_int_equal(pool_admit(p, 1, NULL, 10, &info, err, sizeof err), HS_OK);
    assert_int_equal(info.n_blocks, 3);
    assert_true(slot_of(p, 1) >= 0);
    assert_non_null(pool_state_table(p, 1));
    pool_destroy(p);
}

/* 22. test_preempt_releases_slot: preemption (free for recompute) gives the group back. */
static void t22_preempt_releases_slot(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, GROUPS, EQUIV);
    assert_int_equal(admit(p, 1, 10), HS_OK);
    int before = stats(p).n_slots_free;
    assert_int_equal(pool_free_seq(p, 1, err, sizeof err), HS_OK);
    check(p);
    assert_int_equal(stats(p).n_slots_free, before + 1);
    assert_int_equal(pool_free_seq(p, 1, err, sizeof err), HS_ERR_NOT_FOUND); /* unlike ATOM, not idempotent: an error */
    pool_destroy(p);
}

/* 23. test_slot_exhaustion_blocks_prefill: 2 groups, 3 stateful sequences: 2 admitted. */
static void t23_slot_exhaustion(void **st) {
    (void)st;
    pool_t *p = mk(LAYOUT_SLOTS, KV_BLOCKS, 2, EQUIV);
    int ok = 0;
    for (int i = 0; i < 3; i++) ok += admit(p, i, 8) == HS_OK;
    assert_int_equal(ok, 2);
    pool_destroy(p);
    /* paged: the analogue limit is pages: 2 requests of 2 + 5 fit 14 pages, the third not */
    p = mk(LAYOUT_PAGED, 14, 0, EQUIV);
    ok = 0;
    for (int i = 0; i < 3; i++) ok += admit(p, i, 8) == HS_OK;
    assert_int_equal(ok, 2);
    pool_destroy(p);
}

/* 24. test_mixed_stateful_and_plain: 2 groups, 2 stateful + 2 plain all prefilled. Ours:
 * the group limit binds stateful pools only; a stateless pool with the same slot
 * setting admits all four. */
static void t24_mixed(void **st) {
    (void)st;
    pool_t *a = mk(LAYOUT_SLOTS, KV_BLOCKS, 2, EQUIV);
    pool_t *b = mk(LAYOUT_SLOTS, KV_BLOCKS, 2, 0);
    for (int i = 0; i < 2; i++) assert_int_equal(admit(a, i, 8), HS_OK);
    for (int i = 0; i < 4; i++) assert_int_equal(admit(b, i, 8), HS_OK);
    pool_destroy(a);
    pool_destroy(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t01_disabled_no_slots),  cmocka_unit_test(t02_enabled_has_slots),
        cmocka_unit_test(t03_allocate_assigns_slot), cmocka_unit_test(t04_allocate_deducts),
        cmocka_unit_test(t05_deallocate_returns), cmocka_unit_test(t06_can_allocate),
        cmocka_unit_test(t07_can_allocate_fails_blocks), cmocka_unit_test(t08_no_free_slots),
        cmocka_unit_test(t09_plain_seq),          cmocka_unit_test(t10_multiple),
        cmocka_unit_test(t11_slot_reuse),         cmocka_unit_test(t12_dynamic_competition),
        cmocka_unit_test(t13_default_slot_negative), cmocka_unit_test(t14_plain_no_slot),
        cmocka_unit_test(t15_no_legacy_mamba_blocks), cmocka_unit_test(t16_slots_collected),
        cmocka_unit_test(t17_no_stateful),        cmocka_unit_test(t18_non_spec_mapping),
        cmocka_unit_test(t19_spec_mapping),       cmocka_unit_test(t20_all_indices_in_range),
        cmocka_unit_test(t21_prefill_stateful),   cmocka_unit_test(t22_preempt_releases_slot),
        cmocka_unit_test(t23_slot_exhaustion),    cmocka_unit_test(t24_mixed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
