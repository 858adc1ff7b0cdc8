/*
 * index.c - the index: entries by key, least-recently-used order, blob
 * reference counts and exact size totals, in an LMDB environment at
 * <store>/index/ shared by every process that opens the store.
 *
 * Named databases (docs/INDEX.md has the byte layouts):
 *   meta     "schema" -> u32 version (1); "totals" -> 4 x u64
 *   entries  dbkey -> encoded entry (version byte first)
 *   lru      be64 last_access_ns + dbkey -> empty (oldest first)
 *   blobs    32-byte address -> stored, logical, refs, orphan_ns (u64)
 *   orphans  be64 orphan_ns + 32-byte address -> empty
 * dbkey is the key itself when it is at most 472 bytes long, else its
 * first 400 bytes, a 0x01 byte and the BLAKE3 digest of the whole key
 * (LMDB keys stop at 511 bytes; keys are printable, so no clash).
 *
 * Invariants, each kept inside one write transaction:
 *   - every entry has exactly one lru row, keyed by its last_access_ns;
 *   - a blob row's refs is the number of item references to it from
 *     entries; a row with refs 0 has exactly one orphans row;
 *   - totals equal the sums over the entries and blobs tables.
 * A blob file is moved to a tombstone while the transaction that drops
 * its last reference is still open, so no later put can refer to it
 * unseen; the tombstone is removed after the commit, or put back if the
 * transaction aborted. A crash in between leaves a stale tombstone that
 * mithril_store_verify settles the same way.
 *
 * Recency: hits are recorded in memory per store handle and applied in one
 * write transaction every MI_BATCH hits, after one second, at flush, close,
 * and before any eviction. Opening never scans: its cost is that of
 * opening LMDB and reading one meta row.
 */
#include "index.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MI_SCHEMA       1
#define MI_ENTRY_V1     1
#define MI_KEY_MAX      512
#define MI_DBKEY_DIRECT 472
#define MI_DBKEY_PREFIX 400
#define MI_DBKEY_MAX    (MI_DBKEY_PREFIX + 1 + 32)
#define MI_BATCH        256
#define MI_BATCH_MAX    4096
#define MI_BATCH_NS     1000000000LL
#ifndef MI_EVICT_CHUNK
#define MI_EVICT_CHUNK 50000
#endif
#define MI_BULK_CHUNK      100000
#define MI_ORPHAN_GRACE_NS (600LL * 1000000000LL)
#define MI_DEFAULT_CAP     (10ULL << 30)
#define MI_HDR             36
#define MI_ITEM_FIXED      46

struct mi_touch {
    int64_t ns;
    uint64_t hits;
    size_t len;
    unsigned char key[MI_DBKEY_MAX];
};

struct mi_index {
    MDB_env *env;
    MDB_dbi meta, entries, lru, blobs, orphans;
    int readonly;
    int absent;                /* read-only store without an index yet */
    pthread_mutex_t batch_mu;  /* the batch and the flusher's state */
    pthread_mutex_t apply_mu;  /* one batch applied at a time */
    pthread_cond_t batch_cond; /* wakes the flusher */
    pthread_t flusher;
    int flusher_state; /* 0 none, 1 running, -1 could not start */
    int flusher_stop;
    struct mi_touch *batch;
    size_t n_batch, batch_cap; /* applied at MI_BATCH, grows to _MAX */
    int64_t batch_start;
    pid_t pid;
    struct mi_env *shared;
    MDB_txn *bulk;
    size_t bulk_n;
    struct mi_totals bulk_tot;
};

struct blob_row {
    uint64_t stored, logical, refs;
    int64_t orphan_ns;
};

/* What one write transaction removed; added to a gc result. */
struct removed {
    uint64_t entries, blobs, bytes;
};

/* ---- little helpers ---- */

static uint32_t
get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void
set_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void
put_be64(unsigned char *p, uint64_t v)
{
    int i;

    for (i = 0; i < 8; i++) {
        p[i] = (unsigned char)(v >> (56 - 8 * i));
    }
}

static uint64_t
get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* Map an LMDB result to the library's codes, logging real failures. */
static int
db_err(int rc, const char *what)
{
    if (rc == 0) {
        return 0;
    }
    if (rc == MDB_NOTFOUND) {
        return MITHRIL_ENOTFOUND;
    }
    mi_log(MITHRIL_LOG_ERROR, "index: %s: %s", what, mdb_strerror(rc));
    if (rc > 0) {
        return -rc;
    }
    if (rc == MDB_MAP_FULL) {
        return MITHRIL_ETOOBIG;
    }
    return MITHRIL_EDB;
}

uint64_t
mi_index_cap(const mithril_store *s)
{
    uint64_t cap = mithril_store_max_size(s);

    return cap ? cap : MI_DEFAULT_CAP;
}

/* ---- validation ---- */

static int
key_valid(const char *key)
{
    size_t n;

    if (!key) {
        return 0;
    }
    for (n = 0; key[n]; n++) {
        if (n >= MI_KEY_MAX || key[n] < 0x21 || key[n] > 0x7e) {
            return 0;
        }
    }
    return n > 0;
}

static int
name_check(const char *name)
{
    const char *p = name;
    size_t len;

    if (!name || !*name || *name == '/' || strlen(name) > 4096) {
        return MITHRIL_EPATH;
    }
    while (*p) {
        len = strcspn(p, "/");
        if (len == 0 || (len == 2 && p[0] == '.' && p[1] == '.') ||
            (len == 1 && p[0] == '.')) {
            return MITHRIL_EPATH;
        }
        p += len;
        if (*p == '/') {
            p++;
            if (!*p) {
                return MITHRIL_EPATH; /* trailing slash: empty component */
            }
        }
    }
    return 0;
}

/* dbkey of key into out (MI_DBKEY_MAX); returns its length. */
static size_t
make_dbkey(const char *key, unsigned char *out)
{
    size_t n = strlen(key);

    if (n <= MI_DBKEY_DIRECT) {
        memcpy(out, key, n);
        return n;
    }
    memcpy(out, key, MI_DBKEY_PREFIX);
    out[MI_DBKEY_PREFIX] = 0x01;
    mithril_blake3_hash(key, n, out + MI_DBKEY_PREFIX + 1);
    return MI_DBKEY_MAX;
}

/* ---- entry encoding (version 1, docs/INDEX.md) ---- */

static int
entry_encode(const char *key, const mithril_item *items, size_t n,
             const char *meta, int64_t now, const uint8_t *sig,
             unsigned char **out, size_t *out_len)
{
    size_t klen = strlen(key), mlen = meta ? strlen(meta) : 0;
    size_t total = MI_HDR + (sig ? 32 : 0) + klen + mlen, i, nl;
    unsigned char *buf, *p;

    if (mlen > (1u << 30) || n > (1u << 24)) {
        return MITHRIL_ETOOBIG;
    }
    for (i = 0; i < n; i++) {
        total += MI_ITEM_FIXED + strlen(items[i].name);
    }
    buf = malloc(total + 8);
    if (!buf) {
        return -ENOMEM;
    }
    buf[0] = MI_ENTRY_V1;
    buf[1] = sig ? 1 : 0;
    buf[2] = (unsigned char)klen;
    buf[3] = (unsigned char)(klen >> 8);
    mi_put_le64(buf + 4, (uint64_t)now);
    mi_put_le64(buf + 12, (uint64_t)now);
    mi_put_le64(buf + 20, 0);
    set_le32(buf + 28, (uint32_t)mlen);
    set_le32(buf + 32, (uint32_t)n);
    p = buf + MI_HDR;
    if (sig) {
        memcpy(p, sig, 32);
        p += 32;
    }
    memcpy(p, key, klen);
    p += klen;
    if (mlen) {
        memcpy(p, meta, mlen);
        p += mlen;
    }
    for (i = 0; i < n; i++) {
        nl = strlen(items[i].name);
        p[0] = (unsigned char)nl;
        p[1] = (unsigned char)(nl >> 8);
        set_le32(p + 2, items[i].mode);
        mi_put_le64(p + 6, items[i].size);
        if (mithril_unhex(items[i].addr, p + 14, 32) < 0) {
            free(buf);
            return MITHRIL_EINVAL;
        }
        memcpy(p + MI_ITEM_FIXED, items[i].name, nl);
        p += MI_ITEM_FIXED + nl;
    }
    *out = buf;
    *out_len = total;
    return 0;
}

/* A decoded view into an encoded entry (pointers into val). */
struct entry_view {
    const unsigned char *base;
    size_t len;
    int flags;
    size_t klen, mlen, n;
    const unsigned char *key, *meta, *items;
};

static int
entry_view(const MDB_val *v, struct entry_view *ev)
{
    const unsigned char *b = v->mv_data, *p, *end = b + v->mv_size;
    size_t i, nl;

    if (v->mv_size < MI_HDR || b[0] != MI_ENTRY_V1) {
        return MITHRIL_EFORMAT;
    }
    ev->base = b;
    ev->len = v->mv_size;
    ev->flags = b[1];
    ev->klen = (size_t)b[2] | (size_t)b[3] << 8;
    ev->mlen = get_le32(b + 28);
    ev->n = get_le32(b + 32);
    p = b + MI_HDR + ((ev->flags & 1) ? 32 : 0);
    if ((size_t)(end - p) < ev->klen + ev->mlen) {
        return MITHRIL_EFORMAT;
    }
    ev->key = p;
    ev->meta = p + ev->klen;
    p += ev->klen + ev->mlen;
    ev->items = p;
    for (i = 0; i < ev->n; i++) {
        if ((size_t)(end - p) < MI_ITEM_FIXED) {
            return MITHRIL_EFORMAT;
        }
        nl = (size_t)p[0] | (size_t)p[1] << 8;
        if ((size_t)(end - p) < MI_ITEM_FIXED + nl) {
            return MITHRIL_EFORMAT;
        }
        p += MI_ITEM_FIXED + nl;
    }
    return 0;
}

static int64_t
view_last_access(const struct entry_view *ev)
{
    return (int64_t)mi_get_le64(ev->base + 12);
}

