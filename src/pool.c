/*
 * pool: page bookkeeping (see pool.h for the contract). Integer ids only.
 *
 * Data structures (all allocated in pool_create; block tables grow by doubling):
 *   per page (one 40-byte record each, [n_pages], so a page touch is one cache line):
 *     role      PG_FREE / PG_KV / PG_CACHED / PG_STATE / PG_RESERVED
 *     ref       KV: number of block-table references (>= 1); 0 otherwise
 *     owner     STATE: index of the owning sequence record; -1 otherwise
 *     pflags    PF_REG: the page is in the prefix index under hash[page];
 *               PF_ROOT: it was registered as block 0 (no parent)
 *     hash, parent, tokens[B]   prefix-cache identity (prefix caching only)
 *     lru_prev, lru_next        doubly linked LRU list of CACHED pages (head = oldest)
 *   free stack  FREE pages (LIFO; initial order pops the lowest id first)
 *   slots       slots layout: LIFO stack of free slot indices, slot_owner[n_slots]
 *   host        LIFO stack of free host slots, host_owner[n_host_pages]
 *   seq records [max_seqs] with a LIFO stack of free records, and an open-addressing
 *               map id -> record (linear probing, backward-shift deletion)
 *   index       open-addressing map block hash -> page (same scheme, <= n_pages keys;
 *               8-byte entries: low 32 hash bits as a tag + page; full hash on the page)
 *
 * The types live in pool_int.h (shared with pool_check.c, the checker).
 *
 * Invariants (pool_check, pool_check.c, verifies all of them):
 *   - FREE pages are exactly the free stack; CACHED pages exactly the LRU list; both
 *     have ref 0; a FREE page is never registered; a CACHED page always is.
 *   - ref[pg] = number of entries equal to pg over the block tables of running seqs.
 *   - A STATE page is listed exactly once, in its owner's state table; in the slots
 *     layout slot s's pages are s*E .. s*E+E-1, RESERVED iff the slot is free.
 *   - index[h] = pg  <=>  pflags[pg] & PF_REG and hash[pg] == h.
 *   - A swapped sequence's block table and state table hold host slot ids; host slots
 *     are owned by exactly those entries.
 *   - counts: n_free + n_kv + n_cached + n_state + n_reserved == n_pages.
 *
 * A swapped record reuses its block table and state table to hold host slot ids, so
 * swapping allocates nothing.
 *
 * Collision guard: a hit needs the 64-bit hash, the stored parent hash and the B stored
 * token ids to match, and lookups walk from block 0, so every block on the path is
 * compared token by token. What is not compared is the content behind the parent hash
 * of an evicted-and-replaced parent: a false hit needs two different parent blocks with
 * equal 64-bit hashes (~2^-64 per pair). With the hash_bits test knob this does happen,
 * which is why the property test checks contents with full hashes only.
 */
#define XXH_STATIC_LINKING_ONLY
#include "pool_int.h"

#include <assert.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>


/* ---- small helpers ---------------------------------------------------------------- */

