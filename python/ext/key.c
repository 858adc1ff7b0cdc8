/*
 * key.c - the key part of mithril_cache._native: storage keys, device
 * classes, size parsing and a store's effective configuration.
 *
 *   storage_key(graph_hash, inputs, device, toolchain="") -> str
 *       graph_hash: 32 bytes or 64 hex characters. inputs: a sequence whose
 *       items are (dtype, dims) pairs, dims a sequence of ints with None
 *       for a dynamic dimension, or "DTYPE:DIMS" strings. device: a class
 *       ("cpu:avx2", "cuda:9.0", ...) or "auto" for this machine's.
 *   device_detect() -> str, cpu_isa() -> str, parse_size(str) -> int
 *   config(store) -> {name: (value, source)}
 *
 * Malformed values raise InvalidError (a ValueError); wrong types raise
 * TypeError. The functions hold the GIL: none of them does I/O except
 * the first device detection, which is cached for the process.
 */
#include "ext.h"

#include <ctype.h>

/* 32 raw bytes, or 64 hex characters (either case), into out. */
static int
graph_from_object(PyObject *module, PyObject *obj, uint8_t out[32])
{
    char hex[65];
    const char *text;
    Py_ssize_t len, i;

    if (PyBytes_Check(obj)) {
        if (PyBytes_GET_SIZE(obj) != 32) {
            PyErr_SetString(mx_get_state(module)->invalid,
                            "graph_hash: want 32 bytes");
            return -1;
        }
        memcpy(out, PyBytes_AS_STRING(obj), 32);
        return 0;
    }
    if (!PyUnicode_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "graph_hash: want bytes or a hex str");
        return -1;
    }
    text = PyUnicode_AsUTF8AndSize(obj, &len);
    if (!text) {
        return -1;
    }
    if (len != 64) {
        mx_raise(module, MITHRIL_EINVAL, "graph_hash: want 64 hex characters",
                 text);
        return -1;
    }
    for (i = 0; i < 64; i++) {
        hex[i] = (char)tolower((unsigned char)text[i]);
    }
    hex[64] = '\0';
    if (mithril_unhex(hex, out, 32) < 0) {
        mx_raise(module, MITHRIL_EINVAL, "graph_hash: want 64 hex characters",
                 text);
        return -1;
    }
    return 0;
}

/* Add one (dtype, dims) pair or "DTYPE:DIMS" string to k. */
static int
add_input_object(PyObject *module, mithril_key *k, PyObject *item)
{
    int64_t dims[MITHRIL_MAX_DIMS];
    PyObject *dt, *dims_obj, *seq = NULL, *d;
    const char *text;
    char dtype[64];
    Py_ssize_t n, i, len;
    int rc = -1, code;

    if (PyUnicode_Check(item)) {
        text = PyUnicode_AsUTF8(item);
        if (!text) {
            return -1;
        }
        code = mithril_key_add_input_text(k, text);
        if (code < 0) {
            mx_raise(module, code, "bad input", text);
            return -1;
        }
        return 0;
    }
    if (!PyTuple_Check(item) && !PyList_Check(item)) {
        PyErr_SetString(PyExc_TypeError,
                        "inputs: each item is (dtype, dims) or 'DTYPE:DIMS'");
        return -1;
    }
    if (PySequence_Size(item) != 2) {
        PyErr_SetString(PyExc_TypeError, "inputs: want (dtype, dims) pairs");
        return -1;
    }
    dt = PySequence_GetItem(item, 0);
    if (!dt) {
        return -1;
    }
    text = PyUnicode_Check(dt) ? PyUnicode_AsUTF8AndSize(dt, &len) : NULL;
    if (!text) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "inputs: dtype must be a str");
        }
        Py_DECREF(dt);
        return -1;
    }
    if ((size_t)len >= sizeof(dtype)) {
        mx_raise(module, MITHRIL_EINVAL, "unknown dtype", text);
        Py_DECREF(dt);
        return -1;
    }
    memcpy(dtype, text, (size_t)len + 1);
    Py_DECREF(dt);
    dims_obj = PySequence_GetItem(item, 1);
    if (!dims_obj) {
        return -1;
    }
    if (PyUnicode_Check(dims_obj) || PyBytes_Check(dims_obj)) {
        PyErr_SetString(PyExc_TypeError, "inputs: dims must be a sequence");
        goto out;
    }
    seq = PySequence_Fast(dims_obj, "inputs: dims must be a sequence");
    if (!seq) {
        goto out;
    }
    n = PySequence_Fast_GET_SIZE(seq);
    if (n > MITHRIL_MAX_DIMS) {
        mx_raise(module, MITHRIL_EINVAL, "too many dimensions for", dtype);
        goto out;
    }
    for (i = 0; i < n; i++) {
        d = PySequence_Fast_GET_ITEM(seq, i);
        if (d == Py_None) {
            dims[i] = MITHRIL_DIM_DYNAMIC;
            continue;
        }
        if (PyBool_Check(d)) {
            PyErr_SetString(PyExc_TypeError, "inputs: a dim is int or None");
            goto out;
        }
        {
            PyObject *idx = PyNumber_Index(d);
            int overflow = 0;
            long long v;

            if (!idx) {
                PyErr_Clear();
                PyErr_SetString(PyExc_TypeError,
                                "inputs: a dim is int or None");
                goto out;
            }
            v = PyLong_AsLongLongAndOverflow(idx, &overflow);
            Py_DECREF(idx);
            if (overflow || (v == -1 && PyErr_Occurred())) {
                PyErr_Clear();
                mx_raise(module, MITHRIL_EINVAL, "dimension out of range for",
                         dtype);
                goto out;
            }
            dims[i] = v;
        }
    }
    code = mithril_key_add_input(k, dtype, dims, (size_t)n);
    if (code < 0) {
        mx_raise(module, code, "bad input (dtype or negative dimension)",
                 dtype);
        goto out;
    }
    rc = 0;

