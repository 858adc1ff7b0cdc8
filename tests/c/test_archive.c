/*
 * test_archive.c - archive export and import: a round trip between two
 * stores (blobs over 4 MiB included), the toolchain filter, archives cut
 * short at many offsets and with a flipped byte (a clear error, and every
 * entry recorded before it complete), foreign files, and signatures.
 */
#include "check.h"
#include "sign.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

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

static void
put_entry(mithril_store *s, const char *key, const char *meta,
          const size_t *sizes, size_t n, uint32_t seed, const char *name0)
{
    mithril_item items[4];
    char names[4][32];
    size_t i;

    for (i = 0; i < n; i++) {
        uint8_t *buf = malloc(sizes[i] + 1);

        fill(buf, sizes[i], seed + (uint32_t)i);
        CHECK_EQ_INT(mithril_store_put(s, buf, sizes[i], items[i].addr), 0);
        free(buf);
        snprintf(names[i], sizeof(names[i]), "d/f%zu", i);
        items[i].name = i == 0 && name0 ? (char *)name0 : names[i];
        items[i].size = sizes[i];
        items[i].mode = 0644;
    }
    CHECK_EQ_INT(mithril_entry_put(s, key, items, n, meta), 0);
}

/* Every entry of s refers to blobs that exist and verify. */
struct consistency {
    int bad;
    mithril_store *s;
};

static int
consistent_cb(const mithril_entry *e, void *ctx)
{
    struct consistency *c = ctx;
    size_t i;

    for (i = 0; i < e->n_items; i++) {
        void *d = NULL;
        size_t n = 0;

        if (mithril_store_get(c->s, e->items[i].addr, &d, &n) < 0 ||
            n != e->items[i].size) {
            c->bad++;
        }
        mithril_free(d);
    }
    return 0;
}

static int
consistent(mithril_store *s)
{
    struct consistency c = {0, s};

    CHECK_EQ_INT(mithril_entry_foreach(s, consistent_cb, &c), 0);
    return c.bad == 0;
}

static int
count_cb(const mithril_entry *e, void *ctx)
{
    (*(int *)ctx)++;
    return 0;
}

static int
count_entries(mithril_store *s)
{
    int n = 0;

    mithril_entry_foreach(s, count_cb, &n);
    return n;
}

static const char *META_A = "tc=aaaaaaaaaaaaaaaa kind=code";
static const char *META_B = "tc=bbbbbbbbbbbbbbbb kind=code";

static char *
make_source(mithril_store **out, char *path, size_t path_len)
{
    size_t s1[3] = {10, 20000, 0};
    size_t s2[2] = {9u << 20, 333};
    char *dir;
    mithril_store *a = open_store(&dir);

    put_entry(a, "w1/a/1", META_A, s1, 3, 1, NULL);
    put_entry(a, "w1/a/2", META_A, s2, 2, 2, NULL);
    put_entry(a, "w1/b/1", META_B, s1, 2, 1, NULL); /* shares blobs */
    snprintf(path, path_len, "%s/out.mtar", dir);
    *out = a;
    return dir;
}

