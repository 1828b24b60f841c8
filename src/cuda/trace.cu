/*
 * trace: the kernel timeline of a run from CUPTI activity records (trace.h).
 *
 * CUPTI hands us filled buffers of activity records (a worker thread may call the
 * completion callback); each kernel record gives start and end in ns and the kernel's
 * mangled name. We keep (start, end, name id) and summarise at the end. Runtime-API
 * calls (host side: start and end of each cuda* call) and memory copies are kept too, on
 * the same clock, to break the host's turn between two steps down into what it did.
 */
#include <cxxabi.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace.h"

#if __has_include(<cupti.h>)
#include <cupti.h>

typedef CUptiResult (*fn_register_t)(CUpti_BuffersCallbackRequestFunc, CUpti_BuffersCallbackCompleteFunc);
typedef CUptiResult (*fn_kind_t)(CUpti_ActivityKind);
typedef CUptiResult (*fn_flush_t)(uint32_t);
typedef CUptiResult (*fn_next_t)(uint8_t *, size_t, CUpti_Activity **);
typedef CUptiResult (*fn_cbname_t)(CUpti_CallbackDomain, uint32_t, const char **);

#define TR_MAX_RECS (16u << 20) /* 384 MB of records at most; more are counted, not kept */
#define TR_MAX_NAMES 1024
#define TR_MEMCPY (-1) /* the name of a memory copy record in the host list */

typedef struct {
    uint64_t t0, t1;
    int name;
    int grid; /* kernels: gridX (k_embed's is the step's token count); else 0 */
} tr_rec_t;

static struct {
    void *lib;
    fn_kind_t enable, disable;
    fn_flush_t flush;
    fn_next_t next;
    fn_cbname_t cbname;
    int on;
    pthread_mutex_t mu;
    tr_rec_t *r;                        /* kernels */
    size_t n, cap, dropped;
    tr_rec_t *h;                        /* runtime-API calls (name = callback id) and copies */
    size_t hn, hcap;
    const char *name_ptr[TR_MAX_NAMES]; /* CUPTI's pointer for the name (fast path) */
    char *name[TR_MAX_NAMES];           /* our copy */
    int n_names;
} T = {NULL, NULL, NULL, NULL, NULL, NULL, 0, PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, 0, NULL, 0, 0, {NULL}, {NULL}, 0};

/* Append to a record list, growing it; false (counted as dropped) past TR_MAX_RECS. */
static bool push(tr_rec_t **v, size_t *n, size_t *cap, tr_rec_t x) {
    if (*n == *cap) {
        const size_t c = *cap ? *cap * 2 : (1u << 16);
        tr_rec_t *r = c <= TR_MAX_RECS ? (tr_rec_t *)realloc(*v, c * sizeof *r) : NULL;
        if (!r) {
            T.dropped++;
            return false;
        }
        *v = r, *cap = c;
    }
    (*v)[(*n)++] = x;
    return true;
}

/* The id of a kernel name; the last slot collects names past TR_MAX_NAMES. */
static int name_id(const char *s) {
    if (!s) s = "?";
    for (int i = 0; i < T.n_names; i++)
        if (T.name_ptr[i] == s) return i;
    for (int i = 0; i < T.n_names; i++)
        if (!strcmp(T.name[i], s)) return i;
    if (T.n_names == TR_MAX_NAMES) return TR_MAX_NAMES - 1;
    T.name_ptr[T.n_names] = s;
    T.name[T.n_names] = strdup(s);
    return T.n_names++;
}

static void CUPTIAPI buf_request(uint8_t **buf, size_t *size, size_t *max_records) {
    *size = 8u << 20;
    *buf = (uint8_t *)aligned_alloc(8, *size);
    *max_records = 0;
}

static void CUPTIAPI buf_complete(CUcontext ctx, uint32_t stream, uint8_t *buf, size_t size, size_t valid) {
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity *a = NULL;
    pthread_mutex_lock(&T.mu);
    while (T.next(buf, valid, &a) == CUPTI_SUCCESS) {
        if (a->kind == CUPTI_ACTIVITY_KIND_RUNTIME) {
            const CUpti_ActivityAPI *r = (const CUpti_ActivityAPI *)a;
            push(&T.h, &T.hn, &T.hcap, tr_rec_t{r->start, r->end, (int)r->cbid, 0});
        } else if (a->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
            /* kind .. bytes, start, end sit at the same offsets in every version */
            const CUpti_ActivityMemcpy6 *m = (const CUpti_ActivityMemcpy6 *)a;
            push(&T.h, &T.hn, &T.hcap, tr_rec_t{m->start, m->end, TR_MEMCPY, 0});
        } else if (a->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || a->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
            /* start, end, gridX and name sit at the same offsets in every kernel record
             * version since CUPTI 9 (CUpti_ActivityKernel4 .. 10) */
            const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)a;
            push(&T.r, &T.n, &T.cap, tr_rec_t{k->start, k->end, name_id(k->name), (int)k->gridX});
        }
    }
    pthread_mutex_unlock(&T.mu);
    free(buf);
}

