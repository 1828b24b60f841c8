/*
 * test_attn_decode: paged GQA decode attention (src/cuda/attn_decode.cu) against a
 * float64 CPU reference: softmax(q k^T * scale) v over each sequence's cached tokens,
 * times sigmoid(gate) when given. Random bf16 q, K, V in shuffled pages of the layout.h
 * block layout (two attention layers, the second tested), lengths around block and
 * tile edges, forced split counts, each tile-shape variant of the kernel (attn_decode_config).
 * Outputs are poisoned with NaN first. Reports ||out - ref|| / ||ref||.
 * "late" cases: as in a model step, a kernel launched just before (programmatic dependent
 * launch, like k_qk_prep) writes q and each sequence's newest K/V row (token len - 1), and
 * writes them only after spinning 20 us, with the newest key made to dominate its head's
 * scores; the decode kernel loads cached tokens before griddepcontrol.wait, so a tile that
 * held the newest token and were loaded early would read the stale row and fail here.
 */
#include "../../src/cuda/cuda_common.cuh"
#include "../../src/cuda/cuda_ops.h"
#include "gpu_util.h"

/* The late writer: triggers its dependents at once, spins, then copies n 16-byte chunks
 * src[i] -> dst + off[i] (the newest K/V rows and q). */
__global__ void late_writer(const uint4 *src, char *dst_pool, const size_t *off, int n_pool, const uint4 *q_src,
                            uint4 *q_dst, int n_q, long long spin_ns) {
    pdl_trigger();
    pdl_wait();
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); while ((long long)(t - t0) < spin_ns);
    for (int i = threadIdx.x; i < n_pool; i += blockDim.x) *reinterpret_cast<uint4 *>(dst_pool + off[i]) = src[i];
    for (int i = threadIdx.x; i < n_q; i += blockDim.x) q_dst[i] = q_src[i];
}

