"""UMAP's exact nearest neighbours of a small set, computed in one compiled loop.

Below ``EXACT_POINTS`` points umap-learn finds exact neighbours from a full distance matrix, which it builds by
handing its compiled Euclidean metric to scikit-learn's ``pairwise_distances`` as a Python callable: one Python
call per pair (two thirds of a 1,500-point projection). The same metric called from a compiled loop gives the
same distances at once; passed to umap-learn as ``precomputed_knn`` they give the layout its own call gives,
coordinate for coordinate (``benchmarks/umap_cost.py``), in a third of the time or less.

The loop is compiled on first use, before ``compile_cache.cache_umap_kernels`` switches numba's disk cache on
for it with UMAP's own kernels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EXACT_POINTS = 4096  # umap-learn's own threshold: from this many points on it searches approximately (NN-descent)

_all_pair_distances: Any = None  # the compiled loop, built once per process by compiled_loop()


def compiled_loop() -> Any:
    """The numba function giving every pair's distance by umap-learn's Euclidean metric (float64, zero diagonal)."""
    global _all_pair_distances
    if _all_pair_distances is None:
        import numba  # deferred: numba comes with umap-learn, and importing either takes seconds (tens uncached)
        from umap.distances import euclidean  # deferred: see above

        def all_pair_distances(x: np.ndarray) -> np.ndarray:
            n = x.shape[0]
            out = np.zeros((n, n))
            for i in range(n):
                for j in range(i + 1, n):  # each pair once: the metric is symmetric
                    d = euclidean(x[i], x[j])
                    out[i, j] = d
                    out[j, i] = d
            return out

        _all_pair_distances = numba.njit(fastmath=True)(all_pair_distances)  # compiled as umap-learn's own kernels
    return _all_pair_distances


def exact_neighbors(x: np.ndarray, n_neighbors: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances) of each row's ``n_neighbors`` nearest rows, itself included, ordered as umap-learn's
    exact search orders them (a stable sort of the distances of float32 rows)."""
    distances = compiled_loop()(np.ascontiguousarray(x, dtype=np.float32))
    order = np.argsort(distances, axis=1, kind="stable")[:, :n_neighbors]
    return order, np.take_along_axis(distances, order, axis=1)
