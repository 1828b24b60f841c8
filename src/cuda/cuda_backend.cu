/*
 * cuda_backend: the backend.h op table on one NVIDIA GPU (sm_90a), activations bf16.
 *
 * Memory: cudaMalloc'd buffers (zeroed), one stream, one cuBLAS handle and one cuBLASLt
 * (gemm_lt) sharing a fixed workspace. Weights:
 * matrices (rows > 1) are stored bf16 (fp8 E4M3 with 128x128 block scales and fp16
 * are converted on the host at load); vectors (rows == 1: norms, A_log, dt_bias, the
 * shared-expert gate) are stored both fp32 (what the kernels read) and bf16 (what a
 * GEMM reads).
 *
 * Ops and where their work happens:
 *   linear, logits        gemm(): our GEMV (gemv.cu) at a few rows, else cuBLASLt with a
 *                         tuned algorithm (gemm_lt.cu; HS_CUDA_GEMM_LT=<rows> caps it, 0 =
 *                         cuBLAS GemmEx alone); bf16 in,
 *                         fp32 accumulate, bf16 out (logits: fp32)
 *   linear_n              the projections sharing one input in one grouped GEMV launch at a
 *                         few rows, else one gemm() each
 *   embed, rmsnorm (+residual add), add, swiglu, gather_rows     small kernels below
 *   sample                sample.cu (temperature, top-k/p, min-p, counter-based draw)
 *   pick / pick_wait      argmax / max / log-sum-exp per row (k_stats_part over ~4 blocks
 *                         per SM, then k_stats_combine) and sample's draws, queued without
 *                         a wait: stats into d_pick, copied to pinned memory, then the draws
 *                         over their rows' argmax in d_pick; the next embed reads the chosen
 *                         tokens there (prev_rows)
 *   attention             k_qk_prep: q/k norm (1+w), partial rotate-half RoPE, K/V written
 *                         into the paged cache; then decode rows (1 token, history) through
 *                         attn_decode_launch (split-KV, D = 256, tensor cores) and every other
 *                         row through attn_prefill_launch (paged flash attention, causal over
 *                         the cached prefix and the new tokens), sigmoid gate applied in both
 *   gdn                   segments of <= 64 tokens: gdn_decode_launch (fused conv, gates, L2
 *                         norm, recurrence, gated norm; state in place); a step with longer
 *                         segments: its decode rows as before, the other sequences through
 *                         gdn_prefill_prep_launch -> gdn_chunk_launch -> gdn_gated_norm_launch
 *   moe                   moe.cu: router GEMM (fp32), top-k, grouping by expert on the device,
 *                         one grouped gate_up GEMM (SwiGLU fused) and one grouped down GEMM for
 *                         all experts (+ the shared expert), per-token weighted sum; no host sync
 *   page_out / page_in    cudaMemcpy of one page
 * The batch (set_batch) goes to the device in one copy from pinned staging (its event
 * recorded right after the copy, inside a graph too); the host keeps cu_seqlens, n_past
 * and the derived sizes (decode rows, longest segment).
 * Pure decode steps can be recorded and replayed as CUDA graphs (graph_launch /
 * graph_begin / graph_end); HS_CUDA_PROF=1 times every op (the wrappers at the end).
 *
 * Limits (checked at set-up by backend_cuda_check_model): the GDN kernels need
 * dk = dv = 128 and Kc = 4 (every released model); KV in bf16 (fp8 KV is not yet
 * implemented here); head dim <= 1024.
 * Every CUDA call is checked; a failure inside an op is a broken device and aborts
 * with the call and its location (ops cannot return errors, backend.h).
 */
#include <assert.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
#include "cuda_ops.h"
#include "gemm_lt.h"
#include "cuda_sample.h"
#include "gemv.h"
#include "moe.h"
#include "trace.h"

extern "C" {
#include "backend.h"
}

#define CK(call)                                                                                     \
    do {                                                                                             \
        cudaError_t e_ = (call);                                                                     \
        if (e_ != cudaSuccess) {                                                                     \
            fprintf(stderr, "hyserve: cuda: %s:%d: %s: %s\n", __FILE__, __LINE__, #call,            \
                    cudaGetErrorString(e_));                                                         \
            abort();                                                                                 \
        }                                                                                            \
    } while (0)
#define CKB(call)                                                                                    \
    do {                                                                                             \
        cublasStatus_t s_ = (call);                                                                  \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                           \
            fprintf(stderr, "hyserve: cublas: %s:%d: %s: status %d\n", __FILE__, __LINE__, #call,   \
                    (int)s_);                                                                        \
            abort();                                                                                 \
        }                                                                                            \
    } while (0)
/* A launcher of cuda_ops.h: anything but HS_OK is a bug in the caller's shapes. */
#define CKL(call)                                                                                    \
    do {                                                                                             \
        int r_ = (call);                                                                             \
        if (r_ != HS_OK) {                                                                           \
            fprintf(stderr, "hyserve: cuda: %s:%d: %s returned %d\n", __FILE__, __LINE__, #call, r_); \
            abort();                                                                                 \
        }                                                                                            \
    } while (0)
#define LAUNCHED() CK(cudaGetLastError())

struct bk_weight {
    bf16_t *bf;        /* [rows, cols] bf16 */
    float *f32;        /* [cols] fp32, vectors only (rows == 1) */
    int64_t rows, cols;
    bf16_t *block;     /* packed (weights_pack): the shared allocation bf points into */
    int *block_refs;   /* handles still using block (host counter), NULL when not packed */
};

enum { SCR_IDS, SCR_Q, SCR_GATE, SCR_ATTN_WS, SCR_QN, SCR_KN, SCR_V, SCR_G, SCR_BETA, SCR_CHUNK_WS, SCR_O,
       SCR_STATS, SCR_MOE, SCR_LINN, SCR_SMP, SCR_N };

/* Logits rows d_pick holds at first (it grows, dropping the graphs that read it). */
#define CU_PICK_ROWS0 1024

typedef struct {
    void *p;
    size_t bytes;
} scratch_t;

/* The shape of a decode step: steps with equal keys run the same kernels on the same
 * buffers, so one recorded graph serves them all (max_ctx is bucketed in set_batch). */
typedef struct {
    int S, max_blocks, E, max_ctx;
    const void *pool;
} cu_gkey_t;

#define CU_MAX_GRAPHS 64
typedef struct {
    cu_gkey_t key;
    bool used;               /* slot in use */
    cudaGraphExec_t exec;    /* NULL until recorded (the first sightings run eagerly) */
    int seen;                /* steps of this shape so far, while not recorded */
    uint64_t last;           /* LRU clock */
} cu_graph_t;

typedef struct cu_prof cu_prof_t;

typedef struct {
    int device;
    cudaStream_t st;
    cublasHandle_t blas;
    /* the step's batch: device copies and the host facts the launchers need */
    int S, T, max_blocks, E, n_logits;
    int n_decode;         /* leading rows with 1 token and history (the scheduler puts them first) */
    int max_seg;          /* longest segment of the step */
    int max_ctx;          /* longest n_past + segment */
    /* device views into d_stage (one host-to-device copy per step) */
    int32_t *d_tok_start, *d_n_past, *d_pos, *d_bt, *d_sp, *d_logit_rows, *d_seq_lens, *d_ids;
    int32_t *d_prev;          /* bk_batch_t.prev_rows staged (-1 everywhere when NULL) */
    int32_t *d_tok_pre, *h_tok_pre; /* cu_seqlens of the rows after the decode rows, from 0 */
    const int32_t *h_ids_src; /* the batch's host ids pointer (embed with it reads d_ids) */
    char *h_stage, *d_stage;  /* pinned host staging and its device twin */
    size_t stage_cap;
    cudaEvent_t stage_done;   /* the staging copy has left h_stage */
    size_t stage_used;        /* bytes of this step's staging */
    bool stage_in_graph;      /* this step's staging copy is (to be) a node of its graph */
    int32_t *h_tok_start, *h_n_past, *h_seq_lens;
    size_t cap_h;
    /* step graphs */
    bool graphs_on;           /* HS_CUDA_GRAPHS != 0 and not profiling */
    int graph_after;          /* HS_CUDA_GRAPH_AFTER=n: record on the n-th sighting (0: graph_need's rule) */
    bool graphable;           /* this step: pure decode */
    bool capturing, stale;    /* stale: a buffer was replaced during capture */
    cu_gkey_t gkey;           /* this step's shape */
    cu_graph_t graphs[CU_MAX_GRAPHS];
    uint64_t gclock;
    double launch_s;                 /* host time inside cudaGraphLaunch of replays */
    double record_s, t_rec0;         /* host time recording graphs (capture to first launch) */
    long n_first;                    /* first sightings of a shape (run eagerly) */
    double between_s, t_synced;      /* host time from the last step's results to a replay */
    long n_between;
    /* HS_CUDA_SKIP=gdn,attn,qk,norm,swiglu (profiling only: wrong outputs): leave those
     * kernels (GDN decode, attention decode + merge, q/k prep, RMSNorm, SwiGLU) out of pure
     * decode steps, to measure what they cost on the step's critical path */
    bool skip_gdn, skip_attn, skip_norm, skip_swiglu, skip_qk;
    int attn_split; /* HS_CUDA_ATTN_SPLIT=n: decode attention split count forced (0: heuristic) */
    int gdn_cfg;    /* HS_CUDA_GDN_CFG=n: GDN decode's block shape for one-token launches (0: its choice) */
    void *deferred[SCR_N + 1];/* buffers replaced during a capture, freed after it */
    int n_deferred;
    void *blas_ws;
    gemm_lt_t *lt;            /* cuBLASLt with tuned algorithms (shares blas_ws: one stream) */
    int lt_max_m;             /* the most rows sent to lt (HS_CUDA_GEMM_LT=<rows>; 0: off) */
    /* bk->pick: stats [argmax n | max n | lse n] on the device, the argmax part then the
     * chosen tokens (the next embed reads them), pinned host copies, and the event the
     * copies end with */
    char *d_pick;             /* cap_pick rows of 12 bytes */
    int cap_pick;
    char *h_pick;             /* pinned: stats, then the sample outputs */
    size_t cap_h_pick;
    cudaEvent_t pick_done;
    int pick_n, pick_n_smp;
    bool pick_open;
    cu_prof_t *prof;          /* HS_CUDA_PROF=1: per-op timing */
    bk_pool_t pool;
    bool has_pool;
    sm_loc_t *d_ssm_loc;  /* whole state map's ssm granules [n_gdn][Hv][n_slices] */
    const void *ssm_loc_src; /* host array the device copy came from */
    scratch_t scr[SCR_N];
    /* MoE (moe.cu): its context (workspace, per-layer expert pointer tables), created at
     * first use, and a host array of one layer's expert pointers */
    moe_ctx_t *moe;
    const void **moe_ptrs;
    size_t cap_moe_ptrs;
} cu_ctx_t;

static cu_ctx_t *ctx(backend_t *bk) { return (cu_ctx_t *)bk->ctx; }

static void graphs_clear(cu_ctx_t *c);

/* Replace a device buffer that recorded graphs may point to: outside a capture the graphs
 * go first; during one (cudaFree would break it) the old buffer waits until it ends. */
static void retire(cu_ctx_t *c, void *old) {
    if (!old) return;
    if (c->capturing) {
        assert(c->n_deferred < (int)(sizeof c->deferred / sizeof c->deferred[0]));
        c->deferred[c->n_deferred++] = old;
        c->stale = true;
        return;
    }
    graphs_clear(c);
    CK(cudaFree(old));
}

static void *scratch(cu_ctx_t *c, int i, size_t bytes) {
    if (c->scr[i].bytes < bytes) {
        retire(c, c->scr[i].p);
        size_t nb = bytes + bytes / 4 + 256;
        CK(cudaMalloc(&c->scr[i].p, nb));
        c->scr[i].bytes = nb;
    }
    return c->scr[i].p;
}

/* ---- kernels -------------------------------------------------------------------- */

__device__ __forceinline__ float block_sum(float v, float *sh) {
    v = warp_sum(v);
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (l == 0) sh[w] = v;
    __syncthreads();
    float t = l < nw ? sh[l] : 0.f;
    return warp_sum(t);
}

/* The small kernels below are launched as programmatic dependents (launch_pdl, the rules
 * in cuda_common.cuh): pdl_trigger() first, pdl_wait() before the first read of an
 * activation and before the first write. */

/* prev (may be NULL): where prev[t] >= 0 the token is picked[prev[t]], the last pick's. */
__global__ void k_embed(const int32_t *ids, const int32_t *prev, const int32_t *picked, const bf16_t *table, int64_t H,
                        bf16_t *out) {
    const int t = blockIdx.x;
    pdl_trigger();
    pdl_wait();
    const int p = prev ? prev[t] : -1;
    const bf16_t *src = table + (int64_t)(p >= 0 ? picked[p] : ids[t]) * H;
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) out[(int64_t)t * H + i] = src[i];
}

