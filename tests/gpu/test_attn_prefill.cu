/*
 * test_attn_prefill: the paged flash-attention prefill kernel (src/cuda/attn_prefill.cu)
 * against a float64 CPU reference: token i of sequence s (position n_past + i) attends
 * to keys 0 .. n_past + i of its sequence, softmax(q k^T * scale) v, times sigmoid(gate)
 * when given. Random bf16 q, K, V; every key in shuffled pages of the layout.h block
 * layout (two attention layers, the second tested); varlen batches with cached prefixes,
 * lengths around block, query-tile and key-tile edges; GQA 1, 2, 4, 6, 8; D 256, 128
 * and 64 (zero-padded); both block shapes (64 and 128 query rows); outputs poisoned with NaN first; with s0 > 0 the rows of the
 * first sequences must stay untouched. Reports ||out - ref|| / ||ref||.
 */
#include "../../src/cuda/attn_prefill.h"
#include "gpu_util.h"

typedef struct {
    int n_past, len;
} seg_t;

static double run_case(int Hq, int Hkv, int D, int bs, const seg_t *segs, int S, int s0, bool use_gate,
                       uint64_t seed, int *untouched_bad) {
    rng_seed(seed);
    const int n_attn = 2, a = 1;
    const size_t layer_bytes = 2 * (size_t)bs * Hkv * D * 2, page_bytes = n_attn * layer_bytes;
    int max_blocks = 0, total_blocks = 0, T = 0;
    int32_t *ts = (int32_t *)malloc(4 * (size_t)(S + 1)), *np = (int32_t *)malloc(4 * (size_t)S);
    ts[0] = 0;
    for (int s = 0; s < S; s++) {
        const int nb = (segs[s].n_past + segs[s].len + bs - 1) / bs;
        if (nb > max_blocks) max_blocks = nb;
        total_blocks += nb;
        ts[s + 1] = ts[s] + segs[s].len;
        np[s] = segs[s].n_past;
    }
    T = ts[S];
    const int n_pages = total_blocks + 3;
    int32_t *perm = (int32_t *)malloc(sizeof(int32_t) * n_pages);
    shuffled_ids(perm, n_pages);
    int32_t *bt = (int32_t *)malloc(4 * (size_t)S * max_blocks);
    int k = 0;
    for (int s = 0; s < S; s++) {
        const int nb = (segs[s].n_past + segs[s].len + bs - 1) / bs;
        for (int b = 0; b < max_blocks; b++) bt[s * max_blocks + b] = b < nb ? perm[k++] : -1;
    }
    const size_t pool_elems = (size_t)n_pages * page_bytes / 2, qn = (size_t)T * Hq * D;
    uint16_t *pool = (uint16_t *)malloc(pool_elems * 2), *q = (uint16_t *)malloc(2 * qn);
    uint16_t *gate = (uint16_t *)malloc(2 * qn), *out = (uint16_t *)malloc(2 * qn);
    fill_bf16(pool, NULL, pool_elems, 1.0);
    fill_bf16(q, NULL, qn, 1.0);
    fill_bf16(gate, NULL, qn, 1.0);
    void *d_pool = dupload(pool, pool_elems * 2), *d_q = dupload(q, 2 * qn), *d_gate = dupload(gate, 2 * qn);
    int32_t *d_bt = (int32_t *)dupload(bt, 4 * (size_t)S * max_blocks);
    int32_t *d_ts = (int32_t *)dupload(ts, 4 * (size_t)(S + 1)), *d_np = (int32_t *)dupload(np, 4 * (size_t)S);
    void *d_out = dmalloc(2 * qn);
    CK(cudaMemset(d_out, 0xff, 2 * qn));
    const float scale = 1.0f / sqrtf((float)D);
    CKRC(attn_prefill_launch(d_q, use_gate ? d_gate : NULL, d_pool, page_bytes, d_bt, max_blocks, d_ts, d_np, ts, s0,
                             S, (size_t)a * layer_bytes, bs, Hq, Hkv, D, scale, d_out, NULL));
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(out, d_out, 2 * qn, cudaMemcpyDeviceToHost));
    relerr_t e = {0, 0};
    const int G = Hq / Hkv;
    int bad = 0;
    for (int t = 0; t < ts[s0] * Hq * D; t++) bad += out[t] != 0xffff;
    *untouched_bad = bad;
    double *sc = (double *)malloc(sizeof(double) * (size_t)(segs[0].n_past + 8192)), *o = (double *)malloc(8 * D);
    for (int s = s0; s < S; s++)
        for (int i = 0; i < segs[s].len; i++) {
            const int t = ts[s] + i, nk = segs[s].n_past + i + 1;
            sc = (double *)realloc(sc, sizeof(double) * nk);
            for (int h = 0; h < Hq; h++) {
                const int kh = h / G;
                double mx = -1e300;
                for (int key = 0; key < nk; key++) {
                    const uint16_t *kr = pool + ((size_t)bt[s * max_blocks + key / bs] * page_bytes +
                                                 a * layer_bytes + ((size_t)(key % bs) * Hkv + kh) * D * 2) / 2;
                    double d = 0;
                    for (int x = 0; x < D; x++) d += bfv(q[((size_t)t * Hq + h) * D + x]) * bfv(kr[x]);
                    sc[key] = d * scale;
                    if (sc[key] > mx) mx = sc[key];
                }
                double L = 0;
                for (int x = 0; x < D; x++) o[x] = 0;
                for (int key = 0; key < nk; key++) {
                    const double pr = exp(sc[key] - mx);
                    L += pr;
                    const uint16_t *vr = pool + ((size_t)bt[s * max_blocks + key / bs] * page_bytes +
                                                 a * layer_bytes + (size_t)bs * Hkv * D * 2 +
                                                 ((size_t)(key % bs) * Hkv + kh) * D * 2) / 2;
                    for (int x = 0; x < D; x++) o[x] += pr * bfv(vr[x]);
                }
                for (int x = 0; x < D; x++) {
                    double want = o[x] / L;
                    if (use_gate) want *= 1.0 / (1.0 + exp(-bfv(gate[((size_t)t * Hq + h) * D + x])));
                    relerr_add(&e, bfv(out[((size_t)t * Hq + h) * D + x]), want);
                }
            }
        }
    cudaFree(d_pool); cudaFree(d_q); cudaFree(d_gate); cudaFree(d_bt); cudaFree(d_ts); cudaFree(d_np);
    cudaFree(d_out);
    free(ts); free(np); free(perm); free(bt); free(pool); free(q); free(gate); free(out); free(sc); free(o);
    return relerr(&e);
}

