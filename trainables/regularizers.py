"""Latent-geometry regularizers on a mini-batch of embeddings.

total loss = task loss + weight * sum(lambda_reg * regularizer)

- **geodesic**: penalise (geodesic/Euclidean - target_ratio)^2 over connected
  pairs of the batch's symmetric kNN graph. Shortest paths are *chosen* without
  gradient (scipy Dijkstra with predecessors on the CPU), then their lengths are
  re-summed from the live pairwise distances, so the gradient is exact: a
  shortest-path length is piecewise linear in the edge lengths and its gradient
  is the indicator of the edges on the chosen path (as in topological
  autoencoders, Moor et al. 2020).
- **geometry**: intra-class spread / inter-centroid separation, plus a pull of a
  differentiable intrinsic-dimension estimate (Levina-Bickel MLE or TwoNN, with
  neighbour indices held fixed) towards ``target_dim``.
- **combined**: both, each with its own lambda_reg, start_epoch and every_n_steps.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.csgraph import dijkstra

from study.config import GeometryConfig, RegularizerConfig

EPS = 1e-12


def pairwise_distances(z: torch.Tensor) -> torch.Tensor:
    """Differentiable Euclidean distance matrix; no NaN gradient at zero distance.

    sqrt has an infinite derivative at 0; clamping the squared distance first makes
    the gradient exactly 0 there (the diagonal, duplicate points) instead of NaN.
    """
    sq = (z * z).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    return d2.clamp_min(EPS).sqrt()


def knn_indices(dist: torch.Tensor, k: int, labels: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices) of each point's k nearest others, within its class when ``labels`` is given.

    Entries that do not exist (a class smaller than k+1) come back as inf.
    """
    with torch.no_grad():
        masked = dist.detach().clone()
        masked.fill_diagonal_(float("inf"))
        if labels is not None:
            masked[labels[:, None] != labels[None, :]] = float("inf")
        k = min(k, len(dist) - 1)
        return masked.topk(k, dim=1, largest=False)


# ---------------------------------------------------------------------------
# geodesic


@dataclass
class ShortestPaths:
    """Pairs i<j connected in the kNN graph and, per hop, the edges of their shortest path."""
    i: np.ndarray
    j: np.ndarray
    hop_a: np.ndarray     # (H, P) edge start per hop (0 where the path has ended)
    hop_b: np.ndarray     # (H, P) edge end per hop
    hop_mask: np.ndarray  # (H, P) 1 where the hop exists
    hops: np.ndarray      # (P,) number of edges on each path
    total_pairs: int


def shortest_paths(nbr_dist: np.ndarray, nbr_idx: np.ndarray, sources: Optional[np.ndarray] = None) -> ShortestPaths:
    """Dijkstra on the symmetric kNN graph, paths unrolled hop by hop (no gradient).

    All pairs i<j by default; with ``sources``, the pairs (s, j), j != s, of those sources only.
    """
    n, k = nbr_idx.shape
    valid = np.isfinite(nbr_dist)
    # Row i of the CSR matrix holds i's valid neighbours; no symmetrised copy is built, as directed=False
    # lets Dijkstra walk every edge both ways (the union graph). This runs every step: it is kept lean.
    indptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(valid.sum(1), out=indptr[1:])
    graph = sparse.csr_matrix((np.maximum(nbr_dist[valid], EPS), nbr_idx[valid].astype(np.int32), indptr),
                              shape=(n, n))
    dist, pred = dijkstra(graph, directed=False, return_predecessors=True, indices=sources)
    if sources is None:
        row, j = np.nonzero(np.isfinite(dist))
        upper = row < j
        row, j = row[upper], j[upper]
        i = row
    else:
        reachable = np.isfinite(dist)
        reachable[np.arange(len(sources)), sources] = False
        row, j = np.nonzero(reachable)
        i = sources[row]
    cur = j.copy()
    hop_a, hop_b, hop_mask = [], [], []
    active = np.ones(len(i), dtype=bool)
    while active.any():
        prev = np.where(active, pred[row, cur], 0)
        hop_a.append(prev)
        hop_b.append(np.where(active, cur, 0))
        hop_mask.append(active.astype(np.float32))
        cur = np.where(active, prev, cur)
        active = active & (cur != i)
    hops = np.sum(hop_mask, axis=0).astype(np.int64) if hop_mask else np.zeros(0, dtype=np.int64)
    empty = np.zeros((0, len(i)))
    total = n * (n - 1) // 2 if sources is None else len(sources) * (n - 1)
    return ShortestPaths(i, j, np.array(hop_a) if hop_a else empty.astype(np.int64),
                         np.array(hop_b) if hop_b else empty.astype(np.int64),
                         np.array(hop_mask) if hop_mask else empty.astype(np.float32), hops, total)


