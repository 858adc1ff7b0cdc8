/*
 * fuzz_manifest.c - the manifest decoder: mi_wire_decode, the encoding of
 * an entry (key, meta, items, signature) as it travels through Redis and
 * archives, then mi_wire_accept (unsafe item names, signatures) against a
 * store without and with a secret.
 *
 * Properties checked: whatever decodes re-encodes (mi_wire_encode) to
 * bytes that decode to the same entry; an entry whose item names escape
 * the working folder (absolute, "..", empty parts) is never accepted; a
 * store with a secret never accepts an unsigned entry.
 *
 * The index's own entry encoding (index.c) has no exposed decoder: it is
 * only ever read back from the store's own LMDB file, written by the
 * library; it is fuzzed indirectly through archive import (fuzz_archive),
 * which decodes with mi_wire_decode and records through mithril_entry_put.
 */
#include "fuzz_common.h"
#include "sign.h"

static mithril_store *plain, *signed_store;

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
names_safe(const struct mi_wire *w)
{
    size_t i;

    for (i = 0; i < w->n_items; i++) {
        const char *n = w->items[i].name;

        if (!n || !*n || n[0] == '/' || strstr(n, "//") || !strcmp(n, "..") ||
            !strncmp(n, "../", 3) || strstr(n, "/../") ||
            (strlen(n) >= 3 && !strcmp(n + strlen(n) - 3, "/..")) ||
            n[strlen(n) - 1] == '/') {
            return 0;
        }
    }
    return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mi_wire w, again;
    struct mi_buf buf = {0};
    size_t i;
    int rc;

    if (!plain) {
        plain = open_at("plain");
        signed_store = open_at("signed");
        if (mithril_store_set_secret(signed_store, "fuzz-secret", 11) != 0) {
            abort();
        }
    }
    memset(&w, 0, sizeof(w));
    if (mi_wire_decode(data, size, &w) != 0) {
        return 0;
    }
    rc = mi_wire_accept(plain, &w, "fuzz");
    if (rc == 0 && !names_safe(&w)) {
        abort(); /* an escaping name was accepted */
    }
    rc = mi_wire_accept(signed_store, &w, "fuzz");
    if (rc == 0 && !w.has_sig) {
        abort(); /* a signed store accepted an unsigned entry */
    }

    /* Round trip through the encoder (unsigned store: no signature). */
    if (mi_wire_encode(plain, w.key, w.meta, w.items, w.n_items, &buf) == 0) {
        memset(&again, 0, sizeof(again));
        if (mi_wire_decode(buf.data, buf.len, &again) != 0) {
            abort();
        }
        if (strcmp(again.key, w.key) != 0 ||
            strcmp(again.meta ? again.meta : "", w.meta ? w.meta : "") != 0 ||
            again.n_items != w.n_items) {
            abort();
        }
        for (i = 0; i < w.n_items; i++) {
            if (strcmp(again.items[i].name, w.items[i].name) != 0 ||
                strcmp(again.items[i].addr, w.items[i].addr) != 0 ||
                again.items[i].size != w.items[i].size ||
                again.items[i].mode != w.items[i].mode) {
                abort();
            }
        }
        mi_wire_release(&again);
    }
    mi_buf_release(&buf);
    mi_wire_release(&w);
    return 0;
}
