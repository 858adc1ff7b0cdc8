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
 *
 * With --check, the arguments are check files holding such lines (what
 * this command or b3sum printed); each named file is hashed to the length
 * of its hex and reported "<name>: OK" or "<name>: FAILED".
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
    int check;
    int quiet; /* --quiet: with --check, print failures only */
    size_t out_len;
};

static void
usage(FILE *out)
{
    fprintf(out, "usage: mithril hash [--no-names] [-l LEN] [FILE...]\n"
                 "       mithril hash -c [--quiet] [CHECKFILE...]\n"
                 "Print the BLAKE3 hash of each FILE (standard input when "
                 "none, or '-'),\nas b3sum does: '<hex>  <name>'.\n"
                 "  -l, --length LEN  output bytes before hex (default 32)\n"
                 "      --no-names    print the hashes alone\n"
                 "  -c, --check       read '<hex>  <name>' lines (as this "
                 "command prints them)\n"
                 "                    and check each named file: "
                 "'<name>: OK' or 'FAILED'\n"
                 "      --quiet       with --check, print failures only\n");
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

/* 1 when name must be escaped in a line: it holds '\\' or a newline. */
static int
needs_escape(const char *name)
{
    return strchr(name, '\\') || strchr(name, '\n');
}

/* Write name with '\\' as "\\\\" and newline as "\\n". */
static void
put_escaped(const char *name)
{
    const char *c;

    for (c = name; *c; c++) {
        if (*c == '\\') {
            fputs("\\\\", stdout);
        } else if (*c == '\n') {
            fputs("\\n", stdout);
        } else {
            putchar(*c);
        }
    }
}

/* Print name as b3sum does (after a leading backslash when escaped). */
static void
print_line(const char *hex, const char *name, const struct hash_opts *o)
{
    if (o->no_names) {
        printf("%s\n", hex);
        return;
    }
    if (!needs_escape(name)) {
        printf("%s  %s\n", hex, name);
        return;
    }
    printf("\\%s  ", hex);
    put_escaped(name);
    putchar('\n');
}

/* A --check verdict: "<name>: OK", escaped as b3sum does. */
static void
print_verdict(const char *name, const char *verdict)
{
    if (needs_escape(name)) {
        putchar('\\');
        put_escaped(name);
    } else {
        fputs(name, stdout);
    }
    printf(": %s\n", verdict);
}

/*
 * Hash one named input ("-" is standard input) into out (out_len bytes);
 * CLI_OK, or CLI_FAIL after reporting why.
 */
static int
hash_path(const char *path, uint8_t *buf, uint8_t *out, size_t out_len)
{
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
    rc = hash_fd(fd, buf, out, out_len);
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
    return CLI_OK;
}

/* Hash one named input and print its line; CLI_OK or CLI_FAIL. */
static int
hash_one(const char *path, uint8_t *buf, const struct hash_opts *o)
{
    uint8_t out[MAX_LEN];
    char hex[2 * MAX_LEN + 1];

    if (hash_path(path, buf, out, o->out_len) != CLI_OK) {
        return CLI_FAIL;
    }
    mithril_hex(out, o->out_len, hex);
    print_line(hex, path, o);
    return CLI_OK;
}

/*
 * Split one line of a check file, "<hex>  <name>" or, escaped,
 * "\\<hex>  <name with \\\\ and \\n>", in place: *hex and *name point
 * into line (name unescaped). 0, or -1 when the line is malformed.
 */
static int
parse_check_line(char *line, char **hex, char **name)
{
    int escaped = line[0] == '\\';
    char *h = line + escaped, *sep, *r, *w;
    size_t n;

    sep = strstr(h, "  ");
    if (!sep) {
        return -1;
    }
    n = (size_t)(sep - h);
    if (n == 0 || n % 2 || n > 2 * MAX_LEN ||
        strspn(h, "0123456789abcdef") != n) {
        return -1;
    }
    *sep = '\0';
    *hex = h;
    *name = sep + 2;
    if (!**name) {
        return -1;
    }
    if (!escaped) {
        return 0;
    }
    for (r = w = *name; *r; r++, w++) {
        if (*r == '\\') {
            r++;
            if (*r == '\\') {
                *w = '\\';
            } else if (*r == 'n') {
                *w = '\n';
            } else {
                return -1;
            }
        } else {
            *w = *r;
        }
    }
    *w = '\0';
    return 0;
}

/*
 * Check the lines of one check file ("-": standard input) as b3sum
 * --check does: "<name>: OK" or "<name>: FAILED" for each. Adds the
 * files that did not match or could not be read to *failed; CLI_FAIL
 * also when the check file cannot be read or a line is malformed.
 */
static int
check_one(const char *list, uint8_t *buf, int quiet, unsigned long *failed)
{
    uint8_t want[MAX_LEN], got[MAX_LEN];
    char *line = NULL, *hex, *name;
    size_t cap = 0, out_len;
    unsigned long lineno = 0;
    ssize_t n;
    FILE *f;
    int status = CLI_OK;

    f = strcmp(list, "-") == 0 ? stdin : fopen(list, "re");
    if (!f) {
        cli_error("cannot read", list, -errno);
        return CLI_FAIL;
    }
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (n > 0 && line[n - 1] == '\n') {
            line[--n] = '\0';
        }
        if (n == 0) {
            continue;
        }
        if (parse_check_line(line, &hex, &name) < 0) {
            fprintf(stderr,
                    "mithril: error: %s:%lu: malformed line (want "
                    "'<hex>  <name>')\n",
                    list, lineno);
            status = CLI_FAIL;
            continue;
        }
        out_len = strlen(hex) / 2;
        if (mithril_unhex(hex, want, out_len) < 0) {
            fprintf(stderr, "mithril: error: %s:%lu: bad hex\n", list, lineno);
            status = CLI_FAIL;
            continue;
        }
        if (hash_path(name, buf, got, out_len) != CLI_OK ||
            memcmp(want, got, out_len) != 0) {
            print_verdict(name, "FAILED");
            (*failed)++;
        } else if (!quiet) {
            print_verdict(name, "OK");
        }
    }
    if (ferror(f)) {
        cli_error("cannot read", list, -EIO);
        status = CLI_FAIL;
    }
    free(line);
    if (f != stdin) {
        fclose(f);
    }
    return status;
}

