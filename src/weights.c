/*
 * weights: checkpoint tensors -> model parameters. Contract and name table: weights.h.
 *
 * Flow of wt_load: open the set, resolve the name prefix (probe
 * "<prefix>embed_tokens.weight"), then for each parameter call param()/gather():
 *   param()  finds one tensor, checks shape and dtype (and the FP8 scale), and makes a
 *            view (bk_host_tensor_t pointing into the mmap);
 *   gather() builds a loader-owned [rows, cols] tensor from row ranges of several
 *            sources (grouped qkvz/ba de-interleave, gate;up stacking).
 * Every consumed tensor is marked in m->used; every parameter gets a wt_map_t
 * record (param name, source names, note) that `hyserve inspect` prints.
 *
 * Grouped Qwen3-Next rows (model-spec §2.5.1), G = 2dk + 2r*dv rows per key head g:
 *   in_proj_qkvz: [ q_g (dk) | k_g (dk) | v_g (r*dv) | z_g (r*dv) ]  g = 0..Hk-1
 *   in_proj_ba:   [ b_g (r)  | a_g (r) ]                              g = 0..Hk-1
 * so q head g = rows gG..gG+dk, value head h = g*r + j has v at gG + 2dk + j*dv and z
 * at gG + 2dk + r*dv + j*dv, b at g*2r + j and a at g*2r + r + j.
 *
 * Dummy weights: the same builders run with no checkpoint; each record keeps an init
 * kind and a seed, and wt_fetch generates values into a scratch buffer: blocks of
 * 64 Ki elements, each from its own splitmix64 stream (seed, tensor, block), so the
 * values do not depend on the thread count. Normal-ish values (std 0.02) come from a
 * seeded pool of 16 Mi Irwin-Hall(4) samples: a projection block is a window of the
 * pool at a random offset, so generation runs at memcpy speed.
 */
#include "weights.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { K_PROJ = 0, K_EMBED, K_NORM0, K_NORM1, K_ALOG, K_DTBIAS, K_CONV };
enum { M_VEC = 1, M_W = 2 }; /* allowed dtypes: VEC = bf16/f16/f32, W = VEC + fp8 */

typedef struct {
    wt_model_t *m;
    const mcfg_t *c;
    char *err;
    size_t n;
} ld_t;

/* A resolved checkpoint tensor and its F32 block scales (fp8 only). */
typedef struct {
    const st_tensor_t *t;
    const float *scale;  /* [.., ceil(rows/128), ceil(cols/128)] or NULL */
    const char *sname;   /* scale tensor name or NULL */
} src_t;

/* ---- small helpers ---- */

static void *own(wt_model_t *m, size_t bytes) {
    if (m->n_owned == m->cap_owned) {
        m->cap_owned = m->cap_owned ? 2 * m->cap_owned : 64;
        m->owned = hs_realloc(m->owned, (size_t)m->cap_owned * sizeof *m->owned);
    }
    void *p = hs_malloc(bytes ? bytes : 1);
    m->owned[m->n_owned++] = p;
    return p;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return hs_strdup(buf);
}

