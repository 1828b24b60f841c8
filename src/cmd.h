/*
 * cmd: the subcommands of the hyserve CLI. Each lives in src/cmd_<name>.c,
 * parses its own argv (argv[0] is the subcommand name) and returns the process
 * exit status: 0 ok, 1 runtime failure, 2 bad usage or bad input (config, model).
 */
#ifndef HS_CMD_H
#define HS_CMD_H

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} cmd_t;

/* The table, NULL-name terminated (main.c). */
extern const cmd_t hs_commands[];

#endif
