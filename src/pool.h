/*
 * pool: bookkeeping of the page pool — which page holds what, for whom. Integer ids
 * only: the pool never touches device memory (layout.h says where a page's bytes are;
 * the backend copies them). Single-threaded: the engine core thread owns the pool.
 *
 * A page is the physical unit (layout.h). Every device page is in exactly one role:
 *
 *   FREE      on the free list, no content worth keeping
 *   KV        a KV block referenced by >= 1 block table (refcount = #references)
 *   CACHED    a full KV block with refcount 0 whose hash is kept in the prefix index;
 *             evictable, least recently released first (LRU). Counts as capacity.
 *   STATE     one of the E state pages of exactly one live (running) sequence
 *   RESERVED  slots layout only: a page of a state slot no sequence holds
 *   CKPT      one of the E pages of a state checkpoint (cfg.state_checkpoints): a
 *             snapshot of a request's recurrent state right after a full block, keyed
 *             by that block's hash; evictable, in the same LRU as CACHED pages
 *
 * A swapped-out sequence holds no device page: its pages' contents live in host slots
 * (the host pool, cfg.n_host_pages slots of page_bytes each, its own free list).
 *
 * Layouts (layout.h "Layouts"), one algorithm, three configurations:
 *   LAYOUT_PAGED    state pages come from the common free list at admission and go
 *                   back at free: KV blocks and state compete, concurrency follows demand.
 *   LAYOUT_COUPLED  the same algorithm; the caller sets state_pages = 1 + k (ATOM before
 *                   #602: every page has room for a state, a request holds 1 + k of them;
 *                   admission needs n_blocks + 1 + k pages).
 *   LAYOUT_SLOTS    pages [0, n_slots * E) are set aside at creation as n_slots slots
 *                   of E pages (slot s = pages s*E .. s*E+E-1, ATOM #602 + #894: no
 *                   equivalent-block charge); admission needs a free slot (LIFO reuse)
 *                   plus its KV blocks from the other pages.
 *
 * Sequences are named by caller-chosen ids (int64 >= 0). Per sequence the pool keeps
 * its KV block table (page ids, logical block i covers tokens [i*B, (i+1)*B)), its
 * state page table (E page ids in statemap ordinal order), n_tokens (tokens whose
 * KV slots are committed) and its prefix-hash chain.
 *
 * Prefix caching (cfg.prefix_caching). A full block i of a sequence's tokens has the
 * chained hash h_i = XXH64(bytes, seed = cfg.hash_seed) over the bytes
 *     [h_{i-1} as 8 little-endian bytes, omitted for i = 0]
 *     [tokens[i*B .. i*B+B) as B int32 little-endian values, 4*B bytes]
 * (seed-system §2.8 with int32 tokens). Partial blocks are never hashed. The index maps
 * h -> page; a hit needs the hash, the page's stored parent hash and its B stored
 * token ids to match (guards hash collisions). Blocks are registered by pool_publish,
 * called after the forward that wrote their KV (ATOM #902), never at admission, so no
 * request can hit a block whose KV is not written yet. Lookups stop at the first miss.
 * A prompt fully in the cache still leaves its last block to compute (ATOM #784: the
 * prefill needs >= 1 token for logits). A hit on a CACHED page takes it out of the
 * evictable capacity and is charged as such (fixes ATOM's over-commit, seed §2.8).
 *
 * Hybrid models (state_pages > 0): a KV hit at token t is only usable if the recurrent
 * state after token t is also available. By default (cfg.kv_only_hits = false) a
 * stateful pool uses a hit only up to the deepest state checkpoint on its chain (see
 * below; with checkpoints off, the default, that means never): lookups and admissions
 * report the usable cached tokens and count the rest in the stats ("hits lost to the
 * state gate"), while blocks are still published so the index is warm.
 * cfg.kv_only_hits = true allows KV-only hits — only correct for a model with no
 * recurrent state, or for experiments that restart the state (ATOM's silent bug).
 *
 * State checkpoints (cfg.state_checkpoints, paged and coupled layouts). pool_checkpoint
 * copies a running request's E state pages, taken right after token n (a block
 * boundary whose block is published), into E fresh CKPT pages keyed by block n/B-1's
 * chain hash (and its KV page). A later prompt whose KV hits reach that block can then
 * use the hit up to n: pool_admit reports the checkpoint's pages in
 * info.ckpt_pages; the caller copies them into the new state pages before its next
 * pool call, and the prefill starts from that state at token n. The deepest checkpoint
 * on the hit chain wins; KV hits beyond it are refused as without checkpoints. A
 * checkpoint costs E pages of capacity, but it is cache, not capacity: it sits in the
 * LRU with the CACHED blocks (one entry per checkpoint) and is evicted as a whole;
 * evicting the KV block it is keyed on drops it too.
 *
 * Calls. Every mutating call has a pure check with the same arguments (G8):
 *   pool_can_admit  / pool_admit       HS_OK; HS_AGAIN: no room now (pages, slot, seq
 *   pool_can_append / pool_append      table or host slots); HS_ERR_*: a bad call that
 *   pool_can_swap_out / pool_swap_out  can never succeed. The commit re-runs the check
 *   pool_can_swap_in  / pool_swap_in   and returns its code unchanged, with the pool
 *   pool_can_checkpoint / pool_checkpoint  untouched, when it fails: it cannot fail if
 *                                      the check just passed. Messages go into err[0..n).
 * Errors: unknown id HS_ERR_NOT_FOUND (also a second pool_free_seq); admitting a live
 * id HS_ERR_STATE; append to / publish / swap out a swapped sequence and swap in a
 * running one HS_ERR_STATE; an empty prompt, negative counts or more tokens than
 * cfg.max_seq_tokens HS_ERR_INVALID; more pages than the pool (or host pool) could ever
 * give HS_ERR_NO_MEMORY; swap without a host pool, checkpoints while they are off
 * HS_ERR_UNSUPPORTED.
 *
 * Pointers returned by pool_block_table / pool_state_table stay valid until the next
 * mutating call for that sequence. The pool allocates at creation and when a block
 * table outgrows its capacity (doubling, kept for reuse); the steady-state step loop
 * allocates nothing.
 *
 * HS_DEBUG_POOL=1 in the environment logs every mutating call to stderr.
 */
