/*
 * cuda_backend: the backend.h op table on one NVIDIA GPU (sm_90a), activations bf16.
 *
 * Memory: cudaMalloc'd buffers (zeroed), one stream, one cuBLAS handle. Weights:
 * matrices (rows > 1) are stored bf16 (fp8 E4M3 with 128x128 block scales and fp16
 * are converted on the host at load); vectors (rows == 1: norms, A_log, dt_bias, the
 * shared-expert gate) are stored both fp32 (what the kernels read) and bf16 (what a
 * GEMM reads).
 *
 * Ops and where their work happens:
 *   linear, logits        cuBLAS GemmEx, bf16 x bf16 -> bf16 (logits: fp32), fp32 accumulate
 *   embed, rmsnorm (+residual add), add, swiglu, gather_rows     small kernels below
 *   attention             k_qk_prep: q/k norm (1+w), partial rotate-half RoPE, K/V written
 *                         into the paged cache; then decode rows (1 token, history) through
 *                         attn_decode_launch (split-KV, D = 256) and every other row through
 *                         k_attn_rows (one warp-group per (token, head), online softmax over
 *                         the sequence's cached keys, causal), sigmoid gate applied in both
 *   gdn                   segments of <= 64 tokens: gdn_decode_launch (fused conv, gates, L2
 *                         norm, recurrence, gated norm; state in place); longer segments:
 *                         gdn_prefill_prep_launch -> gdn_chunk_launch -> gdn_gated_norm_launch
 *   moe                   router GEMM (fp32) -> k_topk (softmax, top-k, renormalise) -> ids to
 *                         the host -> per expert: gather rows, gate_up GEMM, swiglu, down GEMM,
 *                         weighted accumulate (fp32) -> shared expert and its sigmoid gate
 *   page_out / page_in    cudaMemcpy of one page
 * The batch (set_batch) is copied to device buffers once per step; the host keeps
 * cu_seqlens, n_past and the derived sizes (decode rows, longest segment).
 *
 * Limits (checked at set-up by backend_cuda_check_model): the GDN kernels need
 * dk = dv = 128 and Kc = 4 (every released model); KV in bf16 (fp8 KV is not yet
 * implemented here); head dim <= 1024.
 * Every CUDA call is checked; a failure inside an op is a broken device and aborts
 * with the call and its location (ops cannot return errors, backend.h).
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
#include "cuda_ops.h"
#include "cuda_sample.h"

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
};

enum { SCR_IDS, SCR_Q, SCR_GATE, SCR_ATTN_WS, SCR_QN, SCR_KN, SCR_V, SCR_G, SCR_BETA, SCR_CHUNK_WS, SCR_O,
       SCR_ROUTER, SCR_TOPK_ID, SCR_TOPK_W, SCR_MOE_IDX, SCR_MOE_X, SCR_MOE_GU, SCR_MOE_ACT, SCR_MOE_Y,
       SCR_MOE_ACC, SCR_SH_GU, SCR_SH_ACT, SCR_SH_Y, SCR_SH_G, SCR_STATS, SCR_N };

typedef struct {
    void *p;
    size_t bytes;
} scratch_t;

typedef struct {
    int device;
    cudaStream_t st;
    cublasHandle_t blas;
    /* the step's batch: device copies and the host facts the launchers need */
    int S, T, max_blocks, E, n_logits;
    int n_decode;         /* leading rows with 1 token and history (the scheduler puts them first) */
    int max_seg;          /* longest segment of the step */
    int max_ctx;          /* longest n_past + segment */
    int32_t *d_tok_start, *d_n_past, *d_pos, *d_bt, *d_sp, *d_logit_rows, *d_seq_lens;
    size_t cap_tok_start, cap_n_past, cap_pos, cap_bt, cap_sp, cap_logit_rows, cap_seq_lens;
    int32_t *h_tok_start, *h_n_past, *h_seq_lens;
    size_t cap_h;
    bk_pool_t pool;
    bool has_pool;
    sm_loc_t *d_ssm_loc;  /* whole state map's ssm granules [n_gdn][Hv][n_slices] */
    const void *ssm_loc_src; /* host array the device copy came from */
    scratch_t scr[SCR_N];
    /* host staging for MoE routing */
    int32_t *h_ids;
    float *h_w;
    int32_t *h_idx;
    float *h_idx_w;
    size_t cap_moe_h;
} cu_ctx_t;

static cu_ctx_t *ctx(backend_t *bk) { return (cu_ctx_t *)bk->ctx; }

