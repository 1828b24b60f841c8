/*
 * mcfg: parse a Hugging Face config.json of the Qwen3-Next / Qwen3.5 family into
 * an mcfg_t, and validate it.
 *
 * Layouts accepted (model-spec §1):
 *   qwen3_next                      flat: every field at the top level
 *   qwen3_5, qwen3_5_moe            multimodal wrapper: LLM fields under "text_config"
 *   qwen3_5_text, qwen3_5_moe_text  the text-only form of the same fields
 * A field is looked up in the text object (text_config when present, else the top
 * level); token ids fall back to the top level of a wrapper. RoPE fields come from
 * "rope_parameters" (HF v5), then "rope_scaling", then the top level.
 *
 * Every error names the file and the field: "<path>: <field>: <why>".
 */
#include "mcfg.h"

#include <assert.h>
#include <ctype.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const shipped[] = {
    "qwen3-next-80b-a3b", "qwen3.5-397b-a17b", "qwen3.5-122b-a10b", "qwen3.5-35b-a3b", "qwen3.5-27b",
    "qwen3.5-9b", "qwen3.5-4b", "qwen3.5-2b", "qwen3.5-0.8b", NULL,
};

const char *const *mcfg_shipped_names(void) { return shipped; }

const char *mcfg_config_dir(void) {
    const char *d = getenv("HYSERVE_CONFIG_DIR");
    return d && *d ? d : HYSERVE_SOURCE_DIR "/configs";
}

/* ---- field readers: each returns HS_OK, or writes "<path>: <field>: why" ---- */

typedef struct {
    json_t *text;  /* object holding the LLM fields */
    json_t *top;   /* the file's top-level object */
    const char *path;
    char *err;
    size_t n;
} reader_t;

static json_t *field(const reader_t *r, const char *key) {
    json_t *v = json_object_get(r->text, key);
    return v && !json_is_null(v) ? v : NULL;
}

/* Integer field. required: error when absent; else *out = dflt. Must lie in [lo, hi]. */
static int get_int(const reader_t *r, const char *key, bool required, long long dflt, long long lo, long long hi,
                   int *out) {
    json_t *v = field(r, key);
    if (!v) {
        if (required) return hs_errf(r->err, r->n, HS_ERR_FORMAT, "%s: %s: required field is missing", r->path, key);
        *out = (int)dflt;
        return HS_OK;
    }
    long long x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) && fabs(json_real_value(v)) < 1e15) {
        x = (long long)json_real_value(v);
    } else {
        return hs_errf(r->err, r->n, HS_ERR_FORMAT, "%s: %s: expected an integer", r->path, key);
    }
    if (x < lo || x > hi)
        return hs_errf(r->err, r->n, HS_ERR_FORMAT, "%s: %s: %lld is out of range [%lld, %lld]", r->path, key, x, lo,
                       hi);
    *out = (int)x;
    return HS_OK;
}

static int get_num(const reader_t *r, json_t *v, const char *key, double lo, double hi, double *out) {
    if (!json_is_number(v)) return hs_errf(r->err, r->n, HS_ERR_FORMAT, "%s: %s: expected a number", r->path, key);
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return hs_errf(r->err, r->n, HS_ERR_FORMAT, "%s: %s: %g is out of range [%g, %g]", r->path, key, x, lo, hi);
    *out = x;
    return HS_OK;
}

static int get_bool(const reader_t *r, const char *key, bool dflt, bool *out) {
    json_t *v = field(r, key);
    if (!v) {
        *out = dflt;
        return HS_OK;
    }
    if (!json_is_boolean(v)) return hs_errf(r->err, r->n, HS_ERR_FORMAT, "%s: %s: expected true or false", r->path, key);
    *out = json_is_true(v);
    return HS_OK;
}

/* RoPE field: rope_parameters.key, rope_scaling.key, then top-level key. */
static json_t *rope_field(const reader_t *r, const char *key) {
    const char *holders[] = {"rope_parameters", "rope_scaling"};
    for (int i = 0; i < 2; i++) {
        json_t *o = field(r, holders[i]);
        json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
        if (v && !json_is_null(v)) return v;
    }
    return field(r, key);
}

