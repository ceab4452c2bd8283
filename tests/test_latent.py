"""Latent-geometry metrics against ground truths with known answers."""

import numpy as np
import pytest

from geotune.analysis.latent import (
    geodesic_stats,
    geometry_summary,
    intrinsic_dim_mle,
    intrinsic_dim_twonn,
    knn_accuracy,
    linear_probe_f1,
    linear_separability,
    participation_ratio,
    pca_dims,
    silhouette,
    top_pc_share,
)
from geotune.analysis.neighbors import graph_geodesics, knn_graph, nearest_neighbors

RNG = np.random.default_rng(0)


def embed(points: np.ndarray, dim: int = 64, seed: int = 0) -> np.ndarray:
    """Isometric embedding into R^dim by a random orthonormal frame."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, points.shape[1])))
    return points @ q.T


def unit_square(n=1000, seed=1):
    return embed(np.random.default_rng(seed).uniform(0, 1, (n, 2)))


def unit_sphere(n=1000, seed=2):
    p = np.random.default_rng(seed).standard_normal((n, 3))
    return embed(p / np.linalg.norm(p, axis=1, keepdims=True))


def swiss_roll(n=1000, seed=3):
    from sklearn.datasets import make_swiss_roll

    return embed(make_swiss_roll(n, random_state=seed)[0])


def test_collinear_points_have_ratio_one():
    line = np.outer(RNG.uniform(-3, 3, 300), RNG.standard_normal(64))
    stats = geodesic_stats(line, 10)
    assert stats.mean == pytest.approx(1.0, abs=1e-6) and stats.max == pytest.approx(1.0, abs=1e-6)
    assert stats.n_components == 1 and stats.fraction_pairs_counted == 1.0


def test_geodesics_equal_isomap_dist_matrix():
    from sklearn.manifold import Isomap

    x = swiss_roll(400)
    for k in (6, 10):
        ours = graph_geodesics(x, k)
        iso = Isomap(n_neighbors=k).fit(x).dist_matrix_
        assert np.isfinite(ours).all()
        assert np.allclose(ours, iso, rtol=1e-9, atol=1e-9)


def test_flat_square_sphere_swiss_roll_order():
    square, sphere, roll = (geodesic_stats(x, 10).mean for x in (unit_square(), unit_sphere(), swiss_roll()))
    assert 1.0 <= square <= 1.1
    assert sphere > square + 0.05
    assert roll > sphere + 0.3


def test_disconnected_components_count_only_connected_pairs():
    a = RNG.standard_normal((100, 5))
    x = np.vstack([a, a + 1000.0])
    stats = geodesic_stats(x, 5)
    assert stats.n_components == 2
    assert stats.fraction_pairs_counted == pytest.approx(2 * (100 * 99 / 2) / (200 * 199 / 2))
    assert np.isfinite(stats.mean)


def test_duplicate_points_do_not_break_the_graph_or_ratio():
    x = RNG.standard_normal((50, 4))
    x = np.vstack([x, x[:10]])  # exact duplicates
    graph = knn_graph(x, 5)
    assert (graph.data > 0).all()
    stats = geodesic_stats(x, 5)
    assert np.isfinite(stats.mean) and stats.n_components == 1


def test_sampled_sources_estimate_the_exact_mean():
    x = unit_sphere(1500)
    exact = geodesic_stats(x, 10)
    sampled = geodesic_stats(x, 10, max_exact=1000, n_sources=300)
    assert exact.sampled_sources is None and sampled.sampled_sources == 300
    assert sampled.mean == pytest.approx(exact.mean, rel=0.02)
    assert sampled.n_pairs == pytest.approx(exact.n_pairs, rel=0.01)


def test_complete_small_classes_are_flagged_trivial():
    stats = geodesic_stats(RNG.standard_normal((8, 3)), 10)
    assert stats.trivial and stats.mean == pytest.approx(1.0)


@pytest.mark.parametrize("d, lo, hi", [(5, 4.0, 6.0), (2, 1.7, 2.4)])
def test_intrinsic_dimension(d, lo, hi):
    if d == 2:
        x = embed(np.random.default_rng(4).uniform(0, 1, (1000, 2)))
    else:
        x = embed(np.random.default_rng(5).standard_normal((1000, 5)))
    assert lo <= intrinsic_dim_twonn(x) <= hi
    assert lo <= intrinsic_dim_mle(x, 20) <= hi


def test_silhouette_equals_scikit_learn():
    from sklearn.metrics import silhouette_score

    x = np.vstack([RNG.standard_normal((60, 8)) + c for c in (0, 3, 6)])
    y = np.repeat([0, 1, 2], 60)
    assert silhouette(x, y) == pytest.approx(silhouette_score(x, y), abs=1e-12)


def test_the_linear_probe_scores_each_class_on_its_own():
    # class 0 stands apart; classes 1 and 2 are drawn from one distribution, so no hyperplane splits them
    y = np.repeat([0, 1, 2], 80)
    x = np.vstack([RNG.standard_normal((80, 6)) + 10 * np.eye(6)[0], RNG.standard_normal((160, 6))])
    f1 = linear_probe_f1(x, y)
    assert f1.shape == (3,) and f1[0] > 0.9
    assert max(f1[1], f1[2]) < 0.8
    assert linear_separability(x, y) == pytest.approx(f1.mean())
    summary = geometry_summary(x, y, class_names=["a", "b", "c"])
    assert [summary.per_class[c]["linear_separability"] for c in "abc"] == pytest.approx(f1.tolist())


def test_separability_knn_accuracy_and_pca_dims():
    y = np.repeat([0, 1, 2], 80)
    # centroids on a simplex (10 e_c), so each class has a one-vs-rest linear boundary
    separated = np.vstack([RNG.standard_normal((80, 6)) + 10 * np.eye(6)[c] for c in range(3)])
    mixed = RNG.standard_normal((240, 6))
    assert linear_separability(separated, y) == pytest.approx(1.0)
    assert linear_separability(mixed, y) < 0.8
    _, idx = nearest_neighbors(separated, 5)
    assert knn_accuracy(y, idx) == 1.0
    _, idx = nearest_neighbors(mixed, 5)
    assert knn_accuracy(y, idx) < 0.6
    plane = embed(RNG.standard_normal((500, 3)) * [10.0, 5.0, 0.01])
    assert pca_dims(plane) == 2


@pytest.mark.slow
def test_geometry_summary_per_class_and_headline_names():
    x = np.vstack([unit_square(800, seed=7), swiss_roll(800, seed=8) + 100])
    y = np.repeat([0, 1], 800)
    summary = geometry_summary(x, y, n_neighbors=10, class_names=["square", "roll"])
    flat = summary.flat_metrics()
    for key in (
        "geodesic_ratio_mean",
        "flatness_calibrated",
        "flatness_calibrated_per_class",
        "intrinsic_dim_twonn",
        "intrinsic_dim_mle",
        "participation_ratio",
        "participation_ratio_per_class",
        "top_pc_share_per_class",
        "silhouette",
        "linear_separability",
        "knn_accuracy",
        "pca_dims_90",
    ):
        assert flat[key] is not None, key
    assert set(summary.per_class) == {"square", "roll"}
    roll, square = summary.per_class["roll"], summary.per_class["square"]
    assert roll["flatness_calibrated"] > 1.5 and abs(square["flatness_calibrated"] - 1) < 0.03
    # the headline weights each class by its connected pairs (equal sizes: the plain mean)
    assert flat["flatness_calibrated_per_class"] == pytest.approx(
        (roll["flatness_calibrated"] + square["flatness_calibrated"]) / 2, rel=1e-3
    )
    assert flat["participation_ratio_per_class"] == pytest.approx(
        (roll["participation_ratio"] + square["participation_ratio"]) / 2
    )
    assert summary.geodesic.n_components == 2


@pytest.mark.parametrize("estimator", [intrinsic_dim_twonn, intrinsic_dim_mle])
def test_duplicated_points_do_not_collapse_the_dimension(estimator):
    x = embed(np.random.default_rng(9).standard_normal((1000, 5)))
    with_duplicates = np.vstack([x, x[:50]])  # 5% duplicated rows (identical images give identical embeddings)
    assert estimator(with_duplicates) == pytest.approx(estimator(x), rel=1e-9)
    neighbors = nearest_neighbors(with_duplicates, 20)  # precomputed neighbours with zero distances are not trusted
    assert estimator(with_duplicates, neighbors=neighbors) == pytest.approx(estimator(x), rel=1e-9)
    summary = geometry_summary(with_duplicates, n_neighbors=10)
    assert summary.n_duplicates == 50 and 4.0 <= summary.intrinsic_dim_mle <= 6.0


def test_participation_ratio_and_top_axis_share_of_known_spectra():
    # rows +/- a_i e_i: zero mean, covariance diag(a_i^2 / d), so both values are exact
    a2 = np.array([4.0, 1.0, 1.0, 0.25, 0.0625])
    x = embed(np.vstack([np.diag(np.sqrt(a2)), -np.diag(np.sqrt(a2))]))
    assert participation_ratio(x) == pytest.approx(a2.sum() ** 2 / (a2**2).sum(), rel=1e-9)
    assert top_pc_share(x) == pytest.approx(a2.max() / a2.sum(), rel=1e-9)
    for dims in (1, 5, 12):  # isotropic: d (sampling spreads the eigenvalues: a little below d)
        cloud = embed(np.random.default_rng(dims).standard_normal((2000, dims)))
        assert 0.95 * dims <= participation_ratio(cloud) <= dims + 1e-9
        assert top_pc_share(cloud) == pytest.approx(1.0 / dims, rel=0.15)
    needle = embed(np.outer(np.random.default_rng(0).standard_normal(500), np.r_[1.0, 0.01]))
    assert participation_ratio(needle) < 1.001 and top_pc_share(needle) > 0.999


def test_a_set_wider_than_it_has_points_is_measured_in_its_own_span():
    """A layer's outputs are often wider (2,048) than a class has points (126): isometric_coordinates rotates a set
    onto its span (at most N coordinates), keeping every distance, duplicates identical; the summary of a noisy
    swiss roll in 8 dimensions and of the same set rotated into 1,000 dimensions agree to 1e-4 in every metric
    but the linear probe (it standardises each coordinate, which no rotation keeps)."""
    from scipy.spatial.distance import pdist

    from geotune.analysis.neighbors import isometric_coordinates

    rng = np.random.default_rng(5)
    t, h = rng.uniform(0, 3 * np.pi, 300), rng.uniform(0, 5, 300)
    narrow = np.c_[t * np.cos(t), h, t * np.sin(t), 0.05 * rng.standard_normal((300, 5))]
    narrow[6] = narrow[3]  # a duplicated point (both of class 0)
    wide = narrow @ np.linalg.qr(rng.standard_normal((1000, 8)))[0].T + rng.standard_normal(1000)
    wide[6] = wide[3]  # a threaded matrix product need not give identical rows the same rounding
    reduced = isometric_coordinates(wide)
    assert reduced.shape == (300, 300) and np.array_equal(reduced[6], reduced[3])
    assert np.allclose(pdist(reduced), pdist(wide), rtol=1e-9, atol=1e-9)
    assert np.array_equal(isometric_coordinates(narrow), narrow)  # no wider than it has points: as it is
    labels = np.arange(300) % 3
    small, large = geometry_summary(narrow, labels), geometry_summary(wide, labels)
    assert large.dim == 1000 and small.n_duplicates == large.n_duplicates == 1
    assert large.per_class["0"]["n_duplicates"] == 1
    a, b = small.flat_metrics(), large.flat_metrics()
    compared = [k for k, v in a.items() if isinstance(v, float) and k != "linear_separability"]
    assert len(compared) >= 20
    # 1e-4, not 1e-6, for the duplicated pair: which of two equally near neighbours comes first is decided by
    # rounding, and the raw within-class ratio moved by 4e-5 when it turned (without the duplicate: 1e-6 holds)
    assert {k: b[k] for k in compared} == pytest.approx({k: a[k] for k in compared}, rel=1e-4, abs=1e-9)
