/*
 * gemm_lt: bf16 GEMMs through cuBLASLt with per-shape algorithm tuning (gemm_lt.h).
 *
 * Row-major out[M, N] = x[M, K] @ W[N, K]^T is, in cuBLAS's column-major terms,
 * out^T (N x M, ld N) = op_T(W as K x N, ld K) * x^T (K x M, ld K).
 */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
#include "gemm_lt.h"

#define LT_CANDIDATES 16
#define LT_MAX_PLANS 4096
#define LT_SLOTS (2 * LT_MAX_PLANS) /* open-addressing index over the plans (power of two) */

typedef struct {
    int M, N, K;
    bool f32;
    bool tuned;                       /* algo was chosen by timing, or taken from a tuned plan of
                                         the same M class (m_class) */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} lt_plan_t;

struct gemm_lt {
    cublasLtHandle_t h;
    void *ws;
    size_t ws_bytes;
    lt_plan_t *plans;
    int n_plans;
    int *slot;                        /* [LT_SLOTS]: plan index + 1, 0 = empty */
    int n_tuned;
    cudaEvent_t ev[2];
};

#define LT_TRY(call)                                                                               \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            fprintf(stderr, "hyserve: cublasLt: %s:%d: %s: status %d\n", __FILE__, __LINE__, #call, \
                    (int)s_);                                                                      \
            return HS_ERR_STATE;                                                                   \
        }                                                                                          \
    } while (0)

static void plan_free(lt_plan_t *p) {
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->c) cublasLtMatrixLayoutDestroy(p->c);
    memset(p, 0, sizeof *p);
}

extern "C" gemm_lt_t *gemm_lt_create(void *ws, size_t ws_bytes) {
    gemm_lt_t *g = (gemm_lt_t *)calloc(1, sizeof *g);
    if (!g) return NULL;
    if (cublasLtCreate(&g->h) != CUBLAS_STATUS_SUCCESS || cudaEventCreate(&g->ev[0]) != cudaSuccess ||
        cudaEventCreate(&g->ev[1]) != cudaSuccess) {
        free(g);
        return NULL;
    }
    g->ws = ws;
    g->ws_bytes = ws_bytes;
    g->plans = (lt_plan_t *)calloc(LT_MAX_PLANS, sizeof(lt_plan_t));
    g->slot = (int *)calloc(LT_SLOTS, sizeof(int));
    if (!g->plans || !g->slot) {
        gemm_lt_destroy(g);
        return NULL;
    }
    return g;
}

extern "C" void gemm_lt_destroy(gemm_lt_t *g) {
    if (!g) return;
    for (int i = 0; i < g->n_plans; i++) plan_free(&g->plans[i]);
    free(g->plans);
    free(g->slot);
    cudaEventDestroy(g->ev[0]);
    cudaEventDestroy(g->ev[1]);
    cublasLtDestroy(g->h);
    free(g);
}

extern "C" int gemm_lt_tuned(const gemm_lt_t *g) { return g ? g->n_tuned : 0; }

/* The M class whose rows share one timed algorithm: classes grow by ~1.5x (2, 3, 4, 6, 8,
 * 12, 16, 24 ... 4096, 6144 ...). A decode batch changes size at almost every step, and timing every
 * candidate for every M (16 candidates x 4 runs; ~60 ms for lm_head) cost a 128-request
 * benchmark more than a second; neighbouring M almost always pick the same tile shape. */
static int m_class(int M) {
    int c = 2;
    while (c < M) c = (c & (c - 1)) ? (c / 3) * 4 : c + c / 2; /* 2 3 4 6 8 12 16 24 ... */
    return c;
}

static int plan_make(lt_plan_t *p, int M, int N, int K, bool f32) {
    memset(p, 0, sizeof *p);
    p->M = M, p->N = N, p->K = K, p->f32 = f32;
    LT_TRY(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    LT_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    LT_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    LT_TRY(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, K, N, K));
    LT_TRY(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, K, M, K));
    LT_TRY(cublasLtMatrixLayoutCreate(&p->c, f32 ? CUDA_R_32F : CUDA_R_16BF, N, M, N));
    return HS_OK;
}

