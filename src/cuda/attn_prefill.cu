/*
 * attn_prefill: paged flash attention for prefill / chunked-prefill rows (launcher in
 * attn_prefill.h). Varlen, causal, GQA, every key (the cached prefix and the new tokens)
 * read from the paged KV cache, fp32 online softmax, output times sigmoid(gate).
 *
 * Grid: block (work item, KV head kh); a work item is one query tile of a sequence:
 * BM rows = M = BM / G tokens x the G query heads of kh (row r = token r / G, head r % G),
 * so the G heads that share a KV head share every K/V tile the block loads. Warp 0
 * finds its (sequence, tile) by a prefix scan over cu_seqlens; tiles are taken last
 * first within a sequence (the longest key ranges start first).
 * Per block (BM / 16 warps, each 16 rows; BM = 64 by default, 128 as an option):
 *  - Q tile [BM][DP] in shared memory (cp.async), read as A fragments by ldmatrix;
 *  - key tiles of BN keys (32 at DP 256, 64 at DP 128): K and V by cp.async into two
 *    stages (the next tile loads while this one computes), rows XOR-swizzled;
 *  - S = Q K^T (mma.sync m16n8k16, fp32), causal mask only on the tiles that cross a
 *    row's limit (key <= n_past + i), online softmax with exp2 (scale folded in), P as
 *    bf16 A fragments straight from the S accumulators, O += P V (V by ldmatrix.trans);
 *  - out = O / l * sigmoid(gate) for the tile's valid rows.
 * D < DP is zero-padded in shared memory (the products ignore the padding).
 * Invariants: D % 8 == 0, D <= 256; every sequence has >= 1 new token; block tables
 * cover keys 0 .. n_past + len - 1.
 */
#include "attn_common.cuh"
#include "attn_prefill.h"

struct attn_pf_params {
    const bf16_t *q, *gate;
    const char *kv;
    size_t page_bytes, layer_off, v_off; /* v_off: bytes from K to V inside a block */
    const int32_t *bt, *tok_start, *n_past;
    int max_blocks, bs, Hq, Hkv, G, M, D, s0, S;
    float scale_log2;
    bf16_t *out;
};

/* DP: padded head dim; BM: query rows per block (BM / 16 warps, one m16 tile each). */
template <int DP, int BM>
struct pf_cfg {
    static constexpr int NTH = BM * 2;               /* threads */
    static constexpr int CH = DP / 8;                /* 16-byte chunks per row */
    static constexpr int BN = DP == 256 ? 32 : 64;   /* keys per tile */
    static constexpr int Q_CH = BM * CH;             /* chunks of the Q tile */
    static constexpr int KV_CH = BN * CH;            /* chunks of one K (or V) tile */
    static constexpr int SMEM = (Q_CH + 4 * KV_CH) * 16;
};

/* cp.async of the K and V rows of keys kbase .. kbase+BN-1 (clamped to kmax) into ks / vs. */
template <int DP, int BM>
__device__ __forceinline__ void pf_load_kv(const attn_pf_params &p, uint4 *ks, uint4 *vs, const int32_t *bt,
                                           int kh, int kbase, int kmax, int tid) {
    using C = pf_cfg<DP, BM>;
    constexpr int NA = C::BN / 32;
    const int lane = tid & 31;
    const size_t row_bytes = (size_t)p.Hkv * p.D * 2;
    unsigned long long addr[NA];
#pragma unroll
    for (int a = 0; a < NA; a++) {
        const int key = min(kbase + a * 32 + lane, kmax);
        const int blk = __ldg(bt + key / p.bs);
        addr[a] = (unsigned long long)(p.kv + (size_t)blk * p.page_bytes + p.layer_off +
                                       (size_t)(key % p.bs) * row_bytes + (size_t)kh * p.D * 2);
    }
#pragma unroll
    for (int k = 0; k < C::KV_CH / C::NTH; k++) {
        const int idx = tid + C::NTH * k, r = idx / C::CH, c = idx % C::CH;
        /* r / 32 is a compile-time constant: tid / CH < NTH / CH, which divides 32 */
        const char *src =
            (const char *)__shfl_sync(0xffffffffu, addr[(C::NTH * k / C::CH) / 32], r & 31) + c * 16;
        const bool ok = c * 8 < p.D;
        cp_async16(ks + attn_swz(r, c, C::CH), src, ok);
        cp_async16(vs + attn_swz(r, c, C::CH), src + p.v_off, ok);
    }
}

