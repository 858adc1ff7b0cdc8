/*
 * remote.c - the Redis tier: a store shares entries and blobs with other
 * machines through one Redis server (or a cluster front end).
 *
 * Redis keys (value formats are version 1):
 *
 *   mithril:e:<entry key>   the entry's wire encoding (sign.c), signed when
 *                           the producer had a secret
 *   mithril:entries         a set of every entry key pushed
 *   mithril:tc:<tag>        a set of the entry keys whose meta has tc=<tag>
 *   mithril:b:<addr>        a blob header, 16 bytes, then for small blobs
 *                           the payload:
 *                             "MB1" kind ('r' raw, 'z' zstd, 'c' chunked)
 *                             u64 LE content size, u32 LE chunk count
 *   mithril:b:<addr>:<i>    chunk i of a chunked blob (content over 4 MiB):
 *                           one kind byte ('r' or 'z'), then the payload of
 *                           content bytes [i * 4 MiB, (i + 1) * 4 MiB)
 *
 * Invariants:
 *  - Writers put a blob's chunks before its header, and every blob before
 *    the entry naming it, so a reader that finds a header or an entry
 *    finds what it needs, unless Redis evicted it (then: a miss).
 *  - Nothing read from Redis is recorded locally before it is verified:
 *    content against its address (streamed, memory bounded: a chunked blob
 *    goes through an unnamed temporary file), the entry's names and
 *    signature through mi_wire_accept.
 *  - A remote failure is never an error of a local operation. Every call
 *    runs under a connect timeout (200 ms) and read/write timeouts
 *    (500 ms); a circuit breaker opens for 30 s after 3 failures in a row,
 *    and for good once failed calls have cost the process 1 s in total.
 *  - Writes after a local put go through a bounded queue (1024 keys) that
 *    one background thread drains; a full queue drops keys (the next push
 *    sends them). mi_remote_close waits at most about 1 s for it.
 *  - A read-only remote is never written.
 *  - A Redis Cluster is found at its first MOVED answer: the slot map is
 *    loaded (CLUSTER SLOTS, cluster.c) and each command goes to the node
 *    serving its key, one connection per node and user (struct link); an
 *    operation redirected again is tried afresh on a reloaded map, at most
 *    REDIRECTS times. Keys are the same on a cluster as on one server.
 *
 * Pulls and read-throughs move an inline blob with one copy: its GET
 * replies are read off the socket straight into an aligned buffer laid
 * out as the local blob file (struct direct_in), hashed there, and handed
 * to the store, which keeps a zstd frame as it came and writes large
 * payloads with O_DIRECT (mi_store_put_staged). Push and pull run POOL
 * connections in parallel, so one entry's transfer overlaps another's
 * hashing and device writes. A pull's blobs are deferred puts: synced a
 * batch (BATCH entries, pool-wide) at a time, just before the one index
 * commit that records them with their entries (pending_flush).
 */
#include "cluster.h"
#include "sign.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#define CHUNK              (4u << 20)
#define HEADER_LEN         16
#define QUEUE_CAP          1024
#define CONNECT_TIMEOUT_MS 200
#define IO_TIMEOUT_MS      500
#define BREAKER_FAILURES   3
#define BREAKER_OPEN_NS    (30LL * 1000000000LL)
#define BUDGET_NS          (1000LL * 1000000LL)
#define CLOSE_DRAIN_MS     1000
#define WINDOW             4 /* pipelined GETs in flight */
#define REDIRECTS          3 /* tries of one operation a cluster redirects */

/*
 * The connections of one user of the remote (a pull worker, the
 * foreground, the write queue's thread): to node 0 for a plain server, or
 * to each node of a cluster that this user has sent a key to, made on
 * demand (link_for).
 */
struct link {
    struct mi_remote *r;
    redisContext *c[MI_CL_NODES];
    pthread_mutex_t *pub; /* held while c[] changes, or NULL: see bg */
};

struct mi_remote {
    char *url;
    char host[256];
    int port;
    int db;
    int read_only;

    /* Where keys live: node 0 alone, or a cluster's slot map. */
    struct mi_cluster *map;

    /* The foreground connections, one caller at a time. */
    pthread_mutex_t mu;
    struct link fg;
    struct direct_in *fg_in; /* its blob reader, made on first use */

    /* The breaker, shared by both connections. */
    pthread_mutex_t bmu;
    int failures;
    int64_t open_until_ns;
    int64_t failed_ns;
    int spent; /* failures used up the process's budget */

    /* The write queue and its thread. */
    pthread_mutex_t qmu;
    pthread_cond_t qcond;
    pthread_cond_t qidle;
    char *queue[QUEUE_CAP];
    size_t qhead;
    size_t qlen;
    int busy;
    int stop;
    int started;
    pthread_t thread;
    struct link bg; /* its c[] changes under qmu, read by remote_stop */
    uint64_t dropped;
    pid_t owner; /* the process whose thread and sockets these are */

    /* The last complete pull of one toolchain's entries (under mu). */
    char pulled_tc[256];
    int64_t pulled_ns;
};

static pthread_mutex_t attach_mu = PTHREAD_MUTEX_INITIALIZER;

struct direct_in;
static void direct_in_free(struct direct_in *d);

/* Set while this thread records what it fetched: no echo to the queue. */
static _Thread_local int fetching;

/* Set when a cluster redirected one of this thread's commands. */
static _Thread_local int redirected;

/* ---- breaker ---- */

static int
breaker_allow(struct mi_remote *r)
{
    int ok;

    pthread_mutex_lock(&r->bmu);
    ok = !r->spent && mi_now_ns() >= r->open_until_ns;
    pthread_mutex_unlock(&r->bmu);
    return ok;
}

static void
breaker_fail(mithril_store *s, struct mi_remote *r, int64_t spent_ns,
             const char *what)
{
    pthread_mutex_lock(&r->bmu);
    r->failures++;
    r->failed_ns += spent_ns;
    if (!r->spent && r->failed_ns >= BUDGET_NS) {
        r->spent = 1;
        mi_log(MITHRIL_LOG_WARN,
               "remote %s: off for this process (failures cost %lld ms)",
               r->url, (long long)(r->failed_ns / 1000000));
    } else if (r->failures >= BREAKER_FAILURES &&
               mi_now_ns() >= r->open_until_ns) {
        r->open_until_ns = mi_now_ns() + BREAKER_OPEN_NS;
        mi_log(MITHRIL_LOG_WARN, "remote %s: %d failures, off for 30 s", r->url,
               r->failures);
    }
    pthread_mutex_unlock(&r->bmu);
    mi_log(MITHRIL_LOG_DEBUG, "remote %s: %s", r->url, what);
    mithril_stats_add(s, MITHRIL_COUNTER_REMOTE_ERROR, 1);
}

static void
breaker_ok(struct mi_remote *r)
{
    pthread_mutex_lock(&r->bmu);
    r->failures = 0;
    pthread_mutex_unlock(&r->bmu);
}

/*
 * hiredis writes with write(2): a peer that went away would raise SIGPIPE
 * and kill the process. The signal is blocked in this thread around remote
 * calls and a pending one is consumed before unblocking.
 */
static void
sigpipe_block(sigset_t *old)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, old);
}

static void
sigpipe_restore(const sigset_t *old)
{
    struct timespec zero = {0, 0};
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    if (!sigismember(old, SIGPIPE)) {
        while (sigtimedwait(&set, NULL, &zero) > 0) {
        }
        pthread_sigmask(SIG_SETMASK, old, NULL);
    }
}

/* ---- connections ---- */

static int
parse_url(const char *url, char *host, size_t host_len, int *port, int *db)
{
    const char *p;
    const char *colon;
    const char *slash;
    size_t n;
    char *end;
    long v;

    if (strncmp(url, "redis://", 8) != 0) {
        return MITHRIL_EINVAL;
    }
    p = url + 8;
    slash = strchr(p, '/');
    colon = strchr(p, ':');
    if (colon && slash && colon > slash) {
        colon = NULL;
    }
    n = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= host_len) {
        return MITHRIL_EINVAL;
    }
    memcpy(host, p, n);
    host[n] = '\0';
    *port = 6379;
    *db = 0;
    if (colon) {
        v = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || v < 1 || v > 65535 || (*end && *end != '/')) {
            return MITHRIL_EINVAL;
        }
        *port = (int)v;
    }
    if (slash && slash[1]) {
        v = strtol(slash + 1, &end, 10);
        if (end == slash + 1 || *end || v < 0 || v > 1000000) {
            return MITHRIL_EINVAL;
        }
        *db = (int)v;
    }
    return 0;
}

static struct timeval
ms_tv(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    return tv;
}

/*
 * An error reply's verdict, for a Redis Cluster's answers:
 *   MOVED        the key's slot is served by another node: MITHRIL_EREMOTE,
 *                and `redirected` is set so that the operation is tried
 *                again on the cluster's map loaded anew;
 *   ASK          the slot is migrating and the key is not on this node
 *                (it may be on the next): MITHRIL_ENOTFOUND, a miss for
 *                now (ASK is not followed, see LIMITATIONS);
 *   CLUSTERDOWN, CROSSSLOT
 *                MITHRIL_EREMOTE, said once per process at error level;
 * and MITHRIL_EFORMAT for any other error.
 */
static int
error_reply(const char *msg, size_t len)
{
    static const char *const cluster[] = {"MOVED ", "ASK ", "CLUSTERDOWN",
                                          "CROSSSLOT"};
    static int said;
    size_t i;
    size_t k;

    for (i = 0; i < sizeof(cluster) / sizeof(cluster[0]); i++) {
        k = strlen(cluster[i]);
        if (len < k || memcmp(msg, cluster[i], k) != 0) {
            continue;
        }
        if (i == 0) {
            redirected = 1;
        } else if (i == 1) {
            return MITHRIL_ENOTFOUND;
        } else if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED)) {
            mi_log(MITHRIL_LOG_ERROR, "remote: the cluster answered '%.*s'",
                   (int)(len < 120 ? len : 120), msg);
        }
        return MITHRIL_EREMOTE;
    }
    return MITHRIL_EFORMAT;
}

/* The same for a reply hiredis read: an error reply, or EFORMAT. */
static int
reply_error(const redisReply *rep)
{
    return rep->type == REDIS_REPLY_ERROR ? error_reply(rep->str, rep->len)
                                          : MITHRIL_EFORMAT;
}

