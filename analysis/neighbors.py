"""Nearest neighbours and the symmetric kNN graph: the primitives every geometry measure shares.

Pure numpy/scipy (torch only to pick neighbours of large, high-dimensional sets
faster). The kNN graph is the one scikit-learn's Isomap builds: union of each
point's k nearest others, Euclidean edge lengths.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import dijkstra

Neighbors = tuple[np.ndarray, np.ndarray]  # (distances, indices) of each point's nearest others, nearest first


def nearest_neighbors(x: np.ndarray, k: int) -> Neighbors:
    """(distances, indices) of the k nearest other points of every point, nearest first.

    Many points in many dimensions: blocked float32 distance matrices in torch pick
    the neighbours (2-3x faster than scikit-learn's brute force on 2 cores). Otherwise
    scikit-learn. Either way the chosen neighbours' distances are then recomputed from
    their differences in float64: the |a|^2 + |b|^2 - 2ab expansion both use reads two
    identical rows of a wide set as about 1e-7 apart, which would hide a duplicate.
    """
    k = min(k, len(x) - 1)
    if len(x) > 2000 and x.shape[1] > 16:
        return _blocked_neighbors(x, k)
    from sklearn.neighbors import NearestNeighbors  # deferred: importing scikit-learn costs about a second

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(x)
    idx = nn.kneighbors(return_distance=False)
    return _exact_distances(np.asarray(x, dtype=np.float64), idx, 0, len(x))


def _exact_distances(x: np.ndarray, chosen: np.ndarray, start: int, stop: int, block: int = 256) -> Neighbors:
    """(distances, indices) of rows start..stop of ``x`` to their ``chosen`` neighbours, from the differences in
    float64 (in blocks of rows, to bound memory), nearest first."""
    dist = np.empty(chosen.shape)
    for a in range(0, len(chosen), block):
        b = min(a + block, len(chosen))
        dist[a:b] = np.linalg.norm(x[chosen[a:b]] - x[start + a : start + b, None, :], axis=2)
    order = np.argsort(dist, axis=1, kind="stable")
    return np.take_along_axis(dist, order, 1), np.take_along_axis(chosen, order, 1)


def _blocked_neighbors(x: np.ndarray, k: int, block: int = 2048) -> Neighbors:
    import torch  # deferred: only large sets take this path

    exact = np.asarray(x, dtype=np.float64)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    sq = (xt * xt).sum(1)
    dist = np.empty((len(x), k))
    idx = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), block):
        stop = min(start + block, len(x))
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (xt[start:stop] @ xt.T)
        d2[torch.arange(stop - start), torch.arange(start, stop)] = float("inf")  # not itself
        chosen = torch.topk(d2, k, dim=1, largest=False).indices.numpy()
        # float32 only picks the neighbours; their lengths are recomputed in float64
        dist[start:stop], idx[start:stop] = _exact_distances(exact, chosen, start, stop)
    return dist, idx


def within_two_hops(neighbors: Neighbors, k: int) -> np.ndarray:
    """(n, m) booleans: is each listed neighbour at most two hops away on the symmetric kNN graph (k)?

    Where two sheets of the data pass closer than the m-th neighbour but not closer than the
    k-th (the turns of a swiss roll at the sparse end), the other sheet's points are among the m
    nearest yet many hops away: this tells most of them apart.
    """
    dist, idx = neighbors
    n = len(idx)
    rows = np.repeat(np.arange(n), k)
    adjacency = sparse.csr_matrix((np.ones(n * k, dtype=np.int32), (rows, idx[:, :k].ravel())), shape=(n, n))
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.int32)
    reach = ((adjacency @ adjacency + adjacency) > 0).tocsr()
    return np.asarray(reach[np.repeat(np.arange(n), idx.shape[1]), idx.ravel()]).reshape(idx.shape)


def knn_graph(x: np.ndarray, k: int, neighbors: Neighbors | None = None) -> sparse.csr_matrix:
    """Symmetric (union) kNN graph with Euclidean edge lengths, as Isomap builds it.

    scipy's graph routines treat a stored 0 as "no edge", so an edge between two
    identical points gets a tiny positive length instead of disappearing.
    """
    dist, idx = (neighbors[0][:, :k], neighbors[1][:, :k]) if neighbors is not None else nearest_neighbors(x, k)
    n, kk = idx.shape
    weights = np.maximum(dist.ravel(), 1e-12)
    graph = sparse.csr_matrix((weights, (np.repeat(np.arange(n), kk), idx.ravel())), shape=(n, n))
    return graph.maximum(graph.T).tocsr()


def graph_geodesics(x: np.ndarray, k: int, sources: np.ndarray | None = None) -> np.ndarray:
    """Shortest-path lengths on the kNN graph from ``sources`` (all points by default); inf if unreachable."""
    return symmetric_dijkstra(knn_graph(x, k), sources)


def symmetric_dijkstra(graph: sparse.csr_matrix, sources: np.ndarray | None = None, predecessors: bool = False):
    """Dijkstra from ``sources`` on a graph stored with both directions of every edge, equal (``knn_graph``, the
    flatness's chord graph): read as directed, which gives the same lengths and predecessors as scipy's
    undirected search, without the transpose that search builds and walks beside the graph (13-19% less time
    on the flatness's graphs of 1,000 points in three runs; benchmarks/graph_walk.py)."""
    return dijkstra(graph, directed=True, indices=sources, return_predecessors=predecessors)


def unique_points(x: np.ndarray) -> tuple[np.ndarray, int]:
    """The distinct rows of ``x`` (first occurrences, in order) and how many rows were exact duplicates.

    Duplicated embeddings (identical images give identical vectors) have zero
    neighbour distances, which drive distance-ratio estimators of dimension to 0.
    """
    _, first = np.unique(x, axis=0, return_index=True)
    if len(first) == len(x):
        return x, 0
    return x[np.sort(first)], len(x) - len(first)


def isometric_coordinates(x: np.ndarray, *, subspace: bool = False) -> np.ndarray:
    """``x`` (N x D) in coordinates of its own span: a shift and a rotation onto its principal axes, so every
    distance, spectrum and neighbourhood stays the same (to float64 rounding) with fewer coordinates.

    By default only when D > N: at most N coordinates (a class of 126 points of a 2,048-wide layer is measured in
    126 dimensions). ``subspace``: also when the set lies in an r-dimensional subspace of R^D (its other singular
    values at float64 rounding: noise-free data, dead units), in r + 1 coordinates: the last one holds only
    rounding, so rules that compare a dimension with the space's (a surface has fewer dimensions than the space
    it lies in) read the set as they read it in R^D. Identical rows stay identical (each distinct row is rotated
    once). Returned unchanged (as float64) otherwise."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0 or (x.shape[1] <= x.shape[0] and not subspace):
        return x
    mean = x.mean(0)
    _, s, axes = np.linalg.svd(x - mean, full_matrices=False)  # axes (min(N, D), D): the span's orthonormal basis
    keep = len(s)
    if subspace:  # numpy's matrix_rank threshold
        keep = min(keep, int((s > s[0] * max(x.shape) * np.finfo(np.float64).eps).sum()) + 1)
    if keep >= x.shape[1]:
        return x
    distinct, inverse = np.unique(x, axis=0, return_inverse=True)
    return ((distinct - mean) @ axes[:keep].T)[inverse.reshape(-1)]


def twonn_fit(r1: np.ndarray, r2: np.ndarray, discard_fraction: float = 0.1) -> float | None:
    """TwoNN (Facco et al. 2017) from each point's first and second neighbour distances.

    The slope of -log(1 - F(mu)) against log(mu), mu = r2/r1, through the origin; the largest
    ``discard_fraction`` of mu values (most affected by noise and boundaries) are left out of
    the fit, as in the paper. Zero r1 (duplicates) have no ratio and are skipped.
    """
    keep = r1 > 0
    mu = np.sort(r2[keep] / r1[keep])
    n = len(mu)
    if n < 3:
        return None
    m = max(2, int(n * (1 - discard_fraction)))
    log_mu = np.log(mu[:m])
    y = -np.log(1 - np.arange(1, m + 1) / n)
    denom = float(log_mu @ log_mu)
    return float(log_mu @ y / denom) if denom > 0 else None
