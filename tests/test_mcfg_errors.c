/*
 * Config validation: every bad-config case of issue 2 gets one error that names the
 * file and the field ("<file>: <field>: <why>"), never a crash; and the accepted
 * variants (rope fields in rope_parameters / rope_scaling / top level, layer_types vs
 * full_attention_interval) parse to the same thing. The last tests run the binary
 * (HYSERVE_BIN) on a bad file: exit status 2 and one line on stderr.
 *
 * Each case starts from a small valid config (base_text / base_wrapper below), edits
 * it with jansson, and parses it as "bad.json".
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mcfg.h"

/* A valid dense text-only Qwen3.5 config, 8 layers, top-level rope fields. */
static const char *base_text =
    "{\"model_type\": \"qwen3_5_text\", \"hidden_size\": 64, \"num_hidden_layers\": 8,"
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 32,"
    " \"linear_num_key_heads\": 2, \"linear_num_value_heads\": 4, \"linear_key_head_dim\": 16,"
    " \"linear_value_head_dim\": 16, \"linear_conv_kernel_dim\": 4, \"vocab_size\": 512,"
    " \"intermediate_size\": 128, \"rope_theta\": 10000000.0, \"partial_rotary_factor\": 0.25,"
    " \"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-6, \"eos_token_id\": 1}";

/* A valid MoE wrapper (qwen3_5_moe): fields under text_config. */
static const char *base_moe =
    "{\"model_type\": \"qwen3_5_moe\", \"text_config\": {\"hidden_size\": 64, \"num_hidden_layers\": 4,"
    " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 32,"
    " \"linear_num_key_heads\": 2, \"linear_num_value_heads\": 4, \"linear_key_head_dim\": 16,"
    " \"linear_value_head_dim\": 16, \"linear_conv_kernel_dim\": 4, \"vocab_size\": 512,"
    " \"num_experts\": 8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32,"
    " \"shared_expert_intermediate_size\": 32,"
    " \"rope_parameters\": {\"rope_theta\": 10000000.0, \"partial_rotary_factor\": 0.25}}}";

static json_t *load(const char *text) {
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    assert_non_null(j);
    return j;
}

/* The object holding the LLM fields. */
static json_t *fields(json_t *root) {
    json_t *tc = json_object_get(root, "text_config");
    return json_is_object(tc) ? tc : root;
}

static int parse(json_t *root, mcfg_t *c, char *err, size_t n) {
    char *s = json_dumps(root, 0);
    assert_non_null(s);
    int rc = mcfg_parse(s, "bad.json", c, err, n);
    free(s);
    return rc;
}

/* root must fail with an error starting "bad.json: " that mentions `field`. Frees root. */
static void expect_err(json_t *root, const char *field) {
    mcfg_t c;
    char err[512] = "";
    int rc = parse(root, &c, err, sizeof err);
    json_decref(root);
    if (rc != HS_ERR_FORMAT) fail_msg("expected an error naming '%s', got rc %d (%s)", field, rc, err);
    if (strncmp(err, "bad.json: ", 10) || !strstr(err, field))
        fail_msg("error '%s' does not name the file and '%s'", err, field);
}

static void expect_ok(json_t *root, mcfg_t *c) {
    char err[512] = "";
    int rc = parse(root, c, err, sizeof err);
    json_decref(root);
    if (rc != HS_OK) fail_msg("unexpected error: %s", err);
}

static void test_bases_parse(void **state) {
    (void)state;
    mcfg_t c;
    expect_ok(load(base_text), &c);
    assert_int_equal(c.n_attn, 2);
    expect_ok(load(base_moe), &c);
    assert_true(c.wrapped && c.is_moe);
}

static void test_unknown_model_type(void **state) {
    (void)state;
    json_t *j = load(base_text);
    json_object_set_new(j, "model_type", json_string("llama"));
    expect_err(j, "model_type");
    j = load(base_text);
    json_object_del(j, "model_type");
    expect_err(j, "model_type");
    j = load(base_text);
    json_object_set_new(j, "model_type", json_integer(3));
    expect_err(j, "model_type");
}