static void *scratch(cu_ctx_t *c, int i, size_t bytes) {
    if (c->scr[i].bytes < bytes) {
        if (c->scr[i].p) CK(cudaFree(c->scr[i].p));
        size_t nb = bytes + bytes / 4 + 256;
        CK(cudaMalloc(&c->scr[i].p, nb));
        c->scr[i].bytes = nb;
    }
    return c->scr[i].p;
}

/* Grow a device int32 buffer to n elements and copy src into it. */
static int32_t *upload_i32(cu_ctx_t *c, int32_t **buf, size_t *cap, const int32_t *src, size_t n) {
    if (n == 0) n = 1, src = NULL;
    if (*cap < n) {
        if (*buf) CK(cudaFree(*buf));
        *cap = n * 2;
        CK(cudaMalloc(buf, *cap * sizeof(int32_t)));
    }
    if (src) CK(cudaMemcpyAsync(*buf, src, n * sizeof(int32_t), cudaMemcpyHostToDevice, c->st));
    return *buf;
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

__global__ void k_embed(const int32_t *ids, const bf16_t *table, int64_t H, bf16_t *out) {
    const int t = blockIdx.x;
    const bf16_t *src = table + (int64_t)ids[t] * H;
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) out[(int64_t)t * H + i] = src[i];
}

/* out = norm(x [+ residual]) * (plus_one ? 1 + w : w); residual (bf16) gets the sum. */
__global__ void k_rmsnorm(const bf16_t *x, bf16_t *res, const float *w, float eps, int plus_one, int n, bf16_t *out) {
    __shared__ float sh[32];
    const int64_t row = blockIdx.x;
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

__global__ void k_add(bf16_t *y, const bf16_t *x, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = f2bf(bf2f(y[i]) + bf2f(x[i]));
}

__global__ void k_swiglu(const bf16_t *gu, int64_t T, int I, bf16_t *out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= T * I) return;
    const int64_t t = i / I, j = i % I;
    const float g = bf2f(gu[t * 2 * I + j]), u = bf2f(gu[t * 2 * I + I + j]);
    out[i] = f2bf(silu_f(g) * u);
}

__global__ void k_gather_rows(const bf16_t *x, const int32_t *rows, int H, bf16_t *out) {
    const int r = blockIdx.x;
    for (int i = threadIdx.x; i < H; i += blockDim.x) out[(int64_t)r * H + i] = x[(int64_t)rows[r] * H + i];
}

struct qk_params {
    bf16_t *qg;            /* [T][Hq*2D] */
    const bf16_t *k, *v;   /* [T][Hkv*D] */
    const float *qn_w, *kn_w;
    const int32_t *pos, *tok_start, *bt;
    int S, Hq, Hkv, D, rope_dim, max_blocks, block_size;
    float theta, eps;
    bf16_t *q_out, *gate_out; /* [T][Hq][D] */
    char *pool;
    size_t page_bytes, layer_off;
};

