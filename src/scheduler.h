/*
 * sched: continuous batching over the page pool. One call to sched_step makes one
 * batch; the engine runs the model on it, samples, and hands the accepted tokens to
 * sched_update, which appends them, checks stop conditions, frees finished requests
 * and reports events. Integer ids only: no device memory, no threads.
 *
 * Step policy (docs/ARCHITECTURE.md, "Scheduler"):
 *   1. decode: every running, decode-ready sequence, oldest first, gets 1 + k tokens
 *      (its last sampled token and k draft placeholders); the pool must give it the KV
 *      slots (pool_append with k look-ahead). When it cannot, the newest running
 *      sequence not yet scheduled in this step is preempted (swap or recompute) until
 *      it can; when the newest is the sequence itself, it is preempted.
 *   2. swap-in of swapped sequences, oldest first (they come before new work); a
 *      decode-ready one gets its decode row at once.
 *   3. prefill of running sequences that are part-way through their prompt, oldest
 *      first, in chunks that fit the remaining token budget.
 *   4. admission of waiting sequences, FIFO: the head is admitted through the pool
 *      (check, then commit; the whole prompt's KV blocks and the state pages are taken
 *      at admission) and prefilled in a chunk that fits the budget. Head-of-line: when
 *      the head cannot be admitted, nothing behind it is. No sequence is ever skipped,
 *      so none starves: age decides everything.
 *   Limits: at most max_num_seqs rows per step and running at once (a batch-size
 *   limit: it reserves no memory, except in the slots layout where the pool reserves
 *   its slots); at most max_num_batched_tokens tokens per step (decode included).
 *   sched_create requires max_num_batched_tokens >= max_num_seqs * (1 + k), so every
 *   running decode fits every step.
 *
 * Preemption: newest first (largest submission order), so the oldest running request
 * always makes progress. Swap: the pool copies its KV and state pages to host slots
 * (through the copy callback) and it resumes where it was; when the host pool is full
 * it falls back to recompute. Recompute: every page is freed and the request goes
 * back to the waiting queue in age order (the front, normally), to be prefilled again
 * over prompt + output so far. Both strip the speculative placeholders first.
 *
 * Prefix caching: admission skips the prompt tokens the pool reports as usable hits.
 * For a hybrid model (state pages > 0) a hit is usable only where the recurrent state
 * after the hit is available; with no state checkpoints the pool refuses KV-only hits
 * (pool_config_t.kv_only_hits = false) and the scheduler asserts it got none;
 * sched_create refuses a stateful pool with kv_only_hits on unless the config
 * explicitly allows it (allow_kv_only_hits, for experiments).
 *
 * Determinism: the schedule is a function of the calls made (submissions, tokens
 * given to sched_update, cancels): no clocks, no addresses, no randomness.
 *
 * Memory: every per-step array is allocated at sched_create (sized by max_num_seqs
 * and max_num_batched_tokens); the step loop allocates nothing except amortised
 * growth of a sequence's token array. Work per step is O(running + tokens scheduled).
 * The pool's block-table and state-table pointers are cached per running request and
 * re-read only after pool_admit, pool_swap_in and a pool_append that took pages: this
 * relies on the pool moving a table only in those calls (sched_check verifies it).
 */
#ifndef HS_SCHED_H
#define HS_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "pool.h"
#include "seq.h"
#include "util.h"

typedef enum { SCHED_PREEMPT_RECOMPUTE = 0, SCHED_PREEMPT_SWAP = 1 } sched_preempt_t;

/* SCHED_POLICY_DEFAULT: the policy above. SCHED_POLICY_SEED: ATOM's at #602/#659
 * (seed-system.md §3.1), for A/B comparisons in `hyserve simulate`: swap-in and
 * admission first, whole prompts that fit the remaining budget (FIFO, head-of-line);
 * when anything was admitted the step is prefill-only; otherwise decode (with the same
 * newest-first preemption). No chunking unless a prompt exceeds the whole budget. */
typedef enum { SCHED_POLICY_DEFAULT = 0, SCHED_POLICY_SEED = 1 } sched_policy_t;

