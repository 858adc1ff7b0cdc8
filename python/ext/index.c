/*
 * index.c - the index part of mithril_cache._native: module functions
 * that take a Store as their first argument.
 *
 *   entry_put(store, key, items, meta="")   items: (name, addr, size, mode)
 *   entry_get(store, key) -> dict           NotFoundError on a miss
 *   entry_peek(store, key) -> dict          no recency, no counters
 *   entry_delete(store, key)
 *   entries(store) -> [dict]                least recently used first
 *   stats(store) -> dict; stats_zero(store)
 *   stats_add(store, counter, n=1)          "graph_hit", "remote_error", ...
 *   gc(store, max_bytes=0) -> dict; verify(store) -> dict; flush(store)
 *
 * An entry dict has key, meta, created_ns, last_access_ns, hits, signed
 * and items: a list of dicts with name, addr, size, mode. Every library
 * call runs with the GIL released; arguments are copied first.
 */
#include "ext.h"

#include <stdlib.h>
#include <string.h>

static PyObject *
entry_dict(const mithril_entry *e)
{
    PyObject *items = PyList_New((Py_ssize_t)e->n_items), *it, *d;
    size_t i;

    if (!items) {
        return NULL;
    }
    for (i = 0; i < e->n_items; i++) {
        it = Py_BuildValue("{s:s,s:s,s:K,s:I}", "name", e->items[i].name,
                           "addr", e->items[i].addr, "size",
                           (unsigned long long)e->items[i].size, "mode",
                           (unsigned int)e->items[i].mode);
        if (!it) {
            Py_DECREF(items);
            return NULL;
        }
        PyList_SET_ITEM(items, (Py_ssize_t)i, it);
    }
    d = Py_BuildValue("{s:s,s:s,s:L,s:L,s:K,s:O,s:N}", "key", e->key, "meta",
                      e->meta, "created_ns", (long long)e->created_ns,
                      "last_access_ns", (long long)e->last_access_ns, "hits",
                      (unsigned long long)e->hits, "signed",
                      e->is_signed ? Py_True : Py_False, "items", items);
    return d;
}

static void
free_items(mithril_item *items, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        free(items[i].name);
    }
    free(items);
}

/* Copy a sequence of (name, addr, size, mode) into library items. */
static int
parse_items(PyObject *seq, mithril_item **out, size_t *n_out)
{
    PyObject *fast = PySequence_Fast(seq, "items must be a sequence of "
                                          "(name, addr, size, mode)");
    mithril_item *items = NULL;
    Py_ssize_t n, i;
    const char *name, *addr;
    unsigned long long size;
    unsigned int mode;

    if (!fast) {
        return -1;
    }
    n = PySequence_Fast_GET_SIZE(fast);
    items = calloc(n ? (size_t)n : 1, sizeof(*items));
    if (!items) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "ssKI", &name,
                              &addr, &size, &mode)) {
            goto fail;
        }
        if (strlen(addr) >= sizeof(items[i].addr)) {
            PyErr_Format(PyExc_ValueError, "bad address '%s'", addr);
            goto fail;
        }
        items[i].name = strdup(name);
        if (!items[i].name) {
            PyErr_NoMemory();
            goto fail;
        }
        strcpy(items[i].addr, addr);
        items[i].size = size;
        items[i].mode = mode;
    }
    Py_DECREF(fast);
    *out = items;
    *n_out = (size_t)n;
    return 0;

fail:
    Py_DECREF(fast);
    free_items(items, (size_t)n);
    return -1;
}

static PyObject *
py_entry_put(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *names[] = {"store", "key", "items", "meta", NULL};
    PyObject *store, *seq;
    const char *key, *meta = "";
    mithril_item *items = NULL;
    mithril_store *s;
    char *key_copy, *meta_copy;
    size_t n = 0;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OsO|s:entry_put", names, &store,
                                     &key, &seq, &meta)) {
        return NULL;
    }
    if (!(s = mx_store_arg(module, store, "Store argument")) ||
        parse_items(seq, &items, &n) < 0) {
        return NULL;
    }
    key_copy = strdup(key);
    meta_copy = strdup(meta);
    if (!key_copy || !meta_copy) {
        free(key_copy);
        free(meta_copy);
        free_items(items, n);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS rc =
        mithril_entry_put(s, key_copy, items, n, meta_copy);
    Py_END_ALLOW_THREADS free_items(items, n);
    free(meta_copy);
    if (rc < 0) {
        mx_raise(module, rc, "cannot put entry", key_copy);
        free(key_copy);
        return NULL;
    }
    free(key_copy);
    Py_RETURN_NONE;
}

