/*
 * test_remote.c - the Redis tier against a real redis-server started by
 * the test on a free loopback port: push from one store and pull into
 * another, read-through of single entries, the write queue, toolchain
 * filtering, read-only remotes, tampered and unsigned entries, corrupt
 * blobs, and dead remotes (a closed port, a server killed mid-run).
 * Skips (passes with a note) when redis-server is not installed.
 */
#include "check.h"
#include "sign.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

static pid_t redis_pid = -1;
static int redis_port;
static char url[64];
static char *redis_dir;

static int
free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int port;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof(a));
    getsockname(fd, (struct sockaddr *)&a, &len);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int
redis_start(void)
{
    char port[16];
    redisContext *c;
    int i;

    redis_port = free_port();
    snprintf(port, sizeof(port), "%d", redis_port);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", redis_port);
    redis_pid = fork();
    if (redis_pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);

        dup2(devnull, 1);
        dup2(devnull, 2);
        execlp("redis-server", "redis-server", "--port", port, "--bind",
               "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
               redis_dir, (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 200; i++) {
        struct timeval tv = {0, 100000};

        c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
        if (c && !c->err) {
            redisFree(c);
            return 0;
        }
        if (c) {
            redisFree(c);
        }
        usleep(50000);
    }
    return -1;
}

static void
redis_stop(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = -1;
    }
}

/* Run one Redis command on a fresh connection; returns the reply. */
static redisReply *
redis(const char *fmt, ...)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    redisReply *r = NULL;
    va_list ap;

    if (c && !c->err) {
        va_start(ap, fmt);
        r = redisvCommand(c, fmt, ap);
        va_end(ap);
    }
    if (c) {
        redisFree(c);
    }
    return r;
}

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static mithril_store *
open_store(char **dir)
{
    mithril_store *s = NULL;

    *dir = check_tmpdir();
    CHECK_EQ_INT(mithril_store_open(
                     *dir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG, &s),
                 0);
    return s;
}

static void
close_store(mithril_store *s, char *dir)
{
    mithril_store_close(s);
    check_rmrf(dir);
    free(dir);
}

static void
fill(uint8_t *buf, size_t n, uint32_t seed)
{
    size_t i;

    for (i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (uint8_t)(seed >> 16);
    }
}

/* Record entry key with n blobs of the given sizes, meta tc=<tag>. */
static void
put_entry(mithril_store *s, const char *key, const char *tag,
          const size_t *sizes, size_t n, uint32_t seed)
{
    mithril_item items[8];
    char names[8][32];
    char meta[64];
    size_t i;

    for (i = 0; i < n; i++) {
        uint8_t *buf = malloc(sizes[i] + 1);

        fill(buf, sizes[i], seed + (uint32_t)i);
        if (i == 1 && sizes[i] > 64) {
            memset(buf, 'z', sizes[i] / 2); /* compressible half */
        }
        CHECK_EQ_INT(mithril_store_put(s, buf, sizes[i], items[i].addr), 0);
        free(buf);
        snprintf(names[i], sizeof(names[i]), "dir/f%zu", i);
        items[i].name = names[i];
        items[i].size = sizes[i];
        items[i].mode = 0644;
    }
    snprintf(meta, sizeof(meta), "tc=%s kind=other", tag);
    CHECK_EQ_INT(mithril_entry_put(s, key, items, n, meta), 0);
}

/* 1 if both stores hold key with identical items and blob contents. */
static int
same_entry(mithril_store *a, mithril_store *b, const char *key)
{
    mithril_entry *ea = NULL;
    mithril_entry *eb = NULL;
    int same = 0;
    size_t i;

    if (mithril_entry_peek(a, key, &ea) < 0 ||
        mithril_entry_peek(b, key, &eb) < 0) {
        goto out;
    }
    if (ea->n_items != eb->n_items || strcmp(ea->meta, eb->meta) != 0) {
        goto out;
    }
    for (i = 0; i < ea->n_items; i++) {
        void *da = NULL;
        void *db = NULL;
        size_t la = 0;
        size_t lb = 0;
        int ok;

        if (strcmp(ea->items[i].addr, eb->items[i].addr) ||
            strcmp(ea->items[i].name, eb->items[i].name)) {
            goto out;
        }
        ok = mithril_store_get(a, ea->items[i].addr, &da, &la) == 0 &&
             mithril_store_get(b, eb->items[i].addr, &db, &lb) == 0 &&
             la == lb && memcmp(da, db, la) == 0;
        mithril_free(da);
        mithril_free(db);
        if (!ok) {
            goto out;
        }
    }
    same = 1;
out:
    mithril_entry_free(ea);
    mithril_entry_free(eb);
    return same;
}

