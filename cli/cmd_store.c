/*
 * cmd_store.c - the blob commands: put, get, exists, delete.
 *
 *   mithril put FILE [--key KEY]       store FILE ("-": standard input) and
 *                                      print its address; with --key also
 *                                      record an entry of one item (the
 *                                      file's base name, size and mode)
 *   mithril get ADDRESS|--key KEY [-o OUT]
 *                                      content to standard output, or to
 *                                      OUT (published atomically)
 *   mithril exists ADDRESS             exit 0 if stored, 1 if not
 *   mithril delete ADDRESS|--key KEY   remove a blob or an entry
 *
 * Nothing reaches standard output or OUT unless the content verified: a
 * corrupt blob prints one error naming the address, is moved to the
 * store's quarantine, and exits CLI_CORRUPT. A malformed address is
 * refused (CLI_USAGE) before the store is opened.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OPT_KEY 'k'

struct store_opts {
    const char *key;
    const char *out;
    const char *arg; /* the one positional argument, if any */
};

static void
usage(const char *cmd, FILE *out)
{
    if (!strcmp(cmd, "put")) {
        fprintf(out, "usage: mithril put FILE [--key KEY]\n"
                     "Store FILE ('-': standard input); print its address.\n"
                     "  --key KEY  also record an entry of this one file "
                     "under KEY\n");
    } else if (!strcmp(cmd, "get")) {
        fprintf(out, "usage: mithril get ADDRESS|--key KEY [-o OUT]\n"
                     "Write the content at ADDRESS (or the first file of "
                     "the entry KEY)\nto standard output, or to OUT.\n"
                     "  -o, --output OUT  write OUT atomically instead\n"
                     "  --key KEY         look the entry KEY up\n");
    } else if (!strcmp(cmd, "exists")) {
        fprintf(out, "usage: mithril exists ADDRESS\n"
                     "Exit 0 if ADDRESS is stored, 1 if not.\n");
    } else {
        fprintf(out, "usage: mithril delete ADDRESS|--key KEY\n"
                     "Remove the blob ADDRESS, or the entry KEY.\n");
    }
}

/*
 * Parse a command's options. allow: "k" for --key, "o" for -o. Returns
 * -1 to go on, else the exit status.
 */
static int
parse(int argc, char **argv, const char *allow, struct store_opts *o)
{
    static const struct option longopts[] = {
        {"key", required_argument, 0, OPT_KEY},
        {"output", required_argument, 0, 'o'},
        CLI_COMMON_OPTIONS,
        {0, 0, 0, 0},
    };
    const char *cmd = argv[0];
    int opt;

    memset(o, 0, sizeof(*o));
    while ((opt = getopt_long(argc, argv, "o:qh", longopts, NULL)) != -1) {
        if (opt == 'h') {
            usage(cmd, stdout);
            return CLI_OK;
        } else if (opt == OPT_KEY && strchr(allow, 'k')) {
            o->key = optarg;
        } else if (opt == 'o' && strchr(allow, 'o')) {
            o->out = optarg;
        } else if (!cli_common_opt(opt, optarg)) {
            if (opt == OPT_KEY || opt == 'o') {
                return cli_usage(cmd, "option '%s' does not apply here",
                                 opt == 'o' ? "-o" : "--key");
            }
            usage(cmd, stderr);
            return CLI_USAGE;
        }
    }
    if (optind < argc) {
        o->arg = argv[optind++];
    }
    if (optind < argc) {
        return cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
    }
    return -1;
}

/* CLI_OK if text is an address, else a usage error naming it. */
static int
check_address(const char *cmd, const char *text)
{
    if (mithril_addr_valid(text)) {
        return CLI_OK;
    }
    return cli_usage(cmd, "bad address '%s' (want 64 lowercase hex characters)",
                     text);
}

