/*
 * cpu_attn: gated full attention over the paged KV cache (backend.h `attention`,
 * model-spec §2.6).
 *
 * Input qkv [T, ld], ld = Hq*2D + 2*Hkv*D: per token the column blocks [qg | k | v] of
 * linear_n (qg [Hq*2D], per head [q (D) | gate (D)]; k, v [Hkv*D]), read with the row
 * stride ld and never written.
 *
 * Per step (batch from set_batch, pool from set_batch):
 *   1. For every token t and query head h: q = qg[t, h*2D : h*2D+D], RMSNorm(1+w)
 *      with q_norm, rotate-half RoPE on the first rope_dim dims at positions[t]
 *      (inv_freq_i = theta^(-2i/rope_dim), fp32 cos/sin of a double angle) -> Q
 *      scratch [T, Hq, D] fp32.
 *   2. For every token and KV head: k -> RMSNorm(1+w) with k_norm -> RoPE; write k
 *      and v into the block of position p: block_tables[s][p / block_size], row
 *      p % block_size, at kv_offset(kv, a, 0|1, row, head) (layout.h). kv dtype
 *      f32 / bf16 / f16 are stored directly; fp8 E4M3 stores x / scale with a
 *      per-(token, head) fp32 scale = amax / 448 in the block's scale area
 *      [n_attn][2][block_size][kvh].
 *   3. For every (token, query head): causal attention over positions 0..p of its
 *      sequence, read back from the cache (new tokens included, so a token sees
 *      exactly what a later decode step will see), KV head = h / (Hq / Hkv),
 *      scores scaled by D^-1/2, softmax in fp32 (max-subtracted), then
 *      out[t, h*D + d] = (sum_j p_j v_j[d]) * sigmoid(gate[d]).
 * The per-(token, head) work is independent of other sequences in the batch, so
 * a sequence gives bit-identical outputs alone or batched.
 * Scratch: A = Q [T, Hq, D]; B = per-thread scores [n_threads][max_ctx] + K/V row.
 */
#include <assert.h>
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu_int.h"

/* In-place RMSNorm(1+w) over one head vector of D floats. */
static void head_norm(float *x, const float *w, int D, float eps) {
    double ss = 0.0;
    for (int i = 0; i < D; i++) ss += (double)x[i] * x[i];
    float inv = 1.0f / sqrtf((float)(ss / D) + eps);
    for (int i = 0; i < D; i++) x[i] = x[i] * inv * (1.0f + w[i]);
}

/* Rotate-half RoPE on the first R dims of x at position pos. */
static void rope(float *x, int R, int pos, float theta) {
    int half = R / 2;
    for (int i = 0; i < half; i++) {
        float inv_freq = (float)pow((double)theta, -2.0 * i / R);
        float ang = (float)pos * inv_freq; /* fp32 product as HF (position * inv_freq in fp32) */
        float cs = cosf(ang), sn = sinf(ang);
        float x0 = x[i], x1 = x[i + half];
        x[i] = x0 * cs - x1 * sn;
        x[i + half] = x1 * cs + x0 * sn;
    }
}

/* Address of K (which 0) or V (1) of layer a, position p of sequence s, head h. */
static char *kv_addr(const cpu_ctx_t *c, int s, int a, int which, int p, int h, float **scale) {
    const kv_layout_t *kv = &c->pool.kv;
    int blk = p / kv->block_size, row = p % kv->block_size;
    assert(blk < c->max_blocks);
    int32_t page = c->block_tables[(size_t)s * c->max_blocks + blk];
    assert(page >= 0 && page < c->pool.n_pages);
    char *base = (char *)c->pool.base + (size_t)page * c->pool.page_bytes;
    if (scale)
        *scale = kv->kv_dtype == HS_F8_E4M3
                     ? (float *)(base + kv->scale_offset) +
                           (((size_t)a * 2 + which) * kv->block_size + row) * kv->kvh + h
                     : NULL;
    return base + kv_offset(kv, a, which, row, h);
}

static void kv_store(void *dst, float *scale, hs_dtype_t t, const float *x, int D) {
    if (t == HS_F8_E4M3) {
        float amax = 0.0f;
        for (int i = 0; i < D; i++) amax = fmaxf(amax, fabsf(x[i]));
        float sc = amax > 0.0f ? amax / 448.0f : 1.0f;
        *scale = sc;
        for (int i = 0; i < D; i++) ((uint8_t *)dst)[i] = cpu_f32_to_e4m3(x[i] / sc);
    } else {
        for (int i = 0; i < D; i++) cpu_store(dst, t, (size_t)i, x[i]);
    }
}

static void kv_load(const void *src, const float *scale, hs_dtype_t t, float *x, int D) {
    if (t == HS_F8_E4M3) {
        for (int i = 0; i < D; i++) x[i] = hs_e4m3_to_f32(((const uint8_t *)src)[i]) * *scale;
    } else if (t == HS_F32) {
        memcpy(x, src, (size_t)D * sizeof(float));
    } else {
        for (int i = 0; i < D; i++) x[i] = cpu_load(src, t, (size_t)i);
    }
}

