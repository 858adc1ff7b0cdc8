"""Many processes on one store: putting, reading, evicting under a small
cap and verifying the same keys at once. No errors, no wrong bytes, and
consistent statistics afterwards. `make test` runs it for a few seconds,
`make stress` (MITHRIL_STRESS=1) for a minute."""

import json
import os
import random
import subprocess
import sys
import time

import pytest

STRESS = os.environ.get("MITHRIL_STRESS") == "1"
SECONDS = 60 if STRESS else 6
WORKERS = 8

WORKER = r'''
import os, random, subprocess, sys, time
mithril, store, files, seed, seconds = sys.argv[1:6]
rnd = random.Random(int(seed))
env = dict(os.environ)
env.pop("MITHRIL_DIR", None)
def run(*args):
    return subprocess.run([mithril, "--dir", store, *args],
                          capture_output=True, env=env, timeout=120)
end = time.time() + float(seconds)
ops = 0
while time.time() < end:
    i = rnd.randrange(40)
    f = os.path.join(files, "f%d" % i)
    op = rnd.random()
    if op < 0.4:
        p = run("put", f, "--key", "k%d" % i)
        if p.returncode != 0:
            print("put failed", p.returncode, p.stderr); sys.exit(1)
    elif op < 0.85:
        p = run("get", "--key", "k%d" % i)
        if p.returncode == 0:
            if p.stdout != open(f, "rb").read():
                print("WRONG BYTES for k%d" % i); sys.exit(1)
        elif p.returncode != 1:
            print("get failed", p.returncode, p.stderr); sys.exit(1)
    elif op < 0.95:
        p = run("--max-size", "400K", "gc")
        if p.returncode != 0:
            print("gc failed", p.returncode, p.stderr); sys.exit(1)
    else:
        p = run("verify")
        if p.returncode not in (0, 4):
            print("verify failed", p.returncode, p.stdout, p.stderr)
            sys.exit(1)
        for line in p.stdout.decode().splitlines():
            if line.startswith("checked "):
                continue
            # A blob another live process published a moment ago and is
            # about to count: verify indexes it early, nothing is lost.
            if line.startswith("unindexed blob"):
                print("RACE", line)
                continue
            print("verify found damage:", line, p.stderr); sys.exit(1)
    ops += 1
print("ops", ops)
'''


@pytest.fixture(scope="module")
def workload(mithril_bin, tmp_path_factory):
    """Run the 8 workers once; both tests below read what they saw."""
    tmp_path = tmp_path_factory.mktemp("concurrency")
    store = tmp_path / "store"
    files = tmp_path / "files"
    files.mkdir()
    for i in range(40):
        (files / f"f{i}").write_bytes(random.Random(i).randbytes(
            random.Random(i).choice([10, 3000, 40000, 90000])))
    subprocess.run([mithril_bin, "--dir", str(store), "stats"], check=True,
                   capture_output=True)
    procs = [subprocess.Popen(
        [sys.executable, "-c", WORKER, mithril_bin, str(store), str(files),
         str(seed), str(SECONDS)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for seed in range(WORKERS)]
    result = {"store": store, "ops": 0, "races": [], "failures": []}
    for p in procs:
        out, _ = p.communicate(timeout=SECONDS * 20 + 120)
        text = out.decode(errors="replace")
        if p.returncode != 0:
            result["failures"].append(text)
            continue
        result["ops"] += int(text.split()[-1])
        result["races"] += [ln for ln in text.splitlines()
                            if ln.startswith("RACE")]
    path = os.environ.get("MITHRIL_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": "concurrency", "workers": WORKERS,
                                "seconds": SECONDS, "ops": result["ops"],
                                "failures": len(result["failures"]),
                                "verify_races": len(result["races"])})
                    + "\n")
    print("concurrency", WORKERS, "workers", SECONDS, "s:", result["ops"],
          "operations,", len(result["races"]), "verify races")
    return result


def test_processes_share_one_store(mithril_bin, workload):
    assert workload["failures"] == []
    assert workload["ops"] > WORKERS
    store = workload["store"]

    # Consistent afterwards: verify is clean and the statistics agree with
    # what is listed and what is on disk.
    v = subprocess.run([mithril_bin, "--dir", str(store), "verify"],
                       capture_output=True)
    assert v.returncode == 0, v.stdout + v.stderr
    st = json.loads(subprocess.run(
        [mithril_bin, "--dir", str(store), "stats", "--json"],
        capture_output=True, check=True).stdout)
    ls = json.loads(subprocess.run(
        [mithril_bin, "--dir", str(store), "ls", "--json"],
        capture_output=True, check=True).stdout)
    assert st["entries"] == len(ls)
    blobs = [p for p in (store / "blobs").rglob("*") if p.is_file()]
    assert st["blobs"] == len(blobs)
    assert st["size_bytes"] == sum(p.stat().st_size for p in blobs)
    assert list((store / "tmp").iterdir()) == []


def test_verify_reports_nothing_while_others_write(workload):
    """verify run beside live puts must not report their work as a
    problem (it exits 4 then, which scripts read as damage)."""
    assert workload["races"] == []