static uint64_t hash_str(uint64_t h, const char *s) {
    h ^= 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

static void record(ld_t *L, const bk_host_tensor_t *t, char *param, char *source, const char *note, int kind) {
    wt_model_t *m = L->m;
    if (m->n_map == m->cap_map) {
        m->cap_map = m->cap_map ? 2 * m->cap_map : 256;
        m->map = hs_realloc(m->map, (size_t)m->cap_map * sizeof *m->map);
    }
    wt_map_t *r = &m->map[m->n_map++];
    r->param = param;
    r->source = source;
    r->note = note;
    r->t = t;
    r->kind = kind;
    r->seed = hash_str(m->opts.seed, param);
}

static float elem_f32(const src_t *s, int64_t r, int64_t c, int64_t cols) {
    assert(s->t->dtype == HS_F8_E4M3 || s->t->dtype == HS_F32 || s->t->dtype == HS_BF16 || s->t->dtype == HS_F16);
    if (s->t->dtype == HS_F8_E4M3) return hs_fp8_block_elem(s->t->data, s->scale, cols, r, c);
    return hs_load_f32(s->t->data, s->t->dtype, (size_t)(r * cols + c));
}

static int dtype_ok(hs_dtype_t d, int mask) {
    if (d == HS_BF16 || d == HS_F16 || d == HS_F32) return 1;
    return d == HS_F8_E4M3 && (mask & M_W);
}

/* Find `name`, check rank/dims and dtype, resolve fp8 scales. */
static int find_src(ld_t *L, const char *name, int rank, const int64_t *dims, int mask, src_t *out) {
    wt_model_t *m = L->m;
    memset(out, 0, sizeof *out);
    const st_tensor_t *t = st_set_find(&m->st, name);
    if (!t) return hs_errf(L->err, L->n, HS_ERR_NOT_FOUND, "missing tensor %s", name);
    char a[160], b[160];
    bool shape_ok = t->rank == rank;
    for (int i = 0; shape_ok && i < rank; i++) shape_ok = t->shape[i] == dims[i];
    /* conv1d may come as [C, K] instead of [C, 1, K] */
    if (!shape_ok && rank == 3 && dims[1] == 1 && t->rank == 2 && t->shape[0] == dims[0] && t->shape[1] == dims[2])
        shape_ok = true;
    if (!shape_ok)
        return hs_errf(L->err, L->n, HS_ERR_FORMAT, "%s: expected shape %s, got %s", name,
                       st_shape_str(dims, rank, a, sizeof a), st_shape_str(t->shape, t->rank, b, sizeof b));
    if (!dtype_ok(t->dtype, mask))
        return hs_errf(L->err, L->n, HS_ERR_FORMAT, "%s: expected dtype %s, got %s", name,
                       mask & M_W ? "BF16, F16, F32 or F8_E4M3" : "BF16, F16 or F32", st_dtype_str(t->dtype));
    m->used[st_set_index(&m->st, t)] = m->n_map + 1; /* the record that follows */
    out->t = t;
    if (t->dtype != HS_F8_E4M3) return HS_OK;
    /* FP8: block scales [.., ceil(d[-2]/128), ceil(d[-1]/128)] */
    char sn1[ST_MAX_NAME + 32], sn2[ST_MAX_NAME + 32];
    snprintf(sn1, sizeof sn1, "%s_scale_inv", name);
    snprintf(sn2, sizeof sn2, "%s.weight_scale_inv", name);
    const st_tensor_t *s = st_set_find(&m->st, sn1);
    if (!s) s = st_set_find(&m->st, sn2);
    if (!s)
        return hs_errf(L->err, L->n, HS_ERR_NOT_FOUND, "%s: F8_E4M3 weight without block scales (missing tensor %s)",
                       name, sn1);
    int64_t sd[ST_MAX_RANK];
    int sr = t->rank < 2 ? 2 : t->rank;
    for (int i = 0; i < sr; i++) sd[i] = i < t->rank ? t->shape[i] : 1;
    if (t->rank < 2) { sd[1] = t->rank ? t->shape[0] : 1; sd[0] = 1; }
    sd[sr - 2] = (sd[sr - 2] + 127) / 128;
    sd[sr - 1] = (sd[sr - 1] + 127) / 128;
    bool ok = s->rank == sr;
    for (int i = 0; ok && i < sr; i++) ok = s->shape[i] == sd[i];
    if (!ok)
        return hs_errf(L->err, L->n, HS_ERR_FORMAT, "%s: expected shape %s (128x128 block scales of %s), got %s", s->name,
                       st_shape_str(sd, sr, a, sizeof a), name, st_shape_str(s->shape, s->rank, b, sizeof b));
    if (s->dtype == HS_F32) out->scale = (const float *)s->data; /* data offsets are 8-aligned in practice */
    else if (s->dtype == HS_BF16) {
        float *f = own(m, (size_t)s->n_elem * sizeof(float));
        for (int64_t i = 0; i < s->n_elem; i++) {
            uint16_t h;
            memcpy(&h, s->data + 2 * i, 2);
            f[i] = hs_bf16_to_f32(h);
        }
        out->scale = f;
    } else
        return hs_errf(L->err, L->n, HS_ERR_FORMAT, "%s: expected dtype F32 or BF16, got %s", s->name,
                       st_dtype_str(s->dtype));
    if (s->dtype == HS_F32 && ((uintptr_t)s->data & 3)) { /* unaligned f32 scales: copy */
        float *f = own(m, (size_t)s->n_elem * sizeof(float));
        memcpy(f, s->data, (size_t)s->n_elem * sizeof(float));
        out->scale = f;
    }
    m->used[st_set_index(&m->st, s)] = m->n_map + 1;
    out->sname = s->name;
    return HS_OK;
}

static void dummy_entry(ld_t *L, bk_host_tensor_t *dst, char *param, int64_t rows, int64_t cols, hs_dtype_t dt,
                        int kind) {
    memset(dst, 0, sizeof *dst);
    dst->dtype = dt;
    dst->rows = rows;
    dst->cols = cols;
    record(L, dst, param, hs_strdup("(dummy)"), "generated", kind);
}

/* One tensor as one parameter (a view). dims/rank: the checkpoint shape. */
static int param(ld_t *L, bk_host_tensor_t *dst, char *pname, char *tname, int rank, const int64_t *dims, int mask,
                 int kind) {
    int64_t rows = rank == 1 ? 1 : dims[0], cols = dims[rank - 1];
    if (L->m->dummy) {
        hs_free(tname);
        dummy_entry(L, dst, pname, rows, cols, (kind == K_ALOG || kind == K_DTBIAS) ? HS_F32 : HS_BF16, kind);
        return HS_OK;
    }
    src_t s;
    int rc = find_src(L, tname, rank, dims, mask, &s);
    if (rc != HS_OK) {
        hs_free(pname);
        hs_free(tname);
        return rc;
    }
    dst->data = s.t->data;
    dst->dtype = s.t->dtype;
    dst->rows = rows;
    dst->cols = cols;
    dst->scale_inv = s.scale;
    record(L, dst, pname, s.sname ? fmt("%s (+ %s)", tname, s.sname) : hs_strdup(tname), "view", kind);
    hs_free(tname);
    return HS_OK;
}

#define DIMS(...) ((const int64_t[]){__VA_ARGS__})
#define NDIMS(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define PARAM(L, dst, pname, tname, mask, kind, ...) \
    param(L, dst, pname, tname, NDIMS(__VA_ARGS__), DIMS(__VA_ARGS__), mask, kind)

/* A row range of a 2-D source. */
typedef struct {
    const src_t *s;
    int64_t row0, n_rows;
} seg_t;

/* dst = concat of row ranges (all with `cols` columns). Keeps the source dtype when
 * all agree (FP8 only when every range is 128-row aligned), else converts. */
static void gather(ld_t *L, bk_host_tensor_t *dst, const seg_t *seg, int n_seg, int64_t cols) {
    wt_model_t *m = L->m;
    int64_t rows = 0;
    bool same = true, aligned = true;
    hs_dtype_t dt = seg[0].s->t->dtype;
    for (int i = 0; i < n_seg; i++) {
        rows += seg[i].n_rows;
        if (seg[i].s->t->dtype != dt) same = false;
        bool at_end = seg[i].row0 + seg[i].n_rows == seg[i].s->t->shape[0] && i == n_seg - 1;
        if (seg[i].row0 % 128 || (seg[i].n_rows % 128 && !at_end)) aligned = false;
    }
    hs_dtype_t out = dt;
    if (!same) out = HS_F32;
    else if (dt == HS_F8_E4M3 && !aligned) out = HS_BF16;
    size_t es = hs_dtype_size(out);
    uint8_t *buf = own(m, (size_t)(rows * cols) * es);
    float *sbuf = NULL;
    int64_t sc = (cols + 127) / 128;
    if (out == HS_F8_E4M3) sbuf = own(m, (size_t)(((rows + 127) / 128) * sc) * sizeof(float));
    int64_t r = 0;
    for (int i = 0; i < n_seg; i++) {
        const seg_t *g = &seg[i];
        if (out == dt) {
            memcpy(buf + (size_t)(r * cols) * es, g->s->t->data + (size_t)(g->row0 * cols) * es,
                   (size_t)(g->n_rows * cols) * es);
            if (sbuf)
                memcpy(sbuf + (r / 128) * sc, g->s->scale + (g->row0 / 128) * sc,
                       (size_t)(((g->n_rows + 127) / 128) * sc) * sizeof(float));
        } else {
            for (int64_t k = 0; k < g->n_rows; k++)
                for (int64_t c = 0; c < cols; c++) {
                    float f = elem_f32(g->s, g->row0 + k, c, cols);
                    size_t o = (size_t)((r + k) * cols + c);
                    if (out == HS_F32) memcpy(buf + 4 * o, &f, 4);
                    else {
                        uint16_t h = hs_f32_to_bf16(f);
                        memcpy(buf + 2 * o, &h, 2);
                    }
                }
        }
        r += g->n_rows;
    }
    dst->data = buf;
    dst->dtype = out;
    dst->rows = rows;
    dst->cols = cols;
    dst->scale_inv = sbuf;
}

/* gate [I, H] ; up [I, H] -> [2I, H] */
static int stack_gate_up(ld_t *L, bk_host_tensor_t *dst, char *pname, const char *gname, const char *uname, int64_t I,
                         int64_t H) {
    if (L->m->dummy) {
        dummy_entry(L, dst, pname, 2 * I, H, HS_BF16, K_PROJ);
        return HS_OK;
    }
    src_t g, u;
    int rc = find_src(L, gname, 2, DIMS(I, H), M_W, &g);
    if (rc == HS_OK) rc = find_src(L, uname, 2, DIMS(I, H), M_W, &u);
    if (rc != HS_OK) {
        hs_free(pname);
        return rc;
    }
    seg_t seg[2] = {{&g, 0, I}, {&u, 0, I}};
    gather(L, dst, seg, 2, H);
    record(L, dst, pname, fmt("%s + %s", gname, uname), "stacked [gate; up] (copy)", K_PROJ);
    return HS_OK;
}

/* ---- layers ---- */

static int load_ffn(ld_t *L, wt_layer_t *ly, const char *lp, const char *pp, bool moe) {
    const mcfg_t *c = L->c;
    int64_t H = c->hidden;
    int rc;
    ly->is_moe = moe;
    if (!moe) {
        int64_t I = c->intermediate;
        char *g = fmt("%smlp.gate_proj.weight", lp), *u = fmt("%smlp.up_proj.weight", lp);
        rc = stack_gate_up(L, &ly->gate_up, fmt("%smlp.gate_up", pp), g, u, I, H);
        hs_free(g);
        hs_free(u);
        if (rc) return rc;
        return PARAM(L, &ly->down, fmt("%smlp.down", pp), fmt("%smlp.down_proj.weight", lp), M_W, K_PROJ, H, I);
    }
    int64_t E = c->n_experts, I = c->moe_intermediate, Is = c->shared_intermediate;
    ly->n_experts = (int)E;
    ly->experts_gate_up = hs_calloc((size_t)E, sizeof(bk_host_tensor_t));
    ly->experts_down = hs_calloc((size_t)E, sizeof(bk_host_tensor_t));
    if ((rc = PARAM(L, &ly->router, fmt("%smlp.router", pp), fmt("%smlp.gate.weight", lp), M_W, K_PROJ, E, H))) return rc;
    char *probe = fmt("%smlp.experts.0.gate_proj.weight", lp);
    bool per_expert = L->m->dummy || st_set_find(&L->m->st, probe);
    hs_free(probe);
    if (per_expert) {
        for (int64_t e = 0; e < E; e++) {
            char *g = fmt("%smlp.experts.%lld.gate_proj.weight", lp, (long long)e);
            char *u = fmt("%smlp.experts.%lld.up_proj.weight", lp, (long long)e);
            rc = stack_gate_up(L, &ly->experts_gate_up[e], fmt("%smlp.experts.%lld.gate_up", pp, (long long)e), g, u, I,
                               H);
            hs_free(g);
            hs_free(u);
            if (rc) return rc;
            rc = PARAM(L, &ly->experts_down[e], fmt("%smlp.experts.%lld.down", pp, (long long)e),
                       fmt("%smlp.experts.%lld.down_proj.weight", lp, (long long)e), M_W, K_PROJ, H, I);
            if (rc) return rc;
        }
    } else {
        src_t gu, dn;
        char *gun = fmt("%smlp.experts.gate_up_proj", lp), *dnn = fmt("%smlp.experts.down_proj", lp);
        rc = find_src(L, gun, 3, DIMS(E, 2 * I, H), M_W, &gu);
        if (rc == HS_OK) rc = find_src(L, dnn, 3, DIMS(E, H, I), M_W, &dn);
        if (rc != HS_OK) {
            if (rc == HS_ERR_NOT_FOUND && L->err && !strstr(L->err, "block scales"))
                hs_errf(L->err, L->n, rc, "missing tensor %s (nor per-expert %smlp.experts.0.gate_proj.weight)",
                        gu.t ? dnn : gun, lp);
            hs_free(gun);
            hs_free(dnn);
            return rc;
        }
        int64_t s1 = ((2 * I + 127) / 128) * ((H + 127) / 128), s2 = ((H + 127) / 128) * ((I + 127) / 128);
        L->m->used[st_set_index(&L->m->st, dn.t)] = L->m->n_map + 2; /* down_proj -> experts.0.down */
        if (dn.sname) L->m->used[st_set_index(&L->m->st, st_set_find(&L->m->st, dn.sname))] = L->m->n_map + 2;
        for (int64_t e = 0; e < E; e++) {
            bk_host_tensor_t *a = &ly->experts_gate_up[e], *b = &ly->experts_down[e];
            a->dtype = gu.t->dtype;
            a->rows = 2 * I;
            a->cols = H;
            a->data = gu.t->data + (size_t)(e * 2 * I * H) * hs_dtype_size(a->dtype);
            a->scale_inv = gu.scale ? gu.scale + e * s1 : NULL;
            b->dtype = dn.t->dtype;
            b->rows = H;
            b->cols = I;
            b->data = dn.t->data + (size_t)(e * H * I) * hs_dtype_size(b->dtype);
            b->scale_inv = dn.scale ? dn.scale + e * s2 : NULL;
            record(L, a, fmt("%smlp.experts.%lld.gate_up", pp, (long long)e), fmt("%s[%lld]", gun, (long long)e),
                   "view of fused [E, 2I, H]", K_PROJ);
            record(L, b, fmt("%smlp.experts.%lld.down", pp, (long long)e), fmt("%s[%lld]", dnn, (long long)e),
                   "view of fused [E, H, I]", K_PROJ);
        }
        hs_free(gun);
        hs_free(dnn);
    }
    if (Is > 0) {
        char *g = fmt("%smlp.shared_expert.gate_proj.weight", lp), *u = fmt("%smlp.shared_expert.up_proj.weight", lp);
        rc = stack_gate_up(L, &ly->shared_gate_up, fmt("%smlp.shared_expert.gate_up", pp), g, u, Is, H);
        hs_free(g);
        hs_free(u);
        if (rc) return rc;
        if ((rc = PARAM(L, &ly->shared_down, fmt("%smlp.shared_expert.down", pp),
                        fmt("%smlp.shared_expert.down_proj.weight", lp), M_W, K_PROJ, H, Is)))
            return rc;
        if ((rc = PARAM(L, &ly->shared_gate, fmt("%smlp.shared_expert_gate", pp),
                        fmt("%smlp.shared_expert_gate.weight", lp), M_VEC, K_PROJ, 1, H)))
            return rc;
    }
    return HS_OK;
}

static int load_attn(ld_t *L, wt_layer_t *ly, const char *lp, const char *pp) {
    const mcfg_t *c = L->c;
    int64_t H = c->hidden, Hq = c->n_heads, Hkv = c->n_kv_heads, D = c->head_dim;
    int64_t qrows = Hq * D * (c->attn_output_gate ? 2 : 1);
    int rc;
    if ((rc = PARAM(L, &ly->q_proj, fmt("%sself_attn.q_proj", pp), fmt("%sself_attn.q_proj.weight", lp), M_W, K_PROJ,
                    qrows, H)))
        return rc;
    if ((rc = PARAM(L, &ly->k_proj, fmt("%sself_attn.k_proj", pp), fmt("%sself_attn.k_proj.weight", lp), M_W, K_PROJ,
                    Hkv * D, H)))
        return rc;
    if ((rc = PARAM(L, &ly->v_proj, fmt("%sself_attn.v_proj", pp), fmt("%sself_attn.v_proj.weight", lp), M_W, K_PROJ,
                    Hkv * D, H)))
        return rc;
    if ((rc = PARAM(L, &ly->o_proj, fmt("%sself_attn.o_proj", pp), fmt("%sself_attn.o_proj.weight", lp), M_W, K_PROJ,
                    H, Hq * D)))
        return rc;
    if ((rc = PARAM(L, &ly->q_norm, fmt("%sself_attn.q_norm", pp), fmt("%sself_attn.q_norm.weight", lp), M_VEC,
                    K_NORM0, D)))
        return rc;
    return PARAM(L, &ly->k_norm, fmt("%sself_attn.k_norm", pp), fmt("%sself_attn.k_norm.weight", lp), M_VEC, K_NORM0,
                 D);
}

static int load_gdn(ld_t *L, wt_layer_t *ly, const char *lp, const char *pp) {
    const mcfg_t *c = L->c;
    int64_t H = c->hidden, Hk = c->lin_k_heads, Hv = c->lin_v_heads, dk = c->lin_k_dim, dv = c->lin_v_dim;
    int64_t r = Hv / Hk, kd = Hk * dk, vd = Hv * dv, cd = 2 * kd + vd, Kc = c->conv_kernel;
    int rc;
    char *qkvz = fmt("%slinear_attn.in_proj_qkvz.weight", lp);
    bool grouped = !L->m->dummy && st_set_find(&L->m->st, qkvz);
    if (L->m->dummy) {
        dummy_entry(L, &ly->gdn_qkv, fmt("%slinear_attn.qkv", pp), cd, H, HS_BF16, K_PROJ);
        dummy_entry(L, &ly->gdn_z, fmt("%slinear_attn.z", pp), vd, H, HS_BF16, K_PROJ);
        dummy_entry(L, &ly->gdn_b, fmt("%slinear_attn.b", pp), Hv, H, HS_BF16, K_PROJ);
        dummy_entry(L, &ly->gdn_a, fmt("%slinear_attn.a", pp), Hv, H, HS_BF16, K_PROJ);
    } else if (grouped) {
        int64_t G = 2 * dk + 2 * r * dv;
        src_t s, sba;
        char *ba = fmt("%slinear_attn.in_proj_ba.weight", lp);
        rc = find_src(L, qkvz, 2, DIMS(Hk * G, H), M_W, &s);
        if (rc == HS_OK) rc = find_src(L, ba, 2, DIMS(2 * Hv, H), M_W, &sba);
        if (rc != HS_OK) {
            hs_free(qkvz);
            hs_free(ba);
            return rc;
        }
        seg_t *seg = hs_malloc((size_t)(3 * Hk + 2 * Hv) * sizeof *seg);
        int k = 0;
        for (int64_t g = 0; g < Hk; g++) seg[k++] = (seg_t){&s, g * G, dk};          /* q_g */
        for (int64_t g = 0; g < Hk; g++) seg[k++] = (seg_t){&s, g * G + dk, dk};     /* k_g */
        for (int64_t g = 0; g < Hk; g++) seg[k++] = (seg_t){&s, g * G + 2 * dk, r * dv}; /* v of heads g*r.. */
        gather(L, &ly->gdn_qkv, seg, k, H);
        record(L, &ly->gdn_qkv, fmt("%slinear_attn.qkv", pp), hs_strdup(qkvz),
               "de-interleaved from grouped qkvz: q,k,v rows (copy)", K_PROJ);
        k = 0;
        for (int64_t g = 0; g < Hk; g++) seg[k++] = (seg_t){&s, g * G + 2 * dk + r * dv, r * dv};
        gather(L, &ly->gdn_z, seg, k, H);
        record(L, &ly->gdn_z, fmt("%slinear_attn.z", pp), hs_strdup(qkvz), "de-interleaved from grouped qkvz: z rows (copy)",
               K_PROJ);
        k = 0;
        for (int64_t g = 0; g < Hk; g++) seg[k++] = (seg_t){&sba, g * 2 * r, r};
        gather(L, &ly->gdn_b, seg, k, H);
        record(L, &ly->gdn_b, fmt("%slinear_attn.b", pp), hs_strdup(ba), "de-interleaved from grouped ba: b rows (copy)",
               K_PROJ);
        L->m->used[st_set_index(&L->m->st, sba.t)] = L->m->n_map; /* ba -> b */
        k = 0;
        for (int64_t g = 0; g < Hk; g++) seg[k++] = (seg_t){&sba, g * 2 * r + r, r};
        gather(L, &ly->gdn_a, seg, k, H);
        record(L, &ly->gdn_a, fmt("%slinear_attn.a", pp), hs_strdup(ba), "de-interleaved from grouped ba: a rows (copy)",
               K_PROJ);
        hs_free(seg);
        hs_free(ba);
    } else {
        char *qkv = fmt("%slinear_attn.in_proj_qkv.weight", lp);
        if (!st_set_find(&L->m->st, qkv)) {
            rc = hs_errf(L->err, L->n, HS_ERR_NOT_FOUND, "missing tensor %s (nor grouped %s)", qkv, qkvz);
            hs_free(qkv);
            hs_free(qkvz);
            return rc;
        }
        rc = PARAM(L, &ly->gdn_qkv, fmt("%slinear_attn.qkv", pp), qkv, M_W, K_PROJ, cd, H);
        if (!rc) rc = PARAM(L, &ly->gdn_z, fmt("%slinear_attn.z", pp), fmt("%slinear_attn.in_proj_z.weight", lp), M_W,
                            K_PROJ, vd, H);
        if (!rc) rc = PARAM(L, &ly->gdn_b, fmt("%slinear_attn.b", pp), fmt("%slinear_attn.in_proj_b.weight", lp), M_W,
                            K_PROJ, Hv, H);
        if (!rc) rc = PARAM(L, &ly->gdn_a, fmt("%slinear_attn.a", pp), fmt("%slinear_attn.in_proj_a.weight", lp), M_W,
                            K_PROJ, Hv, H);
        if (rc) {
            hs_free(qkvz);
            return rc;
        }
    }
    hs_free(qkvz);
    if ((rc = PARAM(L, &ly->gdn_conv, fmt("%slinear_attn.conv1d", pp), fmt("%slinear_attn.conv1d.weight", lp), M_VEC,
                    K_CONV, cd, 1, Kc)))
        return rc;
    if ((rc = PARAM(L, &ly->gdn_A_log, fmt("%slinear_attn.A_log", pp), fmt("%slinear_attn.A_log", lp), M_VEC, K_ALOG,
                    Hv)))
        return rc;
    if ((rc = PARAM(L, &ly->gdn_dt_bias, fmt("%slinear_attn.dt_bias", pp), fmt("%slinear_attn.dt_bias", lp), M_VEC,
                    K_DTBIAS, Hv)))
        return rc;
    if ((rc = PARAM(L, &ly->gdn_norm, fmt("%slinear_attn.norm", pp), fmt("%slinear_attn.norm.weight", lp), M_VEC,
                    K_NORM1, dv)))
        return rc;
    return PARAM(L, &ly->gdn_out, fmt("%slinear_attn.out_proj", pp), fmt("%slinear_attn.out_proj.weight", lp), M_W,
                 K_PROJ, H, vd);
}

static int load_layer(ld_t *L, wt_layer_t *ly, const char *lp, const char *pp, bool attn, bool moe) {
    int64_t H = L->c->hidden;
    int rc;
    if ((rc = PARAM(L, &ly->in_norm, fmt("%sinput_layernorm", pp), fmt("%sinput_layernorm.weight", lp), M_VEC, K_NORM0,
                    H)))
        return rc;
    if ((rc = PARAM(L, &ly->post_norm, fmt("%spost_attention_layernorm", pp),
                    fmt("%spost_attention_layernorm.weight", lp), M_VEC, K_NORM0, H)))
        return rc;
    if ((rc = attn ? load_attn(L, ly, lp, pp) : load_gdn(L, ly, lp, pp))) return rc;
    return load_ffn(L, ly, lp, pp, moe);
}

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = (uintptr_t)(*(const wt_map_t *const *)a)->t, y = (uintptr_t)(*(const wt_map_t *const *)b)->t;
    return x < y ? -1 : x > y;
}