void cpu_attention(backend_t *bk, int a, const void *qkv, const bk_weight_t *q_norm, const bk_weight_t *k_norm,
                   int Hq, int Hkv, int D, int rope_dim, float theta, float eps, void *out) {
    cpu_ctx_t *c = cpu_ctx(bk);
    assert(c->has_batch && c->has_pool);
    const kv_layout_t *kv = &c->pool.kv;
    assert(a >= 0 && a < kv->n_attn && kv->kvh == Hkv && kv->head_dim == D);
    assert(Hq % Hkv == 0 && rope_dim % 2 == 0 && rope_dim <= D);
    assert(q_norm->rows * q_norm->cols == D && k_norm->rows * k_norm->cols == D);
    assert(kv->kv_dtype == HS_F8_E4M3 || cpu_dtype_plain(kv->kv_dtype));
    const int T = c->n_tokens, S = c->n_seqs, nt = c->n_threads;
    if (T == 0) return;
    /* qkv's column blocks, each read with the row stride ld */
    const size_t ld = (size_t)Hq * 2 * D + 2 * (size_t)Hkv * D;
    const float *QG = qkv;                    /* [T, Hq, 2D] */
    const float *K = QG + (size_t)Hq * 2 * D; /* [T, Hkv, D] */
    const float *V = K + (size_t)Hkv * D;     /* [T, Hkv, D] */
    float *O = out;                           /* [T, Hq, D], contiguous */
    float *Q = cpu_scratch(c, CPU_SCR_A, (size_t)T * Hq * D * sizeof(float)); /* [T, Hq, D] */
    int max_ctx = 1;
    for (int s = 0; s < S; s++) {
        int L = c->n_past[s] + c->tok_start[s + 1] - c->tok_start[s];
        max_ctx = L > max_ctx ? L : max_ctx;
    }
    int n_work = nt > 0 ? nt : 1;
    size_t per_thread = (size_t)max_ctx + 2 * (size_t)D + (size_t)D;
    float *work = cpu_scratch(c, CPU_SCR_B, (size_t)n_work * per_thread * sizeof(float));
    /* token -> sequence */
    int32_t *seq_of = cpu_scratch(c, CPU_SCR_C, (size_t)T * sizeof(int32_t));
    for (int s = 0; s < S; s++)
        for (int t = c->tok_start[s]; t < c->tok_start[s + 1]; t++) seq_of[t] = s;
    const float *qw = q_norm->data, *kw = k_norm->data;
    const int group = Hq / Hkv;
    const float scale = 1.0f / sqrtf((float)D);
    (void)nt;

    /* 1 + 2: project q, write k/v into the cache */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < T; t++) {
        int s = seq_of[t], pos = c->positions[t];
        assert(pos == c->n_past[s] + (t - c->tok_start[s]));
        for (int h = 0; h < Hq; h++) {
            float *q = Q + ((size_t)t * Hq + h) * D;
            memcpy(q, QG + (size_t)t * ld + (size_t)h * 2 * D, (size_t)D * sizeof(float));
            head_norm(q, qw, D, eps);
            rope(q, rope_dim, pos, theta);
        }
        float kr[D > 0 ? D : 1];
        for (int h = 0; h < Hkv; h++) {
            float *sc;
            memcpy(kr, K + (size_t)t * ld + (size_t)h * D, (size_t)D * sizeof(float));
            head_norm(kr, kw, D, eps);
            rope(kr, rope_dim, pos, theta);
            char *dk = kv_addr(c, s, a, 0, pos, h, &sc);
            kv_store(dk, sc, kv->kv_dtype, kr, D);
            char *dv = kv_addr(c, s, a, 1, pos, h, &sc);
            kv_store(dv, sc, kv->kv_dtype, V + (size_t)t * ld + (size_t)h * D, D);
        }
    }

    /* 3: attention per (token, query head) */
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int th = 0; th < T * Hq; th++) {
        int t = th / Hq, h = th % Hq, s = seq_of[t], pos = c->positions[t];
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *sc = work + (size_t)tid * per_thread; /* [max_ctx] scores */
        float *row = sc + max_ctx;                   /* [D] K or V row */
        float *acc = row + D;                        /* [D] */
        const float *q = Q + ((size_t)t * Hq + h) * D;
        int kh = h / group;
        float mx = -INFINITY;
        for (int j = 0; j <= pos; j++) {
            float *scl;
            const char *src = kv_addr(c, s, a, 0, j, kh, &scl);
            kv_load(src, scl, kv->kv_dtype, row, D);
            float d = 0.0f;
            for (int i = 0; i < D; i++) d += q[i] * row[i];
            sc[j] = d * scale;
            mx = sc[j] > mx ? sc[j] : mx;
        }
        float sum = 0.0f;
        for (int j = 0; j <= pos; j++) {
            sc[j] = expf(sc[j] - mx);
            sum += sc[j];
        }
        memset(acc, 0, (size_t)D * sizeof(float));
        for (int j = 0; j <= pos; j++) {
            float *scl;
            const char *src = kv_addr(c, s, a, 1, j, kh, &scl);
            kv_load(src, scl, kv->kv_dtype, row, D);
            float p = sc[j] / sum;
            for (int i = 0; i < D; i++) acc[i] += p * row[i];
        }
        const float *gate = QG + (size_t)t * ld + (size_t)h * 2 * D + D;
        float *o = O + ((size_t)t * Hq + h) * D;
        for (int i = 0; i < D; i++) o[i] = acc[i] * cpu_sigmoid(gate[i]);
    }
}
