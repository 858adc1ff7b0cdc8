/*
 * test_store.c - the blob store: round trips of many sizes (compressible
 * and not, in memory, from files and from pipes), dedupe, exists and
 * delete, malformed addresses, corruption (flipped bytes, bad headers,
 * truncation) detected, quarantined and never returned, a streamed 64 MiB
 * put and get in bounded memory, processes and threads putting the same
 * content at once, injected write failures (ENOSPC, short writes, EIO)
 * leaving no temp file, read-only stores, folder safety and the format
 * version check.
 */
#include "check.h"

#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <zstd.h>

#define MIB ((size_t)1 << 20)

static char *root;
static char last_log[1024];

static void
keep_log(int level, const char *msg, void *ctx)
{
    snprintf(last_log, sizeof(last_log), "%s", msg);
}

/* ---- helpers ---- */

static uint64_t
rng_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Incompressible bytes. */
static void
fill_random(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1, v;
    size_t i;

    for (i = 0; i < n; i += 8) {
        v = rng_next(&x);
        memcpy(p + i, &v, n - i < 8 ? n - i : 8);
    }
}

/* Text-like bytes that zstd shrinks. */
static void
fill_text(uint8_t *p, size_t n, uint64_t seed)
{
    static const char *words[] = {"tensor", "kernel ", "graph", " triton",
                                  "cuda\n", "float32", " = ",   "(x, y)"};
    uint64_t x = seed + 7;
    size_t i = 0, k, w;

    while (i < n) {
        w = (size_t)(rng_next(&x) % 8);
        for (k = 0; words[w][k] && i < n; k++) {
            p[i++] = (uint8_t)words[w][k];
        }
    }
}

static void
addr_of(const void *p, size_t n, char out[MITHRIL_HEX_SIZE])
{
    uint8_t d[32];

    mithril_blake3_hash(p, n, d);
    mithril_hex(d, 32, out);
}

static mithril_store *
open_store(const char *name)
{
    char path[PATH_MAX];
    mithril_store *s = NULL;
    int rc;

    snprintf(path, sizeof(path), "%s/%s", root, name);
    rc = mithril_store_open(path, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG,
                            &s);
    CHECK_EQ_INT(rc, 0);
    return s;
}

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

static int
count_in(mithril_store *s, const char *sub)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s", mithril_store_dir(s), sub);
    return count_entries(path);
}

/* 1 if dir holds a temporary file (".mtmp.*"). */
static int
has_temp(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int found = 0;

    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, ".mtmp.", 6) == 0) {
            found = 1;
        }
    }
    if (d) {
        closedir(d);
    }
    return found;
}

/* Name of the quarantined copy of addr, or 0 if there is none. */
static int
quarantined(mithril_store *s, const char *addr)
{
    char path[PATH_MAX];
    DIR *d;
    struct dirent *e;
    int found = 0;

    snprintf(path, sizeof(path), "%s/quarantine", mithril_store_dir(s));
    d = opendir(path);
    if (!d) {
        return 0;
    }
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, addr, 64) == 0 && e->d_name[64] == '.') {
            found = 1;
        }
    }
    closedir(d);
    return found;
}

static void
roundtrip(mithril_store *s, const uint8_t *data, size_t len)
{
    char addr[MITHRIL_HEX_SIZE], want[MITHRIL_HEX_SIZE];
    void *back = NULL;
    size_t back_len = 0;

    addr_of(data, len, want);
    CHECK_EQ_INT(mithril_store_put(s, data, len, addr), 0);
    CHECK_EQ_STR(addr, want);
    CHECK_EQ_INT(mithril_store_exists(s, addr), 1);
    CHECK_EQ_INT(mithril_store_get(s, addr, &back, &back_len), 0);
    CHECK_EQ_INT(back_len, len);
    CHECK(back && memcmp(back, data, len) == 0);
    mithril_free(back);
}

/* Flip one byte of the blob file at offset (negative: from the end). */
static void
flip_byte(mithril_store *s, const char *addr, long offset)
{
    char path[PATH_MAX];
    struct stat st;
    uint8_t b;
    int fd;

    mi_blob_path(s, addr, path);
    fd = open(path, O_RDWR);
    CHECK(fd >= 0);
    CHECK(fstat(fd, &st) == 0);
    if (offset < 0) {
        offset += st.st_size;
    }
    CHECK(pread(fd, &b, 1, offset) == 1);
    b ^= 0x40;
    CHECK(pwrite(fd, &b, 1, offset) == 1);
    close(fd);
}

/* ---- tests ---- */

