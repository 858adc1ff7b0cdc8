"""enable(): point torch's caches at a working folder that mithril keeps.

The store is the record; the working folder (work_dir) is a view of it
that torch reads and writes through its own cache code:

    <work_dir>/inductor   TORCHINDUCTOR_CACHE_DIR
    <work_dir>/triton     TRITON_CACHE_DIR

enable() opens the store, sets those two variables in os.environ (torch
reads os.environ, not the C environment), restores this toolchain's
entries into work_dir, and arranges for what torch wrote to be captured
back into the store at exit (or at flush()). An audit hook watches the
files torch opens under work_dir and refreshes the recency of the entries
they belong to, so the store's LRU eviction keeps what is in use.

Invariants:
- At most one Manager is active per process; the audit hook is installed
  once and dispatches to it (hooks cannot be removed).
- When caching cannot work (MITHRIL_DISABLE=1, a store that cannot be
  opened or written, a work folder that cannot be created), enable()
  changes nothing, returns a disabled Manager and says why once; torch
  then runs with its own defaults.
- enable() refuses, with RuntimeError, to switch folders under a process
  in which Inductor has already compiled something with another folder:
  half the artifacts would be in one place and half in the other.
"""

import atexit
import logging
import os
import sys
import threading
import warnings

from . import _native
from .toolchain import toolchain_text

log = logging.getLogger("mithril_cache")

_lock = threading.RLock()
_active = None          # the enabled Manager, or None
_current = None         # the Manager enable() returned last
_hook_installed = False
_warned = set()         # reasons already reported in this process


def _warn_once(reason, text):
    if reason in _warned:
        return
    _warned.add(reason)
    # Point the warning at the first caller outside this package.
    here = os.path.dirname(os.path.abspath(__file__))
    level, frame = 2, sys._getframe(1)
    while frame is not None and \
            os.path.dirname(frame.f_code.co_filename) == here:
        level += 1
        frame = frame.f_back
    warnings.warn("mithril_cache: " + text, RuntimeWarning,
                  stacklevel=level)


def default_dir():
    """Return the default store folder: $MITHRIL_DIR, else
    $XDG_CACHE_HOME/mithril, else ~/.cache/mithril (the same rule as the
    library's mithril_default_dir)."""
    env = os.environ.get("MITHRIL_DIR")
    if env:
        return env
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return os.path.join(xdg, "mithril")
    return os.path.join(os.path.expanduser("~"), ".cache", "mithril")


def active():
    """Return the active (enabled) Manager of this process, or None."""
    return _active


def current():
    """Return the Manager enable() returned last (enabled or not), or
    None if enable() was never called in this process."""
    return _current


