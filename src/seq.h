/*
 * seq: one request (sequence) as the scheduler sees it — its tokens, how far the
 * model has computed them, its status, sampling parameters and stop conditions.
 *
 * Token bookkeeping (all counts in tokens, positions are 0-based):
 *
 *   tokens[0 .. n_prompt)            the prompt
 *   tokens[n_prompt .. n_tokens)     committed output (sampled and accepted)
 *   [0 .. n_computed)                tokens whose KV rows and recurrent state are in
 *                                    the pool (written by a finished forward)
 *   [0 .. n_cached)                  of those, served by the prefix cache at admission
 *   n_committed                      the pool's committed count for this sequence
 *                                    (KV slots the pool has handed out, look-ahead
 *                                    excluded); == n_computed between steps, except
 *                                    right after admission (== n_tokens, the prefill
 *                                    still has [n_computed, n_tokens) to compute)
 *   spec[0 .. n_spec)                placeholders for the k speculative (draft) tokens
 *                                    the next decode step will verify; their KV slots
 *                                    are reserved as look-ahead, never committed.
 *                                    Stripped (n_spec = 0) on preemption.
 *
 * A running sequence is "decode-ready" when n_computed == n_committed == n_tokens - 1:
 * one token (the last sampled one) plus its drafts to run, and it is not ending.
 * Otherwise it is prefilling [n_computed, n_committed).
 *
 * Overlapped steps (sched_advance / sched_resolve): a step's sampled token may be
 * appended before its value is known, as SEQ_TOKEN_PENDING (seq_pending); the next
 * step can already run it (the engine feeds the value from where it was sampled), and
 * sched_resolve writes the value in. "ending": that pending token is the last the
 * request can have (max_tokens or the model length), so it is not scheduled again.
 *
 * Ownership: a seq_t owns its token array, its draft array and deep copies of the
 * stop sequences; the sampling_params_t handed to seq_create is only read. The KV
 * block table and state page table belong to the pool (pool_block_table /
 * pool_state_table, looked up by id). The queue links belong to the scheduler.
 */
#ifndef HS_SEQ_H
#define HS_SEQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define SEQ_MAX_EOS 8
/* The value of a token appended before it is known (sched_advance). */
#define SEQ_TOKEN_PENDING (-1)

typedef enum {
    SEQ_WAITING = 0, /* queued, holds no page (new, or preempted by recompute) */
    SEQ_RUNNING,     /* holds KV blocks and state pages in the pool */
    SEQ_SWAPPED,     /* preempted by swap: its pages live in host slots */
    SEQ_FINISHED,    /* done; pages returned */
} seq_status_t;

typedef enum {
    SEQ_FINISH_NONE = 0,
    SEQ_FINISH_LENGTH,    /* max_tokens (or the model length) reached */
    SEQ_FINISH_STOP,      /* an eos id or a stop token sequence was produced */
    SEQ_FINISH_CANCELLED, /* cancelled by the caller */
    SEQ_FINISH_ERROR,     /* can never be served (e.g. prompt larger than the pool) */
} seq_finish_t;

/* Per-request sampling settings (read by the sampler; the scheduler reads only the
 * stop fields). Defaults: sampling_params_default. */
typedef struct {
    float temperature;          /* >= 0; 0 = greedy */
    float top_p;                /* (0, 1]; 1 = off */
    int top_k;                  /* >= 0; 0 = off */
    float min_p;                /* [0, 1]; 0 = off */
    uint64_t seed;              /* per-request RNG seed */
    int max_tokens;             /* >= 1: output tokens at most */
    int32_t eos_ids[SEQ_MAX_EOS]; /* token ids that end the request (unless ignore_eos) */
    int n_eos;
    bool ignore_eos;            /* keep going past eos ids (benchmarks) */
    const int32_t *stop_tokens; /* stop token sequences, concatenated; borrowed */
    const int32_t *stop_lens;   /* [n_stop] length of each (>= 1) */
    int n_stop;
    int logprobs;               /* 1: return the chosen token's logprob */
    int top_logprobs;           /* >= 0: alternatives per position */
} sampling_params_t;