static cublasStatus_t lt_call(gemm_lt_t *g, const lt_plan_t *p, const cublasLtMatmulAlgo_t *algo, const void *x,
                              const void *W, void *out, cudaStream_t st) {
    const float one = 1.f, zero = 0.f;
    return cublasLtMatmul(g->h, p->op, &one, W, p->a, x, p->b, &zero, out, p->c, out, p->c, algo, g->ws, g->ws_bytes,
                          st);
}

/* Time every candidate cuBLASLt offers for plan p on operands x, W, out after one warm-up
 * run: one timed run when it takes 100 us or more (lm_head: ~0.7 ms, where the tuning itself
 * cost ~60 ms per M class with 3 runs each), else the mean of 3 more; the fastest goes to
 * *algo. */
static int pick_algo(gemm_lt_t *g, const lt_plan_t *p, const void *x, const void *W, void *out, cudaStream_t st,
                     bool capturing, cublasLtMatmulAlgo_t *algo) {
    cublasLtMatmulPreference_t pref;
    LT_TRY(cublasLtMatmulPreferenceCreate(&pref));
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g->ws_bytes,
                                                sizeof g->ws_bytes));
    cublasLtMatmulHeuristicResult_t res[LT_CANDIDATES];
    int n = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(g->h, p->op, p->a, p->b, p->c, p->c, pref, LT_CANDIDATES, res, &n);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS || n == 0) return HS_ERR_UNSUPPORTED;
    *algo = res[0].algo;
    if (capturing || n == 1) return HS_OK; /* no timing inside a capture: first choice for now */
    float best = 1e30f;
    for (int i = 0; i < n; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS) continue;
        if (lt_call(g, p, &res[i].algo, x, W, out, st) != CUBLAS_STATUS_SUCCESS) continue;
        bool ok = true;
        float ms = 0.f;
        for (int runs = 1; ok && runs <= 3; runs += 2) {
            HS_CUDA_TRY(cudaEventRecord(g->ev[0], st));
            for (int r = 0; r < runs && ok; r++)
                ok = lt_call(g, p, &res[i].algo, x, W, out, st) == CUBLAS_STATUS_SUCCESS;
            HS_CUDA_TRY(cudaEventRecord(g->ev[1], st));
            HS_CUDA_TRY(cudaEventSynchronize(g->ev[1]));
            HS_CUDA_TRY(cudaEventElapsedTime(&ms, g->ev[0], g->ev[1]));
            ms /= (float)runs;
            if (ms >= 0.1f) break;
        }
        if (ok && ms < best) best = ms, *algo = res[i].algo;
    }
    return HS_OK;
}

/* Time the algorithm for the top of M's class when M is below it. A class is tuned once,
 * by the first M that arrives, and the rest of the class reuses the choice; an algorithm
 * timed at the bottom of a class can be wrong for its top: lm_head at 97 rows picked
 * 104-row tiles, so every decode step of 105..128 rows ran two row tiles and read the
 * 2 GB of weights twice (1.8 TB/s at 114 rows). Timing at the top instead is safe for
 * the whole class (fewer rows never need more tiles). The candidates run on zeroed
 * operands of the top size (scratch, freed after), and the winner must pass
 * cublasLtMatmulAlgoCheck at M. HS_ERR_UNSUPPORTED: not possible here (tune at M). */
