/* sample: token selection and log-probabilities (see sample.h for the order of filters). */
#include "sample.h"

#include <assert.h>
#include <stdbool.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sample_rng.h"
#include "util.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void smp_rng_seed(smp_rng_t *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t smp_rng_next(smp_rng_t *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double smp_rng_uniform(smp_rng_t *r) { return (double)(smp_rng_next(r) >> 11) * 0x1.0p-53; }

void smp_scratch_init(smp_scratch_t *s, int vocab) {
    s->vocab = vocab;
    s->cand = hs_malloc(sizeof(smp_cand_t) * (size_t)vocab);
}

void smp_scratch_free(smp_scratch_t *s) {
    free(s->cand);
    memset(s, 0, sizeof *s);
}

int smp_validate(const hs_sampling_t *sp, char *err, size_t n) {
    if (!(sp->temperature >= 0 && sp->temperature <= 100))
        return hs_errf(err, n, HS_ERR_INVALID, "temperature must be in [0, 100], got %g", sp->temperature);
    if (!(sp->top_p > 0 && sp->top_p <= 1))
        return hs_errf(err, n, HS_ERR_INVALID, "top_p must be in (0, 1], got %g", sp->top_p);
    if (sp->top_k < 0) return hs_errf(err, n, HS_ERR_INVALID, "top_k must be >= 0 (0 disables it), got %d", sp->top_k);
    if (!(sp->min_p >= 0 && sp->min_p < 1))
        return hs_errf(err, n, HS_ERR_INVALID, "min_p must be in [0, 1), got %g", sp->min_p);
    if (sp->max_tokens < 1) return hs_errf(err, n, HS_ERR_INVALID, "max_tokens must be >= 1, got %d", sp->max_tokens);
    if (sp->top_logprobs < 0 || sp->top_logprobs > HS_MAX_TOP_LOGPROBS)
        return hs_errf(err, n, HS_ERR_INVALID, "top_logprobs must be in [0, %d], got %d", HS_MAX_TOP_LOGPROBS,
                       sp->top_logprobs);
    if (sp->n_stop < 0 || sp->n_stop > HS_MAX_STOP_SEQS)
        return hs_errf(err, n, HS_ERR_INVALID, "at most %d stop sequences", HS_MAX_STOP_SEQS);
    for (int i = 0; i < sp->n_stop; i++)
        if (sp->stop_len[i] < 1 || sp->stop_len[i] > HS_MAX_STOP_LEN)
            return hs_errf(err, n, HS_ERR_INVALID, "stop sequence %d must have 1..%d tokens", i, HS_MAX_STOP_LEN);
    return HS_OK;
}

typedef smp_cand_t vi_t;

/* "a ranks before b": larger logit, then smaller id (deterministic ties). */
static inline int before(vi_t a, vi_t b) { return a.v > b.v || (a.v == b.v && a.i < b.i); }

/* Keep the k best of a stream in a min-heap h[0..*n) (root = worst kept). */
static void heap_push(vi_t *h, int *n, int k, vi_t x) {
    if (*n < k) {
        int c = (*n)++;
        h[c] = x;
        while (c > 0) {
            int p = (c - 1) / 2;
            if (!before(h[c], h[p])) {
                vi_t t = h[p]; h[p] = h[c]; h[c] = t;
                c = p;
            } else {
                break;
            }
        }
    } else if (before(x, h[0])) {
        h[0] = x;
        int p = 0;
        for (;;) {
            int l = 2 * p + 1, r = l + 1, w = p;
            if (l < *n && before(h[w], h[l])) w = l;
            if (r < *n && before(h[w], h[r])) w = r;
            if (w == p) break;
            vi_t t = h[p]; h[p] = h[w]; h[w] = t;
            p = w;
        }
    }
}

static int cmp_vi(const void *a, const void *b) {
    vi_t x = *(const vi_t *)a, y = *(const vi_t *)b;
    return before(x, y) ? -1 : before(y, x) ? 1 : 0;
}