/* Walk the items of a view: *p starts at ev->items. */
static const unsigned char *
view_next_item(const unsigned char *p, const unsigned char **addr)
{
    size_t nl = (size_t)p[0] | (size_t)p[1] << 8;

    *addr = p + 14;
    return p + MI_ITEM_FIXED + nl;
}

void
mithril_entry_free(mithril_entry *e)
{
    size_t i;

    if (!e) {
        return;
    }
    for (i = 0; i < e->n_items && e->items; i++) {
        free(e->items[i].name);
    }
    free(e->items);
    free(e->key);
    free(e->meta);
    free(e);
}

static int
entry_from_view(const struct entry_view *ev, mithril_entry **out)
{
    mithril_entry *e = calloc(1, sizeof(*e));
    const unsigned char *p = ev->items;
    size_t i, nl;

    if (!e) {
        return -ENOMEM;
    }
    e->key = strndup((const char *)ev->key, ev->klen);
    e->meta = strndup((const char *)ev->meta, ev->mlen);
    e->items = calloc(ev->n ? ev->n : 1, sizeof(*e->items));
    if (!e->key || !e->meta || !e->items) {
        goto fail;
    }
    e->created_ns = (int64_t)mi_get_le64(ev->base + 4);
    e->last_access_ns = (int64_t)mi_get_le64(ev->base + 12);
    e->hits = mi_get_le64(ev->base + 20);
    e->is_signed = ev->flags & 1;
    for (i = 0; i < ev->n; i++) {
        nl = (size_t)p[0] | (size_t)p[1] << 8;
        e->items[i].name = strndup((const char *)p + MI_ITEM_FIXED, nl);
        if (!e->items[i].name) {
            e->n_items = i;
            goto fail;
        }
        e->items[i].mode = get_le32(p + 2);
        e->items[i].size = mi_get_le64(p + 6);
        mithril_hex(p + 14, 32, e->items[i].addr);
        p += MI_ITEM_FIXED + nl;
    }
    e->n_items = ev->n;
    *out = e;
    return 0;

fail:
    mithril_entry_free(e);
    return -ENOMEM;
}

/* Keyed BLAKE3 over the entry's content; see docs/INDEX.md. */
static void
entry_sign(const mithril_store *s, const char *key, const mithril_item *items,
           size_t n, const char *meta, uint8_t sig[32])
{
    mithril_blake3 h;
    unsigned char fixed[12];
    uint8_t raw[32];
    size_t i;

    mithril_blake3_init_keyed(&h, s->secret_key);
    mithril_blake3_update(&h, "mithril-entry-v1", 17);
    mithril_blake3_update(&h, key, strlen(key) + 1);
    mithril_blake3_update(&h, meta ? meta : "", (meta ? strlen(meta) : 0) + 1);
    for (i = 0; i < n; i++) {
        mithril_blake3_update(&h, items[i].name, strlen(items[i].name) + 1);
        memset(raw, 0, sizeof(raw));
        mithril_unhex(items[i].addr, raw, 32);
        mithril_blake3_update(&h, raw, 32);
        mi_put_le64(fixed, items[i].size);
        set_le32(fixed + 8, items[i].mode);
        mithril_blake3_update(&h, fixed, 12);
    }
    mithril_blake3_finalize(&h, sig, 32);
}

/* ---- rows ---- */

static int
totals_get(struct mi_index *ix, MDB_txn *txn, struct mi_totals *t)
{
    MDB_val k = {6, "totals"}, v;
    int rc = mdb_get(txn, ix->meta, &k, &v);

    if (rc == MDB_NOTFOUND) {
        memset(t, 0, sizeof(*t));
        return 0;
    }
    if (rc != 0 || v.mv_size < 32) {
        return rc ? db_err(rc, "read totals") : MITHRIL_EFORMAT;
    }
    t->entries = mi_get_le64(v.mv_data);
    t->size_bytes = mi_get_le64((unsigned char *)v.mv_data + 8);
    t->logical_bytes = mi_get_le64((unsigned char *)v.mv_data + 16);
    t->blobs = mi_get_le64((unsigned char *)v.mv_data + 24);
    return 0;
}

static int
totals_put(struct mi_index *ix, MDB_txn *txn, const struct mi_totals *t)
{
    unsigned char buf[32];
    MDB_val k = {6, "totals"}, v = {32, buf};

    mi_put_le64(buf, t->entries);
    mi_put_le64(buf + 8, t->size_bytes);
    mi_put_le64(buf + 16, t->logical_bytes);
    mi_put_le64(buf + 24, t->blobs);
    return db_err(mdb_put(txn, ix->meta, &k, &v, 0), "write totals");
}

static int
blob_get(struct mi_index *ix, MDB_txn *txn, const unsigned char *addr,
         struct blob_row *r)
{
    MDB_val k = {32, (void *)addr}, v;
    const unsigned char *p;
    int rc = mdb_get(txn, ix->blobs, &k, &v);

    if (rc != 0) {
        return db_err(rc, "read blob row");
    }
    if (v.mv_size < 32) {
        return MITHRIL_EFORMAT;
    }
    p = v.mv_data;
    r->stored = mi_get_le64(p);
    r->logical = mi_get_le64(p + 8);
    r->refs = mi_get_le64(p + 16);
    r->orphan_ns = (int64_t)mi_get_le64(p + 24);
    return 0;
}

static int
blob_put(struct mi_index *ix, MDB_txn *txn, const unsigned char *addr,
         const struct blob_row *r)
{
    unsigned char buf[32];
    MDB_val k = {32, (void *)addr}, v = {32, buf};

    mi_put_le64(buf, r->stored);
    mi_put_le64(buf + 8, r->logical);
    mi_put_le64(buf + 16, r->refs);
    mi_put_le64(buf + 24, (uint64_t)r->orphan_ns);
    return db_err(mdb_put(txn, ix->blobs, &k, &v, 0), "write blob row");
}

