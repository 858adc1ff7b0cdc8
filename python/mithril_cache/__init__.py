"""mithril_cache: a content-addressed cache for torch.compile artifacts.

The C core (mithril_cache._native) holds the store, its index and the
capture/restore of torch's cache folders; this package is the thin layer
torch needs:

    import mithril_cache
    mithril_cache.enable()              # before the first compiled call
    model = torch.compile(model)        # torch's caches now go through
                                        # the store
    model = torch.compile(model, backend=mithril_cache.backend())
                                        # plus keyed per-graph entries

Public names:
    Store                 an open store (blobs by address, entries by key)
    Error, NotFoundError, CorruptError, InvalidError
    enable(), flush(), active(), default_dir(), Manager
    backend(), graph_key(), graph_text()
    toolchain_text()
"""

import pkgutil

# The extension may be built elsewhere (build/python/mithril_cache during
# development): let this package span every mithril_cache folder on
# sys.path.
__path__ = pkgutil.extend_path(__path__, __name__)

from . import _native  # noqa: E402
from ._native import (  # noqa: E402
    CorruptError, Error, InvalidError, NotFoundError)
from ._enable import Manager, active, current, default_dir, enable, flush
from .backend import backend, graph_key, graph_text
from .toolchain import toolchain_text

#: An open mithril store: Store(dir, ...) (see help(Store)).
Store = _native.Store

__version__ = _native.VERSION

__all__ = [
    "Store", "Error", "NotFoundError", "CorruptError", "InvalidError",
    "Manager", "enable", "flush", "active", "current", "default_dir",
    "backend", "graph_key", "graph_text", "toolchain_text",
]
