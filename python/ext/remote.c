/*
 * remote.c - module functions for sharing: the Redis remote, archives and
 * the signing secret.
 *
 *   set_remote(store, url, read_only=False)
 *   push(store, toolchain=None) -> dict     entries, files, bytes, ...
 *   pull(store, toolchain=None) -> dict
 *   export_archive(store, path, toolchain=None) -> dict
 *   import_archive(store, path) -> dict
 *   remote_drain(store, timeout_ms=1000) -> bool   True if all was sent
 *   set_secret(store, secret)                      str or bytes; None/""
 *                                                  turns signing off
 *
 * toolchain is a 16-hex tag or the full toolchain text. Every library call
 * runs with the GIL released.
 */
#include "ext.h"

static PyObject *
py_set_remote(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *names[] = {"store", "url", "read_only", NULL};
    PyObject *store_obj;
    const char *url;
    mithril_store *s;
    int read_only = 0;
    int code;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "Oz|p:set_remote", names,
                                     &store_obj, &url, &read_only)) {
        return NULL;
    }
    s = mx_store_arg(module, store_obj, "set_remote");
    if (!s) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS code = mithril_store_set_remote(s, url, read_only);
    Py_END_ALLOW_THREADS if (code < 0)
    {
        return mx_raise(module, code, "bad remote", url);
    }
    Py_RETURN_NONE;
}

/* push and pull share everything but the call. */
static PyObject *
sync_remote(PyObject *module, PyObject *args, PyObject *kw, int pull)
{
    static char *names[] = {"store", "toolchain", NULL};
    mithril_sync_result r = {0};
    PyObject *store_obj;
    PyObject *tc_obj = Py_None;
    const char *toolchain;
    mithril_store *s;
    int code;

    if (!PyArg_ParseTupleAndKeywords(args, kw, pull ? "O|O:pull" : "O|O:push",
                                     names, &store_obj, &tc_obj)) {
        return NULL;
    }
    s = mx_store_arg(module, store_obj, pull ? "pull" : "push");
    if (!s || mx_opt_text(tc_obj, &toolchain) < 0) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS if (pull)
    {
        code = mithril_remote_pull(s, toolchain, NULL, NULL, &r);
    }
    else
    {
        code = mithril_remote_push(s, toolchain, NULL, NULL, &r);
    }
    Py_END_ALLOW_THREADS if (code < 0)
    {
        return mx_raise(module, code, pull ? "pull" : "push",
                        toolchain ? toolchain : "");
    }
    return mx_sync_result_dict(&r);
}

static PyObject *
py_push(PyObject *module, PyObject *args, PyObject *kw)
{
    return sync_remote(module, args, kw, 0);
}

static PyObject *
py_pull(PyObject *module, PyObject *args, PyObject *kw)
{
    return sync_remote(module, args, kw, 1);
}

static PyObject *
py_export(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *names[] = {"store", "path", "toolchain", NULL};
    mithril_sync_result r = {0};
    PyObject *store_obj;
    PyObject *path = NULL;
    PyObject *tc_obj = Py_None;
    PyObject *ret = NULL;
    const char *toolchain;
    mithril_store *s;
    int code;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO&|O:export_archive", names,
                                     &store_obj, PyUnicode_FSConverter, &path,
                                     &tc_obj)) {
        return NULL;
    }
    s = mx_store_arg(module, store_obj, "export_archive");
    if (!s || mx_opt_text(tc_obj, &toolchain) < 0) {
        goto out;
    }
    Py_BEGIN_ALLOW_THREADS code = mithril_archive_export(
        s, PyBytes_AS_STRING(path), toolchain, NULL, NULL, &r);
    Py_END_ALLOW_THREADS if (code < 0)
    {
        mx_raise(module, code, "export", PyBytes_AS_STRING(path));
        goto out;
    }
    ret = mx_sync_result_dict(&r);
out:
    Py_XDECREF(path);
    return ret;
}

static PyObject *
py_import(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *names[] = {"store", "path", NULL};
    mithril_sync_result r = {0};
    PyObject *store_obj;
    PyObject *path = NULL;
    PyObject *ret = NULL;
    mithril_store *s;
    int code;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO&:import_archive", names,
                                     &store_obj, PyUnicode_FSConverter,
                                     &path)) {
        return NULL;
    }
    s = mx_store_arg(module, store_obj, "import_archive");
    if (!s) {
        goto out;
    }
    Py_BEGIN_ALLOW_THREADS code =
        mithril_archive_import(s, PyBytes_AS_STRING(path), NULL, NULL, &r);
    Py_END_ALLOW_THREADS if (code < 0)
    {
        mx_raise(module, code, "import", PyBytes_AS_STRING(path));
        goto out;
    }
    ret = mx_sync_result_dict(&r);
