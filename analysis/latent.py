"""Geometry of a set of embeddings: geodesic flatness, intrinsic dimension, spectrum, cluster structure.

Pure functions of (embeddings, labels) with numpy/scipy/scikit-learn; no
training. The central quantity is the **geodesic ratio** of a pair of points:
shortest-path length on the symmetric kNN graph with Euclidean edge weights
(exactly scikit-learn Isomap's ``dist_matrix_``) divided by their Euclidean
distance. It is >= 1, equals 1 for collinear points, and grows with curvature.

The raw ratio also grows with k, sample size, intrinsic dimension and the shape
of the density (a flat 12-D Gaussian gives about 1.6 at k=10), so it is reported
next to ``flatness_calibrated`` (``analysis.flatness``): the same ratio for paths
that may take any straight segment staying on the data, which is 1 for flat data
of any shape and larger for curved or folded data. On labelled data the headline
is measured within each class (``flatness_calibrated_per_class``): across a whole
classifier latent the ratio also measures how the class clusters connect.

How a set spreads over its dimensions (a regularizer can flatten a class by
collapsing it) is measured by the covariance spectrum: ``participation_ratio``
((sum of eigenvalues)^2 / sum of their squares) and ``top_pc_share`` (the share of
variance on the first principal axis).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.sparse.csgraph import connected_components

from geotune.analysis.compile_cache import cache_umap_kernels
from geotune.analysis.flatness import Flatness, chord_flatness
from geotune.analysis.neighbors import (
    Neighbors,
    graph_geodesics,
    isometric_coordinates,
    knn_graph,
    nearest_neighbors,
    symmetric_dijkstra,
    twonn_fit,
    unique_points,
)
from geotune.analysis.umap_neighbors import EXACT_POINTS, compiled_loop, exact_neighbors

__all__ = [
    "Flatness",
    "GeodesicStats",
    "GeometrySummary",
    "calibrated_flatness",
    "class_summary",
    "epoch_geometry",
    "geodesic_stats",
    "geometry_summary",
    "graph_geodesics",
    "intrinsic_dim_mle",
    "intrinsic_dim_twonn",
    "knn_accuracy",
    "knn_graph",
    "linear_separability",
    "nearest_neighbors",
    "participation_ratio",
    "pca_dims",
    "pca_projection",
    "silhouette",
    "spectrum",
    "top_pc_share",
    "trustworthiness",
    "umap_projection",
]

QUANTILES = (0.05, 0.25, 0.75, 0.95)


# ---------------------------------------------------------------------------
# geodesic summary


@dataclass
class GeodesicStats:
    """Geodesic/Euclidean ratio over connected pairs of one point set."""

    n_points: int
    n_neighbors: int
    mean: float | None = None
    std: float | None = None
    median: float | None = None
    quantiles: dict = field(default_factory=dict)
    max: float | None = None
    mean_indirect: float | None = None  # over pairs not joined by one edge (those are 1 by construction)
    n_pairs: int = 0  # connected pairs counted (unordered; estimated when sampled)
    fraction_pairs_counted: float = 0.0  # connected pairs / all pairs
    n_components: int = 0
    sampled_sources: int | None = None  # None: exact over all pairs
    trivial: bool = False  # every component is complete (k >= component size - 1): ratio 1
    component_sizes: list = field(default_factory=list)  # largest first


def geodesic_stats(
    x: np.ndarray,
    k: int,
    *,
    max_exact: int = 3000,
    n_sources: int = 300,
    seed: int = 0,
    neighbors: Neighbors | None = None,
) -> GeodesicStats:
    """Ratio statistics over connected pairs i<j; exact up to ``max_exact`` points, else from sampled sources.

    ``neighbors`` (distances, indices of at least k neighbours) avoids a second neighbour search.
    """
    n = len(x)
    stats = GeodesicStats(n_points=n, n_neighbors=k)
    if n < 3:
        return stats
    graph = knn_graph(x, k, neighbors)
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
    geo = symmetric_dijkstra(graph, sources)
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
# calibrated flatness (analysis.flatness)


def calibrated_flatness(
    geo: GeodesicStats,
    x: np.ndarray,
    *,
    neighbors: Neighbors | None = None,
    seed: int = 0,
    check_resolution: bool = False,
) -> Flatness:
    """Calibrated flatness of ``x`` next to its raw ratio ``geo``; reference = raw / calibrated.

    ``check_resolution``: also measure whether a bend of this set could be seen (``flatness.resolution``).
    """
    flat = chord_flatness(x, geo.n_neighbors, neighbors=neighbors, seed=seed, check_resolution=check_resolution)
    flat.raw = geo.mean
    if flat.calibrated is not None and geo.mean is not None:
        flat.reference = geo.mean / flat.calibrated
    return flat


# ---------------------------------------------------------------------------
# intrinsic dimension


def _distinct(x: np.ndarray, neighbors: Neighbors | None, k: int) -> tuple[np.ndarray, Neighbors | None]:
    """``x`` without duplicated rows, and neighbours valid for it (recomputed when rows were dropped)."""
    if neighbors is not None and neighbors[0].shape[1] >= k and len(neighbors[0]):
        r1 = neighbors[0][:, 0]
        if r1.min() > 1e-7 * np.median(r1):  # no neighbour (nearly) coincides: no duplicates, skip the search
            return x, neighbors
    distinct, duplicates = unique_points(np.asarray(x))
    if duplicates or neighbors is None or neighbors[0].shape[1] < k:
        return distinct, (nearest_neighbors(distinct, k) if len(distinct) > k else None)
    return distinct, neighbors


def intrinsic_dim_twonn(
    x: np.ndarray, discard_fraction: float = 0.1, neighbors: Neighbors | None = None
) -> float | None:
    """TwoNN (Facco et al. 2017): slope of -log(1 - F(mu)) against log(mu), mu = r2/r1, through the origin.

    Duplicated points are dropped first (a zero r1 has no ratio; ``geometry_summary`` reports how
    many). The largest ``discard_fraction`` of mu values (most affected by noise and boundaries)
    is left out of the fit, as in the paper.
    """
    x, neighbors = _distinct(x, neighbors, 2)
    if neighbors is None:
        return None
    return twonn_fit(neighbors[0][:, 0], neighbors[0][:, 1], discard_fraction)


def intrinsic_dim_mle(x: np.ndarray, k: int = 20, neighbors: Neighbors | None = None) -> float | None:
    """Levina-Bickel MLE with k neighbours, averaged over points as MacKay & Ghahramani propose (mean of inverses).

    Duplicated points are dropped first (their zero distances would drive the estimate to 0).
    """
    x, neighbors = _distinct(x, neighbors, min(k, len(x) - 1))
    if neighbors is None:
        return None
    dist = neighbors[0][:, :k]
    if dist.shape[1] < 2:
        return None
    dist = dist[dist[:, 0] > 0]
    inverse = np.log(dist[:, -1:] / dist[:, :-1]).mean(axis=1)  # = 1 / m_k(x)
    inverse = inverse[inverse > 0]
    return float(1.0 / inverse.mean()) if inverse.size else None


# ---------------------------------------------------------------------------
# spectrum: how the variance spreads over dimensions


def spectrum(x: np.ndarray) -> np.ndarray:
    """Eigenvalues of the covariance matrix (population normalisation), largest first."""
    centred = np.asarray(x, dtype=np.float64) - np.mean(x, axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    return s**2 / max(1, len(centred))


def participation_ratio(x: np.ndarray, eig: np.ndarray | None = None) -> float | None:
    """(sum of covariance eigenvalues)^2 / sum of their squares: d for an isotropic d-dim cloud, 1 for a line.

    ``eig``: the set's ``spectrum`` when the caller has it already.
    """
    eig = spectrum(x) if eig is None else eig
    total = float((eig**2).sum())
    return float(eig.sum() ** 2 / total) if len(x) >= 2 and total > 0 else None


def top_pc_share(x: np.ndarray, eig: np.ndarray | None = None) -> float | None:
    """Share of the total variance on the first principal axis (1/d isotropic, 1 for a line)."""
    eig = spectrum(x) if eig is None else eig
    total = float(eig.sum())
    return float(eig[0] / total) if len(x) >= 2 and total > 0 else None


# ---------------------------------------------------------------------------
# class structure


def silhouette(x: np.ndarray, labels: np.ndarray, max_points: int = 5000, seed: int = 0) -> float | None:
    """Mean silhouette (Euclidean); on a seeded sample of ``max_points`` above that size."""
    # deferred: scikit-learn's first import costs 1.4 s; only this measurement needs it
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2 or len(x) < 3:
        return None
    sample = max_points if len(x) > max_points else None
    return float(silhouette_score(x, labels, sample_size=sample, random_state=seed))


def linear_probe_f1(x: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """Per-class F1 of a one-vs-rest perceptron trained and scored on the same (standardised) points, in the order
    of ``np.unique(labels)``: how linearly each class stands apart from the rest (the original reports' table)."""
    # deferred: scikit-learn's first import costs 1.4 s; only this measurement needs it
    from sklearn.linear_model import Perceptron

    # deferred: scikit-learn's first import costs 1.4 s; only this measurement needs it
    from sklearn.metrics import f1_score

    # deferred: scikit-learn's first import costs 1.4 s; only this measurement needs it
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(labels)) < 2:
        return None
    z = StandardScaler().fit_transform(x)
    # scikit-learn's Perceptron fits one binary perceptron per class (one-vs-rest) and predicts the highest score
    clf = Perceptron(max_iter=1000, tol=1e-4, random_state=seed).fit(z, labels)
    return np.asarray(f1_score(labels, clf.predict(z), labels=np.unique(labels), average=None), dtype=float)