/*
 * A reply that is not what the command answers when it works: a miss when
 * the cluster says so (ASK), else MITHRIL_EREMOTE.
 */
static int
unexpected(const redisReply *rep)
{
    return reply_error(rep) == MITHRIL_ENOTFOUND ? MITHRIL_ENOTFOUND
                                                 : MITHRIL_EREMOTE;
}

/*
 * hiredis makes an array reply's element table when it reads the array's
 * header, before one element has arrived: a peer that answers
 * "*555555553" has it ask for 4 GiB at once. The largest array mithril
 * asks for is the entry list (SMEMBERS), so arrays longer than
 * MI_REPLY_MAX_ELEMENTS are refused: the reply fails as an I/O error
 * (REDIS_ERR_OOM) with nothing allocated. hiredis 1.x has a reader field
 * for this; 0.14 (Debian 12) is bounded through its object functions.
 */
#if HIREDIS_MAJOR >= 1
void
mi_reader_bound(redisReader *rd)
{
    rd->maxelements = MI_REPLY_MAX_ELEMENTS;
}
#else
static redisReplyObjectFunctions bounded_fns;
static void *(*default_array)(const redisReadTask *, int);
static pthread_once_t bounded_once = PTHREAD_ONCE_INIT;

static void *
bounded_array(const redisReadTask *task, int elements)
{
    if (elements < 0 || elements > MI_REPLY_MAX_ELEMENTS) {
        return NULL;
    }
    return default_array(task, elements);
}

static void
bounded_init(void)
{
    redisReader *rd = redisReaderCreate();

    if (rd) {
        bounded_fns = *rd->fn;
        default_array = bounded_fns.createArray;
        bounded_fns.createArray = bounded_array;
        redisReaderFree(rd);
    }
}

void
mi_reader_bound(redisReader *rd)
{
    pthread_once(&bounded_once, bounded_init);
    if (default_array && rd->fn && rd->fn->createArray == default_array) {
        rd->fn = &bounded_fns;
    }
}
#endif

static redisContext *
conn_open(struct mi_remote *r, const char *host, int port)
{
    redisContext *c;
    redisReply *rep;

    c = redisConnectWithTimeout(host, port, ms_tv(CONNECT_TIMEOUT_MS));
    if (!c) {
        return NULL;
    }
    if (c->err || redisSetTimeout(c, ms_tv(IO_TIMEOUT_MS)) != REDIS_OK) {
        mi_log(MITHRIL_LOG_DEBUG, "remote %s: connect: %s", r->url, c->errstr);
        redisFree(c);
        return NULL;
    }
    /*
     * Keep the reader's buffer between replies: hiredis frees an idle
     * buffer above 16 KiB by default, so every large GET would fault a
     * fresh one in again.
     */
    c->reader->maxbuf = 0;
    mi_reader_bound(c->reader);
    if (r->db != 0) {
        rep = redisCommand(c, "SELECT %d", r->db);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            if (rep) {
                freeReplyObject(rep);
            }
            redisFree(c);
            return NULL;
        }
        freeReplyObject(rep);
    }
    return c;
}

/* The node serving key: 0 on a plain server. */
static int
node_of(const struct link *l, const char *key)
{
    return mi_cluster_node_for(l->r->map, key, strlen(key));
}

/*
 * The connection of link l to node i, made if need be; NULL if it cannot
 * be made.
 */
static redisContext *
link_at(struct link *l, int i)
{
    struct mi_remote *r = l->r;
    redisContext *c;
    char host[256];
    int port;

    if (l->c[i]) {
        return l->c[i];
    }
    if (mi_cluster_node(r->map, i, host, sizeof(host), &port) < 0) {
        return NULL;
    }
    c = conn_open(r, host, port);
    if (c && l->pub) {
        pthread_mutex_lock(l->pub);
        l->c[i] = c;
        pthread_mutex_unlock(l->pub);
    } else if (c) {
        l->c[i] = c;
    }
    return c;
}

/* The connection of l to the node serving key (NULL: node 0). */
static redisContext *
link_for(struct link *l, const char *key)
{
    return link_at(l, key ? node_of(l, key) : 0);
}

/* 1 if a connection of l has failed (it must not be used again). */
static int
link_failed(const struct link *l)
{
    int i;

    for (i = 0; i < MI_CL_NODES; i++) {
        if (l->c[i] && l->c[i]->err) {
            return 1;
        }
    }
    return 0;
}

/* Close every connection of l (after a failure: replies may be owed). */
static void
link_close(struct link *l)
{
    redisContext *c[MI_CL_NODES];
    int i;

    if (l->pub) {
        pthread_mutex_lock(l->pub);
    }
    memcpy(c, l->c, sizeof(c));
    memset(l->c, 0, sizeof(l->c));
    if (l->pub) {
        pthread_mutex_unlock(l->pub);
    }
    for (i = 0; i < MI_CL_NODES; i++) {
        if (c[i]) {
            redisFree(c[i]);
        }
    }
}

/*
 * After a redirect: load the cluster's slot map from the first node that
 * answers CLUSTER SLOTS, unless a map newer than generation gen is in
 * already. 0, or MITHRIL_EREMOTE when no node gave one.
 */
static int
cluster_refresh(struct mi_remote *r, uint64_t gen)
{
    char host[256];
    redisContext *c;
    redisReply *rep;
    int port;
    int rc = MITHRIL_EREMOTE;
    int i;

    for (i = 0; rc < 0 && mi_cluster_gen(r->map) == gen &&
                mi_cluster_node(r->map, i, host, sizeof(host), &port) == 0;
         i++) {
        c = conn_open(r, host, port);
        rep = c ? redisCommand(c, "CLUSTER SLOTS") : NULL;
        if (rep && mi_cluster_load(r->map, rep, host) == 0) {
            rc = 0;
            if (gen == 0) {
                mi_log(MITHRIL_LOG_DEBUG,
                       "remote %s: a Redis Cluster; each key goes to the "
                       "node serving its slot",
                       r->url);
            }
        }
        if (rep) {
            freeReplyObject(rep);
        }
        if (c) {
            redisFree(c);
        }
    }
    return mi_cluster_gen(r->map) != gen ? 0 : rc;
}

/* A reply, or NULL on an I/O error (the connection is then unusable). */
static redisReply *
call(redisContext *c, int argc, const char **argv, const size_t *lens)
{
    redisReply *rep = redisCommandArgv(c, argc, argv, lens);

    if (!rep && c->err == REDIS_ERR_OOM) {
        mi_log(MITHRIL_LOG_WARN,
               "remote: %s: reply refused: an array over %d elements, or "
               "out of memory",
               argv[0], MI_REPLY_MAX_ELEMENTS);
    }
    return rep;
}

static int
reply_status(redisContext *c, redisReply *rep)
{
    int rc = 0;

    if (!rep) {
        return MITHRIL_EREMOTE;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        mi_log(MITHRIL_LOG_DEBUG, "remote: %s", rep->str);
        rc = unexpected(rep);
    }
    freeReplyObject(rep);
    return rc;
}

static int
cmd_set(redisContext *c, const char *key, const void *v1, size_t l1,
        const void *v2, size_t l2)
{
    const char *argv[3] = {"SET", key, NULL};
    size_t lens[3] = {3, strlen(key), 0};
    char *joined = NULL;
    int rc;

    if (v2 && l2) {
        joined = malloc(l1 + l2);
        if (!joined) {
            return -ENOMEM;
        }
        memcpy(joined, v1, l1);
        memcpy(joined + l1, v2, l2);
        argv[2] = joined;
        lens[2] = l1 + l2;
    } else {
        argv[2] = v1;
        lens[2] = l1;
    }
    rc = reply_status(c, call(c, 3, argv, lens));
    free(joined);
    return rc;
}

/* SET key on the node of l that serves it. */
static int
link_set(struct link *l, const char *key, const void *v1, size_t l1,
         const void *v2, size_t l2)
{
    redisContext *c = link_for(l, key);

    return c ? cmd_set(c, key, v1, l1, v2, l2) : MITHRIL_EREMOTE;
}

/* ---- attaching ---- */

static void
remote_free(struct mi_remote *r)
{
    size_t i;

    for (i = 0; i < r->qlen; i++) {
        free(r->queue[(r->qhead + i) % QUEUE_CAP]);
    }
    link_close(&r->fg);
    link_close(&r->bg);
    mi_cluster_free(r->map);
    direct_in_free(r->fg_in);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->bmu);
    pthread_mutex_destroy(&r->qmu);
    pthread_cond_destroy(&r->qcond);
    pthread_cond_destroy(&r->qidle);
    free(r->url);
    free(r);
}

static void remote_stop(mithril_store *s, struct mi_remote *r);

int
mithril_store_set_remote(mithril_store *s, const char *url, int read_only)
{
    struct mi_remote *r;
    struct mi_remote *old;
    int rc;

    if (!s) {
        return MITHRIL_EINVAL;
    }
    if (!url || !*url) {
        pthread_mutex_lock(&attach_mu);
        old = s->remote;
        s->remote = NULL;
        pthread_mutex_unlock(&attach_mu);
        if (old) {
            remote_stop(s, old);
        }
        return 0;
    }
    r = calloc(1, sizeof(*r));
    if (!r) {
        return -ENOMEM;
    }
    rc = parse_url(url, r->host, sizeof(r->host), &r->port, &r->db);
    if (rc < 0) {
        mi_log(MITHRIL_LOG_ERROR,
               "remote '%s': expected redis://HOST:PORT[/DB]", url);
        free(r);
        return rc;
    }
    r->url = strdup(url);
    r->map = mi_cluster_new(r->host, r->port);
    if (!r->url || !r->map) {
        free(r->url);
        mi_cluster_free(r->map);
        free(r);
        return -ENOMEM;
    }
    r->read_only = read_only ? 1 : 0;
    r->fg.r = r;
    r->bg.r = r;
    r->bg.pub = &r->qmu;
    r->owner = getpid();
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->bmu, NULL);
    pthread_mutex_init(&r->qmu, NULL);
    pthread_cond_init(&r->qcond, NULL);
    pthread_cond_init(&r->qidle, NULL);
    pthread_mutex_lock(&attach_mu);
    old = s->remote;
    s->remote = r;
    pthread_mutex_unlock(&attach_mu);
    if (old) {
        remote_stop(s, old);
    }
    return 0;
}