int main(void) {
    static const seg_t a[] = {{0, 1}, {0, 17}, {5, 16}, {100, 63}, {31, 129}, {0, 300}, {2000, 50}, {40, 1}};
    static const seg_t b[] = {{0, 65}, {7, 64}, {0, 1}, {33, 31}};
    static const seg_t c[] = {{3, 100}, {0, 11}, {15, 2}};
    static const seg_t d[] = {{0, 200}, {129, 33}};
    static const seg_t e[] = {{0, 130}, {64, 64}, {1, 1}, {500, 77}};
    static const seg_t f[] = {{0, 70}, {10, 5}};
    static const seg_t g[] = {{40, 1}, {17, 1}, {0, 96}, {256, 33}};
    struct {
        int Hq, Hkv, D, bs;
        const seg_t *segs;
        int S, s0;
        bool gate;
    } cases[] = {
        {16, 4, 256, 16, a, 8, 0, true}, {8, 8, 256, 32, b, 4, 0, true}, {24, 4, 256, 16, c, 3, 0, true},
        {32, 4, 256, 16, d, 2, 0, true}, {16, 8, 128, 16, e, 4, 0, true}, {16, 4, 64, 16, f, 2, 0, false},
        {16, 4, 256, 16, g, 4, 2, true}, {16, 4, 256, 16, a, 8, 0, false},
    };
    const int n = (int)(sizeof cases / sizeof cases[0]);
    int fails = 0, total = 0;
    printf("%-38s %10s %10s  %s\n", "case", "out", "untouched", "result");
    for (int var = 1; var <= 2; var++) {
        attn_prefill_config(var);
        for (int i = 0; i < n; i++) {
            int bad = 0;
            const double err = run_case(cases[i].Hq, cases[i].Hkv, cases[i].D, cases[i].bs, cases[i].segs,
                                        cases[i].S, cases[i].s0, cases[i].gate, 7000 + i, &bad);
            const bool ok = err < 8e-3 && !isnan(err) && bad == 0;
            fails += !ok;
            total++;
            char name[80];
            snprintf(name, sizeof name, "BM%d %d/%d D%d bs%d S%d s0=%d%s", var == 1 ? 64 : 128, cases[i].Hq,
                     cases[i].Hkv, cases[i].D, cases[i].bs, cases[i].S, cases[i].s0, cases[i].gate ? " gate" : "");
            printf("%-38s %10.2e %10d  %s\n", name, err, bad, ok ? "ok" : "FAIL");
        }
    }
    attn_prefill_config(0);
    printf("test_attn_prefill: %d/%d cases passed\n", total - fails, total);
    return fails ? 1 : 0;
}
