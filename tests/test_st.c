/* Unit tests for st: valid files round-trip (single and sharded), every malformed
 * header is refused with a message naming the file and the tensor or field. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "st.h"

static char tmpdir[256];

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/hs_test_st_XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* An image: 8-byte length, header text, `data` zero bytes. Caller frees. */
static uint8_t *image(const char *hdr, uint64_t hl_override, size_t data, size_t *size) {
    size_t hl = strlen(hdr);
    *size = 8 + hl + data;
    uint8_t *b = calloc(1, *size);
    uint64_t v = hl_override ? hl_override : hl;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    memcpy(b + 8, hdr, hl);
    return b;
}

/* Parse `hdr` + data bytes; expect failure with a message containing every `want`. */
static void expect_bad(const char *hdr, uint64_t hl, size_t data, const char *want1, const char *want2) {
    size_t size;
    uint8_t *b = image(hdr, hl, data, &size);
    st_file_t f;
    char err[512] = "";
    int rc = st_parse(b, size, "bad.safetensors", &f, err, sizeof err);
    free(b);
    if (rc == HS_OK) {
        st_file_close(&f);
        fail_msg("accepted: %s", hdr);
    }
    assert_int_equal(rc, HS_ERR_FORMAT);
    if (!strstr(err, "bad.safetensors")) fail_msg("message does not name the file: %s", err);
    if (want1 && !strstr(err, want1)) fail_msg("message '%s' lacks '%s'", err, want1);
    if (want2 && !strstr(err, want2)) fail_msg("message '%s' lacks '%s'", err, want2);
}

static void test_roundtrip(void **state) {
    (void)state;
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[4] = {0x3f80, 0x4000, 0x4040, 0x4080};
    int64_t c[1] = {42};
    st_write_tensor_t t[3] = {
        {"a", HS_F32, 2, {2, 3}, a},
        {"b.weight", HS_BF16, 1, {4}, b},
        {"c", HS_I64, 0, {0}, c},
    };
    const char *meta[] = {"format", "pt", "fixture_version", "1", NULL};
    char path[300], err[512] = "";
    snprintf(path, sizeof path, "%s/one.safetensors", tmpdir);
    assert_int_equal(st_write(path, t, 3, meta, err, sizeof err), HS_OK);
    st_file_t f;
    if (st_file_open(path, &f, err, sizeof err) != HS_OK) fail_msg("%s", err);
    assert_int_equal(f.n_tensors, 3);
    assert_int_equal(f.n_meta, 2);
    assert_string_equal(f.meta_keys[1], "fixture_version");
    assert_string_equal(f.meta_vals[1], "1");
    assert_int_equal((8 + f.header_len) % 8, 0);
    assert_string_equal(f.tensors[0].name, "a");
    assert_int_equal(f.tensors[0].rank, 2);
    assert_int_equal(f.tensors[0].shape[1], 3);
    assert_memory_equal(f.tensors[0].data, a, sizeof a);
    assert_int_equal(f.tensors[1].dtype, HS_BF16);
    assert_memory_equal(f.tensors[1].data, b, sizeof b);
    assert_int_equal(f.tensors[2].rank, 0);
    assert_int_equal(f.tensors[2].n_elem, 1);
    assert_false(st_dtype_is_weight(f.tensors[2].dtype));
    assert_true(st_dtype_is_weight(f.tensors[0].dtype));
    st_file_close(&f);

    /* the same through a set (file path and directory) */
    st_set_t s;
    if (st_set_open(path, &s, err, sizeof err) != HS_OK) fail_msg("%s", err);
    assert_int_equal(s.n_tensors, 3);
    const st_tensor_t *x = st_set_find(&s, "b.weight");
    assert_non_null(x);
    assert_int_equal(x->n_elem, 4);
    assert_null(st_set_find(&s, "nope"));
    st_set_close(&s);
    if (st_set_open(tmpdir, &s, err, sizeof err) != HS_OK) fail_msg("%s", err);
    assert_false(s.sharded);
    assert_non_null(st_set_find(&s, "a"));
    st_set_close(&s);
}

static void test_empty_and_flagged(void **state) {
    (void)state;
    size_t size;
    st_file_t f;
    char err[512];
    uint8_t *b = image("{}", 0, 0, &size);
    assert_int_equal(st_parse(b, size, "x", &f, err, sizeof err), HS_OK);
    assert_int_equal(f.n_tensors, 0);
    st_file_close(&f);
    free(b);
    b = image("{\"i\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
              "\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[3,3]},"
              "\"__metadata__\":{\"k\":\"v\"}}   ", 0, 3, &size);
    if (st_parse(b, size, "x", &f, err, sizeof err) != HS_OK) fail_msg("%s", err);
    assert_int_equal(f.n_tensors, 2);
    assert_int_equal(f.tensors[0].dtype, HS_U8);
    assert_int_equal(f.tensors[1].n_elem, 0);
    st_file_close(&f);
    free(b);
}

#define T1(dt, shape, off) "{\"w\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" off "}}"