__device__ __forceinline__ int seq_of_tok(const int32_t *ts, int S, int t) {
    int lo = 0, hi = S - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (ts[mid] <= t) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* One block per (token, head): heads [0, Hq) are query heads, [Hq, Hq+Hkv) KV heads.
 * blockDim = D rounded up to a warp. Norm (1+w) over D in fp32, rotate-half RoPE on the
 * first rope_dim dims, then q -> q_out (and the gate half -> gate_out), k and v -> cache. */
__global__ void k_qk_prep(const qk_params p) {
    __shared__ float sh[32];
    __shared__ float xs[1024];
    const int t = blockIdx.x, h = blockIdx.y, i = threadIdx.x;
    const bool isq = h < p.Hq;
    const int kh = h - p.Hq;
    const bf16_t *src = isq ? p.qg + ((int64_t)t * p.Hq * 2 + (int64_t)h * 2) * p.D : p.k + ((int64_t)t * p.Hkv + kh) * p.D;
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
    const int s = seq_of_tok(p.tok_start, p.S, t);
    const int position = p.pos[t];
    const int blk = p.bt[(int64_t)s * p.max_blocks + position / p.block_size];
    const int row = position % p.block_size;
    char *base = p.pool + (size_t)blk * p.page_bytes + p.layer_off;
    const size_t kv_row = ((size_t)row * p.Hkv + kh) * p.D;
    bf16_t *kd = reinterpret_cast<bf16_t *>(base) + kv_row;
    bf16_t *vd = reinterpret_cast<bf16_t *>(base) + (size_t)p.block_size * p.Hkv * p.D + kv_row;
    kd[i] = f2bf(y);
    vd[i] = p.v[((int64_t)t * p.Hkv + kh) * p.D + i];
}

struct attn_params {
    const bf16_t *q, *gate;   /* [T][Hq][D] */
    const int32_t *tok_start, *n_past, *pos, *bt;
    int S, Hq, Hkv, D, max_blocks, block_size, t0;
    float scale;
    const char *pool;
    size_t page_bytes, layer_off;
    bf16_t *out;              /* [T][Hq*D] */
};

/* One block (4 warps) per (token t0 + blockIdx.x, query head): causal attention over the
 * sequence's keys [0, pos] from the paged cache, online softmax per warp, merged. */
#define AR_WARPS 4
#define AR_MAXD 8 /* D <= 256: 8 dims per lane */
__global__ void __launch_bounds__(128) k_attn_rows(const attn_params p) {
    __shared__ float m_sh[AR_WARPS], l_sh[AR_WARPS];
    __shared__ float o_sh[AR_WARPS][256];
    const int t = p.t0 + blockIdx.x, h = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int s = seq_of_tok(p.tok_start, p.S, t);
    const int kh = h / (p.Hq / p.Hkv);
    const int npl = p.D / 32; /* dims per lane */
    float q[AR_MAXD], acc[AR_MAXD];
    for (int j = 0; j < npl; j++) {
        q[j] = bf2f(p.q[((int64_t)t * p.Hq + h) * p.D + lane * npl + j]) * p.scale;
        acc[j] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    const int last = p.pos[t];
    const size_t vstride = (size_t)p.block_size * p.Hkv * p.D;
    for (int key = warp; key <= last; key += AR_WARPS) {
        const int blk = p.bt[(int64_t)s * p.max_blocks + key / p.block_size];
        const bf16_t *kp = reinterpret_cast<const bf16_t *>(p.pool + (size_t)blk * p.page_bytes + p.layer_off) +
                           ((size_t)(key % p.block_size) * p.Hkv + kh) * p.D + lane * npl;
        float d = 0.f;
        for (int j = 0; j < npl; j++) d += q[j] * bf2f(kp[j]);
        d = warp_sum(d);
        const float mn = fmaxf(m, d);
        const float corr = __expf(m - mn), pe = __expf(d - mn);
        l = l * corr + pe;
        const bf16_t *vp = kp + vstride;
        for (int j = 0; j < npl; j++) acc[j] = acc[j] * corr + pe * bf2f(vp[j]);
        m = mn;
    }
    if (lane == 0) m_sh[warp] = m, l_sh[warp] = l;
    for (int j = 0; j < npl; j++) o_sh[warp][lane * npl + j] = acc[j];
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < AR_WARPS; w++) M = fmaxf(M, m_sh[w]);
    float L = 0.f;
    for (int w = 0; w < AR_WARPS; w++) L += m_sh[w] == -INFINITY ? 0.f : l_sh[w] * __expf(m_sh[w] - M);
    for (int i = threadIdx.x; i < p.D; i += blockDim.x) {
        float o = 0.f;
        for (int w = 0; w < AR_WARPS; w++)
            if (m_sh[w] != -INFINITY) o += o_sh[w][i] * __expf(m_sh[w] - M);
        o /= L;
        const float g = bf2f(p.gate[((int64_t)t * p.Hq + h) * p.D + i]);
        p.out[((int64_t)t * p.Hq + h) * p.D + i] = f2bf(o * sigmoid_f(g));
    }
}

/* Router probabilities -> top-k ids and weights. One warp per token, E <= 1024, k <= 32. */
__global__ void k_topk(const float *logits, int T, int E, int k, int norm, int32_t *ids, float *w) {
    const int t = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (t >= T) return;
    const float *r = logits + (int64_t)t * E;
    float mx = -INFINITY;
    for (int e = lane; e < E; e += 32) mx = fmaxf(mx, r[e]);
    mx = warp_max(mx);
    float z = 0.f;
    for (int e = lane; e < E; e += 32) z += __expf(r[e] - mx);
    z = warp_sum(z);
    unsigned taken[32] = {0}; /* bitmap of chosen experts, E <= 1024 */
    float sum = 0.f;
    for (int j = 0; j < k; j++) {
        float best = -INFINITY;
        int bi = 0x7fffffff;
        for (int e = lane; e < E; e += 32) {
            if (taken[e >> 5] >> (e & 31) & 1) continue;
            if (r[e] > best || (r[e] == best && e < bi)) best = r[e], bi = e;
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float ob = __shfl_xor_sync(0xffffffffu, best, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ob > best || (ob == best && oi < bi)) best = ob, bi = oi;
        }
        taken[bi >> 5] |= 1u << (bi & 31);
        const float pr = __expf(best - mx) / z;
        sum += pr;
        if (lane == 0) ids[(int64_t)t * k + j] = bi, w[(int64_t)t * k + j] = pr;
    }
    if (norm && lane == 0)
        for (int j = 0; j < k; j++) w[(int64_t)t * k + j] /= sum;
}

__global__ void k_gather_idx(const bf16_t *x, const int32_t *idx, int H, bf16_t *out) {
    const int r = blockIdx.x;
    for (int i = threadIdx.x; i < H; i += blockDim.x) out[(int64_t)r * H + i] = x[(int64_t)idx[r] * H + i];
}

/* acc[idx[r]] += w[r] * y[r] for the rows of one expert (a token appears once per expert). */
__global__ void k_scatter_acc(const bf16_t *y, const int32_t *idx, const float *w, int H, float *acc) {
    const int r = blockIdx.x;
    const float wr = w[r];
    for (int i = threadIdx.x; i < H; i += blockDim.x) acc[(int64_t)idx[r] * H + i] += wr * bf2f(y[(int64_t)r * H + i]);
}

__global__ void k_moe_finish(const float *acc, const bf16_t *shared, const float *sgate, int64_t T, int H, bf16_t *out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= T * H) return;
    float v = acc[i];
    if (shared) v += sigmoid_f(sgate[i / H]) * bf2f(shared[i]);
    out[i] = f2bf(v);
}