static int build(ld_t *L) {
    wt_model_t *m = L->m;
    const mcfg_t *c = L->c;
    int64_t H = c->hidden, V = c->vocab;
    const char *P = m->prefix;
    int rc;
    char lp[256], pp[64];
    if ((rc = PARAM(L, &m->embed, hs_strdup("embed"), fmt("%sembed_tokens.weight", P), M_W, K_EMBED, V, H))) return rc;
    if ((rc = PARAM(L, &m->final_norm, hs_strdup("final_norm"), fmt("%snorm.weight", P), M_VEC, K_NORM0, H))) return rc;
    m->n_layers = c->n_layers;
    m->layers = hs_calloc((size_t)c->n_layers, sizeof *m->layers);
    for (int i = 0; i < c->n_layers; i++) {
        snprintf(lp, sizeof lp, "%slayers.%d.", P, i);
        snprintf(pp, sizeof pp, "layers.%d.", i);
        if ((rc = load_layer(L, &m->layers[i], lp, pp, mcfg_is_attn(c, i), mcfg_layer_is_moe(c, i)))) return rc;
    }
    /* lm_head: the checkpoint's, or embed_tokens when tied */
    const char *lmh = NULL;
    if (!m->dummy) {
        static const char *const cands[] = {"lm_head.weight", "language_model.lm_head.weight"};
        for (int i = 0; i < 2 && !lmh; i++)
            if (st_set_find(&m->st, cands[i])) lmh = cands[i];
    }
    if (c->tie_embeddings) {
        m->tied = true;
        m->lm_head = m->embed;
        record(L, &m->lm_head, hs_strdup("lm_head"), fmt("%sembed_tokens.weight", P), "tied to embed (same data)",
               K_EMBED);
        m->map[m->n_map - 1].seed = hash_str(m->opts.seed, "embed");
    } else if (m->dummy) {
        if ((rc = PARAM(L, &m->lm_head, hs_strdup("lm_head"), hs_strdup("lm_head.weight"), M_W, K_PROJ, V, H))) return rc;
    } else if (!lmh) {
        return hs_errf(L->err, L->n, HS_ERR_NOT_FOUND,
                       "missing tensor lm_head.weight (config has tie_word_embeddings false)");
    } else if ((rc = PARAM(L, &m->lm_head, hs_strdup("lm_head"), hs_strdup(lmh), M_W, K_PROJ, V, H)))
        return rc;
    /* MTP: kept for later when the checkpoint has it (dummy: when the config says so) */
    bool has_mtp = m->dummy ? c->n_mtp_layers > 0 : st_set_find(&m->st, "mtp.fc.weight") != NULL;
    if (has_mtp) {
        m->n_mtp = 1;
        m->mtp = hs_calloc(1, sizeof *m->mtp);
        wt_mtp_t *t = m->mtp;
        if ((rc = PARAM(L, &t->fc, hs_strdup("mtp.fc"), hs_strdup("mtp.fc.weight"), M_W, K_PROJ, H, 2 * H))) return rc;
        if ((rc = PARAM(L, &t->pre_fc_norm_embedding, hs_strdup("mtp.pre_fc_norm_embedding"),
                        hs_strdup("mtp.pre_fc_norm_embedding.weight"), M_VEC, K_NORM0, H)))
            return rc;
        if ((rc = PARAM(L, &t->pre_fc_norm_hidden, hs_strdup("mtp.pre_fc_norm_hidden"),
                        hs_strdup("mtp.pre_fc_norm_hidden.weight"), M_VEC, K_NORM0, H)))
            return rc;
        if ((rc = PARAM(L, &t->norm, hs_strdup("mtp.norm"), hs_strdup("mtp.norm.weight"), M_VEC, K_NORM0, H))) return rc;
        if ((rc = load_layer(L, &t->layer, "mtp.layers.0.", "mtp.layers.0.", true, c->is_moe))) return rc;
        for (int i = 0; i < m->n_map; i++)
            if (!strncmp(m->map[i].param, "mtp.", 4)) m->map[i].note = m->dummy ? "mtp, generated" : "mtp, kept for later";
    }
    /* fetch index and byte count */
    m->by_ptr = hs_malloc((size_t)(m->n_map ? m->n_map : 1) * sizeof *m->by_ptr);
    m->bytes_params = 0;
    for (int i = 0; i < m->n_map; i++) {
        m->by_ptr[i] = &m->map[i];
        if (m->map[i].t != &m->lm_head || !m->tied) m->bytes_params += wt_bytes(m->map[i].t);
    }
    qsort(m->by_ptr, (size_t)m->n_map, sizeof *m->by_ptr, cmp_ptr);
    return HS_OK;
}

