/*
 * store.c - the content-addressed blob store: blobs by BLAKE3 address.
 *
 * Layout of a store folder (format version 1):
 *   VERSION                      "mithril-store 1\n", written at creation;
 *                                any other text is refused (EFORMAT)
 *   blobs/<a[0:2]>/<a[2:4]>/<a>  one file per address, mode 0600; the two
 *                                folder levels are made on demand, 0700
 *   tmp/                         temporary files (".mtmp.<pid>.<...>"), on
 *                                the same file system so link() publishes
 *   quarantine/<a>.<unix-time>   blobs that failed verification
 *   config, index/, stats        owned by config.c, index.c, stats.c
 *
 * Blob file v1: a 16-byte header, then the payload.
 *   0  4  magic "MTB1"
 *   4  1  format version (1)
 *   5  1  codec: 0 raw, 1 zstd (one frame)
 *   6  2  reserved, zero
 *   8  8  logical (content) size, u64 little-endian
 * A raw payload is the content itself, so its file is exactly 16 + size
 * bytes. zstd is used only when it shrinks the content (decided on the
 * first 1 MiB chunk for streamed puts); level from compression_level.
 *
 * Invariants:
 *  - Content that arrives already verified and encoded (a pull, an
 *    import) is stored as it is, without a second hash or compression
 *    (mi_store_put_encoded, mi_store_put_staged); payloads of 256 KiB and
 *    more are written with O_DIRECT where the file system allows it, so
 *    they skip the page cache and the publishing fsync finds little left
 *    to flush. The same publish rules apply, except for deferred puts (a
 *    pull's batch): their files are linked unsynced and without an index
 *    row, and the caller syncs them and their folders (mi_store_sync_blobs)
 *    before it commits their rows with the entries that name them.
 *  - A blob file appears only whole: puts stream into a temp file under
 *    tmp/ (hashing and compressing in bounded 1 MiB chunks) and publish it
 *    with mi_publish(NO_REPLACE), which fsyncs the file, links it to its
 *    address and fsyncs the folder. If the address already exists the
 *    existing file wins (dedupe). index.c hears of each new blob file
 *    (mi_index_blob_added) and of each one going (mi_index_blob_removed).
 *  - The store never hands out a wrong byte: with verification on, a get
 *    decodes and hashes the whole content before returning or writing any
 *    of it; a mismatch, a bad header or a zstd error fails with ECORRUPT
 *    and moves the file to quarantine/. With verification off the header
 *    and sizes are still checked.
 *  - A malformed address (not 64 lowercase hex) is EINVAL before any file
 *    system access, so an address can never name a path outside blobs/.
 *  - The folder must belong to the user and not be writable by group or
 *    others (EUNSAFE otherwise). Opening never scans the store.
 *  - No mutable state on the blob path lives in the handle: zstd contexts
 *    are per thread and temp names are unique per pid, thread and call, so
 *    one handle serves many threads and many processes share a folder.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#define STORE_VERSION_TEXT "mithril-store 1\n"
#define BLOB_MAGIC         "MTB1"
#define BLOB_FORMAT        1
#define CODEC_RAW          0
#define CODEC_ZSTD         1
#define CODEC_UNDECIDED    (-1)
#define HEADER_SIZE        16
#define CHUNK              ((size_t)1 << 20)
#define GET_FD_MEM_MAX     ((uint64_t)64 << 20)
#define DEFAULT_LEVEL      3
#define DIRECT_MIN         ((size_t)256 << 10)
#define DIRECT_ALIGN       ((size_t)MI_DIRECT_ALIGN)
_Static_assert(HEADER_SIZE == MI_BLOB_HEADER, "blob header size");

/* ---- per-thread zstd contexts ---- */

struct zctx {
    ZSTD_CCtx *c;
    ZSTD_DCtx *d;
    uint8_t *direct; /* DIRECT_ALIGN-aligned staging for O_DIRECT writes */
    size_t direct_cap;
};

static pthread_key_t zkey;
static pthread_once_t zonce = PTHREAD_ONCE_INIT;
static int zkey_ok;

static void
zctx_free(void *p)
{
    struct zctx *z = p;

    ZSTD_freeCCtx(z->c);
    ZSTD_freeDCtx(z->d);
    free(z->direct);
    free(z);
}

static void
zkey_make(void)
{
    zkey_ok = pthread_key_create(&zkey, zctx_free) == 0;
}

/* This thread's contexts, made on first use; NULL if out of memory. */
static struct zctx *
zctx_get(void)
{
    struct zctx *z;

    pthread_once(&zonce, zkey_make);
    if (!zkey_ok) {
        return NULL;
    }
    z = pthread_getspecific(zkey);
    if (z) {
        return z;
    }
    z = calloc(1, sizeof(*z));
    if (!z) {
        return NULL;
    }
    z->c = ZSTD_createCCtx();
    z->d = ZSTD_createDCtx();
    if (!z->c || !z->d || pthread_setspecific(zkey, z) != 0) {
        zctx_free(z);
        return NULL;
    }
    return z;
}

/* ---- small helpers ---- */

static int
store_writable(const mithril_store *s)
{
    return !(s->flags & MITHRIL_OPEN_READONLY);
}

static void
header_encode(uint8_t h[HEADER_SIZE], int codec, uint64_t logical)
{
    memcpy(h, BLOB_MAGIC, 4);
    h[4] = BLOB_FORMAT;
    h[5] = (uint8_t)codec;
    h[6] = 0;
    h[7] = 0;
    mi_put_le64(h + 8, logical);
}

void
mi_blob_path(const mithril_store *s, const char *addr, char *buf)
{
    snprintf(buf, PATH_MAX, "%s/blobs/%.2s/%.2s/%s", s->dir, addr, addr + 2,
             addr);
}

static void
blob_folder(const mithril_store *s, const char *addr, char *buf)
{
    snprintf(buf, PATH_MAX, "%s/blobs/%.2s/%.2s", s->dir, addr, addr + 2);
}

static void
digest_hex(mithril_blake3 *h, char addr[MITHRIL_HEX_SIZE])
{
    uint8_t d[MITHRIL_BLAKE3_OUT_LEN];

    mithril_blake3_finalize(h, d, sizeof(d));
    mithril_hex(d, sizeof(d), addr);
}

/* ---- open, close, settings ---- */

