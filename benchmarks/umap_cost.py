"""Benchmark 12: the UMAP projection of a trial's embeddings, umap-learn's default call against geotune's.

Below 4,096 points umap-learn finds exact neighbours from a full distance matrix, which it builds by passing its
compiled metric to scikit-learn's ``pairwise_distances`` as a Python callable: one Python call per pair.
``geotune.analysis.latent.umap_projection`` computes the same distances with the same compiled metric in one
compiled loop (``geotune.analysis.umap_neighbors``) and passes the exact neighbours as ``precomputed_knn``. Both
calls run side by side on the same points, kernels compiled first, single-threaded and seeded as geotune runs
UMAP, on one connected manifold and on the same cut into ten separated classes; the layouts are compared
(largest coordinate difference over the layout's extent) and each layout's trustworthiness is given.

    python benchmarks/umap_cost.py [--sizes 500 1500 3000] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from common import emit, machine, today


def make_embeddings(n: int, separated: bool, seed: int = 0) -> np.ndarray:
    """A curved 8-dimensional manifold in R^64 (as benchmark 3), float32 as a trial's embeddings; ``separated``:
    cut into 10 classes moved apart, as a trained network's classes are (UMAP's graph then falls apart)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 8))
    w = rng.standard_normal((8, 64)) / np.sqrt(8)
    x = np.tanh(z @ w) + 0.5 * np.sin(2 * z @ rng.standard_normal((8, 64)) / np.sqrt(8))
    if separated:
        x += 2.0 * rng.standard_normal((10, 64))[rng.integers(0, 10, n)]
    return x.astype(np.float32)


def umap_default(x: np.ndarray, seed: int) -> np.ndarray:
    import umap

    return umap.UMAP(n_neighbors=15, random_state=seed, n_jobs=1).fit_transform(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1500, 3000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()

    import numba
    import umap
    from sklearn.manifold import trustworthiness

    from geotune.analysis.latent import umap_projection

    warmup = make_embeddings(300, False, 99)
    umap_default(warmup, 0), umap_projection(warmup, 10, 0)  # compile (or load) the kernels outside the timings
    rows = []
    for n, separated in ((n, separated) for n in args.sizes for separated in (False, True)):
        x = make_embeddings(n, separated)
        times: dict[str, list[float]] = {"umap_default_s": [], "geotune_s": []}
        for _ in range(args.repeats):
            for name, run in (("umap_default_s", umap_default), ("geotune_s", lambda a, s: umap_projection(a, 10, s))):
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    layout = run(x, 0)
                times[name].append(time.perf_counter() - start)
                if name == "umap_default_s":
                    default_layout = layout
        extent = float(np.ptp(default_layout, axis=0).max())
        rows.append(
            {
                "points": n,
                "classes": "10 separated" if separated else "one connected manifold",
                **{name: round(statistics.median(t), 3) for name, t in times.items()},
                "speedup": round(statistics.median(times["umap_default_s"]) / statistics.median(times["geotune_s"]), 2),
                "largest_difference_over_extent": float(np.abs(default_layout - layout).max()) / extent,
                "trustworthiness_default": round(float(trustworthiness(x, default_layout, n_neighbors=10)), 4),
                "trustworthiness_geotune": round(float(trustworthiness(x, layout, n_neighbors=10)), 4),
            }
        )
        print(rows[-1], flush=True)
    versions = f"umap-learn {umap.__version__}, numba {numba.__version__}, median of {args.repeats}"
    emit({"benchmark": "umap_cost", "machine": machine(versions), "date": today(), "rows": rows}, args.json)


if __name__ == "__main__":
    main()
