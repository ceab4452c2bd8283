"""Neural collapse (Papyan, Han & Donoho, PNAS 2020): how far a classifier's last-layer features have collapsed
onto their class means, and those means onto a simplex equiangular tight frame.

With class means mu_c, their mean mu_G (each class counts once, so that an unbalanced split does not tilt it),
the within-class covariance Sigma_W (over all points, each about its own class mean) and the between-class
covariance Sigma_B of the centred means M = [mu_c - mu_G]:

- ``nc1`` = tr(Sigma_W Sigma_B^+) / C: within-class spread against the spread of the means (0: every point on
  its class mean);
- ``nc2_equinorm`` = std / mean of the centred means' norms (0: equal norms);
- ``nc2_equiangular`` = mean over class pairs of |cos(mu_c, mu_c') + 1/(C-1)| (0: the simplex's angles);
- ``nc3_self_duality`` = || W / ||W||_F - M^T / ||M||_F ||_F^2, W the (C, D) weights of a linear head (0: the
  classifier's rows are the centred means, up to scale);
- ``nc4_ncc_mismatch`` = share of points whose nearest class mean is not the network's prediction (0: the network
  decides as a nearest-class-mean classifier).

Every value is invariant to rotations, translations and a common scaling of the features (NC3: of features and
head together). Cost: O(N D + C D^2), milliseconds for a validation split: the loop measures it every epoch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from geotune.metric_names import NEURAL_COLLAPSE


@dataclass
class NeuralCollapse:
    n_classes: int
    nc1: float | None
    nc2_equinorm: float | None
    nc2_equiangular: float | None
    nc3_self_duality: float | None  # None without a linear head's weights
    nc4_ncc_mismatch: float | None  # None without the network's predictions

    def to_dict(self) -> dict:
        return asdict(self)

    def flat_metrics(self) -> dict:
        return {name: getattr(self, name) for name in NEURAL_COLLAPSE}


def class_means(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes present, their means (C, D))."""
    classes, inverse = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(classes), x.shape[1]))
    np.add.at(sums, inverse, x)
    return classes, sums / np.bincount(inverse)[:, None]


def neural_collapse(
    embeddings: np.ndarray,
    labels: np.ndarray,
    head_weight: np.ndarray | None = None,
    predictions: np.ndarray | None = None,
) -> NeuralCollapse:
    """The four measures of neural collapse of (N, D) features with their labels; ``head_weight`` (C, D) rows in
    the order of the sorted class labels, ``predictions`` the network's class per point. Fewer than two classes:
    every value None."""
    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels)
    classes, means = class_means(x, y)
    c = len(classes)
    if c < 2:
        return NeuralCollapse(c, None, None, None, None, None)
    centred = means - means.mean(0)  # (C, D)
    within = x - means[np.searchsorted(classes, y)]
    sigma_w = within.T @ within / len(x)
    # tr(Sigma_W Sigma_B^+) with Sigma_B = centred^T centred / C of rank C-1 <= D: its pseudo-inverse from the SVD
    # of the (C, D) centred means (their non-zero directions) rather than a (D, D) pinv
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    keep = s > s.max() * 1e-10 if s.size and s.max() > 0 else np.zeros_like(s, dtype=bool)
    basis, power = vt[keep], s[keep] ** 2 / c  # Sigma_B = basis^T diag(power) basis
    nc1 = float(np.einsum("kd,de,ke->k", basis, sigma_w, basis) @ (1.0 / power) / c) if keep.any() else None
    norms = np.linalg.norm(centred, axis=1)
    nc2_equinorm = float(norms.std() / norms.mean()) if norms.mean() > 0 else None
    unit = centred / np.maximum(norms, 1e-300)[:, None]
    cos = unit @ unit.T
    off = ~np.eye(c, dtype=bool)
    nc2_equiangular = float(np.abs(cos[off] + 1.0 / (c - 1)).mean())
    nc3 = None
    if head_weight is not None:
        w = np.asarray(head_weight, dtype=np.float64)
        if w.shape == centred.shape and np.linalg.norm(w) > 0 and np.linalg.norm(centred) > 0:
            nc3 = float(np.sum((w / np.linalg.norm(w) - centred / np.linalg.norm(centred)) ** 2))
    nc4 = None
    if predictions is not None:
        sq = (x**2).sum(1)[:, None] - 2 * x @ means.T + (means**2).sum(1)[None, :]
        nearest = classes[np.argmin(sq, axis=1)]
        nc4 = float(np.mean(nearest != np.asarray(predictions)))
    return NeuralCollapse(c, nc1, nc2_equinorm, nc2_equiangular, nc3, nc4)
