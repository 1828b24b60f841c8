/* Unit tests for util: dtype conversions, number parsing, error buffers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "util.h"

static void test_bf16_roundtrip(void **state) {
    (void)state;
    assert_int_equal(hs_f32_to_bf16(1.0f), 0x3f80);
    assert_true(hs_bf16_to_f32(0x3f80) == 1.0f);
    /* 1 + 2^-8 is exactly half way between two bf16 values: ties to even (1.0). */
    assert_int_equal(hs_f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);
    /* 1 + 3*2^-8 rounds up to 1 + 2^-6. */
    assert_int_equal(hs_f32_to_bf16(1.0f + 3.0f / 256), 0x3f82);
    assert_true(isnan(hs_bf16_to_f32(hs_f32_to_bf16(NAN))));
}

static void test_f16_roundtrip(void **state) {
    (void)state;
    const float vals[] = {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 0.333251953125f};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        assert_true(hs_f16_to_f32(hs_f32_to_f16(vals[i])) == vals[i]);
    assert_int_equal(hs_f32_to_f16(1e6f), 0x7c00); /* overflow to inf */
}

static void test_parse(void **state) {
    (void)state;
    int64_t v;
    assert_int_equal(hs_parse_i64("42", 0, 100, &v), HS_OK);
    assert_int_equal(v, 42);
    assert_int_equal(hs_parse_i64("42x", 0, 100, &v), HS_ERR_INVALID);
    assert_int_equal(hs_parse_i64("101", 0, 100, &v), HS_ERR_INVALID);
    assert_int_equal(hs_parse_i64("", 0, 100, &v), HS_ERR_INVALID);
    double d;
    assert_int_equal(hs_parse_f64("0.5", &d), HS_OK);
    assert_true(d == 0.5);
    assert_int_equal(hs_parse_f64("nan", &d), HS_ERR_INVALID);
}

static void test_dtype(void **state) {
    (void)state;
    hs_dtype_t t;
    assert_int_equal(hs_dtype_parse("bfloat16", &t), HS_OK);
    assert_int_equal(t, HS_BF16);
    assert_int_equal(hs_dtype_size(HS_F8_E4M3), 1);
    assert_int_equal(hs_dtype_parse("int4", &t), HS_ERR_INVALID);
}

static void test_errf(void **state) {
    (void)state;
    char buf[16];
    assert_int_equal(hs_errf(buf, sizeof buf, HS_ERR_FORMAT, "field %s is bad", "hidden_size"), HS_ERR_FORMAT);
    assert_int_equal(strlen(buf), 15); /* truncated, NUL-terminated */
    assert_int_equal(hs_errf(NULL, 0, HS_ERR_IO, "x"), HS_ERR_IO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bf16_roundtrip), cmocka_unit_test(test_f16_roundtrip),
        cmocka_unit_test(test_parse), cmocka_unit_test(test_dtype), cmocka_unit_test(test_errf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
