/*
 * error.c - error names and the library's log callback. The library never
 * prints: every diagnostic goes through mi_log to the callback the
 * application set (none by default).
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static mithril_log_fn log_fn;
static void *log_ctx;
static int log_min = MITHRIL_LOG_INFO;

const char *
mithril_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
    case MITHRIL_EINVAL:
        return "invalid argument";
    case MITHRIL_ENOTFOUND:
        return "not found";
    case MITHRIL_ECORRUPT:
        return "content does not match its address (corrupt)";
    case MITHRIL_EFORMAT:
        return "unknown format or version";
    case MITHRIL_EUNSAFE:
        return "unsafe folder (owned by another user or writable by others)";
    case MITHRIL_ESIGNATURE:
        return "missing or wrong signature";
    case MITHRIL_EREMOTE:
        return "remote unavailable";
    case MITHRIL_EDB:
        return "index database error";
    case MITHRIL_ECOMPRESS:
        return "compression error";
    case MITHRIL_ERDONLY:
        return "store is read-only";
    case MITHRIL_EPATH:
        return "name escapes its folder";
    case MITHRIL_ETOOBIG:
        return "value too large";
    case MITHRIL_EDISABLED:
        return "caching disabled";
    default:
        break;
    }
    if (code < 0 && code > -4096) {
        return strerror(-code);
    }
    return "unknown error";
}

void
mithril_set_log(mithril_log_fn fn, void *ctx, int min_level)
{
    log_fn = fn;
    log_ctx = ctx;
    log_min = min_level;
}

void
mi_log(int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (!log_fn || level < log_min) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_fn(level, msg, log_ctx);
}

int
mi_log_errno(const char *call, const char *path)
{
    int err = errno;

    mi_log(MITHRIL_LOG_ERROR, "%s '%s': %s", call, path ? path : "",
           strerror(err));
    return -err;
}

void
mithril_free(void *p)
{
    free(p);
}

int64_t
mi_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