/* out = norm(x [+ residual]) * (plus_one ? 1 + w : w); residual (bf16) gets the sum. */
__global__ void k_rmsnorm(const bf16_t *x, bf16_t *res, const float *w, float eps, int plus_one, int n, bf16_t *out) {
    __shared__ float sh[32];
    const int64_t row = blockIdx.x;
    pdl_trigger();
    pdl_wait();
    const bf16_t *xr = x + row * n;
    bf16_t *rr = res ? res + row * n : nullptr;
    float ss = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = bf2f(xr[i]);
        if (rr) {
            bf16_t s = f2bf(bf2f(rr[i]) + v); /* the residual stream is bf16 */
            rr[i] = s;
            v = bf2f(s);
        }
        ss += v * v;
    }
    const float inv = rsqrtf(block_sum(ss, sh) / n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = rr ? bf2f(rr[i]) : bf2f(xr[i]);
        const float g = plus_one ? 1.f + w[i] : w[i];
        out[row * n + i] = f2bf(v * inv * g);
    }
}

/* The same norm for rows of n = 8 * blockDim.x: each thread keeps its 8 elements in
 * registers between the sum of squares and the output (16-byte loads, one pass). */
__global__ void __launch_bounds__(1024) k_rmsnorm8(const bf16_t *x, bf16_t *res, const float *w, float eps,
                                                   int plus_one, int n, bf16_t *out) {
    __shared__ float sh[32];
    const int64_t off = (int64_t)blockIdx.x * n + threadIdx.x * 8;
    pdl_trigger();
    /* the weights are no activation: their loads go out before the wait */
    const float4 w0 = *reinterpret_cast<const float4 *>(w + threadIdx.x * 8);
    const float4 w1 = *reinterpret_cast<const float4 *>(w + threadIdx.x * 8 + 4);
    pdl_wait();
    float v[8];
    bf16x8_to_f(*reinterpret_cast<const uint4 *>(x + off), v);
    if (res) {
        const uint4 rv = *reinterpret_cast<const uint4 *>(res + off);
        const uint32_t rw[4] = {rv.x, rv.y, rv.z, rv.w};
        uint32_t sw[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float2 f = bf2x2_to_f2(rw[i]);
            sw[i] = f2_to_bf2x2(f.x + v[2 * i], f.y + v[2 * i + 1]); /* the residual stream is bf16 */
            const float2 r = bf2x2_to_f2(sw[i]);
            v[2 * i] = r.x, v[2 * i + 1] = r.y;
        }
        *reinterpret_cast<uint4 *>(res + off) = make_uint4(sw[0], sw[1], sw[2], sw[3]);
    }
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < 8; i++) ss += v[i] * v[i];
    const float inv = rsqrtf(block_sum(ss, sh) / n + eps);
    float g[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
    uint32_t o[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float g0 = plus_one ? 1.f + g[2 * i] : g[2 * i], g1 = plus_one ? 1.f + g[2 * i + 1] : g[2 * i + 1];
        o[i] = f2_to_bf2x2(v[2 * i] * inv * g0, v[2 * i + 1] * inv * g1);
    }
    *reinterpret_cast<uint4 *>(out + off) = make_uint4(o[0], o[1], o[2], o[3]);
}

/* swiglu with 8 outputs per thread (I % 8 == 0). */
__global__ void k_swiglu8(const bf16_t *gu, int64_t T, int I, bf16_t *out) {
    const int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    pdl_trigger();
    pdl_wait();
    if (i >= T * I) return;
    const int64_t t = i / I, j = i % I;
    const uint4 g = *reinterpret_cast<const uint4 *>(gu + t * 2 * I + j);
    const uint4 u = *reinterpret_cast<const uint4 *>(gu + t * 2 * I + I + j);
    const uint32_t gw[4] = {g.x, g.y, g.z, g.w}, uw[4] = {u.x, u.y, u.z, u.w};
    uint32_t o[4];
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const float2 a = bf2x2_to_f2(gw[k]), b = bf2x2_to_f2(uw[k]);
        o[k] = f2_to_bf2x2(silu_f(a.x) * b.x, silu_f(a.y) * b.y);
    }
    *reinterpret_cast<uint4 *>(out + i) = make_uint4(o[0], o[1], o[2], o[3]);
}

__global__ void k_add(bf16_t *y, const bf16_t *x, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    pdl_trigger();
    pdl_wait();
    if (i < n) y[i] = f2bf(bf2f(y[i]) + bf2f(x[i]));
}

__global__ void k_swiglu(const bf16_t *gu, int64_t T, int I, bf16_t *out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    pdl_trigger();
    pdl_wait();
    if (i >= T * I) return;
    const int64_t t = i / I, j = i % I;
    const float g = bf2f(gu[t * 2 * I + j]), u = bf2f(gu[t * 2 * I + I + j]);
    out[i] = f2bf(silu_f(g) * u);
}

__global__ void k_gather_rows(const bf16_t *x, const int32_t *rows, int H, bf16_t *out) {
    const int r = blockIdx.x;
    pdl_trigger();
    pdl_wait();
    for (int i = threadIdx.x; i < H; i += blockDim.x) out[(int64_t)r * H + i] = x[(int64_t)rows[r] * H + i];
}

struct qk_params {
    const bf16_t *qg;      /* [T][Hq*2D] (row stride ld) */
    const bf16_t *k, *v;   /* [T][Hkv*D] (row stride ld) */
    int64_t ld;            /* linear_n's row: [qg | k | v] */
    const float *qn_w, *kn_w;
    const int32_t *pos, *tok_start, *bt;
    int S, Hq, Hkv, D, rope_dim, max_blocks, block_size;
    float theta, eps;
    bf16_t *q_out, *gate_out; /* [T][Hq][D] */
    char *pool;
    size_t page_bytes, layer_off;
};

/* Token t's K row of KV head kh in the paged cache (its V row is block_size * Hkv * D
 * elements further). */
__device__ __forceinline__ bf16_t *qk_cache_row(const qk_params &p, int t, int kh) {
    const int s = seq_of_token(p.tok_start, p.S, t);
    const int position = p.pos[t];
    const int blk = p.bt[(int64_t)s * p.max_blocks + position / p.block_size];
    const int row = position % p.block_size;
    char *base = p.pool + (size_t)blk * p.page_bytes + p.layer_off;
    return reinterpret_cast<bf16_t *>(base) + ((size_t)row * p.Hkv + kh) * p.D;
}

/* One block per (token, head): heads [0, Hq) are query heads, [Hq, Hq+Hkv) KV heads.
 * blockDim = D rounded up to a warp. Norm (1+w) over D in fp32, rotate-half RoPE on the
 * first rope_dim dims, then q -> q_out (and the gate half -> gate_out), k and v -> cache. */
__global__ void k_qk_prep(const qk_params p) {
    __shared__ float sh[32];
    __shared__ float xs[1024];
    const int t = blockIdx.x, h = blockIdx.y, i = threadIdx.x;
    pdl_trigger();
    pdl_wait();
    const bool isq = h < p.Hq;
    const int kh = h - p.Hq;
    const bf16_t *src =
        isq ? p.qg + (int64_t)t * p.ld + (int64_t)h * 2 * p.D : p.k + (int64_t)t * p.ld + (int64_t)kh * p.D;
    const float x = i < p.D ? bf2f(src[i]) : 0.f;
    const float inv = rsqrtf(block_sum(x * x, sh) / p.D + p.eps);
    const float *w = isq ? p.qn_w : p.kn_w;
    float y = i < p.D ? x * inv * (1.f + w[i]) : 0.f;
    y = bf2f(f2bf(y)); /* HF rounds the normed q/k to bf16 before RoPE */
    if (i < p.D) xs[i] = y;
    __syncthreads();
    const int half = p.rope_dim / 2;
    if (i < p.rope_dim) {
        const int j = i < half ? i : i - half;
        const float inv_freq = powf(p.theta, -2.f * (float)j / (float)p.rope_dim);
        float sn, cs;
        sincosf((float)p.pos[t] * inv_freq, &sn, &cs);
        y = i < half ? xs[i] * cs - xs[i + half] * sn : xs[i] * cs + xs[i - half] * sn;
    }
    if (i >= p.D) return;
    if (isq) {
        p.q_out[((int64_t)t * p.Hq + h) * p.D + i] = f2bf(y);
        p.gate_out[((int64_t)t * p.Hq + h) * p.D + i] = src[p.D + i];
        return;
    }
    bf16_t *kd = qk_cache_row(p, t, kh), *vd = kd + (size_t)p.block_size * p.Hkv * p.D;
    kd[i] = f2bf(y);
    vd[i] = p.v[(int64_t)t * p.ld + (int64_t)kh * p.D + i];
}

/* k_qk_prep for D = 256 with a warp per (token, head): each lane holds 8 neighbouring
 * elements (one 16-byte load), the norm is a warp sum, and RoPE's partner of element i
 * (i +- rope_dim/2) sits in lane l ^ (rope_dim/16) at the same slot: no shared memory, no
 * block barrier. Lane j < rope_dim/2 computes frequency j's angle once and the rope lanes
 * fetch theirs by shuffle (one powf and sincosf a lane, not eight in a row). Needs
 * rope_dim in {16, 32, 64}. Same results as k_qk_prep (same fp32 formulas, the normed
 * value rounded to bf16 before RoPE). */