/* The store's remote, attached on first use from MITHRIL_REMOTE. */
/*
 * A forked child inherits the parent's sockets and queue but not its
 * thread: it must neither talk on the parent's connections nor wait for
 * the thread. It closes its copies and starts over.
 */
static void
after_fork(struct mi_remote *r)
{
    size_t i;

    if (r->owner == getpid()) {
        return;
    }
    r->owner = getpid();
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->bmu, NULL);
    pthread_mutex_init(&r->qmu, NULL);
    pthread_cond_init(&r->qcond, NULL);
    pthread_cond_init(&r->qidle, NULL);
    for (i = 0; i < r->qlen; i++) {
        free(r->queue[(r->qhead + i) % QUEUE_CAP]);
    }
    r->qlen = 0;
    r->busy = 0;
    r->started = 0;
    r->stop = 0;
    link_close(&r->fg);
    link_close(&r->bg);
}

static struct mi_remote *
remote_of(mithril_store *s)
{
    struct mi_remote *r;
    const char *url = NULL;

    pthread_mutex_lock(&attach_mu);
    r = s->remote;
    if (r) {
        after_fork(r);
    }
    if (!r && s->remote_url && *s->remote_url) {
        url = s->remote_url;
    }
    pthread_mutex_unlock(&attach_mu);
    if (r || !url) {
        return r;
    }
    if (mithril_store_set_remote(s, url, s->remote_read_only) < 0) {
        return NULL;
    }
    pthread_mutex_lock(&attach_mu);
    r = s->remote;
    pthread_mutex_unlock(&attach_mu);
    return r;
}

/* ---- blobs ---- */

static void
blob_key(char *buf, size_t n, const char *addr, long chunk)
{
    if (chunk < 0) {
        snprintf(buf, n, "mithril:b:%s", addr);
    } else {
        snprintf(buf, n, "mithril:b:%s:%ld", addr, chunk);
    }
}

/*
 * Compress data into *z when that saves at least an eighth; returns the
 * compressed length, or 0 to send it raw.
 */
static size_t
maybe_compress(const void *data, size_t len, void **z)
{
    size_t bound;
    size_t n;
    void *buf;

    *z = NULL;
    if (len < 512) {
        return 0;
    }
    bound = ZSTD_compressBound(len);
    buf = malloc(bound);
    if (!buf) {
        return 0;
    }
    n = ZSTD_compress(buf, bound, data, len, 1);
    if (ZSTD_isError(n) || n > len - len / 8) {
        free(buf);
        return 0;
    }
    *z = buf;
    return n;
}

/* Decode one payload (kind 'r' or 'z') of exactly want bytes into out. */
static int
decode_payload(char kind, const void *p, size_t n, void *out, size_t want)
{
    size_t got;

    if (kind == 'r') {
        if (n != want) {
            return MITHRIL_ECORRUPT;
        }
        memcpy(out, p, n);
        return 0;
    }
    if (kind != 'z') {
        return MITHRIL_EFORMAT;
    }
    got = ZSTD_decompress(out, want, p, n);
    if (ZSTD_isError(got) || got != want) {
        return MITHRIL_ECORRUPT;
    }
    return 0;
}

static int
temp_fd(mithril_store *s)
{
    char path[4096];
    int fd;

    fd = open(mithril_store_dir(s), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) {
        return fd;
    }
    fd = mi_temp_open(mithril_store_dir(s), path, 0600);
    if (fd >= 0) {
        unlink(path);
    }
    return fd;
}

/* Send one local blob (content size len) to the remote. */
static int
push_blob(mithril_store *s, struct link *l, const char *addr, uint64_t len,
          uint64_t *sent)
{
    uint8_t head[HEADER_LEN] = {'M', 'B', '1', 'r'};
    char key[128];
    void *data = NULL;
    void *z = NULL;
    size_t dlen = 0;
    size_t zlen;
    uint8_t *buf = NULL;
    uint64_t nchunks;
    uint64_t i;
    ssize_t got;
    int fd = -1;
    int rc;

    blob_key(key, sizeof(key), addr, -1);
    if (len <= CHUNK) {
        rc = mithril_store_get(s, addr, &data, &dlen);
        if (rc < 0) {
            return rc;
        }
        zlen = maybe_compress(data, dlen, &z);
        head[3] = zlen ? 'z' : 'r';
        mi_put_le64(head + 4, dlen);
        rc = link_set(l, key, head, HEADER_LEN, zlen ? z : data,
                      zlen ? zlen : dlen);
        *sent += HEADER_LEN + (zlen ? zlen : dlen);
        goto out;
    }

    /* Large: stage the verified content, then send it chunk by chunk. */
    fd = temp_fd(s);
    if (fd < 0) {
        return mi_log_errno("open temporary file", mithril_store_dir(s));
    }
    rc = mithril_store_get_fd(s, addr, fd);
    if (rc < 0) {
        goto out;
    }
    buf = malloc(CHUNK + 1);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    lseek(fd, 0, SEEK_SET);
    nchunks = (len + CHUNK - 1) / CHUNK;
    for (i = 0; i < nchunks; i++) {
        size_t want = (size_t)(i + 1 < nchunks ? CHUNK : len - i * CHUNK);

        got = mi_read_full(fd, buf + 1, want);
        if (got != (ssize_t)want) {
            rc = got < 0 ? (int)got : MITHRIL_ECORRUPT;
            goto out;
        }
        zlen = maybe_compress(buf + 1, want, &z);
        blob_key(key, sizeof(key), addr, (long)i);
        buf[0] = zlen ? 'z' : 'r';
        if (zlen) {
            rc = link_set(l, key, buf, 1, z, zlen);
        } else {
            rc = link_set(l, key, buf, want + 1, NULL, 0);
        }
        free(z);
        z = NULL;
        if (rc < 0) {
            goto out;
        }
        *sent += 1 + (zlen ? zlen : want);
    }
    head[3] = 'c';
    mi_put_le64(head + 4, len);
    head[12] = (uint8_t)nchunks;
    head[13] = (uint8_t)(nchunks >> 8);
    head[14] = (uint8_t)(nchunks >> 16);
    head[15] = (uint8_t)(nchunks >> 24);
    blob_key(key, sizeof(key), addr, -1);
    rc = link_set(l, key, head, HEADER_LEN, NULL, 0);
    *sent += HEADER_LEN;
out:
    if (fd >= 0) {
        close(fd);
    }
    free(buf);
    free(z);
    mithril_free(data);
    return rc;
}

/* Fetch the chunks of a chunked blob into the local store, verified. */
static int
fetch_chunks(mithril_store *s, struct link *l, const char *addr, uint64_t len,
             uint64_t nchunks, uint64_t *got_bytes)
{
    redisContext *on[WINDOW]; /* chunk i's request went to on[i % WINDOW] */
    uint8_t digest[MITHRIL_BLAKE3_OUT_LEN];
    char hex[MITHRIL_HEX_SIZE];
    char put_addr[MITHRIL_HEX_SIZE];
    char key[128];
    const char *argv[2] = {"GET", key};
    size_t lens[2] = {3, 0};
    mithril_blake3 h;
    redisReply *rep = NULL;
    uint8_t *buf = NULL;
    uint64_t sent = 0;
    uint64_t received = 0;
    uint64_t i;
    int fd = -1;
    int rc = 0;

    if (nchunks != (len + CHUNK - 1) / CHUNK) {
        return MITHRIL_ECORRUPT;
    }
    buf = mi_direct_alloc(CHUNK); /* aligned: hashed in place */
    fd = temp_fd(s);
    if (!buf || fd < 0) {
        rc = fd < 0 ? mi_log_errno("open temporary file", mithril_store_dir(s))
                    : -ENOMEM;
        goto out;
    }
    mithril_blake3_init(&h);
    for (i = 0; i < nchunks; i++) {
        size_t want = (size_t)(i + 1 < nchunks ? CHUNK : len - i * CHUNK);

        /* Keep up to WINDOW requests in flight. */
        while (sent < nchunks && sent < i + WINDOW) {
            redisContext *c;

            blob_key(key, sizeof(key), addr, (long)sent);
            lens[1] = strlen(key);
            c = link_for(l, key);
            if (!c || redisAppendCommandArgv(c, 2, argv, lens) != REDIS_OK) {
                rc = MITHRIL_EREMOTE;
                goto out;
            }
            on[sent++ % WINDOW] = c;
        }
        if (redisGetReply(on[i % WINDOW], (void **)&rep) != REDIS_OK || !rep) {
            rep = NULL;
            rc = MITHRIL_EREMOTE;
            goto out;
        }
        received++;
        if (rep->type == REDIS_REPLY_NIL) {
            rc = MITHRIL_ENOTFOUND;
        } else if (rep->type != REDIS_REPLY_STRING || rep->len < 1) {
            rc = unexpected(rep);
        } else {
            rc = decode_payload(rep->str[0], rep->str + 1, (size_t)rep->len - 1,
                                buf, want);
        }
        freeReplyObject(rep);
        rep = NULL;
        if (rc == 0) {
            mithril_blake3_update(&h, buf, want);
            rc = mi_write_all(fd, buf, want);
        }
        if (rc < 0) {
            goto out;
        }
    }
    mithril_blake3_finalize(&h, digest, sizeof(digest));
    mithril_hex(digest, sizeof(digest), hex);
    if (strcmp(hex, addr) != 0) {
        rc = MITHRIL_ECORRUPT;
        goto out;
    }
    lseek(fd, 0, SEEK_SET);
    rc = mithril_store_put_fd(s, fd, put_addr);
    if (rc == 0 && strcmp(put_addr, addr) != 0) {
        rc = MITHRIL_ECORRUPT;
    }
    if (rc == 0) {
        *got_bytes += len;
    }
out:
    /* Replies still owed after a failure: read and drop them. */
    while (rc != MITHRIL_EREMOTE && received < sent) {
        if (redisGetReply(on[received % WINDOW], (void **)&rep) != REDIS_OK ||
            !rep) {
            rc = MITHRIL_EREMOTE;
            break;
        }
        freeReplyObject(rep);
        received++;
    }
    if (fd >= 0) {
        close(fd);
    }
    free(buf);
    return rc;
}

/*
 * Verify an inline value (the 16-byte wire header, then the payload) and
 * store it as it came: a zstd frame stays compressed, so nothing is hashed
 * or compressed a second time. staged: val is an aligned buffer whose
 * header bytes the store may overwrite (mi_store_put_staged).
 */
