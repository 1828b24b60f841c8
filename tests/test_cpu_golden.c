/*
 * Golden check of the CPU backend's op table against Hugging Face: a minimal,
 * test-only forward pass (embed -> [norm -> GDN | gated attention -> add -> norm ->
 * SwiGLU | MoE -> add] x L -> norm -> logits) built from backend ops only, run on
 * the fixtures of tools/gen_golden.py (tests/fixtures/golden/<family>/), compared
 * with HF's float32 top-5 log-probabilities at every prompt position and with HF's
 * 16 greedy tokens (decode steps, T = 1, through the paged KV cache and state).
 *
 * This is NOT the engine's model code (that lives in src/ model/engine modules); it
 * is the smallest driver that proves the ops compose to HF's numbers. It has its
 * own tiny safetensors reader (8-byte LE header length, JSON header {name: {dtype,
 * shape, data_offsets}}, then the data) and does the checkpoint-layout fixes the
 * loader will do: strip "model." / "model.language_model.", regroup Qwen3-Next's
 * in_proj_qkvz / in_proj_ba (per key head) into [q|k|v], z, b, a, concatenate
 * gate/up rows (gate first), split fused 3-D experts.
 *
 * Checks (the golden criteria): for each of HF's top-5 tokens, |our
 * logprob - HF's| < 1e-4; greedy tokens identical up to the first step whose HF
 * top1-top2 margin is below 1e-3. KV and state are fp32 (HF runs fp32).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/cpu/cpu_int.h"
#include "cpu_testlib.h"

#define GDIR "tests/fixtures/golden/"
#define MAXL 16

/* ---- safetensors (test-only reader) ---- */
typedef struct {
    char *buf;      /* whole file */
    size_t len;
    json_t *hdr;    /* header object */
    size_t data_off;
} st_t;

static int st_open(st_t *s, const char *path) {
    char err[256];
    s->buf = hs_read_file(path, &s->len, err, sizeof err);
    if (!s->buf) return -1;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | (unsigned char)s->buf[i];
    json_error_t je;
    s->hdr = json_loadb(s->buf + 8, (size_t)n, 0, &je);
    s->data_off = 8 + (size_t)n;
    return s->hdr ? 0 : -1;
}
static void st_close(st_t *s) {
    json_decref(s->hdr);
    free(s->buf);
}
/* Tensor `name` as a new fp32 array; *numel gets the element count; shape into dims. */
static float *st_get(st_t *s, const char *name, int64_t *numel, int64_t dims[4], int *ndim) {
    json_t *t = json_object_get(s->hdr, name);
    if (!t) return NULL;
    const char *dt = json_string_value(json_object_get(t, "dtype"));
    json_t *shape = json_object_get(t, "shape"), *off = json_object_get(t, "data_offsets");
    int64_t n = 1;
    *ndim = (int)json_array_size(shape);
    for (int i = 0; i < *ndim; i++) n *= (dims[i] = json_integer_value(json_array_get(shape, i)));
    const char *p = s->buf + s->data_off + json_integer_value(json_array_get(off, 0));
    float *out = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        if (!strcmp(dt, "F32")) memcpy(&out[i], p + 4 * i, 4);
        else if (!strcmp(dt, "BF16")) memcpy(&h, p + 2 * i, 2), out[i] = hs_bf16_to_f32(h);
        else if (!strcmp(dt, "F16")) memcpy(&h, p + 2 * i, 2), out[i] = hs_f16_to_f32(h);
        else assert_true(0 && "unexpected dtype");
    }
    *numel = n;
    return out;
}

/* ---- the tiny model ---- */
typedef struct {
    int H, L, Hq, Hkv, D, R, Hk, Hv, dk, dv, Kc, V, I, E, topk, Imoe, Ish;
    bool tied, moe, next, norm_topk;
    double theta, eps;
    char prefix[64];
    unsigned char is_attn[MAXL];
} gcfg_t;

