"""The key functions of mithril_cache._native: storage_key agrees with the
`mithril key` command and the pinned known answer; every torch dtype is
accepted; malformed arguments raise InvalidError or TypeError; device,
ISA and size helpers; config(store) reports values and sources."""

import os
import subprocess

import pytest

from mithril_cache import _native

GRAPH = bytes(range(32))
KNOWN = "01d9adff8c1dcf8ebb66bc492b51d209da7c34f18d0520851629b0372220ea64"


def test_known_answer_all_forms():
    assert _native.storage_key(GRAPH, [("float32", [8, None]),
                                       ("int64", [])],
                               "cuda:9.0", "t=1") == KNOWN
    assert _native.storage_key(GRAPH.hex(), ["float:8,?", "long:"],
                               "cuda:9.0", toolchain="t=1") == KNOWN
    assert _native.storage_key(GRAPH.hex().upper(), (("half", (1,)),),
                               "cpu") == _native.storage_key(
        GRAPH, [("float16", [1])], "cpu", "")


def test_matches_cli(mithril_bin):
    tool = "torch=2.13 triton=3.5"
    args = [mithril_bin, "key", "--graph", GRAPH.hex(), "--input",
            "bfloat16:4,?,2", "--input", "int32:", "--device", "cpu:avx2",
            "--toolchain", tool]
    cli = subprocess.run(args, capture_output=True, text=True, check=True)
    py = _native.storage_key(GRAPH, [("bfloat16", [4, None, 2]),
                                     ("int32", [])], "cpu:avx2", tool)
    assert cli.stdout.strip() == py


def test_every_torch_dtype_and_shape():
    torch = pytest.importorskip("torch")
    dtypes = {getattr(torch, a) for a in dir(torch)
              if isinstance(getattr(torch, a), torch.dtype)}
    keys = set()
    for dt in dtypes:
        keys.add(_native.storage_key(GRAPH, [(str(dt), torch.Size([2, 3]))],
                                     "cpu"))
    # Aliases (torch.float is torch.float32) collapse; names do not.
    assert len(keys) == len({str(d) for d in dtypes})


@pytest.mark.parametrize("inputs", [
    [("float33", [1])],
    [("float32", [-2])],
    [("float32", [1 << 70])],
    [("float32", [1] * 65)],
    ["float32:8,"],
    ["float32"],
])
def test_invalid_inputs(inputs):
    with pytest.raises(_native.InvalidError):
        _native.storage_key(GRAPH, inputs, "cpu")


@pytest.mark.parametrize("inputs", [
    "float32:1",
    [("float32", ["a"])],
    [("float32", [True])],
    [(1, [1])],
    [("float32", "8,16")],
    [("float32",)],
    [42],
])
def test_wrong_types(inputs):
    with pytest.raises(TypeError):
        _native.storage_key(GRAPH, inputs, "cpu")


def test_invalid_graph_and_device():
    with pytest.raises(_native.InvalidError):
        _native.storage_key(b"short", [], "cpu")
    with pytest.raises(_native.InvalidError):
        _native.storage_key("zz" * 32, [], "cpu")
    with pytest.raises(TypeError):
        _native.storage_key(123, [], "cpu")
    for bad in ["gpu", "cuda:8", "cpu:avx3", ""]:
        with pytest.raises(_native.InvalidError):
            _native.storage_key(GRAPH, [], bad)
    with pytest.raises(ValueError):
        _native.storage_key(GRAPH, [], "gpu")


def test_device_helpers():
    dev = _native.device_detect()
    isa = _native.cpu_isa()
    assert dev.startswith("cuda:") or dev == "cpu:" + isa
    assert _native.storage_key(GRAPH, [], "auto") == _native.storage_key(
        GRAPH, [], dev)


def test_parse_size():
    assert _native.parse_size("1.5G") == 3 << 29
    assert _native.parse_size("64KiB") == 64 << 10
    assert _native.parse_size("123") == 123
    for bad in ["", "-1G", "10X", "1.5"]:
        with pytest.raises(_native.InvalidError):
            _native.parse_size(bad)
    with pytest.raises(TypeError):
        _native.parse_size(10)


def test_config(tmp_path, monkeypatch):
    if not hasattr(_native, "Store"):
        pytest.skip("mithril_cache._native.Store is not built yet")
    for var in list(os.environ):
        if var.startswith("MITHRIL_"):
            monkeypatch.delenv(var)
    d = tmp_path / "store"
    d.mkdir(mode=0o700)
    (d / "config").write_text("compression = 6\n")
    monkeypatch.setenv("MITHRIL_MAX_SIZE", "2G")
    store = _native.Store(str(d), create=True)
    conf = _native.config(store)
    assert conf["max_size"] == ("2147483648 (2.0G)", "env")
    assert conf["compression"] == ("6", "file")
    assert conf["verify"] == ("on", "default")
    assert conf["secret"] == ("unset", "default")
    assert conf["dir"][0] == os.path.realpath(d)
    with pytest.raises(TypeError):
        _native.config("not a store")