template <int DP, int BM>
__global__ void __launch_bounds__(BM * 2, 128 / BM) attn_prefill_kernel(const attn_pf_params p) {
    using C = pf_cfg<DP, BM>;
    constexpr int BN = C::BN, CH = C::CH, NT = BN / 8, NO = DP / 8;
    extern __shared__ uint4 smem[];
    uint4 *qs = smem, *kbuf = smem + C::Q_CH, *vbuf = kbuf + 2 * C::KV_CH;
    __shared__ int sh_s, sh_tile;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, c4 = lane & 3;
    const int kh = blockIdx.y;

    /* work item -> (sequence, query tile) */
    if (w == 0) {
        const int bid = blockIdx.x;
        int base = 0;
        for (int s0 = p.s0; s0 < p.S; s0 += 32) {
            const int s = s0 + lane;
            int cnt = 0;
            if (s < p.S) cnt = (p.tok_start[s + 1] - p.tok_start[s] + p.M - 1) / p.M;
            int inc = cnt;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const int v = __shfl_up_sync(0xffffffffu, inc, o);
                if (lane >= o) inc += v;
            }
            const int total = __shfl_sync(0xffffffffu, inc, 31);
            if (bid < base + total) {
                const unsigned hit = __ballot_sync(0xffffffffu, base + inc > bid);
                if (lane == __ffs(hit) - 1) {
                    sh_s = s;
                    sh_tile = cnt - 1 - (bid - (base + inc - cnt)); /* last tile first */
                }
                break;
            }
            base += total;
        }
    }
    __syncthreads();
    const int s = sh_s, qt = sh_tile;
    const int t_first = p.tok_start[s], len = p.tok_start[s + 1] - t_first, np = p.n_past[s];
    const int i_lo = qt * p.M, i_hi = min(i_lo + p.M, len) - 1; /* the tile's tokens (in the segment) */
    const int kmax = np + i_hi, kmin_lim = np + i_lo;
    const int n_kt = kmax / BN + 1;
    const int32_t *bt = p.bt + (size_t)s * p.max_blocks;

    /* Q tile: row r = (token i_lo + r / G, head r % G); rows past the tile are clamped copies */
    for (int idx = tid; idx < C::Q_CH; idx += C::NTH) {
        const int r = idx / CH, c = idx % CH;
        const int i = min(i_lo + min(r / p.G, p.M - 1), i_hi), h = r % p.G;
        const bf16_t *src = p.q + ((size_t)(t_first + i) * p.Hq + kh * p.G + h) * p.D + c * 8;
        cp_async16(qs + attn_swz(r, c, CH), c * 8 < p.D ? (const void *)src : (const void *)p.q, c * 8 < p.D);
    }
    pf_load_kv<DP, BM>(p, kbuf, vbuf, bt, kh, 0, kmax, tid);
    cp_async_commit();

    /* this thread's rows: 16w + g and 16w + g + 8 -> key limits */
    int lim[2];
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        const int r = 16 * w + g + 8 * hr;
        lim[hr] = np + min(i_lo + min(r / p.G, p.M - 1), i_hi);
    }
    float o[NO][4];