static int
store_inline(mithril_store *s, uint8_t *val, size_t n, int staged,
             const char *addr, uint64_t len, uint64_t *got_bytes,
             struct mi_blob_list *defer)
{
    uint8_t digest[MITHRIL_BLAKE3_OUT_LEN];
    char hex[MITHRIL_HEX_SIZE];
    const uint8_t *payload = val + HEADER_LEN;
    size_t plen = n - HEADER_LEN;
    const void *content = payload;
    int zstd = val[3] == 'z';
    void *buf = NULL;
    int rc = 0;

    if (zstd) {
        buf = malloc(len ? (size_t)len : 1);
        if (!buf) {
            return -ENOMEM;
        }
        rc = decode_payload(val[3], payload, plen, buf, (size_t)len);
        content = buf;
    } else if (plen != len) {
        rc = MITHRIL_ECORRUPT;
    }
    if (rc == 0) {
        mithril_blake3_hash(content, (size_t)len, digest);
        mithril_hex(digest, sizeof(digest), hex);
        rc = strcmp(hex, addr) == 0 ? 0 : MITHRIL_ECORRUPT;
    }
    free(buf);
    if (rc == 0) {
        rc = staged ? mi_store_put_staged(s, addr, zstd, val, plen, len, defer)
                    : mi_store_put_encoded(s, addr, zstd, payload, plen, len,
                                           defer);
    }
    if (rc == 0) {
        *got_bytes += len;
    }
    return rc;
}

/* A chunked blob seen in a pipelined header reply, fetched afterwards. */
struct deferred {
    const mithril_item *item;
    uint64_t nchunks;
};

/* Check a blob's header value (n bytes at h) against the item it is for. */
static int
check_header(const uint8_t *h, size_t n, const mithril_item *it,
             uint64_t *nchunks)
{
    char kind;

    if (n < HEADER_LEN || memcmp(h, "MB1", 3) != 0) {
        return MITHRIL_EFORMAT;
    }
    kind = (char)h[3];
    if (mi_get_le64(h + 4) != it->size) {
        return MITHRIL_ECORRUPT;
    }
    *nchunks = (uint64_t)h[12] | (uint64_t)h[13] << 8 | (uint64_t)h[14] << 16 |
               (uint64_t)h[15] << 24;
    if (kind == 'c' ? n != HEADER_LEN
                    : (kind != 'r' && kind != 'z') || it->size > CHUNK) {
        return MITHRIL_EFORMAT;
    }
    return 0;
}

/*
 * Bulk replies read straight off the connection's socket into an aligned
 * buffer laid out as a blob file (mi_store_put_staged), so that an inline
 * blob crosses user space once: one copy from the socket, hashed in
 * place, written to the device with O_DIRECT. hiredis is bypassed only
 * while it holds no unread bytes and only for replies this code asked
 * for, so the stream stays in step; on any doubt the connection is
 * marked failed and dropped. Each node of a link has a stage of its own
 * (the bytes read past a reply's header), so the replies of a window
 * spread over a cluster's nodes are read the same way.
 */
#define STAGE (64u << 10)
#define DIRECT_CAP                                                             \
    (((size_t)HEADER_LEN + CHUNK + MI_DIRECT_ALIGN - 1) &                      \
     ~((size_t)MI_DIRECT_ALIGN - 1))
/*
 * A reader starts with a buffer of ordinary pages for the small values
 * most pulls are made of (a warm start's entries hold files of a few KiB)
 * and moves to DIRECT_CAP, on huge pages, at the first value that does
 * not fit: a warm start's pull no longer faults, zeroes and unmaps a
 * 2 MiB huge page in each of its 8 workers for a few KiB.
 */
#define DIRECT_SMALL ((size_t)256 << 10)

_Static_assert(HEADER_LEN == MI_BLOB_HEADER, "wire and blob headers differ");

/* What was read off one connection past the replies taken so far. */
struct din_stage {
    size_t pos;
    size_t len;
    char stage[STAGE];
};

struct direct_in {
    uint8_t *buf; /* cap bytes, MI_DIRECT_ALIGN-aligned */
    size_t cap;   /* DIRECT_SMALL, then DIRECT_CAP once a value needs it */
    struct din_stage *st[MI_CL_NODES]; /* node i's, made on first use */
};

static struct direct_in *
direct_in_new(void)
{
    struct direct_in *d = calloc(1, sizeof(*d));

    if (!d || !(d->buf = mi_direct_alloc(DIRECT_SMALL))) {
        free(d);
        return NULL;
    }
    d->cap = DIRECT_SMALL;
    return d;
}

/* Make d's buffer hold n bytes (n <= DIRECT_CAP); 0 or -ENOMEM. */
static int
din_reserve(struct direct_in *d, size_t n)
{
    uint8_t *big;

    if (n <= d->cap) {
        return 0;
    }
    if (!(big = mi_direct_alloc(DIRECT_CAP))) {
        return -ENOMEM;
    }
    free(d->buf);
    d->buf = big;
    d->cap = DIRECT_CAP;
    return 0;
}

static void
direct_in_free(struct direct_in *d)
{
    int i;

    if (d) {
        for (i = 0; i < MI_CL_NODES; i++) {
            free(d->st[i]);
        }
        free(d->buf);
        free(d);
    }
}

/* Node i's stage, emptied (NULL: out of memory). */
static struct din_stage *
din_stage(struct direct_in *d, int i)
{
    if (!d->st[i] && !(d->st[i] = malloc(sizeof(*d->st[i])))) {
        return NULL;
    }
    d->st[i]->pos = d->st[i]->len = 0;
    return d->st[i];
}

static int
din_fail(redisContext *c)
{
    c->err = REDIS_ERR_IO;
    return MITHRIL_EREMOTE;
}

/* Read more into the stage; the socket's read timeout bounds the wait. */
static int
din_fill(redisContext *c, struct din_stage *d)
{
    ssize_t n;

    if (d->pos > 0) {
        memmove(d->stage, d->stage + d->pos, d->len - d->pos);
        d->len -= d->pos;
        d->pos = 0;
    }
    if (d->len == sizeof(d->stage)) {
        return din_fail(c);
    }
    do {
        n = read(c->fd, d->stage + d->len, sizeof(d->stage) - d->len);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        return din_fail(c);
    }
    d->len += (size_t)n;
    return 0;
}

/* n bytes into dst: what the stage holds first, then from the socket. */
static int
din_read(redisContext *c, struct din_stage *d, uint8_t *dst, size_t n)
{
    size_t have = d->len - d->pos < n ? d->len - d->pos : n;
    ssize_t r;

    memcpy(dst, d->stage + d->pos, have);
    d->pos += have;
    dst += have;
    n -= have;
    while (n > 0) {
        r = read(c->fd, dst, n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return din_fail(c);
        }
        dst += r;
        n -= (size_t)r;
    }
    return 0;
}

/*
 * The next GET reply of c, whose stage is d, into in's buffer (grown as
 * the value needs): its length in *n, or MITHRIL_ENOTFOUND (nil),
 * MITHRIL_EFORMAT (an error reply or a value too large, consumed),
 * -ENOMEM (no memory to grow the buffer, the value consumed),
 * MITHRIL_EREMOTE (the stream is broken).
 */
static int
din_reply(redisContext *c, struct din_stage *d, struct direct_in *in, size_t *n)
{
    char line[64];
    uint8_t crlf[2];
    char *nl;
    char *end;
    long long len;
    size_t left;
    size_t k;
    int rc;

    while (!(nl = memchr(d->stage + d->pos, '\n', d->len - d->pos))) {
        if ((rc = din_fill(c, d)) < 0) {
            return rc;
        }
    }
    k = (size_t)(nl - (d->stage + d->pos));
    if (k < 2 || nl[-1] != '\r' || k - 1 >= sizeof(line)) {
        return din_fail(c);
    }
    memcpy(line, d->stage + d->pos, k - 1);
    line[k - 1] = '\0';
    d->pos += k + 1;
    if (line[0] == '-') {
        /* After a MOVED the stream is in step, but this server is no use. */
        rc = error_reply(line + 1, k - 2);
        return rc == MITHRIL_EREMOTE ? din_fail(c) : rc;
    }
    errno = 0;
    len = line[0] == '$' ? strtoll(line + 1, &end, 10) : -2;
    if (len == -1 && *end == '\0') {
        return MITHRIL_ENOTFOUND;
    }
    if (len < 0 || errno != 0 || *end != '\0') {
        return din_fail(c);
    }
    rc = (uint64_t)len > DIRECT_CAP ? MITHRIL_EFORMAT
                                    : din_reserve(in, (size_t)len);
    if (rc < 0) {
        /*
         * Not a value this code wrote, or no memory for it: skip it, keep
         * the stream in step.
         */
        for (left = (size_t)len; left > 0; left -= k) {
            k = left < in->cap ? left : in->cap;
            if (din_read(c, d, in->buf, k) < 0) {
                return MITHRIL_EREMOTE;
            }
        }
    } else {
        rc = din_read(c, d, in->buf, (size_t)len);
        *n = (size_t)len;
    }
    if (rc == MITHRIL_EREMOTE || din_read(c, d, crlf, 2) < 0) {
        return MITHRIL_EREMOTE;
    }
    if (crlf[0] != '\r' || crlf[1] != '\n') {
        return din_fail(c);
    }
    return rc;
}

/* Send what hiredis has buffered; 0 or MITHRIL_EREMOTE. */
static int
flush_out(redisContext *c)
{
    int done = 0;

    while (!done) {
        if (redisBufferWrite(c, &done) != REDIS_OK) {
            return MITHRIL_EREMOTE;
        }
    }
    return 0;
}

/*
 * Blobs the workers of one pull are fetching, or of one push sending.
 * Entries share blobs (one kernel file in several graphs' entries), and
 * two workers that each find a shared blob missing would both move it: a
 * warm start's pull of 10 entries moved 19 blobs for 13 distinct ones. A
 * worker claims a missing blob before asking for it (or sending it);
 * another that needs the blob meanwhile ends its window first, waits for
 * the claim to go, and then finds the blob there (or claims and moves it
 * itself if the owner failed). A worker never waits while it holds a
 * claim, so no two workers wait on each other, and at most POOL * WINDOW
 * claims exist at a time. The last DONE_RING blobs moved are remembered,
 * for a worker that found a blob missing just before another moved it.
 */
#define POOL      8
#define CLAIMS    (POOL * WINDOW)
#define DONE_RING 256

