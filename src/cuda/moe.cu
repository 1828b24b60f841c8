/*
 * moe: the CUDA MoE FFN with device-side grouping and grouped expert GEMMs (see moe.h).
 *
 * Launches of one call (Qwen3.5-35B-A3B: E 256, top-8, I = Is = 512, H 2048):
 *   1 memset of the per-expert counts
 *   2 router logits [T][E] fp32 (cuBLAS, skipped when the caller passes logits)
 *   3 k_topk        softmax, top-k (ties: lower id), renormalise; counts (int atomics)
 *   4 k_scan        one block: row offsets and tile offsets per group (prefix sums), cursors
 *   5 k_slots       a row per (token, k) in expert order: perm[row] = token, slot[t*k+j] = row
 *   6 k_grouped_gemm<GU>   act[row] = silu(x W_g^T) * (x W_u^T), gathering x through perm
 *   7 k_grouped_gemm<down> y[row] = act[row] W_d^T (bf16)
 *   8 shared-gate logits [T] fp32 (cuBLAS GEMV), when the layer has a shared gate
 *   9 k_combine     out[t] = sum_j w[t][j] y[slot[t][j]] + sigmoid(gate[t]) y_shared[t] (fp32, rank order)
 * Groups 0..E-1 are the routed experts; group E is the shared expert (all T tokens, rows
 * T*k .. T*k+T-1) when Is == I, else the shared expert gets launches 6-7 of its own.
 *
 * Grouped GEMM: block = (N tile, M tile); the M tile index is looked up in the device tile
 * offsets (binary search), so the grid is the host bound sum_g ceil(rows_g / BM) <=
 * rows / BM + groups; blocks past the last tile exit. bf16 operands, fp32 accumulation,
 * mma.sync m16n8k16 from ldmatrix, cp.async multi-stage pipeline, padded shared rows (no
 * bank conflicts), rows past a group's end zero-filled and never stored. Three tiles:
 * SMALL 16x64 (decode: a few tokens per expert; streaming the weights is the cost),
 * MEDIUM 64x128, LARGE 128x128 (prefill). For gate_up a block's B tile holds BN/2 gate rows
 * and the BN/2 matching up rows, so SwiGLU is applied in the epilogue.
 *
 * MOE_PATH_HOST keeps the previous implementation (ids to the host, counting sort there,
 * per expert gather + cuBLAS gate_up + swiglu + cuBLAS down + scatter-add) as a baseline.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
#include "moe.h"

#define MOE_CKB(call)                                                                                  \
    do {                                                                                               \
        cublasStatus_t s_ = (call);                                                                    \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                             \
            fprintf(stderr, "hyserve: cublas: %s:%d: %s: status %d\n", __FILE__, __LINE__, #call,     \
                    (int)s_);                                                                          \
            return HS_ERR_STATE;                                                                       \
        }                                                                                              \
    } while (0)

/* Host allocations that abort on out-of-memory (like util.h's, kept local so that this file
 * links on its own: a test or bench may use it without the rest of the library). */
static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "hyserve: moe: out of host memory (%zu bytes)\n", n);
        abort();
    }
    return q;
}
static void *xcalloc(size_t n, size_t sz) {
    void *q = calloc(n ? n : 1, sz ? sz : 1);
    if (!q) xrealloc(NULL, (size_t)-1 / 2);
    return q;
}

/* ---- routing ------------------------------------------------------------------------- */

/* Router probabilities -> top-k ids and weights, one warp per token (E <= 1024, k <= 32);
 * counts the tokens of each expert (cnt zeroed before). */
__global__ void k_topk(const float *logits, int T, int E, int k, int norm, int32_t *ids, float *w, int32_t *cnt) {
    const int t = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (t >= T) return;
    const float *r = logits + (int64_t)t * E;
    float mx = -INFINITY;
    for (int e = lane; e < E; e += 32) mx = fmaxf(mx, r[e]);
    mx = warp_max(mx);
    float z = 0.f;
    for (int e = lane; e < E; e += 32) z += __expf(r[e] - mx);
    z = warp_sum(z);
    /* lane l owns experts l, l+32, ...: a bitmap of the ones already chosen */
    unsigned taken = 0; /* bit i: expert lane + 32*i, E <= 1024 */
    float sum = 0.f, wj = 0.f;
    int myid = 0;
    for (int j = 0; j < k; j++) {
        float best = -INFINITY;
        int bi = 0x7fffffff;
        for (int e = lane, i = 0; e < E; e += 32, i++) {
            if (taken >> i & 1) continue;
            if (r[e] > best || (r[e] == best && e < bi)) best = r[e], bi = e;
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float ob = __shfl_xor_sync(0xffffffffu, best, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ob > best || (ob == best && oi < bi)) best = ob, bi = oi;
        }
        if ((bi & 31) == lane) taken |= 1u << (bi >> 5);
        const float pr = __expf(best - mx) / z;
        sum += pr;
        if (lane == j) myid = bi, wj = pr;
    }
    if (lane < k) {
        ids[(int64_t)t * k + lane] = myid;
        w[(int64_t)t * k + lane] = norm ? wj / sum : wj;
        atomicAdd(&cnt[myid], 1);
    }
}

