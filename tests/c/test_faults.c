/*
 * test_faults.c - fault injection through the mi_sys table across every
 * write path of the library: blob put (buffer and streaming), get_file,
 * entry writes, capture and restore of a torch-shaped folder, archive
 * export and import, eviction.
 *
 * Method: each write path runs once per injection point. A countdown
 * makes the Nth call of one system call (open, write, pwrite, fsync,
 * rename, link, unlink, mkdir) fail with ENOSPC or EIO, for N = 1, 2, ...
 * until the operation runs through without reaching the fault. Short
 * writes (at most 7 bytes per call) and a disk that fills part way
 * through a write are injected the same way. After every injected fault:
 *   - the call returned a negative code or succeeded (a fault on a path
 *     that tolerates it, such as fsync of a folder), never crashed;
 *   - no temp file is left in the store's tmp/ or in the destination
 *     folder (unless the fault hit unlink itself, the call that would
 *     have removed it);
 *   - after mi_sys_reset() verify finds no corrupt blob and no broken
 *     entry, and the same operation succeeds with the right bytes.
 * Counts of injected faults are printed as "faults_injected N". ENOSPC is
 * swept over every call with MITHRIL_STRESS=1, over write alone otherwise
 * (EIO always over every call); a failing unlink never sees ENOSPC.
 */
#include "check.h"
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>

enum fault_call {
    F_OPEN,
    F_WRITE,
    F_PWRITE,
    F_FSYNC,
    F_RENAME,
    F_LINK,
    F_UNLINK,
    F_MKDIR,
    F_NCALLS
};

static const char *const fault_names[F_NCALLS] = {
    "open", "write", "pwrite", "fsync", "rename", "link", "unlink", "mkdir"};

static int fault_call = -1; /* which call fails, -1: none */
static long fault_countdown;
static int fault_errno;
static int fault_hit;
static long faults_injected;
static size_t short_max;      /* >0: writes move at most this many bytes */
static long long fill_budget; /* >=0: bytes left before ENOSPC */

static int
fault_now(int call)
{
    if (call != fault_call || fault_hit) {
        return 0;
    }
    if (--fault_countdown > 0) {
        return 0;
    }
    fault_hit = 1;
    faults_injected++;
    errno = fault_errno;
    return 1;
}

static int
f_open(const char *path, int flags, mode_t mode)
{
    return fault_now(F_OPEN) ? -1 : open(path, flags, mode);
}

static int
f_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    return fault_now(F_OPEN) ? -1 : openat(dirfd, path, flags, mode);
}

static ssize_t
f_write(int fd, const void *buf, size_t n)
{
    if (fault_now(F_WRITE)) {
        return -1;
    }
    if (short_max && n > short_max) {
        n = short_max;
    }
    if (fill_budget >= 0) {
        if (fill_budget == 0) {
            faults_injected++;
            errno = ENOSPC;
            return -1;
        }
        if ((long long)n > fill_budget) {
            n = (size_t)fill_budget;
        }
        fill_budget -= (long long)n;
    }
    return write(fd, buf, n);
}

static ssize_t
f_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return fault_now(F_PWRITE) ? -1 : pwrite(fd, buf, n, off);
}

static int
f_fsync(int fd)
{
    return fault_now(F_FSYNC) ? -1 : fsync(fd);
}

static int
f_rename(const char *from, const char *to)
{
    return fault_now(F_RENAME) ? -1 : rename(from, to);
}

static int
f_link(const char *from, const char *to)
{
    return fault_now(F_LINK) ? -1 : link(from, to);
}

static int
f_unlink(const char *path)
{
    return fault_now(F_UNLINK) ? -1 : unlink(path);
}

static int
f_mkdir(const char *path, mode_t mode)
{
    return fault_now(F_MKDIR) ? -1 : mkdir(path, mode);
}