/* The one way a corrupt blob is reported. */
static int
report_corrupt(const char *addr)
{
    fprintf(stderr,
            "mithril: error: corrupt blob '%s': content does not match "
            "its address (moved to quarantine)\n",
            addr);
    return CLI_CORRUPT;
}

/*
 * Record the entry key -> the one file at path. Returns an exit status, or
 * MITHRIL_ENOTFOUND when the blob vanished and may_retry is set.
 */
static int
put_entry(mithril_store *s, const char *key, const char *path, const char *addr,
          int may_retry)
{
    mithril_item item;
    mithril_blob_info info;
    struct stat st;
    char copy[PATH_MAX];
    int rc;

    memset(&item, 0, sizeof(item));
    snprintf(copy, sizeof(copy), "%s", path);
    item.name = strcmp(path, "-") ? basename(copy) : "stdin";
    item.mode = 0644;
    if (strcmp(path, "-") && stat(path, &st) == 0) {
        item.mode = st.st_mode & 07777;
    }
    rc = mithril_store_blob_info(s, addr, &info);
    if (rc == 0) {
        item.size = info.logical_size;
        memcpy(item.addr, addr, MITHRIL_HEX_SIZE);
        rc = mithril_entry_put(s, key, &item, 1, NULL);
    }
    if (rc == MITHRIL_ENOTFOUND && may_retry) {
        return rc;
    }
    if (rc < 0) {
        cli_error("cannot record entry", key, rc);
        return cli_exit_for(rc);
    }
    return CLI_OK;
}

int
cmd_put(int argc, char **argv)
{
    struct store_opts o;
    char addr[MITHRIL_HEX_SIZE];
    mithril_store *s;
    int status, rc, tries;

    if ((status = parse(argc, argv, "k", &o)) >= 0) {
        return status;
    }
    if (!o.arg) {
        return cli_usage("put", "which FILE?");
    }
    s = cli_open_store(MITHRIL_OPEN_CREATE);
    if (!s) {
        return CLI_FAIL;
    }
    for (tries = 0;; tries++) {
        if (!strcmp(o.arg, "-")) {
            rc = mithril_store_put_fd(s, 0, addr);
        } else {
            rc = mithril_store_put_file(s, o.arg, addr);
        }
        if (rc < 0) {
            cli_error("cannot store", o.arg, rc);
            status = rc == -ENOENT || rc == -EISDIR ? CLI_USAGE : CLI_FAIL;
            goto out;
        }
        if (!o.key) {
            status = CLI_OK;
            break;
        }
        /*
         * A gc in another process may evict the blob between the put and
         * the entry (nothing refers to it yet): store it again and retry.
         */
        status = put_entry(s, o.key, o.arg, addr,
                           tries < 5 && strcmp(o.arg, "-") != 0);
        if (status != MITHRIL_ENOTFOUND) {
            break;
        }
    }
    if (status == CLI_OK) {
        printf("%s\n", addr);
    }
out:
    mithril_store_close(s);
    return status;
}

/* The address and mode of the first item of the entry key. */
static int
entry_first(mithril_store *s, const char *key, char addr[MITHRIL_HEX_SIZE],
            unsigned *mode)
{
    mithril_entry *e = NULL;
    int rc = mithril_entry_get(s, key, &e);

    if (rc == MITHRIL_ENOTFOUND) {
        if (!cli.quiet) {
            fprintf(stderr, "mithril: no entry '%s'\n", key);
        }
        return CLI_NO;
    }
    if (rc < 0) {
        cli_error("cannot look up", key, rc);
        return cli_exit_for(rc);
    }
    if (e->n_items == 0) {
        mithril_entry_free(e);
        if (!cli.quiet) {
            fprintf(stderr, "mithril: entry '%s' holds no file\n", key);
        }
        return CLI_NO;
    }
    memcpy(addr, e->items[0].addr, MITHRIL_HEX_SIZE);
    *mode = e->items[0].mode & 07777;
    mithril_entry_free(e);
    return CLI_OK;
}

