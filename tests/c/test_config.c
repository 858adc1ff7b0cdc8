/*
 * test_config.c - a store's settings and their sources through real
 * stores in scratch folders: defaults, the config file, the environment
 * and setters, in that order of precedence; malformed values are logged
 * and ignored with the lower-precedence value kept; MITHRIL_OPEN_NO_CONFIG
 * ignores both file and environment; a configured remote is recorded but
 * not connected at open.
 */
#include "check.h"
#include "internal.h"

#include <fcntl.h>
#include <sys/stat.h>

#define MAX_SETTINGS 32

struct settings {
    int n;
    char name[MAX_SETTINGS][32];
    char value[MAX_SETTINGS][512];
    int source[MAX_SETTINGS];
};

static void
collect(const char *name, const char *value, int source, void *ctx)
{
    struct settings *s = ctx;

    if (s->n == MAX_SETTINGS) {
        return;
    }
    snprintf(s->name[s->n], sizeof(s->name[0]), "%s", name);
    snprintf(s->value[s->n], sizeof(s->value[0]), "%s", value);
    s->source[s->n] = source;
    s->n++;
}

static const char *
value_of(const struct settings *s, const char *name)
{
    int i;

    for (i = 0; i < s->n; i++) {
        if (!strcmp(s->name[i], name)) {
            return s->value[i];
        }
    }
    return "(missing)";
}

static const char *
source_of(const struct settings *s, const char *name)
{
    int i;

    for (i = 0; i < s->n; i++) {
        if (!strcmp(s->name[i], name)) {
            return mithril_source_name(s->source[i]);
        }
    }
    return "(missing)";
}

/* Warnings the library logged, joined by newlines. */
static char logged[8192];

static void
capture_log(int level, const char *msg, void *ctx)
{
    size_t n = strlen(logged);

    if (level >= MITHRIL_LOG_WARN && n + strlen(msg) + 2 < sizeof(logged)) {
        snprintf(logged + n, sizeof(logged) - n, "%s\n", msg);
    }
}

static const char *const env_vars[] = {
    "MITHRIL_MAX_SIZE",    "MITHRIL_COMPRESSION",      "MITHRIL_VERIFY",
    "MITHRIL_REMOTE",      "MITHRIL_REMOTE_READ_ONLY", "MITHRIL_SECRET",
    "MITHRIL_SECRET_FILE", "MITHRIL_WORK_DIR",         "MITHRIL_DISABLE",
    "MITHRIL_DIR",
};

static void
clear_env(void)
{
    size_t i;

    for (i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++) {
        unsetenv(env_vars[i]);
    }
}

static void
write_config(const char *dir, const char *text)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof(path), "%s/config", dir);
    f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

static void
write_secret(const char *path)
{
    FILE *f = fopen(path, "w");

    if (!f) {
        perror(path);
        exit(2);
    }
    fputs("a secret of some length, for signing\n", f);
    fclose(f);
    chmod(path, 0600);
}

/* Open dir (created) with flags and read its settings into out. */
static mithril_store *
open_and_read(const char *dir, unsigned flags, struct settings *out)
{
    mithril_store *s = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = mithril_store_open(dir, MITHRIL_OPEN_CREATE | flags, &s);
    CHECK_EQ_INT(rc, 0);
    if (rc < 0) {
        return NULL;
    }
    CHECK_EQ_INT(mithril_config_foreach(s, collect, out), 0);
    return s;
}

static void
test_defaults(void)
{
    char *dir = check_tmpdir();
    struct settings st;
    mithril_store *s;
    char want[4200];

    clear_env();
    s = open_and_read(dir, 0, &st);
    if (!s) {
        return;
    }
    CHECK_EQ_STR(value_of(&st, "max_size"), "10737418240 (10.0G)");
    CHECK_EQ_STR(source_of(&st, "max_size"), "default");
    CHECK_EQ_STR(value_of(&st, "compression"), "3");
    CHECK_EQ_STR(source_of(&st, "compression"), "default");
    CHECK_EQ_STR(value_of(&st, "verify"), "on");
    CHECK_EQ_STR(value_of(&st, "remote"), "none");
    CHECK_EQ_STR(source_of(&st, "remote"), "default");
    CHECK_EQ_STR(value_of(&st, "remote_read_only"), "off");
    CHECK_EQ_STR(value_of(&st, "secret"), "unset");
    CHECK_EQ_STR(value_of(&st, "disabled"), "no");
    CHECK_EQ_STR(value_of(&st, "dir"), mithril_store_dir(s));
    CHECK_EQ_STR(source_of(&st, "dir"), "flag");
    snprintf(want, sizeof(want), "%s/work", mithril_store_dir(s));
    CHECK_EQ_STR(value_of(&st, "work_dir"), want);
    CHECK_EQ_STR(source_of(&st, "work_dir"), "default");
    CHECK(mithril_store_max_size(s) == 10ULL << 30);
    CHECK_EQ_INT(s->compression_level, 3);
    CHECK_EQ_INT(s->verify, 1);
    CHECK(s->remote_url == NULL);
    mithril_store_close(s);
    check_rmrf(dir);
    free(dir);
}

