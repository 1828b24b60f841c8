/*
 * tok: byte-level BPE from tokenizer.json (see tok.h for the pipeline and contract).
 *
 * Layout of a loaded tokenizer:
 *   - every id's raw bytes live in one arena (tb/toff/tlen), with per-id flags;
 *   - `vmap`: open-addressing hash (xxh3 of raw bytes) → id, for tok_lookup and for
 *     resolving merges at load time;
 *   - `mmap_`: open-addressing hash of the pair (left id, right id) → (rank, merged id);
 *     this is the only table the BPE inner loop touches;
 *   - `byte_id[256]`: the id of each single-byte token (the BPE starting symbols);
 *   - added tokens sorted longest first, with a first-byte filter so that plain text
 *     costs one table load per byte;
 *   - the compiled PCRE2 regex (JIT when the platform has it);
 *   - a word cache (piece bytes → ids) behind a mutex taken with trylock.
 *
 * BPE: pieces of up to SMALL_BPE symbols use an array of pair ranks (a linear scan
 * per merge, two hash lookups per merge); longer pieces (10k 'a', minified code)
 * use a binary heap over a linked list of symbols, O(n log n). Both merge the lowest
 * rank first and the leftmost pair on ties, which is HF's order.
 *
 * The byte-level alphabet (GPT-2's bytes_to_unicode): printable Latin-1 bytes
 * ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 bytes map, in
 * byte order, to U+0100.. . Vocab strings are turned back into raw bytes at load.
 */
#include "tok.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <utf8proc.h>
#include <xxhash.h>

#include "util.h"

enum { TF_USED = 1, TF_ADDED = 2, TF_SPECIAL = 4 };

typedef struct {
    char *content;
    size_t len;
    int32_t id;
    uint8_t special, normalized, lstrip, rstrip, single_word;
} added_t;

typedef struct {
    uint64_t key; /* (left << 32) | right; EMPTY_KEY when free */
    int32_t rank;
    int32_t id;
} merge_slot_t;
#define EMPTY_KEY UINT64_MAX

/* Word cache: fixed slots, key and ids in one arena; cleared when full. */
#define CACHE_SLOTS (1u << 16)
#define CACHE_MAX_KEY 64
#define CACHE_ARENA (8u << 20)
typedef struct {
    uint64_t hash;
    uint32_t off;  /* into arena: key bytes, then padding to 4, then ids */
    uint16_t klen; /* 0: empty slot */
    uint16_t nids;
} cache_slot_t;
typedef struct {
    pthread_mutex_t mu;
    cache_slot_t *slots;
    char *arena;
    uint32_t used, count;
} cache_t;

struct tok {
    char *path;
    int32_t n_ids;
    char *tb;        /* raw bytes of every id */
    uint32_t *toff;  /* [n_ids] */
    uint32_t *tlen;  /* [n_ids] */
    uint8_t *tflag;  /* [n_ids] TF_* */
    int32_t *vmap;   /* [vcap] ids, -1 empty */
    uint32_t vcap;
    merge_slot_t *mmap_;
    uint32_t mcap;
    int32_t byte_id[256];
    int ignore_merges;
    int nfc;
    added_t *added;  /* sorted by length, longest first */
    size_t n_added;
    int has_normalized_added;
    uint8_t added_first[256]; /* 1 if some non-normalized added token starts with this byte */
    pcre2_code *re;
    int re_jit;
    cache_t *cache;
};

/* ---- small helpers -------------------------------------------------------------- */

typedef struct {
    int32_t *v;
    size_t n, cap;
} ids_t;

static void ids_push(ids_t *a, int32_t x) {
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = hs_realloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = x;
}


static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static uint32_t pow2_at_least(size_t n) {
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* ---- UTF-8 ---------------------------------------------------------------------- */

enum { U8_OK, U8_BAD, U8_SHORT };

/* Classify the sequence at s[i] (i < n): U8_OK with its length, U8_BAD with the length
 * of the maximal invalid subpart (>= 1), or U8_SHORT: a valid prefix cut by the end. */
static int u8_seq(const uint8_t *s, size_t n, size_t i, size_t *len) {
    uint8_t c = s[i];
    if (c < 0x80) { *len = 1; return U8_OK; }
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c == 0xE0) { need = 2; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) need = 2;
    else if (c == 0xED) { need = 2; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) need = 2;
    else if (c == 0xF0) { need = 3; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) need = 3;
    else if (c == 0xF4) { need = 3; hi = 0x8F; }
    else { *len = 1; return U8_BAD; }
    for (size_t k = 1; k <= need; k++) {
        if (i + k >= n) { *len = k; return U8_SHORT; }
        uint8_t d = s[i + k];
        if (d < lo || d > hi) { *len = k; return U8_BAD; }
        lo = 0x80; hi = 0xBF;
    }
    *len = need + 1;
    return U8_OK;
}

int tok_utf8_valid(const char *s, size_t n) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, l;
    while (i < n) {
        if (u[i] < 0x80) { i++; continue; }
        if (u8_seq(u, n, i, &l) != U8_OK) return 0;
        i += l;
    }
    return 1;
}

static const char REPL[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

char *tok_utf8_sanitize(const char *s, size_t n, size_t *out_len) {
    const uint8_t *u = (const uint8_t *)s;
    hs_buf_t b = {0};
    hs_buf_add(&b, "", 0);
    size_t i = 0, l;
    while (i < n) {
        int st = u8_seq(u, n, i, &l);
        if (st == U8_OK) hs_buf_add(&b, s + i, l);
        else hs_buf_add(&b, REPL, 3);
        i += l;
    }
    *out_len = b.n;
    return b.p;
}

char *tok_nfc(const char *s, size_t n, size_t *out_len) {
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (r < 0) return NULL;
    *out_len = (size_t)r;
    return (char *)dst;
}

/* Decode one code point of valid UTF-8. */
static uint32_t u8_cp(const uint8_t *s, size_t *len) {
    uint8_t c = s[0];
    if (c < 0x80) { *len = 1; return c; }
    if (c < 0xE0) { *len = 2; return ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F); }
    if (c < 0xF0) { *len = 3; return ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F); }
    *len = 4;
    return ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
}