class Manager:
    """Handle on mithril's caching for torch in this process.

    Attributes: ``enabled`` (bool), ``reason`` (why not, when disabled),
    ``store`` (the open mithril_cache.Store, or None), ``work_dir``,
    ``toolchain`` (fingerprint text), ``dynamo_cache`` (bool),
    ``restored`` (what enable() materialized, a dict from the C restore),
    ``vec_isa_ok`` (True when enable() turned Inductor's vector ISA probe
    off, False when the probe failed for some ISA, None when left alone),
    ``remote`` (the remote URL or None) and ``pulled`` (what enable()
    pulled from it).
    """

    def __init__(self, store=None, work_dir=None, toolchain=None,
                 reason=None, dynamo_cache=False):
        self.store = store
        self.work_dir = work_dir
        self.toolchain = toolchain
        self.reason = reason
        self.dynamo_cache = dynamo_cache
        self.enabled = store is not None
        self.restored = {}
        self.pulled = {}
        self.remote = None
        self.last_capture = {}
        self.vec_isa_ok = None
        # Per-process counters of the keyed backend (backend.py).
        self.counters = {"graph_hits": 0, "graph_misses": 0,
                         "torch_hits_after_graph_hit": 0,
                         "torch_misses_after_graph_hit": 0,
                         "graph_errors": 0}
        self._touched = set()
        self._recorders = []
        self._prefix = None
        if work_dir:
            self._prefix = os.path.join(os.path.abspath(work_dir), "")

    def __repr__(self):
        if not self.enabled:
            return "<mithril_cache.Manager disabled: %s>" % self.reason
        return "<mithril_cache.Manager store=%r work_dir=%r>" % (
            self.store_dir(), self.work_dir)

    def store_dir(self):
        """Return the store's folder (None when disabled)."""
        if self.store is None:
            return None
        return self.store.dir

    def inductor_dir(self):
        """Return <work_dir>/inductor, TORCHINDUCTOR_CACHE_DIR (or None)."""
        if not self.enabled:
            return None
        return os.path.join(self.work_dir, "inductor")

    def triton_dir(self):
        """Return <work_dir>/triton, TRITON_CACHE_DIR (or None)."""
        if not self.enabled:
            return None
        return os.path.join(self.work_dir, "triton")

    def flush(self):
        """Capture what torch wrote under work_dir into the store now.

        Returns the capture result dict (entries, files, bytes, skipped,
        rejected), or {} when disabled. With dynamo_cache, Dynamo's
        precompile entries are first written out through
        torch.compiler.save_cache_artifacts(). Safe to call repeatedly:
        unchanged entries are skipped.
        """
        if not self.enabled:
            return {}
        with _lock:
            if self.dynamo_cache:
                _save_dynamo_packages()
            try:
                res = _native.capture(self.store, self.work_dir,
                                      self.toolchain)
                self.store.flush()
                if self.remote:
                    _native.remote_drain(self.store, 2000)
            except (_native.Error, OSError) as exc:
                _warn_once("capture", "capture into %s failed: %s" % (
                    self.store_dir(), exc))
                return {}
            self.last_capture = res
            return res

    def stats(self):
        """Return a dict: the store's statistics (entries, size_bytes,
        hits, misses, graph_hits, graph_misses, ...) plus this process's
        backend counters under "process" and the last restore and capture
        results. Disabled managers return {"enabled": False, "reason":
        ...}."""
        if not self.enabled:
            return {"enabled": False, "reason": self.reason}
        out = {"enabled": True}
        out.update(_native.stats(self.store))
        out["process"] = dict(self.counters)
        out["restored"] = dict(self.restored)
        out["captured"] = dict(self.last_capture)
        if self.remote:
            out["pulled"] = dict(self.pulled)
        return out

    def disable(self):
        """Capture once more, then stop: the hook ignores work_dir and
        flush() does nothing. The environment variables stay as they are
        (torch may already hold paths under work_dir)."""
        global _active
        if not self.enabled:
            return
        self.flush()
        with _lock:
            if _active is self:
                _active = None
            self.enabled = False
            self.reason = "disabled by Manager.disable()"

    # --- audit hook side -------------------------------------------------

    def relpath(self, path):
        """Return path relative to work_dir if it lies under it, else None."""
        if self._prefix is None:
            return None
        if not path.startswith(self._prefix):
            path = os.path.abspath(path)
            if not path.startswith(self._prefix):
                return None
        return path[len(self._prefix):]

    def _on_open(self, path):
        rel = self.relpath(path)
        if rel is None:
            return
        for rec in tuple(self._recorders):
            rec.add(rel)
        if rel in self._touched:
            return
        self._touched.add(rel)
        # A kernel's lock stands for its files (a .so is loaded by dlopen,
        # which the hook does not see): inductor/locks/<stem>.lock ->
        # inductor/<stem[1:3]>/<stem>.*, the entry of that stem.
        parts = rel.split("/")
        if len(parts) == 3 and parts[1] == "locks" and \
                parts[2].endswith(".lock") and len(parts[2]) > 8:
            stem = parts[2][:-len(".lock")]
            rel = "/".join((parts[0], stem[1:3], stem + ".so"))
        try:
            _native.touch_path(self.store, self.work_dir, rel,
                               self.toolchain)
        except Exception:  # never break torch's own file access
            pass


def _audit_hook(event, args):
    if event != "open":
        return
    mgr = _active
    if mgr is None or not mgr.enabled:
        return
    path = args[0] if args else None
    if isinstance(path, bytes):
        try:
            path = os.fsdecode(path)
        except Exception:
            return
    elif not isinstance(path, str):
        try:
            path = os.fspath(path)
        except TypeError:
            return
        if not isinstance(path, str):
            return
    mgr._on_open(path)


