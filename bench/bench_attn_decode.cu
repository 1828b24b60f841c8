/*
 * bench_attn_decode: paged GQA decode attention (16 query / 4 KV heads, D = 256, bf16
 * KV, block 16) at batch 1, 32, 128 x context 2k, 8k; and the device copy bandwidth.
 * Method: pools replicated to exceed 4x L2 and rotated; CUDA graph of one launch per
 * pool, median of 15 replays / launches. KV read rate = K and V bytes of every cached
 * token / time; also as a share of the copy rate measured first.
 * Usage: bench_attn_decode [variants, e.g. "0123" (attn_decode_config; default "3", by batch)] [pdl 0|1] [split]
 * Environment: HS_BENCH_CASE=B,ctx runs that shape alone; HS_BENCH_B=1,2,4 and
 * HS_BENCH_CTX=256,2048 set the batches and contexts (multiples of 16);
 * HS_BENCH_SPREAD_GB=N scatters the blocks over an N GB pool (one copy); HS_BENCH_PROBE=L adds a row
 * "probe": the same K/V bytes read by a kernel that only streams them (cp.async ring of
 * NS x 32 tokens, NS = HS_BENCH_PROBE_NS (3 or 6, default 3), 128 threads, one block per
 * L tokens of a (sequence, KV head), no math),
 * launched the same way: the floor of this access pattern and grid; HS_BENCH_PROBE_EARLY=1
 * issues its first NS - 1 tiles before griddepcontrol.wait, as the kernel does.
 */
#include <algorithm>

#include "../src/cuda/cuda_common.cuh"
#include "../src/cuda/cuda_ops.h"
#include "../tests/gpu/gpu_util.h"

/* The probe: split j of (sequence s, KV head kh) = tokens [j L, (j+1) L); the split's
 * block-table entries go to shared memory first, then tiles of 32 tokens (K and V rows,
 * 512 B each) stream through 3 stages, 2 in flight, and are dropped. */
template <int NS, bool EARLY>
__global__ void __launch_bounds__(128) probe_stream(const char *kv, size_t page, size_t v_off, const int32_t *bt,
                                                   int nb, int ctx, int L, int Hkv, unsigned *sink) {
    extern __shared__ uint4 sm[];
    __shared__ int sbt[1024];
    const int j = blockIdx.x, kh = blockIdx.y, s = blockIdx.z, tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    pdl_trigger();
    if (!EARLY) pdl_wait();
    const int t0 = j * L, t1 = min(ctx, t0 + L), ntile = (t1 - t0 + 31) / 32;
    for (int i = tid; i < (L + 15) / 16 && t0 / 16 + i < nb; i += 128) sbt[i] = bt[(size_t)s * nb + t0 / 16 + i];
    __syncthreads();
    const size_t row = (size_t)Hkv * 512;
    auto issue = [&](int it) {
        uint4 *st = sm + (it % NS) * 2048;
        for (int i = 0; i < 8; i++) {
            const int r = w + 4 * i, t = t0 + it * 32 + r;
            if (t < t1) {
                const char *src = kv + (size_t)sbt[t / 16 - t0 / 16] * page + (size_t)(t % 16) * row +
                                  (size_t)kh * 512 + lane * 16;
                cp_async16(st + r * 32 + lane, src);
                cp_async16(st + 1024 + r * 32 + lane, src + v_off);
            }
        }
        cp_async_commit();
    };
    for (int i = 0; i < NS - 1; i++) {
        if (i < ntile) issue(i);
        else cp_async_commit();
    }
    if (EARLY) pdl_wait();
    for (int it = 0; it < ntile; it++) {
        cp_async_wait<NS - 2>();
        __syncthreads();
        if (it + NS - 1 < ntile) issue(it + NS - 1);
        else cp_async_commit();
    }
    cp_async_wait<0>();
    if (tid == 0 && sm[0].x == 0x12345678u) atomicAdd(sink, 1u);
}