#ifndef HS_POOL_H
#define HS_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"
#include "util.h"

typedef struct pool pool_t; /* opaque; pool_create / pool_destroy */

typedef struct {
    layout_kind_t kind;     /* LAYOUT_PAGED (default), LAYOUT_SLOTS or LAYOUT_COUPLED */
    int64_t n_pages;        /* device pages in the pool, >= 1 (slots: includes the slot pages) */
    int block_size;         /* B: tokens per KV block (default 16) */
    int state_pages;        /* E: state pages per sequence; 0 = stateless model. paged/slots:
                               the statemap's n_pages; coupled: 1 + k (default 0) */
    int n_slots;            /* slots layout: state slots reserved at creation (ATOM's
                               max_num_seqs); n_slots * E < n_pages. Ignored otherwise. */
    int max_seqs;           /* live sequences (running + swapped) the pool can track (default 1024) */
    int max_seq_tokens;     /* tokens (prompt + output + look-ahead) one sequence may hold (default 262144) */
    int64_t n_host_pages;   /* host slots for swapped pages; 0 = no swapping (default 0) */
    bool prefix_caching;    /* hash, publish and look up full blocks (default true) */
    bool kv_only_hits;      /* allow prefix hits without the recurrent state (default false;
                               irrelevant when state_pages == 0: hits are always usable) */
    uint64_t hash_seed;     /* XXH64 seed of every block hash (a cache salt; default 0) */
    int hash_bits;          /* testing only: keep the low hash_bits bits of each block hash
                               (0 = all 64); small values force collisions so tests can
                               exercise the token guard */
    bool state_checkpoints; /* keep state snapshots as evictable pages (pool_checkpoint);
                               needs prefix caching, E > 0, paged or coupled (default false) */
} pool_config_t;

/* Fill defaults (see the field comments); n_pages is left 0 and must be set. */
void pool_config_default(pool_config_t *cfg);

/* Create a pool; HS_ERR_INVALID (message in err) for a bad config. *out is set only
 * on HS_OK. Free with pool_destroy (NULL is fine). */
int pool_create(pool_t **out, const pool_config_t *cfg, char *err, size_t n);
void pool_destroy(pool_t *p);
const pool_config_t *pool_config(const pool_t *p);

/* ---- admission ---------------------------------------------------------------- */

/* What admitting a prompt would take (filled by pool_can_admit and pool_lookup). */
typedef struct {
    int n_blocks;            /* KV blocks of the prompt: ceil(n_tokens / B) */
    int n_hit_blocks;        /* leading blocks served by the cache (usable hits only) */
    int n_hit_tokens;        /* n_hit_blocks * B: prompt tokens the prefill may skip */
    int n_refused_tokens;    /* cached tokens refused because the state there is unavailable */
    int64_t n_pages_needed;  /* pages taken from free + cached capacity: missed blocks,
                                E (paged/coupled) and hits on CACHED pages */
    int64_t n_pages_avail;   /* pages obtainable now: free + cached + checkpoints (slots: KV
                                part only), less the hit checkpoint's */
    const int32_t *ckpt_pages; /* [E] the checkpoint holding the state after n_hit_tokens,
                                or NULL (the state starts from zero). After pool_admit: copy
                                them into the state pages before the next pool call. */
} pool_admit_info_t;

