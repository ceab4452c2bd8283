"""Geometry of a set of embeddings: geodesic flatness, intrinsic dimension, cluster structure.

Pure functions of (embeddings, labels) with numpy/scipy/scikit-learn; no torch,
no training. The central quantity is the **geodesic ratio** of a pair of points:
shortest-path length on the symmetric kNN graph with Euclidean edge weights
(exactly scikit-learn Isomap's ``dist_matrix_``) divided by their Euclidean
distance. It is >= 1, equals 1 for collinear points, and grows with curvature.

The raw ratio also grows with k, sample size and intrinsic dimension (a flat
16-D Gaussian gives about 1.5 at k=10), so it is reported next to the same
statistic on a *flat reference*: an isotropic Gaussian cloud with the same
component sizes, the same k and the estimated intrinsic dimension. Their
quotient, ``flatness_calibrated``, is about 1 for flat data and larger for
curved or folded data.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Optional

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components, shortest_path

QUANTILES = (0.05, 0.25, 0.75, 0.95)


# ---------------------------------------------------------------------------
# neighbours and graph


def nearest_neighbors(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices) of the k nearest other points of every point, nearest first.

    Many points in many dimensions: blocked float32 distance matrices in torch pick
    the neighbours (2-3x faster than scikit-learn's brute force on 2 cores), then
    their distances are recomputed exactly in float64. Otherwise scikit-learn.
    """
    k = min(k, len(x) - 1)
    if len(x) > 2000 and x.shape[1] > 16:
        return _blocked_neighbors(x, k)
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(x)
    return nn.kneighbors(return_distance=True)


