/*
 * bench_moe: time one MoE layer (src/cuda/moe.cu) at Qwen3.5-35B-A3B's shapes (E 256,
 * top-8, I 512, shared expert Is 512 with its sigmoid gate, H 2048), router GEMM
 * included, for T = 1, 16, 128, 1024, 8192 tokens: the old path (ids to the host, cuBLAS
 * per expert), the new one (auto tile choice, then each tile forced), and the new one
 * replayed from a CUDA graph (the old one cannot be captured).
 *
 * Method: NL = 4 layers of distinct weights (4 x 1.6 GB, far over the L2) are called in
 * turn, so every call reads its expert weights from DRAM; x is N(0, 1) and the router
 * random, so routing is close to uniform. Per (T, path): 2 warm-up rounds, then 5 rounds
 * of NL calls timed with events; the figure is the median round / NL. TB/s counts the
 * weight bytes the layer must read (router, the experts actually routed to (counted on
 * the device), shared expert and gate) plus x and out once; TFLOP/s counts 2 flops per
 * multiply-add of the router, routed expert and shared expert GEMMs.
 * Usage: bench_moe [T]   (one T only). Output: one line per (T, path).
 */
#include <cublas_v2.h>

#include <algorithm>
#include <vector>

#include "../src/cuda/moe.h"
#include "../tests/gpu/gpu_util.h"


int main(int argc, char **argv) {
    const int only_T = argc > 1 ? atoi(argv[1]) : 0;
    const int E = 256, k = 8, I = 512, Is = 512, H = 2048, NL = 4;
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
    printf("copy: %.3f TB/s (device-to-device, read + write)\n", gpu_copy_tbs());
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    cublasHandle_t blas;
    if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS || cublasSetStream(blas, st) != CUBLAS_STATUS_SUCCESS) return 2;
    moe_ctx_t *m = moe_ctx_create(blas, st);
    if (!m) return 2;
    /* NL layers */
    std::vector<moe_layer_t> L(NL);
    std::vector<std::vector<const void *>> pg(NL), pd(NL);
    for (int l = 0; l < NL; l++) {
        const uint64_t s = 1000 * (l + 1);
        char *gu = (char *)dev_uniform_bf16((size_t)E * 2 * I * H, s + 1, sqrtf(3.f / H));
        char *dn = (char *)dev_uniform_bf16((size_t)E * H * I, s + 2, sqrtf(3.f / I));
        pg[l].resize(E), pd[l].resize(E);
        for (int e = 0; e < E; e++) pg[l][e] = gu + (size_t)e * 2 * I * H * 2, pd[l][e] = dn + (size_t)e * H * I * 2;
        L[l] = {dev_uniform_bf16((size_t)E * H, s + 3, 0.05f), pg[l].data(), pd[l].data(), pg[l].data(),
                dev_uniform_bf16((size_t)2 * Is * H, s + 4, sqrtf(3.f / H)), dev_uniform_bf16((size_t)H * Is, s + 5, sqrtf(3.f / Is)),
                dev_uniform_bf16((size_t)H, s + 6, sqrtf(3.f / H)), E, k, 1, I, Is, H};
    }
    const int Ts[5] = {1, 16, 128, 1024, 8192};
    const int paths[7] = {MOE_PATH_HOST,  MOE_PATH_AUTO,      MOE_PATH_SMALL, MOE_PATH_MEDIUM,
                          MOE_PATH_LARGE, MOE_PATH_LARGE_K64, MOE_PATH_WIDE};
    const char *pn[8] = {"old (host)", "new auto", "new small", "new medium",
                         "new large",  "new k64",  "new wide",  "new graph"};
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    printf("%6s %-11s %10s %8s %9s %7s\n", "T", "path", "us/layer", "TB/s", "TFLOP/s", "experts");
    for (int T : Ts) {
        if (only_T && T != only_T) continue;
        void *x = dev_uniform_bf16((size_t)T * H, 77 + T, 1.7f), *out = dmalloc((size_t)T * H * 2);
        /* bytes and flops from the routed experts of each layer */
        double bytes = 0, flops = 0, n_act = 0;
        std::vector<int32_t> cnt(E);
        for (int l = 0; l < NL; l++) {
            CKRC(moe_forward(m, &L[l], x, NULL, T, out, MOE_PATH_AUTO, NULL, 0));
            CKRC(moe_last_counts(m, cnt.data(), E));
            int act = 0;
            for (int e = 0; e < E; e++) act += cnt[e] > 0;
            n_act += act;
            bytes += 2.0 * ((double)act * 3 * I * H + (double)E * H + 3.0 * Is * H + H) + 2.0 * 2 * T * H;
            flops += 2.0 * T * ((double)k * 3 * I * H + 3.0 * Is * H + (double)E * H + H);
        }
        bytes /= NL, flops /= NL, n_act /= NL;
        for (int pi = 0; pi < 8; pi++) {
            cudaGraphExec_t ge = NULL;
            if (pi == 7) {
                cudaGraph_t g;
                CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
                for (int l = 0; l < NL; l++) CKRC(moe_forward(m, &L[l], x, NULL, T, out, MOE_PATH_AUTO, NULL, 0));
                CK(cudaStreamEndCapture(st, &g));
                CK(cudaGraphInstantiate(&ge, g, 0));
                CK(cudaGraphDestroy(g));
            }
            std::vector<float> t;
            for (int r = 0; r < 7; r++) {
                CK(cudaEventRecord(e0, st));
                if (ge) CK(cudaGraphLaunch(ge, st));
                else
                    for (int l = 0; l < NL; l++) CKRC(moe_forward(m, &L[l], x, NULL, T, out, paths[pi], NULL, 0));
                CK(cudaEventRecord(e1, st));
                CK(cudaEventSynchronize(e1));
                float ms;
                CK(cudaEventElapsedTime(&ms, e0, e1));
                if (r >= 2) t.push_back(ms / NL);
            }
            if (ge) CK(cudaGraphExecDestroy(ge));
            std::sort(t.begin(), t.end());
            const double s = t[t.size() / 2] * 1e-3;
            printf("%6d %-11s %10.1f %8.3f %9.1f %7.1f\n", T, pn[pi], s * 1e6, bytes / s / 1e12, flops / s / 1e12,
                   n_act);
            fflush(stdout);
        }
        CK(cudaFree(x));
        CK(cudaFree(out));
    }
    moe_ctx_destroy(m);
    cublasDestroy(blas);
    return 0;
}
