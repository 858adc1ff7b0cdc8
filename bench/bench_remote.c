/*
 * bench_remote.c - the Redis tier's throughput: a producer store pushes
 * SIZE_MB of incompressible 4 MiB blobs (one entry each) to the remote,
 * then an empty consumer store pulls them all back (a warm start of a
 * fresh machine). Redis's own counters (INFO) give the requests and bytes
 * a warm start costs the server.
 *
 *   bench_remote DIR URL SIZE_MB
 *
 * DIR is created if needed and receives two stores (producer, consumer)
 * and the disk test's files; they are left there for the caller to
 * delete, so that a later run's pull does not allocate inodes among
 * freshly freed ones (slow on ext4 without a journal, docs/BENCH.md).
 * Prints "key value" lines: remote_push_bytes_per_s,
 * remote_restore_bytes_per_s, remote_restore_requests (commands the server
 * processed during the pull), remote_restore_net_bytes (bytes it sent),
 * local_put_bytes_per_s (storing the same blobs locally through the
 * public put, which also hashes and tries zstd), disk_write_bytes_per_s
 * (the disk's own ceiling for a restore: the same number of 4 MiB files
 * written into the consumer's folder by 8 threads with O_DIRECT and one
 * fsync each, no hashing, no index) and the sizes involved.
 * BENCH_LEVEL=N sets both stores' zstd level (default: the store's own).
 */
#include "mithril/mithril.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BLOB (4u << 20)

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64*: fast incompressible bytes. */
static void
fill(uint8_t *buf, size_t n, uint64_t *state)
{
    uint64_t x = *state;
    size_t i;

    for (i = 0; i + 8 <= n; i += 8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t v = x * 0x2545F4914F6CDD1DULL;
        memcpy(buf + i, &v, 8);
    }
    *state = x;
}

/* The disk ceiling: THREADS writers, files next++ < n, each BLOB bytes. */
#define THREADS 8

struct disk_job {
    const char *dir;
    const uint8_t *buf;
    int n;
    int next;
    int failed;
    pthread_mutex_t mu;
};

static void *
disk_writer(void *arg)
{
    struct disk_job *j = arg;
    char path[4300];
    int i;
    int fd;

    for (;;) {
        pthread_mutex_lock(&j->mu);
        i = j->next < j->n ? j->next++ : -1;
        pthread_mutex_unlock(&j->mu);
        if (i < 0) {
            return NULL;
        }
        snprintf(path, sizeof(path), "%s/f%d", j->dir, i);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_DIRECT, 0600);
        if (fd < 0 || pwrite(fd, j->buf, BLOB, 0) != (ssize_t)BLOB ||
            fsync(fd) < 0) {
            j->failed = errno ? errno : EIO;
        }
        if (fd >= 0) {
            close(fd);
        }
    }
}

/* Bytes per second for n files, or -1 (O_DIRECT refused, a write failed). */
static double
disk_ceiling(const char *base, int n)
{
    struct disk_job j = {.n = n};
    pthread_t t[THREADS];
    char dir[4200];
    uint64_t state = 88172645463325252ULL;
    void *buf = NULL;
    double t0;
    double s;
    int i;

    snprintf(dir, sizeof(dir), "%s/disk-%d", base, (int)getpid());
    if (mkdir(dir, 0700) < 0 || posix_memalign(&buf, 4096, BLOB) != 0) {
        return -1;
    }
    fill(buf, BLOB, &state); /* incompressible, like the restore's */
    j.dir = dir;
    j.buf = buf;
    pthread_mutex_init(&j.mu, NULL);
    t0 = now_s();
    for (i = 0; i < THREADS; i++) {
        pthread_create(&t[i], NULL, disk_writer, &j);
    }
    for (i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    s = now_s() - t0;
    free(buf);
    pthread_mutex_destroy(&j.mu);
    return j.failed ? -1 : (double)n * BLOB / s;
}

/* A field of the server's INFO, or -1. */
static long long
info_field(const char *host, int port, const char *name)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(host, port, tv);
    redisReply *r;
    long long v = -1;
    char *p;

    if (!c || c->err) {
        if (c) {
            redisFree(c);
        }
        return -1;
    }
    r = redisCommand(c, "INFO stats");
    if (r && r->type == REDIS_REPLY_STRING) {
        p = strstr(r->str, name);
        if (p && p[strlen(name)] == ':') {
            v = atoll(p + strlen(name) + 1);
        }
    }
    if (r) {
        freeReplyObject(r);
    }
    redisFree(c);
    return v;
}

