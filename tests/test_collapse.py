"""Neural-collapse measures against ground truths: a simplex ETF reads 0 everywhere, a mixture with an exact
within-class covariance reads nc1 in closed form, the values do not move under rotation, translation or scale,
and they agree with a plain loop written from the paper's formulas."""

import numpy as np
import pytest

from geotune.analysis.collapse import neural_collapse


def simplex_etf(c: int, d: int, radius: float = 3.0, seed: int = 0) -> np.ndarray:
    """(C, D) vertices of a regular simplex centred at 0 with norm ``radius``, in a random orientation of R^D."""
    vertices = np.eye(c) - 1.0 / c  # centred, equal norms, cosines -1/(C-1)
    vertices *= radius / np.linalg.norm(vertices[0])
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, c)))
    return vertices @ q.T


def exact_spread(means: np.ndarray, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Each class as its mean +- a along every axis (2D points): its mean exactly mu_c, its covariance exactly
    (a^2 / D) I."""
    c, d = means.shape
    offsets = np.vstack([a * np.eye(d), -a * np.eye(d)])
    x = np.vstack([m + offsets for m in means])
    return x, np.repeat(np.arange(c), 2 * d)


@pytest.mark.parametrize("c, d", [(3, 8), (10, 64), (10, 10)])
def test_a_simplex_etf_without_spread_has_collapsed_completely(c, d):
    means = simplex_etf(c, d)
    labels = np.repeat(np.arange(c), 5)
    x = means[labels] + 7.0  # a translation changes nothing
    nc = neural_collapse(x, labels, head_weight=2.5 * means, predictions=labels)
    assert nc.n_classes == c
    for value in (nc.nc1, nc.nc2_equinorm, nc.nc2_equiangular, nc.nc3_self_duality, nc.nc4_ncc_mismatch):
        assert value == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("c, d, a, radius", [(4, 16, 0.5, 3.0), (10, 32, 2.0, 1.5), (3, 5, 1.0, 1.0)])
def test_nc1_of_an_exact_mixture_has_its_closed_form(c, d, a, radius):
    """Sigma_W = (a^2 / D) I; simplex means of norm r give Sigma_B eigenvalues r^2 / (C-1) (C-1 times), so
    nc1 = (a^2 / D) (C-1)^2 / (r^2 C)."""
    x, labels = exact_spread(simplex_etf(c, d, radius), a)
    expected = (a**2 / d) * (c - 1) ** 2 / (radius**2 * c)
    assert neural_collapse(x, labels).nc1 == pytest.approx(expected, rel=1e-10)


def test_unequal_means_read_their_norm_spread_and_angles():
    # two classes at +-e1 and one at 3 e2, centred: the measures against a direct computation of the definitions
    means = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0]])
    x, labels = exact_spread(means, 0.1)
    nc = neural_collapse(x, labels)
    centred = means - means.mean(0)
    norms = np.linalg.norm(centred, axis=1)
    assert nc.nc2_equinorm == pytest.approx(norms.std() / norms.mean())
    cos = [centred[i] @ centred[j] / (norms[i] * norms[j]) for i in range(3) for j in range(3) if i != j]
    assert nc.nc2_equiangular == pytest.approx(np.mean(np.abs(np.array(cos) + 0.5)))
    assert nc.nc2_equinorm > 0.1 and nc.nc2_equiangular > 0.2  # far from a simplex, and read so


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotation_translation_and_scale_change_nothing(seed):
    rng = np.random.default_rng(seed)
    c, d = 5, 12
    labels = rng.integers(0, c, 400)
    x = rng.standard_normal((c, d))[labels] * 2 + rng.standard_normal((400, d))
    w = rng.standard_normal((c, d))
    predictions = rng.integers(0, c, 400)
    base = neural_collapse(x, labels, w, predictions)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    moved = neural_collapse(3.7 * x @ q.T + 5.0, labels, 0.2 * w @ q.T, predictions)
    for name in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3_self_duality", "nc4_ncc_mismatch"):
        assert getattr(moved, name) == pytest.approx(getattr(base, name), rel=1e-9, abs=1e-12), name


def reference_nc1(x: np.ndarray, labels: np.ndarray) -> float:
    """Papyan et al.'s NC1 written out: class loop, global mean of the class means, numpy's pinv of Sigma_B."""
    classes = np.unique(labels)
    mu = np.array([x[labels == k].mean(0) for k in classes])
    mu_g = mu.mean(0)
    sigma_w = sum((x[labels == k] - mu[i]).T @ (x[labels == k] - mu[i]) for i, k in enumerate(classes)) / len(x)
    sigma_b = sum(np.outer(m - mu_g, m - mu_g) for m in mu) / len(classes)
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, rcond=1e-10)) / len(classes))


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_a_plain_computation_of_the_definitions(seed):
    rng = np.random.default_rng(seed)
    c, d = 7, 20
    labels = rng.integers(0, c, 600)
    x = rng.standard_normal((c, d))[labels] * 3 + rng.standard_normal((600, d)) * rng.uniform(0.5, 2, d)
    nc = neural_collapse(x, labels, predictions=np.zeros(600, dtype=int))
    assert nc.nc1 == pytest.approx(reference_nc1(x, labels), rel=1e-6)
    mu = np.array([x[labels == k].mean(0) for k in range(c)])
    nearest = np.argmin(((x[:, None, :] - mu[None]) ** 2).sum(-1), axis=1)
    assert nc.nc4_ncc_mismatch == pytest.approx(np.mean(nearest != 0))


def test_nc1_falls_as_classes_shrink_towards_their_means():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 100)
    means = simplex_etf(4, 10)
    values = [neural_collapse(means[labels] + s * rng.standard_normal((400, 10)), labels).nc1 for s in (1.0, 0.3, 0.1)]
    assert values[0] > values[1] > values[2] > 0


def test_one_class_or_a_head_of_another_shape_gives_no_value():
    x = np.random.default_rng(0).standard_normal((20, 4))
    assert neural_collapse(x, np.zeros(20, dtype=int)).nc1 is None
    labels = np.repeat([0, 1], 10)
    assert neural_collapse(x, labels, head_weight=np.ones((3, 4))).nc3_self_duality is None  # not C x D
