/*
 * sample: logits -> token. Greedy, temperature, top-k, top-p (nucleus), min-p,
 * a seeded random stream per request, and the log-probabilities of the chosen
 * token and of the top-K alternatives (under the model's distribution, i.e.
 * log_softmax of the raw logits, as OpenAI and vLLM report them).
 *
 * Order of the filters (as vLLM and HF apply them): temperature scales the
 * logits, then top-k keeps the k largest, then top-p keeps the smallest set
 * whose probability reaches p (top_p < 1 only), then min-p drops tokens below min_p
 * times the top probability; the survivors are renormalised and one is drawn.
 * temperature == 0 is greedy (ties: the lowest id). Candidates are ranked by logit,
 * then by lower id, so ties at a top-k or top-p boundary keep the lowest ids.
 *
 * The draw is counter-based (sample_rng.h): a function of (seed, step, token id),
 * where step is the index of the output token being generated. The same logits and
 * (seed, step) give the same token whatever came before (batching, preemption and
 * recompute change nothing), and the CUDA sampler (cuda/sample.cu) implements the
 * same definition. In exact terms, with x_i = (logit_i - max) / T and w_i = exp(x_i)
 * (double precision): top-p keeps the shortest prefix of the top-k candidates whose
 * cumulative w reaches top_p * (sum of w over the top-k candidates), min-p keeps
 * w_i >= min_p, and the token is the survivor with the largest smp_race_score.
 * Every sampler here is O(V) plus O(k log k) for the candidates it keeps.
 */
#ifndef HS_SAMPLE_H
#define HS_SAMPLE_H

#include <stdint.h>

#include "hyserve.h"

/* A sequential random stream (xoshiro256**, seeded through splitmix64), for tools
 * (e.g. `hyserve bench`'s random prompts); the sampler itself is counter-based. */
typedef struct {
    uint64_t s[4];
} smp_rng_t;

void smp_rng_seed(smp_rng_t *r, uint64_t seed);
uint64_t smp_rng_next(smp_rng_t *r);
/* Uniform double in [0, 1). */
double smp_rng_uniform(smp_rng_t *r);

/* Scratch for one sampler call, sized for the vocabulary (allocated once). */
typedef struct {
    float v;          /* logit */
    int32_t i;        /* token id */
} smp_cand_t;

typedef struct {
    int vocab;
    smp_cand_t *cand; /* [V] candidates, sorted best first when filtered */
} smp_scratch_t;

void smp_scratch_init(smp_scratch_t *s, int vocab);
void smp_scratch_free(smp_scratch_t *s);

typedef struct {
    int32_t token;
    float logprob;                     /* log_softmax(logits)[token] */
    int n_top;
    int32_t top_ids[HS_MAX_TOP_LOGPROBS];
    float top_logprobs[HS_MAX_TOP_LOGPROBS]; /* descending */
} smp_result_t;

/* Sample from logits[V] (fp32, not modified) with the request's parameters; the draw
 * is the one of (seed, step) (sample_rng.h). */
void smp_sample(const float *logits, int vocab, const hs_sampling_t *sp, uint64_t seed, uint64_t step,
                smp_scratch_t *scratch, smp_result_t *out);

/* Validate sampling parameters; HS_OK or HS_ERR_INVALID with a message. */
int smp_validate(const hs_sampling_t *sp, char *err, size_t n);

#endif
