/*
 * Decode-step graphs on the CUDA backend: a model run with graphs (HS_CUDA_GRAPHS
 * unset) must give bit-identical logits to the same model run without them
 * (HS_CUDA_GRAPHS=0), step by step, while the graphs are really used: the test counts
 * recordings and replays and fails if there are none.
 *
 * Three sequences on the tests/fixtures/gpu-dense and gpu-moe configs (real head
 * shapes; the MoE op groups tokens by expert on the device): a prefill
 * (prompts of 250, 40 and 7 tokens) and then 24 decode steps. Along the way the longest
 * context crosses the 256-token bucket (a new graph), and after step 12 the third
 * sequence leaves (a batch of 2: another graph). A step replays only from the third
 * sighting of its shape (first eager, second recorded: batches of up to 16 sequences;
 * larger ones are recorded on the eighth, graph_need in cuda_backend.cu), so the run
 * sees recordings, replays and eager steps. The shapes: 6 steps of 3 sequences below the
 * 256-token bucket, 6 above, 12 of 2 sequences; the first step above 256 tokens grows
 * attention's workspace, which drops every graph (so that shape is first seen twice).
 * Recorded on the n-th sighting, that makes 3 recordings and 23 - 3n replays, checked
 * exactly for the default (n = 2) and, on the dense config, for HS_CUDA_GRAPH_AFTER=4.
 * Prints one line per step, then OK/FAIL.
 * Both sides use plain cuBLAS (HS_CUDA_GEMM_LT=0): the tuned cuBLASLt path times its
 * candidates per backend, and two backends may pick different (equally valid)
 * algorithms, whose roundings differ.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "layout.h"
#include "mcfg.h"
#include "model.h"
#include "weights.h"

typedef struct {
    backend_t *bk;
    model_t *m;
    statemap_t sm;
    kv_layout_t kv;
} side_t;

static int open_side(side_t *s, const mcfg_t *c, wt_model_t *w, bool graphs, char *err, size_t n) {
    memset(s, 0, sizeof *s);
    if (graphs) unsetenv("HS_CUDA_GRAPHS");
    else setenv("HS_CUDA_GRAPHS", "0", 1);
    s->bk = backend_cuda_create(0, err, n);
    if (!s->bk) return 1;
    mcfg_t cs = *c;
    cs.dtype = s->bk->act_dtype;
    kv_layout_init(&s->kv, c, 1, 16, s->bk->act_dtype, 0);
    int rc = statemap_init(&s->sm, &cs, 1, HS_F32, 0, s->kv.kv_bytes, 0, 0, err, n);
    if (rc) return rc;
    model_config_t mc = {.max_tokens = 512, .max_logits = 8};
    if ((rc = model_create(&s->m, w, s->bk, &mc, err, n))) return rc;
    return model_alloc_pool(s->m, 512, s->kv.kv_bytes, &s->kv, &s->sm, err, n);
}

static void close_side(side_t *s) {
    model_destroy(s->m);
    statemap_free(&s->sm);
    s->bk->destroy(s->bk);
}

/* S sequences: seq q uses KV blocks q*64.., state pages from 256 + q*64. */
static void step(side_t *s, int S, const int32_t *toks, const int *len, const int *past, float *logits, int V) {
    int32_t start[4] = {0}, np[3], pos[512], bt[3][32], sp[3 * 64], rows[3];
    const int E = s->sm.n_pages;
    for (int q = 0; q < S; q++) {
        start[q + 1] = start[q] + len[q];
        np[q] = past[q];
        rows[q] = start[q + 1] - 1;
        for (int i = 0; i < len[q]; i++) pos[start[q] + i] = past[q] + i;
        for (int b = 0; b < 32; b++) bt[q][b] = q * 64 + b;
        for (int e = 0; e < E; e++) sp[q * E + e] = 256 + q * 64 + e;
    }
    bk_batch_t b = {.n_seqs = S, .n_tokens = start[S], .tok_start = start, .n_past = np, .positions = pos,
                    .block_tables = &bt[0][0], .max_blocks = 32, .state_pages = sp, .n_state_pages = E,
                    .logit_rows = rows, .n_logits = S};
    const float *dev = model_forward(s->m, &b, toks);
    s->bk->download(s->bk, logits, dev, sizeof(float) * (size_t)S * (size_t)V);
}

