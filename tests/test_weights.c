/* Unit tests for weights: tiny checkpoints of the three families written here
 * (H=32, 4 layers, Hk=2, Hv=4, dk=dv=8, D=16, V=64, MoE 4 experts top 2), mapped and
 * checked element-wise: the grouped qkvz/ba de-interleave against model-spec §2.5.1,
 * fused vs per-expert MoE, tied embeddings, FP8 block scales, sharded layouts, and
 * every mapping error naming the tensor, expected and actual. Also dummy weights. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "weights.h"

enum { H = 32, NL = 4, HQ = 2, HKV = 1, D = 16, HK = 2, HV = 4, DK = 8, DV = 8, KC = 4, V = 64 };
enum { E = 4, I_MOE = 8, I_SH = 8, I_DENSE = 16 };
enum { R = HV / HK, KD = HK * DK, VD = HV * DV, CD = 2 * KD + VD };

static char tmpdir[256];

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/hs_test_wt_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    if (getenv("HS_TEST_KEEP")) { /* keep the fixtures for `hyserve inspect` */
        fprintf(stderr, "fixtures kept in %s\n", tmpdir);
        return 0;
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- fixture builder ---- */

typedef enum { FAM_NEXT, FAM_35, FAM_35_MOE } fam_t;

typedef struct {
    fam_t fam;
    bool fused;          /* MoE experts as fused 3-D tensors */
    bool tied;
    bool mtp;
    bool vision;
    bool fp8;            /* attention q_proj and dense gate/up as F8_E4M3 + scales */
    int shards;          /* 0/1: one file */
    const char *prefix;  /* NULL: the family default */
    const char *skip;    /* leave this tensor out */
    const char *bad_shape; /* give this tensor one extra row */
    const char *bad_dtype; /* store this tensor as I32 */
    bool no_scale;       /* drop FP8 scale tensors */
    bool inter128;       /* dense intermediate_size 128 (FP8 blocks align) instead of 16 */
} fx_t;

static int64_t idense(const fx_t *fx) { return fx->inter128 ? 128 : I_DENSE; }

typedef struct {
    char name[256];
    hs_dtype_t dt;
    int rank;
    int64_t shape[3];
    void *data;
} tt_t;

static tt_t *T;
static int nT;

/* Value of element i of a logical tensor: exact in bf16 (k/64, |k| <= 125). */
static uint64_t key_of(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}
static float val(uint64_t key, int64_t i) { return (float)((int64_t)((key + (uint64_t)i * 2654435761u) % 251) - 125) / 64.0f; }

