/* hyserve: the command-line entry point. Dispatches to the subcommands in cmd_*.c. */
#include <stdio.h>
#include <string.h>

#include "cmd.h"

/* Each subcommand lives in src/cmd_<name>.c. */
int cmd_bench(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_simulate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);

const cmd_t hs_commands[] = {
    {"generate", cmd_generate, "generate tokens for one prompt (CPU or CUDA backend)"},
    {"bench", cmd_bench, "throughput and latency of the engine on random prompts (dummy or real weights)"},
    {"plan", cmd_plan, "per-rank memory plan of the pool layouts for a model, GPU and workload"},
    {"simulate", cmd_simulate, "replay a workload against the real scheduler and pool with a step-time model"},
    {"inspect", cmd_inspect, "show a checkpoint's tensors and how they map onto the model"},
    {"tokenize", cmd_tokenize, "text to token ids (tokenizer.json of a model directory)"},
    {"detokenize", cmd_detokenize, "token ids to text"},
    {NULL, NULL, NULL},
};

static void usage(FILE *f) {
    fprintf(f, "usage: hyserve <command> [options]   (hyserve <command> --help for its options)\n\ncommands:\n");
    for (const cmd_t *c = hs_commands; c->name; c++) fprintf(f, "  %-12s %s\n", c->name, c->summary);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("hyserve 0.1.0\n");
        return 0;
    }
    for (const cmd_t *c = hs_commands; c->name; c++)
        if (!strcmp(argv[1], c->name)) return c->run(argc - 1, argv + 1);
    fprintf(stderr, "hyserve: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
