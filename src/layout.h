/*
 * layout: where bytes live in the page pool — the contract between the pool
 * (bookkeeping, ids only), the model (which turns ids into addresses) and the
 * kernels (cpu/ and cuda/, which read and write through these addresses).
 *
 * The pool is one device (or host) allocation of n_pages pages of page_bytes
 * each. A page's address is  pool_base + (size_t)page_id * page_bytes.
 * In the paged layout (hyserve's) any page can hold a KV block or a share of one
 * request's recurrent state; the seed's two layouts are expressed with the same
 * formula (see "Layouts" below), so every comparison is an A/B of the same code.
 *
 * KV block (one page, or the first kv_bytes of a coupled page), per rank:
 *
 *   offset 0:  K of attention layer 0   [block_size][kvh][D]  kv_dtype
 *              V of attention layer 0   [block_size][kvh][D]  kv_dtype
 *              K, V of attention layer 1 ... up to n_attn-1
 *   then, fp8 KV only: scales           [n_attn][2][block_size][kvh] fp32
 *                                        (ATOM's per-token-head scale)
 *
 *   kv_layer_bytes = 2 * block_size * kvh * D * size(kv_dtype)
 *   kv_bytes       = n_attn * kv_layer_bytes + (fp8 ? n_attn * 2 * block_size * kvh * 4 : 0)
 *   Token p of a sequence lives in block block_table[p / block_size], row p % block_size.
 *
 * Recurrent state of one request (per rank), cut into granules:
 *   conv granule of GDN layer g:  [conv_width][conv_dim] conv_dtype, token-major,
 *        oldest pre-conv input first (conv_width = Kc - 1); channels [q | k | v] of
 *        this rank's shard.
 *   ssm granule (g, h, j):  rows [j*slice_rows, (j+1)*slice_rows) of head h's state
 *        stored V-major: S^T[v][k], [slice_rows][dk] ssm_dtype (K innermost), i.e. the
 *        head's state is [dv][dk] = S^T where the math state S is [dk][dv] (model-spec §2.5.6).
 *   A granule never straddles a page. The request owns E state pages listed in its
 *   state page table pages[0..E); granule x lives at
 *        pool_base + pages[loc.page] * page_bytes + loc.offset.
 *   Offsets are multiples of 16 bytes.
 *
 * Layouts:
 *   paged    page_bytes = kv_bytes; a request's E state pages come from the same free
 *            list as KV blocks, only while it lives.
 *   slots    (ATOM #602 + #894) page_bytes = kv_bytes; max_num_seqs * E pages are set
 *            aside at start-up as state pages; KV gets the rest.
 *   coupled  (before #602) page_bytes = kv_bytes + state region; every page carries room
 *            for one request's state after its KV part (state_base_offset = kv_bytes) and
 *            a request's state lives in one page of its own (E = 1).
 */
#ifndef HS_LAYOUT_H
#define HS_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "mcfg.h"
#include "util.h"

typedef enum { LAYOUT_PAGED = 0, LAYOUT_SLOTS, LAYOUT_COUPLED } layout_kind_t;

/* Per-rank sizes of one KV block. */
typedef struct {
    int block_size;        /* tokens per block (default 16) */
    int n_attn;            /* full-attention layers with KV (MTP layer included when counted) */
    int kvh;               /* KV heads on this rank (replicated when Hkv < tp) */
    int head_dim;          /* D */
    hs_dtype_t kv_dtype;   /* HS_BF16 or HS_F8_E4M3 */
    size_t layer_bytes;    /* K+V bytes of one layer in one block */
    size_t scale_offset;   /* fp8: offset of the scales inside the block, else 0 */
    size_t kv_bytes;       /* whole block: K, V and scales */
} kv_layout_t;

/* Where one granule lives: ordinal in the request's state page table, byte offset. */
typedef struct {
    int32_t page;
    int32_t offset;
} sm_loc_t;

/* Per-model state map, computed once at start-up (layout.c). */
typedef struct {
    int n_gdn;             /* GDN layers */
    int hv;                /* state heads on this rank (Hv / tp) */
    int dk, dv;            /* head dims */
    int conv_dim;          /* conv channels on this rank (conv_dim / tp) */
    int conv_width;        /* Kc - 1 (+ speculative tokens, when used) */
    hs_dtype_t conv_dtype; /* model dtype (bf16) */
    hs_dtype_t ssm_dtype;  /* HS_F32 or HS_BF16 */
    int slice_rows;        /* V rows per ssm granule; dv % slice_rows == 0 */
    int n_slices;          /* dv / slice_rows */
    size_t page_bytes;     /* the pool's page size */
    size_t base_offset;    /* first usable byte of a state page (kv_bytes in coupled, else 0) */
    int n_pages;           /* E: state pages per request */
    size_t state_bytes;    /* useful bytes of one request's state */
    size_t waste_bytes;    /* E * (page_bytes - base_offset) - state_bytes */
    sm_loc_t *conv;        /* [n_gdn] */
    sm_loc_t *ssm;         /* [n_gdn][hv][n_slices] */
} statemap_t;

/* KV block sizes for a model on `tp` ranks (n_extra_attn: MTP layers that need KV rows). */
void kv_layout_init(kv_layout_t *kv, const mcfg_t *c, int tp, int block_size, hs_dtype_t kv_dtype,
                    int n_extra_attn);

/* Byte offset of K (which=0) or V (which=1) of attention layer `a`, token row `row`,
 * head `h` within a block. */
static inline size_t kv_offset(const kv_layout_t *kv, int a, int which, int row, int h) {
    return (size_t)a * kv->layer_bytes +
           ((size_t)which * kv->block_size + (size_t)row) * kv->kvh * kv->head_dim * hs_dtype_size(kv->kv_dtype) +
           (size_t)h * kv->head_dim * hs_dtype_size(kv->kv_dtype);
}

/* Build the state map for `c` on `tp` ranks in pages of page_bytes, usable from
 * base_offset on. slice_rows = 0 picks the size that minimises waste (ties: larger
 * slices) among the powers of two from dv down to 8 that divide dv. Packing is
 * first-fit decreasing (layout.c), deterministic: every rank and every run gets the
 * same map. n_spec widens the conv window (conv_width = Kc - 1 + n_spec). A stateless
 * model (n_gdn == 0) gets E = 0 and no granules. Returns HS_OK, or HS_ERR_INVALID when
 * a granule cannot fit a page (message in err). Free with statemap_free. */
int statemap_init(statemap_t *m, const mcfg_t *c, int tp, hs_dtype_t ssm_dtype, int n_spec,
                  size_t page_bytes, size_t base_offset, int slice_rows, char *err, size_t n);
void statemap_free(statemap_t *m); /* tolerates a zeroed or failed map */

/* Bytes of all granules of one request (each 16-aligned): the state region a coupled
 * page needs after its KV part (page_bytes = kv_bytes + statemap_bytes, E = 1).
 * 0 for a stateless model or an invalid tp. */
size_t statemap_bytes(const mcfg_t *c, int tp, hs_dtype_t ssm_dtype, int n_spec);

/* Granule lookups. */
static inline sm_loc_t statemap_conv(const statemap_t *m, int g) { return m->conv[g]; }
static inline sm_loc_t statemap_ssm(const statemap_t *m, int g, int h, int j) {
    return m->ssm[((size_t)g * m->hv + (size_t)h) * m->n_slices + (size_t)j];
}

#endif
