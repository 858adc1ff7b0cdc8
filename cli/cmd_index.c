/*
 * cmd_index.c - the commands about the index as a whole:
 *
 *   mithril stats [--json] [--zero]
 *       counters and sizes; --zero clears the event counters (hits,
 *       misses, puts, evictions, graph, remote, rejected), not sizes.
 *   mithril ls [--json]
 *       one line per entry, least recently used first: key, content
 *       bytes, last access (UTC, ISO 8601).
 *   mithril gc [--max-size SIZE | SIZE] [--json]
 *       evict least recently used entries (then never-used blobs) until
 *       the store is at most SIZE on disk (default: the configured cap).
 *   mithril verify
 *       re-hash every blob, check every entry, repair what it can; prints
 *       each problem; exit 4 when anything was wrong, 0 when clean.
 *   mithril clear
 *       remove every entry and every blob.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- output helpers ---- */

static void
json_str(FILE *out, const char *s)
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

/* "1.5 GiB" style, for people; the JSON forms carry exact bytes. */
static void
human_size(uint64_t n, char *buf, size_t len)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)n;
    int u = 0;

    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    if (u == 0) {
        snprintf(buf, len, "%llu B", (unsigned long long)n);
    } else {
        snprintf(buf, len, "%.1f %s", v, units[u]);
    }
}