def _install_hook():
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit_hook)
        _hook_installed = True


def _torch_compiled_elsewhere(inductor_dir):
    """Return the folder Inductor already used in this process if it is
    not inductor_dir and something was compiled, else None."""
    utils = sys.modules.get("torch._dynamo.utils")
    if utils is None:
        return None
    counters = getattr(utils, "counters", {})
    compiled = bool(counters.get("aot_autograd")) or any(
        v for k, v in counters.get("inductor", {}).items()
        if k.startswith("fxgraph_cache"))
    if not compiled:
        return None
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None:
        cdu = sys.modules.get("torch._inductor.runtime.cache_dir_utils")
        current = cdu.default_cache_dir() if cdu else "(torch default)"
    if os.path.abspath(current) == os.path.abspath(inductor_dir):
        return None
    return current


def _no_precompiled_headers():
    """Inductor's CPU backend builds a ~150 MB precompiled header outside
    its cache folder on every new machine, even when every kernel is
    cached, which costs a warm start on a fresh node tens of seconds. Turn
    it off unless the user chose, as `mithril run` does, so both produce
    the same FX graph keys (the setting is part of them)."""
    name = "TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS"
    if name in os.environ:
        return
    os.environ[name] = "0"
    cfg = sys.modules.get("torch._inductor.config")
    if cfg is not None:
        cfg.cpp_cache_precompile_headers = False


#: Prefix of the entry that records this machine's vector ISA verdict.
ISA_PREFIX = "isa1/"


def _compiler_identity():
    """Text naming the C++ compilers Inductor may pick here: each
    candidate's resolved path, size and mtime (a compiler upgrade changes
    it)."""
    import shutil
    names = [os.environ.get("CXX")]
    cfg = sys.modules.get("torch._inductor.config")
    cxx = getattr(getattr(cfg, "cpp", None), "cxx", ("g++",))
    names += list(cxx) if isinstance(cxx, (list, tuple)) else [cxx]
    out = []
    for name in names:
        path = shutil.which(name) if name else None
        if path is None:
            continue
        real = os.path.realpath(path)
        st = os.stat(real)
        out.append("%s=%s:%d:%d" % (name, real, st.st_size, st.st_mtime_ns))
    return " ".join(out)


def _advertised_isas(cvi):
    """Torch's vector ISAs whose CPU flags this x86 machine has: the list
    valid_vec_isa_list() keeps when cpp.vec_isa_ok is True."""
    flags = cvi.x86_isa_checker()
    return [isa for isa in cvi.supported_vec_isa_list
            if all(f in flags for f in str(isa).split())]


def _vec_isa_ok(store, toolchain):
    """Skip Inductor's vector ISA probe when it is known to pass.

    Before it loads or compiles its first CPU kernel in a process, Inductor
    builds a test file with each ISA's flags and dlopens it in a fresh
    Python child that maps libtorch_cpu: about 0.4 s of every warm start
    on a small machine, cached kernels or not. Setting cpp.vec_isa_ok=True
    (TORCHINDUCTOR_VEC_ISA_OK=1) skips it and gives the same ISA list when
    every ISA the CPU advertises passes the probe. That verdict is taken
    once per toolchain, compiler and CPU flags (the probe runs here, in
    this process, and its result is kept as an entry of the store) and
    applied in every process after, cold or warm: the setting is part of
    torch's FX graph keys, so it must not change between them. A choice
    the user made (the variable or the config set) is left alone; so is a
    machine that is not x86 Linux, whose device class is not a CPU (the
    first probe costs a few seconds there, for graphs that rarely run on
    the CPU) or whose probe fails for some ISA."""
    import platform
    name = "TORCHINDUCTOR_VEC_ISA_OK"
    if name in os.environ or not sys.platform.startswith("linux") or \
            platform.machine() not in ("x86_64", "AMD64") or \
            not _native.device_detect().startswith("cpu"):
        return None
    try:
        import torch._inductor.config as cfg
        import torch._inductor.cpu_vec_isa as cvi
        if cfg.cpp.vec_isa_ok is not None:
            return None
        advertised = sorted(str(isa) for isa in _advertised_isas(cvi))
        text = "mithril vec isa v1\n%s\n%s\n%s\n" % (
            toolchain, _compiler_identity(), ";".join(advertised))
        key = ISA_PREFIX + _native.blake3(text.encode())
        try:
            ok = "vec_isa_ok=1" in _native.entry_peek(store, key)["meta"]
        except _native.NotFoundError:
            # Torch's own probe, run once; valid_vec_isa_list() keeps its
            # answer for this process.
            valid = sorted(str(isa) for isa in cvi.valid_vec_isa_list())
            ok = bool(advertised) and valid == advertised
            meta = "tc=%s kind=isa vec_isa_ok=%d isas=%s" % (
                _native.blake3(toolchain.encode())[:16], int(ok),
                ",".join(s.replace(" ", "+") for s in advertised))
            _native.entry_put(store, key, [], meta)
    except Exception as exc:  # a failed probe only costs the speed-up
        log.info("mithril_cache: vector ISA verdict unavailable: %s", exc)
        return None
    if ok:
        os.environ[name] = "1"
        cfg.cpp.vec_isa_ok = True
    return ok