typedef struct {
    int max_num_seqs;            /* rows per step and running sequences at most (default 256) */
    int max_num_batched_tokens;  /* tokens per step, decode included (default 8192) */
    int max_model_len;           /* prompt + output tokens of one request (default 0: the
                                    pool's max_seq_tokens minus k) */
    int k_spec;                  /* draft tokens per decode step (default 0) */
    sched_preempt_t preempt;     /* default SCHED_PREEMPT_RECOMPUTE */
    sched_policy_t policy;       /* default SCHED_POLICY_DEFAULT */
    double watermark;            /* fraction of pool pages kept free when admitting
                                    while others run (default 0.01) */
    bool allow_kv_only_hits;     /* experiments only: accept a stateful pool configured with
                                    kv_only_hits (ATOM's bug: the recurrent state restarts at
                                    the hit, output is wrong). Default false: refused. */
    pool_copy_fn copy;           /* swap byte copies (may be NULL: bookkeeping only) */
    void *copy_user;
} sched_config_t;

void sched_config_default(sched_config_t *cfg);

/* One step's batch. Rows: decode rows first [0, n_decode), then prefill rows. Valid
 * until the next sched_step / sched_update / sched_cancel / sched_destroy. */
typedef struct {
    int n_seqs;                  /* S */
    int n_tokens;                /* T */
    int n_decode;                /* decode rows (each 1 + k tokens) */
    int n_decode_tokens, n_prefill_tokens;
    seq_t **seqs;                /* [S]; an entry is NULL when that request was cancelled
                                    after the step (sched_update skips it) */
    int64_t *ids;                /* [S] request ids */
    int32_t *tok_start;          /* [S+1] tokens of row s: [tok_start[s], tok_start[s+1]) */
    int32_t *token_ids;          /* [T] token ids to run */
    int32_t *positions;          /* [T] absolute positions (n_past + i) */
    int32_t *n_past;             /* [S] tokens already in the cache before this step */
    const int32_t **block_tables;/* [S] pool-owned rows, n_blocks[s] ids each */
    int32_t *n_blocks;           /* [S] */
    const int32_t **state_pages; /* [S] pool-owned rows of E ids (NULL when E == 0) */
    int n_state_pages;           /* E */
    int32_t *logit_rows;         /* [n_logits] token rows whose logits are wanted */
    int32_t *logit_start;        /* [S+1] logit rows of row s: logit_rows[logit_start[s] ..
                                    logit_start[s+1]); 0 for a non-final prefill chunk,
                                    1 for a final chunk, 1 + k for a decode row */
    int n_logits;
    /* what this step did to memory (before the forward) */
    int n_preempt_recompute, n_preempt_swap;
    int64_t n_pages_swapped_out, n_pages_swapped_in;
    int n_admitted;
} sched_batch_t;

typedef enum {
    SCHED_EV_TOKEN = 0,          /* a committed output token (first: index == 0) */
    SCHED_EV_FINISH = 1,         /* the request finished (reason in finish); no more events */
} sched_ev_kind_t;

typedef struct {
    int64_t id;                  /* request id */
    int32_t token;               /* SCHED_EV_TOKEN: the token id */
    int32_t index;               /* SCHED_EV_TOKEN: output index (0 = first token) */
    uint8_t kind;                /* sched_ev_kind_t */
    uint8_t finish;              /* SCHED_EV_FINISH: seq_finish_t */
    int32_t n_output;            /* SCHED_EV_FINISH: output tokens produced */
} sched_event_t;

typedef struct {
    int n_waiting, n_running, n_swapped;
    uint64_t n_steps;
    uint64_t n_preempt_recompute, n_preempt_swap;
    uint64_t n_swap_in;
    uint64_t n_finished;
    uint64_t tokens_prefill, tokens_decode;   /* scheduled */
    uint64_t tokens_recomputed;               /* prefill tokens run again after recompute preemption */
} sched_stats_t;

typedef struct sched sched_t;

/* Create a scheduler over `pool` (borrowed: it must outlive the scheduler and serve
 * only it). HS_ERR_INVALID for a bad config. */
int sched_create(sched_t **out, const sched_config_t *cfg, pool_t *pool, char *err, size_t n);
/* Frees every live request's pages and the scheduler. NULL is fine. */
void sched_destroy(sched_t *s);

/* Queue a request (WAITING, at the back). Copies prompt and sp. HS_ERR_INVALID (bad
 * params, prompt + 1 > max_model_len), HS_ERR_STATE (id live), HS_ERR_NO_MEMORY (the
 * prompt could never fit the pool). */
int sched_submit(sched_t *s, int64_t id, const int32_t *prompt, int n_prompt, const sampling_params_t *sp,
                 char *err, size_t n);

/* Build the next batch (may be empty: n_seqs == 0 when nothing can run). HS_OK;
 * HS_ERR_STATE when the previous non-empty batch has not been through sched_update,
 * or (a bug) when the pool and the scheduler disagree. Requests that can never be
 * served end here with a SCHED_EV_FINISH (error, or length when a running one
 * outgrows the whole pool); sched_update returns those events (call it also after an
 * empty batch: it then only returns them). */
