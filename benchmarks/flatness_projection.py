"""Benchmark 13: the calibrated flatness's projections onto its local surface, gathered against sparse rows.

``LocalSurface.project`` moves points onto the surface near their anchor samples: a Gaussian-weighted mean of the
anchor's pool of 41 samples, then the tangent plane. It used to gather each point's pool into an (N, 41, D)
copy and multiply it twice (batched matrix-vector products); it now reads the samples where they lie, through
one sparse row per point (torch's sampled dense-dense product for the distances, a sparse-dense product for the
mean). Both run side by side here on the same surfaces and points, single-threaded: the projection alone at
the relaxed paths' size (N = 3,200 points, D = 64), and whole readings (``chord_flatness`` with its resolution
probe) of curved sets with the old projection swapped in; the readings are compared. The sets are noise-free,
and since benchmark 14 such a set is read in its own span (a few coordinates, where the projection's size matters
less): here they are read in all 64, as when this was recorded and as a set that spans every dimension is.

    python benchmarks/flatness_projection.py [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import math

import numpy as np
from common import arguments, emit, machine, median_time, today


def gathered_projection(self, p, anchor, leave_out: bool = False, own_sheet: bool = False):
    """LocalSurface.project as it was before (the pool gathered into an (N, pool, D) copy): the baseline."""
    import torch

    pool = self.pool[anchor]
    xs = self.x[pool]
    d2 = (self.norm2[pool] - 2.0 * torch.bmm(xs, p[:, :, None])[..., 0] + (p * p).sum(1, keepdim=True)).clamp_min(0)
    logit = -d2 / self.width2[pool]
    if own_sheet:
        logit = torch.where(self.member[anchor], logit, torch.full_like(logit, -math.inf))
        d2 = torch.where(self.member[anchor], d2, torch.full_like(d2, math.inf))
    if leave_out:
        logit[:, 0] = -math.inf
    weight = torch.exp(logit - logit.max(1, keepdim=True).values)
    weight = weight / weight.sum(1, keepdim=True)
    mean = torch.bmm(weight[:, None], xs)[:, 0]
    t = self.tangent[anchor]
    along = torch.bmm(torch.bmm((p - mean)[:, None], t.transpose(1, 2)), t)[:, 0]
    return mean + along, pool[torch.arange(len(pool)), d2.argmin(1)]


def curved_sets() -> dict[str, np.ndarray]:
    """A 4-sphere and a swiss roll of 1,000 points each, in R^64 (rotated), as the flatness tests build them."""
    rng = np.random.default_rng(2)
    sphere = rng.standard_normal((1000, 5))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    t = 1.5 * np.pi * (1 + 2 * rng.random(1000))
    roll = np.stack([t * np.cos(t), 21 * rng.random(1000), t * np.sin(t)], 1) / 5
    rotate = np.linalg.qr(rng.standard_normal((64, 64)))[0]
    return {
        "4-sphere": np.pad(sphere, ((0, 0), (0, 59))) @ rotate,
        "swiss roll": np.pad(roll, ((0, 0), (0, 61))) @ rotate,
    }


def main() -> None:
    args = arguments(__doc__)

    import torch

    from geotune.analysis import flatness
    from geotune.analysis.neighbors import nearest_neighbors

    torch.set_num_threads(1)
    result: dict = {"machine": machine(f"torch {torch.__version__}, 1 thread"), "date": today(), "projection": {}}
    sparse_projection = flatness.LocalSurface.project

    # the projection alone: a surface of the 4-sphere, 3,200 points near random anchors (a relaxation sweep's size)
    x = curved_sets()["4-sphere"]
    surface = flatness.LocalSurface(x, nearest_neighbors(x, 40), 10, 4)
    rng = np.random.default_rng(0)
    anchor = torch.from_numpy(rng.integers(0, len(x), 3200))
    noise = torch.randn(3200, surface.x.shape[1], generator=torch.Generator().manual_seed(0))
    p = surface.points[anchor] + 0.01 * noise
    for name, project in (("gathered", gathered_projection), ("sparse rows", sparse_projection)):
        seconds, (moved, nearest) = median_time(lambda project=project: project(surface, p, anchor, own_sheet=True), 20)
        result["projection"][name] = {"ms": round(1000 * seconds, 2)}
        result["projection"][name]["moved"], result["projection"][name]["nearest"] = moved, nearest
    old, new = result["projection"]["gathered"], result["projection"]["sparse rows"]
    result["projection"]["largest difference"] = float((old.pop("moved") - new.pop("moved")).abs().max())
    result["projection"]["same nearest sample"] = bool(torch.equal(old.pop("nearest"), new.pop("nearest")))
    result["projection"]["speed-up"] = round(old["ms"] / new["ms"], 1)

    # whole readings, the resolution probe included
    result["readings"] = {}
    in_span = flatness.isometric_coordinates
    flatness.isometric_coordinates = lambda x, subspace: x  # all 64 coordinates (see the docstring)
    for name, points in curved_sets().items():
        row = {}
        for label, project in (("gathered", gathered_projection), ("sparse rows", sparse_projection)):
            flatness.LocalSurface.project = project
            try:
                seconds, reading = median_time(
                    lambda points=points: flatness.chord_flatness(points, 10, check_resolution=True), args.repeats
                )
            finally:
                flatness.LocalSurface.project = sparse_projection
            row[label] = {"s": round(seconds, 3), "calibrated": reading.calibrated, "resolved": reading.resolved}
        row["speed-up"] = round(row["gathered"]["s"] / row["sparse rows"]["s"], 2)
        result["readings"][name] = row
    flatness.isometric_coordinates = in_span
    emit(result, args.json)


if __name__ == "__main__":
    main()