static void
test_file_then_env_then_flag(void)
{
    char *dir = check_tmpdir();
    struct settings st;
    mithril_store *s;

    clear_env();
    write_config(dir, "# store settings\n"
                      "max_size = 1G\n"
                      "  compression=5   # faster\n"
                      "verify = off\n"
                      "\n"
                      "remote = redis://127.0.0.1:1/0\n"
                      "remote_read_only = yes\n");
    s = open_and_read(dir, 0, &st);
    if (!s) {
        return;
    }
    CHECK_EQ_STR(value_of(&st, "max_size"), "1073741824 (1.0G)");
    CHECK_EQ_STR(source_of(&st, "max_size"), "file");
    CHECK_EQ_STR(value_of(&st, "compression"), "5");
    CHECK_EQ_STR(source_of(&st, "compression"), "file");
    CHECK_EQ_STR(value_of(&st, "verify"), "off");
    CHECK_EQ_STR(source_of(&st, "verify"), "file");
    CHECK_EQ_STR(value_of(&st, "remote"), "redis://127.0.0.1:1/0");
    CHECK_EQ_STR(source_of(&st, "remote"), "file");
    CHECK_EQ_STR(value_of(&st, "remote_read_only"), "on");
    CHECK_EQ_STR(source_of(&st, "remote_read_only"), "file");
    CHECK_EQ_INT(s->compression_level, 5);
    CHECK_EQ_INT(s->verify, 0);
    /* Recorded for the remote module; opening did not fail on it. */
    CHECK(s->remote_url && !strcmp(s->remote_url, "redis://127.0.0.1:1/0"));
    mithril_store_close(s);

    /* The environment beats the file, setting by setting. */
    setenv("MITHRIL_MAX_SIZE", "2G", 1);
    setenv("MITHRIL_COMPRESSION", "7", 1);
    setenv("MITHRIL_REMOTE", "none", 1);
    s = open_and_read(dir, 0, &st);
    if (!s) {
        return;
    }
    CHECK_EQ_STR(value_of(&st, "max_size"), "2147483648 (2.0G)");
    CHECK_EQ_STR(source_of(&st, "max_size"), "env");
    CHECK_EQ_STR(value_of(&st, "compression"), "7");
    CHECK_EQ_STR(source_of(&st, "compression"), "env");
    CHECK_EQ_STR(value_of(&st, "verify"), "off");
    CHECK_EQ_STR(source_of(&st, "verify"), "file");
    CHECK_EQ_STR(value_of(&st, "remote"), "none");
    CHECK_EQ_STR(source_of(&st, "remote"), "env");

    /* A setter (a command-line flag) beats the environment. */
    mithril_store_set_max_size(s, 3ULL << 30);
    memset(&st, 0, sizeof(st));
    CHECK_EQ_INT(mithril_config_foreach(s, collect, &st), 0);
    CHECK_EQ_STR(value_of(&st, "max_size"), "3221225472 (3.0G)");
    CHECK_EQ_STR(source_of(&st, "max_size"), "flag");
    CHECK(mithril_store_max_size(s) == 3ULL << 30);
    mithril_store_close(s);

    /* MITHRIL_OPEN_NO_CONFIG: neither file nor environment. */
    s = open_and_read(dir, MITHRIL_OPEN_NO_CONFIG, &st);
    if (s) {
        CHECK_EQ_STR(source_of(&st, "max_size"), "default");
        CHECK_EQ_STR(source_of(&st, "compression"), "default");
        CHECK_EQ_STR(value_of(&st, "verify"), "on");
        CHECK_EQ_STR(value_of(&st, "remote"), "none");
        mithril_store_close(s);
    }
    clear_env();
    check_rmrf(dir);
    free(dir);
}

