/*
 * Tests for tok and chat against the HF reference (tests/data/tokenizer_cases.json,
 * written by tools/gen_tokenizer_cases.py with HF tokenizers / transformers):
 *   - exact ids for every corpus string (first mismatch printed with both id lists);
 *   - invalid UTF-8 byte strings = HF on the U+FFFD-replaced string;
 *   - added-token flags (lstrip, rstrip, single_word, normalized, special) on a tiny
 *     tokenizer embedded in the fixture;
 *   - decode(encode(s)) == NFC(s), and tok_nfc == Python's NFC;
 *   - the streaming detokenizer: id by id and byte by byte, every chunk valid UTF-8,
 *     the chunks concatenating to the full text;
 *   - hostile byte strings: no crash, output valid UTF-8;
 *   - chat rendering = apply_chat_template; stop ids;
 *   - malformed tokenizer.json: the error names the file and the field.
 * The real tokenizer is loaded once (group setup): it takes a while under ASan.
 * Tokenizer directory: $HYSERVE_TOKENIZER_DIR, else tests/data/qwen3-tokenizer in the
 * repository (a copy of ../shared/data/qwen3-tokenizer, used if the copy is missing).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "chat.h"
#include "tok.h"
#include "util.h"

static tok_t *g_tok;
static json_t *g_fix;
static char g_dir[1024];

static int setup(void **state) {
    (void)state;
    const char *env = getenv("HYSERVE_TOKENIZER_DIR");
    snprintf(g_dir, sizeof g_dir, "%s", env && *env ? env : HYSERVE_SOURCE_DIR "/tests/data/qwen3-tokenizer");
    if (!(env && *env) && access(HYSERVE_SOURCE_DIR "/tests/data/qwen3-tokenizer/tokenizer.json", R_OK) != 0)
        snprintf(g_dir, sizeof g_dir, "%s", HYSERVE_SOURCE_DIR "/../shared/data/qwen3-tokenizer");
    char err[512];
    if (tok_load(g_dir, &g_tok, err, sizeof err)) {
        fprintf(stderr, "cannot load tokenizer: %s\n", err);
        return -1;
    }
    json_error_t je;
    g_fix = json_load_file(HYSERVE_SOURCE_DIR "/tests/data/tokenizer_cases.json", 0, &je);
    if (!g_fix) {
        fprintf(stderr, "tests/data/tokenizer_cases.json: %s (line %d)\n", je.text, je.line);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tok_free(g_tok);
    json_decref(g_fix);
    return 0;
}

static void print_ids(const char *label, const int32_t *v, size_t n, json_t *arr) {
    printf("  %s (%zu):", label, v ? n : json_array_size(arr));
    size_t m = v ? n : json_array_size(arr);
    for (size_t i = 0; i < m && i < 64; i++) printf(" %lld", v ? (long long)v[i] : (long long)json_integer_value(json_array_get(arr, i)));
    printf(m > 64 ? " ...\n" : "\n");
}

/* Encodes and compares with the expected array; prints both lists on mismatch. */
static int check_ids(const tok_t *t, const char *s, size_t len, json_t *exp, const char *what, size_t idx) {
    int32_t *ids;
    size_t n;
    char err[256];
    assert_int_equal(tok_encode(t, s, len, 0, &ids, &n, err, sizeof err), HS_OK);
    int ok = json_array_size(exp) == n;
    for (size_t i = 0; ok && i < n; i++) ok = json_integer_value(json_array_get(exp, i)) == ids[i];
    if (!ok) {
        printf("MISMATCH %s[%zu] text (%zu bytes): \"%.*s\"\n", what, idx, len, (int)(len < 200 ? len : 200), s);
        print_ids("hyserve ", ids, n, NULL);
        print_ids("expected", NULL, 0, exp);
    }
    free(ids);
    return ok;
}

