/*
 * Engine invariance tests (no Python): the same request must produce the same
 * tokens and log-probabilities however the engine schedules it.
 *   - alone vs batched with 7 other requests;
 *   - one-shot prefill vs chunked prefill (chunks of 1, 7 and 64 tokens) vs token by
 *     token (max_num_batched_tokens = 1);
 *   - never preempted vs preempted by recompute and by swap (a pool too small for
 *     all requests at once);
 *   - paged vs slots vs coupled layouts;
 *   - overlapped steps (async_scheduling: the next step runs the pending tokens before
 *     they are known) vs not, batched, chunked and preempted, and with seeded draws,
 *     top log-probabilities and a stop sequence.
 * With HS_CPU_BATCH_INVARIANT=1 (GEMMs row by row, set by main() for the first
 * pass) every comparison is bit-identical: the CPU backend then does the same
 * operations in the same order for a row whatever the batch, the chunking or the
 * layout. A second pass runs with OpenBLAS's sgemm, whose kernel and blocking
 * depend on the number of rows: there the results agree within 5e-5 (measured:
 * 1.4e-5 at most; this tiny random model amplifies GEMM rounding, 1e-7 relative,
 * about 100 times).
 * Also: submit errors, cancel, events and pool accounting through the C API.
 * Model: the tiny Qwen3.5 text fixture (tests/fixtures/golden/qwen3_5_text).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hyserve.h"
#include "util.h"
#include <jansson.h>

#define MODEL HYSERVE_SOURCE_DIR "/tests/fixtures/golden/qwen3_5_text"
#define MAX_REQ 8
#define N_GEN 40

typedef struct {
    int n;
    int32_t tok[64];
    float lp[64];
    hs_finish_t finish;
} out_t;

static void base_cfg(hs_engine_config_t *c) {
    hs_engine_config_default(c);
    c->model = MODEL;
    c->n_threads = 1;
    c->pool_bytes = 64u << 20;
    c->max_num_seqs = 16;
    c->max_num_batched_tokens = 512;
    /* fp32 state: a bf16 state is rounded at every chunk boundary, so chunked and
     * one-shot prefill differ by design (the fixture's config names no
     * mamba_ssm_dtype, which means bf16). */
    c->state_dtype = "f32";
}

static out_t alone[MAX_REQ];
/* Odd requests draw (temperature 0.8, top-k 40, seeded, 3 top logprobs); request 2 stops
 * at a stop sequence of alone[2]'s tokens 10..11. */
static bool g_sampled;

static void prompt_of(int r, int32_t *p, int *n) {
    static const int lens[MAX_REQ] = {130, 5, 64, 65, 1, 33, 100, 17};
    *n = lens[r];
    uint64_t x = 1234567 + (uint64_t)r * 7919;
    for (int i = 0; i < *n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (int32_t)((x >> 33) % 500) + 2;
    }
}

/* Run requests `which` (submitted in order) to completion; outputs per request. */
static void run(const hs_engine_config_t *cfg, const int *which, int n_which, out_t *out, int64_t *preempts) {
    hs_engine_t *e;
    char err[512];
    if (hs_engine_create(cfg, &e, err, sizeof err)) fail_msg("%s", err);
    uint64_t ids[MAX_REQ];
    for (int i = 0; i < n_which; i++) {
        int32_t p[256];
        int n;
        prompt_of(which[i], p, &n);
        hs_sampling_t sp;
        hs_sampling_default(&sp);
        sp.temperature = 0;
        sp.max_tokens = N_GEN;
        sp.ignore_eos = true;
        sp.logprobs = true;
        if (g_sampled && which[i] % 2) {
            sp.temperature = 0.8f;
            sp.top_k = 40;
            sp.seed = 77 + (uint64_t)which[i];
            sp.has_seed = true;
            sp.top_logprobs = 3;
        }
        if (g_sampled && which[i] == 2) {
            sp.n_stop = 1;
            sp.stop_len[0] = 2;
            sp.stop[0][0] = alone[2].tok[10];
            sp.stop[0][1] = alone[2].tok[11];
        }
        if (hs_engine_submit(e, p, n, &sp, &ids[i], err, sizeof err)) fail_msg("%s", err);
        memset(&out[i], 0, sizeof out[i]);
    }
    int guard = 0;
    while (hs_engine_has_work(e)) {
        assert_int_equal(hs_engine_step(e), HS_OK);
        if (hs_engine_check(e, err, sizeof err)) fail_msg("%s", err);
        hs_event_t ev;
        while (hs_engine_poll(e, &ev)) {
            int i = 0;
            while (i < n_which && ids[i] != ev.id) i++;
            assert_true(i < n_which);
            if (ev.token >= 0) {
                assert_true(out[i].n < 64);
                out[i].tok[out[i].n] = ev.token;
                out[i].lp[out[i].n++] = ev.logprob;
            }
            if (ev.finish) out[i].finish = ev.finish;
        }
        assert_true(++guard < 100000);
    }
    hs_stats_t st;
    hs_engine_stats(e, &st);
    assert_int_equal(st.pages_kv + st.pages_state, 0); /* everything returned */
    if (preempts) *preempts = st.preemptions;
    hs_engine_destroy(e);
}