static const char *const required_dense[] = {
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
    "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim",
    "linear_conv_kernel_dim", "vocab_size", "intermediate_size", "rope_theta", NULL,
};
static const char *const required_moe[] = {"num_experts", "num_experts_per_tok", "moe_intermediate_size", NULL};

static void test_missing_required(void **state) {
    (void)state;
    for (const char *const *f = required_dense; *f; f++) {
        json_t *j = load(base_text);
        assert_int_equal(json_object_del(j, *f), 0);
        expect_err(j, *f);
    }
    for (const char *const *f = required_moe; *f; f++) {
        json_t *j = load(base_moe);
        assert_int_equal(json_object_del(fields(j), *f), 0);
        expect_err(j, *f);
    }
    /* rope_theta inside rope_parameters of the wrapper */
    json_t *j = load(base_moe);
    json_object_del(json_object_get(fields(j), "rope_parameters"), "rope_theta");
    expect_err(j, "rope_theta");
}

static void test_hv_not_multiple_of_hk(void **state) {
    (void)state;
    json_t *j = load(base_text);
    json_object_set_new(j, "linear_num_key_heads", json_integer(4));
    json_object_set_new(j, "linear_num_value_heads", json_integer(6));
    expect_err(j, "linear_num_value_heads");
    j = load(base_text); /* and the attention analogue: Hkv must divide Hq */
    json_object_set_new(j, "num_key_value_heads", json_integer(3));
    expect_err(j, "num_key_value_heads");
}

static void test_non_positive_sizes(void **state) {
    (void)state;
    static const char *const sizes[] = {
        "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim",
        "linear_conv_kernel_dim", "vocab_size", "intermediate_size", "max_position_embeddings", NULL,
    };
    for (const char *const *f = sizes; *f; f++) {
        for (int v = -1; v <= 0; v++) {
            json_t *j = load(base_text);
            json_object_set_new(j, *f, json_integer(v));
            expect_err(j, *f);
        }
    }
    static const char *const moe_sizes[] = {"num_experts", "num_experts_per_tok", "moe_intermediate_size", NULL};
    for (const char *const *f = moe_sizes; *f; f++) {
        json_t *j = load(base_moe);
        json_object_set_new(fields(j), *f, json_integer(0));
        expect_err(j, *f);
    }
    json_t *j = load(base_text);
    json_object_set_new(j, "rope_theta", json_real(0.0));
    expect_err(j, "rope_theta");
    j = load(base_text);
    json_object_set_new(j, "rms_norm_eps", json_real(-1e-6));
    expect_err(j, "rms_norm_eps");
    j = load(base_text);
    json_object_set_new(j, "linear_conv_kernel_dim", json_integer(1)); /* needs a window of >= 1 past token */
    expect_err(j, "linear_conv_kernel_dim");
    j = load(base_moe); /* top-k above the expert count */
    json_object_set_new(fields(j), "num_experts_per_tok", json_integer(9));
    expect_err(j, "num_experts_per_tok");
}

static json_t *layer_types(int n, int attn_every) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_string((i + 1) % attn_every == 0 ? "full_attention" : "linear_attention"));
    return a;
}

static void test_layer_types_length(void **state) {
    (void)state;
    json_t *j = load(base_text);
    json_object_set_new(j, "layer_types", layer_types(7, 4));
    expect_err(j, "layer_types");
    j = load(base_text);
    json_object_set_new(j, "layer_types", layer_types(9, 4));
    expect_err(j, "layer_types");
    j = load(base_text);
    json_t *lt = layer_types(8, 4);
    json_array_set_new(lt, 2, json_string("sliding_attention"));
    json_object_set_new(j, "layer_types", lt);
    expect_err(j, "layer_types[2]");
}

