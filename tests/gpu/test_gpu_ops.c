/*
 * Op-by-op parity of the CUDA backend with the CPU reference (test-backend-ops style):
 * every op of backend.h runs on both backends with the same bf16-representable random
 * inputs and the same weights; outputs are compared by ||gpu - cpu|| / ||cpu||.
 * Tolerances: 1e-2 for single ops on bf16 activations (one or two bf16 roundings of
 * the output), 2e-2 for the mixers (attention, GDN: several rounded intermediates).
 * The attention and GDN cases use the gpu-dense fixture's head shapes with a small
 * page pool: two sequences, a 100-token prefill and a 20-token one, then a decode step
 * of both, so every path runs (chunked GDN, fused recurrent GDN, prefill and split-KV
 * decode attention, paged KV writes, state in place). Prints a table; exit 1 on failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "layout.h"
#include "mcfg.h"

static backend_t *B[2]; /* 0 cpu, 1 cuda */
static int fails;
static uint64_t rs = 12345;

static float frand(void) {
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rs >> 11) * 0x1.0p-53 * 2 - 1);
}
static float *rnd(size_t n, float scale) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = hs_bf16_to_f32(hs_f32_to_bf16(frand() * scale));
    return x;
}
static void *act(int b, const float *x, size_t n) {
    void *d = B[b]->alloc(B[b], n * hs_dtype_size(B[b]->act_dtype));
    B[b]->act_upload(B[b], d, x, n);
    return d;
}
static bk_weight_t *wload(int b, const float *x, int64_t rows, int64_t cols) {
    uint16_t *h = malloc((size_t)(rows * cols) * 2);
    for (int64_t i = 0; i < rows * cols; i++) h[i] = hs_f32_to_bf16(x[i]);
    bk_host_tensor_t t = {.data = h, .dtype = HS_BF16, .rows = rows, .cols = cols};
    char err[256];
    bk_weight_t *w = B[b]->weight_load(B[b], &t, err, sizeof err);
    if (!w) fprintf(stderr, "%s\n", err), exit(1);
    free(h);
    return w;
}
/* Per row of logits[n, V] (backend memory): argmax, max, log-sum-exp, through a pick with
 * no draws. */
static void logits_stats(backend_t *bk, const void *l, int n, int V, int32_t *am, float *mx, float *lse) {
    bk->pick(bk, (const float *)l, n, V, NULL, 0);
    bk->pick_wait(bk, am, mx, lse, NULL);
}

static void report(const char *name, void *o0, void *o1, size_t n, double tol, int f32) {
    float *a = malloc(n * 4), *g = malloc(n * 4);
    if (f32) {
        B[0]->download(B[0], a, o0, n * 4);
        B[1]->download(B[1], g, o1, n * 4);
    } else {
        B[0]->act_download(B[0], a, o0, n);
        B[1]->act_download(B[1], g, o1, n);
    }
    double d = 0, r = 0;
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(g[i])) nan = 1;
        d += ((double)g[i] - a[i]) * ((double)g[i] - a[i]);
        r += (double)a[i] * a[i];
    }
    double rel = sqrt(d / (r > 0 ? r : 1));
    int ok = !nan && rel < tol;
    printf("  %-34s rel err %.2e  (tol %.0e)  %s\n", name, rel, tol, ok ? "ok" : "FAIL");
    fails += !ok;
    free(a);
    free(g);
}

