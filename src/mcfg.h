/*
 * mcfg: the model's hyperparameters, read from a Hugging Face config.json.
 *
 * Accepts model_type qwen3_next (flat), qwen3_5 and qwen3_5_moe (multimodal
 * wrappers: the LLM fields are under "text_config") and their text-only forms
 * (qwen3_5_text, qwen3_5_moe_text). Layer kinds come from "layer_types" when
 * present, else from full_attention_interval (layer i is full attention iff
 * (i+1) % interval == 0). RoPE fields come from "rope_parameters" or the top level.
 * Spec: shared docs model-spec.md §1.
 *
 * Shape glossary used across hyserve:
 *   H  hidden size            L  decoder layers (MTP not included)
 *   Hq query heads            Hkv KV heads            D  attention head dim (256)
 *   Hk GDN q/k heads          Hv GDN v (= state) heads; r = Hv / Hk
 *   dk, dv GDN head dims      Kc conv kernel width (4)
 *   V  vocabulary             T  tokens in a step     S  sequences in a step
 */
#ifndef HS_MCFG_H
#define HS_MCFG_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

#define MCFG_MAX_LAYERS 256
#define MCFG_MAX_EOS 8

typedef enum {
    MCFG_QWEN3_NEXT = 0, /* flat config, grouped in_proj_qkvz / in_proj_ba, MoE */
    MCFG_QWEN3_5,        /* dense Qwen3.5 (wrapper or text-only) */
    MCFG_QWEN3_5_MOE,    /* MoE Qwen3.5 (wrapper or text-only) */
} mcfg_family_t;

typedef enum { MCFG_LAYER_GDN = 0, MCFG_LAYER_ATTN = 1 } mcfg_layer_t;

typedef struct {
    char model_type[32];    /* as written in the file (outer type for wrappers) */
    mcfg_family_t family;
    bool wrapped;           /* fields came from "text_config" */

    int hidden;             /* H */
    int n_layers;           /* L */
    unsigned char layer_type[MCFG_MAX_LAYERS]; /* mcfg_layer_t per layer */
    int n_attn, n_gdn;      /* counts of each kind; n_attn + n_gdn == L */
    int full_attention_interval; /* 4 in every release; 0 when layer_types was given */

    /* gated full attention */
    int n_heads;            /* Hq */
    int n_kv_heads;         /* Hkv */
    int head_dim;           /* D */
    double partial_rotary_factor; /* 0.25 */
    int rope_dim;           /* int(D * partial_rotary_factor) = 64 */
    double rope_theta;      /* 5e6 (Qwen3-Next), 1e7 (Qwen3.5) */
    int max_position_embeddings;
    bool attn_output_gate;  /* sigmoid gate interleaved in q_proj (true for all) */

    /* Gated DeltaNet */
    int lin_k_heads;        /* Hk */
    int lin_v_heads;        /* Hv, multiple of Hk */
    int lin_k_dim;          /* dk */
    int lin_v_dim;          /* dv */
    int conv_kernel;        /* Kc */

    /* FFN */
    bool is_moe;            /* MoE family (every layer MoE unless mlp_only_layers) */
    int intermediate;       /* dense SwiGLU width (0 when absent) */
    int n_experts;          /* routed experts (0 for dense) */
    int n_experts_per_tok;  /* top-k */
    int moe_intermediate;   /* width of one routed expert */
    int shared_intermediate;/* width of the shared expert (0: none) */
    bool norm_topk_prob;    /* renormalise top-k (always true for released MoE) */
    int decoder_sparse_step;/* 1 in every release */
    unsigned char mlp_only[MCFG_MAX_LAYERS]; /* 1: dense MLP layer inside a MoE model */

    int vocab;              /* V */
    bool tie_embeddings;
    double rms_eps;
    hs_dtype_t dtype;       /* activation/weight dtype of the checkpoint (bf16) */
    hs_dtype_t ssm_dtype;   /* mamba_ssm_dtype when given, else bf16 */
    bool ssm_dtype_given;   /* the config named mamba_ssm_dtype */
    int n_mtp_layers;       /* mtp_num_hidden_layers / num_nextn_predict_layers (default 1) */

    int bos_id;             /* -1 when absent */
    int eos_ids[MCFG_MAX_EOS];
    int n_eos;
} mcfg_t;

/* Load a model config. `spec` is a model directory (reads spec/config.json), a
 * path to a config.json, or the name of a shipped config in configs/ (e.g.
 * "qwen3.5-397b-a17b", case-insensitive). On error writes "<file>: <field>: <why>"
 * into err and returns HS_ERR_*. */
int mcfg_load(const char *spec, mcfg_t *out, char *err, size_t n);

/* Parse config JSON text. `path` only names the file in messages. */
int mcfg_parse(const char *json_text, const char *path, mcfg_t *out, char *err, size_t n);

/* Directory holding the shipped configs (HYSERVE_CONFIG_DIR, else <source>/configs). */
const char *mcfg_config_dir(void);

/* Names of shipped configs, NULL-terminated static list. */
const char *const *mcfg_shipped_names(void);

/* Derived GDN sizes. */
static inline int mcfg_key_dim(const mcfg_t *c) { return c->lin_k_heads * c->lin_k_dim; }
static inline int mcfg_value_dim(const mcfg_t *c) { return c->lin_v_heads * c->lin_v_dim; }
static inline int mcfg_conv_dim(const mcfg_t *c) { return 2 * mcfg_key_dim(c) + mcfg_value_dim(c); }
static inline bool mcfg_is_attn(const mcfg_t *c, int layer) { return c->layer_type[layer] == MCFG_LAYER_ATTN; }
/* Layer i uses MoE iff the model is MoE, i is not mlp-only and (i+1) % decoder_sparse_step == 0. */
bool mcfg_layer_is_moe(const mcfg_t *c, int layer);
/* Index of layer among layers of its own kind (0..n_attn-1 or 0..n_gdn-1). */
int mcfg_kind_index(const mcfg_t *c, int layer);

/* One-line human description, e.g. "qwen3_5_moe H=4096 L=60 (45 GDN/15 attn) ...". */
void mcfg_describe(const mcfg_t *c, char *buf, size_t n);

#endif
