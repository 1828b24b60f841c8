/*
 * Tests for sim (hyserve simulate): the seed's setting shows the seed's direction
 * (coupled preempts and runs fewer requests; slots / paged do better by a wide margin),
 * paged >= slots >= coupled in achieved concurrency on a short/long mix, the slots
 * layout refuses a reservation larger than the budget, the workload generator's
 * ranges, and the CLI (table, --json, --trace, bad options).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

static void seed_config(sim_config_t *c) {
    sim_config_default(c);
    char err[256];
    assert_int_equal(mcfg_load("qwen3.5-397b-a17b", &c->model, err, sizeof err), HS_OK);
    c->tp = 4;
    c->gpu = sim_gpu_find("mi355x-288g");
    assert_non_null(c->gpu);
    c->kv_dtype = HS_F8_E4M3;
    c->weights_dtype = HS_F8_E4M3;
    c->max_concurrency = 128;
}

static void test_workload(void **state) {
    (void)state;
    sim_workload_t w;
    sim_workload_random(&w, 2000, 1024, 512, 0.8, 0, 0, 0, 0, 1);
    int lo_in = 1 << 30, hi_in = 0;
    for (int i = 0; i < w.n; i++) {
        if (w.in_len[i] < lo_in) lo_in = w.in_len[i];
        if (w.in_len[i] > hi_in) hi_in = w.in_len[i];
        assert_true(w.out_len[i] >= 409 && w.out_len[i] <= 512);
        assert_true(w.arrival[i] == 0);
    }
    assert_int_equal(lo_in, 819); /* int(1024 * 0.8), both ends reached */
    assert_int_equal(hi_in, 1024);
    sim_workload_free(&w);
    sim_workload_random(&w, 1000, 100, 100, 1.0, 10.0, 0.5, 5000, 7, 2);
    int n_long = 0;
    for (int i = 0; i < w.n; i++) {
        n_long += w.in_len[i] == 5000;
        if (i) assert_true(w.arrival[i] >= w.arrival[i - 1]);
    }
    assert_true(n_long > 400 && n_long < 600);
    assert_true(w.arrival[w.n - 1] > 70 && w.arrival[w.n - 1] < 130); /* ~1000 / 10 per s */
    sim_workload_free(&w);
}

static void test_seed_direction(void **state) {
    (void)state;
    sim_config_t c;
    seed_config(&c);
    sim_workload_t w;
    sim_workload_random(&w, 384, 1024, 1024, 0.8, 0, 0, 0, 0, 0);
    sim_result_t r[3];
    char err[256];
    layout_kind_t k[3] = {LAYOUT_COUPLED, LAYOUT_SLOTS, LAYOUT_PAGED};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(sim_run(&c, k[i], &w, &r[i], err, sizeof err), HS_OK);
        assert_true(r[i].ok);
        assert_int_equal(r[i].n_done, 384);
    }
    /* the seed's coupled pool: ~6.9k pages of 23.41 MiB */
    assert_true(r[0].mem.n_pages > 6500 && r[0].mem.n_pages < 7300);
    assert_int_equal(r[0].mem.page_bytes, 124800 + 24422400);
    assert_true(r[0].preempt_recompute > 0);
    assert_true(r[0].mean_running < 100);
    assert_int_equal(r[2].preempt_recompute, 0);
    assert_true(r[2].mean_running > 110);
    assert_true(r[2].total_tps > 1.2 * r[0].total_tps);
    assert_true(r[1].total_tps > 1.2 * r[0].total_tps);
    for (int i = 0; i < 3; i++) sim_result_free(&r[i]);
    sim_workload_free(&w);
}

/* MTP: drafts accepted at 0.7 raise throughput (the seed: MTP3 +50 %), every request
 * still gets exactly its output length, and a request holds 1 + k states. */
static void test_mtp(void **state) {
    (void)state;
    sim_config_t c;
    seed_config(&c);
    sim_workload_t w;
    sim_workload_random(&w, 256, 1024, 1024, 0.8, 0, 0, 0, 0, 0);
    sim_result_t r0, r3;
    char err[256];
    assert_int_equal(sim_run(&c, LAYOUT_PAGED, &w, &r0, err, sizeof err), HS_OK);
    c.k_spec = 3;
    assert_int_equal(sim_run(&c, LAYOUT_PAGED, &w, &r3, err, sizeof err), HS_OK);
    assert_true(r0.ok && r3.ok);
    assert_int_equal(r3.n_done, 256);
    assert_true(r3.out_tokens == r0.out_tokens);
    assert_true(r3.total_tps > 1.3 * r0.total_tps);
    assert_true(r3.mem.state_bytes == 4 * r0.mem.state_bytes + 4 * (size_t)45 * 3 * 3072 * 2); /* conv +3 columns */
    sim_memory_t m;
    assert_int_equal(sim_memory(&c, LAYOUT_COUPLED, &m, err, sizeof err), HS_OK);
    assert_int_equal(m.E, 4);
    sim_result_free(&r0);
    sim_result_free(&r3);
    sim_workload_free(&w);
}

