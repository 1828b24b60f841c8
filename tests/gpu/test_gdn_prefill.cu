/*
 * test_gdn_prefill: the GDN prefill path (src/cuda/gdn_prefill.cu) against a float64
 * CPU reference of model-spec §2.5 run token by token (the recurrent form):
 *  - "layer": prep (conv with state + SiLU + L2 norm + gates) -> chunk core with paged
 *    initial/final state -> gated RMSNorm, on varlen batches whose lengths hit the
 *    chunk edges (1, 3, 63, 64, 65, 200, ...), fresh and continuing sequences, fp32 and
 *    bf16 state; compares out, SSM state and conv state;
 *  - "core": the chunk core alone without state (as the benchmark runs it);
 *  - the Qwen3.5 head shape (16/32, one 1000-token sequence), and one case again with
 *    chunk_prep and chunk_state as two kernels (gdn_chunk_bench_fused = 0).
 * Reports ||x - ref|| / ||ref||; exit 0 only when every case is under tolerance.
 */
#include "../../src/cuda/cuda_ops.h"
#include "gpu_util.h"

extern "C" int gdn_chunk_bench_fused; /* 0: chunk_prep and chunk_state as two kernels */

typedef struct {
    double out, state, conv;
} errs_t;

static errs_t run_case(int Hk, int Hv, const int *lens, int S, hs_dtype_t sdt, int slice_rows, bool with_state,
                       uint64_t seed) {
    rng_seed(seed);
    const int dk = 128, dv = 128, kd = Hk * dk, conv_dim = 2 * kd + Hv * dv, HD = Hv * dv;
    const size_t se = hs_dtype_size(sdt);
    int32_t *ts = (int32_t *)malloc(sizeof(int32_t) * (S + 1)), *np = (int32_t *)malloc(sizeof(int32_t) * S);
    ts[0] = 0;
    for (int s = 0; s < S; s++) {
        ts[s + 1] = ts[s] + lens[s];
        np[s] = (!with_state || s % 3 == 1) ? 0 : 17;
    }
    const int T = ts[S];
    fake_map_t m;
    fake_map_init(&m, S, Hv, conv_dim, slice_rows, se, 160 * 1024, 2);
    size_t pool_bytes = (size_t)m.n_pages * m.page_bytes;
    uint8_t *pool = (uint8_t *)malloc(pool_bytes);
    for (size_t i = 0; i < pool_bytes / 2; i++) ((uint16_t *)pool)[i] = bfr(0.3 * rng_n());
    if (sdt == HS_F32)
        for (size_t i = 0; i < pool_bytes / 4; i++) ((float *)pool)[i] = (float)(0.1 * rng_n());
    for (int s = 0; s < S; s++) {
        uint16_t *c = (uint16_t *)(pool + fake_addr(&m, s, m.conv));
        for (int i = 0; i < 3 * conv_dim; i++) c[i] = bfr(rng_n());
    }
    gdn_inputs_t in;
    gdn_inputs_make(&in, T, conv_dim, Hv, dv);

    void *d_pool = dupload(pool, pool_bytes);
    void *d_qkv = in.d_qkv, *d_z = in.d_z, *d_b = in.d_b, *d_a = in.d_a, *d_cw = in.d_cw;
    float *d_Al = in.d_Al, *d_dtb = in.d_dtb, *d_nw = in.d_nw;
    int32_t *d_ts = (int32_t *)dupload(ts, 4 * (S + 1)), *d_np = (int32_t *)dupload(np, 4 * S);
    int32_t *d_pages = (int32_t *)dupload(m.pages, 4 * (size_t)S * m.E);
    sm_loc_t *d_loc = (sm_loc_t *)dupload(m.ssm, sizeof(sm_loc_t) * Hv * m.n_slices);
    void *d_qn = dmalloc(2 * (size_t)T * kd), *d_kn = dmalloc(2 * (size_t)T * kd), *d_v = dmalloc(2 * (size_t)T * HD);
    float *d_g = (float *)dmalloc(4 * (size_t)T * Hv), *d_beta = (float *)dmalloc(4 * (size_t)T * Hv);
    void *d_o = dmalloc(2 * (size_t)T * HD), *d_out = dmalloc(2 * (size_t)T * HD);
    void *d_ws = dmalloc(gdn_chunk_workspace_bytes(T, Hv));
    CK(cudaMemset(d_o, 0xff, 2 * (size_t)T * HD));
    CK(cudaMemset(d_out, 0xff, 2 * (size_t)T * HD));
    CK(cudaMemset(d_ws, 0xff, gdn_chunk_workspace_bytes(T, Hv)));
    gdn_state_t st = {d_pool, m.page_bytes, d_pages, m.E, d_loc, slice_rows, m.conv, sdt};
    CKRC(gdn_prefill_prep_launch(d_qkv, d_b, d_a, d_cw, d_Al, d_dtb, d_ts, d_np, S, T, Hk, Hv, dk, dv,
                                 with_state ? &st : NULL, d_qn, d_kn, d_v, d_g, d_beta, 0, NULL));
    CKRC(gdn_chunk_launch(d_qn, d_kn, d_v, d_g, d_beta, d_ts, ts, d_np, S, T, Hk, Hv, with_state ? &st : NULL, d_ws,
                          d_o, NULL));
    CKRC(gdn_gated_norm_launch(d_o, d_z, 0, d_nw, T, Hv, dv, 1e-6f, d_out, NULL));
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    uint16_t *out = (uint16_t *)malloc(2 * (size_t)T * HD), *o = (uint16_t *)malloc(2 * (size_t)T * HD);
    uint8_t *pool2 = (uint8_t *)malloc(pool_bytes);
    CK(cudaMemcpy(out, d_out, 2 * (size_t)T * HD, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(o, d_o, 2 * (size_t)T * HD, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(pool2, d_pool, pool_bytes, cudaMemcpyDeviceToHost));

    relerr_t eo = {0, 0}, es = {0, 0}, ec = {0, 0}, eraw = {0, 0};
    gdn_ref_t R;
    gdn_ref_init(&R, Hk, Hv);
    for (int s = 0; s < S; s++) {
        gdn_ref_load(&R, &m, pool, s, with_state && np[s] > 0, sdt);
        for (int t = ts[s]; t < ts[s + 1]; t++) {
            gdn_ref_token(&R, &in, t);
            for (int h = 0; h < Hv; h++)
                for (int v = 0; v < dv; v++) {
                    relerr_add(&eo, bfv(out[(size_t)t * HD + h * dv + v]), gdn_ref_gated(&R, &in, t, h, v));
                    relerr_add(&eraw, bfv(o[(size_t)t * HD + h * dv + v]), R.o[h * dv + v]);
                }
        }
        if (with_state) gdn_ref_check(&R, &m, pool2, s, sdt, &ec, &es);
    }
    printf("    (raw o before the gated norm: %.2e)\n", relerr(&eraw));
    errs_t e = {relerr(&eo), relerr(&es), relerr(&ec)};
    gdn_inputs_free(&in);
    cudaFree(d_pool); cudaFree(d_ts); cudaFree(d_np); cudaFree(d_pages);
    cudaFree(d_loc); cudaFree(d_qn); cudaFree(d_kn); cudaFree(d_v); cudaFree(d_g); cudaFree(d_beta);
    cudaFree(d_o); cudaFree(d_out); cudaFree(d_ws);
    gdn_ref_free(&R);
    free(out); free(o); free(pool2); free(pool);
    free(ts); free(np);
    fake_map_free(&m);
    return e;
}

int main(void) {
    static const int l1[] = {1, 3, 63, 64, 65, 200};
    static const int l2[] = {130, 7, 64, 129};
    static const int l3[] = {1000};
    static const int l4[] = {300, 2, 77};
    struct { int Hk, Hv; const int *lens; int S; hs_dtype_t dt; int slice; bool st; } cases[] = {
        {2, 4, l1, 6, HS_F32, 128, true},  {2, 4, l2, 4, HS_BF16, 32, true}, {1, 2, l3, 1, HS_F32, 64, true},
        {2, 2, l4, 3, HS_F32, 128, false}, {4, 16, l2, 4, HS_F32, 128, true}, {1, 3, l4, 3, HS_BF16, 128, true},
        {16, 32, l3, 1, HS_F32, 128, true}, /* the Qwen3.5 shape: the fused pass (prep overlapped) */
        {2, 4, l1, 6, HS_F32, 128, true},   /* case 0 again with the two kernels apart */
    };
    const int n = (int)(sizeof cases / sizeof cases[0]);
    int fails = 0;
    printf("%-30s %10s %10s %10s  %s\n", "case", "out", "state", "conv", "result");
    for (int i = 0; i < n; i++) {
        gdn_chunk_bench_fused = i != n - 1;
        errs_t e = run_case(cases[i].Hk, cases[i].Hv, cases[i].lens, cases[i].S, cases[i].dt, cases[i].slice,
                            cases[i].st, 2000 + i);
        bool ok = e.out < 2e-2 && (!cases[i].st || (e.state < 2e-2 && e.conv == 0.0)) && !isnan(e.out) && !isnan(e.state);
        fails += !ok;
        char name[64];
        int T = 0;
        for (int s = 0; s < cases[i].S; s++) T += cases[i].lens[s];
        snprintf(name, sizeof name, "%d/%d S%d T%d %s s%d%s%s", cases[i].Hk, cases[i].Hv, cases[i].S, T,
                 hs_dtype_name(cases[i].dt), cases[i].slice, cases[i].st ? "" : " nostate",
                 gdn_chunk_bench_fused ? "" : " unfused");
        printf("%-30s %10.2e %10.2e %10.2e  %s\n", name, e.out, e.state, e.conv, ok ? "ok" : "FAIL");
    }
    printf("test_gdn_prefill: %d/%d cases passed\n", n - fails, n);
    return fails ? 1 : 0;
}