int
mithril_default_dir(char *buf, size_t n)
{
    const char *v;
    int len;

    if (!buf) {
        return MITHRIL_EINVAL;
    }
    if ((v = getenv("MITHRIL_DIR")) && *v) {
        len = snprintf(buf, n, "%s", v);
    } else if ((v = getenv("XDG_CACHE_HOME")) && *v) {
        len = snprintf(buf, n, "%s/mithril", v);
    } else if ((v = getenv("HOME")) && *v) {
        len = snprintf(buf, n, "%s/.cache/mithril", v);
    } else {
        return MITHRIL_EINVAL;
    }
    if (len < 0 || (size_t)len >= n) {
        return MITHRIL_ETOOBIG;
    }
    return 0;
}

/*
 * A store on a network file system works for the processes of one
 * machine, not for several machines at once: LMDB's reader table and
 * locks live in a shared memory map that the network does not keep
 * coherent. Say so once per open; sharing between machines is the
 * remote's and the archives' job.
 */
static void
warn_network_fs(int dirfd, const char *dir)
{
    struct statfs fs;
    const char *name;

    if (fstatfs(dirfd, &fs) < 0) {
        return;
    }
    name = mi_network_fs_name((unsigned long)fs.f_type);
    if (name) {
        mi_log(MITHRIL_LOG_WARN,
               "store '%s' is on a network file system (%s): use it from "
               "one machine only (its index cannot be shared between "
               "machines); share through a remote (MITHRIL_REMOTE) or "
               "archives instead",
               dir, name);
    }
}

/* The folder must be ours and closed to others. */
static int
check_safe(int dirfd, const char *dir)
{
    struct stat st;

    if (fstat(dirfd, &st) < 0) {
        return mi_log_errno("fstat", dir);
    }
    if (!S_ISDIR(st.st_mode)) {
        mi_log(MITHRIL_LOG_ERROR, "store '%s' is not a folder", dir);
        return -ENOTDIR;
    }
    if (st.st_uid != geteuid()) {
        mi_log(MITHRIL_LOG_ERROR,
               "store folder '%s' is owned by another user (uid %ld, "
               "not %ld)",
               dir, (long)st.st_uid, (long)geteuid());
        return MITHRIL_EUNSAFE;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        mi_log(MITHRIL_LOG_ERROR,
               "store folder '%s' is writable by others (mode %03o); "
               "run chmod 700 on it",
               dir, (unsigned)(st.st_mode & 0777));
        return MITHRIL_EUNSAFE;
    }
    warn_network_fs(dirfd, dir);
    return 0;
}

static int
make_subdir(const mithril_store *s, const char *name)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s", s->dir, name);
    if (mi_sys.mkdir(path, 0700) < 0 && errno != EEXIST) {
        return mi_log_errno("mkdir", path);
    }
    return 0;
}

/*
 * Check VERSION, or write it (and the fixed folders) in a writable store.
 * A read-only open of a folder without VERSION sees an empty store.
 */
static int
init_layout(mithril_store *s)
{
    char path[PATH_MAX];
    char text[64];
    ssize_t n;
    int fd, rc;

    fd = openat(s->dirfd, "VERSION", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        n = mi_read_full(fd, text, sizeof(text) - 1);
        close(fd);
        if (n < 0) {
            return (int)n;
        }
        text[n] = '\0';
        if (strcmp(text, STORE_VERSION_TEXT) != 0) {
            text[strcspn(text, "\n")] = '\0';
            mi_log(MITHRIL_LOG_ERROR,
                   "store '%s' has format '%s'; this build reads "
                   "'mithril-store 1' only",
                   s->dir, text);
            return MITHRIL_EFORMAT;
        }
    } else if (errno != ENOENT) {
        return mi_log_errno("open", "VERSION");
    } else if (store_writable(s)) {
        snprintf(path, sizeof(path), "%s/VERSION", s->dir);
        rc = mi_write_file_atomic(path, STORE_VERSION_TEXT,
                                  strlen(STORE_VERSION_TEXT), 0600);
        if (rc < 0) {
            return rc;
        }
    }
    if (!store_writable(s)) {
        return 0;
    }
    if ((rc = make_subdir(s, "blobs")) < 0 ||
        (rc = make_subdir(s, "tmp")) < 0 ||
        (rc = make_subdir(s, "quarantine")) < 0) {
        return rc;
    }
    return 0;
}

int
mithril_store_open(const char *dir, unsigned flags, mithril_store **out)
{
    const unsigned known =
        MITHRIL_OPEN_CREATE | MITHRIL_OPEN_READONLY | MITHRIL_OPEN_NO_CONFIG;
    mithril_store *s = NULL;
    char *real = NULL;
    int dirfd = -1, rc;

    if (!dir || !*dir || !out || (flags & ~known)) {
        return MITHRIL_EINVAL;
    }
    if ((flags & MITHRIL_OPEN_CREATE) && !(flags & MITHRIL_OPEN_READONLY)) {
        rc = mi_mkdirs(dir, 0700);
        if (rc < 0) {
            mi_log(MITHRIL_LOG_ERROR, "cannot create store '%s': %s", dir,
                   strerror(-rc));
            return rc;
        }
    }
    real = realpath(dir, NULL);
    if (!real) {
        return mi_log_errno("realpath", dir);
    }
    dirfd = open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        rc = mi_log_errno("open", real);
        goto fail;
    }
    rc = check_safe(dirfd, real);
    if (rc < 0) {
        goto fail;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        rc = -ENOMEM;
        goto fail;
    }
    s->dir = real;
    s->dirfd = dirfd;
    s->flags = flags;
    s->compression_level = DEFAULT_LEVEL;
    s->verify = 1;
    real = NULL;
    dirfd = -1;
    if (pthread_mutex_init(&s->index_mu, NULL) != 0) {
        free(s->dir);
        close(s->dirfd);
        free(s);
        return -ENOMEM;
    }
    rc = init_layout(s);
    if (rc == 0) {
        rc = mi_config_load(s);
    }
    if (rc < 0) {
        mithril_store_close(s);
        return rc;
    }
    *out = s;
    return 0;

fail:
    if (dirfd >= 0) {
        close(dirfd);
    }
    free(real);
    return rc;
}

void
mithril_store_close(mithril_store *s)
{
    if (!s) {
        return;
    }
    mi_remote_close(s);
    mi_index_close(s);
    mi_stats_close(s);
    if (s->dirfd >= 0) {
        close(s->dirfd);
    }
    pthread_mutex_destroy(&s->index_mu);
    free(s->remote_url);
    memset(s->secret_key, 0, sizeof(s->secret_key));
    free(s->dir);
    free(s);
}

const char *
mithril_store_dir(const mithril_store *s)
{
    return s->dir;
}

