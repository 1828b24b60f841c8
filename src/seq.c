/*
 * seq: request state (see seq.h for the token bookkeeping). Small and boring on
 * purpose: creation with validation and deep copies, token append with amortised
 * growth, and the stop check run after every committed token.
 *
 * The token array is sized at creation for the prompt plus min(max_tokens, 256)
 * outputs and doubles when full, so a request that stops early costs little and a
 * long one reallocates O(log n) times.
 */
#include "seq.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void sampling_params_default(sampling_params_t *sp) {
    memset(sp, 0, sizeof *sp);
    sp->temperature = 0.0f;
    sp->top_p = 1.0f;
    sp->top_k = 0;
    sp->min_p = 0.0f;
    sp->max_tokens = 16;
}

int sampling_params_check(const sampling_params_t *sp, char *err, size_t n) {
    if (!sp) return hs_errf(err, n, HS_ERR_INVALID, "sampling params: NULL");
    if (!(sp->temperature >= 0.0f) || !isfinite(sp->temperature))
        return hs_errf(err, n, HS_ERR_INVALID, "temperature: must be >= 0 (got %g)", sp->temperature);
    if (!(sp->top_p > 0.0f && sp->top_p <= 1.0f))
        return hs_errf(err, n, HS_ERR_INVALID, "top_p: must be in (0, 1] (got %g)", sp->top_p);
    if (sp->top_k < 0) return hs_errf(err, n, HS_ERR_INVALID, "top_k: must be >= 0 (got %d)", sp->top_k);
    if (!(sp->min_p >= 0.0f && sp->min_p <= 1.0f))
        return hs_errf(err, n, HS_ERR_INVALID, "min_p: must be in [0, 1] (got %g)", sp->min_p);
    if (sp->max_tokens < 1) return hs_errf(err, n, HS_ERR_INVALID, "max_tokens: must be >= 1 (got %d)", sp->max_tokens);
    if (sp->n_eos < 0 || sp->n_eos > SEQ_MAX_EOS)
        return hs_errf(err, n, HS_ERR_INVALID, "eos ids: at most %d (got %d)", SEQ_MAX_EOS, sp->n_eos);
    if (sp->n_stop < 0 || (sp->n_stop > 0 && (!sp->stop_tokens || !sp->stop_lens)))
        return hs_errf(err, n, HS_ERR_INVALID, "stop sequences: bad count or NULL arrays");
    for (int i = 0; i < sp->n_stop; i++)
        if (sp->stop_lens[i] < 1) return hs_errf(err, n, HS_ERR_INVALID, "stop sequence %d: empty", i);
    if (sp->logprobs < 0 || sp->top_logprobs < 0)
        return hs_errf(err, n, HS_ERR_INVALID, "logprobs / top_logprobs: must be >= 0");
    return HS_OK;
}

