"""mithril_cache with a real torch: cold compile, warm from the store with
the working folder deleted, a moved store, several graphs in one store,
disabled and unusable stores, and enabling too late.

Every compile runs in a fresh subprocess (the worker below), so nothing is
reused in memory. Models are tiny: the machine is small and shared.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent.parent

WORKER = textwrap.dedent(r'''
    import json, os, sys, warnings
    import torch

    def model(kind):
        torch.manual_seed(0)
        if kind == "mlp":
            m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                    torch.nn.Linear(16, 4))
        else:
            m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh())
        return m.eval()

    def counters():
        from torch._dynamo.utils import counters as c
        return {k: v for g in ("inductor", "aot_autograd")
                for k, v in c.get(g, {}).items() if "cache" in k}

    def run_cases(cases, backend):
        out = []
        for kind, rows in cases:
            m = model(kind)
            torch.manual_seed(1)
            x = torch.randn(rows, 8)
            with torch.no_grad():
                ref = m(x)
                y = torch.compile(m, backend=backend, dynamic=False)(x)
            out.append({"kind": kind, "rows": rows,
                        "err": (y - ref).abs().max().item(),
                        "key": getattr(backend, "last_key", None)})
        return out

    cfg = json.loads(sys.argv[1])
    res = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cfg.get("pre_wrap"):
            # torch.compile() already imported Dynamo (which resolves a
            # default cache folder) before enable(): must still work.
            torch.compile(model("mlp"))
        if cfg.get("compile_first"):
            res["cases"] = run_cases([("mlp", 4)], "inductor")
        import mithril_cache
        try:
            mgr = mithril_cache.enable(dir=cfg.get("dir"),
                                       work_dir=cfg.get("work"),
                                       restore=cfg.get("restore", True))
            if cfg.get("disable_env_then_dir"):
                os.environ.pop("MITHRIL_DISABLE")
                mgr2 = mithril_cache.enable(dir=cfg["disable_env_then_dir"])
                mgr2b = mithril_cache.enable(dir=cfg["disable_env_then_dir"])
                res["second_enabled"] = mgr2.enabled or mgr2b.enabled
                res["second_reason"] = mgr2.reason
        except RuntimeError as exc:
            res["error"] = str(exc)
            mgr = None
        if mgr is not None:
            res["enabled"] = mgr.enabled
            res["reason"] = mgr.reason
            res["env_dir"] = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
            be = mithril_cache.backend()
            res["cases"] = run_cases([tuple(c) for c in cfg["cases"]], be)
            res["keys"] = be.keys
            if mgr.enabled:
                mgr.flush()
                res["stats"] = mgr.stats()
        res["torch"] = counters()
    res["warnings"] = [str(w.message) for w in caught
                       if "mithril" in str(w.message)]
    print("RESULT " + json.dumps(res))
''')

CASES = [["mlp", 4], ["mlp", 6], ["tanh", 4], ["tanh", 6]]
TOL = 1e-5


def run_worker(tmp, cfg, env=None):
    script = Path(tmp) / "worker.py"
    script.write_text(WORKER)
    full = dict(os.environ)
    for name in ("MITHRIL_DIR", "MITHRIL_WORK_DIR", "MITHRIL_TOOLCHAIN",
                 "MITHRIL_DISABLE", "TORCHINDUCTOR_CACHE_DIR",
                 "TRITON_CACHE_DIR", "TORCH_CACHING_PRECOMPILE"):
        full.pop(name, None)
    full["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]
        if p)
    if env:
        full.update(env)
    p = subprocess.run([sys.executable, str(script), json.dumps(cfg)],
                       capture_output=True, text=True, env=full,
                       timeout=900, cwd=str(tmp))
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert p.returncode == 0 and lines, (p.returncode, p.stderr[-4000:])
    return json.loads(lines[-1][len("RESULT "):]), p.stderr


def check_outputs(res):
    assert len(res["cases"]) >= 1
    for case in res["cases"]:
        assert case["err"] <= TOL, case


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """One cold run: 2 models x 2 shapes into an empty store."""
    tmp = tmp_path_factory.mktemp("cold")
    store, work = tmp / "store", tmp / "work"
    res, _ = run_worker(tmp, {"dir": str(store), "work": str(work),
                              "cases": CASES, "pre_wrap": True})
    return {"tmp": tmp, "store": store, "work": work, "res": res}


def test_cold_compile_records_graphs(cold):
    res = cold["res"]
    assert res["enabled"], res
    assert res["env_dir"] == str(cold["work"] / "inductor")
    check_outputs(res)
    proc = res["stats"]["process"]
    assert proc["graph_misses"] == len(CASES)
    assert proc["graph_hits"] == 0
    # torch wrote its cache under the working folder, not its default.
    assert any((cold["work"] / "inductor").glob("fxgraph/*/*/*"))
    assert res["torch"].get("fxgraph_cache_miss", 0) >= len(CASES)
    assert res["stats"]["entries"] > len(CASES)


def _fx_access_times(store_dir):
    from mithril_cache import _native

    with _native.Store(str(store_dir)) as store:
        return {e["key"]: e["last_access_ns"]
                for e in _native.entries(store)
                if e["key"].startswith("w1/") and "kind=fxgraph" in e["meta"]}


def test_warm_after_work_dir_deleted_hits(cold, tmp_path):
    shutil.rmtree(cold["work"])
    before = _fx_access_times(cold["store"])
    assert len(before) >= len(CASES)
    res, _ = run_worker(tmp_path, {"dir": str(cold["store"]),
                                   "work": str(cold["work"]),
                                   "cases": CASES})
    # The audit hook saw torch read its FX graph files: their entries'
    # recency was refreshed (what keeps them from LRU eviction).
    after = _fx_access_times(cold["store"])
    assert all(after[k] > before[k] for k in before), (before, after)
    check_outputs(res)
    proc = res["stats"]["process"]
    assert proc["graph_hits"] == len(CASES), proc
    assert proc["graph_misses"] == 0
    assert proc["torch_misses_after_graph_hit"] == 0
    assert res["torch"].get("fxgraph_cache_miss", 0) == 0, res["torch"]
    assert res["torch"].get("autograd_cache_hit", 0) + \
        res["torch"].get("fxgraph_cache_hit", 0) >= len(CASES)
    assert res["stats"]["graph_hits"] >= len(CASES)
    # The same graphs get the same keys in another process.
    assert res["keys"] == cold["res"]["keys"]


def test_moved_store_other_home_and_user_hits(cold, tmp_path):
    moved = tmp_path / "elsewhere" / "store"
    moved.parent.mkdir()
    shutil.copytree(cold["store"], moved)
    home = tmp_path / "home"
    home.mkdir()
    # restore=False: only the per-graph entries materialize files, so
    # this also shows each g1 entry carries everything its graph needs.
    res, _ = run_worker(tmp_path, {"dir": str(moved),
                                   "work": str(tmp_path / "work2"),
                                   "cases": CASES, "restore": False},
                        env={"HOME": str(home), "USER": "somebodyelse",
                             "LOGNAME": "somebodyelse"})
    check_outputs(res)
    assert res["stats"]["restored"] == {}
    proc = res["stats"]["process"]
    assert proc["graph_hits"] == len(CASES), proc
    assert proc["torch_misses_after_graph_hit"] == 0
    assert res["torch"].get("fxgraph_cache_miss", 0) == 0
    assert res["torch"].get("autograd_cache_miss", 0) == 0
    assert res["keys"] == cold["res"]["keys"]


def test_graphs_keep_their_own_entries(cold):
    from mithril_cache import _native

    keys = cold["res"]["keys"]
    assert len(keys) == len(CASES)
    assert len(set(keys)) == len(CASES), "two graphs share a key"
    store = _native.Store(str(cold["store"]))
    items = []
    for key in keys:
        e = _native.entry_peek(store, "g1/" + key)
        names = {it[0] if isinstance(it, tuple) else it["name"]
                 for it in e["items"]}
        assert any("/fxgraph/" in n for n in names), names
        items.append(frozenset(n for n in names if "/fxgraph/" in n))
    # Each graph's FX graph files are its own.
    assert len(set(items)) == len(CASES)


def test_disabled_and_unusable_store_still_run(tmp_path):
    own = tmp_path / "torchcache"
    res, _ = run_worker(
        tmp_path, {"dir": str(tmp_path / "store"),
                   "disable_env_then_dir": "/proc/mithril-store",
                   "cases": [["mlp", 4]]},
        env={"MITHRIL_DISABLE": "1", "TORCHINDUCTOR_CACHE_DIR": str(own)})
    assert res["enabled"] is False
    assert "MITHRIL_DISABLE" in res["reason"]
    assert res["second_enabled"] is False
    assert "/proc/mithril-store" in res["second_reason"]
    # Nothing was redirected: torch used the folder it was given.
    assert res["env_dir"] == str(own)
    check_outputs(res)
    warned = res["warnings"]
    assert sum("MITHRIL_DISABLE" in w for w in warned) == 1, warned
    assert sum("/proc/mithril-store" in w for w in warned) == 1, warned
    assert not (tmp_path / "store").exists()


def test_enable_after_torch_compiled_elsewhere_is_an_error(tmp_path):
    res, _ = run_worker(
        tmp_path, {"dir": str(tmp_path / "store"), "compile_first": True,
                   "cases": []},
        env={"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "other")})
    assert "error" in res, res
    assert str(tmp_path / "other") in res["error"]
    assert "before the first call" in res["error"]
    check_outputs(res)


def test_remote_fills_an_empty_store(redis_server, tmp_path):
    env = {"MITHRIL_REMOTE": redis_server.url}
    cases = [["mlp", 4]]
    cold, _ = run_worker(tmp_path, {"dir": str(tmp_path / "a"),
                                    "work": str(tmp_path / "wa"),
                                    "cases": cases}, env=env)
    assert cold["stats"]["process"]["graph_misses"] == 1
    warm, _ = run_worker(tmp_path, {"dir": str(tmp_path / "b"),
                                    "work": str(tmp_path / "wb"),
                                    "cases": cases}, env=env)
    check_outputs(warm)
    assert warm["stats"]["process"]["graph_hits"] == 1, warm["stats"]
    assert warm["stats"]["pulled"]["entries"] > 0
    assert warm["torch"].get("fxgraph_cache_miss", 0) == 0
    assert warm["keys"] == cold["keys"]