typedef struct {
    bk_weight_t *in_norm, *post_norm;
    bk_weight_t *qkv, *z, *b, *a, *conv, *A_log, *dt_bias, *gnorm, *out; /* GDN */
    bk_weight_t *q, *k, *v, *o, *qn, *kn;                                 /* attention */
    bk_weight_t *gu, *down;                                               /* dense */
    bk_weight_t *router, **egu, **edown, *sgu, *sdown, *sgate;            /* MoE */
} glayer_t;

typedef struct {
    gcfg_t c;
    bk_weight_t *embed, *norm, *lm_head;
    glayer_t ly[MAXL];
} gmodel_t;

static int jint(json_t *o, const char *k, int def) {
    json_t *v = json_object_get(o, k);
    return v ? (int)json_integer_value(v) : def;
}

static void cfg_load(gcfg_t *c, const char *fam) {
    char path[256];
    snprintf(path, sizeof path, GDIR "%s/config.json", fam);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je), *t = json_object_get(root, "text_config");
    assert_non_null(root);
    json_t *tc = t ? t : root;
    memset(c, 0, sizeof *c);
    c->H = jint(tc, "hidden_size", 0), c->L = jint(tc, "num_hidden_layers", 0);
    c->Hq = jint(tc, "num_attention_heads", 0), c->Hkv = jint(tc, "num_key_value_heads", 0);
    c->D = jint(tc, "head_dim", 0), c->Hk = jint(tc, "linear_num_key_heads", 0);
    c->Hv = jint(tc, "linear_num_value_heads", 0), c->dk = jint(tc, "linear_key_head_dim", 0);
    c->dv = jint(tc, "linear_value_head_dim", 0), c->Kc = jint(tc, "linear_conv_kernel_dim", 4);
    c->V = jint(tc, "vocab_size", 0), c->I = jint(tc, "intermediate_size", 0);
    c->E = jint(tc, "num_experts", 0), c->topk = jint(tc, "num_experts_per_tok", 0);
    c->Imoe = jint(tc, "moe_intermediate_size", 0), c->Ish = jint(tc, "shared_expert_intermediate_size", 0);
    c->moe = c->E > 0;
    json_t *nt = json_object_get(tc, "norm_topk_prob");
    c->norm_topk = nt ? json_is_true(nt) : true;
    json_t *tie = json_object_get(root, "tie_word_embeddings");
    c->tied = tie && json_is_true(tie);
    json_t *rp = json_object_get(tc, "rope_parameters");
    c->theta = json_number_value(json_object_get(rp, "rope_theta"));
    c->R = (int)(c->D * json_number_value(json_object_get(rp, "partial_rotary_factor")));
    c->eps = json_number_value(json_object_get(tc, "rms_norm_eps"));
    c->next = !strcmp(json_string_value(json_object_get(root, "model_type")), "qwen3_next");
    snprintf(c->prefix, sizeof c->prefix, "%s", t ? "model.language_model." : "model.");
    json_t *lt = json_object_get(tc, "layer_types");
    assert_true(c->L <= MAXL && (int)json_array_size(lt) == c->L);
    for (int i = 0; i < c->L; i++) c->is_attn[i] = !strcmp(json_string_value(json_array_get(lt, i)), "full_attention");
    json_decref(root);
}

static float *get(st_t *s, const gcfg_t *c, const char *fmt, int i, int64_t *n, int64_t *dims) {
    char name[200], full[300];
    int nd;
    snprintf(name, sizeof name, fmt, i);
    snprintf(full, sizeof full, "%s%s", c->prefix, name);
    float *p = st_get(s, full, n, dims, &nd);
    if (!p) p = st_get(s, name, n, dims, &nd); /* lm_head lives outside the prefix */
    if (!p) fprintf(stderr, "missing tensor %s\n", full);
    assert_non_null(p);
    return p;
}