static void dbg(const pool_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dbg(const pool_t *p, const char *fmt, ...) {
    if (!p->debug) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("pool: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static uint64_t pow2_at_least(uint64_t x) {
    uint64_t c = 1;
    while (c < x) c <<= 1;
    return c;
}



/* ---- sequence map ------------------------------------------------------------------ */


static void map_insert(pool_t *p, int64_t id, int rec) {
    uint64_t i = mix64((uint64_t)id) & p->map_mask;
    while (p->map[i].key >= 0) i = (i + 1) & p->map_mask;
    p->map[i].key = id;
    p->map[i].val = rec;
}

static void map_remove(pool_t *p, int64_t id) {
    uint64_t i = mix64((uint64_t)id) & p->map_mask;
    while (p->map[i].key != id) {
        assert(p->map[i].key >= 0);
        i = (i + 1) & p->map_mask;
    }
    /* backward-shift deletion keeps every probe chain unbroken */
    for (uint64_t j = (i + 1) & p->map_mask; p->map[j].key >= 0; j = (j + 1) & p->map_mask) {
        uint64_t home = mix64((uint64_t)p->map[j].key) & p->map_mask;
        if (((j - home) & p->map_mask) >= ((j - i) & p->map_mask)) {
            p->map[i].key = p->map[j].key;
            p->map[i].val = p->map[j].val;
            i = j;
        }
    }
    p->map[i].key = -1;
}

/* ---- prefix index (hash -> page) ---------------------------------------------------- */


static void ix_insert(pool_t *p, uint64_t h, int32_t pg) {
    uint64_t i = h & p->ix_mask;
    while (p->ix[i].page >= 0) i = (i + 1) & p->ix_mask;
    p->ix[i].tag = (uint32_t)h;
    p->ix[i].page = pg;
}

/* Remove page pg, indexed under h (ix_find and the entry format: pool_int.h). */
static void ix_remove(pool_t *p, uint64_t h, int32_t pg) {
    uint64_t i = h & p->ix_mask;
    while (p->ix[i].page != pg) {
        assert(p->ix[i].page >= 0);
        i = (i + 1) & p->ix_mask;
    }
    for (uint64_t j = (i + 1) & p->ix_mask; p->ix[j].page >= 0; j = (j + 1) & p->ix_mask) {
        uint64_t home = p->ix[j].tag & p->ix_mask;
        if (((j - home) & p->ix_mask) >= ((j - i) & p->ix_mask)) {
            p->ix[i] = p->ix[j];
            i = j;
        }
    }
    p->ix[i].page = -1;
}

/* Chained block hash (pool.h "Prefix caching" lists the bytes). One-shot XXH64 over a
 * stack buffer for blocks up to 1024 tokens (the streaming state costs more than the
 * hashing of a 16-token block); streaming beyond. */
static uint64_t block_hash(const pool_t *p, bool root, uint64_t parent, const int32_t *tok) {
    uint64_t h;
    size_t tb = sizeof(int32_t) * (size_t)p->B;
    if (p->B <= 1024) {
        uint8_t buf[8 + 4096];
        size_t o = 0;
        if (!root) {
            for (int i = 0; i < 8; i++) buf[i] = (uint8_t)(parent >> (8 * i));
            o = 8;
        }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(buf + o, tok, tb);
#else
        for (int i = 0; i < p->B; i++)
            for (int b = 0; b < 4; b++) buf[o + 4 * (size_t)i + b] = (uint8_t)((uint32_t)tok[i] >> (8 * b));
#endif
        h = XXH64(buf, o + tb, p->cfg.hash_seed);
    } else {
        XXH64_state_t s;
        XXH64_reset(&s, p->cfg.hash_seed);
        if (!root) {
            uint8_t b[8];
            for (int i = 0; i < 8; i++) b[i] = (uint8_t)(parent >> (8 * i));
            XXH64_update(&s, b, 8);
        }
        for (int i = 0; i < p->B; i++) {
            uint32_t v = (uint32_t)tok[i];
            uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
            XXH64_update(&s, b, 4);
        }
        h = XXH64_digest(&s);
    }
    if (p->cfg.hash_bits > 0 && p->cfg.hash_bits < 64) h &= (UINT64_C(1) << p->cfg.hash_bits) - 1;
    return h;
}

/* Does registered page pg hold block (root/parent, tok)? */
static bool page_matches(const pool_t *p, int32_t pg, bool root, uint64_t parent, const int32_t *tok) {
    if (!(p->pg[pg].pflags & PF_REG)) return false;
    if (root != !!(p->pg[pg].pflags & PF_ROOT)) return false;
    if (!root && p->pg[pg].parent != parent) return false;
    return memcmp(p->tokens + (size_t)pg * p->B, tok, sizeof(int32_t) * (size_t)p->B) == 0;
}

static void page_register(pool_t *p, int32_t pg, uint64_t h, bool root, uint64_t parent, const int32_t *tok) {
    assert(!(p->pg[pg].pflags & PF_REG));
    p->pg[pg].pflags = (uint8_t)(PF_REG | (root ? PF_ROOT : 0));
    p->pg[pg].hash = h;
    p->pg[pg].parent = parent;
    memcpy(p->tokens + (size_t)pg * p->B, tok, sizeof(int32_t) * (size_t)p->B);
    ix_insert(p, h, pg);
    p->st.published++;
}

static void ck_drop(pool_t *p, int c);

/* Take pg out of the index; a checkpoint keyed on it becomes unreachable: drop it. */
static void page_unregister(pool_t *p, int32_t pg) {
    assert(p->pg[pg].pflags & PF_REG);
    ix_remove(p, p->pg[pg].hash, pg);
    p->pg[pg].pflags = 0;
    int c = ck_find(p, p->pg[pg].hash);
    if (c >= 0 && p->ck_kvpage[c] == pg) ck_drop(p, c);
}

/* ---- LRU of CACHED pages -------------------------------------------------------------- */

static void lru_push_tail(pool_t *p, int32_t pg) {
    p->pg[pg].lru_prev = p->lru_tail;
    p->pg[pg].lru_next = -1;
    if (p->lru_tail >= 0) p->pg[p->lru_tail].lru_next = pg;
    else p->lru_head = pg;
    p->lru_tail = pg;
}

static void lru_remove(pool_t *p, int32_t pg) {
    int32_t a = p->pg[pg].lru_prev, b = p->pg[pg].lru_next;
    if (a >= 0) p->pg[a].lru_next = b;
    else p->lru_head = b;
    if (b >= 0) p->pg[b].lru_prev = a;
    else p->lru_tail = a;
    p->pg[pg].lru_prev = p->pg[pg].lru_next = -1;
}

/* ---- page moves ------------------------------------------------------------------------ */

/* Take a page with no content: the free list first, else evict the LRU entry (a
 * CACHED page, or a whole checkpoint whose E pages go to the free list).
 * Precondition (checked by every caller's check): pool_avail(p) >= 1. */
static int32_t take_page(pool_t *p) {
    int32_t pg;
    if (p->n_free == 0 && p->lru_head >= 0 && p->pg[p->lru_head].role == PG_CKPT) {
        p->st.ckpt_evictions++;
        ck_drop(p, p->pg[p->lru_head].owner);
    }
    if (p->n_free > 0) {
        pg = p->free_stack[--p->n_free];
        assert(p->pg[pg].role == PG_FREE);
    } else {
        pg = p->lru_head;
        assert(pg >= 0 && p->pg[pg].role == PG_CACHED);
        lru_remove(p, pg);
        if (p->lru_head >= 0) __builtin_prefetch(&p->pg[p->lru_head]); /* the next victim */
        page_unregister(p, pg);
        p->n_cached--;
        p->st.evictions++;
        dbg(p, "evict page %d", pg);
    }
    return pg;
}

static void put_free(pool_t *p, int32_t pg) {
    p->pg[pg].role = PG_FREE;
    p->pg[pg].ref = 0;
    p->pg[pg].owner = -1;
    p->free_stack[p->n_free++] = pg;
}

/* ---- checkpoint records ------------------------------------------------------------------ */

static void ck_insert(pool_t *p, uint64_t key, int c) {
    uint64_t i = key & p->ckix_mask;
    while (p->ckix[i].ck >= 0) i = (i + 1) & p->ckix_mask;
    p->ckix[i].key = key;
    p->ckix[i].ck = c;
}

static void ck_remove(pool_t *p, int c) {
    uint64_t i = p->ck_key[c] & p->ckix_mask;
    while (p->ckix[i].ck != c) {
        assert(p->ckix[i].ck >= 0);
        i = (i + 1) & p->ckix_mask;
    }
    for (uint64_t j = (i + 1) & p->ckix_mask; p->ckix[j].ck >= 0; j = (j + 1) & p->ckix_mask) {
        uint64_t home = p->ckix[j].key & p->ckix_mask;
        if (((j - home) & p->ckix_mask) >= ((j - i) & p->ckix_mask)) {
            p->ckix[i] = p->ckix[j];
            i = j;
        }
    }
    p->ckix[i].ck = -1;
}

/* Drop checkpoint c (in the LRU): its pages go to the free list. */
static void ck_drop(pool_t *p, int c) {
    int32_t *pages = p->ck_pages + (size_t)c * p->E;
    lru_remove(p, pages[0]);
    ck_remove(p, c);
    for (int j = p->E - 1; j >= 0; j--) put_free(p, pages[j]);
    p->n_ckpt_pages -= p->E;
    p->ck_kvpage[c] = -1;
    p->ck_stack[p->n_ck_free++] = c;
    dbg(p, "drop checkpoint %d", c);
}

static void kv_take_new(pool_t *p, int32_t pg) {
    p->pg[pg].role = PG_KV;
    p->pg[pg].ref = 1;
    p->n_kv++;
}

/* Add one reference to a page found in the index (KV or CACHED). */
static void kv_ref(pool_t *p, int32_t pg) {
    if (p->pg[pg].role == PG_CACHED) {
        lru_remove(p, pg);
        p->n_cached--;
        kv_take_new(p, pg);
    } else {
        assert(p->pg[pg].role == PG_KV && p->pg[pg].ref >= 1);
        p->pg[pg].ref++;
    }
}

static void kv_unref(pool_t *p, int32_t pg) {
    assert(p->pg[pg].role == PG_KV && p->pg[pg].ref >= 1);
    if (--p->pg[pg].ref > 0) return;
    p->n_kv--;
    if (p->pg[pg].pflags & PF_REG) {
        p->pg[pg].role = PG_CACHED;
        p->n_cached++;
        lru_push_tail(p, pg);
    } else {
        put_free(p, pg);
    }
}

/* Release the device pages of running record r (blocks last first, then state). */
static void release_device(pool_t *p, int r) {
    seq_t *s = &p->seqs[r];
    int32_t *st = state_of(p, r);
    /* prefetch page records PF_AHEAD entries ahead: they are cold, and independent */
    enum { PF_AHEAD = 16 };
    for (int i = s->n_blocks - 1; i >= 0; i--) {
        if (i >= PF_AHEAD) __builtin_prefetch(&p->pg[s->blocks[i - PF_AHEAD]]);
        else if (PF_AHEAD - 1 - i < p->E) __builtin_prefetch(&p->pg[st[p->E - 1 - (PF_AHEAD - 1 - i)]]);
        kv_unref(p, s->blocks[i]);
    }
    if (p->E > 0 && !p->shared_state) {
        for (int j = 0; j < p->E; j++) {
            p->pg[st[j]].role = PG_RESERVED;
            p->pg[st[j]].owner = -1;
        }
        p->n_state -= p->E;
        p->n_reserved += p->E;
        p->slot_owner[s->slot] = -1;
        p->slot_stack[p->n_slots_free++] = s->slot;
        s->slot = -1;
    } else {
        for (int j = p->E - 1; j >= 0; j--) {
            if (j >= PF_AHEAD) __builtin_prefetch(&p->pg[st[j - PF_AHEAD]]);
            put_free(p, st[j]);
        }
        p->n_state -= p->E;
    }
}

/* Give record r its state pages (precondition: room checked). */
static void acquire_state(pool_t *p, int r) {
    if (p->E == 0) return;
    int32_t *st = state_of(p, r);
    if (!p->shared_state) {
        int slot = p->slot_stack[--p->n_slots_free];
        p->slot_owner[slot] = r;
        p->seqs[r].slot = slot;
        for (int j = 0; j < p->E; j++) {
            int32_t pg = (int32_t)((int64_t)slot * p->E + j);
            assert(p->pg[pg].role == PG_RESERVED);
            st[j] = pg;
            p->pg[pg].role = PG_STATE;
            p->pg[pg].owner = r;
        }
        p->n_reserved -= p->E;
    } else {
        for (int j = 0; j < p->E; j++) {
            int32_t pg = take_page(p);
            st[j] = pg;
            p->pg[pg].role = PG_STATE;
            p->pg[pg].owner = r;
        }
    }
    p->n_state += p->E;
}

static void table_reserve(pool_t *p, seq_t *s, int n) {
    if (n <= s->cap) return;
    int cap = s->cap ? s->cap : 16;
    while (cap < n) cap *= 2;
    s->blocks = hs_realloc(s->blocks, sizeof(int32_t) * (size_t)cap);
    if (p->cfg.prefix_caching) s->hashes = hs_realloc(s->hashes, sizeof(uint64_t) * (size_t)cap);
    s->cap = cap;
}

/* ---- creation ---------------------------------------------------------------------------- */

void pool_config_default(pool_config_t *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->kind = LAYOUT_PAGED;
    cfg->block_size = 16;
    cfg->max_seqs = 1024;
    cfg->max_seq_tokens = 262144;
    cfg->prefix_caching = true;
}

const pool_config_t *pool_config(const pool_t *p) { return &p->cfg; }

int pool_create(pool_t **out, const pool_config_t *cfg, char *err, size_t n) {
    const pool_config_t *c = cfg;
    if (c->kind != LAYOUT_PAGED && c->kind != LAYOUT_SLOTS && c->kind != LAYOUT_COUPLED)
        return hs_errf(err, n, HS_ERR_INVALID, "pool: unknown layout %d", (int)c->kind);
    if (c->n_pages < 1 || c->n_pages > INT32_MAX - 1)
        return hs_errf(err, n, HS_ERR_INVALID, "pool: n_pages %lld out of range", (long long)c->n_pages);
    if (c->block_size < 1 || c->block_size > 65536)
        return hs_errf(err, n, HS_ERR_INVALID, "pool: block_size %d out of range", c->block_size);
    if (c->state_pages < 0 || c->state_pages > c->n_pages)
        return hs_errf(err, n, HS_ERR_INVALID, "pool: state_pages %d out of range", c->state_pages);
    if (c->max_seqs < 1 || c->max_seqs > (1 << 24))
        return hs_errf(err, n, HS_ERR_INVALID, "pool: max_seqs %d out of range", c->max_seqs);
    if (c->max_seq_tokens < 1)
        return hs_errf(err, n, HS_ERR_INVALID, "pool: max_seq_tokens %d out of range", c->max_seq_tokens);
    if (c->hash_bits < 0 || c->hash_bits > 64)
        return hs_errf(err, n, HS_ERR_INVALID, "pool: hash_bits %d out of range", c->hash_bits);
    if (c->n_host_pages < 0 || c->n_host_pages > INT32_MAX - 1)
        return hs_errf(err, n, HS_ERR_INVALID, "pool: n_host_pages out of range");
    if (c->state_checkpoints && (c->kind == LAYOUT_SLOTS || c->state_pages == 0 || !c->prefix_caching))
        return hs_errf(err, n, HS_ERR_INVALID,
                       "pool: state checkpoints need prefix caching, state pages and the paged or coupled layout");
    int64_t slot_pages = 0;
    if (c->kind == LAYOUT_SLOTS && c->state_pages > 0) {
        if (c->n_slots < 1)
            return hs_errf(err, n, HS_ERR_INVALID, "pool: slots layout needs n_slots >= 1");
        slot_pages = (int64_t)c->n_slots * c->state_pages;
        if (slot_pages >= c->n_pages)
            return hs_errf(err, n, HS_ERR_INVALID,
                           "pool: %d slots of %d state pages leave no KV page of %lld", c->n_slots,
                           c->state_pages, (long long)c->n_pages);
    }

    pool_t *p = hs_calloc(1, sizeof *p);
    p->cfg = *c;
    if (c->kind != LAYOUT_SLOTS) p->cfg.n_slots = 0;
    p->E = c->state_pages;
    p->B = c->block_size;
    p->shared_state = c->kind != LAYOUT_SLOTS;
    p->n_kv_pages = c->n_pages - slot_pages;
    const char *env = getenv("HS_DEBUG_POOL");
    p->debug = env && *env && strcmp(env, "0") != 0;

    size_t np = (size_t)c->n_pages;
    p->pg = hs_calloc(np, sizeof *p->pg);
    p->free_stack = hs_malloc(np * sizeof(int32_t));
    p->lru_head = p->lru_tail = -1;
    for (size_t i = 0; i < np; i++) p->pg[i].owner = p->pg[i].lru_prev = p->pg[i].lru_next = -1;
    if (c->prefix_caching) {
        p->tokens = hs_calloc(np * (size_t)p->B, sizeof(int32_t));
        uint64_t cap = pow2_at_least(2 * np);
        p->ix_mask = cap - 1;
        p->ix = hs_malloc(cap * sizeof *p->ix);
        for (uint64_t i = 0; i < cap; i++) p->ix[i] = (struct ix_ent){0, -1};
    }
    /* free stack: the lowest KV page is popped first */
    for (int64_t pg = c->n_pages - 1; pg >= slot_pages; pg--) p->free_stack[p->n_free++] = (int32_t)pg;
    if (slot_pages > 0) {
        p->slot_stack = hs_malloc(sizeof(int32_t) * (size_t)c->n_slots);
        p->slot_owner = hs_malloc(sizeof(int32_t) * (size_t)c->n_slots);
        for (int s = 0; s < c->n_slots; s++) {
            p->slot_stack[s] = s; /* LIFO: the first admission gets slot n_slots - 1 (ATOM) */
            p->slot_owner[s] = -1;
        }
        p->n_slots_free = c->n_slots;
        for (int64_t pg = 0; pg < slot_pages; pg++) p->pg[pg].role = PG_RESERVED;
        p->n_reserved = slot_pages;
    }
    if (c->n_host_pages > 0) {
        p->host_stack = hs_malloc(sizeof(int32_t) * (size_t)c->n_host_pages);
        p->host_owner = hs_malloc(sizeof(int32_t) * (size_t)c->n_host_pages);
        for (int64_t h = 0; h < c->n_host_pages; h++) {
            p->host_stack[h] = (int32_t)(c->n_host_pages - 1 - h);
            p->host_owner[h] = -1;
        }
        p->n_host_free = c->n_host_pages;
    }
    p->seqs = hs_calloc((size_t)c->max_seqs, sizeof(seq_t));
    p->state_arena = hs_malloc(sizeof(int32_t) * ((size_t)c->max_seqs * (size_t)p->E + 1));
    p->rec_stack = hs_malloc(sizeof(int32_t) * (size_t)c->max_seqs);
    for (int r = 0; r < c->max_seqs; r++) {
        p->seqs[r].id = -1;
        p->seqs[r].slot = -1;
        p->rec_stack[r] = c->max_seqs - 1 - r;
    }
    p->n_rec_free = c->max_seqs;
    if (c->state_checkpoints) {
        p->max_ck = (int)(c->n_pages / c->state_pages);
        p->ck_stack = hs_malloc(sizeof(int32_t) * (size_t)p->max_ck);
        p->ck_key = hs_calloc((size_t)p->max_ck, sizeof(uint64_t));
        p->ck_kvpage = hs_malloc(sizeof(int32_t) * (size_t)p->max_ck);
        p->ck_pages = hs_malloc(sizeof(int32_t) * (size_t)p->max_ck * (size_t)p->E);
        for (int k = 0; k < p->max_ck; k++) {
            p->ck_stack[k] = p->max_ck - 1 - k;
            p->ck_kvpage[k] = -1;
        }
        p->n_ck_free = p->max_ck;
        uint64_t cap = pow2_at_least(2 * (uint64_t)p->max_ck);
        p->ckix_mask = cap - 1;
        p->ckix = hs_malloc(cap * sizeof *p->ckix);
        for (uint64_t i = 0; i < cap; i++) p->ckix[i] = (struct ck_ent){0, -1};
    }
    uint64_t mcap = pow2_at_least(2 * (uint64_t)c->max_seqs);
    p->map_mask = mcap - 1;
    p->map = hs_malloc(mcap * sizeof *p->map);
    for (uint64_t i = 0; i < mcap; i++) p->map[i].key = -1;
    dbg(p, "create layout %d pages %lld E %d slots %d B %d host %lld", (int)c->kind, (long long)c->n_pages, p->E,
        p->cfg.n_slots, p->B, (long long)c->n_host_pages);
    *out = p;
    return HS_OK;
}

void pool_destroy(pool_t *p) {
    if (!p) return;
    for (int r = 0; r < p->cfg.max_seqs; r++) {
        hs_free(p->seqs[r].blocks);
        hs_free(p->seqs[r].hashes);
    }
    hs_free(p->seqs);
    hs_free(p->state_arena);
    hs_free(p->rec_stack);
    hs_free(p->map);
    hs_free(p->pg);
    hs_free(p->free_stack);
    hs_free(p->tokens);
    hs_free(p->ix);
    hs_free(p->slot_stack);
    hs_free(p->slot_owner);
    hs_free(p->host_stack);
    hs_free(p->host_owner);
    hs_free(p->ck_stack);
    hs_free(p->ck_key);
    hs_free(p->ck_kvpage);
    hs_free(p->ck_pages);
    hs_free(p->ckix);
    hs_free(p);
}

/* ---- lookup and admission --------------------------------------------------------------- */

/* Walk the prompt's full blocks through the index (at most (n_tokens-1)/B of them, so
 * one token is left to compute). Returns the number of leading hits; pages/hashes
 * (may be NULL) get the hit pages and the hashes of the hit blocks; *cached_hits the
 * hits on CACHED pages. ck (may be NULL) gets the deepest checkpoint on the hit chain:
 * its record, the blocks up to it and the CACHED pages among them. Pure. */
typedef struct {
    int id, blocks, cached;
} ck_hit_t;

static int lookup_chain(const pool_t *p, const int32_t *tokens, int n_tokens, int32_t *pages, uint64_t *hashes,
                        int *cached_hits, ck_hit_t *ck) {
    *cached_hits = 0;
    if (ck) *ck = (ck_hit_t){-1, 0, 0};
    if (!p->cfg.prefix_caching || !tokens || n_tokens < 1) return 0;
    int max = (n_tokens - 1) / p->B, hits = 0;
    uint64_t h = 0, hb[8];
    /* batches of 8 blocks: hash them and prefetch their index slots, then walk them */
    for (int i0 = 0; i0 < max; i0 += 8) {
        int nb = max - i0 < 8 ? max - i0 : 8;
        uint64_t last = h; /* hash of block i0 - 1 */
        for (int k = 0; k < nb; k++) {
            h = block_hash(p, i0 + k == 0, h, tokens + (size_t)(i0 + k) * p->B);
            hb[k] = h;
            __builtin_prefetch(&p->ix[h & p->ix_mask]);
        }
        for (int k = 0; k < nb; k++) {
            int i = i0 + k;
            uint64_t parent = i ? (k ? hb[k - 1] : last) : 0;
            int32_t pg = ix_find(p, hb[k]);
            if (pg < 0 || !page_matches(p, pg, i == 0, parent, tokens + (size_t)i * p->B)) return hits;
            if (pages) pages[i] = pg;
            if (hashes) hashes[i] = hb[k];
            if (p->pg[pg].role == PG_CACHED) (*cached_hits)++;
            hits++;
            if (ck && p->ckix) {
                int c = ck_find(p, hb[k]);
                if (c >= 0 && p->ck_kvpage[c] == pg) *ck = (ck_hit_t){c, hits, *cached_hits};
            }
        }
    }
    return hits;
}

static bool hits_usable(const pool_t *p) { return p->E == 0 || p->cfg.kv_only_hits; }

int pool_lookup(const pool_t *p, const int32_t *tokens, int n_tokens, pool_admit_info_t *info) {
    pool_admit_info_t tmp;
    if (!info) info = &tmp;
    memset(info, 0, sizeof *info);
    if (n_tokens < 1) return 0;
    ck_hit_t ck;
    int cached = 0, hits = lookup_chain(p, tokens, n_tokens, NULL, NULL, &cached, &ck);
    info->n_blocks = blocks_for(p, n_tokens);
    info->n_pages_avail = pool_avail(p);
    if (!hits_usable(p)) {
        /* only up to the deepest checkpoint: the state there is known */
        info->n_refused_tokens = (hits - ck.blocks) * p->B;
        hits = ck.blocks;
        cached = ck.cached;
        if (ck.id >= 0) {
            info->ckpt_pages = p->ck_pages + (size_t)ck.id * p->E;
            info->n_pages_avail -= p->E; /* pinned while the admission copies it */
        }
    }
    info->n_hit_blocks = hits;
    info->n_hit_tokens = hits * p->B;
    info->n_pages_needed = (info->n_blocks - hits) + cached + (p->shared_state ? p->E : 0);
    return info->n_hit_tokens;
}

int pool_can_admit(const pool_t *p, int64_t id, const int32_t *tokens, int n_tokens, pool_admit_info_t *info,
                   char *err, size_t n) {
    pool_admit_info_t tmp;
    if (!info) info = &tmp;
    memset(info, 0, sizeof *info);
    if (id < 0) return hs_errf(err, n, HS_ERR_INVALID, "pool: admit: bad sequence id %lld", (long long)id);
    if (map_find(p, id) >= 0)
        return hs_errf(err, n, HS_ERR_STATE, "pool: admit: sequence %lld is already admitted", (long long)id);
    if (n_tokens < 1 || n_tokens > p->cfg.max_seq_tokens)
        return hs_errf(err, n, HS_ERR_INVALID, "pool: admit %lld: prompt of %d tokens (allowed 1..%d)", (long long)id,
                       n_tokens, p->cfg.max_seq_tokens);
    pool_lookup(p, tokens, n_tokens, info);
    int64_t ever = p->shared_state ? p->n_kv_pages - p->E : p->n_kv_pages;
    if (info->n_blocks > ever)
        return hs_errf(err, n, HS_ERR_NO_MEMORY, "pool: admit %lld: %d KV blocks%s can never fit %lld pages",
                       (long long)id, info->n_blocks, p->shared_state && p->E ? " + state" : "",
                       (long long)p->n_kv_pages);
    if (p->n_rec_free == 0)
        return hs_errf(err, n, HS_AGAIN, "pool: admit %lld: all %d sequence records in use", (long long)id,
                       p->cfg.max_seqs);
    if (p->E > 0 && !p->shared_state && p->n_slots_free == 0)
        return hs_errf(err, n, HS_AGAIN, "pool: admit %lld: no free state slot", (long long)id);
    if (info->n_pages_needed > info->n_pages_avail)
        return hs_errf(err, n, HS_AGAIN, "pool: admit %lld: needs %lld pages, %lld available", (long long)id,
                       (long long)info->n_pages_needed, (long long)info->n_pages_avail);
    return HS_OK;
}

int pool_admit(pool_t *p, int64_t id, const int32_t *tokens, int n_tokens, pool_admit_info_t *info, char *err,
               size_t n) {
    pool_admit_info_t tmp;
    if (!info) info = &tmp;
    int rc = pool_can_admit(p, id, tokens, n_tokens, info, err, n);
    if (rc != HS_OK) return rc;
    int r = p->rec_stack[--p->n_rec_free];
    seq_t *s = &p->seqs[r];
    assert(s->id < 0);
    table_reserve(p, s, info->n_blocks);
    s->id = id;
    s->n_blocks = 0;
    s->n_hashed = 0;
    s->swapped = false;
    s->slot = -1;
    map_insert(p, id, r);
    int hits = info->n_hit_blocks;
    int32_t ck_rep = info->ckpt_pages ? info->ckpt_pages[0] : -1;
    if (ck_rep >= 0) lru_remove(p, ck_rep); /* pinned: no eviction may take it now */
    if (hits > 0) {
        int cached = 0;
        int kv_hits = lookup_chain(p, tokens, n_tokens, s->blocks, s->hashes, &cached, NULL);
        assert(kv_hits >= hits);
        (void)kv_hits;
        for (int i = 0; i < hits; i++) kv_ref(p, s->blocks[i]);
        s->n_hashed = hits;
    }
    for (int i = hits; i < info->n_blocks; i++) {
        int32_t pg = take_page(p);
        kv_take_new(p, pg);
        s->blocks[i] = pg;
    }
    s->n_blocks = info->n_blocks;
    s->n_tokens = n_tokens;
    s->n_cached_tokens = info->n_hit_tokens;
    acquire_state(p, r);
    if (ck_rep >= 0) {
        lru_push_tail(p, ck_rep); /* used: the most recent entry */
        p->st.ckpt_hits++;
    }
    p->st.n_admits++;
    p->st.prompt_tokens += (uint64_t)n_tokens;
    p->st.hit_blocks += (uint64_t)hits;
    p->st.hit_tokens += (uint64_t)info->n_hit_tokens;
    p->st.refused_tokens += (uint64_t)info->n_refused_tokens;
    dbg(p, "admit %lld tokens %d blocks %d hits %d refused %d slot %d", (long long)id, n_tokens, s->n_blocks, hits,
        info->n_refused_tokens, s->slot);
    return HS_OK;
}

/* ---- publish -------------------------------------------------------------------------------- */

static int running_rec(const pool_t *p, int64_t id, const char *what, char *err, size_t n) {
    int r = map_find(p, id);
    if (r < 0) return hs_errf(err, n, HS_ERR_NOT_FOUND, "pool: %s: unknown sequence %lld", what, (long long)id);
    if (p->seqs[r].swapped)
        return hs_errf(err, n, HS_ERR_STATE, "pool: %s: sequence %lld is swapped out", what, (long long)id);
    return r;
}

int pool_publish(pool_t *p, int64_t id, const int32_t *tokens, int n_tokens, char *err, size_t n) {
    int r = running_rec(p, id, "publish", err, n);
    if (r < 0) return r;
    seq_t *s = &p->seqs[r];
    if (n_tokens < 0 || n_tokens > s->n_tokens || (n_tokens > 0 && !tokens))
        return hs_errf(err, n, HS_ERR_INVALID, "pool: publish %lld: %d tokens (committed %d)", (long long)id,
                       n_tokens, s->n_tokens);
    if (!p->cfg.prefix_caching) return HS_OK;
    int full = n_tokens / p->B, reg = 0;
    /* Three passes so the cache misses overlap instead of queueing: hash the chain and
     * prefetch each home slot of the index; prefetch the page records those slots name
     * (a tag match reads one); then look up and register. */
    for (int i = s->n_hashed; i < full; i++) {
        s->hashes[i] = block_hash(p, i == 0, i ? s->hashes[i - 1] : 0, tokens + (size_t)i * p->B);
        __builtin_prefetch(&p->ix[s->hashes[i] & p->ix_mask]);
    }
    for (int i = s->n_hashed; i < full; i++) {
        int32_t q = p->ix[s->hashes[i] & p->ix_mask].page;
        if (q >= 0) __builtin_prefetch(&p->pg[q]);
    }
    for (int i = s->n_hashed; i < full; i++) {
        uint64_t h = s->hashes[i];
        int32_t pg = s->blocks[i];
        if (!(p->pg[pg].pflags & PF_REG) && ix_find(p, h) < 0) {
            page_register(p, pg, h, i == 0, i ? s->hashes[i - 1] : 0, tokens + (size_t)i * p->B);
            reg++;
        }
    }
    if (full > s->n_hashed) s->n_hashed = full;
    if (reg) dbg(p, "publish %lld: %d blocks registered", (long long)id, reg);
    return HS_OK;
}

/* ---- append ---------------------------------------------------------------------------------- */

/* The append check for running record r (or the error for a bad record). */
static int append_check(const pool_t *p, int64_t id, int r, int n_new, int n_lookahead, int *pages_needed,
                        char *err, size_t n) {
    *pages_needed = 0;
    if (r < 0) return hs_errf(err, n, HS_ERR_NOT_FOUND, "pool: append: unknown sequence %lld", (long long)id);
    const seq_t *s = &p->seqs[r];
    if (s->swapped) return hs_errf(err, n, HS_ERR_STATE, "pool: append: sequence %lld is swapped out", (long long)id);
    int64_t total = (int64_t)s->n_tokens + n_new + n_lookahead;
    if (n_new < 0 || n_lookahead < 0 || total > p->cfg.max_seq_tokens)
        return hs_errf(err, n, HS_ERR_INVALID, "pool: append %lld: %d + %d + %d tokens exceed %d", (long long)id,
                       s->n_tokens, n_new, n_lookahead, p->cfg.max_seq_tokens);
    if (total <= (int64_t)s->n_blocks * p->B) return HS_OK; /* the common decode case */
    int want = blocks_for(p, total), need = want - s->n_blocks;
    *pages_needed = need;
    int64_t ever = p->shared_state ? p->n_kv_pages - p->E : p->n_kv_pages;
    if (want > ever)
        return hs_errf(err, n, HS_ERR_NO_MEMORY, "pool: append %lld: %d blocks can never fit", (long long)id, want);
    if (need > pool_avail(p))
        return hs_errf(err, n, HS_AGAIN, "pool: append %lld: needs %d pages, %lld available", (long long)id, need,
                       (long long)pool_avail(p));
    return HS_OK;
}

int pool_can_append(const pool_t *p, int64_t id, int n_new, int n_lookahead, int *pages_needed, char *err,
                    size_t n) {
    int need;
    int rc = append_check(p, id, map_find(p, id), n_new, n_lookahead, &need, err, n);
    if (pages_needed) *pages_needed = need;
    return rc;
}

int pool_append(pool_t *p, int64_t id, int n_new, int n_lookahead, char *err, size_t n) {
    int need, r = map_find(p, id);
    int rc = append_check(p, id, r, n_new, n_lookahead, &need, err, n);
    if (rc != HS_OK) return rc;
    seq_t *s = &p->seqs[r];
    if (need > 0) {
        table_reserve(p, s, s->n_blocks + need);
        for (int i = 0; i < need; i++) {
            int32_t pg = take_page(p);
            kv_take_new(p, pg);
            s->blocks[s->n_blocks++] = pg;
        }
        dbg(p, "append %lld: %d new blocks (now %d)", (long long)id, need, s->n_blocks);
    }
    s->n_tokens += n_new;
    return HS_OK;
}

/* ---- free -------------------------------------------------------------------------------------- */

static void release_host(pool_t *p, int r) {
    seq_t *s = &p->seqs[r];
    int32_t *st = state_of(p, r);
    for (int j = p->E - 1; j >= 0; j--) {
        p->host_owner[st[j]] = -1;
        p->host_stack[p->n_host_free++] = st[j];
    }
    for (int i = s->n_blocks - 1; i >= 0; i--) {
        p->host_owner[s->blocks[i]] = -1;
        p->host_stack[p->n_host_free++] = s->blocks[i];
    }
}

int pool_free_seq(pool_t *p, int64_t id, char *err, size_t n) {
    int r = map_find(p, id);
    if (r < 0) return hs_errf(err, n, HS_ERR_NOT_FOUND, "pool: free: unknown sequence %lld", (long long)id);
    seq_t *s = &p->seqs[r];
    if (s->swapped) {
        release_host(p, r);
        p->n_swapped--;
    } else {
        release_device(p, r);
    }
    dbg(p, "free %lld (%d blocks%s)", (long long)id, s->n_blocks, s->swapped ? ", swapped" : "");
    map_remove(p, id);
    s->id = -1;
    s->n_blocks = s->n_hashed = s->n_tokens = s->n_cached_tokens = 0;
    s->swapped = false;
    s->slot = -1;
    p->rec_stack[p->n_rec_free++] = r;
    return HS_OK;
}

/* ---- state checkpoints ------------------------------------------------------------------------- */

/* The check; on HS_OK *kvp is the indexed page of the block and *existing the
 * checkpoint already there (or -1). */
static int ckpt_check(const pool_t *p, int64_t id, int n_tokens, int32_t *kvp, int *existing, char *err,
                      size_t n) {
    int r = running_rec(p, id, "checkpoint", err, n);
    if (r < 0) return r;
    if (!p->cfg.state_checkpoints)
        return hs_errf(err, n, HS_ERR_UNSUPPORTED, "pool: checkpoint %lld: state checkpoints are off", (long long)id);
    const seq_t *s = &p->seqs[r];
    if (n_tokens < p->B || n_tokens % p->B || n_tokens > s->n_tokens)
        return hs_errf(err, n, HS_ERR_INVALID, "pool: checkpoint %lld: %d tokens (a multiple of %d up to %d)",
                       (long long)id, n_tokens, p->B, s->n_tokens);
    int i = n_tokens / p->B - 1;
    int32_t q = i < s->n_hashed ? ix_find(p, s->hashes[i]) : -1;
    if (q < 0)
        return hs_errf(err, n, HS_ERR_STATE, "pool: checkpoint %lld: block %d is not published", (long long)id, i);
    *kvp = q;
    int c = ck_find(p, s->hashes[i]);
    *existing = c >= 0 && p->ck_kvpage[c] == q ? c : -1;
    if (*existing >= 0) return HS_OK;
    /* the E new pages may not evict the block's own page: it does not count if CACHED */
    int64_t avail = pool_avail(p) - (p->pg[q].role == PG_CACHED);
    if (p->n_ck_free == 0 || p->E > avail)
        return hs_errf(err, n, HS_AGAIN, "pool: checkpoint %lld: needs %d pages, %lld available", (long long)id, p->E,
                       (long long)avail);
    return HS_OK;
}

int pool_can_checkpoint(const pool_t *p, int64_t id, int n_tokens, char *err, size_t n) {
    int32_t q;
    int c;
    return ckpt_check(p, id, n_tokens, &q, &c, err, n);
}

int pool_checkpoint(pool_t *p, int64_t id, int n_tokens, pool_page_copy_fn copy, void *user, char *err,
                    size_t n) {
    int32_t q;
    int c;
    int rc = ckpt_check(p, id, n_tokens, &q, &c, err, n);
    if (rc != HS_OK) return rc;
    if (c >= 0) { /* already there: refresh */
        lru_remove(p, p->ck_pages[(size_t)c * p->E]);
        lru_push_tail(p, p->ck_pages[(size_t)c * p->E]);
        return HS_OK;
    }
    int r = map_find(p, id);
    const int32_t *st = state_of(p, r);
    bool pin = p->pg[q].role == PG_CACHED;
    if (pin) lru_remove(p, q);
    c = p->ck_stack[--p->n_ck_free];
    int32_t *pages = p->ck_pages + (size_t)c * p->E;
    for (int j = 0; j < p->E; j++) {
        int32_t pg = take_page(p);
        p->pg[pg].role = PG_CKPT;
        p->pg[pg].owner = c;
        pages[j] = pg;
        if (copy) copy(user, pg, st[j]);
    }
    if (pin) lru_push_tail(p, q);
    p->ck_key[c] = p->pg[q].hash;
    p->ck_kvpage[c] = q;
    ck_insert(p, p->ck_key[c], c);
    lru_push_tail(p, pages[0]);
    p->n_ckpt_pages += p->E;
    p->st.ckpts_made++;
    dbg(p, "checkpoint %lld at %d tokens: record %d", (long long)id, n_tokens, c);
    return HS_OK;
}

/* ---- swap -------------------------------------------------------------------------------------- */

int pool_can_swap_out(const pool_t *p, int64_t id, char *err, size_t n) {
    int r = running_rec(p, id, "swap out", err, n);
    if (r < 0) return r;
    if (p->cfg.n_host_pages == 0)
        return hs_errf(err, n, HS_ERR_UNSUPPORTED, "pool: swap out %lld: no host pool", (long long)id);
    int64_t need = (int64_t)p->seqs[r].n_blocks + p->E;
    if (need > p->cfg.n_host_pages)
        return hs_errf(err, n, HS_ERR_NO_MEMORY, "pool: swap out %lld: %lld pages exceed the host pool of %lld",
                       (long long)id, (long long)need, (long long)p->cfg.n_host_pages);
    if (need > p->n_host_free)
        return hs_errf(err, n, HS_AGAIN, "pool: swap out %lld: needs %lld host slots, %lld free", (long long)id,
                       (long long)need, (long long)p->n_host_free);
    return HS_OK;
}

int pool_swap_out(pool_t *p, int64_t id, pool_copy_fn copy, void *user, char *err, size_t n) {
    int rc = pool_can_swap_out(p, id, err, n);
    if (rc != HS_OK) return rc;
    int r = map_find(p, id);
    seq_t *s = &p->seqs[r];
    int32_t *st = state_of(p, r);
    int nb = s->n_blocks;
    /* host slot of entry e (blocks then state) = the e-th slot from the top of the stack */
    const int32_t *hs = p->host_stack + p->n_host_free - 1;
    if (copy) {
        for (int i = 0; i < nb; i++) copy(user, s->blocks[i], hs[-i], POOL_COPY_TO_HOST);
        for (int j = 0; j < p->E; j++) copy(user, st[j], hs[-(nb + j)], POOL_COPY_TO_HOST);
    }
    release_device(p, r);
    for (int i = 0; i < nb; i++) s->blocks[i] = hs[-i];
    for (int j = 0; j < p->E; j++) st[j] = hs[-(nb + j)];
    p->n_host_free -= nb + p->E;
    for (int i = 0; i < nb; i++) p->host_owner[s->blocks[i]] = r;
    for (int j = 0; j < p->E; j++) p->host_owner[st[j]] = r;
    s->swapped = true;
    s->n_hashed = 0;
    p->n_swapped++;
    p->st.swap_outs++;
    dbg(p, "swap out %lld: %d blocks + %d state pages", (long long)id, nb, p->E);
    return HS_OK;
}

int pool_can_swap_in(const pool_t *p, int64_t id, char *err, size_t n) {
    int r = map_find(p, id);
    if (r < 0) return hs_errf(err, n, HS_ERR_NOT_FOUND, "pool: swap in: unknown sequence %lld", (long long)id);
    const seq_t *s = &p->seqs[r];
    if (!s->swapped) return hs_errf(err, n, HS_ERR_STATE, "pool: swap in: sequence %lld is running", (long long)id);
    int64_t need = s->n_blocks + (p->shared_state ? p->E : 0);
    if (p->E > 0 && !p->shared_state && p->n_slots_free == 0)
        return hs_errf(err, n, HS_AGAIN, "pool: swap in %lld: no free state slot", (long long)id);
    if (need > pool_avail(p))
        return hs_errf(err, n, HS_AGAIN, "pool: swap in %lld: needs %lld pages, %lld available", (long long)id,
                       (long long)need, (long long)pool_avail(p));
    return HS_OK;
}

int pool_swap_in(pool_t *p, int64_t id, pool_copy_fn copy, void *user, char *err, size_t n) {
    int rc = pool_can_swap_in(p, id, err, n);
    if (rc != HS_OK) return rc;
    int r = map_find(p, id);
    seq_t *s = &p->seqs[r];
    int32_t *st = state_of(p, r);
    /* give back the host slots first (in the order swap-out took them, so a swap out and
     * in leaves the host stack as it was), remembering them for the copies */
    for (int j = p->E - 1; j >= 0; j--) {
        p->host_owner[st[j]] = -1;
        p->host_stack[p->n_host_free++] = st[j];
    }
    for (int i = s->n_blocks - 1; i >= 0; i--) {
        p->host_owner[s->blocks[i]] = -1;
        p->host_stack[p->n_host_free++] = s->blocks[i];
    }
    for (int i = 0; i < s->n_blocks; i++) {
        int32_t hslot = s->blocks[i], pg = take_page(p);
        kv_take_new(p, pg);
        s->blocks[i] = pg;
        if (copy) copy(user, pg, hslot, POOL_COPY_TO_DEVICE);
    }
    if (p->E > 0) {
        /* st[] holds the host slots until each entry is replaced by its new page */
        if (p->shared_state) {
            for (int j = 0; j < p->E; j++) {
                int32_t hslot = st[j], pg = take_page(p);
                st[j] = pg;
                p->pg[pg].role = PG_STATE;
                p->pg[pg].owner = r;
                if (copy) copy(user, pg, hslot, POOL_COPY_TO_DEVICE);
            }
            p->n_state += p->E;
        } else {
            int64_t first = (int64_t)p->slot_stack[p->n_slots_free - 1] * p->E; /* the slot acquire_state takes */
            if (copy)
                for (int j = 0; j < p->E; j++) copy(user, first + j, st[j], POOL_COPY_TO_DEVICE);
            acquire_state(p, r);
            assert(st[0] == first);
        }
    }
    s->swapped = false;
    s->n_hashed = 0;
    p->n_swapped--;
    p->st.swap_ins++;
    dbg(p, "swap in %lld: %d blocks + %d state pages", (long long)id, s->n_blocks, p->E);
    return HS_OK;
}

/* ---- queries ------------------------------------------------------------------------------------ */

int pool_seq_info(const pool_t *p, int64_t id, pool_seq_info_t *out) {
    int r = map_find(p, id);
    if (r < 0) return HS_ERR_NOT_FOUND;
    const seq_t *s = &p->seqs[r];
    out->swapped = s->swapped;
    out->n_tokens = s->n_tokens;
    out->n_blocks = s->n_blocks;
    out->n_cached_tokens = s->n_cached_tokens;
    out->slot = s->slot;
    return HS_OK;
}

const int32_t *pool_block_table(const pool_t *p, int64_t id, int *n_blocks) {
    int r = map_find(p, id);
    if (r < 0 || p->seqs[r].swapped) {
        if (n_blocks) *n_blocks = 0;
        return NULL;
    }
    if (n_blocks) *n_blocks = p->seqs[r].n_blocks;
    return p->seqs[r].blocks;
}

const int32_t *pool_state_table(const pool_t *p, int64_t id) {
    int r = map_find(p, id);
    if (r < 0 || p->seqs[r].swapped || p->E == 0) return NULL;
    return state_of(p, r);
}

void pool_stats(const pool_t *p, pool_stats_t *out) {
    *out = p->st;
    out->kind = p->cfg.kind;
    out->n_pages = p->cfg.n_pages;
    out->n_free = p->n_free;
    out->n_kv = p->n_kv;
    out->n_cached = p->n_cached;
    out->n_state = p->n_state;
    out->n_reserved = p->n_reserved;
    out->state_pages = p->E;
    out->n_slots = p->cfg.n_slots;
    out->n_slots_free = p->n_slots_free;
    out->n_seqs = p->cfg.max_seqs - p->n_rec_free;
    out->n_swapped = p->n_swapped;
    out->n_host_pages = p->cfg.n_host_pages;
    out->n_host_used = p->cfg.n_host_pages - p->n_host_free;
    out->n_ckpts = p->max_ck - p->n_ck_free;
    out->n_ckpt_pages = p->n_ckpt_pages;
}

int64_t pool_free_capacity(const pool_t *p) { return pool_avail(p); }
