/*
 * gdn_decode: fused Gated DeltaNet decode step (model-spec §2.9), recurrent form,
 * paged SSM state updated in place. Also serves short segments (<= 64 tokens per
 * sequence: MTP verify, tiny prefills); the state stays on chip across the tokens.
 * Two more kernels for exactly one token per sequence follow the segment kernel below
 * (gdn_dec1_cluster, gdn_dec1_persist; block shapes 8..19 of gdn_decode_launch).
 *
 * Grid mapping: one thread block cluster per (sequence n, key head g): grid
 * (r * nsplit, Hk, S), cluster (r * nsplit, 1, 1), r = Hv / Hk. Block `rank` of the
 * cluster serves v-head h = g*r + rank / nsplit and the V-slice of BV = dv / nsplit rows
 * starting at (rank % nsplit) * BV (BV = 128: the whole head, the fastest shape from 8
 * requests on). Warp w owns rows [w*RPW, (w+1)*RPW) of the slice, lane l the k-columns
 * [4l, 4l+4). The slice is first copied whole into shared memory with cp.async (no
 * registers held while the bytes are in flight, so 3-4 blocks per SM keep ~200 KB of
 * state reads outstanding); then per row both reductions (S k and S q) come from the
 * old row in one pass, finished by warp shuffles:
 *   a = S k, b = S q (old S);  m = e^g a;  d = beta (v - m);  o = e^g b + d (k.q);
 *   S <- e^g S + d k^T        (V-major rows: S^T[v][:] += d[v] k)
 * and the updated row goes straight back to its global location (last token) or to
 * shared memory (more tokens follow). Per block also: the causal conv (4 taps) + SiLU
 * of its 256 q/k channels and BV v channels with the conv state as left context, L2
 * norm of q and k (warp shuffles), the gates, and the gated RMSNorm whose sum of squares
 * over dv is pushed to the nsplit blocks of the head through distributed shared memory.
 *
 * Memory traffic per (request, v-head, token): the state once read and once written in
 * its storage dtype (64+64 KiB fp32, 32+32 KiB bf16), plus conv state 3 rows, inputs and
 * output (< 2 KiB). Every load of a block is issued before the first use.
 *
 * Invariants: dk = dv = 128, Kc = 4, conv_width (state rows) = 3; r * nsplit <= 8;
 * dv % slice_rows == 0 and slice_rows % RPW == 0. The q/k conv channels are shared by
 * the r * nsplit blocks of a cluster: every block arrives on the cluster barrier once it
 * has read the old conv state, and only rank 0 writes the new one after waiting on it.
 */
#include <cooperative_groups.h>
#include <stdlib.h>

#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace cg = cooperative_groups;

#define GDN_DK 128
#define GDN_KC 4
/* 1: cfg 0 picks the one-token kernels where they measured faster (bench/RESULTS.md, "GDN
 * decode"); HS_GDN_DEC1=0 in the environment turns that off at run time (the segment kernel
 * then serves every batch, as before session 3); cfg 8..19 force them regardless. */
#ifndef GDN_DEC1_AUTO
#define GDN_DEC1_AUTO 1
#endif
static bool gdn_dec1_auto(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("HS_GDN_DEC1");
        on = GDN_DEC1_AUTO && !(e && e[0] == '0');
    }
    return on;
}

struct gdn_dec_params {
    const bf16_t *qkv, *z, *b, *a, *conv_w;
    const float *A_log, *dt_bias, *norm_w;
    const int32_t *tok_start, *n_past;
    bf16_t *out;
    int Hk, Hv, r, nsplit, conv_dim, max_t;
    int ldx, ldz, ldg; /* row strides (elements) of qkv, z and b / a */
    float eps;
    char *pool;
    size_t page_bytes;
    const int32_t *state_pages;
    int E;
    const sm_loc_t *ssm_loc;
    int slice_rows, n_slices;
    int conv_page, conv_off;
    int n_groups; /* S * Hk (one-token kernels) */
};

template <typename ST> struct st_io;
template <> struct st_io<float> {
    static __device__ __forceinline__ float4 load(const float *p) { return *reinterpret_cast<const float4 *>(p); }
    static __device__ __forceinline__ void store(float *p, float4 v) { *reinterpret_cast<float4 *>(p) = v; }
};
template <> struct st_io<bf16_t> {
    static __device__ __forceinline__ float4 load(const bf16_t *p) {
        uint2 u = *reinterpret_cast<const uint2 *>(p);
        float2 lo = bf2x2_to_f2(u.x), hi = bf2x2_to_f2(u.y);
        return make_float4(lo.x, lo.y, hi.x, hi.y);
    }
    static __device__ __forceinline__ void store(bf16_t *p, float4 v) {
        uint2 u;
        u.x = f2_to_bf2x2(v.x, v.y);
        u.y = f2_to_bf2x2(v.z, v.w);
        *reinterpret_cast<uint2 *>(p) = u;
    }
};

/* Programmatic dependent launch (pdl_trigger / pdl_wait, the rules in cuda_common.cuh): a
 * kernel here may start while the previous kernel of the stream is still running; it reads
 * nothing an earlier kernel of the step wrote (qkv, z, b, a) and writes nothing before
 * pdl_wait(). What it reads before the wait: weights, the step's address tables (page
 * table, granule map, tok_start, n_past: uploaded before the step's first kernel) and the
 * SSM state itself (written only by this layer's kernel in an earlier step, or by page
 * copies between steps). Both are no-ops in a kernel launched plainly. */

/* GDN_DEC_TIMING (benchmark builds only): thread 0 of each block of gdn_dec1_cluster notes
 * %globaltimer (ns) and clock64 at its phase boundaries in registers (GDN_TM) and stores them
 * at its end (GDN_TM_FLUSH: no global store among the phases); gdn_decode_timing() reads them. */
#ifdef GDN_DEC_TIMING
#define GDN_TM_BLOCKS 1024
__device__ unsigned long long g_gdn_tm[GDN_TM_BLOCKS][2][8];
#define GDN_TM_DECL unsigned long long tm_t_[8], tm_c_[8]
#define GDN_TM(i)                                                                                    \
    do {                                                                                             \
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(tm_t_[i]));                                 \
        tm_c_[i] = (unsigned long long)clock64();                                                    \
    } while (0)
#define GDN_TM_FLUSH()                                                                               \
    do {                                                                                             \
        const unsigned blk_ = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);        \
        if (threadIdx.x == 0 && blk_ < GDN_TM_BLOCKS)                                                \
            for (int i_ = 0; i_ < 8; i_++) {                                                         \
                g_gdn_tm[blk_][0][i_] = tm_t_[i_];                                                   \
                g_gdn_tm[blk_][1][i_] = tm_c_[i_];                                                   \
            }                                                                                        \
    } while (0)
static cudaError_t gdn_tm_clear(void) {
    void *d;
    cudaError_t e = cudaGetSymbolAddress(&d, g_gdn_tm);
    return e != cudaSuccess ? e : cudaMemset(d, 0, sizeof g_gdn_tm);
}
extern "C" int gdn_decode_timing(unsigned long long *h, int clear) {
    if (clear) return gdn_tm_clear() == cudaSuccess ? 0 : -1;
    return cudaMemcpyFromSymbol(h, g_gdn_tm, sizeof g_gdn_tm) == cudaSuccess ? GDN_TM_BLOCKS : -1;
}
#else
#define GDN_TM_DECL
#define GDN_TM(i) ((void)0)
#define GDN_TM_FLUSH() ((void)0)
#endif

__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory"); }

/* Global channel of block-local conv channel c: [q of key head g | k of g | v rows of the slice]. */
__device__ __forceinline__ int chan_of(int c, int g, int h, int v0, int kd) {
    return c < GDN_DK ? g * GDN_DK + c
         : c < 2 * GDN_DK ? kd + g * GDN_DK + (c - GDN_DK)
                          : 2 * kd + h * GDN_DK + v0 + (c - 2 * GDN_DK);
}