typedef struct seq seq_t;
/* Field order: what every decode step touches comes first (two cache lines). */
struct seq {
    seq_t *prev, *next;         /* scheduler queue links */
    int64_t id;                 /* caller's id, >= 0, unique among live requests */
    int32_t *tokens;            /* [cap] prompt then committed output */
    /* Pool-owned tables cached by the scheduler while RUNNING (refreshed whenever the
     * pool may have moved them: admission, swap-in, an append that took pages). */
    const int32_t *bt;          /* [n_blocks] KV block table */
    const int32_t *st;          /* [E] state page table, NULL when E == 0 */
    int n_tokens;
    int32_t last;               /* tokens[n_tokens - 1], kept in the hot line */
    int n_computed;
    int n_committed;
    int n_blocks;
    int cap;
    int n_prompt;
    int max_tokens;             /* = sp.max_tokens */
    bool stop_any;              /* eos ids active (not ignored) or stop sequences given */
    int sched_row;              /* row in the current batch, -1 when not scheduled */
    int n_sched;                /* tokens scheduled in the current batch */
    int n_spec;                 /* placeholders reserved for the coming step: 0 or k_spec */
    int k_spec;                 /* k: draft tokens per decode step (0: no speculation) */
    int32_t *spec;              /* [k_spec] draft token ids (placeholder value until set) */
    int32_t spec_placeholder;   /* value of an unfilled draft (first eos id, else 0) */
    int n_cached;
    bool ending;                /* the pending token ends the request by length */
    int infl;                   /* its entry in the scheduler's in-flight rows, -1 when none: while
                                   >= 0 the last token is SEQ_TOKEN_PENDING (sched_advance) */
    uint64_t order;             /* submission order: the FIFO / age key (smaller = older) */
    seq_status_t status;
    seq_finish_t finish;
    int n_preempt;              /* times preempted */

    sampling_params_t sp;       /* stop_tokens / stop_lens point at the owned copies below */
    int32_t *stop_tokens_own;
    int32_t *stop_lens_own;
    int stop_max_len;           /* longest stop sequence */
};

/* Defaults: greedy, top_p 1, top_k 0, min_p 0, seed 0, max_tokens 16, no eos, no stop. */
void sampling_params_default(sampling_params_t *sp);

/* Validate sampling parameters; HS_ERR_INVALID with the field named in err. */
int sampling_params_check(const sampling_params_t *sp, char *err, size_t n);

/* New WAITING sequence with a copy of prompt[0, n_prompt) (n_prompt >= 1) and of sp.
 * k_spec >= 0 draft tokens per decode. HS_ERR_INVALID for bad arguments. */
int seq_create(seq_t **out, int64_t id, const int32_t *prompt, int n_prompt, const sampling_params_t *sp,
               int k_spec, char *err, size_t n);
void seq_destroy(seq_t *s);

static inline int seq_n_output(const seq_t *s) { return s->n_tokens - s->n_prompt; }
/* The last token is appended but its value not yet known (sched_advance / sched_resolve). */
static inline bool seq_pending(const seq_t *s) { return s->infl >= 0; }
static inline bool seq_decode_ready(const seq_t *s) {
    return s->n_computed == s->n_committed && s->n_computed == s->n_tokens - 1 && !s->ending;
}

/* Append one committed token (amortised growth). */
void seq_append(seq_t *s, int32_t tok);

/* Stop check after the last appended token: SEQ_FINISH_STOP (eos unless ignore_eos,
 * or the output ends with a stop sequence), SEQ_FINISH_LENGTH (max_tokens output
 * tokens, or n_tokens >= max_len when max_len > 0), else SEQ_FINISH_NONE. Stop
 * sequences match output tokens only. */
seq_finish_t seq_check_stop(const seq_t *s, int max_len);

/* Drop the speculative placeholders (n_spec = 0, drafts reset). */
void seq_strip_spec(seq_t *s);

const char *seq_status_name(seq_status_t st);
const char *seq_finish_name(seq_finish_t f); /* "length", "stop", "cancelled", "error", "" */

#endif
