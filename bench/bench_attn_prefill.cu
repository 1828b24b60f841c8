/*
 * bench_attn_prefill: paged causal prefill attention (GQA 16 query / 4 KV heads, D = 256,
 * bf16 KV, block 16) through attn_prefill_launch, against the kernel it replaced in the
 * CUDA backend (k_attn_rows: one 128-thread block per (token, head), a warp per key;
 * copied below as it was at commit 262c7a8, its token-to-sequence search now the shared
 * seq_of_token) on the same inputs in the same process.
 * Shapes: 8 x 1024 new tokens, 1 x 8192, 1 x 1024 after 7168 cached, 32 x 256 after 1024.
 * TFLOP/s counts the causal work only: 4 * D * Hq * sum over tokens of the keys seen.
 * Both block shapes of the new kernel (attn_prefill_config: 64 and 128 query rows).
 * Method: CUDA events around each launch, median of 10 (old kernel: of 3), after a warm-up.
 * Also checks that the kernels agree (||new (128 rows) - old|| / ||old||).
 */
#include <algorithm>
#include <cuda_bf16.h>

#include "../src/cuda/attn_prefill.h"
#include "../src/cuda/cuda_common.cuh"
#include "../tests/gpu/gpu_util.h"

/* ---- the replaced kernel (cuda_backend.cu at 262c7a8), for comparison -------------- */
typedef __nv_bfloat16 obf16;
struct old_params {
    const obf16 *q, *gate;
    const int32_t *tok_start, *n_past, *pos, *bt;
    int S, Hq, Hkv, D, max_blocks, block_size, t0;
    float scale;
    const char *pool;
    size_t page_bytes, layer_off;
    obf16 *out;
};
__device__ __forceinline__ float old_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__global__ void __launch_bounds__(128) k_attn_rows_old(const old_params p) {
    __shared__ float m_sh[4], l_sh[4];
    __shared__ float o_sh[4][256];
    const int t = p.t0 + blockIdx.x, h = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int s = seq_of_token(p.tok_start, p.S, t);
    const int kh = h / (p.Hq / p.Hkv);
    const int npl = p.D / 32;
    float q[8], acc[8];
    for (int j = 0; j < npl; j++) {
        q[j] = __bfloat162float(p.q[((int64_t)t * p.Hq + h) * p.D + lane * npl + j]) * p.scale;
        acc[j] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    const int last = p.pos[t];
    const size_t vstride = (size_t)p.block_size * p.Hkv * p.D;
    for (int key = warp; key <= last; key += 4) {
        const int blk = p.bt[(int64_t)s * p.max_blocks + key / p.block_size];
        const obf16 *kp = reinterpret_cast<const obf16 *>(p.pool + (size_t)blk * p.page_bytes + p.layer_off) +
                          ((size_t)(key % p.block_size) * p.Hkv + kh) * p.D + lane * npl;
        float d = 0.f;
        for (int j = 0; j < npl; j++) d += q[j] * __bfloat162float(kp[j]);
        d = old_warp_sum(d);
        const float mn = fmaxf(m, d);
        const float corr = __expf(m - mn), pe = __expf(d - mn);
        l = l * corr + pe;
        const obf16 *vp = kp + vstride;
        for (int j = 0; j < npl; j++) acc[j] = acc[j] * corr + pe * __bfloat162float(vp[j]);
        m = mn;
    }
    if (lane == 0) m_sh[warp] = m, l_sh[warp] = l;
    for (int j = 0; j < npl; j++) o_sh[warp][lane * npl + j] = acc[j];
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < 4; w++) M = fmaxf(M, m_sh[w]);
    float L = 0.f;
    for (int w = 0; w < 4; w++) L += m_sh[w] == -INFINITY ? 0.f : l_sh[w] * __expf(m_sh[w] - M);
    for (int i = threadIdx.x; i < p.D; i += blockDim.x) {
        float o = 0.f;
        for (int w = 0; w < 4; w++)
            if (m_sh[w] != -INFINITY) o += o_sh[w][i] * __expf(m_sh[w] - M);
        o /= L;
        const float g = __bfloat162float(p.gate[((int64_t)t * p.Hq + h) * p.D + i]);
        p.out[((int64_t)t * p.Hq + h) * p.D + i] = __float2bfloat16_rn(o / (1.f + expf(-g)));
    }
}

static float median(float *v, int n) {
    std::sort(v, v + n);
    return v[n / 2];
}