/* Start of the code point that ends at s[end) (valid UTF-8, end > 0). */
static size_t u8_prev(const uint8_t *s, size_t end) {
    size_t i = end - 1;
    while (i > 0 && (s[i] & 0xC0) == 0x80) i--;
    return i;
}

/* Unicode White_Space, as \s in HF's regex engines. */
static int is_space_cp(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

/* \w: letters, marks, decimal digits, connector punctuation. */
static int is_word_cp(uint32_t c) {
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    switch (k) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
        return 1;
    default:
        return 0;
    }
}

/* ---- byte-level alphabet -------------------------------------------------------- */

static void byte_alphabet(uint32_t byte_to_cp[256]) {
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_to_cp[b] = printable ? (uint32_t)b : next++;
    }
}

/* Vocab string (byte-level alphabet, UTF-8) → raw bytes appended to b. A code point
 * outside the alphabet keeps its UTF-8 bytes, as HF's ByteLevel decoder does. */
static void bl_decode(const char *s, size_t n, const int16_t *cp_to_byte, hs_buf_t *b) {
    const uint8_t *u = (const uint8_t *)s;
    size_t i = 0, l;
    while (i < n) {
        if (u8_seq(u, n, i, &l) != U8_OK) { hs_buf_add(b, s + i, 1); i++; continue; }
        uint32_t cp = u8_cp(u + i, &l);
        if (cp < 324 && cp_to_byte[cp] >= 0) {
            char c = (char)cp_to_byte[cp];
            hs_buf_add(b, &c, 1);
        } else {
            hs_buf_add(b, s + i, l);
        }
        i += l;
    }
}

/* ---- hash tables ---------------------------------------------------------------- */

static uint64_t bytes_hash(const char *s, size_t n) { return XXH3_64bits(s, n); }

static int32_t vmap_find(const tok_t *t, const char *s, size_t n) {
    uint32_t m = t->vcap - 1, h = (uint32_t)bytes_hash(s, n) & m;
    for (;;) {
        int32_t id = t->vmap[h];
        if (id < 0) return -1;
        if (t->tlen[id] == n && !memcmp(t->tb + t->toff[id], s, n)) return id;
        h = (h + 1) & m;
    }
}

static void vmap_put(tok_t *t, int32_t id) {
    uint32_t m = t->vcap - 1, h = (uint32_t)bytes_hash(t->tb + t->toff[id], t->tlen[id]) & m;
    while (t->vmap[h] >= 0) h = (h + 1) & m;
    t->vmap[h] = id;
}

static inline const merge_slot_t *merge_find(const tok_t *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t m = t->mcap - 1, h = (uint32_t)mix64(key) & m;
    for (;;) {
        const merge_slot_t *s = &t->mmap_[h];
        if (s->key == key) return s;
        if (s->key == EMPTY_KEY) return NULL;
        h = (h + 1) & m;
    }
}

/* Returns 0 if the pair was already present (the first, lowest rank, wins). */
static int merge_put(tok_t *t, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t m = t->mcap - 1, h = (uint32_t)mix64(key) & m;
    while (t->mmap_[h].key != EMPTY_KEY) {
        if (t->mmap_[h].key == key) return 0;
        h = (h + 1) & m;
    }
    t->mmap_[h] = (merge_slot_t){key, rank, id};
    return 1;
}

/* ---- loading -------------------------------------------------------------------- */

/* HF runs the Split regex with Oniguruma, where \s is exactly Unicode White_Space.
 * PCRE2's \s (UCP) is \p{Z} + \h + \v, which also takes U+180E MONGOLIAN VOWEL
 * SEPARATOR (not White_Space since Unicode 6.3) and changes how text around it
 * splits. So \s and \S are spelled out as the White_Space set; the rest of the
 * pattern is passed to PCRE2 as written. Inside a character class \s becomes the set's
 * members; \S inside a class is left alone (no such use in Qwen's pattern). */
#define WS_SET "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
static char *regex_fix_ws(const char *re) {
    hs_buf_t b = {0};
    hs_buf_add(&b, "", 0);
    int in_class = 0;
    for (const char *p = re; *p; p++) {
        if (*p == '\\' && p[1]) {
            if (p[1] == 's' || (p[1] == 'S' && !in_class)) {
                if (in_class) hs_buf_add(&b, WS_SET, strlen(WS_SET));
                else {
                    hs_buf_add(&b, p[1] == 's' ? "[" : "[^", p[1] == 's' ? 1 : 2);
                    hs_buf_add(&b, WS_SET, strlen(WS_SET));
                    hs_buf_add(&b, "]", 1);
                }
            } else {
                hs_buf_add(&b, p, 2);
            }
            p++;
            continue;
        }
        if (!in_class && *p == '[') {
            in_class = 1;
            hs_buf_add(&b, p, 1);
            if (p[1] == '^') hs_buf_add(&b, ++p, 1);
            if (p[1] == ']') hs_buf_add(&b, ++p, 1); /* a leading ] is literal */
            continue;
        }
        if (in_class && *p == '[' && p[1] == ':') { /* [:posix:] */
            const char *e = strstr(p + 2, ":]");
            if (e) {
                hs_buf_add(&b, p, (size_t)(e + 2 - p));
                p = e + 1;
                continue;
            }
        }
        if (in_class && *p == ']') in_class = 0;
        hs_buf_add(&b, p, 1);
    }
    return b.p;
}

static int ferr(char *err, size_t n, int rc, const char *path, const char *field, const char *what) {
    return hs_errf(err, n, rc, "%s: field '%s': %s", path, field, what);
}

