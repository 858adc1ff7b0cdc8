/*
 * mithril.h - the public API of libmithril, a content-addressed cache for
 * torch.compile artifacts.
 *
 * Conventions that hold for every function below:
 *
 *  - Functions returning int return 0 (or a documented non-negative answer)
 *    on success and a negative code on failure: either a MITHRIL_E* code from
 *    the reserved range below, or a system error passed through as -errno.
 *    mithril_strerror() names every code.
 *  - Out-parameters are written only on success.
 *  - Memory the library allocates for the caller is released with the
 *    matching *_free() function, or mithril_free() for plain buffers.
 *  - The library never prints and never exits; it reports through the log
 *    callback set with mithril_set_log().
 *  - A mithril_store handle may be used from several threads at once unless
 *    a function says otherwise; many processes may open the same store
 *    folder at once.
 *  - Addresses are BLAKE3-256 digests of content, written as 64 lowercase
 *    hex characters plus a terminating NUL (MITHRIL_HEX_SIZE bytes).
 */
#ifndef MITHRIL_MITHRIL_H
#define MITHRIL_MITHRIL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MITHRIL_VERSION "0.1.0"

/* ------------------------------------------------------------------------ */
/* Errors and logging                                                        */
/* ------------------------------------------------------------------------ */

/*
 * The reserved range -30000..-30099 cannot collide with -errno, which is
 * always above -4096 on Linux.
 */
#define MITHRIL_EINVAL    -30001  /* malformed argument or input */
#define MITHRIL_ENOTFOUND -30002  /* no such blob or entry */
#define MITHRIL_ECORRUPT  -30003  /* content does not match its address */
#define MITHRIL_EFORMAT   -30004  /* unknown on-disk format or version */
#define MITHRIL_EUNSAFE   -30005  /* folder owned by another user, or */
                                  /* writable by others */
#define MITHRIL_ESIGNATURE -30006 /* entry unsigned or wrongly signed */
#define MITHRIL_EREMOTE    -30007 /* remote tier failed or unavailable */
#define MITHRIL_EDB        -30008 /* index database error */
#define MITHRIL_ECOMPRESS  -30009 /* zstd failed */
#define MITHRIL_ERDONLY    -30010 /* store opened read-only */
#define MITHRIL_EPATH      -30011 /* name escapes its folder */
#define MITHRIL_ETOOBIG    -30012 /* value exceeds a hard limit */
#define MITHRIL_EDISABLED  -30013 /* caching disabled (MITHRIL_DISABLE) */

/* A short English description of any code this library returns. */
const char *mithril_strerror(int code);

enum mithril_log_level {
    MITHRIL_LOG_DEBUG = 0,
    MITHRIL_LOG_INFO = 1,
    MITHRIL_LOG_WARN = 2,
    MITHRIL_LOG_ERROR = 3
};

typedef void (*mithril_log_fn)(int level, const char *msg, void *ctx);

/*
 * Route library diagnostics to fn (NULL: drop them, the default). Process
 * wide; set it before opening stores. Messages below min_level are dropped.
 */
void mithril_set_log(mithril_log_fn fn, void *ctx, int min_level);

/* Release memory the library allocated (buffers from mithril_store_get). */
void mithril_free(void *p);

/* ------------------------------------------------------------------------ */
/* BLAKE3                                                                    */
/* ------------------------------------------------------------------------ */

#define MITHRIL_BLAKE3_OUT_LEN   32
#define MITHRIL_BLAKE3_KEY_LEN   32
#define MITHRIL_BLAKE3_BLOCK_LEN 64
#define MITHRIL_BLAKE3_CHUNK_LEN 1024
#define MITHRIL_HEX_SIZE         65 /* 64 hex characters and a NUL */

/*
 * Streaming hasher state, owned by the caller (init, then update any number
 * of times, then finalize any number of times). The fields are private.
 * Not safe to share one hasher between threads.
 */
typedef struct mithril_blake3 {
    uint32_t key[8];
    uint32_t cv[8];
    uint64_t chunk_counter;
    uint8_t buf[MITHRIL_BLAKE3_BLOCK_LEN];
    uint8_t buf_len;
    uint8_t blocks_compressed;
    uint8_t flags;
    uint8_t cv_stack_len;
    uint8_t cv_stack[(54 + 1) * MITHRIL_BLAKE3_OUT_LEN];
} mithril_blake3;