static void add_t(const fx_t *fx, const char *name, hs_dtype_t dt, int rank, int64_t d0, int64_t d1, int64_t d2,
                  float (*fn)(const char *, int64_t, void *), void *arg) {
    if (fx->skip && !strcmp(fx->skip, name)) return;
    tt_t *t = &T[nT++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dt = dt;
    t->rank = rank;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->shape[2] = d2;
    if (fx->bad_shape && !strcmp(fx->bad_shape, name)) t->shape[0]++;
    if (fx->bad_dtype && !strcmp(fx->bad_dtype, name)) t->dt = dt = HS_I32;
    int64_t n = 1;
    for (int i = 0; i < rank; i++) n *= t->shape[i];
    t->data = calloc((size_t)(n ? n : 1), hs_dtype_size(dt));
    for (int64_t i = 0; i < n; i++) {
        float f = fn(name, i, arg);
        if (dt == HS_BF16) ((uint16_t *)t->data)[i] = hs_f32_to_bf16(f);
        else if (dt == HS_F32) ((float *)t->data)[i] = f;
        else if (dt == HS_I32) ((int32_t *)t->data)[i] = (int32_t)i;
        else if (dt == HS_F8_E4M3) ((uint8_t *)t->data)[i] = (uint8_t)(0x38 + (i % 8)); /* 1.0 .. 1.875 */
    }
}

static float fn_plain(const char *name, int64_t i, void *arg) { (void)arg; return val(key_of(name), i); }
static float fn_scale(const char *name, int64_t i, void *arg) {
    (void)arg;
    return (strstr(name, "up_proj") ? 0.25f : 0.5f) + (float)i;
}

/* Fused experts: element (e, r, c) has the value of the per-expert logical tensor. */
typedef struct { const char *lp; int64_t I, rows, cols; int which; } fused_arg_t; /* which 0: gate_up, 1: down */
static float fn_fused(const char *name, int64_t i, void *arg) {
    (void)name;
    fused_arg_t *a = arg;
    int64_t per = a->rows * a->cols, e = i / per, rc = i % per, r = rc / a->cols, c = rc % a->cols;
    char ln[300];
    if (a->which == 0) {
        snprintf(ln, sizeof ln, "%smlp.experts.%lld.%s_proj.weight", a->lp, (long long)e, r < a->I ? "gate" : "up");
        return val(key_of(ln), (r % a->I) * a->cols + c);
    }
    snprintf(ln, sizeof ln, "%smlp.experts.%lld.down_proj.weight", a->lp, (long long)e);
    return val(key_of(ln), rc);
}

#define ADD2(name, r, c) add_t(fx, name, HS_BF16, 2, r, c, 0, fn_plain, NULL)
#define ADD1(name, n) add_t(fx, name, HS_BF16, 1, n, 0, 0, fn_plain, NULL)

static void add_w(const fx_t *fx, const char *name, int64_t r, int64_t c, bool fp8) {
    if (!fp8) { ADD2(name, r, c); return; }
    add_t(fx, name, HS_F8_E4M3, 2, r, c, 0, fn_plain, NULL);
    if (fx->no_scale) return;
    char sn[300];
    snprintf(sn, sizeof sn, "%s_scale_inv", name);
    add_t(fx, sn, HS_F32, 2, (r + 127) / 128, (c + 127) / 128, 0, fn_scale, NULL);
}

static void add_ffn(const fx_t *fx, const char *lp, bool moe) {
    char n[300];
    if (!moe) {
        snprintf(n, sizeof n, "%smlp.gate_proj.weight", lp); add_w(fx, n, idense(fx), H, fx->fp8);
        snprintf(n, sizeof n, "%smlp.up_proj.weight", lp); add_w(fx, n, idense(fx), H, fx->fp8);
        snprintf(n, sizeof n, "%smlp.down_proj.weight", lp); ADD2(n, H, idense(fx));
        return;
    }
    snprintf(n, sizeof n, "%smlp.gate.weight", lp); ADD2(n, E, H);
    if (fx->fused) {
        static fused_arg_t a0, a1; /* outlive the call (add_t is synchronous anyway) */
        a0 = (fused_arg_t){lp, I_MOE, 2 * I_MOE, H, 0};
        a1 = (fused_arg_t){lp, I_MOE, H, I_MOE, 1};
        snprintf(n, sizeof n, "%smlp.experts.gate_up_proj", lp);
        add_t(fx, n, HS_BF16, 3, E, 2 * I_MOE, H, fn_fused, &a0);
        snprintf(n, sizeof n, "%smlp.experts.down_proj", lp);
        add_t(fx, n, HS_BF16, 3, E, H, I_MOE, fn_fused, &a1);
    } else {
        for (int e = 0; e < E; e++) {
            snprintf(n, sizeof n, "%smlp.experts.%d.gate_proj.weight", lp, e); ADD2(n, I_MOE, H);
            snprintf(n, sizeof n, "%smlp.experts.%d.up_proj.weight", lp, e); ADD2(n, I_MOE, H);
            snprintf(n, sizeof n, "%smlp.experts.%d.down_proj.weight", lp, e); ADD2(n, H, I_MOE);
        }
    }
    snprintf(n, sizeof n, "%smlp.shared_expert.gate_proj.weight", lp); ADD2(n, I_SH, H);
    snprintf(n, sizeof n, "%smlp.shared_expert.up_proj.weight", lp); ADD2(n, I_SH, H);
    snprintf(n, sizeof n, "%smlp.shared_expert.down_proj.weight", lp); ADD2(n, H, I_SH);
    snprintf(n, sizeof n, "%smlp.shared_expert_gate.weight", lp); ADD2(n, 1, H);
}

static void add_attn(const fx_t *fx, const char *lp) {
    char n[300];
    snprintf(n, sizeof n, "%sself_attn.q_proj.weight", lp); add_w(fx, n, HQ * 2 * D, H, fx->fp8);
    snprintf(n, sizeof n, "%sself_attn.k_proj.weight", lp); ADD2(n, HKV * D, H);
    snprintf(n, sizeof n, "%sself_attn.v_proj.weight", lp); ADD2(n, HKV * D, H);
    snprintf(n, sizeof n, "%sself_attn.o_proj.weight", lp); ADD2(n, H, HQ * D);
    snprintf(n, sizeof n, "%sself_attn.q_norm.weight", lp); ADD1(n, D);
    snprintf(n, sizeof n, "%sself_attn.k_norm.weight", lp); ADD1(n, D);
}

static void add_layer(const fx_t *fx, const char *lp, bool attn, bool moe) {
    char n[300];
    snprintf(n, sizeof n, "%sinput_layernorm.weight", lp); ADD1(n, H);
    snprintf(n, sizeof n, "%spost_attention_layernorm.weight", lp); ADD1(n, H);
    if (attn) add_attn(fx, lp);
    else {
        if (fx->fam == FAM_NEXT) {
            snprintf(n, sizeof n, "%slinear_attn.in_proj_qkvz.weight", lp); ADD2(n, HK * (2 * DK + 2 * R * DV), H);
            snprintf(n, sizeof n, "%slinear_attn.in_proj_ba.weight", lp); ADD2(n, 2 * HV, H);
        } else {
            snprintf(n, sizeof n, "%slinear_attn.in_proj_qkv.weight", lp); ADD2(n, CD, H);
            snprintf(n, sizeof n, "%slinear_attn.in_proj_z.weight", lp); ADD2(n, VD, H);
            snprintf(n, sizeof n, "%slinear_attn.in_proj_b.weight", lp); ADD2(n, HV, H);
            snprintf(n, sizeof n, "%slinear_attn.in_proj_a.weight", lp); ADD2(n, HV, H);
        }
        snprintf(n, sizeof n, "%slinear_attn.conv1d.weight", lp); add_t(fx, n, HS_BF16, 3, CD, 1, KC, fn_plain, NULL);
        snprintf(n, sizeof n, "%slinear_attn.A_log", lp); add_t(fx, n, HS_F32, 1, HV, 0, 0, fn_plain, NULL);
        snprintf(n, sizeof n, "%slinear_attn.dt_bias", lp); ADD1(n, HV);
        snprintf(n, sizeof n, "%slinear_attn.norm.weight", lp); add_t(fx, n, HS_F32, 1, DV, 0, 0, fn_plain, NULL);
        snprintf(n, sizeof n, "%slinear_attn.out_proj.weight", lp); ADD2(n, H, VD);
    }
    add_ffn(fx, lp, moe);
}

static void write_config(const char *dir, const fx_t *fx) {
    char p[600];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    const char *text = "\"hidden_size\":32,\"num_hidden_layers\":4,\"num_attention_heads\":2,\"num_key_value_heads\":1,"
                       "\"head_dim\":16,\"linear_num_key_heads\":2,\"linear_num_value_heads\":4,"
                       "\"linear_key_head_dim\":8,\"linear_value_head_dim\":8,\"linear_conv_kernel_dim\":4,"
                       "\"vocab_size\":64,\"rope_theta\":1e7,\"partial_rotary_factor\":0.25,\"rms_norm_eps\":1e-6";
    const char *tied = fx->tied ? "true" : "false";
    if (fx->fam == FAM_NEXT)
        fprintf(f, "{\"model_type\":\"qwen3_next\",%s,\"intermediate_size\":16,\"num_experts\":4,"
                   "\"num_experts_per_tok\":2,\"moe_intermediate_size\":8,\"shared_expert_intermediate_size\":8,"
                   "\"norm_topk_prob\":true,\"tie_word_embeddings\":%s}", text, tied);
    else if (fx->fam == FAM_35)
        fprintf(f, "{\"model_type\":\"qwen3_5\",\"tie_word_embeddings\":%s,\"text_config\":{%s,"
                   "\"intermediate_size\":%d,\"model_type\":\"qwen3_5_text\"}}", tied, text, (int)idense(fx));
    else
        fprintf(f, "{\"model_type\":\"qwen3_5_moe\",\"tie_word_embeddings\":%s,\"text_config\":{%s,"
                   "\"num_experts\":4,\"num_experts_per_tok\":2,\"moe_intermediate_size\":8,"
                   "\"shared_expert_intermediate_size\":8}}", tied, text);
    fclose(f);
}

/* Build checkpoint `sub` under tmpdir; returns its directory (static buffer). */
static const char *build_fx(const char *sub, const fx_t *fx) {
    static char dir[400];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, sub);
    mkdir(dir, 0755);
    write_config(dir, fx);
    T = calloc(20000, sizeof *T);
    nT = 0;
    const char *P = fx->prefix ? fx->prefix : fx->fam == FAM_NEXT ? "model." : "model.language_model.";
    char n[300], lp[300];
    bool moe = fx->fam != FAM_35;
    snprintf(n, sizeof n, "%sembed_tokens.weight", P); ADD2(n, V, H);
    for (int i = 0; i < NL; i++) {
        snprintf(lp, sizeof lp, "%slayers.%d.", P, i);
        add_layer(fx, lp, i % 4 == 3, moe);
    }
    snprintf(n, sizeof n, "%snorm.weight", P); ADD1(n, H);
    if (!fx->tied) ADD2("lm_head.weight", V, H);
    if (fx->mtp) {
        ADD2("mtp.fc.weight", H, 2 * H);
        ADD1("mtp.pre_fc_norm_embedding.weight", H);
        ADD1("mtp.pre_fc_norm_hidden.weight", H);
        ADD1("mtp.norm.weight", H);
        add_layer(fx, "mtp.layers.0.", true, moe);
    }
    if (fx->vision) {
        ADD2("model.visual.blocks.0.attn.qkv.weight", 12, 8);
        ADD1("model.visual.merger.ln_q.weight", 8);
    }
    int ns = fx->shards > 1 ? fx->shards : 1;
    char err[256], p[600];
    FILE *idx = NULL;
    if (ns > 1) {
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
        idx = fopen(p, "w");
        fprintf(idx, "{\"metadata\":{},\"weight_map\":{");
    }
    for (int s = 0; s < ns; s++) {
        st_write_tensor_t *w = calloc((size_t)nT, sizeof *w);
        int k = 0;
        char fname[100];
        if (ns > 1) snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, ns);
        else snprintf(fname, sizeof fname, "model.safetensors");
        for (int i = s; i < nT; i += ns) {
            w[k] = (st_write_tensor_t){T[i].name, T[i].dt, T[i].rank, {T[i].shape[0], T[i].shape[1], T[i].shape[2]},
                                       T[i].data};
            k++;
            if (idx) fprintf(idx, "%s\"%s\":\"%s\"", (s == 0 && i == 0) ? "" : ",", T[i].name, fname);
        }
        snprintf(p, sizeof p, "%s/%s", dir, fname);
        assert_int_equal(st_write(p, w, k, NULL, err, sizeof err), HS_OK);
        free(w);
    }
    if (idx) {
        fprintf(idx, "}}");
        fclose(idx);
    }
    for (int i = 0; i < nT; i++) free(T[i].data);
    free(T);
    return dir;
}