static void
faults_arm(int call, long nth, int err)
{
    mi_sys.open = f_open;
    mi_sys.openat = f_openat;
    mi_sys.write = f_write;
    mi_sys.pwrite = f_pwrite;
    mi_sys.fsync = f_fsync;
    mi_sys.rename = f_rename;
    mi_sys.link = f_link;
    mi_sys.unlink = f_unlink;
    mi_sys.mkdir = f_mkdir;
    fault_call = call;
    fault_countdown = nth;
    fault_errno = err;
    fault_hit = 0;
    short_max = 0;
    fill_budget = -1;
}

static void
faults_off(void)
{
    mi_sys_reset();
    fault_call = -1;
    short_max = 0;
    fill_budget = -1;
}

/* ---- helpers ---- */

static char *root;

/* snprintf into a PATH_MAX buffer; aborts the test on overflow. */
#define PATHF(buf, ...)                                                        \
    do {                                                                       \
        if (snprintf(buf, PATH_MAX, __VA_ARGS__) >= PATH_MAX) {                \
            fprintf(stderr, "path too long\n");                                \
            exit(2);                                                           \
        }                                                                      \
    } while (0)

static void
fill_random(uint8_t *buf, size_t n, uint64_t seed)
{
    size_t i;

    for (i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        buf[i] = (uint8_t)(seed >> 33);
    }
}

/* Number of temp files (".mtmp.") in dir and its subfolders. */
static int
temps_in(const char *dir)
{
    char path[PATH_MAX];
    struct dirent *de;
    struct stat st;
    DIR *d = opendir(dir);
    int n = 0;

    if (!d) {
        return 0;
    }
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) {
            continue;
        }
        PATHF(path, "%s/%s", dir, de->d_name);
        if (lstat(path, &st) < 0) {
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            n += temps_in(path);
        } else if (!strncmp(de->d_name, ".mtmp.", 6) ||
                   strstr(de->d_name, ".tmp")) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static int
write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc;

    if (fd < 0) {
        return -errno;
    }
    rc = mi_write_all(fd, data, n);
    close(fd);
    return rc;
}

static int
file_equals(const char *path, const void *data, size_t n)
{
    uint8_t *buf = malloc(n + 1);
    int fd = open(path, O_RDONLY);
    ssize_t got;
    int same;

    if (fd < 0) {
        free(buf);
        return 0;
    }
    got = mi_read_full(fd, buf, n + 1);
    close(fd);
    same = got == (ssize_t)n && memcmp(buf, data, n) == 0;
    free(buf);
    return same;
}

/* The store is consistent: verify finds nothing corrupt and no entry
 * without its blobs, and tmp/ is empty afterwards. */
static void
check_consistent(mithril_store *s, const char *what, int temps_ok)
{
    mithril_verify_result r;
    char tmp[PATH_MAX];
    int rc = mithril_store_verify(s, NULL, NULL, &r);

    CHECK_EQ_INT(rc, 0);
    if (rc == 0 && (r.blobs_corrupt || r.entries_broken)) {
        fprintf(stderr, "after %s: %llu corrupt, %llu broken\n", what,
                (unsigned long long)r.blobs_corrupt,
                (unsigned long long)r.entries_broken);
        CHECK(r.blobs_corrupt == 0 && r.entries_broken == 0);
    }
    PATHF(tmp, "%s/tmp", mithril_store_dir(s));
    if (temps_ok) {
        /* A failed unlink keeps its temp; this process is alive, so
         * verify leaves it. Clear it for the next injection. */
        check_rmrf(tmp);
        mkdir(tmp, 0700);
    } else if (temps_in(tmp) != 0) {
        fprintf(stderr, "after %s: %d temp files in %s\n", what, temps_in(tmp),
                tmp);
        CHECK(temps_in(tmp) == 0);
    }
}

/*
 * One write path under test: run() performs it against the store and
 * returns the library's code; check() confirms a successful run left the
 * right bytes; dest names a folder the path writes into (or NULL).
 */
