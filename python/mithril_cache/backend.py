"""A keyed, per-graph Dynamo backend that wraps Inductor.

    model = torch.compile(model, backend=mithril_cache.backend())

For each graph Dynamo hands over, the backend computes a storage key from
a canonical text of the graph, the inputs' dtypes and shapes (a symbolic
dimension written as dynamic), the device class and the toolchain, and
looks up the entry "g1/<key>" in the store:

- hit: the entry's files (torch's own FX graph, AOTAutograd and kernel
  files for this graph) are materialized into the working folder, then
  Inductor runs and finds them through its own caches;
- miss: Inductor runs; the files it created or opened under the working
  folder meanwhile become the entry "g1/<key>".

Torch's own cache keys still decide what is reused: mithril only makes
sure the files are there. A g1 hit after which torch still missed (the
files did not match, e.g. an Inductor setting changed) is counted and the
entry is re-recorded with what torch produced, so it is right next time.

Graph text (hashed with BLAKE3; stable across processes, machines, users
and folders: no ids, addresses or paths): the inner compiler's name,
whether grad mode is on, gm.code, then one line per placeholder (type,
dtype, shape with symbolic dimensions as '?', strides, requires_grad,
device type), then the module's own parameters, buffers and get_attr
tensors by name with shape and dtype.
"""

import os
import threading

from . import _native
from ._enable import _warn_once, active, current, enable

#: Prefix of keyed per-graph entries in the store.
ENTRY_PREFIX = "g1/"

_SKIP_DIRS = {"locks"}


def blake3_hex(data):
    """BLAKE3-256 of data as 64 hex, computed by libmithril."""
    return _native.blake3(data)


def _tc_tag(toolchain):
    return blake3_hex(toolchain.encode())[:16]


def _is_temp(name):
    return name.startswith(".") or name.endswith(".tmp") or \
        name.endswith(".lock")


def _snapshot(work_dir):
    """Map of relative path -> (size, mtime_ns) for torch's files."""
    out = {}
    base = len(os.path.join(work_dir, ""))
    for root, dirs, files in os.walk(work_dir):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and
                   not d.startswith(".")]
        for name in files:
            if _is_temp(name):
                continue
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not os.path.isfile(path) or os.path.islink(path):
                continue
            out[path[base:]] = (st.st_size, st.st_mtime_ns)
    return out


def _expand_opened(work_dir, opened):
    """Turn the relative paths torch opened into entry items: regular
    files as they are, a kernel lock "inductor/locks/<stem>.lock" into the
    kernel's files "inductor/<stem[1:3]>/<stem>.*"."""
    out = set()
    for rel in opened:
        parts = rel.split("/")
        if len(parts) == 3 and parts[1] == "locks" and \
                parts[2].endswith(".lock"):
            stem = parts[2][:-len(".lock")]
            sub = os.path.join(work_dir, parts[0], stem[1:3])
            try:
                names = os.listdir(sub)
            except OSError:
                continue
            for name in names:
                if name.startswith(stem + ".") and not _is_temp(name):
                    out.add("/".join((parts[0], stem[1:3], name)))
            continue
        if _is_temp(parts[-1]):
            continue
        if os.path.isfile(os.path.join(work_dir, rel)):
            out.add(rel)
    return out


def _dim_text(d):
    if isinstance(d, int):
        return str(d)
    try:
        from torch.fx.experimental.symbolic_shapes import is_concrete_int
        if is_concrete_int(d):
            return str(int(d))
    except Exception:
        pass
    return "?"


def _dims(t):
    out = []
    for d in t.shape:
        text = _dim_text(d)
        out.append(None if text == "?" else int(text))
    return out


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def _placeholder_value(node, example):
    val = node.meta.get("example_value", node.meta.get("val"))
    return example if val is None else val


def _describe(val):
    import torch
    if isinstance(val, torch.Tensor):
        shape = ",".join(_dim_text(d) for d in val.shape)
        try:
            stride = ",".join(_dim_text(s) for s in val.stride())
        except Exception:
            stride = "?"
        return "tensor %s [%s] [%s] grad=%d dev=%s" % (
            _dtype_name(val.dtype), shape, stride, int(val.requires_grad),
            val.device.type)
    if isinstance(val, torch.SymInt):
        return "symint " + _dim_text(val)
    if isinstance(val, (bool, int, float, str)) or val is None:
        return "%s %r" % (type(val).__name__, val)
    return "object " + type(val).__name__


def graph_text(gm, example_inputs, inner_name="compile_fx"):
    """Return the canonical text of a graph that backend() hashes (see the
    module documentation). Deterministic across processes."""
    import torch
    lines = ["mithril graph v1", "inner " + inner_name,
             "grad %d" % int(torch.is_grad_enabled()), gm.code]
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for i, node in enumerate(placeholders):
        ex = example_inputs[i] if i < len(example_inputs) else None
        lines.append("input %s %s" % (node.name, _describe(
            _placeholder_value(node, ex))))
    for name, p in sorted(gm.named_parameters()):
        lines.append("param %s %s" % (name, _describe(p)))
    for name, b in sorted(gm.named_buffers()):
        lines.append("buffer %s %s" % (name, _describe(b)))
    for node in gm.graph.nodes:
        if node.op != "get_attr":
            continue
        obj = gm
        try:
            for part in str(node.target).split("."):
                obj = getattr(obj, part)
        except AttributeError:
            obj = None
        lines.append("attr %s %s" % (node.target, _describe(obj)))
    return "\n".join(lines) + "\n"


