"""Untrusted input from a Redis remote, written into Redis by hand the way
an attacker with write access to it could: entries whose item names
escape the working folder, and unsigned entries offered to a store that
has a secret. Nothing may be recorded or written outside the working
folder, and every refusal is counted."""

import json
import os
import struct
import subprocess



def blake3_hex(data):
    p = subprocess.run(["b3sum", "--no-names"], input=data,
                       capture_output=True, check=True)
    return p.stdout.split()[0].decode()


def _wire(key, items, meta=""):
    s = (f"mithril-entry 1\nkey {len(key)} {key}\nmeta {len(meta)} {meta}\n"
         f"items {len(items)}\n")
    for addr, size, name in items:
        s += f"item {addr} {size} 644 {len(name)} {name}\n"
    return (s + "end\n").encode()


def _offer(redis_server, key, name, content):
    """Put one raw blob and one entry naming it into Redis."""
    addr = blake3_hex(content)
    header = b"MB1r" + struct.pack("<QI", len(content), 0)
    rc = subprocess.run(["redis-cli", "-p", str(redis_server.port), "-x",
                         "SET", f"mithril:b:{addr}"],
                        input=header + content, capture_output=True)
    assert rc.returncode == 0, rc.stderr
    rc = subprocess.run(["redis-cli", "-p", str(redis_server.port), "-x",
                         "SET", f"mithril:e:{key}"],
                        input=_wire(key, [(addr, len(content), name)]),
                        capture_output=True)
    assert rc.returncode == 0, rc.stderr
    redis_server.cli("SADD", "mithril:entries", key)


def _env(extra=None):
    e = dict(os.environ)
    for n in ("MITHRIL_DIR", "MITHRIL_REMOTE", "MITHRIL_SECRET",
              "MITHRIL_SECRET_FILE"):
        e.pop(n, None)
    e.update(extra or {})
    return e


def _mithril(mithril_bin, store, *args, env=None):
    return subprocess.run([mithril_bin, "--dir", str(store),
                           *map(str, args)], capture_output=True,
                          env=_env(env))


def _stats(mithril_bin, store):
    p = _mithril(mithril_bin, store, "stats", "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_escaping_names_from_redis_are_refused(mithril_bin, tmp_path,
                                               redis_server):
    names = ["../outside.txt", "/tmp/mithril-abs-escape.txt",
             "inductor/../../outside2.txt", "a//b", "a/./b", ""]
    for i, name in enumerate(names):
        _offer(redis_server, f"evil/{i}", name, f"payload {i}\n".encode())
    store = tmp_path / "store"
    work = tmp_path / "work"
    pulled = _mithril(mithril_bin, store, "--remote", redis_server.url,
                      "pull")
    for i in range(len(names)):
        g = _mithril(mithril_bin, store, "--remote", redis_server.url,
                     "get", "--key", f"evil/{i}")
        assert g.returncode == 1, (names[i], g.stdout, g.stderr)
    r = _mithril(mithril_bin, store, "restore", "--work-dir", work)
    assert r.returncode in (0, 1), r.stderr
    assert not (tmp_path / "outside.txt").exists()
    assert not (tmp_path / "outside2.txt").exists()
    assert not os.path.exists("/tmp/mithril-abs-escape.txt")
    ls = json.loads(_mithril(mithril_bin, store, "ls", "--json").stdout)
    assert ls == [], (ls, pulled.stdout, pulled.stderr)
    assert _stats(mithril_bin, store)["rejected"] >= len(names)
    # Control: the same offer with a safe name is taken.
    _offer(redis_server, "good/1", "inductor/ok.txt", b"fine\n")
    g = _mithril(mithril_bin, store, "--remote", redis_server.url, "get",
                 "--key", "good/1")
    assert g.returncode == 0 and g.stdout == b"fine\n", g.stderr


def test_signed_store_refuses_unsigned_entries(mithril_bin, tmp_path,
                                               redis_server):
    _offer(redis_server, "plain/1", "inductor/a.py", b"print('hello')\n")
    secret = {"MITHRIL_SECRET": "correct horse battery staple"}
    signed = tmp_path / "signed"
    p = _mithril(mithril_bin, signed, "--remote", redis_server.url, "pull",
                 env=secret)
    g = _mithril(mithril_bin, signed, "--remote", redis_server.url, "get",
                 "--key", "plain/1", env=secret)
    assert g.returncode == 1, (p.stderr, g.stdout, g.stderr)
    assert _stats(mithril_bin, signed)["rejected"] >= 1
    # The same entry is accepted by a store without a secret: the refusal
    # above came from the signature rule, not from a broken offer.
    plain = tmp_path / "plain"
    g = _mithril(mithril_bin, plain, "--remote", redis_server.url, "get",
                 "--key", "plain/1")
    assert g.returncode == 0 and g.stdout == b"print('hello')\n", g.stderr
