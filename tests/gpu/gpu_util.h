/*
 * gpu_util: helpers shared by the GPU tests (tests/gpu) and benchmarks (bench, .cu files):
 * CUDA error checks that abort, a deterministic RNG, bf16 host conversion, relative
 * error by norm, a fake page pool with a request state map (layout.h) for tests, and
 * the benchmarks' timing: median, graph-replay timing, the device copy bandwidth; in .cu
 * files also uniform random bf16 generated on the device.
 * Header-only; host code.
 */
#ifndef HS_GPU_UTIL_H
#define HS_GPU_UTIL_H

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif
#include "layout.h"
#include "util.h"
#ifdef __cplusplus
}
#endif

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)
#define CKRC(call)                                                                       \
    do {                                                                                 \
        int r_ = (call);                                                                 \
        if (r_ != HS_OK) {                                                               \
            fprintf(stderr, "%s:%d: %s returned %d\n", __FILE__, __LINE__, #call, r_);  \
            exit(2);                                                                     \
        }                                                                                \
    } while (0)

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static inline void rng_seed(uint64_t s) { g_rng = s * 0x9e3779b97f4a7c15ull + 1; }
static inline double rng_u(void) { /* [0, 1) */
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) * (1.0 / 9007199254740992.0);
}
static inline double rng_n(void) { /* ~N(0,1) */
    double u1 = rng_u() + 1e-12, u2 = rng_u();
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
/* bf16 bits from a double, and the double value those bits hold. */
static inline uint16_t bfr(double x) { return hs_f32_to_bf16((float)x); }
static inline double bfv(uint16_t b) { return (double)hs_bf16_to_f32(b); }

/* a[0..n) = a random permutation of 0..n-1 (Fisher-Yates with rng_u): page ids in a
 * shuffled order, so that neighbours in a batch are not neighbours in memory. */
static inline void shuffled_ids(int32_t *a, int64_t n) {
    for (int64_t i = 0; i < n; i++) a[i] = (int32_t)i;
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = (int64_t)(rng_u() * (double)(i + 1));
        const int32_t t = a[i];
        a[i] = a[j], a[j] = t;
    }
}

/* Fill n bf16 with scale * N(0,1); also keep the rounded values as doubles (ref may be NULL). */
static inline void fill_bf16(uint16_t *h, double *ref, size_t n, double scale) {
    for (size_t i = 0; i < n; i++) {
        h[i] = bfr(scale * rng_n());
        if (ref) ref[i] = bfv(h[i]);
    }
}

typedef struct {
    double num, den;
} relerr_t;
static inline void relerr_add(relerr_t *e, double got, double want) {
    e->num += (got - want) * (got - want);
    e->den += want * want;
}
static inline double relerr(const relerr_t *e) { return e->den > 0 ? sqrt(e->num / e->den) : sqrt(e->num); }

static inline void *dmalloc(size_t n) {
    void *p = NULL;
    CK(cudaMalloc(&p, n ? n : 16));
    return p;
}
static inline void *dupload(const void *h, size_t n) {
    void *p = dmalloc(n);
    CK(cudaMemcpy(p, h, n, cudaMemcpyHostToDevice));
    return p;
}

/* The per-call inputs of one GDN layer, random, made the same way for the decode and the
 * prefill tests: host copies (for the float64 references) and device copies (for the
 * kernels). qkv [T][conv_dim], z [T][Hv*dv], b and a [T][Hv], conv weight [conv_dim][4]
 * (bf16); A_log and dt_bias [Hv], the gated norm's weight [dv] (fp32). */
typedef struct {
    uint16_t *qkv, *z, *b, *a, *cw;
    float *Al, *dtb, *nw;
    void *d_qkv, *d_z, *d_b, *d_a, *d_cw;
    float *d_Al, *d_dtb, *d_nw;
} gdn_inputs_t;