static bk_weight_t *wl(backend_t *bk, float *x, int64_t rows, int64_t cols) {
    bk_weight_t *w = tw_load(bk, x, rows, cols);
    assert_non_null(w);
    return w;
}
static bk_weight_t *load(backend_t *bk, st_t *s, const gcfg_t *c, const char *fmt, int i) {
    int64_t n, d[4] = {0};
    float *p = get(s, c, fmt, i, &n, d);
    bk_weight_t *w = wl(bk, p, d[1] && n / d[0] > 1 ? d[0] : 1, d[1] && n / d[0] > 1 ? n / d[0] : n);
    free(p);
    return w;
}
/* [A rows ; B rows] of two [r, cols] tensors. */
static bk_weight_t *load_cat(backend_t *bk, st_t *s, const gcfg_t *c, const char *fa, const char *fb, int i) {
    int64_t na, nb, da[4], db[4];
    float *a = get(s, c, fa, i, &na, da), *b = get(s, c, fb, i, &nb, db);
    float *ab = malloc(sizeof(float) * (size_t)(na + nb));
    memcpy(ab, a, sizeof(float) * na), memcpy(ab + na, b, sizeof(float) * nb);
    bk_weight_t *w = wl(bk, ab, da[0] + db[0], da[1]);
    free(a), free(b), free(ab);
    return w;
}

