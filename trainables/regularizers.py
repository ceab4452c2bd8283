"""Latent-geometry regularizers on a mini-batch of embeddings.

total loss = task loss + weight * sum(lambda_reg * regularizer)

- **geodesic**, two targets. ``target: flat`` (default) penalises
  (chord geodesic / Euclidean - 1)^2 over the pairs of each class in the batch:
  a pair whose straight segment stays on the class (``analysis.flatness``) has
  ratio exactly 1 and no gradient, so flat data of any shape and dimension is
  left alone; a pair that must bend is pulled straight. ``target: fixed``
  penalises (kNN-graph geodesic / Euclidean - target_ratio)^2 over connected
  pairs, the original platform's penalty: with target_ratio 1 it is minimised
  only by collinear sets or tiny cliques, so it rewards dimensional collapse
  (docs/concepts/regularizers.md). In both, shortest paths are *chosen* without
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

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
from scipy import sparse
from scipy.sparse.csgraph import connected_components, dijkstra

from geotune.analysis.flatness import (
    MIN_RESOLVED_POINTS,
    SHORT_CHORD_NEIGHBORS,
    chord_graph,
    segments_supported,
    squared_distances,
    support_tolerance,
)
from geotune.analysis.latent import intrinsic_dim_twonn
from geotune.analysis.neighbors import knn_graph, symmetric_dijkstra
from geotune.config import GeometryConfig, RegularizerConfig

EPS = 1e-12
# the flat target's memory: a class's targets are recomputed once its kNN graph is no longer the one they were
# computed from: on average fewer than this share of each remembered point's k nearest neighbours are still the
# held ones (the penalty's own unrolling keeps 0.50-0.79 of them, a network's task 0.07-0.11 within 15 steps; docs)
NEIGHBOURS_KEPT = 0.25


def pairwise_distances(z: torch.Tensor) -> torch.Tensor:
    """Differentiable Euclidean distance matrix; no NaN gradient at zero distance.

    sqrt has an infinite derivative at 0; clamping the squared distance first makes
    the gradient exactly 0 there (the diagonal, duplicate points) instead of NaN.
    """
    sq = (z * z).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    return d2.clamp_min(EPS).sqrt()


def coincidence_tolerance(z: torch.Tensor) -> float:
    """Distances below this are rounding noise of identical points, relative to the embeddings' scale.

    |a|^2 + |b|^2 - 2ab loses about eps * |z|^2 of a squared distance, so identical points come
    out up to about sqrt(2 eps) * |z| apart (~4e-3 at |z| = 10 in float32); this is 3x that.
    """
    return float(4.0 * math.sqrt(torch.finfo(z.dtype).eps) * z.detach().norm(dim=1).max())


def knn_indices(dist: torch.Tensor, k: int, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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
    """Measured pairs and, per hop, the edges of the path chosen for each (no gradient)."""

    i: np.ndarray
    j: np.ndarray
    hop_a: np.ndarray  # (H, P) edge start per hop (0 where the path has ended)
    hop_b: np.ndarray  # (H, P) edge end per hop
    hop_mask: np.ndarray  # (H, P) 1 where the hop exists
    hops: np.ndarray  # (P,) number of edges on each path
    total_pairs: int  # pairs that could be measured: within classes when the graph is per class


def _unroll(pred: np.ndarray, row: np.ndarray, i: np.ndarray, j: np.ndarray) -> tuple:
    """(hop_a, hop_b, hop_mask, hops) of the paths i -> j from Dijkstra's predecessors (row: i's row in pred)."""
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
    if not hop_mask:
        empty = np.zeros((0, len(i)), dtype=np.int64)
        return empty, empty, empty.astype(np.float32), np.zeros(len(i), dtype=np.int64)
    return np.array(hop_a), np.array(hop_b), np.array(hop_mask), np.sum(hop_mask, axis=0).astype(np.int64)


def _countable_pairs(groups: np.ndarray, sources: np.ndarray | None) -> int:
    """Pairs a graph could connect: all pairs within each group (one group without per-class graphs)."""
    _, group_of = np.unique(groups, return_inverse=True)
    sizes = np.bincount(group_of)
    if sources is None:
        return int((sizes * (sizes - 1) // 2).sum())
    return int((sizes[group_of][sources] - 1).sum())


def _neighbor_graph(nbr_dist: np.ndarray, nbr_idx: np.ndarray) -> sparse.csr_matrix:
    """Row i of the CSR matrix holds i's valid neighbours.

    No symmetrised copy is built: directed=False lets Dijkstra walk every edge both ways
    (the union graph). This runs every step: it is kept lean.
    """
    n = len(nbr_idx)
    valid = np.isfinite(nbr_dist)
    indptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(valid.sum(1), out=indptr[1:])
    return sparse.csr_matrix((np.maximum(nbr_dist[valid], EPS), nbr_idx[valid].astype(np.int32), indptr), shape=(n, n))


def shortest_paths(
    nbr_dist: np.ndarray, nbr_idx: np.ndarray, sources: np.ndarray | None = None, groups: np.ndarray | None = None
) -> ShortestPaths:
    """Dijkstra on the symmetric kNN graph, paths unrolled hop by hop (no gradient).

    All pairs i<j by default; with ``sources``, the pairs (s, j), j != s, of those sources only.
    """
    n = len(nbr_idx)
    dist, pred = dijkstra(_neighbor_graph(nbr_dist, nbr_idx), directed=False, return_predecessors=True, indices=sources)
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
    hop_a, hop_b, hop_mask, hops = _unroll(pred, row, i, j)
    total = _countable_pairs(np.zeros(n, dtype=np.int64) if groups is None else groups, sources)
    return ShortestPaths(i, j, hop_a, hop_b, hop_mask, hops, total)


def _no_paths(total: int) -> ShortestPaths:
    empty = np.zeros((0, 0), dtype=np.int64)
    return ShortestPaths(
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
        empty,
        empty,
        empty.astype(np.float32),
        np.zeros(0, dtype=np.int64),
        total,
    )


def _sources(n: int, max_sources: int) -> np.ndarray | None:
    """Random sources drawn from torch's seeded generator, or None for all pairs."""
    if 0 < max_sources < n:
        return np.sort(torch.randperm(n)[:max_sources].numpy())
    return None