template <int BV, int NT, typename ST>
__global__ void __launch_bounds__(NT, 1536 / NT) gdn_decode_kernel(const gdn_dec_params p) {
    constexpr int NW = NT / 32, RPW = BV / NW, NC = 2 * GDN_DK + BV;
    static_assert(RPW % 4 == 0, "rows are processed in groups of 4");
    __shared__ float qs[GDN_DK], ks[GDN_DK], vs[BV];
    __shared__ uint2 c_w[NC];         /* conv taps, 4 bf16 per channel */
    __shared__ bf16_t c_win[3][NC];   /* conv window: the 3 previous pre-conv inputs */
    __shared__ bf16_t c_x[NC];        /* token 0's pre-conv input */
    __shared__ float ssq_all[8][GDN_RECURRENT_MAX_T]; /* per V-slice partial sum of o^2, per token */
    extern __shared__ __align__(16) unsigned char dsm[];
    ST *s_st = reinterpret_cast<ST *>(dsm);                                     /* [BV][128] state slice */
    float *o_s = reinterpret_cast<float *>(dsm + (size_t)BV * GDN_DK * sizeof(ST)); /* [max_t][BV] */

    pdl_trigger();
    cg::cluster_group cluster = cg::this_cluster();
    const int rank = (int)cluster.block_rank();
    const int hl = rank / p.nsplit, slice = rank % p.nsplit;
    const int g = blockIdx.y, n = blockIdx.z;
    const int h = g * p.r + hl, v0 = slice * BV;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int t0 = p.tok_start[n], nt = p.tok_start[n + 1] - t0;
    const bool has = p.n_past[n] > 0;
    const int32_t *pages = p.state_pages + (size_t)n * p.E;
    const int kd = p.Hk * GDN_DK;

    /* 1. issue every independent load before the first use. First this thread's conv
     * channels (taps, window, token-0 input) and the gate inputs, into registers; then the
     * state slice (async copy into shared memory, no registers held while in flight).
     * In the other order the small loads queue behind the slice's 32-64 KiB, and the conv,
     * norms and gates, which every row needs, wait for the whole slice to land (ncu: the
     * block's top stall); in this order they are computed while it is in flight
     * (bench/RESULTS.md, GDN decode, session 7: fp32 2.53 -> 2.59-2.67 TB/s at batch
     * 114-512, bf16 segment shapes +8-10%, batch 8-16 2-7% faster). The state copy comes
     * after pdl_wait, so a PDL launch (HS_GDN_PDL=1) no longer overlaps it with the
     * previous kernel; by default this kernel is launched plainly. */
    constexpr int NCT = (NC + NT - 1) / NT; /* conv channels per thread */
    uint2 r_w[NCT];
    bf16_t r_win[NCT][3], r_x[NCT];
    const bf16_t zero = __float2bfloat16_rn(0.f);
    pdl_wait(); /* inputs (and the conv state, read with them) from here on */
    bf16_t *conv = reinterpret_cast<bf16_t *>(p.pool + (size_t)pages[p.conv_page] * p.page_bytes + p.conv_off);
#pragma unroll
    for (int j = 0; j < NCT; j++) {
        const int c = tid + j * NT;
        if (c < NC) {
            const int ch = chan_of(c, g, h, v0, kd);
            r_w[j] = *reinterpret_cast<const uint2 *>(p.conv_w + (size_t)ch * GDN_KC);
            r_win[j][0] = has ? conv[ch] : zero;
            r_win[j][1] = has ? conv[(size_t)p.conv_dim + ch] : zero;
            r_win[j][2] = has ? conv[(size_t)2 * p.conv_dim + ch] : zero;
            r_x[j] = nt > 0 ? p.qkv[(size_t)t0 * p.ldx + ch] : zero;
        }
    }
    float bb = nt > 0 ? bf2f(p.b[(size_t)t0 * p.ldg + h]) : 0.f, aa = nt > 0 ? bf2f(p.a[(size_t)t0 * p.ldg + h]) : 0.f;
    ST *rowp; /* this warp's first row in global memory; a warp's rows share a granule */
    {
        const int v = v0 + w * RPW;
        const sm_loc_t loc = p.ssm_loc[h * p.n_slices + v / p.slice_rows];
        char *gb = p.pool + (size_t)pages[loc.page] * p.page_bytes + loc.offset;
        rowp = reinterpret_cast<ST *>(gb) + (size_t)(v % p.slice_rows) * GDN_DK;
    }
    {
        constexpr int CH_ROW = GDN_DK * (int)sizeof(ST) / 16; /* 16-byte chunks per row */
        if (has) {
#pragma unroll
            for (int e = lane; e < RPW * CH_ROW; e += 32)
                cp_async16(reinterpret_cast<char *>(s_st + (size_t)(w * RPW) * GDN_DK) + 16 * e,
                           reinterpret_cast<const char *>(rowp) + 16 * e);
        } else {
#pragma unroll
            for (int e = lane; e < RPW * CH_ROW; e += 32)
                *reinterpret_cast<float4 *>(reinterpret_cast<char *>(s_st + (size_t)(w * RPW) * GDN_DK) + 16 * e) =
                    make_float4(0.f, 0.f, 0.f, 0.f);
        }
    }
    rowp += 4 * lane;
#pragma unroll
    for (int j = 0; j < NCT; j++) {
        const int c = tid + j * NT;
        if (c < NC) {
            c_w[c] = r_w[j];
            c_win[0][c] = r_win[j][0];
            c_win[1][c] = r_win[j][1];
            c_win[2][c] = r_win[j][2];
            c_x[c] = r_x[j];
        }
    }
    const float Aexp = expf(p.A_log[h]), dtb = p.dt_bias[h];
    const float qscale = rsqrtf((float)GDN_DK);

    /* 2. tokens */
    for (int it = 0; it < nt; it++) {
        const size_t t = (size_t)t0 + it;
        if (it > 0) __syncthreads(); /* previous token's readers of qs/ks/vs are done */
        if (it > 0) {
            bb = bf2f(p.b[t * p.ldg + h]);
            aa = bf2f(p.a[t * p.ldg + h]);
        }
        for (int c = tid; c < NC; c += NT) {
            const int ch = chan_of(c, g, h, v0, kd);
            const bf16_t xb = it == 0 ? c_x[c] : p.qkv[t * p.ldx + ch];
            const float2 w01 = bf2x2_to_f2(c_w[c].x), w23 = bf2x2_to_f2(c_w[c].y);
            const float acc = w01.x * bf2f(c_win[0][c]) + w01.y * bf2f(c_win[1][c]) + w23.x * bf2f(c_win[2][c]) +
                              w23.y * bf2f(xb);
            c_win[0][c] = c_win[1][c];
            c_win[1][c] = c_win[2][c];
            c_win[2][c] = xb;
            const float y = silu_f(acc);
            if (c < GDN_DK) qs[c] = y;
            else if (c < 2 * GDN_DK) ks[c - GDN_DK] = y;
            else vs[c - 2 * GDN_DK] = y;
        }
        __syncthreads();
        if (it == 0) cluster_arrive(); /* this block has read the old conv state */
        float4 q4 = *reinterpret_cast<const float4 *>(&qs[4 * lane]);
        float4 k4 = *reinterpret_cast<const float4 *>(&ks[4 * lane]);
        const float rq = rsqrtf(warp_sum(q4.x * q4.x + q4.y * q4.y + q4.z * q4.z + q4.w * q4.w) + 1e-6f) * qscale;
        const float rk = rsqrtf(warp_sum(k4.x * k4.x + k4.y * k4.y + k4.z * k4.z + k4.w * k4.w) + 1e-6f);
        q4.x *= rq; q4.y *= rq; q4.z *= rq; q4.w *= rq;
        k4.x *= rk; k4.y *= rk; k4.z *= rk; k4.w *= rk;
        const float kq = warp_sum(k4.x * q4.x + k4.y * q4.y + k4.z * q4.z + k4.w * q4.w);
        const float beta = sigmoid_f(bb);
        const float eg = expf(-Aexp * softplus_f(aa + dtb));

        if (it == 0) {
            cp_async_wait_all();
            __syncwarp(); /* each warp reads only the rows it copied */
        }
#pragma unroll
        for (int i0 = 0; i0 < RPW; i0 += 4) {
            float4 s4[4];
            float da[4], db[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                s4[i] = st_io<ST>::load(s_st + (size_t)(w * RPW + i0 + i) * GDN_DK + 4 * lane);
                da[i] = s4[i].x * k4.x + s4[i].y * k4.y + s4[i].z * k4.z + s4[i].w * k4.w;
                db[i] = s4[i].x * q4.x + s4[i].y * q4.y + s4[i].z * q4.z + s4[i].w * q4.w;
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    da[i] += __shfl_xor_sync(0xffffffffu, da[i], o);
                    db[i] += __shfl_xor_sync(0xffffffffu, db[i], o);
                }
            }
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int row = w * RPW + i0 + i;
                const float d = beta * (vs[row] - eg * da[i]);
                const float o = eg * db[i] + d * kq;
                s4[i].x = eg * s4[i].x + d * k4.x;
                s4[i].y = eg * s4[i].y + d * k4.y;
                s4[i].z = eg * s4[i].z + d * k4.z;
                s4[i].w = eg * s4[i].w + d * k4.w;
                if (lane == i) o_s[it * BV + row] = o;
                if (it == nt - 1) st_io<ST>::store(rowp + (size_t)(i0 + i) * GDN_DK, s4[i]); /* in place */
                else st_io<ST>::store(s_st + (size_t)row * GDN_DK + 4 * lane, s4[i]);
            }
        }
    }

    if (nt == 0) cluster_arrive(); /* (no tokens: nothing changes, barriers still pair) */
    /* 3. (state written in place with the last token) v conv state: channels only this block reads */
    for (int c = 2 * GDN_DK + tid; c < NC && nt > 0; c += NT) {
        const int ch = chan_of(c, g, h, v0, kd);
#pragma unroll
        for (int j = 0; j < 3; j++) conv[(size_t)j * p.conv_dim + ch] = c_win[j][c];
    }
    __syncthreads(); /* o_s complete */
    const bool split_norm = p.z && p.nsplit > 1;
    if (p.z) {
        for (int it = w; it < nt; it += NW) {
            float acc = 0.f;
            for (int v = lane; v < BV; v += 32) acc += o_s[it * BV + v] * o_s[it * BV + v];
            acc = warp_sum(acc);
            if (lane == 0) {
                if (split_norm) {
                    for (int j = 0; j < p.nsplit; j++)
                        *cluster.map_shared_rank(&ssq_all[slice][it], hl * p.nsplit + j) = acc;
                } else {
                    ssq_all[0][it] = acc;
                }
            }
        }
    }
    cluster_wait(); /* every block of the cluster has read the old q/k conv state */
    if (rank == 0) {
        for (int c = tid; c < 2 * GDN_DK && nt > 0; c += NT) {
            const int ch = chan_of(c, g, h, v0, kd);
#pragma unroll
            for (int j = 0; j < 3; j++) conv[(size_t)j * p.conv_dim + ch] = c_win[j][c];
        }
    }
    if (split_norm) {
        cluster_arrive(); /* partial sums pushed to the siblings */
        cluster_wait();
    } else {
        __syncthreads();
    }
    const int HD = p.Hv * GDN_DK;
    if (p.z) {
        for (int e = tid; e < nt * BV; e += NT) {
            const int it = e / BV, v = e % BV;
            float tot = 0.f;
            for (int j = 0; j < (split_norm ? p.nsplit : 1); j++) tot += ssq_all[j][it];
            const float rstd = rsqrtf(tot / (float)GDN_DK + p.eps);
            const size_t t = (size_t)t0 + it;
            const float zz = bf2f(p.z[t * p.ldz + h * GDN_DK + v0 + v]);
            p.out[t * HD + h * GDN_DK + v0 + v] = f2bf(o_s[e] * rstd * p.norm_w[v0 + v] * silu_f(zz));
        }
    } else {
        for (int e = tid; e < nt * BV; e += NT) {
            const int it = e / BV, v = e % BV;
            p.out[((size_t)t0 + it) * HD + h * GDN_DK + v0 + v] = f2bf(o_s[e]);
        }
    }
}

