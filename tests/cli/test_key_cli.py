"""`mithril key`, `mithril device` and `mithril config` end to end.

Keys: the output is recomputed here from docs/KEYS.md alone (the encoding
in Python, the hash by `b3sum --derive-key`), so the document and the code
cannot disagree; it is identical across processes that differ in HOME,
USER, working folder and TMPDIR; it changes with every field; malformed
flags exit 2 with a message naming the flag. Device: agrees with the CPU
flags in /proc/cpuinfo. Config: each setting's source follows the
precedence flag > env > file > default."""

import json
import os
import shutil
import struct
import subprocess

import pytest

B3SUM = shutil.which("b3sum")
CONTEXT = "mithril-cache 2026 storage key v1"
GRAPH = "00" * 31 + "2a"
KINDS = {"cpu": 1, "cuda": 2, "cuda_cc": 3}


def run(mithril_bin, *args, env=None, cwd=None):
    full = dict(os.environ)
    for var in list(full):
        if var.startswith("MITHRIL_"):
            del full[var]
    if env:
        full.update(env)
    return subprocess.run([mithril_bin, *map(str, args)], capture_output=True,
                          text=True, env=full, cwd=cwd, timeout=120)


def key(mithril_bin, inputs, device, toolchain=None, graph=GRAPH, **kw):
    args = ["key", "--graph", graph, "--device", device]
    for spec in inputs:
        args += ["--input", spec]
    if toolchain is not None:
        args += ["--toolchain", toolchain]
    p = run(mithril_bin, *args, **kw)
    assert p.returncode == 0, p.stderr
    out = p.stdout.strip()
    assert len(out) == 64 and all(c in "0123456789abcdef" for c in out)
    return out


# ---- the encoding, from docs/KEYS.md ----

ALIASES = {"float": "float32", "half": "float16", "long": "int64",
           "double": "float64", "int": "int32"}


def encode(graph_hex, inputs, device, toolchain):
    out = b"MKEY" + bytes([1]) + bytes.fromhex(graph_hex)
    out += struct.pack("<I", len(inputs))
    for spec in inputs:
        dtype, dims = spec.split(":")
        dtype = ALIASES.get(dtype, dtype).encode()
        dims = [] if dims == "" else [
            -1 if d == "?" else int(d) for d in dims.split(",")]
        out += struct.pack("<I", len(dtype)) + dtype
        out += struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<q", d) for d in dims)
    kind, major, minor, isa = 0, 0, 0, b""
    if device == "cuda":
        kind = KINDS["cuda"]
    elif device.startswith("cuda:"):
        kind = KINDS["cuda_cc"]
        major, minor = map(int, device[5:].split("."))
    else:
        kind = KINDS["cpu"]
        isa = device[4:].encode()
    out += bytes([kind]) + struct.pack("<II", major, minor)
    out += struct.pack("<I", len(isa)) + isa
    tool = toolchain.encode()
    return out + struct.pack("<Q", len(tool)) + tool


def b3_derive(data):
    p = subprocess.run([B3SUM, "--derive-key", CONTEXT, "--no-names"],
                       input=data, capture_output=True, check=True)
    return p.stdout.decode().strip()


CASES = [
    (["float32:8,16", "int64:?,128"], "cuda:9.0", "torch=2.13 triton=3.5"),
    (["float:8,?", "long:"], "cuda:9.0", "t=1"),
    ([], "cpu", ""),
    (["half:1,2,3,4"], "cpu:avx512", "python=3.12"),
    (["bfloat16:0"], "cuda", "x" * 300),
    (["int32:9223372036854775807"], "cpu:sse42", "ü unicode"),
]


@pytest.mark.skipif(B3SUM is None, reason="b3sum not installed")
@pytest.mark.parametrize("inputs,device,toolchain", CASES)
def test_key_matches_document(mithril_bin, inputs, device, toolchain):
    want = b3_derive(encode(GRAPH, inputs, device, toolchain))
    assert key(mithril_bin, inputs, device, toolchain) == want


def test_known_answer(mithril_bin):
    graph = bytes(range(32)).hex()
    got = key(mithril_bin, ["float32:8,?", "int64:"], "cuda:9.0", "t=1",
              graph=graph)
    assert got == ("01d9adff8c1dcf8ebb66bc492b51d209"
                   "da7c34f18d0520851629b0372220ea64")


def test_key_same_everywhere(mithril_bin, tmp_path):
    inputs = ["float32:8,16", "int64:?,128"]
    tool = "torch=2.13 triton=3.5 python=3.12 cuda=12.8"
    seen = set()
    for i, user in enumerate(["alice", "bob", "root"]):
        home = tmp_path / f"home{i}"
        work = tmp_path / f"cwd{i}"
        tmp = tmp_path / f"tmp{i}"
        for d in (home, work, tmp):
            d.mkdir()
        env = {"HOME": str(home), "USER": user, "LOGNAME": user,
               "TMPDIR": str(tmp), "MITHRIL_DIR": str(home / "store"),
               "HOSTNAME": f"host{i}"}
        seen.add(key(mithril_bin, inputs, "cuda:8.6", tool, env=env,
                     cwd=work))
    assert len(seen) == 1


