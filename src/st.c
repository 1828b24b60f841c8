/*
 * st: safetensors reader and writer. Layout and validation rules: st.h.
 *
 * Parsing is two passes over the header JSON (jansson, duplicate keys rejected,
 * UTF-8 checked by jansson): the first validates every entry and fills the tensor
 * table, the second (after sorting by begin offset) rejects overlaps. Nothing reads
 * tensor bytes here; the data pointers are only computed, so parsing a hostile file
 * costs O(header) and never touches memory outside [base, base + size).
 *
 * A set keeps every file mapped for its lifetime and one name-sorted pointer array
 * for lookup (bsearch). Errors name the file, then the tensor or field.
 */
#include "st.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *s;
    hs_dtype_t t;
} st_dtypes[] = {
    {"BF16", HS_BF16}, {"F16", HS_F16}, {"F32", HS_F32}, {"F8_E4M3", HS_F8_E4M3},
    {"I32", HS_I32},   {"I64", HS_I64}, {"U8", HS_U8},   {"F64", HS_F64},
};

int st_dtype_from_str(const char *s, hs_dtype_t *out) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (!strcmp(s, st_dtypes[i].s)) { *out = st_dtypes[i].t; return HS_OK; }
    return HS_ERR_FORMAT;
}

const char *st_dtype_str(hs_dtype_t t) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (st_dtypes[i].t == t) return st_dtypes[i].s;
    return "?";
}

bool st_dtype_is_weight(hs_dtype_t t) { return t == HS_BF16 || t == HS_F16 || t == HS_F32 || t == HS_F8_E4M3; }

const char *st_shape_str(const int64_t *shape, int rank, char *buf, size_t n) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, o < n ? n - o : 0, "[");
    for (int i = 0; i < rank; i++)
        o += (size_t)snprintf(buf + o, o < n ? n - o : 0, "%s%lld", i ? ", " : "", (long long)shape[i]);
    snprintf(buf + (o < n ? o : n - 1), o < n ? n - o : 1, "]");
    return buf;
}

void st_file_close(st_file_t *f) {
    if (!f) return;
    for (int i = 0; i < f->n_tensors; i++) hs_free(f->tensors[i].name);
    hs_free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) { hs_free(f->meta_keys[i]); hs_free(f->meta_vals[i]); }
    hs_free(f->meta_keys);
    hs_free(f->meta_vals);
    if (f->mapped && f->base) munmap((void *)f->base, f->size);
    hs_free(f->path);
    memset(f, 0, sizeof *f);
}

static int cmp_begin(const void *a, const void *b) {
    const st_tensor_t *x = *(const st_tensor_t *const *)a, *y = *(const st_tensor_t *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

/* Validate one header entry into *t. */
static int parse_entry(const char *path, const char *key, json_t *v, uint64_t data_size, const uint8_t *data,
                       st_tensor_t *t, char *err, size_t n) {
    size_t klen = strlen(key);
    if (klen == 0 || klen > ST_MAX_NAME)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: tensor name of %zu bytes (1..%d allowed)", path, klen, ST_MAX_NAME);
    if (!json_is_object(v)) return hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: entry is not an object", path, key);
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
            return hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: unknown field '%.64s'", path, key, k);
    }
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"), *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd)) return hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: dtype missing or not a string", path, key);
    if (st_dtype_from_str(json_string_value(jd), &t->dtype) != HS_OK)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: unknown dtype '%.32s'", path, key, json_string_value(jd));
    if (!json_is_array(js)) return hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: shape missing or not an array", path, key);
    size_t rank = json_array_size(js);
    if (rank > ST_MAX_RANK)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: shape has rank %zu (at most %d)", path, key, rank, ST_MAX_RANK);
    t->rank = (int)rank;
    uint64_t elems = 1;
    for (size_t i = 0; i < rank; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: shape[%zu] is not a non-negative integer", path, key, i);
        t->shape[i] = (int64_t)json_integer_value(d);
        if (__builtin_mul_overflow(elems, (uint64_t)t->shape[i], &elems) || elems > (uint64_t)INT64_MAX)
            return hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: shape element count overflows", path, key);
    }
    t->n_elem = (int64_t)elems;
    if (!json_is_array(jo) || json_array_size(jo) != 2)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: data_offsets missing or not [begin, end]", path, key);
    json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
    if (!json_is_integer(jb) || !json_is_integer(je) || json_integer_value(jb) < 0 || json_integer_value(je) < 0)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: data_offsets are not non-negative integers", path, key);
    t->begin = (uint64_t)json_integer_value(jb);
    t->end = (uint64_t)json_integer_value(je);
    if (t->begin > t->end)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: data_offsets begin %llu > end %llu", path, key,
                       (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > data_size)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: data_offsets end %llu past the data section (%llu bytes)", path,
                       key, (unsigned long long)t->end, (unsigned long long)data_size);
    uint64_t want;
    if (__builtin_mul_overflow(elems, (uint64_t)hs_dtype_size(t->dtype), &want))
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: byte size overflows", path, key);
    if (t->end - t->begin != want) {
        char sb[160];
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: data_offsets span %llu bytes but %s %s needs %llu", path, key,
                       (unsigned long long)(t->end - t->begin), st_dtype_str(t->dtype),
                       st_shape_str(t->shape, t->rank, sb, sizeof sb), (unsigned long long)want);
    }
    t->data = data + t->begin;
    return HS_OK;
}

