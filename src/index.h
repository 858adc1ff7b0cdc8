/*
 * index.h - helpers of the index module (index.c, stats.c) shared with the
 * statistics, the benchmark and the remote tier; never installed. The
 * on-disk design is in docs/INDEX.md.
 */
#ifndef MITHRIL_INDEX_H
#define MITHRIL_INDEX_H

#include "internal.h"

/* Exact counters kept by the index in the same transactions as the data. */
struct mi_totals {
    uint64_t entries;
    uint64_t size_bytes;    /* stored bytes of every indexed blob */
    uint64_t logical_bytes; /* content bytes of every indexed blob */
    uint64_t blobs;
};

/* Read the totals (zeros for a read-only store without an index). */
int mi_index_totals(mithril_store *s, struct mi_totals *out);

/* The size cap in effect: s->max_size, or 10 GiB when unset. */
uint64_t mi_index_cap(const mithril_store *s);

/*
 * Bulk loading for benchmarks and imports: begin opens one write
 * transaction held by the store handle (one thread only until end); put
 * records an entry without checking blob files (a missing blob row is
 * created with stored = logical = the item's size) and commits every few
 * thousand entries; end commits. No eviction runs.
 */
int mi_index_bulk_begin(mithril_store *s);
int mi_index_bulk_put(mithril_store *s, const char *key,
                      const mithril_item *items, size_t n_items,
                      const char *meta);
int mi_index_bulk_end(mithril_store *s);

#endif /* MITHRIL_INDEX_H */
