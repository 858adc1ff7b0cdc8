/*
 * test_lru.c - eviction: the acceptance case (cap 50 MiB, 100 entries of
 * 1 MiB of incompressible data, ten of the oldest read, gc: under the cap
 * and those ten kept), automatic eviction on put, blobs shared with a
 * surviving entry kept, orphan blobs evicted after entries, and accesses
 * made through another handle and another process honoured.
 */
#include "check.h"
#include "index.h"

#include <sys/wait.h>

#define MIB (1024 * 1024)

static char *dir;

static mithril_store *
open_store(void)
{
    mithril_store *s = NULL;
    int rc = mithril_store_open(
        dir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG, &s);

    if (rc < 0) {
        fprintf(stderr, "open %s: %s\n", dir, mithril_strerror(rc));
        exit(2);
    }
    mithril_store_set_max_size(s, 1ULL << 40);
    return s;
}

/* Incompressible bytes (xorshift), different for every seed. */
static void
fill_random(unsigned char *buf, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
    size_t i;

    for (i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (unsigned char)(x >> 24);
    }
}

/* Put entry "e<i>" holding 1 MiB of its own random content. */
static int
put_mib(mithril_store *s, int i)
{
    static unsigned char buf[MIB];
    char key[32];
    mithril_item it;
    int rc;

    fill_random(buf, sizeof(buf), (uint64_t)i + 1000);
    rc = mithril_store_put(s, buf, sizeof(buf), it.addr);
    if (rc < 0) {
        return rc;
    }
    snprintf(key, sizeof(key), "e%d", i);
    it.name = "data.bin";
    it.size = MIB;
    it.mode = 0644;
    return mithril_entry_put(s, key, &it, 1, NULL);
}

static int
present(mithril_store *s, int i)
{
    mithril_entry *e = NULL;
    char key[32];
    int rc, ok;

    snprintf(key, sizeof(key), "e%d", i);
    rc = mithril_entry_peek(s, key, &e);
    if (rc < 0) {
        return 0;
    }
    ok = mithril_store_exists(s, e->items[0].addr) == 1;
    mithril_entry_free(e);
    return ok;
}

static void
read_entry(mithril_store *s, int i)
{
    mithril_entry *e = NULL;
    char key[32];

    snprintf(key, sizeof(key), "e%d", i);
    CHECK_EQ_INT(mithril_entry_get(s, key, &e), 0);
    mithril_entry_free(e);
}

static void
test_acceptance(void)
{
    mithril_store *s = open_store();
    mithril_gc_result r;
    mithril_stats st;
    uint64_t cap;
    int i, kept = 0;

    CHECK_EQ_INT(mithril_parse_size("50M", &cap), 0);
    CHECK_EQ_INT(mithril_stats_zero(s), 0);
    for (i = 0; i < 100; i++) {
        CHECK_EQ_INT(put_mib(s, i), 0);
    }
    CHECK_EQ_INT(mithril_stats_get(s, &st), 0);
    CHECK_EQ_INT(st.entries, 100);
    CHECK(st.size_bytes >= 100ULL * MIB);

    for (i = 0; i < 10; i++) {
        read_entry(s, i); /* batched: gc must see them anyway */
    }
    CHECK_EQ_INT(mithril_store_gc(s, cap, &r), 0);
    CHECK(r.size_after <= cap);
    CHECK(r.entries_removed >= 50);
    CHECK_EQ_INT(r.blobs_removed, r.entries_removed);
    CHECK_EQ_INT(mithril_stats_get(s, &st), 0);
    CHECK(st.size_bytes <= cap);
    CHECK_EQ_INT(st.size_bytes, r.size_after);
    CHECK_EQ_INT(st.entries, 100 - r.entries_removed);
    CHECK_EQ_INT(st.evictions, r.entries_removed);
    CHECK_EQ_INT(st.hits, 10);
    for (i = 0; i < 10; i++) {
        CHECK(present(s, i));
    }
    for (i = 10; i < 100; i++) {
        kept += present(s, i);
    }
    CHECK_EQ_INT(kept + 10, (int)st.entries);
    /* The newest survive, the oldest unread ones went. */
    CHECK(present(s, 99));
    CHECK(!present(s, 10));
    CHECK_EQ_INT(mithril_store_clear(s), 0);
    mithril_store_close(s);
}

static void
test_automatic(void)
{
    mithril_store *s = open_store();
    mithril_stats st;
    int i;

    mithril_store_set_max_size(s, 20ULL * MIB);
    for (i = 0; i < 40; i++) {
        CHECK_EQ_INT(put_mib(s, i), 0);
        if (i == 5) {
            read_entry(s, 0);
        }
    }
    CHECK_EQ_INT(mithril_stats_get(s, &st), 0);
    CHECK(st.size_bytes <= 20ULL * MIB);
    CHECK(st.entries >= 15);
    CHECK(present(s, 39));
    CHECK(!present(s, 1));
    CHECK_EQ_INT(mithril_store_clear(s), 0);
    mithril_store_close(s);
}