/* ======================================================================================
 * One token per sequence (max_t == 1, plain decode): two kernels built from the same steps.
 *
 * Work item = (sequence n, v-head h, V-slice of BV rows). Everything an item reads is
 * issued before any of it is used, in one round trip: the state slice (zero-filled when
 * n_past == 0, so fresh sequences need no branch) and, per conv channel of the item (q and
 * k of key head g, then the BV v channels), the token's pre-conv input, the 3 window rows
 * and the 4 taps, plus the BV z values (the "small part", cp.async into shared memory; the
 * state: also into shared memory in the persistent kernel, into registers in the cluster
 * kernel). Addresses take one dependent load: lane l of every warp loads page-table entry
 * l of the request (E <= 32, else one more load), and the granule and conv pages are picked
 * out with a shuffle.
 *
 * gdn_dec1_cluster (small batches): one item per block, grid (r * nsplit, Hk, S), a cluster
 * per (n, g) as in the segment kernel above (the q/k conv state is shared by the cluster,
 * rank 0 writes it after the cluster barrier; the gated RMSNorm's sum of squares goes to
 * the nsplit slices of a head with st.async on an mbarrier). BV 16..64 gives 128+ blocks
 * at batch 1.
 * gdn_dec1_persist (large batches): a persistent grid (as many blocks as fit) looping over
 * the key-head groups (n, g) given to it, all r heads of a group in a row, each head in
 * 128 / BVI items of BVI rows, STAGES deep: while item j is computed, items j+1 ..
 * j+STAGES-1 are in flight. Conv taps and gates of the next item are loaded into
 * registers one item ahead (the stage holds no taps). The gated RMSNorm runs after a head's
 * last item. The last item of a group writes the group's q/k conv state (every earlier
 * read of it by this block has landed), so no cluster and no barrier between blocks.
 *
 * Recurrence layout (both): a warp takes 4 rows at a time, 8 lanes a row, 16 columns a
 * lane, so the two row reductions cost 3 shuffle steps (the segment kernel above: 32 lanes
 * a row, 5 steps).
 *
 * Status: cfg 8..19 select these kernels; cfg 0 picks them where they measured faster
 * (GDN_DEC1_AUTO, HS_GDN_DEC1=0 turns that off; see gdn_decode_launch and bench/RESULTS.md).
 * ====================================================================================== */

/* Byte layout of one stage for a BV-row item: the state slice, then the small part (token
 * input, window, taps, z). Offsets X..Z are relative to the small part. */
template <int BV, typename ST, bool TAPS = true> struct dec1_stage {
    static constexpr int NC = 2 * GDN_DK + BV;                          /* conv channels: q, k, v */
    static constexpr int ST_B = BV * GDN_DK * (int)sizeof(ST);          /* state slice [BV][128] */
    static constexpr int X = 0;                                         /* bf16 [NC] token input */
    static constexpr int WIN = X + 2 * NC;                              /* bf16 [3][NC] old window */
    static constexpr int W = WIN + 6 * NC;                              /* uint2 [NC] conv taps (TAPS) */
    static constexpr int Z = W + (TAPS ? 8 * NC : 0);                   /* bf16 [BV] gate z */
    static constexpr int SMALL = Z + 2 * BV;                            /* bytes of the small part */
    static constexpr int BYTES = ST_B + SMALL;
    static constexpr int N_TAPS = TAPS ? NC / 2 : 0;
    static constexpr int N_SMALL = NC / 2 + N_TAPS + BV / 8;            /* 16-byte chunks besides the state */
    static_assert(BV % 16 == 0 && SMALL % 16 == 0, "16-byte chunks");
};

/* Address values of one item, loaded before they are needed (no use of them stalls
 * until page_of): lane l's entry l of the request's page table, this warp's granule. */
struct dec1_ld {
    int pg;
    sm_loc_t loc;
    int np;
    int t0, t1; /* tok_start[n], tok_start[n + 1]: t1 == t0 + 1 (t1 == t0: no token, nothing changes) */
};
__device__ __forceinline__ dec1_ld dec1_load(const gdn_dec_params &p, int n, int h, int vw) {
    const int lane = threadIdx.x & 31;
    dec1_ld r;
    r.pg = lane < p.E ? p.state_pages[(size_t)n * p.E + lane] : 0;
    r.loc = p.ssm_loc[h * p.n_slices + vw / p.slice_rows];
    r.np = p.n_past[n];
    r.t0 = p.tok_start[n];
    r.t1 = p.tok_start[n + 1];
    return r;
}
__device__ __forceinline__ int dec1_page(const gdn_dec_params &p, const dec1_ld &L, int n, int page) {
    const int s = __shfl_sync(0xffffffffu, L.pg, page & 31);
    return page < 32 ? s : p.state_pages[(size_t)n * p.E + page];
}

/* Addresses of item (n, h, v0): this warp's first state row and the request's conv granule. */
template <int BV, int NT, typename ST>
__device__ __forceinline__ ST *dec1_rows_addr(const gdn_dec_params &p, const dec1_ld &L, int n, int v0) {
    constexpr int RPW = BV / (NT / 32);
    const int w = threadIdx.x >> 5;
    return reinterpret_cast<ST *>(p.pool + (size_t)dec1_page(p, L, n, L.loc.page) * p.page_bytes + L.loc.offset) +
           (size_t)((v0 + w * RPW) % p.slice_rows) * GDN_DK;
}
__device__ __forceinline__ bf16_t *dec1_conv_addr(const gdn_dec_params &p, const dec1_ld &L, int n) {
    return reinterpret_cast<bf16_t *>(p.pool + (size_t)dec1_page(p, L, n, p.conv_page) * p.page_bytes + p.conv_off);
}

/* Issue the cp.async of item (n, h, v0): the state slice into `st_dst` (do_state; this
 * warp's rows from `rows`), the small part into `small` (do_small; conv granule `conv`). */
