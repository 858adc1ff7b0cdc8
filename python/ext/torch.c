/*
 * torch.c - the torch part of mithril_cache._native: the working folder
 * to the store and back (src/capture.c does the work).
 *
 *   capture(store, work_dir, toolchain) -> dict
 *   restore(store, work_dir, toolchain=None) -> dict
 *   restore_entry(store, work_dir, key) -> dict
 *   put_files_entry(store, key, work_dir, relnames, meta) -> dict
 *   touch_path(store, work_dir, path, toolchain=None) -> bool
 *
 * Every dict has the keys entries, files, bytes, skipped, rejected.
 * Folders may be str, bytes or os.PathLike. The GIL is released around
 * each library call.
 *
 * touch_path refreshes the recency of the captured entry owning a file
 * (an open seen by the audit hook). It asks the index once per entry and
 * process: the keys already touched are remembered in a small table of
 * 64-bit digests (store folder and key), guarded by a mutex because the
 * lookup runs without the GIL. It answers True when that entry exists.
 *
 * Limitation: the Store must stay open during a call; closing it from
 * another thread while a call runs without the GIL is not guarded here.
 */
#include "ext.h"

#include <internal.h>

#include <pthread.h>

#define TOUCH_MAX (1u << 20) /* remembered keys before the table resets */

static pthread_mutex_t touch_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t *touch_tab;
static size_t touch_cap, touch_n;

/* 1 if h was already in the table; otherwise adds it (if it can). */
static int
touch_seen(uint64_t h, int add)
{
    uint64_t *nt;
    size_t i, ncap;
    int found = 0;

    h |= 1; /* 0 marks a free slot */
    pthread_mutex_lock(&touch_mu);
    for (i = touch_cap ? h & (touch_cap - 1) : 0; touch_cap && touch_tab[i];
         i = (i + 1) & (touch_cap - 1)) {
        if (touch_tab[i] == h) {
            found = 1;
            goto out;
        }
    }
    if (!add) {
        goto out;
    }
    if ((touch_n + 1) * 2 > touch_cap) {
        ncap = touch_cap ? touch_cap * 2 : 1024;
        if (touch_n >= TOUCH_MAX) {
            ncap = 1024;
            touch_n = 0;
        }
        nt = calloc(ncap, sizeof(*nt));
        if (!nt) {
            goto out;
        }
        for (i = 0; i < touch_cap && touch_n; i++) {
            size_t j;

            if (!touch_tab[i]) {
                continue;
            }
            for (j = touch_tab[i] & (ncap - 1); nt[j];
                 j = (j + 1) & (ncap - 1)) {
            }
            nt[j] = touch_tab[i];
        }
        free(touch_tab);
        touch_tab = nt;
        touch_cap = ncap;
    }
    for (i = h & (touch_cap - 1); touch_tab[i]; i = (i + 1) & (touch_cap - 1)) {
    }
    touch_tab[i] = h;
    touch_n++;
out:
    pthread_mutex_unlock(&touch_mu);
    return found;
}

static PyObject *
py_capture(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *names[] = {"store", "work_dir", "toolchain", NULL};
    mithril_sync_result r = {0};
    PyObject *store_obj, *dir = NULL, *ret = NULL;
    const char *toolchain;
    mithril_store *s;
    int code;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO&s:capture", names,
                                     &store_obj, PyUnicode_FSConverter, &dir,
                                     &toolchain)) {
        return NULL;
    }
    s = mx_store_arg(module, store_obj, "capture");
    if (!s) {
        goto out;
    }
    Py_BEGIN_ALLOW_THREADS code =
        mithril_capture(s, PyBytes_AS_STRING(dir), toolchain, &r);
    Py_END_ALLOW_THREADS if (code < 0)
    {
        mx_raise(module, code, "capture", PyBytes_AS_STRING(dir));
        goto out;
    }
    ret = mx_sync_result_dict(&r);
out:
    Py_XDECREF(dir);
    return ret;
}

