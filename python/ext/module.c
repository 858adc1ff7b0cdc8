/*
 * module.c - mithril_cache._native: multi-phase initialization, module
 * state with the exception types, and the mapping of library error codes
 * to Python exceptions. Each part of the module (store.c, index.c, torch.c,
 * remote.c) adds itself in the exec slot below.
 */
#include "ext.h"

mx_state *
mx_get_state(PyObject *module)
{
    return (mx_state *)PyModule_GetState(module);
}

PyObject *
mx_raise(PyObject *module, int code, const char *what, const char *which)
{
    mx_state *st = mx_get_state(module);
    PyObject *type = st->error;

    if (code == MITHRIL_ENOTFOUND) {
        type = st->not_found;
    } else if (code == MITHRIL_ECORRUPT) {
        type = st->corrupt;
    } else if (code == MITHRIL_EINVAL || code == MITHRIL_EPATH) {
        type = st->invalid;
    }
    PyErr_Format(type, "%s '%s': %s", what, which ? which : "",
                 mithril_strerror(code));
    return NULL;
}

mithril_store *
mx_store_arg(PyObject *module, PyObject *obj, const char *fn)
{
    mx_state *st = mx_get_state(module);
    mithril_store *s;

    if (!st->store_type ||
        !PyObject_TypeCheck(obj, (PyTypeObject *)st->store_type)) {
        PyErr_Format(PyExc_TypeError, "%s: want a mithril_cache.Store", fn);
        return NULL;
    }
    s = ((mx_store_object *)obj)->store;
    if (!s) {
        mx_raise(module, MITHRIL_EINVAL, "store is closed", "");
    }
    return s;
}

mithril_store *
mx_store_enter(mx_store_object *o)
{
    if (!o->store) {
        PyErr_SetString(mx_get_state(o->module)->error, "the store is closed");
        return NULL;
    }
    o->active++;
    return o->store;
}

void
mx_store_leave(mx_store_object *o)
{
    mithril_store *s;

    if (--o->active == 0 && o->closing) {
        s = o->closing;
        o->closing = NULL;
        Py_BEGIN_ALLOW_THREADS mithril_store_close(s);
        Py_END_ALLOW_THREADS
    }
}

PyObject *
mx_with_store(PyObject *module, PyObject *args, PyObject *kw, mx_store_fn fn)
{
    mx_state *st = mx_get_state(module);
    mx_store_object *o = NULL;
    PyObject *obj = NULL, *ret;

    if (PyTuple_GET_SIZE(args) > 0) {
        obj = PyTuple_GET_ITEM(args, 0);
    } else if (kw && PyDict_Check(kw)) {
        obj = PyDict_GetItemString(kw, "store");
    }
    if (obj && st->store_type &&
        PyObject_TypeCheck(obj, (PyTypeObject *)st->store_type) &&
        ((mx_store_object *)obj)->store) {
        o = (mx_store_object *)obj;
        Py_INCREF(obj);
        o->active++;
    }
    ret = fn(module, args, kw);
    if (o) {
        mx_store_leave(o);
        Py_DECREF(obj);
    }
    return ret;
}

PyObject *
mx_sync_result_dict(const mithril_sync_result *r)
{
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K}", "entries", (unsigned long long)r->entries,
        "files", (unsigned long long)r->files, "bytes",
        (unsigned long long)r->bytes, "skipped", (unsigned long long)r->skipped,
        "rejected", (unsigned long long)r->rejected);
}

int
mx_opt_text(PyObject *obj, const char **out)
{
    if (obj == Py_None) {
        *out = NULL;
        return 0;
    }
    if (!PyUnicode_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "want a str or None");
        return -1;
    }
    *out = PyUnicode_AsUTF8(obj);
    return *out ? 0 : -1;
}

static int
add_error(PyObject *module, PyObject **slot, const char *name, PyObject *bases)
{
    *slot = PyErr_NewException(name, bases, NULL);
    if (!*slot) {
        return -1;
    }
    return PyModule_AddObjectRef(module, strrchr(name, '.') + 1, *slot);
}

static int
exec_module(PyObject *module)
{
    mx_state *st = mx_get_state(module);
    PyObject *bases;
    int rc;

    if (add_error(module, &st->error, "mithril_cache.Error", NULL) < 0) {
        return -1;
    }
    bases = PyTuple_Pack(2, st->error, PyExc_KeyError);
    rc = bases ? add_error(module, &st->not_found,
                           "mithril_cache.NotFoundError", bases)
               : -1;
    Py_XDECREF(bases);
    if (rc < 0) {
        return -1;
    }
    if (add_error(module, &st->corrupt, "mithril_cache.CorruptError",
                  st->error) < 0) {
        return -1;
    }
    bases = PyTuple_Pack(2, st->error, PyExc_ValueError);
    rc = bases ? add_error(module, &st->invalid, "mithril_cache.InvalidError",
                           bases)
               : -1;
    Py_XDECREF(bases);
    if (rc < 0) {
        return -1;
    }
    if (PyModule_AddStringConstant(module, "VERSION", MITHRIL_VERSION) < 0) {
        return -1;
    }
    if (mx_store_exec(module) < 0 || mx_index_exec(module) < 0 ||
        mx_key_exec(module) < 0 || mx_torch_exec(module) < 0 ||
        mx_remote_exec(module) < 0) {
        return -1;
    }
    return 0;
}

static int
traverse_module(PyObject *module, visitproc visit, void *arg)
{
    mx_state *st = mx_get_state(module);

    Py_VISIT(st->error);
    Py_VISIT(st->not_found);
    Py_VISIT(st->corrupt);
    Py_VISIT(st->invalid);
    Py_VISIT(st->store_type);
    return 0;
}

static int
clear_module(PyObject *module)
{
    mx_state *st = mx_get_state(module);

    Py_CLEAR(st->error);
    Py_CLEAR(st->not_found);
    Py_CLEAR(st->corrupt);
    Py_CLEAR(st->invalid);
    Py_CLEAR(st->store_type);
    return 0;
}

static void
free_module(void *module)
{
    clear_module((PyObject *)module);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mithril_cache._native",
    .m_doc = "C core of mithril_cache: the store, index and torch capture.",
    .m_size = sizeof(mx_state),
    .m_slots = slots,
    .m_traverse = traverse_module,
    .m_clear = clear_module,
    .m_free = free_module,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&module_def);
}