static double run_case(int Hq, int Hkv, const int *lens, int S, int bs, bool use_gate, int split, bool late,
                       uint64_t seed) {
    rng_seed(seed);
    const int D = 256, n_attn = 2, a = 1;
    size_t layer_bytes = 2 * (size_t)bs * Hkv * D * 2, page_bytes = n_attn * layer_bytes;
    int max_len = 0, max_blocks = 0, total_blocks = 0;
    for (int s = 0; s < S; s++) {
        if (lens[s] > max_len) max_len = lens[s];
        int nb = (lens[s] + bs - 1) / bs;
        if (nb > max_blocks) max_blocks = nb;
        total_blocks += nb;
    }
    int n_pages = total_blocks + 5;
    int32_t *perm = (int32_t *)malloc(sizeof(int32_t) * n_pages);
    shuffled_ids(perm, n_pages);
    int32_t *bt = (int32_t *)malloc(4 * (size_t)S * max_blocks);
    int k = 0;
    for (int s = 0; s < S; s++)
        for (int b = 0; b < max_blocks; b++) bt[s * max_blocks + b] = b < (lens[s] + bs - 1) / bs ? perm[k++] : -1;
    size_t pool_elems = (size_t)n_pages * page_bytes / 2;
    uint16_t *pool = (uint16_t *)malloc(pool_elems * 2);
    fill_bf16(pool, NULL, pool_elems, 1.0);
    uint16_t *q = (uint16_t *)malloc(2 * (size_t)S * Hq * D), *gate = (uint16_t *)malloc(2 * (size_t)S * Hq * D);
    fill_bf16(q, NULL, (size_t)S * Hq * D, 1.0);
    fill_bf16(gate, NULL, (size_t)S * Hq * D, 1.0);
    int32_t *sl = (int32_t *)malloc(4 * S);
    for (int s = 0; s < S; s++) sl[s] = lens[s];
    void *d_pool = dupload(pool, pool_elems * 2), *d_q = dupload(q, 2 * (size_t)S * Hq * D);
    void *d_gate = dupload(gate, 2 * (size_t)S * Hq * D);
    int32_t *d_bt = (int32_t *)dupload(bt, 4 * (size_t)S * max_blocks), *d_sl = (int32_t *)dupload(sl, 4 * S);
    void *d_out = dmalloc(2 * (size_t)S * Hq * D);
    void *d_ws = dmalloc(attn_decode_workspace_bytes(S, Hq, max_len, split));
    CK(cudaMemset(d_out, 0xff, 2 * (size_t)S * Hq * D));
    const float scale = 1.0f / 16.0f;
    const int G = Hq / Hkv;
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    void *late_bufs[4] = {NULL, NULL, NULL, NULL};
    if (late) {
        /* new host values (the reference's): q, and per (sequence, KV head) the newest K row =
         * 2 x the group's first q row (its score dominates) and a V row of scale 4; the device
         * keeps the old ones until the writer runs */
        const int cpr = D * 2 / 16; /* 16-byte chunks per row */
        const int n_pool = S * Hkv * 2 * cpr;
        uint16_t *rows = (uint16_t *)malloc((size_t)n_pool * 16);
        size_t *off = (size_t *)malloc(sizeof(size_t) * n_pool);
        fill_bf16(q, NULL, (size_t)S * Hq * D, 1.0);
        for (int s = 0; s < S; s++) {
            const int t = lens[s] - 1;
            for (int kh = 0; kh < Hkv; kh++)
                for (int kv = 0; kv < 2; kv++) {
                    const size_t e0 = ((size_t)bt[s * max_blocks + t / bs] * page_bytes + a * layer_bytes +
                                       (size_t)kv * bs * Hkv * D * 2 + ((size_t)(t % bs) * Hkv + kh) * D * 2);
                    const int r = (s * Hkv + kh) * 2 + kv;
                    for (int i = 0; i < D; i++) {
                        const double qv = bfv(q[((size_t)s * Hq + kh * G) * D + i]);
                        const uint16_t v = kv ? bfr(4.0 * rng_n()) : bfr(2.0 * qv);
                        rows[(size_t)r * D + i] = v;
                        pool[e0 / 2 + i] = v;
                    }
                    for (int c = 0; c < cpr; c++) off[r * cpr + c] = e0 + 16 * (size_t)c;
                }
        }
        late_bufs[0] = dupload(rows, (size_t)n_pool * 16);
        late_bufs[1] = dupload(off, sizeof(size_t) * n_pool);
        late_bufs[2] = dupload(q, 2 * (size_t)S * Hq * D);
        CK(cudaStreamSynchronize(st));
        CK(launch_pdl(late_writer, dim3(1), dim3(256), 0, st, (const uint4 *)late_bufs[0], (char *)d_pool,
                      (const size_t *)late_bufs[1], n_pool, (const uint4 *)late_bufs[2], (uint4 *)d_q,
                      S * Hq * D * 2 / 16, 20000ll));
        free(rows);
        free(off);
    }
    CKRC(attn_decode_launch(d_q, d_pool, page_bytes, d_bt, max_blocks, d_sl, S, max_len, (size_t)a * layer_bytes, bs,
                            Hq, Hkv, D, scale, use_gate ? d_gate : NULL, d_ws, d_out, split, st));
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    for (int i = 0; i < 4; i++) cudaFree(late_bufs[i]);
    CK(cudaStreamDestroy(st));
    uint16_t *out = (uint16_t *)malloc(2 * (size_t)S * Hq * D);
    CK(cudaMemcpy(out, d_out, 2 * (size_t)S * Hq * D, cudaMemcpyDeviceToHost));
    relerr_t e = {0, 0};
    double *sc = (double *)malloc(sizeof(double) * max_len), o[256];
    for (int s = 0; s < S; s++)
        for (int h = 0; h < Hq; h++) {
            const int kh = h / G;
            double mx = -1e300;
            for (int t = 0; t < lens[s]; t++) {
                const uint16_t *kr = pool + ((size_t)bt[s * max_blocks + t / bs] * page_bytes + a * layer_bytes +
                                             ((size_t)(t % bs) * Hkv + kh) * D * 2) / 2;
                double d = 0;
                for (int i = 0; i < D; i++) d += bfv(q[((size_t)s * Hq + h) * D + i]) * bfv(kr[i]);
                sc[t] = d * scale;
                if (sc[t] > mx) mx = sc[t];
            }
            double L = 0;
            for (int i = 0; i < D; i++) o[i] = 0;
            for (int t = 0; t < lens[s]; t++) {
                double pr = exp(sc[t] - mx);
                L += pr;
                const uint16_t *vr = pool + ((size_t)bt[s * max_blocks + t / bs] * page_bytes + a * layer_bytes +
                                             (size_t)bs * Hkv * D * 2 + ((size_t)(t % bs) * Hkv + kh) * D * 2) / 2;
                for (int i = 0; i < D; i++) o[i] += pr * bfv(vr[i]);
            }
            for (int i = 0; i < D; i++) {
                double want = o[i] / L;
                if (use_gate) want *= 1.0 / (1.0 + exp(-bfv(gate[((size_t)s * Hq + h) * D + i])));
                relerr_add(&e, bfv(out[((size_t)s * Hq + h) * D + i]), want);
            }
        }
    cudaFree(d_pool); cudaFree(d_q); cudaFree(d_gate); cudaFree(d_bt); cudaFree(d_sl); cudaFree(d_out); cudaFree(d_ws);
    free(perm); free(bt); free(pool); free(q); free(gate); free(sl); free(out); free(sc);
    return relerr(&e);
}