/* Prompt tokens [0, n_tokens) of a new sequence: how many are cached (pure). tokens
 * may be NULL (no lookup). info may be NULL. Returns info->n_hit_tokens (>= 0). */
int pool_lookup(const pool_t *p, const int32_t *tokens, int n_tokens, pool_admit_info_t *info);

/* Can sequence `id` be admitted with prompt tokens[0, n_tokens)? Pure. Needs: id not
 * live, 1 <= n_tokens <= max_seq_tokens, a free sequence record, pages for the missed
 * blocks (+ E state pages, or a free slot). tokens may be NULL when prefix caching is
 * off or not wanted for this prompt. info (may be NULL) gets the plan. */
int pool_can_admit(const pool_t *p, int64_t id, const int32_t *tokens, int n_tokens,
                   pool_admit_info_t *info, char *err, size_t n);

/* Admit: hit blocks are shared (refcount + 1, CACHED pages revived), missed blocks and
 * the state pages are taken (evicting LRU cached pages when the free list is empty).
 * n_tokens becomes the sequence's committed token count; the prefill must compute
 * tokens [info.n_hit_tokens, n_tokens) and start its recurrent state from zero (no
 * hits are usable for stateful pools unless kv_only_hits). Nothing is published. */
int pool_admit(pool_t *p, int64_t id, const int32_t *tokens, int n_tokens, pool_admit_info_t *info,
               char *err, size_t n);

/* Register the sequence's full blocks covering tokens [0, n_tokens) in the prefix
 * index, given all its tokens so far (prompt + output; n_tokens <= its committed
 * count). Call after the forward that wrote their KV. Blocks already registered are
 * skipped; a block whose hash is already indexed (another page has the same content)
 * stays unregistered. No-op when prefix caching is off. Can fail only with
 * HS_ERR_NOT_FOUND / HS_ERR_STATE (swapped) / HS_ERR_INVALID (n_tokens out of range). */
int pool_publish(pool_t *p, int64_t id, const int32_t *tokens, int n_tokens, char *err, size_t n);

/* ---- decode ------------------------------------------------------------------- */

/* Append: n_tokens += n_new, and the block table then covers n_tokens + n_lookahead
 * token slots (look-ahead slots for k draft tokens are reserved, not committed; blocks
 * are never taken back). New blocks are fresh pages (never hashed here). Decode step
 * without speculation: append(id, 1, 0) before the forward. With k drafts: append(id,
 * 1, k) before the forward writes 1 + k tokens, then append(id, a - 1, 0) after a
 * tokens were accepted (takes no page). pages_needed (may be NULL) gets the page count. */
int pool_can_append(const pool_t *p, int64_t id, int n_new, int n_lookahead, int *pages_needed,
                    char *err, size_t n);
int pool_append(pool_t *p, int64_t id, int n_new, int n_lookahead, char *err, size_t n);

/* Free a running or swapped sequence: its references, state pages (or slot) and host
 * slots go back. Registered blocks whose refcount drops to 0 become CACHED (released
 * last block first, so chains are evicted from the tail). The id becomes unknown.
 * Preemption by recompute is a free followed by a later admit of the real tokens. */
int pool_free_seq(pool_t *p, int64_t id, char *err, size_t n);

/* ---- state checkpoints ----------------------------------------------------------- */

/* Device copy of one whole page (dst <- src), done by the backend; cannot fail. */
typedef void (*pool_page_copy_fn)(void *user, int64_t dst_page, int64_t src_page);

/* Snapshot the state of running sequence `id` as the state after token n_tokens: call
 * it when the live state is exactly that (right after the forward that ended at
 * n_tokens). Needs cfg.state_checkpoints (else HS_ERR_UNSUPPORTED); n_tokens a multiple
 * of B, 0 < n_tokens <= committed, its last block published (else HS_ERR_INVALID /
 * HS_ERR_STATE); E pages (HS_AGAIN). An existing checkpoint for the same block is only
 * refreshed in the LRU (HS_OK, no copy). copy is called E times (ckpt page j <- state
 * page j). */
