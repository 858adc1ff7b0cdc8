/*
 * test_threads.c - several threads of one process share one store handle:
 * blob put/get/exists, entry_put/entry_get, gc and stats at once, over the
 * same small set of contents and keys so that every pair of operations
 * meets. Run under ThreadSanitizer by `make tsan` (ctest -R thread).
 *
 * Checked: no call fails with an unexpected code, a get never returns
 * bytes other than the content at its address, an entry read back names
 * the addresses that were written under its key, and afterwards verify
 * finds nothing wrong and the statistics match the blobs on disk.
 *
 * One race is tolerated and counted, not hidden: an entry_put can find
 * its blob evicted by the gc thread between its put and its entry_put
 * (MITHRIL_ENOTFOUND); the writer then puts the blob again, as a caller
 * must. The count is printed as "entry_put_evicted_between N".
 */
#include "check.h"
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>

#define N_THREADS  6
#define N_CONTENTS 24
#define ROUNDS     300

static mithril_store *store;
static uint8_t *contents[N_CONTENTS];
static size_t sizes[N_CONTENTS];
static char addrs[N_CONTENTS][MITHRIL_HEX_SIZE];
static int errors;
static long ops;
static long evicted_between;
static pthread_mutex_t tally_mu = PTHREAD_MUTEX_INITIALIZER;

static void
fill_random(uint8_t *buf, size_t n, uint64_t seed)
{
    size_t i;

    for (i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        buf[i] = (uint8_t)(seed >> 33);
    }
}

static void
fail(const char *what, int idx, int rc)
{
    fprintf(stderr, "thread op %s on %d: %d (%s)\n", what, idx, rc,
            mithril_strerror(rc));
    pthread_mutex_lock(&tally_mu);
    errors++;
    pthread_mutex_unlock(&tally_mu);
}

static int
put_entry(int i)
{
    mithril_item item = {.name = "blob.bin", .mode = 0644};
    char key[32], addr[MITHRIL_HEX_SIZE];
    int rc, tries;

    snprintf(key, sizeof(key), "thread/%d", i);
    item.size = sizes[i];
    strcpy(item.addr, addrs[i]);
    for (tries = 0; tries < 5; tries++) {
        rc = mithril_store_put(store, contents[i], sizes[i], addr);
        if (rc < 0) {
            return rc;
        }
        if (strcmp(addr, addrs[i]) != 0) {
            return MITHRIL_ECORRUPT;
        }
        rc = mithril_entry_put(store, key, &item, 1, "kind=thread");
        if (rc != MITHRIL_ENOTFOUND) {
            return rc;
        }
        pthread_mutex_lock(&tally_mu);
        evicted_between++;
        pthread_mutex_unlock(&tally_mu);
    }
    return rc;
}

static int
get_entry(int i)
{
    mithril_entry *e = NULL;
    char key[32];
    int rc;

    snprintf(key, sizeof(key), "thread/%d", i);
    rc = mithril_entry_get(store, key, &e);
    if (rc == MITHRIL_ENOTFOUND) {
        return 0;
    }
    if (rc < 0) {
        return rc;
    }
    if (e->n_items != 1 || strcmp(e->items[0].addr, addrs[i]) != 0 ||
        e->items[0].size != sizes[i] || strcmp(e->key, key) != 0) {
        rc = MITHRIL_ECORRUPT;
    }
    mithril_entry_free(e);
    return rc;
}

static int
get_blob(int i)
{
    void *data = NULL;
    size_t len = 0;
    int rc = mithril_store_get(store, addrs[i], &data, &len);

    if (rc == MITHRIL_ENOTFOUND) {
        return 0; /* evicted by the gc thread */
    }
    if (rc < 0) {
        return rc;
    }
    if (len != sizes[i] || memcmp(data, contents[i], len) != 0) {
        rc = MITHRIL_ECORRUPT;
    }
    mithril_free(data);
    return rc;
}

