/*
 * cmd_simulate: `hyserve simulate` — replay a workload (random, as the seed's
 * benchmark, or a JSONL trace) against the real scheduler and page pool for each
 * memory layout, with the step-time model of sim.h. Prints, per layout, throughput,
 * TTFT / TPOT percentiles, mean running requests, preemptions and pool occupancy
 * over time. Its numbers are a model, not a measurement.
 *
 * --json prints one object: the settings ("note": "a model, not a measurement",
 * model, tp, gpu, kv_dtype, state_dtype, weights_dtype, num_requests, input_tokens,
 * output_tokens, max_concurrency, max_num_seqs, max_num_batched_tokens, policy,
 * preempt, step_overhead_ms, wall_s) and "layouts": per layout {layout, ok, error
 * (when not ok), kv_block_bytes, state_bytes, page_bytes, state_pages, pool_pages,
 * state_slots, weights_gib, budget_gib, completed, failed, duration_s,
 * total_tokens_per_s, output_tokens_per_s, ttft_ms {p50,p90,p99}, tpot_ms {..},
 * mean_running, max_running, mean_batch, steps, preemptions_recompute,
 * preemptions_swap, recomputed_tokens, occupancy {kv_fraction[], state_fraction[],
 * running[]} (48 equal time buckets)}.
 *
 * Trace format (--trace FILE.jsonl): one JSON object per line with
 *   "arrival" (or "arrival_time" / "timestamp"), seconds from the start (default 0),
 *   "input_len" and "output_len" (tokens, >= 1). Blank lines are skipped.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "sim.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: hyserve simulate --model NAME|DIR|config.json [options]\n"
            "  Replays a workload against the real scheduler and page pool with a step-time\n"
            "  model, for each memory layout. A MODEL, NOT A MEASUREMENT.\n\n"
            "  --tp N                       tensor-parallel ranks (1)\n"
            "  --gpu KIND                   h100-80g h200-141g b200-180g mi300x-192g mi355x-288g (h100-80g)\n"
            "  --kv-dtype bf16|fp8          KV cache dtype (bf16)\n"
            "  --state-dtype bf16|f32       SSM state dtype (bf16)\n"
            "  --weights-dtype bf16|fp8     linear-layer weights (bf16)\n"
            "  --mem-util F                 fraction of GPU memory used (0.9)\n"
            "  --reserve-gib G              memory kept back besides weights (auto: 2%% + activations)\n"
            "  --block-size N               tokens per KV block (16)\n"
            "  --num-prompts N              requests (256)\n"
            "  --input-len N --output-len N lengths (1024 / 1024)\n"
            "  --range-ratio R              lengths uniform in [int(R*len), len] (1.0)\n"
            "  --long-fraction F            share of requests using the long lengths (0)\n"
            "  --long-input-len N --long-output-len N   (8192 / 256)\n"
            "  --max-concurrency N          client in-flight limit (0: none)\n"
            "  --request-rate inf|R         arrivals per second, Poisson (inf: all at 0)\n"
            "  --trace FILE.jsonl           workload from a trace (overrides the above)\n"
            "  --max-num-seqs N             batch / running limit; slots reserve state for it (512)\n"
            "  --max-num-batched-tokens N   tokens per step (16384)\n"
            "  --preempt recompute|swap     preemption mode (recompute)\n"
            "  --policy hyserve|seed        step policy: hyserve (decode-first, chunked prefill) or the\n"
            "                               seed's (ATOM #602: prefill-first, whole prompts, no mixing)\n"
            "  --swap-gib G                 host swap space for --preempt swap (64)\n"
            "  --step-overhead-ms T         fixed time added to every step (0)\n"
            "  --num-speculative-tokens K   MTP drafts per decode step (0)\n"
            "  --acceptance-rate A          chance each draft is accepted, up to the first miss (0.7)\n"
            "  --layouts LIST               comma-separated subset of coupled,slots,paged (all)\n"
            "  --seed N                     workload seed (0)\n"
            "  --json                       one JSON object instead of the table\n");
}

static int load_trace(const char *path, sim_workload_t *w, char *err, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) return hs_errf(err, n, HS_ERR_IO, "%s: cannot open", path);
    int cap = 1024, cnt = 0;
    w->arrival = hs_malloc(sizeof(double) * (size_t)cap);
    w->in_len = hs_malloc(sizeof(int32_t) * (size_t)cap);
    w->out_len = hs_malloc(sizeof(int32_t) * (size_t)cap);
    char *line = NULL;
    size_t lcap = 0;
    int lineno = 0, rc = HS_OK;
    while (getline(&line, &lcap, f) >= 0) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
        if (!*p) continue;
        json_error_t je;
        json_t *o = json_loads(p, 0, &je);
        if (!o || !json_is_object(o)) {
            rc = hs_errf(err, n, HS_ERR_FORMAT, "%s:%d: not a JSON object (%s)", path, lineno, o ? "" : je.text);
            json_decref(o);
            break;
        }
        json_t *a = json_object_get(o, "arrival");
        if (!a) a = json_object_get(o, "arrival_time");
        if (!a) a = json_object_get(o, "timestamp");
        json_t *il = json_object_get(o, "input_len"), *ol = json_object_get(o, "output_len");
        if (!json_is_integer(il) || !json_is_integer(ol) || json_integer_value(il) < 1 || json_integer_value(ol) < 1 ||
            json_integer_value(il) > 1 << 24 || json_integer_value(ol) > 1 << 24 || (a && !json_is_number(a))) {
            rc = hs_errf(err, n, HS_ERR_FORMAT, "%s:%d: want integer input_len, output_len >= 1 and numeric arrival",
                         path, lineno);
            json_decref(o);
            break;
        }
        if (cnt == cap) {
            cap *= 2;
            w->arrival = hs_realloc(w->arrival, sizeof(double) * (size_t)cap);
            w->in_len = hs_realloc(w->in_len, sizeof(int32_t) * (size_t)cap);
            w->out_len = hs_realloc(w->out_len, sizeof(int32_t) * (size_t)cap);
        }
        w->arrival[cnt] = a ? json_number_value(a) : 0;
        w->in_len[cnt] = (int32_t)json_integer_value(il);
        w->out_len[cnt] = (int32_t)json_integer_value(ol);
        if (cnt > 0 && w->arrival[cnt] < w->arrival[cnt - 1]) {
            rc = hs_errf(err, n, HS_ERR_FORMAT, "%s:%d: arrivals must not decrease", path, lineno);
            json_decref(o);
            break;
        }
        cnt++;
        json_decref(o);
    }
    free(line);
    fclose(f);
    w->n = cnt;
    if (rc == HS_OK && cnt == 0) rc = hs_errf(err, n, HS_ERR_FORMAT, "%s: no requests", path);
    return rc;
}

/* ASCII sparkline of fractions in [0, 1]. */
static void spark(char *out, const double *v, int n, double scale) {
    static const char lv[] = " .:-=+*#%@";
    for (int i = 0; i < n; i++) {
        double x = scale > 0 ? v[i] / scale : 0;
        int k = (int)lround(x * 9);
        if (k < 0) k = 0;
        if (k > 9) k = 9;
        out[i] = lv[k];
    }
    out[n] = 0;
}

