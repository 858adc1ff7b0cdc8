"""Sharing through the command line: push/pull and read-through with a real
redis-server, export/import archives, dead and killed remotes, tampered and
unsigned entries (rejected, counted, and a miss for the caller)."""

import json
import os
import random
import re
import socket
import subprocess
import time

import pytest


def _data(seed, n):
    return random.Random(seed).randbytes(n)


def _stats(cli, dir=None, env=None):
    p = cli("stats", "--json", dir=dir, env=env, check=True)
    return json.loads(p.stdout)


@pytest.fixture
def producer(cli, tmp_path):
    """A store with three entries: small, compressible, over 4 MiB."""
    src = tmp_path / "producer"
    files = tmp_path / "files"
    files.mkdir()
    known = {}
    for i, data in enumerate([_data(1, 100), b"x" * 200000,
                              _data(3, 9 << 20)]):
        f = files / f"f{i}"
        f.write_bytes(data)
        cli("put", f, "--key", f"k{i}", dir=src, check=True)
        known[f"k{i}"] = data
    return src, known


def test_push_then_read_through_and_pull(cli, tmp_path, producer,
                                         redis_server):
    src, known = producer
    p = cli("--remote", redis_server.url, "push", dir=src, check=True,
            text=True)
    assert re.match(r"pushed 3 entries, 3 blobs, \d+ bytes in [0-9.]+ s",
                    p.stdout), p.stdout

    # An empty consumer hits through the remote on its first lookup.
    dst = tmp_path / "consumer"
    for key, data in known.items():
        p = cli("--remote", redis_server.url, "get", "--key", key, dir=dst)
        assert p.returncode == 0, p.stderr
        assert p.stdout == data
    st = _stats(cli, dir=dst)
    assert st["remote_hits"] == 3
    # Now local: no remote needed.
    assert cli("get", "--key", "k2", dir=dst).stdout == known["k2"]
    p = cli("--remote", redis_server.url, "get", "--key", "nope", dir=dst)
    assert p.returncode == 1
    assert _stats(cli, dir=dst)["remote_misses"] == 1

    # pull into a third store, then everything is local.
    third = tmp_path / "third"
    p = cli("pull", "--remote", redis_server.url, dir=third, check=True,
            text=True)
    assert p.stdout.startswith("pulled 3 entries, 3 blobs,"), p.stdout
    for key, data in known.items():
        assert cli("get", "--key", key, dir=third).stdout == data
    p = cli("pull", "--remote", redis_server.url, dir=third, check=True,
            text=True)
    assert p.stdout.startswith("pulled 0 entries"), p.stdout

    # MITHRIL_REMOTE works like --remote.
    fourth = tmp_path / "fourth"
    p = cli("get", "--key", "k0", dir=fourth,
            env={"MITHRIL_REMOTE": redis_server.url})
    assert p.returncode == 0 and p.stdout == known["k0"]


def test_put_queues_for_the_remote(cli, tmp_path, redis_server):
    src = tmp_path / "src"
    f = tmp_path / "f"
    f.write_bytes(_data(9, 5000))
    cli("--remote", redis_server.url, "put", f, "--key", "queued", dir=src,
        check=True)
    # The queue was drained when the command closed its store.
    dst = tmp_path / "dst"
    p = cli("--remote", redis_server.url, "get", "--key", "queued", dir=dst)
    assert p.returncode == 0 and p.stdout == f.read_bytes()

    # A read-only remote is never written.
    f.write_bytes(_data(10, 5000))
    cli("--remote", redis_server.url, "--remote-read-only", "put", f,
        "--key", "ro", dir=src, check=True)
    assert redis_server.cli("EXISTS", "mithril:e:ro").stdout.strip() == b"0"
    p = cli("push", "--remote", redis_server.url, "--remote-read-only",
            dir=src)
    assert p.returncode != 0