def geodesic_ratios(z: torch.Tensor, k: int, labels: Optional[torch.Tensor] = None, exclude_direct: bool = False,
                    max_sources: int = 0) -> tuple[torch.Tensor, ShortestPaths]:
    """Differentiable geodesic/Euclidean ratios of the connected pairs of a batch.

    ``max_sources`` > 0 measures only the pairs starting at that many random points (drawn from
    torch's seeded generator): an estimate of the all-pairs mean, unbiased when the graph is
    connected, for a fraction of Dijkstra's cost.
    """
    dist = pairwise_distances(z)
    nbr_dist, nbr_idx = knn_indices(dist, k, labels)
    sources = None
    if 0 < max_sources < len(z):
        sources = np.sort(torch.randperm(len(z))[:max_sources].numpy())
    paths = shortest_paths(nbr_dist.double().cpu().numpy(), nbr_idx.cpu().numpy(), sources)
    device = z.device

    def t(a):
        return torch.as_tensor(a, device=device)

    keep = paths.hops > (1 if exclude_direct else 0)
    if not keep.any():
        return z.new_zeros(0), paths
    hop_a, hop_b, mask = t(paths.hop_a[:, keep]), t(paths.hop_b[:, keep]), t(paths.hop_mask[:, keep]).to(z.dtype)
    geodesic = (dist[hop_a, hop_b] * mask).sum(0)  # re-summed live edge lengths along the fixed paths
    euclid = dist[t(paths.i[keep]), t(paths.j[keep])]
    close = euclid > 1e-6  # coincident points have no defined ratio
    return geodesic[close] / euclid[close], paths


def geodesic_penalty(z: torch.Tensor, k: int, target: float, labels: Optional[torch.Tensor] = None,
                     exclude_direct: bool = False, max_sources: int = 0) -> tuple[torch.Tensor, dict]:
    """Mean squared deviation of the ratio from ``target`` over counted pairs, and batch statistics."""
    ratios, paths = geodesic_ratios(z, k, labels, exclude_direct, max_sources)
    stats = {"geodesic_pairs": torch.tensor(float(len(ratios))),
             "geodesic_connected_fraction": torch.tensor(len(paths.i) / max(1, paths.total_pairs))}
    if len(ratios) == 0:
        return z.sum() * 0.0, stats
    penalty = ((ratios - target) ** 2).mean()
    stats["geodesic_ratio"] = ratios.detach().mean()
    stats["geodesic_penalty"] = penalty.detach()
    return penalty, stats


# ---------------------------------------------------------------------------
# geometry


