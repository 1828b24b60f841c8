/*
 * gdn_prefill: the chunked (C = 64) gated delta rule for prefill, varlen (cu_seqlens),
 * initial and final state through the paged state map (model-spec §3.1), plus the
 * prefill-side pre/post processing (causal conv with state, SiLU, L2 norm, gates; the
 * gated RMSNorm).
 *
 * Kernels, in stream order for one GDN layer:
 *  1. prep      warp per (token, 128-channel head block): 4-tap causal conv with the
 *               conv state as left context, SiLU; gates g, beta. Reads qkv once (+ 3
 *               rows of halo through L1/L2), writes q, k, v bf16.
 *  2. conv_state  the new conv state (last Kc-1 inputs) of every sequence, in place
 *               (after prep, which read the old one).
 *  3. chunk_prep  block per (chunk, key head), 4 warps: tensor cores (mma.sync bf16) for
 *               K K^T and Q K^T (shared by the r v-heads; each warp at most three of the
 *               ten 16x16 blocks of the lower triangle), the inverse L2 norms of the
 *               chunk's raw q and k rows from the diagonals of K K^T and Q Q^T (kept as
 *               f32 [T][Hk]; q and k are never rewritten, every product is scaled
 *               instead), then per v-head:
 *               Gamma = cumsum(g) in the chunk; A = strict-lower(beta_r e^{G_r-G_s} k_r.k_s);
 *               T = (I + A)^-1 blocked on 16x16: the diagonal blocks by forward
 *               substitution (lane per column, fp32), the blocks below them block row by
 *               block row by tensor cores (bf16 hi/lo splits, three mma per product);
 *               writes Tb = T diag(beta) and P = causal(e^{G_r-G_s} q_r.k_s) / sqrt(dk)
 *               as bf16 [T][Hv][64] (row r of a chunk at its token), Gamma f32 [T][Hv].
 *  4. chunk_state block per (sequence, v-head, V-tile of BV = 32 or 64 columns), 8 warps,
 *               sequential over the sequence's chunks, the state tile S [128 x BV] fp32
 *               in mma accumulator registers. Per chunk (K, Q, V, Tb, P prefetched with
 *               cp.async into a second shared-memory stage while the previous chunk runs):
 *                 Y  = V - diag(e^G) K S          (so that V' = U - W S = Tb Y)
 *                 V' = Tb Y ;  O = diag(e^G) Q S / sqrt(dk) + P V'
 *                 S  = e^{G_last} S + K^T diag(e^{G_last - G_r}) V'
 *               S is rounded to bf16 as the mma operand (as fla does); accumulation fp32.
 *               S, Y, V' go through shared memory as [row][v] (4-byte stores of the
 *               accumulators' v pairs), read back as B operands by ldmatrix.trans.
 *  3+4 fused  where chunk_state has V-tiles of 32 and its blocks fit one wave (e.g. Hk/Hv
 *               16/32, one sequence): one kernel of 384-thread blocks, warps 0-7 the
 *               sequential pass, warps 8-11 a chunk_prep worker taking items chunk-major
 *               from an atomic counter; the pass waits on a per-item flag (see
 *               gdn_chunk_fused_kernel). The pass leaves most issue slots idle; prep fills them.
 *  5. gated_norm  warp per (token, head).
 * Memory traffic of 3+4 per token and v-head: Tb, P 256 B written and read, Gamma 4 B,
 * q/k (per key head) and v read; no W, U or per-chunk states go through HBM.
 * Invariants: dk = dv = 128, Kc = 4, chunks never straddle sequences.
 */
#include <assert.h>

#include "cuda_common.cuh"
#include "cuda_ops.h"

#define DK 128
#define CH 64

/* ------------------------------------------------------------------------------------ */
/* fragment and shared-memory helpers (cp.async, ldmatrix, mma: cuda_common.cuh)        */
/* 16-byte shared load kept whole (the compiler split float4 loads whose lanes feed
 * separate chains into four 4-byte loads); volatile keeps it after the barriers. */
__device__ __forceinline__ float4 lds128(const float *p) {
    float4 v;
    asm volatile("ld.shared.v4.f32 {%0,%1,%2,%3}, [%4];\n"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                 : "r"(smem_u32(p)));
    return v;
}
/* A-operand fragment (16 rows x 16 k) from row-major smem [row][k] with row stride ld (elements). */
__device__ __forceinline__ void lda(unsigned *a, const bf16_t *base, int ld, int lane) {
    const bf16_t *p = base + (size_t)(lane & 15) * ld + (lane >> 4) * 8;
    ldsm_x4(a[0], a[1], a[2], a[3], p);
}
/* Two B-operand fragments (n-tiles n0, n0+8; 16 k) from smem stored [n][k], stride ld. */
__device__ __forceinline__ void ldb2(unsigned *b, const bf16_t *base, int ld, int lane) {
    /* matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) */
    const int mi = lane >> 3, r = lane & 7;
    const bf16_t *p = base + (size_t)(r + (mi >> 1) * 8) * ld + (mi & 1) * 8;
    ldsm_x4(b[0], b[1], b[2], b[3], p);
}
/* Two B-operand fragments (n-tiles n0, n0+8; 16 k) from smem stored [k][n], stride ld. */
__device__ __forceinline__ void ldb2_t(unsigned *b, const bf16_t *base, int ld, int lane) {
    /* matrices: (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15) */
    const int mi = lane >> 3;
    const bf16_t *p = base + (size_t)((mi & 1) * 8 + (lane & 7)) * ld + (mi >> 1) * 8;
    ldsm_x4_t(b[0], b[1], b[2], b[3], p);
}
/* A-operand fragment of A = X^T (16 m x 16 k) where X is smem [k][m], stride ld. */
__device__ __forceinline__ void lda_t(unsigned *a, const bf16_t *base, int ld, int lane) {
    /* a0: (m 0-7, k 0-7), a1: (m 8-15, k 0-7), a2: (m 0-7, k 8-15), a3: (m 8-15, k 8-15) */
    const int mi = lane >> 3, r = lane & 7;
    const bf16_t *p = base + (size_t)(r + (mi >> 1) * 8) * ld + (mi & 1) * 8;
    ldsm_x4_t(a[0], a[1], a[2], a[3], p);
}

/* ------------------------------------------------------------------------------------ */
/* 1. prep: conv + SiLU + L2 norm; gates                                                 */
struct prep_params {
    const bf16_t *qkv, *b, *a, *conv_w;
    const float *A_log, *dt_bias;
    const int32_t *tok_start, *n_past;
    int S, T, Hk, Hv, conv_dim;
    int ldx, ldg; /* row strides (elements) of qkv and b / a */
    char *pool;
    size_t page_bytes;
    const int32_t *state_pages;
    int E, conv_page, conv_off;
    bf16_t *qn, *kn, *v;
    float *g, *beta;
};

/* A warp convolves PREP_TG consecutive tokens of one 128-channel block (4 channels a
 * lane): the PREP_TG + 3 input rows of its window are loaded once into registers, where a
 * warp per token loaded each row 4 times (once per tap). */
#define PREP_TG 8

__global__ void __launch_bounds__(128) gdn_prep_kernel(const prep_params p) {
    const int lane = threadIdx.x & 31;
    const int nblk = 2 * p.Hk + p.Hv;
    const long wid = (long)blockIdx.x * 4 + (threadIdx.x >> 5);
    /* gates: one thread per (token, head) */
    const long e = (long)blockIdx.x * 128 + threadIdx.x;
    if (e < (long)p.T * p.Hv) {
        const int h = (int)(e % p.Hv);
        const size_t ei = (size_t)(e / p.Hv) * p.ldg + h;
        p.beta[e] = sigmoid_f(bf2f(p.b[ei]));
        p.g[e] = -expf(p.A_log[h]) * softplus_f(bf2f(p.a[ei]) + p.dt_bias[h]);
    }
    const long n_groups = ((long)p.T + PREP_TG - 1) / PREP_TG;
    if (wid >= n_groups * nblk) return;
    const int t0 = (int)(wid / nblk) * PREP_TG, blk = (int)(wid % nblk);
    const int ch0 = blk * DK + 4 * lane;
    float w[4][4];
    const uint2 *wp = reinterpret_cast<const uint2 *>(p.conv_w + (size_t)ch0 * 4);
#pragma unroll
    for (int c = 0; c < 4; c++) {
        uint2 u = wp[c];
        float2 lo = bf2x2_to_f2(u.x), hi = bf2x2_to_f2(u.y);
        w[c][0] = lo.x; w[c][1] = lo.y; w[c][2] = hi.x; w[c][3] = hi.y;
    }
    /* the window: rows t0 - 3 .. t0 + PREP_TG - 1 (rows of an earlier sequence are loaded
     * but only used where they are the same sequence's) */
    uint2 x[PREP_TG + 3];
#pragma unroll
    for (int i = 0; i < PREP_TG + 3; i++) {
        const int r = t0 - 3 + i;
        x[i] = r >= 0 && r < p.T ? *reinterpret_cast<const uint2 *>(p.qkv + (size_t)r * p.ldx + ch0) : make_uint2(0u, 0u);
    }
    bf16_t *dst0;
    size_t dstride;
    if (blk < p.Hk) dst0 = p.qn + (size_t)blk * DK, dstride = (size_t)p.Hk * DK; /* (L2 norm: gdn_chunk_launch) */
    else if (blk < 2 * p.Hk) dst0 = p.kn + (size_t)(blk - p.Hk) * DK, dstride = (size_t)p.Hk * DK;
    else dst0 = p.v + (size_t)(blk - 2 * p.Hk) * DK, dstride = (size_t)p.Hv * DK;
    int s = seq_of_token(p.tok_start, p.S, t0);
#pragma unroll
    for (int i = 0; i < PREP_TG; i++) {
        const int t = t0 + i;
        if (t >= p.T) break;
        while (p.tok_start[s + 1] <= t) s++;
        const int pos = t - p.tok_start[s];
        float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int pp = pos - 3 + j; /* the tap's position in the sequence */
            uint2 u = x[i + j];
            if (pp < 0) { /* before the sequence: its conv state, or zero for a fresh one */
                u = make_uint2(0u, 0u);
                if (p.pool && p.n_past[s] > 0) {
                    const bf16_t *conv = reinterpret_cast<const bf16_t *>(
                        p.pool + (size_t)p.state_pages[(size_t)s * p.E + p.conv_page] * p.page_bytes + p.conv_off);
                    u = *reinterpret_cast<const uint2 *>(conv + (size_t)(3 + pp) * p.conv_dim + ch0);
                }
            }
            float2 lo = bf2x2_to_f2(u.x), hi = bf2x2_to_f2(u.y);
            acc[0] += w[0][j] * lo.x;
            acc[1] += w[1][j] * lo.y;
            acc[2] += w[2][j] * hi.x;
            acc[3] += w[3][j] * hi.y;
        }
        uint2 o;
        o.x = f2_to_bf2x2(silu_f(acc[0]), silu_f(acc[1]));
        o.y = f2_to_bf2x2(silu_f(acc[2]), silu_f(acc[3]));
        *reinterpret_cast<uint2 *>(dst0 + (size_t)t * dstride + 4 * lane) = o;
    }
}