static void test_header_length(void **state) {
    (void)state;
    st_file_t f;
    char err[256];
    uint8_t small[5] = {0};
    assert_int_equal(st_parse(small, 5, "bad.safetensors", &f, err, sizeof err), HS_ERR_FORMAT);
    assert_non_null(strstr(err, "too small"));
    expect_bad("{}", 1, 0, "header length 1", "too small");
    expect_bad("{}", 1000, 0, "header length 1000", "exceeds the file");
    expect_bad("{}", 200000000ull, 0, "header length 200000000", "limit");
    expect_bad("{}", UINT64_MAX, 0, "header length", NULL);
}

static void test_header_json(void **state) {
    (void)state;
    expect_bad("{\"w\": [1,2", 0, 0, "header", "not valid JSON");
    expect_bad("[1, 2, 3]", 0, 0, "header", "'{'");
    expect_bad("{\"w\":1} junk", 0, 0, "header", "JSON");
    expect_bad("{\"a\":{},\"a\":{}}", 0, 0, "header", "JSON"); /* duplicate key */
    expect_bad("{\"\xff\xfe\":{}}", 0, 0, "header", "JSON");   /* invalid UTF-8 */
    expect_bad("{\"w\":5}", 0, 0, "w", "not an object");
    expect_bad("{\"__metadata__\":{\"k\":3}}", 0, 0, "__metadata__.k", "not a string");
    expect_bad("{\"__metadata__\":[1]}", 0, 0, "__metadata__", "not an object");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 0, 4, "w", "unknown field");
}

static void test_dtype_shape(void **state) {
    (void)state;
    expect_bad(T1("Q4_K", "[2]", "[0,2]"), 0, 2, "w", "unknown dtype 'Q4_K'");
    expect_bad(T1("F8_E5M2", "[2]", "[0,2]"), 0, 2, "w", "unknown dtype");
    expect_bad("{\"w\":{\"shape\":[2],\"data_offsets\":[0,2]}}", 0, 2, "w", "dtype missing");
    expect_bad(T1("F32", "[-1]", "[0,4]"), 0, 4, "w", "shape[0]");
    expect_bad(T1("F32", "[1.5]", "[0,4]"), 0, 4, "w", "shape[0]");
    expect_bad(T1("F32", "3", "[0,4]"), 0, 4, "w", "shape missing");
    expect_bad(T1("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]"), 0, 4, "w", "rank 9");
    expect_bad(T1("F32", "[4611686018427387904, 4]", "[0,4]"), 0, 4, "w", "overflows");
    expect_bad(T1("F32", "[9223372036854775807, 9223372036854775807]", "[0,4]"), 0, 4, "w", "overflows");
    expect_bad(T1("F32", "[4611686018427387904]", "[0,4]"), 0, 4, "w", "byte size overflows");
    expect_bad(T1("F32", "[3]", "[0,8]"), 0, 8, "w", "needs 12");
    expect_bad(T1("BF16", "[2, 2]", "[0,4]"), 0, 8, "w", "needs 8");
}

static void test_offsets(void **state) {
    (void)state;
    expect_bad(T1("F32", "[2]", "[0,8]"), 0, 4, "w", "past the data section");
    expect_bad(T1("F32", "[2]", "[8,0]"), 0, 8, "w", "begin 8 > end 0");
    expect_bad(T1("F32", "[2]", "[-8,0]"), 0, 8, "w", "data_offsets");
    expect_bad(T1("F32", "[2]", "[0]"), 0, 8, "w", "data_offsets");
    expect_bad(T1("F32", "[2]", "[0,\"8\"]"), 0, 8, "w", "data_offsets");
    expect_bad(T1("F32", "[1]", "[18446744073709551612, 18446744073709551616]"), 0, 8, "header", NULL);
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               0, 12, "overlap", "[4, 12]");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
               0, 16, "overlap", NULL);
    /* a name longer than the limit */
    char hdr[3000], name[1100];
    memset(name, 'n', 1050);
    name[1050] = 0;
    snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", name);
    expect_bad(hdr, 0, 4, "tensor name of 1050 bytes", NULL);
}

/* ---- sharded ---- */

static void write_shards(const char *dir, const char *index_json) {
    char p[400], err[256];
    float v[4] = {1, 2, 3, 4};
    st_write_tensor_t a[2] = {{"x.a", HS_F32, 1, {2}, v}, {"x.b", HS_F32, 1, {2}, v + 2}};
    st_write_tensor_t b[1] = {{"y.c", HS_F32, 2, {2, 2}, v}};
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    assert_int_equal(st_write(p, a, 2, NULL, err, sizeof err), HS_OK);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    assert_int_equal(st_write(p, b, 1, NULL, err, sizeof err), HS_OK);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(index_json, f);
    fclose(f);
}

#define IDX(a, b, c) \
    "{\"metadata\":{\"total_size\":32},\"weight_map\":{\"x.a\":\"" a "\",\"x.b\":\"" b "\",\"y.c\":\"" c "\"}}"