def linear_separability(x: np.ndarray, labels: np.ndarray, seed: int = 0) -> float | None:
    """Macro-F1 of the one-vs-rest perceptron of ``linear_probe_f1``."""
    f1 = linear_probe_f1(x, labels, seed)
    return None if f1 is None else float(f1.mean())


def knn_accuracy(labels: np.ndarray, neighbor_idx: np.ndarray) -> float | None:
    """Leave-one-out accuracy of a majority vote among each point's k nearest other points."""
    if len(labels) < 2:
        return None
    votes = labels[neighbor_idx]
    n_classes = int(labels.max()) + 1
    counts = np.zeros((len(labels), n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(len(labels)), votes.shape[1]), votes.ravel()), 1)
    return float((counts.argmax(1) == labels).mean())


def pca_dims(x: np.ndarray, variance: float = 0.9, eig: np.ndarray | None = None) -> int:
    """Number of principal components explaining ``variance`` of the total variance."""
    eig = spectrum(x) if eig is None else eig
    share = np.cumsum(eig) / max(float(eig.sum()), 1e-300)
    return int(np.searchsorted(share, variance - 1e-12) + 1)


def trustworthiness(
    x: np.ndarray, projection: np.ndarray, k: int, max_points: int = 2000, seed: int = 0
) -> float | None:
    """scikit-learn's trustworthiness of a 2-D projection (on a seeded sample above ``max_points``)."""
    # deferred: scikit-learn's first import costs 1.4 s; only this measurement needs it
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
    # deferred: scikit-learn's first import costs 1.4 s; only this measurement needs it
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=0).fit_transform(x)


