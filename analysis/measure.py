"""One set of embeddings measured as `geotune geometry` and `gt.measure` do: the geometry summary (per class
with labels), neural collapse with labels, on a seeded sample of at most ``max_points``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from geotune.analysis.collapse import NeuralCollapse, neural_collapse
from geotune.analysis.latent import (
    GeometrySummary,
    geometry_summary,
    pca_projection,
    stratified_sample,
    umap_projection,
)
from geotune.errors import ConfigError


@dataclass
class Measurement:
    """``metrics`` (one flat dict), the whole ``geometry`` summary (per class too) and ``collapse`` (neural
    collapse, with labels); ``n_measured`` of the ``n_points`` given."""

    metrics: dict[str, Any]
    geometry: GeometrySummary
    collapse: NeuralCollapse | None
    n_points: int
    n_measured: int


def measure_embeddings(
    x: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    class_names: list[str] | None = None,
    logits: np.ndarray | None = None,
    head_weight: np.ndarray | None = None,
    n_neighbors: int = 10,
    max_points: int = 5000,
    seed: int = 0,
    umap: bool = False,
) -> Measurement:
    """Checked (N, D) embeddings measured: a seeded sample of at most ``max_points`` (classes in proportion),
    trustworthiness on a PCA (or ``umap``) projection, neural collapse with ``labels`` (NC4 with ``logits``,
    NC3 with a linear head's ``head_weight``)."""
    kept = stratified_sample(labels, max_points, seed, n=len(x))
    sample, y = x[kept], None if labels is None else labels[kept]
    predicted = None if logits is None else logits[kept].argmax(1)
    if n_neighbors >= len(sample):
        raise ConfigError(f"--n-neighbors {n_neighbors}: must be < the number of embeddings ({len(sample)})")
    projection = umap_projection(sample, n_neighbors, seed) if umap else pca_projection(sample)
    summary = geometry_summary(
        sample,
        y,
        n_neighbors=n_neighbors,
        class_names=class_names,
        projection=projection,
        projection_name="umap" if umap else "pca",
        seed=seed,
    )
    collapse = None if y is None else neural_collapse(sample, y, head_weight, predicted)
    metrics = summary.flat_metrics() | (collapse.flat_metrics() if collapse is not None else {})
    return Measurement(metrics, summary, collapse, n_points=len(x), n_measured=len(sample))
