"""The index through the command line: the LRU acceptance case (cap 50M,
100 entries of 1 MiB of random data, ten of the oldest read, `mithril
--max-size 50M gc`: under the cap, those ten kept), `stats` and its
counters, `ls`, `verify` finding a flipped byte, and `clear`."""

import json
import os
from pathlib import Path

MIB = 1024 * 1024


def stats(cli):
    p = cli("stats", "--json", check=True, text=True)
    return json.loads(p.stdout)


def ls_keys(cli):
    p = cli("ls", "--json", check=True, text=True)
    return [e["key"] for e in json.loads(p.stdout)]


def put_random(cli, tmp_path, key, size=MIB):
    f = tmp_path / f"{key}.bin"
    f.write_bytes(os.urandom(size))
    cli("put", f, "--key", key, check=True)
    return f


def test_lru_acceptance(cli, tmp_path):
    files = {}
    for i in range(100):
        files[i] = put_random(cli, tmp_path, f"e{i:03d}")
    st = stats(cli)
    assert st["entries"] == 100
    assert st["size_bytes"] >= 100 * MIB
    assert ls_keys(cli)[:3] == ["e000", "e001", "e002"]

    cli("stats", "--zero", check=True)
    for i in range(10):
        p = cli("get", "--key", f"e{i:03d}", check=True)
    p = cli("--max-size", "50M", "gc", check=True, text=True)
    assert "removed" in p.stdout

    st = stats(cli)
    assert st["size_bytes"] <= 50 * MIB
    assert st["entries"] < 100
    assert st["evictions"] >= 50
    assert st["hits"] == 10
    keys = ls_keys(cli)
    assert len(keys) == st["entries"]
    for i in range(10):
        assert f"e{i:03d}" in keys
    assert "e010" not in keys
    assert "e099" in keys
    # The ten read ones are now the most recently used, in read order.
    assert keys[-10:] == [f"e{i:03d}" for i in range(10)]

    # What survives still reads back byte for byte; what went is a miss.
    out = tmp_path / "out.bin"
    cli("get", "--key", "e005", "-o", out, check=True)
    assert out.read_bytes() == files[5].read_bytes()
    assert cli("get", "--key", "e010", "-o", out).returncode == 1
    st = stats(cli)
    assert st["misses"] >= 1


def test_gc_option_forms(cli, tmp_path):
    for i in range(6):
        put_random(cli, tmp_path, f"k{i}")
    p = cli("gc", "--max-size", "4M", "--json", check=True, text=True)
    r = json.loads(p.stdout)
    assert r["size_after"] <= 4 * MIB
    assert r["entries_removed"] == 3
    p = cli("gc", "1M", check=True, text=True)
    assert stats(cli)["size_bytes"] <= MIB
    assert cli("gc", "lots").returncode == 2


def test_stats_table_and_zero(cli, tmp_path):
    put_random(cli, tmp_path, "one", 1000)
    cli("get", "--key", "one", check=True)
    cli("get", "--key", "absent")
    p = cli("stats", check=True, text=True)
    assert "hit rate" in p.stdout and "50.0%" in p.stdout
    assert "graph hit rate" in p.stdout
    st = stats(cli)
    assert st["hits"] == 1 and st["misses"] == 1
    assert st["logical_bytes"] == 1000
    for name in ("puts", "graph_hits", "graph_misses", "remote_hits",
                 "remote_misses", "remote_errors", "rejected", "blobs"):
        assert name in st
    cli("stats", "--zero", check=True)
    st = stats(cli)
    assert st["hits"] == 0 and st["misses"] == 0
    assert st["entries"] == 1


def test_ls_text(cli, tmp_path):
    put_random(cli, tmp_path, "alpha", 123)
    p = cli("ls", check=True, text=True)
    key, size, when = p.stdout.split()
    assert key == "alpha" and size == "123"
    assert when.endswith("Z") and "T" in when


def test_verify_flipped_byte(cli, tmp_path, store_dir):
    put_random(cli, tmp_path, "good", 5000)
    put_random(cli, tmp_path, "bad", 5000)
    p = cli("verify", text=True)
    assert p.returncode == 0, p.stdout + p.stderr

    entries = json.loads(cli("ls", "--json", check=True, text=True).stdout)
    addr = [e for e in entries if e["key"] == "bad"][0]["items"][0]["addr"]
    blob = Path(store_dir) / "blobs" / addr[:2] / addr[2:4] / addr
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x40
    blob.write_bytes(bytes(data))

    p = cli("verify", text=True)
    assert p.returncode == 4
    assert "corrupt" in p.stdout and addr in p.stdout
    assert "broken entry" in p.stdout
    assert ls_keys(cli) == ["good"]
    # Repaired: a second pass is clean.
    p = cli("verify", text=True)
    assert p.returncode == 0, p.stdout


def test_clear(cli, tmp_path, store_dir):
    put_random(cli, tmp_path, "x", 2000)
    put_random(cli, tmp_path, "y", 2000)
    cli("clear", check=True)
    st = stats(cli)
    assert st["entries"] == 0 and st["size_bytes"] == 0 and st["blobs"] == 0
    assert ls_keys(cli) == []
    blobs = [f for f in (Path(store_dir) / "blobs").rglob("*") if f.is_file()]
    assert blobs == []


def test_verify_removes_dead_temp_files(cli, tmp_path, store_dir):
    put_random(cli, tmp_path, "t", 100)
    dead = Path(store_dir) / "tmp" / ".mtmp.2147483000.1-1"
    dead.parent.mkdir(exist_ok=True)
    dead.write_bytes(b"left by a process that died")
    mine = Path(store_dir) / "tmp" / "not-a-temp-name"
    mine.write_bytes(b"x")
    p = cli("verify", text=True)
    assert p.returncode == 4
    assert "stale temp file" in p.stdout
    assert not dead.exists() and mine.exists()
    assert cli("verify").returncode == 0