/* entry_get and entry_peek: peek skips recency and counters. */
static PyObject *
lookup(PyObject *module, PyObject *args, PyObject *kw, int peek)
{
    static char *names[] = {"store", "key", NULL};
    PyObject *store, *d;
    mithril_entry *e = NULL;
    mithril_store *s;
    const char *key;
    char *copy;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "Os", names, &store, &key)) {
        return NULL;
    }
    if (!(s = mx_store_arg(module, store, "Store argument"))) {
        return NULL;
    }
    if (!(copy = strdup(key))) {
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS rc =
        peek ? mithril_entry_peek(s, copy, &e) : mithril_entry_get(s, copy, &e);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        mx_raise(module, rc, "no entry", copy);
        free(copy);
        return NULL;
    }
    free(copy);
    d = entry_dict(e);
    mithril_entry_free(e);
    return d;
}

static PyObject *
py_entry_get(PyObject *module, PyObject *args, PyObject *kw)
{
    return lookup(module, args, kw, 0);
}

static PyObject *
py_entry_peek(PyObject *module, PyObject *args, PyObject *kw)
{
    return lookup(module, args, kw, 1);
}

static PyObject *
py_entry_delete(PyObject *module, PyObject *args)
{
    PyObject *store;
    mithril_store *s;
    const char *key;
    char *copy;
    int rc;

    if (!PyArg_ParseTuple(args, "Os:entry_delete", &store, &key)) {
        return NULL;
    }
    if (!(s = mx_store_arg(module, store, "Store argument"))) {
        return NULL;
    }
    if (!(copy = strdup(key))) {
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS rc = mithril_entry_delete(s, copy);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        mx_raise(module, rc, "cannot delete entry", copy);
        free(copy);
        return NULL;
    }
    free(copy);
    Py_RETURN_NONE;
}

/* Entries are gathered without the GIL, converted with it. */
struct gather {
    mithril_entry **v;
    size_t n, cap;
};

static int
copy_entry(const mithril_entry *e, mithril_entry **out)
{
    mithril_entry *c = calloc(1, sizeof(*c));
    size_t i;

    if (!c) {
        return -1;
    }
    *c = *e;
    c->key = strdup(e->key);
    c->meta = strdup(e->meta);
    c->items = calloc(e->n_items ? e->n_items : 1, sizeof(*c->items));
    c->n_items = 0;
    if (!c->key || !c->meta || !c->items) {
        mithril_entry_free(c);
        return -1;
    }
    for (i = 0; i < e->n_items; i++) {
        c->items[i] = e->items[i];
        c->items[i].name = strdup(e->items[i].name);
        c->n_items = i + 1;
        if (!c->items[i].name) {
            mithril_entry_free(c);
            return -1;
        }
    }
    *out = c;
    return 0;
}

static int
gather_one(const mithril_entry *e, void *ctx)
{
    struct gather *g = ctx;
    mithril_entry **v;

    if (g->n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 64;
        v = realloc(g->v, g->cap * sizeof(*v));
        if (!v) {
            return -1;
        }
        g->v = v;
    }
    return copy_entry(e, &g->v[g->n]) < 0 ? -1 : (g->n++, 0);
}

static PyObject *
py_entries(PyObject *module, PyObject *args)
{
    struct gather g = {NULL, 0, 0};
    PyObject *store, *list = NULL, *d;
    mithril_store *s;
    size_t i;
    int rc;

    if (!PyArg_ParseTuple(args, "O:entries", &store)) {
        return NULL;
    }
    if (!(s = mx_store_arg(module, store, "Store argument"))) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS rc = mithril_entry_foreach(s, gather_one, &g);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        mx_raise(module, rc, "cannot list entries", mithril_store_dir(s));
        goto out;
    }
    list = PyList_New(0);
    for (i = 0; list && i < g.n; i++) {
        d = entry_dict(g.v[i]);
        if (!d || PyList_Append(list, d) < 0) {
            Py_XDECREF(d);
            Py_CLEAR(list);
            break;
        }
        Py_DECREF(d);
    }

out:
    for (i = 0; i < g.n; i++) {
        mithril_entry_free(g.v[i]);
    }
    free(g.v);
    return list;
}

