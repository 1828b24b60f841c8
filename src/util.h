/*
 * util: the small things every module uses.
 *
 * Errors come in three tiers (docs/ARCHITECTURE.md, "Errors"):
 *   - a broken invariant is a bug: assert() (asserts stay on in every build);
 *   - a start-up failure prints what and where and exits: hs_die();
 *   - a runtime or request error is a return code (HS_OK = 0, negative = error,
 *     positive = soft "no room now, retry later") with the message written into a
 *     caller-owned buffer through hs_errf(). Library code never exits on these.
 *
 * Memory: hs_malloc/hs_calloc/hs_realloc abort on out-of-memory (start-up
 * allocations; the step loop allocates nothing). hs_free(NULL) is fine.
 */
#ifndef HS_UTIL_H
#define HS_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdarg.h>
#include <string.h>

enum {
    HS_OK = 0,
    HS_AGAIN = 1,            /* soft: not now (no room), retry later */
    HS_ERR_INVALID = -1,     /* bad argument or input */
    HS_ERR_NOT_FOUND = -2,   /* unknown id, missing file or field */
    HS_ERR_NO_MEMORY = -3,   /* pool or allocation exhausted for good */
    HS_ERR_IO = -4,          /* read/write/mmap failed */
    HS_ERR_FORMAT = -5,      /* a file that does not parse or validate */
    HS_ERR_STATE = -6,       /* call not allowed in the object's current state */
    HS_ERR_UNSUPPORTED = -7, /* valid but not implemented for this case */
};

/* Name of a return code, for messages. */
const char *hs_strerror(int rc);

/* Print "hyserve: error: <msg>" to stderr and exit(status). Start-up only. */
void hs_die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* Write a formatted message into err[0..n) (n may be 0, err may be NULL); return rc. */
int hs_errf(char *err, size_t n, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Logging to stderr; HS_LOG_LEVEL=debug|info|warn|error (default info). */
enum { HS_LOG_DEBUG, HS_LOG_INFO, HS_LOG_WARN, HS_LOG_ERROR };
void hs_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define hs_debug(...) hs_log(HS_LOG_DEBUG, __VA_ARGS__)
#define hs_info(...)  hs_log(HS_LOG_INFO, __VA_ARGS__)
#define hs_warn(...)  hs_log(HS_LOG_WARN, __VA_ARGS__)

void *hs_malloc(size_t n);
void *hs_calloc(size_t count, size_t size);
void *hs_realloc(void *p, size_t n);
char *hs_strdup(const char *s);
#define hs_free(p) free(p)

/* A growable, always NUL-terminated byte buffer. Zero-initialise; p stays NULL until
 * the first add; the owner frees p. Appends abort on out-of-memory like hs_malloc. */
typedef struct {
    char *p;
    size_t n, cap; /* bytes used (without the NUL), bytes allocated */
} hs_buf_t;
void hs_buf_add(hs_buf_t *b, const char *s, size_t n);
void hs_buf_printf(hs_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Monotonic clock in seconds / nanoseconds. */
double hs_now(void);
uint64_t hs_now_ns(void);

/* Whole file into a NUL-terminated heap buffer; *len gets the size without the NUL.
 * Returns NULL (and writes err) on failure. Caller frees. */
char *hs_read_file(const char *path, size_t *len, char *err, size_t n);

/* Element types of weights, activations, caches and state. */
typedef enum {
    HS_F32 = 0,
    HS_BF16,
    HS_F16,
    HS_F8_E4M3,
    HS_F64,
    HS_I32,
    HS_I64,
    HS_U8,
    HS_DTYPE_COUNT
} hs_dtype_t;
size_t hs_dtype_size(hs_dtype_t t);          /* bytes per element */
const char *hs_dtype_name(hs_dtype_t t);     /* "f32", "bf16", ... */
int hs_dtype_parse(const char *s, hs_dtype_t *out); /* accepts f32/float32/fp32, bf16/bfloat16, f16/float16/fp16, fp8/f8_e4m3 */

/* ceil(a / b) for positive integers. */
static inline uint64_t hs_ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

/* bf16 and fp16 <-> fp32, round-to-nearest-even. */
float hs_bf16_to_f32(uint16_t h);
uint16_t hs_f32_to_bf16(float f);
float hs_f16_to_f32(uint16_t h);
uint16_t hs_f32_to_f16(float f);

/* Element i of an f32, bf16 or f16 array as fp32 (memcpy loads: any alignment, as in
 * an mmap'd checkpoint). Any other dtype gives 0: callers check the dtype first. */
static inline float hs_load_f32(const void *p, hs_dtype_t t, size_t i) {
    const unsigned char *b = (const unsigned char *)p;
    uint16_t h;
    float f;
    switch (t) {
    case HS_F32: memcpy(&f, b + 4 * i, 4); return f;
    case HS_BF16: memcpy(&h, b + 2 * i, 2); return hs_bf16_to_f32(h);
    case HS_F16: memcpy(&h, b + 2 * i, 2); return hs_f16_to_f32(h);
    default: return 0.0f;
    }
}

/* fp8 E4M3 (OCP "fn": no infinities, 0x7f / 0xff are NaN, max 448) -> fp32, exact. */
float hs_e4m3_to_f32(uint8_t v);
/* Element (r, c) of an fp8 E4M3 matrix with `cols` columns and 128x128 block scales
 * scale_inv [ceil(rows/128), ceil(cols/128)] (Qwen's FP8 checkpoints). */
static inline float hs_fp8_block_elem(const uint8_t *q, const float *scale_inv, int64_t cols, int64_t r, int64_t c) {
    return hs_e4m3_to_f32(q[r * cols + c]) * scale_inv[(r / 128) * ((cols + 127) / 128) + c / 128];
}

/* Parse a decimal integer / float with full validation (whole string, range). */
int hs_parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out);
int hs_parse_f64(const char *s, double *out);
/* "on" -> 1, "off" -> 0, "auto" -> -1; HS_ERR_INVALID otherwise. */
int hs_parse_onoff(const char *s, int *out);

#endif