def class_structure_term(z: torch.Tensor, labels: torch.Tensor) -> Optional[torch.Tensor]:
    """Mean squared distance to the own class centroid over mean squared centroid separation (scale-free)."""
    classes, inverse = torch.unique(labels, return_inverse=True)
    if len(classes) < 2:
        return None
    onehot = torch.nn.functional.one_hot(inverse, len(classes)).to(z.dtype)
    counts = onehot.sum(0)
    centroids = (onehot.T @ z) / counts[:, None]
    intra = ((z - centroids[inverse]) ** 2).sum(1).mean()
    c = len(classes)
    sep = ((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    inter = sep.sum() / (c * (c - 1))
    return intra / (inter + EPS)


def intrinsic_dim_estimate(z: torch.Tensor, k: int, estimator: str) -> Optional[torch.Tensor]:
    """Differentiable intrinsic dimension of a batch: neighbour indices fixed, distances live."""
    if len(z) < 3:
        return None
    dist = pairwise_distances(z)
    if estimator == "twonn":
        _, idx = knn_indices(dist, 2)
        r = dist.gather(1, idx).clamp_min(1e-6)
        log_mu = torch.log(r[:, 1] / r[:, 0])
        return len(z) / log_mu.sum().clamp_min(EPS)
    _, idx = knn_indices(dist, k)
    t = dist.gather(1, idx).clamp_min(1e-6)
    inverse = torch.log(t[:, -1:] / t[:, :-1]).mean(1)  # 1 / m_k(x), Levina-Bickel
    return 1.0 / inverse.mean().clamp_min(EPS)          # MacKay-Ghahramani average


def geometry_penalty(z: torch.Tensor, labels: torch.Tensor, cfg: GeometryConfig) -> tuple[torch.Tensor, dict]:
    penalty = z.sum() * 0.0
    stats: dict = {}
    if cfg.class_weight > 0:
        term = class_structure_term(z, labels)
        if term is not None:
            penalty = penalty + cfg.class_weight * term
            stats["geometry_class_term"] = term.detach()
    if cfg.dim_weight > 0:
        dim = intrinsic_dim_estimate(z, cfg.n_neighbors, cfg.estimator)
        if dim is not None:
            term = ((dim - cfg.target_dim) / cfg.target_dim) ** 2
            penalty = penalty + cfg.dim_weight * term
            stats["geometry_dim_estimate"] = dim.detach()
            stats["geometry_dim_term"] = term.detach()
    stats["geometry_penalty"] = penalty.detach()
    return penalty, stats


# ---------------------------------------------------------------------------
# the callable the training loop uses


def _due(start_epoch: int, every_n_steps: int, epoch: int, step: int) -> bool:
    return epoch >= start_epoch and step % every_n_steps == 0


class LatentRegularizer:
    """Adds weight * lambda_reg * penalty for each configured term that is due at (epoch, step)."""

    def __init__(self, cfg: RegularizerConfig):
        self.cfg = cfg
        self.use_geodesic = cfg.name in ("geodesic", "combined") and cfg.geodesic.lambda_reg > 0
        self.use_geometry = cfg.name in ("geometry", "combined") and cfg.geometry.lambda_reg > 0

    def __call__(self, z: torch.Tensor, labels: torch.Tensor, epoch: int, step: int
                 ) -> tuple[Optional[torch.Tensor], dict]:
        total: Optional[torch.Tensor] = None
        stats: dict = {}
        g, m = self.cfg.geodesic, self.cfg.geometry
        if self.use_geodesic and _due(g.start_epoch, g.every_n_steps, epoch, step):
            value, s = geodesic_penalty(z, g.n_neighbors, g.target_ratio, labels if g.per_class else None,
                                        g.exclude_direct, g.max_sources)
            total = g.lambda_reg * value
            stats.update(s)
        if self.use_geometry and _due(m.start_epoch, m.every_n_steps, epoch, step):
            value, s = geometry_penalty(z, labels, m)
            total = m.lambda_reg * value if total is None else total + m.lambda_reg * value
            stats.update(s)
        if total is None:
            return None, {}
        return self.cfg.weight * total, stats


def build_regularizer(cfg: RegularizerConfig, num_classes: int, batch_size: int | None = None
                      ) -> Optional[LatentRegularizer]:
    """The penalty function for the loop, or None when no regularizer is active."""
    if not cfg.active:
        return None
    reg = LatentRegularizer(cfg)
    if not (reg.use_geodesic or reg.use_geometry):
        return None
    g = cfg.geodesic
    if reg.use_geodesic and batch_size:
        per_group = batch_size / num_classes if g.per_class else batch_size
        if g.n_neighbors >= per_group - 1:
            where = (f"about {per_group:.0f} points per class in a batch of {batch_size} with {num_classes} classes"
                     if g.per_class else f"a batch of {batch_size}")
            print(f"warning: regularizer.geodesic.n_neighbors = {g.n_neighbors} with {where}: the kNN graphs are "
                  "(nearly) complete, so geodesic ratios are trivially 1; raise train.batch_size or lower "
                  "n_neighbors", file=sys.stderr, flush=True)
    return reg
