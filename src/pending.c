/*
 * pending.c - scaffolding while the modules are being written: weak
 * fallbacks for internal hooks whose owning file is not built yet. A real
 * definition in its module replaces each one. This file is deleted once
 * every module exists.
 */
#include "internal.h"

__attribute__((weak)) int
mi_config_load(mithril_store *s)
{
    return 0;
}

__attribute__((weak)) void
mi_index_close(mithril_store *s)
{
}

__attribute__((weak)) void
mi_stats_close(mithril_store *s)
{
}

__attribute__((weak)) void
mi_stats_add(mithril_store *s, int counter, uint64_t n)
{
}

__attribute__((weak)) int
mi_index_blob_added(mithril_store *s, const char *addr, uint64_t stored,
                    uint64_t logical)
{
    return 0;
}

__attribute__((weak)) int
mi_index_blob_removed(mithril_store *s, const char *addr)
{
    return 0;
}

__attribute__((weak)) void
mi_remote_close(mithril_store *s)
{
}
