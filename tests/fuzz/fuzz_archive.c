/*
 * fuzz_archive.c - archive import (mithril_archive_import) of a fuzzed
 * file, into a plain store and into a store with a secret.
 *
 * Properties checked: import never crashes or leaks; afterwards verify
 * finds no corrupt blob and no entry without its blobs (every blob was
 * verified against its address before it was recorded); every recorded
 * item name is safe (nothing can be restored outside the working folder);
 * the signed store holds only signed entries.
 * The stores are cleared every 256 inputs to keep them small.
 */
#include "fuzz_common.h"
#include "sign.h"

static mithril_store *plain, *signed_store;
static char archive[PATH_MAX];
static unsigned long runs;

static mithril_store *
open_at(const char *name)
{
    char dir[PATH_MAX];
    mithril_store *s = NULL;

    snprintf(dir, sizeof(dir), "%s/%s", fuzz_scratch(), name);
    if (mithril_store_open(dir, MITHRIL_OPEN_CREATE | MITHRIL_OPEN_NO_CONFIG,
                           &s) != 0) {
        abort();
    }
    return s;
}

static int
check_entry(const mithril_entry *e, void *ctx)
{
    int need_sig = *(const int *)ctx;
    size_t i;

    if (need_sig && !e->is_signed) {
        abort(); /* a signed store recorded an unsigned entry */
    }
    for (i = 0; i < e->n_items; i++) {
        if (!mi_name_safe(e->items[i].name)) {
            abort(); /* an escaping name was recorded */
        }
    }
    return 0;
}

static void
import_into(mithril_store *s, int need_sig)
{
    mithril_sync_result r;
    mithril_verify_result v;

    memset(&r, 0, sizeof(r));
    (void)mithril_archive_import(s, archive, NULL, NULL, &r);
    if (r.entries == 0 && r.files == 0) {
        return; /* nothing recorded: nothing to check */
    }
    if (mithril_entry_foreach(s, check_entry, &need_sig) < 0) {
        abort();
    }
    if (mithril_store_verify(s, NULL, NULL, &v) != 0 || v.blobs_corrupt ||
        v.entries_broken) {
        abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!plain) {
        plain = open_at("plain");
        signed_store = open_at("signed");
        if (mithril_store_set_secret(signed_store, "fuzz-secret", 11) != 0) {
            abort();
        }
        snprintf(archive, sizeof(archive), "%s/input.mtar", fuzz_scratch());
    }
    fuzz_write(archive, data, size);
    import_into(plain, 0);
    import_into(signed_store, 1);
    if (++runs % 256 == 0) {
        mithril_store_clear(plain);
        mithril_store_clear(signed_store);
    }
    return 0;
}
