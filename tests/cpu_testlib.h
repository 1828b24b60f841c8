/*
 * cpu_testlib.h: helpers shared by the tests/test_cpu_*.c programs (header-only,
 * static functions): a seeded RNG, fp32 weight loading, a hand-built page pool
 * (KV layout + state map with simple sequential packing, standing in for the pool
 * module's statemap_init), an error report that prints its evidence, and the cmocka
 * setup / teardown that give a test a CPU backend.
 */
#ifndef HS_CPU_TESTLIB_H
#define HS_CPU_TESTLIB_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"

/* cmocka setup / teardown: *state is a CPU backend (all cores) for the test. */
static inline int cpu_setup(void **state) {
    *state = backend_cpu_create(0);
    return *state ? 0 : -1;
}
static inline int cpu_teardown(void **state) {
    backend_t *bk = *state;
    bk->destroy(bk);
    return 0;
}

/* ---- RNG: xorshift64*, uniform in [-1, 1) and approx. normal ---- */
typedef struct { uint64_t s; } trng_t;
static inline double trng_u(trng_t *r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return (double)((r->s * 2685821657736338717ull) >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}
static inline float trng_f(trng_t *r, float scale) { return (float)trng_u(r) * scale; }
static inline void trng_fill(trng_t *r, float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) x[i] = trng_f(r, scale);
}

/* fp32 host array -> backend weight [rows, cols]. */
static inline bk_weight_t *tw_load(backend_t *bk, const float *x, int64_t rows, int64_t cols) {
    bk_host_tensor_t t = {.data = x, .dtype = HS_F32, .rows = rows, .cols = cols, .scale_inv = NULL};
    char err[128];
    bk_weight_t *w = bk->weight_load(bk, &t, err, sizeof err);
    if (!w) fprintf(stderr, "weight_load: %s\n", err);
    return w;
}

/* ---- error report ---- */
typedef struct {
    double max_abs, max_rel;
    size_t at;
} terr_t;
/* Compare got (fp32) with ref (double); rel error uses max(|ref|, floor). */
static inline terr_t terr(const float *got, const double *ref, size_t n, double floor) {
    terr_t e = {0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        double rel = d / fmax(fabs(ref[i]), floor);
        if (!(d <= e.max_abs)) {
            e.max_abs = d;
            e.at = i;
        }
        if (!(rel <= e.max_rel)) e.max_rel = rel;
    }
    return e;
}
static inline void terr_print(const char *what, terr_t e, const float *got, const double *ref) {
    printf("  %-40s max abs %.3g  max rel %.3g  at %zu (got %.8g ref %.8g)\n", what, e.max_abs, e.max_rel, e.at,
           got ? (double)got[e.at] : 0.0, ref ? ref[e.at] : 0.0);
}

/* ---- a hand-built pool: n_pages pages; KV layout + state map of S requests ---- */
typedef struct {
    bk_pool_t pool;
    sm_loc_t *conv, *ssm; /* owned location arrays of pool.sm */
} tpool_t;

/* KV: n_attn layers, kvh heads of D, block_size, dtype. State: n_gdn layers (0 for
 * none) of Hv heads dk x dv, conv_dim, conv_width, dtypes, slice_rows; E pages per
 * request (granules packed sequentially, 16-byte aligned, moving to the next page
 * when one does not fit). page_bytes = max(kv_bytes, state_page_bytes). */
static inline void tpool_init(tpool_t *tp, backend_t *bk, int64_t n_pages, int n_attn, int kvh, int D,
                              int block_size, hs_dtype_t kv_dtype, int n_gdn, int hv, int dk, int dv,
                              int conv_dim, int conv_width, hs_dtype_t conv_dtype, hs_dtype_t ssm_dtype,
                              int slice_rows, size_t state_page_bytes) {
    memset(tp, 0, sizeof *tp);
    kv_layout_t *kv = &tp->pool.kv;
    kv->block_size = block_size;
    kv->n_attn = n_attn;
    kv->kvh = kvh;
    kv->head_dim = D;
    kv->kv_dtype = kv_dtype;
    kv->layer_bytes = 2 * (size_t)block_size * kvh * D * hs_dtype_size(kv_dtype);
    kv->kv_bytes = (size_t)n_attn * kv->layer_bytes;
    if (kv_dtype == HS_F8_E4M3) {
        kv->scale_offset = kv->kv_bytes;
        kv->kv_bytes += (size_t)n_attn * 2 * block_size * kvh * sizeof(float);
    }
    size_t page_bytes = kv->kv_bytes > state_page_bytes ? kv->kv_bytes : state_page_bytes;
    page_bytes = (page_bytes + 15) & ~(size_t)15;
    statemap_t *sm = &tp->pool.sm;
    sm->n_gdn = n_gdn;
    sm->hv = hv;
    sm->dk = dk;
    sm->dv = dv;
    sm->conv_dim = conv_dim;
    sm->conv_width = conv_width;
    sm->conv_dtype = conv_dtype;
    sm->ssm_dtype = ssm_dtype;
    sm->slice_rows = slice_rows;
    sm->n_slices = slice_rows ? dv / slice_rows : 0;
    sm->page_bytes = page_bytes;
    if (n_gdn > 0) {
        tp->conv = calloc((size_t)n_gdn, sizeof(sm_loc_t));
        tp->ssm = calloc((size_t)n_gdn * hv * sm->n_slices, sizeof(sm_loc_t));
        int page = 0;
        size_t off = 0;
        size_t cb = (size_t)conv_width * conv_dim * hs_dtype_size(conv_dtype);
        size_t sb = (size_t)slice_rows * dk * hs_dtype_size(ssm_dtype);
#define TPLACE(loc, bytes)                        \
    do {                                          \
        if (off + (bytes) > page_bytes) {         \
            page++;                               \
            off = 0;                              \
        }                                         \
        (loc).page = page;                        \
        (loc).offset = (int32_t)off;              \
        off = (off + (bytes) + 15) & ~(size_t)15; \
    } while (0)
        for (int g = 0; g < n_gdn; g++) {
            TPLACE(tp->conv[g], cb);
            for (int h = 0; h < hv; h++)
                for (int j = 0; j < sm->n_slices; j++) TPLACE(tp->ssm[((size_t)g * hv + h) * sm->n_slices + j], sb);
        }
#undef TPLACE
        sm->n_pages = page + 1;
        sm->state_bytes = (size_t)n_gdn * (cb + (size_t)hv * dv * dk * hs_dtype_size(ssm_dtype));
        sm->conv = tp->conv;
        sm->ssm = tp->ssm;
    }
    tp->pool.page_bytes = page_bytes;
    tp->pool.n_pages = n_pages;
    tp->pool.base = bk->alloc(bk, (size_t)n_pages * page_bytes);
}

static inline void tpool_free(tpool_t *tp, backend_t *bk) {
    bk->free(bk, tp->pool.base);
    free(tp->conv);
    free(tp->ssm);
}

#endif