/* Per row: argmax (lowest id on ties), max, log-sum-exp (fp32, sum in fp32). */
__global__ void k_logits_stats(const float *logits, int V, int32_t *argmax, float *mx_out, float *lse_out) {
    __shared__ float sv[32];
    __shared__ int si[32];
    __shared__ float sh[32];
    const float *x = logits + (int64_t)blockIdx.x * V;
    float best = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        if (x[i] > best) best = x[i], bi = i;
    for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(0xffffffffu, best, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ob > best || (ob == best && oi < bi)) best = ob, bi = oi;
    }
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    if (l == 0) sv[w] = best, si[w] = bi;
    __syncthreads();
    best = l < nw ? sv[l] : -INFINITY;
    bi = l < nw ? si[l] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) {
        const float ob = __shfl_xor_sync(0xffffffffu, best, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ob > best || (ob == best && oi < bi)) best = ob, bi = oi;
    }
    float s = 0.f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += __expf(x[i] - best);
    s = block_sum(s, sh);
    if (threadIdx.x == 0) {
        argmax[blockIdx.x] = bi;
        mx_out[blockIdx.x] = best;
        lse_out[blockIdx.x] = best + logf(s);
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
    if (w->bf) CK(cudaFree(w->bf));
    if (w->f32) CK(cudaFree(w->f32));
    free(w);
}

/* ---- batch ------------------------------------------------------------------------ */

static void cu_set_batch(backend_t *bk, const bk_batch_t *b, const bk_pool_t *pool) {
    cu_ctx_t *c = ctx(bk);
    c->S = b->n_seqs;
    c->T = b->n_tokens;
    c->max_blocks = b->max_blocks;
    c->E = b->n_state_pages;
    c->n_logits = b->n_logits;
    if (c->cap_h < (size_t)b->n_seqs + 1) {
        c->cap_h = (size_t)b->n_seqs * 2 + 2;
        c->h_tok_start = (int32_t *)hs_realloc(c->h_tok_start, c->cap_h * 4);
        c->h_n_past = (int32_t *)hs_realloc(c->h_n_past, c->cap_h * 4);
        c->h_seq_lens = (int32_t *)hs_realloc(c->h_seq_lens, c->cap_h * 4);
    }
    memcpy(c->h_tok_start, b->tok_start, ((size_t)b->n_seqs + 1) * 4);
    memcpy(c->h_n_past, b->n_past, (size_t)b->n_seqs * 4);
    c->n_decode = 0;
    c->max_seg = 0;
    c->max_ctx = 0;
    bool prefix = true;
    for (int s = 0; s < b->n_seqs; s++) {
        const int len = b->tok_start[s + 1] - b->tok_start[s];
        c->h_seq_lens[s] = b->n_past[s] + len;
        if (len > c->max_seg) c->max_seg = len;
        if (c->h_seq_lens[s] > c->max_ctx) c->max_ctx = c->h_seq_lens[s];
        if (prefix && len == 1 && b->n_past[s] > 0) c->n_decode++;
        else prefix = false;
    }
    upload_i32(c, &c->d_tok_start, &c->cap_tok_start, b->tok_start, (size_t)b->n_seqs + 1);
    upload_i32(c, &c->d_n_past, &c->cap_n_past, b->n_past, (size_t)b->n_seqs);
    upload_i32(c, &c->d_pos, &c->cap_pos, b->positions, (size_t)b->n_tokens);
    upload_i32(c, &c->d_bt, &c->cap_bt, b->block_tables, (size_t)b->n_seqs * (size_t)b->max_blocks);
    upload_i32(c, &c->d_sp, &c->cap_sp, b->state_pages, (size_t)b->n_seqs * (size_t)b->n_state_pages);
    upload_i32(c, &c->d_logit_rows, &c->cap_logit_rows, b->logit_rows, (size_t)b->n_logits);
    upload_i32(c, &c->d_seq_lens, &c->cap_seq_lens, c->h_seq_lens, (size_t)b->n_seqs);
    c->pool = *pool;
    c->has_pool = true;
    /* The state map's granule table, once per map. */
    const statemap_t *sm = &pool->sm;
    if (sm->n_gdn > 0 && c->ssm_loc_src != (const void *)sm->ssm) {
        const size_t n = (size_t)sm->n_gdn * sm->hv * sm->n_slices;
        if (c->d_ssm_loc) CK(cudaFree(c->d_ssm_loc));
        CK(cudaMalloc(&c->d_ssm_loc, n * sizeof(sm_loc_t)));
        CK(cudaMemcpy(c->d_ssm_loc, sm->ssm, n * sizeof(sm_loc_t), cudaMemcpyHostToDevice));
        c->ssm_loc_src = sm->ssm;
    }
    /* No sync: copies from pageable host memory have left the source on return. */
}

