/*
 * gemv: bf16 GEMV / small-M GEMM for the decode projections (gemv.h), out = x @ W^T.
 *
 * Why: at decode the projections are [M <= 16, K] x [N, K]^T products whose time is the
 * weight bytes over the HBM read bandwidth; cuBLAS picks kernels that reach 0.9-2.1 TB/s
 * there. This kernel streams each weight row exactly once:
 *   - a block of 8 warps; each warp owns R consecutive rows (a "row group" of the block is
 *     8*R rows); lane l reads 16 bytes (8 bf16) of each row at k = 8*l + 256*j, so one
 *     warp instruction covers 512 contiguous bytes of a row; U such 16-byte loads per row
 *     are issued before any use (R*U loads in flight per lane), with
 *     ld.global.nc.L1::no_allocate (weights are read once: keep them out of L1) under an
 *     L2 evict-first cache policy (ld_stream: the stream does not push out prefetched rows);
 *   - x for all M rows sits in shared memory as bf16 (staged once per block when M*K*2
 *     fits the variant's cap, else tile by tile over K); a lane reads the same 16 bytes
 *     of x for its R rows, so shared-memory traffic is M/R times the weight bytes;
 *   - fp32 accumulators acc[M][R] per lane, a warp butterfly reduction at the end of the
 *     row group, bf16 or fp32 stores;
 *   - the grid is the kernel's resident capacity (occupancy x SMs) or fewer, blocks loop
 *     over row groups; a grouped launch concatenates the row groups of up to
 *     GEMV_MAX_GROUP weights (each padded to whole groups) that read the same x.
 *   - launched as a programmatic dependent (cuda_common.cuh, PDL): before pdl_wait() each
 *     block asks L2 to prefetch the first `pf` bytes of every row of its first row group
 *     (cp.async.bulk.prefetch: no registers, no completion to wait for; the weights never
 *     depend on the previous kernel), so the weight stream starts during the previous
 *     kernel's tail and the small kernels between projections, and the x staging that
 *     follows the wait overlaps it. The launcher sizes pf so that one launch prefetches
 *     about HS_GEMV_PF_MB (default 48) MB in all: with the stream marked evict-first the
 *     prefetched rows survive until read (16 MB was the best budget before the mark).
 *   - the trigger that lets the next kernel launch (pdl_trigger) comes late: in the block's
 *     last row group, once the columns left would stream only about HS_GEMV_TAIL_MB
 *     (default 3) MB over the whole grid (p.trig_v). Triggered at the start instead, the
 *     next GEMV's blocks became resident on the free slots early and prefetched rows that
 *     this launch's stream then evicted from L2 before they were used (bench_gemv: back to
 *     back launches 2-4 us slower than without PDL). End to end at batch 1 (H100, one
 *     call): 16 MB left 6.20 ms per token, 8 MB 6.14, 3 MB 6.04.
 * M is rounded up to a power of two MT (template) for the accumulator array; rows of x
 * past M are zero in shared memory and their outputs are not written.
 * k_gemv_mma is a tensor-core variant of the same stream (below): the CUDA-core kernel
 * needs 8 FMAs per weight pair per token and becomes issue-bound from M ~ 4.
 */
#include <cuda_runtime.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
#include "gemv.h"

#define GEMV_WARPS 8
#define GEMV_THREADS (GEMV_WARPS * 32)

struct gemv_seg_dev {
    const uint4 *w; /* [N][K/8] */
    void *out;      /* [M][N], rows ld apart */
    int N, out_f32;
    int ld;         /* the output's row stride in elements (>= N) */
    int g0;         /* first row group of this weight */
};

struct gemv_params {
    const uint4 *x; /* [M][K/8] */
    int M, K;
    int kt;         /* K tile staged in shared memory (elements, multiple of 8) */
    int n_groups, n_segs;
    unsigned pf;    /* bytes of each row of the block's first group to prefetch into L2 (16 | pf, pf <= 2K) */
    int trig_v;     /* pdl_trigger once the block's last group reaches this 16-byte column vector */
    gemv_seg_dev seg[GEMV_MAX_GROUP];
};