static void model_load(gmodel_t *m, backend_t *bk, const char *fam) {
    gcfg_t *c = &m->c;
    cfg_load(c, fam);
    char path[256];
    snprintf(path, sizeof path, GDIR "%s/model.safetensors", fam);
    st_t s;
    assert_int_equal(st_open(&s, path), 0);
    m->embed = load(bk, &s, c, "embed_tokens.weight", 0);
    m->norm = load(bk, &s, c, "norm.weight", 0);
    m->lm_head = c->tied ? m->embed : load(bk, &s, c, "lm_head.weight", 0);
    int r = c->Hv / c->Hk, kd = c->Hk * c->dk, vd = c->Hv * c->dv, H = c->H;
    for (int i = 0; i < c->L; i++) {
        glayer_t *l = &m->ly[i];
        l->in_norm = load(bk, &s, c, "layers.%d.input_layernorm.weight", i);
        l->post_norm = load(bk, &s, c, "layers.%d.post_attention_layernorm.weight", i);
        if (c->is_attn[i]) {
            l->q = load(bk, &s, c, "layers.%d.self_attn.q_proj.weight", i);
            l->k = load(bk, &s, c, "layers.%d.self_attn.k_proj.weight", i);
            l->v = load(bk, &s, c, "layers.%d.self_attn.v_proj.weight", i);
            l->o = load(bk, &s, c, "layers.%d.self_attn.o_proj.weight", i);
            l->qn = load(bk, &s, c, "layers.%d.self_attn.q_norm.weight", i);
            l->kn = load(bk, &s, c, "layers.%d.self_attn.k_norm.weight", i);
        } else {
            if (c->next) { /* regroup per-key-head blocks (model-spec §2.5.1) */
                int64_t n, d[4];
                float *qkvz = get(&s, c, "layers.%d.linear_attn.in_proj_qkvz.weight", i, &n, d);
                float *ba = get(&s, c, "layers.%d.linear_attn.in_proj_ba.weight", i, &n, d);
                float *qkv = malloc(sizeof(float) * (2 * kd + vd) * H), *z = malloc(sizeof(float) * vd * H);
                float *b = malloc(sizeof(float) * c->Hv * H), *a = malloc(sizeof(float) * c->Hv * H);
                int grp = 2 * c->dk + 2 * r * c->dv;
                for (int g = 0; g < c->Hk; g++) {
                    const float *blk = qkvz + (size_t)g * grp * H;
                    memcpy(qkv + (size_t)g * c->dk * H, blk, sizeof(float) * c->dk * H);
                    memcpy(qkv + (size_t)(kd + g * c->dk) * H, blk + (size_t)c->dk * H, sizeof(float) * c->dk * H);
                    memcpy(qkv + (size_t)(2 * kd + g * r * c->dv) * H, blk + (size_t)2 * c->dk * H,
                           sizeof(float) * r * c->dv * H);
                    memcpy(z + (size_t)g * r * c->dv * H, blk + (size_t)(2 * c->dk + r * c->dv) * H,
                           sizeof(float) * r * c->dv * H);
                    memcpy(b + (size_t)g * r * H, ba + (size_t)g * 2 * r * H, sizeof(float) * r * H);
                    memcpy(a + (size_t)g * r * H, ba + (size_t)(g * 2 * r + r) * H, sizeof(float) * r * H);
                }
                l->qkv = wl(bk, qkv, 2 * kd + vd, H), l->z = wl(bk, z, vd, H);
                l->b = wl(bk, b, c->Hv, H), l->a = wl(bk, a, c->Hv, H);
                free(qkvz), free(ba), free(qkv), free(z), free(b), free(a);
            } else {
                l->qkv = load(bk, &s, c, "layers.%d.linear_attn.in_proj_qkv.weight", i);
                l->z = load(bk, &s, c, "layers.%d.linear_attn.in_proj_z.weight", i);
                l->b = load(bk, &s, c, "layers.%d.linear_attn.in_proj_b.weight", i);
                l->a = load(bk, &s, c, "layers.%d.linear_attn.in_proj_a.weight", i);
            }
            int64_t n, d[4];
            float *cw = get(&s, c, "layers.%d.linear_attn.conv1d.weight", i, &n, d); /* [conv_dim, 1, Kc] */
            l->conv = wl(bk, cw, d[0], d[2]);
            free(cw);
            l->A_log = load(bk, &s, c, "layers.%d.linear_attn.A_log", i);
            l->dt_bias = load(bk, &s, c, "layers.%d.linear_attn.dt_bias", i);
            l->gnorm = load(bk, &s, c, "layers.%d.linear_attn.norm.weight", i);
            l->out = load(bk, &s, c, "layers.%d.linear_attn.out_proj.weight", i);
        }
        if (c->moe) {
            l->router = load(bk, &s, c, "layers.%d.mlp.gate.weight", i);
            l->egu = calloc((size_t)c->E, sizeof(bk_weight_t *));
            l->edown = calloc((size_t)c->E, sizeof(bk_weight_t *));
            char nm[200];
            snprintf(nm, sizeof nm, "%slayers.%d.mlp.experts.gate_up_proj", c->prefix, i);
            if (json_object_get(s.hdr, nm)) { /* fused 3-D [E, 2I, H] and [E, H, I] */
                int64_t n, d[4];
                float *gu = get(&s, c, "layers.%d.mlp.experts.gate_up_proj", i, &n, d);
                float *dn = get(&s, c, "layers.%d.mlp.experts.down_proj", i, &n, d);
                for (int e = 0; e < c->E; e++) {
                    l->egu[e] = wl(bk, gu + (size_t)e * 2 * c->Imoe * H, 2 * c->Imoe, H);
                    l->edown[e] = wl(bk, dn + (size_t)e * H * c->Imoe, H, c->Imoe);
                }
                free(gu), free(dn);
            } else {
                for (int e = 0; e < c->E; e++) {
                    char fg[120], fu[120], fd[120];
                    snprintf(fg, sizeof fg, "layers.%%d.mlp.experts.%d.gate_proj.weight", e);
                    snprintf(fu, sizeof fu, "layers.%%d.mlp.experts.%d.up_proj.weight", e);
                    snprintf(fd, sizeof fd, "layers.%%d.mlp.experts.%d.down_proj.weight", e);
                    l->egu[e] = load_cat(bk, &s, c, fg, fu, i);
                    l->edown[e] = load(bk, &s, c, fd, i);
                }
            }
            l->sgu = load_cat(bk, &s, c, "layers.%d.mlp.shared_expert.gate_proj.weight",
                              "layers.%d.mlp.shared_expert.up_proj.weight", i);
            l->sdown = load(bk, &s, c, "layers.%d.mlp.shared_expert.down_proj.weight", i);
            l->sgate = load(bk, &s, c, "layers.%d.mlp.shared_expert_gate.weight", i);
        } else {
            l->gu = load_cat(bk, &s, c, "layers.%d.mlp.gate_proj.weight", "layers.%d.mlp.up_proj.weight", i);
            l->down = load(bk, &s, c, "layers.%d.mlp.down_proj.weight", i);
        }
    }
    st_close(&s);
}

