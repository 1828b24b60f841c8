/*
 * chat: ChatML rendering with Qwen3's template rules, special tokens from
 * tokenizer_config.json, stop ids for generation. See chat.h for what is supported.
 *
 * The rendering mirrors the Jinja template line by line (same order of checks), so a
 * difference against HF apply_chat_template points at one branch here.
 */
#include "chat.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "util.h"

#define MAX_STOP 8

struct chat {
    char *bos, *eos, *pad, *im_start, *im_end;
    int32_t stop[MAX_STOP];
    size_t n_stop;
};

chat_opts_t chat_opts_default(void) { return (chat_opts_t){.add_generation_prompt = 1, .enable_thinking = 1}; }

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* A token field: "str", {"content": "str", ...} or null/absent (→ NULL). */
static int token_field(json_t *root, const char *key, const char *path, char **out, char *err, size_t n) {
    json_t *v = json_object_get(root, key);
    *out = NULL;
    if (!v || json_is_null(v)) return HS_OK;
    if (json_is_object(v)) v = json_object_get(v, "content");
    if (!json_is_string(v))
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: field '%s': expected a string or {\"content\": string}", path, key);
    *out = hs_strdup(json_string_value(v));
    return HS_OK;
}

/* 1 if `content` is listed in additional_special_tokens or added_tokens_decoder. */
static int config_has_token(json_t *root, const char *content) {
    json_t *a = json_object_get(root, "additional_special_tokens"), *v;
    size_t i;
    const char *k;
    json_array_foreach(a, i, v) {
        json_t *s = json_is_object(v) ? json_object_get(v, "content") : v;
        if (json_is_string(s) && !strcmp(json_string_value(s), content)) return 1;
    }
    json_t *d = json_object_get(root, "added_tokens_decoder");
    json_object_foreach(d, k, v) {
        json_t *s = json_object_get(v, "content");
        if (json_is_string(s) && !strcmp(json_string_value(s), content)) return 1;
    }
    return 0;
}

static void add_stop(chat_t *c, const tok_t *tok, const char *s) {
    if (!s || !tok) return;
    int32_t id = tok_lookup(tok, s, strlen(s));
    if (id < 0) return;
    for (size_t i = 0; i < c->n_stop; i++)
        if (c->stop[i] == id) return;
    if (c->n_stop < MAX_STOP) c->stop[c->n_stop++] = id;
}

static void add_stop_id(chat_t *c, const tok_t *tok, json_int_t id) {
    if (id < 0 || id > INT32_MAX) return;
    size_t l;
    if (tok && !tok_id_bytes(tok, (int32_t)id, &l)) return;
    for (size_t i = 0; i < c->n_stop; i++)
        if (c->stop[i] == id) return;
    if (c->n_stop < MAX_STOP) c->stop[c->n_stop++] = (int32_t)id;
}

static json_t *load_json(const char *dir, const char *name, char **pathp, int *rc, char *err, size_t n) {
    size_t l = strlen(dir) + strlen(name) + 2;
    char *path = hs_malloc(l);
    snprintf(path, l, "%s/%s", dir, name);
    *pathp = path;
    *rc = HS_OK;
    if (!file_exists(path)) return NULL;
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) *rc = hs_errf(err, n, HS_ERR_FORMAT, "%s: not valid JSON (line %d, column %d): %s", path, je.line, je.column, je.text);
    else if (!json_is_object(root)) {
        json_decref(root);
        root = NULL;
        *rc = hs_errf(err, n, HS_ERR_FORMAT, "%s: top level is not a JSON object", path);
    }
    return root;
}