static void test_fixture_ids(void **state) {
    (void)state;
    json_t *cases = json_object_get(g_fix, "cases"), *c;
    size_t i, bad = 0;
    assert_true(json_array_size(cases) >= 200);
    json_array_foreach(cases, i, c) {
        json_t *txt = json_object_get(c, "text");
        if (!check_ids(g_tok, json_string_value(txt), json_string_length(txt), json_object_get(c, "ids"), "cases", i)) {
            bad++;
            break; /* first mismatch only */
        }
    }
    assert_int_equal(bad, 0);
}

static int unhex(const char *h, char *out) {
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    return (int)n;
}

static void test_invalid_utf8_fixture(void **state) {
    (void)state;
    json_t *cases = json_object_get(g_fix, "invalid_utf8"), *c;
    size_t i;
    assert_true(json_array_size(cases) > 10);
    json_array_foreach(cases, i, c) {
        char buf[256];
        int n = unhex(json_string_value(json_object_get(c, "hex")), buf);
        assert_false(tok_utf8_valid(buf, (size_t)n) && i < 24); /* the list starts with invalid strings */
        assert_true(check_ids(g_tok, buf, (size_t)n, json_object_get(c, "ids"), "invalid_utf8", i));
    }
}

static void test_added_token_flags(void **state) {
    (void)state;
    json_t *tiny = json_object_get(g_fix, "tiny");
    char path[] = "/tmp/hs_tok_tinyXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(json_dump_file(json_object_get(tiny, "tokenizer"), path, 0), 0);
    tok_t *t;
    char err[512];
    int rc = tok_load(path, &t, err, sizeof err);
    unlink(path);
    if (rc) printf("%s\n", err);
    assert_int_equal(rc, HS_OK);
    json_t *c;
    size_t i, bad = 0;
    json_array_foreach(json_object_get(tiny, "cases"), i, c) {
        json_t *txt = json_object_get(c, "text");
        bad += !check_ids(t, json_string_value(txt), json_string_length(txt), json_object_get(c, "ids"), "tiny", i);
    }
    /* TOK_ENC_SPLIT_SPECIAL: the special <|sp|> is text, the non-special <|sp|>x still matches */
    int32_t *ids;
    size_t n;
    assert_int_equal(tok_encode(t, "<|sp|>", 6, TOK_ENC_SPLIT_SPECIAL, &ids, &n, err, sizeof err), HS_OK);
    assert_true(n > 1);
    free(ids);
    assert_int_equal(tok_encode(t, "<|sp|>x", 7, TOK_ENC_SPLIT_SPECIAL, &ids, &n, err, sizeof err), HS_OK);
    assert_int_equal(n, 1);
    free(ids);
    tok_free(t);
    assert_int_equal(bad, 0);
}

static void test_roundtrip_nfc(void **state) {
    (void)state;
    json_t *cases = json_object_get(g_fix, "cases"), *c;
    size_t i;
    json_array_foreach(cases, i, c) {
        json_t *txt = json_object_get(c, "text"), *nfc = json_object_get(c, "nfc");
        const char *s = json_string_value(txt);
        size_t len = json_string_length(txt), nl;
        char *mine = tok_nfc(s, len, &nl);
        assert_non_null(mine);
        assert_int_equal(nl, json_string_length(nfc));
        assert_memory_equal(mine, json_string_value(nfc), nl);
        free(mine);
        int32_t *ids;
        size_t n, dl;
        char *dec, err[256];
        assert_int_equal(tok_encode(g_tok, s, len, 0, &ids, &n, err, sizeof err), HS_OK);
        assert_int_equal(tok_decode(g_tok, ids, n, 0, &dec, &dl, err, sizeof err), HS_OK);
        if (dl != nl || memcmp(dec, json_string_value(nfc), nl)) printf("round trip differs for case %zu\n", i);
        assert_int_equal(dl, nl);
        assert_memory_equal(dec, json_string_value(nfc), nl);
        free(dec);
        free(ids);
    }
    /* skip special */
    int32_t ids[] = {151644, 872, 198, 9707, 151645};
    char *dec, err[256];
    size_t dl;
    assert_int_equal(tok_decode(g_tok, ids, 5, TOK_DEC_SKIP_SPECIAL, &dec, &dl, err, sizeof err), HS_OK);
    assert_string_equal(dec, "user\nHello");
    free(dec);
    int32_t badid[] = {1, -5};
    assert_int_equal(tok_decode(g_tok, badid, 2, 0, &dec, &dl, err, sizeof err), HS_ERR_INVALID);
    assert_non_null(strstr(err, "position 1"));
    badid[1] = tok_n_vocab(g_tok);
    assert_int_equal(tok_decode(g_tok, badid, 2, 0, &dec, &dl, err, sizeof err), HS_ERR_INVALID);
}