struct claims {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t n;
    char addr[CLAIMS][MITHRIL_HEX_SIZE];
    size_t done_n;    /* ring entries in use */
    size_t done_next; /* the ring slot written next */
    char done[DONE_RING][MITHRIL_HEX_SIZE];
};

static void
claims_init(struct claims *c)
{
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->n = 0;
    c->done_n = 0;
    c->done_next = 0;
}

static void
claims_destroy(struct claims *c)
{
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
}

/* Index of addr among the claims, or c->n; c->mu held. */
static size_t
claim_find(const struct claims *c, const char *addr)
{
    size_t i;

    for (i = 0; i < c->n && memcmp(c->addr[i], addr, MITHRIL_HEX_SIZE); i++) {
    }
    return i;
}

/* 1 if addr is among the blobs moved last; c->mu held. */
static int
done_find(const struct claims *c, const char *addr)
{
    size_t i;

    for (i = 0; i < c->done_n; i++) {
        if (memcmp(c->done[i], addr, MITHRIL_HEX_SIZE) == 0) {
            return 1;
        }
    }
    return 0;
}

/*
 * 1: addr is the caller's to move (claimed, or the table is full and a
 * duplicate is the worst outcome); 0: another worker is moving it; 2:
 * another worker moved it a moment ago.
 */
static int
claim(struct claims *c, const char *addr)
{
    int mine = 1;

    pthread_mutex_lock(&c->mu);
    if (claim_find(c, addr) < c->n) {
        mine = 0;
    } else if (done_find(c, addr)) {
        mine = 2;
    } else if (c->n < CLAIMS) {
        memcpy(c->addr[c->n++], addr, MITHRIL_HEX_SIZE);
    }
    pthread_mutex_unlock(&c->mu);
    return mine;
}

/* Drop the caller's claim on addr; moved: the blob is now where it went. */
static void
unclaim(struct claims *c, const char *addr, int moved)
{
    size_t i;

    pthread_mutex_lock(&c->mu);
    i = claim_find(c, addr);
    if (i < c->n) {
        memcpy(c->addr[i], c->addr[--c->n], MITHRIL_HEX_SIZE);
        pthread_cond_broadcast(&c->cv);
    }
    if (moved) {
        memcpy(c->done[c->done_next], addr, MITHRIL_HEX_SIZE);
        c->done_next = (c->done_next + 1) % DONE_RING;
        c->done_n += c->done_n < DONE_RING;
    }
    pthread_mutex_unlock(&c->mu);
}

/* Until no worker holds a claim on addr. */
static void
claim_wait(struct claims *c, const char *addr)
{
    pthread_mutex_lock(&c->mu);
    while (claim_find(c, addr) < c->n) {
        pthread_cond_wait(&c->cv, &c->mu);
    }
    pthread_mutex_unlock(&c->mu);
}

/*
 * Fetch the blobs batch[0..nb) (none local): their header GETs pipelined,
 * chunked blobs after the window's replies are in. With d, replies are
 * read by din_reply (see struct direct_in). With defer, inline blobs are
 * deferred puts (see mi_store_put_staged).
 */
static int
fetch_window(mithril_store *s, struct link *l, struct direct_in *d,
             const mithril_item *const *batch, size_t nb, uint64_t *files,
             uint64_t *bytes, struct mi_blob_list *defer)
{
    struct deferred later[WINDOW];
    redisContext *on[WINDOW]; /* batch[i]'s request went to on[i] */
    int node[WINDOW];         /* the node of on[i] */
    struct din_stage *st[WINDOW];
    char key[128];
    const char *argv[2] = {"GET", key};
    size_t lens[2] = {3, 0};
    redisReply *rep;
    size_t nl;
    size_t i;
    size_t j;
    int direct;
    int rc = 0;

    for (i = 0; i < nb; i++) {
        blob_key(key, sizeof(key), batch[i]->addr, -1);
        lens[1] = strlen(key);
        node[i] = node_of(l, key);
        on[i] = link_at(l, node[i]);
        if (!on[i] ||
            redisAppendCommandArgv(on[i], 2, argv, lens) != REDIS_OK) {
            return MITHRIL_EREMOTE;
        }
    }
    /*
     * Direct when hiredis holds no unread bytes on any connection of
     * the window. A window that succeeded leaves every stage empty;
     * anything in one is from a connection that failed since, so
     * each is emptied (din_stage). Replies are then read in request
     * order, each from its own connection and stage.
     */
    direct = d != NULL;
    for (i = 0; i < nb && direct; i++) {
        direct = on[i]->reader->pos == on[i]->reader->len;
    }
    for (i = 0; i < nb && direct; i++) {
        for (j = 0; j < i && node[j] != node[i]; j++) {
        }
        st[i] = j < i ? st[j] : din_stage(d, node[i]);
        direct = st[i] != NULL;
    }
    for (i = 0; i < nb; i++) {
        if (flush_out(on[i]) < 0) {
            return MITHRIL_EREMOTE;
        }
    }
    nl = 0;
    for (i = 0; i < nb; i++) {
        uint8_t *val = NULL;
        size_t n = 0;
        uint64_t nch = 0;
        int one;

        rep = NULL;
        if (direct) {
            one = din_reply(on[i], st[i], d, &n);
            if (one == MITHRIL_EREMOTE) {
                return one;
            }
            val = d->buf;
        } else if (redisGetReply(on[i], (void **)&rep) != REDIS_OK || !rep) {
            return MITHRIL_EREMOTE;
        } else if (rep->type == REDIS_REPLY_NIL) {
            one = MITHRIL_ENOTFOUND;
        } else if (rep->type != REDIS_REPLY_STRING) {
            one = reply_error(rep);
        } else {
            one = 0;
            val = (uint8_t *)rep->str;
            n = (size_t)rep->len;
        }
        if (rc < 0) {
            freeReplyObject(rep);
            continue;
        }
        if (one == 0) {
            one = check_header(val, n, batch[i], &nch);
        }
        if (one == 0 && val[3] == 'c') {
            later[nl].item = batch[i];
            later[nl++].nchunks = nch;
        } else if (one == 0) {
            one = store_inline(s, val, n, direct, batch[i]->addr,
                               batch[i]->size, bytes, defer);
            *files += one == 0;
        }
        if (rep) {
            freeReplyObject(rep);
        }
        rc = one;
    }
    for (i = 0; direct && i < nb; i++) {
        if (st[i]->pos != st[i]->len) {
            /* Bytes nobody asked for: the stream cannot be trusted. */
            return din_fail(on[i]);
        }
    }
    for (i = 0; rc == 0 && i < nl; i++) {
        rc = fetch_chunks(s, l, later[i].item->addr, later[i].item->size,
                          later[i].nchunks, bytes);
        *files += rc == 0;
    }
    return rc;
}

/*
 * Fetch every item's blob that is not local, WINDOW at a time. With cl
 * (a pull's workers), each blob fetched is claimed first (see struct
 * claims).
 */
static int
fetch_blobs(mithril_store *s, struct link *l, struct direct_in *d,
            const struct mi_wire *w, uint64_t *files, uint64_t *bytes,
            struct mi_blob_list *defer, struct claims *cl)
{
    const mithril_item *batch[WINDOW];
    const mithril_item *wait_for;
    size_t next = 0;
    size_t nb;
    size_t i;
    int rc = 0;

    while (rc == 0 && next < w->n_items) {
        nb = 0;
        wait_for = NULL;
        while (next < w->n_items && nb < WINDOW) {
            const mithril_item *it = &w->items[next++];

            int mine = 1;
            int have = mithril_store_exists(s, it->addr) == 1;

            if (!have && cl && (mine = claim(cl, it->addr)) == 0) {
                /* Another worker's: looked at again after the wait. */
                wait_for = it;
                next--;
                break;
            }
            if (!have && mine == 1 && cl &&
                mithril_store_exists(s, it->addr) == 1) {
                /* Stored by another worker since the first look. */
                unclaim(cl, it->addr, 0);
                have = 1;
            }
            if (have || mine == 2) {
                /* Maybe a deferred put of another worker, not synced yet. */
                if (defer && mi_blob_list_add(defer, it->addr, 0, 0, 0) < 0) {
                    rc = -ENOMEM;
                    break;
                }
                continue;
            }
            batch[nb++] = it;
        }
        if (rc == 0 && nb > 0) {
            rc = fetch_window(s, l, d, batch, nb, files, bytes, defer);
        }
        for (i = 0; cl && i < nb; i++) {
            unclaim(cl, batch[i]->addr, rc == 0);
        }
        if (rc == 0 && wait_for) {
            claim_wait(cl, wait_for->addr);
        }
    }
    return rc;
}

/* ---- entries ---- */

struct fetch_result {
    uint64_t files;
    uint64_t bytes;
};

/*
 * Fetch entry key with its blobs and record it. MITHRIL_ENOTFOUND: not
 * there; MITHRIL_EREMOTE: the connection failed; MITHRIL_EPATH or
 * MITHRIL_ESIGNATURE: rejected; MITHRIL_ECORRUPT: a blob did not verify.
 * With keep, the entry is not recorded but returned in *keep, and its new
 * blobs are deferred puts listed in defer (the pool records both).
 */
static int
fetch_entry(mithril_store *s, struct link *l, struct direct_in *d,
            const char *key, struct fetch_result *res, struct mi_wire *keep,
            struct mi_blob_list *defer, struct claims *cl)
{
    redisContext *c;
    char rkey[600];
    const char *argv[2] = {"GET", rkey};
    size_t lens[2] = {3, 0};
    struct mi_wire w;
    redisReply *rep;
    int rc;