static void
test_malformed_values_keep_lower(void)
{
    char *dir = check_tmpdir();
    struct settings st;
    mithril_store *s;

    clear_env();
    logged[0] = '\0';
    mithril_set_log(capture_log, NULL, MITHRIL_LOG_WARN);
    write_config(dir, "max_size = 1G\n"
                      "compression = 99\n"
                      "verify = maybe\n"
                      "remote = http://example.com\n"
                      "colour = blue\n"
                      "this line has no equals sign\n");
    setenv("MITHRIL_MAX_SIZE", "-5G", 1);
    setenv("MITHRIL_VERIFY", "sometimes", 1);
    setenv("MITHRIL_COMPRESSION", "4x", 1);
    s = open_and_read(dir, 0, &st);
    mithril_set_log(NULL, NULL, MITHRIL_LOG_WARN);
    if (!s) {
        return;
    }
    /* Bad env value: the file's value stays. */
    CHECK_EQ_STR(value_of(&st, "max_size"), "1073741824 (1.0G)");
    CHECK_EQ_STR(source_of(&st, "max_size"), "file");
    /* Bad in both: the default stays. */
    CHECK_EQ_STR(value_of(&st, "compression"), "3");
    CHECK_EQ_STR(source_of(&st, "compression"), "default");
    CHECK_EQ_STR(value_of(&st, "verify"), "on");
    CHECK_EQ_STR(source_of(&st, "verify"), "default");
    CHECK_EQ_STR(value_of(&st, "remote"), "none");
    /* Each problem was named in a warning. */
    CHECK(strstr(logged, "MITHRIL_MAX_SIZE") && strstr(logged, "-5G"));
    CHECK(strstr(logged, "MITHRIL_VERIFY"));
    CHECK(strstr(logged, "MITHRIL_COMPRESSION"));
    CHECK(strstr(logged, "config:2") && strstr(logged, "compression"));
    CHECK(strstr(logged, "config:3") && strstr(logged, "maybe"));
    CHECK(strstr(logged, "http://example.com"));
    CHECK(strstr(logged, "colour"));
    CHECK(strstr(logged, "config:6"));
    mithril_store_close(s);
    clear_env();
    check_rmrf(dir);
    free(dir);
}

static void
test_report_env_only_settings(void)
{
    char *dir = check_tmpdir();
    struct settings st;
    mithril_store *s;
    char secret_file[4200];
    int i;

    clear_env();
    snprintf(secret_file, sizeof(secret_file), "%s/secret", dir);
    setenv("MITHRIL_SECRET", "hunter2-do-not-print", 1);
    setenv("MITHRIL_WORK_DIR", "/somewhere/work", 1);
    setenv("MITHRIL_DISABLE", "1", 1);
    setenv("MITHRIL_DIR", dir, 1);
    s = open_and_read(dir, 0, &st);
    if (!s) {
        return;
    }
    CHECK_EQ_STR(value_of(&st, "secret"), "set");
    CHECK_EQ_STR(source_of(&st, "secret"), "env");
    for (i = 0; i < st.n; i++) {
        CHECK(strstr(st.value[i], "hunter2") == NULL);
    }
    CHECK_EQ_STR(value_of(&st, "work_dir"), "/somewhere/work");
    CHECK_EQ_STR(source_of(&st, "work_dir"), "env");
    CHECK_EQ_STR(value_of(&st, "disabled"), "yes");
    CHECK_EQ_STR(source_of(&st, "disabled"), "env");
    CHECK_EQ_STR(source_of(&st, "dir"), "env");
    mithril_store_close(s);

    unsetenv("MITHRIL_SECRET");
    write_secret(secret_file);
    setenv("MITHRIL_SECRET_FILE", secret_file, 1);
    setenv("MITHRIL_DISABLE", "0", 1);
    s = open_and_read(dir, 0, &st);
    if (s) {
        CHECK_EQ_STR(value_of(&st, "secret"), "set");
        CHECK_EQ_STR(value_of(&st, "disabled"), "no");
        mithril_store_close(s);
    }
    clear_env();
    check_rmrf(dir);
    free(dir);
}

int
main(void)
{
    RUN(test_defaults);
    RUN(test_file_then_env_then_flag);
    RUN(test_malformed_values_keep_lower);
    RUN(test_report_env_only_settings);
    return check_report();
}
