/*
 * attn_decode: paged attention for decode (one query token per sequence), GQA with
 * G = Hq / Hkv <= 8, head dim 256, bf16 KV in layout.h's block layout, split-KV for
 * long contexts, optional sigmoid output gate. Tensor cores (mma.sync m16n8k16) do
 * both products so that the SM's issue slots go to moving bytes.
 *
 * Grid: block (split j, KV head kh, sequence s), 4 warps; the G query heads of kh are
 * served together so every K/V byte is read once. The split covers tokens
 * [j*L, (j+1)*L) in tiles of TOK tokens.
 *  - loads: each tile's K and V rows (512 B per token each) go by cp.async into a
 *    ring of NS shared-memory stages (XOR-swizzled rows, attn_common.cuh), NS-1 tiles
 *    ahead of the one being computed; a lane of warp 0..3 resolves one token's row
 *    address through the block table and the warps share it by shuffle.
 *  - scores: S = Q K^T with the G query rows padded to the 16 rows of the A operand
 *    (Q fragments in registers for the whole block), K from shared memory by ldmatrix.
 *    Every warp computes all TOK scores (the product is cheap; it saves a barrier).
 *  - softmax: online, fp32, exp2 with the scale folded in; P rounded to bf16 for the
 *    second product and the row sum taken from the rounded values.
 *  - O += P V: warp w owns output dims [64w, 64w+64), V by ldmatrix.trans; the warps'
 *    m and l are identical, so no merge between warps is needed.
 *  - one split: the block writes out = O / l (times sigmoid(gate)); several splits: the
 *    fp32 partials (O, m, l) go to the workspace and attn_combine merges them; it is
 *    launched with programmatic dependent launch so that its launch overlaps the tail
 *    of the main kernel.
 * Memory traffic: every cached K and V byte of the sequence once (+ q, out, and the fp32
 * partials of the splits). Split count: the smallest that fills the resident block slots
 * in waves at least 85% full (up to DEC_SMALL_PAIRS (sequence, KV head) pairs with at least
 * DEC_SMALL_MIN_CTX tokens: 16-token tiles, 3 blocks a SM, splits sized for 2 a SM, leaving
 * a slot for the next launch).
 * Before pdl_wait a block issues its first tiles when they hold only tokens cached before
 * this step (not token len - 1, which the kernel before writes): under PDL they stream
 * while the kernels before finish (batch 1 at 8k: 17.0 -> 14.2 us with the tile shape
 * above; bench/RESULTS.md, session 8).
 * Invariants: D = 256; G <= 8; seq_lens >= 1; block_tables hold every cached token's block;
 * one new token per sequence (len - 1): no other K/V row of a sequence is written during the
 * step (the early tiles rely on it).
 */
#include "attn_common.cuh"
#include "cuda_ops.h"

#define AD 256
#define PSTRIDE (AD + 4) /* floats per split partial: O[256], m, l, 2 pad (16-byte rows) */

struct attn_dec_params {
    const bf16_t *q, *gate;
    const char *kv;
    size_t page_bytes, layer_off, v_off; /* v_off: bytes from K to V inside a block */
    const int32_t *bt, *seq_lens;
    int max_blocks, bs, Hq, Hkv, nsplit, split_len;
    float scale_log2; /* scale * log2(e) */
    float *ws;        /* [S][Hq][nsplit][PSTRIDE] */
    bf16_t *out;
};