struct path_case {
    const char *name;
    int (*run)(mithril_store *s);
    int (*check)(mithril_store *s);
    void (*reset)(mithril_store *s); /* undo a success before the next N */
    const char *dest;
};

/* ---- the write paths ---- */

#define BIG (3 * 1024 * 1024 + 123)
static uint8_t *big;        /* incompressible, three 1 MiB chunks and more */
static uint8_t small[5000]; /* compressible */
static char big_addr[MITHRIL_HEX_SIZE];
static char small_addr[MITHRIL_HEX_SIZE];
static char in_path[PATH_MAX];
static char out_dir[PATH_MAX];
static char out_path[PATH_MAX];
static char work_dir[PATH_MAX];
static char restore_dir[PATH_MAX];
static char archive_dir[PATH_MAX];
static char archive_path[PATH_MAX];
static mithril_store *src_store; /* what the archive is exported from */

static void
forget_blobs(mithril_store *s)
{
    mithril_store_clear(s);
}

static int
run_put(mithril_store *s)
{
    char a[MITHRIL_HEX_SIZE];
    int rc = mithril_store_put(s, big, BIG, a);

    if (rc == 0) {
        CHECK_EQ_STR(a, big_addr);
    }
    if (rc == 0) {
        rc = mithril_store_put(s, small, sizeof(small), a);
    }
    return rc;
}

static int
check_put(mithril_store *s)
{
    void *back = NULL;
    size_t len = 0;
    int ok;

    if (mithril_store_get(s, big_addr, &back, &len) != 0) {
        return 0;
    }
    ok = len == BIG && memcmp(back, big, BIG) == 0;
    mithril_free(back);
    return ok && mithril_store_exists(s, small_addr) == 1;
}

static int
run_put_file(mithril_store *s)
{
    char a[MITHRIL_HEX_SIZE];

    return mithril_store_put_file(s, in_path, a);
}

static int
run_get_file(mithril_store *s)
{
    return mithril_store_get_file(s, big_addr, out_path, 0644);
}

static int
check_get_file(mithril_store *s)
{
    return file_equals(out_path, big, BIG);
}

static void
reset_get_file(mithril_store *s)
{
    char a[MITHRIL_HEX_SIZE];

    unlink(out_path);
    if (mithril_store_exists(s, big_addr) != 1) {
        mithril_store_put(s, big, BIG, a);
    }
}

static int
run_entry(mithril_store *s)
{
    mithril_item items[2] = {
        {.name = "a/big.bin", .size = BIG, .mode = 0644},
        {.name = "small.txt", .size = sizeof(small), .mode = 0755},
    };
    char a[MITHRIL_HEX_SIZE];
    int rc;

    strcpy(items[0].addr, big_addr);
    strcpy(items[1].addr, small_addr);
    if ((rc = mithril_store_put(s, big, BIG, a)) < 0 ||
        (rc = mithril_store_put(s, small, sizeof(small), a)) < 0) {
        return rc;
    }
    return mithril_entry_put(s, "faults/entry", items, 2, "kind=test");
}

static int
check_entry(mithril_store *s)
{
    mithril_entry *e = NULL;
    int ok;

    if (mithril_entry_get(s, "faults/entry", &e) != 0) {
        return 0;
    }
    ok = e->n_items == 2 && !strcmp(e->items[0].addr, big_addr);
    mithril_entry_free(e);
    return ok && check_put(s);
}

static void
reset_entry(mithril_store *s)
{
    mithril_entry_delete(s, "faults/entry");
}

static int
run_gc(mithril_store *s)
{
    mithril_gc_result g;
    int call = fault_call, err = fault_errno;
    long nth = fault_countdown;
    int rc;

    /* Faults hit the eviction only, not the entry it evicts. */
    faults_off();
    rc = run_entry(s);
    faults_arm(call, nth, err);
    if (rc < 0) {
        return rc;
    }
    return mithril_store_gc(s, 1, &g);
}

