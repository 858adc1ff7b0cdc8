/*
 * archive.c - one file that carries entries and their blobs from one store
 * to another (container images, air-gapped machines, CI artifacts).
 *
 * Format, version 1 (integers little-endian):
 *
 *   file header, 16 bytes:  "MITHRILA"  u32 version (1)  u32 flags (0)
 *   then records, each a 16-byte header followed by its payload:
 *     u8 type  7 zero bytes  u64 payload length
 *   types:
 *     'B' a blob: 32 bytes of raw BLAKE3 address, then the content
 *     'E' an entry: its wire encoding (sign.c), signed with a secret
 *     'Z' the end: u64 entries, u64 blobs (counts of the records above);
 *         the last record, nothing may follow it
 *
 * Every blob record comes before the first entry that names it, and a
 * blob is written once per archive.
 *
 * Invariants:
 *  - Export streams blobs from the store to the file (memory bounded) into
 *    a temporary file published by rename when complete, so a failed export
 *    leaves no partial archive under the requested name.
 *  - Import verifies every blob against its address before storing it and
 *    records an entry only when its names, signature (with a secret) and
 *    blobs are all good. A truncated or corrupt archive stops the import
 *    with MITHRIL_EFORMAT or MITHRIL_ECORRUPT; what was recorded before is
 *    complete and verified, so the store stays consistent.
 */
#include "sign.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAGIC      "MITHRILA"
#define VERSION    1
#define REC_LEN    16
#define IO_BUF     (1u << 20)
#define INLINE_MAX (4u << 20)

/* ---- a set of addresses already written (open addressing) ---- */

struct addr_set {
    uint8_t (*slots)[32];
    uint8_t *used;
    size_t cap;
    size_t n;
};

static size_t
slot_of(const uint8_t *a, size_t cap)
{
    uint64_t h = mi_get_le64(a);

    return (size_t)(h & (cap - 1));
}

static int
set_grow(struct addr_set *set)
{
    struct addr_set bigger = {0};
    size_t i;
    size_t j;

    bigger.cap = set->cap ? set->cap * 2 : 1024;
    bigger.slots = calloc(bigger.cap, 32);
    bigger.used = calloc(bigger.cap, 1);
    if (!bigger.slots || !bigger.used) {
        free(bigger.slots);
        free(bigger.used);
        return -ENOMEM;
    }
    for (i = 0; i < set->cap; i++) {
        if (!set->used[i]) {
            continue;
        }
        j = slot_of(set->slots[i], bigger.cap);
        while (bigger.used[j]) {
            j = (j + 1) & (bigger.cap - 1);
        }
        memcpy(bigger.slots[j], set->slots[i], 32);
        bigger.used[j] = 1;
    }
    bigger.n = set->n;
    free(set->slots);
    free(set->used);
    *set = bigger;
    return 0;
}

/* 1 if a was added, 0 if it was there, negative on error. */
static int
set_add(struct addr_set *set, const uint8_t *a)
{
    size_t j;
    int rc;

    if ((set->n + 1) * 2 > set->cap) {
        rc = set_grow(set);
        if (rc < 0) {
            return rc;
        }
    }
    j = slot_of(a, set->cap);
    while (set->used[j]) {
        if (!memcmp(set->slots[j], a, 32)) {
            return 0;
        }
        j = (j + 1) & (set->cap - 1);
    }
    memcpy(set->slots[j], a, 32);
    set->used[j] = 1;
    set->n++;
    return 1;
}

static void
set_release(struct addr_set *set)
{
    free(set->slots);
    free(set->used);
    memset(set, 0, sizeof(*set));
}

/* ---- export ---- */

static int
write_record(int fd, char type, uint64_t len)
{
    uint8_t h[REC_LEN] = {0};

    h[0] = (uint8_t)type;
    mi_put_le64(h + 8, len);
    return mi_write_all(fd, h, sizeof(h));
}

static int
export_blob(mithril_store *s, int fd, const char *addr, uint64_t *bytes)
{
    mithril_blob_info info;
    uint8_t raw[32];
    int rc;

    rc = mithril_store_blob_info(s, addr, &info);
    if (rc < 0 || mithril_unhex(addr, raw, sizeof(raw)) < 0) {
        return rc < 0 ? rc : MITHRIL_EINVAL;
    }
    rc = write_record(fd, 'B', 32 + info.logical_size);
    rc = rc ? rc : mi_write_all(fd, raw, sizeof(raw));
    rc = rc ? rc : mithril_store_get_fd(s, addr, fd);
    if (rc == 0) {
        *bytes += info.logical_size;
    }
    return rc;
}

