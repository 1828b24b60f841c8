/*
 * cmd_plan: `hyserve plan` — the capacity planner. Loads a model config, runs the
 * memory model (memplan.h) for one tensor-parallel rank on a given card and prints,
 * for each pool layout (coupled, slots, paged), the page size, the state cost, the
 * pool size, the waste and how many requests of the workload fit. Table by default,
 * --json for machines (field names: README "hyserve plan").
 *
 * Exit status: 0 ok; 2 bad option or bad config (one line on stderr); 1 when the
 * model does not fit (weights + reserve exceed the card).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "mcfg.h"
#include "memplan.h"
#include "util.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: hyserve plan --model NAME|DIR|config.json [options]\n"
            "\n"
            "Per-rank memory plan of the three pool layouts (coupled, slots, paged).\n"
            "\n"
            "  --model M             model directory, config.json, or a shipped name\n"
            "  --tp N                tensor-parallel ranks (1)\n"
            "  --gpu NAME            card:");
    for (const mem_gpu_t *g = mem_gpus(); g->name; g++) fprintf(f, " %s", g->name);
    fprintf(f,
            "\n"
            "  --gpu-mem-gib X       device memory per rank in GiB (instead of --gpu)\n"
            "  --mem-util F          fraction of device memory to use (0.9)\n"
            "  --kv-dtype T          bf16 | fp8 (bf16; fp8 adds per-token-head fp32 scales)\n"
            "  --state-dtype T       SSM state: f32 | bf16 (config's mamba_ssm_dtype, else bf16)\n"
            "  --weights-dtype T     bf16 | fp8 (bf16; fp8 = e4m3 + 128x128 block scales)\n"
            "  --block-size N        tokens per KV block (16)\n"
            "  --max-num-seqs N      running requests at most (512)\n"
            "  --max-batched-tokens N  tokens per step, sizes the activation reserve (16384)\n"
            "  --mtp K               speculative tokens with the MTP layer (0)\n"
            "  --prompt-len N        workload prompt tokens per request (1024)\n"
            "  --output-len N        workload output tokens per request (1024)\n"
            "  --json                machine-readable output\n");
}

/* "1234567" -> "1,234,567" into buf. */
static const char *commas(char *buf, size_t n, long long v) {
    char tmp[32];
    int len = snprintf(tmp, sizeof tmp, "%lld", v < 0 ? -v : v);
    size_t o = 0;
    if (v < 0 && o + 1 < n) buf[o++] = '-';
    for (int i = 0; i < len && o + 2 < n; i++) {
        buf[o++] = tmp[i];
        if ((len - i - 1) % 3 == 0 && i != len - 1) buf[o++] = ',';
    }
    buf[o] = 0;
    return buf;
}

static const double MIB = 1048576.0, GIB = 1073741824.0;

