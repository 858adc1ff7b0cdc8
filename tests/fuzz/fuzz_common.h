/*
 * fuzz_common.h - helpers shared by the libFuzzer targets: a private
 * scratch folder per fuzzing process (removed at exit), writing a file,
 * and a log sink that drops the library's messages.
 */
#ifndef MITHRIL_FUZZ_COMMON_H
#define MITHRIL_FUZZ_COMMON_H

#include "mithril/mithril.h"

#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char fuzz_root[PATH_MAX];

static void
fuzz_cleanup(void)
{
    char cmd[PATH_MAX + 16];

    if (fuzz_root[0] && snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fuzz_root) <
                            (int)sizeof(cmd)) {
        if (system(cmd) != 0) {
            fprintf(stderr, "could not remove %s\n", fuzz_root);
        }
    }
}

/* A scratch folder under $TMPDIR for this process; "" on failure. */
static const char *
fuzz_scratch(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

    if (!fuzz_root[0]) {
        if (snprintf(fuzz_root, sizeof(fuzz_root), "%s/mithril-fuzz-XXXXXX",
                     base) >= (int)sizeof(fuzz_root) ||
            !mkdtemp(fuzz_root)) {
            abort();
        }
        atexit(fuzz_cleanup);
    }
    return fuzz_root;
}

static void
fuzz_write(const char *path, const uint8_t *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    if (fd < 0) {
        abort();
    }
    while (n > 0) {
        ssize_t w = write(fd, data, n);

        if (w <= 0) {
            abort();
        }
        data += w;
        n -= (size_t)w;
    }
    close(fd);
}

/* Copy data into a NUL-terminated string (caller frees). */
static char *
fuzz_strndup(const uint8_t *data, size_t n)
{
    char *s = malloc(n + 1);

    if (!s) {
        abort();
    }
    memcpy(s, data, n);
    s[n] = '\0';
    return s;
}

#endif /* MITHRIL_FUZZ_COMMON_H */
