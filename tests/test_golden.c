/*
 * Golden tests: the CPU forward pass against Hugging Face transformers (float32,
 * pure-torch GDN, eager attention) on tiny random models of each family, saved in
 * the real checkpoint layout by tools/gen_golden.py (tests/fixtures/golden/<family>/).
 *
 * For every case (prompts of 1, 5, 63, 64, 65 and 130 tokens, around the GDN chunk
 * size of 64):
 *   - the prompt is prefilled in one step with logits at every position; the
 *     log-probabilities of HF's top-5 next tokens at each position must match
 *     within 1e-4 (absolute);
 *   - then 16 decode steps, feeding HF's greedy tokens (teacher forcing, so every
 *     step stays comparable): the top-5 log-probabilities match within 1e-4, and
 *     our argmax equals HF's token up to the first step where HF's top-1/top-2
 *     margin is below 1e-3 (a near tie that either side may break differently).
 * The model runs alone through model.c with hand-assigned pages (pool bookkeeping
 * is tested elsewhere): blocks 0..nb-1 for KV, then E pages for the state.
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

#include "backend.h"
#include "layout.h"
#include "mcfg.h"
#include "model.h"
#include "weights.h"

#define TOL 1e-4

typedef struct {
    mcfg_t c;
    backend_t *bk;
    model_t *m;
    statemap_t sm;
    kv_layout_t kv;
    int max_tokens;
    float *logits;
} rig_t;

static void rig_open(rig_t *r, const char *dir, int max_tokens) {
    char err[512] = "";
    memset(r, 0, sizeof *r);
    if (mcfg_load(dir, &r->c, err, sizeof err)) fail_msg("%s", err);
    wt_model_t w;
    wt_opts_t o = {.quiet = true};
    if (wt_load(dir, &r->c, &o, &w, err, sizeof err)) fail_msg("%s", err);
    r->bk = backend_cpu_create(1);
    kv_layout_init(&r->kv, &r->c, 1, 16, HS_F32, 0);
    /* The conv state holds pre-conv activations: stored in the backend's activation
     * dtype (fp32 on the CPU), as the SSM state is here. */
    mcfg_t c32 = r->c;
    c32.dtype = r->bk->act_dtype;
    if (statemap_init(&r->sm, &c32, 1, HS_F32, 0, r->kv.kv_bytes, 0, 0, err, sizeof err)) fail_msg("%s", err);
    r->max_tokens = max_tokens;
    model_config_t mc = {.max_tokens = max_tokens, .max_logits = max_tokens};
    if (model_create(&r->m, &w, r->bk, &mc, err, sizeof err)) fail_msg("%s", err);
    if (model_alloc_pool(r->m, 64, r->kv.kv_bytes, &r->kv, &r->sm, err, sizeof err)) fail_msg("%s", err);
    wt_free(&w);
    r->logits = malloc(sizeof(float) * (size_t)max_tokens * (size_t)r->c.vocab);
}

static void rig_close(rig_t *r) {
    model_destroy(r->m);
    r->bk->destroy(r->bk);
    statemap_free(&r->sm);
    free(r->logits);
}

/* Run tokens[0..T) of one sequence at positions n_past.. with logits for all rows. */
static void run(rig_t *r, const int32_t *tokens, int T, int n_past) {
    int nb = (n_past + T + 15) / 16;
    int32_t bt[64], st[64], start[2] = {0, T}, past[1] = {n_past}, pos[256], rows[256];
    assert_true(nb + r->sm.n_pages <= 64 && T <= 256);
    for (int i = 0; i < nb; i++) bt[i] = i;
    for (int i = 0; i < r->sm.n_pages; i++) st[i] = 40 + i;
    for (int t = 0; t < T; t++) pos[t] = n_past + t, rows[t] = t;
    bk_batch_t b = {.n_seqs = 1, .n_tokens = T, .tok_start = start, .n_past = past, .positions = pos,
                    .block_tables = bt, .max_blocks = nb, .state_pages = st, .n_state_pages = r->sm.n_pages,
                    .logit_rows = rows, .n_logits = T};
    model_forward(r->m, &b, tokens, r->logits);
}