/* A 16-byte streaming load: read-only path, not kept in L1, and marked evict-first in L2
 * (cache policy `pol` from evict_first_policy()): the weights are read once per step, and
 * lines so marked are the first to go when a set needs room, so rows that the next
 * projection prefetched (normal priority, prefetch_l2) stay until they are read. Measured
 * in one H100 call (bench/RESULTS.md, session 5, batch 1): unmarked with 16 MB of prefetch
 * 6.02 ms; marked 6.01 (16 MB), 5.98 (24), 5.90 (32), 5.87 (48), 5.89 (64). */
__device__ __forceinline__ uint4 ld_stream(const uint4 *p, uint64_t pol) {
    uint4 r;
    asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0, %1, %2, %3}, [%4], %5;"
        : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
        : "l"(p), "l"(pol));
    return r;
}
__device__ __forceinline__ uint64_t evict_first_policy() {
    uint64_t pol;
    asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(pol));
    return pol;
}

/* Ask L2 to fetch [p, p + bytes) (16-byte aligned, 16 | bytes); nothing to wait for. */
__device__ __forceinline__ void prefetch_l2(const void *p, unsigned bytes) {
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
}

/* The segment that row group g belongs to. */
__device__ __forceinline__ const gemv_seg_dev &seg_of(const gemv_params &p, int g) {
    int k = 0;
#pragma unroll
    for (int i = 1; i < GEMV_MAX_GROUP; i++)
        if (i < p.n_segs && g >= p.seg[i].g0) k = i;
    return p.seg[k];
}

/* Before pdl_wait(): thread t < rows_per_group prefetches the first p.pf bytes of row t of
 * row group g (rows past the weight's end are skipped). */
__device__ __forceinline__ void prefetch_group(const gemv_params &p, int g, int rows_per_group) {
    if (p.pf == 0 || g >= p.n_groups || (int)threadIdx.x >= rows_per_group) return;
    const gemv_seg_dev &sg = seg_of(p, g);
    const int row = (g - sg.g0) * rows_per_group + (int)threadIdx.x;
    if (row < sg.N) prefetch_l2(sg.w + (size_t)row * (p.K >> 3), p.pf);
}

__device__ __forceinline__ float dot2(uint32_t w, uint32_t x, float acc) {
    const float2 a = bf2x2_to_f2(w), b = bf2x2_to_f2(x);
    return fmaf(a.y, b.y, fmaf(a.x, b.x, acc));
}
__device__ __forceinline__ float dot8(const uint4 w, const uint4 x, float acc) {
    acc = dot2(w.x, x.x, acc);
    acc = dot2(w.y, x.y, acc);
    acc = dot2(w.z, x.z, acc);
    return dot2(w.w, x.w, acc);
}

/* xs[m][0, ktv) = x[m][v0, v0 + nv) (16-byte vectors), zero past nv and for m >= M. */
template <int MT>
__device__ __forceinline__ void stage_x(uint4 *xs, const gemv_params &p, int v0, int nv, int ktv) {
    const int Kv = p.K >> 3;
    for (int i = threadIdx.x; i < MT * ktv; i += GEMV_THREADS) {
        const int m = i / ktv, v = i - m * ktv;
        uint4 val = make_uint4(0u, 0u, 0u, 0u);
        if (m < p.M && v < nv) val = __ldg(p.x + (size_t)m * Kv + v0 + v);
        xs[i] = val;
    }
}