static PyObject *
py_stats(PyObject *module, PyObject *args)
{
    PyObject *store;
    mithril_store *s;
    mithril_stats st;
    int rc;

    if (!PyArg_ParseTuple(args, "O:stats", &store)) {
        return NULL;
    }
    if (!(s = mx_store_arg(module, store, "Store argument"))) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS rc = mithril_stats_get(s, &st);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        return mx_raise(module, rc, "cannot read statistics",
                        mithril_store_dir(s));
    }
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}",
        "entries", (unsigned long long)st.entries, "size_bytes",
        (unsigned long long)st.size_bytes, "logical_bytes",
        (unsigned long long)st.logical_bytes, "blobs",
        (unsigned long long)st.blobs, "hits", (unsigned long long)st.hits,
        "misses", (unsigned long long)st.misses, "puts",
        (unsigned long long)st.puts, "evictions",
        (unsigned long long)st.evictions, "max_size_bytes",
        (unsigned long long)st.max_size_bytes, "graph_hits",
        (unsigned long long)st.graph_hits, "graph_misses",
        (unsigned long long)st.graph_misses, "remote_hits",
        (unsigned long long)st.remote_hits, "remote_misses",
        (unsigned long long)st.remote_misses, "remote_errors",
        (unsigned long long)st.remote_errors, "rejected",
        (unsigned long long)st.rejected);
}

static PyObject *
py_stats_zero(PyObject *module, PyObject *args)
{
    PyObject *store;
    mithril_store *s;
    int rc;

    if (!PyArg_ParseTuple(args, "O:stats_zero", &store)) {
        return NULL;
    }
    if (!(s = mx_store_arg(module, store, "Store argument"))) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS rc = mithril_stats_zero(s);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        return mx_raise(module, rc, "cannot zero statistics",
                        mithril_store_dir(s));
    }
    Py_RETURN_NONE;
}

static const struct {
    const char *name;
    int counter;
} counter_names[] = {
    {"graph_hit", MITHRIL_COUNTER_GRAPH_HIT},
    {"graph_hits", MITHRIL_COUNTER_GRAPH_HIT},
    {"graph_miss", MITHRIL_COUNTER_GRAPH_MISS},
    {"graph_misses", MITHRIL_COUNTER_GRAPH_MISS},
    {"remote_hit", MITHRIL_COUNTER_REMOTE_HIT},
    {"remote_hits", MITHRIL_COUNTER_REMOTE_HIT},
    {"remote_miss", MITHRIL_COUNTER_REMOTE_MISS},
    {"remote_misses", MITHRIL_COUNTER_REMOTE_MISS},
    {"remote_error", MITHRIL_COUNTER_REMOTE_ERROR},
    {"remote_errors", MITHRIL_COUNTER_REMOTE_ERROR},
    {"rejected", MITHRIL_COUNTER_REJECTED},
};

static PyObject *
py_stats_add(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *names[] = {"store", "counter", "n", NULL};
    unsigned long long n = 1;
    const char *name;
    PyObject *store;
    mithril_store *s;
    size_t i;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "Os|K:stats_add", names, &store,
                                     &name, &n)) {
        return NULL;
    }
    if (!(s = mx_store_arg(module, store, "Store argument"))) {
        return NULL;
    }
    for (i = 0; i < sizeof(counter_names) / sizeof(counter_names[0]); i++) {
        if (!strcmp(name, counter_names[i].name)) {
            break;
        }
    }
    if (i == sizeof(counter_names) / sizeof(counter_names[0])) {
        return mx_raise(module, MITHRIL_EINVAL, "unknown counter", name);
    }
    /* A few atomic adds on a mapped page: no need to drop the GIL. */
    rc = mithril_stats_add(s, counter_names[i].counter, n);
    if (rc < 0) {
        return mx_raise(module, rc, "cannot count", name);
    }
    Py_RETURN_NONE;
}

static PyObject *
py_gc(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *names[] = {"store", "max_bytes", NULL};
    unsigned long long max = 0;
    mithril_gc_result r;
    PyObject *store;
    mithril_store *s;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|K:gc", names, &store, &max)) {
        return NULL;
    }
    if (!(s = mx_store_arg(module, store, "Store argument"))) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS rc = mithril_store_gc(s, max, &r);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        return mx_raise(module, rc, "cannot collect garbage in",
                        mithril_store_dir(s));
    }
    return Py_BuildValue("{s:K,s:K,s:K,s:K}", "entries_removed",
                         (unsigned long long)r.entries_removed, "blobs_removed",
                         (unsigned long long)r.blobs_removed, "bytes_removed",
                         (unsigned long long)r.bytes_removed, "size_after",
                         (unsigned long long)r.size_after);
}

/* Problems are collected without the GIL as "what\0which\0" pairs. */
struct problems {
    char *buf;
    size_t len, cap;
};

static void
keep_problem(const char *what, const char *which, void *ctx)
{
    struct problems *p = ctx;
    size_t a = strlen(what) + 1, b = strlen(which) + 1;
    char *nb;

    if (p->len + a + b > p->cap) {
        p->cap = 2 * (p->len + a + b) + 256;
        nb = realloc(p->buf, p->cap);
        if (!nb) {
            return; /* the counts still tell; the list is best effort */
        }
        p->buf = nb;
    }
    memcpy(p->buf + p->len, what, a);
    memcpy(p->buf + p->len + a, which, b);
    p->len += a + b;
}