static void test_wrong_json_types(void **state) {
    (void)state;
    json_t *j = load(base_text);
    json_object_set_new(j, "hidden_size", json_string("64"));
    expect_err(j, "hidden_size");
    j = load(base_text);
    json_object_set_new(j, "num_hidden_layers", json_real(8.5));
    expect_err(j, "num_hidden_layers");
    j = load(base_text);
    json_object_set_new(j, "vocab_size", json_true());
    expect_err(j, "vocab_size");
    j = load(base_text);
    json_object_set_new(j, "layer_types", json_string("linear_attention"));
    expect_err(j, "layer_types");
    j = load(base_text);
    json_object_set_new(j, "layer_types", json_pack("[iiiiiiii]", 0, 0, 0, 1, 0, 0, 0, 1));
    expect_err(j, "layer_types[0]");
    j = load(base_text);
    json_object_set_new(j, "rope_theta", json_string("1e7"));
    expect_err(j, "rope_theta");
    j = load(base_text);
    json_object_set_new(j, "partial_rotary_factor", json_string("0.25"));
    expect_err(j, "partial_rotary_factor");
    j = load(base_text);
    json_object_set_new(j, "attn_output_gate", json_string("yes"));
    expect_err(j, "attn_output_gate");
    j = load(base_text);
    json_object_set_new(j, "tie_word_embeddings", json_integer(1));
    expect_err(j, "tie_word_embeddings");
    j = load(base_text);
    json_object_set_new(j, "eos_token_id", json_string("</s>"));
    expect_err(j, "eos_token_id");
    j = load(base_text);
    json_object_set_new(j, "eos_token_id", json_pack("[is]", 1, "x"));
    expect_err(j, "eos_token_id[1]");
    j = load(base_text);
    json_object_set_new(j, "eos_token_id", json_integer(512)); /* outside the vocabulary */
    expect_err(j, "eos_token_id");
    j = load(base_text);
    json_object_set_new(j, "dtype", json_string("int8"));
    expect_err(j, "dtype");
    j = load(base_text);
    json_object_set_new(j, "mamba_ssm_dtype", json_integer(32));
    expect_err(j, "mamba_ssm_dtype");
    j = load(base_moe);
    json_object_set_new(fields(j), "mlp_only_layers", json_pack("[i]", 4)); /* not a layer */
    expect_err(j, "mlp_only_layers[0]");
    j = load(base_moe);
    json_object_set_new(j, "text_config", json_pack("[i]", 1));
    expect_err(j, "text_config");
    /* not JSON at all, and JSON that is not an object */
    mcfg_t c;
    char err[256];
    assert_int_equal(mcfg_parse("{\"model_type\": ", "bad.json", &c, err, sizeof err), HS_ERR_FORMAT);
    assert_non_null(strstr(err, "bad.json: line 1"));
    assert_int_equal(mcfg_parse("[1, 2]", "bad.json", &c, err, sizeof err), HS_ERR_FORMAT);
    assert_non_null(strstr(err, "bad.json: "));
    /* duplicate keys are rejected, not silently resolved */
    assert_int_equal(mcfg_parse("{\"model_type\": \"qwen3_next\", \"model_type\": \"x\"}", "bad.json", &c, err,
                                sizeof err),
                     HS_ERR_FORMAT);
    assert_non_null(strstr(err, "model_type"));
}

