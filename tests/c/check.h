/*
 * check.h - the C unit tests' harness: CHECK macros that report file, line
 * and the failed expression, a test runner, and scratch folders. Each test
 * program ends by printing "N passed, N failed" (a line CI can read) and
 * exits non-zero on any failure.
 */
#ifndef MITHRIL_CHECK_H
#define MITHRIL_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int check_failures;
static int check_passed;
static int check_failed;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            check_failures++;                                                  \
        }                                                                      \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                     \
    do {                                                                       \
        long long check_a = (long long)(a), check_b = (long long)(b);          \
        if (check_a != check_b) {                                              \
            fprintf(stderr, "%s:%d: check failed: %s == %s (%lld != %lld)\n",  \
                    __FILE__, __LINE__, #a, #b, check_a, check_b);             \
            check_failures++;                                                  \
        }                                                                      \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                     \
    do {                                                                       \
        const char *check_a = (a), *check_b = (b);                             \
        if (strcmp(check_a, check_b) != 0) {                                   \
            fprintf(stderr,                                                    \
                    "%s:%d: check failed: %s == %s (\"%s\" != "                \
                    "\"%s\")\n",                                               \
                    __FILE__, __LINE__, #a, #b, check_a, check_b);             \
            check_failures++;                                                  \
        }                                                                      \
    } while (0)

/* Run one test function and count it as passed or failed. */
#define RUN(fn)                                                                \
    do {                                                                       \
        int check_before = check_failures;                                     \
        fn();                                                                  \
        if (check_failures == check_before) {                                  \
            check_passed++;                                                    \
            printf("ok   %s\n", #fn);                                          \
        } else {                                                               \
            check_failed++;                                                    \
            printf("FAIL %s\n", #fn);                                          \
        }                                                                      \
        fflush(stdout);                                                        \
    } while (0)

static inline int
check_report(void)
{
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

/* A fresh scratch folder under $TMPDIR; removed by check_rmrf. */
static inline char *
check_tmpdir(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char *path = malloc(4096);

    snprintf(path, 4096, "%s/mithril-test-XXXXXX", base);
    if (!mkdtemp(path)) {
        perror("mkdtemp");
        exit(2);
    }
    return path;
}

static inline void
check_rmrf(const char *path)
{
    char cmd[4200];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    if (system(cmd) != 0) {
        fprintf(stderr, "could not remove %s\n", path);
    }
}

#endif /* MITHRIL_CHECK_H */