int pool_can_checkpoint(const pool_t *p, int64_t id, int n_tokens, char *err, size_t n);
int pool_checkpoint(pool_t *p, int64_t id, int n_tokens, pool_page_copy_fn copy, void *user, char *err,
                    size_t n);

/* ---- swap ------------------------------------------------------------------------ */

enum { POOL_COPY_TO_HOST = 0, POOL_COPY_TO_DEVICE = 1 };
/* Byte copy of one page to / from one host slot, done by the backend (bk->page_out /
 * page_in). Called synchronously inside pool_swap_*; it cannot fail. A page given
 * back by swap-out may be handed out by the next pool call: the copy must be ordered
 * before any later write to that page (same stream). */
typedef void (*pool_copy_fn)(void *user, int64_t page, int64_t host_slot, int dir);

/* Swap out a running sequence: each of its KV blocks (table order), then its state
 * pages (ordinal order) is copied to a fresh host slot, then its device references
 * are dropped as in pool_free_seq (slots: the slot is released). Needs
 * n_blocks + E free host slots. copy may be NULL (bookkeeping only). */
int pool_can_swap_out(const pool_t *p, int64_t id, char *err, size_t n);
int pool_swap_out(pool_t *p, int64_t id, pool_copy_fn copy, void *user, char *err, size_t n);
/* Swap in a swapped sequence: fresh pages (slots: a free slot) for n_blocks + E pages,
 * copied back in the same order, host slots released. Blocks come back unregistered
 * (publish again to re-register them). */
int pool_can_swap_in(const pool_t *p, int64_t id, char *err, size_t n);
int pool_swap_in(pool_t *p, int64_t id, pool_copy_fn copy, void *user, char *err, size_t n);

/* ---- queries ------------------------------------------------------------------- */

typedef struct {
    bool swapped;            /* pages in host slots; no device pages */
    int n_tokens;            /* committed tokens (KV written or being written this step) */
    int n_blocks;            /* entries of the block table (covers look-ahead too) */
    int n_cached_tokens;     /* prompt tokens served by the prefix cache at admission */
    int slot;                /* slots layout: slot index (pages slot*E ..), else -1 */
} pool_seq_info_t;

int pool_seq_info(const pool_t *p, int64_t id, pool_seq_info_t *out);
/* Block table [n_blocks] of page ids, or NULL (unknown or swapped id). */
const int32_t *pool_block_table(const pool_t *p, int64_t id, int *n_blocks);
/* State page table [E] of page ids in statemap ordinal order, or NULL (unknown,
 * swapped, or E == 0). */
const int32_t *pool_state_table(const pool_t *p, int64_t id);

typedef struct {
    layout_kind_t kind;
    int64_t n_pages;         /* device pages */
    int64_t n_free;          /* FREE */
    int64_t n_kv;            /* KV (refcount >= 1) */
    int64_t n_cached;        /* CACHED (evictable) */
    int64_t n_state;         /* STATE */
    int64_t n_reserved;      /* RESERVED (pages of free slots) */
    int state_pages;         /* E */
    int n_slots, n_slots_free;
    int n_seqs, n_swapped;   /* live sequences, of which swapped */
    int64_t n_host_pages, n_host_used;
    uint64_t n_admits;       /* successful admissions */
    uint64_t prompt_tokens;  /* prompt tokens admitted */
    uint64_t hit_blocks;     /* usable prefix hits taken at admission (blocks) */
    uint64_t hit_tokens;     /* ... in tokens */
    uint64_t refused_tokens; /* KV hits refused by the state gate (tokens) */
    uint64_t evictions;      /* CACHED pages reclaimed for new content */
    uint64_t published;      /* blocks registered in the prefix index */
    uint64_t swap_outs, swap_ins;
    int n_ckpts;             /* state checkpoints held */
    int64_t n_ckpt_pages;    /* CKPT pages (n_ckpts * E) */
    uint64_t ckpts_made, ckpt_hits, ckpt_evictions;
} pool_stats_t;

void pool_stats(const pool_t *p, pool_stats_t *out);
/* Pages obtainable now for KV or (paged/coupled) state: FREE + CACHED + CKPT. */
int64_t pool_free_capacity(const pool_t *p);

/* Verify every invariant: each page in exactly one role, counts add up, refcounts equal
 * the number of block-table references, the state and slot owners, the hash index and
 * the LRU list, the host slots. HS_OK, or HS_ERR_STATE with the first violation in
 * err. O(pages + table entries); allocates scratch. For tests and debug builds. */
int pool_check(const pool_t *p, char *err, size_t n);

#endif