/* Issue the cp.async of tile `tile` (tokens t0 .. t0+TOK-1, clamped to t_end-1) into stage buffer `sbuf`. */
template <int TOK>
__device__ __forceinline__ void dec_load_tile(const attn_dec_params &p, uint4 *sbuf, const int32_t *bt, int kh,
                                              int t0, int t_end, int lane, int w) {
    /* lane l resolves the row addresses of tokens t0 + l (+ 32 ...), the warps share them by shuffle */
    constexpr int NA = (TOK + 31) / 32;
    const size_t row_bytes = (size_t)p.Hkv * AD * 2;
    unsigned long long addr[NA];
#pragma unroll
    for (int a = 0; a < NA; a++) {
        addr[a] = 0;
        if (a * 32 + lane < TOK) {
            const int t = min(t0 + a * 32 + lane, t_end - 1);
            const int blk = __ldg(bt + t / p.bs);
            addr[a] = (unsigned long long)(p.kv + (size_t)blk * p.page_bytes + p.layer_off +
                                           (size_t)(t % p.bs) * row_bytes + (size_t)kh * AD * 2);
        }
    }
    uint4 *ks = sbuf, *vs = sbuf + TOK * 32;
#pragma unroll
    for (int i = 0; i < TOK / 4; i++) {
        const int r = w + 4 * i; /* r / 32 == 4i / 32 since w < 4 */
        const char *src = (const char *)__shfl_sync(0xffffffffu, addr[(4 * i) / 32], r & 31) + lane * 16;
        cp_async16(ks + attn_swz(r, lane, 32), src, true);
        cp_async16(vs + attn_swz(r, lane, 32), src + p.v_off, true);
    }
}

template <int G, int TOK, int NS>
__global__ void __launch_bounds__(128) attn_decode_kernel(const attn_dec_params p) {
    extern __shared__ uint4 smem[]; /* NS stages x (K [TOK][32 chunks], V [TOK][32 chunks]) */
    const int j = blockIdx.x, kh = blockIdx.y, s = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int g = lane >> 2, c = lane & 3;
    pdl_trigger(); /* the combine kernel may start launching; it waits for our completion */
    /* Launched as a programmatic dependent itself (launch_pdl, cuda_common.cuh): q and this
     * step's K/V row (token len - 1) come from the kernel before (k_qk_prep). The length
     * and the block table come from the step's staging copy, and the rows of the tokens
     * cached before this step are not written during it, so the first tiles' loads go
     * before pdl_wait when they hold only such tokens: under PDL they then stream while
     * the kernels before finish (the previous layer's or launch's tail). */
    const int len = p.seq_lens[s];
    const int t_begin = j * p.split_len;
    if (t_begin >= len) { /* a split past this (shorter) sequence's end */
        pdl_wait();
        return;
    }
    const int t_end = min(len, t_begin + p.split_len);
    const int ntile = (t_end - t_begin + TOK - 1) / TOK;
    const int32_t *bt = p.bt + (size_t)s * p.max_blocks;
    constexpr int STAGE = 2 * TOK * 32; /* uint4 per stage */
    auto prologue = [&]() {
#pragma unroll
        for (int i = 0; i < NS - 1; i++) {
            if (i < ntile) dec_load_tile<TOK>(p, smem + i * STAGE, bt, kh, t_begin + i * TOK, t_end, lane, w);
            cp_async_commit();
        }
    };
    const bool early = min(t_end, t_begin + (NS - 1) * TOK) <= len - 1; /* the first tiles exclude token len - 1 */
    if (early) prologue();
    pdl_wait();
    if (!early) prologue();
    /* Q fragments (A operand rows g < G; rows g+8 are padding): qa[kt] = Q[g][16kt + 2c, +1], [16kt + 8 + 2c, +1] */
    uint32_t qa[16][2];
    {
        const uint32_t *qr = reinterpret_cast<const uint32_t *>(p.q + ((size_t)s * p.Hq + kh * G + min(g, G - 1)) * AD);
#pragma unroll
        for (int kt = 0; kt < 16; kt++) {
            qa[kt][0] = g < G ? __ldg(qr + kt * 8 + c) : 0u;
            qa[kt][1] = g < G ? __ldg(qr + kt * 8 + 4 + c) : 0u;
        }
    }
    float o[8][4]; /* n-tile jn: O[g][64w + 8jn + 2c, +1] in [0], [1]; [2], [3] = padding rows */
#pragma unroll
    for (int jn = 0; jn < 8; jn++) o[jn][0] = o[jn][1] = o[jn][2] = o[jn][3] = 0.f;
    float m = -INFINITY, l = 0.f;

    for (int it = 0; it < ntile; it++) {
        cp_async_wait<NS - 2>();
        __syncthreads(); /* tile `it` visible to all; stage (it-1)%NS free for reuse */
        {
            const int nt = it + NS - 1;
            if (nt < ntile) dec_load_tile<TOK>(p, smem + (nt % NS) * STAGE, bt, kh, t_begin + nt * TOK, t_end, lane, w);
            cp_async_commit();
        }
        const uint4 *ks = smem + (it % NS) * STAGE, *vs = ks + TOK * 32;
        const int t0 = t_begin + it * TOK;
        /* S = Q K^T: n-tile nt = tokens 8nt..8nt+7; ldmatrix.x4 = 2 k-tiles of one n-tile */
        float sc[TOK / 8][4];
#pragma unroll
        for (int nt = 0; nt < TOK / 8; nt++) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
#pragma unroll
        for (int kp = 0; kp < 8; kp++) {
#pragma unroll
            for (int nt = 0; nt < TOK / 8; nt++) {
                unsigned b0, b1, b2, b3;
                ldsm_x4(b0, b1, b2, b3, ks + attn_swz(nt * 8 + (lane & 7), kp * 4 + (lane >> 3), 32));
                mma_16816(sc[nt], qa[2 * kp][0], 0u, qa[2 * kp][1], 0u, b0, b1);
                mma_16816(sc[nt], qa[2 * kp + 1][0], 0u, qa[2 * kp + 1][1], 0u, b2, b3);
            }
        }
        /* online softmax of row g over this tile (the 4 lanes of a quad hold its 32 tokens) */
        float tmax = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < TOK / 8; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const bool valid = t0 + nt * 8 + 2 * c + e < t_end;
                sc[nt][e] = valid ? sc[nt][e] * p.scale_log2 : -INFINITY;
                tmax = fmaxf(tmax, sc[nt][e]);
            }
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 2));
        const float mn = fmaxf(m, tmax); /* finite: every tile holds a valid token */
        const float corr = exp2f(m - mn);
        m = mn;
        uint32_t pa[TOK / 16][2]; /* P as A operand: k-tile kt2 = tokens 16kt2.., a0a1 and a4a5 */
        float ls = 0.f;
