/*
 * The engine's invariance tests (tests/test_engine.c) on the CUDA backend: a request
 * must get the same tokens however the engine schedules it — alone, batched with 7
 * others, with decode-step graphs off, without overlapped steps (async_scheduling off;
 * every other run overlaps, the cuda default), with chunked prefill (chunks of 64, 7 and 1
 * tokens), preempted by recompute and by swap, under the slots and coupled layouts.
 *
 * On the GPU these cannot be bit-identical: the GEMM kernels depend on the number of
 * rows and bf16 activations round differently when a reduction order changes. Measured
 * on an H100 (2026-11-26): log-probabilities of equal tokens differ by up to 5.7e-2
 * between schedules, the size of the whole forward pass's bf16 error against fp32
 * (test_gpu_model: 3.5-5.5e-2); and greedy decoding of a random-weight model meets
 * near-ties, where such noise picks the other token. So the rules are:
 *   - while two runs agree, each token's logprob agrees within LP_TOL;
 *   - where they part, the parting is a near-tie in both runs: each run's token is among
 *     the other run's top-5 alternatives, within TIE_TOL of that run's choice (a wrong
 *     kernel gives large logprob errors or far-apart choices instead);
 *   - after a parting the request is not compared further (its contexts differ).
 * The preemption runs size their pool from the measured state pages per request so that
 * the first three requests are admitted and their growth forces preemption; the test
 * fails if none happens.
 * Model: tests/fixtures/gpu-dense (real head shapes, random weights). Run on a GPU
 * machine (tools/gpu-check.sh); CI only builds it. HS_TEST_DEVICE=cpu runs the same
 * logic on the CPU reference (a dry run of the scheduling, e.g. the pool sizing).
 * Prints one line per comparison, then OK/FAIL.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hyserve.h"
#include "util.h"

#define MAX_REQ 8
#define N_GEN 40
#define N_TOP 5
#define LP_TOL 0.1
#define TIE_TOL (2 * LP_TOL)

typedef struct {
    int n;
    int32_t tok[64];
    float lp[64];
    int32_t top_id[64][N_TOP];
    float top_lp[64][N_TOP];
} out_t;

static char g_model[4096];
static const char *g_device = "cuda";
static int g_fails;

static const int LENS[MAX_REQ] = {130, 5, 64, 65, 1, 33, 100, 17};

static void base_cfg(hs_engine_config_t *c) {
    hs_engine_config_default(c);
    c->model = g_model;
    c->device = g_device;
    c->load_format = "dummy";
    c->pool_bytes = 256u << 20;
    c->max_num_seqs = 16;
    c->max_num_batched_tokens = 512;
    c->state_dtype = "f32";
    c->n_threads = 1;
}

static void prompt_of(int r, int32_t *p, int *n) {
    *n = LENS[r];
    uint64_t x = 1234567 + (uint64_t)r * 7919;
    for (int i = 0; i < *n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (int32_t)((x >> 33) % 4000) + 2;
    }
}

/* Run requests `which` to completion; false on error. */
static bool run(const hs_engine_config_t *cfg, const int *which, int n_which, out_t *out, hs_stats_t *st) {
    hs_engine_t *e;
    char err[512];
    if (hs_engine_create(cfg, &e, err, sizeof err)) return fprintf(stderr, "create: %s\n", err), false;
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
        sp.top_logprobs = N_TOP;
        if (hs_engine_submit(e, p, n, &sp, &ids[i], err, sizeof err)) return fprintf(stderr, "submit: %s\n", err), false;
        memset(&out[i], 0, sizeof out[i]);
    }
    for (int guard = 0; hs_engine_has_work(e); guard++) {
        if (hs_engine_step(e) != HS_OK || guard > 100000) return fprintf(stderr, "step failed\n"), false;
        if (hs_engine_check(e, err, sizeof err)) return fprintf(stderr, "check: %s\n", err), false;
        hs_event_t ev;
        while (hs_engine_poll(e, &ev)) {
            int i = 0;
            while (i < n_which && ids[i] != ev.id) i++;
            if (i == n_which || ev.token < 0 || out[i].n >= 64) continue;
            out_t *o = &out[i];
            o->tok[o->n] = ev.token;
            o->lp[o->n] = ev.logprob;
            for (int k = 0; k < N_TOP; k++) {
                o->top_id[o->n][k] = k < ev.n_top ? ev.top_ids[k] : -1;
                o->top_lp[o->n][k] = k < ev.n_top ? ev.top_logprobs[k] : -INFINITY;
            }
            o->n++;
        }
    }
    hs_engine_stats(e, st);
    hs_engine_destroy(e);
    return true;
}

/* logprob of token t among o's top alternatives at position j, or NAN */
static double top_lp(const out_t *o, int j, int32_t t) {
    for (int k = 0; k < N_TOP; k++)
        if (o->top_id[j][k] == t) return o->top_lp[j][k];
    return NAN;
}

