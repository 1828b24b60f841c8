/*
 * weights: a checkpoint's tensors mapped onto the model's parameters.
 *
 * wt_load() opens the checkpoint (st_set_t), finds every parameter the config
 * (mcfg_t) implies under the family's names (model-spec §6), checks its shape and
 * dtype, and presents it in the model-facing layout as a bk_host_tensor_t that the
 * model hands to backend->weight_load. Most entries point straight into the mmap;
 * the loader owns a buffer where it had to reorder, stack or convert:
 *
 *   | parameter (model-facing)       | Qwen3-Next (flat `model.`)                 | Qwen3.5 (`model.language_model.`)   |
 *   |--------------------------------|--------------------------------------------|-------------------------------------|
 *   | gdn.qkv [conv_dim, H] [q|k|v]  | rows of in_proj_qkvz, de-interleaved (copy)| in_proj_qkv (view)                  |
 *   | gdn.z   [Hv*dv, H]             | rows of in_proj_qkvz (copy)                | in_proj_z (view)                    |
 *   | gdn.b, gdn.a [Hv, H]           | rows of in_proj_ba (copy)                  | in_proj_b, in_proj_a (view)         |
 *   | ffn gate_up [2I, H] gate first | gate_proj ; up_proj stacked (copy)         | same                                |
 *   | expert e gate_up [2I, H]       | experts.{e}.gate_proj ; up_proj (copy)     | experts.gate_up_proj[e] (view)      |
 *   | expert e down [H, I]           | experts.{e}.down_proj (view)               | experts.down_proj[e] (view)         |
 *   | lm_head [V, H]                 | lm_head.weight, else embed_tokens (tied)   | same                                |
 *
 * Either MoE expert layout is accepted in every family (checked by presence of
 * experts.0.gate_proj.weight). Qwen3.5 also accepts the `language_model.model.`
 * re-export prefix and plain `model.`. Vision tensors (`model.visual.*`) are unused.
 * MTP tensors (`mtp.*`) are mapped into wt_model_t.mtp when mtp.fc.weight exists.
 *
 * FP8 (F8_E4M3) weights need a block scale tensor `<name>_scale_inv` (or
 * `<name>.weight_scale_inv`), [ceil(rows/128), ceil(cols/128)] F32 or BF16; the
 * entry's scale_inv then points at F32 scales (converted when stored as BF16). A
 * reorder/stack of FP8 rows keeps FP8 when every moved row range is 128-aligned and
 * dequantises to BF16 otherwise.
 *
 * Dummy weights (wt_load_dummy): the same struct with data == NULL everywhere;
 * wt_fetch() generates a tensor's values on demand (seeded, in parallel threads,
 * deterministic for any thread count). ALWAYS pass entries through wt_fetch()
 * before weight_load: for real checkpoints it returns the entry unchanged.
 *
 * Shape glossary: mcfg.h. Every entry is [rows, cols] row-major; vectors have rows 1.
 * Views point into the read-only mmap: never write through them, and do not assume
 * more than byte alignment (safetensors offsets are not guaranteed aligned; HF's
 * writer happens to align them). Everything stays valid until wt_free.
 */
#ifndef HS_WEIGHTS_H
#define HS_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "mcfg.h"
#include "st.h"

/* One decoder layer. Entries of the other mixer kind / FFN kind are zeroed (data NULL, rows 0). */
typedef struct {
    bk_host_tensor_t in_norm;        /* [1, H] RMSNorm (1+w) */
    bk_host_tensor_t post_norm;      /* [1, H] RMSNorm (1+w) */

    /* gated full attention (layer_type ATTN) */
    bk_host_tensor_t q_proj;         /* [Hq*2D, H] per head [q (D) | gate (D)] */
    bk_host_tensor_t k_proj;         /* [Hkv*D, H] */
    bk_host_tensor_t v_proj;         /* [Hkv*D, H] */
    bk_host_tensor_t o_proj;         /* [H, Hq*D] */
    bk_host_tensor_t q_norm;         /* [1, D] (1+w) */
    bk_host_tensor_t k_norm;         /* [1, D] (1+w) */

    /* Gated DeltaNet (layer_type GDN) */
    bk_host_tensor_t gdn_qkv;        /* [conv_dim, H] rows [q (Hk*dk) | k (Hk*dk) | v (Hv*dv)], heads contiguous */
    bk_host_tensor_t gdn_z;          /* [Hv*dv, H] */
    bk_host_tensor_t gdn_b;          /* [Hv, H] */
    bk_host_tensor_t gdn_a;          /* [Hv, H] */
    bk_host_tensor_t gdn_conv;       /* [conv_dim, Kc] channels [q|k|v] */
    bk_host_tensor_t gdn_A_log;      /* [1, Hv] (usually F32) */
    bk_host_tensor_t gdn_dt_bias;    /* [1, Hv] */
    bk_host_tensor_t gdn_norm;       /* [1, dv] plain w (not 1+w), shared by all heads */
    bk_host_tensor_t gdn_out;        /* [H, Hv*dv] */

    /* dense SwiGLU FFN (is_moe false) */
    bk_host_tensor_t gate_up;        /* [2I, H] gate rows first, then up */
    bk_host_tensor_t down;           /* [H, I] */

    /* sparse MoE FFN (is_moe true) */
    bool is_moe;
    int n_experts;                   /* E */
    bk_host_tensor_t router;         /* [E, H] mlp.gate */
    bk_host_tensor_t *experts_gate_up; /* [E] each [2I, H], gate rows first (owned array) */
    bk_host_tensor_t *experts_down;  /* [E] each [H, I] (owned array) */
    bk_host_tensor_t shared_gate_up; /* [2Is, H]; rows 0 when the model has no shared expert */
    bk_host_tensor_t shared_down;    /* [H, Is] */
    bk_host_tensor_t shared_gate;    /* [1, H] sigmoid gate of the shared expert */
} wt_layer_t;