def test_key_changes_with_every_field(mithril_bin):
    base = (["float32:8,16", "int64:?,128"], "cuda:8.0", "torch=2.13")
    variants = [
        (["float32:9,16", "int64:?,128"], "cuda:8.0", "torch=2.13"),
        (["float32:8,17", "int64:?,128"], "cuda:8.0", "torch=2.13"),
        (["float32:8,16", "int64:1,128"], "cuda:8.0", "torch=2.13"),
        (["float32:?,16", "int64:?,128"], "cuda:8.0", "torch=2.13"),
        (["float16:8,16", "int64:?,128"], "cuda:8.0", "torch=2.13"),
        (["float32:8,16", "int32:?,128"], "cuda:8.0", "torch=2.13"),
        (["int64:?,128", "float32:8,16"], "cuda:8.0", "torch=2.13"),
        (["float32:8,16"], "cuda:8.0", "torch=2.13"),
        (["float32:8,16", "int64:?,128"], "cuda:8.6", "torch=2.13"),
        (["float32:8,16", "int64:?,128"], "cuda", "torch=2.13"),
        (["float32:8,16", "int64:?,128"], "cpu:avx2", "torch=2.13"),
        (["float32:8,16", "int64:?,128"], "cpu:avx512", "torch=2.13"),
        (["float32:8,16", "int64:?,128"], "cuda:8.0", "torch=2.14"),
        (["float32:8,16", "int64:?,128"], "cuda:8.0", ""),
    ]
    keys = [key(mithril_bin, *base)] + [key(mithril_bin, *v)
                                        for v in variants]
    assert len(set(keys)) == len(keys)
    other = "00" * 31 + "2b"
    assert key(mithril_bin, *base, graph=other) != keys[0]


