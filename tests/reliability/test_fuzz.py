"""Every fuzz target (tests/fuzz/fuzz_*.c) built with clang, libFuzzer, ASan
and UBSan by scripts/fuzz.sh, then run over its committed seed corpus for a
bounded time: MITHRIL_FUZZ_SECONDS each (default 5 in `make test`; `make
stress` and `make fuzz` run longer). `make test` fuzzes from a fixed seed
(MITHRIL_FUZZ_SEED, default 1), from an empty working corpus, and stops
each target after a fixed number of inputs (RUNS, about half of what 5 s
tries on the development machine), so CI tries exactly the inputs tried
here, or a prefix of them on a slower machine, never new ones: a machine's
speed cannot turn `make test` red. `make stress` and `make fuzz` take a
fresh seed and no input limit to search further. The committed corpus
includes every input that once crashed a target, so each becomes a
regression test. Skipped where clang is not installed."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
# Inputs per target in `make test` (ignored when MITHRIL_FUZZ_SEED is 0).
RUNS = {"archive": 1200, "cli": 100000, "cluster": 25000, "config": 10000,
        "key": 100000, "manifest": 400000, "redis": 600}
TARGETS = sorted(p.stem[len("fuzz_"):]
                 for p in (ROOT / "tests" / "fuzz").glob("fuzz_*.c"))


def test_every_parser_has_a_target_and_seeds():
    for name in ("key", "cli", "manifest", "archive", "config", "redis",
                 "cluster"):
        assert name in TARGETS
        seeds = list((ROOT / "tests" / "fuzz" / "corpus" / name).iterdir())
        assert seeds, f"no seed corpus for {name}"


def test_fuzz_targets_run_clean(tmp_path):
    if not shutil.which("clang"):
        pytest.skip("clang not installed (scripts/install-deps.sh)")
    env = dict(os.environ)
    env["FUZZ_SECONDS"] = os.environ.get("MITHRIL_FUZZ_SECONDS", "5")
    env["FUZZ_SEED"] = os.environ.get("MITHRIL_FUZZ_SEED", "1")
    if env["FUZZ_SEED"] != "0":
        env["FUZZ_CORPUS"] = str(tmp_path / "corpus")
        for name, n in RUNS.items():
            env[f"FUZZ_RUNS_{name}"] = str(n)
    env["FUZZ_BUILD"] = os.environ.get("MITHRIL_FUZZ_BUILD",
                                       str(ROOT / "build-fuzz"))
    env["TMPDIR"] = str(tmp_path)
    p = subprocess.run([str(ROOT / "scripts" / "fuzz.sh")], env=env,
                       capture_output=True, text=True, timeout=3600)
    out = p.stdout + p.stderr
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("fuzz ")
             and " runs " in ln]
    print("\n".join(lines))
    assert p.returncode == 0, out[-6000:]
    results = {ln.split()[1]: ln for ln in lines}
    assert sorted(results) == TARGETS, out[-3000:]
    assert sorted(RUNS) == TARGETS
    for name, ln in results.items():
        assert ln.endswith("result ok"), ln
        runs = re.search(r" runs (\d+) ", ln)
        assert runs and int(runs.group(1)) > 0, ln
    path = os.environ.get("MITHRIL_RESULTS")
    if path:
        import json
        with open(path, "a") as f:
            for name, ln in results.items():
                f.write(json.dumps({"test": "fuzz_" + name,
                                    "line": ln}) + "\n")
