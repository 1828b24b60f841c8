/*
 * st: safetensors reader (and a small writer for fixtures and tests).
 *
 * A safetensors file is
 *
 *   | OFFSET   | SIZE | WHAT                                                          |
 *   |----------|------|---------------------------------------------------------------|
 *   | 0        | 8    | N: header length, unsigned 64-bit little-endian               |
 *   | 8        | N    | header: UTF-8 JSON object (may be padded with spaces)         |
 *   | 8 + N    | rest | data section: the tensors' bytes, row-major, little-endian    |
 *
 * The header maps tensor name -> {"dtype": "BF16", "shape": [d0, d1, ...],
 * "data_offsets": [begin, end]} with offsets relative to the data section, plus an
 * optional "__metadata__" object of string -> string.
 *
 * Validation (every failure is HS_ERR_FORMAT with "<file>: <tensor or field>: <why>"):
 *   - 2 <= N <= ST_MAX_HEADER and N <= file size - 8;
 *   - the header is valid UTF-8 JSON, an object, no duplicate keys;
 *   - dtype is one of BF16 F16 F32 F8_E4M3 (weights) or I32 I64 U8 F64 (read, but
 *     st_dtype_is_weight() says no); anything else is an error;
 *   - rank <= ST_MAX_RANK, dims >= 0, the element count does not overflow int64;
 *   - 0 <= begin <= end <= data size and end - begin == elements * dtype size;
 *   - no two tensors of non-zero size overlap;
 *   - at most ST_MAX_TENSORS tensors, names 1..ST_MAX_NAME bytes.
 *
 * A checkpoint (st_set_t) is a single .safetensors file or a directory with either
 * model.safetensors or model.safetensors.index.json ("weight_map": name -> shard
 * file). Every shard named by the index is opened and validated, every name of the
 * weight map must be in the shard the index names, and a name may not appear in two
 * shards. Files are mmap'd read-only; tensor data pointers point into the map and
 * stay valid until st_set_close / st_file_close.
 */
#ifndef HS_ST_H
#define HS_ST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define ST_MAX_HEADER (100u * 1000u * 1000u) /* bytes */
#define ST_MAX_RANK 8
#define ST_MAX_TENSORS 1000000
#define ST_MAX_NAME 1024                     /* bytes, without the NUL */
#define ST_MAX_SHARDS 100000

typedef struct {
    char *name;                   /* NUL-terminated, owned by the file */
    hs_dtype_t dtype;
    int rank;                     /* 0..ST_MAX_RANK */
    int64_t shape[ST_MAX_RANK];   /* dims, shape[rank..] = 0 */
    int64_t n_elem;               /* product of dims (1 for rank 0) */
    uint64_t begin, end;          /* byte range within the data section */
    const uint8_t *data;          /* start of the bytes (inside the map / buffer) */
    int file;                     /* index of the file in its st_set_t (0 for a lone file) */
} st_tensor_t;

typedef struct {
    char *path;                   /* as given (names the file in messages), owned */
    const uint8_t *base;          /* whole file: mmap or the caller's buffer */
    size_t size;                  /* bytes of the whole file */
    bool mapped;                  /* base is our mmap (unmapped by st_file_close) */
    uint64_t header_len;          /* N */
    st_tensor_t *tensors;         /* [n_tensors] in header order, owned */
    int n_tensors;
    char **meta_keys, **meta_vals;/* [n_meta] __metadata__ entries, owned */
    int n_meta;
} st_file_t;

/* Parse a safetensors image in memory (no copy: tensor data points into buf, which
 * must outlive the result). `name` only names it in messages. On error *out is left
 * empty (nothing to close) and err says what and where. */
int st_parse(const void *buf, size_t size, const char *name, st_file_t *out, char *err, size_t n);

/* mmap and parse a file. Close with st_file_close. */
int st_file_open(const char *path, st_file_t *out, char *err, size_t n);
void st_file_close(st_file_t *f); /* tolerates a zeroed struct */

/* True for the dtypes a weight may have (BF16, F16, F32, F8_E4M3). */
bool st_dtype_is_weight(hs_dtype_t t);
/* Safetensors spelling of a dtype ("BF16"), and its parse (HS_ERR_FORMAT if unknown). */
const char *st_dtype_str(hs_dtype_t t);
int st_dtype_from_str(const char *s, hs_dtype_t *out);

/* A checkpoint: one or more files and a name-sorted index over all their tensors. */
typedef struct {
    char *dir;                    /* directory of the files (owned) */
    st_file_t *files;             /* [n_files] */
    int n_files;
    const st_tensor_t **sorted;   /* [n_tensors] sorted by name, pointing into files */
    int n_tensors;
    bool sharded;                 /* came from model.safetensors.index.json */
    uint64_t total_bytes;         /* sum of tensor data bytes */
} st_set_t;

/* Open `path`: a .safetensors file, a .index.json file, or a directory holding
 * model.safetensors.index.json or model.safetensors (or exactly one *.safetensors).
 * HS_ERR_NOT_FOUND when a directory holds no safetensors at all. */
int st_set_open(const char *path, st_set_t *out, char *err, size_t n);
void st_set_close(st_set_t *s); /* tolerates a zeroed struct */

/* Tensor by exact name, or NULL. O(log n). */
const st_tensor_t *st_set_find(const st_set_t *s, const char *name);
/* Index of t within s->sorted (for per-tensor side tables), t must belong to s. */
int st_set_index(const st_set_t *s, const st_tensor_t *t);
/* File path of a tensor's file. */
const char *st_set_file_path(const st_set_t *s, const st_tensor_t *t);

/* Bytes of a tensor. */
static inline uint64_t st_tensor_bytes(const st_tensor_t *t) { return t->end - t->begin; }
/* "[2, 3]" into buf. */
const char *st_shape_str(const int64_t *shape, int rank, char *buf, size_t n);

/* ---- writer (fixtures, tests, fuzz seeds) ---- */
typedef struct {
    const char *name;
    hs_dtype_t dtype;
    int rank;
    int64_t shape[ST_MAX_RANK];
    const void *data;             /* n_elem * dtype size bytes */
} st_write_tensor_t;

/* Write a safetensors file with the tensors in the order given, data packed in that
 * order, header padded with spaces to a multiple of 8. `meta` is a NULL-terminated
 * key, value, key, value, ... list or NULL. */
int st_write(const char *path, const st_write_tensor_t *t, int n_t, const char *const *meta, char *err,
             size_t n);

#endif