int main(int argc, char **argv) {
    const char *vars = argc > 1 ? argv[1] : "3";
    const int pdl = argc > 2 ? atoi(argv[2]) : 1;
    const int split = argc > 3 ? atoi(argv[3]) : 0;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s\n", prop.name);
    const double copy_tbs = gpu_copy_tbs();
    printf("copy: %.3f TB/s (read + write)\n", copy_tbs);
    const int Hq = 16, Hkv = 4, D = 256, bs = 16;
    int Bs[16] = {1, 32, 128}, nB = 3, Cs[16] = {2048, 8192}, nC = 2;
    if (getenv("HS_BENCH_B")) nB = int_list(getenv("HS_BENCH_B"), Bs, 16);
    if (getenv("HS_BENCH_CTX")) nC = int_list(getenv("HS_BENCH_CTX"), Cs, 16);
    const char *only = getenv("HS_BENCH_CASE"), *probe = getenv("HS_BENCH_PROBE");
    int oB = 0, oC = 0;
    if (only) sscanf(only, "%d,%d", &oB, &oC);
    const int probe_L = probe ? atoi(probe) : 0;
    const int probe_ns = getenv("HS_BENCH_PROBE_NS") && atoi(getenv("HS_BENCH_PROBE_NS")) == 6 ? 6 : 3;
    const bool probe_early = getenv("HS_BENCH_PROBE_EARLY") && atoi(getenv("HS_BENCH_PROBE_EARLY"));
    void (*probe_k)(const char *, size_t, size_t, const int32_t *, int, int, int, int, unsigned *) =
        probe_ns == 6 ? (probe_early ? probe_stream<6, true> : probe_stream<6, false>)
                      : (probe_early ? probe_stream<3, true> : probe_stream<3, false>);
    printf("%4s %5s %6s %10s %10s %7s\n", "var", "B", "ctx", "us", "KV TB/s", "% copy");
    for (int k = 0; k < nB * nC * (int)strlen(vars); k++) {
        {
            const int var = vars[k / (nC * nB)] - '0', bi = k / nC % nB, ci = k % nC;
            attn_decode_config(var, pdl);
            const int B = Bs[bi], ctx = Cs[ci], nb = ctx / bs;
            if (only && (B != oB || ctx != oC)) continue;
            const size_t page = 2 * (size_t)bs * Hkv * D * 2; /* one attention layer per block */
            /* HS_BENCH_SPREAD_GB: the blocks drawn from a pool of that size (as a model's pool
             * spreads them: TLB reach), else a pool of just these blocks */
            const double spread_gb = getenv("HS_BENCH_SPREAD_GB") ? atof(getenv("HS_BENCH_SPREAD_GB")) : 0.0;
            const int64_t npool =
                std::max<int64_t>((int64_t)B * nb, (int64_t)(spread_gb * 1073741824.0 / (double)page));
            const size_t pool_bytes = (size_t)npool * page;
            int copies = (int)std::min<size_t>(64, std::max<size_t>(1, (size_t)4 * prop.l2CacheSize / pool_bytes + 1));
            rng_seed(5);
            int32_t *bt = (int32_t *)malloc(4 * (size_t)npool);
            shuffled_ids(bt, npool); /* the first B * nb are the table */
            int32_t *sl = (int32_t *)malloc(4 * B);
            for (int i = 0; i < B; i++) sl[i] = ctx;
            int32_t *d_bt = (int32_t *)dupload(bt, 4 * (size_t)B * nb), *d_sl = (int32_t *)dupload(sl, 4 * B);
            uint16_t *hq = (uint16_t *)malloc(2 * (size_t)B * Hq * D);
            fill_bf16(hq, NULL, (size_t)B * Hq * D, 1.0);
            void *d_q = dupload(hq, 2 * (size_t)B * Hq * D), *d_g = dupload(hq, 2 * (size_t)B * Hq * D);
            void *d_out = dmalloc(2 * (size_t)B * Hq * D);
            void *d_ws = dmalloc(attn_decode_workspace_bytes(B, Hq, ctx, split));
            void *pools[64];
            for (int c = 0; c < copies; c++) {
                pools[c] = dmalloc(pool_bytes);
                CK(cudaMemset(pools[c], 0x3c, pool_bytes));
            }
            cudaStream_t s;
            CK(cudaStreamCreate(&s));
            for (int c = 0; c < copies; c++)
                CKRC(attn_decode_launch(d_q, pools[c], page, d_bt, nb, d_sl, B, ctx, 0, bs, Hq, Hkv, D, 0.0625f, d_g,
                                        d_ws, d_out, split, s));
            CK(cudaStreamSynchronize(s));
            int per = copies < 20 ? (20 / copies + 1) * copies : copies;
            cudaGraph_t graph;
            cudaGraphExec_t ge;
            CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
            for (int i = 0; i < per; i++)
                CKRC(attn_decode_launch(d_q, pools[i % copies], page, d_bt, nb, d_sl, B, ctx, 0, bs, Hq, Hkv, D,
                                        0.0625f, d_g, d_ws, d_out, split, s));
            CK(cudaStreamEndCapture(s, &graph));
            CK(cudaGraphInstantiate(&ge, graph, 0));
            double us = graph_median_ms(ge, s, 15) * 1e3 / per;
            double bytes = (double)B * ctx * Hkv * D * 2 * 2;
            const double tbs = bytes / (us * 1e-6) / 1e12;
            printf("%4d %5d %6d %10.2f %10.3f %6.1f%%\n", var, B, ctx, us, tbs, 100.0 * tbs / copy_tbs);
            fflush(stdout);
            if (probe_L > 0 && probe_L <= 16 * 1024) {
                unsigned *sink = (unsigned *)dmalloc(4);
                const dim3 pg((unsigned)((ctx + probe_L - 1) / probe_L), (unsigned)Hkv, (unsigned)B);
                CK(cudaFuncSetAttribute(probe_k, cudaFuncAttributeMaxDynamicSharedMemorySize, probe_ns * 32768));
                cudaGraph_t pgr;
                cudaGraphExec_t pge;
                CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
                for (int i = 0; i < per; i++)
                    CK(launch_pdl(probe_k, pg, dim3(128), probe_ns * 32768, s, (const char *)pools[i % copies], page,
                                  (size_t)bs * Hkv * D * 2, (const int32_t *)d_bt, nb, ctx, probe_L, Hkv, sink));
                CK(cudaStreamEndCapture(s, &pgr));
                CK(cudaGraphInstantiate(&pge, pgr, 0));
                const double pus = graph_median_ms(pge, s, 15) * 1e3 / per, ptbs = bytes / (pus * 1e-6) / 1e12;
                printf("%4s %5d %6d %10.2f %10.3f %6.1f%%  (L %d, %u blocks, %d stages)\n", "prb", B, ctx, pus, ptbs,
                       100.0 * ptbs / copy_tbs, probe_L, pg.x * pg.y * pg.z, probe_ns);
                fflush(stdout);
                CK(cudaGraphExecDestroy(pge));
                CK(cudaGraphDestroy(pgr));
                cudaFree(sink);
            }
            CK(cudaGraphExecDestroy(ge));
            CK(cudaGraphDestroy(graph));
            CK(cudaStreamDestroy(s));
            for (int c = 0; c < copies; c++) cudaFree(pools[c]);
            cudaFree(d_bt); cudaFree(d_sl); cudaFree(d_q); cudaFree(d_g); cudaFree(d_out); cudaFree(d_ws);
            free(bt); free(sl); free(hq);
        }
    }
    return 0;
}
