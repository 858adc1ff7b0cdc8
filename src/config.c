/*
 * config.c - a store's settings and where each came from. Precedence,
 * lowest first: built-in default, the store's config file, the
 * environment, a setter (a command-line flag). Each value remembers its
 * source so `mithril config` can say why a setting is what it is.
 *
 * The config file is <store dir>/config, text, one setting a line:
 *
 *   # comment
 *   max_size = 20G
 *   compression = 3          # zstd level 0..22, 0 stores raw
 *   verify = on              # on/off, true/false, yes/no, 1/0
 *   remote = redis://cache.example:6379/0    (or "none")
 *   remote_read_only = off
 *
 * The environment uses MITHRIL_MAX_SIZE, MITHRIL_COMPRESSION,
 * MITHRIL_VERIFY, MITHRIL_REMOTE and MITHRIL_REMOTE_READ_ONLY; an empty
 * variable counts as unset.
 *
 * Invariants:
 *  - Configuration never makes opening fail: a malformed value, an unknown
 *    name or an unreadable file is logged as a warning naming it, and the
 *    lower-precedence value stays.
 *  - Loading does not connect anywhere: a remote named here is only
 *    recorded in s->remote_url; the remote module connects later.
 *  - This file owns max_size, remote_url, remote_read_only and the
 *    *_source fields of struct mithril_store, and sets compression_level
 *    and verify on behalf of store.c.
 */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MI_DEFAULT_MAX_SIZE    (10ULL << 30)
#define MI_DEFAULT_COMPRESSION 3
#define MI_MAX_COMPRESSION     22
#define MI_CONFIG_FILE_MAX     (64 * 1024)
#define MI_REMOTE_URL_MAX      1024

const char *
mithril_source_name(int source)
{
    switch (source) {
    case MITHRIL_SOURCE_DEFAULT:
        return "default";
    case MITHRIL_SOURCE_FILE:
        return "file";
    case MITHRIL_SOURCE_ENV:
        return "env";
    case MITHRIL_SOURCE_FLAG:
        return "flag";
    default:
        return "unknown";
    }
}

/* ---- sizes ---- */

/* Multiplier for a unit letter (powers of 1024); 0 if not a unit. */
static uint64_t
unit_multiplier(char c)
{
    switch (tolower((unsigned char)c)) {
    case 'k':
        return 1ULL << 10;
    case 'm':
        return 1ULL << 20;
    case 'g':
        return 1ULL << 30;
    case 't':
        return 1ULL << 40;
    case 'p':
        return 1ULL << 50;
    case 'e':
        return 1ULL << 60;
    default:
        return 0;
    }
}

int
mithril_parse_size(const char *text, uint64_t *out)
{
    const char *p = text;
    unsigned __int128 whole = 0, frac = 0, scale = 1, total;
    uint64_t mult = 1;
    int has_frac = 0;

    if (!text || !out || !isdigit((unsigned char)*p)) {
        return MITHRIL_EINVAL;
    }
    while (isdigit((unsigned char)*p)) {
        whole = whole * 10 + (unsigned)(*p - '0');
        if (whole > UINT64_MAX) {
            return MITHRIL_EINVAL;
        }
        p++;
    }
    if (*p == '.') {
        p++;
        has_frac = 1;
        if (!isdigit((unsigned char)*p)) {
            return MITHRIL_EINVAL;
        }
        while (isdigit((unsigned char)*p)) {
            /* Digits past 1e-18 cannot change a 64-bit byte count. */
            if (scale < 1000000000000000000ULL) {
                frac = frac * 10 + (unsigned)(*p - '0');
                scale *= 10;
            }
            p++;
        }
    }

    /* Unit: "", "B", or a letter optionally followed by "B" or "iB". */
    if (*p && unit_multiplier(*p)) {
        mult = unit_multiplier(*p);
        p++;
        if (*p == 'i' || *p == 'I') {
            p++;
            if (*p != 'b' && *p != 'B') {
                return MITHRIL_EINVAL;
            }
        }
        if (*p == 'b' || *p == 'B') {
            p++;
        }
    } else if (*p == 'b' || *p == 'B') {
        p++;
    }
    if (*p != '\0') {
        return MITHRIL_EINVAL;
    }
    /* A fraction of a byte means nothing. */
    if (has_frac && mult == 1) {
        return MITHRIL_EINVAL;
    }
    total = whole * mult + frac * mult / scale;
    if (total > UINT64_MAX) {
        return MITHRIL_EINVAL;
    }
    *out = (uint64_t)total;
    return 0;
}

