/*
 * bench_index.c - `bench_index DIR [max_entries]`: latency of index
 * lookups at 1k, 100k and 1M entries, the cost of opening a big index in
 * a fresh process, and of evicting a tenth of it. Prints "key value"
 * lines:
 *   fill_s_<n>                 bulk filling time (not the measured path)
 *   lookup_p50_us_<n>, lookup_p99_us_<n>   mithril_entry_get of random
 *                              present keys (recency batching included)
 *   miss_p50_us_<n>            mithril_entry_get of absent keys
 *   open_ms_<n>                a fresh process: mithril_store_open and the
 *                              first lookup, measured inside the child
 *   evict_10pct_ms_<n>         mithril_store_gc down to 90% of the size
 * where <n> is 1k, 100k, 1m (sizes above max_entries are skipped).
 *
 * Entries are filled through the bulk path (mi_index_bulk_*): 64-hex keys
 * like real storage keys, one item each, each with its own blob row of
 * 4 KiB whose file does not exist (eviction unlinks a missing file). Each
 * size gets a fresh store DIR/index-<n>-<pid>, removed at the end.
 */
#include "index.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N_LOOKUPS 20000

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t
next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void
key_of(uint64_t i, char key[MITHRIL_HEX_SIZE])
{
    uint8_t d[32];

    mithril_blake3_hash(&i, sizeof(i), d);
    mithril_hex(d, 32, key);
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double
pct(double *v, size_t n, double p)
{
    return v[(size_t)(p * (double)(n - 1))];
}

static mithril_store *
open_store(const char *dir)
{
    mithril_store *s = NULL;
    int rc = mithril_store_open(
        dir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG, &s);

    if (rc < 0) {
        fprintf(stderr, "open %s: %s\n", dir, mithril_strerror(rc));
        exit(2);
    }
    mithril_store_set_max_size(s, 1ULL << 50);
    return s;
}

static int
fill(mithril_store *s, uint64_t n)
{
    char key[MITHRIL_HEX_SIZE], blob[MITHRIL_HEX_SIZE];
    mithril_item it;
    uint64_t i, b;
    int rc;

    if ((rc = mi_index_bulk_begin(s)) < 0) {
        return rc;
    }
    for (i = 0; i < n; i++) {
        key_of(i, key);
        b = i | (1ULL << 63);
        key_of(b, blob);
        it.name = "fxgraph/entry.bin";
        it.size = 4096;
        it.mode = 0644;
        memcpy(it.addr, blob, MITHRIL_HEX_SIZE);
        if ((rc = mi_index_bulk_put(s, key, &it, 1, "tc=bench")) < 0) {
            mi_index_bulk_end(s);
            return rc;
        }
    }
    return mi_index_bulk_end(s);
}

static void
lookups(mithril_store *s, uint64_t n, const char *tag)
{
    static double t[N_LOOKUPS];
    char key[MITHRIL_HEX_SIZE];
    mithril_entry *e;
    double t0;
    size_t i;
    int rc;

    for (i = 0; i < N_LOOKUPS; i++) {
        key_of(next() % n, key);
        t0 = now_us();
        rc = mithril_entry_get(s, key, &e);
        t[i] = now_us() - t0;
        if (rc < 0) {
            fprintf(stderr, "lookup: %s\n", mithril_strerror(rc));
            exit(2);
        }
        mithril_entry_free(e);
    }
    qsort(t, N_LOOKUPS, sizeof(t[0]), cmp_double);
    printf("lookup_p50_us_%s %.2f\n", tag, pct(t, N_LOOKUPS, 0.50));
    printf("lookup_p99_us_%s %.2f\n", tag, pct(t, N_LOOKUPS, 0.99));
    for (i = 0; i < N_LOOKUPS; i++) {
        key_of(next() | (1ULL << 62), key);
        t0 = now_us();
        rc = mithril_entry_get(s, key, &e);
        t[i] = now_us() - t0;
    }
    qsort(t, N_LOOKUPS, sizeof(t[0]), cmp_double);
    printf("miss_p50_us_%s %.2f\n", tag, pct(t, N_LOOKUPS, 0.50));
}

/* Open and look up once in a fresh process; the child times itself. */
static void
fresh_open(const char *dir, const char *tag)
{
    char key[MITHRIL_HEX_SIZE];
    double ms = -1;
    int fds[2], status;
    pid_t pid;

    if (pipe(fds) < 0) {
        return;
    }
    key_of(7, key);
    pid = fork();
    if (pid == 0) {
        mithril_store *s = NULL;
        mithril_entry *e = NULL;
        double t0 = now_us();
        int rc = mithril_store_open(dir, MITHRIL_OPEN_NO_CONFIG, &s);

        rc = rc < 0 ? rc : mithril_entry_get(s, key, &e);
        ms = (now_us() - t0) / 1000;
        mithril_entry_free(e);
        if (s) {
            mithril_store_close(s);
        }
        if (rc < 0) {
            ms = -1;
        }
        if (write(fds[1], &ms, sizeof(ms)) != sizeof(ms)) {
            _exit(1);
        }
        _exit(0);
    }
    close(fds[1]);
    if (read(fds[0], &ms, sizeof(ms)) != sizeof(ms)) {
        ms = -1;
    }
    close(fds[0]);
    waitpid(pid, &status, 0);
    printf("open_ms_%s %.2f\n", tag, ms);
}

static void
evict_tenth(mithril_store *s, const char *tag)
{
    mithril_gc_result r;
    mithril_stats st;
    double t0;
    int rc;

    if (mithril_stats_get(s, &st) < 0) {
        return;
    }
    t0 = now_us();
    rc = mithril_store_gc(s, st.size_bytes / 10 * 9, &r);
    if (rc < 0) {
        fprintf(stderr, "gc: %s\n", mithril_strerror(rc));
        return;
    }
    printf("evict_10pct_ms_%s %.1f\n", tag, (now_us() - t0) / 1000);
    printf("evicted_entries_%s %llu\n", tag,
           (unsigned long long)r.entries_removed);
}

int
main(int argc, char **argv)
{
    static const struct {
        uint64_t n;
        const char *tag;
    } sizes[] = {{1000, "1k"}, {100000, "100k"}, {1000000, "1m"}};
    uint64_t max = argc > 2 ? strtoull(argv[2], NULL, 10) : 1000000;
    char dir[4096], cmd[4200];
    mithril_store *s;
    double t0;
    size_t i;
    int rc;

    if (argc < 2) {
        fprintf(stderr, "usage: bench_index DIR [max_entries]\n");
        return 2;
    }
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        if (sizes[i].n > max) {
            continue;
        }
        snprintf(dir, sizeof(dir), "%s/index-%s-%ld", argv[1], sizes[i].tag,
                 (long)getpid());
        s = open_store(dir);
        t0 = now_us();
        if ((rc = fill(s, sizes[i].n)) < 0) {
            fprintf(stderr, "fill: %s\n", mithril_strerror(rc));
            return 1;
        }
        printf("fill_s_%s %.2f\n", sizes[i].tag, (now_us() - t0) / 1e6);
        fflush(stdout);
        lookups(s, sizes[i].n, sizes[i].tag);
        mithril_store_flush(s);
        fflush(stdout);
        fresh_open(dir, sizes[i].tag);
        evict_tenth(s, sizes[i].tag);
        fflush(stdout);
        mithril_store_close(s);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not remove %s\n", dir);
        }
    }
    return 0;
}
