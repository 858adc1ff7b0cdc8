/*
 * stats.c - event counters (hits, misses, puts, evictions, graph and
 * remote outcomes, rejections) shared by every process using a store,
 * without a lock: the small file <store>/stats is mapped MAP_SHARED and
 * each process adds to its own shard with atomic adds; readers sum the
 * shards. Sizes and entry counts are not kept here: they come from the
 * index's exact totals (index.c).
 *
 * On-disk format, version 1 (little-endian, native u64 counters):
 *   0   8 bytes  magic "MITHSTAT"
 *   8   u32      version (1)
 *   12  u32      number of shards (16)
 *   16  u32      counters per shard (16)
 *   20  44 bytes zero
 *   64  shards: 16 x 128 bytes (two cache lines), each 16 u64 counters
 * A process adds to shard pid % 16, so concurrent writers rarely share a
 * cache line. The file is created complete (temp file, then link), so a
 * reader never maps a half-written header.
 *
 * Invariant: counters only grow, except through mithril_stats_zero.
 */
#include "index.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ST_MAGIC    "MITHSTAT"
#define ST_VERSION  1
#define ST_SHARDS   16
#define ST_COUNTERS 16
#define ST_HEADER   64
#define ST_SIZE     (ST_HEADER + ST_SHARDS * ST_COUNTERS * 8)

/* Counter slots in a shard. */
enum {
    SLOT_HITS = 0,
    SLOT_MISSES,
    SLOT_PUTS,
    SLOT_EVICTIONS,
    SLOT_GRAPH_HITS,
    SLOT_GRAPH_MISSES,
    SLOT_REMOTE_HITS,
    SLOT_REMOTE_MISSES,
    SLOT_REMOTE_ERRORS,
    SLOT_REJECTED,
    SLOT_COUNT
};

struct mi_stats {
    unsigned char *map; /* ST_SIZE bytes, NULL when there is no file */
    int writable;
};

static uint64_t *
shard(struct mi_stats *st, unsigned i)
{
    return (uint64_t *)(st->map + ST_HEADER + (size_t)i * ST_COUNTERS * 8);
}

/* Create <store>/stats complete, unless another process did first. */
static int
stats_create(const char *dir, const char *path)
{
    unsigned char buf[ST_SIZE];
    char tmp[PATH_MAX];
    int fd, rc;

    memset(buf, 0, sizeof(buf));
    memcpy(buf, ST_MAGIC, 8);
    buf[8] = ST_VERSION;
    buf[12] = ST_SHARDS;
    buf[16] = ST_COUNTERS;
    fd = mi_temp_open(dir, tmp, 0600);
    if (fd < 0) {
        return fd;
    }
    rc = mi_write_all(fd, buf, sizeof(buf));
    if (rc < 0) {
        close(fd);
        mi_sys.unlink(tmp);
        return rc;
    }
    return mi_publish(fd, tmp, path, MI_PUBLISH_NO_REPLACE);
}

static int
stats_map(mithril_store *s, struct mi_stats *st)
{
    char path[PATH_MAX];
    int ro = (s->flags & MITHRIL_OPEN_READONLY) != 0;
    struct stat sb;
    void *map;
    int fd, rc = 0;

    snprintf(path, sizeof(path), "%s/stats", s->dir);
    fd = open(path, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && !ro) {
        if ((rc = stats_create(s->dir, path)) < 0) {
            return rc;
        }
        fd = open(path, O_RDWR | O_CLOEXEC);
    }
    if (fd < 0) {
        return errno == ENOENT ? 0 : mi_log_errno("open", path);
    }
    if (fstat(fd, &sb) < 0) {
        rc = mi_log_errno("fstat", path);
        goto out;
    }
    if (sb.st_size < ST_SIZE) {
        mi_log(MITHRIL_LOG_ERROR, "stats file '%s' is truncated", path);
        rc = MITHRIL_EFORMAT;
        goto out;
    }
    map = mmap(NULL, ST_SIZE, PROT_READ | (ro ? 0 : PROT_WRITE), MAP_SHARED, fd,
               0);
    if (map == MAP_FAILED) {
        rc = mi_log_errno("mmap", path);
        goto out;
    }
    if (memcmp(map, ST_MAGIC, 8) != 0 ||
        ((unsigned char *)map)[8] != ST_VERSION ||
        ((unsigned char *)map)[12] != ST_SHARDS ||
        ((unsigned char *)map)[16] != ST_COUNTERS) {
        mi_log(MITHRIL_LOG_ERROR, "stats file '%s': unknown format", path);
        munmap(map, ST_SIZE);
        rc = MITHRIL_EFORMAT;
        goto out;
    }
    st->map = map;
    st->writable = !ro;

out:
    close(fd);
    return rc;
}