static int load(const char *dir, wt_model_t *m, char *err, size_t n) {
    mcfg_t c;
    int rc = mcfg_load(dir, &c, err, n);
    if (rc != HS_OK) fail_msg("config: %s", err);
    wt_opts_t o = {.quiet = true};
    return wt_load(dir, &c, &o, m, err, n);
}

static void load_ok(const char *dir, wt_model_t *m) {
    char err[1024] = "";
    if (load(dir, m, err, sizeof err) != HS_OK) fail_msg("load %s: %s", dir, err);
}

static float h2f(const bk_host_tensor_t *t, int64_t r, int64_t c) {
    int64_t i = r * t->cols + c;
    if (t->dtype == HS_F32) return ((const float *)t->data)[i];
    assert_int_equal(t->dtype, HS_BF16);
    return hs_bf16_to_f32(((const uint16_t *)t->data)[i]);
}

static float src_at(const wt_model_t *m, const char *name, int64_t r, int64_t c, int64_t cols) {
    const st_tensor_t *t = st_set_find(&m->st, name);
    if (!t) fail_msg("no tensor %s", name);
    return hs_bf16_to_f32(((const uint16_t *)t->data)[r * cols + c]);
}

/* ---- tests ---- */

/* model-spec §2.5.1: per key head g, rows [q_g | k_g | v_g (r*dv) | z_g (r*dv)], and [b_g (r) | a_g (r)]. */
static void check_grouped(const wt_model_t *m, int layer) {
    const wt_layer_t *ly = &m->layers[layer];
    char qkvz[200], ba[200];
    snprintf(qkvz, sizeof qkvz, "model.layers.%d.linear_attn.in_proj_qkvz.weight", layer);
    snprintf(ba, sizeof ba, "model.layers.%d.linear_attn.in_proj_ba.weight", layer);
    const int G = 2 * DK + 2 * R * DV;
    assert_int_equal(ly->gdn_qkv.rows, CD);
    assert_int_equal(ly->gdn_qkv.cols, H);
    assert_int_equal(ly->gdn_z.rows, VD);
    assert_int_equal(ly->gdn_b.rows, HV);
    assert_int_equal(ly->gdn_a.rows, HV);
    for (int c = 0; c < H; c++) {
        for (int g = 0; g < HK; g++)
            for (int i = 0; i < DK; i++) {
                assert_true(h2f(&ly->gdn_qkv, g * DK + i, c) == src_at(m, qkvz, g * G + i, c, H));
                assert_true(h2f(&ly->gdn_qkv, KD + g * DK + i, c) == src_at(m, qkvz, g * G + DK + i, c, H));
            }
        for (int h = 0; h < HV; h++) {
            int g = h / R, j = h % R;
            for (int i = 0; i < DV; i++) {
                assert_true(h2f(&ly->gdn_qkv, 2 * KD + h * DV + i, c) == src_at(m, qkvz, g * G + 2 * DK + j * DV + i, c, H));
                assert_true(h2f(&ly->gdn_z, h * DV + i, c) == src_at(m, qkvz, g * G + 2 * DK + R * DV + j * DV + i, c, H));
            }
            assert_true(h2f(&ly->gdn_b, h, c) == src_at(m, ba, g * 2 * R + j, c, H));
            assert_true(h2f(&ly->gdn_a, h, c) == src_at(m, ba, g * 2 * R + R + j, c, H));
        }
    }
}