template <int BV, int NT, typename ST, bool TAPS = true>
__device__ __forceinline__ void dec1_issue(const gdn_dec_params &p, const dec1_ld &L, int g, int h, int v0,
                                           const ST *rows, const bf16_t *conv, unsigned char *st_dst,
                                           unsigned char *small, bool do_state, bool do_small) {
    using SL = dec1_stage<BV, ST, TAPS>;
    constexpr int NW = NT / 32, RPW = BV / NW, NC8 = SL::NC / 8;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const bool live = L.t1 > L.t0;
    const unsigned nb = L.np > 0 && live ? 16u : 0u, nx = live ? 16u : 0u; /* 0: zero-filled */
    const int kd = p.Hk * GDN_DK, t = live ? L.t0 : 0;
    if (do_state) {
        constexpr int CH = RPW * GDN_DK * (int)sizeof(ST) / 16;
        unsigned char *dst = st_dst + (size_t)w * RPW * GDN_DK * sizeof(ST);
        const unsigned char *src = reinterpret_cast<const unsigned char *>(rows);
#pragma unroll
        for (int e = lane; e < CH; e += 32) cp_async16_bytes(dst + 16 * e, src + 16 * e, nb);
    }
    for (int e = tid; e < SL::N_SMALL && do_small; e += NT) {
        if (e < 4 * NC8) { /* token input (seg 0) or window row seg - 1 */
            const int seg = e / NC8, c = 8 * (e % NC8), ch = chan_of(c, g, h, v0, kd);
            if (seg == 0) cp_async16_bytes(small + SL::X + 2 * c, p.qkv + (size_t)t * p.ldx + ch, nx);
            else cp_async16_bytes(small + SL::WIN + (seg - 1) * 2 * SL::NC + 2 * c, conv + (size_t)(seg - 1) * p.conv_dim + ch, nb);
        } else if (e < 4 * NC8 + SL::N_TAPS) { /* taps of 2 channels */
            const int c = 2 * (e - 4 * NC8);
            cp_async16_bytes(small + SL::W + 8 * c, p.conv_w + (size_t)chan_of(c, g, h, v0, kd) * GDN_KC, 16u);
        } else if (p.z) {
            const int i = e - 4 * NC8 - SL::N_TAPS;
            cp_async16_bytes(small + SL::Z + 16 * i, p.z + (size_t)t * p.ldz + h * GDN_DK + v0 + 8 * i, nx);
        }
    }
}

/* Conv + SiLU of the item's channels into qs/ks/vs; writes the new window of the v
 * channels (write_v) and of the q/k channels (write_qk) in place. */
template <int BV, int NT, typename ST, bool TAPS = true>
__device__ __forceinline__ void dec1_conv(const gdn_dec_params &p, const unsigned char *small, bf16_t *conv, int g,
                                          int h, int v0, bool write_v, bool write_qk, float *qs, float *ks, float *vs,
                                          const uint2 *treg = nullptr) {
    using SL = dec1_stage<BV, ST, TAPS>;
    const bf16_t *x = reinterpret_cast<const bf16_t *>(small + SL::X);
    const bf16_t *win = reinterpret_cast<const bf16_t *>(small + SL::WIN);
    const uint2 *wt = reinterpret_cast<const uint2 *>(small + SL::W);
    const int kd = p.Hk * GDN_DK;
#pragma unroll
    for (int k = 0; k < (SL::NC + NT - 1) / NT; k++) {
        const int c = (int)threadIdx.x + k * NT;
        if (c >= SL::NC) break;
        const bf16_t xb = x[c], w0 = win[c], w1 = win[SL::NC + c], w2 = win[2 * SL::NC + c];
        const uint2 tw = TAPS ? wt[c] : treg[k];
        const float2 t01 = bf2x2_to_f2(tw.x), t23 = bf2x2_to_f2(tw.y);
        const float y = silu_f(t01.x * bf2f(w0) + t01.y * bf2f(w1) + t23.x * bf2f(w2) + t23.y * bf2f(xb));
        if (c < GDN_DK) qs[c] = y;
        else if (c < 2 * GDN_DK) ks[c - GDN_DK] = y;
        else vs[c - 2 * GDN_DK] = y;
        if (c >= 2 * GDN_DK ? write_v : write_qk) {
            const int ch = chan_of(c, g, h, v0, kd);
            conv[ch] = w1;
            conv[(size_t)p.conv_dim + ch] = w2;
            conv[(size_t)2 * p.conv_dim + ch] = xb;
        }
    }
}

/* The new window of the item's conv channels [c0, c1) (cluster kernel, after its last
 * cluster barrier: the q/k channels by rank 0 alone, once every block has read them). */
template <int BV, typename ST, bool TAPS = true>
__device__ __forceinline__ void dec1_write_win(const gdn_dec_params &p, const unsigned char *small, bf16_t *conv, int g,
                                               int h, int v0, int c0, int c1, int NT) {
    using SL = dec1_stage<BV, ST, TAPS>;
    const bf16_t *x = reinterpret_cast<const bf16_t *>(small + SL::X);
    const bf16_t *win = reinterpret_cast<const bf16_t *>(small + SL::WIN);
    const int kd = p.Hk * GDN_DK;
    for (int c = c0 + (int)threadIdx.x; c < c1; c += NT) {
        const int ch = chan_of(c, g, h, v0, kd);
        conv[ch] = win[SL::NC + c];
        conv[(size_t)p.conv_dim + ch] = win[2 * SL::NC + c];
        conv[(size_t)2 * p.conv_dim + ch] = x[c];
    }
}

/* 16 columns of a state row per lane, 8 lanes a row (lane sub = lane & 7): as 4 float4 of
 * columns 4 * col4(m, sub), m = 0..3; 8 lanes read 128 contiguous bytes per access. */
template <typename ST> struct st16raw { uint4 u[sizeof(ST)]; }; /* a lane's 16 columns as loaded */
template <typename ST> struct st16;
template <> struct st16<float> {
    static __device__ __forceinline__ void unpack(const st16raw<float> &r, float4 v[4]) {
#pragma unroll
        for (int m = 0; m < 4; m++)
            v[m] = make_float4(__uint_as_float(r.u[m].x), __uint_as_float(r.u[m].y), __uint_as_float(r.u[m].z),
                               __uint_as_float(r.u[m].w));
    }
    static __device__ __forceinline__ int col4(int m, int sub) { return sub + 8 * m; }
    static __device__ __forceinline__ void load(const float *row, int sub, float4 v[4]) {
#pragma unroll
        for (int m = 0; m < 4; m++) v[m] = *reinterpret_cast<const float4 *>(row + 4 * (sub + 8 * m));
    }
    static __device__ __forceinline__ void store(float *row, int sub, const float4 v[4]) {
#pragma unroll
        for (int m = 0; m < 4; m++) *reinterpret_cast<float4 *>(row + 4 * (sub + 8 * m)) = v[m];
    }
};
template <> struct st16<bf16_t> {
    static __device__ __forceinline__ int col4(int m, int sub) { return 2 * (sub + 8 * (m >> 1)) + (m & 1); }
    static __device__ __forceinline__ void unpack(const st16raw<bf16_t> &r, float4 v[4]) {
#pragma unroll
        for (int m = 0; m < 2; m++) {
            const uint4 u = r.u[m];
            const float2 a = bf2x2_to_f2(u.x), b = bf2x2_to_f2(u.y), c = bf2x2_to_f2(u.z), d = bf2x2_to_f2(u.w);
            v[2 * m] = make_float4(a.x, a.y, b.x, b.y);
            v[2 * m + 1] = make_float4(c.x, c.y, d.x, d.y);
        }
    }
    static __device__ __forceinline__ void load(const bf16_t *row, int sub, float4 v[4]) {
#pragma unroll
        for (int m = 0; m < 2; m++) {
            const uint4 u = *reinterpret_cast<const uint4 *>(row + 8 * (sub + 8 * m));
            const float2 a = bf2x2_to_f2(u.x), b = bf2x2_to_f2(u.y), c = bf2x2_to_f2(u.z), d = bf2x2_to_f2(u.w);
            v[2 * m] = make_float4(a.x, a.y, b.x, b.y);
            v[2 * m + 1] = make_float4(c.x, c.y, d.x, d.y);
        }
    }
    static __device__ __forceinline__ void store(bf16_t *row, int sub, const float4 v[4]) {
#pragma unroll
        for (int m = 0; m < 2; m++) {
            uint4 u;
            u.x = f2_to_bf2x2(v[2 * m].x, v[2 * m].y);
            u.y = f2_to_bf2x2(v[2 * m].z, v[2 * m].w);
            u.z = f2_to_bf2x2(v[2 * m + 1].x, v[2 * m + 1].y);
            u.w = f2_to_bf2x2(v[2 * m + 1].z, v[2 * m + 1].w);
            *reinterpret_cast<uint4 *>(row + 8 * (sub + 8 * m)) = u;
        }
    }
};
/* A lane's 16 columns of `row` (st16 layout) loaded to registers, zeros where !has. The
 * predicated loads are inline PTX with the zeros as their prior values: nothing consumes
 * the registers before the recurrence (a C select would, stalling the thread on the load). */
