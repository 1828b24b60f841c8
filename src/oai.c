/*
 * oai: OpenAI request parsing/validation, stop strings, response and chunk JSON, SSE.
 * The contract is in oai.h. Notes on choices made here:
 *
 *   - JSON is parsed by jansson with JSON_REJECT_DUPLICATES; jansson refuses invalid
 *     UTF-8, NUL characters and lone surrogates in the body, which gives the 400 for
 *     "invalid UTF-8" without a separate scan.
 *   - Numbers: JSON integers are accepted where a float is expected; a float is
 *     never accepted where an integer is expected (max_tokens: 1.5 → 400).
 *   - JSON null for an optional field means "absent", as in OpenAI's API.
 *   - Stop-string holding (oai_stop_feed): after each piece, the longest suffix of the
 *     unreturned text that is a proper prefix of some stop string is held back; a match
 *     can only start inside the held-back text, so one search of buf per feed suffices.
 *     Because both the text (from the streaming detokenizer) and the stop strings are
 *     valid UTF-8, every cut lands on a character boundary.
 */
#include "oai.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok.h"
#include "util.h"

/* ---- errors --------------------------------------------------------------------- */

int oai_errf(oai_err_t *e, int status, const char *type, const char *param, const char *code, const char *fmt, ...) {
    e->status = status;
    snprintf(e->type, sizeof e->type, "%s", type ? type : "invalid_request_error");
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return status;
}

char *oai_err_json(const oai_err_t *e) {
    json_t *o = json_object();
    json_t *in = json_object();
    json_object_set_new(in, "message", oai_json_str(e->message, strlen(e->message)));
    json_object_set_new(in, "type", json_string(e->type[0] ? e->type : "invalid_request_error"));
    json_object_set_new(in, "param", e->param[0] ? json_string(e->param) : json_null());
    json_object_set_new(in, "code", e->code[0] ? json_string(e->code) : json_null());
    json_object_set_new(o, "error", in);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s) s = hs_strdup("{\"error\":{\"message\":\"internal error\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
    return s;
}

/* 400 invalid_request_error for field `param`. */
#define BAD(param, ...) (oai_errf(e, 400, "invalid_request_error", (param), NULL, __VA_ARGS__), HS_ERR_INVALID)

/* ---- typed field getters: HS_OK (value set), HS_AGAIN (absent or null), error ------ */

static int get_bool(json_t *o, const char *k, bool *v, oai_err_t *e) {
    json_t *j = json_object_get(o, k);
    if (!j || json_is_null(j)) return HS_AGAIN;
    if (!json_is_boolean(j)) return BAD(k, "'%s' must be a boolean", k);
    *v = json_is_true(j);
    return HS_OK;
}

static int get_num(json_t *o, const char *k, double lo, double hi, double *v, oai_err_t *e) {
    json_t *j = json_object_get(o, k);
    if (!j || json_is_null(j)) return HS_AGAIN;
    if (!json_is_number(j)) return BAD(k, "'%s' must be a number", k);
    double x = json_number_value(j);
    if (!isfinite(x) || x < lo || x > hi) return BAD(k, "'%s' must be in [%g, %g], got %g", k, lo, hi, x);
    *v = x;
    return HS_OK;
}

static int get_int(json_t *o, const char *k, json_int_t lo, json_int_t hi, json_int_t *v, oai_err_t *e) {
    json_t *j = json_object_get(o, k);
    if (!j || json_is_null(j)) return HS_AGAIN;
    if (!json_is_integer(j)) return BAD(k, "'%s' must be an integer", k);
    json_int_t x = json_integer_value(j);
    if (x < lo || x > hi)
        return BAD(k, "'%s' must be in [%" JSON_INTEGER_FORMAT ", %" JSON_INTEGER_FORMAT "], got %" JSON_INTEGER_FORMAT,
                   k, lo, hi, x);
    *v = x;
    return HS_OK;
}

/* rc of a getter: propagate errors, map HS_AGAIN/HS_OK to "continue". */
#define TRY(call)                 \
    do {                          \
        int rc_ = (call);         \
        if (rc_ < 0) return rc_;  \
    } while (0)