#pragma unroll
        for (int nt = 0; nt < TOK / 8; nt++) {
            const bf16_t p0 = f2bf(exp2f(sc[nt][0] - mn)), p1 = f2bf(exp2f(sc[nt][1] - mn));
            ls += bf2f(p0) + bf2f(p1);
            __nv_bfloat162 h;
            h.x = p0;
            h.y = p1;
            pa[nt >> 1][nt & 1] = *reinterpret_cast<uint32_t *>(&h);
        }
        l = l * corr + ls;
#pragma unroll
        for (int jn = 0; jn < 8; jn++) {
            o[jn][0] *= corr;
            o[jn][1] *= corr;
        }
        /* O += P V over this warp's 64 dims: ldmatrix.x4.trans = 2 n-tiles (16 dims) of one k-tile */
#pragma unroll
        for (int kt = 0; kt < TOK / 16; kt++) {
#pragma unroll
            for (int jp = 0; jp < 4; jp++) {
                unsigned b0, b1, b2, b3;
                const int r = kt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
                ldsm_x4_t(b0, b1, b2, b3, vs + attn_swz(r, w * 8 + jp * 2 + (lane >> 4), 32));
                mma_16816(o[2 * jp], pa[kt][0], 0u, pa[kt][1], 0u, b0, b1);
                mma_16816(o[2 * jp + 1], pa[kt][0], 0u, pa[kt][1], 0u, b2, b3);
            }
        }
    }
    cp_async_wait<0>();
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    if (g >= G) return;
    const int qh = kh * G + g;
    if (p.nsplit == 1) {
        const float inv = 1.f / l;
#pragma unroll
        for (int jn = 0; jn < 8; jn++) {
            const int d = w * 64 + jn * 8 + 2 * c;
            float o0 = o[jn][0] * inv, o1 = o[jn][1] * inv;
            const size_t off = ((size_t)s * p.Hq + qh) * AD + d;
            if (p.gate) {
                const float2 gv = bf2x2_to_f2(*reinterpret_cast<const uint32_t *>(p.gate + off));
                o0 *= sigmoid_f(gv.x);
                o1 *= sigmoid_f(gv.y);
            }
            *reinterpret_cast<uint32_t *>(p.out + off) = f2_to_bf2x2(o0, o1);
        }
    } else {
        float *part = p.ws + (((size_t)s * p.Hq + qh) * p.nsplit + j) * PSTRIDE;
#pragma unroll
        for (int jn = 0; jn < 8; jn++)
            *reinterpret_cast<float2 *>(part + w * 64 + jn * 8 + 2 * c) = make_float2(o[jn][0], o[jn][1]);
        if (w == 0 && c == 0) {
            part[AD] = m;
            part[AD + 1] = l;
        }
    }
}