template <typename ST> __device__ __forceinline__ void st16_load_raw(const ST *row, int sub, bool has, st16raw<ST> &r) {
#pragma unroll
    for (int m = 0; m < (int)sizeof(ST); m++) {
        r.u[m] = make_uint4(0u, 0u, 0u, 0u);
        asm("{\n .reg .pred p;\n setp.ne.u32 p, %4, 0;\n @p ld.global.v4.u32 {%0, %1, %2, %3}, [%5];\n}\n"
            : "+r"(r.u[m].x), "+r"(r.u[m].y), "+r"(r.u[m].z), "+r"(r.u[m].w)
            : "r"((unsigned)has), "l"(reinterpret_cast<const char *>(row) + 16 * (sub + 8 * m)));
    }
}
__device__ __forceinline__ float dot4(float4 a, float4 b) { return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w; }
/* sum over the 8 lanes of a row */
__device__ __forceinline__ float sum8(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    v += __shfl_xor_sync(0xffffffffu, v, 4);
    return v;
}

/* The recurrence over this warp's RPW rows (state in `sst`, shared memory, or with REG in
 * registers: rr[i] = rows 4i..4i+3 of the warp as st16_load_raw left them), the new rows
 * written to `grow` (this warp's first row: global, or the stage itself), o to o_s. Gates:
 * beta = sigmoid(b), eg = exp(-exp(A_log) softplus(a + dt_bias)). A warp takes 4 rows at a
 * time, 8 lanes a row, 16 columns a lane: both row reductions (S k, S q) cost 3 shuffle
 * steps. Returns this warp's sum of o^2 (same value in every lane). */
template <int RPW, typename ST, bool REG = false>
__device__ __forceinline__ float dec1_rows(const ST *sst, ST *grow, const float *qs, const float *ks, const float *vs,
                                           float beta, float eg, bool live, float *o_s,
                                           const st16raw<ST> *rr = nullptr) {
    static_assert(RPW % 4 == 0, "rows are processed in groups of 4");
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, sub = lane & 7, rg = lane >> 3;
    float4 q4[4], k4[4];
    float sq = 0.f, sk = 0.f, kq = 0.f;
#pragma unroll
    for (int m = 0; m < 4; m++) {
        const int c = 4 * st16<ST>::col4(m, sub);
        q4[m] = *reinterpret_cast<const float4 *>(&qs[c]);
        k4[m] = *reinterpret_cast<const float4 *>(&ks[c]);
        sq += dot4(q4[m], q4[m]);
        sk += dot4(k4[m], k4[m]);
        kq += dot4(k4[m], q4[m]);
    }
    /* the three sums side by side; k.q of the normalized vectors is rk rq (k.q) */
    sq = sum8(sq);
    sk = sum8(sk);
    kq = sum8(kq);
    const float rq = rsqrtf(sq + 1e-6f) * rsqrtf((float)GDN_DK), rk = rsqrtf(sk + 1e-6f);
    kq *= rq * rk;
#pragma unroll
    for (int m = 0; m < 4; m++) {
        q4[m].x *= rq; q4[m].y *= rq; q4[m].z *= rq; q4[m].w *= rq;
        k4[m].x *= rk; k4[m].y *= rk; k4[m].z *= rk; k4[m].w *= rk;
    }
    float ssq = 0.f;
#pragma unroll
    for (int i0 = 0; i0 < RPW; i0 += 4) {
        const int row = w * RPW + i0 + rg;
        float4 s4[4];
        if (REG) st16<ST>::unpack(rr[i0 / 4], s4);
        else st16<ST>::load(sst + (size_t)row * GDN_DK, sub, s4);
        float da = 0.f, db = 0.f;
#pragma unroll
        for (int m = 0; m < 4; m++) {
            da += dot4(s4[m], k4[m]);
            db += dot4(s4[m], q4[m]);
        }
        da = sum8(da);
        db = sum8(db);
        const float d = beta * (vs[row] - eg * da);
        const float o = eg * db + d * kq;
#pragma unroll
        for (int m = 0; m < 4; m++) {
            s4[m].x = eg * s4[m].x + d * k4[m].x;
            s4[m].y = eg * s4[m].y + d * k4[m].y;
            s4[m].z = eg * s4[m].z + d * k4[m].z;
            s4[m].w = eg * s4[m].w + d * k4[m].w;
        }
        if (sub == 0) {
            o_s[row] = o;
            ssq += o * o;
        }
        if (live) st16<ST>::store(grow + (size_t)(i0 + rg) * GDN_DK, sub, s4); /* in place */
    }
    return warp_sum(ssq);
}

/* Output of rows [0, BV) of the item: gated RMSNorm with the head's sum of squares `tot`
 * (or o itself without z). */
template <int BV, typename ST, bool TAPS = true>
__device__ __forceinline__ void dec1_out(const gdn_dec_params &p, const unsigned char *small, const float *o_s,
                                         float tot, float nw, int t, int h, int v0) {
    using SL = dec1_stage<BV, ST, TAPS>;
    const int v = threadIdx.x;
    if (v >= BV || t < 0) return;
    const size_t o = (size_t)t * p.Hv * GDN_DK + h * GDN_DK + v0 + v;
    if (p.z) {
        const float zz = bf2f(reinterpret_cast<const bf16_t *>(small + SL::Z)[v]);
        p.out[o] = f2bf(o_s[v] * rsqrtf(tot / (float)GDN_DK + p.eps) * nw * silu_f(zz));
    } else {
        p.out[o] = f2bf(o_s[v]);
    }
}

/* cluster helpers of gdn_dec1_cluster's split-norm exchange (mbarriers: cuda_common.cuh) */
__device__ __forceinline__ void cluster_arrive_relaxed() {
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
}
/* v into the float at local shared address `a` of block `rank` of the cluster; completes 4
 * bytes of that block's mbarrier at local address `bar` */
__device__ __forceinline__ void st_async_remote(unsigned a, unsigned bar, unsigned rank, float v) {
    unsigned ra, rb;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(ra) : "r"(a), "r"(rank));
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(rb) : "r"(bar), "r"(rank));
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];\n" ::"r"(ra),
                 "r"(__float_as_uint(v)), "r"(rb)
                 : "memory");
}

/* gdn_dec1_cluster, one item (n, h, V-slice) per block. Order of a block:
 * metadata (one dependent round trip: page table, granule map, tok_start, n_past) ->
 * this warp's state rows loaded straight into registers (st16 layout, predicated loads
 * that nothing reads before the recurrence) -> [pdl_wait] -> cp.async of the small part
 * (token input, window, taps, z) and the gates -> conv + SiLU (the v channels' new window
 * stored at once) -> recurrence, each new state row stored as computed -> cluster barrier
 * (every block has read the old q/k window; rank 0 then writes it) -> with a split head
 * (nsplit > 1) the block's sum of o^2 goes to its siblings with st.async, which complete
 * the transaction count of their mbarrier (no second cluster barrier) -> gated RMSNorm,
 * output.
 * Measured against main's version (bench/RESULTS.md, session 4): the state through shared
 * memory, the stores after the barriers and a second cluster barrier for the norm each cost
 * 0.1-0.9 us at batch 1. Also measured slower (0.1-0.5 us): the small part issued before the
 * state (its conv window comes from DRAM too, and the state then starts ~0.5 us later), and
 * the gates computed after the small part has landed. */
