/*
 * fuzz_config.c - the store's config file (<store>/config, lines of
 * `name = value`): each input is written as the config file of a scratch
 * store, which is then opened with the file read (no MITHRIL_* variables
 * are set in the fuzzing process) and its settings listed.
 *
 * Properties checked: opening never fails because of the file's content
 * (bad lines are ignored with a warning), and every setting reported
 * names a source the library knows.
 */
#include "fuzz_common.h"

static char dir[PATH_MAX];
static char config[PATH_MAX];

static void
check_setting(const char *name, const char *value, int source, void *ctx)
{
    if (!name || !value || source < MITHRIL_SOURCE_DEFAULT ||
        source > MITHRIL_SOURCE_FLAG) {
        abort();
    }
    (void)ctx;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mithril_store *s = NULL;
    char **env;
    int rc;

    if (!dir[0]) {
        /* The file alone decides: drop every MITHRIL_* variable. */
        for (env = __environ; env && *env;) {
            if (!strncmp(*env, "MITHRIL_", 8)) {
                char name[256];
                size_t n = strcspn(*env, "=");

                snprintf(name, sizeof(name), "%.*s", (int)n, *env);
                unsetenv(name);
                env = __environ;
            } else {
                env++;
            }
        }
        snprintf(dir, sizeof(dir), "%s/store", fuzz_scratch());
        if (mithril_store_open(
                dir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG, &s) != 0) {
            abort();
        }
        mithril_store_close(s);
        s = NULL;
        snprintf(config, sizeof(config), "%s/config", dir);
    }
    fuzz_write(config, data, size);
    rc = mithril_store_open(dir, 0, &s);
    if (rc != 0) {
        abort(); /* a config file must never make the store unusable */
    }
    if (mithril_config_foreach(s, check_setting, NULL) != 0) {
        abort();
    }
    (void)mithril_store_max_size(s);
    mithril_store_close(s);
    return 0;
}
