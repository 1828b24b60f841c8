/*
 * cpu_gdn: the Gated DeltaNet mixer (backend.h `gdn`, model-spec §2.5, §3).
 *
 * Input (fp32): in [T, ld], ld = conv_dim + Hv*dv + 2*Hv, per token the column blocks
 * [qkv | z | b | a] of linear_n: qkv [conv_dim] pre-conv channels [q (Hk*dk) | k (Hk*dk) |
 * v (Hv*dv)], z [Hv*dv], b [Hv], a [Hv]; every read of them uses the row stride ld.
 * Weights conv_w [conv_dim, Kc], A_log [Hv], dt_bias [Hv], norm_w [dv]. Output out [T, Hv*dv].
 *
 * Per sequence s (tokens [t0, t1), n_past[s]):
 *   1. conv: window = conv state (conv_width pre-conv rows, token-major, oldest first;
 *      the last Kc-1 rows are the left context; zeros when n_past == 0) ++ new rows;
 *      y[t][c] = silu(sum_j w[c][j] * x[t-(Kc-1)+j]); the state becomes the last
 *      conv_width rows of the window (stored in the pool's conv dtype).
 *   2. q, k per (token, key head): L2 norm (x / sqrt(sum x^2 + 1e-6)); q *= dk^-1/2.
 *   3. gates per (token, value head): beta = sigmoid(b), g = -exp(A_log) *
 *      softplus(a + dt_bias) with torch's threshold (x > 20 ? x : log1p(exp(x))).
 *   4. delta rule per value head h (key head h / r, r = Hv / Hk) on the state
 *      S^T [dv][dk] fp32 loaded from the SSM granules (zero when n_past == 0):
 *      recurrent form (§2.5.6) for segments of any length (see below); the state
 *      is stored back in the ssm dtype.
 *   5. gated RMSNorm per (token, value head): o / sqrt(mean(o^2) + eps) * w * silu(z).
 * Why always recurrent: the reference must give the same result however a prompt is
 * cut into chunks (one-shot, chunked prefill, token by token, re-prefill after
 * preemption). The recurrent form does the same operations in the same order for
 * every cut; the chunked form reorders them at chunk edges (measured: 7.6e-5 in
 * logprob on the qwen3_5_text fixture between a 130-token one-shot prefill and
 * 64-token chunks). On a CPU the chunked form saves nothing: both are ~4*dk*dv
 * flops per token and head, far below the GEMMs. cpu_delta_chunked stays as the
 * tested reference of the chunked algorithm that the CUDA prefill kernel runs
 * (cpu_gdn_force_chunked = 1 in tests selects it).
 * Threads: conv over channels of one sequence; steps 2-5 over (sequence, head).
 * The arithmetic per (sequence, head) does not depend on the rest of the batch.
 *
 * Chunked form, per chunk of C <= 64 tokens with G_r = cumsum(g) inside the chunk:
 *   A[r][s] = beta_r exp(G_r - G_s) k_r.k_s (s < r);  (I + A) W = diag(beta e^G) K,
 *   (I + A) U = diag(beta) V solved by forward substitution (no explicit inverse);
 *   V' = U - W S;  O_r = e^{G_r} q_r S + sum_{s<=r} (q_r.k_s) e^{G_r-G_s} V'_s;
 *   S <- e^{G_last} S + sum_r e^{G_last - G_r} k_r V'_r^T.
 * Scratch: A conv out [T, conv_dim]; B gates [T, Hv] x2; C o [T, Hv, dv];
 *          D per-thread state + chunk work.
 */
#include <assert.h>
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_int.h"

/* Tests set this to run segments longer than 64 tokens through the chunked form. */
int cpu_gdn_force_chunked = 0;

void cpu_delta_recurrent(float *St, int dk, int dv, int T, const float *q, int ldq, const float *k, int ldk,
                         const float *v, int ldv, const float *g, const float *beta, int ldg, float *o, int ldo) {
    for (int t = 0; t < T; t++) {
        const float *kt = k + (size_t)t * ldk, *qt = q + (size_t)t * ldq, *vt = v + (size_t)t * ldv;
        float decay = expf(g[(size_t)t * ldg]), bt = beta[(size_t)t * ldg];
        float *ot = o + (size_t)t * ldo;
        for (int j = 0; j < dv; j++) {
            float *row = St + (size_t)j * dk; /* S[:, j] */
            float m = 0.0f;
            for (int i = 0; i < dk; i++) {
                row[i] *= decay;
                m += row[i] * kt[i];
            }
            float delta = bt * (vt[j] - m);
            float acc = 0.0f;
            for (int i = 0; i < dk; i++) {
                row[i] += kt[i] * delta;
                acc += row[i] * qt[i];
            }
            ot[j] = acc;
        }
    }
}