/* Merge the splits of one (sequence, q head). Launched as a programmatic dependent of
 * attn_decode_kernel: waits for it before reading. A block owns DQ x 4 dims (all 256, or
 * a quarter where there are too few (sequence, q head) pairs to spread the partials'
 * loads over the SMs: batch 1-2 with 16 q heads). NG groups of DQ threads (NG = 8, or the
 * power of two covering the split count when it is smaller: no idle groups), thread
 * (group x, d4) owns dims [4 d4, 4 d4 + 4) of every NG-th split from x. Every load of a
 * thread (up to CMB_BATCH partials: 4 dims, m and l each; the sequence length; the gate)
 * is issued before the first use, so the merge costs one round trip to L2, not one for
 * the maxima, one for the weights and more for the partials; splits past the sequence's
 * end (stale workspace) are masked after the loads. Each group keeps a running (m, l, O)
 * as the splits do; the groups are merged in shared memory at the end. */
#define CMB_GROUPS 8
#define CMB_BATCH 8
#define CMB_MAX_SPLITS 1024
template <int NG, int DQ>
__global__ void __launch_bounds__(DQ * NG) attn_combine_kernel(const attn_dec_params p) {
    __shared__ float gm[NG], gl[NG];
    __shared__ __align__(16) float4 acc[NG][DQ];
    pdl_trigger(); /* the next kernel (the o projection) may start its weight prefetch */
    const int qh = blockIdx.x, s = blockIdx.y, tid = threadIdx.x, grp = tid / DQ;
    const int d4 = blockIdx.z * DQ + tid % DQ; /* this block's DQ x 4 dims: a slice of AD */
    const int len = p.seq_lens[s]; /* the step's staging copy, not a kernel's output */
    pdl_wait();
    const size_t off = ((size_t)s * p.Hq + qh) * AD + d4 * 4;
    const float *part = p.ws + ((size_t)s * p.Hq + qh) * p.nsplit * PSTRIDE;
    uint2 gu = make_uint2(0u, 0u);
    if (p.gate && tid < DQ) gu = *reinterpret_cast<const uint2 *>(p.gate + off);
    float mloc = -INFINITY, lloc = 0.f;
    float4 O = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int j0 = grp; j0 < p.nsplit; j0 += NG * CMB_BATCH) {
        float4 v[CMB_BATCH];
        float2 ml[CMB_BATCH]; /* (m, l) */
#pragma unroll
        for (int b = 0; b < CMB_BATCH; b++) {
            const int j = j0 + NG * b;
            const float *pj = part + (size_t)j * PSTRIDE;
            v[b] = j < p.nsplit ? *reinterpret_cast<const float4 *>(pj + d4 * 4) : make_float4(0.f, 0.f, 0.f, 0.f);
            ml[b] = j < p.nsplit ? *reinterpret_cast<const float2 *>(pj + AD) : make_float2(-INFINITY, 0.f);
        }
        const int ns = min(p.nsplit, (len + p.split_len - 1) / p.split_len);
        float mn = mloc;
#pragma unroll
        for (int b = 0; b < CMB_BATCH; b++) {
            if (j0 + NG * b >= ns) { /* past the sequence (or the splits): not a partial */
                ml[b] = make_float2(-INFINITY, 0.f);
                v[b] = make_float4(0.f, 0.f, 0.f, 0.f);
            }
            mn = fmaxf(mn, ml[b].x);
        }
        if (mn == -INFINITY) continue; /* nothing of this group's so far */
        const float cr = exp2f(mloc - mn);
        O.x *= cr, O.y *= cr, O.z *= cr, O.w *= cr;
        lloc *= cr;
#pragma unroll
        for (int b = 0; b < CMB_BATCH; b++) {
            const float f = exp2f(ml[b].x - mn);
            O.x += v[b].x * f, O.y += v[b].y * f, O.z += v[b].z * f, O.w += v[b].w * f;
            lloc += ml[b].y * f;
        }
        mloc = mn;
    }
    if (tid % DQ == 0) {
        gm[grp] = mloc;
        gl[grp] = lloc;
    }
    acc[grp][tid % DQ] = O;
    __syncthreads();
    if (tid >= DQ) return;
    float M = -INFINITY;
