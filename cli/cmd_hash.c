/*
 * cmd_hash.c - `mithril hash [FILE...]`: the BLAKE3 address of each file,
 * printed the way b3sum prints it ("<64 hex>  <name>"), so the two can be
 * compared byte for byte. No FILE, or "-", reads standard input.
 *
 * Files are streamed, never held whole: a regular file is mapped in
 * windows of MAP_WINDOW bytes (no copy), anything else (pipes, terminals,
 * a file that cannot be mapped) is read READ_BUF bytes at a time. A file
 * that cannot be read is reported and the rest are still hashed; the
 * exit status is then CLI_FAIL. A mapped file cut short while it is being
 * hashed is reported too (SIGBUS is caught around the hashing).
 *
 * Names holding a backslash or a newline are escaped as b3sum does: the
 * line starts with a backslash, and those characters become "\\" and "\n".
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_BUF   (1024 * 1024)
#define MAP_WINDOW ((size_t)64 * 1024 * 1024)
/* Smaller regular files are read: mapping them costs more than copying. */
#define MAP_MIN (256 * 1024)
#define MAX_LEN 4096
/* hash_fd's results besides 0 and -errno. */
#define MAP_UNUSED   1
#define FILE_CHANGED 2

struct hash_opts {
    int no_names;
    size_t out_len;
};

static void
usage(FILE *out)
{
    fprintf(out, "usage: mithril hash [--no-names] [-l LEN] [FILE...]\n"
                 "Print the BLAKE3 hash of each FILE (standard input when "
                 "none, or '-'),\nas b3sum does: '<hex>  <name>'.\n"
                 "  -l, --length LEN  output bytes before hex (default 32)\n"
                 "      --no-names    print the hashes alone\n");
}

/*
 * Read fd to its end into h; 0 or -errno. The buffer is filled before
 * each update (pipes hand out 64 KiB or less at a time), so that updates
 * come in whole chunks and take the wide SIMD path.
 */
static int
hash_by_read(int fd, mithril_blake3 *h, uint8_t *buf)
{
    size_t have = 0;
    ssize_t n;

    for (;;) {
        n = read(fd, buf + have, READ_BUF - have);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        have += (size_t)n;
        if (n == 0 || have == READ_BUF) {
            mithril_blake3_update(h, buf, have);
            if (n == 0) {
                return 0;
            }
            have = 0;
        }
    }
}

/*
 * A mapped file that shrinks under us raises SIGBUS on the missing pages.
 * While a window is being hashed, the handler jumps back to hash_by_map,
 * which reports the file as changed instead of the process dying.
 */
static sigjmp_buf bus_jump;
static volatile sig_atomic_t bus_armed;

static void
on_sigbus(int sig)
{
    if (bus_armed) {
        siglongjmp(bus_jump, 1);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

/*
 * Hash a regular file of size bytes by mapping it window by window.
 * Returns 0, -errno, FILE_CHANGED, or MAP_UNUSED when mapping failed
 * before anything was hashed (the caller then reads instead).
 */
static int
hash_by_map(int fd, uint64_t size, mithril_blake3 *h)
{
    struct sigaction sa, old_sa;
    static void *volatile p;
    static volatile size_t len;
    volatile uint64_t off = 0;
    int rc = 0;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigbus;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &old_sa);
    if (sigsetjmp(bus_jump, 1)) {
        bus_armed = 0;
        munmap(p, len);
        rc = FILE_CHANGED;
        goto out;
    }
    while (off < size) {
        len = size - off < MAP_WINDOW ? (size_t)(size - off) : MAP_WINDOW;
        p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, (off_t)off);
        if (p == MAP_FAILED) {
            rc = off == 0 ? MAP_UNUSED : -errno;
            goto out;
        }
        madvise(p, len, MADV_SEQUENTIAL);
        bus_armed = 1;
        mithril_blake3_update(h, p, len);
        bus_armed = 0;
        munmap(p, len);
        off += len;
    }
out:
    sigaction(SIGBUS, &old_sa, NULL);
    return rc;
}