template <int BV, int NT, typename ST>
__global__ void __launch_bounds__(NT) gdn_dec1_cluster(const gdn_dec_params p) {
    using SL = dec1_stage<BV, ST>;
    constexpr int NW = NT / 32, RPW = BV / NW, NG = RPW / 4;
    static_assert(BV <= NT, "one output row per thread");
    __shared__ __align__(16) float qs[GDN_DK], ks[GDN_DK], vs[BV], o_s[BV];
    __shared__ float ssq_w[NW], ssq_all[16];
    __shared__ __align__(8) uint64_t xbar; /* the siblings' sums of o^2 have landed in ssq_all */
    extern __shared__ __align__(16) unsigned char small[]; /* the item's small part (dec1_stage) */

    cg::cluster_group cluster = cg::this_cluster();
    const int rank = (int)cluster.block_rank();
    const int hl = rank / p.nsplit, slice = rank % p.nsplit;
    const int g = blockIdx.y, n = blockIdx.z;
    const int h = g * p.r + hl, v0 = slice * BV;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const bool split_norm = p.z && p.nsplit > 1;
    GDN_TM_DECL;

    GDN_TM(0);
    pdl_trigger();
    if (split_norm && tid == 0) {
        mbar_init(&xbar, 1);
        mbar_arrive_expect_tx(&xbar, 4u * (unsigned)(p.nsplit - 1));
        fence_mbar_init(); /* visible to the siblings before they pass the cluster barrier */
    }
    /* one round trip for the addresses, the gate constants alongside */
    const dec1_ld L = dec1_load(p, n, h, v0 + w * RPW);
    const float A_log = p.A_log[h], dtb = p.dt_bias[h];
    const float nw = p.z && tid < BV ? p.norm_w[v0 + tid] : 0.f;
    const bool live = L.t1 > L.t0;
    ST *rows = dec1_rows_addr<BV, NT, ST>(p, L, n, v0);
    bf16_t *conv = dec1_conv_addr(p, L, n);
    st16raw<ST> rr[NG]; /* this warp's rows 4i + lane / 8 */
    {
        const bool has = live && L.np > 0;
#pragma unroll
        for (int i = 0; i < NG; i++) st16_load_raw<ST>(rows + (size_t)(4 * i + (lane >> 3)) * GDN_DK, lane & 7, has, rr[i]);
    }
    GDN_TM(1);
    pdl_wait(); /* the step's inputs from here on */
    dec1_issue<BV, NT, ST>(p, L, g, h, v0, rows, conv, nullptr, small, false, true);
    const size_t tg = (size_t)(live ? L.t0 : 0) * p.ldg + h;
    /* the gates, while the small part is in flight */
    const float beta = sigmoid_f(bf2f(p.b[tg]));
    const float eg = expf(-expf(A_log) * softplus_f(bf2f(p.a[tg]) + dtb));
    GDN_TM(2);
    cp_async_wait_all();
    __syncthreads();
    GDN_TM(3);
    cluster_arrive_relaxed(); /* this block has read the old conv state (and set up xbar) */
    dec1_conv<BV, NT, ST>(p, small, conv, g, h, v0, live, false, qs, ks, vs);
    __syncthreads();
    GDN_TM(4);
    const float ssq = dec1_rows<RPW, ST, true>(nullptr, rows, qs, ks, vs, beta, eg, live, o_s, rr);
    if (lane == 0) ssq_w[w] = ssq;
    __syncthreads();
    GDN_TM(5);
    float tot = 0.f;
#pragma unroll
    for (int j = 0; j < NW; j++) tot += ssq_w[j];
    cluster_wait(); /* every block of the cluster has read the old q/k conv state (and has started) */
    GDN_TM(6);
    if (split_norm && tid < p.nsplit && tid != slice)
        st_async_remote(smem_u32(&ssq_all[slice]), smem_u32(&xbar), (unsigned)(hl * p.nsplit + tid), tot);
    if (live && rank == 0) dec1_write_win<BV, ST>(p, small, conv, g, h, v0, 0, 2 * GDN_DK, NT); /* q/k, read by all */
    if (split_norm) {
        mbar_wait(&xbar, 0);
        float t2 = 0.f;
        for (int j = 0; j < p.nsplit; j++) t2 += j == slice ? tot : ssq_all[j];
        tot = t2;
    }
    dec1_out<BV, ST>(p, small, o_s, tot, nw, live ? L.t0 : -1, h, v0);
    GDN_TM(7);
    GDN_TM_FLUSH();
}

template <int BVI, int NT, typename ST, int STAGES>
__global__ void __launch_bounds__(NT) gdn_dec1_persist(const gdn_dec_params p) {
    constexpr int NW = NT / 32, RPW = BVI / NW, NSL = GDN_DK / BVI;
    using SL = dec1_stage<BVI, ST, false>;
    constexpr int KIT = (SL::NC + NT - 1) / NT; /* conv channels per thread */
    static_assert(STAGES >= 2, "at least one item in flight");
    static_assert(NT >= GDN_DK, "one output row per thread");
    __shared__ __align__(16) float qs[GDN_DK], ks[GDN_DK], vs[BVI], o_s[GDN_DK], zf[GDN_DK];
    __shared__ float ssq_w[NSL][NW];
    __shared__ ST *g_rows[STAGES][NW];
    __shared__ bf16_t *g_conv[STAGES];
    __shared__ int g_tok[STAGES]; /* token of the item in each stage, -1: none */
    extern __shared__ __align__(16) unsigned char dsm[];

    pdl_trigger();
    pdl_wait(); /* (the pipeline below mixes state and input loads from its first item) */
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int G = gridDim.x, n_groups = p.n_groups, r = p.r, kd = p.Hk * GDN_DK;
    const int nq = blockIdx.x < n_groups ? (n_groups - 1 - (int)blockIdx.x) / G + 1 : 0;
    const int nj = nq * r * NSL;
    const float nw = p.z && tid < GDN_DK ? p.norm_w[tid] : 0.f;
    /* item j of this block: group blockIdx.x + (j / (r NSL)) * G, v-head (j / NSL) % r, slice j % NSL */
#define DEC1_ITEM(j, n_, g_, h_, v0_)                                                  \
    const int q_##n_ = (int)blockIdx.x + ((j) / (r * NSL)) * G;                        \
    const int n_ = q_##n_ / p.Hk, g_ = q_##n_ % p.Hk, h_ = g_ * r + ((j) / NSL) % r;    \
    const int v0_ = ((j) % NSL) * BVI
    /* issue item j into its stage: pointers and token for the compute step go to shared memory */
#define DEC1_ISSUE(j, L)                                                                              \
    do {                                                                                              \
        DEC1_ITEM(j, n, g, h, v0);                                                                    \
        const int sn = (j) % STAGES;                                                                  \
        ST *rows = dec1_rows_addr<BVI, NT, ST>(p, L, n, v0);                                          \
        bf16_t *conv = dec1_conv_addr(p, L, n);                                                       \
        unsigned char *st_ = dsm + (size_t)sn * SL::BYTES;                                            \
        dec1_issue<BVI, NT, ST, false>(p, L, g, h, v0, rows, conv, st_, st_ + SL::ST_B, true, true);  \
        if (lane == 0) g_rows[sn][w] = rows;                                                          \
        if (tid == 0) g_conv[sn] = conv;                                                              \
        if (tid == 0) g_tok[sn] = (L).t1 > (L).t0 ? (L).t0 : -1;                                      \
    } while (0)
    /* gates and conv taps of item j, loaded one item ahead */
#define DEC1_GATES(j, bb_, aa_, Aexp_, dtb_, tp_)                                           \
    do {                                                                                    \
        DEC1_ITEM(j, n, g, h, v0);                                                          \
        (void)n;                                                                            \
        const int t_ = g_tok[(j) % STAGES];                                                 \
        const size_t tg_ = (size_t)(t_ < 0 ? 0 : t_) * p.ldg + h;                           \
        bb_ = bf2f(p.b[tg_]);                                                               \
        aa_ = bf2f(p.a[tg_]);                                                               \
        Aexp_ = expf(p.A_log[h]);                                                           \
        dtb_ = p.dt_bias[h];                                                                \
        _Pragma("unroll") for (int k = 0; k < KIT; k++) {                                   \
            const int c = tid + k * NT;                                                     \
            if (c < SL::NC)                                                                 \
                tp_[k] = *reinterpret_cast<const uint2 *>(p.conv_w +                        \
                                                          (size_t)chan_of(c, g, h, v0, kd) * GDN_KC); \
        }                                                                                   \
    } while (0)

    for (int s = 0; s < STAGES - 1; s++) {
        if (s < nj) {
            DEC1_ITEM(s, n, g, h, v0);
            const dec1_ld L = dec1_load(p, n, h, v0 + w * RPW);
            DEC1_ISSUE(s, L);
        }
        cp_async_commit();
    }
    dec1_ld Lnext = {0, {0, 0}, 0, 0, 0};
    if (STAGES - 1 < nj) {
        DEC1_ITEM(STAGES - 1, n, g, h, v0);
        Lnext = dec1_load(p, n, h, v0 + w * RPW);
    }
    __syncthreads(); /* g_tok[0] */
    float bb = 0.f, aa = 0.f, Aexp = 0.f, dtb = 0.f;
    uint2 tp[KIT];
    if (nj > 0) DEC1_GATES(0, bb, aa, Aexp, dtb, tp);
    for (int j = 0; j < nj; j++) {
        cp_async_wait<STAGES - 2>();
        __syncthreads(); /* item j has landed; every thread is done with item j - 1's stage */
        if (j + STAGES - 1 < nj) DEC1_ISSUE(j + STAGES - 1, Lnext);
        cp_async_commit();
        if (j + STAGES < nj) {
            DEC1_ITEM(j + STAGES, n, g, h, v0);
            Lnext = dec1_load(p, n, h, v0 + w * RPW);
        }
        DEC1_ITEM(j, n, g, h, v0);
        (void)n;
        const int s = j % STAGES, t = g_tok[s], sl = j % NSL;
        const bool last_slice = sl == NSL - 1;
        const unsigned char *stage = dsm + (size_t)s * SL::BYTES;
        dec1_conv<BVI, NT, ST, false>(p, stage + SL::ST_B, g_conv[s], g, h, v0, t >= 0,
                                      t >= 0 && last_slice && (j / NSL) % r == r - 1, qs, ks, vs, tp);
        if (p.z && tid < BVI) zf[v0 + tid] = bf2f(reinterpret_cast<const bf16_t *>(stage + SL::ST_B + SL::Z)[tid]);
        __syncthreads(); /* (also: g_tok of item j + 1, issued this step when STAGES == 2) */
        float bb2 = 0.f, aa2 = 0.f, Aexp2 = 0.f, dtb2 = 0.f;
        uint2 tp2[KIT];
        if (j + 1 < nj) DEC1_GATES(j + 1, bb2, aa2, Aexp2, dtb2, tp2);
        const float beta = sigmoid_f(bb), eg = expf(-Aexp * softplus_f(aa + dtb));
        const float ssq = dec1_rows<RPW, ST>(reinterpret_cast<const ST *>(stage), g_rows[s][w], qs, ks, vs, beta, eg,
                                             t >= 0, o_s + v0);
        if (lane == 0) ssq_w[sl][w] = ssq;
        if (last_slice) {
            __syncthreads();
            if (tid < GDN_DK && t >= 0) {
                const size_t o = (size_t)t * p.Hv * GDN_DK + h * GDN_DK + tid;
                if (p.z) {
                    float tot = 0.f;
#pragma unroll
                    for (int i = 0; i < NSL * NW; i++) tot += (&ssq_w[0][0])[i];
                    p.out[o] = f2bf(o_s[tid] * rsqrtf(tot / (float)GDN_DK + p.eps) * nw * silu_f(zf[tid]));
                } else {
                    p.out[o] = f2bf(o_s[tid]);
                }
            }
        }
        bb = bb2;
        aa = aa2;
        Aexp = Aexp2;
        dtb = dtb2;
#pragma unroll
        for (int k = 0; k < KIT; k++) tp[k] = tp2[k];
    }
#undef DEC1_GATES
#undef DEC1_ISSUE
#undef DEC1_ITEM
}