int
mi_stats_open(mithril_store *s)
{
    struct mi_stats *st;
    int rc = 0;

    pthread_mutex_lock(&s->index_mu);
    if (s->stats) {
        goto out;
    }
    st = calloc(1, sizeof(*st));
    if (!st) {
        rc = -ENOMEM;
        goto out;
    }
    rc = stats_map(s, st);
    if (rc < 0) {
        free(st);
        goto out;
    }
    __atomic_store_n(&s->stats, st, __ATOMIC_RELEASE);

out:
    pthread_mutex_unlock(&s->index_mu);
    return rc;
}

void
mi_stats_close(mithril_store *s)
{
    if (!s->stats) {
        return;
    }
    if (s->stats->map) {
        munmap(s->stats->map, ST_SIZE);
    }
    free(s->stats);
    s->stats = NULL;
}

static int
get_stats(mithril_store *s, struct mi_stats **out)
{
    int rc;

    if (!s) {
        return MITHRIL_EINVAL;
    }
    if (!__atomic_load_n(&s->stats, __ATOMIC_ACQUIRE) &&
        (rc = mi_stats_open(s)) < 0) {
        return rc;
    }
    *out = s->stats;
    return 0;
}

static void
add_slot(mithril_store *s, int slot, uint64_t n)
{
    struct mi_stats *st;

    if (get_stats(s, &st) < 0 || !st->map || !st->writable) {
        return; /* counters are best effort; never fail the operation */
    }
    __atomic_fetch_add(&shard(st, (unsigned)getpid() % ST_SHARDS)[slot], n,
                       __ATOMIC_RELAXED);
}

void
mi_stats_add(mithril_store *s, int counter, uint64_t n)
{
    switch (counter) {
    case MI_C_HITS:
        add_slot(s, SLOT_HITS, n);
        break;
    case MI_C_MISSES:
        add_slot(s, SLOT_MISSES, n);
        break;
    case MI_C_PUTS:
        add_slot(s, SLOT_PUTS, n);
        break;
    case MI_C_EVICTIONS:
        add_slot(s, SLOT_EVICTIONS, n);
        break;
    default:
        break;
    }
}

int
mithril_stats_add(mithril_store *s, int counter, uint64_t n)
{
    if (counter < MITHRIL_COUNTER_GRAPH_HIT ||
        counter > MITHRIL_COUNTER_REJECTED || !s) {
        return MITHRIL_EINVAL;
    }
    add_slot(s, SLOT_GRAPH_HITS + counter, n);
    return 0;
}

int
mithril_stats_get(mithril_store *s, mithril_stats *out)
{
    uint64_t sum[SLOT_COUNT];
    struct mi_totals t;
    struct mi_stats *st;
    unsigned i, j;
    int rc;

    if (!out) {
        return MITHRIL_EINVAL;
    }
    if ((rc = get_stats(s, &st)) < 0) {
        return rc;
    }
    if ((rc = mi_index_totals(s, &t)) < 0) {
        return rc;
    }
    memset(sum, 0, sizeof(sum));
    for (i = 0; st->map && i < ST_SHARDS; i++) {
        for (j = 0; j < SLOT_COUNT; j++) {
            sum[j] += __atomic_load_n(&shard(st, i)[j], __ATOMIC_RELAXED);
        }
    }
    memset(out, 0, sizeof(*out));
    out->entries = t.entries;
    out->size_bytes = t.size_bytes;
    out->logical_bytes = t.logical_bytes;
    out->blobs = t.blobs;
    out->hits = sum[SLOT_HITS];
    out->misses = sum[SLOT_MISSES];
    out->puts = sum[SLOT_PUTS];
    out->evictions = sum[SLOT_EVICTIONS];
    out->max_size_bytes = mi_index_cap(s);
    out->graph_hits = sum[SLOT_GRAPH_HITS];
    out->graph_misses = sum[SLOT_GRAPH_MISSES];
    out->remote_hits = sum[SLOT_REMOTE_HITS];
    out->remote_misses = sum[SLOT_REMOTE_MISSES];
    out->remote_errors = sum[SLOT_REMOTE_ERRORS];
    out->rejected = sum[SLOT_REJECTED];
    return 0;
}

int
mithril_stats_zero(mithril_store *s)
{
    struct mi_stats *st;
    unsigned i, j;
    int rc;

    if ((rc = get_stats(s, &st)) < 0) {
        return rc;
    }
    if (!st->map) {
        return 0;
    }
    if (!st->writable) {
        return MITHRIL_ERDONLY;
    }
    for (i = 0; i < ST_SHARDS; i++) {
        for (j = 0; j < ST_COUNTERS; j++) {
            __atomic_store_n(&shard(st, i)[j], 0, __ATOMIC_RELAXED);
        }
    }
    return 0;
}