static int
orphan_set(struct mi_index *ix, MDB_txn *txn, const unsigned char *addr,
           int64_t ns, int add)
{
    unsigned char buf[40];
    MDB_val k = {40, buf}, v = {0, ""};
    int rc;

    put_be64(buf, (uint64_t)ns);
    memcpy(buf + 8, addr, 32);
    if (add) {
        return db_err(mdb_put(txn, ix->orphans, &k, &v, 0), "add orphan");
    }
    rc = mdb_del(txn, ix->orphans, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : db_err(rc, "drop orphan");
}

static int
lru_set(struct mi_index *ix, MDB_txn *txn, int64_t ns,
        const unsigned char *dbkey, size_t len, int add)
{
    unsigned char buf[8 + MI_DBKEY_MAX];
    MDB_val k = {8 + len, buf}, v = {0, ""};
    int rc;

    put_be64(buf, (uint64_t)ns);
    memcpy(buf + 8, dbkey, len);
    if (add) {
        return db_err(mdb_put(txn, ix->lru, &k, &v, 0), "add lru row");
    }
    rc = mdb_del(txn, ix->lru, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : db_err(rc, "drop lru row");
}

/*
 * Evicted blob files. Inside the transaction that drops a blob's last
 * reference, its file is renamed to a tombstone in <store>/tmp
 * (".mtmp.<pid>.gone.<addr>"); once that transaction has ended, the
 * tombstone is resolved: removed if the row is gone (committed), renamed
 * back if the row is still there and its file absent (aborted). A process
 * killed in between leaves a stale tombstone that mithril_store_verify
 * resolves the same way, so a crash never leaves a row without its file.
 */
struct gone {
    unsigned char addr[32];
};

static __thread struct gone *gone_v;
static __thread size_t gone_n, gone_cap;

static void
tombstone_path(const mithril_store *s, const char *hex, char *buf)
{
    snprintf(buf, PATH_MAX, "%s/tmp/.mtmp.%ld.gone.%s", s->dir, (long)getpid(),
             hex);
}

/* Move a blob file out of the way; a file already gone is fine. */
static void
unlink_blob(mithril_store *s, const unsigned char *addr)
{
    char hex[MITHRIL_HEX_SIZE], path[PATH_MAX], tomb[PATH_MAX];
    struct gone *v;

    mithril_hex(addr, 32, hex);
    mi_blob_path(s, hex, path);
    if (gone_n == gone_cap) {
        v = realloc(gone_v, (gone_cap ? gone_cap * 2 : 64) * sizeof(*v));
        if (!v) {
            /* No memory to remember it: fall back to removing it now. */
            if (mi_sys.unlink(path) < 0 && errno != ENOENT) {
                mi_log_errno("unlink", path);
            }
            return;
        }
        gone_v = v;
        gone_cap = gone_cap ? gone_cap * 2 : 64;
    }
    tombstone_path(s, hex, tomb);
    if (mi_sys.rename(path, tomb) < 0) {
        if (errno != ENOENT) {
            mi_log_errno("rename", path);
        }
        return;
    }
    memcpy(gone_v[gone_n++].addr, addr, 32);
}

static int blob_get(struct mi_index *ix, MDB_txn *txn,
                    const unsigned char *addr, struct blob_row *r);

/*
 * Settle one tombstone: back in place if its row still exists and the
 * blob file is absent, else removed. Returns 1 if it was put back.
 */
static int
tombstone_settle(mithril_store *s, struct mi_index *ix, MDB_txn *txn,
                 const char *tomb, const unsigned char *addr)
{
    char hex[MITHRIL_HEX_SIZE], path[PATH_MAX];
    struct blob_row r;
    struct stat st;

    mithril_hex(addr, 32, hex);
    mi_blob_path(s, hex, path);
    if (txn && blob_get(ix, txn, addr, &r) == 0 && stat(path, &st) < 0 &&
        errno == ENOENT && mi_sys.link(tomb, path) == 0) {
        mi_sys.unlink(tomb);
        return 1;
    }
    if (mi_sys.unlink(tomb) < 0 && errno != ENOENT) {
        mi_log_errno("unlink", tomb);
    }
    return 0;
}

/* Settle this thread's tombstones, after its write transaction ended. */
static void
gone_sweep(mithril_store *s)
{
    struct mi_index *ix = s->index;
    char hex[MITHRIL_HEX_SIZE], tomb[PATH_MAX];
    MDB_txn *txn = NULL;
    size_t i;

    if (gone_n == 0) {
        return;
    }
    if (ix && mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn) != 0) {
        txn = NULL;
    }
    for (i = 0; i < gone_n; i++) {
        mithril_hex(gone_v[i].addr, 32, hex);
        tombstone_path(s, hex, tomb);
        tombstone_settle(s, ix, txn, tomb, gone_v[i].addr);
    }
    if (txn) {
        mdb_txn_abort(txn);
    }
    free(gone_v);
    gone_v = NULL;
    gone_n = gone_cap = 0;
}

/* Remove a blob row (and its file when unlink_file); fix totals. */
static int
blob_drop(mithril_store *s, struct mi_index *ix, MDB_txn *txn,
          const unsigned char *addr, const struct blob_row *r,
          struct mi_totals *t, struct removed *rm, int unlink_file)
{
    MDB_val k = {32, (void *)addr};
    int rc;

    if (r->refs == 0 && (rc = orphan_set(ix, txn, addr, r->orphan_ns, 0))) {
        return rc;
    }
    rc = mdb_del(txn, ix->blobs, &k, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        return db_err(rc, "drop blob row");
    }
    if (unlink_file) {
        unlink_blob(s, addr);
    }
    t->blobs -= t->blobs ? 1 : 0;
    t->size_bytes -= r->stored <= t->size_bytes ? r->stored : t->size_bytes;
    t->logical_bytes -=
        r->logical <= t->logical_bytes ? r->logical : t->logical_bytes;
    if (rm) {
        rm->blobs++;
        rm->bytes += r->stored;
    }
    return 0;
}

/* One reference fewer; the last one takes the blob and its file along. */
static int
ref_drop(mithril_store *s, struct mi_index *ix, MDB_txn *txn,
         const unsigned char *addr, struct mi_totals *t, struct removed *rm)
{
    struct blob_row r;
    int rc = blob_get(ix, txn, addr, &r);

    if (rc == MITHRIL_ENOTFOUND) {
        return 0; /* removed under the entry (delete, quarantine) */
    }
    if (rc < 0) {
        return rc;
    }
    if (r.refs > 1) {
        r.refs--;
        return blob_put(ix, txn, addr, &r);
    }
    r.refs = 1; /* not an orphan row: no orphans key to drop */
    return blob_drop(s, ix, txn, addr, &r, t, rm, 1);
}

/*
 * One reference more. With check, the file must exist and a missing row is
 * made from the file's header; without (bulk), a missing row is made from
 * size.
 */
static int
ref_add(mithril_store *s, struct mi_index *ix, MDB_txn *txn,
        const unsigned char *addr, uint64_t size, int check,
        struct mi_totals *t)
{
    char hex[MITHRIL_HEX_SIZE];
    mithril_blob_info info;
    struct blob_row r;
    int rc;

    mithril_hex(addr, 32, hex);
    if (check) {
        rc = mithril_store_exists(s, hex);
        if (rc <= 0) {
            return rc == 0 ? MITHRIL_ENOTFOUND : rc;
        }
    }
    rc = blob_get(ix, txn, addr, &r);
    if (rc == MITHRIL_ENOTFOUND) {
        if (check) {
            rc = mithril_store_blob_info(s, hex, &info);
            if (rc < 0) {
                return rc;
            }
            r.stored = info.stored_size;
            r.logical = info.logical_size;
        } else {
            r.stored = r.logical = size;
        }
        r.refs = 0;
        r.orphan_ns = 0;
        t->blobs++;
        t->size_bytes += r.stored;
        t->logical_bytes += r.logical;
    } else if (rc < 0) {
        return rc;
    } else if (r.refs == 0 &&
               (rc = orphan_set(ix, txn, addr, r.orphan_ns, 0))) {
        return rc;
    }
    r.refs++;
    r.orphan_ns = 0;
    return blob_put(ix, txn, addr, &r);
}

/* Remove the entry stored at dbkey with value v; fix refs and totals. */
static int
entry_remove(mithril_store *s, struct mi_index *ix, MDB_txn *txn,
             const unsigned char *dbkey, size_t dlen, const MDB_val *v,
             struct mi_totals *t, struct removed *rm)
{
    struct entry_view ev;
    const unsigned char *p, *addr;
    MDB_val k = {dlen, (void *)dbkey}, copy;
    int64_t last;
    size_t i;
    int rc;

    /* Copy first: the writes below may move the page v points into. */
    copy.mv_size = v->mv_size;
    copy.mv_data = malloc(v->mv_size ? v->mv_size : 1);
    if (!copy.mv_data) {
        return -ENOMEM;
    }
    memcpy(copy.mv_data, v->mv_data, v->mv_size);
    rc = entry_view(&copy, &ev);
    if (rc == 0) {
        last = view_last_access(&ev);
        p = ev.items;
        for (i = 0; i < ev.n && rc == 0; i++) {
            p = view_next_item(p, &addr);
            rc = ref_drop(s, ix, txn, addr, t, rm);
        }
        if (rc == 0) {
            rc = lru_set(ix, txn, last, dbkey, dlen, 0);
        }
    } else {
        mi_log(MITHRIL_LOG_WARN, "index: dropping an undecodable entry");
        rc = 0;
    }
    free(copy.mv_data);
    if (rc != 0) {
        return rc;
    }
    rc = mdb_del(txn, ix->entries, &k, NULL);
    if (rc != 0) {
        return db_err(rc, "drop entry");
    }
    t->entries -= t->entries ? 1 : 0;
    if (rm) {
        rm->entries++;
    }
    return 0;
}

/* ---- opening ---- */

static int
open_dbs(struct mi_index *ix, MDB_txn *txn, unsigned flags)
{
    int rc;

    if ((rc = mdb_dbi_open(txn, "meta", flags, &ix->meta)) ||
        (rc = mdb_dbi_open(txn, "entries", flags, &ix->entries)) ||
        (rc = mdb_dbi_open(txn, "lru", flags, &ix->lru)) ||
        (rc = mdb_dbi_open(txn, "blobs", flags, &ix->blobs)) ||
        (rc = mdb_dbi_open(txn, "orphans", flags, &ix->orphans))) {
        return rc;
    }
    return 0;
}

/* 0 when the schema row says 1; MDB_NOTFOUND when absent. */
static int
schema_check(struct mi_index *ix, MDB_txn *txn)
{
    MDB_val k = {6, "schema"}, v;
    int rc = mdb_get(txn, ix->meta, &k, &v);

    if (rc != 0) {
        return rc;
    }
    if (v.mv_size != 4 || get_le32(v.mv_data) != MI_SCHEMA) {
        mi_log(MITHRIL_LOG_ERROR, "index: unknown schema version");
        return MITHRIL_EFORMAT;
    }
    return 0;
}

static int
index_setup(struct mi_index *ix)
{
    MDB_txn *txn = NULL;
    unsigned char ver[4];
    MDB_val k = {6, "schema"}, v = {4, ver};
    int rc;

    /* Fast path: everything exists; a read transaction suffices. */
    rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        return db_err(rc, "begin");
    }
    rc = open_dbs(ix, txn, 0);
    if (rc == 0) {
        rc = schema_check(ix, txn);
    }
    if (rc == 0) {
        return db_err(mdb_txn_commit(txn), "commit");
    }
    mdb_txn_abort(txn);
    if (rc == MITHRIL_EFORMAT) {
        return rc;
    }
    if (rc != MDB_NOTFOUND) {
        return db_err(rc, "open tables");
    }
    if (ix->readonly) {
        ix->absent = 1;
        return 0;
    }

    /* First open of this store: create the tables and the schema row. */
    rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (rc != 0) {
        return db_err(rc, "begin");
    }
    rc = open_dbs(ix, txn, MDB_CREATE);
    if (rc == 0) {
        rc = schema_check(ix, txn);
        if (rc == MDB_NOTFOUND) {
            set_le32(ver, MI_SCHEMA);
            rc = mdb_put(txn, ix->meta, &k, &v, 0);
        }
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc == MITHRIL_EFORMAT ? rc : db_err(rc, "create tables");
    }
    return db_err(mdb_txn_commit(txn), "commit");
}

/*
 * LMDB must not open one environment twice in a process (closing one
 * would drop the other's file locks), so store handles on the same folder
 * share one environment, counted here. A child after fork never uses its
 * parent's environment: each one records the pid that opened it.
 */
struct mi_env {
    struct mi_env *next;
    dev_t dev;
    ino_t ino;
    pid_t pid;
    int refs;
    MDB_env *env;
    MDB_dbi meta, entries, lru, blobs, orphans;
};

static pthread_mutex_t env_mu = PTHREAD_MUTEX_INITIALIZER;
static struct mi_env *envs;

static void
env_share(struct mi_index *ix, const struct mi_env *e)
{
    ix->env = e->env;
    ix->meta = e->meta;
    ix->entries = e->entries;
    ix->lru = e->lru;
    ix->blobs = e->blobs;
    ix->orphans = e->orphans;
    ix->shared = (struct mi_env *)e;
}

/* Open the environment at path, or share the one this process has. */

/*
 * Open the LMDB environment with the largest map the process may reserve:
 * 64 GiB of address space (sparse: nothing is allocated until used),
 * smaller where an address-space limit (ulimit -v, valgrind) refuses it.
 */
static int
env_open_sized(struct mi_index *ix, const char *path)
{
    static const unsigned shifts[] = {36, 34, 32, 30};
    size_t i;
    int rc = 0;

    for (i = sizeof(size_t) >= 8 ? 0 : 3; i < 4; i++) {
        rc = mdb_env_create(&ix->env);
        if (rc != 0) {
            ix->env = NULL;
            return db_err(rc, "create environment");
        }
        mdb_env_set_mapsize(ix->env, (size_t)1 << shifts[i]);
        mdb_env_set_maxdbs(ix->env, 8);
        mdb_env_set_maxreaders(ix->env, 1022);
        rc = mdb_env_open(
            ix->env, path,
            MDB_NOTLS | MDB_NOMETASYNC | (ix->readonly ? MDB_RDONLY : 0), 0600);
        if (rc == 0) {
            return 0;
        }
        mdb_env_close(ix->env);
        ix->env = NULL;
        if (rc != EINVAL && rc != ENOMEM) {
            break;
        }
    }
    return db_err(rc, "open environment");
}

