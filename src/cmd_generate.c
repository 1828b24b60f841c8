/*
 * hyserve generate: run one prompt through the engine and print what it makes.
 *
 *   hyserve generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3) [--max-tokens N]
 *       [--temperature T] [--top-p P] [--top-k K] [--min-p P] [--seed S]
 *       [--top-logprobs K] [--ignore-eos] [--device cpu|cuda] [--load-format auto|dummy]
 *       [--threads N] [--state-layout paged|slots|coupled] [--state-dtype f32|bf16]
 *       [--kv-dtype auto|bf16|f32] [--async-scheduling on|off|auto] [--json]
 *
 * Without --json the text (or, with no tokenizer, the ids) is streamed to stdout as
 * it is generated. With --json one object is printed at the end:
 *   {"prompt_ids": [...], "tokens": [...], "logprobs": [...],
 *    "top_logprobs": [[{"token": id, "logprob": x}, ...], ...],
 *    "text": "...", "finish_reason": "length" | "stop"}
 * ("text" only when the model directory has a tokenizer.json). Exit status: 0 ok,
 * 1 runtime failure, 2 bad usage or a model that does not load.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hyserve.h"
#include "tok.h"
#include "util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: hyserve generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3) [options]\n"
            "  --max-tokens N        tokens to generate (16)\n"
            "  --temperature T       0 = greedy (1.0)\n"
            "  --top-p P  --top-k K  --min-p P   sampling filters (off)\n"
            "  --seed S              random seed of the request\n"
            "  --top-logprobs K      alternatives reported per token (0..20)\n"
            "  --ignore-eos          keep going past end-of-sequence tokens\n"
            "  --device cpu|cuda     backend (cpu)\n"
            "  --load-format auto|dummy   weights from the checkpoint or random (auto)\n"
            "  --threads N           CPU threads (all cores)\n"
            "  --state-layout paged|slots|coupled   pool layout (paged)\n"
            "  --state-dtype f32|bf16   SSM state storage (the config's mamba_ssm_dtype, else bf16)\n"
            "  --kv-dtype auto|bf16|f32 KV cache storage (auto: the backend's activation dtype)\n"
            "  --async-scheduling on|off|auto   overlapped steps (auto: on for cuda)\n"
            "  --json                print one JSON object at the end\n");
}

static int parse_ids(const char *s, int32_t **ids, int *n) {
    int cap = 16, k = 0;
    int32_t *v = hs_malloc(sizeof *v * (size_t)cap);
    const char *p = s;
    while (*p) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 0 || x > 0x7fffffff || (*end && *end != ',')) {
            free(v);
            return HS_ERR_INVALID;
        }
        if (k == cap) v = hs_realloc(v, sizeof *v * (size_t)(cap *= 2));
        v[k++] = (int32_t)x;
        p = *end ? end + 1 : end;
    }
    *ids = v;
    *n = k;
    return k > 0 ? HS_OK : HS_ERR_INVALID;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int cmd_generate(int argc, char **argv) {
    hs_engine_config_t cfg;
    hs_engine_config_default(&cfg);
    hs_sampling_t sp;
    hs_sampling_default(&sp);
    const char *prompt = NULL, *prompt_ids = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t iv;
        double dv;
#define NEED_VALUE                                                       \
    do {                                                                 \
        if (!v) {                                                        \
            fprintf(stderr, "hyserve generate: %s needs a value\n", a);  \
            return 2;                                                    \
        }                                                                \
        i++;                                                             \
    } while (0)
#define BAD_VALUE                                                                      \
    do {                                                                               \
        fprintf(stderr, "hyserve generate: bad value '%s' for %s\n", v, a);            \
        return 2;                                                                      \
    } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--ignore-eos")) {
            sp.ignore_eos = true;
        } else if (!strcmp(a, "--model")) {
            NEED_VALUE;
            cfg.model = v;
        } else if (!strcmp(a, "--prompt")) {
            NEED_VALUE;
            prompt = v;
        } else if (!strcmp(a, "--prompt-ids")) {
            NEED_VALUE;
            prompt_ids = v;
        } else if (!strcmp(a, "--device")) {
            NEED_VALUE;
            cfg.device = v;
        } else if (!strcmp(a, "--load-format")) {
            NEED_VALUE;
            cfg.load_format = v;
        } else if (!strcmp(a, "--state-layout")) {
            NEED_VALUE;
            cfg.state_layout = v;
        } else if (!strcmp(a, "--state-dtype")) {
            NEED_VALUE;
            cfg.state_dtype = v;
        } else if (!strcmp(a, "--kv-dtype")) {
            NEED_VALUE;
            cfg.kv_dtype = v;
        } else if (!strcmp(a, "--async-scheduling")) {
            NEED_VALUE;
            if (hs_parse_onoff(v, &cfg.async_scheduling)) BAD_VALUE;
        } else if (!strcmp(a, "--max-tokens")) {
            NEED_VALUE;
            if (hs_parse_i64(v, 1, 1 << 24, &iv)) BAD_VALUE;
            sp.max_tokens = (int)iv;
        } else if (!strcmp(a, "--top-k")) {
            NEED_VALUE;
            if (hs_parse_i64(v, 0, 1 << 30, &iv)) BAD_VALUE;
            sp.top_k = (int)iv;
        } else if (!strcmp(a, "--top-logprobs")) {
            NEED_VALUE;
            if (hs_parse_i64(v, 0, HS_MAX_TOP_LOGPROBS, &iv)) BAD_VALUE;
            sp.top_logprobs = (int)iv;
        } else if (!strcmp(a, "--seed")) {
            NEED_VALUE;
            if (hs_parse_i64(v, 0, INT64_MAX, &iv)) BAD_VALUE;
            sp.seed = (uint64_t)iv;
            sp.has_seed = true;
        } else if (!strcmp(a, "--threads")) {
            NEED_VALUE;
            if (hs_parse_i64(v, 0, 1024, &iv)) BAD_VALUE;
            cfg.n_threads = (int)iv;
        } else if (!strcmp(a, "--temperature")) {
            NEED_VALUE;
            if (hs_parse_f64(v, &dv)) BAD_VALUE;
            sp.temperature = (float)dv;
        } else if (!strcmp(a, "--top-p")) {
            NEED_VALUE;
            if (hs_parse_f64(v, &dv)) BAD_VALUE;
            sp.top_p = (float)dv;
        } else if (!strcmp(a, "--min-p")) {
            NEED_VALUE;
            if (hs_parse_f64(v, &dv)) BAD_VALUE;
            sp.min_p = (float)dv;
        } else {
            fprintf(stderr, "hyserve generate: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!cfg.model || (!prompt == !prompt_ids)) {
        fprintf(stderr, "hyserve generate: need --model and exactly one of --prompt, --prompt-ids\n");
        usage(stderr);
        return 2;
    }
    sp.logprobs = true;
    char err[1024] = "";

    /* The tokenizer, when the model directory has one. */
    tok_t *tok = NULL;
    if (is_dir(cfg.model)) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tokenizer.json", cfg.model);
        struct stat st;
        if (stat(path, &st) == 0 && tok_load(path, &tok, err, sizeof err) != HS_OK) {
            fprintf(stderr, "hyserve generate: %s\n", err);
            return 2;
        }
    }
    if (prompt && !tok) {
        fprintf(stderr, "hyserve generate: --prompt needs a tokenizer.json in the model directory; use --prompt-ids\n");
        return 2;
    }
    int32_t *ids = NULL;
    int n_ids = 0;
    if (prompt_ids) {
        if (parse_ids(prompt_ids, &ids, &n_ids) != HS_OK) {
            fprintf(stderr, "hyserve generate: --prompt-ids: expected comma-separated token ids\n");
            tok_free(tok);
            return 2;
        }
    } else {
        size_t n = 0;
        if (tok_encode(tok, prompt, strlen(prompt), 0, &ids, &n, err, sizeof err) != HS_OK) {
            fprintf(stderr, "hyserve generate: %s\n", err);
            tok_free(tok);
            return 2;
        }
        n_ids = (int)n;
    }

    hs_engine_t *e = NULL;
    int rc = hs_engine_create(&cfg, &e, err, sizeof err);
    if (rc != HS_OK) {
        fprintf(stderr, "hyserve generate: %s\n", err);
        free(ids);
        tok_free(tok);
        return 2;
    }
    uint64_t id;
    if (hs_engine_submit(e, ids, n_ids, &sp, &id, err, sizeof err) != HS_OK) {
        fprintf(stderr, "hyserve generate: %s\n", err);
        hs_engine_destroy(e);
        free(ids);
        tok_free(tok);
        return 2;
    }

    json_t *toks = json_array(), *lps = json_array(), *tops = json_array();
    tok_stream_t *stream = tok ? tok_stream_new(tok, 0) : NULL;
    hs_buf_t text = {0};
    hs_buf_add(&text, "", 0);
    hs_finish_t finish = HS_FINISH_NONE;
    double t0 = hs_now(), t_first = 0;
    int n_out = 0;
    while (finish == HS_FINISH_NONE) {
        if (hs_engine_step(e) != HS_OK) {
            fprintf(stderr, "hyserve generate: a step failed\n");
            break;
        }
        hs_event_t ev;
        while (hs_engine_poll(e, &ev)) {
            if (ev.token >= 0) {
                if (n_out++ == 0) t_first = hs_now();
                json_array_append_new(toks, json_integer(ev.token));
                json_array_append_new(lps, json_real(ev.logprob));
                json_t *alts = json_array();
                for (int k = 0; k < ev.n_top; k++) {
                    json_t *o = json_object();
                    json_object_set_new(o, "token", json_integer(ev.top_ids[k]));
                    json_object_set_new(o, "logprob", json_real(ev.top_logprobs[k]));
                    json_array_append_new(alts, o);
                }
                json_array_append_new(tops, alts);
                if (stream) {
                    const char *piece;
                    size_t len;
                    if (tok_stream_push(stream, ev.token, &piece, &len, err, sizeof err) == HS_OK && len) {
                        hs_buf_add(&text, piece, len);
                        if (!json) fwrite(piece, 1, len, stdout), fflush(stdout);
                    }
                } else if (!json) {
                    printf("%d ", ev.token);
                    fflush(stdout);
                }
            }
            if (ev.finish != HS_FINISH_NONE) finish = ev.finish;
        }
        if (!hs_engine_has_work(e) && finish == HS_FINISH_NONE) finish = HS_FINISH_ERROR;
    }
    if (stream) {
        const char *piece;
        size_t len;
        tok_stream_flush(stream, &piece, &len);
        if (len) {
            hs_buf_add(&text, piece, len);
            if (!json) fwrite(piece, 1, len, stdout);
        }
    }
    double t1 = hs_now();
    const char *reason = finish == HS_FINISH_STOP ? "stop" : finish == HS_FINISH_LENGTH ? "length" : "error";
    if (json) {
        json_t *o = json_object();
        json_t *pids = json_array();
        for (int i = 0; i < n_ids; i++) json_array_append_new(pids, json_integer(ids[i]));
        json_object_set_new(o, "prompt_ids", pids);
        json_object_set_new(o, "tokens", toks);
        json_object_set_new(o, "logprobs", lps);
        json_object_set_new(o, "top_logprobs", tops);
        if (tok) json_object_set_new(o, "text", json_stringn(text.p, text.n));
        json_object_set_new(o, "finish_reason", json_string(reason));
        char *s = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
        puts(s);
        free(s);
        json_decref(o);
    } else {
        printf("\n");
        json_decref(toks);
        json_decref(lps);
        json_decref(tops);
    }
    if (n_out > 0)
        fprintf(stderr, "hyserve: %d prompt tokens, %d generated (%s); first token %.1f ms, %.2f tokens/s after it\n",
                n_ids, n_out, reason, (t_first - t0) * 1e3, n_out > 1 ? (n_out - 1) / (t1 - t_first) : 0.0);
    tok_stream_free(stream);
    free(text.p);
    free(ids);
    hs_engine_destroy(e);
    tok_free(tok);
    return finish == HS_FINISH_ERROR ? 1 : 0;
}
