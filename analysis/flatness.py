"""Calibrated flatness: how much paths *within* a point set must bend, beyond what sampling explains.

The raw geodesic ratio (shortest path on the kNN graph / Euclidean distance)
mixes curvature with the detours of the kNN graph itself, and those detours grow
with the intrinsic dimension, the density profile and k: at n = 1,000 and k = 10 a
flat 12-D Gaussian reads 1.6, a flat 10-D Gaussian 1.58, a flat 10-D cube 1.69,
a flat 10-D ball 1.75. No single reference cloud (an isotropic Gaussian of the
estimated dimension, say) matches every flat shape, so the calibrated value does
without one: it lets a path take any straight segment that *stays on the data*.

- A segment from x_i to x_j stays on the data when every point of it lies in the
  union of the balls B(x_q, tau * r_k(q)), with r_k(q) the distance from x_q to its
  k-th nearest neighbour (``segments_supported``).
- The **chord geodesic** D(i, j) is |x_i - x_j| when that segment stays on the
  data, else the shortest path through kNN edges and supported segments between
  near neighbours (each point's 20 nearest).
- ``flatness_calibrated`` is the mean of D / |x_i - x_j| over pairs in the same
  kNN component. A flat convex set reads exactly 1 whatever its shape, dimension
  or density; a curved set reads more (exactly pi - 2 = 1.142 for geodesics over
  uniform pairs of a sphere; measured 1.148), and so does a flat set with a hole
  (paths must go around it).

**Tolerance.** A random point of a flat d-dimensional cloud of locally uniform
density lies farther than r from every sample with probability exp(-rho V_d r^d)
(the empty-space law), and rho V_d r_k^d is about k, so it misses every ball of
radius tau * r_k with probability about exp(-k tau^d). ``support_tolerance``
picks tau = (ln(1 / (1 - q)) / k)^(1/d) so that a point that does lie on the data
is accepted with probability q = 0.99: tau = 0.68 at d = 2 and 0.93 at d = 12
(k = 10). tau follows the dimension estimate continuously (no jump at integers).
This sets the **resolution**: a bend is seen once a segment leaves the data by
more than about tau * r_k, so thick clouds in many dimensions are seen coarsely,
and sets of fewer than about 50 points (``MIN_RESOLVED_POINTS``) read flat
whatever their shape.

The support test needs no coordinates: for p = (1 - f) x_i + f x_j and any q,
|p - x_q|^2 = (1 - f)|x_i - x_q|^2 + f |x_j - x_q|^2 - f (1 - f)|x_i - x_j|^2, so
a segment is tested from two rows of the squared-distance matrix, at points no
more than tau * median(r_k) apart, coarse to fine (most segments that leave the
data fail at their midpoint).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components, shortest_path

from geotune.analysis.neighbors import Neighbors, knn_graph, nearest_neighbors

SUPPORT_QUANTILE = 0.99  # share of points lying on the data that the support test accepts (sets tau)
SHORT_CHORD_NEIGHBORS = 20  # paths may use supported segments between each point and its 20 nearest
MAX_POINTS = 3000  # larger sets are measured on a seeded random subsample of this size
MAX_PAIRS = 45_000  # all pairs up to this many (n <= 300); else N_SOURCES sources x random targets
N_SOURCES = 300
MAX_LEVEL = 11  # a segment is tested at up to 2^11 - 1 points
# Below about this many points a set reads flat whatever its shape: measured at k = 10 (k = 5 alike), a unit
# sphere of 27 points reads 1.00, of 54 points 1.03-1.04, of 100 points 1.08, of 400 points 1.13 (exact: 1.14).
MIN_RESOLVED_POINTS = 50


def support_tolerance(k: int, dimension: float | None, quantile: float = SUPPORT_QUANTILE) -> float:
    """tau: support radius as a fraction of r_k, from the empty-space law at intrinsic dimension ``dimension``."""
    d = max(1.0, float(dimension)) if dimension is not None and math.isfinite(dimension) else 1.0
    return (math.log(1.0 / (1.0 - quantile)) / max(1, k)) ** (1.0 / d)


def squared_distances(x: np.ndarray):
    """All squared Euclidean distances as a float32 torch matrix (computed centred, in float64)."""
    import torch  # deferred: torch takes seconds to import and only the support test needs it

    c = torch.from_numpy(np.asarray(x, dtype=np.float64) - np.asarray(x, dtype=np.float64).mean(0))
    norms = (c * c).sum(1)
    sq = (norms[:, None] + norms[None, :] - 2.0 * (c @ c.T)).clamp_min_(0.0)
    sq.fill_diagonal_(0.0)
    return sq.float()


def segments_supported(sq, i: np.ndarray, j: np.ndarray, radius2, spacing: float, block: int = 2048) -> np.ndarray:
    """Whether each segment x_i -> x_j stays in the union of balls B(x_q, sqrt(radius2[q])).

    ``sq``: (n, n) torch matrix of squared distances; ``radius2``: (n,) torch vector on the
    same device. Each segment is tested at evenly spaced points no more than ``spacing``
    apart (its midpoint first, then the quarter points, ...; a failed segment stops early).
    """
    import torch  # deferred: see squared_distances

    ok = np.ones(len(i), dtype=bool)
    if len(i) == 0:
        return ok
    device = sq.device
    it, jt = torch.as_tensor(np.asarray(i), device=device), torch.as_tensor(np.asarray(j), device=device)
    length = np.sqrt(sq[it, jt].double().cpu().numpy())
    levels = np.ceil(np.log2(np.maximum(length / max(spacing, 1e-300), 1.0))).astype(int)
    levels = np.clip(levels, 1, MAX_LEVEL)
    for level in range(1, int(levels.max()) + 1):
        active = np.nonzero(ok & (levels >= level))[0]
        fractions = np.arange(1, 2**level, 2) / 2**level  # the points this level adds
        for start in range(0, len(active), block):
            chosen = torch.as_tensor(active[start : start + block], device=device)
            # rows minus each ball's radius^2: then min over q of lerp(a, b, f) - f(1-f)|x_i - x_j|^2 <= 0
            a = sq[it[chosen]].sub_(radius2)
            b = sq[jt[chosen]].sub_(radius2)
            length2 = sq[it[chosen], jt[chosen]]
            good = torch.ones(len(chosen), dtype=torch.bool, device=device)
            for f in fractions:
                good &= torch.lerp(a, b, float(f)).amin(1) <= f * (1.0 - f) * length2
                if not bool(good.any()):
                    break
            ok[active[start : start + block]] = good.cpu().numpy()
    return ok


def chord_graph(x: np.ndarray, sq, neighbors: Neighbors, k: int, radius2, spacing: float) -> sparse.csr_matrix:
    """kNN graph (k) plus every supported segment between a point and its near neighbours (all columns given)."""
    dist, idx = neighbors
    graph = knn_graph(x, k, neighbors)
    a = np.repeat(np.arange(len(idx)), idx.shape[1] - k)
    b = idx[:, k:].ravel()
    if len(a) == 0:
        return graph
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], 1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    keep = segments_supported(sq, pairs[:, 0], pairs[:, 1], radius2, spacing)
    p = pairs[keep]
    lengths = np.maximum(np.linalg.norm(x[p[:, 0]] - x[p[:, 1]], axis=1), 1e-12)
    chords = sparse.csr_matrix((lengths, (p[:, 0], p[:, 1])), shape=graph.shape)
    return graph.maximum(chords).maximum(chords.T).tocsr()


@dataclass
class Flatness:
    """Calibrated flatness of one point set (see the module docstring)."""

    raw: float | None = None  # mean kNN-graph geodesic / Euclidean ratio (GeodesicStats.mean)
    calibrated: float | None = None  # mean chord-geodesic / Euclidean ratio over measured pairs: 1 = flat
    reference: float | None = None  # raw / calibrated: the part of the raw ratio that is the kNN graph's detours
    dimension: float | None = None  # intrinsic dimension (TwoNN) that sets the support tolerance
    tolerance: float | None = None  # support radius as a fraction of each point's k-NN distance (tau)
    direct_fraction: float | None = None  # share of measured pairs whose straight segment stays on the data
    n_pairs: int = 0  # pairs measured (same kNN component)
    n_points: int = 0  # points measured (a seeded subsample above MAX_POINTS)


def measured_pairs(
    n: int, rng: np.random.Generator, max_pairs: int = MAX_PAIRS, n_sources: int = N_SOURCES
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs i<j when there are at most ``max_pairs``, else ``n_sources`` random sources x random other points."""
    if n * (n - 1) // 2 <= max_pairs:
        return np.triu_indices(n, 1)
    sources = np.sort(rng.choice(n, size=min(n_sources, n), replace=False))
    per_source = max(1, max_pairs // len(sources))
    targets = rng.integers(0, n - 1, size=(len(sources), per_source))
    targets += targets >= sources[:, None]  # any point but the source itself
    return np.repeat(sources, per_source), targets.ravel()


def chord_flatness(
    x: np.ndarray,
    k: int,
    dimension: float | None,
    *,
    neighbors: Neighbors | None = None,
    max_points: int = MAX_POINTS,
    max_pairs: int = MAX_PAIRS,
    n_sources: int = N_SOURCES,
    seed: int = 0,
) -> Flatness:
    """Mean chord-geodesic / Euclidean ratio of a point set (``raw`` and ``reference`` are left to the caller)."""
    import torch  # deferred: see squared_distances

    x = np.asarray(x, dtype=np.float64)
    result = Flatness(dimension=dimension, n_points=len(x))
    rng = np.random.default_rng(seed)
    if len(x) > max_points:
        x, neighbors = x[np.sort(rng.choice(len(x), size=max_points, replace=False))], None
        result.n_points = max_points
    n = len(x)
    if n < 3:
        return result
    m = min(n - 1, max(k, SHORT_CHORD_NEIGHBORS))
    if neighbors is None or neighbors[0].shape[1] < m:
        neighbors = nearest_neighbors(x, m)
    neighbors = (neighbors[0][:, :m], neighbors[1][:, :m])
    k = min(k, m)
    radius = neighbors[0][:, k - 1]
    result.tolerance = tau = support_tolerance(k, dimension)
    spacing = tau * float(np.median(radius))
    if not spacing > 0:  # most points coincide with k others: no scale to measure at
        return result
    sq = squared_distances(x)
    radius2 = torch.from_numpy((tau * radius) ** 2).float()
    _, component = connected_components(knn_graph(x, k, neighbors), directed=False)
    i, j = measured_pairs(n, rng, max_pairs, n_sources)
    euclid = np.linalg.norm(x[i] - x[j], axis=1)
    scale = float(np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean()))
    keep = (component[i] == component[j]) & (euclid > 1e-9 * scale)  # coincident points have no ratio
    i, j, euclid = i[keep], j[keep], euclid[keep]
    if len(i) == 0:
        return result
    direct = segments_supported(sq, i, j, radius2, spacing)
    chord = euclid.copy()
    bent = np.nonzero(~direct)[0]
    if len(bent):
        graph = chord_graph(x, sq, neighbors, k, radius2, spacing)
        sources, row = np.unique(i[bent], return_inverse=True)
        paths = shortest_path(graph, method="D", directed=False, indices=sources)
        chord[bent] = np.maximum(paths[row, j[bent]], euclid[bent])  # a path is never shorter than the segment
    result.calibrated = float((chord / euclid).mean())
    result.direct_fraction = float(direct.mean())
    result.n_pairs = int(len(i))
    return result
