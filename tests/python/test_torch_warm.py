"""Warm-start overhead with a real torch: enable() takes Inductor's vector
ISA verdict once per store and toolchain, keeps it as an entry, and every
later process skips each ISA's base probe (a fresh Python that dlopens
libtorch_cpu) while still hitting the entries the first process recorded.
Torch's probes of ISA extensions (AVX-512 bf16 and VNNI, AMX) do not obey
the setting and still run where the CPU advertises them.

Every compile runs in a fresh subprocess; the model is tiny.
"""

import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or
    platform.machine() not in ("x86_64", "AMD64"),
    reason="the vector ISA verdict is taken on x86 Linux only")

WORKER = textwrap.dedent(r'''
    import json, os, sys
    import torch

    probes = []

    def hook(event, args):
        # Inductor's ISA probe: a child Python that dlopens a test library.
        if event == "subprocess.Popen" and "LoadLibrary" in repr(args[1]):
            probes.append(1)

    sys.addaudithook(hook)
    cfg = json.loads(sys.argv[1])
    import mithril_cache
    import torch._inductor.config as icfg
    from torch._dynamo.utils import counters

    mgr = mithril_cache.enable(dir=cfg["dir"], work_dir=cfg["work"])
    import torch._inductor.cpu_vec_isa as cvi
    from mithril_cache import _enable
    advertised = len(_enable._advertised_isas(cvi))
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(),
                            torch.nn.Linear(16, 4)).eval()
    x = torch.randn(4, 8)
    with torch.no_grad():
        ref = m(x)
        y = torch.compile(m, backend=mithril_cache.backend())(x)
    mgr.flush()
    from mithril_cache import _native
    isa = [e["meta"] for e in _native.entries(mgr.store)
           if e["key"].startswith("isa1/")]
    print("RESULT " + json.dumps({
        "err": (y - ref).abs().max().item(),
        "manager": mgr.vec_isa_ok,
        "env": os.environ.get("TORCHINDUCTOR_VEC_ISA_OK"),
        "config": icfg.cpp.vec_isa_ok,
        "probes": len(probes),
        "advertised": advertised,
        "isa_entries": isa,
        "fx": {k: v for k, v in counters["inductor"].items()
               if k.startswith("fxgraph_cache")},
    }))
''')


def run_worker(tmp, cfg, env=None):
    script = Path(tmp) / "warm_worker.py"
    script.write_text(WORKER)
    full = dict(os.environ)
    for name in ("MITHRIL_DIR", "MITHRIL_WORK_DIR", "MITHRIL_TOOLCHAIN",
                 "MITHRIL_DISABLE", "TORCHINDUCTOR_CACHE_DIR",
                 "TRITON_CACHE_DIR", "TORCH_CACHING_PRECOMPILE",
                 "TORCHINDUCTOR_VEC_ISA_OK"):
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
    return json.loads(lines[-1][len("RESULT "):])


def _cpu_device():
    from mithril_cache import _native
    return _native.device_detect().startswith("cpu")


def test_isa_verdict_taken_once_then_probe_skipped_and_entries_hit(
        tmp_path):
    if not _cpu_device():
        pytest.skip("the verdict is taken on CPU device classes only")
    cfg = {"dir": str(tmp_path / "store"), "work": str(tmp_path / "work")}
    cold = run_worker(tmp_path, cfg)
    assert cold["err"] <= 1e-5, cold
    assert len(cold["isa_entries"]) == 1, cold
    verdict = cold["isa_entries"][0]
    assert "kind=isa" in verdict
    if "vec_isa_ok=1" not in verdict:
        # This machine's compiler cannot build every advertised ISA:
        # torch keeps probing, nothing is changed.
        assert cold["manager"] is False and cold["env"] is None, cold
        return
    # The first process ran torch's probe to take the verdict, then
    # compiled with the knob already set (it is part of the FX keys).
    assert cold["manager"] is True and cold["probes"] >= 1, cold
    assert cold["env"] == "1" and cold["config"] is True, cold
    assert cold["fx"].get("fxgraph_cache_miss", 0) >= 1, cold

    shutil.rmtree(tmp_path / "work")
    warm = run_worker(tmp_path, cfg)
    assert warm["err"] <= 1e-5, warm
    assert warm["manager"] is True and warm["config"] is True, warm
    # Every ISA's base probe is skipped. Torch's probes of ISA extensions
    # (AVX-512 bf16 and VNNI, AMX) ignore cpp.vec_isa_ok and still run on
    # CPUs that advertise them; on an AVX2-only CPU nothing is left.
    assert cold["advertised"] >= 1, cold
    assert warm["probes"] == cold["probes"] - cold["advertised"], (cold,
                                                                  warm)
    if cold["advertised"] == 1:
        assert warm["probes"] == 0, warm
    assert warm["isa_entries"] == cold["isa_entries"], warm
    # Same knob in both processes: torch's own entries still hit.
    assert warm["fx"].get("fxgraph_cache_miss", 0) == 0, warm
    assert warm["fx"].get("fxgraph_cache_hit", 0) >= 1, warm


def test_user_choice_of_the_isa_knob_is_left_alone(tmp_path):
    cfg = {"dir": str(tmp_path / "store"), "work": str(tmp_path / "work")}
    res = run_worker(tmp_path, cfg, env={"TORCHINDUCTOR_VEC_ISA_OK": "0"})
    assert res["err"] <= 1e-5, res
    assert res["manager"] is None, res
    assert res["env"] == "0" and res["config"] is False, res
    assert res["isa_entries"] == [], res