static int check_norm(const char *path, json_t *norm, int *nfc, char *err, size_t n) {
    *nfc = 0;
    if (!norm || json_is_null(norm)) return HS_OK;
    const char *type = json_string_value(json_object_get(norm, "type"));
    if (!type) return ferr(err, n, HS_ERR_FORMAT, path, "normalizer.type", "missing or not a string");
    if (!strcmp(type, "NFC")) { *nfc = 1; return HS_OK; }
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(norm, "normalizers");
        if (!json_is_array(arr)) return ferr(err, n, HS_ERR_FORMAT, path, "normalizer.normalizers", "missing or not an array");
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v) {
            int x;
            int rc = check_norm(path, v, &x, err, n);
            if (rc) return rc;
            *nfc |= x;
        }
        return HS_OK;
    }
    return hs_errf(err, n, HS_ERR_UNSUPPORTED, "%s: field 'normalizer.type': '%s' is not supported (only NFC)", path, type);
}

/* Finds the Split regex inside pre_tokenizer (itself or a Sequence). */
static int check_pretok(const char *path, json_t *pt, const char **regex, char *err, size_t n) {
    if (!pt || json_is_null(pt)) return HS_OK;
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type) return ferr(err, n, HS_ERR_FORMAT, path, "pre_tokenizer.type", "missing or not a string");
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(pt, "pretokenizers");
        if (!json_is_array(arr)) return ferr(err, n, HS_ERR_FORMAT, path, "pre_tokenizer.pretokenizers", "missing or not an array");
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v) {
            int rc = check_pretok(path, v, regex, err, n);
            if (rc) return rc;
        }
        return HS_OK;
    }
    if (!strcmp(type, "Split")) {
        json_t *pat = json_object_get(pt, "pattern");
        const char *re = json_string_value(json_object_get(pat, "Regex"));
        if (!re) {
            if (json_object_get(pat, "String"))
                return ferr(err, n, HS_ERR_UNSUPPORTED, path, "pre_tokenizer.pattern.String", "only Regex patterns are supported");
            return ferr(err, n, HS_ERR_FORMAT, path, "pre_tokenizer.pattern.Regex", "missing or not a string");
        }
        const char *beh = json_string_value(json_object_get(pt, "behavior"));
        if (!beh || strcmp(beh, "Isolated"))
            return ferr(err, n, HS_ERR_UNSUPPORTED, path, "pre_tokenizer.behavior", "only \"Isolated\" is supported");
        if (json_is_true(json_object_get(pt, "invert")))
            return ferr(err, n, HS_ERR_UNSUPPORTED, path, "pre_tokenizer.invert", "invert=true is not supported");
        if (*regex) return ferr(err, n, HS_ERR_UNSUPPORTED, path, "pre_tokenizer", "more than one Split is not supported");
        *regex = re;
        return HS_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        if (json_is_true(json_object_get(pt, "add_prefix_space")))
            return ferr(err, n, HS_ERR_UNSUPPORTED, path, "pre_tokenizer.add_prefix_space", "true is not supported");
        if (json_is_true(json_object_get(pt, "use_regex")))
            return ferr(err, n, HS_ERR_UNSUPPORTED, path, "pre_tokenizer.use_regex", "true is not supported (put the regex in a Split)");
        return HS_OK;
    }
    return hs_errf(err, n, HS_ERR_UNSUPPORTED, "%s: field 'pre_tokenizer.type': '%s' is not supported", path, type);
}

static int cmp_added(const void *a, const void *b) {
    const added_t *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? 1 : -1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Parses one merge entry into its two vocab strings. */
static int merge_strings(json_t *m, const char **a, size_t *al, const char **b, size_t *bl) {
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *al = json_string_length(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *bl = json_string_length(json_array_get(m, 1));
        return 1;
    }
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        const char *sp = strchr(s, ' ');
        if (!sp || sp == s || strchr(sp + 1, ' ') || !sp[1]) return 0;
        *a = s;
        *al = (size_t)(sp - s);
        *b = sp + 1;
        *bl = strlen(sp + 1);
        return 1;
    }
    return 0;
}