int chat_load(const char *dir, const tok_t *tok, chat_t **out, char *err, size_t n) {
    if (!dir || !out) return hs_errf(err, n, HS_ERR_INVALID, "chat_load: NULL argument");
    *out = NULL;
    chat_t *c = hs_calloc(1, sizeof *c);
    char *path;
    int rc;
    json_t *root = load_json(dir, "tokenizer_config.json", &path, &rc, err, n);
    if (rc == HS_OK && root) {
        rc = token_field(root, "bos_token", path, &c->bos, err, n);
        if (!rc) rc = token_field(root, "eos_token", path, &c->eos, err, n);
        if (!rc) rc = token_field(root, "pad_token", path, &c->pad, err, n);
        if (!rc && config_has_token(root, "<|im_start|>")) c->im_start = hs_strdup("<|im_start|>");
        if (!rc && config_has_token(root, "<|im_end|>")) c->im_end = hs_strdup("<|im_end|>");
    }
    json_decref(root);
    hs_free(path);
    if (rc) {
        chat_free(c);
        return rc;
    }
    /* ChatML defaults */
    if (!c->im_start) c->im_start = hs_strdup("<|im_start|>");
    if (!c->im_end) c->im_end = hs_strdup("<|im_end|>");
    if (!c->eos) c->eos = hs_strdup(tok && tok_lookup(tok, c->im_end, strlen(c->im_end)) >= 0 ? c->im_end : "<|endoftext|>");
    if (!c->pad) c->pad = hs_strdup("<|endoftext|>");

    add_stop(c, tok, c->eos);
    add_stop(c, tok, c->im_end);
    add_stop(c, tok, "<|endoftext|>");
    root = load_json(dir, "generation_config.json", &path, &rc, err, n);
    if (rc == HS_OK && root) {
        json_t *e = json_object_get(root, "eos_token_id"), *v;
        size_t i;
        if (json_is_integer(e)) add_stop_id(c, tok, json_integer_value(e));
        json_array_foreach(e, i, v) if (json_is_integer(v)) add_stop_id(c, tok, json_integer_value(v));
    }
    json_decref(root);
    hs_free(path);
    if (rc) {
        chat_free(c);
        return rc;
    }
    *out = c;
    return HS_OK;
}

void chat_free(chat_t *c) {
    if (!c) return;
    hs_free(c->bos);
    hs_free(c->eos);
    hs_free(c->pad);
    hs_free(c->im_start);
    hs_free(c->im_end);
    hs_free(c);
}

const int32_t *chat_stop_ids(const chat_t *c, size_t *n) {
    *n = c->n_stop;
    return c->stop;
}

int chat_is_stop(const chat_t *c, int32_t id) {
    for (size_t i = 0; i < c->n_stop; i++)
        if (c->stop[i] == id) return 1;
    return 0;
}

const char *chat_eos_token(const chat_t *c) { return c->eos; }
const char *chat_bos_token(const chat_t *c) { return c->bos; }
const char *chat_pad_token(const chat_t *c) { return c->pad; }
const char *chat_im_start(const chat_t *c) { return c->im_start; }
const char *chat_im_end(const chat_t *c) { return c->im_end; }

/* ---- rendering -------------------------------------------------------------------- */

static void puts_(hs_buf_t *b, const char *s) { hs_buf_add(b, s, strlen(s)); }

/* A view into a string; the Python string methods the template uses. */
typedef struct {
    const char *s;
    size_t n;
} sv_t;

static sv_t sv(const char *s) { return (sv_t){s ? s : "", s ? strlen(s) : 0}; }
static sv_t lstrip_nl(sv_t v) {
    while (v.n && v.s[0] == '\n') { v.s++; v.n--; }
    return v;
}
static sv_t rstrip_nl(sv_t v) {
    while (v.n && v.s[v.n - 1] == '\n') v.n--;
    return v;
}
static const char *sv_find(sv_t v, const char *pat) { /* first occurrence or NULL */
    size_t pl = strlen(pat);
    for (size_t i = 0; i + pl <= v.n; i++)
        if (!memcmp(v.s + i, pat, pl)) return v.s + i;
    return NULL;
}
static const char *sv_rfind(sv_t v, const char *pat) { /* last occurrence or NULL */
    size_t pl = strlen(pat);
    for (size_t i = v.n >= pl ? v.n - pl + 1 : 0; i-- > 0;)
        if (!memcmp(v.s + i, pat, pl)) return v.s + i;
    return NULL;
}
static int starts_with(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }
static int ends_with(const char *s, const char *p) {
    size_t a = strlen(s), b = strlen(p);
    return a >= b && !memcmp(s + a - b, p, b);
}

static int role_ok(const char *r) {
    return r && (!strcmp(r, "system") || !strcmp(r, "user") || !strcmp(r, "assistant") || !strcmp(r, "tool"));
}