static double g_tol; /* 0: bit-identical */

static void same(const out_t *a, const out_t *b, const char *what) {
    const double tol = g_tol;
    assert_int_equal(a->n, N_GEN);
    assert_int_equal(b->n, N_GEN);
    for (int j = 0; j < N_GEN; j++) {
        if (a->tok[j] != b->tok[j]) fail_msg("%s: token %d differs: %d vs %d", what, j, a->tok[j], b->tok[j]);
        double d = fabs((double)a->lp[j] - (double)b->lp[j]);
        if (tol == 0 ? a->lp[j] != b->lp[j] : d > tol)
            fail_msg("%s: logprob %d differs by %.3g (%.9f vs %.9f)", what, j, d, a->lp[j], b->lp[j]);
    }
}

static int setup_alone(void **state) {
    (void)state;
    hs_engine_config_t c;
    base_cfg(&c);
    for (int r = 0; r < MAX_REQ; r++) run(&c, &r, 1, &alone[r], NULL);
    return 0;
}

static void test_batched(void **state) {
    (void)state;
    hs_engine_config_t c;
    base_cfg(&c);
    int all[MAX_REQ] = {0, 1, 2, 3, 4, 5, 6, 7};
    out_t o[MAX_REQ];
    run(&c, all, MAX_REQ, o, NULL);
    for (int r = 0; r < MAX_REQ; r++) same(&alone[r], &o[r], "alone vs batched");
}

static void test_chunked_prefill(void **state) {
    (void)state;
    const int chunks[] = {64, 7, 1};
    for (size_t k = 0; k < 3; k++) {
        hs_engine_config_t c;
        base_cfg(&c);
        c.max_num_batched_tokens = chunks[k];
        c.max_num_seqs = chunks[k] < 16 ? chunks[k] : 16;
        int which[2] = {0, 3}; /* 130 and 65 tokens: several chunks each */
        out_t o[2];
        run(&c, which, 2, o, NULL);
        char what[64];
        snprintf(what, sizeof what, "chunks of %d", chunks[k]);
        same(&alone[0], &o[0], what);
        same(&alone[3], &o[1], what);
    }
}

static void test_preemption(void **state) {
    (void)state;
    int all[MAX_REQ] = {0, 1, 2, 3, 4, 5, 6, 7};
    for (int mode = 0; mode < 2; mode++) {
        hs_engine_config_t c;
        base_cfg(&c);
        /* Room for the longest request and a little more: the others must wait or be preempted. */
        c.pool_bytes = 150 * 1024; /* 18 pages of 8 KiB: 2-3 preemptions in both modes */
        c.preempt_mode = mode;
        c.swap_bytes = mode == 1 ? 8u << 20 : 0;
        out_t o[MAX_REQ];
        int64_t pre = 0;
        run(&c, all, MAX_REQ, o, &pre);
        for (int r = 0; r < MAX_REQ; r++) same(&alone[r], &o[r], mode ? "swap" : "recompute");
        printf("preempt mode %s: %lld preemptions\n", mode ? "swap" : "recompute", (long long)pre);
        assert_true(pre > 0);
    }
}

static void test_layouts(void **state) {
    (void)state;
    const char *layouts[] = {"slots", "coupled"};
    int all[MAX_REQ] = {0, 1, 2, 3, 4, 5, 6, 7};
    for (int k = 0; k < 2; k++) {
        hs_engine_config_t c;
        base_cfg(&c);
        c.state_layout = layouts[k];
        out_t o[MAX_REQ];
        run(&c, all, MAX_REQ, o, NULL);
        for (int r = 0; r < MAX_REQ; r++) same(&alone[r], &o[r], layouts[k]);
    }
}

/* Overlapped steps against the alone runs (which do not overlap: cpu's default), then
 * with draws and a stop, overlapped against not. */
