/*
 * cmd_remote.c - sharing commands:
 *
 *   mithril push [--toolchain TC | --this-machine] [--remote URL]
 *   mithril pull [--toolchain TC | --this-machine] [--remote URL]
 *   mithril export FILE [--toolchain TC | --this-machine]
 *   mithril import FILE
 *
 * TC is a toolchain tag (16 hex, the tc= of an entry's meta) or the full
 * toolchain text; --this-machine takes the text from $MITHRIL_TOOLCHAIN,
 * else from cli_toolchain_text (the computation `mithril run` uses).
 * On a terminal, progress is one line redrawn with \r on stderr; the
 * result is one summary line on stdout:
 *   pushed N entries, M blobs, B bytes in T s
 * The remote comes from --remote (global or per command) or MITHRIL_REMOTE.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum sync_kind { SYNC_PUSH, SYNC_PULL, SYNC_EXPORT, SYNC_IMPORT };

static const char *const verbs[] = {"push", "pull", "export", "import"};
static const char *const done_verbs[] = {"pushed", "pulled", "exported",
                                         "imported"};

struct progress {
    const char *verb;
    int tty;
    int bytes; /* done/total are bytes, not entries */
    double last;
};

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
show_progress(uint64_t done, uint64_t total, void *ctx)
{
    struct progress *p = ctx;
    double t = now_s();

    if (!p->tty || (t - p->last < 0.1 && done != total)) {
        return;
    }
    p->last = t;
    if (p->bytes) {
        fprintf(stderr, "\r%s: %.1f / %.1f MiB", p->verb,
                (double)done / 1048576.0, (double)total / 1048576.0);
    } else {
        fprintf(stderr, "\r%s: %llu / %llu entries", p->verb,
                (unsigned long long)done, (unsigned long long)total);
    }
    fflush(stderr);
}

static void
usage(FILE *out, int kind)
{
    switch (kind) {
    case SYNC_PUSH:
    case SYNC_PULL:
        fprintf(out,
                "usage: mithril %s [--toolchain TC | --this-machine] "
                "[--remote URL]\n"
                "%s entries %s the Redis remote (redis://HOST:PORT[/DB]).\n",
                verbs[kind], kind == SYNC_PUSH ? "Send" : "Fetch",
                kind == SYNC_PUSH ? "to" : "from");
        break;
    case SYNC_EXPORT:
        fprintf(out, "usage: mithril export FILE [--toolchain TC | "
                     "--this-machine]\n"
                     "Write entries and their blobs into one archive file.\n");
        break;
    default:
        fprintf(out, "usage: mithril import FILE\n"
                     "Load an archive, verifying every blob.\n");
        return;
    }
    fprintf(out,
            "  --toolchain TC    only entries of this toolchain (16-hex tag "
            "or full text)\n"
            "  --this-machine    only entries of $MITHRIL_TOOLCHAIN\n");
}

static int
run_sync(int kind, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"toolchain", required_argument, 0, 't'},
        {"this-machine", no_argument, 0, 'm'},
        CLI_COMMON_OPTIONS,
        {0, 0, 0, 0},
    };
    struct progress prog = {verbs[kind], 0, kind == SYNC_IMPORT, 0};
    mithril_sync_result res = {0};
    const char *toolchain = NULL;
    const char *file = NULL;
    char tc_buf[4096];
    int this_machine = 0;
    mithril_store *s;
    double t0;
    int opt;
    int rc;

    while ((opt = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
        if (opt == 't' && kind != SYNC_IMPORT) {
            toolchain = optarg;
        } else if (opt == 'm' && kind != SYNC_IMPORT) {
            this_machine = 1;
        } else if (opt == 'h') {
            usage(stdout, kind);
            return CLI_OK;
        } else if (!cli_common_opt(opt, optarg)) {
            usage(stderr, kind);
            return CLI_USAGE;
        }
    }
    if (kind == SYNC_EXPORT || kind == SYNC_IMPORT) {
        if (optind + 1 != argc) {
            return cli_usage(verbs[kind], "%s needs one FILE", verbs[kind]);
        }
        file = argv[optind];
    } else if (optind != argc) {
        return cli_usage(verbs[kind], "unexpected argument '%s'", argv[optind]);
    }
    if (this_machine) {
        if (toolchain) {
            return cli_usage(verbs[kind], "--toolchain and --this-machine "
                                          "exclude each other");
        }
        toolchain = getenv("MITHRIL_TOOLCHAIN");
        if ((!toolchain || !*toolchain) &&
            cli_toolchain_text(NULL, NULL, tc_buf, sizeof(tc_buf)) == 0) {
            toolchain = tc_buf;
        }
        if (!toolchain || !*toolchain) {
            return cli_usage(verbs[kind], "--this-machine needs "
                                          "MITHRIL_TOOLCHAIN set");
        }
    }
    s = cli_open_store(MITHRIL_OPEN_CREATE);
    if (!s) {
        return CLI_FAIL;
    }
    prog.tty = !cli.quiet && isatty(2);
    t0 = now_s();
    switch (kind) {
    case SYNC_PUSH:
        rc = mithril_remote_push(s, toolchain, show_progress, &prog, &res);
        break;
    case SYNC_PULL:
        rc = mithril_remote_pull(s, toolchain, show_progress, &prog, &res);
        break;
    case SYNC_EXPORT:
        rc = mithril_archive_export(s, file, toolchain, show_progress, &prog,
                                    &res);
        break;
    default:
        rc = mithril_archive_import(s, file, show_progress, &prog, &res);
        break;
    }
    if (prog.tty && prog.last > 0) {
        fputc('\n', stderr);
    }
    mithril_store_close(s);
    if (rc < 0) {
        cli_error(
            kind == SYNC_PUSH || kind == SYNC_PULL
                ? (kind == SYNC_PUSH ? "push failed" : "pull failed")
                : (kind == SYNC_EXPORT ? "export failed" : "import failed"),
            file ? file : (cli.remote ? cli.remote : ""), rc);
        return cli_exit_for(rc);
    }
    if (!cli.quiet) {
        printf("%s %llu entries, %llu blobs, %llu bytes in %.2f s",
               done_verbs[kind], (unsigned long long)res.entries,
               (unsigned long long)res.files, (unsigned long long)res.bytes,
               now_s() - t0);
        if (res.skipped || res.rejected) {
            printf(" (%llu skipped, %llu rejected)",
                   (unsigned long long)res.skipped,
                   (unsigned long long)res.rejected);
        }
        printf("\n");
    }
    return CLI_OK;
}

int
cmd_push(int argc, char **argv)
{
    return run_sync(SYNC_PUSH, argc, argv);
}

int
cmd_pull(int argc, char **argv)
{
    return run_sync(SYNC_PULL, argc, argv);
}

int
cmd_export(int argc, char **argv)
{
    return run_sync(SYNC_EXPORT, argc, argv);
}

int
cmd_import(int argc, char **argv)
{
    return run_sync(SYNC_IMPORT, argc, argv);
}