static void *
worker(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 7919 + 1;
    mithril_stats st;
    mithril_gc_result g;
    char addr[MITHRIL_HEX_SIZE];
    int r, i, rc;

    for (r = 0; r < ROUNDS; r++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        i = (int)((seed >> 33) % N_CONTENTS);
        switch ((seed >> 40) % 8) {
        case 0:
            rc = mithril_store_put(store, contents[i], sizes[i], addr);
            if (rc == 0 && strcmp(addr, addrs[i]) != 0) {
                rc = MITHRIL_ECORRUPT;
            }
            if (rc < 0) {
                fail("put", i, rc);
            }
            break;
        case 1:
        case 2:
            if ((rc = get_blob(i)) < 0) {
                fail("get", i, rc);
            }
            break;
        case 3:
            rc = mithril_store_exists(store, addrs[i]);
            if (rc < 0) {
                fail("exists", i, rc);
            }
            break;
        case 4:
            if ((rc = put_entry(i)) < 0) {
                fail("entry_put", i, rc);
            }
            break;
        case 5:
            if ((rc = get_entry(i)) < 0) {
                fail("entry_get", i, rc);
            }
            break;
        case 6:
            /* Evict down to about a third of the contents. */
            if ((seed >> 50) % 4 == 0) {
                rc = mithril_store_gc(store, 400 * 1024, &g);
                if (rc < 0) {
                    fail("gc", i, rc);
                }
            }
            break;
        default:
            if ((rc = mithril_stats_get(store, &st)) < 0) {
                fail("stats", i, rc);
            }
            break;
        }
    }
    pthread_mutex_lock(&tally_mu);
    ops += ROUNDS;
    pthread_mutex_unlock(&tally_mu);
    return NULL;
}

static void
test_threads_share_one_store(void)
{
    pthread_t th[N_THREADS];
    mithril_verify_result v;
    mithril_stats st;
    uintptr_t t;

    for (t = 0; t < N_THREADS; t++) {
        CHECK_EQ_INT(pthread_create(&th[t], NULL, worker, (void *)t), 0);
    }
    for (t = 0; t < N_THREADS; t++) {
        pthread_join(th[t], NULL);
    }
    CHECK_EQ_INT(errors, 0);
    CHECK_EQ_INT(ops, (long)N_THREADS * ROUNDS);

    CHECK_EQ_INT(mithril_store_flush(store), 0);
    CHECK_EQ_INT(mithril_store_verify(store, NULL, NULL, &v), 0);
    CHECK_EQ_INT(v.blobs_corrupt, 0);
    CHECK_EQ_INT(v.entries_broken, 0);
    CHECK_EQ_INT(v.temp_removed, 0);
    CHECK_EQ_INT(mithril_stats_get(store, &st), 0);
    CHECK_EQ_INT(st.blobs, v.blobs_checked);
    CHECK_EQ_INT(st.entries, v.entries_checked);
    printf("thread_ops %ld\nentry_put_evicted_between %ld\n", ops,
           evicted_between);
}

/* Open and close handles on the same folder from many threads at once. */
static void *
opener(void *arg)
{
    const char *dir = arg;
    mithril_store *s = NULL;
    char addr[MITHRIL_HEX_SIZE];
    int r, rc;

    for (r = 0; r < 20; r++) {
        rc = mithril_store_open(
            dir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG, &s);
        if (rc < 0) {
            fail("open", r, rc);
            continue;
        }
        rc = mithril_store_put(s, contents[r % N_CONTENTS],
                               sizes[r % N_CONTENTS], addr);
        if (rc < 0) {
            fail("put(own handle)", r, rc);
        }
        mithril_store_close(s);
    }
    return NULL;
}

static void
test_threads_open_and_close(void)
{
    pthread_t th[4];
    int t;

    errors = 0;
    for (t = 0; t < 4; t++) {
        CHECK_EQ_INT(pthread_create(&th[t], NULL, opener,
                                    (void *)mithril_store_dir(store)),
                     0);
    }
    for (t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
    }
    CHECK_EQ_INT(errors, 0);
}

int
main(void)
{
    char *root = check_tmpdir();
    char dir[PATH_MAX];
    uint8_t digest[32];
    int i;

    if (snprintf(dir, sizeof(dir), "%s/store", root) >= (int)sizeof(dir)) {
        return 2;
    }
    for (i = 0; i < N_CONTENTS; i++) {
        sizes[i] = (size_t)(i % 4 == 0   ? 10
                            : i % 4 == 1 ? 3000
                            : i % 4 == 2 ? 40000
                                         : 150000);
        contents[i] = malloc(sizes[i]);
        fill_random(contents[i], sizes[i], (uint64_t)i + 1);
        mithril_blake3_hash(contents[i], sizes[i], digest);
        mithril_hex(digest, 32, addrs[i]);
    }
    CHECK_EQ_INT(mithril_store_open(
                     dir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG, &store),
                 0);
    if (!store) {
        return check_report();
    }
    RUN(test_threads_share_one_store);
    RUN(test_threads_open_and_close);
    mithril_store_close(store);
    for (i = 0; i < N_CONTENTS; i++) {
        free(contents[i]);
    }
    check_rmrf(root);
    free(root);
    return check_report();
}