static void print_table(const char *model, const char *gpu, const mcfg_t *c, const mem_plan_t *p) {
    const mem_opts_t *o = &p->opts;
    char a[32], d[256];
    mcfg_describe(c, d, sizeof d);
    printf("hyserve plan: %s\n  %s\n", model, d);
    printf("  tp %d | %s %.2f GiB x mem-util %.2f | KV %s | state %s (conv %s) | weights %s | block %d | "
           "max-num-seqs %d | MTP k=%d\n",
           o->tp, gpu, o->gpu_mem_gib, o->mem_util, hs_dtype_name(o->kv_dtype), hs_dtype_name(o->state_dtype),
           hs_dtype_name(p->state.conv_dtype), hs_dtype_name(o->weights_dtype), o->block_size, o->max_num_seqs,
           o->mtp_k);
    printf("  workload %d prompt + %d output tokens per request\n\n", o->prompt_len, o->output_len);

    printf("per rank                       %18s\n", "bytes");
    printf("  KV per token                 %18s\n", commas(a, sizeof a, (long long)p->kv_token_bytes));
    printf("  KV block (%4d tokens)       %18s  %10.3f MiB  (%d attn rows x %d KV heads x %d)\n", o->block_size,
           commas(a, sizeof a, (long long)p->kv.kv_bytes), p->kv.kv_bytes / MIB, p->kv.n_attn, p->kv.kvh,
           p->kv.head_dim);
    printf("  state per request            %18s  %10.3f MiB  (%d GDN layers x (conv %zu + SSM %zu) x %d)\n",
           commas(a, sizeof a, (long long)p->state.req_bytes), p->state.req_bytes / MIB, p->state.n_gdn,
           p->state.conv_layer_bytes, p->state.ssm_layer_bytes, p->state.copies);
    printf("  weights                      %18s  %10.2f GiB\n", commas(a, sizeof a, (long long)p->weight_bytes),
           p->weight_bytes / GIB);
    printf("  usable (memory x mem-util)   %18s  %10.2f GiB\n", commas(a, sizeof a, (long long)p->usable_bytes),
           p->usable_bytes / GIB);
    printf("  reserve                      %18s  %10.2f GiB  (%.0f%% safety + %d tokens x H %d x 2 B x %d)\n",
           commas(a, sizeof a, (long long)p->reserve_bytes), p->reserve_bytes / GIB, MEM_SAFETY_FRACTION * 100,
           o->max_batched_tokens, c->hidden, MEM_ACT_FACTOR);
    printf("  pool budget                  %18s  %10.2f GiB\n\n", commas(a, sizeof a, (long long)p->budget_bytes),
           p->budget_bytes / GIB);

    const mem_layout_t *L = p->layouts;
    printf("%-28s %18s %18s %18s\n", "layout", L[0].name, L[1].name, L[2].name);
#define ROW_INT(label, expr)                                                                          \
    do {                                                                                              \
        printf("%-28s", label);                                                                       \
        for (int i = 0; i < 3; i++) printf(" %18s", commas(a, sizeof a, (long long)(L[i].expr)));     \
        printf("\n");                                                                                 \
    } while (0)
    ROW_INT("page bytes", page_bytes);
    printf("%-28s", "  page MiB");
    for (int i = 0; i < 3; i++) printf(" %18.3f", L[i].page_bytes / MIB);
    printf("\n");
    ROW_INT("KV block bytes", kv_block_bytes);
    ROW_INT("state bytes / request", state_bytes);
    ROW_INT("state pages E / request", state_pages);
    ROW_INT("  E as the engine packs it", state_pages_packed);
    ROW_INT("pool pages", pool_pages);
    ROW_INT("  reserved for state", state_region_pages);
    ROW_INT("pages / request (peak)", pages_per_req);
    printf("%-28s", "memory waste");
    for (int i = 0; i < 3; i++) printf(" %17.1f%%", L[i].waste_pct);
    printf("\n");
    ROW_INT("max concurrent requests", max_concurrent);
    ROW_INT("max cached tokens", max_cached_tokens);
#undef ROW_INT
    printf("\n");
    for (int i = 0; i < 3; i++) printf("%-8s %s\n", L[i].name, L[i].verdict);
}