static int load_json(tok_t *t, json_t *root, char *err, size_t n) {
    const char *path = t->path;
    char field[96];
    if (!json_is_object(root)) return hs_errf(err, n, HS_ERR_FORMAT, "%s: top level is not a JSON object", path);
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model)) return ferr(err, n, HS_ERR_FORMAT, path, "model", "missing or not an object");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (mtype && strcmp(mtype, "BPE"))
        return hs_errf(err, n, HS_ERR_UNSUPPORTED, "%s: field 'model.type': '%s' is not supported (only BPE)", path, mtype);
    if (json_is_true(json_object_get(model, "byte_fallback")))
        return ferr(err, n, HS_ERR_UNSUPPORTED, path, "model.byte_fallback", "true is not supported");
    json_t *dr = json_object_get(model, "dropout");
    if (dr && !json_is_null(dr) && !(json_is_number(dr) && json_number_value(dr) == 0.0))
        return ferr(err, n, HS_ERR_UNSUPPORTED, path, "model.dropout", "BPE dropout is not supported");
    const char *sfx[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *v = json_string_value(json_object_get(model, sfx[i]));
        if (v && *v) {
            snprintf(field, sizeof field, "model.%s", sfx[i]);
            return ferr(err, n, HS_ERR_UNSUPPORTED, path, field, "a non-empty value is not supported");
        }
    }
    t->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    int rc = check_norm(path, json_object_get(root, "normalizer"), &t->nfc, err, n);
    if (rc) return rc;
    const char *regex = NULL;
    rc = check_pretok(path, json_object_get(root, "pre_tokenizer"), &regex, err, n);
    if (rc) return rc;

    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) return ferr(err, n, HS_ERR_FORMAT, path, "model.vocab", "missing or not an object");
    json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges)) return ferr(err, n, HS_ERR_FORMAT, path, "model.merges", "missing or not an array");
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added))
        return ferr(err, n, HS_ERR_FORMAT, path, "added_tokens", "not an array");

    /* ids: validate and find the range */
    const int64_t MAX_ID = 1 << 24;
    int64_t max_id = -1;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= MAX_ID)
            return hs_errf(err, n, HS_ERR_FORMAT, "%s: field 'model.vocab[\"%.40s\"]': id is not an integer in [0, %lld)",
                           path, key, (long long)MAX_ID);
        if (json_integer_value(v) > max_id) max_id = json_integer_value(v);
    }
    size_t n_added = added ? json_array_size(added) : 0;
    for (size_t i = 0; i < n_added; i++) {
        json_t *a = json_array_get(added, i);
        json_t *jid = json_object_get(a, "id");
        json_t *jc = json_object_get(a, "content");
        if (!json_is_object(a) || !json_is_integer(jid) || json_integer_value(jid) < 0 || json_integer_value(jid) >= MAX_ID) {
            snprintf(field, sizeof field, "added_tokens[%zu].id", i);
            return ferr(err, n, HS_ERR_FORMAT, path, field, "missing or not an integer in range");
        }
        if (!json_is_string(jc) || json_string_length(jc) == 0) {
            snprintf(field, sizeof field, "added_tokens[%zu].content", i);
            return ferr(err, n, HS_ERR_FORMAT, path, field, "missing, empty or not a string");
        }
        if (json_integer_value(jid) > max_id) max_id = json_integer_value(jid);
    }
    if (max_id < 0) return ferr(err, n, HS_ERR_FORMAT, path, "model.vocab", "empty");
    t->n_ids = (int32_t)(max_id + 1);
    t->toff = hs_calloc((size_t)t->n_ids, sizeof *t->toff);
    t->tlen = hs_calloc((size_t)t->n_ids, sizeof *t->tlen);
    t->tflag = hs_calloc((size_t)t->n_ids, 1);

    /* raw bytes of every vocab token */
    uint32_t b2c[256];
    int16_t c2b[324];
    byte_alphabet(b2c);
    for (int i = 0; i < 324; i++) c2b[i] = -1;
    for (int b = 0; b < 256; b++) c2b[b2c[b]] = (int16_t)b;
    hs_buf_t tb = {0};
    hs_buf_add(&tb, "", 0);
    json_object_foreach(vocab, key, v) {
        int32_t id = (int32_t)json_integer_value(v);
        if (t->tflag[id] & TF_USED) {
            hs_free(tb.p);
            return hs_errf(err, n, HS_ERR_FORMAT, "%s: field 'model.vocab[\"%.40s\"]': id %d is used twice", path, key, id);
        }
        size_t before = tb.n;
        bl_decode(key, strlen(key), c2b, &tb);
        if (tb.n > UINT32_MAX / 2) { hs_free(tb.p); return ferr(err, n, HS_ERR_FORMAT, path, "model.vocab", "too large"); }
        t->toff[id] = (uint32_t)before;
        t->tlen[id] = (uint32_t)(tb.n - before);
        t->tflag[id] = TF_USED;
    }
    /* added tokens: their content is their bytes (overrides a vocab entry of that id) */
    t->added = hs_calloc(n_added ? n_added : 1, sizeof *t->added);
    for (size_t i = 0; i < n_added; i++) {
        json_t *a = json_array_get(added, i);
        added_t *d = &t->added[t->n_added++];
        d->id = (int32_t)json_integer_value(json_object_get(a, "id"));
        d->len = json_string_length(json_object_get(a, "content"));
        d->content = hs_malloc(d->len + 1);
        memcpy(d->content, json_string_value(json_object_get(a, "content")), d->len + 1);
        d->special = json_is_true(json_object_get(a, "special"));
        d->normalized = json_is_true(json_object_get(a, "normalized"));
        d->lstrip = json_is_true(json_object_get(a, "lstrip"));
        d->rstrip = json_is_true(json_object_get(a, "rstrip"));
        d->single_word = json_is_true(json_object_get(a, "single_word"));
        size_t before = tb.n;
        hs_buf_add(&tb, d->content, d->len);
        t->toff[d->id] = (uint32_t)before;
        t->tlen[d->id] = (uint32_t)d->len;
        t->tflag[d->id] = TF_USED | TF_ADDED | (d->special ? TF_SPECIAL : 0);
        if (d->normalized) t->has_normalized_added = 1;
        else t->added_first[(uint8_t)d->content[0]] = 1;
    }
    qsort(t->added, t->n_added, sizeof *t->added, cmp_added);
    t->tb = tb.p;

    /* bytes → id map (vocab tokens first; an added token's content wins a collision) */
    size_t n_used = 0;
    for (int32_t id = 0; id < t->n_ids; id++) n_used += (t->tflag[id] & TF_USED) != 0;
    t->vcap = pow2_at_least(n_used * 2);
    t->vmap = hs_malloc(t->vcap * sizeof *t->vmap);
    memset(t->vmap, 0xff, t->vcap * sizeof *t->vmap);
    for (int32_t id = 0; id < t->n_ids; id++)
        if ((t->tflag[id] & (TF_USED | TF_ADDED)) == TF_USED && vmap_find(t, t->tb + t->toff[id], t->tlen[id]) < 0)
            vmap_put(t, id);
    for (size_t i = 0; i < t->n_added; i++) {
        int32_t old = vmap_find(t, t->added[i].content, t->added[i].len);
        if (old < 0) vmap_put(t, t->added[i].id);
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        int32_t id = vmap_find(t, &c, 1);
        if (id < 0 || (t->tflag[id] & TF_ADDED)) {
            char u[8];
            size_t ul = 0;
            uint32_t cp = b2c[b];
            if (cp < 0x80) u[ul++] = (char)cp;
            else { u[ul++] = (char)(0xC0 | (cp >> 6)); u[ul++] = (char)(0x80 | (cp & 0x3F)); }
            u[ul] = 0;
            return hs_errf(err, n, HS_ERR_FORMAT, "%s: field 'model.vocab': no token for byte 0x%02x (\"%s\"); not a byte-level BPE vocab",
                           path, b, u);
        }
        t->byte_id[b] = id;
    }

    /* merges: (left id, right id) → (rank, merged id) */
    size_t nm = json_array_size(merges);
    if (nm > (size_t)INT32_MAX / 4) return ferr(err, n, HS_ERR_FORMAT, path, "model.merges", "too many");
    t->mcap = pow2_at_least(nm * 2 + 1);
    t->mmap_ = hs_malloc(t->mcap * sizeof *t->mmap_);
    for (uint32_t i = 0; i < t->mcap; i++) t->mmap_[i].key = EMPTY_KEY;
    hs_buf_t tmp = {0};
    for (size_t i = 0; i < nm; i++) {
        const char *a, *b;
        size_t al, bl;
        if (!merge_strings(json_array_get(merges, i), &a, &al, &b, &bl)) {
            hs_free(tmp.p);
            snprintf(field, sizeof field, "model.merges[%zu]", i);
            return ferr(err, n, HS_ERR_FORMAT, path, field, "not a [\"left\", \"right\"] pair or a \"left right\" string");
        }
        int32_t ids[3];
        for (int k = 0; k < 3; k++) {
            tmp.n = 0;
            if (k == 0 || k == 2) bl_decode(a, al, c2b, &tmp);
            if (k == 1 || k == 2) bl_decode(b, bl, c2b, &tmp);
            hs_buf_add(&tmp, "", 0);
            ids[k] = vmap_find(t, tmp.p, tmp.n);
            if (ids[k] < 0 || (t->tflag[ids[k]] & TF_ADDED)) {
                hs_free(tmp.p);
                snprintf(field, sizeof field, "model.merges[%zu]", i);
                return hs_errf(err, n, HS_ERR_FORMAT, "%s: field '%s': %s of \"%.*s\" \"%.*s\" is not in model.vocab", path, field,
                               k == 0 ? "left part" : k == 1 ? "right part" : "merged token", (int)al, a, (int)bl, b);
            }
        }
        merge_put(t, ids[0], ids[1], (int32_t)i, ids[2]);
    }
    hs_free(tmp.p);

    /* the Split regex */
    if (regex) {
        int ec;
        PCRE2_SIZE eo;
        char *fixed = regex_fix_ws(regex);
        t->re = pcre2_compile((PCRE2_SPTR)fixed, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
        free(fixed);
        if (!t->re) {
            char msg[160];
            pcre2_get_error_message(ec, (PCRE2_UCHAR *)msg, sizeof msg);
            return hs_errf(err, n, HS_ERR_FORMAT, "%s: field 'pre_tokenizer.pattern.Regex': PCRE2 cannot compile it at offset %zu: %s",
                           path, (size_t)eo, msg);
        }
        t->re_jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
    }
    return HS_OK;
}

