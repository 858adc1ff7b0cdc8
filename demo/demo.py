"""make demo: small real models compiled cold, then warm through mithril.

For each model in demo/models.py, every measurement runs in a FRESH
Python process (so nothing is reused in memory):

  eager        first call of the plain model
  torch cold   torch.compile with an empty TORCHINDUCTOR_CACHE_DIR
  torch warm   the same again, that folder kept (torch's own cache)
  mithril cold torch.compile(backend=mithril_cache.backend()) after
               mithril_cache.enable() on an empty store (each model has
               its own store, <dir>/<model>)
  mithril warm the same with the working folder deleted first: every
               artifact comes back from the store

Times are from just before enable()/torch.compile() to the end of the
first compiled call (imports of torch, Dynamo, Inductor and mithril_cache
excluded: the same work in every mode). Each process checks its
outputs against eager within a tolerance and fails loudly otherwise.

    python demo/demo.py [--dir STORES] [--models transformer,cnn] [--dynamo]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

TOLERANCE = 1e-4


def _torch_counters():
    from torch._dynamo.utils import counters
    keep = {}
    for group in ("inductor", "aot_autograd", "dynamo_cache"):
        for k, v in counters.get(group, {}).items():
            if "cache" in k:
                keep[k] = v
    return keep


def worker(args):
    """Run one measurement in this (fresh) process; print a JSON line."""
    sys.path.insert(0, HERE)
    import torch

    from models import MODELS

    model, x = MODELS[args.model]()
    out = {"model": args.model, "mode": args.mode}
    if args.mode == "eager":
        # The first call in this process: nothing warmed up before it.
        t0 = time.perf_counter()
        with torch.no_grad():
            model(x)
        out["first_call_s"] = time.perf_counter() - t0
        print(json.dumps(out))
        return 0
    with torch.no_grad():
        ref = model(x)
    # Imports are the same work in every mode: keep them out of the times.
    import torch._dynamo  # noqa: F401
    import torch._inductor.compile_fx  # noqa: F401
    if args.mode.startswith("mithril"):
        import mithril_cache
    t0 = time.perf_counter()
    mgr = None
    if args.mode.startswith("mithril"):
        mgr = mithril_cache.enable(dir=args.dir, work_dir=args.work,
                                   dynamo_cache=args.mode.endswith("dynamo"))
        out["enable_s"] = time.perf_counter() - t0
        if args.mode == "mithril-dynamo":
            compiled = torch.compile(model)
        else:
            compiled = torch.compile(model,
                                     backend=mithril_cache.backend())
    else:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = args.inductor
        compiled = torch.compile(model)
    out["setup_s"] = time.perf_counter() - t0
    with torch.no_grad():
        y = compiled(x)
    out["first_call_s"] = time.perf_counter() - t0
    err = (y - ref).abs().max().item()
    out["max_abs_err"] = err
    out["outputs_equal"] = bool(err <= TOLERANCE)
    out["torch"] = _torch_counters()
    if mgr is not None:
        t1 = time.perf_counter()
        mgr.flush()
        out["flush_s"] = time.perf_counter() - t1
        st = mgr.stats()
        out["graph_hits"] = st["process"]["graph_hits"]
        out["graph_misses"] = st["process"]["graph_misses"]
        out["store_entries"] = st.get("entries")
        out["store_bytes"] = st.get("size_bytes")
        out["restored_files"] = st["restored"].get("files", 0)
    print(json.dumps(out))
    if not out["outputs_equal"]:
        sys.stderr.write("outputs differ from eager: %g\n" % err)
        return 1
    return 0


def run_worker(model, mode, dir=None, work=None, inductor=None, env=None):
    """Run demo.py --worker in a fresh process; return (dict, wall_s)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker",
           "--model", model, "--mode", mode]
    if dir:
        cmd += ["--dir", dir]
    if work:
        cmd += ["--work", work]
    if inductor:
        cmd += ["--inductor", inductor]
    full = dict(os.environ)
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR",
                 "MITHRIL_WORK_DIR", "MITHRIL_TOOLCHAIN",
                 "TORCH_CACHING_PRECOMPILE"):
        full.pop(name, None)
    if not full.get("PYTHONPATH"):
        full["PYTHONPATH"] = os.pathsep.join(
            [os.path.join(ROOT, "python"),
             os.path.join(ROOT, "build", "python")])
    full["PYTHONWARNINGS"] = "ignore"
    if env:
        full.update(env)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=full,
                       timeout=1800)
    wall = time.perf_counter() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError("%s %s failed (exit %d):\n%s" % (
            model, mode, p.returncode, p.stderr[-3000:]))
    res = json.loads(lines[-1])
    res["wall_s"] = wall
    return res