def graph_inputs(gm, example_inputs):
    """Return the key inputs: (dtype, dims) for each tensor placeholder,
    dims None where symbolic; a SymInt placeholder as a scalar int64."""
    import torch
    out = []
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for i, node in enumerate(placeholders):
        ex = example_inputs[i] if i < len(example_inputs) else None
        val = _placeholder_value(node, ex)
        if isinstance(val, torch.Tensor):
            out.append((_dtype_name(val.dtype), _dims(val)))
        elif isinstance(val, torch.SymInt):
            out.append(("int64", []))
    return out


def _device_class(example_inputs):
    import torch
    for t in example_inputs:
        if isinstance(t, torch.Tensor) and t.device.type != "cpu":
            return _native.device_detect()
    return "cpu:" + _native.cpu_isa()


def graph_key(gm, example_inputs, toolchain, inner_name="compile_fx"):
    """Return the storage key (64 hex) of a graph for its example inputs,
    device class and toolchain text."""
    text = graph_text(gm, example_inputs, inner_name)
    ghash = blake3_hex(text.encode())
    return _native.storage_key(ghash, graph_inputs(gm, example_inputs),
                               _device_class(example_inputs), toolchain)


_TORCH_COUNTERS = (("aot_autograd", "autograd_cache_hit"),
                   ("aot_autograd", "autograd_cache_miss"),
                   ("inductor", "fxgraph_cache_hit"),
                   ("inductor", "fxgraph_cache_miss"))


def _torch_counts():
    from torch._dynamo.utils import counters
    return [counters[a][b] for a, b in _TORCH_COUNTERS]


class KeyedBackend:
    """The callable backend() returns: backend(gm, example_inputs) ->
    whatever the inner compiler returns. Thread-safe: compiles of several
    graphs are serialized only around the store bookkeeping."""

    def __init__(self, inner=None, manager=None):
        self.inner = inner
        self.manager = manager
        self.last_key = None
        self.keys = []
        self._lock = threading.Lock()

    def _inner(self):
        if self.inner is not None:
            return self.inner
        from torch._inductor.compile_fx import compile_fx
        return compile_fx

    def _inner_name(self):
        fn = self._inner()
        return getattr(fn, "__qualname__", None) or type(fn).__name__

    def __call__(self, gm, example_inputs):
        mgr = self.manager or active()
        inner = self._inner()
        if mgr is None or not mgr.enabled:
            return inner(gm, example_inputs)
        try:
            key = graph_key(gm, example_inputs, mgr.toolchain,
                            self._inner_name())
        except Exception as exc:
            mgr.counters["graph_errors"] += 1
            _warn_once("graphkey", "cannot key a graph (%s); compiling "
                       "without the per-graph entry" % exc)
            return inner(gm, example_inputs)
        entry = ENTRY_PREFIX + key
        with self._lock:
            self.last_key = key
            self.keys.append(key)
        hit = self._lookup(mgr, entry)
        before = _snapshot(mgr.work_dir)
        opened = set()
        mgr._recorders.append(opened)
        counts0 = _torch_counts()
        try:
            result = inner(gm, example_inputs)
        finally:
            mgr._recorders.remove(opened)
        delta = [b - a for a, b in zip(counts0, _torch_counts())]
        torch_hit = (delta[0] or delta[2]) and not (delta[1] or delta[3])
        if hit and torch_hit:
            mgr.counters["torch_hits_after_graph_hit"] += 1
            return result
        if hit:
            mgr.counters["torch_misses_after_graph_hit"] += 1
        self._record(mgr, entry, before, opened)
        return result

    def _lookup(self, mgr, entry):
        try:
            _native.entry_get(mgr.store, entry)
        except _native.NotFoundError:
            mgr.counters["graph_misses"] += 1
            _native.stats_add(mgr.store, "graph_miss")
            return False
        except (_native.Error, OSError) as exc:
            _warn_once("lookup", "graph lookup failed: %s" % exc)
            return False
        try:
            _native.restore_entry(mgr.store, mgr.work_dir, entry)
        except (_native.Error, OSError) as exc:
            _warn_once("restore_entry", "restoring %s failed: %s" % (
                entry, exc))
            return False
        mgr.counters["graph_hits"] += 1
        _native.stats_add(mgr.store, "graph_hit")
        return True

    def _record(self, mgr, entry, before, opened):
        after = _snapshot(mgr.work_dir)
        files = {rel for rel, st in after.items() if before.get(rel) != st}
        files |= _expand_opened(mgr.work_dir, opened)
        if not files:
            return
        tc = mgr.toolchain
        meta = "tc=%s kind=graph toolchain=%s" % (
            _tc_tag(tc), tc.replace(" ", ";"))
        try:
            _native.put_files_entry(mgr.store, entry, mgr.work_dir,
                                    sorted(files), meta)
        except (_native.Error, OSError) as exc:
            _warn_once("put", "recording %s failed: %s" % (entry, exc))


def backend(inner=None, dynamo_cache=False, manager=None):
    """Return a Dynamo backend for torch.compile(..., backend=...).

    inner: the compiler to wrap (default
    torch._inductor.compile_fx.compile_fx). manager: the Manager to record
    into (default: the active one; if none is active, enable() is called
    now with its defaults and dynamo_cache; if enable() returned a
    disabled Manager, that one). With caching disabled the backend simply
    calls inner.
    """
    if manager is None:
        manager = active() or current()
        if manager is None:
            manager = enable(dynamo_cache=dynamo_cache)
    return KeyedBackend(inner, manager)
