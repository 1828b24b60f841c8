/*
 * pool_int: the page pool's internals, shared by pool.c (the operations) and
 * pool_check.c (the invariant checker), and by tests that corrupt a pool on purpose to
 * prove the checker catches it. Not part of the contract: use pool.h.
 * The data structures and invariants are described at the top of pool.c.
 */
#ifndef HS_POOL_INT_H
#define HS_POOL_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "pool.h"

enum { PG_FREE = 0, PG_KV, PG_CACHED, PG_STATE, PG_RESERVED, PG_CKPT, PG_N_ROLES };
enum { PF_REG = 1, PF_ROOT = 2 };

typedef struct {
    int64_t id;        /* caller's id; -1 when the record is unused */
    int32_t *blocks;   /* [cap] page ids (host slot ids when swapped) */
    uint64_t *hashes;  /* [cap] chained hashes of blocks [0, n_hashed) (prefix caching) */
    int n_blocks, cap;
    int n_hashed;      /* blocks whose hash is known; [0, n_hashed) processed by publish/hits */
    int n_tokens;      /* committed tokens */
    int n_cached_tokens;
    int slot;          /* slots layout: slot index, else -1 */
    bool swapped;
} seq_t;

struct pool {
    pool_config_t cfg;
    int E;             /* state pages per sequence */
    int B;             /* block size */
    bool shared_state; /* state pages come from the common free list (paged, coupled) */
    int64_t n_kv_pages;/* pages KV may ever use: n_pages minus the slot pages */
    bool debug;

    /* pages: one 40-byte record each, so touching a page costs one cache line */
    struct page_rec {
        uint64_t hash, parent;      /* prefix identity (registered pages) */
        int32_t ref, owner;         /* refcount (KV); owning record (STATE), checkpoint (CKPT) or -1 */
        int32_t lru_prev, lru_next; /* LRU links (CACHED, first page of a checkpoint) or -1 */
        uint8_t role, pflags;
    } *pg;
    int32_t *tokens;   /* [n_pages][B] (prefix caching) */
    int32_t lru_head, lru_tail;
    int32_t *free_stack;
    int64_t n_free, n_kv, n_cached, n_state, n_reserved;

    /* slots layout */
    int32_t *slot_stack, *slot_owner;
    int n_slots_free;

    /* host pool */
    int32_t *host_stack, *host_owner;
    int64_t n_host_free;

    /* sequences */
    seq_t *seqs;
    int32_t *state_arena; /* [max_seqs][E] */
    int32_t *rec_stack;
    int n_rec_free;
    struct map_ent { int64_t key; int32_t val; } *map; /* key -1 = empty */
    uint64_t map_mask;
    int n_swapped;

    /* prefix index */
    struct ix_ent { uint32_t tag; int32_t page; } *ix; /* tag = low 32 hash bits; page -1 = empty */
    uint64_t ix_mask;

    /* state checkpoints: records [max_ck], pages [max_ck][E], map key -> record */
    int max_ck, n_ck_free;
    int32_t *ck_stack;     /* free records */
    uint64_t *ck_key;      /* [max_ck] chain hash of the block the state follows */
    int32_t *ck_kvpage;    /* [max_ck] the registered KV page of that block; -1 = unused */
    int32_t *ck_pages;     /* [max_ck][E] */
    struct ck_ent { uint64_t key; int32_t ck; } *ckix; /* ck -1 = empty */
    uint64_t ckix_mask;
    int64_t n_ckpt_pages;

    pool_stats_t st;   /* cumulative counters (the count fields are filled on demand) */
};

static inline int64_t pool_avail(const pool_t *p) { return p->n_free + p->n_cached + p->n_ckpt_pages; }

static inline int ck_find(const pool_t *p, uint64_t key) {
    if (!p->ckix) return -1;
    for (uint64_t i = key & p->ckix_mask;; i = (i + 1) & p->ckix_mask) {
        if (p->ckix[i].ck < 0) return -1;
        if (p->ckix[i].key == key) return p->ckix[i].ck;
    }
}

/* Fibonacci hashing of sequence ids: one multiply, the high bits are well mixed. */
static inline uint64_t mix64(uint64_t x) {
    x *= 0x9E3779B97F4A7C15ULL;
    return x ^ (x >> 29);
}

static inline int blocks_for(const pool_t *p, int64_t tokens) { return (int)((tokens + p->B - 1) / p->B); }
static inline int32_t *state_of(const pool_t *p, int rec) { return p->state_arena + (size_t)rec * p->E; }

static inline int map_find(const pool_t *p, int64_t id) {
    if (id < 0) return -1;
    for (uint64_t i = mix64((uint64_t)id) & p->map_mask;; i = (i + 1) & p->map_mask) {
        if (p->map[i].key == id) return p->map[i].val;
        if (p->map[i].key < 0) return -1;
    }
}

/* Entries are 8 bytes (the low half of the hash as a tag, the page): a probe costs one
 * cache line; the full hash is confirmed on the page record. The home slot is
 * tag & mask (capacity <= 2^32), so deletion never reads a page record. */
static inline int32_t ix_find(const pool_t *p, uint64_t h) {
    uint32_t tag = (uint32_t)h;
    for (uint64_t i = h & p->ix_mask;; i = (i + 1) & p->ix_mask) {
        int32_t pg = p->ix[i].page;
        if (pg < 0) return -1;
        if (p->ix[i].tag == tag && p->pg[pg].hash == h) return pg;
    }
}

#endif
