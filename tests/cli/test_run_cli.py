"""`mithril run`, `capture` and `restore` with a real torch: a tiny model
compiled cold, then warm from the store after the working folder is gone,
after the store moved and under another HOME/USER; MITHRIL_DISABLE=1; the
child's exit status and signals; the toolchain text equal to the Python
layer's. Torch processes are few and the model tiny (slow shared CPUs)."""

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
PY = sys.executable

MODEL = r'''
import json, os, sys, time
t0 = time.time()
import torch
from torch._dynamo.utils import counters
t_import = time.time() - t0

class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(8, 16)
        self.b = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))

torch.manual_seed(0)
m = MLP().eval()
x = torch.randn(3, 8)
with torch.no_grad():
    eager = m(x)
    c = torch.compile(m)
    t1 = time.time()
    y = c(x)
    first = time.time() - t1
print(json.dumps({
    "first_call_s": first,
    "import_s": t_import,
    "hit": counters["inductor"]["fxgraph_cache_hit"],
    "miss": counters["inductor"]["fxgraph_cache_miss"],
    "equal": bool(torch.allclose(y, eager)),
    "inductor_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
    "toolchain": os.environ.get("MITHRIL_TOOLCHAIN"),
}))
'''


def _env(**extra):
    env = dict(os.environ)
    for k in ("MITHRIL_DIR", "MITHRIL_WORK_DIR", "MITHRIL_TOOLCHAIN",
              "MITHRIL_DISABLE", "TORCHINDUCTOR_CACHE_DIR",
              "TRITON_CACHE_DIR"):
        env.pop(k, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _run(mithril_bin, store, *args, env=None, timeout=600):
    return subprocess.run([mithril_bin, "--dir", str(store), *map(str, args)],
                          capture_output=True, text=True,
                          env=env or _env(), timeout=timeout)


def _model(mithril_bin, store, script, env=None, label=""):
    t = time.time()
    p = _run(mithril_bin, store, "run", "-v", "--", PY, script, env=env)
    wall = time.time() - t
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"\n[{label}] first_call_s={out['first_call_s']:.2f} "
          f"wall_s={wall:.2f} hit={out['hit']} miss={out['miss']}\n"
          f"{p.stderr.strip()}")
    return out, p


@pytest.fixture(scope="module")
def model_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("script") / "model.py"
    path.write_text(MODEL)
    return path


def test_cold_then_warm_through_the_store(mithril_bin, tmp_path,
                                          model_script):
    store = tmp_path / "store"

    # Cold: nothing anywhere; Inductor compiles and mithril captures.
    cold, p = _model(mithril_bin, store, model_script, label="cold")
    assert cold["miss"] >= 1 and cold["hit"] == 0
    assert cold["equal"]
    work = store / "work"
    assert cold["inductor_dir"] == str((work / "inductor").resolve())
    assert "mithril: capture: entries" in p.stderr
    assert list((work / "inductor" / "fxgraph").iterdir())

    # Warm: the working folder is gone; restore brings the FX graph back.
    shutil.rmtree(work)
    warm, p = _model(mithril_bin, store, model_script, label="warm")
    assert warm["hit"] >= 1 and warm["miss"] == 0
    assert warm["equal"]
    assert warm["toolchain"] == cold["toolchain"]
    restored = [l for l in p.stderr.splitlines() if "restore:" in l]
    assert restored and " entries 0 " not in restored[0]

    # The store moved elsewhere, another HOME and USER, no working
    # folder: still a hit.
    moved = tmp_path / "elsewhere" / "moved-store"
    moved.parent.mkdir()
    shutil.move(str(store), str(moved))
    shutil.rmtree(moved / "work")
    home = tmp_path / "otherhome"
    home.mkdir()
    env = _env(HOME=home, USER="someoneelse", LOGNAME="someoneelse")
    again, _ = _model(mithril_bin, moved, model_script, env=env,
                      label="moved")
    assert again["hit"] >= 1 and again["miss"] == 0
    assert again["equal"]
    assert again["inductor_dir"] == str((moved / "work" / "inductor")
                                        .resolve())

    # MITHRIL_DISABLE=1: the command runs unchanged (here against the
    # warm folder by hand, so it stays quick), nothing is set for it and
    # nothing is captured.
    before = _run(mithril_bin, moved, "capture", "--json", "--toolchain",
                  again["toolchain"])
    assert json.loads(before.stdout)["entries"] == 0
    plain = moved / "work" / "inductor"
    env = _env(MITHRIL_DISABLE=1, TORCHINDUCTOR_CACHE_DIR=plain,
               MITHRIL_WORK_DIR=tmp_path / "unused")
    p = _run(mithril_bin, moved, "run", "--", PY, model_script, env=env)
    assert p.returncode == 0, p.stderr
    off = json.loads(p.stdout.strip().splitlines()[-1])
    assert off["equal"]
    assert off["toolchain"] is None
    assert off["inductor_dir"] == str(plain)
    assert not (tmp_path / "unused").exists()