#pragma unroll
    for (int x = 0; x < NG; x++) M = fmaxf(M, gm[x]); /* finite: split 0 is in group 0 */
    float L = 0.f;
    O = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int x = 0; x < NG; x++) {
        const float f = exp2f(gm[x] - M);
        const float4 a = acc[x][tid];
        O.x += a.x * f, O.y += a.y * f, O.z += a.z * f, O.w += a.w * f;
        L += gl[x] * f;
    }
    const float inv = 1.f / L;
    float r[4] = {O.x * inv, O.y * inv, O.z * inv, O.w * inv};
    if (p.gate) {
        const float2 g0 = bf2x2_to_f2(gu.x), g1 = bf2x2_to_f2(gu.y);
        r[0] *= sigmoid_f(g0.x);
        r[1] *= sigmoid_f(g0.y);
        r[2] *= sigmoid_f(g1.x);
        r[3] *= sigmoid_f(g1.y);
    }
    *reinterpret_cast<uint2 *>(p.out + off) = make_uint2(f2_to_bf2x2(r[0], r[1]), f2_to_bf2x2(r[2], r[3]));
}

/* ---- variants, split heuristic, launch ------------------------------------------- */

/* Tile shapes (tokens per stage, stages): 0 = 32 x 3 (96 KiB, 2 blocks / SM), 1 = 16 x 4
 * (64 KiB, 3 / SM), 2 = 64 x 2 (128 KiB, 1 / SM). */
#define DEC_NVAR 3
#define DEC_AUTO DEC_NVAR /* attn_decode_config: pick by batch (attn_decode_launch) */
static const int dec_tok[DEC_NVAR] = {32, 16, 64}; /* stages: 3, 4, 2 */
static int dec_variant = DEC_AUTO, dec_pdl = 1;
#define DEC_MAX_SLOTS_PER_SM 4 /* the split heuristic assumes no more (bounds the workspace) */
#define DEC_SMALL_PAIRS 8      /* variant 3 (by batch): 16 x 4 tiles up to this many (sequence, KV head) pairs */
#define DEC_SMALL_MIN_CTX 1024 /* ... and from this context on */

extern "C" int attn_decode_config(int variant, int pdl) {
    const int old = dec_variant;
    if (variant >= 0 && variant <= DEC_AUTO) dec_variant = variant;
    if (pdl >= 0) dec_pdl = pdl != 0;
    return old;
}

template <int G, int TOK, int NS>
static cudaError_t dec_prepare(int *slots_per_sm) {
    static int cached = 0;
    if (!cached) {
        const int smem = NS * 2 * TOK * 512;
        cudaError_t e = cudaFuncSetAttribute(attn_decode_kernel<G, TOK, NS>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        if (e != cudaSuccess) return e;
        int nb = 0;
        e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, attn_decode_kernel<G, TOK, NS>, 128, smem);
        if (e != cudaSuccess) return e;
        cached = nb < 1 ? 1 : nb;
    }
    *slots_per_sm = cached;
    return cudaSuccess;
}

template <int G, int TOK, int NS>
static cudaError_t dec_launch(const attn_dec_params &p, dim3 grid, cudaStream_t st) {
    int unused;
    cudaError_t e = dec_prepare<G, TOK, NS>(&unused);
    if (e != cudaSuccess) return e;
    return launch_pdl(attn_decode_kernel<G, TOK, NS>, grid, dim3(128), (size_t)NS * 2 * TOK * 512, st, p);
}