__global__ void __launch_bounds__(128) k_qk_prep256(const qk_params p, int n_items) {
    const int item = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    pdl_trigger();
    if (item >= n_items) {
        pdl_wait();
        return;
    }
    const int nh = p.Hq + p.Hkv, t = item / nh, h = item % nh;
    const bool isq = h < p.Hq;
    const int kh = h - p.Hq;
    /* the norm weights are no activation: loaded before the wait */
    const float *wp = (isq ? p.qn_w : p.kn_w) + 8 * lane;
    const float4 w0 = *reinterpret_cast<const float4 *>(wp), w1 = *reinterpret_cast<const float4 *>(wp + 4);
    pdl_wait();
    const bf16_t *src = isq ? p.qg + (int64_t)t * p.ld + (int64_t)h * 512 : p.k + (int64_t)t * p.ld + (int64_t)kh * 256;
    float x[8];
    bf16x8_to_f(reinterpret_cast<const uint4 *>(src)[lane], x);
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < 8; i++) ss += x[i] * x[i];
    const float inv = rsqrtf(warp_sum(ss) / 256.f + p.eps);
    const float w[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
#pragma unroll
    for (int i = 0; i < 8; i++) x[i] = bf2f(f2bf(x[i] * inv * (1.f + w[i]))); /* HF rounds before RoPE */
    const int half = p.rope_dim / 2, pl = half / 8; /* partner lane distance */
    float sn_j = 0.f, cs_j = 1.f; /* frequency j = lane */
    if (lane < half) {
        const float inv_freq = powf(p.theta, -2.f * (float)lane / (float)p.rope_dim);
        sincosf((float)p.pos[t] * inv_freq, &sn_j, &cs_j);
    }
    const bool lo = 8 * lane < half;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const float y = __shfl_xor_sync(0xffffffffu, x[i], pl);
        const int j = (8 * lane + i) & (half - 1);
        const float cs = __shfl_sync(0xffffffffu, cs_j, j), sn = __shfl_sync(0xffffffffu, sn_j, j);
        if (8 * lane < p.rope_dim) x[i] = lo ? x[i] * cs - y * sn : x[i] * cs + y * sn;
    }
    uint4 ov;
    ov.x = f2_to_bf2x2(x[0], x[1]), ov.y = f2_to_bf2x2(x[2], x[3]);
    ov.z = f2_to_bf2x2(x[4], x[5]), ov.w = f2_to_bf2x2(x[6], x[7]);
    if (isq) {
        reinterpret_cast<uint4 *>(p.q_out + ((int64_t)t * p.Hq + h) * 256)[lane] = ov;
        reinterpret_cast<uint4 *>(p.gate_out + ((int64_t)t * p.Hq + h) * 256)[lane] =
            reinterpret_cast<const uint4 *>(src + 256)[lane];
        return;
    }
    bf16_t *kd = qk_cache_row(p, t, kh), *vd = kd + (size_t)p.block_size * p.Hkv * 256;
    reinterpret_cast<uint4 *>(kd)[lane] = ov;
    reinterpret_cast<uint4 *>(vd)[lane] =
        reinterpret_cast<const uint4 *>(p.v + (int64_t)t * p.ld + (int64_t)kh * 256)[lane];
}

/* Per row of logits: argmax (lowest id on ties), max, log-sum-exp (fp32). Two stages:
 * k_stats_part splits each row into nb ranges (enough blocks to fill the GPU at batch 1)
 * and keeps an online (max, first argmax, sum of exp(x - max)) per thread, merged per
 * block; k_stats_combine merges a row's nb partials in range order. */
struct stat3 {
    float m, s;
    int i;
};
__device__ __forceinline__ stat3 stat_merge(stat3 a, stat3 b) {
    if (b.m > a.m || (b.m == a.m && b.i < a.i)) {
        const stat3 t = a;
        a = b, b = t;
    } /* a has the larger max (or the same max and the lower id) */
    if (b.m != -INFINITY) a.s += b.s * __expf(b.m - a.m);
    return a;
}
__device__ __forceinline__ stat3 stat_warp(stat3 v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        stat3 u;
        u.m = __shfl_xor_sync(0xffffffffu, v.m, o);
        u.s = __shfl_xor_sync(0xffffffffu, v.s, o);
        u.i = __shfl_xor_sync(0xffffffffu, v.i, o);
        v = stat_merge(v, u);
    }
    return v;
}

/* Fold n values of ascending ids id0, id0+1, ... into v: the group's max (first id on ties)
 * rescales the running sum once, then each value adds its exp. */
template <int n> __device__ __forceinline__ void stat_fold(stat3 &v, const float *e, int id0) {
    float gm = e[0];
    int gi = 0;
#pragma unroll
    for (int j = 1; j < n; j++)
        if (e[j] > gm) gm = e[j], gi = j;
    if (gm > v.m) {
        v.s = v.m == -INFINITY ? 0.f : v.s * __expf(v.m - gm);
        v.m = gm, v.i = id0 + gi;
    }
    if (v.m == -INFINITY) return; /* all -inf so far */
#pragma unroll
    for (int j = 0; j < n; j++) v.s += __expf(e[j] - v.m);
}

__global__ void __launch_bounds__(256) k_stats_part(const float *logits, int V, int chunk, stat3 *part) {
    __shared__ stat3 sh[8];
    const int r = blockIdx.y, nb = gridDim.x;
    pdl_trigger();
    pdl_wait();
    const float *x = logits + (int64_t)r * V;
    const int lo = blockIdx.x * chunk, hi = min(V, lo + chunk);
    stat3 v = {-INFINITY, 0.f, 0x7fffffff};
    if ((V & 3) == 0 && (chunk & 3) == 0) {
        /* 16-byte loads, four in flight per thread (the scalar loop kept ~4 KB in flight
         * per SM: 1.1 TB/s on 114 rows of 248k logits) */
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        const int hi4 = hi > lo ? hi / 4 : 0, step = blockDim.x;
        int i = lo / 4 + threadIdx.x;
        for (; i + 3 * step < hi4; i += 4 * step) {
            float4 a[4];
#pragma unroll
            for (int u = 0; u < 4; u++) a[u] = __ldcs(x4 + i + u * step);
#pragma unroll
            for (int u = 0; u < 4; u++) stat_fold<4>(v, &a[u].x, 4 * (i + u * step));
        }
        for (; i < hi4; i += step) {
            const float4 a = __ldcs(x4 + i);
            stat_fold<4>(v, &a.x, 4 * i);
        }
    } else {
        for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) stat_fold<1>(v, x + i, i);
    }
    v = stat_warp(v);
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        v = threadIdx.x < (blockDim.x >> 5) ? sh[threadIdx.x] : stat3{-INFINITY, 0.f, 0x7fffffff};
        v = stat_warp(v);
        if (threadIdx.x == 0) part[(int64_t)r * nb + blockIdx.x] = v;
    }
}

/* out: [n] argmax, then [n] max, then [n] lse (12 n bytes). One warp per row. */
__global__ void k_stats_combine(const stat3 *part, int nb, int n, char *out) {
    const int r = blockIdx.x;
    pdl_trigger();
    pdl_wait();
    stat3 v = {-INFINITY, 0.f, 0x7fffffff};
    for (int j = threadIdx.x; j < nb; j += 32) v = stat_merge(v, part[(int64_t)r * nb + j]);
    v = stat_warp(v);
    if (threadIdx.x == 0) {
        reinterpret_cast<int32_t *>(out)[r] = v.i;
        reinterpret_cast<float *>(out + (size_t)n * 4)[r] = v.m;
        reinterpret_cast<float *>(out + (size_t)n * 8)[r] = v.m + logf(v.s);
    }
}

/* ---- memory and weights ------------------------------------------------------------ */

static void *cu_alloc(backend_t *bk, size_t bytes) {
    (void)bk;
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    if (cudaMemset(p, 0, bytes ? bytes : 1) != cudaSuccess) {
        cudaFree(p);
        return NULL;
    }
    return p;
}
static void cu_free(backend_t *bk, void *p) {
    (void)bk;
    if (p) CK(cudaFree(p));
}
static void cu_upload(backend_t *bk, void *dst, const void *src, size_t n) {
    CK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, ctx(bk)->st));
    CK(cudaStreamSynchronize(ctx(bk)->st));
}
static void cu_download(backend_t *bk, void *dst, const void *src, size_t n) {
    CK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, ctx(bk)->st));
    CK(cudaStreamSynchronize(ctx(bk)->st));
}
static void cu_copy(backend_t *bk, void *dst, const void *src, size_t n) {
    CK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, ctx(bk)->st));
}
static void cu_sync(backend_t *bk) { CK(cudaStreamSynchronize(ctx(bk)->st)); }
static void cu_mem_info(backend_t *bk, size_t *free_b, size_t *total_b) {
    (void)bk;
    CK(cudaMemGetInfo(free_b, total_b));
}
static void cu_act_upload(backend_t *bk, void *dst, const float *src, size_t n) {
    uint16_t *h = (uint16_t *)hs_malloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = hs_f32_to_bf16(src[i]);
    cu_upload(bk, dst, h, n * 2);
    free(h);
}
static void cu_act_download(backend_t *bk, float *dst, const void *src, size_t n) {
    uint16_t *h = (uint16_t *)hs_malloc(n * 2);
    cu_download(bk, h, src, n * 2);
    for (size_t i = 0; i < n; i++) dst[i] = hs_bf16_to_f32(h[i]);
    free(h);
}

static float host_elem(const bk_host_tensor_t *t, int64_t r, int64_t c) {
    if (t->dtype == HS_F8_E4M3) return hs_fp8_block_elem((const uint8_t *)t->data, t->scale_inv, t->cols, r, c);
    return hs_load_f32(t->data, t->dtype, (size_t)r * (size_t)t->cols + (size_t)c);
}

static bk_weight_t *cu_weight_load(backend_t *bk, const bk_host_tensor_t *t, char *err, size_t n) {
    if (!t || !t->data || t->rows <= 0 || t->cols <= 0) {
        hs_errf(err, n, HS_ERR_INVALID, "cuda weight_load: empty tensor");
        return NULL;
    }
    if (t->dtype != HS_F32 && t->dtype != HS_BF16 && t->dtype != HS_F16 && t->dtype != HS_F8_E4M3) {
        hs_errf(err, n, HS_ERR_UNSUPPORTED, "cuda weight_load: dtype %s not supported", hs_dtype_name(t->dtype));
        return NULL;
    }
    if (t->dtype == HS_F8_E4M3 && !t->scale_inv) {
        hs_errf(err, n, HS_ERR_INVALID, "cuda weight_load: fp8 weight without scale_inv");
        return NULL;
    }
    const size_t count = (size_t)t->rows * (size_t)t->cols;
    bk_weight_t *w = (bk_weight_t *)hs_calloc(1, sizeof *w);
    w->rows = t->rows;
    w->cols = t->cols;
    const uint16_t *bf = NULL;
    uint16_t *conv = NULL;
    if (t->dtype == HS_BF16) {
        bf = (const uint16_t *)t->data;
    } else {
        conv = (uint16_t *)hs_malloc(count * 2);
        for (int64_t r = 0; r < t->rows; r++)
            for (int64_t c = 0; c < t->cols; c++) conv[(size_t)r * t->cols + c] = hs_f32_to_bf16(host_elem(t, r, c));
        bf = conv;
    }
    if (cudaMalloc(&w->bf, count * 2) != cudaSuccess) {
        cudaGetLastError();
        free(conv);
        free(w);
        hs_errf(err, n, HS_ERR_NO_MEMORY, "cuda weight_load: out of device memory (%zu bytes)", count * 2);
        return NULL;
    }
    CK(cudaMemcpy(w->bf, bf, count * 2, cudaMemcpyHostToDevice));
    if (t->rows == 1) {
        float *f = (float *)hs_malloc(count * 4);
        for (int64_t c = 0; c < t->cols; c++) f[c] = host_elem(t, 0, c);
        CK(cudaMalloc(&w->f32, count * 4));
        CK(cudaMemcpy(w->f32, f, count * 4, cudaMemcpyHostToDevice));
        free(f);
    }
    free(conv);
    (void)bk;
    return w;
}