static int
env_acquire(struct mi_index *ix, const char *path)
{
    struct mi_env *e;
    struct stat st;
    int rc, dead;

    if (stat(path, &st) < 0) {
        if (errno == ENOENT && ix->readonly) {
            ix->absent = 1;
            return 0;
        }
        return mi_log_errno("stat", path);
    }
    pthread_mutex_lock(&env_mu);
    for (e = envs; e; e = e->next) {
        if (e->dev == st.st_dev && e->ino == st.st_ino && e->pid == getpid()) {
            e->refs++;
            env_share(ix, e);
            pthread_mutex_unlock(&env_mu);
            return 0;
        }
    }
    rc = env_open_sized(ix, path);
    if (rc < 0) {
        goto out;
    }
    mdb_reader_check(ix->env, &dead);
    rc = index_setup(ix);
    if (rc < 0 || ix->absent) {
        goto out;
    }
    e = calloc(1, sizeof(*e));
    if (!e) {
        rc = -ENOMEM;
        goto out;
    }
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    e->pid = getpid();
    e->refs = 1;
    e->env = ix->env;
    e->meta = ix->meta;
    e->entries = ix->entries;
    e->lru = ix->lru;
    e->blobs = ix->blobs;
    e->orphans = ix->orphans;
    e->next = envs;
    envs = e;
    ix->shared = e;

out:
    if ((rc < 0 || ix->absent) && ix->env) {
        mdb_env_close(ix->env);
        ix->env = NULL;
    }
    pthread_mutex_unlock(&env_mu);
    return rc;
}

static void
env_release(struct mi_index *ix)
{
    struct mi_env **pp;

    if (!ix->shared) {
        return;
    }
    pthread_mutex_lock(&env_mu);
    for (pp = &envs; *pp; pp = &(*pp)->next) {
        if (*pp == ix->shared) {
            if (--ix->shared->refs == 0) {
                *pp = ix->shared->next;
                mdb_env_close(ix->shared->env);
                free(ix->shared);
            }
            break;
        }
    }
    pthread_mutex_unlock(&env_mu);
    ix->shared = NULL;
    ix->env = NULL;
}

/*
 * Tombstones of evictions whose process died before settling them: put
 * back or removed as soon as a process opens the index, so an interrupted
 * eviction costs no lasting misses. Only <store>/tmp is listed (it holds
 * nothing but leftovers), never the blobs.
 */
static void
settle_dead_tombstones(mithril_store *s, struct mi_index *ix)
{
    char dir[PATH_MAX], path[PATH_MAX + 256];
    unsigned char addr[32];
    struct dirent *de;
    const char *hex;
    MDB_txn *txn = NULL;
    DIR *d;

    snprintf(dir, sizeof(dir), "%s/tmp", s->dir);
    d = opendir(dir);
    if (!d) {
        return;
    }
    while ((de = readdir(d))) {
        hex = strstr(de->d_name, ".gone.");
        if (!hex || mithril_unhex(hex + 6, addr, 32) < 0 ||
            mi_temp_is_stale(de->d_name) != 1) {
            continue;
        }
        if (!txn && mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn) != 0) {
            break;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (tombstone_settle(s, ix, txn, path, addr)) {
            mi_log(MITHRIL_LOG_INFO, "interrupted eviction undone: %s", path);
        }
    }
    if (txn) {
        mdb_txn_abort(txn);
    }
    closedir(d);
}

static int
index_open_locked(mithril_store *s)
{
    struct mi_index *ix = NULL;
    char path[PATH_MAX];
    int rc;

    if (s->index && s->index->pid == getpid()) {
        return 0;
    }
    /*
     * A handle inherited through fork: the parent's environment and batch
     * are not ours to use or free; leave them and open afresh.
     */
    s->index = NULL;
    ix = calloc(1, sizeof(*ix));
    if (!ix) {
        return -ENOMEM;
    }
    ix->batch_cap = MI_BATCH;
    ix->batch = calloc(ix->batch_cap, sizeof(*ix->batch));
    if (!ix->batch) {
        free(ix);
        return -ENOMEM;
    }
    pthread_mutex_init(&ix->batch_mu, NULL);
    pthread_mutex_init(&ix->apply_mu, NULL);
    pthread_cond_init(&ix->batch_cond, NULL);
    ix->pid = getpid();
    ix->readonly = (s->flags & MITHRIL_OPEN_READONLY) != 0;
    snprintf(path, sizeof(path), "%s/index", s->dir);
    if (!ix->readonly && mi_sys.mkdir(path, 0700) < 0 && errno != EEXIST) {
        rc = mi_log_errno("mkdir", path);
        goto fail;
    }
    rc = env_acquire(ix, path);
    if (rc < 0) {
        goto fail;
    }
    s->index = ix;
    if (!ix->readonly && !ix->absent) {
        settle_dead_tombstones(s, ix);
    }
    return 0;

fail:
    pthread_mutex_destroy(&ix->batch_mu);
    pthread_mutex_destroy(&ix->apply_mu);
    pthread_cond_destroy(&ix->batch_cond);
    free(ix->batch);
    free(ix);
    return rc;
}

int
mi_index_open(mithril_store *s)
{
    int rc;

    pthread_mutex_lock(&s->index_mu);
    rc = index_open_locked(s);
    pthread_mutex_unlock(&s->index_mu);
    return rc;
}

/* The open index, opening it on first use. */
static int
get_index(mithril_store *s, struct mi_index **out)
{
    int rc = 0;

    if (!s) {
        return MITHRIL_EINVAL;
    }
    pthread_mutex_lock(&s->index_mu);
    if (!s->index || s->index->pid != getpid()) {
        rc = index_open_locked(s);
    }
    if (rc == 0) {
        *out = s->index;
    }
    pthread_mutex_unlock(&s->index_mu);
    return rc;
}

/* Like get_index, for writers: ERDONLY on a read-only store. */
static int
get_index_rw(mithril_store *s, struct mi_index **out)
{
    int rc = get_index(s, out);

    if (rc == 0 && (*out)->readonly) {
        return MITHRIL_ERDONLY;
    }
    return rc;
}

static int apply_batch(mithril_store *s, struct mi_index *ix);

void
mi_index_close(mithril_store *s)
{
    struct mi_index *ix = s->index;

    if (!ix) {
        return;
    }
    s->index = NULL;
    if (ix->pid != getpid()) {
        return; /* inherited through fork: the parent's to close */
    }
    if (ix->bulk) {
        s->index = ix;
        mi_index_bulk_end(s);
        s->index = NULL;
    }
    if (ix->flusher_state == 1) {
        pthread_mutex_lock(&ix->batch_mu);
        ix->flusher_stop = 1;
        pthread_cond_signal(&ix->batch_cond);
        pthread_mutex_unlock(&ix->batch_mu);
        pthread_join(ix->flusher, NULL);
    }
    if (!ix->absent) {
        apply_batch(s, ix);
        env_release(ix);
    }
    pthread_mutex_destroy(&ix->batch_mu);
    pthread_mutex_destroy(&ix->apply_mu);
    pthread_cond_destroy(&ix->batch_cond);
    free(ix->batch);
    free(ix);
}

/* ---- blobs appearing and going (called by store.c) ---- */

/*
 * The row of a newly published blob file, unreferenced (an orphan until an
 * entry names it); nothing if the blob has a row already.
 */
static int
blob_row_new(struct mi_index *ix, MDB_txn *txn, const char *addr,
             uint64_t stored, uint64_t logical, struct mi_totals *t)
{
    unsigned char raw[32];
    struct blob_row r;
    int rc;

    if (mithril_unhex(addr, raw, 32) < 0) {
        return MITHRIL_EINVAL;
    }
    rc = blob_get(ix, txn, raw, &r);
    if (rc != MITHRIL_ENOTFOUND) {
        return rc < 0 ? rc : 0;
    }
    r.stored = stored;
    r.logical = logical;
    r.refs = 0;
    r.orphan_ns = mi_now_ns();
    t->blobs++;
    t->size_bytes += stored;
    t->logical_bytes += logical;
    rc = blob_put(ix, txn, raw, &r);
    return rc == 0 ? orphan_set(ix, txn, raw, r.orphan_ns, 1) : rc;
}