int main(void) {
    static const int l1[] = {1, 15, 16, 17, 33, 300};
    static const int l2[] = {2000, 5, 777};
    static const int l3[] = {8192};
    static const int l4[] = {4097, 63};
    struct { int Hq, Hkv; const int *lens; int S, bs; bool gate; int split; } cases[] = {
        {16, 4, l1, 6, 16, true, 0}, {16, 4, l2, 3, 16, false, 0}, {16, 2, l2, 3, 16, true, 3},
        {8, 8, l1, 6, 16, true, 1},  {24, 4, l2, 3, 32, true, 0},  {16, 4, l3, 1, 16, true, 0},
        {32, 4, l1, 6, 16, false, 2}, {16, 4, l2, 3, 16, true, 7}, {16, 4, l4, 2, 16, true, 0},
        {16, 4, l3, 1, 16, true, 200}, /* 128 splits: the merge's loads come in two batches */
    };
    const int n = (int)(sizeof cases / sizeof cases[0]);
    static const int late_cases[] = {0, 2, 5, 8, 9}; /* also run with the late writer */
    const int nl = (int)(sizeof late_cases / sizeof late_cases[0]);
    int fails = 0, total = 0;
    printf("%-30s %10s  %s\n", "case", "out", "result");
    for (int var = 0; var < 4; var++) { /* 3: the default, by batch */
        attn_decode_config(var, 1);
        for (int k = 0; k < n + nl; k++) {
            const bool late = k >= n;
            const int i = late ? late_cases[k - n] : k;
            double e = run_case(cases[i].Hq, cases[i].Hkv, cases[i].lens, cases[i].S, cases[i].bs, cases[i].gate,
                                cases[i].split, late, 3000 + i);
            bool ok = e < 8e-3 && !isnan(e);
            fails += !ok;
            total++;
            char name[64];
            snprintf(name, sizeof name, "v%d %d/%d S%d bs%d%s sp%d%s", var, cases[i].Hq, cases[i].Hkv, cases[i].S,
                     cases[i].bs, cases[i].gate ? " gate" : "", cases[i].split, late ? " late" : "");
            printf("%-30s %10.2e  %s\n", name, e, ok ? "ok" : "FAIL");
        }
    }
    attn_decode_config(3, 1);
    printf("test_attn_decode: %d/%d cases passed\n", total - fails, total);
    return fails ? 1 : 0;
}