static int
export_entry(mithril_store *s, int fd, const mithril_entry *e,
             struct addr_set *written, mithril_sync_result *res)
{
    struct mi_buf enc = {0};
    uint8_t raw[32];
    size_t i;
    int rc = 0;

    for (i = 0; i < e->n_items && rc == 0; i++) {
        rc = mithril_unhex(e->items[i].addr, raw, sizeof(raw));
        rc = rc ? rc : set_add(written, raw);
        if (rc == 1) {
            rc = export_blob(s, fd, e->items[i].addr, &res->bytes);
            res->files += rc == 0;
        }
    }
    if (rc < 0) {
        return rc;
    }
    rc = mi_wire_encode(s, e->key, e->meta, e->items, e->n_items, &enc);
    rc = rc ? rc : write_record(fd, 'E', enc.len);
    rc = rc ? rc : mi_write_all(fd, enc.data, enc.len);
    mi_buf_release(&enc);
    return rc;
}

int
mithril_archive_export(mithril_store *s, const char *path,
                       const char *toolchain, mithril_progress_fn fn, void *ctx,
                       mithril_sync_result *out)
{
    mithril_sync_result res = {0};
    struct addr_set written = {0};
    uint8_t head[16] = MAGIC;
    uint8_t end[16];
    char tmp[PATH_MAX];
    char dir[PATH_MAX];
    mithril_entry *e;
    char **keys = NULL;
    size_t n = 0;
    size_t i;
    int fd = -1;
    int rc;

    if (!s || !path || !*path) {
        return MITHRIL_EINVAL;
    }
    rc = mi_collect_entries(s, toolchain, &keys, &n);
    if (rc < 0) {
        return rc;
    }
    snprintf(dir, sizeof(dir), "%s", path);
    fd = mi_temp_open(dirname(dir), tmp, 0644);
    if (fd < 0) {
        rc = fd;
        mi_log(MITHRIL_LOG_ERROR, "export: cannot create a file beside '%s'",
               path);
        goto out;
    }
    head[8] = VERSION;
    rc = mi_write_all(fd, head, sizeof(head));
    for (i = 0; i < n && rc == 0; i++) {
        if (mithril_entry_peek(s, keys[i], &e) < 0) {
            res.skipped++;
            continue;
        }
        rc = export_entry(s, fd, e, &written, &res);
        mithril_entry_free(e);
        if (rc < 0) {
            mi_log(MITHRIL_LOG_ERROR, "export: entry '%s': %s", keys[i],
                   mithril_strerror(rc));
            break;
        }
        res.entries++;
        if (fn) {
            fn(i + 1, n, ctx);
        }
    }
    if (rc == 0) {
        mi_put_le64(end, res.entries);
        mi_put_le64(end + 8, res.files);
        rc = write_record(fd, 'Z', sizeof(end));
        rc = rc ? rc : mi_write_all(fd, end, sizeof(end));
    }
    if (rc == 0) {
        rc = mi_publish(fd, tmp, path, 0);
        fd = -1;
        if (rc < 0) {
            mi_log(MITHRIL_LOG_ERROR, "export: cannot publish '%s': %s", path,
                   mithril_strerror(rc));
        }
    }
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    }
    set_release(&written);
    mi_free_keys(keys, n);
    if (rc < 0) {
        return rc;
    }
    if (out) {
        *out = res;
    }
    return 0;
}

/* ---- import ---- */

struct reader {
    int fd;
    const char *path;
    uint64_t off;
    uint64_t size;
    mithril_progress_fn fn;
    void *ctx;
};

/* Read exactly n bytes or fail as truncated. */
static int
read_exact(struct reader *rd, void *buf, size_t n)
{
    ssize_t got = mi_read_full(rd->fd, buf, n);

    if (got < 0) {
        mi_log(MITHRIL_LOG_ERROR, "import: read '%s': %s", rd->path,
               strerror((int)-got));
        return (int)got;
    }
    if ((size_t)got != n) {
        mi_log(MITHRIL_LOG_ERROR, "import: '%s' is truncated at byte %llu",
               rd->path, (unsigned long long)(rd->off + (uint64_t)got));
        return MITHRIL_EFORMAT;
    }
    rd->off += n;
    return 0;
}