static int tune_class_top(gemm_lt_t *g, lt_plan_t *p, const void *W, cudaStream_t st) {
    const int Mc = m_class(p->M);
    if (Mc <= p->M || getenv("HS_CUDA_GEMM_LT_EXACT")) return HS_ERR_UNSUPPORTED;
    lt_plan_t t;
    if (plan_make(&t, Mc, p->N, p->K, p->f32) != HS_OK) {
        plan_free(&t);
        return HS_ERR_UNSUPPORTED;
    }
    void *xp = NULL, *op = NULL;
    const size_t xb = (size_t)Mc * p->K * 2, ob = (size_t)Mc * p->N * (p->f32 ? 4 : 2);
    int rc = HS_ERR_UNSUPPORTED;
    cublasLtMatmulAlgo_t algo;
    cublasLtMatmulHeuristicResult_t chk;
    if (cudaMalloc(&xp, xb) == cudaSuccess && cudaMalloc(&op, ob) == cudaSuccess &&
        cudaMemsetAsync(xp, 0, xb, st) == cudaSuccess && pick_algo(g, &t, xp, W, op, st, false, &algo) == HS_OK &&
        cublasLtMatmulAlgoCheck(g->h, p->op, p->a, p->b, p->c, p->c, &algo, &chk) == CUBLAS_STATUS_SUCCESS &&
        chk.workspaceSize <= g->ws_bytes) {
        p->algo = algo;
        rc = HS_OK;
    }
    cudaStreamSynchronize(st); /* the timing runs are done with the scratch */
    if (xp) cudaFree(xp);
    if (op) cudaFree(op);
    cudaGetLastError(); /* a failed scratch allocation is not an error: tune at M */
    plan_free(&t);
    return rc;
}

/* Choose p's algorithm: timed at the top of its M class where possible, else at M. */
static int plan_tune(gemm_lt_t *g, lt_plan_t *p, const void *x, const void *W, void *out, cudaStream_t st,
                     bool capturing) {
    int rc = capturing ? HS_ERR_UNSUPPORTED : tune_class_top(g, p, W, st);
    if (rc != HS_OK) rc = pick_algo(g, p, x, W, out, st, capturing, &p->algo);
    if (rc != HS_OK) return rc;
    if (capturing) return HS_OK; /* first choice only: tuned when next seen outside a capture */
    p->tuned = true;
    g->n_tuned++;
    return HS_OK;
}

extern "C" int gemm_lt_run(gemm_lt_t *g, const void *x, const void *W, int M, int N, int K, void *out, bool out_f32,
                           void *stream) {
    cudaStream_t st = (cudaStream_t)stream;
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    HS_CUDA_TRY(cudaStreamIsCapturing(st, &cs));
    const bool capturing = cs != cudaStreamCaptureStatusNone;
    lt_plan_t *p = NULL;
    unsigned h = ((unsigned)M * 2654435761u ^ (unsigned)N * 40503u ^ (unsigned)K * 97u ^ (unsigned)out_f32) &
                 (LT_SLOTS - 1);
    for (; g->slot[h] && !p; h = (h + 1) & (LT_SLOTS - 1)) {
        lt_plan_t *q = &g->plans[g->slot[h] - 1];
        if (q->M == M && q->N == N && q->K == K && q->f32 == out_f32) p = q;
    }
    if (p && !p->tuned && !capturing) { /* planned during a capture: tune now */
        const int rc = plan_tune(g, p, x, W, out, st, false);
        if (rc != HS_OK) return rc;
    }
    if (!p) {
        if (g->n_plans == LT_MAX_PLANS) return HS_ERR_UNSUPPORTED;
        p = &g->plans[g->n_plans];
        int rc = plan_make(p, M, N, K, out_f32);
        /* A tuned plan of the same shape and M class lends its algorithm when cuBLASLt
         * confirms it runs this M (a host-side check); else time the candidates. */
        const lt_plan_t *twin = NULL;
        for (int i = 0; i < g->n_plans && !twin; i++) {
            const lt_plan_t *q = &g->plans[i];
            if (q->tuned && q->N == N && q->K == K && q->f32 == out_f32 && m_class(q->M) == m_class(M)) twin = q;
        }
        cublasLtMatmulHeuristicResult_t chk;
        if (rc == HS_OK && twin &&
            cublasLtMatmulAlgoCheck(g->h, p->op, p->a, p->b, p->c, p->c, &twin->algo, &chk) == CUBLAS_STATUS_SUCCESS &&
            chk.workspaceSize <= g->ws_bytes) {
            p->algo = twin->algo;
            p->tuned = true;
        } else if (rc == HS_OK) {
            rc = plan_tune(g, p, x, W, out, st, capturing);
        }
        if (rc != HS_OK) {
            plan_free(p);
            return rc;
        }
        g->slot[h] = ++g->n_plans; /* h: the empty slot the probe above ended on */
    }
    LT_TRY(lt_call(g, p, &p->algo, x, W, out, st));
    return HS_OK;
}