/* Streams ids; checks every chunk is valid UTF-8 and the total equals `expect`. */
static void stream_ids(const int32_t *ids, size_t n, const char *expect, size_t elen) {
    tok_stream_t *st = tok_stream_new(g_tok, 0);
    char *all = malloc(elen + 64);
    size_t tot = 0;
    for (size_t i = 0; i < n; i++) {
        const char *txt;
        size_t l;
        char err[128];
        assert_int_equal(tok_stream_push(st, ids[i], &txt, &l, err, sizeof err), HS_OK);
        assert_true(tok_utf8_valid(txt, l));
        assert_true(tot + l <= elen);
        memcpy(all + tot, txt, l);
        tot += l;
    }
    const char *txt;
    size_t l;
    tok_stream_flush(st, &txt, &l);
    assert_true(tot + l <= elen + 3);
    memcpy(all + tot, txt, l);
    tot += l;
    assert_int_equal(tot, elen);
    assert_memory_equal(all, expect, elen);
    free(all);
    tok_stream_free(st);
}

static void test_stream(void **state) {
    (void)state;
    json_t *cases = json_object_get(g_fix, "cases"), *c;
    size_t i;
    size_t held = 0;
    json_array_foreach(cases, i, c) {
        json_t *nfc = json_object_get(c, "nfc"), *ex = json_object_get(c, "ids");
        size_t n = json_array_size(ex);
        int32_t *ids = malloc((n + 1) * sizeof *ids);
        for (size_t k = 0; k < n; k++) ids[k] = (int32_t)json_integer_value(json_array_get(ex, k));
        stream_ids(ids, n, json_string_value(nfc), json_string_length(nfc));
        free(ids);
    }
    /* byte by byte over multi-byte characters: nothing comes out until a char is whole */
    const char *s = "a\xc3\xa9\xe4\xbd\xa0\xf0\x9f\x98\x80z";
    size_t sl = strlen(s);
    tok_stream_t *st = tok_stream_new(g_tok, 0);
    char out[64];
    size_t tot = 0;
    for (size_t k = 0; k < sl; k++) {
        const char *txt;
        size_t l;
        tok_stream_push_bytes(st, s + k, 1, &txt, &l);
        assert_true(tok_utf8_valid(txt, l));
        if (l == 0) held++;
        memcpy(out + tot, txt, l);
        tot += l;
    }
    assert_int_equal(held, 1 + 2 + 3);
    assert_int_equal(tot, sl);
    assert_memory_equal(out, s, sl);
    /* an unfinished character at the end comes out as one U+FFFD */
    const char *txt;
    size_t l;
    tok_stream_push_bytes(st, "\xf0\x9f", 2, &txt, &l);
    assert_int_equal(l, 0);
    assert_int_equal(tok_stream_pending(st), 2);
    tok_stream_flush(st, &txt, &l);
    assert_int_equal(l, 3);
    assert_memory_equal(txt, "\xef\xbf\xbd", 3);
    /* a broken sequence is replaced, not held */
    tok_stream_push_bytes(st, "\xe4\xbd" "A", 3, &txt, &l);
    assert_int_equal(l, 4);
    assert_memory_equal(txt, "\xef\xbf\xbd" "A", 4);
    char err[128];
    assert_int_equal(tok_stream_push(st, -1, &txt, &l, err, sizeof err), HS_ERR_INVALID);
    tok_stream_free(st);
    /* emoji ids from the real vocab: split across byte-level tokens */
    const char *emo = "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 ok";
    int32_t *ids;
    size_t n;
    assert_int_equal(tok_encode(g_tok, emo, strlen(emo), 0, &ids, &n, err, sizeof err), HS_OK);
    stream_ids(ids, n, emo, strlen(emo));
    free(ids);
}