/* ---- the request ----------------------------------------------------------------- */

void oai_req_free(oai_req_t *r) {
    if (!r) return;
    free(r->model);
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_msgs; i++) {
        free(r->msgs[i].role);
        free(r->msgs[i].content);
    }
    free(r->msgs);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    memset(r, 0, sizeof *r);
}

static int parse_ids(json_t *a, const char *param, oai_req_t *r, oai_err_t *e) {
    size_t n = json_array_size(a);
    if (n == 0) return BAD(param, "'%s' is empty", param);
    if (n > (1u << 24)) return BAD(param, "'%s' has too many tokens", param);
    r->prompt_ids = hs_malloc(n * sizeof *r->prompt_ids);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(a, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX)
            return BAD(param, "'%s'[%zu] must be a non-negative token id", param, i);
        r->prompt_ids[i] = (int32_t)json_integer_value(x);
    }
    r->n_prompt_ids = (int)n;
    return HS_OK;
}

static int parse_prompt(json_t *o, oai_req_t *r, oai_err_t *e) {
    json_t *p = json_object_get(o, "prompt");
    if (!p || json_is_null(p)) return BAD("prompt", "'prompt' is required");
    if (json_is_string(p)) {
        r->prompt_len = json_string_length(p);
        r->prompt = hs_malloc(r->prompt_len + 1);
        memcpy(r->prompt, json_string_value(p), r->prompt_len + 1);
        return HS_OK;
    }
    if (!json_is_array(p) || json_array_size(p) == 0)
        return BAD("prompt", "'prompt' must be a string, a list of token ids or a one-element list of those");
    json_t *first = json_array_get(p, 0);
    if (json_is_integer(first)) return parse_ids(p, "prompt", r, e);
    if (json_array_size(p) != 1) return BAD("prompt", "one prompt per request is supported (got a list of %zu)", json_array_size(p));
    if (json_is_string(first)) {
        r->prompt_len = json_string_length(first);
        r->prompt = hs_malloc(r->prompt_len + 1);
        memcpy(r->prompt, json_string_value(first), r->prompt_len + 1);
        return HS_OK;
    }
    if (json_is_array(first)) return parse_ids(first, "prompt", r, e);
    return BAD("prompt", "'prompt' must be a string, a list of token ids or a one-element list of those");
}

/* content: string | null | [{"type": "text", "text": "..."}, ...] → heap string. */
static int parse_content(json_t *c, size_t i, char **out, oai_err_t *e) {
    if (!c || json_is_null(c)) {
        *out = hs_strdup("");
        return HS_OK;
    }
    if (json_is_string(c)) {
        *out = hs_strdup(json_string_value(c));
        return HS_OK;
    }
    if (!json_is_array(c)) return BAD("messages", "messages[%zu].content must be a string or a list of text parts", i);
    size_t total = 0, j;
    json_t *part;
    json_array_foreach(c, j, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_object(part) || !json_is_string(type) || strcmp(json_string_value(type), "text") || !json_is_string(text))
            return BAD("messages", "messages[%zu].content[%zu]: only {\"type\": \"text\", \"text\": string} parts are supported", i, j);
        total += json_string_length(text);
    }
    char *s = hs_malloc(total + 1);
    size_t at = 0;
    json_array_foreach(c, j, part) {
        json_t *text = json_object_get(part, "text");
        memcpy(s + at, json_string_value(text), json_string_length(text));
        at += json_string_length(text);
    }
    s[at] = 0;
    *out = s;
    return HS_OK;
}