int sched_step(sched_t *s, const sched_batch_t **out);

/* After the forward of the last batch: for row r, n_new[r] tokens at
 * new_tokens[r * (1 + k) ..]. n_new[r] must be 0 for a row without logits, 1 for a
 * final prefill chunk, 1 .. 1 + k for a decode row (the first n_new - 1 must equal
 * the row's drafts: they are the accepted ones; the last is the bonus/corrected
 * token). Appends, checks stop conditions (tokens after a stop are dropped), publishes
 * full blocks to the prefix cache, frees finished requests. *events (may be NULL)
 * gets this step's events (those of sched_step first), valid until the next
 * sched_step or sched_destroy.
 * HS_ERR_INVALID (nothing applied) for inconsistent input, HS_ERR_STATE when called
 * twice for one step. */
int sched_update(sched_t *s, const int32_t *new_tokens, const int32_t *n_new, const sched_event_t **events,
                 int *n_events);

/* Overlapped steps: sched_update in two halves, so that the next batch can be built and
 * run before this one's tokens are known (the engine's async mode; k_spec must be 0).
 *
 *   sched_step(n+1) -> forward(n+1) -> sched_resolve(tokens of n) -> sched_advance()
 *
 * sched_advance, right after the forward of the last batch is issued: everything
 * sched_update does that needs no token value. Rows count as computed (prefix blocks
 * are published), and each row with a logit gets its sampled token appended as
 * SEQ_TOKEN_PENDING. A request whose pending token is its last by length is marked
 * ending, so it is not scheduled again. The rows with logits become the in-flight
 * rows, in logit-row order. The next sched_step may then schedule those requests:
 * their decode row runs the pending token (token_ids holds SEQ_TOKEN_PENDING, the
 * caller supplies the value where it was sampled). HS_ERR_STATE when there is no
 * batch to advance, when rows are already in flight, or when k_spec > 0.
 *
 * sched_resolve: tokens[i] is the token sampled for in-flight row i (logit row i of
 * the advanced batch). Writes the values in, reports them as SCHED_EV_TOKEN, checks
 * the stop conditions and frees finished requests. A finished request in the batch
 * scheduled meanwhile has its row set to NULL: the row ran, its output is discarded
 * (its pages may be reused only by a later forward). With nothing in flight it only
 * returns the events of sched_step. *events as in sched_update.
 *
 * Waiting requests with a pending token are not admitted until it is resolved, and
 * sched_step never finishes one (its token event would be lost). */
int sched_advance(sched_t *s);
int sched_resolve(sched_t *s, const int32_t *tokens, const sched_event_t **events, int *n_events);

/* Drafts for the next decode of request id (n <= k; the rest stay placeholders).
 * Call between sched_update and the next sched_step. */
int sched_set_drafts(sched_t *s, int64_t id, const int32_t *draft, int n);

/* Cancel a request in any state; its pages go back at once. If it is in the batch
 * now in flight its row's seq becomes NULL. HS_ERR_NOT_FOUND for an unknown or
 * finished id. No event is emitted (the caller knows). */
int sched_cancel(sched_t *s, int64_t id);

/* The live request, or NULL. Valid until it finishes or is cancelled. */
const seq_t *sched_find(const sched_t *s, int64_t id);

void sched_stats(const sched_t *s, sched_stats_t *out);
pool_t *sched_pool(sched_t *s);
/* true when no request is waiting, running or swapped */
bool sched_idle(const sched_t *s);

/* Verify the scheduler's own invariants against the pool (queues, counts, every
 * running/swapped sequence known to the pool with matching token counts) and then
 * pool_check. For tests. */
int sched_check(const sched_t *s, char *err, size_t n);

/* Largest n_blocks of the batch (the row stride bk_batch_t needs). */
int sched_batch_max_blocks(const sched_batch_t *b);
/* Fill a bk_batch_t from a batch: block_tables_out [S][max_blocks] (-1 padded) and
 * state_out [S][E] are caller buffers; max_blocks >= sched_batch_max_blocks(b). The
 * bk_batch_t points into b and the caller's buffers. Rows of cancelled requests keep
 * their tokens (their pages may already be reused: run the forward first, cancel
 * after, or drop such rows). */
void sched_batch_to_bk(const sched_batch_t *b, int32_t *block_tables_out, int max_blocks, int32_t *state_out,
                       bk_batch_t *out);

#endif