out:
    Py_XDECREF(path);
    return ret;
}

static PyObject *
py_drain(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *names[] = {"store", "timeout_ms", NULL};
    PyObject *store_obj;
    mithril_store *s;
    int timeout_ms = 1000;
    int code;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|i:remote_drain", names,
                                     &store_obj, &timeout_ms)) {
        return NULL;
    }
    s = mx_store_arg(module, store_obj, "remote_drain");
    if (!s) {
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS code = mithril_remote_drain(s, timeout_ms);
    Py_END_ALLOW_THREADS return PyBool_FromLong(code == 0);
}

static PyObject *
py_set_secret(PyObject *module, PyObject *args, PyObject *kw)
{
    static char *names[] = {"store", "secret", NULL};
    PyObject *store_obj;
    PyObject *secret;
    const char *data = NULL;
    Py_ssize_t len = 0;
    mithril_store *s;
    int code;

    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:set_secret", names,
                                     &store_obj, &secret)) {
        return NULL;
    }
    s = mx_store_arg(module, store_obj, "set_secret");
    if (!s) {
        return NULL;
    }
    if (PyUnicode_Check(secret)) {
        data = PyUnicode_AsUTF8AndSize(secret, &len);
        if (!data) {
            return NULL;
        }
    } else if (PyBytes_Check(secret)) {
        data = PyBytes_AS_STRING(secret);
        len = PyBytes_GET_SIZE(secret);
    } else if (secret != Py_None) {
        PyErr_SetString(PyExc_TypeError, "secret: want str, bytes or None");
        return NULL;
    }
    code = mithril_store_set_secret(s, data, (size_t)len);
    if (code < 0) {
        return mx_raise(module, code, "set_secret", "");
    }
    Py_RETURN_NONE;
}

/* Each runs inside enter/leave of its Store argument (ext.h). */
MX_GUARD_KW(py_set_remote)
MX_GUARD_KW(py_push)
MX_GUARD_KW(py_pull)
MX_GUARD_KW(py_export)
MX_GUARD_KW(py_import)
MX_GUARD_KW(py_drain)
MX_GUARD_KW(py_set_secret)

static PyMethodDef remote_methods[] = {
    {"set_remote", (PyCFunction)(void (*)(void))py_set_remote_guarded,
     METH_VARARGS | METH_KEYWORDS,
     "set_remote(store, url, read_only=False): share through the Redis "
     "remote at url (redis://HOST:PORT[/DB]); None detaches it."},
    {"push", (PyCFunction)(void (*)(void))py_push_guarded,
     METH_VARARGS | METH_KEYWORDS,
     "push(store, toolchain=None) -> dict: send entries (all, or one "
     "toolchain's) and their blobs to the remote."},
    {"pull", (PyCFunction)(void (*)(void))py_pull_guarded,
     METH_VARARGS | METH_KEYWORDS,
     "pull(store, toolchain=None) -> dict: fetch entries the store lacks "
     "from the remote, verified."},
    {"export_archive", (PyCFunction)(void (*)(void))py_export_guarded,
     METH_VARARGS | METH_KEYWORDS,
     "export_archive(store, path, toolchain=None) -> dict: write entries "
     "and their blobs into one archive file."},
    {"import_archive", (PyCFunction)(void (*)(void))py_import_guarded,
     METH_VARARGS | METH_KEYWORDS,
     "import_archive(store, path) -> dict: load an archive, verifying "
     "every blob and signature."},
    {"remote_drain", (PyCFunction)(void (*)(void))py_drain_guarded,
     METH_VARARGS | METH_KEYWORDS,
     "remote_drain(store, timeout_ms=1000) -> bool: wait for queued writes "
     "to reach the remote; False if some were still pending."},
    {"set_secret", (PyCFunction)(void (*)(void))py_set_secret_guarded,
     METH_VARARGS | METH_KEYWORDS,
     "set_secret(store, secret): sign entries leaving the store and reject "
     "unsigned or wrongly signed ones arriving; None turns it off."},
    {NULL, NULL, 0, NULL},
};

int
mx_remote_exec(PyObject *module)
{
    return PyModule_AddFunctions(module, remote_methods);
}
