/*
 * sample_rng: the counter-based random stream of the samplers, shared by the CPU
 * reference (sample.c) and the CUDA sampler (cuda/sample.cu), so that both backends
 * draw the same token for the same logits and (seed, step).
 *
 * A draw is a function of (request seed, step = index of the output token being
 * generated, token id), not of a stream state: a token's draw does not depend on what
 * was drawn before, on the batch, or on preemption and recompute.
 *
 * Draw by exponential race (the Gumbel-max trick): every surviving token i gets
 * u_i = U(seed, step, i) in (0, 1) and the score x_i - log(-log u_i) with
 * x_i = (logit_i - max) / T; the highest score wins (ties: lowest id). The winner is i
 * with probability exp(x_i) / sum_j exp(x_j) over the survivors, i.e. the renormalised
 * filtered softmax, and the scores are independent of the order in which tokens are
 * visited, so a parallel argmax gives the same token as a sequential loop.
 * Header-only: plain C11 for the host, __host__ __device__ under nvcc.
 */
#ifndef HS_SAMPLE_RNG_H
#define HS_SAMPLE_RNG_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define SMP_HD __host__ __device__ __forceinline__
#else
#define SMP_HD static inline
#endif

/* splitmix64's finaliser: a bijective 64-bit mix. */
SMP_HD uint64_t smp_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The key of one draw: request seed and step (0 = first output token). */
SMP_HD uint64_t smp_draw_key(uint64_t seed, uint64_t step) {
    return smp_mix64(smp_mix64(seed ^ 0x5851f42d4c957f2dull) + (step + 1) * 0x9e3779b97f4a7c15ull);
}

/* Uniform double in (0, 1) (53 bits, never 0 or 1) for token id under a draw key. */
SMP_HD double smp_draw_u(uint64_t key, int32_t id) {
    uint64_t h = smp_mix64(key + ((uint64_t)(uint32_t)id + 1) * 0xd1b54a32d192ed03ull);
    return ((double)(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* Race score of a token with scaled logit x = (logit - max) / T: x + Gumbel noise. */
SMP_HD double smp_race_score(double x, uint64_t key, int32_t id) { return x - log(-log(smp_draw_u(key, id))); }

#endif