extern "C" int cuda_trace_start(void) {
    static const char *libs[] = {"libcupti.so", "libcupti.so.13", "libcupti.so.12",
                                 "/usr/local/cuda/extras/CUPTI/lib64/libcupti.so", "/usr/local/cuda/lib64/libcupti.so",
                                 "/usr/local/cuda/lib/libcupti.so"};
    for (size_t i = 0; i < sizeof libs / sizeof *libs && !T.lib; i++) T.lib = dlopen(libs[i], RTLD_NOW | RTLD_LOCAL);
    fn_register_t reg = NULL;
    if (T.lib) {
        reg = (fn_register_t)dlsym(T.lib, "cuptiActivityRegisterCallbacks");
        T.enable = (fn_kind_t)dlsym(T.lib, "cuptiActivityEnable");
        T.disable = (fn_kind_t)dlsym(T.lib, "cuptiActivityDisable");
        T.flush = (fn_flush_t)dlsym(T.lib, "cuptiActivityFlushAll");
        T.next = (fn_next_t)dlsym(T.lib, "cuptiActivityGetNextRecord");
        T.cbname = (fn_cbname_t)dlsym(T.lib, "cuptiGetCallbackName"); /* optional */
    }
    if (!reg || !T.enable || !T.disable || !T.flush || !T.next || reg(buf_request, buf_complete) != CUPTI_SUCCESS ||
        T.enable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) {
        fprintf(stderr, "hyserve: warning: HS_CUDA_TRACE: CUPTI not available (%s); running untraced\n",
                T.lib ? "its activity API failed" : "libcupti not found");
        return -1;
    }
    /* the host side: optional (the kernel summary stands without it) */
    if (T.enable(CUPTI_ACTIVITY_KIND_RUNTIME) != CUPTI_SUCCESS || T.enable(CUPTI_ACTIVITY_KIND_MEMCPY) != CUPTI_SUCCESS)
        fprintf(stderr, "hyserve: warning: HS_CUDA_TRACE: no runtime-API records; host turn not broken down\n");
    T.on = 1;
    return 0;
}

static int cmp_rec(const void *a, const void *b) {
    const tr_rec_t *x = (const tr_rec_t *)a, *y = (const tr_rec_t *)b;
    return x->t0 < y->t0 ? -1 : x->t0 > y->t0;
}
static int cmp_u64(const void *a, const void *b) {
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}
static double median_us(uint64_t *v, size_t n) {
    if (n == 0) return 0;
    qsort(v, n, sizeof *v, cmp_u64);
    return (double)v[n / 2] / 1e3;
}

/* A readable kernel name: demangled, template arguments kept, cut to 70 characters. */
static void pretty(const char *mangled, char *out, size_t n) {
    int st = 0;
    char *d = abi::__cxa_demangle(mangled, NULL, NULL, &st);
    snprintf(out, n, "%.70s", st == 0 && d ? d : mangled);
    free(d);
}

/* order[0 .. T.n_names) = the kernel name ids by device time t[id], descending (few
 * names: insertion sort). */
static void by_time(const double *t, int *order) {
    for (int i = 0; i < T.n_names; i++) order[i] = i;
    for (int i = 1; i < T.n_names; i++)
        for (int j = i; j > 0 && t[order[j]] > t[order[j - 1]]; j--) {
            const int x = order[j];
            order[j] = order[j - 1], order[j - 1] = x;
        }
}

/* The host's turn between two steps, [a, b): from the end of a step's last kernel to the
 * start of the next step's first. Each runtime-API call's share of it (clipped), the
 * copies' device time in it, and the time no call was open (the host's own code). One
 * sample per step, up to TR_HOST_KEYS call kinds; medians at the end. */
#define TR_HOST_KEYS 24
static struct {
    int key[TR_HOST_KEYS]; /* callback id, or TR_MEMCPY; slot TR_HOST_KEYS-1 gathers the rest */
    int n_keys;
    uint64_t *v[TR_HOST_KEYS + 1]; /* [n_steps] each; the last: time outside every call */
    size_t n_steps;
} H;

