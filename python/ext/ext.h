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

/*
 * The mithril_store behind a Store object (borrowed), and the calls in
 * flight on it: close() while calls run with the GIL released only marks
 * the handle, and the last call to leave closes it.
 */
typedef struct {
    PyObject_HEAD mithril_store *store;
    PyObject *module;
    int active;             /* calls in flight (changed with the GIL held) */
    mithril_store *closing; /* closed by the last call to leave */
} mx_store_object;

/* Enter a call on o: its handle, or NULL with Error set when closed. */
mithril_store *mx_store_enter(mx_store_object *o);
/* Leave it; the last call to leave a closed Store closes the handle. */
void mx_store_leave(mx_store_object *o);

/*
 * Run fn(module, args, kw) inside enter/leave of its Store argument (the
 * first positional argument, or the keyword "store"), so that closing the
 * Store from another thread never frees the handle under fn. Anything else
 * passes through untouched: fn's own mx_store_arg reports it.
 */
typedef PyObject *(*mx_store_fn)(PyObject *module, PyObject *args,
                                 PyObject *kw);
PyObject *mx_with_store(PyObject *module, PyObject *args, PyObject *kw,
                        mx_store_fn fn);
/* Define fn_guarded, fn run by mx_with_store (fn takes keywords). */
#define MX_GUARD_KW(fn)                                                        \
    static PyObject *fn##_guarded(PyObject *m, PyObject *a, PyObject *k)       \
    {                                                                          \
        return mx_with_store(m, a, k, fn);                                     \
    }
/* The same for fn(module, args), a METH_VARARGS function. */
#define MX_GUARD(fn)                                                           \
    static PyObject *fn##_kwless(PyObject *m, PyObject *a, PyObject *k)        \
    {                                                                          \
        (void)k;                                                               \
        return fn(m, a);                                                       \
    }                                                                          \
    static PyObject *fn##_guarded(PyObject *m, PyObject *a)                    \
    {                                                                          \
        return mx_with_store(m, a, NULL, fn##_kwless);                         \
    }

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
