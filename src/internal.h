/*
 * internal.h - declarations shared between the library's own files; never
 * installed. Cross-file helpers carry the prefix mi_ (the public API uses
 * mithril_).
 *
 * Ownership of struct mithril_store: each module owns the fields in its
 * block and is the only one to read or write them directly.
 */
#ifndef MITHRIL_INTERNAL_H
#define MITHRIL_INTERNAL_H

#include "mithril/mithril.h"

#include <pthread.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/types.h>

struct mi_index;  /* index.c: the LMDB environment and batched recency */
struct mi_stats;  /* stats.c: counters shared by processes (mmap) */
struct mi_remote; /* remote.c: Redis connection, queue, breaker */

struct mithril_store {
    /* store.c */
    char *dir;
    int dirfd;
    unsigned flags;
    int compression_level;
    int verify;

    /* config.c: effective settings and where they came from */
    uint64_t max_size;
    int max_size_source;
    int compression_source;
    int verify_source;
    char *remote_url;
    int remote_source;
    int remote_read_only;
    int remote_read_only_source;

    /* index.c */
    struct mi_index *index;
    pthread_mutex_t index_mu;

    /* stats.c */
    struct mi_stats *stats;

    /* remote.c */
    struct mi_remote *remote;

    /* sign.c */
    uint8_t secret_key[MITHRIL_BLAKE3_KEY_LEN];
    int has_secret;
    int secret_loaded; /* MITHRIL_SECRET[_FILE] consulted (atomic) */
    int secret_error;  /* configured but unusable: trust nothing */
};

/* ---- error.c: logging ---- */