static uint64_t
stat_of(mithril_store *s, int which)
{
    mithril_stats st;

    memset(&st, 0, sizeof(st));
    mithril_stats_get(s, &st);
    switch (which) {
    case 0:
        return st.remote_hits;
    case 1:
        return st.remote_misses;
    case 2:
        return st.remote_errors;
    default:
        return st.rejected;
    }
}

static const char *TAG_A = "aaaaaaaaaaaaaaaa";
static const char *TAG_B = "bbbbbbbbbbbbbbbb";

static void
test_push_pull(void)
{
    size_t small[3] = {0, 5000, 300};
    size_t big[2] = {9u << 20, (4u << 20) + 1}; /* chunked */
    char *da;
    char *db;
    char *dc;
    mithril_store *a = open_store(&da);
    mithril_store *b = open_store(&db);
    mithril_store *c = open_store(&dc);
    mithril_sync_result r;

    freeReplyObject(redis("FLUSHALL"));
    put_entry(a, "w1/a/one", TAG_A, small, 3, 1);
    put_entry(a, "w1/a/big", TAG_A, big, 2, 2);
    put_entry(a, "w1/b/two", TAG_B, small, 2, 3);
    CHECK_EQ_INT(mithril_store_set_remote(a, url, 0), 0);
    memset(&r, 0, sizeof(r));
    CHECK_EQ_INT(mithril_remote_push(a, NULL, NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.entries, 3);
    CHECK(r.files >= 6);

    /* A second push sends no blob again. */
    CHECK_EQ_INT(mithril_remote_push(a, NULL, NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.files, 0);

    /* Pull by toolchain tag: only that toolchain's entries. */
    CHECK_EQ_INT(mithril_store_set_remote(b, url, 1), 0);
    CHECK_EQ_INT(mithril_remote_pull(b, TAG_B, NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.entries, 1);
    CHECK(same_entry(a, b, "w1/b/two"));
    CHECK(!same_entry(a, b, "w1/a/one"));
    CHECK_EQ_INT(mithril_remote_pull(b, NULL, NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.entries, 2);
    CHECK_EQ_INT(r.skipped, 1);
    CHECK(same_entry(a, b, "w1/a/one"));
    CHECK(same_entry(a, b, "w1/a/big"));

    /* A read-only remote refuses pushes. */
    CHECK_EQ_INT(mithril_remote_push(b, NULL, NULL, NULL, &r), MITHRIL_ERDONLY);

    /* Read-through: one entry, hits and misses counted. */
    CHECK_EQ_INT(mithril_store_set_remote(c, url, 1), 0);
    CHECK_EQ_INT(mi_remote_fetch_entry(c, "w1/a/big"), 0);
    CHECK(same_entry(a, c, "w1/a/big"));
    CHECK_EQ_INT(mi_remote_fetch_entry(c, "w1/none"), MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(stat_of(c, 0), 1);
    CHECK_EQ_INT(stat_of(c, 1), 1);

    close_store(a, da);
    close_store(b, db);
    close_store(c, dc);
}

/*
 * Wrappers that watch a pull's syncs: fsyncs of published blob files (a
 * path under blobs/, not a temp file), how many blobs were linked into
 * blobs/ before the first of them, and a switch that makes them fail.
 */
static int blob_fsyncs;
static int blob_links;
static int links_at_first_fsync = -1;
static int fail_blob_fsync;

static int
is_blob_fd(int fd)
{
    char link[64];
    char path[PATH_MAX];
    ssize_t n;

    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, path, sizeof(path) - 1);
    if (n <= 0) {
        return 0;
    }
    path[n] = '\0';
    return strstr(path, "/blobs/") && strlen(strrchr(path, '/') + 1) == 64;
}

static int
watch_fsync(int fd)
{
    if (is_blob_fd(fd)) {
        if (fail_blob_fsync) {
            errno = EIO;
            return -1;
        }
        if (__atomic_add_fetch(&blob_fsyncs, 1, __ATOMIC_SEQ_CST) == 1) {
            links_at_first_fsync =
                __atomic_load_n(&blob_links, __ATOMIC_SEQ_CST);
        }
    }
    return fsync(fd);
}

static int
watch_link(const char *from, const char *to)
{
    int rc = link(from, to);

    if (rc == 0 && strstr(to, "/blobs/")) {
        __atomic_add_fetch(&blob_links, 1, __ATOMIC_SEQ_CST);
    }
    return rc;
}

static void
watch_syncs(int fail)
{
    blob_fsyncs = blob_links = 0;
    links_at_first_fsync = -1;
    fail_blob_fsync = fail;
    mi_sys.fsync = watch_fsync;
    mi_sys.link = watch_link;
}

/* 1 if the index's sizes are those of the blob files it names. */
static int
sizes_exact(mithril_store *s, const char *const *keys, size_t n)
{
    char seen[256][MITHRIL_HEX_SIZE];
    mithril_entry *e = NULL;
    mithril_blob_info info;
    mithril_stats st;
    uint64_t stored = 0;
    uint64_t logical = 0;
    size_t ns = 0;
    size_t i, j, k;

    for (i = 0; i < n; i++) {
        if (mithril_entry_peek(s, keys[i], &e) < 0) {
            return 0;
        }
        for (j = 0; j < e->n_items; j++) {
            for (k = 0; k < ns && strcmp(seen[k], e->items[j].addr); k++) {
            }
            if (k < ns || ns == 256 ||
                mithril_store_blob_info(s, e->items[j].addr, &info) < 0) {
                continue;
            }
            memcpy(seen[ns++], e->items[j].addr, MITHRIL_HEX_SIZE);
            stored += info.stored_size;
            logical += info.logical_size;
        }
        mithril_entry_free(e);
    }
    mithril_stats_get(s, &st);
    return st.blobs == ns && st.size_bytes == stored &&
           st.logical_bytes == logical && st.entries == n;
}

static void
count_problem(const char *what, const char *which, void *ctx)
{
    (void)what;
    (void)which;
    (*(int *)ctx)++;
}

/* Blobs mithril_store_verify checked in s; -1 if it found any problem. */
static long
verified_blobs(mithril_store *s)
{
    mithril_verify_result vr;
    int problems = 0;

    memset(&vr, 0, sizeof(vr));
    if (mithril_store_verify(s, count_problem, &problems, &vr) != 0 ||
        problems != 0) {
        return -1;
    }
    return (long)vr.blobs_checked;
}

/*
 * A pull links its blobs unsynced and syncs them a batch of entries at a
 * time, back to back, before the one commit that records them: each blob
 * synced once, after a batch's worth were linked; rows exact; a failed
 * sync records nothing and loses nothing.
 */
static void
test_pull_batched(void)
{
    size_t sizes[2] = {300u << 10, 5000}; /* O_DIRECT and buffered */
    char keys[40][32];
    const char *names[40];
    char *da;
    char *db;
    mithril_store *a = open_store(&da);
    mithril_store *b = open_store(&db);
    mithril_sync_result r;
    mithril_entry *e = NULL;
    size_t i;

    freeReplyObject(redis("FLUSHALL"));
    for (i = 0; i < 40; i++) {
        snprintf(keys[i], sizeof(keys[i]), "w1/batch/%02zu", i);
        names[i] = keys[i];
        put_entry(a, keys[i], TAG_A, sizes, 2, 100 + 7 * (uint32_t)i);
    }
    CHECK_EQ_INT(mithril_store_set_remote(a, url, 0), 0);
    CHECK_EQ_INT(mithril_remote_push(a, NULL, NULL, NULL, &r), 0);
    CHECK_EQ_INT(mithril_store_set_remote(b, url, 1), 0);

    /* A sync that fails: nothing recorded, nothing lost for later. */
    watch_syncs(1);
    memset(&r, 0, sizeof(r));
    CHECK_EQ_INT(mithril_remote_pull(b, NULL, NULL, NULL, &r), 0);
    mi_sys_reset();
    CHECK_EQ_INT(r.entries, 0);
    CHECK_EQ_INT(r.skipped, 40);
    CHECK_EQ_INT(mithril_entry_peek(b, keys[0], &e), MITHRIL_ENOTFOUND);

    /* The next pull records them all, the files already there included. */
    CHECK_EQ_INT(mithril_remote_pull(b, NULL, NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.entries, 40);
    CHECK(sizes_exact(b, names, 40));
    for (i = 0; i < 40; i++) {
        CHECK(same_entry(a, b, keys[i]));
    }
    close_store(b, db);

    /* Into an empty store: synced once each, a batch (16 entries) at once. */
    b = open_store(&db);
    CHECK_EQ_INT(mithril_store_set_remote(b, url, 1), 0);
    watch_syncs(0);
    CHECK_EQ_INT(mithril_remote_pull(b, NULL, NULL, NULL, &r), 0);
    mi_sys_reset();
    CHECK_EQ_INT(r.entries, 40);
    CHECK_EQ_INT(r.files, 80);
    CHECK_EQ_INT(blob_fsyncs, 80);
    CHECK(links_at_first_fsync >= 32);
    CHECK(sizes_exact(b, names, 40));
    for (i = 0; i < 40; i++) {
        CHECK(same_entry(a, b, keys[i]));
    }
    CHECK_EQ_INT(verified_blobs(b), 80);

    close_store(a, da);
    close_store(b, db);
}

/* Calls of a Redis command since the last CONFIG RESETSTAT. */
static long
redis_calls(const char *cmd)
{
    redisReply *rep = redis("INFO commandstats");
    char want[64];
    const char *at;
    long calls = 0;

    snprintf(want, sizeof(want), "cmdstat_%s:calls=", cmd);
    if (rep && rep->type == REDIS_REPLY_STRING &&
        (at = strstr(rep->str, want)) != NULL) {
        calls = strtol(at + strlen(want), NULL, 10);
    }
    freeReplyObject(rep);
    return calls;
}

/*
 * Entries that share blobs (one kernel in several graphs' entries): the
 * push's workers send each distinct blob once, the pull's fetch and store
 * each once, whichever worker gets there first, and every entry is
 * recorded whole.
 */
static void
test_pull_shared(void)
{
    enum { N = 48 };
    static const size_t sizes[3] = {5000, 300u << 10, 300};
    char keys[N][32];
    const char *names[N];
    static char item_names[3][16] = {"k/shared.so", "k/big.so", "graph"};
    mithril_item items[3];
    char meta[64];
    char *da;
    char *db;
    mithril_store *a = open_store(&da);
    mithril_store *b = open_store(&db);
    mithril_sync_result r;
    uint8_t *buf = malloc(sizes[1]);
    size_t i;
    size_t j;

    freeReplyObject(redis("FLUSHALL"));
    snprintf(meta, sizeof(meta), "tc=%s kind=other", TAG_A);
    for (j = 0; j < 3; j++) {
        items[j].name = item_names[j];
        items[j].size = sizes[j];
        items[j].mode = 0644;
    }
    /* Items 0 and 1 are in every entry; item 2 is each entry's own. */
    for (j = 0; j < 2; j++) {
        fill(buf, sizes[j], 900 + (uint32_t)j);
        CHECK_EQ_INT(mithril_store_put(a, buf, sizes[j], items[j].addr), 0);
    }
    for (i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "w1/shared/%02zu", i);
        names[i] = keys[i];
        fill(buf, sizes[2], 1000 + (uint32_t)i);
        CHECK_EQ_INT(mithril_store_put(a, buf, sizes[2], items[2].addr), 0);
        CHECK_EQ_INT(mithril_entry_put(a, keys[i], items, 3, meta), 0);
    }
    CHECK_EQ_INT(mithril_store_set_remote(a, url, 0), 0);
    freeReplyObject(redis("CONFIG RESETSTAT"));
    memset(&r, 0, sizeof(r));
    CHECK_EQ_INT(mithril_remote_push(a, NULL, NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.entries, N);
    CHECK_EQ_INT(r.files, N + 2);
    /* One SET per entry and one per distinct blob, none twice. */
    CHECK_EQ_INT(redis_calls("set"), N + N + 2);
    CHECK_EQ_INT(mithril_store_set_remote(b, url, 1), 0);

    freeReplyObject(redis("CONFIG RESETSTAT"));
    memset(&r, 0, sizeof(r));
    CHECK_EQ_INT(mithril_remote_pull(b, NULL, NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.entries, N);
    CHECK_EQ_INT(r.files, N + 2);
    CHECK_EQ_INT(r.bytes, sizes[0] + sizes[1] + N * sizes[2]);
    /* One GET per entry and one per distinct blob, none twice. */
    CHECK_EQ_INT(redis_calls("get"), N + N + 2);
    CHECK(sizes_exact(b, names, N));
    for (i = 0; i < N; i++) {
        CHECK(same_entry(a, b, keys[i]));
    }
    CHECK_EQ_INT(verified_blobs(b), N + 2);
    free(buf);
    close_store(a, da);
    close_store(b, db);
}

/*
 * An entry whose second blob is corrupt in Redis: the pull rejects it, and
 * the first blob, already stored, is recorded as an orphan (sized, so
 * eviction and stats see it), not left unindexed.
 */
static void
test_pull_orphan(void)
{
    size_t sizes[2] = {300u << 10, 3000};
    char *da;
    char *db;
    mithril_store *a = open_store(&da);
    mithril_store *b = open_store(&db);
    mithril_blob_info info;
    mithril_entry *e = NULL;
    mithril_sync_result r;
    mithril_stats st;
    redisReply *rep;
    char bkey[128];

    freeReplyObject(redis("FLUSHALL"));
    put_entry(a, "w1/orphan", TAG_A, sizes, 2, 55);
    CHECK_EQ_INT(mithril_store_set_remote(a, url, 0), 0);
    CHECK_EQ_INT(mithril_remote_push(a, NULL, NULL, NULL, NULL), 0);
    CHECK_EQ_INT(mithril_entry_peek(a, "w1/orphan", &e), 0);
    snprintf(bkey, sizeof(bkey), "mithril:b:%s", e->items[1].addr);
    rep = redis("GET %s", bkey);
    CHECK(rep && rep->type == REDIS_REPLY_STRING && rep->len > 20);
    rep->str[rep->len - 1] ^= 1;
    freeReplyObject(redis("SET %s %b", bkey, rep->str, (size_t)rep->len));
    freeReplyObject(rep);

    CHECK_EQ_INT(mithril_store_set_remote(b, url, 1), 0);
    CHECK_EQ_INT(mithril_remote_pull(b, NULL, NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.entries, 0);
    CHECK_EQ_INT(r.rejected, 1);
    CHECK_EQ_INT(mithril_store_exists(b, e->items[0].addr), 1);
    CHECK_EQ_INT(mithril_store_exists(b, e->items[1].addr), 0);
    CHECK_EQ_INT(mithril_store_blob_info(b, e->items[0].addr, &info), 0);
    mithril_stats_get(b, &st);
    CHECK_EQ_INT(st.entries, 0);
    CHECK_EQ_INT(st.blobs, 1);
    CHECK_EQ_INT(st.size_bytes, info.stored_size);
    mithril_entry_free(e);

    close_store(a, da);
    close_store(b, db);
}

static void
test_queue(void)
{
    size_t sizes[2] = {100, 70000};
    char *da;
    char *db;
    mithril_store *a = open_store(&da);
    mithril_store *b = open_store(&db);
    char key[32];
    int i;

    freeReplyObject(redis("FLUSHALL"));
    CHECK_EQ_INT(mithril_store_set_remote(a, url, 0), 0);
    for (i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "w1/q/%d", i);
        put_entry(a, key, TAG_A, sizes, 2, 100 + (uint32_t)i);
        mi_remote_enqueue_entry(a, key);
    }
    CHECK_EQ_INT(mithril_remote_drain(a, 5000), 0);
    CHECK_EQ_INT(mithril_store_set_remote(b, url, 0), 0);
    for (i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "w1/q/%d", i);
        CHECK_EQ_INT(mi_remote_fetch_entry(b, key), 0);
        CHECK(same_entry(a, b, key));
    }

    /* What a consumer fetched is not queued back. */
    {
        redisReply *r = redis("SCARD mithril:entries");

        CHECK(r && r->integer == 20);
        freeReplyObject(r);
    }
    close_store(a, da);
    close_store(b, db);
}

static void
test_tampered(void)
{
    size_t sizes[2] = {1000, 2000};
    char *da;
    char *db;
    mithril_store *a = open_store(&da);
    mithril_store *b = open_store(&db);
    mithril_entry *e = NULL;
    redisReply *r;
    char *copy;
    char *p;
    char bkey[128];
    uint64_t before;

    freeReplyObject(redis("FLUSHALL"));
    CHECK_EQ_INT(mithril_store_set_secret(a, "k1", 2), 0);
    CHECK_EQ_INT(mithril_store_set_secret(b, "k1", 2), 0);
    put_entry(a, "w1/t/signed", TAG_A, sizes, 2, 7);
    CHECK_EQ_INT(mithril_store_set_remote(a, url, 0), 0);
    CHECK_EQ_INT(mithril_remote_push(a, NULL, NULL, NULL, NULL), 0);
    CHECK_EQ_INT(mithril_store_set_remote(b, url, 1), 0);

    /* Change the meta in Redis: the signature no longer matches. */
    r = redis("GET mithril:e:w1/t/signed");
    CHECK(r && r->type == REDIS_REPLY_STRING);
    copy = strdup(r->str);
    freeReplyObject(r);
    p = strstr(copy, "kind=other");
    p[5] = 'O';
    freeReplyObject(redis("SET mithril:e:w1/t/signed %s", copy));
    before = stat_of(b, 3);
    CHECK_EQ_INT(mi_remote_fetch_entry(b, "w1/t/signed"), MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(mithril_entry_peek(b, "w1/t/signed", &e), MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(stat_of(b, 3), before + 1);

    /* Unsigned (signature line removed) with a secret set: rejected. */
    p[5] = 'o';
    p = strstr(copy, "sig ");
    memmove(p, p + 69, strlen(p + 69) + 1);
    freeReplyObject(redis("SET mithril:e:w1/t/signed %s", copy));
    CHECK_EQ_INT(mi_remote_fetch_entry(b, "w1/t/signed"), MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(stat_of(b, 3), before + 2);
    free(copy);

    /* Signed entry back, but a blob's bytes changed in Redis. */
    CHECK_EQ_INT(mithril_remote_push(a, NULL, NULL, NULL, NULL), 0);
    CHECK_EQ_INT(mithril_entry_peek(a, "w1/t/signed", &e), 0);
    snprintf(bkey, sizeof(bkey), "mithril:b:%s", e->items[0].addr);
    r = redis("GET %s", bkey);
    CHECK(r && r->type == REDIS_REPLY_STRING && r->len > 20);
    r->str[r->len - 1] ^= 1;
    freeReplyObject(redis("SET %s %b", bkey, r->str, (size_t)r->len));
    freeReplyObject(r);
    CHECK_EQ_INT(mi_remote_fetch_entry(b, "w1/t/signed"), MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(mithril_store_exists(b, e->items[0].addr), 0);
    CHECK_EQ_INT(stat_of(b, 3), before + 3);
    mithril_entry_free(e);

    close_store(a, da);
    close_store(b, db);
}

static void
test_dead_remote(void)
{
    size_t sizes[1] = {100};
    char *da;
    mithril_store *a = open_store(&da);
    char dead[64];
    double t0;
    int i;

    /* A closed port: every call is a quick miss, never an error. */
    snprintf(dead, sizeof(dead), "redis://127.0.0.1:%d", free_port());
    CHECK_EQ_INT(mithril_store_set_remote(a, dead, 0), 0);
    put_entry(a, "w1/d/x", TAG_A, sizes, 1, 9);
    t0 = now_s();
    for (i = 0; i < 200; i++) {
        CHECK_EQ_INT(mi_remote_fetch_entry(a, "w1/d/y"), MITHRIL_ENOTFOUND);
        mi_remote_enqueue_entry(a, "w1/d/x");
    }
    CHECK(mithril_remote_push(a, NULL, NULL, NULL, NULL) < 0);
    mithril_remote_drain(a, 1000);
    /* A correctness bound (the breaker works), not a speed target. */
    CHECK(now_s() - t0 < 5.0);
    CHECK(stat_of(a, 2) >= 1);
    CHECK(stat_of(a, 2) <= 10);
    close_store(a, da);
}

static void
test_killed_mid_run(void)
{
    size_t sizes[2] = {100, 3000};
    char *da;
    char *db;
    mithril_store *a = open_store(&da);
    mithril_store *b = open_store(&db);
    char key[32];
    double spent;
    double t0;
    int i;

    freeReplyObject(redis("FLUSHALL"));
    CHECK_EQ_INT(mithril_store_set_remote(a, url, 0), 0);
    CHECK_EQ_INT(mithril_store_set_remote(b, url, 0), 0);
    put_entry(a, "w1/k/0", TAG_A, sizes, 2, 11);
    CHECK_EQ_INT(mithril_remote_push(a, NULL, NULL, NULL, NULL), 0);
    CHECK_EQ_INT(mi_remote_fetch_entry(b, "w1/k/0"), 0);

    redis_stop();
    spent = 0;
    for (i = 1; i < 100; i++) {
        snprintf(key, sizeof(key), "w1/k/%d", i);
        put_entry(a, key, TAG_A, sizes, 2, 11 + (uint32_t)i);
        /* Only the remote's share of the time is bounded. */
        t0 = now_s();
        mi_remote_enqueue_entry(a, key);
        CHECK_EQ_INT(mi_remote_fetch_entry(b, key), MITHRIL_ENOTFOUND);
        spent += now_s() - t0;
    }
    t0 = now_s();
    mithril_store_close(a);
    mithril_store_close(b);
    spent += now_s() - t0;
    CHECK(spent < 5.0);
    check_rmrf(da);
    check_rmrf(db);
    free(da);
    free(db);
    CHECK_EQ_INT(redis_start(), 0);
}

static void
test_fork(void)
{
    size_t sizes[1] = {500};
    char *da;
    mithril_store *a = open_store(&da);
    pid_t pid;
    int status = -1;

    freeReplyObject(redis("FLUSHALL"));
    CHECK_EQ_INT(mithril_store_set_remote(a, url, 0), 0);
    put_entry(a, "w1/f/parent", TAG_A, sizes, 1, 21);
    mi_remote_enqueue_entry(a, "w1/f/parent");
    CHECK_EQ_INT(mithril_remote_drain(a, 5000), 0);
    CHECK_EQ_INT(mi_remote_fetch_entry(a, "w1/f/none"), MITHRIL_ENOTFOUND);

    /* The child uses the inherited handle: own sockets, own thread. */
    pid = fork();
    if (pid == 0) {
        int bad = 0;

        put_entry(a, "w1/f/child", TAG_A, sizes, 1, 22);
        mi_remote_enqueue_entry(a, "w1/f/child");
        bad |= mithril_remote_drain(a, 5000) != 0;
        bad |= mi_remote_fetch_entry(a, "w1/f/none") != MITHRIL_ENOTFOUND;
        mithril_store_close(a);
        _exit(bad || check_failures ? 1 : 0);
    }
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* The parent's connection still answers correctly. */
    CHECK_EQ_INT(mi_remote_fetch_entry(a, "w1/f/none"), MITHRIL_ENOTFOUND);
    {
        redisReply *r = redis("SCARD mithril:entries");

        CHECK(r && r->integer == 2);
        freeReplyObject(r);
    }
    close_store(a, da);
}

static void
test_bad_urls(void)
{
    char *da;
    mithril_store *a = open_store(&da);

    CHECK_EQ_INT(mithril_store_set_remote(a, "http://x", 0), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_store_set_remote(a, "redis://", 0), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_store_set_remote(a, "redis://h:0", 0), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_store_set_remote(a, "redis://h:99999", 0),
                 MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_store_set_remote(a, "redis://h:1/x", 0),
                 MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_store_set_remote(a, "redis://h:6379/2", 0), 0);
    CHECK_EQ_INT(mithril_store_set_remote(a, "redis://h", 0), 0);
    CHECK_EQ_INT(mithril_store_set_remote(a, NULL, 0), 0);
    close_store(a, da);
}

int
main(void)
{
    signal(SIGPIPE, SIG_DFL);
    redis_dir = check_tmpdir();
    if (system("command -v redis-server >/dev/null") != 0) {
        printf("redis-server not installed: skipped\n");
        return check_report();
    }
    if (redis_start() < 0) {
        fprintf(stderr, "redis-server did not start\n");
        return 1;
    }
    RUN(test_bad_urls);
    RUN(test_push_pull);
    RUN(test_pull_batched);
    RUN(test_pull_shared);
    RUN(test_pull_orphan);
    RUN(test_queue);
    RUN(test_tampered);
#ifndef __SANITIZE_THREAD__
    /* ThreadSanitizer cannot follow a child that starts threads. */
    RUN(test_fork);
#endif
    RUN(test_dead_remote);
    RUN(test_killed_mid_run);
    redis_stop();
    check_rmrf(redis_dir);
    free(redis_dir);
    return check_report();
}