size_t cpu_delta_chunk_work(int dk, int dv) {
    int C = CPU_GDN_CHUNK;
    /* G[C], A[C][C], W[C][dk], U[C][dv] (becomes V'), QK[C][C] */
    return (size_t)C + (size_t)C * C + (size_t)C * dk + (size_t)C * dv + (size_t)C * C;
}

void cpu_delta_chunked(float *St, int dk, int dv, int T, const float *q, int ldq, const float *k, int ldk,
                       const float *v, int ldv, const float *g, const float *beta, int ldg, float *o, int ldo,
                       float *work) {
    const int CC = CPU_GDN_CHUNK;
    float *G = work;               /* [C] */
    float *A = G + CC;             /* [C][C] */
    float *W = A + CC * CC;        /* [C][dk] */
    float *U = W + (size_t)CC * dk; /* [C][dv] */
    float *QK = U + (size_t)CC * dv; /* [C][C] */
    for (int c0 = 0; c0 < T; c0 += CC) {
        int C = T - c0 < CC ? T - c0 : CC;
        const float *Kc = k + (size_t)c0 * ldk, *Qc = q + (size_t)c0 * ldq, *Vc = v + (size_t)c0 * ldv;
        float acc = 0.0f;
        for (int r = 0; r < C; r++) {
            acc += g[(size_t)(c0 + r) * ldg];
            G[r] = acc;
        }
        /* A (strictly lower) and QK (lower incl. diagonal, decayed) */
        for (int r = 0; r < C; r++) {
            float br = beta[(size_t)(c0 + r) * ldg];
            for (int s = 0; s <= r; s++) {
                float kk = 0.0f, qk = 0.0f;
                for (int i = 0; i < dk; i++) {
                    kk += Kc[(size_t)r * ldk + i] * Kc[(size_t)s * ldk + i];
                    qk += Qc[(size_t)r * ldq + i] * Kc[(size_t)s * ldk + i];
                }
                float dec = expf(G[r] - G[s]);
                A[r * CC + s] = s < r ? br * dec * kk : 0.0f;
                QK[r * CC + s] = qk * dec;
            }
        }
        /* forward substitution: W_r = beta_r e^{G_r} k_r - sum_{s<r} A[r][s] W_s; U likewise */
        for (int r = 0; r < C; r++) {
            float br = beta[(size_t)(c0 + r) * ldg], be = br * expf(G[r]);
            float *wr = W + (size_t)r * dk, *ur = U + (size_t)r * dv;
            for (int i = 0; i < dk; i++) wr[i] = be * Kc[(size_t)r * ldk + i];
            for (int j = 0; j < dv; j++) ur[j] = br * Vc[(size_t)r * ldv + j];
            for (int s = 0; s < r; s++) {
                float ars = A[r * CC + s];
                const float *ws = W + (size_t)s * dk, *us = U + (size_t)s * dv;
                for (int i = 0; i < dk; i++) wr[i] -= ars * ws[i];
                for (int j = 0; j < dv; j++) ur[j] -= ars * us[j];
            }
        }
        /* V' = U - W S  (S[i][j] = St[j][i]); O_r = e^{G_r} q_r S + sum_s QK[r][s] V'_s */
        for (int r = 0; r < C; r++) {
            const float *wr = W + (size_t)r * dk, *qr = Qc + (size_t)r * ldq;
            float *ur = U + (size_t)r * dv;
            float *orow = o + (size_t)(c0 + r) * ldo;
            float eg = expf(G[r]);
            for (int j = 0; j < dv; j++) {
                const float *sj = St + (size_t)j * dk;
                float ws = 0.0f, qs = 0.0f;
                for (int i = 0; i < dk; i++) {
                    ws += wr[i] * sj[i];
                    qs += qr[i] * sj[i];
                }
                ur[j] -= ws;
                orow[j] = eg * qs;
            }
        }
        for (int r = 0; r < C; r++) {
            float *orow = o + (size_t)(c0 + r) * ldo;
            for (int s = 0; s <= r; s++) {
                float w = QK[r * CC + s];
                const float *us = U + (size_t)s * dv;
                for (int j = 0; j < dv; j++) orow[j] += w * us[j];
            }
        }
        /* S <- e^{G_last} S + sum_r e^{G_last - G_r} k_r V'_r^T */
        float gl = G[C - 1], el = expf(gl);
        for (int r = 0; r < C; r++) A[r] = expf(gl - G[r]); /* reuse A's first row */
        for (int j = 0; j < dv; j++) {
            float *sj = St + (size_t)j * dk;
            for (int i = 0; i < dk; i++) sj[i] *= el;
            for (int r = 0; r < C; r++) {
                float f = A[r] * U[(size_t)r * dv + j];
                const float *kr = Kc + (size_t)r * ldk;
                for (int i = 0; i < dk; i++) sj[i] += f * kr[i];
            }
        }
    }
}