static void cu_weight_free(backend_t *bk, bk_weight_t *w) {
    (void)bk;
    if (!w) return;
    if (w->block_refs) {
        if (--*w->block_refs == 0) {
            CK(cudaFree(w->block));
            free(w->block_refs);
        }
    } else if (w->bf) {
        CK(cudaFree(w->bf));
    }
    if (w->f32) CK(cudaFree(w->f32));
    free(w);
}

/* weights_pack: one allocation for n weights of equal width, in order (backend.h). */
static bool cu_weights_pack(backend_t *bk, bk_weight_t *const *w, int n) {
    (void)bk;
    if (n < 2) return false;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (!w[i] || !w[i]->bf || w[i]->block_refs || w[i]->cols != w[0]->cols) return false;
        total += (size_t)w[i]->rows * (size_t)w[i]->cols;
    }
    bf16_t *block = NULL;
    if (cudaMalloc(&block, total * 2) != cudaSuccess) {
        cudaGetLastError();
        return false;
    }
    int *refs = (int *)hs_malloc(sizeof *refs);
    *refs = n;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const size_t cnt = (size_t)w[i]->rows * (size_t)w[i]->cols;
        CK(cudaMemcpy(block + off, w[i]->bf, cnt * 2, cudaMemcpyDeviceToDevice));
        CK(cudaFree(w[i]->bf));
        w[i]->bf = block + off;
        w[i]->block = block;
        w[i]->block_refs = refs;
        off += cnt;
    }
    return true;
}

/* ---- batch ------------------------------------------------------------------------ */

/* The staging area to the device (in stream order), and the event the next step's
 * set_batch waits on before it rewrites h_stage. */
static void stage_copy(cu_ctx_t *c) {
    CK(cudaMemcpyAsync(c->d_stage, c->h_stage, c->stage_used, cudaMemcpyHostToDevice, c->st));
    /* In a graph the event is a node right after the copy: a replay signals it as soon as
     * the copy is done, so the next step's set_batch can run while this step does. */
    CK(cudaEventRecordWithFlags(c->stage_done, c->st, c->capturing ? cudaEventRecordExternal : cudaEventRecordDefault));
}

static cu_graph_t *graph_find(cu_ctx_t *c);
static int graph_need(const cu_ctx_t *c);

/* Bytes of n int32 in the staging area, kept 16-byte aligned. */
static size_t stage_bytes(size_t n) { return (n * 4 + 15) & ~(size_t)15; }

/* Round a decode step's longest context up to a power of two (>= 256), so that steps a
 * few tokens apart share a graph; attention's split grid is sized from it and the
 * kernels bound every sequence by its own length. */
static int ctx_bucket(int n) {
    int b = 256;
    while (b < n) b *= 2;
    return b;
}

static void cu_set_batch(backend_t *bk, const bk_batch_t *b, const bk_pool_t *pool) {
    cu_ctx_t *c = ctx(bk);
    assert(!c->capturing);
    const int S = b->n_seqs, T = b->n_tokens;
    c->S = S;
    c->T = T;
    c->max_blocks = b->max_blocks;
    c->E = b->n_state_pages;
    c->n_logits = b->n_logits;
    if (c->cap_h < (size_t)S + 1) {
        c->cap_h = (size_t)S * 2 + 2;
        c->h_tok_start = (int32_t *)hs_realloc(c->h_tok_start, c->cap_h * 4);
        c->h_n_past = (int32_t *)hs_realloc(c->h_n_past, c->cap_h * 4);
        c->h_seq_lens = (int32_t *)hs_realloc(c->h_seq_lens, c->cap_h * 4);
        c->h_tok_pre = (int32_t *)hs_realloc(c->h_tok_pre, c->cap_h * 4);
    }
    memcpy(c->h_tok_start, b->tok_start, ((size_t)S + 1) * 4);
    memcpy(c->h_n_past, b->n_past, (size_t)S * 4);
    c->n_decode = 0;
    c->max_seg = 0;
    c->max_ctx = 0;
    bool prefix = true;
    for (int s = 0; s < S; s++) {
        const int len = b->tok_start[s + 1] - b->tok_start[s];
        c->h_seq_lens[s] = b->n_past[s] + len;
        if (len > c->max_seg) c->max_seg = len;
        if (c->h_seq_lens[s] > c->max_ctx) c->max_ctx = c->h_seq_lens[s];
        if (prefix && len == 1 && b->n_past[s] > 0) c->n_decode++;
        else prefix = false;
    }
    for (int s = c->n_decode; s <= S; s++) c->h_tok_pre[s - c->n_decode] = b->tok_start[s] - b->tok_start[c->n_decode];
    /* Pure decode steps can replay a recorded graph. Their longest context is bucketed
     * whether graphs are on or not, so that both run the same split grid. */
    const bool decode = S > 0 && c->n_decode == S && T == S;
    if (decode) c->max_ctx = ctx_bucket(c->max_ctx);
    c->graphable = c->graphs_on && decode && b->n_logits == S;
    if (c->graphable) {
        c->gkey.S = S;
        c->gkey.max_blocks = b->max_blocks;
        c->gkey.E = b->n_state_pages;
        c->gkey.max_ctx = c->max_ctx;
        c->gkey.pool = pool->base;
    }

    /* Every per-step array in one pinned staging area, one copy to the device. The
     * offsets depend only on the sizes, so a step of the same shape reuses them. */
    const size_t n_bt = (size_t)S * (size_t)b->max_blocks, n_sp = (size_t)S * (size_t)b->n_state_pages;
    enum { NA = 10 };
    const size_t sz[NA] = {(size_t)S + 1, (size_t)S, (size_t)T, n_bt, n_sp, (size_t)b->n_logits, (size_t)S, (size_t)T,
                           (size_t)(S - c->n_decode) + 1, (size_t)T};
    const int32_t *src[NA] = {b->tok_start, b->n_past, b->positions, b->block_tables, b->state_pages,
                              b->logit_rows, c->h_seq_lens, b->ids, c->h_tok_pre, b->prev_rows};
    int32_t **dst[NA] = {&c->d_tok_start, &c->d_n_past, &c->d_pos, &c->d_bt, &c->d_sp,
                         &c->d_logit_rows, &c->d_seq_lens, &c->d_ids, &c->d_tok_pre, &c->d_prev};
    size_t total = 0;
    for (int i = 0; i < NA; i++) total += stage_bytes(sz[i]);
    if (total > c->stage_cap) {
        CK(cudaStreamSynchronize(c->st));
        if (c->h_stage) CK(cudaFreeHost(c->h_stage));
        retire(c, c->d_stage);
        c->stage_cap = total * 2 + 4096;
        CK(cudaMallocHost((void **)&c->h_stage, c->stage_cap));
        CK(cudaMalloc((void **)&c->d_stage, c->stage_cap));
    } else {
        CK(cudaEventSynchronize(c->stage_done)); /* the last step's copy has read h_stage */
    }
    size_t off = 0;
    for (int i = 0; i < NA; i++) {
        if (src[i] && sz[i]) memcpy(c->h_stage + off, src[i], sz[i] * 4);
        else if (dst[i] == &c->d_prev) memset(c->h_stage + off, 0xff, sz[i] * 4); /* -1: no token from a pick */
        *dst[i] = (int32_t *)(c->d_stage + off);
        off += stage_bytes(sz[i]);
    }
    if (!b->ids) c->d_ids = NULL;
    c->h_ids_src = b->ids;
    c->stage_used = off;
    c->pool = *pool;
    c->has_pool = true;
    /* The state map's granule table, once per map. */
    const statemap_t *sm = &pool->sm;
    if (sm->n_gdn > 0 && c->ssm_loc_src != (const void *)sm->ssm) {
        const size_t n = (size_t)sm->n_gdn * sm->hv * sm->n_slices;
        CK(cudaStreamSynchronize(c->st));
        graphs_clear(c);
        if (c->d_ssm_loc) CK(cudaFree(c->d_ssm_loc));
        CK(cudaMalloc(&c->d_ssm_loc, n * sizeof(sm_loc_t)));
        CK(cudaMemcpy(c->d_ssm_loc, sm->ssm, n * sizeof(sm_loc_t), cudaMemcpyHostToDevice));
        c->ssm_loc_src = sm->ssm;
    }
    /* A step that replays or records a graph has the staging copy as the graph's first
     * node (one API call less per step): its shape has a graph (graph_launch replays it),
     * or has been seen graph_need - 1 times (graph_begin records it now); the sizes (so
     * stage_used) follow from the key. Other steps run eagerly and copy here. */
    const cu_graph_t *g = c->graphable ? graph_find(c) : NULL;
    c->stage_in_graph = g && (g->exec || g->seen + 1 >= graph_need(c));
    if (!c->stage_in_graph) stage_copy(c);
}

/* ---- step graphs ------------------------------------------------------------------- */

static bool gkey_eq(const cu_gkey_t *a, const cu_gkey_t *b) {
    return a->S == b->S && a->max_blocks == b->max_blocks && a->E == b->E && a->max_ctx == b->max_ctx &&
           a->pool == b->pool;
}

/* The sighting of a shape on which its graph is recorded. A recording costs 3-4 ms of an
 * idle GPU (capture, instantiate, first launch: H100, 280 nodes) and a replay saves
 * ~0.1-0.15 ms a step, at batch 1 and at 114 rows alike (bench/RESULTS.md, "Session 6"),
 * so a graph pays after some 30 replays. Small batches keep their shape for hundreds of
 * steps: the second sighting. Large ones change shape whenever a request joins or
 * leaves, and while a batch drains each size lasts a few steps: the eighth sighting, so
 * shapes seen a few times are never recorded. */
static int graph_need(const cu_ctx_t *c) {
    if (c->graph_after > 0) return c->graph_after;
    return c->S <= 16 ? 2 : 8;
}

static cu_graph_t *graph_find(cu_ctx_t *c) {
    for (int i = 0; i < CU_MAX_GRAPHS; i++)
        if (c->graphs[i].used && gkey_eq(&c->graphs[i].key, &c->gkey)) return &c->graphs[i];
    return NULL;
}

static void graph_drop(cu_graph_t *g) {
    if (g->exec) CK(cudaGraphExecDestroy(g->exec));
    memset(g, 0, sizeof *g);
}

/* Forget every recorded graph (a buffer they point to is about to change). */
static void graphs_clear(cu_ctx_t *c) {
    bool any = false;
    for (int i = 0; i < CU_MAX_GRAPHS; i++) any |= c->graphs[i].exec != NULL;
    if (any) CK(cudaStreamSynchronize(c->st));
    for (int i = 0; i < CU_MAX_GRAPHS; i++) graph_drop(&c->graphs[i]);
}

static bool cu_graph_launch(backend_t *bk) {
    cu_ctx_t *c = ctx(bk);
    if (!c->graphable) return false;
    cu_graph_t *g = graph_find(c);
    if (!g || !g->exec) return false;
    g->last = ++c->gclock;
    const double t0 = hs_now();
    if (c->t_synced > 0) c->between_s += t0 - c->t_synced, c->n_between++;
    assert(c->stage_in_graph);
    CK(cudaGraphLaunch(g->exec, c->st)); /* its event node signals stage_done */
    c->launch_s += hs_now() - t0;
    bk->graphs_replayed++;
    return true;
}