int
cmd_hash(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"no-names", no_argument, 0, 'N'},
        {"length", required_argument, 0, 'l'},
        {"check", no_argument, 0, 'c'},
        CLI_COMMON_OPTIONS,
        {0, 0, 0, 0},
    };
    struct hash_opts o = {0, 0, 0, MITHRIL_BLAKE3_OUT_LEN};
    unsigned long failed = 0;
    uint8_t *buf;
    char *end;
    int opt, i, status = CLI_OK;
    unsigned long len;

    while ((opt = getopt_long(argc, argv, "l:cqh", longopts, NULL)) != -1) {
        if (opt == 'N') {
            o.no_names = 1;
        } else if (opt == 'c') {
            o.check = 1;
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

    /* Page-aligned: the hash's wide loads never straddle a page. */
    if (posix_memalign((void **)&buf, 4096, READ_BUF) != 0) {
        buf = NULL;
    }
    if (!buf) {
        cli_error("cannot allocate", "", -ENOMEM);
        return CLI_FAIL;
    }
    o.quiet = cli.quiet;
    if (o.check) {
        if (optind >= argc) {
            status = check_one("-", buf, o.quiet, &failed);
        }
        for (i = optind; i < argc; i++) {
            if (check_one(argv[i], buf, o.quiet, &failed) != CLI_OK) {
                status = CLI_FAIL;
            }
        }
        if (failed) {
            fprintf(stderr, "mithril: %lu file%s did not match\n", failed,
                    failed == 1 ? "" : "s");
            status = CLI_FAIL;
        }
    } else {
        if (optind >= argc) {
            status = hash_one("-", buf, &o);
        }
        for (i = optind; i < argc; i++) {
            if (hash_one(argv[i], buf, &o) != CLI_OK) {
                status = CLI_FAIL;
            }
        }
    }
    free(buf);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_error("cannot write", "<stdout>", errno ? -errno : -EIO);
        status = CLI_FAIL;
    }
    return status;
}
