/*
 * bench_gdn_prefill: time the chunked GDN prefill core, Hk = 16, Hv 32 and 64, on one
 * sequence of T 4k, 16k, 64k and on two varlen steps of 4096 tokens as the engine's
 * prefill runs them (4 x 1024; 5 uneven sequences): gdn_chunk_launch (chunk_prep, which L2-normalises q and
 * k, + chunk_state) with an fp32 initial state read from and the final state written to a
 * paged pool: the same work as fla's chunk_gated_delta_rule(use_qk_l2norm_in_kernel,
 * initial_state, output_final_state, cu_seqlens for varlen) that tools/bench_fla.py times.
 * Columns: ms = the launcher's choice (the fused pass, chunk_prep overlapped with
 * chunk_state, where it applies); split ms = chunk_prep then chunk_state as two kernels;
 * prep ms, state ms = each of those alone.
 * `bench_gdn_prefill prep` times gdn_prefill_prep_launch alone instead (conv + SiLU, gates, conv states).
 * Usage: bench_gdn_prefill [-t] [bv [Hv S len]]: bv = chunk_state's V-tile (0 = the launcher's
 * choice); with Hv S len, one row of S sequences of len tokens only; -t: after each row one
 * more call with the fused pass's trace (per-item prep cycles, when chunks were published
 * and when pass block 0 took them).
 * Method: CUDA events around one call, 3 warm-ups, median of 10 (the inputs are 50 MB
 * to 1.6 GB, beyond or near L2, and each call reads them once).
 */
#include <algorithm>
#include <vector>

#include "../src/cuda/cuda_ops.h"
#include "../tests/gpu/gpu_util.h"

extern "C" int gdn_chunk_bench_mode, gdn_chunk_bench_bv, gdn_chunk_bench_fused;
extern "C" unsigned long long *gdn_chunk_bench_trace;
static float median(float *v, int n) {
    std::sort(v, v + n);
    return v[n / 2];
}

static bool trace = false; /* -t: one more call per row with the fused pass's trace */

/* The fused pass's timeline for one call (where the launcher takes it): per item, the
 * compute cycles of its prep worker and when it was published; when pass block 0 started
 * each chunk. Times in us from block 0's start. */
static void trace_row(int Hk, int S, const int32_t *ts, void *d_q, void *d_k, void *d_v, float *d_g, float *d_b,
                      int32_t *d_ts, int32_t *d_np, int T, int Hv, gdn_state_t *st, void *d_ws, void *d_o) {
    int maxlen = 0;
    for (int s = 0; s < S; s++) maxlen = std::max(maxlen, ts[s + 1] - ts[s]);
    const int nch = (maxlen + 63) / 64, n = nch * S * Hk, len0 = ts[1] - ts[0], nch0 = (len0 + 63) / 64;
    const size_t ne = 2 * (size_t)n + nch + 4;
    unsigned long long *d_tr = (unsigned long long *)dmalloc(8 * ne), *tr = (unsigned long long *)malloc(8 * ne);
    CK(cudaMemset(d_tr, 0, 8 * ne));
    gdn_chunk_bench_trace = d_tr;
    CKRC(gdn_chunk_launch(d_q, d_k, d_v, d_g, d_b, d_ts, ts, d_np, S, T, Hk, Hv, st, d_ws, d_o, NULL));
    gdn_chunk_bench_trace = NULL;
    CK(cudaMemcpy(tr, d_tr, 8 * ne, cudaMemcpyDeviceToHost));
    const unsigned long long t0 = tr[2 * n + nch0];
    if (t0) {
        std::vector<double> cyc(n);
        double first = 0, last = 0;
        for (int i = 0; i < n; i++) {
            cyc[i] = (double)tr[n + i];
            const double tp = tr[i] ? ((double)tr[i] - (double)t0) * 1e-3 : 0;
            if (i < S * Hk && tp > first) first = tp; /* chunk 0 of every sequence */
            last = std::max(last, tp);
        }
        std::sort(cyc.begin(), cyc.end());
        const double c0 = ((double)tr[2 * n] - (double)t0) * 1e-3, cl = ((double)tr[2 * n + nch0 - 1] - (double)t0) * 1e-3;
        const double ts0 = ((double)tr[2 * n + nch0 + 1] - (double)t0) * 1e-3;
        const double te = ((double)tr[2 * n + nch0 + 2] - (double)t0) * 1e-3;
        const double tf = ((double)tr[2 * n + nch0 + 3] - (double)t0) * 1e-3;
        printf("   trace: %d items, compute cycles p10/p50/p90 %.0f/%.0f/%.0f; chunk 0 all published %.1f us, "
               "all items %.1f us; pass block 0: initial state at %.1f us, chunk 0 seen %.1f us, started %.1f us, "
               "chunk %d at %.1f us (%.2f us/chunk), end %.1f us\n",
               n, cyc[n / 10], cyc[n / 2], cyc[9 * n / 10], first, last, ts0, tf, c0, nch0 - 1, cl,
               nch0 > 1 ? (cl - c0) / (nch0 - 1) : 0.0, te);
    } else {
        printf("   trace: (not the fused pass)\n");
    }
    cudaFree(d_tr);
    free(tr);
}

