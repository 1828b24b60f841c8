/*
 * hyserve bench: drive the engine with random prompts and report throughput and
 * latency, in one process (no HTTP). The default shape is the seed's benchmark
 * (ATOM #602): random prompts, input and output lengths uniform in
 * [range_ratio * len, len] with len 1024 and ratio 0.8, 1,280 prompts, at most 128
 * in flight, every request runs to its output length (ignore_eos).
 *
 *   hyserve bench --model NAME|DIR [--load-format dummy|auto] [--device cpu|cuda]
 *       [--input-len 1024] [--output-len 1024] [--range-ratio 0.8] [--num-prompts 1280]
 *       [--max-concurrency 128] [--max-num-seqs N] [--max-num-batched-tokens N]
 *       [--state-layout paged|slots|coupled] [--pool-gib G] [--threads N] [--seed S]
 *       [--async-scheduling on|off|auto] [--json]
 *
 * Reported: requests, input and output tokens, wall time, total tokens/s ((input +
 * output) / duration, the seed's "Total Token throughput") and output tokens/s,
 * TTFT and TPOT percentiles, mean running batch per step, preemptions, and the pool
 * (pages, E), and the decode roofline: the bytes a decode step must move at least
 * (weights, the recurrent state of every decoding row read and written, their KV
 * read once; averaged over the run's steps) over the device's measured copy
 * bandwidth, against the median TPOT. A shipped model name without weight files
 * implies --load-format dummy.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hyserve.h"
#include "sample.h"
#include "util.h"

typedef struct {
    int n_in, n_out;
    double t_submit, t_first, t_end;
    int got;
    uint64_t id;
} breq_t;

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p) {
    if (n == 0) return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    int i = (int)ceil(p / 100.0 * n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/* Bytes one decode step must move at least (the roofline's numerator): the weights it
 * reads (MoE: the experts that b rows touch, expected under uniform routing), every
 * decoding row's recurrent state read and written, and the KV cache of all their
 * contexts (ctx tokens in all) read once. Split into weights, state and KV. */
static void step_bytes(const hs_model_info_t *m, int b, double ctx, double out[3]) {
    double w = (double)m->weight_bytes;
    if (m->n_experts > 0) {
        const double touched = m->n_experts * (1.0 - pow(1.0 - (double)m->top_k / m->n_experts, b));
        w -= (m->n_experts - touched) * (double)m->expert_bytes;
    }
    out[0] = w;
    out[1] = 2.0 * b * (double)m->state_bytes;
    out[2] = ctx * (double)m->kv_bytes_per_token;
}

static void usage(FILE *f) {
    fprintf(f, "usage: hyserve bench --model NAME|DIR [options]  (see the header of src/cmd_bench.c or README)\n"
               "  --load-format dummy|auto  --device cpu|cuda  --input-len N  --output-len N  --range-ratio R\n"
               "  --num-prompts N  --max-concurrency N  --max-num-seqs N  --max-num-batched-tokens N\n"
               "  --state-layout paged|slots|coupled  --pool-gib G  --threads N  --seed S\n"
               "  --async-scheduling on|off|auto (auto: on for cuda)  --json\n");
}

static int has_weights(const char *model) {
    struct stat st;
    char p[4096];
    if (stat(model, &st) != 0 || !S_ISDIR(st.st_mode)) return 0;
    snprintf(p, sizeof p, "%s/model.safetensors", model);
    if (stat(p, &st) == 0) return 1;
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", model);
    return stat(p, &st) == 0;
}

