/*
 * attn_decode: paged attention for decode (one query token per sequence), GQA, head
 * dim 256, bf16 KV in layout.h's block layout, split-KV for long contexts, optional
 * sigmoid output gate.
 *
 * Grid mapping: block (split j, KV head kh, sequence s), 4 warps; the G = Hq / Hkv query
 * heads of kh are served together so that every K/V byte is read once. The split covers
 * tokens [j*L, (j+1)*L) of the sequence; warps take 32-token tiles in turn.
 *  - scores: lane t of a warp owns token t of the tile and reads its whole K row (512 B,
 *    16-byte loads; the tile's rows stay in L1), dotting it with the G query rows held
 *    in shared memory (fp32, broadcast reads): no shuffles; one exp per (token, head).
 *  - softmax: online, per warp, fp32; the tile max by warp shuffles.
 *  - P V: lane owns dims [8l, 8l+8); for each token of the tile the probability is
 *    broadcast by shuffle and the V row (512 B per warp, coalesced) is accumulated.
 *  - the 4 warps merge in shared memory; with one split the block writes the output
 *    (times sigmoid(gate)), otherwise partial (m, l, o) go to the workspace and
 *    attn_combine merges the splits.
 * Memory traffic: every cached K and V byte of the sequence once (+ q, out, and the
 * fp32 partials of the splits); the split count aims at about 16 blocks per SM.
 * Invariants: D = 256; seq_lens >= 1; block_tables hold every cached token's block.
 */
#include "cuda_common.cuh"
#include "cuda_ops.h"

#define AD 256
#define TILE 32

struct attn_params {
    const bf16_t *q, *gate;
    const char *kv;
    size_t page_bytes, layer_off, v_off; /* v_off: bytes from K to V inside a block */
    const int32_t *bt, *seq_lens;
    int max_blocks, bs, Hq, Hkv, nsplit, split_len;
    float scale;
    float *ws; /* [S][Hq][nsplit][AD + 2] */
    bf16_t *out;
};

