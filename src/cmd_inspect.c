/*
 * cmd_inspect: `hyserve inspect MODEL [--json] [--load-format auto|dummy] [--touch]`
 *
 * MODEL is
 *   - a checkpoint directory (config.json + safetensors, single or sharded): the
 *     tensor table (name, dtype, shape, bytes, file, the parameter it feeds or why it
 *     is unused), the parameter table (model-facing name, dtype, [rows, cols], bytes,
 *     source tensor(s), reorder note), the unused list and totals;
 *   - a single .safetensors file: its tensor table and __metadata__ only;
 *   - with --load-format dummy: a config (directory, config.json or shipped name):
 *     the parameter table of the dummy model; --touch generates every tensor once
 *     and reports the time (the benchmark start-up cost).
 * --touch on a checkpoint reads every used byte (page-in) with progress on a tty.
 * Exit status: 0 ok, 2 bad usage or a checkpoint that does not load.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cmd.h"
#include "mcfg.h"
#include "st.h"
#include "weights.h"

static void usage(FILE *f) {
    fprintf(f, "usage: hyserve inspect MODEL [--json] [--load-format auto|dummy] [--touch]\n"
               "  MODEL: checkpoint directory (config.json + *.safetensors), a .safetensors file,\n"
               "         or with --load-format dummy a config (directory, config.json or shipped name)\n");
}

static json_t *shape_json(const st_tensor_t *t) {
    json_t *a = json_array();
    for (int i = 0; i < t->rank; i++) json_array_append_new(a, json_integer(t->shape[i]));
    return a;
}

static const char *base(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int inspect_file(const char *path, bool js) {
    st_file_t f;
    char err[1024];
    if (st_file_open(path, &f, err, sizeof err) != HS_OK) {
        fprintf(stderr, "hyserve: error: %s\n", err);
        return 2;
    }
    uint64_t total = 0;
    if (js) {
        json_t *root = json_object(), *ts = json_array(), *meta = json_object();
        for (int i = 0; i < f.n_tensors; i++) {
            const st_tensor_t *t = &f.tensors[i];
            json_array_append_new(ts, json_pack("{s:s, s:s, s:o, s:I, s:[I,I]}", "name", t->name, "dtype",
                                                st_dtype_str(t->dtype), "shape", shape_json(t), "bytes",
                                                (json_int_t)st_tensor_bytes(t), "data_offsets", (json_int_t)t->begin,
                                                (json_int_t)t->end));
            total += st_tensor_bytes(t);
        }
        for (int i = 0; i < f.n_meta; i++) json_object_set_new(meta, f.meta_keys[i], json_string(f.meta_vals[i]));
        json_object_set_new(root, "file", json_string(path));
        json_object_set_new(root, "header_bytes", json_integer((json_int_t)f.header_len));
        json_object_set_new(root, "metadata", meta);
        json_object_set_new(root, "tensors", ts);
        json_object_set_new(root, "total_bytes", json_integer((json_int_t)total));
        json_dumpf(root, stdout, JSON_INDENT(1));
        fputc('\n', stdout);
        json_decref(root);
    } else {
        printf("file: %s (header %llu bytes, %d tensors)\n", path, (unsigned long long)f.header_len, f.n_tensors);
        for (int i = 0; i < f.n_meta; i++) printf("metadata: %s = %s\n", f.meta_keys[i], f.meta_vals[i]);
        printf("%-64s %-8s %-22s %14s\n", "tensor", "dtype", "shape", "bytes");
        for (int i = 0; i < f.n_tensors; i++) {
            const st_tensor_t *t = &f.tensors[i];
            char sb[160];
            printf("%-64s %-8s %-22s %14llu\n", t->name, st_dtype_str(t->dtype), st_shape_str(t->shape, t->rank, sb, sizeof sb),
                   (unsigned long long)st_tensor_bytes(t));
            total += st_tensor_bytes(t);
        }
        printf("total: %d tensors, %llu bytes (%.3f GiB)\n", f.n_tensors, (unsigned long long)total,
               (double)total / (1 << 30));
    }
    st_file_close(&f);
    return 0;
}

static void print_params(const wt_model_t *m, bool js, json_t *root) {
    json_t *ps = js ? json_array() : NULL;
    if (!js) printf("\nparameters (model-facing):\n%-44s %-8s %-16s %12s  %s\n", "param", "dtype", "[rows, cols]", "bytes",
                    "source (note)");
    for (int i = 0; i < m->n_map; i++) {
        const wt_map_t *r = &m->map[i];
        const bk_host_tensor_t *t = r->t;
        if (js) {
            json_array_append_new(ps, json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:b}", "param", r->param, "dtype",
                                                hs_dtype_name(t->dtype), "rows", (json_int_t)t->rows, "cols",
                                                (json_int_t)t->cols, "bytes", (json_int_t)wt_bytes(t), "source", r->source,
                                                "note", r->note, "fp8_scales", t->scale_inv != NULL));
        } else {
            char rc[48];
            snprintf(rc, sizeof rc, "[%lld, %lld]", (long long)t->rows, (long long)t->cols);
            printf("%-44s %-8s %-16s %12llu  %s (%s)\n", r->param, hs_dtype_name(t->dtype), rc,
                   (unsigned long long)wt_bytes(t), r->source, r->note);
        }
    }
    if (js) json_object_set_new(root, "params", ps);
}

static int inspect_model(const char *path, bool js, bool dummy, bool touch) {
    mcfg_t c;
    char err[1024], desc[512];
    if (mcfg_load(path, &c, err, sizeof err) != HS_OK) {
        fprintf(stderr, "hyserve: error: %s\n", err);
        return 2;
    }
    mcfg_describe(&c, desc, sizeof desc);
    wt_model_t m;
    wt_opts_t o = {.quiet = js, .touch = touch && !dummy};
    double t0 = hs_now();
    int rc = dummy ? wt_load_dummy(&c, &o, &m, err, sizeof err) : wt_load(path, &c, &o, &m, err, sizeof err);
    if (rc != HS_OK) {
        fprintf(stderr, "hyserve: error: %s\n", err);
        return 2;
    }
    double t_gen = -1;
    uint64_t gen_bytes = 0;
    if (dummy && touch) {
        double t1 = hs_now();
        gen_bytes = wt_touch_all(&m);
        t_gen = hs_now() - t1;
        if (!js)
            hs_info("generated %.2f GiB of dummy weights in %.2f s", (double)gen_bytes / (1 << 30), t_gen);
    }
    double t_load = hs_now() - t0;
    json_t *root = js ? json_object() : NULL;
    uint64_t unused_bytes = 0;
    int n_unused = 0;
    if (js) {
        json_object_set_new(root, "model", json_string(path));
        json_object_set_new(root, "config", json_string(desc));
        json_object_set_new(root, "load_format", json_string(dummy ? "dummy" : "safetensors"));
        json_object_set_new(root, "prefix", json_string(m.prefix));
    } else {
        printf("model: %s\nconfig: %s\n", path, desc);
        if (!dummy)
            printf("checkpoint: %d file(s)%s, %d tensors, %.3f GiB, name prefix \"%s\"\n", m.st.n_files,
                   m.st.sharded ? " (sharded, index)" : "", m.st.n_tensors, (double)m.st.total_bytes / (1 << 30),
                   m.prefix);
        else printf("load format: dummy (seeded bf16 values generated on demand)\n");
    }
    if (!dummy) {
        json_t *ts = js ? json_array() : NULL;
        if (!js) printf("\ntensors:\n%-64s %-8s %-22s %12s %-36s %s\n", "tensor", "dtype", "shape", "bytes", "file", "-> param");
        for (int i = 0; i < m.st.n_tensors; i++) {
            const st_tensor_t *t = m.st.sorted[i];
            const wt_map_t *r = m.used[i] ? &m.map[m.used[i] - 1] : NULL;
            const char *why = r ? NULL : wt_unused_reason(t->name);
            if (!r) {
                n_unused++;
                unused_bytes += st_tensor_bytes(t);
            }
            if (js) {
                json_t *e = json_pack("{s:s, s:s, s:o, s:I, s:s}", "name", t->name, "dtype", st_dtype_str(t->dtype), "shape",
                                      shape_json(t), "bytes", (json_int_t)st_tensor_bytes(t), "file",
                                      base(st_set_file_path(&m.st, t)));
                json_object_set_new(e, "param", r ? json_string(r->param) : json_null());
                if (why) json_object_set_new(e, "unused", json_string(why));
                json_array_append_new(ts, e);
            } else {
                char sb[160], tgt[300];
                if (r) snprintf(tgt, sizeof tgt, "-> %s", r->param);
                else snprintf(tgt, sizeof tgt, "unused: %s", why);
                printf("%-64s %-8s %-22s %12llu %-36s %s\n", t->name, st_dtype_str(t->dtype),
                       st_shape_str(t->shape, t->rank, sb, sizeof sb), (unsigned long long)st_tensor_bytes(t),
                       base(st_set_file_path(&m.st, t)), tgt);
            }
        }
        if (js) json_object_set_new(root, "tensors", ts);
    }
    print_params(&m, js, root);
    if (!dummy && !js && n_unused) {
        printf("\nunused (%d tensors, %llu bytes):\n", n_unused, (unsigned long long)unused_bytes);
        for (int i = 0; i < m.st.n_tensors; i++)
            if (!m.used[i]) printf("  %s (%s)\n", m.st.sorted[i]->name, wt_unused_reason(m.st.sorted[i]->name));
    }
    if (js) {
        json_t *tot = json_pack("{s:i, s:I, s:b, s:i, s:i, s:I}", "params", m.n_map, "param_bytes",
                                (json_int_t)m.bytes_params, "tied", m.tied, "mtp_layers", m.n_mtp, "unused_tensors",
                                n_unused, "unused_bytes", (json_int_t)unused_bytes);
        if (!dummy) {
            json_object_set_new(tot, "tensors", json_integer(m.st.n_tensors));
            json_object_set_new(tot, "checkpoint_bytes", json_integer((json_int_t)m.st.total_bytes));
        }
        json_object_set_new(tot, "load_seconds", json_real(t_load));
        if (t_gen >= 0) json_object_set_new(tot, "generate_seconds", json_real(t_gen));
        json_object_set_new(root, "totals", tot);
        json_dumpf(root, stdout, JSON_INDENT(1));
        fputc('\n', stdout);
        json_decref(root);
    } else {
        printf("\ntotals: %d parameters, %.3f GiB (%s), lm_head %s, MTP layers %d", m.n_map,
               (double)m.bytes_params / (1 << 30), dummy ? "dummy bf16" : "as stored", m.tied ? "tied to embed" : "own",
               m.n_mtp);
        if (!dummy) printf(", %d unused tensors (%.3f GiB)", n_unused, (double)unused_bytes / (1 << 30));
        printf("\n");
    }
    wt_free(&m);
    return 0;
}

int cmd_inspect(int argc, char **argv) {
    const char *model = NULL;
    bool js = false, dummy = false, touch = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) js = true;
        else if (!strcmp(argv[i], "--touch")) touch = true;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--load-format") && i + 1 < argc) {
            wt_load_format_t f;
            if (wt_load_format_parse(argv[++i], &f) != HS_OK) {
                fprintf(stderr, "hyserve: error: --load-format: '%s' is not auto, safetensors or dummy\n", argv[i]);
                return 2;
            }
            dummy = f == WT_LOAD_DUMMY;
        } else if (argv[i][0] == '-' || model) {
            fprintf(stderr, "hyserve: error: inspect: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        } else model = argv[i];
    }
    if (!model) {
        usage(stderr);
        return 2;
    }
    struct stat sb;
    size_t len = strlen(model);
    if (!dummy && stat(model, &sb) == 0 && S_ISREG(sb.st_mode) && len > 12 && !strcmp(model + len - 12, ".safetensors"))
        return inspect_file(model, js);
    return inspect_model(model, js, dummy, touch);
}
