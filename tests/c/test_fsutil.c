/*
 * test_fsutil.c - durable files: full writes through short writes, mkdir
 * -p, temporary names, publication by link (existing file wins) and by
 * rename, atomic whole-file writes, stale temp detection, and failures
 * injected through the mi_sys table (ENOSPC, EIO) leaving no temp behind,
 * the names of network file systems (a store there gets a warning), and
 * buffers for O_DIRECT (aligned, huge-page aligned from 2 MiB on, usable
 * for a direct write of their whole length).
 */
#include "check.h"

#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>

static char *root;

/* Number of entries in a folder, "." and ".." aside. */
static int
count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    if (!d) {
        return -1;
    }
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static char *
slurp(const char *path, size_t *len)
{
    struct stat st;
    char *buf;
    int fd = open(path, O_RDONLY);

    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    buf = malloc((size_t)st.st_size + 1);
    *len = (size_t)mi_read_full(fd, buf, (size_t)st.st_size);
    buf[*len] = '\0';
    close(fd);
    return buf;
}

/* ---- injected failures ---- */

static int short_max;

static ssize_t
write_short(int fd, const void *buf, size_t n)
{
    return write(fd, buf, n > (size_t)short_max ? (size_t)short_max : n);
}

static ssize_t
write_enospc(int fd, const void *buf, size_t n)
{
    errno = ENOSPC;
    return -1;
}

static int
fsync_eio(int fd)
{
    errno = EIO;
    return -1;
}

static int
link_eio(const char *from, const char *to)
{
    errno = EIO;
    return -1;
}

static void
test_write_all_short_writes(void)
{
    char path[PATH_MAX];
    char data[10000];
    char *back;
    size_t len, i;
    int fd;

    for (i = 0; i < sizeof(data); i++) {
        data[i] = (char)('a' + i % 26);
    }
    snprintf(path, sizeof(path), "%s/short", root);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0);
    short_max = 7;
    mi_sys.write = write_short;
    CHECK_EQ_INT(mi_write_all(fd, data, sizeof(data)), 0);
    mi_sys_reset();
    close(fd);
    back = slurp(path, &len);
    CHECK(back != NULL);
    CHECK_EQ_INT(len, sizeof(data));
    CHECK(back && memcmp(back, data, sizeof(data)) == 0);
    free(back);

    mi_sys.write = write_enospc;
    fd = open(path, O_RDWR | O_TRUNC);
    CHECK_EQ_INT(mi_write_all(fd, data, sizeof(data)), -ENOSPC);
    mi_sys_reset();
    close(fd);
}

static void
test_read_full(void)
{
    int p[2];
    char buf[64];
    pid_t pid;

    CHECK(pipe(p) == 0);
    pid = fork();
    if (pid == 0) {
        /* Two pieces, so a single read() would come back short. */
        close(p[0]);
        CHECK(write(p[1], "hello ", 6) == 6);
        usleep(20000);
        CHECK(write(p[1], "world", 5) == 5);
        _exit(0);
    }
    close(p[1]);
    CHECK_EQ_INT(mi_read_full(p[0], buf, sizeof(buf)), 11);
    CHECK(memcmp(buf, "hello world", 11) == 0);
    CHECK_EQ_INT(mi_read_full(p[0], buf, sizeof(buf)), 0);
    close(p[0]);
    waitpid(pid, NULL, 0);
}

static void
test_mkdirs(void)
{
    char path[PATH_MAX];
    char file[PATH_MAX];
    struct stat st;

    snprintf(path, sizeof(path), "%s/a/b/c/d", root);
    CHECK_EQ_INT(mi_mkdirs(path, 0700), 0);
    CHECK(stat(path, &st) == 0 && S_ISDIR(st.st_mode));
    CHECK_EQ_INT(st.st_mode & 0777, 0700);
    /* Existing: fine. */
    CHECK_EQ_INT(mi_mkdirs(path, 0700), 0);
    /* A file in the way. */
    snprintf(file, sizeof(file), "%s/a/file", root);
    CHECK_EQ_INT(mi_write_file_atomic(file, "x", 1, 0600), 0);
    CHECK_EQ_INT(mi_mkdirs(file, 0700), -ENOTDIR);
    snprintf(path, sizeof(path), "%s/a/file/sub", root);
    CHECK(mi_mkdirs(path, 0700) < 0);
}