int tok_load(const char *path, tok_t **out, char *err, size_t n) {
    if (!path || !out) return hs_errf(err, n, HS_ERR_INVALID, "tok_load: NULL argument");
    *out = NULL;
    struct stat st;
    char *file;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        size_t l = strlen(path);
        file = hs_malloc(l + 32);
        snprintf(file, l + 32, "%s/tokenizer.json", path);
    } else {
        file = hs_strdup(path);
    }
    size_t len;
    char *text = hs_read_file(file, &len, err, n);
    if (!text) {
        hs_free(file);
        return HS_ERR_IO;
    }
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_ALLOW_NUL, &je);
    hs_free(text);
    if (!root) {
        int rc = hs_errf(err, n, HS_ERR_FORMAT, "%s: not valid JSON (line %d, column %d): %s", file, je.line, je.column, je.text);
        hs_free(file);
        return rc;
    }
    tok_t *t = hs_calloc(1, sizeof *t);
    t->path = file;
    int rc = load_json(t, root, err, n);
    json_decref(root);
    if (rc) {
        tok_free(t);
        return rc;
    }
    const char *nc = getenv("HYSERVE_TOK_CACHE");
    if (!nc || strcmp(nc, "0")) {
        t->cache = hs_calloc(1, sizeof *t->cache);
        pthread_mutex_init(&t->cache->mu, NULL);
    }
    *out = t;
    return HS_OK;
}

void tok_free(tok_t *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_added; i++) hs_free(t->added[i].content);
    hs_free(t->added);
    hs_free(t->tb);
    hs_free(t->toff);
    hs_free(t->tlen);
    hs_free(t->tflag);
    hs_free(t->vmap);
    hs_free(t->mmap_);
    if (t->re) pcre2_code_free(t->re);
    if (t->cache) {
        pthread_mutex_destroy(&t->cache->mu);
        hs_free(t->cache->slots);
        hs_free(t->cache->arena);
        hs_free(t->cache);
    }
    hs_free(t->path);
    hs_free(t);
}

int32_t tok_n_vocab(const tok_t *t) { return t->n_ids; }

const char *tok_id_bytes(const tok_t *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_ids || !(t->tflag[id] & TF_USED)) return NULL;
    *len = t->tlen[id];
    return t->tb + t->toff[id];
}

int32_t tok_lookup(const tok_t *t, const char *s, size_t len) {
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == len && !memcmp(t->added[i].content, s, len)) return t->added[i].id;
    return vmap_find(t, s, len);
}

int tok_is_special(const tok_t *t, int32_t id) {
    return id >= 0 && id < t->n_ids && (t->tflag[id] & TF_SPECIAL) != 0;
}

/* ---- BPE ------------------------------------------------------------------------ */

#define SMALL_BPE 64

/* Small pieces: sym[] ids, rk[i] = rank of pair (sym[i], sym[i+1]) or INT32_MAX. */
static void bpe_small(const tok_t *t, const uint8_t *s, size_t n, ids_t *out) {
    int32_t sym[SMALL_BPE], rk[SMALL_BPE], nid[SMALL_BPE];
    size_t m = n;
    for (size_t i = 0; i < n; i++) sym[i] = t->byte_id[s[i]];
    for (size_t i = 0; i + 1 < m; i++) {
        const merge_slot_t *ms = merge_find(t, sym[i], sym[i + 1]);
        rk[i] = ms ? ms->rank : INT32_MAX;
        nid[i] = ms ? ms->id : -1;
    }
    while (m > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < m; i++)
            if (rk[i] < rk[best]) best = i;
        if (rk[best] == INT32_MAX) break;
        sym[best] = nid[best];
        memmove(sym + best + 1, sym + best + 2, (m - best - 2) * sizeof *sym);
        memmove(rk + best + 1, rk + best + 2, (m - best - 2) * sizeof *rk);
        memmove(nid + best + 1, nid + best + 2, (m - best - 2) * sizeof *nid);
        m--;
        for (size_t i = best ? best - 1 : 0; i <= best && i + 1 < m; i++) {
            const merge_slot_t *ms = merge_find(t, sym[i], sym[i + 1]);
            rk[i] = ms ? ms->rank : INT32_MAX;
            nid[i] = ms ? ms->id : -1;
        }
    }
    for (size_t i = 0; i < m; i++) ids_push(out, sym[i]);
}