static inline void gdn_inputs_make(gdn_inputs_t *in, int T, int conv_dim, int Hv, int dv) {
    const size_t HD = (size_t)Hv * dv;
    in->qkv = (uint16_t *)malloc(2 * (size_t)T * conv_dim), in->z = (uint16_t *)malloc(2 * (size_t)T * HD);
    in->b = (uint16_t *)malloc(2 * (size_t)T * Hv), in->a = (uint16_t *)malloc(2 * (size_t)T * Hv);
    in->cw = (uint16_t *)malloc(2 * (size_t)conv_dim * 4);
    in->Al = (float *)malloc(4 * Hv), in->dtb = (float *)malloc(4 * Hv), in->nw = (float *)malloc(4 * dv);
    fill_bf16(in->qkv, NULL, (size_t)T * conv_dim, 1.0);
    fill_bf16(in->z, NULL, (size_t)T * HD, 1.0);
    fill_bf16(in->b, NULL, (size_t)T * Hv, 1.5);
    fill_bf16(in->a, NULL, (size_t)T * Hv, 1.0);
    fill_bf16(in->cw, NULL, (size_t)conv_dim * 4, 0.5);
    for (int h = 0; h < Hv; h++) {
        in->Al[h] = (float)log(1.0 + 8.0 * rng_u());
        in->dtb[h] = (float)(0.5 * rng_n());
    }
    for (int i = 0; i < dv; i++) in->nw[i] = (float)(1.0 + 0.2 * rng_n());
    in->d_qkv = dupload(in->qkv, 2 * (size_t)T * conv_dim), in->d_z = dupload(in->z, 2 * (size_t)T * HD);
    in->d_b = dupload(in->b, 2 * (size_t)T * Hv), in->d_a = dupload(in->a, 2 * (size_t)T * Hv);
    in->d_cw = dupload(in->cw, 2 * (size_t)conv_dim * 4);
    in->d_Al = (float *)dupload(in->Al, 4 * Hv), in->d_dtb = (float *)dupload(in->dtb, 4 * Hv);
    in->d_nw = (float *)dupload(in->nw, 4 * dv);
}

static inline void gdn_inputs_free(gdn_inputs_t *in) {
    cudaFree(in->d_qkv), cudaFree(in->d_z), cudaFree(in->d_b), cudaFree(in->d_a), cudaFree(in->d_cw);
    cudaFree(in->d_Al), cudaFree(in->d_dtb), cudaFree(in->d_nw);
    free(in->qkv), free(in->z), free(in->b), free(in->a), free(in->cw), free(in->Al), free(in->dtb), free(in->nw);
}

/* A fake state map for one GDN layer: the conv granule and the Hv*n_slices ssm granules
 * packed greedily into pages of page_bytes; each request gets E distinct pages drawn
 * from a pool of n_pages (shuffled, so neighbours in the batch are not neighbours in
 * memory). */
typedef struct {
    int E, n_slices, slice_rows;
    size_t page_bytes;
    int64_t n_pages;
    sm_loc_t conv;
    sm_loc_t *ssm; /* [Hv][n_slices] */
    int32_t *pages; /* [S][E] */
} fake_map_t;

static inline void fake_map_init(fake_map_t *m, int S, int Hv, int conv_dim, int slice_rows, size_t ssm_elem,
                                 size_t page_bytes, int extra_pages) {
    m->slice_rows = slice_rows;
    m->n_slices = 128 / slice_rows;
    m->page_bytes = page_bytes;
    m->ssm = (sm_loc_t *)calloc((size_t)Hv * m->n_slices, sizeof(sm_loc_t));
    size_t conv_bytes = (size_t)3 * conv_dim * 2, gran = (size_t)slice_rows * 128 * ssm_elem;
    if (conv_bytes > page_bytes || gran > page_bytes) {
        fprintf(stderr, "fake_map: granule larger than a page\n");
        exit(2);
    }
    int page = 0;
    size_t off = 0;
    m->conv.page = 0;
    m->conv.offset = 0;
    off = (conv_bytes + 15) / 16 * 16;
    for (int i = 0; i < Hv * m->n_slices; i++) {
        if (off + gran > page_bytes) {
            page++;
            off = 0;
        }
        m->ssm[i].page = page;
        m->ssm[i].offset = (int32_t)off;
        off += gran;
    }
    m->E = page + 1;
    m->n_pages = (int64_t)S * m->E + extra_pages;
    int32_t *perm = (int32_t *)malloc(sizeof(int32_t) * m->n_pages);
    shuffled_ids(perm, m->n_pages);
    m->pages = (int32_t *)malloc(sizeof(int32_t) * (size_t)S * m->E);
    memcpy(m->pages, perm, sizeof(int32_t) * (size_t)S * m->E);
    free(perm);
}
static inline void fake_map_free(fake_map_t *m) {
    free(m->ssm);
    free(m->pages);
}
/* Byte offset in the pool of granule `loc` of request s. */
static inline size_t fake_addr(const fake_map_t *m, int s, sm_loc_t loc) {
    return (size_t)m->pages[(size_t)s * m->E + loc.page] * m->page_bytes + (size_t)loc.offset;
}

static inline double silu_d(double x) { return x / (1.0 + exp(-x)); }
static inline double softplus_d(double x) { return x > 20 ? x : log1p(exp(x)); }

