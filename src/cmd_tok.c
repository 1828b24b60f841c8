/*
 * cmd_tok: the `tokenize` and `detokenize` subcommands.
 *
 *   hyserve tokenize   --model DIR (--text T | --file F) [--json] [--split-special]
 *   hyserve detokenize --model DIR --ids 1,2,3 [--skip-special]
 *
 * tokenize prints the ids space-separated on one line, or {"ids": [...]} with --json.
 * Special tokens written in the text (<|im_start|>) become their ids unless
 * --split-special. detokenize writes the decoded text to stdout exactly (no newline is
 * added); bytes that do not form valid UTF-8 come out as U+FFFD. --ids takes ids
 * separated by commas and/or spaces, optionally inside [ ].
 * Exit status: 0 ok, 2 bad usage or a model directory that does not load, 1 otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "tok.h"
#include "util.h"

static int usage_tok(FILE *f, int rc) {
    fprintf(f, "usage: hyserve tokenize --model DIR (--text T | --file F) [--json] [--split-special]\n"
               "  --model DIR       directory with tokenizer.json (or the file itself)\n"
               "  --text T          text to encode\n"
               "  --file F          encode the bytes of file F ('-' for stdin)\n"
               "  --json            print {\"ids\": [...]} instead of space-separated ids\n"
               "  --split-special   treat special-token text like <|im_start|> as plain text\n");
    return rc;
}

static int usage_detok(FILE *f, int rc) {
    fprintf(f, "usage: hyserve detokenize --model DIR --ids 1,2,3 [--skip-special]\n"
               "  --model DIR       directory with tokenizer.json (or the file itself)\n"
               "  --ids LIST        token ids, separated by commas and/or spaces\n"
               "  --skip-special    leave out special tokens (<|im_end|>, ...)\n"
               "The text is written to stdout as is, without a trailing newline.\n");
    return rc;
}

static char *read_stream(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *p = hs_malloc(cap + 1);
    size_t r;
    while ((r = fread(p + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) p = hs_realloc(p, (cap *= 2) + 1);
    }
    p[n] = 0;
    *len = n;
    return p;
}

int cmd_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL, *file = NULL;
    int json = 0;
    unsigned flags = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage_tok(stdout, 0);
        if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--split-special")) flags |= TOK_ENC_SPLIT_SPECIAL;
        else if ((!strcmp(a, "--model") || !strcmp(a, "--text") || !strcmp(a, "--file")) && i + 1 < argc) {
            const char **dst = a[2] == 'm' ? &model : a[2] == 't' ? &text : &file;
            *dst = argv[++i];
        } else {
            fprintf(stderr, "hyserve tokenize: unknown or incomplete option '%s'\n", a);
            return usage_tok(stderr, 2);
        }
    }
    if (!model || (!text) == (!file)) {
        fprintf(stderr, "hyserve tokenize: need --model and exactly one of --text / --file\n");
        return usage_tok(stderr, 2);
    }
    char err[512];
    size_t len;
    char *buf = NULL;
    if (file) {
        if (!strcmp(file, "-")) buf = read_stream(stdin, &len);
        else buf = hs_read_file(file, &len, err, sizeof err);
        if (!buf) {
            fprintf(stderr, "hyserve tokenize: %s\n", err);
            return 2;
        }
        text = buf;
    } else {
        len = strlen(text);
    }
    tok_t *t;
    if (tok_load(model, &t, err, sizeof err)) {
        fprintf(stderr, "hyserve tokenize: %s\n", err);
        free(buf);
        return 2;
    }
    int32_t *ids;
    size_t n;
    int rc = tok_encode(t, text, len, flags, &ids, &n, err, sizeof err);
    if (rc) {
        fprintf(stderr, "hyserve tokenize: %s\n", err);
    } else {
        fputs(json ? "{\"ids\": [" : "", stdout);
        for (size_t i = 0; i < n; i++) printf(i ? (json ? ", %d" : " %d") : "%d", ids[i]);
        fputs(json ? "]}\n" : "\n", stdout);
        free(ids);
    }
    tok_free(t);
    free(buf);
    return rc ? 1 : 0;
}

/* "1,2, 3" or "[1, 2, 3]" → ids; 0 on success. */
static int parse_ids(const char *s, int32_t max, int32_t **out, size_t *n) {
    size_t cap = 16;
    int32_t *v = hs_malloc(cap * sizeof *v);
    *n = 0;
    const char *p = s;
    while (*p == ' ' || *p == '[') p++;
    while (*p && *p != ']') {
        char num[32];
        size_t k = 0;
        while (*p && *p != ',' && *p != ' ' && *p != ']' && k < sizeof num - 1) num[k++] = *p++;
        num[k] = 0;
        int64_t x;
        if (hs_parse_i64(num, 0, max - 1, &x) != HS_OK) {
            fprintf(stderr, "hyserve detokenize: '%s' is not a token id in 0..%d\n", num, max - 1);
            free(v);
            return -1;
        }
        if (*n == cap) v = hs_realloc(v, (cap *= 2) * sizeof *v);
        v[(*n)++] = (int32_t)x;
        while (*p == ',' || *p == ' ') p++;
    }
    if (*p == ']') p++;
    while (*p == ' ') p++;
    if (*p) {
        fprintf(stderr, "hyserve detokenize: unexpected '%s' in --ids\n", p);
        free(v);
        return -1;
    }
    *out = v;
    return 0;
}

int cmd_detokenize(int argc, char **argv) {
    const char *model = NULL, *idstr = NULL;
    unsigned flags = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return usage_detok(stdout, 0);
        if (!strcmp(a, "--skip-special")) flags |= TOK_DEC_SKIP_SPECIAL;
        else if (!strcmp(a, "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(a, "--ids") && i + 1 < argc) idstr = argv[++i];
        else {
            fprintf(stderr, "hyserve detokenize: unknown or incomplete option '%s'\n", a);
            return usage_detok(stderr, 2);
        }
    }
    if (!model || !idstr) {
        fprintf(stderr, "hyserve detokenize: need --model and --ids\n");
        return usage_detok(stderr, 2);
    }
    char err[512];
    tok_t *t;
    if (tok_load(model, &t, err, sizeof err)) {
        fprintf(stderr, "hyserve detokenize: %s\n", err);
        return 2;
    }
    int32_t *ids;
    size_t n;
    if (parse_ids(idstr, tok_n_vocab(t), &ids, &n)) {
        tok_free(t);
        return 2;
    }
    char *out;
    size_t len;
    int rc = tok_decode(t, ids, n, flags, &out, &len, err, sizeof err);
    if (rc) {
        fprintf(stderr, "hyserve detokenize: %s\n", err);
    } else {
        size_t cl;
        char *clean = tok_utf8_sanitize(out, len, &cl);
        fwrite(clean, 1, cl, stdout);
        free(clean);
        free(out);
    }
    free(ids);
    tok_free(t);
    return rc ? (rc == HS_ERR_INVALID ? 2 : 1) : 0;
}