static const char *gib_str(char *buf, size_t n, double bytes) {
    if (bytes >= 1024.0 * 1024 * 1024) snprintf(buf, n, "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
    else if (bytes >= 1024.0 * 1024) snprintf(buf, n, "%.2f MiB", bytes / (1024.0 * 1024));
    else snprintf(buf, n, "%.1f KiB", bytes / 1024.0);
    return buf;
}

static json_t *json_triple(const double v[3]) {
    json_t *o = json_object();
    json_object_set_new(o, "p50", json_real(v[0]));
    json_object_set_new(o, "p90", json_real(v[1]));
    json_object_set_new(o, "p99", json_real(v[2]));
    return o;
}

static json_t *json_array_of(const double *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(round(v[i] * 1e4) / 1e4));
    return a;
}

int cmd_simulate(int argc, char **argv) {
    sim_config_t c;
    sim_config_default(&c);
    const char *model = NULL, *trace = NULL, *layouts = "coupled,slots,paged";
    int64_t num_prompts = 256, in_len = 1024, out_len = 1024, long_in = 8192, long_out = 256, seed = 0, v;
    double ratio = 1.0, rate = 0, long_frac = 0, ovh_ms = 0;
    bool json = false;
    char err[512];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VAL                                                        \
    do {                                                                \
        if (!val) {                                                     \
            fprintf(stderr, "hyserve simulate: %s needs a value\n", a); \
            return 2;                                                   \
        }                                                               \
        i++;                                                            \
    } while (0)
#define INT_OPT(name, lo, hi, dst)                                                                \
    if (!strcmp(a, name)) {                                                                       \
        NEED_VAL;                                                                                 \
        if (hs_parse_i64(val, lo, hi, &v) != HS_OK) {                                             \
            fprintf(stderr, "hyserve simulate: %s: want an integer in [%lld, %lld]\n", name,      \
                    (long long)(lo), (long long)(hi));                                            \
            return 2;                                                                             \
        }                                                                                         \
        dst = v;                                                                                  \
        continue;                                                                                 \
    }
#define DBL_OPT(name, lo, hi, dst)                                                                 \
    if (!strcmp(a, name)) {                                                                        \
        NEED_VAL;                                                                                  \
        double d_;                                                                                 \
        if (hs_parse_f64(val, &d_) != HS_OK || d_ < (lo) || d_ > (hi)) {                           \
            fprintf(stderr, "hyserve simulate: %s: want a number in [%g, %g]\n", name, (double)(lo), \
                    (double)(hi));                                                                 \
            return 2;                                                                              \
        }                                                                                          \
        dst = d_;                                                                                  \
        continue;                                                                                  \
    }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        if (!strcmp(a, "--model")) {
            NEED_VAL;
            model = val;
            continue;
        }
        if (!strcmp(a, "--trace")) {
            NEED_VAL;
            trace = val;
            continue;
        }
        if (!strcmp(a, "--layouts")) {
            NEED_VAL;
            layouts = val;
            continue;
        }
        if (!strcmp(a, "--gpu")) {
            NEED_VAL;
            c.gpu = sim_gpu_find(val);
            if (!c.gpu) {
                fprintf(stderr, "hyserve simulate: --gpu: unknown kind '%s' (h100-80g h200-141g b200-180g "
                                "mi300x-192g mi355x-288g)\n", val);
                return 2;
            }
            continue;
        }
        if (!strcmp(a, "--kv-dtype") || !strcmp(a, "--state-dtype") || !strcmp(a, "--weights-dtype")) {
            NEED_VAL;
            hs_dtype_t t;
            if (hs_dtype_parse(val, &t) != HS_OK) {
                fprintf(stderr, "hyserve simulate: %s: unknown dtype '%s'\n", a, val);
                return 2;
            }
            bool ok = a[2] == 'k' ? (t == HS_BF16 || t == HS_F8_E4M3 || t == HS_F16)
                    : a[2] == 's' ? (t == HS_BF16 || t == HS_F32 || t == HS_F16)
                                  : (t == HS_BF16 || t == HS_F8_E4M3 || t == HS_F16);
            if (!ok) {
                fprintf(stderr, "hyserve simulate: %s: %s not supported here\n", a, val);
                return 2;
            }
            if (a[2] == 'k') c.kv_dtype = t;
            else if (a[2] == 's') c.state_dtype = t;
            else c.weights_dtype = t;
            continue;
        }
        if (!strcmp(a, "--preempt")) {
            NEED_VAL;
            if (!strcmp(val, "recompute")) c.preempt = SCHED_PREEMPT_RECOMPUTE;
            else if (!strcmp(val, "swap")) c.preempt = SCHED_PREEMPT_SWAP;
            else {
                fprintf(stderr, "hyserve simulate: --preempt: recompute or swap\n");
                return 2;
            }
            continue;
        }
        if (!strcmp(a, "--policy")) {
            NEED_VAL;
            if (!strcmp(val, "hyserve")) c.policy = SCHED_POLICY_DEFAULT;
            else if (!strcmp(val, "seed")) c.policy = SCHED_POLICY_SEED;
            else {
                fprintf(stderr, "hyserve simulate: --policy: hyserve or seed\n");
                return 2;
            }
            continue;
        }
        if (!strcmp(a, "--request-rate")) {
            NEED_VAL;
            if (!strcmp(val, "inf")) rate = 0;
            else if (hs_parse_f64(val, &rate) != HS_OK || !(rate > 0)) {
                fprintf(stderr, "hyserve simulate: --request-rate: inf or a positive number\n");
                return 2;
            }
            continue;
        }
        INT_OPT("--tp", 1, 64, c.tp)
        INT_OPT("--block-size", 1, 4096, c.block_size)
        INT_OPT("--num-prompts", 1, 10000000, num_prompts)
        INT_OPT("--input-len", 1, 1 << 22, in_len)
        INT_OPT("--output-len", 1, 1 << 22, out_len)
        INT_OPT("--long-input-len", 1, 1 << 22, long_in)
        INT_OPT("--long-output-len", 1, 1 << 22, long_out)
        INT_OPT("--max-concurrency", 0, 1 << 24, c.max_concurrency)
        INT_OPT("--max-num-seqs", 1, 1 << 20, c.max_num_seqs)
        INT_OPT("--max-num-batched-tokens", 1, 1 << 24, c.max_num_batched_tokens)
        INT_OPT("--seed", 0, INT64_MAX, seed)
        INT_OPT("--num-speculative-tokens", 0, 4, c.k_spec)
        DBL_OPT("--acceptance-rate", 0.0, 1.0, c.accept)
        DBL_OPT("--range-ratio", 0.0, 1.0, ratio)
        DBL_OPT("--long-fraction", 0.0, 1.0, long_frac)
        DBL_OPT("--mem-util", 0.01, 1.0, c.mem_util)
        DBL_OPT("--reserve-gib", 0.0, 1e6, c.reserve_gib)
        DBL_OPT("--swap-gib", 0.0, 1e6, c.swap_gib)
        DBL_OPT("--step-overhead-ms", 0.0, 1e6, ovh_ms)
        fprintf(stderr, "hyserve simulate: unknown option '%s'\n", a);
        usage(stderr);
        return 2;
    }
    c.step_overhead_s = ovh_ms / 1e3;
    if (!model) {
        fprintf(stderr, "hyserve simulate: --model is required\n");
        usage(stderr);
        return 2;
    }
    if (mcfg_load(model, &c.model, err, sizeof err) != HS_OK) {
        fprintf(stderr, "hyserve: error: %s\n", err);
        return 2;
    }
    if (c.max_num_batched_tokens < c.max_num_seqs) {
        fprintf(stderr, "hyserve simulate: --max-num-batched-tokens (%d) must be >= --max-num-seqs (%d)\n",
                c.max_num_batched_tokens, c.max_num_seqs);
        return 2;
    }
    layout_kind_t kinds[3];
    int n_kinds = 0;
    const char *names[3] = {"coupled", "slots", "paged"};
    const layout_kind_t kv[3] = {LAYOUT_COUPLED, LAYOUT_SLOTS, LAYOUT_PAGED};
    for (int k = 0; k < 3; k++) {
        const char *p = strstr(layouts, names[k]);
        if (p) kinds[n_kinds++] = kv[k];
    }
    if (!n_kinds) {
        fprintf(stderr, "hyserve simulate: --layouts: some of coupled,slots,paged\n");
        return 2;
    }

    sim_workload_t w;
    memset(&w, 0, sizeof w);
    if (trace) {
        if (load_trace(trace, &w, err, sizeof err) != HS_OK) {
            fprintf(stderr, "hyserve: error: %s\n", err);
            sim_workload_free(&w);
            return 2;
        }
    } else {
        sim_workload_random(&w, (int)num_prompts, (int)in_len, (int)out_len, ratio, rate, long_frac, (int)long_in,
                            (int)long_out, (uint64_t)seed);
    }

    sim_result_t res[3];
    memset(res, 0, sizeof res);
    double t0 = hs_now();
    int status = 0;
    for (int k = 0; k < n_kinds; k++) {
        if (sim_run(&c, kinds[k], &w, &res[k], err, sizeof err) != HS_OK) {
            fprintf(stderr, "hyserve: error: %s: %s\n", sim_layout_name(kinds[k]), err);
            status = 1;
        }
    }
    double wall = hs_now() - t0;
    uint64_t in_tot = 0, out_tot = 0;
    for (int i = 0; i < w.n; i++) {
        in_tot += (uint64_t)w.in_len[i];
        out_tot += (uint64_t)w.out_len[i];
    }
    char desc[256];
    mcfg_describe(&c.model, desc, sizeof desc);

    if (json) {
        json_t *root = json_object();
        json_object_set_new(root, "note", json_string("a model, not a measurement"));
        json_object_set_new(root, "model", json_string(model));
        json_object_set_new(root, "tp", json_integer(c.tp));
        json_object_set_new(root, "gpu", json_string(c.gpu->name));
        json_object_set_new(root, "kv_dtype", json_string(hs_dtype_name(c.kv_dtype)));
        json_object_set_new(root, "state_dtype", json_string(hs_dtype_name(c.state_dtype)));
        json_object_set_new(root, "weights_dtype", json_string(hs_dtype_name(c.weights_dtype)));
        json_object_set_new(root, "num_requests", json_integer(w.n));
        json_object_set_new(root, "input_tokens", json_integer((json_int_t)in_tot));
        json_object_set_new(root, "output_tokens", json_integer((json_int_t)out_tot));
        json_object_set_new(root, "max_concurrency", json_integer(c.max_concurrency));
        json_object_set_new(root, "max_num_seqs", json_integer(c.max_num_seqs));
        json_object_set_new(root, "max_num_batched_tokens", json_integer(c.max_num_batched_tokens));
        json_object_set_new(root, "policy", json_string(c.policy == SCHED_POLICY_SEED ? "seed" : "hyserve"));
        json_object_set_new(root, "preempt", json_string(c.preempt == SCHED_PREEMPT_SWAP ? "swap" : "recompute"));
        json_object_set_new(root, "step_overhead_ms", json_real(ovh_ms));
        json_object_set_new(root, "num_speculative_tokens", json_integer(c.k_spec));
        json_object_set_new(root, "acceptance_rate", json_real(c.accept));
        json_object_set_new(root, "wall_s", json_real(wall));
        json_t *arr = json_array();
        for (int k = 0; k < n_kinds; k++) {
            sim_result_t *r = &res[k];
            json_t *o = json_object();
            json_object_set_new(o, "layout", json_string(sim_layout_name(kinds[k])));
            json_object_set_new(o, "ok", json_boolean(r->ok));
            if (!r->ok) {
                json_object_set_new(o, "error", json_string(r->error));
                json_array_append_new(arr, o);
                continue;
            }
            json_object_set_new(o, "kv_block_bytes", json_integer((json_int_t)r->mem.kv_bytes));
            json_object_set_new(o, "state_bytes", json_integer((json_int_t)r->mem.state_bytes));
            json_object_set_new(o, "page_bytes", json_integer((json_int_t)r->mem.page_bytes));
            json_object_set_new(o, "state_pages", json_integer(r->mem.E));
            json_object_set_new(o, "pool_pages", json_integer(r->mem.n_pages));
            json_object_set_new(o, "state_slots", json_integer(r->mem.n_slots));
            json_object_set_new(o, "weights_gib", json_real(r->mem.weights_gib));
            json_object_set_new(o, "budget_gib", json_real(r->mem.budget_gib));
            json_object_set_new(o, "completed", json_integer(r->n_done));
            json_object_set_new(o, "failed", json_integer(r->n_failed));
            json_object_set_new(o, "duration_s", json_real(r->duration_s));
            json_object_set_new(o, "total_tokens_per_s", json_real(r->total_tps));
            json_object_set_new(o, "output_tokens_per_s", json_real(r->output_tps));
            json_object_set_new(o, "ttft_ms", json_triple(r->ttft_ms));
            json_object_set_new(o, "tpot_ms", json_triple(r->tpot_ms));
            json_object_set_new(o, "mean_running", json_real(r->mean_running));
            json_object_set_new(o, "max_running", json_integer(r->max_running));
            json_object_set_new(o, "mean_batch", json_real(r->mean_batch));
            json_object_set_new(o, "steps", json_integer((json_int_t)r->steps));
            json_object_set_new(o, "preemptions_recompute", json_integer((json_int_t)r->preempt_recompute));
            json_object_set_new(o, "preemptions_swap", json_integer((json_int_t)r->preempt_swap));
            json_object_set_new(o, "recomputed_tokens", json_integer((json_int_t)r->recomputed_tokens));
            json_t *occ = json_object();
            json_object_set_new(occ, "kv_fraction", json_array_of(r->occ_kv, r->n_occ));
            json_object_set_new(occ, "state_fraction", json_array_of(r->occ_state, r->n_occ));
            json_object_set_new(occ, "running", json_array_of(r->occ_running, r->n_occ));
            json_object_set_new(o, "occupancy", occ);
            json_array_append_new(arr, o);
        }
        json_object_set_new(root, "layouts", arr);
        char *s = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        puts(s);
        free(s);
        json_decref(root);
    } else {
        char b1[32], b2[32], b3[32];
        printf("hyserve simulate -- A MODEL, NOT A MEASUREMENT\n");
        printf("  step time = bytes / (%.2f TB/s x %.3f) + FLOPs / (%.0f TFLOP/s x %.3f) + all-reduce; see src/sim.h\n",
               c.gpu->bw_tbs, SIM_BW_EFF, c.gpu->flops_tf, SIM_FLOPS_EFF);
        printf("  model %s: %s\n", model, desc);
        printf("  tp %d, %s (%.2f GiB), kv %s, state %s, weights %s, mem-util %.2f, step overhead %.1f ms", c.tp,
               c.gpu->name, c.gpu->mem_gib, hs_dtype_name(c.kv_dtype), hs_dtype_name(c.state_dtype),
               hs_dtype_name(c.weights_dtype), c.mem_util, ovh_ms);
        if (c.k_spec > 0) printf(", MTP k=%d (acceptance %.2f)", c.k_spec, c.accept);
        printf("\n");
        printf("  workload: %d requests, %llu input + %llu output tokens%s; concurrency %d; rate %s; "
               "max-num-seqs %d, max-num-batched-tokens %d, preempt %s, policy %s\n",
               w.n, (unsigned long long)in_tot, (unsigned long long)out_tot, trace ? " (trace)" : "",
               c.max_concurrency, rate > 0 ? "poisson" : "inf", c.max_num_seqs, c.max_num_batched_tokens,
               c.preempt == SCHED_PREEMPT_SWAP ? "swap" : "recompute",
               c.policy == SCHED_POLICY_SEED ? "seed (ATOM #602)" : "hyserve");
        printf("\n%-8s %10s %10s %3s %9s %9s | %9s %9s | %-20s | %-20s | %6s %5s %8s\n", "layout", "page", "state/req",
               "E", "pages", "budget", "total t/s", "out t/s", "TTFT ms p50/p90/p99", "TPOT ms p50/p90/p99", "run",
               "max", "preempt");
        for (int k = 0; k < n_kinds; k++) {
            sim_result_t *r = &res[k];
            if (!r->ok) {
                printf("%-8s cannot be built: %s\n", sim_layout_name(kinds[k]), r->error);
                continue;
            }
            char tt[64], tp[64];
            snprintf(tt, sizeof tt, "%.0f/%.0f/%.0f", r->ttft_ms[0], r->ttft_ms[1], r->ttft_ms[2]);
            snprintf(tp, sizeof tp, "%.1f/%.1f/%.1f", r->tpot_ms[0], r->tpot_ms[1], r->tpot_ms[2]);
            printf("%-8s %10s %10s %3d %9lld %9s | %9.0f %9.0f | %-20s | %-20s | %6.1f %5d %8llu\n",
                   sim_layout_name(kinds[k]), gib_str(b1, sizeof b1, (double)r->mem.page_bytes),
                   gib_str(b2, sizeof b2, (double)r->mem.state_bytes), r->mem.E, (long long)r->mem.n_pages,
                   gib_str(b3, sizeof b3, r->mem.budget_gib * 1024 * 1024 * 1024), r->total_tps, r->output_tps, tt,
                   tp, r->mean_running, r->max_running,
                   (unsigned long long)(r->preempt_recompute + r->preempt_swap));
            if (r->n_failed) printf("         %d requests refused (first: %s)\n", r->n_failed, r->error);
        }
        printf("\npool occupancy over time (one column = 1/%d of each run; ' .:-=+*#%%@' = 0 .. the row's peak,\n"
               "peaks in %% of the pool's pages / in requests)\n", c.occ_buckets);
        for (int k = 0; k < n_kinds; k++) {
            sim_result_t *r = &res[k];
            if (!r->ok) continue;
            char line[256];
            double pk = 0, ps = 0, pr = 0;
            for (int i = 0; i < r->n_occ; i++) {
                if (r->occ_kv[i] > pk) pk = r->occ_kv[i];
                if (r->occ_state[i] > ps) ps = r->occ_state[i];
                if (r->occ_running[i] > pr) pr = r->occ_running[i];
            }
            spark(line, r->occ_kv, r->n_occ, pk);
            printf("  %-8s KV      |%s| peak %5.1f%%\n", sim_layout_name(kinds[k]), line, 100 * pk);
            spark(line, r->occ_state, r->n_occ, ps);
            printf("  %-8s state   |%s| peak %5.1f%%%s\n", "", line, 100 * ps,
                   kinds[k] == LAYOUT_SLOTS ? " (reserved slots included)" : "");
            spark(line, r->occ_running, r->n_occ, pr);
            printf("  %-8s running |%s| peak %5.1f\n", "", line, pr);
        }
        /* headline: each layout against the first one that was built (coupled first) */
        int base = -1;
        for (int k = 0; k < n_kinds; k++)
            if (res[k].ok && res[k].total_tps > 0) {
                base = k;
                break;
            }
        if (base >= 0 && n_kinds > 1) {
            printf("\n");
            for (int k = base + 1; k < n_kinds; k++)
                if (res[k].ok)
                    printf("%s vs %s: total throughput %+.0f%%, mean running %.1f vs %.1f, preemptions %llu vs %llu\n",
                           sim_layout_name(kinds[k]), sim_layout_name(kinds[base]),
                           100.0 * (res[k].total_tps / res[base].total_tps - 1), res[k].mean_running,
                           res[base].mean_running,
                           (unsigned long long)(res[k].preempt_recompute + res[k].preempt_swap),
                           (unsigned long long)(res[base].preempt_recompute + res[base].preempt_swap));
            if (n_kinds == 3 && base == 0 && res[1].ok && res[2].ok && res[1].total_tps > 0)
                printf("paged vs slots: total throughput %+.0f%%, mean running %.1f vs %.1f\n",
                       100.0 * (res[2].total_tps / res[1].total_tps - 1), res[2].mean_running, res[1].mean_running);
        }
        printf("(simulated in %.2f s of wall time)\n", wall);
    }
    for (int k = 0; k < n_kinds; k++) sim_result_free(&res[k]);
    sim_workload_free(&w);
    return status;
}