void mithril_blake3_init(mithril_blake3 *h);
void mithril_blake3_init_keyed(mithril_blake3 *h,
                               const uint8_t key[MITHRIL_BLAKE3_KEY_LEN]);
void mithril_blake3_init_derive_key(mithril_blake3 *h, const char *context);
void mithril_blake3_update(mithril_blake3 *h, const void *data, size_t len);

/* Extendable output: any out_len; the first 32 bytes are the digest. */
void mithril_blake3_finalize(const mithril_blake3 *h, uint8_t *out,
                             size_t out_len);
void mithril_blake3_finalize_seek(const mithril_blake3 *h, uint64_t seek,
                                  uint8_t *out, size_t out_len);

/* One-shot 32-byte digest. */
void mithril_blake3_hash(const void *data, size_t len,
                         uint8_t out[MITHRIL_BLAKE3_OUT_LEN]);

/*
 * Name of the compression-function implementation chosen at run time for
 * this CPU: "avx512", "avx2", "sse41" or "portable". The environment
 * variable MITHRIL_BLAKE3_IMPL=portable|sse41|avx2|avx512 caps the choice
 * (never above what the CPU supports); read once, at first use.
 */
const char *mithril_blake3_impl(void);

/* Lowercase hex of n bytes into out (2n+1 bytes with the NUL). */
void mithril_hex(const uint8_t *bin, size_t n, char *out);

/* 0 when hex is exactly 2n lowercase hex digits, else MITHRIL_EINVAL. */
int mithril_unhex(const char *hex, uint8_t *out, size_t n);

/* 1 if text is exactly 64 lowercase hex characters, else 0. */
int mithril_addr_valid(const char *text);

/* ------------------------------------------------------------------------ */
/* The store: blobs by address                                               */
/* ------------------------------------------------------------------------ */

typedef struct mithril_store mithril_store;

#define MITHRIL_OPEN_CREATE    0x1 /* create the folder if absent */
#define MITHRIL_OPEN_READONLY  0x2 /* never write (puts fail ERDONLY) */
#define MITHRIL_OPEN_NO_CONFIG 0x4 /* ignore MITHRIL_* env and config file */

/*
 * Open the store at dir. The folder is created 0700 with MITHRIL_OPEN_CREATE;
 * a folder owned by another user or writable by group/others is refused
 * with MITHRIL_EUNSAFE. Settings come from the environment (MITHRIL_*) and
 * the store's config file unless MITHRIL_OPEN_NO_CONFIG; setters below
 * override them. Opening does not scan the store: its cost does not grow
 * with the number of blobs or entries. Close with mithril_store_close().
 */
int mithril_store_open(const char *dir, unsigned flags, mithril_store **out);
void mithril_store_close(mithril_store *s);

/* The folder this store was opened at (owned by the store). */
const char *mithril_store_dir(const mithril_store *s);

/*
 * The default store folder: $MITHRIL_DIR, else $XDG_CACHE_HOME/mithril,
 * else $HOME/.cache/mithril. Writes at most n bytes; MITHRIL_ETOOBIG if
 * it does not fit, MITHRIL_EINVAL if no HOME either.
 */
int mithril_default_dir(char *buf, size_t n);

/* zstd level for new blobs (0 = store raw). Default 3. */
void mithril_store_set_compression(mithril_store *s, int level);
/* Verify content against its address on every get (default 1). */
void mithril_store_set_verify(mithril_store *s, int on);

/*
 * Store content; write its address to addr. Writing content that is
 * already present is cheap and succeeds. Durable on return (the blob and
 * its folder are fsynced). Safe from many processes at once.
 */
int mithril_store_put(mithril_store *s, const void *data, size_t len,
                      char addr[MITHRIL_HEX_SIZE]);
/* Same, streaming from fd to its end; memory stays bounded. */
int mithril_store_put_fd(mithril_store *s, int fd, char addr[MITHRIL_HEX_SIZE]);
int mithril_store_put_file(mithril_store *s, const char *path,
                           char addr[MITHRIL_HEX_SIZE]);

/*
 * Read the content at addr into a buffer the library allocates (release
 * with mithril_free). With verification on, content that does not hash to
 * addr is never returned: the call fails with MITHRIL_ECORRUPT and the blob
 * is moved to the store's quarantine folder. MITHRIL_ENOTFOUND if absent.
 * A malformed addr is MITHRIL_EINVAL before any file system access.
 */
int mithril_store_get(mithril_store *s, const char *addr, void **data,
                      size_t *len);