static void
iso_time(int64_t ns, char *buf, size_t len)
{
    time_t t = (time_t)(ns / 1000000000);
    struct tm tm;

    if (ns <= 0 || !gmtime_r(&t, &tm)) {
        snprintf(buf, len, "-");
        return;
    }
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Parse the common options plus --json and --zero (when allowed). */
static int
parse_opts(const char *cmd, int argc, char **argv, int allow_zero, int *json,
           int *zero, void (*usage)(FILE *))
{
    static const struct option longopts[] = {
        {"json", no_argument, 0, 'j'},
        {"zero", no_argument, 0, 'z'},
        CLI_COMMON_OPTIONS,
        {0, 0, 0, 0},
    };
    int opt;

    while ((opt = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
        if (opt == 'j' && json) {
            *json = 1;
        } else if (opt == 'z' && allow_zero) {
            *zero = 1;
        } else if (opt == 'h') {
            usage(stdout);
            return -1;
        } else if (!cli_common_opt(opt, optarg)) {
            usage(stderr);
            return CLI_USAGE;
        }
    }
    (void)cmd;
    return 0;
}

/* ---- mithril stats ---- */

static void
stats_usage(FILE *out)
{
    fprintf(out, "usage: mithril stats [--json] [--zero]\n"
                 "Counters and sizes of the store.\n"
                 "  --json  one JSON object (sizes in bytes)\n"
                 "  --zero  reset the event counters (not the sizes)\n");
}

static double
rate(uint64_t hits, uint64_t misses)
{
    return hits + misses ? (double)hits / (double)(hits + misses) : -1;
}

static void
print_rate(FILE *out, const char *name, double r, int json)
{
    if (json) {
        if (r < 0) {
            fprintf(out, "  \"%s\": null,\n", name);
        } else {
            fprintf(out, "  \"%s\": %.4f,\n", name, r);
        }
    } else if (r < 0) {
        fprintf(out, "%-16s -\n", name);
    } else {
        fprintf(out, "%-16s %.1f%%\n", name, 100 * r);
    }
}

static void
stats_json(const mithril_stats *st)
{
    printf("{\n");
    printf("  \"entries\": %llu,\n", (unsigned long long)st->entries);
    printf("  \"size_bytes\": %llu,\n", (unsigned long long)st->size_bytes);
    printf("  \"logical_bytes\": %llu,\n",
           (unsigned long long)st->logical_bytes);
    printf("  \"blobs\": %llu,\n", (unsigned long long)st->blobs);
    printf("  \"max_size_bytes\": %llu,\n",
           (unsigned long long)st->max_size_bytes);
    printf("  \"hits\": %llu,\n", (unsigned long long)st->hits);
    printf("  \"misses\": %llu,\n", (unsigned long long)st->misses);
    print_rate(stdout, "hit_rate", rate(st->hits, st->misses), 1);
    printf("  \"puts\": %llu,\n", (unsigned long long)st->puts);
    printf("  \"evictions\": %llu,\n", (unsigned long long)st->evictions);
    printf("  \"graph_hits\": %llu,\n", (unsigned long long)st->graph_hits);
    printf("  \"graph_misses\": %llu,\n", (unsigned long long)st->graph_misses);
    print_rate(stdout, "graph_hit_rate", rate(st->graph_hits, st->graph_misses),
               1);
    printf("  \"remote_hits\": %llu,\n", (unsigned long long)st->remote_hits);
    printf("  \"remote_misses\": %llu,\n",
           (unsigned long long)st->remote_misses);
    printf("  \"remote_errors\": %llu,\n",
           (unsigned long long)st->remote_errors);
    printf("  \"rejected\": %llu\n", (unsigned long long)st->rejected);
    printf("}\n");
}

static void
stats_table(const mithril_stats *st)
{
    char a[32], b[32], c[32];

    human_size(st->size_bytes, a, sizeof(a));
    human_size(st->max_size_bytes, b, sizeof(b));
    human_size(st->logical_bytes, c, sizeof(c));
    printf("%-16s %llu\n", "entries", (unsigned long long)st->entries);
    printf("%-16s %llu\n", "blobs", (unsigned long long)st->blobs);
    printf("%-16s %s of %s (%.1f%%)\n", "size on disk", a, b,
           st->max_size_bytes
               ? 100.0 * (double)st->size_bytes / (double)st->max_size_bytes
               : 0.0);
    printf("%-16s %s\n", "content size", c);
    printf("%-16s %llu\n", "hits", (unsigned long long)st->hits);
    printf("%-16s %llu\n", "misses", (unsigned long long)st->misses);
    print_rate(stdout, "hit rate", rate(st->hits, st->misses), 0);
    printf("%-16s %llu\n", "puts", (unsigned long long)st->puts);
    printf("%-16s %llu\n", "evictions", (unsigned long long)st->evictions);
    printf("%-16s %llu\n", "graph hits", (unsigned long long)st->graph_hits);
    printf("%-16s %llu\n", "graph misses",
           (unsigned long long)st->graph_misses);
    print_rate(stdout, "graph hit rate", rate(st->graph_hits, st->graph_misses),
               0);
    printf("%-16s %llu\n", "remote hits", (unsigned long long)st->remote_hits);
    printf("%-16s %llu\n", "remote misses",
           (unsigned long long)st->remote_misses);
    printf("%-16s %llu\n", "remote errors",
           (unsigned long long)st->remote_errors);
    printf("%-16s %llu\n", "rejected", (unsigned long long)st->rejected);
}

int
cmd_stats(int argc, char **argv)
{
    int json = 0, zero = 0, rc;
    mithril_store *s;
    mithril_stats st;

    rc = parse_opts("stats", argc, argv, 1, &json, &zero, stats_usage);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    if (optind < argc) {
        return cli_usage("stats", "unexpected argument '%s'", argv[optind]);
    }
    s = cli_open_store(MITHRIL_OPEN_CREATE);
    if (!s) {
        return CLI_FAIL;
    }
    if (zero) {
        rc = mithril_stats_zero(s);
        if (rc < 0) {
            cli_error("cannot zero the counters of", mithril_store_dir(s), rc);
            mithril_store_close(s);
            return cli_exit_for(rc);
        }
        if (!cli.quiet && !json) {
            printf("counters zeroed\n");
        }
    }
    rc = mithril_stats_get(s, &st);
    if (rc < 0) {
        cli_error("cannot read the statistics of", mithril_store_dir(s), rc);
        mithril_store_close(s);
        return cli_exit_for(rc);
    }
    if (json) {
        stats_json(&st);
    } else if (!zero) {
        stats_table(&st);
    }
    mithril_store_close(s);
    return CLI_OK;
}

/* ---- mithril ls ---- */

static void
ls_usage(FILE *out)
{
    fprintf(out, "usage: mithril ls [--json]\n"
                 "List entries, least recently used first: key, content "
                 "bytes, last access.\n"
                 "  --json  a JSON array of entries with their items\n");
}

struct ls_ctx {
    int json;
    uint64_t n;
};

static int
ls_one(const mithril_entry *e, void *ctx)
{
    struct ls_ctx *c = ctx;
    char last[40], created[40];
    uint64_t size = 0;
    size_t i;

    for (i = 0; i < e->n_items; i++) {
        size += e->items[i].size;
    }
    iso_time(e->last_access_ns, last, sizeof(last));
    if (!c->json) {
        printf("%s  %llu  %s\n", e->key, (unsigned long long)size, last);
        c->n++;
        return 0;
    }
    iso_time(e->created_ns, created, sizeof(created));
    printf("%s\n  {\"key\": ", c->n ? "," : "");
    json_str(stdout, e->key);
    printf(", \"size\": %llu, \"last_access\": \"%s\", "
           "\"last_access_ns\": %lld, \"created\": \"%s\", "
           "\"hits\": %llu, \"signed\": %s, \"meta\": ",
           (unsigned long long)size, last, (long long)e->last_access_ns,
           created, (unsigned long long)e->hits,
           e->is_signed ? "true" : "false");
    json_str(stdout, e->meta);
    printf(", \"items\": [");
    for (i = 0; i < e->n_items; i++) {
        printf("%s{\"name\": ", i ? ", " : "");
        json_str(stdout, e->items[i].name);
        printf(", \"size\": %llu, \"mode\": \"%04o\", \"addr\": \"%s\"}",
               (unsigned long long)e->items[i].size, e->items[i].mode,
               e->items[i].addr);
    }
    printf("]}");
    c->n++;
    return 0;
}

int
cmd_ls(int argc, char **argv)
{
    struct ls_ctx c = {0, 0};
    mithril_store *s;
    int rc;

    rc = parse_opts("ls", argc, argv, 0, &c.json, NULL, ls_usage);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    if (optind < argc) {
        return cli_usage("ls", "unexpected argument '%s'", argv[optind]);
    }
    s = cli_open_store(MITHRIL_OPEN_CREATE);
    if (!s) {
        return CLI_FAIL;
    }
    if (c.json) {
        printf("[");
    }
    rc = mithril_entry_foreach(s, ls_one, &c);
    if (c.json) {
        printf("%s]\n", c.n ? "\n" : "");
    }
    if (rc < 0) {
        cli_error("cannot list the entries of", mithril_store_dir(s), rc);
    }
    mithril_store_close(s);
    return cli_exit_for(rc);
}

/* ---- mithril gc ---- */

static void
gc_usage(FILE *out)
{
    fprintf(out, "usage: mithril gc [--max-size SIZE | SIZE] [--json]\n"
                 "Evict least recently used entries, then blobs no entry "
                 "uses, until the\n"
                 "store is at most SIZE on disk (500M, 10G; default: the "
                 "configured cap).\n");
}

int
cmd_gc(int argc, char **argv)
{
    char a[32], b[32];
    mithril_gc_result r;
    mithril_store *s;
    uint64_t max = 0;
    int json = 0, rc;

    rc = parse_opts("gc", argc, argv, 0, &json, NULL, gc_usage);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    if (optind < argc) {
        cli.max_size = argv[optind++];
    }
    if (optind < argc) {
        return cli_usage("gc", "unexpected argument '%s'", argv[optind]);
    }
    if (cli.max_size && mithril_parse_size(cli.max_size, &max) < 0) {
        return cli_usage("gc", "bad size '%s' (try 500M, 10G)", cli.max_size);
    }
    s = cli_open_store(MITHRIL_OPEN_CREATE);
    if (!s) {
        return CLI_FAIL;
    }
    if (!max) {
        max = mithril_store_max_size(s);
    }
    rc = mithril_store_gc(s, max, &r);
    if (rc < 0) {
        cli_error("cannot collect garbage in", mithril_store_dir(s), rc);
        mithril_store_close(s);
        return cli_exit_for(rc);
    }
    if (json) {
        printf("{\"entries_removed\": %llu, \"blobs_removed\": %llu, "
               "\"bytes_removed\": %llu, \"size_after\": %llu, "
               "\"max_size_bytes\": %llu}\n",
               (unsigned long long)r.entries_removed,
               (unsigned long long)r.blobs_removed,
               (unsigned long long)r.bytes_removed,
               (unsigned long long)r.size_after, (unsigned long long)max);
    } else if (!cli.quiet) {
        human_size(r.size_after, a, sizeof(a));
        human_size(max, b, sizeof(b));
        printf("removed %llu entries, %llu blobs, %llu bytes; size now %s "
               "(cap %s)\n",
               (unsigned long long)r.entries_removed,
               (unsigned long long)r.blobs_removed,
               (unsigned long long)r.bytes_removed, a, b);
    }
    mithril_store_close(s);
    return CLI_OK;
}

/* ---- mithril verify ---- */

static void
verify_usage(FILE *out)
{
    fprintf(out, "usage: mithril verify\n"
                 "Re-hash every blob (corrupt ones go to quarantine/), "
                 "check every entry\n"
                 "(broken ones are removed), remove dead processes' temp "
                 "files. Exit 4\n"
                 "when anything was wrong, 0 when the store was clean.\n");
}

static void
print_problem(const char *what, const char *which, void *ctx)
{
    (*(uint64_t *)ctx)++;
    printf("%s: %s\n", what, which);
}

int
cmd_verify(int argc, char **argv)
{
    mithril_verify_result r;
    uint64_t problems = 0;
    mithril_store *s;
    int rc;

    rc = parse_opts("verify", argc, argv, 0, NULL, NULL, verify_usage);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    if (optind < argc) {
        return cli_usage("verify", "unexpected argument '%s'", argv[optind]);
    }
    s = cli_open_store(MITHRIL_OPEN_CREATE);
    if (!s) {
        return CLI_FAIL;
    }
    rc = mithril_store_verify(s, print_problem, &problems, &r);
    if (rc < 0) {
        cli_error("cannot verify", mithril_store_dir(s), rc);
        mithril_store_close(s);
        return cli_exit_for(rc);
    }
    if (!cli.quiet) {
        printf("checked %llu blobs and %llu entries: %llu corrupt, "
               "%llu broken entries, %llu temp files removed, %llu "
               "problems\n",
               (unsigned long long)r.blobs_checked,
               (unsigned long long)r.entries_checked,
               (unsigned long long)r.blobs_corrupt,
               (unsigned long long)r.entries_broken,
               (unsigned long long)r.temp_removed,
               (unsigned long long)problems);
    }
    mithril_store_close(s);
    return problems ? CLI_CORRUPT : CLI_OK;
}

/* ---- mithril clear ---- */

static void
clear_usage(FILE *out)
{
    fprintf(out, "usage: mithril clear\n"
                 "Remove every entry and every blob of the store.\n");
}

int
cmd_clear(int argc, char **argv)
{
    mithril_store *s;
    int rc;

    rc = parse_opts("clear", argc, argv, 0, NULL, NULL, clear_usage);
    if (rc != 0) {
        return rc < 0 ? CLI_OK : rc;
    }
    if (optind < argc) {
        return cli_usage("clear", "unexpected argument '%s'", argv[optind]);
    }
    s = cli_open_store(MITHRIL_OPEN_CREATE);
    if (!s) {
        return CLI_FAIL;
    }
    rc = mithril_store_clear(s);
    if (rc < 0) {
        cli_error("cannot clear", mithril_store_dir(s), rc);
    } else if (!cli.quiet) {
        printf("cleared %s\n", mithril_store_dir(s));
    }
    mithril_store_close(s);
    return cli_exit_for(rc);
}