static void opts_init(wt_model_t *m, const mcfg_t *c, const wt_opts_t *o) {
    memset(m, 0, sizeof *m);
    if (o) m->opts = *o;
    if (!m->opts.seed) m->opts.seed = 1234;
    m->cfg = *c;
}

static const char *resolve_prefix(const st_set_t *s, const mcfg_t *c) {
    static const char *const next[] = {"model.", NULL};
    static const char *const q35[] = {"model.language_model.", "language_model.model.", "model.", NULL};
    const char *const *cands = c->family == MCFG_QWEN3_NEXT ? next : q35;
    char name[128];
    for (int i = 0; cands[i]; i++) {
        snprintf(name, sizeof name, "%sembed_tokens.weight", cands[i]);
        if (st_set_find(s, name)) return cands[i];
    }
    return cands[0];
}

static void touch_weights(wt_model_t *m);

int wt_load(const char *path, const mcfg_t *c, const wt_opts_t *opts, wt_model_t *m, char *err, size_t n) {
    opts_init(m, c, opts);
    double t0 = hs_now();
    char e1[1024];
    int rc = st_set_open(path, &m->st, e1, sizeof e1);
    if (rc != HS_OK) {
        hs_errf(err, n, rc, "%s", e1);
        wt_free(m);
        return rc;
    }
    m->used = hs_calloc((size_t)(m->st.n_tensors ? m->st.n_tensors : 1), sizeof(int));
    m->prefix = resolve_prefix(&m->st, c);
    ld_t L = {m, &m->cfg, err, n};
    rc = build(&L);
    if (rc != HS_OK) {
        wt_free(m);
        return rc;
    }
    if (m->opts.touch) touch_weights(m);
    if (!m->opts.quiet)
        hs_info("loaded %s: %d tensors in %d file(s), %.2f GiB of parameters in %.2f s", path, m->st.n_tensors,
                m->st.n_files, (double)m->bytes_params / (1 << 30), hs_now() - t0);
    return HS_OK;
}

