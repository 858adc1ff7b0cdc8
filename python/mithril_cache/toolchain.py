"""The toolchain fingerprint: which torch, Triton, Python and device class
produced a set of artifacts.

Artifacts compiled by one toolchain are useless (or worse) to another, so
every entry mithril records for torch is tagged with this text and restored
only into a process whose text is identical. The text is:

    torch=<ver> triton=<ver|none> python=<major.minor> device=<class>

with these exact rules, shared with the C side (`mithril run` computes the
same text without importing torch, by running a short `python -c` snippet
in the target interpreter; both must agree byte for byte):

- torch: ``importlib.metadata.version("torch")`` (the installed
  distribution's version, e.g. ``2.13.0+cpu``; equal to
  ``torch.__version__``), or ``none`` if torch is not installed.
- triton: ``importlib.metadata.version("triton")``, else
  ``importlib.metadata.version("pytorch-triton")``, else ``none``.
- python: ``sys.version_info`` major and minor joined by a dot (``3.11``).
- device: ``mithril_cache._native.device_detect()``, the library's device
  class for this machine (``cpu:avx2``, ``cuda:9.0``, ...). The C side
  calls ``mithril_device_detect`` directly.

Fields are separated by single spaces, in the order above. When the
environment carries MITHRIL_TOOLCHAIN (set by `mithril run` for its child)
that text is used as is, so a process started by `mithril run` tags its
entries exactly as the run command restores and captures them.
"""

import importlib.metadata
import os
import sys

from . import _native

#: Distributions tried, in order, for the triton field.
TRITON_DISTS = ("triton", "pytorch-triton")


def _dist_version(names):
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "none"


def toolchain_text(use_env=True):
    """Return the toolchain fingerprint text of this process.

    use_env: when true (the default) and MITHRIL_TOOLCHAIN is set and not
    empty, return it unchanged; otherwise compute the text from the
    installed distributions, the interpreter and the device (see the module
    documentation for the exact rules). Never imports torch.
    """
    if use_env:
        env = os.environ.get("MITHRIL_TOOLCHAIN", "")
        if env:
            return env
    torch_ver = _dist_version(("torch",))
    triton_ver = _dist_version(TRITON_DISTS)
    py = "%d.%d" % (sys.version_info[0], sys.version_info[1])
    device = _native.device_detect()
    return "torch=%s triton=%s python=%s device=%s" % (
        torch_ver, triton_ver, py, device)


def device_class():
    """Return this machine's device class text (``cpu:avx2``, ...)."""
    return _native.device_detect()