static void test_wrapper_needs_text_config(void **state) {
    (void)state;
    static const char *const wrappers[] = {"qwen3_5", "qwen3_5_moe", NULL};
    for (const char *const *w = wrappers; *w; w++) {
        json_t *j = load(base_text); /* flat fields, but a wrapper model_type */
        json_object_set_new(j, "model_type", json_string(*w));
        expect_err(j, "text_config");
    }
    /* the text-only types and qwen3_next are flat: no text_config needed */
    mcfg_t c;
    json_t *j = load(base_text);
    json_object_set_new(j, "model_type", json_string("qwen3_next"));
    json_object_set_new(j, "num_experts", json_integer(8));
    json_object_set_new(j, "num_experts_per_tok", json_integer(2));
    json_object_set_new(j, "moe_intermediate_size", json_integer(32));
    expect_ok(j, &c);
    assert_int_equal(c.family, MCFG_QWEN3_NEXT);
    assert_false(c.wrapped);
    assert_int_equal(c.n_mtp_layers, 1); /* Qwen3-Next: no key, one MTP layer */
}

/* rope_theta / partial_rotary_factor: rope_parameters (HF v5), rope_scaling, or the top level. */
static void test_rope_sources(void **state) {
    (void)state;
    mcfg_t top, par, sc;
    expect_ok(load(base_text), &top);
    json_t *j = load(base_text);
    json_object_del(j, "rope_theta");
    json_object_del(j, "partial_rotary_factor");
    json_object_set_new(j, "rope_parameters", json_pack("{s:s, s:f, s:f}", "rope_type", "default", "rope_theta",
                                                        1e7, "partial_rotary_factor", 0.25));
    expect_ok(j, &par);
    j = load(base_text);
    json_object_del(j, "rope_theta");
    json_object_del(j, "partial_rotary_factor");
    json_object_set_new(j, "rope_scaling", json_pack("{s:f, s:f}", "rope_theta", 1e7, "partial_rotary_factor", 0.25));
    expect_ok(j, &sc);
    assert_true(top.rope_theta == 1e7 && par.rope_theta == 1e7 && sc.rope_theta == 1e7);
    assert_int_equal(top.rope_dim, 8); /* int(32 * 0.25) */
    assert_int_equal(par.rope_dim, 8);
    assert_int_equal(sc.rope_dim, 8);
    /* rope_parameters wins over a stale top-level value */
    j = load(base_text);
    json_object_set_new(j, "rope_parameters", json_pack("{s:f}", "rope_theta", 5e6));
    expect_ok(j, &par);
    assert_true(par.rope_theta == 5e6);
    /* partial_rotary_factor absent: full rotary */
    j = load(base_text);
    json_object_del(j, "partial_rotary_factor");
    expect_ok(j, &par);
    assert_int_equal(par.rope_dim, 32);
    /* a factor that leaves an odd number of rotary dims */
    j = load(base_text);
    json_object_set_new(j, "partial_rotary_factor", json_real(0.03125)); /* 32 * 1/32 = 1 */
    expect_err(j, "partial_rotary_factor");
}

/* layer_types when present (any pattern), else full_attention_interval (default 4). */
static void test_layer_dispatch(void **state) {
    (void)state;
    mcfg_t c;
    expect_ok(load(base_text), &c); /* no layer_types, no interval: 4 */
    assert_int_equal(c.full_attention_interval, 4);
    for (int l = 0; l < 8; l++) assert_int_equal(mcfg_is_attn(&c, l), l == 3 || l == 7);

    json_t *j = load(base_text);
    json_object_set_new(j, "full_attention_interval", json_integer(2));
    expect_ok(j, &c);
    assert_int_equal(c.n_attn, 4);
    for (int l = 0; l < 8; l++) assert_int_equal(mcfg_is_attn(&c, l), l % 2 == 1);

    /* layer_types wins over the interval, and any pattern is obeyed */
    j = load(base_text);
    json_object_set_new(j, "full_attention_interval", json_integer(4));
    json_t *lt = layer_types(8, 100); /* all linear ... */
    json_array_set_new(lt, 0, json_string("full_attention")); /* ... but layer 0 */
    json_array_set_new(lt, 5, json_string("full_attention"));
    json_object_set_new(j, "layer_types", lt);
    expect_ok(j, &c);
    assert_int_equal(c.full_attention_interval, 0);
    assert_int_equal(c.n_attn, 2);
    assert_int_equal(c.n_gdn, 6);
    for (int l = 0; l < 8; l++) assert_int_equal(mcfg_is_attn(&c, l), l == 0 || l == 5);
    assert_int_equal(mcfg_kind_index(&c, 5), 1);
    assert_int_equal(mcfg_kind_index(&c, 6), 4);

    j = load(base_text);
    json_object_set_new(j, "full_attention_interval", json_integer(0));
    expect_err(j, "full_attention_interval");
}