/* A float64 reference of one GDN layer over one sequence (model-spec §2.5, the recurrent
 * form, dk = dv = 128), shared by test_gdn_decode and test_gdn_prefill. It carries the
 * conv window win [3][conv_dim] and the state S [Hv][dv][dk]: gdn_ref_load reads them from
 * request s's granules (zeros for a fresh sequence), gdn_ref_token advances them by token
 * t of the inputs and leaves the raw output o [Hv][dv] and each head's 1 / rms(o) in
 * rstd [Hv], gdn_ref_check compares the carried window and state with a pool read back
 * from the device. */
typedef struct {
    int Hk, Hv, conv_dim;
    double *win, *y, *S, *o, *rstd;
} gdn_ref_t;

static inline void gdn_ref_init(gdn_ref_t *R, int Hk, int Hv) {
    R->Hk = Hk, R->Hv = Hv, R->conv_dim = 2 * Hk * 128 + Hv * 128;
    R->win = (double *)malloc(sizeof(double) * 3 * R->conv_dim);
    R->y = (double *)malloc(sizeof(double) * R->conv_dim);
    R->S = (double *)malloc(sizeof(double) * (size_t)Hv * 128 * 128);
    R->o = (double *)malloc(sizeof(double) * (size_t)Hv * 128);
    R->rstd = (double *)malloc(sizeof(double) * Hv);
}
static inline void gdn_ref_free(gdn_ref_t *R) { free(R->win), free(R->y), free(R->S), free(R->o), free(R->rstd); }

/* Element k of an SSM state row stored as sdt. */
static inline double gdn_state_at(const uint8_t *row, hs_dtype_t sdt, int k) {
    return sdt == HS_F32 ? (double)((const float *)row)[k] : bfv(((const uint16_t *)row)[k]);
}
/* The address of state row v of head h of request s in `pool`. */
static inline const uint8_t *gdn_state_row(const fake_map_t *m, const uint8_t *pool, int s, int h, int v,
                                           hs_dtype_t sdt) {
    const sm_loc_t loc = m->ssm[h * m->n_slices + v / m->slice_rows];
    return pool + fake_addr(m, s, loc) + (size_t)(v % m->slice_rows) * 128 * hs_dtype_size(sdt);
}

static inline void gdn_ref_load(gdn_ref_t *R, const fake_map_t *m, const uint8_t *pool, int s, bool has,
                                hs_dtype_t sdt) {
    const uint16_t *c = (const uint16_t *)(pool + fake_addr(m, s, m->conv));
    for (int i = 0; i < 3 * R->conv_dim; i++) R->win[i] = has ? bfv(c[i]) : 0.0;
    for (int h = 0; h < R->Hv; h++)
        for (int v = 0; v < 128; v++) {
            const uint8_t *row = gdn_state_row(m, pool, s, h, v, sdt);
            for (int k = 0; k < 128; k++) R->S[((size_t)h * 128 + v) * 128 + k] = has ? gdn_state_at(row, sdt, k) : 0.0;
        }
}

static inline void gdn_ref_token(gdn_ref_t *R, const gdn_inputs_t *in, int t) {
    const int Hv = R->Hv, cd = R->conv_dim, kd = R->Hk * 128, r = Hv / R->Hk;
    double *win = R->win, *y = R->y;
    for (int ch = 0; ch < cd; ch++) { /* causal conv over the window and the token, SiLU; the window moves on */
        const double x = bfv(in->qkv[(size_t)t * cd + ch]);
        const uint16_t *w = in->cw + ch * 4;
        const double acc = bfv(w[0]) * win[ch] + bfv(w[1]) * win[cd + ch] + bfv(w[2]) * win[2 * cd + ch] + bfv(w[3]) * x;
        win[ch] = win[cd + ch];
        win[cd + ch] = win[2 * cd + ch];
        win[2 * cd + ch] = x;
        y[ch] = silu_d(acc);
    }
    for (int h = 0; h < Hv; h++) {
        const int g = h / r;
        double q[128], k[128], sq = 0, sk = 0;
        for (int i = 0; i < 128; i++) {
            q[i] = y[g * 128 + i];
            k[i] = y[kd + g * 128 + i];
            sq += q[i] * q[i];
            sk += k[i] * k[i];
        }
        for (int i = 0; i < 128; i++) {
            q[i] /= sqrt(sq + 1e-6) * sqrt(128.0);
            k[i] /= sqrt(sk + 1e-6);
        }
        const double beta = 1.0 / (1.0 + exp(-bfv(in->b[(size_t)t * Hv + h])));
        const double eg = exp(-exp((double)in->Al[h]) * softplus_d(bfv(in->a[(size_t)t * Hv + h]) + (double)in->dtb[h]));
        double ss = 0;
        for (int v = 0; v < 128; v++) {
            double *row = R->S + ((size_t)h * 128 + v) * 128, mm = 0, oo = 0;
            for (int i = 0; i < 128; i++) {
                row[i] *= eg;
                mm += row[i] * k[i];
            }
            const double d = beta * (y[2 * kd + h * 128 + v] - mm);
            for (int i = 0; i < 128; i++) {
                row[i] += k[i] * d;
                oo += row[i] * q[i];
            }
            R->o[h * 128 + v] = oo;
            ss += oo * oo;
        }
        R->rstd[h] = 1.0 / sqrt(ss / 128 + 1e-6);
    }
}