void
mithril_store_set_compression(mithril_store *s, int level)
{
    if (level < 0) {
        level = 0;
    }
    if (level > ZSTD_maxCLevel()) {
        level = ZSTD_maxCLevel();
    }
    __atomic_store_n(&s->compression_level, level, __ATOMIC_RELAXED);
    s->compression_source = MITHRIL_SOURCE_FLAG;
}

void
mithril_store_set_verify(mithril_store *s, int on)
{
    __atomic_store_n(&s->verify, on ? 1 : 0, __ATOMIC_RELAXED);
    s->verify_source = MITHRIL_SOURCE_FLAG;
}

/* ---- quarantine ---- */

int
mi_quarantine(mithril_store *s, const char *addr, const char *why)
{
    char from[PATH_MAX];
    char to[PATH_MAX];

    if (!mithril_addr_valid(addr)) {
        return MITHRIL_EINVAL;
    }
    if (!store_writable(s)) {
        mi_log(MITHRIL_LOG_ERROR,
               "corrupt blob '%s' (%s) left in place: store is read-only", addr,
               why);
        return MITHRIL_ERDONLY;
    }
    mi_blob_path(s, addr, from);
    snprintf(to, sizeof(to), "%s/quarantine", s->dir);
    if (mi_sys.mkdir(to, 0700) < 0 && errno != EEXIST) {
        return mi_log_errno("mkdir", to);
    }
    snprintf(to, sizeof(to), "%s/quarantine/%s.%lld", s->dir, addr,
             (long long)time(NULL));
    if (mi_sys.rename(from, to) < 0) {
        if (errno == ENOENT) {
            return MITHRIL_ENOTFOUND;
        }
        return mi_log_errno("rename", from);
    }
    mi_log(MITHRIL_LOG_WARN,
           "blob '%s' failed verification (%s); moved to '%s'", addr, why, to);
    mi_index_blob_removed(s, addr);
    return 0;
}

/*
 * Quarantine the file we read, not one that a concurrent put published
 * after another reader had already moved the bad one away.
 */
static void
quarantine_same(mithril_store *s, const char *addr, const char *why,
                const struct stat *seen)
{
    char path[PATH_MAX];
    struct stat st;

    mi_blob_path(s, addr, path);
    if (stat(path, &st) < 0 || st.st_ino != seen->st_ino ||
        st.st_dev != seen->st_dev) {
        mi_log(MITHRIL_LOG_ERROR, "corrupt blob '%s' (%s): already moved", addr,
               why);
        return;
    }
    mi_quarantine(s, addr, why);
}

/* ---- put ---- */

/* Where a put's content comes from: memory, or a file descriptor. */
struct source {
    int fd; /* -1: memory */
    const uint8_t *mem;
    size_t len;
    size_t pos;
    uint8_t *buf;  /* CHUNK bytes for reads from fd */
    size_t pre;    /* bytes already read into buf */
    int has_pre;   /* buf holds a first chunk not handed out yet */
    int64_t total; /* known content size, or -1 */
};

/* The next piece (at most CHUNK bytes); fewer than CHUNK means the end. */
static int
source_next(struct source *src, const uint8_t **p, size_t *n)
{
    ssize_t r;

    if (src->fd < 0) {
        *n = src->len - src->pos < CHUNK ? src->len - src->pos : CHUNK;
        *p = src->mem + src->pos;
        src->pos += *n;
        return 0;
    }
    if (src->has_pre) {
        src->has_pre = 0;
        *p = src->buf;
        *n = src->pre;
        return 0;
    }
    r = mi_read_full(src->fd, src->buf, CHUNK);
    if (r < 0) {
        mi_log(MITHRIL_LOG_ERROR, "read: %s", strerror((int)-r));
        return (int)r;
    }
    *p = src->buf;
    *n = (size_t)r;
    return 0;
}

/* State of one streaming put. */
struct put_job {
    int fd;
    char tmp[PATH_MAX];
    int codec;
    uint64_t logical;
    uint64_t payload;
    struct mi_blob_list *defer; /* a deferred put: no syncs, no row */
    ZSTD_CCtx *c;
    uint8_t *out;
    size_t out_cap;
    int header_done; /* written with the payload (direct path) */
};

static int
job_write(struct put_job *j, const void *p, size_t n)
{
    int rc = mi_write_all(j->fd, p, n);

    if (rc < 0) {
        mi_log(MITHRIL_LOG_ERROR, "write '%s': %s", j->tmp, strerror(-rc));
        return rc;
    }
    j->payload += n;
    return 0;
}

/*
 * Open the job's temp file under tmp/; reserve: write room for the header
 * (filled in by job_publish).
 */
static int
job_open(mithril_store *s, struct put_job *j, int reserve)
{
    static const uint8_t zero[HEADER_SIZE];
    char path[PATH_MAX];
    int rc;

    snprintf(path, sizeof(path), "%s/tmp", s->dir);
    j->fd = mi_temp_open(path, j->tmp, 0600);
    if (j->fd == -ENOENT && mi_mkdirs(path, 0700) == 0) {
        j->fd = mi_temp_open(path, j->tmp, 0600);
    }
    if (j->fd < 0) {
        return j->fd;
    }
    rc = reserve ? job_write(j, zero, sizeof(zero)) : 0;
    j->payload = 0;
    return rc;
}

static void
job_abandon(struct put_job *j)
{
    if (j->fd >= 0) {
        close(j->fd);
        mi_sys.unlink(j->tmp);
        j->fd = -1;
    }
}

/*
 * Write the header (only now are codec and size known) and publish the
 * job's temp file at addr. The file descriptor is consumed either way.
 */
static int
job_publish(mithril_store *s, struct put_job *j, const char *addr)
{
    uint8_t header[HEADER_SIZE];
    char path[PATH_MAX];
    struct stat mine, st;
    ssize_t w;
    int rc;

    header_encode(header, j->codec, j->logical);
    w = j->header_done ? (ssize_t)sizeof(header)
                       : mi_sys.pwrite(j->fd, header, sizeof(header), 0);
    if (w != (ssize_t)sizeof(header)) {
        rc = w < 0 ? -errno : -EIO;
        mi_log(MITHRIL_LOG_ERROR, "pwrite '%s': %s", j->tmp, strerror(-rc));
        job_abandon(j);
        return rc;
    }
    if (fstat(j->fd, &mine) < 0) {
        rc = mi_log_errno("fstat", j->tmp);
        job_abandon(j);
        return rc;
    }
    blob_folder(s, addr, path);
    if ((rc = mi_mkdirs_sync(path, 0700, !j->defer)) < 0) {
        job_abandon(j);
        return rc;
    }
    mi_blob_path(s, addr, path);
    rc =
        mi_publish(j->fd, j->tmp, path,
                   MI_PUBLISH_NO_REPLACE | (j->defer ? MI_PUBLISH_NO_SYNC : 0));
    j->fd = -1;

    /* New file, or did an identical one win the race? */
    if (stat(path, &st) == 0 && st.st_ino == mine.st_ino &&
        st.st_dev == mine.st_dev) {
        if (!j->defer ||
            mi_blob_list_add(j->defer, addr, HEADER_SIZE + j->payload,
                             j->logical, 1) < 0) {
            /* Not deferred, or no memory to defer it: the row now. */
            mi_index_blob_added(s, addr, HEADER_SIZE + j->payload, j->logical);
        }
    } else if (j->defer && rc == 0) {
        rc = mi_blob_list_add(j->defer, addr, 0, 0, 0);
    }
    if (rc == 0) {
        mi_stats_add(s, MI_C_PUTS, 1);
    }
    return rc;
}