#define S1 "model-00001-of-00002.safetensors"
#define S2 "model-00002-of-00002.safetensors"

static void test_sharded(void **state) {
    (void)state;
    char dir[300], err[512] = "";
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
    write_shards(dir, IDX(S1, S1, S2));
    st_set_t s;
    if (st_set_open(dir, &s, err, sizeof err) != HS_OK) fail_msg("%s", err);
    assert_true(s.sharded);
    assert_int_equal(s.n_files, 2);
    assert_int_equal(s.n_tensors, 3);
    const st_tensor_t *t = st_set_find(&s, "y.c");
    assert_non_null(t);
    assert_non_null(strstr(st_set_file_path(&s, t), S2));
    assert_true(((const float *)t->data)[3] == 4.0f);
    assert_int_equal(s.total_bytes, 32);
    st_set_close(&s);
}

static void expect_bad_set(const char *sub, const char *index, const char *want1, const char *want2) {
    char dir[300], err[512] = "";
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, sub);
    write_shards(dir, index);
    st_set_t s;
    int rc = st_set_open(dir, &s, err, sizeof err);
    if (rc == HS_OK) {
        st_set_close(&s);
        fail_msg("accepted index %s", index);
    }
    if (want1 && !strstr(err, want1)) fail_msg("message '%s' lacks '%s'", err, want1);
    if (want2 && !strstr(err, want2)) fail_msg("message '%s' lacks '%s'", err, want2);
}

static void test_sharded_errors(void **state) {
    (void)state;
    expect_bad_set("missing_shard", IDX(S1, S1, "model-00003-of-00002.safetensors"), "model-00003-of-00002.safetensors",
                   "No such file");
    expect_bad_set("wrong_shard", IDX(S1, S2, S2), "x.b", "index names shard " S2);
    expect_bad_set("traversal", IDX(S1, S1, "../etc/passwd"), "y.c", "bad shard file name");
    expect_bad_set("no_map", "{\"metadata\":{}}", "weight_map", NULL);
    expect_bad_set("not_json", "{\"weight_map\": ", "model.safetensors.index.json", "not valid JSON");
    expect_bad_set("extra_name",
                   "{\"weight_map\":{\"x.a\":\"" S1 "\",\"x.b\":\"" S1 "\",\"y.c\":\"" S2 "\",\"y.d\":\"" S2 "\"}}",
                   "y.d", "not found");
    /* a corrupt shard: the error names the shard file */
    char dir[300], p[400], err[512];
    snprintf(dir, sizeof dir, "%s/corrupt", tmpdir);
    write_shards(dir, IDX(S1, S1, S2));
    snprintf(p, sizeof p, "%s/" S2, dir);
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    fputc(0xff, f); /* header length becomes huge */
    fclose(f);
    st_set_t s;
    assert_int_equal(st_set_open(dir, &s, err, sizeof err), HS_ERR_FORMAT);
    assert_non_null(strstr(err, S2));
    assert_non_null(strstr(err, "header length"));
    /* empty directory */
    snprintf(dir, sizeof dir, "%s/empty", tmpdir);
    mkdir(dir, 0755);
    assert_int_equal(st_set_open(dir, &s, err, sizeof err), HS_ERR_NOT_FOUND);
    assert_int_equal(st_set_open("/nonexistent/x.safetensors", &s, err, sizeof err), HS_ERR_NOT_FOUND);
}

/* The fuzz seeds (fuzz/seeds/st, first byte = mode: even raw image, odd header JSON
 * wrapped with a 256-byte data section) are all valid files. */
static void test_fuzz_seeds(void **state) {
    (void)state;
    const char *names[] = {"raw_two_tensors.safetensors", "raw_fp8_scale.safetensors", "raw_empty.safetensors",
                           "raw_conv3d.safetensors", "json_two_tensors.json", "json_fp8_scale.json",
                           "json_empty.json", "json_conv3d.json"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        char p[300], err[512];
        snprintf(p, sizeof p, "fuzz/seeds/st/%s", names[k]);
        size_t len;
        char *b = hs_read_file(p, &len, err, sizeof err);
        if (!b) fail_msg("%s", err);
        size_t size = len - 1;
        uint8_t *img = calloc(1, size + 8 + 256);
        if (b[0] & 1) {
            for (int i = 0; i < 8; i++) img[i] = (uint8_t)((uint64_t)size >> (8 * i));
            memcpy(img + 8, b + 1, size);
            size += 8 + 256;
        } else memcpy(img, b + 1, size);
        st_file_t f;
        if (st_parse(img, size, p, &f, err, sizeof err) != HS_OK) fail_msg("%s", err);
        st_file_close(&f);
        free(img);
        free(b);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),     cmocka_unit_test(test_empty_and_flagged),
        cmocka_unit_test(test_header_length), cmocka_unit_test(test_header_json),
        cmocka_unit_test(test_dtype_shape),   cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_sharded),       cmocka_unit_test(test_sharded_errors),
        cmocka_unit_test(test_fuzz_seeds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