out:
    Py_XDECREF(seq);
    Py_DECREF(dims_obj);
    return rc;
}

static int
device_from_text(PyObject *module, const char *text, mithril_device *d)
{
    int code;

    if (!strcmp(text, "auto")) {
        code = mithril_device_detect(d);
    } else {
        code = mithril_device_parse(text, d);
    }
    if (code < 0) {
        mx_raise(module, code, "bad device class", text);
        return -1;
    }
    return 0;
}

static PyObject *
py_storage_key(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"graph_hash", "inputs", "device", "toolchain",
                             NULL};
    PyObject *graph_obj, *inputs, *seq = NULL, *result = NULL;
    const char *device, *toolchain = "";
    char hex[MITHRIL_HEX_SIZE];
    uint8_t graph[32];
    mithril_device d;
    mithril_key *k = NULL;
    Py_ssize_t i, n;
    int code;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOs|s:storage_key", kwlist,
                                     &graph_obj, &inputs, &device,
                                     &toolchain)) {
        return NULL;
    }
    if (graph_from_object(module, graph_obj, graph) < 0 ||
        device_from_text(module, device, &d) < 0) {
        return NULL;
    }
    if (PyUnicode_Check(inputs)) {
        PyErr_SetString(PyExc_TypeError,
                        "inputs: want a sequence of inputs, not a str");
        return NULL;
    }
    seq = PySequence_Fast(inputs, "inputs: want a sequence");
    if (!seq) {
        return NULL;
    }
    code = mithril_key_new(graph, &k);
    if (code < 0) {
        mx_raise(module, code, "cannot make key", "");
        goto out;
    }
    n = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < n; i++) {
        if (add_input_object(module, k, PySequence_Fast_GET_ITEM(seq, i)) < 0) {
            goto out;
        }
    }
    code = mithril_key_set_device(k, &d);
    if (code == 0) {
        code = mithril_key_set_toolchain(k, toolchain);
    }
    if (code == 0) {
        code = mithril_key_storage(k, hex);
    }
    if (code < 0) {
        mx_raise(module, code, "cannot compute key", device);
        goto out;
    }
    result = PyUnicode_FromString(hex);

out:
    mithril_key_free(k);
    Py_XDECREF(seq);
    return result;
}

