/*
 * cmd_key.c - three commands about what a cached artifact is for:
 *
 *   mithril key --graph HEX64 --input DTYPE:DIMS [--input ...]
 *               --device CLASS [--toolchain TEXT]
 *       prints the storage key (docs/KEYS.md). --device auto means this
 *       machine's class. The output depends on the arguments alone, never
 *       on the machine, user, folder or environment.
 *   mithril device [--json]
 *       prints this machine's device class ("cpu:avx2", "cuda:9.0").
 *   mithril config [--json]
 *       prints each setting of the store as "name = value  (source)".
 *
 * Every malformed flag exits with CLI_USAGE (2) and says which flag and
 * what was expected.
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INPUTS 4096

/* ---- JSON output ---- */

/* A JSON string literal: quotes, escapes, control characters as \u. */
static void
json_string(FILE *out, const char *s)
{
    const unsigned char *p;

    fputc('"', out);
    for (p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            fprintf(out, "\\%c", *p);
        } else if (*p < 0x20) {
            fprintf(out, "\\u%04x", *p);
        } else {
            fputc(*p, out);
        }
    }
    fputc('"', out);
}

/* ---- mithril key ---- */

static void
key_usage(FILE *out)
{
    fprintf(out,
            "usage: mithril key --graph HEX64 --input DTYPE:DIMS "
            "[--input ...]\n"
            "                   --device CLASS [--toolchain TEXT]\n"
            "Print the storage key of a compiled graph.\n"
            "  --graph HEX64     the graph's 32-byte hash, 64 lowercase hex\n"
            "  --input SPEC      one input, in order: float32:8,16  "
            "int64:?,128 (? is\n"
            "                    a dynamic dimension)  float32: (a scalar)\n"
            "  --device CLASS    cpu, cpu:avx2, cuda, cuda:9.0, or auto "
            "(this machine)\n"
            "  --toolchain TEXT  toolchain fingerprint, e.g. "
            "'torch=2.13 triton=3.5'\n");
}

int
cmd_key(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"graph", required_argument, 0, 'g'},
        {"input", required_argument, 0, 'i'},
        {"device", required_argument, 0, 'd'},
        {"toolchain", required_argument, 0, 't'},
        CLI_COMMON_OPTIONS,
        {0, 0, 0, 0},
    };
    const char *graph = NULL, *device = NULL, *toolchain = NULL;
    const char **inputs = NULL;
    size_t n_inputs = 0, i;
    uint8_t hash[32];
    mithril_device dev;
    mithril_key *k = NULL;
    char out[MITHRIL_HEX_SIZE];
    int opt, rc, status = CLI_OK;

    inputs = calloc(MAX_INPUTS, sizeof(*inputs));
    if (!inputs) {
        cli_error("out of memory", "", -ENOMEM);
        return CLI_FAIL;
    }
    while ((opt = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
        if (opt == 'g') {
            graph = optarg;
        } else if (opt == 'i') {
            if (n_inputs == MAX_INPUTS) {
                status = cli_usage("key", "too many --input (at most %d)",
                                   MAX_INPUTS);
                goto out;
            }
            inputs[n_inputs++] = optarg;
        } else if (opt == 'd') {
            device = optarg;
        } else if (opt == 't') {
            toolchain = optarg;
        } else if (opt == 'h') {
            key_usage(stdout);
            goto out;
        } else if (!cli_common_opt(opt, optarg)) {
            key_usage(stderr);
            status = CLI_USAGE;
            goto out;
        }
    }
    if (optind < argc) {
        status = cli_usage("key", "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    if (!graph) {
        status = cli_usage("key", "--graph HEX64 is required");
        goto out;
    }
    if (!device) {
        status = cli_usage("key", "--device CLASS is required "
                                  "(cpu, cpu:avx2, cuda, cuda:9.0, auto)");
        goto out;
    }
    if (mithril_unhex(graph, hash, sizeof(hash)) < 0) {
        status = cli_usage("key",
                           "bad --graph '%s' (want 64 lowercase hex "
                           "characters)",
                           graph);
        goto out;
    }
    if (!strcmp(device, "auto")) {
        rc = mithril_device_detect(&dev);
    } else {
        rc = mithril_device_parse(device, &dev);
    }
    if (rc < 0) {
        status = cli_usage("key",
                           "bad --device '%s' (want cpu, cpu:ISA, cuda, "
                           "cuda:MAJOR.MINOR or auto)",
                           device);
        goto out;
    }

    rc = mithril_key_new(hash, &k);
    if (rc < 0) {
        cli_error("cannot make key", graph, rc);
        status = cli_exit_for(rc);
        goto out;
    }
    for (i = 0; i < n_inputs; i++) {
        if (mithril_key_add_input_text(k, inputs[i]) < 0) {
            status = cli_usage("key",
                               "bad --input '%s' (want DTYPE:DIMS, e.g. "
                               "float32:8,16 or int64:?,128)",
                               inputs[i]);
            goto out;
        }
    }
    if (toolchain && (rc = mithril_key_set_toolchain(k, toolchain)) < 0) {
        status = cli_usage("key", "bad --toolchain: %s", mithril_strerror(rc));
        goto out;
    }
    rc = mithril_key_set_device(k, &dev);
    if (rc == 0) {
        rc = mithril_key_storage(k, out);
    }
    if (rc < 0) {
        cli_error("cannot compute key", graph, rc);
        status = cli_exit_for(rc);
        goto out;
    }
    printf("%s\n", out);

out:
    mithril_key_free(k);
    free(inputs);
    return status;
}

/* ---- mithril device ---- */

/* MITHRIL_DEBUG=1 shows why CUDA was not used (driver absent, ...). */
static void
debug_to_stderr(int level, const char *msg, void *ctx)
{
    (void)level;
    (void)ctx;
    fprintf(stderr, "mithril: debug: %s\n", msg);
}

int
cmd_device(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, 0, 'j'},
        CLI_COMMON_OPTIONS,
        {0, 0, 0, 0},
    };
    mithril_device d;
    char text[32];
    int opt, json = 0, rc;

    while ((opt = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
        if (opt == 'j') {
            json = 1;
        } else if (opt == 'h') {
            printf("usage: mithril device [--json]\n"
                   "Print this machine's device class: cuda:MAJOR.MINOR "
                   "for CUDA device 0,\nelse cpu:ISA.\n");
            return CLI_OK;
        } else if (!cli_common_opt(opt, optarg)) {
            return cli_usage("device", "unknown option");
        }
    }
    if (optind < argc) {
        return cli_usage("device", "unexpected argument '%s'", argv[optind]);
    }
    if (getenv("MITHRIL_DEBUG")) {
        mithril_set_log(debug_to_stderr, NULL, MITHRIL_LOG_DEBUG);
    }
    rc = mithril_device_detect(&d);
    if (rc == 0) {
        rc = mithril_device_format(&d, text, sizeof(text));
    }
    if (rc < 0) {
        cli_error("cannot detect the device", "", rc);
        return cli_exit_for(rc);
    }
    if (!json) {
        printf("%s\n", text);
        return CLI_OK;
    }
    printf("{\"device\": ");
    json_string(stdout, text);
    printf(", \"cpu_isa\": ");
    json_string(stdout, mithril_cpu_isa());
    printf(", \"cuda\": %s", d.kind == MITHRIL_DEVICE_CPU ? "false" : "true");
    if (d.kind == MITHRIL_DEVICE_CUDA_CC) {
        printf(", \"compute_capability\": \"%d.%d\"", d.cc_major, d.cc_minor);
    }
    printf("}\n");
    return CLI_OK;
}