def _pythonpath(mithril_bin):
    """mithril_cache's sources and the _native built beside mithril_bin."""
    built = Path(mithril_bin).resolve().parent / "python"
    return os.pathsep.join([str(ROOT / "python"), str(built)])


def test_toolchain_text_equals_python_layer(mithril_bin, tmp_path):
    env = _env(PYTHONPATH=_pythonpath(mithril_bin))
    code = ("import os\n"
            "from mithril_cache.toolchain import toolchain_text\n"
            "print(os.environ['MITHRIL_TOOLCHAIN'])\n"
            "print(toolchain_text(use_env=False))\n")
    p = _run(mithril_bin, tmp_path / "store", "run", "--", PY, "-c", code,
             env=env)
    assert p.returncode == 0, p.stderr
    from_c, from_py = p.stdout.strip().splitlines()
    assert from_c == from_py
    import importlib.metadata as md
    assert from_c.startswith(f"torch={md.version('torch')} ")
    # torch's own idea of its version agrees with the distribution's.
    v = subprocess.run([PY, "-c", "import torch; print(torch.__version__)"],
                       capture_output=True, text=True, env=_env())
    assert v.stdout.strip() == md.version("torch")


PRIME_ISA = r'''
import json, sys
import mithril_cache
from mithril_cache import _native
mgr = mithril_cache.enable(dir=sys.argv[1], work_dir=sys.argv[2])
print(json.dumps([e["meta"] for e in _native.entries(mgr.store)
                  if e["key"].startswith("isa1/")]))
'''

SHOW_ISA = 'import os; print(os.environ.get("TORCHINDUCTOR_VEC_ISA_OK"))'


@pytest.mark.skipif(not sys.platform.startswith("linux") or
                    platform.machine() not in ("x86_64", "AMD64"),
                    reason="the vector ISA verdict is taken on x86 Linux")