static int parse_messages(json_t *o, oai_req_t *r, oai_err_t *e) {
    json_t *m = json_object_get(o, "messages");
    if (!m || json_is_null(m)) return BAD("messages", "'messages' is required");
    if (!json_is_array(m) || json_array_size(m) == 0) return BAD("messages", "'messages' must be a non-empty list");
    if (json_array_size(m) > 100000) return BAD("messages", "too many messages");
    r->msgs = hs_calloc(json_array_size(m), sizeof *r->msgs);
    size_t i;
    json_t *msg;
    json_array_foreach(m, i, msg) {
        if (!json_is_object(msg)) return BAD("messages", "messages[%zu] must be an object", i);
        json_t *role = json_object_get(msg, "role");
        if (!json_is_string(role)) return BAD("messages", "messages[%zu].role must be a string", i);
        const char *rs = json_string_value(role);
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant") && strcmp(rs, "tool"))
            return BAD("messages", "messages[%zu].role '%s' is not supported (system, developer, user, assistant, tool)", i, rs);
        if (json_object_get(msg, "tool_calls") && !json_is_null(json_object_get(msg, "tool_calls")))
            return BAD("messages", "messages[%zu]: tool_calls are not supported", i);
        char *content = NULL;
        TRY(parse_content(json_object_get(msg, "content"), i, &content, e));
        r->msgs[i].role = hs_strdup(rs);
        r->msgs[i].content = content;
        r->n_msgs = (int)i + 1;
    }
    json_t *kw = json_object_get(o, "chat_template_kwargs");
    if (kw && !json_is_null(kw)) {
        if (!json_is_object(kw)) return BAD("chat_template_kwargs", "'chat_template_kwargs' must be an object");
        bool th;
        int rc = get_bool(kw, "enable_thinking", &th, e);
        if (rc < 0) return rc;
        if (rc == HS_OK) r->enable_thinking = th;
    }
    return HS_OK;
}

static int parse_stop(json_t *o, oai_req_t *r, oai_err_t *e) {
    json_t *s = json_object_get(o, "stop");
    if (!s || json_is_null(s)) return HS_OK;
    json_t *one[1] = {s};
    size_t n = 1;
    json_t **list = one;
    if (json_is_array(s)) {
        n = json_array_size(s);
        if (n > OAI_MAX_STOP) return BAD("stop", "at most %d stop strings", OAI_MAX_STOP);
        list = NULL;
    } else if (!json_is_string(s)) {
        return BAD("stop", "'stop' must be a string or a list of strings");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *x = list ? list[i] : json_array_get(s, i);
        if (!json_is_string(x)) return BAD("stop", "'stop' must be a string or a list of strings");
        size_t len = json_string_length(x);
        if (len == 0) continue; /* an empty stop string would match everywhere: ignored */
        if (len > OAI_MAX_STOP_BYTES) return BAD("stop", "stop strings are limited to %d bytes", OAI_MAX_STOP_BYTES);
        r->stop[r->n_stop++] = hs_strdup(json_string_value(x));
    }
    return HS_OK;
}