int wt_load_dummy(const mcfg_t *c, const wt_opts_t *opts, wt_model_t *m, char *err, size_t n) {
    opts_init(m, c, opts);
    m->dummy = true;
    m->prefix = "";
    ld_t L = {m, &m->cfg, err, n};
    int rc = build(&L);
    if (rc != HS_OK) wt_free(m);
    return rc;
}

void wt_free(wt_model_t *m) {
    if (!m) return;
    for (int i = 0; i < m->n_layers; i++) {
        hs_free(m->layers[i].experts_gate_up);
        hs_free(m->layers[i].experts_down);
    }
    hs_free(m->layers);
    if (m->mtp) {
        hs_free(m->mtp->layer.experts_gate_up);
        hs_free(m->mtp->layer.experts_down);
    }
    hs_free(m->mtp);
    for (int i = 0; i < m->n_map; i++) {
        hs_free(m->map[i].param);
        hs_free(m->map[i].source);
    }
    hs_free(m->map);
    hs_free(m->by_ptr);
    for (int i = 0; i < m->n_owned; i++) hs_free(m->owned[i]);
    hs_free(m->owned);
    hs_free(m->scratch);
    hs_free(m->pool);
    hs_free(m->used);
    st_set_close(&m->st);
    memset(m, 0, sizeof *m);
}

