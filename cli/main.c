/*
 * main.c - the mithril command: global options, then dispatch to one of the
 * commands in the table below. Each command lives in a cmd_*.c file.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

struct cmd {
    const char *name;
    cli_cmd_fn fn;
    const char *summary;
};

static const struct cmd commands[] = {
    {"hash", cmd_hash, "print the BLAKE3 address of files (like b3sum)"},
    {"put", cmd_put, "store a file; print its address (--key: an entry)"},
    {"get", cmd_get, "write the content at ADDRESS (or --key KEY)"},
    {"exists", cmd_exists, "exit 0 if ADDRESS is stored, 1 if not"},
    {"delete", cmd_delete, "remove a blob (ADDRESS) or an entry (--key)"},
    {"key", cmd_key, "print the storage key of a graph, inputs, device"},
    {"device", cmd_device, "print this machine's device class"},
    {"stats", cmd_stats, "counters and sizes (--json, --zero)"},
    {"ls", cmd_ls, "list entries: key, size, last access"},
    {"gc", cmd_gc, "evict least recently used entries down to the cap"},
    {"verify", cmd_verify, "re-hash every blob, check every entry"},
    {"clear", cmd_clear, "remove every entry and blob"},
    {"config", cmd_config, "effective configuration and its sources"},
    {"run", cmd_run, "run a command with torch caches through mithril"},
    {"capture", cmd_capture, "capture a torch cache folder into the store"},
    {"restore", cmd_restore, "restore entries into a torch cache folder"},
    {"push", cmd_push, "send entries to the remote"},
    {"pull", cmd_pull, "fetch entries from the remote"},
    {"export", cmd_export, "write entries and blobs to an archive file"},
    {"import", cmd_import, "load an archive file, verifying every blob"},
};

static void
usage(FILE *out)
{
    size_t i;

    fprintf(out, "usage: mithril [--dir DIR] [--max-size SIZE] [--remote URL]"
                 " COMMAND ...\n\n");
    for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(out, "\nmithril COMMAND --help shows a command's options.\n");
}

int
main(int argc, char **argv)
{
    int i = 1;
    size_t c;

    /* Global options before the command name. */
    while (i < argc && argv[i][0] == '-') {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
            cli.dir = argv[i + 1];
            i += 2;
        } else if (!strncmp(argv[i], "--dir=", 6)) {
            cli.dir = argv[i] + 6;
            i++;
        } else if (!strcmp(argv[i], "--remote") && i + 1 < argc) {
            cli.remote = argv[i + 1];
            i += 2;
        } else if (!strcmp(argv[i], "--max-size") && i + 1 < argc) {
            cli.max_size = argv[i + 1];
            i += 2;
        } else if (!strcmp(argv[i], "--remote-read-only")) {
            cli.read_only_remote = 1;
            i++;
        } else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
            cli.quiet = 1;
            i++;
        } else if (!strcmp(argv[i], "--version")) {
            printf("mithril %s\n", MITHRIL_VERSION);
            return CLI_OK;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return CLI_OK;
        } else {
            fprintf(stderr, "mithril: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return CLI_USAGE;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return CLI_USAGE;
    }
    for (c = 0; c < sizeof(commands) / sizeof(commands[0]); c++) {
        if (!strcmp(argv[i], commands[c].name)) {
            optind = 1;
            return commands[c].fn(argc - i, argv + i);
        }
    }
    fprintf(stderr, "mithril: unknown command '%s'\n", argv[i]);
    usage(stderr);
    return CLI_USAGE;
}
