/*
 * store.c - mithril_cache.Store: an open store and its blob methods.
 *
 *   Store(path, create=True, read_only=False)
 *   put(data) -> address          any contiguous bytes-like object
 *   put_file(path) -> address     streamed, memory stays bounded
 *   get(address) -> bytes         verified (CorruptError if not)
 *   get_file(address, path, mode=0o644)
 *   exists(address) -> bool
 *   delete(address)
 *   blob_info(address) -> {"logical_size", "stored_size", "compressed"}
 *   flush(), set_max_size(n), set_remote(url, read_only=False),
 *   set_compression(level), set_verify(on)
 *   close(); path (and dir) property; closed property; with-statement
 *
 * Every library call that touches files runs with the GIL released, so
 * threads sharing one Store run their I/O in parallel (the library handle
 * is thread safe). The object is an mx_store_object (ext.h), which counts
 * the calls in flight so close() never frees the handle under one of them:
 * the last call to leave closes it. The module's functions that take a
 * Store enter and leave it the same way (mx_with_store).
 */
#include "ext.h"

#include <stdlib.h>

typedef struct {
    mx_store_object base; /* must stay first: other parts cast to it */
} store_object;

/* The handle for one call, or NULL with an exception if closed. */
static mithril_store *
store_enter(store_object *self)
{
    return mx_store_enter(&self->base);
}

static void
store_leave(store_object *self)
{
    mx_store_leave(&self->base);
}

static PyObject *
store_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    static char *names[] = {"path", "create", "read_only", NULL};
    PyObject *path = NULL, *module;
    store_object *self;
    mithril_store *s = NULL;
    unsigned flags = 0;
    int create = 1, read_only = 0, rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|pp:Store", names,
                                     PyUnicode_FSConverter, &path, &create,
                                     &read_only)) {
        return NULL;
    }
    module = PyType_GetModule(type);
    if (!module) {
        Py_DECREF(path);
        return NULL;
    }
    if (create && !read_only) {
        flags |= MITHRIL_OPEN_CREATE;
    }
    if (read_only) {
        flags |= MITHRIL_OPEN_READONLY;
    }
    Py_BEGIN_ALLOW_THREADS rc =
        mithril_store_open(PyBytes_AS_STRING(path), flags, &s);
    Py_END_ALLOW_THREADS if (rc < 0)
    {
        mx_raise(module, rc, "cannot open store", PyBytes_AS_STRING(path));
        Py_DECREF(path);
        return NULL;
    }
    Py_DECREF(path);
    self = (store_object *)type->tp_alloc(type, 0);
    if (!self) {
        mithril_store_close(s);
        return NULL;
    }
    self->base.store = s;
    self->base.module = Py_NewRef(module);
    return (PyObject *)self;
}

static int
store_traverse(store_object *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->base.module);
    return 0;
}

static int
store_clear(store_object *self)
{
    Py_CLEAR(self->base.module);
    return 0;
}

static void
store_dealloc(store_object *self)
{
    PyTypeObject *type = Py_TYPE(self);
    mithril_store *s = self->base.store ? self->base.store : self->base.closing;

    PyObject_GC_UnTrack(self);
    self->base.store = NULL;
    self->base.closing = NULL;
    if (s) {
        Py_BEGIN_ALLOW_THREADS mithril_store_close(s);
        Py_END_ALLOW_THREADS
    }
    store_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyObject *
addr_result(const char *addr)
{
    return PyUnicode_FromStringAndSize(addr, MITHRIL_HEX_SIZE - 1);
}

static PyObject *
store_put(store_object *self, PyObject *arg)
{
    char addr[MITHRIL_HEX_SIZE];
    mithril_store *s;
    Py_buffer view;
    int rc;

    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (!(s = store_enter(self))) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS rc =
        mithril_store_put(s, view.buf, (size_t)view.len, addr);
    Py_END_ALLOW_THREADS store_leave(self);
    PyBuffer_Release(&view);
    if (rc < 0) {
        return mx_raise(self->base.module, rc, "cannot store", "<bytes>");
    }
    return addr_result(addr);
}

static PyObject *
store_put_file(store_object *self, PyObject *arg)
{
    char addr[MITHRIL_HEX_SIZE];
    PyObject *path = NULL, *ret = NULL;
    mithril_store *s;
    int rc;

    if (!PyUnicode_FSConverter(arg, &path)) {
        return NULL;
    }
    if (!(s = store_enter(self))) {
        goto out;
    }
    Py_BEGIN_ALLOW_THREADS rc =
        mithril_store_put_file(s, PyBytes_AS_STRING(path), addr);
    Py_END_ALLOW_THREADS store_leave(self);
    if (rc < 0) {
        mx_raise(self->base.module, rc, "cannot store",
                 PyBytes_AS_STRING(path));
        goto out;
    }
    ret = addr_result(addr);
out:
    Py_DECREF(path);
    return ret;
}

/* The address argument as UTF-8 (validated by the library). */
static const char *
addr_arg(PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "address must be str, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    return PyUnicode_AsUTF8(arg);
}

static PyObject *
store_get(store_object *self, PyObject *arg)
{
    const char *addr = addr_arg(arg);
    mithril_store *s;
    PyObject *ret;
    void *data = NULL;
    size_t len = 0;
    int rc;

    if (!addr || !(s = store_enter(self))) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS rc = mithril_store_get(s, addr, &data, &len);
    Py_END_ALLOW_THREADS store_leave(self);
    if (rc < 0) {
        return mx_raise(self->base.module, rc, "cannot get", addr);
    }
    ret = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    mithril_free(data);
    return ret;
}

static PyObject *
store_get_file(store_object *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"address", "path", "mode", NULL};
    PyObject *path = NULL, *ret = NULL;
    const char *addr;
    mithril_store *s;
    unsigned int mode = 0644;
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "sO&|I:get_file", names, &addr,
                                     PyUnicode_FSConverter, &path, &mode)) {
        return NULL;
    }
    if (!(s = store_enter(self))) {
        goto out;
    }
    Py_BEGIN_ALLOW_THREADS rc =
        mithril_store_get_file(s, addr, PyBytes_AS_STRING(path), mode);
    Py_END_ALLOW_THREADS store_leave(self);
    if (rc < 0) {
        mx_raise(self->base.module, rc, "cannot get", addr);
        goto out;
    }
    ret = Py_NewRef(Py_None);
