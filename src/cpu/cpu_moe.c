/*
 * cpu_moe: sparse MoE FFN (backend.h `moe`), model-spec §2.7.
 *   router logits [T, E] = x @ router^T (fp32); p = softmax over all E experts;
 *   top-k by p (ties: lower expert id first); w_k = p_k / sum_topk p when norm_topk;
 *   out = sum_k w_k * down_e(silu(gate_e x) * up_e x)
 *       + sigmoid(x . shared_gate) * down_s(silu(gate_s x) * up_s x)  (when shared).
 * Expert-major execution: for each expert, gather the rows routed to it, run its
 * two GEMMs through BLAS, scatter-add weighted rows into out. The accumulation order
 * into a row is by expert id (then the shared expert last), independent of which
 * other tokens are in the batch, so a token's result does not depend on the batch
 * (up to BLAS kernels, which may block differently for different M).
 * Scratch: A router/probs, B routing, C gathered x, D gate_up, E act, F down.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "cpu_int.h"

void cpu_moe(backend_t *bk, const void *x, const bk_weight_t *router, bk_weight_t *const *experts_gate_up,
             bk_weight_t *const *experts_down, int n_experts, int top_k, bool norm_topk, int I,
             const bk_weight_t *shared_gate_up, const bk_weight_t *shared_down, const bk_weight_t *shared_gate,
             int I_shared, int T, int H, void *out) {
    cpu_ctx_t *c = cpu_ctx(bk);
    const float *xx = x; /* [T, H] */
    float *o = out;      /* [T, H] */
    int E = n_experts;
    assert(router->rows == E && router->cols == H && top_k >= 1 && top_k <= E);
    if (T <= 0) return;
    float *probs = cpu_scratch(c, CPU_SCR_A, (size_t)T * E * sizeof(float)); /* [T, E] */
    /* routing: sel[t][k] expert, wt[t][k] weight */
    int32_t *sel = cpu_scratch(c, CPU_SCR_B, (size_t)T * (top_k + 1) * (sizeof(int32_t) + sizeof(float)));
    float *wt = (float *)(sel + (size_t)T * top_k); /* [T, k] */
    int32_t *rows = (int32_t *)(wt + (size_t)T * top_k); /* [m] token of each gathered row */
    float *rw = (float *)(rows + T);                     /* [m] its routing weight */
    cpu_gemm_xwt(xx, router->data, T, E, H, probs);
    for (int t = 0; t < T; t++) {
        float *p = probs + (size_t)t * E;
        float mx = p[0];
        for (int e = 1; e < E; e++) mx = p[e] > mx ? p[e] : mx;
        float sum = 0.0f;
        for (int e = 0; e < E; e++) {
            p[e] = expf(p[e] - mx);
            sum += p[e];
        }
        for (int e = 0; e < E; e++) p[e] /= sum;
        float tsum = 0.0f;
        for (int k = 0; k < top_k; k++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                bool taken = false;
                for (int j = 0; j < k; j++) taken |= sel[(size_t)t * top_k + j] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            sel[(size_t)t * top_k + k] = best;
            wt[(size_t)t * top_k + k] = p[best];
            tsum += p[best];
        }
        if (norm_topk)
            for (int k = 0; k < top_k; k++) wt[(size_t)t * top_k + k] /= tsum;
    }
    memset(o, 0, (size_t)T * H * sizeof(float));
    int Imax = I > I_shared ? I : I_shared;
    float *xg = cpu_scratch(c, CPU_SCR_C, (size_t)T * H * sizeof(float));        /* [m, H] */
    float *gu = cpu_scratch(c, CPU_SCR_D, (size_t)T * 2 * Imax * sizeof(float)); /* [m, 2I] */
    float *act = cpu_scratch(c, CPU_SCR_E, (size_t)T * Imax * sizeof(float));    /* [m, I] */
    float *dn = cpu_scratch(c, CPU_SCR_F, (size_t)T * H * sizeof(float));        /* [m, H] */
    for (int e = 0; e < E; e++) {
        int m = 0;
        for (int t = 0; t < T; t++)
            for (int k = 0; k < top_k; k++)
                if (sel[(size_t)t * top_k + k] == e) {
                    rows[m] = t;
                    rw[m] = wt[(size_t)t * top_k + k];
                    memcpy(xg + (size_t)m * H, xx + (size_t)t * H, (size_t)H * sizeof(float));
                    m++;
                }
        if (m == 0) continue;
        const bk_weight_t *wgu = experts_gate_up[e], *wd = experts_down[e];
        assert(wgu->rows == 2 * I && wgu->cols == H && wd->rows == H && wd->cols == I);
        cpu_gemm_xwt(xg, wgu->data, m, 2 * I, H, gu);
        for (int r = 0; r < m; r++)
            for (int i = 0; i < I; i++)
                act[(size_t)r * I + i] = cpu_silu(gu[(size_t)r * 2 * I + i]) * gu[(size_t)r * 2 * I + I + i];
        cpu_gemm_xwt(act, wd->data, m, H, I, dn);
        for (int r = 0; r < m; r++) {
            float *orow = o + (size_t)rows[r] * H;
            for (int h = 0; h < H; h++) orow[h] += rw[r] * dn[(size_t)r * H + h];
        }
    }
    if (shared_gate_up) {
        assert(shared_down && shared_gate && shared_gate_up->rows == 2 * I_shared && shared_down->cols == I_shared);
        cpu_gemm_xwt(xx, shared_gate_up->data, T, 2 * I_shared, H, gu);
        for (int t = 0; t < T; t++)
            for (int i = 0; i < I_shared; i++)
                act[(size_t)t * I_shared + i] =
                    cpu_silu(gu[(size_t)t * 2 * I_shared + i]) * gu[(size_t)t * 2 * I_shared + I_shared + i];
        cpu_gemm_xwt(act, shared_down->data, T, H, I_shared, dn);
        for (int t = 0; t < T; t++) {
            double dot = 0.0;
            for (int h = 0; h < H; h++) dot += (double)xx[(size_t)t * H + h] * shared_gate->data[h];
            float s = cpu_sigmoid((float)dot);
            for (int h = 0; h < H; h++) o[(size_t)t * H + h] += s * dn[(size_t)t * H + h];
        }
    }
}
