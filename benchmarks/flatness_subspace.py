"""Benchmark 14: the calibrated flatness of a set that spans only a few of its dimensions, read in all of them
against read in its own span; and of a set that spans all of them, its tangent planes from all eigenvectors of
their Gram matrices (torch's eigh) against only the top d (LAPACK's dsyevr).

A noise-free set (the ground-truth batteries' circles, spheres and swiss rolls in R^64; embeddings with dead
units) lies in an r-dimensional subspace. ``chord_flatness`` now reads it in that subspace's coordinates and one
more (``isometric_coordinates(x, subspace=True)``), so the tangent planes come from the small r + 1 covariance
instead of the 41 x 41 Gram matrix, and the projections and segment tests run on r + 1 coordinates instead of 64.
Both run side by side here, single-threaded, on the same sets (the reduction turned off by swapping the identity
in); a noisy set, which spans all 64 dimensions, shows what the rank check costs where nothing is reduced. Then
noisy sets, read with the old tangent-plane solver swapped in.

    python benchmarks/flatness_subspace.py [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import math

import numpy as np
from common import arguments, emit, machine, median_time, today


def embed(points: np.ndarray, seed: int, noise: float = 0.0) -> np.ndarray:
    """Into R^64 by a random orthonormal frame, plus isotropic noise of standard deviation ``noise``."""
    rng = np.random.default_rng(seed)
    frame = np.linalg.qr(rng.standard_normal((64, points.shape[1])))[0]
    return points @ frame.T + noise * rng.standard_normal((len(points), 64))


def test_sets() -> dict[str, np.ndarray]:
    """1,000 points each, as tests/test_flatness.py builds them."""
    from sklearn.datasets import make_swiss_roll

    rng = np.random.default_rng(0)
    t = rng.uniform(0, 2 * math.pi, 1000)
    sphere2 = rng.standard_normal((1000, 3))
    sphere4 = rng.standard_normal((1000, 5))
    sphere2 /= np.linalg.norm(sphere2, axis=1, keepdims=True)
    sphere4 /= np.linalg.norm(sphere4, axis=1, keepdims=True)
    return {
        "circle": embed(np.stack([np.cos(t), np.sin(t)], 1), 1),
        "2-sphere": embed(sphere2, 2),
        "4-sphere": embed(sphere4, 3),
        "swiss roll": embed(make_swiss_roll(1000, random_state=0)[0], 4),
        "2-sphere, noise 0.01 (spans all 64)": embed(sphere2, 5, noise=0.01),
    }


def full_rank_sets() -> dict[str, np.ndarray]:
    """Noisy sets, as embeddings are: they span all 64 dimensions."""
    from sklearn.datasets import make_swiss_roll

    sphere = np.random.default_rng(6).standard_normal((1000, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
    return {
        "2-sphere, noise 0.01": embed(sphere, 6, noise=0.01),
        "swiss roll, noise 0.05": embed(make_swiss_roll(1000, random_state=1)[0], 7, noise=0.05),
    }


def side_by_side(module, x: np.ndarray, swaps: dict, repeats: int) -> dict:
    """A reading of ``x`` (resolution probe included) with each ``module.<name>`` of ``swaps`` replaced by its
    value, and as it is."""
    from geotune.analysis.flatness import chord_flatness

    now, row = {name: getattr(module, name) for name in swaps}, {}
    for label, parts in (("before", swaps), ("now", now)):
        for name, part in parts.items():
            setattr(module, name, part)
        try:
            seconds, reading = median_time(lambda: chord_flatness(x, 10, check_resolution=True), repeats)
        finally:
            for name, part in now.items():
                setattr(module, name, part)
        row[label] = {"s": round(seconds, 3), "calibrated": reading.calibrated, "probe": reading.probe_reading}
        row[label]["resolved"] = reading.resolved
    old, new = row["before"], row["now"]
    row["speed-up"] = round(old["s"] / new["s"], 2)
    row["largest relative difference"] = max(
        abs(old[key] - new[key]) / abs(old[key]) for key in ("calibrated", "probe")
    )
    return row


def main() -> None:
    args = arguments(__doc__)

    import torch

    from geotune.analysis import flatness

    torch.set_num_threads(1)
    result: dict = {"machine": machine(f"torch {torch.__version__}, 1 thread"), "date": today(), "readings": {}}
    in_span = flatness.isometric_coordinates
    for name, x in test_sets().items():
        row = side_by_side(flatness, x, {"isometric_coordinates": lambda x, subspace: x}, args.repeats)
        row["coordinates read"] = int(in_span(x, subspace=True).shape[1])
        result["readings"][name] = row

    # full-rank sets: the tangent planes' top eigenvectors from torch's eigh (all of them) against dsyevr (the top d)
    def all_eigenvectors(matrices, count):
        return torch.linalg.eigh(matrices)[1][:, :, -count:].flip(-1)

    result["top eigenvectors"] = {}
    for name, x in full_rank_sets().items():
        result["top eigenvectors"][name] = side_by_side(
            flatness, x, {"_top_eigenvectors": all_eigenvectors}, args.repeats
        )
    emit(result, args.json)


if __name__ == "__main__":
    main()
