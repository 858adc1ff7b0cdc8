"""Two machines sharing one Redis, with a real torch: a producer compiles a
tiny model with an empty store and a remote; a consumer with another empty
store and an empty working folder hits on its first run.

Two paths: mithril_cache.enable(remote=URL) with the keyed backend (the
consumer's lookups read through to Redis), and the command line (`mithril
run` + `mithril push`, then `mithril pull` + `mithril run`). Every compile
runs in a fresh subprocess; the model is tiny (the machine is shared).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent.parent

WORKER = textwrap.dedent(r'''
    import json, os, sys
    import torch

    cfg = json.loads(sys.argv[1])
    mgr = None
    if cfg.get("enable"):
        import mithril_cache
        from mithril_cache import _native
        mgr = mithril_cache.enable(dir=cfg["dir"], work_dir=cfg["work"],
                                   remote=cfg["remote"])
        assert mgr.enabled, mgr.reason
        backend = mithril_cache.backend()
    else:
        backend = "inductor"
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                            torch.nn.Linear(16, 4)).eval()
    x = torch.randn(4, 8)
    with torch.no_grad():
        ref = m(x)
        y = torch.compile(m, backend=backend, dynamic=False)(x)
    res = {"err": (y - ref).abs().max().item()}
    from torch._dynamo.utils import counters
    res["torch"] = {k: v for g in ("inductor", "aot_autograd")
                    for k, v in counters.get(g, {}).items() if "cache" in k}
    if mgr is not None:
        mgr.flush()
        res["drained"] = _native.remote_drain(mgr.store, 60000)
        res["stats"] = mgr.stats()
    print("RESULT " + json.dumps(res))
''')


def _env(extra=None):
    env = dict(os.environ)
    for name in ("MITHRIL_DIR", "MITHRIL_WORK_DIR", "MITHRIL_TOOLCHAIN",
                 "MITHRIL_DISABLE", "MITHRIL_REMOTE", "MITHRIL_SECRET",
                 "MITHRIL_SECRET_FILE", "TORCHINDUCTOR_CACHE_DIR",
                 "TRITON_CACHE_DIR", "TORCH_CACHING_PRECOMPILE"):
        env.pop(name, None)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]
        if p)
    if extra:
        env.update(extra)
    return env


def _result(p):
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    assert p.returncode == 0 and lines, (p.returncode, p.stderr[-4000:])
    return json.loads(lines[-1][len("RESULT "):])


def run_worker(tmp, cfg, prefix=(), env=None):
    script = Path(tmp) / "remote_worker.py"
    script.write_text(WORKER)
    p = subprocess.run([*prefix, sys.executable, str(script),
                        json.dumps(cfg)],
                       capture_output=True, text=True, env=_env(env),
                       timeout=900, cwd=str(tmp))
    return _result(p)


def test_enable_remote_consumer_hits_first_run(tmp_path, redis_server):
    prod = run_worker(tmp_path, {"enable": True,
                                 "dir": str(tmp_path / "p-store"),
                                 "work": str(tmp_path / "p-work"),
                                 "remote": redis_server.url})
    assert prod["err"] <= 1e-5
    assert prod["drained"], prod
    assert prod["stats"]["process"]["graph_misses"] >= 1
    # The producer's entries reached Redis.
    n = redis_server.cli("SCARD", "mithril:entries").stdout.strip()
    assert int(n) >= 2, n

    # enable() pulls, then restores: the remote's key set is listed once.
    redis_server.cli("CONFIG", "RESETSTAT")
    cons = run_worker(tmp_path, {"enable": True,
                                 "dir": str(tmp_path / "c-store"),
                                 "work": str(tmp_path / "c-work"),
                                 "remote": redis_server.url})
    assert cons["err"] <= 1e-5
    proc = cons["stats"]["process"]
    assert proc["graph_hits"] >= 1 and proc["graph_misses"] == 0, proc
    assert cons["stats"]["remote_hits"] >= 1, cons["stats"]
    # enable(remote=URL) reports what it pulled, as MITHRIL_REMOTE does.
    assert cons["stats"]["pulled"]["entries"] >= 1, cons["stats"]
    assert cons["torch"].get("fxgraph_cache_miss", 0) == 0, cons["torch"]
    info = redis_server.cli("INFO", "commandstats").stdout.decode()
    listings = [ln for ln in info.splitlines()
                if ln.startswith("cmdstat_smembers:")]
    assert listings and listings[0].split("calls=")[1].split(",")[0] == "1", \
        info


def test_cli_run_push_pull_run(tmp_path, redis_server, mithril_bin):
    url = redis_server.url
    p_store, c_store = tmp_path / "p-store", tmp_path / "c-store"

    def mithril(store, *args):
        return subprocess.run([mithril_bin, "--dir", str(store), *args],
                              capture_output=True, text=True, env=_env(),
                              timeout=900, cwd=str(tmp_path))

    prod = run_worker(tmp_path, {}, prefix=[mithril_bin, "--dir",
                                            str(p_store), "run", "--"])
    assert prod["torch"].get("fxgraph_cache_miss", 0) >= 1, prod
    p = mithril(p_store, "--remote", url, "push")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("pushed "), p.stdout
    assert not p.stdout.startswith("pushed 0 "), p.stdout

    p = mithril(c_store, "pull", "--remote", url)
    assert p.returncode == 0, p.stderr
    assert not p.stdout.startswith("pulled 0 "), p.stdout
    cons = run_worker(tmp_path, {}, prefix=[mithril_bin, "--dir",
                                            str(c_store), "run", "--"])
    assert cons["err"] <= 1e-5
    assert cons["torch"].get("fxgraph_cache_miss", 0) == 0, cons["torch"]
    assert cons["torch"].get("fxgraph_cache_hit", 0) >= 1, cons["torch"]
