/*
 * bench_store.c - `bench_store DIR [FILES]`: throughput and latency of the
 * blob store, printed as "key value" lines.
 *
 * Throughput: FILES (default 4) files of 64 MiB of compressible-ish data
 * (text-like blocks mixed with random ones, about 2:1 under zstd -3) are
 * made once under DIR/data (the runner cats the same files as its floor),
 * then put into a fresh store DIR/store-<pid> with put_file (hash, zstd,
 * fsync, publish), and read back with get_fd into /dev/null, with
 * verification on and then off.
 *   put_bytes_per_s, get_bytes_per_s, get_noverify_bytes_per_s
 * Latency: 4 KiB blobs (half compressible), put one by one, then looked up
 * with exists and read with get (into memory) in a shuffled order.
 *   exists_p50_us, exists_p99_us, get_p50_us, get_p99_us,
 *   small_put_p50_us, exists_miss_p50_us
 * The store is removed at the end; the data files stay for the next run.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB       ((size_t)1 << 20)
#define FILE_SIZE (64 * MIB)
#define SMALL     4096
#define N_SMALL   1000
#define N_LOOKUPS 20000

static uint64_t rng = 0x243F6A8885A308D3ull;

static uint64_t
next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One 4 KiB block: text-like (about 70%) or random. */
static void
fill_block(uint8_t *p, size_t n)
{
    static const char *words[] = {"torch",   "._inductor", " kernel", "(x0, ",
                                  "tl.load", "float32",    "\n    ",  " = "};
    size_t i = 0, k;
    uint64_t v;

    if (next() % 10 < 3) {
        for (i = 0; i < n; i += 8) {
            v = next();
            memcpy(p + i, &v, n - i < 8 ? n - i : 8);
        }
        return;
    }
    while (i < n) {
        const char *w = words[next() % 8];

        for (k = 0; w[k] && i < n; k++) {
            p[i++] = (uint8_t)w[k];
        }
    }
}

static void
fill(uint8_t *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i += SMALL) {
        fill_block(p + i, n - i < SMALL ? n - i : SMALL);
    }
}

static int
make_data(const char *dir, int nfiles)
{
    char path[PATH_MAX];
    struct stat st;
    uint8_t *buf = malloc(MIB);
    size_t done;
    int i, fd;

    if (!buf || mi_mkdirs(dir, 0700) < 0) {
        return -1;
    }
    for (i = 0; i < nfiles; i++) {
        snprintf(path, sizeof(path), "%s/f%02d", dir, i);
        if (stat(path, &st) == 0 && (size_t)st.st_size == FILE_SIZE) {
            continue;
        }
        rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0) {
            free(buf);
            return -1;
        }
        for (done = 0; done < FILE_SIZE; done += MIB) {
            fill(buf, MIB);
            if (mi_write_all(fd, buf, MIB) < 0) {
                close(fd);
                free(buf);
                return -1;
            }
        }
        close(fd);
    }
    free(buf);
    return 0;
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
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);

    qsort(v, n, sizeof(*v), cmp_double);
    return v[i];
}

static int
fail(const char *what, int rc)
{
    fprintf(stderr, "bench_store: %s: %s\n", what, mithril_strerror(rc));
    return 1;
}

/* Throughput of put_file and get_fd over the data files. */
static int
bench_big(mithril_store *s, const char *data, int nfiles)
{
    char path[PATH_MAX];
    char(*addrs)[MITHRIL_HEX_SIZE] = calloc((size_t)nfiles, sizeof(*addrs));
    double t, total = (double)FILE_SIZE * nfiles;
    int i, rc, devnull = open("/dev/null", O_WRONLY);
    int pass;

    if (!addrs || devnull < 0) {
        return 1;
    }
    t = now_s();
    for (i = 0; i < nfiles; i++) {
        snprintf(path, sizeof(path), "%s/f%02d", data, i);
        if ((rc = mithril_store_put_file(s, path, addrs[i])) < 0) {
            return fail("put_file", rc);
        }
    }
    printf("put_bytes_per_s %.0f\n", total / (now_s() - t));
    for (pass = 0; pass < 2; pass++) {
        mithril_store_set_verify(s, pass == 0);
        t = now_s();
        for (i = 0; i < nfiles; i++) {
            if ((rc = mithril_store_get_fd(s, addrs[i], devnull)) < 0) {
                return fail("get_fd", rc);
            }
        }
        printf("%s %.0f\n",
               pass == 0 ? "get_bytes_per_s" : "get_noverify_bytes_per_s",
               total / (now_s() - t));
    }
    mithril_store_set_verify(s, 1);
    {
        mithril_blob_info info;
        uint64_t stored = 0;

        for (i = 0; i < nfiles; i++) {
            if (mithril_store_blob_info(s, addrs[i], &info) == 0) {
                stored += info.stored_size;
            }
        }
        printf("big_compression_ratio %.3f\n", total / (double)stored);
    }
    close(devnull);
    free(addrs);
    return 0;
}