/* Hash the open fd into out; 0, -errno or FILE_CHANGED. */
static int
hash_fd(int fd, uint8_t *buf, uint8_t *out, size_t out_len)
{
    mithril_blake3 h;
    struct stat st;
    int rc = MAP_UNUSED;

    mithril_blake3_init(&h);
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= MAP_MIN) {
        rc = hash_by_map(fd, (uint64_t)st.st_size, &h);
        if (rc == MAP_UNUSED) {
            mithril_blake3_init(&h);
        }
    }
    if (rc == MAP_UNUSED) {
        rc = hash_by_read(fd, &h, buf);
    }
    if (rc == 0) {
        mithril_blake3_finalize(&h, out, out_len);
    }
    return rc;
}

/* Print name as b3sum does (after a leading backslash when escaped). */
static void
print_line(const char *hex, const char *name, const struct hash_opts *o)
{
    const char *c;

    if (o->no_names) {
        printf("%s\n", hex);
        return;
    }
    if (!strchr(name, '\\') && !strchr(name, '\n')) {
        printf("%s  %s\n", hex, name);
        return;
    }
    printf("\\%s  ", hex);
    for (c = name; *c; c++) {
        if (*c == '\\') {
            fputs("\\\\", stdout);
        } else if (*c == '\n') {
            fputs("\\n", stdout);
        } else {
            putchar(*c);
        }
    }
    putchar('\n');
}

/* Hash one named input ("-" is standard input); CLI_OK or CLI_FAIL. */
static int
hash_one(const char *path, uint8_t *buf, const struct hash_opts *o)
{
    uint8_t out[MAX_LEN];
    char hex[2 * MAX_LEN + 1];
    int fd, rc;

    if (strcmp(path, "-") == 0) {
        fd = STDIN_FILENO;
    } else {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            cli_error("cannot read", path, -errno);
            return CLI_FAIL;
        }
    }
    rc = hash_fd(fd, buf, out, o->out_len);
    if (fd != STDIN_FILENO) {
        close(fd);
    }
    if (rc == FILE_CHANGED) {
        fprintf(stderr,
                "mithril: error: cannot read '%s': file shrank while "
                "being read\n",
                path);
        return CLI_FAIL;
    }
    if (rc < 0) {
        cli_error("cannot read", path, rc);
        return CLI_FAIL;
    }
    mithril_hex(out, o->out_len, hex);
    print_line(hex, path, o);
    return CLI_OK;
}

int
cmd_hash(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"no-names", no_argument, 0, 'N'},
        {"length", required_argument, 0, 'l'},
        CLI_COMMON_OPTIONS,
        {0, 0, 0, 0},
    };
    struct hash_opts o = {0, MITHRIL_BLAKE3_OUT_LEN};
    uint8_t *buf;
    char *end;
    int opt, i, status = CLI_OK;
    unsigned long len;

    while ((opt = getopt_long(argc, argv, "l:qh", longopts, NULL)) != -1) {
        if (opt == 'N') {
            o.no_names = 1;
        } else if (opt == 'l') {
            errno = 0;
            len = strtoul(optarg, &end, 10);
            if (errno || *end || end == optarg || len == 0 || len > MAX_LEN) {
                return cli_usage("hash", "bad length '%s' (1 to %d)", optarg,
                                 MAX_LEN);
            }
            o.out_len = (size_t)len;
        } else if (opt == 'h') {
            usage(stdout);
            return CLI_OK;
        } else if (!cli_common_opt(opt, optarg)) {
            usage(stderr);
            return CLI_USAGE;
        }
    }

    buf = malloc(READ_BUF);
    if (!buf) {
        cli_error("cannot allocate", "", -ENOMEM);
        return CLI_FAIL;
    }
    if (optind >= argc) {
        status = hash_one("-", buf, &o);
    }
    for (i = optind; i < argc; i++) {
        if (hash_one(argv[i], buf, &o) != CLI_OK) {
            status = CLI_FAIL;
        }
    }
    free(buf);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_error("cannot write", "<stdout>", errno ? -errno : -EIO);
        status = CLI_FAIL;
    }
    return status;
}
