/*
 * ext.h - the CPython extension module mithril_cache._native. Each part
 * of the module lives in its own file and adds its types and functions to
 * the module from mx_<part>_exec, called by module.c's exec slot.
 */
#ifndef MITHRIL_EXT_H
#define MITHRIL_EXT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "mithril/mithril.h"

/* Module state: exception types shared by every part. */
typedef struct {
    PyObject *error;      /* mithril_cache.Error (base) */
    PyObject *not_found;  /* NotFoundError(Error, KeyError) */
    PyObject *corrupt;    /* CorruptError(Error) */
    PyObject *invalid;    /* InvalidError(Error, ValueError) */
    PyObject *store_type; /* mithril_cache.Store */
} mx_state;

mx_state *mx_get_state(PyObject *module);

/*
 * Raise the exception matching a library error code, with context
 * ("<what> '<which>': <reason>"). Returns NULL for convenience.
 */
PyObject *mx_raise(PyObject *module, int code, const char *what,
                   const char *which);

/* The mithril_store behind a Store object (borrowed). */
typedef struct {
    PyObject_HEAD mithril_store *store;
    PyObject *module;
} mx_store_object;

/*
 * The mithril_store behind a Store argument, or NULL with TypeError (not a
 * Store; fn names the caller) or Error (closed) set.
 */
mithril_store *mx_store_arg(PyObject *module, PyObject *obj, const char *fn);
/* A mithril_sync_result as a dict of its five counts. */
PyObject *mx_sync_result_dict(const mithril_sync_result *r);
/* An optional str argument: *out is NULL for None; -1 with TypeError. */
int mx_opt_text(PyObject *obj, const char **out);

/* Parts: each adds its own types and functions; 0 or -1 with an error. */
int mx_store_exec(PyObject *module);  /* store.c: Store, blobs */
int mx_index_exec(PyObject *module);  /* index.c: entries, stats, gc */
int mx_key_exec(PyObject *module);    /* key.c: cache keys, device, config */
int mx_torch_exec(PyObject *module);  /* torch.c: capture, restore */
int mx_remote_exec(PyObject *module); /* remote.c: remote, archives */

#endif /* MITHRIL_EXT_H */
