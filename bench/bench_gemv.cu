/*
 * bench_gemv: the decode GEMV (src/cuda/gemv.cu) against cuBLAS (cublasGemmEx, exactly as
 * the backend's gemm() calls it) and the backend's cuBLASLt path (gemm_lt: algorithm
 * timed per shape, M >= 2) on every Qwen3.5-9B projection shape, M = 1, 2, 4, 8, 16; the
 * grouped launches (GDN in_proj qkv/z/b/a, attention q/k/v) against one GEMM per weight;
 * the sum over one decode step (24 GDN + 8 attention layers + 32 FFN + lm_head); and all
 * GEMMs of one step with distinct weights (15.9 GB) replayed as one CUDA graph, through
 * cuBLAS, our kernel, the backend's dispatch before the GEMV and the dispatch with it;
 * the dispatch again with programmatic dependent launch off (HS_CUDA_PDL=0's setting), and
 * with one small one-block kernel before every projection (a stand-in for the RMSNorm,
 * SwiGLU, GDN and attention kernels of a real step) with PDL on and off.
 * Also the device copy bandwidth of the same run.
 * Method: weight copies rotated so that the footprint exceeds 4x L2; a CUDA graph of >= 20
 * launches over the copies, median of 15 replays; TB/s = weight bytes / time. Our kernel
 * at the heuristic variant (auto) and at every forced variant (the sweep that tunes it).
 * Usage: bench_gemv [--no-sweep] [--no-step]
 */
#include <cublas_v2.h>

#include <algorithm>
#include <vector>

#include "../src/cuda/cuda_common.cuh"
#include "../src/cuda/gemm_lt.h"
#include "../src/cuda/gemv.h"
#include "../tests/gpu/gpu_util.h"

#define CKB(call)                                                                        \
    do {                                                                                 \
        cublasStatus_t s_ = (call);                                                      \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                               \
            fprintf(stderr, "%s:%d: %s: cublas status %d\n", __FILE__, __LINE__, #call, (int)s_); \
            exit(2);                                                                     \
        }                                                                                \
    } while (0)

__global__ void k_fill(uint16_t *p, size_t n, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = seed * 0x9e3779b97f4a7c15ull + i + 1;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        const float f = (float)(int32_t)(uint32_t)(z >> 32) * (1.0f / 2147483648.0f) * 0.05f;
        p[i] = (uint16_t)(__float_as_uint(f) >> 16);
    }
}
static void *dfill(size_t n, uint64_t seed) {
    uint16_t *p = (uint16_t *)dmalloc(n * 2);
    k_fill<<<2048, 256>>>(p, n, seed);
    CK(cudaGetLastError());
    return p;
}

/* The stand-in small kernel: one block copies n 16-byte vectors, a PDL dependent like the
 * backend's small kernels. */
__global__ void k_tiny(const uint4 *x, uint4 *y, int n) {
    pdl_trigger();
    pdl_wait();
    for (int i = threadIdx.x; i < n; i += blockDim.x) y[i] = x[i];
}

static cublasHandle_t g_blas;
static cudaStream_t g_st;
static gemm_lt_t *g_lt; /* the backend's cuBLASLt path (tuned algorithm per shape) */