int seq_create(seq_t **out, int64_t id, const int32_t *prompt, int n_prompt, const sampling_params_t *sp,
               int k_spec, char *err, size_t n) {
    *out = NULL;
    if (id < 0) return hs_errf(err, n, HS_ERR_INVALID, "request id must be >= 0");
    if (!prompt || n_prompt < 1) return hs_errf(err, n, HS_ERR_INVALID, "prompt: at least one token");
    if (k_spec < 0 || k_spec > 16) return hs_errf(err, n, HS_ERR_INVALID, "speculative tokens: 0..16 (got %d)", k_spec);
    int rc = sampling_params_check(sp, err, n);
    if (rc != HS_OK) return rc;

    seq_t *s = hs_calloc(1, sizeof *s);
    s->id = id;
    s->status = SEQ_WAITING;
    s->finish = SEQ_FINISH_NONE;
    int extra = sp->max_tokens < 256 ? sp->max_tokens : 256;
    s->cap = n_prompt + extra + 1;
    s->tokens = hs_malloc((size_t)s->cap * sizeof(int32_t));
    memcpy(s->tokens, prompt, (size_t)n_prompt * sizeof(int32_t));
    s->n_prompt = s->n_tokens = n_prompt;
    s->last = prompt[n_prompt - 1];
    s->k_spec = k_spec;
    s->spec_placeholder = sp->n_eos > 0 ? sp->eos_ids[0] : 0;
    if (k_spec > 0) {
        s->spec = hs_malloc((size_t)k_spec * sizeof(int32_t));
        for (int i = 0; i < k_spec; i++) s->spec[i] = s->spec_placeholder;
    }
    s->sp = *sp;
    s->max_tokens = sp->max_tokens;
    s->stop_any = (sp->n_eos > 0 && !sp->ignore_eos) || sp->n_stop > 0;
    if (sp->n_stop > 0) {
        size_t total = 0;
        for (int i = 0; i < sp->n_stop; i++) {
            total += (size_t)sp->stop_lens[i];
            if (sp->stop_lens[i] > s->stop_max_len) s->stop_max_len = sp->stop_lens[i];
        }
        s->stop_tokens_own = hs_malloc(total * sizeof(int32_t));
        s->stop_lens_own = hs_malloc((size_t)sp->n_stop * sizeof(int32_t));
        memcpy(s->stop_tokens_own, sp->stop_tokens, total * sizeof(int32_t));
        memcpy(s->stop_lens_own, sp->stop_lens, (size_t)sp->n_stop * sizeof(int32_t));
    }
    s->sp.stop_tokens = s->stop_tokens_own;
    s->sp.stop_lens = s->stop_lens_own;
    s->sched_row = -1;
    s->infl = -1;
    *out = s;
    return HS_OK;
}

void seq_destroy(seq_t *s) {
    if (!s) return;
    hs_free(s->tokens);
    hs_free(s->spec);
    hs_free(s->stop_tokens_own);
    hs_free(s->stop_lens_own);
    hs_free(s);
}

void seq_append(seq_t *s, int32_t tok) {
    if (s->n_tokens == s->cap) {
        s->cap *= 2;
        s->tokens = hs_realloc(s->tokens, (size_t)s->cap * sizeof(int32_t));
    }
    s->tokens[s->n_tokens++] = tok;
    s->last = tok;
}

seq_finish_t seq_check_stop(const seq_t *s, int max_len) {
    int n_out = seq_n_output(s);
    if (n_out > 0 && s->stop_any) {
        int32_t last = s->last;
        if (!s->sp.ignore_eos)
            for (int i = 0; i < s->sp.n_eos; i++)
                if (last == s->sp.eos_ids[i]) return SEQ_FINISH_STOP;
        const int32_t *st = s->sp.stop_tokens;
        for (int i = 0; i < s->sp.n_stop; i++) {
            int len = s->sp.stop_lens[i];
            if (len <= n_out && st[len - 1] == last &&
                memcmp(st, s->tokens + s->n_tokens - len, (size_t)len * sizeof(int32_t)) == 0)
                return SEQ_FINISH_STOP;
            st += len;
        }
    }
    if (n_out >= s->max_tokens) return SEQ_FINISH_LENGTH;
    if (max_len > 0 && s->n_tokens >= max_len) return SEQ_FINISH_LENGTH;
    return SEQ_FINISH_NONE;
}

void seq_strip_spec(seq_t *s) {
    s->n_spec = 0;
    for (int i = 0; i < s->k_spec; i++) s->spec[i] = s->spec_placeholder;
}

const char *seq_status_name(seq_status_t st) {
    switch (st) {
    case SEQ_WAITING: return "waiting";
    case SEQ_RUNNING: return "running";
    case SEQ_SWAPPED: return "swapped";
    case SEQ_FINISHED: return "finished";
    }
    return "?";
}

const char *seq_finish_name(seq_finish_t f) {
    switch (f) {
    case SEQ_FINISH_NONE: return "";
    case SEQ_FINISH_LENGTH: return "length";
    case SEQ_FINISH_STOP: return "stop";
    case SEQ_FINISH_CANCELLED: return "cancelled";
    case SEQ_FINISH_ERROR: return "error";
    }
    return "?";
}