def _blocked_neighbors(x: np.ndarray, k: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    sq = (xt * xt).sum(1)
    dist = np.empty((len(x), k))
    idx = np.empty((len(x), k), dtype=np.int64)
    for start in range(0, len(x), block):
        stop = min(start + block, len(x))
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (xt[start:stop] @ xt.T)
        d2[torch.arange(stop - start), torch.arange(start, stop)] = float("inf")  # not itself
        chosen = torch.topk(d2, k, dim=1, largest=False).indices.numpy()
        # float32 only picks the neighbours; their lengths are recomputed in float64 (per block, to bound memory)
        exact = np.linalg.norm(x[chosen] - x[start:stop, None, :], axis=2)
        order = np.argsort(exact, axis=1, kind="stable")
        dist[start:stop] = np.take_along_axis(exact, order, 1)
        idx[start:stop] = np.take_along_axis(chosen, order, 1)
    return dist, idx


def knn_graph(x: np.ndarray, k: int, neighbors: Optional[tuple[np.ndarray, np.ndarray]] = None) -> sparse.csr_matrix:
    """Symmetric (union) kNN graph with Euclidean edge lengths, as Isomap builds it.

    scipy's graph routines treat a stored 0 as "no edge", so an edge between two
    identical points gets a tiny positive length instead of disappearing.
    """
    dist, idx = neighbors if neighbors is not None else nearest_neighbors(x, k)
    n, kk = idx.shape
    weights = np.maximum(dist.ravel(), 1e-12)
    graph = sparse.csr_matrix((weights, (np.repeat(np.arange(n), kk), idx.ravel())), shape=(n, n))
    return graph.maximum(graph.T).tocsr()


def graph_geodesics(x: np.ndarray, k: int, sources: Optional[np.ndarray] = None) -> np.ndarray:
    """Shortest-path lengths on the kNN graph from ``sources`` (all points by default); inf if unreachable."""
    return shortest_path(knn_graph(x, k), method="D", directed=False, indices=sources)


# ---------------------------------------------------------------------------
# geodesic summary


@dataclass
class GeodesicStats:
    """Geodesic/Euclidean ratio over connected pairs of one point set."""
    n_points: int
    n_neighbors: int
    mean: Optional[float] = None
    std: Optional[float] = None
    median: Optional[float] = None
    quantiles: dict = field(default_factory=dict)
    max: Optional[float] = None
    mean_indirect: Optional[float] = None  # over pairs not joined by one edge (those are 1 by construction)
    n_pairs: int = 0                       # connected pairs counted (unordered; estimated when sampled)
    fraction_pairs_counted: float = 0.0    # connected pairs / all pairs
    n_components: int = 0
    sampled_sources: Optional[int] = None  # None: exact over all pairs
    trivial: bool = False                  # every component is complete (k >= component size - 1): ratio 1
    component_sizes: list = field(default_factory=list)  # largest first


def geodesic_stats(x: np.ndarray, k: int, *, max_exact: int = 3000, n_sources: int = 300, seed: int = 0,
                   neighbors: Optional[tuple[np.ndarray, np.ndarray]] = None) -> GeodesicStats:
    """Ratio statistics over connected pairs i<j; exact up to ``max_exact`` points, else from sampled sources.

    ``neighbors`` (distances, indices of at least k neighbours) avoids a second neighbour search.
    """
    n = len(x)
    stats = GeodesicStats(n_points=n, n_neighbors=k)
    if n < 3:
        return stats
    graph = knn_graph(x, k, (neighbors[0][:, :k], neighbors[1][:, :k]) if neighbors is not None else None)
    n_comp, comp = connected_components(graph, directed=False)
    stats.n_components = int(n_comp)
    sizes = np.bincount(comp)
    stats.component_sizes = sorted(sizes.tolist(), reverse=True)
    stats.trivial = bool(np.all(sizes - 1 <= k))
    if n <= max_exact:
        sources = np.arange(n)
    else:
        sources = np.sort(np.random.default_rng(seed).choice(n, size=n_sources, replace=False))
        stats.sampled_sources = int(n_sources)
    geo = shortest_path(graph, method="D", directed=False, indices=sources)
    euclid = _euclidean_rows(x, sources)
    mask = np.isfinite(geo) & (euclid > 1e-12)
    if stats.sampled_sources is None:
        mask &= np.triu(np.ones((n, n), dtype=bool), k=1)
    else:
        mask[np.arange(len(sources)), sources] = False
    ratios = geo[mask] / euclid[mask]
    total_pairs = n * (n - 1) / 2
    if stats.sampled_sources is None:
        stats.n_pairs = int(ratios.size)
    else:  # ordered (source, target) pairs estimate the share of connected unordered pairs
        stats.n_pairs = int(round(ratios.size / (len(sources) * (n - 1)) * total_pairs))
    stats.fraction_pairs_counted = stats.n_pairs / total_pairs
    if ratios.size == 0:
        return stats
    stats.mean, stats.std = float(ratios.mean()), float(ratios.std())
    values = np.quantile(ratios, (*QUANTILES, 0.5))  # one partition of the ratios for all of them
    stats.median, stats.max = float(values[-1]), float(ratios.max())
    stats.quantiles = {f"q{int(q * 100):02d}": float(v) for q, v in zip(QUANTILES, values)}
    # Pairs joined by one edge have ratio exactly 1 (a straight segment is the shortest path).
    direct = graph[sources].toarray() > 0
    indirect = mask & ~direct
    if indirect.any():
        stats.mean_indirect = float((geo[indirect] / euclid[indirect]).mean())
    return stats


def _euclidean_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Euclidean distances from x[rows] to every point: |a|^2 + |b|^2 - 2ab in float64 BLAS, clipped at 0.

    The same formula as scikit-learn's euclidean_distances, without its per-call overhead (about 1 s
    here for 300 x 10,000 rows, 60x the arithmetic).
    """
    a = x[rows]
    d2 = (a * a).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2.0 * (a @ x.T)
    np.maximum(d2, 0.0, out=d2)
    return np.sqrt(d2, out=d2)


# ---------------------------------------------------------------------------
# flat reference (calibration)


@lru_cache(maxsize=512)
def reference_component(size: int, k: int, dim: int, max_exact: int = 3000, n_sources: int = 300,
                        seed: int = 12345) -> tuple[Optional[float], int]:
    """(mean ratio, connected pairs) of one flat isotropic Gaussian cloud; cached, as sizes repeat."""
    rng = np.random.default_rng([seed, size, k, dim])
    stats = geodesic_stats(rng.standard_normal((size, dim)), k, max_exact=max_exact, n_sources=n_sources, seed=seed)
    return stats.mean, stats.n_pairs


def reference_ratio(sizes: tuple[int, ...], k: int, dim: int, max_exact: int = 3000,
                    n_sources: int = 300) -> Optional[float]:
    """Mean geodesic ratio of flat Gaussian clouds, one per component size, weighted by connected pairs."""
    total, weight = 0.0, 0.0
    for size in sizes:
        if size < 3:
            continue
        mean, pairs = reference_component(size, k, dim, max_exact, n_sources)
        if mean is not None and pairs:
            total += mean * pairs
            weight += pairs
    return total / weight if weight else None


@dataclass
class Flatness:
    raw: Optional[float]
    reference: Optional[float]
    calibrated: Optional[float]
    reference_dim: int


def calibrated_flatness(geo: GeodesicStats, ambient_dim: int, dim_estimate: Optional[float],
                        max_exact: int = 3000, n_sources: int = 300) -> Flatness:
    """Raw mean ratio, the flat reference's (same component sizes, k, dimension), and their quotient."""
    dim = int(min(max(1, round(dim_estimate)) if dim_estimate and math.isfinite(dim_estimate) else ambient_dim,
                  ambient_dim))
    if geo.mean is None:
        return Flatness(geo.mean, None, None, dim)
    reference = reference_ratio(tuple(geo.component_sizes), geo.n_neighbors, dim, max_exact, n_sources)
    return Flatness(geo.mean, reference, geo.mean / reference if reference else None, dim)


