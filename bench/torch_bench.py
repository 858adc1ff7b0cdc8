"""Torch warm-start benchmark: one JSON object per demo model on stdout.

For each model in demo/models.py, each figure from FRESH processes (the
worker is demo/demo.py --worker; time = enable()/torch.compile() to the
end of the first compiled call; imports of torch, Dynamo, Inductor and
mithril_cache excluded):

  eager_s          first call, no compile
  cold_s           mithril backend on an empty store and working folder
  torch_cold_s     plain torch.compile, empty TORCHINDUCTOR_CACHE_DIR
  torch_warm_s     plain torch.compile, that folder kept (torch's cache)
  mithril_warm_s   mithril backend, working folder deleted first
  hit_rate         graph hits / lookups in the mithril warm runs
  dynamo_cold_s    enable(dynamo_cache=True) (TORCH_CACHING_PRECOMPILE=1)
  dynamo_warm_s    the same, working folder deleted first: Dynamo's
                   tracing is served from the store too

Medians over --repeats warm runs (cold runs once per repeat, each with a
fresh store). Progress goes to stderr; stdout carries only the JSON lines.

    python bench/torch_bench.py [--quick] [--models a,b] [--repeats N]
        [--no-dynamo]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "demo"))

import demo  # noqa: E402


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def bench_model(model, base, repeats, dynamo):
    s = {k: [] for k in ("eager_s", "cold_s", "torch_cold_s",
                         "torch_warm_s", "mithril_warm_s", "dynamo_cold_s",
                         "dynamo_warm_s")}
    hits = misses = 0
    torch_hits = torch_lookups = 0
    errors = {}
    store_bytes = None
    for rep in range(repeats):
        root = os.path.join(base, "%s-%d" % (model, rep))
        store = os.path.join(root, "store")
        work = os.path.join(root, "work")
        inductor = os.path.join(root, "torch")
        try:
            s["eager_s"].append(
                demo.run_worker(model, "eager")["first_call_s"])
            s["torch_cold_s"].append(demo.run_worker(
                model, "torch", inductor=inductor)["first_call_s"])
            s["torch_warm_s"].append(demo.run_worker(
                model, "torch", inductor=inductor)["first_call_s"])
            s["cold_s"].append(demo.run_worker(
                model, "mithril", dir=store, work=work)["first_call_s"])
            shutil.rmtree(work, ignore_errors=True)
            w = demo.run_worker(model, "mithril", dir=store, work=work)
            s["mithril_warm_s"].append(w["first_call_s"])
            hits += w["graph_hits"]
            misses += w["graph_misses"]
            t = w.get("torch", {})
            torch_hits += t.get("fxgraph_cache_hit", 0)
            torch_lookups += t.get("fxgraph_cache_hit", 0) + \
                t.get("fxgraph_cache_miss", 0)
            store_bytes = w.get("store_bytes")
        except RuntimeError as exc:
            errors["mithril"] = str(exc)[-500:]
        if not dynamo:
            continue
        dstore = os.path.join(root, "dstore")
        dwork = os.path.join(root, "dwork")
        try:
            s["dynamo_cold_s"].append(demo.run_worker(
                model, "mithril-dynamo", dir=dstore,
                work=dwork)["first_call_s"])
            shutil.rmtree(dwork, ignore_errors=True)
            d = demo.run_worker(model, "mithril-dynamo", dir=dstore,
                                work=dwork)
            s["dynamo_warm_s"].append(d["first_call_s"])
            s.setdefault("dynamo_cache_hit", []).append(
                d.get("torch", {}).get("dynamo_cache_hit", 0))
        except RuntimeError as exc:
            errors["dynamo"] = str(exc)[-500:]
    row = {"model": model}
    for k, v in s.items():
        if k == "dynamo_cache_hit":
            row[k] = sum(v)
        else:
            row[k] = _med(v)
    row["hit_rate"] = hits / (hits + misses) if hits + misses else None
    row["graph_hits"] = hits
    row["graph_misses"] = misses
    row["torch_fx_hit_rate"] = (torch_hits / torch_lookups
                                if torch_lookups else None)
    row["store_bytes"] = store_bytes
    row["repeats"] = repeats
    if errors:
        row["errors"] = errors
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(demo_models()))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--quick", action="store_true",
                    help="first model only, one repeat")
    ap.add_argument("--no-dynamo", action="store_true",
                    help="skip the Dynamo-level cache measurement")
    args = ap.parse_args(argv)
    models = args.models.split(",")
    repeats = args.repeats
    if args.quick:
        models, repeats = models[:1], 1
    base = tempfile.mkdtemp(prefix="mithril-torch-bench-")
    rc = 0
    try:
        for model in models:
            print("torch_bench: %s" % model, file=sys.stderr, flush=True)
            row = bench_model(model, base, max(1, repeats),
                              not args.no_dynamo)
            if "errors" in row:
                rc = 1
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return rc


def demo_models():
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "demo"))
    import models
    return list(models.MODELS)


if __name__ == "__main__":
    sys.exit(main())