static double logsumexp(const float *x, int n) {
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < n; i++) s += exp(x[i] - mx);
    return mx + log(s);
}

static int argmax(const float *x, int n) {
    int a = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[a]) a = i;
    return a;
}

/* Compare one row against an HF top-5 list; returns the max abs error. */
static double check_top5(const float *row, int V, json_t *top5, const char *what, int i) {
    double lse = logsumexp(row, V), worst = 0;
    size_t k;
    json_t *e;
    json_array_foreach(top5, k, e) {
        int tok = (int)json_integer_value(json_object_get(e, "token"));
        double ref = json_real_value(json_object_get(e, "logprob"));
        double ours = row[tok] - lse;
        double d = fabs(ours - ref);
        if (d > worst) worst = d;
        if (getenv("GOLDEN_TRACE") && d > 3e-5) /* where the larger differences sit */ printf("  %s %d: token %d ours %.7f HF %.7f diff %.2e\n", what, i, tok, ours, ref, d);
        if (d > TOL) fail_msg("%s %d: token %d logprob %.7f, HF %.7f (|diff| %.2e > %.0e)", what, i, tok, ours, ref, d, TOL);
    }
    return worst;
}

static void golden(const char *family) {
    char dir[1024], path[1100], err[256];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/golden/%s", HYSERVE_SOURCE_DIR, family);
    snprintf(path, sizeof path, "%s/golden.json", dir);
    json_error_t je;
    json_t *g = json_load_file(path, 0, &je);
    if (!g) fail_msg("%s: %s", path, je.text);
    rig_t r;
    rig_open(&r, dir, 160);
    const int V = r.c.vocab;
    double worst = 0;
    size_t ci;
    json_t *cs;
    json_array_foreach(json_object_get(g, "cases"), ci, cs) {
        json_t *pids = json_object_get(cs, "prompt_ids");
        int P = (int)json_array_size(pids);
        int32_t toks[256];
        for (int i = 0; i < P; i++) toks[i] = (int32_t)json_integer_value(json_array_get(pids, (size_t)i));
        run(&r, toks, P, 0);
        json_t *pt = json_object_get(cs, "prompt_top5");
        for (int i = 0; i < P; i++) {
            double d = check_top5(r.logits + (size_t)i * V, V, json_array_get(pt, (size_t)i), "prompt position", i);
            if (d > worst) worst = d;
        }
        /* Decode with HF's tokens. Step j predicts generated[j]; step 0 is the prefill's last row. */
        json_t *gen = json_object_get(cs, "generated"), *gt = json_object_get(cs, "gen_top5"),
               *gm = json_object_get(cs, "gen_margin");
        int n_gen = (int)json_array_size(gen);
        bool tie_seen = false;
        float *row = r.logits + (size_t)(P - 1) * V;
        for (int j = 0; j < n_gen; j++) {
            int ref = (int)json_integer_value(json_array_get(gen, (size_t)j));
            if (json_real_value(json_array_get(gm, (size_t)j)) < 1e-3) tie_seen = true;
            if (!tie_seen && argmax(row, V) != ref)
                fail_msg("%s prompt %d: greedy step %d: ours %d, HF %d", family, P, j, argmax(row, V), ref);
            double d = check_top5(row, V, json_array_get(gt, (size_t)j), "decode step", j);
            if (d > worst) worst = d;
            if (j + 1 < n_gen) {
                int32_t t = ref;
                run(&r, &t, 1, P + j);
                row = r.logits;
            }
        }
        (void)err;
    }
    printf("golden %-13s %zu cases: max |logprob - HF| = %.2e\n", family, json_array_size(json_object_get(g, "cases")),
           worst);
    rig_close(&r);
    json_decref(g);
}

static void test_qwen3_next(void **s) { (void)s; golden("qwen3_next"); }
static void test_qwen3_5(void **s) { (void)s; golden("qwen3_5"); }
static void test_qwen3_5_text(void **s) { (void)s; golden("qwen3_5_text"); }
static void test_qwen3_5_moe(void **s) { (void)s; golden("qwen3_5_moe"); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qwen3_next), cmocka_unit_test(test_qwen3_5),
        cmocka_unit_test(test_qwen3_5_text), cmocka_unit_test(test_qwen3_5_moe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