int main(int argc, char **argv) {
    char err[512];
    const char *root = argc > 1 ? argv[1] : HYSERVE_SOURCE_DIR;
    B[0] = backend_cpu_create(0);
    B[1] = backend_cuda_create(0, err, sizeof err);
    if (!B[1]) return fprintf(stderr, "%s\n", err), 1;
    const int T = 37, K = 512, N = 384, I = 256;
    /* linear */
    {
        float *x = rnd((size_t)T * K, 1), *w = rnd((size_t)N * K, 0.05f);
        void *o[2];
        for (int b = 0; b < 2; b++) {
            void *xd = act(b, x, (size_t)T * K);
            o[b] = B[b]->alloc(B[b], (size_t)T * N * 4);
            bk_weight_t *wd = wload(b, w, N, K);
            B[b]->linear(B[b], xd, wd, T, o[b]);
            B[b]->sync(B[b]);
        }
        report("linear [37x512] x [384x512]^T", o[0], o[1], (size_t)T * N, 1e-2, 0);
    }
    /* linear_n: three projections of one input (q, k, v shapes / 16) into the column blocks
     * of one [T][640] buffer; the CUDA side packed (weights_pack: the grouped GEMV at small T,
     * one product above) and, in the last pass, unpacked (a GEMM and a strided copy each) */
    for (int pass = 0; pass < 4; pass++) {
        const int Tn = pass == 0 ? 1 : pass == 1 ? 8 : 100, Ns[3] = {512, 64, 64}, ld = 640;
        const bool pack = pass < 3;
        float *x = rnd((size_t)Tn * K, 1), *w[3];
        void *o[2];
        for (int i = 0; i < 3; i++) w[i] = rnd((size_t)Ns[i] * K, 0.05f);
        for (int b = 0; b < 2; b++) {
            void *xd = act(b, x, (size_t)Tn * K);
            bk_weight_t *wd[3];
            for (int i = 0; i < 3; i++) wd[i] = wload(b, w[i], Ns[i], K);
            o[b] = B[b]->alloc(B[b], (size_t)Tn * ld * 4);
            if (b == 1 && pack && (!B[1]->weights_pack || !B[1]->weights_pack(B[1], wd, 3)))
                printf("  (weights_pack unavailable: linear_n runs unpacked)\n");
            B[b]->linear_n(B[b], xd, 3, (const bk_weight_t *const *)wd, Tn, o[b]);
            B[b]->sync(B[b]);
        }
        char name[96];
        snprintf(name, sizeof name, "linear_n %s T=%d, blocks [%d|%d|%d]x%d", pack ? "packed" : "unpacked", Tn, Ns[0],
                 Ns[1], Ns[2], K);
        report(name, o[0], o[1], (size_t)Tn * ld, 1e-2, 0);
    }
    /* rmsnorm: plain, (1+w) with residual */
    for (int pass = 0; pass < 2; pass++) {
        float *x = rnd((size_t)T * K, 2), *res = rnd((size_t)T * K, 1), *w = rnd(K, 0.3f);
        void *o[2], *r[2];
        for (int b = 0; b < 2; b++) {
            void *xd = act(b, x, (size_t)T * K);
            r[b] = pass ? act(b, res, (size_t)T * K) : NULL;
            o[b] = B[b]->alloc(B[b], (size_t)T * K * 4);
            B[b]->rmsnorm(B[b], xd, r[b], wload(b, w, 1, K), 1e-6f, pass == 1, T, K, o[b]);
        }
        report(pass ? "rmsnorm (1+w) + residual add" : "rmsnorm plain w", o[0], o[1], (size_t)T * K, 1e-2, 0);
        if (pass) report("  residual after the add", r[0], r[1], (size_t)T * K, 1e-2, 0);
    }
    /* swiglu, add */
    {
        float *gu = rnd((size_t)T * 2 * I, 3), *y = rnd((size_t)T * I, 1);
        void *o[2], *yy[2];
        for (int b = 0; b < 2; b++) {
            void *gd = act(b, gu, (size_t)T * 2 * I);
            o[b] = B[b]->alloc(B[b], (size_t)T * I * 4);
            B[b]->swiglu(B[b], gd, T, I, o[b]);
            yy[b] = act(b, y, (size_t)T * I);
            B[b]->add(B[b], yy[b], o[b], T, I);
        }
        report("swiglu", o[0], o[1], (size_t)T * I, 1e-2, 0);
        report("add", yy[0], yy[1], (size_t)T * I, 1e-2, 0);
    }
    /* moe: 16 experts top 4, shared expert with gate */
    {
        const int E = 16, k = 4, H = 256, Im = 128, Is = 192;
        float *x = rnd((size_t)T * H, 1), *rw = rnd((size_t)E * H, 0.2f), *sg = rnd(H, 0.1f);
        float *egu[16], *ed[16], *sgu = rnd((size_t)2 * Is * H, 0.06f), *sd = rnd((size_t)H * Is, 0.06f);
        for (int e = 0; e < E; e++) egu[e] = rnd((size_t)2 * Im * H, 0.06f), ed[e] = rnd((size_t)H * Im, 0.06f);
        void *o[2];
        for (int b = 0; b < 2; b++) {
            bk_weight_t *wg[16], *wd[16];
            for (int e = 0; e < E; e++) wg[e] = wload(b, egu[e], 2 * Im, H), wd[e] = wload(b, ed[e], H, Im);
            void *xd = act(b, x, (size_t)T * H);
            o[b] = B[b]->alloc(B[b], (size_t)T * H * 4);
            B[b]->moe(B[b], xd, wload(b, rw, E, H), wg, wd, E, k, true, Im, wload(b, sgu, 2 * Is, H),
                      wload(b, sd, H, Is), wload(b, sg, 1, H), Is, T, H, o[b]);
            B[b]->sync(B[b]);
        }
        report("moe (16 experts, top 4, shared)", o[0], o[1], (size_t)T * H, 1e-2, 0);
    }
    /* logits + stats */
    {
        const int V = 3000, H = 256, n = 5;
        float *x = rnd((size_t)n * H, 1), *w = rnd((size_t)V * H, 0.2f);
        void *o[2];
        int32_t am[2][5];
        float mx[2][5], lse[2][5];
        for (int b = 0; b < 2; b++) {
            o[b] = B[b]->alloc(B[b], (size_t)n * V * 4);
            B[b]->logits(B[b], act(b, x, (size_t)n * H), wload(b, w, V, H), n, o[b]);
            logits_stats(B[b], o[b], n, V, am[b], mx[b], lse[b]);
        }
        report("logits (fp32 out)", o[0], o[1], (size_t)n * V, 1e-2, 1);
        double dl = 0;
        int same = 0;
        for (int i = 0; i < n; i++) dl = fmax(dl, fabs(lse[0][i] - lse[1][i])), same += am[0][i] == am[1][i];
        printf("  %-34s argmax agree %d/%d, max |lse diff| %.2e  %s\n", "logits_stats", same, n, dl,
               dl < 0.05 ? "ok" : "FAIL");
        fails += !(dl < 0.05);

        /* pick (cuda) with draws: the results of a pick without them + sample exactly, and before pick_wait
         * the next embed reads the chosen tokens where prev_rows says (rows 1 and 3 drawn,
         * the others greedy; the last token is a plain id). */
        bk_sample_row_t smp[2];
        memset(smp, 0, sizeof smp);
        for (int i = 0; i < 2; i++) {
            smp[i].row = 1 + 2 * i;
            smp[i].temperature = 0.7f;
            smp[i].top_p = 1;
            smp[i].n_top = 3;
            smp[i].seed = 99 + (uint64_t)i;
            smp[i].step = 4;
        }
        bk_sample_out_t ref[2], got[2];
        B[1]->sample(B[1], o[1], 2, V, smp, ref);
        const int H2 = 256, T2 = 6;
        float *tbl = rnd((size_t)V * H2, 1);
        bk_weight_t *wt = wload(1, tbl, V, H2);
        B[1]->pick(B[1], o[1], n, V, smp, 2);
        const int32_t ids[6] = {9, 9, 9, 9, 9, 7}, prev[6] = {0, 1, 2, 3, 4, -1}, ts[2] = {0, T2}, np[1] = {0};
        const int32_t pos[6] = {0, 1, 2, 3, 4, 5}, bt[1] = {0}, lr[1] = {5};
        bk_batch_t bb = {.n_seqs = 1, .n_tokens = T2, .tok_start = ts, .n_past = np, .positions = pos,
                         .block_tables = bt, .max_blocks = 1, .logit_rows = lr, .n_logits = 1, .ids = ids,
                         .prev_rows = prev};
        bk_pool_t np0;
        memset(&np0, 0, sizeof np0);
        B[1]->set_batch(B[1], &bb, &np0);
        void *eo = B[1]->alloc(B[1], (size_t)T2 * H2 * 2);
        B[1]->embed(B[1], wt, ids, T2, eo);
        int32_t am2[5];
        float mx2[5], lse2[5];
        B[1]->pick_wait(B[1], am2, mx2, lse2, got);
        float *eh = malloc((size_t)T2 * H2 * sizeof(float));
        B[1]->act_download(B[1], eh, eo, (size_t)T2 * H2);
        int bad = 0;
        for (int i = 0; i < n; i++) bad += am2[i] != am[1][i] || mx2[i] != mx[1][i] || lse2[i] != lse[1][i];
        for (int i = 0; i < 2; i++) {
            bad += got[i].token != ref[i].token || got[i].logprob != ref[i].logprob || got[i].n_top != ref[i].n_top;
            for (int k = 0; k < ref[i].n_top; k++)
                bad += got[i].top_ids[k] != ref[i].top_ids[k] || got[i].top_logprobs[k] != ref[i].top_logprobs[k];
        }
        int drew = 0, bad_rows = 0;
        for (int t = 0; t < T2; t++) {
            int want = t == 5 ? 7 : t == 1 ? ref[0].token : t == 3 ? ref[1].token : am[1][t];
            if (t == 1 || t == 3) drew += want != am[1][t];
            bad_rows += memcmp(eh + (size_t)t * H2, tbl + (size_t)want * H2, (size_t)H2 * sizeof(float)) != 0;
        }
        printf("  %-34s %d differences from stats + sample, %d/%d embedded rows wrong (%d draws off the argmax)  %s\n",
               "pick, embed of its tokens", bad, bad_rows, T2, drew, bad || bad_rows ? "FAIL" : "ok");
        fails += bad || bad_rows;
        /* a pick of more rows than its device buffer had (it grows): rows far in */
        {
            const int nb = 1500;
            float *lg = rnd((size_t)nb * V, 4);
            void *dl = B[1]->alloc(B[1], (size_t)nb * V * 4);
            B[1]->upload(B[1], dl, lg, (size_t)nb * V * 4);
            int32_t *amb = malloc((size_t)nb * 4), *amc = malloc((size_t)nb * 4);
            float *mxb = malloc((size_t)nb * 4), *lsb = malloc((size_t)nb * 4);
            B[1]->pick(B[1], dl, nb, V, NULL, 0); /* grows the buffer */
            const int32_t prev2[6] = {1499, 1200, 0, 777, -1, 1024};
            bb.prev_rows = prev2;
            B[1]->set_batch(B[1], &bb, &np0);
            B[1]->embed(B[1], wt, ids, T2, eo);
            B[1]->pick_wait(B[1], amc, mxb, lsb, NULL);
            B[1]->act_download(B[1], eh, eo, (size_t)T2 * H2);
            logits_stats(B[1], dl, nb, V, amb, mxb, lsb); /* again, into the grown buffer */
            int wrong = 0;
            for (int i = 0; i < nb; i++) wrong += amc[i] != amb[i];
            for (int t = 0; t < T2; t++) {
                const int want = prev2[t] >= 0 ? amb[prev2[t]] : ids[t];
                wrong += memcmp(eh + (size_t)t * H2, tbl + (size_t)want * H2, (size_t)H2 * sizeof(float)) != 0;
            }
            printf("  %-34s %d wrong  %s\n", "pick of 1500 rows (buffer grown)", wrong, wrong ? "FAIL" : "ok");
            fails += wrong != 0;
            free(lg), free(amb), free(amc), free(mxb), free(lsb);
        }
        free(eh);
        free(tbl);
    }
    /* the pick's stats alone against float64 on the host: a vocabulary size that takes the
     * 16-byte path with full unrolled rounds (248320, the Qwen3.5 vocabulary) and an odd one
     * (the scalar path); ties of the max (the lowest id wins), -inf entries, one row all
     * -inf but one, a batch that splits rows over many blocks and one over few */
    {
        const int Vs[2] = {248320, 50001}, ns[2] = {3, 130};
        for (int vi = 0; vi < 2; vi++)
            for (int ni = 0; ni < 2; ni++) {
                const int V = Vs[vi], n = ns[ni];
                float *l = rnd((size_t)n * V, 4);
                for (int r = 0; r < n; r++) {
                    float *x = l + (size_t)r * V;
                    const int a = (r * 7919) % V, b = (a + 1 + r * 104729) % V;
                    x[a] = x[b] = 9.5f; /* a tie of the max: the lower of a and b wins */
                    for (int j = 0; j < 40; j++) x[(a + 13 * j + 5) % V] = -INFINITY;
                    if (r == 1)
                        for (int j = 0; j < V; j++) x[j] = j == V - 3 ? -2.f : -INFINITY;
                }
                void *d = B[1]->alloc(B[1], (size_t)n * V * 4);
                B[1]->upload(B[1], d, l, (size_t)n * V * 4);
                int32_t *am = malloc((size_t)n * 4);
                float *mx = malloc((size_t)n * 4), *lse = malloc((size_t)n * 4);
                logits_stats(B[1], d, n, V, am, mx, lse);
                int bad = 0;
                double worst = 0;
                for (int r = 0; r < n; r++) {
                    const float *x = l + (size_t)r * V;
                    int ia = 0;
                    for (int j = 1; j < V; j++)
                        if (x[j] > x[ia]) ia = j;
                    double s = 0;
                    for (int j = 0; j < V; j++) s += exp((double)x[j] - (double)x[ia]);
                    const double ref = (double)x[ia] + log(s), err = fabs(lse[r] - ref) / fmax(1, fabs(ref));
                    worst = fmax(worst, err);
                    bad += am[r] != ia || mx[r] != x[ia] || !(err < 1e-5);
                }
                printf("  logits_stats V %-6d rows %-3d  %d bad rows, max rel lse err %.1e  %s\n", V, n, bad, worst,
                       bad ? "FAIL" : "ok");
                fails += bad != 0;
                B[1]->free(B[1], d);
                free(l), free(am), free(mx), free(lse);
            }
    }
    /* attention and GDN over a paged pool with the gpu-dense head shapes */
    {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/tests/fixtures/gpu-dense", root);
        mcfg_t c;
        if (mcfg_load(dir, &c, err, sizeof err)) return fprintf(stderr, "%s\n", err), 1;
        const int Hq = c.n_heads, Hkv = c.n_kv_heads, D = c.head_dim, Hk = c.lin_k_heads, Hv = c.lin_v_heads;
        const int dk = c.lin_k_dim, dv = c.lin_v_dim, cd = mcfg_conv_dim(&c), Hd = c.hidden;
        bk_pool_t pool[2];
        for (int b = 0; b < 2; b++) {
            mcfg_t cs = c;
            cs.dtype = B[b]->act_dtype;
            kv_layout_init(&pool[b].kv, &c, 1, 16, B[b]->act_dtype, 0);
            if (statemap_init(&pool[b].sm, &cs, 1, HS_F32, 0, pool[b].kv.kv_bytes, 0, 0, err, sizeof err))
                return fprintf(stderr, "%s\n", err), 1;
            pool[b].page_bytes = pool[b].kv.kv_bytes;
            pool[b].n_pages = 256;
            pool[b].base = B[b]->alloc(B[b], pool[b].page_bytes * 256);
        }
        float *wq = rnd(D, 0.2f), *wk = rnd(D, 0.2f), *cw = rnd((size_t)cd * 4, 0.4f), *nw = rnd(dv, 0.3f);
        float *alog = malloc(Hv * 4), *dtb = rnd(Hv, 0.5f);
        for (int h = 0; h < Hv; h++) alog[h] = logf(1.f + 15.f * (float)(h + 1) / Hv);
        (void)Hd;
        int lens[2][2] = {{100, 20}, {1, 1}}, past[2][2] = {{0, 0}, {100, 20}};
        for (int step = 0; step < 2; step++) {
            int L0 = lens[step][0], L1 = lens[step][1], Tt = L0 + L1;
            int32_t ts[3] = {0, L0, Tt}, np[2] = {past[step][0], past[step][1]}, pos[128];
            int32_t bt[2][16], rows[2] = {L0 - 1, Tt - 1};
            for (int t = 0; t < L0; t++) pos[t] = np[0] + t;
            for (int t = 0; t < L1; t++) pos[L0 + t] = np[1] + t;
            for (int q = 0; q < 2; q++)
                for (int i = 0; i < 16; i++) bt[q][i] = q * 16 + i;
            /* the ops' inputs as linear_n leaves them: [qg | k | v] and [qkv | z | b | a] rows */
            const size_t lda = (size_t)(2 * Hq + 2 * Hkv) * D, ldg = (size_t)cd + (size_t)Hv * dv + 2 * (size_t)Hv;
            float *qkva = rnd((size_t)Tt * lda, 1), *gin = rnd((size_t)Tt * ldg, 1);
            for (int t = 0; t < Tt; t++) /* b and a: the wider spread of the gates' inputs */
                for (size_t j = ldg - 2 * (size_t)Hv; j < ldg; j++) gin[(size_t)t * ldg + j] *= 2.f;
            void *oa[2], *og[2];
            for (int b = 0; b < 2; b++) {
                const int E = pool[b].sm.n_pages;
                int32_t *sp = malloc(sizeof(int32_t) * 2 * E);
                for (int q = 0; q < 2; q++)
                    for (int e = 0; e < E; e++) sp[q * E + e] = 64 + q * 96 + e;
                bk_batch_t bk_b = {.n_seqs = 2, .n_tokens = Tt, .tok_start = ts, .n_past = np, .positions = pos,
                                   .block_tables = &bt[0][0], .max_blocks = 16, .state_pages = sp,
                                   .n_state_pages = E, .logit_rows = rows, .n_logits = 2};
                B[b]->set_batch(B[b], &bk_b, &pool[b]);
                oa[b] = B[b]->alloc(B[b], (size_t)Tt * Hq * D * 4);
                B[b]->attention(B[b], 1, act(b, qkva, (size_t)Tt * lda), wload(b, wq, 1, D), wload(b, wk, 1, D), Hq,
                                Hkv, D, c.rope_dim, (float)c.rope_theta, 1e-6f, oa[b]);
                og[b] = B[b]->alloc(B[b], (size_t)Tt * Hv * dv * 4);
                B[b]->gdn(B[b], 2, act(b, gin, (size_t)Tt * ldg), wload(b, cw, cd, 4), wload(b, alog, 1, Hv),
                          wload(b, dtb, 1, Hv), wload(b, nw, 1, dv), Hk, Hv, dk, dv, 4, 1e-6f, og[b]);
                B[b]->sync(B[b]);
                free(sp);
            }
            report(step ? "attention decode (2 seqs, paged)" : "attention prefill 100+20 (paged)", oa[0], oa[1],
                   (size_t)Tt * Hq * D, 2e-2, 0);
            report(step ? "gdn decode (state carried)" : "gdn prefill 100+20 (chunked)", og[0], og[1],
                   (size_t)Tt * Hv * dv, 2e-2, 0);
        }
    }
    printf("%s\n", fails ? "FAIL" : "OK");
    return fails ? 1 : 0;
}