/* "10737418240 (10.0G)": bytes and a rounded human form. */
static void
format_size(uint64_t bytes, char *buf, size_t n)
{
    static const char units[] = "KMGTPE";
    double v = (double)bytes;
    int u = -1;

    while (v >= 1024.0 && u < 5) {
        v /= 1024.0;
        u++;
    }
    if (u < 0) {
        snprintf(buf, n, "%llu (%lluB)", (unsigned long long)bytes,
                 (unsigned long long)bytes);
    } else {
        snprintf(buf, n, "%llu (%.1f%c)", (unsigned long long)bytes, v,
                 units[u]);
    }
}

/* ---- values ---- */

static int
parse_bool(const char *v, int *out)
{
    static const char *const yes[] = {"on", "true", "yes", "1"};
    static const char *const no[] = {"off", "false", "no", "0"};
    size_t i;

    for (i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i])) {
            *out = 1;
            return 0;
        }
        if (!strcasecmp(v, no[i])) {
            *out = 0;
            return 0;
        }
    }
    return MITHRIL_EINVAL;
}

static int
parse_level(const char *v, int *out)
{
    char *end;
    long n;

    if (!isdigit((unsigned char)v[0])) {
        return MITHRIL_EINVAL;
    }
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno || *end || n < 0 || n > MI_MAX_COMPRESSION) {
        return MITHRIL_EINVAL;
    }
    *out = (int)n;
    return 0;
}

/* "none" clears the remote; otherwise a redis:// URL without spaces. */
static int
check_remote(const char *v)
{
    size_t i;

    if (!strcmp(v, "none")) {
        return 0;
    }
    if (strncmp(v, "redis://", 8) || v[8] == '\0' ||
        strlen(v) >= MI_REMOTE_URL_MAX) {
        return MITHRIL_EINVAL;
    }
    for (i = 0; v[i]; i++) {
        if (!isgraph((unsigned char)v[i])) {
            return MITHRIL_EINVAL;
        }
    }
    return 0;
}

static int
set_remote_url(mithril_store *s, const char *v)
{
    char *copy = NULL;

    if (strcmp(v, "none")) {
        copy = strdup(v);
        if (!copy) {
            return -ENOMEM;
        }
    }
    free(s->remote_url);
    s->remote_url = copy;
    return 0;
}

/* The source of the value a setting has now. */
static int
current_source(const mithril_store *s, const char *name)
{
    if (!strcmp(name, "max_size")) {
        return s->max_size_source;
    }
    if (!strcmp(name, "compression")) {
        return s->compression_source;
    }
    if (!strcmp(name, "verify")) {
        return s->verify_source;
    }
    if (!strcmp(name, "remote")) {
        return s->remote_source;
    }
    return s->remote_read_only_source;
}

/*
 * Apply one setting from source (file or env); where names the origin for
 * the warning ("<dir>/config:3", "MITHRIL_VERIFY"). Never fails the open:
 * a bad value is logged and ignored.
 */
static void
apply(mithril_store *s, const char *name, const char *value, int source,
      const char *where)
{
    uint64_t size;
    int n;

    if (!strcmp(name, "max_size")) {
        if (mithril_parse_size(value, &size) < 0 || size == 0) {
            goto bad;
        }
        s->max_size = size;
        s->max_size_source = source;
    } else if (!strcmp(name, "compression")) {
        if (parse_level(value, &n) < 0) {
            goto bad;
        }
        s->compression_level = n;
        s->compression_source = source;
    } else if (!strcmp(name, "verify")) {
        if (parse_bool(value, &n) < 0) {
            goto bad;
        }
        s->verify = n;
        s->verify_source = source;
    } else if (!strcmp(name, "remote")) {
        if (check_remote(value) < 0 || set_remote_url(s, value) < 0) {
            goto bad;
        }
        s->remote_source = source;
    } else if (!strcmp(name, "remote_read_only")) {
        if (parse_bool(value, &n) < 0) {
            goto bad;
        }
        s->remote_read_only = n;
        s->remote_read_only_source = source;
    } else {
        mi_log(MITHRIL_LOG_WARN, "config %s: unknown setting '%s' ignored",
               where, name);
    }
    return;

bad:
    mi_log(MITHRIL_LOG_WARN,
           "config %s: bad value '%s' for %s ignored (keeping the %s value)",
           where, value, name, mithril_source_name(current_source(s, name)));
}