static void test_mix_concurrency(void **state) {
    (void)state;
    sim_config_t c;
    sim_config_default(&c);
    char err[256];
    assert_int_equal(mcfg_load("qwen3.5-35b-a3b", &c.model, err, sizeof err), HS_OK);
    c.gpu = sim_gpu_find("h100-80g");
    c.kv_dtype = HS_F8_E4M3;
    c.weights_dtype = HS_F8_E4M3;
    c.max_num_seqs = 1024;
    c.max_concurrency = 1024;
    sim_workload_t w;
    sim_workload_random(&w, 1500, 1024, 256, 0.5, 0, 0.2, 8192, 256, 0);
    sim_result_t r[3];
    layout_kind_t k[3] = {LAYOUT_COUPLED, LAYOUT_SLOTS, LAYOUT_PAGED};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(sim_run(&c, k[i], &w, &r[i], err, sizeof err), HS_OK);
        assert_true(r[i].ok);
    }
    assert_true(r[2].mean_running >= r[1].mean_running);
    assert_true(r[1].mean_running >= r[0].mean_running);
    assert_true(r[2].mean_running > 1.5 * r[1].mean_running);
    for (int i = 0; i < 3; i++) sim_result_free(&r[i]);
    sim_workload_free(&w);

    /* 4096 slots of 31 MiB do not fit: the slots layout cannot be built */
    c.max_num_seqs = 4096;
    c.max_num_batched_tokens = 16384;
    sim_memory_t m;
    assert_int_equal(sim_memory(&c, LAYOUT_SLOTS, &m, err, sizeof err), HS_ERR_NO_MEMORY);
    assert_non_null(strstr(err, "slots"));
    assert_int_equal(sim_memory(&c, LAYOUT_PAGED, &m, err, sizeof err), HS_OK);
}

static int run_cli(const char *args, char *out, size_t n) {
    const char *bin = getenv("HYSERVE_BIN");
    if (!bin) bin = "build/hyserve";
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s simulate %s 2>&1", bin, args);
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    size_t len = fread(out, 1, n - 1, f);
    out[len] = 0;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void **state) {
    (void)state;
    static char out[65536];
    assert_int_equal(run_cli("--model qwen3.5-9b --num-prompts 20 --input-len 64 --output-len 16", out, sizeof out), 0);
    assert_non_null(strstr(out, "A MODEL, NOT A MEASUREMENT"));
    assert_non_null(strstr(out, "coupled"));
    assert_non_null(strstr(out, "paged"));
    assert_int_equal(run_cli("--model qwen3.5-9b --num-prompts 20 --input-len 64 --output-len 16 --layouts paged "
                             "--json --policy seed --preempt swap",
                             out, sizeof out), 0);
    assert_non_null(strstr(out, "\"note\": \"a model, not a measurement\""));
    assert_non_null(strstr(out, "\"layout\": \"paged\""));
    assert_null(strstr(out, "\"layout\": \"coupled\""));
    char path[] = "/tmp/hs_trace_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "{\"arrival\": 0, \"input_len\": 100, \"output_len\": 5}\n\n"
               "{\"arrival\": 0.5, \"input_len\": 3000, \"output_len\": 8}\n");
    fclose(f);
    char args[256];
    snprintf(args, sizeof args, "--model qwen3.5-9b --trace %s --json", path);
    assert_int_equal(run_cli(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "\"num_requests\": 2"));
    assert_non_null(strstr(out, "\"input_tokens\": 3100"));
    f = fopen(path, "w");
    fprintf(f, "{\"arrival\": 0, \"input_len\": -1, \"output_len\": 5}\n");
    fclose(f);
    assert_int_equal(run_cli(args, out, sizeof out), 2);
    assert_non_null(strstr(out, ":1:"));
    remove(path);
    assert_int_equal(run_cli("--model qwen3.5-9b --gpu tpu", out, sizeof out), 2);
    assert_int_equal(run_cli("--num-prompts 3", out, sizeof out), 2);
    assert_int_equal(run_cli("--model qwen3.5-9b --range-ratio 2", out, sizeof out), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workload),
        cmocka_unit_test(test_seed_direction),
        cmocka_unit_test(test_mtp),
        cmocka_unit_test(test_mix_concurrency),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