static void
test_round_trip(void)
{
    char path[4200];
    mithril_store *a;
    char *da = make_source(&a, path, sizeof(path));
    char *db;
    mithril_store *b = open_store(&db);
    mithril_sync_result r;
    mithril_entry *e = NULL;

    CHECK_EQ_INT(mithril_archive_export(a, path, NULL, NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.entries, 3);
    CHECK_EQ_INT(r.files, 5); /* shared blobs written once */
    CHECK_EQ_INT(mithril_archive_import(b, path, NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.entries, 3);
    CHECK_EQ_INT(count_entries(b), 3);
    CHECK(consistent(b));
    CHECK_EQ_INT(mithril_entry_peek(b, "w1/a/2", &e), 0);
    CHECK_EQ_INT(e->n_items, 2);
    CHECK_EQ_INT(e->items[0].size, 9u << 20);
    CHECK_EQ_STR(e->meta, META_A);
    mithril_entry_free(e);

    /* Importing again is harmless. */
    CHECK_EQ_INT(mithril_archive_import(b, path, NULL, NULL, &r), 0);
    CHECK_EQ_INT(count_entries(b), 3);

    /* Toolchain filter. */
    CHECK_EQ_INT(
        mithril_archive_export(a, path, "bbbbbbbbbbbbbbbb", NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.entries, 1);
    close_store(b, db);
    b = open_store(&db);
    CHECK_EQ_INT(mithril_archive_import(b, path, NULL, NULL, &r), 0);
    CHECK_EQ_INT(count_entries(b), 1);
    CHECK_EQ_INT(mithril_entry_peek(b, "w1/b/1", &e), 0);
    mithril_entry_free(e);
    close_store(b, db);
    close_store(a, da);
}

static void
test_truncated_and_corrupt(void)
{
    char path[4200];
    char cut[4300];
    mithril_store *a;
    char *da = make_source(&a, path, sizeof(path));
    struct stat st;
    uint8_t *bytes;
    off_t offs[12];
    int fd;
    int i;
    int rc;

    CHECK_EQ_INT(mithril_archive_export(a, path, NULL, NULL, NULL, NULL), 0);
    CHECK_EQ_INT(stat(path, &st), 0);
    bytes = malloc((size_t)st.st_size);
    fd = open(path, O_RDONLY);
    CHECK_EQ_INT(read(fd, bytes, (size_t)st.st_size), st.st_size);
    close(fd);
    snprintf(cut, sizeof(cut), "%s.cut", path);

    offs[0] = 0;
    offs[1] = 7;
    offs[2] = 16;
    offs[3] = 20;
    offs[4] = 60;
    offs[5] = 200;
    offs[6] = 5000;
    offs[7] = 40000;
    offs[8] = st.st_size / 2;
    offs[9] = st.st_size - 300;
    offs[10] = st.st_size - 16;
    offs[11] = st.st_size - 1;
    for (i = 0; i < 12; i++) {
        char *db;
        mithril_store *b = open_store(&db);

        fd = open(cut, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        CHECK_EQ_INT(write(fd, bytes, (size_t)offs[i]), offs[i]);
        close(fd);
        rc = mithril_archive_import(b, cut, NULL, NULL, NULL);
        CHECK_EQ_INT(rc, MITHRIL_EFORMAT);
        CHECK(consistent(b));
        close_store(b, db);
    }

    /* One flipped content byte: the blob does not verify. */
    {
        char *db;
        mithril_store *b = open_store(&db);

        bytes[st.st_size / 2] ^= 0x40;
        fd = open(cut, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        CHECK_EQ_INT(write(fd, bytes, (size_t)st.st_size), st.st_size);
        close(fd);
        rc = mithril_archive_import(b, cut, NULL, NULL, NULL);
        CHECK(rc == MITHRIL_ECORRUPT || rc == MITHRIL_EFORMAT);
        CHECK(consistent(b));
        close_store(b, db);
    }

    /* Not an archive; a future version. */
    {
        char *db;
        mithril_store *b = open_store(&db);

        fd = open(cut, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        CHECK_EQ_INT(write(fd, "hello, world, not an archive", 28), 28);
        close(fd);
        CHECK_EQ_INT(mithril_archive_import(b, cut, NULL, NULL, NULL),
                     MITHRIL_EFORMAT);
        bytes[8] = 9;
        fd = open(cut, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        CHECK_EQ_INT(write(fd, bytes, 64), 64);
        close(fd);
        CHECK_EQ_INT(mithril_archive_import(b, cut, NULL, NULL, NULL),
                     MITHRIL_EFORMAT);
        CHECK_EQ_INT(
            mithril_archive_import(b, "/nonexistent/x", NULL, NULL, NULL),
            -ENOENT);
        CHECK_EQ_INT(count_entries(b), 0);
        close_store(b, db);
    }
    free(bytes);
    close_store(a, da);
}

/* Rename item "e/x0" to "../0" inside an archive file; 1 if done. */
static int
patch_name(const char *path)
{
    struct stat st;
    char *bytes;
    size_t i;
    int done = 0;
    int fd = open(path, O_RDWR);

    fstat(fd, &st);
    bytes = malloc((size_t)st.st_size);
    CHECK_EQ_INT(read(fd, bytes, (size_t)st.st_size), st.st_size);
    for (i = 0; i + 8 <= (size_t)st.st_size; i++) {
        if (!memcmp(bytes + i, " 4 e/x0\n", 8)) {
            memcpy(bytes + i + 3, "../0", 4);
            done++;
        }
    }
    CHECK_EQ_INT(pwrite(fd, bytes, (size_t)st.st_size, 0), st.st_size);
    close(fd);
    free(bytes);
    return done;
}

static void
test_signed(void)
{
    size_t s1[1] = {100};
    char path[4200];
    char *da;
    char *db;
    mithril_store *a = open_store(&da);
    mithril_store *b = open_store(&db);
    mithril_sync_result r;
    mithril_stats st;

    snprintf(path, sizeof(path), "%s/s.mtar", da);
    put_entry(a, "w1/s/ok", META_A, s1, 1, 5, NULL);
    put_entry(a, "w1/s/evil", META_A, s1, 1, 6, "e/x0");

    /* Unsigned archive, consumer with a secret: everything rejected. */
    CHECK_EQ_INT(mithril_archive_export(a, path, NULL, NULL, NULL, NULL), 0);
    CHECK_EQ_INT(patch_name(path), 1);
    CHECK_EQ_INT(mithril_store_set_secret(b, "s", 1), 0);
    CHECK_EQ_INT(mithril_archive_import(b, path, NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.entries, 0);
    CHECK_EQ_INT(r.rejected, 2);

    /* Signed with the same secret: the safe entry in, the unsafe out. */
    CHECK_EQ_INT(mithril_store_set_secret(a, "s", 1), 0);
    CHECK_EQ_INT(mithril_archive_export(a, path, NULL, NULL, NULL, NULL), 0);
    CHECK_EQ_INT(patch_name(path), 1);
    CHECK_EQ_INT(mithril_archive_import(b, path, NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.entries, 1);
    CHECK_EQ_INT(r.rejected, 1);
    CHECK_EQ_INT(count_entries(b), 1);
    memset(&st, 0, sizeof(st));
    CHECK_EQ_INT(mithril_stats_get(b, &st), 0);
    CHECK_EQ_INT(st.rejected, 3);

    /* Signed with another secret: rejected. */
    CHECK_EQ_INT(mithril_store_set_secret(b, "t", 1), 0);
    CHECK_EQ_INT(mithril_archive_import(b, path, NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.entries, 0);
    CHECK_EQ_INT(r.rejected, 2);
    close_store(a, da);
    close_store(b, db);
}

int
main(void)
{
    RUN(test_round_trip);
    RUN(test_truncated_and_corrupt);
    RUN(test_signed);
    return check_report();
}