/* 2. new conv state per sequence: rows j = 0..2 hold the inputs at positions len-3+j. */
__global__ void gdn_conv_state_kernel(const prep_params p) {
    const int s = blockIdx.y;
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= p.conv_dim) return;
    const int t0 = p.tok_start[s], len = p.tok_start[s + 1] - t0;
    const bool has = p.n_past[s] > 0;
    bf16_t *conv = reinterpret_cast<bf16_t *>(p.pool + (size_t)p.state_pages[(size_t)s * p.E + p.conv_page] * p.page_bytes +
                                              p.conv_off);
#pragma unroll
    for (int j = 0; j < 3; j++) { /* row j reads old row len + j > j: rows are rewritten in order */
        const int pp = len - 3 + j;
        bf16_t x;
        if (pp >= 0) x = p.qkv[(size_t)(t0 + pp) * p.ldx + ch];
        else x = has ? conv[(size_t)(3 + pp) * p.conv_dim + ch] : __float2bfloat16_rn(0.f);
        conv[(size_t)j * p.conv_dim + ch] = x;
    }
}

extern "C" int gdn_prefill_prep_launch(const void *qkv, const void *b, const void *a, const void *conv_w,
                                       const float *A_log, const float *dt_bias, const int32_t *tok_start,
                                       const int32_t *n_past, int S, int T, int Hk, int Hv, int dk, int dv,
                                       const gdn_state_t *st, void *qn, void *kn, void *v, float *g, float *beta,
                                       int ld, void *stream) {
    if (T <= 0 || S <= 0) return HS_OK;
    if (dk != DK || dv != DK || Hk <= 0 || Hv % Hk) return HS_ERR_INVALID;
    const int conv_dim = 2 * Hk * DK + Hv * DK;
    if (ld < 0 || (ld > 0 && ld < conv_dim)) return HS_ERR_INVALID;
    if (((uintptr_t)qkv & 7) || (ld & 3)) return HS_ERR_UNSUPPORTED; /* 8-byte loads of 4 channels */
    prep_params p;
    p.ldx = ld ? ld : conv_dim;
    p.ldg = ld ? ld : Hv;
    p.qkv = (const bf16_t *)qkv;
    p.b = (const bf16_t *)b;
    p.a = (const bf16_t *)a;
    p.conv_w = (const bf16_t *)conv_w;
    p.A_log = A_log;
    p.dt_bias = dt_bias;
    p.tok_start = tok_start;
    p.n_past = n_past;
    p.S = S;
    p.T = T;
    p.Hk = Hk;
    p.Hv = Hv;
    p.conv_dim = conv_dim;
    p.pool = st ? (char *)st->pool_base : nullptr;
    p.page_bytes = st ? st->page_bytes : 0;
    p.state_pages = st ? st->state_pages : nullptr;
    p.E = st ? st->n_state_pages : 0;
    p.conv_page = st ? st->conv_loc.page : 0;
    p.conv_off = st ? st->conv_loc.offset : 0;
    p.qn = (bf16_t *)qn;
    p.kn = (bf16_t *)kn;
    p.v = (bf16_t *)v;
    p.g = g;
    p.beta = beta;
    cudaStream_t s = (cudaStream_t)stream;
    const long warps = ((long)T + PREP_TG - 1) / PREP_TG * (2 * Hk + Hv);
    long blocks = (warps + 3) / 4;
    const long gblocks = ((long)T * Hv + 127) / 128;
    if (gblocks > blocks) blocks = gblocks;
    gdn_prep_kernel<<<(unsigned)blocks, 128, 0, s>>>(p);
    HS_CUDA_LAUNCHED();
    if (st) {
        gdn_conv_state_kernel<<<dim3((unsigned)((p.conv_dim + 255) / 256), (unsigned)S), 256, 0, s>>>(p);
        HS_CUDA_LAUNCHED();
    }
    return HS_OK;
}

/* L2 norm of rows of 128 (warp per row). */
__global__ void gdn_l2norm_kernel(bf16_t *x, int64_t n) {
    const int64_t row = (int64_t)blockIdx.x * 4 + (threadIdx.x >> 5);
    if (row >= n) return;
    const int lane = threadIdx.x & 31;
    uint2 *pp = reinterpret_cast<uint2 *>(x + row * DK) + lane;
    uint2 u = *pp;
    float2 lo = bf2x2_to_f2(u.x), hi = bf2x2_to_f2(u.y);
    const float r = rsqrtf(warp_sum(lo.x * lo.x + lo.y * lo.y + hi.x * hi.x + hi.y * hi.y) + 1e-6f);
    u.x = f2_to_bf2x2(lo.x * r, lo.y * r);
    u.y = f2_to_bf2x2(hi.x * r, hi.y * r);
    *pp = u;
}
extern "C" int gdn_l2norm_launch(void *x, int64_t n_rows, void *stream) {
    if (n_rows <= 0) return HS_OK;
    gdn_l2norm_kernel<<<(unsigned)((n_rows + 3) / 4), 128, 0, (cudaStream_t)stream>>>((bf16_t *)x, n_rows);
    HS_CUDA_LAUNCHED();
    return HS_OK;
}

/* 5. gated RMSNorm, warp per (token, head) */
__global__ void gdn_gated_norm_kernel(const bf16_t *o, const bf16_t *z, int64_t ldz, int Hv, const float *w,
                                      int64_t rows, float eps, bf16_t *out) {
    const int64_t row = (int64_t)blockIdx.x * 4 + (threadIdx.x >> 5);
    if (row >= rows) return;
    const int lane = threadIdx.x & 31;
    uint2 u = reinterpret_cast<const uint2 *>(o + row * DK)[lane];
    uint2 zu = reinterpret_cast<const uint2 *>(z + (row / Hv) * ldz + (row % Hv) * DK)[lane];
    float2 lo = bf2x2_to_f2(u.x), hi = bf2x2_to_f2(u.y), zl = bf2x2_to_f2(zu.x), zh = bf2x2_to_f2(zu.y);
    const float ss = warp_sum(lo.x * lo.x + lo.y * lo.y + hi.x * hi.x + hi.y * hi.y);
    const float r = rsqrtf(ss / (float)DK + eps);
    const float4 ww = reinterpret_cast<const float4 *>(w)[lane];
    uint2 res;
    res.x = f2_to_bf2x2(lo.x * r * ww.x * silu_f(zl.x), lo.y * r * ww.y * silu_f(zl.y));
    res.y = f2_to_bf2x2(hi.x * r * ww.z * silu_f(zh.x), hi.y * r * ww.w * silu_f(zh.y));
    reinterpret_cast<uint2 *>(out + row * DK)[lane] = res;
}
extern "C" int gdn_gated_norm_launch(const void *o, const void *z, int64_t ldz, const float *w, int64_t T, int Hv,
                                     int dv, float eps, void *out, void *stream) {
    if (dv != DK || ldz < 0 || (ldz > 0 && ldz < (int64_t)Hv * DK)) return HS_ERR_INVALID;
    if (((uintptr_t)z & 7) || (ldz & 3)) return HS_ERR_UNSUPPORTED; /* 8-byte loads */
    const int64_t rows = T * Hv;
    if (rows <= 0) return HS_OK;
    gdn_gated_norm_kernel<<<(unsigned)((rows + 3) / 4), 128, 0, (cudaStream_t)stream>>>(
        (const bf16_t *)o, (const bf16_t *)z, ldz ? ldz : (int64_t)Hv * DK, Hv, w, rows, eps, (bf16_t *)out);
    HS_CUDA_LAUNCHED();
    return HS_OK;
}