out:
    Py_DECREF(path);
    return ret;
}

static PyObject *
store_exists(store_object *self, PyObject *arg)
{
    const char *addr = addr_arg(arg);
    mithril_store *s;
    int rc;

    if (!addr || !(s = store_enter(self))) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS rc = mithril_store_exists(s, addr);
    Py_END_ALLOW_THREADS store_leave(self);
    if (rc < 0) {
        return mx_raise(self->base.module, rc, "cannot check", addr);
    }
    return PyBool_FromLong(rc);
}

static PyObject *
store_delete(store_object *self, PyObject *arg)
{
    const char *addr = addr_arg(arg);
    mithril_store *s;
    int rc;

    if (!addr || !(s = store_enter(self))) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS rc = mithril_store_delete(s, addr);
    Py_END_ALLOW_THREADS store_leave(self);
    if (rc < 0) {
        return mx_raise(self->base.module, rc, "cannot delete", addr);
    }
    Py_RETURN_NONE;
}

static PyObject *
store_blob_info(store_object *self, PyObject *arg)
{
    const char *addr = addr_arg(arg);
    mithril_blob_info info;
    mithril_store *s;
    int rc;

    if (!addr || !(s = store_enter(self))) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS rc = mithril_store_blob_info(s, addr, &info);
    Py_END_ALLOW_THREADS store_leave(self);
    if (rc < 0) {
        return mx_raise(self->base.module, rc, "cannot read blob", addr);
    }
    return Py_BuildValue("{s:K,s:K,s:O}", "logical_size",
                         (unsigned long long)info.logical_size, "stored_size",
                         (unsigned long long)info.stored_size, "compressed",
                         info.compressed ? Py_True : Py_False);
}

static PyObject *
store_flush(store_object *self, PyObject *unused)
{
    mithril_store *s = store_enter(self);
    int rc;

    if (!s) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS rc = mithril_store_flush(s);
    Py_END_ALLOW_THREADS store_leave(self);
    if (rc < 0) {
        return mx_raise(self->base.module, rc, "cannot flush",
                        mithril_store_dir(s));
    }
    Py_RETURN_NONE;
}

static PyObject *
store_set_max_size(store_object *self, PyObject *arg)
{
    unsigned long long n = PyLong_AsUnsignedLongLong(arg);
    mithril_store *s;

    if (n == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!(s = store_enter(self))) {
        return NULL;
    }
    mithril_store_set_max_size(s, (uint64_t)n);
    store_leave(self);
    Py_RETURN_NONE;
}

static PyObject *
store_set_remote(store_object *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"url", "read_only", NULL};
    const char *url;
    mithril_store *s;
    int read_only = 0, rc;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "s|p:set_remote", names, &url,
                                     &read_only)) {
        return NULL;
    }
    if (!(s = store_enter(self))) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS rc = mithril_store_set_remote(s, url, read_only);
    Py_END_ALLOW_THREADS store_leave(self);
    if (rc < 0) {
        return mx_raise(self->base.module, rc, "bad remote", url);
    }
    Py_RETURN_NONE;
}