template <int G>
__global__ void __launch_bounds__(128) attn_decode_kernel(const attn_params p) {
    __shared__ __align__(16) float qs[G][AD];
    __shared__ float wm[4][G], wl[4][G];
    __shared__ __align__(16) float wo[4][G][AD];
    const int j = blockIdx.x, kh = blockIdx.y, s = blockIdx.z;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int len = p.seq_lens[s];
    const int t_begin = j * p.split_len, t_end = min(len, t_begin + p.split_len);
    for (int e = tid; e < G * AD; e += 128) {
        const int hh = e / AD, d = e % AD;
        qs[hh][d] = bf2f(p.q[((size_t)s * p.Hq + kh * G + hh) * AD + d]) * p.scale;
    }
    __syncthreads();
    float m[G], l[G], acc[G][8];
#pragma unroll
    for (int hh = 0; hh < G; hh++) {
        m[hh] = -INFINITY;
        l[hh] = 0.f;
#pragma unroll
        for (int i = 0; i < 8; i++) acc[hh][i] = 0.f;
    }
    const int32_t *bt = p.bt + (size_t)s * p.max_blocks;
    const size_t row_bytes = (size_t)p.Hkv * AD * 2;
    for (int t0 = t_begin + w * TILE; t0 < t_end; t0 += 4 * TILE) {
        const int t = t0 + lane;
        const bool valid = t < t_end;
        const int tt = valid ? t : t_end - 1;
        const char *blk = p.kv + (size_t)bt[tt / p.bs] * p.page_bytes + p.layer_off;
        const char *krow_b = blk + (size_t)(tt % p.bs) * row_bytes + (size_t)kh * AD * 2; /* this lane's K row */
        const uint4 *krow = reinterpret_cast<const uint4 *>(krow_b);
        float sc[G];
#pragma unroll
        for (int hh = 0; hh < G; hh++) sc[hh] = 0.f;
#pragma unroll 8
        for (int c = 0; c < AD / 8; c++) {
            const uint4 u = krow[c];
            const float2 k0 = bf2x2_to_f2(u.x), k1 = bf2x2_to_f2(u.y), k2 = bf2x2_to_f2(u.z), k3 = bf2x2_to_f2(u.w);
#pragma unroll
            for (int hh = 0; hh < G; hh++) {
                const float4 qa = *reinterpret_cast<const float4 *>(&qs[hh][c * 8]);
                const float4 qb = *reinterpret_cast<const float4 *>(&qs[hh][c * 8 + 4]);
                sc[hh] += k0.x * qa.x + k0.y * qa.y + k1.x * qa.z + k1.y * qa.w + k2.x * qb.x + k2.y * qb.y +
                          k3.x * qb.z + k3.y * qb.w;
            }
        }
        float pr[G];
#pragma unroll
        for (int hh = 0; hh < G; hh++) {
            const float sv = valid ? sc[hh] : -INFINITY;
            const float mn = fmaxf(m[hh], warp_max(sv));
            const float corr = expf(m[hh] - mn); /* m = -inf first: corr = 0 */
            pr[hh] = valid ? expf(sv - mn) : 0.f;
            l[hh] = l[hh] * corr + pr[hh]; /* per-lane partial sum, summed at the end */
#pragma unroll
            for (int i = 0; i < 8; i++) acc[hh][i] *= corr;
            m[hh] = mn;
        }
        /* P V: lane owns dims [8*lane, 8*lane+8); V row of token u = lane u's K row + v_off;
         * 8 rows in flight per lane; lanes past the tile end carry p = 0 */
        const int ntok = min(TILE, t_end - t0);
        const unsigned long long kb = (unsigned long long)krow_b;
        for (int u0 = 0; u0 < ntok; u0 += 8) {
            uint4 vv[8];
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const unsigned long long b = __shfl_sync(0xffffffffu, kb, u0 + i);
                vv[i] = *reinterpret_cast<const uint4 *>((const char *)b + p.v_off + (size_t)lane * 16);
            }
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const float2 v0 = bf2x2_to_f2(vv[i].x), v1 = bf2x2_to_f2(vv[i].y), v2 = bf2x2_to_f2(vv[i].z),
                             v3 = bf2x2_to_f2(vv[i].w);
#pragma unroll
                for (int hh = 0; hh < G; hh++) {
                    const float pu = __shfl_sync(0xffffffffu, pr[hh], u0 + i);
                    acc[hh][0] += pu * v0.x; acc[hh][1] += pu * v0.y; acc[hh][2] += pu * v1.x; acc[hh][3] += pu * v1.y;
                    acc[hh][4] += pu * v2.x; acc[hh][5] += pu * v2.y; acc[hh][6] += pu * v3.x; acc[hh][7] += pu * v3.y;
                }
            }
        }
    }
    /* merge warps */
#pragma unroll
    for (int hh = 0; hh < G; hh++) {
        const float lt = warp_sum(l[hh]);
        if (lane == 0) {
            wm[w][hh] = m[hh];
            wl[w][hh] = lt;
        }
#pragma unroll
        for (int i = 0; i < 8; i++) wo[w][hh][lane * 8 + i] = acc[hh][i];
    }
    __syncthreads();
    for (int e = tid; e < G * AD; e += 128) {
        const int hh = e / AD, d = e % AD;
        float M = -INFINITY;
#pragma unroll
        for (int x = 0; x < 4; x++) M = fmaxf(M, wm[x][hh]);
        float L = 0.f, O = 0.f;
#pragma unroll
        for (int x = 0; x < 4; x++) {
            const float f = wm[x][hh] == -INFINITY ? 0.f : expf(wm[x][hh] - M);
            L += wl[x][hh] * f;
            O += wo[x][hh][d] * f;
        }
        const int qh = kh * G + hh;
        if (p.nsplit == 1) {
            float o = L > 0.f ? O / L : 0.f;
            if (p.gate) o *= sigmoid_f(bf2f(p.gate[((size_t)s * p.Hq + qh) * AD + d]));
            p.out[((size_t)s * p.Hq + qh) * AD + d] = f2bf(o);
        } else {
            float *part = p.ws + (((size_t)s * p.Hq + qh) * p.nsplit + j) * (AD + 2);
            part[d] = O;
            if (d == 0) {
                part[AD] = M;
                part[AD + 1] = L;
            }
        }
    }
}

