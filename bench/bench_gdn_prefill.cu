/*
 * bench_gdn_prefill: time the chunked GDN prefill core on one sequence, Hk = 16,
 * Hv 32 and 64, T 4k, 16k, 64k: gdn_chunk_launch (chunk_prep, which L2-normalises q and
 * k, + chunk_state) with an fp32 initial state read from and the final state written to a
 * paged pool: the same work as fla's chunk_gated_delta_rule(use_qk_l2norm_in_kernel,
 * initial_state, output_final_state) that tools/bench_fla.py times.
 * Columns: ms = the launcher's choice (the fused pass, chunk_prep overlapped with
 * chunk_state, where it applies); split ms = chunk_prep then chunk_state as two kernels;
 * prep ms, state ms = each of those alone.
 * Method: CUDA events around one call, 3 warm-ups, median of 10 (the inputs are 50 MB
 * to 1.6 GB, beyond or near L2, and each call reads them once).
 */
#include <algorithm>

#include "../src/cuda/cuda_ops.h"
#include "../tests/gpu/gpu_util.h"

extern "C" int gdn_chunk_bench_mode, gdn_chunk_bench_bv, gdn_chunk_bench_fused;
static float median(float *v, int n) {
    std::sort(v, v + n);
    return v[n / 2];
}

int main(int argc, char **argv) {
    gdn_chunk_bench_bv = argc > 1 ? atoi(argv[1]) : 0;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s\n", prop.name);
    printf("hyserve chunk (chunk_prep with q/k L2 norm + chunk_state), fp32 paged h0/ht, bv %d\n",
           gdn_chunk_bench_bv);
    printf("%-6s %7s %10s %12s %10s %10s %10s\n", "Hk/Hv", "T", "ms", "Mtok/s", "split ms", "prep ms", "state ms");
    const int Hk = 16, Hvs[2] = {32, 64}, Ts[3] = {4096, 16384, 65536};
    for (int hi = 0; hi < 2; hi++)
        for (int ti = 0; ti < 3; ti++) {
            const int Hv = Hvs[hi], T = Ts[ti], S = 1;
            rng_seed(11 + T);
            size_t nq = (size_t)T * Hk * 128, nv = (size_t)T * Hv * 128;
            uint16_t *h = (uint16_t *)malloc(2 * nv);
            fill_bf16(h, NULL, nq, 1.0);
            void *d_q = dupload(h, 2 * nq);
            fill_bf16(h, NULL, nq, 1.0);
            void *d_k = dupload(h, 2 * nq);
            fill_bf16(h, NULL, nv, 1.0);
            void *d_v = dupload(h, 2 * nv);
            free(h);
            float *g = (float *)malloc(4 * (size_t)T * Hv), *be = (float *)malloc(4 * (size_t)T * Hv);
            for (size_t i = 0; i < (size_t)T * Hv; i++) {
                double x = rng_n();
                g[i] = (float)(x < 0 ? x - log1p(exp(x)) : -log1p(exp(-x))); /* logsigmoid */
                be[i] = (float)(1.0 / (1.0 + exp(-rng_u())));
            }
            float *d_g = (float *)dupload(g, 4 * (size_t)T * Hv), *d_b = (float *)dupload(be, 4 * (size_t)T * Hv);
            free(g);
            free(be);
            int32_t ts[2] = {0, T}, np[1] = {1};
            int32_t *d_ts = (int32_t *)dupload(ts, 8), *d_np = (int32_t *)dupload(np, 4);
            fake_map_t m;
            fake_map_init(&m, S, Hv, 2 * Hk * 128 + Hv * 128, 128, 4, 256 * 1024, 0);
            size_t pool_bytes = (size_t)m.n_pages * m.page_bytes;
            void *d_pool = dmalloc(pool_bytes);
            CK(cudaMemset(d_pool, 0x3c, pool_bytes));
            int32_t *d_pages = (int32_t *)dupload(m.pages, 4 * (size_t)S * m.E);
            sm_loc_t *d_loc = (sm_loc_t *)dupload(m.ssm, sizeof(sm_loc_t) * Hv * m.n_slices);
            gdn_state_t st = {d_pool, m.page_bytes, d_pages, m.E, d_loc, 128, m.conv, HS_F32};
            void *d_o = dmalloc(2 * nv), *d_ws = dmalloc(gdn_chunk_workspace_bytes(T, Hv));
            cudaEvent_t e0, e1, e2;
            CK(cudaEventCreate(&e0));
            CK(cudaEventCreate(&e1));
            CK(cudaEventCreate(&e2));
            float tt[10], tl[10];
            for (int it = 0; it < 13; it++) {
                CK(cudaEventRecord(e0));
                CK(cudaEventRecord(e1));
                CKRC(gdn_chunk_launch(d_q, d_k, d_v, d_g, d_b, d_ts, ts, d_np, S, T, Hk, Hv, &st, d_ws, d_o, NULL));
                CK(cudaEventRecord(e2));
                CK(cudaEventSynchronize(e2));
                if (it >= 3) {
                    CK(cudaEventElapsedTime(&tt[it - 3], e0, e2));
                    CK(cudaEventElapsedTime(&tl[it - 3], e0, e1));
                }
            }
            CK(cudaGetLastError());
            float ms = median(tt, 10), ml = median(tl, 10);
            /* the same with chunk_prep and chunk_state as two kernels (where ms is the fused pass) */
            gdn_chunk_bench_fused = 0;
            for (int it = 0; it < 13; it++) {
                CK(cudaEventRecord(e0));
                CKRC(gdn_chunk_launch(d_q, d_k, d_v, d_g, d_b, d_ts, ts, d_np, S, T, Hk, Hv, &st, d_ws, d_o, NULL));
                CK(cudaEventRecord(e1));
                CK(cudaEventSynchronize(e1));
                if (it >= 3) CK(cudaEventElapsedTime(&tt[it - 3], e0, e1));
            }
            gdn_chunk_bench_fused = 1;
            const float ms_split = median(tt, 10);
            /* breakdown: each stage alone (same inputs; the workspace holds the prep results) */
            float part[2];
            for (int mode = 1; mode <= 2; mode++) {
                gdn_chunk_bench_mode = mode;
                float tm[5];
                for (int it = 0; it < 6; it++) {
                    CK(cudaEventRecord(e0));
                    CKRC(gdn_chunk_launch(d_q, d_k, d_v, d_g, d_b, d_ts, ts, d_np, S, T, Hk, Hv, &st, d_ws, d_o, NULL));
                    CK(cudaEventRecord(e1));
                    CK(cudaEventSynchronize(e1));
                    if (it >= 1) CK(cudaEventElapsedTime(&tm[it - 1], e0, e1));
                }
                part[mode - 1] = median(tm, 5);
            }
            gdn_chunk_bench_mode = 0;
            (void)ml;
            printf("%2d/%-3d %7d %10.3f %12.2f %10.3f %10.3f %10.3f\n", Hk, Hv, T, ms, T / (ms * 1e-3) / 1e6, ms_split,
                   part[0], part[1]);
            fflush(stdout);
            cudaFree(d_q); cudaFree(d_k); cudaFree(d_v); cudaFree(d_g); cudaFree(d_b); cudaFree(d_ts); cudaFree(d_np);
            cudaFree(d_pool); cudaFree(d_pages); cudaFree(d_loc); cudaFree(d_o); cudaFree(d_ws);
            CK(cudaEventDestroy(e0)); CK(cudaEventDestroy(e1)); CK(cudaEventDestroy(e2));
            fake_map_free(&m);
        }
    return 0;
}
