/*
 * cpu_sample: bk->sample on the host, the reference for every other backend. Each row
 * goes through smp_sample (sample.c), whose counter-based draw (sample_rng.h) the CUDA
 * sampler reproduces. Rows are independent and run one after another.
 */
#include <assert.h>
#include <string.h>

#include "cpu_int.h"
#include "sample.h"

void cpu_sample(backend_t *bk, const float *logits, int n, int V, const bk_sample_row_t *rows, bk_sample_out_t *out) {
    assert(n >= 0 && V > 0);
    if (n == 0) return;
    smp_scratch_t scr = {.vocab = V,
                         .cand = cpu_scratch(cpu_ctx(bk), CPU_SCR_A, sizeof(smp_cand_t) * (size_t)V)};
    for (int r = 0; r < n; r++) {
        const bk_sample_row_t *q = &rows[r];
        assert(q->row >= 0 && q->n_top >= 0 && q->n_top <= HS_MAX_TOP_LOGPROBS);
        hs_sampling_t sp;
        hs_sampling_default(&sp);
        sp.temperature = q->temperature;
        sp.top_k = q->top_k;
        sp.top_p = q->top_p;
        sp.min_p = q->min_p;
        sp.top_logprobs = q->n_top;
        smp_result_t res;
        smp_sample(logits + (size_t)q->row * (size_t)V, V, &sp, q->seed, q->step, &scr, &res);
        bk_sample_out_t *o = &out[r];
        memset(o, 0, sizeof *o);
        o->token = res.token;
        o->logprob = res.logprob;
        o->n_top = res.n_top;
        memcpy(o->top_ids, res.top_ids, sizeof(int32_t) * (size_t)res.n_top);
        memcpy(o->top_logprobs, res.top_logprobs, sizeof(float) * (size_t)res.n_top);
    }
}