/* Compress p[0..n) with directive d, writing output as it comes. */
static int
zstd_feed(struct put_job *j, const uint8_t *p, size_t n, ZSTD_EndDirective d)
{
    ZSTD_inBuffer ib = {p, n, 0};
    ZSTD_outBuffer ob;
    size_t r;
    int rc;

    for (;;) {
        ob.dst = j->out;
        ob.size = j->out_cap;
        ob.pos = 0;
        r = ZSTD_compressStream2(j->c, &ob, &ib, d);
        if (ZSTD_isError(r)) {
            mi_log(MITHRIL_LOG_ERROR, "zstd: %s", ZSTD_getErrorName(r));
            return MITHRIL_ECOMPRESS;
        }
        if (ob.pos > 0 && (rc = job_write(j, j->out, ob.pos)) < 0) {
            return rc;
        }
        if (d == ZSTD_e_continue ? ib.pos == ib.size : r == 0) {
            return 0;
        }
    }
}

/*
 * The first chunk decides the codec: zstd if its compressed form (flushed,
 * or the whole frame when it is also the last chunk) is smaller, else raw.
 */
static int
first_chunk(struct put_job *j, const uint8_t *p, size_t n, int last, int level,
            int64_t total)
{
    ZSTD_inBuffer ib = {p, n, 0};
    ZSTD_outBuffer ob = {j->out, n - 1, 0};
    size_t r;

    ZSTD_CCtx_reset(j->c, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(j->c, ZSTD_c_compressionLevel, level);
    if (total >= 0) {
        ZSTD_CCtx_setPledgedSrcSize(j->c, (unsigned long long)total);
    }
    for (;;) {
        r = ZSTD_compressStream2(j->c, &ob, &ib,
                                 last ? ZSTD_e_end : ZSTD_e_flush);
        if (ZSTD_isError(r)) {
            mi_log(MITHRIL_LOG_ERROR, "zstd: %s", ZSTD_getErrorName(r));
            return MITHRIL_ECOMPRESS;
        }
        if (r == 0) {
            j->codec = CODEC_ZSTD;
            return job_write(j, j->out, ob.pos);
        }
        if (ob.pos == ob.size) {
            /* Does not shrink: store raw. */
            j->codec = CODEC_RAW;
            return job_write(j, p, n);
        }
    }
}

/*
 * Stream src into a temp file, then publish it at its address. known_addr:
 * the caller already hashed the content (memory puts).
 */
static int
put_stream(mithril_store *s, struct source *src, const char *known_addr,
           char addr_out[MITHRIL_HEX_SIZE])
{
    struct put_job j = {.fd = -1, .codec = CODEC_RAW};
    char addr[MITHRIL_HEX_SIZE];
    mithril_blake3 h;
    struct zctx *z;
    const uint8_t *p = NULL;
    size_t n = 0;
    int level = __atomic_load_n(&s->compression_level, __ATOMIC_RELAXED);
    int last = 0, rc;

    if (level > 0) {
        z = zctx_get();
        if (!z) {
            return -ENOMEM;
        }
        j.c = z->c;
        j.codec = CODEC_UNDECIDED;
        j.out_cap = ZSTD_compressBound(CHUNK);
        j.out = malloc(j.out_cap);
        if (!j.out) {
            return -ENOMEM;
        }
    }
    if ((rc = job_open(s, &j, 1)) < 0) {
        goto fail;
    }
    if (!known_addr) {
        mithril_blake3_init(&h);
    }

    while (!last) {
        if ((rc = source_next(src, &p, &n)) < 0) {
            goto fail;
        }
        last = n < CHUNK;
        if (!known_addr) {
            mithril_blake3_update(&h, p, n);
        }
        j.logical += n;
        if (j.codec == CODEC_UNDECIDED) {
            if (n <= 32) {
                /* Too small for a zstd frame to pay off. */
                j.codec = CODEC_RAW;
                rc = job_write(&j, p, n);
            } else {
                rc = first_chunk(&j, p, n, last, level, src->total);
            }
        } else if (j.codec == CODEC_ZSTD) {
            rc = zstd_feed(&j, p, n, last ? ZSTD_e_end : ZSTD_e_continue);
        } else {
            rc = job_write(&j, p, n);
        }
        if (rc < 0) {
            goto fail;
        }
    }
    if (known_addr) {
        memcpy(addr, known_addr, MITHRIL_HEX_SIZE);
    } else {
        digest_hex(&h, addr);
    }
    rc = job_publish(s, &j, addr);
    j.fd = -1;
    if (rc == 0) {
        memcpy(addr_out, addr, MITHRIL_HEX_SIZE);
    }
    goto out;

fail:
    job_abandon(&j);
out:
    free(j.out);
    return rc;
}

static int
blob_present(mithril_store *s, const char *addr)
{
    char rel[96];
    struct stat st;

    snprintf(rel, sizeof(rel), "blobs/%.2s/%.2s/%s", addr, addr + 2, addr);
    if (fstatat(s->dirfd, rel, &st, 0) == 0) {
        return 1;
    }
    if (errno == ENOENT || errno == ENOTDIR) {
        return 0;
    }
    return mi_log_errno("stat", rel);
}

int
mithril_store_put(mithril_store *s, const void *data, size_t len,
                  char addr[MITHRIL_HEX_SIZE])
{
    struct source src = {.fd = -1, .mem = data, .len = len, .total = -1};
    char a[MITHRIL_HEX_SIZE];
    uint8_t d[MITHRIL_BLAKE3_OUT_LEN];
    int rc;

    if (!s || !addr || (!data && len > 0)) {
        return MITHRIL_EINVAL;
    }
    if (!store_writable(s)) {
        return MITHRIL_ERDONLY;
    }
    src.total = (int64_t)len;
    if (!data) {
        src.mem = (const uint8_t *)"";
    }

    /*
     * Hash first: content already present costs no write at all.
     * Limitation: the existing file is trusted, not re-verified; a damaged
     * one is found (and quarantined) by the next get or verify, after
     * which a put stores the content again.
     */
    mithril_blake3_hash(src.mem, len, d);
    mithril_hex(d, sizeof(d), a);
    rc = blob_present(s, a);
    if (rc < 0) {
        return rc;
    }
    if (rc == 1) {
        mi_stats_add(s, MI_C_PUTS, 1);
        memcpy(addr, a, MITHRIL_HEX_SIZE);
        return 0;
    }
    return put_stream(s, &src, a, addr);
}

/*
 * Write header and payload of an already encoded blob with O_DIRECT: the
 * block-aligned part goes from an aligned per-thread buffer straight to
 * the device (no page-cache copy, and the publishing fsync has almost
 * nothing left to write); the tail under one block is written buffered.
 * Returns 1 when the file system or memory does not allow it, having
 * written nothing, so that the caller writes it the ordinary way.
 */
static int
job_write_direct(struct put_job *j, const void *payload, size_t plen,
                 uint8_t *staged)
{
    size_t total = HEADER_SIZE + plen;
    size_t head = total & ~(DIRECT_ALIGN - 1);
    struct zctx *z = NULL;
    uint8_t *out = staged;
    ssize_t w;
    int fl;
    int rc;

    if (plen < DIRECT_MIN) {
        return 1;
    }
    if (!out) {
        z = zctx_get();
        if (!z) {
            return 1;
        }
        if (z->direct_cap < head) {
            void *p = mi_direct_alloc(head);

            if (!p) {
                return 1;
            }
            free(z->direct);
            z->direct = p;
            z->direct_cap = head;
        }
        out = z->direct;
    }
    fl = fcntl(j->fd, F_GETFL);
    if (fl < 0 || fcntl(j->fd, F_SETFL, fl | O_DIRECT) < 0) {
        return 1;
    }
    header_encode(out, j->codec, j->logical);
    if (!staged) {
        memcpy(out + HEADER_SIZE, payload, head - HEADER_SIZE);
    }
    w = mi_sys.pwrite(j->fd, out, head, 0);
    rc = w == (ssize_t)head ? 0 : w < 0 ? -errno : -EIO;
    if (fcntl(j->fd, F_SETFL, fl) < 0 && rc == 0) {
        rc = -errno;
    }
    if (rc == -EINVAL && w < 0) {
        /* Refused (alignment rules of this file system): nothing written. */
        return 1;
    }
    if (rc == 0 && total > head) {
        w = mi_sys.pwrite(j->fd, (const uint8_t *)payload + head - HEADER_SIZE,
                          total - head, (off_t)head);
        rc = w == (ssize_t)(total - head) ? 0 : w < 0 ? -errno : -EIO;
    }
    if (rc < 0) {
        mi_log(MITHRIL_LOG_ERROR, "write '%s': %s", j->tmp, strerror(-rc));
        return rc;
    }
    j->payload = plen;
    j->header_done = 1;
    return 0;
}

/* mi_store_put_encoded and mi_store_put_staged; staged: see the latter. */
static int
put_encoded(mithril_store *s, const char *addr, int zstd, const void *payload,
            size_t plen, uint64_t logical, uint8_t *staged,
            struct mi_blob_list *defer)
{
    struct put_job j = {.fd = -1, .logical = logical, .defer = defer};
    int rc;

    if (!s || !addr || (!payload && plen > 0) ||
        mithril_addr_valid(addr) != 1 || (!zstd && plen != logical)) {
        return MITHRIL_EINVAL;
    }
    if (!store_writable(s)) {
        return MITHRIL_ERDONLY;
    }
    rc = blob_present(s, addr);
    if (rc != 0) {
        if (rc == 1) {
            mi_stats_add(s, MI_C_PUTS, 1);
        }
        if (rc == 1 && defer) {
            /* Maybe another deferred put's, not durable yet. */
            return mi_blob_list_add(defer, addr, 0, 0, 0);
        }
        return rc < 0 ? rc : 0;
    }
    j.codec = zstd ? CODEC_ZSTD : CODEC_RAW;
    if ((rc = job_open(s, &j, 0)) < 0) {
        job_abandon(&j);
        return rc;
    }
    rc = job_write_direct(&j, payload, plen, staged);
    if (rc == 1) {
        static const uint8_t zero[HEADER_SIZE];

        rc = job_write(&j, zero, sizeof(zero));
        j.payload = 0;
        rc = rc < 0 || plen == 0 ? rc : job_write(&j, payload, plen);
    }
    if (rc < 0) {
        job_abandon(&j);
        return rc;
    }
    return job_publish(s, &j, addr);
}

int
mi_store_put_encoded(mithril_store *s, const char *addr, int zstd,
                     const void *payload, size_t plen, uint64_t logical,
                     struct mi_blob_list *defer)
{
    return put_encoded(s, addr, zstd, payload, plen, logical, NULL, defer);
}

int
mi_store_put_staged(mithril_store *s, const char *addr, int zstd, uint8_t *buf,
                    size_t plen, uint64_t logical, struct mi_blob_list *defer)
{
    if (!buf || ((uintptr_t)buf & (DIRECT_ALIGN - 1)) != 0) {
        return MITHRIL_EINVAL;
    }
    return put_encoded(s, addr, zstd, buf + HEADER_SIZE, plen, logical, buf,
                       defer);
}

static int
cmp_new_blob(const void *a, const void *b)
{
    return strcmp(((const struct mi_new_blob *)a)->addr,
                  ((const struct mi_new_blob *)b)->addr);
}

/* One of the threads of mi_store_sync_blobs: the blobs i = k mod step. */
struct sync_part {
    mithril_store *s;
    const struct mi_blob_list *l;
    size_t k;
    size_t step;
    int rc;
};

static void *
sync_part_run(void *arg)
{
    struct sync_part *p = arg;
    const struct mi_new_blob *v = p->l->v;
    char path[PATH_MAX];
    size_t n = p->l->n;
    size_t i;
    int fd;

    for (i = p->k; i < n && p->rc == 0; i += p->step) {
        const char *a = v[i].addr;
        int last = i + 1 == n;

        if (!last && strcmp(a, v[i + 1].addr) == 0) {
            continue; /* listed twice: the last one syncs it */
        }
        mi_blob_path(p->s, a, path);
        fd = mi_sys.open(path, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0 || mi_sys.fsync(fd) < 0) {
            p->rc = mi_log_errno("fsync", path);
        }
        if (fd >= 0) {
            close(fd);
        }
        /* The last blob of a folder syncs the folder. */
        if (p->rc == 0 && (last || memcmp(a, v[i + 1].addr, 4) != 0)) {
            blob_folder(p->s, a, path);
            p->rc = mi_fsync_dir(path);
        }
        if (p->rc == 0 && (last || memcmp(a, v[i + 1].addr, 2) != 0)) {
            snprintf(path, sizeof(path), "%s/blobs/%.2s", p->s->dir, a);
            p->rc = mi_fsync_dir(path);
        }
    }
    return NULL;
}

/*
 * The syncs of a batch are independent, and once the first has committed
 * the file system's journal the rest mostly wait for the device: up to
 * SYNC_THREADS threads issue them side by side.
 */
#define SYNC_THREADS    8
#define SYNC_PER_THREAD 2 /* blobs each thread takes at least */

int
mi_store_sync_blobs(mithril_store *s, struct mi_blob_list *l)
{
    struct sync_part parts[SYNC_THREADS];
    pthread_t threads[SYNC_THREADS];
    char path[PATH_MAX];
    size_t want;
    size_t started = 0;
    size_t i;
    int rc = 0;

    if (l->n == 0) {
        return 0;
    }
    /* Sorted, a blob listed twice and the blobs of one folder are adjacent. */
    qsort(l->v, l->n, sizeof(*l->v), cmp_new_blob);
    want = l->n / SYNC_PER_THREAD;
    want = want < 1 ? 1 : want > SYNC_THREADS ? SYNC_THREADS : want;
    for (i = 0; i < want; i++) {
        parts[i] = (struct sync_part){s, l, i, want, 0};
    }
    for (i = 1; i < want; i++) {
        if (pthread_create(&threads[i], NULL, sync_part_run, &parts[i]) != 0) {
            break;
        }
        started = i;
    }
    /* Parts whose thread did not start run here, after part 0. */
    sync_part_run(&parts[0]);
    for (i = started + 1; i < want; i++) {
        sync_part_run(&parts[i]);
    }
    for (i = 1; i <= started; i++) {
        pthread_join(threads[i], NULL);
    }
    for (i = 0; i < want; i++) {
        rc = rc < 0 ? rc : parts[i].rc;
    }
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/blobs", s->dir);
        rc = mi_fsync_dir(path);
    }
    return rc;
}