/* Exclusive block scan of two ints (1024 threads). */
__device__ __forceinline__ int2 block_scan2(int a, int b, int2 *tot) {
    __shared__ int2 ws[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int ia = a, ib = b;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int xa = __shfl_up_sync(0xffffffffu, ia, o), xb = __shfl_up_sync(0xffffffffu, ib, o);
        if (lane >= o) ia += xa, ib += xb;
    }
    if (lane == 31) ws[warp] = make_int2(ia, ib);
    __syncthreads();
    if (warp == 0) {
        int2 v = lane < (int)(blockDim.x >> 5) ? ws[lane] : make_int2(0, 0);
        int va = v.x, vb = v.y;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int xa = __shfl_up_sync(0xffffffffu, va, o), xb = __shfl_up_sync(0xffffffffu, vb, o);
            if (lane >= o) va += xa, vb += xb;
        }
        ws[lane] = make_int2(va, vb); /* inclusive over warps */
    }
    __syncthreads();
    const int2 before = warp > 0 ? ws[warp - 1] : make_int2(0, 0);
    *tot = ws[(blockDim.x >> 5) - 1];
    return make_int2(before.x + ia - a, before.y + ib - b);
}

/* Groups g < G (G = E, or E + 1 with the shared expert as group E of T rows): row offsets
 * offs[G+1], tile offsets toffs[G+1] for tiles of bm rows, cursors cur[g] = offs[g];
 * offs_s/toffs_s: the shared expert alone ({0, T}, {0, ceil(T / bm_s)}). One block of 1024. */
__global__ void k_scan(const int32_t *cnt, int E, int G, int T, int bm, int bm_s, int32_t *offs, int32_t *toffs,
                       int32_t *cur, int32_t *offs_s, int32_t *toffs_s) {
    const int g = threadIdx.x;
    const int c = g < E ? cnt[g] : (g < G ? T : 0);
    int2 tot;
    const int2 ex = block_scan2(c, (c + bm - 1) / bm, &tot);
    if (g < G) offs[g] = ex.x, toffs[g] = ex.y, cur[g] = ex.x;
    if (g == 0) {
        offs[G] = tot.x, toffs[G] = tot.y;
        offs_s[0] = 0, offs_s[1] = T, toffs_s[0] = 0, toffs_s[1] = (T + bm_s - 1) / bm_s;
    }
}

/* Row of each (token, k) in expert order; rows T*k.. of the shared group are token order. */
__global__ void k_slots(const int32_t *ids, int nk, int k, int T, int fold_shared, int32_t *cur, int32_t *perm,
                        int32_t *slot) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < nk) {
        const int pos = atomicAdd(&cur[ids[i]], 1);
        perm[pos] = i / k;
        slot[i] = pos;
    } else if (fold_shared && i < nk + T) {
        perm[i] = i - nk;
    }
}

/* out[t] = bf16( sum_j w[t][j] * y[slot[t][j]] + gate(t) * y[nk + t] ), 8 columns per thread. */
__global__ void k_combine(const bf16_t *y, const int32_t *slot, const float *w, int k, int nk, int H, int shared,
                          const float *sgate, bf16_t *out) {
    const int t = blockIdx.x;
    float sw = 0.f;
    if (shared) sw = sgate ? sigmoid_f(sgate[t]) : 1.f;
    for (int c = threadIdx.x; c < H / 8; c += blockDim.x) {
        float acc[8];
#pragma unroll
        for (int i = 0; i < 8; i++) acc[i] = 0.f;
        for (int j = 0; j < k; j++) {
            const float wj = w[(int64_t)t * k + j];
            const uint4 v = *(const uint4 *)(y + (int64_t)slot[(int64_t)t * k + j] * H + c * 8);
            const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float2 f = bf2x2_to_f2(u[i]);
                acc[2 * i] += wj * f.x, acc[2 * i + 1] += wj * f.y;
            }
        }
        if (shared) {
            const uint4 v = *(const uint4 *)(y + ((int64_t)nk + t) * H + c * 8);
            const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float2 f = bf2x2_to_f2(u[i]);
                acc[2 * i] += sw * f.x, acc[2 * i + 1] += sw * f.y;
            }
        }
        uint4 o;
        o.x = f2_to_bf2x2(acc[0], acc[1]), o.y = f2_to_bf2x2(acc[2], acc[3]);
        o.z = f2_to_bf2x2(acc[4], acc[5]), o.w = f2_to_bf2x2(acc[6], acc[7]);
        *(uint4 *)(out + (int64_t)t * H + c * 8) = o;
    }
}

/* ---- grouped GEMM -------------------------------------------------------------------- */

struct gemm_args {
    const bf16_t *A;          /* rows of K elements, row stride lda */
    const int32_t *a_rows;    /* A row of each grouped row; NULL: identity */
    const bf16_t *const *W;   /* [G] weights: GU [2I][K], down [N][K] */
    const int32_t *offs;      /* [G+1] grouped rows */
    const int32_t *toffs;     /* [G+1] M tiles */
    int G, K, lda;
    int I;                    /* GU: the gate/up split (act columns); down: N */
    bf16_t *C;                /* [rows][ldc] */
    int ldc;
};