int chat_render(const chat_t *c, const chat_msg_t *m, size_t nm, const chat_opts_t *opts,
                char **out, size_t *out_len, char *err, size_t n) {
    if (!c || !out || !out_len || (!m && nm)) return hs_errf(err, n, HS_ERR_INVALID, "chat_render: NULL argument");
    *out = NULL;
    *out_len = 0;
    chat_opts_t o = opts ? *opts : chat_opts_default();
    if (nm == 0) return hs_errf(err, n, HS_ERR_INVALID, "chat_render: no messages");
    for (size_t i = 0; i < nm; i++)
        if (!role_ok(m[i].role))
            return hs_errf(err, n, HS_ERR_UNSUPPORTED, "chat_render: message %zu: role '%s' is not supported "
                           "(system, user, assistant, tool)", i, m[i].role ? m[i].role : "(null)");
    const char *S = c->im_start, *E = c->im_end;
    hs_buf_t b = {0};
    hs_buf_add(&b, "", 0);
    if (!strcmp(m[0].role, "system")) {
        puts_(&b, S);
        puts_(&b, "system\n");
        puts_(&b, m[0].content ? m[0].content : "");
        puts_(&b, E);
        puts_(&b, "\n");
    }
    /* index of the last real user query (a user turn that is not a wrapped tool response) */
    size_t last_query = nm - 1;
    for (size_t k = nm; k-- > 0;) {
        const char *ct = m[k].content ? m[k].content : "";
        if (!strcmp(m[k].role, "user") && !(starts_with(ct, "<tool_response>") && ends_with(ct, "</tool_response>"))) {
            last_query = k;
            break;
        }
    }
    for (size_t i = 0; i < nm; i++) {
        const char *role = m[i].role;
        sv_t content = sv(m[i].content);
        if (!strcmp(role, "user") || (!strcmp(role, "system") && i > 0)) {
            puts_(&b, S);
            puts_(&b, role);
            puts_(&b, "\n");
            hs_buf_add(&b, content.s, content.n);
            puts_(&b, E);
            puts_(&b, "\n");
        } else if (!strcmp(role, "assistant")) {
            sv_t reasoning = {"", 0};
            if (m[i].reasoning) {
                reasoning = sv(m[i].reasoning);
            } else if (sv_find(content, "</think>")) {
                const char *last = sv_rfind(content, "</think>");
                const char *first = sv_find(content, "</think>");
                sv_t before = {content.s, (size_t)(first - content.s)};
                before = rstrip_nl(before);
                const char *th = sv_rfind(before, "<think>");
                if (th) before = (sv_t){th + 7, before.n - (size_t)(th + 7 - before.s)};
                reasoning = lstrip_nl(before);
                sv_t after = {last + 8, content.n - (size_t)(last + 8 - content.s)};
                content = lstrip_nl(after);
            }
            puts_(&b, S);
            puts_(&b, role);
            if (i > last_query && (i == nm - 1 || reasoning.n)) {
                puts_(&b, "\n<think>\n");
                sv_t r = rstrip_nl(lstrip_nl(reasoning));
                hs_buf_add(&b, r.s, r.n);
                puts_(&b, "\n</think>\n\n");
                content = lstrip_nl(content);
            } else {
                puts_(&b, "\n");
            }
            hs_buf_add(&b, content.s, content.n);
            puts_(&b, E);
            puts_(&b, "\n");
        } else if (!strcmp(role, "tool")) {
            if (i == 0 || strcmp(m[i - 1].role, "tool")) {
                puts_(&b, S);
                puts_(&b, "user");
            }
            puts_(&b, "\n<tool_response>\n");
            hs_buf_add(&b, content.s, content.n);
            puts_(&b, "\n</tool_response>");
            if (i == nm - 1 || strcmp(m[i + 1].role, "tool")) {
                puts_(&b, E);
                puts_(&b, "\n");
            }
        }
    }
    if (o.add_generation_prompt) {
        puts_(&b, S);
        puts_(&b, "assistant\n");
        if (!o.enable_thinking) puts_(&b, "<think>\n\n</think>\n\n");
    }
    *out = b.p;
    *out_len = b.n;
    return HS_OK;
}