/* Room for want blobs in l (capacity doubles); -ENOMEM leaves l as is. */
static int
blob_list_reserve(struct mi_blob_list *l, size_t want)
{
    struct mi_new_blob *v;
    size_t cap = l->cap ? l->cap : 16;

    if (want <= l->cap) {
        return 0;
    }
    while (cap < want) {
        cap *= 2;
    }
    v = realloc(l->v, cap * sizeof(*v));
    if (!v) {
        return -ENOMEM;
    }
    l->v = v;
    l->cap = cap;
    return 0;
}

int
mi_blob_list_add(struct mi_blob_list *l, const char *addr, uint64_t stored,
                 uint64_t logical, int row)
{
    if (blob_list_reserve(l, l->n + 1) < 0) {
        return -ENOMEM;
    }
    memcpy(l->v[l->n].addr, addr, MITHRIL_HEX_SIZE);
    l->v[l->n].stored = stored;
    l->v[l->n].logical = logical;
    l->v[l->n].row = row;
    l->n++;
    return 0;
}

int
mi_blob_list_move(struct mi_blob_list *to, struct mi_blob_list *from)
{
    if (blob_list_reserve(to, to->n + from->n) < 0) {
        return -ENOMEM; /* both lists as they were */
    }
    if (from->n > 0) {
        memcpy(to->v + to->n, from->v, from->n * sizeof(*from->v));
    }
    to->n += from->n;
    from->n = 0;
    return 0;
}