def _clear_torch_dir_caches():
    """Forget every folder torch already derived from the old cache dir.
    Inductor registers its functools caches for this (the same call its
    own temporary_cache_dir() makes)."""
    utils = sys.modules.get("torch._inductor.utils")
    if utils is not None and hasattr(utils, "clear_caches"):
        utils.clear_caches()


def _set_dynamo_cache():
    os.environ["TORCH_CACHING_PRECOMPILE"] = "1"
    cfg = sys.modules.get("torch._dynamo.config")
    if cfg is not None:
        cfg.caching_precompile = True


def _save_dynamo_packages():
    cfg = sys.modules.get("torch._dynamo.config")
    if cfg is None or not getattr(cfg, "caching_precompile", False):
        return
    try:
        import torch.compiler
        torch.compiler.save_cache_artifacts()
    except Exception as exc:
        _warn_once("dynamo", "saving Dynamo precompile entries failed: %s"
                   % exc)


def _disabled(reason, text):
    _warn_once(reason, text + "; torch runs without mithril caching")
    log.info("mithril_cache disabled: %s", text)
    return Manager(reason=text)


def _open_store(dir, max_size, remote):
    store = _native.Store(dir, create=True)
    if max_size is not None:
        if isinstance(max_size, str):
            max_size = _native.parse_size(max_size)
        store.set_max_size(int(max_size))
    if remote:
        store.set_remote(remote)
    return store


def _check_writable(path):
    """Raise OSError unless a file can be created in path."""
    probe = os.path.join(path, ".mithril-probe-%d" % os.getpid())
    fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    os.close(fd)
    os.unlink(probe)


def enable(dir=None, max_size=None, remote=None, work_dir=None,
           dynamo_cache=False, restore=True):
    """Route torch.compile's caches through a mithril store.

    dir: the store folder (default: default_dir()). max_size: a size cap
    in bytes or text ("10G"). remote: "redis://HOST:PORT" to share entries.
    work_dir: torch's working folder (default: $MITHRIL_WORK_DIR, else
    <dir>/work); it may be deleted at any time, the store restores it.
    dynamo_cache: also cache Dynamo's tracing (TORCH_CACHING_PRECOMPILE=1,
    entries written at flush); off by default because torch drops its
    ID_MATCH, CLOSURE_MATCH, WEAKREF_ALIVE and DICT_VERSION guards in this
    mode, so a global rebound in a later process (a different function
    assigned to a module global the model calls) can run stale code
    (docs/LIMITATIONS.md). restore: materialize every entry of this
    toolchain into work_dir now (the default); False leaves it to the
    keyed backend, which materializes each graph's files when Dynamo
    hands that graph over (cheaper with a large store, but plain
    torch.compile without backend() then finds nothing).

    Returns a Manager. Sets TORCHINDUCTOR_CACHE_DIR and TRITON_CACHE_DIR in
    os.environ, restores this toolchain's entries, captures at exit. Unless
    the user chose them, also turns Inductor's precompiled headers off and,
    on x86 Linux CPU machines, its vector ISA probe off once the store
    records that the probe passed (the first enable() on a store runs it).
    MITHRIL_DISABLE=1, or a store that cannot be opened or written, give a
    disabled Manager and one warning; torch still works.

    Raises RuntimeError if Inductor already compiled in this process with
    another cache folder: call enable() before the first compiled call (or
    start the process under `mithril run`).
    """
    global _current
    with _lock:
        _current = _enable(dir, max_size, remote, work_dir, dynamo_cache,
                           restore)
        return _current


