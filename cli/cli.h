/*
 * cli.h - shared pieces of the mithril command: the command table, the
 * global options, opening the store, and error reporting in one format:
 *   mithril: error: <what failed> '<path>': <reason>
 */
#ifndef MITHRIL_CLI_H
#define MITHRIL_CLI_H

#include "mithril/mithril.h"

#include <getopt.h>

/* Exit status of every command. */
#define CLI_OK      0
#define CLI_NO      1 /* a negative answer: absent, miss */
#define CLI_USAGE   2 /* bad usage or invalid input */
#define CLI_FAIL    3 /* the operation failed */
#define CLI_CORRUPT 4 /* corrupt content found */

/* Options every command accepts, set by main or by the command. */
struct cli_globals {
    const char *dir;      /* --dir */
    const char *remote;   /* --remote */
    const char *max_size; /* --max-size */
    int read_only_remote; /* --remote-read-only */
    int quiet;            /* -q */
};
extern struct cli_globals cli;

/*
 * Long options shared by every command; append to a command's own table
 * with CLI_COMMON_OPTIONS and hand unknown letters to cli_common_opt.
 */
#define CLI_OPT_DIR       1000
#define CLI_OPT_REMOTE    1001
#define CLI_OPT_MAX_SIZE  1002
#define CLI_OPT_REMOTE_RO 1003
#define CLI_COMMON_OPTIONS                                                     \
    {"dir", required_argument, 0, CLI_OPT_DIR},                                \
        {"remote", required_argument, 0, CLI_OPT_REMOTE},                      \
        {"max-size", required_argument, 0, CLI_OPT_MAX_SIZE},                  \
        {"remote-read-only", no_argument, 0, CLI_OPT_REMOTE_RO},               \
        {"quiet", no_argument, 0, 'q'},                                        \
    {                                                                          \
        "help", no_argument, 0, 'h'                                            \
    }

/* 1 if opt was a common option (and was applied), else 0. */
int cli_common_opt(int opt, const char *arg);

/*
 * Open the store: --dir, else MITHRIL_DIR, else the XDG default; applies
 * --max-size and --remote. On failure prints the error and returns NULL.
 */
mithril_store *cli_open_store(unsigned flags);

/* Print "mithril: error: <what> '<path>': <strerror(code)>". */
void cli_error(const char *what, const char *path, int code);
/* Print "mithril: <message>" and the command's usage hint; CLI_USAGE. */
int cli_usage(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Exit status for a library error code. */
int cli_exit_for(int code);

/*
 * The toolchain fingerprint text of this machine, as the Python layer
 * computes it: flag, else $MITHRIL_TOOLCHAIN, else asked of prog (when it
 * is a python) or python3. 0 or a negative code.
 */
int cli_toolchain_text(const char *flag, const char *prog, char *out, size_t n);

/* Commands: argv[0] is the command name; getopt state is reset before. */
typedef int (*cli_cmd_fn)(int argc, char **argv);
int cmd_hash(int argc, char **argv);
int cmd_put(int argc, char **argv);
int cmd_get(int argc, char **argv);
int cmd_exists(int argc, char **argv);
int cmd_delete(int argc, char **argv);
int cmd_key(int argc, char **argv);
int cmd_device(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_gc(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_clear(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_capture(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_push(int argc, char **argv);
int cmd_pull(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_import(int argc, char **argv);

#endif /* MITHRIL_CLI_H */