/* ------------------------------------------------------------------------------------ */
/* 3. chunk_prep                                                                          */
struct chunk_params {
    const bf16_t *qn, *kn, *v;
    float *RK, *RQ; /* [T][Hk] inverse L2 norms of the raw k, q rows (chunk_prep writes them) */
    const float *g, *beta;
    const int32_t *tok_start, *n_past;
    int S, Hk, Hv, r;
    bf16_t *Tb, *P; /* [T][Hv][64] */
    float *G;       /* [T][Hv] */
    bf16_t *o;      /* [T][Hv][128] */
    char *pool;
    size_t page_bytes;
    const int32_t *state_pages;
    int E;
    const sm_loc_t *ssm_loc;
    int slice_rows, n_slices, ssm_f32;
    /* fused pass only: flags[0] = work counter, flags[4 + (t0 / CH + s + c) * Hk + kh] = 1
     * once chunk c of sequence s, key head kh is prepared; n_items = nch * S * Hk */
    int *flags;
    int n_items, n_state;
    /* benchmark trace (gdn_chunk_bench_trace; null otherwise), fused pass only:
     * [it] = %globaltimer when item it was published, [n_items + it] = its compute cycles
     * (pp_compute + publish), [2 n_items + c] = %globaltimer when pass block 0 started chunk c,
     * [2 n_items + nch + 0, 1, 2, 3] = when block 0 started, had its initial state, ended,
     * saw chunk 0 prepared */
    unsigned long long *trace;
};

#define LDK 136 /* padded row stride (elements) of 128-wide bf16 tiles */
#define LDC 72  /* padded row stride of 64-wide bf16 tiles */

#define MAXR 8
#define FUSE_MAXS 64 /* the fused pass takes at most this many sequences (flag space) */

template <int ID, int N> __device__ __forceinline__ void bar_sync() {
    asm volatile("bar.sync %0, %1;\n" ::"n"(ID), "n"(N) : "memory");
}
__device__ __forceinline__ int ld_relaxed(const int *p) {
    int v;
    asm volatile("ld.relaxed.gpu.global.s32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ unsigned long long gtimer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    return t;
}
__device__ __forceinline__ int flag_index(int t0, int s, int c, int Hk, int kh) {
    /* unique: sequence s covers ids floor(t0/CH)+s+[0, nch_s) and the next starts past them */
    return 4 + (t0 / CH + s + c) * Hk + kh;
}

/* One (chunk, key head) item of chunk_prep, 128 threads: K/Q rows and the gates in one
 * stage, A (fp32, 2 heads) reusing the K/Q rows after the mmas. */
struct pp_stage {
    bf16_t KQ[2 * CH * LDK];
    float G[MAXR][CH], B[MAXR][CH];
};
struct __align__(16) pp_aux {
    float Df[2][4][16 * 16 + 4]; /* A's 16x16 diagonal blocks (fp32) of a head pair, per warp */
    float Rk[CH], Rq[CH];
    int slot;
};

/* The inverse's scratch: per head of a pair T (and, before it, A) as bf16 hi and lo
 * planes [64][64], 16-byte groups of a row XOR-swizzled by row & 7 (ldmatrix without
 * bank conflicts). x ~ hi + lo to ~2^-16 relative: a product runs as three bf16 mma,
 * hi*hi + hi*lo + lo*hi, fp32 accumulate. */
__device__ __forceinline__ int swz(int row, int col) { return row * CH + ((((col >> 3) ^ row) & 7) << 3) + (col & 7); }
__device__ __forceinline__ void split_store(bf16_t *Th, bf16_t *Tl, int row, int col, float a, float b) {
    const uint32_t hi = f2_to_bf2x2(a, b);
    const float2 h = bf2x2_to_f2(hi);
    *reinterpret_cast<uint32_t *>(Th + swz(row, col)) = hi;
    *reinterpret_cast<uint32_t *>(Tl + swz(row, col)) = f2_to_bf2x2(a - h.x, b - h.y);
}
/* Block row lv's products z[j] (j < lv; this thread's rows ra, rb, columns 16 j + 8 nn +
 * 2 tq) into the hi/lo planes. FINAL: they are the Z of T_lj = -T_ll Z_lj, so -z goes in,
 * and -z * B[col] to the Tb rows of head h of the chunk at token t0 + c0 (rows < L). */
template <bool FINAL>
__device__ __forceinline__ void store_row_blocks(bf16_t *Th, bf16_t *Tl, const float (&z)[3][2][4], int lv, int ra,
                                                 int rb, int tq, const chunk_params &p, const float *B, int t0, int c0,
                                                 int h, int L) {
#pragma unroll
    for (int j = 0; j < 3; j++) {
        if (j >= lv) break;
#pragma unroll
        for (int nn = 0; nn < 2; nn++) {
            const int col = 16 * j + 8 * nn + 2 * tq;
            const float *zz = z[j][nn];
            if (!FINAL) {
                split_store(Th, Tl, ra, col, zz[0], zz[1]);
                split_store(Th, Tl, rb, col, zz[2], zz[3]);
                continue;
            }
            const float b0 = B[col], b1 = B[col + 1];
            split_store(Th, Tl, ra, col, -zz[0], -zz[1]);
            split_store(Th, Tl, rb, col, -zz[2], -zz[3]);
            if (ra < L)
                *reinterpret_cast<uint32_t *>(p.Tb + (((size_t)t0 + c0 + ra) * p.Hv + h) * CH + col) =
                    f2_to_bf2x2(-zz[0] * b0, -zz[1] * b1);
            if (rb < L)
                *reinterpret_cast<uint32_t *>(p.Tb + (((size_t)t0 + c0 + rb) * p.Hv + h) * CH + col) =
                    f2_to_bf2x2(-zz[2] * b0, -zz[3] * b1);
        }
    }
}

/* A-operand (16 x 16) at (r0, c0) of a swizzled plane */
__device__ __forceinline__ void lda_swz(unsigned *a, const bf16_t *X, int r0, int c0, int lane) {
    ldsm_x4(a[0], a[1], a[2], a[3], X + swz(r0 + (lane & 15), c0 + (lane >> 4) * 8));
}
/* B-operands of n-tiles c0, c0 + 8 (k = rows r0 .. r0 + 15) from a swizzled row-major [k][n] plane */
__device__ __forceinline__ void ldb2_swz(unsigned *b, const bf16_t *X, int r0, int c0, int lane) {
    const int mi = lane >> 3;
    ldsm_x4_t(b[0], b[1], b[2], b[3], X + swz(r0 + (mi & 1) * 8 + (lane & 7), c0 + (mi >> 1) * 8));
}
/* d += (ah + al)(bh + bl) less al * bl */
__device__ __forceinline__ void mma3(float *d, const unsigned *ah, const unsigned *al, unsigned bh0, unsigned bh1,
                                     unsigned bl0, unsigned bl1) {
    mma_16816(d, ah, bh0, bh1);
    mma_16816(d, ah, bl0, bl1);
    mma_16816(d, al, bh0, bh1);
}

/* cp.async of the item's raw k, q rows and its r heads' g, beta (zero past L); one group. */
__device__ __forceinline__ void pp_load(pp_stage &ps, const chunk_params &p, int t0, int c0, int L, int kh, int tid) {
    bf16_t *Ks = ps.KQ, *Qs = ps.KQ + CH * LDK;
    for (int e = tid; e < CH * 16; e += 128) {
        const int row = e >> 4, col = (e & 15) * 8;
        const bool ok = row < L;
        const size_t tok = (size_t)t0 + c0 + (ok ? row : 0);
        cp_async16(&Ks[row * LDK + col], p.kn + (tok * p.Hk + kh) * DK + col, ok);
        cp_async16(&Qs[row * LDK + col], p.qn + (tok * p.Hk + kh) * DK + col, ok);
    }
    for (int e = tid; e < p.r * CH; e += 128) {
        const int hh = e / CH, row = e % CH;
        const bool ok = row < L;
        const size_t idx = ((size_t)t0 + c0 + (ok ? row : 0)) * p.Hv + kh * p.r + hh;
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(&ps.G[hh][row])),
                     "l"(p.g + idx), "r"(ok ? 4 : 0)
                     : "memory");
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(&ps.B[hh][row])),
                     "l"(p.beta + idx), "r"(ok ? 4 : 0)
                     : "memory");
    }
    cp_async_commit();
}

/* The item's blocks of warp w (slot 0 its diagonal block): see pp_compute. */
#define PP_BM(b) ((b) == 1 && w == 0 ? 3 : w) /* block row of slot b */
#define PP_BN(b) max(w - (b), 0)             /* block column of slot b */

/* A and P of head hh from the K K^T / Q K^T fragments of warp w's blocks, one
 * e^{G_r - G_c} for both: P to memory (WP), A (doA; head x of the pair in the scratch)
 * its diagonal block to Df (fp32), the blocks left of the diagonal to the scratch as
 * bf16 hi + lo. The rest of A and P is zero and never read. */
