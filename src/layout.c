/*
 * layout: KV block sizes and the recurrent-state map (see layout.h for the byte
 * layout of a page). kv_layout_init is the one place the KV block size formula
 * lives; the memory planner and the pool both call it.
 */
#include "layout.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

void kv_layout_init(kv_layout_t *kv, const mcfg_t *c, int tp, int block_size, hs_dtype_t kv_dtype,
                    int n_extra_attn) {
    assert(tp >= 1 && block_size >= 1);
    assert(kv_dtype == HS_BF16 || kv_dtype == HS_F8_E4M3 || kv_dtype == HS_F16 || kv_dtype == HS_F32);
    memset(kv, 0, sizeof *kv);
    kv->block_size = block_size;
    kv->n_attn = c->n_attn + n_extra_attn;
    /* KV heads shard over ranks; when there are fewer heads than ranks each rank
     * keeps one (replicated) head, as vLLM and ATOM do. */
    kv->kvh = c->n_kv_heads >= tp ? c->n_kv_heads / tp : 1;
    kv->head_dim = c->head_dim;
    kv->kv_dtype = kv_dtype;
    kv->layer_bytes = 2 * (size_t)block_size * kv->kvh * kv->head_dim * hs_dtype_size(kv_dtype);
    kv->kv_bytes = (size_t)kv->n_attn * kv->layer_bytes;
    if (kv_dtype == HS_F8_E4M3) {
        kv->scale_offset = kv->kv_bytes;
        kv->kv_bytes += (size_t)kv->n_attn * 2 * block_size * kv->kvh * sizeof(float);
    }
}