int
mi_index_blob_added(mithril_store *s, const char *addr, uint64_t stored,
                    uint64_t logical)
{
    struct mi_index *ix = NULL;
    struct mi_totals t;
    MDB_txn *txn;
    int rc;

    if (mithril_addr_valid(addr) != 1) {
        return MITHRIL_EINVAL;
    }
    rc = get_index(s, &ix);
    if (rc < 0 || ix->readonly) {
        return rc;
    }
    rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (rc != 0) {
        return db_err(rc, "begin");
    }
    rc = totals_get(ix, txn, &t);
    if (rc == 0) {
        rc = blob_row_new(ix, txn, addr, stored, logical, &t);
    }
    if (rc == 0) {
        rc = totals_put(ix, txn, &t);
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return db_err(mdb_txn_commit(txn), "commit");
}

int
mi_index_blob_removed(mithril_store *s, const char *addr)
{
    struct mi_index *ix = NULL;
    unsigned char raw[32];
    struct blob_row r;
    struct mi_totals t;
    MDB_txn *txn;
    int rc;

    if (mithril_unhex(addr, raw, 32) < 0) {
        return MITHRIL_EINVAL;
    }
    rc = get_index(s, &ix);
    if (rc < 0 || ix->readonly) {
        return rc;
    }
    rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (rc != 0) {
        return db_err(rc, "begin");
    }
    rc = blob_get(ix, txn, raw, &r);
    if (rc == 0) {
        rc = totals_get(ix, txn, &t);
    }
    if (rc == 0) {
        rc = blob_drop(s, ix, txn, raw, &r, &t, NULL, 0);
    }
    if (rc == 0) {
        rc = totals_put(ix, txn, &t);
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc == MITHRIL_ENOTFOUND ? 0 : rc;
    }
    return db_err(mdb_txn_commit(txn), "commit");
}

/* ---- put ---- */

static int
validate_put(const char *key, const mithril_item *items, size_t n)
{
    size_t i;
    int rc;

    if (!key_valid(key) || (n && !items)) {
        return MITHRIL_EINVAL;
    }
    for (i = 0; i < n; i++) {
        if (!items[i].name || !mithril_addr_valid(items[i].addr)) {
            return MITHRIL_EINVAL;
        }
        if ((rc = name_check(items[i].name)) < 0) {
            return rc;
        }
    }
    return 0;
}

/* The body of a put inside txn; t is read and updated by the caller. */
static int
put_in_txn(mithril_store *s, struct mi_index *ix, MDB_txn *txn, const char *key,
           const mithril_item *items, size_t n, const char *meta, int check,
           struct mi_totals *t)
{
    unsigned char dbkey[MI_DBKEY_MAX], raw[32], *enc = NULL;
    size_t dlen = make_dbkey(key, dbkey), elen, i;
    int64_t now = mi_now_ns();
    MDB_val k = {dlen, dbkey}, v, old;
    uint8_t sig[32];
    int sign = mi_sign_has_secret(s) == 1;
    int rc;

    rc = entry_encode(key, items, n, meta, now, sign ? sig : NULL, &enc, &elen);
    if (rc == 0 && sign) {
        entry_sign(s, key, items, n, meta, sig);
        memcpy(enc + MI_HDR, sig, 32);
    }
    if (rc < 0) {
        return rc;
    }

    /* New references first, so blobs shared with an old entry stay. */
    for (i = 0; i < n && rc == 0; i++) {
        mithril_unhex(items[i].addr, raw, 32);
        rc = ref_add(s, ix, txn, raw, items[i].size, check, t);
    }
    if (rc != 0) {
        goto out;
    }
    rc = mdb_get(txn, ix->entries, &k, &old);
    if (rc == 0) {
        rc = entry_remove(s, ix, txn, dbkey, dlen, &old, t, NULL);
    } else if (rc == MDB_NOTFOUND) {
        rc = 0;
    } else {
        rc = db_err(rc, "read entry");
    }
    if (rc != 0) {
        goto out;
    }
    v.mv_size = elen;
    v.mv_data = enc;
    rc = db_err(mdb_put(txn, ix->entries, &k, &v, 0), "write entry");
    if (rc == 0) {
        rc = lru_set(ix, txn, now, dbkey, dlen, 1);
    }
    if (rc == 0) {
        t->entries++;
    }

out:
    free(enc);
    return rc;
}

static int evict(mithril_store *s, struct mi_index *ix, uint64_t max,
                 int64_t grace_ns, mithril_gc_result *res);

static int
entry_put_txn(mithril_store *s, const char *key, const mithril_item *items,
              size_t n_items, const char *meta)
{
    struct mi_index *ix = NULL;
    struct mi_totals t;
    mithril_gc_result gc;
    MDB_txn *txn;
    int rc;

    if ((rc = validate_put(key, items, n_items)) < 0) {
        return rc;
    }
    if ((rc = get_index_rw(s, &ix)) < 0) {
        return rc;
    }
    rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (rc != 0) {
        return db_err(rc, "begin");
    }
    rc = totals_get(ix, txn, &t);
    if (rc == 0) {
        rc = put_in_txn(s, ix, txn, key, items, n_items, meta, 1, &t);
    }
    if (rc == 0) {
        rc = totals_put(ix, txn, &t);
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = db_err(mdb_txn_commit(txn), "commit");
    if (rc < 0) {
        return rc;
    }
    if (s->remote || s->remote_url) {
        mi_remote_enqueue_entry(s, key);
    }
    if (t.size_bytes > mi_index_cap(s)) {
        /* Over the cap: the put itself succeeded; eviction is best effort. */
        evict(s, ix, mi_index_cap(s), MI_ORPHAN_GRACE_NS, &gc);
    }
    return 0;
}

int
mi_entry_put_many(mithril_store *s, struct mi_put *puts, size_t n,
                  const struct mi_new_blob *blobs, size_t nb)
{
    struct mi_index *ix = NULL;
    struct mi_totals t;
    mithril_gc_result gc;
    MDB_txn *txn = NULL;
    size_t i;
    int rc;

    for (i = 0; i < n; i++) {
        puts[i].rc = validate_put(puts[i].key, puts[i].items, puts[i].n_items);
    }
    if ((rc = get_index_rw(s, &ix)) < 0) {
        for (i = 0; i < n; i++) {
            puts[i].rc = puts[i].rc < 0 ? puts[i].rc : rc;
        }
        return rc;
    }
    rc = db_err(mdb_txn_begin(ix->env, NULL, 0, &txn), "begin");
    if (rc == 0) {
        rc = totals_get(ix, txn, &t);
    }
    for (i = 0; i < nb && rc == 0; i++) {
        if (blobs[i].row) {
            rc = blob_row_new(ix, txn, blobs[i].addr, blobs[i].stored,
                              blobs[i].logical, &t);
        }
    }
    for (i = 0; i < n && rc == 0; i++) {
        if (puts[i].rc == 0) {
            rc = put_in_txn(s, ix, txn, puts[i].key, puts[i].items,
                            puts[i].n_items, puts[i].meta, 1, &t);
        }
    }
    if (rc == 0) {
        rc = totals_put(ix, txn, &t);
    }
    if (rc == 0) {
        rc = db_err(mdb_txn_commit(txn), "commit");
    } else if (txn) {
        mdb_txn_abort(txn);
    }
    if (rc < 0) {
        /* One of them failed: each on its own, with its own answer. */
        for (i = 0; i < nb; i++) {
            if (blobs[i].row) {
                mi_index_blob_added(s, blobs[i].addr, blobs[i].stored,
                                    blobs[i].logical);
            }
        }
        for (i = 0; i < n; i++) {
            if (puts[i].rc == 0) {
                puts[i].rc = entry_put_txn(s, puts[i].key, puts[i].items,
                                           puts[i].n_items, puts[i].meta);
            }
        }
        gone_sweep(s);
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (puts[i].rc == 0 && (s->remote || s->remote_url)) {
            mi_remote_enqueue_entry(s, puts[i].key);
        }
    }
    if (t.size_bytes > mi_index_cap(s)) {
        evict(s, ix, mi_index_cap(s), MI_ORPHAN_GRACE_NS, &gc);
    }
    gone_sweep(s);
    return 0;
}

int
mithril_entry_put(mithril_store *s, const char *key, const mithril_item *items,
                  size_t n_items, const char *meta)
{
    int rc = entry_put_txn(s, key, items, n_items, meta);

    gone_sweep(s);
    return rc;
}

/* ---- get, peek, recency ---- */

static int
lookup(struct mi_index *ix, const char *key, mithril_entry **out)
{
    unsigned char dbkey[MI_DBKEY_MAX];
    size_t dlen = make_dbkey(key, dbkey);
    MDB_val k = {dlen, dbkey}, v;
    struct entry_view ev;
    MDB_txn *txn;
    int rc;

    if (ix->absent) {
        return MITHRIL_ENOTFOUND;
    }
    rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        return db_err(rc, "begin");
    }
    rc = mdb_get(txn, ix->entries, &k, &v);
    if (rc == 0) {
        rc = entry_view(&v, &ev);
        if (rc == 0) {
            rc = entry_from_view(&ev, out);
        }
    } else {
        rc = db_err(rc, "read entry");
    }
    mdb_txn_abort(txn);
    return rc;
}

/* Apply the batched hits in one write transaction. */
static int
apply_batch(mithril_store *s, struct mi_index *ix)
{
    struct mi_touch *todo;
    struct entry_view ev;
    unsigned char *buf;
    MDB_txn *txn;
    MDB_val k, v, nv;
    size_t n, i;
    int64_t last;
    int rc = 0;

    (void)s;
    if (ix->absent || ix->readonly) {
        return 0;
    }
    /*
     * apply_mu makes a flush wait for a batch the flusher took but has not
     * committed yet, so "flushed" means every earlier hit is on disk.
     */
    pthread_mutex_lock(&ix->apply_mu);
    pthread_mutex_lock(&ix->batch_mu);
    n = ix->n_batch;
    todo = n ? malloc(n * sizeof(*todo)) : NULL;
    if (todo) {
        memcpy(todo, ix->batch, n * sizeof(*todo));
    }
    ix->n_batch = 0;
    pthread_mutex_unlock(&ix->batch_mu);
    if (!todo) {
        pthread_mutex_unlock(&ix->apply_mu);
        return n ? -ENOMEM : 0;
    }
    rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (rc != 0) {
        pthread_mutex_unlock(&ix->apply_mu);
        free(todo);
        return db_err(rc, "begin");
    }
    for (i = 0; i < n && rc == 0; i++) {
        k.mv_size = todo[i].len;
        k.mv_data = todo[i].key;
        rc = mdb_get(txn, ix->entries, &k, &v);
        if (rc == MDB_NOTFOUND) {
            rc = 0; /* deleted or evicted since */
            continue;
        }
        if (rc != 0 || entry_view(&v, &ev) < 0) {
            rc = rc ? db_err(rc, "read entry") : 0;
            continue;
        }
        last = view_last_access(&ev);
        buf = malloc(v.mv_size);
        if (!buf) {
            rc = -ENOMEM;
            break;
        }
        memcpy(buf, v.mv_data, v.mv_size);
        mi_put_le64(buf + 20, mi_get_le64(buf + 20) + todo[i].hits);
        if (todo[i].ns > last) {
            mi_put_le64(buf + 12, (uint64_t)todo[i].ns);
            rc = lru_set(ix, txn, last, todo[i].key, todo[i].len, 0);
            if (rc == 0) {
                rc = lru_set(ix, txn, todo[i].ns, todo[i].key, todo[i].len, 1);
            }
        }
        nv.mv_size = v.mv_size;
        nv.mv_data = buf;
        if (rc == 0) {
            rc = db_err(mdb_put(txn, ix->entries, &k, &nv, 0), "write entry");
        }
        free(buf);
    }
    free(todo);
    if (rc != 0) {
        mdb_txn_abort(txn);
    } else {
        rc = db_err(mdb_txn_commit(txn), "commit");
    }
    pthread_mutex_unlock(&ix->apply_mu);
    return rc;
}

/*
 * The flusher thread of a handle: applies the batch when it is full or
 * one second after its first hit, so lookups never wait for a commit.
 */
static void *
flusher_main(void *arg)
{
    struct mi_index *ix = arg;
    struct timespec until;
    int64_t due;

    pthread_mutex_lock(&ix->batch_mu);
    while (!ix->flusher_stop) {
        if (ix->n_batch == 0) {
            pthread_cond_wait(&ix->batch_cond, &ix->batch_mu);
            continue;
        }
        due = ix->batch_start + MI_BATCH_NS;
        if (ix->n_batch < MI_BATCH && mi_now_ns() < due) {
            until.tv_sec = (time_t)(due / 1000000000);
            until.tv_nsec = (long)(due % 1000000000);
            pthread_cond_timedwait(&ix->batch_cond, &ix->batch_mu, &until);
            continue;
        }
        pthread_mutex_unlock(&ix->batch_mu);
        apply_batch(NULL, ix);
        pthread_mutex_lock(&ix->batch_mu);
    }
    pthread_mutex_unlock(&ix->batch_mu);
    return NULL;
}

/*
 * Record a hit. The flusher thread (started on the first hit) applies the
 * batch; returns 1 when the caller must apply it (no thread).
 */
static int
touch(struct mi_index *ix, const char *key, int64_t now)
{
    unsigned char dbkey[MI_DBKEY_MAX];
    size_t dlen = make_dbkey(key, dbkey), i;
    struct mi_touch *t = NULL, *nb;
    int due;

    if (ix->readonly) {
        return 0;
    }
    pthread_mutex_lock(&ix->batch_mu);
    for (;;) {
        for (i = 0; i < ix->n_batch; i++) {
            t = &ix->batch[i];
            if (t->len == dlen && !memcmp(t->key, dbkey, dlen)) {
                break;
            }
        }
        if (i < ix->n_batch || ix->n_batch < ix->batch_cap) {
            break;
        }
        /* The flusher is behind: grow the batch while that is cheap. */
        if (ix->batch_cap < MI_BATCH_MAX &&
            (nb = realloc(ix->batch, 2 * ix->batch_cap * sizeof(*nb)))) {
            ix->batch = nb;
            ix->batch_cap *= 2;
            continue;
        }
        /* Full: apply it here, then add. */
        pthread_mutex_unlock(&ix->batch_mu);
        apply_batch(NULL, ix);
        pthread_mutex_lock(&ix->batch_mu);
    }
    if (i == ix->n_batch) {
        if (ix->n_batch == 0) {
            ix->batch_start = now;
        }
        t = &ix->batch[ix->n_batch++];
        t->len = dlen;
        memcpy(t->key, dbkey, dlen);
        t->hits = 0;
    }
    t->ns = now;
    t->hits++;
    if (ix->flusher_state == 0) {
        ix->flusher_state =
            pthread_create(&ix->flusher, NULL, flusher_main, ix) == 0 ? 1 : -1;
    }
    due = ix->n_batch >= MI_BATCH || now - ix->batch_start >= MI_BATCH_NS;
    if (due && ix->flusher_state == 1) {
        pthread_cond_signal(&ix->batch_cond);
        due = 0;
    } else if (ix->flusher_state == 1 && ix->n_batch == 1 && t->hits == 1) {
        pthread_cond_signal(&ix->batch_cond); /* starts the 1 s clock */
    }
    pthread_mutex_unlock(&ix->batch_mu);
    return due; /* only without a flusher thread */
}

int
mithril_entry_get(mithril_store *s, const char *key, mithril_entry **out)
{
    struct mi_index *ix = NULL;
    mithril_entry *e = NULL;
    int64_t now;
    int rc;

    if (!key_valid(key) || !out) {
        return MITHRIL_EINVAL;
    }
    if ((rc = get_index(s, &ix)) < 0) {
        return rc;
    }
    rc = lookup(ix, key, &e);
    if (rc == MITHRIL_ENOTFOUND && (s->remote || s->remote_url) &&
        mi_remote_fetch_entry(s, key) == 0) {
        rc = lookup(ix, key, &e);
    }
    if (rc == MITHRIL_ENOTFOUND) {
        mi_stats_add(s, MI_C_MISSES, 1);
        return rc;
    }
    if (rc < 0) {
        return rc;
    }
    now = mi_now_ns();
    if (now > e->last_access_ns) {
        e->last_access_ns = now;
    }
    e->hits++;
    mi_stats_add(s, MI_C_HITS, 1);
    if (touch(ix, key, now)) {
        apply_batch(s, ix);
    }
    *out = e;
    return 0;
}

int
mithril_entry_peek(mithril_store *s, const char *key, mithril_entry **out)
{
    struct mi_index *ix = NULL;
    int rc;

    if (!key_valid(key) || !out) {
        return MITHRIL_EINVAL;
    }
    if ((rc = get_index(s, &ix)) < 0) {
        return rc;
    }
    return lookup(ix, key, out);
}

int
mithril_store_flush(mithril_store *s)
{
    struct mi_index *ix = NULL;
    int rc;

    if ((rc = get_index(s, &ix)) < 0) {
        return rc;
    }
    return apply_batch(s, ix);
}

/* ---- delete ---- */

static int
entry_delete_txn(mithril_store *s, const char *key)
{
    unsigned char dbkey[MI_DBKEY_MAX];
    struct mi_index *ix = NULL;
    struct mi_totals t;
    size_t dlen;
    MDB_txn *txn;
    MDB_val k, v;
    int rc;

    if (!key_valid(key)) {
        return MITHRIL_EINVAL;
    }
    if ((rc = get_index_rw(s, &ix)) < 0) {
        return rc;
    }
    dlen = make_dbkey(key, dbkey);
    k.mv_size = dlen;
    k.mv_data = dbkey;
    rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (rc != 0) {
        return db_err(rc, "begin");
    }
    rc = db_err(mdb_get(txn, ix->entries, &k, &v), "read entry");
    if (rc == 0) {
        rc = totals_get(ix, txn, &t);
    }
    if (rc == 0) {
        rc = entry_remove(s, ix, txn, dbkey, dlen, &v, &t, NULL);
    }
    if (rc == 0) {
        rc = totals_put(ix, txn, &t);
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return db_err(mdb_txn_commit(txn), "commit");
}

int
mithril_entry_delete(mithril_store *s, const char *key)
{
    int rc = entry_delete_txn(s, key);

    gone_sweep(s);
    return rc;
}

/* ---- foreach ---- */

#define MI_FOREACH_CHUNK 256

int
mithril_entry_foreach(mithril_store *s, mithril_entry_fn fn, void *ctx)
{
    unsigned char last[8 + MI_DBKEY_MAX + 1];
    mithril_entry *chunk[MI_FOREACH_CHUNK];
    struct mi_index *ix = NULL;
    struct entry_view ev;
    size_t last_len = 0, n, i;
    MDB_cursor *cur;
    MDB_txn *txn;
    MDB_val k, v, ek;
    int rc, stop = 0, done = 0, first = 1;

    if (!fn) {
        return MITHRIL_EINVAL;
    }
    if ((rc = get_index(s, &ix)) < 0) {
        return rc;
    }
    if (ix->absent) {
        return 0;
    }
    apply_batch(s, ix);

    /*
     * Entries are read in chunks and the callback runs with no transaction
     * open, so it may itself use the store. An entry touched meanwhile may
     * be seen twice or not at all.
     */
    while (!stop && !done) {
        n = 0;
        rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
        if (rc != 0) {
            return db_err(rc, "begin");
        }
        rc = mdb_cursor_open(txn, ix->lru, &cur);
        if (rc != 0) {
            mdb_txn_abort(txn);
            return db_err(rc, "cursor");
        }
        if (first) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        } else {
            /* Resume after the last key: SET_RANGE on key + 0x00. */
            k.mv_size = last_len + 1;
            k.mv_data = last;
            last[last_len] = 0;
            rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        }
        while (rc == 0 && n < MI_FOREACH_CHUNK) {
            ek.mv_size = k.mv_size - 8;
            ek.mv_data = (unsigned char *)k.mv_data + 8;
            last_len = k.mv_size;
            memcpy(last, k.mv_data, k.mv_size);
            if (mdb_get(txn, ix->entries, &ek, &v) == 0 &&
                entry_view(&v, &ev) == 0 &&
                entry_from_view(&ev, &chunk[n]) == 0) {
                n++;
            }
            rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        first = 0;
        mdb_cursor_close(cur);
        mdb_txn_abort(txn);
        if (rc != 0 && rc != MDB_NOTFOUND) {
            for (i = 0; i < n; i++) {
                mithril_entry_free(chunk[i]);
            }
            return db_err(rc, "walk lru");
        }
        done = rc == MDB_NOTFOUND;
        for (i = 0; i < n; i++) {
            if (!stop && fn(chunk[i], ctx) != 0) {
                stop = 1;
            }
            mithril_entry_free(chunk[i]);
        }
    }
    return 0;
}

/* ---- eviction ---- */

/*
 * One chunk of eviction in one write transaction: oldest entries first,
 * then orphan blobs (never referenced, or left without references) older
 * than grace. Returns the number of rows removed, or a negative code.
 */
static int
evict_chunk(mithril_store *s, struct mi_index *ix, uint64_t max,
            int64_t grace_ns, struct removed *rm, uint64_t *size_after)
{
    struct mi_totals t;
    struct blob_row r;
    unsigned char addr[32], dbkey[MI_DBKEY_MAX];
    MDB_cursor *cur = NULL;
    MDB_txn *txn;
    MDB_val k, v, ev;
    int64_t limit = grace_ns ? mi_now_ns() - grace_ns : INT64_MAX;
    size_t dlen;
    int rc, count = 0;

    rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (rc != 0) {
        return db_err(rc, "begin");
    }
    if ((rc = totals_get(ix, txn, &t)) < 0) {
        goto fail;
    }
    rc = db_err(mdb_cursor_open(txn, ix->lru, &cur), "cursor");
    while (rc == 0 && t.size_bytes > max && count < MI_EVICT_CHUNK) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            break;
        }
        if (rc != 0) {
            rc = db_err(rc, "walk lru");
            break;
        }
        dlen = k.mv_size - 8;
        memcpy(dbkey, (unsigned char *)k.mv_data + 8, dlen);
        ev.mv_size = dlen;
        ev.mv_data = dbkey;
        rc = mdb_get(txn, ix->entries, &ev, &v);
        if (rc == 0) {
            rc = entry_remove(s, ix, txn, dbkey, dlen, &v, &t, rm);
        } else if (rc == MDB_NOTFOUND) {
            rc = db_err(mdb_cursor_del(cur, 0), "drop lru row");
        } else {
            rc = db_err(rc, "read entry");
        }
        count++;
    }
    if (cur) {
        mdb_cursor_close(cur);
        cur = NULL;
    }
    if (rc == 0 && t.size_bytes > max && count < MI_EVICT_CHUNK) {
        rc = db_err(mdb_cursor_open(txn, ix->orphans, &cur), "cursor");
    }
    while (cur && rc == 0 && t.size_bytes > max && count < MI_EVICT_CHUNK) {
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            break;
        }
        if (rc != 0 || k.mv_size != 40) {
            rc = rc ? db_err(rc, "walk orphans") : MITHRIL_EFORMAT;
            break;
        }
        if ((int64_t)get_be64(k.mv_data) > limit) {
            break; /* young: a put may be about to refer to it */
        }
        memcpy(addr, (unsigned char *)k.mv_data + 8, 32);
        rc = blob_get(ix, txn, addr, &r);
        if (rc == MITHRIL_ENOTFOUND) {
            rc = db_err(mdb_cursor_del(cur, 0), "drop orphan");
        } else if (rc == 0) {
            rc = blob_drop(s, ix, txn, addr, &r, &t, rm, 1);
        }
        count++;
    }
    if (cur) {
        mdb_cursor_close(cur);
    }
    if (rc == 0) {
        rc = totals_put(ix, txn, &t);
    }
    if (rc != 0) {
        goto fail;
    }
    rc = db_err(mdb_txn_commit(txn), "commit");
    if (rc < 0) {
        return rc;
    }
    *size_after = t.size_bytes;
    return count;