/* ---- GEMM ---------------------------------------------------------------------------- */

/* out[T, N] = x[T, K] @ W[N, K]^T; out_f32 selects an fp32 output. */
static void gemm(cu_ctx_t *c, const void *x, const bk_weight_t *w, int T, void *out, bool out_f32) {
    const float one = 1.f, zero = 0.f;
    const int N = (int)w->rows, K = (int)w->cols;
    CKB(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &one, w->bf, CUDA_R_16BF, K, x, CUDA_R_16BF, K,
                     &zero, out, out_f32 ? CUDA_R_32F : CUDA_R_16BF, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

static void cu_linear(backend_t *bk, const void *x, const bk_weight_t *w, int T, void *out) {
    gemm(ctx(bk), x, w, T, out, false);
}

static void cu_logits(backend_t *bk, const void *x, const bk_weight_t *lm_head, int n, void *out) {
    gemm(ctx(bk), x, lm_head, n, out, true);
}

/* ---- simple ops ------------------------------------------------------------------ */

static void cu_embed(backend_t *bk, const bk_weight_t *embed, const int32_t *ids, int T, void *out) {
    cu_ctx_t *c = ctx(bk);
    int32_t *d = (int32_t *)scratch(c, SCR_IDS, (size_t)T * 4);
    CK(cudaMemcpyAsync(d, ids, (size_t)T * 4, cudaMemcpyHostToDevice, c->st));
    /* From pageable memory the copy has left `ids` when cudaMemcpyAsync returns. */
    k_embed<<<T, 256, 0, c->st>>>(d, embed->bf, embed->cols, (bf16_t *)out);
    LAUNCHED();
}

static void cu_rmsnorm(backend_t *bk, const void *x, void *residual, const bk_weight_t *w, float eps, bool plus_one,
                       int T, int n, void *out) {
    k_rmsnorm<<<T, 256, 0, ctx(bk)->st>>>((const bf16_t *)x, (bf16_t *)residual, w->f32, eps, plus_one, n,
                                          (bf16_t *)out);
    LAUNCHED();
}

static void cu_add(backend_t *bk, void *y, const void *x, int T, int n) {
    const int64_t N = (int64_t)T * n;
    k_add<<<(unsigned)((N + 255) / 256), 256, 0, ctx(bk)->st>>>((bf16_t *)y, (const bf16_t *)x, N);
    LAUNCHED();
}

static void cu_swiglu(backend_t *bk, const void *gu, int T, int I, void *out) {
    const int64_t N = (int64_t)T * I;
    k_swiglu<<<(unsigned)((N + 255) / 256), 256, 0, ctx(bk)->st>>>((const bf16_t *)gu, T, I, (bf16_t *)out);
    LAUNCHED();
}

static void cu_gather_rows(backend_t *bk, const void *x, int H, void *out) {
    cu_ctx_t *c = ctx(bk);
    if (c->n_logits == 0) return;
    k_gather_rows<<<c->n_logits, 256, 0, c->st>>>((const bf16_t *)x, c->d_logit_rows, H, (bf16_t *)out);
    LAUNCHED();
}

/* ---- attention ------------------------------------------------------------------- */

static void cu_attention(backend_t *bk, int a, void *qg, void *k, const void *v, const bk_weight_t *q_norm,
                         const bk_weight_t *k_norm, int Hq, int Hkv, int D, int rope_dim, float theta, float eps,
                         void *out) {
    cu_ctx_t *c = ctx(bk);
    const kv_layout_t *kv = &c->pool.kv;
    const size_t layer_off = kv_offset(kv, a, 0, 0, 0);
    bf16_t *q = (bf16_t *)scratch(c, SCR_Q, (size_t)c->T * Hq * D * 2);
    bf16_t *gate = (bf16_t *)scratch(c, SCR_GATE, (size_t)c->T * Hq * D * 2);
    qk_params p;
    p.qg = (bf16_t *)qg;
    p.k = (const bf16_t *)k;
    p.v = (const bf16_t *)v;
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
    k_qk_prep<<<dim3((unsigned)c->T, (unsigned)(Hq + Hkv)), (unsigned)((D + 31) / 32 * 32), 0, c->st>>>(p);
    LAUNCHED();
    const float scale = 1.f / sqrtf((float)D);
    int first = 0;
    if (c->n_decode > 0 && D == 256) {
        /* decode rows are tokens [0, n_decode), one per sequence, in row order */
        const size_t ws_bytes = attn_decode_workspace_bytes(c->n_decode, Hq, c->max_ctx);
        void *ws = scratch(c, SCR_ATTN_WS, ws_bytes);
        CKL(attn_decode_launch(q, c->pool.base, c->pool.page_bytes, c->d_bt, c->max_blocks, c->d_seq_lens,
                               c->n_decode, c->max_ctx, layer_off, kv->block_size, Hq, Hkv, D, scale, gate, ws, out,
                               0, c->st));
        first = c->n_decode; /* tokens of the decode rows */
    }
    if (first < c->T) {
        attn_params ap;
        ap.q = q;
        ap.gate = gate;
        ap.tok_start = c->d_tok_start;
        ap.n_past = c->d_n_past;
        ap.pos = c->d_pos;
        ap.bt = c->d_bt;
        ap.S = c->S;
        ap.Hq = Hq;
        ap.Hkv = Hkv;
        ap.D = D;
        ap.max_blocks = c->max_blocks;
        ap.block_size = kv->block_size;
        ap.t0 = first;
        ap.scale = scale;
        ap.pool = (const char *)c->pool.base;
        ap.page_bytes = c->pool.page_bytes;
        ap.layer_off = layer_off;
        ap.out = (bf16_t *)out;
        k_attn_rows<<<dim3((unsigned)(c->T - first), (unsigned)Hq), 128, 0, c->st>>>(ap);
        LAUNCHED();
    }
}

/* ---- Gated DeltaNet ------------------------------------------------------------------ */

static void cu_gdn(backend_t *bk, int g, const void *qkv, const void *z, const void *b, const void *a,
                   const bk_weight_t *conv_w, const bk_weight_t *A_log, const bk_weight_t *dt_bias,
                   const bk_weight_t *norm_w, int Hk, int Hv, int dk, int dv, int Kc, float eps, void *out) {
    cu_ctx_t *c = ctx(bk);
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
                              c->d_n_past, c->S, c->max_seg, Hk, Hv, dk, dv, eps, &st, out, 0, c->st));
        return;
    }
    const size_t T = (size_t)c->T;
    void *qn = scratch(c, SCR_QN, T * Hk * dk * 2);
    void *kn = scratch(c, SCR_KN, T * Hk * dk * 2);
    void *vv = scratch(c, SCR_V, T * Hv * dv * 2);
    float *gg = (float *)scratch(c, SCR_G, T * Hv * 4);
    float *beta = (float *)scratch(c, SCR_BETA, T * Hv * 4);
    void *ws = scratch(c, SCR_CHUNK_WS, gdn_chunk_workspace_bytes(c->T, Hv));
    void *o = scratch(c, SCR_O, T * Hv * dv * 2);
    CKL(gdn_prefill_prep_launch(qkv, b, a, conv_w->bf, A_log->f32, dt_bias->f32, c->d_tok_start, c->d_n_past, c->S,
                                c->T, Hk, Hv, dk, dv, &st, qn, kn, vv, gg, beta, c->st));
    CKL(gdn_chunk_launch(qn, kn, vv, gg, beta, c->d_tok_start, c->h_tok_start, c->d_n_past, c->S, c->T, Hk, Hv, &st,
                         ws, o, c->st));
    CKL(gdn_gated_norm_launch(o, z, norm_w->f32, c->T, Hv, dv, eps, out, c->st));
}

