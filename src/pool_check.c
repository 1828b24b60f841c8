/*
 * pool_check: the page pool's invariant checker (pool.h). It recomputes every count,
 * refcount and ownership from scratch and compares: roles vs counters, the free stack
 * and LRU list vs the FREE and CACHED pages, the hash index vs the registered pages,
 * block tables vs refcounts, state tables vs STATE pages and slots, host slots vs
 * swapped sequences, the id map vs the records. O(pages + table entries + index).
 */
#include "pool_int.h"

#include <stdlib.h>

#define FAIL(...)                                                    \
    do {                                                             \
        rc = hs_errf(err, n, HS_ERR_STATE, "pool_check: " __VA_ARGS__); \
        goto out;                                                    \
    } while (0)

int pool_check(const pool_t *p, char *err, size_t n) {
    int rc = HS_OK;
    int64_t np = p->cfg.n_pages;
    int32_t *refs = hs_calloc((size_t)np, sizeof(int32_t));
    uint8_t *seen = hs_calloc((size_t)np, 1);
    int64_t nh = p->cfg.n_host_pages;
    int32_t *host_seen = hs_calloc((size_t)nh + 1, sizeof(int32_t));
    int64_t cnt[PG_N_ROLES] = {0};

    for (int64_t pg = 0; pg < np; pg++) {
        if (p->pg[pg].role >= PG_N_ROLES) FAIL("page %lld has role %d", (long long)pg, p->pg[pg].role);
        cnt[p->pg[pg].role]++;
        if (p->pg[pg].role != PG_KV && p->pg[pg].ref != 0) FAIL("page %lld role %d has ref %d", (long long)pg, p->pg[pg].role, p->pg[pg].ref);
        if (p->pg[pg].role != PG_STATE && p->pg[pg].role != PG_CKPT && p->pg[pg].owner != -1) FAIL("page %lld role %d has owner", (long long)pg, p->pg[pg].role);
        bool reg = p->pg[pg].pflags & PF_REG;
        if (reg && p->pg[pg].role != PG_KV && p->pg[pg].role != PG_CACHED)
            FAIL("page %lld role %d is registered", (long long)pg, p->pg[pg].role);
        if (p->pg[pg].role == PG_CACHED && !reg) FAIL("cached page %lld is not registered", (long long)pg);
        if (p->pg[pg].pflags & ~(PF_REG | PF_ROOT) || (!reg && p->pg[pg].pflags))
            FAIL("page %lld has flags %d", (long long)pg, p->pg[pg].pflags);
        if (reg && ix_find(p, p->pg[pg].hash) != pg) FAIL("registered page %lld not indexed", (long long)pg);
        if (p->pg[pg].role == PG_RESERVED && (p->shared_state || pg >= (int64_t)p->cfg.n_slots * p->E))
            FAIL("page %lld reserved outside the slot area", (long long)pg);
        if (!p->shared_state && pg < (int64_t)p->cfg.n_slots * p->E && p->pg[pg].role != PG_RESERVED &&
            p->pg[pg].role != PG_STATE)
            FAIL("slot page %lld has role %d", (long long)pg, p->pg[pg].role);
    }
    if (cnt[PG_FREE] != p->n_free || cnt[PG_KV] != p->n_kv || cnt[PG_CACHED] != p->n_cached ||
        cnt[PG_STATE] != p->n_state || cnt[PG_RESERVED] != p->n_reserved || cnt[PG_CKPT] != p->n_ckpt_pages)
        FAIL("role counts free %lld kv %lld cached %lld state %lld reserved %lld vs counters %lld %lld %lld %lld %lld",
             (long long)cnt[0], (long long)cnt[1], (long long)cnt[2], (long long)cnt[3], (long long)cnt[4],
             (long long)p->n_free, (long long)p->n_kv, (long long)p->n_cached, (long long)p->n_state,
             (long long)p->n_reserved);
    /* free stack = FREE pages, each once */
    for (int64_t i = 0; i < p->n_free; i++) {
        int32_t pg = p->free_stack[i];
        if (pg < 0 || pg >= np || p->pg[pg].role != PG_FREE || seen[pg]) FAIL("free stack entry %lld (page %d)", (long long)i, pg);
        seen[pg] = 1;
    }
    /* state checkpoints: records, their pages, their index */
    int n_ck = 0;
    for (int c = 0; c < p->max_ck; c++) {
        if (p->ck_kvpage[c] < 0) continue;
        n_ck++;
        int32_t q = p->ck_kvpage[c];
        if (q >= np || !(p->pg[q].pflags & PF_REG) || p->pg[q].hash != p->ck_key[c] || ck_find(p, p->ck_key[c]) != c)
            FAIL("checkpoint %d keyed on page %d", c, q);
        for (int j = 0; j < p->E; j++) {
            int32_t pg = p->ck_pages[(size_t)c * p->E + j];
            if (pg < 0 || pg >= np || p->pg[pg].role != PG_CKPT || p->pg[pg].owner != c || seen[pg] == 4)
                FAIL("checkpoint %d page %d = %d", c, j, pg);
            if (j > 0 && (p->pg[pg].lru_prev != -1 || p->pg[pg].lru_next != -1)) FAIL("checkpoint %d page %d linked", c, j);
            seen[pg] = 4;
        }
    }
    if (n_ck + p->n_ck_free != p->max_ck || (int64_t)n_ck * p->E != p->n_ckpt_pages)
        FAIL("%d checkpoints + %d free records != %d", n_ck, p->n_ck_free, p->max_ck);
    if (p->ckix) {
        int e = 0;
        for (uint64_t i = 0; i <= p->ckix_mask; i++) e += p->ckix[i].ck >= 0;
        if (e != n_ck) FAIL("checkpoint index has %d entries for %d checkpoints", e, n_ck);
    }
    /* LRU list = CACHED pages + the first page of each checkpoint, links consistent */
    {
        int64_t k = 0, want = p->n_cached + n_ck;
        int32_t prev = -1;
        for (int32_t pg = p->lru_head; pg >= 0; pg = p->pg[pg].lru_next) {
            if (pg >= np || seen[pg] == 2) FAIL("LRU entry page %d", pg);
            if (p->pg[pg].role != PG_CACHED &&
                !(p->pg[pg].role == PG_CKPT && p->ck_pages[(size_t)p->pg[pg].owner * p->E] == pg))
                FAIL("LRU entry page %d has role %d", pg, p->pg[pg].role);
            if (p->pg[pg].lru_prev != prev) FAIL("LRU prev link of page %d", pg);
            seen[pg] = 2;
            prev = pg;
            if (++k > want) FAIL("LRU list longer than %lld", (long long)want);
        }
        if (k != want || p->lru_tail != prev) FAIL("LRU list has %lld of %lld entries", (long long)k, (long long)want);
    }
    /* index: every entry points to a registered page under that hash; count = registered pages */
    if (p->cfg.prefix_caching) {
        int64_t entries = 0, regs = 0;
        for (uint64_t i = 0; i <= p->ix_mask; i++) {
            int32_t pg = p->ix[i].page;
            if (pg < 0) continue;
            entries++;
            if (pg >= np || !(p->pg[pg].pflags & PF_REG) || (uint32_t)p->pg[pg].hash != p->ix[i].tag) FAIL("index slot %llu -> page %d", (unsigned long long)i, pg);
        }
        for (int64_t pg = 0; pg < np; pg++) regs += (p->pg[pg].pflags & PF_REG) != 0;
        if (entries != regs) FAIL("index has %lld entries for %lld registered pages", (long long)entries, (long long)regs);
    }
    /* sequences */
    {
        int live = 0, swapped = 0;
        for (int r = 0; r < p->cfg.max_seqs; r++) {
            const seq_t *s = &p->seqs[r];
            if (s->id < 0) continue;
            live++;
            if (map_find(p, s->id) != r) FAIL("sequence %lld not mapped to record %d", (long long)s->id, r);
            if (s->n_blocks < 0 || s->n_blocks > s->cap || (int64_t)s->n_tokens > (int64_t)s->n_blocks * p->B ||
                s->n_hashed > s->n_blocks || s->n_tokens > p->cfg.max_seq_tokens)
                FAIL("sequence %lld: %d blocks cap %d tokens %d hashed %d", (long long)s->id, s->n_blocks, s->cap,
                     s->n_tokens, s->n_hashed);
            const int32_t *st = state_of(p, r);
            if (s->swapped) {
                swapped++;
                if (s->slot != -1) FAIL("swapped sequence %lld holds slot %d", (long long)s->id, s->slot);
                for (int i = 0; i < s->n_blocks + p->E; i++) {
                    int32_t h = i < s->n_blocks ? s->blocks[i] : st[i - s->n_blocks];
                    if (h < 0 || h >= nh || p->host_owner[h] != r || host_seen[h]) FAIL("sequence %lld host slot %d", (long long)s->id, h);
                    host_seen[h] = 1;
                }
                continue;
            }
            for (int i = 0; i < s->n_blocks; i++) {
                int32_t pg = s->blocks[i];
                if (pg < 0 || pg >= np || p->pg[pg].role != PG_KV) FAIL("sequence %lld block %d -> page %d", (long long)s->id, i, pg);
                refs[pg]++;
            }
            if (!p->shared_state && p->E > 0 &&
                (s->slot < 0 || s->slot >= p->cfg.n_slots || p->slot_owner[s->slot] != r))
                FAIL("sequence %lld slot %d", (long long)s->id, s->slot);
            for (int j = 0; j < p->E; j++) {
                int32_t pg = st[j];
                if (pg < 0 || pg >= np || p->pg[pg].role != PG_STATE || p->pg[pg].owner != r || seen[pg] == 3)
                    FAIL("sequence %lld state page %d = %d", (long long)s->id, j, pg);
                if (!p->shared_state && pg != (int64_t)s->slot * p->E + j) FAIL("sequence %lld slot page %d", (long long)s->id, j);
                seen[pg] = 3;
            }
        }
        if (live != p->cfg.max_seqs - p->n_rec_free || swapped != p->n_swapped)
            FAIL("%d live / %d swapped records vs %d / %d", live, swapped, p->cfg.max_seqs - p->n_rec_free, p->n_swapped);
        for (int64_t pg = 0; pg < np; pg++) {
            if (refs[pg] != p->pg[pg].ref) FAIL("page %lld ref %d but %d references", (long long)pg, p->pg[pg].ref, refs[pg]);
            if (p->pg[pg].role == PG_STATE && seen[pg] != 3) FAIL("state page %lld has no owner table", (long long)pg);
        }
        int mapped = 0;
        for (uint64_t i = 0; i <= p->map_mask; i++) mapped += p->map[i].key >= 0;
        if (mapped != live) FAIL("map has %d ids for %d live sequences", mapped, live);
    }
    /* slots */
    if (!p->shared_state && p->E > 0) {
        int used = 0;
        for (int s = 0; s < p->cfg.n_slots; s++) used += p->slot_owner[s] >= 0;
        if (used + p->n_slots_free != p->cfg.n_slots) FAIL("%d slots used + %d free != %d", used, p->n_slots_free, p->cfg.n_slots);
        for (int i = 0; i < p->n_slots_free; i++) {
            int s = p->slot_stack[i];
            if (s < 0 || s >= p->cfg.n_slots || p->slot_owner[s] != -1) FAIL("free slot stack entry %d", s);
            for (int j = 0; j < p->E; j++)
                if (p->pg[(int64_t)s * p->E + j].role != PG_RESERVED) FAIL("free slot %d page %d not reserved", s, j);
        }
    }
    /* host slots */
    for (int64_t i = 0; i < p->n_host_free; i++) {
        int32_t h = p->host_stack[i];
        if (h < 0 || h >= nh || p->host_owner[h] != -1 || host_seen[h]) FAIL("host free stack entry %d", h);
        host_seen[h] = 2;
    }
    for (int64_t h = 0; h < nh; h++)
        if (!host_seen[h]) FAIL("host slot %lld neither free nor owned", (long long)h);
out:
    hs_free(refs);
    hs_free(seen);
    hs_free(host_seen);
    return rc;
}