static PyObject *
py_restore(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *names[] = {"store", "work_dir", "toolchain", NULL};
    mithril_sync_result r = {0};
    PyObject *store_obj, *dir = NULL, *tc_obj = Py_None, *ret = NULL;
    const char *toolchain;
    mithril_store *s;
    int code;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO&|O:restore", names,
                                     &store_obj, PyUnicode_FSConverter, &dir,
                                     &tc_obj)) {
        return NULL;
    }
    s = mx_store_arg(module, store_obj, "restore");
    if (!s || mx_opt_text(tc_obj, &toolchain) < 0) {
        goto out;
    }
    Py_BEGIN_ALLOW_THREADS code =
        mithril_restore(s, PyBytes_AS_STRING(dir), toolchain, &r);
    Py_END_ALLOW_THREADS if (code < 0)
    {
        mx_raise(module, code, "restore", PyBytes_AS_STRING(dir));
        goto out;
    }
    ret = mx_sync_result_dict(&r);
out:
    Py_XDECREF(dir);
    return ret;
}

static PyObject *
py_restore_entry(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *names[] = {"store", "work_dir", "key", NULL};
    mithril_sync_result r = {0};
    PyObject *store_obj, *dir = NULL, *ret = NULL;
    const char *key;
    mithril_store *s;
    int code;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO&s:restore_entry", names,
                                     &store_obj, PyUnicode_FSConverter, &dir,
                                     &key)) {
        return NULL;
    }
    s = mx_store_arg(module, store_obj, "restore_entry");
    if (!s) {
        goto out;
    }
    Py_BEGIN_ALLOW_THREADS code =
        mithril_restore_entry(s, PyBytes_AS_STRING(dir), key, &r);
    Py_END_ALLOW_THREADS if (code < 0)
    {
        mx_raise(module, code, "restore entry", key);
        goto out;
    }
    ret = mx_sync_result_dict(&r);
out:
    Py_XDECREF(dir);
    return ret;
}

static PyObject *
py_put_files_entry(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *names[] = {"store",    "key",  "work_dir",
                            "relnames", "meta", NULL};
    mithril_sync_result r = {0};
    PyObject *store_obj, *dir = NULL, *list, *seq = NULL, *ret = NULL;
    PyObject **conv = NULL;
    const char **rel = NULL;
    const char *key, *meta = NULL;
    Py_ssize_t n = 0, i, done = 0;
    mithril_store *s;
    int code;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OsO&O|z:put_files_entry", names,
                                     &store_obj, &key, PyUnicode_FSConverter,
                                     &dir, &list, &meta)) {
        return NULL;
    }
    s = mx_store_arg(module, store_obj, "put_files_entry");
    if (!s) {
        goto out;
    }
    seq = PySequence_Fast(list, "relnames: want a sequence of str");
    if (!seq) {
        goto out;
    }
    n = PySequence_Fast_GET_SIZE(seq);
    conv = PyMem_Calloc(n ? n : 1, sizeof(*conv));
    rel = PyMem_Calloc(n ? n : 1, sizeof(*rel));
    if (!conv || !rel) {
        PyErr_NoMemory();
        goto out;
    }
    for (i = 0; i < n; i++, done++) {
        if (!PyUnicode_FSConverter(PySequence_Fast_GET_ITEM(seq, i),
                                   &conv[i])) {
            goto out;
        }
        rel[i] = PyBytes_AS_STRING(conv[i]);
    }
    Py_BEGIN_ALLOW_THREADS code = mi_capture_put_files(
        s, key, PyBytes_AS_STRING(dir), rel, (size_t)n, meta, &r);
    Py_END_ALLOW_THREADS if (code < 0)
    {
        mx_raise(module, code, "put files entry", key);
        goto out;
    }
    ret = mx_sync_result_dict(&r);
out:
    for (i = 0; conv && i < done; i++) {
        Py_XDECREF(conv[i]);
    }
    PyMem_Free(conv);
    PyMem_Free(rel);
    Py_XDECREF(seq);
    Py_XDECREF(dir);
    return ret;
}