template <int MT, int R, int U>
__global__ void __launch_bounds__(GEMV_THREADS) k_gemv(const __grid_constant__ gemv_params p) {
    extern __shared__ uint4 xs[]; /* [MT][kt/8] */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int Kv = p.K >> 3, ktv = p.kt >> 3;
    const bool once = ktv >= Kv;
    prefetch_group(p, blockIdx.x, GEMV_WARPS * R);
    const uint64_t pol = evict_first_policy();
    pdl_wait(); /* x comes from the previous kernel; out may still be read by an earlier one */
    if (once) {
        stage_x<MT>(xs, p, 0, Kv, ktv);
        __syncthreads();
    }
    for (int g = blockIdx.x; g < p.n_groups; g += gridDim.x) {
        /* the block's last group: the trigger column (never, elsewhere) */
        const int trig = g + (int)gridDim.x >= p.n_groups ? p.trig_v : INT_MAX;
        gemv_seg_dev sg = p.seg[0];
#pragma unroll
        for (int i = 1; i < GEMV_MAX_GROUP; i++)
            if (i < p.n_segs && g >= p.seg[i].g0) sg = p.seg[i];
        const int row0 = (g - sg.g0) * (GEMV_WARPS * R) + warp * R;
        const uint4 *wr[R];
#pragma unroll
        for (int r = 0; r < R; r++) wr[r] = sg.w + (size_t)min(row0 + r, sg.N - 1) * Kv;
        float acc[MT][R];
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int r = 0; r < R; r++) acc[m][r] = 0.f;

        for (int v0 = 0; v0 < Kv; v0 += ktv) {
            const int nv = min(ktv, Kv - v0);
            if (!once) {
                __syncthreads(); /* every warp is done with the previous tile */
                stage_x<MT>(xs, p, v0, nv, ktv);
                __syncthreads();
            }
            int v = lane;
            for (; v + 32 * (U - 1) < nv; v += 32 * U) {
                if (v0 + v - lane >= trig) pdl_trigger(); /* repeated: no effect after the first */
                uint4 w[U][R];
#pragma unroll
                for (int u = 0; u < U; u++)
#pragma unroll
                    for (int r = 0; r < R; r++) w[u][r] = ld_stream(wr[r] + v0 + v + 32 * u, pol);
#pragma unroll
                for (int u = 0; u < U; u++)
#pragma unroll
                    for (int m = 0; m < MT; m++) {
                        const uint4 xv = xs[m * ktv + v + 32 * u];
#pragma unroll
                        for (int r = 0; r < R; r++) acc[m][r] = dot8(w[u][r], xv, acc[m][r]);
                    }
            }
            for (; v < nv; v += 32) {
                uint4 w[R];
#pragma unroll
                for (int r = 0; r < R; r++) w[r] = ld_stream(wr[r] + v0 + v, pol);
#pragma unroll
                for (int m = 0; m < MT; m++) {
                    const uint4 xv = xs[m * ktv + v];
#pragma unroll
                    for (int r = 0; r < R; r++) acc[m][r] = dot8(w[r], xv, acc[m][r]);
                }
            }
        }
        if (trig != INT_MAX) pdl_trigger(); /* a trigger column past the loop */

#pragma unroll
        for (int m = 0; m < MT; m++) {
            if (m >= p.M) break;
#pragma unroll
            for (int r = 0; r < R; r++) {
                const float s = warp_sum(acc[m][r]);
                const int row = row0 + r;
                if (lane == ((m * R + r) & 31) && row < sg.N) {
                    if (sg.out_f32)
                        reinterpret_cast<float *>(sg.out)[(size_t)m * sg.ld + row] = s;
                    else
                        reinterpret_cast<bf16_t *>(sg.out)[(size_t)m * sg.ld + row] = f2bf(s);
                }
            }
        }
    }
}

/* ---- tensor-core variant ------------------------------------------------------------ */

/* d += A (16x16 bf16, row) * B (16x8 bf16, col), fp32 accumulate: cuda_common.cuh's
 * mma_16816 as a non-volatile asm, which the compiler may schedule among the loads (the
 * form this kernel was measured with; the shared one is volatile, as the attention, GDN
 * prefill and MoE kernels were measured with). */