int wt_load_format_parse(const char *s, wt_load_format_t *out) {
    if (!strcmp(s, "auto") || !strcmp(s, "safetensors")) *out = WT_LOAD_AUTO;
    else if (!strcmp(s, "dummy")) *out = WT_LOAD_DUMMY;
    else return HS_ERR_INVALID;
    return HS_OK;
}

const wt_map_t *wt_find_source(const wt_model_t *m, const char *tensor) {
    if (m->dummy) return NULL;
    const st_tensor_t *t = st_set_find(&m->st, tensor);
    if (!t) return NULL;
    int u = m->used[st_set_index(&m->st, t)];
    return u ? &m->map[u - 1] : NULL;
}

const char *wt_unused_reason(const char *t) {
    if (strstr(t, "visual.") == t || strstr(t, "model.visual.") == t) return "vision (ignored)";
    if (!strncmp(t, "mtp.", 4)) return "mtp (not loaded)";
    return "unused";
}

/* ---- touching real weights (page-in with progress) ---- */

static void progress(double t0, uint64_t done, uint64_t total, bool final) {
    double dt = hs_now() - t0;
    fprintf(stderr, "\rloading weights: %.2f / %.2f GiB  %.0f MB/s%s", (double)done / (1 << 30),
            (double)total / (1 << 30), dt > 0 ? (double)done / dt / 1e6 : 0.0, final ? "\n" : "");
}