static void
set_defaults(mithril_store *s)
{
    s->max_size = MI_DEFAULT_MAX_SIZE;
    s->max_size_source = MITHRIL_SOURCE_DEFAULT;
    s->compression_level = MI_DEFAULT_COMPRESSION;
    s->compression_source = MITHRIL_SOURCE_DEFAULT;
    s->verify = 1;
    s->verify_source = MITHRIL_SOURCE_DEFAULT;
    free(s->remote_url);
    s->remote_url = NULL;
    s->remote_source = MITHRIL_SOURCE_DEFAULT;
    s->remote_read_only = 0;
    s->remote_read_only_source = MITHRIL_SOURCE_DEFAULT;
}

static char *
trim(char *p)
{
    char *end;

    while (isspace((unsigned char)*p)) {
        p++;
    }
    end = p + strlen(p);
    while (end > p && isspace((unsigned char)end[-1])) {
        *--end = '\0';
    }
    return p;
}

/* Apply each `name = value` line of text (NUL-terminated, modified). */
static void
apply_file_text(mithril_store *s, const char *path, char *text)
{
    char where[PATH_MAX + 32];
    char *line, *next, *eq, *hash, *name, *value;
    int lineno = 0;

    for (line = text; line; line = next) {
        next = strchr(line, '\n');
        if (next) {
            *next++ = '\0';
        }
        lineno++;
        hash = strchr(line, '#');
        if (hash) {
            *hash = '\0';
        }
        line = trim(line);
        if (*line == '\0') {
            continue;
        }
        snprintf(where, sizeof(where), "%s:%d", path, lineno);
        eq = strchr(line, '=');
        if (!eq) {
            mi_log(MITHRIL_LOG_WARN,
                   "config %s: expected 'name = value', line ignored", where);
            continue;
        }
        *eq = '\0';
        name = trim(line);
        value = trim(eq + 1);
        apply(s, name, value, MITHRIL_SOURCE_FILE, where);
    }
}

static void
load_file(mithril_store *s)
{
    char path[PATH_MAX];
    char *text = NULL;
    ssize_t n;
    int fd;

    if (snprintf(path, sizeof(path), "%s/config", s->dir) >=
        (int)sizeof(path)) {
        return;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) {
            mi_log(MITHRIL_LOG_WARN, "config open '%s': %s (ignored)", path,
                   strerror(errno));
        }
        return;
    }
    text = malloc(MI_CONFIG_FILE_MAX + 1);
    if (!text) {
        goto out;
    }
    n = mi_read_full(fd, text, MI_CONFIG_FILE_MAX + 1);
    if (n < 0) {
        mi_log(MITHRIL_LOG_WARN, "config read '%s': %s (ignored)", path,
               strerror((int)-n));
        goto out;
    }
    if (n > MI_CONFIG_FILE_MAX) {
        mi_log(MITHRIL_LOG_WARN, "config '%s': larger than %d bytes, ignored",
               path, MI_CONFIG_FILE_MAX);
        goto out;
    }
    text[n] = '\0';
    apply_file_text(s, path, text);

out:
    free(text);
    close(fd);
}

static void
load_env(mithril_store *s)
{
    static const struct {
        const char *var;
        const char *name;
    } vars[] = {
        {"MITHRIL_MAX_SIZE", "max_size"},
        {"MITHRIL_COMPRESSION", "compression"},
        {"MITHRIL_VERIFY", "verify"},
        {"MITHRIL_REMOTE", "remote"},
        {"MITHRIL_REMOTE_READ_ONLY", "remote_read_only"},
    };
    const char *v;
    size_t i;

    for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        v = getenv(vars[i].var);
        if (v && *v) {
            apply(s, vars[i].name, v, MITHRIL_SOURCE_ENV, vars[i].var);
        }
    }
}

