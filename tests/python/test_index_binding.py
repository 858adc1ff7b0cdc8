"""The index functions of mithril_cache._native against a real store:
entries, counters, eviction, verification, and threads sharing a Store."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mithril_cache import _native


@pytest.fixture
def store(tmp_path):
    s = _native.Store(str(tmp_path / "store"))
    yield s
    s.close()


def put_entry(store, key, data, name="a/file.bin", meta=""):
    addr = store.put(data)
    _native.entry_put(store, key, [(name, addr, len(data), 0o644)], meta)
    return addr


def test_put_get_peek_delete(store):
    addr = put_entry(store, "k1", b"hello index", meta="tc=abc")
    e = _native.entry_peek(store, "k1")
    assert e["key"] == "k1" and e["meta"] == "tc=abc" and e["hits"] == 0
    assert e["items"] == [{"name": "a/file.bin", "addr": addr, "size": 11,
                           "mode": 0o644}]
    e = _native.entry_get(store, "k1")
    assert e["hits"] == 1
    assert e["last_access_ns"] >= e["created_ns"]
    with pytest.raises(_native.NotFoundError):
        _native.entry_get(store, "absent")
    with pytest.raises(KeyError):
        _native.entry_get(store, "absent")
    st = _native.stats(store)
    assert st["hits"] == 1 and st["misses"] == 2 and st["entries"] == 1
    _native.entry_delete(store, "k1")
    with pytest.raises(_native.NotFoundError):
        _native.entry_peek(store, "k1")
    assert not store.exists(addr)


def test_invalid_arguments(store):
    addr = store.put(b"x")
    with pytest.raises(_native.InvalidError):
        _native.entry_put(store, "bad key", [("n", addr, 1, 0o644)])
    with pytest.raises(ValueError):
        _native.entry_put(store, "k", [("../escape", addr, 1, 0o644)])
    with pytest.raises(TypeError):
        _native.entry_put(store, "k", [("n", addr)])
    with pytest.raises(TypeError):
        _native.entry_get("not a store", "k")
    with pytest.raises(_native.NotFoundError):
        _native.entry_put(store, "k", [("n", "0" * 64, 1, 0o644)])
    with pytest.raises(_native.InvalidError):
        _native.stats_add(store, "nonsense")


def test_entries_order_and_counters(store):
    for k in ("a", "b", "c"):
        put_entry(store, k, k.encode() * 10)
    _native.entry_get(store, "a")
    assert [e["key"] for e in _native.entries(store)] == ["b", "c", "a"]
    _native.stats_zero(store)
    _native.stats_add(store, "graph_hit")
    _native.stats_add(store, "graph_miss", 4)
    _native.stats_add(store, "remote_errors", n=2)
    st = _native.stats(store)
    assert st["graph_hits"] == 1 and st["graph_misses"] == 4
    assert st["remote_errors"] == 2 and st["hits"] == 0


def test_gc_and_verify(store, tmp_path):
    for i in range(8):
        put_entry(store, f"e{i}", os.urandom(100_000))
    _native.entry_get(store, "e0")
    r = _native.gc(store, 450_000)
    assert r["size_after"] <= 450_000
    assert r["entries_removed"] == 4
    keys = [e["key"] for e in _native.entries(store)]
    assert "e0" in keys and "e1" not in keys

    v = _native.verify(store)
    assert v["blobs_corrupt"] == 0 and v["problems"] == []
    addr = _native.entry_peek(store, "e7")["items"][0]["addr"]
    blob = Path(tmp_path / "store" / "blobs" / addr[:2] / addr[2:4] / addr)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    v = _native.verify(store)
    assert v["blobs_corrupt"] == 1 and v["entries_broken"] == 1
    assert any(addr == which for _, which in v["problems"])
    with pytest.raises(_native.NotFoundError):
        _native.entry_peek(store, "e7")
    _native.flush(store)


def test_threads_share_a_store(store):
    addr = put_entry(store, "shared", b"shared content")
    errors = []

    def worker(n):
        try:
            for i in range(200):
                _native.entry_get(store, "shared")
                _native.entry_put(store, f"t{n}-{i % 5}",
                                  [("f", addr, 14, 0o644)])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _native.flush(store)
    e = _native.entry_peek(store, "shared")
    assert e["hits"] == 800
    assert _native.stats(store)["entries"] == 21


CLOSE_RACE = r'''
import os, sys, threading, time
from mithril_cache import _native

s = _native.Store(sys.argv[1])
for i in range(300):
    data = os.urandom(2000 + i)
    addr = s.put(data)
    _native.entry_put(s, "k%d" % i, [("f%d" % i, addr, len(data), 0o644)])
problems = []
start = threading.Barrier(5)

def work(n):
    start.wait()
    calls = [lambda: _native.entry_get(s, "k%d" % n),
             lambda: _native.entries(s),
             lambda: _native.verify(s),
             lambda: _native.stats(store=s)]
    for _ in range(400):
        try:
            calls[n % 4]()
        except _native.Error as e:
            if "closed" not in str(e):
                problems.append(repr(e))
            return

threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
for t in threads:
    t.start()
start.wait()
time.sleep(0.05)
s.close()
for t in threads:
    t.join()
print("OK" if not problems and s.closed else problems)
'''


def test_close_while_module_functions_run(tmp_path):
    # Module functions (not Store methods) also keep the handle alive until
    # they return; a freed handle would crash the child.
    script = tmp_path / "race.py"
    script.write_text(CLOSE_RACE)
    p = subprocess.run([sys.executable, str(script), str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ))
    assert p.returncode == 0, (p.returncode, p.stderr[-3000:])
    assert p.stdout.strip() == "OK", p.stdout