def _live_ratios(dist: torch.Tensor, paths: ShortestPaths, keep: np.ndarray) -> torch.Tensor:
    """Path length re-summed from the live distances along the fixed paths, over the live Euclidean distance."""
    device = dist.device
    hop_a, hop_b = (
        torch.as_tensor(paths.hop_a[:, keep], device=device),
        torch.as_tensor(paths.hop_b[:, keep], device=device),
    )
    mask = torch.as_tensor(paths.hop_mask[:, keep], device=device).to(dist.dtype)
    geodesic = (dist[hop_a, hop_b] * mask).sum(0)
    return geodesic / dist[torch.as_tensor(paths.i[keep], device=device), torch.as_tensor(paths.j[keep], device=device)]


def geodesic_ratios(
    z: torch.Tensor, k: int, labels: torch.Tensor | None = None, exclude_direct: bool = False, max_sources: int = 0
) -> tuple[torch.Tensor, ShortestPaths]:
    """Differentiable kNN-graph geodesic / Euclidean ratios of the connected pairs of a batch.

    ``max_sources`` > 0 measures only the pairs starting at that many random points (drawn from
    torch's seeded generator): an estimate of the all-pairs mean, unbiased when the graph is
    connected, for a fraction of Dijkstra's cost.
    """
    dist = pairwise_distances(z)
    nbr_dist, nbr_idx = knn_indices(dist, k, labels)
    groups = labels.cpu().numpy() if labels is not None else None
    paths = shortest_paths(
        nbr_dist.double().cpu().numpy(), nbr_idx.cpu().numpy(), _sources(len(z), max_sources), groups
    )
    euclid = dist.detach()[torch.as_tensor(paths.i, device=z.device), torch.as_tensor(paths.j, device=z.device)]
    # coincident points have no defined ratio (tolerance relative to the embeddings' scale, see above)
    keep = (paths.hops > (1 if exclude_direct else 0)) & (euclid > coincidence_tolerance(z)).cpu().numpy()
    if not keep.any():
        return z.new_zeros(0), paths
    return _live_ratios(dist, paths, keep), paths