static int
check_gc(mithril_store *s)
{
    mithril_entry *e = NULL;

    return mithril_entry_peek(s, "faults/entry", &e) == MITHRIL_ENOTFOUND;
}

/* A folder shaped like TORCHINDUCTOR_CACHE_DIR. */
static int
make_work_dir(void)
{
    char path[PATH_MAX];
    int rc = 0;

    PATHF(path, "%s/inductor/fxgraph/ab/fabcdef0123", work_dir);
    rc |= mi_mkdirs(path, 0755);
    PATHF(path, "%s/inductor/fxgraph/ab/fabcdef0123/0123456789abcdef",
          work_dir);
    rc |= write_file(path, big, 200000);
    PATHF(path, "%s/inductor/cd", work_dir);
    rc |= mi_mkdirs(path, 0755);
    PATHF(path, "%s/inductor/cd/ccdabcdef.py", work_dir);
    rc |= write_file(path, small, sizeof(small));
    return rc;
}

static int
run_capture(mithril_store *s)
{
    mithril_sync_result r;

    return mithril_capture(s, work_dir, "faults-toolchain", &r);
}

static int
check_capture(mithril_store *s)
{
    mithril_sync_result r;
    char path[PATH_MAX];
    int ok;

    if (mithril_restore(s, restore_dir, "faults-toolchain", &r) != 0) {
        return 0;
    }
    PATHF(path, "%s/inductor/fxgraph/ab/fabcdef0123/0123456789abcdef",
          restore_dir);
    ok = file_equals(path, big, 200000);
    PATHF(path, "%s/inductor/cd/ccdabcdef.py", restore_dir);
    ok = ok && file_equals(path, small, sizeof(small));
    check_rmrf(restore_dir);
    return ok;
}

static int
run_restore(mithril_store *s)
{
    mithril_sync_result r;

    return mithril_restore(s, restore_dir, "faults-toolchain", &r);
}

static int
check_restore(mithril_store *s)
{
    char path[PATH_MAX];

    PATHF(path, "%s/inductor/fxgraph/ab/fabcdef0123/0123456789abcdef",
          restore_dir);
    return file_equals(path, big, 200000);
}

static void
reset_restore(mithril_store *s)
{
    mithril_sync_result r;

    check_rmrf(restore_dir);
    mithril_capture(s, work_dir, "faults-toolchain", &r);
}

static int
run_export(mithril_store *s)
{
    mithril_sync_result r;

    return mithril_archive_export(src_store, archive_path, NULL, NULL, NULL,
                                  &r);
}

static int
check_export(mithril_store *s)
{
    mithril_sync_result r;
    int ok;

    ok = mithril_archive_import(s, archive_path, NULL, NULL, &r) == 0 &&
         check_entry(s);
    unlink(archive_path);
    return ok;
}

static int
run_import(mithril_store *s)
{
    mithril_sync_result r;

    return mithril_archive_import(s, archive_path, NULL, NULL, &r);
}

static void
reset_import(mithril_store *s)
{
    mithril_sync_result r;

    forget_blobs(s);
    if (access(archive_path, F_OK) != 0) {
        mithril_archive_export(src_store, archive_path, NULL, NULL, NULL, &r);
    }
}

/*
 * Run one write path with every call failing in turn at every point it is
 * reached. Returns the number of injection points tried.
 */