#pragma unroll
    for (int n = 0; n < NO; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

    for (int it = 0; it < n_kt; it++) {
        if (it + 1 < n_kt) {
            const int nb = (it + 1) & 1;
            pf_load_kv<DP, BM>(p, kbuf + nb * C::KV_CH, vbuf + nb * C::KV_CH, bt, kh, (it + 1) * BN, kmax, tid);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const uint4 *ks = kbuf + (it & 1) * C::KV_CH, *vs = vbuf + (it & 1) * C::KV_CH;
        const int kbase = it * BN;
        float sc[NT][4];
#pragma unroll
        for (int n = 0; n < NT; n++) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.f;
#pragma unroll
        for (int kt = 0; kt < DP / 16; kt++) {
            unsigned a0, a1, a2, a3;
            ldsm_x4(a0, a1, a2, a3, qs + attn_swz(16 * w + (lane & 15), 2 * kt + (lane >> 4), CH));
#pragma unroll
            for (int np2 = 0; np2 < NT / 2; np2++) {
                unsigned b0, b1, b2, b3;
                ldsm_x4(b0, b1, b2, b3,
                        ks + attn_swz(16 * np2 + (lane & 7) + ((lane >> 4) << 3), 2 * kt + ((lane >> 3) & 1), CH));
                mma_16816(sc[2 * np2], a0, a1, a2, a3, b0, b1);
                mma_16816(sc[2 * np2 + 1], a0, a1, a2, a3, b2, b3);
            }
        }
        const bool need_mask = kbase + BN - 1 > kmin_lim;
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            float tmax = -INFINITY;
#pragma unroll
            for (int n = 0; n < NT; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    float x = sc[n][2 * hr + e] * p.scale_log2;
                    if (need_mask && kbase + 8 * n + 2 * c4 + e > lim[hr]) x = -INFINITY;
                    sc[n][2 * hr + e] = x;
                    tmax = fmaxf(tmax, x);
                }
            tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
            tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
            const float mn = fmaxf(m[hr], tmax); /* finite: key 0 is in every row's range, tile 0 first */
            const float corr = exp2f(m[hr] - mn);
            m[hr] = mn;
            float ls = 0.f;
#pragma unroll
            for (int n = 0; n < NT; n++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const float pv = bf2f(f2bf(exp2f(sc[n][2 * hr + e] - mn)));
                    sc[n][2 * hr + e] = pv;
                    ls += pv;
                }
            l[hr] = l[hr] * corr + ls;
#pragma unroll
            for (int n = 0; n < NO; n++) {
                o[n][2 * hr] *= corr;
                o[n][2 * hr + 1] *= corr;
            }
        }
        /* O += P V */
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            const unsigned a0 = attn_pack_bf2(sc[2 * kk][0], sc[2 * kk][1]);
            const unsigned a1 = attn_pack_bf2(sc[2 * kk][2], sc[2 * kk][3]);
            const unsigned a2 = attn_pack_bf2(sc[2 * kk + 1][0], sc[2 * kk + 1][1]);
            const unsigned a3 = attn_pack_bf2(sc[2 * kk + 1][2], sc[2 * kk + 1][3]);
#pragma unroll
            for (int np2 = 0; np2 < NO / 2; np2++) {
                unsigned b0, b1, b2, b3;
                ldsm_x4_t(b0, b1, b2, b3,
                          vs + attn_swz(16 * kk + (lane & 7) + ((lane >> 3) & 1) * 8, 2 * np2 + (lane >> 4), CH));
                mma_16816(o[2 * np2], a0, a1, a2, a3, b0, b1);
                mma_16816(o[2 * np2 + 1], a0, a1, a2, a3, b2, b3);
            }
        }
        __syncthreads(); /* this stage is overwritten by the load issued next iteration */
    }

    /* out = O / l * sigmoid(gate) for the valid rows */
#pragma unroll
    for (int hr = 0; hr < 2; hr++) {
        float lt = l[hr];
        lt += __shfl_xor_sync(0xffffffffu, lt, 1);
        lt += __shfl_xor_sync(0xffffffffu, lt, 2);
        const float inv = 1.f / lt;
        const int r = 16 * w + g + 8 * hr, tl = r / p.G, h = r % p.G, i = i_lo + tl;
        if (tl >= p.M || i > i_hi) continue;
        const size_t row = ((size_t)(t_first + i) * p.Hq + kh * p.G + h) * p.D;
#pragma unroll
        for (int n = 0; n < NO; n++) {
            const int d = 8 * n + 2 * c4;
            if (d >= p.D) continue;
            float v0 = o[n][2 * hr] * inv, v1 = o[n][2 * hr + 1] * inv;
            if (p.gate) {
                const float2 gv = bf2x2_to_f2(*reinterpret_cast<const uint32_t *>(p.gate + row + d));
                v0 *= sigmoid_f(gv.x);
                v1 *= sigmoid_f(gv.y);
            }
            *reinterpret_cast<uint32_t *>(p.out + row + d) = f2_to_bf2x2(v0, v1);
        }
    }
}