void
mi_blob_list_release(struct mi_blob_list *l)
{
    free(l->v);
    memset(l, 0, sizeof(*l));
}

int
mithril_store_put_fd(mithril_store *s, int fd, char addr[MITHRIL_HEX_SIZE])
{
    struct source src = {.fd = fd, .total = -1};
    ssize_t r;
    int rc;

    if (!s || !addr || fd < 0) {
        return MITHRIL_EINVAL;
    }
    if (!store_writable(s)) {
        return MITHRIL_ERDONLY;
    }
    src.buf = mi_direct_alloc(CHUNK); /* aligned: hashed in place */
    if (!src.buf) {
        return -ENOMEM;
    }

    /* Content that fits one chunk takes the memory path (and its dedupe). */
    r = mi_read_full(fd, src.buf, CHUNK);
    if (r < 0) {
        mi_log(MITHRIL_LOG_ERROR, "read: %s", strerror((int)-r));
        rc = (int)r;
    } else if ((size_t)r < CHUNK) {
        rc = mithril_store_put(s, src.buf, (size_t)r, addr);
    } else {
        src.pre = (size_t)r;
        src.has_pre = 1;
        rc = put_stream(s, &src, NULL, addr);
    }
    free(src.buf);
    return rc;
}

int
mithril_store_put_file(mithril_store *s, const char *path,
                       char addr[MITHRIL_HEX_SIZE])
{
    int fd, rc;

    if (!s || !path || !addr) {
        return MITHRIL_EINVAL;
    }
    if (!store_writable(s)) {
        return MITHRIL_ERDONLY;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return mi_log_errno("open", path);
    }
    rc = mithril_store_put_fd(s, fd, addr);
    close(fd);
    return rc;
}

/* ---- get ---- */

/* Decoding one blob file in bounded pieces. */
struct reader {
    int fd;
    struct stat st;
    int codec;
    uint64_t logical;  /* from the header */
    uint64_t payload;  /* file size less the header */
    uint64_t produced; /* content bytes handed out */
    uint64_t fed;      /* payload bytes read from the file */
    ZSTD_DCtx *d;
    uint8_t *in;
    size_t in_cap;
    ZSTD_inBuffer ib;
    int frame_done;
    const char *why; /* reason for ECORRUPT */
};

static int
corrupt(struct reader *r, const char *why)
{
    r->why = why;
    return MITHRIL_ECORRUPT;
}