static PyObject *
py_touch_path(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *names[] = {"store", "work_dir", "path", "toolchain", NULL};
    PyObject *store_obj, *dir = NULL, *path = NULL, *tc_obj = Py_None;
    PyObject *ret = NULL;
    uint8_t digest[MITHRIL_BLAKE3_OUT_LEN];
    const char *toolchain;
    char key[600];
    mithril_entry *e = NULL;
    mithril_blake3 h;
    mithril_store *s;
    uint64_t tag;
    int code;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO&O&|O:touch_path", names,
                                     &store_obj, PyUnicode_FSConverter, &dir,
                                     PyUnicode_FSConverter, &path, &tc_obj)) {
        goto out;
    }
    s = mx_store_arg(module, store_obj, "touch_path");
    if (!s || mx_opt_text(tc_obj, &toolchain) < 0) {
        goto out;
    }
    if (!toolchain) {
        toolchain = getenv("MITHRIL_TOOLCHAIN");
    }
    if (!toolchain || !*toolchain ||
        mi_capture_key_for_path(PyBytes_AS_STRING(dir), PyBytes_AS_STRING(path),
                                toolchain, key, sizeof(key)) < 0) {
        ret = Py_NewRef(Py_False);
        goto out;
    }
    mithril_blake3_init(&h);
    mithril_blake3_update(&h, mithril_store_dir(s),
                          strlen(mithril_store_dir(s)) + 1);
    mithril_blake3_update(&h, key, strlen(key));
    mithril_blake3_finalize(&h, digest, sizeof(digest));
    memcpy(&tag, digest, sizeof(tag));
    if (touch_seen(tag, 0)) {
        ret = Py_NewRef(Py_True);
        goto out;
    }
    Py_BEGIN_ALLOW_THREADS code = mithril_entry_get(s, key, &e);
    Py_END_ALLOW_THREADS if (code == MITHRIL_ENOTFOUND)
    {
        ret = Py_NewRef(Py_False);
        goto out;
    }
    if (code < 0) {
        mx_raise(module, code, "touch", key);
        goto out;
    }
    mithril_entry_free(e);
    touch_seen(tag, 1);
    ret = Py_NewRef(Py_True);
out:
    Py_XDECREF(dir);
    Py_XDECREF(path);
    return ret;
}

/* Each runs inside enter/leave of its Store argument (ext.h). */
MX_GUARD_KW(py_capture)
MX_GUARD_KW(py_restore)
MX_GUARD_KW(py_restore_entry)
MX_GUARD_KW(py_put_files_entry)
MX_GUARD_KW(py_touch_path)

static PyMethodDef torch_methods[] = {
    {"capture", (PyCFunction)(void (*)(void))py_capture_guarded,
     METH_VARARGS | METH_KEYWORDS,
     "capture(store, work_dir, toolchain) -> dict: record what torch wrote "
     "under work_dir as entries tagged with toolchain."},
    {"restore", (PyCFunction)(void (*)(void))py_restore_guarded,
     METH_VARARGS | METH_KEYWORDS,
     "restore(store, work_dir, toolchain=None) -> dict: write the entries "
     "of toolchain (all torch entries for None) missing from work_dir."},
    {"restore_entry", (PyCFunction)(void (*)(void))py_restore_entry_guarded,
     METH_VARARGS | METH_KEYWORDS,
     "restore_entry(store, work_dir, key) -> dict: write one entry's files "
     "into work_dir (NotFoundError if absent)."},
    {"put_files_entry", (PyCFunction)(void (*)(void))py_put_files_entry_guarded,
     METH_VARARGS | METH_KEYWORDS,
     "put_files_entry(store, key, work_dir, relnames, meta) -> dict: store "
     "the files (relative to work_dir) and record them as one entry."},
    {"touch_path", (PyCFunction)(void (*)(void))py_touch_path_guarded,
     METH_VARARGS | METH_KEYWORDS,
     "touch_path(store, work_dir, path, toolchain=None) -> bool: refresh "
     "the recency of the captured entry owning path (toolchain defaults "
     "to $MITHRIL_TOOLCHAIN); False if there is none."},
    {NULL, NULL, 0, NULL},
};

int
mx_torch_exec(PyObject *module)
{
    return PyModule_AddFunctions(module, torch_methods);
}