# ---------------------------------------------------------------------------
# intrinsic dimension


def intrinsic_dim_twonn(x: np.ndarray, discard_fraction: float = 0.1,
                        neighbors: Optional[tuple[np.ndarray, np.ndarray]] = None) -> Optional[float]:
    """TwoNN (Facco et al. 2017): slope of -log(1 - F(mu)) against log(mu), mu = r2/r1, through the origin.

    The largest ``discard_fraction`` of mu values (most affected by noise and
    boundaries) is left out of the fit, as in the paper.
    """
    dist = neighbors[0] if neighbors is not None else nearest_neighbors(x, 2)[0]
    r1, r2 = dist[:, 0], dist[:, 1]
    keep = r1 > 1e-12  # duplicates have no defined ratio
    mu = np.sort(r2[keep] / r1[keep])
    n = len(mu)
    if n < 3:
        return None
    m = max(2, int(n * (1 - discard_fraction)))
    log_mu = np.log(mu[:m])
    empirical = np.arange(1, m + 1) / n
    y = -np.log(1 - empirical)
    denom = float(log_mu @ log_mu)
    return float(log_mu @ y / denom) if denom > 0 else None


def intrinsic_dim_mle(x: np.ndarray, k: int = 20,
                      neighbors: Optional[tuple[np.ndarray, np.ndarray]] = None) -> Optional[float]:
    """Levina-Bickel MLE with k neighbours, averaged over points as MacKay & Ghahramani propose (mean of inverses)."""
    if neighbors is not None and neighbors[0].shape[1] >= k:
        dist = neighbors[0][:, :k]
    else:
        dist, _ = nearest_neighbors(x, k)
    dist = np.maximum(dist, 1e-12)
    if dist.shape[1] < 2:
        return None
    inverse = np.log(dist[:, -1:] / dist[:, :-1]).mean(axis=1)  # = 1 / m_k(x)
    inverse = inverse[inverse > 0]
    return float(1.0 / inverse.mean()) if inverse.size else None


# ---------------------------------------------------------------------------
# class structure


def silhouette(x: np.ndarray, labels: np.ndarray, max_points: int = 5000, seed: int = 0) -> Optional[float]:
    """Mean silhouette (Euclidean); on a seeded sample of ``max_points`` above that size."""
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2 or len(x) < 3:
        return None
    sample = max_points if len(x) > max_points else None
    return float(silhouette_score(x, labels, sample_size=sample, random_state=seed))