static long
sweep(mithril_store *s, const struct path_case *pc, int call, int err)
{
    long nth, points = 0;
    char what[200];
    int rc;

    for (nth = 1; nth < 400; nth++) {
        if (pc->reset) {
            pc->reset(s);
        }
        faults_arm(call, nth, err);
        rc = pc->run(s);
        faults_off();
        if (!fault_hit) {
            CHECK_EQ_INT(rc, 0);
            break;
        }
        points++;
        if (rc > 0) {
            fprintf(stderr, "%s: %s fault %ld: positive code %d\n", pc->name,
                    fault_names[call], nth, rc);
            CHECK(rc <= 0);
        }
        if (call != F_UNLINK && pc->dest && temps_in(pc->dest) != 0) {
            fprintf(stderr, "%s: %s fault %ld (%s): temp left in %s\n",
                    pc->name, fault_names[call], nth, strerror(err), pc->dest);
            CHECK(temps_in(pc->dest) == 0);
        }
        snprintf(what, sizeof(what), "%s with %s #%ld failing (%s)", pc->name,
                 fault_names[call], nth, strerror(err));
        check_consistent(s, what, call == F_UNLINK);
        /* The store works again: the same operation now succeeds. */
        if (pc->reset) {
            pc->reset(s);
        }
        rc = pc->run(s);
        faults_off();
        if (rc != 0 || (pc->check && !pc->check(s))) {
            fprintf(stderr, "%s: after %s fault %ld: rerun rc %d\n", pc->name,
                    fault_names[call], nth, rc);
            CHECK(0);
        }
    }
    return points;
}

static const struct path_case cases[] = {
    {"put", run_put, check_put, forget_blobs, NULL},
    {"put_file", run_put_file, NULL, forget_blobs, NULL},
    {"get_file", run_get_file, check_get_file, reset_get_file, out_dir},
    {"entry_put", run_entry, check_entry, reset_entry, NULL},
    {"gc", run_gc, check_gc, reset_entry, NULL},
    {"capture", run_capture, check_capture, forget_blobs, work_dir},
    {"restore", run_restore, check_restore, reset_restore, restore_dir},
    {"export", run_export, check_export, forget_blobs, archive_dir},
    {"import", run_import, check_entry, reset_import, NULL},
};

#define N_CASES (sizeof(cases) / sizeof(cases[0]))

static mithril_store *
open_store(const char *name)
{
    char dir[PATH_MAX];
    mithril_store *s = NULL;

    PATHF(dir, "%s/%s", root, name);
    CHECK_EQ_INT(mithril_store_open(
                     dir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG, &s),
                 0);
    return s;
}

static void
test_every_call_fails_everywhere(void)
{
    static const int errs[] = {ENOSPC, EIO};
    mithril_store *s = open_store("sweep");
    const char *env = getenv("MITHRIL_STRESS");
    int stress = env && !strcmp(env, "1");
    size_t c;
    int call, e;

    for (c = 0; c < N_CASES; c++) {
        long points = 0;

        for (call = 0; call < F_NCALLS; call++) {
            for (e = 0; e < 2; e++) {
                if (errs[e] == ENOSPC &&
                    (call == F_UNLINK || (call != F_WRITE && !stress))) {
                    continue; /* MITHRIL_STRESS=1 runs every pair */
                }
                points += sweep(s, &cases[c], call, errs[e]);
            }
        }
        printf("path %s injection_points %ld\n", cases[c].name, points);
        CHECK(points > 0);
    }
    mithril_store_close(s);
}

/* Every write moves at most 7 bytes: nothing fails, bytes are right. */
static void
test_short_writes(void)
{
    mithril_store *s = open_store("short");
    size_t c;
    int rc;

    for (c = 0; c < N_CASES; c++) {
        if (cases[c].reset) {
            cases[c].reset(s);
        }
        faults_arm(-1, 0, 0);
        short_max = 7;
        rc = cases[c].run(s);
        faults_off();
        if (rc != 0 || (cases[c].check && !cases[c].check(s))) {
            fprintf(stderr, "short writes: %s rc %d\n", cases[c].name, rc);
            CHECK(0);
        }
        check_consistent(s, cases[c].name, 0);
    }
    mithril_store_close(s);
}