def test_vec_isa_knob_set_like_enable(mithril_bin, tmp_path):
    env = _env(PYTHONPATH=_pythonpath(mithril_bin))
    env.pop("TORCHINDUCTOR_VEC_ISA_OK", None)
    dev = subprocess.run(
        [PY, "-c", "from mithril_cache import _native; "
         "print(_native.device_detect())"],
        capture_output=True, text=True, env=env)
    if not dev.stdout.startswith("cpu"):
        pytest.skip("the verdict is taken on CPU device classes only")

    # enable() takes the verdict (torch's own probe) and keeps it as an
    # entry isa1/<hash> of the store.
    store = tmp_path / "store"
    p = subprocess.run([PY, "-c", PRIME_ISA, str(store), str(tmp_path / "w")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    verdicts = json.loads(p.stdout.strip().splitlines()[-1])
    assert len(verdicts) == 1 and "kind=isa" in verdicts[0], verdicts
    want = "1" if "vec_isa_ok=1" in verdicts[0] else "None"

    def show(store, **extra):
        run_env = dict(env, **extra)
        p = _run(mithril_bin, store, "run", "--", PY, "-c", SHOW_ISA,
                 env=run_env)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    # run finds the same entry enable() wrote and sets the knob likewise.
    assert show(store) == want
    # A fresh store holds no verdict: the knob is left alone.
    assert show(tmp_path / "empty") == "None"
    # The user's own choice is kept.
    assert show(store, TORCHINDUCTOR_VEC_ISA_OK="0") == "0"


def test_exit_status_and_signal_pass_through(mithril_bin, tmp_path):
    store = tmp_path / "store"
    p = _run(mithril_bin, store, "run", "--toolchain", "t", "--", PY, "-c",
             "import sys; sys.exit(7)")
    assert p.returncode == 7
    p = _run(mithril_bin, store, "run", "--toolchain", "t", "--", PY, "-c",
             "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert p.returncode == -signal.SIGTERM
    p = _run(mithril_bin, store, "run", "--toolchain", "t", "--",
             str(tmp_path / "no-such-program"))
    assert p.returncode == 127


CHILD = r'''
import os, signal, sys, time
d = os.path.join(os.environ["TORCHINDUCTOR_CACHE_DIR"], "fxgraph", "ab",
                 "fabkilled")
os.makedirs(d)
with open(os.path.join(d, "s1"), "w") as f:
    f.write("written before the signal")
def on_term(sig, frame):
    with open(os.path.join(d, "s2"), "w") as f:
        f.write("written by the handler")
    sys.exit(3)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
time.sleep(120)
'''


def test_signal_forwarded_and_capture_after(mithril_bin, tmp_path):
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [mithril_bin, "--dir", str(store), "run", "--toolchain", "t", "--",
         PY, "-c", CHILD], stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 3
    fresh = tmp_path / "fresh"
    p = _run(mithril_bin, store, "restore", "--work-dir", fresh,
             "--toolchain", "t", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["entries"] == 1
    d = fresh / "inductor" / "fxgraph" / "ab" / "fabkilled"
    assert (d / "s1").read_text() == "written before the signal"
    assert (d / "s2").read_text() == "written by the handler"


def test_capture_restore_commands(mithril_bin, tmp_path):
    store = tmp_path / "store"
    work = tmp_path / "work"
    so = work / "inductor" / "cd" / "ccdxyz.main.so"
    so.parent.mkdir(parents=True)
    so.write_bytes(b"\x7fELF" + bytes(range(256)) * 10)
    so.chmod(0o755)
    (work / "inductor" / "cd" / "ccdxyz.py").write_text("# wrapper\n")
    (work / "inductor" / "locks").mkdir()
    (work / "inductor" / "locks" / "ccdxyz.lock").write_text("")
    p = _run(mithril_bin, store, "capture", "--work-dir", work,
             "--toolchain", "tc A")
    assert p.returncode == 0, p.stderr
    assert "entries 1\nfiles 2\n" in p.stdout
    p = _run(mithril_bin, store, "restore", "--work-dir", tmp_path / "b",
             "--toolchain", "tc B", "--json")
    assert json.loads(p.stdout)["entries"] == 0
    p = _run(mithril_bin, store, "restore", "--work-dir", tmp_path / "a",
             "--toolchain", "tc A", "--json")
    assert json.loads(p.stdout) == {"entries": 1, "files": 2,
                                    "bytes": so.stat().st_size + 10,
                                    "skipped": 0, "rejected": 0}
    twin = tmp_path / "a" / "inductor" / "cd" / "ccdxyz.main.so"
    assert twin.read_bytes() == so.read_bytes()
    assert twin.stat().st_mode & 0o777 == 0o755
    assert not (tmp_path / "a" / "inductor" / "locks").exists()
    p = _run(mithril_bin, store, "restore", "--work-dir", tmp_path / "c",
             "--all", "--json")
    assert json.loads(p.stdout)["entries"] == 1
    p = _run(mithril_bin, store, "restore", "--all", "--toolchain", "x")
    assert p.returncode == 2


BINDINGS = r'''
import json, os, sys, threading
from mithril_cache import _native
store_dir, work, fresh = sys.argv[1:4]
s = _native.Store(store_dir)
tc = "torch=x triton=none python=3.11 device=cpu"
out = {"capture": _native.capture(s, work, tc),
       "again": _native.capture(s, work, toolchain=tc),
       "restore": _native.restore(s, fresh, tc),
       "restore_all": _native.restore(s, fresh)}
out["touch"] = [
    _native.touch_path(s, work, "inductor/cd/ccdq.main.so", tc),
    _native.touch_path(s, work, work + "/inductor/cd/ccdq.py", tc),
    _native.touch_path(s, work, "inductor/cd/cnone.py", tc),
    _native.touch_path(s, work, "inductor/locks/ccdq.lock", tc),
    _native.touch_path(s, work, "/elsewhere/inductor/cd/ccdq.py", tc)]
os.environ["MITHRIL_TOOLCHAIN"] = tc
out["touch_env"] = _native.touch_path(s, work, "inductor/cd/ccdq.py")
out["put"] = _native.put_files_entry(
    s, "g1/" + "ab" * 32, work,
    ["inductor/cd/ccdq.py", "inductor/fxgraph/qq/fqq/s1"], "tc=x kind=graph")
g = os.path.join(fresh, "g")
out["restore_entry"] = _native.restore_entry(s, g, "g1/" + "ab" * 32)
out["g_file"] = open(os.path.join(g, "inductor/cd/ccdq.py")).read()
try:
    _native.restore_entry(s, g, "g1/none")
except _native.NotFoundError:
    out["missing"] = "NotFoundError"
try:
    _native.put_files_entry(s, "g1/x", work, ["../x"], "")
except _native.InvalidError:
    out["unsafe"] = "InvalidError"
try:
    _native.capture("not a store", work, tc)
except TypeError:
    out["type"] = "TypeError"
# Many threads at once (the GIL is released around the library calls).
errs = []
def worker(i):
    try:
        for _ in range(20):
            _native.restore(s, os.path.join(fresh, "t%d" % i), tc)
            _native.capture(s, work, tc)
    except Exception as exc:
        errs.append(repr(exc))
ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
out["thread_errors"] = errs
print(json.dumps(out))
'''


def test_python_bindings(mithril_bin, tmp_path):
    work = tmp_path / "work"
    (work / "inductor" / "cd").mkdir(parents=True)
    (work / "inductor" / "cd" / "ccdq.py").write_text("# wrapper\n")
    (work / "inductor" / "cd" / "ccdq.main.so").write_bytes(b"\x7fELF..")
    fx = work / "inductor" / "fxgraph" / "qq" / "fqq"
    fx.mkdir(parents=True)
    (fx / "s1").write_bytes(b"graph")
    script = tmp_path / "bindings.py"
    script.write_text(BINDINGS)
    p = subprocess.run([PY, script, tmp_path / "store", work,
                        tmp_path / "fresh"], capture_output=True, text=True,
                       env=_env(PYTHONPATH=_pythonpath(mithril_bin)),
                       timeout=300)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["capture"] == {"entries": 2, "files": 3, "bytes": 21,
                              "skipped": 0, "rejected": 0}
    assert out["again"]["entries"] == 0 and out["again"]["skipped"] == 2
    assert out["restore"]["entries"] == 2 and out["restore"]["files"] == 3
    assert out["restore_all"]["entries"] == 0
    assert out["touch"] == [True, True, False, False, False]
    assert out["touch_env"] is True
    assert out["put"]["entries"] == 1 and out["put"]["files"] == 2
    assert out["restore_entry"]["files"] == 2
    assert out["g_file"] == "# wrapper\n"
    assert out["missing"] == "NotFoundError"
    assert out["unsafe"] == "InvalidError"
    assert out["type"] == "TypeError"
    assert out["thread_errors"] == []
