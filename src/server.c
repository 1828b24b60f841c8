/*
 * server: OpenAI-compatible HTTP/1.1 on libmicrohttpd, one engine thread behind it.
 *
 * Endpoints
 *   POST /v1/completions         {"prompt": ...}    → text_completion
 *   POST /v1/chat/completions    {"messages": ...}  → chat.completion / chat.completion.chunk
 *   GET  /v1/models              {"object": "list", "data": [{"id": <served name>, ...}]}
 *   GET  /health                 200 {"status": "ok"}; 503 while draining.
 *        /health?check=1         also runs hs_engine_check on the engine thread:
 *                                {"status", "pool_check": "ok" | message, "pages_total",
 *                                 "pages_free", "pages_cached", "pages_in_use", "running",
 *                                 "waiting", "requests_in_flight"}; 500 when the check fails.
 *                                pages_in_use = total - free - cached (0 when idle).
 *   GET  /metrics                Prometheus text format 0.0.4 (names: hyserve_*)
 *   With --api-key, /v1/... needs "Authorization: Bearer <key>" (compared in constant
 *   time); /health and /metrics stay open.
 *
 * SSE framing (stream: true), on a chunked HTTP/1.1 response, Content-Type text/event-stream:
 *   data: {"object":"chat.completion.chunk",...,"choices":[{"index":0,"delta":{"role":"assistant","content":""},...}]}\n\n
 *   data: {...,"choices":[{"index":0,"delta":{"content":"text"},"logprobs":null,"finish_reason":null}]}\n\n
 *   data: {...,"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n
 *   data: {...,"choices":[],"usage":{...}}\n\n        (only with stream_options.include_usage)
 *   data: [DONE]\n\n
 * Completions chunks carry choices[0].text instead of delta (no role chunk). An engine
 * error mid-stream sends data: {"error": {...}}\n\n and then data: [DONE]\n\n.
 * A text chunk is sent per sampled token whose text is ready (held-back bytes of an
 * unfinished UTF-8 character or of a possible stop string come later); with logprobs
 * every token gets a chunk, possibly with empty text.
 *
 * Threads and queues
 *   - The engine thread creates the engine, then loops: take the submission queue
 *     (srv.q_head, under srv.qmu), submit, cancel what is flagged, run a step, poll
 *     the events and append each to its request's event queue (srv_req.evs, under
 *     srv_req.mu, signalled on srv_req.cv). It sleeps on srv.qcv when idle.
 *   - libmicrohttpd runs one thread per connection (MHD_USE_THREAD_PER_CONNECTION).
 *     That thread parses the JSON and tokenizes, queues the request, waits for the
 *     engine to accept or reject it, then either blocks until the end (non-streaming)
 *     or returns a callback response whose reader (sse_read) blocks on the request's
 *     event queue and turns events into SSE frames. Blocking is fine: the thread
 *     serves only this connection.
 *   - A request is reference counted (HTTP side + engine side) and freed by the last.
 *
 * Cancellation: while a request runs, its HTTP thread polls the socket for
 * POLLRDHUP/POLLHUP/POLLERR at least every WAIT_MS (waits are timed), and MHD frees a
 * streaming response whose client went away (sse_free). Either sets the request's
 * cancel flag and wakes the engine thread, which calls hs_engine_cancel between steps
 * (the engine frees the pages). A stop-string hit cancels the same way after the final
 * chunk is queued.
 *
 * Shutdown (srv_shutdown): quiesce the listening socket, 503 for new requests, wait for
 * in-flight ones up to the drain time, then cancel all (finish_reason "abort"); then
 * srv_destroy stops MHD (blocked readers see hard_stop within WAIT_MS) and the engine
 * thread, which destroys the engine.
 *
 * Errors: every failure before the engine accepts a request is a 4xx/5xx with an
 * OpenAI error object (oai.h); nothing on the request path exits or asserts on input.
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "chat.h"
#include "oai.h"
#include "tok.h"
#include "util.h"

#define WAIT_MS 100          /* HTTP-side wait slice: disconnect and shutdown checks */
#define STOP_GRACE_S 2.0     /* after an abort: time for responses to finish */
#define DISCARD_MAX (64u << 20) /* oversized bodies up to this are read and dropped before the 413 */

/* ---- histograms (Prometheus cumulative buckets) ---------------------------------- */
#define HIST_MAX 24
typedef struct {
    const char *name, *help;
    int n;
    double le[HIST_MAX];
    uint64_t count[HIST_MAX]; /* per bucket, not cumulative */
    uint64_t total;
    double sum;
} hist_t;

static void hist_init(hist_t *h, const char *name, const char *help, const double *le, int n) {
    memset(h, 0, sizeof *h);
    h->name = name;
    h->help = help;
    h->n = n;
    memcpy(h->le, le, (size_t)n * sizeof *le);
}

static void hist_add(hist_t *h, double v) {
    for (int i = 0; i < h->n; i++)
        if (v <= h->le[i]) {
            h->count[i]++;
            break;
        }
    h->total++;
    h->sum += v;
}

