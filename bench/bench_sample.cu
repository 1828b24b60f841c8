/*
 * bench_sample: one sampling step of n = 1, 32, 128 rows x V = 248,320 fp32 logits
 * (Qwen3.5's vocabulary), on the GPU (bk->sample's sample_run: upload of the row
 * parameters, one block per row, results back, one sync) against the path it replaces
 * (per row: the 1 MB row downloaded to a pageable host buffer, then smp_sample on one
 * core), in the same run on the same logits. Peaked "LLM-like" logits (N(0, 2.5^2)
 * plus 30 tokens at 8..14). Rows rotate through a 128-row buffer (127 MB, above L2);
 * GPU: wall time of sample_run, median of 21 calls; old path: median of 5.
 * Tokens of both paths are compared (counter-based draws: they must agree).
 */
#include <algorithm>
#include <chrono>
#include <vector>

#include "../src/cuda/cuda_sample.h"
#include "../tests/gpu/gpu_util.h"

extern "C" {
#include "sample.h"
}

static double now_ms(void) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

typedef struct {
    const char *name;
    float T, top_p, min_p;
    int top_k, n_top;
} cfg_t;

int main(void) {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s\n", prop.name);
    const int V = 248320, NR = 128;
    rng_seed(7);
    std::vector<float> h((size_t)NR * V);
    for (int r = 0; r < NR; r++) {
        float *x = h.data() + (size_t)r * V;
        for (int i = 0; i < V; i++) x[i] = (float)(2.5 * rng_n());
        for (int j = 0; j < 30; j++) x[(int)(rng_u() * V)] = (float)(8 + 6 * rng_u());
    }
    float *d = (float *)dupload(h.data(), sizeof(float) * h.size());
    void *ws = dmalloc(sample_ws_bytes(NR));
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    float *host_row = (float *)malloc(sizeof(float) * V); /* pageable, as the engine's */
    smp_scratch_t scr;
    smp_scratch_init(&scr, V);

    const cfg_t cfgs[] = {
        {"T0.7 k50 p0.9", 0.7f, 0.9f, 0.f, 50, 0},
        {"T1.0 p0.95", 1.0f, 0.95f, 0.f, 0, 0},
        {"T0.8 (no filter)", 0.8f, 1.f, 0.f, 0, 0},
        {"T0.7 k50 p0.9 top5", 0.7f, 0.9f, 0.f, 50, 5},
    };
    const int ns[3] = {1, 32, 128};
    printf("%-20s %4s %12s %12s %9s %10s\n", "config", "n", "old ms", "gpu ms", "speedup", "mismatch");
    for (const cfg_t &c : cfgs)
        for (int ni = 0; ni < 3; ni++) {
            const int n = ns[ni];
            std::vector<bk_sample_row_t> rows(n);
            std::vector<bk_sample_out_t> out(n);
            auto set_rows = [&](int rep) {
                for (int i = 0; i < n; i++) {
                    bk_sample_row_t &q = rows[i];
                    memset(&q, 0, sizeof q);
                    q.row = (rep * n + i) % NR;
                    q.temperature = c.T, q.top_k = c.top_k, q.top_p = c.top_p, q.min_p = c.min_p, q.n_top = c.n_top;
                    q.seed = 1000 + (uint64_t)i, q.step = (uint64_t)rep;
                }
            };
            std::vector<double> tg;
            for (int rep = 0; rep < 24; rep++) {
                set_rows(rep);
                const double t0 = now_ms();
                CKRC(sample_run(d, V, rows.data(), n, out.data(), ws, st));
                if (rep >= 3) tg.push_back(now_ms() - t0);
            }
            /* old path, and agreement with the GPU tokens of the same rows */
            std::vector<double> to;
            int mismatch = 0;
            for (int rep = 0; rep < 5; rep++) {
                set_rows(rep);
                CKRC(sample_run(d, V, rows.data(), n, out.data(), ws, st));
                hs_sampling_t sp;
                hs_sampling_default(&sp);
                sp.temperature = c.T, sp.top_k = c.top_k, sp.top_p = c.top_p, sp.min_p = c.min_p;
                sp.top_logprobs = c.n_top;
                const double t0 = now_ms();
                for (int i = 0; i < n; i++) {
                    CK(cudaMemcpyAsync(host_row, d + (size_t)rows[i].row * V, sizeof(float) * V,
                                       cudaMemcpyDeviceToHost, st));
                    CK(cudaStreamSynchronize(st));
                    smp_result_t res;
                    smp_sample(host_row, V, &sp, rows[i].seed, rows[i].step, &scr, &res);
                    mismatch += res.token != out[i].token;
                }
                to.push_back(now_ms() - t0);
            }
            const double mo = median(to), mg = median(tg);
            printf("%-20s %4d %12.3f %12.3f %8.1fx %10d\n", c.name, n, mo, mg, mo / mg, mismatch);
            fflush(stdout);
        }
    smp_scratch_free(&scr);
    free(host_row);
    CK(cudaFree(ws));
    CK(cudaFree(d));
    return 0;
}
