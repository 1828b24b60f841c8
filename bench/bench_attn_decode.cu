/*
 * bench_attn_decode: paged GQA decode attention (16 query / 4 KV heads, D = 256, bf16
 * KV, block 16) at batch 1, 32, 128 x context 2k, 8k; and the device copy bandwidth.
 * Method: pools replicated to exceed 4x L2 and rotated; CUDA graph of one launch per
 * pool, median of 15 replays / launches. KV read rate = K and V bytes of every cached
 * token / time; also as a share of the copy rate measured first.
 * Usage: bench_attn_decode [variants, e.g. "012" (attn_decode_config; default "0")] [pdl 0|1] [split]
 */
#include <algorithm>

#include "../src/cuda/cuda_ops.h"
#include "../tests/gpu/gpu_util.h"


int main(int argc, char **argv) {
    const char *vars = argc > 1 ? argv[1] : "0";
    const int pdl = argc > 2 ? atoi(argv[2]) : 1;
    const int split = argc > 3 ? atoi(argv[3]) : 0;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s\n", prop.name);
    const double copy_tbs = gpu_copy_tbs();
    printf("copy: %.3f TB/s (read + write)\n", copy_tbs);
    const int Hq = 16, Hkv = 4, D = 256, bs = 16, Bs[3] = {1, 32, 128}, Cs[2] = {2048, 8192};
    printf("%4s %5s %6s %10s %10s %7s\n", "var", "B", "ctx", "us", "KV TB/s", "% copy");
    for (int k = 0; k < 3 * 2 * (int)strlen(vars); k++) {
        {
            const int var = vars[k / 6] - '0', bi = k / 2 % 3, ci = k % 2;
            attn_decode_config(var, pdl);
            const int B = Bs[bi], ctx = Cs[ci], nb = ctx / bs;
            const size_t page = 2 * (size_t)bs * Hkv * D * 2; /* one attention layer per block */
            const size_t pool_bytes = (size_t)B * nb * page;
            int copies = (int)std::min<size_t>(64, std::max<size_t>(1, (size_t)4 * prop.l2CacheSize / pool_bytes + 1));
            rng_seed(5);
            int32_t *bt = (int32_t *)malloc(4 * (size_t)B * nb);
            shuffled_ids(bt, (int64_t)B * nb);
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