template <bool WP>
__device__ __forceinline__ void pp_ap(pp_stage &ps, pp_aux &ax, const chunk_params &p, const float (&kk)[3][2][4],
                                      const float (&qk)[3][2][4], int t0, int c0, int L, int kh, int hh, int x,
                                      bool doA, int w, int lane) {
    const int h = kh * p.r + hh, g = lane >> 2, tq = lane & 3, nsl = w < 2 ? 2 : 3;
    const float scale = rsqrtf((float)DK);
    const float *Gs = ps.G[hh];
    bf16_t *Th = ps.KQ + x * 2 * CH * CH, *Tl = Th + CH * CH;
    float *Df = ax.Df[x][w];
#pragma unroll
    for (int b = 0; b < 3; b++) {
        if (b >= nsl) break;
        const int ra = 16 * PP_BM(b) + g, rb = ra + 8; /* this thread's two rows */
        const float Ga = Gs[ra], Gb = Gs[rb];
        const float cPa = scale * ax.Rq[ra], cPb = scale * ax.Rq[rb];
        const float cAa = ps.B[hh][ra] * ax.Rk[ra], cAb = ps.B[hh][rb] * ax.Rk[rb];
#pragma unroll
        for (int nn = 0; nn < 2; nn++) {
            const int col = 16 * PP_BN(b) + 8 * nn + 2 * tq;
            float Pv[4], Av[4];
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float Gc = Gs[col + e], rkc = ax.Rk[col + e];
                /* e^{G_r - G_c} <= 1 where col <= row; the other lanes are selected away */
                const float ea = __expf(Ga - Gc) * rkc, eb = __expf(Gb - Gc) * rkc;
                Pv[e] = col + e <= ra ? cPa * ea * qk[b][nn][e] : 0.f;
                Pv[2 + e] = col + e <= rb ? cPb * eb * qk[b][nn][2 + e] : 0.f;
                Av[e] = col + e < ra ? cAa * ea * kk[b][nn][e] : 0.f;
                Av[2 + e] = col + e < rb ? cAb * eb * kk[b][nn][2 + e] : 0.f;
            }
            if (WP && ra < L)
                *reinterpret_cast<uint32_t *>(p.P + (((size_t)t0 + c0 + ra) * p.Hv + h) * CH + col) =
                    f2_to_bf2x2(Pv[0], Pv[1]);
            if (WP && rb < L)
                *reinterpret_cast<uint32_t *>(p.P + (((size_t)t0 + c0 + rb) * p.Hv + h) * CH + col) =
                    f2_to_bf2x2(Pv[2], Pv[3]);
            if (!doA) continue;
            if (b == 0) {
                *reinterpret_cast<float2 *>(&Df[g * 16 + col - 16 * w]) = make_float2(Av[0], Av[1]);
                *reinterpret_cast<float2 *>(&Df[(g + 8) * 16 + col - 16 * w]) = make_float2(Av[2], Av[3]);
            } else {
                split_store(Th, Tl, ra, col, Av[0], Av[1]);
                split_store(Th, Tl, rb, col, Av[2], Av[3]);
            }
        }
    }
}

/* The item's work once its loads landed (and a barrier passed): cumsum of g, inverse
 * norms, K K^T and Q K^T by tensor cores (shared by the r v-heads), then per v-head
 * A, P and T = (I + A)^-1, heads in pairs: the 16x16 diagonal blocks of T by forward
 * substitution (lane per column), the blocks below them by tensor cores, block row after
 * block row. Barriers: bar ID of 128.
 * Work split (the item's latency is what bounds the fused pass, so no warp should carry
 * much more than the others): the lower triangle of K K^T / Q K^T (and so of A and P)
 * has ten 16x16 blocks (m, n), n <= m; warp w takes its diagonal block (w, w) and one or
 * two below it, at most three blocks a warp (a warp per block row gave warp 3 four and
 * warp 0 one):
 *   w0 (0,0) (3,0) | w1 (1,1) (1,0) | w2 (2,2) (2,1) (2,0) | w3 (3,3) (3,2) (3,1).
 * A and P of a block come from the same e^{G_r - G_c}, computed once. The inverse's block
 * rows 1..3 take the pair's two heads on two different warps at once. */
template <int ID>
__device__ __forceinline__ void pp_compute(pp_stage &ps, pp_aux &ax, const chunk_params &p, int t0, int c0, int L,
                                           int kh, int tid) {
    bf16_t *Ks = ps.KQ, *Qs = ps.KQ + CH * LDK;
    const int lane = tid & 31, w = tid >> 5, r = p.r;
    /* inclusive cumsum of g per head: warp per head, lane per row pair */
    for (int hh = w; hh < r; hh += 4) {
        const float a = ps.G[hh][2 * lane], b = ps.G[hh][2 * lane + 1];
        const float s2 = a + b;
        float x = s2;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const float y = __shfl_up_sync(0xffffffffu, x, o);
            if (lane >= o) x += y;
        }
        ps.G[hh][2 * lane] = x - s2 + a;
        ps.G[hh][2 * lane + 1] = x;
    }
    /* this warp's blocks (slot 0 the diagonal one); the rest of A and P is zero and never
     * read. With them the diagonal block of Q Q^T: the squared norms of the chunk's raw k
     * and q rows are the diagonals of K K^T and Q Q^T (fp32 sums of exact products) */
    const int nsl = w < 2 ? 2 : 3;
    float kk[3][2][4], qk[3][2][4], qq[2][4];
#pragma unroll
    for (int b = 0; b < 3; b++)
#pragma unroll
        for (int j = 0; j < 2; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) kk[b][j][i] = qk[b][j][i] = qq[j][i] = 0.f;