__device__ __forceinline__ void mma_16816_nv(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                          uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* One block of 8 warps per 16-row tile of W; warp w takes the k-steps (32 columns each)
 * w, w + 8, ... and the warps' partial sums meet in shared memory at the end. Lane
 * (g = lane/4, c = lane%4) loads 16 bytes of rows g and g+8 at columns 8c..8c+7 of the
 * step, and 16 bytes of x for token g (and g+8 when NT = 2) at the same columns. The dot
 * product does not care in which order k runs, so those registers are used as the
 * m16n8k16 fragments directly: A = {w_g.x, w_g8.x, w_g.y, w_g8.y} against B = {x.x, x.y}
 * (columns 8c+0..3 of the step), then the .z/.w halves (columns 8c+4..7). Tokens past
 * M read a clamped row and are multiplied by zero. Accumulator lane (g, c) holds rows g,
 * g+8 x tokens 2c, 2c+1 (+8 per n-tile). */
template <int NT, int U>
__global__ void __launch_bounds__(GEMV_THREADS) k_gemv_mma(const __grid_constant__ gemv_params p) {
    __shared__ float4 red[GEMV_WARPS][NT][32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    const int tile = blockIdx.x;
    prefetch_group(p, tile, 16);
    const uint64_t pol = evict_first_policy();
    pdl_wait(); /* x comes from the previous kernel; out may still be read by an earlier one */
    gemv_seg_dev sg = p.seg[0];
#pragma unroll
    for (int i = 1; i < GEMV_MAX_GROUP; i++)
        if (i < p.n_segs && tile >= p.seg[i].g0) sg = p.seg[i];
    const int row0 = (tile - sg.g0) * 16;
    const int Kv = p.K >> 3;
    const uint4 *w0 = sg.w + (size_t)min(row0 + g, sg.N - 1) * Kv;
    const uint4 *w8 = sg.w + (size_t)min(row0 + g + 8, sg.N - 1) * Kv;
    const uint4 *xr[NT];
    bool has[NT];
#pragma unroll
    for (int n = 0; n < NT; n++) {
        has[n] = g + 8 * n < p.M;
        xr[n] = p.x + (size_t)min(g + 8 * n, p.M - 1) * Kv;
    }
    float d[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) d[n][0] = d[n][1] = d[n][2] = d[n][3] = 0.f;
    const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
    const int nsteps = (Kv + 3) >> 2;
    int s = warp;
    for (; s + GEMV_WARPS * (U - 1) < nsteps; s += GEMV_WARPS * U) {
        if (4 * s >= p.trig_v) pdl_trigger(); /* repeated: no effect after the first */
        uint4 a[U], b[U], xv[U][NT];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int v = (s + GEMV_WARPS * u) * 4 + c, vc = min(v, Kv - 1);
            a[u] = ld_stream(w0 + vc, pol);
            b[u] = ld_stream(w8 + vc, pol);
#pragma unroll
            for (int n = 0; n < NT; n++) {
                xv[u][n] = __ldg(xr[n] + vc);
                if (!has[n] || v >= Kv) xv[u][n] = zero;
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int n = 0; n < NT; n++) {
                mma_16816_nv(d[n], a[u].x, b[u].x, a[u].y, b[u].y, xv[u][n].x, xv[u][n].y);
                mma_16816_nv(d[n], a[u].z, b[u].z, a[u].w, b[u].w, xv[u][n].z, xv[u][n].w);
            }
    }
    for (; s < nsteps; s += GEMV_WARPS) {
        const int v = s * 4 + c, vc = min(v, Kv - 1);
        const uint4 a = ld_stream(w0 + vc, pol), b = ld_stream(w8 + vc, pol);
#pragma unroll
        for (int n = 0; n < NT; n++) {
            uint4 xv = __ldg(xr[n] + vc);
            if (!has[n] || v >= Kv) xv = zero;
            mma_16816_nv(d[n], a.x, b.x, a.y, b.y, xv.x, xv.y);
            mma_16816_nv(d[n], a.z, b.z, a.w, b.w, xv.z, xv.w);
        }
    }
    pdl_trigger(); /* a trigger column past the loop */
#pragma unroll
    for (int n = 0; n < NT; n++) red[warp][n][lane] = make_float4(d[n][0], d[n][1], d[n][2], d[n][3]);
    __syncthreads();
    for (int t = threadIdx.x; t < NT * 128; t += GEMV_THREADS) {
        const int n = t >> 7, ln = (t >> 2) & 31, i = t & 3;
        float sum = 0.f;
#pragma unroll
        for (int w = 0; w < GEMV_WARPS; w++) sum += reinterpret_cast<const float *>(&red[w][n][ln])[i];
        const int row = row0 + (ln >> 2) + 8 * (i >> 1), tok = 8 * n + 2 * (ln & 3) + (i & 1);
        if (tok < p.M && row < sg.N) {
            if (sg.out_f32)
                reinterpret_cast<float *>(sg.out)[(size_t)tok * sg.ld + row] = sum;
            else
                reinterpret_cast<bf16_t *>(sg.out)[(size_t)tok * sg.ld + row] = f2bf(sum);
        }
    }
}

/* ---- host side ------------------------------------------------------------------- */

extern "C" int hs_cuda_pdl(int set) {
    static int on = -1; /* the backend has one host thread */
    if (set >= 0) on = set != 0;
    if (on < 0) {
        const char *v = getenv("HS_CUDA_PDL");
        on = !(v && strcmp(v, "0") == 0);
    }
    return on;
}

/* A size in MB from the environment variable `name` (negative: 0), else `def`; in bytes. */
static size_t env_mb(const char *name, long def) {
    const char *v = getenv(name);
    const long mb = v ? atol(v) : def;
    return mb > 0 ? (size_t)mb << 20 : 0;
}

/* Bytes one launch prefetches into L2 before its pdl_wait (HS_GEMV_PF_MB, default 48 MB;
 * 0 turns the prefetch off). */
static size_t pf_budget(void) {
    static size_t b = SIZE_MAX;
    if (b == SIZE_MAX) b = env_mb("HS_GEMV_PF_MB", 48);
    return b;
}

/* Bytes the launch has left to stream when it lets the next kernel launch
 * (HS_GEMV_TAIL_MB, default 3). */
static size_t tail_budget(void) {
    static size_t b = SIZE_MAX;
    if (b == SIZE_MAX) b = env_mb("HS_GEMV_TAIL_MB", 3);
    return b;
}

/* The trigger column (16-byte vectors) of the blocks' last groups: `blocks` resident
 * blocks of rows_per_group rows each have about the tail budget left past it. */
static int trig_vec(int K, int blocks, int rows_per_group) {
    const long long left = (long long)(tail_budget() / ((size_t)blocks * (size_t)rows_per_group * 16));
    const long long t = (long long)(K / 8) - left;
    return t > 0 ? (int)t : 0;
}

/* Per-row prefetch of the first row group of each of `blocks` resident blocks: the
 * budget spread over blocks * rows_per_group rows, 16-byte multiple, at most the row. */
static unsigned pf_bytes(int K, int blocks, int rows_per_group) {
    size_t b = pf_budget() / ((size_t)blocks * (size_t)rows_per_group) / 16 * 16;
    if (b > (size_t)K * 2) b = (size_t)K * 2;
    return (unsigned)b;
}

typedef void (*gemv_kfn)(const gemv_params);

typedef struct {
    int mma;        /* 1: tensor-core kernel (k_gemv_mma), 0: CUDA-core kernel (k_gemv) */
    int R, U, cap_kb;
    const char *name;
} gemv_cfg_t;

/* Variants. CUDA-core: rows per warp R, 16-byte loads in flight per row U, shared-memory
 * cap for x. Tensor-core: U k-steps in flight (2U weight loads per lane). */
static const gemv_cfg_t CFGS[] = {
    {0, 2, 4, 48, "R2U4s48"}, {0, 1, 4, 48, "R1U4s48"}, {0, 2, 2, 48, "R2U2s48"},  {0, 4, 2, 48, "R4U2s48"},
    {0, 2, 4, 100, "R2U4s100"}, {0, 4, 2, 100, "R4U2s100"}, {0, 1, 8, 48, "R1U8s48"}, {0, 4, 4, 48, "R4U4s48"},
    {1, 0, 2, 0, "mmaU2"},    {1, 0, 4, 0, "mmaU4"},    {1, 0, 8, 0, "mmaU8"},
};
#define GEMV_N_CFGS ((int)(sizeof CFGS / sizeof CFGS[0]))

template <int MT>
static gemv_kfn kernel_mt(int R, int U) {
    if (R == 1 && U == 4) return k_gemv<MT, 1, 4>;
    if (R == 2 && U == 2) return k_gemv<MT, 2, 2>;
    if (R == 2 && U == 4) return k_gemv<MT, 2, 4>;
    if (R == 4 && U == 2) return k_gemv<MT, 4, 2>;
    if (R == 1 && U == 8) return k_gemv<MT, 1, 8>;
    if (R == 4 && U == 4) return k_gemv<MT, 4, 4>;
    return nullptr;
}
static gemv_kfn kernel_mma(int M, int U) {
    const bool two = M > 8;
    if (U == 2) return two ? k_gemv_mma<2, 2> : k_gemv_mma<1, 2>;
    if (U == 4) return two ? k_gemv_mma<2, 4> : k_gemv_mma<1, 4>;
    if (U == 8) return two ? k_gemv_mma<2, 8> : k_gemv_mma<1, 8>;
    return nullptr;
}
static gemv_kfn kernel_for(int MT, int R, int U) {
    switch (MT) {
    case 1: return kernel_mt<1>(R, U);
    case 2: return kernel_mt<2>(R, U);
    case 4: return kernel_mt<4>(R, U);
    case 8: return kernel_mt<8>(R, U);
    case 16: return kernel_mt<16>(R, U);
    default: return nullptr;
    }
}

/* Resident blocks per SM of (kernel, shared bytes), computed once (the backend has one
 * host thread; a race would only compute the same value twice). */
#define OCC_CACHE 128
static struct {
    gemv_kfn fn;
    int smem, blocks;
} g_occ[OCC_CACHE];
static int g_n_occ;

static int occupancy(gemv_kfn fn, int smem, int *blocks) {
    for (int i = 0; i < g_n_occ; i++)
        if (g_occ[i].fn == fn && g_occ[i].smem == smem) {
            *blocks = g_occ[i].blocks;
            return HS_OK;
        }
    if (smem > 48 * 1024) HS_CUDA_TRY(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    int b = 0;
    HS_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, fn, GEMV_THREADS, (size_t)smem));
    if (g_n_occ < OCC_CACHE) g_occ[g_n_occ].fn = fn, g_occ[g_n_occ].smem = smem, g_occ[g_n_occ++].blocks = b;
    *blocks = b;
    return HS_OK;
}

static int n_sms(void) {
    static int dev_cached = -1, sms = 0;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return 0;
    if (dev != dev_cached) {
        if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) return 0;
        dev_cached = dev;
    }
    return sms;
}