typedef struct {
    int32_t rank;
    uint32_t pos;
    int32_t a, b;
} hent_t;

static int hless(const hent_t *x, const hent_t *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void hpush(hent_t *h, size_t *hn, hent_t e) {
    size_t i = (*hn)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hless(&e, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static hent_t hpop(hent_t *h, size_t *hn) {
    hent_t top = h[0], last = h[--(*hn)];
    size_t i = 0, n = *hn;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && hless(&h[c + 1], &h[c])) c++;
        if (!hless(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (n) h[i] = last;
    return top;
}

/* Long pieces: linked list of symbols + heap of candidate merges (lazy deletion). */
static void bpe_large(const tok_t *t, const uint8_t *s, size_t n, ids_t *out) {
    int32_t *sym = hs_malloc(n * sizeof *sym);
    int64_t *prev = hs_malloc(n * sizeof *prev), *next = hs_malloc(n * sizeof *next);
    hent_t *heap = hs_malloc((2 * n + 1) * sizeof *heap);
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = t->byte_id[s[i]];
        prev[i] = (int64_t)i - 1;
        next[i] = i + 1 < n ? (int64_t)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        const merge_slot_t *ms = merge_find(t, sym[i], sym[i + 1]);
        if (ms) hpush(heap, &hn, (hent_t){ms->rank, (uint32_t)i, sym[i], sym[i + 1]});
    }
    while (hn) {
        hent_t e = hpop(heap, &hn);
        size_t p = e.pos;
        if (sym[p] != e.a || next[p] < 0 || sym[next[p]] != e.b) continue; /* stale */
        const merge_slot_t *ms = merge_find(t, e.a, e.b);
        size_t q = (size_t)next[p];
        sym[p] = ms->id;
        sym[q] = -1;
        next[p] = next[q];
        if (next[q] >= 0) prev[next[q]] = (int64_t)p;
        if (hn + 2 > 2 * n + 1) { /* cannot happen (each merge pushes 2, removes 1 symbol) */
            assert(0);
        }
        if (prev[p] >= 0) {
            const merge_slot_t *l = merge_find(t, sym[prev[p]], sym[p]);
            if (l) hpush(heap, &hn, (hent_t){l->rank, (uint32_t)prev[p], sym[prev[p]], sym[p]});
        }
        if (next[p] >= 0) {
            const merge_slot_t *r = merge_find(t, sym[p], sym[next[p]]);
            if (r) hpush(heap, &hn, (hent_t){r->rank, (uint32_t)p, sym[p], sym[next[p]]});
        }
    }
    for (int64_t i = 0; i >= 0; i = next[i]) ids_push(out, sym[i]);
    hs_free(sym);
    hs_free(prev);
    hs_free(next);
    hs_free(heap);
}

static cache_slot_t *cache_slot(cache_t *c, uint64_t h, const char *s, size_t n, int *found) {
    uint32_t m = CACHE_SLOTS - 1, i = (uint32_t)h & m;
    for (;;) {
        cache_slot_t *e = &c->slots[i];
        if (!e->klen) { *found = 0; return e; }
        if (e->hash == h && e->klen == n && !memcmp(c->arena + e->off, s, n)) { *found = 1; return e; }
        i = (i + 1) & m;
    }
}

/* One pre-tokenized piece → ids; `c` is the cache if this thread holds it, else NULL. */
static void bpe_piece(const tok_t *t, cache_t *c, const char *s, size_t n, ids_t *out) {
    if (n == 0) return;
    if (n == 1) { ids_push(out, t->byte_id[(uint8_t)s[0]]); return; }
    uint64_t h = 0;
    cache_slot_t *slot = NULL;
    if (c && n <= CACHE_MAX_KEY) {
        h = bytes_hash(s, n);
        int found;
        slot = cache_slot(c, h, s, n, &found);
        if (found) {
            const int32_t *v = (const int32_t *)(c->arena + ((slot->off + n + 3) & ~3u));
            for (uint16_t i = 0; i < slot->nids; i++) ids_push(out, v[i]);
            return;
        }
    }
    size_t start = out->n;
    int32_t whole = t->ignore_merges ? vmap_find(t, s, n) : -1;
    if (whole >= 0 && !(t->tflag[whole] & TF_ADDED)) ids_push(out, whole);
    else if (n <= SMALL_BPE) bpe_small(t, (const uint8_t *)s, n, out);
    else bpe_large(t, (const uint8_t *)s, n, out);
    if (slot) {
        size_t nids = out->n - start;
        size_t need = ((n + 3) & ~(size_t)3) + nids * 4;
        if (c->count + 1 > CACHE_SLOTS * 3 / 4 || c->used + need + 4 > CACHE_ARENA) {
            memset(c->slots, 0, CACHE_SLOTS * sizeof *c->slots); /* full: start over */
            c->count = 0;
            c->used = 0;
            int found;
            slot = cache_slot(c, h, s, n, &found);
        }
        uint32_t off = c->used;
        memcpy(c->arena + off, s, n);
        memcpy(c->arena + ((off + n + 3) & ~3u), out->v + start, nids * 4);
        c->used = (uint32_t)(((off + n + 3) & ~3u) + nids * 4);
        *slot = (cache_slot_t){h, off, (uint16_t)n, (uint16_t)nids};
        c->count++;
    }
}

/* ---- encode --------------------------------------------------------------------- */

typedef struct {
    const tok_t *t;
    cache_t *cache;
    pcre2_match_data *md;
    pcre2_jit_stack *js;
    pcre2_match_context *mc;
    ids_t out;
    int rc;
    char *err;
    size_t errn;
} enc_t;

static int re_match(enc_t *e, const char *s, size_t n, size_t at, size_t *ms, size_t *me) {
    int r = pcre2_match(e->t->re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, e->md, e->mc);
    if (r == PCRE2_ERROR_JIT_STACKLIMIT && !e->js) {
        e->js = pcre2_jit_stack_create(64 << 10, 64 << 20, NULL);
        e->mc = pcre2_match_context_create(NULL);
        if (e->js && e->mc) {
            pcre2_jit_stack_assign(e->mc, NULL, e->js);
            r = pcre2_match(e->t->re, (PCRE2_SPTR)s, n, at, PCRE2_NO_UTF_CHECK, e->md, e->mc);
        }
    }
    if (r == PCRE2_ERROR_NOMATCH) return 0;
    if (r < 0) {
        char msg[128];
        pcre2_get_error_message(r, (PCRE2_UCHAR *)msg, sizeof msg);
        e->rc = hs_errf(e->err, e->errn, HS_ERR_NO_MEMORY, "tok_encode: regex match failed: %s", msg);
        return -1;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

/* Normalized text → pieces → BPE. */
static void enc_pretok(enc_t *e, const char *s, size_t n) {
    const tok_t *t = e->t;
    if (!t->re) { bpe_piece(t, e->cache, s, n, &e->out); return; }
    size_t at = 0, last = 0;
    while (at < n && e->rc == HS_OK) {
        size_t ms, me;
        int r = re_match(e, s, n, at, &ms, &me);
        if (r <= 0) break;
        if (ms > last) bpe_piece(t, e->cache, s + last, ms - last, &e->out); /* gap: isolated piece */
        if (me > ms) {
            bpe_piece(t, e->cache, s + ms, me - ms, &e->out);
            at = last = me;
        } else { /* empty match: step one code point */
            size_t l = 1;
            while (ms + l < n && ((uint8_t)s[ms + l] & 0xC0) == 0x80) l++;
            at = ms + l;
            last = ms;
        }
    }
    if (e->rc == HS_OK && last < n) bpe_piece(t, e->cache, s + last, n - last, &e->out);
}

/* Finds the next added-token match in s[from..n) (leftmost, longest), among tokens
 * with normalized == want_norm. Returns the index into t->added or -1. */
static long find_added(const tok_t *t, const char *s, size_t n, size_t from, int want_norm, unsigned flags, size_t *pos) {
    for (size_t i = from; i < n; i++) {
        if (!want_norm && !t->added_first[(uint8_t)s[i]]) continue;
        for (size_t k = 0; k < t->n_added; k++) {
            const added_t *a = &t->added[k];
            if (a->normalized != want_norm || a->len > n - i) continue;
            if ((flags & TOK_ENC_SPLIT_SPECIAL) && a->special) continue;
            if (!memcmp(s + i, a->content, a->len)) { *pos = i; return (long)k; }
        }
    }
    return -1;
}

static void enc_normalized(enc_t *e, const char *s, size_t n, unsigned flags, int stage);

/* Splits s on added tokens (stage 0: raw text, non-normalized tokens; stage 1:
 * normalized text, normalized tokens), passing the rest on. */
static void enc_split(enc_t *e, const char *s, size_t n, unsigned flags, int stage) {
    const tok_t *t = e->t;
    size_t from = 0, done = 0; /* done: end of the last emitted token */
    int want_norm = stage == 1;
    if (t->n_added == 0 || (want_norm && !t->has_normalized_added)) {
        if (stage == 0) enc_normalized(e, s, n, flags, 0);
        else enc_pretok(e, s, n);
        return;
    }
    while (from < n && e->rc == HS_OK) {
        size_t pos;
        long k = find_added(t, s, n, from, want_norm, flags, &pos);
        if (k < 0) break;
        const added_t *a = &t->added[k];
        size_t start = pos, stop = pos + a->len;
        from = stop;
        if (start < done) continue; /* inside a stripped run of the previous token */
        if (a->single_word) {
            size_t l;
            int ws = start == 0 || !is_word_cp(u8_cp((const uint8_t *)s + u8_prev((const uint8_t *)s, start), &l));
            int we = stop == n || !is_word_cp(u8_cp((const uint8_t *)s + stop, &l));
            if (!ws || !we) continue;
        }
        if (a->lstrip) {
            while (start > done) {
                size_t p = u8_prev((const uint8_t *)s, start), l;
                if (!is_space_cp(u8_cp((const uint8_t *)s + p, &l))) break;
                start = p;
            }
        }
        if (a->rstrip) {
            while (stop < n) {
                size_t l;
                if (!is_space_cp(u8_cp((const uint8_t *)s + stop, &l))) break;
                stop += l;
            }
            from = stop;
        }
        if (start > done) {
            if (stage == 0) enc_normalized(e, s + done, start - done, flags, 0);
            else enc_pretok(e, s + done, start - done);
        }
        ids_push(&e->out, a->id);
        done = stop;
    }
    if (done < n && e->rc == HS_OK) {
        if (stage == 0) enc_normalized(e, s + done, n - done, flags, 0);
        else enc_pretok(e, s + done, n - done);
    }
}

/* A raw segment between added tokens: NFC, then normalized added tokens, then pieces. */
static void enc_normalized(enc_t *e, const char *s, size_t n, unsigned flags, int stage) {
    (void)stage;
    char *norm = NULL;
    size_t nn = n;
    if (e->t->nfc) {
        int ascii = 1;
        for (size_t i = 0; i < n && ascii; i++) ascii = (uint8_t)s[i] < 0x80;
        if (!ascii) {
            norm = tok_nfc(s, n, &nn);
            if (norm) s = norm;
            else nn = n; /* cannot happen on sanitized input; encode unnormalized */
        }
    }
    if (e->t->has_normalized_added) enc_split(e, s, nn, flags, 1);
    else enc_pretok(e, s, nn);
    free(norm);
}

int tok_encode(const tok_t *t, const char *text, size_t len, unsigned flags,
               int32_t **ids, size_t *n_ids, char *err, size_t n) {
    if (!t || !ids || !n_ids || (!text && len)) return hs_errf(err, n, HS_ERR_INVALID, "tok_encode: NULL argument");
    *ids = NULL;
    *n_ids = 0;
    char *clean = NULL;
    if (!tok_utf8_valid(text, len)) {
        clean = tok_utf8_sanitize(text, len, &len);
        text = clean;
    }
    enc_t e = {.t = t, .rc = HS_OK, .err = err, .errn = n};
    e.md = t->re ? pcre2_match_data_create(1, NULL) : NULL;
    if (t->cache && pthread_mutex_trylock(&t->cache->mu) == 0) {
        e.cache = t->cache;
        if (!e.cache->slots) {
            e.cache->slots = hs_calloc(CACHE_SLOTS, sizeof *e.cache->slots);
            e.cache->arena = hs_malloc(CACHE_ARENA);
        }
    }
    enc_split(&e, text ? text : "", len, flags, 0);
    if (e.cache) pthread_mutex_unlock(&e.cache->mu);
    if (e.md) pcre2_match_data_free(e.md);
    if (e.mc) pcre2_match_context_free(e.mc);
    if (e.js) pcre2_jit_stack_free(e.js);
    free(clean);
    if (e.rc) {
        hs_free(e.out.v);
        return e.rc;
    }
    if (!e.out.v) e.out.v = hs_malloc(sizeof(int32_t));
    *ids = e.out.v;
    *n_ids = e.out.n;
    return HS_OK;
}

/* ---- decode --------------------------------------------------------------------- */

int tok_decode(const tok_t *t, const int32_t *ids, size_t n_ids, unsigned flags,
               char **out, size_t *out_len, char *err, size_t n) {
    if (!t || !out || !out_len || (!ids && n_ids)) return hs_errf(err, n, HS_ERR_INVALID, "tok_decode: NULL argument");
    *out = NULL;
    *out_len = 0;
    hs_buf_t b = {0};
    hs_buf_add(&b, "", 0);
    for (size_t i = 0; i < n_ids; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !(t->tflag[id] & TF_USED)) {
            hs_free(b.p);
            return hs_errf(err, n, HS_ERR_INVALID, "tok_decode: id %d at position %zu is not in the vocabulary (0..%d)", id, i,
                           t->n_ids - 1);
        }
        if ((flags & TOK_DEC_SKIP_SPECIAL) && (t->tflag[id] & TF_SPECIAL)) continue;
        hs_buf_add(&b, t->tb + t->toff[id], t->tlen[id]);
    }
    *out = b.p;
    *out_len = b.n;
    return HS_OK;
}

/* ---- streaming detokenizer ------------------------------------------------------ */

struct tok_stream {
    const tok_t *t;
    unsigned flags;
    uint8_t pend[4];
    size_t npend;
    hs_buf_t out;
};

tok_stream_t *tok_stream_new(const tok_t *t, unsigned dec_flags) {
    tok_stream_t *s = hs_calloc(1, sizeof *s);
    s->t = t;
    s->flags = dec_flags;
    hs_buf_add(&s->out, "", 0);
    return s;
}

void tok_stream_free(tok_stream_t *s) {
    if (!s) return;
    hs_free(s->out.p);
    hs_free(s);
}

size_t tok_stream_pending(const tok_stream_t *s) { return s->npend; }

/* Emits the complete characters of pend + b[0..n), keeps an unfinished tail. */
static void stream_feed(tok_stream_t *s, const uint8_t *b, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s->npend == 0) {
            /* fast path over ASCII and whole sequences inside b */
            size_t l;
            int st = u8_seq(b, n, i, &l);
            if (st == U8_OK) { hs_buf_add(&s->out, (const char *)b + i, l); i += l; continue; }
            if (st == U8_BAD) { hs_buf_add(&s->out, REPL, 3); i += l; continue; }
            memcpy(s->pend, b + i, n - i); /* U8_SHORT: l == n - i < 4 */
            s->npend = n - i;
            return;
        }
        s->pend[s->npend++] = b[i++];
        size_t l;
        int st = u8_seq(s->pend, s->npend, 0, &l);
        if (st == U8_SHORT) continue;
        if (st == U8_OK) { hs_buf_add(&s->out, (const char *)s->pend, l); s->npend = 0; continue; }
        /* invalid: replace the maximal subpart, re-feed what follows it */
        hs_buf_add(&s->out, REPL, 3);
        uint8_t rest[4];
        size_t nr = s->npend - l;
        memcpy(rest, s->pend + l, nr);
        s->npend = 0;
        stream_feed(s, rest, nr);
    }
}

void tok_stream_push_bytes(tok_stream_t *s, const char *bytes, size_t nb, const char **text, size_t *len) {
    s->out.n = 0;
    s->out.p[0] = 0;
    if (nb) stream_feed(s, (const uint8_t *)bytes, nb);
    *text = s->out.p;
    *len = s->out.n;
}

int tok_stream_push(tok_stream_t *s, int32_t id, const char **text, size_t *len, char *err, size_t n) {
    size_t bl;
    const char *b = tok_id_bytes(s->t, id, &bl);
    if (!b) {
        s->out.n = 0;
        s->out.p[0] = 0;
        *text = s->out.p;
        *len = 0;
        return hs_errf(err, n, HS_ERR_INVALID, "tok_stream_push: id %d is not in the vocabulary", id);
    }
    if ((s->flags & TOK_DEC_SKIP_SPECIAL) && tok_is_special(s->t, id)) bl = 0;
    tok_stream_push_bytes(s, b, bl, text, len);
    return HS_OK;
}

void tok_stream_flush(tok_stream_t *s, const char **text, size_t *len) {
    s->out.n = 0;
    s->out.p[0] = 0;
    if (s->npend) hs_buf_add(&s->out, REPL, 3);
    s->npend = 0;
    *text = s->out.p;
    *len = s->out.n;
}
