/*
 * fuzz_tok: arbitrary bytes through the tokenizer: encode (with and without
 * split-special), decode, the streaming detokenizer fed id by id and byte by byte,
 * and chat rendering of the bytes as a user message. Invariants checked (abort on
 * failure): encode never fails; every id is in range; decode of the ids equals NFC of
 * the U+FFFD-sanitized input; every stream chunk is valid UTF-8 and the chunks add
 * up to the sanitized decode.
 *
 * The real Qwen3 tokenizer (tests/data/qwen3-tokenizer, or $HYSERVE_TOKENIZER_DIR) is
 * loaded once, on the first input. Seeds: fuzz/seeds/tok/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "tok.h"
#include "util.h"

static tok_t *g_tok;
static chat_t *g_chat;

static void init(void) {
    const char *env = getenv("HYSERVE_TOKENIZER_DIR");
    const char *dir = env && *env ? env : HYSERVE_SOURCE_DIR "/tests/data/qwen3-tokenizer";
    char err[512];
    if (tok_load(dir, &g_tok, err, sizeof err) || chat_load(dir, g_tok, &g_chat, err, sizeof err)) {
        fprintf(stderr, "fuzz_tok: %s\n", err);
        abort();
    }
}

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz_tok: check failed: %s (line %d)\n", #c, __LINE__); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_tok) init();
    if (size > 1 << 16) return 0;
    const char *s = (const char *)data;
    char err[256];
    for (unsigned flags = 0; flags <= TOK_ENC_SPLIT_SPECIAL; flags += TOK_ENC_SPLIT_SPECIAL) {
        int32_t *ids;
        size_t n;
        CHECK(tok_encode(g_tok, s, size, flags, &ids, &n, err, sizeof err) == HS_OK);
        for (size_t i = 0; i < n; i++) CHECK(ids[i] >= 0 && ids[i] < tok_n_vocab(g_tok));
        char *dec;
        size_t dl;
        CHECK(tok_decode(g_tok, ids, n, 0, &dec, &dl, err, sizeof err) == HS_OK);
        /* decode(encode(x)) == NFC(sanitize(x)) (added tokens are not normalized, but
         * NFC never changes their ASCII text or what surrounds them in a way that
         * differs from normalizing the whole string, except at their boundaries:
         * compare only when there are no added tokens). */
        size_t cl, nl;
        char *clean = tok_utf8_sanitize(s, size, &cl);
        char *nfc = tok_nfc(clean, cl, &nl);
        CHECK(nfc != NULL);
        int has_added = 0;
        for (size_t i = 0; i < n; i++) has_added |= ids[i] >= 151643; /* Qwen: added tokens start here */
        if (!has_added) CHECK(dl == nl && !memcmp(dec, nfc, nl));
        /* stream id by id */
        tok_stream_t *st = tok_stream_new(g_tok, 0);
        char *acc = malloc(dl + 8);
        size_t tot = 0;
        for (size_t i = 0; i < n; i++) {
            const char *txt;
            size_t l;
            CHECK(tok_stream_push(st, ids[i], &txt, &l, err, sizeof err) == HS_OK);
            CHECK(tok_utf8_valid(txt, l));
            CHECK(tot + l <= dl);
            memcpy(acc + tot, txt, l);
            tot += l;
        }
        const char *txt;
        size_t l;
        tok_stream_flush(st, &txt, &l);
        CHECK(tok_utf8_valid(txt, l) && l <= 3);
        CHECK(tot + l <= dl + 8);
        memcpy(acc + tot, txt, l);
        tot += l;
        size_t sl;
        char *sdec = tok_utf8_sanitize(dec, dl, &sl);
        CHECK(tot == sl && !memcmp(acc, sdec, sl));
        free(sdec);
        free(acc);
        tok_stream_free(st);
        free(nfc);
        free(clean);
        free(dec);
        free(ids);
    }
    /* raw bytes, one at a time, through the stream */
    tok_stream_t *st = tok_stream_new(g_tok, 0);
    for (size_t i = 0; i < size; i++) {
        const char *txt;
        size_t l;
        tok_stream_push_bytes(st, s + i, 1, &txt, &l);
        CHECK(tok_utf8_valid(txt, l));
    }
    tok_stream_free(st);
    /* chat: the input as a user message (NUL-terminated copy) */
    char *msg = malloc(size + 1);
    memcpy(msg, s, size);
    msg[size] = 0;
    chat_msg_t m[2] = {{"system", "s", NULL}, {"assistant", msg, NULL}};
    char *out;
    size_t ol;
    CHECK(chat_render(g_chat, m, 2, NULL, &out, &ol, err, sizeof err) == HS_OK);
    free(out);
    free(msg);
    return 0;
}
