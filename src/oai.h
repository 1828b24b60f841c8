/*
 * oai: the OpenAI HTTP protocol, without sockets or threads. The server (server.c)
 * calls it to turn request bodies into native structs and engine output into JSON.
 *
 *   parse     POST /v1/completions and /v1/chat/completions bodies → oai_req_t,
 *             validated field by field (type and range); an error names the field
 *             and carries the HTTP status, OpenAI type and code (oai_err_t).
 *   stop      stop *strings* matched on the detokenized text (oai_stop_t): text that
 *             could still be the start of a stop string is held back, the stop string
 *             itself is never returned.
 *   build     response objects (chat.completion, text_completion), streaming chunks
 *             (chat.completion.chunk with choices[].delta, text_completion with
 *             choices[].text), logprobs entries in both shapes, usage and errors.
 *   SSE       oai_sse_frame(): "data: <compact JSON>\n\n"; a stream ends with
 *             OAI_SSE_DONE = "data: [DONE]\n\n".
 *
 * Error object (every 4xx/5xx body):
 *   {"error": {"message": "...", "type": "invalid_request_error", "param": "max_tokens" | null,
 *              "code": "..." | null}}
 *
 * Supported request fields (anything else is ignored, as OpenAI's server does for
 * unknown fields): model, prompt (string, [string], [int], [[int]]; one prompt),
 * messages (role system|developer|user|assistant|tool; content string, null or text
 * parts), stream, stream_options.include_usage, max_tokens, max_completion_tokens
 * (chat), temperature, top_p, top_k, min_p, seed, stop (string or list), logprobs
 * (completions: int 0..20; chat: bool), top_logprobs (chat: 0..20), n (1 only),
 * ignore_eos, return_tokens_as_token_ids, chat_template_kwargs.enable_thinking (chat).
 * Rejected with 400:
 * n != 1, echo = true, best_of > 1, suffix, tools, non-zero presence/frequency penalties,
 * repetition_penalty != 1, logit_bias, response_format other than text.
 */
#ifndef HS_OAI_H
#define HS_OAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "hyserve.h"

#define OAI_MAX_BODY (4u << 20)  /* request bodies above this are refused with 413 */
#define OAI_MAX_STOP 16          /* stop strings per request */
#define OAI_MAX_STOP_BYTES 256   /* bytes per stop string */
#define OAI_SSE_DONE "data: [DONE]\n\n"

typedef enum { OAI_COMPLETION = 0, OAI_CHAT = 1 } oai_kind_t;

/* An HTTP error as OpenAI shapes it. Fixed buffers: no allocation on error paths. */
typedef struct {
    int status;        /* 400, 401, 404, 405, 413, 500, 503 */
    char type[32];     /* "invalid_request_error", "server_error", ... */
    char param[48];    /* offending field, "" for none (JSON null) */
    char code[40];     /* machine-readable code, "" for none */
    char message[512];
} oai_err_t;

