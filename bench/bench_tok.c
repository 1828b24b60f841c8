/*
 * bench_tok: tokenizer encode speed (MB/s of English text, one core).
 *
 *   build/bench/bench_tok [--tokenizer DIR] [--mb N] [--text FILE] [--dump FILE] [--reps R]
 *
 * Text: FILE if given; otherwise N MB (default 10) of English-like prose generated
 * deterministically by an order-2 word Markov chain trained on the license texts in
 * /usr/share/common-licenses (present on every Debian system; a built-in paragraph if
 * not), with a fixed xorshift seed. --dump FILE writes that text so that
 * tools/bench_tok_hf.py can time HF `tokenizers` on exactly the same bytes.
 *
 * Two modes, each best of R runs (default 3):
 *   whole: one tok_encode call on the whole text;
 *   docs:  one call per paragraph (text split at blank lines), as prompts arrive.
 * "nocache" repeats "whole" with the word cache off (HYSERVE_TOK_CACHE=0).
 * The first run warms the word cache; the tokenizer lives for the process, so that
 * is the state a server is in. It also prints tokens and bytes per token.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok.h"
#include "util.h"

typedef struct {
    char *p;
    size_t n, cap;
} sbuf_t;

static void sb_put(sbuf_t *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = hs_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rng(void) {
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Training text: the license files, sorted by name, concatenated. */
static char *training_text(void) {
    sbuf_t b = {0};
    const char *dir = "/usr/share/common-licenses";
    DIR *d = opendir(dir);
    char *names[256];
    size_t nn = 0;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) && nn < 256)
            if (e->d_name[0] != '.') names[nn++] = hs_strdup(e->d_name);
        closedir(d);
    }
    qsort(names, nn, sizeof *names, cmp_str);
    for (size_t i = 0; i < nn; i++) {
        char path[512], err[256];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        size_t len;
        char *t = hs_read_file(path, &len, err, sizeof err);
        if (t) {
            sb_put(&b, t, len);
            sb_put(&b, "\n", 1);
            free(t);
        }
        free(names[i]);
    }
    if (b.n < 1000) {
        const char *p = "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of "
                        "times. Software is free when you can run, study, change and share it; this license "
                        "guarantees your freedom to share and change all versions of a program. ";
        for (int i = 0; i < 20; i++) sb_put(&b, p, strlen(p));
    }
    return b.p;
}

/* Order-2 word Markov chain: words are whitespace-separated (punctuation attached).
 * Words are interned to ints; positions are sorted by their (previous, current) word
 * pair so that the successors of a pair are one binary search away. */
typedef struct {
    uint64_t key;
    uint32_t pos;
} pk_t;

static int cmp_pk(const void *a, const void *b) {
    const pk_t *x = a, *y = b;
    if (x->key != y->key) return x->key < y->key ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static char *generate(size_t target) {
    char *train = training_text();
    size_t nw = 0, cap = 1 << 16;
    char **w = hs_malloc(cap * sizeof *w);
    for (char *tok = strtok(train, " \t\r\n"); tok; tok = strtok(NULL, " \t\r\n")) {
        if (nw == cap) w = hs_realloc(w, (cap *= 2) * sizeof *w);
        w[nw++] = tok;
    }
    /* intern: sort copies of the pointers, assign ids in sorted order */
    char **sorted = hs_malloc(nw * sizeof *sorted);
    memcpy(sorted, w, nw * sizeof *w);
    qsort(sorted, nw, sizeof *sorted, cmp_str);
    uint32_t *id = hs_malloc(nw * sizeof *id);
    for (size_t i = 0; i < nw; i++) {
        size_t lo = 0, hi = nw; /* first sorted index equal to w[i] */
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (strcmp(sorted[mid], w[i]) < 0) lo = mid + 1;
            else hi = mid;
        }
        id[i] = (uint32_t)lo;
    }
    size_t np = nw - 2;
    pk_t *pk = hs_malloc(np * sizeof *pk);
    for (size_t j = 1; j + 1 < nw; j++) pk[j - 1] = (pk_t){((uint64_t)id[j - 1] << 32) | id[j], (uint32_t)j};
    qsort(pk, np, sizeof *pk, cmp_pk);
    sbuf_t out = {0};
    size_t i = 1, line = 0, para = 0;
    while (out.n < target) {
        uint64_t key = ((uint64_t)id[i - 1] << 32) | id[i];
        size_t lo = 0, hi = np;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (pk[mid].key < key) lo = mid + 1;
            else hi = mid;
        }
        size_t end = lo;
        while (end < np && pk[end].key == key) end++;
        if (end > lo) i = pk[lo + rng() % (end - lo)].pos + 1;
        else i = 1 + rng() % (nw - 2); /* end of the training text: jump */
        sb_put(&out, w[i], strlen(w[i]));
        line += strlen(w[i]) + 1;
        if (line > 70 + rng() % 10) {
            sb_put(&out, "\n", 1);
            line = 0;
            if (++para % (4 + rng() % 8) == 0) sb_put(&out, "\n", 1);
        } else {
            sb_put(&out, " ", 1);
        }
    }
    free(pk);
    free(id);
    free(sorted);
    free(w);
    free(train);
    return out.p;
}