static void test_hostile_bytes(void **state) {
    (void)state;
    const char *inputs[] = {"\x80", "\xbf\x80\x80", "\xc0\x80", "\xe0\x80\x80", "\xf0\x80\x80\x80", "\xe2\x82",
                            "\xf0\x9f\x98", "\xed\xa0\x80", "\xed\xbf\xbf", "\xff", "\xfe", "\xf5\x80\x80\x80",
                            "\xf4\x90\x80\x80", "a\xcc", "\xcc\x81\xcc", "<|im_start|\xff>", "<|im_\x80start|>"};
    for (size_t i = 0; i < sizeof inputs / sizeof *inputs; i++) {
        const char *s = inputs[i];
        size_t len = strlen(s), cl;
        int32_t *ids;
        size_t n, dl;
        char *dec, err[256];
        assert_int_equal(tok_encode(g_tok, s, len, 0, &ids, &n, err, sizeof err), HS_OK);
        assert_true(n > 0);
        assert_int_equal(tok_decode(g_tok, ids, n, 0, &dec, &dl, err, sizeof err), HS_OK);
        assert_true(tok_utf8_valid(dec, dl)); /* replaced before encoding */
        char *clean = tok_utf8_sanitize(s, len, &cl);
        assert_true(tok_utf8_valid(clean, cl));
        free(clean);
        /* byte-by-byte streaming of the raw input never emits invalid UTF-8 */
        tok_stream_t *st = tok_stream_new(g_tok, 0);
        for (size_t k = 0; k < len; k++) {
            const char *txt;
            size_t l;
            tok_stream_push_bytes(st, s + k, 1, &txt, &l);
            assert_true(tok_utf8_valid(txt, l));
        }
        const char *txt;
        size_t l;
        tok_stream_flush(st, &txt, &l);
        assert_true(tok_utf8_valid(txt, l));
        tok_stream_free(st);
        free(dec);
        free(ids);
    }
    /* embedded NUL is a character */
    int32_t *ids;
    size_t n;
    char err[128];
    assert_int_equal(tok_encode(g_tok, "a\0b", 3, 0, &ids, &n, err, sizeof err), HS_OK);
    assert_int_equal(n, 3);
    free(ids);
    assert_int_equal(tok_encode(g_tok, NULL, 0, 0, &ids, &n, err, sizeof err), HS_OK);
    assert_int_equal(n, 0);
    free(ids);
}

