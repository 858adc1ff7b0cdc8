"""mithril_cache's thin layer in-process, with a real torch but no
compile: the toolchain text, the graph text and keys of the backend, the
pip entry point's binary lookup."""

import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")

import mithril_cache  # noqa: E402
from mithril_cache import _native, cli  # noqa: E402
from mithril_cache.toolchain import toolchain_text  # noqa: E402

# The module (mithril_cache.backend, the attribute, is the function).
be_mod = importlib.import_module("mithril_cache.backend")


def test_toolchain_text_format(monkeypatch):
    monkeypatch.delenv("MITHRIL_TOOLCHAIN", raising=False)
    text = toolchain_text()
    m = re.fullmatch(r"torch=(\S+) triton=(\S+) python=(\d+\.\d+) "
                     r"device=(\S+)", text)
    assert m, text
    assert m.group(1) == torch.__version__
    assert m.group(1) == importlib.metadata.version("torch")
    assert m.group(3) == "%d.%d" % sys.version_info[:2]
    assert m.group(4) == _native.device_detect()


def test_toolchain_text_follows_mithril_run(monkeypatch):
    monkeypatch.setenv("MITHRIL_TOOLCHAIN", "torch=x triton=none "
                       "python=3.0 device=cpu")
    assert toolchain_text() == "torch=x triton=none python=3.0 device=cpu"
    assert toolchain_text(use_env=False) != os.environ["MITHRIL_TOOLCHAIN"]


def _traced(width, seed=0):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(8, width), torch.nn.ReLU())
    return torch.fx.symbolic_trace(m)


def test_blake3_matches_b3sum(tmp_path):
    b3sum = shutil.which("b3sum")
    if not b3sum:
        pytest.skip("b3sum not installed")
    from mithril_cache import _native
    for n in (0, 1, 64, 1024, 1025, 4097):
        data = bytes((i * 7 + n) & 0xFF for i in range(n))
        path = tmp_path / ("d%d" % n)
        path.write_bytes(data)
        want = subprocess.run([b3sum, "--no-names", str(path)],
                              capture_output=True, text=True,
                              check=True).stdout.strip()
        assert _native.blake3(data) == want
        assert be_mod.blake3_hex(data) == want


def test_graph_key_is_stable_and_discriminates():
    tc = "torch=t triton=none python=3.11 device=cpu:avx2"
    x4, x6 = torch.randn(4, 8), torch.randn(6, 8)
    a = be_mod.graph_key(_traced(16), [x4], tc)
    # Another instance, other weights, other object ids: the same key.
    assert be_mod.graph_key(_traced(16, seed=3), [x4], tc) == a
    assert re.fullmatch(r"[0-9a-f]{64}", a)
    others = {
        be_mod.graph_key(_traced(16), [x6], tc),      # input shape
        be_mod.graph_key(_traced(32), [x4], tc),      # parameter shape
        be_mod.graph_key(_traced(16), [x4.double()], tc),  # dtype
        be_mod.graph_key(_traced(16), [x4], tc + "x"),  # toolchain
    }
    assert a not in others and len(others) == 4
    with torch.no_grad():
        assert be_mod.graph_key(_traced(16), [x4], tc) != a  # grad mode


def test_graph_text_has_no_addresses():
    text = be_mod.graph_text(_traced(16), [torch.randn(4, 8)])
    assert not re.search(r"0x[0-9a-f]{6,}", text), text
    assert "param 0.weight tensor float32 [16,8]" in text


def test_disabled_manager_changes_nothing(monkeypatch):
    monkeypatch.setenv("MITHRIL_DISABLE", "1")
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    # The one warning (if this process has not given it yet) is expected;
    # the reason is checked on the Manager.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mgr = mithril_cache.enable(dir="/nonexistent/never")
    assert not mgr.enabled and "MITHRIL_DISABLE" in mgr.reason
    assert mgr.flush() == {} and mgr.inductor_dir() is None
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR") == before
    assert mgr.stats() == {"enabled": False, "reason": mgr.reason}


def test_cli_finds_a_binary(tmp_path, monkeypatch):
    exe = tmp_path / "mithril"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    bundled = os.path.join(os.path.dirname(cli.__file__), "bin", "mithril")
    found = cli.find_binary()
    assert found in (bundled, str(exe))
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    if not os.access(bundled, os.X_OK):
        assert cli.find_binary() is None