/* The heuristic variant, from bench_gemv's sweep on an H100 (bench/RESULTS.md "GEMV",
 * 2026-11-26, the lead's call): M = 1: R2U2 (R1U8 for N <= 1024 rows in all); M = 2:
 * R1U8; M = 3..16: the tensor-core kernel mmaU4 (e.g. GDN in_proj grouped at M = 8:
 * 38.0 us against 45.4 for R2U4s100 and 52.4 for cuBLAS), except the lm_head's 248k
 * rows at M = 3..4, where the CUDA-core R2U4 stays ahead (680 against 697 us). */
static int pick_cfg(int M, int rows) {
    if (M == 1) return rows <= 1024 ? 7 : 3;
    if (M == 2) return 7;
    if (rows >= 65536) return 1;
    return 10; /* mmaU4 */
}

static int launch(const void *x, int M, int K, const gemv_seg_t *segs, int n_segs, int cfg, cudaStream_t st) {
    if (!x || M < 1 || M > GEMV_MAX_M || K < 8 || K % 8 != 0 || n_segs < 1 || n_segs > GEMV_MAX_GROUP ||
        ((uintptr_t)x & 15) != 0)
        return HS_ERR_INVALID;
    if (cfg == 0) {
        int rows = 0;
        for (int i = 0; i < n_segs; i++) rows += segs[i].N;
        cfg = pick_cfg(M, rows);
    }
    if (cfg < 1 || cfg > GEMV_N_CFGS) return HS_ERR_INVALID;
    const gemv_cfg_t *c = &CFGS[cfg - 1];
    const int MT = M <= 1 ? 1 : M <= 2 ? 2 : M <= 4 ? 4 : M <= 8 ? 8 : 16;
    gemv_kfn fn = c->mma ? kernel_mma(M, c->U) : kernel_for(MT, c->R, c->U);
    if (!fn) return HS_ERR_INVALID;

    gemv_params p;
    memset(&p, 0, sizeof p);
    p.x = (const uint4 *)x;
    p.M = M;
    p.K = K;
    p.n_segs = n_segs;
    const int rows_per_group = c->mma ? 16 : GEMV_WARPS * c->R;
    int groups = 0;
    for (int i = 0; i < n_segs; i++) {
        const gemv_seg_t *s = &segs[i];
        if (!s->w || !s->out || s->N < 1 || ((uintptr_t)s->w & 15) != 0 || (s->ld != 0 && s->ld < s->N))
            return HS_ERR_INVALID;
        p.seg[i].w = (const uint4 *)s->w;
        p.seg[i].out = s->out;
        p.seg[i].N = s->N;
        p.seg[i].ld = s->ld ? s->ld : s->N;
        p.seg[i].out_f32 = s->out_f32 != 0;
        p.seg[i].g0 = groups;
        groups += (s->N + rows_per_group - 1) / rows_per_group;
    }
    p.n_groups = groups;

    if (c->mma) { /* one block per 16-row tile, x read through L1 */
        p.kt = K;
        const int sms = n_sms();
        if (sms < 1) return HS_ERR_INVALID;
        /* the first wave: at most 8 blocks of 256 threads per SM */
        p.pf = pf_bytes(K, groups < 8 * sms ? groups : 8 * sms, 16);
        p.trig_v = trig_vec(K, groups < 8 * sms ? groups : 8 * sms, 16);
        HS_CUDA_TRY(launch_pdl(fn, dim3(groups), dim3(GEMV_THREADS), 0, st, p));
        return HS_OK;
    }

    /* K tile: all of K when MT*K bf16 fit the cap, else equal tiles (multiples of a
     * warp's 256 elements where the cap allows). */
    const int kt_max = c->cap_kb * 1024 / (2 * MT) / 256 * 256;
    const int n_tiles = (K + kt_max - 1) / kt_max;
    int kt = K;
    if (n_tiles > 1) {
        const int each = (K + n_tiles - 1) / n_tiles;
        kt = (each + 255) / 256 * 256;
        if (kt > kt_max) kt = (each + 7) / 8 * 8;
    }
    p.kt = kt;
    const int smem = MT * kt * 2;

    int occ = 0;
    int rc = occupancy(fn, smem, &occ);
    if (rc != HS_OK) return rc;
    const int sms = n_sms();
    if (occ < 1 || sms < 1) return HS_ERR_INVALID;
    int grid = occ * sms;
    if (grid > groups) grid = groups;
    p.pf = pf_bytes(K, grid, rows_per_group);
    p.trig_v = trig_vec(K, grid, rows_per_group);
    HS_CUDA_TRY(launch_pdl(fn, dim3(grid), dim3(GEMV_THREADS), (size_t)smem, st, p));
    return HS_OK;
}