static int
temp_fd(mithril_store *s)
{
    char path[PATH_MAX];
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

/* Read a blob record's content, verify it against addr, store it. */
static int
import_blob(mithril_store *s, struct reader *rd, const char *addr, uint64_t len,
            uint8_t *buf)
{
    uint8_t digest[MITHRIL_BLAKE3_OUT_LEN];
    char hex[MITHRIL_HEX_SIZE];
    char put_addr[MITHRIL_HEX_SIZE];
    mithril_blake3 h;
    uint64_t left = len;
    size_t n;
    int fd = -1;
    int rc = 0;

    if (len > rd->size - rd->off) {
        mi_log(MITHRIL_LOG_ERROR,
               "import: '%s' is truncated in the blob at byte %llu", rd->path,
               (unsigned long long)rd->off);
        return MITHRIL_EFORMAT;
    }
    if (mithril_store_exists(s, addr) == 1) {
        /* Already here and verified when it was stored: skip the bytes. */
        if (lseek(rd->fd, (off_t)len, SEEK_CUR) < 0) {
            return mi_log_errno("lseek", rd->path);
        }
        rd->off += len;
        return 0;
    }
    if (len > INLINE_MAX) {
        fd = temp_fd(s);
        if (fd < 0) {
            return mi_log_errno("open temporary file", mithril_store_dir(s));
        }
    }
    mithril_blake3_init(&h);
    while (left > 0 && rc == 0) {
        n = left < IO_BUF ? (size_t)left : IO_BUF;
        if (fd < 0) {
            n = (size_t)left; /* buf holds INLINE_MAX bytes */
        }
        rc = read_exact(rd, buf, n);
        if (rc == 0) {
            mithril_blake3_update(&h, buf, n);
            if (fd >= 0) {
                rc = mi_write_all(fd, buf, n);
            }
            left -= n;
        }
        if (rd->fn) {
            rd->fn(rd->off, rd->size, rd->ctx);
        }
    }
    if (rc == 0) {
        mithril_blake3_finalize(&h, digest, sizeof(digest));
        mithril_hex(digest, sizeof(digest), hex);
        if (strcmp(hex, addr) != 0) {
            mi_log(MITHRIL_LOG_ERROR,
                   "import: '%s': the blob before byte %llu does not match "
                   "its address %s",
                   rd->path, (unsigned long long)rd->off, addr);
            rc = MITHRIL_ECORRUPT;
        }
    }
    if (rc == 0 && fd >= 0) {
        lseek(fd, 0, SEEK_SET);
        rc = mithril_store_put_fd(s, fd, put_addr);
    } else if (rc == 0) {
        rc = mithril_store_put(s, buf, (size_t)len, put_addr);
    }
    if (rc == 0 && strcmp(put_addr, addr) != 0) {
        rc = MITHRIL_ECORRUPT;
    }
    if (fd >= 0) {
        close(fd);
    }
    return rc;
}

static int
import_entry(mithril_store *s, struct reader *rd, uint64_t len,
             mithril_sync_result *res)
{
    struct mi_wire w;
    char *buf;
    size_t i;
    int rc;

    if (len > MI_WIRE_MAX) {
        mi_log(MITHRIL_LOG_ERROR,
               "import: '%s': entry record at byte %llu "
               "is too large",
               rd->path, (unsigned long long)rd->off);
        return MITHRIL_EFORMAT;
    }
    buf = malloc(len ? (size_t)len : 1);
    if (!buf) {
        return -ENOMEM;
    }
    rc = read_exact(rd, buf, (size_t)len);
    if (rc < 0) {
        free(buf);
        return rc;
    }
    rc = mi_wire_decode(buf, (size_t)len, &w);
    free(buf);
    if (rc < 0) {
        mi_log(MITHRIL_LOG_ERROR,
               "import: '%s': malformed entry before "
               "byte %llu",
               rd->path, (unsigned long long)rd->off);
        return MITHRIL_EFORMAT;
    }
    rc = mi_wire_accept(s, &w, "archive");
    if (rc < 0) {
        res->rejected++;
        mi_wire_release(&w);
        return 0;
    }
    for (i = 0; i < w.n_items; i++) {
        if (mithril_store_exists(s, w.items[i].addr) != 1) {
            mi_log(MITHRIL_LOG_WARN,
                   "import: entry '%s' names blob %s, "
                   "which is neither in the archive nor in the store",
                   w.key, w.items[i].addr);
            res->skipped++;
            mi_wire_release(&w);
            return 0;
        }
    }
    rc = mithril_entry_put(s, w.key, w.items, w.n_items, w.meta);
    if (rc == 0) {
        res->entries++;
    }
    mi_wire_release(&w);
    return rc;
}

int
mithril_archive_import(mithril_store *s, const char *path,
                       mithril_progress_fn fn, void *ctx,
                       mithril_sync_result *out)
{
    mithril_sync_result res = {0};
    struct reader rd = {-1, path, 0, 0, fn, ctx};
    uint8_t head[16];
    uint8_t rec[REC_LEN];
    uint8_t *buf = NULL;
    char addr[MITHRIL_HEX_SIZE];
    uint64_t blobs = 0;
    uint64_t entries = 0;
    uint64_t len;
    struct stat st;
    int rc;

    if (!s || !path) {
        return MITHRIL_EINVAL;
    }
    rd.fd = open(path, O_RDONLY | O_CLOEXEC);
    if (rd.fd < 0) {
        return mi_log_errno("open", path);
    }
    if (fstat(rd.fd, &st) < 0) {
        rc = mi_log_errno("fstat", path);
        goto out;
    }
    rd.size = (uint64_t)st.st_size;
    buf = malloc(INLINE_MAX);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    rc = read_exact(&rd, head, sizeof(head));
    if (rc == 0 && memcmp(head, MAGIC, 8) != 0) {
        mi_log(MITHRIL_LOG_ERROR, "import: '%s' is not a mithril archive",
               path);
        rc = MITHRIL_EFORMAT;
    } else if (rc == 0 && mi_get_le64(head + 8) != VERSION) {
        mi_log(MITHRIL_LOG_ERROR,
               "import: '%s' is archive version %u; this build reads 1", path,
               (unsigned)(head[8] | head[9] << 8));
        rc = MITHRIL_EFORMAT;
    }
    while (rc == 0) {
        if (rd.off == rd.size) {
            mi_log(MITHRIL_LOG_ERROR,
                   "import: '%s' is truncated at byte "
                   "%llu (no end record)",
                   path, (unsigned long long)rd.off);
            rc = MITHRIL_EFORMAT;
            break;
        }
        rc = read_exact(&rd, rec, sizeof(rec));
        if (rc < 0) {
            break;
        }
        len = mi_get_le64(rec + 8);
        if (rec[0] == 'B' && len >= 32) {
            rc = read_exact(&rd, buf, 32);
            if (rc == 0) {
                mithril_hex(buf, 32, addr);
                rc = import_blob(s, &rd, addr, len - 32, buf);
                blobs++;
                res.files++;
                res.bytes += len - 32;
            }
        } else if (rec[0] == 'E') {
            rc = import_entry(s, &rd, len, &res);
            entries++;
        } else if (rec[0] == 'Z' && len == 16) {
            rc = read_exact(&rd, buf, 16);
            if (rc == 0 &&
                (mi_get_le64(buf) != entries || mi_get_le64(buf + 8) != blobs ||
                 rd.off != rd.size)) {
                mi_log(MITHRIL_LOG_ERROR,
                       "import: '%s': the end record "
                       "does not match the records read",
                       path);
                rc = MITHRIL_EFORMAT;
            }
            break;
        } else {
            mi_log(MITHRIL_LOG_ERROR,
                   "import: '%s': unknown record at "
                   "byte %llu",
                   path, (unsigned long long)(rd.off - REC_LEN));
            rc = MITHRIL_EFORMAT;
        }
        if (fn) {
            fn(rd.off, rd.size, ctx);
        }
    }
out:
    free(buf);
    close(rd.fd);
    if (rc < 0) {
        return rc;
    }
    if (out) {
        *out = res;
    }
    return 0;
}
