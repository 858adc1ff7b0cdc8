/*
 * fuzz_cli.c - the command line parsers of the mithril command: every
 * command that only reads its arguments and a store (key, device,
 * config, stats, ls, exists, verify, gc) called with fuzzed argv, the way
 * main() calls them, against a scratch store.
 *
 * Input: byte 0 picks the command; the rest is split at NUL bytes into
 * at most 24 arguments. Arguments that could name another store or a
 * remote (--dir, --remote and their getopt abbreviations) are refused so
 * the fuzzer never touches anything outside its scratch folder. exit()
 * (the CLI calls it for a bad --max-size) is wrapped at link time
 * (-Wl,--wrap=exit) and returns here through longjmp.
 */
#include "cli.h"
#include "fuzz_common.h"

#include <getopt.h>
#include <setjmp.h>

static jmp_buf fuzz_exit_jmp;
static int fuzz_in_cmd;

void __real_exit(int status);

void
__wrap_exit(int status)
{
    if (fuzz_in_cmd) {
        longjmp(fuzz_exit_jmp, 1);
    }
    __real_exit(status);
}

static const struct {
    const char *name;
    cli_cmd_fn fn;
} commands[] = {
    {"key", cmd_key},       {"device", cmd_device}, {"config", cmd_config},
    {"stats", cmd_stats},   {"ls", cmd_ls},         {"exists", cmd_exists},
    {"verify", cmd_verify}, {"gc", cmd_gc},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))
#define MAX_ARGS   24

static char store_dir[PATH_MAX];

static int
arg_allowed(const char *a)
{
    if (!strncmp(a, "--r", 3)) {
        return 0;
    }
    if (!strncmp(a, "--d", 3) && strncmp(a, "--de", 4) != 0) {
        return 0;
    }
    /* "--" ends options: what follows could be read as anything. */
    return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *argv[MAX_ARGS + 2];
    char *copy, *p, *end;
    volatile int argc = 1;
    size_t c;

    if (size < 1) {
        return 0;
    }
    c = data[0] % N_COMMANDS;
    copy = fuzz_strndup(data + 1, size - 1);
    argv[0] = (char *)commands[c].name;
    p = copy;
    end = copy + size - 1;
    while (p < end && argc <= MAX_ARGS) {
        if (!arg_allowed(p)) {
            free(copy);
            return 0;
        }
        argv[argc++] = p;
        p += strlen(p) + 1;
    }
    argv[argc] = NULL;

    if (!store_dir[0]) {
        snprintf(store_dir, sizeof(store_dir), "%s/store", fuzz_scratch());
    }
    memset(&cli, 0, sizeof(cli));
    cli.dir = store_dir;
    cli.quiet = 1;
    optind = 0; /* full reset of glibc's getopt */
    opterr = 0;
    fuzz_in_cmd = 1;
    if (setjmp(fuzz_exit_jmp) == 0) {
        (void)commands[c].fn(argc, argv);
    }
    fuzz_in_cmd = 0;
    fflush(stdout);
    free(copy);
    return 0;
}