static int parse_meta(const char *path, json_t *v, st_file_t *f, char *err, size_t n) {
    if (!json_is_object(v)) return hs_errf(err, n, HS_ERR_FORMAT, "%s: __metadata__: not an object", path);
    size_t cnt = json_object_size(v);
    f->meta_keys = hs_calloc(cnt ? cnt : 1, sizeof(char *));
    f->meta_vals = hs_calloc(cnt ? cnt : 1, sizeof(char *));
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) {
        if (!json_is_string(x))
            return hs_errf(err, n, HS_ERR_FORMAT, "%s: __metadata__.%.64s: value is not a string", path, k);
        f->meta_keys[f->n_meta] = hs_strdup(k);
        f->meta_vals[f->n_meta] = hs_strdup(json_string_value(x));
        f->n_meta++;
    }
    return HS_OK;
}

int st_parse(const void *buf, size_t size, const char *name, st_file_t *out, char *err, size_t n) {
    memset(out, 0, sizeof *out);
    const uint8_t *b = buf;
    const char *path = name ? name : "<buffer>";
    if (size < 8) return hs_errf(err, n, HS_ERR_FORMAT, "%s: header length: file of %zu bytes is too small", path, size);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | b[i];
    if (hl < 2) return hs_errf(err, n, HS_ERR_FORMAT, "%s: header length %llu is too small", path, (unsigned long long)hl);
    if (hl > ST_MAX_HEADER)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: header length %llu exceeds the %u-byte limit", path,
                       (unsigned long long)hl, ST_MAX_HEADER);
    if (hl > size - 8)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: header length %llu exceeds the file (%zu bytes)", path,
                       (unsigned long long)hl, size);
    if (b[8] != '{') return hs_errf(err, n, HS_ERR_FORMAT, "%s: header: does not start with '{'", path);
    json_error_t je;
    json_t *root = json_loadb((const char *)b + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: header: not valid JSON: %s (byte %d)", path, je.text, je.position);
    int rc = HS_OK;
    out->path = hs_strdup(path);
    out->base = b;
    out->size = size;
    out->header_len = hl;
    const uint8_t *data = b + 8 + hl;
    uint64_t data_size = size - 8 - hl;
    if (!json_is_object(root)) { rc = hs_errf(err, n, HS_ERR_FORMAT, "%s: header: not a JSON object", path); goto out; }
    size_t cnt = json_object_size(root);
    if (cnt > ST_MAX_TENSORS + 1) {
        rc = hs_errf(err, n, HS_ERR_FORMAT, "%s: header: %zu entries (at most %d tensors)", path, cnt, ST_MAX_TENSORS);
        goto out;
    }
    out->tensors = hs_calloc(cnt ? cnt : 1, sizeof(st_tensor_t));
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if ((rc = parse_meta(path, v, out, err, n)) != HS_OK) goto out;
            continue;
        }
        st_tensor_t *t = &out->tensors[out->n_tensors];
        if ((rc = parse_entry(path, key, v, data_size, data, t, err, n)) != HS_OK) goto out;
        t->name = hs_strdup(key);
        out->n_tensors++;
    }
    if (out->n_tensors > ST_MAX_TENSORS) {
        rc = hs_errf(err, n, HS_ERR_FORMAT, "%s: header: more than %d tensors", path, ST_MAX_TENSORS);
        goto out;
    }
    /* Overlaps: sort non-empty tensors by begin and compare neighbours. */
    if (out->n_tensors > 1) {
        st_tensor_t **by = hs_malloc((size_t)out->n_tensors * sizeof *by);
        int m = 0;
        for (int i = 0; i < out->n_tensors; i++)
            if (out->tensors[i].end > out->tensors[i].begin) by[m++] = &out->tensors[i];
        qsort(by, (size_t)m, sizeof *by, cmp_begin);
        for (int i = 1; i < m && rc == HS_OK; i++)
            if (by[i]->begin < by[i - 1]->end)
                rc = hs_errf(err, n, HS_ERR_FORMAT, "%s: %s: data_offsets [%llu, %llu] overlap tensor %s [%llu, %llu]",
                             path, by[i]->name, (unsigned long long)by[i]->begin, (unsigned long long)by[i]->end,
                             by[i - 1]->name, (unsigned long long)by[i - 1]->begin,
                             (unsigned long long)by[i - 1]->end);
        hs_free(by);
    }