int
main(int argc, char **argv)
{
    char pdir[4096];
    char cdir[4096];
    char host[256];
    char key[64];
    mithril_store *p = NULL;
    mithril_store *c = NULL;
    mithril_sync_result r;
    mithril_item item;
    uint64_t state;
    uint8_t *buf;
    long long cmds0;
    long long net0;
    double t0;
    double push_s;
    double pull_s;
    int port;
    int n;
    int i;
    int rc;

    if (argc != 4) {
        fprintf(stderr, "usage: bench_remote DIR URL SIZE_MB\n");
        return 2;
    }
    n = atoi(argv[3]) / 4;
    if (n < 1 || sscanf(argv[2], "redis://%255[^:]:%d", host, &port) != 2) {
        fprintf(stderr, "bench_remote: bad SIZE_MB or URL\n");
        return 2;
    }
    mkdir(argv[1], 0700);
    snprintf(pdir, sizeof(pdir), "%s/producer-%d", argv[1], (int)getpid());
    snprintf(cdir, sizeof(cdir), "%s/consumer-%d", argv[1], (int)getpid());
    if ((rc = mithril_store_open(
             pdir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG, &p)) < 0 ||
        (rc = mithril_store_open(
             cdir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG, &c)) < 0) {
        fprintf(stderr, "bench_remote: open: %s\n", mithril_strerror(rc));
        return 1;
    }
    mithril_store_set_max_size(p, (uint64_t)n * BLOB * 2);
    mithril_store_set_max_size(c, (uint64_t)n * BLOB * 2);
    if (getenv("BENCH_LEVEL")) {
        mithril_store_set_compression(c, atoi(getenv("BENCH_LEVEL")));
        mithril_store_set_compression(p, atoi(getenv("BENCH_LEVEL")));
    }

    /* The producer's content: fresh random bytes, one entry a blob. */
    buf = malloc(BLOB);
    t0 = now_s();
    state = (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();
    for (i = 0; i < n; i++) {
        fill(buf, BLOB, &state);
        rc = mithril_store_put(p, buf, BLOB, item.addr);
        snprintf(key, sizeof(key), "bench/remote/%d", i);
        item.name = key;
        item.size = BLOB;
        item.mode = 0644;
        rc = rc ? rc
                : mithril_entry_put(p, key, &item, 1,
                                    "tc=00000000000000be kind=bench");
        if (rc < 0) {
            fprintf(stderr, "bench_remote: put: %s\n", mithril_strerror(rc));
            return 1;
        }
    }
    free(buf);
    /* What storing the same bytes locally costs: a ceiling for restore. */
    printf("local_put_bytes_per_s %.0f\n", (double)n * BLOB / (now_s() - t0));

    rc = mithril_store_set_remote(p, argv[2], 0);
    rc = rc ? rc : mithril_store_set_remote(c, argv[2], 1);
    t0 = now_s();
    rc = rc ? rc : mithril_remote_push(p, NULL, NULL, NULL, &r);
    push_s = now_s() - t0;
    if (rc < 0 || r.entries != (uint64_t)n) {
        fprintf(stderr, "bench_remote: push: %s\n", mithril_strerror(rc));
        return 1;
    }
    printf("remote_blobs %d\n", n);
    printf("remote_bytes %llu\n", (unsigned long long)n * BLOB);
    printf("remote_push_s %.3f\n", push_s);
    printf("remote_push_bytes_per_s %.0f\n", (double)n * BLOB / push_s);

    cmds0 = info_field(host, port, "total_commands_processed");
    net0 = info_field(host, port, "total_net_output_bytes");
    t0 = now_s();
    rc = mithril_remote_pull(c, NULL, NULL, NULL, &r);
    pull_s = now_s() - t0;
    if (rc < 0 || r.entries != (uint64_t)n) {
        fprintf(stderr, "bench_remote: pull: %s (%llu entries)\n",
                mithril_strerror(rc), (unsigned long long)r.entries);
        return 1;
    }
    printf("remote_restore_s %.3f\n", pull_s);
    printf("remote_restore_bytes_per_s %.0f\n", (double)r.bytes / pull_s);
    printf("remote_restore_entries_per_s %.1f\n", (double)n / pull_s);
    /* Minus the INFO call itself. */
    printf("remote_restore_requests %lld\n",
           info_field(host, port, "total_commands_processed") - cmds0 - 1);
    printf("remote_restore_net_bytes %lld\n",
           info_field(host, port, "total_net_output_bytes") - net0);
    printf("disk_write_bytes_per_s %.0f\n", disk_ceiling(cdir, n));

    mithril_store_close(p);
    mithril_store_close(c);
    return 0;
}
