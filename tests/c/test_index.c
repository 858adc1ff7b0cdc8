/*
 * test_index.c - the index: entries put, read, replaced and deleted; blob
 * reference counts; key and name validation; persistence across handles;
 * the schema version; concurrent writers in several processes; verify and
 * clear against real files.
 */
#include "check.h"
#include "index.h"

#include <fcntl.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <sys/wait.h>

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
    return s;
}

static void
blob(mithril_store *s, const char *text, char addr[MITHRIL_HEX_SIZE])
{
    int rc = mithril_store_put(s, text, strlen(text), addr);

    if (rc < 0) {
        fprintf(stderr, "store put: %s\n", mithril_strerror(rc));
        exit(2);
    }
}

static mithril_item
item(const char *name, const char *addr, uint64_t size)
{
    mithril_item it;

    it.name = (char *)name;
    it.size = size;
    it.mode = 0644;
    snprintf(it.addr, sizeof(it.addr), "%s", addr);
    return it;
}

static void
totals(mithril_store *s, struct mi_totals *t)
{
    CHECK_EQ_INT(mi_index_totals(s, t), 0);
}

static void
test_put_get_peek_delete(void)
{
    mithril_store *s = open_store();
    mithril_entry *e = NULL;
    char a[MITHRIL_HEX_SIZE], b[MITHRIL_HEX_SIZE];
    mithril_item items[2];
    struct mi_totals t;

    blob(s, "first content", a);
    blob(s, "second content", b);
    items[0] = item("fxgraph/ab/one.bin", a, 13);
    items[1] = item("two.py", b, 14);
    items[1].mode = 0755;
    CHECK_EQ_INT(mithril_entry_put(s, "k-basic", items, 2, "tc=1 kind=fx"), 0);

    CHECK_EQ_INT(mithril_entry_peek(s, "k-basic", &e), 0);
    if (e) {
        CHECK_EQ_STR(e->key, "k-basic");
        CHECK_EQ_STR(e->meta, "tc=1 kind=fx");
        CHECK_EQ_INT(e->n_items, 2);
        CHECK_EQ_STR(e->items[0].name, "fxgraph/ab/one.bin");
        CHECK_EQ_STR(e->items[0].addr, a);
        CHECK_EQ_INT(e->items[0].size, 13);
        CHECK_EQ_INT(e->items[1].mode, 0755);
        CHECK_EQ_STR(e->items[1].addr, b);
        CHECK_EQ_INT(e->hits, 0);
        CHECK(e->created_ns > 0);
        CHECK(e->last_access_ns >= e->created_ns);
        mithril_entry_free(e);
        e = NULL;
    }
    CHECK_EQ_INT(mithril_entry_get(s, "k-basic", &e), 0);
    if (e) {
        CHECK_EQ_INT(e->hits, 1);
        mithril_entry_free(e);
        e = NULL;
    }
    CHECK_EQ_INT(mithril_store_flush(s), 0);
    CHECK_EQ_INT(mithril_entry_peek(s, "k-basic", &e), 0);
    if (e) {
        CHECK_EQ_INT(e->hits, 1);
        mithril_entry_free(e);
        e = NULL;
    }
    totals(s, &t);
    CHECK_EQ_INT(t.entries, 1);
    CHECK_EQ_INT(t.blobs, 2);
    CHECK_EQ_INT(t.logical_bytes, 27);

    CHECK_EQ_INT(mithril_entry_get(s, "k-absent", &e), MITHRIL_ENOTFOUND);
    CHECK(e == NULL);
    CHECK_EQ_INT(mithril_entry_delete(s, "k-basic"), 0);
    CHECK_EQ_INT(mithril_entry_delete(s, "k-basic"), MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(mithril_entry_peek(s, "k-basic", &e), MITHRIL_ENOTFOUND);
    /* The last reference went: so did the blob files. */
    CHECK_EQ_INT(mithril_store_exists(s, a), 0);
    CHECK_EQ_INT(mithril_store_exists(s, b), 0);
    totals(s, &t);
    CHECK_EQ_INT(t.entries, 0);
    CHECK_EQ_INT(t.blobs, 0);
    CHECK_EQ_INT(t.size_bytes, 0);
    mithril_store_close(s);
}

static void
test_missing_blob(void)
{
    mithril_store *s = open_store();
    mithril_entry *e = NULL;
    mithril_item it;
    char absent[MITHRIL_HEX_SIZE];

    memset(absent, 'a', 64);
    absent[64] = 0;
    it = item("x", absent, 1);
    CHECK_EQ_INT(mithril_entry_put(s, "k-missing", &it, 1, NULL),
                 MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(mithril_entry_peek(s, "k-missing", &e), MITHRIL_ENOTFOUND);
    /* An entry without items is allowed. */
    CHECK_EQ_INT(mithril_entry_put(s, "k-empty", NULL, 0, NULL), 0);
    CHECK_EQ_INT(mithril_entry_peek(s, "k-empty", &e), 0);
    if (e) {
        CHECK_EQ_INT(e->n_items, 0);
        CHECK_EQ_STR(e->meta, "");
        mithril_entry_free(e);
    }
    CHECK_EQ_INT(mithril_entry_delete(s, "k-empty"), 0);
    mithril_store_close(s);
}

/* Several entries in one commit; a bad one answers alone. */
static void
test_put_many(void)
{
    mithril_store *s = open_store();
    mithril_entry *e = NULL;
    mithril_item it[3];
    struct mi_put puts[4];
    struct mi_totals before, after;
    char a[MITHRIL_HEX_SIZE], b[MITHRIL_HEX_SIZE], absent[MITHRIL_HEX_SIZE];
    int i;

    blob(s, "many one", a);
    blob(s, "many two", b);
    memset(absent, 'b', 64);
    absent[64] = 0;
    it[0] = item("one", a, 8);
    it[1] = item("two", b, 8);
    it[2] = item("gone", absent, 3);
    totals(s, &before);
    memset(puts, 0, sizeof(puts));
    puts[0] = (struct mi_put){"k-many-1", &it[0], 1, "kind=a", -1};
    puts[1] = (struct mi_put){"k-many-2", &it[1], 1, "kind=b", -1};
    CHECK_EQ_INT(mi_entry_put_many(s, puts, 2, NULL, 0), 0);
    CHECK_EQ_INT(puts[0].rc, 0);
    CHECK_EQ_INT(puts[1].rc, 0);
    totals(s, &after);
    CHECK_EQ_INT(after.entries, before.entries + 2);

    /* Invalid key, missing blob, two good ones (one replacing). */
    puts[0] = (struct mi_put){"", &it[0], 1, NULL, -1};
    puts[1] = (struct mi_put){"k-many-3", &it[2], 1, NULL, -1};
    puts[2] = (struct mi_put){"k-many-4", &it[0], 2, "kind=c", -1};
    puts[3] = (struct mi_put){"k-many-1", &it[1], 1, "kind=d", -1};
    CHECK_EQ_INT(mi_entry_put_many(s, puts, 4, NULL, 0), 0);
    CHECK_EQ_INT(puts[0].rc, MITHRIL_EINVAL);
    CHECK_EQ_INT(puts[1].rc, MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(puts[2].rc, 0);
    CHECK_EQ_INT(puts[3].rc, 0);
    CHECK_EQ_INT(mithril_entry_peek(s, "k-many-3", &e), MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(mithril_entry_peek(s, "k-many-1", &e), 0);
    if (e) {
        CHECK_EQ_STR(e->meta, "kind=d");
        CHECK_EQ_STR(e->items[0].addr, b);
        mithril_entry_free(e);
        e = NULL;
    }
    CHECK_EQ_INT(mithril_entry_peek(s, "k-many-4", &e), 0);
    if (e) {
        CHECK_EQ_INT(e->n_items, 2);
        mithril_entry_free(e);
        e = NULL;
    }
    totals(s, &after);
    CHECK_EQ_INT(after.entries, before.entries + 3);
    for (i = 1; i <= 4; i++) {
        char k[32];

        snprintf(k, sizeof(k), "k-many-%d", i);
        mithril_entry_delete(s, k);
    }
    mithril_store_close(s);
}

static void
test_replace_and_shared_refs(void)
{
    mithril_store *s = open_store();
    char a[MITHRIL_HEX_SIZE], b[MITHRIL_HEX_SIZE], c[MITHRIL_HEX_SIZE];
    mithril_item ia, ib, ic, two[2];
    mithril_entry *e = NULL;
    struct mi_totals t;

    blob(s, "blob A", a);
    blob(s, "blob B", b);
    blob(s, "blob C", c);
    ia = item("a", a, 6);
    ib = item("b", b, 6);
    ic = item("c", c, 6);

    /* Replacing an entry drops the old blob, keeps a shared one. */
    two[0] = ia;
    two[1] = ic;
    CHECK_EQ_INT(mithril_entry_put(s, "k-rep", two, 2, "v1"), 0);
    two[0] = ib;
    CHECK_EQ_INT(mithril_entry_put(s, "k-rep", two, 2, "v2"), 0);
    CHECK_EQ_INT(mithril_store_exists(s, a), 0);
    CHECK_EQ_INT(mithril_store_exists(s, b), 1);
    CHECK_EQ_INT(mithril_store_exists(s, c), 1);
    CHECK_EQ_INT(mithril_entry_peek(s, "k-rep", &e), 0);
    if (e) {
        CHECK_EQ_STR(e->meta, "v2");
        CHECK_EQ_STR(e->items[0].addr, b);
        mithril_entry_free(e);
    }
    totals(s, &t);
    CHECK_EQ_INT(t.entries, 1);
    CHECK_EQ_INT(t.blobs, 2);

    /* Two entries share c: it lives until the second one goes. */
    CHECK_EQ_INT(mithril_entry_put(s, "k-share", &ic, 1, NULL), 0);
    CHECK_EQ_INT(mithril_entry_delete(s, "k-rep"), 0);
    CHECK_EQ_INT(mithril_store_exists(s, b), 0);
    CHECK_EQ_INT(mithril_store_exists(s, c), 1);
    CHECK_EQ_INT(mithril_entry_delete(s, "k-share"), 0);
    CHECK_EQ_INT(mithril_store_exists(s, c), 0);

    /* The same blob twice in one entry counts twice. */
    two[0] = ic;
    two[1] = ic;
    blob(s, "blob C", c);
    two[1].name = "c2";
    CHECK_EQ_INT(mithril_entry_put(s, "k-twice", two, 2, NULL), 0);
    CHECK_EQ_INT(mithril_entry_put(s, "k-once", &ic, 1, NULL), 0);
    CHECK_EQ_INT(mithril_entry_delete(s, "k-twice"), 0);
    CHECK_EQ_INT(mithril_store_exists(s, c), 1);
    CHECK_EQ_INT(mithril_entry_delete(s, "k-once"), 0);
    CHECK_EQ_INT(mithril_store_exists(s, c), 0);
    totals(s, &t);
    CHECK_EQ_INT(t.entries, 0);
    CHECK_EQ_INT(t.blobs, 0);
    CHECK_EQ_INT(t.size_bytes, 0);
    mithril_store_close(s);
}

static void
test_invalid(void)
{
    mithril_store *s = open_store();
    static const char *bad_names[] = {"",     "/abs", "a/../b", "..",
                                      "a//b", "a/",   "./a",    "a/."};
    char a[MITHRIL_HEX_SIZE], longkey[600];
    mithril_entry *e = NULL;
    mithril_item it;
    size_t i;

    blob(s, "valid blob", a);
    it = item("ok/name.txt", a, 10);
    CHECK_EQ_INT(mithril_entry_put(s, "", &it, 1, NULL), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_entry_put(s, "a b", &it, 1, NULL), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_entry_put(s, "a\tb", &it, 1, NULL), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_entry_put(s, "caf\xc3\xa9", &it, 1, NULL),
                 MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_entry_put(s, NULL, &it, 1, NULL), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_entry_get(s, "a b", &e), MITHRIL_EINVAL);
    memset(longkey, 'k', sizeof(longkey));
    longkey[513] = 0;
    CHECK_EQ_INT(mithril_entry_put(s, longkey, &it, 1, NULL), MITHRIL_EINVAL);
    for (i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        it.name = (char *)bad_names[i];
        CHECK_EQ_INT(mithril_entry_put(s, "k-name", &it, 1, NULL),
                     MITHRIL_EPATH);
    }
    it.name = "ok";
    it.addr[0] = 'Z';
    CHECK_EQ_INT(mithril_entry_put(s, "k-addr", &it, 1, NULL), MITHRIL_EINVAL);
    snprintf(it.addr, sizeof(it.addr), "%s", a);

    /* 512 bytes is the longest key; long keys are hashed in the index. */
    longkey[512] = 0;
    CHECK_EQ_INT(mithril_entry_put(s, longkey, &it, 1, NULL), 0);
    longkey[511] = 'j';
    CHECK_EQ_INT(mithril_entry_put(s, longkey, &it, 1, "other"), 0);
    CHECK_EQ_INT(mithril_entry_get(s, longkey, &e), 0);
    if (e) {
        CHECK_EQ_STR(e->key, longkey);
        CHECK_EQ_STR(e->meta, "other");
        mithril_entry_free(e);
    }
    CHECK_EQ_INT(mithril_entry_delete(s, longkey), 0);
    longkey[511] = 'k';
    CHECK_EQ_INT(mithril_entry_delete(s, longkey), 0);
    mithril_store_close(s);
}

static void
test_persistence(void)
{
    mithril_store *s = open_store();
    char a[MITHRIL_HEX_SIZE];
    mithril_entry *e = NULL;
    mithril_item it;
    struct mi_totals t1, t2;

    blob(s, "persistent", a);
    it = item("p", a, 10);
    CHECK_EQ_INT(mithril_entry_put(s, "k-persist", &it, 1, "m"), 0);
    CHECK_EQ_INT(mithril_entry_get(s, "k-persist", &e), 0);
    mithril_entry_free(e);
    e = NULL;
    totals(s, &t1);
    mithril_store_close(s); /* applies the batched hit */

    s = open_store();
    CHECK_EQ_INT(mithril_entry_peek(s, "k-persist", &e), 0);
    if (e) {
        CHECK_EQ_STR(e->items[0].addr, a);
        CHECK_EQ_INT(e->hits, 1);
        mithril_entry_free(e);
    }
    totals(s, &t2);
    CHECK_EQ_INT(t2.entries, t1.entries);
    CHECK_EQ_INT(t2.size_bytes, t1.size_bytes);
    CHECK_EQ_INT(mithril_entry_delete(s, "k-persist"), 0);
    mithril_store_close(s);
}

static int
collect(const mithril_entry *e, void *ctx)
{
    char *out = ctx;

    strcat(out, e->key);
    strcat(out, ",");
    return 0;
}

static int
stop_after_one(const mithril_entry *e, void *ctx)
{
    (*(int *)ctx)++;
    return 1;
}

static void
test_foreach_order(void)
{
    mithril_store *s = open_store();
    char a[MITHRIL_HEX_SIZE], seen[256] = "";
    mithril_entry *e = NULL;
    mithril_item it;
    int calls = 0;

    blob(s, "order", a);
    it = item("o", a, 5);
    CHECK_EQ_INT(mithril_entry_put(s, "k1", &it, 1, NULL), 0);
    CHECK_EQ_INT(mithril_entry_put(s, "k2", &it, 1, NULL), 0);
    CHECK_EQ_INT(mithril_entry_put(s, "k3", &it, 1, NULL), 0);
    CHECK_EQ_INT(mithril_entry_get(s, "k1", &e), 0);
    mithril_entry_free(e);
    /* foreach applies the pending hit itself. */
    CHECK_EQ_INT(mithril_entry_foreach(s, collect, seen), 0);
    CHECK_EQ_STR(seen, "k2,k3,k1,");
    CHECK_EQ_INT(mithril_entry_foreach(s, stop_after_one, &calls), 0);
    CHECK_EQ_INT(calls, 1);
    CHECK_EQ_INT(mithril_store_clear(s), 0);
    seen[0] = 0;
    CHECK_EQ_INT(mithril_entry_foreach(s, collect, seen), 0);
    CHECK_EQ_STR(seen, "");
    CHECK_EQ_INT(mithril_store_exists(s, a), 0);
    mithril_store_close(s);
}

static int
count_entries(const mithril_entry *e, void *ctx)
{
    (*(int *)ctx)++;
    return 0;
}

#define PROCS    4
#define PER_PROC 40

static void
test_processes(void)
{
    mithril_store *s;
    pid_t pids[PROCS];
    struct mi_totals t;
    int i, status, n = 0;

    for (i = 0; i < PROCS; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            char key[64], text[64], a[MITHRIL_HEX_SIZE];
            char shared[MITHRIL_HEX_SIZE];
            mithril_item it[2];
            int j, bad = 0;

            s = open_store();
            blob(s, "shared by every process", shared);
            for (j = 0; j < PER_PROC; j++) {
                snprintf(key, sizeof(key), "proc%d-entry%d", i, j);
                snprintf(text, sizeof(text), "content %d %d", i, j);
                blob(s, text, a);
                it[0] = item("own", a, strlen(text));
                it[1] = item("shared", shared, 23);
                bad += mithril_entry_put(s, key, it, 2, NULL) != 0;
            }
            mithril_store_close(s);
            _exit(bad ? 1 : 0);
        }
    }
    for (i = 0; i < PROCS; i++) {
        CHECK(waitpid(pids[i], &status, 0) == pids[i]);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    s = open_store();
    CHECK_EQ_INT(mithril_entry_foreach(s, count_entries, &n), 0);
    CHECK_EQ_INT(n, PROCS * PER_PROC);
    totals(s, &t);
    CHECK_EQ_INT(t.entries, PROCS * PER_PROC);
    CHECK_EQ_INT(t.blobs, PROCS * PER_PROC + 1);
    CHECK_EQ_INT(mithril_store_clear(s), 0);
    totals(s, &t);
    CHECK_EQ_INT(t.entries, 0);
    CHECK_EQ_INT(t.blobs, 0);
    mithril_store_close(s);
}

/* A handle used before fork keeps working in the child (fresh env). */
static void
test_inherited_handle(void)
{
    mithril_store *s = open_store();
    char a[MITHRIL_HEX_SIZE];
    mithril_entry *e = NULL;
    mithril_item it;
    pid_t pid;
    int status;

    blob(s, "before fork", a);
    it = item("f", a, 11);
    CHECK_EQ_INT(mithril_entry_put(s, "k-parent", &it, 1, NULL), 0);
    CHECK_EQ_INT(mithril_entry_get(s, "k-parent", &e), 0);
    mithril_entry_free(e);
    e = NULL;
    pid = fork();
    if (pid == 0) {
        int bad = mithril_entry_get(s, "k-parent", &e) != 0;

        mithril_entry_free(e);
        bad += mithril_entry_put(s, "k-child", &it, 1, NULL) != 0;
        mithril_store_close(s);
        _exit(bad);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_EQ_INT(mithril_entry_peek(s, "k-child", &e), 0);
    mithril_entry_free(e);
    CHECK_EQ_INT(mithril_store_flush(s), 0);
    CHECK_EQ_INT(mithril_entry_peek(s, "k-parent", &e), 0);
    if (e) {
        CHECK_EQ_INT(e->hits, 2);
        mithril_entry_free(e);
    }
    CHECK_EQ_INT(mithril_store_clear(s), 0);
    mithril_store_close(s);
}

struct thread_arg {
    mithril_store *s;
    int id;
    int bad;
    char addr[MITHRIL_HEX_SIZE];
};

static void *
thread_main(void *p)
{
    struct thread_arg *a = p;
    mithril_entry *e = NULL;
    mithril_item it = item("t", a->addr, 6);
    char key[64];
    int i;

    for (i = 0; i < 300; i++) {
        a->bad += mithril_entry_get(a->s, "k-threads", &e) != 0;
        mithril_entry_free(e);
        e = NULL;
        if (i % 30 == 0) {
            snprintf(key, sizeof(key), "k-thread%d-%d", a->id, i % 4);
            a->bad += mithril_entry_put(a->s, key, &it, 1, NULL) != 0;
        }
    }
    return NULL;
}

/* Threads share one handle: lookups, puts, the flusher. */
static void
test_threads(void)
{
    mithril_store *s = open_store();
    struct thread_arg args[4];
    pthread_t th[4];
    mithril_entry *e = NULL;
    mithril_item it;
    char a[MITHRIL_HEX_SIZE];
    int i;

    blob(s, "thread", a);
    it = item("t", a, 6);
    CHECK_EQ_INT(mithril_entry_put(s, "k-threads", &it, 1, NULL), 0);
    for (i = 0; i < 4; i++) {
        args[i].s = s;
        args[i].id = i;
        args[i].bad = 0;
        memcpy(args[i].addr, a, sizeof(a));
        CHECK_EQ_INT(pthread_create(&th[i], NULL, thread_main, &args[i]), 0);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(args[i].bad, 0);
    }
    CHECK_EQ_INT(mithril_store_flush(s), 0);
    CHECK_EQ_INT(mithril_entry_peek(s, "k-threads", &e), 0);
    if (e) {
        CHECK_EQ_INT(e->hits, 1200);
        mithril_entry_free(e);
    }
    CHECK_EQ_INT(mithril_store_clear(s), 0);
    mithril_store_close(s);
}

struct problems {
    int corrupt, broken, other;
};

static void
on_problem(const char *what, const char *which, void *ctx)
{
    struct problems *p = ctx;

    if (strstr(what, "corrupt")) {
        p->corrupt++;
    } else if (strstr(what, "broken")) {
        p->broken++;
    } else {
        p->other++;
    }
}

static void
test_verify(void)
{
    mithril_store *s = open_store();
    char a[MITHRIL_HEX_SIZE], b[MITHRIL_HEX_SIZE], path[PATH_MAX], ch;
    mithril_verify_result r;
    struct problems p = {0, 0, 0};
    mithril_entry *e = NULL;
    mithril_item it;
    struct mi_totals t;
    int fd;

    mithril_store_set_compression(s, 0);
    blob(s, "will be damaged, byte by byte", a);
    blob(s, "stays intact", b);
    it = item("d", a, 29);
    CHECK_EQ_INT(mithril_entry_put(s, "k-damaged", &it, 1, NULL), 0);
    it = item("i", b, 12);
    CHECK_EQ_INT(mithril_entry_put(s, "k-intact", &it, 1, NULL), 0);

    CHECK_EQ_INT(mithril_store_verify(s, on_problem, &p, &r), 0);
    CHECK_EQ_INT(r.blobs_checked, 2);
    CHECK_EQ_INT(r.blobs_corrupt + r.entries_broken, 0);
    CHECK_EQ_INT(p.corrupt + p.broken + p.other, 0);

    /* Flip one byte of a's content. */
    mi_blob_path(s, a, path);
    fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    CHECK(pread(fd, &ch, 1, 20) == 1);
    ch ^= 0x01;
    CHECK(pwrite(fd, &ch, 1, 20) == 1);
    close(fd);

    CHECK_EQ_INT(mithril_store_verify(s, on_problem, &p, &r), 0);
    CHECK_EQ_INT(r.blobs_corrupt, 1);
    CHECK_EQ_INT(r.entries_broken, 1);
    CHECK_EQ_INT(p.corrupt, 1);
    CHECK_EQ_INT(p.broken, 1);
    CHECK_EQ_INT(mithril_entry_peek(s, "k-damaged", &e), MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(mithril_entry_peek(s, "k-intact", &e), 0);
    mithril_entry_free(e);
    totals(s, &t);
    CHECK_EQ_INT(t.entries, 1);
    CHECK_EQ_INT(t.blobs, 1);

    CHECK_EQ_INT(mithril_store_clear(s), 0);
    mithril_store_close(s);
}

static void
test_schema_version(void)
{
    mithril_store *s = open_store();
    mithril_entry *e = NULL;
    char path[PATH_MAX];
    unsigned char two[4] = {2, 0, 0, 0};
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {6, "schema"}, v = {4, two};

    CHECK_EQ_INT(mithril_entry_peek(s, "k", &e), MITHRIL_ENOTFOUND);
    mithril_store_close(s);

    snprintf(path, sizeof(path), "%s/index", dir);
    CHECK_EQ_INT(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    mdb_env_set_mapsize(env, (size_t)64 << 30);
    CHECK_EQ_INT(mdb_env_open(env, path, MDB_NOTLS, 0600), 0);
    CHECK_EQ_INT(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_EQ_INT(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    CHECK_EQ_INT(mdb_put(txn, dbi, &k, &v, 0), 0);
    CHECK_EQ_INT(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    s = open_store();
    CHECK_EQ_INT(mithril_entry_peek(s, "k", &e), MITHRIL_EFORMAT);
    CHECK_EQ_INT(mithril_entry_put(s, "k", NULL, 0, NULL), MITHRIL_EFORMAT);
    mithril_store_close(s);
}

int
main(void)
{
    dir = check_tmpdir();
    RUN(test_put_get_peek_delete);
    RUN(test_missing_blob);
    RUN(test_put_many);
    RUN(test_replace_and_shared_refs);
    RUN(test_invalid);
    RUN(test_persistence);
    RUN(test_foreach_order);
    RUN(test_processes);
    RUN(test_inherited_handle);
    RUN(test_threads);
    RUN(test_verify);
    RUN(test_schema_version); /* last: it spoils the store */
    check_rmrf(dir);
    free(dir);
    return check_report();
}
