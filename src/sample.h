/*
 * sample: logits -> token. Greedy, temperature, top-k, top-p (nucleus), min-p,
 * a seeded random stream per request, and the log-probabilities of the chosen
 * token and of the top-K alternatives (under the model's distribution, i.e.
 * log_softmax of the raw logits, as OpenAI and vLLM report them).
 *
 * Order of the filters (as vLLM and HF apply them): temperature scales the
 * logits, then top-k keeps the k largest, then top-p keeps the smallest set
 * whose probability reaches p, then min-p drops tokens below min_p times the top
 * probability; the survivors are renormalised and one is drawn with the
 * request's random stream. temperature == 0 is greedy (ties: the lowest id).
 * Every sampler here is O(V) plus O(k log k) for the candidates it keeps.
 */
#ifndef HS_SAMPLE_H
#define HS_SAMPLE_H

#include <stdint.h>

#include "hyserve.h"

/* A request's random stream (xoshiro256**, seeded through splitmix64). */
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

/* Sample from logits[V] (fp32, not modified) with the request's parameters and stream. */
void smp_sample(const float *logits, int vocab, const hs_sampling_t *sp, smp_rng_t *rng, smp_scratch_t *scratch,
                smp_result_t *out);

/* Validate sampling parameters; HS_OK or HS_ERR_INVALID with a message. */
int smp_validate(const hs_sampling_t *sp, char *err, size_t n);

#endif
