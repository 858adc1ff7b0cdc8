"""Several processes compile the same tiny model through
mithril_cache.enable() with the same store at the same moment: 2 processes
in `make test`, 4 with MITHRIL_STRESS=1.

Round 1 (cold): every process shares the store's default working folder,
so torch's own cache writes and mithril's captures at exit meet. Round 2
(warm): every process gets a fresh private working folder that enable()
restores from the store at the same moment. In both rounds every output
matches eager execution, and `mithril verify` finds the store clean.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent.parent
STRESS = os.environ.get("MITHRIL_STRESS") == "1"
PROCS = 4 if STRESS else 2

WORKER = textwrap.dedent(r'''
    import json, os, sys, time
    store, work, start_file = sys.argv[1], sys.argv[2], sys.argv[3]
    import torch
    import mithril_cache
    # Start compiling together: wait for the parent's signal file.
    while not os.path.exists(start_file):
        time.sleep(0.01)
    m = mithril_cache.enable(dir=store, work_dir=work or None)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 4)).eval()
    torch.manual_seed(1)
    x = torch.randn(5, 8)
    with torch.no_grad():
        ref = model(x)
        y = torch.compile(model, dynamic=False)(x)
    mithril_cache.flush()
    print(json.dumps({"err": (y - ref).abs().max().item(),
                      "enabled": bool(mithril_cache.active())}))
''')


def _env():
    env = dict(os.environ)
    for name in ("MITHRIL_DIR", "MITHRIL_REMOTE", "MITHRIL_DISABLE",
                 "MITHRIL_WORK_DIR", "TORCHINDUCTOR_CACHE_DIR",
                 "TRITON_CACHE_DIR"):
        env.pop(name, None)
    env["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    return env


def _round(tmp_path, store, work_dirs, name):
    start = tmp_path / f"start-{name}"
    procs = [subprocess.Popen(
        [sys.executable, "-c", WORKER, str(store), str(w or ""), str(start)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        for w in work_dirs]
    start.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err.decode(errors="replace")[-3000:]
        res = json.loads(out.decode().strip().splitlines()[-1])
        assert res["enabled"], err.decode(errors="replace")[-3000:]
        assert res["err"] < 1e-5, res
        results.append(res)
    return results


def _verify(mithril_bin, store):
    env = _env()
    v = subprocess.run([mithril_bin, "--dir", str(store), "verify"],
                       capture_output=True, env=env)
    assert v.returncode == 0, v.stdout + v.stderr
    ls = subprocess.run([mithril_bin, "--dir", str(store), "ls", "--json"],
                        capture_output=True, env=env, check=True)
    return json.loads(ls.stdout)


def test_processes_compile_same_model_at_once(mithril_bin, tmp_path):
    store = tmp_path / "store"
    # Round 1: cold, one shared working folder (the store's default).
    _round(tmp_path, store, [None] * PROCS, "cold")
    entries = _verify(mithril_bin, store)
    assert entries, "nothing was captured"
    # Round 2: warm, a fresh private working folder each, restored from
    # the store by every process at once.
    works = [tmp_path / f"work{i}" for i in range(PROCS)]
    _round(tmp_path, store, works, "warm")
    for w in works:
        assert any(p.is_file() for p in (w / "inductor").rglob("*")), w
    after = _verify(mithril_bin, store)
    assert len(after) >= len(entries)