static void model_free(gmodel_t *m, backend_t *bk) {
    const gcfg_t *c = &m->c;
    bk->weight_free(bk, m->embed), bk->weight_free(bk, m->norm);
    if (!c->tied) bk->weight_free(bk, m->lm_head);
    for (int i = 0; i < c->L; i++) {
        glayer_t *l = &m->ly[i];
        bk_weight_t *ws[] = {l->in_norm, l->post_norm, l->qkv, l->z, l->b, l->a, l->conv, l->A_log, l->dt_bias,
                             l->gnorm, l->out, l->q, l->k, l->v, l->o, l->qn, l->kn, l->gu, l->down, l->router,
                             l->sgu, l->sdown, l->sgate};
        for (size_t j = 0; j < sizeof ws / sizeof ws[0]; j++)
            if (ws[j]) bk->weight_free(bk, ws[j]);
        if (l->egu) {
            for (int e = 0; e < c->E; e++) bk->weight_free(bk, l->egu[e]), bk->weight_free(bk, l->edown[e]);
            free(l->egu), free(l->edown);
        }
    }
}

/* One step of one sequence: T tokens at n_past; logits [T, V] for every row. */
static void forward(backend_t *bk, gmodel_t *m, tpool_t *tp, int32_t *pages, int E, int32_t *bt, int maxb,
                    const int32_t *ids, int T, int n_past, float *logits) {
    const gcfg_t *c = &m->c;
    int H = c->H, kd = c->Hk * c->dk, vd = c->Hv * c->dv, cd = 2 * kd + vd;
    int32_t ts[2] = {0, T}, np[1] = {n_past}, *pos = malloc(sizeof(int32_t) * T), *rows = malloc(sizeof(int32_t) * T);
    for (int t = 0; t < T; t++) pos[t] = n_past + t, rows[t] = t;
    bk_batch_t b = {.n_seqs = 1, .n_tokens = T, .tok_start = ts, .n_past = np, .positions = pos,
                    .block_tables = bt, .max_blocks = maxb, .state_pages = pages, .n_state_pages = E,
                    .logit_rows = rows, .n_logits = T};
    bk->set_batch(bk, &b, &tp->pool);
    int wmax = cd > 2 * c->Hq * c->D ? cd : 2 * c->Hq * c->D;
    if (2 * c->I > wmax) wmax = 2 * c->I;
    const int attn_in = 2 * c->Hq * c->D + 2 * c->Hkv * c->D, gdn_in = cd + vd + 2 * c->Hv;
    float *in = malloc(sizeof(float) * T * (attn_in > gdn_in ? attn_in : gdn_in)); /* packed mixer input */
    float *x = malloc(sizeof(float) * T * H), *h = malloc(sizeof(float) * T * H), *y = malloc(sizeof(float) * T * H);
    float *w1 = malloc(sizeof(float) * T * wmax), *w2 = malloc(sizeof(float) * T * wmax);
    float *w4 = malloc(sizeof(float) * T * wmax), *w5 = malloc(sizeof(float) * T * wmax);
    bk->embed(bk, m->embed, ids, T, x);
    int ia = 0, ig = 0;
    for (int i = 0; i < c->L; i++) {
        glayer_t *l = &m->ly[i];
        bk->rmsnorm(bk, x, NULL, l->in_norm, (float)c->eps, true, T, H, h);
        if (c->is_attn[i]) {
            const bk_weight_t *w[3] = {l->q, l->k, l->v}; /* the mixer's input rows [qg | k | v] */
            bk->linear_n(bk, h, 3, w, T, in);
            bk->attention(bk, ia++, in, l->qn, l->kn, c->Hq, c->Hkv, c->D, c->R, (float)c->theta, (float)c->eps, w4);
            bk->linear(bk, w4, l->o, T, y);
        } else {
            const bk_weight_t *w[4] = {l->qkv, l->z, l->b, l->a}; /* [qkv | z | b | a] */
            bk->linear_n(bk, h, 4, w, T, in);
            bk->gdn(bk, ig++, in, l->conv, l->A_log, l->dt_bias, l->gnorm, c->Hk, c->Hv, c->dk, c->dv, c->Kc,
                    (float)c->eps, w5);
            bk->linear(bk, w5, l->out, T, y);
        }
        bk->add(bk, x, y, T, H);
        bk->rmsnorm(bk, x, NULL, l->post_norm, (float)c->eps, true, T, H, h);
        if (c->moe) {
            bk->moe(bk, h, l->router, l->egu, l->edown, c->E, c->topk, c->norm_topk, c->Imoe, l->sgu, l->sdown, l->sgate,
                    c->Ish, T, H, y);
        } else {
            bk->linear(bk, h, l->gu, T, w1);
            bk->swiglu(bk, w1, T, c->I, w2);
            bk->linear(bk, w2, l->down, T, y);
        }
        bk->add(bk, x, y, T, H);
    }
    bk->rmsnorm(bk, x, NULL, m->norm, (float)c->eps, true, T, H, h);
    bk->gather_rows(bk, h, H, y);
    bk->logits(bk, y, m->lm_head, T, logits);
    free(pos), free(rows), free(x), free(h), free(y), free(w1), free(w2), free(w4), free(w5), free(in);
}