static int argmax(const float *x, int n) {
    int a = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[a]) a = i;
    return a;
}

/* after: HS_CUDA_GRAPH_AFTER for the graph side (0: unset, the default rule) */
static int run(const char *dir, int after) {
    char err[512];
    mcfg_t c;
    if (mcfg_load(dir, &c, err, sizeof err)) return fprintf(stderr, "%s\n", err), 1;
    wt_model_t w;
    wt_opts_t o = {.quiet = true};
    if (wt_load_dummy(&c, &o, &w, err, sizeof err)) return fprintf(stderr, "%s\n", err), 1;
    side_t eager, graph;
    char av[16];
    snprintf(av, sizeof av, "%d", after);
    if (after > 0) setenv("HS_CUDA_GRAPH_AFTER", av, 1);
    const int orc = open_side(&eager, &c, &w, false, err, sizeof err) || open_side(&graph, &c, &w, true, err, sizeof err);
    unsetenv("HS_CUDA_GRAPH_AFTER");
    if (orc) return fprintf(stderr, "%s\n", err), 1;
    wt_free(&w);
    const int V = c.vocab;
    float *le = malloc(sizeof(float) * 3 * V), *lg = malloc(sizeof(float) * 3 * V);
    int32_t toks[512];
    int len[3] = {250, 40, 7}, past[3] = {0, 0, 0}, S = 3, fails = 0;
    uint64_t x = 7;
    for (int i = 0; i < len[0] + len[1] + len[2]; i++)
        x = x * 6364136223846793005ull + 1, toks[i] = (int32_t)((x >> 33) % V);
    printf("%s%s%s\n", dir, after > 0 ? ", HS_CUDA_GRAPH_AFTER=" : "", after > 0 ? av : "");
    for (int it = 0; it <= 24; it++) {
        if (it == 13) S = 2; /* the third sequence leaves */
        const long rec0 = graph.bk->graphs_recorded, rep0 = graph.bk->graphs_replayed;
        step(&eager, S, toks, len, past, le, V);
        step(&graph, S, toks, len, past, lg, V);
        const int same = memcmp(le, lg, sizeof(float) * (size_t)S * (size_t)V) == 0;
        const char *how = graph.bk->graphs_replayed > rep0 ? "replayed" : graph.bk->graphs_recorded > rec0 ? "recorded" : "eager";
        printf("  step %2d  S %d  ctx %d  %-8s  logits %s\n", it, S, past[0] + len[0], how,
               same ? "bit-identical" : "DIFFER");
        fails += !same;
        for (int q = 0; q < S; q++) {
            past[q] += len[q];
            toks[q] = argmax(le + (size_t)q * V, V);
            len[q] = 1;
        }
    }
    printf("  graphs recorded %ld, replayed %ld\n", graph.bk->graphs_recorded, graph.bk->graphs_replayed);
    const int n = after > 0 ? after : 2;
    if (graph.bk->graphs_recorded != 3 || graph.bk->graphs_replayed != 23 - 3 * n) {
        printf("  graphs were not used as expected (need 3 recorded, %d replayed)\n", 23 - 3 * n);
        fails++;
    }
    if (eager.bk->graphs_recorded || eager.bk->graphs_replayed) {
        printf("  HS_CUDA_GRAPHS=0 still recorded graphs\n");
        fails++;
    }
    free(le);
    free(lg);
    close_side(&eager);
    close_side(&graph);
    return fails;
}

int main(int argc, char **argv) {
    const char *root = argc > 1 ? argv[1] : HYSERVE_SOURCE_DIR;
    setenv("HS_CUDA_GEMM_LT", "0", 1);
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/tests/fixtures/gpu-dense", root);
    snprintf(b, sizeof b, "%s/tests/fixtures/gpu-moe", root);
    const int fails = run(a, 0) + run(b, 0) + run(a, 4);
    printf("%s\n", fails ? "FAIL" : "OK");
    return fails ? 1 : 0;
}