/* Resident blocks per SM of variant var for group size G (<= DEC_MAX_SLOTS_PER_SM). */
static cudaError_t dec_slots(int var, int G, int *per_sm) {
    cudaError_t e = cudaErrorInvalidValue;
#define DEC_SLOTS_CASE(GG)                                                   \
    case GG:                                                                 \
        if (var == 0) e = dec_prepare<GG, 32, 3>(per_sm);                    \
        else if (var == 1) e = dec_prepare<GG, 16, 4>(per_sm);               \
        else e = dec_prepare<GG, 64, 2>(per_sm);                             \
        break;
    switch (G) {
        DEC_SLOTS_CASE(1)
        DEC_SLOTS_CASE(2)
        DEC_SLOTS_CASE(4)
        DEC_SLOTS_CASE(6)
        DEC_SLOTS_CASE(8)
    }
#undef DEC_SLOTS_CASE
    if (*per_sm > DEC_MAX_SLOTS_PER_SM) *per_sm = DEC_MAX_SLOTS_PER_SM;
    return e;
}

static int dec_num_sms(void) {
    static int n = 0;
    if (!n) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) !=
                                                       cudaSuccess || n < 1)
            n = 132;
    }
    return n;
}

/* Split count and length (a multiple of tok) for `units` (sequence, KV head) pairs over
 * `slots` resident blocks: the smallest count whose blocks fill at least one wave and
 * whose waves are at least 85% full on average, at most 2 * slots / units + 1. */
static void attn_split(int units, int max_seq_len, int split_override, int tok, int slots, int *nsplit,
                       int *split_len) {
    const int ntiles = (max_seq_len + tok - 1) / tok;
    int n = 1;
    if (split_override > 0) {
        n = split_override;
    } else {
        const int cmax = 2 * slots / units + 1;
        for (int cnd = 1; cnd <= ntiles && cnd <= cmax; cnd++) {
            const long long blocks = (long long)units * cnd, waves = (blocks + slots - 1) / slots;
            n = cnd;
            if (blocks >= slots && (double)blocks >= 0.85 * (double)(waves * slots)) break;
        }
    }
    if (n > ntiles) n = ntiles;
    if (n > CMB_MAX_SPLITS) n = CMB_MAX_SPLITS;
    if (n < 1) n = 1;
    const int tiles = (ntiles + n - 1) / n;
    *split_len = tiles * tok;
    *nsplit = (max_seq_len + *split_len - 1) / *split_len;
}

/* Largest split count the heuristic can choose for S sequences (any Hkv >= 1, any variant). */
static int attn_max_splits(int S, int max_seq_len) {
    const int ntiles = (max_seq_len + 15) / 16;
    const int cmax = 2 * DEC_MAX_SLOTS_PER_SM * dec_num_sms() / S + 1;
    const int n = ntiles < cmax ? ntiles : cmax;
    return n < CMB_MAX_SPLITS ? n : CMB_MAX_SPLITS;
}

extern "C" size_t attn_decode_workspace_bytes(int S, int Hq, int max_seq_len, int split_override) {
    if (S <= 0 || max_seq_len <= 0) return 256;
    const int heur = attn_max_splits(S, max_seq_len), n = split_override > heur ? split_override : heur;
    return (size_t)S * Hq * n * PSTRIDE * sizeof(float) + 256;
}