static void host_turn(uint64_t a, uint64_t b, size_t step, size_t n_steps) {
    if (!T.hn) return;
    if (H.n_steps < n_steps) {
        for (int i = 0; i <= TR_HOST_KEYS; i++) {
            free(H.v[i]);
            H.v[i] = (uint64_t *)calloc(n_steps, 8);
        }
        H.n_steps = n_steps;
    }
    /* records are sorted by start; no call lasts longer than a few steps: start a bit back */
    size_t lo = 0, hi = T.hn;
    while (lo < hi) {
        const size_t m = (lo + hi) / 2;
        if (T.h[m].t0 < a) lo = m + 1;
        else hi = m;
    }
    size_t i = lo > 64 ? lo - 64 : 0;
    uint64_t open_until = a, in_calls = 0;
    for (; i < T.hn && T.h[i].t0 < b; i++) {
        const tr_rec_t *r = &T.h[i];
        const uint64_t x0 = r->t0 > a ? r->t0 : a, x1 = r->t1 < b ? r->t1 : b;
        if (x1 <= x0) continue;
        int s = 0;
        while (s < H.n_keys && H.key[s] != r->name) s++;
        if (s == H.n_keys) {
            if (H.n_keys < TR_HOST_KEYS) H.key[H.n_keys++] = r->name;
            else s = TR_HOST_KEYS - 1;
        }
        H.v[s][step] += x1 - x0;
        if (r->name == TR_MEMCPY) continue; /* device time: not the host's */
        /* union of the host calls, for "outside every call" */
        const uint64_t u0 = x0 > open_until ? x0 : open_until;
        if (x1 > u0) in_calls += x1 - u0, open_until = x1;
    }
    H.v[TR_HOST_KEYS][step] = (b - a) - in_calls;
}

static void host_report(size_t k) {
    if (!H.n_steps || !k) return;
    fprintf(stderr, "  host turn (medians per step, us; calls clipped to the turn; copies are device time):\n");
    uint64_t *tmp = (uint64_t *)malloc(k * 8);
    for (int s = 0; s <= H.n_keys; s++) {
        const int slot = s < H.n_keys ? s : TR_HOST_KEYS;
        memcpy(tmp, H.v[slot], k * 8);
        double sum = 0;
        for (size_t j = 0; j < k; j++) sum += (double)tmp[j];
        const double med = median_us(tmp, k);
        if (sum == 0) continue;
        const char *nm = NULL;
        char buf[48];
        if (slot == TR_HOST_KEYS) nm = "(host code: no cuda call open)";
        else if (H.key[slot] == TR_MEMCPY) nm = "(memory copies, device)";
        else if (!T.cbname || T.cbname(CUPTI_CB_DOMAIN_RUNTIME_API, (uint32_t)H.key[slot], &nm) != CUPTI_SUCCESS || !nm)
            snprintf(buf, sizeof buf, "runtime call %d", H.key[slot]), nm = buf;
        fprintf(stderr, "    %-50s median %8.1f  mean %8.1f\n", nm, med, sum / 1e3 / (double)k);
    }
    free(tmp);
    for (int i = 0; i <= TR_HOST_KEYS; i++) free(H.v[i]), H.v[i] = NULL;
    H.n_steps = 0;
}

