/*
 * sign.h - the wire form of an entry shared by remote.c and archive.c, and
 * its signature (sign.c). Private to the library.
 */
#ifndef MITHRIL_SIGN_H
#define MITHRIL_SIGN_H

#include "internal.h"

/* A growable byte buffer; bytes are followed by a NUL not counted in len. */
struct mi_buf {
    char *data;
    size_t len;
    size_t cap;
};

void mi_buf_release(struct mi_buf *b);
int mi_buf_append(struct mi_buf *b, const void *data, size_t n);
int mi_buf_printf(struct mi_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* An entry as it travels: what its producer recorded, plus a signature. */
struct mi_wire {
    char *key;
    char *meta;
    size_t n_items;
    mithril_item *items;
    int has_sig;
    uint8_t sig[MITHRIL_BLAKE3_OUT_LEN];
};

void mi_wire_release(struct mi_wire *w);

/* Largest encoded entry accepted from outside. */
#define MI_WIRE_MAX (16u << 20)

/*
 * Encode an entry (key, meta, items) into out, signed with the store's
 * secret when it has one. out is appended to.
 */
int mi_wire_encode(mithril_store *s, const char *key, const char *meta,
                   const mithril_item *items, size_t n_items,
                   struct mi_buf *out);
/* Parse an encoding; MITHRIL_EFORMAT on anything malformed. */
int mi_wire_decode(const void *data, size_t len, struct mi_wire *out);
/*
 * Decide whether an entry from outside may be recorded: every item name
 * safe (else MITHRIL_EPATH) and, when the store has a secret, a valid
 * signature (else MITHRIL_ESIGNATURE). A refusal is logged and counted as
 * rejected; where says where the entry came from.
 */
int mi_wire_accept(mithril_store *s, const struct mi_wire *w,
                   const char *where);

/* 1 if name is a relative path without "", "." or ".." components. */
int mi_name_safe(const char *name);

/* The tag of a toolchain filter: 16 hex as given, else hex of its hash. */
void mi_toolchain_tag(const char *toolchain, char tag[17]);
/* 1 if meta carries "tc=<tag>" as a word. */
int mi_meta_has_tag(const char *meta, const char *tag);
/* Copy the tc=<tag> of meta into tag; 0, or MITHRIL_ENOTFOUND. */
int mi_meta_tag(const char *meta, char tag[17]);

/*
 * The keys of local entries, all or those tagged with toolchain, collected
 * before any remote or file I/O; release with mi_free_keys.
 */
int mi_collect_entries(mithril_store *s, const char *toolchain, char ***keys,
                       size_t *n);
void mi_free_keys(char **keys, size_t n);

#endif /* MITHRIL_SIGN_H */
