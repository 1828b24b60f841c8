/*
 * cmd_serve: `hyserve serve --model DIR [options]`, the OpenAI-compatible server.
 *
 * Parses argv into srv_config_t (the option table below is also the --help text),
 * starts the server (server.h), prints one line "hyserve: listening on
 * http://HOST:PORT (model NAME)" to stderr, then waits for SIGINT or SIGTERM in
 * sigwait(): both signals are blocked in every thread, so no handler runs and the
 * shutdown is ordinary code. On the signal it drains (srv_shutdown: stop accepting,
 * let in-flight requests finish for up to --drain-timeout seconds, abort the rest),
 * stops the threads and exits 0. A second signal during the drain does not interrupt
 * it; the drain is bounded anyway.
 *
 * Exit status: 0 after a clean shutdown, 2 bad usage or a model/tokenizer that does
 * not load, 1 when the address cannot be bound or another start-up error happens.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "server.h"
#include "util.h"

typedef enum { OPT_STR, OPT_INT, OPT_F64, OPT_SIZE_MB, OPT_FLAG_OFF } opt_kind_t;

typedef struct {
    const char *name, *arg, *help;
    opt_kind_t kind;
    void *dst;
    int64_t lo, hi;
} opt_t;

static int usage(FILE *f, const opt_t *opts, int rc) {
    fprintf(f, "usage: hyserve serve --model DIR [options]\n\n"
               "OpenAI-compatible server: POST /v1/completions, /v1/chat/completions; GET /v1/models,\n"
               "/health (?check=1 runs the pool check), /metrics. SIGINT/SIGTERM drain and exit.\n\noptions:\n");
    for (const opt_t *o = opts; o->name; o++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(f, "  %-28s %s\n", left, o->help);
    }
    return rc;
}

int cmd_serve(int argc, char **argv) {
    srv_config_t cfg;
    srv_config_default(&cfg);
    hs_engine_config_t *ec = &cfg.engine;
    int64_t port = cfg.port, max_seqs = ec->max_num_seqs, max_len = 0, batched = ec->max_num_batched_tokens;
    int64_t block = ec->block_size, threads = 0, pool_mb = 0, max_conn = cfg.max_connections;
    double drain = 30, mem_util = 0.9;
    bool prefix = true;
    const char *model = NULL, *async_s = NULL;
    const opt_t opts[] = {
        {"--model", "DIR", "model directory (config.json, safetensors, tokenizer) (required)", OPT_STR, &model, 0, 0},
        {"--tokenizer", "PATH", "tokenizer.json or its directory (default: the model directory)", OPT_STR, &cfg.tokenizer, 0, 0},
        {"--host", "ADDR", "address to bind, an IP literal (default 127.0.0.1)", OPT_STR, &cfg.host, 0, 0},
        {"--port", "N", "port (default 8000; 0: any free port, printed at start)", OPT_INT, &port, 0, 65535},
        {"--api-key", "KEY", "require 'Authorization: Bearer KEY' on /v1/*", OPT_STR, &cfg.api_key, 0, 0},
        {"--served-model-name", "NAME", "model name in the API (default: the model directory's name)", OPT_STR,
         &cfg.served_model_name, 0, 0},
        {"--device", "cpu|cuda", "where the model runs (default cpu)", OPT_STR, &ec->device, 0, 0},
        {"--load-format", "auto|dummy", "safetensors weights or random ones (default auto)", OPT_STR, &ec->load_format, 0, 0},
        {"--max-num-seqs", "N", "requests in one batch (default 256)", OPT_INT, &max_seqs, 1, 1 << 20},
        {"--max-model-len", "N", "prompt + output tokens per request (default: the config's limit)", OPT_INT, &max_len, 1,
         1 << 30},
        {"--max-num-batched-tokens", "N", "tokens per engine step (default 2048)", OPT_INT, &batched, 1, 1 << 30},
        {"--block-size", "N", "tokens per KV block (default 16)", OPT_INT, &block, 1, 1 << 16},
        {"--state-layout", "paged|slots|coupled", "recurrent-state layout (default paged)", OPT_STR, &ec->state_layout, 0, 0},
        {"--kv-dtype", "T", "KV cache type: bf16, fp8, f32 (default: the engine's)", OPT_STR, &ec->kv_dtype, 0, 0},
        {"--state-dtype", "T", "recurrent-state type: f32 or bf16 (default: the config's mamba_ssm_dtype)", OPT_STR,
         &ec->state_dtype, 0, 0},
        {"--pool-mb", "N", "cpu: MiB for the page pool (default 1024)", OPT_SIZE_MB, &pool_mb, 1, 1 << 24},
        {"--gpu-memory-utilization", "F", "cuda: fraction of device memory to use (default 0.9)", OPT_F64, &mem_util, 0, 1},
        {"--threads", "N", "cpu: compute threads (default: all cores)", OPT_INT, &threads, 1, 4096},
        {"--no-prefix-caching", NULL, "turn the prefix cache off", OPT_FLAG_OFF, &prefix, 0, 0},
        {"--async-scheduling", "on|off|auto", "schedule and issue the next step while the device runs this one "
         "(default auto: on for cuda)", OPT_STR, &async_s, 0, 0},
        {"--max-connections", "N", "concurrent HTTP connections (default 1024)", OPT_INT, &max_conn, 1, 1 << 16},
        {"--drain-timeout", "S", "on SIGTERM: seconds in-flight requests get to finish (default 30)", OPT_F64, &drain, 0,
         3600},
        {NULL, NULL, NULL, 0, NULL, 0, 0},
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage(stdout, opts, 0);
        const opt_t *o = opts;
        while (o->name && strcmp(o->name, a)) o++;
        if (!o->name) {
            fprintf(stderr, "hyserve serve: unknown option '%s'\n", a);
            return usage(stderr, opts, 2);
        }
        if (o->kind == OPT_FLAG_OFF) {
            *(bool *)o->dst = false;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "hyserve serve: %s needs a value\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (o->kind == OPT_STR) {
            *(const char **)o->dst = v;
        } else if (o->kind == OPT_F64) {
            double x;
            if (hs_parse_f64(v, &x) || x < (double)o->lo || x > (double)o->hi) {
                fprintf(stderr, "hyserve serve: %s: '%s' is not a number in [%lld, %lld]\n", a, v, (long long)o->lo,
                        (long long)o->hi);
                return 2;
            }
            *(double *)o->dst = x;
        } else {
            if (hs_parse_i64(v, o->lo, o->hi, (int64_t *)o->dst)) {
                fprintf(stderr, "hyserve serve: %s: '%s' is not an integer in [%lld, %lld]\n", a, v, (long long)o->lo,
                        (long long)o->hi);
                return 2;
            }
        }
    }
    if (!model) {
        fprintf(stderr, "hyserve serve: --model is required\n");
        return usage(stderr, opts, 2);
    }
    ec->model = model;
    cfg.port = (int)port;
    cfg.max_connections = (int)max_conn;
    ec->max_num_seqs = (int)max_seqs;
    ec->max_model_len = (int)max_len;
    ec->max_num_batched_tokens = (int)batched;
    ec->block_size = (int)block;
    ec->n_threads = (int)threads;
    ec->mem_util = mem_util;
    ec->enable_prefix_caching = prefix;
    if (async_s && hs_parse_onoff(async_s, &ec->async_scheduling)) {
        fprintf(stderr, "hyserve serve: --async-scheduling: expected on, off or auto, got '%s'\n", async_s);
        return 2;
    }
    if (pool_mb) ec->pool_bytes = (size_t)pool_mb << 20;

    /* SIGINT/SIGTERM are taken by sigwait below; every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[1024];
    srv_t *s = NULL;
    int rc = srv_create(&cfg, &s, err, sizeof err);
    if (rc != HS_OK) {
        fprintf(stderr, "hyserve: error: %s\n", err);
        return rc == HS_ERR_IO || rc == HS_ERR_STATE ? 1 : 2;
    }
    fprintf(stderr, "hyserve: listening on http://%s:%d (model %s)\n", cfg.host, srv_port(s), srv_model_name(s));
    fflush(stderr);
    int sig = 0;
    sigwait(&sigs, &sig);
    hs_info("%s: draining (up to %.0f s)", sig == SIGINT ? "SIGINT" : "SIGTERM", drain);
    int aborted = srv_shutdown(s, drain);
    if (aborted) hs_info("aborted %d requests that did not finish in time", aborted);
    srv_destroy(s);
    hs_info("stopped");
    return 0;
}