static bool cu_graph_begin(backend_t *bk) {
    cu_ctx_t *c = ctx(bk);
    if (!c->graphable) return false;
    cu_graph_t *g = graph_find(c);
    if (!g) {
        /* First sighting: run eagerly (it also sizes the scratch buffers); record the next. */
        cu_graph_t *slot = NULL;
        for (int i = 0; i < CU_MAX_GRAPHS && !slot; i++)
            if (!c->graphs[i].used) slot = &c->graphs[i];
        if (!slot) {
            slot = &c->graphs[0];
            for (int i = 1; i < CU_MAX_GRAPHS; i++)
                if (c->graphs[i].last < slot->last) slot = &c->graphs[i];
            CK(cudaStreamSynchronize(c->st));
            graph_drop(slot);
        }
        slot->used = true;
        slot->key = c->gkey;
        slot->seen = 1;
        slot->last = ++c->gclock;
        c->n_first++;
        return false;
    }
    assert(!g->exec);
    g->last = ++c->gclock;
    if (++g->seen < graph_need(c)) { /* not yet: eagerly (set_batch copied the staging area) */
        assert(!c->stage_in_graph);
        return false;
    }
    assert(c->stage_in_graph);
    c->t_rec0 = hs_now();
    CK(cudaStreamBeginCapture(c->st, cudaStreamCaptureModeRelaxed));
    c->capturing = true;
    stage_copy(c); /* the graph's root: it reads h_stage when the graph runs */
    return true;
}