template <int BM, int BN, int BK, int WM, int WN, int ST>
constexpr int gemm_smem() {
    return ST * (BM + BN) * (BK + 8) * 2 > BM * (BN + 4) * 4 ? ST * (BM + BN) * (BK + 8) * 2 : BM * (BN + 4) * 4;
}

template <int BM, int BN, int BK, int WM, int WN, int ST, bool GU>
__global__ void __launch_bounds__(WM *WN * 32) k_grouped_gemm(gemm_args p) {
    constexpr int NT = WM * WN * 32, LDS = BK + 8, TM = BM / WM, TN = BN / WN, MI = TM / 16, NI = TN / 8;
    constexpr int CPR = BK / 8, ACH = BM * CPR, BCH = BN * CPR, AL = (ACH + NT - 1) / NT, BL = (BCH + NT - 1) / NT;
    static_assert(TM % 16 == 0 && TN % 16 == 0 && BK % 16 == 0 && ST >= 2, "tile shape");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16_t *As = (bf16_t *)smem_raw; /* [ST][BM][LDS] */
    bf16_t *Bs = As + ST * BM * LDS; /* [ST][BN][LDS] */
    const int nt = blockIdx.x, mt = blockIdx.y, tid = threadIdx.x;
    if (mt >= p.toffs[p.G]) return;
    const int g = seq_of_token(p.toffs, p.G, mt); /* the last group whose first tile is <= mt (it has tiles) */
    const int r0 = p.offs[g] + (mt - p.toffs[g]) * BM, rn = min(BM, p.offs[g + 1] - r0);
    const bf16_t *W = p.W[g];
    const bf16_t *asrc[AL], *bsrc[BL];
    bool aval[AL];
#pragma unroll
    for (int i = 0; i < AL; i++) {
        const int c = tid + i * NT, row = c / CPR;
        const int rr = r0 + min(row, rn - 1);
        const int64_t src = p.a_rows ? p.a_rows[rr] : rr;
        asrc[i] = p.A + src * p.lda + (c % CPR) * 8;
        aval[i] = row < rn;
    }
#pragma unroll
    for (int i = 0; i < BL; i++) {
        const int c = tid + i * NT, j = c / CPR;
        int64_t wrow;
        if (GU) wrow = j < BN / 2 ? nt * (BN / 2) + j : p.I + nt * (BN / 2) + j - BN / 2;
        else wrow = (int64_t)nt * BN + j;
        bsrc[i] = W + wrow * p.K + (c % CPR) * 8;
    }
    auto load = [&](int stage, int kt) {
        const int k0 = kt * BK;
        bf16_t *as = As + stage * BM * LDS, *bs = Bs + stage * BN * LDS;
#pragma unroll
        for (int i = 0; i < AL; i++) {
            const int c = tid + i * NT;
            if (ACH % NT == 0 || c < ACH) cp_async16(as + (c / CPR) * LDS + (c % CPR) * 8, asrc[i] + k0, aval[i]);
        }
#pragma unroll
        for (int i = 0; i < BL; i++) {
            const int c = tid + i * NT;
            if (BCH % NT == 0 || c < BCH) cp_async16(bs + (c / CPR) * LDS + (c % CPR) * 8, bsrc[i] + k0, true);
        }
    };
    const int KT = p.K / BK;
#pragma unroll
    for (int s = 0; s < ST - 1; s++) {
        if (s < KT) load(s, s);
        cp_async_commit();
    }
    const int warp = tid >> 5, lane = tid & 31, wm = warp / WN, wn = warp % WN;
    float acc[MI][NI][4];
#pragma unroll
    for (int a = 0; a < MI; a++)
#pragma unroll
        for (int b = 0; b < NI; b++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[a][b][q] = 0.f;
    for (int kt = 0; kt < KT; kt++) {
        cp_async_wait<ST - 2>();
        __syncthreads();
        {
            const int nk = kt + ST - 1;
            if (nk < KT) load(nk % ST, nk);
            cp_async_commit();
        }
        const bf16_t *as = As + (kt % ST) * BM * LDS, *bs = Bs + (kt % ST) * BN * LDS;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            uint32_t af[MI][4], bfr[NI][2];
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
                ldsm_x4(af[mi][0], af[mi][1], af[mi][2], af[mi][3],
                        as + (wm * TM + mi * 16 + (lane & 15)) * LDS + kk + (lane >> 4) * 8);
#pragma unroll
            for (int nj = 0; nj < NI / 2; nj++)
                ldsm_x4(bfr[2 * nj][0], bfr[2 * nj][1], bfr[2 * nj + 1][0], bfr[2 * nj + 1][1],
                        bs + (wn * TN + nj * 16 + (lane & 7) + ((lane >> 4) << 3)) * LDS + kk + ((lane >> 3) & 1) * 8);
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int ni = 0; ni < NI; ni++) mma_16816(acc[mi][ni], af[mi], bfr[ni][0], bfr[ni][1]);
        }
    }
    cp_async_wait<0>();
    __syncthreads();
    /* epilogue through shared memory: fp32 tile, then coalesced bf16 rows */
    constexpr int LDC = BN + 4;
    float *Cs = (float *)smem_raw;
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int ni = 0; ni < NI; ni++) {
            const int row = wm * TM + mi * 16 + (lane >> 2), col = wn * TN + ni * 8 + (lane & 3) * 2;
            *(float2 *)&Cs[row * LDC + col] = make_float2(acc[mi][ni][0], acc[mi][ni][1]);
            *(float2 *)&Cs[(row + 8) * LDC + col] = make_float2(acc[mi][ni][2], acc[mi][ni][3]);
        }
    __syncthreads();
    if (GU) {
        constexpr int HN = BN / 2, Q = HN / 4; /* 4 act columns per thread */
        for (int idx = tid; idx < BM * Q; idx += NT) {
            const int i = idx / Q, c = (idx % Q) * 4;
            if (i >= rn) break;
            const float4 gt = *(const float4 *)&Cs[i * LDC + c], up = *(const float4 *)&Cs[i * LDC + HN + c];
            uint2 o;
            o.x = f2_to_bf2x2(silu_f(gt.x) * up.x, silu_f(gt.y) * up.y);
            o.y = f2_to_bf2x2(silu_f(gt.z) * up.z, silu_f(gt.w) * up.w);
            *(uint2 *)(p.C + (int64_t)(r0 + i) * p.ldc + nt * HN + c) = o;
        }
    } else {
        constexpr int Q = BN / 4;
        for (int idx = tid; idx < BM * Q; idx += NT) {
            const int i = idx / Q, c = (idx % Q) * 4;
            if (i >= rn) break;
            const float4 v = *(const float4 *)&Cs[i * LDC + c];
            uint2 o;
            o.x = f2_to_bf2x2(v.x, v.y), o.y = f2_to_bf2x2(v.z, v.w);
            *(uint2 *)(p.C + (int64_t)(r0 + i) * p.ldc + nt * BN + c) = o;
        }
    }
}