fail:
    mdb_txn_abort(txn);
    return rc;
}

static int
evict(mithril_store *s, struct mi_index *ix, uint64_t max, int64_t grace_ns,
      mithril_gc_result *res)
{
    struct removed rm = {0, 0, 0};
    uint64_t size = 0;
    int rc;

    memset(res, 0, sizeof(*res));
    apply_batch(s, ix);
    do {
        rc = evict_chunk(s, ix, max, grace_ns, &rm, &size);
    } while (rc >= MI_EVICT_CHUNK);
    res->entries_removed = rm.entries;
    res->blobs_removed = rm.blobs;
    res->bytes_removed = rm.bytes;
    res->size_after = size;
    if (rm.entries) {
        mi_stats_add(s, MI_C_EVICTIONS, rm.entries);
        mi_log(MITHRIL_LOG_DEBUG,
               "index: evicted %llu entries, %llu blobs, %llu bytes",
               (unsigned long long)rm.entries, (unsigned long long)rm.blobs,
               (unsigned long long)rm.bytes);
    }
    return rc < 0 ? rc : 0;
}

static int
store_gc_txn(mithril_store *s, uint64_t max_bytes, mithril_gc_result *out)
{
    mithril_gc_result res;
    struct mi_index *ix = NULL;
    int rc;

    if ((rc = get_index_rw(s, &ix)) < 0) {
        return rc;
    }
    rc = evict(s, ix, max_bytes ? max_bytes : mi_index_cap(s), 0, &res);
    if (rc == 0 && out) {
        *out = res;
    }
    return rc;
}