static void compare(const out_t *a, const out_t *b, int n, const char *what) {
    int agree = 0, total = 0, partings = 0, bad_partings = 0;
    double worst = 0, worst_gap = 0;
    for (int r = 0; r < n; r++) {
        if (a[r].n != N_GEN || b[r].n != N_GEN) {
            printf("  %-26s request %d: %d / %d tokens, expected %d  FAIL\n", what, r, a[r].n, b[r].n, N_GEN);
            g_fails++;
            return;
        }
        total += N_GEN;
        for (int j = 0; j < N_GEN; j++) {
            if (a[r].tok[j] == b[r].tok[j]) {
                const double d = fabs((double)a[r].lp[j] - b[r].lp[j]);
                if (d > worst) worst = d;
                agree++;
                continue;
            }
            /* a parting: each run's token must be a near-tie in the other run */
            partings++;
            const double ab = top_lp(&b[r], j, a[r].tok[j]), ba = top_lp(&a[r], j, b[r].tok[j]);
            const double gap_b = b[r].lp[j] - ab, gap_a = a[r].lp[j] - ba;
            const bool tie = !isnan(ab) && !isnan(ba) && gap_a <= TIE_TOL && gap_b <= TIE_TOL;
            if (!isnan(gap_a) && gap_a > worst_gap) worst_gap = gap_a;
            if (!isnan(gap_b) && gap_b > worst_gap) worst_gap = gap_b;
            if (!tie) {
                bad_partings++;
                printf("  %-26s request %d parts at token %d: %d (%.4f) vs %d (%.4f), not a near-tie\n", what, r, j,
                       a[r].tok[j], a[r].lp[j], b[r].tok[j], b[r].lp[j]);
            }
            break;
        }
    }
    const bool ok = worst <= LP_TOL && bad_partings == 0;
    printf("  %-26s agreeing %3d/%3d, partings %d (all near-ties: %s, widest gap %.3f), worst logprob diff %.2e  %s\n",
           what, agree, total, partings, bad_partings ? "no" : "yes", worst_gap, worst, ok ? "ok" : "FAIL");
    g_fails += !ok;
}

int main(int argc, char **argv) {
    const char *root = argc > 1 ? argv[1] : HYSERVE_SOURCE_DIR;
    snprintf(g_model, sizeof g_model, "%s/tests/fixtures/gpu-dense", root);
    if (getenv("HS_TEST_DEVICE")) g_device = getenv("HS_TEST_DEVICE");
    static out_t alone[MAX_REQ], o[MAX_REQ];
    hs_engine_config_t c;
    hs_stats_t st;
    base_cfg(&c);
    for (int r = 0; r < MAX_REQ; r++)
        if (!run(&c, &r, 1, &alone[r], &st)) return printf("FAIL\n"), 1;
    /* the pool's geometry, for the preemption runs */
    const int E = st.state_pages_per_request;
    const size_t page_bytes = c.pool_bytes / (size_t)st.pages_total;
    const int all[MAX_REQ] = {0, 1, 2, 3, 4, 5, 6, 7};

    base_cfg(&c);
    if (!run(&c, all, MAX_REQ, o, &st)) return printf("FAIL\n"), 1;
    compare(alone, o, MAX_REQ, "alone vs batched");

    setenv("HS_CUDA_GRAPHS", "0", 1);
    if (!run(&c, all, MAX_REQ, o, &st)) return printf("FAIL\n"), 1;
    compare(alone, o, MAX_REQ, "batched, no graphs");
    unsetenv("HS_CUDA_GRAPHS");
    c.async_scheduling = 0;
    if (!run(&c, all, MAX_REQ, o, &st)) return printf("FAIL\n"), 1;
    compare(alone, o, MAX_REQ, "batched, not overlapped");
    c.async_scheduling = -1;

    const int chunks[] = {64, 7, 1};
    for (int k = 0; k < 3; k++) {
        base_cfg(&c);
        c.max_num_batched_tokens = chunks[k];
        c.max_num_seqs = chunks[k] < 16 ? chunks[k] : 16;
        const int which[2] = {0, 3};
        out_t p[2], ref[2] = {alone[0], alone[3]};
        if (!run(&c, which, 2, p, &st)) return printf("FAIL\n"), 1;
        char what[64];
        snprintf(what, sizeof what, "chunks of %d", chunks[k]);
        compare(ref, p, 2, what);
    }
    /* Room for the prompts of requests 0, 1, 2 (and their states) plus one page: all
     * three are admitted, and their 40 new tokens each need more pages than are left. */
    int pages = 1;
    for (int r = 0; r < 3; r++) pages += E + (LENS[r] + 15) / 16;
    for (int mode = 0; mode < 2; mode++) {
        base_cfg(&c);
        c.pool_bytes = (size_t)pages * page_bytes;
        c.preempt_mode = mode;
        c.swap_bytes = mode ? (size_t)64 * page_bytes * 4 : 0;
        if (!run(&c, all, MAX_REQ, o, &st)) return printf("FAIL\n"), 1;
        char what[64];
        snprintf(what, sizeof what, "%s (%lld preemptions)", mode ? "swap" : "recompute", (long long)st.preemptions);
        compare(alone, o, MAX_REQ, what);
        if (st.preemptions == 0) printf("  %s: no preemption happened  FAIL\n", what), g_fails++;
    }
    const char *layouts[] = {"slots", "coupled"};
    for (int k = 0; k < 2; k++) {
        base_cfg(&c);
        c.state_layout = layouts[k];
        if (!run(&c, all, MAX_REQ, o, &st)) return printf("FAIL\n"), 1;
        compare(alone, o, MAX_REQ, layouts[k]);
    }
    printf("%s\n", g_fails ? "FAIL" : "OK");
    return g_fails ? 1 : 0;
}
