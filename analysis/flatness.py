"""Calibrated flatness: how much paths *within* a point set must bend, beyond what sampling explains.

The raw geodesic ratio (shortest path on the kNN graph / Euclidean distance)
mixes curvature with the detours of the kNN graph itself, and those detours grow
with the intrinsic dimension, the density profile and k: at n = 1,000 and k = 10 a
flat 12-D Gaussian reads 1.6, a flat 10-D cube 1.69. The calibrated value removes
the graph from the answer in four steps:

1. **A surface, where the data has one.** Each point's 20 nearest neighbours give a
   local covariance spectrum. When the spectra, averaged over the set, drop by at
   least ``DIMENSION_GAP`` after d components, the set is read as a d-dimensional
   surface plus thickness: curvature grows with the fourth power of a
   neighbourhood's radius, spread within the surface with the square, noise not
   at all, so the drop separates them (``local_dimension``). The surface through
   a point p is a moving-least-squares fit: a Gaussian-kernel mean of the samples
   near p (each sample's kernel width a fraction of its k-NN radius) plus the
   tangent plane of the nearest sample (``LocalSurface.project``). Every sample is
   projected onto it; the distances it left behind (leave-one-out, centred per
   neighbourhood) are the set's **thickness**. Without such a drop (a power-law
   spectrum, thick noisy clouds) there is no surface to follow, and the points are
   used as they are.
2. **Straight pairs.** A segment between two projected points stays on the data
   when every point of it lies within tau * r_k(q) of a sample q (r_k: q's k-NN
   radius; holes and gaps), and, on a surface, its midpoint and quarter points lie
   within the local thickness of the surface (bends). Such a pair has ratio 1.
3. **Bent pairs, without the graph's zig-zag.** The shortest path through kNN
   edges and supported segments (Dijkstra) only fixes *which way* a bent pair
   goes: its vertices are then relaxed on the surface (each moved to the
   projection of its neighbours' midpoint, coarse to fine), so the length is that
   of a geodesic of the fitted surface, not of a path forced through samples. At
   most ``MAX_RELAXED`` bent pairs are relaxed; the others take the graph length
   scaled by the relaxed/graph ratio of those (a ratio estimator).
4. ``calibrated`` is the mean of geodesic / chord over pairs in the same kNN
   component: 1 for flat data of any shape, dimension, density or thickness; pi - 2
   = 1.142 for a sphere over uniform pairs; more for a set with a hole.

**Tolerance.** A random point of a flat d-dimensional cloud of locally uniform
density lies farther than r from every sample with probability exp(-rho V_d r^d)
(the empty-space law), and rho V_d r_k^d is about k, so it misses every ball of
radius tau * r_k with probability about exp(-k tau^d). ``support_tolerance``
picks tau = (ln(1 / (1 - q)) / k)^(1/d) so that a point that does lie on the data
is accepted with probability q = 0.99. The thickness test uses the q-quantile of
the neighbourhood's own residuals.

**Resolution.** Whether a set's size, density, dimension and thickness can show a
bend at all is *measured*, per set: its top principal axis is bent into a half
circle (an isometry: the bent copy's geodesics are the original's distances), and
the bent copy must read within ``RESOLUTION_TOLERANCE`` of its exact value
(``bend_probe``, ``resolution``). A set that fails is reported as unresolved:
its reading is not evidence of flatness.

The ball test needs no coordinates: for p = (1 - f) x_i + f x_j and any q,
|p - x_q|^2 = (1 - f)|x_i - x_q|^2 + f |x_j - x_q|^2 - f (1 - f)|x_i - x_j|^2, so
a segment is tested from two rows of the squared-distance matrix, at points no
more than tau * median(r_k) apart, coarse to fine (most segments that leave the
data fail at their midpoint).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from geotune.analysis.neighbors import (
    Neighbors,
    isometric_coordinates,
    knn_graph,
    nearest_neighbors,
    symmetric_dijkstra,
    twonn_fit,
    within_two_hops,
)

SUPPORT_QUANTILE = 0.99  # share of points lying on the data that the ball and thickness tests accept
SHORT_CHORD_NEIGHBORS = 20  # paths may use supported segments between each point and its 20 nearest
MAX_POINTS = 3000  # larger sets are measured on a seeded random subsample of this size
MAX_PAIRS = 8000  # all pairs up to this many (n <= 127); else N_SOURCES sources x random targets
N_SOURCES = 1000  # sources of the sampled pairs (each a Dijkstra run when its pairs bend)
MAX_RELAXED = 200  # bent pairs whose paths are relaxed on the surface; the rest by the ratio estimator
MAX_LEVEL = 11  # a segment is tested at up to 2^11 - 1 points
GPU_BLOCK = 2048  # segments the support test takes together on a GPU (fewer, larger kernels)
# on a CPU, block x points of the support test's float32 rows (2 MiB, about a core's L2): at 1,000 points 512
# segments at a time were 1.8-2.3x faster than 2,048 in four runs (benchmarks/graph_walk.py)
CPU_BLOCK_FLOATS = 2**19
BRIDGE_SAG = 0.25  # a kNN edge whose midpoint is farther off the surface than this share of its length is cut
SURFACE_NEIGHBORS = 20  # neighbours of the local spectrum, tangent plane and thickness
KERNEL_NEIGHBORS = 40  # samples the kernel mean of a projection may use
TANGENT_NEIGHBORS = 40  # neighbours whose principal axes give a sample's tangent plane
KERNEL_WIDTH = 0.7  # Gaussian kernel width as a fraction of each sample's k-NN radius
DIMENSION_GAP = 3.0  # the averaged local spectrum must drop this much after d components for a surface
MAX_VERTICES = 33  # relaxed path vertices at most (paths are subdivided until hops are about r_k)
RELAX_FROM_DIMENSION = 2  # a curve's chord-graph path has no zig-zag to remove
RELAX_STEPS = (10, 6, 4)  # relaxation sweeps on the thinned path, after the first subdivision, after later ones
RESOLUTION_TOLERANCE = 0.03  # a set is resolved when its bent copy reads no more than this below exact
PROBE_PAIRS = 4000  # pairs the probe measures (it needs its reading to about 0.01)
PROBE_MIN_EXCESS = 0.02  # a probe whose exact excess is smaller tests nothing: the set stays unresolved
# Rough guide for warnings only (the measured check is ``resolution``): at k = 10 a unit sphere of 27 points
# reads 1.00, of 54 points about 1.04 (exact 1.14); the regularizer warns below this many points per class.
MIN_RESOLVED_POINTS = 50


def support_tolerance(k: int, dimension: float | None, quantile: float = SUPPORT_QUANTILE, n: int = 1) -> float:
    """tau: support radius as a fraction of r_k, from the empty-space law at intrinsic dimension ``dimension``.

    A point on the data misses every ball of radius tau * r_k with probability about
    exp(-k tau^d); over a set of ``n`` points (about n independent places where a gap
    could open) some gap of that size opens by chance with probability about n exp(-k tau^d).
    tau = (ln(n / (1 - quantile)) / k)^(1/d) keeps that at 1 - quantile: a hole is declared
    only where the set's own sampling would leave one that wide less than 1% of the time.
    """
    d = max(1.0, float(dimension)) if dimension is not None and math.isfinite(dimension) else 1.0
    return (math.log(max(1, n) / (1.0 - quantile)) / max(1, k)) ** (1.0 / d)


def cpu_block(n: int) -> int:
    """Segments the support test takes together on a CPU among ``n`` points: a power of two whose (block, n)
    float32 rows fill about CPU_BLOCK_FLOATS (a core's L2), from 64 to GPU_BLOCK."""
    rows = max(1, CPU_BLOCK_FLOATS // max(1, n))
    return min(GPU_BLOCK, max(64, 1 << (rows.bit_length() - 1)))  # the power of two at or below ``rows``


def squared_distances(x: np.ndarray):
    """All squared Euclidean distances as a float32 torch matrix (computed centred, in float64)."""
    import torch  # deferred: torch takes seconds to import and only the support test needs it

    c = torch.from_numpy(np.asarray(x, dtype=np.float64) - np.asarray(x, dtype=np.float64).mean(0))
    norms = (c * c).sum(1)
    sq = (norms[:, None] + norms[None, :] - 2.0 * (c @ c.T)).clamp_min_(0.0)
    sq.fill_diagonal_(0.0)
    return sq.float()


def segments_supported(
    sq, i: np.ndarray, j: np.ndarray, radius2, spacing: float, block: int | None = None
) -> np.ndarray:
    """Whether each segment x_i -> x_j stays in the union of balls B(x_q, sqrt(radius2[q])).

    ``sq``: (n, n) torch matrix of squared distances; ``radius2``: (n,) torch vector on the
    same device. Each segment is tested at evenly spaced points no more than ``spacing``
    apart (its midpoint first, then the quarter points, ...; a failed segment stops early).
    ``block``: segments tested together (default: GPU_BLOCK on a GPU, ``cpu_block(n)`` on a CPU).
    """
    import torch  # deferred: see squared_distances

    ok = np.ones(len(i), dtype=bool)
    if len(i) == 0:
        return ok
    device = sq.device
    if block is None:
        block = cpu_block(len(sq)) if device.type == "cpu" else GPU_BLOCK
    it, jt = torch.as_tensor(np.asarray(i), device=device), torch.as_tensor(np.asarray(j), device=device)
    length = np.sqrt(sq[it, jt].double().cpu().numpy())
    levels = np.ceil(np.log2(np.maximum(length / max(spacing, 1e-300), 1.0))).astype(int)
    levels = np.clip(levels, 1, MAX_LEVEL)
    for level in range(1, int(levels.max()) + 1):
        active = np.nonzero(ok & (levels >= level))[0]
        fractions = np.arange(1, 2**level, 2) / 2**level  # the points this level adds
        for start in range(0, len(active), block):
            chosen = torch.as_tensor(active[start : start + block], device=device)
            # rows minus each ball's radius^2: then min over q of lerp(a, b, f) - f(1-f)|x_i - x_j|^2 <= 0
            a = sq[it[chosen]].sub_(radius2)
            b = sq[jt[chosen]].sub_(radius2)
            length2 = sq[it[chosen], jt[chosen]]
            good = torch.ones(len(chosen), dtype=torch.bool, device=device)
            for f in fractions:
                good &= torch.lerp(a, b, float(f)).amin(1) <= f * (1.0 - f) * length2
                if not bool(good.any()):
                    break
            ok[active[start : start + block]] = good.cpu().numpy()
    return ok


def chord_graph(
    x: np.ndarray,
    sq,
    neighbors: Neighbors,
    k: int,
    radius2,
    spacing: float,
    surface: LocalSurface | None = None,
    quantile: float = SUPPORT_QUANTILE,
) -> sparse.csr_matrix:
    """kNN graph (k) plus every supported segment between a point and its near neighbours (all columns given).

    With a ``surface``, a segment must also stay within its thickness (``_within_thickness``), and so
    must the kNN edges: an edge whose midpoint leaves the surface bridges two sheets, and is left out.
    """
    dist, idx = neighbors
    graph = knn_graph(x, k, neighbors)
    if surface is not None:
        edges = sparse.triu(graph, 1).tocoo()
        # a chord across two sheets has its midpoint about half its length off both; one along a sheet bent
        # through a whole radian sags by an eighth of its length
        # judged from both ends: at the end of a sheet a sample's own neighbourhood may hold the other sheet
        bridge = ~_within_thickness(surface, edges.row, edges.col, quantile, (0.5,), sag=BRIDGE_SAG)
        bridge |= ~_within_thickness(surface, edges.col, edges.row, quantile, (0.5,), sag=BRIDGE_SAG)
        if bridge.any():
            cut = sparse.csr_matrix((np.ones(int(bridge.sum())), (edges.row[bridge], edges.col[bridge])), graph.shape)
            graph = (graph - graph.multiply((cut + cut.T) > 0)).tocsr()
            graph.eliminate_zeros()
    a = np.repeat(np.arange(len(idx)), idx.shape[1] - k)
    b = idx[:, k:].ravel()
    if len(a) == 0:
        return graph
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], 1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    keep = segments_supported(sq, pairs[:, 0], pairs[:, 1], radius2, spacing)
    if surface is not None:
        keep[keep] = _within_thickness(surface, pairs[keep, 0], pairs[keep, 1], quantile, (0.5,))
    p = pairs[keep]
    lengths = np.maximum(np.linalg.norm(x[p[:, 0]] - x[p[:, 1]], axis=1), 1e-12)
    chords = sparse.csr_matrix((lengths, (p[:, 0], p[:, 1])), shape=graph.shape)
    return graph.maximum(chords).maximum(chords.T).tocsr()


def measured_pairs(
    n: int, rng: np.random.Generator, max_pairs: int = MAX_PAIRS, n_sources: int = N_SOURCES
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs i<j when there are at most ``max_pairs``, else ``n_sources`` random sources x random other points."""
    if n * (n - 1) // 2 <= max_pairs:
        return np.triu_indices(n, 1)
    sources = np.sort(rng.choice(n, size=min(n_sources, n), replace=False))
    per_source = max(1, max_pairs // len(sources))
    targets = rng.integers(0, n - 1, size=(len(sources), per_source))
    targets += targets >= sources[:, None]  # any point but the source itself
    return np.repeat(sources, per_source), targets.ravel()


# ---------------------------------------------------------------------------
# the surface


def local_dimension(x: np.ndarray, neighbor_idx: np.ndarray) -> tuple[int | None, float]:
    """(d, drop): the dimension after which the averaged local covariance spectrum first drops, and by how much.

    Each point's neighbourhood (itself and ``neighbor_idx``) gives a spectrum, normalised to
    sum 1 and averaged over points. d is the first place where consecutive values fall by
    ``DIMENSION_GAP`` or more (on a curved surface a second drop follows, from the
    curvature's direction to the noise); a spectrum that ends early (an exactly flat
    subspace smaller than the neighbourhoods) drops where it ends. None: no surface.
    """
    import torch  # deferred: see squared_distances

    members = np.concatenate([np.arange(len(x))[:, None], neighbor_idx], 1)
    points = torch.from_numpy(np.asarray(x, dtype=np.float64))[torch.from_numpy(members)]
    centred = points - points.mean(1, keepdim=True)
    # the squared singular values, as eigenvalues of the smaller of the Gram and the covariance matrices
    # (batched symmetric eigenvalues of m x m are several times cheaper than an SVD of m x D)
    small = (
        centred @ centred.transpose(1, 2) if centred.shape[1] <= centred.shape[2] else centred.transpose(1, 2) @ centred
    )
    s = torch.linalg.eigvalsh(small).flip(1).clamp_min(0)
    spectrum = (s / s.sum(1, keepdim=True).clamp_min(1e-300)).mean(0).numpy()
    rank = int((spectrum > 1e-9 * spectrum[0]).sum())
    span = min(members.shape[1] - 1, points.shape[2])  # m points span at most m - 1 directions, and D at most D
    top = min(rank, span)
    if top >= 2:
        ratios = spectrum[: top - 1] / spectrum[1:top]
        drops = np.nonzero(ratios >= DIMENSION_GAP)[0]
        if len(drops):  # the first: after the surface's curvature comes a second drop, to the noise
            return int(drops[0]) + 1, float(ratios[drops[0]])
    if rank < span:
        return rank, math.inf
    return None, float(ratios.max()) if top >= 2 else 0.0


class LocalSurface:
    """A d-dimensional moving-least-squares surface through a point set, and the set's thickness around it."""

    def __init__(self, x: np.ndarray, neighbors: Neighbors, k: int, dimension: int):
        import torch  # deferred: see squared_distances

        dist, idx = neighbors
        # float32 halves the memory the projections stream through; centring keeps its rounding relative
        self.centre = np.asarray(x, dtype=np.float64).mean(0)
        self.x = torch.from_numpy((np.asarray(x, dtype=np.float64) - self.centre).astype(np.float32))
        self.norm2 = (self.x * self.x).sum(1)
        n = len(x)
        pool = min(KERNEL_NEIGHBORS, idx.shape[1])
        self.pool = torch.from_numpy(np.concatenate([np.arange(n)[:, None], idx[:, :pool]], 1))
        self.width2 = torch.from_numpy(((KERNEL_WIDTH * np.maximum(dist[:, k - 1], 1e-30)) ** 2).astype(np.float32))
        self.dimension = dimension
        near = self.pool[:, : min(SURFACE_NEIGHBORS, pool) + 1]
        # The tangent plane from the principal axes of the pool's points within two kNN hops, then again from its
        # members on the sample's own sheet: those whose offset leaves that plane by no more than half its length
        # along it (a gap of the sampling along a sheet, which the kNN graph may not bridge), or by no more than
        # 3 x the members' median offset from it (the sheet's thickness). Where two sheets pass closer than the
        # pool reaches (the turns of a sparse swiss roll, the end of one), the other one is left out.
        hops = within_two_hops((dist[:, :pool], idx[:, :pool]), k)
        self.member = torch.from_numpy(np.concatenate([np.ones((n, 1), dtype=bool), hops], 1))
        self.tangent = self._principal_axes(dimension)
        offsets = self.x[self.pool] - self.x[:, None]
        along = torch.bmm(offsets, self.tangent.transpose(1, 2)).norm(dim=2)
        across = (offsets.norm(dim=2) ** 2 - along**2).clamp_min(0).sqrt()
        thick = torch.where(self.member, across, torch.full_like(across, float("nan"))).nanmedian(dim=1).values
        self.member = (across <= 0.5 * along) | (across <= 3.0 * thick[:, None])
        self.member[:, 0] = True
        self.tangent = self._principal_axes(dimension)
        every = torch.arange(n)
        self.points, _ = self.project(self.x, every)
        residual = self.x - self.project(self.x, every, leave_out=True)[0]
        around = residual[near]
        member = self.member[:, : near.shape[1], None].float()
        offset = (around * member).sum(1, keepdim=True) / member.sum(1, keepdim=True)
        # the set's own thickness around the surface near each point (systematic offsets removed)
        spread = (around - offset).norm(dim=2)
        self.spread = torch.where(self.member[:, : near.shape[1]], spread, torch.full_like(spread, float("nan")))

    def _principal_axes(self, dimension: int):
        """(n, d, D): each sample's top principal axes over the members of its pool (TANGENT_NEIGHBORS)."""
        import torch  # deferred: see squared_distances

        points = self.x[self.pool[:, : TANGENT_NEIGHBORS + 1]]
        member = self.member[:, : TANGENT_NEIGHBORS + 1, None].float()
        centre = (points * member).sum(1, keepdim=True) / member.sum(1, keepdim=True)
        a = (points - centre) * member  # (n, m, D): m = 41 members, D the embedding's dimension
        # the top right singular vectors of a from the eigenvectors of the smaller of its m x m Gram and D x D
        # covariance matrices (in float64, where repeated points cannot stall it): 2.5x faster than a batched
        # float32 SVD at m = 41, D = 64, the subspaces agree to 1e-5. From the Gram matrix, QR keeps the axes
        # orthonormal where a neighbourhood spans fewer than d directions (its small eigenvalues are rounding)
        try:
            if a.shape[2] < a.shape[1]:  # the covariance's eigenvectors are the axes themselves
                _, v = torch.linalg.eigh((a.transpose(1, 2) @ a).double())
                axes = v[:, :, -dimension:].flip(-1).to(a.dtype)
            else:
                top = _top_eigenvectors((a @ a.transpose(1, 2)).double(), dimension).to(a.dtype)
                axes, _ = torch.linalg.qr((top.transpose(1, 2) @ a).transpose(1, 2))
            if torch.isfinite(axes).all():  # float32 eigh once returned NaN without an error: checked, not trusted
                return axes.transpose(1, 2).contiguous()
        except torch.linalg.LinAlgError:  # should float64 not converge either
            pass
        return torch.linalg.svd(a, full_matrices=False)[2][:, :dimension].contiguous()  # converges on anything

    def thickness(self, quantile: float):
        """Per sample: the ``quantile`` of the residual distances of its neighbourhood."""
        import torch  # deferred: see squared_distances

        return torch.nanquantile(self.spread, quantile, dim=1)

    def project(self, p, anchor, leave_out: bool = False, own_sheet: bool = False):
        """Points p (N, D) onto the surface near their ``anchor`` samples; also the nearest sample to each p.

        ``own_sheet``: only the anchor's neighbours on its own sheet take part, so that a point between
        two sheets is projected onto the anchor's (the tests of segments and the relaxed paths); the samples
        themselves are projected with every neighbour, so that a gap along a sheet does not widen.
        """
        import torch  # deferred: see squared_distances

        pool = self.pool[anchor]
        # each point meets only its anchor's pool: sparse rows over the samples, one per point, so that the samples
        # are read where they lie (a few hundred kB) instead of gathered into an (N, pool, D) copy (tens of MB a
        # call); the distances and the mean 15x faster at N = 3,200, D = 64, the projection 4.2x (BENCHMARKS.md 13)
        rows = _pool_rows(pool, len(self.x))
        dots = _sampled_products(rows, p, self.x)  # p . x for each sample of the pool
        d2 = (self.norm2[pool] - 2.0 * dots + (p * p).sum(1, keepdim=True)).clamp_min(0)
        logit = -d2 / self.width2[pool]
        if own_sheet:
            logit = torch.where(self.member[anchor], logit, torch.full_like(logit, -math.inf))
            d2 = torch.where(self.member[anchor], d2, torch.full_like(d2, math.inf))
        if leave_out:  # the anchor's own point left out: residuals of samples are then honest
            logit[:, 0] = -math.inf
        # relative to the nearest taking part: a point far from every sample (many kernel widths) would
        # otherwise get weights that all underflow to 0 in float32, and a mean of 0 / 0
        weight = torch.exp(logit - logit.max(1, keepdim=True).values)
        weight = weight / weight.sum(1, keepdim=True)
        mean = _weighted_rows(rows, weight, self.x)
        t = self.tangent[anchor]
        along = torch.bmm(torch.bmm((p - mean)[:, None], t.transpose(1, 2)), t)[:, 0]
        return mean + along, pool[torch.arange(len(pool)), d2.argmin(1)]

    def relaxed_lengths(self, chains: np.ndarray, scale: float) -> np.ndarray:
        """Length of each path (rows of sample indices, first and last fixed) relaxed on the surface.

        Coarse to fine: the path is thinned (every other vertex, while no thinned hop spans
        more than 4 ``scale`` of path, down to 5 vertices), relaxed, then subdivided and
        relaxed again while a hop is longer than ``scale`` (up to MAX_VERTICES). A sweep
        moves the odd vertices, then the even ones (red-black Gauss-Seidel), each to the
        projection of its neighbours' midpoint: the fixed point is a discrete geodesic of
        the surface. Paths of similar length are relaxed together.
        """
        import torch  # deferred: see squared_distances

        out = np.empty(len(chains))
        vertices = self.points.double().numpy()
        hops = np.linalg.norm(vertices[chains[:, 1:]] - vertices[chains[:, :-1]], axis=2)
        order = np.argsort(hops.sum(1), kind="stable")
        for start in range(0, len(chains), 256):
            rows_of = order[start : start + 256]
            chain = _thinned(chains[rows_of], hops[rows_of], 4.0 * scale)
            v, anchor = self.points[torch.from_numpy(chain)].clone(), torch.from_numpy(chain).clone()
            for level in range(8):
                if level:
                    longest = float((v[:, 1:] - v[:, :-1]).norm(dim=2).max())
                    if longest <= scale or 2 * v.shape[1] - 1 > MAX_VERTICES:
                        break
                    v, anchor = _subdivided(v, anchor)
                rows, length, dim = v.shape
                for _ in range(RELAX_STEPS[min(level, len(RELAX_STEPS) - 1)]):
                    for parity in (1, 2):
                        idx = torch.arange(parity, length - 1, 2)
                        if len(idx) == 0:
                            continue
                        target = 0.5 * (v[:, idx - 1] + v[:, idx + 1])
                        moved, nearest = self.project(
                            target.reshape(-1, dim), anchor[:, idx].reshape(-1), own_sheet=True
                        )
                        v[:, idx] = moved.reshape(rows, len(idx), dim)
                        anchor[:, idx] = nearest.reshape(rows, len(idx))
            out[rows_of] = (v[:, 1:] - v[:, :-1]).norm(dim=2).sum(1).numpy()
        return out


def _top_eigenvectors(matrices, count: int):
    """(n, m, count): the top ``count`` eigenvectors of each symmetric (n, m, m) float64 CPU matrix, largest first.
    LAPACK's dsyevr computes only those: 1.7x faster than all of them (torch's eigh) for 1,000 matrices of
    m = 41 and count 2, the same subspaces to 1e-14. Raises torch's LinAlgError where one does not converge."""
    import torch  # deferred: see squared_distances
    from scipy.linalg import lapack  # deferred: LAPACK's wrappers, for the tangent planes only

    stack = matrices.numpy()
    m = stack.shape[1]
    top = np.empty((len(stack), m, count))
    for row, matrix in enumerate(stack):
        _, vectors, _, _, info = lapack.dsyevr(matrix, compute_v=1, range="I", il=m - count + 1, iu=m)
        if info != 0:
            raise torch.linalg.LinAlgError(f"dsyevr did not converge (info {info})")
        top[row] = vectors[:, ::-1]
    return torch.from_numpy(top)


def _pool_rows(pool, n: int):
    """(crow, columns, shape) of a CSR matrix whose row r holds the samples ``pool[r]`` (n columns)."""
    import torch  # deferred: see squared_distances

    rows, width = pool.shape
    return torch.arange(0, rows * width + 1, width), pool.reshape(-1), (rows, n)


def _sparse_rows(rows, values):
    """The CSR matrix of ``rows`` holding ``values`` (one per entry, row-major); torch calls its CSR support beta
    (a warning once per process) and checks no invariant unless asked (these rows are built valid)."""
    import torch  # deferred: see squared_distances

    crow, columns, shape = rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, columns, values.reshape(-1), size=shape, check_invariants=False)


def _sampled_products(rows, p, x):
    """(N, pool): p[r] . x[s] for each sample s of row r (torch's sampled dense-dense product)."""
    import torch  # deferred: see squared_distances

    pattern = _sparse_rows(rows, torch.zeros(len(rows[1]), dtype=p.dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        products = torch.sparse.sampled_addmm(pattern, p, x.T, beta=0.0)
    return products.values().view(rows[2][0], -1)


def _weighted_rows(rows, weight, x):
    """(N, D): the ``weight``-weighted sum of each row's samples of x."""
    return _sparse_rows(rows, weight) @ x


def _thinned(chains: np.ndarray, hops: np.ndarray, reach: float) -> np.ndarray:
    """Every other vertex (the last kept) while more than 5 remain and no new hop spans more than ``reach``."""
    along = np.concatenate([np.zeros((len(chains), 1)), np.cumsum(hops, 1)], 1)
    while chains.shape[1] > 5:
        keep = np.unique(np.r_[np.arange(0, chains.shape[1], 2), chains.shape[1] - 1])
        if np.diff(along[:, keep], axis=1).max() > reach:
            break
        chains, along = chains[:, keep], along[:, keep]
    return chains


def _subdivided(v, anchor):
    import torch  # deferred: see squared_distances

    rows, length, dim = v.shape
    finer = torch.empty((rows, 2 * length - 1, dim), dtype=v.dtype)
    finer[:, ::2], finer[:, 1::2] = v, 0.5 * (v[:, 1:] + v[:, :-1])
    anchors = torch.empty((rows, 2 * length - 1), dtype=anchor.dtype)
    anchors[:, ::2], anchors[:, 1::2] = anchor, anchor[:, :-1]
    return finer, anchors


def _paths(pred: np.ndarray, row: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Vertices of the paths i -> j from Dijkstra's predecessors, one row each, shorter paths padded with i."""
    current = j.copy()
    steps = [current]
    active = current != i
    while active.any():
        current = np.where(active, pred[row, current], current)
        steps.append(current)
        active &= current != i
    return np.array(steps[::-1]).T


# ---------------------------------------------------------------------------
# the measurement


@dataclass
class Flatness:
    """Calibrated flatness of one point set (see the module docstring)."""

    raw: float | None = None  # mean kNN-graph geodesic / Euclidean ratio (GeodesicStats.mean)
    calibrated: float | None = None  # mean geodesic / chord over measured pairs: 1 = flat
    reference: float | None = None  # raw / calibrated: the part of the raw ratio that is the kNN graph's detours
    dimension: float | None = None  # the dimension that sets the ball test's tolerance (surface's, else TwoNN)
    surface_dimension: int | None = None  # dimension of the fitted surface; None: no surface (points as they are)
    dimension_gap: float | None = None  # how much the averaged local spectrum drops after surface_dimension
    fine_dimension: int | None = None  # with check_resolution: the same dimension from k neighbours
    coarse_dimension: int | None = None  # ... and from KERNEL_NEIGHBORS
    thickness: float | None = None  # median residual distance of the points around the surface
    tolerance: float | None = None  # support radius as a fraction of each point's k-NN distance (tau)
    direct_fraction: float | None = None  # share of measured pairs whose straight segment stays on the data
    relaxed_pairs: int = 0  # bent pairs whose paths were relaxed on the surface
    n_pairs: int = 0  # pairs measured (same kNN component)
    n_points: int = 0  # points measured (a seeded subsample above MAX_POINTS)
    resolved: bool | None = None  # could a bend of this set be seen (``resolution``)? None: not checked
    probe_reading: float | None = None  # the bent copy's reading
    probe_exact: float | None = None  # the bent copy's exact value


@dataclass
class _Reading:
    flatness: Flatness
    i: np.ndarray
    j: np.ndarray
    points: np.ndarray  # the (projected) points the pairs were measured on, in the coordinates of their span


def chord_flatness(
    x: np.ndarray,
    k: int,
    dimension: float | None = None,
    *,
    neighbors: Neighbors | None = None,
    quantile: float = SUPPORT_QUANTILE,
    max_points: int = MAX_POINTS,
    max_pairs: int = MAX_PAIRS,
    n_sources: int = N_SOURCES,
    seed: int = 0,
    check_resolution: bool = False,
) -> Flatness:
    """Mean geodesic / chord ratio of a point set (``raw`` and ``reference`` are left to the caller).

    ``dimension`` sets the ball test's tolerance (``support_tolerance``); by default the
    surface's dimension, or the set's TwoNN when it has no surface. ``check_resolution``
    also runs ``resolution`` and fills ``resolved``, ``probe_reading`` and ``probe_exact``.
    """
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if len(x) > max_points:
        x, neighbors = x[np.sort(rng.choice(len(x), size=max_points, replace=False))], None
    reading = _read(x, k, dimension, neighbors, quantile, max_pairs, n_sources, rng, scales=check_resolution)
    flat = reading.flatness
    if check_resolution and flat.calibrated is not None:
        probe_ok, flat.probe_reading, flat.probe_exact = resolution(
            x,
            k,
            dimension,
            surface_dimension=flat.surface_dimension,
            quantile=quantile,
            max_pairs=max_pairs,
            n_sources=n_sources,
            seed=seed,
        )
        flat.resolved = probe_ok and _same_at_every_scale(flat, k)
    elif check_resolution:
        flat.resolved = False
    return flat


def _same_at_every_scale(flat: Flatness, k: int) -> bool:
    """False when the surface's dimension from k or KERNEL_NEIGHBORS neighbours differs from SURFACE_NEIGHBORS'.

    Then some neighbourhoods merge structure that smaller ones still separate (turns of a rolled
    sheet closer than the sampling resolves, bends tighter than a neighbourhood: a swiss roll of
    150 points looks 2-D at 10 neighbours and 3-D at 20, of 300 points 3-D at 40), and such a
    set's bends are not read. k neighbours show at most k dimensions, and noise can hide a
    surface at that scale: then that scale concludes nothing.
    """
    d = flat.surface_dimension
    if d is None:
        return True
    fine_ok = flat.fine_dimension is None or d >= k or flat.fine_dimension == d
    coarse_ok = flat.coarse_dimension is None or flat.coarse_dimension == d
    return fine_ok and coarse_ok


def _read(
    x: np.ndarray,
    k: int,
    dimension: float | None,
    neighbors: Neighbors | None,
    quantile: float,
    max_pairs: int,
    n_sources: int,
    rng: np.random.Generator,
    scales: bool = False,
) -> _Reading:
    """One reading of ``x``; ``scales`` also reads the surface's dimension at k and KERNEL_NEIGHBORS neighbours."""
    import torch  # deferred: see squared_distances

    n = len(x)
    result = Flatness(dimension=dimension, n_points=n)
    none = np.zeros(0, dtype=np.int64)
    if n < 3:
        return _Reading(result, none, none, x)
    # a set in a subspace (noise-free data, dead units) in that subspace's coordinates: the same distances, and
    # the tangent planes' eigenproblems, projections and segment tests at its size instead of the space's
    x = isometric_coordinates(x, subspace=True)
    m = min(n - 1, max(k, SHORT_CHORD_NEIGHBORS, KERNEL_NEIGHBORS))
    if neighbors is None or neighbors[0].shape[1] < m:
        neighbors = nearest_neighbors(x, m)
    neighbors = (neighbors[0][:, :m], neighbors[1][:, :m])
    k = min(k, m)
    surface = None
    if n > SURFACE_NEIGHBORS + 1 and np.median(neighbors[0][:, k - 1]) > 0:
        d, result.dimension_gap = local_dimension(x, neighbors[1][:, :SURFACE_NEIGHBORS])
        if scales:  # for the resolution check only (``_same_at_every_scale``)
            result.fine_dimension = local_dimension(x, neighbors[1][:, :k])[0]
            result.coarse_dimension = local_dimension(x, neighbors[1][:, :KERNEL_NEIGHBORS])[0]
        if d is not None and d < min(SURFACE_NEIGHBORS, x.shape[1]):
            surface = LocalSurface(x, neighbors, k, d)
            result.surface_dimension = d
            result.thickness = float(surface.spread.nanmedian())
    y = surface.points.double().numpy() + surface.centre if surface is not None else x
    if surface is not None:  # the projected points have neighbours of their own
        neighbors = nearest_neighbors(y, m)
    short = min(m, max(k, SHORT_CHORD_NEIGHBORS))
    near = (neighbors[0][:, :short], neighbors[1][:, :short])
    radius = near[0][:, k - 1]
    if dimension is None:
        dimension = float(surface.dimension) if surface is not None else twonn_fit(near[0][:, 0], near[0][:, 1])
    result.dimension = dimension
    result.tolerance = tau = support_tolerance(k, dimension, quantile, n)
    spacing = tau * float(np.median(radius))
    if not spacing > 0:  # most points coincide with k others: no scale to measure at
        return _Reading(result, none, none, y)
    sq = squared_distances(y)
    radius2 = torch.from_numpy((tau * radius) ** 2).float()
    graph = chord_graph(y, sq, near, k, radius2, spacing, surface, quantile)
    _, component = connected_components(graph, directed=False)  # bridges between sheets left out
    i, j = measured_pairs(n, rng, max_pairs, n_sources)
    euclid = np.linalg.norm(y[i] - y[j], axis=1)
    scale = float(np.sqrt(((y - y.mean(0)) ** 2).sum(1).mean()))
    keep = (component[i] == component[j]) & (euclid > 1e-9 * scale)  # coincident points have no ratio
    i, j, euclid = i[keep], j[keep], euclid[keep]
    if len(i) == 0:
        return _Reading(result, i, j, y)
    direct = segments_supported(sq, i, j, radius2, spacing)
    if surface is not None:
        direct &= _within_thickness(surface, i, j, quantile)
    ratio = np.ones(len(i))
    bent = np.nonzero(~direct)[0]
    if len(bent):
        sources, row = np.unique(i[bent], return_inverse=True)
        dist, pred = symmetric_dijkstra(graph, sources, predecessors=True)  # chord_graph stores both directions
        lengths = np.maximum(dist[row, j[bent]], euclid[bent])  # a path is never shorter than the segment
        if surface is not None and surface.dimension >= RELAX_FROM_DIMENSION:
            relax = bent if len(bent) <= MAX_RELAXED else np.sort(rng.choice(bent, MAX_RELAXED, replace=False))
            where = np.searchsorted(bent, relax)
            chains = _paths(pred, row[where], i[relax], j[relax])
            relaxed = np.maximum(surface.relaxed_lengths(chains, float(np.median(radius))), euclid[relax])
            if len(relax) < len(bent):  # ratio estimator: the graph lengths scaled as relaxing scaled the sample
                lengths = lengths * (relaxed.sum() / lengths[where].sum())
            lengths[where] = relaxed
            result.relaxed_pairs = len(relax)
        ratio[bent] = np.maximum(lengths, euclid[bent]) / euclid[bent]
    result.calibrated = float(ratio.mean())
    result.direct_fraction = float(direct.mean())
    result.n_pairs = int(len(i))
    return _Reading(result, i, j, y)


def _within_thickness(
    surface: LocalSurface,
    i: np.ndarray,
    j: np.ndarray,
    quantile: float,
    fractions=(0.5, 0.25, 0.75),
    sag: float = 0.0,
) -> np.ndarray:
    """Whether the midpoint (and quarter points) of each segment lie within the surface's local thickness.

    Each point is projected with the nearer end's neighbourhood; the thickness compared is
    that of the sample nearest to the point among them. ``sag``: also allow this fraction of
    the segment's length (a short chord of a curved sheet sags below it).
    """
    import torch  # deferred: see squared_distances

    limit = surface.thickness(quantile) + 1e-4 * surface.width2.sqrt()  # exact surfaces: float32 rounding only
    ok = np.ones(len(i), dtype=bool)
    ends = surface.points
    for f in fractions:
        live = np.nonzero(ok)[0]
        for start in range(0, len(live), 4096):
            rows = live[start : start + 4096]
            a, b = torch.from_numpy(i[rows]), torch.from_numpy(j[rows])
            p = (1 - f) * ends[a] + f * ends[b]  # (float32, centred like the surface's samples)
            on, nearest = surface.project(p, a if f <= 0.5 else b, own_sheet=True)
            allowed = torch.maximum(limit[nearest], sag * (ends[a] - ends[b]).norm(dim=1))
            ok[rows] = ((p - on).norm(dim=1) <= allowed).numpy()
    return ok


# ---------------------------------------------------------------------------
# resolution: can this set show a bend at all?


def curved_probe(x: np.ndarray, dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """The set with its top ``dimension`` principal coordinates wrapped onto a hemisphere; also the probe's sphere.

    Each point's principal coordinates u (radius |u|, direction w) go to the point at polar
    angle (pi / 2) |u| / max|u| and direction w of a sphere of radius max|u| / (pi / 2)
    (azimuthal equidistant: distances from the centre kept, density changed by at most
    sin(t) / t); the remaining coordinates (the set's thickness) are kept as they are, in
    one more dimension. Returns (probe points, unit vectors on the sphere), so the exact
    geodesic / chord ratio of a pair is radius * angle(unit_i, unit_j) / |probe_i - probe_j|
    without the thickness. The exact excess of a full hemisphere is 5-8%.
    """
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(0)
    axes = np.linalg.svd(centred, full_matrices=False)[2][:dimension]
    u = centred @ axes.T
    rest = centred - u @ axes
    reach = np.linalg.norm(u, axis=1)
    top = float(reach.max())
    direction = u / np.maximum(reach, 1e-300)[:, None]
    theta = 0.5 * math.pi * reach / max(top, 1e-300)
    unit = np.concatenate([np.sin(theta)[:, None] * direction, np.cos(theta)[:, None]], 1)
    radius = top / (0.5 * math.pi)
    # the sphere spans the top axes and one new direction; the thickness stays in the rest
    probe = np.concatenate([rest + (radius * unit[:, :-1]) @ axes, radius * unit[:, -1:]], 1)
    return probe, unit


def resolution(
    x: np.ndarray,
    k: int,
    dimension: float | None = None,
    *,
    surface_dimension: int | None = None,
    quantile: float = SUPPORT_QUANTILE,
    max_pairs: int = MAX_PAIRS,
    n_sources: int = N_SOURCES,
    seed: int = 0,
) -> tuple[bool, float | None, float | None]:
    """(resolved, probe reading, probe exact): does a curved copy of the set read what it is?

    The copy wraps the set's top principal coordinates, as many as its surface dimension
    (else its rounded TwoNN), onto a hemisphere (``curved_probe``): the same size, density
    and thickness, with a known curvature. Resolved when the copy's exact excess over the
    measured pairs is at least ``PROBE_MIN_EXCESS`` and the reading recovers it: no more
    than ``RESOLUTION_TOLERANCE`` below the exact value and at least half of its excess.
    """
    d = surface_dimension
    if d is None:
        d = max(1, int(round(dimension))) if dimension is not None and math.isfinite(dimension) else 2
    d = min(d, x.shape[1], len(x) - 1)
    probe, unit = curved_probe(x, d)
    rng = np.random.default_rng(seed + 1)
    reading = _read(probe, k, dimension, None, quantile, min(max_pairs, PROBE_PAIRS), n_sources, rng)
    if reading.flatness.calibrated is None or not len(reading.i):
        return False, None, None
    a, b = reading.i, reading.j
    angle = np.arccos(np.clip((unit[a] * unit[b]).sum(1), -1.0, 1.0))
    chord = np.linalg.norm(unit[a] - unit[b], axis=1)
    keep = chord > 1e-12
    exact = float((angle[keep] / chord[keep]).mean()) if keep.any() else 1.0
    value = reading.flatness.calibrated
    excess = exact - 1
    seen = value >= exact - min(RESOLUTION_TOLERANCE, 0.5 * excess)
    return bool(excess >= PROBE_MIN_EXCESS and seen), value, exact