/*
 * Write the content at addr to fd. Nothing is written to fd unless the
 * whole content verified (large blobs are verified in a first pass).
 */
int mithril_store_get_fd(mithril_store *s, const char *addr, int fd);
/*
 * Materialize the content at addr as the file path (created with mode,
 * published atomically: temp, fsync, rename). Verified before publishing.
 */
int mithril_store_get_file(mithril_store *s, const char *addr, const char *path,
                           unsigned mode);

/* 1 if present, 0 if absent, negative on error. */
int mithril_store_exists(mithril_store *s, const char *addr);
/* Remove a blob; MITHRIL_ENOTFOUND if absent. */
int mithril_store_delete(mithril_store *s, const char *addr);

typedef struct mithril_blob_info {
    uint64_t logical_size; /* content bytes */
    uint64_t stored_size;  /* bytes on disk, header included */
    int compressed;        /* 1 if zstd */
} mithril_blob_info;

int mithril_store_blob_info(mithril_store *s, const char *addr,
                            mithril_blob_info *out);

/* ------------------------------------------------------------------------ */
/* Cache keys and device classes                                             */
/* ------------------------------------------------------------------------ */

enum mithril_device_kind {
    MITHRIL_DEVICE_CPU = 1,      /* isa names the vector ISA level, or "" */
    MITHRIL_DEVICE_CUDA_ANY = 2, /* any CUDA device */
    MITHRIL_DEVICE_CUDA_CC = 3   /* a CUDA compute capability */
};

typedef struct mithril_device {
    int kind;     /* enum mithril_device_kind */
    int cc_major; /* MITHRIL_DEVICE_CUDA_CC only */
    int cc_minor;
    char isa[16]; /* CPU: "avx512", "avx2", "sse42", "neon", ... or "" */
} mithril_device;

/* Parse "cpu", "cpu:<isa>", "cuda", "cuda:MAJOR.MINOR". */
int mithril_device_parse(const char *text, mithril_device *out);
/* Canonical text of a device class; MITHRIL_ETOOBIG if n is too small. */
int mithril_device_format(const mithril_device *d, char *buf, size_t n);
/*
 * This machine's device class: the compute capability of CUDA device 0 when
 * a CUDA driver loads (via dlopen) and reports one, else cpu:<isa> from
 * cpuid/HWCAP. The absence of CUDA is not an error.
 */
int mithril_device_detect(mithril_device *out);
/* This CPU's ISA level alone ("avx512", "avx2", ...). */
const char *mithril_cpu_isa(void);

#define MITHRIL_DIM_DYNAMIC (-1)
#define MITHRIL_MAX_DIMS    64

typedef struct mithril_key mithril_key;

/* A key for a graph: 32-byte graph hash; inputs, device, toolchain added. */
int mithril_key_new(const uint8_t graph_hash[32], mithril_key **out);
void mithril_key_free(mithril_key *k);
/* dtype: "float32", "int64", ...; dims[i] == MITHRIL_DIM_DYNAMIC for '?'. */
int mithril_key_add_input(mithril_key *k, const char *dtype,
                          const int64_t *dims, size_t ndim);
/* Parse "DTYPE:DIMS" ("float32:8,16", "int64:?,128", "float32:" scalar). */
int mithril_key_add_input_text(mithril_key *k, const char *spec);
int mithril_key_set_device(mithril_key *k, const mithril_device *d);
int mithril_key_set_toolchain(mithril_key *k, const char *text);
/*
 * The storage key: BLAKE3 derive_key over the canonical versioned encoding
 * (docs/KEYS.md), as 64 lowercase hex. Requires a device.
 */
int mithril_key_storage(const mithril_key *k, char out[MITHRIL_HEX_SIZE]);

/* ------------------------------------------------------------------------ */
/* The index: entries by key, LRU, statistics                                */
/* ------------------------------------------------------------------------ */

/*
 * An entry names a set of blobs under a key. Keys are 1..512 bytes of
 * printable ASCII without whitespace. Item names are relative paths
 * (no leading '/', no "..", no empty component).
 */
typedef struct mithril_item {
    char *name;
    uint64_t size; /* logical size */
    uint32_t mode; /* permission bits, e.g. 0644 or 0755 */
    char addr[MITHRIL_HEX_SIZE];
} mithril_item;