static void blas_gemm(const void *x, int M, int K, const void *w, int N, void *out, bool f32) {
    const float one = 1.f, zero = 0.f;
    CKB(cublasGemmEx(g_blas, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_16BF, K, x, CUDA_R_16BF, K, &zero, out,
                     f32 ? CUDA_R_32F : CUDA_R_16BF, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* The backend's GEMM before the GEMV: cuBLASLt (tuned) for 2..256 rows, else cuBLAS. */
static void lt_gemm(const void *x, int M, int K, const void *w, int N, void *out, bool f32) {
    if (M >= 2 && M <= 256 && gemm_lt_run(g_lt, x, w, M, N, K, out, f32, g_st) == HS_OK) return;
    blas_gemm(x, M, K, w, N, out, f32);
}

/* Median per-launch time (µs) of `launch(copy)` over rotating copies, CUDA-graph replay. */
template <class F>
static double time_us(int copies, int min_per, F launch) {
    for (int c = 0; c < copies; c++) launch(c);
    CK(cudaStreamSynchronize(g_st));
    const int per = copies < min_per ? (min_per / copies + 1) * copies : copies;
    cudaGraph_t graph;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(g_st, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < per; i++) launch(i % copies);
    CK(cudaStreamEndCapture(g_st, &graph));
    CK(cudaGraphInstantiate(&ge, graph, 0));
    const double ms = graph_median_ms(ge, g_st, 15);
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(graph));
    return ms * 1e3 / per;
}

static const int MS[5] = {1, 2, 4, 8, 16};

typedef struct {
    const char *name;
    int n;          /* weights in the group (1: a single projection) */
    int N[4];
    int K, f32;
    double blas[5], lt[5], ours[5]; /* µs per M: cublasGemmEx, gemm_lt (M >= 2), ours (heuristic) */
    double ours_nopdl[5];           /* ours (heuristic) launched plainly (PDL off) */
    int best_cfg[5];
    double best[5];
} shape_t;

static void run_shape(shape_t *s, size_t l2, bool sweep, FILE *log) {
    size_t rows = 0;
    for (int i = 0; i < s->n; i++) rows += s->N[i];
    const size_t bytes = rows * s->K * 2;
    const int copies = (int)std::min<size_t>(64, std::max<size_t>(1, 4 * l2 / bytes + 1));
    std::vector<void *> w((size_t)copies * s->n);
    for (int c = 0; c < copies; c++)
        for (int i = 0; i < s->n; i++) w[(size_t)c * s->n + i] = dfill((size_t)s->N[i] * s->K, 1000 + c * 8 + i);
    void *x = dfill((size_t)16 * s->K, 7);
    void *out[4];
    for (int i = 0; i < s->n; i++) out[i] = dmalloc((size_t)16 * s->N[i] * 4);
    CK(cudaDeviceSynchronize());
    const int ncfg = gemv_n_cfgs();
    for (int mi = 0; mi < 5; mi++) {
        const int M = MS[mi];
        s->blas[mi] = time_us(copies, 20, [&](int c) {
            for (int i = 0; i < s->n; i++) blas_gemm(x, M, s->K, w[(size_t)c * s->n + i], s->N[i], out[i], s->f32);
        });
        s->lt[mi] = time_us(copies, 20, [&](int c) {
            for (int i = 0; i < s->n; i++) lt_gemm(x, M, s->K, w[(size_t)c * s->n + i], s->N[i], out[i], s->f32);
        });
        auto ours = [&](int cfg) {
            return time_us(copies, 20, [&](int c) {
                gemv_seg_t segs[4];
                for (int i = 0; i < s->n; i++) segs[i] = gemv_seg_t{w[(size_t)c * s->n + i], s->N[i], out[i], s->f32};
                CKRC(gemv_grouped_launch(x, M, s->K, segs, s->n, cfg, g_st));
            });
        };
        hs_cuda_pdl(0);
        s->ours_nopdl[mi] = ours(0);
        hs_cuda_pdl(1);
        s->ours[mi] = ours(0);
        s->best[mi] = s->ours[mi];
        s->best_cfg[mi] = 0;
        fprintf(log,
                "%-10s M=%2d cublas %9.2f us %6.3f TB/s | gemm_lt %9.2f us | auto %9.2f us %6.3f TB/s (PDL off %.2f us)",
                s->name, M, s->blas[mi], bytes / (s->blas[mi] * 1e-6) / 1e12, s->lt[mi], s->ours[mi],
                bytes / (s->ours[mi] * 1e-6) / 1e12, s->ours_nopdl[mi]);
        if (sweep) {
            fprintf(log, " | sweep");
            for (int cfg = 1; cfg <= ncfg; cfg++) {
                const double t = ours(cfg);
                fprintf(log, " %s %.2f", gemv_cfg_name(cfg), t);
                if (t < s->best[mi]) s->best[mi] = t, s->best_cfg[mi] = cfg;
            }
        }
        fprintf(log, "\n");
        fflush(log);
    }
    for (void *p : w) cudaFree(p);
    cudaFree(x);
    for (int i = 0; i < s->n; i++) cudaFree(out[i]);
}

/* All GEMMs of one 9B decode step with distinct weights, one graph; ms per step. */
static void full_step(FILE *log) {
    const int H = 4096, I = 12288, V = 248320;
    const size_t gdn_rows = 8192 + 4096 + 32 + 32, attn_rows = 8192 + 1024 + 1024;
    const size_t need = ((gdn_rows + 4096) * H * 24 + (attn_rows + 4096) * H * 8 +
                         ((size_t)2 * I * H + (size_t)H * I) * 32 + (size_t)V * H) * 2;
    size_t fr = 0, tot = 0;
    CK(cudaMemGetInfo(&fr, &tot));
    if (fr < need + ((size_t)1 << 30)) {
        fprintf(log, "full step: skipped (%.1f GB free, %.1f GB needed)\n", fr / 1e9, need / 1e9);
        return;
    }
    char *base = (char *)dmalloc(need);
    k_fill<<<4096, 256>>>((uint16_t *)base, need / 2, 99);
    CK(cudaGetLastError());
    void *x = dfill((size_t)16 * I, 5), *act = dfill((size_t)16 * I, 6);
    void *tn = dmalloc((size_t)H * 2);
    void *o1 = dmalloc((size_t)16 * 2 * I * 2), *o2 = dmalloc((size_t)16 * H * 2), *o3 = dmalloc((size_t)16 * 64 * 2),
         *o4 = dmalloc((size_t)16 * 64 * 2), *lo = dmalloc((size_t)16 * V * 4);
    CK(cudaDeviceSynchronize());
    for (int mi = 0; mi < 5; mi++) {
        const int M = MS[mi];
        /* cuBLAS; ours everywhere; the backend's dispatch (gemv_max_m, then gemm_lt / cuBLAS);
         * the dispatch before the GEMV (gemm_lt / cuBLAS, one GEMM per weight); the dispatch
         * with PDL off; the dispatch with a small kernel before each projection, PDL on / off */
        double t[7];
        for (int run = 0; run < 7; run++) {
            hs_cuda_pdl(run == 4 || run == 6 ? 0 : 1);
            const int impl = run >= 4 ? 2 : run; /* runs 4..6: the dispatch */
            const bool small = run >= 5;
            t[run] = time_us(1, 1, [&](int) {
                char *p = base;
                auto take = [&](size_t r, size_t k) {
                    void *q = p;
                    p += r * k * 2;
                    return q;
                };
                auto tiny = [&]() {
                    if (!small) return;
                    CK(launch_pdl(k_tiny, dim3(1), dim3(512), 0, g_st, (const uint4 *)act, (uint4 *)tn, H / 8));
                };
                auto lin = [&](const void *xx, int K, void *ww, int N, void *oo, bool f32) {
                    tiny();
                    if (impl == 0) blas_gemm(xx, M, K, ww, N, oo, f32);
                    else if (impl == 3 || (impl == 2 && M > gemv_max_m(N, K))) lt_gemm(xx, M, K, ww, N, oo, f32);
                    else CKRC(gemv_launch(xx, M, K, ww, N, oo, f32, 0, g_st));
                };
                for (int l = 0; l < 32; l++) {
                    if (l % 4 != 3) { /* GDN: in_proj qkv, z, b, a; out_proj */
                        void *wq = take(8192, H), *wz = take(4096, H), *wb = take(32, H), *wa = take(32, H);
                        if (impl == 0 || impl == 3 || (impl == 2 && M > gemv_grouped_max_m(4, H))) {
                            lin(x, H, wq, 8192, o1, false);
                            lin(x, H, wz, 4096, o2, false);
                            lin(x, H, wb, 32, o3, false);
                            lin(x, H, wa, 32, o4, false);
                        } else {
                            gemv_seg_t s[4] = {{wq, 8192, o1, 0}, {wz, 4096, o2, 0}, {wb, 32, o3, 0}, {wa, 32, o4, 0}};
                            tiny();
                            CKRC(gemv_grouped_launch(x, M, H, s, 4, 0, g_st));
                        }
                        lin(act, H, take(4096, H), 4096, o2, false);
                    } else { /* attention: q, k, v; o */
                        void *wq = take(8192, H), *wk = take(1024, H), *wv = take(1024, H);
                        if (impl == 0 || impl == 3 || (impl == 2 && M > gemv_grouped_max_m(3, H))) {
                            lin(x, H, wq, 8192, o1, false);
                            lin(x, H, wk, 1024, o2, false);
                            lin(x, H, wv, 1024, o3, false);
                        } else {
                            gemv_seg_t s[3] = {{wq, 8192, o1, 0}, {wk, 1024, o2, 0}, {wv, 1024, o3, 0}};
                            tiny();
                            CKRC(gemv_grouped_launch(x, M, H, s, 3, 0, g_st));
                        }
                        lin(act, H, take(4096, H), 4096, o2, false);
                    }
                    lin(x, H, take(2 * I, H), 2 * I, o1, false); /* FFN gate_up, down */
                    lin(act, I, take(H, I), H, o2, false);
                }
                lin(x, H, take(V, H), V, lo, true);
            });
        }
        fprintf(log,
                "full step graph M=%2d: cublas %.3f ms (%.3f TB/s) | ours %.3f ms (%.3f TB/s) | before (gemm_lt) "
                "%.3f ms | dispatch %.3f ms (%.3f TB/s) | before / dispatch %.2fx\n",
                M, t[0] / 1e3, need / (t[0] * 1e-6) / 1e12, t[1] / 1e3, need / (t[1] * 1e-6) / 1e12, t[3] / 1e3,
                t[2] / 1e3, need / (t[2] * 1e-6) / 1e12, t[3] / t[2]);
        fprintf(log,
                "full step graph M=%2d: dispatch PDL on %.3f ms | PDL off %.3f ms | with a small kernel before each "
                "projection: PDL on %.3f ms, off %.3f ms\n",
                M, t[2] / 1e3, t[4] / 1e3, t[5] / 1e3, t[6] / 1e3);
        fflush(log);
    }
    hs_cuda_pdl(1);
    cudaFree(tn);
    cudaFree(base); cudaFree(x); cudaFree(act); cudaFree(o1); cudaFree(o2); cudaFree(o3); cudaFree(o4); cudaFree(lo);
}

int main(int argc, char **argv) {
    bool sweep = true, step = true;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--no-sweep")) sweep = false;
        if (!strcmp(argv[i], "--no-step")) step = false;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
    CK(cudaStreamCreateWithFlags(&g_st, cudaStreamNonBlocking));
    CKB(cublasCreate(&g_blas));
    CKB(cublasSetStream(g_blas, g_st));
    const size_t lt_ws = 32u << 20;
    g_lt = gemm_lt_create(dmalloc(lt_ws), lt_ws);
    if (!g_lt) {
        fprintf(stderr, "gemm_lt_create failed\n");
        return 2;
    }
    printf("copy: %.3f TB/s (cudaMemcpy D2D 1 GiB, read + write)\n", gpu_copy_tbs());
    shape_t sh[9];
    memset(sh, 0, sizeof sh);
    const struct {
        const char *name;
        int n, N[4], K, f32;
    } def[9] = {
        {"qkv", 1, {8192}, 4096, 0},       {"z/out/o", 1, {4096}, 4096, 0},  {"b/a", 1, {32}, 4096, 0},
        {"k/v", 1, {1024}, 4096, 0},       {"gate_up", 1, {24576}, 4096, 0}, {"down", 1, {4096}, 12288, 0},
        {"lm_head", 1, {248320}, 4096, 1}, {"gdn_in", 4, {8192, 4096, 32, 32}, 4096, 0},
        {"attn_in", 3, {8192, 1024, 1024}, 4096, 0},
    };
    for (int i = 0; i < 9; i++) {
        sh[i].name = def[i].name;
        sh[i].n = def[i].n;
        memcpy(sh[i].N, def[i].N, sizeof sh[i].N);
        sh[i].K = def[i].K;
        sh[i].f32 = def[i].f32;
    }
    const int ns = (int)(sizeof sh / sizeof sh[0]);
    for (int i = 0; i < ns; i++) run_shape(&sh[i], (size_t)prop.l2CacheSize, sweep, stdout);
    if (step) full_step(stdout);

    printf("\n%-10s %3s %10s %8s %10s %10s %8s %7s %10s %10s\n", "shape", "M", "cublas_us", "TB/s", "gemm_lt_us",
           "ours_us", "TB/s", "speedup", "best_cfg", "nopdl_us");
    for (int i = 0; i < ns; i++) {
        size_t rows = 0;
        for (int j = 0; j < sh[i].n; j++) rows += sh[i].N[j];
        const double bytes = (double)rows * sh[i].K * 2;
        for (int mi = 0; mi < 5; mi++)
            printf("%-10s %3d %10.2f %8.3f %10.2f %10.2f %8.3f %7.2f %6s %.1f %10.2f\n", sh[i].name, MS[mi],
                   sh[i].blas[mi], bytes / (sh[i].blas[mi] * 1e-6) / 1e12, sh[i].lt[mi], sh[i].ours[mi],
                   bytes / (sh[i].ours[mi] * 1e-6) / 1e12, std::min(sh[i].blas[mi], sh[i].lt[mi]) / sh[i].ours[mi],
                   gemv_cfg_name(sh[i].best_cfg[mi]), sh[i].best[mi], sh[i].ours_nopdl[mi]);
    }
    /* Sum over one decode step: cuBLAS per weight as the model calls it today; ours grouped. */
    for (int mi = 0; mi < 5; mi++) {
        const double b = 24 * (sh[0].blas[mi] + 2 * sh[1].blas[mi] + 2 * sh[2].blas[mi]) +
                         8 * (sh[0].blas[mi] + 2 * sh[3].blas[mi] + sh[1].blas[mi]) +
                         32 * (sh[4].blas[mi] + sh[5].blas[mi]) + sh[6].blas[mi];
        const double o = 24 * (sh[7].ours[mi] + sh[1].ours[mi]) + 8 * (sh[8].ours[mi] + sh[1].ours[mi]) +
                         32 * (sh[4].ours[mi] + sh[5].ours[mi]) + sh[6].ours[mi];
        printf("step sum M=%2d: cublas %.3f ms | ours %.3f ms (grouped in-projections) | %.2fx\n", MS[mi], b / 1e3,
               o / 1e3, b / o);
    }
    gemm_lt_destroy(g_lt);
    cublasDestroy(g_blas);
    return 0;
}