/* The k best of v[0..V) into out[0..k), sorted best first. Returns min(k, V). */
static int top_k_select(const float *v, int V, int k, vi_t *out) {
    if (k > V) k = V;
    int n = 0;
    for (int i = 0; i < V; i++) heap_push(out, &n, k, (vi_t){v[i], i});
    qsort(out, (size_t)n, sizeof *out, cmp_vi);
    return n;
}

/* The race winner among cand[0..n) (sample_rng.h): largest score, then lowest id. */
static int32_t draw(const vi_t *cand, int n, double mx, double T, uint64_t key) {
    double best = -INFINITY;
    int32_t tok = cand[0].i;
    for (int c = 0; c < n; c++) {
        const double s = smp_race_score(((double)cand[c].v - mx) / T, key, cand[c].i);
        if (s > best || (s == best && cand[c].i < tok)) best = s, tok = cand[c].i;
    }
    return tok;
}

void smp_sample(const float *logits, int V, const hs_sampling_t *sp, uint64_t seed, uint64_t step,
                smp_scratch_t *scr, smp_result_t *out) {
    assert(V > 0 && scr->vocab >= V);
    memset(out, 0, sizeof *out);

    /* log_softmax of the raw logits: the reported log-probabilities. */
    float mx = -INFINITY;
    int32_t argmax = 0;
    for (int i = 0; i < V; i++)
        if (logits[i] > mx) mx = logits[i], argmax = i;
    double sum = 0;
    for (int i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    const float lse = mx + (float)log(sum);

    int32_t tok = argmax;
    if (sp->temperature > 0 && isfinite(mx)) {
        const double T = sp->temperature;
        vi_t *cand = scr->cand;
        int n;
        const bool top_p = sp->top_p < 1, min_p = sp->min_p > 0, filter_mass = top_p || min_p;
        if (sp->top_k > 0 && sp->top_k < V) {
            n = top_k_select(logits, V, sp->top_k, cand);
        } else {
            for (int i = 0; i < V; i++) cand[i] = (vi_t){logits[i], i};
            n = V;
            if (filter_mass) qsort(cand, (size_t)n, sizeof *cand, cmp_vi);
        }
        if (filter_mass) {
            /* cand is sorted best first: weights w = exp((v - max) / T) over the top-k survivors. */
            double z = 0;
            if (top_p)
                for (int c = 0; c < n; c++) z += exp(((double)cand[c].v - mx) / T);
            const double target = (double)sp->top_p * z;
            double cum = 0;
            int keep = 0;
            while (keep < n) {
                const double w = exp(((double)cand[keep].v - mx) / T);
                if (min_p && w < (double)sp->min_p) break; /* p < min_p * p_max */
                cum += w;
                keep++;
                if (top_p && cum >= target) break;
            }
            n = keep > 0 ? keep : 1;
        }
        tok = draw(cand, n, mx, T, smp_draw_key(seed, step));
    }
    out->token = tok;
    out->logprob = logits[tok] - lse;
    if (sp->top_logprobs > 0) {
        vi_t top[HS_MAX_TOP_LOGPROBS];
        /* O(V log k) with a heap of at most 20. */
        int nt = 0;
        for (int i = 0; i < V; i++) heap_push(top, &nt, sp->top_logprobs, (vi_t){logits[i], i});
        qsort(top, (size_t)nt, sizeof *top, cmp_vi);
        out->n_top = nt;
        for (int i = 0; i < nt; i++) {
            out->top_ids[i] = top[i].i;
            out->top_logprobs[i] = top[i].v - lse;
        }
    }
}

void hs_sampling_default(hs_sampling_t *sp) {
    memset(sp, 0, sizeof *sp);
    sp->temperature = 1.0f;
    sp->top_p = 1.0f;
    sp->max_tokens = 16;
}
