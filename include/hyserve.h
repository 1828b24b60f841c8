/*
 * hyserve.h: the engine's C API, what the server and the CLI call.
 *
 * The engine is single-threaded: one thread owns it and calls hs_engine_step()
 * in a loop; every function here must be called from that thread (the server
 * puts a locked queue in front of submit/cancel). Requests are token ids in,
 * events out: tokenization, chat templates, stop *strings* and JSON live above.
 *
 *   hs_engine_config_t cfg; hs_engine_config_default(&cfg); cfg.model = "dir";
 *   hs_engine_t *e; if (hs_engine_create(&cfg, &e, err, sizeof err)) ...;
 *   uint64_t id; hs_engine_submit(e, ids, n, &sampling, &id, err, sizeof err);
 *   while (hs_engine_has_work(e)) {
 *       hs_engine_step(e);
 *       hs_event_t ev; while (hs_engine_poll(e, &ev)) ...;
 *   }
 *   hs_engine_destroy(e);
 */
#ifndef HYSERVE_H
#define HYSERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HS_MAX_TOP_LOGPROBS 20
#define HS_MAX_STOP_SEQS 8
#define HS_MAX_STOP_LEN 16

typedef struct hs_engine hs_engine_t;

typedef struct {
    const char *model;            /* model directory, config.json or shipped name (required) */
    const char *device;           /* "cpu" (default) or "cuda" */
    const char *load_format;      /* "auto" (safetensors) or "dummy" (random weights) */
    const char *state_layout;     /* "paged" (default), "slots" or "coupled" */
    const char *kv_dtype;         /* "auto" (default: the backend's activation dtype, fp32 on
                                     cpu, bf16 on cuda), "bf16", "f32" or "fp8" */
    const char *state_dtype;      /* NULL: the config's mamba_ssm_dtype, else "f32" / "bf16" */
    int max_num_seqs;             /* batch-size limit, reserves no memory (paged); default 256 */
    int max_model_len;            /* prompt + output tokens per request; 0: the config's limit */
    int max_num_batched_tokens;   /* tokens per step; default 2048 */
    int block_size;               /* tokens per KV block; default 16 */
    double mem_util;              /* cuda: fraction of device memory to use; default 0.9 */
    size_t pool_bytes;            /* cpu: bytes for the page pool; 0: 1 GiB */
    int n_threads;                /* cpu: threads; 0: all cores */
    int preempt_mode;             /* 0: recompute (default), 1: swap */
    size_t swap_bytes;            /* host bytes for swapped pages; default 0 (swap off) */
    bool enable_prefix_caching;   /* default true (hybrid models only use hits backed by state) */
    int async_scheduling;         /* overlapped steps: the next step is scheduled and issued while the
                                     device runs this one, its tokens fed on the device. 1 on, 0 off,
                                     -1 (default) auto: on for cuda, off for cpu (nothing to overlap) */
} hs_engine_config_t;

typedef struct {
    float temperature;            /* 0: greedy; default 1 */
    float top_p;                  /* (0, 1]; default 1 */
    int top_k;                    /* 0: off */
    float min_p;                  /* [0, 1); 0: off */
    uint64_t seed;                /* used when has_seed; else a per-engine counter */
    bool has_seed;
    int max_tokens;               /* >= 1; default 16 */
    bool ignore_eos;
    bool logprobs;                /* report the sampled token's logprob */
    int top_logprobs;             /* 0..HS_MAX_TOP_LOGPROBS most likely alternatives per token */
    int n_stop;                   /* token-id stop sequences */
    int32_t stop[HS_MAX_STOP_SEQS][HS_MAX_STOP_LEN];
    int stop_len[HS_MAX_STOP_SEQS];
} hs_sampling_t;

typedef enum {
    HS_FINISH_NONE = 0,
    HS_FINISH_LENGTH,             /* max_tokens or max_model_len reached */
    HS_FINISH_STOP,               /* eos or a stop sequence */
    HS_FINISH_CANCELLED,
    HS_FINISH_ERROR,
} hs_finish_t;

typedef struct {
    uint64_t id;                  /* request id from submit */
    int32_t token;                /* the sampled token; -1 for a finish-only event */
    float logprob;                /* of the sampled token (when logprobs requested) */
    int n_top;
    int32_t top_ids[HS_MAX_TOP_LOGPROBS];
    float top_logprobs[HS_MAX_TOP_LOGPROBS];
    bool first;                   /* the request's first token */
    hs_finish_t finish;           /* != NONE: the request ended with this event */
    int n_prompt, n_output;       /* usage counts, on the finishing event */
    int n_cached;                 /* prompt tokens served from the prefix cache */
} hs_event_t;

typedef struct {
    int n_running, n_waiting, n_swapped;
    int64_t pages_total, pages_free, pages_kv, pages_state, pages_cached;
    int state_pages_per_request;  /* E */
    int64_t prefix_hit_tokens, prefix_query_tokens;
    int64_t preemptions;
    int64_t prompt_tokens, generated_tokens; /* totals since start */
    int64_t steps;
} hs_stats_t;

typedef struct {
    int vocab;                    /* vocabulary size of the model */
    int max_model_len;
    int n_eos;
    int32_t eos_ids[8];
    char model_type[32];
    /* Bytes behind a roofline of a decode step (as stored by the engine's backend):
     * every weight a step reads (all but the embedding table; MoE: all experts),
     * one routed expert summed over the MoE layers (0 when dense), the recurrent state
     * of one request, and the KV cache of one token (all attention layers). */
    int64_t weight_bytes, expert_bytes, state_bytes, kv_bytes_per_token;
    int n_experts, top_k;
} hs_model_info_t;

void hs_engine_config_default(hs_engine_config_t *cfg);
void hs_sampling_default(hs_sampling_t *sp);

/* Load the model and size the pool. Start-up errors are returned (not exited). */
int hs_engine_create(const hs_engine_config_t *cfg, hs_engine_t **out, char *err, size_t n);
void hs_engine_destroy(hs_engine_t *e);

/* Queue a request. Errors (empty or over-long prompt, bad sampling values, token
 * ids outside the vocabulary) return HS_ERR_INVALID with a message; nothing queued. */
int hs_engine_submit(hs_engine_t *e, const int32_t *prompt, int n_prompt, const hs_sampling_t *sp, uint64_t *id,
                     char *err, size_t n);
/* Cancel: frees its pages; a finish event (HS_FINISH_CANCELLED) follows. Unknown id: HS_ERR_NOT_FOUND. */
int hs_engine_cancel(hs_engine_t *e, uint64_t id);
/* Run one scheduler step and forward pass. Returns HS_OK, or an error for a step
 * that could not run (the affected requests finish with HS_FINISH_ERROR). */
int hs_engine_step(hs_engine_t *e);
bool hs_engine_has_work(const hs_engine_t *e);
/* Pop the next event; false when none. */
bool hs_engine_poll(hs_engine_t *e, hs_event_t *ev);
void hs_engine_stats(const hs_engine_t *e, hs_stats_t *st);
void hs_engine_info(const hs_engine_t *e, hs_model_info_t *info);
/* Measure the device's copy bandwidth with a 256 MiB device-to-device copy (bytes read
 * plus written per second, median of 5); HS_ERR_NO_MEMORY when the buffers do not fit. */
int hs_engine_membw(hs_engine_t *e, double *bytes_per_s);
/* Check the pool's invariants; HS_OK when they hold (message in err otherwise). */
int hs_engine_check(const hs_engine_t *e, char *err, size_t n);

#ifdef __cplusplus
}
#endif
#endif