static PyObject *
py_verify(PyObject *module, PyObject *args)
{
    struct problems p = {NULL, 0, 0};
    mithril_verify_result r;
    PyObject *store, *list = NULL, *t, *ret = NULL;
    mithril_store *s;
    size_t off = 0, a;
    int rc;

    if (!PyArg_ParseTuple(args, "O:verify", &store)) {
        return NULL;
    }
    if (!(s = mx_store_arg(module, store, "Store argument"))) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS rc = mithril_store_verify(s, keep_problem, &p, &r);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        mx_raise(module, rc, "cannot verify", mithril_store_dir(s));
        goto out;
    }
    if (!(list = PyList_New(0))) {
        goto out;
    }
    while (off < p.len) {
        a = strlen(p.buf + off) + 1;
        t = Py_BuildValue("(ss)", p.buf + off, p.buf + off + a);
        off += a + strlen(p.buf + off + a) + 1;
        if (!t || PyList_Append(list, t) < 0) {
            Py_XDECREF(t);
            goto out;
        }
        Py_DECREF(t);
    }
    ret = Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:O}", "blobs_checked",
                        (unsigned long long)r.blobs_checked, "blobs_corrupt",
                        (unsigned long long)r.blobs_corrupt, "entries_checked",
                        (unsigned long long)r.entries_checked, "entries_broken",
                        (unsigned long long)r.entries_broken, "temp_removed",
                        (unsigned long long)r.temp_removed, "problems", list);

out:
    Py_XDECREF(list);
    free(p.buf);
    return ret;
}

static PyObject *
py_flush(PyObject *module, PyObject *args)
{
    PyObject *store;
    mithril_store *s;
    int rc;

    if (!PyArg_ParseTuple(args, "O:flush", &store)) {
        return NULL;
    }
    if (!(s = mx_store_arg(module, store, "Store argument"))) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS rc = mithril_store_flush(s);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        return mx_raise(module, rc, "cannot flush", mithril_store_dir(s));
    }
    Py_RETURN_NONE;
}

/* Each runs inside enter/leave of its Store argument (ext.h). */
MX_GUARD_KW(py_entry_put)
MX_GUARD_KW(py_entry_get)
MX_GUARD_KW(py_entry_peek)
MX_GUARD_KW(py_stats_add)
MX_GUARD_KW(py_gc)
MX_GUARD(py_entry_delete)
MX_GUARD(py_entries)
MX_GUARD(py_stats)
MX_GUARD(py_stats_zero)
MX_GUARD(py_verify)
MX_GUARD(py_flush)

#define KW(fn) (PyCFunction)(void (*)(void))(fn), METH_VARARGS | METH_KEYWORDS

static PyMethodDef index_methods[] = {
    {"entry_put", KW(py_entry_put_guarded),
     "entry_put(store, key, items, meta=''): record an entry; items is a "
     "sequence of (name, addr, size, mode) of blobs already stored."},
    {"entry_get", KW(py_entry_get_guarded),
     "entry_get(store, key) -> dict: look key up, refreshing its recency; "
     "NotFoundError on a miss. Treat a blob missing later as a miss too."},
    {"entry_peek", KW(py_entry_peek_guarded),
     "entry_peek(store, key) -> dict: look up without touching recency or "
     "counters."},
    {"entry_delete", py_entry_delete_guarded, METH_VARARGS,
     "entry_delete(store, key): remove an entry (NotFoundError if absent)."},
    {"entries", py_entries_guarded, METH_VARARGS,
     "entries(store) -> list of entry dicts, least recently used first."},
    {"stats", py_stats_guarded, METH_VARARGS,
     "stats(store) -> dict of counters and sizes."},
    {"stats_zero", py_stats_zero_guarded, METH_VARARGS,
     "stats_zero(store): reset the event counters, not the sizes."},
    {"stats_add", KW(py_stats_add_guarded),
     "stats_add(store, counter, n=1): add to graph_hit, graph_miss, "
     "remote_hit, remote_miss, remote_error or rejected."},
    {"gc", KW(py_gc_guarded),
     "gc(store, max_bytes=0) -> dict: evict least recently used entries "
     "down to max_bytes (0: the configured cap)."},
    {"verify", py_verify_guarded, METH_VARARGS,
     "verify(store) -> dict: re-hash every blob, check every entry, repair; "
     "'problems' lists (what, which) pairs."},
    {"flush", py_flush_guarded, METH_VARARGS,
     "flush(store): apply batched recency updates now."},
    {NULL, NULL, 0, NULL},
};

int
mx_index_exec(PyObject *module)
{
    return PyModule_AddFunctions(module, index_methods);
}