static void check_gate_up(const bk_host_tensor_t *t, uint64_t kg, uint64_t ku, int64_t I) {
    assert_int_equal(t->rows, 2 * I);
    assert_int_equal(t->cols, H);
    for (int64_t r = 0; r < 2 * I; r++)
        for (int64_t c = 0; c < H; c++)
            assert_true(h2f(t, r, c) == val(r < I ? kg : ku, (r % I) * H + c));
}

static void test_next_grouped(void **state) {
    (void)state;
    fx_t fx = {.fam = FAM_NEXT, .mtp = true};
    const char *dir = build_fx("next", &fx);
    wt_model_t m;
    load_ok(dir, &m);
    assert_string_equal(m.prefix, "model.");
    assert_int_equal(m.n_layers, NL);
    for (int l = 0; l < NL; l++) {
        if (l % 4 != 3) check_grouped(&m, l);
        else assert_int_equal(m.layers[l].q_proj.rows, HQ * 2 * D);
        assert_true(m.layers[l].is_moe);
        assert_int_equal(m.layers[l].n_experts, E);
        for (int e = 0; e < E; e++) {
            char g[200], u[200], dn[200];
            snprintf(g, sizeof g, "model.layers.%d.mlp.experts.%d.gate_proj.weight", l, e);
            snprintf(u, sizeof u, "model.layers.%d.mlp.experts.%d.up_proj.weight", l, e);
            snprintf(dn, sizeof dn, "model.layers.%d.mlp.experts.%d.down_proj.weight", l, e);
            check_gate_up(&m.layers[l].experts_gate_up[e], key_of(g), key_of(u), I_MOE);
            assert_ptr_equal(m.layers[l].experts_down[e].data, st_set_find(&m.st, dn)->data); /* a view */
        }
        assert_int_equal(m.layers[l].shared_gate_up.rows, 2 * I_SH);
        assert_int_equal(m.layers[l].shared_gate.rows, 1);
    }
    /* GDN vectors are [1, n] views */
    assert_int_equal(m.layers[0].gdn_A_log.dtype, HS_F32);
    assert_int_equal(m.layers[0].gdn_A_log.rows, 1);
    assert_int_equal(m.layers[0].gdn_A_log.cols, HV);
    assert_int_equal(m.layers[0].gdn_conv.rows, CD);
    assert_int_equal(m.layers[0].gdn_conv.cols, KC);
    assert_false(m.tied);
    assert_ptr_not_equal(m.lm_head.data, m.embed.data);
    /* MTP kept */
    assert_int_equal(m.n_mtp, 1);
    assert_int_equal(m.mtp->fc.cols, 2 * H);
    assert_true(m.mtp->layer.is_moe);
    assert_int_equal(m.mtp->layer.q_proj.rows, HQ * 2 * D);
    const wt_map_t *r = wt_find_source(&m, "mtp.fc.weight");
    assert_non_null(r);
    assert_string_equal(r->note, "mtp, kept for later");
    r = wt_find_source(&m, "model.layers.0.linear_attn.in_proj_qkvz.weight");
    assert_non_null(r);
    assert_non_null(strstr(r->note, "de-interleaved"));
    r = wt_find_source(&m, "model.layers.0.linear_attn.in_proj_ba.weight");
    assert_non_null(r);
    assert_string_equal(r->param, "layers.0.linear_attn.b");
    /* every tensor used */
    for (int i = 0; i < m.st.n_tensors; i++)
        if (!m.used[i]) fail_msg("unused: %s", m.st.sorted[i]->name);
    /* wt_fetch is the identity for real weights */
    assert_ptr_equal(wt_fetch(&m, &m.layers[0].gdn_qkv), &m.layers[0].gdn_qkv);
    wt_free(&m);
}

