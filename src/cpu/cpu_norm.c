/*
 * cpu_norm: RMSNorm over rows (backend.h `rmsnorm`), fp32 throughout.
 *   out[t, :] = x[t, :] * 1/sqrt(mean(x[t, :]^2) + eps) * (plus_one ? 1 + w : w)
 * With residual != NULL: residual[t, :] += x[t, :] first and the norm reads the sum.
 * The sum of squares is accumulated in double (cheap, and makes the result
 * independent of n's size within fp32 rounding of the final products).
 * out may alias x: each row is fully read before it is written.
 */
#include <assert.h>
#include <math.h>

#include "cpu_int.h"

void cpu_rmsnorm(backend_t *bk, const void *x, void *residual, const bk_weight_t *w, float eps, bool plus_one,
                 int T, int n, void *out) {
    int nt = cpu_ctx(bk)->n_threads;
    assert(w && w->rows * w->cols == n);
    const float *xx = x;   /* [T, n] */
    float *res = residual; /* [T, n] or NULL */
    float *o = out;        /* [T, n] */
    const float *wd = w->data; /* [n] */
    (void)nt;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < T; t++) {
        const float *xr = xx + (size_t)t * n;
        float *orow = o + (size_t)t * n;
        const float *src = xr;
        if (res) {
            float *rr = res + (size_t)t * n;
            for (int i = 0; i < n; i++) rr[i] += xr[i];
            src = rr;
        }
        double ss = 0.0;
        for (int i = 0; i < n; i++) ss += (double)src[i] * src[i];
        float inv = 1.0f / sqrtf((float)(ss / n) + eps);
        for (int i = 0; i < n; i++) orow[i] = src[i] * inv * (plus_one ? 1.0f + wd[i] : wd[i]);
    }
}