def umap_projection(x: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """UMAP to 2-D (seeded, so single-threaded and reproducible); its kernels come from the compile cache, and
    the exact neighbours of a set of fewer than 4,096 points from one compiled loop (``umap_neighbors``): the
    layout umap-learn's own call gives, in a third of the time or less."""
    import umap  # deferred: importing umap-learn costs 1.3-1.8 s, and only projections need it

    compiled_loop()  # built before the disk cache is switched on, so that it is cached with UMAP's kernels
    cache_umap_kernels()
    options = {"n_neighbors": max(2, min(15, len(x) - 1)), "random_state": seed, "n_jobs": 1}
    if len(x) >= EXACT_POINTS:
        return umap.UMAP(**options).fit_transform(x)
    indices, distances = exact_neighbors(x, options["n_neighbors"])
    with warnings.catch_warnings():  # a projection never transforms new data: that it cannot says nothing here
        warnings.filterwarnings("ignore", message="precomputed_knn")
        return umap.UMAP(**options, precomputed_knn=(indices, distances, None)).fit_transform(x)


# ---------------------------------------------------------------------------
# the full summary


@dataclass
class GeometrySummary:
    n_points: int
    dim: int
    n_neighbors: int
    geodesic: GeodesicStats
    flatness: Flatness
    intrinsic_dim_twonn: float | None
    intrinsic_dim_mle: float | None
    participation_ratio: float | None = None
    top_pc_share: float | None = None
    n_duplicates: int = 0  # rows identical to an earlier one (left out of dimension estimates)
    silhouette: float | None = None
    linear_separability: float | None = None
    knn_accuracy: float | None = None
    pca_dims_90: int | None = None
    trustworthiness: float | None = None
    projection: str | None = None
    per_class: dict = field(default_factory=dict)

    def flat_metrics(self) -> dict:
        """The headline numbers under the names used everywhere (history, Tune, JSON, DataFrame)."""
        g = self.geodesic
        return {
            "flatness_calibrated_per_class": _pair_weighted(self.per_class, "flatness_calibrated"),
            "flatness_resolved_per_class": _resolved_share(self.per_class),
            "geodesic_ratio_mean_per_class": _pair_weighted(self.per_class, "geodesic_ratio_mean"),
            "participation_ratio_per_class": _class_mean(self.per_class, "participation_ratio"),
            "top_pc_share_per_class": _class_mean(self.per_class, "top_pc_share"),
            "intrinsic_dim_twonn_per_class": _class_mean(self.per_class, "intrinsic_dim_twonn"),
            "class_size_median": (
                float(np.median([c["n_points"] for c in self.per_class.values()])) if self.per_class else None
            ),
            "flatness_calibrated": self.flatness.calibrated,
            "flatness_reference": self.flatness.reference,
            "geodesic_ratio_mean": g.mean,
            "geodesic_ratio_median": g.median,
            "geodesic_ratio_std": g.std,
            "geodesic_ratio_mean_indirect": g.mean_indirect,
            "geodesic_pairs_fraction": g.fraction_pairs_counted,
            "geodesic_components": g.n_components,
            "intrinsic_dim_twonn": self.intrinsic_dim_twonn,
            "intrinsic_dim_mle": self.intrinsic_dim_mle,
            "participation_ratio": self.participation_ratio,
            "top_pc_share": self.top_pc_share,
            "silhouette": self.silhouette,
            "linear_separability": self.linear_separability,
            "knn_accuracy": self.knn_accuracy,
            "pca_dims_90": self.pca_dims_90,
            "trustworthiness": self.trustworthiness,
        }

    def to_dict(self) -> dict:
        return asdict(self)


def _pair_weighted(per_class: dict, key: str) -> float | None:
    """Mean of a per-class value weighted by each class's connected pairs (as if all pairs were pooled)."""
    values = [
        (c[key], c["geodesic"]["n_pairs"])
        for c in per_class.values()
        if c.get(key) is not None and c["geodesic"]["n_pairs"]
    ]
    weight = sum(w for _, w in values)
    return sum(v * w for v, w in values) / weight if weight else None


def _resolved_share(per_class: dict) -> float | None:
    """Share of the classes whose flatness reading could see a bend (``flatness.resolution``); None: unchecked."""
    checked = [c["flatness_resolved"] for c in per_class.values() if c.get("flatness_resolved") is not None]
    return float(np.mean(checked)) if checked else None


def _class_mean(per_class: dict, key: str) -> float | None:
    """Plain mean of a per-class value over the classes that have it (each class counts once)."""
    values = [c[key] for c in per_class.values() if c.get(key) is not None]
    return float(np.mean(values)) if values else None


def class_summary(
    x: np.ndarray, k: int, max_exact: int, n_sources: int, seed: int, check_resolution: bool = True
) -> dict:
    """Geodesic ratio, calibrated flatness (and whether a bend of the class could be seen), dimension, spectrum."""
    duplicates = unique_points(x)[1]
    x = isometric_coordinates(x)  # a class of a wide layer: the same distances in at most its size's dimensions
    neighbors = nearest_neighbors(x, max(k, min(20, len(x) - 1)))
    geo = geodesic_stats(x, k, max_exact=max_exact, n_sources=n_sources, seed=seed, neighbors=neighbors)
    twonn = intrinsic_dim_twonn(x, neighbors=neighbors)
    flat = calibrated_flatness(geo, x, neighbors=neighbors, seed=seed, check_resolution=check_resolution)
    eig = spectrum(x)
    return {
        "n_points": len(x),
        "geodesic": asdict(geo),
        "geodesic_ratio_mean": geo.mean,
        "flatness_reference": flat.reference,
        "flatness_calibrated": flat.calibrated,
        "flatness_resolved": flat.resolved,
        "flatness": asdict(flat),
        "intrinsic_dim_twonn": twonn,
        "intrinsic_dim_mle": intrinsic_dim_mle(x, min(20, len(x) - 1), neighbors=neighbors),
        "participation_ratio": participation_ratio(x, eig),
        "top_pc_share": top_pc_share(x, eig),
        "n_duplicates": duplicates,
    }


def geometry_summary(
    embeddings: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    n_neighbors: int = 10,
    class_names: list[str] | None = None,
    projection: np.ndarray | None = None,
    projection_name: str | None = None,
    max_exact: int = 3000,
    n_sources: int = 300,
    seed: int = 0,
) -> GeometrySummary:
    """Every latent-geometry metric of one set of embeddings (labels optional)."""
    raw = np.asarray(embeddings, dtype=np.float64)
    if raw.ndim != 2 or len(raw) < 3:
        raise ValueError(f"embeddings must be an (N, D) array with N >= 3, got shape {raw.shape}")
    # wider than it has points (a layer's outputs): the same distances in at most N dimensions, for all but the
    # linear probe (it standardises each coordinate, which a rotation changes)
    x = isometric_coordinates(raw)
    k = n_neighbors
    neighbors = nearest_neighbors(x, max(k, 20))
    geo = geodesic_stats(x, k, max_exact=max_exact, n_sources=n_sources, seed=seed, neighbors=neighbors)
    twonn = intrinsic_dim_twonn(x, neighbors=neighbors)
    eig = spectrum(x)
    summary = GeometrySummary(
        n_points=len(x),
        dim=raw.shape[1],
        n_neighbors=k,
        geodesic=geo,
        flatness=calibrated_flatness(geo, x, neighbors=neighbors, seed=seed),
        intrinsic_dim_twonn=twonn,
        intrinsic_dim_mle=intrinsic_dim_mle(x, 20, neighbors=neighbors),
        participation_ratio=participation_ratio(x, eig),
        top_pc_share=top_pc_share(x, eig),
        n_duplicates=unique_points(raw)[1],
        pca_dims_90=pca_dims(x, eig=eig),
    )
    if projection is not None:
        summary.trustworthiness = trustworthiness(raw, projection, k, seed=seed)
        summary.projection = projection_name
    if labels is not None:
        y = np.asarray(labels).astype(np.int64)
        summary.silhouette = silhouette(x, y, seed=seed)
        probe = linear_probe_f1(raw, y, seed=seed)
        summary.linear_separability = None if probe is None else float(probe.mean())
        summary.knn_accuracy = knn_accuracy(y, neighbors[1][:, :k])
        for position, c in enumerate(np.unique(y)):
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            members = raw[y == c]
            if len(members) >= 3:
                summary.per_class[name] = class_summary(members, k, max_exact, n_sources, seed)
                summary.per_class[name]["linear_separability"] = None if probe is None else float(probe[position])
    return summary


def stratified_sample(labels: np.ndarray | None, limit: int, seed: int, n: int | None = None) -> np.ndarray:
    """Positions of about ``limit`` of ``n`` points (a seeded sample; with ``labels`` each class in proportion and
    at least one point of it), in order; all of them when there are no more than ``limit``."""
    n = len(labels) if labels is not None else int(n or 0)
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if labels is None:
        return np.sort(rng.choice(n, limit, replace=False))
    keep = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        keep.append(rng.choice(members, max(1, limit * len(members) // n), replace=False))
    return np.sort(np.concatenate(keep))


def epoch_geometry(embeddings: np.ndarray, labels: np.ndarray, n_neighbors: int = 10, seed: int = 0) -> dict:
    """The subset logged every few epochs (``geotune.metric_names.EPOCH``): within-class flatness and spread first."""
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    neighbors = nearest_neighbors(x, max(n_neighbors, 20))
    geo = geodesic_stats(x, n_neighbors, neighbors=neighbors, seed=seed)
    twonn = intrinsic_dim_twonn(x, neighbors=neighbors)
    # no resolution probe here: it doubles the cost, and what a class can resolve is the final summary's to say
    per_class = {
        c: class_summary(x[y == c], n_neighbors, 3000, 300, seed, check_resolution=False)
        for c in np.unique(y)
        if (y == c).sum() >= 3
    }
    return {
        "flatness_calibrated_per_class": _pair_weighted(per_class, "flatness_calibrated"),
        "participation_ratio_per_class": _class_mean(per_class, "participation_ratio"),
        "flatness_calibrated": calibrated_flatness(geo, x, neighbors=neighbors, seed=seed).calibrated,
        "geodesic_ratio_mean": geo.mean,
        "intrinsic_dim_twonn": twonn,
        "silhouette": silhouette(x, y),
    }