static void test_overlapped(void **state) {
    (void)state;
    int all[MAX_REQ] = {0, 1, 2, 3, 4, 5, 6, 7};
    out_t o[MAX_REQ];
    for (int v = 0; v < 4; v++) {
        hs_engine_config_t c;
        base_cfg(&c);
        c.async_scheduling = 1;
        if (v == 1) { /* chunks of 7 */
            c.max_num_batched_tokens = 7;
            c.max_num_seqs = 7;
        }
        if (v >= 2) { /* preempted: recompute, swap */
            c.pool_bytes = 150 * 1024;
            c.preempt_mode = v - 2;
            c.swap_bytes = v == 3 ? 8u << 20 : 0;
        }
        int64_t pre = 0;
        run(&c, all, MAX_REQ, o, &pre);
        static const char *what[4] = {"overlapped", "overlapped, chunks of 7", "overlapped, recompute",
                                      "overlapped, swap"};
        for (int r = 0; r < MAX_REQ; r++) same(&alone[r], &o[r], what[v]);
        if (v >= 2) assert_true(pre > 0);
    }
    g_sampled = true;
    out_t a[MAX_REQ], b[MAX_REQ];
    hs_engine_config_t c;
    base_cfg(&c);
    c.async_scheduling = 0;
    run(&c, all, MAX_REQ, a, NULL);
    c.async_scheduling = 1;
    run(&c, all, MAX_REQ, b, NULL);
    g_sampled = false;
    for (int r = 0; r < MAX_REQ; r++) {
        assert_int_equal(a[r].n, b[r].n);
        assert_int_equal(a[r].finish, b[r].finish);
        for (int j = 0; j < a[r].n; j++) {
            assert_int_equal(a[r].tok[j], b[r].tok[j]);
            if (g_tol == 0) assert_true(a[r].lp[j] == b[r].lp[j]);
            else assert_true(fabs((double)a[r].lp[j] - (double)b[r].lp[j]) <= g_tol);
        }
    }
    assert_int_equal(a[2].finish, HS_FINISH_STOP);
    assert_true(a[2].n <= 12);
    bool drew = false; /* the draws left the greedy path somewhere */
    for (int r = 1; r < MAX_REQ; r += 2)
        for (int j = 0; j < a[r].n; j++) drew |= a[r].tok[j] != alone[r].tok[j];
    assert_true(drew);
}

static void test_api_errors(void **state) {
    (void)state;
    hs_engine_config_t c;
    base_cfg(&c);
    hs_engine_t *e;
    char err[256];
    assert_int_equal(hs_engine_create(&c, &e, err, sizeof err), HS_OK);
    hs_sampling_t sp;
    hs_sampling_default(&sp);
    uint64_t id;
    int32_t bad[2] = {5, 100000};
    assert_int_equal(hs_engine_submit(e, bad, 2, &sp, &id, err, sizeof err), HS_ERR_INVALID);
    assert_non_null(strstr(err, "vocabulary"));
    assert_int_equal(hs_engine_submit(e, bad, 0, &sp, &id, err, sizeof err), HS_ERR_INVALID);
    sp.max_tokens = 0;
    assert_int_equal(hs_engine_submit(e, bad, 1, &sp, &id, err, sizeof err), HS_ERR_INVALID);
    sp.max_tokens = 100;
    assert_int_equal(hs_engine_submit(e, bad, 1, &sp, &id, err, sizeof err), HS_OK);
    /* cancel mid-generation: a CANCELLED finish event, pages back */
    assert_int_equal(hs_engine_step(e), HS_OK);
    assert_int_equal(hs_engine_cancel(e, id), HS_OK);
    assert_int_equal(hs_engine_cancel(e, id), HS_ERR_NOT_FOUND);
    hs_event_t ev;
    bool cancelled = false;
    while (hs_engine_poll(e, &ev))
        if (ev.id == id && ev.finish == HS_FINISH_CANCELLED) cancelled = true;
    assert_true(cancelled);
    assert_false(hs_engine_has_work(e));
    hs_stats_t st;
    hs_engine_stats(e, &st);
    assert_int_equal(st.pages_kv + st.pages_state, 0);
    assert_int_equal(hs_engine_check(e, err, sizeof err), HS_OK);
    hs_engine_destroy(e);
    /* The CUDA kernels need the released head shapes (dk = dv = 128): a clear start-up
     * error for this fixture (dk = 16), whether or not CUDA was built. */
    c.device = "cuda";
    assert_int_equal(hs_engine_create(&c, &e, err, sizeof err), HS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "linear_key_head_dim"));
    c.device = "tpu";
    assert_int_equal(hs_engine_create(&c, &e, err, sizeof err), HS_ERR_INVALID);
    assert_non_null(strstr(err, "tpu"));
}

/* `hyserve generate --json` end to end: the JSON fields, and HF's greedy tokens for
 * the 5-token prompt of the qwen3_5_text golden fixture (its top-1/top-2 margins are
 * all above 1e-3, so the tokens must be identical). */