/* Block shape: 0 (default) and 1 = 64 query rows (4 warps, two blocks per SM: the shape
 * measured in bench/RESULTS.md), 2 = 128 rows (8 warps, one block per SM: each K/V tile
 * read from L2 serves twice the rows; not yet measured). */
static int pf_variant = 0;
extern "C" int attn_prefill_config(int variant) {
    const int old = pf_variant;
    if (variant >= 0 && variant <= 2) pf_variant = variant;
    return old;
}

template <int DP, int BM>
static cudaError_t pf_launch(const attn_pf_params &p, dim3 grid, cudaStream_t st) {
    using C = pf_cfg<DP, BM>;
    static bool ready = false;
    if (!ready) {
        cudaError_t e = cudaFuncSetAttribute(attn_prefill_kernel<DP, BM>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             C::SMEM);
        if (e != cudaSuccess) return e;
        ready = true;
    }
    attn_prefill_kernel<DP, BM><<<grid, C::NTH, C::SMEM, st>>>(p);
    return cudaGetLastError();
}

extern "C" int attn_prefill_launch(const void *q, const void *gate, const void *kv_base, size_t page_bytes,
                                   const int32_t *block_tables, int max_blocks, const int32_t *tok_start,
                                   const int32_t *n_past, const int32_t *tok_start_host, int s0, int S,
                                   size_t layer_off, int block_size, int Hq, int Hkv, int D, float scale, void *out,
                                   void *stream) {
    if (s0 >= S) return HS_OK;
    if (s0 < 0 || D <= 0 || D % 8 || Hkv <= 0 || Hq % Hkv || block_size <= 0 || !tok_start_host)
        return HS_ERR_INVALID;
    if (D > 256 || Hq / Hkv > 64) return HS_ERR_UNSUPPORTED;
    const int BM = pf_variant == 2 ? 128 : 64;
    attn_pf_params p;
    p.q = (const bf16_t *)q;
    p.gate = (const bf16_t *)gate;
    p.kv = (const char *)kv_base;
    p.page_bytes = page_bytes;
    p.layer_off = layer_off;
    p.v_off = (size_t)block_size * Hkv * D * 2;
    p.bt = block_tables;
    p.tok_start = tok_start;
    p.n_past = n_past;
    p.max_blocks = max_blocks;
    p.bs = block_size;
    p.Hq = Hq;
    p.Hkv = Hkv;
    p.G = Hq / Hkv;
    p.M = BM / p.G;
    p.D = D;
    p.s0 = s0;
    p.S = S;
    p.scale_log2 = scale * 1.4426950408889634f;
    p.out = (bf16_t *)out;
    long long items = 0;
    for (int s = s0; s < S; s++) {
        const int len = tok_start_host[s + 1] - tok_start_host[s];
        if (len < 1) return HS_ERR_INVALID;
        items += (len + p.M - 1) / p.M;
    }
    if (items > 0x7fffffff) return HS_ERR_UNSUPPORTED;
    const dim3 grid((unsigned)items, (unsigned)Hkv);
    cudaStream_t st = (cudaStream_t)stream;
    cudaError_t e;
    if (BM == 128) e = D > 128 ? pf_launch<256, 128>(p, grid, st) : pf_launch<128, 128>(p, grid, st);
    else e = D > 128 ? pf_launch<256, 64>(p, grid, st) : pf_launch<128, 64>(p, grid, st);
    HS_CUDA_TRY(e);
    return HS_OK;
}
