"""mithril_cache.Store: the blob methods from Python against a real store
folder, the error types, and many threads sharing one Store."""

import os
import random
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest

import mithril_cache
from mithril_cache import (CorruptError, Error, InvalidError, NotFoundError,
                           Store)


def _blob(store, addr):
    return Path(store.path) / "blobs" / addr[:2] / addr[2:4] / addr


def _b3(data, tmp_path):
    exe = shutil.which("b3sum")
    if not exe:
        pytest.skip("b3sum not installed")
    return subprocess.run([exe, "--no-names"], input=data, check=True,
                          capture_output=True).stdout.decode().strip()


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "store") as s:
        yield s


@pytest.mark.parametrize("size", [0, 1, 33, 4096, 1 << 20, (2 << 20) + 3])
def test_put_get_roundtrip(store, tmp_path, size):
    data = random.Random(size).randbytes(size // 2) + b"x" * (size - size // 2)
    addr = store.put(data)
    assert addr == _b3(data, tmp_path)
    assert store.exists(addr) is True
    assert store.get(addr) == data


def test_bytes_like_inputs(store):
    np = pytest.importorskip("numpy")
    data = b"0123456789" * 1000
    a = store.put(data)
    assert store.put(bytearray(data)) == a
    assert store.put(memoryview(data)) == a
    arr = np.frombuffer(data, dtype=np.uint8).copy()
    assert store.put(arr) == a
    with pytest.raises(TypeError):
        store.put("text is not bytes")


def test_put_file_get_file(store, tmp_path):
    src = tmp_path / "kernel.so"
    src.write_bytes(os.urandom(300000))
    addr = store.put_file(src)
    assert store.put_file(str(src)) == addr
    out = tmp_path / "out.so"
    store.get_file(addr, out, mode=0o755)
    assert out.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    store.get_file(addr, str(out))
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    with pytest.raises(Error):
        store.put_file(tmp_path / "missing")


def test_blob_info(store):
    text = b"def f(x): return x + 1\n" * 5000
    a = store.put(text)
    info = store.blob_info(a)
    assert info["logical_size"] == len(text)
    assert info["compressed"] is True
    assert info["stored_size"] < len(text)
    noise = os.urandom(5000)
    info = store.blob_info(store.put(noise))
    assert info == {"logical_size": 5000, "stored_size": 5016,
                    "compressed": False}


def test_delete_and_not_found(store):
    a = store.put(b"gone soon")
    store.delete(a)
    assert store.exists(a) is False
    with pytest.raises(NotFoundError):
        store.get(a)
    with pytest.raises(KeyError):
        store.delete(a)
    with pytest.raises(NotFoundError):
        store.blob_info(a)


@pytest.mark.parametrize("bad", ["../x", "A" * 64, "a" * 63, "a" * 65,
                                 "ab/" + "a" * 61, ""])
def test_invalid_addresses(store, bad):
    for call in (store.get, store.exists, store.delete, store.blob_info):
        with pytest.raises(InvalidError):
            call(bad)
        with pytest.raises(ValueError):
            call(bad)
    with pytest.raises(TypeError):
        store.get(b"a" * 64)


def test_corrupt_blob_raises_and_is_quarantined(store, tmp_path):
    data = b"tensor(" * 50000
    a = store.put(data)
    blob = _blob(store, a)
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    blob.write_bytes(bytes(raw))
    with pytest.raises(CorruptError) as exc:
        store.get(a)
    assert a in str(exc.value)
    assert not blob.exists()
    assert any(p.name.startswith(a) for p in
               (Path(store.path) / "quarantine").iterdir())
    assert store.exists(a) is False
    # Putting it again repairs it.
    assert store.put(data) == a
    assert store.get(a) == data

    # get_file never writes a corrupt file.
    raw = bytearray(_blob(store, a).read_bytes())
    raw[20] ^= 0x01
    _blob(store, a).write_bytes(bytes(raw))
    out = tmp_path / "never"
    with pytest.raises(CorruptError):
        store.get_file(a, out)
    assert not out.exists()


def test_verify_off_still_checks_header(store):
    data = os.urandom(2000)
    a = store.put(data)
    blob = _blob(store, a)
    raw = bytearray(blob.read_bytes())
    raw[100] ^= 0x01
    blob.write_bytes(bytes(raw))
    store.set_verify(False)
    assert store.get(a) != data
    raw[0] ^= 0x01
    blob.write_bytes(bytes(raw))
    with pytest.raises(CorruptError):
        store.get(a)


def test_lifecycle(tmp_path):
    d = tmp_path / "s"
    s = Store(d)
    assert s.path == str(d.resolve())
    assert s.dir == s.path
    assert not s.closed
    assert "Store" in repr(s)
    a = s.put(b"abc")
    s.close()
    assert s.closed
    s.close()  # twice is fine
    with pytest.raises(Error):
        s.get(a)
    with Store(d, create=False) as s2:
        assert s2.get(a) == b"abc"
    with pytest.raises(Error):
        Store(tmp_path / "absent", create=False)
    assert issubclass(NotFoundError, KeyError)
    assert mithril_cache.Store is Store


def test_read_only(tmp_path):
    d = tmp_path / "s"
    with Store(d) as s:
        a = s.put(b"kept")
    with Store(d, read_only=True) as ro:
        assert ro.get(a) == b"kept"
        with pytest.raises(Error):
            ro.put(b"new")
        with pytest.raises(Error):
            ro.delete(a)


def test_unsafe_folder_refused(tmp_path):
    d = tmp_path / "s"
    Store(d).close()
    os.chmod(d, 0o777)
    with pytest.raises(Error) as exc:
        Store(d)
    assert "unsafe" in str(exc.value)
    os.chmod(d, 0o700)
    Store(d).close()


def test_threads_share_one_store(store):
    errors = []
    shared = [random.Random(i).randbytes(50000) + b"z" * 50000
              for i in range(8)]

    def work(tid):
        rnd = random.Random(tid)
        try:
            for i in range(60):
                if i % 2:
                    data = shared[rnd.randrange(len(shared))]
                else:
                    data = rnd.randbytes(rnd.randrange(1, 300000))
                a = store.put(data)
                if store.get(a) != data:
                    errors.append(f"thread {tid}: wrong bytes")
                if not store.exists(a):
                    errors.append(f"thread {tid}: missing")
        except Exception as e:  # noqa: BLE001 - collected for the assert
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert list((Path(store.path) / "tmp").iterdir()) == []


def test_close_while_threads_run(tmp_path):
    s = Store(tmp_path / "s")
    data = os.urandom(400000)
    a = s.put(data)
    seen = []
    start = threading.Barrier(5)

    def reader():
        start.wait()
        for _ in range(200):
            try:
                if s.get(a) != data:
                    seen.append("wrong bytes")
            except Error as e:
                if "closed" not in str(e):
                    seen.append(repr(e))
                return

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    start.wait()
    s.close()
    for t in threads:
        t.join()
    assert seen == []
    assert s.closed