int
cmd_get(int argc, char **argv)
{
    struct store_opts o;
    char addr[MITHRIL_HEX_SIZE];
    mithril_store *s;
    mode_t mask;
    unsigned mode;
    int status, rc;

    if ((status = parse(argc, argv, "ko", &o)) >= 0) {
        return status;
    }
    if (!o.key == !o.arg) {
        return cli_usage("get", "give ADDRESS or --key KEY (one of them)");
    }
    if (o.arg && (status = check_address("get", o.arg)) != CLI_OK) {
        return status;
    }
    mask = umask(0);
    umask(mask);
    mode = 0666 & ~mask;
    s = cli_open_store(MITHRIL_OPEN_CREATE);
    if (!s) {
        return CLI_FAIL;
    }
    if (o.key) {
        status = entry_first(s, o.key, addr, &mode);
        if (status != CLI_OK) {
            goto out;
        }
    } else {
        memcpy(addr, o.arg, MITHRIL_HEX_SIZE);
    }
    status = CLI_OK;
    if (o.out && !strcmp(o.out, "-")) {
        o.out = NULL; /* "-o -": standard output */
    }
    if (o.out) {
        rc = mithril_store_get_file(s, addr, o.out, mode);
    } else {
        rc = mithril_store_get_fd(s, addr, STDOUT_FILENO);
    }
    if (rc == MITHRIL_ECORRUPT) {
        status = report_corrupt(addr);
    } else if (rc == MITHRIL_ENOTFOUND) {
        if (!cli.quiet) {
            fprintf(stderr, "mithril: no blob '%s'\n", addr);
        }
        status = CLI_NO;
    } else if (rc < 0) {
        cli_error("cannot get", o.out ? o.out : addr, rc);
        status = cli_exit_for(rc);
    }
out:
    mithril_store_close(s);
    return status;
}

int
cmd_exists(int argc, char **argv)
{
    struct store_opts o;
    mithril_store *s;
    int status, rc;

    if ((status = parse(argc, argv, "", &o)) >= 0) {
        return status;
    }
    if (!o.arg) {
        return cli_usage("exists", "which ADDRESS?");
    }
    if ((status = check_address("exists", o.arg)) != CLI_OK) {
        return status;
    }
    s = cli_open_store(MITHRIL_OPEN_CREATE);
    if (!s) {
        return CLI_FAIL;
    }
    rc = mithril_store_exists(s, o.arg);
    if (rc < 0) {
        cli_error("cannot check", o.arg, rc);
        status = cli_exit_for(rc);
    } else {
        status = rc ? CLI_OK : CLI_NO;
    }
    mithril_store_close(s);
    return status;
}

int
cmd_delete(int argc, char **argv)
{
    struct store_opts o;
    mithril_store *s;
    int status, rc;

    if ((status = parse(argc, argv, "k", &o)) >= 0) {
        return status;
    }
    if (!o.key == !o.arg) {
        return cli_usage("delete", "give ADDRESS or --key KEY (one of them)");
    }
    if (o.arg && (status = check_address("delete", o.arg)) != CLI_OK) {
        return status;
    }
    s = cli_open_store(MITHRIL_OPEN_CREATE);
    if (!s) {
        return CLI_FAIL;
    }
    if (o.key) {
        rc = mithril_entry_delete(s, o.key);
    } else {
        rc = mithril_store_delete(s, o.arg);
    }
    if (rc == MITHRIL_ENOTFOUND) {
        if (!cli.quiet) {
            fprintf(stderr, "mithril: no %s '%s'\n", o.key ? "entry" : "blob",
                    o.key ? o.key : o.arg);
        }
        status = CLI_NO;
    } else if (rc < 0) {
        cli_error("cannot delete", o.key ? o.key : o.arg, rc);
        status = cli_exit_for(rc);
    } else {
        status = CLI_OK;
    }
    mithril_store_close(s);
    return status;
}
