/*
 * model: the forward pass of a hybrid model (Qwen3-Next, Qwen3.5 dense and MoE)
 * through the backend op table. The model owns the weights on the backend, the
 * step's activation buffers and the page pool's memory; it knows nothing of
 * requests: one call runs one batch (bk_batch_t) and returns the logits of the
 * rows the batch asks for.
 *
 * Per layer (model-spec §2.3), with resid the residual stream [T, H]:
 *     normed = RMSNorm_in(resid)                     (fused with the previous add)
 *     mix    = GatedAttn(normed) or GDN(normed)      (layer_types)
 *     normed = RMSNorm_post(resid += mix)
 *     mix    = MoE(normed) or SwiGLU MLP(normed)
 * then normed = RMSNorm_final(resid += mix), the logit rows are gathered and
 * logits = normed_rows @ lm_head^T (fp32).
 *
 * Activation buffers are allocated once for max_tokens rows; the step loop
 * allocates nothing.
 */
#ifndef HS_MODEL_H
#define HS_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "layout.h"
#include "mcfg.h"
#include "weights.h"

typedef struct model model_t;

typedef struct {
    int max_tokens;        /* T at most per step */
    int max_logits;        /* logit rows at most per step */
} model_config_t;

/* Upload every weight of `w` to the backend (w can be freed afterwards) and
 * allocate the activations. HS_ERR_* with a message naming the parameter on
 * failure. The pool comes next, with model_alloc_pool, once the caller knows how
 * much memory is left. */
int model_create(model_t **out, const wt_model_t *w, backend_t *bk, const model_config_t *mc, char *err, size_t n);
/* Allocate the page pool (n_pages * page_bytes, zeroed) with its layouts: kv and the
 * state map sm (shallow copy: sm's arrays must outlive the model). */
int model_alloc_pool(model_t *m, int64_t n_pages, size_t page_bytes, const kv_layout_t *kv, const statemap_t *sm,
                     char *err, size_t n);
void model_destroy(model_t *m);

/* Run one step: ids[T] (host) are the batch's tokens; the caller has validated them.
 * Returns the logits of the rows b->logit_rows asks for, [n_logits, V] fp32 in backend
 * memory, valid until the next model_forward (read them with bk->download or
 * bk->pick). */
const float *model_forward(model_t *m, const bk_batch_t *b, const int32_t *ids);

/* The pool's memory and layout (for swap copies through the backend). */
const bk_pool_t *model_pool(const model_t *m);
backend_t *model_backend(const model_t *m);

#endif
