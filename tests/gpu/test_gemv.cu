/*
 * test_gemv: the decode GEMV / small-M GEMM (src/cuda/gemv.cu) against a float64 CPU
 * reference, out[M, N] = x[M, K] @ W[N, K]^T. Random bf16 W and x (a counter hash, so
 * that the GPU fills the 2 GB lm_head and the CPU recomputes any row it checks), outputs
 * poisoned with NaN before every launch and checked to be all finite.
 *   - small shapes (the Qwen3.5-9B projections with N and K divided by 16, odd N, K not a
 *     multiple of 256, K beyond the shared-memory tile): every variant, M = 1..16, every
 *     output checked;
 *   - the real 9B shapes, heuristic variant, M = 1..16, 512 sampled rows per case plus
 *     the first and last rows;
 *   - grouped launches (GDN qkv/z/b/a, attention q/k/v) small and real;
 *   - arguments the kernel refuses;
 *   - programmatic dependent launch (cuda_common.cuh): a kernel before the GEMV that lets it
 *     launch at once and writes x only ~100 µs later (the GEMV must read the new x), and one
 *     that reads the GEMV's output buffer late (it must see the old output: the GEMV may
 *     not write before its wait), M = 1 (CUDA-core kernel) and M = 4 (tensor cores).
 * Reports ||out - ref|| / ||ref|| per case; bf16 outputs pass below 5e-3, fp32 below 1e-5.
 */
#include "../../src/cuda/cuda_common.cuh"
#include "../../src/cuda/gemv.h"
#include "gpu_util.h"