/* Fill e; returns e->status. fmt is the message. */
int oai_errf(oai_err_t *e, int status, const char *type, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* {"error": {...}} as a heap string (caller frees). Never NULL. */
char *oai_err_json(const oai_err_t *e);

typedef struct {
    char *role;     /* heap, validated: system|user|assistant|tool ("developer" → system) */
    char *content;  /* heap, "" for null; text parts joined */
} oai_msg_t;

/* A parsed request. Strings are heap copies owned by the struct (oai_req_free). */
typedef struct {
    oai_kind_t kind;
    char *model;              /* NULL when the field is absent */
    /* completions: exactly one of prompt (text) or prompt_ids */
    char *prompt;
    size_t prompt_len;
    int32_t *prompt_ids;
    int n_prompt_ids;
    /* chat */
    oai_msg_t *msgs;
    int n_msgs;
    int enable_thinking;      /* -1: the template's default, else 0/1 */

    bool stream;
    bool include_usage;       /* stream_options.include_usage */
    bool max_tokens_set;      /* else the server picks (completions 16, chat: the rest of the context) */
    int n_logprobs;           /* -1: no logprobs; else top alternatives per token (0..20) */
    hs_sampling_t sp;         /* temperature, top_p, top_k, min_p, seed, max_tokens, ignore_eos,
                                 logprobs/top_logprobs (mirrors n_logprobs); no token stops */
    bool tokens_as_ids;       /* return_tokens_as_token_ids (vLLM): logprobs tokens as "token_id:N" */
    char *stop[OAI_MAX_STOP]; /* heap, non-empty, valid UTF-8 */
    int n_stop;
} oai_req_t;

/* Parse and validate body[0..len) (any bytes). HS_OK and *r filled, or an error
 * code with *e filled (400 for every problem found here) and *r left empty. Always
 * call oai_req_free(r) afterwards (safe on a failed or zeroed parse). */
int oai_parse(oai_kind_t kind, const char *body, size_t len, oai_req_t *r, oai_err_t *e);
void oai_req_free(oai_req_t *r);

/* ---- stop strings ------------------------------------------------------------ */
typedef struct {
    const char *const *stop;  /* borrowed; n_stop strings */
    int n_stop;
    size_t max_len;
    char *buf;                /* held-back text (a prefix of some stop string) */
    size_t n_buf, cap;
    char *out;                /* text returned by the last call (owned) */
    size_t cap_out;
    bool hit;
} oai_stop_t;

void oai_stop_init(oai_stop_t *s, const char *const *stop, int n_stop);
void oai_stop_free(oai_stop_t *s);
/* Feed newly detokenized text. *out (valid until the next call) is what may be
 * returned to the client now. After a hit (s->hit) everything further is dropped. */
void oai_stop_feed(oai_stop_t *s, const char *text, size_t len, const char **out, size_t *out_len);
/* End of output without a hit: the held-back text. */
void oai_stop_flush(oai_stop_t *s, const char **out, size_t *out_len);

/* ---- responses ---------------------------------------------------------------- */
/* A JSON string of s[0..n): s as is when valid UTF-8, else with U+FFFD replacements. */
json_t *oai_json_str(const char *s, size_t n);

/* One token's logprobs entry, in the request kind's shape. tok_str/tok_bytes: the
 * token's raw bytes (may be part of a UTF-8 character). top_*: the alternatives. */
typedef struct {
    const char *bytes;
    size_t n_bytes;
    float logprob;
} oai_tokp_t;

/* Accumulates logprobs for a response (non-streaming) or one chunk (streaming). */
typedef struct {
    oai_kind_t kind;
    json_t *obj;              /* chat: {"content": [...]}; completions: {tokens, token_logprobs, top_logprobs, text_offset} */
} oai_logprobs_t;

void oai_logprobs_init(oai_logprobs_t *lp, oai_kind_t kind);
/* Append a token: tok is the sampled token, top[0..n_top) its alternatives; text_offset
 * (completions only) the code-point offset of the token's text in the output. */
void oai_logprobs_add(oai_logprobs_t *lp, const oai_tokp_t *tok, const oai_tokp_t *top, int n_top, long text_offset);
/* Hand the object over (the caller owns the reference); lp is empty afterwards. */
json_t *oai_logprobs_take(oai_logprobs_t *lp);
void oai_logprobs_free(oai_logprobs_t *lp);

/* "chatcmpl-<hex>" / "cmpl-<hex>" from a 64-bit value. */
void oai_make_id(oai_kind_t kind, uint64_t v, char *out, size_t n);

/* A streaming chunk. text may be NULL (no text key for chat: delta {}), role adds
 * delta.role (chat's first chunk), logprobs is stolen (NULL: JSON null), finish NULL: null. */
json_t *oai_chunk(oai_kind_t kind, const char *id, long created, const char *model, const char *text, size_t len,
                  bool role, json_t *logprobs, const char *finish);
/* The usage-only chunk of stream_options.include_usage: "choices": []. */
json_t *oai_usage_chunk(oai_kind_t kind, const char *id, long created, const char *model, int n_prompt, int n_output,
                        int n_cached);
/* The non-streaming response; logprobs stolen. */
json_t *oai_response(oai_kind_t kind, const char *id, long created, const char *model, const char *text, size_t len,
                     json_t *logprobs, const char *finish, int n_prompt, int n_output, int n_cached);

/* "data: <compact JSON>\n\n" for j (j is not freed), as a heap string with its length. */
char *oai_sse_frame(const json_t *j, size_t *len);

/* The finish_reason string of an engine finish code. */
const char *oai_finish_str(hs_finish_t f);

#endif
