"""Benchmark 14: the calibrated flatness of a set that spans only a few of its dimensions, read in all of them
against read in its own span.

A noise-free set (the ground-truth batteries' circles, spheres and swiss rolls in R^64; embeddings with dead
units) lies in an r-dimensional subspace. ``chord_flatness`` now reads it in that subspace's coordinates and one
more (``isometric_coordinates(x, subspace=True)``), so the tangent planes come from the small r + 1 covariance
instead of the 41 x 41 Gram matrix, and the projections and segment tests run on r + 1 coordinates instead of 64.
Both run side by side here, single-threaded, on the same sets (the reduction turned off by swapping the identity
in); a noisy set, which spans all 64 dimensions, shows what the rank check costs where nothing is reduced.

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


def main() -> None:
    args = arguments(__doc__)

    import torch

    from geotune.analysis import flatness

    torch.set_num_threads(1)
    result: dict = {"machine": machine(f"torch {torch.__version__}, 1 thread"), "date": today(), "readings": {}}
    in_span = flatness.isometric_coordinates
    for name, x in test_sets().items():
        row = {}
        for label, reduce in (("all 64 coordinates", lambda x, subspace: x), ("own span", in_span)):
            flatness.isometric_coordinates = reduce
            try:
                seconds, reading = median_time(
                    lambda x=x: flatness.chord_flatness(x, 10, check_resolution=True), args.repeats
                )
            finally:
                flatness.isometric_coordinates = in_span
            row[label] = {
                "s": round(seconds, 3),
                "calibrated": reading.calibrated,
                "probe": reading.probe_reading,
                "resolved": reading.resolved,
            }
        old, new = row["all 64 coordinates"], row["own span"]
        row["coordinates read"] = int(in_span(x, subspace=True).shape[1])
        row["speed-up"] = round(old["s"] / new["s"], 2)
        row["largest relative difference"] = max(
            abs(old[key] - new[key]) / abs(old[key]) for key in ("calibrated", "probe")
        )
        result["readings"][name] = row
    emit(result, args.json)


if __name__ == "__main__":
    main()