def linear_separability(x: np.ndarray, labels: np.ndarray, seed: int = 0) -> Optional[float]:
    """Macro-F1 of a one-vs-rest perceptron trained and scored on the same (standardised) points."""
    from sklearn.linear_model import Perceptron
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(labels)) < 2:
        return None
    z = StandardScaler().fit_transform(x)
    clf = Perceptron(max_iter=1000, tol=1e-4, random_state=seed).fit(z, labels)
    return float(f1_score(labels, clf.predict(z), average="macro"))


def knn_accuracy(labels: np.ndarray, neighbor_idx: np.ndarray) -> Optional[float]:
    """Leave-one-out accuracy of a majority vote among each point's k nearest other points."""
    if len(labels) < 2:
        return None
    votes = labels[neighbor_idx]
    n_classes = int(labels.max()) + 1
    counts = np.zeros((len(labels), n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(len(labels)), votes.shape[1]), votes.ravel()), 1)
    return float((counts.argmax(1) == labels).mean())


def pca_dims(x: np.ndarray, variance: float = 0.9) -> int:
    """Number of principal components explaining ``variance`` of the total variance."""
    centred = x - x.mean(0)
    s = np.linalg.svd(centred, compute_uv=False)
    share = np.cumsum(s ** 2) / max(float((s ** 2).sum()), 1e-300)
    return int(np.searchsorted(share, variance - 1e-12) + 1)


