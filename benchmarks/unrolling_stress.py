"""Which stress unrolls a swiss roll, and what its targets must be held for (issue 28 item 5, open).

Not a timing: an experiment that the Regularizers page quotes. The roll of tests/test_regularizers.py (400
points in R^64) is moved by plain gradient descent with momentum 0.9 on the stress
sum (|z_i - z_j| - g_ij)^2 / sum g_ij^2 over all pairs, where g holds kNN-graph (k 5) geodesics, under several
policies for g: held from the start, recomputed every step or every R steps, or refreshed every R steps keeping
the shorter (min) or the longer (max) of old and new. Printed per policy and seed: the Spearman correlation of
Euclidean distances with distances along the unrolled sheet (1: unrolled; 0.36 at the start), TwoNN, the
participation ratio and the largest distance (the scale: inflation or collapse).

    python benchmarks/unrolling_stress.py [--steps 500] [--lr 20] [--seeds 0 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import emit, machine, today

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

POLICIES = {  # name: (refresh every R steps, 0 = never; how a refresh combines old and new targets)
    "held": (0, "new"),
    "recomputed every step": (1, "new"),
    "recomputed every 100": (100, "new"),
    "refresh 100, never shorten (max)": (100, "max"),
    "refresh 100, never lengthen (min)": (100, "min"),
    "refresh 50, never lengthen (min)": (50, "min"),
}


def participation_ratio(z):
    import numpy as np

    e = np.linalg.eigvalsh(np.cov(z.T))
    return float(e.sum() ** 2 / (e**2).sum())


def geodesics(z):
    import numpy as np
    from scipy.sparse.csgraph import shortest_path
    from sklearn.neighbors import kneighbors_graph

    g = shortest_path(kneighbors_graph(z, 5, mode="distance"), directed=False)
    g[~np.isfinite(g)] = 0.0  # pairs the graph does not connect pull nowhere
    return g


def run(seed: int, refresh: int, combine: str, steps: int, lr: float) -> dict:
    import torch
    from test_regularizers import swiss_roll_unrolling, unrolled_rank_correlation

    from geotune.analysis.latent import intrinsic_dim_twonn

    x, along = swiss_roll_unrolling(seed)
    z = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.SGD([z], lr=lr, momentum=0.9)
    g = None
    for step in range(steps):
        if g is None or (refresh and step % refresh == 0):
            new = torch.tensor(geodesics(z.detach().numpy()), dtype=torch.float32)
            if g is None or combine == "new":
                g = new
            else:
                g = torch.maximum(g, new) if combine == "max" else torch.minimum(g, new)
        d = torch.cdist(z, z).clamp_min(1e-9)
        loss = ((d - g) ** 2).sum() / (g**2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    y = z.detach().double().numpy()
    return {
        "seed": seed,
        "unrolled_rank_correlation": round(unrolled_rank_correlation(y, along), 3),
        "twonn": round(intrinsic_dim_twonn(y), 2),
        "participation_ratio": round(participation_ratio(y), 2),
        "largest_distance": round(float(torch.cdist(z.detach(), z.detach()).max()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="gradient steps per run")
    parser.add_argument("--lr", type=float, default=20.0, help="step size (momentum 0.9)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 3], help="swiss roll seeds")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    from test_regularizers import swiss_roll_unrolling, unrolled_rank_correlation

    start = [round(unrolled_rank_correlation(*swiss_roll_unrolling(s)), 3) for s in args.seeds]
    rows = []
    for name, (refresh, combine) in POLICIES.items():
        for seed in args.seeds:
            rows.append({"policy": name, **run(seed, refresh, combine, args.steps, args.lr)})
            print(rows[-1], file=sys.stderr, flush=True)
    emit(
        {
            "date": today(),
            "machine": machine(),
            "steps": args.steps,
            "lr": args.lr,
            "start_rank_correlation": start,
            "runs": rows,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