extern "C" int attn_decode_launch(const void *q, const void *kv_base, size_t page_bytes, const int32_t *block_tables,
                                  int max_blocks, const int32_t *seq_lens, int S, int max_seq_len, size_t layer_off,
                                  int block_size, int Hq, int Hkv, int D, float scale, const void *gate, void *ws,
                                  void *out, int split_override, void *stream) {
    if (S <= 0) return HS_OK;
    if (D != AD || Hkv <= 0 || Hq % Hkv || block_size <= 0 || max_seq_len <= 0) return HS_ERR_INVALID;
    const int G = Hq / Hkv;
    if (G != 1 && G != 2 && G != 4 && G != 6 && G != 8) return HS_ERR_UNSUPPORTED;
    attn_dec_params p;
    p.q = (const bf16_t *)q;
    p.gate = (const bf16_t *)gate;
    p.kv = (const char *)kv_base;
    p.page_bytes = page_bytes;
    p.layer_off = layer_off;
    p.v_off = (size_t)block_size * Hkv * AD * 2;
    p.bt = block_tables;
    p.seq_lens = seq_lens;
    p.max_blocks = max_blocks;
    p.bs = block_size;
    p.Hq = Hq;
    p.Hkv = Hkv;
    p.scale_log2 = scale * 1.4426950408889634f;
    p.ws = (float *)ws;
    p.out = (bf16_t *)out;
    /* By batch: up to DEC_SMALL_PAIRS (sequence, KV head) pairs with a context of at least
     * DEC_SMALL_MIN_CTX run 16 x 4 tiles (3 blocks a SM) with the splits sized for 2 a SM,
     * so that the next kernel's blocks find a free slot on every SM and load their first
     * tiles before their pdl_wait; else 32 x 3. Measured (bench/RESULTS.md, session 8):
     * batch 1 at 8k 15.3 -> 14.2 us, 2k 8.4 -> 6.6, batch 2 26.4 -> 26.2 / 10.5 -> 9.6; at
     * batch 4 32 x 3 wins (50.2 against 59.2 at 8k); end to end at batch 1 with 128-256
     * tokens 16 x 4 was 0.01-0.04 ms a step slower (4 runs on two machines). */
    const bool small = dec_variant == DEC_AUTO && S * Hkv <= DEC_SMALL_PAIRS && max_seq_len >= DEC_SMALL_MIN_CTX;
    const int var = small ? 1 : dec_variant == DEC_AUTO ? 0 : dec_variant;
    int per_sm = 1;
    HS_CUDA_TRY(dec_slots(var, G, &per_sm));
    if (small && per_sm > 2) per_sm = 2;
    const int tok = dec_tok[var];
    attn_split(S * Hkv, max_seq_len, split_override, tok, per_sm * dec_num_sms(), &p.nsplit, &p.split_len);
    if (p.nsplit > 1 && split_override <= 0 && p.nsplit > attn_max_splits(S, max_seq_len))
        return HS_ERR_INVALID; /* cannot happen: the workspace bound covers the heuristic */
    if (p.nsplit > 1 && !ws) return HS_ERR_INVALID;
    cudaStream_t st = (cudaStream_t)stream;
    const dim3 grid((unsigned)p.nsplit, (unsigned)Hkv, (unsigned)S);
    cudaError_t e = cudaSuccess;
#define DEC_LAUNCH_CASE(GG)                                                   \
    case GG:                                                                  \
        if (var == 0) e = dec_launch<GG, 32, 3>(p, grid, st);                 \
        else if (var == 1) e = dec_launch<GG, 16, 4>(p, grid, st);            \
        else e = dec_launch<GG, 64, 2>(p, grid, st);                          \
        break;
    switch (G) {
        DEC_LAUNCH_CASE(1)
        DEC_LAUNCH_CASE(2)
        DEC_LAUNCH_CASE(4)
        DEC_LAUNCH_CASE(6)
        DEC_LAUNCH_CASE(8)
    }
#undef DEC_LAUNCH_CASE
    HS_CUDA_TRY(e);
    if (p.nsplit > 1) {
        /* dims per block: all 256, or a quarter where (sequence, q head) blocks are too few
         * to spread the partials' loads over the SMs (batch 1-2: 16-32 blocks) */
        const int dq = S * Hq * 4 <= dec_num_sms() ? 16 : 64;
        const dim3 cgrid((unsigned)Hq, (unsigned)S, (unsigned)(AD / 4 / dq));
        const int ng = p.nsplit <= 2 ? 2 : p.nsplit <= 4 ? 4 : CMB_GROUPS; /* groups of dq threads */
        void (*k)(const attn_dec_params) = attn_combine_kernel<CMB_GROUPS, 64>;
        if (dq == 16) k = ng == 2 ? attn_combine_kernel<2, 16> : ng == 4 ? attn_combine_kernel<4, 16>
                                                                 : attn_combine_kernel<CMB_GROUPS, 16>;
        else if (ng < CMB_GROUPS) k = ng == 2 ? attn_combine_kernel<2, 64> : attn_combine_kernel<4, 64>;
        const int nt = dq * ng;
        if (dec_pdl) {
            HS_CUDA_TRY(launch_pdl(k, cgrid, dim3(nt), 0, st, p));
        } else {
            k<<<cgrid, nt, 0, st>>>(p);
            HS_CUDA_TRY(cudaGetLastError());
        }
    }
    return HS_OK;
}