static void test_next_sharded(void **state) {
    (void)state;
    fx_t fx = {.fam = FAM_NEXT, .shards = 3};
    const char *dir = build_fx("next_sharded", &fx);
    wt_model_t m, m1;
    load_ok(dir, &m);
    assert_true(m.st.sharded);
    assert_int_equal(m.st.n_files, 3);
    fx_t f1 = {.fam = FAM_NEXT};
    load_ok(build_fx("next_single", &f1), &m1);
    assert_memory_equal(m.layers[1].gdn_qkv.data, m1.layers[1].gdn_qkv.data, (size_t)wt_bytes(&m.layers[1].gdn_qkv));
    assert_memory_equal(m.layers[3].q_proj.data, m1.layers[3].q_proj.data, (size_t)wt_bytes(&m.layers[3].q_proj));
    assert_int_equal(m.n_mtp, 0);
    wt_free(&m);
    wt_free(&m1);
}

static void test_q35_dense_tied(void **state) {
    (void)state;
    fx_t fx = {.fam = FAM_35, .tied = true, .vision = true, .mtp = true, .shards = 2};
    const char *dir = build_fx("q35", &fx);
    wt_model_t m;
    load_ok(dir, &m);
    assert_string_equal(m.prefix, "model.language_model.");
    assert_true(m.tied);
    assert_ptr_equal(m.lm_head.data, m.embed.data);
    assert_int_equal(m.lm_head.rows, V);
    const wt_layer_t *ly = &m.layers[0];
    assert_false(ly->is_moe);
    check_gate_up(&ly->gate_up, key_of("model.language_model.layers.0.mlp.gate_proj.weight"),
                  key_of("model.language_model.layers.0.mlp.up_proj.weight"), I_DENSE);
    assert_int_equal(ly->down.rows, H);
    assert_int_equal(ly->down.cols, I_DENSE);
    /* separate projections are views, in head order */
    assert_ptr_equal(ly->gdn_qkv.data, st_set_find(&m.st, "model.language_model.layers.0.linear_attn.in_proj_qkv.weight")->data);
    assert_ptr_equal(ly->gdn_a.data, st_set_find(&m.st, "model.language_model.layers.0.linear_attn.in_proj_a.weight")->data);
    assert_int_equal(m.n_mtp, 1);
    assert_false(m.mtp->layer.is_moe);
    /* vision tensors unused, with the reason */
    int unused = 0;
    for (int i = 0; i < m.st.n_tensors; i++)
        if (!m.used[i]) {
            unused++;
            assert_string_equal(wt_unused_reason(m.st.sorted[i]->name), "vision (ignored)");
        }
    assert_int_equal(unused, 2);
    wt_free(&m);
}