static void test_chat(void **state) {
    (void)state;
    chat_t *c;
    char err[512];
    assert_int_equal(chat_load(g_dir, g_tok, &c, err, sizeof err), HS_OK);
    assert_string_equal(chat_eos_token(c), "<|im_end|>");
    assert_string_equal(chat_pad_token(c), "<|endoftext|>");
    assert_null(chat_bos_token(c));
    assert_true(chat_is_stop(c, 151645));
    assert_true(chat_is_stop(c, 151643));
    assert_false(chat_is_stop(c, 151644));
    json_t *cases = json_object_get(g_fix, "chat"), *cc;
    size_t i;
    assert_true(json_array_size(cases) >= 10);
    json_array_foreach(cases, i, cc) {
        json_t *msgs = json_object_get(cc, "messages"), *m;
        size_t k, nm = json_array_size(msgs);
        chat_msg_t mv[16];
        assert_true(nm <= 16);
        json_array_foreach(msgs, k, m) {
            mv[k] = (chat_msg_t){json_string_value(json_object_get(m, "role")), json_string_value(json_object_get(m, "content")),
                                 json_string_value(json_object_get(m, "reasoning_content"))};
        }
        chat_opts_t o = chat_opts_default();
        o.add_generation_prompt = json_is_true(json_object_get(cc, "add_generation_prompt"));
        if (json_is_false(json_object_get(cc, "enable_thinking"))) o.enable_thinking = 0;
        char *out;
        size_t len;
        assert_int_equal(chat_render(c, mv, nm, &o, &out, &len, err, sizeof err), HS_OK);
        const char *want = json_string_value(json_object_get(cc, "text"));
        if (strcmp(out, want)) printf("chat case %zu:\n--- got\n%s\n--- want\n%s\n", i, out, want);
        assert_string_equal(out, want);
        free(out);
    }
    /* hand-written: tool turns and reasoning */
    chat_msg_t tm[] = {{"user", "weather?", NULL}, {"assistant", "calling", "need data"}, {"tool", "sunny", NULL},
                       {"tool", "22C", NULL}};
    char *out;
    size_t len;
    assert_int_equal(chat_render(c, tm, 4, NULL, &out, &len, err, sizeof err), HS_OK);
    assert_string_equal(out, "<|im_start|>user\nweather?<|im_end|>\n"
                             "<|im_start|>assistant\n<think>\nneed data\n</think>\n\ncalling<|im_end|>\n"
                             "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\n22C\n</tool_response><|im_end|>\n"
                             "<|im_start|>assistant\n");
    free(out);
    chat_msg_t bad[] = {{"robot", "x", NULL}};
    assert_int_equal(chat_render(c, bad, 1, NULL, &out, &len, err, sizeof err), HS_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "robot"));
    assert_int_equal(chat_render(c, bad, 0, NULL, &out, &len, err, sizeof err), HS_ERR_INVALID);
    chat_free(c);
    /* a directory without tokenizer_config.json: ChatML defaults */
    assert_int_equal(chat_load("/nonexistent-dir", g_tok, &c, err, sizeof err), HS_OK);
    assert_string_equal(chat_eos_token(c), "<|im_end|>");
    size_t ns;
    chat_stop_ids(c, &ns);
    assert_int_equal(ns, 2);
    chat_free(c);
}

/* Writes `text` to a temp file, loads it, expects rc and all of `needles` in the error. */
static void expect_load_error(const char *text, int rc, const char *needle) {
    char path[] = "/tmp/hs_tok_badXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    tok_t *t = NULL;
    char err[512] = "";
    int got = tok_load(path, &t, err, sizeof err);
    unlink(path);
    if (got != rc || !strstr(err, path) || !strstr(err, needle))
        printf("load error for %.60s: rc %d (want %d): %s (want '%s')\n", text, got, rc, err, needle);
    assert_int_equal(got, rc);
    assert_null(t);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, needle));
}

