#!/usr/bin/env python3
"""The mithril-cache benchmark suite: every figure beside its anchor.

Runs the benchmark programs built from bench/*.c, the torch benchmark and
the anchors they are judged against (b3sum, cat from the page cache,
redis-benchmark, the zstd command, torch's own warm cache), all in the same
run on the same machine, and writes three files:

  bench/results/latest.json  every figure, anchor, ratio, goal and the raw
                             samples; fields not measured are null and
                             listed under "missing" with the reason
  bench/results/latest.md    the same as tables a person reads
  bench/results/torch.png    the torch timings as a bar chart

Each figure is the median of several repeats (the machine is shared and
noisy); ratios are taken between medians measured in this run. The exit
status is 0 only when every section ran. docs/BENCH.md explains the method.

Usage: bench/run.py [--quick] [--build DIR] [--out DIR] [--repeats N]
                    [--only SECTION,...] [--keep]
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
GIB = 1 << 30

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import SECTIONS, ratio, write_chart, write_markdown  # noqa: E402

# The fields every latest.json carries (null when not measured).
CONTRACT = [
    "blake3_bytes_per_s", "b3sum_bytes_per_s", "get_bytes_per_s",
    "cat_bytes_per_s", "lookup_p99_us_1m", "open_ms_1m",
    "evict_10pct_ms_1m", "compression_ratio",
]
TORCH_FIELDS = ["eager_s", "cold_s", "torch_warm_s", "mithril_warm_s",
                "remote_warm_s", "hit_rate"]


# ------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------

def log(msg):
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {msg}", file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def tail(text, n=400):
    text = (text or "").strip()
    return text[-n:] if len(text) > n else text


def unit_of(key):
    """The unit of a figure, from its name's ending."""
    if key.endswith("bytes_per_s"):
        return "B/s"
    for end, unit in (("_us", "us"), ("_ms", "ms"), ("_s", "s")):
        if key.endswith(end) or (end + "_") in key:
            return unit
    if "ratio" in key:
        return "x"
    return ""


def last_line(text, n=300):
    """The last non-empty line of an error output (a traceback's last
    line names the exception), at most n characters."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][-n:] if lines else ""


class SectionError(Exception):
    """A section (or one of its parts) could not run; the text says why."""


def run_cmd(cmd, timeout, env=None, cwd=None, stdout=subprocess.PIPE):
    """Run cmd; return (CompletedProcess, wall seconds). Raise SectionError
    when it cannot start, times out or exits non-zero."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE,
                           timeout=timeout, env=env, cwd=cwd)
    except FileNotFoundError:
        raise SectionError(f"{cmd[0]} not found")
    except subprocess.TimeoutExpired:
        raise SectionError(f"{Path(cmd[0]).name} timed out after "
                           f"{timeout} s")
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        err = last_line(p.stderr.decode(errors="replace")) if p.stderr else ""
        name = Path(cmd[0]).name
        if name.startswith("python") and len(cmd) > 1:
            name = Path(cmd[1]).name
        raise SectionError(f"{name} exited {p.returncode}: {err}")
    return p, wall