/* Open and check the header; ENOTFOUND, ECORRUPT (r->why) or EFORMAT. */
static int
reader_open(mithril_store *s, const char *addr, struct reader *r)
{
    char path[PATH_MAX];
    uint8_t h[HEADER_SIZE];
    ssize_t n;
    int rc;

    memset(r, 0, sizeof(*r));
    mi_blob_path(s, addr, path);
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            return MITHRIL_ENOTFOUND;
        }
        return mi_log_errno("open", path);
    }
    if (fstat(r->fd, &r->st) < 0) {
        rc = mi_log_errno("fstat", path);
        goto fail;
    }
    n = mi_read_full(r->fd, h, sizeof(h));
    if (n < 0) {
        rc = (int)n;
        goto fail;
    }
    if (n < HEADER_SIZE || r->st.st_size < HEADER_SIZE) {
        return corrupt(r, "shorter than its header");
    }
    if (memcmp(h, BLOB_MAGIC, 4) != 0) {
        return corrupt(r, "bad magic");
    }
    if (h[4] != BLOB_FORMAT) {
        mi_log(MITHRIL_LOG_ERROR, "blob '%s' has format %u; this build reads 1",
               addr, h[4]);
        rc = MITHRIL_EFORMAT;
        goto fail;
    }
    if (h[5] > CODEC_ZSTD || h[6] || h[7]) {
        return corrupt(r, "unknown codec");
    }
    r->codec = h[5];
    r->logical = mi_get_le64(h + 8);
    r->payload = (uint64_t)r->st.st_size - HEADER_SIZE;
    if (r->codec == CODEC_RAW && r->payload != r->logical) {
        return corrupt(r, "size does not match its header");
    }
    /* zstd expands at most ~32768 times; a bigger claim is damage. */
    if (r->codec == CODEC_ZSTD &&
        (r->payload == 0 || r->logical / 65536 > r->payload + 64)) {
        return corrupt(r, "implausible size in header");
    }
    return 0;

fail:
    close(r->fd);
    r->fd = -1;
    return rc;
}

static void
reader_close(struct reader *r)
{
    if (r->fd >= 0) {
        close(r->fd);
        r->fd = -1;
    }
    free(r->in);
    r->in = NULL;
}

/* Start (again) at the first content byte. */
static int
reader_start(struct reader *r)
{
    struct zctx *z;

    if (lseek(r->fd, HEADER_SIZE, SEEK_SET) < 0) {
        return -errno;
    }
    r->produced = 0;
    r->fed = 0;
    r->frame_done = 0;
    r->ib.src = r->in;
    r->ib.size = 0;
    r->ib.pos = 0;
    if (r->codec != CODEC_ZSTD) {
        return 0;
    }
    if (!r->d) {
        z = zctx_get();
        if (!z) {
            return -ENOMEM;
        }
        r->d = z->d;
    }
    ZSTD_DCtx_reset(r->d, ZSTD_reset_session_only);
    if (!r->in) {
        r->in_cap = ZSTD_DStreamInSize();
        if (r->payload < r->in_cap) {
            r->in_cap = (size_t)r->payload;
        }
        r->in = malloc(r->in_cap);
        if (!r->in) {
            return -ENOMEM;
        }
        r->ib.src = r->in;
    }
    return 0;
}

/* Refill the input buffer when it is empty and payload remains. */
static int
reader_refill(struct reader *r)
{
    uint64_t left = r->payload - r->fed;
    size_t want = left < r->in_cap ? (size_t)left : r->in_cap;
    ssize_t n;

    if (r->ib.pos < r->ib.size || want == 0) {
        return 0;
    }
    n = mi_read_full(r->fd, r->in, want);
    if (n < 0) {
        return (int)n;
    }
    if ((size_t)n != want) {
        return corrupt(r, "truncated");
    }
    r->fed += want;
    r->ib.size = want;
    r->ib.pos = 0;
    return 0;
}

/* Fill out[0..cap) exactly; cap must not exceed what the header promises. */
static int
reader_read(struct reader *r, uint8_t *out, size_t cap)
{
    ZSTD_outBuffer ob = {out, cap, 0};
    size_t ret, before_in, before_out;
    ssize_t n;
    int rc;

    if (r->codec == CODEC_RAW) {
        n = mi_read_full(r->fd, out, cap);
        if (n < 0) {
            return (int)n;
        }
        if ((size_t)n != cap) {
            return corrupt(r, "truncated");
        }
        r->produced += cap;
        return 0;
    }
    while (ob.pos < ob.size) {
        if (r->frame_done) {
            return corrupt(r, "content shorter than its header says");
        }
        if ((rc = reader_refill(r)) < 0) {
            return rc;
        }
        before_in = r->ib.pos;
        before_out = ob.pos;
        ret = ZSTD_decompressStream(r->d, &ob, &r->ib);
        if (ZSTD_isError(ret)) {
            return corrupt(r, "zstd stream damaged");
        }
        if (ret == 0) {
            r->frame_done = 1;
        } else if (r->ib.pos == before_in && ob.pos == before_out &&
                   r->fed == r->payload) {
            return corrupt(r, "truncated zstd stream");
        }
    }
    r->produced += cap;
    return 0;
}

/* After all content: the stream must end here, with nothing left over. */
static int
reader_finish(struct reader *r)
{
    uint8_t extra;
    ZSTD_outBuffer ob;
    size_t ret, before_in;
    int rc;

    if (r->produced != r->logical) {
        return corrupt(r, "content shorter than its header says");
    }
    if (r->codec == CODEC_RAW) {
        return 0;
    }
    while (!r->frame_done) {
        if ((rc = reader_refill(r)) < 0) {
            return rc;
        }
        ob.dst = &extra;
        ob.size = 1;
        ob.pos = 0;
        before_in = r->ib.pos;
        ret = ZSTD_decompressStream(r->d, &ob, &r->ib);
        if (ZSTD_isError(ret)) {
            return corrupt(r, "zstd stream damaged");
        }
        if (ob.pos > 0) {
            return corrupt(r, "content longer than its header says");
        }
        if (ret == 0) {
            r->frame_done = 1;
        } else if (r->ib.pos == before_in && r->fed == r->payload) {
            return corrupt(r, "truncated zstd stream");
        }
    }
    if (r->ib.pos != r->ib.size || r->fed != r->payload) {
        return corrupt(r, "data after the zstd frame");
    }
    return 0;
}

/* ECORRUPT: quarantine the file we read and say so. */
static int
read_failed(mithril_store *s, const char *addr, struct reader *r, int rc)
{
    if (rc == MITHRIL_ECORRUPT) {
        quarantine_same(s, addr, r->why ? r->why : "corrupt", &r->st);
    }
    return rc;
}

static int
check_addr(const mithril_store *s, const char *addr)
{
    if (!s || !addr || !mithril_addr_valid(addr)) {
        return MITHRIL_EINVAL;
    }
    return 0;
}