/* Token id(s): the text object first, then the wrapper's top level. */
static int get_ids(const reader_t *r, const char *key, int *ids, int max, int *count) {
    json_t *v = field(r, key);
    if (!v && r->top != r->text) v = json_object_get(r->top, key);
    *count = 0;
    if (!v || json_is_null(v)) return HS_OK;
    if (json_is_integer(v)) {
        ids[(*count)++] = (int)json_integer_value(v);
        return HS_OK;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > INT_MAX)
                return hs_errf(r->err, r->n, HS_ERR_FORMAT, "%s: %s[%zu]: expected a token id", r->path, key, i);
            if (*count < max) ids[(*count)++] = (int)json_integer_value(e);
        }
        return HS_OK;
    }
    return hs_errf(r->err, r->n, HS_ERR_FORMAT, "%s: %s: expected a token id or a list of them", r->path, key);
}

#define TRY(x)                      \
    do {                            \
        int rc_ = (x);              \
        if (rc_ != HS_OK) return rc_; \
    } while (0)

static int parse_obj(json_t *root, const char *path, mcfg_t *c, char *err, size_t n) {
    memset(c, 0, sizeof *c);
    if (!json_is_object(root)) return hs_errf(err, n, HS_ERR_FORMAT, "%s: the top level is not a JSON object", path);
    reader_t r = {.text = root, .top = root, .path = path, .err = err, .n = n};

    json_t *mt = json_object_get(root, "model_type");
    if (!mt || json_is_null(mt))
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: model_type: required field is missing", path);
    if (!json_is_string(mt)) return hs_errf(err, n, HS_ERR_FORMAT, "%s: model_type: expected a string", path);
    const char *type = json_string_value(mt);
    snprintf(c->model_type, sizeof c->model_type, "%s", type);
    if (!strcmp(type, "qwen3_next")) {
        c->family = MCFG_QWEN3_NEXT;
    } else if (!strcmp(type, "qwen3_5") || !strcmp(type, "qwen3_5_text")) {
        c->family = MCFG_QWEN3_5;
    } else if (!strcmp(type, "qwen3_5_moe") || !strcmp(type, "qwen3_5_moe_text")) {
        c->family = MCFG_QWEN3_5_MOE;
    } else {
        return hs_errf(err, n, HS_ERR_FORMAT,
                       "%s: model_type: unknown model type '%s' (supported: qwen3_next, qwen3_5, qwen3_5_moe, "
                       "qwen3_5_text, qwen3_5_moe_text)", path, type);
    }
    json_t *tc = json_object_get(root, "text_config");
    if (tc && !json_is_null(tc)) {
        if (!json_is_object(tc)) return hs_errf(err, n, HS_ERR_FORMAT, "%s: text_config: expected an object", path);
        r.text = tc;
        c->wrapped = true;
    } else if (!strcmp(type, "qwen3_5") || !strcmp(type, "qwen3_5_moe")) {
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: text_config: required for model_type %s", path, type);
    }

    const int BIG = 1 << 24;
    TRY(get_int(&r, "hidden_size", true, 0, 1, BIG, &c->hidden));
    TRY(get_int(&r, "num_hidden_layers", true, 0, 1, MCFG_MAX_LAYERS, &c->n_layers));
    TRY(get_int(&r, "num_attention_heads", true, 0, 1, 4096, &c->n_heads));
    TRY(get_int(&r, "num_key_value_heads", true, 0, 1, 4096, &c->n_kv_heads));
    TRY(get_int(&r, "head_dim", true, 0, 1, 4096, &c->head_dim));
    TRY(get_int(&r, "linear_num_key_heads", true, 0, 1, 4096, &c->lin_k_heads));
    TRY(get_int(&r, "linear_num_value_heads", true, 0, 1, 4096, &c->lin_v_heads));
    TRY(get_int(&r, "linear_key_head_dim", true, 0, 1, 4096, &c->lin_k_dim));
    TRY(get_int(&r, "linear_value_head_dim", true, 0, 1, 4096, &c->lin_v_dim));
    TRY(get_int(&r, "linear_conv_kernel_dim", true, 0, 2, 64, &c->conv_kernel));
    TRY(get_int(&r, "vocab_size", true, 0, 1, 1 << 28, &c->vocab));
    TRY(get_int(&r, "max_position_embeddings", false, 262144, 1, INT_MAX, &c->max_position_embeddings));

    if (c->n_heads % c->n_kv_heads)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: num_key_value_heads: %d does not divide num_attention_heads %d", path,
                       c->n_kv_heads, c->n_heads);
    if (c->lin_v_heads % c->lin_k_heads)
        return hs_errf(err, n, HS_ERR_FORMAT,
                       "%s: linear_num_value_heads: %d is not a multiple of linear_num_key_heads %d", path,
                       c->lin_v_heads, c->lin_k_heads);

    json_t *eps = field(&r, "rms_norm_eps");
    c->rms_eps = 1e-6;
    if (eps) TRY(get_num(&r, eps, "rms_norm_eps", 1e-12, 1.0, &c->rms_eps));

    /* Layer kinds: layer_types when present, else full_attention_interval. */
    json_t *lt = field(&r, "layer_types");
    if (lt) {
        if (!json_is_array(lt)) return hs_errf(err, n, HS_ERR_FORMAT, "%s: layer_types: expected a list", path);
        if ((int)json_array_size(lt) != c->n_layers)
            return hs_errf(err, n, HS_ERR_FORMAT, "%s: layer_types: has %zu entries but num_hidden_layers is %d", path,
                           json_array_size(lt), c->n_layers);
        for (int i = 0; i < c->n_layers; i++) {
            const char *s = json_string_value(json_array_get(lt, (size_t)i));
            if (s && !strcmp(s, "linear_attention")) c->layer_type[i] = MCFG_LAYER_GDN;
            else if (s && !strcmp(s, "full_attention")) c->layer_type[i] = MCFG_LAYER_ATTN;
            else
                return hs_errf(err, n, HS_ERR_FORMAT,
                               "%s: layer_types[%d]: expected \"linear_attention\" or \"full_attention\"", path, i);
        }
    } else {
        TRY(get_int(&r, "full_attention_interval", false, 4, 1, MCFG_MAX_LAYERS, &c->full_attention_interval));
        for (int i = 0; i < c->n_layers; i++)
            c->layer_type[i] = (i + 1) % c->full_attention_interval == 0 ? MCFG_LAYER_ATTN : MCFG_LAYER_GDN;
    }
    for (int i = 0; i < c->n_layers; i++) c->layer_type[i] == MCFG_LAYER_ATTN ? c->n_attn++ : c->n_gdn++;

    /* RoPE */
    json_t *v = rope_field(&r, "rope_theta");
    if (!v) return hs_errf(err, n, HS_ERR_FORMAT, "%s: rope_theta: required field is missing (top level or rope_parameters)", path);
    TRY(get_num(&r, v, "rope_theta", 1.0, 1e12, &c->rope_theta));
    v = rope_field(&r, "partial_rotary_factor");
    c->partial_rotary_factor = 1.0;
    if (v) TRY(get_num(&r, v, "partial_rotary_factor", 1e-6, 1.0, &c->partial_rotary_factor));
    c->rope_dim = (int)(c->head_dim * c->partial_rotary_factor);
    if (c->rope_dim < 2 || c->rope_dim % 2)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: partial_rotary_factor: gives %d rotary dims (need an even number >= 2)",
                       path, c->rope_dim);
    TRY(get_bool(&r, "attn_output_gate", true, &c->attn_output_gate));

    /* FFN */
    c->is_moe = c->family != MCFG_QWEN3_5;
    TRY(get_int(&r, "intermediate_size", !c->is_moe, 0, 1, BIG, &c->intermediate));
    if (c->is_moe) {
        TRY(get_int(&r, "num_experts", true, 0, 1, 1 << 16, &c->n_experts));
        TRY(get_int(&r, "num_experts_per_tok", true, 0, 1, 1 << 16, &c->n_experts_per_tok));
        TRY(get_int(&r, "moe_intermediate_size", true, 0, 1, BIG, &c->moe_intermediate));
        TRY(get_int(&r, "shared_expert_intermediate_size", false, 0, 0, BIG, &c->shared_intermediate));
        if (c->n_experts_per_tok > c->n_experts)
            return hs_errf(err, n, HS_ERR_FORMAT, "%s: num_experts_per_tok: %d exceeds num_experts %d", path,
                           c->n_experts_per_tok, c->n_experts);
        /* Qwen3.5-MoE drops norm_topk_prob and always renormalises. */
        TRY(get_bool(&r, "norm_topk_prob", true, &c->norm_topk_prob));
        TRY(get_int(&r, "decoder_sparse_step", false, 1, 1, MCFG_MAX_LAYERS, &c->decoder_sparse_step));
        json_t *mo = field(&r, "mlp_only_layers");
        if (mo) {
            if (!json_is_array(mo)) return hs_errf(err, n, HS_ERR_FORMAT, "%s: mlp_only_layers: expected a list", path);
            size_t i;
            json_t *e;
            json_array_foreach(mo, i, e) {
                long long x = json_is_integer(e) ? json_integer_value(e) : -1;
                if (x < 0 || x >= c->n_layers)
                    return hs_errf(err, n, HS_ERR_FORMAT, "%s: mlp_only_layers[%zu]: not a layer index", path, i);
                c->mlp_only[x] = 1;
            }
            for (int l = 0; l < c->n_layers; l++)
                if (c->mlp_only[l] && c->intermediate <= 0)
                    return hs_errf(err, n, HS_ERR_FORMAT, "%s: intermediate_size: required by mlp_only_layers", path);
        }
    }
    TRY(get_bool(&r, "tie_word_embeddings", false, &c->tie_embeddings));
    /* A wrapper may keep tie_word_embeddings at the top level only. */
    if (c->wrapped && !field(&r, "tie_word_embeddings")) {
        json_t *t = json_object_get(root, "tie_word_embeddings");
        if (json_is_boolean(t)) c->tie_embeddings = json_is_true(t);
    }

    /* dtypes */
    c->dtype = HS_BF16;
    json_t *dt = field(&r, "dtype");
    if (!dt) dt = field(&r, "torch_dtype");
    if (dt) {
        if (!json_is_string(dt) || hs_dtype_parse(json_string_value(dt), &c->dtype) != HS_OK || c->dtype == HS_F8_E4M3)
            return hs_errf(err, n, HS_ERR_FORMAT, "%s: dtype: expected bfloat16, float16 or float32", path);
    }
    c->ssm_dtype = HS_BF16;
    json_t *sd = field(&r, "mamba_ssm_dtype");
    if (sd) {
        if (!json_is_string(sd) || hs_dtype_parse(json_string_value(sd), &c->ssm_dtype) != HS_OK ||
            (c->ssm_dtype != HS_F32 && c->ssm_dtype != HS_BF16 && c->ssm_dtype != HS_F16))
            return hs_errf(err, n, HS_ERR_FORMAT, "%s: mamba_ssm_dtype: expected float32, bfloat16 or float16", path);
        c->ssm_dtype_given = true;
    }

    /* MTP: Qwen3.5 names it mtp_num_hidden_layers; Qwen3-Next has no key but ships one layer. */
    if (field(&r, "mtp_num_hidden_layers"))
        TRY(get_int(&r, "mtp_num_hidden_layers", false, 1, 0, 16, &c->n_mtp_layers));
    else
        TRY(get_int(&r, "num_nextn_predict_layers", false, 1, 0, 16, &c->n_mtp_layers));

    int nb = 0;
    TRY(get_ids(&r, "bos_token_id", &c->bos_id, 1, &nb));
    if (nb == 0) c->bos_id = -1;
    TRY(get_ids(&r, "eos_token_id", c->eos_ids, MCFG_MAX_EOS, &c->n_eos));
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] >= c->vocab)
            return hs_errf(err, n, HS_ERR_FORMAT, "%s: eos_token_id: %d is outside the vocabulary (%d)", path,
                           c->eos_ids[i], c->vocab);
    return HS_OK;
}