def _enable(dir, max_size, remote, work_dir, dynamo_cache, restore):
    global _active
    with _lock:
        if os.environ.get("MITHRIL_DISABLE", "") not in ("", "0"):
            return _disabled("env", "MITHRIL_DISABLE is set")
        dir = os.path.abspath(os.fspath(dir or default_dir()))
        if work_dir is not None:
            work_dir = os.path.abspath(os.fspath(work_dir))
        cur = _active
        if cur is not None and cur.enabled and cur.store_dir() == dir and \
                work_dir in (None, cur.work_dir):
            if dynamo_cache and not cur.dynamo_cache:
                cur.dynamo_cache = True
                _set_dynamo_cache()
            return cur
        try:
            store = _open_store(dir, max_size, remote)
            config = _native.config(store)
        except (_native.Error, OSError) as exc:
            return _disabled("store", "cannot open the store %s: %s" % (
                dir, exc))
        if config.get("disabled", ("no",))[0] not in ("no", "off", "0"):
            store.close()
            return _disabled("config", "the store's configuration "
                             "disables caching (%s)" % dir)
        if work_dir is None:
            # The library's setting: $MITHRIL_WORK_DIR, the store's config
            # file, else <dir>/work.
            work_dir = os.path.abspath(config.get(
                "work_dir", (os.path.join(dir, "work"),))[0])
        inductor = os.path.join(work_dir, "inductor")
        other = _torch_compiled_elsewhere(inductor)
        if other is not None:
            store.close()
            raise RuntimeError(
                "mithril_cache.enable(): torch already compiled in this "
                "process with the cache folder %s; switching to %s now "
                "would split its artifacts. Call mithril_cache.enable() "
                "before the first call of a torch.compile'd function, or "
                "run the program under `mithril run -- python ...`." % (
                    other, inductor))
        if cur is not None and cur.enabled:
            cur.disable()
        # The argument, else the library's setting ($MITHRIL_REMOTE or the
        # store's config file).
        remote_url = remote or config.get("remote", ("none",))[0]
        try:
            os.makedirs(inductor, exist_ok=True)
            os.makedirs(os.path.join(work_dir, "triton"), exist_ok=True)
            _check_writable(inductor)
        except OSError as exc:
            store.close()
            return _disabled("work", "cannot write the work folder %s: %s"
                             % (work_dir, exc))
        tc = toolchain_text()
        mgr = Manager(store=store, work_dir=work_dir, toolchain=tc,
                      dynamo_cache=dynamo_cache)
        if remote_url and remote_url != "none":
            mgr.remote = remote_url
            try:
                mgr.pulled = _native.pull(store, tc)
            except (_native.Error, OSError) as exc:
                _warn_once("pull", "pulling from %s failed: %s" % (
                    remote_url, exc))
        try:
            if restore:
                mgr.restored = _native.restore(store, work_dir, tc)
        except (_native.Error, OSError) as exc:
            _warn_once("restore", "restore into %s failed: %s" % (
                work_dir, exc))
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor
        os.environ["TRITON_CACHE_DIR"] = os.path.join(work_dir, "triton")
        _no_precompiled_headers()
        _clear_torch_dir_caches()
        mgr.vec_isa_ok = _vec_isa_ok(store, tc)
        if dynamo_cache:
            _set_dynamo_cache()
        _install_hook()
        _active = mgr
        atexit.register(_flush_at_exit, mgr)
        return mgr


def _flush_at_exit(mgr):
    if mgr.enabled:
        mgr.flush()


def flush():
    """Capture now through the active Manager; {} if none is active."""
    mgr = _active
    if mgr is None:
        return {}
    return mgr.flush()