static void
test_temp_names(void)
{
    char dir[PATH_MAX];
    char a[PATH_MAX], b[PATH_MAX];
    char prefix[64];
    const char *base;
    int fa, fb;

    snprintf(dir, sizeof(dir), "%s/tmpnames", root);
    CHECK_EQ_INT(mi_mkdirs(dir, 0700), 0);
    fa = mi_temp_open(dir, a, 0600);
    fb = mi_temp_open(dir, b, 0600);
    CHECK(fa >= 0 && fb >= 0);
    CHECK(strcmp(a, b) != 0);
    base = strrchr(a, '/') + 1;
    snprintf(prefix, sizeof(prefix), ".mtmp.%ld.", (long)getpid());
    CHECK(strncmp(base, prefix, strlen(prefix)) == 0);
    /* Ours, alive: not stale. */
    CHECK_EQ_INT(mi_temp_is_stale(a), 0);
    CHECK_EQ_INT(mi_temp_is_stale(base), 0);
    close(fa);
    close(fb);
    unlink(a);
    unlink(b);
}

static void
test_temp_stale(void)
{
    char name[128];
    pid_t pid = fork();

    if (pid == 0) {
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    /* A reaped child's pid names no process (until reused). */
    snprintf(name, sizeof(name), "/x/.mtmp.%ld.1f-2", (long)pid);
    CHECK_EQ_INT(mi_temp_is_stale(name), 1);
    snprintf(name, sizeof(name), ".mtmp.%ld.1f-2", (long)getppid());
    CHECK_EQ_INT(mi_temp_is_stale(name), 0);
    CHECK_EQ_INT(mi_temp_is_stale("blob"), 0);
    CHECK_EQ_INT(mi_temp_is_stale(".mtmp.x.1"), 0);
    CHECK_EQ_INT(mi_temp_is_stale(".mtmp.-4.1"), 0);
}

static void
test_publish_link_and_rename(void)
{
    char dir[PATH_MAX / 2], tmp[PATH_MAX], final[PATH_MAX];
    char *back;
    size_t len;
    int fd;

    snprintf(dir, sizeof(dir), "%s/pub", root);
    CHECK_EQ_INT(mi_mkdirs(dir, 0700), 0);
    snprintf(final, sizeof(final), "%s/final", dir);

    fd = mi_temp_open(dir, tmp, 0600);
    CHECK_EQ_INT(mi_write_all(fd, "first", 5), 0);
    CHECK_EQ_INT(mi_publish(fd, tmp, final, 1), 0);
    CHECK(access(tmp, F_OK) != 0);

    /* no_replace: the existing file wins, the temp goes away. */
    fd = mi_temp_open(dir, tmp, 0600);
    CHECK_EQ_INT(mi_write_all(fd, "second", 6), 0);
    CHECK_EQ_INT(mi_publish(fd, tmp, final, 1), 0);
    CHECK(access(tmp, F_OK) != 0);
    back = slurp(final, &len);
    CHECK(back && len == 5 && memcmp(back, "first", 5) == 0);
    free(back);

    /* replace: rename over it. */
    fd = mi_temp_open(dir, tmp, 0600);
    CHECK_EQ_INT(mi_write_all(fd, "third", 5), 0);
    CHECK_EQ_INT(mi_publish(fd, tmp, final, 0), 0);
    back = slurp(final, &len);
    CHECK(back && len == 5 && memcmp(back, "third", 5) == 0);
    free(back);
    CHECK_EQ_INT(count_entries(dir), 1);
}

static void
test_publish_failures_leave_nothing(void)
{
    char dir[PATH_MAX / 2], tmp[PATH_MAX], final[PATH_MAX];
    int fd;

    snprintf(dir, sizeof(dir), "%s/pubfail", root);
    CHECK_EQ_INT(mi_mkdirs(dir, 0700), 0);
    snprintf(final, sizeof(final), "%s/final", dir);

    fd = mi_temp_open(dir, tmp, 0600);
    CHECK_EQ_INT(mi_write_all(fd, "data", 4), 0);
    mi_sys.fsync = fsync_eio;
    CHECK_EQ_INT(mi_publish(fd, tmp, final, 1), -EIO);
    mi_sys_reset();
    CHECK_EQ_INT(count_entries(dir), 0);

    fd = mi_temp_open(dir, tmp, 0600);
    CHECK_EQ_INT(mi_write_all(fd, "data", 4), 0);
    mi_sys.link = link_eio;
    CHECK_EQ_INT(mi_publish(fd, tmp, final, 1), -EIO);
    mi_sys_reset();
    CHECK_EQ_INT(count_entries(dir), 0);

    mi_sys.write = write_enospc;
    CHECK_EQ_INT(mi_write_file_atomic(final, "data", 4, 0644), -ENOSPC);
    mi_sys_reset();
    CHECK_EQ_INT(count_entries(dir), 0);
}

static void
test_write_file_atomic(void)
{
    char path[PATH_MAX];
    struct stat st;
    char *back;
    size_t len;
    mode_t old = umask(077);

    snprintf(path, sizeof(path), "%s/atomic", root);
    CHECK_EQ_INT(mi_write_file_atomic(path, "one", 3, 0644), 0);
    CHECK_EQ_INT(mi_write_file_atomic(path, "two!", 4, 0644), 0);
    back = slurp(path, &len);
    CHECK(back && len == 4 && memcmp(back, "two!", 4) == 0);
    free(back);
    /* The mode is exact, whatever the umask. */
    CHECK(stat(path, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0644);
    umask(old);
}

static void
test_network_fs_names(void)
{
    CHECK_EQ_STR(mi_network_fs_name(0x6969UL), "nfs");
    CHECK_EQ_STR(mi_network_fs_name(0xFF534D42UL), "cifs");
    CHECK_EQ_STR(mi_network_fs_name(0x65735546UL), "fuse");
    /* ext4, xfs, btrfs, tmpfs, overlayfs: local. */
    CHECK(mi_network_fs_name(0xEF53UL) == NULL);
    CHECK(mi_network_fs_name(0x58465342UL) == NULL);
    CHECK(mi_network_fs_name(0x9123683EUL) == NULL);
    CHECK(mi_network_fs_name(0x01021994UL) == NULL);
    CHECK(mi_network_fs_name(0x794C7630UL) == NULL);
    /* A sign-extended f_type (32-bit statfs fields) still matches. */
    CHECK_EQ_STR(mi_network_fs_name(0xFFFFFFFFFF534D42UL), "cifs");
}

static void
test_direct_alloc(void)
{
    static const size_t sizes[] = {0, 100, 3 * 4096, (2u << 20) + 4096,
                                   (4u << 20) + 4096};
    char path[PATH_MAX];
    size_t i;
    size_t k;

    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        size_t align = n >= (2u << 20) ? (2u << 20) : MI_DIRECT_ALIGN;
        uint8_t *b = mi_direct_alloc(n);
        uint8_t *back;
        size_t whole = n & ~((size_t)MI_DIRECT_ALIGN - 1);
        int fd;

        CHECK(b != NULL);
        if (!b) {
            continue;
        }
        CHECK_EQ_INT((int)((uintptr_t)b % align), 0);
        for (k = 0; k < n; k++) {
            b[k] = (uint8_t)(k * 7 + i);
        }
        if (whole == 0) {
            free(b);
            continue;
        }
        /* A direct write of the buffer's whole blocks reads back equal. */
        snprintf(path, sizeof(path), "%s/direct%zu", root, i);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0600);
        if (fd >= 0) {
            CHECK(pwrite(fd, b, whole, 0) == (ssize_t)whole);
            close(fd);
            back = malloc(whole);
            fd = open(path, O_RDONLY);
            CHECK(fd >= 0 && back != NULL);
            if (fd >= 0 && back) {
                CHECK(mi_read_full(fd, back, whole) == (ssize_t)whole);
                CHECK(memcmp(back, b, whole) == 0);
            }
            if (fd >= 0) {
                close(fd);
            }
            free(back);
        }
        free(b);
    }
}

int
main(void)
{
    root = check_tmpdir();
    RUN(test_write_all_short_writes);
    RUN(test_read_full);
    RUN(test_mkdirs);
    RUN(test_temp_names);
    RUN(test_temp_stale);
    RUN(test_publish_link_and_rename);
    RUN(test_publish_failures_leave_nothing);
    RUN(test_write_file_atomic);
    RUN(test_network_fs_names);
    RUN(test_direct_alloc);
    check_rmrf(root);
    free(root);
    return check_report();
}