static PyObject *
py_device_detect(PyObject *module, PyObject *unused)
{
    mithril_device d;
    char text[32];
    int code;

    code = mithril_device_detect(&d);
    if (code == 0) {
        code = mithril_device_format(&d, text, sizeof(text));
    }
    if (code < 0) {
        return mx_raise(module, code, "cannot detect the device", "");
    }
    return PyUnicode_FromString(text);
}

static PyObject *
py_cpu_isa(PyObject *module, PyObject *unused)
{
    return PyUnicode_FromString(mithril_cpu_isa());
}

static PyObject *
py_parse_size(PyObject *module, PyObject *arg)
{
    const char *text;
    uint64_t v;
    int code;

    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "parse_size: want a str");
        return NULL;
    }
    text = PyUnicode_AsUTF8(arg);
    if (!text) {
        return NULL;
    }
    code = mithril_parse_size(text, &v);
    if (code < 0) {
        return mx_raise(module, code, "bad size (try 500M, 10G)", text);
    }
    return PyLong_FromUnsignedLongLong(v);
}

struct config_collect {
    PyObject *dict;
    int failed;
};

static void
collect_setting(const char *name, const char *value, int source, void *ctx)
{
    struct config_collect *c = ctx;
    PyObject *pair;

    if (c->failed) {
        return;
    }
    pair = Py_BuildValue("(ss)", value, mithril_source_name(source));
    if (!pair || PyDict_SetItemString(c->dict, name, pair) < 0) {
        c->failed = 1;
    }
    Py_XDECREF(pair);
}

static PyObject *
py_config(PyObject *module, PyObject *arg)
{
    mx_state *st = mx_get_state(module);
    struct config_collect c = {NULL, 0};
    mithril_store *s;
    int code;

    if (!st->store_type ||
        !PyObject_TypeCheck(arg, (PyTypeObject *)st->store_type)) {
        PyErr_SetString(PyExc_TypeError, "config: want a Store");
        return NULL;
    }
    s = ((mx_store_object *)arg)->store;
    if (!s) {
        return mx_raise(module, MITHRIL_EINVAL, "store is closed", "");
    }
    c.dict = PyDict_New();
    if (!c.dict) {
        return NULL;
    }
    code = mithril_config_foreach(s, collect_setting, &c);
    if (c.failed) {
        Py_DECREF(c.dict);
        return NULL;
    }
    if (code < 0) {
        Py_DECREF(c.dict);
        return mx_raise(module, code, "cannot read the configuration",
                        mithril_store_dir(s));
    }
    return c.dict;
}

/* blake3(data) -> str: the 64-hex BLAKE3 digest of a bytes-like object. */
static PyObject *
py_blake3(PyObject *module, PyObject *arg)
{
    uint8_t digest[MITHRIL_BLAKE3_OUT_LEN];
    char hex[MITHRIL_HEX_SIZE];
    Py_buffer view;

    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS;
    mithril_blake3_hash(view.buf, (size_t)view.len, digest);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&view);
    mithril_hex(digest, sizeof(digest), hex);
    return PyUnicode_FromString(hex);
}

static PyMethodDef key_methods[] = {
    {"blake3", py_blake3, METH_O,
     "blake3(data) -> str: BLAKE3-256 of a bytes-like object, as 64 hex."},
    {"storage_key", (PyCFunction)(void (*)(void))py_storage_key,
     METH_VARARGS | METH_KEYWORDS,
     "storage_key(graph_hash, inputs, device, toolchain='') -> str\n\n"
     "The storage key (64 hex) of a graph for its inputs, device class and "
     "toolchain."},
    {"device_detect", py_device_detect, METH_NOARGS,
     "device_detect() -> str: this machine's device class."},
    {"cpu_isa", py_cpu_isa, METH_NOARGS,
     "cpu_isa() -> str: this CPU's vector ISA level."},
    {"parse_size", py_parse_size, METH_O,
     "parse_size(text) -> int: bytes in '500M', '10G', '1.5G', ..."},
    {"config", py_config, METH_O,
     "config(store) -> dict: name -> (value, source) for each setting."},
    {NULL, NULL, 0, NULL},
};

int
mx_key_exec(PyObject *module)
{
    return PyModule_AddFunctions(module, key_methods);
}