    snprintf(rkey, sizeof(rkey), "mithril:e:%s", key);
    lens[1] = strlen(rkey);
    c = link_for(l, rkey);
    rep = c ? call(c, 2, argv, lens) : NULL;
    if (!rep) {
        return MITHRIL_EREMOTE;
    }
    if (rep->type == REDIS_REPLY_NIL) {
        freeReplyObject(rep);
        return MITHRIL_ENOTFOUND;
    }
    if (rep->type != REDIS_REPLY_STRING || (size_t)rep->len > MI_WIRE_MAX) {
        rc = unexpected(rep);
        freeReplyObject(rep);
        return rc;
    }
    rc = mi_wire_decode(rep->str, (size_t)rep->len, &w);
    freeReplyObject(rep);
    if (rc < 0) {
        mi_log(MITHRIL_LOG_WARN, "rejected entry '%s' from %s: malformed", key,
               "remote");
        mithril_stats_add(s, MITHRIL_COUNTER_REJECTED, 1);
        return MITHRIL_ESIGNATURE;
    }
    if (strcmp(w.key, key) != 0) {
        mi_log(MITHRIL_LOG_WARN,
               "rejected entry '%s' from remote: it names "
               "key '%s'",
               key, w.key);
        mithril_stats_add(s, MITHRIL_COUNTER_REJECTED, 1);
        rc = MITHRIL_ESIGNATURE;
        goto out;
    }
    rc = mi_wire_accept(s, &w, "remote");
    if (rc < 0) {
        goto out;
    }
    rc = fetch_blobs(s, l, d, &w, &res->files, &res->bytes, keep ? defer : NULL,
                     cl);
    if (rc == MITHRIL_ECORRUPT) {
        mi_log(MITHRIL_LOG_WARN,
               "rejected entry '%s' from remote: a blob does not match its "
               "address",
               key);
        mithril_stats_add(s, MITHRIL_COUNTER_REJECTED, 1);
    }
    if (rc == 0 && keep) {
        /* Blobs durable and verified: the caller records it (batched). */
        *keep = w;
        return 0;
    }
    if (rc == 0) {
        fetching = 1;
        rc = mithril_entry_put(s, w.key, w.items, w.n_items, w.meta);
        fetching = 0;
    }
out:
    mi_wire_release(&w);
    return rc;
}

/* 1: the remote holds blob addr; 0: it does not; MITHRIL_EREMOTE. */
static int
remote_has_blob(struct link *l, const char *addr)
{
    char key[128];
    const char *argv[2] = {"EXISTS", key};
    size_t lens[2] = {6, 0};
    redisContext *c;
    redisReply *rep;
    int rc;

    blob_key(key, sizeof(key), addr, -1);
    lens[1] = strlen(key);
    c = link_for(l, key);
    if (!c || !(rep = call(c, 2, argv, lens))) {
        return MITHRIL_EREMOTE;
    }
    rc = rep->type == REDIS_REPLY_INTEGER ? rep->integer > 0 : unexpected(rep);
    freeReplyObject(rep);
    return rc;
}

/*
 * Before a push worker sends a blob the remote lacked: 1 when the blob is
 * now the caller's to send (claimed, see struct claims); 0 when another
 * worker claimed it, and after waiting for that worker the remote holds
 * it; MITHRIL_EREMOTE. Nothing is held while waiting.
 */
static int
claim_to_push(struct link *l, const char *addr, struct claims *cl)
{
    int rc;

    while (cl && (rc = claim(cl, addr)) != 1) {
        if (rc == 2) {
            return 0;
        }
        claim_wait(cl, addr);
        if ((rc = remote_has_blob(l, addr)) != 0) {
            return rc < 0 ? rc : 0;
        }
    }
    return 1;
}

/* Send one local entry and the blobs the remote lacks. */
static int
push_entry(mithril_store *s, struct link *l, const mithril_entry *e,
           uint64_t *files, uint64_t *bytes, struct claims *cl)
{
    redisContext *on[16]; /* EXISTS j went to on[j] */
    redisContext *c;
    char rkey[600];
    char tag[17];
    char tkey[64];
    char key[128];
    const char *argv[3];
    size_t lens[3];
    struct mi_buf enc = {0};
    redisReply *rep;
    size_t i;
    size_t n;
    int rc = 0;

    /* Which blobs are missing there: EXISTS, pipelined 16 at a time. */
    for (i = 0; i < e->n_items; i += n) {
        int missing[16];
        size_t j;

        n = e->n_items - i < 16 ? e->n_items - i : 16;
        for (j = 0; j < n; j++) {
            blob_key(key, sizeof(key), e->items[i + j].addr, -1);
            argv[0] = "EXISTS";
            argv[1] = key;
            lens[0] = 6;
            lens[1] = strlen(key);
            on[j] = link_for(l, key);
            if (!on[j] ||
                redisAppendCommandArgv(on[j], 2, argv, lens) != REDIS_OK) {
                return MITHRIL_EREMOTE;
            }
        }
        for (j = 0; j < n; j++) {
            if (redisGetReply(on[j], (void **)&rep) != REDIS_OK || !rep) {
                return MITHRIL_EREMOTE;
            }
            if (rep->type == REDIS_REPLY_ERROR) {
                reply_error(rep); /* a redirect is noted: SET will tell */
            }
            missing[j] = rep->type != REDIS_REPLY_INTEGER || rep->integer == 0;
            freeReplyObject(rep);
        }
        for (j = 0; j < n && rc == 0; j++) {
            const mithril_item *it = &e->items[i + j];

            if (!missing[j] || (rc = claim_to_push(l, it->addr, cl)) != 1) {
                continue; /* there, sent by another worker, or an error */
            }
            rc = push_blob(s, l, it->addr, it->size, bytes);
            *files += rc == 0;
            if (cl) {
                unclaim(cl, it->addr, rc == 0);
            }
        }
        if (rc < 0) {
            return rc;
        }
    }

    rc = mi_wire_encode(s, e->key, e->meta, e->items, e->n_items, &enc);
    if (rc < 0) {
        return rc;
    }
    snprintf(rkey, sizeof(rkey), "mithril:e:%s", e->key);
    rc = link_set(l, rkey, enc.data, enc.len, NULL, 0);
    *bytes += enc.len;
    mi_buf_release(&enc);
    argv[0] = "SADD";
    argv[1] = "mithril:entries";
    argv[2] = e->key;
    lens[0] = 4;
    lens[1] = strlen(argv[1]);
    lens[2] = strlen(e->key);
    if (rc == 0) {
        c = link_for(l, argv[1]);
        rc = c ? reply_status(c, call(c, 3, argv, lens)) : MITHRIL_EREMOTE;
    }
    if (rc == 0 && mi_meta_tag(e->meta, tag) == 0) {
        snprintf(tkey, sizeof(tkey), "mithril:tc:%s", tag);
        argv[1] = tkey;
        lens[1] = strlen(tkey);
        c = link_for(l, tkey);
        rc = c ? reply_status(c, call(c, 3, argv, lens)) : MITHRIL_EREMOTE;
    }
    return rc;
}

/*
 * Whether an operation on l that a cluster redirected (`redirected`, reset
 * by the caller before each try) is tried again: at most REDIRECTS tries
 * in all (*tries counts them), each on the slot map loaded anew if no
 * newer one than generation gen came in meanwhile. The link is closed
 * first: replies may still be owed on its connections.
 */
static int
again(struct link *l, uint64_t gen, int *tries)
{
    if (!redirected || ++*tries >= REDIRECTS) {
        return 0;
    }
    link_close(l);
    return cluster_refresh(l->r, gen) == 0;
}

/*
 * The foreground connections under the breaker (with_fg, then after_fg
 * with the outcome). An I/O failure drops them and counts against the
 * breaker.
 */
static int
with_fg(mithril_store *s, struct mi_remote *r)
{
    int64_t t0 = mi_now_ns();

    if (!breaker_allow(r)) {
        return MITHRIL_EREMOTE;
    }
    if (!link_for(&r->fg, NULL)) {
        breaker_fail(s, r, mi_now_ns() - t0, "connect failed");
        return MITHRIL_EREMOTE;
    }
    return 0;
}

static void
after_fg(mithril_store *s, struct mi_remote *r, int rc, int64_t t0)
{
    if (rc == MITHRIL_EREMOTE || link_failed(&r->fg)) {
        link_close(&r->fg);
        breaker_fail(s, r, mi_now_ns() - t0, "call failed");
    } else {
        breaker_ok(r);
    }
}

int
mi_remote_fetch_entry(mithril_store *s, const char *key)
{
    struct fetch_result res = {0, 0};
    struct mi_remote *r;
    sigset_t old;
    uint64_t gen;
    int64_t t0;
    int tries = 0;
    int rc;

    if (!s || !key || fetching) {
        return MITHRIL_ENOTFOUND;
    }
    r = remote_of(s);
    if (!r) {
        return MITHRIL_ENOTFOUND;
    }
    pthread_mutex_lock(&r->mu);
    sigpipe_block(&old);
    t0 = mi_now_ns();
    rc = with_fg(s, r);
    if (rc == 0) {
        if (!r->fg_in) {
            r->fg_in = direct_in_new(); /* NULL: hiredis reads the blobs */
        }
        do {
            gen = mi_cluster_gen(r->map);
            redirected = 0;
            rc = fetch_entry(s, &r->fg, r->fg_in, key, &res, NULL, NULL, NULL);
        } while (again(&r->fg, gen, &tries));
        after_fg(s, r, rc, t0);
    }
    sigpipe_restore(&old);
    pthread_mutex_unlock(&r->mu);
    if (rc == 0) {
        mithril_stats_add(s, MITHRIL_COUNTER_REMOTE_HIT, 1);
        return 0;
    }
    if (rc == MITHRIL_ENOTFOUND) {
        mithril_stats_add(s, MITHRIL_COUNTER_REMOTE_MISS, 1);
    } else if (rc != MITHRIL_EREMOTE) {
        mi_log(MITHRIL_LOG_DEBUG, "remote entry '%s': %s", key,
               mithril_strerror(rc));
    }
    return MITHRIL_ENOTFOUND;
}

/* ---- the write queue ---- */

static void
push_queued(mithril_store *s, struct mi_remote *r, const char *key)
{
    uint64_t files = 0;
    uint64_t bytes = 0;
    mithril_entry *e = NULL;
    sigset_t old;
    uint64_t gen;
    int64_t t0;
    int tries = 0;
    int rc;

    if (!breaker_allow(r)) {
        return;
    }
    if (mithril_entry_peek(s, key, &e) < 0) {
        return;
    }
    sigpipe_block(&old);
    t0 = mi_now_ns();
    do {
        gen = mi_cluster_gen(r->map);
        redirected = 0;
        rc = push_entry(s, &r->bg, e, &files, &bytes, NULL);
    } while (again(&r->bg, gen, &tries));
    if (rc == MITHRIL_EREMOTE || link_failed(&r->bg)) {
        link_close(&r->bg);
        breaker_fail(s, r, mi_now_ns() - t0, "queued push failed");
    } else if (rc == 0) {
        breaker_ok(r);
    }
    sigpipe_restore(&old);
    mithril_entry_free(e);
}

struct worker_arg {
    mithril_store *s;
    struct mi_remote *r;
};