int main(int argc, char **argv) {
    const char *dir = HYSERVE_SOURCE_DIR "/tests/data/qwen3-tokenizer", *textf = NULL, *dump = NULL;
    double mb = 10;
    int reps = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--mb") && i + 1 < argc) mb = atof(argv[++i]);
        else if (!strcmp(argv[i], "--text") && i + 1 < argc) textf = argv[++i];
        else if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump = argv[++i];
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_tok [--tokenizer DIR] [--mb N] [--text FILE] [--dump FILE] [--reps R]\n");
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    char err[512];
    size_t len;
    char *text;
    if (textf) {
        text = hs_read_file(textf, &len, err, sizeof err);
        if (!text) hs_die(2, "%s", err);
    } else {
        text = generate((size_t)(mb * 1e6));
        len = strlen(text);
    }
    if (dump) {
        FILE *f = fopen(dump, "wb");
        if (!f || fwrite(text, 1, len, f) != len || fclose(f)) hs_die(1, "cannot write %s", dump);
    }
    double t0 = hs_now();
    tok_t *t;
    if (tok_load(dir, &t, err, sizeof err)) hs_die(2, "%s", err);
    printf("tokenizer: %s (loaded in %.2f s)\ntext: %s, %.2f MB\n", dir, hs_now() - t0, textf ? textf : "generated", len / 1e6);

    double best = 1e30, cold = 0;
    size_t ntok = 0;
    for (int r = 0; r < reps; r++) {
        int32_t *ids;
        double s = hs_now();
        if (tok_encode(t, text, len, 0, &ids, &ntok, err, sizeof err)) hs_die(1, "%s", err);
        double e = hs_now() - s;
        free(ids);
        if (r == 0) cold = e;
        if (e < best) best = e;
    }
    printf("first: %.2f MB/s  (first call, cold word cache)\n", len / 1e6 / cold);
    printf("whole: %.2f MB/s  (%zu tokens, %.2f bytes/token, best of %d: %.3f s)\n", len / 1e6 / best, ntok,
           (double)len / (ntok ? ntok : 1), reps, best);

    best = 1e30;
    size_t ndocs = 0;
    for (int r = 0; r < reps; r++) {
        double s = hs_now();
        ndocs = 0;
        for (size_t a = 0; a < len;) {
            char *p = strstr(text + a, "\n\n");
            size_t b = p ? (size_t)(p - text) + 2 : len;
            int32_t *ids;
            size_t n;
            if (tok_encode(t, text + a, b - a, 0, &ids, &n, err, sizeof err)) hs_die(1, "%s", err);
            free(ids);
            ndocs++;
            a = b;
        }
        double e = hs_now() - s;
        if (e < best) best = e;
    }
    printf("docs:  %.2f MB/s  (%zu paragraphs, best of %d: %.3f s)\n", len / 1e6 / best, ndocs, reps, best);
    tok_free(t);

    /* the same without the word cache: every piece goes through BPE */
    setenv("HYSERVE_TOK_CACHE", "0", 1);
    if (tok_load(dir, &t, err, sizeof err)) hs_die(2, "%s", err);
    best = 1e30;
    for (int r = 0; r < reps; r++) {
        int32_t *ids;
        size_t n2;
        double s = hs_now();
        if (tok_encode(t, text, len, 0, &ids, &n2, err, sizeof err)) hs_die(1, "%s", err);
        double e = hs_now() - s;
        free(ids);
        if (n2 != ntok) hs_die(1, "token count differs without the cache: %zu vs %zu", n2, ntok);
        if (e < best) best = e;
    }
    printf("nocache: %.2f MB/s  (whole, HYSERVE_TOK_CACHE=0, best of %d: %.3f s)\n", len / 1e6 / best, reps, best);
    tok_free(t);
    free(text);
    return 0;
}