/* The disk fills part way through a write (after short writes). */
static void
test_disk_fills_midway(void)
{
    static const long long budgets[] = {
        0, 1, 15, 16, 4096, 1 << 20, (1 << 20) + 17, 2 << 20};
    mithril_store *s = open_store("fill");
    size_t c, b;
    int rc;

    for (c = 0; c < N_CASES; c++) {
        for (b = 0; b < sizeof(budgets) / sizeof(budgets[0]); b++) {
            if (cases[c].reset) {
                cases[c].reset(s);
            }
            faults_arm(-1, 0, 0);
            short_max = 4000;
            fill_budget = budgets[b];
            rc = cases[c].run(s);
            faults_off();
            CHECK(rc == 0 || rc == -ENOSPC);
            if (rc != 0 && cases[c].dest) {
                CHECK_EQ_INT(temps_in(cases[c].dest), 0);
            }
            check_consistent(s, cases[c].name, 0);
        }
        if (cases[c].reset) {
            cases[c].reset(s);
        }
        CHECK_EQ_INT(cases[c].run(s), 0);
    }
    mithril_store_close(s);
}

/* verify removes a dead process's temp file, never a live one's. */
static void
test_temp_cleanup_spares_the_living(void)
{
    mithril_store *s = open_store("temps");
    mithril_verify_result r;
    char dir[PATH_MAX], live[PATH_MAX], dead[PATH_MAX], mine[PATH_MAX];
    pid_t child;
    int fd, status;

    PATHF(dir, "%s/tmp", mithril_store_dir(s));
    fd = mi_temp_open(dir, mine, 0600);
    CHECK(fd >= 0);

    /* A process that is alive (the parent of this one, e.g. the shell). */
    PATHF(live, "%s/.mtmp.%ld.1-1", dir, (long)getppid());
    CHECK_EQ_INT(write_file(live, "x", 1), 0);

    /* A process that has certainly exited. */
    child = fork();
    if (child == 0) {
        _exit(0);
    }
    waitpid(child, &status, 0);
    PATHF(dead, "%s/.mtmp.%ld.1-1", dir, (long)child);
    CHECK_EQ_INT(write_file(dead, "x", 1), 0);

    CHECK_EQ_INT(mithril_store_verify(s, NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.temp_removed, 1);
    CHECK_EQ_INT(access(dead, F_OK), -1);
    CHECK_EQ_INT(access(live, F_OK), 0);
    CHECK_EQ_INT(access(mine, F_OK), 0);
    close(fd);
    unlink(mine);
    unlink(live);
    mithril_store_close(s);
}

int
main(void)
{
    mithril_store *s;
    char path[PATH_MAX];
    mithril_sync_result r;

    root = check_tmpdir();
    big = malloc(BIG);
    fill_random(big, BIG, 7);
    memset(small, 'a', sizeof(small));
    mithril_blake3_hash(big, BIG, (uint8_t *)path);
    mithril_hex((uint8_t *)path, 32, big_addr);
    mithril_blake3_hash(small, sizeof(small), (uint8_t *)path);
    mithril_hex((uint8_t *)path, 32, small_addr);

    PATHF(in_path, "%s/input.bin", root);
    write_file(in_path, big, BIG);
    PATHF(out_dir, "%s/out", root);
    mkdir(out_dir, 0700);
    PATHF(out_path, "%s/big.out", out_dir);
    PATHF(work_dir, "%s/work", root);
    PATHF(restore_dir, "%s/restored", root);
    PATHF(archive_dir, "%s/archives", root);
    mkdir(archive_dir, 0700);
    PATHF(archive_path, "%s/a.mtar", archive_dir);
    CHECK_EQ_INT(make_work_dir(), 0);

    src_store = open_store("source");
    CHECK_EQ_INT(run_entry(src_store), 0);
    s = src_store;
    CHECK_EQ_INT(mithril_capture(s, work_dir, "faults-toolchain", &r), 0);

    RUN(test_every_call_fails_everywhere);
    RUN(test_short_writes);
    RUN(test_disk_fills_midway);
    RUN(test_temp_cleanup_spares_the_living);
    printf("faults_injected %ld\n", faults_injected);

    mithril_store_close(src_store);
    free(big);
    check_rmrf(root);
    free(root);
    return check_report();
}