int main(void) {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s\n", prop.name);
    const int Hq = 16, Hkv = 4, D = 256, bs = 16;
    struct { int S, len, n_past; } shapes[] = {{8, 1024, 0}, {1, 8192, 0}, {1, 1024, 7168}, {32, 256, 1024}};
    printf("%-18s %9s %8s %9s %8s %10s %8s %8s %10s\n", "S x new +past", "BM64 us", "TFLOP/s", "BM128 us",
           "TFLOP/s", "old us", "TFLOP/s", "speedup", "new vs old");
    for (const auto &sh : shapes) {
        const int S = sh.S, len = sh.len, np0 = sh.n_past, T = S * len, ctx = np0 + len;
        const int nb = (ctx + bs - 1) / bs;
        const size_t page = 2 * (size_t)bs * Hkv * D * 2;
        rng_seed(11);
        int32_t *bt = (int32_t *)malloc(4 * (size_t)S * nb), *ts = (int32_t *)malloc(4 * (size_t)(S + 1));
        int32_t *np = (int32_t *)malloc(4 * (size_t)S), *pos = (int32_t *)malloc(4 * (size_t)T);
        shuffled_ids(bt, (int64_t)S * nb);
        double keys = 0;
        for (int s = 0; s <= S; s++) ts[s] = s * len;
        for (int s = 0; s < S; s++) {
            np[s] = np0;
            for (int i = 0; i < len; i++) pos[s * len + i] = np0 + i, keys += np0 + i + 1;
        }
        const double flop = 4.0 * D * Hq * keys;
        const size_t pool_elems = (size_t)S * nb * page / 2, qn = (size_t)T * Hq * D;
        uint16_t *hpool = (uint16_t *)malloc(pool_elems * 2), *hq = (uint16_t *)malloc(qn * 2);
        fill_bf16(hpool, NULL, pool_elems, 1.0);
        fill_bf16(hq, NULL, qn, 1.0);
        void *d_pool = dupload(hpool, pool_elems * 2), *d_q = dupload(hq, qn * 2), *d_g = dupload(hq, qn * 2);
        int32_t *d_bt = (int32_t *)dupload(bt, 4 * (size_t)S * nb), *d_ts = (int32_t *)dupload(ts, 4 * (size_t)(S + 1));
        int32_t *d_np = (int32_t *)dupload(np, 4 * (size_t)S), *d_pos = (int32_t *)dupload(pos, 4 * (size_t)T);
        void *d_out = dmalloc(qn * 2), *d_old = dmalloc(qn * 2);
        const float scale = 1.f / 16.f;
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0));
        CK(cudaEventCreate(&e1));
        auto run_new = [&](int var) {
            attn_prefill_config(var);
            CKRC(attn_prefill_launch(d_q, d_g, d_pool, page, d_bt, nb, d_ts, d_np, ts, 0, S, 0, bs, Hq, Hkv, D, scale,
                                     d_out, NULL));
        };
        old_params op = {(const obf16 *)d_q, (const obf16 *)d_g, d_ts, d_np, d_pos, d_bt, S, Hq, Hkv, D, nb, bs, 0,
                         scale, (const char *)d_pool, page, 0, (obf16 *)d_old};
        auto run_old = [&]() { k_attn_rows_old<<<dim3((unsigned)T, (unsigned)Hq), 128>>>(op); };
        float tn[2][10], to[3];
        for (int v = 0; v < 2; v++) {
            run_new(v + 1);
            for (int i = 0; i < 10; i++) {
                CK(cudaEventRecord(e0));
                run_new(v + 1);
                CK(cudaEventRecord(e1));
                CK(cudaEventSynchronize(e1));
                CK(cudaEventElapsedTime(&tn[v][i], e0, e1));
            }
        }
        attn_prefill_config(0);
        run_old();
        for (int i = 0; i < 3; i++) {
            CK(cudaEventRecord(e0));
            run_old();
            CK(cudaEventRecord(e1));
            CK(cudaEventSynchronize(e1));
            CK(cudaEventElapsedTime(&to[i], e0, e1));
        }
        CK(cudaGetLastError());
        CK(cudaDeviceSynchronize());
        uint16_t *a = (uint16_t *)malloc(qn * 2), *b = (uint16_t *)malloc(qn * 2);
        CK(cudaMemcpy(a, d_out, qn * 2, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(b, d_old, qn * 2, cudaMemcpyDeviceToHost));
        relerr_t er = {0, 0};
        for (size_t i = 0; i < qn; i++) relerr_add(&er, bfv(a[i]), bfv(b[i]));
        const double u1 = median(tn[0], 10) * 1e3, u2 = median(tn[1], 10) * 1e3, uo = median(to, 3) * 1e3;
        char name[64];
        snprintf(name, sizeof name, "%d x %d +%d", S, len, np0);
        printf("%-18s %9.1f %8.1f %9.1f %8.1f %10.1f %8.2f %7.1fx %10.2e\n", name, u1, flop / (u1 * 1e-6) / 1e12, u2,
               flop / (u2 * 1e-6) / 1e12, uo, flop / (uo * 1e-6) / 1e12, uo / std::min(u1, u2), relerr(&er));
        fflush(stdout);
        cudaFree(d_pool); cudaFree(d_q); cudaFree(d_g); cudaFree(d_bt); cudaFree(d_ts); cudaFree(d_np);
        cudaFree(d_pos); cudaFree(d_out); cudaFree(d_old);
        free(bt); free(ts); free(np); free(pos); free(hpool); free(hq); free(a); free(b);
    }
    return 0;
}