typedef struct mithril_entry {
    char *key;
    char *meta; /* free text set by the writer ("" if none) */
    size_t n_items;
    mithril_item *items;
    int64_t created_ns; /* unix time, nanoseconds */
    int64_t last_access_ns;
    uint64_t hits;
    int is_signed; /* carries a signature */
} mithril_entry;

void mithril_entry_free(mithril_entry *e);

/*
 * Record an entry under key referring to blobs already in the store
 * (MITHRIL_ENOTFOUND if one is missing). Replaces an existing entry.
 * meta is free text (NULL for none), used to group entries, e.g. by
 * toolchain fingerprint ("toolchain=<hex> kind=fxgraph").
 */
int mithril_entry_put(mithril_store *s, const char *key,
                      const mithril_item *items, size_t n_items,
                      const char *meta);

/*
 * Look key up. On a hit the entry's recency and hit count are refreshed
 * (batched) and the store's hit counter grows; on a miss (MITHRIL_ENOTFOUND)
 * the miss counter grows. With a remote configured, a local miss asks the
 * remote. Release with mithril_entry_free.
 */
int mithril_entry_get(mithril_store *s, const char *key, mithril_entry **out);
/* Look up without touching recency or counters. */
int mithril_entry_peek(mithril_store *s, const char *key, mithril_entry **out);
int mithril_entry_delete(mithril_store *s, const char *key);

/* Calls fn for each entry (recency order, oldest first); stop on nonzero. */
typedef int (*mithril_entry_fn)(const mithril_entry *e, void *ctx);
int mithril_entry_foreach(mithril_store *s, mithril_entry_fn fn, void *ctx);

/* Apply batched recency updates now (also done at close). */
int mithril_store_flush(mithril_store *s);

/* Size cap in bytes on disk (default 10 GiB; MITHRIL_MAX_SIZE). */
void mithril_store_set_max_size(mithril_store *s, uint64_t bytes);
uint64_t mithril_store_max_size(const mithril_store *s);

/* Parse "500M", "10G", "1.5G", "123" (bytes), "64K", "2T" (powers of 1024). */
int mithril_parse_size(const char *text, uint64_t *out);

typedef struct mithril_gc_result {
    uint64_t entries_removed;
    uint64_t blobs_removed;
    uint64_t bytes_removed;
    uint64_t size_after;
} mithril_gc_result;

/*
 * Evict least recently used entries until the store's size on disk is at
 * most max_bytes (0: the configured cap). Blobs still referenced by another
 * entry stay. Costs in proportion to what it removes.
 */
int mithril_store_gc(mithril_store *s, uint64_t max_bytes,
                     mithril_gc_result *out);

typedef struct mithril_verify_result {
    uint64_t blobs_checked;
    uint64_t blobs_corrupt; /* quarantined */
    uint64_t entries_checked;
    uint64_t entries_broken; /* referring to missing blobs; removed */
    uint64_t temp_removed;   /* leftovers of dead processes */
} mithril_verify_result;

/* Called for each problem found: what ("corrupt blob", ...) and which. */
typedef void (*mithril_problem_fn)(const char *what, const char *which,
                                   void *ctx);

/* Re-hash every blob, check every manifest; repair what it can. */
int mithril_store_verify(mithril_store *s, mithril_problem_fn fn, void *ctx,
                         mithril_verify_result *out);
/* Remove every entry and blob. */
int mithril_store_clear(mithril_store *s);

typedef struct mithril_stats {
    uint64_t entries;
    uint64_t size_bytes;    /* bytes on disk of blobs */
    uint64_t logical_bytes; /* content bytes of blobs */
    uint64_t blobs;
    uint64_t hits;
    uint64_t misses;
    uint64_t puts;
    uint64_t evictions;
    uint64_t max_size_bytes;
    uint64_t graph_hits; /* keyed per-graph lookups (torch backend) */
    uint64_t graph_misses;
    uint64_t remote_hits;
    uint64_t remote_misses;
    uint64_t remote_errors;
    uint64_t rejected; /* unsigned/bad signature/unsafe names */
} mithril_stats;

int mithril_stats_get(mithril_store *s, mithril_stats *out);
/* Zero the event counters (hits, misses, ...), not sizes. */
int mithril_stats_zero(mithril_store *s);

enum mithril_counter {
    MITHRIL_COUNTER_GRAPH_HIT = 0,
    MITHRIL_COUNTER_GRAPH_MISS,
    MITHRIL_COUNTER_REMOTE_HIT,
    MITHRIL_COUNTER_REMOTE_MISS,
    MITHRIL_COUNTER_REMOTE_ERROR,
    MITHRIL_COUNTER_REJECTED
};
/* Add n to a counter; lock-free across processes. */
int mithril_stats_add(mithril_store *s, int counter, uint64_t n);