static float softplus_torch(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

static char *state_addr(const cpu_ctx_t *c, int s, sm_loc_t loc) {
    assert(loc.page >= 0 && loc.page < c->n_state_pages);
    int32_t page = c->state_pages[(size_t)s * c->n_state_pages + loc.page];
    assert(page >= 0 && page < c->pool.n_pages);
    return (char *)c->pool.base + (size_t)page * c->pool.page_bytes + (size_t)loc.offset;
}

void cpu_gdn(backend_t *bk, int gl, const void *in, const bk_weight_t *conv_w, const bk_weight_t *A_log,
             const bk_weight_t *dt_bias, const bk_weight_t *norm_w, int Hk, int Hv, int dk, int dv, int Kc, float eps,
             void *out) {
    cpu_ctx_t *c = cpu_ctx(bk);
    assert(c->has_batch && c->has_pool);
    const statemap_t *sm = &c->pool.sm;
    const int conv_dim = 2 * Hk * dk + Hv * dv;
    assert(Hv % Hk == 0 && Kc >= 1);
    assert(gl >= 0 && gl < sm->n_gdn && sm->hv == Hv && sm->dk == dk && sm->dv == dv);
    assert(sm->conv_dim == conv_dim && sm->conv_width >= Kc - 1);
    assert(cpu_dtype_plain(sm->conv_dtype) && (sm->ssm_dtype == HS_F32 || sm->ssm_dtype == HS_BF16));
    assert(conv_w->rows == conv_dim && conv_w->cols == Kc);
    assert(A_log->rows * A_log->cols == Hv && dt_bias->rows * dt_bias->cols == Hv);
    assert(norm_w->rows * norm_w->cols == dv);
    const int T = c->n_tokens, S = c->n_seqs, nt = c->n_threads, r = Hv / Hk, W = sm->conv_width;
    if (T == 0 && S == 0) return;
    /* in's column blocks, each read with the row stride ld */
    const size_t ld = (size_t)conv_dim + (size_t)Hv * dv + 2 * (size_t)Hv;
    const float *X = in;                  /* [T, conv_dim] */
    const float *Z = X + conv_dim;        /* [T, Hv*dv] */
    const float *B = Z + (size_t)Hv * dv; /* [T, Hv] */
    const float *Aa = B + Hv;             /* [T, Hv] */
    float *OUT = out;                     /* [T, Hv*dv], contiguous */
    float *Y = cpu_scratch(c, CPU_SCR_A, ((size_t)T + 1) * conv_dim * sizeof(float)); /* [T, conv_dim] */
    float *gates = cpu_scratch(c, CPU_SCR_B, ((size_t)T + 1) * Hv * 2 * sizeof(float));
    float *gg = gates, *bb = gates + (size_t)T * Hv; /* [T, Hv] each */
    float *O = cpu_scratch(c, CPU_SCR_C, ((size_t)T + 1) * Hv * dv * sizeof(float)); /* [T, Hv, dv] */
    size_t per_thread = (size_t)dv * dk + cpu_delta_chunk_work(dk, dv);
    int n_work = nt > 0 ? nt : 1;
    float *work = cpu_scratch(c, CPU_SCR_D, (size_t)n_work * per_thread * sizeof(float));
    (void)nt;

    /* 1. conv per sequence, threads over channels */
    for (int s = 0; s < S; s++) {
        int t0 = c->tok_start[s], Ts = c->tok_start[s + 1] - t0;
        bool fresh = c->n_past[s] == 0;
        char *cs = state_addr(c, s, statemap_conv(sm, gl)); /* [W][conv_dim] conv_dtype */
        hs_dtype_t cdt = sm->conv_dtype;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int ch = 0; ch < conv_dim; ch++) {
            const float *w = conv_w->data + (size_t)ch * Kc;
            /* value at window index i: i < W -> state row i, else token i - W */
#define XWIN(i) ((i) < W ? (fresh ? 0.0f : cpu_load(cs, cdt, (size_t)(i) * conv_dim + ch)) \
                         : X[(size_t)(t0 + (i) - W) * ld + ch])
            for (int t = 0; t < Ts; t++) {
                float acc = 0.0f;
                for (int j = 0; j < Kc; j++) acc += w[j] * XWIN(W + t - (Kc - 1) + j);
                Y[(size_t)(t0 + t) * conv_dim + ch] = cpu_silu(acc);
            }
            /* new state: last W rows of the window (read old rows before overwriting) */
            if (Ts > 0) {
                float tmp[W > 0 ? W : 1];
                for (int i = 0; i < W; i++) tmp[i] = XWIN(Ts + i);
                for (int i = 0; i < W; i++) cpu_store(cs, cdt, (size_t)i * conv_dim + ch, tmp[i]);
            }
#undef XWIN
        }
    }

    /* 2. L2 norm q, k; 3. gates */
    const float qscale = 1.0f / sqrtf((float)dk);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < T; t++) {
        float *yt = Y + (size_t)t * conv_dim;
        for (int h = 0; h < 2 * Hk; h++) {
            float *x = yt + (size_t)h * dk;
            float ss = 0.0f;
            for (int i = 0; i < dk; i++) ss += x[i] * x[i];
            float inv = 1.0f / sqrtf(ss + 1e-6f);
            if (h < Hk) inv *= qscale;
            for (int i = 0; i < dk; i++) x[i] *= inv;
        }
        for (int h = 0; h < Hv; h++) {
            bb[(size_t)t * Hv + h] = cpu_sigmoid(B[(size_t)t * ld + h]);
            gg[(size_t)t * Hv + h] = -expf(A_log->data[h]) * softplus_torch(Aa[(size_t)t * ld + h] + dt_bias->data[h]);
        }
    }

    /* 4. delta rule per (sequence, value head); 5. gated norm */
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int sh = 0; sh < S * Hv; sh++) {
        int s = sh / Hv, h = sh % Hv, kh = h / r;
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *St = work + (size_t)tid * per_thread; /* [dv][dk] */
        float *cw = St + (size_t)dv * dk;
        int t0 = c->tok_start[s], Ts = c->tok_start[s + 1] - t0;
        if (Ts == 0) continue;
        bool fresh = c->n_past[s] == 0;
        for (int j = 0; j < sm->n_slices; j++) {
            const char *p = state_addr(c, s, statemap_ssm(sm, gl, h, j));
            float *dst = St + (size_t)j * sm->slice_rows * dk;
            size_t n = (size_t)sm->slice_rows * dk;
            if (fresh) memset(dst, 0, n * sizeof(float));
            else if (sm->ssm_dtype == HS_F32) memcpy(dst, p, n * sizeof(float));
            else
                for (size_t i = 0; i < n; i++) dst[i] = cpu_load(p, sm->ssm_dtype, i);
        }
        const float *q = Y + (size_t)t0 * conv_dim + (size_t)kh * dk;
        const float *k = Y + (size_t)t0 * conv_dim + (size_t)(Hk + kh) * dk;
        const float *v = Y + (size_t)t0 * conv_dim + (size_t)2 * Hk * dk + (size_t)h * dv;
        float *o = O + ((size_t)t0 * Hv + h) * dv;
        if (Ts <= CPU_GDN_CHUNK || !cpu_gdn_force_chunked)
            cpu_delta_recurrent(St, dk, dv, Ts, q, conv_dim, k, conv_dim, v, conv_dim, gg + (size_t)t0 * Hv + h,
                                bb + (size_t)t0 * Hv + h, Hv, o, Hv * dv);
        else
            cpu_delta_chunked(St, dk, dv, Ts, q, conv_dim, k, conv_dim, v, conv_dim, gg + (size_t)t0 * Hv + h,
                              bb + (size_t)t0 * Hv + h, Hv, o, Hv * dv, cw);
        for (int j = 0; j < sm->n_slices; j++) {
            char *p = state_addr(c, s, statemap_ssm(sm, gl, h, j));
            const float *src = St + (size_t)j * sm->slice_rows * dk;
            size_t n = (size_t)sm->slice_rows * dk;
            if (sm->ssm_dtype == HS_F32) memcpy(p, src, n * sizeof(float));
            else
                for (size_t i = 0; i < n; i++) cpu_store(p, sm->ssm_dtype, i, src[i]);
        }
        /* 5. gated RMSNorm */
        for (int t = t0; t < t0 + Ts; t++) {
            const float *ot = O + ((size_t)t * Hv + h) * dv;
            const float *zt = Z + (size_t)t * ld + (size_t)h * dv;
            float *yt = OUT + ((size_t)t * Hv + h) * dv;
            float ss = 0.0f;
            for (int j = 0; j < dv; j++) ss += ot[j] * ot[j];
            float inv = 1.0f / sqrtf(ss / dv + eps);
            for (int j = 0; j < dv; j++) yt[j] = ot[j] * inv * norm_w->data[j] * cpu_silu(zt[j]);
        }
    }
}