static void hist_print(hs_buf_t *b, const hist_t *h) {
    hs_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", h->name, h->help, h->name);
    uint64_t cum = 0;
    for (int i = 0; i < h->n; i++) {
        cum += h->count[i];
        hs_buf_printf(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", h->name, h->le[i], cum);
    }
    hs_buf_printf(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n%s_sum %.6f\n%s_count %" PRIu64 "\n", h->name, h->total, h->name,
              h->sum, h->name, h->total);
}

/* ---- requests ---------------------------------------------------------------------- */
typedef enum { RQ_PENDING = 0, RQ_RUNNING, RQ_REJECTED, RQ_DONE } rq_state_t;

typedef struct srv_req {
    struct srv *srv;
    atomic_int refs;            /* HTTP side + engine side */
    atomic_bool cancel;         /* set by the HTTP side; the engine thread acts on it */
    atomic_bool stop_hit;       /* the cancel is a stop string's (metrics count it as "stop") */
    struct srv_req *next;       /* submission queue link (srv.qmu) */

    /* fixed once queued */
    oai_req_t q;
    int32_t *ids;               /* [n_ids] prompt tokens */
    int n_ids;
    hs_sampling_t sp;
    double t_arrival;           /* hs_now() when the body was complete */
    int fd;                     /* the connection's socket, for disconnect checks */
    char id[48];
    long created;

    /* engine thread only */
    uint64_t eid;
    bool cancel_sent;
    double t_first;

    /* shared: mu/cv */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rq_state_t state;
    int reject_status;
    char reject_msg[400];
    hs_event_t *evs;            /* [n_evs] events not yet consumed */
    int n_evs, cap_evs;

    /* HTTP side only */
    hs_event_t *work;           /* consumed batch (swapped with evs) */
    int cap_work;
    tok_stream_t *ts;
    oai_stop_t stop;
    oai_logprobs_t lp;          /* non-streaming logprobs */
    hs_buf_t text;                  /* non-streaming: the output text */
    hs_buf_t out;                   /* streaming: SSE bytes not yet handed to MHD */
    size_t out_off;
    bool done;                  /* the response is complete (final frames queued) */
    bool error;                 /* the engine reported an error */
    const char *finish;
    int n_output, n_prompt, n_cached;
    long cp_total;              /* code points of detokenized text so far (text_offset) */
    double t_peer_check;        /* last peer_gone() poll */
} srv_req_t;

typedef struct check {
    struct check *next;
    bool done;
    int rc;
    char msg[256];
    hs_stats_t st;
} check_t;

#define RATE_SAMPLES 32
struct srv {
    srv_config_t cfg;
    char *model_name;
    tok_t *tok;
    chat_t *chat;
    hs_model_info_t info;
    int32_t stop_ids[HS_MAX_STOP_SEQS];
    int n_stop_ids;
    struct MHD_Daemon *mhd;
    int port;
    long t_created;

    pthread_t eng;
    bool eng_running;
    pthread_mutex_t qmu;
    pthread_cond_t qcv;         /* engine thread wake-up */
    pthread_cond_t ccv;         /* engine ready / check done */
    srv_req_t *q_head, *q_tail;
    bool q_cancel;              /* some request's cancel flag was set */
    check_t *checks;
    bool abort_all, stop_engine;
    bool ready;
    int ready_rc;
    char ready_err[512];

    atomic_int n_live;          /* srv_req_t objects alive */
    atomic_bool draining, hard_stop;
    atomic_uint_fast64_t next_id;
    bool shut;

    /* metrics (smu) */
    pthread_mutex_t smu;
    hs_stats_t st;
    hist_t ttft, tpot, e2e;
    uint64_t n_finish[5];       /* by hs_finish_t */
    uint64_t http_2xx, http_4xx, http_5xx;
    double rate_t[RATE_SAMPLES];
    int64_t rate_gen[RATE_SAMPLES];
    int rate_head, rate_n;
};

static void req_release(srv_req_t *r) {
    if (atomic_fetch_sub(&r->refs, 1) != 1) return;
    srv_t *s = r->srv;
    oai_req_free(&r->q);
    free(r->ids);
    free(r->evs);
    free(r->work);
    if (r->ts) tok_stream_free(r->ts);
    oai_stop_free(&r->stop);
    oai_logprobs_free(&r->lp);
    free(r->text.p);
    free(r->out.p);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
    atomic_fetch_sub(&s->n_live, 1);
}

/* HTTP side: ask the engine thread to cancel r (idempotent). */
static void req_cancel(srv_req_t *r) {
    if (atomic_exchange(&r->cancel, true)) return;
    srv_t *s = r->srv;
    pthread_mutex_lock(&s->qmu);
    s->q_cancel = true;
    pthread_cond_signal(&s->qcv);
    pthread_mutex_unlock(&s->qmu);
}

/* Engine thread: append ev to r's queue and wake its HTTP thread. */
static void req_push(srv_req_t *r, const hs_event_t *ev, rq_state_t state) {
    pthread_mutex_lock(&r->mu);
    if (ev) {
        if (r->n_evs == r->cap_evs) {
            r->cap_evs = r->cap_evs ? 2 * r->cap_evs : 16;
            r->evs = hs_realloc(r->evs, (size_t)r->cap_evs * sizeof *r->evs);
        }
        r->evs[r->n_evs++] = *ev;
    }
    if (state != RQ_PENDING) r->state = state;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void req_reject(srv_req_t *r, int status, const char *msg) {
    pthread_mutex_lock(&r->mu);
    r->reject_status = status;
    snprintf(r->reject_msg, sizeof r->reject_msg, "%s", msg);
    r->state = RQ_REJECTED;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* A finish-only event for a request the engine never saw (or lost). */
static void req_finish_local(srv_req_t *r, hs_finish_t f) {
    hs_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.id = r->eid;
    ev.token = -1;
    ev.finish = f;
    ev.n_prompt = r->n_ids;
    req_push(r, &ev, RQ_DONE);
}

/* ---- the engine thread ------------------------------------------------------------- */

static void record_finish(srv_t *s, srv_req_t *r, const hs_event_t *ev, double now) {
    pthread_mutex_lock(&s->smu);
    hs_finish_t f = ev->finish == HS_FINISH_CANCELLED && atomic_load(&r->stop_hit) ? HS_FINISH_STOP : ev->finish;
    if (f >= 0 && f < 5) s->n_finish[f]++;
    if (r->t_first > 0 && ev->n_output > 1) hist_add(&s->tpot, (now - r->t_first) / (ev->n_output - 1));
    hist_add(&s->e2e, now - r->t_arrival);
    pthread_mutex_unlock(&s->smu);
}

static void snapshot_stats(srv_t *s, hs_engine_t *e) {
    hs_stats_t st;
    hs_engine_stats(e, &st);
    double now = hs_now();
    pthread_mutex_lock(&s->smu);
    s->st = st;
    int last = (s->rate_head + RATE_SAMPLES - 1) % RATE_SAMPLES;
    if (s->rate_n == 0 || now - s->rate_t[last] >= 0.5) {
        s->rate_t[s->rate_head] = now;
        s->rate_gen[s->rate_head] = st.generated_tokens;
        s->rate_head = (s->rate_head + 1) % RATE_SAMPLES;
        if (s->rate_n < RATE_SAMPLES) s->rate_n++;
    }
    pthread_mutex_unlock(&s->smu);
}

static void *engine_main(void *arg) {
    srv_t *s = arg;
    hs_engine_t *e = NULL;
    char err[512] = "";
    int rc = hs_engine_create(&s->cfg.engine, &e, err, sizeof err);
    pthread_mutex_lock(&s->qmu);
    s->ready = true;
    s->ready_rc = rc;
    snprintf(s->ready_err, sizeof s->ready_err, "%s", err);
    if (rc == HS_OK) hs_engine_info(e, &s->info);
    pthread_cond_broadcast(&s->ccv);
    pthread_mutex_unlock(&s->qmu);
    if (rc != HS_OK) return NULL;
    snapshot_stats(s, e);

    srv_req_t **act = NULL; /* requests inside the engine */
    int n_act = 0, cap_act = 0;
    double t_stop = 0;
    for (;;) {
        pthread_mutex_lock(&s->qmu);
        while (!s->stop_engine && !s->q_head && !s->q_cancel && !s->checks && !(s->abort_all && n_act) &&
               !hs_engine_has_work(e))
            pthread_cond_wait(&s->qcv, &s->qmu);
        srv_req_t *list = s->q_head;
        s->q_head = s->q_tail = NULL;
        bool cancel = s->q_cancel, abort = s->abort_all, stop = s->stop_engine;
        s->q_cancel = false;
        check_t *checks = s->checks;
        s->checks = NULL;
        pthread_mutex_unlock(&s->qmu);

        while (list) {
            srv_req_t *r = list;
            list = r->next;
            if (abort || stop) {
                req_reject(r, 503, "the server is shutting down");
                req_release(r);
            } else if (atomic_load(&r->cancel)) {
                req_finish_local(r, HS_FINISH_CANCELLED);
                req_release(r);
            } else if ((rc = hs_engine_submit(e, r->ids, r->n_ids, &r->sp, &r->eid, err, sizeof err)) != HS_OK) {
                req_reject(r, rc == HS_ERR_INVALID ? 400 : rc > 0 ? 503 : 500, rc > 0 ? "the engine is full, retry" : err);
                req_release(r);
            } else {
                if (n_act == cap_act) {
                    cap_act = cap_act ? 2 * cap_act : 64;
                    act = hs_realloc(act, (size_t)cap_act * sizeof *act);
                }
                act[n_act++] = r;
                req_push(r, NULL, RQ_RUNNING);
            }
        }
        if (cancel || abort)
            for (int i = 0; i < n_act; i++)
                if ((abort || atomic_load(&act[i]->cancel)) && !act[i]->cancel_sent) {
                    act[i]->cancel_sent = true;
                    (void)hs_engine_cancel(e, act[i]->eid); /* a finish event follows (also when it just finished) */
                }
        while (checks) {
            check_t *c = checks;
            checks = c->next;
            c->rc = hs_engine_check(e, c->msg, sizeof c->msg);
            hs_engine_stats(e, &c->st);
            pthread_mutex_lock(&s->qmu);
            c->done = true;
            pthread_cond_broadcast(&s->ccv);
            pthread_mutex_unlock(&s->qmu);
        }
        if (stop) {
            if (t_stop == 0) t_stop = hs_now();
            if ((n_act == 0 && !hs_engine_has_work(e)) || hs_now() - t_stop > STOP_GRACE_S) break;
        }
        if (hs_engine_has_work(e)) {
            rc = hs_engine_step(e);
            if (rc < 0) hs_warn("engine step failed: %s", hs_strerror(rc));
        }
        hs_event_t ev;
        while (hs_engine_poll(e, &ev)) {
            int i = 0;
            while (i < n_act && act[i]->eid != ev.id) i++;
            if (i == n_act) continue; /* not ours (cannot happen) */
            srv_req_t *r = act[i];
            double now = hs_now();
            if (ev.token >= 0 && r->t_first == 0) {
                r->t_first = now;
                pthread_mutex_lock(&s->smu);
                hist_add(&s->ttft, now - r->t_arrival);
                pthread_mutex_unlock(&s->smu);
            }
            if (ev.finish != HS_FINISH_NONE) {
                record_finish(s, r, &ev, now);
                act[i] = act[--n_act];
                req_push(r, &ev, RQ_DONE);
                req_release(r);
            } else {
                req_push(r, &ev, RQ_PENDING);
            }
        }
        snapshot_stats(s, e);
    }
    for (int i = 0; i < n_act; i++) { /* the engine did not finish them in time */
        req_finish_local(act[i], HS_FINISH_CANCELLED);
        req_release(act[i]);
    }
    free(act);
    hs_engine_destroy(e);
    return NULL;
}

/* ---- HTTP helpers ----------------------------------------------------------------- */

typedef struct {
    hs_buf_t body;
    bool too_big;
    bool started;
} conn_t;

static void count_status(srv_t *s, int status) {
    pthread_mutex_lock(&s->smu);
    if (status < 300) s->http_2xx++;
    else if (status < 500) s->http_4xx++;
    else s->http_5xx++;
    pthread_mutex_unlock(&s->smu);
}

static enum MHD_Result send_text(srv_t *s, struct MHD_Connection *c, int status, const char *ctype, char *body,
                                 size_t len) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", ctype);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    count_status(s, status);
    return ret;
}

static enum MHD_Result send_json(srv_t *s, struct MHD_Connection *c, int status, json_t *j) {
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!body) body = hs_strdup("{}");
    return send_text(s, c, status, "application/json", body, strlen(body));
}

static enum MHD_Result send_err(srv_t *s, struct MHD_Connection *c, const oai_err_t *e) {
    char *body = oai_err_json(e);
    return send_text(s, c, e->status, "application/json", body, strlen(body));
}

static enum MHD_Result send_errf(srv_t *s, struct MHD_Connection *c, int status, const char *type, const char *param,
                                 const char *code, const char *msg) {
    oai_err_t e;
    oai_errf(&e, status, type, param, code, "%s", msg);
    return send_err(s, c, &e);
}

/* 1 if the peer closed or reset its end of fd. */
static int peer_gone(int fd) {
    if (fd < 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    return (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

/* HTTP side: wait until r has events or leaves RQ_PENDING/RQ_RUNNING (want_events) or
 * just leaves RQ_PENDING (!want_events). 0: ready; -1: client gone; -2: server stopping. */
static int req_wait(srv_req_t *r, bool want_events) {
    double now = hs_now(); /* events may keep coming: check the peer every WAIT_MS regardless */
    if (now - r->t_peer_check >= WAIT_MS * 1e-3) {
        r->t_peer_check = now;
        if (atomic_load(&r->srv->hard_stop)) return -2;
        if (peer_gone(r->fd)) return -1;
    }
    pthread_mutex_lock(&r->mu);
    for (;;) {
        bool ready = want_events ? (r->n_evs > 0 || r->state == RQ_REJECTED) : r->state != RQ_PENDING;
        if (ready) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += WAIT_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT) {
            pthread_mutex_unlock(&r->mu);
            r->t_peer_check = hs_now();
            if (atomic_load(&r->srv->hard_stop)) return -2;
            if (peer_gone(r->fd)) return -1;
            pthread_mutex_lock(&r->mu);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static long count_cp(const char *s, size_t n) {
    long k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

/* A token's raw bytes for logprobs ("token_id:N" for ids the tokenizer lacks). */
static oai_tokp_t tokp(const srv_req_t *r, int32_t id, float lp, char *tmp, size_t n_tmp) {
    oai_tokp_t t = {.logprob = lp};
    t.bytes = r->q.tokens_as_ids ? NULL : tok_id_bytes(r->srv->tok, id, &t.n_bytes);
    if (!t.bytes) {
        snprintf(tmp, n_tmp, "token_id:%d", (int)id);
        t.bytes = tmp;
        t.n_bytes = strlen(tmp);
    }
    return t;
}

static void sse_add(srv_req_t *r, json_t *j) {
    size_t len;
    char *f = oai_sse_frame(j, &len);
    hs_buf_add(&r->out, f, len);
    free(f);
    json_decref(j);
}

/* Output text (and a logprobs object for it, stolen) as a chunk or into the response. */
static void emit(srv_req_t *r, const char *text, size_t len, json_t *lp) {
    srv_t *s = r->srv;
    if (!r->q.stream) {
        hs_buf_add(&r->text, text, len);
        return;
    }
    if (len == 0 && !lp) return;
    sse_add(r, oai_chunk(r->q.kind, r->id, r->created, s->model_name, text, len, false, lp, NULL));
}

/* The end of the response: final chunk, usage, [DONE] (streaming) or just the state. */
static void finish(srv_req_t *r, const char *reason) {
    srv_t *s = r->srv;
    r->finish = reason;
    r->done = true;
    if (!r->q.stream) return;
    if (r->error) {
        oai_err_t e;
        oai_errf(&e, 500, "server_error", NULL, NULL, "the engine failed while generating");
        char *ej = oai_err_json(&e);
        hs_buf_add(&r->out, "data: ", 6);
        hs_buf_add(&r->out, ej, strlen(ej));
        hs_buf_add(&r->out, "\n\n", 2);
        free(ej);
    } else {
        sse_add(r, oai_chunk(r->q.kind, r->id, r->created, s->model_name, r->q.kind == OAI_CHAT ? NULL : "", 0, false,
                             NULL, reason));
        if (r->q.include_usage)
            sse_add(r, oai_usage_chunk(r->q.kind, r->id, r->created, s->model_name, r->n_prompt, r->n_output,
                                       r->n_cached));
    }
    hs_buf_add(&r->out, OAI_SSE_DONE, strlen(OAI_SSE_DONE));
}

static void on_event(srv_req_t *r, const hs_event_t *ev) {
    const char *piece, *out;
    size_t n_piece, n_out;
    if (r->done) return;
    if (ev->token >= 0) {
        r->n_output++;
        if (tok_stream_push(r->ts, ev->token, &piece, &n_piece, NULL, 0) != HS_OK) { /* an id outside the tokenizer */
            piece = "";
            n_piece = 0;
        }
        long offset = r->cp_total;
        r->cp_total += count_cp(piece, n_piece);
        oai_stop_feed(&r->stop, piece, n_piece, &out, &n_out);
        json_t *lpj = NULL;
        if (r->q.n_logprobs >= 0) {
            char tmp[HS_MAX_TOP_LOGPROBS + 1][32];
            oai_tokp_t tk = tokp(r, ev->token, ev->logprob, tmp[0], sizeof tmp[0]);
            oai_tokp_t top[HS_MAX_TOP_LOGPROBS];
            int n_top = ev->n_top < r->q.n_logprobs ? ev->n_top : r->q.n_logprobs;
            for (int i = 0; i < n_top; i++) top[i] = tokp(r, ev->top_ids[i], ev->top_logprobs[i], tmp[i + 1], sizeof tmp[0]);
            if (r->q.stream) {
                oai_logprobs_t one;
                oai_logprobs_init(&one, r->q.kind);
                oai_logprobs_add(&one, &tk, top, n_top, offset);
                lpj = oai_logprobs_take(&one);
            } else {
                oai_logprobs_add(&r->lp, &tk, top, n_top, offset);
            }
        }
        emit(r, out, n_out, lpj);
        if (r->stop.hit) {
            r->n_prompt = r->n_ids;
            finish(r, "stop");
            atomic_store(&r->stop_hit, true);
            req_cancel(r); /* the engine frees the request's pages */
            return;
        }
    }
    if (ev->finish == HS_FINISH_NONE) return;
    r->n_prompt = ev->n_prompt > 0 ? ev->n_prompt : r->n_ids;
    r->n_cached = ev->n_cached;
    if (ev->n_output > r->n_output) r->n_output = ev->n_output;
    tok_stream_flush(r->ts, &piece, &n_piece);
    oai_stop_feed(&r->stop, piece, n_piece, &out, &n_out);
    emit(r, out, n_out, NULL);
    if (r->stop.hit) {
        finish(r, "stop");
        return;
    }
    oai_stop_flush(&r->stop, &out, &n_out);
    emit(r, out, n_out, NULL);
    r->error = ev->finish == HS_FINISH_ERROR;
    finish(r, oai_finish_str(ev->finish));
}

/* Consume the events queued so far. */
static void req_consume(srv_req_t *r) {
    pthread_mutex_lock(&r->mu);
    hs_event_t *batch = r->evs;
    int n = r->n_evs, cap = r->cap_evs;
    r->evs = r->work;
    r->cap_evs = r->cap_work;
    r->n_evs = 0;
    r->work = batch;
    r->cap_work = cap;
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < n; i++) on_event(r, &batch[i]);
}

/* ---- streaming response callbacks --------------------------------------------------- */

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    srv_req_t *r = cls;
    for (;;) {
        if (r->out_off < r->out.n) {
            size_t k = r->out.n - r->out_off < max ? r->out.n - r->out_off : max;
            memcpy(buf, r->out.p + r->out_off, k);
            r->out_off += k;
            if (r->out_off == r->out.n) r->out_off = r->out.n = 0;
            return (ssize_t)k;
        }
        if (r->done) return MHD_CONTENT_READER_END_OF_STREAM;
        if (req_wait(r, true) < 0) {
            req_cancel(r);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        req_consume(r);
    }
}

static void sse_free(void *cls) {
    srv_req_t *r = cls;
    if (!r->done) req_cancel(r); /* the client went away mid-stream */
    req_release(r);
}

/* ---- the API handlers --------------------------------------------------------------- */

static bool authorized(srv_t *s, struct MHD_Connection *c) {
    const char *key = s->cfg.api_key;
    if (!key || !key[0]) return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    size_t lh = strlen(h), lk = strlen(key);
    unsigned diff = (unsigned)(lh ^ lk);
    for (size_t i = 0; i < lk; i++) diff |= (unsigned char)(i < lh ? h[i] : 0) ^ (unsigned char)key[i];
    return diff == 0;
}

/* Tokenize r->q into r->ids and fix the sampling parameters. 0 or an HTTP status in e. */
static int prepare(srv_t *s, srv_req_t *r, oai_err_t *e) {
    char err[256];
    const char *param = r->q.kind == OAI_CHAT ? "messages" : "prompt";
    if (r->q.model && strcmp(r->q.model, s->model_name))
        return oai_errf(e, 404, "invalid_request_error", "model", "model_not_found",
                        "The model '%s' does not exist (this server serves '%s')", r->q.model, s->model_name);
    if (r->q.kind == OAI_CHAT) {
        chat_msg_t *m = hs_calloc((size_t)r->q.n_msgs, sizeof *m);
        for (int i = 0; i < r->q.n_msgs; i++) {
            m[i].role = r->q.msgs[i].role;
            m[i].content = r->q.msgs[i].content;
        }
        chat_opts_t o = chat_opts_default();
        if (r->q.enable_thinking >= 0) o.enable_thinking = r->q.enable_thinking;
        char *text = NULL;
        size_t len = 0;
        int rc = chat_render(s->chat, m, (size_t)r->q.n_msgs, &o, &text, &len, err, sizeof err);
        free(m);
        if (rc != HS_OK) return oai_errf(e, 400, "invalid_request_error", "messages", NULL, "%s", err);
        size_t n = 0;
        rc = tok_encode(s->tok, text, len, 0, &r->ids, &n, err, sizeof err);
        free(text);
        if (rc != HS_OK) return oai_errf(e, 500, "server_error", NULL, NULL, "tokenizer: %s", err);
        r->n_ids = (int)n;
    } else if (r->q.prompt) {
        size_t n = 0;
        int rc = tok_encode(s->tok, r->q.prompt, r->q.prompt_len, 0, &r->ids, &n, err, sizeof err);
        if (rc != HS_OK) return oai_errf(e, 500, "server_error", NULL, NULL, "tokenizer: %s", err);
        r->n_ids = (int)n;
    } else {
        r->ids = r->q.prompt_ids;
        r->n_ids = r->q.n_prompt_ids;
        r->q.prompt_ids = NULL;
    }
    for (int i = 0; i < r->n_ids; i++) /* (text prompts too: the tokenizer may be larger than the model) */
        if (r->ids[i] >= s->info.vocab)
            return oai_errf(e, 400, "invalid_request_error", param, NULL,
                            "token id %d at position %d is outside the model's vocabulary (%d)", r->ids[i], i,
                            s->info.vocab);
    int ctx = s->info.max_model_len;
    if (r->n_ids == 0) return oai_errf(e, 400, "invalid_request_error", param, NULL, "the prompt is empty");
    if (r->n_ids >= ctx)
        return oai_errf(e, 400, "invalid_request_error", param, "context_length_exceeded",
                        "This model's maximum context length is %d tokens; the prompt has %d tokens", ctx, r->n_ids);
    r->sp = r->q.sp;
    int room = ctx - r->n_ids;
    if (r->q.max_tokens_set) {
        if (r->sp.max_tokens > room)
            return oai_errf(e, 400, "invalid_request_error", "max_tokens", "context_length_exceeded",
                            "This model's maximum context length is %d tokens; you requested %d tokens (%d in the "
                            "prompt, %d for the completion)",
                            ctx, r->n_ids + r->sp.max_tokens, r->n_ids, r->sp.max_tokens);
    } else {
        r->sp.max_tokens = r->q.kind == OAI_CHAT ? room : (room < 16 ? room : 16);
    }
    if (!r->sp.ignore_eos) /* the chat template's end-of-turn tokens end generation too */
        for (int i = 0; i < s->n_stop_ids && r->sp.n_stop < HS_MAX_STOP_SEQS; i++) {
            r->sp.stop[r->sp.n_stop][0] = s->stop_ids[i];
            r->sp.stop_len[r->sp.n_stop++] = 1;
        }
    return 0;
}

static enum MHD_Result handle_generate(srv_t *s, struct MHD_Connection *c, oai_kind_t kind, conn_t *cc) {
    if (atomic_load(&s->draining))
        return send_errf(s, c, 503, "server_error", NULL, "unavailable", "the server is shutting down");
    srv_req_t *r = hs_calloc(1, sizeof *r);
    r->srv = s;
    atomic_init(&r->refs, 1);
    atomic_fetch_add(&s->n_live, 1);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->t_arrival = hs_now();
    oai_err_t e;
    if (oai_parse(kind, cc->body.p ? cc->body.p : "", cc->body.n, &r->q, &e) != HS_OK || prepare(s, r, &e)) {
        req_release(r);
        return send_err(s, c, &e);
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    r->fd = ci ? ci->connect_fd : -1;
    oai_make_id(kind, atomic_fetch_add(&s->next_id, 1), r->id, sizeof r->id);
    r->created = (long)time(NULL);
    r->ts = tok_stream_new(s->tok, TOK_DEC_SKIP_SPECIAL);
    oai_stop_init(&r->stop, (const char *const *)r->q.stop, r->q.n_stop);
    if (r->q.n_logprobs >= 0 && !r->q.stream) oai_logprobs_init(&r->lp, kind);

    /* queue it for the engine thread (which takes the second reference) */
    atomic_fetch_add(&r->refs, 1);
    pthread_mutex_lock(&s->qmu);
    if (s->q_tail) s->q_tail->next = r;
    else s->q_head = r;
    s->q_tail = r;
    pthread_cond_signal(&s->qcv);
    pthread_mutex_unlock(&s->qmu);

    int w = req_wait(r, false);
    if (w < 0) {
        req_cancel(r);
        req_release(r);
        return MHD_NO;
    }
    pthread_mutex_lock(&r->mu); /* (the engine thread may move RUNNING on to DONE meanwhile) */
    bool rejected = r->state == RQ_REJECTED;
    pthread_mutex_unlock(&r->mu);
    if (rejected) {
        oai_err_t re;
        oai_errf(&re, r->reject_status, r->reject_status >= 500 ? "server_error" : "invalid_request_error", NULL,
                 r->reject_status == 503 ? "unavailable" : NULL, "%s", r->reject_msg);
        req_release(r);
        return send_err(s, c, &re);
    }
    if (r->q.stream) {
        if (kind == OAI_CHAT) sse_add(r, oai_chunk(kind, r->id, r->created, s->model_name, "", 0, true, NULL, NULL));
        struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, r, sse_free);
        if (!resp) {
            req_cancel(r);
            req_release(r);
            return MHD_NO;
        }
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, resp);
        MHD_destroy_response(resp); /* sse_free releases r when MHD is done with it */
        count_status(s, 200);
        return ret;
    }
    while (!r->done) {
        if (req_wait(r, true) < 0) {
            req_cancel(r);
            req_release(r);
            return MHD_NO;
        }
        req_consume(r);
    }
    enum MHD_Result ret;
    if (r->error) {
        ret = send_errf(s, c, 500, "server_error", NULL, NULL, "the engine failed while generating");
    } else {
        json_t *lp = r->q.n_logprobs >= 0 ? oai_logprobs_take(&r->lp) : NULL;
        ret = send_json(s, c, 200,
                        oai_response(kind, r->id, r->created, s->model_name, r->text.p ? r->text.p : "", r->text.n, lp,
                                     r->finish, r->n_prompt, r->n_output, r->n_cached));
    }
    req_release(r);
    return ret;
}

static enum MHD_Result handle_models(srv_t *s, struct MHD_Connection *c) {
    json_t *m = json_object();
    json_object_set_new(m, "id", json_string(s->model_name));
    json_object_set_new(m, "object", json_string("model"));
    json_object_set_new(m, "created", json_integer(s->t_created));
    json_object_set_new(m, "owned_by", json_string("hyserve"));
    json_object_set_new(m, "root", json_string(s->cfg.engine.model));
    json_object_set_new(m, "max_model_len", json_integer(s->info.max_model_len));
    json_t *data = json_array();
    json_array_append_new(data, m);
    json_t *o = json_object();
    json_object_set_new(o, "object", json_string("list"));
    json_object_set_new(o, "data", data);
    return send_json(s, c, 200, o);
}

static enum MHD_Result handle_health(srv_t *s, struct MHD_Connection *c) {
    const char *chk = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "check");
    bool draining = atomic_load(&s->draining);
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(draining ? "draining" : "ok"));
    int status = draining ? 503 : 200;
    if (chk && strcmp(chk, "0")) {
        check_t ck;
        memset(&ck, 0, sizeof ck);
        pthread_mutex_lock(&s->qmu);
        ck.next = s->checks;
        s->checks = &ck;
        pthread_cond_signal(&s->qcv);
        double t0 = hs_now();
        while (!ck.done && hs_now() - t0 < 10) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&s->ccv, &s->qmu, &ts);
        }
        if (!ck.done) { /* engine thread gone or stuck: unlink the check */
            for (check_t **p = &s->checks; *p; p = &(*p)->next)
                if (*p == &ck) {
                    *p = ck.next;
                    break;
                }
            ck.rc = HS_ERR_STATE;
            snprintf(ck.msg, sizeof ck.msg, "the engine thread did not answer");
        }
        pthread_mutex_unlock(&s->qmu);
        json_object_set_new(o, "pool_check", json_string(ck.rc == HS_OK ? "ok" : ck.msg));
        json_object_set_new(o, "pages_total", json_integer(ck.st.pages_total));
        json_object_set_new(o, "pages_free", json_integer(ck.st.pages_free));
        json_object_set_new(o, "pages_cached", json_integer(ck.st.pages_cached));
        json_object_set_new(o, "pages_in_use", json_integer(ck.st.pages_total - ck.st.pages_free - ck.st.pages_cached));
        json_object_set_new(o, "pages_kv", json_integer(ck.st.pages_kv));
        json_object_set_new(o, "pages_state", json_integer(ck.st.pages_state));
        json_object_set_new(o, "running", json_integer(ck.st.n_running));
        json_object_set_new(o, "waiting", json_integer(ck.st.n_waiting));
        json_object_set_new(o, "swapped", json_integer(ck.st.n_swapped));
        json_object_set_new(o, "requests_in_flight", json_integer(atomic_load(&s->n_live)));
        if (ck.rc != HS_OK) status = 500;
    }
    return send_json(s, c, status, o);
}

static void gauge(hs_buf_t *b, const char *name, const char *help, const char *type, double v) {
    hs_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

static enum MHD_Result handle_metrics(srv_t *s, struct MHD_Connection *c) {
    hs_buf_t b = {0};
    pthread_mutex_lock(&s->smu);
    hs_stats_t st = s->st;
    double now = hs_now(), rate = 0;
    if (s->rate_n > 0) { /* generated tokens per second over the last ~10 s of samples */
        int newest = (s->rate_head + RATE_SAMPLES - 1) % RATE_SAMPLES, oldest = newest;
        for (int k = 1; k < s->rate_n; k++) {
            int i = (newest - k + RATE_SAMPLES) % RATE_SAMPLES;
            if (now - s->rate_t[i] > 10) break;
            oldest = i;
        }
        double dt = now - s->rate_t[oldest];
        if (dt > 0.2) rate = (double)(st.generated_tokens - s->rate_gen[oldest]) / dt;
    }
    gauge(&b, "hyserve_num_requests_running", "Requests in the engine's running batch.", "gauge", st.n_running);
    gauge(&b, "hyserve_num_requests_waiting", "Requests waiting for pages or a batch slot.", "gauge", st.n_waiting);
    gauge(&b, "hyserve_num_requests_swapped", "Requests swapped out to host memory.", "gauge", st.n_swapped);
    gauge(&b, "hyserve_requests_in_flight", "API requests accepted and not yet answered.", "gauge", atomic_load(&s->n_live));
    gauge(&b, "hyserve_pages_total", "Pages in the pool.", "gauge", (double)st.pages_total);
    gauge(&b, "hyserve_pages_free", "Free pages.", "gauge", (double)st.pages_free);
    gauge(&b, "hyserve_kv_pages", "Pages holding KV blocks.", "gauge", (double)st.pages_kv);
    gauge(&b, "hyserve_state_pages", "Pages holding recurrent state.", "gauge", (double)st.pages_state);
    gauge(&b, "hyserve_cached_pages", "Pages held only by the prefix cache.", "gauge", (double)st.pages_cached);
    gauge(&b, "hyserve_pages_in_use", "Pages used by requests: total - free - cached.", "gauge",
          (double)(st.pages_total - st.pages_free - st.pages_cached));
    gauge(&b, "hyserve_state_pages_per_request", "E: state pages one request holds.", "gauge", st.state_pages_per_request);
    gauge(&b, "hyserve_prefix_cache_hit_tokens_total", "Prompt tokens served from the prefix cache.", "counter",
          (double)st.prefix_hit_tokens);
    gauge(&b, "hyserve_prefix_cache_query_tokens_total", "Prompt tokens looked up in the prefix cache.", "counter",
          (double)st.prefix_query_tokens);
    gauge(&b, "hyserve_preemptions_total", "Requests preempted.", "counter", (double)st.preemptions);
    gauge(&b, "hyserve_prompt_tokens_total", "Prompt tokens processed.", "counter", (double)st.prompt_tokens);
    gauge(&b, "hyserve_generation_tokens_total", "Tokens generated.", "counter", (double)st.generated_tokens);
    gauge(&b, "hyserve_engine_steps_total", "Engine steps run.", "counter", (double)st.steps);
    gauge(&b, "hyserve_generation_tokens_per_second", "Generated tokens per second over the last 10 s.", "gauge", rate);
    static const char *fin[5] = {"none", "length", "stop", "abort", "error"};
    hs_buf_printf(&b, "# HELP hyserve_request_success_total Finished requests by finish reason.\n"
                  "# TYPE hyserve_request_success_total counter\n");
    for (int i = 1; i < 5; i++)
        hs_buf_printf(&b, "hyserve_request_success_total{finished_reason=\"%s\"} %" PRIu64 "\n", fin[i], s->n_finish[i]);
    hs_buf_printf(&b, "# HELP hyserve_http_responses_total HTTP responses by status class.\n"
                  "# TYPE hyserve_http_responses_total counter\n"
                  "hyserve_http_responses_total{code=\"2xx\"} %" PRIu64 "\n"
                  "hyserve_http_responses_total{code=\"4xx\"} %" PRIu64 "\n"
                  "hyserve_http_responses_total{code=\"5xx\"} %" PRIu64 "\n",
              s->http_2xx, s->http_4xx, s->http_5xx);
    hist_print(&b, &s->ttft);
    hist_print(&b, &s->tpot);
    hist_print(&b, &s->e2e);
    pthread_mutex_unlock(&s->smu);
    return send_text(s, c, 200, "text/plain; version=0.0.4", b.p, b.n);
}

/* ---- the MHD callbacks ------------------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    (void)version;
    srv_t *s = cls;
    conn_t *cc = *con_cls;
    if (!cc) {
        cc = hs_calloc(1, sizeof *cc);
        *con_cls = cc;
        /* Bodies over OAI_MAX_BODY are read and dropped, so that the client (still sending)
         * gets the 413; past DISCARD_MAX the connection is answered at once and closed. */
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > DISCARD_MAX) {
            cc->started = true;
            return send_errf(s, c, 413, "invalid_request_error", NULL, "request_too_large",
                             "the request body is larger than 4 MiB");
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!cc->too_big && cc->body.n + *upload_data_size > OAI_MAX_BODY) {
            cc->too_big = true;
            free(cc->body.p);
            memset(&cc->body, 0, sizeof cc->body);
        }
        if (!cc->too_big) hs_buf_add(&cc->body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (cc->started) return MHD_YES; /* a response was already queued */
    cc->started = true;
    if (cc->too_big)
        return send_errf(s, c, 413, "invalid_request_error", NULL, "request_too_large",
                         "the request body is larger than 4 MiB");
    bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    if (!strcmp(url, "/health")) {
        if (!get) return send_errf(s, c, 405, "invalid_request_error", NULL, "method_not_allowed", "use GET");
        return handle_health(s, c);
    }
    if (!strcmp(url, "/metrics")) {
        if (!get) return send_errf(s, c, 405, "invalid_request_error", NULL, "method_not_allowed", "use GET");
        return handle_metrics(s, c);
    }
    if (!strncmp(url, "/v1/", 4) && !authorized(s, c))
        return send_errf(s, c, 401, "invalid_request_error", NULL, "invalid_api_key",
                         "missing or invalid API key (Authorization: Bearer <key>)");
    if (!strcmp(url, "/v1/models")) {
        if (!get) return send_errf(s, c, 405, "invalid_request_error", NULL, "method_not_allowed", "use GET");
        return handle_models(s, c);
    }
    bool comp = !strcmp(url, "/v1/completions"), chat = !strcmp(url, "/v1/chat/completions");
    if (comp || chat) {
        if (!post) return send_errf(s, c, 405, "invalid_request_error", NULL, "method_not_allowed", "use POST");
        return handle_generate(s, c, chat ? OAI_CHAT : OAI_COMPLETION, cc);
    }
    char msg[300];
    snprintf(msg, sizeof msg, "no route for %s %.200s", method, url);
    return send_errf(s, c, 404, "invalid_request_error", NULL, "not_found", msg);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    conn_t *cc = *con_cls;
    if (!cc) return;
    free(cc->body.p);
    free(cc);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = 0;
    hs_debug("http: %s", msg);
}

/* ---- create / shutdown / destroy ---------------------------------------------------- */

void srv_config_default(srv_config_t *c) {
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 8000;
    c->max_connections = 1024;
    hs_engine_config_default(&c->engine);
}

int srv_port(const srv_t *s) { return s->port; }
const char *srv_model_name(const srv_t *s) { return s->model_name; }

/* The directory of a model argument (a directory, or a file inside one). */
static char *model_dir(const char *model) {
    struct stat sb;
    if (stat(model, &sb) == 0 && S_ISDIR(sb.st_mode)) return hs_strdup(model);
    const char *slash = strrchr(model, '/');
    if (!slash) return hs_strdup(".");
    char *d = hs_strdup(model);
    d[slash - model] = 0;
    return d;
}

static char *base_name(const char *path) {
    char *p = hs_strdup(path);
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') p[--n] = 0;
    const char *slash = strrchr(p, '/');
    char *b = hs_strdup(slash ? slash + 1 : p);
    free(p);
    return b;
}

int srv_create(const srv_config_t *cfg, srv_t **out, char *err, size_t n) {
    *out = NULL;
    if (!cfg->engine.model) return hs_errf(err, n, HS_ERR_INVALID, "no model given");
    srv_t *s = hs_calloc(1, sizeof *s);
    s->cfg = *cfg;
    pthread_mutex_init(&s->qmu, NULL);
    pthread_cond_init(&s->qcv, NULL);
    pthread_cond_init(&s->ccv, NULL);
    pthread_mutex_init(&s->smu, NULL);
    static const double ttft_le[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                     0.75,  1.0,   2.5,  5.0,  7.5,  10,   20,   40,  80};
    static const double tpot_le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15,
                                     0.2,   0.3,    0.4,   0.5,  0.75,  1.0,  2.5,   5.0, 7.5, 10};
    static const double e2e_le[] = {0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120};
    hist_init(&s->ttft, "hyserve_time_to_first_token_seconds", "Time from request arrival to its first token.", ttft_le,
              (int)(sizeof ttft_le / sizeof *ttft_le));
    hist_init(&s->tpot, "hyserve_time_per_output_token_seconds", "Mean time between output tokens, per request.",
              tpot_le, (int)(sizeof tpot_le / sizeof *tpot_le));
    hist_init(&s->e2e, "hyserve_e2e_request_latency_seconds", "Time from request arrival to its last token.", e2e_le,
              (int)(sizeof e2e_le / sizeof *e2e_le));
    s->model_name = hs_strdup(cfg->served_model_name && cfg->served_model_name[0] ? cfg->served_model_name : "");
    if (!s->model_name[0]) {
        free(s->model_name);
        s->model_name = base_name(cfg->engine.model);
    }
    s->t_created = (long)time(NULL);
    atomic_init(&s->next_id, (uint64_t)hs_now_ns() << 16);
    int rc;
    char *dir = cfg->tokenizer ? model_dir(cfg->tokenizer) : model_dir(cfg->engine.model);
    const char *tpath = cfg->tokenizer ? cfg->tokenizer : dir;
    if ((rc = tok_load(tpath, &s->tok, err, n)) != HS_OK ||
        (rc = chat_load(dir, s->tok, &s->chat, err, n)) != HS_OK) {
        free(dir);
        srv_destroy(s);
        return rc;
    }
    free(dir);
    size_t n_stop = 0;
    const int32_t *stop = chat_stop_ids(s->chat, &n_stop);
    for (size_t i = 0; i < n_stop && s->n_stop_ids < HS_MAX_STOP_SEQS; i++) s->stop_ids[s->n_stop_ids++] = stop[i];

    if (pthread_create(&s->eng, NULL, engine_main, s)) {
        srv_destroy(s);
        return hs_errf(err, n, HS_ERR_STATE, "cannot start the engine thread");
    }
    s->eng_running = true;
    pthread_mutex_lock(&s->qmu);
    while (!s->ready) pthread_cond_wait(&s->ccv, &s->qmu);
    rc = s->ready_rc;
    pthread_mutex_unlock(&s->qmu);
    if (rc != HS_OK) {
        hs_errf(err, n, rc, "%s", s->ready_err);
        srv_destroy(s);
        return rc;
    }
    int k = 0; /* stop ids the model cannot produce (a tokenizer larger than the model) are dropped */
    for (int i = 0; i < s->n_stop_ids; i++)
        if (s->stop_ids[i] >= 0 && s->stop_ids[i] < s->info.vocab) s->stop_ids[k++] = s->stop_ids[i];
    s->n_stop_ids = k;
    if (tok_n_vocab(s->tok) > s->info.vocab)
        hs_warn("the tokenizer has %d ids, the model %d: prompts with larger ids are refused", tok_n_vocab(s->tok),
                s->info.vocab);

    /* listen */
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    const char *host = cfg->host && cfg->host[0] ? cfg->host : "127.0.0.1";
    if (!strcmp(host, "localhost")) host = "127.0.0.1";
    if (strchr(host, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)cfg->port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) rc = HS_ERR_INVALID;
        flags |= MHD_USE_IPv6;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)cfg->port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) rc = HS_ERR_INVALID;
    }
    if (rc != HS_OK || cfg->port < 0 || cfg->port > 65535) {
        srv_destroy(s);
        return hs_errf(err, n, HS_ERR_INVALID, "bad listen address %s port %d (an IP address literal is needed)", host,
                       cfg->port);
    }
    s->mhd = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
                              (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)(cfg->max_connections > 0 ? cfg->max_connections : 1024),
                              MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                              (size_t)(256 * 1024), MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)512,
                              MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL, MHD_OPTION_END);
    if (!s->mhd) {
        int port = cfg->port;
        srv_destroy(s);
        return hs_errf(err, n, HS_ERR_IO, "cannot listen on %s:%d (%s)", host, port, strerror(errno));
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    *out = s;
    return HS_OK;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int srv_shutdown(srv_t *s, double drain_s) {
    if (!s || s->shut) return 0;
    s->shut = true;
    atomic_store(&s->draining, true);
    if (s->mhd) {
        MHD_socket fd = MHD_quiesce_daemon(s->mhd);
        if (fd != MHD_INVALID_SOCKET) close(fd);
    }
    double t0 = hs_now();
    while (atomic_load(&s->n_live) > 0 && hs_now() - t0 < drain_s) sleep_ms(20);
    int aborted = atomic_load(&s->n_live);
    if (aborted > 0 && s->eng_running) {
        pthread_mutex_lock(&s->qmu);
        s->abort_all = true;
        pthread_cond_signal(&s->qcv);
        pthread_mutex_unlock(&s->qmu);
        t0 = hs_now();
        while (atomic_load(&s->n_live) > 0 && hs_now() - t0 < STOP_GRACE_S) sleep_ms(20);
    }
    return aborted;
}

void srv_destroy(srv_t *s) {
    if (!s) return;
    if (s->mhd) {
        srv_shutdown(s, 0);
        atomic_store(&s->hard_stop, true); /* blocked readers give up within WAIT_MS */
        MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
    }
    if (s->eng_running) {
        pthread_mutex_lock(&s->qmu);
        s->abort_all = true;
        s->stop_engine = true;
        pthread_cond_signal(&s->qcv);
        pthread_mutex_unlock(&s->qmu);
        pthread_join(s->eng, NULL);
        s->eng_running = false;
    }
    if (atomic_load(&s->n_live) != 0) hs_warn("%d requests still referenced at shutdown", atomic_load(&s->n_live));
    chat_free(s->chat);
    tok_free(s->tok);
    free(s->model_name);
    pthread_mutex_destroy(&s->qmu);
    pthread_cond_destroy(&s->qcv);
    pthread_cond_destroy(&s->ccv);
    pthread_mutex_destroy(&s->smu);
    free(s);
}
