"""A persistent compile cache for UMAP's numba kernels, so each process does not recompile them.

umap-learn's jitted functions are declared without ``cache=True``: every fresh
process (each ``geotune train``, each Ray worker) compiled them again, about 14 s
on the 2-core machine of BENCHMARKS.md before its first projection. Switching
numba's own on-disk cache on for those functions, before their first call, makes
that a load of about 0.5 s. The compiled code is the same, so projections are
identical (``tests/test_train_local.py``).

The cache lives in ``$GEOTUNE_CACHE_DIR/numba`` (default ``~/.cache/geotune/numba``,
or under ``$XDG_CACHE_HOME``); a ``NUMBA_CACHE_DIR`` the user set wins. Numba keys
each entry by source file, its timestamp and the CPU, so an upgraded umap-learn or
another machine of a cluster simply compiles once more; deleting the folder is safe.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_done = False


def cache_dir() -> Path:
    """Where geotune keeps numba's compiled UMAP kernels."""
    if os.environ.get("GEOTUNE_CACHE_DIR"):
        return Path(os.environ["GEOTUNE_CACHE_DIR"]).expanduser() / "numba"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "geotune" / "numba"


def cache_umap_kernels() -> int:
    """Turn numba's disk cache on for every jitted function of umap-learn, pynndescent and
    ``geotune.analysis.umap_neighbors`` not yet cached.

    Call after importing those and before the first projection; later calls do nothing.
    Returns how many functions were switched (0 when the cache cannot be used: a
    read-only home, say, where the kernels are simply compiled as before).
    """
    global _done
    if _done:
        return 0
    _done = True
    # deferred (all three): numba comes with umap-learn, which is imported only when something projects
    from numba.core import config as numba_config  # deferred: see above
    from numba.core.caching import NullCache  # deferred: see above
    from numba.core.registry import CPUDispatcher  # deferred: see above

    if not os.environ.get("NUMBA_CACHE_DIR"):
        folder = cache_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return 0
        if not os.access(folder, os.W_OK):
            return 0
        numba_config.CACHE_DIR = str(folder)  # type: ignore[attr-defined]  # what NUMBA_CACHE_DIR sets at import
    switched = 0
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("umap", "pynndescent", "geotune.analysis.umap_neighbors")):
            continue
        for obj in list(vars(module).values()):
            # Dispatcher.enable_caching is what numba's own @jit(cache=True) calls at decoration.
            if isinstance(obj, CPUDispatcher) and isinstance(getattr(obj, "_cache", None), NullCache):
                try:
                    obj.enable_caching()
                except Exception:  # a function numba cannot cache is compiled as before
                    continue
                switched += 1
    return switched
