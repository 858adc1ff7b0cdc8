"""Faults of the system and unsafe folders: a real full file system (a small
tmpfs mounted by the test), store folders with unsafe owners or modes."""

import os
import shutil
import subprocess
import sys

import pytest


def _tmpfs(path, size):
    path.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}",
                        "tmpfs", str(path)], capture_output=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr!r}")


def _umount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_disk_put_fails_cleanly_and_recovers(mithril_bin, tmp_path):
    mnt = tmp_path / "small"
    _tmpfs(mnt, "2m")
    try:
        store = mnt / "store"
        big = tmp_path / "big"
        big.write_bytes(os.urandom(3 * 1024 * 1024))
        small = tmp_path / "small.bin"
        small.write_bytes(os.urandom(200 * 1024))
        run = lambda *a: subprocess.run(  # noqa: E731
            [mithril_bin, "--dir", str(store), *map(str, a)],
            capture_output=True)
        assert run("put", small, "--key", "small").returncode == 0
        p = run("put", big, "--key", "big")
        assert p.returncode not in (0, 1, 2), p
        err = p.stderr.decode()
        assert "mithril: error:" in err and "space" in err.lower(), err
        # Nothing half-written remains: no temp files, verify is clean,
        # the earlier entry is intact.
        leftovers = [q for q in (store / "tmp").rglob("*")] \
            if (store / "tmp").exists() else []
        assert leftovers == []
        assert run("verify").returncode == 0
        assert run("get", "--key", "small").stdout == small.read_bytes()
        assert run("get", "--key", "big").returncode == 1
        # Once space is freed, the store works again.
        filler = mnt / "filler"
        try:
            with open(filler, "wb") as f:
                f.write(os.urandom(1024 * 1024))
        except OSError:
            pass
        filler.unlink(missing_ok=True)
        medium = tmp_path / "medium"
        medium.write_bytes(os.urandom(800 * 1024))
        assert run("put", medium, "--key", "medium").returncode == 0
        assert run("get", "--key", "medium").stdout == medium.read_bytes()
    finally:
        _umount(mnt)


def test_store_created_private(mithril_bin, tmp_path):
    store = tmp_path / "store"
    f = tmp_path / "f"
    f.write_bytes(b"private")
    subprocess.run([mithril_bin, "--dir", str(store), "put", str(f)],
                   check=True, capture_output=True)
    assert (store.stat().st_mode & 0o777) == 0o700
    for p in (store / "blobs").rglob("*"):
        if p.is_file():
            assert p.stat().st_mode & 0o077 == 0, p
        else:
            assert p.stat().st_mode & 0o077 == 0, p


def test_unsafe_store_refused(mithril_bin, tmp_path):
    store = tmp_path / "store"
    subprocess.run([mithril_bin, "--dir", str(store), "stats"], check=True,
                   capture_output=True)
    os.chmod(store, 0o777)
    p = subprocess.run([mithril_bin, "--dir", str(store), "stats"],
                       capture_output=True)
    assert p.returncode != 0
    assert "writable by others" in p.stderr.decode() or \
        "unsafe" in p.stderr.decode()
    os.chmod(store, 0o700)
    if os.geteuid() == 0:
        os.chown(store, 65534, 65534)
        p = subprocess.run([mithril_bin, "--dir", str(store), "stats"],
                           capture_output=True)
        assert p.returncode != 0
        assert "another user" in p.stderr.decode() or \
            "unsafe" in p.stderr.decode()
        os.chown(store, 0, 0)
    assert subprocess.run([mithril_bin, "--dir", str(store), "stats"],
                          capture_output=True).returncode == 0


TORCH_WORKER = r'''
import sys, warnings
import torch
import mithril_cache
store, work = sys.argv[1], sys.argv[2]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    mithril_cache.enable(dir=store, work_dir=work)
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh()).eval()
    x = torch.randn(3, 8)
    with torch.no_grad():
        err = (torch.compile(m)(x) - m(x)).abs().max().item()
    mithril_cache.flush()
print("ERR", err)
for w in caught:
    print("WARNING", w.message)
'''


def test_full_disk_torch_keeps_running(mithril_bin, tmp_path):
    pytest.importorskip("torch")
    mnt = tmp_path / "small"
    _tmpfs(mnt, "1m")
    try:
        store = mnt / "store"
        assert subprocess.run([mithril_bin, "--dir", str(store), "stats"],
                              capture_output=True).returncode == 0
        # Fill the file system to the last block.
        with open(mnt / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        env = dict(os.environ)
        for n in ("MITHRIL_DIR", "MITHRIL_DISABLE", "TORCHINDUCTOR_CACHE_DIR",
                  "TRITON_CACHE_DIR"):
            env.pop(n, None)
        p = subprocess.run([sys.executable, "-c", TORCH_WORKER, str(store),
                            str(tmp_path / "work")], capture_output=True,
                           env=env, timeout=900)
        out = p.stdout.decode(errors="replace")
        assert p.returncode == 0, p.stderr.decode(errors="replace")[-3000:]
        err = float(out.split("ERR")[1].split()[0])
        assert err < 1e-5, out
        # The failure is said once, clearly.
        assert "No space left on device" in out, out[-3000:]
        # Nothing half-written remains; once space is freed the store
        # takes what torch wrote.
        (mnt / "filler").unlink()
        assert list((store / "tmp").iterdir()) == []
        v = subprocess.run([mithril_bin, "--dir", str(store), "verify"],
                           capture_output=True)
        assert v.returncode == 0, v.stdout + v.stderr
        c = subprocess.run([mithril_bin, "--dir", str(store), "capture",
                            "--work-dir", str(tmp_path / "work")],
                           capture_output=True)
        assert c.returncode == 0, c.stderr
    finally:
        _umount(mnt)
