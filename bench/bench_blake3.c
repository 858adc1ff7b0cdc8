/*
 * bench_blake3.c - BLAKE3 throughput on one thread: `bench_blake3 FILE
 * [repeats]` reads FILE into memory once, hashes it `repeats` times
 * (default 5) with mithril_blake3_hash, and prints, as `key value` lines:
 *   blake3_impl <name>            the implementation in use
 *   blake3_bytes <n>              the file's size
 *   blake3_bytes_per_s <float>    the median over the repeats
 *   blake3_cpu_bytes_per_s <float> the same in thread CPU time (steadier
 *                                 on a busy machine)
 *   blake3_best_bytes_per_s <float> the fastest repeat
 *   blake3_hash <hex>             the digest (to compare with b3sum)
 * MITHRIL_BLAKE3_IMPL=portable|sse41|avx2|avx512 caps the implementation.
 */
#include "mithril/mithril.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double
clock_s(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/* The median of n sorted values. */
static double
median(const double *v, int n)
{
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static unsigned char *
read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long n;

    if (!f) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        goto out;
    }
    /*
     * Page-aligned, as b3sum's mapping of the file is (malloc's large
     * blocks start 16 bytes into a page: every 64-byte load would straddle
     * two cache lines).
     */
    if (posix_memalign((void **)&buf, 4096, n > 0 ? (size_t)n : 1) != 0) {
        buf = NULL;
    }
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
        goto out;
    }
    *len = (size_t)n;
out:
    fclose(f);
    return buf;
}

int
main(int argc, char **argv)
{
    uint8_t out[MITHRIL_BLAKE3_OUT_LEN];
    char hex[MITHRIL_HEX_SIZE];
    unsigned char *data;
    double *rates, *cpu_rates, t0, t1, c0, c1;
    size_t len = 0;
    int repeats = 5, i;

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: bench_blake3 FILE [repeats]\n");
        return 2;
    }
    if (argc == 3) {
        repeats = atoi(argv[2]);
        if (repeats < 1) {
            fprintf(stderr, "bench_blake3: bad repeats '%s'\n", argv[2]);
            return 2;
        }
    }
    data = read_file(argv[1], &len);
    if (!data) {
        fprintf(stderr, "bench_blake3: cannot read '%s'\n", argv[1]);
        return 1;
    }
    rates = calloc((size_t)repeats, sizeof(double));
    cpu_rates = calloc((size_t)repeats, sizeof(double));

    /* One untimed pass warms the caches and picks the implementation. */
    mithril_blake3_hash(data, len, out);
    for (i = 0; i < repeats; i++) {
        t0 = clock_s(CLOCK_MONOTONIC);
        c0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
        mithril_blake3_hash(data, len, out);
        c1 = clock_s(CLOCK_THREAD_CPUTIME_ID);
        t1 = clock_s(CLOCK_MONOTONIC);
        rates[i] = t1 > t0 ? (double)len / (t1 - t0) : 0.0;
        cpu_rates[i] = c1 > c0 ? (double)len / (c1 - c0) : 0.0;
    }
    qsort(rates, (size_t)repeats, sizeof(double), cmp_double);
    qsort(cpu_rates, (size_t)repeats, sizeof(double), cmp_double);
    mithril_hex(out, sizeof(out), hex);
    printf("blake3_impl %s\n", mithril_blake3_impl());
    printf("blake3_bytes %zu\n", len);
    printf("blake3_bytes_per_s %.6e\n", median(rates, repeats));
    printf("blake3_cpu_bytes_per_s %.6e\n", median(cpu_rates, repeats));
    printf("blake3_best_bytes_per_s %.6e\n", rates[repeats - 1]);
    printf("blake3_hash %s\n", hex);
    free(cpu_rates);
    free(rates);
    free(data);
    return 0;
}