static void test_generate_cli(void **state) {
    (void)state;
    const char *bin = getenv("HYSERVE_BIN");
    if (!bin) skip();
    char path[1024];
    snprintf(path, sizeof path, "%s/golden.json", MODEL);
    json_error_t je;
    json_t *g = json_load_file(path, 0, &je);
    assert_non_null(g);
    json_t *cs = json_array_get(json_object_get(g, "cases"), 1);
    assert_int_equal(json_integer_value(json_object_get(cs, "prompt_len")), 5);
    char ids[256] = "";
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(cs, "prompt_ids"), i, v) {
        char t[16];
        snprintf(t, sizeof t, "%s%lld", i ? "," : "", (long long)json_integer_value(v));
        strcat(ids, t);
    }
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s generate --model %s --prompt-ids %s --max-tokens 16 --temperature 0 --ignore-eos --state-dtype f32 "
             "--top-logprobs 3 --threads 1 --json 2>/dev/null",
             bin, MODEL, ids);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    json_t *o = json_loadf(f, 0, &je);
    assert_int_equal(pclose(f), 0);
    if (!o) fail_msg("generate printed no JSON: %s", je.text);
    json_t *toks = json_object_get(o, "tokens"), *ref = json_object_get(cs, "generated");
    assert_int_equal(json_array_size(toks), 16);
    for (size_t j = 0; j < 16; j++)
        assert_int_equal(json_integer_value(json_array_get(toks, j)), json_integer_value(json_array_get(ref, j)));
    assert_int_equal(json_array_size(json_object_get(o, "logprobs")), 16);
    json_t *top0 = json_array_get(json_object_get(o, "top_logprobs"), 0);
    assert_int_equal(json_array_size(top0), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(top0, 0), "token")),
                     json_integer_value(json_array_get(toks, 0)));
    assert_string_equal(json_string_value(json_object_get(o, "finish_reason")), "length");
    assert_null(json_object_get(o, "text")); /* the fixture has no tokenizer */
    assert_int_equal(json_array_size(json_object_get(o, "prompt_ids")), 5);
    json_decref(o);
    json_decref(g);
}

/* `hyserve bench --json` end to end on the fixture: counts add up, rates are positive. */
static void test_bench_cli(void **state) {
    (void)state;
    const char *bin = getenv("HYSERVE_BIN");
    if (!bin) skip();
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "%s bench --model %s --input-len 20 --output-len 6 --range-ratio 0.5 --num-prompts 5 "
             "--max-concurrency 2 --threads 1 --pool-gib 0.0625 --json 2>/dev/null",
             bin, MODEL);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    json_error_t je;
    json_t *o = json_loadf(f, 0, &je);
    assert_int_equal(pclose(f), 0);
    if (!o) fail_msg("bench printed no JSON: %s", je.text);
    assert_int_equal(json_integer_value(json_object_get(o, "requests")), 5);
    json_int_t in = json_integer_value(json_object_get(o, "input_tokens"));
    json_int_t out = json_integer_value(json_object_get(o, "output_tokens"));
    assert_true(in >= 5 * 10 && in <= 5 * 20); /* lengths uniform in [0.5 * 20, 20] */
    assert_true(out >= 5 * 3 && out <= 5 * 6);
    assert_true(json_real_value(json_object_get(o, "total_tokens_per_s")) > 0);
    assert_true(json_real_value(json_object_get(o, "mean_running_batch")) <= 2.0 + 1e-9);
    assert_int_equal(json_integer_value(json_object_get(o, "preemptions")), 0);
    /* the decode roofline: bytes over the measured copy rate, as printed */
    const double by = json_real_value(json_object_get(o, "decode_step_bytes"));
    const double bw = json_real_value(json_object_get(o, "copy_bytes_per_s"));
    const double fl = json_real_value(json_object_get(o, "decode_floor_ms"));
    assert_true(by > 0 && bw > 0 && fl > 0);
    assert_true(fabs(fl - by / bw * 1e3) <= 1e-4 * fl); /* the JSON has 6 significant digits */
    json_decref(o);
}

int main(void) {
    int fails = 0;
    for (int pass = 0; pass < 2; pass++) {
        setenv("HS_CPU_BATCH_INVARIANT", pass == 0 ? "1" : "0", 1);
        g_tol = pass == 0 ? 0 : 5e-5;
        printf("pass %d: %s\n", pass, pass == 0 ? "batch-invariant GEMMs, bit-identical" : "OpenBLAS sgemm, within 5e-5");
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_batched),
            cmocka_unit_test(test_chunked_prefill),
            cmocka_unit_test(test_preemption),
            cmocka_unit_test(test_layouts),
            cmocka_unit_test(test_overlapped),
        };
        fails += cmocka_run_group_tests(tests, setup_alone, NULL);
    }
    /* Once: the API's error paths and the CLI. */
    const struct CMUnitTest once[] = {
        cmocka_unit_test(test_api_errors),
        cmocka_unit_test(test_generate_cli),
        cmocka_unit_test(test_bench_cli),
    };
    fails += cmocka_run_group_tests(once, NULL, NULL);
    return fails;
}
