/*
 * layout: KV block sizes and the recurrent-state map (see layout.h for the byte
 * layout of a page). kv_layout_init is the one place the KV block size formula
 * lives; the memory planner and the pool both call it.
 */
#include "layout.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void kv_layout_init(kv_layout_t *kv, const mcfg_t *c, int tp, int block_size, hs_dtype_t kv_dtype,
                    int n_extra_attn) {
    assert(tp >= 1 && block_size >= 1);
    assert(kv_dtype == HS_BF16 || kv_dtype == HS_F8_E4M3 || kv_dtype == HS_F16 || kv_dtype == HS_F32);
    memset(kv, 0, sizeof *kv);
    kv->block_size = block_size;
    kv->n_attn = c->n_attn + n_extra_attn;
    /* KV heads shard over ranks; when there are fewer heads than ranks each rank
     * keeps one (replicated) head, as vLLM and ATOM do. */
    kv->kvh = c->n_kv_heads >= tp ? c->n_kv_heads / tp : 1;
    kv->head_dim = c->head_dim;
    kv->kv_dtype = kv_dtype;
    kv->layer_bytes = 2 * (size_t)block_size * kv->kvh * kv->head_dim * hs_dtype_size(kv_dtype);
    kv->kv_bytes = (size_t)kv->n_attn * kv->layer_bytes;
    if (kv_dtype == HS_F8_E4M3) {
        kv->scale_offset = kv->kv_bytes;
        kv->kv_bytes += (size_t)kv->n_attn * 2 * block_size * kv->kvh * sizeof(float);
    }
}

/* ---- state map -------------------------------------------------------------------
 * Granules: per GDN layer g one conv granule (conv_width * conv_dim * size(conv_dtype)
 * bytes) and hv * n_slices ssm granules (slice_rows * dk * size(ssm_dtype) bytes), each
 * rounded up to 16 bytes. All granules of a class have one size, so first-fit
 * decreasing needs no sort and no search: place the larger class first, then the
 * smaller one; for a class, walk the pages in order and put as many granules as fit
 * into each (once a page cannot take one more granule of this size it never will),
 * then open new pages. O(E + granules). Granules of a class are placed in (g, h, j)
 * order, so a layer's slices are mostly contiguous.
 * slice_rows = 0 tries every power of two from dv down to 8 that divides dv and keeps
 * the one with the fewest pages (= least waste); ties go to the larger slice (fewer
 * granules, longer contiguous runs for the kernels). */

static size_t align16(size_t x) { return (x + 15) & ~(size_t)15; }

typedef struct {
    size_t size;   /* bytes, 16-aligned */
    size_t count;  /* granules */
    sm_loc_t *out; /* [count] placements */
} sm_class_t;

/* Pack the classes (already in decreasing size order) into pages of `usable` bytes
 * starting at `base`; fill[] has room for max_pages entries. Returns pages used, or -1
 * if more than max_pages would be needed. */
static long sm_pack(sm_class_t *cls, int n_cls, size_t base, size_t usable, size_t *fill, long max_pages) {
    long n_pages = 0;
    for (int c = 0; c < n_cls; c++) {
        size_t s = cls[c].size, i = 0;
        for (long pg = 0; i < cls[c].count; pg++) {
            if (pg == n_pages) {
                if (n_pages == max_pages) return -1;
                fill[n_pages++] = 0;
            }
            while (i < cls[c].count && usable - fill[pg] >= s) {
                if (cls[c].out) {
                    cls[c].out[i].page = (int32_t)pg;
                    cls[c].out[i].offset = (int32_t)(base + fill[pg]);
                }
                fill[pg] += s;
                i++;
            }
        }
    }
    return n_pages;
}

static int sm_shape(statemap_t *m, const mcfg_t *c, int tp, hs_dtype_t ssm_dtype, int n_spec, char *err,
                    size_t n) {
    memset(m, 0, sizeof *m);
    if (tp < 1 || n_spec < 0)
        return hs_errf(err, n, HS_ERR_INVALID, "statemap: tp %d / n_spec %d out of range", tp, n_spec);
    if (ssm_dtype != HS_F32 && ssm_dtype != HS_BF16)
        return hs_errf(err, n, HS_ERR_INVALID, "statemap: ssm dtype %s (want f32 or bf16)", hs_dtype_name(ssm_dtype));
    m->n_gdn = c->n_gdn;
    if (c->n_gdn == 0) return HS_OK;
    if (c->lin_v_heads % tp || c->lin_k_heads % tp)
        return hs_errf(err, n, HS_ERR_INVALID, "statemap: GDN heads (k %d, v %d) do not divide by tp %d",
                       c->lin_k_heads, c->lin_v_heads, tp);
    m->hv = c->lin_v_heads / tp;
    m->dk = c->lin_k_dim;
    m->dv = c->lin_v_dim;
    m->conv_dim = mcfg_conv_dim(c) / tp;
    m->conv_width = c->conv_kernel - 1 + n_spec;
    m->conv_dtype = c->dtype;
    m->ssm_dtype = ssm_dtype;
    if (m->hv < 1 || m->dk < 1 || m->dv < 1 || m->conv_width < 1)
        return hs_errf(err, n, HS_ERR_INVALID, "statemap: degenerate GDN shape");
    return HS_OK;
}

