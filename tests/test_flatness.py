"""Calibrated flatness against ground truths: flat clouds of many shapes read 1, curved sets their known excess.

Every set has n about 1,000 points (other sizes where stated), k = 10, and lives in
64 ambient dimensions through a random orthonormal frame. Tolerances are stated
per test. Exact values: over uniform pairs, the mean great-circle / chord ratio of
a sphere is pi - 2, of a circle 4G/pi (G = Catalan's constant), of an arc of angle
A the integral in ``arc_exact``.
"""

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.sparse.csgraph import connected_components

from geotune.analysis.flatness import chord_flatness, support_tolerance
from geotune.analysis.latent import geometry_summary, intrinsic_dim_twonn
from geotune.analysis.neighbors import knn_graph

K = 10
FLAT_TOLERANCE = 0.03  # every flat case, every seed and size: |calibrated - 1| <= 0.03


def embed(points: np.ndarray, seed: int, dim: int = 64) -> np.ndarray:
    """Isometric embedding into R^dim by a random orthonormal frame."""
    q, _ = np.linalg.qr(np.random.default_rng(seed + 1000).standard_normal((dim, points.shape[1])))
    return points @ q.T


def gaussian(d, n=1000, seed=0, std=None):
    std = np.ones(d) if std is None else np.asarray(std)
    return embed(np.random.default_rng(seed).standard_normal((n, d)) * std, seed)


def cube(d, n=1000, seed=0):
    return embed(np.random.default_rng(seed).uniform(0, 1, (n, d)), seed)


def sphere(n=1000, seed=0):
    p = np.random.default_rng(seed).standard_normal((n, 3))
    return embed(p / np.linalg.norm(p, axis=1, keepdims=True), seed)


def arc(angle, n=1000, seed=0):
    t = np.random.default_rng(seed).uniform(0, angle, n)
    return embed(np.stack([np.cos(t), np.sin(t)], 1), seed)


def arc_sample_exact(angle, n=1000, seed=0) -> tuple[float, int]:
    """Exact mean arc length / chord of ``arc(angle, n, seed)`` over the pairs the metric measures.

    Those are the pairs in one component of the kNN graph: a 1-D sample's graph can split
    (a dense run of more than k points keeps its neighbours to itself). Also returns the
    number of components.
    """
    t = np.random.default_rng(seed).uniform(0, angle, n)
    x = arc(angle, n, seed)
    n_components, component = connected_components(knn_graph(x, K), directed=False)
    i, j = np.triu_indices(n, 1)
    same = component[i] == component[j]
    length = np.abs(t[i] - t[j])[same]
    if angle >= 2 * math.pi:  # a closed circle: the shorter way round
        length = np.minimum(length, 2 * math.pi - length)
    return float((length / np.linalg.norm(x[i[same]] - x[j[same]], axis=1)).mean()), n_components


def swiss_roll(n=1000, seed=0):
    """sklearn's swiss roll and its exact mean geodesic / chord ratio (the roll unrolled along its spiral)."""
    from sklearn.datasets import make_swiss_roll

    x, t = make_swiss_roll(n, random_state=seed)
    along = 0.5 * (t * np.sqrt(1 + t * t) + np.arcsinh(t))  # arc length of the spiral r = t
    flat = np.stack([along, x[:, 1]], 1)
    i, j = np.triu_indices(n, 1)
    exact = float((np.linalg.norm(flat[i] - flat[j], axis=1) / np.linalg.norm(x[i] - x[j], axis=1)).mean())
    return embed(x, seed), exact


def arc_exact(angle: float) -> float:
    """Mean over uniform pairs of an arc of ``angle`` of arc length / chord: theta has density 2(A - theta)/A^2."""
    value, _ = integrate.quad(
        lambda t: (t / (2 * math.sin(t / 2)) if t > 0 else 1.0) * 2 * (angle - t) / angle**2, 0, angle
    )
    return value


def calibrated(x: np.ndarray, seed: int = 0) -> float:
    return chord_flatness(x, K, intrinsic_dim_twonn(x), seed=seed).calibrated