static void test_malformed(void **state) {
    (void)state;
    json_t *tiny = json_deep_copy(json_object_get(json_object_get(g_fix, "tiny"), "tokenizer"));
    expect_load_error("{\"model\": ", HS_ERR_FORMAT, "not valid JSON");
    expect_load_error("[1, 2]", HS_ERR_FORMAT, "top level");
    expect_load_error("{\"version\": \"1.0\"}", HS_ERR_FORMAT, "'model'");
    expect_load_error("{\"model\": {\"type\": \"WordPiece\"}}", HS_ERR_UNSUPPORTED, "model.type");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"merges\": []}}", HS_ERR_FORMAT, "model.vocab");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}}", HS_ERR_FORMAT, "model.merges");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, \"merges\": []}}", HS_ERR_FORMAT, "model.vocab[\"a\"]");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}", HS_ERR_FORMAT, "no token for byte");
    struct {
        const char *field, *json;
        int rc;
        const char *needle;
    } muts[] = {
        {"normalizer", "{\"type\": \"NFKC\"}", HS_ERR_UNSUPPORTED, "normalizer.type"},
        {"pre_tokenizer", "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(unclosed\"}, \"behavior\": \"Isolated\"}", HS_ERR_FORMAT,
         "pre_tokenizer.pattern.Regex"},
        {"pre_tokenizer", "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": \"Removed\"}", HS_ERR_UNSUPPORTED,
         "pre_tokenizer.behavior"},
        {"pre_tokenizer", "{\"type\": \"Whitespace\"}", HS_ERR_UNSUPPORTED, "pre_tokenizer.type"},
        {"added_tokens", "[{\"id\": 5}]", HS_ERR_FORMAT, "added_tokens[0].content"},
        {"added_tokens", "[{\"id\": -1, \"content\": \"x\"}]", HS_ERR_FORMAT, "added_tokens[0].id"},
        {"model.merges", "[[\"h\", \"e\"], [\"q\", \"\\u00ff\\u00ff\"]]", HS_ERR_FORMAT, "model.merges[1]"},
        {"model.merges", "[[\"h\"]]", HS_ERR_FORMAT, "model.merges[0]"},
        {"model.merges", "[\"h e\", \"he\"]", HS_ERR_FORMAT, "model.merges[1]"},
        {"model.byte_fallback", "true", HS_ERR_UNSUPPORTED, "model.byte_fallback"},
    };
    for (size_t i = 0; i < sizeof muts / sizeof *muts; i++) {
        json_t *doc = json_deep_copy(tiny);
        json_error_t je;
        json_t *val = json_loads(muts[i].json, JSON_DECODE_ANY, &je);
        assert_non_null(val);
        if (!strncmp(muts[i].field, "model.", 6)) json_object_set_new(json_object_get(doc, "model"), muts[i].field + 6, val);
        else json_object_set_new(doc, muts[i].field, val);
        char *text = json_dumps(doc, 0);
        expect_load_error(text, muts[i].rc, muts[i].needle);
        free(text);
        json_decref(doc);
    }
    /* "a b" string merges load */
    json_t *doc = json_deep_copy(tiny);
    json_object_set_new(json_object_get(doc, "model"), "merges", json_loads("[\"h e\", \"l l\"]", 0, NULL));
    char *text = json_dumps(doc, 0);
    char path[] = "/tmp/hs_tok_okXXXXXX";
    int fd = mkstemp(path);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    tok_t *t;
    char err[256];
    assert_int_equal(tok_load(path, &t, err, sizeof err), HS_OK);
    unlink(path);
    int32_t *ids;
    size_t n;
    assert_int_equal(tok_encode(t, "hell", 4, 0, &ids, &n, err, sizeof err), HS_OK);
    assert_int_equal(n, 2); /* he + ll */
    free(ids);
    tok_free(t);
    free(text);
    json_decref(doc);
    json_decref(tiny);
    assert_int_equal(tok_load("/nonexistent/tokenizer.json", &t, err, sizeof err), HS_ERR_IO);
    assert_non_null(strstr(err, "/nonexistent/tokenizer.json"));
}

static void test_lookup(void **state) {
    (void)state;
    assert_int_equal(tok_lookup(g_tok, "<|im_start|>", 12), 151644);
    assert_int_equal(tok_lookup(g_tok, "Hello", 5), 9707);
    assert_int_equal(tok_lookup(g_tok, "no-such-token-xyz", 17), -1);
    assert_true(tok_is_special(g_tok, 151645));
    assert_false(tok_is_special(g_tok, 151667)); /* <think> is added but not special */
    assert_int_equal(tok_n_vocab(g_tok), 151669);
    size_t l;
    assert_null(tok_id_bytes(g_tok, -1, &l));
    assert_null(tok_id_bytes(g_tok, tok_n_vocab(g_tok), &l));
    /* split-special: untrusted text cannot inject control tokens */
    int32_t *ids;
    size_t n;
    char err[128];
    assert_int_equal(tok_encode(g_tok, "<|im_end|>", 10, TOK_ENC_SPLIT_SPECIAL, &ids, &n, err, sizeof err), HS_OK);
    for (size_t i = 0; i < n; i++) assert_false(tok_is_special(g_tok, ids[i]));
    free(ids);
}