static int parse_fields(json_t *o, oai_kind_t kind, oai_req_t *r, oai_err_t *e) {
    json_t *model = json_object_get(o, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model)) return BAD("model", "'model' must be a string");
        r->model = hs_strdup(json_string_value(model));
    }
    if (kind == OAI_CHAT) TRY(parse_messages(o, r, e));
    else TRY(parse_prompt(o, r, e));

    json_int_t iv;
    double dv;
    bool bv;
    int rc;
    TRY(get_bool(o, "stream", &r->stream, e));
    json_t *so = json_object_get(o, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return BAD("stream_options", "'stream_options' must be an object");
        TRY(get_bool(so, "include_usage", &r->include_usage, e));
    }
    if ((rc = get_int(o, "n", 1, 1, &iv, e)) < 0)
        return BAD("n", "only n = 1 is supported (one choice per request)");
    if ((rc = get_bool(o, "echo", &bv, e)) < 0) return rc;
    if (rc == HS_OK && bv) return BAD("echo", "'echo' is not supported");
    if ((rc = get_int(o, "best_of", 1, 1, &iv, e)) < 0) return BAD("best_of", "only best_of = 1 is supported");
    json_t *suffix = json_object_get(o, "suffix");
    if (suffix && !json_is_null(suffix)) return BAD("suffix", "'suffix' is not supported");
    static const char *const penalties[] = {"presence_penalty", "frequency_penalty"};
    for (int i = 0; i < 2; i++) {
        if ((rc = get_num(o, penalties[i], -2, 2, &dv, e)) < 0) return rc;
        if (rc == HS_OK && dv != 0) return BAD(penalties[i], "'%s' is not supported (only 0)", penalties[i]);
    }
    if ((rc = get_num(o, "repetition_penalty", 0, 100, &dv, e)) < 0) return rc;
    if (rc == HS_OK && dv != 1) return BAD("repetition_penalty", "'repetition_penalty' is not supported (only 1)");
    json_t *bias = json_object_get(o, "logit_bias");
    if (bias && !json_is_null(bias) && !(json_is_object(bias) && json_object_size(bias) == 0))
        return BAD("logit_bias", "'logit_bias' is not supported");
    json_t *rf = json_object_get(o, "response_format");
    if (rf && !json_is_null(rf) &&
        !(json_is_object(rf) && json_is_string(json_object_get(rf, "type")) &&
          !strcmp(json_string_value(json_object_get(rf, "type")), "text")))
        return BAD("response_format", "only response_format {\"type\": \"text\"} is supported");
    json_t *tools = json_object_get(o, "tools");
    if (tools && !json_is_null(tools) && !(json_is_array(tools) && json_array_size(tools) == 0))
        return BAD("tools", "'tools' is not supported");

    /* max_tokens; chat also takes max_completion_tokens (the newer name wins). */
    const char *mt = kind == OAI_CHAT && json_object_get(o, "max_completion_tokens") &&
                             !json_is_null(json_object_get(o, "max_completion_tokens"))
                         ? "max_completion_tokens"
                         : "max_tokens";
    if ((rc = get_int(o, mt, 1, INT32_MAX, &iv, e)) < 0) return rc;
    if (rc == HS_OK) {
        r->sp.max_tokens = (int)iv;
        r->max_tokens_set = true;
    }
    if ((rc = get_num(o, "temperature", 0, 100, &dv, e)) < 0) return rc;
    if (rc == HS_OK) r->sp.temperature = (float)dv;
    if ((rc = get_num(o, "top_p", 0, 1, &dv, e)) < 0) return rc;
    if (rc == HS_OK) {
        if (dv <= 0) return BAD("top_p", "'top_p' must be in (0, 1]");
        r->sp.top_p = (float)dv;
    }
    if ((rc = get_int(o, "top_k", -1, INT32_MAX, &iv, e)) < 0) return rc;
    if (rc == HS_OK) r->sp.top_k = iv < 0 ? 0 : (int)iv; /* -1 (vLLM) and 0: off */
    if ((rc = get_num(o, "min_p", 0, 1, &dv, e)) < 0) return rc;
    if (rc == HS_OK) {
        if (dv >= 1) return BAD("min_p", "'min_p' must be in [0, 1)");
        r->sp.min_p = (float)dv;
    }
    json_t *seed = json_object_get(o, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) return BAD("seed", "'seed' must be an integer");
        r->sp.seed = (uint64_t)json_integer_value(seed);
        r->sp.has_seed = true;
    }
    if ((rc = get_bool(o, "ignore_eos", &bv, e)) < 0) return rc;
    if (rc == HS_OK) r->sp.ignore_eos = bv;
    TRY(get_bool(o, "return_tokens_as_token_ids", &r->tokens_as_ids, e));

    /* logprobs */
    r->n_logprobs = -1;
    if (kind == OAI_COMPLETION) {
        json_t *lp = json_object_get(o, "logprobs");
        if (lp && !json_is_null(lp)) {
            if (!json_is_integer(lp) || json_integer_value(lp) < 0 || json_integer_value(lp) > HS_MAX_TOP_LOGPROBS)
                return BAD("logprobs", "'logprobs' must be an integer in [0, %d]", HS_MAX_TOP_LOGPROBS);
            r->n_logprobs = (int)json_integer_value(lp);
        }
    } else {
        bool want = false;
        TRY(get_bool(o, "logprobs", &want, e));
        int top = 0;
        if ((rc = get_int(o, "top_logprobs", 0, HS_MAX_TOP_LOGPROBS, &iv, e)) < 0) return rc;
        if (rc == HS_OK) {
            if (!want && iv > 0) return BAD("top_logprobs", "'top_logprobs' needs 'logprobs': true");
            top = (int)iv;
        }
        if (want) r->n_logprobs = top;
    }
    if (r->n_logprobs >= 0) {
        r->sp.logprobs = true;
        r->sp.top_logprobs = r->n_logprobs;
    }
    return parse_stop(o, r, e);
}