static void test_q35_prefix_variant(void **state) {
    (void)state;
    fx_t fx = {.fam = FAM_35, .tied = true, .prefix = "language_model.model."};
    wt_model_t m;
    load_ok(build_fx("q35_lm", &fx), &m);
    assert_string_equal(m.prefix, "language_model.model.");
    wt_free(&m);
}

static void test_moe_fused_vs_per_expert(void **state) {
    (void)state;
    fx_t a = {.fam = FAM_35_MOE, .fused = true}, b = {.fam = FAM_35_MOE, .fused = false};
    wt_model_t ma, mb;
    load_ok(build_fx("moe_fused", &a), &ma);
    load_ok(build_fx("moe_per", &b), &mb);
    for (int l = 0; l < NL; l++)
        for (int e = 0; e < E; e++) {
            const bk_host_tensor_t *x = &ma.layers[l].experts_gate_up[e], *y = &mb.layers[l].experts_gate_up[e];
            assert_int_equal(x->rows, 2 * I_MOE);
            assert_int_equal(y->rows, 2 * I_MOE);
            assert_int_equal(x->cols, H);
            assert_memory_equal(x->data, y->data, (size_t)wt_bytes(x));
            x = &ma.layers[l].experts_down[e];
            y = &mb.layers[l].experts_down[e];
            assert_int_equal(x->rows, H);
            assert_int_equal(x->cols, I_MOE);
            assert_memory_equal(x->data, y->data, (size_t)wt_bytes(x));
        }
    const wt_map_t *r = wt_find_source(&ma, "model.language_model.layers.2.mlp.experts.gate_up_proj");
    assert_non_null(r);
    assert_non_null(strstr(r->note, "view of fused"));
    r = wt_find_source(&ma, "model.language_model.layers.2.mlp.experts.down_proj");
    assert_non_null(r);
    assert_string_equal(r->param, "layers.2.mlp.experts.0.down");
    r = wt_find_source(&mb, "model.language_model.layers.2.mlp.experts.3.up_proj.weight");
    assert_non_null(r);
    assert_string_equal(r->param, "layers.2.mlp.experts.3.gate_up");
    wt_free(&ma);
    wt_free(&mb);
}

static void test_fp8(void **state) {
    (void)state;
    fx_t fx = {.fam = FAM_35, .tied = true, .fp8 = true};
    wt_model_t m;
    load_ok(build_fx("fp8", &fx), &m);
    const bk_host_tensor_t *q = &m.layers[3].q_proj;
    assert_int_equal(q->dtype, HS_F8_E4M3);
    assert_non_null(q->scale_inv);
    assert_true(q->scale_inv[0] == 0.5f);
    /* gate/up stacking of 16-row fp8 blocks is not 128-aligned: dequantised to bf16 */
    const bk_host_tensor_t *gu = &m.layers[0].gate_up;
    assert_int_equal(gu->dtype, HS_BF16);
    assert_null(gu->scale_inv);
    for (int64_t i = 0; i < 2 * I_DENSE * H; i++) {
        int64_t k = (i < I_DENSE * H ? i : i - I_DENSE * H) % 8;
        assert_true(h2f(gu, i / H, i % H) == (1.0f + (float)k / 8.0f) * (i < I_DENSE * H ? 0.5f : 0.25f));
    }
    assert_non_null(wt_find_source(&m, "model.language_model.layers.3.self_attn.q_proj.weight_scale_inv"));
    for (int i = 0; i < m.st.n_tensors; i++)
        if (!m.used[i]) fail_msg("unused: %s", m.st.sorted[i]->name);
    wt_free(&m);
    /* 128-row gate and up: the stack stays FP8, scale rows stacked the same way */
    fx.inter128 = true;
    load_ok(build_fx("fp8_128", &fx), &m);
    gu = &m.layers[1].gate_up;
    assert_int_equal(gu->dtype, HS_F8_E4M3);
    assert_int_equal(gu->rows, 256);
    assert_non_null(gu->scale_inv);
    assert_true(gu->scale_inv[0] == 0.5f && gu->scale_inv[1] == 0.25f);
    const st_tensor_t *g = st_set_find(&m.st, "model.language_model.layers.1.mlp.gate_proj.weight");
    const st_tensor_t *u = st_set_find(&m.st, "model.language_model.layers.1.mlp.up_proj.weight");
    assert_memory_equal(gu->data, g->data, 128 * H);
    assert_memory_equal((const uint8_t *)gu->data + 128 * H, u->data, 128 * H);
    wt_free(&m);
}