def parse_output(text):
    """`key value` lines and/or JSON objects into (dict, list of objects).
    Numbers become floats; other values stay text."""
    values = {}
    objects = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{") or line.startswith("["):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            items = obj if isinstance(obj, list) else [obj]
            for o in items:
                if isinstance(o, dict):
                    objects.append(o)
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            continue
        key, val = parts[0].rstrip(":="), parts[1].strip()
        try:
            values[key] = float(val)
        except ValueError:
            values[key] = val
    if not values and len(objects) == 1 and "model" not in objects[0]:
        # A program that prints its figures as one JSON object.
        for k, v in objects[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                values[k] = float(v)
            elif isinstance(v, str):
                values[k] = v
        objects = []
    return values, objects


def run_repeated(cmd, repeats, budget_s, timeout, env=None):
    """Run a benchmark program up to `repeats` times (at least once; no new
    repeat once budget_s is spent). Returns ({key: median}, {key: samples},
    text values of the last run, repeats done)."""
    samples = {}
    texts = {}
    done = 0
    t0 = time.perf_counter()
    while done < repeats:
        p, _ = run_cmd(cmd, timeout, env=env)
        values, _objs = parse_output(p.stdout.decode(errors="replace"))
        if not values:
            raise SectionError(f"{Path(cmd[0]).name} printed no figures")
        for k, v in values.items():
            if isinstance(v, float):
                samples.setdefault(k, []).append(v)
            else:
                texts[k] = v
        done += 1
        if time.perf_counter() - t0 > budget_s:
            break
    medians = {k: median(v) for k, v in samples.items()}
    return medians, samples, texts, done


def time_repeated(cmd, repeats, timeout, env=None, warm=1):
    """Wall time of cmd (stdout discarded): `warm` unmeasured runs, then
    `repeats` measured ones. Returns the list of seconds."""
    for _ in range(warm):
        run_cmd(cmd, timeout, env=env, stdout=subprocess.DEVNULL)
    times = []
    for _ in range(repeats):
        _, wall = run_cmd(cmd, timeout, env=env, stdout=subprocess.DEVNULL)
        times.append(wall)
    return times


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_random_file(path, size):
    """A file of incompressible bytes (so no layer can cheat on it)."""
    chunk = 4 * MIB
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def warm_page_cache(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(8 * MIB):
                pass


def cmd_first_line(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    out = (p.stdout or p.stderr).decode(errors="replace").strip()
    return out.splitlines()[0] if out else None


# ------------------------------------------------------------------------
# A real redis-server on a free loopback port
# ------------------------------------------------------------------------

class Redis:
    def __init__(self, workdir, extra=()):
        self.workdir = Path(workdir)
        self.port = None
        self.proc = None
        self.extra = [str(a) for a in extra]

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        exe = shutil.which("redis-server")
        if not exe:
            raise SectionError("redis-server not installed "
                               "(scripts/install-deps.sh)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
             "--maxmemory", "8gb", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SectionError("redis-server did not start")

    def cli(self, *args, timeout=60):
        return subprocess.run(["redis-cli", "-p", str(self.port), *args],
                              capture_output=True, timeout=timeout)

    def flush(self):
        self.cli("FLUSHALL")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RedisCluster:
    """Three redis-server nodes formed into one Redis Cluster on loopback
    (all 16,384 slots spread over them, no replicas)."""

    def __init__(self, workdir, nodes=3):
        self.workdir = Path(workdir)
        self.nodes = [Redis(self.workdir / f"node{i}", [
            "--cluster-enabled", "yes", "--cluster-port", free_port(),
            "--cluster-config-file", self.workdir / f"node{i}.conf"])
            for i in range(nodes)]

    @property
    def url(self):
        return self.nodes[0].url

    def start(self):
        try:
            for n in self.nodes:
                n.start()
            p = subprocess.run(
                ["redis-cli", "--cluster", "create",
                 *[f"127.0.0.1:{n.port}" for n in self.nodes],
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, timeout=60)
            if p.returncode != 0:
                raise SectionError("redis-cli --cluster create failed: " +
                                   (p.stdout + p.stderr).decode(
                                       errors="replace")[-300:])
            deadline = time.time() + 30
            while not all(b"cluster_state:ok" in n.cli("CLUSTER", "INFO")
                          .stdout for n in self.nodes):
                if time.time() > deadline:
                    raise SectionError("the Redis Cluster did not form")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def flush(self):
        for n in self.nodes:
            n.flush()

    def stop(self):
        for n in self.nodes:
            n.stop()


# ------------------------------------------------------------------------
# The record of the machine, the versions and the commit
# ------------------------------------------------------------------------

SIMD_FLAGS = ["sse4_1", "sse4_2", "avx", "avx2", "avx512f", "avx512vl",
              "sha_ni", "asimd", "sha2", "sha3"]


def cmake_cache(build):
    out = {}
    try:
        text = (Path(build) / "CMakeCache.txt").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_]+):[A-Z]+=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def machine_record():
    cpu = {"model": platform.processor() or None, "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            k, _, v = line.partition(":")
            k = k.strip()
            if k in ("model name", "Model") and cpu["model"] in (None, "",
                                                                  "x86_64"):
                cpu["model"] = v.strip()
            if k in ("flags", "Features") and not cpu["flags"]:
                cpu["flags"] = v.split()
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu_model": cpu["model"],
        "cpu_simd_flags": [f for f in SIMD_FLAGS if f in cpu["flags"]],
        "cpu_flags": cpu["flags"],
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_bytes": mem,
        "kernel": platform.release(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "loadavg_start": list(os.getloadavg()),
    }


def versions_record(build):
    cache = cmake_cache(build)
    cc = cache.get("CMAKE_C_COMPILER")
    btype = cache.get("CMAKE_BUILD_TYPE") or None
    flags = " ".join(x for x in [
        cache.get("CMAKE_C_FLAGS", ""),
        cache.get(f"CMAKE_C_FLAGS_{(btype or '').upper()}", "")] if x)
    torch_v = None
    try:
        p = subprocess.run([sys.executable, "-c",
                            "import torch; print(torch.__version__)"],
                           capture_output=True, timeout=120)
        if p.returncode == 0:
            torch_v = p.stdout.decode().strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        import matplotlib
        mpl = matplotlib.__version__
    except ImportError:
        mpl = None
    return {
        "python": platform.python_version(),
        "torch": torch_v,
        "matplotlib": mpl,
        "compiler": cmd_first_line([cc, "--version"]) if cc else None,
        "cmake_build_type": btype,
        "c_flags": flags.strip() or None,
        "b3sum": cmd_first_line(["b3sum", "--version"]),
        "redis_server": cmd_first_line(["redis-server", "--version"]),
        "zstd": cmd_first_line(["zstd", "--version"]),
        "mithril": cmd_first_line([str(Path(build) / "mithril"),
                                   "--version"]),
        "libzstd": cmd_first_line(["pkg-config", "--modversion", "libzstd"]),
        "lmdb": cmd_first_line(["pkg-config", "--modversion", "lmdb"]),
        "hiredis": cmd_first_line(["pkg-config", "--modversion", "hiredis"]),
        "cmake_c_compiler": cc,
    }


def commit_record():
    def git(*args):
        try:
            p = subprocess.run(["git", "-C", str(ROOT), *args],
                               capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout.decode().strip() if p.returncode == 0 else None

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"),
            "commit_subject": git("log", "-1", "--format=%s"),
            "dirty": bool(dirty) if dirty is not None else None}


# ------------------------------------------------------------------------
# The suite
# ------------------------------------------------------------------------

class Suite:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.repeats = args.repeats or (3 if self.quick else 5)
        self.build = Path(args.build).resolve()
        self.mithril = self.build / "mithril"
        self.tmp = Path(tempfile.mkdtemp(prefix="mithril-bench-",
                                         dir=args.tmp))
        self.fields = {k: None for k in CONTRACT}
        self.fields["torch"] = []
        self.missing = {}
        self.figures = []   # rows of the report: value, anchor, ratio
        self.goals = []
        self.sections = {}  # name -> {status, reason, seconds, ...}
        self.raw = {}       # name -> samples and commands
        self.notes = []
        self.redis = None
        self.inductor_dirs = []  # real TORCHINDUCTOR_CACHE_DIRs
        self.by_design = set()   # missing on purpose (quick mode)

    # -- recording ------------------------------------------------------

    def set(self, field, value, reason=None):
        """Record a field; None needs a reason and lands in `missing`."""
        if value is None:
            self.fields[field] = None
            self.missing[field] = reason or "not measured"
        else:
            self.fields[field] = float(value)
            self.missing.pop(field, None)

    def miss(self, fields, reason):
        for f in fields:
            if self.fields.get(f) is None:
                self.set(f, None, reason)

    def figure(self, section, name, field, unit, anchor_name=None,
               anchor_field=None, higher_is_better=True, repeats=None,
               note=None):
        value = self.fields.get(field)
        anchor = self.fields.get(anchor_field) if anchor_field else None
        self.figures.append({
            "section": section, "name": name, "field": field,
            "value": value, "unit": unit,
            "anchor_name": anchor_name, "anchor_field": anchor_field,
            "anchor": anchor, "ratio": ratio(value, anchor),
            "higher_is_better": higher_is_better, "repeats": repeats,
            "note": note,
        })

    def goal(self, name, value, target, ok, shown=None, field=None):
        """A goal judged on value; field names the figure it belongs to
        (shown beside it in the report)."""
        if value is None:
            status = "not run"
        else:
            status = "pass" if ok(value) else "miss"
        self.goals.append({"goal": name, "value": value, "target": target,
                           "shown": shown, "status": status,
                           "field": field})

    def program(self, name):
        path = self.build / name
        if not os.access(path, os.X_OK):
            raise SectionError(f"{path} not built "
                               f"(bench/{name}.c missing or not compiled)")
        return str(path)

    def redis_server(self):
        if self.redis is None:
            self.redis = Redis(self.tmp / "redis").start()
            log(f"redis-server on port {self.redis.port}")
        return self.redis

    def env(self, **extra):
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("MITHRIL_") and k != "MITHRIL_BIN":
                del env[k]
        for k in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR",
                  "TORCH_COMPILE_JOB_ID", "TORCH_CACHING_PRECOMPILE",
                  "TORCHINDUCTOR_FORCE_DISABLE_CACHES"):
            env.pop(k, None)
        env["MITHRIL_BIN"] = str(self.mithril)
        pp = [str(ROOT / "python"), str(self.build / "python")]
        if env.get("PYTHONPATH"):
            pp.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(pp)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    # -- running --------------------------------------------------------

    def run(self):
        wanted = SECTIONS
        if self.args.only:
            wanted = [s for s in self.args.only.split(",") if s]
        t_all = time.perf_counter()
        try:
            for name in SECTIONS:
                if name not in wanted:
                    self.sections[name] = {"status": "skipped",
                                           "reason": "not selected (--only)"}
                    continue
                fn = getattr(self, "section_" + name)
                log(f"section {name}")
                t0 = time.perf_counter()
                try:
                    fn()
                    status, reason = "ran", None
                except SectionError as e:
                    status, reason = "not run", str(e)
                    log(f"section {name} not run: {e}")
                except Exception as e:  # a bug in this script: say it
                    status, reason = "not run", f"{type(e).__name__}: {e}"
                    log(f"section {name} failed: {status} {reason}")
                if reason and self._measured_some(name):
                    status = "partial"
                sec = self.sections.setdefault(name, {})
                sec["status"] = status
                if reason:
                    sec["reason"] = reason
                sec["seconds"] = round(time.perf_counter() - t0, 2)
        finally:
            if self.redis:
                self.redis.stop()
            if not self.args.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)
        self.duration = time.perf_counter() - t_all
        self.add_missing_reasons()

    def _measured_some(self, name):
        if name == "torch":
            return any(t.get(k) is not None for t in self.fields["torch"]
                       for k in TORCH_FIELDS)
        return any(f["value"] is not None for f in self.figures
                   if f["section"] == name)

    def add_missing_reasons(self):
        """Every null contract field is listed, with its section's reason."""
        owner = {
            "blake3_bytes_per_s": "blake3", "b3sum_bytes_per_s": "blake3",
            "get_bytes_per_s": "store", "cat_bytes_per_s": "store",
            "lookup_p99_us_1m": "index", "open_ms_1m": "index",
            "evict_10pct_ms_1m": "index", "compression_ratio": "compression",
        }
        for field in CONTRACT:
            if self.fields.get(field) is None and field not in self.missing:
                sec = self.sections.get(owner[field], {})
                self.missing[field] = (sec.get("reason")
                                       or f"section {owner[field]} "
                                          f"{sec.get('status', 'not run')}")
        if not self.fields["torch"] and "torch" not in self.missing:
            sec = self.sections.get("torch", {})
            self.missing["torch"] = sec.get("reason") or "no torch results"

    # -- BLAKE3 against b3sum -------------------------------------------

    def interleaved(self, steps, reps, budget_s):
        """Run each step once per round, round after round, so a figure and
        its anchor see the same load on a shared machine. steps: name ->
        function returning a sample (or raising SectionError: that step
        stops, the others go on). No new round once budget_s is spent.
        Returns ({name: [samples]}, {name: error text}, rounds)."""
        results = {n: [] for n in steps}
        errors = {}
        t0 = time.perf_counter()
        rounds = 0
        while rounds < reps and len(errors) < len(steps):
            for name, fn in steps.items():
                if name in errors:
                    continue
                try:
                    results[name].append(fn())
                except SectionError as e:
                    errors[name] = str(e)
            rounds += 1
            if time.perf_counter() - t0 > budget_s:
                break
        return results, errors, rounds

    def program_once(self, cmd, key, timeout=1800):
        """One run of a benchmark program: its figures (key required)."""
        p, _ = run_cmd(cmd, timeout)
        values, _objs = parse_output(p.stdout.decode(errors="replace"))
        if values.get(key) is None:
            raise SectionError(f"{Path(cmd[0]).name} printed no {key}")
        return values

    def section_blake3(self):
        size = 128 * MIB if self.quick else GIB
        path = self.tmp / "blake3.bin"
        log(f"writing {size // MIB} MiB of random bytes")
        write_random_file(path, size)
        warm_page_cache([path])
        empty = self.tmp / "empty.bin"
        empty.touch()
        reps = self.repeats
        raw = self.raw.setdefault("blake3", {"file_bytes": size})
        fields = ["blake3_bytes_per_s", "b3sum_bytes_per_s"]

        # The anchor: b3sum on one thread, its start-up cost subtracted;
        # rounds alternate b3sum and bench_blake3 on the same file.
        b3 = ["b3sum", "--num-threads", "1"]
        steps = {}
        try:
            start = median(time_repeated(b3 + [str(empty)], reps, 60))
            steps["b3sum"] = lambda: time_repeated(b3 + [str(path)], 1, 600,
                                                   warm=0)[0]
        except SectionError as e:
            self.set("b3sum_bytes_per_s", None, f"b3sum: {e}")
        try:
            prog = self.program("bench_blake3")
            steps["blake3"] = lambda: self.program_once(
                [prog, str(path), "3"], "blake3_bytes_per_s", 900)
        except SectionError as e:
            self.set("blake3_bytes_per_s", None, str(e))
        res, errs, rounds = self.interleaved(steps, reps,
                                             120 if self.quick else 600)
        if "b3sum" in steps:
            if res["b3sum"]:
                net = [max(t - start, 1e-9) for t in res["b3sum"]]
                self.set("b3sum_bytes_per_s", size / median(net))
            else:
                self.set("b3sum_bytes_per_s", None, f"b3sum: {errs['b3sum']}")
            raw.update({"b3sum_seconds": res["b3sum"],
                        "b3sum_startup_s": start,
                        "b3sum_command": " ".join(b3 + ["FILE"])})
        if "blake3" in steps:
            runs = res["blake3"]
            self.set("blake3_bytes_per_s",
                     median([r["blake3_bytes_per_s"] for r in runs]),
                     errs.get("blake3"))
            if runs:
                self.fields["blake3_impl"] = runs[-1].get("blake3_impl")
            raw["samples"] = [r.get("blake3_bytes_per_s") for r in runs]
        raw["rounds"] = rounds
        impl = self.fields.get("blake3_impl")
        self.figure("blake3", "BLAKE3 one thread"
                    + (f" ({impl})" if impl else ""),
                    "blake3_bytes_per_s", "B/s",
                    "b3sum --num-threads 1", "b3sum_bytes_per_s",
                    repeats=rounds,
                    note=f"same {size // MIB} MiB file, page cache warm")
        r = ratio(self.fields["blake3_bytes_per_s"],
                  self.fields["b3sum_bytes_per_s"])
        self.goal("BLAKE3 >= 0.9x b3sum (one thread)", r, ">= 0.90x",
                  lambda v: v >= 0.9, field="blake3_bytes_per_s")
        self.section_done(fields)

    def section_done(self, fields, section=None):
        """A section ran only if each of its fields was measured."""
        lost = [f for f in fields if self.fields.get(f) is None]
        if not lost:
            return
        by_reason = {}
        for f in lost:
            by_reason.setdefault(self.missing.get(f, "not measured"),
                                 []).append(f)
        raise SectionError("; ".join(
            f"{', '.join(fs)}: {why}" for why, fs in by_reason.items()))

    # -- store put/get against cat --------------------------------------

    def section_store(self):
        raw = self.raw.setdefault("store", {})
        keys = ["put_bytes_per_s", "get_bytes_per_s",
                "get_noverify_bytes_per_s", "exists_p50_us", "exists_p99_us",
                "get_p50_us", "get_p99_us"]
        nfiles = 2 if self.quick else 4  # files of 64 MiB each
        sdir = self.tmp / "store"
        last = {"run": None, "files": None}
        steps = {}

        def store_once():
            v = self.program_once([prog, str(sdir), str(nfiles)],
                                  "put_bytes_per_s")
            last["run"] = v
            return v

        try:
            prog = self.program("bench_store")
            steps["bench_store"] = store_once
        except SectionError as e:
            self.miss(keys, str(e))

        # The floor: cat of the same files (bench_store's data folder,
        # made by its first run) from the page cache.
        def cat_once():
            if last["files"] is None:
                files = self._store_files(last["run"] or {})
                files = files or self._anchor_files()
                warm_page_cache(files)
                last["files"] = files
            _, wall = run_cmd(["cat", *map(str, last["files"])], 600,
                              stdout=subprocess.DEVNULL)
            return wall

        steps["cat"] = cat_once
        res, errs, rounds = self.interleaved(steps, self.repeats,
                                             100 if self.quick else 900)
        runs = res.get("bench_store", [])
        if "bench_store" in steps:
            for k in keys:
                self.set(k, median([r.get(k) for r in runs]),
                         errs.get("bench_store")
                         or f"bench_store printed no {k}")
            skip = set(keys) | {"file_bytes", "files"}
            for k in sorted({k for r in runs for k, v in r.items()
                             if isinstance(v, float) and k not in skip}):
                self.fields["store_" + k] = median([r.get(k) for r in runs])
            raw["samples"] = runs
        if res["cat"] and last["files"]:
            total = sum(os.path.getsize(f) for f in last["files"])
            self.set("cat_bytes_per_s", total / median(res["cat"]))
            raw.update({"cat_seconds": res["cat"], "cat_bytes": total,
                        "cat_files": len(last["files"])})
        else:
            self.set("cat_bytes_per_s", None,
                     f"cat: {errs.get('cat', 'not run')}")
        raw.update({"rounds": rounds, "files_arg": nfiles})

        note = "cat FILES > /dev/null, page cache warm"
        self.figure("store", "put (hash, zstd, fsync)", "put_bytes_per_s",
                    "B/s", "cat (page cache)", "cat_bytes_per_s",
                    repeats=rounds, note=note)
        self.figure("store", "get, verified", "get_bytes_per_s", "B/s",
                    "cat (page cache)", "cat_bytes_per_s", repeats=rounds,
                    note=note)
        self.figure("store", "get, not verified",
                    "get_noverify_bytes_per_s", "B/s", "cat (page cache)",
                    "cat_bytes_per_s", repeats=rounds, note=note)
        for k, name in [("exists_p50_us", "exists p50 (4 KiB blobs)"),
                        ("exists_p99_us", "exists p99"),
                        ("get_p50_us", "get p50 (4 KiB, verified)"),
                        ("get_p99_us", "get p99")]:
            self.figure("store", name, k, "us", higher_is_better=False,
                        repeats=rounds)
        for k in sorted(f for f in self.fields if f.startswith("store_")):
            unit = unit_of(k)
            label = re.sub(r"_(us|ms|s|bytes_per_s)$", "", k[len("store_"):])
            self.figure("store", label.replace("_", " "), k,
                        unit, higher_is_better=unit in ("B/s", "x"),
                        repeats=rounds)
        self.section_done(keys + ["cat_bytes_per_s"])

    def _store_files(self, texts):
        """The files bench_store read, when it says where (data_dir)."""
        d = texts.get("data_dir") or texts.get("source_dir")
        if d and Path(d).is_dir():
            return sorted(p for p in Path(d).rglob("*") if p.is_file())
        return []

    def _anchor_files(self):
        """Files like those bench_store stores: 4 MiB of random bytes each."""
        d = self.tmp / "cat-files"
        n = 16 if self.quick else 64
        d.mkdir(exist_ok=True)
        files = []
        for i in range(n):
            f = d / f"f{i:03d}"
            if not f.exists():
                write_random_file(f, 4 * MIB)
            files.append(f)
        return files

    # -- index lookups, open, eviction ----------------------------------

    def section_index(self):
        raw = self.raw.setdefault("index", {})
        largest = 100000 if self.quick else 1000000
        keys_1m = ["lookup_p50_us_1m", "lookup_p99_us_1m", "open_ms_1m",
                   "evict_10pct_ms_1m"]
        try:
            prog = self.program("bench_index")
            idir = self.tmp / "index"
            reps = min(self.repeats, 3)
            budget = 120 if self.quick else 900
            med, samples, texts, done = run_repeated(
                [prog, str(idir), str(largest)], reps, budget, 3600)
            shutil.rmtree(idir, ignore_errors=True)
        except SectionError as e:
            self.miss(keys_1m + ["lookup_p99_us_1k", "lookup_p99_us_100k"],
                      str(e))
            self._index_figures(largest, None)
            raise
        for k, v in med.items():
            self.fields[k] = v
        raw.update({"samples": samples, "repeats": done,
                    "largest_entries": largest})
        if self.quick:
            self.notes.append("quick mode: the index was built up to "
                              "100 thousand entries, not 1 million; the "
                              "1M figures are null and the 100k figures "
                              "stand in for them")
            for k in keys_1m:
                if self.fields.get(k) is None:
                    self.set(k, None, "quick mode: largest index has "
                             "100k entries (run make bench for 1M)")
                    self.by_design.add(k)
        else:
            for k in keys_1m:
                self.set(k, med.get(k), None if med.get(k) is not None
                         else f"bench_index printed no {k}")
        self._index_figures(largest, done)
        self.section_done([] if self.quick else keys_1m)

    def _index_figures(self, largest, done):
        for n in ["1k", "100k", "1m"]:
            for p in ["p50", "p99"]:
                self.figure("index", f"lookup {p}, {n} entries",
                            f"lookup_{p}_us_{n}", "us",
                            higher_is_better=False, repeats=done)
            if f"miss_p50_us_{n}" in self.fields:
                self.figure("index", f"lookup of an absent key p50, {n}",
                            f"miss_p50_us_{n}", "us",
                            higher_is_better=False, repeats=done)
        for n in ["100k", "1m"]:
            for k, name in [("open_ms", "open"),
                            ("evict_10pct_ms", "evict 10 %")]:
                if f"{k}_{n}" in self.fields or n == "1m":
                    self.figure("index", f"{name}, {n} entries",
                                f"{k}_{n}", "ms", higher_is_better=False,
                                repeats=done)
        field = "lookup_p99_us_1m"
        shown = None
        if self.fields.get(field) is None and self.quick:
            field, shown = "lookup_p99_us_100k", "100k entries (quick)"
        self.goal("lookup p99 at 1M entries < 10 ms",
                  self.fields.get(field), "< 10000 us",
                  lambda v: v < 10000, shown=shown, field=field)

    # -- compression on real Inductor artifacts -------------------------

    def section_compression(self):
        raw = self.raw.setdefault("compression", {})
        fields = ["compression_ratio"]
        works = self.inductor_dirs
        if works:
            source = "the torch section's cold compiles"
        else:
            works = self._compile_models_into(self.tmp / "inductor-c")
            source = "compiling the demo models"
        files = sorted(p for w in works for p in Path(w).rglob("*")
                       if p.is_file() and not p.name.endswith(".lock"))
        logical = sum(p.stat().st_size for p in files)
        if not files:
            raise SectionError("no files in the Inductor folders after "
                               "compiling")
        raw.update({"files": len(files), "logical_bytes": logical,
                    "folders": [str(w) for w in works]})
        warm_page_cache(files)

        # Through a mithril store: capture, then read the sizes. Each
        # repeat captures into a fresh store.
        try:
            walls = []
            st = {}
            for i in range(self.repeats):
                sdir = self.tmp / f"compression-store{i}"
                t0 = time.perf_counter()
                for w in works:
                    self._capture(sdir, w)
                walls.append(time.perf_counter() - t0)
                st = self._stats(sdir)
                shutil.rmtree(sdir, ignore_errors=True)
            lb, sb = st.get("logical_bytes"), st.get("size_bytes")
            if not lb or not sb:
                raise SectionError(f"mithril stats --json gave no sizes: "
                                   f"{tail(json.dumps(st), 200)}")
            self.set("compression_ratio", lb / sb)
            self.set("capture_bytes_per_s", lb / median(walls))
            self.fields["compression_logical_bytes"] = float(lb)
            self.fields["compression_stored_bytes"] = float(sb)
            raw.update({"stats": st, "capture_seconds": walls})
        except SectionError as e:
            self.miss(["compression_ratio", "capture_bytes_per_s"], str(e))

        # The anchor: the zstd command, level 3, one frame per file.
        try:
            cmd = ["zstd", "-3", "-q", "-c", *map(str, files)]
            p, _ = run_cmd(cmd, 600)
            out = len(p.stdout)
            times = time_repeated(cmd, self.repeats, 600)
            self.set("zstd_cli_ratio", logical / out)
            self.set("zstd_cli_bytes_per_s", logical / median(times))
            raw.update({"zstd_seconds": times, "zstd_bytes": out})
        except SectionError as e:
            self.miss(["zstd_cli_ratio", "zstd_cli_bytes_per_s"],
                      f"zstd: {e}")
        # zstd's own speed at level 3 on these bytes, in memory (zstd -b3:
        # the codec the store uses, without files or processes around it).
        try:
            cmd = ["zstd", "-b3", "-i1" if self.quick else "-i3",
                   *map(str, files)]
            p, _ = run_cmd(cmd, 600)
            text = (p.stdout + p.stderr).decode(errors="replace")
            m = re.findall(r"\(x?([0-9.]+)\),?\s+([0-9.]+)\s*MB/s,?\s+"
                           r"([0-9.]+)\s*MB/s", text.replace("\r", "\n"))
            if not m:
                raise SectionError("zstd -b3 printed no speeds")
            r, c, d = (float(x) for x in m[-1])
            self.set("zstd_compress_bytes_per_s", c * 1e6)
            self.set("zstd_decompress_bytes_per_s", d * 1e6)
            raw["zstd_bench"] = {"ratio": r, "command": " ".join(cmd[:3])}
        except SectionError as e:
            self.miss(["zstd_compress_bytes_per_s",
                       "zstd_decompress_bytes_per_s"], f"zstd -b3: {e}")
        note = (f"{len(files)} files, {logical / MIB:.1f} MiB from "
                f"{source}")
        self.figure("compression", "compression ratio (logical/stored)",
                    "compression_ratio", "x", "zstd -3 (per file)",
                    "zstd_cli_ratio", repeats=self.repeats, note=note)
        self.figure("compression", "zstd -3 compression speed (in memory)",
                    "zstd_compress_bytes_per_s", "B/s",
                    note="zstd -b3 on the same files (the store's codec)")
        self.figure("compression", "zstd decompression speed (in memory)",
                    "zstd_decompress_bytes_per_s", "B/s",
                    note="zstd -b3 on the same files")
        self.figure("compression", "mithril capture command, whole run",
                    "capture_bytes_per_s", "B/s", "zstd -3 -c FILES",
                    "zstd_cli_bytes_per_s", repeats=self.repeats,
                    note="both timed as whole commands; mithril's also "
                         "hashes, fsyncs every blob and records entries")
        self.section_done(fields)

    def _toolchain(self):
        """The toolchain text, computed once (so each capture does not
        start a Python to compute it); None if the package cannot say."""
        if not hasattr(self, "_tc"):
            self._tc = None
            try:
                p = subprocess.run(
                    [sys.executable, "-c", "import mithril_cache as m; "
                     "print(m.toolchain_text())"], capture_output=True,
                    timeout=300, env=self.env())
                if p.returncode == 0 and p.stdout.strip():
                    self._tc = p.stdout.decode().strip()
            except (OSError, subprocess.TimeoutExpired):
                pass
        return self._tc

    def _capture(self, sdir, work):
        env = self.env()
        files = sorted(p for p in Path(work).rglob("*") if p.is_file())
        tc = self._toolchain()
        try:
            run_cmd([str(self.mithril), "--dir", str(sdir), "capture",
                     "--work-dir", str(work),
                     *(["--toolchain", tc] if tc else [])], 600, env=env)
            return
        except SectionError as e:
            first = str(e)
        # Without capture: put each file as a blob.
        try:
            for f in files:
                run_cmd([str(self.mithril), "--dir", str(sdir), "put",
                         str(f)], 120, env=env)
        except SectionError as e:
            raise SectionError(f"mithril capture: {first}; "
                               f"mithril put: {e}")
        self.notes.append("compression: files stored with `mithril put` "
                          "one by one (capture failed: " + tail(first, 120)
                          + ")")

    def _stats(self, sdir):
        p, _ = run_cmd([str(self.mithril), "--dir", str(sdir), "stats",
                        "--json"], 120, env=self.env())
        try:
            st = json.loads(p.stdout.decode())
        except ValueError:
            raise SectionError("mithril stats --json printed no JSON")
        # Accept a flat object or one with the sizes nested.
        flat = {}
        stack = [st]
        while stack:
            o = stack.pop()
            for k, v in o.items():
                if isinstance(v, dict):
                    stack.append(v)
                elif k not in flat:
                    flat[k] = v
        return flat

    def _compile_models_into(self, base):
        """Compile the demo models (quick: the first) with Inductor, each
        into a fresh TORCHINDUCTOR_CACHE_DIR; return those folders."""
        works = []
        for name in self._model_names():
            work = Path(base) / name
            work.mkdir(parents=True, exist_ok=True)
            log(f"compiling {name} into {work}")
            self._child("compile", name,
                        self.env(TORCHINDUCTOR_CACHE_DIR=work / "inductor",
                                 TRITON_CACHE_DIR=work / "triton"))
            works.append(work)
        return works

    # -- Redis restore against redis-benchmark --------------------------

    def section_remote(self):
        raw = self.raw.setdefault("remote", {})
        redis = self.redis_server()
        size = 4 * MIB
        n = 50 if self.quick else 100
        mb = 256 if self.quick else 1024
        fields = ["remote_restore_bytes_per_s", "redis_benchmark_bytes_per_s",
                  "cluster_restore_bytes_per_s"]
        rdir = self.tmp / "remote"
        cluster = None

        # The anchor: GET of a 4 MiB value, with 1 and with 50 clients.
        # The key must hold the value (GET of an absent key measures
        # nothing), so each round SETs it first.
        def redis_get(clients):
            def run():
                run_cmd(["redis-benchmark", "-p", str(redis.port), "-t",
                         "set", "-d", str(size), "-n", "1", "-c", "1",
                         "-q"], 120)
                p, _ = run_cmd(["redis-benchmark", "-p", str(redis.port),
                                "-t", "get", "-d", str(size), "-n", str(n),
                                "-c", str(clients), "-q"], 600)
                m = re.findall(r"GET: ([0-9.]+) requests per second",
                               p.stdout.decode(errors="replace"))
                if not m:
                    raise SectionError("redis-benchmark printed no GET "
                                       "figure")
                return float(m[-1])
            return run

        # Each round's stores stay until the section ends: on ext4 without
        # a journal (this machine's disk), inodes freed in the last 60 to
        # 360 s are skipped one by one at every new inode, so deleting the
        # last round's 2 GiB of stores just before a pull cost it ~13 % of
        # its CPU in inode scans, which a fresh node does not pay
        # (docs/BENCH.md). Redis is emptied between rounds.
        # The same restore from a three-node Redis Cluster on this machine
        # (its nodes share the cores with the pull): what routing each key
        # to its node costs against one server, not what more machines
        # would add.
        def restore(server):
            def run():
                server.flush()
                try:
                    return self.program_once(
                        [prog, str(rdir), server.url, str(mb)],
                        "remote_restore_bytes_per_s", 900)
                finally:
                    server.flush()
            return run

        shutil.rmtree(rdir, ignore_errors=True)
        # The earlier sections' deletes (bench_store alone frees ~2,300
        # inodes a run): flushed, then left to age past the allocator's
        # 60 s window, so that the first pulls do not step over them
        # (measured: 1.10 GiB/s in a full run without this, 1.36 alone).
        if not self.quick:
            os.sync()
            log("remote: 60 s for freed inodes to age (docs/BENCH.md)")
            time.sleep(60)

        steps = {"redis_c1": redis_get(1), "redis_c50": redis_get(50)}
        try:
            prog = self.program("bench_remote")
            steps["bench_remote"] = restore(redis)
        except SectionError as e:
            self.set("remote_restore_bytes_per_s", None, str(e))
        if "bench_remote" in steps:
            try:
                cluster = RedisCluster(self.tmp / "redis-cluster").start()
                log("redis cluster on ports " +
                    ", ".join(str(n.port) for n in cluster.nodes))
                steps["bench_cluster"] = restore(cluster)
            except SectionError as e:
                self.set("cluster_restore_bytes_per_s", None, str(e))
        try:
            res, errs, rounds = self.interleaved(steps, self.repeats,
                                                 150 if self.quick else 900)
        finally:
            if cluster:
                cluster.stop()
            shutil.rmtree(rdir, ignore_errors=True)
        best = None
        for c in (1, 50):
            rps = res[f"redis_c{c}"]
            raw[f"redis_benchmark_rps_c{c}"] = rps
            if rps:
                bps = median(rps) * size
                self.fields[f"redis_benchmark_bytes_per_s_c{c}"] = bps
                best = bps if best is None else max(best, bps)
        self.set("redis_benchmark_bytes_per_s", best,
                 "redis-benchmark: " + (errs.get("redis_c1")
                                        or errs.get("redis_c50", "")))
        raw["redis_benchmark_command"] = (
            f"redis-benchmark -p P -t get -d {size} -n {n} -c C -q "
            f"(C = 1 and 50; the faster is the anchor)")
        if "bench_remote" in steps:
            runs = res["bench_remote"]
            keys = sorted({k for r in runs for k, v in r.items()
                           if isinstance(v, float)})
            for k in keys:
                self.set(k, median([r.get(k) for r in runs]))
            disk = self.fields.get("disk_write_bytes_per_s")
            if disk is not None and disk <= 0:
                self.set("disk_write_bytes_per_s", None,
                         "O_DIRECT refused or a write failed")
            if not runs:
                self.set("remote_restore_bytes_per_s", None,
                         errs.get("bench_remote"))
            raw.update({"samples": runs, "megabytes": mb})
        if "bench_cluster" in steps:
            runs = res["bench_cluster"]
            raw["cluster_samples"] = runs
            for k, f in (("remote_restore_bytes_per_s",
                          "cluster_restore_bytes_per_s"),
                         ("remote_push_bytes_per_s",
                          "cluster_push_bytes_per_s")):
                v = [r[k] for r in runs if r.get(k) is not None]
                self.set(f, median(v) if v else None,
                         errs.get("bench_cluster", "not printed"))
        raw["rounds"] = rounds
        self.figure("remote", "restore from Redis into an empty store",
                    "remote_restore_bytes_per_s", "B/s",
                    "redis-benchmark GET 4 MiB", "redis_benchmark_bytes_per_s",
                    repeats=rounds,
                    note="4 MiB blobs; anchor: the faster of 1 and 50 "
                         "clients")
        if self.fields.get("disk_write_bytes_per_s"):
            # What the disk itself allows a restore: the gap left to close.
            self.figure("remote", "restore against the disk's own writes",
                        "remote_restore_bytes_per_s", "B/s",
                        "same files, 8 writers, O_DIRECT, fsync each",
                        "disk_write_bytes_per_s", repeats=rounds,
                        note="no network, no hashing, no index: a ceiling")
            # Any durable restore is bounded by that ceiling: against the
            # anchor, it says whether the goal can be met on this machine.
            self.figure("remote", "the disk's own writes against "
                        "redis-benchmark", "disk_write_bytes_per_s", "B/s",
                        "redis-benchmark GET 4 MiB",
                        "redis_benchmark_bytes_per_s", repeats=rounds,
                        note="below 0.50x, no store that makes its writes "
                             "durable can reach the goal here")
        if "remote_push_bytes_per_s" in self.fields:
            self.figure("remote", "push to Redis", "remote_push_bytes_per_s",
                        "B/s", repeats=rounds)
        if "cluster_restore_bytes_per_s" in self.fields:
            self.figure("remote", "restore from a 3-node Redis Cluster",
                        "cluster_restore_bytes_per_s", "B/s",
                        "the same restore from one redis-server",
                        "remote_restore_bytes_per_s", repeats=rounds,
                        note="all nodes on this machine's cores")
        if self.fields.get("cluster_push_bytes_per_s"):
            self.figure("remote", "push to a 3-node Redis Cluster",
                        "cluster_push_bytes_per_s", "B/s",
                        "the same push to one redis-server",
                        "remote_push_bytes_per_s", repeats=rounds)
        r = ratio(self.fields.get("remote_restore_bytes_per_s"),
                  self.fields.get("redis_benchmark_bytes_per_s"))
        self.goal("remote restore >= 0.5x redis-benchmark", r, ">= 0.50x",
                  lambda v: v >= 0.5, field="remote_restore_bytes_per_s")
        self.section_done(fields)

    def _model_names(self):
        p = subprocess.run([sys.executable, str(Path(__file__).resolve()),
                            "--child", "list"], capture_output=True,
                           timeout=300, env=self.env())
        names = p.stdout.decode().split()
        if p.returncode != 0 or not names:
            raise SectionError("no demo models: " + tail(
                p.stderr.decode(errors="replace"), 200))
        return names[:1] if self.quick else names

    def section_torch(self):
        bench = ROOT / "bench" / "torch_bench.py"
        if bench.exists() and (ROOT / "demo" / "demo.py").exists():
            self._torch_via_bench(bench)
            return
        self.notes.append("bench/torch_bench.py or demo/demo.py absent: "
                          "the torch figures come from run.py's own "
                          "measurement (mithril_cache.enable(), no backend)")
        self._torch_own()

    def _torch_via_bench(self, bench):
        """bench/torch_bench.py measures eager, cold, torch warm, mithril
        warm and the hit rate per model (one JSON line each); the remote
        warm start is added here with the same worker (demo/demo.py)."""
        cmd = [sys.executable, str(bench), "--repeats",
               str(min(self.repeats, 3))]
        if self.quick:
            # The first model only, no Dynamo-level cache, but still
            # several repeats: one sample of a compile is noise.
            cmd += ["--models", self._model_names()[0], "--no-dynamo"]
        log("torch: " + " ".join(Path(c).name for c in cmd))
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=7200,
                               env=self.env(PYTHONWARNINGS="ignore"))
        except subprocess.TimeoutExpired:
            raise SectionError("torch_bench.py timed out after 7200 s")
        _vals, objs = parse_output(p.stdout.decode(errors="replace"))
        rows = [o for o in objs if "model" in o]
        raw = self.raw.setdefault("torch", {})
        raw["torch_bench_command"] = " ".join(
            [str(bench.relative_to(ROOT))] + cmd[2:])
        raw["torch_bench_exit"] = p.returncode
        if not rows:
            raise SectionError("torch_bench.py printed no results (exit "
                               f"{p.returncode}): "
                               + last_line(p.stderr.decode(errors="replace")))
        self.inductor_dirs = []
        errors = []
        for row in rows:
            name = row["model"]
            why = {}
            errs = row.get("errors") or {}
            if errs:
                for k in ("cold_s", "mithril_warm_s", "hit_rate"):
                    why[k] = "torch_bench: " + last_line(
                        str(errs.get("mithril", errs)))
            if row.get("remote_warm_s") is None:
                try:
                    row.update(self._remote_warm(name))
                except SectionError as e:
                    why["remote_warm_s"] = str(e)
            if (row.get("hit_rate") is None
                    and row.get("torch_fx_hit_rate") is not None
                    and not row.get("graph_hits")
                    and not row.get("graph_misses")):
                # The backend counted no graph lookups at all: the hit
                # rate is then torch's own FX graph cache hit rate in the
                # mithril warm runs (what the restored files gave torch).
                row["hit_rate"] = row["torch_fx_hit_rate"]
                row["hit_rate_source"] = "torch FX graph cache"
                self.notes.append(
                    f"torch: {name}: the mithril backend counted no graph "
                    f"lookups; hit_rate is torch's FX graph cache hit rate "
                    f"in the mithril warm runs")
            else:
                row.setdefault("hit_rate_source", "mithril graph lookups")
            if (row.get("mithril_warm_s") is not None
                    and row.get("eager_s") is not None):
                row["hit_overhead_s"] = (row["mithril_warm_s"]
                                         - row["eager_s"])
            for k in TORCH_FIELDS:
                row.setdefault(k, None)
                if row[k] is None:
                    reason = why.get(k) or ("torch_bench.py gave no " + k)
                    self.missing[f"torch.{name}.{k}"] = reason
                    errors.append(f"{name} {k}: {reason}")
        self.fields["torch"] = rows
        self._torch_goals()
        if errors:
            raise SectionError("; ".join(errors)[:600])

    def _worker(self, model, mode, store, work, **extra):
        """One demo/demo.py --worker process; its JSON object."""
        cmd = [sys.executable, str(ROOT / "demo" / "demo.py"), "--worker",
               "--model", model, "--mode", mode, "--dir", str(store),
               "--work", str(work)]
        p, wall = run_cmd(cmd, 1800,
                          env=self.env(PYTHONWARNINGS="ignore", **extra))
        _vals, objs = parse_output(p.stdout.decode(errors="replace"))
        objs = [o for o in objs if "first_call_s" in o]
        if not objs:
            raise SectionError(f"demo worker {mode} {model} printed no "
                               f"timing")
        objs[-1]["process_s"] = wall
        return objs[-1]

    def _remote_warm(self, name):
        """Fill Redis from a cold run, then warm starts each from an empty
        store and working folder with MITHRIL_REMOTE set."""
        redis = self.redis_server()
        redis.flush()
        base = self.tmp / "torch-remote" / name
        store, work = base / "store", base / "work"
        log(f"torch: {name} cold run filling Redis")
        self._worker(name, "mithril", store, work, MITHRIL_REMOTE=redis.url)
        self.inductor_dirs.append(work)
        self._push(store, redis)
        # A remote start costs the machine ~15 ms more than a local one
        # (pulling into an empty store), while the first call of the same
        # process moves by +-50 ms from run to run, more when other jobs
        # share the machine. Each remote start is bracketed by local ones
        # (L R L R ... R L) and compared with the mean of its two
        # neighbours, which cancels drift and the order of the runs; 11
        # remote starts in the full run keep the noise inside the goal.
        reps = self.repeats if self.quick else max(self.repeats, 11)
        times, hits, misses, restored = [], 0, 0, []
        local = []  # the anchor: local warm starts, interleaved
        # enable() alone (open the store, pull, restore): where a remote
        # start's extra time goes.
        enable, local_enable = [], []
        fx = [0, 0]  # torch's FX graph cache hits, misses

        def local_start():
            # Local warm from the filled store, working folder deleted,
            # in the same harness and minute as the remote runs around it.
            shutil.rmtree(work, ignore_errors=True)
            lo = self._worker(name, "mithril", store, work)
            local.append(lo["first_call_s"])
            local_enable.append(lo.get("enable_s"))

        for i in range(reps):
            local_start()
            o = self._worker(name, "mithril", base / f"rstore{i}",
                             base / f"rwork{i}", MITHRIL_REMOTE=redis.url)
            times.append(o["first_call_s"])
            enable.append(o.get("enable_s"))
            hits += o.get("graph_hits", 0)
            misses += o.get("graph_misses", 0)
            t = o.get("torch", {})
            fx[0] += t.get("fxgraph_cache_hit", 0)
            fx[1] += t.get("fxgraph_cache_miss", 0)
            restored.append(o.get("restored_files"))
        local_start()
        # Deleted only now: a fresh node has no freshly freed inodes to
        # step over (see section_remote).
        for i in range(reps):
            shutil.rmtree(base / f"rstore{i}", ignore_errors=True)
            shutil.rmtree(base / f"rwork{i}", ignore_errors=True)
        self.raw.setdefault("torch", {})[name + "_remote"] = {
            "samples": times, "local_samples": local,
            "enable_samples": enable, "local_enable_samples": local_enable,
            "restored_files": restored}
        if hits + misses:
            rate = hits / (hits + misses)
        else:
            rate = fx[0] / (fx[0] + fx[1]) if fx[0] + fx[1] else None
        # Each remote start against the mean of the local starts just
        # before and after it: the median of these ratios cancels the drift
        # of a shared machine that a ratio of two medians keeps.
        pairs = [r / ((a + b) / 2) for r, a, b in zip(times, local, local[1:])
                 if r and a and b]
        return {"remote_warm_s": median(times), "remote_hit_rate": rate,
                "remote_repeats": reps,
                "remote_local_warm_s": median(local),
                "remote_enable_s": median(enable),
                "remote_local_enable_s": median(local_enable),
                "remote_paired_ratio": median(pairs) if pairs else None}

    def _child(self, mode, model, env, timeout=1800):
        """One fresh process: build model, first call; its JSON object."""
        p, wall = run_cmd([sys.executable, str(Path(__file__).resolve()),
                           "--child", mode, "--model", model], timeout,
                          env=env)
        _vals, objs = parse_output(p.stdout.decode(errors="replace"))
        objs = [o for o in objs if "first_call_s" in o]
        if not objs:
            raise SectionError(f"{mode} run of {model} printed no timing")
        o = objs[-1]
        o["process_s"] = wall
        if mode == "mithril" and not o.get("mithril_enabled"):
            raise SectionError(f"mithril_cache.enable() was disabled in the "
                               f"{model} run: {o.get('mithril_reason')}")
        return o

    def _torch_own(self):
        """Each model, each figure in fresh processes:
        eager       first call without compiling
        cold        torch.compile with mithril enabled on an empty store
                    and an empty working folder (captured at exit)
        torch warm  the same working folder kept, mithril off
        mithril warm  working folder deleted, restored from the store
        remote warm   an empty store and folder, restored through Redis
        """
        names = self._model_names()
        redis = self.redis_server()
        reps = self.repeats
        cold_reps = 1 if self.quick else reps
        warm_reps = 2 if self.quick else reps
        raw = self.raw.setdefault("torch", {"cold_repeats": cold_reps,
                                            "warm_repeats": warm_reps})
        self.inductor_dirs = []
        results = []
        errors = []
        for name in names:
            log(f"torch: {name}")
            row = {"model": name}
            samples = {k: [] for k in TORCH_FIELDS}
            hits = {"mithril": [0, 0], "remote": [0, 0]}
            why = {}
            base = self.tmp / "torch" / name
            try:
                for _ in range(warm_reps):
                    o = self._child("eager", name, self.env())
                    samples["eager_s"].append(o["first_call_s"])
            except SectionError as e:
                why["eager_s"] = str(e)
            for rep in range(cold_reps):
                work = base / f"work{rep}"
                store = base / f"store{rep}"
                redis.flush()
                env = self.env(MITHRIL_DIR=store, MITHRIL_WORK_DIR=work,
                               MITHRIL_REMOTE=redis.url)
                try:
                    o = self._child("mithril", name, env)
                    samples["cold_s"].append(o["first_call_s"])
                except SectionError as e:
                    why["cold_s"] = str(e)
                    break
                # torch's own warm cache: the same folder, mithril off.
                envt = self.env(TORCHINDUCTOR_CACHE_DIR=work / "inductor",
                                TRITON_CACHE_DIR=work / "triton")
                try:
                    for _ in range(warm_reps if rep == 0 else 1):
                        o = self._child("compile", name, envt)
                        samples["torch_warm_s"].append(o["first_call_s"])
                except SectionError as e:
                    why["torch_warm_s"] = str(e)
                if rep == 0:
                    keep = self.tmp / "inductor" / name
                    shutil.copytree(work, keep, symlinks=True)
                    self.inductor_dirs.append(keep)
                # mithril warm: the working folder deleted first.
                envm = self.env(MITHRIL_DIR=store, MITHRIL_WORK_DIR=work)
                try:
                    for _ in range(warm_reps if rep == 0 else 1):
                        shutil.rmtree(work, ignore_errors=True)
                        o = self._child("mithril", name, envm)
                        samples["mithril_warm_s"].append(o["first_call_s"])
                        self._count_hits(hits["mithril"], o)
                except SectionError as e:
                    why["mithril_warm_s"] = str(e)
                # remote warm: empty store and folder, Redis behind them.
                try:
                    self._push(store, redis)
                    for i in range(warm_reps if rep == 0 else 1):
                        rstore = base / f"rstore{rep}.{i}"
                        rwork = base / f"rwork{rep}.{i}"
                        envr = self.env(MITHRIL_DIR=rstore,
                                        MITHRIL_WORK_DIR=rwork,
                                        MITHRIL_REMOTE=redis.url)
                        o = self._child("mithril", name, envr)
                        samples["remote_warm_s"].append(o["first_call_s"])
                        self._count_hits(hits["remote"], o)
                except SectionError as e:
                    why["remote_warm_s"] = str(e)
            for k in TORCH_FIELDS:
                if k == "hit_rate":
                    continue
                row[k] = median(samples[k])
            h, m = hits["mithril"]
            row["hit_rate"] = h / (h + m) if h + m else None
            h, m = hits["remote"]
            row["remote_hit_rate"] = h / (h + m) if h + m else None
            if row["hit_rate"] is None and "mithril_warm_s" not in why:
                why["hit_rate"] = ("torch reported no FX graph cache "
                                   "lookups in the mithril warm runs")
            if row["mithril_warm_s"] is not None and row["eager_s"]:
                row["hit_overhead_s"] = row["mithril_warm_s"] - row["eager_s"]
            row["repeats"] = {k: len(v) for k, v in samples.items() if v}
            raw[name] = {"samples": samples, "hits": hits}
            for k in TORCH_FIELDS:
                if row.get(k) is None:
                    reason = why.get(k) or why.get("cold_s") or "not measured"
                    self.missing[f"torch.{name}.{k}"] = reason
                    errors.append(f"{name} {k}: {reason}")
            results.append(row)
        self.fields["torch"] = results
        self._torch_goals()
        if errors:
            raise SectionError("; ".join(errors)[:600])

    def _count_hits(self, acc, o):
        acc[0] += o.get("fxgraph_hit", 0)
        acc[1] += o.get("fxgraph_miss", 0)

    def _push(self, store, redis):
        """Make sure Redis holds the store's entries (the cold run queues
        them at exit; an explicit push costs little when they are there)."""
        try:
            run_cmd([str(self.mithril), "--dir", str(store), "--remote",
                     redis.url, "push"], 600, env=self.env())
        except SectionError as e:
            self.notes.append(f"torch: mithril push failed ({e}); remote "
                              f"warm relies on the cold run's queue")

    def _torch_goals(self):
        for t in self.fields["torch"]:
            m = t.get("model")
            f = f"torch.{m}"
            self.goal(f"{m}: mithril warm <= 1.05x torch warm",
                      ratio(t.get("mithril_warm_s"), t.get("torch_warm_s")),
                      "<= 1.05x", lambda v: v <= 1.05, field=f)
            self.goal(f"{m}: overhead on a hit (mithril warm - eager) < 1 s",
                      t.get("hit_overhead_s"), "< 1 s", lambda v: v < 1.0,
                      field=f)
            self.goal(f"{m}: hit rate 100 %", t.get("hit_rate"), "100 %",
                      lambda v: v >= 1.0, field=f)
            # Anchor: local warm starts interleaved with the remote ones
            # (same harness, same minutes), judged on the median of the
            # pairs' ratios; the torch table's mithril warm when those are
            # missing.
            paired = t.get("remote_paired_ratio")
            self.goal(f"{m}: remote warm <= 1.1x mithril warm",
                      paired if paired is not None else
                      ratio(t.get("remote_warm_s"),
                            t.get("remote_local_warm_s")
                            or t.get("mithril_warm_s")),
                      "<= 1.10x", lambda v: v <= 1.1, field=f)

# ------------------------------------------------------------------------
# The child: one model, one first call, in a fresh process
# ------------------------------------------------------------------------

def _builtin_models():
    """Small models used when demo/models.py is absent."""
    import torch
    from torch import nn

    def mlp():
        m = nn.Sequential(nn.Linear(256, 512), nn.GELU(),
                          nn.Linear(512, 512), nn.GELU(),
                          nn.Linear(512, 10))
        return m, (torch.randn(32, 256),)

    def convnet():
        m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 10))
        return m, (torch.randn(8, 3, 32, 32),)

    return {"mlp": mlp, "convnet": convnet}


def _demo_models():
    """name -> factory returning (module, inputs tuple)."""
    sys.path.insert(0, str(ROOT))
    try:
        import demo.models as dm
    except ImportError:
        return _builtin_models(), "builtin"
    for attr in ("MODELS", "models", "REGISTRY"):
        reg = getattr(dm, attr, None)
        if isinstance(reg, dict) and reg:
            return {k: _as_factory(v) for k, v in reg.items()}, "demo"
    for attr in ("model_names", "names", "list_models"):
        fn = getattr(dm, attr, None)
        if callable(fn):
            build = (getattr(dm, "build", None) or getattr(dm, "get", None)
                     or getattr(dm, "make", None)
                     or getattr(dm, "get_model", None))
            if build:
                return {n: _as_factory(lambda n=n: build(n))
                        for n in fn()}, "demo"
    return _builtin_models(), "builtin"


def _as_factory(v):
    def make():
        obj = v() if callable(v) and not hasattr(v, "forward") else v
        if isinstance(obj, tuple) and len(obj) == 2:
            model, inputs = obj
        elif isinstance(obj, dict):
            model = obj.get("model")
            inputs = obj.get("inputs") or obj.get("example_inputs")
        else:
            model = obj
            inputs = getattr(obj, "example_inputs", None)
            inputs = inputs() if callable(inputs) else inputs
        if not isinstance(inputs, (tuple, list)):
            inputs = (inputs,)
        return model, tuple(inputs)
    return make


def child_main(mode, name):
    """Print one JSON object: the first call's wall time and counters."""
    if mode == "list":
        models, _src = _demo_models()
        print(" ".join(models))
        return 0
    import torch
    models, src = _demo_models()
    torch.manual_seed(0)
    model, inputs = models[name]()
    model.eval()
    out = {"model": name, "mode": mode, "models_from": src}
    with torch.no_grad():
        t0 = time.perf_counter()
        if mode == "eager":
            model(*inputs)
        else:
            if mode == "mithril":
                import mithril_cache
                mithril_cache.enable()
            compiled = torch.compile(model)
            compiled(*inputs)
        out["first_call_s"] = time.perf_counter() - t0
    try:
        from torch._dynamo.utils import counters
        ind = counters["inductor"]
        out["fxgraph_hit"] = int(ind.get("fxgraph_cache_hit", 0))
        out["fxgraph_miss"] = int(ind.get("fxgraph_cache_miss", 0))
        out["fxgraph_bypass"] = int(ind.get("fxgraph_cache_bypass", 0))
    except Exception:
        pass
    if mode == "mithril":
        import mithril_cache
        mgr = mithril_cache.active()
        out["mithril_enabled"] = bool(mgr and mgr.enabled)
        if mgr is not None and not mgr.enabled:
            out["mithril_reason"] = mgr.reason
        if mgr is not None and mgr.enabled:
            out["restored"] = dict(mgr.restored or {})
        t1 = time.perf_counter()
        mithril_cache.flush()
        out["flush_s"] = time.perf_counter() - t1
    print(json.dumps(out), flush=True)
    return 0


# ------------------------------------------------------------------------
# Writers: JSON, Markdown, PNG
# ------------------------------------------------------------------------

def build_result(suite, started):
    machine = suite.machine
    machine["loadavg_end"] = list(os.getloadavg())
    out = {
        "schema": 1,
        "quick": suite.quick,
        "started": started,
        "duration_s": round(suite.duration, 1),
        "repeats": suite.repeats,
        **suite.commit,
        "machine": machine,
        "versions": suite.versions,
    }
    for k in CONTRACT:
        out[k] = suite.fields.get(k)
    out["torch"] = suite.fields["torch"]
    extra = {k: v for k, v in suite.fields.items()
             if k not in CONTRACT and k != "torch"}
    out.update(sorted(extra.items()))
    out["ratios"] = {f["field"] + "/" + f["anchor_field"]: f["ratio"]
                     for f in suite.figures if f["anchor_field"]}
    out["goals"] = suite.goals
    out["figures"] = suite.figures
    out["sections"] = suite.sections
    out["missing"] = suite.missing
    out["notes"] = list(dict.fromkeys(suite.notes))
    out["raw"] = suite.raw
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="small sizes, fewer repeats (a few minutes)")
    default_build = (Path(os.environ["MITHRIL_BIN"]).parent
                     if os.environ.get("MITHRIL_BIN") else ROOT / "build")
    ap.add_argument("--build", default=str(default_build),
                    help="build folder with mithril and bench_* "
                         "(default: MITHRIL_BIN's folder, else build/)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"),
                    help="where latest.json, latest.md, torch.png go")
    ap.add_argument("--repeats", type=int, default=0,
                    help="repeats per figure (default 5, quick 3)")
    ap.add_argument("--only", default="",
                    help="comma-separated sections: " + ",".join(SECTIONS))
    ap.add_argument("--tmp", default=os.environ.get("MITHRIL_BENCH_TMP"),
                    help="scratch folder parent (default: the system's)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the scratch folder")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_main(args.child, args.model)

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds")
    suite = Suite(args)
    # The commit measured is the one checked out now, when the build is
    # made: commits made while the suite runs are not in its figures.
    suite.commit = commit_record()
    log(f"build {suite.build}, scratch {suite.tmp}, "
        f"{'quick' if suite.quick else 'full'} mode")
    suite.machine = machine_record()
    suite.versions = versions_record(suite.build)
    if suite.versions["cmake_build_type"] not in ("Release",
                                                  "RelWithDebInfo"):
        suite.notes.append(
            f"the build folder is not optimized (build type "
            f"{suite.versions['cmake_build_type']}): figures understate "
            f"the library")
    suite.run()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = build_result(suite, started)
    drawn = write_chart(res, out / "torch.png")
    if not drawn and (out / "torch.png").exists():
        (out / "torch.png").unlink()
    (out / "latest.json").write_text(
        json.dumps(res, indent=1, default=str) + "\n")
    write_markdown(res, out / "latest.md")
    log(f"wrote {out / 'latest.json'}, {out / 'latest.md'}"
        + (f", {out / 'torch.png'}" if drawn else ""))
    sys.stdout.write((out / "latest.md").read_text())
    # 0 only when every selected section ran and nothing is missing but
    # what quick mode leaves out on purpose (or --only deselected).
    ok = all(s.get("status") in ("ran", "skipped")
             for s in suite.sections.values())
    if not args.only:
        ok = ok and set(suite.missing) <= suite.by_design
    if not ok:
        log("not every benchmark ran: see Missing and Sections in "
            f"{out / 'latest.md'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