FLAT = {
    "isotropic 2-D Gaussian": lambda n, s: gaussian(2, n, s),
    "isotropic 5-D Gaussian": lambda n, s: gaussian(5, n, s),
    "isotropic 12-D Gaussian": lambda n, s: gaussian(12, n, s),
    "anisotropic Gaussian, variances 1 to 1e-4": lambda n, s: gaussian(5, n, s, np.sqrt([1, 1e-1, 1e-2, 1e-3, 1e-4])),
    "64-D Gaussian, power-law spectrum (std 1/i)": lambda n, s: gaussian(64, n, s, 1.0 / np.arange(1, 65)),
    "uniform 3-D cube": lambda n, s: cube(3, n, s),
    "uniform 10-D cube": lambda n, s: cube(10, n, s),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", FLAT)
def test_flat_clouds_of_any_shape_read_one(name):
    for n, seed in ((1000, 0), (1000, 1), (500, 2)):
        value = calibrated(FLAT[name](n, seed), seed)
        assert abs(value - 1.0) <= FLAT_TOLERANCE, (name, n, seed, value)


def test_separated_flat_clusters_read_one_per_class():
    rng = np.random.default_rng(7)
    y = np.arange(1000) % 10
    x = gaussian(6, 1000, seed=7) + 40.0 * rng.standard_normal((10, 64))[y]
    metrics = geometry_summary(x, y, n_neighbors=K).flat_metrics()
    assert abs(metrics["flatness_calibrated_per_class"] - 1.0) <= FLAT_TOLERANCE
    assert metrics["geodesic_ratio_mean_per_class"] > 1.2, "the raw ratio of the same clusters is far from 1"


@pytest.mark.slow
@pytest.mark.parametrize("n", [500, 1000, 2000])
def test_sphere_reads_its_exact_excess(n):
    value = calibrated(sphere(n, seed=n), seed=n)
    assert value >= 1.08
    assert abs(value - (math.pi - 2)) <= 0.03, value  # exact mean great-circle / chord ratio over uniform pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_swiss_roll_reads_far_above_flat(seed):
    x, exact = swiss_roll(seed=seed)
    value = calibrated(x, seed)
    assert value >= 1.5, value
    assert value <= exact * 1.05, (value, exact)  # shortcuts can only lower the chord geodesics


@pytest.mark.slow
def test_circle_reads_its_exact_excess():
    catalan = 0.915965594177219
    for seed in (0, 1):
        value = calibrated(arc(2 * math.pi, seed=seed), seed)
        assert value >= 1.1
        assert abs(value - 4 * catalan / math.pi) <= 0.01, value  # population value, 1.1662
        assert abs(value - arc_sample_exact(2 * math.pi, seed=seed)[0]) <= 0.005, value


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 3])  # seed 3: the kNN graph splits in two (924 + 76 points)
def test_arcs_read_their_exact_excess_and_increase_with_curvature(seed):
    angles = (0.25 * math.pi, 0.5 * math.pi, math.pi, 1.5 * math.pi)
    values = [calibrated(arc(a, seed=seed), seed) for a in angles]
    assert all(b > a for a, b in zip(values, values[1:])), values
    for a, v in zip(angles, values):
        exact, n_components = arc_sample_exact(a, seed=seed)
        assert abs(v - exact) <= 0.005, (a, v, exact)
        if n_components == 1:  # then the sample's pairs are all pairs: close to the population value
            assert abs(exact - arc_exact(a)) <= 0.02


@pytest.mark.parametrize(
    "make",
    [lambda: gaussian(12, seed=4), lambda: cube(3, seed=4), lambda: sphere(seed=4), lambda: swiss_roll(seed=4)[0]],
)
@pytest.mark.slow
def test_a_small_change_of_the_dimension_estimate_barely_moves_the_value(make):
    x = make()
    d = intrinsic_dim_twonn(x)
    values = [chord_flatness(x, K, d + delta).calibrated for delta in (-0.05, 0.0, 0.05)]
    assert max(abs(v - values[1]) for v in values) / values[1] < 0.01, values


def test_support_tolerance_follows_the_empty_space_law():
    # a uniform point misses every ball of radius tau * r_k with probability exp(-k tau^d) = 1 - 0.99
    for d in (1.0, 2.0, 2.5, 12.0):
        tau = support_tolerance(10, d)
        assert math.exp(-10 * tau**d) == pytest.approx(0.01, rel=1e-9)
    assert support_tolerance(10, 2.0) < support_tolerance(10, 2.05) < support_tolerance(10, 12.0) < 1.0


def test_reference_is_the_raw_ratio_over_the_calibrated_one():
    summary = geometry_summary(gaussian(8, 800, seed=5), n_neighbors=K)
    flat = summary.flatness
    assert flat.raw == pytest.approx(summary.geodesic.mean)
    assert flat.reference == pytest.approx(flat.raw / flat.calibrated)
    assert flat.raw > 1.3 and flat.reference > 1.3  # the raw ratio of flat data is mostly the kNN graph's detours
    assert flat.n_points == 800 and flat.n_pairs > 40_000 and 0.9 < flat.direct_fraction <= 1.0


@pytest.mark.slow
def test_large_sets_are_measured_on_a_seeded_subsample():
    x = gaussian(4, 3500, seed=6)
    a = chord_flatness(x, K, 4.0, seed=1)
    b = chord_flatness(x, K, 4.0, seed=1)
    assert a.n_points == 3000 and a.calibrated == b.calibrated
    assert abs(a.calibrated - 1.0) <= FLAT_TOLERANCE


def test_small_sets_read_flat_whatever_their_shape_which_the_report_says():
    from geotune.analysis.flatness import MIN_RESOLVED_POINTS

    small = [calibrated(sphere(27, seed=s), s) for s in range(3)]
    resolved = [calibrated(sphere(2 * MIN_RESOLVED_POINTS, seed=s), s) for s in range(3)]
    assert max(small) <= 1.01, small  # a sphere of 27 points: no curvature visible
    assert min(resolved) >= 1.05, resolved  # of 100 points: clearly curved