static void *
worker(void *arg)
{
    struct worker_arg *wa = arg;
    mithril_store *s = wa->s;
    struct mi_remote *r = wa->r;
    char *key;

    free(wa);
    pthread_mutex_lock(&r->qmu);
    for (;;) {
        while (r->qlen == 0 && !r->stop) {
            pthread_cond_wait(&r->qcond, &r->qmu);
        }
        if (r->stop) {
            break;
        }
        key = r->queue[r->qhead];
        r->qhead = (r->qhead + 1) % QUEUE_CAP;
        r->qlen--;
        r->busy = 1;
        pthread_mutex_unlock(&r->qmu);
        push_queued(s, r, key);
        free(key);
        pthread_mutex_lock(&r->qmu);
        r->busy = 0;
        if (r->qlen == 0) {
            pthread_cond_broadcast(&r->qidle);
        }
    }
    r->busy = 0;
    pthread_cond_broadcast(&r->qidle);
    pthread_mutex_unlock(&r->qmu);
    return NULL;
}

void
mi_remote_enqueue_entry(mithril_store *s, const char *key)
{
    struct worker_arg *wa;
    struct mi_remote *r;
    sigset_t all;
    sigset_t old;
    char *copy;

    if (!s || !key || fetching) {
        return;
    }
    r = remote_of(s);
    if (!r || r->read_only || !breaker_allow(r)) {
        return;
    }
    copy = strdup(key);
    if (!copy) {
        return;
    }
    pthread_mutex_lock(&r->qmu);
    if (!r->started && !r->stop) {
        wa = malloc(sizeof(*wa));
        if (wa) {
            wa->s = s;
            wa->r = r;
            /* The thread takes no signals meant for the application. */
            sigfillset(&all);
            pthread_sigmask(SIG_SETMASK, &all, &old);
            if (pthread_create(&r->thread, NULL, worker, wa) == 0) {
                r->started = 1;
            } else {
                free(wa);
            }
            pthread_sigmask(SIG_SETMASK, &old, NULL);
        }
    }
    if (!r->started || r->stop || r->qlen == QUEUE_CAP) {
        if (r->dropped++ == 0) {
            mi_log(MITHRIL_LOG_DEBUG, "remote %s: write queue full, dropping",
                   r->url);
        }
        free(copy);
    } else {
        r->queue[(r->qhead + r->qlen) % QUEUE_CAP] = copy;
        r->qlen++;
        pthread_cond_signal(&r->qcond);
    }
    pthread_mutex_unlock(&r->qmu);
}

static int
drain(struct mi_remote *r, int timeout_ms)
{
    struct timespec deadline;
    int rc = 0;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->qmu);
    while (r->started && (r->qlen > 0 || r->busy) && rc == 0) {
        rc = pthread_cond_timedwait(&r->qidle, &r->qmu, &deadline);
    }
    rc = (r->started && (r->qlen > 0 || r->busy)) ? -ETIMEDOUT : 0;
    pthread_mutex_unlock(&r->qmu);
    return rc;
}

int
mithril_remote_drain(mithril_store *s, int timeout_ms)
{
    struct mi_remote *r;

    if (!s) {
        return MITHRIL_EINVAL;
    }
    pthread_mutex_lock(&attach_mu);
    r = s->remote;
    if (r) {
        after_fork(r);
    }
    pthread_mutex_unlock(&attach_mu);
    if (!r) {
        return 0;
    }
    return drain(r, timeout_ms < 0 ? 0 : timeout_ms);
}

static void
remote_stop(mithril_store *s, struct mi_remote *r)
{
    size_t i;

    if (drain(r, CLOSE_DRAIN_MS) < 0) {
        mi_log(MITHRIL_LOG_WARN, "remote %s: %zu queued entries not sent",
               r->url, r->qlen + (size_t)r->busy);
    }
    pthread_mutex_lock(&r->qmu);
    r->stop = 1;
    for (i = 0; i < r->qlen; i++) {
        free(r->queue[(r->qhead + i) % QUEUE_CAP]);
    }
    r->qlen = 0;
    /* Cut a call in flight short instead of waiting out its timeout. */
    for (i = 0; r->busy && i < MI_CL_NODES; i++) {
        if (r->bg.c[i]) {
            shutdown(r->bg.c[i]->fd, SHUT_RDWR);
        }
    }
    pthread_cond_broadcast(&r->qcond);
    pthread_mutex_unlock(&r->qmu);
    if (r->started) {
        pthread_join(r->thread, NULL);
    }
    remote_free(r);
}

void
mi_remote_close(mithril_store *s)
{
    struct mi_remote *r;

    if (!s) {
        return;
    }
    pthread_mutex_lock(&attach_mu);
    r = s->remote;
    if (r) {
        after_fork(r);
    }
    s->remote = NULL;
    pthread_mutex_unlock(&attach_mu);
    if (r) {
        remote_stop(s, r);
    }
}

/* ---- push and pull ---- */

struct key_list {
    char **keys;
    size_t n;
    size_t cap;
    const char *tag;
    int rc;
};

static int
key_list_add(struct key_list *l, const char *key)
{
    char **p;

    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        p = realloc(l->keys, l->cap * sizeof(*p));
        if (!p) {
            return -ENOMEM;
        }
        l->keys = p;
    }
    l->keys[l->n] = strdup(key);
    if (!l->keys[l->n]) {
        return -ENOMEM;
    }
    l->n++;
    return 0;
}

static void
key_list_release(struct key_list *l)
{
    size_t i;

    for (i = 0; i < l->n; i++) {
        free(l->keys[i]);
    }
    free(l->keys);
}

static int
collect_local(const mithril_entry *e, void *ctx)
{
    struct key_list *l = ctx;

    if (l->tag && !mi_meta_has_tag(e->meta, l->tag)) {
        return 0;
    }
    l->rc = key_list_add(l, e->key);
    return l->rc < 0;
}

int
mi_collect_entries(mithril_store *s, const char *toolchain, char ***keys,
                   size_t *n)
{
    struct key_list l = {0};
    char tag[17];
    int rc;

    if (toolchain) {
        mi_toolchain_tag(toolchain, tag);
        l.tag = tag;
    }
    rc = mithril_entry_foreach(s, collect_local, &l);
    if (rc == 0) {
        rc = l.rc;
    }
    if (rc < 0) {
        key_list_release(&l);
        return rc;
    }
    *keys = l.keys;
    *n = l.n;
    return 0;
}

void
mi_free_keys(char **keys, size_t n)
{
    struct key_list l = {keys, n, n, NULL, 0};

    key_list_release(&l);
}

/* The entry keys the remote lists for a toolchain (or all of them). */
static int
remote_keys(struct link *link, const char *toolchain, struct key_list *l)
{
    redisContext *c;
    char tag[17];
    char skey[64] = "mithril:entries";
    const char *argv[2] = {"SMEMBERS", skey};
    size_t lens[2] = {8, 0};
    redisReply *rep;
    size_t i;
    int rc = 0;

    if (toolchain) {
        mi_toolchain_tag(toolchain, tag);
        snprintf(skey, sizeof(skey), "mithril:tc:%s", tag);
    }
    lens[1] = strlen(skey);
    c = link_for(link, skey);
    rep = c ? call(c, 2, argv, lens) : NULL;
    if (!rep) {
        return MITHRIL_EREMOTE;
    }
    if (rep->type != REDIS_REPLY_ARRAY) {
        rc = unexpected(rep);
        freeReplyObject(rep);
        return rc;
    }
    for (i = 0; i < rep->elements && rc == 0; i++) {
        const redisReply *el = rep->element[i];

        if (el->type == REDIS_REPLY_STRING && el->len > 0 && el->len <= 512 &&
            !memchr(el->str, '\0', (size_t)el->len)) {
            rc = key_list_add(l, el->str);
        }
    }
    freeReplyObject(rep);
    return rc;
}

/*
 * push and pull move entries with POOL threads, each on a connection of
 * its own, so that one entry's network transfer overlaps another's
 * hashing and durable writes. The first remote failure stops them all.
 */
#define BATCH 16 /* pulled entries recorded per index commit, pool-wide */

/*
 * Pulled entries whose blobs are stored, waiting to be recorded, and the
 * blobs the pull published unsynced (its deferred puts: those of these
 * entries, and any of entries that failed after storing some).
 */
struct pending {
    struct mi_wire w[BATCH];
    size_t n;
    struct mi_blob_list blobs;
};

struct pool {
    mithril_store *s;
    struct mi_remote *r;
    char **keys;
    size_t n;
    int pull;
    mithril_progress_fn fn;
    void *ctx;
    pthread_mutex_t mu;
    size_t next;
    size_t done;
    int rc;
    mithril_sync_result res;
    /* Pulled entries of all workers, waiting for one index commit. */
    pthread_mutex_t pmu;
    struct pending shared;
    struct claims claims; /* blobs being fetched or sent */
};

/*
 * Move one entry; counts go to res. Negative only for a remote failure.
 * A pulled entry is not recorded here: it lands in *keep (*kept = 1) for
 * the pool's shared batch, which counts it when recorded.
 */
static int
pool_one(struct pool *p, struct link *l, struct direct_in *d,
         struct mi_wire *keep, int *kept, struct mi_blob_list *defer,
         const char *key, mithril_sync_result *res)
{
    struct fetch_result fr = {0, 0};
    mithril_entry *e = NULL;
    uint64_t gen;
    int64_t t0;
    int tries = 0;
    int have;
    int rc;

    have = mithril_entry_peek(p->s, key, &e) == 0;
    if (p->pull ? have : !have) {
        mithril_entry_free(e);
        res->skipped++;
        return 0;
    }
    t0 = mi_now_ns();
    if (!breaker_allow(p->r)) {
        mithril_entry_free(e);
        return MITHRIL_EREMOTE;
    }
    if (!link_for(l, NULL)) {
        mithril_entry_free(e);
        breaker_fail(p->s, p->r, mi_now_ns() - t0, "connect failed");
        return MITHRIL_EREMOTE;
    }
    do {
        gen = mi_cluster_gen(p->r->map);
        redirected = 0;
        rc = p->pull
                 ? fetch_entry(p->s, l, d, key, &fr, keep, defer, &p->claims)
                 : push_entry(p->s, l, e, &fr.files, &fr.bytes, &p->claims);
    } while (again(l, gen, &tries));
    *kept = p->pull && rc == 0;
    mithril_entry_free(e);
    res->files += fr.files;
    res->bytes += fr.bytes;
    if (rc == MITHRIL_EREMOTE || link_failed(l)) {
        link_close(l);
        breaker_fail(p->s, p->r, mi_now_ns() - t0, "call failed");
        return MITHRIL_EREMOTE;
    }
    breaker_ok(p->r);
    if (rc == 0 && p->pull) {
        return 0;
    }
    if (rc == 0) {
        res->entries++;
    } else if (rc == MITHRIL_EPATH || rc == MITHRIL_ESIGNATURE ||
               (p->pull && rc == MITHRIL_ECORRUPT)) {
        res->rejected++;
    } else {
        /* Gone meanwhile (here or there), or a local blob went bad. */
        mi_log(MITHRIL_LOG_DEBUG, "%s: entry '%s' skipped: %s",
               p->pull ? "pull" : "push", key, mithril_strerror(rc));
        res->skipped++;
    }
    return 0;
}