/* Latency of put, exists and get on 4 KiB blobs. */
static int
bench_small(mithril_store *s)
{
    char(*addrs)[MITHRIL_HEX_SIZE] = calloc(N_SMALL, sizeof(*addrs));
    double *lat = calloc(N_LOOKUPS, sizeof(double));
    uint8_t buf[SMALL];
    char miss[MITHRIL_HEX_SIZE];
    void *data;
    size_t len;
    double t;
    int i, rc;

    if (!addrs || !lat) {
        return 1;
    }
    rng = 12345;
    for (i = 0; i < N_SMALL; i++) {
        fill(buf, SMALL);
        t = now_s();
        if ((rc = mithril_store_put(s, buf, SMALL, addrs[i])) < 0) {
            return fail("put", rc);
        }
        lat[i] = (now_s() - t) * 1e6;
    }
    printf("small_put_p50_us %.2f\n", pct(lat, N_SMALL, 0.50));

    for (i = 0; i < N_LOOKUPS; i++) {
        const char *a = addrs[next() % N_SMALL];

        t = now_s();
        rc = mithril_store_exists(s, a);
        lat[i] = (now_s() - t) * 1e6;
        if (rc != 1) {
            return fail("exists", rc < 0 ? rc : MITHRIL_ENOTFOUND);
        }
    }
    printf("exists_p50_us %.2f\n", pct(lat, N_LOOKUPS, 0.50));
    printf("exists_p99_us %.2f\n", pct(lat, N_LOOKUPS, 0.99));

    memset(miss, 'e', 64);
    miss[64] = '\0';
    for (i = 0; i < N_LOOKUPS; i++) {
        miss[next() % 64] = "0123456789abcdef"[next() % 16];
        t = now_s();
        mithril_store_exists(s, miss);
        lat[i] = (now_s() - t) * 1e6;
    }
    printf("exists_miss_p50_us %.2f\n", pct(lat, N_LOOKUPS, 0.50));

    for (i = 0; i < N_LOOKUPS; i++) {
        const char *a = addrs[next() % N_SMALL];

        t = now_s();
        rc = mithril_store_get(s, a, &data, &len);
        if (rc == 0) {
            mithril_free(data);
        }
        lat[i] = (now_s() - t) * 1e6;
        if (rc < 0) {
            return fail("get", rc);
        }
    }
    printf("get_p50_us %.2f\n", pct(lat, N_LOOKUPS, 0.50));
    printf("get_p99_us %.2f\n", pct(lat, N_LOOKUPS, 0.99));
    free(addrs);
    free(lat);
    return 0;
}

int
main(int argc, char **argv)
{
    char data[PATH_MAX / 2], sdir[PATH_MAX / 2], cmd[PATH_MAX + 16];
    mithril_store *s = NULL;
    int nfiles = argc > 2 ? atoi(argv[2]) : 4;
    int rc, status;

    if (argc < 2 || nfiles < 1) {
        fprintf(stderr, "usage: bench_store DIR [FILES]\n");
        return 2;
    }
    snprintf(data, sizeof(data), "%s/data", argv[1]);
    snprintf(sdir, sizeof(sdir), "%s/store-%ld", argv[1], (long)getpid());
    if (make_data(data, nfiles) < 0) {
        fprintf(stderr, "bench_store: cannot write %s: %s\n", data,
                strerror(errno));
        return 1;
    }
    rc = mithril_store_open(sdir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG,
                            &s);
    if (rc < 0) {
        return fail("open", rc);
    }
    printf("data_dir %s\n", data);
    printf("blake3_impl %s\n", mithril_blake3_impl());
    printf("file_bytes %zu\n", FILE_SIZE);
    printf("files %d\n", nfiles);
    fflush(stdout);
    status = bench_big(s, data, nfiles);
    if (status == 0) {
        status = bench_small(s);
    }
    mithril_store_close(s);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sdir);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_store: could not remove %s\n", sdir);
    }
    return status;
}
