"""The blob commands end to end: put, get, exists, delete through the real
mithril command on a real store folder, cross-checked with b3sum; corrupt
blobs found, quarantined and never printed; malformed addresses refused."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def _addr(p):
    out = p.stdout.decode() if isinstance(p.stdout, bytes) else p.stdout
    return out.strip()


def _blob_path(store_dir, addr):
    return Path(store_dir) / "blobs" / addr[:2] / addr[2:4] / addr


def _b3sum(path):
    exe = shutil.which("b3sum")
    if not exe:
        pytest.skip("b3sum not installed")
    return subprocess.run([exe, "--no-names", str(path)], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("size", [0, 1, 4096, 1 << 20, (3 << 20) + 5])
def test_put_get_roundtrip(cli, tmp_path, size):
    data = (b"torch.compile artifact " * (size // 23 + 1))[:size // 2] + \
        os.urandom(size - size // 2)
    f = tmp_path / "in.bin"
    f.write_bytes(data)
    p = cli("put", f, check=True)
    addr = _addr(p)
    assert addr == _b3sum(f)
    assert cli("exists", addr).returncode == 0
    g = cli("get", addr, check=True)
    assert g.stdout == data


def test_put_is_idempotent_and_stdin(cli, tmp_path):
    f = tmp_path / "a"
    f.write_bytes(b"same bytes\n")
    a1 = _addr(cli("put", f, check=True))
    a2 = _addr(cli("put", f, check=True))
    a3 = _addr(cli("put", "-", input=b"same bytes\n", check=True))
    assert a1 == a2 == a3


def test_get_output_file(cli, tmp_path):
    f = tmp_path / "model.so"
    f.write_bytes(os.urandom(100000))
    addr = _addr(cli("put", f, check=True))
    out = tmp_path / "out" / "copy.so"
    out.parent.mkdir()
    p = cli("get", addr, "-o", out)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b""
    assert out.read_bytes() == f.read_bytes()
    # Published atomically: no temporary file left beside it.
    assert sorted(x.name for x in out.parent.iterdir()) == ["copy.so"]
    # "-o -" is standard output.
    assert cli("get", addr, "-o", "-", check=True).stdout == f.read_bytes()


def test_key_put_get_delete(cli, tmp_path):
    f = tmp_path / "kernel.py"
    f.write_bytes(b"def kernel(): pass\n")
    os.chmod(f, 0o755)
    p = cli("put", f, "--key", "fx/abc", check=True)
    addr = _addr(p)
    assert addr == _b3sum(f)
    assert cli("get", "--key", "fx/abc", check=True).stdout == f.read_bytes()
    out = tmp_path / "restored.py"
    assert cli("get", "--key", "fx/abc", "-o", out).returncode == 0
    assert out.read_bytes() == f.read_bytes()
    assert out.stat().st_mode & 0o777 == 0o755
    assert cli("delete", "--key", "fx/abc").returncode == 0
    assert cli("get", "--key", "fx/abc").returncode == 1
    assert cli("delete", "--key", "fx/abc").returncode == 1


def test_exists_and_delete(cli, tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"x" * 5000)
    addr = _addr(cli("put", f, check=True))
    assert cli("exists", addr).returncode == 0
    assert cli("delete", addr).returncode == 0
    assert cli("exists", addr).returncode == 1
    assert cli("delete", addr).returncode == 1
    g = cli("get", addr)
    assert g.returncode == 1 and g.stdout == b""


@pytest.mark.parametrize("where", ["middle", "header", "end"])
def test_flipped_byte_is_corrupt(cli, store_dir, tmp_path, where):
    f = tmp_path / "f"
    f.write_bytes(b"compressible text " * 20000)
    addr = _addr(cli("put", f, check=True))
    blob = _blob_path(store_dir, addr)
    raw = bytearray(blob.read_bytes())
    at = {"middle": 16 + (len(raw) - 16) // 2, "header": 2,
          "end": len(raw) - 1}[where]
    raw[at] ^= 0x01
    os.chmod(blob, 0o600)
    blob.write_bytes(bytes(raw))

    p = cli("get", addr)
    assert p.returncode == 4, p.stderr
    assert p.stdout == b""
    err = p.stderr.decode()
    assert f"mithril: error: corrupt blob '{addr}'" in err
    assert "quarantine" in err
    # Moved away: absent now, and the quarantine holds it.
    assert not blob.exists()
    assert any(q.name.startswith(addr + ".")
               for q in (Path(store_dir) / "quarantine").iterdir())
    assert cli("exists", addr).returncode == 1
    assert cli("get", addr).returncode == 1


def test_corrupt_never_reaches_output_file(cli, store_dir, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(os.urandom(200000))
    addr = _addr(cli("put", f, check=True))
    blob = _blob_path(store_dir, addr)
    raw = bytearray(blob.read_bytes())
    raw[1000] ^= 0xFF
    blob.write_bytes(bytes(raw))
    out = tmp_path / "o" / "out.bin"
    out.parent.mkdir()
    p = cli("get", addr, "-o", out)
    assert p.returncode == 4
    assert list(out.parent.iterdir()) == []
    # Putting the content again repairs the store.
    assert _addr(cli("put", f, check=True)) == addr
    assert cli("get", addr, check=True).stdout == f.read_bytes()


@pytest.mark.parametrize("bad", [
    "../x", "A" * 64, "a" * 63, "a" * 65, "ab/" + "a" * 61, "",
    "g" * 64])
def test_bad_address_is_usage_error(cli, store_dir, bad):
    for cmd in ("get", "exists", "delete"):
        p = cli(cmd, bad)
        assert p.returncode == 2, (cmd, bad, p.stderr)
        assert b"address" in p.stderr
        assert p.stdout == b""


def test_usage_errors(cli, tmp_path):
    assert cli("put").returncode == 2
    assert cli("get").returncode == 2
    assert cli("get", "a" * 64, "--key", "k").returncode == 2
    assert cli("exists", "a" * 64, "b" * 64).returncode == 2
    p = cli("put", tmp_path / "missing")
    assert p.returncode == 2
    assert b"mithril: error:" in p.stderr
    assert cli("put", "--help").returncode == 0