static int print_json(const char *model, const char *gpu, const mcfg_t *c, const mem_plan_t *p) {
    const mem_opts_t *o = &p->opts;
    json_t *root = json_object();
    json_object_set_new(root, "model", json_string(model));
    json_object_set_new(root, "model_type", json_string(c->model_type));
    json_object_set_new(root, "tp", json_integer(o->tp));
    json_object_set_new(root, "gpu", json_string(gpu));
    json_object_set_new(root, "gpu_mem_gib", json_real(o->gpu_mem_gib));
    json_object_set_new(root, "mem_util", json_real(o->mem_util));
    json_object_set_new(root, "kv_dtype", json_string(hs_dtype_name(o->kv_dtype)));
    json_object_set_new(root, "state_dtype", json_string(hs_dtype_name(o->state_dtype)));
    json_object_set_new(root, "conv_dtype", json_string(hs_dtype_name(p->state.conv_dtype)));
    json_object_set_new(root, "weights_dtype", json_string(hs_dtype_name(o->weights_dtype)));
    json_object_set_new(root, "block_size", json_integer(o->block_size));
    json_object_set_new(root, "max_num_seqs", json_integer(o->max_num_seqs));
    json_object_set_new(root, "max_batched_tokens", json_integer(o->max_batched_tokens));
    json_object_set_new(root, "mtp_k", json_integer(o->mtp_k));
    json_object_set_new(root, "prompt_len", json_integer(o->prompt_len));
    json_object_set_new(root, "output_len", json_integer(o->output_len));

    json_t *r = json_object();
    json_object_set_new(r, "kv_bytes_per_token", json_integer((json_int_t)p->kv_token_bytes));
    json_object_set_new(r, "kv_block_bytes", json_integer((json_int_t)p->kv.kv_bytes));
    json_object_set_new(r, "kv_heads", json_integer(p->kv.kvh));
    json_object_set_new(r, "attn_rows", json_integer(p->kv.n_attn));
    json_object_set_new(r, "gdn_layers", json_integer(p->state.n_gdn));
    json_object_set_new(r, "conv_bytes_per_layer", json_integer((json_int_t)p->state.conv_layer_bytes));
    json_object_set_new(r, "ssm_bytes_per_layer", json_integer((json_int_t)p->state.ssm_layer_bytes));
    json_object_set_new(r, "state_slot_bytes", json_integer((json_int_t)p->state.slot_bytes));
    json_object_set_new(r, "state_copies", json_integer(p->state.copies));
    json_object_set_new(r, "state_bytes_per_request", json_integer((json_int_t)p->state.req_bytes));
    json_object_set_new(r, "weight_bytes", json_integer((json_int_t)p->weight_bytes));
    json_object_set_new(r, "gpu_bytes", json_integer((json_int_t)p->gpu_bytes));
    json_object_set_new(r, "usable_bytes", json_integer((json_int_t)p->usable_bytes));
    json_object_set_new(r, "safety_bytes", json_integer((json_int_t)p->safety_bytes));
    json_object_set_new(r, "activation_bytes", json_integer((json_int_t)p->act_bytes));
    json_object_set_new(r, "reserve_bytes", json_integer((json_int_t)p->reserve_bytes));
    json_object_set_new(r, "pool_budget_bytes", json_integer((json_int_t)p->budget_bytes));
    json_object_set_new(r, "tokens_per_request", json_integer(p->tokens_per_req));
    json_object_set_new(root, "per_rank", r);

    json_t *ls = json_object();
    for (int i = 0; i < 3; i++) {
        const mem_layout_t *L = &p->layouts[i];
        json_t *l = json_object();
        json_object_set_new(l, "page_bytes", json_integer((json_int_t)L->page_bytes));
        json_object_set_new(l, "kv_block_bytes", json_integer((json_int_t)L->kv_block_bytes));
        json_object_set_new(l, "state_bytes_per_request", json_integer((json_int_t)L->state_bytes));
        json_object_set_new(l, "state_pages", json_integer(L->state_pages));
        json_object_set_new(l, "state_pages_packed", json_integer(L->state_pages_packed));
        json_object_set_new(l, "pool_pages", json_integer(L->pool_pages));
        json_object_set_new(l, "state_region_pages", json_integer(L->state_region_pages));
        json_object_set_new(l, "kv_pages", json_integer(L->kv_pages));
        json_object_set_new(l, "blocks_per_request", json_integer(L->blocks_per_req));
        json_object_set_new(l, "pages_per_request", json_integer(L->pages_per_req));
        json_object_set_new(l, "alloc_bytes", json_integer((json_int_t)L->alloc_bytes));
        json_object_set_new(l, "used_bytes", json_integer((json_int_t)L->used_bytes));
        json_object_set_new(l, "waste_pct", json_real(L->waste_pct));
        json_object_set_new(l, "mem_concurrent", json_integer(L->mem_concurrent));
        json_object_set_new(l, "max_concurrent", json_integer(L->max_concurrent));
        json_object_set_new(l, "limit", json_string(L->max_concurrent == 0 ? "none"
                                                    : L->seq_bound        ? "max_num_seqs"
                                                                          : "memory"));
        json_object_set_new(l, "max_cached_tokens", json_integer(L->max_cached_tokens));
        json_object_set_new(l, "verdict", json_string(L->verdict));
        json_object_set_new(ls, L->name, l);
    }
    json_object_set_new(root, "layouts", ls);
    int rc = json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    printf("\n");
    json_decref(root);
    return rc == 0 ? 0 : 1;
}

/* --- option parsing: "--opt value" or "--opt=value" ------------------------------ */

static int bad(const char *fmt, const char *a, const char *b) {
    fputs("hyserve plan: ", stderr);
    fprintf(stderr, fmt, a, b);
    fputs(" (hyserve plan --help)\n", stderr);
    return 2;
}

static int parse_int(const char *opt, const char *v, int lo, int hi, int *out) {
    int64_t x;
    if (hs_parse_i64(v, lo, hi, &x) != HS_OK) return bad("%s: '%s' is not a valid integer in range", opt, v);
    *out = (int)x;
    return 0;
}

static int parse_dtype(const char *opt, const char *v, hs_dtype_t a, hs_dtype_t b2, hs_dtype_t *out) {
    hs_dtype_t t;
    if (hs_dtype_parse(v, &t) != HS_OK || (t != a && t != b2))
        return bad("%s: '%s' is not one of the accepted dtypes", opt, v);
    *out = t;
    return 0;
}