int oai_parse(oai_kind_t kind, const char *body, size_t len, oai_req_t *r, oai_err_t *e) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->enable_thinking = -1;
    hs_sampling_default(&r->sp);
    r->sp.max_tokens = 16;
    if (len > OAI_MAX_BODY) {
        oai_errf(e, 413, "invalid_request_error", NULL, "request_too_large", "request body exceeds %u bytes", OAI_MAX_BODY);
        return HS_ERR_INVALID;
    }
    json_error_t je;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!o) return BAD(NULL, "invalid JSON body (line %d, column %d): %s", je.line, je.column, je.text);
    int rc = HS_OK;
    if (!json_is_object(o)) rc = BAD(NULL, "the request body must be a JSON object");
    else rc = parse_fields(o, kind, r, e);
    json_decref(o);
    if (rc != HS_OK) {
        oai_req_free(r);
        r->kind = kind;
        return HS_ERR_INVALID;
    }
    return HS_OK;
}

/* ---- stop strings ----------------------------------------------------------------- */

void oai_stop_init(oai_stop_t *s, const char *const *stop, int n_stop) {
    memset(s, 0, sizeof *s);
    s->stop = stop;
    s->n_stop = n_stop;
    for (int i = 0; i < n_stop; i++)
        if (strlen(stop[i]) > s->max_len) s->max_len = strlen(stop[i]);
}

void oai_stop_free(oai_stop_t *s) {
    free(s->buf);
    free(s->out);
    memset(s, 0, sizeof *s);
}

static void grow(char **p, size_t *cap, size_t need) {
    if (need <= *cap) return;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    *p = hs_realloc(*p, c);
    *cap = c;
}

void oai_stop_feed(oai_stop_t *s, const char *text, size_t len, const char **out, size_t *out_len) {
    *out = "";
    *out_len = 0;
    if (s->hit) return;
    if (s->n_stop == 0) { /* nothing to hold back: pass through */
        *out = text;
        *out_len = len;
        return;
    }
    grow(&s->buf, &s->cap, s->n_buf + len + 1);
    memcpy(s->buf + s->n_buf, text, len);
    s->n_buf += len;
    /* earliest match of any stop string in buf */
    size_t best = SIZE_MAX;
    for (int i = 0; i < s->n_stop; i++) {
        size_t sl = strlen(s->stop[i]);
        for (size_t p = 0; p + sl <= s->n_buf && p < best; p++)
            if (!memcmp(s->buf + p, s->stop[i], sl)) {
                best = p;
                break;
            }
    }
    size_t emit;
    if (best != SIZE_MAX) {
        s->hit = true;
        emit = best;
    } else {
        size_t hold = 0; /* longest suffix that is a proper prefix of a stop string */
        size_t kmax = s->max_len - 1 < s->n_buf ? s->max_len - 1 : s->n_buf;
        for (size_t k = kmax; k > 0 && !hold; k--)
            for (int i = 0; i < s->n_stop; i++)
                if (strlen(s->stop[i]) > k && !memcmp(s->buf + s->n_buf - k, s->stop[i], k)) {
                    hold = k;
                    break;
                }
        emit = s->n_buf - hold;
    }
    grow(&s->out, &s->cap_out, emit + 1);
    memcpy(s->out, s->buf, emit);
    s->out[emit] = 0;
    if (s->hit) s->n_buf = 0;
    else {
        memmove(s->buf, s->buf + emit, s->n_buf - emit);
        s->n_buf -= emit;
    }
    *out = s->out;
    *out_len = emit;
}

