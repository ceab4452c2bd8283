"""Representation similarity: linear CKA (Kornblith, Norouzi, Lee & Hinton, ICML 2019) between two networks'
features of the same images, in the same order.

CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) on column-centred X (N, D1) and Y (N, D2): 1 when one is a
rotation and scaling of the other, invariant to isotropic scaling and orthogonal transforms of either, not to
arbitrary invertible maps (which is what lets it tell two trained networks apart). This is the paper's (biased)
estimator; with N >= 10 x D, its bias is small against the differences between networks it is used to read.
"""

from __future__ import annotations

import numpy as np


def linear_cka(x: np.ndarray, y: np.ndarray) -> float | None:
    """Linear CKA of two (N, D) feature matrices of the same N inputs; None when either has no variance."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b):
        raise ValueError(f"CKA needs two (N, D) matrices of the same N, got {a.shape} and {b.shape}")
    a = a - a.mean(0)
    b = b - b.mean(0)
    # through the D x D cross-products: O(N D^2), never the N x N Gram matrices
    cross = np.linalg.norm(b.T @ a) ** 2
    norms = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(cross / norms) if norms > 0 else None


def cka_matrix(features: list[np.ndarray]) -> np.ndarray:
    """Pairwise linear CKA of several (N, D) feature matrices of the same inputs (NaN where undefined)."""
    n = len(features)
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            value = linear_cka(features[i], features[j])
            out[i, j] = out[j, i] = np.nan if value is None else value
    return out