int cmd_bench(int argc, char **argv) {
    hs_engine_config_t cfg;
    hs_engine_config_default(&cfg);
    cfg.load_format = NULL;
    int in_len = 1024, out_len = 1024, n_prompts = 1280, conc = 128, json = 0;
    double ratio = 0.8, pool_gib = 0;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t iv;
        double dv;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "hyserve bench: %s needs a value\n", a);
            return 2;
        }
        i++;
        int bad = 0;
        if (!strcmp(a, "--model")) cfg.model = v;
        else if (!strcmp(a, "--load-format")) cfg.load_format = v;
        else if (!strcmp(a, "--device")) cfg.device = v;
        else if (!strcmp(a, "--state-layout")) cfg.state_layout = v;
        else if (!strcmp(a, "--kv-dtype")) cfg.kv_dtype = v;
        else if (!strcmp(a, "--state-dtype")) cfg.state_dtype = v;
        else if (!strcmp(a, "--async-scheduling")) bad = hs_parse_onoff(v, &cfg.async_scheduling);
        else if (!strcmp(a, "--input-len")) bad = hs_parse_i64(v, 1, 1 << 22, &iv), in_len = (int)iv;
        else if (!strcmp(a, "--output-len")) bad = hs_parse_i64(v, 1, 1 << 22, &iv), out_len = (int)iv;
        else if (!strcmp(a, "--num-prompts")) bad = hs_parse_i64(v, 1, 1 << 24, &iv), n_prompts = (int)iv;
        else if (!strcmp(a, "--max-concurrency")) bad = hs_parse_i64(v, 1, 1 << 20, &iv), conc = (int)iv;
        else if (!strcmp(a, "--max-num-seqs")) bad = hs_parse_i64(v, 1, 1 << 20, &iv), cfg.max_num_seqs = (int)iv;
        else if (!strcmp(a, "--max-num-batched-tokens"))
            bad = hs_parse_i64(v, 1, 1 << 24, &iv), cfg.max_num_batched_tokens = (int)iv;
        else if (!strcmp(a, "--threads")) bad = hs_parse_i64(v, 0, 1024, &iv), cfg.n_threads = (int)iv;
        else if (!strcmp(a, "--seed")) bad = hs_parse_i64(v, 0, INT64_MAX, &iv), seed = (uint64_t)iv;
        else if (!strcmp(a, "--range-ratio")) bad = hs_parse_f64(v, &dv) || dv <= 0 || dv > 1, ratio = dv;
        else if (!strcmp(a, "--pool-gib")) bad = hs_parse_f64(v, &dv) || dv <= 0, pool_gib = dv;
        else if (!strcmp(a, "--mem-util")) bad = hs_parse_f64(v, &dv) || dv <= 0 || dv > 1, cfg.mem_util = dv;
        else {
            fprintf(stderr, "hyserve bench: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "hyserve bench: bad value '%s' for %s\n", v, a);
            return 2;
        }
    }
    if (!cfg.model) {
        usage(stderr);
        return 2;
    }
    if (!cfg.load_format) cfg.load_format = has_weights(cfg.model) ? "auto" : "dummy";
    if (pool_gib > 0) cfg.pool_bytes = (size_t)(pool_gib * (double)(1ull << 30));
    if (cfg.max_num_seqs < conc) cfg.max_num_seqs = conc;
    if (cfg.max_num_batched_tokens < cfg.max_num_seqs) cfg.max_num_batched_tokens = cfg.max_num_seqs;

    char err[1024];
    hs_engine_t *e;
    double t_load = hs_now();
    if (hs_engine_create(&cfg, &e, err, sizeof err) != HS_OK) {
        fprintf(stderr, "hyserve bench: %s\n", err);
        return 2;
    }
    t_load = hs_now() - t_load;
    hs_model_info_t info;
    hs_engine_info(e, &info);

    /* The workload: lengths and tokens from one seeded stream. */
    smp_rng_t rng;
    smp_rng_seed(&rng, seed);
    breq_t *rq = hs_calloc((size_t)n_prompts, sizeof *rq);
    int lo_in = (int)(ratio * in_len), lo_out = (int)(ratio * out_len);
    for (int i = 0; i < n_prompts; i++) {
        rq[i].n_in = lo_in + (int)(smp_rng_next(&rng) % (uint64_t)(in_len - lo_in + 1));
        rq[i].n_out = lo_out + (int)(smp_rng_next(&rng) % (uint64_t)(out_len - lo_out + 1));
        if (rq[i].n_in + rq[i].n_out > info.max_model_len) {
            fprintf(stderr, "hyserve bench: %d + %d tokens exceed the model length %d\n", rq[i].n_in, rq[i].n_out,
                    info.max_model_len);
            hs_engine_destroy(e);
            free(rq);
            return 2;
        }
    }
    int32_t *prompt = hs_malloc(sizeof(int32_t) * (size_t)in_len);
    int next = 0, done = 0, in_flight = 0;
    double t0 = hs_now();
    double batch_sum = 0;
    int64_t steps = 0;
    int64_t peak_state = 0, peak_kv = 0;
    /* id -> request index: ids are consecutive from the first submit */
    uint64_t id0 = 0;
    int lo = 0;                        /* first request not finished */
    double roof[3] = {0, 0, 0}, roof_rows = 0;
    int64_t roof_steps = 0;
    while (done < n_prompts) {
        while (in_flight < conc && next < n_prompts) {
            breq_t *r = &rq[next];
            for (int j = 0; j < r->n_in; j++) prompt[j] = (int32_t)(smp_rng_next(&rng) % (uint64_t)info.vocab);
            hs_sampling_t sp;
            hs_sampling_default(&sp);
            sp.temperature = 0;
            sp.max_tokens = r->n_out;
            sp.ignore_eos = true;
            if (hs_engine_submit(e, prompt, r->n_in, &sp, &r->id, err, sizeof err) != HS_OK) {
                fprintf(stderr, "hyserve bench: submit: %s\n", err);
                hs_engine_destroy(e);
                free(rq);
                free(prompt);
                return 1;
            }
            if (next == 0) id0 = r->id;
            r->t_submit = hs_now();
            next++;
            in_flight++;
        }
        /* Roofline bookkeeping: the rows this step decodes and their contexts. */
        while (lo < next && rq[lo].t_end != 0) lo++;
        int nb = 0;
        double ctx = 0;
        for (int i = lo; i < next; i++)
            if (rq[i].got > 0 && rq[i].t_end == 0) nb++, ctx += rq[i].n_in + rq[i].got;
        if (nb > 0) {
            double by[3];
            step_bytes(&info, nb, ctx, by);
            for (int k = 0; k < 3; k++) roof[k] += by[k];
            roof_rows += nb;
            roof_steps++;
        }
        if (hs_engine_step(e) != HS_OK) {
            fprintf(stderr, "hyserve bench: a step failed\n");
            break;
        }
        hs_stats_t st;
        hs_engine_stats(e, &st);
        batch_sum += st.n_running;
        steps++;
        if (st.pages_state > peak_state) peak_state = st.pages_state;
        if (st.pages_kv > peak_kv) peak_kv = st.pages_kv;
        hs_event_t ev;
        double now = hs_now();
        while (hs_engine_poll(e, &ev)) {
            breq_t *r = &rq[ev.id - id0];
            if (ev.token >= 0 && r->got++ == 0) r->t_first = now;
            if (ev.finish != HS_FINISH_NONE) {
                r->t_end = now;
                done++;
                in_flight--;
            }
        }
    }
    double dur = hs_now() - t0;
    hs_stats_t st;
    hs_engine_stats(e, &st);

    int64_t tin = 0, tout = 0;
    double *ttft = hs_malloc(sizeof(double) * (size_t)n_prompts), *tpot = hs_malloc(sizeof(double) * (size_t)n_prompts);
    int nt = 0;
    for (int i = 0; i < n_prompts; i++) {
        tin += rq[i].n_in;
        tout += rq[i].got;
        ttft[i] = (rq[i].t_first - rq[i].t_submit) * 1e3;
        if (rq[i].got > 1) tpot[nt++] = (rq[i].t_end - rq[i].t_first) * 1e3 / (rq[i].got - 1);
    }
    double p[3] = {50, 90, 99}, ttft_p[3], tpot_p[3];
    for (int k = 0; k < 3; k++) ttft_p[k] = pct(ttft, n_prompts, p[k]), tpot_p[k] = pct(tpot, nt, p[k]);
    /* The roofline: mean bytes of a decode step over the measured copy bandwidth. */
    double bw = 0, step_b = 0, floor_ms = 0;
    if (roof_steps > 0) {
        for (int k = 0; k < 3; k++) roof[k] /= (double)roof_steps;
        step_b = roof[0] + roof[1] + roof[2];
        if (hs_engine_membw(e, &bw) == HS_OK && bw > 0) floor_ms = step_b / bw * 1e3;
    }
    if (json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:i, s:I, s:I, s:f, s:f, s:f, s:f, s:[f,f,f], s:[f,f,f], s:f, s:I, s:I, "
                              "s:i, s:I, s:I}",
                              "model", cfg.model, "device", cfg.device, "state_layout", cfg.state_layout,
                              "requests", n_prompts, "input_tokens", (json_int_t)tin, "output_tokens", (json_int_t)tout,
                              "load_s", t_load, "duration_s", dur, "total_tokens_per_s", (tin + tout) / dur,
                              "output_tokens_per_s", tout / dur, "ttft_ms_p50_p90_p99", ttft_p[0], ttft_p[1], ttft_p[2],
                              "tpot_ms_p50_p90_p99", tpot_p[0], tpot_p[1], tpot_p[2], "mean_running_batch",
                              steps ? batch_sum / steps : 0.0, "preemptions", (json_int_t)st.preemptions,
                              "pool_pages", (json_int_t)st.pages_total, "state_pages_per_request",
                              st.state_pages_per_request, "peak_kv_pages", (json_int_t)peak_kv, "peak_state_pages",
                              (json_int_t)peak_state);
        json_object_set_new(o, "decode_step_bytes", json_real(step_b));
        json_object_set_new(o, "copy_bytes_per_s", json_real(bw));
        json_object_set_new(o, "decode_floor_ms", json_real(floor_ms));
        json_object_set_new(o, "roofline_ratio", json_real(tpot_p[0] > 0 ? floor_ms / tpot_p[0] : 0.0));
        char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6));
        puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("model %s (%s weights) on %s, %s layout; loaded in %.1f s\n", cfg.model, cfg.load_format, cfg.device,
               cfg.state_layout, t_load);
        printf("requests %d, input %lld tokens, output %lld tokens, %.2f s\n", n_prompts, (long long)tin,
               (long long)tout, dur);
        printf("total tokens/s    %10.1f\noutput tokens/s   %10.1f\n", (tin + tout) / dur, tout / dur);
        printf("TTFT ms  p50 %.1f  p90 %.1f  p99 %.1f\n", ttft_p[0], ttft_p[1], ttft_p[2]);
        printf("TPOT ms  p50 %.2f  p90 %.2f  p99 %.2f\n", tpot_p[0], tpot_p[1], tpot_p[2]);
        printf("mean running batch %.1f, preemptions %lld, pool %lld pages (peak KV %lld, peak state %lld, E = %d)\n",
               steps ? batch_sum / steps : 0.0, (long long)st.preemptions, (long long)st.pages_total,
               (long long)peak_kv, (long long)peak_state, st.state_pages_per_request);
        if (floor_ms > 0)
            printf("roofline: a decode step moves %.2f GB (weights %.2f, state %.2f, KV %.2f) at %.1f rows on "
                   "average; copy bandwidth %.0f GB/s -> floor %.2f ms per step; TPOT p50 %.2f ms = %.0f%% of the "
                   "floor speed\n",
                   step_b / 1e9, roof[0] / 1e9, roof[1] / 1e9, roof[2] / 1e9, roof_rows / (double)roof_steps,
                   bw / 1e9, floor_ms, tpot_p[0], tpot_p[0] > 0 ? 100.0 * floor_ms / tpot_p[0] : 0.0);
    }
    free(ttft);
    free(tpot);
    free(prompt);
    free(rq);
    hs_engine_destroy(e);
    return 0;
}