void mi_log(int level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Log a failed system call: "<call> '<path>': <strerror>"; returns -errno. */
int mi_log_errno(const char *call, const char *path);

/* ---- sys.c: the system-call table tests can replace ---- */

/*
 * Every write path in the library goes through these pointers, so a test
 * can inject ENOSPC, EIO or short writes. Defaults are the libc calls.
 */
struct mi_sys {
    int (*open)(const char *path, int flags, mode_t mode);
    int (*openat)(int dirfd, const char *path, int flags, mode_t mode);
    ssize_t (*write)(int fd, const void *buf, size_t n);
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
    int (*fsync)(int fd);
    int (*rename)(const char *from, const char *to);
    int (*link)(const char *from, const char *to);
    int (*unlink)(const char *path);
    int (*mkdir)(const char *path, mode_t mode);
    int (*ftruncate)(int fd, off_t len);
};

extern struct mi_sys mi_sys;
/* Restore the libc defaults. */
void mi_sys_reset(void);

/* ---- fsutil.c: durable files ---- */

/* Write all n bytes (retrying short writes and EINTR); 0 or -errno. */
int mi_write_all(int fd, const void *buf, size_t n);
/* Read up to n bytes, retrying short reads; returns bytes read or -errno. */
ssize_t mi_read_full(int fd, void *buf, size_t n);
/* mkdir -p with mode; 0 or -errno. */
int mi_mkdirs(const char *path, mode_t mode);
/* The same; sync 0 leaves the parents of new folders unsynced. */
int mi_mkdirs_sync(const char *path, mode_t mode, int sync);
/* fsync a folder by path; 0 or -errno. */
int mi_fsync_dir(const char *path);
/*
 * A buffer of n bytes for O_DIRECT transfers or for content hashed in
 * place (BLAKE3's 64-byte loads then never straddle a cache line or a
 * page: malloc's large blocks start 16 bytes into a page, which cost 5 %),
 * MI_DIRECT_ALIGN-aligned, or NULL; free() it. From 2 MiB on it is 2
 * MiB-aligned and asked to be backed by huge pages (see fsutil.c).
 */
void *mi_direct_alloc(size_t n);
/*
 * Create a temporary file in folder dir, named so that verify can tell a
 * dead process's leftovers (".mtmp.<pid>.<random>"). Writes its path to
 * path_out (PATH_MAX). Returns an fd or -errno.
 */
int mi_temp_open(const char *dir, char *path_out, mode_t mode);
/*
 * Publish a complete temp file at final: fsync(fd), then rename over final
 * (replace) or link (MI_PUBLISH_NO_REPLACE: an existing final wins, temp
 * removed, returns 0), then fsync final's folder. MI_PUBLISH_NO_SYNC skips
 * both fsyncs: the caller makes file and folder durable later.
 * Closes fd and removes tmp in every case.
 */
#define MI_PUBLISH_NO_REPLACE 1
#define MI_PUBLISH_NO_SYNC    2
int mi_publish(int fd, const char *tmp, const char *final, int flags);
/* Write a whole file durably through mi_temp_open + mi_publish. */
int mi_write_file_atomic(const char *final, const void *data, size_t n,
                         mode_t mode);
/* 1 if the temp name belongs to a process that is no longer alive. */
int mi_temp_is_stale(const char *name);
/*
 * The name of a network or cluster file system from statfs's f_type
 * ("nfs", "cifs", "fuse", ...), or NULL for anything else (a local disk).
 */
const char *mi_network_fs_name(unsigned long f_type);

/* ---- store.c: blob paths ---- */

/* "<dir>/blobs/ab/cd/<addr>" into buf (PATH_MAX). */
void mi_blob_path(const mithril_store *s, const char *addr, char *buf);
/* Move a blob to quarantine with a reason; logs it. */
int mi_quarantine(mithril_store *s, const char *addr, const char *why);
/*
 * Store a blob whose content the caller has already hashed to addr, in the
 * encoded form it already has: payload is the content itself (zstd 0,
 * plen == logical) or one zstd frame that decodes to it (zstd 1). Nothing
 * is hashed or compressed again; reads verify as for any blob. Used by the
 * remote and archive paths, which verify what they receive before storing.
 */
struct mi_blob_list;
int mi_store_put_encoded(mithril_store *s, const char *addr, int zstd,
                         const void *payload, size_t plen, uint64_t logical,
                         struct mi_blob_list *defer);
/*
 * The same from a buffer laid out as the blob file will be: buf is
 * MI_DIRECT_ALIGN-aligned, its first MI_BLOB_HEADER bytes are scratch
 * (the header is written there) and the payload follows. Large payloads go
 * from buf to the device with O_DIRECT, without a copy.
 */
#define MI_BLOB_HEADER  16
#define MI_DIRECT_ALIGN 4096
int mi_store_put_staged(mithril_store *s, const char *addr, int zstd,
                        uint8_t *buf, size_t plen, uint64_t logical,
                        struct mi_blob_list *defer);
/*
 * Deferred puts (defer non-NULL above): the blob file is published without
 * its fsyncs and without an index row, and listed in defer (row 1), or
 * listed to be synced only (row 0) when the file was there already: it may
 * be another deferred put's, not durable yet. The caller then calls
 * mi_store_sync_blobs, and only after it succeeds records the rows and the
 * entries naming them in one index commit (mi_entry_put_many): a batch of
 * blobs costs one index commit and the fsyncs of its files and folders,
 * back to back, instead of a commit and three interleaved syncs a blob,
 * and no entry is committed before its blobs are durable.
 */
struct mi_new_blob {
    char addr[MITHRIL_HEX_SIZE];
    uint64_t stored;
    uint64_t logical;
    int row; /* 0: only to be synced; its row is not this list's */
};
struct mi_blob_list {
    struct mi_new_blob *v;
    size_t n;
    size_t cap;
};
int mi_blob_list_add(struct mi_blob_list *l, const char *addr, uint64_t stored,
                     uint64_t logical, int row);
/*
 * Move every blob of from to the end of to; from is left empty. -ENOMEM
 * leaves both as they were.
 */
int mi_blob_list_move(struct mi_blob_list *to, struct mi_blob_list *from);
void mi_blob_list_release(struct mi_blob_list *l);
/*
 * Make the listed blob files durable: fsync each file once and each of
 * their folders once (blobs/ab/cd, blobs/ab, blobs), on up to 8 threads.
 * Sorts l. 0, or the first failure (-errno).
 */
int mi_store_sync_blobs(mithril_store *s, struct mi_blob_list *l);

/* ---- stats.c ---- */

int mi_stats_open(mithril_store *s);
void mi_stats_close(mithril_store *s);
enum mi_counter { MI_C_HITS = 100, MI_C_MISSES, MI_C_PUTS, MI_C_EVICTIONS };
void mi_stats_add(mithril_store *s, int counter, uint64_t n);

/* ---- index.c ---- */

int mi_index_open(mithril_store *s);
void mi_index_close(mithril_store *s);
/*
 * store.c calls these when a blob file appears (newly published) or goes
 * (deleted, quarantined), so the index keeps exact sizes without scanning.
 */
int mi_index_blob_added(mithril_store *s, const char *addr, uint64_t stored,
                        uint64_t logical);
int mi_index_blob_removed(mithril_store *s, const char *addr);
/*
 * Record several entries in one index transaction (one synced commit):
 * each as mithril_entry_put would, each with its own answer in rc. The
 * rows of blobs[0..nb) with row set (deferred puts, already synced) are
 * added first, unreferenced ones as orphans. If the shared transaction fails,
 * the rows and then every entry are recorded on their own. Returns 0, or a
 * negative code when the index cannot be opened at all (also in every rc).
 */
struct mi_put {
    const char *key;
    const mithril_item *items;
    size_t n_items;
    const char *meta;
    int rc;
};
int mi_entry_put_many(mithril_store *s, struct mi_put *puts, size_t n,
                      const struct mi_new_blob *blobs, size_t nb);

/* ---- remote.c, sign.c ---- */

void mi_remote_close(mithril_store *s);
/*
 * Read-through for a local miss: fetch entry key and its blobs from the
 * remote (connecting lazily from s->remote_url), verify names, blobs and
 * signature, record them locally. 0 when the entry is now local, else
 * MITHRIL_ENOTFOUND (absent, remote down, rejected). Call it without
 * holding index_mu: it calls mithril_store_put and mithril_entry_put.
 */
int mi_remote_fetch_entry(mithril_store *s, const char *key);
/*
 * 1 when this handle completed a pull of toolchain's entries less than
 * MI_PULL_FRESH_NS ago: a restore right after enable()'s own pull need not
 * list the remote's keys a second time.
 */
#define MI_PULL_FRESH_NS (10LL * 1000000000LL)
int mi_remote_pulled_recently(mithril_store *s, const char *toolchain);
/* Queue entry key for the remote after a local put; never blocks long. */
void mi_remote_enqueue_entry(mithril_store *s, const char *key);
/*
 * Make hiredis reader rd refuse an array reply longer than
 * MI_REPLY_MAX_ELEMENTS (it would allocate the element table up front,
 * 8 bytes an element, from the header alone). Every connection remote.c
 * opens is bounded so.
 */
#define MI_REPLY_MAX_ELEMENTS (1 << 22)
struct redisReader;
void mi_reader_bound(struct redisReader *rd);
/* Read MITHRIL_SECRET / MITHRIL_SECRET_FILE once (unless NO_CONFIG). */
int mi_sign_load_env(mithril_store *s);
/*
 * 1: entries are signed and checked with the store's secret; 0: no secret;
 * MITHRIL_ESIGNATURE: a secret is configured but unusable (unreadable or
 * empty file), so nothing from outside is trusted. Loads the environment's
 * secret on first use, one thread at a time.
 */
int mi_sign_has_secret(mithril_store *s);

/* ---- config.c ---- */

/* Read env and <dir>/config into s (unless MITHRIL_OPEN_NO_CONFIG). */
int mi_config_load(mithril_store *s);

/* ---- key.c ---- */

/*
 * The canonical encoding of a key (docs/KEYS.md) in a buffer the caller
 * frees with free(). MITHRIL_EINVAL without a device.
 */
int mi_key_encode(const mithril_key *k, uint8_t **out, size_t *out_len);

/* ---- capture.c: torch working folder ---- */

/* tc: the first 16 hex characters of BLAKE3(toolchain), NUL-terminated. */
void mi_capture_tag(const char *toolchain, char tc[17]);
/*
 * The key ("w1/<tc>/...") of the captured entry that owns path (relative
 * to work_dir, or absolute below it). MITHRIL_ENOTFOUND when capture
 * never records such a file (temp, lock, outside work_dir).
 */
int mi_capture_key_for_path(const char *work_dir, const char *path,
                            const char *toolchain, char *key, size_t n);
/*
 * Store the files names[0..n) (relative to work_dir) as blobs and record
 * one entry under key with meta. Files that vanished or that capture
 * never records are skipped (counted); MITHRIL_ENOTFOUND if none is left;
 * MITHRIL_EPATH for an unsafe name.
 */
int mi_capture_put_files(mithril_store *s, const char *key,
                         const char *work_dir, const char *const *names,
                         size_t n, const char *meta, mithril_sync_result *out);

/* ---- byte order of the on-disk and wire formats ---- */

static inline void
mi_put_le64(unsigned char *p, uint64_t v)
{
    int i;

    for (i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (8 * i));
    }
}

static inline uint64_t
mi_get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;

    for (i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* ---- time ---- */

int64_t mi_now_ns(void);

#endif /* MITHRIL_INTERNAL_H */