out:
    json_decref(root);
    if (rc != HS_OK) {
        st_file_close(out); /* base is not ours: mapped is false */
    }
    return rc;
}

int st_file_open(const char *path, st_file_t *out, char *err, size_t n) {
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return hs_errf(err, n, errno == ENOENT ? HS_ERR_NOT_FOUND : HS_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return hs_errf(err, n, HS_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: header length: file of %zu bytes is too small", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return hs_errf(err, n, HS_ERR_IO, "%s: mmap: %s", path, strerror(e));
    int rc = st_parse(map, size, path, out, err, n);
    if (rc != HS_OK) {
        munmap(map, size);
        return rc;
    }
    out->mapped = true;
    return HS_OK;
}

/* ---- sets ---- */

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const st_tensor_t *const *)a)->name, (*(const st_tensor_t *const *)b)->name);
}

void st_set_close(st_set_t *s) {
    if (!s) return;
    for (int i = 0; i < s->n_files; i++) st_file_close(&s->files[i]);
    hs_free(s->files);
    hs_free(s->sorted);
    hs_free(s->dir);
    memset(s, 0, sizeof *s);
}

static char *path_join(const char *dir, const char *file) {
    size_t a = strlen(dir), b = strlen(file);
    char *p = hs_malloc(a + b + 2);
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, file, b + 1);
    return p;
}

static int set_add_file(st_set_t *s, const char *path, char *err, size_t n) {
    s->files = hs_realloc(s->files, (size_t)(s->n_files + 1) * sizeof *s->files);
    int rc = st_file_open(path, &s->files[s->n_files], err, n);
    if (rc != HS_OK) return rc;
    st_file_t *f = &s->files[s->n_files];
    for (int i = 0; i < f->n_tensors; i++) f->tensors[i].file = s->n_files;
    s->n_files++;
    return HS_OK;
}