#pragma unroll
    for (int ks = 0; ks < DK / 16; ks++) {
        unsigned ak[4], aq[4];
        lda(ak, Ks + (16 * w) * LDK + ks * 16, LDK, lane);
        lda(aq, Qs + (16 * w) * LDK + ks * 16, LDK, lane);
        {
            unsigned bq[4];
            ldb2(bq, Qs + (16 * w) * LDK + ks * 16, LDK, lane);
            mma_16816(qq[0], aq, bq[0], bq[1]);
            mma_16816(qq[1], aq, bq[2], bq[3]);
        }
#pragma unroll
        for (int b = 0; b < 3; b++) {
            if (b >= nsl) break;
            if (b == 1 && w == 0) { /* warp 0's second block is in row block 3 */
                lda(ak, Ks + (16 * 3) * LDK + ks * 16, LDK, lane);
                lda(aq, Qs + (16 * 3) * LDK + ks * 16, LDK, lane);
            }
            unsigned bb[4];
            ldb2(bb, Ks + (16 * PP_BN(b)) * LDK + ks * 16, LDK, lane);
            mma_16816(kk[b][0], ak, bb[0], bb[1]);
            mma_16816(kk[b][1], ak, bb[2], bb[3]);
            mma_16816(qk[b][0], aq, bb[0], bb[1]);
            mma_16816(qk[b][1], aq, bb[2], bb[3]);
        }
    }
    const int g = lane >> 2, tq = lane & 3;
    /* inverse L2 norms of the rows of block w: the lane with 2 tq + e = g (e = g & 1) holds
     * the diagonal elements (16w + g, same) in c_e of n-tile 0 and (16w + g + 8, same) in
     * c_{2+e} of n-tile 1. q and k stay raw in memory, every product is scaled instead. */
    if (tq == (g >> 1)) {
        const bool e = g & 1;
        const int ra = 16 * w + g, rb = ra + 8;
        const float rka = rsqrtf((e ? kk[0][0][1] : kk[0][0][0]) + 1e-6f);
        const float rkb = rsqrtf((e ? kk[0][1][3] : kk[0][1][2]) + 1e-6f);
        const float rqa = rsqrtf((e ? qq[0][1] : qq[0][0]) + 1e-6f);
        const float rqb = rsqrtf((e ? qq[1][3] : qq[1][2]) + 1e-6f);
        ax.Rk[ra] = rka;
        ax.Rk[rb] = rkb;
        ax.Rq[ra] = rqa;
        ax.Rq[rb] = rqb;
        if (ra < L) p.RK[((size_t)t0 + c0 + ra) * p.Hk + kh] = rka, p.RQ[((size_t)t0 + c0 + ra) * p.Hk + kh] = rqa;
        if (rb < L) p.RK[((size_t)t0 + c0 + rb) * p.Hk + kh] = rkb, p.RQ[((size_t)t0 + c0 + rb) * p.Hk + kh] = rqb;
    }
    /* every warp is done with Ks/Qs (the inverse's scratch overwrites them); the norms and
     * the cumsum of g are in place */
    bar_sync<ID, 128>();
    for (int e = tid; e < r * CH; e += 128) {
        const int hh = e / CH, row = e % CH;
        if (row < L) p.G[((size_t)t0 + c0 + row) * p.Hv + kh * r + hh] = ps.G[hh][row];
    }
    /* P of every head, A of the first pair's heads (one e^{G_r - G_c} for both); qk is
     * dead after this */
    for (int hh = 0; hh < r; hh++)
        pp_ap<true>(ps, ax, p, kk, qk, t0, c0, L, kh, hh, hh & 1, hh < 2, w, lane);
    for (int h0 = 0; h0 < r; h0 += 2) {
        const int nh = min(2, r - h0);
        /* (a) A of the pair's heads after the first pair (their P is written) */
        if (h0 > 0)
            for (int x = 0; x < nh; x++) pp_ap<false>(ps, ax, p, kk, qk, t0, c0, L, kh, h0 + x, x, true, w, lane);
        __syncwarp();
        /* (b) the diagonal blocks: T_ww = (I + A_ww)^-1 by forward substitution, lane per
         * (head, column j): t_i = [i == j] - sum_{k<i} A_ik t_k (A_ik = 0 for k >= i and
         * t_k = 0 for k < j, so whole float4 groups of a row are taken) */
        {
            const int x = lane >> 4, j = lane & 15;
            if (x < nh) {
                const float *A = ax.Df[x][w];
                float t[16];
#pragma unroll
                for (int i = 0; i < 16; i++) t[i] = 0.f;
#pragma unroll
                for (int i = 0; i < 16; i++) {
                    float a0 = (i == j) ? 1.f : 0.f, a1 = 0.f;
#pragma unroll
                    for (int k = 0; k < i; k += 4) {
                        const float4 a4 = lds128(&A[i * 16 + k]);
                        a0 = fmaf(-a4.x, t[k], a0);
                        a1 = fmaf(-a4.y, t[k + 1], a1);
                        a0 = fmaf(-a4.z, t[k + 2], a0);
                        a1 = fmaf(-a4.w, t[k + 3], a1);
                    }
                    t[i] = i < j ? 0.f : a0 + a1;
                }
                const int hh = h0 + x, h = kh * r + hh, cj = 16 * w + j;
                const float bj = ps.B[hh][cj];
                bf16_t *Th = ps.KQ + x * 2 * CH * CH, *Tl = Th + CH * CH;
#pragma unroll
                for (int i = 0; i < 16; i++) {
                    const int row = 16 * w + i;
                    const bf16_t hi = f2bf(t[i]);
                    Th[swz(row, cj)] = hi;
                    Tl[swz(row, cj)] = f2bf(t[i] - bf2f(hi));
                    if (row < L) p.Tb[(((size_t)t0 + c0 + row) * p.Hv + h) * CH + cj] = f2bf(t[i] * bj);
                }
            }
        }
        bar_sync<ID, 128>(); /* every T_ww and every A block is in the scratch */
        /* (c) block rows lv = 1..3 in turn, head x of the pair on warp (lv + 2x) & 3 (two
         * warps at once; the heads' planes are apart), once rows < lv are done:
         *   Z_lj = sum_{k=j}^{l-1} A_lk T_kj ,  T_lj = -T_ll Z_lj   (j < l = lv)
         * as bf16 mma on hi/lo splits (hi*hi + hi*lo + lo*hi, fp32 accumulate); Z takes the
         * place of A_lj in the scratch and T_lj then the place of Z_lj. */
        for (int lv = 1; lv < 4; lv++) {
            for (int x = 0; x < nh; x++) {
                if (w != ((lv + 2 * x) & 3)) continue;
                const int hh = h0 + x, h = kh * r + hh;
                const int ra = 16 * lv + g, rb = ra + 8; /* this thread's two rows of block row lv */
                bf16_t *Th = ps.KQ + x * 2 * CH * CH, *Tl = Th + CH * CH;
                float z[3][2][4];
#pragma unroll
                for (int j = 0; j < 3; j++)
#pragma unroll
                    for (int i = 0; i < 8; i++) z[j][i >> 2][i & 3] = 0.f;
#pragma unroll
                for (int k = 0; k < 3; k++) {
                    if (k >= lv) break;
                    unsigned ah[4], al[4];
                    lda_swz(ah, Th, 16 * lv, 16 * k, lane);
                    lda_swz(al, Tl, 16 * lv, 16 * k, lane);
#pragma unroll
                    for (int j = 0; j <= k; j++) {
                        unsigned bh[4], bl[4];
                        ldb2_swz(bh, Th, 16 * k, 16 * j, lane);
                        ldb2_swz(bl, Tl, 16 * k, 16 * j, lane);
                        mma3(z[j][0], ah, al, bh[0], bh[1], bl[0], bl[1]);
                        mma3(z[j][1], ah, al, bh[2], bh[3], bl[2], bl[3]);
                    }
                }
                __syncwarp();
                store_row_blocks<false>(Th, Tl, z, lv, ra, rb, tq, p, nullptr, t0, c0, h, L);
                __syncwarp();
                unsigned th[4], tl[4];
                lda_swz(th, Th, 16 * lv, 16 * lv, lane);
                lda_swz(tl, Tl, 16 * lv, 16 * lv, lane);
#pragma unroll
                for (int j = 0; j < 3; j++) {
                    if (j >= lv) break;
                    unsigned bh[4], bl[4];
                    ldb2_swz(bh, Th, 16 * lv, 16 * j, lane);
                    ldb2_swz(bl, Tl, 16 * lv, 16 * j, lane);
#pragma unroll
                    for (int i = 0; i < 8; i++) z[j][i >> 2][i & 3] = 0.f;
                    mma3(z[j][0], th, tl, bh[0], bh[1], bl[0], bl[1]);
                    mma3(z[j][1], th, tl, bh[2], bh[3], bl[2], bl[3]);
                }
                __syncwarp();
                store_row_blocks<true>(Th, Tl, z, lv, ra, rb, tq, p, ps.B[hh], t0, c0, h, L);
            }
            bar_sync<ID, 128>(); /* row lv of T is complete (the last: the scratch is free again) */
        }
    }
}

/* Block per (chunk, key head): K K^T and Q K^T are shared by the r v-heads of the key
 * head; only the gates differ. */
__global__ void __launch_bounds__(128, 3) gdn_chunk_prep_kernel(const chunk_params p) {
    __shared__ __align__(16) pp_stage ps;
    __shared__ pp_aux ax;
    const int c = blockIdx.x, kh = blockIdx.y, s = blockIdx.z;
    const int t0 = p.tok_start[s], len = p.tok_start[s + 1] - t0;
    const int c0 = c * CH;
    if (c0 >= len) return;
    const int L = min(CH, len - c0);
    pp_load(ps, p, t0, c0, L, kh, threadIdx.x);
    cp_async_wait_all();
    __syncthreads();
    pp_compute<0>(ps, ax, p, t0, c0, L, kh, threadIdx.x);
}

/* ------------------------------------------------------------------------------------ */
/* 4. chunk_state: the sequential pass                                                   */
template <int BV> struct cs_smem {
    bf16_t K[2][CH * LDK];
    bf16_t Q[2][CH * LDK];
    bf16_t V[2][CH * (BV + 8)];
    bf16_t Tb[2][CH * LDC];
    bf16_t P[2][CH * LDC];
    float G[2][CH];
    float RK[2][CH], RQ[2][CH]; /* inverse norms of the raw k, q rows */
    /* the pass's operands, row-major with v the inner index (threads store the v pairs
     * of their accumulators as one 4-byte word; the mma reads them as B by ldmatrix.trans;
     * row stride BV + 8: both conflict-free) */
    bf16_t Sk[DK * (BV + 8)]; /* S as bf16 [k][v] */
    bf16_t Y[CH * (BV + 8)];  /* Y [token][v] */
    bf16_t Vp[CH * (BV + 8)]; /* V' [token][v] */
    bf16_t Vd[CH * (BV + 8)]; /* decayed V' [token][v] */
};

template <int BV, int NT>
__device__ __forceinline__ void cs_load_chunk(cs_smem<BV> &sm, int st, const chunk_params &p, int t0, int c0, int L,
                                              int kh, int h, int vt, int tid) {
    for (int e = tid; e < CH * 16; e += NT) {
        const int row = e >> 4, col = (e & 15) * 8;
        const bool ok = row < L;
        const size_t tok = (size_t)t0 + c0 + (ok ? row : 0);
        cp_async16(&sm.K[st][row * LDK + col], p.kn + (tok * p.Hk + kh) * DK + col, ok);
        cp_async16(&sm.Q[st][row * LDK + col], p.qn + (tok * p.Hk + kh) * DK + col, ok);
    }
    for (int e = tid; e < CH * 8; e += NT) {
        const int row = e >> 3, col = (e & 7) * 8;
        const bool ok = row < L;
        const size_t tok = (size_t)t0 + c0 + (ok ? row : 0);
        cp_async16(&sm.Tb[st][row * LDC + col], p.Tb + (tok * p.Hv + h) * CH + col, ok);
        cp_async16(&sm.P[st][row * LDC + col], p.P + (tok * p.Hv + h) * CH + col, ok);
    }
    for (int e = tid; e < CH * (BV / 8); e += NT) {
        const int row = e / (BV / 8), col = (e % (BV / 8)) * 8;
        const bool ok = row < L;
        const size_t tok = (size_t)t0 + c0 + (ok ? row : 0);
        cp_async16(&sm.V[st][row * (BV + 8) + col], p.v + (tok * p.Hv + h) * DK + vt * BV + col, ok);
    }
    /* Gamma rows are Hv floats apart: 4-byte copies, zero past L (padded rows have zero
     * k, q, v, Tb, P rows, so any finite Gamma there is harmless) */
    if (tid < CH) {
        const bool ok = tid < L;
        const size_t tok = (size_t)t0 + c0 + (ok ? tid : 0);
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(&sm.G[st][tid])),
                     "l"(p.G + tok * p.Hv + h), "r"(ok ? 4 : 0)
                     : "memory");
    } else if (tid < 2 * CH) {
        const int row = tid - CH;
        const bool ok = row < L;
        const size_t tok = (size_t)t0 + c0 + (ok ? row : 0);
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(&sm.RK[st][row])),
                     "l"(p.RK + tok * p.Hk + kh), "r"(ok ? 4 : 0)
                     : "memory");
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(&sm.RQ[st][row])),
                     "l"(p.RQ + tok * p.Hk + kh), "r"(ok ? 4 : 0)
                     : "memory");
    }
    cp_async_commit();
}

