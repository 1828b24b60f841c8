/*
 * fuzz_oai: arbitrary bytes through the server's protocol layer (oai.h), as both a
 * /v1/completions and a /v1/chat/completions body, then the bytes again as detokenized
 * text cut into pieces for the stop-string matcher. Invariants (abort on failure):
 * oai_parse either succeeds or fills a 4xx error whose JSON is valid; the stop matcher
 * returns a prefix of the input that never contains a stop string, and without a hit
 * everything comes back. Seeds: fuzz/seeds/oai/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oai.h"
#include "util.h"

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "fuzz_oai: check failed: %s (line %d)\n", #c, __LINE__); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 16) return 0;
    const char *s = (const char *)data;
    for (int k = 0; k < 2; k++) {
        oai_req_t r;
        oai_err_t e;
        int rc = oai_parse(k ? OAI_CHAT : OAI_COMPLETION, s, size, &r, &e);
        if (rc != HS_OK) {
            CHECK(e.status >= 400 && e.status < 500);
            char *j = oai_err_json(&e);
            json_error_t je;
            json_t *back = json_loads(j, 0, &je);
            CHECK(back != NULL);
            json_decref(back);
            free(j);
        } else {
            CHECK(r.sp.max_tokens >= 1);
            CHECK(r.kind == OAI_CHAT ? r.n_msgs > 0 : (r.prompt != NULL) != (r.prompt_ids != NULL));
        }
        oai_req_free(&r);
    }
    /* stop strings: the first bytes (up to 3 strings of 1..4 bytes) are the stop strings */
    if (size < 2) return 0;
    char stops[3][5];
    const char *sp[3];
    int n_stop = 1 + data[0] % 3;
    size_t at = 1;
    for (int i = 0; i < n_stop; i++) {
        size_t len = 1 + (at < size ? data[at] % 4 : 0);
        at++;
        for (size_t j = 0; j < len; j++) stops[i][j] = at < size ? (char)(data[at++] | 1) : 'x';
        stops[i][len] = 0;
        sp[i] = stops[i];
    }
    if (at >= size) return 0;
    const char *text = s + at;
    size_t n = size - at;
    oai_stop_t st;
    oai_stop_init(&st, sp, n_stop);
    char *got = malloc(n + 1);
    size_t n_got = 0, i = 0;
    while (i < n && !st.hit) {
        size_t piece = 1 + (size_t)(unsigned char)text[i] % 5;
        if (piece > n - i) piece = n - i;
        const char *out;
        size_t len;
        oai_stop_feed(&st, text + i, piece, &out, &len);
        memcpy(got + n_got, out, len);
        n_got += len;
        i += piece;
    }
    if (!st.hit) {
        const char *out;
        size_t len;
        oai_stop_flush(&st, &out, &len);
        memcpy(got + n_got, out, len);
        n_got += len;
        CHECK(n_got == n);
    }
    CHECK(n_got <= n && memcmp(got, text, n_got) == 0);
    got[n_got] = 0;
    for (int k = 0; k < n_stop; k++) CHECK(memmem(got, n_got, sp[k], strlen(sp[k])) == NULL);
    free(got);
    oai_stop_free(&st);
    return 0;
}