static void logsoftmax(const float *l, int V, double *out) {
    double mx = -1e300, s = 0;
    for (int v = 0; v < V; v++) mx = fmax(mx, l[v]);
    for (int v = 0; v < V; v++) s += exp(l[v] - mx);
    for (int v = 0; v < V; v++) out[v] = l[v] - mx - log(s);
}

/* Worst |ours - HF| over HF's top-5 of one position. */
static double cmp_top5(json_t *top5, const double *lp) {
    double worst = 0;
    for (size_t k = 0; k < json_array_size(top5); k++) {
        json_t *e = json_array_get(top5, k);
        int tok = (int)json_integer_value(json_object_get(e, "token"));
        worst = fmax(worst, fabs(lp[tok] - json_number_value(json_object_get(e, "logprob"))));
    }
    return worst;
}

static void run_family(backend_t *bk, const char *fam) {
    gmodel_t m;
    memset(&m, 0, sizeof m);
    model_load(&m, bk, fam);
    const gcfg_t *c = &m.c;
    char path[256];
    snprintf(path, sizeof path, GDIR "%s/golden.json", fam);
    json_error_t je;
    json_t *g = json_load_file(path, 0, &je);
    assert_non_null(g);
    int n_attn = 0, n_gdn = 0;
    for (int i = 0; i < c->L; i++) c->is_attn[i] ? n_attn++ : n_gdn++;
    int cd = 2 * c->Hk * c->dk + c->Hv * c->dv, V = c->V;
    enum { BS = 16, MAXB = 10 };
    json_t *cases = json_object_get(g, "cases");
    double worst_p = 0, worst_g = 0;
    int n_tok_checked = 0;
    for (size_t ci = 0; ci < json_array_size(cases); ci++) {
        json_t *cs = json_array_get(cases, ci);
        json_t *pids = json_object_get(cs, "prompt_ids"), *gen = json_object_get(cs, "generated");
        json_t *ptop = json_object_get(cs, "prompt_top5"), *gtop = json_object_get(cs, "gen_top5");
        json_t *gmar = json_object_get(cs, "gen_margin");
        int L = (int)json_array_size(pids), NG = (int)json_array_size(gen);
        tpool_t tp;
        size_t slice = (size_t)c->dv * c->dk * 4, convb = (size_t)(c->Kc - 1) * cd * 4;
        tpool_init(&tp, bk, 2 * MAXB + 8, n_attn, c->Hkv, c->D, BS, HS_F32, n_gdn, c->Hv, c->dk, c->dv, cd,
                   c->Kc - 1, HS_F32, HS_F32, c->dv, (slice > convb ? slice : convb) + 64);
        int E = tp.pool.sm.n_pages;
        assert_true(E <= 8);
        int32_t bt[MAXB], pages[8];
        for (int j = 0; j < MAXB; j++) bt[j] = 2 * MAXB + 7 - 2 * j; /* descending, non-contiguous */
        for (int j = 0; j < E; j++) pages[j] = 1 + 2 * j;
        assert_true(L + NG <= BS * MAXB);
        int32_t *ids = malloc(sizeof(int32_t) * L);
        for (int t = 0; t < L; t++) ids[t] = (int32_t)json_integer_value(json_array_get(pids, t));
        float *logits = malloc(sizeof(float) * L * V);
        double *lp = malloc(sizeof(double) * V);
        forward(bk, &m, &tp, pages, E, bt, MAXB, ids, L, 0, logits);
        for (int t = 0; t < L; t++) {
            logsoftmax(logits + (size_t)t * V, V, lp);
            worst_p = fmax(worst_p, cmp_top5(json_array_get(ptop, t), lp));
        }
        if (getenv("GOLDEN_VERBOSE") && L > 64) { /* own sensitivity: one-shot vs token by token */
            tpool_t tp2;
            tpool_init(&tp2, bk, 2 * MAXB + 8, n_attn, c->Hkv, c->D, BS, HS_F32, n_gdn, c->Hv, c->dk, c->dv, cd,
                       c->Kc - 1, HS_F32, HS_F32, c->dv, (slice > convb ? slice : convb) + 64);
            float *l1 = malloc(sizeof(float) * V);
            double *a = malloc(sizeof(double) * V), worst = 0;
            for (int t = 0; t < L; t++) {
                forward(bk, &m, &tp2, pages, E, bt, MAXB, ids + t, 1, t, l1);
                logsoftmax(l1, V, a);
                logsoftmax(logits + (size_t)t * V, V, lp);
                for (int v = 0; v < V; v++) worst = fmax(worst, fabs(a[v] - lp[v]));
            }
            printf("    L=%d: own one-shot vs token-by-token max |dlogprob| %.2e\n", L, worst);
            free(l1), free(a);
            tpool_free(&tp2, bk);
        }
        /* greedy decode, T = 1 per step */
        logsoftmax(logits + (size_t)(L - 1) * V, V, lp);
        int n_past = L;
        for (int s = 0; s < NG; s++) {
            if (s > 0) {
                float *l1 = logits;
                int32_t tok = (int32_t)json_integer_value(json_array_get(gen, s - 1));
                forward(bk, &m, &tp, pages, E, bt, MAXB, &tok, 1, n_past++, l1);
                logsoftmax(l1, V, lp);
            }
            worst_g = fmax(worst_g, cmp_top5(json_array_get(gtop, s), lp));
            int best = 0;
            for (int v = 1; v < V; v++) best = lp[v] > lp[best] ? v : best;
            if (json_number_value(json_array_get(gmar, s)) < 1e-3) break; /* near-tie: stop comparing */
            assert_int_equal(best, (int)json_integer_value(json_array_get(gen, s)));
            n_tok_checked++;
        }
        if (getenv("GOLDEN_VERBOSE")) printf("    L=%d: running worst prompt %.2e decode %.2e\n", L, worst_p, worst_g);
        free(ids), free(logits), free(lp);
        tpool_free(&tp, bk);
    }
    printf("  %-13s prompt top-5 max |dlogprob| %.2e, decode %.2e, greedy tokens matched: %d\n", fam, worst_p, worst_g,
           n_tok_checked);
    assert_true(worst_p < 1e-4 && worst_g < 1e-4);
    json_decref(g);
    model_free(&m, bk);
}

static void test_qwen3_5_text(void **state) { run_family(*state, "qwen3_5_text"); }
static void test_qwen3_5(void **state) { run_family(*state, "qwen3_5"); }
static void test_qwen3_5_moe(void **state) { run_family(*state, "qwen3_5_moe"); }
static void test_qwen3_next(void **state) { run_family(*state, "qwen3_next"); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_qwen3_5_text, cpu_setup, cpu_teardown),
        cmocka_unit_test_setup_teardown(test_qwen3_5, cpu_setup, cpu_teardown),
        cmocka_unit_test_setup_teardown(test_qwen3_5_moe, cpu_setup, cpu_teardown),
        cmocka_unit_test_setup_teardown(test_qwen3_next, cpu_setup, cpu_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