static void touch_weights(wt_model_t *m) {
    bool tty = isatty(2);
    double t0 = hs_now(), last = t0;
    uint64_t total = 0, done = 0;
    for (int i = 0; i < m->st.n_tensors; i++)
        if (m->used[i]) total += st_tensor_bytes(m->st.sorted[i]);
    volatile uint8_t sink = 0;
    long page = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < m->st.n_tensors; i++) {
        if (!m->used[i]) continue;
        const st_tensor_t *t = m->st.sorted[i];
        uint64_t b = st_tensor_bytes(t);
        for (uint64_t o = 0; o < b; o += (uint64_t)page) {
            sink ^= t->data[o];
            if ((o & ((1u << 26) - 1)) == 0 && tty && hs_now() - last > 0.25) {
                last = hs_now();
                progress(t0, done + o, total, false);
            }
        }
        done += b;
    }
    (void)sink;
    if (tty) progress(t0, done, total, true);
    if (!m->opts.quiet)
        hs_info("read %.2f GiB of weights in %.2f s", (double)done / (1 << 30), hs_now() - t0);
}

/* ---- dummy generation ---- */

#define BLOCK (1 << 16)

static inline uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct {
    const wt_map_t *r;
    const bk_host_tensor_t *t;
    void *out;
    const uint16_t *pool;
    int64_t n_blocks, n_elem;
    int tid, n_threads;
} gen_job_t;