static bool cu_graph_end(backend_t *bk) {
    cu_ctx_t *c = ctx(bk);
    assert(c->capturing);
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(c->st, &graph);
    c->capturing = false;
    cudaGraphExec_t exec = NULL;
    if (e == cudaSuccess) e = cudaGraphInstantiate(&exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (c->stale) { /* buffers were replaced during the capture: older graphs are void */
        CK(cudaStreamSynchronize(c->st));
        for (int i = 0; i < CU_MAX_GRAPHS; i++)
            if (c->graphs[i].exec) graph_drop(&c->graphs[i]);
        for (int i = 0; i < c->n_deferred; i++) CK(cudaFree(c->deferred[i]));
        c->n_deferred = 0;
        c->stale = false;
    }
    if (e != cudaSuccess) {
        fprintf(stderr, "hyserve: cuda: recording a decode-step graph failed (%s); running without graphs\n",
                cudaGetErrorString(e));
        cudaGetLastError();
        c->graphs_on = false;
        graphs_clear(c);
        stage_copy(c); /* the step now runs eagerly */
        return false;
    }
    cu_graph_t *g = graph_find(c);
    if (!g) { /* its slot was dropped as stale: take the first free one */
        for (int i = 0; i < CU_MAX_GRAPHS && !g; i++)
            if (!c->graphs[i].used) g = &c->graphs[i];
        assert(g);
        g->used = true;
        g->key = c->gkey;
    }
    g->exec = exec;
    g->last = ++c->gclock;
    CK(cudaGraphLaunch(exec, c->st));
    bk->graphs_recorded++;
    c->record_s += hs_now() - c->t_rec0;
    return true;
}

/* ---- GEMM ---------------------------------------------------------------------------- */

/* A gemv.h launcher's answer: HS_OK, or HS_ERR_INVALID for a shape it does not serve
 * (nothing launched: the caller takes cuBLAS); any other code is a broken device. */
static bool gemv_ran(int rc, const char *what) {
    if (rc == HS_OK) return true;
    if (rc == HS_ERR_INVALID) return false;
    fprintf(stderr, "hyserve: cuda: %s returned %d\n", what, rc);
    abort();
}

/* out[T, N] = x[T, K] @ W[N, K]^T; out_f32 selects an fp32 output. Small T (decode):
 * our GEMV (gemv.cu) up to the M where it beats cuBLAS for this shape; else cuBLAS. */
static void gemm(cu_ctx_t *c, const void *x, const bk_weight_t *w, int T, void *out, bool out_f32) {
    const float one = 1.f, zero = 0.f;
    const int N = (int)w->rows, K = (int)w->cols;
    if (T <= gemv_max_m(N, K) && gemv_ran(gemv_launch(x, T, K, w->bf, N, out, out_f32, 0, c->st), "gemv_launch"))
        return;
    /* Decode-sized batches: cuBLASLt with the algorithm timed fastest per shape. */
    if (T >= 2 && T <= c->lt_max_m && c->lt && gemm_lt_run(c->lt, x, w->bf, T, N, K, out, out_f32, c->st) == HS_OK)
        return;
    CKB(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &one, w->bf, CUDA_R_16BF, K, x, CUDA_R_16BF, K,
                     &zero, out, out_f32 ? CUDA_R_32F : CUDA_R_16BF, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

static void cu_linear(backend_t *bk, const void *x, const bk_weight_t *w, int T, void *out) {
    gemm(ctx(bk), x, w, T, out, false);
}

static void cu_logits(backend_t *bk, const void *x, const bk_weight_t *lm_head, int n, void *out) {
    gemm(ctx(bk), x, lm_head, n, out, true);
}

/* Are w[0..n) packed back to back (weights_pack), so that one product covers them? */
static bool packed_run(const bk_weight_t *const *w, int n) {
    if (n < 2 || n > GEMV_MAX_GROUP || !w[0]->block_refs) return false;
    for (int i = 1; i < n; i++)
        if (w[i]->block_refs != w[0]->block_refs || w[i]->bf != w[i - 1]->bf + w[i - 1]->rows * w[i - 1]->cols)
            return false;
    return true;
}

/* n projections of one x into the column blocks of out [T][sum N_i] (backend.h): one
 * grouped GEMV launch up to the T where that beats cuBLAS (gemv_grouped_max_m), else one
 * product over the packed weights, whose output rows are that layout already; unpacked
 * weights (weights_pack failed) take one GEMM each and a strided copy into their block. */
static void cu_linear_n(backend_t *bk, const void *x, int n, const bk_weight_t *const *w, int T, void *out) {
    cu_ctx_t *c = ctx(bk);
    const int K = n >= 1 ? (int)w[0]->cols : 0;
    bool same_k = n >= 1;
    int64_t ld = 0;
    for (int i = 0; i < n; i++) same_k = same_k && w[i]->cols == K, ld += w[i]->rows;
    if (!same_k) { /* a bug in the caller (backend.h: every w[i] has K columns) */
        fprintf(stderr, "hyserve: cuda: linear_n: %d weights of different widths\n", n);
        abort();
    }
    bf16_t *o = (bf16_t *)out;
    const bool grouped = n <= GEMV_MAX_GROUP && T <= gemv_grouped_max_m(n, K);
    gemv_seg_t segs[GEMV_MAX_GROUP];
    for (int i = 0, off = 0; i < n && grouped; off += (int)w[i]->rows, i++)
        segs[i] = gemv_seg_t{w[i]->bf, (int)w[i]->rows, o + off, 0, (int)ld};
    if (grouped && gemv_ran(gemv_grouped_launch(x, T, K, segs, n, 0, c->st), "gemv_grouped_launch")) return;
    if (packed_run(w, n)) {
        /* one product over the packed rows: fewer, larger tiles than n small GEMMs (the
         * 32-row b and a projections ride along) */
        bk_weight_t all = *w[0];
        all.rows = ld;
        gemm(c, x, &all, T, out, false);
        return;
    }
    size_t most = 0;
    for (int i = 0; i < n; i++) most = (size_t)w[i]->rows > most ? (size_t)w[i]->rows : most;
    bf16_t *tmp = (bf16_t *)scratch(c, SCR_LINN, (size_t)T * most * 2);
    for (int i = 0, off = 0; i < n; off += (int)w[i]->rows, i++) {
        const size_t N = (size_t)w[i]->rows;
        gemm(c, x, w[i], T, tmp, false);
        CK(cudaMemcpy2DAsync(o + off, (size_t)ld * 2, tmp, N * 2, N * 2, (size_t)T, cudaMemcpyDeviceToDevice, c->st));
    }
}

/* ---- simple ops ------------------------------------------------------------------ */

static void cu_embed(backend_t *bk, const bk_weight_t *embed, const int32_t *ids, int T, void *out) {
    cu_ctx_t *c = ctx(bk);
    int32_t *d = c->d_ids;
    const int32_t *prev = c->d_prev;
    if (ids != c->h_ids_src || !d || T != c->T) { /* not the batch's ids: copy them now */
        d = (int32_t *)scratch(c, SCR_IDS, (size_t)T * 4);
        CK(cudaMemcpyAsync(d, ids, (size_t)T * 4, cudaMemcpyHostToDevice, c->st));
        /* From pageable memory the copy has left `ids` when cudaMemcpyAsync returns. */
        prev = NULL;
    }
    /* plain launch: the first kernel of a step (a graph's root) follows a copy, not a kernel */
    k_embed<<<T, 256, 0, c->st>>>(d, prev, (const int32_t *)c->d_pick, embed->bf, embed->cols, (bf16_t *)out);
    LAUNCHED();
}

/* HS_CUDA_SKIP applies to pure decode steps */
static bool skip_step(const cu_ctx_t *c) { return c->S > 0 && c->n_decode == c->S; }

static void cu_rmsnorm(backend_t *bk, const void *x, void *residual, const bk_weight_t *w, float eps, bool plus_one,
                       int T, int n, void *out) {
    const uintptr_t al = (uintptr_t)x | (uintptr_t)residual | (uintptr_t)out;
    const bool v8 = n % 8 == 0 && n / 8 <= 1024 && n >= 256 && al % 16 == 0;
    if (ctx(bk)->skip_norm && skip_step(ctx(bk))) return;
    CK(launch_pdl(v8 ? k_rmsnorm8 : k_rmsnorm, dim3(T), dim3(v8 ? n / 8 : 256), 0, ctx(bk)->st, (const bf16_t *)x,
                  (bf16_t *)residual, (const float *)w->f32, eps, (int)plus_one, n, (bf16_t *)out));
}

static void cu_add(backend_t *bk, void *y, const void *x, int T, int n) {
    const int64_t N = (int64_t)T * n;
    CK(launch_pdl(k_add, dim3((unsigned)((N + 255) / 256)), dim3(256), 0, ctx(bk)->st, (bf16_t *)y,
                  (const bf16_t *)x, N));
}

static void cu_swiglu(backend_t *bk, const void *gu, int T, int I, void *out) {
    const int64_t N = (int64_t)T * I;
    const bool v8 = I % 8 == 0 && ((uintptr_t)gu | (uintptr_t)out) % 16 == 0;
    if (ctx(bk)->skip_swiglu && skip_step(ctx(bk))) return;
    CK(launch_pdl(v8 ? k_swiglu8 : k_swiglu, dim3((unsigned)(((v8 ? N / 8 : N) + 255) / 256)), dim3(256), 0,
                  ctx(bk)->st, (const bf16_t *)gu, (int64_t)T, I, (bf16_t *)out));
}

static void cu_gather_rows(backend_t *bk, const void *x, int H, void *out) {
    cu_ctx_t *c = ctx(bk);
    if (c->n_logits == 0) return;
    CK(launch_pdl(k_gather_rows, dim3(c->n_logits), dim3(256), 0, c->st, (const bf16_t *)x,
                  (const int32_t *)c->d_logit_rows, H, (bf16_t *)out));
}

/* ---- attention ------------------------------------------------------------------- */

static void cu_attention(backend_t *bk, int a, const void *qkv, const bk_weight_t *q_norm, const bk_weight_t *k_norm,
                         int Hq, int Hkv, int D, int rope_dim, float theta, float eps, void *out) {
    cu_ctx_t *c = ctx(bk);
    const kv_layout_t *kv = &c->pool.kv;
    const size_t layer_off = kv_offset(kv, a, 0, 0, 0);
    bf16_t *q = (bf16_t *)scratch(c, SCR_Q, (size_t)c->T * Hq * D * 2);
    bf16_t *gate = (bf16_t *)scratch(c, SCR_GATE, (size_t)c->T * Hq * D * 2);
    qk_params p;
    /* the column blocks of linear_n's output rows [qg | k | v], read in place */
    p.ld = (int64_t)(2 * Hq + 2 * Hkv) * D;
    p.qg = (const bf16_t *)qkv;
    p.k = p.qg + (size_t)2 * Hq * D;
    p.v = p.k + (size_t)Hkv * D;
    p.qn_w = q_norm->f32;
    p.kn_w = k_norm->f32;
    p.pos = c->d_pos;
    p.tok_start = c->d_tok_start;
    p.bt = c->d_bt;
    p.S = c->S;
    p.Hq = Hq;
    p.Hkv = Hkv;
    p.D = D;
    p.rope_dim = rope_dim;
    p.max_blocks = c->max_blocks;
    p.block_size = kv->block_size;
    p.theta = theta;
    p.eps = eps;
    p.q_out = q;
    p.gate_out = gate;
    p.pool = (char *)c->pool.base;
    p.page_bytes = c->pool.page_bytes;
    p.layer_off = layer_off;
    /* the warp-per-head kernel where the shape allows (16-byte rows, power-of-two RoPE lanes) */
    const int rl = rope_dim / 16;
    const bool w256 = D == 256 && (rl == 1 || rl == 2 || rl == 4) && rope_dim % 16 == 0 && p.ld % 8 == 0 &&
                      ((uintptr_t)qkv & 15) == 0;
    if (!(c->skip_qk && skip_step(c))) {
        const int items = c->T * (Hq + Hkv);
        if (w256)
            CK(launch_pdl(k_qk_prep256, dim3((unsigned)((items + 3) / 4)), dim3(128), 0, c->st, p, items));
        else
            CK(launch_pdl(k_qk_prep, dim3((unsigned)c->T, (unsigned)(Hq + Hkv)),
                          dim3((unsigned)((D + 31) / 32 * 32)), 0, c->st, p));
    }
    const float scale = 1.f / sqrtf((float)D);
    const int G = Hkv > 0 ? Hq / Hkv : 0;
    int s0 = 0; /* sequences before s0 went through the decode kernel */
    if (c->n_decode > 0 && D == 256 && (G == 1 || G == 2 || G == 4 || G == 6 || G == 8)) {
        /* decode rows are tokens [0, n_decode), one per sequence, in row order */
        const size_t ws_bytes = attn_decode_workspace_bytes(c->n_decode, Hq, c->max_ctx, c->attn_split);
        void *ws = scratch(c, SCR_ATTN_WS, ws_bytes);
        if (!(c->skip_attn && skip_step(c)))
            CKL(attn_decode_launch(q, c->pool.base, c->pool.page_bytes, c->d_bt, c->max_blocks, c->d_seq_lens,
                                   c->n_decode, c->max_ctx, layer_off, kv->block_size, Hq, Hkv, D, scale, gate, ws,
                                   out, c->attn_split, c->st));
        s0 = c->n_decode;
    }
    if (s0 < c->S)
        CKL(attn_prefill_launch(q, gate, c->pool.base, c->pool.page_bytes, c->d_bt, c->max_blocks, c->d_tok_start,
                                c->d_n_past, c->h_tok_start, s0, c->S, layer_off, kv->block_size, Hq, Hkv, D, scale,
                                out, c->st));
}

/* ---- Gated DeltaNet ------------------------------------------------------------------ */

static void cu_gdn(backend_t *bk, int g, const void *in, const bk_weight_t *conv_w, const bk_weight_t *A_log,
                   const bk_weight_t *dt_bias, const bk_weight_t *norm_w, int Hk, int Hv, int dk, int dv, int Kc,
                   float eps, void *out) {
    cu_ctx_t *c = ctx(bk);
    /* the column blocks of linear_n's output rows [qkv | z | b | a], read in place */
    const int conv_dim = 2 * Hk * dk + Hv * dv, ld = conv_dim + Hv * dv + 2 * Hv;
    const bf16_t *qkv = (const bf16_t *)in, *z = qkv + conv_dim, *b = z + (size_t)Hv * dv, *a = b + Hv;
    if (c->skip_gdn && skip_step(c)) return;
    const statemap_t *sm = &c->pool.sm;
    gdn_state_t st;
    st.pool_base = c->pool.base;
    st.page_bytes = c->pool.page_bytes;
    st.state_pages = c->d_sp;
    st.n_state_pages = c->E;
    st.ssm_loc = c->d_ssm_loc + (size_t)g * sm->hv * sm->n_slices;
    st.slice_rows = sm->slice_rows;
    st.conv_loc = sm->conv[g];
    st.ssm_dtype = sm->ssm_dtype;
    (void)Kc;
    if (c->max_seg <= GDN_RECURRENT_MAX_T) {
        CKL(gdn_decode_launch(qkv, z, b, a, conv_w->bf, A_log->f32, dt_bias->f32, norm_w->f32, c->d_tok_start,
                              c->d_n_past, c->S, c->max_seg, Hk, Hv, dk, dv, eps, &st, out,
                              c->max_seg == 1 ? c->gdn_cfg : 0, ld, c->st));
        return;
    }
    /* A step with long segments: its leading decode rows (one token each) take the
     * recurrent kernel, the other sequences the chunked path, as a batch of their own
     * (rebased cu_seqlens from set_batch, pointers moved past the decode rows). */
    const int s0 = c->n_decode, t0 = c->n_decode; /* one token per decode row */
    if (s0 > 0)
        CKL(gdn_decode_launch(qkv, z, b, a, conv_w->bf, A_log->f32, dt_bias->f32, norm_w->f32, c->d_tok_start,
                              c->d_n_past, s0, 1, Hk, Hv, dk, dv, eps, &st, out, c->gdn_cfg, ld, c->st));
    const int S = c->S - s0, Tn = c->T - t0;
    qkv += (size_t)t0 * ld;
    z += (size_t)t0 * ld;
    b += (size_t)t0 * ld;
    a += (size_t)t0 * ld;
    out = (bf16_t *)out + (size_t)t0 * Hv * dv;
    st.state_pages = c->d_sp + (size_t)s0 * c->E;
    const int32_t *n_past = c->d_n_past + s0;
    const size_t T = (size_t)Tn;
    void *qn = scratch(c, SCR_QN, T * Hk * dk * 2);
    void *kn = scratch(c, SCR_KN, T * Hk * dk * 2);
    void *vv = scratch(c, SCR_V, T * Hv * dv * 2);
    float *gg = (float *)scratch(c, SCR_G, T * Hv * 4);
    float *beta = (float *)scratch(c, SCR_BETA, T * Hv * 4);
    void *ws = scratch(c, SCR_CHUNK_WS, gdn_chunk_workspace_bytes(Tn, Hv));
    void *o = scratch(c, SCR_O, T * Hv * dv * 2);
    CKL(gdn_prefill_prep_launch(qkv, b, a, conv_w->bf, A_log->f32, dt_bias->f32, c->d_tok_pre, n_past, S, Tn, Hk, Hv,
                                dk, dv, &st, qn, kn, vv, gg, beta, ld, c->st));
    CKL(gdn_chunk_launch(qn, kn, vv, gg, beta, c->d_tok_pre, c->h_tok_pre, n_past, S, Tn, Hk, Hv, &st, ws, o,
                         c->st));
    CKL(gdn_gated_norm_launch(o, z, ld, norm_w->f32, Tn, Hv, dv, eps, out, c->st));
}

/* ---- MoE ----------------------------------------------------------------------------- */

static void cu_moe(backend_t *bk, const void *x, const bk_weight_t *router, bk_weight_t *const *egu,
                   bk_weight_t *const *edown, int n_experts, int top_k, bool norm_topk, int I,
                   const bk_weight_t *sgu, const bk_weight_t *sdown, const bk_weight_t *sgate, int Is, int T, int H,
                   void *out) {
    cu_ctx_t *c = ctx(bk);
    if (!c->moe && !(c->moe = moe_ctx_create(c->blas, c->st))) {
        fprintf(stderr, "hyserve: cuda: cannot create the MoE context\n");
        abort();
    }
    const size_t n = 2 * (size_t)n_experts;
    if (c->cap_moe_ptrs < n) {
        c->cap_moe_ptrs = n;
        c->moe_ptrs = (const void **)hs_realloc(c->moe_ptrs, n * sizeof(void *));
    }
    for (int e = 0; e < n_experts; e++) c->moe_ptrs[e] = egu[e]->bf, c->moe_ptrs[n_experts + e] = edown[e]->bf;
    const bool sh = sgu && sdown && Is > 0;
    const moe_layer_t L = {router->bf, c->moe_ptrs, c->moe_ptrs + n_experts, (const void *)egu,
                           sh ? sgu->bf : NULL, sh ? sdown->bf : NULL, sh && sgate ? sgate->bf : NULL,
                           n_experts, top_k, norm_topk ? 1 : 0, I, sh ? Is : 0, H};
    /* the workspace through scratch(): growing it drops recorded graphs first */
    const size_t wsb = moe_workspace_bytes(&L, T);
    CKL(moe_forward(c->moe, &L, x, NULL, T, out, MOE_PATH_AUTO, scratch(c, SCR_MOE, wsb), wsb));
}

/* The two stats kernels of pick: [argmax n | max n | lse n] into d (device). */
static void stats_launch(cu_ctx_t *c, const void *logits, int n, int V, char *d) {
    int nb = (4 * 132 + n - 1) / n; /* ranges per row: about 4 blocks per SM in all */
    if (nb > 64) nb = 64;
    if (nb < 1) nb = 1;
    int chunk = (V + nb - 1) / nb;
    if ((V & 3) == 0) chunk = (chunk + 1023) & ~1023; /* whole float4 rounds of 256 threads */
    stat3 *part = (stat3 *)scratch(c, SCR_STATS, (size_t)n * nb * sizeof(stat3));
    CK(launch_pdl(k_stats_part, dim3((unsigned)nb, (unsigned)n), dim3(256), 0, c->st, (const float *)logits, V, chunk,
                  part));
    CK(launch_pdl(k_stats_combine, dim3((unsigned)n), dim3(32), 0, c->st, (const stat3 *)part, nb, n, d));
}

/* bk->pick: the stats into d_pick, copied to h_pick; then the draws, which also write
 * their tokens over the argmax of their rows in d_pick (after the copy has read it),
 * and their outputs behind the stats in h_pick; pick_done marks the end. */
static void cu_pick(backend_t *bk, const float *logits, int n, int V, const bk_sample_row_t *smp, int n_smp) {
    cu_ctx_t *c = ctx(bk);
    assert(!c->pick_open && n >= 0 && n_smp >= 0 && n_smp <= n);
    if (n > c->cap_pick) { /* the graphs' embeds read d_pick: they go (retire), the device is idle after */
        retire(c, c->d_pick);
        c->cap_pick = n * 2;
        CK(cudaMalloc(&c->d_pick, (size_t)c->cap_pick * 12));
    }
    const size_t st_bytes = ((size_t)n * 12 + 15) & ~(size_t)15;
    const size_t need = st_bytes + (size_t)n_smp * sizeof(bk_sample_out_t);
    if (c->cap_h_pick < need) {
        if (c->h_pick) CK(cudaFreeHost(c->h_pick));
        c->cap_h_pick = need * 2 + 4096;
        CK(cudaMallocHost((void **)&c->h_pick, c->cap_h_pick));
    }
    if (n > 0) {
        stats_launch(c, logits, n, V, c->d_pick);
        CK(cudaMemcpyAsync(c->h_pick, c->d_pick, (size_t)n * 12, cudaMemcpyDeviceToHost, c->st));
    }
    if (n_smp > 0)
        CKL(sample_queue(logits, V, smp, n_smp, (bk_sample_out_t *)(c->h_pick + st_bytes),
                         scratch(c, SCR_SMP, sample_ws_bytes(n_smp)), (int32_t *)c->d_pick, c->st));
    CK(cudaEventRecord(c->pick_done, c->st));
    c->pick_n = n;
    c->pick_n_smp = n_smp;
    c->pick_open = true;
}

static void cu_pick_wait(backend_t *bk, int32_t *argmax, float *mx, float *lse, bk_sample_out_t *smp_out) {
    cu_ctx_t *c = ctx(bk);
    assert(c->pick_open);
    CK(cudaEventSynchronize(c->pick_done));
    c->t_synced = hs_now();
    c->pick_open = false;
    const size_t n = (size_t)c->pick_n;
    if (n == 0) return; /* a step whose rows all continue a prefill */
    memcpy(argmax, c->h_pick, n * 4);
    memcpy(mx, c->h_pick + n * 4, n * 4);
    memcpy(lse, c->h_pick + n * 8, n * 4);
    if (c->pick_n_smp > 0)
        memcpy(smp_out, c->h_pick + ((n * 12 + 15) & ~(size_t)15), (size_t)c->pick_n_smp * sizeof(bk_sample_out_t));
}

/* ---- op timing (HS_CUDA_PROF=1) ---------------------------------------------------- */
/* Every op of the table is wrapped: an event is recorded before it, and at the next host
 * synchronisation the time between consecutive events is charged to the op, by step class
 * (D: pure decode step, P: step with prefill rows) and, for the GEMMs, by shape. The table
 * goes to stderr when the backend is destroyed. Graphs are off while it runs. */
#define PROF_EV 4096
#define PROF_ENT 512
struct cu_prof {
    backend_t inner;                 /* the real op table */
    cudaEvent_t ev[PROF_EV + 1];
    int lab[PROF_EV];
    int n;
    struct {
        char name[96];
        double ms, bytes;
        long calls;
    } ent[PROF_ENT];
    int n_ent;
    long steps[2];
};

static char prof_class(const cu_ctx_t *c) { return c->S > 0 && c->n_decode == c->S ? 'D' : 'P'; }

static void prof_flush(cu_ctx_t *c) {
    cu_prof_t *p = c->prof;
    if (!p || p->n == 0) return;
    CK(cudaEventRecord(p->ev[p->n], c->st));
    CK(cudaEventSynchronize(p->ev[p->n]));
    for (int i = 0; i < p->n; i++) {
        float ms = 0.f;
        CK(cudaEventElapsedTime(&ms, p->ev[i], p->ev[i + 1]));
        p->ent[p->lab[i]].ms += ms;
        p->ent[p->lab[i]].calls++;
    }
    p->n = 0;
}

static void prof_mark(cu_ctx_t *c, double bytes, const char *fmt, ...) {
    cu_prof_t *p = c->prof;
    char name[96];
    name[0] = prof_class(c);
    name[1] = ' ';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name + 2, sizeof name - 2, fmt, ap);
    va_end(ap);
    int e = 0;
    while (e < p->n_ent && strcmp(p->ent[e].name, name) != 0) e++;
    if (e == p->n_ent) {
        if (p->n_ent == PROF_ENT) e = PROF_ENT - 1; /* table full: the last row collects the rest */
        else snprintf(p->ent[p->n_ent++].name, sizeof p->ent[0].name, "%s", name);
    }
    if (p->n == PROF_EV) prof_flush(c);
    CK(cudaEventRecord(p->ev[p->n], c->st));
    p->lab[p->n++] = e;
    p->ent[e].bytes += bytes;
}

static void prof_report(cu_ctx_t *c) {
    cu_prof_t *p = c->prof;
    if (!p) return;
    prof_flush(c);
    int order[PROF_ENT];
    for (int i = 0; i < p->n_ent; i++) order[i] = i;
    for (int i = 1; i < p->n_ent; i++) /* insertion sort by class, then time */
        for (int j = i; j > 0; j--) {
            const int a = order[j - 1], b = order[j];
            const bool swap = p->ent[a].name[0] != p->ent[b].name[0] ? p->ent[a].name[0] > p->ent[b].name[0]
                                                                     : p->ent[a].ms < p->ent[b].ms;
            if (!swap) break;
            order[j - 1] = b, order[j] = a;
        }
    double tot[2] = {0, 0};
    for (int i = 0; i < p->n_ent; i++) tot[p->ent[i].name[0] == 'P'] += p->ent[i].ms;
    fprintf(stderr, "hyserve: cuda op timing (HS_CUDA_PROF): %ld pure-decode steps (D), %ld steps with prefill (P)\n",
            p->steps[0], p->steps[1]);
    for (int k = 0; k < 2; k++)
        if (p->steps[k])
            fprintf(stderr, "  %c: %.3f ms of device time per step (%.1f ms in all)\n", "DP"[k], tot[k] / p->steps[k],
                    tot[k]);
    fprintf(stderr, "  %-44s %8s %10s %10s %9s %6s %8s\n", "op", "calls", "total ms", "ms/step", "us/call", "%",
            "GB/s");
    for (int i = 0; i < p->n_ent; i++) {
        const int e = order[i];
        const int k = p->ent[e].name[0] == 'P';
        const double ms = p->ent[e].ms;
        fprintf(stderr, "  %-44s %8ld %10.2f %10.3f %9.1f %6.1f", p->ent[e].name, p->ent[e].calls, ms,
                p->steps[k] ? ms / p->steps[k] : 0.0, p->ent[e].calls ? 1e3 * ms / p->ent[e].calls : 0.0,
                tot[k] > 0 ? 100.0 * ms / tot[k] : 0.0);
        if (p->ent[e].bytes > 0 && ms > 0) fprintf(stderr, " %8.0f", p->ent[e].bytes / ms / 1e6);
        fprintf(stderr, "\n");
    }
    for (int i = 0; i <= PROF_EV; i++) cudaEventDestroy(p->ev[i]);
    free(p);
    c->prof = NULL;
}

static const char *tclass(int T) { return T == 1 ? "1" : T <= 16 ? "2-16" : T <= 256 ? "17-256" : ">256"; }
#define PI (ctx(bk)->prof->inner)

static void pw_set_batch(backend_t *bk, const bk_batch_t *b, const bk_pool_t *pool) {
    cu_ctx_t *c = ctx(bk);
    PI.set_batch(bk, b, pool);
    c->prof->steps[prof_class(c) == 'P']++;
    prof_mark(c, 0, "set_batch (staging copy)");
}
static void pw_embed(backend_t *bk, const bk_weight_t *w, const int32_t *ids, int T, void *out) {
    prof_mark(ctx(bk), 0, "embed");
    PI.embed(bk, w, ids, T, out);
}
static void pw_linear(backend_t *bk, const void *x, const bk_weight_t *w, int T, void *out) {
    prof_mark(ctx(bk), 2.0 * (double)w->rows * (double)w->cols, "linear %lldx%lld T %s", (long long)w->rows,
              (long long)w->cols, tclass(T));
    PI.linear(bk, x, w, T, out);
}
static void pw_linear_n(backend_t *bk, const void *x, int n, const bk_weight_t *const *w, int T, void *out) {
    double rows = 0;
    for (int i = 0; i < n; i++) rows += (double)w[i]->rows;
    prof_mark(ctx(bk), 2.0 * rows * (double)w[0]->cols, "linear_n %d: %.0fx%lld T %s", n, rows, (long long)w[0]->cols,
              tclass(T));
    PI.linear_n(bk, x, n, w, T, out);
}
static void pw_rmsnorm(backend_t *bk, const void *x, void *res, const bk_weight_t *w, float eps, bool p1, int T, int n,
                       void *out) {
    prof_mark(ctx(bk), 0, "rmsnorm%s", res ? " + residual" : "");
    PI.rmsnorm(bk, x, res, w, eps, p1, T, n, out);
}
static void pw_add(backend_t *bk, void *y, const void *x, int T, int n) {
    prof_mark(ctx(bk), 0, "add");
    PI.add(bk, y, x, T, n);
}
static void pw_attention(backend_t *bk, int a, const void *qkv, const bk_weight_t *qn, const bk_weight_t *kn, int Hq,
                         int Hkv, int D, int rd, float th, float eps, void *out) {
    prof_mark(ctx(bk), 0, "attention");
    PI.attention(bk, a, qkv, qn, kn, Hq, Hkv, D, rd, th, eps, out);
}
static void pw_gdn(backend_t *bk, int g, const void *in, const bk_weight_t *cw, const bk_weight_t *al,
                   const bk_weight_t *dt, const bk_weight_t *nw, int Hk, int Hv, int dk, int dv, int Kc, float eps,
                   void *out) {
    cu_ctx_t *c = ctx(bk);
    prof_mark(c, 0, "gdn (%s)", c->max_seg <= GDN_RECURRENT_MAX_T ? "recurrent" : "chunked");
    PI.gdn(bk, g, in, cw, al, dt, nw, Hk, Hv, dk, dv, Kc, eps, out);
}
static void pw_swiglu(backend_t *bk, const void *gu, int T, int I, void *out) {
    prof_mark(ctx(bk), 0, "swiglu");
    PI.swiglu(bk, gu, T, I, out);
}
static void pw_moe(backend_t *bk, const void *x, const bk_weight_t *r, bk_weight_t *const *egu,
                   bk_weight_t *const *ed, int ne, int k, bool nk, int I, const bk_weight_t *sgu,
                   const bk_weight_t *sd, const bk_weight_t *sg, int Is, int T, int H, void *out) {
    prof_mark(ctx(bk), 0, "moe T %s", tclass(T));
    PI.moe(bk, x, r, egu, ed, ne, k, nk, I, sgu, sd, sg, Is, T, H, out);
}
static void pw_gather_rows(backend_t *bk, const void *x, int H, void *out) {
    prof_mark(ctx(bk), 0, "gather_rows");
    PI.gather_rows(bk, x, H, out);
}
static void pw_logits(backend_t *bk, const void *x, const bk_weight_t *w, int n, void *out) {
    prof_mark(ctx(bk), 2.0 * (double)w->rows * (double)w->cols, "logits %lldx%lld T %s", (long long)w->rows,
              (long long)w->cols, tclass(n));
    PI.logits(bk, x, w, n, out);
}
static void pw_sample(backend_t *bk, const float *l, int n, int V, const bk_sample_row_t *rows,
                      bk_sample_out_t *out) {
    prof_mark(ctx(bk), 0, "sample + copy to host");
    PI.sample(bk, l, n, V, rows, out);
    prof_flush(ctx(bk));
}
static void pw_pick(backend_t *bk, const float *l, int n, int V, const bk_sample_row_t *smp, int n_smp) {
    prof_mark(ctx(bk), 0, "pick (stats, draws, copies to host)");
    PI.pick(bk, l, n, V, smp, n_smp);
}
static void pw_pick_wait(backend_t *bk, int32_t *am, float *mx, float *lse, bk_sample_out_t *out) {
    PI.pick_wait(bk, am, mx, lse, out);
    prof_flush(ctx(bk));
}
static void pw_sync(backend_t *bk) {
    prof_flush(ctx(bk));
    PI.sync(bk);
}
static void pw_download(backend_t *bk, void *dst, const void *src, size_t n) {
    prof_flush(ctx(bk));
    PI.download(bk, dst, src, n);
}
static void pw_upload(backend_t *bk, void *dst, const void *src, size_t n) {
    prof_flush(ctx(bk));
    PI.upload(bk, dst, src, n);
}

static void prof_install(backend_t *bk) {
    cu_ctx_t *c = ctx(bk);
    cu_prof_t *p = (cu_prof_t *)hs_calloc(1, sizeof *p);
    for (int i = 0; i <= PROF_EV; i++) CK(cudaEventCreate(&p->ev[i]));
    p->inner = *bk;
    c->prof = p;
    c->graphs_on = false;
    bk->set_batch = pw_set_batch;
    bk->embed = pw_embed;
    bk->linear = pw_linear;
    bk->linear_n = pw_linear_n;
    bk->rmsnorm = pw_rmsnorm;
    bk->add = pw_add;
    bk->attention = pw_attention;
    bk->gdn = pw_gdn;
    bk->swiglu = pw_swiglu;
    bk->moe = pw_moe;
    bk->gather_rows = pw_gather_rows;
    bk->logits = pw_logits;
    if (bk->sample) bk->sample = pw_sample;
    bk->pick = pw_pick;
    bk->pick_wait = pw_pick_wait;
    bk->sync = pw_sync;
    bk->download = pw_download;
    bk->upload = pw_upload;
}
#undef PI

/* bk->sample (sample.cu); its workspace is SCR_STATS, shared with pick's stats kernels (one
 * stream orders them). */
static void cu_sample(backend_t *bk, const float *logits, int n, int V, const bk_sample_row_t *rows,
                      bk_sample_out_t *out) {
    cu_ctx_t *c = ctx(bk);
    CKL(sample_run(logits, V, rows, n, out, scratch(c, SCR_STATS, sample_ws_bytes(n)), c->st));
}

/* ---- pages -------------------------------------------------------------------------- */

static void cu_page_out(backend_t *bk, const bk_pool_t *pool, int64_t page, void *host) {
    cu_download(bk, host, (const char *)pool->base + (size_t)page * pool->page_bytes, pool->page_bytes);
}
static void cu_page_in(backend_t *bk, const bk_pool_t *pool, int64_t page, const void *host) {
    cu_upload(bk, (char *)pool->base + (size_t)page * pool->page_bytes, host, pool->page_bytes);
}

static void cu_destroy(backend_t *bk) {
    if (!bk) return;
    cu_ctx_t *c = ctx(bk);
    if (c && bk->graphs_replayed > 0 && getenv("HS_CUDA_LAUNCH_TIMES"))
        fprintf(stderr,
                "hyserve: info: cuda: %ld graph replays, host time per replay: %.1f us inside cudaGraphLaunch, "
                "%.1f us before it since the last step's results; %ld shapes first seen (run eagerly), %ld graphs "
                "recorded, %.2f ms each (capture, instantiate, first launch)\n",
                bk->graphs_replayed, c->launch_s * 1e6 / (double)bk->graphs_replayed,
                c->n_between ? c->between_s * 1e6 / (double)c->n_between : 0.0, c->n_first,
                (long)bk->graphs_recorded, bk->graphs_recorded ? c->record_s * 1e3 / (double)bk->graphs_recorded : 0.0);
    if (c) {
        cudaStreamSynchronize(c->st);
        for (int i = 0; i < SCR_N; i++)
            if (c->scr[i].p) cudaFree(c->scr[i].p);
        prof_report(c);
        cuda_trace_report();
        for (int i = 0; i < CU_MAX_GRAPHS; i++)
            if (c->graphs[i].exec) cudaGraphExecDestroy(c->graphs[i].exec);
        if (c->h_stage) cudaFreeHost(c->h_stage);
        if (c->d_stage) cudaFree(c->d_stage);
        if (c->stage_done) cudaEventDestroy(c->stage_done);
        gemm_lt_destroy(c->lt);
        if (c->blas_ws) cudaFree(c->blas_ws);
        if (c->h_pick) cudaFreeHost(c->h_pick);
        if (c->d_pick) cudaFree(c->d_pick);
        if (c->pick_done) cudaEventDestroy(c->pick_done);
        if (c->d_ssm_loc) cudaFree(c->d_ssm_loc);
        free(c->h_tok_start);
        free(c->h_n_past);
        free(c->h_seq_lens);
        free(c->h_tok_pre);
        moe_ctx_destroy(c->moe);
        free(c->moe_ptrs);
        if (c->blas) cublasDestroy(c->blas);
        if (c->st) cudaStreamDestroy(c->st);
        free(c);
    }
    free(bk);
}

extern "C" backend_t *backend_cuda_create(int device, char *err, size_t n) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        hs_errf(err, n, HS_ERR_UNSUPPORTED, "no CUDA device: %s", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        cudaGetLastError();
        return NULL;
    }
    if (device < 0 || device >= count) {
        hs_errf(err, n, HS_ERR_INVALID, "CUDA device %d does not exist (%d found)", device, count);
        return NULL;
    }
    cudaDeviceProp prop;
    if (cudaSetDevice(device) != cudaSuccess || cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
        hs_errf(err, n, HS_ERR_STATE, "cannot use CUDA device %d", device);
        return NULL;
    }
    if (prop.major != 9) {
        hs_errf(err, n, HS_ERR_UNSUPPORTED, "CUDA device %d is %s (sm_%d%d); this build targets sm_90a (Hopper)", device,
                prop.name, prop.major, prop.minor);
        return NULL;
    }
    cu_ctx_t *c = (cu_ctx_t *)hs_calloc(1, sizeof *c);
    c->device = device;
    if (cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking) != cudaSuccess ||
        cublasCreate(&c->blas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(c->blas, c->st) != CUBLAS_STATUS_SUCCESS) {
        hs_errf(err, n, HS_ERR_STATE, "cannot create a CUDA stream or cuBLAS handle on device %d", device);
        free(c);
        return NULL;
    }
    /* cuBLAS gets a fixed workspace: it must not allocate while a graph is recorded. */
    const size_t blas_ws = 32u << 20;
    if (cudaEventCreateWithFlags(&c->stage_done, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&c->pick_done, cudaEventDisableTiming) != cudaSuccess ||
        cudaMalloc(&c->d_pick, (size_t)CU_PICK_ROWS0 * 12) != cudaSuccess ||
        cudaMalloc(&c->blas_ws, blas_ws) != cudaSuccess ||
        cublasSetWorkspace(c->blas, c->blas_ws, blas_ws) != CUBLAS_STATUS_SUCCESS) {
        hs_errf(err, n, HS_ERR_STATE, "cannot set up the cuBLAS workspace on device %d", device);
        cudaGetLastError();
        if (c->blas_ws) cudaFree(c->blas_ws);
        if (c->d_pick) cudaFree(c->d_pick);
        if (c->pick_done) cudaEventDestroy(c->pick_done);
        if (c->stage_done) cudaEventDestroy(c->stage_done);
        cublasDestroy(c->blas);
        cudaStreamDestroy(c->st);
        free(c);
        return NULL;
    }
    c->cap_pick = CU_PICK_ROWS0;
    const char *lv = getenv("HS_CUDA_GEMM_LT"); /* unset: 2..256 rows */
    c->lt_max_m = lv ? atoi(lv) : 256; /* above, GemmEx's first choice was as fast (RESULTS.md) */
    if (c->lt_max_m > 0) c->lt = gemm_lt_create(c->blas_ws, blas_ws); /* NULL: cuBLAS alone */
    if (getenv("HS_CUDA_TRACE")) cuda_trace_start(); /* kernel timeline at the end (trace.h) */
    const char *gv = getenv("HS_CUDA_GRAPHS");
    c->graphs_on = !(gv && strcmp(gv, "0") == 0);
    const char *ga = getenv("HS_CUDA_GRAPH_AFTER");
    c->graph_after = ga && atoi(ga) > 1 ? atoi(ga) : 0;
    const char *sk = getenv("HS_CUDA_SKIP");
    c->skip_gdn = sk && strstr(sk, "gdn");
    c->skip_attn = sk && strstr(sk, "attn");
    c->skip_norm = sk && strstr(sk, "norm");
    c->skip_swiglu = sk && strstr(sk, "swiglu");
    c->skip_qk = sk && strstr(sk, "qk");
    const char *as = getenv("HS_CUDA_ATTN_SPLIT");
    c->attn_split = as && atoi(as) > 0 ? atoi(as) : 0;
    const char *gc = getenv("HS_CUDA_GDN_CFG"); /* gdn_decode_launch's cfg_override (benchmarks) */
    c->gdn_cfg = gc && atoi(gc) > 0 ? atoi(gc) : 0;
    const char *av = getenv("HS_CUDA_ATTN_VARIANT"); /* attn_decode_config's variant (benchmarks) */
    if (av) attn_decode_config(atoi(av), -1);
    if (sk) fprintf(stderr, "hyserve: warning: HS_CUDA_SKIP=%s: decode steps leave kernels out (timing only)\n", sk);
    backend_t *bk = (backend_t *)hs_calloc(1, sizeof *bk);
    bk->name = "cuda";
    bk->act_dtype = HS_BF16;
    bk->ctx = c;
    bk->alloc = cu_alloc;
    bk->free = cu_free;
    bk->upload = cu_upload;
    bk->download = cu_download;
    bk->copy = cu_copy;
    bk->sync = cu_sync;
    bk->mem_info = cu_mem_info;
    bk->act_upload = cu_act_upload;
    bk->act_download = cu_act_download;
    bk->weight_load = cu_weight_load;
    bk->weight_free = cu_weight_free;
    const char *kv = getenv("HS_CUDA_PACK");
    if (!(kv && strcmp(kv, "0") == 0)) bk->weights_pack = cu_weights_pack; /* HS_CUDA_PACK=0: separate */
    bk->set_batch = cu_set_batch;
    bk->embed = cu_embed;
    bk->linear = cu_linear;
    bk->linear_n = cu_linear_n;
    bk->rmsnorm = cu_rmsnorm;
    bk->add = cu_add;
    bk->attention = cu_attention;
    bk->gdn = cu_gdn;
    bk->swiglu = cu_swiglu;
    bk->moe = cu_moe;
    bk->gather_rows = cu_gather_rows;
    bk->logits = cu_logits;
    bk->pick = cu_pick;
    bk->pick_wait = cu_pick_wait;
    bk->sample = cu_sample;
    bk->page_out = cu_page_out;
    bk->page_in = cu_page_in;
    bk->destroy = cu_destroy;
    bk->graph_launch = cu_graph_launch;
    bk->graph_begin = cu_graph_begin;
    bk->graph_end = cu_graph_end;
    const char *pv = getenv("HS_CUDA_PROF");
    if (pv && strcmp(pv, "0") != 0) prof_install(bk);
    return bk;
}