/* Launch as a programmatic dependent of the stream's previous kernel (the kernels follow
 * the rules above) only with HS_GDN_PDL=1 and the backend's PDL on (hs_cuda_pdl): off by
 * default, as the whole model measured no gain from it at batch 1 (6.05 vs 6.04 ms,
 * bench/RESULTS.md). */
static int gdn_pdl_on(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("HS_GDN_PDL");
        on = e && atoi(e) > 0;
    }
    return on && hs_cuda_pdl(-1);
}
static void gdn_pdl_attr(cudaLaunchAttribute *a) {
    a->id = cudaLaunchAttributeProgrammaticStreamSerialization;
    a->val.programmaticStreamSerializationAllowed = gdn_pdl_on();
}

/* The launch of a cluster kernel: grid (r * nsplit, Hk, S) of NT threads, one cluster per
 * (k-head, sequence) spanning its r * nsplit blocks, PDL per gdn_pdl_attr. attr: 2 slots
 * that must outlive the launch. */
static void cluster_cfg(cudaLaunchConfig_t *cfg, cudaLaunchAttribute *attr, const gdn_dec_params &p, int S, int NT,
                        size_t smem, cudaStream_t stream) {
    *cfg = cudaLaunchConfig_t{};
    cfg->gridDim = dim3((unsigned)(p.r * p.nsplit), (unsigned)p.Hk, (unsigned)S);
    cfg->blockDim = dim3((unsigned)NT, 1, 1);
    cfg->dynamicSmemBytes = smem;
    cfg->stream = stream;
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = (unsigned)(p.r * p.nsplit);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    gdn_pdl_attr(&attr[1]);
    cfg->attrs = attr;
    cfg->numAttrs = 2;
}

template <int BV, int NT, typename ST>
static int launch_dec1_cluster(const gdn_dec_params &p, int S, cudaStream_t stream) {
    using SL = dec1_stage<BV, ST>;
    static bool attr_set = false;
    if (!attr_set) {
        HS_CUDA_TRY(cudaFuncSetAttribute(gdn_dec1_cluster<BV, NT, ST>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
        attr_set = true;
    }
    static int fits16 = -1; /* clusters of 9..16 blocks (non-portable): only where the device schedules them */
    cudaLaunchConfig_t cfg;
    cudaLaunchAttribute attr[2];
    cluster_cfg(&cfg, attr, p, S, NT, SL::SMALL, stream);
    if (p.r * p.nsplit > 8) {
        if (fits16 < 0) {
            cudaLaunchConfig_t c16 = cfg;
            cudaLaunchAttribute a16 = attr[0];
            a16.val.clusterDim.x = 16;
            c16.gridDim = dim3(16, 1, 1);
            c16.attrs = &a16;
            c16.numAttrs = 1;
            int n = 0;
            HS_CUDA_TRY(cudaOccupancyMaxActiveClusters(&n, gdn_dec1_cluster<BV, NT, ST>, &c16));
            fits16 = n > 0;
        }
        if (!fits16) return HS_ERR_UNSUPPORTED;
    }
    HS_CUDA_TRY(cudaLaunchKernelEx(&cfg, gdn_dec1_cluster<BV, NT, ST>, p));
    return HS_OK;
}

template <int BVI, int NT, typename ST, int STAGES>
static int launch_dec1_persist(const gdn_dec_params &p, cudaStream_t stream) {
    using SL = dec1_stage<BVI, ST, false>;
    const int smem = STAGES * SL::BYTES;
    static int blocks_per_sm = -1, n_sm = 0;
    if (blocks_per_sm < 0) {
        int dev, optin;
        HS_CUDA_TRY(cudaGetDevice(&dev));
        HS_CUDA_TRY(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, dev));
        HS_CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
        if (smem + 4096 > optin) {
            blocks_per_sm = 0;
        } else {
            HS_CUDA_TRY(cudaFuncSetAttribute(gdn_dec1_persist<BVI, NT, ST, STAGES>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
            HS_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                &blocks_per_sm, gdn_dec1_persist<BVI, NT, ST, STAGES>, NT, smem));
        }
    }
    if (blocks_per_sm <= 0) return HS_ERR_UNSUPPORTED;
    const int grid = p.n_groups < n_sm * blocks_per_sm ? p.n_groups : n_sm * blocks_per_sm;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)grid);
    cfg.blockDim = dim3(NT);
    cfg.dynamicSmemBytes = (size_t)smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    gdn_pdl_attr(&attr[0]);
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    HS_CUDA_TRY(cudaLaunchKernelEx(&cfg, gdn_dec1_persist<BVI, NT, ST, STAGES>, p));
    return HS_OK;
}

template <int BV, int NT, typename ST>
static int launch_cfg(const gdn_dec_params &p, int S, cudaStream_t stream) {
    static bool attr_set = false;
    if (!attr_set) {
        HS_CUDA_TRY(cudaFuncSetAttribute(gdn_decode_kernel<BV, NT, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)(BV * GDN_DK * sizeof(ST) + GDN_RECURRENT_MAX_T * BV * sizeof(float))));
        attr_set = true;
    }
    cudaLaunchConfig_t cfg;
    cudaLaunchAttribute attr[2];
    cluster_cfg(&cfg, attr, p, S, NT, (size_t)BV * GDN_DK * sizeof(ST) + (size_t)p.max_t * BV * sizeof(float), stream);
    HS_CUDA_TRY(cudaLaunchKernelEx(&cfg, gdn_decode_kernel<BV, NT, ST>, p));
    return HS_OK;
}

/* Block shapes (BV rows, NT threads): index 1..6; 0 is never a shape. */
static const int k_cfg_bv[8] = {0, 128, 64, 64, 32, 32, 16, 128};
static const int k_cfg_rpw[8] = {0, 8, 8, 4, 4, 8, 4, 16}; /* rows per warp */
template <typename ST>
static int launch_st(const gdn_dec_params &p, int S, int cfg, cudaStream_t stream) {
    switch (cfg) {
    case 1: return launch_cfg<128, 512, ST>(p, S, stream);
    case 2: return launch_cfg<64, 256, ST>(p, S, stream);
    case 3: return launch_cfg<64, 512, ST>(p, S, stream);
    case 4: return launch_cfg<32, 256, ST>(p, S, stream);
    case 5: return launch_cfg<32, 128, ST>(p, S, stream);
    case 6: return launch_cfg<16, 128, ST>(p, S, stream);
    case 7: return launch_cfg<128, 256, ST>(p, S, stream);
    default: return HS_ERR_INVALID;
    }
}