int cmd_plan(int argc, char **argv) {
    mem_opts_t o;
    mem_opts_default(&o);
    const char *model = NULL, *gpu = NULL;
    double gpu_gib = 0;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        char opt[64];
        const char *arg = argv[i], *val = NULL;
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(arg, "--json")) {
            json = 1;
            continue;
        }
        if (strncmp(arg, "--", 2)) return bad("unexpected argument '%s'%s", arg, "");
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (len >= sizeof opt) return bad("unknown option '%s'%s", arg, "");
        memcpy(opt, arg, len);
        opt[len] = 0;
        if (eq) {
            val = eq + 1;
        } else {
            if (i + 1 >= argc) return bad("%s: needs a value%s", opt, "");
            val = argv[++i];
        }
        int rc = 0;
        if (!strcmp(opt, "--model")) model = val;
        else if (!strcmp(opt, "--tp")) rc = parse_int(opt, val, 1, 64, &o.tp);
        else if (!strcmp(opt, "--gpu")) gpu = val;
        else if (!strcmp(opt, "--gpu-mem-gib")) {
            if (hs_parse_f64(val, &gpu_gib) != HS_OK || !(gpu_gib > 0 && gpu_gib < 1e6))
                rc = bad("%s: '%s' is not a positive number of GiB", opt, val);
        } else if (!strcmp(opt, "--mem-util")) {
            if (hs_parse_f64(val, &o.mem_util) != HS_OK || !(o.mem_util > 0 && o.mem_util <= 1))
                rc = bad("%s: '%s' is not in (0, 1]", opt, val);
        } else if (!strcmp(opt, "--kv-dtype")) rc = parse_dtype(opt, val, HS_BF16, HS_F8_E4M3, &o.kv_dtype);
        else if (!strcmp(opt, "--state-dtype")) {
            rc = parse_dtype(opt, val, HS_F32, HS_BF16, &o.state_dtype);
            o.state_dtype_set = true;
        } else if (!strcmp(opt, "--weights-dtype")) rc = parse_dtype(opt, val, HS_BF16, HS_F8_E4M3, &o.weights_dtype);
        else if (!strcmp(opt, "--block-size")) rc = parse_int(opt, val, 1, 4096, &o.block_size);
        else if (!strcmp(opt, "--max-num-seqs")) rc = parse_int(opt, val, 1, 1 << 20, &o.max_num_seqs);
        else if (!strcmp(opt, "--max-batched-tokens")) rc = parse_int(opt, val, 1, 1 << 24, &o.max_batched_tokens);
        else if (!strcmp(opt, "--mtp")) rc = parse_int(opt, val, 0, 4, &o.mtp_k);
        else if (!strcmp(opt, "--prompt-len")) rc = parse_int(opt, val, 1, 1 << 26, &o.prompt_len);
        else if (!strcmp(opt, "--output-len")) rc = parse_int(opt, val, 0, 1 << 26, &o.output_len);
        else return bad("unknown option '%s'%s", opt, "");
        if (rc) return rc;
    }
    if (!model) return bad("--model is required%s%s", "", "");
    mcfg_t c;
    char err[1024];
    if (mcfg_load(model, &c, err, sizeof err) != HS_OK) hs_die(2, "%s", err);
    if (gpu && gpu_gib > 0) return bad("give --gpu or --gpu-mem-gib, not both%s%s", "", "");
    char gpu_name[64] = "custom";
    if (gpu) {
        const mem_gpu_t *g = mem_gpu_find(gpu);
        if (!g) {
            char names[256] = "";
            for (const mem_gpu_t *x = mem_gpus(); x->name; x++) {
                strncat(names, " ", sizeof names - strlen(names) - 1);
                strncat(names, x->name, sizeof names - strlen(names) - 1);
            }
            return bad("--gpu: unknown card '%s' (known:%s)", gpu, names);
        }
        o.gpu_mem_gib = g->mem_gib;
        snprintf(gpu_name, sizeof gpu_name, "%s", g->name);
    } else if (gpu_gib > 0) {
        o.gpu_mem_gib = gpu_gib;
    } else {
        return bad("give --gpu NAME or --gpu-mem-gib X%s%s", "", "");
    }

    mem_plan_t p;
    int rc = mem_plan(&p, &c, &o, err, sizeof err);
    if (rc == HS_ERR_NO_MEMORY) hs_die(1, "%s: %s", model, err);
    if (rc != HS_OK) hs_die(2, "%s: %s", model, err);
    if (json) return print_json(model, gpu_name, &c, &p);
    print_table(model, gpu_name, &c, &p);
    return 0;
}
