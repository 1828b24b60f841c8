/*
 * gdn_decode: fused Gated DeltaNet decode step (model-spec §2.9), recurrent form,
 * paged SSM state updated in place. Also serves short segments (<= 64 tokens per
 * sequence: MTP verify, tiny prefills); the state stays on chip across the tokens.
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

#include "cuda_common.cuh"
#include "cuda_ops.h"

namespace cg = cooperative_groups;

#define GDN_DK 128
#define GDN_KC 4

struct gdn_dec_params {
    const bf16_t *qkv, *z, *b, *a, *conv_w;
    const float *A_log, *dt_bias, *norm_w;
    const int32_t *tok_start, *n_past;
    bf16_t *out;
    int Hk, Hv, r, nsplit, conv_dim, max_t;
    float eps;
    char *pool;
    size_t page_bytes;
    const int32_t *state_pages;
    int E;
    const sm_loc_t *ssm_loc;
    int slice_rows, n_slices;
    int conv_page, conv_off;
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

__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory"); }

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
    const unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

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

    /* 1. issue every independent load before the first use: the state slice (async
     * copy into shared memory, no registers held while in flight), this thread's conv
     * channels (taps, window, token-0 input) and the gate inputs */
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

    bf16_t *conv = reinterpret_cast<bf16_t *>(p.pool + (size_t)pages[p.conv_page] * p.page_bytes + p.conv_off);
    for (int c = tid; c < NC; c += NT) {
        const int ch = chan_of(c, g, h, v0, kd);
        c_w[c] = *reinterpret_cast<const uint2 *>(p.conv_w + (size_t)ch * GDN_KC);
        const bf16_t zero = __float2bfloat16_rn(0.f);
        c_win[0][c] = has ? conv[ch] : zero;
        c_win[1][c] = has ? conv[(size_t)p.conv_dim + ch] : zero;
        c_win[2][c] = has ? conv[(size_t)2 * p.conv_dim + ch] : zero;
        c_x[c] = nt > 0 ? p.qkv[(size_t)t0 * p.conv_dim + ch] : zero; /* token 0's input, with the window */
    }
    float bb = nt > 0 ? bf2f(p.b[(size_t)t0 * p.Hv + h]) : 0.f, aa = nt > 0 ? bf2f(p.a[(size_t)t0 * p.Hv + h]) : 0.f;
    const float Aexp = expf(p.A_log[h]), dtb = p.dt_bias[h];
    const float qscale = rsqrtf((float)GDN_DK);

    /* 2. tokens */
    for (int it = 0; it < nt; it++) {
        const size_t t = (size_t)t0 + it;
        if (it > 0) __syncthreads(); /* previous token's readers of qs/ks/vs are done */
        if (it > 0) {
            bb = bf2f(p.b[t * p.Hv + h]);
            aa = bf2f(p.a[t * p.Hv + h]);
        }
        for (int c = tid; c < NC; c += NT) {
            const int ch = chan_of(c, g, h, v0, kd);
            const bf16_t xb = it == 0 ? c_x[c] : p.qkv[t * p.conv_dim + ch];
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
            const float zz = bf2f(p.z[t * HD + h * GDN_DK + v0 + v]);
            p.out[t * HD + h * GDN_DK + v0 + v] = f2bf(o_s[e] * rstd * p.norm_w[v0 + v] * silu_f(zz));
        }
    } else {
        for (int e = tid; e < nt * BV; e += NT) {
            const int it = e / BV, v = e % BV;
            p.out[((size_t)t0 + it) * HD + h * GDN_DK + v0 + v] = f2bf(o_s[e]);
        }
    }
}

template <int BV, int NT, typename ST>
static int launch_cfg(const gdn_dec_params &p, int S, cudaStream_t stream) {
    static bool attr_set = false;
    if (!attr_set) {
        HS_CUDA_TRY(cudaFuncSetAttribute(gdn_decode_kernel<BV, NT, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)(BV * GDN_DK * sizeof(ST) + GDN_RECURRENT_MAX_T * BV * sizeof(float))));
        attr_set = true;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)(p.r * p.nsplit), (unsigned)p.Hk, (unsigned)S);
    cfg.blockDim = dim3(NT, 1, 1);
    cfg.dynamicSmemBytes = (size_t)BV * GDN_DK * sizeof(ST) + (size_t)p.max_t * BV * sizeof(float);
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = (unsigned)(p.r * p.nsplit);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
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

extern "C" int gdn_decode_launch(const void *qkv, const void *z, const void *b, const void *a, const void *conv_w,
                                 const float *A_log, const float *dt_bias, const float *norm_w,
                                 const int32_t *tok_start, const int32_t *n_past, int S, int max_t, int Hk, int Hv,
                                 int dk, int dv, float eps, const gdn_state_t *st, void *out, int cfg_override,
                                 void *stream) {
    if (S <= 0) return HS_OK;
    if (dk != GDN_DK || dv != GDN_DK || Hk <= 0 || Hv % Hk || max_t < 1 || max_t > GDN_RECURRENT_MAX_T || !st ||
        (st->ssm_dtype != HS_F32 && st->ssm_dtype != HS_BF16) || st->slice_rows <= 0 || dv % st->slice_rows)
        return HS_ERR_INVALID;
    if (st->slice_rows % 8) return HS_ERR_UNSUPPORTED; /* a warp's rows (4..16) must share a granule */
    gdn_dec_params p;
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
    p.conv_dim = 2 * Hk * dk + Hv * dv;
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
    if (p.r > 8) return HS_ERR_UNSUPPORTED;
    int cfg;
    if (cfg_override) {
        if (cfg_override < 1 || cfg_override > 7) return HS_ERR_INVALID;
        cfg = cfg_override;
    } else {
        const long heads = (long)S * Hv;
        /* measured on H100 (bench/RESULTS.md): whole-head blocks win from 128 heads on;
         * 256 threads (16 rows per warp) when the grid is large or the state bf16 */
        cfg = heads >= 4096 || (st->ssm_dtype == HS_BF16 && heads >= 512) ? 7 : heads >= 128 ? 1 : 3;
    }
    while (p.r * (dv / k_cfg_bv[cfg]) > 8) cfg = cfg == 6 ? 4 : cfg == 4 || cfg == 5 ? 3 : 1; /* cluster <= 8 */
    if (st->slice_rows % k_cfg_rpw[cfg]) cfg = cfg == 7 ? 1 : 3; /* a warp's rows must share a granule */
    p.nsplit = dv / k_cfg_bv[cfg];
    if (p.r * p.nsplit > 8) return HS_ERR_UNSUPPORTED;
    cudaStream_t s = (cudaStream_t)stream;
    return st->ssm_dtype == HS_F32 ? launch_st<float>(p, S, cfg, s) : launch_st<bf16_t>(p, S, cfg, s);
}
