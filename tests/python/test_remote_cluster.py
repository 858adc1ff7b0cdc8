"""Read-through from a real three-node Redis Cluster whose slots move while
a process holds the slot map: the blob GET that the old owner answers with
MOVED is tried again on the map loaded anew, and the entry arrives byte
for byte. Blob replies on a cluster are read straight off each node's
socket (one stage per node), so this is the redirect in that reader."""

import random
import re

import pytest

from mithril_cache import _native


def _moved_count(node):
    info = node.cli("info", "errorstats").stdout.decode()
    m = re.search(r"errorstat_MOVED:count=(\d+)", info)
    return int(m.group(1)) if m else 0


def _owner(nodes, key):
    return next(n for n in nodes
                if not n.cli("get", key).stdout.startswith(b"MOVED"))


def _move_slot(nodes, slot, src, dst):
    ids = {n.port: n.cli("cluster", "myid").stdout.decode().strip()
           for n in nodes}
    assert dst.cli("cluster", "setslot", slot, "importing",
                   ids[src.port]).stdout.startswith(b"OK")
    assert src.cli("cluster", "setslot", slot, "migrating",
                   ids[dst.port]).stdout.startswith(b"OK")
    keys = src.cli("cluster", "getkeysinslot", slot,
                   1000).stdout.decode().split()
    for k in keys:
        p = src.cli("migrate", "127.0.0.1", dst.port, k, 0, 5000)
        assert p.stdout.startswith(b"OK"), p.stdout + p.stderr
    for n in nodes:
        assert n.cli("cluster", "setslot", slot, "node",
                     ids[dst.port]).stdout.startswith(b"OK")


@pytest.fixture
def pushed(tmp_path, redis_cluster):
    """Eight entries of one inline blob each, pushed to the cluster."""
    producer = _native.Store(str(tmp_path / "producer"))
    data = {}
    addrs = {}
    for i in range(8):
        d = random.Random(i).randbytes(3000 + 500 * i)
        addrs[f"k{i}"] = producer.put(d)
        _native.entry_put(producer, f"k{i}",
                          [(f"f{i}.bin", addrs[f"k{i}"], len(d), 0o644)], "")
        data[f"k{i}"] = d
    _native.set_remote(producer, redis_cluster[0].url)
    _native.push(producer)
    producer.close()
    return data, addrs


def test_blob_moved_under_a_loaded_map(tmp_path, redis_cluster, pushed):
    data, addrs = pushed
    nodes = redis_cluster
    bkey = f"mithril:b:{addrs['k1']}"
    src = _owner(nodes, bkey)
    dst = next(n for n in nodes if n is not src)
    slot = int(src.cli("cluster", "keyslot", bkey).stdout)
    assert int(src.cli("cluster", "keyslot", "mithril:e:k1").stdout) != slot

    # The consumer names the blob's owner; reading an entry whose key lives
    # elsewhere is redirected, which loads the slot map.
    consumer = _native.Store(str(tmp_path / "consumer"))
    _native.set_remote(consumer, src.url)
    first = next(k for k in data if k != "k1" and
                 _owner(nodes, f"mithril:e:{k}") is not src)
    e = _native.entry_get(consumer, first)
    assert consumer.get(e["items"][0]["addr"]) == data[first]

    # The blob's slot moves; the consumer's map still says src.
    _move_slot(nodes, slot, src, dst)
    assert src.cli("get", bkey).stdout.startswith(b"MOVED")
    assert dst.cli("exists", bkey).stdout.strip() == b"1"
    moved = _moved_count(src)

    e = _native.entry_get(consumer, "k1")
    assert e["items"][0]["addr"] == addrs["k1"]
    assert consumer.get(addrs["k1"]) == data["k1"]
    assert _moved_count(src) > moved, "the blob GET was never redirected"

    # Everything else still reads through, byte for byte.
    for k, d in data.items():
        e = _native.entry_get(consumer, k)
        assert consumer.get(e["items"][0]["addr"]) == d
    st = _native.stats(consumer)
    assert st["remote_hits"] == len(data) and st["remote_errors"] == 0
    consumer.close()
