/*
 * moe: the sparse MoE FFN of the CUDA backend (backend.h `moe`, model-spec §2.7) with no
 * host round trip, so that a step containing it can be captured in a CUDA graph.
 *
 *   router logits (cuBLAS, fp32) -> top-k + per-expert counts -> prefix sums and a tile
 *   schedule (one block) -> a slot per (token, k) sorted by expert -> ONE grouped GEMM for
 *   gate_up of every expert with SwiGLU in its epilogue -> ONE grouped GEMM for down ->
 *   per token, the fixed-order weighted sum of its top-k rows + sigmoid-gated shared expert.
 *
 * Every grid is sized by host-known upper bounds (T * top_k rows, E groups); blocks with
 * no tile exit. The shared expert is one more group of all T tokens inside the same two
 * grouped launches when its intermediate size equals the routed one (every Qwen3.5 /
 * Qwen3-Next MoE), two launches of its own otherwise. Results are bitwise reproducible:
 * the order of rows inside an expert's group depends on integer atomics, but each output
 * row of a GEMM is computed independently of its position, and each token sums its top-k
 * rows in rank order (no float atomics).
 *
 * Host code in C calling convention; the caller owns the cuBLAS handle and the stream.
 */
#ifndef HS_CUDA_MOE_H
#define HS_CUDA_MOE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct moe_ctx moe_ctx_t;

/* One MoE layer's weights (device pointers, bf16, row-major). */
typedef struct {
    const void *router;            /* [E][H] */
    const void *const *gate_up;    /* host array [E] of device [2I][H] (gate rows first) */
    const void *const *down;       /* host array [E] of device [H][I] */
    const void *key;               /* the layer's identity for the device pointer-table cache */
    const void *shared_gate_up;    /* [2Is][H] or NULL (no shared expert) */
    const void *shared_down;       /* [H][Is] */
    const void *shared_gate;       /* [H] or NULL: shared weight 1 */
    int E, top_k, norm_topk, I, Is, H;
} moe_layer_t;

/* Tile paths of the grouped GEMMs (rows x cols of a block tile); AUTO picks by tokens per
 * expert; HOST is the old path (ids to the host, a cuBLAS pair per expert), kept for
 * benchmarks: it synchronises the stream and cannot be captured. */
enum {
    MOE_PATH_AUTO = 0,
    MOE_PATH_HOST = 1,
    MOE_PATH_SMALL = 2,     /* 16 x 64 tiles, 4 warps */
    MOE_PATH_MEDIUM = 3,    /* 64 x 128, 4 warps */
    MOE_PATH_LARGE = 4,     /* 128 x 128, 8 warps, k step 32, 4 stages */
    MOE_PATH_LARGE_K64 = 5, /* 128 x 128, 8 warps, k step 64, 3 stages */
    MOE_PATH_WIDE = 6       /* 128 x 256, 8 warps (warp tile 64 x 64), 3 stages */
};

/* blas: a cublasHandle_t already bound to stream. NULL on failure (message to stderr). */
moe_ctx_t *moe_ctx_create(void *blas, void *stream);
void moe_ctx_destroy(moe_ctx_t *m);

/* Shapes this module serves: E <= 1024, 1 <= top_k <= min(E, 32), I % 64 == 0, Is % 64 == 0,
 * H % 128 == 0. */
int moe_supported(int E, int top_k, int I, int Is, int H);

/* Device workspace bytes moe_forward needs for T tokens of layer L (any path). */
size_t moe_workspace_bytes(const moe_layer_t *L, int T);

/* out[T][H] bf16 = MoE(x[T][H] bf16). logits: optional device fp32 [T][E] router logits
 * (NULL: computed from L->router). ws: device workspace of ws_bytes >=
 * moe_workspace_bytes(L, T), or NULL: the context's own buffer, grown (cudaFree +
 * cudaMalloc) on the first call of a larger T. Enqueued on the context's stream; nothing
 * waits for it except MOE_PATH_HOST. The first call of a layer uploads its pointer table
 * (synchronous: make it before any graph capture; a later call with changed pointers
 * rewrites the same table in place). A recorded graph stays valid as long as ws does.
 * Returns HS_OK, HS_ERR_UNSUPPORTED (shapes), HS_ERR_INVALID (ws too small) or
 * HS_ERR_STATE (a CUDA call failed). */
int moe_forward(moe_ctx_t *m, const moe_layer_t *L, const void *x, const float *logits, int T, void *out, int path,
                void *ws, size_t ws_bytes);

/* Debug/bench: the last call's per-expert token counts (device -> host, synchronous). */
int moe_last_counts(moe_ctx_t *m, int32_t *cnt, int E);

#ifdef __cplusplus
}
#endif

#endif