def chord_ratios(
    z: torch.Tensor, k: int, labels: torch.Tensor | None = None, max_sources: int = 0
) -> tuple[torch.Tensor, torch.Tensor, ShortestPaths]:
    """Differentiable chord-geodesic / Euclidean ratios of a batch's pairs (``analysis.flatness``).

    A pair whose straight segment stays on its class (every point of it within
    tau * r_k of a point of the class, tau from the class's TwoNN dimension) has ratio
    exactly 1 and no gradient. Every other pair gets the shortest path through kNN
    edges and supported segments between near neighbours, chosen without gradient,
    its length re-summed from the live distances. Only pairs the kNN graph connects
    count, as in the metric. Returns (ratios of the bent pairs, number of counted
    pairs, paths of the bent pairs).
    """
    n = len(z)
    dist = pairwise_distances(z)
    groups = labels.cpu().numpy() if labels is not None else np.zeros(n, dtype=np.int64)
    m = min(n - 1, max(k, SHORT_CHORD_NEIGHBORS))
    nbr_dist_t, nbr_idx_t = knn_indices(dist, m, labels)
    nbr_dist, nbr_idx = nbr_dist_t.double().cpu().numpy(), nbr_idx_t.cpu().numpy()
    k = min(k, m)
    points = z.detach().double().cpu().numpy()
    sq = dist.detach().float() ** 2
    tolerance = coincidence_tolerance(z)
    sources = _sources(n, max_sources)
    total = _countable_pairs(groups, sources)
    _, component = connected_components(_neighbor_graph(nbr_dist[:, :k], nbr_idx[:, :k]), directed=False)
    pairs_i, bent_i, bent_j, graphs = [], [], [], []
    for g in np.unique(groups):
        members = np.nonzero(groups == g)[0]
        if len(members) < 2:
            continue
        if sources is None:
            li, lj = np.triu_indices(len(members), 1)
        else:
            local_sources = np.nonzero(np.isin(members, sources))[0]
            li, lj = np.repeat(local_sources, len(members)), np.tile(np.arange(len(members)), len(local_sources))
        gi, gj = members[li], members[lj]
        # not coincident, and connected by the kNN graph (a class of <= k points is complete: flat by construction)
        keep = (
            (gi != gj)
            & (np.linalg.norm(points[gi] - points[gj], axis=1) > tolerance)
            & (component[gi] == component[gj])
        )
        li, lj, gi, gj = li[keep], lj[keep], gi[keep], gj[keep]
        pairs_i.append(gi)
        if len(members) <= k or len(gi) == 0:
            continue
        radius = nbr_dist[members, k - 1]
        # TwoNN of the class (detached) from the within-class distances at hand
        dimension = intrinsic_dim_twonn(points[members], neighbors=(nbr_dist[members, :2], nbr_idx[members, :2]))
        support = support_tolerance(k, dimension) * radius
        radius2 = torch.as_tensor(support**2, dtype=torch.float32, device=z.device)
        spacing = float(np.median(support))
        members_t = torch.as_tensor(members, device=z.device)
        sub = sq[members_t][:, members_t]
        direct = segments_supported(sub, li, lj, radius2, spacing)
        if direct.all():
            continue
        bent_i.append(gi[~direct])
        bent_j.append(gj[~direct])
        # the class's kNN edges and supported segments to its near neighbours, in the class's own indices
        near = min(m, len(members) - 1)  # columns that hold members of the class
        local = np.full(n, -1)
        local[members] = np.arange(len(members))
        class_graph = chord_graph(
            points[members], sub, (nbr_dist[members, :near], local[nbr_idx[members, :near]]), k, radius2, spacing
        ).tocoo()
        graphs.append((class_graph.data, members[class_graph.row], members[class_graph.col]))
    counted = torch.tensor(float(sum(len(p) for p in pairs_i)))
    if not bent_i:
        return z.new_zeros(0), counted, _no_paths(total)
    i, j = np.concatenate(bent_i), np.concatenate(bent_j)
    weights, rows, cols = (np.concatenate(parts) for parts in zip(*graphs))
    graph = sparse.csr_matrix((weights, (rows, cols)), shape=(n, n))
    starts, row = np.unique(i, return_inverse=True)
    _, pred = symmetric_dijkstra(graph, starts, predecessors=True)  # the classes' chord graphs, both directions
    hop_a, hop_b, hop_mask, hops = _unroll(pred, row, i, j)
    paths = ShortestPaths(i, j, hop_a, hop_b, hop_mask, hops, total)
    return _live_ratios(dist, paths, np.ones(len(i), dtype=bool)), counted, paths