/* Build the sorted index over all files; reject a name present twice. */
static int set_index(st_set_t *s, char *err, size_t n) {
    int64_t total = 0;
    for (int i = 0; i < s->n_files; i++) total += s->files[i].n_tensors;
    if (total > ST_MAX_TENSORS)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: %lld tensors in all shards (at most %d)", s->dir, (long long)total,
                       ST_MAX_TENSORS);
    s->sorted = hs_malloc((size_t)(total ? total : 1) * sizeof *s->sorted);
    s->n_tensors = 0;
    s->total_bytes = 0;
    for (int i = 0; i < s->n_files; i++)
        for (int j = 0; j < s->files[i].n_tensors; j++) {
            s->sorted[s->n_tensors++] = &s->files[i].tensors[j];
            s->total_bytes += st_tensor_bytes(&s->files[i].tensors[j]);
        }
    qsort(s->sorted, (size_t)s->n_tensors, sizeof *s->sorted, cmp_name);
    for (int i = 1; i < s->n_tensors; i++)
        if (!strcmp(s->sorted[i]->name, s->sorted[i - 1]->name))
            return hs_errf(err, n, HS_ERR_FORMAT, "%s: tensor %s is in two files: %s and %s", s->dir, s->sorted[i]->name,
                           s->files[s->sorted[i - 1]->file].path, s->files[s->sorted[i]->file].path);
    return HS_OK;
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int open_index(st_set_t *s, const char *index_path, char *err, size_t n) {
    size_t len;
    char *text = hs_read_file(index_path, &len, err, n);
    if (!text) return HS_ERR_IO;
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    hs_free(text);
    if (!root)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: not valid JSON: %s (line %d)", index_path, je.text, je.line);
    int rc = HS_OK;
    const char **shards = NULL;
    int n_shards = 0;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        rc = hs_errf(err, n, HS_ERR_FORMAT, "%s: weight_map: missing or not an object", index_path);
        goto out;
    }
    const char *key;
    json_t *v;
    json_object_foreach(wm, key, v) {
        if (!json_is_string(v)) {
            rc = hs_errf(err, n, HS_ERR_FORMAT, "%s: weight_map.%s: shard is not a string", index_path, key);
            goto out;
        }
        const char *f = json_string_value(v);
        if (!*f || strchr(f, '/') || !strcmp(f, ".") || !strcmp(f, "..")) {
            rc = hs_errf(err, n, HS_ERR_FORMAT, "%s: weight_map.%s: bad shard file name '%.100s'", index_path, key, f);
            goto out;
        }
        int k = 0;
        while (k < n_shards && strcmp(shards[k], f)) k++;
        if (k == n_shards) {
            if (n_shards >= ST_MAX_SHARDS) {
                rc = hs_errf(err, n, HS_ERR_FORMAT, "%s: more than %d shards", index_path, ST_MAX_SHARDS);
                goto out;
            }
            shards = hs_realloc(shards, (size_t)(n_shards + 1) * sizeof *shards);
            shards[n_shards++] = f;
        }
    }
    for (int k = 0; k < n_shards; k++) {
        char *p = path_join(s->dir, shards[k]);
        char e2[512];
        rc = set_add_file(s, p, e2, sizeof e2);
        hs_free(p);
        if (rc != HS_OK) {
            rc = hs_errf(err, n, rc, "%s names shard %s: %s", index_path, shards[k], e2);
            goto out;
        }
    }
    if ((rc = set_index(s, err, n)) != HS_OK) goto out;
    json_object_foreach(wm, key, v) {
        const char *f = json_string_value(v);
        const st_tensor_t *t = st_set_find(s, key);
        if (!t) {
            rc = hs_errf(err, n, HS_ERR_FORMAT, "%s: tensor %s: not found in its shard %s", index_path, key, f);
            goto out;
        }
        const char *tf = strrchr(s->files[t->file].path, '/');
        tf = tf ? tf + 1 : s->files[t->file].path;
        if (strcmp(tf, f)) {
            rc = hs_errf(err, n, HS_ERR_FORMAT, "%s: tensor %s: index names shard %s but it is in %s", index_path, key, f,
                         tf);
            goto out;
        }
    }
    s->sharded = true;