/* Fused pass: thread 0 makes sure chunk c (of nch) of (s, kh) is prepared; callers then
 * barrier. One flag read is an L2 round trip on the pass's critical path, so it reads
 * the flags of up to 8 chunks at once (relaxed, independent loads), then one acquire
 * fence, and remembers in `ready` how far they are set: about one wait per 8 chunks. */
__device__ __forceinline__ void cs_wait_prepared(const chunk_params &p, int t0, int s, int c, int nch, int kh, int tid,
                                                 int &ready) {
    if (!p.flags || tid != 0 || c < ready) return;
    for (;;) {
        int f[8];
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = c + i < nch ? ld_relaxed(p.flags + flag_index(t0, s, c + i, p.Hk, kh)) : 0;
        int n = 0;
#pragma unroll
        for (int i = 0; i < 8; i++) n += (n == i && f[i] != 0);
        if (n > 0) {
            asm volatile("fence.acq_rel.gpu;\n" ::: "memory"); /* with the relaxed reads: acquire */
            ready = c + n;
            return;
        }
        __nanosleep(100);
    }
}

/* The pool addresses of the state rows v = vt * BV + nb * 8 + 2 (lane & 3) + e (e = 0, 1) of
 * sequence s, v-head h: one lookup of each row's page and slot, all independent loads. */
template <int BV>
__device__ __forceinline__ void state_rows(const chunk_params &p, int s, int h, int vt, int lane,
                                           const char *(&gb)[BV / 8][2]) {
    const int32_t *pages = p.state_pages + (size_t)s * p.E;
    const size_t es = p.ssm_f32 ? 4 : 2;
#pragma unroll
    for (int nb = 0; nb < BV / 8; nb++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int v = vt * BV + nb * 8 + (lane & 3) * 2 + e;
            const sm_loc_t loc = p.ssm_loc[h * p.n_slices + v / p.slice_rows];
            gb[nb][e] = p.pool + (size_t)pages[loc.page] * p.page_bytes + loc.offset + (size_t)(v % p.slice_rows) * DK * es;
        }
}

/* acc[nb] += A[16 rb .., :] B[:, 8 (cb + nb) ..] over the k-steps 0..rb (A lower triangular
 * in 16-row blocks: the chunk's 64x64 Tb or P, row stride LDC; B row stride LS), for the
 * warp's row block rb and its NBH n-tiles from cb (cs_run's V' = Tb Y and O += P V'). */
template <int NBH, int LS>
__device__ __forceinline__ void mma_lower(float (&acc)[NBH][4], const bf16_t *A, const bf16_t *B, int rb, int cb,
                                          int lane) {
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        if (kk > rb) break;
        unsigned a[4];
        lda(a, A + (16 * rb) * LDC + kk * 16, LDC, lane);
#pragma unroll
        for (int nb = 0; nb < NBH; nb += 2) {
            unsigned bb[4];
            ldb2_t(bb, B + (kk * 16) * LS + (cb + nb) * 8, LS, lane);
            mma_16816(acc[nb], a, bb[0], bb[1]);
            mma_16816(acc[nb + 1], a, bb[2], bb[3]);
        }
    }
}

/* The sequential pass of one (sequence s, v-head h, V-tile vt) on 256 threads (8 warps):
 * for the token-row products warp w takes rows [16 (w & 3), +16) and columns
 * [(w >> 2) * BV/2, +BV/2) of the tile; for the state update dk rows [16 w, +16).
 * Barriers: bar ID of 256. */