def geodesic_penalty(
    z: torch.Tensor,
    k: int,
    target: float,
    labels: torch.Tensor | None = None,
    exclude_direct: bool = False,
    max_sources: int = 0,
    mode: str = "fixed",
) -> tuple[torch.Tensor, dict]:
    """The geodesic penalty of a batch and its statistics.

    ``mode`` fixed: mean over connected pairs of (kNN-graph ratio - ``target``)^2.
    ``mode`` flat: mean over pairs of (chord-geodesic ratio - 1)^2, which is 0 for every pair
    whose straight segment stays on its class (``chord_ratios``).
    """
    if mode == "flat":
        bent, counted, paths = chord_ratios(z, k, labels, max_sources)
        stats = {
            "geodesic_pairs": counted,
            "geodesic_bent_fraction": torch.tensor(len(bent) / max(1.0, float(counted))),
            "geodesic_acting": torch.tensor(float(len(bent) > 0)),  # its epoch mean: the share of steps it pulled
        }
        if len(bent) == 0:  # every pair runs straight: nothing to pull (and no graph to differentiate)
            stats["geodesic_ratio"] = torch.tensor(1.0)
            return z.sum() * 0.0, stats
        penalty = ((bent - 1.0) ** 2).sum() / counted
        stats["geodesic_ratio"] = (bent.detach().sum() + (counted - len(bent))) / counted
        stats["geodesic_penalty"] = penalty.detach()
        return penalty, stats
    ratios, paths = geodesic_ratios(z, k, labels, exclude_direct, max_sources)
    stats = {
        "geodesic_pairs": torch.tensor(float(len(ratios))),
        "geodesic_connected_fraction": torch.tensor(len(paths.i) / max(1, paths.total_pairs)),
    }
    if len(ratios) == 0:
        return z.sum() * 0.0, stats
    penalty = ((ratios - target) ** 2).mean()
    stats["geodesic_ratio"] = ratios.detach().mean()
    stats["geodesic_penalty"] = penalty.detach()
    return penalty, stats


# ---------------------------------------------------------------------------
# geodesic, flat target with a memory