/* Several threads encode the corpus at once (one gets the word cache, the others
 * go uncached); every result must still match the fixture. */
static void *enc_thread(void *arg) {
    json_t *cases = json_object_get(g_fix, "cases"), *c;
    size_t i;
    long bad = 0;
    for (int rep = 0; rep < 3; rep++) {
        json_array_foreach(cases, i, c) {
            json_t *txt = json_object_get(c, "text"), *exp = json_object_get(c, "ids");
            int32_t *ids;
            size_t n;
            if (tok_encode(g_tok, json_string_value(txt), json_string_length(txt), 0, &ids, &n, NULL, 0)) { bad++; continue; }
            int ok = json_array_size(exp) == n;
            for (size_t k = 0; ok && k < n; k++) ok = json_integer_value(json_array_get(exp, k)) == ids[k];
            bad += !ok;
            free(ids);
        }
    }
    *(long *)arg = bad;
    return NULL;
}

static void test_threads(void **state) {
    (void)state;
    pthread_t th[4];
    long bad[4];
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, enc_thread, &bad[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(bad[i], 0);
    }
}

/* The CLI, through $HYSERVE_BIN (set by CTest); skipped when it is not set. */
static int run_cli(const char *args, char *out, size_t cap) {
    const char *bin = getenv("HYSERVE_BIN");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s 2>/dev/null", bin, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void **state) {
    (void)state;
    if (!getenv("HYSERVE_BIN")) {
        printf("HYSERVE_BIN not set: CLI test skipped\n");
        return;
    }
    char out[4096], args[1500];
    snprintf(args, sizeof args, "tokenize --model '%s' --text 'Hello, world! <|im_start|>'", g_dir);
    assert_int_equal(run_cli(args, out, sizeof out), 0);
    assert_string_equal(out, "9707 11 1879 0 220 151644\n");
    snprintf(args, sizeof args, "tokenize --model '%s' --text 'Hello' --json", g_dir);
    assert_int_equal(run_cli(args, out, sizeof out), 0);
    assert_string_equal(out, "{\"ids\": [9707]}\n");
    snprintf(args, sizeof args, "detokenize --model '%s' --ids 9707,11,1879,0", g_dir);
    assert_int_equal(run_cli(args, out, sizeof out), 0);
    assert_string_equal(out, "Hello, world!");
    snprintf(args, sizeof args, "detokenize --model '%s' --ids '[151644, 872]' --skip-special", g_dir);
    assert_int_equal(run_cli(args, out, sizeof out), 0);
    assert_string_equal(out, "user");
    snprintf(args, sizeof args, "detokenize --model '%s' --ids 1,x", g_dir);
    assert_int_equal(run_cli(args, out, sizeof out), 2);
    snprintf(args, sizeof args, "tokenize --model '%s'", g_dir);
    assert_int_equal(run_cli(args, out, sizeof out), 2);
    assert_int_equal(run_cli("tokenize --model /nonexistent --text a", out, sizeof out), 2);
    assert_int_equal(run_cli("detokenize --bogus", out, sizeof out), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_ids),   cmocka_unit_test(test_invalid_utf8_fixture),
        cmocka_unit_test(test_added_token_flags), cmocka_unit_test(test_roundtrip_nfc),
        cmocka_unit_test(test_stream),        cmocka_unit_test(test_hostile_bytes),
        cmocka_unit_test(test_chat),          cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_lookup),        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