int mcfg_parse(const char *text, const char *path, mcfg_t *out, char *err, size_t n) {
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return hs_errf(err, n, HS_ERR_FORMAT, "%s: line %d column %d: %s", path, je.line, je.column, je.text);
    int rc = parse_obj(root, path, out, err, n);
    json_decref(root);
    return rc;
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

int mcfg_load(const char *spec, mcfg_t *out, char *err, size_t n) {
    char path[4096];
    if (is_dir(spec)) {
        snprintf(path, sizeof path, "%s/config.json", spec);
    } else if (is_file(spec)) {
        snprintf(path, sizeof path, "%s", spec);
    } else {
        /* A shipped name, case-insensitive. */
        char lower[256];
        size_t i = 0;
        for (; spec[i] && i + 1 < sizeof lower; i++) lower[i] = (char)tolower((unsigned char)spec[i]);
        lower[i] = 0;
        const char *hit = NULL;
        for (const char *const *s = shipped; *s; s++)
            if (!strcmp(*s, lower)) hit = *s;
        if (!hit) {
            char names[512] = "";
            for (const char *const *s = shipped; *s; s++) {
                strncat(names, *s, sizeof names - strlen(names) - 1);
                if (s[1]) strncat(names, ", ", sizeof names - strlen(names) - 1);
            }
            return hs_errf(err, n, HS_ERR_NOT_FOUND,
                           "%s: no such model directory, config file or shipped model (shipped: %s)", spec, names);
        }
        snprintf(path, sizeof path, "%s/%s.json", mcfg_config_dir(), hit);
    }
    size_t len;
    char *text = hs_read_file(path, &len, err, n);
    if (!text) return HS_ERR_NOT_FOUND;
    int rc = mcfg_parse(text, path, out, err, n);
    free(text);
    return rc;
}

bool mcfg_layer_is_moe(const mcfg_t *c, int layer) {
    assert(layer >= 0 && layer < c->n_layers);
    return c->is_moe && !c->mlp_only[layer] && (layer + 1) % c->decoder_sparse_step == 0;
}

int mcfg_kind_index(const mcfg_t *c, int layer) {
    assert(layer >= 0 && layer < c->n_layers);
    int k = 0;
    for (int i = 0; i < layer; i++) k += c->layer_type[i] == c->layer_type[layer];
    return k;
}

void mcfg_describe(const mcfg_t *c, char *buf, size_t n) {
    int o = snprintf(buf, n, "%s H=%d L=%d (%d GDN / %d attn) attn %d/%d x %d, GDN %d/%d x %d/%d, ", c->model_type,
                     c->hidden, c->n_layers, c->n_gdn, c->n_attn, c->n_heads, c->n_kv_heads, c->head_dim,
                     c->lin_k_heads, c->lin_v_heads, c->lin_k_dim, c->lin_v_dim);
    if (o < 0 || (size_t)o >= n) return;
    if (c->is_moe)
        snprintf(buf + o, n - (size_t)o, "MoE %d experts top-%d x %d (+shared %d), vocab %d%s", c->n_experts,
                 c->n_experts_per_tok, c->moe_intermediate, c->shared_intermediate, c->vocab,
                 c->tie_embeddings ? ", tied" : "");
    else
        snprintf(buf + o, n - (size_t)o, "dense MLP %d, vocab %d%s", c->intermediate, c->vocab,
                 c->tie_embeddings ? ", tied" : "");
}