def measure(model, base, store, dynamo=False):
    """All measurements of one model; returns a dict of results. store:
    this model's own store folder (empty at first, so the cold run is
    cold)."""
    inductor = os.path.join(base, "torch-" + model)
    work = os.path.join(base, "work-" + model)
    r = {"model": model}
    r["eager"] = run_worker(model, "eager")
    r["torch_cold"] = run_worker(model, "torch", inductor=inductor)
    r["torch_warm"] = run_worker(model, "torch", inductor=inductor)
    r["mithril_cold"] = run_worker(model, "mithril", dir=store, work=work)
    shutil.rmtree(work, ignore_errors=True)
    r["mithril_warm"] = run_worker(model, "mithril", dir=store, work=work)
    if dynamo:
        dwork = os.path.join(base, "dwork-" + model)
        r["dynamo_cold"] = run_worker(model, "mithril-dynamo", dir=store,
                                      work=dwork)
        shutil.rmtree(dwork, ignore_errors=True)
        r["dynamo_warm"] = run_worker(model, "mithril-dynamo", dir=store,
                                      work=dwork)
    return r


def _human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return "%.1f %s" % (n, unit) if unit != "B" else "%d B" % n
        n /= 1024.0
    return str(n)


def print_table(rows):
    dynamo = any("dynamo_warm" in r for r in rows)
    head = ("model", "eager", "torch cold", "torch warm", "mithril cold",
            "mithril warm", "graphs hit/miss", "hit rate", "store")
    if dynamo:
        head += ("dynamo warm",)
    table = [head]
    for r in rows:
        w = r["mithril_warm"]
        hits, misses = w["graph_hits"], w["graph_misses"]
        rate = hits / (hits + misses) if hits + misses else 0.0
        row = (
            r["model"], "%.2f s" % r["eager"]["first_call_s"],
            "%.2f s" % r["torch_cold"]["first_call_s"],
            "%.2f s" % r["torch_warm"]["first_call_s"],
            "%.2f s" % r["mithril_cold"]["first_call_s"],
            "%.2f s" % w["first_call_s"],
            "%d/%d" % (hits, misses), "%.0f%%" % (100 * rate),
            _human(w.get("store_bytes") or 0))
        if dynamo:
            d = r.get("dynamo_warm")
            row += ("%.2f s" % d["first_call_s"] if d else "-",)
        table.append(row)
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for n, row in enumerate(table):
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()
    print("Times: first compiled call including compile (and mithril's "
          "restore), fresh process each, imports excluded.")
    print("mithril warm: working folder deleted before the run; outputs "
          "checked against eager (tolerance %g) in every process." %
          TOLERANCE)
    if dynamo:
        print("dynamo warm: enable(dynamo_cache=True) "
              "(TORCH_CACHING_PRECOMPILE=1), working folder deleted: "
              "Dynamo's tracing also comes from the store.")


def show_store(store):
    """Print `mithril stats` for the store when the command is built."""
    exe = os.environ.get("MITHRIL_BIN") or os.path.join(ROOT, "build",
                                                        "mithril")
    if not os.access(exe, os.X_OK):
        return
    p = subprocess.run([exe, "--dir", store, "stats"], capture_output=True,
                       text=True, timeout=60)
    if p.returncode == 0:
        print()
        print("$ mithril --dir %s stats" % store)
        print(p.stdout.rstrip())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", help="folder of the stores, one per model "
                    "(default: a temporary one)")
    ap.add_argument("--models", default="transformer,cnn,mlp")
    ap.add_argument("--dynamo", action="store_true",
                    help="also measure the Dynamo-level cache")
    ap.add_argument("--json", action="store_true",
                    help="print the raw results as JSON too")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--inductor", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    base = tempfile.mkdtemp(prefix="mithril-demo-")
    try:
        root = args.dir or os.path.join(base, "stores")
        rows = []
        for model in args.models.split(","):
            print("measuring %s ..." % model, file=sys.stderr, flush=True)
            rows.append(measure(model, base, os.path.join(root, model),
                                dynamo=args.dynamo))
        print("mithril demo: one store per model under %s" % root)
        print()
        print_table(rows)
        show_store(os.path.join(root, rows[-1]["model"]))
        if args.json:
            print(json.dumps(rows, indent=1))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