static void test_load_paths(void **state) {
    (void)state;
    mcfg_t c;
    char err[1024];
    assert_int_equal(mcfg_load("/nonexistent/dir/config.json", &c, err, sizeof err), HS_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "/nonexistent/dir/config.json"));
    char dir[] = "/tmp/hs_mcfg_XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_not_equal(mcfg_load(dir, &c, err, sizeof err), HS_OK); /* no config.json inside */
    assert_non_null(strstr(err, "config.json"));
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(base_text, f);
    fclose(f);
    assert_int_equal(mcfg_load(dir, &c, err, sizeof err), HS_OK); /* a model directory */
    assert_int_equal(mcfg_load(path, &c, err, sizeof err), HS_OK); /* a config.json */
    unlink(path);
    rmdir(dir);
}

/* ---- through the CLI ---------------------------------------------------------- */

/* Run `$HYSERVE_BIN plan --model <model> --gpu h100-80g`; return the exit status and
 * stderr's text in buf. */
static int run_plan(const char *model, char *buf, size_t n) {
    const char *bin = getenv("HYSERVE_BIN");
    if (!bin) bin = "build/hyserve";
    char errfile[] = "/tmp/hs_plan_err_XXXXXX";
    int fd = mkstemp(errfile);
    assert_true(fd >= 0);
    close(fd);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' plan --model '%s' --gpu h100-80g >/dev/null 2>'%s'", bin, model, errfile);
    int st = system(cmd);
    FILE *f = fopen(errfile, "r");
    assert_non_null(f);
    size_t got = fread(buf, 1, n - 1, f);
    buf[got] = 0;
    fclose(f);
    unlink(errfile);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void check_cli_bad(const char *text, const char *field) {
    char path[] = "/tmp/hs_bad_XXXXXX.json";
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char out[4096];
    int st = run_plan(path, out, sizeof out);
    unlink(path);
    if (st != 2) fail_msg("exit status %d, stderr: %s", st, out);
    char *nl = strchr(out, '\n');
    assert_non_null(nl);
    assert_int_equal(nl[1], 0);                 /* exactly one line */
    assert_non_null(strstr(out, path));         /* names the file */
    assert_non_null(strstr(out, field));        /* and the field */
}

static void test_cli_bad_config(void **state) {
    (void)state;
    check_cli_bad("{\"model_type\": \"llama\"}", "model_type");
    json_t *j = load(base_text);
    json_object_del(j, "vocab_size");
    char *s = json_dumps(j, 0);
    check_cli_bad(s, "vocab_size");
    free(s);
    json_decref(j);
    check_cli_bad("{\"model_type\": \"qwen3_5\", ", "line");
    char out[4096];
    assert_int_equal(run_plan("no-such-model", out, sizeof out), 2);
    assert_non_null(strstr(out, "qwen3.5-397b-a17b")); /* lists the shipped names */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bases_parse),
        cmocka_unit_test(test_unknown_model_type),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_hv_not_multiple_of_hk),
        cmocka_unit_test(test_non_positive_sizes),
        cmocka_unit_test(test_layer_types_length),
        cmocka_unit_test(test_wrong_json_types),
        cmocka_unit_test(test_wrapper_needs_text_config),
        cmocka_unit_test(test_rope_sources),
        cmocka_unit_test(test_layer_dispatch),
        cmocka_unit_test(test_load_paths),
        cmocka_unit_test(test_cli_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
