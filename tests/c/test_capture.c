/*
 * test_capture.c - capture and restore of a folder shaped like torch's
 * working folder (real files): granularity, idempotency, modes, Triton
 * group-file rewriting, and the safety rules (symlinks, unsafe names,
 * vanished or corrupt blobs never leave a partial entry).
 */
#include "check.h"
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>

#define TC "torch=2.13.0+cpu triton=none python=3.11 device=cpu:avx2"

static void
write_file(const char *root, const char *rel, const char *text, int mode)
{
    char path[PATH_MAX], dir[PATH_MAX];
    char *slash;
    FILE *f;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", root, rel) >=
        sizeof(path)) {
        CHECK(!"path too long");
        return;
    }
    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    *slash = '\0';
    CHECK_EQ_INT(mi_mkdirs(dir, 0755), 0);
    f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) {
        return;
    }
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

/* The file's content (malloc'ed), or NULL if it cannot be read. */
static char *
read_text(const char *root, const char *rel)
{
    char path[PATH_MAX];
    char *buf;
    size_t n;
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", root, rel);
    f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    buf = calloc(1, 1 << 20);
    n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int
exists(const char *root, const char *rel)
{
    char path[PATH_MAX];
    struct stat st;

    snprintf(path, sizeof(path), "%s/%s", root, rel);
    return lstat(path, &st) == 0;
}

static int
mode_of(const char *root, const char *rel)
{
    char path[PATH_MAX];
    struct stat st;

    snprintf(path, sizeof(path), "%s/%s", root, rel);
    return stat(path, &st) == 0 ? (int)(st.st_mode & 0777) : -1;
}

static void
same_file(const char *a, const char *b, const char *rel)
{
    char *x = read_text(a, rel), *y = read_text(b, rel);

    CHECK(x != NULL && y != NULL);
    if (x && y) {
        CHECK_EQ_STR(x, y);
    }
    free(x);
    free(y);
}

/*
 * A torch-like folder: 5 entries (FX graph with two files, AOTAutograd,
 * one generated stem with .py/.cpp/.so, one autotune file, one Triton
 * kernel folder) and things never captured.
 */
static void
make_torch_folder(const char *w)
{
    char grp[PATH_MAX * 2];

    write_file(w, "inductor/fxgraph/ab/fabcdef/s1", "graph one", 0644);
    write_file(w, "inductor/fxgraph/ab/fabcdef/s2", "graph two!", 0644);
    write_file(w, "inductor/aotautograd/aq12/s9", "aot", 0644);
    write_file(w, "inductor/cd/ccd1.py", "print('wrapper')\n", 0644);
    write_file(w, "inductor/cd/ccd1.main.cpp", "int main;\n", 0644);
    write_file(w, "inductor/cd/ccd1.main.so", "\177ELF fake", 0755);
    write_file(w, "inductor/cache/0123abc", "{\"mm\": 1}", 0644);
    write_file(w, "triton/KT1/k.cubin", "cubin bytes", 0644);
    write_file(w, "triton/KT1/k.json", "{\"name\": \"k\"}", 0644);
    snprintf(grp, sizeof(grp),
             "{\"child_paths\": {\"k.cubin\": \"/producer/x/triton/KT1/"
             "k.cubin\", \"k.json\": \"/producer/x/triton/KT1/k.json\"}, "
             "\"n\": [1, 2.5e3, true, null, \"a\\\"b\"]}");
    write_file(w, "triton/KT1/__grp__k.json", grp, 0644);

    /* Never captured. */
    write_file(w, "inductor/locks/ccd1.lock", "", 0644);
    write_file(w, "inductor/cd/.123.456.tmp", "half", 0644);
    write_file(w, "triton/KT1/tmp.pid_9_abc/k.cubin", "half", 0644);
    write_file(w, "inductor/stray.txt", "top-level file", 0644);
    write_file(w, "elsewhere/file", "not torch", 0644);
}

static mithril_store *
open_store(const char *root)
{
    char dir[PATH_MAX];
    mithril_store *s = NULL;

    snprintf(dir, sizeof(dir), "%s/store", root);
    CHECK_EQ_INT(mithril_store_open(
                     dir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG, &s),
                 0);
    return s;
}

static void
test_capture_restore_round_trip(void)
{
    char *root = check_tmpdir();
    char w[PATH_MAX], fresh[PATH_MAX], link[PATH_MAX * 2];
    mithril_store *s = open_store(root);
    mithril_sync_result r;
    mithril_entry *e;
    char *grp, *expect;

    snprintf(w, sizeof(w), "%s/work", root);
    snprintf(fresh, sizeof(fresh), "%s/fresh", root);
    make_torch_folder(w);
    snprintf(link, sizeof(link), "%s/inductor/cd/link.py", w);
    CHECK_EQ_INT(symlink("/etc/hostname", link), 0);

    CHECK_EQ_INT(mithril_capture(s, w, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 5);
    CHECK_EQ_INT(r.files, 10);
    CHECK_EQ_INT(r.skipped, 0);

    /* One entry per torch entry, named by the rules. */
    CHECK_EQ_INT(mithril_entry_peek(s, "w1/does/not/exist", &e),
                 MITHRIL_ENOTFOUND);
    {
        char key[600], tc[17];

        mi_capture_tag(TC, tc);
        snprintf(key, sizeof(key), "w1/%s/inductor/cd/ccd1", tc);
        CHECK_EQ_INT(mithril_entry_peek(s, key, &e), 0);
        if (e) {
            CHECK_EQ_INT(e->n_items, 3);
            CHECK(strstr(e->meta, "kind=code") != NULL);
            CHECK(strstr(e->meta, "tc=") == e->meta);
            CHECK(strstr(e->meta, "toolchain=torch=2.13.0+cpu;triton=none") !=
                  NULL);
            mithril_entry_free(e);
        }
        snprintf(key, sizeof(key), "w1/%s/inductor/fxgraph/ab/fabcdef", tc);
        CHECK_EQ_INT(mithril_entry_peek(s, key, &e), 0);
        if (e) {
            CHECK_EQ_INT(e->n_items, 2);
            CHECK_EQ_STR(e->items[0].name, "inductor/fxgraph/ab/fabcdef/s1");
            mithril_entry_free(e);
        }
        snprintf(key, sizeof(key), "w1/%s/triton/KT1", tc);
        CHECK_EQ_INT(mithril_entry_peek(s, key, &e), 0);
        if (e) {
            CHECK_EQ_INT(e->n_items, 3);
            CHECK(strstr(e->meta, "kind=triton") != NULL);
            mithril_entry_free(e);
        }
    }

    /* Idempotent. */
    CHECK_EQ_INT(mithril_capture(s, w, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 0);
    CHECK_EQ_INT(r.files, 0);
    CHECK_EQ_INT(r.skipped, 5);

    /* Restore into an empty folder. */
    CHECK_EQ_INT(mithril_restore(s, fresh, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 5);
    CHECK_EQ_INT(r.files, 10);
    CHECK_EQ_INT(r.rejected, 0);
    same_file(w, fresh, "inductor/fxgraph/ab/fabcdef/s1");
    same_file(w, fresh, "inductor/fxgraph/ab/fabcdef/s2");
    same_file(w, fresh, "inductor/aotautograd/aq12/s9");
    same_file(w, fresh, "inductor/cd/ccd1.py");
    same_file(w, fresh, "inductor/cd/ccd1.main.so");
    same_file(w, fresh, "inductor/cache/0123abc");
    same_file(w, fresh, "triton/KT1/k.cubin");
    CHECK_EQ_INT(mode_of(fresh, "inductor/cd/ccd1.main.so"), 0755);
    CHECK_EQ_INT(mode_of(fresh, "inductor/cd/ccd1.py"), 0644);
    CHECK(!exists(fresh, "inductor/locks"));
    CHECK(!exists(fresh, "inductor/cd/.123.456.tmp"));
    CHECK(!exists(fresh, "inductor/cd/link.py"));
    CHECK(!exists(fresh, "inductor/stray.txt"));
    CHECK(!exists(fresh, "elsewhere"));
    CHECK(!exists(fresh, "triton/KT1/tmp.pid_9_abc"));

    /* The group file names this folder's kernel files. */
    grp = read_text(fresh, "triton/KT1/__grp__k.json");
    expect = malloc(3 * PATH_MAX);
    {
        char real[PATH_MAX];

        CHECK(realpath(fresh, real) != NULL);
        snprintf(expect, 3 * PATH_MAX,
                 "{\"child_paths\":{\"k.cubin\":\"%s/triton/KT1/k.cubin\","
                 "\"k.json\":\"%s/triton/KT1/k.json\"},"
                 "\"n\":[1,2.5e3,true,null,\"a\\\"b\"]}",
                 real, real);
    }
    CHECK(grp != NULL);
    if (grp) {
        CHECK_EQ_STR(grp, expect);
    }
    free(grp);
    free(expect);

    /* A restored folder captures as unchanged, restores as present. */
    CHECK_EQ_INT(mithril_capture(s, fresh, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 0);
    CHECK_EQ_INT(r.skipped, 5);
    CHECK_EQ_INT(mithril_restore(s, fresh, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 0);
    CHECK_EQ_INT(r.files, 0);
    CHECK_EQ_INT(r.skipped, 5);

    /* Another toolchain's restore writes nothing and counts them. */
    snprintf(fresh, sizeof(fresh), "%s/other", root);
    CHECK_EQ_INT(mithril_restore(s, fresh, "torch=other", &r), 0);
    CHECK_EQ_INT(r.entries, 0);
    CHECK_EQ_INT(r.skipped, 5);
    CHECK(!exists(fresh, "inductor"));
    /* NULL: every torch entry. */
    CHECK_EQ_INT(mithril_restore(s, fresh, NULL, &r), 0);
    CHECK_EQ_INT(r.entries, 5);

    mithril_store_close(s);
    check_rmrf(root);
    free(root);
}

static void
test_capture_merges_new_files(void)
{
    char *root = check_tmpdir();
    char w[PATH_MAX], fresh[PATH_MAX], key[600], tc[17];
    mithril_store *s = open_store(root);
    mithril_sync_result r;
    mithril_entry *e = NULL;

    snprintf(w, sizeof(w), "%s/work", root);
    snprintf(fresh, sizeof(fresh), "%s/fresh", root);
    write_file(w, "inductor/fxgraph/ab/fabc/s1", "one", 0644);
    CHECK_EQ_INT(mithril_capture(s, w, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 1);

    /* A second graph variant appears under the same key. */
    write_file(w, "inductor/fxgraph/ab/fabc/s2", "two", 0644);
    CHECK_EQ_INT(mithril_capture(s, w, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 1);
    CHECK_EQ_INT(r.files, 1);
    CHECK_EQ_INT(mithril_capture(s, w, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 0);

    /*
     * A folder holding only one of them (written after the entry, so it
     * is captured again) does not shrink the entry.
     */
    write_file(fresh, "inductor/fxgraph/ab/fabc/s1", "one", 0644);
    CHECK_EQ_INT(mithril_capture(s, fresh, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 1);
    mi_capture_tag(TC, tc);
    snprintf(key, sizeof(key), "w1/%s/inductor/fxgraph/ab/fabc", tc);
    CHECK_EQ_INT(mithril_entry_peek(s, key, &e), 0);
    if (e) {
        CHECK_EQ_INT(e->n_items, 2);
        mithril_entry_free(e);
    }

    /* A file rewritten with another size is captured again. */
    write_file(w, "inductor/fxgraph/ab/fabc/s1", "one, longer", 0644);
    CHECK_EQ_INT(mithril_capture(s, w, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 1);
    CHECK_EQ_INT(r.files, 1);

    mithril_store_close(s);
    check_rmrf(root);
    free(root);
}

static void
test_symlink_component_not_followed(void)
{
    char *root = check_tmpdir();
    char w[PATH_MAX], outside[PATH_MAX], link[PATH_MAX * 2], tc[17];
    char meta[200], key[600];
    mithril_store *s = open_store(root);
    mithril_sync_result r;
    mithril_item it;
    mithril_stats st;

    snprintf(w, sizeof(w), "%s/work", root);
    snprintf(outside, sizeof(outside), "%s/outside", root);
    CHECK_EQ_INT(mi_mkdirs(outside, 0755), 0);
    CHECK_EQ_INT(mi_mkdirs(w, 0755), 0);
    snprintf(link, sizeof(link), "%s/inductor", w);
    CHECK_EQ_INT(symlink(outside, link), 0);

    memset(&it, 0, sizeof(it));
    it.name = "inductor/ab/cab.py";
    it.size = 5;
    it.mode = 0644;
    CHECK_EQ_INT(mithril_store_put(s, "hello", 5, it.addr), 0);
    mi_capture_tag(TC, tc);
    snprintf(meta, sizeof(meta), "tc=%s kind=code", tc);
    snprintf(key, sizeof(key), "w1/%s/inductor/ab/cab", tc);
    CHECK_EQ_INT(mithril_entry_put(s, key, &it, 1, meta), 0);

    CHECK_EQ_INT(mithril_restore(s, w, TC, &r), 0);
    CHECK_EQ_INT(r.rejected, 1);
    CHECK_EQ_INT(r.entries, 0);
    CHECK(!exists(outside, "ab"));
    CHECK_EQ_INT(mithril_stats_get(s, &st), 0);
    CHECK(st.rejected >= 1);

    /* The same through restore_entry. */
    CHECK_EQ_INT(mithril_restore_entry(s, w, key, &r), 0);
    CHECK_EQ_INT(r.rejected, 1);
    CHECK(!exists(outside, "ab"));

    /* Unsafe names never get into the index in the first place. */
    it.name = "../escape";
    CHECK(mithril_entry_put(s, "w1/x/bad", &it, 1, meta) < 0);
    it.name = "/abs";
    CHECK(mithril_entry_put(s, "w1/x/bad2", &it, 1, meta) < 0);

    /* A symlink as the final name is replaced, not written through. */
    unlink(link);
    CHECK_EQ_INT(mi_mkdirs(link, 0755), 0);
    snprintf(link, sizeof(link), "%s/inductor/ab", w);
    CHECK_EQ_INT(mi_mkdirs(link, 0755), 0);
    snprintf(link, sizeof(link), "%s/inductor/ab/cab.py", w);
    snprintf(outside, sizeof(outside), "%s/outside/target", root);
    write_file(root, "outside/target", "keep", 0644);
    CHECK_EQ_INT(symlink(outside, link), 0);
    CHECK_EQ_INT(mithril_restore(s, w, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 1);
    {
        char *t = read_text(root, "outside/target");
        struct stat lst;

        CHECK(t && !strcmp(t, "keep"));
        free(t);
        CHECK(lstat(link, &lst) == 0 && S_ISREG(lst.st_mode));
    }

    mithril_store_close(s);
    check_rmrf(root);
    free(root);
}

static void
test_missing_or_corrupt_blob_leaves_nothing(void)
{
    char *root = check_tmpdir();
    char w[PATH_MAX], fresh[PATH_MAX], key[600], tc[17], bp[PATH_MAX];
    mithril_store *s = open_store(root);
    mithril_sync_result r;
    mithril_entry *e = NULL;
    size_t i;
    int fd;

    snprintf(w, sizeof(w), "%s/work", root);
    snprintf(fresh, sizeof(fresh), "%s/fresh", root);
    write_file(w, "inductor/fxgraph/zz/fzz1/a", "first file", 0644);
    write_file(w, "inductor/fxgraph/zz/fzz1/b", "second file", 0644);
    write_file(w, "inductor/fxgraph/yy/fyy1/a", "third file here", 0644);
    mithril_store_set_compression(s, 0);
    CHECK_EQ_INT(mithril_capture(s, w, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 2);

    /* Remove the blob of b: the entry fzz1 must not appear at all. */
    mi_capture_tag(TC, tc);
    snprintf(key, sizeof(key), "w1/%s/inductor/fxgraph/zz/fzz1", tc);
    CHECK_EQ_INT(mithril_entry_peek(s, key, &e), 0);
    if (!e) {
        goto out;
    }
    for (i = 0; i < e->n_items; i++) {
        if (!strcmp(e->items[i].name, "inductor/fxgraph/zz/fzz1/b")) {
            CHECK_EQ_INT(mithril_store_delete(s, e->items[i].addr), 0);
        }
    }
    CHECK_EQ_INT(mithril_restore(s, fresh, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 1);
    CHECK_EQ_INT(r.skipped, 1);
    CHECK(!exists(fresh, "inductor/fxgraph/zz/fzz1/a"));
    CHECK(!exists(fresh, "inductor/fxgraph/zz/fzz1/b"));
    same_file(w, fresh, "inductor/fxgraph/yy/fyy1/a");

    /* Corrupt the blob of yy's file: restoring it elsewhere skips it. */
    mithril_entry_free(e);
    e = NULL;
    snprintf(key, sizeof(key), "w1/%s/inductor/fxgraph/yy/fyy1", tc);
    CHECK_EQ_INT(mithril_entry_peek(s, key, &e), 0);
    if (!e) {
        goto out;
    }
    mi_blob_path(s, e->items[0].addr, bp);
    fd = open(bp, O_WRONLY);
    CHECK(fd >= 0);
    if (fd >= 0) {
        struct stat st;

        fstat(fd, &st);
        CHECK(pwrite(fd, "X", 1, st.st_size - 1) == 1);
        close(fd);
    }
    snprintf(fresh, sizeof(fresh), "%s/fresh2", root);
    CHECK_EQ_INT(mithril_restore_entry(s, fresh, key, &r), 0);
    CHECK_EQ_INT(r.entries, 0);
    CHECK_EQ_INT(r.skipped, 1);
    CHECK(!exists(fresh, "inductor/fxgraph/yy/fyy1/a"));
    /* No temp file left behind either. */
    CHECK(!exists(fresh, "inductor/fxgraph/yy/fyy1") ||
          rmdir(strcat(fresh, "/inductor/fxgraph/yy/fyy1")) == 0);
out:
    if (e) {
        mithril_entry_free(e);
    }
    mithril_store_close(s);
    check_rmrf(root);
    free(root);
}

static void
test_key_for_path_and_put_files(void)
{
    char *root = check_tmpdir();
    char w[PATH_MAX], fresh[PATH_MAX], key[600], abs_path[PATH_MAX * 2];
    char tc[17], want[600];
    const char *names[] = {"inductor/fxgraph/ab/fab/s1", "inductor/cd/ccd.py",
                           "inductor/cd/.9.9.tmp", "inductor/cd/gone.py"};
    mithril_store *s = open_store(root);
    mithril_sync_result r;

    mi_capture_tag(TC, tc);
    CHECK_EQ_INT(mi_capture_key_for_path("/w", "inductor/cd/ccd9.main.so", TC,
                                         key, sizeof(key)),
                 0);
    snprintf(want, sizeof(want), "w1/%s/inductor/cd/ccd9", tc);
    CHECK_EQ_STR(key, want);
    CHECK_EQ_INT(mi_capture_key_for_path("/w/", "/w/triton/0/KK/x.cubin", TC,
                                         key, sizeof(key)),
                 0);
    snprintf(want, sizeof(want), "w1/%s/triton/0/KK", tc);
    CHECK_EQ_STR(key, want);
    CHECK_EQ_INT(mi_capture_key_for_path("/w",
                                         "/w/inductor/aotautograd/ak/"
                                         "deep/f",
                                         TC, key, sizeof(key)),
                 0);
    snprintf(want, sizeof(want), "w1/%s/inductor/aotautograd/ak", tc);
    CHECK_EQ_STR(key, want);
    CHECK_EQ_INT(mi_capture_key_for_path("/w", "/elsewhere/inductor/cd/c.py",
                                         TC, key, sizeof(key)),
                 MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(mi_capture_key_for_path("/w", "inductor/locks/c.lock", TC, key,
                                         sizeof(key)),
                 MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(mi_capture_key_for_path("/w", "inductor/cd/.1.2.tmp", TC, key,
                                         sizeof(key)),
                 MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(mi_capture_key_for_path("/w", "inductor/../x/y.py", TC, key,
                                         sizeof(key)),
                 MITHRIL_ENOTFOUND);

    snprintf(w, sizeof(w), "%s/work", root);
    snprintf(fresh, sizeof(fresh), "%s/fresh", root);
    write_file(w, names[0], "graph", 0644);
    write_file(w, names[1], "code", 0644);
    write_file(w, names[2], "temp", 0644);
    CHECK_EQ_INT(
        mi_capture_put_files(s, "g1/abc", w, names, 4, "tc=x kind=graph", &r),
        0);
    CHECK_EQ_INT(r.entries, 1);
    CHECK_EQ_INT(r.files, 2);
    CHECK_EQ_INT(r.skipped, 2);
    CHECK_EQ_INT(mithril_restore_entry(s, fresh, "g1/abc", &r), 0);
    CHECK_EQ_INT(r.entries, 1);
    CHECK_EQ_INT(r.files, 2);
    same_file(w, fresh, names[0]);
    same_file(w, fresh, names[1]);
    CHECK(!exists(fresh, names[2]));
    CHECK_EQ_INT(mithril_restore_entry(s, fresh, "g1/none", &r),
                 MITHRIL_ENOTFOUND);
    snprintf(abs_path, sizeof(abs_path), "../%s", names[0]);
    names[0] = abs_path;
    CHECK_EQ_INT(mi_capture_put_files(s, "g1/bad", w, names, 1, "", &r),
                 MITHRIL_EPATH);

    mithril_store_close(s);
    check_rmrf(root);
    free(root);
}

static void
test_group_file_not_json_kept(void)
{
    char *root = check_tmpdir();
    char w[PATH_MAX], fresh[PATH_MAX];
    mithril_store *s = open_store(root);
    mithril_sync_result r;
    char *t;

    snprintf(w, sizeof(w), "%s/work", root);
    snprintf(fresh, sizeof(fresh), "%s/fresh", root);
    write_file(w, "triton/K2/__grp__a.json",
               "{\"child_paths\": {\"a\": ", 0644);
    write_file(w, "triton/K2/a", "x", 0644);
    CHECK_EQ_INT(mithril_capture(s, w, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 1);
    CHECK_EQ_INT(mithril_restore(s, fresh, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 1);
    t = read_text(fresh, "triton/K2/__grp__a.json");
    CHECK(t && !strcmp(t, "{\"child_paths\": {\"a\": "));
    free(t);
    mithril_store_close(s);
    check_rmrf(root);
    free(root);
}

/* Enough entries for capture to use its worker threads. */
static void
test_many_entries(void)
{
    char *root = check_tmpdir();
    char w[PATH_MAX], fresh[PATH_MAX], rel[100], text[100];
    mithril_store *s = open_store(root);
    mithril_sync_result r;
    int i;

    snprintf(w, sizeof(w), "%s/work", root);
    snprintf(fresh, sizeof(fresh), "%s/fresh", root);
    for (i = 0; i < 120; i++) {
        snprintf(rel, sizeof(rel), "inductor/fxgraph/%02d/f%04d/s", i % 7, i);
        snprintf(text, sizeof(text), "graph %d", i % 50);
        write_file(w, rel, text, 0644);
        snprintf(rel, sizeof(rel), "inductor/%02d/c%04d.py", i % 5, i);
        write_file(w, rel, text, 0644);
    }
    CHECK_EQ_INT(mithril_capture(s, w, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 240);
    CHECK_EQ_INT(r.files, 240);
    CHECK_EQ_INT(mithril_capture(s, w, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 0);
    CHECK_EQ_INT(r.skipped, 240);
    CHECK_EQ_INT(mithril_restore(s, fresh, TC, &r), 0);
    CHECK_EQ_INT(r.entries, 240);
    CHECK_EQ_INT(r.files, 240);
    for (i = 0; i < 120; i += 17) {
        snprintf(rel, sizeof(rel), "inductor/fxgraph/%02d/f%04d/s", i % 7, i);
        same_file(w, fresh, rel);
        snprintf(rel, sizeof(rel), "inductor/%02d/c%04d.py", i % 5, i);
        same_file(w, fresh, rel);
    }
    mithril_store_close(s);
    check_rmrf(root);
    free(root);
}

int
main(void)
{
    RUN(test_capture_restore_round_trip);
    RUN(test_capture_merges_new_files);
    RUN(test_symlink_component_not_followed);
    RUN(test_missing_or_corrupt_blob_leaves_nothing);
    RUN(test_key_for_path_and_put_files);
    RUN(test_group_file_not_json_kept);
    RUN(test_many_entries);
    return check_report();
}