void oai_stop_flush(oai_stop_t *s, const char **out, size_t *out_len) {
    grow(&s->out, &s->cap_out, s->n_buf + 1);
    if (s->n_buf) memcpy(s->out, s->buf, s->n_buf);
    s->out[s->n_buf] = 0;
    *out = s->out;
    *out_len = s->hit ? 0 : s->n_buf;
    s->n_buf = 0;
}

/* ---- responses ------------------------------------------------------------------ */

json_t *oai_json_str(const char *s, size_t n) {
    if (tok_utf8_valid(s, n)) {
        json_t *j = json_stringn(s, n);
        if (j) return j; /* NULL only for embedded NUL characters, handled below */
    }
    size_t m;
    char *t = tok_utf8_sanitize(s, n, &m);
    json_t *j = json_stringn_nocheck(t, m);
    free(t);
    return j;
}

static json_t *bytes_array(const char *b, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_integer((unsigned char)b[i]));
    return a;
}

/* logprob as a JSON number; -inf (impossible token) → -9999 as OpenAI does. */
static json_t *lp_num(float x) { return json_real(isfinite(x) ? (double)x : -9999.0); }

void oai_logprobs_init(oai_logprobs_t *lp, oai_kind_t kind) {
    lp->kind = kind;
    lp->obj = json_object();
    if (kind == OAI_CHAT) {
        json_object_set_new(lp->obj, "content", json_array());
    } else {
        json_object_set_new(lp->obj, "tokens", json_array());
        json_object_set_new(lp->obj, "token_logprobs", json_array());
        json_object_set_new(lp->obj, "top_logprobs", json_array());
        json_object_set_new(lp->obj, "text_offset", json_array());
    }
}

void oai_logprobs_add(oai_logprobs_t *lp, const oai_tokp_t *tok, const oai_tokp_t *top, int n_top, long text_offset) {
    if (lp->kind == OAI_CHAT) {
        json_t *ent = json_object();
        json_object_set_new(ent, "token", oai_json_str(tok->bytes, tok->n_bytes));
        json_object_set_new(ent, "logprob", lp_num(tok->logprob));
        json_object_set_new(ent, "bytes", bytes_array(tok->bytes, tok->n_bytes));
        json_t *tops = json_array();
        for (int i = 0; i < n_top; i++) {
            json_t *t = json_object();
            json_object_set_new(t, "token", oai_json_str(top[i].bytes, top[i].n_bytes));
            json_object_set_new(t, "logprob", lp_num(top[i].logprob));
            json_object_set_new(t, "bytes", bytes_array(top[i].bytes, top[i].n_bytes));
            json_array_append_new(tops, t);
        }
        json_object_set_new(ent, "top_logprobs", tops);
        json_array_append_new(json_object_get(lp->obj, "content"), ent);
        return;
    }
    json_array_append_new(json_object_get(lp->obj, "tokens"), oai_json_str(tok->bytes, tok->n_bytes));
    json_array_append_new(json_object_get(lp->obj, "token_logprobs"), lp_num(tok->logprob));
    json_t *tops = json_object();
    for (int i = 0; i < n_top; i++) {
        json_t *k = oai_json_str(top[i].bytes, top[i].n_bytes);
        if (!json_object_get(tops, json_string_value(k))) /* equal strings: keep the likelier */
            json_object_set_new(tops, json_string_value(k), lp_num(top[i].logprob));
        json_decref(k);
    }
    json_array_append_new(json_object_get(lp->obj, "top_logprobs"), tops);
    json_array_append_new(json_object_get(lp->obj, "text_offset"), json_integer(text_offset));
}

json_t *oai_logprobs_take(oai_logprobs_t *lp) {
    json_t *o = lp->obj;
    lp->obj = NULL;
    return o;
}

void oai_logprobs_free(oai_logprobs_t *lp) {
    json_decref(lp->obj);
    lp->obj = NULL;
}

void oai_make_id(oai_kind_t kind, uint64_t v, char *out, size_t n) {
    snprintf(out, n, "%s-%016" PRIx64, kind == OAI_CHAT ? "chatcmpl" : "cmpl", v);
}