out:
    hs_free(shards);
    json_decref(root);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int st_set_open(const char *path, st_set_t *out, char *err, size_t n) {
    memset(out, 0, sizeof *out);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return hs_errf(err, n, errno == ENOENT ? HS_ERR_NOT_FOUND : HS_ERR_IO, "%s: %s", path, strerror(errno));
    int rc;
    if (!S_ISDIR(sb.st_mode)) {
        const char *slash = strrchr(path, '/');
        out->dir = slash ? strndup(path, (size_t)(slash - path)) : hs_strdup(".");
        if (!out->dir) abort();
        if (ends_with(path, ".json")) rc = open_index(out, path, err, n);
        else if ((rc = set_add_file(out, path, err, n)) == HS_OK) rc = set_index(out, err, n);
        if (rc != HS_OK) st_set_close(out);
        return rc;
    }
    out->dir = hs_strdup(path);
    char *idx = path_join(path, "model.safetensors.index.json");
    if (access(idx, F_OK) == 0) {
        rc = open_index(out, idx, err, n);
        hs_free(idx);
        if (rc != HS_OK) st_set_close(out);
        return rc;
    }
    hs_free(idx);
    /* No index: every *.safetensors file of the directory, in name order. */
    DIR *d = opendir(path);
    if (!d) {
        rc = hs_errf(err, n, HS_ERR_IO, "%s: %s", path, strerror(errno));
        st_set_close(out);
        return rc;
    }
    char **names = NULL;
    int cnt = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || !ends_with(de->d_name, ".safetensors")) continue;
        names = hs_realloc(names, (size_t)(cnt + 1) * sizeof *names);
        names[cnt++] = hs_strdup(de->d_name);
    }
    closedir(d);
    rc = HS_OK;
    if (cnt == 0) rc = hs_errf(err, n, HS_ERR_NOT_FOUND, "%s: no *.safetensors files and no index", path);
    if (cnt) qsort(names, (size_t)cnt, sizeof *names, cmp_str);
    for (int i = 0; i < cnt && rc == HS_OK; i++) {
        char *p = path_join(path, names[i]);
        rc = set_add_file(out, p, err, n);
        hs_free(p);
    }
    for (int i = 0; i < cnt; i++) hs_free(names[i]);
    hs_free(names);
    if (rc == HS_OK) rc = set_index(out, err, n);
    if (rc != HS_OK) st_set_close(out);
    return rc;
}

const st_tensor_t *st_set_find(const st_set_t *s, const char *name) {
    int lo = 0, hi = s->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(s->sorted[mid]->name, name);
        if (c == 0) return s->sorted[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

int st_set_index(const st_set_t *s, const st_tensor_t *t) {
    int lo = 0, hi = s->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(s->sorted[mid]->name, t->name);
        if (c == 0) return mid;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    assert(!"tensor not in set");
    return -1;
}

const char *st_set_file_path(const st_set_t *s, const st_tensor_t *t) { return s->files[t->file].path; }

/* ---- writer ---- */

int st_write(const char *path, const st_write_tensor_t *t, int n_t, const char *const *meta, char *err, size_t n) {
    json_t *root = json_object();
    if (meta && meta[0]) {
        json_t *m = json_object();
        for (int i = 0; meta[i] && meta[i + 1]; i += 2) json_object_set_new(m, meta[i], json_string(meta[i + 1]));
        json_object_set_new(root, "__metadata__", m);
    }
    uint64_t off = 0;
    for (int i = 0; i < n_t; i++) {
        uint64_t elems = 1;
        json_t *shape = json_array();
        for (int d = 0; d < t[i].rank; d++) {
            elems *= (uint64_t)t[i].shape[d];
            json_array_append_new(shape, json_integer(t[i].shape[d]));
        }
        uint64_t bytes = elems * hs_dtype_size(t[i].dtype);
        json_t *e = json_object();
        json_object_set_new(e, "dtype", json_string(st_dtype_str(t[i].dtype)));
        json_object_set_new(e, "shape", shape);
        json_object_set_new(e, "data_offsets", json_pack("[II]", (json_int_t)off, (json_int_t)(off + bytes)));
        json_object_set_new(root, t[i].name, e);
        off += bytes;
    }
    char *hdr = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!hdr) return hs_errf(err, n, HS_ERR_INVALID, "%s: cannot encode header", path);
    size_t hl = strlen(hdr), pad = (8 - hl % 8) % 8;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(hdr);
        return hs_errf(err, n, HS_ERR_IO, "%s: %s", path, strerror(errno));
    }
    uint8_t lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)((uint64_t)(hl + pad) >> (8 * i));
    bool ok = fwrite(lenb, 1, 8, f) == 8 && fwrite(hdr, 1, hl, f) == hl;
    for (size_t i = 0; i < pad && ok; i++) ok = fputc(' ', f) != EOF;
    free(hdr);
    for (int i = 0; i < n_t && ok; i++) {
        uint64_t elems = 1;
        for (int d = 0; d < t[i].rank; d++) elems *= (uint64_t)t[i].shape[d];
        size_t bytes = (size_t)(elems * hs_dtype_size(t[i].dtype));
        if (bytes) ok = fwrite(t[i].data, 1, bytes, f) == bytes;
    }
    if (fclose(f) != 0) ok = false;
    return ok ? HS_OK : hs_errf(err, n, HS_ERR_IO, "%s: write failed", path);
}