/* The whole content into memory, verified; r is open and started. */
static int
read_all(mithril_store *s, const char *addr, struct reader *r, void **data,
         size_t *len)
{
    char got[MITHRIL_HEX_SIZE];
    uint8_t d[MITHRIL_BLAKE3_OUT_LEN];
    uint8_t *buf;
    int rc;

    if (r->logical > (uint64_t)SIZE_MAX - 1) {
        return -ENOMEM;
    }
    buf = malloc(r->logical ? (size_t)r->logical : 1);
    if (!buf) {
        return -ENOMEM;
    }
    if ((rc = reader_start(r)) < 0 ||
        (rc = reader_read(r, buf, (size_t)r->logical)) < 0 ||
        (rc = reader_finish(r)) < 0) {
        goto fail;
    }
    if (__atomic_load_n(&s->verify, __ATOMIC_RELAXED)) {
        mithril_blake3_hash(buf, (size_t)r->logical, d);
        mithril_hex(d, sizeof(d), got);
        if (strcmp(got, addr) != 0) {
            rc = corrupt(r, "content does not hash to its address");
            goto fail;
        }
    }
    *data = buf;
    *len = (size_t)r->logical;
    return 0;

fail:
    free(buf);
    return rc;
}

int
mithril_store_get(mithril_store *s, const char *addr, void **data, size_t *len)
{
    struct reader r;
    int rc;

    if ((rc = check_addr(s, addr)) < 0 || !data || !len) {
        return rc < 0 ? rc : MITHRIL_EINVAL;
    }
    rc = reader_open(s, addr, &r);
    if (rc == 0) {
        rc = read_all(s, addr, &r, data, len);
    }
    if (rc < 0) {
        rc = read_failed(s, addr, &r, rc);
    }
    reader_close(&r);
    return rc;
}

/* Large blobs: hash everything first, then decode again into fd. */
static int
stream_to_fd(mithril_store *s, const char *addr, struct reader *r, int fd)
{
    char got[MITHRIL_HEX_SIZE];
    mithril_blake3 h;
    uint8_t *buf;
    size_t n;
    int rc, pass;
    int verify = __atomic_load_n(&s->verify, __ATOMIC_RELAXED);

    buf = mi_direct_alloc(CHUNK); /* aligned: hashed in place */
    if (!buf) {
        return -ENOMEM;
    }
    for (pass = verify ? 0 : 1; pass < 2; pass++) {
        if ((rc = reader_start(r)) < 0) {
            goto out;
        }
        mithril_blake3_init(&h);
        while (r->produced < r->logical) {
            n = r->logical - r->produced < CHUNK
                    ? (size_t)(r->logical - r->produced)
                    : CHUNK;
            if ((rc = reader_read(r, buf, n)) < 0) {
                goto out;
            }
            if (pass == 0) {
                mithril_blake3_update(&h, buf, n);
            } else if ((rc = mi_write_all(fd, buf, n)) < 0) {
                mi_log(MITHRIL_LOG_ERROR, "write: %s", strerror(-rc));
                goto out;
            }
        }
        if ((rc = reader_finish(r)) < 0) {
            goto out;
        }
        if (pass == 0) {
            digest_hex(&h, got);
            if (strcmp(got, addr) != 0) {
                rc = corrupt(r, "content does not hash to its address");
                goto out;
            }
        }
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

int
mithril_store_get_fd(mithril_store *s, const char *addr, int fd)
{
    struct reader r;
    void *data = NULL;
    size_t len;
    int rc;

    if ((rc = check_addr(s, addr)) < 0 || fd < 0) {
        return rc < 0 ? rc : MITHRIL_EINVAL;
    }
    rc = reader_open(s, addr, &r);
    if (rc < 0) {
        goto out;
    }
    if (r.logical <= GET_FD_MEM_MAX) {
        rc = read_all(s, addr, &r, &data, &len);
        if (rc == 0 && (rc = mi_write_all(fd, data, len)) < 0) {
            mi_log(MITHRIL_LOG_ERROR, "write: %s", strerror(-rc));
        }
        free(data);
    } else {
        rc = stream_to_fd(s, addr, &r, fd);
    }
out:
    if (rc < 0) {
        rc = read_failed(s, addr, &r, rc);
    }
    reader_close(&r);
    return rc;
}

int
mithril_store_get_file(mithril_store *s, const char *addr, const char *path,
                       unsigned mode)
{
    char dir[PATH_MAX];
    char tmp[PATH_MAX];
    const char *slash;
    int fd, rc;

    if ((rc = check_addr(s, addr)) < 0 || !path || !*path) {
        return rc < 0 ? rc : MITHRIL_EINVAL;
    }
    slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, sizeof(dir), ".");
    } else if (slash == path) {
        snprintf(dir, sizeof(dir), "/");
    } else {
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    }
    fd = mi_temp_open(dir, tmp, 0600);
    if (fd < 0) {
        return fd;
    }
    rc = mithril_store_get_fd(s, addr, fd);
    if (rc == 0 && fchmod(fd, mode & 07777) < 0) {
        rc = mi_log_errno("fchmod", tmp);
    }
    if (rc < 0) {
        close(fd);
        mi_sys.unlink(tmp);
        return rc;
    }
    return mi_publish(fd, tmp, path, 0);
}

/* ---- exists, delete, info ---- */

int
mithril_store_exists(mithril_store *s, const char *addr)
{
    int rc = check_addr(s, addr);

    return rc < 0 ? rc : blob_present(s, addr);
}

int
mithril_store_delete(mithril_store *s, const char *addr)
{
    char path[PATH_MAX];
    int rc;

    if ((rc = check_addr(s, addr)) < 0) {
        return rc;
    }
    if (!store_writable(s)) {
        return MITHRIL_ERDONLY;
    }
    mi_blob_path(s, addr, path);
    if (mi_sys.unlink(path) < 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            return MITHRIL_ENOTFOUND;
        }
        return mi_log_errno("unlink", path);
    }
    mi_index_blob_removed(s, addr);
    return 0;
}

int
mithril_store_blob_info(mithril_store *s, const char *addr,
                        mithril_blob_info *out)
{
    struct reader r;
    int rc;

    if ((rc = check_addr(s, addr)) < 0 || !out) {
        return rc < 0 ? rc : MITHRIL_EINVAL;
    }
    rc = reader_open(s, addr, &r);
    if (rc == 0) {
        out->logical_size = r.logical;
        out->stored_size = (uint64_t)r.st.st_size;
        out->compressed = r.codec == CODEC_ZSTD;
    }
    reader_close(&r);
    return rc;
}