template <int BV, int ID>
__device__ __forceinline__ void cs_run(const chunk_params &p, cs_smem<BV> &sm, int h, int vt, int s, int tid) {
    constexpr int NT = 256, NB = BV / 8, NBH = NB / 2, LSV = BV + 8;
    static_assert(NBH % 2 == 0, "n-tiles are loaded in pairs");
    const int lane = tid & 31, w = tid >> 5;
    const int rb = w & 3, cb = (w >> 2) * NBH; /* row block, first n-tile */
    const int t0 = p.tok_start[s], len = p.tok_start[s + 1] - t0;
    const int kh = h / p.r;
    if (len <= 0) return;
    const bool has = p.pool && p.n_past[s] > 0;
    /* S tile rows dk [16w, 16w+16) x BV in accumulator layout: this thread's elements are
     * (k0 + 8 (i >> 1), v of column nb * 8 + 2 (lane & 3) + (i & 1)) */
    float S[NB][4];
    const int k0 = 16 * w + (lane >> 2);
    if (has) {
        /* the rows' addresses first (independent page and slot lookups), then the values
         * (element by element, three dependent loads each, the pass took ~10 us longer to
         * reach its first chunk) */
        const char *gb[NB][2];
        state_rows<BV>(p, s, h, vt, lane, gb);
        if (p.ssm_f32) {
#pragma unroll
            for (int nb = 0; nb < NB; nb++)
#pragma unroll
                for (int i = 0; i < 4; i++) S[nb][i] = reinterpret_cast<const float *>(gb[nb][i & 1])[k0 + (i >> 1) * 8];
        } else {
#pragma unroll
            for (int nb = 0; nb < NB; nb++)
#pragma unroll
                for (int i = 0; i < 4; i++)
                    S[nb][i] = bf2f(reinterpret_cast<const bf16_t *>(gb[nb][i & 1])[k0 + (i >> 1) * 8]);
        }
    } else {
#pragma unroll
        for (int nb = 0; nb < NB; nb++)
#pragma unroll
            for (int i = 0; i < 4; i++) S[nb][i] = 0.f;
    }
    const int nchunks = (len + CH - 1) / CH;
    if (p.trace && blockIdx.x == 0 && tid == 0) {
        float x = 0.f; /* wait for the loads: the stamp after them */
#pragma unroll
        for (int nb = 0; nb < NB; nb++) x += S[nb][0] + S[nb][3];
        p.trace[2 * p.n_items + nchunks + 1] = gtimer() + (x == 12345.f);
    }
    const float scale = rsqrtf((float)DK);
    int ready = 0; /* chunks known prepared (thread 0) */
    cs_wait_prepared(p, t0, s, 0, nchunks, kh, tid, ready);
    if (p.trace && blockIdx.x == 0 && tid == 0) p.trace[2 * p.n_items + nchunks + 3] = gtimer();
    bar_sync<ID, NT>();
    cs_load_chunk<BV, NT>(sm, 0, p, t0, 0, min(CH, len), kh, h, vt, tid);
    for (int c = 0; c < nchunks; c++) {
        const int st = c & 1, c0 = c * CH, L = min(CH, len - c0);
        /* S -> Sk (bf16, [k][v]) */
#pragma unroll
        for (int nb = 0; nb < NB; nb++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int k = 16 * w + (lane >> 2) + hf * 8, v = nb * 8 + (lane & 3) * 2;
                *reinterpret_cast<uint32_t *>(&sm.Sk[k * LSV + v]) = f2_to_bf2x2(S[nb][2 * hf], S[nb][2 * hf + 1]);
            }
        cp_async_wait_all();
        if (c + 1 < nchunks) cs_wait_prepared(p, t0, s, c + 1, nchunks, kh, tid, ready);
        bar_sync<ID, NT>(); /* chunk c landed; Sk complete; previous chunk's readers done */
        if (c + 1 < nchunks) cs_load_chunk<BV, NT>(sm, st ^ 1, p, t0, c0 + CH, min(CH, len - c0 - CH), kh, h, vt, tid);
        if (p.trace && blockIdx.x == 0 && tid == 0) p.trace[2 * p.n_items + c] = gtimer();
        const float *G = sm.G[st];
        const float Glast = G[L - 1];
        const int r0 = 16 * rb + (lane >> 2); /* this thread's two token rows: r0, r0 + 8 */
        const float rk0 = sm.RK[st][r0], rk1 = sm.RK[st][r0 + 8];
        const float eg0 = expf(G[r0]) * rk0, eg1 = expf(G[r0 + 8]) * rk1; /* e^G times 1/|k_r| */
        const float eq0 = expf(G[r0]) * sm.RQ[st][r0] * scale, eq1 = expf(G[r0 + 8]) * sm.RQ[st][r0 + 8] * scale;
        const float ed0 = expf(Glast - G[r0]) * rk0, ed1 = expf(Glast - G[r0 + 8]) * rk1;
        /* KS, QS: rows [16rb, +16) x n-tiles [cb, cb + NBH) */
        float ks_[NBH][4], qs_[NBH][4];
#pragma unroll
        for (int nb = 0; nb < NBH; nb++)
#pragma unroll
            for (int i = 0; i < 4; i++) ks_[nb][i] = qs_[nb][i] = 0.f;
#pragma unroll
        for (int kk = 0; kk < DK / 16; kk++) {
            unsigned ak[4], aq[4];
            lda(ak, sm.K[st] + (16 * rb) * LDK + kk * 16, LDK, lane);
            lda(aq, sm.Q[st] + (16 * rb) * LDK + kk * 16, LDK, lane);
#pragma unroll
            for (int nb = 0; nb < NBH; nb += 2) {
                unsigned bb[4];
                ldb2_t(bb, sm.Sk + (kk * 16) * LSV + (cb + nb) * 8, LSV, lane);
                mma_16816(ks_[nb], ak, bb[0], bb[1]);
                mma_16816(ks_[nb + 1], ak, bb[2], bb[3]);
                mma_16816(qs_[nb], aq, bb[0], bb[1]);
                mma_16816(qs_[nb + 1], aq, bb[2], bb[3]);
            }
        }
        /* Y = V - e^G KS -> Y;  QS *= e^G scale */
#pragma unroll
        for (int nb = 0; nb < NBH; nb++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int row = r0 + hf * 8, v = (cb + nb) * 8 + (lane & 3) * 2;
                const float eg = hf ? eg1 : eg0, eq = hf ? eq1 : eq0;
                const float2 vv = bf2x2_to_f2(*reinterpret_cast<const uint32_t *>(&sm.V[st][row * (BV + 8) + v]));
                *reinterpret_cast<uint32_t *>(&sm.Y[row * LSV + v]) =
                    f2_to_bf2x2(vv.x - eg * ks_[nb][2 * hf], vv.y - eg * ks_[nb][2 * hf + 1]);
                qs_[nb][2 * hf] *= eq;
                qs_[nb][2 * hf + 1] *= eq;
            }
        bar_sync<ID, NT>();
        /* V' = Tb Y (lower triangular: k-steps 0..rb) */
        float vp[NBH][4];
#pragma unroll
        for (int nb = 0; nb < NBH; nb++)
#pragma unroll
            for (int i = 0; i < 4; i++) vp[nb][i] = 0.f;
        mma_lower<NBH, LSV>(vp, sm.Tb[st], sm.Y, rb, cb, lane);
#pragma unroll
        for (int nb = 0; nb < NBH; nb++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int row = r0 + hf * 8, v = (cb + nb) * 8 + (lane & 3) * 2;
                const float ed = hf ? ed1 : ed0, a = vp[nb][2 * hf], b = vp[nb][2 * hf + 1];
                *reinterpret_cast<uint32_t *>(&sm.Vp[row * LSV + v]) = f2_to_bf2x2(a, b);
                *reinterpret_cast<uint32_t *>(&sm.Vd[row * LSV + v]) = f2_to_bf2x2(a * ed, b * ed);
            }
        bar_sync<ID, NT>();
        /* O = e^G Q S scale + P V' */
        mma_lower<NBH, LSV>(qs_, sm.P[st], sm.Vp, rb, cb, lane);
#pragma unroll
        for (int nb = 0; nb < NBH; nb++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                const int row = r0 + hf * 8, v = (cb + nb) * 8 + (lane & 3) * 2;
                if (row < L)
                    *reinterpret_cast<uint32_t *>(p.o + (((size_t)t0 + c0 + row) * p.Hv + h) * DK + vt * BV + v) =
                        f2_to_bf2x2(qs_[nb][2 * hf], qs_[nb][2 * hf + 1]);
            }
        /* S = e^{G_last} S + K^T Vd: dk rows [16w, +16) */
        const float el = expf(Glast);
#pragma unroll
        for (int nb = 0; nb < NB; nb++)
#pragma unroll
            for (int i = 0; i < 4; i++) S[nb][i] *= el;
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            unsigned a[4];
            lda_t(a, sm.K[st] + (kk * 16) * LDK + 16 * w, LDK, lane);
#pragma unroll
            for (int nb = 0; nb < NB; nb += 2) {
                unsigned bb[4];
                ldb2_t(bb, sm.Vd + (kk * 16) * LSV + nb * 8, LSV, lane);
                mma_16816(S[nb], a, bb[0], bb[1]);
                mma_16816(S[nb + 1], a, bb[2], bb[3]);
            }
        }
    }
    /* final state back in place: every address before the first store (a lookup after a
     * store to the pool could not be hoisted above it) */
    if (p.pool) {
        const char *gb[NB][2];
        state_rows<BV>(p, s, h, vt, lane, gb);
        if (p.ssm_f32) {
#pragma unroll
            for (int nb = 0; nb < NB; nb++)
#pragma unroll
                for (int i = 0; i < 4; i++)
                    reinterpret_cast<float *>(const_cast<char *>(gb[nb][i & 1]))[k0 + (i >> 1) * 8] = S[nb][i];
        } else {
#pragma unroll
            for (int nb = 0; nb < NB; nb++)
#pragma unroll
                for (int i = 0; i < 4; i++)
                    reinterpret_cast<bf16_t *>(const_cast<char *>(gb[nb][i & 1]))[k0 + (i >> 1) * 8] = f2bf(S[nb][i]);
        }
    }
    if (p.trace && blockIdx.x == 0 && tid == 0) p.trace[2 * p.n_items + nchunks + 2] = gtimer();
}

/* Block per (v-head, V-tile) x sequence, after chunk_prep finished (stream order). */
template <int BV>
__global__ void __launch_bounds__(256, 1) gdn_chunk_state_kernel(const chunk_params p) {
    extern __shared__ __align__(16) unsigned char dsmem[];
    cs_smem<BV> &sm = *reinterpret_cast<cs_smem<BV> *>(dsmem);
    constexpr int NVT = DK / BV;
    cs_run<BV, 0>(p, sm, blockIdx.x / NVT, blockIdx.x % NVT, blockIdx.y, threadIdx.x);
}

/* ------------------------------------------------------------------------------------ */
/* 3+4 fused: chunk_prep overlapped with chunk_state. With few heads the sequential pass
 * has one block per SM that is mostly waiting on latencies (mma chains, barriers, L2);
 * its idle issue slots and the spare SMs run chunk_prep meanwhile. Block of 384 threads:
 * warps 0-7 run the sequential pass of one (sequence, v-head, V-tile) (blocks past
 * n_state have none), warps 8-11 are a chunk_prep worker that takes (chunk, sequence,
 * key head) items in chunk-major order from an atomic counter, prefetching the next
 * item's rows while it computes the current one, and raises a flag per item; the pass
 * waits on the flag of a chunk before loading it (reading up to 8 chunks' flags at once,
 * cs_wait_prepared). The workers never wait on anything, so every item completes as long
 * as one block runs: no deadlock whatever the number of co-resident blocks. Flags and the
 * counter are zeroed (memset) before each launch. What bounds it: in session 3 the
 * workers' per-item latency (~40K cycles an item, ncu: ~16K warp instructions at ~10
 * cycles each, barrier and dependency stalls, the heaviest warp doing four of ten
 * blocks); since session 4 (balanced blocks, norms by mma: ~21K cycles an item, all
 * items done at ~60% of the call, bench_gdn_prefill -t) the pass itself, ~10% slower per
 * chunk than alone while the workers run (shared memory: ~3K wavefronts per 64-token
 * step and block, ncu session 3), plus one item's latency before the first chunk. */
#define FZ_BV 32
struct fz_smem {
    cs_smem<FZ_BV> cs;
    pp_stage pp[2];
    pp_aux ax;
};
static_assert(sizeof(fz_smem) <= 227 * 1024, "the fused pass's shared memory exceeds an SM's 227 KB");

/* The worker's next item. Thread 0 holds a ticket taken one claim earlier, so the atomic's
 * round trip overlaps the work in between; tickets of chunks past their sequence's end
 * are skipped. The first ticket of block b is item b, the counter's tickets start past
 * the grid: the first round is items 0 .. grid - 1, the first chunks' (a block that took
 * two tickets from the counter before a later one took its first used to defer one of
 * the first items by a whole item: at 4k the pass started chunk 0 ~11 us after its
 * items were published, waiting for chunk 1). */
__device__ __forceinline__ int fz_claim(const chunk_params &p, pp_aux &ax, int tid, int &ticket) {
    bar_sync<2, 128>(); /* everyone has read the previous slot */
    if (tid == 0) {
        int it = ticket;
        while (it < p.n_items) {
            const int s = (it / p.Hk) % p.S, c = it / (p.Hk * p.S);
            if (c * CH < p.tok_start[s + 1] - p.tok_start[s]) break;
            it = atomicAdd(p.flags, 1) + (int)gridDim.x;
        }
        ax.slot = it;
        ticket = it < p.n_items ? atomicAdd(p.flags, 1) + (int)gridDim.x : it;
    }
    bar_sync<2, 128>();
    return ax.slot;
}