/* merge the splits of one (sequence, q head): block of AD threads */
__global__ void __launch_bounds__(AD) attn_combine_kernel(const attn_params p) {
    const int qh = blockIdx.x, s = blockIdx.y, d = threadIdx.x;
    const int len = p.seq_lens[s];
    const int ns = min(p.nsplit, (len + p.split_len - 1) / p.split_len);
    const float *part = p.ws + ((size_t)s * p.Hq + qh) * p.nsplit * (AD + 2);
    float M = -INFINITY;
    for (int j = 0; j < ns; j++) M = fmaxf(M, part[(size_t)j * (AD + 2) + AD]);
    float L = 0.f, O = 0.f;
    for (int j = 0; j < ns; j++) {
        const float mj = part[(size_t)j * (AD + 2) + AD];
        const float f = mj == -INFINITY ? 0.f : expf(mj - M);
        L += part[(size_t)j * (AD + 2) + AD + 1] * f;
        O += part[(size_t)j * (AD + 2) + d] * f;
    }
    float o = L > 0.f ? O / L : 0.f;
    if (p.gate) o *= sigmoid_f(bf2f(p.gate[((size_t)s * p.Hq + qh) * AD + d]));
    p.out[((size_t)s * p.Hq + qh) * AD + d] = f2bf(o);
}

static void attn_split(int S, int Hkv, int max_seq_len, int split_override, int *nsplit, int *split_len) {
    /* about 16 blocks per SM (4 resident): several waves, so the last one is a small share */
    int ns = split_override > 0 ? split_override : (16 * 132 + S * Hkv - 1) / (S * Hkv);
    const int maxns = (max_seq_len + 127) / 128;
    if (ns > maxns) ns = maxns;
    if (ns < 1) ns = 1;
    int sl = (max_seq_len + ns - 1) / ns;
    sl = (sl + TILE - 1) / TILE * TILE;
    *nsplit = (max_seq_len + sl - 1) / sl;
    *split_len = sl;
}

extern "C" size_t attn_decode_workspace_bytes(int S, int Hq, int max_seq_len) {
    /* the largest split count any Hkv >= 1 gives */
    int ns, sl;
    attn_split(S, 1, max_seq_len, 0, &ns, &sl);
    return (size_t)S * Hq * ns * (AD + 2) * sizeof(float) + 256;
}

extern "C" int attn_decode_launch(const void *q, const void *kv_base, size_t page_bytes, const int32_t *block_tables,
                                  int max_blocks, const int32_t *seq_lens, int S, int max_seq_len, size_t layer_off,
                                  int block_size, int Hq, int Hkv, int D, float scale, const void *gate, void *ws,
                                  void *out, int split_override, void *stream) {
    if (S <= 0) return HS_OK;
    if (D != AD || Hkv <= 0 || Hq % Hkv || block_size <= 0 || max_seq_len <= 0) return HS_ERR_INVALID;
    attn_params p;
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
    p.scale = scale;
    p.ws = (float *)ws;
    p.out = (bf16_t *)out;
    attn_split(S, Hkv, max_seq_len, split_override, &p.nsplit, &p.split_len);
    {
        int ns1, sl1;
        attn_split(S, 1, max_seq_len, 0, &ns1, &sl1);
        if (p.nsplit > ns1 && split_override <= 0) return HS_ERR_INVALID; /* cannot happen: ws sized for Hkv = 1 */
    }
    if (p.nsplit > 1 && !ws) return HS_ERR_INVALID;
    cudaStream_t st = (cudaStream_t)stream;
    dim3 grid((unsigned)p.nsplit, (unsigned)Hkv, (unsigned)S);
    switch (Hq / Hkv) {
    case 1: attn_decode_kernel<1><<<grid, 128, 0, st>>>(p); break;
    case 2: attn_decode_kernel<2><<<grid, 128, 0, st>>>(p); break;
    case 4: attn_decode_kernel<4><<<grid, 128, 0, st>>>(p); break;
    case 6: attn_decode_kernel<6><<<grid, 128, 0, st>>>(p); break;
    case 8: attn_decode_kernel<8><<<grid, 128, 0, st>>>(p); break;
    default: return HS_ERR_UNSUPPORTED;
    }
    HS_CUDA_LAUNCHED();
    if (p.nsplit > 1) {
        attn_combine_kernel<<<dim3((unsigned)Hq, (unsigned)S), AD, 0, st>>>(p);
        HS_CUDA_LAUNCHED();
    }
    return HS_OK;
}