def test_export_import(cli, tmp_path, producer):
    src, known = producer
    archive = tmp_path / "a.mtar"
    p = cli("export", archive, dir=src, check=True, text=True)
    assert p.stdout.startswith("exported 3 entries, 3 blobs"), p.stdout
    dst = tmp_path / "dst"
    p = cli("import", archive, dir=dst, check=True, text=True)
    assert p.stdout.startswith("imported 3 entries"), p.stdout
    for key, data in known.items():
        assert cli("get", "--key", key, dir=dst).stdout == data
    assert cli("verify", dir=dst).returncode == 0

    # Truncated: a clear error, and the store stays consistent.
    cut = tmp_path / "cut.mtar"
    raw = archive.read_bytes()
    cut.write_bytes(raw[: len(raw) // 2])
    other = tmp_path / "other"
    p = cli("import", cut, dir=other, text=True)
    assert p.returncode != 0
    assert "truncated" in p.stderr, p.stderr
    assert cli("verify", dir=other).returncode == 0

    # Not an archive.
    junk = tmp_path / "junk"
    junk.write_bytes(b"not an archive at all, no")
    p = cli("import", junk, dir=other, text=True)
    assert p.returncode != 0 and "not a mithril archive" in p.stderr


def test_dead_remote_is_a_miss(cli, tmp_path, producer):
    src, known = producer
    # A port nobody listens on.
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://127.0.0.1:{port}"
    dst = tmp_path / "dst"
    f = tmp_path / "f"
    f.write_bytes(b"local content")
    t0 = time.monotonic()
    p = cli("--remote", url, "put", f, "--key", "local", dir=dst)
    assert p.returncode == 0, p.stderr
    assert cli("--remote", url, "get", "--key", "local",
               dir=dst).stdout == b"local content"
    p = cli("--remote", url, "get", "--key", "k0", dir=dst)
    assert p.returncode == 1
    # A correctness bound (timeouts and breaker apply), not a speed target.
    assert time.monotonic() - t0 < 5
    assert _stats(cli, dir=dst)["remote_errors"] >= 1
    p = cli("--remote", url, "push", dir=src, text=True)
    assert p.returncode != 0 and "push failed" in p.stderr


def test_redis_killed_mid_run(cli, tmp_path, redis_server):
    src = tmp_path / "src"
    files = tmp_path / "files"
    files.mkdir()
    env = {"MITHRIL_REMOTE": redis_server.url}
    for i in range(3):
        f = files / f"f{i}"
        f.write_bytes(_data(20 + i, 3000))
        cli("put", f, "--key", f"a{i}", dir=src, env=env, check=True)
    redis_server.stop()
    t0 = time.monotonic()
    for i in range(3, 8):
        f = files / f"f{i}"
        f.write_bytes(_data(20 + i, 3000))
        cli("put", f, "--key", f"a{i}", dir=src, env=env, check=True)
    for i in range(8):
        p = cli("get", "--key", f"a{i}", dir=src, env=env)
        assert p.returncode == 0
        assert p.stdout == (files / f"f{i}").read_bytes()
    p = cli("get", "--key", "absent", dir=src, env=env)
    assert p.returncode == 1
    assert time.monotonic() - t0 < 10


def _secret_env(secret):
    return {"MITHRIL_SECRET": secret}


def test_tampered_and_unsigned_are_rejected(cli, tmp_path, redis_server):
    src = tmp_path / "src"
    f = tmp_path / "f"
    f.write_bytes(_data(30, 4000))
    cli("put", f, "--key", "signed", dir=src, check=True)
    cli("--remote", redis_server.url, "push", dir=src, check=True,
        env=_secret_env("fleet-secret"))
    entry = redis_server.cli("GET", "mithril:e:signed").stdout
    assert b"\nsig " in entry

    # Good signature: a hit.
    ok = tmp_path / "ok"
    p = cli("--remote", redis_server.url, "get", "--key", "signed", dir=ok,
            env=_secret_env("fleet-secret"))
    assert p.returncode == 0 and p.stdout == f.read_bytes()

    # Tampered in Redis: the item's mode changed, signature kept.
    bad = entry.replace(b" 644 ", b" 755 ", 1)
    assert bad != entry
    assert redis_server.cli("SET", "mithril:e:signed",
                            bad.rstrip(b"\n") + b"\n").returncode == 0
    consumer = tmp_path / "consumer"
    env = _secret_env("fleet-secret")
    p = cli("--remote", redis_server.url, "get", "--key", "signed",
            dir=consumer, env=env)
    assert p.returncode == 1
    assert _stats(cli, dir=consumer)["rejected"] == 1
    p = cli("--remote", redis_server.url, "pull", dir=consumer, env=env,
            text=True)
    assert p.returncode == 0
    assert "1 rejected" in p.stdout, p.stdout
    assert _stats(cli, dir=consumer)["rejected"] == 2

    # Unsigned (pushed without a secret), consumer with one: rejected.
    cli("--remote", redis_server.url, "push", dir=src, check=True)
    assert b"\nsig " not in redis_server.cli("GET",
                                              "mithril:e:signed").stdout
    p = cli("--remote", redis_server.url, "get", "--key", "signed",
            dir=consumer, env=env)
    assert p.returncode == 1
    assert _stats(cli, dir=consumer)["rejected"] == 3
    # Without a secret the consumer takes it.
    p = cli("--remote", redis_server.url, "get", "--key", "signed",
            dir=consumer)
    assert p.returncode == 0 and p.stdout == f.read_bytes()


def test_secret_file_and_signed_archive(cli, tmp_path):
    src = tmp_path / "src"
    f = tmp_path / "f"
    f.write_bytes(_data(40, 1000))
    cli("put", f, "--key", "k", dir=src, check=True)
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    archive = tmp_path / "a.mtar"
    cli("export", archive, dir=src, check=True,
        env={"MITHRIL_SECRET_FILE": str(secret)})
    # Same secret given as text: accepted.
    ok = tmp_path / "ok"
    p = cli("import", archive, dir=ok, env=_secret_env("s3cret"), text=True,
            check=True)
    assert p.stdout.startswith("imported 1 entries"), p.stdout
    # Another secret: rejected, counted, nothing recorded.
    no = tmp_path / "no"
    p = cli("import", archive, dir=no, env=_secret_env("other"), text=True,
            check=True)
    assert "1 rejected" in p.stdout
    assert cli("get", "--key", "k", dir=no).returncode == 1
    assert _stats(cli, dir=no)["rejected"] == 1


def test_unreadable_secret_fails_closed(cli, tmp_path):
    """A secret file that is named but cannot be read: the import trusts
    nothing (unsigned entries rejected, not taken as if no secret were
    set), and an export refuses to write unsigned entries."""
    src = tmp_path / "src"
    f = tmp_path / "f"
    f.write_bytes(_data(41, 1000))
    cli("put", f, "--key", "k", dir=src, check=True)
    archive = tmp_path / "a.mtar"
    cli("export", archive, dir=src, check=True)  # unsigned
    missing = {"MITHRIL_SECRET_FILE": str(tmp_path / "no-such-secret")}
    dst = tmp_path / "dst"
    p = cli("import", archive, dir=dst, env=missing, text=True)
    assert "unusable" in p.stderr, p.stderr
    assert "1 rejected" in p.stdout, p.stdout
    assert cli("get", "--key", "k", dir=dst).returncode == 1
    p = cli("export", tmp_path / "b.mtar", dir=src, env=missing, text=True)
    assert p.returncode != 0
    assert "unusable" in p.stderr, p.stderr
    assert not (tmp_path / "b.mtar").exists()


def _resp(port, *args):
    """One command to Redis over a raw socket (binary-safe both ways)."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        s.sendall(out)
        f = s.makefile("rb")
        line = f.readline()
        if line.startswith(b"$"):
            n = int(line[1:])
            return None if n < 0 else f.read(n + 2)[:-2]
        return line.rstrip(b"\r\n")


def test_pull_large_blobs_and_bad_values(cli, tmp_path, redis_server):
    """Blobs around the sizes where the pull path changes (O_DIRECT from
    256 KiB, inline up to 4 MiB, chunked above), raw and zstd on the wire;
    then a tampered value and an oversized one: rejected one by one, the
    rest of the pull unaffected."""
    rnd = random.Random(7)
    hex_text = "".join(rnd.choice("0123456789abcdef")
                       for _ in range(3 << 20)).encode()
    blobs = {"raw1m": _data(11, (1 << 20) + 7), "text3m": hex_text,
             "raw4m": _data(12, 4 << 20), "raw4m1": _data(13, (4 << 20) + 1),
             "raw300k": _data(14, 300000)}
    src = tmp_path / "src"
    files = tmp_path / "files"
    files.mkdir()
    addr = {}
    for key, data in blobs.items():
        f = files / key
        f.write_bytes(data)
        cli("put", f, "--key", key, dir=src, check=True)
        addr[key] = cli("hash", f, check=True, text=True).stdout.split()[0]
    cli("--remote", redis_server.url, "push", dir=src, check=True)
    wire = _resp(redis_server.port, "GET", "mithril:b:" + addr["text3m"])
    assert wire[:4] == b"MB1z" and len(wire) < len(hex_text)

    dst = tmp_path / "dst"
    p = cli("pull", "--remote", redis_server.url, dir=dst, check=True,
            text=True)
    assert p.stdout.startswith("pulled 5 entries, 5 blobs,"), p.stdout
    for key, data in blobs.items():
        assert cli("get", "--key", key, dir=dst).stdout == data
        size = os.path.getsize(dst / "blobs" / addr[key][:2] /
                               addr[key][2:4] / addr[key])
        if key == "text3m":
            assert size == len(wire)  # a 16-byte header, the same frame
        elif key != "raw4m1":
            assert size == 16 + len(data)
    assert cli("verify", dir=dst).returncode == 0

    # One byte changed in a large raw value, and a value too large to be
    # one of ours where an inline one should be.
    v = bytearray(_resp(redis_server.port, "GET", "mithril:b:" +
                        addr["raw1m"]))
    v[len(v) // 2] ^= 0x40
    _resp(redis_server.port, "SET", "mithril:b:" + addr["raw1m"], bytes(v))
    _resp(redis_server.port, "SET", "mithril:b:" + addr["raw300k"],
          b"MB1r" + bytes(5 << 20))
    third = tmp_path / "third"
    p = cli("pull", "--remote", redis_server.url, dir=third, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("pulled 3 entries, 3 blobs,"), p.stdout
    assert "1 rejected" in p.stdout, p.stdout
    for key, data in blobs.items():
        got = cli("get", "--key", key, dir=third)
        if key in ("raw1m", "raw300k"):
            assert got.returncode == 1
        else:
            assert got.returncode == 0 and got.stdout == data
    assert _stats(cli, dir=third)["rejected"] == 1
    assert cli("verify", dir=third).returncode == 0




def test_redis_cluster(cli, tmp_path, producer, redis_cluster):
    """A real three-node Redis Cluster as the remote, named by a node that
    does not serve the listing set (so the first command is redirected):
    push spreads the keys over the nodes, a consumer pulls every entry
    byte for byte, another reads one through on a local miss, an entry in
    a migrating slot (ASK) is a miss while the rest still arrive, and a
    dead node turns into a bounded remote failure, never a wrong byte."""
    src, known = producer
    other = next(n for n in redis_cluster if n.cli(
        "type", "mithril:entries").stdout.startswith(b"MOVED"))
    p = cli("push", "--remote", other.url, dir=src, text=True)
    assert p.returncode == 0, p.stderr
    assert "3 entries" in p.stdout + p.stderr, p.stdout + p.stderr
    sizes = [int(n.cli("dbsize").stdout) for n in redis_cluster]
    assert all(k > 0 for k in sizes), sizes

    consumer = tmp_path / "consumer"
    p = cli("pull", "--remote", other.url, dir=consumer, text=True)
    assert p.returncode == 0, p.stderr
    for key, data in known.items():
        out = tmp_path / "out"
        cli("get", "--key", key, "-o", out, dir=consumer, check=True)
        assert out.read_bytes() == data

    # Read-through: a local miss asks the cluster for that entry alone.
    reader = tmp_path / "reader"
    got = cli("get", "--key", "k2", "--remote", other.url, dir=reader)
    assert got.returncode == 0 and got.stdout == known["k2"]

    # A slot in migration: the entry moved off its node answers ASK there,
    # a miss for now; the other entries still come, the pull succeeds.
    ekey = "mithril:e:k0"
    slot = int(other.cli("cluster", "keyslot", ekey).stdout)
    src_node = next(n for n in redis_cluster
                    if not n.cli("get", ekey).stdout.startswith(b"MOVED"))
    dst_node = next(n for n in redis_cluster if n is not src_node)
    ids = {n.port: n.cli("cluster", "myid").stdout.decode().strip()
           for n in redis_cluster}
    assert dst_node.cli("cluster", "setslot", slot, "importing",
                        ids[src_node.port]).stdout.startswith(b"OK")
    assert src_node.cli("cluster", "setslot", slot, "migrating",
                        ids[dst_node.port]).stdout.startswith(b"OK")
    src_node.cli("del", ekey)
    assert src_node.cli("get", ekey).stdout.startswith(b"ASK")
    moving = tmp_path / "moving"
    p = cli("pull", "--remote", other.url, dir=moving, text=True)
    assert p.returncode == 0, p.stderr
    assert cli("get", "--key", "k0", dir=moving).returncode == 1
    for key in ("k1", "k2"):
        got = cli("get", "--key", key, dir=moving)
        assert got.returncode == 0 and got.stdout == known[key]

    # A node killed: what it served is a remote failure, bounded in time.
    redis_cluster[0].stop()
    t0 = time.time()
    p = cli("pull", "--remote", redis_cluster[1].url,
            dir=tmp_path / "late", text=True)
    assert time.time() - t0 < 10
    assert p.returncode in (0, 3), p.stderr
    for key, data in known.items():
        got = cli("get", "--key", key, dir=tmp_path / "late")
        assert got.returncode in (0, 1)
        if got.returncode == 0:
            assert got.stdout == data