/* ---- mithril config ---- */

struct config_print {
    int json;
    int n;
};

static void
print_setting(const char *name, const char *value, int source, void *ctx)
{
    struct config_print *p = ctx;

    /*
     * --remote was applied by cli_open_store through
     * mithril_store_set_remote, which does not record a source: say so
     * here, where the flag is known.
     */
    if (cli.remote && !strcmp(name, "remote")) {
        value = cli.remote;
        source = MITHRIL_SOURCE_FLAG;
    } else if (cli.remote && !strcmp(name, "remote_read_only")) {
        value = cli.read_only_remote ? "on" : "off";
        source = MITHRIL_SOURCE_FLAG;
    }
    if (!p->json) {
        printf("%s = %s  (%s)\n", name, value, mithril_source_name(source));
        return;
    }
    printf("%s\n  ", p->n ? "," : "{");
    json_string(stdout, name);
    printf(": {\"value\": ");
    json_string(stdout, value);
    printf(", \"source\": \"%s\"}", mithril_source_name(source));
    p->n++;
}

int
cmd_config(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, 0, 'j'},
        CLI_COMMON_OPTIONS,
        {0, 0, 0, 0},
    };
    struct config_print p = {0, 0};
    mithril_store *s;
    int opt, rc;

    while ((opt = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
        if (opt == 'j') {
            p.json = 1;
        } else if (opt == 'h') {
            printf("usage: mithril [--dir DIR] config [--json] "
                   "[--max-size SIZE]\n"
                   "Print each setting as 'name = value  (source)'; "
                   "sources, strongest\nfirst: flag, env (MITHRIL_*), "
                   "file (<store>/config), default.\n");
            return CLI_OK;
        } else if (!cli_common_opt(opt, optarg)) {
            return cli_usage("config", "unknown option");
        }
    }
    if (optind < argc) {
        return cli_usage("config", "unexpected argument '%s'", argv[optind]);
    }
    s = cli_open_store(MITHRIL_OPEN_CREATE);
    if (!s) {
        return CLI_FAIL;
    }
    rc = mithril_config_foreach(s, print_setting, &p);
    if (p.json) {
        printf("%s}\n", p.n ? "\n" : "{");
    }
    mithril_store_close(s);
    if (rc < 0) {
        cli_error("cannot read the configuration", "", rc);
        return cli_exit_for(rc);
    }
    return CLI_OK;
}
