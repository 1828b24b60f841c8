/* util: error reporting, logging, allocation, clocks, number conversion. */
#include "util.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

const char *hs_strerror(int rc) {
    switch (rc) {
    case HS_OK: return "ok";
    case HS_AGAIN: return "no room now";
    case HS_ERR_INVALID: return "invalid argument";
    case HS_ERR_NOT_FOUND: return "not found";
    case HS_ERR_NO_MEMORY: return "out of memory";
    case HS_ERR_IO: return "i/o error";
    case HS_ERR_FORMAT: return "bad format";
    case HS_ERR_STATE: return "wrong state";
    case HS_ERR_UNSUPPORTED: return "unsupported";
    default: return "unknown error";
    }
}

void hs_die(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("hyserve: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(status);
}

int hs_errf(char *err, size_t n, int rc, const char *fmt, ...) {
    if (err && n > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static int log_level(void) {
    static int level = -1;
    if (level < 0) {
        const char *s = getenv("HS_LOG_LEVEL");
        level = HS_LOG_INFO;
        if (s && !strcmp(s, "debug")) level = HS_LOG_DEBUG;
        else if (s && !strcmp(s, "warn")) level = HS_LOG_WARN;
        else if (s && !strcmp(s, "error")) level = HS_LOG_ERROR;
    }
    return level;
}

void hs_log(int level, const char *fmt, ...) {
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < log_level()) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "hyserve: %s: ", names[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void oom(size_t n) {
    fprintf(stderr, "hyserve: error: out of memory allocating %zu bytes\n", n);
    abort();
}

void *hs_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *hs_calloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) oom(count * size);
    return p;
}

void *hs_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *hs_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = hs_malloc(n);
    memcpy(d, s, n);
    return d;
}

uint64_t hs_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double hs_now(void) { return (double)hs_now_ns() * 1e-9; }

char *hs_read_file(const char *path, size_t *len, char *err, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        hs_errf(err, n, HS_ERR_IO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, used = 0;
    char *buf = hs_malloc(cap);
    for (;;) {
        if (used + 1 >= cap) buf = hs_realloc(buf, cap *= 2);
        size_t got = fread(buf + used, 1, cap - used - 1, f);
        used += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        hs_errf(err, n, HS_ERR_IO, "%s: read error", path);
        return NULL;
    }
    buf[used] = 0;
    if (len) *len = used;
    return buf;
}

float hs_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t hs_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float hs_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400u));
            u = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | man << 13;
    } else {
        u = sign | (exp + 112u) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t hs_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffffu;
    if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = 1u << (shift - 1);
        uint32_t r = man >> shift, rem = man & ((1u << shift) - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = (uint32_t)exp << 10 | man >> 13, rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

float hs_e4m3_to_f32(uint8_t v) {
    int sign = v >> 7, exp = (v >> 3) & 0xf, man = v & 7;
    float r;
    if (exp == 0xf && man == 7) r = NAN;
    else if (exp == 0) r = ldexpf((float)man, -9); /* subnormal: man/8 * 2^-6 */
    else r = ldexpf(1.0f + (float)man / 8.0f, exp - 7);
    return sign ? -r : r;
}

int hs_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    if (!s || !*s) return HS_ERR_INVALID;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return HS_ERR_INVALID;
    *out = v;
    return HS_OK;
}

int hs_parse_f64(const char *s, double *out) {
    if (!s || !*s) return HS_ERR_INVALID;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v)) return HS_ERR_INVALID;
    *out = v;
    return HS_OK;
}

int hs_parse_onoff(const char *s, int *out) {
    if (!s) return HS_ERR_INVALID;
    if (!strcmp(s, "on")) *out = 1;
    else if (!strcmp(s, "off")) *out = 0;
    else if (!strcmp(s, "auto")) *out = -1;
    else return HS_ERR_INVALID;
    return HS_OK;
}

static const struct { const char *name; size_t size; } dtypes[HS_DTYPE_COUNT] = {
    [HS_F32] = {"f32", 4},   [HS_BF16] = {"bf16", 2}, [HS_F16] = {"f16", 2},
    [HS_F8_E4M3] = {"fp8", 1}, [HS_F64] = {"f64", 8}, [HS_I32] = {"i32", 4},
    [HS_I64] = {"i64", 8},   [HS_U8] = {"u8", 1},
};

size_t hs_dtype_size(hs_dtype_t t) {
    assert(t >= 0 && t < HS_DTYPE_COUNT);
    return dtypes[t].size;
}

const char *hs_dtype_name(hs_dtype_t t) {
    assert(t >= 0 && t < HS_DTYPE_COUNT);
    return dtypes[t].name;
}

int hs_dtype_parse(const char *s, hs_dtype_t *out) {
    static const struct { const char *alias; hs_dtype_t t; } aliases[] = {
        {"f32", HS_F32}, {"fp32", HS_F32}, {"float32", HS_F32}, {"float", HS_F32},
        {"bf16", HS_BF16}, {"bfloat16", HS_BF16},
        {"f16", HS_F16}, {"fp16", HS_F16}, {"float16", HS_F16}, {"half", HS_F16},
        {"fp8", HS_F8_E4M3}, {"f8_e4m3", HS_F8_E4M3}, {"fp8_e4m3", HS_F8_E4M3},
    };
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (!strcasecmp(s, aliases[i].alias)) { *out = aliases[i].t; return HS_OK; }
    return HS_ERR_INVALID;
}

void hs_buf_add(hs_buf_t *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1) c *= 2;
        b->p = hs_realloc(b->p, c);
        b->cap = c;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void hs_buf_printf(hs_buf_t *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if ((size_t)k < sizeof tmp) {
        hs_buf_add(b, tmp, (size_t)k);
        return;
    }
    char *big = hs_malloc((size_t)k + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)k + 1, fmt, ap);
    va_end(ap);
    hs_buf_add(b, big, (size_t)k);
    free(big);
}