/* One row: sequences of lengths lens[0..S) packed (cu_seqlens), each with an fp32 initial
 * state (n_past > 0) read from and its final state written to the paged pool. */
static void bench_row(int Hk, int Hv, const int *lens, int S, const char *label) {
    int32_t *ts = (int32_t *)malloc(sizeof(int32_t) * (S + 1)), *np = (int32_t *)malloc(sizeof(int32_t) * S);
    ts[0] = 0;
    for (int s = 0; s < S; s++) {
        ts[s + 1] = ts[s] + lens[s];
        np[s] = 1;
    }
    const int T = ts[S];
    rng_seed(11 + T + S);
    size_t nq = (size_t)T * Hk * 128, nv = (size_t)T * Hv * 128;
    /* q, k, v uniform with unit variance, generated on the device (host fills of the 64k
     * rows took longer than the runs) */
    void *d_q = dev_uniform_bf16(nq, 3 * T + 1, 1.732f), *d_k = dev_uniform_bf16(nq, 3 * T + 2, 1.732f);
    void *d_v = dev_uniform_bf16(nv, 3 * T + 3, 1.732f);
    float *g = (float *)malloc(4 * (size_t)T * Hv), *be = (float *)malloc(4 * (size_t)T * Hv);
    for (size_t i = 0; i < (size_t)T * Hv; i++) {
        double x = rng_n();
        g[i] = (float)(x < 0 ? x - log1p(exp(x)) : -log1p(exp(-x))); /* logsigmoid */
        be[i] = (float)(1.0 / (1.0 + exp(-rng_u())));
    }
    float *d_g = (float *)dupload(g, 4 * (size_t)T * Hv), *d_b = (float *)dupload(be, 4 * (size_t)T * Hv);
    free(g);
    free(be);
    int32_t *d_ts = (int32_t *)dupload(ts, 4 * (S + 1)), *d_np = (int32_t *)dupload(np, 4 * S);
    fake_map_t m;
    fake_map_init(&m, S, Hv, 2 * Hk * 128 + Hv * 128, 128, 4, 256 * 1024, 0);
    size_t pool_bytes = (size_t)m.n_pages * m.page_bytes;
    void *d_pool = dmalloc(pool_bytes);
    CK(cudaMemset(d_pool, 0x3c, pool_bytes));
    int32_t *d_pages = (int32_t *)dupload(m.pages, 4 * (size_t)S * m.E);
    sm_loc_t *d_loc = (sm_loc_t *)dupload(m.ssm, sizeof(sm_loc_t) * Hv * m.n_slices);
    gdn_state_t st = {d_pool, m.page_bytes, d_pages, m.E, d_loc, 128, m.conv, HS_F32};
    void *d_o = dmalloc(2 * nv), *d_ws = dmalloc(gdn_chunk_workspace_bytes(T, Hv));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    /* median of 10 after 3 warm-ups; mode/fused as set by the caller */
    auto time_it = [&](int reps) {
        float tt[10];
        for (int it = 0; it < reps + 3; it++) {
            CK(cudaEventRecord(e0));
            CKRC(gdn_chunk_launch(d_q, d_k, d_v, d_g, d_b, d_ts, ts, d_np, S, T, Hk, Hv, &st, d_ws, d_o, NULL));
            CK(cudaEventRecord(e1));
            CK(cudaEventSynchronize(e1));
            if (it >= 3) CK(cudaEventElapsedTime(&tt[it - 3], e0, e1));
        }
        return median(tt, reps);
    };
    const float ms = time_it(10);
    /* the same with chunk_prep and chunk_state as two kernels (where ms is the fused pass) */
    gdn_chunk_bench_fused = 0;
    const float ms_split = time_it(10);
    gdn_chunk_bench_fused = 1;
    /* breakdown: each stage alone (same inputs; the workspace holds the prep results) */
    float part[2];
    for (int mode = 1; mode <= 2; mode++) {
        gdn_chunk_bench_mode = mode;
        part[mode - 1] = time_it(5);
    }
    gdn_chunk_bench_mode = 0;
    CK(cudaGetLastError());
    printf("%2d/%-3d %-9s %7d %10.3f %12.2f %10.3f %10.3f %10.3f\n", Hk, Hv, label, T, ms, T / (ms * 1e-3) / 1e6,
           ms_split, part[0], part[1]);
    if (trace) trace_row(Hk, S, ts, d_q, d_k, d_v, d_g, d_b, d_ts, d_np, T, Hv, &st, d_ws, d_o);
    fflush(stdout);
    cudaFree(d_q); cudaFree(d_k); cudaFree(d_v); cudaFree(d_g); cudaFree(d_b); cudaFree(d_ts); cudaFree(d_np);
    cudaFree(d_pool); cudaFree(d_pages); cudaFree(d_loc); cudaFree(d_o); cudaFree(d_ws);
    CK(cudaEventDestroy(e0)); CK(cudaEventDestroy(e1));
    fake_map_free(&m);
    free(ts);
    free(np);
}