/* ------------------------------------------------------------------------ */
/* Configuration                                                             */
/* ------------------------------------------------------------------------ */

enum mithril_source {
    MITHRIL_SOURCE_DEFAULT = 0,
    MITHRIL_SOURCE_FILE = 1, /* <store>/config */
    MITHRIL_SOURCE_ENV = 2,  /* MITHRIL_* */
    MITHRIL_SOURCE_FLAG = 3  /* set by a setter / command-line flag */
};

/* Calls fn for each setting with its effective value and source. */
typedef void (*mithril_config_fn)(const char *name, const char *value,
                                  int source, void *ctx);
int mithril_config_foreach(mithril_store *s, mithril_config_fn fn, void *ctx);
/* Name of a mithril_source ("default", "file", "env", "flag"). */
const char *mithril_source_name(int source);

/* ------------------------------------------------------------------------ */
/* torch working folder: capture and restore                                 */
/* ------------------------------------------------------------------------ */

typedef struct mithril_sync_result {
    uint64_t entries; /* entries captured or restored */
    uint64_t files;
    uint64_t bytes;
    uint64_t skipped;  /* already present / not for this toolchain */
    uint64_t rejected; /* unsafe names, bad signatures */
} mithril_sync_result;

/*
 * Capture everything torch wrote under work_dir (TORCHINDUCTOR_CACHE_DIR
 * layout, Triton folder included) as entries at torch's own granularity,
 * tagged with toolchain. Files still being written (torch's temp names) are
 * skipped. Idempotent: unchanged entries cost a stat each.
 */
int mithril_capture(mithril_store *s, const char *work_dir,
                    const char *toolchain, mithril_sync_result *out);
/*
 * Materialize into work_dir every entry tagged with toolchain that is not
 * already there (NULL toolchain: all entries). Files are published
 * atomically; names are checked against escaping work_dir; Triton group
 * files have their absolute paths rewritten to work_dir.
 */
int mithril_restore(mithril_store *s, const char *work_dir,
                    const char *toolchain, mithril_sync_result *out);
/* Materialize one entry (by key) into work_dir. */
int mithril_restore_entry(mithril_store *s, const char *work_dir,
                          const char *key, mithril_sync_result *out);

/* ------------------------------------------------------------------------ */
/* Sharing: remote tier, archives, signatures                                */
/* ------------------------------------------------------------------------ */

/*
 * Attach a Redis remote ("redis://HOST:PORT[/DB]") to the store: local
 * misses ask it, new entries are queued for it. read_only: never write.
 * Failure is bounded by timeouts and a circuit breaker; a dead remote turns
 * into misses, never into errors of the local operations.
 */
int mithril_store_set_remote(mithril_store *s, const char *url, int read_only);

/* Send queued writes to the remote, waiting at most timeout_ms. */
int mithril_remote_drain(mithril_store *s, int timeout_ms);

typedef void (*mithril_progress_fn)(uint64_t done, uint64_t total, void *ctx);

/* Push/pull every entry (toolchain NULL) or those tagged with toolchain. */
int mithril_remote_push(mithril_store *s, const char *toolchain,
                        mithril_progress_fn fn, void *ctx,
                        mithril_sync_result *out);
int mithril_remote_pull(mithril_store *s, const char *toolchain,
                        mithril_progress_fn fn, void *ctx,
                        mithril_sync_result *out);

/* Write entries (toolchain filter as above) and their blobs to path. */
int mithril_archive_export(mithril_store *s, const char *path,
                           const char *toolchain, mithril_progress_fn fn,
                           void *ctx, mithril_sync_result *out);
/* Load an archive, verifying every blob (and signature, with a secret). */
int mithril_archive_import(mithril_store *s, const char *path,
                           mithril_progress_fn fn, void *ctx,
                           mithril_sync_result *out);

/*
 * Sign entries written from now on with keyed BLAKE3 under secret, and
 * reject unsigned or wrongly signed entries arriving from a remote or an
 * archive. Set from MITHRIL_SECRET or MITHRIL_SECRET_FILE at open.
 */
int mithril_store_set_secret(mithril_store *s, const void *secret, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* MITHRIL_MITHRIL_H */