@pytest.mark.parametrize("args,needle", [
    (["--device", "cpu"], "--graph"),
    (["--graph", GRAPH], "--device"),
    (["--graph", "abc", "--device", "cpu"], "--graph"),
    (["--graph", GRAPH.upper(), "--device", "cpu"], "--graph"),
    (["--graph", GRAPH, "--device", "gpu"], "--device"),
    (["--graph", GRAPH, "--device", "cuda:8"], "--device"),
    (["--graph", GRAPH, "--device", "cuda:x.y"], "--device"),
    (["--graph", GRAPH, "--device", "cpu:avx3"], "--device"),
    (["--graph", GRAPH, "--device", "cpu", "--input", "float32"], "--input"),
    (["--graph", GRAPH, "--device", "cpu", "--input", "float32:8,"],
     "--input"),
    (["--graph", GRAPH, "--device", "cpu", "--input", "float32:-1"],
     "--input"),
    (["--graph", GRAPH, "--device", "cpu", "--input", "floaty:1"],
     "--input"),
    (["--graph", GRAPH, "--device", "cpu", "--input",
      "float32:99999999999999999999"], "--input"),
    (["--graph", GRAPH, "--device", "cpu", "--input",
      "int8:" + ",".join(["1"] * 65)], "--input"),
    (["--graph", GRAPH, "--device", "cpu", "stray"], "stray"),
    (["--graph", GRAPH, "--device", "cpu", "--bogus"], "bogus"),
])
def test_key_malformed_flags(mithril_bin, args, needle):
    p = run(mithril_bin, "key", *args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert needle in p.stderr
    assert p.stdout == ""


def test_key_device_auto(mithril_bin):
    dev = run(mithril_bin, "device").stdout.strip()
    assert key(mithril_bin, ["float32:1"], "auto") == key(
        mithril_bin, ["float32:1"], dev)


# ---- device ----

def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def test_device_matches_cpuinfo(mithril_bin):
    p = run(mithril_bin, "device", "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert set(info) >= {"device", "cpu_isa", "cuda"}
    text = run(mithril_bin, "device").stdout.strip()
    assert text == info["device"]
    if info["cuda"]:
        assert text.startswith("cuda:")
    else:
        assert text == "cpu:" + info["cpu_isa"]
    flags = cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo")
    isa = info["cpu_isa"]
    machine = os.uname().machine
    if machine == "x86_64":
        has512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
        has2 = {"avx2", "fma"} <= flags
        if has512:
            assert isa == "avx512"
        elif has2:
            assert isa == "avx2"
        elif "sse4_2" in flags:
            assert isa == "sse42"
        else:
            assert isa == "x86_64"
        if "avx2" not in flags:
            assert isa not in ("avx2", "avx512")
    elif machine == "aarch64":
        assert isa == ("sve" if "sve" in flags else "neon")


def test_device_rejects_arguments(mithril_bin):
    p = run(mithril_bin, "device", "extra")
    assert p.returncode == 2 and "extra" in p.stderr


# ---- config ----

def config(mithril_bin, store, *args, env=None):
    p = run(mithril_bin, "--dir", store, "config", *args, env=env)
    assert p.returncode == 0, p.stderr
    out = {}
    for line in p.stdout.splitlines():
        name, rest = line.split(" = ", 1)
        value, source = rest.rsplit("  (", 1)
        out[name] = (value, source.rstrip(")"))
    return out, p


def test_config_defaults(mithril_bin, tmp_path):
    store = tmp_path / "store"
    got, _ = config(mithril_bin, store)
    assert got["max_size"] == ("10737418240 (10.0G)", "default")
    assert got["compression"] == ("3", "default")
    assert got["verify"] == ("on", "default")
    assert got["remote"] == ("none", "default")
    assert got["remote_read_only"] == ("off", "default")
    assert got["secret"] == ("unset", "default")
    assert got["disabled"] == ("no", "default")
    assert got["dir"] == (os.path.realpath(store), "flag")
    assert got["work_dir"] == (os.path.realpath(store) + "/work", "default")


def test_config_precedence(mithril_bin, tmp_path):
    store = tmp_path / "store"
    config(mithril_bin, store)
    (store / "config").write_text(
        "# settings\nmax_size = 1G\ncompression = 5\nverify = off\n")
    got, _ = config(mithril_bin, store)
    assert got["max_size"] == ("1073741824 (1.0G)", "file")
    assert got["compression"] == ("5", "file")
    assert got["verify"] == ("off", "file")

    env = {"MITHRIL_MAX_SIZE": "2G", "MITHRIL_COMPRESSION": "9"}
    got, _ = config(mithril_bin, store, env=env)
    assert got["max_size"] == ("2147483648 (2.0G)", "env")
    assert got["compression"] == ("9", "env")
    assert got["verify"] == ("off", "file")

    # --max-size after the command and before it: a flag beats env.
    got, _ = config(mithril_bin, store, "--max-size", "500M", env=env)
    assert got["max_size"] == ("524288000 (500.0M)", "flag")
    p = run(mithril_bin, "--dir", store, "--max-size", "3G", "config",
            env=env)
    assert "max_size = 3221225472 (3.0G)  (flag)" in p.stdout

    p = run(mithril_bin, "--dir", store, "--remote", "redis://127.0.0.1:1/2",
            "config", env={"MITHRIL_REMOTE": "redis://127.0.0.1:1/1"})
    assert "remote = redis://127.0.0.1:1/2  (flag)" in p.stdout
    assert "remote_read_only = off  (flag)" in p.stdout

    p = run(mithril_bin, "--dir", store, "config", "--max-size", "lots")
    assert p.returncode == 2 and "lots" in p.stderr


def test_config_malformed_is_warned_not_fatal(mithril_bin, tmp_path):
    store = tmp_path / "store"
    config(mithril_bin, store)
    (store / "config").write_text("max_size = 1G\ncompression = 99\n")
    got, p = config(mithril_bin, store, env={"MITHRIL_MAX_SIZE": "-1"})
    assert got["max_size"] == ("1073741824 (1.0G)", "file")
    assert got["compression"] == ("3", "default")
    assert "MITHRIL_MAX_SIZE" in p.stderr and "compression" in p.stderr


def test_config_env_only_settings(mithril_bin, tmp_path):
    store = tmp_path / "store"
    env = {"MITHRIL_SECRET": "s3cr3t-value", "MITHRIL_WORK_DIR": "/w",
           "MITHRIL_DISABLE": "1", "MITHRIL_REMOTE": "redis://127.0.0.1:1",
           "MITHRIL_REMOTE_READ_ONLY": "yes"}
    got, p = config(mithril_bin, store, env=env)
    assert "s3cr3t" not in p.stdout + p.stderr
    assert got["secret"] == ("set", "env")
    assert got["work_dir"] == ("/w", "env")
    assert got["disabled"] == ("yes", "env")
    assert got["remote"] == ("redis://127.0.0.1:1", "env")
    assert got["remote_read_only"] == ("on", "env")


def test_config_json(mithril_bin, tmp_path):
    store = tmp_path / "store"
    text, _ = config(mithril_bin, store, env={"MITHRIL_VERIFY": "0"})
    p = run(mithril_bin, "--dir", store, "config", "--json",
            env={"MITHRIL_VERIFY": "0"})
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert {k: (v["value"], v["source"]) for k, v in doc.items()} == text
    assert doc["verify"] == {"value": "off", "source": "env"}