int
mi_config_load(mithril_store *s)
{
    if (!s) {
        return MITHRIL_EINVAL;
    }
    set_defaults(s);
    if (s->flags & MITHRIL_OPEN_NO_CONFIG) {
        return 0;
    }
    if (s->dir) {
        load_file(s);
    }
    load_env(s);
    return 0;
}

void
mithril_store_set_max_size(mithril_store *s, uint64_t bytes)
{
    if (!s || bytes == 0) {
        return;
    }
    __atomic_store_n(&s->max_size, bytes, __ATOMIC_RELAXED);
    s->max_size_source = MITHRIL_SOURCE_FLAG;
}

uint64_t
mithril_store_max_size(const mithril_store *s)
{
    uint64_t v;

    if (!s) {
        return 0;
    }
    /* A store whose configuration was never loaded has the default cap. */
    v = __atomic_load_n(&s->max_size, __ATOMIC_RELAXED);
    return v ? v : MI_DEFAULT_MAX_SIZE;
}

/* ---- reporting ---- */

/* 1 if path names the same folder as dir (already a real path). */
static int
same_dir(const char *path, const char *dir)
{
    char *real;
    int same;

    if (!strcmp(path, dir)) {
        return 1;
    }
    real = realpath(path, NULL);
    same = real && !strcmp(real, dir);
    free(real);
    return same;
}

/* Where the store folder came from: MITHRIL_DIR, the default, or a flag. */
static int
dir_source(const mithril_store *s)
{
    char def[PATH_MAX];
    const char *env = getenv("MITHRIL_DIR");

    if (env && *env) {
        return same_dir(env, s->dir) ? MITHRIL_SOURCE_ENV : MITHRIL_SOURCE_FLAG;
    }
    if (mithril_default_dir(def, sizeof(def)) == 0 && same_dir(def, s->dir)) {
        return MITHRIL_SOURCE_DEFAULT;
    }
    return MITHRIL_SOURCE_FLAG;
}

int
mithril_config_foreach(mithril_store *s, mithril_config_fn fn, void *ctx)
{
    char buf[PATH_MAX + 16];
    const char *v;
    int use_env;

    if (!s || !fn || !s->dir) {
        return MITHRIL_EINVAL;
    }
    use_env = !(s->flags & MITHRIL_OPEN_NO_CONFIG);

    fn("dir", s->dir, dir_source(s), ctx);
    format_size(mithril_store_max_size(s), buf, sizeof(buf));
    fn("max_size", buf, s->max_size_source, ctx);
    snprintf(buf, sizeof(buf), "%d", s->compression_level);
    fn("compression", buf, s->compression_source, ctx);
    fn("verify", s->verify ? "on" : "off", s->verify_source, ctx);
    fn("remote", s->remote_url ? s->remote_url : "none", s->remote_source, ctx);
    fn("remote_read_only", s->remote_read_only ? "on" : "off",
       s->remote_read_only_source, ctx);

    /* The secret itself is never reported, only whether there is one. */
    if (use_env && ((v = getenv("MITHRIL_SECRET")) && *v)) {
        fn("secret", "set", MITHRIL_SOURCE_ENV, ctx);
    } else if (use_env && ((v = getenv("MITHRIL_SECRET_FILE")) && *v)) {
        fn("secret", "set", MITHRIL_SOURCE_ENV, ctx);
    } else {
        fn("secret", "unset", MITHRIL_SOURCE_DEFAULT, ctx);
    }

    v = getenv("MITHRIL_WORK_DIR");
    if (use_env && v && *v) {
        fn("work_dir", v, MITHRIL_SOURCE_ENV, ctx);
    } else {
        snprintf(buf, sizeof(buf), "%s/work", s->dir);
        fn("work_dir", buf, MITHRIL_SOURCE_DEFAULT, ctx);
    }

    v = getenv("MITHRIL_DISABLE");
    if (v && *v) {
        /* As the run command and the Python layer read it: not "0". */
        fn("disabled", strcmp(v, "0") ? "yes" : "no", MITHRIL_SOURCE_ENV, ctx);
    } else {
        fn("disabled", "no", MITHRIL_SOURCE_DEFAULT, ctx);
    }
    return 0;
}