def memory_targets(points: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(geodesics, bent, neighbours) of a class's remembered points: kNN-graph (k) shortest paths between all
    pairs, which pairs bend, i.e. whose straight segment leaves the class (the support test of ``chord_ratios``)
    while the graph connects them, and each point's k nearest (the graph the geodesics are paths of). Straight
    pairs carry no target: a flat class gets none at all."""
    n = len(points)
    sq = squared_distances(points)
    dist = np.sqrt(sq.double().numpy())
    np.fill_diagonal(dist, np.inf)
    m = min(n - 1, max(k, 2))  # the graph and the support radii need the k nearest, TwoNN the two nearest
    idx = np.argsort(dist, axis=1)[:, :m]
    nbr = np.take_along_axis(dist, idx, axis=1)
    k = min(k, m)
    dimension = intrinsic_dim_twonn(points, neighbors=(nbr[:, :2], idx[:, :2]))
    support = support_tolerance(k, dimension) * nbr[:, k - 1]
    i, j = np.triu_indices(n, 1)
    straight = segments_supported(sq, i, j, torch.as_tensor(support**2, dtype=torch.float32), float(np.median(support)))
    geodesics = symmetric_dijkstra(knn_graph(points, k, (nbr, idx)))
    bent = np.zeros((n, n), dtype=bool)
    bent[i[~straight], j[~straight]] = True
    bent |= bent.T
    bent &= np.isfinite(geodesics)
    geodesics[~np.isfinite(geodesics)] = 0.0
    return geodesics, bent, idx[:, :k]


def neighbours_kept(held: torch.Tensor, points: torch.Tensor) -> float:
    """The mean share of each point's k nearest neighbours (k = ``held``'s columns) that are still those in
    ``held``: 1 while the kNN graph is unchanged, about k / n once it is unrelated."""
    now = knn_indices(torch.cdist(points, points), held.shape[1])[1]
    return float((held[:, :, None] == now[:, None, :]).any(-1).float().mean())


@dataclass
class ClassMemory:
    """One class's remembered samples: row of each sample id, their last detached embeddings, and the geodesics,
    bent pairs and kNN graph (each row's k nearest) of those rows at the last refresh (None before the first)."""

    rows: dict[int, int]
    positions: torch.Tensor
    geodesics: torch.Tensor | None = None
    bent: torch.Tensor | None = None
    refreshed: int = 0
    neighbours: torch.Tensor | None = None  # None with targets: a checkpoint from before the graph was kept
    checked: int = 0  # the step of the last refresh or check of the graph


class GeodesicMemory:
    """The flat target against a per-class memory of each sample's last detached embedding.

    A batch of a few dozen points per class is too sparse to see a bend (``MIN_RESOLVED_POINTS``); the class's
    remembered samples are not. Once a class's memory holds enough samples, its kNN-graph geodesics and its bent
    pairs (straight segment off the class) are computed and *held* until the class is rearranged (below): a penalty
    whose targets follow the embedding every step inflates it instead of unrolling it (docs: Regularizers). Each step,
    a batch point that is remembered is compared with every remembered sample of its class over the bent pairs
    only, and the *shape* of those distances is pulled to the shape of the held geodesics:
    sum (d / |d| - g / |g|)^2 per class, the mean over classes. Being scale-free, it leaves the task free to grow
    or shrink the embedding, and a refresh cannot carry a change of scale into the next targets. A flat class
    has no bent pair: its penalty is exactly 0.

    Targets are recomputed from the remembered embeddings only once they describe another class: every
    ``refresh_steps`` steps the class's kNN graph is compared with the one the geodesics are paths of, and the
    targets are recomputed once on average fewer than ``NEIGHBOURS_KEPT`` of each point's k nearest neighbours
    are still the held ones. The shape-only stress is blind to scale and rotation, and an unrolling keeps
    neighbours (it is what the penalty asks for), so targets are held while the penalty unrolls a class and follow
    the task once it has rearranged the class. Recomputed while the class is still unrolling, the geodesics of the
    half-unrolled sheet would become the targets and the unrolling stop part-way (docs: Regularizers, measured).
    """

    def __init__(self, capacity: int, k: int, refresh_steps: int, class_sizes: list[int] | None = None):
        self.capacity, self.k, self.refresh_steps = capacity, k, refresh_steps
        self.class_sizes = class_sizes
        self.classes: dict[int, ClassMemory] = {}

    def _ready_at(self, label: int) -> int:
        """Remembered samples at which the first targets are computed: the memory's capacity, or nine tenths of
        a smaller class (the loop drops each epoch's last partial batch, so some samples come late)."""
        size = self.class_sizes[label] if self.class_sizes and label < len(self.class_sizes) else self.capacity
        return max(MIN_RESOLVED_POINTS, min(self.capacity, math.ceil(0.9 * size)))

    def _rows(self, memory: ClassMemory, samples: list[int]) -> list[int]:
        """Each sample's row, a new one while there is room; -1 for samples the memory has no room for."""
        rows = []
        for sample in samples:
            if sample not in memory.rows and len(memory.rows) < self.capacity:
                memory.rows[sample] = len(memory.rows)
            rows.append(memory.rows.get(sample, -1))
        return rows

    def penalty(self, z: torch.Tensor, labels: torch.Tensor, samples: torch.Tensor, step: int) -> tuple:
        terms, bent_pairs, pairs = [], 0, 0
        for label in labels.unique().tolist():
            where = torch.nonzero(labels == label).squeeze(1)
            memory = self.classes.get(label)
            if memory is None:
                memory = self.classes[label] = ClassMemory({}, z.new_zeros(self.capacity, z.shape[1]).detach())
            rows = torch.as_tensor(self._rows(memory, samples[where].tolist()), device=z.device)
            known = rows >= 0
            where, rows = where[known], rows[known]
            if memory.geodesics is not None and memory.bent is not None:
                targeted = rows < len(memory.geodesics)  # samples remembered after the last refresh wait for the next
                live, held = where[targeted], rows[targeted]
                bent = memory.bent[held]
                pairs += bent.numel()
                if bent.any():
                    # a copy: the positions are overwritten below, before the backward pass
                    remembered = memory.positions[: len(memory.geodesics)].clone()
                    d = torch.cdist(z[live], remembered)[bent]
                    g = memory.geodesics[held][bent]
                    terms.append(((d / d.norm().clamp_min(EPS) - g / g.norm()) ** 2).sum())
                    bent_pairs += int(bent.sum())
            memory.positions[rows] = z.detach()[where]
            if memory.geodesics is None and len(memory.rows) >= self._ready_at(label):
                self._refresh(memory, step)
            elif memory.geodesics is not None and step - memory.checked >= self.refresh_steps:
                memory.checked = step
                if self._stale(memory):
                    self._refresh(memory, step)
        stats = {
            "geodesic_memory_pairs": torch.tensor(float(pairs)),
            "geodesic_bent_fraction": torch.tensor(bent_pairs / max(1, pairs)),
            "geodesic_acting": torch.tensor(float(bool(terms))),  # its epoch mean: the share of steps it pulled
        }
        if not terms:
            return z.sum() * 0.0, stats
        penalty = torch.stack(terms).mean()
        stats["geodesic_penalty"] = penalty.detach()
        return penalty, stats

    @staticmethod
    def _stale(memory: ClassMemory) -> bool:
        """Whether the class's kNN graph has changed since its targets were computed (the host sync of the check,
        once every refresh_steps steps); a checkpoint without the held graph recomputes."""
        if memory.neighbours is None or memory.geodesics is None:
            return True
        return neighbours_kept(memory.neighbours, memory.positions[: len(memory.geodesics)]) < NEIGHBOURS_KEPT

    def _refresh(self, memory: ClassMemory, step: int) -> None:
        n = len(memory.rows)
        geodesics, bent, neighbours = memory_targets(memory.positions[:n].double().cpu().numpy(), self.k)
        device = memory.positions.device
        memory.geodesics = torch.as_tensor(geodesics, dtype=memory.positions.dtype, device=device)
        memory.bent = torch.as_tensor(bent, device=device)
        memory.neighbours = torch.as_tensor(neighbours, device=device)
        memory.refreshed = memory.checked = step

    def state_dict(self) -> dict:
        """Plain tensors and numbers (a checkpoint loads with weights_only=True)."""
        return {
            label: {
                "samples": torch.tensor(list(m.rows), dtype=torch.long),
                "positions": m.positions.cpu(),
                "geodesics": m.geodesics.cpu() if m.geodesics is not None else None,
                "bent": m.bent.cpu() if m.bent is not None else None,
                "refreshed": m.refreshed,
                "neighbours": m.neighbours.cpu() if m.neighbours is not None else None,
                "checked": m.checked,
            }
            for label, m in self.classes.items()
        }

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.classes = {}
        for label, m in state.items():
            rows = {int(s): r for r, s in enumerate(m["samples"].tolist())}
            # "neighbours" is absent from checkpoints written before targets followed the kNN graph (their stress
            # keys are ignored): such targets are checked at the next check and recomputed
            held = [None if m.get(key) is None else m[key].to(device) for key in ("geodesics", "bent", "neighbours")]
            self.classes[int(label)] = ClassMemory(
                rows,
                m["positions"].to(device),
                held[0],
                held[1],
                m["refreshed"],
                held[2],
                m.get("checked", m["refreshed"]),
            )


# ---------------------------------------------------------------------------
# geometry


def class_structure_term(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
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


def intrinsic_dim_estimate(z: torch.Tensor, k: int, estimator: str) -> torch.Tensor | None:
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
    return 1.0 / inverse.mean().clamp_min(EPS)  # MacKay-Ghahramani average


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

    def __init__(self, cfg: RegularizerConfig, class_sizes: list[int] | None = None, keyed: bool = True):
        """``keyed``: whether the loop passes each batch's sample ids (not for segmentation: pixels have none);
        without them there is no memory and the flat target reads the batch alone."""
        self.cfg = cfg
        self.use_geodesic = "geodesic" in cfg.terms
        self.use_geometry = "geometry" in cfg.terms
        g = cfg.geodesic
        self.memory = (
            GeodesicMemory(g.memory, g.n_neighbors, g.refresh_steps, class_sizes)
            if keyed and self.use_geodesic and g.target == "flat" and g.per_class and g.memory > 0
            else None
        )

    def __call__(
        self, z: torch.Tensor, labels: torch.Tensor, epoch: int, step: int, samples: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, dict]:
        """``samples``: the batch's sample ids (rows of the training split), which the memory is keyed by; without
        them (segmentation: the points are pixels) the flat target reads the batch alone."""
        total: torch.Tensor | None = None
        stats: dict = {}
        g, m = self.cfg.geodesic, self.cfg.geometry
        if self.memory is not None and samples is not None:
            if _due(g.start_epoch, g.every_n_steps, epoch, step):
                value, s = self.memory.penalty(z, labels, samples, step)
                total = g.lambda_reg * value
                stats.update(s)
        elif self.use_geodesic and _due(g.start_epoch, g.every_n_steps, epoch, step):
            value, s = geodesic_penalty(
                z,
                g.n_neighbors,
                g.target_ratio,
                labels if g.per_class else None,
                g.exclude_direct,
                g.max_sources,
                g.target,
            )
            total = g.lambda_reg * value
            stats.update(s)
        if self.use_geometry and _due(m.start_epoch, m.every_n_steps, epoch, step):
            value, s = geometry_penalty(z, labels, m)
            total = m.lambda_reg * value if total is None else total + m.lambda_reg * value
            stats.update(s)
        if total is None:
            return None, {}
        return self.cfg.weight * total, stats


def build_regularizer(
    cfg: RegularizerConfig,
    num_classes: int,
    batch_size: int | None = None,
    class_sizes: list[int] | None = None,
    keyed: bool = True,
) -> LatentRegularizer | None:
    """The penalty function for the loop, or None when no regularizer is active.

    ``class_sizes`` (training examples per class) lets the trivial-graph warning look at a
    typical class in a batch (the median expected count) rather than the mean, and sizes the
    memory's classes. ``keyed``: whether the batches carry sample ids (``LatentRegularizer``).
    """
    if not cfg.active:
        return None
    reg = LatentRegularizer(cfg, class_sizes, keyed)
    g = cfg.geodesic
    if reg.memory is not None and class_sizes:
        small = sum(size < MIN_RESOLVED_POINTS for size in class_sizes)
        if small:
            print(
                f"warning: regularizer.geodesic.memory: {small} of {len(class_sizes)} classes have fewer than "
                f"{MIN_RESOLVED_POINTS} training samples, too few to see a bend: the flat target never pulls them",
                file=sys.stderr,
                flush=True,
            )
    if reg.use_geodesic and batch_size:
        if g.per_class:
            sizes = np.asarray(class_sizes if class_sizes else [1] * num_classes, dtype=float)
            expected = batch_size * sizes / sizes.sum()  # each class's expected count in a batch
            per_group = float(np.median(expected))
            where = (
                f"a typical class holds about {per_group:.0f} points in a batch of {batch_size} "
                f"({num_classes} classes; median over classes)"
            )
        else:
            per_group, where = float(batch_size), f"a batch of {batch_size}"
        if per_group <= g.n_neighbors + 1:
            print(
                f"warning: regularizer.geodesic.n_neighbors = {g.n_neighbors} while {where}: the kNN graphs are "
                "(nearly) complete, so geodesic ratios are trivially 1; raise train.batch_size or lower "
                "n_neighbors",
                file=sys.stderr,
                flush=True,
            )
        elif g.target == "flat" and reg.memory is None and per_group < MIN_RESOLVED_POINTS:
            print(
                f"warning: regularizer.geodesic.target = flat while {where}: below about {MIN_RESOLVED_POINTS} "
                "points a class reads flat whatever its shape, so the penalty will rarely act "
                "(reg_geodesic_bent_fraction in the history says how often); raise train.batch_size, or use "
                "target fixed to reproduce the original platform",
                file=sys.stderr,
                flush=True,
            )
    return reg