int
mithril_store_gc(mithril_store *s, uint64_t max_bytes, mithril_gc_result *out)
{
    int rc = store_gc_txn(s, max_bytes, out);

    gone_sweep(s);
    return rc;
}

int
mi_index_totals(mithril_store *s, struct mi_totals *out)
{
    struct mi_index *ix = NULL;
    struct mi_totals t;
    MDB_txn *txn;
    int rc;

    if ((rc = get_index(s, &ix)) < 0) {
        return rc;
    }
    if (ix->absent) {
        memset(out, 0, sizeof(*out));
        return 0;
    }
    rc = mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        return db_err(rc, "begin");
    }
    rc = totals_get(ix, txn, &t);
    mdb_txn_abort(txn);
    if (rc == 0) {
        *out = t;
    }
    return rc;
}

/* ---- bulk loading ---- */

int
mi_index_bulk_begin(mithril_store *s)
{
    struct mi_index *ix = NULL;
    int rc;

    if ((rc = get_index_rw(s, &ix)) < 0) {
        return rc;
    }
    if (ix->bulk) {
        return MITHRIL_EINVAL;
    }
    rc = mdb_txn_begin(ix->env, NULL, 0, &ix->bulk);
    if (rc != 0) {
        ix->bulk = NULL;
        return db_err(rc, "begin");
    }
    ix->bulk_n = 0;
    rc = totals_get(ix, ix->bulk, &ix->bulk_tot);
    if (rc < 0) {
        mdb_txn_abort(ix->bulk);
        ix->bulk = NULL;
    }
    return rc;
}

int
mi_index_bulk_end(mithril_store *s)
{
    struct mi_index *ix = s->index;
    int rc;

    if (!ix || !ix->bulk) {
        return MITHRIL_EINVAL;
    }
    rc = totals_put(ix, ix->bulk, &ix->bulk_tot);
    if (rc != 0) {
        mdb_txn_abort(ix->bulk);
    } else {
        rc = db_err(mdb_txn_commit(ix->bulk), "commit");
    }
    ix->bulk = NULL;
    return rc;
}

int
mi_index_bulk_put(mithril_store *s, const char *key, const mithril_item *items,
                  size_t n_items, const char *meta)
{
    struct mi_index *ix = s->index;
    int rc;

    if (!ix || !ix->bulk) {
        return MITHRIL_EINVAL;
    }
    if ((rc = validate_put(key, items, n_items)) < 0) {
        return rc;
    }
    rc = put_in_txn(s, ix, ix->bulk, key, items, n_items, meta, 0,
                    &ix->bulk_tot);
    if (rc < 0) {
        return rc;
    }
    if (++ix->bulk_n >= MI_BULK_CHUNK) {
        if ((rc = mi_index_bulk_end(s)) < 0) {
            return rc;
        }
        return mi_index_bulk_begin(s);
    }
    return 0;
}

/* ---- verify and clear ---- */

typedef void (*walk_fn)(const char *path, const char *name, void *ctx);

/* Call fn for each regular file under dir, at most depth folders down. */
static void
walk_files(const char *dir, int depth, walk_fn fn, void *ctx)
{
    char path[PATH_MAX];
    struct dirent *de;
    struct stat st;
    DIR *d = opendir(dir);

    if (!d) {
        return;
    }
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
            continue;
        }
        if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) >=
                (int)sizeof(path) ||
            lstat(path, &st) < 0) {
            continue;
        }
        if (S_ISDIR(st.st_mode) && depth > 0) {
            walk_files(path, depth - 1, fn, ctx);
        } else if (S_ISREG(st.st_mode)) {
            fn(path, de->d_name, ctx);
        }
    }
    closedir(d);
}

struct verify_ctx {
    mithril_store *s;
    struct mi_index *ix;
    mithril_problem_fn fn;
    void *ctx;
    mithril_verify_result r;
    int devnull;
};

static void
problem(struct verify_ctx *v, const char *what, const char *which)
{
    mi_log(MITHRIL_LOG_WARN, "verify: %s '%s'", what, which);
    if (v->fn) {
        v->fn(what, which, v->ctx);
    }
}

static int
row_exists(struct mi_index *ix, const unsigned char *addr)
{
    struct blob_row r;
    MDB_txn *txn;
    int rc;

    if (mdb_txn_begin(ix->env, NULL, MDB_RDONLY, &txn) != 0) {
        return 1; /* unknown: leave it to the table pass */
    }
    rc = blob_get(ix, txn, addr, &r);
    mdb_txn_abort(txn);
    return rc != MITHRIL_ENOTFOUND;
}

static void
remove_stale_temp(struct verify_ctx *v, const char *path, const char *name)
{
    if (mi_temp_is_stale(name) != 1) {
        return;
    }
    if (mi_sys.unlink(path) == 0) {
        v->r.temp_removed++;
        problem(v, "stale temp file", path);
    }
}

/*
 * A put publishes the blob file first and records its row right after: a
 * file younger than this without a row is a put in flight, not damage.
 */
#define VERIFY_IN_FLIGHT_S 60

static int
just_published(const char *path)
{
    struct stat st;

    if (stat(path, &st) < 0) {
        return 0;
    }
    return time(NULL) - st.st_mtime < VERIFY_IN_FLIGHT_S;
}

/* One file under blobs/: re-hash it, index it if it is not. */
static void
verify_blob_file(const char *path, const char *name, void *ctx)
{
    struct verify_ctx *v = ctx;
    mithril_blob_info info;
    unsigned char raw[32];
    int rc;

    if (!mithril_addr_valid(name)) {
        remove_stale_temp(v, path, name);
        return;
    }
    rc = mithril_store_get_fd(v->s, name, v->devnull);
    if (rc == MITHRIL_ENOTFOUND) {
        return; /* removed meanwhile */
    }
    v->r.blobs_checked++;
    if (rc == MITHRIL_ECORRUPT) {
        v->r.blobs_corrupt++;
        problem(v, "corrupt blob (quarantined)", name);
        return;
    }
    if (rc < 0) {
        problem(v, "unreadable blob", name);
        return;
    }
    mithril_unhex(name, raw, 32);
    if (!row_exists(v->ix, raw) &&
        mithril_store_blob_info(v->s, name, &info) == 0 &&
        mi_index_blob_added(v->s, name, info.stored_size, info.logical_size) ==
            0 &&
        !just_published(path)) {
        problem(v, "unindexed blob (indexed now)", name);
    }
}

