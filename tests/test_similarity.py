"""Linear CKA against what it must be: invariances, a constructed case with a closed form, and the paper's HSIC
formulation computed through N x N Gram matrices."""

import numpy as np
import pytest

from geotune.analysis.similarity import cka_matrix, linear_cka


def centred_orthonormal(n: int, d: int, seed: int) -> np.ndarray:
    """(n, d) columns that are centred, orthogonal and of equal norm."""
    x = np.random.default_rng(seed).standard_normal((n, d))
    q, _ = np.linalg.qr(x - x.mean(0))
    return q


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orthogonal_maps_isotropic_scaling_and_shifts_leave_cka_at_1(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((300, 12)) @ rng.standard_normal((12, 12))  # correlated columns
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    assert linear_cka(x, 4.2 * x @ q + 3.0) == pytest.approx(1.0, abs=1e-12)
    wide, _ = np.linalg.qr(rng.standard_normal((20, 12)))  # an isometric embedding into more dimensions
    assert linear_cka(x, x @ wide.T) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("k, d", [(1, 4), (3, 12), (8, 8)])
def test_a_subset_of_equal_uncorrelated_directions_reads_sqrt_k_over_d(k, d):
    """X with d centred orthogonal columns of equal norm, Y its first k: ||Y^T X||^2 = k, ||X^T X|| = sqrt(d),
    ||Y^T Y|| = sqrt(k), so CKA = sqrt(k / d)."""
    x = centred_orthonormal(200, d, seed=k)
    assert linear_cka(x, x[:, :k]) == pytest.approx(np.sqrt(k / d), abs=1e-12)


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al.'s definition with linear kernels: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), HSIC = tr(KHLH)."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h)

    return float(hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_)))


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_the_hsic_formulation(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((150, 10))
    y = np.tanh(x @ rng.standard_normal((10, 7))) + 0.3 * rng.standard_normal((150, 7))
    assert linear_cka(x, y) == pytest.approx(hsic_cka(x, y), rel=1e-10)
    assert 0.0 < linear_cka(x, y) < 1.0


def test_independent_features_read_near_zero_and_the_matrix_is_symmetric():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((5000, 4)), rng.standard_normal((5000, 4))
    assert linear_cka(a, b) < 0.01  # the biased estimator's floor at N = 5000, D = 4: about D / N
    m = cka_matrix([a, b, 2 * a])
    assert m.shape == (3, 3) and np.allclose(m, m.T) and m[0, 2] == pytest.approx(1.0)
    assert linear_cka(np.ones((10, 3)), a[:10]) is None  # no variance: undefined
    with pytest.raises(ValueError, match="same N"):
        linear_cka(a, b[:10])