static void expect_err(const char *sub, const fx_t *fx, const char *w1, const char *w2, const char *w3) {
    wt_model_t m;
    char err[1024] = "";
    const char *dir = build_fx(sub, fx);
    int rc = load(dir, &m, err, sizeof err);
    if (rc == HS_OK) {
        wt_free(&m);
        fail_msg("%s: loaded", sub);
    }
    if (w1 && !strstr(err, w1)) fail_msg("%s: message '%s' lacks '%s'", sub, err, w1);
    if (w2 && !strstr(err, w2)) fail_msg("%s: message '%s' lacks '%s'", sub, err, w2);
    if (w3 && !strstr(err, w3)) fail_msg("%s: message '%s' lacks '%s'", sub, err, w3);
}

static void test_errors(void **state) {
    (void)state;
    fx_t fx = {.fam = FAM_NEXT, .skip = "model.layers.2.linear_attn.A_log"};
    expect_err("e_missing", &fx, "missing tensor model.layers.2.linear_attn.A_log", NULL, NULL);
    fx = (fx_t){.fam = FAM_NEXT, .bad_shape = "model.layers.1.linear_attn.in_proj_qkvz.weight"};
    expect_err("e_shape", &fx, "model.layers.1.linear_attn.in_proj_qkvz.weight", "expected shape [96, 32]", "got [97, 32]");
    fx = (fx_t){.fam = FAM_35, .tied = true, .bad_dtype = "model.language_model.layers.0.input_layernorm.weight"};
    expect_err("e_dtype", &fx, "model.language_model.layers.0.input_layernorm.weight", "expected dtype BF16, F16 or F32",
               "got I32");
    fx = (fx_t){.fam = FAM_35, .tied = true, .fp8 = true, .no_scale = true};
    expect_err("e_scale", &fx, "model.language_model.layers.0.mlp.gate_proj.weight", "block scales",
               "gate_proj.weight_scale_inv");
    fx = (fx_t){.fam = FAM_NEXT};
    fx.skip = "lm_head.weight";
    expect_err("e_lmhead", &fx, "missing tensor lm_head.weight", "tie_word_embeddings", NULL);
    fx = (fx_t){.fam = FAM_35_MOE, .fused = true, .skip = "model.language_model.layers.1.mlp.experts.down_proj"};
    expect_err("e_fused", &fx, "missing tensor model.language_model.layers.1.mlp.experts.down_proj", NULL, NULL);
    fx = (fx_t){.fam = FAM_35, .tied = true, .skip = "model.language_model.layers.0.linear_attn.in_proj_qkv.weight"};
    expect_err("e_qkv", &fx, "missing tensor model.language_model.layers.0.linear_attn.in_proj_qkv.weight", "in_proj_qkvz",
               NULL);
    fx = (fx_t){.fam = FAM_35_MOE, .bad_shape = "model.language_model.layers.0.mlp.experts.3.down_proj.weight"};
    expect_err("e_expert", &fx, "experts.3.down_proj.weight", "expected shape [32, 8]", "got [33, 8]");
    /* an index naming a missing shard */
    fx = (fx_t){.fam = FAM_NEXT, .shards = 2};
    const char *dir = build_fx("e_shard", &fx);
    char p[600];
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    assert_int_equal(remove(p), 0);
    wt_model_t m;
    char err[1024];
    assert_int_not_equal(load(dir, &m, err, sizeof err), HS_OK);
    assert_non_null(strstr(err, "model-00002-of-00002.safetensors"));
}