/* gdn_prefill_prep_launch alone (causal conv with the conv state + SiLU, gates, the new
 * conv states): sequences lens[0..S) continuing from a state, inputs in the model's packed
 * rows [qkv | z | b | a]. Its bytes: qkv read and q, k, v written (bf16), b, a read and
 * g, beta written. Median of 10 after 3 warm-ups (the 4096-token input, 100 MB with z,
 * is beyond L2). */
static void bench_prep(int Hk, int Hv, const int *lens, int S, const char *label) {
    const int conv_dim = 2 * Hk * 128 + Hv * 128, ld = conv_dim + Hv * 128 + 2 * Hv;
    int32_t *ts = (int32_t *)malloc(sizeof(int32_t) * (S + 1)), *np = (int32_t *)malloc(sizeof(int32_t) * S);
    ts[0] = 0;
    for (int s = 0; s < S; s++) ts[s + 1] = ts[s] + lens[s], np[s] = 17;
    const int T = ts[S];
    void *d_in = dev_uniform_bf16((size_t)T * ld, 7 + T, 1.732f);
    const uint16_t *qkv = (const uint16_t *)d_in;
    void *d_cw = dev_uniform_bf16((size_t)conv_dim * 4, 5, 0.5f);
    float *Al = (float *)malloc(4 * Hv);
    for (int h = 0; h < Hv; h++) Al[h] = (float)(0.1 * h);
    float *d_Al = (float *)dupload(Al, 4 * Hv), *d_dtb = (float *)dupload(Al, 4 * Hv);
    int32_t *d_ts = (int32_t *)dupload(ts, 4 * (S + 1)), *d_np = (int32_t *)dupload(np, 4 * S);
    fake_map_t m;
    fake_map_init(&m, S, Hv, conv_dim, 128, 4, 256 * 1024, 0);
    void *d_pool = dmalloc((size_t)m.n_pages * m.page_bytes);
    CK(cudaMemset(d_pool, 0x3c, (size_t)m.n_pages * m.page_bytes));
    int32_t *d_pages = (int32_t *)dupload(m.pages, 4 * (size_t)S * m.E);
    sm_loc_t *d_loc = (sm_loc_t *)dupload(m.ssm, sizeof(sm_loc_t) * Hv * m.n_slices);
    gdn_state_t st = {d_pool, m.page_bytes, d_pages, m.E, d_loc, 128, m.conv, HS_F32};
    void *d_qn = dmalloc(2 * (size_t)T * Hk * 128), *d_kn = dmalloc(2 * (size_t)T * Hk * 128);
    void *d_v = dmalloc(2 * (size_t)T * Hv * 128);
    float *d_g = (float *)dmalloc(4 * (size_t)T * Hv), *d_b = (float *)dmalloc(4 * (size_t)T * Hv);
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float tt[10];
    for (int it = 0; it < 13; it++) {
        CK(cudaEventRecord(e0));
        CKRC(gdn_prefill_prep_launch(qkv, qkv + conv_dim + Hv * 128, qkv + conv_dim + Hv * 128 + Hv, d_cw, d_Al,
                                     d_dtb, d_ts, d_np, S, T, Hk, Hv, 128, 128, &st, d_qn, d_kn, d_v, d_g, d_b, ld,
                                     NULL));
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        if (it >= 3) CK(cudaEventElapsedTime(&tt[it - 3], e0, e1));
    }
    const float ms = median(tt, 10);
    const double bytes = (double)T * (2.0 * conv_dim * 2 + 2 * Hv * 2 + 2 * Hv * 4);
    printf("prep %2d/%-3d %-9s %7d %10.1f us %8.2f TB/s\n", Hk, Hv, label, T, ms * 1e3, bytes / (ms * 1e-3) / 1e12);
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    cudaFree(d_in), cudaFree(d_cw), cudaFree(d_Al), cudaFree(d_dtb), cudaFree(d_ts), cudaFree(d_np), cudaFree(d_pool);
    cudaFree(d_pages), cudaFree(d_loc), cudaFree(d_qn), cudaFree(d_kn), cudaFree(d_v), cudaFree(d_g), cudaFree(d_b);
    fake_map_free(&m);
    free(Al), free(ts), free(np);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "-t")) { /* -t first: the fused pass's trace per row */
        trace = true;
        argv++;
        argc--;
    }
    gdn_chunk_bench_bv = argc > 1 ? atoi(argv[1]) : 0;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s\n", prop.name);
    printf("hyserve chunk (chunk_prep with q/k L2 norm + chunk_state), fp32 paged h0/ht, bv %d\n",
           gdn_chunk_bench_bv);
    printf("%-6s %-9s %7s %10s %12s %10s %10s %10s\n", "Hk/Hv", "seqs", "T", "ms", "Mtok/s", "split ms", "prep ms",
           "state ms");
    const int Hk = 16, Hvs[2] = {32, 64}, Ts[3] = {4096, 16384, 65536};
    if (argc > 1 && !strcmp(argv[1], "prep")) { /* bench_gdn_prefill prep: gdn_prefill_prep_launch alone */
        static const int one[1] = {4096}, v4p[4] = {1024, 1024, 1024, 1024}, v5p[5] = {1000, 700, 1200, 900, 296};
        static const int one920[1] = {920}; /* the seed's typical prompt */
        for (int hi = 0; hi < 2; hi++) {
            bench_prep(Hk, Hvs[hi], one, 1, "1");
            bench_prep(Hk, Hvs[hi], v4p, 4, "4x1024");
            bench_prep(Hk, Hvs[hi], v5p, 5, "5 uneven");
            bench_prep(Hk, Hvs[hi], one920, 1, "1");
        }
        return 0;
    }
    if (argc > 4) { /* one row: bench_gdn_prefill bv Hv S len (S sequences of len tokens) */
        const int Hv = atoi(argv[2]), S = atoi(argv[3]), len = atoi(argv[4]);
        int *lens = (int *)malloc(sizeof(int) * S);
        for (int s = 0; s < S; s++) lens[s] = len;
        bench_row(Hk, Hv, lens, S, "(argv)");
        free(lens);
        return 0;
    }
    /* varlen prefill steps as the engine runs them: 4 x 1024, and 5 uneven (4096 in all) */
    static const int v4[4] = {1024, 1024, 1024, 1024}, v5[5] = {1000, 700, 1200, 900, 296};
    for (int hi = 0; hi < 2; hi++) {
        for (int ti = 0; ti < 3; ti++) bench_row(Hk, Hvs[hi], &Ts[ti], 1, "1");
        bench_row(Hk, Hvs[hi], v4, 4, "4x1024");
        bench_row(Hk, Hvs[hi], v5, 5, "5 uneven");
    }
    return 0;
}