static PyObject *
store_set_compression(store_object *self, PyObject *arg)
{
    long level = PyLong_AsLong(arg);
    mithril_store *s;

    if (level == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (level < 0 || level > 100) {
        PyErr_SetString(PyExc_ValueError, "level must be 0..22");
        return NULL;
    }
    if (!(s = store_enter(self))) {
        return NULL;
    }
    mithril_store_set_compression(s, (int)level);
    store_leave(self);
    Py_RETURN_NONE;
}

static PyObject *
store_set_verify(store_object *self, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    mithril_store *s;

    if (on < 0 || !(s = store_enter(self))) {
        return NULL;
    }
    mithril_store_set_verify(s, on);
    store_leave(self);
    Py_RETURN_NONE;
}

static PyObject *
store_close(store_object *self, PyObject *unused)
{
    mithril_store *s = self->base.store;

    if (!s) {
        Py_RETURN_NONE;
    }
    self->base.store = NULL;
    if (self->base.active > 0) {
        /* Calls in flight on other threads: the last one closes. */
        self->base.closing = s;
        Py_RETURN_NONE;
    }
    Py_BEGIN_ALLOW_THREADS mithril_store_close(s);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *
store_enter_ctx(store_object *self, PyObject *unused)
{
    if (!self->base.store) {
        PyErr_SetString(mx_get_state(self->base.module)->error,
                        "the store is closed");
        return NULL;
    }
    return Py_NewRef(self);
}

static PyObject *
store_exit_ctx(store_object *self, PyObject *args)
{
    PyObject *r = store_close(self, NULL);

    if (!r) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static PyObject *
store_get_path(store_object *self, void *closure)
{
    mithril_store *s = self->base.store;

    if (!s) {
        PyErr_SetString(mx_get_state(self->base.module)->error,
                        "the store is closed");
        return NULL;
    }
    return PyUnicode_DecodeFSDefault(mithril_store_dir(s));
}

static PyObject *
store_get_closed(store_object *self, void *closure)
{
    return PyBool_FromLong(self->base.store == NULL);
}

static PyObject *
store_repr(store_object *self)
{
    if (!self->base.store) {
        return PyUnicode_FromString("<mithril_cache.Store (closed)>");
    }
    return PyUnicode_FromFormat("<mithril_cache.Store '%s'>",
                                mithril_store_dir(self->base.store));
}

static PyMethodDef store_methods[] = {
    {"put", (PyCFunction)store_put, METH_O,
     "put(data) -> address: store a bytes-like object"},
    {"put_file", (PyCFunction)store_put_file, METH_O,
     "put_file(path) -> address: store a file (streamed)"},
    {"get", (PyCFunction)store_get, METH_O,
     "get(address) -> bytes: the verified content"},
    {"get_file", (PyCFunction)(void (*)(void))store_get_file,
     METH_VARARGS | METH_KEYWORDS,
     "get_file(address, path, mode=0o644): write the content to path "
     "atomically"},
    {"exists", (PyCFunction)store_exists, METH_O, "exists(address) -> bool"},
    {"delete", (PyCFunction)store_delete, METH_O,
     "delete(address): remove a blob (NotFoundError if absent)"},
    {"blob_info", (PyCFunction)store_blob_info, METH_O,
     "blob_info(address) -> dict(logical_size, stored_size, compressed)"},
    {"flush", (PyCFunction)store_flush, METH_NOARGS,
     "flush(): apply batched recency updates now"},
    {"set_max_size", (PyCFunction)store_set_max_size, METH_O,
     "set_max_size(bytes): the size cap for gc"},
    {"set_remote", (PyCFunction)(void (*)(void))store_set_remote,
     METH_VARARGS | METH_KEYWORDS,
     "set_remote(url, read_only=False): attach a Redis remote"},
    {"set_compression", (PyCFunction)store_set_compression, METH_O,
     "set_compression(level): zstd level for new blobs (0: raw)"},
    {"set_verify", (PyCFunction)store_set_verify, METH_O,
     "set_verify(on): verify content on every get (default True)"},
    {"close", (PyCFunction)store_close, METH_NOARGS,
     "close(): release the store (also done when collected)"},
    {"__enter__", (PyCFunction)store_enter_ctx, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)store_exit_ctx, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef store_getset[] = {
    {"path", (getter)store_get_path, NULL, "the store folder (absolute)", NULL},
    {"dir", (getter)store_get_path, NULL, "the store folder (same as path)",
     NULL},
    {"closed", (getter)store_get_closed, NULL, "True after close()", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot store_slots[] = {
    {Py_tp_doc, "Store(path, create=True, read_only=False): an open mithril "
                "store.\nBlobs by BLAKE3 address; thread safe; use as a "
                "context manager\nor call close()."},
    {Py_tp_new, store_new},
    {Py_tp_dealloc, store_dealloc},
    {Py_tp_traverse, store_traverse},
    {Py_tp_clear, store_clear},
    {Py_tp_methods, store_methods},
    {Py_tp_getset, store_getset},
    {Py_tp_repr, store_repr},
    {0, NULL},
};

static PyType_Spec store_spec = {
    .name = "mithril_cache.Store",
    .basicsize = sizeof(store_object),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = store_slots,
};

int
mx_store_exec(PyObject *module)
{
    mx_state *st = mx_get_state(module);

    st->store_type = PyType_FromModuleAndSpec(module, &store_spec, NULL);
    if (!st->store_type) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "Store", st->store_type);
}