static void
verify_temp_file(const char *path, const char *name, void *ctx)
{
    struct verify_ctx *v = ctx;
    const char *hex = strstr(name, ".gone.");
    unsigned char addr[32];
    MDB_txn *txn;

    /* A tombstone left by an eviction whose process died mid-way. */
    if (hex && mi_temp_is_stale(name) == 1 &&
        mithril_unhex(hex + 6, addr, 32) == 0) {
        if (mdb_txn_begin(v->ix->env, NULL, MDB_RDONLY, &txn) != 0) {
            return;
        }
        if (tombstone_settle(v->s, v->ix, txn, path, addr)) {
            problem(v, "stale temp file (interrupted eviction undone)", path);
        } else {
            v->r.temp_removed++;
            problem(v, "stale temp file", path);
        }
        mdb_txn_abort(txn);
        return;
    }
    remove_stale_temp(ctx, path, name);
}

/*
 * The table pass, in one write transaction: drop rows of missing files,
 * drop entries whose blobs are gone, then recount references, orphans,
 * lru rows and totals from the tables themselves.
 */
static int
verify_tables(struct verify_ctx *v)
{
    struct mi_index *ix = v->ix;
    mithril_store *s = v->s;
    struct mi_totals old, t = {0, 0, 0, 0};
    struct entry_view ev;
    struct blob_row r;
    const unsigned char *p, *addr;
    char hex[MITHRIL_HEX_SIZE], path[PATH_MAX], key[MI_KEY_MAX + 1];
    unsigned char buf[32];
    MDB_cursor *cur = NULL;
    MDB_txn *txn;
    MDB_val k, d, ek, nv = {32, buf};
    struct stat st;
    int64_t now = mi_now_ns();
    size_t i;
    int rc, op, broken;

    rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (rc != 0) {
        return db_err(rc, "begin");
    }
    if ((rc = totals_get(ix, txn, &old)) < 0) {
        goto out;
    }
    rc = db_err(mdb_drop(txn, ix->orphans, 0), "empty orphans");

    /* Blob rows: drop those without a file, zero the others' refs. */
    if (rc == 0) {
        rc = db_err(mdb_cursor_open(txn, ix->blobs, &cur), "cursor");
    }
    for (op = MDB_FIRST; rc == 0; op = MDB_NEXT) {
        if ((rc = mdb_cursor_get(cur, &k, &d, op)) != 0) {
            rc = rc == MDB_NOTFOUND ? 0 : db_err(rc, "walk blobs");
            break;
        }
        if (k.mv_size != 32 || d.mv_size < 32) {
            rc = db_err(mdb_cursor_del(cur, 0), "drop blob row");
            continue;
        }
        mithril_hex(k.mv_data, 32, hex);
        mi_blob_path(s, hex, path);
        if (stat(path, &st) < 0 && errno == ENOENT) {
            problem(v, "missing blob (row removed)", hex);
            rc = db_err(mdb_cursor_del(cur, 0), "drop blob row");
            continue;
        }
        memcpy(buf, d.mv_data, 32);
        mi_put_le64(buf + 16, 0);
        rc = db_err(mdb_cursor_put(cur, &k, &nv, MDB_CURRENT), "zero refs");
    }
    if (cur) {
        mdb_cursor_close(cur);
        cur = NULL;
    }

    /* Entries: drop broken ones, count references of the others. */
    if (rc == 0) {
        rc = db_err(mdb_cursor_open(txn, ix->entries, &cur), "cursor");
    }
    for (op = MDB_FIRST; rc == 0; op = MDB_NEXT) {
        if ((rc = mdb_cursor_get(cur, &k, &d, op)) != 0) {
            rc = rc == MDB_NOTFOUND ? 0 : db_err(rc, "walk entries");
            break;
        }
        v->r.entries_checked++;
        broken = entry_view(&d, &ev) < 0;
        for (i = 0, p = broken ? NULL : ev.items; !broken && i < ev.n; i++) {
            p = view_next_item(p, &addr);
            broken = blob_get(ix, txn, addr, &r) < 0;
        }
        if (broken) {
            v->r.entries_broken++;
            snprintf(key, sizeof(key), "%.*s", (int)k.mv_size,
                     (const char *)k.mv_data);
            problem(v, "broken entry (removed)", key);
            if (entry_view(&d, &ev) == 0) {
                lru_set(ix, txn, view_last_access(&ev), k.mv_data, k.mv_size,
                        0);
            }
            rc = db_err(mdb_cursor_del(cur, 0), "drop entry");
            continue;
        }
        t.entries++;
        rc = lru_set(ix, txn, view_last_access(&ev), k.mv_data, k.mv_size, 1);
        for (i = 0, p = ev.items; rc == 0 && i < ev.n; i++) {
            p = view_next_item(p, &addr);
            memcpy(buf, addr, 32); /* addr may move under the writes */
            rc = blob_get(ix, txn, buf, &r);
            if (rc == 0) {
                r.refs++;
                rc = blob_put(ix, txn, buf, &r);
            }
        }
    }
    if (cur) {
        mdb_cursor_close(cur);
        cur = NULL;
    }

    /* lru rows whose entry is gone or moved. */
    if (rc == 0) {
        rc = db_err(mdb_cursor_open(txn, ix->lru, &cur), "cursor");
    }
    for (op = MDB_FIRST; rc == 0; op = MDB_NEXT) {
        if ((rc = mdb_cursor_get(cur, &k, &d, op)) != 0) {
            rc = rc == MDB_NOTFOUND ? 0 : db_err(rc, "walk lru");
            break;
        }
        ek.mv_size = k.mv_size - 8;
        ek.mv_data = (unsigned char *)k.mv_data + 8;
        if (k.mv_size <= 8 || mdb_get(txn, ix->entries, &ek, &d) != 0 ||
            entry_view(&d, &ev) < 0 ||
            view_last_access(&ev) != (int64_t)get_be64(k.mv_data)) {
            rc = db_err(mdb_cursor_del(cur, 0), "drop lru row");
        }
    }
    if (cur) {
        mdb_cursor_close(cur);
        cur = NULL;
    }

    /* Totals and orphans from the recounted blob rows. */
    if (rc == 0) {
        rc = db_err(mdb_cursor_open(txn, ix->blobs, &cur), "cursor");
    }
    for (op = MDB_FIRST; rc == 0; op = MDB_NEXT) {
        if ((rc = mdb_cursor_get(cur, &k, &d, op)) != 0) {
            rc = rc == MDB_NOTFOUND ? 0 : db_err(rc, "walk blobs");
            break;
        }
        memcpy(buf, d.mv_data, 32);
        t.blobs++;
        t.size_bytes += mi_get_le64(buf);
        t.logical_bytes += mi_get_le64(buf + 8);
        if (mi_get_le64(buf + 16) > 0) {
            if (mi_get_le64(buf + 24) != 0) {
                mi_put_le64(buf + 24, 0);
                rc = db_err(mdb_cursor_put(cur, &k, &nv, MDB_CURRENT),
                            "write blob row");
            }
            continue;
        }
        if (mi_get_le64(buf + 24) == 0) {
            mi_put_le64(buf + 24, (uint64_t)now);
            rc = db_err(mdb_cursor_put(cur, &k, &nv, MDB_CURRENT),
                        "write blob row");
        }
        memcpy(path, k.mv_data, 32); /* k may move under the write */
        if (rc == 0) {
            rc = orphan_set(ix, txn, (unsigned char *)path,
                            (int64_t)mi_get_le64(buf + 24), 1);
        }
    }
    if (cur) {
        mdb_cursor_close(cur);
        cur = NULL;
    }
    if (rc == 0 && memcmp(&t, &old, sizeof(t)) != 0) {
        problem(v, "size totals corrected", s->dir);
    }
    if (rc == 0) {
        rc = totals_put(ix, txn, &t);
    }

out:
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return db_err(mdb_txn_commit(txn), "commit");
}

int
mithril_store_verify(mithril_store *s, mithril_problem_fn fn, void *ctx,
                     mithril_verify_result *out)
{
    struct verify_ctx v;
    char path[PATH_MAX];
    int rc;

    memset(&v, 0, sizeof(v));
    if ((rc = get_index_rw(s, &v.ix)) < 0) {
        return rc;
    }
    v.s = s;
    v.fn = fn;
    v.ctx = ctx;
    v.devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (v.devnull < 0) {
        return mi_log_errno("open", "/dev/null");
    }
    apply_batch(s, v.ix);
    snprintf(path, sizeof(path), "%s/blobs", s->dir);
    walk_files(path, 3, verify_blob_file, &v);
    snprintf(path, sizeof(path), "%s/tmp", s->dir);
    walk_files(path, 0, verify_temp_file, &v);
    close(v.devnull);
    rc = verify_tables(&v);
    if (rc == 0 && out) {
        *out = v.r;
    }
    return rc;
}

static void
clear_blob_file(const char *path, const char *name, void *ctx)
{
    (void)ctx;
    if (mithril_addr_valid(name) && mi_sys.unlink(path) < 0 &&
        errno != ENOENT) {
        mi_log_errno("unlink", path);
    }
}

int
mithril_store_clear(mithril_store *s)
{
    struct mi_totals t = {0, 0, 0, 0};
    struct mi_index *ix = NULL;
    char path[PATH_MAX];
    MDB_txn *txn;
    int rc;

    if ((rc = get_index_rw(s, &ix)) < 0) {
        return rc;
    }
    pthread_mutex_lock(&ix->batch_mu);
    ix->n_batch = 0;
    pthread_mutex_unlock(&ix->batch_mu);
    rc = mdb_txn_begin(ix->env, NULL, 0, &txn);
    if (rc != 0) {
        return db_err(rc, "begin");
    }
    if ((rc = mdb_drop(txn, ix->entries, 0)) == 0 &&
        (rc = mdb_drop(txn, ix->lru, 0)) == 0 &&
        (rc = mdb_drop(txn, ix->blobs, 0)) == 0) {
        rc = mdb_drop(txn, ix->orphans, 0);
    }
    rc = db_err(rc, "empty tables");
    if (rc == 0) {
        rc = totals_put(ix, txn, &t);
    }
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }

    /* Files go while the transaction still holds the write lock. */
    snprintf(path, sizeof(path), "%s/blobs", s->dir);
    walk_files(path, 3, clear_blob_file, NULL);
    return db_err(mdb_txn_commit(txn), "commit");
}