/* Runs first, so the process's peak memory says what streaming costs. */
static void
test_stream_64mib_bounded_memory(void)
{
    const size_t total = 64 * MIB + 100; /* just over the in-memory get */
    char path[PATH_MAX], out[PATH_MAX];
    char addr[MITHRIL_HEX_SIZE], want[MITHRIL_HEX_SIZE];
    char got[MITHRIL_HEX_SIZE];
    struct rusage ru0, ru1;
    mithril_blake3 h;
    mithril_blob_info info;
    mithril_store *s = open_store("s-stream");
    uint8_t *buf = malloc(MIB);
    size_t done, n;
    ssize_t r;
    int fd;

    snprintf(path, sizeof(path), "%s/big.in", root);
    snprintf(out, sizeof(out), "%s/big.out", root);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    mithril_blake3_init(&h);
    for (done = 0; done < total; done += n) {
        n = total - done < MIB ? total - done : MIB;
        /* Half text, half noise: compressible-ish. */
        fill_text(buf, n / 2, done);
        fill_random(buf + n / 2, n - n / 2, done);
        mithril_blake3_update(&h, buf, n);
        CHECK_EQ_INT(mi_write_all(fd, buf, n), 0);
    }
    close(fd);
    {
        uint8_t d[32];

        mithril_blake3_finalize(&h, d, 32);
        mithril_hex(d, 32, want);
    }

    getrusage(RUSAGE_SELF, &ru0);
    CHECK_EQ_INT(mithril_store_put_file(s, path, addr), 0);
    CHECK_EQ_STR(addr, want);
    CHECK_EQ_INT(mithril_store_blob_info(s, addr, &info), 0);
    CHECK_EQ_INT(info.logical_size, total);
    CHECK_EQ_INT(info.compressed, 1);
    CHECK(info.stored_size < total);

    fd = open(out, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK_EQ_INT(mithril_store_get_fd(s, addr, fd), 0);
    CHECK_EQ_INT(lseek(fd, 0, SEEK_END), total);
    lseek(fd, 0, SEEK_SET);
    mithril_blake3_init(&h);
    while ((r = mi_read_full(fd, buf, MIB)) > 0) {
        mithril_blake3_update(&h, buf, (size_t)r);
    }
    close(fd);
    {
        uint8_t d[32];

        mithril_blake3_finalize(&h, d, 32);
        mithril_hex(d, 32, got);
    }
    CHECK_EQ_STR(got, want);
    getrusage(RUSAGE_SELF, &ru1);
    /*
     * Streaming: far less than the 64 MiB content (ru_maxrss is KiB).
     * ThreadSanitizer's shadow memory makes the figure meaningless.
     */
#ifndef __SANITIZE_THREAD__
    CHECK(ru1.ru_maxrss - ru0.ru_maxrss < 32 * 1024);
#endif

    /* Corrupt near the end: get_fd writes nothing at all. */
    flip_byte(s, addr, -20);
    fd = open(out, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK_EQ_INT(mithril_store_get_fd(s, addr, fd), MITHRIL_ECORRUPT);
    CHECK_EQ_INT(lseek(fd, 0, SEEK_END), 0);
    close(fd);
    CHECK(quarantined(s, addr));
    CHECK_EQ_INT(mithril_store_exists(s, addr), 0);

    unlink(path);
    unlink(out);
    free(buf);
    mithril_store_close(s);
}

static void
test_roundtrip_sizes(void)
{
    static const size_t sizes[] = {
        0, 1, 31, 32, 33, 100, 4096, 65536, MIB - 1, MIB, MIB + 1, 3 * MIB + 7};
    mithril_store *s = open_store("s-sizes");
    uint8_t *buf = malloc(3 * MIB + 7);
    size_t i;

    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        fill_random(buf, sizes[i], i);
        roundtrip(s, buf, sizes[i]);
        fill_text(buf, sizes[i], i);
        roundtrip(s, buf, sizes[i]);
    }
    CHECK_EQ_INT(count_in(s, "tmp"), 0);
    free(buf);
    mithril_store_close(s);
}

static void
test_empty_content(void)
{
    mithril_store *s = open_store("s-empty");
    char addr[MITHRIL_HEX_SIZE];
    void *back = NULL;
    size_t len = 99;

    CHECK_EQ_INT(mithril_store_put(s, NULL, 0, addr), 0);
    /* BLAKE3 of nothing. */
    CHECK_EQ_STR(addr, "af1349b9f5f9a1a6a0404dea36dcc949"
                       "9bcb25c9adc112b7cc9a93cae41f3262");
    CHECK_EQ_INT(mithril_store_get(s, addr, &back, &len), 0);
    CHECK_EQ_INT(len, 0);
    mithril_free(back);
    mithril_store_close(s);
}

static void
test_codec_choice(void)
{
    mithril_store *s = open_store("s-codec");
    uint8_t *buf = malloc(MIB);
    char a1[MITHRIL_HEX_SIZE], a2[MITHRIL_HEX_SIZE], a3[MITHRIL_HEX_SIZE];
    mithril_blob_info info;

    fill_text(buf, MIB, 1);
    CHECK_EQ_INT(mithril_store_put(s, buf, 200000, a1), 0);
    CHECK_EQ_INT(mithril_store_blob_info(s, a1, &info), 0);
    CHECK_EQ_INT(info.compressed, 1);
    CHECK_EQ_INT(info.logical_size, 200000);
    CHECK(info.stored_size < 200000 / 2);

    fill_random(buf, MIB, 2);
    CHECK_EQ_INT(mithril_store_put(s, buf, 200000, a2), 0);
    CHECK_EQ_INT(mithril_store_blob_info(s, a2, &info), 0);
    CHECK_EQ_INT(info.compressed, 0);
    CHECK_EQ_INT(info.stored_size, 200000 + 16);

    /* Level 0: raw even when it would shrink. */
    mithril_store_set_compression(s, 0);
    fill_text(buf, MIB, 3);
    CHECK_EQ_INT(mithril_store_put(s, buf, 100000, a3), 0);
    CHECK_EQ_INT(mithril_store_blob_info(s, a3, &info), 0);
    CHECK_EQ_INT(info.compressed, 0);
    CHECK_EQ_INT(info.stored_size, 100000 + 16);
    roundtrip(s, buf, 100000);
    free(buf);
    mithril_store_close(s);
}

static void
test_dedupe(void)
{
    mithril_store *s = open_store("s-dedupe");
    char path[PATH_MAX], file[PATH_MAX];
    char a1[MITHRIL_HEX_SIZE], a2[MITHRIL_HEX_SIZE], a3[MITHRIL_HEX_SIZE];
    struct stat st1, st2;
    uint8_t *buf = malloc(2 * MIB);
    int fd;

    fill_text(buf, 2 * MIB, 5);
    CHECK_EQ_INT(mithril_store_put(s, buf, 2 * MIB, a1), 0);
    mi_blob_path(s, a1, path);
    CHECK(stat(path, &st1) == 0);
    CHECK_EQ_INT(mithril_store_put(s, buf, 2 * MIB, a2), 0);
    CHECK_EQ_STR(a1, a2);

    /* Streamed from a file: same address, the existing file wins. */
    snprintf(file, sizeof(file), "%s/dedupe.in", root);
    fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK_EQ_INT(mi_write_all(fd, buf, 2 * MIB), 0);
    close(fd);
    CHECK_EQ_INT(mithril_store_put_file(s, file, a3), 0);
    CHECK_EQ_STR(a1, a3);
    CHECK(stat(path, &st2) == 0);
    CHECK_EQ_INT(st1.st_ino, st2.st_ino);
    CHECK_EQ_INT(st2.st_nlink, 1);
    CHECK_EQ_INT(count_in(s, "tmp"), 0);
    unlink(file);
    free(buf);
    mithril_store_close(s);
}

static void
test_put_fd_pipe(void)
{
    const size_t total = 2 * MIB + 12345;
    mithril_store *s = open_store("s-pipe");
    char addr[MITHRIL_HEX_SIZE], want[MITHRIL_HEX_SIZE];
    uint8_t *buf = malloc(total);
    void *back = NULL;
    size_t len = 0;
    int p[2];
    pid_t pid;

    fill_text(buf, total, 9);
    addr_of(buf, total, want);
    CHECK(pipe(p) == 0);
    pid = fork();
    if (pid == 0) {
        close(p[0]);
        mi_write_all(p[1], buf, total);
        _exit(0);
    }
    close(p[1]);
    CHECK_EQ_INT(mithril_store_put_fd(s, p[0], addr), 0);
    close(p[0]);
    waitpid(pid, NULL, 0);
    CHECK_EQ_STR(addr, want);
    CHECK_EQ_INT(mithril_store_get(s, addr, &back, &len), 0);
    CHECK(len == total && memcmp(back, buf, total) == 0);
    mithril_free(back);
    free(buf);
    mithril_store_close(s);
}

static void
test_exists_delete(void)
{
    mithril_store *s = open_store("s-delete");
    char addr[MITHRIL_HEX_SIZE];
    void *back = NULL;
    size_t len;

    CHECK_EQ_INT(mithril_store_put(s, "hello", 5, addr), 0);
    CHECK_EQ_INT(mithril_store_exists(s, addr), 1);
    CHECK_EQ_INT(mithril_store_delete(s, addr), 0);
    CHECK_EQ_INT(mithril_store_exists(s, addr), 0);
    CHECK_EQ_INT(mithril_store_get(s, addr, &back, &len), MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(mithril_store_delete(s, addr), MITHRIL_ENOTFOUND);
    CHECK_EQ_INT(mithril_store_get_fd(s, addr, 1), MITHRIL_ENOTFOUND);
    mithril_store_close(s);
}

static void
test_invalid_addresses(void)
{
    mithril_store *s = open_store("s-invalid");
    char good[MITHRIL_HEX_SIZE], bad[8][80];
    char out[PATH_MAX];
    mithril_blob_info info;
    void *back;
    size_t len, i, k;

    CHECK_EQ_INT(mithril_store_put(s, "x", 1, good), 0);
    snprintf(bad[0], 80, "../x");
    snprintf(bad[1], 80, "%s", good);
    for (k = 0; bad[1][k]; k++) {
        if (bad[1][k] >= 'a' && bad[1][k] <= 'f') {
            bad[1][k] = (char)(bad[1][k] - 'a' + 'A');
        }
    }
    snprintf(bad[2], 80, "%.63s", good);
    snprintf(bad[3], 80, "%s0", good);
    snprintf(bad[4], 80, "%s", good);
    bad[4][2] = '/';
    bad[5][0] = '\0';
    snprintf(bad[6], 80, "%.62s/.", good);
    snprintf(bad[7], 80, "%s", good);
    bad[7][10] = 'g';
    snprintf(out, sizeof(out), "%s/never", root);
    for (i = 0; i < 8; i++) {
        CHECK_EQ_INT(mithril_store_get(s, bad[i], &back, &len), MITHRIL_EINVAL);
        CHECK_EQ_INT(mithril_store_exists(s, bad[i]), MITHRIL_EINVAL);
        CHECK_EQ_INT(mithril_store_delete(s, bad[i]), MITHRIL_EINVAL);
        CHECK_EQ_INT(mithril_store_get_fd(s, bad[i], 1), MITHRIL_EINVAL);
        CHECK_EQ_INT(mithril_store_get_file(s, bad[i], out, 0644),
                     MITHRIL_EINVAL);
        CHECK_EQ_INT(mithril_store_blob_info(s, bad[i], &info), MITHRIL_EINVAL);
    }
    CHECK(access(out, F_OK) != 0);
    CHECK_EQ_INT(mithril_store_get(s, NULL, &back, &len), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_store_exists(s, good), 1);
    mithril_store_close(s);
}

/* Put content, damage its file with fn, check get refuses and moves it. */
static void
expect_corrupt(mithril_store *s, const uint8_t *data, size_t len,
               void (*damage)(mithril_store *, const char *))
{
    char addr[MITHRIL_HEX_SIZE];
    char out[PATH_MAX];
    void *back = NULL;
    size_t back_len = 12345;
    int fd;

    CHECK_EQ_INT(mithril_store_put(s, data, len, addr), 0);
    damage(s, addr);
    last_log[0] = '\0';
    CHECK_EQ_INT(mithril_store_get(s, addr, &back, &back_len),
                 MITHRIL_ECORRUPT);
    CHECK(back == NULL);
    CHECK_EQ_INT(back_len, 12345);
    CHECK(strstr(last_log, addr) != NULL);
    CHECK(quarantined(s, addr));
    CHECK_EQ_INT(mithril_store_exists(s, addr), 0);
    CHECK_EQ_INT(mithril_store_get(s, addr, &back, &back_len),
                 MITHRIL_ENOTFOUND);

    /* Put again (repaired), damage again; get_fd and get_file write none. */
    CHECK_EQ_INT(mithril_store_put(s, data, len, addr), 0);
    damage(s, addr);
    snprintf(out, sizeof(out), "%s/corrupt.out", root);
    fd = open(out, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK_EQ_INT(mithril_store_get_fd(s, addr, fd), MITHRIL_ECORRUPT);
    CHECK_EQ_INT(lseek(fd, 0, SEEK_END), 0);
    close(fd);
    unlink(out);
    CHECK_EQ_INT(mithril_store_put(s, data, len, addr), 0);
    damage(s, addr);
    CHECK_EQ_INT(mithril_store_get_file(s, addr, out, 0644), MITHRIL_ECORRUPT);
    CHECK(access(out, F_OK) != 0);
    CHECK(!has_temp(root));

    /* And a clean put serves the right bytes again. */
    roundtrip(s, data, len);
}

static void
damage_payload_middle(mithril_store *s, const char *addr)
{
    char path[PATH_MAX];
    struct stat st;

    mi_blob_path(s, addr, path);
    CHECK(stat(path, &st) == 0);
    flip_byte(s, addr, 16 + (st.st_size - 16) / 2);
}

static void
damage_magic(mithril_store *s, const char *addr)
{
    flip_byte(s, addr, 1);
}

static void
damage_size_field(mithril_store *s, const char *addr)
{
    flip_byte(s, addr, 8);
}

static void
damage_last_byte(mithril_store *s, const char *addr)
{
    flip_byte(s, addr, -1);
}

static void
damage_truncate(mithril_store *s, const char *addr)
{
    char path[PATH_MAX];
    struct stat st;

    mi_blob_path(s, addr, path);
    CHECK(stat(path, &st) == 0);
    CHECK(truncate(path, st.st_size - 3) == 0);
}

static void
damage_append(mithril_store *s, const char *addr)
{
    char path[PATH_MAX];
    int fd;

    mi_blob_path(s, addr, path);
    fd = open(path, O_WRONLY | O_APPEND);
    CHECK(write(fd, "zz", 2) == 2);
    close(fd);
}

static void
test_corruption(void)
{
    void (*damages[])(mithril_store *, const char *) = {
        damage_payload_middle, damage_magic,    damage_size_field,
        damage_last_byte,      damage_truncate, damage_append};
    mithril_store *s = open_store("s-corrupt");
    uint8_t *buf = malloc(300000);
    size_t i;

    mithril_set_log(keep_log, NULL, MITHRIL_LOG_DEBUG);
    for (i = 0; i < sizeof(damages) / sizeof(damages[0]); i++) {
        fill_text(buf, 300000, 100 + i); /* zstd */
        expect_corrupt(s, buf, 300000, damages[i]);
        fill_random(buf, 300000, 200 + i); /* raw */
        expect_corrupt(s, buf, 300000, damages[i]);
        fill_random(buf, 40, 300 + i); /* tiny raw */
        expect_corrupt(s, buf, 40, damages[i]);
    }
    mithril_set_log(NULL, NULL, MITHRIL_LOG_INFO);
    CHECK_EQ_INT(count_in(s, "tmp"), 0);
    free(buf);
    mithril_store_close(s);
}

static void
test_verify_off(void)
{
    mithril_store *s = open_store("s-noverify");
    uint8_t buf[1000];
    char addr[MITHRIL_HEX_SIZE];
    void *back = NULL;
    size_t len;

    fill_random(buf, sizeof(buf), 77);
    CHECK_EQ_INT(mithril_store_put(s, buf, sizeof(buf), addr), 0);
    flip_byte(s, addr, 500);
    mithril_store_set_verify(s, 0);
    /* Not hashed: the damaged bytes come back... */
    CHECK_EQ_INT(mithril_store_get(s, addr, &back, &len), 0);
    CHECK(len == sizeof(buf) && memcmp(back, buf, len) != 0);
    mithril_free(back);
    /* ...but the header is still checked. */
    flip_byte(s, addr, 0);
    CHECK_EQ_INT(mithril_store_get(s, addr, &back, &len), MITHRIL_ECORRUPT);
    mithril_store_close(s);
}

static void
test_get_file(void)
{
    mithril_store *s = open_store("s-getfile");
    char addr[MITHRIL_HEX_SIZE], out[PATH_MAX], dir[PATH_MAX / 2];
    struct stat st;
    uint8_t buf[5000], back[6000];
    int fd;

    fill_text(buf, sizeof(buf), 4);
    CHECK_EQ_INT(mithril_store_put(s, buf, sizeof(buf), addr), 0);
    snprintf(dir, sizeof(dir), "%s/getfile", root);
    CHECK_EQ_INT(mi_mkdirs(dir, 0700), 0);
    snprintf(out, sizeof(out), "%s/out.bin", dir);
    CHECK_EQ_INT(mithril_store_get_file(s, addr, out, 0755), 0);
    CHECK(stat(out, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0755);
    CHECK_EQ_INT(st.st_size, sizeof(buf));
    fd = open(out, O_RDONLY);
    CHECK_EQ_INT(mi_read_full(fd, back, sizeof(back)), sizeof(buf));
    CHECK(memcmp(back, buf, sizeof(buf)) == 0);
    close(fd);
    /* Overwrites atomically; nothing else left in the folder. */
    CHECK_EQ_INT(mithril_store_get_file(s, addr, out, 0600), 0);
    CHECK(stat(out, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);
    CHECK_EQ_INT(count_entries(dir), 1);
    mithril_store_close(s);
}

/* ---- injected faults ---- */

static int short_max;
static size_t budget;

static ssize_t
write_enospc(int fd, const void *buf, size_t n)
{
    errno = ENOSPC;
    return -1;
}

static ssize_t
write_short(int fd, const void *buf, size_t n)
{
    return write(fd, buf, n > (size_t)short_max ? (size_t)short_max : n);
}

/* Short writes until the disk "fills", then ENOSPC. */
static ssize_t
write_filling(int fd, const void *buf, size_t n)
{
    ssize_t w;

    if (budget == 0) {
        errno = ENOSPC;
        return -1;
    }
    if (n > budget) {
        n = budget;
    }
    if (n > 4000) {
        n = 4000;
    }
    w = write(fd, buf, n);
    if (w > 0) {
        budget -= (size_t)w;
    }
    return w;
}

static int
fsync_eio(int fd)
{
    errno = EIO;
    return -1;
}

static ssize_t
pwrite_eio(int fd, const void *buf, size_t n, off_t off)
{
    errno = EIO;
    return -1;
}

/* File size of blob addr in store s, or -1. */
static long long
blob_file_size(mithril_store *s, const char *addr)
{
    char path[PATH_MAX];
    struct stat st;

    mi_blob_path(s, addr, path);
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/*
 * Encoded puts (the remote and archive paths): stored as given, large ones
 * with O_DIRECT, read back verified; a tmpfs store takes the buffered way.
 */
static void
check_encoded_in(mithril_store *s)
{
    size_t n = 3 * MIB + 123;
    uint8_t *raw = malloc(n);
    uint8_t *text = malloc(n);
    uint8_t *z = malloc(ZSTD_compressBound(n));
    uint8_t *staged = NULL;
    char a_raw[MITHRIL_HEX_SIZE], a_text[MITHRIL_HEX_SIZE];
    char a_small[MITHRIL_HEX_SIZE], a_staged[MITHRIL_HEX_SIZE];
    void *back = NULL;
    size_t len = 0;
    size_t zn;

    fill_random(raw, n, 71);
    fill_text(text, n, 72);
    addr_of(raw, n, a_raw);
    addr_of(text, n, a_text);
    addr_of(raw, 1000, a_small);
    zn = ZSTD_compress(z, ZSTD_compressBound(n), text, n, 1);
    CHECK(!ZSTD_isError(zn) && zn < n);

    /* Raw, over the direct threshold, not a multiple of the block size. */
    CHECK_EQ_INT(mi_store_put_encoded(s, a_raw, 0, raw, n, n, NULL), 0);
    CHECK(blob_file_size(s, a_raw) == (long long)(16 + n));
    CHECK_EQ_INT(mithril_store_get(s, a_raw, &back, &len), 0);
    CHECK(len == n && memcmp(back, raw, n) == 0);
    mithril_free(back);
    /* Present: nothing written again. */
    CHECK_EQ_INT(mi_store_put_encoded(s, a_raw, 0, raw, n, n, NULL), 0);

    /* A zstd frame is kept as it is. */
    CHECK_EQ_INT(mi_store_put_encoded(s, a_text, 1, z, zn, n, NULL), 0);
    CHECK(blob_file_size(s, a_text) == (long long)(16 + zn));
    CHECK_EQ_INT(mithril_store_get(s, a_text, &back, &len), 0);
    CHECK(len == n && memcmp(back, text, n) == 0);
    mithril_free(back);

    /* Small: buffered. */
    CHECK_EQ_INT(mi_store_put_encoded(s, a_small, 0, raw, 1000, 1000, NULL), 0);
    CHECK_EQ_INT(mithril_store_get(s, a_small, &back, &len), 0);
    CHECK(len == 1000 && memcmp(back, raw, 1000) == 0);
    mithril_free(back);

    /* Staged: the payload already sits after the header's room. */
    CHECK_EQ_INT(posix_memalign((void **)&staged, 4096, 16 + 2 * MIB), 0);
    memcpy(staged + 16, text, 2 * MIB);
    memset(staged, 0xee, 16);
    addr_of(text, 2 * MIB, a_staged);
    CHECK_EQ_INT(
        mi_store_put_staged(s, a_staged, 0, staged + 1, 2 * MIB, 2 * MIB, NULL),
        MITHRIL_EINVAL);
    CHECK_EQ_INT(
        mi_store_put_staged(s, a_staged, 0, staged, 2 * MIB, 2 * MIB, NULL), 0);
    CHECK_EQ_INT(mithril_store_get(s, a_staged, &back, &len), 0);
    CHECK(len == 2 * MIB && memcmp(back, text, len) == 0);
    mithril_free(back);

    /* Bad arguments touch nothing. */
    CHECK_EQ_INT(mi_store_put_encoded(s, "nothex", 0, raw, 10, 10, NULL),
                 MITHRIL_EINVAL);
    CHECK_EQ_INT(mi_store_put_encoded(s, a_small, 0, raw, 10, 11, NULL),
                 MITHRIL_EINVAL);
    CHECK_EQ_INT(count_in(s, "tmp"), 0);

    free(staged);
    free(z);
    free(text);
    free(raw);
}

static void
test_put_encoded(void)
{
    uint8_t *buf = malloc(MIB);
    char addr[MITHRIL_HEX_SIZE];
    char shm[] = "/dev/shm/mithril-test-XXXXXX";
    mithril_store *s = open_store("s-encoded");
    mithril_store *t = NULL;
    void *back = NULL;
    size_t len;

    check_encoded_in(s);

    /* A caller that lies about the address is caught on read. */
    fill_random(buf, MIB, 81);
    addr_of(buf, MIB, addr);
    buf[5] ^= 1;
    CHECK_EQ_INT(mi_store_put_encoded(s, addr, 0, buf, MIB, MIB, NULL), 0);
    CHECK_EQ_INT(mithril_store_get(s, addr, &back, &len), MITHRIL_ECORRUPT);
    CHECK_EQ_INT(mithril_store_exists(s, addr), 0);

    /* Failures on the direct path leave no temp file and no blob. */
    mi_sys.pwrite = pwrite_eio;
    CHECK_EQ_INT(mi_store_put_encoded(s, addr, 0, buf, MIB, MIB, NULL), -EIO);
    mi_sys_reset();
    mi_sys.fsync = fsync_eio;
    CHECK_EQ_INT(mi_store_put_encoded(s, addr, 0, buf, MIB, MIB, NULL), -EIO);
    mi_sys_reset();
    CHECK_EQ_INT(count_in(s, "tmp"), 0);
    CHECK_EQ_INT(mithril_store_exists(s, addr), 0);
    mithril_store_close(s);

    /* tmpfs refuses O_DIRECT: the same puts go the buffered way. */
    if (mkdtemp(shm)) {
        CHECK_EQ_INT(mithril_store_open(shm, MITHRIL_OPEN_CREATE, &t), 0);
        if (t) {
            check_encoded_in(t);
            mithril_store_close(t);
        }
        check_rmrf(shm);
    }
    free(buf);
}

static void
test_fault_injection(void)
{
    mithril_store *s = open_store("s-faults");
    char addr[MITHRIL_HEX_SIZE], want[MITHRIL_HEX_SIZE];
    char path[PATH_MAX];
    uint8_t *buf = malloc(3 * MIB);
    void *back = NULL;
    size_t len;
    int fd;

    fill_random(buf, 3 * MIB, 31);
    addr_of(buf, 3 * MIB, want);
    strcpy(addr, "unchanged");

    /* Disk full from the first byte. */
    mi_sys.write = write_enospc;
    CHECK_EQ_INT(mithril_store_put(s, buf, 3 * MIB, addr), -ENOSPC);
    mi_sys_reset();
    CHECK_EQ_STR(addr, "unchanged");
    CHECK_EQ_INT(count_in(s, "tmp"), 0);
    CHECK_EQ_INT(mithril_store_exists(s, want), 0);

    /* Fills up part way through, with short writes before. */
    budget = MIB + 333;
    mi_sys.write = write_filling;
    CHECK_EQ_INT(mithril_store_put(s, buf, 3 * MIB, addr), -ENOSPC);
    mi_sys_reset();
    CHECK_EQ_INT(count_in(s, "tmp"), 0);
    CHECK_EQ_INT(mithril_store_exists(s, want), 0);

    /* Same through put_file (the streaming path). */
    snprintf(path, sizeof(path), "%s/faults.in", root);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    CHECK_EQ_INT(mi_write_all(fd, buf, 3 * MIB), 0);
    close(fd);
    budget = 2 * MIB;
    mi_sys.write = write_filling;
    CHECK_EQ_INT(mithril_store_put_file(s, path, addr), -ENOSPC);
    mi_sys_reset();
    CHECK_EQ_INT(count_in(s, "tmp"), 0);

    /* EIO from fsync and from the header's pwrite. */
    mi_sys.fsync = fsync_eio;
    CHECK_EQ_INT(mithril_store_put(s, buf, 3 * MIB, addr), -EIO);
    mi_sys_reset();
    mi_sys.pwrite = pwrite_eio;
    CHECK_EQ_INT(mithril_store_put_file(s, path, addr), -EIO);
    mi_sys_reset();
    CHECK_EQ_INT(count_in(s, "tmp"), 0);
    CHECK_EQ_INT(mithril_store_exists(s, want), 0);

    /* Short writes alone are not an error. */
    short_max = 1000;
    mi_sys.write = write_short;
    CHECK_EQ_INT(mithril_store_put(s, buf, 300000, addr), 0);
    mi_sys_reset();
    CHECK_EQ_INT(mithril_store_get(s, addr, &back, &len), 0);
    CHECK(len == 300000 && memcmp(back, buf, len) == 0);
    mithril_free(back);

    /* After the reset the store works. */
    CHECK_EQ_INT(mithril_store_put_file(s, path, addr), 0);
    CHECK_EQ_STR(addr, want);
    CHECK_EQ_INT(mithril_store_get(s, addr, &back, &len), 0);
    CHECK(len == 3 * MIB && memcmp(back, buf, len) == 0);
    mithril_free(back);
    CHECK_EQ_INT(count_in(s, "tmp"), 0);
    unlink(path);
    free(buf);
    mithril_store_close(s);
}

/* ---- processes and threads ---- */

static void
test_processes_same_content(void)
{
    char dir[PATH_MAX];
    char addr[MITHRIL_HEX_SIZE], want[MITHRIL_HEX_SIZE];
    uint8_t *buf = malloc(3 * MIB);
    mithril_store *s;
    void *back = NULL;
    size_t len;
    pid_t pids[4];
    int i, k, status, ok = 1;

    fill_text(buf, 3 * MIB, 55);
    addr_of(buf, 3 * MIB, want);
    snprintf(dir, sizeof(dir), "%s/s-procs", root);
    for (i = 0; i < 4; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            mithril_store *c = NULL;
            char a[MITHRIL_HEX_SIZE];
            char fpath[PATH_MAX];
            int fd, rc;

            if (mithril_store_open(dir, MITHRIL_OPEN_CREATE, &c) < 0) {
                _exit(10);
            }
            snprintf(fpath, sizeof(fpath), "%s/procs.%d", root, i);
            fd = open(fpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
            mi_write_all(fd, buf, 3 * MIB);
            for (k = 0; k < 10; k++) {
                /* Memory and streamed puts, racing to publish. */
                if (mithril_store_put(c, buf, 3 * MIB, a) < 0 ||
                    strcmp(a, want) != 0) {
                    _exit(11);
                }
                lseek(fd, 0, SEEK_SET);
                if (mithril_store_put_fd(c, fd, a) < 0 ||
                    strcmp(a, want) != 0) {
                    _exit(12);
                }
                /* Deletes race too: absent is a fine answer. */
                rc = k % 3 == 2 ? mithril_store_delete(c, a) : 0;
                if (rc < 0 && rc != MITHRIL_ENOTFOUND) {
                    _exit(13);
                }
            }
            close(fd);
            unlink(fpath);
            mithril_store_close(c);
            _exit(0);
        }
    }
    for (i = 0; i < 4; i++) {
        waitpid(pids[i], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %d: status %d\n", i, status);
            ok = 0;
        }
    }
    CHECK(ok);
    s = open_store("s-procs");
    CHECK_EQ_INT(mithril_store_put(s, buf, 3 * MIB, addr), 0);
    CHECK_EQ_INT(mithril_store_get(s, addr, &back, &len), 0);
    CHECK(len == 3 * MIB && memcmp(back, buf, len) == 0);
    mithril_free(back);
    CHECK_EQ_INT(count_in(s, "tmp"), 0);
    free(buf);
    mithril_store_close(s);
}

struct thread_arg {
    mithril_store *s;
    int id;
    int errors;
};

static void *
thread_main(void *p)
{
    struct thread_arg *t = p;
    uint8_t *buf = malloc(200000);
    char addr[MITHRIL_HEX_SIZE], want[MITHRIL_HEX_SIZE];
    void *back;
    size_t len, n;
    int k;

    for (k = 0; k < 40; k++) {
        /* Half the content shared by all threads, half private. */
        n = 1000 + (size_t)(k * 4099) % 190000;
        fill_text(buf, n, k % 2 ? (uint64_t)k : (uint64_t)(1000 * t->id + k));
        addr_of(buf, n, want);
        if (mithril_store_put(t->s, buf, n, addr) < 0 ||
            strcmp(addr, want) != 0) {
            t->errors++;
            continue;
        }
        if (mithril_store_get(t->s, addr, &back, &len) < 0) {
            t->errors++;
            continue;
        }
        if (len != n || memcmp(back, buf, n) != 0) {
            t->errors++;
        }
        mithril_free(back);
    }
    free(buf);
    return NULL;
}

static void
test_threads_one_handle(void)
{
    mithril_store *s = open_store("s-threads");
    pthread_t th[6];
    struct thread_arg args[6];
    int i;

    for (i = 0; i < 6; i++) {
        args[i].s = s;
        args[i].id = i;
        args[i].errors = 0;
        CHECK(pthread_create(&th[i], NULL, thread_main, &args[i]) == 0);
    }
    for (i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(args[i].errors, 0);
    }
    CHECK_EQ_INT(count_in(s, "tmp"), 0);
    mithril_store_close(s);
}

/* ---- opening ---- */

static void
test_open_layout_and_safety(void)
{
    char dir[PATH_MAX / 2], path[PATH_MAX];
    mithril_store *s = NULL;
    struct stat st;
    int fd;

    snprintf(dir, sizeof(dir), "%s/s-open/nested/store", root);
    CHECK_EQ_INT(mithril_store_open(dir, MITHRIL_OPEN_NO_CONFIG, &s), -ENOENT);
    CHECK_EQ_INT(mithril_store_open(dir, MITHRIL_OPEN_CREATE, &s), 0);
    CHECK(stat(dir, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0700);
    snprintf(path, sizeof(path), "%s/VERSION", dir);
    CHECK(stat(path, &st) == 0);
    CHECK_EQ_INT(st.st_mode & 0777, 0600);
    CHECK(mithril_store_dir(s)[0] == '/');
    mithril_store_close(s);

    /* Writable by others or by group: refused. */
    chmod(dir, 0777);
    CHECK_EQ_INT(mithril_store_open(dir, 0, &s), MITHRIL_EUNSAFE);
    chmod(dir, 0720);
    CHECK_EQ_INT(mithril_store_open(dir, 0, &s), MITHRIL_EUNSAFE);
    /* Readable by others is the owner's choice. */
    chmod(dir, 0755);
    CHECK_EQ_INT(mithril_store_open(dir, 0, &s), 0);
    mithril_store_close(s);
    chmod(dir, 0700);
    if (geteuid() == 0) {
        CHECK(chown(dir, 65534, 65534) == 0);
        CHECK_EQ_INT(mithril_store_open(dir, 0, &s), MITHRIL_EUNSAFE);
        CHECK(chown(dir, 0, 0) == 0);
    }

    /* Another format version: refused. */
    fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(write(fd, "mithril-store 2\n", 16) == 16);
    close(fd);
    CHECK_EQ_INT(mithril_store_open(dir, 0, &s), MITHRIL_EFORMAT);
    fd = open(path, O_WRONLY | O_TRUNC);
    CHECK(write(fd, "mithril-store 1\n", 16) == 16);
    close(fd);
    CHECK_EQ_INT(mithril_store_open(dir, 0, &s), 0);
    mithril_store_close(s);

    CHECK_EQ_INT(mithril_store_open(NULL, 0, &s), MITHRIL_EINVAL);
    CHECK_EQ_INT(mithril_store_open(dir, 0x100, &s), MITHRIL_EINVAL);
}

static void
test_read_only(void)
{
    char dir[PATH_MAX], addr[MITHRIL_HEX_SIZE], a2[MITHRIL_HEX_SIZE];
    mithril_store *s = open_store("s-ro"), *ro = NULL;
    void *back;
    size_t len;

    CHECK_EQ_INT(mithril_store_put(s, "abc", 3, addr), 0);
    mithril_store_close(s);
    snprintf(dir, sizeof(dir), "%s/s-ro", root);
    CHECK_EQ_INT(mithril_store_open(dir, MITHRIL_OPEN_READONLY, &ro), 0);
    CHECK_EQ_INT(mithril_store_put(ro, "abcd", 4, a2), MITHRIL_ERDONLY);
    CHECK_EQ_INT(mithril_store_put_fd(ro, 0, a2), MITHRIL_ERDONLY);
    CHECK_EQ_INT(mithril_store_delete(ro, addr), MITHRIL_ERDONLY);
    CHECK_EQ_INT(mithril_store_get(ro, addr, &back, &len), 0);
    CHECK(len == 3 && memcmp(back, "abc", 3) == 0);
    mithril_free(back);
    mithril_store_close(ro);
}

static void
test_default_dir(void)
{
    char buf[PATH_MAX], small[8];
    char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL;

    setenv("MITHRIL_DIR", "/x/mithril-dir", 1);
    CHECK_EQ_INT(mithril_default_dir(buf, sizeof(buf)), 0);
    CHECK_EQ_STR(buf, "/x/mithril-dir");
    CHECK_EQ_INT(mithril_default_dir(small, sizeof(small)), MITHRIL_ETOOBIG);
    unsetenv("MITHRIL_DIR");
    setenv("XDG_CACHE_HOME", "/x/cache", 1);
    CHECK_EQ_INT(mithril_default_dir(buf, sizeof(buf)), 0);
    CHECK_EQ_STR(buf, "/x/cache/mithril");
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", "/x/home", 1);
    CHECK_EQ_INT(mithril_default_dir(buf, sizeof(buf)), 0);
    CHECK_EQ_STR(buf, "/x/home/.cache/mithril");
    unsetenv("HOME");
    CHECK_EQ_INT(mithril_default_dir(buf, sizeof(buf)), MITHRIL_EINVAL);
    if (home) {
        setenv("HOME", home, 1);
        free(home);
    }
}

int
main(void)
{
    root = check_tmpdir();
    unsetenv("MITHRIL_DIR");
    RUN(test_stream_64mib_bounded_memory);
    RUN(test_roundtrip_sizes);
    RUN(test_empty_content);
    RUN(test_codec_choice);
    RUN(test_dedupe);
    RUN(test_put_fd_pipe);
    RUN(test_exists_delete);
    RUN(test_invalid_addresses);
    RUN(test_corruption);
    RUN(test_verify_off);
    RUN(test_get_file);
    RUN(test_fault_injection);
    RUN(test_put_encoded);
    RUN(test_processes_same_content);
    RUN(test_threads_one_handle);
    RUN(test_open_layout_and_safety);
    RUN(test_read_only);
    RUN(test_default_dir);
    check_rmrf(root);
    free(root);
    return check_report();
}