static void
test_shared_and_orphans(void)
{
    mithril_store *s = open_store();
    static unsigned char buf[MIB];
    char shared[MITHRIL_HEX_SIZE], raw[MITHRIL_HEX_SIZE];
    mithril_item items[2];
    mithril_gc_result r;
    mithril_entry *e = NULL;
    mithril_stats st;

    /* old and new share a blob; each has one of its own. */
    fill_random(buf, sizeof(buf), 1);
    CHECK_EQ_INT(mithril_store_put(s, buf, sizeof(buf), shared), 0);
    fill_random(buf, sizeof(buf), 2);
    CHECK_EQ_INT(mithril_store_put(s, buf, sizeof(buf), items[0].addr), 0);
    items[0].name = "own";
    items[0].size = MIB;
    items[0].mode = 0644;
    items[1] = items[0];
    items[1].name = "shared";
    snprintf(items[1].addr, sizeof(items[1].addr), "%s", shared);
    CHECK_EQ_INT(mithril_entry_put(s, "old", items, 2, NULL), 0);
    fill_random(buf, sizeof(buf), 3);
    CHECK_EQ_INT(mithril_store_put(s, buf, sizeof(buf), items[0].addr), 0);
    CHECK_EQ_INT(mithril_entry_put(s, "new", items, 2, NULL), 0);

    /* A raw blob nobody refers to. */
    fill_random(buf, sizeof(buf), 4);
    CHECK_EQ_INT(mithril_store_put(s, buf, sizeof(buf), raw), 0);
    CHECK_EQ_INT(mithril_stats_get(s, &st), 0);
    CHECK_EQ_INT(st.blobs, 4);
    CHECK_EQ_INT(st.entries, 2);

    /* Room for three blobs: "old" goes, the shared blob stays. */
    CHECK_EQ_INT(mithril_store_gc(s, 3ULL * MIB + 3 * 64, &r), 0);
    CHECK_EQ_INT(r.entries_removed, 1);
    CHECK_EQ_INT(r.blobs_removed, 1);
    CHECK_EQ_INT(mithril_entry_peek(s, "old", &e), MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(mithril_entry_peek(s, "new", &e), 0);
    mithril_entry_free(e);
    CHECK_EQ_INT(mithril_store_exists(s, shared), 1);
    CHECK_EQ_INT(mithril_store_exists(s, raw), 1);

    /* Room for two: entries go first, so "new" goes, then not the orphan. */
    CHECK_EQ_INT(mithril_store_gc(s, 2ULL * MIB, &r), 0);
    CHECK_EQ_INT(r.entries_removed, 1);
    CHECK_EQ_INT(mithril_store_exists(s, shared), 0);
    CHECK_EQ_INT(mithril_store_exists(s, raw), 1);

    /* Room for nothing: the orphan goes too. */
    CHECK_EQ_INT(mithril_store_gc(s, 1, &r), 0);
    CHECK_EQ_INT(r.entries_removed, 0);
    CHECK_EQ_INT(r.blobs_removed, 1);
    CHECK_EQ_INT(r.size_after, 0);
    CHECK_EQ_INT(mithril_store_exists(s, raw), 0);
    mithril_store_close(s);
}

static void
test_other_handle_and_process(void)
{
    mithril_store *s = open_store(), *s2;
    mithril_gc_result r;
    pid_t pid;
    int i, status;

    for (i = 0; i < 20; i++) {
        CHECK_EQ_INT(put_mib(s, i), 0);
    }

    /* Another handle in this process reads e0 and closes (flushes). */
    s2 = open_store();
    read_entry(s2, 0);
    mithril_store_close(s2);

    /* Another process reads e1 and e2, and exits after closing. */
    pid = fork();
    if (pid == 0) {
        mithril_entry *e = NULL;
        mithril_store *c = open_store();
        int bad = mithril_entry_get(c, "e1", &e) != 0;

        mithril_entry_free(e);
        bad += mithril_entry_get(c, "e2", &e) != 0;
        mithril_entry_free(e);
        mithril_store_close(c);
        _exit(bad);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* A second process evicts; it must honour those reads. */
    pid = fork();
    if (pid == 0) {
        mithril_gc_result cr;
        mithril_store *c = open_store();
        int rc = mithril_store_gc(c, 10ULL * MIB, &cr);

        mithril_store_close(c);
        _exit(rc == 0 && cr.entries_removed >= 10 ? 0 : 1);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(present(s, 0));
    CHECK(present(s, 1));
    CHECK(present(s, 2));
    CHECK(!present(s, 3));
    CHECK(present(s, 19));
    CHECK_EQ_INT(mithril_store_gc(s, 10ULL * MIB, &r), 0);
    CHECK_EQ_INT(r.entries_removed, 0);
    CHECK_EQ_INT(mithril_store_clear(s), 0);
    mithril_store_close(s);
}

int
main(void)
{
    dir = check_tmpdir();
    RUN(test_acceptance);
    RUN(test_automatic);
    RUN(test_shared_and_orphans);
    RUN(test_other_handle_and_process);
    check_rmrf(dir);
    free(dir);
    return check_report();
}