/* The MTP module (model-spec §5): kept for later, not used by the forward pass yet. */
typedef struct {
    bk_host_tensor_t fc;             /* [H, 2H] on concat[embed, hidden] */
    bk_host_tensor_t pre_fc_norm_embedding; /* [1, H] (1+w) */
    bk_host_tensor_t pre_fc_norm_hidden;    /* [1, H] (1+w) */
    bk_host_tensor_t norm;           /* [1, H] (1+w) */
    wt_layer_t layer;                /* one full-attention layer with the model's FFN kind */
} wt_mtp_t;

/* What each parameter came from (for `hyserve inspect`). */
typedef struct {
    char *param;                     /* "layers.3.self_attn.q_proj" */
    char *source;                    /* checkpoint tensor name(s), " + " joined; "(dummy)" */
    const char *note;                /* "view", "de-interleaved from grouped qkvz", ... */
    const bk_host_tensor_t *t;       /* the entry inside the model struct */
    int kind;                        /* dummy init kind (internal) */
    uint64_t seed;                   /* dummy seed (internal) */
} wt_map_t;

typedef enum { WT_LOAD_AUTO = 0, WT_LOAD_DUMMY } wt_load_format_t;

typedef struct {
    bool touch;                      /* read every used page after mapping (progress on a tty, timing log) */
    bool quiet;                      /* no info logs (tests) */
    uint64_t seed;                   /* dummy seed (0: default 1234) */
    int n_threads;                   /* dummy generation threads, <= 0: all cores */
} wt_opts_t;

typedef struct wt_model {
    mcfg_t cfg;                      /* copy of the config the model was built for */
    bk_host_tensor_t embed;          /* [V, H] */
    bk_host_tensor_t final_norm;     /* [1, H] (1+w) */
    bk_host_tensor_t lm_head;        /* [V, H]; same data as embed when tied */
    bool tied;                       /* lm_head is embed_tokens */
    wt_layer_t *layers;              /* [L] */
    int n_layers;
    wt_mtp_t *mtp;                   /* [n_mtp] or NULL */
    int n_mtp;

    bool dummy;                      /* data pointers are NULL; use wt_fetch */
    st_set_t st;                     /* the checkpoint (zeroed for dummy) */
    const char *prefix;              /* resolved name prefix, e.g. "model.language_model." */
    wt_map_t *map;                   /* [n_map] parameter -> source records */
    int n_map, cap_map;
    int *used;                       /* [st.n_tensors] of st.sorted: 0 unused, else 1 + index in map of the
                                        first parameter that consumed the tensor */
    uint64_t bytes_params;           /* sum of presented parameter bytes (tied counted once) */

    /* internals: owned buffers, dummy scratch, fetch index */
    void **owned;
    int n_owned, cap_owned;
    void *scratch;
    size_t scratch_bytes;
    uint16_t *pool;                  /* dummy: [1 << 24] bf16 normal-ish values, std 0.02 */
    const wt_map_t **by_ptr;         /* [n_map] sorted by t (wt_fetch lookup) */
    bk_host_tensor_t fetched;        /* what wt_fetch returned last (dummy) */
    wt_opts_t opts;
} wt_model_t;

/* Load `path` (checkpoint directory, .safetensors file or index .json) for config c.
 * On error: "<tensor>: <what>, expected <x>, got <y>" in err, *m left empty. */
int wt_load(const char *path, const mcfg_t *c, const wt_opts_t *opts, wt_model_t *m, char *err, size_t n);

/* Dummy weights for config c: no files. Values are generated by wt_fetch. */
int wt_load_dummy(const mcfg_t *c, const wt_opts_t *opts, wt_model_t *m, char *err, size_t n);

/* Host data of entry t (an entry inside m) ready for backend->weight_load. Real
 * weights: returns t. Dummy: fills a scratch tensor owned by m (valid until the next
 * wt_fetch call or wt_free) and returns it. Can't fail (aborts on out-of-memory). */
const bk_host_tensor_t *wt_fetch(wt_model_t *m, const bk_host_tensor_t *t);

/* Generate every dummy tensor once through wt_fetch (timing / benchmarks); returns
 * the bytes generated. For real weights: reads every parameter byte (page-in). */
uint64_t wt_touch_all(wt_model_t *m);

void wt_free(wt_model_t *m); /* tolerates a zeroed struct */

/* "auto"/"safetensors" or "dummy" (HS_ERR_INVALID otherwise). */
int wt_load_format_parse(const char *s, wt_load_format_t *out);

/* Map record of a checkpoint tensor name, or NULL (unused or not a source). */
const wt_map_t *wt_find_source(const wt_model_t *m, const char *tensor);

/* Bytes of a host tensor (fp8 counts 1 byte per element, scales not included). */
static inline uint64_t wt_bytes(const bk_host_tensor_t *t) {
    return (uint64_t)t->rows * (uint64_t)t->cols * hs_dtype_size(t->dtype);
}

/* Why a checkpoint tensor is unused: "vision (ignored)", "mtp (not loaded)", "unused". */
const char *wt_unused_reason(const char *tensor);

#endif