extern "C" int gemv_launch(const void *x, int M, int K, const void *w, int N, void *out, int out_f32, int cfg,
                           void *stream) {
    gemv_seg_t s = {w, N, out, out_f32, 0};
    return launch(x, M, K, &s, 1, cfg, (cudaStream_t)stream);
}

extern "C" int gemv_grouped_launch(const void *x, int M, int K, const gemv_seg_t *segs, int n_segs, int cfg,
                                   void *stream) {
    if (!segs) return HS_ERR_INVALID;
    return launch(x, M, K, segs, n_segs, cfg, (cudaStream_t)stream);
}

extern "C" int gemv_n_cfgs(void) { return GEMV_N_CFGS; }

extern "C" const char *gemv_cfg_name(int cfg) {
    if (cfg == 0) return "auto";
    return cfg >= 1 && cfg <= GEMV_N_CFGS ? CFGS[cfg - 1].name : "?";
}

/* Thresholds from bench_gemv on an H100 (bench/RESULTS.md "GEMV"), the heuristic variant
 * against cublasGemmEx and gemm_lt in the same call, CUDA-graph replay, weights not in L2:
 *   lm_head 248320 x 4096: ours faster up to M = 4 (663 vs 716 us at M = 1; at M = 8
 *     gemm_lt's 681 beats mmaU4's 708);
 *   N <= 4096 rows with K <= 4096 (z, out, o; k, v, b, a): up to M = 8 with mmaU4 from
 *     M = 3 (4096 x 4096: 14.3 vs 15.8 us at M = 8; 16.4 vs 15.7 at M = 16);
 *   4096 x 12288 (down): M = 1 (38.2 vs 38.7 us; ties from M = 2);
 *   24576 x 4096 (gate_up): up to M = 2 (68.7 vs 71.2 us; ties from M = 4);
 *   8192 x 4096 alone: cuBLAS is 1% faster at every M: 0. */
extern "C" int gemv_max_m(int N, int K) {
    if (N >= 65536) return 4;
    if (K > 8192) return 1;
    if (N > 4096 && N <= 16384) return 0;
    if (N <= 4096 && K <= 4096) return 8;
    return 2;
}

/* One grouped launch against one cuBLAS GEMM per weight: GDN in_proj qkv/z/b/a 36.1 vs
 * 51.9 us at M = 1, 37.7 vs 52.1 at M = 4, 40.2 vs 53.4 at M = 16 (mmaU4); attention
 * q/k/v 30.5 vs 39.7 at M = 1, 36.4 vs 40.5 at M = 16: up to M = 16 (the kernel's most). */
extern "C" int gemv_grouped_max_m(int n, int K) {
    (void)K;
    return n >= 2 ? 16 : 0;
}