def trustworthiness(x: np.ndarray, projection: np.ndarray, k: int, max_points: int = 2000,
                    seed: int = 0) -> Optional[float]:
    """scikit-learn's trustworthiness of a 2-D projection (on a seeded sample above ``max_points``)."""
    from sklearn.manifold import trustworthiness as sk_trustworthiness

    n = len(x)
    k = min(k, (n - 1) // 2 - 1)
    if k < 1:
        return None
    if n > max_points:
        keep = np.random.default_rng(seed).choice(n, max_points, replace=False)
        x, projection = x[keep], projection[keep]
    return float(sk_trustworthiness(x, projection, n_neighbors=k))


def pca_projection(x: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=0).fit_transform(x)


def umap_projection(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    import umap  # imported here: a first import compiles numba code for seconds

    return umap.UMAP(n_neighbors=max(2, min(15, len(x) - 1)), random_state=seed, n_jobs=1).fit_transform(x)


# ---------------------------------------------------------------------------
# the full summary


@dataclass
class GeometrySummary:
    n_points: int
    dim: int
    n_neighbors: int
    geodesic: GeodesicStats
    flatness: Flatness
    intrinsic_dim_twonn: Optional[float]
    intrinsic_dim_mle: Optional[float]
    silhouette: Optional[float] = None
    linear_separability: Optional[float] = None
    knn_accuracy: Optional[float] = None
    pca_dims_90: Optional[int] = None
    trustworthiness: Optional[float] = None
    projection: Optional[str] = None
    per_class: dict = field(default_factory=dict)

    def flat_metrics(self) -> dict:
        """The headline numbers under the names used everywhere (history, Tune, JSON, DataFrame)."""
        g = self.geodesic
        return {
            "geodesic_ratio_mean": g.mean, "geodesic_ratio_median": g.median, "geodesic_ratio_std": g.std,
            "geodesic_ratio_mean_indirect": g.mean_indirect, "geodesic_pairs_fraction": g.fraction_pairs_counted,
            "geodesic_components": g.n_components,
            "flatness_reference": self.flatness.reference, "flatness_calibrated": self.flatness.calibrated,
            "flatness_calibrated_per_class": _pair_weighted(self.per_class, "flatness_calibrated"),
            "geodesic_ratio_mean_per_class": _pair_weighted(self.per_class, "geodesic_ratio_mean"),
            "intrinsic_dim_twonn": self.intrinsic_dim_twonn, "intrinsic_dim_mle": self.intrinsic_dim_mle,
            "silhouette": self.silhouette, "linear_separability": self.linear_separability,
            "knn_accuracy": self.knn_accuracy, "pca_dims_90": self.pca_dims_90,
            "trustworthiness": self.trustworthiness,
        }

    def to_dict(self) -> dict:
        return asdict(self)


def _pair_weighted(per_class: dict, key: str) -> Optional[float]:
    values = [(c[key], c["geodesic"]["n_pairs"]) for c in per_class.values()
              if c.get(key) is not None and c["geodesic"]["n_pairs"]]
    weight = sum(w for _, w in values)
    return sum(v * w for v, w in values) / weight if weight else None


def class_summary(x: np.ndarray, k: int, max_exact: int, n_sources: int, seed: int) -> dict:
    neighbors = nearest_neighbors(x, max(k, min(20, len(x) - 1)))
    geo = geodesic_stats(x, k, max_exact=max_exact, n_sources=n_sources, seed=seed, neighbors=neighbors)
    twonn = intrinsic_dim_twonn(x, neighbors=neighbors)
    flat = calibrated_flatness(geo, x.shape[1], twonn, max_exact, n_sources)
    return {"n_points": len(x), "geodesic": asdict(geo), "geodesic_ratio_mean": geo.mean,
            "flatness_reference": flat.reference, "flatness_calibrated": flat.calibrated,
            "intrinsic_dim_twonn": twonn,
            "intrinsic_dim_mle": intrinsic_dim_mle(x, min(20, len(x) - 1), neighbors=neighbors)}


def geometry_summary(embeddings: np.ndarray, labels: Optional[np.ndarray] = None, *, n_neighbors: int = 10,
                     class_names: Optional[list[str]] = None, projection: Optional[np.ndarray] = None,
                     projection_name: Optional[str] = None, max_exact: int = 3000, n_sources: int = 300,
                     seed: int = 0) -> GeometrySummary:
    """Every latent-geometry metric of one set of embeddings (labels optional)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError(f"embeddings must be an (N, D) array with N >= 3, got shape {x.shape}")
    k = n_neighbors
    neighbors = nearest_neighbors(x, max(k, 20))
    geo = geodesic_stats(x, k, max_exact=max_exact, n_sources=n_sources, seed=seed, neighbors=neighbors)
    twonn = intrinsic_dim_twonn(x, neighbors=neighbors)
    summary = GeometrySummary(
        n_points=len(x), dim=x.shape[1], n_neighbors=k, geodesic=geo,
        flatness=calibrated_flatness(geo, x.shape[1], twonn, max_exact, n_sources),
        intrinsic_dim_twonn=twonn, intrinsic_dim_mle=intrinsic_dim_mle(x, 20, neighbors=neighbors),
        pca_dims_90=pca_dims(x),
    )
    if projection is not None:
        summary.trustworthiness = trustworthiness(x, projection, k, seed=seed)
        summary.projection = projection_name
    if labels is not None:
        y = np.asarray(labels).astype(np.int64)
        summary.silhouette = silhouette(x, y, seed=seed)
        summary.linear_separability = linear_separability(x, y, seed=seed)
        summary.knn_accuracy = knn_accuracy(y, neighbors[1][:, :k])
        for c in np.unique(y):
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            members = x[y == c]
            if len(members) >= 3:
                summary.per_class[name] = class_summary(members, k, max_exact, n_sources, seed)
    return summary


def epoch_geometry(embeddings: np.ndarray, labels: np.ndarray, n_neighbors: int = 10) -> dict:
    """The cheap subset logged every few epochs: geodesic ratio, calibrated flatness, TwoNN, silhouette."""
    x = np.asarray(embeddings, dtype=np.float64)
    neighbors = nearest_neighbors(x, n_neighbors)
    geo = geodesic_stats(x, n_neighbors, neighbors=neighbors)
    twonn = intrinsic_dim_twonn(x, neighbors=neighbors)
    flat = calibrated_flatness(geo, x.shape[1], twonn)
    return {"geodesic_ratio_mean": geo.mean, "flatness_calibrated": flat.calibrated,
            "intrinsic_dim_twonn": twonn, "silhouette": silhouette(x, np.asarray(labels))}