/* ---- MoE ----------------------------------------------------------------------------- */

static void cu_moe(backend_t *bk, const void *x, const bk_weight_t *router, bk_weight_t *const *egu,
                   bk_weight_t *const *edown, int n_experts, int top_k, bool norm_topk, int I,
                   const bk_weight_t *sgu, const bk_weight_t *sdown, const bk_weight_t *sgate, int Is, int T, int H,
                   void *out) {
    cu_ctx_t *c = ctx(bk);
    float *rl = (float *)scratch(c, SCR_ROUTER, (size_t)T * n_experts * 4);
    gemm(c, x, router, T, rl, true);
    int32_t *ids = (int32_t *)scratch(c, SCR_TOPK_ID, (size_t)T * top_k * 4);
    float *wts = (float *)scratch(c, SCR_TOPK_W, (size_t)T * top_k * 4);
    k_topk<<<(unsigned)((T + 3) / 4), 128, 0, c->st>>>(rl, T, n_experts, top_k, norm_topk, ids, wts);
    LAUNCHED();
    const size_t nk = (size_t)T * top_k;
    if (c->cap_moe_h < nk) {
        c->cap_moe_h = nk * 2;
        c->h_ids = (int32_t *)hs_realloc(c->h_ids, c->cap_moe_h * 4);
        c->h_w = (float *)hs_realloc(c->h_w, c->cap_moe_h * 4);
        c->h_idx = (int32_t *)hs_realloc(c->h_idx, c->cap_moe_h * 4);
        c->h_idx_w = (float *)hs_realloc(c->h_idx_w, c->cap_moe_h * 4);
    }
    CK(cudaMemcpyAsync(c->h_ids, ids, nk * 4, cudaMemcpyDeviceToHost, c->st));
    CK(cudaMemcpyAsync(c->h_w, wts, nk * 4, cudaMemcpyDeviceToHost, c->st));
    CK(cudaStreamSynchronize(c->st));
    /* Group (token, weight) pairs by expert: counting sort. */
    int *count = (int *)hs_calloc((size_t)n_experts + 1, sizeof(int));
    for (size_t i = 0; i < nk; i++) count[c->h_ids[i] + 1]++;
    for (int e = 0; e < n_experts; e++) count[e + 1] += count[e];
    int *fill = (int *)hs_malloc(sizeof(int) * (size_t)n_experts);
    memcpy(fill, count, sizeof(int) * (size_t)n_experts);
    for (size_t i = 0; i < nk; i++) {
        const int e = c->h_ids[i], at = fill[e]++;
        c->h_idx[at] = (int32_t)(i / (size_t)top_k);
        c->h_idx_w[at] = c->h_w[i];
    }
    int32_t *d_idx = (int32_t *)scratch(c, SCR_MOE_IDX, nk * 8);
    float *d_w = (float *)(d_idx + nk);
    CK(cudaMemcpyAsync(d_idx, c->h_idx, nk * 4, cudaMemcpyHostToDevice, c->st));
    CK(cudaMemcpyAsync(d_w, c->h_idx_w, nk * 4, cudaMemcpyHostToDevice, c->st));
    float *acc = (float *)scratch(c, SCR_MOE_ACC, (size_t)T * H * 4);
    CK(cudaMemsetAsync(acc, 0, (size_t)T * H * 4, c->st));
    int maxc = 0;
    for (int e = 0; e < n_experts; e++) maxc = count[e + 1] - count[e] > maxc ? count[e + 1] - count[e] : maxc;
    bf16_t *xe = (bf16_t *)scratch(c, SCR_MOE_X, (size_t)maxc * H * 2 + 2);
    bf16_t *gu = (bf16_t *)scratch(c, SCR_MOE_GU, (size_t)maxc * 2 * I * 2 + 2);
    bf16_t *act = (bf16_t *)scratch(c, SCR_MOE_ACT, (size_t)maxc * I * 2 + 2);
    bf16_t *y = (bf16_t *)scratch(c, SCR_MOE_Y, (size_t)maxc * H * 2 + 2);
    for (int e = 0; e < n_experts; e++) {
        const int n = count[e + 1] - count[e];
        if (n == 0) continue;
        k_gather_idx<<<n, 256, 0, c->st>>>((const bf16_t *)x, d_idx + count[e], H, xe);
        LAUNCHED();
        gemm(c, xe, egu[e], n, gu, false);
        k_swiglu<<<(unsigned)(((int64_t)n * I + 255) / 256), 256, 0, c->st>>>(gu, n, I, act);
        LAUNCHED();
        gemm(c, act, edown[e], n, y, false);
        k_scatter_acc<<<n, 256, 0, c->st>>>(y, d_idx + count[e], d_w + count[e], H, acc);
        LAUNCHED();
    }
    free(count);
    free(fill);
    const bf16_t *shared = NULL;
    const float *sg = NULL;
    if (sgu && sdown && Is > 0) {
        bf16_t *sgu_o = (bf16_t *)scratch(c, SCR_SH_GU, (size_t)T * 2 * Is * 2);
        bf16_t *sact = (bf16_t *)scratch(c, SCR_SH_ACT, (size_t)T * Is * 2);
        bf16_t *sy = (bf16_t *)scratch(c, SCR_SH_Y, (size_t)T * H * 2);
        gemm(c, x, sgu, T, sgu_o, false);
        k_swiglu<<<(unsigned)(((int64_t)T * Is + 255) / 256), 256, 0, c->st>>>(sgu_o, T, Is, sact);
        LAUNCHED();
        gemm(c, sact, sdown, T, sy, false);
        shared = sy;
        if (sgate) {
            float *gl = (float *)scratch(c, SCR_SH_G, (size_t)T * 4);
            gemm(c, x, sgate, T, gl, true);
            sg = gl;
        }
    }
    const int64_t N = (int64_t)T * H;
    if (shared && !sg) {
        /* a shared expert without a gate: weight 1 (sigmoid of +inf) */
        float *gl = (float *)scratch(c, SCR_SH_G, (size_t)T * 4);
        float big = 1e30f;
        for (int t = 0; t < T; t++) CK(cudaMemcpyAsync(gl + t, &big, 4, cudaMemcpyHostToDevice, c->st));
        sg = gl;
    }
    k_moe_finish<<<(unsigned)((N + 255) / 256), 256, 0, c->st>>>(acc, shared, sg, T, H, (bf16_t *)out);
    LAUNCHED();
}