size_t statemap_bytes(const mcfg_t *c, int tp, hs_dtype_t ssm_dtype, int n_spec) {
    statemap_t m;
    if (sm_shape(&m, c, tp, ssm_dtype, n_spec, NULL, 0) != HS_OK || m.n_gdn == 0) return 0;
    size_t conv = align16((size_t)m.conv_width * m.conv_dim * hs_dtype_size(m.conv_dtype));
    size_t head = (size_t)m.dv * m.dk * hs_dtype_size(ssm_dtype);
    return (size_t)m.n_gdn * (conv + (size_t)m.hv * align16(head));
}

/* Pages needed (or -1) for the shape in m with slice_rows rows; fills the map when
 * m->conv / m->ssm are allocated. */
static long sm_try(statemap_t *m, int slice_rows, size_t usable, size_t *fill, long max_pages) {
    size_t conv = align16((size_t)m->conv_width * m->conv_dim * hs_dtype_size(m->conv_dtype));
    size_t slice = align16((size_t)slice_rows * m->dk * hs_dtype_size(m->ssm_dtype));
    if (conv > usable || slice > usable) return -1;
    sm_class_t cc = {conv, (size_t)m->n_gdn, m->conv};
    sm_class_t sc = {slice, (size_t)m->n_gdn * m->hv * (size_t)(m->dv / slice_rows), m->ssm};
    sm_class_t cls[2];
    if (conv >= slice) { cls[0] = cc; cls[1] = sc; } else { cls[0] = sc; cls[1] = cc; }
    return sm_pack(cls, 2, m->base_offset, usable, fill, max_pages);
}

int statemap_init(statemap_t *m, const mcfg_t *c, int tp, hs_dtype_t ssm_dtype, int n_spec,
                  size_t page_bytes, size_t base_offset, int slice_rows, char *err, size_t n) {
    int rc = sm_shape(m, c, tp, ssm_dtype, n_spec, err, n);
    if (rc != HS_OK) return rc;
    m->page_bytes = page_bytes;
    m->base_offset = base_offset;
    if (m->n_gdn == 0) return HS_OK; /* stateless model: E = 0 */
    if (base_offset % 16 || page_bytes % 16 || base_offset >= page_bytes || page_bytes > INT32_MAX)
        return hs_errf(err, n, HS_ERR_INVALID,
                       "statemap: page of %zu bytes with state from byte %zu (want 16-aligned, < 2 GiB)",
                       page_bytes, base_offset);
    size_t usable = page_bytes - base_offset;
    size_t conv_b = (size_t)m->conv_width * m->conv_dim * hs_dtype_size(m->conv_dtype);
    size_t head_b = (size_t)m->dv * m->dk * hs_dtype_size(ssm_dtype);
    m->state_bytes = (size_t)m->n_gdn * (conv_b + (size_t)m->hv * head_b);
    /* Upper bound on pages: every granule alone in a page. */
    long max_pages = (long)m->n_gdn * (1 + (long)m->hv * m->dv);
    size_t *fill = hs_malloc(sizeof(size_t) * (size_t)max_pages);
    int best = -1;
    long best_pages = -1;
    if (slice_rows > 0) {
        if (m->dv % slice_rows) {
            hs_free(fill);
            return hs_errf(err, n, HS_ERR_INVALID, "statemap: slice_rows %d does not divide dv %d", slice_rows, m->dv);
        }
        best = slice_rows;
        best_pages = sm_try(m, slice_rows, usable, fill, max_pages);
    } else {
        for (int r = m->dv; r >= 1; r /= 2) {
            if (m->dv % r || (r < 8 && r != m->dv)) continue;
            long pages = sm_try(m, r, usable, fill, max_pages);
            if (pages > 0 && (best_pages < 0 || pages < best_pages)) {
                best = r;
                best_pages = pages;
            }
            if (r < 8) break;
        }
    }
    if (best_pages < 0) {
        hs_free(fill);
        return hs_errf(err, n, HS_ERR_INVALID,
                       "statemap: a granule (conv %zu B, ssm head %zu B) does not fit the %zu usable bytes of a page",
                       conv_b, head_b, usable);
    }
    m->slice_rows = best;
    m->n_slices = m->dv / best;
    m->conv = hs_calloc((size_t)m->n_gdn, sizeof(sm_loc_t));
    m->ssm = hs_calloc((size_t)m->n_gdn * m->hv * m->n_slices, sizeof(sm_loc_t));
    long pages = sm_try(m, best, usable, fill, max_pages);
    assert(pages == best_pages);
    hs_free(fill);
    m->n_pages = (int)pages;
    m->waste_bytes = (size_t)pages * usable - m->state_bytes;
    return HS_OK;
}

void statemap_free(statemap_t *m) {
    if (!m) return;
    hs_free(m->conv);
    hs_free(m->ssm);
    m->conv = NULL;
    m->ssm = NULL;
}
