/* Unit tests for mcfg: every shipped config parses to the values of model-spec §1.2. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "mcfg.h"

typedef struct {
    const char *name;
    int H, L, n_gdn, n_attn, Hq, Hkv, Hv, inter, E, topk, moe_i, shared_i, vocab, tied;
    double theta;
} expect_t;

/* model-spec.md §1.2, one row per shipped model. */
static const expect_t table[] = {
    {"qwen3-next-80b-a3b", 2048, 48, 36, 12, 16, 2, 32, 5120, 512, 10, 512, 512, 151936, 0, 5e6},
    {"qwen3.5-397b-a17b", 4096, 60, 45, 15, 32, 2, 64, 0, 512, 10, 1024, 1024, 248320, 0, 1e7},
    {"qwen3.5-122b-a10b", 3072, 48, 36, 12, 32, 2, 64, 0, 256, 8, 1024, 1024, 248320, 0, 1e7},
    {"qwen3.5-35b-a3b", 2048, 40, 30, 10, 16, 2, 32, 0, 256, 8, 512, 512, 248320, 0, 1e7},
    {"qwen3.5-27b", 5120, 64, 48, 16, 24, 4, 48, 17408, 0, 0, 0, 0, 248320, 0, 1e7},
    {"qwen3.5-9b", 4096, 32, 24, 8, 16, 4, 32, 12288, 0, 0, 0, 0, 248320, 0, 1e7},
    {"qwen3.5-4b", 2560, 32, 24, 8, 16, 4, 32, 9216, 0, 0, 0, 0, 248320, 1, 1e7},
    {"qwen3.5-2b", 2048, 24, 18, 6, 8, 2, 16, 6144, 0, 0, 0, 0, 248320, 1, 1e7},
    {"qwen3.5-0.8b", 1024, 24, 18, 6, 8, 2, 16, 3584, 0, 0, 0, 0, 248320, 1, 1e7},
};

static void test_shipped(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const expect_t *e = &table[i];
        mcfg_t c;
        char err[512] = "";
        int rc = mcfg_load(e->name, &c, err, sizeof err);
        if (rc != HS_OK) fail_msg("%s: %s", e->name, err);
        assert_int_equal(c.hidden, e->H);
        assert_int_equal(c.n_layers, e->L);
        assert_int_equal(c.n_gdn, e->n_gdn);
        assert_int_equal(c.n_attn, e->n_attn);
        assert_int_equal(c.n_heads, e->Hq);
        assert_int_equal(c.n_kv_heads, e->Hkv);
        assert_int_equal(c.lin_v_heads, e->Hv);
        assert_int_equal(c.lin_k_heads, 16);
        assert_int_equal(c.lin_k_dim, 128);
        assert_int_equal(c.lin_v_dim, 128);
        assert_int_equal(c.conv_kernel, 4);
        assert_int_equal(c.head_dim, 256);
        assert_int_equal(c.rope_dim, 64);
        assert_int_equal(c.intermediate, e->inter);
        assert_int_equal(c.n_experts, e->E);
        assert_int_equal(c.n_experts_per_tok, e->topk);
        assert_int_equal(c.moe_intermediate, e->moe_i);
        assert_int_equal(c.shared_intermediate, e->shared_i);
        assert_int_equal(c.vocab, e->vocab);
        assert_int_equal(c.tie_embeddings, e->tied);
        assert_true(c.rope_theta == e->theta);
        assert_int_equal(c.n_mtp_layers, 1);
        /* layers 3, 7, 11, ... are full attention */
        for (int l = 0; l < c.n_layers; l++) assert_int_equal(mcfg_is_attn(&c, l), (l + 1) % 4 == 0);
        assert_int_equal(mcfg_kind_index(&c, 7), 1);
        assert_int_equal(mcfg_kind_index(&c, 6), 5);
    }
}

static void test_name_case_insensitive(void **state) {
    (void)state;
    mcfg_t c;
    char err[256];
    assert_int_equal(mcfg_load("Qwen3.5-397B-A17B", &c, err, sizeof err), HS_OK);
    assert_int_equal(c.family, MCFG_QWEN3_5_MOE);
    assert_int_equal(mcfg_load("qwen9", &c, err, sizeof err), HS_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "qwen3.5-9b")); /* the message lists what exists */
}

/* The Qwen3.5 multimodal wrapper: LLM fields under text_config, eos at both levels. */
static void test_wrapper(void **state) {
    (void)state;
    const char *js =
        "{\"model_type\": \"qwen3_5\", \"eos_token_id\": 248046, \"tie_word_embeddings\": true,"
        " \"vision_config\": {\"depth\": 2},"
        " \"text_config\": {\"model_type\": \"qwen3_5_text\", \"hidden_size\": 64, \"num_hidden_layers\": 4,"
        "  \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 32,"
        "  \"linear_num_key_heads\": 2, \"linear_num_value_heads\": 4, \"linear_key_head_dim\": 16,"
        "  \"linear_value_head_dim\": 16, \"linear_conv_kernel_dim\": 4, \"vocab_size\": 512,"
        "  \"intermediate_size\": 128, \"eos_token_id\": 248044 - 0,"
        "  \"rope_parameters\": {\"rope_theta\": 10000000.0, \"partial_rotary_factor\": 0.25},"
        "  \"layer_types\": [\"linear_attention\", \"linear_attention\", \"linear_attention\", \"full_attention\"]}}";
    mcfg_t c;
    char err[256];
    /* "248044 - 0" is not JSON: the parser names the position. */
    assert_int_equal(mcfg_parse(js, "w.json", &c, err, sizeof err), HS_ERR_FORMAT);
    assert_non_null(strstr(err, "w.json: line"));
    char fixed[2048];
    snprintf(fixed, sizeof fixed, "%s", js);
    char *p = strstr(fixed, "248044 - 0");
    memcpy(p, "       1  ", 10); /* eos 1 (inside the 512 vocabulary) */
    assert_int_equal(mcfg_parse(fixed, "w.json", &c, err, sizeof err), HS_OK);
    assert_true(c.wrapped);
    assert_int_equal(c.family, MCFG_QWEN3_5);
    assert_int_equal(c.n_eos, 1);
    assert_int_equal(c.eos_ids[0], 1);
    assert_int_equal(c.rope_dim, 8);
    assert_true(c.tie_embeddings); /* from the top level */
    assert_int_equal(c.ssm_dtype, HS_BF16);
    assert_false(c.ssm_dtype_given);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped),
        cmocka_unit_test(test_name_case_insensitive),
        cmocka_unit_test(test_wrapper),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