/*
 * Make the pending blobs durable (their files, then their folders, the
 * syncs side by side; those already there are synced too, as another
 * worker may have linked them unsynced), then record them and the pending
 * entries in one index commit; counts go to res. If a sync fails nothing
 * is recorded: the entries count as skipped, and the unrecorded files are
 * what verify finds and indexes, or a later pull records.
 */
static void
pending_flush(struct pool *p, struct pending *pend, mithril_sync_result *res)
{
    struct mi_put puts[BATCH];
    size_t i;
    int rc = 0;

    for (i = 0; i < pend->n; i++) {
        puts[i].key = pend->w[i].key;
        puts[i].items = pend->w[i].items;
        puts[i].n_items = pend->w[i].n_items;
        puts[i].meta = pend->w[i].meta;
        puts[i].rc = 0;
    }
    if (pend->blobs.n > 0) {
        rc = mi_store_sync_blobs(p->s, &pend->blobs);
    }
    fetching = 1;
    if (rc == 0) {
        mi_entry_put_many(p->s, puts, pend->n, pend->blobs.v, pend->blobs.n);
    }
    fetching = 0;
    mi_blob_list_release(&pend->blobs);
    for (i = 0; i < pend->n; i++) {
        if (rc < 0) {
            puts[i].rc = rc;
        }
        if (puts[i].rc == 0) {
            res->entries++;
            /* An entry this store lacked, served by the remote. */
            mithril_stats_add(p->s, MITHRIL_COUNTER_REMOTE_HIT, 1);
        } else {
            mi_log(MITHRIL_LOG_DEBUG, "pull: entry '%s' skipped: %s",
                   puts[i].key, mithril_strerror(puts[i].rc));
            res->skipped++;
        }
        mi_wire_release(&pend->w[i]);
    }
    pend->n = 0;
}

/*
 * Add a fetched entry (w, or NULL for none) and the blobs a worker
 * published for it (mine, emptied) to the pool's shared batch, so that a
 * pull costs one sync and one index commit per BATCH entries whatever the
 * number of workers. The worker that fills the batch records it, outside
 * the lock.
 */
static void
pending_share(struct pool *p, const struct mi_wire *w,
              struct mi_blob_list *mine, mithril_sync_result *res)
{
    struct pending full;
    struct pending alone;

    memset(&full, 0, sizeof(full));
    memset(&alone, 0, sizeof(alone));
    pthread_mutex_lock(&p->pmu);
    if (mi_blob_list_move(&p->shared.blobs, mine) < 0) {
        /* No memory to grow the batch: these blobs are recorded now. */
        alone.blobs = *mine;
        memset(mine, 0, sizeof(*mine));
    }
    if (w) {
        p->shared.w[p->shared.n++] = *w;
    }
    if (p->shared.n == BATCH) {
        full = p->shared;
        memset(&p->shared, 0, sizeof(p->shared));
    }
    pthread_mutex_unlock(&p->pmu);
    if (alone.blobs.n > 0) {
        pending_flush(p, &alone, res);
    }
    if (full.n > 0) {
        pending_flush(p, &full, res);
    }
}

static void *
pool_worker(void *arg)
{
    struct pool *p = arg;
    struct link l = {.r = p->r};
    struct direct_in *d = p->pull ? direct_in_new() : NULL;
    struct mi_blob_list mine = {0};
    struct mi_wire slot;
    mithril_sync_result one;
    int kept;
    sigset_t old;
    size_t i;
    int rc;

    sigpipe_block(&old);
    for (;;) {
        pthread_mutex_lock(&p->mu);
        if (p->rc < 0 || p->next >= p->n) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        i = p->next++;
        pthread_mutex_unlock(&p->mu);
        memset(&one, 0, sizeof(one));
        kept = 0;
        rc = pool_one(p, &l, d, &slot, &kept, &mine, p->keys[i], &one);
        if (kept || mine.n > 0) {
            pending_share(p, kept ? &slot : NULL, &mine, &one);
        }
        pthread_mutex_lock(&p->mu);
        p->res.entries += one.entries;
        p->res.files += one.files;
        p->res.bytes += one.bytes;
        p->res.skipped += one.skipped;
        p->res.rejected += one.rejected;
        if (rc < 0 && p->rc == 0) {
            p->rc = rc;
        }
        p->done++;
        if (p->fn) {
            p->fn(p->done, p->n, p->ctx);
        }
        pthread_mutex_unlock(&p->mu);
    }
    link_close(&l);
    direct_in_free(d);
    mi_blob_list_release(&mine);
    sigpipe_restore(&old);
    return NULL;
}

static int
pool_run(struct pool *p, mithril_sync_result *out)
{
    pthread_t threads[POOL];
    sigset_t all;
    sigset_t old;
    int started = 0;
    int i;

    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->pmu, NULL);
    claims_init(&p->claims);
    if (p->n > 1) {
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        for (i = 0; i < POOL && (size_t)i < p->n; i++) {
            if (pthread_create(&threads[i], NULL, pool_worker, p) != 0) {
                break;
            }
            started++;
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (started == 0) {
        pool_worker(p);
    }
    for (i = 0; i < started; i++) {
        pthread_join(threads[i], NULL);
    }
    if (p->shared.n > 0 || p->shared.blobs.n > 0) {
        /* What the workers left, a failed pull's entries included. */
        pending_flush(p, &p->shared, &p->res);
    }
    claims_destroy(&p->claims);
    pthread_mutex_destroy(&p->pmu);
    pthread_mutex_destroy(&p->mu);
    if (p->rc < 0) {
        mi_log(MITHRIL_LOG_ERROR, "%s %s: %s",
               p->pull ? "pull from" : "push to", p->r->url,
               mithril_strerror(p->rc));
        return p->rc;
    }
    if (out) {
        *out = p->res;
    }
    return 0;
}

int
mithril_remote_push(mithril_store *s, const char *toolchain,
                    mithril_progress_fn fn, void *ctx, mithril_sync_result *out)
{
    struct pool p;
    struct mi_remote *r;
    char **keys = NULL;
    size_t n = 0;
    int rc;

    if (!s) {
        return MITHRIL_EINVAL;
    }
    r = remote_of(s);
    if (!r) {
        mi_log(MITHRIL_LOG_ERROR, "push: no remote (--remote or "
                                  "MITHRIL_REMOTE)");
        return MITHRIL_EINVAL;
    }
    if (r->read_only) {
        return MITHRIL_ERDONLY;
    }
    if ((rc = mi_sign_has_secret(s)) < 0) {
        return rc; /* entries would go out unsigned */
    }
    rc = mi_collect_entries(s, toolchain, &keys, &n);
    if (rc < 0) {
        return rc;
    }
    memset(&p, 0, sizeof(p));
    p.s = s;
    p.r = r;
    p.keys = keys;
    p.n = n;
    p.fn = fn;
    p.ctx = ctx;
    rc = pool_run(&p, out);
    mi_free_keys(keys, n);
    return rc;
}

int
mithril_remote_pull(mithril_store *s, const char *toolchain,
                    mithril_progress_fn fn, void *ctx, mithril_sync_result *out)
{
    struct key_list l = {0};
    struct mi_remote *r;
    struct pool p;
    sigset_t old;
    uint64_t gen;
    int64_t t0;
    int tries = 0;
    int rc;

    if (!s) {
        return MITHRIL_EINVAL;
    }
    r = remote_of(s);
    if (!r) {
        mi_log(MITHRIL_LOG_ERROR, "pull: no remote (--remote or "
                                  "MITHRIL_REMOTE)");
        return MITHRIL_EINVAL;
    }
    pthread_mutex_lock(&r->mu);
    sigpipe_block(&old);
    t0 = mi_now_ns();
    rc = with_fg(s, r);
    if (rc == 0) {
        do {
            gen = mi_cluster_gen(r->map);
            redirected = 0;
            rc = remote_keys(&r->fg, toolchain, &l);
        } while (again(&r->fg, gen, &tries));
        after_fg(s, r, rc, t0);
    }
    sigpipe_restore(&old);
    pthread_mutex_unlock(&r->mu);
    if (rc < 0) {
        key_list_release(&l);
        mi_log(MITHRIL_LOG_ERROR, "pull from %s: %s", r->url,
               mithril_strerror(rc));
        return rc;
    }
    memset(&p, 0, sizeof(p));
    p.s = s;
    p.r = r;
    p.keys = l.keys;
    p.n = l.n;
    p.pull = 1;
    p.fn = fn;
    p.ctx = ctx;
    rc = pool_run(&p, out);
    key_list_release(&l);
    if (rc == 0 && toolchain && strlen(toolchain) < sizeof(r->pulled_tc)) {
        pthread_mutex_lock(&r->mu);
        memcpy(r->pulled_tc, toolchain, strlen(toolchain) + 1);
        r->pulled_ns = mi_now_ns();
        pthread_mutex_unlock(&r->mu);
    }
    return rc;
}

int
mi_remote_pulled_recently(mithril_store *s, const char *toolchain)
{
    struct mi_remote *r;
    int64_t now = mi_now_ns();
    int yes;

    pthread_mutex_lock(&attach_mu);
    r = s->remote;
    pthread_mutex_unlock(&attach_mu);
    if (!r || !toolchain) {
        return 0;
    }
    pthread_mutex_lock(&r->mu);
    yes = r->pulled_ns != 0 && strcmp(r->pulled_tc, toolchain) == 0 &&
          now - r->pulled_ns < MI_PULL_FRESH_NS;
    pthread_mutex_unlock(&r->mu);
    return yes;
}