static void test_dummy(void **state) {
    (void)state;
    fx_t fx = {.fam = FAM_NEXT};
    const char *dir = build_fx("dummy_cfg", &fx);
    mcfg_t c;
    char err[512];
    assert_int_equal(mcfg_load(dir, &c, err, sizeof err), HS_OK);
    wt_model_t a, b;
    wt_opts_t o1 = {.quiet = true, .seed = 7, .n_threads = 1}, o3 = {.quiet = true, .seed = 7, .n_threads = 3};
    assert_int_equal(wt_load_dummy(&c, &o1, &a, err, sizeof err), HS_OK);
    assert_int_equal(wt_load_dummy(&c, &o3, &b, err, sizeof err), HS_OK);
    assert_true(a.dummy);
    assert_null(a.layers[0].gdn_qkv.data);
    assert_int_equal(a.layers[0].gdn_qkv.rows, CD);
    assert_int_equal(a.layers[0].experts_gate_up[3].rows, 2 * I_MOE);
    assert_int_equal(a.n_mtp, 1);
    /* deterministic for any thread count; projections normal-ish with std ~0.02 */
    const bk_host_tensor_t *t = wt_fetch(&a, &a.embed);
    size_t bytes = (size_t)wt_bytes(t);
    void *copy = malloc(bytes);
    memcpy(copy, t->data, bytes);
    assert_memory_equal(copy, wt_fetch(&b, &b.embed)->data, bytes);
    double s2 = 0;
    for (int64_t i = 0; i < V * H; i++) {
        float f = hs_bf16_to_f32(((uint16_t *)copy)[i]);
        assert_true(isfinite(f) && fabsf(f) < 0.1f);
        s2 += f * f;
    }
    double sd = sqrt(s2 / (V * H));
    assert_true(sd > 0.015 && sd < 0.025);
    free(copy);
    /* distinct tensors differ; norms are 0 (1+w) and the GDN norm 1 (plain w) */
    t = wt_fetch(&a, &a.layers[0].gdn_z);
    uint16_t z0 = ((const uint16_t *)t->data)[0];
    t = wt_fetch(&a, &a.layers[1].gdn_z);
    assert_int_not_equal(z0, ((const uint16_t *)t->data)[0]);
    t = wt_fetch(&a, &a.layers[0].in_norm);
    for (int i = 0; i < H; i++) assert_true(h2f(t, 0, i) == 0.0f);
    t = wt_fetch(&a, &a.layers[0].gdn_norm);
    for (int i = 0; i < DV; i++) assert_true(h2f(t, 0, i) == 1.0f);
    t = wt_fetch(&a, &a.layers[0].gdn_A_log);
    assert_int_equal(t->dtype, HS_F32);
    for (int i = 0; i < HV; i++) assert_true(h2f(t, 0, i) >= 0.0f && h2f(t, 0, i) <= logf(16.0f) + 1e-6f);
    t = wt_fetch(&a, &a.layers[0].gdn_conv);
    for (int i = 0; i < CD * KC; i++) assert_true(fabsf(h2f(t, i / KC, i % KC)) <= 0.5f + 1e-3f);
    assert_true(wt_touch_all(&a) > 0);
    wt_free(&a);
    wt_free(&b);
    /* tied dummy: lm_head generates the embedding's values */
    c.tie_embeddings = true;
    assert_int_equal(wt_load_dummy(&c, &o1, &a, err, sizeof err), HS_OK);
    t = wt_fetch(&a, &a.embed);
    uint16_t e0 = ((const uint16_t *)t->data)[5];
    t = wt_fetch(&a, &a.lm_head);
    assert_int_equal(e0, ((const uint16_t *)t->data)[5]);
    wt_free(&a);
}

static void test_dummy_shipped_shapes(void **state) {
    (void)state;
    /* the struct for every shipped config builds without generating anything */
    for (const char *const *n = mcfg_shipped_names(); *n; n++) {
        mcfg_t c;
        char err[512];
        assert_int_equal(mcfg_load(*n, &c, err, sizeof err), HS_OK);
        wt_model_t m;
        wt_opts_t o = {.quiet = true};
        if (wt_load_dummy(&c, &o, &m, err, sizeof err) != HS_OK) fail_msg("%s: %s", *n, err);
        assert_int_equal(m.n_layers, c.n_layers);
        if (!strcmp(*n, "qwen3.5-9b")) {
            double gb = (double)m.bytes_params / 1e9;
            if (gb < 17.0 || gb > 21.0) fail_msg("qwen3.5-9b: %.2f GB of bf16 parameters", gb);
        }
        wt_free(&m);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_next_grouped),      cmocka_unit_test(test_next_sharded),
        cmocka_unit_test(test_q35_dense_tied),    cmocka_unit_test(test_q35_prefix_variant),
        cmocka_unit_test(test_moe_fused_vs_per_expert), cmocka_unit_test(test_fp8),
        cmocka_unit_test(test_errors),            cmocka_unit_test(test_dummy),
        cmocka_unit_test(test_dummy_shipped_shapes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