static void cu_logits_stats(backend_t *bk, const void *logits, int n, int V, int32_t *argmax, float *mx, float *lse) {
    cu_ctx_t *c = ctx(bk);
    char *d = (char *)scratch(c, SCR_STATS, (size_t)n * 12);
    k_logits_stats<<<n, 1024, 0, c->st>>>((const float *)logits, V, (int32_t *)d, (float *)(d + (size_t)n * 4),
                                         (float *)(d + (size_t)n * 8));
    LAUNCHED();
    CK(cudaMemcpyAsync(argmax, d, (size_t)n * 4, cudaMemcpyDeviceToHost, c->st));
    CK(cudaMemcpyAsync(mx, d + (size_t)n * 4, (size_t)n * 4, cudaMemcpyDeviceToHost, c->st));
    CK(cudaMemcpyAsync(lse, d + (size_t)n * 8, (size_t)n * 4, cudaMemcpyDeviceToHost, c->st));
    CK(cudaStreamSynchronize(c->st));
}

/* bk->sample (sample.cu); its workspace is SCR_STATS, free again once logits_stats returned. */
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
    if (c) {
        cudaStreamSynchronize(c->st);
        for (int i = 0; i < SCR_N; i++)
            if (c->scr[i].p) cudaFree(c->scr[i].p);
        int32_t *bufs[] = {c->d_tok_start, c->d_n_past, c->d_pos, c->d_bt, c->d_sp, c->d_logit_rows, c->d_seq_lens};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
            if (bufs[i]) cudaFree(bufs[i]);
        if (c->d_ssm_loc) cudaFree(c->d_ssm_loc);
        free(c->h_tok_start);
        free(c->h_n_past);
        free(c->h_seq_lens);
        free(c->h_ids);
        free(c->h_w);
        free(c->h_idx);
        free(c->h_idx_w);
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
    bk->set_batch = cu_set_batch;
    bk->embed = cu_embed;
    bk->linear = cu_linear;
    bk->rmsnorm = cu_rmsnorm;
    bk->add = cu_add;
    bk->attention = cu_attention;
    bk->gdn = cu_gdn;
    bk->swiglu = cu_swiglu;
    bk->moe = cu_moe;
    bk->gather_rows = cu_gather_rows;
    bk->logits = cu_logits;
    bk->logits_stats = cu_logits_stats;
    bk->sample = cu_sample;
    bk->page_out = cu_page_out;
    bk->page_in = cu_page_in;
    bk->destroy = cu_destroy;
    return bk;
}