/* The three tile configurations. */
template <int BM, int BN, int BK, int WM, int WN, int ST>
struct tile_cfg {
    static constexpr int bm = BM, bn = BN, threads = WM * WN * 32, smem = gemm_smem<BM, BN, BK, WM, WN, ST>();
    static int init() {
        HS_CUDA_TRY(cudaFuncSetAttribute(k_grouped_gemm<BM, BN, BK, WM, WN, ST, true>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        HS_CUDA_TRY(cudaFuncSetAttribute(k_grouped_gemm<BM, BN, BK, WM, WN, ST, false>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        return HS_OK;
    }
    /* mt_bound: host bound on the M tiles; gu: gate_up (N = I act columns) or down (N = ldc). */
    static int launch(bool gu, const gemm_args &a, int N, int mt_bound, cudaStream_t st) {
        const int ntiles = gu ? N / (BN / 2) : N / BN;
        if (mt_bound <= 0) return HS_OK;
        if (mt_bound > 65535) return HS_ERR_UNSUPPORTED;
        const dim3 grid((unsigned)ntiles, (unsigned)mt_bound);
        if (gu) k_grouped_gemm<BM, BN, BK, WM, WN, ST, true><<<grid, threads, smem, st>>>(a);
        else k_grouped_gemm<BM, BN, BK, WM, WN, ST, false><<<grid, threads, smem, st>>>(a);
        HS_CUDA_LAUNCHED();
        return HS_OK;
    }
};
typedef tile_cfg<16, 64, 64, 1, 4, 4> cfg_small;
typedef tile_cfg<64, 128, 32, 2, 2, 4> cfg_medium;
typedef tile_cfg<128, 128, 32, 2, 4, 4> cfg_large;
typedef tile_cfg<128, 128, 64, 2, 4, 3> cfg_large_k64;
typedef tile_cfg<128, 256, 32, 2, 4, 3> cfg_wide;

static int cfg_bm(int path) { return path == MOE_PATH_SMALL ? 16 : path == MOE_PATH_MEDIUM ? 64 : 128; }

/* N: act columns (gu) or output columns; the wide tile needs N % (gu ? 128 : 256) == 0
 * and falls back to the large one otherwise (same rows per tile). */
static int gemm_launch(int path, bool gu, const gemm_args &a, int N, int mt_bound, cudaStream_t st) {
    switch (path) {
    case MOE_PATH_SMALL: return cfg_small::launch(gu, a, N, mt_bound, st);
    case MOE_PATH_MEDIUM: return cfg_medium::launch(gu, a, N, mt_bound, st);
    case MOE_PATH_LARGE_K64: return cfg_large_k64::launch(gu, a, N, mt_bound, st);
    case MOE_PATH_WIDE:
        if (N % (gu ? 128 : 256) == 0) return cfg_wide::launch(gu, a, N, mt_bound, st);
        return cfg_large::launch(gu, a, N, mt_bound, st);
    default: return cfg_large::launch(gu, a, N, mt_bound, st);
    }
}

/* Tile path for `rows_per_group` rows in each group on average. */
static int pick_path(double rows_per_group) {
    return rows_per_group <= 24 ? MOE_PATH_SMALL : rows_per_group <= 96 ? MOE_PATH_MEDIUM : MOE_PATH_LARGE;
}

/* ---- the old host-grouped path (baseline) ---------------------------------------------- */

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
__global__ void k_swiglu_rows(const bf16_t *gu, int64_t T, int I, bf16_t *out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= T * I) return;
    const int64_t t = i / I, j = i % I;
    out[i] = f2bf(silu_f(bf2f(gu[t * 2 * I + j])) * bf2f(gu[t * 2 * I + I + j]));
}
__global__ void k_moe_finish(const float *acc, const bf16_t *shared, const float *sgate, int64_t T, int H, bf16_t *out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= T * H) return;
    float v = acc[i];
    if (shared) v += (sgate ? sigmoid_f(sgate[i / H]) : 1.f) * bf2f(shared[i]);
    out[i] = f2bf(v);
}

/* ---- context ------------------------------------------------------------------------- */

typedef struct {
    const void *key;
    int E;
    const void **host; /* [2E+2]: gate_up[E], shared gate_up, down[E], shared down */
    void **dev;        /* device copy */
} moe_tab_t;

struct moe_ctx {
    cublasHandle_t blas;
    cudaStream_t st;
    moe_tab_t *tabs;
    int n_tabs;
    void *ws;
    size_t ws_bytes;
    int32_t *last_offs; /* the last routed call's group offsets */
    int last_E;
    /* host path */
    int32_t *h_ids, *h_idx;
    float *h_w, *h_idx_w;
    size_t cap_h;
};

extern "C" moe_ctx_t *moe_ctx_create(void *blas, void *stream) {
    if (cfg_small::init() != HS_OK || cfg_medium::init() != HS_OK || cfg_large::init() != HS_OK ||
        cfg_large_k64::init() != HS_OK || cfg_wide::init() != HS_OK)
        return NULL;
    moe_ctx_t *m = (moe_ctx_t *)xcalloc(1, sizeof *m);
    m->blas = (cublasHandle_t)blas;
    m->st = (cudaStream_t)stream;
    return m;
}

extern "C" void moe_ctx_destroy(moe_ctx_t *m) {
    if (!m) return;
    for (int i = 0; i < m->n_tabs; i++) {
        free(m->tabs[i].host);
        cudaFree(m->tabs[i].dev);
    }
    free(m->tabs);
    if (m->ws) cudaFree(m->ws);
    free(m->h_ids);
    free(m->h_idx);
    free(m->h_w);
    free(m->h_idx_w);
    free(m);
}

extern "C" int moe_supported(int E, int top_k, int I, int Is, int H) {
    return E >= 1 && E <= 1023 && top_k >= 1 && top_k <= 32 && top_k <= E && I > 0 && I % 64 == 0 &&
           Is % 64 == 0 && Is >= 0 && H > 0 && H % 128 == 0;
}

/* The layer's device pointer table [2E+2], uploaded on first use or when a pointer changed. */
static int layer_table(moe_ctx_t *m, const moe_layer_t *L, void ***dev) {
    const int E = L->E, n = 2 * E + 2;
    const void **cur = (const void **)xrealloc(NULL, sizeof(void *) * (size_t)n);
    memcpy(cur, L->gate_up, sizeof(void *) * (size_t)E);
    cur[E] = L->shared_gate_up;
    memcpy(cur + E + 1, L->down, sizeof(void *) * (size_t)E);
    cur[2 * E + 1] = L->shared_down;
    moe_tab_t *t = NULL;
    for (int i = 0; i < m->n_tabs; i++)
        if (m->tabs[i].key == L->key && m->tabs[i].E == E) t = &m->tabs[i];
    if (t && memcmp(t->host, cur, sizeof(void *) * (size_t)n) == 0) {
        free(cur);
        *dev = t->dev;
        return HS_OK;
    }
    if (!t) {
        m->tabs = (moe_tab_t *)xrealloc(m->tabs, sizeof(moe_tab_t) * (size_t)(m->n_tabs + 1));
        t = &m->tabs[m->n_tabs++];
        t->key = L->key;
        t->E = E;
        t->host = NULL;
        t->dev = NULL;
        HS_CUDA_TRY(cudaMalloc(&t->dev, sizeof(void *) * (size_t)n));
    }
    free(t->host);
    t->host = cur;
    HS_CUDA_TRY(cudaMemcpy(t->dev, cur, sizeof(void *) * (size_t)n, cudaMemcpyHostToDevice));
    *dev = t->dev;
    return HS_OK;
}

static size_t al256(size_t b) { return (b + 255) & ~(size_t)255; }

/* Carve sizes[i] bytes each (256-aligned) out of the caller's workspace ws (ws_bytes), or,
 * when ws is NULL, out of the context's own buffer, grown when needed. */
static int carve(moe_ctx_t *m, const size_t *sizes, int n, void **out, void *ws, size_t ws_bytes) {
    size_t tot = 0;
    for (int i = 0; i < n; i++) tot += al256(sizes[i]);
    if (ws) {
        if (ws_bytes < tot) return HS_ERR_INVALID;
    } else {
        if (m->ws_bytes < tot) {
            if (m->ws) HS_CUDA_TRY(cudaFree(m->ws));
            m->ws = NULL;
            const size_t nb = tot + tot / 4;
            HS_CUDA_TRY(cudaMalloc(&m->ws, nb));
            m->ws_bytes = nb;
        }
        ws = m->ws;
    }
    char *p = (char *)ws;
    for (int i = 0; i < n; i++) out[i] = p, p += al256(sizes[i]);
    return HS_OK;
}

/* Workspace pieces of the host path [HOST_NB] and of the device path [DEV_NB]. */
enum { HOST_NB = 11, DEV_NB = 13 };
static void host_sizes(const moe_layer_t *L, int T, size_t *sz) {
    const bool shared = L->shared_gate_up && L->shared_down && L->Is > 0;
    const size_t nk = (size_t)T * L->top_k, E = (size_t)L->E, H = (size_t)L->H;
    const size_t Im = (size_t)(shared && L->Is > L->I ? L->Is : L->I);
    const size_t v[HOST_NB] = {(size_t)T * E * 4, nk * 4, nk * 4, nk * 8, (size_t)T * H * 4, (size_t)T * H * 2,
                               (size_t)T * 2 * Im * 2, (size_t)T * Im * 2, (size_t)T * H * 2, (size_t)T * 4, E * 4};
    memcpy(sz, v, sizeof v);
}
static void dev_sizes(const moe_layer_t *L, int T, size_t *sz) {
    const bool shared = L->shared_gate_up && L->shared_down && L->Is > 0;
    const int Is = shared ? L->Is : 0, I = L->I;
    const bool fold = shared && Is == I;
    const size_t nk = (size_t)T * L->top_k, G = (size_t)L->E + (fold ? 1 : 0), rows = nk + (shared ? T : 0);
    const size_t Imax = (size_t)(Is > I ? Is : I), H = (size_t)L->H;
    const size_t v[DEV_NB] = {(G + 1) * 4, (G + 1) * 4, (G + 1) * 4, 16, 16, nk * 4, nk * 4, nk * 4, rows * 4,
                              (size_t)T * L->E * 4, (size_t)T * 4, rows * Imax * 2, rows * H * 2};
    memcpy(sz, v, sizeof v);
}

extern "C" size_t moe_workspace_bytes(const moe_layer_t *L, int T) {
    size_t a[HOST_NB], b[DEV_NB], ta = 0, tb = 0;
    host_sizes(L, T > 0 ? T : 1, a);
    dev_sizes(L, T > 0 ? T : 1, b);
    for (int i = 0; i < HOST_NB; i++) ta += al256(a[i]);
    for (int i = 0; i < DEV_NB; i++) tb += al256(b[i]);
    return ta > tb ? ta : tb;
}

static int router_logits(moe_ctx_t *m, const void *x, const void *W, int T, int N, int H, float *out) {
    const float one = 1.f, zero = 0.f;
    MOE_CKB(cublasGemmEx(m->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, T, H, &one, W, CUDA_R_16BF, H, x, CUDA_R_16BF, H,
                         &zero, out, CUDA_R_32F, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return HS_OK;
}
static int gemm_bf16(moe_ctx_t *m, const void *x, const void *W, int T, int N, int K, void *out) {
    const float one = 1.f, zero = 0.f;
    MOE_CKB(cublasGemmEx(m->blas, CUBLAS_OP_T, CUBLAS_OP_N, N, T, K, &one, W, CUDA_R_16BF, K, x, CUDA_R_16BF, K,
                         &zero, out, CUDA_R_16BF, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return HS_OK;
}

/* The previous implementation: routing on the host, a cuBLAS pair per active expert. */
static int moe_forward_host(moe_ctx_t *m, const moe_layer_t *L, const void *x, const float *logits_in, int T,
                            void *out, void *ws, size_t ws_bytes) {
    const int E = L->E, k = L->top_k, I = L->I, H = L->H, Is = L->Is;
    const bool shared = L->shared_gate_up && L->shared_down && Is > 0;
    const size_t nk = (size_t)T * k;
    void *b[HOST_NB];
    size_t sz[HOST_NB];
    host_sizes(L, T, sz);
    int rc = carve(m, sz, HOST_NB, b, ws, ws_bytes);
    if (rc != HS_OK) return rc;
    float *rl = (float *)b[0], *wts = (float *)b[2], *acc = (float *)b[4], *sg = (float *)b[9];
    int32_t *ids = (int32_t *)b[1], *d_idx = (int32_t *)b[3];
    float *d_w = (float *)(d_idx + nk);
    bf16_t *xe = (bf16_t *)b[5], *gu = (bf16_t *)b[6], *act = (bf16_t *)b[7], *y = (bf16_t *)b[8];
    if (!logits_in) {
        if ((rc = router_logits(m, x, L->router, T, E, H, rl)) != HS_OK) return rc;
        logits_in = rl;
    }
    int32_t *cnt = (int32_t *)b[10];
    HS_CUDA_TRY(cudaMemsetAsync(cnt, 0, (size_t)E * 4, m->st));
    k_topk<<<(unsigned)((T + 3) / 4), 128, 0, m->st>>>(logits_in, T, E, k, L->norm_topk, ids, wts, cnt);
    HS_CUDA_LAUNCHED();
    if (m->cap_h < nk) {
        m->cap_h = nk * 2;
        m->h_ids = (int32_t *)xrealloc(m->h_ids, m->cap_h * 4);
        m->h_w = (float *)xrealloc(m->h_w, m->cap_h * 4);
        m->h_idx = (int32_t *)xrealloc(m->h_idx, m->cap_h * 4);
        m->h_idx_w = (float *)xrealloc(m->h_idx_w, m->cap_h * 4);
    }
    HS_CUDA_TRY(cudaMemcpyAsync(m->h_ids, ids, nk * 4, cudaMemcpyDeviceToHost, m->st));
    HS_CUDA_TRY(cudaMemcpyAsync(m->h_w, wts, nk * 4, cudaMemcpyDeviceToHost, m->st));
    HS_CUDA_TRY(cudaStreamSynchronize(m->st));
    int *count = (int *)xcalloc((size_t)E + 1, sizeof(int));
    for (size_t i = 0; i < nk; i++) count[m->h_ids[i] + 1]++;
    for (int e = 0; e < E; e++) count[e + 1] += count[e];
    int *fill = (int *)xrealloc(NULL, sizeof(int) * (size_t)E);
    memcpy(fill, count, sizeof(int) * (size_t)E);
    for (size_t i = 0; i < nk; i++) {
        const int e = m->h_ids[i], at = fill[e]++;
        m->h_idx[at] = (int32_t)(i / (size_t)k);
        m->h_idx_w[at] = m->h_w[i];
    }
    HS_CUDA_TRY(cudaMemcpyAsync(d_idx, m->h_idx, nk * 4, cudaMemcpyHostToDevice, m->st));
    HS_CUDA_TRY(cudaMemcpyAsync(d_w, m->h_idx_w, nk * 4, cudaMemcpyHostToDevice, m->st));
    HS_CUDA_TRY(cudaMemsetAsync(acc, 0, (size_t)T * H * 4, m->st));
    for (int e = 0; e < E && rc == HS_OK; e++) {
        const int n = count[e + 1] - count[e];
        if (n == 0) continue;
        k_gather_idx<<<n, 256, 0, m->st>>>((const bf16_t *)x, d_idx + count[e], H, xe);
        if ((rc = gemm_bf16(m, xe, L->gate_up[e], n, 2 * I, H, gu)) != HS_OK) break;
        k_swiglu_rows<<<(unsigned)(((int64_t)n * I + 255) / 256), 256, 0, m->st>>>(gu, n, I, act);
        if ((rc = gemm_bf16(m, act, L->down[e], n, H, I, y)) != HS_OK) break;
        k_scatter_acc<<<n, 256, 0, m->st>>>(y, d_idx + count[e], d_w + count[e], H, acc);
    }
    free(count);
    free(fill);
    if (rc != HS_OK) return rc;
    HS_CUDA_LAUNCHED();
    const bf16_t *sy = NULL;
    const float *sgp = NULL;
    if (shared) {
        if ((rc = gemm_bf16(m, x, L->shared_gate_up, T, 2 * Is, H, gu)) != HS_OK) return rc;
        k_swiglu_rows<<<(unsigned)(((int64_t)T * Is + 255) / 256), 256, 0, m->st>>>(gu, T, Is, act);
        HS_CUDA_LAUNCHED();
        if ((rc = gemm_bf16(m, act, L->shared_down, T, H, Is, y)) != HS_OK) return rc;
        sy = y;
        if (L->shared_gate) {
            if ((rc = router_logits(m, x, L->shared_gate, T, 1, H, sg)) != HS_OK) return rc;
            sgp = sg;
        }
    }
    const int64_t N = (int64_t)T * H;
    k_moe_finish<<<(unsigned)((N + 255) / 256), 256, 0, m->st>>>(acc, sy, sgp, T, H, (bf16_t *)out);
    HS_CUDA_LAUNCHED();
    return HS_OK;
}

extern "C" int moe_forward(moe_ctx_t *m, const moe_layer_t *L, const void *x, const float *logits_in, int T,
                           void *out, int path, void *ws, size_t ws_bytes) {
    const int E = L->E, k = L->top_k, I = L->I, H = L->H;
    const bool shared = L->shared_gate_up && L->shared_down && L->Is > 0;
    const int Is = shared ? L->Is : 0;
    if (T <= 0) return HS_OK;
    if (!moe_supported(E, k, I, Is, H)) {
        if (path != MOE_PATH_AUTO && path != MOE_PATH_HOST) return HS_ERR_UNSUPPORTED;
        path = MOE_PATH_HOST;
    }
    if (path == MOE_PATH_HOST) return moe_forward_host(m, L, x, logits_in, T, out, ws, ws_bytes);
    void **tab;
    int rc = layer_table(m, L, &tab);
    if (rc != HS_OK) return rc;
    const int nk = T * k;
    const bool fold = shared && Is == I; /* the shared expert as group E */
    const int G = E + (fold ? 1 : 0);
    if (path == MOE_PATH_AUTO) path = pick_path((double)nk / E);
    const int path_s = pick_path((double)T);
    const int bm = cfg_bm(path), bm_s = cfg_bm(path_s);
    void *b[DEV_NB];
    size_t sz[DEV_NB];
    dev_sizes(L, T, sz);
    if ((rc = carve(m, sz, DEV_NB, b, ws, ws_bytes)) != HS_OK) return rc;
    int32_t *cnt = (int32_t *)b[0], *offs = (int32_t *)b[1], *toffs = (int32_t *)b[2];
    int32_t *offs_s = (int32_t *)b[3], *toffs_s = (int32_t *)b[4];
    int32_t *ids = (int32_t *)b[5], *slot = (int32_t *)b[7], *perm = (int32_t *)b[8];
    float *wts = (float *)b[6], *rl = (float *)b[9], *sg = (float *)b[10];
    bf16_t *act = (bf16_t *)b[11], *y = (bf16_t *)b[12];
    m->last_offs = offs;
    m->last_E = E;
    HS_CUDA_TRY(cudaMemsetAsync(cnt, 0, (size_t)E * 4, m->st));
    if (!logits_in) {
        if ((rc = router_logits(m, x, L->router, T, E, H, rl)) != HS_OK) return rc;
        logits_in = rl;
    }
    k_topk<<<(unsigned)((T + 3) / 4), 128, 0, m->st>>>(logits_in, T, E, k, L->norm_topk, ids, wts, cnt);
    HS_CUDA_LAUNCHED();
    /* cur reuses cnt (read before written, same thread) */
    k_scan<<<1, 1024, 0, m->st>>>(cnt, E, G, T, bm, bm_s, offs, toffs, cnt, offs_s, toffs_s);
    HS_CUDA_LAUNCHED();
    k_slots<<<(unsigned)((nk + T + 255) / 256), 256, 0, m->st>>>(ids, nk, k, T, fold, cnt, perm, slot);
    HS_CUDA_LAUNCHED();
    const bf16_t *const *Wgu = (const bf16_t *const *)tab, *const *Wdn = (const bf16_t *const *)(tab + E + 1);
    const int grows = nk + (fold ? T : 0);
    const int mt_bound = grows / bm + (nk < E ? nk : E) + (fold ? 1 : 0) + 1;
    gemm_args a;
    a = {(const bf16_t *)x, perm, Wgu, offs, toffs, G, H, H, I, act, I};
    if ((rc = gemm_launch(path, true, a, I, mt_bound, m->st)) != HS_OK) return rc;
    a = {act, NULL, Wdn, offs, toffs, G, I, I, H, y, H};
    if ((rc = gemm_launch(path, false, a, H, mt_bound, m->st)) != HS_OK) return rc;
    if (shared && !fold) {
        const int mts = (T + bm_s - 1) / bm_s;
        bf16_t *act_s = act + (size_t)nk * I;
        a = {(const bf16_t *)x, NULL, Wgu + E, offs_s, toffs_s, 1, H, H, Is, act_s, Is};
        if ((rc = gemm_launch(path_s, true, a, Is, mts, m->st)) != HS_OK) return rc;
        a = {act_s, NULL, Wdn + E, offs_s, toffs_s, 1, Is, Is, H, y + (size_t)nk * H, H};
        if ((rc = gemm_launch(path_s, false, a, H, mts, m->st)) != HS_OK) return rc;
    }
    const float *sgp = NULL;
    if (shared && L->shared_gate) {
        if ((rc = router_logits(m, x, L->shared_gate, T, 1, H, sg)) != HS_OK) return rc;
        sgp = sg;
    }
    k_combine<<<T, H / 8 < 256 ? H / 8 : 256, 0, m->st>>>(y, slot, wts, k, nk, H, shared, sgp, (bf16_t *)out);
    HS_CUDA_LAUNCHED();
    return HS_OK;
}

extern "C" int moe_last_counts(moe_ctx_t *m, int32_t *cnt, int E) {
    if (!m->last_offs || E != m->last_E) return HS_ERR_STATE;
    int32_t *o = (int32_t *)xrealloc(NULL, sizeof(int32_t) * ((size_t)E + 1));
    HS_CUDA_TRY(cudaStreamSynchronize(m->st));
    HS_CUDA_TRY(cudaMemcpy(o, m->last_offs, ((size_t)E + 1) * 4, cudaMemcpyDeviceToHost));
    for (int e = 0; e < E; e++) cnt[e] = o[e + 1] - o[e];
    free(o);
    return HS_OK;
}