/* The gated RMSNorm of the reference's output o[h][v] at token t. */
static inline double gdn_ref_gated(const gdn_ref_t *R, const gdn_inputs_t *in, int t, int h, int v) {
    const double zz = bfv(in->z[(size_t)t * R->Hv * 128 + h * 128 + v]);
    return R->o[h * 128 + v] * R->rstd[h] * (double)in->nw[v] * silu_d(zz);
}

static inline void gdn_ref_check(const gdn_ref_t *R, const fake_map_t *m, const uint8_t *pool2, int s, hs_dtype_t sdt,
                                 relerr_t *ec, relerr_t *es) {
    const uint16_t *c2 = (const uint16_t *)(pool2 + fake_addr(m, s, m->conv));
    for (int i = 0; i < 3 * R->conv_dim; i++) relerr_add(ec, bfv(c2[i]), R->win[i]);
    for (int h = 0; h < R->Hv; h++)
        for (int v = 0; v < 128; v++) {
            const uint8_t *row = gdn_state_row(m, pool2, s, h, v, sdt);
            for (int k = 0; k < 128; k++) relerr_add(es, gdn_state_at(row, sdt, k), R->S[((size_t)h * 128 + v) * 128 + k]);
        }
}

#ifdef __CUDACC__
#include <cuda_bf16.h>

/* Uniform [-a, a) bf16 from a hash of (seed, index), generated on the device. */
__global__ void k_fill_uniform_bf16(uint16_t *p, size_t n, uint64_t seed, float a) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint64_t h = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
        h ^= h >> 31;
        h *= 0xbf58476d1ce4e5b9ull;
        h ^= h >> 29;
        const float u = (float)(h >> 40) * (1.f / 16777216.f);
        __nv_bfloat16 b = __float2bfloat16_rn((2.f * u - 1.f) * a);
        p[i] = *(uint16_t *)&b;
    }
}
/* n such values in a new device buffer. */
static inline void *dev_uniform_bf16(size_t n, uint64_t seed, float a) {
    void *d = dmalloc(n * 2);
    k_fill_uniform_bf16<<<2048, 256>>>((uint16_t *)d, n, seed, a);
    CK(cudaGetLastError());
    return d;
}
#endif

/* ---- timing (benchmarks) ----------------------------------------------------------- */

/* The integers of a comma list ("1,8,114") into out[0..max); returns how many. */
static inline int int_list(const char *s, int *out, int max) {
    int n = 0;
    for (const char *c = s; *c && n < max; c += strcspn(c, ",") + (c[strcspn(c, ",")] == ',')) out[n++] = atoi(c);
    return n;
}

/* Median of v[0..n) (sorts v). */
static inline float median_f(float *v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            const float x = v[j];
            v[j] = v[j - 1], v[j - 1] = x;
        }
    return n % 2 ? v[n / 2] : 0.5f * (v[n / 2 - 1] + v[n / 2]);
}

/* Median time in ms of `reps` (<= 64) replays of an instantiated graph on stream s, after one
 * warm-up replay; events around each replay. */
static inline float graph_median_ms(cudaGraphExec_t ge, cudaStream_t s, int reps) {
    float t[64];
    if (reps > 64) reps = 64;
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaGraphLaunch(ge, s));
    for (int i = 0; i < reps; i++) {
        CK(cudaEventRecord(e0, s));
        CK(cudaGraphLaunch(ge, s));
        CK(cudaEventRecord(e1, s));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&t[i], e0, e1));
    }
    CK(cudaGetLastError());
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return median_f(t, reps);
}

/* Device-to-device copy bandwidth in TB/s, bytes read plus written: 1 GiB, median of 10
 * after a warm-up. The measured ceiling the benchmarks report against. */
static inline double gpu_copy_tbs(void) {
    const size_t n = (size_t)1 << 30;
    void *a = dmalloc(n), *b = dmalloc(n);
    CK(cudaMemset(a, 1, n));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    float t[10];
    CK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    for (int i = 0; i < 10; i++) {
        CK(cudaEventRecord(e0, 0));
        CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0));
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&t[i], e0, e1));
    }
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    CK(cudaFree(a));
    CK(cudaFree(b));
    return 2.0 * (double)n / (median_f(t, 10) * 1e-3) / 1e12;
}

#endif