/* Projections and embeddings copy 64 Ki-element windows of a seeded pool of
 * normal-ish bf16 values at per-block random offsets: memcpy speed, rows distinct. */
#define POOL (1 << 24)

static void gen_block(const gen_job_t *j, int64_t blk) {
    uint64_t s = j->r->seed ^ ((uint64_t)blk * 0xd1b54a32d192ed03ull);
    splitmix(&s);
    int64_t i0 = blk * BLOCK, i1 = i0 + BLOCK < j->n_elem ? i0 + BLOCK : j->n_elem;
    int kind = j->r->kind;
    if ((kind == K_PROJ || kind == K_EMBED) && j->t->dtype == HS_BF16) {
        uint64_t off = splitmix(&s) % (uint64_t)(POOL - BLOCK);
        memcpy((uint16_t *)j->out + i0, j->pool + off, (size_t)(i1 - i0) * 2);
        return;
    }
    float kc = 1.0f / sqrtf((float)(j->t->cols > 0 ? j->t->cols : 1));
    for (int64_t i = i0; i < i1; i++) {
        float v;
        switch (kind) {
        case K_NORM0: v = 0.0f; break;
        case K_NORM1: v = 1.0f; break;
        case K_ALOG: v = logf(1.0f + 15.0f * (float)(splitmix(&s) >> 40) / (float)(1ull << 24)); break;
        case K_DTBIAS: v = 0.1f * ((float)(splitmix(&s) >> 40) / (float)(1ull << 24) * 2.0f - 1.0f); break;
        case K_CONV: v = kc * ((float)(splitmix(&s) >> 40) / (float)(1ull << 24) * 2.0f - 1.0f); break;
        default: v = hs_bf16_to_f32(j->pool[splitmix(&s) % POOL]);
        }
        if (j->t->dtype == HS_F32) ((float *)j->out)[i] = v;
        else ((uint16_t *)j->out)[i] = hs_f32_to_bf16(v);
    }
}

/* The pool: Irwin-Hall(4) sums of 16-bit uniforms (mean 2, var 1/3), scaled to std 0.02. */
static uint16_t *make_pool(uint64_t seed) {
    uint16_t *p = hs_malloc((size_t)POOL * sizeof *p);
    uint64_t s = seed ^ 0x5851f42d4c957f2dull;
    for (int64_t i = 0; i < POOL; i++) {
        uint64_t x = splitmix(&s);
        float u = (float)(x & 0xffff) + (float)((x >> 16) & 0xffff) + (float)((x >> 32) & 0xffff) + (float)(x >> 48);
        p[i] = hs_f32_to_bf16(0.02f * (u / 65536.0f - 2.0f) * 1.7320508f);
    }
    return p;
}

static void *gen_thread(void *arg) {
    const gen_job_t *j = arg;
    for (int64_t b = j->tid; b < j->n_blocks; b += j->n_threads) gen_block(j, b);
    return NULL;
}

const bk_host_tensor_t *wt_fetch(wt_model_t *m, const bk_host_tensor_t *t) {
    if (!m->dummy) return t;
    int lo = 0, hi = m->n_map - 1;
    const wt_map_t *r = NULL;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        uintptr_t p = (uintptr_t)m->by_ptr[mid]->t;
        if (p == (uintptr_t)t) { r = m->by_ptr[mid]; break; }
        if (p < (uintptr_t)t) lo = mid + 1;
        else hi = mid - 1;
    }
    assert(r && "wt_fetch: entry is not a parameter of this model");
    size_t bytes = (size_t)wt_bytes(t);
    if (bytes > m->scratch_bytes) {
        hs_free(m->scratch);
        m->scratch = hs_malloc(bytes);
        m->scratch_bytes = bytes;
    }
    int64_t n_elem = t->rows * t->cols, n_blocks = (n_elem + BLOCK - 1) / BLOCK;
    int nt = m->opts.n_threads > 0 ? m->opts.n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (nt > 64) nt = 64;
    if (nt > n_blocks / 16) nt = (int)(n_blocks / 16); /* >= 1 Mi elements per thread */
    if (nt < 1) nt = 1;
    gen_job_t jobs[64];
    pthread_t th[64];
    if (!m->pool) m->pool = make_pool(m->opts.seed);
    for (int i = 0; i < nt; i++) jobs[i] = (gen_job_t){r, t, m->scratch, m->pool, n_blocks, n_elem, i, nt};
    int started = 0;
    for (int i = 1; i < nt; i++)
        if (pthread_create(&th[i], NULL, gen_thread, &jobs[i]) == 0) started = i;
        else break;
    /* any thread that failed to start: run its share here */
    for (int i = started + 1; i < nt; i++) gen_thread(&jobs[i]);
    gen_thread(&jobs[0]);
    for (int i = 1; i <= started; i++) pthread_join(th[i], NULL);
    m->fetched = *t;
    m->fetched.data = m->scratch;
    return &m->fetched;
}

uint64_t wt_touch_all(wt_model_t *m) {
    uint64_t total = 0;
    if (!m->dummy) {
        bool q = m->opts.quiet;
        m->opts.quiet = true;
        touch_weights(m);
        m->opts.quiet = q;
        return m->st.total_bytes;
    }
    bool tty = isatty(2);
    double t0 = hs_now(), last = t0;
    for (int i = 0; i < m->n_map; i++) {
        if (m->tied && m->map[i].t == &m->lm_head) continue;
        wt_fetch(m, m->map[i].t);
        total += wt_bytes(m->map[i].t);
        if (tty && hs_now() - last > 0.25) {
            last = hs_now();
            progress(t0, total, m->bytes_params, false);
        }
    }
    if (tty) progress(t0, total, m->bytes_params, true);
    return total;
}