extern "C" void cuda_trace_report(void) {
    if (!T.on) return;
    T.flush(1 /* CUPTI_ACTIVITY_FLAG_FLUSH_FORCED */);
    T.disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    T.disable(CUPTI_ACTIVITY_KIND_RUNTIME);
    T.disable(CUPTI_ACTIVITY_KIND_MEMCPY);
    T.on = 0;
    pthread_mutex_lock(&T.mu);
    qsort(T.r, T.n, sizeof *T.r, cmp_rec);
    qsort(T.h, T.hn, sizeof *T.h, cmp_rec);
    /* steps: from one embedding kernel to the next */
    int embed = -1;
    for (int i = 0; i < T.n_names && embed < 0; i++)
        if (strstr(T.name[i], "k_embed")) embed = i;
    size_t *first = (size_t *)malloc((T.n + 1) * sizeof(size_t));
    size_t n_steps = 0;
    for (size_t i = 0; i < T.n && embed >= 0; i++)
        if (T.r[i].name == embed) first[n_steps++] = i;
    fprintf(stderr, "hyserve: cuda kernel trace (HS_CUDA_TRACE, CUPTI): %zu kernels, %zu not kept, %zu steps\n", T.n,
            T.dropped, n_steps);
    if (n_steps < 2) {
        pthread_mutex_unlock(&T.mu);
        free(first);
        return;
    }
    /* the most common (kernel count, token count) among complete steps: steps of one batch
     * size, so that per-step times can be turned into bytes a second; the count alone with
     * HS_TRACE_ANY_ROWS=1 (every decode step, whatever its rows) */
    const bool any_rows = getenv("HS_TRACE_ANY_ROWS") && atoi(getenv("HS_TRACE_ANY_ROWS"));
    int *cnt = (int *)calloc(n_steps, sizeof(int)), *toks = (int *)calloc(n_steps, sizeof(int));
    size_t best = 0, best_n = 0;
    for (size_t s = 0; s + 1 < n_steps; s++) {
        cnt[s] = (int)(first[s + 1] - first[s]);
        toks[s] = any_rows ? 0 : T.r[first[s]].grid;
    }
    for (size_t s = 0; s + 1 < n_steps; s++) {
        size_t same = 0;
        for (size_t u = 0; u + 1 < n_steps; u++) same += cnt[u] == cnt[s] && toks[u] == toks[s];
        if (same > best_n) best_n = same, best = s;
    }
    const int mode = cnt[best], mode_toks = toks[best];
    uint64_t *span = (uint64_t *)malloc(best_n * 8), *busy = (uint64_t *)malloc(best_n * 8),
             *inner = (uint64_t *)malloc(best_n * 8), *tail = (uint64_t *)malloc(best_n * 8);
    double *per_name = (double *)calloc(TR_MAX_NAMES, sizeof(double));
    int *calls = (int *)calloc(TR_MAX_NAMES, sizeof(int));
    size_t k = 0;
    for (size_t s = 0; s + 1 < n_steps; s++) {
        if (cnt[s] != mode || toks[s] != mode_toks) continue;
        const uint64_t t0 = T.r[first[s]].t0, t_next = T.r[first[s + 1]].t0;
        uint64_t covered = 0, cur0 = t0, cur1 = t0, last = t0;
        for (size_t i = first[s]; i < first[s + 1]; i++) {
            const tr_rec_t *r = &T.r[i];
            per_name[r->name] += (double)(r->t1 - r->t0);
            calls[r->name]++;
            if (r->t0 > cur1) covered += cur1 - cur0, cur0 = r->t0, cur1 = r->t1;
            else if (r->t1 > cur1) cur1 = r->t1;
            if (r->t1 > last) last = r->t1;
        }
        covered += cur1 - cur0;
        span[k] = t_next - t0;
        busy[k] = covered;
        tail[k] = t_next > last ? t_next - last : 0;
        inner[k] = span[k] - covered - tail[k];
        if (tail[k] > 0) host_turn(last, t_next, k, best_n);
        k++;
    }
    fprintf(stderr,
            "  %zu steps of %d kernels and %d tokens (the most common pair; 0: any), medians: step %.1f us = kernels"
            " running %.1f us + gaps between kernels %.1f us + after the last kernel (host) %.1f us\n",
            k, mode, mode_toks, median_us(span, k), median_us(busy, k), median_us(inner, k), median_us(tail, k));
    fprintf(stderr, "  %-72s %8s %12s\n", "kernel (device time per step; PDL overlaps are counted twice)", "calls",
            "us/step");
    int order[TR_MAX_NAMES];
    by_time(per_name, order);
    for (int i = 0; i < T.n_names; i++) {
        const int id = order[i];
        if (!calls[id]) continue;
        char nm[80];
        pretty(T.name[id], nm, sizeof nm);
        fprintf(stderr, "  %-72s %8.1f %12.1f\n", nm, (double)calls[id] / (double)k, per_name[id] / 1e3 / (double)k);
    }
    host_report(k);
    /* the other steps (prefill chunks, batch-size changes): all together, top kernels */
    memset(per_name, 0, TR_MAX_NAMES * sizeof(double));
    double other_span = 0;
    size_t n_other = 0;
    for (size_t s = 0; s + 1 < n_steps; s++) {
        if (cnt[s] == mode && toks[s] == mode_toks) continue;
        n_other++;
        other_span += (double)(T.r[first[s + 1]].t0 - T.r[first[s]].t0);
        for (size_t i = first[s]; i < first[s + 1]; i++) per_name[T.r[i].name] += (double)(T.r[i].t1 - T.r[i].t0);
    }
    if (n_other > 0) {
        double all = 0;
        for (int i = 0; i < T.n_names; i++) all += per_name[i];
        fprintf(stderr, "  the other %zu steps: %.1f ms in all (span), kernels %.1f ms; top kernels (ms in all):\n",
                n_other, other_span / 1e6, all / 1e6);
        by_time(per_name, order);
        for (int i = 0; i < T.n_names && i < 14; i++) {
            const int id = order[i];
            if (per_name[id] <= 0) break;
            char nm[80];
            pretty(T.name[id], nm, sizeof nm);
            fprintf(stderr, "    %-72s %10.1f\n", nm, per_name[id] / 1e6);
        }
    }
    pthread_mutex_unlock(&T.mu);
    free(first), free(cnt), free(toks), free(span), free(busy), free(inner), free(tail), free(per_name), free(calls);
}

#else /* no CUPTI headers at build time */

extern "C" int cuda_trace_start(void) {
    fprintf(stderr, "hyserve: warning: HS_CUDA_TRACE: built without CUPTI; running untraced\n");
    return -1;
}
extern "C" void cuda_trace_report(void) {}

#endif