static json_t *envelope(oai_kind_t kind, const char *id, long created, const char *model, bool chunk) {
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(id));
    json_object_set_new(o, "object", json_string(kind == OAI_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                                                  : "text_completion"));
    json_object_set_new(o, "created", json_integer(created));
    json_object_set_new(o, "model", oai_json_str(model, strlen(model)));
    return o;
}

json_t *oai_chunk(oai_kind_t kind, const char *id, long created, const char *model, const char *text, size_t len,
                  bool role, json_t *logprobs, const char *finish) {
    json_t *o = envelope(kind, id, created, model, true);
    json_t *c = json_object();
    json_object_set_new(c, "index", json_integer(0));
    if (kind == OAI_CHAT) {
        json_t *d = json_object();
        if (role) json_object_set_new(d, "role", json_string("assistant"));
        if (text) json_object_set_new(d, "content", oai_json_str(text, len));
        json_object_set_new(c, "delta", d);
    } else {
        json_object_set_new(c, "text", oai_json_str(text ? text : "", text ? len : 0));
    }
    json_object_set_new(c, "logprobs", logprobs ? logprobs : json_null());
    json_object_set_new(c, "finish_reason", finish ? json_string(finish) : json_null());
    json_t *cs = json_array();
    json_array_append_new(cs, c);
    json_object_set_new(o, "choices", cs);
    return o;
}

static json_t *usage(int n_prompt, int n_output, int n_cached) {
    json_t *u = json_object();
    json_object_set_new(u, "prompt_tokens", json_integer(n_prompt));
    json_object_set_new(u, "completion_tokens", json_integer(n_output));
    json_object_set_new(u, "total_tokens", json_integer(n_prompt + n_output));
    json_t *d = json_object();
    json_object_set_new(d, "cached_tokens", json_integer(n_cached));
    json_object_set_new(u, "prompt_tokens_details", d);
    return u;
}

json_t *oai_usage_chunk(oai_kind_t kind, const char *id, long created, const char *model, int n_prompt, int n_output,
                        int n_cached) {
    json_t *o = envelope(kind, id, created, model, true);
    json_object_set_new(o, "choices", json_array());
    json_object_set_new(o, "usage", usage(n_prompt, n_output, n_cached));
    return o;
}

json_t *oai_response(oai_kind_t kind, const char *id, long created, const char *model, const char *text, size_t len,
                     json_t *logprobs, const char *finish, int n_prompt, int n_output, int n_cached) {
    json_t *o = envelope(kind, id, created, model, false);
    json_t *c = json_object();
    json_object_set_new(c, "index", json_integer(0));
    if (kind == OAI_CHAT) {
        json_t *m = json_object();
        json_object_set_new(m, "role", json_string("assistant"));
        json_object_set_new(m, "content", oai_json_str(text, len));
        json_object_set_new(c, "message", m);
    } else {
        json_object_set_new(c, "text", oai_json_str(text, len));
    }
    json_object_set_new(c, "logprobs", logprobs ? logprobs : json_null());
    json_object_set_new(c, "finish_reason", json_string(finish));
    json_t *cs = json_array();
    json_array_append_new(cs, c);
    json_object_set_new(o, "choices", cs);
    json_object_set_new(o, "usage", usage(n_prompt, n_output, n_cached));
    return o;
}

char *oai_sse_frame(const json_t *j, size_t *len) {
    char *body = json_dumps(j, JSON_COMPACT);
    if (!body) body = hs_strdup("{}");
    size_t n = strlen(body);
    char *s = hs_malloc(n + 9);
    memcpy(s, "data: ", 6);
    memcpy(s + 6, body, n);
    memcpy(s + 6 + n, "\n\n", 3);
    free(body);
    *len = n + 8;
    return s;
}

const char *oai_finish_str(hs_finish_t f) {
    switch (f) {
    case HS_FINISH_LENGTH: return "length";
    case HS_FINISH_STOP: return "stop";
    case HS_FINISH_CANCELLED: return "abort";
    case HS_FINISH_ERROR: return "error";
    default: return NULL;
    }
}