/* bf16 bits of a uniform [-1, 1) value drawn from (seed, i): the same on host and device. */
__host__ __device__ static inline uint16_t hash_bf16(uint64_t seed, uint64_t i) {
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + i + 1;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float f = (float)(int32_t)(uint32_t)(z >> 32) * (1.0f / 2147483648.0f);
    uint32_t b;
    memcpy(&b, &f, 4);
    b += 0x7fffu + ((b >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(b >> 16);
}

__global__ void k_fill(uint16_t *p, size_t n, uint64_t seed) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = hash_bf16(seed, i);
}

static void *dfill(size_t n, uint64_t seed) {
    uint16_t *p = (uint16_t *)dmalloc(n * 2);
    k_fill<<<1024, 256>>>(p, n, seed);
    CK(cudaGetLastError());
    return p;
}

typedef struct {
    int N;
    int out_f32;
    uint64_t seed;
    void *d_w, *d_out;
    double *w; /* host copy [N][K] when every row is checked, else NULL */
} wmat_t;

/* Adds the error of rows of w's output to e (every row when sample == 0, else `sample`
 * random rows plus the first and last). Returns the number of non-finite outputs. */
static long check_out(const wmat_t *w, int M, int K, const double *x, int sample, relerr_t *e) {
    const size_t n = (size_t)M * w->N;
    const size_t esz = w->out_f32 ? 4 : 2;
    void *h = malloc(n * esz);
    CK(cudaMemcpy(h, w->d_out, n * esz, cudaMemcpyDeviceToHost));
    long bad = 0;
    for (size_t i = 0; i < n; i++) {
        double v = w->out_f32 ? ((float *)h)[i] : bfv(((uint16_t *)h)[i]);
        if (!isfinite(v)) bad++;
    }
    const int rows = sample ? sample + 2 : w->N;
    double *buf = (double *)malloc(sizeof(double) * K);
    for (int j = 0; j < rows; j++) {
        int row = !sample ? j : j == 0 ? 0 : j == 1 ? w->N - 1 : (int)(rng_u() * w->N);
        const double *wr = w->w ? w->w + (size_t)row * K : buf;
        if (!w->w)
            for (int k = 0; k < K; k++) buf[k] = bfv(hash_bf16(w->seed, (uint64_t)row * K + k));
        for (int m = 0; m < M; m++) {
            double ref = 0;
            for (int k = 0; k < K; k++) ref += wr[k] * x[(size_t)m * K + k];
            const size_t o = (size_t)m * w->N + row;
            relerr_add(e, w->out_f32 ? ((float *)h)[o] : bfv(((uint16_t *)h)[o]), ref);
        }
    }
    free(buf);
    free(h);
    return bad;
}

static int g_fails, g_cases;

/* A PDL producer / consumer for the ordering test: lets the next kernel launch at once,
 * spins ~`cycles`, then copies n 16-byte vectors src -> dst (one block). */
__global__ void k_late_copy(const uint4 *src, uint4 *dst, int n, long long cycles) {
    pdl_trigger();
    pdl_wait();
    const long long t0 = clock64();
    while (clock64() - t0 < cycles) {
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
}

static void report(const char *name, double err, long bad, bool f32) {
    const bool ok = bad == 0 && !isnan(err) && err < (f32 ? 1e-5 : 5e-3);
    g_fails += !ok;
    g_cases++;
    if (!ok || g_cases % 8 == 0 || getenv("GEMV_VERBOSE"))
        printf("%-44s %10.2e %6ld  %s\n", name, err, bad, ok ? "ok" : "FAIL");
}

/* One group of weights reading the same x: every M in ms, every variant in cfgs. */
static void run_group(const char *tag, int K, const int *Ns, const int *f32s, int n, const int *ms, int n_ms,
                      int cfg_lo, int cfg_hi, int sample, uint64_t seed) {
    wmat_t w[GEMV_MAX_GROUP];
    for (int i = 0; i < n; i++) {
        w[i].N = Ns[i];
        w[i].out_f32 = f32s[i];
        w[i].seed = seed * 16 + i;
        w[i].d_w = dfill((size_t)Ns[i] * K, w[i].seed);
        w[i].d_out = dmalloc((size_t)GEMV_MAX_M * Ns[i] * 4);
        w[i].w = NULL;
        if (!sample) {
            w[i].w = (double *)malloc(sizeof(double) * Ns[i] * K);
            for (size_t j = 0; j < (size_t)Ns[i] * K; j++) w[i].w[j] = bfv(hash_bf16(w[i].seed, j));
        }
    }
    const uint64_t xseed = seed * 16 + 15;
    void *d_x = dfill((size_t)GEMV_MAX_M * K, xseed);
    double *x = (double *)malloc(sizeof(double) * GEMV_MAX_M * K);
    for (size_t i = 0; i < (size_t)GEMV_MAX_M * K; i++) x[i] = bfv(hash_bf16(xseed, i));
    CK(cudaDeviceSynchronize());
    static const int sub_m[] = {1, 2, 3, 4, 7, 8, 9, 16};
    for (int mi = 0; mi < n_ms; mi++)
        for (int cfg = cfg_lo; cfg <= cfg_hi; cfg++) {
            const int M = ms[mi];
            bool in_sub = false;
            for (size_t j = 0; j < sizeof sub_m / sizeof sub_m[0]; j++) in_sub = in_sub || sub_m[j] == M;
            if (cfg != 0 && !in_sub) continue; /* forced variants: one M per template size and its edges */
            for (int i = 0; i < n; i++) CK(cudaMemset(w[i].d_out, 0xff, (size_t)M * Ns[i] * 4));
            if (n == 1) {
                CKRC(gemv_launch(d_x, M, K, w[0].d_w, Ns[0], w[0].d_out, f32s[0], cfg, NULL));
            } else {
                gemv_seg_t segs[GEMV_MAX_GROUP];
                for (int i = 0; i < n; i++) segs[i] = gemv_seg_t{w[i].d_w, Ns[i], w[i].d_out, f32s[i]};
                CKRC(gemv_grouped_launch(d_x, M, K, segs, n, cfg, NULL));
            }
            CK(cudaGetLastError());
            CK(cudaDeviceSynchronize());
            for (int i = 0; i < n; i++) {
                relerr_t e = {0, 0};
                long bad = check_out(&w[i], M, K, x, sample, &e);
                char name[96];
                snprintf(name, sizeof name, "%s%s%d %dx%d M%d %s", tag, n > 1 ? " seg" : "", n > 1 ? i : 0, Ns[i], K,
                         M, gemv_cfg_name(cfg));
                report(name, relerr(&e), bad, f32s[i]);
            }
        }
    for (int i = 0; i < n; i++) {
        cudaFree(w[i].d_w);
        cudaFree(w[i].d_out);
        free(w[i].w);
    }
    cudaFree(d_x);
    free(x);
}

/* The PDL ordering test (see the top): RAW on x, WAR on out. */
static void run_pdl_order(int N, int K, int M, uint64_t seed) {
    cudaStream_t st;
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    wmat_t w = {N, 0, seed, dfill((size_t)N * K, seed), dmalloc((size_t)M * N * 2), NULL};
    const size_t xn = (size_t)M * K;
    void *d_x = dfill(xn, seed + 1), *d_x1 = dfill(xn, seed + 2), *d_x2 = dfill(xn, seed + 3);
    void *d_saved = dmalloc((size_t)M * N * 2);
    double *x1 = (double *)malloc(sizeof(double) * xn);
    for (size_t i = 0; i < xn; i++) x1[i] = bfv(hash_bf16(seed + 2, i));
    CK(cudaMemset(w.d_out, 0xff, (size_t)M * N * 2));
    CK(cudaDeviceSynchronize());
    hs_cuda_pdl(1);
    /* RAW: x becomes x1 late; out must be W x1 */
    CK(launch_pdl(k_late_copy, dim3(1), dim3(256), 0, st, (const uint4 *)d_x1, (uint4 *)d_x, (int)(xn / 8),
                  200000LL));
    CKRC(gemv_launch(d_x, M, K, w.d_w, N, w.d_out, 0, 0, st));
    /* WAR: the copy of out is taken late, while the next GEMV (x2) writes out */
    CK(launch_pdl(k_late_copy, dim3(1), dim3(256), 0, st, (const uint4 *)w.d_out, (uint4 *)d_saved,
                  (int)((size_t)M * N / 8), 200000LL));
    CKRC(gemv_launch(d_x2, M, K, w.d_w, N, w.d_out, 0, 0, st));
    CK(cudaStreamSynchronize(st));
    char name[96];
    relerr_t e = {0, 0};
    wmat_t saved = w;
    saved.d_out = d_saved;
    long bad = check_out(&saved, M, K, x1, 256, &e);
    snprintf(name, sizeof name, "pdl order %dx%d M%d", N, K, M);
    report(name, relerr(&e), bad, false);
    CK(cudaStreamDestroy(st));
    cudaFree(w.d_w);
    cudaFree(w.d_out);
    cudaFree(d_x);
    cudaFree(d_x1);
    cudaFree(d_x2);
    cudaFree(d_saved);
    free(x1);
}

int main(void) {
    rng_seed(11);
    int all_m[GEMV_MAX_M];
    for (int i = 0; i < GEMV_MAX_M; i++) all_m[i] = i + 1;
    const int ncfg = gemv_n_cfgs();
    printf("%-44s %10s %6s  %s\n", "case (failures and every 8th shown)", "rel.err", "nonfin", "result");

    /* Refused arguments: nothing launched, HS_ERR_INVALID. */
    {
        void *d = dmalloc(1 << 16);
        int rcs[] = {gemv_launch(d, 1, 12, d, 4, d, 0, 0, NULL),  gemv_launch(d, 0, 16, d, 4, d, 0, 0, NULL),
                     gemv_launch(d, 17, 16, d, 4, d, 0, 0, NULL), gemv_launch((char *)d + 2, 1, 16, d, 4, d, 0, 0, NULL),
                     gemv_launch(d, 1, 16, d, 0, d, 0, 0, NULL),  gemv_launch(d, 1, 16, d, 4, d, 0, ncfg + 1, NULL)};
        bool ok = true;
        for (size_t i = 0; i < sizeof rcs / sizeof rcs[0]; i++) ok = ok && rcs[i] == HS_ERR_INVALID;
        report("refused arguments", ok ? 0.0 : 1.0, 0, false);
        cudaFree(d);
    }
    /* PDL ordering, every case shown */
    {
        const int g = g_cases;
        run_pdl_order(4096, 4096, 1, 500);
        run_pdl_order(4096, 4096, 4, 501);
        run_pdl_order(264, 520, 1, 502);
        if (g_fails == 0) printf("pdl order: %d cases ok\n", g_cases - g);
    }
    if (getenv("GEMV_PDL_ONLY")) { /* the PDL cases alone (quick under compute-sanitizer) */
        printf("test_gemv: %d/%d cases passed (PDL cases only)\n", g_cases - g_fails, g_cases);
        return g_fails ? 1 : 0;
    }

    /* Small shapes: the 9B projections / 16, odd N, odd K, K beyond the tile caps. */
    struct {
        int N, K, f32;
    } small[] = {
        {512, 256, 0}, {256, 256, 0}, {2, 256, 0},   {64, 256, 0},   {1536, 256, 0}, {256, 768, 0},
        {15520, 256, 1}, {1, 8, 0},   {7, 24, 0},    {33, 1000, 0},  {131, 4104, 0}, {45, 12296, 1},
        {257, 520, 0},
    };
    int fi[1] = {0};
    for (size_t s = 0; s < sizeof small / sizeof small[0]; s++) {
        fi[0] = small[s].f32;
        run_group("small", small[s].K, &small[s].N, fi, 1, all_m, GEMV_MAX_M, 0, ncfg, 0, 100 + s);
    }
    {
        const int Ns[4] = {512, 256, 2, 2}, f[4] = {0, 0, 0, 0};
        run_group("small gdn", 256, Ns, f, 4, all_m, GEMV_MAX_M, 0, ncfg, 0, 200);
        const int Na[3] = {512, 64, 64};
        run_group("small attn", 256, Na, f, 3, all_m, GEMV_MAX_M, 0, ncfg, 0, 201);
        const int No[5] = {3, 77, 1, 300, 9}, fo[5] = {1, 0, 1, 0, 0};
        run_group("small odd", 264, No, fo, 5, all_m, GEMV_MAX_M, 0, ncfg, 0, 202);
    }

    /* The real Qwen3.5-9B shapes, heuristic variant, sampled rows (GEMV_SMALL_ONLY=1 skips
     * them, for compute-sanitizer). */
    if (getenv("GEMV_SMALL_ONLY")) {
        printf("test_gemv: %d/%d cases passed (small shapes only)\n", g_cases - g_fails, g_cases);
        return g_fails ? 1 : 0;
    }
    struct {
        int N, K, f32;
    } real[] = {
        {8192, 4096, 0}, {4096, 4096, 0}, {32, 4096, 0}, {1024, 4096, 0},
        {24576, 4096, 0}, {4096, 12288, 0}, {248320, 4096, 1},
    };
    for (size_t s = 0; s < sizeof real / sizeof real[0]; s++) {
        fi[0] = real[s].f32;
        run_group("9B", real[s].K, &real[s].N, fi, 1, all_m, GEMV_MAX_M, 0, 0, 512, 300 + s);
    }
    {
        const int Ns[4] = {8192, 4096, 32, 32}, f[4] = {0, 0, 0, 0};
        run_group("9B gdn", 4096, Ns, f, 4, all_m, GEMV_MAX_M, 0, 0, 512, 400);
        const int Na[3] = {8192, 1024, 1024};
        run_group("9B attn", 4096, Na, f, 3, all_m, GEMV_MAX_M, 0, 0, 512, 401);
    }
    printf("test_gemv: %d/%d cases passed\n", g_cases - g_fails, g_cases);
    return g_fails ? 1 : 0;
}