__global__ void __launch_bounds__(384, 1) gdn_chunk_fused_kernel(const chunk_params p) {
    extern __shared__ __align__(16) unsigned char dsmem[];
    fz_smem &sm = *reinterpret_cast<fz_smem *>(dsmem);
    constexpr int NVT = DK / FZ_BV;
    if (threadIdx.x < 256) {
        const int b = blockIdx.x;
        if (b >= p.n_state) return;
        const int hv = b % (p.Hv * NVT), s = b / (p.Hv * NVT);
        if (p.trace && b == 0 && threadIdx.x == 0) {
            const int len0 = p.tok_start[1] - p.tok_start[0];
            p.trace[2 * p.n_items + (len0 + CH - 1) / CH] = gtimer();
        }
        cs_run<FZ_BV, 1>(p, sm.cs, hv / NVT, hv % NVT, s, threadIdx.x);
        return;
    }
    const int tid = threadIdx.x - 256;
    int ticket = (int)blockIdx.x;
    int cur = fz_claim(p, sm.ax, tid, ticket), st = 0;
    auto decode = [&](int it, int &s, int &c, int &kh, int &t0, int &L) {
        kh = it % p.Hk;
        s = (it / p.Hk) % p.S;
        c = it / (p.Hk * p.S);
        t0 = p.tok_start[s];
        L = min(CH, p.tok_start[s + 1] - t0 - c * CH);
    };
    if (cur < p.n_items) {
        int s, c, kh, t0, L;
        decode(cur, s, c, kh, t0, L);
        pp_load(sm.pp[0], p, t0, c * CH, L, kh, tid);
    }
    while (cur < p.n_items) {
        const int nxt = fz_claim(p, sm.ax, tid, ticket);
        cp_async_wait_all();
        bar_sync<2, 128>(); /* the current item's rows landed for every thread */
        if (nxt < p.n_items) {
            int s, c, kh, t0, L;
            decode(nxt, s, c, kh, t0, L);
            pp_load(sm.pp[st ^ 1], p, t0, c * CH, L, kh, tid);
        }
        int s, c, kh, t0, L;
        decode(cur, s, c, kh, t0, L);
        const long long clk0 = clock64();
        pp_compute<2>(sm.pp[st], sm.ax, p, t0, c * CH, L, kh, tid);
        /* release: the barrier orders every thread's results before thread 0's fence
         * (cumulative), the flag store after it (as a grid barrier does) */
        bar_sync<2, 128>();
        if (tid == 0) __threadfence(), atomicExch(p.flags + flag_index(t0, s, c, p.Hk, kh), 1);
        if (p.trace && tid == 0) {
            p.trace[cur] = gtimer();
            p.trace[p.n_items + cur] = (unsigned long long)(clock64() - clk0);
        }
        cur = nxt;
        st ^= 1;
    }
}

/* Benchmark hooks: mode 1 = run chunk_prep only, 2 = chunk_state only, 0 = both;
 * bv = V-tile width of chunk_state (32 or 64; 0 = heuristic); fused = 0 keeps the two
 * kernels apart where the fused pass would be taken. */
extern "C" int gdn_chunk_bench_mode, gdn_chunk_bench_bv, gdn_chunk_bench_fused;
int gdn_chunk_bench_mode = 0, gdn_chunk_bench_bv = 0, gdn_chunk_bench_fused = 1;
/* bench: device buffer of >= 2 n_items + nch + 1 entries for the fused pass's trace (see
 * chunk_params.trace), null = off */
extern "C" unsigned long long *gdn_chunk_bench_trace;
unsigned long long *gdn_chunk_bench_trace = nullptr;

template <int BV> static int launch_state(const chunk_params &p, int S, int Hv, cudaStream_t s) {
    static bool attr = false;
    if (!attr) {
        HS_CUDA_TRY(cudaFuncSetAttribute(gdn_chunk_state_kernel<BV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)sizeof(cs_smem<BV>)));
        attr = true;
    }
    gdn_chunk_state_kernel<BV><<<dim3((unsigned)(Hv * (DK / BV)), (unsigned)S), 256, sizeof(cs_smem<BV>), s>>>(p);
    HS_CUDA_LAUNCHED();
    return HS_OK;
}

static size_t flag_bytes(int T, int Hv) { return ((size_t)T / CH + FUSE_MAXS + 2) * Hv * 4 + 64; }

extern "C" size_t gdn_chunk_workspace_bytes(int T, int Hv) {
    /* Tb, P, G, RK+RQ, flags */
    return (size_t)T * Hv * CH * 2 * 2 + (size_t)T * Hv * 4 + (size_t)T * Hv * 2 * 4 + flag_bytes(T, Hv) + 256;
}

extern "C" int gdn_chunk_launch(const void *qn, const void *kn, const void *v, const float *g, const float *beta,
                                const int32_t *tok_start, const int32_t *tok_start_host, const int32_t *n_past, int S,
                                int T, int Hk, int Hv, const gdn_state_t *st, void *ws, void *o, void *stream) {
    if (T <= 0 || S <= 0) return HS_OK;
    if (Hk <= 0 || Hv % Hk || Hv / Hk > MAXR || !tok_start_host || !ws) return HS_ERR_INVALID;
    if (st && ((st->ssm_dtype != HS_F32 && st->ssm_dtype != HS_BF16) || st->slice_rows <= 0 || DK % st->slice_rows))
        return HS_ERR_INVALID;
    int maxlen = 0;
    for (int s = 0; s < S; s++) {
        const int l = tok_start_host[s + 1] - tok_start_host[s];
        if (l > maxlen) maxlen = l;
    }
    if (maxlen <= 0) return HS_OK;
    chunk_params p;
    p.qn = (const bf16_t *)qn;
    p.kn = (const bf16_t *)kn;
    p.v = (const bf16_t *)v;
    p.g = g;
    p.beta = beta;
    p.tok_start = tok_start;
    p.n_past = n_past;
    p.S = S;
    p.Hk = Hk;
    p.Hv = Hv;
    p.r = Hv / Hk;
    p.Tb = (bf16_t *)ws;
    p.P = p.Tb + (size_t)T * Hv * CH;
    p.G = reinterpret_cast<float *>(p.P + (size_t)T * Hv * CH);
    p.RK = p.G + (size_t)T * Hv;
    p.RQ = p.RK + (size_t)T * Hk;
    p.o = (bf16_t *)o;
    p.pool = st ? (char *)st->pool_base : nullptr;
    p.page_bytes = st ? st->page_bytes : 0;
    p.state_pages = st ? st->state_pages : nullptr;
    p.E = st ? st->n_state_pages : 0;
    p.ssm_loc = st ? st->ssm_loc : nullptr;
    p.slice_rows = st ? st->slice_rows : DK;
    p.n_slices = DK / p.slice_rows;
    p.ssm_f32 = st ? st->ssm_dtype == HS_F32 : 1;
    p.flags = nullptr;
    p.trace = nullptr;
    p.n_items = 0;
    p.n_state = 0;
    cudaStream_t s = (cudaStream_t)stream;
    const int nch = (maxlen + CH - 1) / CH;
    /* V tiles of 64 halve the K/Q/Tb/P re-reads; 32 keeps more SMs busy on few heads */
    const int bv = gdn_chunk_bench_bv ? gdn_chunk_bench_bv : ((long)Hv * S * 2 >= 128 ? 64 : 32);
    static int n_sm = 0;
    if (!n_sm) {
        int dev;
        HS_CUDA_TRY(cudaGetDevice(&dev));
        HS_CUDA_TRY(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev));
        HS_CUDA_TRY(cudaFuncSetAttribute(gdn_chunk_fused_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)sizeof(fz_smem)));
    }
    /* fused where one wave of pass blocks leaves issue slots (and maybe SMs) to chunk_prep */
    if (bv == FZ_BV && S <= FUSE_MAXS && S * Hv * (DK / FZ_BV) <= n_sm && gdn_chunk_bench_mode == 0 &&
        gdn_chunk_bench_fused) {
        /* flags after the RK+RQ space (T * Hv * 2 floats, of which T * Hk * 2 are used) */
        p.flags = reinterpret_cast<int *>(p.RK + (size_t)T * Hv * 2);
        const size_t fb = ((size_t)T / CH + S + 2) * Hk * 4 + 16;
        assert(fb <= flag_bytes(T, Hv));
        HS_CUDA_TRY(cudaMemsetAsync(p.flags, 0, fb, s));
        p.n_items = nch * S * Hk;
        p.n_state = S * Hv * (DK / FZ_BV);
        p.trace = gdn_chunk_bench_trace;
        const int grid = p.n_state < n_sm ? n_sm : p.n_state;
        gdn_chunk_fused_kernel<<<(unsigned)grid, 384, sizeof(fz_smem), s>>>(p);
        HS_CUDA_LAUNCHED();
        return HS_OK;
    }
    if (gdn_chunk_bench_mode != 2) {
        gdn_chunk_prep_kernel<<<dim3((unsigned)nch, (unsigned)Hk, (unsigned)S), 128, 0, s>>>(p);
        HS_CUDA_LAUNCHED();
    }
    if (gdn_chunk_bench_mode == 1) return HS_OK;
    return bv == 64 ? launch_state<64>(p, S, Hv, s) : launch_state<32>(p, S, Hv, s);
}