/* One-token kernel `cfg` (8..19, see gdn_decode_launch). */
static int launch_dec1(gdn_dec_params p, int S, int cfg, bool f32, int slice_rows, int dv, cudaStream_t s) {
    static const int bv_of[20] = {0, 0, 0, 0, 0, 0, 0, 0, 16, 32, 32, 64, 0, 0, 0, 0, 0, 0, 128, 64};
    static const int rpw_of[20] = {0, 0, 0, 0, 0, 0, 0, 0, 4, 8, 4, 8, 16, 16, 8, 16, 8, 8, 8, 4};
    if (cfg < 8 || cfg > 19) return HS_ERR_INVALID;
    if (slice_rows % rpw_of[cfg]) return HS_ERR_UNSUPPORTED; /* a warp's rows share a granule */
    if (bv_of[cfg]) {
        p.nsplit = dv / bv_of[cfg];
        if (p.r * p.nsplit > 16) return HS_ERR_UNSUPPORTED;
    } else {
        p.nsplit = 1;
    }
    switch (cfg) {
    case 8: return f32 ? launch_dec1_cluster<16, 128, float>(p, S, s) : launch_dec1_cluster<16, 128, bf16_t>(p, S, s);
    case 9: return f32 ? launch_dec1_cluster<32, 128, float>(p, S, s) : launch_dec1_cluster<32, 128, bf16_t>(p, S, s);
    case 10: return f32 ? launch_dec1_cluster<32, 256, float>(p, S, s) : launch_dec1_cluster<32, 256, bf16_t>(p, S, s);
    case 11: return f32 ? launch_dec1_cluster<64, 256, float>(p, S, s) : launch_dec1_cluster<64, 256, bf16_t>(p, S, s);
    case 12: return f32 ? launch_dec1_persist<128, 256, float, 2>(p, s) : launch_dec1_persist<128, 256, bf16_t, 2>(p, s);
    case 13: return f32 ? launch_dec1_persist<128, 256, float, 3>(p, s) : launch_dec1_persist<128, 256, bf16_t, 3>(p, s);
    case 14: return f32 ? launch_dec1_persist<64, 256, float, 2>(p, s) : launch_dec1_persist<64, 256, bf16_t, 2>(p, s);
    case 15: return f32 ? launch_dec1_persist<64, 128, float, 2>(p, s) : launch_dec1_persist<64, 128, bf16_t, 2>(p, s);
    case 16: return f32 ? launch_dec1_persist<32, 128, float, 2>(p, s) : launch_dec1_persist<32, 128, bf16_t, 2>(p, s);
    case 17: return f32 ? launch_dec1_persist<64, 256, float, 3>(p, s) : launch_dec1_persist<64, 256, bf16_t, 3>(p, s);
    case 18: return f32 ? launch_dec1_cluster<128, 512, float>(p, S, s) : launch_dec1_cluster<128, 512, bf16_t>(p, S, s);
    case 19: return f32 ? launch_dec1_cluster<64, 512, float>(p, S, s) : launch_dec1_cluster<64, 512, bf16_t>(p, S, s);
    default: return HS_ERR_INVALID;
    }
}

extern "C" int gdn_decode_launch(const void *qkv, const void *z, const void *b, const void *a, const void *conv_w,
                                 const float *A_log, const float *dt_bias, const float *norm_w,
                                 const int32_t *tok_start, const int32_t *n_past, int S, int max_t, int Hk, int Hv,
                                 int dk, int dv, float eps, const gdn_state_t *st, void *out, int cfg_override,
                                 int ld, void *stream) {
    if (S <= 0) return HS_OK;
    if (dk != GDN_DK || dv != GDN_DK || Hk <= 0 || Hv % Hk || max_t < 1 || max_t > GDN_RECURRENT_MAX_T || !st ||
        (st->ssm_dtype != HS_F32 && st->ssm_dtype != HS_BF16) || st->slice_rows <= 0 || dv % st->slice_rows)
        return HS_ERR_INVALID;
    if (st->slice_rows % 8) return HS_ERR_UNSUPPORTED; /* a warp's rows (4..16) must share a granule */
    const int conv_dim = 2 * Hk * dk + Hv * dv;
    if (ld < 0 || (ld > 0 && ld < conv_dim)) return HS_ERR_INVALID;
    gdn_dec_params p;
    p.ldx = ld ? ld : conv_dim;
    p.ldz = ld ? ld : Hv * dv;
    p.ldg = ld ? ld : Hv;
    /* 16-byte loads of the token's channels and z (cp.async) */
    if ((((uintptr_t)qkv | (uintptr_t)(z ? z : qkv)) & 15) || (p.ldx & 7) || (p.ldz & 7)) return HS_ERR_UNSUPPORTED;
    p.qkv = (const bf16_t *)qkv;
    p.z = (const bf16_t *)z;
    p.b = (const bf16_t *)b;
    p.a = (const bf16_t *)a;
    p.conv_w = (const bf16_t *)conv_w;
    p.A_log = A_log;
    p.dt_bias = dt_bias;
    p.norm_w = norm_w;
    p.tok_start = tok_start;
    p.n_past = n_past;
    p.out = (bf16_t *)out;
    p.Hk = Hk;
    p.Hv = Hv;
    p.r = Hv / Hk;
    p.conv_dim = conv_dim;
    p.max_t = max_t;
    p.eps = eps;
    p.pool = (char *)st->pool_base;
    p.page_bytes = st->page_bytes;
    p.state_pages = st->state_pages;
    p.E = st->n_state_pages;
    p.ssm_loc = st->ssm_loc;
    p.slice_rows = st->slice_rows;
    p.n_slices = dv / st->slice_rows;
    p.conv_page = st->conv_loc.page;
    p.conv_off = st->conv_loc.offset;
    p.n_groups = S * Hk;
    cudaStream_t s = (cudaStream_t)stream;
    const bool f32 = st->ssm_dtype == HS_F32;
    /* one token per sequence: the decode kernels (cfg 8..19; with GDN_DEC1_AUTO, also cfg 0) */
    int cfg1 = cfg_override >= 8 ? cfg_override : 0;
    if (max_t == 1 && !cfg_override && gdn_dec1_auto()) {
        /* from the H100 sweeps (bench/RESULTS.md, "GDN decode"): the cluster kernel up to 64
         * heads; above, the segment kernel. (The persistent one, cfg 12, had been the default
         * for a bf16 state from 1024 heads; in the model the segment kernel 128 x 256 is
         * 1.5-2.1% faster at 2048 and 4096 heads, in the bench they tie: session 9.)
         * Cluster shape (session 4, this kernel): 32 rows x 128 threads (4 blocks a head)
         * for an fp32 state or 64 heads, 0.1-0.3 us faster there than the session-3 rule
         * (about 64 blocks: 32 rows x 256 threads at 16 heads, 64 x 256 at 32, whole heads
         * at 64), which stays for bf16 up to 32 heads,
         * where a cluster of 16 blocks does not fit, and for PDL launches (with PDL the
         * session-3 shapes measured as fast or faster: 16/64 fp32 5.4 us vs 6.5) */
        const long heads = (long)S * Hv;
        int fallback = 0;
        if (heads <= 64) {
            const long per_head = 64 / heads; /* blocks per head for ~64 blocks */
            fallback = per_head >= 4 && p.r * 4 <= 8 ? 10 : per_head >= 2 && p.r * 2 <= 8 ? 11 : p.r <= 8 ? 18 : 0;
            cfg1 = !gdn_pdl_on() && (f32 || heads > 32) && p.r * 4 <= 16 ? 9 : fallback;
        }
        if (cfg1 && st->slice_rows % (cfg1 == 10 ? 4 : 8)) cfg1 = 0;
        if (cfg1) {
            const int rc = launch_dec1(p, S, cfg1, f32, st->slice_rows, dv, s);
            if (rc != HS_ERR_UNSUPPORTED || !fallback || fallback == cfg1) return rc;
            return launch_dec1(p, S, fallback, f32, st->slice_rows, dv, s);
        }
    }
    if (max_t == 1 && cfg1) return launch_dec1(p, S, cfg1, f32, st->slice_rows, dv, s);
    if (cfg_override >= 8) return HS_ERR_INVALID; /* (8..19 with more than one token) */
    if (p.r > 8) return HS_ERR_UNSUPPORTED;
    int cfg;
    if (cfg_override) {
        if (cfg_override < 1 || cfg_override > 7) return HS_ERR_INVALID; /* 8..19: one token only */
        cfg = cfg_override;
    } else {
        const long heads = (long)S * Hv;
        /* measured on H100 (bench/RESULTS.md): whole-head blocks win from 128 heads on;
         * 256 threads (16 rows per warp) when the grid is large or the state bf16 (fp32: from
         * 2048 heads, where in the model 128 x 256 beat 128 x 512 by 1.3-2.1% at 2048, 3584
         * and 4096 heads, session 9; the bench had put the switch at 4096) */
        cfg = heads >= 2048 || (st->ssm_dtype == HS_BF16 && heads >= 512) ? 7 : heads >= 128 ? 1 : 3;
    }
    while (p.r * (dv / k_cfg_bv[cfg]) > 8) cfg = cfg == 6 ? 4 : cfg == 4 || cfg == 5 ? 3 : 1; /* cluster <= 8 */
    if (st->slice_rows % k_cfg_rpw[cfg]) cfg = cfg == 7 ? 1 : 3; /* a warp's rows must share a granule */
    p.nsplit = dv / k_cfg_bv[cfg];
    if (p.r * p.nsplit > 8) return HS_ERR_UNSUPPORTED;
    return st->ssm_dtype == HS_F32 ? launch_st<float>(p, S, cfg, s) : launch_st<bf16_t>(p, S, cfg, s);
}
