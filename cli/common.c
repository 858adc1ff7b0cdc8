/*
 * common.c - what every command shares: global options, opening the store
 * the way the README describes, and the one error format.
 */
#include "cli.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cli_globals cli;

int
cli_common_opt(int opt, const char *arg)
{
    switch (opt) {
    case CLI_OPT_DIR:
        cli.dir = arg;
        return 1;
    case CLI_OPT_REMOTE:
        cli.remote = arg;
        return 1;
    case CLI_OPT_MAX_SIZE:
        cli.max_size = arg;
        return 1;
    case CLI_OPT_REMOTE_RO:
        cli.read_only_remote = 1;
        return 1;
    case 'q':
        cli.quiet = 1;
        return 1;
    default:
        return 0;
    }
}

static void
log_to_stderr(int level, const char *msg, void *ctx)
{
    (void)ctx;
    fprintf(stderr, "mithril: %s: %s\n",
            level >= MITHRIL_LOG_ERROR  ? "error"
            : level >= MITHRIL_LOG_WARN ? "warning"
                                        : "info",
            msg);
}

mithril_store *
cli_open_store(unsigned flags)
{
    char dir[PATH_MAX];
    mithril_store *s = NULL;
    uint64_t size;
    int rc;

    if (getenv("MITHRIL_DEBUG")) {
        mithril_set_log(log_to_stderr, NULL, MITHRIL_LOG_DEBUG);
    } else {
        mithril_set_log(log_to_stderr, NULL, MITHRIL_LOG_WARN);
    }
    if (cli.dir) {
        snprintf(dir, sizeof(dir), "%s", cli.dir);
    } else if ((rc = mithril_default_dir(dir, sizeof(dir))) < 0) {
        cli_error("cannot find the store folder", "", rc);
        return NULL;
    }
    rc = mithril_store_open(dir, flags, &s);
    if (rc < 0) {
        cli_error("cannot open store", dir, rc);
        return NULL;
    }
    if (cli.max_size) {
        if (mithril_parse_size(cli.max_size, &size) < 0) {
            fprintf(stderr, "mithril: error: bad size '%s' (try 500M, 10G)\n",
                    cli.max_size);
            mithril_store_close(s);
            exit(CLI_USAGE);
        }
        mithril_store_set_max_size(s, size);
    }
    if (cli.remote) {
        rc = mithril_store_set_remote(s, cli.remote, cli.read_only_remote);
        if (rc < 0) {
            cli_error("bad remote", cli.remote, rc);
            mithril_store_close(s);
            exit(CLI_USAGE);
        }
    }
    return s;
}

void
cli_error(const char *what, const char *path, int code)
{
    fprintf(stderr, "mithril: error: %s '%s': %s\n", what, path ? path : "",
            mithril_strerror(code));
}

int
cli_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "mithril: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\ntry 'mithril %s --help'\n", cmd);
    return CLI_USAGE;
}

int
cli_exit_for(int code)
{
    switch (code) {
    case 0:
        return CLI_OK;
    case MITHRIL_ENOTFOUND:
        return CLI_NO;
    case MITHRIL_EINVAL:
        return CLI_USAGE;
    case MITHRIL_ECORRUPT:
        return CLI_CORRUPT;
    default:
        return CLI_FAIL;
    }
}
